/*
 * test_unknown_outcome: a command whose outcome is unknown at one leader
 * and is committed by the next, on raft_fixture (3 servers, simulated
 * clock and network) with the queue state machine under the rfsm adapter.
 *
 * The leader appends a publish (ENQUEUE with a dedup id) and replicates it,
 * but the followers' acknowledgements never reach it; it is then lost, so
 * the client learns nothing. The new leader, elected among the followers
 * that hold the entry, commits it. The client sends the same publish again
 * (as the edge does after an unknown outcome): it is DUPLICATE, and every
 * replica, the old leader too once it is back, holds the message once.
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

#include "raft/fsm.h"
#include "tests/unit/lib/rfix.h"
#include "sm/mq_sm.h"

#define N 3
#define T0 1700000000000ull

/* The command the test proposes: a publish of @body by @client as @seq. */
struct pub {
    uint64_t client;
    uint64_t seq;
    char body[8];
};

struct srv {
    struct rfsm a;
    struct mq_sm *sm;
    enum mq_sm_status last; /* of the last publish applied */
    unsigned applied;
};

struct fx {
    struct raft_fixture f;
    struct srv s[N];
    uint64_t seq;
    struct rfix_counts outcomes;
};

static void srv_apply(void *data, uint64_t time_ms, const void *cmd,
                      size_t len, struct rgroup_cmd *mine)
{
    struct srv *s = data;
    struct pub p;
    struct mq_sm_cmd c;
    struct mq_sm_result res;

    (void)mine;
    assert_int_equal(len, sizeof(p));
    memcpy(&p, cmd, sizeof(p));
    memset(&c, 0, sizeof(c));
    c.type = MQ_SM_ENQUEUE;
    c.vhost = "/";
    c.vhost_len = 1;
    c.queue = "q";
    c.queue_len = 1;
    c.client_id = p.client;
    c.seq = p.seq;
    c.body = p.body;
    c.body_len = strlen(p.body);
    mq_sm_apply(s->sm, time_ms, &c, &res);
    s->last = res.status;
    s->applied++;
    mq_sm_result_clear(&res);
}

static int srv_snapshot(void *data, void **buf, size_t *len)
{
    struct srv *s = data;

    return mq_sm_snapshot(s->sm, malloc, buf, len);
}

static int srv_restore(void *data, const void *buf, size_t len)
{
    struct srv *s = data;

    return mq_sm_restore(s->sm, buf, len);
}

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof(*x));
    struct raft_fsm *fsms[N];
    unsigned i;

    for (i = 0; i < N; i++) {
        struct srv *s = &x->s[i];
        struct rgroup_fsm ops = {s, srv_apply, srv_snapshot, srv_restore};
        struct mq_sm_cmd c;
        struct mq_sm_result res;

        s->sm = mq_sm_new(NULL);
        assert_non_null(s->sm);
        /* the same queue on every replica, before the log */
        memset(&c, 0, sizeof(c));
        c.type = MQ_SM_DECLARE;
        c.vhost = "/";
        c.vhost_len = 1;
        c.queue = "q";
        c.queue_len = 1;
        c.durable = true;
        mq_sm_apply(s->sm, T0, &c, &res);
        assert_int_equal(res.status, MQ_SM_OK);
        mq_sm_result_clear(&res);
        rfsm_init(&s->a, &ops);
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
        mq_sm_free(x->s[i].sm);
    }
    free(x);
    return 0;
}

/* Propose the publish (@client, @seq, @body) at server @i; its index. */
static raft_index publish(struct fx *x, unsigned i, uint64_t client,
                          uint64_t seq, const char *body)
{
    struct pub p = {client, seq, {0}};
    struct rgroup_cmd c = {0};
    struct raft_buffer buf;

    snprintf(p.body, sizeof(p.body), "%s", body);
    c.payload = &p;
    c.len = sizeof(p);
    x->seq++;
    assert_int_equal(rfsm_encode(T0 + x->seq, 1000 + i, x->seq, &c, 1, &buf),
                     0);
    return rfix_apply(raft_fixture_get(&x->f, i), &buf, &x->outcomes);
}

static uint64_t ready(const struct srv *s)
{
    struct mq_sm_queue_stats qs;

    assert_int_equal(mq_sm_queue_stats(s->sm, "/", 1, "q", 1, &qs), 0);
    return qs.ready;
}

static void test_unknown_then_committed_by_the_next_leader(void **state)
{
    struct fx *x = *state;
    unsigned l, nl, i, other = N;
    raft_index idx, again;

    assert_true(raft_fixture_step_until_has_leader(&x->f, 5000));
    l = raft_fixture_leader_index(&x->f);
    /* the followers hear the leader; the leader hears nobody */
    for (i = 0; i < N; i++) {
        if (i != l) {
            raft_fixture_saturate(&x->f, i, l);
        }
    }
    idx = publish(x, l, 7, 1, "m1");
    while (raft_last_index(raft_fixture_get(&x->f, (l + 1) % N)) < idx ||
           raft_last_index(raft_fixture_get(&x->f, (l + 2) % N)) < idx) {
        assert_non_null(raft_fixture_step(&x->f));
    }
    /* appended everywhere, committed nowhere: the leader is lost and its
     * client learns nothing */
    assert_true(raft_fixture_get(&x->f, l)->commit_index < idx);
    assert_int_equal(x->outcomes.ok, 0);
    raft_fixture_kill(&x->f, l);
    assert_true(raft_fixture_step_until_has_no_leader(&x->f, 5000));
    assert_true(raft_fixture_step_until_has_leader(&x->f, 20000));
    nl = raft_fixture_leader_index(&x->f);
    assert_int_not_equal(nl, l);
    for (i = 0; i < N; i++) {
        if (i != l && i != nl) {
            other = i;
        }
    }
    assert_true(raft_fixture_step_until_applied(&x->f, nl, idx, 10000));
    assert_true(raft_fixture_step_until_applied(&x->f, other, idx, 10000));
    assert_int_equal(ready(&x->s[nl]), 1); /* the new leader committed it */

    /* the client sends it again, as after any unknown outcome */
    again = publish(x, nl, 7, 1, "m1");
    assert_true(raft_fixture_step_until_applied(&x->f, nl, again, 10000));
    assert_true(raft_fixture_step_until_applied(&x->f, other, again, 10000));
    assert_int_equal(x->s[nl].last, MQ_SM_DUPLICATE);
    assert_int_equal(ready(&x->s[nl]), 1);
    assert_int_equal(ready(&x->s[other]), 1);

    /* the old leader comes back and catches up to the same state */
    for (i = 0; i < N; i++) {
        if (i != l) {
            raft_fixture_desaturate(&x->f, i, l);
        }
    }
    raft_fixture_revive(&x->f, l);
    assert_true(raft_fixture_step_until_applied(&x->f, N, again, 20000));
    for (i = 0; i < N; i++) {
        assert_int_equal(ready(&x->s[i]), 1);
        assert_int_equal(mq_sm_digest(x->s[i].sm), mq_sm_digest(x->s[nl].sm));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_unknown_then_committed_by_the_next_leader, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
