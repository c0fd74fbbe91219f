/*
 * test_tlsrpt.c - the pure parts of TLS reporting (RFC 8460): the TXT
 * record, counting by window, policy and failure detail, the state file
 * across a restart, the JSON report and its gzip form.  Sending, against
 * a real DNS zone and a real HTTPS server, is in
 * tests/integration/test_tlsrpt.py (which also checks the JSON against
 * a schema).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "tlsrpt.h"

static int txt1(const char *rec, struct tlsrpt_rua *rua)
{
    const char *recs[1] = {rec};
    size_t lens[1] = {strlen(rec)};
    char why[128];

    return tlsrpt_txt_parse(recs, lens, 1, rua, why, sizeof why);
}

static void test_txt_record(void **state)
{
    struct tlsrpt_rua rua;
    const char *two[] = {"v=TLSRPTv1; rua=mailto:a@example.com",
                         "v=TLSRPTv1; rua=mailto:b@example.com"};
    const char *mixed[] = {"v=spf1 -all", "v=STSv1; id=1",
                           "v=TLSRPTv1;rua=https://r.example.com/v1"};
    size_t two_len[] = {strlen(two[0]), strlen(two[1])};
    size_t mixed_len[] = {strlen(mixed[0]), strlen(mixed[1]),
                          strlen(mixed[2])};
    char why[128];

    (void)state;
    assert_int_equal(txt1("v=TLSRPTv1; rua=mailto:tls@example.com,"
                          " https://reports.example.com/tlsrpt", &rua), 0);
    assert_int_equal(rua.n, 2);
    assert_string_equal(rua.uri[0], "mailto:tls@example.com");
    assert_string_equal(rua.uri[1], "https://reports.example.com/tlsrpt");
    /* other schemes are skipped, extensions ignored */
    assert_int_equal(txt1("v=TLSRPTv1; ext=1; rua=http://x.example/,"
                          "mailto:t@example.com;", &rua), 0);
    assert_int_equal(rua.n, 1);
    assert_string_equal(rua.uri[0], "mailto:t@example.com");
    /* not ours, or nothing usable */
    assert_int_equal(txt1("v=TLSRPTv10; rua=mailto:t@example.com", &rua), -1);
    assert_int_equal(txt1("v=TLSRPTv1; rua=http://x.example/", &rua), -1);
    assert_int_equal(txt1("v=TLSRPTv1; ruf=mailto:t@example.com", &rua), -1);
    assert_int_equal(txt1("rua=mailto:t@example.com; v=TLSRPTv1", &rua), -1);
    /* RFC 8460 3: exactly one record of ours */
    assert_int_equal(tlsrpt_txt_parse(two, two_len, 2, &rua, why, sizeof why),
                     -1);
    assert_non_null(strstr(why, "more than one"));
    assert_int_equal(tlsrpt_txt_parse(mixed, mixed_len, 3, &rua, why,
                                      sizeof why), 0);
    assert_string_equal(rua.uri[0], "https://r.example.com/v1");
}

static const struct tlsrpt_result ok_sts = {
    .domain = "Example.COM", .type = TLSRPT_STS,
    .policy = "version: STSv1\nmode: enforce\nmx: *.example.com\n"
              "max_age: 86400",
    .mx_hosts = "*.example.com"};

static struct tlsrpt_result failed_sts(const char *ip)
{
    struct tlsrpt_result r = ok_sts;

    r.result = "certificate-expired";
    r.sending_ip = "192.0.2.1";
    r.mx_host = "mx1.example.com";
    r.receiving_ip = ip;
    r.reason = "certificate has expired";
    return r;
}

/* report - the JSON of the next finished window of s at now. */
static char *report(struct tlsrpt_store *s, time_t now, char *domain,
                    time_t *start, time_t *end)
{
    struct tlsrpt_meta m = {"Org \"X\"", "tlsrpt@example.net", "id-1"};
    struct tlsrpt_report *r = tlsrpt_take(s, now);
    size_t len;
    char *json;

    if (r == NULL)
        return NULL;
    strcpy(domain, r->domain);
    *start = r->start;
    *end = r->end;
    json = tlsrpt_json(r, &m, &len);
    assert_int_equal(strlen(json), len);
    tlsrpt_report_free(r);
    return json;
}

