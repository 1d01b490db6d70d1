/*
 * Unit tests of node/amqp_local: the standalone broker over real
 * single-member "s0.mq" and "meta" groups: status mapping, refusal before
 * BOOT, META and MQ calls, meta_view, long-poll CHECKOUT through the
 * broker, and a restart where BOOT removes a non-durable queue and its
 * bindings (QUEUE_GONE sent by amqp_local).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node/amqp_local.h"
#include "tests/unit/lib/svc_env.h"

#define WAIT_MS 8000

struct fx {
    struct svc_env env;
    struct mq_svc *mq;
    struct meta_svc *meta;
    struct amqp_local *local;
    struct amqp_broker broker;
    unsigned closed;
};

struct op {
    struct amqp_broker_call call;
    int done;
};

static void op_cb(struct amqp_broker_call *call)
{
    ((struct op *)call->data)->done++;
}

static bool op_done(void *arg)
{
    return ((struct op *)arg)->done > 0;
}

static bool ready(void *arg)
{
    return amqp_local_ready(arg);
}

/* @max_queued: the queue group's admission bound (0 = default). */
static void start_bounded(struct fx *f, unsigned max_queued)
{
    struct rgroup_config g;
    struct mq_svc_config mc = {.boot = true};
    char err[256];

    svc_env_group(&f->env, &g, "s0.mq", 4);
    g.max_queued_cmds = max_queued;
    f->mq = mq_svc_new(&f->env.loop, &g, &mc, err, sizeof(err));
    assert_non_null(f->mq);
    svc_env_group(&f->env, &g, "meta", 5);
    f->meta = meta_svc_new(&f->env.loop, &g, err, sizeof(err));
    assert_non_null(f->meta);
    f->local = amqp_local_new();
    assert_int_equal(amqp_local_attach(f->local, &f->mq, 1, f->meta), 0);
    amqp_local_broker(f->local, &f->broker);
}

static void start(struct fx *f)
{
    start_bounded(f, 0);
}

static void closed_cb(void *data)
{
    ((struct fx *)data)->closed++;
}

static bool both_closed(void *arg)
{
    return ((struct fx *)arg)->closed == 2;
}

static void stop(struct fx *f)
{
    f->closed = 0;
    amqp_local_close(f->local);
    mq_svc_close(f->mq, closed_cb, f);
    meta_svc_close(f->meta, closed_cb, f);
    assert_true(svc_env_run_until(&f->env, both_closed, f, WAIT_MS));
    f->mq = NULL;
    f->meta = NULL;
    f->local = NULL;
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

    if (f->local != NULL) {
        stop(f);
    }
    assert_int_equal(svc_env_close(&f->env), 0);
    free(f);
    return 0;
}

static void mq_init(struct op *o, enum mq_sm_cmd_type type, const char *q)
{
    memset(o, 0, sizeof(*o));
    o->call.kind = AMQP_BROKER_MQ;
    o->call.mq.type = type;
    o->call.mq.vhost = "/";
    o->call.mq.vhost_len = 1;
    o->call.mq.queue = q;
    o->call.mq.queue_len = q != NULL ? strlen(q) : 0;
    o->call.mq.who.router = 9;
    o->call.mq.who.conn = 1;
    o->call.mq.who.channel = 1;
    o->call.cb = op_cb;
    o->call.data = o;
}

static void bind_init(struct op *o, const char *q)
{
    memset(o, 0, sizeof(*o));
    o->call.kind = AMQP_BROKER_META;
    o->call.meta.type = META_SM_BIND;
    o->call.meta.vhost = "/";
    o->call.meta.vhost_len = 1;
    o->call.meta.exchange = "amq.fanout";
    o->call.meta.exchange_len = 10;
    o->call.meta.dest = q;
    o->call.meta.dest_len = strlen(q);
    o->call.cb = op_cb;
    o->call.data = o;
}

static void run(struct fx *f, struct op *o)
{
    f->broker.ops->submit(f->broker.self, &o->call);
    assert_true(svc_env_run_until(&f->env, op_done, o, WAIT_MS));
    assert_int_equal(o->done, 1);
}

static void run_ok(struct fx *f, struct op *o)
{
    run(f, o);
    assert_int_equal(o->call.status, OUTCOME_OK);
    if (o->call.kind == AMQP_BROKER_MQ) {
        assert_int_equal(o->call.mq_result.status, MQ_SM_OK);
        mq_sm_result_clear(&o->call.mq_result);
    } else {
        assert_int_equal(o->call.meta_result.reply_code, 0);
    }
}

static size_t fanout_routes(struct fx *f)
{
    struct meta_sm_route_result r;
    size_t n;

    meta_sm_route_result_init(&r);
    assert_int_equal(meta_sm_route(f->broker.ops->meta_view(f->broker.self),
                                   "/", 1, "amq.fanout", 10, "", 0, NULL, 0,
                                   &r),
                     0);
    n = r.n_queues;
    meta_sm_route_result_clear(&r);
    return n;
}

