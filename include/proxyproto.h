/*
 * proxyproto.h - the PROXY protocol header (HAProxy, versions 1 and 2):
 * a pure parser for the header a load balancer puts in front of a
 * connection, and writers for the header the proxy sends to a backend.
 *
 * Reference: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
 * (cited below as "spec" with its section numbers).
 *
 * Nothing here does I/O or allocates.  The parser is resumable the simple
 * way: call it again on the longer buffer; a header is never longer than
 * PROXYPROTO_MAX_LEN, so a caller reads at most that many bytes before it
 * has an answer.  Read only what the header needs: the bytes after
 * out->consumed belong to the next protocol (here: SMTP, although a
 * client is not supposed to talk before the greeting).
 */
#ifndef STARTTLS_PROXY_PROXYPROTO_H
#define STARTTLS_PROXY_PROXYPROTO_H

#include <stddef.h>
#include <sys/socket.h>

/* spec 2.1: a v1 line is at most 107 bytes with its CRLF */
#define PROXYPROTO_V1_MAX_LEN 107
/*
 * v2: 16 bytes of fixed header + up to 520 bytes of addresses and TLVs.
 * The format allows 16 + 65535; this parser refuses headers over 536
 * bytes, the smallest TCP segment every host accepts (RFC 879), so that a
 * header fits in one segment.  That holds the largest address block (216
 * bytes, AF_UNIX) with room for TLVs; the TLVs real load balancers send
 * (AWS VPC endpoint id, Azure link id, SSL info) are far smaller.
 */
#define PROXYPROTO_V2_MAX_LEN 536
/* the most bytes a caller has to read before the parser decides */
#define PROXYPROTO_MAX_LEN PROXYPROTO_V2_MAX_LEN

/* what proxyproto_parse returns */
enum proxyproto_status {
    PROXYPROTO_OK = 0,  /* a whole valid header: see the result */
    PROXYPROTO_MORE,    /* a valid beginning: read more and call again */
    PROXYPROTO_BAD      /* not a valid header: close the connection */
};

/* what a valid header says about the connection */
enum proxyproto_kind {
    PROXYPROTO_KIND_PROXY,    /* relayed for a client: src/dst are set */
    PROXYPROTO_KIND_LOCAL,    /* v2 LOCAL: the load balancer's own
                                 connection (health check): use the
                                 socket's addresses */
    PROXYPROTO_KIND_UNKNOWN   /* v1 UNKNOWN, or v2 PROXY with a family or
                                 transport other than TCP over IPv4/IPv6:
                                 no address: use the socket's addresses */
};

struct proxyproto_result {
    size_t consumed;                /* length of the header in bytes */
    int version;                    /* 1 or 2 */
    enum proxyproto_kind kind;
    int family;                     /* AF_INET or AF_INET6 for
                                       PROXYPROTO_KIND_PROXY, else
                                       AF_UNSPEC */
    struct sockaddr_storage src;    /* the client (kind PROXY only) */
    struct sockaddr_storage dst;    /* the address the client connected
                                       to (kind PROXY only) */
};

/*
 * proxyproto_parse - parse a PROXY header at the start of buf[0..len).
 * Returns PROXYPROTO_OK and fills *out, PROXYPROTO_MORE when buf is a
 * valid beginning of a header (len is then under PROXYPROTO_MAX_LEN), or
 * PROXYPROTO_BAD.  *out is written only on PROXYPROTO_OK.  Once BAD for a
 * buffer, BAD for any longer buffer with the same start; once OK, the
 * same result for any longer buffer.
 *
 * v1 (spec 2.1) is validated strictly: "PROXY" SP ("TCP4" | "TCP6") SP
 * src SP dst SP sport SP dport CRLF with single spaces, numeric addresses
 * of the named family (inet_pton) and ports 0..65535 in decimal without
 * sign or leading zeros; or "PROXY UNKNOWN" followed by anything up to
 * CRLF.  v2 (spec 2.2): the 12-byte signature, version 2, command LOCAL
 * or PROXY, a known family and transport; TCP over IPv4/IPv6 gives
 * addresses, the other known ones PROXYPROTO_KIND_UNKNOWN.  The length
 * must hold the address block; the TLVs after it are checked for framing
 * (each fits) and skipped.
 */
int proxyproto_parse(const unsigned char *buf, size_t len,
                     struct proxyproto_result *out);

/*
 * proxyproto_write_v1 - write the v1 line for a TCP connection from src
 * to dst ("PROXY TCP4 ..." or "PROXY TCP6 ...", with CRLF, no NUL) into
 * out[0..cap).  When the families differ, an IPv4 address is written as
 * IPv4-mapped IPv6 (TCP6).  A NULL address or one that is not IPv4/IPv6
 * gives "PROXY UNKNOWN\r\n".  Returns the length, or 0 (nothing written)
 * when cap is too small; PROXYPROTO_V1_MAX_LEN bytes are always enough.
 */
size_t proxyproto_write_v1(const struct sockaddr *src,
                           const struct sockaddr *dst, char *out, size_t cap);

/*
 * proxyproto_write_v2 - the same as a v2 header: command PROXY over
 * STREAM with the addresses (IPv4 mapped as above when the families
 * differ), or family UNSPEC with no address when there is none; no TLVs.
 * Returns the length (28 for IPv4, 52 for IPv6, 16 for none), or 0 when
 * cap is too small.
 */
size_t proxyproto_write_v2(const struct sockaddr *src,
                           const struct sockaddr *dst, unsigned char *out,
                           size_t cap);

#endif
