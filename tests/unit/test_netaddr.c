/*
 * test_netaddr.c - proxy/netaddr.c: every text form of IPv4, IPv6 and
 * mapped addresses, bytes and keys, and range matching at every kind of
 * prefix.
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

#include "netaddr.h"

/* addr - "192.0.2.1" or "2001:db8::1" with a port; AF_UNIX for "unix" */
static struct sockaddr_storage addr(const char *text, unsigned port)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof ss);
    if (strcmp(text, "unix") == 0) {
        ss.ss_family = AF_UNIX;
    } else if (strchr(text, ':') != NULL) {
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

static struct cidr range(const char *text, unsigned prefix)
{
    struct cidr c;

    c.addr = addr(text, 0);
    c.prefix = prefix;
    return c;
}

struct text_case {
    const char *in;
    unsigned port;
    const char *host, *text, *xclient, *literal;
};

static const struct text_case text_cases[] = {
    { "192.0.2.1", 25, "192.0.2.1", "192.0.2.1:25", "192.0.2.1",
      "[192.0.2.1]" },
    { "0.0.0.0", 0, "0.0.0.0", "0.0.0.0:0", "0.0.0.0", "[0.0.0.0]" },
    { "255.255.255.255", 65535, "255.255.255.255", "255.255.255.255:65535",
      "255.255.255.255", "[255.255.255.255]" },
    { "2001:db8::1", 587, "2001:db8::1", "[2001:db8::1]:587",
      "IPV6:2001:db8::1", "[IPv6:2001:db8::1]" },
    { "::1", 2525, "::1", "[::1]:2525", "IPV6:::1", "[IPv6:::1]" },
    /* RFC 5952: the longest zero run is compressed, a single zero not */
    { "2001:db8:0:1:0:0:0:1", 1, "2001:db8:0:1::1", "[2001:db8:0:1::1]:1",
      "IPV6:2001:db8:0:1::1", "[IPv6:2001:db8:0:1::1]" },
    /* a mapped IPv4 address stays an IPv6 address */
    { "::ffff:192.0.2.9", 25, "::ffff:192.0.2.9", "[::ffff:192.0.2.9]:25",
      "IPV6:::ffff:192.0.2.9", "[IPv6:::ffff:192.0.2.9]" },
};

static void test_text_forms(void **state)
{
    char out[NETADDR_TEXT];

    (void)state;
    for (size_t i = 0; i < sizeof text_cases / sizeof text_cases[0]; i++) {
        const struct text_case *c = &text_cases[i];
        struct sockaddr_storage ss = addr(c->in, c->port);

        print_message("%s\n", c->in);
        assert_true(netaddr_host(&ss, out, sizeof out, "?"));
        assert_string_equal(out, c->host);
        netaddr_text(&ss, out, sizeof out);
        assert_string_equal(out, c->text);
        netaddr_xclient(&ss, out, sizeof out);
        assert_string_equal(out, c->xclient);
        assert_true(netaddr_literal(&ss, out, sizeof out));
        assert_string_equal(out, c->literal);
        assert_int_equal(netaddr_port(&ss), c->port);
    }
}

static void test_other_family(void **state)
{
    struct sockaddr_storage ss = addr("unix", 0);
    char out[NETADDR_TEXT] = "untouched";
    size_t len = 99;

    (void)state;
    assert_false(netaddr_host(&ss, out, sizeof out, "?"));
    assert_string_equal(out, "?");
    snprintf(out, sizeof out, "untouched");
    netaddr_text(&ss, out, sizeof out);
    assert_string_equal(out, "untouched");
    assert_false(netaddr_literal(&ss, out, sizeof out));
    assert_string_equal(out, "untouched");
    netaddr_xclient(&ss, out, sizeof out);
    assert_string_equal(out, "[UNAVAILABLE]");
    assert_int_equal(netaddr_port(&ss), 0);
    assert_null(netaddr_bytes(&ss, &len));
    assert_int_equal(len, 0);
}

/* a small buffer gets a cut, terminated string, never an overflow */
static void test_small_buffers(void **state)
{
    struct sockaddr_storage ss = addr("2001:db8:1:2:3:4:5:6", 65535);
    char out[8];

    (void)state;
    memset(out, 'x', sizeof out);
    netaddr_text(&ss, out, 5);
    assert_string_equal(out, "[200");
    assert_int_equal(out[5], 'x');
    netaddr_xclient(&ss, out, 6);
    assert_string_equal(out, "IPV6:");
    netaddr_literal(&ss, out, 1);
    assert_string_equal(out, "");
    assert_true(netaddr_host(&ss, out, sizeof out, "?"));
    assert_string_equal(out, "2001:db");
}

static void test_bytes_and_key(void **state)
{
    struct sockaddr_storage v4 = addr("192.0.2.1", 25);
    struct sockaddr_storage v6 = addr("2001:db8::1", 25);
    struct sockaddr_storage mapped = addr("::ffff:192.0.2.1", 26);
    static const unsigned char want4[] = {192, 0, 2, 1};
    unsigned char k4[16], k6[16], km[16], zero[16] = {0};
    struct sockaddr_storage other = addr("unix", 0);
    const unsigned char *b;
    size_t len;

    (void)state;
    b = netaddr_bytes(&v4, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(b, want4, 4);
    b = netaddr_bytes(&v6, &len);
    assert_int_equal(len, 16);
    assert_int_equal(b[0], 0x20);
    assert_int_equal(b[15], 1);
    /* one client, two forms, one key: the limits count it once */
    netaddr_key((const struct sockaddr *)&v4, k4);
    netaddr_key((const struct sockaddr *)&mapped, km);
    netaddr_key((const struct sockaddr *)&v6, k6);
    assert_memory_equal(k4, km, 16);
    assert_memory_not_equal(k4, k6, 16);
    assert_int_equal(k4[10], 0xff);
    assert_int_equal(k4[11], 0xff);
    assert_memory_equal(k4 + 12, want4, 4);
    netaddr_key((const struct sockaddr *)&other, k6);
    assert_memory_equal(k6, zero, 16);
}

struct cidr_case {
    const char *net;
    unsigned prefix;
    const char *addr;
    bool in;
};

static const struct cidr_case cidr_cases[] = {
    { "0.0.0.0", 0, "203.0.113.9", true },           /* everything v4 */
    { "0.0.0.0", 0, "2001:db8::1", false },          /* ... but no v6 */
    { "::", 0, "2001:db8::1", true },
    { "::", 0, "192.0.2.1", false },
    { "192.0.2.7", 32, "192.0.2.7", true },
    { "192.0.2.7", 32, "192.0.2.6", false },
    { "128.0.0.0", 1, "200.1.1.1", true },
    { "128.0.0.0", 1, "127.255.255.255", false },
    { "192.0.2.0", 24, "192.0.2.255", true },
    { "192.0.2.0", 24, "192.0.3.0", false },
    /* /27: the prefix ends inside a byte */
    { "192.0.2.32", 27, "192.0.2.32", true },
    { "192.0.2.32", 27, "192.0.2.63", true },
    { "192.0.2.32", 27, "192.0.2.64", false },
    { "192.0.2.32", 27, "192.0.2.31", false },
    { "10.0.0.0", 9, "10.127.0.1", true },
    { "10.0.0.0", 9, "10.128.0.1", false },
    { "2001:db8::", 32, "2001:db8:ffff::1", true },
    { "2001:db8::", 32, "2001:db9::1", false },
    { "2001:db8::1", 128, "2001:db8::1", true },
    { "2001:db8::1", 128, "2001:db8::2", false },
    /* /121: the last byte split after its first bit */
    { "2001:db8::80", 121, "2001:db8::ff", true },
    { "2001:db8::80", 121, "2001:db8::7f", false },
    /* a mapped address is not inside a v4 range (listeners are
     * v4 or v6, never both) */
    { "192.0.2.0", 24, "::ffff:192.0.2.1", false },
    { "::ffff:192.0.2.0", 120, "::ffff:192.0.2.1", true },
};

static void test_cidr(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cidr_cases / sizeof cidr_cases[0]; i++) {
        const struct cidr_case *c = &cidr_cases[i];
        struct cidr r = range(c->net, c->prefix);
        struct sockaddr_storage a = addr(c->addr, 1234);

        print_message("%s/%u %s\n", c->net, c->prefix, c->addr);
        assert_int_equal(netaddr_in_cidr(&r, &a), c->in);
    }
}

static void test_cidrs_and_same_host(void **state)
{
    struct cidr list[] = {range("198.51.100.0", 24), range("2001:db8::", 48)};
    struct sockaddr_storage a = addr("2001:db8:0:1::5", 1);
    struct sockaddr_storage b = addr("203.0.113.1", 1);
    struct sockaddr_storage c = addr("203.0.113.1", 2);
    struct sockaddr_storage u = addr("unix", 0);
    struct cidr bad = range("192.0.2.0", 33);   /* never from the config */

    (void)state;
    assert_true(netaddr_in_cidrs(list, 2, &a));
    assert_false(netaddr_in_cidrs(list, 2, &b));
    assert_false(netaddr_in_cidrs(list, 0, &a));
    assert_false(netaddr_in_cidr(&bad, &b));
    assert_false(netaddr_in_cidrs(list, 2, &u));
    assert_true(netaddr_same_host(&b, &c));          /* ports aside */
    assert_false(netaddr_same_host(&a, &b));
    assert_false(netaddr_same_host(&u, &u));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_forms),
        cmocka_unit_test(test_other_family),
        cmocka_unit_test(test_small_buffers),
        cmocka_unit_test(test_bytes_and_key),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_cidrs_and_same_host),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
