/*
 * test_proxyproto.c - the PROXY protocol parser and writers
 * (proxy/proxyproto.c).
 *
 * Every parser case runs on every prefix of its input, one byte longer
 * each time: PROXYPROTO_MORE until the byte that decides, then the same
 * answer for every longer buffer (a valid header is decided by its last
 * byte, garbage by the first byte that cannot be right).  The writers are
 * checked byte for byte and by parsing what they wrote.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include "proxyproto.h"

/* a string literal with its length (it may hold NUL bytes) */
#define S(lit) lit, sizeof(lit) - 1

/* the v2 signature and the fixed header fields as string literals */
#define SIG "\r\n\r\n\0\r\nQUIT\n"
#define A4 "\xc0\x00\x02\x01" "\xc6\x33\x64\x02" "\xd4\x31" "\x00\x19"
#define A6 "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01" \
           "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x02" "\xd4\x31" "\x00\x19"

/* ---- parser cases -------------------------------------------------------- */

struct pp_case {
    const unsigned char *in;
    size_t len;
    int status;                 /* for the whole input */
    size_t decided;             /* prefix length that first gives status */
    int version;                /* OK only */
    enum proxyproto_kind kind;  /* OK only */
    int family;
    const char *src;            /* kind PROXY only */
    unsigned sport;
    const char *dst;
    unsigned dport;
};

#define U(lit) (const unsigned char *)(lit), sizeof(lit) - 1
/* a header hdr followed by bytes of the next protocol */
#define OK_(hdr, next, ver, kind, fam, src, sport, dst, dport) \
    { U(hdr next), PROXYPROTO_OK, sizeof(hdr) - 1, ver, kind, fam, \
      src, sport, dst, dport }
#define OK_NOADDR_(hdr, ver, kind) \
    { U(hdr "EHLO"), PROXYPROTO_OK, sizeof(hdr) - 1, ver, kind, AF_UNSPEC, \
      NULL, 0, NULL, 0 }
/* garbage: BAD once the first at bytes are there */
#define BAD_(in, at) \
    { U(in), PROXYPROTO_BAD, at, 0, 0, 0, NULL, 0, NULL, 0 }
#define BAD_END_(in) BAD_(in, sizeof(in) - 1)

#define P PROXYPROTO_KIND_PROXY
#define L PROXYPROTO_KIND_LOCAL
#define X PROXYPROTO_KIND_UNKNOWN

/* "PROXY UNKNOWN " and padding to a line of exactly 107 bytes with CRLF */
#define PAD91 "0123456789012345678901234567890123456789" \
              "0123456789012345678901234567890123456789" "01234567890"
/* a v2 TLV of type NOOP (0x04) that pads a v4 header to 536 bytes */
#define NOOP505 "\x04\x01\xf9"

static unsigned char big_v2[PROXYPROTO_V2_MAX_LEN + 1];

