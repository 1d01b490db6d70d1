/*
 * test_group: real rgroup replicas (raft 0.15 libuv disk backend + TCP on
 * 127.0.0.1) in one process on one uv loop, data under mkdtemp dirs in /tmp.
 * Ports come from the pid so parallel runs do not collide. Every wait is
 * bounded by a uv timer; short raft timeouts (300/30 ms) keep it fast.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "common/clock.h"
#include "common/log.h"
#include "raft/fsm.h"
#include "raft/group.h"
#include "tests/unit/lib/port_block.h"
#include "tests/unit/lib/rm_tree.h"
#include "tests/unit/lib/tsm.h"

#define MAXN 5
#define WAIT_MS 8000

/* ---- test state machine: ordered list of u32 + sum ----------------------- */

struct op;



struct op {
    struct rgroup_cmd cmd;
    uint32_t val;
    int status;
    int calls;
    size_t applied_pos; /* 1-based position in the fsm, set via mine */
    struct ctx *ctx;
};

struct ctx {
    unsigned want; /* ctx_done: callbacks expected */
    unsigned done;
    unsigned ok;
    uint32_t last_ok_val; /* completion order check */
    bool order_broken;
};

/* A slow state machine, for the next command applied here: its apply
 * returns only once clock_mono_ms() has passed this (0 = not slow). */
static uint64_t slow_apply_until;

/* Commands proposed here carry their struct op: record where they landed. */
static void group_on_mine(struct tsm *t, struct rgroup_cmd *mine, uint32_t v)
{
    struct op *o = mine->data;

    assert_int_equal(o->val, v);
    o->applied_pos = t->n;
    while (slow_apply_until != 0 && clock_mono_ms() <= slow_apply_until) {
        usleep(1000);
    }
    slow_apply_until = 0;
}

static void op_cb(struct rgroup_cmd *cmd, int status)
{
    struct op *o = cmd->data;
    struct ctx *c = o->ctx;

    o->calls++;
    o->status = status;
    c->done++;
    if (status == 0) {
        if (c->ok > 0 && o->val <= c->last_ok_val) {
            c->order_broken = true;
        }
        c->ok++;
        c->last_ok_val = o->val;
        if (o->applied_pos == 0) {
            c->order_broken = true; /* ok without the fsm seeing mine */
        }
    }
}

static struct op *ops_new(size_t n, uint32_t first, struct ctx *c)
{
    struct op *o = calloc(n, sizeof *o);
    size_t i;

    for (i = 0; i < n; i++) {
        o[i].val = first + (uint32_t)i;
        o[i].ctx = c;
        o[i].cmd.payload = &o[i].val;
        o[i].cmd.len = sizeof o[i].val;
        o[i].cmd.cb = op_cb;
        o[i].cmd.data = &o[i];
    }
    return o;
}

/* ---- snapshots in slices of the test state machine ---------------------- */

/* The tsm's list only grows, so its state at begin is its first n values
 * and their sum whatever is applied later: a snapshot in slices copies
 * them a few bytes at a time. A step may sleep, to stand for a large
 * state: the whole then takes long, but no step does. */
struct tsm_snap {
    struct tsm *t;
    unsigned char head[16];
    size_t len, off;
};

static unsigned step_sleep_us; /* each step sleeps this long first */
static size_t step_bytes;      /* and writes at most this much; 0: all */
static unsigned steps_taken;

static void *tsm_snap_begin(void *data, size_t *len)
{
    struct tsm *t = data;
    struct tsm_snap *s = calloc(1, sizeof *s);
    uint64_t n = t->n;

    s->t = t;
    memcpy(s->head, &n, 8);
    memcpy(s->head + 8, &t->sum, 8);
    s->len = 16 + t->n * sizeof(uint32_t);
    *len = s->len;
    return s;
}

static size_t tsm_snap_step(void *snap, void *out, size_t room)
{
    struct tsm_snap *s = snap;
    unsigned char *p = out;
    size_t n = 0;

    steps_taken++;
    if (step_sleep_us > 0) {
        usleep(step_sleep_us);
    }
    if (step_bytes > 0 && room > step_bytes) {
        room = step_bytes;
    }
    if (room > s->len - s->off) {
        room = s->len - s->off;
    }
    for (; n < room; n++, s->off++) {
        p[n] = s->off < 16 ? s->head[s->off]
                           : ((unsigned char *)s->t->vals)[s->off - 16];
    }
    return n;
}

static void tsm_snap_end(void *snap)
{
    free(snap);
}

/* The seal of the test state machine, streamed over the chunks on the
 * worker (raft/types.h): it checks the pieces it is given (in order, whole
 * words but for the last, exactly the bytes before the trailer) and notes
 * the nice it ran at (-100: not yet, -200: could not tell). The tsm's
 * bytes have no trailer of their own: seal_end leaves the last 8 as step
 * wrote them. On raft's worker thread: no cmocka asserts there, the test
 * reads what it noted. */
static int sealed_at_nice = -100;
static unsigned seal_sleep_us;  /* each update sleeps this long first */
static unsigned seal_bad;       /* pieces against the contract */
static uint64_t seal_len_seen;  /* the last sealed snapshot's length */

static void tsm_seal_begin(struct rgroup_seal *st, size_t len)
{
    if (len < RGROUP_SEAL_LEN) {
        seal_bad++;
    }
    st->word[0] = len - RGROUP_SEAL_LEN; /* bytes to see */
    st->word[1] = 0;                     /* bytes seen */
    st->word[2] = 0;                     /* a piece ended mid-word */
}

static void tsm_seal_update(struct rgroup_seal *st, const void *bytes,
                            size_t n)
{
    (void)bytes;
    if (seal_sleep_us > 0) {
        usleep(seal_sleep_us);
    }
    if (st->word[2] != 0 || n == 0 || n > st->word[0] - st->word[1]) {
        seal_bad++;
    }
    if (n % 8 != 0) {
        st->word[2] = 1; /* only the last piece may */
    }
    st->word[1] += n;
}

static void tsm_seal_end(struct rgroup_seal *st, void *trailer)
{
    int nice;

    (void)trailer;
    if (st->word[1] != st->word[0]) {
        seal_bad++;
    }
    seal_len_seen = st->word[0] + RGROUP_SEAL_LEN;
    errno = 0;
    nice = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
    sealed_at_nice = errno == 0 ? nice : -200;
}

/* ---- environment ------------------------------------------------------- */

struct node {
    struct rgroup *g;
    struct tsm sm;
    char dir[128];
    bool closed;
};

struct env {
    uv_loop_t loop;
    char root[64];
    struct node n[MAXN];
    unsigned n_nodes;
    unsigned port0;
};

/* Listening ports below the ephemeral range (32768+ on Linux), where raft's
 * own outgoing connections would otherwise collide with them. */
static unsigned port_base(unsigned slot)
{
    static unsigned block;

    if (block == 0) {
        block = port_block(10000u, 156u, 64u);
        assert_true(block != 0);
    }
    return block + slot * 3u;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);

    assert_int_equal(uv_loop_init(&e->loop), 0);
    strcpy(e->root, "/tmp/ringmq-test-group-XXXXXX");
    assert_non_null(mkdtemp(e->root));
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    unsigned i;

    /* every group closed: no handle may be left */
    assert_int_equal(uv_loop_close(&e->loop), 0);
    rm_tree(e->root);
    for (i = 0; i < MAXN; i++) {
        free(e->n[i].sm.vals);
    }
    free(e);
    return 0;
}

static bool timed_out;
static void timeout_cb(uv_timer_t *t)
{
    (void)t;
    timed_out = true;
}

/* Run the loop until @pred holds or @ms pass. */
static bool run_until(struct env *e,
                      bool (*pred)(struct env *, void *),
                      void *arg,
                      unsigned ms)
{
    uv_timer_t t;
    bool ok;

    uv_timer_init(&e->loop, &t);
    timed_out = false;
    uv_timer_start(&t, timeout_cb, ms, 0);
    while (!(ok = pred(e, arg)) && !timed_out) {
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&e->loop, UV_RUN_NOWAIT); /* runs the close */
    return ok;
}



/* Members' host: an IPv4 literal, or a name raft/transport resolves. */
static const char *member_host = "127.0.0.1";

static void config(struct env *e,
                   struct rgroup_config *cfg,
                   unsigned i,
                   unsigned n_members)
{
    unsigned k;

    memset(cfg, 0, sizeof *cfg);
    cfg->name = "test";
    cfg->id = i + 1;
    cfg->dir = e->n[i].dir;
    cfg->n_members = n_members;
    for (k = 0; k < n_members; k++) {
        cfg->members[k].id = k + 1;
        snprintf(cfg->members[k].raft_address,
                 sizeof cfg->members[k].raft_address, "%s:%u", member_host,
                 e->port0 + k);
    }
    cfg->election_ms = 300;
    cfg->heartbeat_ms = 30;
}

