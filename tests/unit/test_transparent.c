/*
 * test_transparent.c - proxy/transparent.c: the verdict on an original
 * destination (our own listeners and addresses are a loop, checked before
 * transparent_destinations), table-driven, and the local-address test on
 * the addresses every host has.
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

#include "config.h"
#include "transparent.h"

static const char conf[] =
    "[proxy]\nhostname = gw.example\n"
    "[tp]\nlisten = 192.0.2.10:10025, [2001:db8::10]:10025\n"
    "client_tls = none\ntransparent = redirect\n"
    "transparent_destinations = 203.0.113.0/24, 2001:db8:25::/48\n"
    "[any]\nlisten = 127.0.0.1:10026\nclient_tls = none\n"
    "transparent = tproxy\n"
    "[plain]\nlisten = 198.51.100.7:2525\nbackend = 127.0.0.1:25\n"
    "client_tls = none\n";

static struct sockaddr_storage addr(const char *text, unsigned port)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof ss);
    if (strchr(text, ':') != NULL) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET6, text, &a->sin6_addr), 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;

        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET, text, &a->sin_addr), 1);
    }
    return ss;
}

struct verdict_case {
    const char *svc;
    const char *dst;
    unsigned port;
    bool local;
    enum transparent_verdict want;
};

static const struct verdict_case cases[] = {
    { "tp", "203.0.113.25", 25, false, TRANSPARENT_OK },
    { "tp", "2001:db8:25::25", 25, false, TRANSPARENT_OK },
    { "tp", "198.51.100.25", 25, false, TRANSPARENT_DENIED },
    { "tp", "2001:db8:26::25", 25, false, TRANSPARENT_DENIED },
    /* a local address is a loop, even inside the destinations */
    { "tp", "203.0.113.25", 25, true, TRANSPARENT_LOOP },
    /* a listener of any service, even a non-local (freebind) one */
    { "tp", "192.0.2.10", 10025, false, TRANSPARENT_LOOP },
    { "tp", "2001:db8::10", 10025, false, TRANSPARENT_LOOP },
    { "tp", "198.51.100.7", 2525, false, TRANSPARENT_LOOP },
    /* the listener's address on another port: only the local check */
    { "tp", "192.0.2.10", 25, false, TRANSPARENT_DENIED },
    /* no transparent_destinations: anything but ourselves */
    { "any", "198.51.100.25", 25, false, TRANSPARENT_OK },
    { "any", "127.0.0.1", 10026, false, TRANSPARENT_LOOP },
    { "any", "198.51.100.25", 25, true, TRANSPARENT_LOOP },
};

static void test_verdicts(void **state)
{
    FILE *f = fmemopen((void *)conf, sizeof conf - 1, "r");
    struct config *cfg = NULL;
    char err[1024];

    (void)state;
    assert_non_null(f);
    if (config_load_stream(f, "t.ini", &cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    fclose(f);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct verdict_case *c = &cases[i];
        const struct service *svc = NULL;
        struct sockaddr_storage dst = addr(c->dst, c->port);
        enum transparent_verdict v;

        for (size_t j = 0; j < cfg->nservices; j++)
            if (strcmp(cfg->services[j].name, c->svc) == 0)
                svc = &cfg->services[j];
        assert_non_null(svc);
        v = transparent_verdict(cfg, svc, &dst, c->local);
        if (v != c->want)
            fail_msg("case %zu (%s %s:%u local=%d): %s, expected %s", i,
                     c->svc, c->dst, c->port, c->local,
                     transparent_verdict_name(v),
                     transparent_verdict_name(c->want));
    }
    config_free(cfg);
}

/* the addresses every host has, and two that no test host has */
static void test_is_local(void **state)
{
    struct sockaddr_storage a;

    (void)state;
    a = addr("127.0.0.1", 25);
    assert_true(transparent_is_local(&a));
    a = addr("127.3.2.1", 25);
    assert_true(transparent_is_local(&a));
    a = addr("::1", 25);
    assert_true(transparent_is_local(&a));
    a = addr("0.0.0.0", 25);
    assert_true(transparent_is_local(&a));
    a = addr("::", 25);
    assert_true(transparent_is_local(&a));
    a = addr("203.0.113.254", 25);
    assert_false(transparent_is_local(&a));
    a = addr("2001:db8:ffff::1", 25);
    assert_false(transparent_is_local(&a));
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(transparent_verdict_name(TRANSPARENT_OK), "ok");
    assert_string_equal(transparent_verdict_name(TRANSPARENT_LOOP), "loop");
    assert_string_equal(transparent_verdict_name(TRANSPARENT_DENIED),
                        "denied");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verdicts),
        cmocka_unit_test(test_is_local),
        cmocka_unit_test(test_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