static const struct pp_case pp_cases[] = {
    /* ---- v1 (spec 2.1) ---- */
    OK_("PROXY TCP4 192.0.2.1 198.51.100.2 54321 25\r\n", "EHLO x\r\n",
        1, P, AF_INET, "192.0.2.1", 54321, "198.51.100.2", 25),
    OK_("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", "",
        1, P, AF_INET, "0.0.0.0", 0, "255.255.255.255", 65535),
    OK_("PROXY TCP6 2001:db8::1 2001:db8::2 54321 25\r\n", "QUIT\r\n",
        1, P, AF_INET6, "2001:db8::1", 54321, "2001:db8::2", 25),
    OK_("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n", "",
        1, P, AF_INET6, "::ffff:192.0.2.1", 1, "::1", 2),
    OK_("PROXY TCP6 FFFF:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n", "",
        1, P, AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
    OK_NOADDR_("PROXY UNKNOWN\r\n", 1, X),
    OK_NOADDR_("PROXY UNKNOWN ffff::1 ::1 1 2\r\n", 1, X),
    OK_NOADDR_("PROXY UNKNOWN \x01\xff\0 junk\r\n", 1, X),
    OK_NOADDR_("PROXY UNKNOWN " PAD91 "\r\n", 1, X),           /* 107 */
    BAD_("PROXY UNKNOWN " PAD91 "0\r\n", 107),                 /* 108 */
    BAD_("PROXY UNKNOWN " PAD91 "01", 107),
    BAD_("PROXY UNKNOWNX\r\n", 14),
    BAD_("PROXY UNKNOWN\rX", 15),
    BAD_("PROXY UNKNOWN\n", 14),
    BAD_("proxy TCP4", 1),
    BAD_("PROXY  TCP4", 7),
    BAD_("PROXY TCP5 ", 10),
    BAD_("PROXY TCP4  192.0.2.1", 12),
    BAD_("PROXY TCP4 +192.0.2.1", 12),
    BAD_("PROXY TCP4 2001:db8::1 198.51.100.2 1 25\r\n", 16),
    BAD_("PROXY TCP6 fe80::1%eth0 ::1 1 25\r\n", 19),
    BAD_("PROXY TCP4 192.0.2.1 198.51.100.2 1 25 \r\n", 39),
    BAD_("PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n", 38),
    BAD_("PROXY TCP4 192.0.2.1 198.51.100.2 1.5 25\r\n", 36),
    BAD_("PROXY TCP4 192.0.2.1 198.51.100.2 +1 25\r\n", 35),
    BAD_("PROXY TCP4 192.0.2.1 198.51.100.2 1 -25\r\n", 37),
    BAD_END_("PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n"),
    BAD_END_("PROXY TCP4 192.0.2.1 198.51.100.2 025 25\r\n"),
    BAD_END_("PROXY TCP4 192.0.2.1 198.51.100.2 123456 25\r\n"),
    BAD_END_("PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n"),
    BAD_END_("PROXY TCP4 256.0.2.1 198.51.100.2 1 25\r\n"),
    BAD_END_("PROXY TCP4 192.0.2 198.51.100.2 1 25\r\n"),
    BAD_END_("PROXY TCP4 192.0.02.1 198.51.100.2 1 25\r\n"),
    BAD_END_("PROXY TCP6 192.0.2.1 198.51.100.2 1 25\r\n"),
    BAD_END_("PROXY TCP6 2001:db8:::1 ::1 1 25\r\n"),
    BAD_END_("PROXY TCP4 192.0.2.1 198.51.100.2 1 25\n"),
    BAD_END_("PROXY TCP4 192.0.2.1 198.51.100.2 1 25\r\r"),
    BAD_END_("PROXY TCP4\r\n"),
    BAD_END_("PROXY TCP4 \r\n"),
    BAD_END_("PROXY \r\n"),
    BAD_END_("PROXY\r\n"),
    BAD_("GET / HTTP/1.0\r\n", 1),
    BAD_("EHLO x\r\n", 1),
    BAD_("\0", 1),

    /* ---- v2 (spec 2.2) ---- */
    OK_(SIG "\x21\x11\x00\x0c" A4, "EHLO x\r\n",
        2, P, AF_INET, "192.0.2.1", 54321, "198.51.100.2", 25),
    OK_(SIG "\x21\x21\x00\x24" A6, "",
        2, P, AF_INET6, "2001:db8::1", 54321, "2001:db8::2", 25),
    /* TLVs are skipped: ALPN "h2", NOOP, a custom (AWS-style) one */
    OK_(SIG "\x21\x11\x00\x1c" A4 "\x01\x00\x02h2" "\x04\x00\x00"
        "\xea\x00\x05vpc-1", "",
        2, P, AF_INET, "192.0.2.1", 54321, "198.51.100.2", 25),
    /* LOCAL: the block, whatever it is, is discarded */
    OK_NOADDR_(SIG "\x20\x00\x00\x00", 2, L),
    OK_NOADDR_(SIG "\x20\x11\x00\x0c" A4, 2, L),
    OK_NOADDR_(SIG "\x20\x11\x00\x03" "abc", 2, L),
    /* PROXY without an address we use */
    OK_NOADDR_(SIG "\x21\x00\x00\x00", 2, X),
    OK_NOADDR_(SIG "\x21\x12\x00\x0c" A4, 2, X),            /* UDP */
    OK_NOADDR_(SIG "\x21\x10\x00\x0c" A4, 2, X),            /* UNSPEC tp */
    OK_NOADDR_(SIG "\x21\x01\x00\x00", 2, X),
    BAD_(SIG "\x21\x31\x00\x0c" A4, 16),                    /* UNIX: 216 */
    BAD_(SIG "\x21\x21\x00\x0c" A4, 16),                    /* v6 in 12 */
    BAD_(SIG "\x21\x11\x00\x0b" "\xc0\x00\x02\x01", 16),
    BAD_(SIG "\x21\x11\x02\x09", 16),                        /* 537 */
    BAD_(SIG "\x21\x11\xff\xff", 16),
    BAD_(SIG "\x11\x11\x00\x0c" A4, 13),                    /* version 1 */
    BAD_(SIG "\x31\x11\x00\x0c" A4, 13),
    BAD_(SIG "\x22\x11\x00\x0c" A4, 13),                    /* command 2 */
    BAD_(SIG "\x21\x41\x00\x0c" A4, 14),                    /* family 4 */
    BAD_(SIG "\x21\x13\x00\x0c" A4, 14),                    /* transport 3 */
    BAD_END_(SIG "\x21\x11\x00\x0e" A4 "\x04\x00"),         /* TLV head cut */
    BAD_END_(SIG "\x21\x11\x00\x10" A4 "\x01\x00\x02h"),    /* TLV too long */
    BAD_END_(SIG "\x21\x11\x00\x10" A4 "\x01\x00\x00\x04"),
    BAD_("\r\n\r\n\x01", 5),
    BAD_("\r\r", 2),
    BAD_("\r\n\r\n\0\r\nQUIT\r", 12),
};

/* pp_addr_is - sockaddr ss holds text:port of family */
static void pp_addr_is(const struct sockaddr_storage *ss, int family,
                       const char *text, unsigned port)
{
    char buf[INET6_ADDRSTRLEN];
    assert_int_equal(ss->ss_family, family);
    if (family == AF_INET) {
        struct sockaddr_in sin;
        memcpy(&sin, ss, sizeof sin);
        assert_non_null(inet_ntop(AF_INET, &sin.sin_addr, buf, sizeof buf));
        assert_int_equal(ntohs(sin.sin_port), port);
    } else {
        struct sockaddr_in6 sin6;
        memcpy(&sin6, ss, sizeof sin6);
        assert_non_null(inet_ntop(AF_INET6, &sin6.sin6_addr, buf,
                                  sizeof buf));
        assert_int_equal(ntohs(sin6.sin6_port), port);
    }
    assert_string_equal(buf, text);
}

/* pp_parse - parse a copy of exactly in[0..len) */
static int pp_parse(const unsigned char *in, size_t len,
                    struct proxyproto_result *r)
{
    unsigned char *copy = malloc(len > 0 ? len : 1);
    assert_non_null(copy);
    if (len > 0)
        memcpy(copy, in, len);
    int rc = proxyproto_parse(copy, len, r);
    free(copy);
    return rc;
}

/* pp_check - one case on the prefix of length k */
static void pp_check(const struct pp_case *c, size_t k)
{
    struct proxyproto_result r;
    memset(&r, 0x5a, sizeof r);
    int rc = pp_parse(c->in, k, &r);

    if (k < c->decided) {
        assert_int_equal(rc, PROXYPROTO_MORE);
        assert_int_equal(r.version, 0x5a5a5a5a);   /* untouched */
        return;
    }
    assert_int_equal(rc, c->status);
    if (rc != PROXYPROTO_OK) {
        assert_int_equal(r.version, 0x5a5a5a5a);
        return;
    }
    assert_int_equal(r.consumed, c->decided);
    assert_int_equal(r.version, c->version);
    assert_int_equal(r.kind, c->kind);
    assert_int_equal(r.family, c->family);
    if (c->kind == PROXYPROTO_KIND_PROXY) {
        pp_addr_is(&r.src, c->family, c->src, c->sport);
        pp_addr_is(&r.dst, c->family, c->dst, c->dport);
    } else {
        assert_int_equal(r.src.ss_family, AF_UNSPEC);
        assert_int_equal(r.dst.ss_family, AF_UNSPEC);
    }
}

static void test_parse_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof pp_cases / sizeof pp_cases[0]; i++) {
        const struct pp_case *c = &pp_cases[i];
        print_message("proxyproto case %zu\n", i);
        /* whole, then every prefix: MORE until decided, then the answer */
        pp_check(c, c->len);
        for (size_t k = 0; k <= c->len; k++)
            pp_check(c, k);
    }
}