static void test_counts_and_json(void **state)
{
    char err[200], warn[200], domain[256];
    struct tlsrpt_store *s = tlsrpt_open(NULL, 86400, err, sizeof err, warn,
                                         sizeof warn);
    struct tlsrpt_result f1 = failed_sts("203.0.113.5");
    struct tlsrpt_result f2 = failed_sts("203.0.113.6");
    struct tlsrpt_result none = {.domain = "example.com",
                                 .type = TLSRPT_NO_POLICY,
                                 .result = "starttls-not-supported",
                                 .mx_host = "mx2.example.com"};
    time_t day = 1764806400;         /* 2025-12-04T00:00:00Z */
    time_t start, end;
    char *json;

    (void)state;
    assert_non_null(s);
    tlsrpt_record(s, day + 10, &ok_sts);
    tlsrpt_record(s, day + 20, &ok_sts);
    tlsrpt_record(s, day + 30, &f1);
    tlsrpt_record(s, day + 40, &f1);
    tlsrpt_record(s, day + 50, &f2);
    tlsrpt_record(s, day + 60, &none);
    tlsrpt_record(s, day + 86400 + 5, &ok_sts);   /* the next day */
    /* nothing has finished yet */
    assert_null(tlsrpt_take(s, day + 86399));
    json = report(s, day + 86400, domain, &start, &end);
    assert_non_null(json);
    assert_string_equal(domain, "example.com");
    assert_int_equal(start, day);
    assert_int_equal(end, day + 86400);
    assert_non_null(strstr(json, "\"organization-name\":\"Org \\\"X\\\"\""));
    assert_non_null(strstr(json, "\"date-range\":{\"start-datetime\":"
                                 "\"2025-12-04T00:00:00Z\",\"end-datetime\":"
                                 "\"2025-12-04T23:59:59Z\"}"));
    assert_non_null(strstr(json, "\"policy-type\":\"sts\",\"policy-string\":"
                                 "[\"version: STSv1\",\"mode: enforce\","
                                 "\"mx: *.example.com\",\"max_age: 86400\"],"
                                 "\"policy-domain\":\"example.com\","
                                 "\"mx-host\":[\"*.example.com\"]"));
    assert_non_null(strstr(json, "\"total-successful-session-count\":2,"
                                 "\"total-failure-session-count\":3"));
    assert_non_null(strstr(json, "{\"result-type\":\"certificate-expired\","
                                 "\"sending-mta-ip\":\"192.0.2.1\","
                                 "\"receiving-mx-hostname\":"
                                 "\"mx1.example.com\",\"receiving-ip\":"
                                 "\"203.0.113.5\",\"failed-session-count\":2,"
                                 "\"failure-reason-code\":"
                                 "\"certificate has expired\"}"));
    assert_non_null(strstr(json, "\"receiving-ip\":\"203.0.113.6\","
                                 "\"failed-session-count\":1"));
    assert_non_null(strstr(json, "{\"policy\":{\"policy-type\":"
                                 "\"no-policy-found\",\"policy-domain\":"
                                 "\"example.com\"},\"summary\":{"
                                 "\"total-successful-session-count\":0,"
                                 "\"total-failure-session-count\":1}"));
    free(json);
    /* the next day's window is still counting */
    assert_null(tlsrpt_take(s, day + 86400));
    json = report(s, day + 2 * 86400, domain, &start, &end);
    assert_non_null(strstr(json, "\"total-successful-session-count\":1,"));
    free(json);
    assert_null(tlsrpt_take(s, day + 3 * 86400));
    tlsrpt_close(s);
}

