/*
 * test_smtp.c - table-driven tests of the pure SMTP parsers (proxy/smtp.c).
 *
 * Every scanner case runs whole and trickled: the line and reply scanners
 * on a buffer grown one byte at a time (MORE until the byte that decides),
 * the end-of-data scanner fed one byte per call and split in two chunks at
 * every offset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "smtp.h"

/* a string literal with its length (it may hold NUL bytes) */
#define S(lit) lit, sizeof(lit) - 1

/* ---- smtp_line_find ----------------------------------------------------- */

struct line_case {
    const char *in;
    size_t len;
    size_t max;
    enum smtp_line_result res;
    size_t line_len;   /* SMTP_LINE_OK only */
    size_t total;      /* SMTP_LINE_OK only */
};

static const struct line_case line_cases[] = {
    { S("HELO x\r\n"), 512, SMTP_LINE_OK, 6, 8 },
    { S("HELO x\n"), 512, SMTP_LINE_OK, 6, 7 },             /* bare LF */
    { S("\r\n"), 512, SMTP_LINE_OK, 0, 2 },
    { S("\n"), 512, SMTP_LINE_OK, 0, 1 },
    { S("a\r\nb\r\n"), 512, SMTP_LINE_OK, 1, 3 },           /* first line */
    { S("a\rb\r\n"), 512, SMTP_LINE_OK, 3, 5 },             /* bare CR is text */
    { S("a\r\r\n"), 512, SMTP_LINE_OK, 2, 4 },
    { S("a\0b\r\n"), 512, SMTP_LINE_OK, 3, 5 },             /* NUL is text */
    { S("12345678\r\n"), 10, SMTP_LINE_OK, 8, 10 },         /* exactly max */
    { S("123456789\n"), 10, SMTP_LINE_OK, 9, 10 },          /* exactly max */
    { S("123456789\r\n"), 10, SMTP_LINE_TOO_LONG, 0, 0 },   /* max + 1 */
    { S("1234567890"), 10, SMTP_LINE_TOO_LONG, 0, 0 },
    { S("123456789\r"), 10, SMTP_LINE_TOO_LONG, 0, 0 },
    { S("a\n"), 1, SMTP_LINE_TOO_LONG, 0, 0 },
    { S("\n"), 1, SMTP_LINE_OK, 0, 1 },
    { S("HELO"), 512, SMTP_LINE_MORE, 0, 0 },
    { S("HELO\r"), 512, SMTP_LINE_MORE, 0, 0 },
    { S(""), 512, SMTP_LINE_MORE, 0, 0 },
};

/* line_decided_at - the first prefix length that gives the final result */
static size_t line_decided_at(const struct line_case *c)
{
    switch (c->res) {
    case SMTP_LINE_OK:
        return c->total;
    case SMTP_LINE_TOO_LONG:
        return c->max;
    default:
        return c->len + 1;   /* never */
    }
}

/* line_check - run smtp_line_find on in[0..n) and compare with c */
static void line_check(const struct line_case *c, size_t n,
                       enum smtp_line_result want)
{
    size_t line_len = 777, total = 777;
    enum smtp_line_result r = smtp_line_find(c->in, n, c->max, &line_len,
                                             &total);
    assert_int_equal(r, want);
    if (r == SMTP_LINE_OK) {
        assert_int_equal(line_len, c->line_len);
        assert_int_equal(total, c->total);
    } else {
        assert_int_equal(line_len, 777);   /* untouched */
        assert_int_equal(total, 777);
    }
}

static void test_line_find(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof line_cases / sizeof line_cases[0]; i++) {
        const struct line_case *c = &line_cases[i];
        size_t at = line_decided_at(c);
        print_message("line case %zu\n", i);
        line_check(c, c->len, c->res);                 /* whole */
        for (size_t n = 0; n <= c->len; n++)           /* grown */
            line_check(c, n, n < at ? SMTP_LINE_MORE : c->res);
    }
}

/* ---- smtp_cmd_parse ----------------------------------------------------- */

struct cmd_case {
    const char *in;
    size_t len;
    enum smtp_verb verb;
    const char *arg;   /* NULL: no argument */
    size_t arg_len;
};

/* an expected argument (may hold NUL bytes), or none */
#define A(lit) lit, sizeof(lit) - 1
#define NOARG NULL, 0

