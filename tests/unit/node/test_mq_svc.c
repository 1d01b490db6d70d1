/*
 * Unit tests of node/mq_svc over a real single-member rgroup on 127.0.0.1:
 * results from the leader's apply, NOT_LEADER before leadership, the era
 * command, long-poll CHECKOUT (wake on enqueue, timeout, round robin,
 * prefetch, queue deleted), the router lease (seeded from the state when
 * leading starts), deliveries kept across an era, BOOT across a restart,
 * one era command per term (a failed one retried, none again after a
 * not-leader moment), close with parked calls, and message bodies in the
 * body store (a restart from a snapshot and the log delivers them; a freed
 * segment's file goes only after a snapshot past its freeing).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "node/mq_svc.h"
#include "tests/unit/lib/svc_env.h"

#define WAIT_MS 8000

struct fx {
    struct svc_env env;
    struct mq_svc *svc;
    bool closed;
};

struct op {
    struct mq_svc_call call;
    int done;
};

static void op_cb(struct mq_svc_call *call)
{
    struct op *o = call->data;

    o->done++;
}

static void op_init(struct op *o, enum mq_sm_cmd_type type, const char *q)
{
    memset(o, 0, sizeof(*o));
    o->call.cmd.type = type;
    o->call.cmd.vhost = "/";
    o->call.cmd.vhost_len = 1;
    o->call.cmd.queue = q;
    o->call.cmd.queue_len = q != NULL ? strlen(q) : 0;
    o->call.cmd.who.router = 1;
    o->call.cmd.who.conn = 2;
    o->call.cmd.who.channel = 3;
    o->call.cb = op_cb;
    o->call.data = o;
}

static bool op_done(void *arg)
{
    return ((struct op *)arg)->done > 0;
}

static bool svc_leads(void *arg)
{
    return mq_svc_is_leader(arg);
}

static bool svc_ready(void *arg)
{
    return mq_svc_ready(arg);
}

static void start(struct fx *f, const struct mq_svc_config *cfg)
{
    struct rgroup_config g;
    char err[256];

    svc_env_group(&f->env, &g, "s0.mq", 0);
    f->svc = mq_svc_new(&f->env.loop, &g, cfg, err, sizeof(err));
    if (f->svc == NULL) {
        print_error("mq_svc_new: %s\n", err);
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
    mq_svc_close(f->svc, closed_cb, f);
    assert_true(svc_env_run_until(&f->env, is_closed, f, WAIT_MS));
    f->svc = NULL;
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
        stop(f);
    }
    assert_int_equal(svc_env_close(&f->env), 0);
    free(f);
    return 0;
}

/* Submit and wait for the completion; returns the svc code. */
static enum outcome run(struct fx *f, struct op *o)
{
    mq_svc_submit(f->svc, &o->call);
    assert_true(svc_env_run_until(&f->env, op_done, o, WAIT_MS));
    assert_int_equal(o->done, 1);
    return o->call.status;
}

static void declare(struct fx *f, const char *q, bool durable)
{
    struct op o;

    op_init(&o, MQ_SM_DECLARE, q);
    o.call.cmd.durable = durable;
    assert_int_equal(run(f, &o), OUTCOME_OK);
    assert_int_equal(o.call.result.status, MQ_SM_OK);
    mq_sm_result_clear(&o.call.result);
}

static void enqueue(struct fx *f, const char *q, const char *body)
{
    struct op o;

    op_init(&o, MQ_SM_ENQUEUE, q);
    o.call.cmd.body = body;
    o.call.cmd.body_len = strlen(body);
    assert_int_equal(run(f, &o), OUTCOME_OK);
    assert_int_equal(o.call.result.status, MQ_SM_OK);
    mq_sm_result_clear(&o.call.result);
}

static struct mq_sm_queue_stats qstats(struct fx *f, const char *q)
{
    struct mq_sm_queue_stats st;

    assert_int_equal(mq_sm_queue_stats(mq_svc_sm(f->svc), "/", 1, q,
                                       strlen(q), &st),
                     0);
    return st;
}

static void checkout_init(struct op *o, const char *q, uint64_t consumer,
                          uint32_t max, uint32_t wait_ms)
{
    op_init(o, MQ_SM_CHECKOUT, q);
    o->call.cmd.who.consumer = consumer;
    o->call.cmd.max_messages = max;
    o->call.wait_ms = wait_ms;
}

/* Run CHECKOUT @o, which must deliver exactly one message: its tag. */
static uint64_t checkout_one(struct fx *f, struct op *o)
{
    uint64_t tag;

    assert_int_equal(run(f, o), OUTCOME_OK);
    assert_int_equal(o->call.result.n_deliveries, 1);
    tag = o->call.result.deliveries[0].tag;
    mq_sm_result_clear(&o->call.result);
    return tag;
}

/* ------------------------------------------------------------------ tests */