static void test_state_survives_a_restart(void **state)
{
    char dir[] = "/tmp/test_tlsrpt.XXXXXX", path[300], err[200], warn[200];
    char domain[256], *json;
    struct tlsrpt_store *s;
    struct tlsrpt_result f1 = failed_sts("203.0.113.5");
    struct tlsrpt_result odd = {.domain = "example.org", .type = TLSRPT_TLSA,
                                .policy = "3 1 1 00ff", .mx_hosts = "mx.x",
                                .result = "validation-failure",
                                .reason = "a reason - with 100% blanks\t"};
    time_t day = 1764806400, start, end;
    FILE *f;

    (void)state;
    assert_non_null(mkdtemp(dir));
    s = tlsrpt_open(dir, 86400, err, sizeof err, warn, sizeof warn);
    assert_non_null(s);
    tlsrpt_record(s, day + 1, &ok_sts);
    tlsrpt_record(s, day + 2, &f1);
    tlsrpt_record(s, day + 3, &odd);
    assert_int_equal(tlsrpt_save(s, err, sizeof err), 0);
    tlsrpt_close(s);

    s = tlsrpt_open(dir, 86400, err, sizeof err, warn, sizeof warn);
    assert_non_null(s);
    assert_string_equal(warn, "");
    tlsrpt_record(s, day + 4, &ok_sts);
    for (int k = 0; k < 2; k++) {
        json = report(s, day + 86400, domain, &start, &end);
        assert_non_null(json);
        if (strcmp(domain, "example.org") == 0) {
            assert_non_null(strstr(json, "\"failure-reason-code\":"
                                         "\"a reason - with 100% blanks"
                                         "\\u0009\""));
            assert_non_null(strstr(json, "\"policy-string\":"
                                         "[\"3 1 1 00ff\"]"));
        } else {
            assert_string_equal(domain, "example.com");
            assert_non_null(strstr(json, "\"total-successful-session-count"
                                         "\":2,\"total-failure-session-"
                                         "count\":1"));
        }
        free(json);
    }
    assert_null(tlsrpt_take(s, day + 86400));
    tlsrpt_close(s);

    /* a damaged line is dropped and said, the rest is kept */
    snprintf(path, sizeof path, "%s/%s", dir, TLSRPT_STATE_FILE);
    f = fopen(path, "w");
    fputs("# starttls-proxy TLSRPT counts 1\nD 1764806400 example.com\n"
          "P 1 5 0 - -\nP 9 1 1 - -\nF 1 x y\n", f);
    fclose(f);
    s = tlsrpt_open(dir, 86400, err, sizeof err, warn, sizeof warn);
    assert_non_null(strstr(warn, "2 malformed lines"));
    json = report(s, day + 86400, domain, &start, &end);
    assert_non_null(strstr(json, "\"total-successful-session-count\":5,"));
    free(json);
    tlsrpt_close(s);
    unlink(path);
    rmdir(dir);
}

static void test_bounds(void **state)
{
    char err[200], warn[200], name[64];
    struct tlsrpt_store *s = tlsrpt_open(NULL, 60, err, sizeof err, warn,
                                         sizeof warn);
    struct tlsrpt_result r = ok_sts;

    (void)state;
    for (int i = 0; i < TLSRPT_MAX_DOMAINS + 5; i++) {
        snprintf(name, sizeof name, "d%d.example", i);
        r.domain = name;
        tlsrpt_record(s, 1000, &r);
    }
    assert_int_equal(tlsrpt_dropped(s), 5);
    assert_int_equal(tlsrpt_dropped(s), 0);
    tlsrpt_close(s);
}

static void test_gzip(void **state)
{
    static const char text[] = "{\"organization-name\":\"x\"}\n";
    unsigned char out[256];
    size_t len;
    unsigned char *gz = tlsrpt_gzip(text, sizeof text - 1, &len);
    z_stream z;

    (void)state;
    assert_non_null(gz);
    assert_int_equal(gz[0], 0x1f);           /* RFC 1952 magic */
    assert_int_equal(gz[1], 0x8b);
    memset(&z, 0, sizeof z);
    assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
    z.next_in = gz;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = sizeof out;
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    assert_int_equal(z.total_out, sizeof text - 1);
    assert_memory_equal(out, text, sizeof text - 1);
    inflateEnd(&z);
    free(gz);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt_record),
        cmocka_unit_test(test_counts_and_json),
        cmocka_unit_test(test_state_survives_a_restart),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_gzip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
