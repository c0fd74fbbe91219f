/*
 * test_sbuf.c - proxy/sbuf.c: a byte queue that holds memory only while
 * it holds bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sbuf.h"

static void test_append_consume(void **state)
{
    struct sbuf b = {0};

    (void)state;
    assert_int_equal(sbuf_append(&b, "hello ", 6), 0);
    assert_int_equal(sbuf_append(&b, "world", 5), 0);
    assert_int_equal(b.len, 11);
    assert_memory_equal(sbuf_ptr(&b), "hello world", 11);
    sbuf_consume(&b, 6);
    assert_int_equal(b.len, 5);
    assert_memory_equal(sbuf_ptr(&b), "world", 5);
    assert_non_null(b.data);
    sbuf_consume(&b, 5);              /* the last byte frees it */
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.off, 0);
}

static void test_empty_holds_nothing(void **state)
{
    struct sbuf b = {0};

    (void)state;
    assert_int_equal(sbuf_append(&b, "x", 0), 0);
    assert_null(b.data);              /* nothing appended, nothing held */
    assert_int_equal(sbuf_append(&b, "abc", 3), 0);
    sbuf_consume(&b, 99);             /* more than it holds: all of it */
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    sbuf_free(&b);                    /* free of an empty one is fine */
    sbuf_free(&b);
    assert_null(b.data);
}

/* appending after a consume moves the unread bytes to the front before
 * it grows: a queue read as fast as it is filled stays at its size */
static void test_compaction(void **state)
{
    struct sbuf b = {0};
    char chunk[1000];
    size_t cap;

    (void)state;
    memset(chunk, 'a', sizeof chunk);
    assert_int_equal(sbuf_append(&b, chunk, sizeof chunk), 0);
    cap = b.cap;
    assert_int_equal(cap, 4096);
    for (int i = 0; i < 1000; i++) {
        chunk[0] = (char)('A' + i % 26);
        assert_int_equal(sbuf_append(&b, chunk, sizeof chunk), 0);
        sbuf_consume(&b, sizeof chunk);
        assert_int_equal(b.len, sizeof chunk);
        assert_int_equal(b.cap, cap);
        assert_int_equal(sbuf_ptr(&b)[0], 'A' + i % 26);
    }
    sbuf_free(&b);
}

static void test_growth(void **state)
{
    struct sbuf b = {0};
    static char big[100000];

    (void)state;
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 7);
    assert_int_equal(sbuf_append(&b, big, 10), 0);
    assert_int_equal(b.cap, 4096);
    assert_int_equal(sbuf_append(&b, big + 10, sizeof big - 10), 0);
    assert_int_equal(b.len, sizeof big);
    assert_int_equal(b.cap, 131072);  /* doubled until it fits */
    assert_memory_equal(sbuf_ptr(&b), big, sizeof big);
    sbuf_consume(&b, 50000);
    assert_memory_equal(sbuf_ptr(&b), big + 50000, sizeof big - 50000);
    sbuf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_consume),
        cmocka_unit_test(test_empty_holds_nothing),
        cmocka_unit_test(test_compaction),
        cmocka_unit_test(test_growth),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