static void start_node(struct env *e, unsigned i, struct rgroup_config *cfg)
{
    struct rgroup_fsm fsm = tsm_ops;
    char err[256];

    fsm.data = &e->n[i].sm;
    /* used only with cfg->incremental_snapshots */
    fsm.snapshot_begin = tsm_snap_begin;
    fsm.snapshot_step = tsm_snap_step;
    fsm.snapshot_end = tsm_snap_end;
    fsm.seal_begin = tsm_seal_begin;
    fsm.seal_update = tsm_seal_update;
    fsm.seal_end = tsm_seal_end;
    e->n[i].sm.want_wall_clock = true;
    e->n[i].sm.on_mine = group_on_mine;
    e->n[i].closed = false;
    e->n[i].g = rgroup_new(&e->loop, cfg, &fsm, err, sizeof err);
    if (e->n[i].g == NULL) {
        print_error("rgroup_new: %s\n", err);
    }
    assert_non_null(e->n[i].g);
}

static void closed_cb(void *data)
{
    struct node *n = data;

    n->closed = true;
    n->g = NULL;
}

static bool node_closed(struct env *e, void *arg)
{
    (void)e;
    return ((struct node *)arg)->closed;
}

static void close_node(struct env *e, unsigned i)
{
    rgroup_close(e->n[i].g, closed_cb, &e->n[i]);
    assert_true(run_until(e, node_closed, &e->n[i], WAIT_MS));
}

static bool all_closed(struct env *e, void *arg)
{
    unsigned i;

    (void)arg;
    for (i = 0; i < e->n_nodes; i++) {
        if (e->n[i].g != NULL && !e->n[i].closed) {
            return false;
        }
    }
    return true;
}

static void close_all(struct env *e)
{
    unsigned i;

    for (i = 0; i < e->n_nodes; i++) {
        if (e->n[i].g != NULL) {
            rgroup_close(e->n[i].g, closed_cb, &e->n[i]);
        }
    }
    assert_true(run_until(e, all_closed, NULL, WAIT_MS));
}

static bool snapshot_written(struct env *e, void *arg)
{
    struct rgroup_status st;

    (void)e;
    rgroup_status(arg, &st);
    return st.snapshot_index > 0;
}

/* No snapshot due any more: the last one stored is within a threshold of
 * what is applied, so raft has trimmed its log to threshold + trailing.
 * A child still writing one (a loaded machine) keeps this false. */
static bool snapshots_caught_up(struct env *e, void *arg)
{
    struct rgroup_status st;

    (void)e;
    rgroup_status(arg, &st);
    return st.snapshot_index > 0 &&
           st.snapshot_index + st.snapshot_threshold > st.last_applied;
}

static bool is_ready(struct env *e, void *arg)
{
    struct node *n = arg;

    (void)e;
    return n->g != NULL && rgroup_is_leader(n->g);
}

/* index of the ready leader among live nodes, or -1 */
static int ready_leader(struct env *e)
{
    unsigned i;

    for (i = 0; i < e->n_nodes; i++) {
        if (e->n[i].g != NULL && rgroup_is_leader(e->n[i].g)) {
            return (int)i;
        }
    }
    return -1;
}

static bool some_ready(struct env *e, void *arg)
{
    (void)arg;
    return ready_leader(e) >= 0;
}

static bool ctx_done(struct env *e, void *arg)
{
    struct ctx *c = arg;

    (void)e;
    return c->done >= c->want;
}

struct sm_want {
    unsigned mask; /* nodes to check */
    size_t n;      /* values each must have applied */
};

static bool sm_has(struct env *e, void *arg)
{
    struct sm_want *w = arg;
    unsigned i;

    for (i = 0; i < e->n_nodes; i++) {
        if ((w->mask & (1u << i)) && e->n[i].sm.n < w->n) {
            return false;
        }
    }
    return true;
}

static void assert_counts_up(const struct tsm *t, size_t n)
{
    size_t i;

    assert_int_equal(t->n, n);
    for (i = 0; i < n; i++) {
        assert_int_equal(t->vals[i], i + 1);
    }
    assert_int_equal(t->sum, (uint64_t)n * (n + 1) / 2);
}

/* Submit @n ops numbered from @first on @g and wait for all callbacks. */
static void submit_and_wait(struct env *e,
                            struct rgroup *g,
                            size_t n,
                            uint32_t first)
{
    struct ctx c = {.want = (unsigned)n};
    struct op *ops = ops_new(n, first, &c);
    size_t i;

    for (i = 0; i < n; i++) {
        assert_int_equal(rgroup_submit(g, &ops[i].cmd), 0);
    }
    assert_true(run_until(e, ctx_done, &c, WAIT_MS));
    for (i = 0; i < n; i++) {
        assert_int_equal(ops[i].calls, 1);
        assert_int_equal(ops[i].status, 0);
    }
    assert_false(c.order_broken);
    free(ops);
}

static bool false_pred(struct env *e, void *arg)
{
    (void)e;
    (void)arg;
    return false;
}

/* (a) one member: self-election, group commit, snapshot, restart. */
static void test_single_member(void **state)
{
    struct env *e = *state;
    struct rgroup_config cfg;
    struct rgroup_status st;
    struct ctx c = {.want = 1000};
    struct op *ops;
    struct op early;
    size_t i;

    e->port0 = port_base(0);
    e->n_nodes = 1;
    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s/a/b/node1", e->root);
    config(e, &cfg, 0, 1);
    cfg.snapshot_threshold = 8;
    cfg.snapshot_trailing = 4;
    start_node(e, 0, &cfg);

    /* elected inside raft_start, but not ready before its barrier */
    ops = ops_new(1, 999999, &c);
    early = ops[0];
    free(ops);
    early.cmd.data = &early;
    assert_false(rgroup_is_leader(e->n[0].g));
    assert_int_equal(rgroup_submit(e->n[0].g, &early.cmd), RGROUP_ENOTLEADER);
    assert_true(run_until(e, is_ready, &e->n[0], WAIT_MS));
    assert_int_equal(early.calls, 0);

    /* 1000 submits in one loop turn -> a few batches, applied in order */
    ops = ops_new(1000, 1, &c);
    for (i = 0; i < 1000; i++) {
        assert_int_equal(rgroup_submit(e->n[0].g, &ops[i].cmd), 0);
    }
    assert_true(run_until(e, ctx_done, &c, WAIT_MS));
    for (i = 0; i < 1000; i++) {
        assert_int_equal(ops[i].calls, 1);
        assert_int_equal(ops[i].status, 0);
        assert_int_equal(ops[i].applied_pos, i + 1);
    }
    assert_int_equal(c.ok, 1000);
    assert_false(c.order_broken);
    assert_counts_up(&e->n[0].sm, 1000);
    assert_int_equal(e->n[0].sm.mine_seen, 1000);
    rgroup_status(e->n[0].g, &st);
    print_message("    1000 cmds in %llu batches\n",
                  (unsigned long long)st.batches_proposed);
    assert_int_equal(st.cmds_proposed, 1000);
    assert_true(st.batches_proposed >= 1 && st.batches_proposed <= 4);
    assert_string_equal(st.state, "leader");
    assert_true(st.ready);
    assert_int_equal(st.id, 1);
    assert_int_equal(st.leader_id, 1);
    assert_int_equal(rgroup_leader_id(e->n[0].g), 1);
    assert_true(st.term >= 1);
    assert_int_equal(st.leader_changes, 1);
    assert_true(st.last_applied >= 3); /* conf, barrier, batch */
    assert_true(st.commit_index >= st.last_applied);
    assert_true(st.last_index >= st.commit_index);
    free(ops);

    /* enough entries for snapshots (threshold 8) */
    for (i = 0; i < 30; i++) {
        submit_and_wait(e, e->n[0].g, 10, (uint32_t)(1001 + i * 10));
    }
    assert_counts_up(&e->n[0].sm, 1300);
    /* raft takes the state machine's snapshot first (snapshots_taken) and
     * knows its index once the file is written, a moment later: slow under
     * a sanitizer on a loaded machine, so wait for it */
    assert_true(run_until(e, snapshot_written, e->n[0].g, WAIT_MS));
    rgroup_status(e->n[0].g, &st);
    assert_true(st.snapshots_taken >= 1);
    assert_true(st.snapshot_index > 0);
    assert_int_equal(st.cmds_proposed, 1300);
    assert_true(st.batches_proposed >= 31);
    print_message("    snapshots taken %llu, last at %llu, last index %llu\n",
                  (unsigned long long)st.snapshots_taken,
                  (unsigned long long)st.snapshot_index,
                  (unsigned long long)st.last_index);
    close_node(e, 0);

    /* reopen: snapshot + log bring the state back */
    free(e->n[0].sm.vals);
    memset(&e->n[0].sm, 0, sizeof e->n[0].sm);
    start_node(e, 0, &cfg);
    rgroup_status(e->n[0].g, &st);
    assert_true(st.snapshots_restored >= 1);
    assert_true(e->n[0].sm.n > 0 && e->n[0].sm.n <= 1300);
    assert_true(run_until(e, is_ready, &e->n[0], WAIT_MS));
    assert_counts_up(&e->n[0].sm, 1300);
    assert_int_equal(e->n[0].sm.mine_seen, 0); /* new proposer id */
    submit_and_wait(e, e->n[0].g, 5, 1301);
    assert_counts_up(&e->n[0].sm, 1305);
    close_node(e, 0);
}

