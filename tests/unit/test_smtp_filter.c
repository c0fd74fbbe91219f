/*
 * test_smtp_filter.c - the message content filter against SMTP smuggling
 * (smtp_data_filter) and the command line check (smtp_line_has_bare_cr_lf)
 * in proxy/smtp.c.
 *
 * Every filter case runs whole, one byte per call, split in two chunks at
 * every offset, and with small output buffers: the concatenated output
 * must be the same each time.  The smuggling cases follow each end-of-data
 * variant of the public research (SEC Consult, "SMTP Smuggling", Dec 2023,
 * and the scanners published after it) with a smuggled MAIL/RCPT/DATA and
 * check that the backend would see exactly one message end, the real one,
 * and no bare CR or LF.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp.h"

/* a string literal with its length (it may hold NUL bytes) */
#define S(lit) lit, sizeof(lit) - 1

enum { OUT_MAX = 4096, BIG_CAP = 1024 };

/* ---- helpers ------------------------------------------------------------ */

struct filter_result {
    char out[OUT_MAX];
    size_t out_len;
    size_t used;
    bool done;
    bool bare;
    bool nul;
};

/*
 * filter_run - filter in[0..len) in chunks, out_cap output bytes per call.
 * The chunks are step bytes long, or (step 0) in[0..split) and the rest.
 * Checks the contract of each call: no more output than out_cap, progress
 * on every call, a short return only when out was (nearly) full.  With
 * pass, each call is preceded by smtp_data_filter_pass, whose bytes are
 * taken straight from the input, as the proxy does.
 */
static void filter_run(const char *in, size_t len, enum smtp_bare_newline mode,
                       bool pass, size_t split, size_t step, size_t out_cap,
                       struct filter_result *r)
{
    struct smtp_data_filter f;
    char buf[BIG_CAP + 16];
    size_t pos = 0;

    assert_true(out_cap <= BIG_CAP);
    smtp_data_filter_init(&f, mode);
    r->out_len = 0;
    r->done = false;
    while (pos < len && !r->done) {
        size_t end = step > 0 ? pos + step : (pos < split ? split : len);
        if (end > len)
            end = len;
        while (pos < end && !r->done) {
            size_t olen = 777;
            bool d = true;
            if (pass) {
                size_t same = smtp_data_filter_pass(&f, in + pos, end - pos,
                                                    &d);
                assert_false(d);
                assert_true(same <= end - pos);
                assert_true(r->out_len + same <= OUT_MAX);
                memcpy(r->out + r->out_len, in + pos, same);
                r->out_len += same;
                pos += same;
                if (pos == end)
                    break;
            }
            memset(buf + out_cap, 0x5a, 16);
            size_t n = smtp_data_filter(&f, in + pos, end - pos, buf, out_cap,
                                        &olen, &d);
            assert_true(n <= end - pos);
            assert_true(n > 0);               /* progress */
            assert_true(olen <= out_cap);
            for (size_t k = 0; k < 16; k++)
                assert_int_equal((unsigned char)buf[out_cap + k], 0x5a);
            if (!d && n < end - pos)
                assert_true(olen + SMTP_DATA_FILTER_MIN_OUT > out_cap);
            assert_true(r->out_len + olen <= OUT_MAX);
            memcpy(r->out + r->out_len, buf, olen);
            r->out_len += olen;
            pos += n;
            r->done = d;
        }
    }
    r->used = pos;
    r->bare = smtp_data_filter_bare_seen(&f);
    r->nul = smtp_data_filter_nul_seen(&f);
    assert_int_equal(smtp_data_filter_mode(&f), mode);
}

/* filter_same - two runs gave the same answer */
static void filter_same(const struct filter_result *a,
                        const struct filter_result *b)
{
    assert_int_equal(a->done, b->done);
    assert_int_equal(a->used, b->used);
    assert_int_equal(a->bare, b->bare);
    assert_int_equal(a->nul, b->nul);
    assert_int_equal(a->out_len, b->out_len);
    assert_memory_equal(a->out, b->out, a->out_len);
}

