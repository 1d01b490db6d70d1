/*
 * cache_svc read modes on a real single-member group: "leader" reads come
 * from the leader's state without a log entry; "linearizable" reads are
 * ordered in the log and answered by the proposer's apply, batched with
 * writes (docs/consistency.md).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/svc_env.h"
#include "node/cache_svc.h"

#define WAIT_MS 10000

struct fx {
    struct svc_env env;
    struct cache_svc *svc;
    bool closed;
};

struct call {
    struct cache_call c;
    bool done;
};

static void call_done(struct cache_call *c)
{
    ((struct call *)c->data)->done = true;
}

static bool call_is_done(void *arg)
{
    return ((struct call *)arg)->done;
}

static bool svc_leads(void *arg)
{
    return cache_svc_is_leader(arg);
}

static void start(struct fx *f, bool linearizable)
{
    struct rgroup_config g;
    struct cache_sm_config smc = {0};
    char err[256];

    smc.mem_limit = 8 << 20;
    smc.item_size_max = 1 << 20;
    svc_env_group(&f->env, &g, "s0", 0);
    f->svc = cache_svc_new(&f->env.loop, &g, &smc, linearizable, err,
                           sizeof(err));
    if (f->svc == NULL) {
        print_error("cache_svc_new: %s\n", err);
    }
    assert_non_null(f->svc);
    assert_true(svc_env_run_until(&f->env, svc_leads, f->svc, WAIT_MS));
}

static void prepare(struct call *c, enum cache_op_type type, const char *key,
                    const char *value)
{
    memset(c, 0, sizeof(*c));
    c->c.op.type = type;
    c->c.op.key = key;
    c->c.op.key_len = strlen(key);
    c->c.op.value = value;
    c->c.op.value_len = value ? strlen(value) : 0;
    c->c.cb = call_done;
    c->c.data = c;
}

/* Submit and wait; returns the status (the caller clears the result). */
static enum cache_status run(struct fx *f, struct call *c)
{
    cache_svc_submit(f->svc, &c->c);
    assert_true(svc_env_run_until(&f->env, call_is_done, c, WAIT_MS));
    return c->c.result.status;
}

static uint64_t cmds_proposed(struct fx *f)
{
    struct cache_svc_status st;

    cache_svc_status(f->svc, &st, false);
    return st.raft.cmds_proposed;
}

static void closed_cb(void *data)
{
    ((struct fx *)data)->closed = true;
}

static bool is_closed(void *arg)
{
    return ((struct fx *)arg)->closed;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    assert_int_equal(svc_env_init(&f->env), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    if (f->svc != NULL) {
        cache_svc_close(f->svc, closed_cb, f);
        assert_true(svc_env_run_until(&f->env, is_closed, f, WAIT_MS));
    }
    assert_int_equal(svc_env_close(&f->env), 0);
    free(f);
    return 0;
}

static void set_then_get(struct fx *f, bool linearizable)
{
    struct call c;
    uint64_t before;

    start(f, linearizable);
    prepare(&c, CACHE_OP_SET, "k", "v1");
    assert_int_equal(run(f, &c), CACHE_STORED);
    before = cmds_proposed(f);

    prepare(&c, CACHE_OP_GET, "k", NULL);
    assert_int_equal(run(f, &c), CACHE_HIT);
    assert_int_equal(c.c.result.value_len, 2);
    assert_memory_equal(c.c.result.value, "v1", 2);
    assert_true(c.c.result.cas != 0);
    cache_result_clear(&c.c.result);

    prepare(&c, CACHE_OP_GET, "missing", NULL);
    assert_int_equal(run(f, &c), CACHE_NOT_FOUND);
    /* Only linearizable reads take a place in the log. */
    assert_int_equal(cmds_proposed(f) - before, linearizable ? 2 : 0);
}

static void leader_reads_skip_the_log(void **state)
{
    set_then_get(*state, false);
}

static void linearizable_reads_go_through_the_log(void **state)
{
    set_then_get(*state, true);
}

/* Reads and writes submitted together share entries and each read sees
 * exactly the writes submitted before it (submission order is log order). */
static void linearizable_reads_batch_with_writes(void **state)
{
    struct fx *f = *state;
    struct call calls[6];
    struct cache_svc_status st;
    uint64_t batches;
    int i;

    start(f, true);
    cache_svc_status(f->svc, &st, false);
    batches = st.raft.batches_proposed;
    prepare(&calls[0], CACHE_OP_GET, "b", NULL);
    prepare(&calls[1], CACHE_OP_SET, "b", "one");
    prepare(&calls[2], CACHE_OP_GET, "b", NULL);
    prepare(&calls[3], CACHE_OP_SET, "b", "two");
    prepare(&calls[4], CACHE_OP_GET, "b", NULL);
    prepare(&calls[5], CACHE_OP_GET, "a", NULL);
    for (i = 0; i < 6; i++) {
        cache_svc_submit(f->svc, &calls[i].c);
    }
    for (i = 0; i < 6; i++) {
        assert_true(svc_env_run_until(&f->env, call_is_done, &calls[i],
                                      WAIT_MS));
    }
    assert_int_equal(calls[0].c.result.status, CACHE_NOT_FOUND);
    assert_int_equal(calls[2].c.result.status, CACHE_HIT);
    assert_memory_equal(calls[2].c.result.value, "one", 3);
    assert_int_equal(calls[4].c.result.status, CACHE_HIT);
    assert_memory_equal(calls[4].c.result.value, "two", 3);
    assert_int_equal(calls[5].c.result.status, CACHE_NOT_FOUND);
    cache_svc_status(f->svc, &st, false);
    assert_true(st.raft.batches_proposed - batches < 6);
    for (i = 0; i < 6; i++) {
        cache_result_clear(&calls[i].c.result);
    }
}

/* A read through the log leaves the state (its digest) as it was, so the
 * replicas that skip it stay alike. */
static void linearizable_reads_change_nothing(void **state)
{
    struct fx *f = *state;
    struct cache_svc_status st;
    struct call c;
    uint64_t digest;

    start(f, true);
    prepare(&c, CACHE_OP_SET, "d", "x");
    assert_int_equal(run(f, &c), CACHE_STORED);
    cache_svc_status(f->svc, &st, true);
    digest = st.digest;
    prepare(&c, CACHE_OP_GET, "d", NULL);
    assert_int_equal(run(f, &c), CACHE_HIT);
    cache_result_clear(&c.c.result);
    cache_svc_status(f->svc, &st, true);
    assert_int_equal(st.digest, digest);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(leader_reads_skip_the_log, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(linearizable_reads_go_through_the_log,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(linearizable_reads_batch_with_writes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(linearizable_reads_change_nothing,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
