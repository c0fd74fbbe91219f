/*
 * test_nexthop.c - the pure parts of the next hop search: MX ordering
 * (RFC 5321 5.1) and names in MX rdata.  The search itself, against a
 * real signed zone, is in tests/integration/test_dane.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dns.h"
#include "nexthop.h"

static void test_mx_order_by_preference(void **state)
{
    unsigned prefs[] = {20, 10, 30, 10};
    unsigned order[] = {0, 1, 2, 3};
    const uint32_t rnd[] = {0, 0, 0, 0};

    (void)state;
    nexthop_mx_order(prefs, order, rnd, 4);
    assert_int_equal(prefs[0], 10);
    assert_int_equal(prefs[1], 10);
    assert_int_equal(prefs[2], 20);
    assert_int_equal(prefs[3], 30);
    /* equal keys keep their order (the sort is stable) */
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 3);
    assert_int_equal(order[2], 0);
    assert_int_equal(order[3], 2);
}

static void test_mx_order_random_among_equals(void **state)
{
    unsigned prefs[] = {10, 10, 10, 5};
    unsigned order[] = {0, 1, 2, 3};
    const uint32_t rnd[] = {300, 100, 200, 999};

    (void)state;
    nexthop_mx_order(prefs, order, rnd, 4);
    /* the lowest preference first whatever its random value, then the
     * equal ones in the order of their random values */
    assert_int_equal(order[0], 3);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 2);
    assert_int_equal(order[3], 0);
}

static void test_name_from_wire(void **state)
{
    static const unsigned char mx1[] = "\3mx1\7Example\3com";  /* + NUL */
    static const unsigned char root[] = {0};
    static const unsigned char longlab[] = {64, 'a'};
    static const unsigned char cut[] = {3, 'm', 'x'};
    static const unsigned char bad[] = {3, 'm', ' ', 'x', 0};
    char out[256];

    (void)state;
    assert_int_equal(dns_name_from_wire(mx1, sizeof mx1, out, sizeof out),
                     (int)sizeof mx1);
    assert_string_equal(out, "mx1.example.com");
    assert_int_equal(dns_name_from_wire(root, 1, out, sizeof out), 1);
    assert_string_equal(out, "");            /* a null MX names the root */
    assert_int_equal(dns_name_from_wire(longlab, sizeof longlab, out,
                                        sizeof out), -1);
    assert_int_equal(dns_name_from_wire(cut, sizeof cut, out, sizeof out), -1);
    assert_int_equal(dns_name_from_wire(bad, sizeof bad, out, sizeof out), -1);
    /* too small an output buffer */
    assert_int_equal(dns_name_from_wire(mx1, sizeof mx1, out, 5), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mx_order_by_preference),
        cmocka_unit_test(test_mx_order_random_among_equals),
        cmocka_unit_test(test_name_from_wire),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