/* A loop-stall probe: a 5 ms timer notes the longest gap between its
 * ticks and submits one command per tick (so entries are applied while a
 * snapshot is being serialized). */
struct stall_probe {
    uv_timer_t timer;
    struct rgroup *g;
    struct ctx ctx;
    struct op *ops;
    size_t n_ops, submitted;
    uint64_t last_ms, max_gap_ms;
};

static void stall_tick(uv_timer_t *t)
{
    struct stall_probe *p = t->data;
    uint64_t now = clock_mono_ms();

    if (p->last_ms != 0 && now - p->last_ms > p->max_gap_ms) {
        p->max_gap_ms = now - p->last_ms;
    }
    p->last_ms = now;
    if (p->submitted < p->n_ops &&
        rgroup_submit(p->g, &p->ops[p->submitted].cmd) == 0) {
        p->submitted++;
    }
}

static bool forked_snapshot_done(struct env *e, void *arg)
{
    struct stall_probe *p = arg;
    struct rgroup_status st;

    (void)e;
    rgroup_status(p->g, &st);
    return st.snapshot_index > 0 && p->submitted == p->n_ops &&
           p->ctx.done == p->n_ops;
}

enum snap_mode { SNAP_FORK, SNAP_INLINE, SNAP_SLICED };

/* Serialize a snapshot of a state that takes 600 ms or more to write;
 * return the loop's longest stall meanwhile. Entries keep being applied
 * during the snapshot, and the reopened group must hold exactly what was
 * applied: the snapshot is the state at its index, not at the time it
 * was written. */
static uint64_t snapshot_stall(struct env *e, enum snap_mode mode)
{
    struct rgroup_config cfg;
    struct rgroup_status st;
    struct stall_probe p;
    size_t before;

    free(e->n[0].sm.vals);
    memset(&e->n[0].sm, 0, sizeof e->n[0].sm);
    sealed_at_nice = -100; /* seen by this scenario's seal, not a former */
    config(e, &cfg, 0, 1);
    /* one or two snapshots while the probe's 100 commands go in */
    cfg.snapshot_threshold = 48;
    cfg.snapshot_trailing = 4;
    cfg.inline_snapshots = mode == SNAP_INLINE;
    cfg.incremental_snapshots = mode == SNAP_SLICED;
    start_node(e, 0, &cfg);
    assert_true(run_until(e, is_ready, &e->n[0], WAIT_MS));
    submit_and_wait(e, e->n[0].g, 4, 1);
    before = e->n[0].sm.n;

    memset(&p, 0, sizeof p);
    p.g = e->n[0].g;
    p.n_ops = 100;
    p.ctx.want = (unsigned)p.n_ops;
    p.ops = ops_new(p.n_ops, (uint32_t)before + 1, &p.ctx);
    e->n[0].sm.snapshot_sleep_ms = 600;
    /* ~420 bytes, one a step of 2 ms: 0.8 s or more */
    step_sleep_us = 2000;
    step_bytes = 1;
    uv_timer_init(&e->loop, &p.timer);
    p.timer.data = &p;
    uv_timer_start(&p.timer, stall_tick, 5, 5);
    assert_true(run_until(e, forked_snapshot_done, &p, WAIT_MS));
    uv_close((uv_handle_t *)&p.timer, NULL);
    e->n[0].sm.snapshot_sleep_ms = 0;
    assert_int_equal(p.ctx.ok, p.n_ops);
    assert_false(p.ctx.order_broken);
    rgroup_status(e->n[0].g, &st);
    assert_true(st.snapshots_taken >= 1);
    if (mode == SNAP_SLICED) {
        assert_true(st.snapshots_sliced >= 1);
        print_message("    sliced: longest slice %llu us\n",
                      (unsigned long long)st.snapshot_slice_max_us);
        /* a step sleeps 2 ms; the slice stops after it (the bound is the
         * stall's: a busy machine may preempt the loop mid-slice) */
        assert_true(st.snapshot_slice_max_us < 300000);
        /* sealing and compressing take the CPU the loop leaves */
        assert_int_equal(sealed_at_nice, FORKDUMP_NICE);
        assert_int_equal(seal_bad, 0);
    } else {
        assert_int_equal(st.snapshots_sliced, 0);
    }
    step_sleep_us = 0;
    step_bytes = 0;
    close_node(e, 0);
    free(p.ops);

    free(e->n[0].sm.vals);
    memset(&e->n[0].sm, 0, sizeof e->n[0].sm);
    start_node(e, 0, &cfg);
    rgroup_status(e->n[0].g, &st);
    assert_true(st.snapshots_restored >= 1);
    assert_true(run_until(e, is_ready, &e->n[0], WAIT_MS));
    assert_counts_up(&e->n[0].sm, before + p.n_ops);
    close_node(e, 0);
    return p.max_gap_ms;
}

/* Snapshots are serialized in a forked child, or written on the loop in
 * slices: the loop goes on serving (heartbeats, timers, applies) while a
 * large state is written. The same probe with inline snapshots shows the
 * stall it measures. */
static void test_snapshot_off_loop(void **state)
{
    struct env *e = *state;
    uint64_t forked, inlined, sliced;

    e->port0 = port_base(0);
    e->n_nodes = 1;
    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s/forked", e->root);
    forked = snapshot_stall(e, SNAP_FORK);
    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s/inline", e->root);
    inlined = snapshot_stall(e, SNAP_INLINE);
    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s/sliced", e->root);
    sliced = snapshot_stall(e, SNAP_SLICED);
    print_message("    longest loop stall: forked %llu ms, inline %llu ms, "
                  "sliced %llu ms\n",
                  (unsigned long long)forked, (unsigned long long)inlined,
                  (unsigned long long)sliced);
    assert_true(inlined >= 600);
    assert_true(forked < 300);
    assert_true(sliced < 300);
}

static bool slicing_begun(struct env *e, void *arg)
{
    (void)e;
    (void)arg;
    return steps_taken > 0;
}

/* A group closed while a snapshot is being written in slices: the close
 * ends it and wakes raft's worker waiting for it (no hang; the sanitizer
 * build finds a leak), and the group reopens with everything applied. */
static void test_close_mid_slices(void **state)
{
    struct env *e = *state;
    struct rgroup_config cfg;
    struct rgroup_status st;
    uint32_t i;

    e->port0 = port_base(0);
    e->n_nodes = 1;
    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s/n0", e->root);
    config(e, &cfg, 0, 1);
    cfg.snapshot_threshold = 32;
    cfg.snapshot_trailing = 4;
    cfg.incremental_snapshots = true;
    /* 150 bytes or more, 5 ms a byte: far longer than the few commands
     * still to apply once it began */
    step_sleep_us = 5000;
    step_bytes = 1;
    steps_taken = 0;
    start_node(e, 0, &cfg);
    assert_true(run_until(e, is_ready, &e->n[0], WAIT_MS));
    for (i = 0; i < 40; i++) { /* an entry each */
        submit_and_wait(e, e->n[0].g, 1, 1 + i);
    }
    assert_true(run_until(e, slicing_begun, NULL, WAIT_MS));
    rgroup_status(e->n[0].g, &st);
    assert_int_equal(st.snapshots_sliced, 0);
    close_node(e, 0);
    step_sleep_us = 0;
    step_bytes = 0;

    free(e->n[0].sm.vals);
    memset(&e->n[0].sm, 0, sizeof e->n[0].sm);
    start_node(e, 0, &cfg);
    assert_true(run_until(e, is_ready, &e->n[0], WAIT_MS));
    assert_counts_up(&e->n[0].sm, 40);
    close_node(e, 0);
}

static bool sliced_once(struct env *e, void *arg)
{
    struct rgroup_status st;

    (void)e;
    rgroup_status(arg, &st);
    return st.snapshots_sliced >= 1;
}

static bool chunk_waited(struct env *e, void *arg)
{
    struct rgroup_status st;

    (void)e;
    rgroup_status(arg, &st);
    return st.snapshot_chunk_waits > 0;
}

static uint64_t thread_cpu_us(void)
{
    struct timespec ts;

    assert_int_equal(clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts), 0);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* A group with a state of 1000 commands and more (~4 KiB), a snapshot
 * due at the 32nd entry (the 40 single-command entries after the first
 * big one take it there) and a pool of two 16-byte chunks: the snapshot
 * goes through them some 260 times. */
static void start_chunked(struct env *e, struct rgroup_config *cfg)
{
    uint32_t i;

    e->port0 = port_base(0);
    e->n_nodes = 1;
    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s/n0", e->root);
    config(e, cfg, 0, 1);
    cfg->snapshot_threshold = 32;
    cfg->snapshot_trailing = 4;
    cfg->incremental_snapshots = true;
    rfsm_snapshot_chunks(16, 2);
    seal_bad = 0;
    seal_len_seen = 0;
    steps_taken = 0;
    start_node(e, 0, cfg);
    assert_true(run_until(e, is_ready, &e->n[0], WAIT_MS));
    submit_and_wait(e, e->n[0].g, 1000, 1);
    for (i = 0; i < 40; i++) { /* an entry each */
        submit_and_wait(e, e->n[0].g, 1, 1001 + i);
    }
}