static const struct cmd_case cmd_cases[] = {
    { S("MAIL FROM:<a@b>"), SMTP_VERB_MAIL, A("FROM:<a@b>") },
    { S("mail from:<a@b>"), SMTP_VERB_MAIL, A("from:<a@b>") },
    { S("MaIl FROM:<> SIZE=10"), SMTP_VERB_MAIL, A("FROM:<> SIZE=10") },
    { S("MAIL   FROM:<a>   "), SMTP_VERB_MAIL, A("FROM:<a>") },
    { S("MAIL"), SMTP_VERB_MAIL, NOARG },
    { S("MAIL "), SMTP_VERB_MAIL, NOARG },
    { S("MAIL    "), SMTP_VERB_MAIL, NOARG },
    { S("MAILX FROM:<a>"), SMTP_VERB_UNKNOWN, A("FROM:<a>") },
    { S("MAI"), SMTP_VERB_UNKNOWN, NOARG },
    { S("MAIL\tFROM:<a>"), SMTP_VERB_UNKNOWN, NOARG },   /* only SP separates */
    { S(" MAIL FROM:<a>"), SMTP_VERB_UNKNOWN, A("MAIL FROM:<a>") },
    { S("RCPT TO:<b@c>"), SMTP_VERB_RCPT, A("TO:<b@c>") },
    { S("EHLO client.example"), SMTP_VERB_EHLO, A("client.example") },
    { S("ehlo"), SMTP_VERB_EHLO, NOARG },
    { S("HELO x"), SMTP_VERB_HELO, A("x") },
    { S("DATA"), SMTP_VERB_DATA, NOARG },
    { S("DATAX"), SMTP_VERB_UNKNOWN, NOARG },
    { S("BDAT 100 LAST"), SMTP_VERB_BDAT, A("100 LAST") },
    { S("RSET"), SMTP_VERB_RSET, NOARG },
    { S("NOOP hello "), SMTP_VERB_NOOP, A("hello") },
    { S("QUIT"), SMTP_VERB_QUIT, NOARG },
    { S("VRFY root"), SMTP_VERB_VRFY, A("root") },
    { S("EXPN list"), SMTP_VERB_EXPN, A("list") },
    { S("HELP"), SMTP_VERB_HELP, NOARG },
    { S("STARTTLS"), SMTP_VERB_STARTTLS, NOARG },
    { S("starttls"), SMTP_VERB_STARTTLS, NOARG },
    { S("STARTTLS "), SMTP_VERB_STARTTLS, NOARG },
    { S("STARTTLS x"), SMTP_VERB_STARTTLS, A("x") },
    { S("STARTTLSX"), SMTP_VERB_UNKNOWN, NOARG },
    { S("STARTTL"), SMTP_VERB_UNKNOWN, NOARG },
    { S("AUTH PLAIN AGFAAGI="), SMTP_VERB_AUTH, A("PLAIN AGFAAGI=") },
    { S("XCLIENT ADDR=1.2.3.4"), SMTP_VERB_XCLIENT, A("ADDR=1.2.3.4") },
    { S("xforward NAME=x"), SMTP_VERB_XFORWARD, A("NAME=x") },
    { S("ETRN example.com"), SMTP_VERB_ETRN, A("example.com") },
    { S("FOO bar"), SMTP_VERB_UNKNOWN, A("bar") },
    { S("MA\0L FROM:<a>"), SMTP_VERB_UNKNOWN, A("FROM:<a>") },
    { S("MAIL a\0b"), SMTP_VERB_MAIL, A("a\0b") },
    { S(""), SMTP_VERB_UNKNOWN, NOARG },
    { S(" "), SMTP_VERB_UNKNOWN, NOARG },
};

static void test_cmd_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cmd_cases / sizeof cmd_cases[0]; i++) {
        const struct cmd_case *c = &cmd_cases[i];
        struct smtp_cmd cmd;
        print_message("cmd case %zu\n", i);
        smtp_cmd_parse(c->in, c->len, &cmd);
        assert_int_equal(cmd.verb, c->verb);
        if (c->arg == NULL) {
            assert_null(cmd.arg);
            assert_int_equal(cmd.arg_len, 0);
        } else {
            assert_non_null(cmd.arg);
            assert_true(cmd.arg > c->in);   /* points into the line */
            assert_true(cmd.arg + cmd.arg_len <= c->in + c->len);
            assert_int_equal(cmd.arg_len, c->arg_len);
            assert_memory_equal(cmd.arg, c->arg, c->arg_len);
        }
    }
}

/* a line that is not NUL-terminated is read only up to len */
static void test_cmd_parse_bounds(void **state)
{
    (void)state;
    struct smtp_cmd cmd;
    const char line[] = "MAIL FROM:<a>";

    smtp_cmd_parse(line, 4, &cmd);
    assert_int_equal(cmd.verb, SMTP_VERB_MAIL);
    assert_null(cmd.arg);
    smtp_cmd_parse(line, 5, &cmd);
    assert_int_equal(cmd.verb, SMTP_VERB_MAIL);
    assert_null(cmd.arg);
    smtp_cmd_parse(line, 6, &cmd);
    assert_ptr_equal(cmd.arg, line + 5);
    assert_int_equal(cmd.arg_len, 1);
    smtp_cmd_parse(line, 3, &cmd);
    assert_int_equal(cmd.verb, SMTP_VERB_UNKNOWN);
    smtp_cmd_parse(NULL, 0, &cmd);
    assert_int_equal(cmd.verb, SMTP_VERB_UNKNOWN);
    assert_null(cmd.arg);
}

static void test_verb_name(void **state)
{
    (void)state;
    for (int v = SMTP_VERB_UNKNOWN + 1; v < SMTP_VERB_COUNT; v++) {
        const char *name = smtp_verb_name((enum smtp_verb)v);
        struct smtp_cmd cmd;
        assert_non_null(name);
        smtp_cmd_parse(name, strlen(name), &cmd);
        assert_int_equal(cmd.verb, v);
    }
    assert_string_equal(smtp_verb_name(SMTP_VERB_UNKNOWN), "UNKNOWN");
    assert_string_equal(smtp_verb_name(SMTP_VERB_COUNT), "UNKNOWN");
    assert_string_equal(smtp_verb_name((enum smtp_verb)-1), "UNKNOWN");
    assert_string_equal(smtp_verb_name(SMTP_VERB_STARTTLS), "STARTTLS");
}

/* ---- smtp_bdat_parse ---------------------------------------------------- */

struct bdat_case {
    const char *in;
    size_t len;
    int ret;
    uint64_t size;
    bool last;
};

