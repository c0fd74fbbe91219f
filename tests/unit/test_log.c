/*
 * test_log.c - log_escape (proxy/log.c): peer text in a log line can
 * never end the line, forge a key=value pair or overrun its buffer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"

#define S(lit) lit, sizeof(lit) - 1

struct esc_case {
    const char *in;
    size_t len;
    const char *out;
};

static const struct esc_case esc_cases[] = {
    { S("EHLO x.example"), "EHLO\\x20x.example" },
    { S("a\r\nb"), "a\\x0d\\x0ab" },                 /* never a line end */
    { S("k=v"), "k\\x3dv" },                         /* never a new key */
    { S("\"quoted\""), "\\x22quoted\\x22" },          /* never ends a quote */
    { S("back\\slash"), "back\\x5cslash" },
    { S("\x00nul"), "\\x00nul" },
    { S("\x7f\x80\xff"), "\\x7f\\x80\\xff" },          /* 8-bit bytes */
    { S("\t"), "\\x09" },
    { S("!~"), "!~" },                               /* printable ends */
    { S(""), "" },
};

static void test_escape_forms(void **state)
{
    char out[256];

    (void)state;
    for (size_t i = 0; i < sizeof esc_cases / sizeof esc_cases[0]; i++) {
        print_message("case %zu\n", i);
        assert_ptr_equal(log_escape(out, sizeof out, esc_cases[i].in,
                                    esc_cases[i].len), out);
        assert_string_equal(out, esc_cases[i].out);
    }
}

/* at every cap the result is a terminated string within the cap, whole
 * when it fits, else cut and marked with "..." */
static void test_escape_caps(void **state)
{
    static const char in[] = "abc\r\ndef=ghi\"jkl";
    char full[128], out[130];

    (void)state;
    log_escape(full, sizeof full, in, sizeof in - 1);
    for (size_t cap = 1; cap <= sizeof out; cap++) {
        size_t n;

        memset(out, 'Z', sizeof out);
        log_escape(out, cap, in, sizeof in - 1);
        n = strlen(out);
        print_message("cap %zu: %s\n", cap, out);
        assert_true(n < cap);
        if (cap < sizeof out)
            assert_int_equal(out[cap], 'Z');        /* nothing past cap */
        if (cap > strlen(full)) {
            assert_string_equal(out, full);
        } else {
            if (cap >= 4)
                assert_true(n >= 3 && strcmp(out + n - 3, "...") == 0);
            /* what stands before the mark is the start of the whole,
             * never half an escape */
            assert_memory_equal(out, full, n >= 3 ? n - 3 : n);
            if (n > 3)
                assert_true(out[n - 4] != '\\' && out[n - 4] != 'x');
        }
    }
}

static void test_escape_tiny_caps(void **state)
{
    char out[8] = "keep";

    (void)state;
    log_escape(out, 0, S("abc"));                    /* nothing written */
    assert_string_equal(out, "keep");
    log_escape(out, 1, S("abc"));
    assert_string_equal(out, "");
    log_escape(out, 4, S("abcdef"));
    assert_string_equal(out, "...");
    log_escape(out, 4, S("ab"));
    assert_string_equal(out, "ab");
    log_escape(out, 5, S("\r"));                      /* \x0d + NUL */
    assert_string_equal(out, "\\x0d");
    log_escape(out, 4, S("\r"));                      /* no room for it */
    assert_string_equal(out, "...");
}

/* a session's tagged logger: the tag follows the session id, level and
 * stream are the base's (a reload that changes the base's level counts) */
static void test_tagged(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    struct logger base = { .level = LOG_INFO, .out = m };
    struct logger lg = log_tagged(&base, "orig_dst=203.0.113.25:25");
    struct logger plain = log_tagged(&base, "");

    (void)state;
    assert_non_null(m);
    log_event(&lg, LOG_INFO, 0x2a, "event=connect client=%s", "192.0.2.1:4");
    log_event(&lg, LOG_DEBUG, 0x2a, "event=hidden");
    base.level = LOG_DEBUG;
    log_event(&lg, LOG_DEBUG, 0x2a, "event=shown");
    log_event(&plain, LOG_INFO, 0x2a, "event=untagged");
    fflush(m);
    assert_non_null(strstr(buf, " info session=000000000000002a "
                                "orig_dst=203.0.113.25:25 event=connect "
                                "client=192.0.2.1:4\n"));
    assert_null(strstr(buf, "event=hidden"));
    assert_non_null(strstr(buf, " debug session=000000000000002a "
                                "orig_dst=203.0.113.25:25 event=shown\n"));
    assert_non_null(strstr(buf, " info session=000000000000002a "
                                "event=untagged\n"));
    fclose(m);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_forms),
        cmocka_unit_test(test_escape_caps),
        cmocka_unit_test(test_escape_tiny_caps),
        cmocka_unit_test(test_tagged),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
