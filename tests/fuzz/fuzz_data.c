/*
 * fuzz_data.c - the end-of-data scanner.  The first byte picks a split
 * point; the rest is content.  Fed whole, in two chunks at the split point
 * and one byte at a time, it must give the same answer, and that answer
 * must be the first CR LF "." CR LF in CR LF + content.
 */
#include <string.h>

#include "fuzz.h"
#include "smtp.h"

/* fuzz_feed - scan buf[0..len) in chunks of at most step bytes (0: one
 * chunk split at split); returns the bytes used, sets *done */
static size_t fuzz_feed(const char *buf, size_t len, size_t split,
                        size_t step, bool *done)
{
    struct smtp_data_scanner s;
    size_t pos = 0;

    smtp_data_scanner_init(&s);
    *done = false;
    while (!*done) {
        size_t n = step > 0 ? step : (pos < split ? split - pos : len - pos);
        if (n > len - pos)
            n = len - pos;
        size_t used = smtp_data_scan(&s, buf + pos, n, done);
        FUZZ_CHECK(used <= n);
        FUZZ_CHECK(*done || used == n);
        pos += used;
        if (pos == len && !*done)
            break;
    }
    return pos;
}

/* fuzz_reference - bytes of content up to the end, or len + 1 if none */
static size_t fuzz_reference(const char *buf, size_t len)
{
    char *tmp = malloc(len + 2);
    FUZZ_CHECK(tmp != NULL);
    memcpy(tmp, "\r\n", 2);
    memcpy(tmp + 2, buf, len);
    const char *p = memmem(tmp, len + 2, "\r\n.\r\n", 5);
    size_t r = p == NULL ? len + 1 : (size_t)(p - tmp) + 3;
    free(tmp);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    size_t split = len * data[0] / 255;
    bool d_whole, d_split, d_byte;

    size_t u_whole = fuzz_feed(buf, len, len, 0, &d_whole);
    size_t u_split = fuzz_feed(buf, len, split, 0, &d_split);
    size_t u_byte = fuzz_feed(buf, len, 0, 1, &d_byte);
    FUZZ_CHECK(u_whole == u_split && d_whole == d_split);
    FUZZ_CHECK(u_whole == u_byte && d_whole == d_byte);

    size_t want = fuzz_reference(buf, len);
    if (want > len)
        FUZZ_CHECK(!d_whole && u_whole == len);
    else
        FUZZ_CHECK(d_whole && u_whole == want);
    return 0;
}