static const struct bdat_case bdat_cases[] = {
    { S("0"), 0, 0, false },
    { S("100"), 0, 100, false },
    { S("100 LAST"), 0, 100, true },
    { S("100 last"), 0, 100, true },
    { S("100 LaSt"), 0, 100, true },
    { S("0 LAST"), 0, 0, true },
    { S("100   LAST"), 0, 100, true },
    { S("007"), 0, 7, false },
    { S("999999999999999999"), 0, 999999999999999999ull, false }, /* 18 */
    { S("000000000000000001 LAST"), 0, 1, true },                 /* 18 */
    { S("1000000000000000000"), -1, 0, false },                   /* 19 */
    { S("0000000000000000001"), -1, 0, false },                   /* 19 */
    { S("99999999999999999999999999"), -1, 0, false },
    { S("18446744073709551617"), -1, 0, false },
    { S("-1"), -1, 0, false },
    { S("+1"), -1, 0, false },
    { S(" 1"), -1, 0, false },
    { S("1 "), -1, 0, false },
    { S("1x"), -1, 0, false },
    { S("0x10"), -1, 0, false },
    { S("1.5"), -1, 0, false },
    { S("1LAST"), -1, 0, false },
    { S("1 LAS"), -1, 0, false },
    { S("1 LASTX"), -1, 0, false },
    { S("1 LAST "), -1, 0, false },
    { S("1 LAST x"), -1, 0, false },
    { S("1 FIRST"), -1, 0, false },
    { S("1\tLAST"), -1, 0, false },
    { S("1 2"), -1, 0, false },
    { S("LAST"), -1, 0, false },
    { S("LAST 1"), -1, 0, false },
    { S("1\0"), -1, 0, false },
    { S(""), -1, 0, false },
};

static void test_bdat_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bdat_cases / sizeof bdat_cases[0]; i++) {
        const struct bdat_case *c = &bdat_cases[i];
        uint64_t size = 4242;
        bool last = true;
        print_message("bdat case %zu\n", i);
        int ret = smtp_bdat_parse(c->in, c->len, &size, &last);
        assert_int_equal(ret, c->ret);
        if (ret == 0) {
            assert_true(size == c->size);
            assert_int_equal(last, c->last);
        } else {
            assert_true(size == 4242);   /* untouched */
            assert_true(last);
        }
    }
    uint64_t size = 1;
    bool last = false;
    assert_int_equal(smtp_bdat_parse(NULL, 0, &size, &last), -1);
    /* len bounds the argument: "12" of "123" */
    assert_int_equal(smtp_bdat_parse("123", 2, &size, &last), 0);
    assert_true(size == 12);
}

/* ---- smtp_reply_scan ---------------------------------------------------- */

struct reply_case {
    const char *in;
    size_t len;
    size_t max_line;
    unsigned max_lines;
    enum smtp_reply_result res;
    size_t at;         /* first prefix length that gives res */
    int code;          /* SMTP_REPLY_OK only */
    size_t rlen;       /* SMTP_REPLY_OK only */
    unsigned nlines;   /* SMTP_REPLY_OK only */
};

#define OK_(lit, code, n) \
    { S(lit), 512, 100, SMTP_REPLY_OK, sizeof(lit) - 1, code, \
      sizeof(lit) - 1, n }
#define BAD_(lit, at) \
    { S(lit), 512, 100, SMTP_REPLY_BAD, at, 0, 0, 0 }

static const struct reply_case reply_cases[] = {
    OK_("250 ok\r\n", 250, 1),
    OK_("220 mx.example.com ESMTP\r\n", 220, 1),
    OK_("250\r\n", 250, 1),
    OK_("250 \r\n", 250, 1),
    OK_("354 go ahead\r\n", 354, 1),
    OK_("554 5.7.1 no\r\n", 554, 1),
    OK_("150 one is accepted\r\n", 150, 1),
    OK_("250-a\r\n250-b\r\n250 c\r\n", 250, 3),
    OK_("250-a\n250 b\n", 250, 2),                 /* bare LF tolerated */
    OK_("250-a\r\n250 b\n", 250, 2),
    OK_("250-\r\n250 x\r\n", 250, 2),
    OK_("250-a\r\n250\r\n", 250, 2),
    OK_("250 a\rb\r\n", 250, 1),                   /* bare CR is text */
    OK_("250 a\0b\r\n", 250, 1),
    OK_("250 a\r\r\n", 250, 1),
    OK_("599 x\r\n", 599, 1),
    /* trailing bytes belong to the next reply */
    { S("250 ok\r\n250 next"), 512, 100, SMTP_REPLY_OK, 8, 250, 8, 1 },
    { S("250 ok\r\ngarbage"), 512, 100, SMTP_REPLY_OK, 8, 250, 8, 1 },
    /* exactly max_line (10 with CRLF), and one over */
    { S("250 12345\r\n"), 11, 100, SMTP_REPLY_OK, 11, 250, 11, 1 },
    { S("250-1\r\n250 12345\r\n"), 11, 100, SMTP_REPLY_OK, 18, 250, 18, 2 },
    { S("250 123456\r\n"), 11, 100, SMTP_REPLY_BAD, 11, 0, 0, 0 },
    { S("250-1\r\n250 123456\r\n"), 11, 100, SMTP_REPLY_BAD, 18, 0, 0, 0 },
    /* exactly max_lines, and one over */
    { S("250-a\r\n250 b\r\n"), 512, 2, SMTP_REPLY_OK, 14, 250, 14, 2 },
    { S("250-a\r\n250-b\r\n250 c\r\n"), 512, 2, SMTP_REPLY_BAD, 14, 0, 0, 0 },
    { S("250-a\r\n"), 512, 1, SMTP_REPLY_BAD, 7, 0, 0, 0 },
    { S("250 a\r\n"), 512, 1, SMTP_REPLY_OK, 7, 250, 7, 1 },
    /* garbage: refused as soon as the bad byte is seen */
    BAD_("250-a\r\n251 b\r\n", 10),               /* mixed codes */
    BAD_("250-a\r\n550 b\r\n", 8),
    BAD_("25x ok\r\n", 3),                         /* non-digit */
    BAD_("2x0 ok\r\n", 2),
    BAD_("abc\r\n", 1),
    BAD_("650 x\r\n", 1),
    BAD_("050 x\r\n", 1),
    BAD_("250x\r\n", 4),
    BAD_("250\t\r\n", 4),
    BAD_("25\r\n", 3),
    BAD_("2\n", 2),
    BAD_("\r\n", 1),
    BAD_("\n", 1),
    BAD_(" 250 x\r\n", 1),
    BAD_("2\0" "0 x\r\n", 2),
    BAD_("250\rX\n", 5),
    BAD_("250\r\r\n", 5),
    BAD_("250-a\r\nxyz\r\n", 8),
    BAD_("250-a\r\n\r\n", 8),
};