/* empty input waits; MORE is never answered past the maximum length */
static void test_parse_limits(void **state)
{
    (void)state;
    struct proxyproto_result r;

    assert_int_equal(proxyproto_parse(NULL, 0, &r), PROXYPROTO_MORE);

    /* a v2 header of exactly 536 bytes (a NOOP TLV fills it) is taken */
    memset(big_v2, 0, sizeof big_v2);
    memcpy(big_v2, S(SIG "\x21\x11\x02\x08" A4 NOOP505));
    for (size_t k = 0; k < PROXYPROTO_V2_MAX_LEN; k++)
        assert_int_equal(pp_parse(big_v2, k, &r), PROXYPROTO_MORE);
    assert_int_equal(pp_parse(big_v2, PROXYPROTO_V2_MAX_LEN, &r),
                     PROXYPROTO_OK);
    assert_int_equal(r.consumed, PROXYPROTO_V2_MAX_LEN);
    assert_int_equal(r.kind, PROXYPROTO_KIND_PROXY);
    pp_addr_is(&r.src, AF_INET, "192.0.2.1", 54321);

    /* the longest v1 prefix without CR is decided at 107 bytes */
    unsigned char line[PROXYPROTO_V1_MAX_LEN + 8];
    memcpy(line, "PROXY UNKNOWN ", 14);
    memset(line + 14, 'a', sizeof line - 14);
    assert_int_equal(pp_parse(line, PROXYPROTO_V1_MAX_LEN - 1, &r),
                     PROXYPROTO_MORE);
    assert_int_equal(pp_parse(line, PROXYPROTO_V1_MAX_LEN, &r),
                     PROXYPROTO_BAD);
}

