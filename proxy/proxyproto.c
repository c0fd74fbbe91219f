/*
 * proxyproto.c - the PROXY protocol header, v1 and v2 (see
 * include/proxyproto.h; "spec" is HAProxy's proxy-protocol.txt).
 *
 * No I/O, no allocation, no global mutable state.  The parser reads only
 * buf[0..len) and writes its result only on PROXYPROTO_OK.
 */
#include "proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* spec 2.2: the v2 signature, "\r\n\r\n\0\r\nQUIT\n" */
static const unsigned char proxyproto_v2_sig[12] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
};

enum {
    PP_V2_FIXED = 16,       /* signature, ver_cmd, fam, len */
    PP_V2_CMD_LOCAL = 0x0,
    PP_V2_CMD_PROXY = 0x1,
    PP_V2_AF_UNSPEC = 0x0,
    PP_V2_AF_INET = 0x1,
    PP_V2_AF_INET6 = 0x2,
    PP_V2_AF_UNIX = 0x3,
    PP_V2_TP_STREAM = 0x1,
    PP_V2_TP_DGRAM = 0x2,
    PP_V2_TLV_HEAD = 3      /* type, length (2 bytes) */
};

/* spec 2.2: size of the address block of each family */
static const size_t proxyproto_v2_addr_len[4] = {
    [PP_V2_AF_UNSPEC] = 0,
    [PP_V2_AF_INET] = 12,
    [PP_V2_AF_INET6] = 36,
    [PP_V2_AF_UNIX] = 216,
};

/* ---- helpers ------------------------------------------------------------ */

/* proxyproto_set_addr - fill a sockaddr_storage from raw network bytes */
static void proxyproto_set_addr(struct sockaddr_storage *ss, int family,
                                const unsigned char *addr,
                                const unsigned char *port)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in sin;
        memset(&sin, 0, sizeof sin);
        sin.sin_family = AF_INET;
        memcpy(&sin.sin_addr, addr, 4);
        memcpy(&sin.sin_port, port, 2);
        memcpy(ss, &sin, sizeof sin);
    } else {
        struct sockaddr_in6 sin6;
        memset(&sin6, 0, sizeof sin6);
        sin6.sin6_family = AF_INET6;
        memcpy(&sin6.sin6_addr, addr, 16);
        memcpy(&sin6.sin6_port, port, 2);
        memcpy(ss, &sin6, sizeof sin6);
    }
}

/* proxyproto_no_addr - a result without addresses */
static void proxyproto_no_addr(struct proxyproto_result *out, int version,
                               enum proxyproto_kind kind, size_t consumed)
{
    memset(out, 0, sizeof *out);
    out->consumed = consumed;
    out->version = version;
    out->kind = kind;
    out->family = AF_UNSPEC;
    out->src.ss_family = AF_UNSPEC;
    out->dst.ss_family = AF_UNSPEC;
}

/* ---- v1 ----------------------------------------------------------------- */

/*
 * proxyproto_v1_prefix_ok - can buf[0..n) (no CR or LF in it) begin a
 * valid v1 line?  Checks what can already be wrong: the "PROXY " word,
 * the protocol word, and for TCP4/TCP6 the characters an address or port
 * may hold, single spaces and at most four fields.  Each check fails for
 * every longer buffer too, so BAD is final.
 */
static bool proxyproto_v1_prefix_ok(const unsigned char *buf, size_t n)
{
    static const char *const protos[] = { "TCP4 ", "TCP6 ", "UNKNOWN" };
    const char *sig = "PROXY ";

    for (size_t i = 0; i < n && i < 6; i++)
        if (buf[i] != (unsigned char)sig[i])
            return false;
    if (n <= 6)
        return true;

    const unsigned char *p = buf + 6;
    size_t rest = n - 6;
    size_t k;
    for (k = 0; k < 3; k++) {
        size_t plen = strlen(protos[k]);
        size_t m = rest < plen ? rest : plen;
        if (memcmp(p, protos[k], m) == 0)
            break;
    }
    if (k == 3)
        return false;
    if (k == 2)      /* "UNKNOWN": a space, then anything */
        return rest <= 7 || p[7] == ' ';
    if (rest <= 5)
        return true;

    bool v6 = k == 1;
    unsigned spaces = 0;
    for (size_t i = 5; i < rest; i++) {
        unsigned char c = p[i];
        if (c == ' ') {
            if (i == 5 || p[i - 1] == ' ' || ++spaces > 3)
                return false;
        } else if (c >= '0' && c <= '9') {
            continue;
        } else if (c == '.' && spaces < 2) {
            continue;
        } else if (v6 && spaces < 2 &&
                   (c == ':' || (c >= 'a' && c <= 'f') ||
                    (c >= 'A' && c <= 'F'))) {
            continue;
        } else {
            return false;
        }
    }
    return true;
}