static void test_not_leader_then_basic(void **state)
{
    struct fx *f = *state;
    struct rgroup_config g;
    struct mq_svc_status st;
    struct op o;
    char err[256];

    svc_env_group(&f->env, &g, "s0.mq", 0);
    f->svc = mq_svc_new(&f->env.loop, &g, NULL, err, sizeof(err));
    assert_non_null(f->svc);
    /* raft has not elected itself yet: refused, never proposed */
    op_init(&o, MQ_SM_DECLARE, "q");
    mq_svc_submit(f->svc, &o.call);
    assert_int_equal(o.done, 1);
    assert_int_equal(o.call.status, OUTCOME_NOT_LEADER);
    assert_false(mq_svc_ready(f->svc));
    assert_true(svc_env_run_until(&f->env, svc_leads, f->svc, WAIT_MS));
    assert_int_equal(mq_svc_leader_id(f->svc), 1);
    /* leading at once; ready once LEADER_CHANGED is applied */
    assert_true(svc_env_run_until(&f->env, svc_ready, f->svc, WAIT_MS));

    declare(f, "q", true);
    enqueue(f, "q", "hello");
    checkout_init(&o, "q", 7, 10, 0);
    assert_int_equal(run(f, &o), OUTCOME_OK);
    assert_int_equal(o.call.result.n_deliveries, 1);
    assert_int_equal(o.call.result.deliveries[0].body_len, 5);
    assert_memory_equal(o.call.result.deliveries[0].body, "hello", 5);
    mq_sm_result_clear(&o.call.result);

    /* the era command went first */
    mq_svc_status(f->svc, &st, true);
    assert_int_equal(st.eras, 1);
    assert_false(st.booted);
    assert_int_equal(st.sm.unacked, 1);
    assert_int_not_equal(st.digest, 0);

    /* out of range: answered without proposing */
    op_init(&o, MQ_SM_CMD__COUNT, "q");
    assert_int_equal(run(f, &o), OUTCOME_OK);
    assert_int_equal(o.call.result.status, MQ_SM_BAD_REQUEST);
    assert_string_equal(outcome_name(OUTCOME_NOT_LEADER), "not leader");
}

static void test_long_poll_wake_and_timeout(void **state)
{
    struct fx *f = *state;
    struct mq_svc_status st;
    struct op w;
    struct op t;
    uint64_t t0;

    start(f, NULL);
    declare(f, "q", true);

    checkout_init(&w, "q", 7, 10, 5000);
    mq_svc_submit(f->svc, &w.call);
    svc_env_run_for(&f->env, 100);
    assert_int_equal(w.done, 0);
    mq_svc_status(f->svc, &st, false);
    assert_int_equal(st.waiters, 1);

    enqueue(f, "q", "m1");
    assert_true(svc_env_run_until(&f->env, op_done, &w, WAIT_MS));
    assert_int_equal(w.call.status, OUTCOME_OK);
    assert_int_equal(w.call.result.n_deliveries, 1);
    mq_sm_result_clear(&w.call.result);

    /* nothing comes: OK with no deliveries after about wait_ms */
    checkout_init(&t, "q", 8, 10, 200);
    t0 = uv_now(&f->env.loop);
    mq_svc_submit(f->svc, &t.call);
    assert_true(svc_env_run_until(&f->env, op_done, &t, WAIT_MS));
    assert_int_equal(t.call.status, OUTCOME_OK);
    assert_int_equal(t.call.result.status, MQ_SM_OK);
    assert_int_equal(t.call.result.n_deliveries, 0);
    assert_true(uv_now(&f->env.loop) - t0 >= 200);
    mq_svc_status(f->svc, &st, false);
    assert_int_equal(st.waiters, 0);
    assert_int_equal(st.poll_timeouts, 1);
}

struct rr_consumer {
    struct op poll;
    uint64_t seq;
    char got[8]; /* bodies received, in order */
    size_t n;
};

static void rr_poll(struct fx *f, struct rr_consumer *c, uint64_t id)
{
    checkout_init(&c->poll, "q", id, 100, 5000);
    c->poll.call.cmd.seq = ++c->seq;
    mq_svc_submit(f->svc, &c->poll.call);
}

static bool any_done(void *arg)
{
    struct rr_consumer *c = arg;
    int i;

    for (i = 0; i < 3; i++) {
        if (c[i].poll.done > 0) {
            return true;
        }
    }
    return false;
}

/* Three registered consumers long-polling one queue, six messages
 * published in one go (committed in one entry or several): RabbitMQ's
 * round robin, message by message: 2/2/2, the consumer of message i is
 * that of message i + 3. */
static void test_round_robin(void **state)
{
    /* static: a failed check leaves polls parked until teardown */
    static struct rr_consumer c[3];
    static struct op e[6];
    struct fx *f = *state;
    char owner[6];
    size_t total = 0;
    unsigned i;
    size_t k;

    start(f, NULL);
    declare(f, "q", true);
    memset(c, 0, sizeof(c));
    for (i = 0; i < 3; i++) {
        struct op o;

        op_init(&o, MQ_SM_CONSUME, "q");
        o.call.cmd.who.consumer = 10 + i;
        o.call.cmd.max_messages = 100;
        assert_int_equal(run(f, &o), OUTCOME_OK);
        assert_int_equal(o.call.result.status, MQ_SM_OK);
        mq_sm_result_clear(&o.call.result);
        rr_poll(f, &c[i], 10 + i);
    }
    svc_env_run_for(&f->env, 50);
    for (i = 0; i < 6; i++) {
        op_init(&e[i], MQ_SM_ENQUEUE, "q");
        e[i].call.cmd.body = &"012345"[i];
        e[i].call.cmd.body_len = 1;
        mq_svc_submit(f->svc, &e[i].call);
    }
    while (total < 6) {
        assert_true(svc_env_run_until(&f->env, any_done, c, WAIT_MS));
        for (i = 0; i < 3; i++) {
            struct mq_sm_result *r = &c[i].poll.call.result;

            if (c[i].poll.done == 0) {
                continue;
            }
            assert_int_equal(c[i].poll.call.status, OUTCOME_OK);
            for (k = 0; k < r->n_deliveries; k++) {
                assert_true(c[i].n < sizeof(c[i].got));
                c[i].got[c[i].n++] = *(const char *)r->deliveries[k].body;
                total++;
            }
            mq_sm_result_clear(r);
            rr_poll(f, &c[i], 10 + i);
        }
    }
    for (i = 0; i < 6; i++) {
        assert_int_equal(e[i].done, 1);
        mq_sm_result_clear(&e[i].call.result);
    }
    for (i = 0; i < 3; i++) {
        assert_int_equal(c[i].n, 2);
        for (k = 0; k < c[i].n; k++) {
            owner[c[i].got[k] - '0'] = (char)i;
        }
    }
    for (i = 0; i < 3; i++) {
        assert_int_equal(owner[i], owner[i + 3]);
    }
    assert_int_equal(qstats(f, "q").ready, 0);
}

