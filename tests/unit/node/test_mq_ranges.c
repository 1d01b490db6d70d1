/*
 * mq_ranges: the set of missing body ranges stays sorted and disjoint
 * through adds, subtractions (front, back, middle, whole, across several)
 * and drops; its file form round-trips and refuses anything that does not
 * check (a flipped byte, a cut, a count that lies, overlapping ranges).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node/mq_ranges.h"

static void assert_range(const struct mq_ranges *r, size_t i, uint32_t seg,
                         uint32_t off, uint32_t len)
{
    assert_true(i < r->n);
    assert_int_equal(r->v[i].seg, seg);
    assert_int_equal(r->v[i].off, off);
    assert_int_equal(r->v[i].len, len);
}

static void test_add_sorted(void **state)
{
    struct mq_ranges r = {0};

    (void)state;
    mq_ranges_add(&r, 3, 0, 100);
    mq_ranges_add(&r, 1, 500, 10);
    mq_ranges_add(&r, 1, 0, 100);
    mq_ranges_add(&r, 2, 0, 0); /* nothing */
    assert_int_equal(r.n, 3);
    assert_range(&r, 0, 1, 0, 100);
    assert_range(&r, 1, 1, 500, 10);
    assert_range(&r, 2, 3, 0, 100);
    assert_int_equal(mq_ranges_bytes(&r), 210);
    assert_null(mq_ranges_from(&r, 2, 0));
    assert_ptr_equal(mq_ranges_from(&r, 1, 100), &r.v[1]);
    assert_ptr_equal(mq_ranges_from(&r, 1, 99), &r.v[0]);
    assert_null(mq_ranges_from(&r, 1, 510));
    assert_true(mq_ranges_overlap(&r, 1, 90, 20));
    assert_false(mq_ranges_overlap(&r, 1, 100, 400));
    assert_true(mq_ranges_overlap(&r, 1, 100, 401));
    assert_false(mq_ranges_overlap(&r, 2, 0, 1000));
    mq_ranges_clear(&r);
    assert_int_equal(r.n, 0);
}

static void test_subtract(void **state)
{
    struct mq_ranges r = {0};

    (void)state;
    mq_ranges_add(&r, 1, 0, 1000);
    mq_ranges_add(&r, 2, 0, 1000);
    /* the front */
    assert_int_equal(mq_ranges_subtract(&r, 1, 0, 100), 0);
    assert_range(&r, 0, 1, 100, 900);
    /* the back */
    assert_int_equal(mq_ranges_subtract(&r, 1, 900, 500), 0);
    assert_range(&r, 0, 1, 100, 800);
    /* the middle: split, still in order before segment 2 */
    assert_int_equal(mq_ranges_subtract(&r, 1, 400, 100), 0);
    assert_int_equal(r.n, 3);
    assert_range(&r, 0, 1, 100, 300);
    assert_range(&r, 1, 1, 500, 400);
    assert_range(&r, 2, 2, 0, 1000);
    /* across both parts: the first goes whole, the second loses its
     * front */
    assert_int_equal(mq_ranges_subtract(&r, 1, 0, 600), 1);
    assert_int_equal(r.n, 2);
    assert_range(&r, 0, 1, 600, 300);
    /* nothing there */
    assert_int_equal(mq_ranges_subtract(&r, 3, 0, 600), 0);
    assert_int_equal(mq_ranges_subtract(&r, 1, 0, 600), 0);
    assert_int_equal(r.n, 2);
    /* whole */
    assert_int_equal(mq_ranges_subtract(&r, 2, 0, 1000), 1);
    assert_int_equal(r.n, 1);
    mq_ranges_drop_seg(&r, 1);
    assert_int_equal(r.n, 0);
    mq_ranges_clear(&r);
}

static void test_file_form(void **state)
{
    struct mq_ranges r = {0}, back = {0};
    unsigned char *buf;
    size_t len, i;

    (void)state;
    mq_ranges_add(&r, 7, 8, 1000);
    mq_ranges_add(&r, 9, 0, 4096);
    mq_ranges_encode(&r, &buf, &len);
    assert_int_equal(mq_ranges_decode(&back, buf, len), 0);
    assert_int_equal(back.n, 2);
    assert_range(&back, 0, 7, 8, 1000);
    assert_range(&back, 1, 9, 0, 4096);
    /* every byte matters */
    for (i = 0; i < len; i++) {
        buf[i] ^= 0x10;
        assert_int_equal(mq_ranges_decode(&back, buf, len), -1);
        assert_int_equal(back.n, 0);
        buf[i] ^= 0x10;
    }
    /* and every cut */
    for (i = 0; i < len; i++) {
        assert_int_equal(mq_ranges_decode(&back, buf, i), -1);
    }
    free(buf);
    /* an empty set */
    mq_ranges_clear(&r);
    mq_ranges_encode(&r, &buf, &len);
    assert_int_equal(mq_ranges_decode(&back, buf, len), 0);
    assert_int_equal(back.n, 0);
    free(buf);
    /* overlapping ranges, with a crc that checks: refused */
    r.v = calloc(2, sizeof(*r.v));
    r.n = r.cap = 2;
    r.v[0] = (struct mq_range){1, 0, 100};
    r.v[1] = (struct mq_range){1, 50, 100};
    mq_ranges_encode(&r, &buf, &len);
    assert_int_equal(mq_ranges_decode(&back, buf, len), -1);
    free(buf);
    mq_ranges_clear(&r);
    mq_ranges_clear(&back);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_sorted),
        cmocka_unit_test(test_subtract),
        cmocka_unit_test(test_file_form),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