/* reply_check - run smtp_reply_scan on in[0..n) and compare with c */
static void reply_check(const struct reply_case *c, size_t n,
                        enum smtp_reply_result want)
{
    struct smtp_reply r = { .code = -7, .len = 777, .nlines = 77 };
    enum smtp_reply_result res = smtp_reply_scan(c->in, n, c->max_line,
                                                 c->max_lines, &r);
    assert_int_equal(res, want);
    if (res == SMTP_REPLY_OK) {
        assert_int_equal(r.code, c->code);
        assert_int_equal(r.len, c->rlen);
        assert_int_equal(r.nlines, c->nlines);
    } else {
        assert_int_equal(r.code, -7);   /* untouched */
        assert_int_equal(r.len, 777);
        assert_int_equal(r.nlines, 77);
    }
}

static void test_reply_scan(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof reply_cases / sizeof reply_cases[0]; i++) {
        const struct reply_case *c = &reply_cases[i];
        print_message("reply case %zu\n", i);
        reply_check(c, c->len, c->res);                /* whole */
        for (size_t n = 0; n <= c->len; n++)           /* grown */
            reply_check(c, n, n < c->at ? SMTP_REPLY_MORE : c->res);
    }
}

static void test_reply_scan_more(void **state)
{
    (void)state;
    static const struct reply_case more[] = {
        { S("250-a\r\n250 b"), 512, 100, SMTP_REPLY_MORE, 0, 0, 0, 0 },
        { S("250-a\r\n250-b\r\n"), 512, 100, SMTP_REPLY_MORE, 0, 0, 0, 0 },
        { S("250 b\r"), 512, 100, SMTP_REPLY_MORE, 0, 0, 0, 0 },
        { S("250\r"), 512, 100, SMTP_REPLY_MORE, 0, 0, 0, 0 },
        { S("2"), 512, 100, SMTP_REPLY_MORE, 0, 0, 0, 0 },
        { S(""), 512, 100, SMTP_REPLY_MORE, 0, 0, 0, 0 },
    };
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
        for (size_t n = 0; n <= more[i].len; n++)
            reply_check(&more[i], n, SMTP_REPLY_MORE);
}

/* ---- smtp_ehlo_auth_mech -------------------------------------------------- */

static const struct {
    const char *in;
    const char *mech;
    bool want;
} mech_cases[] = {
    { "250-h\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE\r\n", "PLAIN", true },
    { "250-h\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE\r\n", "LOGIN", true },
    { "250-h\r\n250 auth login  plain\r\n", "PLAIN", true },
    { "250-h\r\n250 AUTH=LOGIN\r\n", "LOGIN", true },      /* old form */
    { "250-h\r\n250 AUTH PLAINX CRAM-MD5\r\n", "PLAIN", false },
    { "250-h\r\n250 AUTH XPLAIN\r\n", "PLAIN", false },
    { "250-h\r\n250 AUTHX PLAIN\r\n", "PLAIN", false },
    { "250-h\r\n250 SIZE PLAIN\r\n", "PLAIN", false },
    { "250 AUTH PLAIN\r\n", "PLAIN", false },   /* the domain line */
    { "250-h\r\n250 AUTH\r\n", "PLAIN", false },
    { "550-h\r\n550 AUTH PLAIN\r\n", "PLAIN", false },
};

static void test_ehlo_auth_mech(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof mech_cases / sizeof mech_cases[0]; i++)
        if (smtp_ehlo_auth_mech(mech_cases[i].in, strlen(mech_cases[i].in),
                                mech_cases[i].mech) != mech_cases[i].want)
            fail_msg("case %zu: %s", i, mech_cases[i].in);
}

/* ---- smtp_ehlo_caps ----------------------------------------------------- */

struct caps_case {
    const char *in;
    size_t len;
    unsigned caps;
};