static void test_prefetch_and_settle(void **state)
{
    struct fx *f = *state;
    struct op c;
    struct op w;
    struct op s;
    uint64_t tag;

    start(f, NULL);
    declare(f, "q", true);
    enqueue(f, "q", "a");
    enqueue(f, "q", "b");
    checkout_init(&c, "q", 7, 1, 0);
    c.call.cmd.prefetch = 1;
    tag = checkout_one(f, &c);

    /* ready > 0 but prefetch is full: proposed, empty, parked again */
    checkout_init(&w, "q", 7, 1, 5000);
    w.call.cmd.prefetch = 1;
    mq_svc_submit(f->svc, &w.call);
    svc_env_run_for(&f->env, 200);
    assert_int_equal(w.done, 0);

    op_init(&s, MQ_SM_SETTLE, NULL);
    s.call.cmd.tag = tag;
    assert_int_equal(run(f, &s), OUTCOME_OK);
    assert_int_equal(s.call.result.count, 1);
    mq_sm_result_clear(&s.call.result);
    assert_true(svc_env_run_until(&f->env, op_done, &w, WAIT_MS));
    assert_int_equal(w.call.result.n_deliveries, 1);
    assert_memory_equal(w.call.result.deliveries[0].body, "b", 1);
    mq_sm_result_clear(&w.call.result);
}

/* A long poll sent again with the seq of one that delivered (its answer
 * lost with a leader) is a retry: its answer is what that one delivered
 * and is still unacked, or that nothing is, known at once. It is never
 * parked: before, with the queue empty, it waited for a new message or its
 * whole wait, the consumer's messages held unseen meanwhile, and a retry
 * with nothing left was parked again after every wakeup. */
static void test_long_poll_retry_not_parked(void **state)
{
    struct fx *f = *state;
    struct mq_svc_status st;
    struct op o;
    uint64_t tag;

    start(f, NULL);
    declare(f, "q", true);
    op_init(&o, MQ_SM_CONSUME, "q");
    o.call.cmd.who.consumer = 7;
    o.call.cmd.max_messages = 10;
    assert_int_equal(run(f, &o), OUTCOME_OK);
    assert_int_equal(o.call.result.status, MQ_SM_OK);
    mq_sm_result_clear(&o.call.result);
    enqueue(f, "q", "a");
    checkout_init(&o, "q", 7, 10, 5000);
    o.call.cmd.seq = 1;
    tag = checkout_one(f, &o);

    /* the same again, the queue empty now: its delivery, at once */
    checkout_init(&o, "q", 7, 10, 5000);
    o.call.cmd.seq = 1;
    mq_svc_submit(f->svc, &o.call);
    assert_true(svc_env_run_until(&f->env, op_done, &o, 2000));
    assert_int_equal(o.call.status, OUTCOME_OK);
    assert_int_equal(o.call.result.n_deliveries, 1);
    assert_int_equal(o.call.result.deliveries[0].tag, tag);
    mq_sm_result_clear(&o.call.result);

    /* acked: the same again has nothing, and says so at once */
    op_init(&o, MQ_SM_SETTLE, NULL);
    o.call.cmd.tag = tag;
    assert_int_equal(run(f, &o), OUTCOME_OK);
    assert_int_equal(o.call.result.count, 1);
    mq_sm_result_clear(&o.call.result);
    checkout_init(&o, "q", 7, 10, 5000);
    o.call.cmd.seq = 1;
    mq_svc_submit(f->svc, &o.call);
    assert_true(svc_env_run_until(&f->env, op_done, &o, 2000));
    assert_int_equal(o.call.status, OUTCOME_OK);
    assert_int_equal(o.call.result.n_deliveries, 0);
    mq_svc_status(f->svc, &st, false);
    assert_int_equal(st.waiters, 0);

    /* a new seq waits for a message, as ever */
    checkout_init(&o, "q", 7, 10, 5000);
    o.call.cmd.seq = 2;
    mq_svc_submit(f->svc, &o.call);
    svc_env_run_for(&f->env, 100);
    assert_int_equal(o.done, 0);
    enqueue(f, "q", "b");
    assert_true(svc_env_run_until(&f->env, op_done, &o, WAIT_MS));
    assert_int_equal(o.call.result.n_deliveries, 1);
    mq_sm_result_clear(&o.call.result);
}