/*
 * filter_all_ways - run in whole, byte by byte, split at every offset and
 * with small output buffers; all runs must agree.  *whole gets the answer.
 */
static void filter_all_ways(const char *in, size_t len,
                            enum smtp_bare_newline mode,
                            struct filter_result *whole)
{
    static const size_t small_caps[] = { SMTP_DATA_FILTER_MIN_OUT, 9, 10, 13 };
    struct filter_result *r = malloc(sizeof *r);
    assert_non_null(r);

    filter_run(in, len, mode, false, len, 0, BIG_CAP, whole);

    filter_run(in, len, mode, false, 0, 1, BIG_CAP, r);
    filter_same(whole, r);
    for (size_t k = 0; k <= len; k++) {
        filter_run(in, len, mode, false, k, 0, BIG_CAP, r);
        filter_same(whole, r);
    }
    /* the proxy's way: the unchanged runs straight from the input */
    filter_run(in, len, mode, true, len, 0, BIG_CAP, r);
    filter_same(whole, r);
    filter_run(in, len, mode, true, 0, 1, BIG_CAP, r);
    filter_same(whole, r);
    for (size_t k = 0; k <= len; k++) {
        filter_run(in, len, mode, true, k, 0, BIG_CAP, r);
        filter_same(whole, r);
    }
    for (size_t c = 0; c < sizeof small_caps / sizeof small_caps[0]; c++) {
        filter_run(in, len, mode, true, 0, 3, small_caps[c], r);
        filter_same(whole, r);
        filter_run(in, len, mode, false, len, 0, small_caps[c], r);
        filter_same(whole, r);
        filter_run(in, len, mode, false, 0, 1, small_caps[c], r);
        filter_same(whole, r);
        filter_run(in, len, mode, false, 0, 3, small_caps[c], r);
        filter_same(whole, r);
    }
    free(r);
}

/* has_bare_cr_lf - does buf hold a CR not before LF or a LF not after CR? */
static bool has_bare_cr_lf(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\r' && (i + 1 == len || buf[i + 1] != '\n'))
            return true;
        if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r'))
            return true;
    }
    return false;
}

/* count_ends - how many CRLF "." CRLF are in "\r\n" + buf */
static unsigned count_ends(const char *buf, size_t len)
{
    char *tmp = malloc(len + 2);
    unsigned count = 0;

    assert_non_null(tmp);
    memcpy(tmp, "\r\n", 2);
    memcpy(tmp + 2, buf, len);
    for (size_t i = 0; i + 5 <= len + 2; i++)
        if (memcmp(tmp + i, "\r\n.\r\n", 5) == 0)
            count++;
    free(tmp);
    return count;
}

/* scan_end - where smtp_data_scan ends buf (its return), and *done */
static size_t scan_end(const char *buf, size_t len, bool *done)
{
    struct smtp_data_scanner s;

    smtp_data_scanner_init(&s);
    return smtp_data_scan(&s, buf, len, done);
}

/*
 * check_backend_view - what the backend receives (the output) has no bare
 * CR or LF; when done, its one and only end-of-data is at its very end,
 * and otherwise it has none.
 */
static void check_backend_view(const struct filter_result *r)
{
    bool d;
    size_t e = scan_end(r->out, r->out_len, &d);

    assert_false(has_bare_cr_lf(r->out, r->out_len));
    assert_null(memchr(r->out, '\0', r->out_len));   /* NULs are removed */
    assert_int_equal(d, r->done);
    assert_int_equal(e, r->out_len);
    assert_int_equal(count_ends(r->out, r->out_len), r->done ? 1 : 0);
}

/* ---- fixed cases --------------------------------------------------------- */

struct filter_case {
    const char *in;
    size_t len;
    const char *out;      /* what the backend gets, held bytes left out */
    size_t out_len;
    bool done;
    size_t used;          /* input bytes consumed */
    bool bare;            /* a bare CR or LF was found */
};

