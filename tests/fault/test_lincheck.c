/*
 * lincheck on hand-made histories: what a linearizable register allows,
 * and the planted bugs the checker must catch (a lost write, a stale read,
 * a cas that saw what was not there).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "lincheck.h"

#define OP(p, fn, out, exp, val, c, r)                                      \
    {                                                                       \
        .process = (p), .f = (fn), .outcome = (out), .expect = (exp),       \
        .value = (val), .call = (c), .ret = (r)                             \
    }

static int check(const struct lc_op *ops, size_t n)
{
    struct lc_result res;

    return lc_check(ops, n, &res);
}

static void test_sequential(void **state)
{
    static const struct lc_op ops[] = {
        OP(0, LC_READ, LC_OK, 0, LC_NIL, 1, 2),
        OP(0, LC_WRITE, LC_OK, 0, 1, 3, 4),
        OP(0, LC_READ, LC_OK, 0, 1, 5, 6),
        OP(0, LC_CAS, LC_OK, 1, 2, 7, 8),
        OP(0, LC_CAS, LC_FAIL, 1, 3, 9, 10),
        OP(0, LC_READ, LC_OK, 0, 2, 11, 12),
    };

    (void)state;
    assert_int_equal(check(ops, 6), 1);
}

/* Concurrent operations may take effect in either order. */
static void test_concurrent(void **state)
{
    static const struct lc_op ops[] = {
        OP(0, LC_WRITE, LC_OK, 0, 1, 1, 10),
        OP(1, LC_WRITE, LC_OK, 0, 2, 2, 9),
        OP(2, LC_READ, LC_OK, 0, 1, 11, 12), /* 2 then 1 */
    };

    (void)state;
    assert_int_equal(check(ops, 3), 1);
}

/* A write acknowledged, then a read after it sees the old value. */
static void test_lost_write(void **state)
{
    static const struct lc_op ops[] = {
        OP(0, LC_WRITE, LC_OK, 0, 1, 1, 2),
        OP(0, LC_WRITE, LC_OK, 0, 2, 3, 4),
        OP(1, LC_READ, LC_OK, 0, 1, 5, 6),
    };
    struct lc_result res;

    (void)state;
    assert_int_equal(lc_check(ops, 3, &res), 0);
    assert_false(res.linearizable);
}

/* Two reads after a write: the second goes back in time. */
static void test_stale_read(void **state)
{
    static const struct lc_op ops[] = {
        OP(0, LC_WRITE, LC_OK, 0, 1, 1, 2),
        OP(1, LC_WRITE, LC_OK, 0, 2, 3, 8),
        OP(2, LC_READ, LC_OK, 0, 2, 4, 5),
        OP(3, LC_READ, LC_OK, 0, 1, 6, 7),
    };

    (void)state;
    assert_int_equal(check(ops, 4), 0);
}

/* A failed cas observed the value it names. */
static void test_cas_fail_observation(void **state)
{
    static const struct lc_op ops[] = {
        OP(0, LC_WRITE, LC_OK, 0, 1, 1, 2),
        OP(0, LC_CAS, LC_FAIL, 1, 5, 3, 4),
    };

    (void)state;
    assert_int_equal(check(ops, 2), 0);
}

/* Unknown outcomes: a timed-out write may have happened (the later read
 * sees it) or not (another read sees the old value); a failed read or
 * write did not happen. */
static void test_unknown_outcomes(void **state)
{
    static const struct lc_op happened[] = {
        OP(0, LC_WRITE, LC_OK, 0, 1, 1, 2),
        OP(1, LC_WRITE, LC_INFO, 0, 7, 3, 0),
        OP(2, LC_READ, LC_OK, 0, 7, 10, 11),
    };
    static const struct lc_op not_happened[] = {
        OP(0, LC_WRITE, LC_OK, 0, 1, 1, 2),
        OP(1, LC_WRITE, LC_INFO, 0, 7, 3, 0),
        OP(2, LC_READ, LC_OK, 0, 1, 10, 11),
    };
    static const struct lc_op failed_write[] = {
        OP(0, LC_WRITE, LC_OK, 0, 1, 1, 2),
        OP(1, LC_WRITE, LC_FAIL, 0, 7, 3, 4),
        OP(2, LC_READ, LC_OK, 0, 7, 10, 11),
    };

    (void)state;
    assert_int_equal(check(happened, 3), 1);
    assert_int_equal(check(not_happened, 3), 1);
    assert_int_equal(check(failed_write, 3), 0);
}

static void test_parse_jepsen(void **state)
{
    static const char log[] =
        "INFO  jepsen.util - 3\t:invoke\t:read\tnil\n"
        "INFO  jepsen.util - 3\t:ok\t:read\tnil\n"
        "INFO  jepsen.util - 1 :invoke :cas [0 4]\n"
        "INFO  jepsen.util - 1 :fail :cas [0 4]\n"
        "INFO  jepsen.util - 0\t:invoke\t:write\t2\n"
        "INFO  jepsen.util - 0\t:info\t:write\t:timed-out\n"
        "a line that is not an event\n";
    struct lc_op *ops;
    size_t n;
    char err[128];

    (void)state;
    assert_int_equal(lc_parse_jepsen_log(log, &ops, &n, err, sizeof(err)),
                     0);
    assert_int_equal(n, 3);
    assert_int_equal(ops[0].f, LC_READ);
    assert_true(ops[0].value == LC_NIL);
    assert_int_equal(ops[1].f, LC_CAS);
    assert_int_equal(ops[1].outcome, LC_FAIL);
    assert_int_equal(ops[1].expect, 0);
    assert_int_equal(ops[1].value, 4);
    assert_int_equal(ops[2].outcome, LC_INFO);
    assert_int_equal(check(ops, n), 1);
    free(ops);
    assert_int_equal(lc_parse_jepsen_log("INFO  jepsen.util - 1\t:ok\t:read\t1\n",
                                         &ops, &n, err, sizeof(err)),
                     -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequential),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_lost_write),
        cmocka_unit_test(test_stale_read),
        cmocka_unit_test(test_cas_fail_observation),
        cmocka_unit_test(test_unknown_outcomes),
        cmocka_unit_test(test_parse_jepsen),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