static void test_delete_wakes_404(void **state)
{
    struct fx *f = *state;
    struct op w;
    struct op d;

    start(f, NULL);
    declare(f, "q", true);
    checkout_init(&w, "q", 7, 10, 5000);
    mq_svc_submit(f->svc, &w.call);
    svc_env_run_for(&f->env, 50);
    op_init(&d, MQ_SM_DELETE, "q");
    assert_int_equal(run(f, &d), OUTCOME_OK);
    mq_sm_result_clear(&d.call.result);
    assert_true(svc_env_run_until(&f->env, op_done, &w, WAIT_MS));
    assert_int_equal(w.call.status, OUTCOME_OK);
    assert_int_equal(w.call.result.status, MQ_SM_NOT_FOUND);
    assert_int_equal(w.call.result.reply_code, 404);
    mq_sm_result_clear(&w.call.result);

    /* a long poll on a missing queue is answered at once */
    checkout_init(&w, "nope", 7, 10, 5000);
    assert_int_equal(run(f, &w), OUTCOME_OK);
    assert_int_equal(w.call.result.status, MQ_SM_NOT_FOUND);
}

struct lease_fx {
    struct fx *f;
    uint64_t want;
};

static bool lease_returned(void *arg)
{
    struct lease_fx *l = arg;
    struct mq_svc_status st;

    mq_svc_status(l->f->svc, &st, false);
    return st.lease_returns >= l->want;
}

static void test_router_lease(void **state)
{
    struct fx *f = *state;
    struct mq_svc_config cfg = {.lease_ms = 300};
    struct lease_fx l = {f, 1};
    struct op c;
    struct op x;
    unsigned i;

    start(f, &cfg);
    declare(f, "q", true); /* router 1 */
    enqueue(f, "q", "a");
    checkout_init(&c, "q", 7, 1, 0);
    c.call.cmd.who.router = 5;
    (void)checkout_one(f, &c);

    /* router 1 keeps its lease with EXPIRE ticks; router 5 is silent */
    for (i = 0; i < 6; i++) {
        op_init(&x, MQ_SM_EXPIRE, NULL);
        assert_int_equal(run(f, &x), OUTCOME_OK);
        mq_sm_result_clear(&x.call.result);
        svc_env_run_for(&f->env, 100);
    }
    assert_true(svc_env_run_until(&f->env, lease_returned, &l, WAIT_MS));
    svc_env_run_for(&f->env, 100);
    assert_int_equal(qstats(f, "q").unacked, 0);
    assert_int_equal(qstats(f, "q").ready, 1);
    /* router 1 was seen all along: only router 5 was returned; its
     * ticks renewed its lease without a log entry (nothing was due) */
    {
        struct mq_svc_status st;

        mq_svc_status(f->svc, &st, false);
        assert_int_equal(st.lease_returns, 1);
        assert_true(st.expires_answered >= 6);
    }
}

static void enqueue_ttl(struct fx *f, const char *q, const char *body,
                        uint64_t ttl_ms)
{
    struct op o;

    op_init(&o, MQ_SM_ENQUEUE, q);
    o.call.cmd.body = body;
    o.call.cmd.body_len = strlen(body);
    o.call.cmd.has_ttl = true;
    o.call.cmd.ttl_ms = ttl_ms;
    assert_int_equal(run(f, &o), OUTCOME_OK);
    assert_int_equal(o.call.result.status, MQ_SM_OK);
    mq_sm_result_clear(&o.call.result);
}

static uint64_t applied_count(struct fx *f)
{
    struct mq_svc_status st;

    mq_svc_status(f->svc, &st, false);
    return st.sm.applied;
}

/* An EXPIRE (an edge's tick) is proposed only when something is due
 * (mq_sm_next_due): otherwise it is answered at once and nothing is
 * written to the log, so an idle shard writes nothing. */
static void test_expire_proposed_only_when_due(void **state)
{
    struct fx *f = *state;
    struct mq_svc_status st;
    struct op two[2];
    struct op o;
    uint64_t applied;
    unsigned i;

    start(f, NULL);
    assert_true(svc_env_run_until(&f->env, svc_ready, f->svc, WAIT_MS));
    declare(f, "later", true);
    declare(f, "soon", true);
    enqueue_ttl(f, "later", "m", 600000); /* due in 10 minutes */
    applied = applied_count(f);
    for (i = 0; i < 3; i++) {
        op_init(&o, MQ_SM_EXPIRE, NULL);
        assert_int_equal(run(f, &o), OUTCOME_OK);
        assert_int_equal(o.call.result.status, MQ_SM_OK);
        assert_int_equal(o.call.result.count, 0);
        mq_sm_result_clear(&o.call.result);
    }
    mq_svc_status(f->svc, &st, false);
    assert_int_equal(st.sm.applied, applied);
    assert_int_equal(st.expires_answered, 3);

    /* a TTL runs out: the next EXPIRE goes through the log */
    enqueue_ttl(f, "soon", "a", 1);
    svc_env_run_for(&f->env, 50);
    applied = applied_count(f);
    op_init(&o, MQ_SM_EXPIRE, NULL);
    assert_int_equal(run(f, &o), OUTCOME_OK);
    assert_int_equal(o.call.result.count, 1);
    mq_sm_result_clear(&o.call.result);
    assert_int_equal(applied_count(f), applied + 1);
    assert_int_equal(qstats(f, "soon").ready, 0);

    /* of two routers' ticks at once, only one is written (it applies
     * what is due; the other only renews its router's lease) */
    enqueue_ttl(f, "soon", "b", 1);
    svc_env_run_for(&f->env, 50);
    applied = applied_count(f);
    for (i = 0; i < 2; i++) {
        op_init(&two[i], MQ_SM_EXPIRE, NULL);
        two[i].call.cmd.who.router = 1 + i;
        mq_svc_submit(f->svc, &two[i].call);
    }
    for (i = 0; i < 2; i++) {
        assert_true(svc_env_run_until(&f->env, op_done, &two[i], WAIT_MS));
        assert_int_equal(two[i].call.status, OUTCOME_OK);
    }
    assert_int_equal(two[0].call.result.count, 1);
    assert_int_equal(two[1].call.result.count, 0);
    mq_sm_result_clear(&two[0].call.result);
    mq_sm_result_clear(&two[1].call.result);
    assert_int_equal(applied_count(f), applied + 1);

    /* nothing due again (the other message is minutes away) */
    op_init(&o, MQ_SM_EXPIRE, NULL);
    assert_int_equal(run(f, &o), OUTCOME_OK);
    mq_svc_status(f->svc, &st, false);
    assert_int_equal(st.sm.applied, applied + 1);
    assert_int_equal(st.expires_answered, 5);
    assert_int_equal(qstats(f, "later").ready, 1);
}