/*
 * proxyproto_v1_port - spec 2.1: a port is "a decimal integer in the range
 * 0..65535"; no sign, no leading zero (except "0" itself).
 */
static bool proxyproto_v1_port(const unsigned char *s, size_t n,
                               unsigned char port[2])
{
    unsigned long v = 0;

    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    port[0] = (unsigned char)(v >> 8);
    port[1] = (unsigned char)(v & 0xff);
    return true;
}

/* proxyproto_v1_addr - a numeric address of the family (inet_pton) */
static bool proxyproto_v1_addr(const unsigned char *s, size_t n, int family,
                               unsigned char addr[16])
{
    char tmp[INET6_ADDRSTRLEN];

    if (n == 0 || n >= sizeof tmp)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(family, tmp, addr) == 1;
}

/*
 * proxyproto_v1_line - validate a whole v1 line buf[0..n) (without its
 * CRLF) and fill *out.  spec 2.1: "PROXY" SP proto SP src SP dst SP sport
 * SP dport, single spaces; "PROXY UNKNOWN" may be followed by anything.
 */
static int proxyproto_v1_line(const unsigned char *buf, size_t n,
                              struct proxyproto_result *out)
{
    if (n < 6 || memcmp(buf, "PROXY ", 6) != 0)
        return PROXYPROTO_BAD;
    const unsigned char *p = buf + 6;
    size_t rest = n - 6;

    if (rest >= 7 && memcmp(p, "UNKNOWN", 7) == 0 &&
        (rest == 7 || p[7] == ' ')) {
        proxyproto_no_addr(out, 1, PROXYPROTO_KIND_UNKNOWN, n + 2);
        return PROXYPROTO_OK;
    }
    int family;
    if (rest >= 5 && memcmp(p, "TCP4 ", 5) == 0)
        family = AF_INET;
    else if (rest >= 5 && memcmp(p, "TCP6 ", 5) == 0)
        family = AF_INET6;
    else
        return PROXYPROTO_BAD;

    /* four fields, each ended by one SP (the last by the line end) */
    const unsigned char *f[4];
    size_t flen[4];
    size_t pos = 5;
    for (int i = 0; i < 4; i++) {
        size_t start = pos;
        while (pos < rest && p[pos] != ' ')
            pos++;
        f[i] = p + start;
        flen[i] = pos - start;
        if (flen[i] == 0)
            return PROXYPROTO_BAD;
        if (i < 3) {
            if (pos == rest)
                return PROXYPROTO_BAD;
            pos++;
        }
    }
    if (pos != rest)
        return PROXYPROTO_BAD;

    unsigned char src[16], dst[16], sport[2], dport[2];
    if (!proxyproto_v1_addr(f[0], flen[0], family, src) ||
        !proxyproto_v1_addr(f[1], flen[1], family, dst) ||
        !proxyproto_v1_port(f[2], flen[2], sport) ||
        !proxyproto_v1_port(f[3], flen[3], dport))
        return PROXYPROTO_BAD;

    proxyproto_no_addr(out, 1, PROXYPROTO_KIND_PROXY, n + 2);
    out->family = family;
    proxyproto_set_addr(&out->src, family, src, sport);
    proxyproto_set_addr(&out->dst, family, dst, dport);
    return PROXYPROTO_OK;
}

/*
 * proxyproto_v1 - spec 2.1: the line ends with the first CRLF, within
 * PROXYPROTO_V1_MAX_LEN bytes; a CR not followed by LF, or a LF without
 * CR, is an error.
 */
static int proxyproto_v1(const unsigned char *buf, size_t len,
                         struct proxyproto_result *out)
{
    size_t n = len < PROXYPROTO_V1_MAX_LEN ? len : PROXYPROTO_V1_MAX_LEN;
    size_t i = 0;

    while (i < n && buf[i] != '\r' && buf[i] != '\n')
        i++;
    if (!proxyproto_v1_prefix_ok(buf, i))
        return PROXYPROTO_BAD;
    if (i == n)   /* no CR yet */
        return len >= PROXYPROTO_V1_MAX_LEN ? PROXYPROTO_BAD : PROXYPROTO_MORE;
    if (buf[i] == '\n' || i + 2 > PROXYPROTO_V1_MAX_LEN)
        return PROXYPROTO_BAD;
    if (i + 1 == len)
        return PROXYPROTO_MORE;
    if (buf[i + 1] != '\n')
        return PROXYPROTO_BAD;
    return proxyproto_v1_line(buf, i, out);
}

/* ---- v2 ----------------------------------------------------------------- */

