/*
 * test_stats.c - proxy/stats.c: per-worker counters summed at scrape,
 * histogram buckets, counters by service slot across a reload, the
 * fixed label tables.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "stats.h"

static struct service svcs[2] = { { .name = "smtp" }, { .name = "sub\"mit" } };
static struct config cfg = { .services = svcs, .nservices = 2 };

static bool has_line(const struct promtext_buf *b, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = b->p; (p = strstr(p, line)) != NULL; p++)
        if ((p == b->p || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

static void test_summed_over_workers(void **state)
{
    struct stats w0, w1;
    const struct stats *all[] = { &w0, &w1 };
    struct promtext_buf b;

    (void)state;
    assert_int_equal(stats_init(&w0, 2), 0);
    assert_int_equal(stats_init(&w1, 2), 0);
    stats_add(&stats_of(&w0, 0)->sessions[STATS_TLS_TLS][STATS_TLS_VERIFIED],
              1);
    stats_add(&stats_of(&w1, 0)->sessions[STATS_TLS_TLS][STATS_TLS_VERIFIED],
              2);
    stats_add(&stats_of(&w1, 1)->messages[STATS_MSG_VANISHED], 1);
    stats_add(&stats_of(&w0, 0)->started, 3);
    stats_add(&stats_of(&w1, 0)->ended, 1);
    stats_add(&stats_of(&w0, 1)->policy[STATS_RULE_BARE_NEWLINE][0], 1);
    assert_null(stats_of(&w0, 2));
    promtext_init(&b);
    stats_render(&b, all, 2, &cfg, NULL);
    assert_false(b.failed);
    assert_true(has_line(&b, "starttls_proxy_sessions_total{service=\"smtp\","
                             "client_tls=\"tls\",backend_tls=\"verified\"} 3"));
    assert_true(has_line(&b, "starttls_proxy_sessions_active"
                             "{service=\"smtp\"} 2"));
    assert_true(has_line(&b, "starttls_proxy_messages_total"
                             "{service=\"sub\\\"mit\",result=\"client_vanished\"} 1"));
    assert_true(has_line(&b, "starttls_proxy_policy_refusals_total"
                             "{service=\"sub\\\"mit\",rule=\"bare_newline\","
                             "enforced=\"no\"} 1"));
    assert_true(has_line(&b, "# TYPE starttls_proxy_session_seconds "
                             "histogram"));
    promtext_free(&b);
    stats_free(&w0);
    stats_free(&w1);
}

static void test_histogram_buckets(void **state)
{
    struct stats w;
    const struct stats *all[] = { &w };
    struct promtext_buf b;

    (void)state;
    assert_int_equal(stats_init(&w, 1), 0);
    cfg.nservices = 1;
    stats_observe(stats_of(&w, 0), STATS_H_SESSION, 5000);     /* = 0.005 */
    stats_observe(stats_of(&w, 0), STATS_H_SESSION, 5001);
    stats_observe(stats_of(&w, 0), STATS_H_SESSION, 3600000000ull);
    stats_observe(NULL, STATS_H_SESSION, 1);                   /* ignored */
    promtext_init(&b);
    stats_render(&b, all, 1, &cfg, NULL);
    assert_true(has_line(&b, "starttls_proxy_session_seconds_bucket"
                             "{service=\"smtp\",le=\"0.005\"} 1"));
    assert_true(has_line(&b, "starttls_proxy_session_seconds_bucket"
                             "{service=\"smtp\",le=\"0.01\"} 2"));
    assert_true(has_line(&b, "starttls_proxy_session_seconds_bucket"
                             "{service=\"smtp\",le=\"60\"} 2"));
    assert_true(has_line(&b, "starttls_proxy_session_seconds_bucket"
                             "{service=\"smtp\",le=\"+Inf\"} 3"));
    assert_true(has_line(&b, "starttls_proxy_session_seconds_count"
                             "{service=\"smtp\"} 3"));
    assert_true(has_line(&b, "starttls_proxy_session_seconds_sum"
                             "{service=\"smtp\"} 3600.010001"));
    promtext_free(&b);
    stats_free(&w);
    cfg.nservices = 2;
}

