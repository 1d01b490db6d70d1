/*
 * meta_fanout: a meta change is answered once no router can route on an
 * older view: every router heard from knows it or its lease ran out, and
 * never before a new term's grace.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include <uv.h>

#include "node/meta_fanout.h"

#define LEASE 400    /* ms: the lapse is 400 + 50 + 100 */
#define LAPSE 550
#define ELECTION 100 /* ms: the grace is 100 + 550 */
#define GRACE 650
#define MARGIN 150   /* ms either side of a bound: a loaded machine lags */

struct done {
    int calls;
    enum meta_fanout_end end;
};

static void on_done(struct meta_fanout_wait *w, enum meta_fanout_end end)
{
    struct done *d = w->data;

    d->calls++;
    d->end = end;
}

struct fx {
    uv_loop_t loop;
    struct meta_fanout *f;
    struct meta_fanout_wait w;
    struct done d;
};

static void on_keep(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop for @ms (a timer keeps it from spinning idle). */
static void run_ms(uv_loop_t *loop, unsigned ms)
{
    uv_timer_t keep;
    uint64_t until;

    uv_update_time(loop);
    until = uv_now(loop) + ms;
    uv_timer_init(loop, &keep);
    uv_timer_start(&keep, on_keep, 5, 5);
    while (uv_now(loop) < until) {
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&keep, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof(*x));

    uv_loop_init(&x->loop);
    x->f = meta_fanout_new(&x->loop, LEASE, ELECTION);
    x->w.cb = on_done;
    x->w.data = &x->d;
    meta_fanout_term(x->f, 1);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;

    meta_fanout_close(x->f);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&x->loop), 0);
    free(x);
    return 0;
}

static void wait_for(struct fx *x, uint64_t version)
{
    x->d.calls = 0;
    x->w.version = version;
    meta_fanout_wait(x->f, &x->w);
}

/* A watch of @router knowing @known arrives and is answered at once. */
static void watch(struct fx *x, uint64_t router, uint64_t known)
{
    uint64_t now = uv_now(&x->loop);

    meta_fanout_request(x->f, router, known);
    meta_fanout_answered(x->f, router, now);
}

/* A new term: nothing is answered before its grace, even with nobody
 * watching (a router may hold a lease from the previous leader). */
static void test_new_term_grace(void **state)
{
    struct fx *x = *state;

    wait_for(x, 5);
    assert_int_equal(x->d.calls, 0);
    run_ms(&x->loop, GRACE - MARGIN);
    assert_int_equal(x->d.calls, 0);
    run_ms(&x->loop, 2 * MARGIN);
    assert_int_equal(x->d.calls, 1);
    assert_int_equal(x->d.end, META_FANOUT_KNOWN);

    /* after the grace, with nobody watching: at once */
    wait_for(x, 6);
    assert_int_equal(x->d.calls, 1);
}

/* Routers are told apart by id: one router's watches cannot stand in for
 * another's (the counting of anonymous answers let them). */
static void test_each_router_counts(void **state)
{
    struct fx *x = *state;

    run_ms(&x->loop, GRACE);
    watch(x, 11, 3);
    watch(x, 22, 3);
    wait_for(x, 4);
    assert_int_equal(x->d.calls, 0);
    /* router 11 learns 4 and keeps watching; 22 says nothing more */
    watch(x, 11, 4);
    watch(x, 11, 4);
    watch(x, 11, 4);
    assert_int_equal(x->d.calls, 0);
    watch(x, 22, 4);
    assert_int_equal(x->d.calls, 1);
    assert_int_equal(x->d.end, META_FANOUT_KNOWN);
    assert_int_equal(meta_fanout_routers(x->f), 2);
}

/* A router cut off after its last answer is waited for until its lease
 * has run out here, and not longer; one that keeps being answered without
 * learning the version (its answers lost) is waited for until the bound. */
static void test_lease_runs_out(void **state)
{
    struct fx *x = *state;

    run_ms(&x->loop, GRACE);
    watch(x, 11, 3);
    run_ms(&x->loop, 100);
    wait_for(x, 4);
    run_ms(&x->loop, LAPSE - 100 - MARGIN);
    assert_int_equal(x->d.calls, 0);
    run_ms(&x->loop, 2 * MARGIN);
    assert_int_equal(x->d.calls, 1);
    assert_int_equal(x->d.end, META_FANOUT_KNOWN); /* 11 is out */

    watch(x, 22, 4);
    wait_for(x, 5);
    run_ms(&x->loop, 100);
    watch(x, 22, 4); /* answered, still at 4 */
    run_ms(&x->loop, LAPSE - 100 - MARGIN);
    assert_int_equal(x->d.calls, 0);
    run_ms(&x->loop, 2 * MARGIN);
    assert_int_equal(x->d.calls, 1);
    assert_int_equal(x->d.end, META_FANOUT_LAPSED);
}

/* A watch that is not a router's (id 0) is not waited for; a new term
 * forgets the routers of the last one. */
static void test_not_routers_and_terms(void **state)
{
    struct fx *x = *state;

    run_ms(&x->loop, GRACE);
    watch(x, 0, 1);
    wait_for(x, 2);
    assert_int_equal(x->d.calls, 1);

    watch(x, 11, 1);
    assert_int_equal(meta_fanout_routers(x->f), 1);
    meta_fanout_term(x->f, 2);
    assert_int_equal(meta_fanout_routers(x->f), 0);
    wait_for(x, 3);
    assert_int_equal(x->d.calls, 0); /* the new term's grace */
    run_ms(&x->loop, GRACE + MARGIN);
    assert_int_equal(x->d.calls, 1);
}

/* Close ends what waits, as closed. */
static void test_close(void **state)
{
    struct fx *x = *state;

    watch(x, 11, 1);
    wait_for(x, 2);
    assert_int_equal(x->d.calls, 0);
    meta_fanout_close(x->f);
    assert_int_equal(x->d.calls, 1);
    assert_int_equal(x->d.end, META_FANOUT_CLOSED);
    x->f = meta_fanout_new(&x->loop, LEASE, ELECTION); /* for teardown */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_term_grace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_router_counts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_lease_runs_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_routers_and_terms, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