/* ---- writers ------------------------------------------------------------- */

static struct sockaddr_storage pp_v4(const char *text, unsigned port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in sin;
    memset(&ss, 0, sizeof ss);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    assert_int_equal(inet_pton(AF_INET, text, &sin.sin_addr), 1);
    memcpy(&ss, &sin, sizeof sin);
    return ss;
}

static struct sockaddr_storage pp_v6(const char *text, unsigned port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in6 sin6;
    memset(&ss, 0, sizeof ss);
    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons((uint16_t)port);
    assert_int_equal(inet_pton(AF_INET6, text, &sin6.sin6_addr), 1);
    memcpy(&ss, &sin6, sizeof sin6);
    return ss;
}

struct write_case {
    int src_family;     /* AF_INET, AF_INET6, AF_UNIX, or 0 for NULL */
    const char *src;
    unsigned sport;
    int dst_family;
    const char *dst;
    unsigned dport;
    const char *v1;     /* the v1 line expected */
    const unsigned char *v2;
    size_t v2_len;
    int family;         /* what parsing gives back (AF_UNSPEC: none) */
    const char *psrc;   /* addresses parsed back */
    const char *pdst;
};

static const struct write_case write_cases[] = {
    { AF_INET, "192.0.2.1", 54321, AF_INET, "198.51.100.2", 25,
      "PROXY TCP4 192.0.2.1 198.51.100.2 54321 25\r\n",
      U(SIG "\x21\x11\x00\x0c" A4),
      AF_INET, "192.0.2.1", "198.51.100.2" },
    { AF_INET6, "2001:db8::1", 54321, AF_INET6, "2001:db8::2", 25,
      "PROXY TCP6 2001:db8::1 2001:db8::2 54321 25\r\n",
      U(SIG "\x21\x21\x00\x24" A6),
      AF_INET6, "2001:db8::1", "2001:db8::2" },
    { AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
      AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
      NULL, 52, AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
    /* mixed families: IPv4 goes as IPv4-mapped IPv6 */
    { AF_INET, "192.0.2.1", 1, AF_INET6, "2001:db8::2", 0,
      "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 0\r\n",
      NULL, 52, AF_INET6, "::ffff:192.0.2.1", "2001:db8::2" },
    /* no usable address */
    { 0, NULL, 0, AF_INET, "192.0.2.1", 25, "PROXY UNKNOWN\r\n",
      U(SIG "\x21\x00\x00\x00"), AF_UNSPEC, NULL, NULL },
    { AF_UNIX, NULL, 0, AF_UNIX, NULL, 0, "PROXY UNKNOWN\r\n",
      U(SIG "\x21\x00\x00\x00"), AF_UNSPEC, NULL, NULL },
    { AF_INET, "192.0.2.1", 25, 0, NULL, 0, "PROXY UNKNOWN\r\n",
      U(SIG "\x21\x00\x00\x00"), AF_UNSPEC, NULL, NULL },
};

/* pp_make - a sockaddr for one side of a write case (NULL for family 0) */
static const struct sockaddr *pp_make(int family, const char *text,
                                      unsigned port,
                                      struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET)
        *ss = pp_v4(text, port);
    else if (family == AF_INET6)
        *ss = pp_v6(text, port);
    else if (family == AF_UNIX)
        ss->ss_family = AF_UNIX;
    else
        return NULL;
    return (const struct sockaddr *)ss;
}

