/*
 * test_raft_fixture: the rfsm adapter (raft/fsm.h) driven by raft_fixture, a
 * deterministic in-memory cluster of 3 (simulated clock, no disk, no
 * sockets). The state machine under the adapter records every applied
 * command in order, their sum and the entry time, and checks @mine.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/fixture.h>

#include "common/lz.h"
#include "raft/fsm.h"
#include "tests/unit/lib/rfix.h"
#include "tests/unit/lib/tsm.h"
#include "raft_entry.pb-c.h"

#define N 3
#define POOL 8192

/* ---- test state machine ------------------------------------------------ */

/* struct tsm: tests/unit/lib/tsm.h */


/* ---- fixture ----------------------------------------------------------- */

struct pending {
    uint64_t seq;
    struct rgroup_cmd *head;
    size_t n;
};

struct srv {
    struct rfsm a;
    struct tsm sm;
    uint64_t proposer;
    struct pending pend[512];
    unsigned n_pend;
};

struct fx {
    struct raft_fixture f;
    struct srv s[N];
    uint64_t seq;
    struct rgroup_cmd cmds[POOL];
    uint32_t payloads[POOL];
    size_t used;
    struct rfix_counts cb;
};

/* claim hook: waiters registered by propose() on this server */
static struct rgroup_cmd *srv_claim(void *data,
                                    uint64_t proposer,
                                    uint64_t seq,
                                    size_t n_cmds)
{
    struct srv *s = data;
    unsigned i;

    if (proposer != s->proposer) {
        return NULL;
    }
    for (i = 0; i < s->n_pend; i++) {
        if (s->pend[i].seq == seq && s->pend[i].head != NULL) {
            struct rgroup_cmd *h = s->pend[i].head;

            assert_int_equal(s->pend[i].n, n_cmds);
            s->pend[i].head = NULL; /* claimed once */
            return h;
        }
    }
    return NULL;
}

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof *x);
    struct raft_fsm *fsms[N];
    unsigned i;

    for (i = 0; i < N; i++) {
        struct srv *s = &x->s[i];

        rfsm_init(&s->a, &tsm_ops);
        s->a.user.data = &s->sm;
        s->a.claim = srv_claim;
        s->a.claim_data = s;
        s->proposer = 1000 + i;
        fsms[i] = &s->a.raft_fsm;
    }
    rfix_start(&x->f, fsms, N);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    unsigned i;

    raft_fixture_close(&x->f); /* the fsms must outlive this */
    for (i = 0; i < N; i++) {
        rfsm_close(&x->s[i].a);
        free(x->s[i].sm.vals);
    }
    free(x);
    return 0;
}

/* Propose one batch of @n values on server @i; returns its raft index. */
static raft_index propose(struct fx *x,
                          unsigned i,
                          const uint32_t *vals,
                          size_t n,
                          uint64_t time_ms)
{
    struct srv *s = &x->s[i];
    struct rgroup_cmd *head = &x->cmds[x->used];
    struct raft_buffer buf;
    size_t k;

    assert_true(x->used + n <= POOL);
    for (k = 0; k < n; k++) {
        struct rgroup_cmd *c = &x->cmds[x->used];

        x->payloads[x->used] = vals[k];
        c->payload = &x->payloads[x->used];
        c->len = sizeof(uint32_t);
        c->next = k + 1 < n ? c + 1 : NULL;
        x->used++;
    }
    x->seq++;
    assert_true(s->n_pend < 512);
    s->pend[s->n_pend++] = (struct pending){x->seq, head, n};
    assert_int_equal(rfsm_encode(time_ms, s->proposer, x->seq, head, n, &buf),
                     0);
    return rfix_apply(raft_fixture_get(&x->f, i), &buf, &x->cb);
}

/* batches of @per values counting up from *next */
static raft_index propose_many(struct fx *x,
                               unsigned i,
                               unsigned batches,
                               unsigned per,
                               uint32_t *next)
{
    raft_index last = 0;
    uint32_t vals[64];
    unsigned b;
    unsigned k;

    for (b = 0; b < batches; b++) {
        for (k = 0; k < per; k++) {
            vals[k] = (*next)++;
        }
        last = propose(x, i, vals, per, 1700000000000ull + b);
    }
    return last;
}

