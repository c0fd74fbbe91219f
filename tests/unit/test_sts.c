/*
 * test_sts.c - the pure parts of MTA-STS (RFC 8461): the TXT record, the
 * policy file, the MX pattern match, and the cache with its file.  The
 * fetching, against a real DNS zone and a real HTTPS server, is in
 * tests/integration/test_mta_sts.py.
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

#include "sts.h"

static int txt1(const char *rec, char *id)
{
    const char *recs[1] = {rec};
    size_t lens[1] = {strlen(rec)};
    char why[128];

    return sts_txt_parse(recs, lens, 1, id, why, sizeof why);
}

static void test_txt_record(void **state)
{
    char id[STS_ID_MAX + 1];
    const char *two[] = {"v=STSv1; id=a1", "v=STSv1; id=b2"};
    const char *mixed[] = {"v=spf1 -all", "v=STSv1; id=20240101"};
    size_t two_len[] = {14, 14}, mixed_len[] = {11, 20};
    char why[128];

    (void)state;
    assert_int_equal(txt1("v=STSv1; id=20160831085700Z;", id), 0);
    assert_string_equal(id, "20160831085700Z");
    assert_int_equal(txt1("v=STSv1;id=abc", id), 0);
    assert_string_equal(id, "abc");
    /* an extension field is allowed, the id still found */
    assert_int_equal(txt1("v=STSv1; ext=1; id=x9", id), 0);
    assert_string_equal(id, "x9");
    assert_int_equal(txt1("v=STSv1;", id), -1);              /* no id */
    assert_int_equal(txt1("v=STSv1; id=", id), -1);          /* empty */
    assert_int_equal(txt1("v=STSv1; id=a-b", id), -1);       /* not alnum */
    assert_int_equal(txt1("v=STSv1; id=123456789012345678901234567890123",
                          id), -1);                          /* 33 long */
    assert_int_equal(txt1("v=STSv1; id=a; id=b", id), -1);
    assert_int_equal(txt1("v=STSv10; id=a", id), -1);        /* not ours */
    assert_int_equal(txt1("id=a; v=STSv1", id), -1);         /* v first */
    /* two of ours: no policy (RFC 8461 3.1); others are skipped */
    assert_int_equal(sts_txt_parse(two, two_len, 2, id, why, sizeof why), -1);
    assert_int_equal(sts_txt_parse(mixed, mixed_len, 2, id, why, sizeof why),
                     0);
    assert_string_equal(id, "20240101");
}

static struct sts_policy *parse(const char *text)
{
    char why[128];

    return sts_policy_parse(text, strlen(text), why, sizeof why);
}

static void test_policy_good(void **state)
{
    struct sts_policy *p;

    (void)state;
    p = parse("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
              "mx: *.Example.NET\r\nmax_age: 604800\r\n");
    assert_non_null(p);
    assert_int_equal(p->mode, STS_MODE_ENFORCE);
    assert_int_equal(p->max_age, 604800);
    assert_int_equal(p->nmx, 2);
    assert_string_equal(p->mx[1], "*.example.net");         /* folded */
    assert_string_equal(p->text, "version: STSv1\nmode: enforce\n"
                                 "mx: mail.example.com\nmx: *.example.net\n"
                                 "max_age: 604800\n");
    sts_policy_unref(p);
    /* LF only, any field order, an extension, trailing blanks, no final
     * line end */
    p = parse("mode: testing\nmax_age: 86400   \nfoo_bar: whatever it is\n"
              "version: STSv1\nmx: mx1.example.org");
    assert_non_null(p);
    assert_int_equal(p->mode, STS_MODE_TESTING);
    sts_policy_unref(p);
    /* none needs no mx */
    p = parse("version: STSv1\nmode: none\nmax_age: 0\n");
    assert_non_null(p);
    sts_policy_unref(p);
    p = parse("version: STSv1\nmode: enforce\nmx: a.example\n"
              "max_age: 31557600\n");
    assert_non_null(p);
    sts_policy_unref(p);
}

static void test_policy_bad(void **state)
{
    static const char *const bad[] = {
        "mode: enforce\nmx: a.example\nmax_age: 1\n",          /* version */
        "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmx: a.example\nmax_age: 1\n",         /* mode */
        "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a.example\n",      /* max_age */
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n",
        "version: STSv1\nmode: enforce\nmax_age: 1\n",         /* no mx */
        "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a_b.example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: -a.example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmode: none\nmx: a.example\n"
        "max_age: 1\n",
        "version: STSv1\nversion: STSv1\nmode: none\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx a.example\nmax_age: 1\n",
        "<html>version: STSv1</html>\n",
    };
    char big[STS_POLICY_MAX + 64];
    char why[128];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct sts_policy *p = parse(bad[i]);

        if (p != NULL)
            fail_msg("accepted: %s", bad[i]);
    }
    /* a NUL inside a value */
    assert_null(sts_policy_parse("version: STSv1\nmode: none\0x\nmax_age: 1\n",
                                 40, why, sizeof why));
    /* larger than the cap */
    memset(big, '\n', sizeof big);
    memcpy(big, "version: STSv1\nmode: none\nmax_age: 1\n", 37);
    assert_null(sts_policy_parse(big, sizeof big, why, sizeof why));
    assert_non_null(strstr(why, "larger"));
}