/* pp_parsed_back - parse a written header and compare with the case */
static void pp_parsed_back(const struct write_case *c,
                           const unsigned char *buf, size_t n, int version)
{
    struct proxyproto_result r;
    assert_int_equal(pp_parse(buf, n, &r), PROXYPROTO_OK);
    assert_int_equal(r.consumed, n);
    assert_int_equal(r.version, version);
    assert_int_equal(r.family, c->family);
    if (c->family == AF_UNSPEC) {
        assert_int_equal(r.kind, PROXYPROTO_KIND_UNKNOWN);
        return;
    }
    assert_int_equal(r.kind, PROXYPROTO_KIND_PROXY);
    pp_addr_is(&r.src, c->family, c->psrc, c->sport);
    pp_addr_is(&r.dst, c->family, c->pdst, c->dport);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(pp_parse(buf, k, &r), PROXYPROTO_MORE);
}

static void test_write(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof write_cases / sizeof write_cases[0]; i++) {
        const struct write_case *c = &write_cases[i];
        struct sockaddr_storage s, d;
        const struct sockaddr *sp = pp_make(c->src_family, c->src, c->sport,
                                            &s);
        const struct sockaddr *dp = pp_make(c->dst_family, c->dst, c->dport,
                                            &d);
        char line[PROXYPROTO_V1_MAX_LEN + 8];
        unsigned char bin[128];
        print_message("write case %zu\n", i);

        /* v1: exact text; too small a buffer gets nothing */
        size_t want1 = strlen(c->v1);
        for (size_t cap = 0; cap < want1; cap++) {
            memset(line, '#', sizeof line);
            assert_int_equal(proxyproto_write_v1(sp, dp, line, cap), 0);
            assert_int_equal(line[0], '#');
        }
        memset(line, '#', sizeof line);
        assert_int_equal(proxyproto_write_v1(sp, dp, line, want1), want1);
        assert_memory_equal(line, c->v1, want1);
        assert_int_equal(line[want1], '#');
        assert_true(want1 <= PROXYPROTO_V1_MAX_LEN);
        pp_parsed_back(c, (const unsigned char *)line, want1, 1);

        /* v2 */
        for (size_t cap = 0; cap < c->v2_len; cap++) {
            memset(bin, '#', sizeof bin);
            assert_int_equal(proxyproto_write_v2(sp, dp, bin, cap), 0);
            assert_int_equal(bin[0], '#');
        }
        memset(bin, '#', sizeof bin);
        assert_int_equal(proxyproto_write_v2(sp, dp, bin, sizeof bin),
                         c->v2_len);
        if (c->v2 != NULL)
            assert_memory_equal(bin, c->v2, c->v2_len);
        assert_int_equal(bin[c->v2_len], '#');
        pp_parsed_back(c, bin, c->v2_len, 2);
    }
}