/* Send EXPIRE as router 1 every 100 ms (a live router's edge tick) until
 * the lease of some other router ran out; false if none did in WAIT_MS. */
static bool tick_until_lease_return(struct fx *f)
{
    struct lease_fx l = {f, 1};
    struct op x;
    unsigned i;

    for (i = 0; i < WAIT_MS / 100; i++) {
        op_init(&x, MQ_SM_EXPIRE, NULL);
        assert_int_equal(run(f, &x), OUTCOME_OK);
        mq_sm_result_clear(&x.call.result);
        if (lease_returned(&l)) {
            return true;
        }
        svc_env_run_for(&f->env, 100);
    }
    return false;
}

/* A new leader (here the same replica restarted: a new term) keeps the
 * deliveries of routers that are alive: a CHECKOUT retried with its seq
 * gets them again and their tags settle. A router that held deliveries
 * and never shows up again (it died with the old leader) has no lease of
 * its own making here: the era seeds one from the state, and its
 * deliveries come back once it runs out. */
static void test_era_keeps_deliveries_leases_seeded(void **state)
{
    struct fx *f = *state;
    struct mq_svc_config cfg = {.lease_ms = 1000};
    struct mq_svc_status st;
    struct op a;
    struct op b;
    uint64_t tag;

    start(f, &cfg);
    assert_true(svc_env_run_until(&f->env, svc_ready, f->svc, WAIT_MS));
    declare(f, "q", true); /* router 1 */
    enqueue(f, "q", "a");
    enqueue(f, "q", "b");
    checkout_init(&a, "q", 7, 1, 0);
    a.call.cmd.seq = 1;
    tag = checkout_one(f, &a);
    checkout_init(&b, "q", 8, 1, 0);
    b.call.cmd.who.router = 5;
    (void)checkout_one(f, &b);
    stop(f);

    start(f, &cfg);
    assert_true(svc_env_run_until(&f->env, svc_ready, f->svc, WAIT_MS));
    assert_int_equal(qstats(f, "q").unacked, 2);
    assert_int_equal(qstats(f, "q").ready, 0);
    /* router 1's edge retries the CHECKOUT whose answer it lost */
    a.done = 0;
    assert_int_equal(run(f, &a), OUTCOME_OK);
    assert_int_equal(a.call.result.n_deliveries, 1);
    assert_int_equal(a.call.result.deliveries[0].tag, tag);
    assert_false(a.call.result.deliveries[0].redelivered);
    mq_sm_result_clear(&a.call.result);

    assert_true(tick_until_lease_return(f));
    svc_env_run_for(&f->env, 100);
    mq_svc_status(f->svc, &st, false);
    assert_int_equal(st.lease_returns, 1);
    assert_int_equal(qstats(f, "q").unacked, 1); /* router 1's */
    assert_int_equal(qstats(f, "q").ready, 1);   /* router 5's, back */
    op_init(&a, MQ_SM_SETTLE, NULL);
    a.call.cmd.tag = tag;
    assert_int_equal(run(f, &a), OUTCOME_OK);
    assert_int_equal(a.call.result.count, 1);
    mq_sm_result_clear(&a.call.result);
    assert_int_equal(qstats(f, "q").unacked, 0);
}

struct boot_seen {
    unsigned calls;
    size_t deleted;
    enum mq_sm_cmd_type type;
};

static void on_internal(void *data, const struct mq_sm_cmd *cmd,
                        const struct mq_sm_result *res)
{
    struct boot_seen *b = data;

    b->calls++;
    b->type = cmd->type;
    b->deleted += res->n_deleted;
}

static bool svc_booted(void *arg)
{
    return mq_svc_booted(arg);
}