/* A snapshot in slices larger than the whole chunk pool: the chunks are
 * reused, the loop waits for the worker to give one back (blocked in
 * poll, woken by the worker: it spends a fraction of the time on the
 * CPU, where spinning would spend all of it), the seal sees every byte
 * but the trailer in whole words, and the group reopened from the
 * snapshot holds exactly what was applied. */
static void test_slices_reuse_chunks(void **state)
{
    struct env *e = *state;
    struct rgroup_config cfg;
    struct rgroup_status st;
    uint64_t cpu0, t0, cpu_us, wall_us;

    seal_sleep_us = 1000; /* a worker slower than the loop */
    sealed_at_nice = -100;
    start_chunked(e, &cfg);
    cpu0 = thread_cpu_us();
    t0 = clock_mono_ms();
    assert_true(run_until(e, sliced_once, e->n[0].g, WAIT_MS));
    cpu_us = thread_cpu_us() - cpu0;
    wall_us = (clock_mono_ms() - t0) * 1000;
    seal_sleep_us = 0;
    rgroup_status(e->n[0].g, &st);
    print_message("    %llu bytes through 2 x 16: the loop waited %llu "
                  "times, %llu us of CPU in %llu us\n",
                  (unsigned long long)seal_len_seen,
                  (unsigned long long)st.snapshot_chunk_waits,
                  (unsigned long long)cpu_us, (unsigned long long)wall_us);
    assert_int_equal(seal_bad, 0);
    assert_true(seal_len_seen > 4000);
    /* 1029 commands at the snapshot's index: 4132 bytes, 4 past the last
     * whole chunk, so the chunk before the last one had to end 8 bytes
     * short for the trailer to lie in the last chunk alone */
    assert_true(seal_len_seen % 16 > 0 && seal_len_seen % 16 < 8);
    assert_true(st.snapshot_chunk_waits >= 10);
    assert_true(wall_us >= 100000); /* ~260 chunks, 1 ms each */
    assert_true(cpu_us * 2 < wall_us);
    assert_int_equal(sealed_at_nice, FORKDUMP_NICE);
    close_node(e, 0);
    rfsm_snapshot_chunks(RFSM_CHUNK_BYTES, RFSM_CHUNKS);

    free(e->n[0].sm.vals);
    memset(&e->n[0].sm, 0, sizeof e->n[0].sm);
    start_node(e, 0, &cfg);
    rgroup_status(e->n[0].g, &st);
    assert_true(st.snapshots_restored >= 1);
    assert_true(e->n[0].sm.restores >= 1);
    assert_true(run_until(e, is_ready, &e->n[0], WAIT_MS));
    assert_counts_up(&e->n[0].sm, 1040);
    close_node(e, 0);
}

/* Closed while the loop waits for the worker to give a chunk back: the
 * abort ends the snapshot, the worker stops at its next chunk (no hang,
 * no leak under the sanitizer), and the group reopens with everything
 * applied. */
static void test_close_waiting_for_chunk(void **state)
{
    struct env *e = *state;
    struct rgroup_config cfg;
    struct rgroup_status st;
    uint64_t t0;

    seal_sleep_us = 20000; /* far slower than the loop */
    start_chunked(e, &cfg);
    assert_true(run_until(e, chunk_waited, e->n[0].g, WAIT_MS));
    rgroup_status(e->n[0].g, &st);
    assert_int_equal(st.snapshots_sliced, 0);
    t0 = clock_mono_ms();
    close_node(e, 0);
    /* the worker finishes the chunk in hand, not the snapshot's 260 */
    assert_true(clock_mono_ms() - t0 < 2000);
    seal_sleep_us = 0;
    rfsm_snapshot_chunks(RFSM_CHUNK_BYTES, RFSM_CHUNKS);

    free(e->n[0].sm.vals);
    memset(&e->n[0].sm, 0, sizeof e->n[0].sm);
    start_node(e, 0, &cfg);
    assert_true(run_until(e, is_ready, &e->n[0], WAIT_MS));
    assert_counts_up(&e->n[0].sm, 1040);
    close_node(e, 0);
}

/* Fill a one-member group with 150000 commands (~2.3 MB of log) and
 * return the bytes of log raft then holds in memory. */
static uint64_t log_bytes_after_fill(struct env *e, size_t log_memory,
                                     struct rgroup_status *st,
                                     uint64_t *entries_out)
{
    struct rgroup_config cfg;
    uint64_t entries, bytes;
    unsigned round;

    free(e->n[0].sm.vals);
    memset(&e->n[0].sm, 0, sizeof e->n[0].sm);
    config(e, &cfg, 0, 1);
    cfg.max_entry_bytes = 4096;
    cfg.log_memory_bytes = log_memory;
    start_node(e, 0, &cfg);
    assert_true(run_until(e, is_ready, &e->n[0], WAIT_MS));
    for (round = 0; round < 40; round++) { /* within the queue bound */
        submit_and_wait(e, e->n[0].g, 3750, (uint32_t)(1 + round * 3750));
    }
    assert_counts_up(&e->n[0].sm, 150000);
    if (log_memory != SIZE_MAX) {
        /* Snapshots are taken by a child and stored a moment later; raft
         * considers the next one only when it applies something, so while
         * one stored late left a threshold's worth behind, apply one more
         * command and look again. */
        uint32_t more = 150001;

        while (!run_until(e, snapshots_caught_up, e->n[0].g, 200)) {
            assert_true(more < 150001 + 100);
            submit_and_wait(e, e->n[0].g, 1, more++);
        }
    }
    rgroup_status(e->n[0].g, st);
    rgroup_log_memory(e->n[0].g, &entries, &bytes);
    close_node(e, 0);
    *entries_out = entries;
    return bytes;
}

/* Raft keeps every entry since its last snapshot and `trailing` before it
 * in memory; with big entries the default counts (1024 + 2048) hold GBs.
 * The group bounds them by bytes at the entry size it sees. */
static void test_log_memory_bound(void **state)
{
    struct env *e = *state;
    struct rgroup_status st;
    const size_t budget = 192 * 1024;
    uint64_t bounded, counted, entries;

    e->port0 = port_base(0);
    e->n_nodes = 1;
    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s/bounded", e->root);
    bounded = log_bytes_after_fill(e, budget, &st, &entries);
    print_message("    bounded: %llu entries, %llu bytes in memory; snapshot "
                  "every %u, %u kept\n",
                  (unsigned long long)entries,
                  (unsigned long long)bounded, st.snapshot_threshold,
                  st.snapshot_trailing);
    assert_true(st.snapshot_threshold < 1024 && st.snapshot_trailing < 2048);
    assert_true(st.snapshot_threshold >= RGROUP_MIN_THRESHOLD &&
                st.snapshot_trailing >= RGROUP_MIN_TRAILING);
    assert_true(bounded <= 2 * budget);

    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s/counted", e->root);
    counted = log_bytes_after_fill(e, SIZE_MAX, &st, &entries);
    print_message("    counts only: %llu entries, %llu bytes in memory\n",
                  (unsigned long long)entries,
                  (unsigned long long)counted);
    assert_int_equal(st.snapshot_threshold, 1024);
    assert_true(counted > 3 * budget);
}

/* Entry size cap and in-flight cap split the queue into many batches. */
static void test_batch_limits(void **state)
{
    struct env *e = *state;
    struct rgroup_config cfg;
    struct rgroup_status st;
    struct ctx c = {0};
    static char big[2000];
    struct op *ops;
    struct op fat;

    e->port0 = port_base(1);
    e->n_nodes = 1;
    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s/node1", e->root);
    config(e, &cfg, 0, 1);
    cfg.max_entry_bytes = 1024;
    cfg.max_inflight = 2;
    start_node(e, 0, &cfg);
    assert_true(run_until(e, is_ready, &e->n[0], WAIT_MS));

    ops = ops_new(1, 0, &c);
    fat = ops[0];
    free(ops);
    fat.cmd.data = &fat;
    fat.cmd.payload = big;
    fat.cmd.len = sizeof big;
    assert_int_equal(rgroup_submit(e->n[0].g, &fat.cmd), RGROUP_ETOOBIG);
    fat.cmd.len = 1024 - RFSM_BATCH_OVERHEAD - RFSM_CMD_OVERHEAD + 1;
    assert_int_equal(rgroup_submit(e->n[0].g, &fat.cmd), RGROUP_ETOOBIG);
    fat.cmd.cb = NULL;
    assert_int_equal(rgroup_submit(e->n[0].g, &fat.cmd), RGROUP_EINVAL);
    assert_int_equal(fat.calls, 0);

    submit_and_wait(e, e->n[0].g, 1000, 1);
    assert_counts_up(&e->n[0].sm, 1000);
    rgroup_status(e->n[0].g, &st);
    print_message("    1000 cmds in %llu batches (cap 1024 bytes)\n",
                  (unsigned long long)st.batches_proposed);
    /* at most (1024 - 42) / 15 = 65 commands per batch */
    assert_true(st.batches_proposed >= 16);
    assert_true(st.batches_proposed < 200);

    /* closing: submit refused right away */
    rgroup_close(e->n[0].g, closed_cb, &e->n[0]);
    ops = ops_new(1, 5000, &c);
    assert_int_equal(rgroup_submit(e->n[0].g, &ops[0].cmd), RGROUP_ECLOSING);
    assert_true(run_until(e, node_closed, &e->n[0], WAIT_MS));
    assert_int_equal(ops[0].calls, 0);
    free(ops);
}

