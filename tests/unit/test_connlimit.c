/*
 * test_connlimit.c - proxy/connlimit.c: the per-service and per-address
 * counts, their release, the trial mode, and what counts as one address.
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

#include "connlimit.h"

static struct sockaddr_storage addr(const char *text)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof ss);
    if (strchr(text, ':') != NULL) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

        a->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, text, &a->sin6_addr), 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;

        a->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, text, &a->sin_addr), 1);
    }
    return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

static void test_service_limit(void **state)
{
    struct connlimit *cl = connlimit_new(2);
    struct sockaddr_storage a = addr("192.0.2.1"), b = addr("192.0.2.2"),
                            c = addr("192.0.2.3");

    (void)state;
    assert_non_null(cl);
    assert_int_equal(connlimit_acquire(cl, 0, SA(a), 2, 0, 0), CONNLIMIT_OK);
    assert_int_equal(connlimit_acquire(cl, 0, SA(b), 2, 0, 0), CONNLIMIT_OK);
    assert_int_equal(connlimit_acquire(cl, 0, SA(c), 2, 0, 0),
                     CONNLIMIT_SERVICE_FULL);
    /* another service has its own count */
    assert_int_equal(connlimit_acquire(cl, 1, SA(c), 2, 0, 0), CONNLIMIT_OK);
    connlimit_release(cl, 0, SA(a));
    assert_int_equal(connlimit_acquire(cl, 0, SA(c), 2, 0, 0), CONNLIMIT_OK);
    assert_int_equal(connlimit_acquire(cl, 0, SA(a), 2, 0, 0),
                     CONNLIMIT_SERVICE_FULL);
    connlimit_release(cl, 0, SA(b));
    connlimit_release(cl, 0, SA(c));
    connlimit_release(cl, 1, SA(c));
    connlimit_free(cl);
}

static void test_address_limit(void **state)
{
    struct connlimit *cl = connlimit_new(1);
    struct sockaddr_storage a = addr("198.51.100.7"), b = addr("2001:db8::7");

    (void)state;
    for (int i = 0; i < 3; i++)
        assert_int_equal(connlimit_acquire(cl, 0, SA(a), 0, 3, 0),
                         CONNLIMIT_OK);
    assert_int_equal(connlimit_acquire(cl, 0, SA(a), 0, 3, 0),
                     CONNLIMIT_ADDRESS_FULL);
    assert_int_equal(connlimit_acquire(cl, 0, SA(b), 0, 3, 0), CONNLIMIT_OK);
    connlimit_release(cl, 0, SA(a));
    assert_int_equal(connlimit_acquire(cl, 0, SA(a), 0, 3, 0), CONNLIMIT_OK);
    /* 0 is no limit */
    for (int i = 0; i < 100; i++)
        assert_int_equal(connlimit_acquire(cl, 0, SA(b), 0, 0, 0),
                         CONNLIMIT_OK);
    for (int i = 0; i < 100; i++)
        connlimit_release(cl, 0, SA(b));
    assert_int_equal(connlimit_acquire(cl, 0, SA(b), 0, 1, 0),
                     CONNLIMIT_ADDRESS_FULL);      /* the first is still in */
    connlimit_free(cl);
}

/* an IPv4 client and the same client as a mapped IPv6 address (a dual
 * stack listener) are one address */
static void test_mapped_is_one_address(void **state)
{
    struct connlimit *cl = connlimit_new(1);
    struct sockaddr_storage v4 = addr("203.0.113.5");
    struct sockaddr_storage mapped = addr("::ffff:203.0.113.5");
    struct sockaddr_storage other = addr("::203.0.113.5");

    (void)state;
    assert_int_equal(connlimit_acquire(cl, 0, SA(v4), 0, 1, 0), CONNLIMIT_OK);
    assert_int_equal(connlimit_acquire(cl, 0, SA(mapped), 0, 1, 0),
                     CONNLIMIT_ADDRESS_FULL);
    assert_int_equal(connlimit_acquire(cl, 0, SA(other), 0, 1, 0),
                     CONNLIMIT_OK);
    connlimit_release(cl, 0, SA(mapped));        /* releases v4's count */
    assert_int_equal(connlimit_acquire(cl, 0, SA(v4), 0, 1, 0), CONNLIMIT_OK);
    connlimit_free(cl);
}

/* enforce = no: counted past the limits, and told which one it passed */
static void test_force(void **state)
{
    struct connlimit *cl = connlimit_new(1);
    struct sockaddr_storage a = addr("192.0.2.9"), b = addr("192.0.2.10");

    (void)state;
    assert_int_equal(connlimit_acquire(cl, 0, SA(a), 1, 1, 1), CONNLIMIT_OK);
    assert_int_equal(connlimit_acquire(cl, 0, SA(a), 5, 1, 1),
                     CONNLIMIT_ADDRESS_FULL);
    assert_int_equal(connlimit_acquire(cl, 0, SA(b), 1, 5, 1),
                     CONNLIMIT_SERVICE_FULL);
    /* all three were counted: without force, b is refused twice over */
    assert_int_equal(connlimit_acquire(cl, 0, SA(b), 3, 5, 0),
                     CONNLIMIT_SERVICE_FULL);
    connlimit_release(cl, 0, SA(a));
    connlimit_release(cl, 0, SA(a));
    connlimit_release(cl, 0, SA(b));
    assert_int_equal(connlimit_acquire(cl, 0, SA(b), 1, 1, 0), CONNLIMIT_OK);
    connlimit_release(cl, 0, SA(b));
    connlimit_free(cl);
}

/* many addresses (more than any hash table's first size) keep separate
 * counts */
static void test_many_addresses(void **state)
{
    struct connlimit *cl = connlimit_new(1);
    char text[64];

    (void)state;
    for (int i = 0; i < 5000; i++) {
        struct sockaddr_storage a;

        snprintf(text, sizeof text, "2001:db8::%x:%x", i >> 8, i & 255);
        a = addr(text);
        assert_int_equal(connlimit_acquire(cl, 0, SA(a), 0, 1, 0),
                         CONNLIMIT_OK);
        assert_int_equal(connlimit_acquire(cl, 0, SA(a), 0, 1, 0),
                         CONNLIMIT_ADDRESS_FULL);
    }
    for (int i = 0; i < 5000; i++) {
        struct sockaddr_storage a;

        snprintf(text, sizeof text, "2001:db8::%x:%x", i >> 8, i & 255);
        a = addr(text);
        connlimit_release(cl, 0, SA(a));
        assert_int_equal(connlimit_acquire(cl, 0, SA(a), 0, 1, 0),
                         CONNLIMIT_OK);
        connlimit_release(cl, 0, SA(a));
    }
    connlimit_free(cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_service_limit),
        cmocka_unit_test(test_address_limit),
        cmocka_unit_test(test_mapped_is_one_address),
        cmocka_unit_test(test_force),
        cmocka_unit_test(test_many_addresses),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