/* a reload that removes "smtp", keeps "sub\"mit" (now first) and adds
 * "new": slots 1 and 2, grown in place, the old ones kept */
static void test_slots_follow_a_reload(void **state)
{
    struct stats w;
    const struct stats *all[] = { &w };
    struct service after[2] = { { .name = "sub\"mit" }, { .name = "new" } };
    struct config cfg2 = { .services = after, .nservices = 2 };
    const size_t slots[2] = { 1, 2 };
    struct stats_service *kept;
    struct promtext_buf b;

    (void)state;
    assert_int_equal(stats_init(&w, 2), 0);
    kept = stats_of(&w, 1);
    stats_add(&kept->messages[STATS_MSG_ACCEPTED], 4);
    stats_add(&stats_of(&w, 0)->messages[STATS_MSG_ACCEPTED], 9);
    assert_null(stats_of(&w, 2));
    assert_int_equal(stats_reserve(&w, 2 + STATS_CHUNK), 0);
    assert_ptr_equal(stats_of(&w, 1), kept);        /* did not move */
    assert_non_null(stats_of(&w, 2 + STATS_CHUNK - 1));
    assert_null(stats_of(&w, 2 + STATS_CHUNK));
    stats_add(&stats_of(&w, 2)->messages[STATS_MSG_ACCEPTED], 1);
    stats_add(&kept->messages[STATS_MSG_ACCEPTED], 1);   /* an old session */
    assert_int_equal(stats_reserve(&w, 1), 0);       /* never shrinks */
    assert_non_null(stats_of(&w, 2));
    assert_int_equal(stats_reserve(&w, (size_t)STATS_CHUNK * STATS_MAX_CHUNKS
                                       + 1), -1);
    promtext_init(&b);
    stats_render(&b, all, 1, &cfg2, slots);
    assert_false(b.failed);
    assert_true(has_line(&b, "starttls_proxy_messages_total"
                             "{service=\"sub\\\"mit\",result=\"accepted\"} 5"));
    assert_true(has_line(&b, "starttls_proxy_messages_total"
                             "{service=\"new\",result=\"accepted\"} 1"));
    assert_null(strstr(b.p, "service=\"smtp\""));  /* removed: not shown */
    promtext_free(&b);
    stats_free(&w);
}

static void test_tables(void **state)
{
    (void)state;
    assert_int_equal(stats_rule("dane"), STATS_RULE_DANE);
    assert_int_equal(stats_rule("max_connections_per_ip"),
                     STATS_RULE_MAX_CONNECTIONS_PER_IP);
    assert_int_equal(stats_rule("sources"), STATS_RULE_SOURCES);
    assert_int_equal(stats_rule("backend_auth"), STATS_RULE_BACKEND_AUTH);
    assert_int_equal(stats_rule("anything else"), STATS_RULE_OTHER);
    assert_int_equal(stats_rule("other"), STATS_RULE_OTHER);
    assert_int_equal(stats_tls_of(false, "verified"), STATS_TLS_PLAINTEXT);
    assert_int_equal(stats_tls_of(true, "verified"), STATS_TLS_VERIFIED);
    assert_int_equal(stats_tls_of(true, "dane"), STATS_TLS_DANE);
    assert_int_equal(stats_tls_of(true, "fingerprint:spki"),
                     STATS_TLS_FINGERPRINT);
    assert_int_equal(stats_tls_of(true, "self-signed certificate"),
                     STATS_TLS_TLS);
    assert_int_equal(stats_tls_of(true, ""), STATS_TLS_TLS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summed_over_workers),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_slots_follow_a_reload),
        cmocka_unit_test(test_tables),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
