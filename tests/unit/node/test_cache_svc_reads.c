/*
 * cache_svc read modes on a real single-member group: "leader" reads come
 * from the leader's state without a log entry; "linearizable" reads are
 * ordered in the log and answered by the proposer's apply, batched with
 * writes (docs/consistency.md). A three-member group in the same loop shows
 * what each mode does when the leader is cut off from its majority.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "tests/unit/lib/svc_env.h"
#include "node/cache_svc.h"

#define WAIT_MS 10000
#define PEERS 3

struct fx {
    struct svc_env env;
    struct cache_svc *svc;         /* the single-member group, or NULL */
    struct cache_svc *peer[PEERS]; /* the three-member group, or NULLs */
    char peer_dir[PEERS][128];
    unsigned closing; /* cache_svc_close calls not yet called back */
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

static bool svc_follows(void *arg)
{
    return !cache_svc_is_leader(arg);
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
    ((struct fx *)data)->closing--;
}

static bool all_closed(void *arg)
{
    return ((struct fx *)arg)->closing == 0;
}

static void close_svc(struct fx *f, struct cache_svc **svc)
{
    if (*svc != NULL) {
        f->closing++;
        cache_svc_close(*svc, closed_cb, f);
        *svc = NULL;
    }
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
    unsigned i;

    close_svc(f, &f->svc);
    for (i = 0; i < PEERS; i++) {
        close_svc(f, &f->peer[i]);
    }
    assert_true(svc_env_run_until(&f->env, all_closed, f, WAIT_MS));
    assert_int_equal(svc_env_close(&f->env), 0);
    free(f);
    return 0;
}

static uint64_t batches_proposed(struct fx *f)
{
    struct cache_svc_status st;

    cache_svc_status(f->svc, &st, false);
    return st.raft.batches_proposed;
}

static void set_then_get(struct fx *f, bool linearizable)
{
    struct call c;
    uint64_t before;
    uint64_t batches;

    start(f, linearizable);
    prepare(&c, CACHE_OP_SET, "k", "v1");
    assert_int_equal(run(f, &c), CACHE_STORED);
    before = cmds_proposed(f);
    batches = batches_proposed(f);

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
    assert_int_equal(batches_proposed(f) - batches, linearizable ? 2 : 0);
}

/* A write sent again with its request id (a router's retry) gets the
 * first answer; once applied, the leader answers it without the log. */
static void prepare_incr_with_id(struct call *c)
{
    prepare(c, CACHE_OP_INCR, "n", NULL);
    c->c.op.delta = 5;
    c->c.op.client_id = 77;
    c->c.op.seq = 1;
}

