/*
 * meta_fanout: a meta change is answered once every router knows it, or
 * after the bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <uv.h>

#include "node/meta_fanout.h"

struct done {
    int calls;
    bool timed_out;
};

static void on_done(struct meta_fanout_wait *w, bool timed_out)
{
    struct done *d = w->data;

    d->calls++;
    d->timed_out = timed_out;
}

static void run_ms(uv_loop_t *loop, unsigned ms)
{
    uint64_t until = uv_now(loop) + ms;

    while (uv_now(loop) < until) {
        uv_run(loop, UV_RUN_ONCE);
    }
}

static void test_waits_for_every_router(void **state)
{
    uv_loop_t loop;
    struct meta_fanout *f;
    struct meta_fanout_park a;
    struct meta_fanout_park b;
    struct meta_fanout_wait w = {0};
    struct done d = {0};
    uv_timer_t keep;

    (void)state;
    uv_loop_init(&loop);
    uv_timer_init(&loop, &keep);
    f = meta_fanout_new(&loop, 2000, 1000);
    /* two routers parked at version 3 */
    meta_fanout_request(f);
    meta_fanout_park(f, &a, 3);
    meta_fanout_request(f);
    meta_fanout_park(f, &b, 3);
    /* version 4 committed: both are answered, then re-arm one by one */
    w.version = 4;
    w.cb = on_done;
    w.data = &d;
    meta_fanout_wait(f, &w);
    assert_int_equal(d.calls, 0);
    meta_fanout_unpark(f, &a);
    meta_fanout_answered(f);
    meta_fanout_unpark(f, &b);
    meta_fanout_answered(f);
    assert_int_equal(d.calls, 0);
    meta_fanout_request(f);
    meta_fanout_park(f, &a, 4);
    assert_int_equal(d.calls, 0); /* b has not come back yet */
    meta_fanout_request(f);
    meta_fanout_park(f, &b, 4);
    assert_int_equal(d.calls, 1);
    assert_false(d.timed_out);

    /* nobody watching: at once */
    meta_fanout_unpark(f, &a);
    meta_fanout_unpark(f, &b);
    d.calls = 0;
    w.version = 5;
    meta_fanout_wait(f, &w);
    assert_int_equal(d.calls, 1);
    assert_false(d.timed_out);

    /* a router answered and gone: forgotten after answer_ttl (1 s) */
    meta_fanout_answered(f);
    d.calls = 0;
    w.version = 6;
    meta_fanout_wait(f, &w);
    assert_int_equal(d.calls, 0);
    run_ms(&loop, 1100);
    assert_int_equal(d.calls, 1);
    assert_false(d.timed_out);

    /* a parked router that never learns: the bound (2 s) */
    meta_fanout_park(f, &a, 1);
    d.calls = 0;
    w.version = 7;
    meta_fanout_wait(f, &w);
    run_ms(&loop, 2100);
    assert_int_equal(d.calls, 1);
    assert_true(d.timed_out);
    meta_fanout_unpark(f, &a);

    /* close completes what waits */
    meta_fanout_park(f, &a, 1);
    d.calls = 0;
    meta_fanout_wait(f, &w);
    meta_fanout_unpark(f, &a);
    meta_fanout_close(f);
    assert_int_equal(d.calls, 1);
    uv_close((uv_handle_t *)&keep, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waits_for_every_router),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