/* round trips over many addresses and ports */
static void test_write_round_trip(void **state)
{
    (void)state;
    uint32_t seed = 99;

    for (int round = 0; round < 2000; round++) {
        struct sockaddr_storage s, d;
        memset(&s, 0, sizeof s);
        memset(&d, 0, sizeof d);
        int fam = round % 2 ? AF_INET6 : AF_INET;
        for (int side = 0; side < 2; side++) {
            struct sockaddr_storage *ss = side ? &d : &s;
            unsigned char raw[18];
            for (size_t k = 0; k < sizeof raw; k++) {
                seed = seed * 1103515245u + 12345u;
                raw[k] = (unsigned char)(seed >> 16);
            }
            if (fam == AF_INET) {
                struct sockaddr_in sin;
                memset(&sin, 0, sizeof sin);
                sin.sin_family = AF_INET;
                memcpy(&sin.sin_addr, raw, 4);
                memcpy(&sin.sin_port, raw + 16, 2);
                memcpy(ss, &sin, sizeof sin);
            } else {
                struct sockaddr_in6 sin6;
                memset(&sin6, 0, sizeof sin6);
                sin6.sin6_family = AF_INET6;
                memcpy(&sin6.sin6_addr, raw, 16);
                memcpy(&sin6.sin6_port, raw + 16, 2);
                memcpy(ss, &sin6, sizeof sin6);
            }
        }
        const struct sockaddr *sp = (const struct sockaddr *)&s;
        const struct sockaddr *dp = (const struct sockaddr *)&d;
        char line[PROXYPROTO_V1_MAX_LEN];
        unsigned char bin[64];
        struct proxyproto_result r;

        size_t n = proxyproto_write_v1(sp, dp, line, sizeof line);
        assert_true(n > 0);
        assert_int_equal(pp_parse((const unsigned char *)line, n, &r),
                         PROXYPROTO_OK);
        assert_int_equal(r.family, fam);
        assert_memory_equal(&r.src, &s, sizeof s);
        assert_memory_equal(&r.dst, &d, sizeof d);

        n = proxyproto_write_v2(sp, dp, bin, sizeof bin);
        assert_int_equal(n, fam == AF_INET ? 28 : 52);
        assert_int_equal(pp_parse(bin, n, &r), PROXYPROTO_OK);
        assert_int_equal(r.family, fam);
        assert_memory_equal(&r.src, &s, sizeof s);
        assert_memory_equal(&r.dst, &d, sizeof d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_cases),
        cmocka_unit_test(test_parse_limits),
        cmocka_unit_test(test_write),
        cmocka_unit_test(test_write_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
