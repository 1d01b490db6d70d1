/*
 * watermark: memory and disk limits, caching.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "common/watermark.h"

static void test_limits(void **state)
{
    struct watermark w;

    (void)state;
    /* generous limits: not exceeded */
    watermark_init(&w, 1ull << 50, 1, "/");
    assert_false(watermark_exceeded(&w, 1000));
    /* a memory limit below any real process */
    watermark_init(&w, 4096, 1, "/");
    assert_true(watermark_exceeded(&w, 1000));
    assert_non_null(strstr(w.why, "memory"));
    /* a disk limit no disk meets */
    watermark_init(&w, 1ull << 50, 1ull << 62, "/");
    assert_true(watermark_exceeded(&w, 1000));
    assert_non_null(strstr(w.why, "disk"));
    /* cached for WATERMARK_RECHECK_MS, then read again */
    w.disk_free_limit = 1;
    assert_true(watermark_exceeded(&w, 1000 + WATERMARK_RECHECK_MS - 1));
    assert_false(watermark_exceeded(&w, 1000 + WATERMARK_RECHECK_MS));
    /* a path that does not exist is not a reason to block */
    watermark_init(&w, 1ull << 50, 1ull << 62, "/nonexistent/x");
    assert_false(watermark_exceeded(&w, 1));
    /* defaults: 40% of RAM, 50 MB */
    watermark_init(&w, 0, 0, "");
    assert_true(w.memory_limit > 0);
    assert_int_equal(w.disk_free_limit, WATERMARK_DISK_FREE_DEFAULT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