/* in is exactly one message; END_AT_: the message msg, then next */
#define END_(in, out, bare) { S(in), S(out), true, sizeof(in) - 1, bare }
#define END_AT_(msg, next, out, bare) \
    { S(msg next), S(out), true, sizeof(msg) - 1, bare }
#define MORE_(in, out, bare) { S(in), S(out), false, sizeof(in) - 1, bare }

static const struct filter_case filter_cases[] = {
    /* clean messages pass through byte for byte */
    END_(".\r\n", ".\r\n", false),
    END_AT_(".\r\n", "QUIT\r\n", ".\r\n", false),
    END_("a\r\n.\r\n", "a\r\n.\r\n", false),
    END_AT_("Subject: x\r\n\r\nbody\r\n.\r\n", "MAIL FROM:<a>\r\n",
            "Subject: x\r\n\r\nbody\r\n.\r\n", false),
    END_("..\r\n...\r\n.a\r\n.\r\n", "..\r\n...\r\n.a\r\n.\r\n", false),
    END_AT_("a\r\n.\r\n", ".\r\n", "a\r\n.\r\n", false),
    END_("a\r\n. \r\n.\r\n", "a\r\n. \r\n.\r\n", false),
    /* NUL bytes are removed; a line that then starts with "." is stuffed */
    END_("a\0b\r\n\0.\r\n.\0\r\n.\r\n", "ab\r\n..\r\n..\r\n.\r\n", false),
    END_("\0\0.x\r\n.\r\n", "..x\r\n.\r\n", false),
    END_("..\0\r\n.\r\n", "..\r\n.\r\n", false),
    END_(".\0x\r\n.\r\n", "..x\r\n.\r\n", false),
    END_("a\0\r\n\0\r\n.\r\n", "a\r\n\r\n.\r\n", false),
    MORE_("a\r\0\n.\r\n", "a\r\n\r\n..\r\n", true),
    MORE_("a\n\0.\r\n", "a\r\n..\r\n", true),
    MORE_("a\r\n\0.\n", "a\r\n..\r\n", true),
    MORE_("a\r\n\0.\r", "a\r\n..", false),
    MORE_("a\r\n\0", "a\r\n", false),
    /* bare LF and bare CR become CRLF */
    END_("a\nb\r\n.\r\n", "a\r\nb\r\n.\r\n", true),
    END_("a\rb\r\n.\r\n", "a\r\nb\r\n.\r\n", true),
    END_("a\r\r\n.\r\n", "a\r\n\r\n.\r\n", true),
    END_("a\n\r\n.\r\n", "a\r\n\r\n.\r\n", true),
    MORE_("\n.\r\n", "\r\n..\r\n", true),
    END_("\r\r\n.\r\n", "\r\n\r\n.\r\n", true),
    /* a line after a bare line end that starts with "." is stuffed */
    END_("a\n.\nb\r\n.\r\n", "a\r\n..\r\nb\r\n.\r\n", true),
    END_("a\n..\r\n.\r\n", "a\r\n...\r\n.\r\n", true),
    END_("a\r.x\r\n.\r\n", "a\r\n..x\r\n.\r\n", true),
    END_("a\n.\r\n.\r\n", "a\r\n..\r\n.\r\n", true),
    /* a "." line after a real CRLF ended by a bare CR/LF is stuffed */
    END_("a\r\n.\nb\r\n.\r\n", "a\r\n..\r\nb\r\n.\r\n", true),
    END_("a\r\n.\rb\r\n.\r\n", "a\r\n..\r\nb\r\n.\r\n", true),
    END_("a\r\n.\r\r\n.\r\n", "a\r\n..\r\n\r\n.\r\n", true),
    END_("a\r\n.\r.\r\n.\r\n", "a\r\n..\r\n..\r\n.\r\n", true),
    MORE_(".\n.\r\n", "..\r\n..\r\n", true),
    /* content not yet decided is held back */
    MORE_("", "", false),
    MORE_("a", "a", false),
    MORE_("a\r", "a", false),
    MORE_("a\r\n", "a\r\n", false),
    MORE_("a\r\n.", "a\r\n", false),
    MORE_("a\r\n.\r", "a\r\n", false),
    MORE_(".", "", false),
    MORE_(".\r", "", false),
    MORE_("..", "..", false),
    MORE_("a\n.", "a\r\n..", true),
    MORE_("a\r.", "a\r\n..", true),
    MORE_("a\r\r", "a\r\n", true),
    MORE_("a\n.\n", "a\r\n..\r\n", true),
    MORE_("a\r\n.\r\0", "a\r\n..\r\n", true),
    MORE_("a\r\n.\0", "a\r\n..", false),
};