static void test_boot_restart(void **state)
{
    struct fx *f = *state;
    struct boot_seen seen = {0};
    struct mq_svc_config cfg = {
        .boot = true,
        .on_internal = on_internal,
        .on_internal_data = &seen,
    };
    struct mq_sm_queue_stats qs;
    struct op c;

    start(f, &cfg);
    assert_true(svc_env_run_until(&f->env, svc_booted, f->svc, WAIT_MS));
    assert_int_equal(seen.calls, 1);
    assert_int_equal(seen.type, MQ_SM_BOOT);
    declare(f, "durable", true);
    declare(f, "transient", false);
    enqueue(f, "durable", "a");
    checkout_init(&c, "durable", 7, 1, 0);
    assert_int_equal(run(f, &c), OUTCOME_OK);
    mq_sm_result_clear(&c.call.result);
    stop(f);

    /* same data directory: the log replays, then BOOT cleans up */
    start(f, &cfg);
    assert_true(svc_env_run_until(&f->env, svc_booted, f->svc, WAIT_MS));
    assert_int_equal(seen.calls, 2);
    assert_int_equal(seen.deleted, 1);
    assert_int_equal(mq_sm_queue_stats(mq_svc_sm(f->svc), "/", 1,
                                       "transient", 9, &qs),
                     -1);
    assert_int_equal(qstats(f, "durable").ready, 1);
    assert_int_equal(qstats(f, "durable").unacked, 0);
}

/* Era commands the group drops unproposed (config.test_expire_eras: what
 * a raft refusal or a moment without leadership does to them) are
 * submitted again in the same term: the shard becomes ready, and exactly
 * one era is applied. */
static void test_failed_era_is_retried(void **state)
{
    struct fx *f = *state;
    struct mq_svc_config cfg = {.test_expire_eras = 2};
    struct mq_svc_status st;
    uint64_t term;

    start(f, &cfg);
    mq_svc_status(f->svc, &st, false);
    term = st.raft.term;
    assert_true(svc_env_run_until(&f->env, svc_ready, f->svc, WAIT_MS));
    declare(f, "q", true);
    enqueue(f, "q", "a");
    mq_svc_status(f->svc, &st, false);
    assert_int_equal(st.raft.term, term);
    assert_int_equal(st.eras, 1);
    assert_int_equal(qstats(f, "q").ready, 1);
}

struct flip {
    bool hidden;
};

static bool flip_leads(void *data)
{
    return !((struct flip *)data)->hidden;
}

static bool svc_not_leading(void *arg)
{
    return !mq_svc_is_leader(arg);
}

/* Raft reporting not-leader for a moment within a term (a hand-off that
 * did not happen): leading again in that term is the same era: no second
 * era command. */
static void test_leadership_flip_keeps_era(void **state)
{
    struct fx *f = *state;
    struct flip flip = {0};
    struct mq_svc_config cfg = {.test_leads = flip_leads,
                                .test_data = &flip};
    struct mq_svc_status st;
    struct op o;
    uint64_t term;

    start(f, &cfg);
    assert_true(svc_env_run_until(&f->env, svc_ready, f->svc, WAIT_MS));
    mq_svc_status(f->svc, &st, false);
    term = st.raft.term;
    declare(f, "q", true);
    enqueue(f, "q", "a");
    checkout_init(&o, "q", 7, 1, 0);
    (void)checkout_one(f, &o);

    flip.hidden = true;
    assert_true(svc_env_run_until(&f->env, svc_not_leading, f->svc,
                                  WAIT_MS));
    op_init(&o, MQ_SM_DECLARE, "r");
    mq_svc_submit(f->svc, &o.call);
    assert_int_equal(o.done, 1);
    assert_int_equal(o.call.status, OUTCOME_NOT_LEADER);
    flip.hidden = false;
    assert_true(svc_env_run_until(&f->env, svc_ready, f->svc, WAIT_MS));
    /* applied behind a second era command, had one been submitted */
    declare(f, "r", true);

    mq_svc_status(f->svc, &st, false);
    assert_int_equal(st.raft.term, term);
    assert_int_equal(st.eras, 1);
    assert_int_equal(qstats(f, "q").unacked, 1);
    assert_int_equal(qstats(f, "q").ready, 0);
}

/* Leading again within the term starts the leases again too (whoever was
 * seen before the not-leader moment may have gone during it): a router
 * that held a delivery and went silent still loses it one lease later. */
static void test_leadership_flip_seeds_leases(void **state)
{
    struct fx *f = *state;
    struct flip flip = {0};
    struct mq_svc_config cfg = {.lease_ms = 1000,
                                .test_leads = flip_leads,
                                .test_data = &flip};
    struct op o;

    start(f, &cfg);
    assert_true(svc_env_run_until(&f->env, svc_ready, f->svc, WAIT_MS));
    declare(f, "q", true);
    enqueue(f, "q", "a");
    checkout_init(&o, "q", 8, 1, 0);
    o.call.cmd.who.router = 5;
    (void)checkout_one(f, &o);

    flip.hidden = true;
    assert_true(svc_env_run_until(&f->env, svc_not_leading, f->svc,
                                  WAIT_MS));
    flip.hidden = false;
    assert_true(svc_env_run_until(&f->env, svc_ready, f->svc, WAIT_MS));
    assert_true(tick_until_lease_return(f));
    svc_env_run_for(&f->env, 100);
    assert_int_equal(qstats(f, "q").unacked, 0);
    assert_int_equal(qstats(f, "q").ready, 1);
}

static void test_close_with_waiters(void **state)
{
    struct fx *f = *state;
    struct op w;
    struct op late;

    start(f, NULL);
    declare(f, "q", true);
    checkout_init(&w, "q", 7, 10, 5000);
    mq_svc_submit(f->svc, &w.call);
    svc_env_run_for(&f->env, 50);
    f->closed = false;
    mq_svc_close(f->svc, closed_cb, f);
    assert_int_equal(w.done, 1);
    assert_int_equal(w.call.status, OUTCOME_CLOSING);
    op_init(&late, MQ_SM_DECLARE, "q");
    mq_svc_submit(f->svc, &late.call);
    assert_int_equal(late.call.status, OUTCOME_CLOSING);
    assert_true(svc_env_run_until(&f->env, is_closed, f, WAIT_MS));
    f->svc = NULL;
}

