/*
 * fuzz_reply.c - smtp_reply_scan, then smtp_ehlo_caps and
 * smtp_ehlo_rewrite on the reply it found.  Byte 0 picks max_line, byte 1
 * max_lines, byte 2 the rewrite options; the rest is backend output.
 */
#include <limits.h>
#include <string.h>

#include "fuzz.h"
#include "smtp.h"

/* fuzz_rewrite - rewrite a complete reply and check the result */
static void fuzz_rewrite(const char *reply, size_t len, uint8_t optbyte)
{
    static const unsigned bits[] = {
        SMTP_CAP_STARTTLS, SMTP_CAP_AUTH, SMTP_CAP_XCLIENT, SMTP_CAP_XFORWARD,
        SMTP_CAP_PIPELINING, SMTP_CAP_CHUNKING, SMTP_CAP_SIZE
    };
    static const char *const extra[] = { "X-EXTRA", "DELIVERBY" };
    char dropped[64];
    struct smtp_ehlo_rewrite opts = { .offer_starttls = (optbyte & 1) != 0,
                                      .keep = SMTP_CAP_ALL,
                                      .extra = extra, .nextra = 2,
                                      .dropped = dropped,
                                      .dropped_cap = sizeof dropped };
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++)
        if (optbyte & (2u << i))
            opts.keep &= ~bits[i];

    unsigned caps_in = smtp_ehlo_caps(reply, len);
    /* bare LF may become CRLF on every line, plus "250-STARTTLS\r\n" */
    size_t cap = 2 * len + 32;
    char *out = malloc(cap);
    FUZZ_CHECK(out != NULL);
    size_t out_len = 0;
    FUZZ_CHECK(smtp_ehlo_rewrite(reply, len, &opts, out, cap, &out_len) == 0);
    FUZZ_CHECK(out_len <= cap);

    struct smtp_reply r;
    FUZZ_CHECK(smtp_reply_scan(out, out_len, SIZE_MAX, UINT_MAX, &r) ==
               SMTP_REPLY_OK);
    FUZZ_CHECK(r.len == out_len);
    if (r.code == 250) {
        unsigned caps_out = smtp_ehlo_caps(out, out_len);
        unsigned removed = SMTP_CAP_ALL & ~opts.keep;
        if (opts.offer_starttls) {
            FUZZ_CHECK(caps_out & SMTP_CAP_STARTTLS);
            removed &= ~(unsigned)SMTP_CAP_STARTTLS;
        }
        FUZZ_CHECK((caps_out & removed) == 0);
        FUZZ_CHECK((caps_out & ~caps_in & ~(unsigned)SMTP_CAP_STARTTLS) == 0);
        FUZZ_CHECK(strlen(dropped) < sizeof dropped);
    } else {
        FUZZ_CHECK(out_len == len && memcmp(out, reply, len) == 0);
    }

    /* one byte short: refused, nothing written */
    if (out_len > 0) {
        char *small = malloc(out_len);
        FUZZ_CHECK(small != NULL);
        memset(small, 'Z', out_len);
        size_t small_len = 12345;
        FUZZ_CHECK(smtp_ehlo_rewrite(reply, len, &opts, small, out_len - 1,
                                     &small_len) == -1);
        FUZZ_CHECK(small_len == 12345);
        for (size_t i = 0; i < out_len; i++)
            FUZZ_CHECK(small[i] == 'Z');
        free(small);
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    size_t max_line = 4 + (size_t)data[0] * 4;
    unsigned max_lines = 1 + data[1] % 64;
    const char *buf = (const char *)data + 3;
    size_t len = size - 3;
    struct smtp_reply r;

    enum smtp_reply_result res = smtp_reply_scan(buf, len, max_line,
                                                 max_lines, &r);
    if (res != SMTP_REPLY_OK) {
        FUZZ_CHECK(res == SMTP_REPLY_MORE || res == SMTP_REPLY_BAD);
        /* one byte less: BAD cannot have been OK, MORE cannot be BAD */
        if (len > 0) {
            struct smtp_reply r2;
            enum smtp_reply_result prev = smtp_reply_scan(buf, len - 1,
                                                          max_line, max_lines,
                                                          &r2);
            FUZZ_CHECK(prev != SMTP_REPLY_OK);
            if (res == SMTP_REPLY_MORE)
                FUZZ_CHECK(prev == SMTP_REPLY_MORE);
        }
        return 0;
    }
    FUZZ_CHECK(r.len >= 4 && r.len <= len);
    FUZZ_CHECK(r.code >= 100 && r.code <= 599);
    FUZZ_CHECK(r.nlines >= 1 && r.nlines <= max_lines);
    FUZZ_CHECK(buf[r.len - 1] == '\n');

    /* the reply alone scans the same; one byte less is not complete */
    struct smtp_reply r2;
    FUZZ_CHECK(smtp_reply_scan(buf, r.len, max_line, max_lines, &r2) ==
               SMTP_REPLY_OK);
    FUZZ_CHECK(r2.len == r.len && r2.code == r.code &&
               r2.nlines == r.nlines);
    FUZZ_CHECK(smtp_reply_scan(buf, r.len - 1, max_line, max_lines, &r2) ==
               SMTP_REPLY_MORE);

    fuzz_rewrite(buf, r.len, data[2]);
    return 0;
}