static void test_filter_cases(void **state)
{
    (void)state;
    struct filter_result *r = malloc(sizeof *r);
    assert_non_null(r);

    for (size_t i = 0; i < sizeof filter_cases / sizeof filter_cases[0]; i++) {
        const struct filter_case *c = &filter_cases[i];
        print_message("filter case %zu\n", i);
        for (int m = 0; m < 2; m++) {
            filter_all_ways(c->in, c->len,
                            m ? SMTP_BARE_REJECT : SMTP_BARE_NORMALIZE, r);
            assert_int_equal(r->done, c->done);
            assert_int_equal(r->used, c->used);
            assert_int_equal(r->bare, c->bare);
            assert_int_equal(r->out_len, c->out_len);
            assert_memory_equal(r->out, c->out, c->out_len);
            check_backend_view(r);
        }
    }
    free(r);
}

/* ---- smuggling ----------------------------------------------------------- */

/* end-of-data lookalikes from the public smuggling research and scanners */
static const struct {
    const char *seq;
    size_t len;
    bool bare;   /* contains a bare CR or LF */
} smuggle_seqs[] = {
    { S("\n.\n"), true },
    { S("\n.\r\n"), true },
    { S("\n.\r"), true },
    { S("\r.\r"), true },
    { S("\r.\n"), true },
    { S("\r.\r\n"), true },
    { S("\r\n.\r"), true },
    { S("\r\n.\n"), true },
    { S("\r\n.\r\r\n"), true },
    { S("\r\n.\n\r\n"), true },
    { S("\n\n.\n\n"), true },
    { S("\r\r.\r\r"), true },
    { S("\n\r.\r\n"), true },
    { S("\r\n\r.\r\n"), true },
    { S("\r\n\n.\r\n"), true },
    { S("\r\n\r\n.\n\r\n"), true },
    /* NUL variants (smtpsmug, smtp_smuggling_checker): the bytes a backend
     * that drops NULs would read as CRLF . CRLF */
    { S("\r\n\x00.\r\n"), false },
    { S("\r\n.\x00\r\n"), false },
    { S("\r\n\x00.\x00\r\n"), false },
    { S("\r\n\x00\x00.\r\n"), false },
    { S("\r\n\x00.\r"), true },
    { S("\r\n\x00.\n"), true },
    { S("\n\x00.\n"), true },
    { S("\n\x00.\r\n"), true },
    { S("\r\n.\r\x00\n"), true },
    { S("\r\x00\n.\r\n"), true },
    { S("\r\x00\n.\r\x00\n"), true },
    { S("\r\n. \r\n"), false },
    { S("\r\n.\t\r\n"), false },
};

static const char smuggle_head[] =
    "From: a@example.org\r\nSubject: hello\r\n\r\nfirst message";
static const char smuggle_tail[] =
    "MAIL FROM:<x@example.org>\r\nRCPT TO:<y@example.net>\r\nDATA\r\n"
    "From: x@example.org\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n";
static const char smuggle_next[] = "QUIT\r\n";