/* The configuration of a single-member group (node 0) at port slot
 * @slot, for the caller to adjust before start_ready(). */
static void one_member(struct env *e, unsigned slot, struct rgroup_config *cfg)
{
    e->port0 = port_base(slot);
    e->n_nodes = 1;
    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s/node1", e->root);
    config(e, cfg, 0, 1);
}

/* Start node 0 with @cfg, with an empty test state machine (the log
 * brings back what a previous run applied), and wait until it leads. */
static void start_ready(struct env *e, struct rgroup_config *cfg)
{
    free(e->n[0].sm.vals);
    memset(&e->n[0].sm, 0, sizeof e->n[0].sm);
    start_node(e, 0, cfg);
    assert_true(run_until(e, is_ready, &e->n[0], WAIT_MS));
}

static bool proposed_some(struct env *e, void *arg)
{
    struct rgroup_status st;

    (void)e;
    rgroup_status(arg, &st);
    return st.batches_proposed > 0;
}

static bool vals_contain(const struct tsm *t, uint32_t v)
{
    size_t i;

    for (i = 0; i < t->n; i++) {
        if (t->vals[i] == v) {
            return true;
        }
    }
    return false;
}

/* Commands queued behind a batch in flight whose deadline passes before a
 * slot frees are dropped, never proposed (RGROUP_EEXPIRED); the ones
 * without a deadline, or with a later one, are proposed as usual. */
static void test_queued_deadline(void **state)
{
    struct env *e = *state;
    struct rgroup_config cfg;
    struct rgroup_status st;
    struct ctx c = {.want = 5};
    struct op *ops;
    uint64_t deadline;
    size_t i;

    one_member(e, 12, &cfg);
    cfg.max_inflight = 1;
    start_ready(e, &cfg);

    /* ops[0] takes the only slot, and its apply outlasts the deadline of
     * ops[1] and ops[2], so they are still queued when it passes (or, if
     * ops[0] completed before they were submitted, already expired when
     * they reach the head of the queue) */
    ops = ops_new(5, 1, &c);
    deadline = clock_mono_ms() + 100;
    slow_apply_until = deadline;
    assert_int_equal(rgroup_submit(e->n[0].g, &ops[0].cmd), 0);
    assert_true(run_until(e, proposed_some, e->n[0].g, WAIT_MS));
    ops[1].cmd.deadline_ms = deadline;
    ops[2].cmd.deadline_ms = deadline - 50;
    ops[4].cmd.deadline_ms = deadline + 60000;
    for (i = 1; i < 5; i++) {
        assert_int_equal(rgroup_submit(e->n[0].g, &ops[i].cmd), 0);
    }
    assert_true(run_until(e, ctx_done, &c, WAIT_MS));
    for (i = 0; i < 5; i++) {
        assert_int_equal(ops[i].calls, 1);
    }
    assert_true(clock_mono_ms() > deadline);
    assert_int_equal(ops[0].status, 0);
    assert_int_equal(ops[1].status, RGROUP_EEXPIRED);
    assert_int_equal(ops[2].status, RGROUP_EEXPIRED);
    assert_int_equal(ops[3].status, 0);
    assert_int_equal(ops[4].status, 0);
    assert_int_equal(e->n[0].sm.n, 3);
    assert_false(vals_contain(&e->n[0].sm, 2));
    assert_false(vals_contain(&e->n[0].sm, 3));
    assert_int_equal(ops[1].applied_pos, 0);
    assert_int_equal(ops[2].applied_pos, 0);
    rgroup_status(e->n[0].g, &st);
    assert_int_equal(st.cmds_proposed, 3);
    assert_false(c.order_broken);
    free(ops);
    close_node(e, 0);
}

static bool op_called(struct env *e, void *arg)
{
    (void)e;
    return ((struct op *)arg)->calls > 0;
}

/* A leader whose entries do not commit (its followers gone) frees no batch
 * slot: a queued command still expires at its deadline, answered
 * RGROUP_EEXPIRED while the leader still leads and the commands around it
 * still wait, so that its sender learns "not executed" while it waits. */
static void test_queued_deadline_stuck(void **state)
{
    struct env *e = *state;
    struct rgroup_config cfg;
    struct ctx c = {.want = 3};
    struct op *ops;
    uint64_t deadline;
    unsigned i;
    int l;

    /* a long election timeout: the leader stays in office for seconds
     * after its followers stop answering */
    e->port0 = port_base(15);
    e->n_nodes = 3;
    for (i = 0; i < 3; i++) {
        snprintf(e->n[i].dir, sizeof e->n[i].dir, "%s/node%u", e->root, i + 1);
        config(e, &cfg, i, 3);
        cfg.election_ms = 3000;
        cfg.heartbeat_ms = 100;
        cfg.max_inflight = 1;
        start_node(e, i, &cfg);
    }
    assert_true(run_until(e, some_ready, NULL, 4 * WAIT_MS));
    l = ready_leader(e);
    submit_and_wait(e, e->n[l].g, 1, 1);
    for (i = 0; i < 3; i++) {
        if (i != (unsigned)l) {
            close_node(e, i);
        }
    }
    ops = ops_new(3, 2, &c);
    assert_int_equal(rgroup_submit(e->n[l].g, &ops[0].cmd), 0);
    uv_run(&e->loop, UV_RUN_NOWAIT); /* flushed: the only slot is taken */
    deadline = clock_mono_ms() + 100;
    ops[1].cmd.deadline_ms = deadline;
    assert_int_equal(rgroup_submit(e->n[l].g, &ops[1].cmd), 0);
    assert_int_equal(rgroup_submit(e->n[l].g, &ops[2].cmd), 0);
    assert_true(run_until(e, op_called, &ops[1], WAIT_MS));
    assert_int_equal(ops[1].status, RGROUP_EEXPIRED);
    assert_true(clock_mono_ms() >= deadline);
    assert_int_equal(ops[0].calls, 0);
    assert_int_equal(ops[2].calls, 0);
    assert_true(rgroup_is_leader(e->n[l].g));
    close_node(e, (unsigned)l);
    assert_int_equal(c.done, 3);
    assert_int_equal(ops[0].status, RGROUP_EUNKNOWN);
    assert_int_equal(ops[2].status, RGROUP_ECLOSING);
    assert_int_equal(e->n[l].sm.n, 1);
    free(ops);
}

/* Admission control: beyond max_queued_cmds or max_queued_bytes waiting
 * to be proposed, rgroup_submit refuses (RGROUP_EFULL, no callback) and
 * nothing of the refused command is applied; once the queue drains,
 * commands are taken again. */
static void test_queue_bound(void **state)
{
    struct env *e = *state;
    struct rgroup_config cfg;
    struct ctx c = {.want = 3};
    struct op *ops;
    size_t i;

    one_member(e, 13, &cfg);
    cfg.max_queued_cmds = 3;
    start_ready(e, &cfg);

    /* the loop does not run between submits: all of them stay queued */
    ops = ops_new(5, 1, &c);
    for (i = 0; i < 3; i++) {
        assert_int_equal(rgroup_submit(e->n[0].g, &ops[i].cmd), 0);
    }
    assert_int_equal(rgroup_submit(e->n[0].g, &ops[3].cmd), RGROUP_EFULL);
    assert_true(run_until(e, ctx_done, &c, WAIT_MS));
    run_until(e, false_pred, NULL, 50);
    assert_int_equal(ops[3].calls, 0);
    assert_counts_up(&e->n[0].sm, 3);
    /* drained: taken again */
    c.want = 4;
    assert_int_equal(rgroup_submit(e->n[0].g, &ops[4].cmd), 0);
    assert_true(run_until(e, ctx_done, &c, WAIT_MS));
    assert_int_equal(ops[4].status, 0);
    assert_int_equal(e->n[0].sm.n, 4);
    assert_false(vals_contain(&e->n[0].sm, 4));
    close_node(e, 0);

    /* the byte bound: two 4-byte commands fit in 10 bytes, a third not */
    cfg.max_queued_cmds = 0;
    cfg.max_queued_bytes = 10;
    start_ready(e, &cfg);
    free(ops);
    c = (struct ctx){.want = 2};
    ops = ops_new(3, 5, &c);
    assert_int_equal(rgroup_submit(e->n[0].g, &ops[0].cmd), 0);
    assert_int_equal(rgroup_submit(e->n[0].g, &ops[1].cmd), 0);
    assert_int_equal(rgroup_submit(e->n[0].g, &ops[2].cmd), RGROUP_EFULL);
    assert_true(run_until(e, ctx_done, &c, WAIT_MS));
    run_until(e, false_pred, NULL, 50);
    assert_int_equal(ops[2].calls, 0);
    assert_int_equal(e->n[0].sm.n, 6);
    assert_false(vals_contain(&e->n[0].sm, 7));
    free(ops);
    close_node(e, 0);
}

/* In a child (cmocka's handlers would go on running the suite there, and a
 * core is not wanted): run @breaks, which must abort on a broken invariant. */