static const struct caps_case caps_cases[] = {
    { S("250-mx.example.com\r\n250-PIPELINING\r\n250-STARTTLS\r\n"
        "250 AUTH PLAIN LOGIN\r\n"),
      SMTP_CAP_PIPELINING | SMTP_CAP_STARTTLS | SMTP_CAP_AUTH },
    { S("250-h\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
        "250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n"
        "250-XCLIENT NAME ADDR\r\n250 XFORWARD NAME ADDR\r\n"),
      SMTP_CAP_SIZE | SMTP_CAP_8BITMIME | SMTP_CAP_SMTPUTF8 | SMTP_CAP_DSN |
      SMTP_CAP_ENHANCEDSTATUSCODES | SMTP_CAP_CHUNKING | SMTP_CAP_XCLIENT |
      SMTP_CAP_XFORWARD },
    { S("250 STARTTLS\r\n"), 0 },                  /* first line: domain */
    { S("250-STARTTLS\r\n250 SIZE\r\n"), SMTP_CAP_SIZE },
    { S("250 mx.example.com\r\n"), 0 },
    { S("250-h\r\n250-starttls\r\n250 chunking\r\n"),
      SMTP_CAP_STARTTLS | SMTP_CAP_CHUNKING },
    { S("250-h\r\n250-AUTH=PLAIN LOGIN\r\n250 HELP\r\n"),
      SMTP_CAP_AUTH | SMTP_CAP_HELP },
    { S("250-h\r\n250 auth=login\r\n"), SMTP_CAP_AUTH },
    { S("250-h\r\n250 AUTHX\r\n"), 0 },
    { S("250-h\r\n250 XAUTH\r\n"), 0 },
    { S("250-h\r\n250-STARTTLSX\r\n250 XSTARTTLS\r\n"), 0 },
    { S("250-h\r\n250-STARTTLS=1\r\n250 STARTTL\r\n"), 0 },
    { S("250-h\r\n250 STARTTLS \r\n"), SMTP_CAP_STARTTLS },
    { S("250-h\r\n250 STARTTLS\tx\r\n"), SMTP_CAP_STARTTLS },
    { S("250-h\r\n250-SIZE=100\r\n250 DSNX\r\n"), 0 },
    { S("250-h\n250 DSN\n"), SMTP_CAP_DSN },       /* bare LF */
    { S("250-h\r\n250-\r\n250\r\n"), 0 },
    { S("550-h\r\n550 STARTTLS\r\n"), 0 },         /* not 2xx */
    { S("502 5.5.1 EHLO not implemented\r\n"), 0 },
    { S(""), 0 },
};

static void test_ehlo_caps(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof caps_cases / sizeof caps_cases[0]; i++) {
        print_message("caps case %zu\n", i);
        assert_int_equal(smtp_ehlo_caps(caps_cases[i].in, caps_cases[i].len),
                         caps_cases[i].caps);
    }
}

/* ---- smtp_ehlo_rewrite -------------------------------------------------- */

struct rewrite_case {
    const char *in;
    size_t len;
    bool offer;
    unsigned remove;
    const char *out;   /* NULL: -1 expected */
};

#define HIDE (SMTP_CAP_AUTH | SMTP_CAP_XCLIENT | SMTP_CAP_XFORWARD)

static const struct rewrite_case rewrite_cases[] = {
    /* inject STARTTLS */
    { S("250 mx.example.com\r\n"), true, 0,
      "250-mx.example.com\r\n250 STARTTLS\r\n" },
    { S("250-mx\r\n250 PIPELINING\r\n"), true, 0,
      "250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n" },
    { S("250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n"), true, HIDE,
      "250-mx\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 STARTTLS\r\n" },
    { S("250\r\n"), true, 0, "250-\r\n250 STARTTLS\r\n" },
    { S("250 \r\n"), true, 0, "250-\r\n250 STARTTLS\r\n" },
    /* keep an existing one, whatever its case; never a second one */
    { S("250-mx\r\n250-STARTTLS\r\n250 SIZE 10\r\n"), true, 0,
      "250-mx\r\n250-STARTTLS\r\n250 SIZE 10\r\n" },
    { S("250-mx\r\n250 starttls\r\n"), true, SMTP_CAP_STARTTLS,
      "250-mx\r\n250 starttls\r\n" },
    { S("250-mx\r\n250-STARTTLS\r\n250 STARTTLS\r\n"), true, 0,
      "250-mx\r\n250 STARTTLS\r\n" },
    /* a first line that says STARTTLS is the domain, not the keyword */
    { S("250 STARTTLS\r\n"), true, 0, "250-STARTTLS\r\n250 STARTTLS\r\n" },
    { S("250 STARTTLS\r\n"), false, SMTP_CAP_STARTTLS, "250 STARTTLS\r\n" },
    { S("250-STARTTLS\r\n250 SIZE\r\n"), false, SMTP_CAP_STARTTLS,
      "250-STARTTLS\r\n250 SIZE\r\n" },
    /* look-alikes are not STARTTLS (and, unknown, are removed) */
    { S("250-mx\r\n250 STARTTLSX\r\n"), true, SMTP_CAP_STARTTLS,
      "250-mx\r\n250 STARTTLS\r\n" },
    /* remove STARTTLS (client leg already TLS) */
    { S("250-mx\r\n250-STARTTLS\r\n250 SIZE\r\n"), false, SMTP_CAP_STARTTLS,
      "250-mx\r\n250 SIZE\r\n" },
    { S("250-mx\r\n250-SIZE\r\n250 STARTTLS\r\n"), false, SMTP_CAP_STARTTLS,
      "250-mx\r\n250 SIZE\r\n" },
    { S("250-mx\r\n250-SIZE\r\n250 STARTTLS\r\n"), false, 0,
      "250-mx\r\n250 SIZE\r\n" },
    /* remove AUTH (both forms), XCLIENT, XFORWARD; AUTHX (unknown) too */
    { S("250-mx\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=PLAIN LOGIN\r\n"
        "250-XCLIENT ADDR NAME\r\n250-XFORWARD NAME\r\n250-AUTHX\r\n"
        "250 8BITMIME\r\n"), false, HIDE,
      "250-mx\r\n250 8BITMIME\r\n" },
    /* an allowlist: what the proxy does not know is removed */
    { S("250-mx\r\n250-XEXCH50\r\n250-X-LINK2STATE\r\n250-BINARYMIME\r\n"
        "250-BURL imap\r\n250-REQUIRETLS\r\n250-SIZE 100\r\n250 X-FOO\r\n"),
      false, SMTP_CAP_REQUIRETLS, "250-mx\r\n250 SIZE 100\r\n" },
    { S("250-mx\r\n250-auth login\r\n250-SIZE\r\n250 xclient ADDR\r\n"),
      true, HIDE, "250-mx\r\n250-SIZE\r\n250 STARTTLS\r\n" },
    { S("250-mx\r\n250-AUTH LOGIN\r\n250 SIZE\r\n"), true, SMTP_CAP_AUTH,
      "250-mx\r\n250-SIZE\r\n250 STARTTLS\r\n" },
    { S("250-mx\r\n250-AUTH LOGIN\r\n250 SIZE\r\n"), false, 0,
      "250-mx\r\n250-AUTH LOGIN\r\n250 SIZE\r\n" },
    /* removing all but the first line gives "250 host" */
    { S("250-mx.example.com greets you\r\n250 STARTTLS\r\n"), false,
      SMTP_CAP_STARTTLS, "250 mx.example.com greets you\r\n" },
    { S("250-h\r\n250-STARTTLS\r\n250-XCLIENT A\r\n250 AUTH PLAIN\r\n"), false,
      SMTP_CAP_STARTTLS | HIDE, "250 h\r\n" },
    { S("250-\r\n250 AUTH PLAIN\r\n"), false, HIDE, "250 \r\n" },
    /* other bits */
    { S("250-h\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 DSN\r\n"), false,
      SMTP_CAP_PIPELINING | SMTP_CAP_CHUNKING, "250-h\r\n250 DSN\r\n" },
    /* bare LF in, CRLF out */
    { S("250-mx\n250-AUTH PLAIN\n250 SIZE\n"), false, HIDE,
      "250-mx\r\n250 SIZE\r\n" },
    { S("250 mx\n"), false, 0, "250 mx\r\n" },
    /* nothing to change */
    { S("250-mx\r\n250-PIPELINING\r\n250 SIZE\r\n"), false, HIDE,
      "250-mx\r\n250-PIPELINING\r\n250 SIZE\r\n" },
    /* not 250: copied unchanged, terminators included */
    { S("550 5.7.1 go away\r\n"), true, HIDE, "550 5.7.1 go away\r\n" },
    { S("502-x\n502 STARTTLS\n"), true, SMTP_CAP_STARTTLS,
      "502-x\n502 STARTTLS\n" },
    { S("251 odd\r\n"), true, 0, "251 odd\r\n" },
    /* not one well-formed reply */
    { S("250 mx"), true, 0, NULL },
    { S("250-mx\r\n"), true, 0, NULL },
    { S("250 mx\r\nextra"), true, 0, NULL },
    { S("250 mx\r\n250 mx\r\n"), true, 0, NULL },
    { S("garbage\r\n"), true, 0, NULL },
    { S("250-mx\r\n251 x\r\n"), true, 0, NULL },
    { S(""), true, 0, NULL },
};

