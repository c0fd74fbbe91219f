/*
 * fuzz_filter.c - the message content filter (smtp_data_filter).  The
 * first byte picks a split point and a small output buffer size, the
 * second the mode; the rest is content.  Fed whole, in two chunks with a
 * small output buffer, one byte at a time, and in two chunks with the
 * unchanged runs taken by smtp_data_filter_pass, it must give the same
 * output; that output has no bare CR or LF, its first end-of-data is at
 * its very end when done (and it has none otherwise), it holds no NUL,
 * the input consumed
 * is what smtp_data_scan finds, and when done the output is the one the
 * rules give (a reference written by lines).
 */
#include <string.h>

#include "fuzz.h"
#include "smtp.h"

struct fuzz_result {
    char *out;
    size_t out_len;
    size_t used;
    bool done;
    bool bare;
    bool nul;
};

/* fuzz_run - filter buf[0..len) in chunks of at most step bytes (0: one
 * chunk split at split), out_cap output bytes per call, into r->out; with
 * pass, smtp_data_filter_pass first takes what needs no rewriting */
static void fuzz_run(const char *buf, size_t len, enum smtp_bare_newline mode,
                     bool pass, size_t split, size_t step, size_t out_cap,
                     struct fuzz_result *r)
{
    struct smtp_data_filter f;
    char *tmp = malloc(out_cap);
    size_t pos = 0;

    FUZZ_CHECK(tmp != NULL);
    smtp_data_filter_init(&f, mode);
    r->out_len = 0;
    r->done = false;
    while (pos < len && !r->done) {
        size_t end = step > 0 ? pos + step : (pos < split ? split : len);
        if (end > len)
            end = len;
        while (pos < end && !r->done) {
            size_t olen;
            bool d;
            if (pass) {
                size_t same = smtp_data_filter_pass(&f, buf + pos, end - pos,
                                                    &d);
                FUZZ_CHECK(!d && same <= end - pos);
                if (same > 0)
                    memcpy(r->out + r->out_len, buf + pos, same);
                r->out_len += same;
                pos += same;
                if (pos == end)
                    break;
            }
            size_t n = smtp_data_filter(&f, buf + pos, end - pos, tmp, out_cap,
                                        &olen, &d);
            FUZZ_CHECK(n <= end - pos);
            FUZZ_CHECK(n > 0);
            FUZZ_CHECK(olen <= out_cap);
            if (!d && n < end - pos)
                FUZZ_CHECK(olen + SMTP_DATA_FILTER_MIN_OUT > out_cap);
            if (olen > 0)
                memcpy(r->out + r->out_len, tmp, olen);
            r->out_len += olen;
            pos += n;
            r->done = d;
        }
    }
    r->used = pos;
    r->bare = smtp_data_filter_bare_seen(&f);
    r->nul = smtp_data_filter_nul_seen(&f);
    free(tmp);
}

/* fuzz_same - two runs agree */
static void fuzz_same(const struct fuzz_result *a, const struct fuzz_result *b)
{
    FUZZ_CHECK(a->done == b->done && a->used == b->used);
    FUZZ_CHECK(a->bare == b->bare && a->nul == b->nul);
    FUZZ_CHECK(a->out_len == b->out_len);
    FUZZ_CHECK(a->out_len == 0 || memcmp(a->out, b->out, a->out_len) == 0);
}

/* fuzz_has_bare - a CR not before LF or a LF not after CR in buf */
static bool fuzz_has_bare(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\r' && (i + 1 == len || buf[i + 1] != '\n'))
            return true;
        if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r'))
            return true;
    }
    return false;
}

/* fuzz_first_end - bytes of buf up to its first end-of-data (after the
 * implicit CRLF), or len + 1 */
static size_t fuzz_first_end(const char *buf, size_t len)
{
    char *tmp = malloc(len + 2);
    FUZZ_CHECK(tmp != NULL);
    memcpy(tmp, "\r\n", 2);
    if (len > 0)
        memcpy(tmp + 2, buf, len);
    const char *p = memmem(tmp, len + 2, "\r\n.\r\n", 5);
    size_t r = p == NULL ? len + 1 : (size_t)(p - tmp) + 3;
    free(tmp);
    return r;
}