/*
 * proxyproto_v2 - spec 2.2: signature, ver_cmd (version 2 in the high
 * nibble; LOCAL or PROXY), fam (family high, transport low), a 16-bit
 * length of what follows: the address block, then TLVs.  Unknown
 * versions, commands, families and transports are refused ("must be
 * rejected as invalid by receivers"), as is a length over our cap or one
 * too short for the family's address block.
 */
static int proxyproto_v2(const unsigned char *buf, size_t len,
                         struct proxyproto_result *out)
{
    size_t n = len < sizeof proxyproto_v2_sig ? len : sizeof proxyproto_v2_sig;

    if (memcmp(buf, proxyproto_v2_sig, n) != 0)
        return PROXYPROTO_BAD;
    if (len < 13)
        return PROXYPROTO_MORE;
    unsigned ver = buf[12] >> 4, cmd = buf[12] & 0x0F;
    if (ver != 2 || (cmd != PP_V2_CMD_LOCAL && cmd != PP_V2_CMD_PROXY))
        return PROXYPROTO_BAD;
    if (len < 14)
        return PROXYPROTO_MORE;
    unsigned af = buf[13] >> 4, tp = buf[13] & 0x0F;
    if (af > PP_V2_AF_UNIX || tp > PP_V2_TP_DGRAM)
        return PROXYPROTO_BAD;
    if (len < PP_V2_FIXED)
        return PROXYPROTO_MORE;
    size_t body = (size_t)buf[14] << 8 | buf[15];
    size_t total = PP_V2_FIXED + body;
    if (total > PROXYPROTO_V2_MAX_LEN)
        return PROXYPROTO_BAD;
    size_t alen = proxyproto_v2_addr_len[af];
    if (cmd == PP_V2_CMD_PROXY && body < alen)
        return PROXYPROTO_BAD;
    if (len < total)
        return PROXYPROTO_MORE;

    if (cmd == PP_V2_CMD_LOCAL) {
        /* spec 2.2: "discard the protocol block including the family" */
        proxyproto_no_addr(out, 2, PROXYPROTO_KIND_LOCAL, total);
        return PROXYPROTO_OK;
    }

    /* spec 2.2.x: TLVs after the addresses; each must fit */
    size_t pos = PP_V2_FIXED + alen;
    while (pos < total) {
        if (total - pos < PP_V2_TLV_HEAD)
            return PROXYPROTO_BAD;
        size_t tlen = (size_t)buf[pos + 1] << 8 | buf[pos + 2];
        if (tlen > total - pos - PP_V2_TLV_HEAD)
            return PROXYPROTO_BAD;
        pos += PP_V2_TLV_HEAD + tlen;
    }

    const unsigned char *a = buf + PP_V2_FIXED;
    if (tp == PP_V2_TP_STREAM && af == PP_V2_AF_INET) {
        proxyproto_no_addr(out, 2, PROXYPROTO_KIND_PROXY, total);
        out->family = AF_INET;
        proxyproto_set_addr(&out->src, AF_INET, a, a + 8);
        proxyproto_set_addr(&out->dst, AF_INET, a + 4, a + 10);
    } else if (tp == PP_V2_TP_STREAM && af == PP_V2_AF_INET6) {
        proxyproto_no_addr(out, 2, PROXYPROTO_KIND_PROXY, total);
        out->family = AF_INET6;
        proxyproto_set_addr(&out->src, AF_INET6, a, a + 32);
        proxyproto_set_addr(&out->dst, AF_INET6, a + 16, a + 34);
    } else {
        proxyproto_no_addr(out, 2, PROXYPROTO_KIND_UNKNOWN, total);
    }
    return PROXYPROTO_OK;
}

/*
 * proxyproto_parse - the first byte tells the version: 'P' for v1,
 * CR for v2 (spec 2: "the receiver ... must not try to guess": anything
 * else is refused).
 */
int proxyproto_parse(const unsigned char *buf, size_t len,
                     struct proxyproto_result *out)
{
    if (len == 0)
        return PROXYPROTO_MORE;
    if (buf[0] == 'P')
        return proxyproto_v1(buf, len, out);
    if (buf[0] == proxyproto_v2_sig[0])
        return proxyproto_v2(buf, len, out);
    return PROXYPROTO_BAD;
}

/* ---- writers ------------------------------------------------------------ */

/* an address to write: family, 16 address bytes (4 used for IPv4), port */
struct proxyproto_addr {
    int family;
    unsigned char addr[16];
    unsigned char port[2];   /* network order */
};