struct two {
    unsigned closed;
    struct mq_svc *svc[2];
};

static void two_closed_cb(void *data)
{
    ((struct two *)data)->closed++;
}

static bool two_closed(void *arg)
{
    return ((struct two *)arg)->closed == 2;
}

static bool two_lead(void *arg)
{
    struct two *t = arg;

    return mq_svc_is_leader(t->svc[0]) && mq_svc_is_leader(t->svc[1]);
}

/* Regression: two groups closing at once, soon after they started, made
 * libraft 0.15 call its io close callback twice (a crash about one round in
 * forty before raft/group.c guarded it). */
static void test_concurrent_close(void **state)
{
    struct fx *f = *state;
    struct rgroup_config g;
    struct two t;
    char err[256];
    unsigned round;
    unsigned i;

    for (round = 0; round < 12; round++) {
        memset(&t, 0, sizeof(t));
        for (i = 0; i < 2; i++) {
            svc_env_group(&f->env, &g, i == 0 ? "c0.mq" : "c1.mq", i);
            t.svc[i] = mq_svc_new(&f->env.loop, &g, NULL, err, sizeof(err));
            assert_non_null(t.svc[i]);
        }
        assert_true(svc_env_run_until(&f->env, two_lead, &t, WAIT_MS));
        svc_env_run_for(&f->env, 100);
        mq_svc_close(t.svc[0], two_closed_cb, &t);
        mq_svc_close(t.svc[1], two_closed_cb, &t);
        assert_true(svc_env_run_until(&f->env, two_closed, &t, WAIT_MS));
    }
}

/* ---------------------------------------------------------------- bodies */

/* start() with snapshots every few entries (the group's minimum). */
static void start_snapshotting(struct fx *f, const struct mq_svc_config *cfg,
                               bool inline_snapshots)
{
    struct rgroup_config g;
    char err[256];

    svc_env_group(&f->env, &g, "s0.mq", 0);
    g.snapshot_threshold = RGROUP_MIN_THRESHOLD;
    g.snapshot_trailing = RGROUP_MIN_TRAILING;
    g.inline_snapshots = inline_snapshots;
    f->svc = mq_svc_new(&f->env.loop, &g, cfg, err, sizeof(err));
    if (f->svc == NULL) {
        print_error("mq_svc_new: %s\n", err);
    }
    assert_non_null(f->svc);
    assert_true(svc_env_run_until(&f->env, svc_leads, f->svc, WAIT_MS));
}

static struct mq_svc_status svc_status(struct fx *f)
{
    struct mq_svc_status st;

    mq_svc_status(f->svc, &st, false);
    return st;
}

/* Message @i's body: its number, padded to a length that varies. */
static size_t body_of(unsigned i, char *out, size_t max)
{
    int n = snprintf(out, max, "body-%u-", i);

    assert_true(n > 0 && (size_t)n + i % 37 < max);
    memset(out + n, 'a' + i % 26, i % 37);
    return (size_t)n + i % 37;
}

static void enqueue_n(struct fx *f, const char *q, unsigned from, unsigned to)
{
    char body[128];
    unsigned i;

    for (i = from; i < to; i++) {
        struct op o;

        op_init(&o, MQ_SM_ENQUEUE, q);
        o.call.cmd.body = body;
        o.call.cmd.body_len = body_of(i, body, sizeof(body));
        assert_int_equal(run(f, &o), OUTCOME_OK);
        assert_int_equal(o.call.result.status, MQ_SM_OK);
        mq_sm_result_clear(&o.call.result);
    }
}

/* Check out @n messages of @q: bodies from @from on, in order. Returns
 * the last tag. */
static uint64_t checkout_bodies(struct fx *f, const char *q, unsigned from,
                                unsigned n)
{
    char want[128];
    struct op c;
    uint64_t tag = 0;
    size_t i;

    checkout_init(&c, q, 7, n, 0);
    assert_int_equal(run(f, &c), OUTCOME_OK);
    assert_false(c.call.result.incomplete);
    assert_int_equal(c.call.result.n_deliveries, n);
    for (i = 0; i < n; i++) {
        const struct mq_sm_delivery *d = &c.call.result.deliveries[i];
        size_t len = body_of(from + (unsigned)i, want, sizeof(want));

        assert_int_equal(d->body_len, len);
        assert_memory_equal(d->body, want, len);
        tag = d->tag;
    }
    mq_sm_result_clear(&c.call.result);
    return tag;
}

static bool snapshot_taken(void *arg)
{
    struct fx *f = arg;

    return svc_status(f).raft.snapshots_taken > 0;
}

/* A replica restarted from its snapshot (taken in a forked child, which
 * made the bodies durable) and the log after it delivers every body as
 * published: those written before the snapshot from the segment files,
 * those after it written again by the replay. */
static void test_restart_keeps_bodies(void **state)
{
    struct fx *f = *state;

    start_snapshotting(f, NULL, false);
    declare(f, "q", true);
    enqueue_n(f, "q", 0, 100);
    assert_true(svc_env_run_until(&f->env, snapshot_taken, f, WAIT_MS));
    enqueue_n(f, "q", 100, 110);
    assert_true(svc_status(f).raft.last_applied >
                svc_status(f).raft.snapshot_index);
    stop(f);

    start_snapshotting(f, NULL, false);
    assert_int_equal(svc_status(f).raft.snapshots_restored, 1);
    assert_int_equal(qstats(f, "q").ready, 110);
    checkout_bodies(f, "q", 0, 110);
    assert_int_equal(svc_status(f).body_misses, 0);
}