/* fuzz_reference - the expected output of a message that ends: content
 * is in[0..used - 3), whole lines; see include/smtp.h for the rules: a
 * line's NULs are removed, and a line that then starts with "." gets a
 * second one after a bare line end, when it is just "." ended by a bare
 * CR or LF, when a NUL came before its dot, or when one follows it */
static size_t fuzz_reference(const char *in, size_t used, char *out)
{
    size_t content = used - 3, o = 0, i = 0;
    bool prev_bare = false;

    while (i < content) {
        size_t start = i, line_len = 0;
        while (in[i] != '\r' && in[i] != '\n')
            i++;
        size_t raw_len = i - start;
        bool crlf = in[i] == '\r' && i + 1 < content && in[i + 1] == '\n';
        i += crlf ? 2 : 1;
        char *line = out + o + 1;   /* leave room for a stuffed dot */
        for (size_t k = 0; k < raw_len; k++)
            if (in[start + k] != '\0')
                line[line_len++] = in[start + k];
        bool stuff = line_len > 0 && line[0] == '.' &&
                     (prev_bare || (line_len == 1 && !crlf) ||
                      in[start] != '.' ||
                      (raw_len > 1 && in[start + 1] == '\0'));
        if (stuff)
            out[o++] = '.';
        else
            memmove(out + o, line, line_len);
        o += line_len;
        memcpy(out + o, "\r\n", 2);
        o += 2;
        prev_bare = !crlf;
    }
    memcpy(out + o, ".\r\n", 3);
    return o + 3;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const char *buf = (const char *)data + 2;
    size_t len = size - 2;
    size_t split = len * (data[0] >> 3) / 31;
    size_t cap = SMTP_DATA_FILTER_MIN_OUT + (data[0] & 7);
    enum smtp_bare_newline mode = (data[1] & 1) ? SMTP_BARE_REJECT
                                                : SMTP_BARE_NORMALIZE;
    size_t out_max = 2 * len + 16;
    struct fuzz_result whole, part;
    whole.out = malloc(out_max);
    part.out = malloc(out_max);
    FUZZ_CHECK(whole.out != NULL && part.out != NULL);

    fuzz_run(buf, len, mode, false, len, 0, out_max, &whole);
    fuzz_run(buf, len, mode, false, split, 0, cap, &part);
    fuzz_same(&whole, &part);
    fuzz_run(buf, len, mode, false, 0, 1, cap, &part);
    fuzz_same(&whole, &part);
    fuzz_run(buf, len, mode, true, split, 0, cap, &part);
    fuzz_same(&whole, &part);
    FUZZ_CHECK(whole.out_len <= out_max);

    /* the end is where the plain scanner puts it */
    size_t end = fuzz_first_end(buf, len);
    if (end > len)
        FUZZ_CHECK(!whole.done && whole.used == len);
    else
        FUZZ_CHECK(whole.done && whole.used == end);

    /* what the backend sees */
    FUZZ_CHECK(!fuzz_has_bare(whole.out, whole.out_len));
    FUZZ_CHECK(whole.out_len == 0 ||
               memchr(whole.out, '\0', whole.out_len) == NULL);
    size_t out_end = fuzz_first_end(whole.out, whole.out_len);
    if (whole.done)
        FUZZ_CHECK(out_end == whole.out_len);
    else
        FUZZ_CHECK(out_end > whole.out_len);

    /* the flags: a CR at the very end of unfinished input is undecided */
    size_t decided = whole.used;
    if (!whole.done && decided > 0 && buf[decided - 1] == '\r')
        decided--;
    FUZZ_CHECK(whole.bare == fuzz_has_bare(buf, decided));
    FUZZ_CHECK(whole.nul ==
               (whole.used > 0 && memchr(buf, '\0', whole.used) != NULL));

    if (whole.done) {
        size_t n = fuzz_reference(buf, whole.used, part.out);
        FUZZ_CHECK(n == whole.out_len);
        FUZZ_CHECK(memcmp(part.out, whole.out, n) == 0);
    }

    free(whole.out);
    free(part.out);
    return 0;
}