static void test_filter_smuggling(void **state)
{
    (void)state;
    struct filter_result *r = malloc(sizeof *r);
    char in[512];
    assert_non_null(r);

    for (size_t i = 0; i < sizeof smuggle_seqs / sizeof smuggle_seqs[0]; i++) {
        size_t len = 0;
        print_message("smuggling sequence %zu\n", i);
        memcpy(in + len, smuggle_head, sizeof smuggle_head - 1);
        len += sizeof smuggle_head - 1;
        memcpy(in + len, smuggle_seqs[i].seq, smuggle_seqs[i].len);
        len += smuggle_seqs[i].len;
        memcpy(in + len, smuggle_tail, sizeof smuggle_tail - 1);
        len += sizeof smuggle_tail - 1;
        size_t msg_len = len;
        memcpy(in + len, smuggle_next, sizeof smuggle_next - 1);
        len += sizeof smuggle_next - 1;

        /* the proxy's own scanner sees one message up to the real end */
        bool d;
        assert_int_equal(scan_end(in, len, &d), msg_len);
        assert_true(d);

        for (int m = 0; m < 2; m++) {
            filter_all_ways(in, len, m ? SMTP_BARE_REJECT : SMTP_BARE_NORMALIZE,
                            r);
            assert_true(r->done);
            assert_int_equal(r->used, msg_len);
            assert_int_equal(r->bare, smuggle_seqs[i].bare);
            check_backend_view(r);
            /* the smuggled commands are content of the one message */
            assert_non_null(memmem(r->out, r->out_len, "MAIL FROM:<x@", 13));
            assert_memory_equal(r->out + r->out_len - 13, "smuggled\r\n.\r\n",
                                13);
        }
    }
    free(r);
}

/* the example of the issue, byte for byte */
static void test_filter_smuggling_exact(void **state)
{
    (void)state;
    static const char in[] =
        "a\n.\nMAIL FROM:<x>\r\nRCPT TO:<y>\r\nDATA\r\nb\r\n.\r\nQUIT\r\n";
    static const char want[] =
        "a\r\n..\r\nMAIL FROM:<x>\r\nRCPT TO:<y>\r\nDATA\r\nb\r\n.\r\n";
    struct filter_result *r = malloc(sizeof *r);
    assert_non_null(r);

    filter_all_ways(in, sizeof in - 1, SMTP_BARE_NORMALIZE, r);
    assert_true(r->done);
    assert_true(r->bare);
    assert_int_equal(r->used, sizeof in - 1 - 6);
    assert_int_equal(r->out_len, sizeof want - 1);
    assert_memory_equal(r->out, want, sizeof want - 1);
    free(r);
}

/* ---- API edges ----------------------------------------------------------- */