static void test_mx_match(void **state)
{
    struct sts_policy *p = parse("version: STSv1\nmode: enforce\n"
                                 "mx: mail.example.com\nmx: *.example.net\n"
                                 "max_age: 60\n");

    (void)state;
    assert_non_null(p);
    assert_string_equal(sts_mx_match(p, "mail.example.com"),
                        "mail.example.com");
    assert_string_equal(sts_mx_match(p, "MAIL.Example.COM."),
                        "mail.example.com");
    assert_string_equal(sts_mx_match(p, "mx1.example.net"), "*.example.net");
    /* RFC 8461 4.1: the wildcard is one label, never zero or two */
    assert_null(sts_mx_match(p, "example.net"));
    assert_null(sts_mx_match(p, "a.b.example.net"));
    assert_null(sts_mx_match(p, "mail.example.com.evil.test"));
    assert_null(sts_mx_match(p, "xmail.example.com"));
    assert_null(sts_mx_match(p, "mx1.example.network"));
    sts_policy_unref(p);
}

static char dir[64];

static struct sts_policy *policy_for(const char *domain, const char *id,
                                     time_t fetched, unsigned max_age)
{
    char text[200];
    struct sts_policy *p;

    snprintf(text, sizeof text, "version: STSv1\nmode: enforce\n"
             "mx: mx.%s\nmax_age: %u\n", domain, max_age);
    p = parse(text);
    assert_non_null(p);
    snprintf(p->domain, sizeof p->domain, "%s", domain);
    snprintf(p->id, sizeof p->id, "%s", id);
    p->fetched = fetched;
    return p;
}

static void test_cache_persists(void **state)
{
    char err[200], warn[200], path[128];
    struct sts_cache *c;
    struct sts_policy *p, *got;
    time_t now = time(NULL);
    FILE *f;

    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_sts.XXXXXX");
    assert_non_null(mkdtemp(dir));
    c = sts_cache_open(dir, err, sizeof err, warn, sizeof warn);
    assert_non_null(c);
    assert_int_equal(sts_cache_count(c), 0);
    p = policy_for("a.example", "id1", now, 3600);
    assert_int_equal(sts_cache_put(c, p, err, sizeof err), 0);
    sts_policy_unref(p);
    p = policy_for("b.example", "id2", now - 7200, 3600);    /* expired */
    assert_int_equal(sts_cache_put(c, p, err, sizeof err), 0);
    sts_policy_unref(p);
    assert_null(sts_cache_get(c, "b.example", now));
    /* a newer policy replaces the old one of its domain */
    p = policy_for("a.example", "id3", now, 3600);
    assert_int_equal(sts_cache_put(c, p, err, sizeof err), 0);
    sts_policy_unref(p);
    assert_int_equal(sts_cache_count(c), 2);
    sts_cache_close(c);

    /* a restart: the file brings back what was unexpired */
    c = sts_cache_open(dir, err, sizeof err, warn, sizeof warn);
    assert_non_null(c);
    assert_non_null(strstr(warn, "1 expired or malformed"));
    got = sts_cache_get(c, "A.example", now);
    assert_non_null(got);
    assert_string_equal(got->id, "id3");
    assert_int_equal(got->mode, STS_MODE_ENFORCE);
    assert_string_equal(got->mx[0], "mx.a.example");
    assert_int_equal((long long)got->fetched, (long long)now);
    sts_policy_unref(got);
    sts_cache_close(c);

    /* a damaged line is dropped, never half-read */
    snprintf(path, sizeof path, "%s/%s", dir, STS_CACHE_FILE);
    f = fopen(path, "a");
    assert_non_null(f);
    fprintf(f, "c.example\tid4\t%lld\tversion: STSv1;mode: enforce;"
            "mx: a b;max_age: 60;\n", (long long)now);
    fclose(f);
    c = sts_cache_open(dir, err, sizeof err, warn, sizeof warn);
    assert_non_null(c);
    assert_null(sts_cache_get(c, "c.example", now));
    assert_int_equal(sts_cache_count(c), 1);
    sts_cache_close(c);
    unlink(path);
    rmdir(dir);
    /* a missing directory is an error */
    assert_null(sts_cache_open(dir, err, sizeof err, warn, sizeof warn));
    assert_non_null(strstr(err, "state_dir"));
}

static void test_cache_bounded(void **state)
{
    char err[200], warn[200], d[32];
    struct sts_cache *c = sts_cache_open(NULL, err, sizeof err, warn,
                                         sizeof warn);
    time_t now = time(NULL);

    (void)state;
    assert_non_null(c);
    for (unsigned i = 0; i < STS_CACHE_MAX + 5; i++) {
        struct sts_policy *p;

        snprintf(d, sizeof d, "d%u.example", i);
        /* d0 expires first: it makes room */
        p = policy_for(d, "x", now, i == 0 ? 10 : 1000 + i);
        assert_int_equal(sts_cache_put(c, p, err, sizeof err), 0);
        sts_policy_unref(p);
    }
    assert_int_equal(sts_cache_count(c), STS_CACHE_MAX);
    assert_null(sts_cache_get(c, "d0.example", now));
    sts_cache_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt_record),
        cmocka_unit_test(test_policy_good),
        cmocka_unit_test(test_policy_bad),
        cmocka_unit_test(test_mx_match),
        cmocka_unit_test(test_cache_persists),
        cmocka_unit_test(test_cache_bounded),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