/* proxyproto_get_addr - read an IPv4/IPv6 sockaddr; false otherwise */
static bool proxyproto_get_addr(const struct sockaddr *sa,
                                struct proxyproto_addr *a)
{
    if (sa == NULL)
        return false;
    memset(a, 0, sizeof *a);
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in sin;
        memcpy(&sin, sa, sizeof sin);
        a->family = AF_INET;
        memcpy(a->addr, &sin.sin_addr, 4);
        memcpy(a->port, &sin.sin_port, 2);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;
        memcpy(&sin6, sa, sizeof sin6);
        a->family = AF_INET6;
        memcpy(a->addr, &sin6.sin6_addr, 16);
        memcpy(a->port, &sin6.sin6_port, 2);
        return true;
    }
    return false;
}

/* proxyproto_map6 - an IPv4 address as IPv4-mapped IPv6 (::ffff:a.b.c.d) */
static void proxyproto_map6(struct proxyproto_addr *a)
{
    if (a->family != AF_INET)
        return;
    memmove(a->addr + 12, a->addr, 4);
    memset(a->addr, 0, 10);
    a->addr[10] = 0xff;
    a->addr[11] = 0xff;
    a->family = AF_INET6;
}

/*
 * proxyproto_get_pair - both addresses, of one family; false when either
 * is missing or not IPv4/IPv6.  spec 2.2 on mixed families: an IPv4
 * address is sent as IPv4-mapped IPv6.
 */
static bool proxyproto_get_pair(const struct sockaddr *src,
                                const struct sockaddr *dst,
                                struct proxyproto_addr *s,
                                struct proxyproto_addr *d)
{
    if (!proxyproto_get_addr(src, s) || !proxyproto_get_addr(dst, d))
        return false;
    if (s->family != d->family) {
        proxyproto_map6(s);
        proxyproto_map6(d);
    }
    return true;
}

/* proxyproto_write_v1 - spec 2.1 line for src -> dst, or UNKNOWN */
size_t proxyproto_write_v1(const struct sockaddr *src,
                           const struct sockaddr *dst, char *out, size_t cap)
{
    char line[PROXYPROTO_V1_MAX_LEN + 1];
    struct proxyproto_addr s, d;
    int n;

    if (proxyproto_get_pair(src, dst, &s, &d)) {
        char sbuf[INET6_ADDRSTRLEN], dbuf[INET6_ADDRSTRLEN];
        if (inet_ntop(s.family, s.addr, sbuf, sizeof sbuf) == NULL ||
            inet_ntop(d.family, d.addr, dbuf, sizeof dbuf) == NULL)
            return 0;
        n = snprintf(line, sizeof line, "PROXY %s %s %s %u %u\r\n",
                     s.family == AF_INET ? "TCP4" : "TCP6", sbuf, dbuf,
                     (unsigned)(s.port[0] << 8 | s.port[1]),
                     (unsigned)(d.port[0] << 8 | d.port[1]));
    } else {
        n = snprintf(line, sizeof line, "PROXY UNKNOWN\r\n");
    }
    if (n < 0 || (size_t)n >= sizeof line || (size_t)n > cap)
        return 0;
    memcpy(out, line, (size_t)n);
    return (size_t)n;
}

/* proxyproto_write_v2 - spec 2.2 header for src -> dst, or UNSPEC */
size_t proxyproto_write_v2(const struct sockaddr *src,
                           const struct sockaddr *dst, unsigned char *out,
                           size_t cap)
{
    unsigned char h[PP_V2_FIXED + 36];
    struct proxyproto_addr s, d;
    size_t alen = 0;

    memcpy(h, proxyproto_v2_sig, sizeof proxyproto_v2_sig);
    h[12] = 0x20 | PP_V2_CMD_PROXY;
    if (!proxyproto_get_pair(src, dst, &s, &d)) {
        h[13] = PP_V2_AF_UNSPEC << 4 | 0;   /* UNSPEC, UNSPEC */
    } else if (s.family == AF_INET) {
        h[13] = PP_V2_AF_INET << 4 | PP_V2_TP_STREAM;
        memcpy(h + 16, s.addr, 4);
        memcpy(h + 20, d.addr, 4);
        memcpy(h + 24, s.port, 2);
        memcpy(h + 26, d.port, 2);
        alen = 12;
    } else {
        h[13] = PP_V2_AF_INET6 << 4 | PP_V2_TP_STREAM;
        memcpy(h + 16, s.addr, 16);
        memcpy(h + 32, d.addr, 16);
        memcpy(h + 48, s.port, 2);
        memcpy(h + 50, d.port, 2);
        alen = 36;
    }
    h[14] = 0;
    h[15] = (unsigned char)alen;
    if (PP_V2_FIXED + alen > cap)
        return 0;
    memcpy(out, h, PP_V2_FIXED + alen);
    return PP_V2_FIXED + alen;
}