static void assert_aborts(void (*breaks)(struct env *, struct op *),
                          struct env *e, struct op *ops)
{
    pid_t pid;
    int st;

    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};

        signal(SIGABRT, SIG_DFL);
        signal(SIGSEGV, SIG_DFL);
        setrlimit(RLIMIT_CORE, &no_core);
        breaks(e, ops);
        _exit(42); /* not caught */
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
}

/* The caller's command list is the group's queue: a queued command whose
 * link is cut leaves fewer commands than counted. */
static void cut_queue(struct env *e, struct op *ops)
{
    ops[1].cmd.next = NULL;
    rgroup_check(e->n[0].g);
}

/* A queued command whose length changed (its caller broke the contract)
 * no longer adds up with the queued bytes: the next flush trips the
 * counter check that every build makes. */
static void grow_queued(struct env *e, struct op *ops)
{
    ops[0].cmd.len = 1u << 20;
    uv_run(&e->loop, UV_RUN_NOWAIT);
}

/* The group's invariants hold in use and catch a broken queue: the walk
 * (rgroup_check, run by the sanitizer build every few turns) and the
 * counters (every build, every turn). */
static void test_invariants(void **state)
{
    struct env *e = *state;
    struct rgroup_config cfg;
    struct ctx c = {.want = 3};
    struct op *ops;
    size_t i;

    one_member(e, 14, &cfg);
    start_ready(e, &cfg);
    rgroup_check(e->n[0].g);

    /* the loop does not run between submits: all three stay queued */
    ops = ops_new(3, 1, &c);
    for (i = 0; i < 3; i++) {
        assert_int_equal(rgroup_submit(e->n[0].g, &ops[i].cmd), 0);
    }
    rgroup_check(e->n[0].g); /* holds */
    assert_aborts(cut_queue, e, ops);
    assert_aborts(grow_queued, e, ops);

    /* untouched here: the commands go through */
    assert_true(run_until(e, ctx_done, &c, WAIT_MS));
    for (i = 0; i < 3; i++) {
        assert_int_equal(ops[i].status, 0);
    }
    assert_false(c.order_broken);
    rgroup_check(e->n[0].g);
    free(ops);
    close_node(e, 0);
}

/* Close with commands in flight and queued: each cb exactly once. */
static void test_close_fails_pending(void **state)
{
    struct env *e = *state;
    struct rgroup_config cfg;
    struct ctx c = {.want = 15};
    struct op *ops;
    size_t i;

    e->port0 = port_base(7);
    e->n_nodes = 1;
    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s/node1", e->root);
    config(e, &cfg, 0, 1);
    start_node(e, 0, &cfg);
    assert_true(run_until(e, is_ready, &e->n[0], WAIT_MS));

    ops = ops_new(15, 1, &c);
    for (i = 0; i < 10; i++) {
        assert_int_equal(rgroup_submit(e->n[0].g, &ops[i].cmd), 0);
    }
    uv_run(&e->loop, UV_RUN_NOWAIT); /* flushed: in flight */
    for (i = 10; i < 15; i++) {
        assert_int_equal(rgroup_submit(e->n[0].g, &ops[i].cmd), 0);
    }
    rgroup_close(e->n[0].g, closed_cb, &e->n[0]);
    assert_true(run_until(e, node_closed, &e->n[0], WAIT_MS));
    assert_int_equal(c.done, 15);
    for (i = 0; i < 15; i++) {
        assert_int_equal(ops[i].calls, 1);
        if (i < 10) {
            assert_true(ops[i].status == RGROUP_EUNKNOWN || ops[i].status == 0);
            assert_true(ops[i].status != 0 || ops[i].applied_pos > 0);
        } else {
            assert_int_equal(ops[i].status, RGROUP_ECLOSING);
        }
    }
    free(ops);
}

static bool knows_leader(struct env *e, void *arg)
{
    unsigned *f = arg;
    int l = ready_leader(e);

    return l >= 0 && rgroup_leader_id(e->n[*f].g) == (uint64_t)l + 1;
}

static void start_cluster(struct env *e, unsigned slot, unsigned max_inflight)
{
    struct rgroup_config cfg;
    unsigned i;

    e->port0 = port_base(slot);
    e->n_nodes = 3;
    for (i = 0; i < 3; i++) {
        snprintf(e->n[i].dir, sizeof e->n[i].dir, "%s/node%u", e->root, i + 1);
        config(e, &cfg, i, 3);
        cfg.max_inflight = max_inflight;
        start_node(e, i, &cfg);
    }
    assert_true(run_until(e, some_ready, NULL, WAIT_MS));
}

/* (b) three members: replication, follower refusal, leader failover. */
static void test_three_members(void **state)
{
    struct env *e = *state;
    struct rgroup_status st;
    struct sm_want w;
    struct op *ops;
    struct ctx c = {0};
    unsigned f;
    int l;
    int l2;

    start_cluster(e, 2, 0);
    l = ready_leader(e);
    assert_true(l >= 0);
    print_message("    leader is node %d\n", l + 1);
    submit_and_wait(e, e->n[l].g, 100, 1);
    w = (struct sm_want){7, 100};
    assert_true(run_until(e, sm_has, &w, WAIT_MS));
    for (f = 0; f < 3; f++) {
        assert_counts_up(&e->n[f].sm, 100);
        assert_int_equal(e->n[f].sm.mine_seen, f == (unsigned)l ? 100 : 0);
    }

    /* a follower refuses and names the leader */
    f = ((unsigned)l + 1) % 3;
    assert_true(run_until(e, knows_leader, &f, WAIT_MS));
    ops = ops_new(1, 7777, &c);
    assert_int_equal(rgroup_submit(e->n[f].g, &ops[0].cmd), RGROUP_ENOTLEADER);
    assert_false(rgroup_is_leader(e->n[f].g));
    rgroup_status(e->n[f].g, &st);
    assert_string_equal(st.state, "follower");
    assert_false(st.ready);
    assert_int_equal(st.leader_id, (uint64_t)l + 1);
    assert_int_equal(st.id, f + 1);
    assert_int_equal(st.cmds_proposed, 0);
    assert_true(st.leader_changes >= 1);

    /* the leader goes away; another one takes over */
    close_node(e, (unsigned)l);
    assert_true(run_until(e, some_ready, NULL, WAIT_MS));
    l2 = ready_leader(e);
    assert_true(l2 >= 0 && l2 != l);
    print_message("    new leader is node %d\n", l2 + 1);
    submit_and_wait(e, e->n[l2].g, 50, 101);
    w = (struct sm_want){7u & ~(1u << l), 150};
    assert_true(run_until(e, sm_has, &w, WAIT_MS));
    for (f = 0; f < 3; f++) {
        if (f != (unsigned)l) {
            assert_counts_up(&e->n[f].sm, 150);
        }
    }
    rgroup_status(e->n[l2].g, &st);
    assert_true(st.leader_changes >= 2);
    assert_int_equal(st.cmds_proposed, 50);
    assert_int_equal(ops[0].calls, 0);
    free(ops);
    close_all(e);
}

/* Members named by host name ("localhost:port", as a compose service or a
 * StatefulSet pod would be): the transport resolves names on connect, the
 * group elects, replicates and fails over as with IPv4 literals. */
static void test_members_by_host_name(void **state)
{
    struct env *e = *state;
    struct sm_want w;
    int l;
    int l2;

    member_host = "localhost";
    start_cluster(e, 7, 0);
    member_host = "127.0.0.1";
    l = ready_leader(e);
    assert_true(l >= 0);
    submit_and_wait(e, e->n[l].g, 20, 1);
    w = (struct sm_want){7, 20};
    assert_true(run_until(e, sm_has, &w, WAIT_MS));
    close_node(e, (unsigned)l);
    assert_true(run_until(e, some_ready, NULL, WAIT_MS));
    l2 = ready_leader(e);
    assert_true(l2 >= 0 && l2 != l);
    submit_and_wait(e, e->n[l2].g, 20, 21);
    w = (struct sm_want){7u & ~(1u << l), 40};
    assert_true(run_until(e, sm_has, &w, WAIT_MS));
    close_all(e);
}

/* The leader loses its quorum: the in-flight command's outcome is unknown,
 * the queued ones were never proposed. */
static void test_quorum_loss(void **state)
{
    struct env *e = *state;
    struct ctx c = {.want = 3};
    struct op *ops;
    unsigned i;
    int l;

    start_cluster(e, 5, 1);
    l = ready_leader(e);
    assert_true(l >= 0);
    submit_and_wait(e, e->n[l].g, 5, 1);
    for (i = 0; i < 3; i++) {
        if (i != (unsigned)l) {
            close_node(e, i);
        }
    }
    ops = ops_new(3, 6, &c);
    assert_int_equal(rgroup_submit(e->n[l].g, &ops[0].cmd), 0);
    uv_run(&e->loop, UV_RUN_NOWAIT); /* flushed: the only slot is taken */
    assert_int_equal(rgroup_submit(e->n[l].g, &ops[1].cmd), 0);
    assert_int_equal(rgroup_submit(e->n[l].g, &ops[2].cmd), 0);
    assert_true(run_until(e, ctx_done, &c, WAIT_MS));
    assert_int_equal(ops[0].status, RGROUP_EUNKNOWN);
    assert_int_equal(ops[1].status, RGROUP_ENOTLEADER);
    assert_int_equal(ops[2].status, RGROUP_ENOTLEADER);
    for (i = 0; i < 3; i++) {
        assert_int_equal(ops[i].calls, 1);
    }
    assert_false(rgroup_is_leader(e->n[l].g));
    ops[0].calls = 0;
    assert_int_equal(rgroup_submit(e->n[l].g, &ops[0].cmd), RGROUP_ENOTLEADER);
    close_node(e, (unsigned)l);
    assert_int_equal(ops[0].calls, 0);
    free(ops);
}

