/*
 * fuzz_proxyproto.c - the PROXY protocol parser (proxyproto_parse).
 * The input is the bytes a load balancer (or an attacker) sends first.
 * Checked: the result is consistent for every prefix (MORE until the byte
 * that decides, then the same answer for every longer buffer), MORE never
 * past PROXYPROTO_MAX_LEN, consumed within the input, and a header with
 * addresses survives a round trip through both writers.
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "proxyproto.h"

/* fuzz_same_result - two OK results say the same */
static void fuzz_same_result(const struct proxyproto_result *a,
                             const struct proxyproto_result *b)
{
    FUZZ_CHECK(a->consumed == b->consumed && a->version == b->version);
    FUZZ_CHECK(a->kind == b->kind && a->family == b->family);
    FUZZ_CHECK(memcmp(&a->src, &b->src, sizeof a->src) == 0);
    FUZZ_CHECK(memcmp(&a->dst, &b->dst, sizeof a->dst) == 0);
}

/* fuzz_same_addrs - the addresses of two PROXY results match */
static void fuzz_same_addrs(const struct proxyproto_result *a,
                            const struct proxyproto_result *b)
{
    FUZZ_CHECK(b->kind == PROXYPROTO_KIND_PROXY);
    FUZZ_CHECK(a->family == b->family);
    FUZZ_CHECK(memcmp(&a->src, &b->src, sizeof a->src) == 0);
    FUZZ_CHECK(memcmp(&a->dst, &b->dst, sizeof a->dst) == 0);
}

/* fuzz_parse_exact - parse a copy of exactly len bytes (ASan bounds) */
static int fuzz_parse_exact(const uint8_t *data, size_t len,
                            struct proxyproto_result *r)
{
    unsigned char *copy = malloc(len > 0 ? len : 1);
    FUZZ_CHECK(copy != NULL);
    if (len > 0)
        memcpy(copy, data, len);
    int rc = proxyproto_parse(copy, len, r);
    free(copy);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxyproto_result whole, r;
    memset(&whole, 0x5a, sizeof whole);
    int rc = fuzz_parse_exact(data, size, &whole);
    FUZZ_CHECK(rc == PROXYPROTO_OK || rc == PROXYPROTO_MORE ||
               rc == PROXYPROTO_BAD);
    if (rc == PROXYPROTO_MORE)
        FUZZ_CHECK(size < PROXYPROTO_MAX_LEN);
    if (rc == PROXYPROTO_OK) {
        FUZZ_CHECK(whole.consumed > 0 && whole.consumed <= size);
        FUZZ_CHECK(whole.consumed <= (whole.version == 1
                                          ? PROXYPROTO_V1_MAX_LEN
                                          : PROXYPROTO_V2_MAX_LEN));
        FUZZ_CHECK(whole.version == 1 || whole.version == 2);
        if (whole.kind == PROXYPROTO_KIND_PROXY)
            FUZZ_CHECK(whole.family == AF_INET || whole.family == AF_INET6);
        else
            FUZZ_CHECK(whole.family == AF_UNSPEC);
    }

    /* every prefix: MORE, then the decision, which then stays */
    size_t upto = size < PROXYPROTO_MAX_LEN + 1 ? size : PROXYPROTO_MAX_LEN + 1;
    bool decided = false;
    int first = PROXYPROTO_MORE;
    for (size_t k = 0; k <= upto; k++) {
        int rk = fuzz_parse_exact(data, k, &r);
        if (!decided) {
            if (rk == PROXYPROTO_MORE)
                continue;
            decided = true;
            first = rk;
            if (rk == PROXYPROTO_OK)
                FUZZ_CHECK(r.consumed == k);
        }
        FUZZ_CHECK(rk == first);
        if (rk == PROXYPROTO_OK && rc == PROXYPROTO_OK)
            fuzz_same_result(&whole, &r);
    }
    if (size <= upto)
        FUZZ_CHECK(decided ? first == rc : rc == PROXYPROTO_MORE);

    /* round trips through the writers */
    if (rc == PROXYPROTO_OK && whole.kind == PROXYPROTO_KIND_PROXY) {
        char line[PROXYPROTO_V1_MAX_LEN];
        unsigned char bin[PROXYPROTO_V2_MAX_LEN];
        const struct sockaddr *s = (const struct sockaddr *)&whole.src;
        const struct sockaddr *d = (const struct sockaddr *)&whole.dst;

        size_t n1 = proxyproto_write_v1(s, d, line, sizeof line);
        FUZZ_CHECK(n1 > 0);
        FUZZ_CHECK(fuzz_parse_exact((const uint8_t *)line, n1, &r) ==
                   PROXYPROTO_OK);
        FUZZ_CHECK(r.consumed == n1 && r.version == 1);
        fuzz_same_addrs(&whole, &r);
        FUZZ_CHECK(proxyproto_write_v1(s, d, line, n1 - 1) == 0);

        size_t n2 = proxyproto_write_v2(s, d, bin, sizeof bin);
        FUZZ_CHECK(n2 == (whole.family == AF_INET ? 28u : 52u));
        FUZZ_CHECK(fuzz_parse_exact(bin, n2, &r) == PROXYPROTO_OK);
        FUZZ_CHECK(r.consumed == n2 && r.version == 2);
        fuzz_same_addrs(&whole, &r);
        FUZZ_CHECK(proxyproto_write_v2(s, d, bin, n2 - 1) == 0);
    }
    return 0;
}