/* after the end nothing more is taken; out may be NULL to drain */
static void test_filter_edges(void **state)
{
    (void)state;
    struct smtp_data_filter f;
    char out[16];
    size_t olen = 99;
    bool done = true;

    smtp_data_filter_init(&f, SMTP_BARE_NORMALIZE);
    assert_int_equal(smtp_data_filter(&f, NULL, 0, out, sizeof out, &olen,
                                      &done), 0);
    assert_int_equal(olen, 0);
    assert_false(done);
    assert_int_equal(smtp_data_filter(&f, S("x\r\n.\r\nQUIT"), out,
                                      sizeof out, &olen, &done), 6);
    assert_true(done);
    assert_int_equal(olen, 6);
    assert_memory_equal(out, "x\r\n.\r\n", 6);
    olen = 99;
    done = false;
    assert_int_equal(smtp_data_filter(&f, S("more"), out, sizeof out, &olen,
                                      &done), 0);
    assert_true(done);
    assert_int_equal(olen, 0);

    /* a refused message is read to its end without output */
    smtp_data_filter_init(&f, SMTP_BARE_REJECT);
    assert_int_equal(smtp_data_filter(&f, S("a\n.\nb\0c\r\n.\r\nQUIT\r\n"),
                                      NULL, 0, &olen, &done), 12);
    assert_true(done);
    assert_int_equal(olen, 0);
    assert_true(smtp_data_filter_bare_seen(&f));
    assert_true(smtp_data_filter_nul_seen(&f));
    assert_int_equal(smtp_data_filter_nul_count(&f), 1);
    assert_int_equal(smtp_data_filter_mode(&f), SMTP_BARE_REJECT);

    /* NULs are counted through the fast path's hand-over too */
    smtp_data_filter_init(&f, SMTP_BARE_NORMALIZE);
    assert_int_equal(smtp_data_filter_pass(&f, S("abc\0\0d"), &done), 3);
    assert_int_equal(smtp_data_filter(&f, S("\0\0d\r\n\0.\r\n.\r\n"), out,
                                      sizeof out, &olen, &done), 12);
    assert_true(done);
    assert_int_equal(smtp_data_filter_nul_count(&f), 3);
    assert_int_equal(olen, 10);
    assert_memory_equal(out, "d\r\n..\r\n.\r\n", 10);

    /* out_cap 0 consumes only bytes that write nothing yet */
    smtp_data_filter_init(&f, SMTP_BARE_NORMALIZE);
    assert_int_equal(smtp_data_filter(&f, S("\r"), out, 0, &olen, &done), 1);
    assert_int_equal(smtp_data_filter(&f, S("\nx"), out, 0, &olen, &done), 0);
    assert_false(done);
    assert_int_equal(olen, 0);
    assert_false(smtp_data_filter_bare_seen(&f));
    assert_false(smtp_data_filter_nul_seen(&f));

    /* a long clean body is copied at once and fills out exactly */
    char big[300];
    memset(big, 'x', sizeof big);
    char obig[256];
    smtp_data_filter_init(&f, SMTP_BARE_NORMALIZE);
    assert_int_equal(smtp_data_filter(&f, big, sizeof big, obig, sizeof obig,
                                      &olen, &done), sizeof obig);
    assert_int_equal(olen, sizeof obig);
    assert_false(done);
}

/* ---- random inputs against a reference ----------------------------------- */

/*
 * filter_reference - the expected output, written from the rules by
 * lines rather than by states (NULs removed).  in[0..len) must contain CRLF "." CRLF
 * (after the implicit CRLF).  Returns the output length; *used gets the
 * bytes up to the end and *bare whether a bare CR/LF came before it.
 */
static size_t filter_reference(const char *in, size_t len, char *out,
                               size_t *used, bool *bare)
{
    char *tmp = malloc(len + 2);
    assert_non_null(tmp);
    memcpy(tmp, "\r\n", 2);
    memcpy(tmp + 2, in, len);
    const char *p = memmem(tmp, len + 2, "\r\n.\r\n", 5);
    assert_non_null(p);
    size_t content = (size_t)(p - tmp);   /* in[0..content): whole lines */
    free(tmp);

    size_t o = 0, i = 0;
    bool prev_bare = false;
    *bare = false;
    while (i < content) {
        size_t start = i;
        while (in[i] != '\r' && in[i] != '\n')
            i++;
        size_t line_len = i - start;
        bool crlf = in[i] == '\r' && i + 1 < content && in[i + 1] == '\n';
        i += crlf ? 2 : 1;
        if (!crlf)
            *bare = true;
        /* the line without its NULs; a second "." when it then starts
         * with one after a bare line end, as "." ended by a bare CR or
         * LF, or when a NUL stood before its dot or right after it */
        char *line = out + o + 1;
        size_t n = 0;
        for (size_t k = 0; k < line_len; k++)
            if (in[start + k] != '\0')
                line[n++] = in[start + k];
        bool dot = n > 0 && line[0] == '.';
        if (dot && (prev_bare || (n == 1 && !crlf) || in[start] != '.' ||
                    (line_len > 1 && in[start + 1] == '\0')))
            out[o++] = '.';
        else
            memmove(out + o, line, n);
        o += n;
        memcpy(out + o, "\r\n", 2);
        o += 2;
        prev_bare = !crlf;
    }
    memcpy(out + o, ".\r\n", 3);
    *used = content + 3;
    return o + 3;
}