/* (c) unusable directories and bad configurations. */
static void test_bad_config(void **state)
{
    struct env *e = *state;
    struct rgroup_config cfg;
    struct rgroup_fsm fsm = tsm_ops;
    char file[96];
    char err[256];
    FILE *fp;

    e->port0 = port_base(6);
    e->n_nodes = 1;
    fsm.data = &e->n[0].sm;
    snprintf(file, sizeof file, "%s/plainfile", e->root);
    fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);

    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s/sub/dir", file);
    config(e, &cfg, 0, 1);
    assert_null(rgroup_new(&e->loop, &cfg, &fsm, err, sizeof err));
    print_message("    %s\n", err);
    assert_non_null(strstr(err, "Not a directory"));
    assert_non_null(strstr(err, e->n[0].dir));

    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s", file);
    assert_null(rgroup_new(&e->loop, &cfg, &fsm, err, sizeof err));
    print_message("    %s\n", err);
    assert_non_null(strstr(err, "is not a directory"));

    snprintf(e->n[0].dir, sizeof e->n[0].dir, "%s/node1", e->root);
    strcpy(cfg.members[0].raft_address, "[::1]:9000");
    assert_null(rgroup_new(&e->loop, &cfg, &fsm, err, sizeof err));
    print_message("    %s\n", err);
    assert_non_null(strstr(err, "IPv6"));
    strcpy(cfg.members[0].raft_address, "127.0.0.1");
    assert_null(rgroup_new(&e->loop, &cfg, &fsm, err, sizeof err));
    print_message("    %s\n", err);
    strcpy(cfg.members[0].raft_address, "127.0.0.1:70000");
    assert_null(rgroup_new(&e->loop, &cfg, &fsm, err, sizeof err));
    print_message("    %s\n", err);

    config(e, &cfg, 0, 1);
    cfg.id = 5;
    assert_null(rgroup_new(&e->loop, &cfg, &fsm, err, sizeof err));
    print_message("    %s\n", err);
    assert_non_null(strstr(err, "not a member"));

    config(e, &cfg, 0, 1);
    cfg.heartbeat_ms = 300;
    assert_null(rgroup_new(&e->loop, &cfg, &fsm, err, sizeof err));
    print_message("    %s\n", err);

    config(e, &cfg, 0, 1);
    cfg.n_members = 0;
    assert_null(rgroup_new(&e->loop, &cfg, &fsm, err, sizeof err));
    print_message("    %s\n", err);

    /* the address is taken: raft_start fails after raft_init */
    config(e, &cfg, 0, 1);
    start_node(e, 0, &cfg);
    snprintf(e->n[1].dir, sizeof e->n[1].dir, "%s/node1-twin", e->root);
    cfg.dir = e->n[1].dir;
    fsm.data = &e->n[1].sm;
    assert_null(rgroup_new(&e->loop, &cfg, &fsm, err, sizeof err));
    print_message("    %s\n", err);
    assert_true(err[0] != '\0');
    run_until(e, false_pred, NULL, 200); /* the failed replica is released */
    close_node(e, 0);
}

/* ---- membership ---------------------------------------------------------- */

struct change {
    int status;
    int calls;
};

static void change_cb(void *data, int status)
{
    struct change *c = data;

    c->status = status;
    c->calls++;
}

static bool change_done(struct env *e, void *arg)
{
    (void)e;
    return ((struct change *)arg)->calls > 0;
}

static unsigned voters(struct rgroup *g)
{
    struct rgroup_member_info m[RGROUP_MAX_MEMBERS];
    unsigned n = rgroup_members(g, m, RGROUP_MAX_MEMBERS);
    unsigned v = 0;
    unsigned i;

    for (i = 0; i < n; i++) {
        v += strcmp(m[i].role, "voter") == 0;
    }
    return v;
}

struct has_voters {
    unsigned node;
    unsigned n;
};

static bool node_has_voters(struct env *e, void *arg)
{
    struct has_voters *h = arg;

    return voters(e->n[h->node].g) == h->n;
}

static void add_voter_and_wait(struct env *e, unsigned leader, unsigned id)
{
    struct change c = {0};
    char addr[64];

    snprintf(addr, sizeof addr, "127.0.0.1:%u", e->port0 + id - 1);
    assert_int_equal(rgroup_add_voter(e->n[leader].g, id, addr, change_cb, &c),
                     0);
    assert_int_equal(c.calls, 0); /* never inside the call */
    assert_true(run_until(e, change_done, &c, WAIT_MS));
    assert_int_equal(c.status, 0);
    assert_int_equal(c.calls, 1);
}

static void remove_and_wait(struct env *e, unsigned leader, unsigned id)
{
    struct change c = {0};

    assert_int_equal(
        rgroup_remove_member(e->n[leader].g, id, change_cb, &c), 0);
    assert_int_equal(c.calls, 0);
    assert_true(run_until(e, change_done, &c, WAIT_MS));
    assert_int_equal(c.status, 0);
    assert_int_equal(c.calls, 1);
}

/* A replica started with join on a pristine directory has no
 * configuration; the leader adds it (spare, caught up, promoted) and it
 * replicates like the others. Members are removed, the leader last (it
 * hands over first); every call is idempotent, one change at a time. */
static void test_membership(void **state)
{
    struct env *e = *state;
    struct rgroup_member_info m[RGROUP_MAX_MEMBERS];
    struct rgroup_config cfg;
    struct has_voters hv;
    struct change c = {0};
    struct change busy = {0};
    struct sm_want w;
    char addr[64];
    unsigned f;
    unsigned i;
    int l;
    int l2;

    start_cluster(e, 8, 0);
    l = ready_leader(e);
    assert_true(l >= 0);
    submit_and_wait(e, e->n[l].g, 30, 1);
    assert_int_equal(voters(e->n[l].g), 3);

    /* node 4 joins: no bootstrap, so no configuration of its own */
    snprintf(e->n[3].dir, sizeof e->n[3].dir, "%s/node4", e->root);
    config(e, &cfg, 3, 4);
    cfg.join = true;
    start_node(e, 3, &cfg);
    e->n_nodes = 4;
    assert_int_equal(rgroup_members(e->n[3].g, m, RGROUP_MAX_MEMBERS), 0);
    run_until(e, false_pred, NULL, 700); /* it would have elected itself */
    assert_false(rgroup_is_leader(e->n[3].g));
    assert_int_equal(e->n[3].sm.n, 0);

    f = ((unsigned)l + 1) % 3;
    snprintf(addr, sizeof addr, "127.0.0.1:%u", e->port0 + 3);
    assert_int_equal(rgroup_add_voter(e->n[f].g, 4, addr, change_cb, &c),
                     RGROUP_ENOTLEADER);
    assert_int_equal(rgroup_add_voter(e->n[l].g, 4, addr, change_cb, &c), 0);
    assert_int_equal(rgroup_add_voter(e->n[l].g, 5, addr, change_cb, &busy),
                     RGROUP_EBUSY);
    assert_int_equal(rgroup_remove_member(e->n[l].g, 5, change_cb, &busy),
                     RGROUP_EBUSY);
    assert_true(run_until(e, change_done, &c, WAIT_MS));
    assert_int_equal(c.status, 0);
    assert_int_equal(busy.calls, 0);
    assert_int_equal(voters(e->n[l].g), 4);
    w = (struct sm_want){1u << 3, 30};
    assert_true(run_until(e, sm_has, &w, WAIT_MS));
    assert_counts_up(&e->n[3].sm, 30);
    hv = (struct has_voters){3, 4};
    assert_true(run_until(e, node_has_voters, &hv, WAIT_MS));
    assert_int_equal(rgroup_members(e->n[3].g, m, RGROUP_MAX_MEMBERS), 4);
    for (i = 0; i < 4; i++) {
        assert_int_equal(m[i].id, i + 1);
        assert_string_equal(m[i].role, "voter");
    }
    submit_and_wait(e, e->n[l].g, 10, 31);
    w = (struct sm_want){15, 40};
    assert_true(run_until(e, sm_has, &w, WAIT_MS));

    /* again: nothing to do, still called back (later) */
    add_voter_and_wait(e, (unsigned)l, 4);
    assert_int_equal(voters(e->n[l].g), 4);
    /* an address or an id another member has */
    assert_int_equal(rgroup_add_voter(e->n[l].g, 5, addr, change_cb, &busy),
                     RGROUP_EINVAL);
    snprintf(addr, sizeof addr, "127.0.0.1:%u", e->port0 + 4);
    assert_int_equal(rgroup_add_voter(e->n[l].g, 4, addr, change_cb, &busy),
                     RGROUP_EINVAL);
    assert_int_equal(rgroup_add_voter(e->n[l].g, 0, addr, change_cb, &busy),
                     RGROUP_EINVAL);
    assert_int_equal(busy.calls, 0);

    /* remove a follower (not node 4), then one that is no member */
    remove_and_wait(e, (unsigned)l, f + 1);
    assert_int_equal(voters(e->n[l].g), 3);
    close_node(e, f);
    remove_and_wait(e, (unsigned)l, 9);
    submit_and_wait(e, e->n[l].g, 10, 41);
    w = (struct sm_want){15u & ~(1u << f), 50};
    assert_true(run_until(e, sm_has, &w, WAIT_MS));

    /* the leader asked to remove itself hands over instead */
    assert_int_equal(
        rgroup_remove_member(e->n[l].g, (uint64_t)l + 1, change_cb, &busy),
        RGROUP_ESELF);
    assert_int_equal(busy.calls, 0);
    run_until(e, false_pred, NULL, 100);
    assert_true(run_until(e, some_ready, NULL, WAIT_MS));
    l2 = ready_leader(e);
    assert_true(l2 >= 0 && l2 != l && (unsigned)l2 != f);
    print_message("    leadership moved from %d to %d\n", l + 1, l2 + 1);
    remove_and_wait(e, (unsigned)l2, (uint64_t)l + 1);
    assert_int_equal(voters(e->n[l2].g), 2);
    close_node(e, (unsigned)l);
    submit_and_wait(e, e->n[l2].g, 5, 51);
    w = (struct sm_want){15u & ~(1u << f) & ~(1u << l), 55};
    assert_true(run_until(e, sm_has, &w, WAIT_MS));
    assert_counts_up(&e->n[3].sm, 55);

    /* the last voter stays */
    {
        unsigned other = (unsigned)l2 == 3 ? 0 : 3;
        for (i = 0; i < 4; i++) {
            if (i != (unsigned)l2 && i != (unsigned)l && i != f) {
                other = i;
            }
        }
        remove_and_wait(e, (unsigned)l2, other + 1);
        close_node(e, other);
        assert_int_equal(voters(e->n[l2].g), 1);
        assert_int_equal(rgroup_remove_member(e->n[l2].g, (uint64_t)l2 + 1,
                                              change_cb, &busy),
                         RGROUP_EINVAL);
    }
    close_all(e);
}