static void test_ehlo_rewrite(void **state)
{
    (void)state;
    char out[512];

    for (size_t i = 0; i < sizeof rewrite_cases / sizeof rewrite_cases[0];
         i++) {
        const struct rewrite_case *c = &rewrite_cases[i];
        struct smtp_ehlo_rewrite opts = {
            .offer_starttls = c->offer, .keep = SMTP_CAP_ALL & ~c->remove };
        size_t out_len = 4242;
        print_message("rewrite case %zu\n", i);

        if (c->out == NULL) {
            memset(out, 'Z', sizeof out);
            assert_int_equal(smtp_ehlo_rewrite(c->in, c->len, &opts, out,
                                               sizeof out, &out_len), -1);
            assert_int_equal(out_len, 4242);
            for (size_t k = 0; k < sizeof out; k++)
                assert_int_equal(out[k], 'Z');
            continue;
        }

        size_t want = strlen(c->out);
        assert_true(want < sizeof out);
        /* room to spare, then exactly enough */
        const size_t caps_ok[] = { sizeof out, want };
        for (size_t k = 0; k < 2; k++) {
            memset(out, 'Z', sizeof out);
            out_len = 4242;
            assert_int_equal(smtp_ehlo_rewrite(c->in, c->len, &opts, out,
                                               caps_ok[k], &out_len), 0);
            assert_int_equal(out_len, want);
            assert_memory_equal(out, c->out, want);
            assert_int_equal(out[want], 'Z');   /* nothing more written */
        }
        /* too small by any amount: -1 and nothing written */
        for (size_t cap = 0; cap < want; cap++) {
            memset(out, 'Z', sizeof out);
            out_len = 4242;
            assert_int_equal(smtp_ehlo_rewrite(c->in, c->len, &opts, out, cap,
                                               &out_len), -1);
            assert_int_equal(out_len, 4242);
            for (size_t k = 0; k < sizeof out; k++)
                assert_int_equal(out[k], 'Z');
        }

        /* the output is itself one well-formed reply */
        struct smtp_reply r;
        assert_int_equal(smtp_reply_scan(c->out, want, 512, 100, &r),
                         SMTP_REPLY_OK);
        assert_int_equal(r.len, want);
        /* and says what was asked */
        unsigned caps = smtp_ehlo_caps(c->out, want);
        if (c->offer && r.code == 250)
            assert_true(caps & SMTP_CAP_STARTTLS);
        if (r.code == 250)
            assert_int_equal(caps & c->remove &
                             ~(c->offer ? SMTP_CAP_STARTTLS : 0u), 0);
    }
}

/* rewriting a reply in place of a larger buffer never reads past len */
static void test_ehlo_rewrite_bounds(void **state)
{
    (void)state;
    const char in[] = "250-mx\r\n250 AUTH PLAIN\r\n250 tail";
    struct smtp_ehlo_rewrite opts = { .offer_starttls = true,
                                      .keep = SMTP_CAP_ALL & ~SMTP_CAP_AUTH };
    char out[64];
    size_t out_len;

    assert_int_equal(smtp_ehlo_rewrite(in, 24, &opts, out, sizeof out,
                                       &out_len), 0);
    assert_int_equal(out_len, strlen("250-mx\r\n250 STARTTLS\r\n"));
    assert_memory_equal(out, "250-mx\r\n250 STARTTLS\r\n", out_len);
}