static void assert_sm_counts_up(const struct tsm *t, uint32_t upto)
{
    uint32_t v;

    assert_int_equal(t->n, upto);
    for (v = 0; v < upto; v++) {
        assert_int_equal(t->vals[v], v + 1);
    }
    assert_int_equal(t->sum, (uint64_t)upto * (upto + 1) / 2);
}

/* ---- tests ------------------------------------------------------------- */

static void test_elect_and_apply_batches(void **state)
{
    struct fx *x = *state;
    uint32_t next = 1;
    raft_index last;
    unsigned l;
    unsigned i;

    assert_true(raft_fixture_step_until_has_leader(&x->f, 5000));
    l = raft_fixture_leader_index(&x->f);
    last = propose_many(x, l, 10, 5, &next);
    assert_true(raft_fixture_step_until_applied(&x->f, N, last, 10000));
    assert_int_equal(x->cb.ok, 10);
    for (i = 0; i < N; i++) {
        struct srv *s = &x->s[i];

        assert_sm_counts_up(&s->sm, 50);
        assert_int_equal(s->a.entries_applied, 10);
        assert_int_equal(s->a.cmds_applied, 50);
        assert_int_equal(s->sm.last_time, 1700000000000ull + 9);
        /* only the proposer sees its commands as mine */
        assert_int_equal(s->sm.mine_seen, i == l ? 50 : 0);
    }
}

static void test_kill_leader_and_catch_up(void **state)
{
    struct fx *x = *state;
    uint32_t next = 1;
    raft_index last;
    unsigned l;
    unsigned nl;
    unsigned other;
    unsigned i;

    assert_true(raft_fixture_step_until_has_leader(&x->f, 5000));
    l = raft_fixture_leader_index(&x->f);
    last = propose_many(x, l, 5, 4, &next);
    assert_true(raft_fixture_step_until_applied(&x->f, N, last, 10000));

    raft_fixture_kill(&x->f, l);
    assert_true(raft_fixture_step_until_has_no_leader(&x->f, 5000));
    assert_true(raft_fixture_step_until_has_leader(&x->f, 20000));
    nl = raft_fixture_leader_index(&x->f);
    assert_int_not_equal(nl, l);
    last = propose_many(x, nl, 5, 4, &next);
    for (other = 0; other < N; other++) {
        if (other != l && other != nl) {
            break;
        }
    }
    assert_true(raft_fixture_step_until_applied(&x->f, other, last, 10000));
    assert_sm_counts_up(&x->s[nl].sm, 40);
    assert_int_equal(x->s[l].sm.n, 20); /* dead: missed the new batches */

    raft_fixture_revive(&x->f, l);
    assert_true(raft_fixture_step_until_applied(&x->f, N, last, 20000));
    for (i = 0; i < N; i++) {
        assert_sm_counts_up(&x->s[i].sm, 40);
    }
    assert_int_equal(x->s[nl].sm.mine_seen, 20);
}

static void test_snapshot_install(void **state)
{
    struct fx *x = *state;
    uint32_t next = 1;
    raft_index last;
    unsigned i;

    for (i = 0; i < N; i++) {
        raft_set_snapshot_threshold(raft_fixture_get(&x->f, i), 8);
        raft_set_snapshot_trailing(raft_fixture_get(&x->f, i), 2);
    }
    raft_fixture_elect(&x->f, 0);
    raft_fixture_kill(&x->f, 2); /* follower 2 misses everything */
    last = propose_many(x, 0, 60, 3, &next);
    assert_true(raft_fixture_step_until_applied(&x->f, 1, last, 20000));
    assert_true(raft_fixture_get(&x->f, 0)->log.snapshot.last_index > 0);
    assert_true(x->s[0].a.snapshots_taken > 0);
    assert_int_equal(x->s[2].sm.n, 0);

    raft_fixture_revive(&x->f, 2); /* too far behind: InstallSnapshot */
    assert_true(raft_fixture_step_until_applied(&x->f, 2, last, 30000));
    assert_true(x->s[2].a.snapshots_restored >= 1);
    assert_true(x->s[2].sm.restores >= 1);
    for (i = 0; i < N; i++) {
        assert_sm_counts_up(&x->s[i].sm, 180);
    }
    /* the restored follower applied fewer entries itself */
    assert_true(x->s[2].a.entries_applied < 60);

    /* and keeps applying normally afterwards */
    last = propose_many(x, 0, 3, 3, &next);
    assert_true(raft_fixture_step_until_applied(&x->f, N, last, 10000));
    for (i = 0; i < N; i++) {
        assert_sm_counts_up(&x->s[i].sm, 189);
    }
}