/* A member added before its process runs: it joins as a spare, raft gives
 * up catching it up (RGROUP_ECATCHUP) and it stays a spare until removed.
 * Closing the leader while a promotion waits: called back once, with an
 * unknown outcome. */
static void test_membership_unreachable(void **state)
{
    struct env *e = *state;
    struct rgroup_member_info m[RGROUP_MAX_MEMBERS];
    struct change c = {0};
    char addr[64];
    unsigned n;
    int l;

    start_cluster(e, 11, 0);
    l = ready_leader(e);
    assert_true(l >= 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%u", e->port0 + 3); /* no one */
    assert_int_equal(rgroup_add_voter(e->n[l].g, 4, addr, change_cb, &c), 0);
    assert_true(run_until(e, change_done, &c, 30000));
    assert_int_equal(c.status, RGROUP_ECATCHUP);
    n = rgroup_members(e->n[l].g, m, RGROUP_MAX_MEMBERS);
    assert_int_equal(n, 4);
    assert_int_equal(m[3].id, 4);
    assert_string_equal(m[3].role, "spare");
    assert_int_equal(voters(e->n[l].g), 3);
    submit_and_wait(e, e->n[l].g, 5, 1); /* a spare does not count */
    remove_and_wait(e, (unsigned)l, 4);
    assert_int_equal(rgroup_members(e->n[l].g, m, RGROUP_MAX_MEMBERS), 3);

    c = (struct change){0};
    assert_int_equal(rgroup_add_voter(e->n[l].g, 4, addr, change_cb, &c), 0);
    run_until(e, false_pred, NULL, 300);
    assert_int_equal(c.calls, 0);
    close_all(e);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.status, RGROUP_EUNKNOWN);
}

/* ---- replica identity (raft/ident.h) ------------------------------------ */

/* Node i's data directory, which keeps its markers; its group lives in
 * "<node dir>/test". */
static void node_dir(struct env *e, unsigned i, char *out, size_t len)
{
    snprintf(out, len, "%s/node%u", e->root, i + 1);
}

static void start_marked(struct env *e, unsigned i, bool rejoin)
{
    struct rgroup_config cfg;
    char markers[96];

    node_dir(e, i, markers, sizeof markers);
    snprintf(e->n[i].dir, sizeof e->n[i].dir, "%s/test", markers);
    config(e, &cfg, i, 3);
    cfg.marker_dir = markers;
    cfg.rejoin = rejoin;
    start_node(e, i, &cfg);
}

/* rgroup_new of node i as configured (marker kept, no rejoin) fails; its
 * message into @err. */
static void start_marked_refused(struct env *e, unsigned i, uint64_t id,
                                 char *err, size_t errlen)
{
    struct rgroup_config cfg;
    struct rgroup_fsm fsm = tsm_ops;
    char markers[128];

    node_dir(e, i, markers, sizeof markers);
    config(e, &cfg, i, 3);
    cfg.id = id;
    cfg.marker_dir = markers;
    fsm.data = &e->n[i].sm;
    assert_null(rgroup_new(&e->loop, &cfg, &fsm, err, errlen));
    print_message("    refused: %s\n", err);
}

/* A voter of a running group whose data directory is emptied must not
 * bootstrap again (it would have term 0 and no vote): it refuses to start,
 * naming the way out. Removed from the group, then started with rejoin, it
 * starts empty and unconfigured, is added back and catches up; then it
 * restarts normally. A marker of another member id is refused. */
static void test_lost_replica(void **state)
{
    struct env *e = *state;
    struct rgroup_member_info m[RGROUP_MAX_MEMBERS];
    char markers[128];
    char path[256];
    char err[512];
    struct sm_want w;
    unsigned f;
    unsigned i;
    int l;

    e->port0 = port_base(12);
    e->n_nodes = 3;
    for (i = 0; i < 3; i++) {
        start_marked(e, i, false);
    }
    assert_true(run_until(e, some_ready, NULL, WAIT_MS));
    l = ready_leader(e);
    assert_true(l >= 0);
    submit_and_wait(e, e->n[l].g, 20, 1);
    w = (struct sm_want){7, 20};
    assert_true(run_until(e, sm_has, &w, WAIT_MS));
    for (i = 0; i < 3; i++) {
        node_dir(e, i, markers, sizeof markers);
        snprintf(path, sizeof path, "%s/test.member", markers);
        assert_int_equal(access(path, F_OK), 0);
    }

    /* a follower loses its group directory */
    f = ((unsigned)l + 1) % 3;
    close_node(e, f);
    assert_int_equal(rm_tree(e->n[f].dir), 0);
    err[0] = '\0';
    start_marked_refused(e, f, f + 1, err, sizeof err);
    assert_non_null(strstr(err, "group test"));
    assert_non_null(strstr(err, "ringmqctl member remove"));
    assert_non_null(strstr(err, "--rejoin"));
    /* refused before raft touched it: still empty, still refused */
    start_marked_refused(e, f, f + 1, err, sizeof err);

    /* another member id on this node's markers */
    start_marked_refused(e, f, ((f + 1) % 3) + 1, err, sizeof err);
    assert_non_null(strstr(err, "says this node is member"));

    /* the documented way back: remove, start with rejoin, add */
    remove_and_wait(e, (unsigned)l, f + 1);
    free(e->n[f].sm.vals);
    memset(&e->n[f].sm, 0, sizeof e->n[f].sm);
    start_marked(e, f, true);
    assert_int_equal(rgroup_members(e->n[f].g, m, RGROUP_MAX_MEMBERS), 0);
    add_voter_and_wait(e, (unsigned)l, f + 1);
    submit_and_wait(e, e->n[l].g, 10, 21);
    w = (struct sm_want){7, 30};
    assert_true(run_until(e, sm_has, &w, WAIT_MS));
    assert_counts_up(&e->n[f].sm, 30);

    /* its new data is known: a plain restart is a restart */
    close_node(e, f);
    free(e->n[f].sm.vals);
    memset(&e->n[f].sm, 0, sizeof e->n[f].sm);
    start_marked(e, f, false);
    assert_true(run_until(e, sm_has, &w, WAIT_MS));
    assert_counts_up(&e->n[f].sm, 30);
    close_all(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_single_member, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_mid_slices, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_slices_reuse_chunks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close_waiting_for_chunk, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_off_loop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_log_memory_bound, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_batch_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_fails_pending, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queued_deadline, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invariants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queued_deadline_stuck, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_three_members, setup, teardown),
        cmocka_unit_test_setup_teardown(test_members_by_host_name, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_quorum_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_membership, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_replica, setup, teardown),
        cmocka_unit_test_setup_teardown(test_membership_unreachable, setup,
                                        teardown),
    };

    signal(SIGPIPE, SIG_IGN); /* raft's TCP writes to closed peers */
    log_init("test_group", getenv("TEST_VERBOSE") ? LOG_DEBUG : LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