/* keywords kept by name (ehlo_pass), and the list of what was dropped */
static void test_ehlo_rewrite_extra_and_dropped(void **state)
{
    (void)state;
    static const char in[] =
        "250-mx\r\n250-XEXCH50\r\n250-x-link2state\r\n250-SIZE 10\r\n"
        "250-BINARYMIME\r\n250-AUTH=LOGIN\r\n250-XCLIENT ADDR\r\n"
        "250 DELIVERBY 60\r\n";
    static const char *const extra[] = { "X-LINK2STATE", "DELIVERBY" };
    struct smtp_ehlo_rewrite opts = {
        .keep = SMTP_CAP_SIZE, .extra = extra, .nextra = 2 };
    char out[256], dropped[64];
    size_t n;

    opts.dropped = dropped;
    opts.dropped_cap = sizeof dropped;
    assert_int_equal(smtp_ehlo_rewrite(in, sizeof in - 1, &opts, out,
                                       sizeof out, &n), 0);
    assert_int_equal(n, strlen("250-mx\r\n250-x-link2state\r\n"
                               "250-SIZE 10\r\n250 DELIVERBY 60\r\n"));
    assert_memory_equal(out, "250-mx\r\n250-x-link2state\r\n250-SIZE 10\r\n"
                        "250 DELIVERBY 60\r\n", n);
    assert_string_equal(dropped, "XEXCH50,BINARYMIME,AUTH,XCLIENT");

    /* a prefix of an extra is not that extra; the list is cut to fit */
    static const char in2[] = "250-mx\r\n250-DELIVER\r\n250 DELIVERBYX\r\n";
    opts.dropped_cap = 10;
    assert_int_equal(smtp_ehlo_rewrite(in2, sizeof in2 - 1, &opts, out,
                                       sizeof out, &n), 0);
    assert_int_equal(n, strlen("250 mx\r\n"));
    assert_string_equal(dropped, "DELIVER,D");

    /* nothing dropped: "" */
    static const char in3[] = "250-mx\r\n250 SIZE\r\n";
    opts.dropped_cap = sizeof dropped;
    assert_int_equal(smtp_ehlo_rewrite(in3, sizeof in3 - 1, &opts, out,
                                       sizeof out, &n), 0);
    assert_string_equal(dropped, "");
}

static void test_ehlo_keyword_valid(void **state)
{
    (void)state;
    assert_true(smtp_ehlo_keyword_valid("X-LINK2STATE", 12));
    assert_true(smtp_ehlo_keyword_valid("8BITMIME", 8));
    assert_true(smtp_ehlo_keyword_valid("a", 1));
    assert_false(smtp_ehlo_keyword_valid("", 0));
    assert_false(smtp_ehlo_keyword_valid("-X", 2));
    assert_false(smtp_ehlo_keyword_valid("X_Y", 3));
    assert_false(smtp_ehlo_keyword_valid("X Y", 3));
    assert_false(smtp_ehlo_keyword_valid("X=Y", 3));
    char long_kw[65];
    memset(long_kw, 'A', sizeof long_kw);
    assert_true(smtp_ehlo_keyword_valid(long_kw, 64));
    assert_false(smtp_ehlo_keyword_valid(long_kw, 65));
}

/* ---- smtp_data_scan ----------------------------------------------------- */

struct data_case {
    const char *in;
    size_t len;
    bool done;
    size_t used;   /* bytes that belong to the message */
};

#define END_(lit, used) { S(lit), true, used }
#define NOEND_(lit) { S(lit), false, sizeof(lit) - 1 }

static const struct data_case data_cases[] = {
    /* the DATA command's CRLF counts: ".\r\n" at once is an empty message */
    END_(".\r\n", 3),
    END_(".\r\nQUIT\r\n", 3),                       /* next command after */
    END_("\r\n.\r\n", 5),
    END_("Subject: x\r\n\r\nbody\r\n.\r\n", 23),
    END_("Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<a>\r\n", 23),
    END_("a\r\n.\r\n.\r\n", 6),                     /* stops at the first */
    END_("\r\r\n.\r\n", 6),
    END_("a\r\n.\r\r\n.\r\n", 10),
    END_("a\r\n.a\r\n.\r\n", 10),
    END_("..\r\n.\r\n", 7),
    END_(".a\r\n.\r\n", 7),
    /* smuggling: none of these ends the message */
    NOEND_("a\n.\n"),
    NOEND_("a\r.\r"),
    NOEND_("a\n.\r\n"),
    NOEND_("a\r\n.\n"),
    NOEND_("a\r.\r\n"),
    NOEND_("a\r\n.\r\r\n"),
    NOEND_("a\r\n.\r.\r\n"),
    NOEND_("a\r\n.\0\r\n"),
    NOEND_("a\r\n\0.\r\n"),
    NOEND_("a\r\0\n.\r\n"),
    NOEND_("a\r\n. \r\n"),
    NOEND_("a\n.\nMAIL FROM:<evil>\n"),
    NOEND_("a\r\n.\nRCPT TO:<x>\r\n"),
    NOEND_("a\n\r.\r\n"),
    NOEND_("\n.\n"),
    NOEND_("\n.\r\n"),
    NOEND_(".\n"),
    NOEND_(".\r"),
    NOEND_(".\rX\n"),
    NOEND_("."),
    NOEND_(""),
    /* dot-stuffed lines are content */
    NOEND_("..\r\n"),
    NOEND_("a\r\n..\r\n"),
    NOEND_("a\r\n...\r\n"),
    NOEND_("a\r\n.."),
    /* a smuggling attempt followed by the real end */
    END_("a\n.\nMAIL FROM:<x>\r\n.\r\n", 22),
    END_("a\r\n.\nb\r\n.\r\n", 11),
    /* bytes after the end, including more terminators */
    END_(".\r\n.\r\n", 3),
    END_("x\r\n.\r\nRSET\r\n\r\n.\r\n", 6),
};

