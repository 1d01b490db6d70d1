/* Unit tests for common/parse_num: whole-string decimals and sizes with
 * k/m/g suffixes, as flags, config files and ringmqctl take them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/parse_num.h"

static void test_u64(void **state)
{
    uint64_t v = 7;

    (void)state;
    assert_int_equal(parse_num_u64("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(parse_num_u64("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    v = 7;
    assert_int_equal(parse_num_u64("18446744073709551616", &v), -1);
    assert_int_equal(parse_num_u64("", &v), -1);
    assert_int_equal(parse_num_u64(NULL, &v), -1);
    assert_int_equal(parse_num_u64("-1", &v), -1);
    assert_int_equal(parse_num_u64("+1", &v), -1);
    assert_int_equal(parse_num_u64("12x", &v), -1);
    assert_int_equal(parse_num_u64("1 ", &v), -1);
    assert_int_equal(parse_num_u64(" 1", &v), -1);
    assert_int_equal(v, 7); /* untouched by failures */
}

static void test_size(void **state)
{
    uint64_t v = 7;

    (void)state;
    assert_int_equal(parse_num_size("1048576", &v), 0);
    assert_int_equal(v, 1048576);
    assert_int_equal(parse_num_size("64k", &v), 0);
    assert_int_equal(v, 64 * 1024);
    assert_int_equal(parse_num_size("2M", &v), 0);
    assert_int_equal(v, 2 * 1024 * 1024);
    assert_int_equal(parse_num_size("1g", &v), 0);
    assert_int_equal(v, 1024ULL * 1024 * 1024);
    v = 7;
    assert_int_equal(parse_num_size("k", &v), -1);
    assert_int_equal(parse_num_size("1t", &v), -1);
    assert_int_equal(parse_num_size("1kk", &v), -1);
    assert_int_equal(parse_num_size("17179869184g", &v), -1); /* overflow */
    assert_int_equal(parse_num_size("", &v), -1);
    assert_int_equal(parse_num_size("-1m", &v), -1);
    assert_int_equal(parse_num_size("123456789012345678901234567890123", &v),
                     -1);
    assert_int_equal(v, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_u64),
        cmocka_unit_test(test_size),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