static void repeated_write_answered_once(void **state)
{
    struct fx *f = *state;
    struct call c;
    uint64_t before;

    start(f, false);
    prepare(&c, CACHE_OP_SET, "n", "10");
    assert_int_equal(run(f, &c), CACHE_STORED);
    prepare_incr_with_id(&c);
    assert_int_equal(run(f, &c), CACHE_NUMBER);
    assert_int_equal(c.c.result.number, 15);
    before = cmds_proposed(f);

    prepare_incr_with_id(&c);
    assert_int_equal(run(f, &c), CACHE_NUMBER);
    assert_int_equal(c.c.result.number, 15);
    assert_int_equal(cmds_proposed(f), before);

    prepare(&c, CACHE_OP_GET, "n", NULL);
    assert_int_equal(run(f, &c), CACHE_HIT);
    assert_memory_equal(c.c.result.value, "15", 2);
    cache_result_clear(&c.c.result);
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

/* A multi-key get (get/gets a b c ...) reaches cache_svc as one GET per key,
 * submitted together: in linearizable mode they all go through the log,
 * share entries, and each answers its own key with the cas of its store. */
static void linearizable_multi_get(void **state)
{
    struct fx *f = *state;
    static const char *keys[] = {"ma", "mb", "mc", "ma", "md"};
    static const char *want[] = {"1", "22", NULL, "1", NULL};
    enum { NKEYS = sizeof(keys) / sizeof(keys[0]) };
    struct call calls[NKEYS];
    struct call c;
    uint64_t cas_a;
    uint64_t cas_b;
    uint64_t cmds;
    uint64_t batches;
    unsigned i;

    start(f, true);
    prepare(&c, CACHE_OP_SET, "ma", "1");
    assert_int_equal(run(f, &c), CACHE_STORED);
    cas_a = c.c.result.cas;
    prepare(&c, CACHE_OP_SET, "mb", "22");
    assert_int_equal(run(f, &c), CACHE_STORED);
    cas_b = c.c.result.cas;
    assert_true(cas_a != 0 && cas_b != 0 && cas_a != cas_b);
    cmds = cmds_proposed(f);
    batches = batches_proposed(f);

    for (i = 0; i < NKEYS; i++) {
        prepare(&calls[i], CACHE_OP_GET, keys[i], NULL);
        cache_svc_submit(f->svc, &calls[i].c);
        /* Nothing is answered before its entry commits. */
        assert_false(calls[i].done);
    }
    for (i = 0; i < NKEYS; i++) {
        assert_true(svc_env_run_until(&f->env, call_is_done, &calls[i],
                                      WAIT_MS));
    }
    for (i = 0; i < NKEYS; i++) {
        struct cache_result *r = &calls[i].c.result;

        if (want[i] == NULL) {
            assert_int_equal(r->status, CACHE_NOT_FOUND);
        } else {
            assert_int_equal(r->status, CACHE_HIT);
            assert_int_equal(r->value_len, strlen(want[i]));
            assert_memory_equal(r->value, want[i], r->value_len);
            assert_int_equal(r->cas, keys[i][1] == 'a' ? cas_a : cas_b);
        }
        cache_result_clear(r);
    }
    assert_int_equal(cmds_proposed(f) - cmds, NKEYS);
    assert_true(batches_proposed(f) - batches >= 1);
    assert_true(batches_proposed(f) - batches < NKEYS);
}

/* memcached stats names the mode, and costs O(1): no digest of the whole
 * cache (ringmqctl digest asks for that over RPC). */
static void stats_name_the_read_mode(void **state)
{
    struct fx *f = *state;
    struct buf out;
    unsigned i;

    for (i = 0; i < 2; i++) {
        bool linearizable = i == 1;

        start(f, linearizable);
        buf_init(&out);
        cache_svc_stats(f->svc, &out);
        buf_append(&out, "", 1);
        assert_non_null(strstr(out.data,
                               linearizable
                                   ? "STAT ringmq_read_mode linearizable\r\n"
                                   : "STAT ringmq_read_mode leader\r\n"));
        assert_null(strstr(out.data, "digest"));
        buf_free(&out);
        close_svc(f, &f->svc);
        assert_true(svc_env_run_until(&f->env, all_closed, f, WAIT_MS));
    }
}

/* ---- three members ----------------------------------------------------- */

static bool peers_have_leader(void *arg)
{
    struct fx *f = arg;
    unsigned i;

    for (i = 0; i < PEERS; i++) {
        if (f->peer[i] != NULL && cache_svc_is_leader(f->peer[i])) {
            return true;
        }
    }
    return false;
}

static int peer_leader(struct fx *f)
{
    unsigned i;

    for (i = 0; i < PEERS; i++) {
        if (f->peer[i] != NULL && cache_svc_is_leader(f->peer[i])) {
            return (int)i;
        }
    }
    return -1;
}

/* Three members on 127.0.0.1, one loop. A long election timeout leaves a
 * wide window in which a leader cut off from its majority still leads. */
static int start_peers_seeded(struct fx *f, bool linearizable,
                              bool own_flags)
{
    struct cache_sm_config smc = {0};
    char err[256];
    unsigned i;
    unsigned m;
    int l;

    smc.mem_limit = 8 << 20;
    smc.item_size_max = 1 << 20;
    for (i = 0; i < PEERS; i++) {
        struct rgroup_config g;

        if (own_flags) { /* peer i was started with -m i+1, -I 16+i k */
            smc.mem_limit = (uint64_t)(i + 1) << 20;
            smc.item_size_max = (16 + i) << 10;
        }
        svc_env_group(&f->env, &g, "p", 0);
        snprintf(f->peer_dir[i], sizeof(f->peer_dir[i]), "%s/p%u",
                 f->env.root, i + 1);
        g.dir = f->peer_dir[i];
        g.id = i + 1;
        g.n_members = PEERS;
        for (m = 0; m < PEERS; m++) {
            g.members[m].id = m + 1;
            snprintf(g.members[m].raft_address,
                     sizeof(g.members[m].raft_address), "127.0.0.1:%u",
                     f->env.port0 + m);
        }
        g.election_ms = 2000;
        g.heartbeat_ms = 50;
        f->peer[i] = cache_svc_new(&f->env.loop, &g, &smc, linearizable, err,
                                   sizeof(err));
        if (f->peer[i] == NULL) {
            print_error("cache_svc_new: %s\n", err);
        }
        assert_non_null(f->peer[i]);
    }
    assert_true(svc_env_run_until(&f->env, peers_have_leader, f, 4 * WAIT_MS));
    l = peer_leader(f);
    assert_true(l >= 0);
    return l;
}

static int start_peers(struct fx *f, bool linearizable)
{
    return start_peers_seeded(f, linearizable, false);
}

static enum outcome run_outcome(struct fx *f, struct cache_svc *svc,
                                struct call *c)
{
    cache_svc_submit(svc, &c->c);
    assert_true(svc_env_run_until(&f->env, call_is_done, c, 2 * WAIT_MS));
    return c->c.outcome;
}

/* The cache's answer to an op the service must get applied. */
static enum cache_status run_on(struct fx *f, struct cache_svc *svc,
                                struct call *c)
{
    assert_int_equal(run_outcome(f, svc, c), OUTCOME_OK);
    return c->c.result.status;
}

struct applied_want {
    struct fx *f;
    uint64_t index;
};

static bool peers_applied(void *arg)
{
    struct applied_want *w = arg;
    struct cache_svc_status st;
    unsigned i;

    for (i = 0; i < PEERS; i++) {
        cache_svc_status(w->f->peer[i], &st, false);
        if (st.raft.last_applied < w->index) {
            return false;
        }
    }
    return true;
}

#define FLAG_WRITES 3000

static bool all_done(void *arg)
{
    struct call *calls = arg;
    unsigned i;

    for (i = 0; i < FLAG_WRITES; i++) {
        if (!calls[i].done) {
            return false;
        }
    }
    return true;
}

/* Replicas whose nodes run with other -m and -I (a rolling flag change)
 * apply the same log the same way: the settings come from the log, seeded
 * once by the first leader's flags, so 3 MB of writes over a limit of one
 * to three MiB evict the same items everywhere (equal digests, equal
 * settings). Before, each replica evicted by its own flag. */
static void replicas_with_other_flags_stay_alike(void **state)
{
    struct fx *f = *state;
    static struct call calls[FLAG_WRITES];
    static char keys[FLAG_WRITES][16];
    static char value[1025];
    struct applied_want w = {.f = f};
    struct cache_svc_status lead;
    struct cache_svc_status st;
    unsigned i;
    int l;

    l = start_peers_seeded(f, false, true);
    memset(value, 'v', sizeof(value) - 1);
    for (i = 0; i < FLAG_WRITES; i++) {
        snprintf(keys[i], sizeof(keys[i]), "key%u", i);
        prepare(&calls[i], CACHE_OP_SET, keys[i], value);
        cache_svc_submit(f->peer[l], &calls[i].c);
    }
    assert_true(svc_env_run_until(&f->env, all_done, calls, 10 * WAIT_MS));
    for (i = 0; i < FLAG_WRITES; i++) {
        assert_int_equal(calls[i].c.outcome, OUTCOME_OK);
        assert_int_equal(calls[i].c.result.status, CACHE_STORED);
    }
    cache_svc_status(f->peer[l], &lead, true);
    assert_true(lead.sm.configured);
    assert_int_equal(lead.sm.limit_maxbytes, (uint64_t)(l + 1) << 20);
    assert_int_equal(lead.sm.item_size_max, (uint64_t)(16 + l) << 10);
    assert_true(lead.sm.evictions > 0);
    w.index = lead.raft.last_applied;
    assert_true(svc_env_run_until(&f->env, peers_applied, &w, WAIT_MS));
    for (i = 0; i < PEERS; i++) {
        cache_svc_status(f->peer[i], &st, true);
        assert_int_equal(st.raft.last_applied, lead.raft.last_applied);
        assert_int_equal(st.sm.limit_maxbytes, lead.sm.limit_maxbytes);
        assert_int_equal(st.sm.item_size_max, lead.sm.item_size_max);
        assert_int_equal(st.sm.evictions, lead.sm.evictions);
        assert_int_equal(st.digest, lead.digest);
    }
    /* a setting out of bounds is refused before it reaches the log */
    prepare(&calls[0], CACHE_OP_CONFIG, "", NULL);
    calls[0].c.op.config.mem_limit = 100;
    assert_int_equal(run_on(f, f->peer[l], &calls[0]), CACHE_BAD_REQUEST);
    cache_svc_status(f->peer[l], &st, false);
    assert_int_equal(st.sm.limit_maxbytes, lead.sm.limit_maxbytes);
    assert_int_equal(st.raft.last_applied, lead.raft.last_applied);
}

/* Followers apply read entries as no-ops and stay identical to the leader;
 * a follower refuses reads; then the leader loses its majority: in
 * "linearizable" mode a read it accepts cannot commit and never answers
 * with a value (OUTCOME_UNAVAILABLE: unknown outcome, harmless for a read),
 * while in "leader" mode the same leader answers from its own state until
 * it notices (the window docs/consistency.md describes). */
static void cut_off_leader(struct fx *f, bool linearizable)
{
    struct applied_want w = {.f = f};
    struct cache_svc_status st;
    struct call c;
    uint64_t digest;
    unsigned i;
    int l;

    l = start_peers(f, linearizable);
    prepare(&c, CACHE_OP_SET, "r", "old");
    assert_int_equal(run_on(f, f->peer[l], &c), CACHE_STORED);
    prepare(&c, CACHE_OP_GET, "r", NULL);
    assert_int_equal(run_on(f, f->peer[l], &c), CACHE_HIT);
    assert_memory_equal(c.c.result.value, "old", 3);
    cache_result_clear(&c.c.result);
    prepare(&c, CACHE_OP_GET, "none", NULL);
    assert_int_equal(run_on(f, f->peer[l], &c), CACHE_NOT_FOUND);

    cache_svc_status(f->peer[l], &st, true);
    digest = st.digest;
    w.index = st.raft.last_applied;
    assert_true(svc_env_run_until(&f->env, peers_applied, &w, WAIT_MS));
    for (i = 0; i < PEERS; i++) {
        cache_svc_status(f->peer[i], &st, true);
        assert_int_equal(st.digest, digest);
        if (i != (unsigned)l) {
            prepare(&c, CACHE_OP_GET, "r", NULL);
            assert_int_equal(run_outcome(f, f->peer[i], &c), OUTCOME_NOT_LEADER);
        }
    }

    /* Cut the leader off: its two followers go away. */
    for (i = 0; i < PEERS; i++) {
        if (i != (unsigned)l) {
            close_svc(f, &f->peer[i]);
        }
    }
    assert_true(svc_env_run_until(&f->env, all_closed, f, WAIT_MS));
    /* Still within the election timeout: it believes it leads. */
    assert_true(cache_svc_is_leader(f->peer[l]));
    prepare(&c, CACHE_OP_GET, "r", NULL);
    if (linearizable) {
        assert_int_equal(run_outcome(f, f->peer[l], &c), OUTCOME_UNAVAILABLE);
        assert_null(c.c.result.value);
        assert_false(cache_svc_is_leader(f->peer[l]));
    } else {
        assert_int_equal(run_on(f, f->peer[l], &c), CACHE_HIT);
        assert_memory_equal(c.c.result.value, "old", 3);
        cache_result_clear(&c.c.result);
    }
    /* Once it has noticed, it refuses in both modes. */
    assert_true(svc_env_run_until(&f->env, svc_follows, f->peer[l], WAIT_MS));
    prepare(&c, CACHE_OP_GET, "r", NULL);
    assert_int_equal(run_outcome(f, f->peer[l], &c), OUTCOME_NOT_LEADER);
}

static void cut_off_leader_answers_leader_reads(void **state)
{
    cut_off_leader(*state, false);
}

static void cut_off_leader_refuses_linearizable_reads(void **state)
{
    cut_off_leader(*state, true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(replicas_with_other_flags_stay_alike,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(leader_reads_skip_the_log, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(repeated_write_answered_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(linearizable_reads_go_through_the_log,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(linearizable_reads_batch_with_writes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(linearizable_reads_change_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(linearizable_multi_get, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(stats_name_the_read_mode, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cut_off_leader_answers_leader_reads,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            cut_off_leader_refuses_linearizable_reads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