static void test_filter_random(void **state)
{
    (void)state;
    static const char alphabet[] = { '\r', '\n', '.', 'a', '\0' };
    struct filter_result *r = malloc(sizeof *r);
    struct filter_result *r2 = malloc(sizeof *r2);
    uint32_t seed = 4242;
    char in[48 + 5];
    char want[4 * sizeof in];
    assert_non_null(r);
    assert_non_null(r2);

    for (int round = 0; round < 20000; round++) {
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % 48;
        for (size_t k = 0; k < len; k++) {
            seed = seed * 1103515245u + 12345u;
            in[k] = alphabet[(seed >> 16) % sizeof alphabet];
        }
        memcpy(in + len, "\r\n.\r\n", 5);   /* so that it always ends */
        len += 5;
        size_t used;
        bool bare;
        size_t want_len = filter_reference(in, len, want, &used, &bare);

        seed = seed * 1103515245u + 12345u;
        size_t split = (seed >> 16) % (len + 1);
        seed = seed * 1103515245u + 12345u;
        size_t cap = SMTP_DATA_FILTER_MIN_OUT + (seed >> 16) % 8;
        filter_run(in, len, SMTP_BARE_NORMALIZE, false, len, 0, BIG_CAP, r);
        filter_run(in, len, SMTP_BARE_NORMALIZE, false, split, 0, cap, r2);
        filter_same(r, r2);
        filter_run(in, len, SMTP_BARE_NORMALIZE, false, 0, 1, cap, r2);
        filter_same(r, r2);
        filter_run(in, len, SMTP_BARE_NORMALIZE, true, split, 0, cap, r2);
        filter_same(r, r2);

        assert_true(r->done);
        assert_int_equal(r->used, used);
        assert_int_equal(r->bare, bare);
        assert_int_equal(r->out_len, want_len);
        assert_memory_equal(r->out, want, want_len);
        check_backend_view(r);
    }
    free(r);
    free(r2);
}

/*
 * test_filter_random_lines - mail-like content (lines of CR LF-ended plain
 * text, 0 to 90 bytes) with a few dots at line starts, bare CRs and LFs
 * and NULs, 64 to 400 bytes: long enough for the 64-byte blocks of
 * smtp_data_filter_pass, fed whole and in two chunks, against the rules.
 */
static void test_filter_random_lines(void **state)
{
    (void)state;
    static const char odd[] = { '\r', '\n', '.', '\0' };
    struct filter_result *r = malloc(sizeof *r);
    struct filter_result *r2 = malloc(sizeof *r2);
    uint32_t seed = 777;
    char in[400 + 100 + 5];
    char *want = malloc(4 * sizeof in);
    assert_non_null(r);
    assert_non_null(r2);
    assert_non_null(want);

#define RND() (seed = seed * 1103515245u + 12345u, seed >> 16)
    for (int round = 0; round < 20000; round++) {
        size_t len = 0, target = 64 + RND() % 337;
        unsigned rare = 1 + RND() % 4;   /* how often an odd byte comes */

        while (len < target) {
            size_t line = RND() % 91;
            for (size_t k = 0; k < line; k++) {
                if (RND() % 200 < rare)
                    in[len++] = odd[RND() % sizeof odd];
                else
                    in[len++] = (char)('a' + RND() % 26);
            }
            in[len++] = '\r';
            in[len++] = '\n';
            if (RND() % 8 == 0)
                in[len++] = '.';
        }
        memcpy(in + len, "\r\n.\r\n", 5);   /* so that it always ends */
        len += 5;
        size_t used;
        bool bare;
        size_t want_len = filter_reference(in, len, want, &used, &bare);
        size_t split = RND() % (len + 1);

        filter_run(in, len, SMTP_BARE_NORMALIZE, true, len, 0, BIG_CAP, r);
        assert_true(r->done);
        assert_int_equal(r->used, used);
        assert_int_equal(r->bare, bare);
        assert_int_equal(r->out_len, want_len);
        assert_memory_equal(r->out, want, want_len);
        filter_run(in, len, SMTP_BARE_NORMALIZE, true, split, 0, BIG_CAP, r2);
        filter_same(r, r2);
        filter_run(in, len, SMTP_BARE_NORMALIZE, false, split, 0, BIG_CAP, r2);
        filter_same(r, r2);
    }
#undef RND
    free(want);
    free(r);
    free(r2);
}