static bool file_exists(const char *path)
{
    FILE *fp = fopen(path, "rb");

    if (fp != NULL) {
        fclose(fp);
    }
    return fp != NULL;
}

/* Files in the group's body directory. */
static unsigned body_files(struct fx *f)
{
    char cmd[256];
    FILE *p;
    unsigned n = 0;

    snprintf(cmd, sizeof(cmd), "ls %s/s0.mq/bodies | grep -c '^[0-9a-f]*$'",
             f->env.root);
    p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%u", &n), 1);
    pclose(p);
    return n;
}

struct reclaim_wait {
    struct fx *f;
    uint64_t index;
};

static bool snapshot_past(void *arg)
{
    struct reclaim_wait *w = arg;

    return svc_status(w->f).raft.snapshot_index >= w->index;
}

/* A segment freed by the state (its last message settled) keeps its file
 * until a snapshot at or after that entry is stored: a restart from an
 * older snapshot replays the log, which reads it. Small segments (one
 * record each) so that a few messages fill several. */
static void test_segment_unlinked_after_snapshot(void **state)
{
    struct fx *f = *state;
    struct mq_svc_config cfg = {.sm = {.seg_bytes = 64}};
    struct reclaim_wait w = {f, 0};
    char seg1[128];
    struct op s;
    uint64_t tag;
    unsigned i;

    start_snapshotting(f, &cfg, true);
    snprintf(seg1, sizeof(seg1), "%s/s0.mq/bodies/0000000000000001",
             f->env.root);
    declare(f, "q", true);
    enqueue_n(f, "q", 60, 66); /* 40..48 bytes: a segment each */
    assert_int_equal(body_files(f), 6);
    tag = checkout_bodies(f, "q", 60, 2);

    op_init(&s, MQ_SM_SETTLE, NULL);
    s.call.cmd.who.consumer = 7;
    s.call.cmd.tag = tag;
    s.call.cmd.multiple = true;
    assert_int_equal(run(f, &s), OUTCOME_OK);
    assert_int_equal(s.call.result.count, 2);
    mq_sm_result_clear(&s.call.result);
    w.index = svc_status(f).raft.last_applied; /* the SETTLE's, or later */
    assert_true(svc_status(f).raft.snapshot_index < w.index);

    /* ticks pass: no snapshot since, the file stays */
    svc_env_run_for(&f->env, 300);
    assert_true(file_exists(seg1));
    assert_int_equal(body_files(f), 6);

    /* entries without bodies until a snapshot passes the SETTLE */
    for (i = 0; i < 4 * RGROUP_MIN_THRESHOLD && !snapshot_past(&w); i++) {
        struct op d;

        op_init(&d, MQ_SM_DECLARE, "q");
        d.call.cmd.passive = true;
        assert_int_equal(run(f, &d), OUTCOME_OK);
        mq_sm_result_clear(&d.call.result);
    }
    assert_true(svc_env_run_until(&f->env, snapshot_past, &w, WAIT_MS));
    svc_env_run_for(&f->env, 300); /* a tick reclaims */
    assert_false(file_exists(seg1));
    assert_int_equal(body_files(f), 4);
    assert_int_equal(svc_status(f).store.reclaimed, 2);
    checkout_bodies(f, "q", 62, 4);
}

/* A body the store cannot give (here its file cut short behind the
 * store's back; after an installed snapshot, a range not fetched yet) is
 * left out of the answer, which says it is incomplete: the edge then gives
 * back what it did not see. */
static void test_unreadable_body_left_out(void **state)
{
    struct fx *f = *state;
    struct mq_svc_config cfg = {.sm = {.seg_bytes = 64}};
    char seg1[128];
    char want[128];
    struct op c;
    size_t len;

    start(f, &cfg);
    snprintf(seg1, sizeof(seg1), "%s/s0.mq/bodies/0000000000000001",
             f->env.root);
    declare(f, "q", true);
    enqueue_n(f, "q", 60, 63); /* a segment each */
    assert_int_equal(truncate(seg1, 0), 0);

    checkout_init(&c, "q", 7, 3, 0);
    assert_int_equal(run(f, &c), OUTCOME_OK);
    assert_true(c.call.result.incomplete);
    assert_int_equal(c.call.result.n_deliveries, 2);
    assert_int_equal(c.call.result.count, 2);
    len = body_of(61, want, sizeof(want));
    assert_int_equal(c.call.result.deliveries[0].body_len, len);
    assert_memory_equal(c.call.result.deliveries[0].body, want, len);
    mq_sm_result_clear(&c.call.result);
    assert_int_equal(svc_status(f).body_misses, 1);
    /* the state still has it checked out: the edge returns it */
    assert_int_equal(qstats(f, "q").unacked, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_not_leader_then_basic, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_long_poll_wake_and_timeout,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_robin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_poll_retry_not_parked, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_prefetch_and_settle, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_delete_wakes_404, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_router_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expire_proposed_only_when_due,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_era_keeps_deliveries_leases_seeded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_boot_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_era_is_retried, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_leadership_flip_seeds_leases,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_leadership_flip_keeps_era,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_waiters, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_restart_keeps_bodies, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_segment_unlinked_after_snapshot,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_body_left_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_close, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
