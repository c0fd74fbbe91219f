/*
 * netaddr.h - socket addresses as text, as bytes, and in ranges.
 *
 * Pure functions over struct sockaddr_storage (IPv4 and IPv6; any other
 * family has no text and no bytes).  Every address the proxy prints,
 * counts or matches goes through here, so the log, the limits, the
 * profiles, XCLIENT and the trace header agree on what an address is.
 */
#ifndef STARTTLS_PROXY_NETADDR_H
#define STARTTLS_PROXY_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* an address range: "10.1.2.0/24", "2001:db8::/32", "192.0.2.7" (/32) */
struct cidr {
    struct sockaddr_storage addr;  /* family set; port 0; host bits zero */
    unsigned prefix;               /* 0..32 or 0..128 */
};

#define NETADDR_TEXT 56   /* room for "[v6 address]:port" and its NUL */

/* netaddr_bytes - the address's bytes (4 or 16, in *len), or NULL for
 * another family. */
const unsigned char *netaddr_bytes(const struct sockaddr_storage *ss,
                                   size_t *len);

/* netaddr_port - the port, or 0 for another family. */
unsigned netaddr_port(const struct sockaddr_storage *ss);

/* netaddr_host - "192.0.2.1" or "2001:db8::1" into out; returns false
 * (out is then def) for another family. */
bool netaddr_host(const struct sockaddr_storage *ss, char *out, size_t cap,
                  const char *def);

/* netaddr_text - "192.0.2.1:25" or "[2001:db8::1]:25" (the log's form);
 * out is left alone for another family. */
void netaddr_text(const struct sockaddr_storage *ss, char *out, size_t cap);

/* netaddr_xclient - XCLIENT's ADDR= form: "192.0.2.1",
 * "IPV6:2001:db8::1", or "[UNAVAILABLE]". */
void netaddr_xclient(const struct sockaddr_storage *ss, char *out,
                     size_t cap);

/* netaddr_literal - RFC 5321 4.1.3 address literal, as in a Received:
 * header: "[192.0.2.1]", "[IPv6:2001:db8::1]"; false (out untouched) for
 * another family. */
bool netaddr_literal(const struct sockaddr_storage *ss, char *out,
                     size_t cap);

/* netaddr_key - 16 bytes that name the address (IPv4 mapped into IPv6,
 * so both forms of one client count as one); zero for another family. */
void netaddr_key(const struct sockaddr *sa, unsigned char key[16]);

/* netaddr_in_cidr - is addr inside range c?  IPv4 ranges match IPv4
 * addresses only, IPv6 ranges IPv6 addresses only. */
bool netaddr_in_cidr(const struct cidr *c,
                     const struct sockaddr_storage *addr);

/* netaddr_in_cidrs - inside one of the n ranges? */
bool netaddr_in_cidrs(const struct cidr *c, size_t n,
                      const struct sockaddr_storage *addr);

/* netaddr_same - same family, address and port (a listen address). */
bool netaddr_same(const struct sockaddr_storage *a,
                  const struct sockaddr_storage *b);

/* netaddr_same_host - same family and address (ports aside). */
bool netaddr_same_host(const struct sockaddr_storage *a,
                       const struct sockaddr_storage *b);

#endif
