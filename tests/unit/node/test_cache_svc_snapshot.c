/*
 * A cache shard's snapshots in slices (--snapshot-mode incremental, the
 * default) on a real single-member group: a cache of tens of MiB is
 * snapshotted while writes keep coming, no slice of the loop grows with
 * it, and the replica reopened from the snapshot and its log holds
 * exactly the state it had.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node/cache_svc.h"
#include "tests/unit/lib/svc_env.h"

#define WAIT_MS 60000
#define VALUE_LEN (8 << 10)
#define KEYS 6000 /* ~48 MiB of values */
#define WINDOW 64 /* writes in flight */

struct fx {
    struct svc_env env;
    struct cache_svc *svc;
    bool closed;
};

struct writer {
    struct cache_call calls[WINDOW];
    char keys[WINDOW][16];
    char value[VALUE_LEN];
    unsigned next, done, total;
    unsigned in_flight;
    struct cache_svc *svc;
};

static void write_next(struct writer *w, struct cache_call *c);

static void write_done(struct cache_call *c)
{
    struct writer *w = c->data;

    assert_int_equal(c->outcome, OUTCOME_OK);
    assert_int_equal(c->result.status, CACHE_STORED);
    cache_result_clear(&c->result);
    w->done++;
    w->in_flight--;
    if (w->next < w->total) {
        write_next(w, c);
    }
}

static void write_next(struct writer *w, struct cache_call *c)
{
    size_t slot = (size_t)(c - w->calls);
    unsigned i = w->next++;

    memset(c, 0, sizeof(*c));
    snprintf(w->keys[slot], sizeof(w->keys[slot]), "key%u", i % KEYS);
    /* a different value each time, so that the snapshot's bytes are not
     * all alike */
    memcpy(w->value, &i, sizeof(i));
    c->op.type = CACHE_OP_SET;
    c->op.key = w->keys[slot];
    c->op.key_len = strlen(w->keys[slot]);
    c->op.value = w->value;
    c->op.value_len = VALUE_LEN;
    c->cb = write_done;
    c->data = w;
    w->in_flight++;
    cache_svc_submit(w->svc, c);
}

static bool writes_done(void *arg)
{
    struct writer *w = arg;

    return w->done == w->total;
}

/* @n SETs, WINDOW at a time. */
static void write_many(struct fx *f, struct writer *w, unsigned n)
{
    unsigned i;

    w->svc = f->svc;
    w->total += n;
    for (i = 0; i < WINDOW && w->in_flight < WINDOW && w->next < w->total;
         i++) {
        write_next(w, &w->calls[i]);
    }
    assert_true(svc_env_run_until(&f->env, writes_done, w, WAIT_MS));
}

static bool svc_leads(void *arg)
{
    return cache_svc_is_leader(arg);
}

static void start(struct fx *f)
{
    struct rgroup_config g;
    struct cache_sm_config smc = {0};
    char err[256];

    smc.mem_limit = (uint64_t)96 << 20;
    svc_env_group(&f->env, &g, "s0", 0);
    g.incremental_snapshots = true;
    g.snapshot_threshold = 32; /* entries (batches of many writes) */
    g.snapshot_trailing = 16;
    f->svc = cache_svc_new(&f->env.loop, &g, &smc, false, err, sizeof(err));
    if (f->svc == NULL) {
        print_error("cache_svc_new: %s\n", err);
    }
    assert_non_null(f->svc);
    assert_true(svc_env_run_until(&f->env, svc_leads, f->svc, WAIT_MS));
}

static void closed_cb(void *data)
{
    ((struct fx *)data)->closed = true;
}

static bool is_closed(void *arg)
{
    return ((struct fx *)arg)->closed;
}

static void stop(struct fx *f)
{
    f->closed = false;
    cache_svc_close(f->svc, closed_cb, f);
    f->svc = NULL;
    assert_true(svc_env_run_until(&f->env, is_closed, f, WAIT_MS));
}

static bool sliced_snapshot_stored(void *arg)
{
    struct cache_svc_status st;

    cache_svc_status(arg, &st, false);
    return st.raft.snapshots_sliced >= 2;
}

static void test_large_cache_snapshots_in_slices(void **state)
{
    struct fx *f = *state;
    struct writer *w = calloc(1, sizeof(*w));
    struct cache_svc_status st;
    uint64_t digest;

    start(f);
    write_many(f, w, KEYS); /* fill */
    /* overwrite while snapshots of the full cache are written */
    while (!sliced_snapshot_stored(f->svc)) {
        write_many(f, w, 500);
    }
    cache_svc_status(f->svc, &st, true);
    print_message("    %llu items, %llu MiB; %llu snapshots in slices, the "
                  "longest slice %llu us (%llu us of CPU at most)\n",
                  (unsigned long long)st.sm.curr_items,
                  (unsigned long long)(st.sm.bytes >> 20),
                  (unsigned long long)st.raft.snapshots_sliced,
                  (unsigned long long)st.raft.snapshot_slice_max_us,
                  (unsigned long long)st.raft.snapshot_slice_cpu_max_us);
    assert_int_equal(st.sm.curr_items, KEYS);
    assert_true(st.raft.snapshots_sliced >= 2);
    /* 0.5 ms of work a slice whatever the state's size (a slice's wall
     * time also counts whatever else a busy machine ran meanwhile);
     * writing the ~47 MiB in one go takes 100 ms or more */
    assert_true(st.raft.snapshot_slice_cpu_max_us < 20000);
    digest = st.digest;
    stop(f);

    start(f); /* the last snapshot, then the log after it */
    cache_svc_status(f->svc, &st, true);
    assert_true(st.raft.snapshots_restored >= 1);
    assert_int_equal(st.digest, digest);
    stop(f);
    free(w);
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

    assert_int_equal(svc_env_close(&f->env), 0);
    free(f);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_large_cache_snapshots_in_slices,
                                        setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