static void test_local_broker(void **state)
{
    struct fx *f = *state;
    struct op o;
    struct op w;

    start(f);
    assert_int_equal(f->broker.ops->shard_count(f->broker.self), 1);
    assert_int_equal(f->broker.ops->shard_of(f->broker.self, "/", 1, "q", 1),
                     0);
    /* no watermark set: never blocked; not ready before BOOT */
    assert_false(f->broker.ops->should_block(f->broker.self));
    assert_false(f->broker.ops->ready(f->broker.self));

    /* nothing before the groups lead and BOOT is applied */
    mq_init(&o, MQ_SM_DECLARE, "dq");
    f->broker.ops->submit(f->broker.self, &o.call);
    assert_int_equal(o.done, 1);
    assert_int_equal(o.call.status, OUTCOME_UNAVAILABLE);
    assert_true(svc_env_run_until(&f->env, ready, f->local, WAIT_MS));

    mq_init(&o, MQ_SM_DECLARE, "dq");
    o.call.mq.durable = true;
    run_ok(f, &o);
    mq_init(&o, MQ_SM_DECLARE, "tq");
    run_ok(f, &o);
    bind_init(&o, "dq");
    run_ok(f, &o);
    bind_init(&o, "tq");
    run_ok(f, &o);
    assert_int_equal(fanout_routes(f), 2);

    /* a pushed delivery: the long poll waits for the publish */
    mq_init(&w, MQ_SM_CHECKOUT, "dq");
    w.call.mq.who.consumer = 77;
    w.call.mq.max_messages = 5;
    w.call.wait_ms = 5000;
    f->broker.ops->submit(f->broker.self, &w.call);
    svc_env_run_for(&f->env, 50);
    assert_int_equal(w.done, 0);
    mq_init(&o, MQ_SM_ENQUEUE, "dq");
    o.call.mq.body = "x";
    o.call.mq.body_len = 1;
    run_ok(f, &o);
    assert_true(svc_env_run_until(&f->env, op_done, &w, WAIT_MS));
    assert_int_equal(w.call.status, OUTCOME_OK);
    assert_int_equal(w.call.mq_result.n_deliveries, 1);
    mq_sm_result_clear(&w.call.mq_result);

    /* restart: BOOT deletes tq; amqp_local removes its binding */
    stop(f);
    start(f);
    assert_true(svc_env_run_until(&f->env, ready, f->local, WAIT_MS));
    mq_init(&o, MQ_SM_EXPIRE, NULL); /* any submit flushes QUEUE_GONE */
    run_ok(f, &o);
    svc_env_run_for(&f->env, 200);
    assert_int_equal(fanout_routes(f), 1);
    mq_init(&o, MQ_SM_PURGE, "tq");
    run(f, &o);
    assert_int_equal(o.call.mq_result.status, MQ_SM_NOT_FOUND);
    mq_sm_result_clear(&o.call.mq_result);
    /* the durable queue kept its message, returned as redelivered */
    mq_init(&o, MQ_SM_CHECKOUT, "dq");
    o.call.mq.who.consumer = 78;
    o.call.mq.max_messages = 5;
    run(f, &o);
    assert_int_equal(o.call.mq_result.n_deliveries, 1);
    assert_true(o.call.mq_result.deliveries[0].redelivered);
    mq_sm_result_clear(&o.call.mq_result);
}

/* A full queue group is BUSY (never proposed), which the edge retries
 * with a growing backoff; UNAVAILABLE would be retried every 100 ms. */
static void test_busy_stays_busy(void **state)
{
    struct fx *f = *state;
    struct op o[8];
    unsigned busy = 0;
    unsigned i;

    start_bounded(f, 1);
    assert_true(svc_env_run_until(&f->env, ready, f->local, WAIT_MS));
    mq_init(&o[0], MQ_SM_DECLARE, "q");
    run_ok(f, &o[0]);
    /* submitted without running the loop: one in flight, one queued, the
     * rest refused at once */
    for (i = 0; i < 8; i++) {
        mq_init(&o[i], MQ_SM_ENQUEUE, "q");
        o[i].call.mq.body = "x";
        o[i].call.mq.body_len = 1;
        f->broker.ops->submit(f->broker.self, &o[i].call);
    }
    for (i = 0; i < 8; i++) {
        assert_true(svc_env_run_until(&f->env, op_done, &o[i], WAIT_MS));
        if (o[i].call.status == OUTCOME_BUSY) {
            busy++;
        } else {
            assert_int_equal(o[i].call.status, OUTCOME_OK);
            mq_sm_result_clear(&o[i].call.mq_result);
        }
    }
    assert_true(busy > 0);
}

static void test_closing_status(void **state)
{
    struct fx *f = *state;
    struct amqp_local *l = amqp_local_new();
    struct amqp_broker b;
    struct op o;

    (void)f;
    amqp_local_broker(l, &b);
    assert_int_equal(amqp_local_attach(l, NULL, 0, NULL), -1);
    assert_false(amqp_local_ready(l));
    /* not attached: unavailable */
    mq_init(&o, MQ_SM_EXPIRE, NULL);
    b.ops->submit(b.self, &o.call);
    assert_int_equal(o.call.status, OUTCOME_UNAVAILABLE);
    o.call.kind = AMQP_BROKER_META;
    o.done = 0;
    b.ops->submit(b.self, &o.call);
    assert_int_equal(o.call.status, OUTCOME_UNAVAILABLE);
    amqp_local_close(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_local_broker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_stays_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closing_status, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
