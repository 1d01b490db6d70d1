/* Unit tests for common/clock's stamp clock: the time a Raft leader stamps
 * on entries follows its wall clock, never its jumps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/clock.h"

#define T0 1700000000000ull /* a wall clock, ms */
#define HOUR 3600000ull

/* Stamps every 10 ms for @ms of monotonic time from @mono, the wall clock
 * @wall_at(mono) ahead of real time by @off: checks each stamp against the
 * one before; the last stamp. */
static uint64_t run(struct clock_stamp *s, uint64_t *mono, uint64_t ms,
                    int64_t off, uint64_t *prev)
{
    uint64_t end = *mono + ms;

    for (; *mono < end; *mono += 10) {
        uint64_t wall = (uint64_t)((int64_t)(T0 + *mono) + off);
        uint64_t t = clock_stamp_next(s, wall, *mono);

        /* never back; never more ahead than the slew of a base period */
        assert_true(t >= *prev);
        assert_true(*prev == 0 ||
                    t - *prev <= 10 + CLOCK_STAMP_REBASE_MS / 8 + 2);
        *prev = t;
    }
    return *prev;
}

static void test_follows_a_steady_wall(void **state)
{
    struct clock_stamp s = {0};
    uint64_t mono = 1000, prev;

    (void)state;
    prev = clock_stamp_next(&s, T0 + mono, mono);
    assert_int_equal(prev, T0 + 1000);
    run(&s, &mono, 5000, 0, &prev);
    assert_int_equal(prev, T0 + mono - 10);
}

/* The measured bug: the wall clock an hour ahead for a second, then back.
 * Stamps go on at about real time, so a 5 s TTL set during or after the
 * jump expires about 5 s later. */
static void test_a_jump_ahead_and_back_is_not_followed(void **state)
{
    struct clock_stamp s = {0};
    uint64_t mono = 1000, prev = 0;
    uint64_t before, after;

    (void)state;
    run(&s, &mono, 2000, 0, &prev);
    before = prev;
    run(&s, &mono, 1000, (int64_t)HOUR, &prev);
    assert_true(prev - before <=
                1000 + 1000 / 8 + CLOCK_STAMP_REBASE_MS / 8 + 10);
    run(&s, &mono, 5000, 0, &prev);
    after = prev;
    /* back on the wall clock, at most the slew ahead */
    assert_true(after >= T0 + mono - 10);
    assert_true(after <= T0 + mono + 1000 / 8);
}

/* A wall clock set an hour back: time keeps going (7/8 of real time at
 * least) instead of standing still for an hour, and slews to the wall. */
static void test_a_jump_back_keeps_time_going(void **state)
{
    struct clock_stamp s = {0};
    uint64_t mono = 1000, prev = 0;
    uint64_t before;

    (void)state;
    run(&s, &mono, 2000, 0, &prev);
    before = prev;
    run(&s, &mono, 8000, -(int64_t)HOUR, &prev);
    assert_true(prev - before >= 8000 - 8000 / 8 - 20);
    assert_true(prev - before <= 8000);
}

/* A wall clock an hour ahead for good is reached, at 9/8 of real time. */
static void test_slews_to_a_new_wall(void **state)
{
    struct clock_stamp s = {0};
    uint64_t mono = 1000, prev = 0;

    (void)state;
    run(&s, &mono, 1000, 0, &prev);
    run(&s, &mono, 10 * HOUR, (int64_t)HOUR, &prev);
    assert_true(prev + 10 >= T0 + mono + HOUR - 1000 / 8);
}

/* A new leader continues from the stamps it applied, whatever its own
 * wall clock says; its own stamps coming back change nothing. */
static void test_continues_from_stamps_seen(void **state)
{
    struct clock_stamp s = {0};
    uint64_t t;

    (void)state;
    clock_stamp_seen(&s, T0 + HOUR, 500);
    t = clock_stamp_next(&s, T0 + 600, 600); /* our wall: an hour behind */
    assert_int_equal(t, T0 + HOUR + 100 - 100 / 8);
    clock_stamp_seen(&s, T0 + 5, 700); /* older: ignored */
    t = clock_stamp_next(&s, T0 + 700, 700);
    assert_true(t >= T0 + HOUR + 100);
    clock_stamp_seen(&s, t, 800); /* our own: changes nothing */
    /* still from the base seen at 500: 400 ms later, at most 7/8 behind */
    assert_int_equal(clock_stamp_next(&s, T0 + HOUR + 300, 900),
                     T0 + HOUR + 400 - 400 / 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_follows_a_steady_wall),
        cmocka_unit_test(test_a_jump_ahead_and_back_is_not_followed),
        cmocka_unit_test(test_a_jump_back_keeps_time_going),
        cmocka_unit_test(test_slews_to_a_new_wall),
        cmocka_unit_test(test_continues_from_stamps_seen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
