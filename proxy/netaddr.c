/*
 * netaddr.c - socket addresses as text, as bytes, and in ranges.
 *
 * Text comes from libuv's inet_ntop (what the proxy has always printed:
 * RFC 5952 forms, "::ffff:192.0.2.1" for a mapped IPv4 address).
 */
#include "netaddr.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <uv.h>

/* netaddr_bytes - see netaddr.h. */
const unsigned char *netaddr_bytes(const struct sockaddr_storage *ss,
                                   size_t *len)
{
    if (ss->ss_family == AF_INET) {
        *len = 4;
        return (const unsigned char *)&((const struct sockaddr_in *)ss)
            ->sin_addr;
    }
    if (ss->ss_family == AF_INET6) {
        *len = 16;
        return ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
    }
    *len = 0;
    return NULL;
}

/* netaddr_port - see netaddr.h. */
unsigned netaddr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

/* netaddr_host - see netaddr.h. */
bool netaddr_host(const struct sockaddr_storage *ss, char *out, size_t cap,
                  const char *def)
{
    char host[INET6_ADDRSTRLEN];
    size_t len;
    const unsigned char *b = netaddr_bytes(ss, &len);

    if (b == NULL || uv_inet_ntop(ss->ss_family, b, host, sizeof host) != 0) {
        snprintf(out, cap, "%s", def);
        return false;
    }
    snprintf(out, cap, "%s", host);
    return true;
}

/* netaddr_text - see netaddr.h. */
void netaddr_text(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN];

    if (!netaddr_host(ss, host, sizeof host, ""))
        return;
    snprintf(out, cap, ss->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host,
             netaddr_port(ss));
}

/* netaddr_xclient - see netaddr.h. */
void netaddr_xclient(const struct sockaddr_storage *ss, char *out,
                     size_t cap)
{
    char host[INET6_ADDRSTRLEN];

    if (!netaddr_host(ss, host, sizeof host, ""))
        snprintf(out, cap, "[UNAVAILABLE]");
    else
        snprintf(out, cap, "%s%s", ss->ss_family == AF_INET6 ? "IPV6:" : "",
                 host);
}

/* netaddr_literal - see netaddr.h. */
bool netaddr_literal(const struct sockaddr_storage *ss, char *out,
                     size_t cap)
{
    char host[INET6_ADDRSTRLEN];

    if (!netaddr_host(ss, host, sizeof host, ""))
        return false;
    snprintf(out, cap, "[%s%s]", ss->ss_family == AF_INET6 ? "IPv6:" : "",
             host);
    return true;
}

/* netaddr_key - see netaddr.h. */
void netaddr_key(const struct sockaddr *sa, unsigned char key[16])
{
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    }
}

/* netaddr_in_cidr - see netaddr.h. */
bool netaddr_in_cidr(const struct cidr *c, const struct sockaddr_storage *addr)
{
    size_t alen, blen, k;
    const unsigned char *a = netaddr_bytes(addr, &alen);
    const unsigned char *b = netaddr_bytes(&c->addr, &blen);
    unsigned bits = c->prefix;

    if (a == NULL || b == NULL || alen != blen || bits > alen * 8)
        return false;
    for (k = 0; bits >= 8; k++, bits -= 8)
        if (a[k] != b[k])
            return false;
    return bits == 0 || ((a[k] ^ b[k]) & (0xff00u >> bits) & 0xff) == 0;
}

/* netaddr_in_cidrs - see netaddr.h. */
bool netaddr_in_cidrs(const struct cidr *c, size_t n,
                      const struct sockaddr_storage *addr)
{
    for (size_t i = 0; i < n; i++)
        if (netaddr_in_cidr(&c[i], addr))
            return true;
    return false;
}

/* netaddr_same_host - see netaddr.h. */
bool netaddr_same_host(const struct sockaddr_storage *a,
                       const struct sockaddr_storage *b)
{
    size_t alen, blen;
    const unsigned char *x = netaddr_bytes(a, &alen);
    const unsigned char *y = netaddr_bytes(b, &blen);

    return x != NULL && y != NULL && a->ss_family == b->ss_family &&
           memcmp(x, y, alen) == 0;
}

/* netaddr_same - see netaddr.h. */
bool netaddr_same(const struct sockaddr_storage *a,
                  const struct sockaddr_storage *b)
{
    return netaddr_same_host(a, b) && netaddr_port(a) == netaddr_port(b);
}