static void test_corrupt_entry_skipped(void **state)
{
    struct fx *x = *state;
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x07};
    struct raft_buffer buf;
    uint32_t next = 1;
    raft_index last;
    unsigned l;
    unsigned i;

    assert_true(raft_fixture_step_until_has_leader(&x->f, 5000));
    l = raft_fixture_leader_index(&x->f);
    last = propose_many(x, l, 2, 2, &next);
    buf.len = sizeof junk;
    buf.base = raft_malloc(buf.len);
    memcpy(buf.base, junk, sizeof junk);
    rfix_apply(raft_fixture_get(&x->f, l), &buf, &x->cb);
    last = propose_many(x, l, 2, 2, &next);
    assert_true(raft_fixture_step_until_applied(&x->f, N, last, 10000));
    for (i = 0; i < N; i++) {
        assert_int_equal(x->s[i].a.corrupt_entries, 1);
        assert_int_equal(x->s[i].a.entries_applied, 4);
        assert_sm_counts_up(&x->s[i].sm, 8);
    }
    assert_int_equal(x->cb.ok, 5); /* the junk entry is "applied" as a no-op */
}

/* Adapter without raft: snapshot -> compressed raft buffer -> restore. */
static void test_snapshot_round_trip(void **state)
{
    struct rfsm a;
    struct rfsm b;
    struct tsm ta = {0};
    struct tsm tb = {0};
    struct raft_buffer *bufs = NULL;
    struct raft_buffer junk;
    unsigned n = 0;
    uint32_t v;

    (void)state;
    rfsm_init(&a, &tsm_ops);
    a.user.data = &ta;
    rfsm_init(&b, &tsm_ops);
    b.user.data = &tb;
    for (v = 1; v <= 5000; v++) {
        tsm_apply(&ta, 1, &v, sizeof v, NULL);
    }

    assert_int_equal(a.raft_fsm.snapshot(&a.raft_fsm, &bufs, &n), 0);
    assert_int_equal(n, 1);
    assert_true(lz_is_compressed(bufs[0].base, bufs[0].len));
    assert_int_equal(a.snapshots_taken, 1);
    /* restore owns (and frees) bufs[0].base on success */
    assert_int_equal(b.raft_fsm.restore(&b.raft_fsm, &bufs[0]), 0);
    raft_free(bufs);
    assert_int_equal(b.snapshots_restored, 1);
    assert_sm_counts_up(&tb, 5000);

    /* corrupt: refused, the buffer stays the caller's */
    junk.len = 64;
    junk.base = raft_malloc(junk.len);
    memset(junk.base, 0x5a, junk.len);
    assert_int_equal(b.raft_fsm.restore(&b.raft_fsm, &junk), RAFT_MALFORMED);
    memcpy(junk.base, "RLZ4", 4); /* right magic, garbage after it */
    assert_int_equal(b.raft_fsm.restore(&b.raft_fsm, &junk), RAFT_MALFORMED);
    raft_free(junk.base);
    assert_sm_counts_up(&tb, 5000); /* untouched */

    /* the state machine rejects a well-compressed but bad snapshot */
    {
        void *z;
        size_t zlen;

        assert_int_equal(lz_compress("short", 5, raft_malloc, &z, &zlen), 0);
        junk.base = z;
        junk.len = zlen;
        assert_int_equal(b.raft_fsm.restore(&b.raft_fsm, &junk),
                         RAFT_MALFORMED);
        raft_free(z);
    }
    /* a snapshot size cap */
    b.max_snapshot_raw = 100;
    assert_int_equal(a.raft_fsm.snapshot(&a.raft_fsm, &bufs, &n), 0);
    assert_int_equal(b.raft_fsm.restore(&b.raft_fsm, &bufs[0]), RAFT_MALFORMED);
    raft_free(bufs[0].base);
    raft_free(bufs);

    /* a failing state machine snapshot is a transient RAFT_BUSY */
    ta.fail_snapshot = true;
    assert_int_equal(a.raft_fsm.snapshot(&a.raft_fsm, &bufs, &n), RAFT_BUSY);
    assert_int_equal(a.snapshot_failures, 1);
    rfsm_close(&a);
    rfsm_close(&b);
    free(ta.vals);
    free(tb.vals);
}