/* data_feed - scan in[from..to) and update *used / *done */
static void data_feed(struct smtp_data_scanner *s, const char *in,
                      size_t from, size_t to, size_t *used, bool *done)
{
    bool d = !*done;   /* must be written */
    size_t n = smtp_data_scan(s, in + from, to - from, &d);
    assert_true(n <= to - from);
    if (!d)
        assert_int_equal(n, to - from);
    *used += n;
    *done = d;
}

static void test_data_scan(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof data_cases / sizeof data_cases[0]; i++) {
        const struct data_case *c = &data_cases[i];
        struct smtp_data_scanner s;
        size_t used;
        bool done;
        print_message("data case %zu\n", i);

        /* (a) whole */
        smtp_data_scanner_init(&s);
        used = 0;
        done = false;
        data_feed(&s, c->in, 0, c->len, &used, &done);
        assert_int_equal(done, c->done);
        assert_int_equal(used, c->used);

        /* (b) one byte per call */
        smtp_data_scanner_init(&s);
        used = 0;
        done = false;
        for (size_t k = 0; k < c->len && !done; k++)
            data_feed(&s, c->in, k, k + 1, &used, &done);
        assert_int_equal(done, c->done);
        assert_int_equal(used, c->used);

        /* (c) two chunks, split at every offset */
        for (size_t k = 0; k <= c->len; k++) {
            smtp_data_scanner_init(&s);
            used = 0;
            done = false;
            data_feed(&s, c->in, 0, k, &used, &done);
            if (!done)
                data_feed(&s, c->in, k, c->len, &used, &done);
            assert_int_equal(done, c->done);
            assert_int_equal(used, c->used);
        }
    }
}

/* after the end, the scanner takes nothing more until re-initialised */
static void test_data_scan_after_end(void **state)
{
    (void)state;
    struct smtp_data_scanner s;
    bool done = false;

    smtp_data_scanner_init(&s);
    assert_int_equal(smtp_data_scan(&s, S("x\r\n.\r\nQUIT"), &done), 6);
    assert_true(done);
    done = false;
    assert_int_equal(smtp_data_scan(&s, S("more"), &done), 0);
    assert_true(done);
    done = false;
    assert_int_equal(smtp_data_scan(&s, NULL, 0, &done), 0);
    assert_true(done);

    smtp_data_scanner_init(&s);
    assert_int_equal(smtp_data_scan(&s, NULL, 0, &done), 0);
    assert_false(done);
    assert_int_equal(smtp_data_scan(&s, S(".\r\n"), &done), 3);
    assert_true(done);
}

/*
 * data_reference - the end as a plain search: the first "\r\n.\r\n" in
 * "\r\n" + in.  Returns the bytes of in up to its end, or len + 1.
 */
static size_t data_reference(const char *in, size_t len)
{
    static const char pat[] = "\r\n.\r\n";
    char buf[2 + 64];

    assert_true(len <= 64);
    memcpy(buf, "\r\n", 2);
    memcpy(buf + 2, in, len);
    const char *p = memmem(buf, len + 2, pat, 5);
    return p == NULL ? len + 1 : (size_t)(p - buf) + 5 - 2;
}

/* random inputs over the interesting bytes agree with the plain search */
static void test_data_scan_random(void **state)
{
    (void)state;
    static const char alphabet[] = { '\r', '\n', '.', 'a', '\0' };
    uint32_t seed = 12345;
    char in[64];

    for (int round = 0; round < 20000; round++) {
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % sizeof in;
        for (size_t k = 0; k < len; k++) {
            seed = seed * 1103515245u + 12345u;
            in[k] = alphabet[(seed >> 16) % sizeof alphabet];
        }
        size_t want = data_reference(in, len);
        seed = seed * 1103515245u + 12345u;
        size_t split = len == 0 ? 0 : (seed >> 16) % (len + 1);

        struct smtp_data_scanner s;
        size_t used = 0;
        bool done = false;
        smtp_data_scanner_init(&s);
        data_feed(&s, in, 0, split, &used, &done);
        if (!done)
            data_feed(&s, in, split, len, &used, &done);
        if (want > len) {
            assert_false(done);
            assert_int_equal(used, len);
        } else {
            assert_true(done);
            assert_int_equal(used, want);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_find),
        cmocka_unit_test(test_cmd_parse),
        cmocka_unit_test(test_cmd_parse_bounds),
        cmocka_unit_test(test_verb_name),
        cmocka_unit_test(test_bdat_parse),
        cmocka_unit_test(test_reply_scan),
        cmocka_unit_test(test_reply_scan_more),
        cmocka_unit_test(test_ehlo_caps),
        cmocka_unit_test(test_ehlo_rewrite),
        cmocka_unit_test(test_ehlo_rewrite_bounds),
        cmocka_unit_test(test_ehlo_rewrite_extra_and_dropped),
        cmocka_unit_test(test_ehlo_keyword_valid),
        cmocka_unit_test(test_ehlo_auth_mech),
        cmocka_unit_test(test_data_scan),
        cmocka_unit_test(test_data_scan_after_end),
        cmocka_unit_test(test_data_scan_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
