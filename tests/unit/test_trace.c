/*
 * test_trace.c - proxy/trace.c: the Received: header for each leg's TLS
 * state, peer text made safe for a comment, and what does not fit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "trace.h"

static struct sockaddr_storage v4, v6, none;

static int setup(void **state)
{
    struct sockaddr_in *a = (struct sockaddr_in *)&v4;
    struct sockaddr_in6 *b = (struct sockaddr_in6 *)&v6;

    (void)state;
    a->sin_family = AF_INET;
    inet_pton(AF_INET, "192.0.2.10", &a->sin_addr);
    b->sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8::10", &b->sin6_addr);
    none.ss_family = AF_UNSPEC;
    return 0;
}

/* a plaintext session from HELO, the backend plain too */
static struct trace_facts plain(void)
{
    struct trace_facts f = {
        .helo = "printer.example",
        .client = &v4,
        .esmtp = false,
        .by = "proxy.example",
        .id = 0x0001000000000abcull,
        .backend_host = "10.0.0.5",
        .backend_port = "25",
        .backend_policy = "may",
        .backend_verify = "",
        .when = 0,      /* 1970-01-01 00:00:00 UTC, a Thursday */
    };

    return f;
}

static void test_plaintext(void **state)
{
    struct trace_facts f = plain();
    char out[2048];
    size_t n;

    (void)state;
    n = trace_header(&f, out, sizeof out);
    assert_int_equal(n, strlen(out));
    assert_string_equal(out,
        "Received: from printer.example ([192.0.2.10])\r\n"
        "\t(no TLS)\r\n"
        "\tby proxy.example (starttls-proxy) with SMTP id 0001000000000abc\r\n"
        "\t(backend 10.0.0.5:25 policy may; no TLS);\r\n"
        "\tThu, 01 Jan 1970 00:00:00 +0000\r\n");
}

static void test_tls_both_legs(void **state)
{
    struct trace_facts f = plain();
    char out[2048];

    (void)state;
    f.client = &v6;
    f.esmtp = true;
    f.client_tls = "TLSv1.3/TLS_AES_256_GCM_SHA384";
    f.client_cert = "CN=scanner (floor 2)\\x";
    f.client_verify = "verified";
    f.backend_policy = "verify";
    f.backend_tls = "TLSv1.2/ECDHE-RSA-AES128-GCM-SHA256";
    f.backend_verify = "verified";
    f.when = 86400 * 365;
    assert_true(trace_header(&f, out, sizeof out) > 0);
    assert_string_equal(out,
        "Received: from printer.example ([IPv6:2001:db8::10])\r\n"
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384; client "
        "certificate CN=scanner ?floor 2??x, verified)\r\n"
        "\tby proxy.example (starttls-proxy) with ESMTPS id "
        "0001000000000abc\r\n"
        "\t(backend 10.0.0.5:25 policy verify using TLSv1.2 with cipher "
        "ECDHE-RSA-AES128-GCM-SHA256; certificate verified);\r\n"
        "\tFri, 01 Jan 1971 00:00:00 +0000\r\n");
}

/* TLS without a client certificate; a description without a cipher */
static void test_tls_no_cert(void **state)
{
    struct trace_facts f = plain();
    char out[2048];

    (void)state;
    f.client_tls = "TLSv1.3";
    f.backend_tls = "TLSv1.3/TLS_AES_128_GCM_SHA256";
    f.backend_verify = "unable to get local issuer certificate (x)";
    assert_true(trace_header(&f, out, sizeof out) > 0);
    assert_non_null(strstr(out, "\t(using TLSv1.3 with cipher ?; client "
                                "certificate none, none)\r\n"));
    assert_non_null(strstr(out, "with SMTPS id"));
    assert_non_null(strstr(out, "certificate unable to get local issuer "
                                "certificate ?x?);\r\n"));
}

/* the client's name is peer text: never a line end, parenthesis or 8-bit
 * byte inside the comment; none given is "unknown", as is an address of
 * no known family */
static void test_peer_text(void **state)
{
    struct trace_facts f = plain();
    char out[2048];

    (void)state;
    f.helo = "evil\r\nX-Injected: (yes)\\\x80";
    assert_true(trace_header(&f, out, sizeof out) > 0);
    assert_non_null(strstr(out, "Received: from evil??X-Injected: ?yes??? "
                                "([192.0.2.10])\r\n"));
    assert_null(strstr(out, "\r\nX-Injected"));
    f.helo = "";
    f.client = &none;
    assert_true(trace_header(&f, out, sizeof out) > 0);
    assert_non_null(strstr(out, "Received: from unknown (unknown)\r\n"));
}

/* a long name is cut at the comment buffer; the whole header must fit or
 * nothing is returned */
static void test_lengths(void **state)
{
    struct trace_facts f = plain();
    char name[400], out[2048], cut[200];
    size_t n;

    (void)state;
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    f.helo = name;
    n = trace_header(&f, out, sizeof out);
    assert_true(n > 0);
    memset(cut, 'a', 127);
    cut[127] = '\0';
    assert_non_null(strstr(out, cut));
    assert_null(strstr(out, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                            "aaaaaaaaaaaaaaaaa"));  /* 129 */
    assert_int_equal(trace_header(&f, out, n), 0);      /* no room for NUL */
    assert_int_equal(trace_header(&f, out, n + 1), n);
    assert_int_equal(trace_header(&f, out, 0), 0);
}

static void test_comment_text(void **state)
{
    char out[8];

    (void)state;
    trace_comment_text("a(b)c\\d", out, sizeof out);
    assert_string_equal(out, "a?b?c?d");
    trace_comment_text("abcdefghij", out, sizeof out);
    assert_string_equal(out, "abcdefg");
    trace_comment_text("\t\x7f ~", out, sizeof out);
    assert_string_equal(out, "?? ~");
    trace_comment_text("abc", out, 1);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plaintext),
        cmocka_unit_test(test_tls_both_legs),
        cmocka_unit_test(test_tls_no_cert),
        cmocka_unit_test(test_peer_text),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_comment_text),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
