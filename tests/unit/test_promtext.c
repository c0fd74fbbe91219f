/*
 * test_promtext.c - proxy/promtext.c: the metrics endpoint's request
 * reader (whole and byte by byte) and the text exposition writer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "promtext.h"

static const struct {
    const char *req;
    enum promtext_req want;
} cases[] = {
    { "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", PROMTEXT_METRICS },
    { "GET /metrics HTTP/1.0\r\n\r\n", PROMTEXT_METRICS },
    { "GET /metrics?name[]=x HTTP/1.1\r\n\r\n", PROMTEXT_METRICS },
    { "GET /healthz HTTP/1.1\n\n", PROMTEXT_HEALTHZ },
    { "GET /metricsx HTTP/1.1\r\n\r\n", PROMTEXT_NOT_FOUND },
    { "GET /metric HTTP/1.1\r\n\r\n", PROMTEXT_NOT_FOUND },
    { "GET / HTTP/1.1\r\n\r\n", PROMTEXT_NOT_FOUND },
    { "POST /metrics HTTP/1.1\r\n\r\n", PROMTEXT_BAD_METHOD },
    { "HEAD /metrics HTTP/1.1\r\n\r\n", PROMTEXT_BAD_METHOD },
    { "get /metrics HTTP/1.1\r\n\r\n", PROMTEXT_BAD_METHOD },
    { "GET /metrics HTTP/2.0\r\n\r\n", PROMTEXT_BAD_REQUEST },
    { "GET /metrics\r\n\r\n", PROMTEXT_BAD_REQUEST },
    { "GET  /metrics HTTP/1.1\r\n\r\n", PROMTEXT_BAD_REQUEST },
    { "GET metrics HTTP/1.1\r\n\r\n", PROMTEXT_BAD_REQUEST },
    { "GET /me\ttrics HTTP/1.1\r\n\r\n", PROMTEXT_BAD_REQUEST },
    { "\r\n\r\n", PROMTEXT_BAD_REQUEST },
    { "GET /metrics HTTP/1.1\r\nHost: x\r\n", PROMTEXT_INCOMPLETE },
    { "GET /metrics HTTP/1.1", PROMTEXT_INCOMPLETE },
    { "", PROMTEXT_INCOMPLETE },
};

/* every case whole, then every prefix: a prefix is INCOMPLETE unless a
 * broken request line is already known */
static void test_requests(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = strlen(cases[i].req);

        assert_int_equal(promtext_request(cases[i].req, n), cases[i].want);
        for (size_t k = 0; k < n; k++) {
            enum promtext_req r = promtext_request(cases[i].req, k);

            if (cases[i].want == PROMTEXT_BAD_REQUEST &&
                r == PROMTEXT_BAD_REQUEST)
                continue;
            assert_int_equal(r, PROMTEXT_INCOMPLETE);
        }
    }
}

static void test_too_large(void **state)
{
    char *big = malloc(PROMTEXT_REQUEST_MAX + 64);
    const char *line = "GET /metrics HTTP/1.1\r\nX: ";
    size_t n = strlen(line);

    (void)state;
    assert_non_null(big);
    memcpy(big, line, n);
    memset(big + n, 'a', PROMTEXT_REQUEST_MAX + 64 - n);
    assert_int_equal(promtext_request(big, PROMTEXT_REQUEST_MAX - 1),
                     PROMTEXT_INCOMPLETE);
    assert_int_equal(promtext_request(big, PROMTEXT_REQUEST_MAX),
                     PROMTEXT_TOO_LARGE);
    /* a request line that never ends */
    memset(big, 'G', PROMTEXT_REQUEST_MAX);
    assert_int_equal(promtext_request(big, PROMTEXT_REQUEST_MAX),
                     PROMTEXT_TOO_LARGE);
    /* the end of the head only after the cap */
    memcpy(big, line, n);
    memset(big + n, 'a', PROMTEXT_REQUEST_MAX + 60 - n);
    memcpy(big + PROMTEXT_REQUEST_MAX + 60, "\r\n\r\n", 4);
    assert_int_equal(promtext_request(big, PROMTEXT_REQUEST_MAX + 64),
                     PROMTEXT_TOO_LARGE);
    assert_int_equal(promtext_status(PROMTEXT_TOO_LARGE), 431);
    assert_int_equal(promtext_status(PROMTEXT_BAD_METHOD), 405);
    assert_int_equal(promtext_status(PROMTEXT_NOT_FOUND), 404);
    assert_int_equal(promtext_status(PROMTEXT_BAD_REQUEST), 400);
    free(big);
}

static void test_escape(void **state)
{
    struct promtext_buf b;
    const char *l[] = { "name", "a\\b\"c\nd", "svc", "x", NULL };

    (void)state;
    promtext_init(&b);
    promtext_sample(&b, "m_total", l, 3);
    promtext_sample(&b, "m_plain", NULL, 0.25);
    assert_false(b.failed);
    assert_string_equal(b.p, "m_total{name=\"a\\\\b\\\"c\\nd\",svc=\"x\"} 3\n"
                             "m_plain 0.25\n");
    promtext_free(&b);
}

static void test_family_and_histogram(void **state)
{
    struct promtext_buf b;
    const double bounds[] = { 0.1, 1 };
    const uint64_t counts[] = { 2, 0, 1 };
    const char *l[] = { "service", "smtp", NULL };

    (void)state;
    promtext_init(&b);
    promtext_family(&b, "h_seconds", "histogram", "a\\b\nc");
    promtext_histogram(&b, "h_seconds", l, bounds, 2, counts, 3.5);
    assert_string_equal(b.p,
        "# HELP h_seconds a\\\\b\\nc\n"
        "# TYPE h_seconds histogram\n"
        "h_seconds_bucket{service=\"smtp\",le=\"0.1\"} 2\n"
        "h_seconds_bucket{service=\"smtp\",le=\"1\"} 2\n"
        "h_seconds_bucket{service=\"smtp\",le=\"+Inf\"} 3\n"
        "h_seconds_sum{service=\"smtp\"} 3.5\n"
        "h_seconds_count{service=\"smtp\"} 3\n");
    promtext_free(&b);
}

static void test_head(void **state)
{
    char out[256];
    size_t n;

    (void)state;
    n = promtext_head(out, sizeof out, 405, "text/plain", 4);
    assert_true(n > 0);
    assert_string_equal(out, "HTTP/1.1 405 Method Not Allowed\r\n"
                             "Content-Type: text/plain\r\n"
                             "Content-Length: 4\r\nConnection: close\r\n"
                             "Allow: GET\r\n\r\n");
    assert_int_equal(promtext_head(out, 10, 200, "text/plain", 4), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_family_and_histogram),
        cmocka_unit_test(test_head),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