/* Encode + apply without raft: mine lookup, empty commands, empty batch. */
static struct rgroup_cmd *one_claim(void *data,
                                    uint64_t proposer,
                                    uint64_t seq,
                                    size_t n_cmds)
{
    (void)n_cmds;
    return proposer == 7 && seq == 3 ? data : NULL;
}

static void test_encode_apply(void **state)
{
    struct rfsm a;
    struct tsm t = {0};
    struct rgroup_cmd c[3];
    uint32_t v[3] = {10, 20, 30};
    struct raft_buffer buf;
    void *result = &buf;
    unsigned i;

    (void)state;
    rfsm_init(&a, &tsm_ops);
    a.user.data = &t;
    a.claim = one_claim;
    a.claim_data = &c[0];
    for (i = 0; i < 3; i++) {
        c[i].payload = &v[i];
        c[i].len = 4;
        c[i].next = i < 2 ? &c[i + 1] : NULL;
    }
    assert_int_equal(rfsm_encode(42, 7, 3, c, 3, &buf), 0);
    assert_true(buf.len <= RFSM_BATCH_OVERHEAD + 3 * rfsm_cmd_size(4));
    assert_int_equal(a.raft_fsm.apply(&a.raft_fsm, &buf, &result), 0);
    assert_null(result);
    assert_int_equal(t.n, 3);
    assert_int_equal(t.mine_seen, 3);
    assert_int_equal(t.last_time, 42);
    raft_free(buf.base);

    /* same batch from another proposer: not mine */
    assert_int_equal(rfsm_encode(43, 8, 3, c, 3, &buf), 0);
    assert_int_equal(a.raft_fsm.apply(&a.raft_fsm, &buf, &result), 0);
    assert_int_equal(t.n, 6);
    assert_int_equal(t.mine_seen, 3);
    raft_free(buf.base);

    /* empty batch: applied, no commands */
    assert_int_equal(rfsm_encode(44, 8, 4, NULL, 0, &buf), 0);
    assert_int_equal(a.raft_fsm.apply(&a.raft_fsm, &buf, &result), 0);
    assert_int_equal(t.n, 6);
    assert_int_equal(a.entries_applied, 3);
    raft_free(buf.base);

    /* every encoding is a multiple of 8 bytes (raft 0.15 libuv log) and
     * decodes back, whatever the command sizes */
    {
        static uint8_t data[300];
        struct rgroup_cmd cs[20];
        size_t k;
        size_t j;
        Ringmq__RaftBatch *d;

        for (k = 0; k < 20; k++) {
            size_t bound = RFSM_BATCH_OVERHEAD;

            for (j = 0; j < k; j++) {
                cs[j].payload = data;
                cs[j].len = (j * 37 + k) % 300;
                cs[j].next = j + 1 < k ? &cs[j + 1] : NULL;
                bound += rfsm_cmd_size(cs[j].len);
            }
            assert_int_equal(
                rfsm_encode(k * 1000003, k, k * k, k ? cs : NULL, k, &buf), 0);
            assert_int_equal(buf.len % 8, 0);
            assert_true(buf.len > 0 && buf.len <= bound);
            d = ringmq__raft_batch__unpack(NULL, buf.len, buf.base);
            assert_non_null(d);
            assert_int_equal(d->n_cmds, k);
            assert_int_equal(d->seq, k * k);
            assert_int_equal(d->time_ms, k * 1000003);
            for (j = 0; j < k; j++) {
                assert_int_equal(d->cmds[j].len, cs[j].len);
            }
            ringmq__raft_batch__free_unpacked(d, NULL);
            raft_free(buf.base);
        }
    }

    /* truncated entry: corrupt, skipped */
    assert_int_equal(rfsm_encode(45, 8, 5, c, 3, &buf), 0);
    buf.len -= 2;
    assert_int_equal(a.raft_fsm.apply(&a.raft_fsm, &buf, &result), 0);
    assert_int_equal(a.corrupt_entries, 1);
    assert_int_equal(t.n, 6);
    raft_free(buf.base);
    rfsm_close(&a);
    free(t.vals);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_elect_and_apply_batches, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_kill_leader_and_catch_up, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_install, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_entry_skipped, setup,
                                        teardown),
        cmocka_unit_test(test_snapshot_round_trip),
        cmocka_unit_test(test_encode_apply),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