/* ---- smtp_line_has_bare_cr_lf -------------------------------------------- */

static const struct {
    const char *in;
    size_t len;
    bool bare;
} line_cases[] = {
    { S("MAIL FROM:<a>\r\n"), false },
    { S("\r\n"), false },
    { S("MAIL FROM:<a>\n"), true },
    { S("\n"), true },
    { S("MAIL FROM:<a>\rRCPT TO:<b>\r\n"), true },
    { S("DATA\r\r\n"), true },
    { S("\r\r\n"), true },
    { S("NOOP \0x\r\n"), false },   /* NUL is not a line end */
};

/*
 * test_filter_long_runs - the word-at-a-time scan and the 64-byte blocks
 * of smtp_data_filter_pass: one special byte (or a CR LF, or a "." after
 * CR LF) at every offset of a long plain run (40 bytes, and 160: across
 * two block boundaries, at both ends of a block), in every position within
 * an 8-byte word, all ways of feeding agree with the rules.
 */
static void test_filter_long_runs(void **state)
{
    (void)state;
    static const char *const specials[] = { "\r", "\n", "\0", "\r\n",
                                            "\r\n.", "\n.", "\r\r\n" };
    struct filter_result *r = malloc(sizeof *r);
    static const size_t totals[] = { 40, 160 };
    char in[160], want[OUT_MAX];
    assert_non_null(r);

    for (size_t t = 0; t < sizeof totals / sizeof totals[0]; t++)
    for (size_t sp = 0; sp < sizeof specials / sizeof specials[0]; sp++) {
        size_t sl = strlen(specials[sp]) + (sp == 2);   /* the NUL itself */
        size_t total = totals[t];
        for (size_t at = 0; at + sl + 5 + 1 <= total; at++) {
            size_t len = 0, used, want_len;
            bool bare;

            memset(in, 'x', at);
            len = at;
            memcpy(in + len, specials[sp], sl);
            len += sl;
            memset(in + len, 'y', total - 5 - len);
            len = total - 5;
            memcpy(in + len, "\r\n.\r\n", 5);
            len += 5;
            filter_all_ways(in, len, SMTP_BARE_NORMALIZE, r);
            want_len = filter_reference(in, len, want, &used, &bare);
            assert_true(r->done);
            assert_int_equal(r->used, used);
            assert_int_equal(r->bare, bare);
            assert_int_equal(r->out_len, want_len);
            assert_memory_equal(r->out, want, want_len);
        }
    }
    free(r);
}

static void test_line_bare(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof line_cases / sizeof line_cases[0]; i++) {
        size_t line_len, total;
        print_message("line case %zu\n", i);
        assert_int_equal(smtp_line_find(line_cases[i].in, line_cases[i].len,
                                        512, &line_len, &total),
                         SMTP_LINE_OK);
        assert_int_equal(total, line_cases[i].len);
        assert_int_equal(smtp_line_has_bare_cr_lf(line_cases[i].in, line_len,
                                                  total),
                         line_cases[i].bare);
    }
    /* a LF inside the given length, or a total that cannot be */
    assert_true(smtp_line_has_bare_cr_lf("a\nb", 3, 5));
    assert_true(smtp_line_has_bare_cr_lf("ab", 2, 1));
    assert_false(smtp_line_has_bare_cr_lf(NULL, 0, 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filter_cases),
        cmocka_unit_test(test_filter_smuggling),
        cmocka_unit_test(test_filter_smuggling_exact),
        cmocka_unit_test(test_filter_edges),
        cmocka_unit_test(test_filter_random),
        cmocka_unit_test(test_filter_long_runs),
        cmocka_unit_test(test_filter_random_lines),
        cmocka_unit_test(test_line_bare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
