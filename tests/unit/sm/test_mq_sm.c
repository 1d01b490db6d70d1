/*
 * Unit tests of the deterministic AMQP queue state machine (sm/mq_sm): one
 * test per rule of mq_sm.h / mq_sm.c, plus replica determinism and
 * snapshot round trips.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sm/mq_sm.h"

#define T0 1700000000000ULL
#define VH "/"

/* ------------------------------------------------------------------ helpers */

static struct mq_sm *sm_make(void)
{
    struct mq_sm *sm = mq_sm_new(NULL);

    assert_non_null(sm);
    return sm;
}

static void cmd_init(struct mq_sm_cmd *c, enum mq_sm_cmd_type type,
                     const char *queue)
{
    memset(c, 0, sizeof(*c));
    c->type = type;
    c->vhost = VH;
    c->vhost_len = strlen(VH);
    c->queue = queue;
    c->queue_len = queue != NULL ? strlen(queue) : 0;
}

/* Apply and keep the result in @res (caller clears). */
static enum mq_sm_status run(struct mq_sm *sm, uint64_t now,
                             const struct mq_sm_cmd *c,
                             struct mq_sm_result *res)
{
    mq_sm_apply(sm, now, c, res);
    assert_false(res->incomplete);
    return res->status;
}

/* Apply, discard the result, return its status. */
static enum mq_sm_status run1(struct mq_sm *sm, uint64_t now,
                              const struct mq_sm_cmd *c)
{
    struct mq_sm_result res;
    enum mq_sm_status st = run(sm, now, c, &res);

    mq_sm_result_clear(&res);
    return st;
}

static void declare(struct mq_sm *sm, const char *q)
{
    struct mq_sm_cmd c;

    cmd_init(&c, MQ_SM_DECLARE, q);
    c.durable = true;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
}

static uint64_t enqueue(struct mq_sm *sm, uint64_t now, const char *q,
                        const char *body)
{
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    uint64_t id;

    cmd_init(&c, MQ_SM_ENQUEUE, q);
    c.body = body;
    c.body_len = strlen(body);
    assert_int_equal(run(sm, now, &c, &res), MQ_SM_OK);
    id = res.msg_id;
    mq_sm_result_clear(&res);
    return id;
}

static struct mq_sm_who who_of(uint64_t channel, uint64_t consumer)
{
    struct mq_sm_who w = {1, 10, channel, consumer};

    return w;
}

static void consume(struct mq_sm *sm, const char *q, uint64_t channel,
                    uint64_t consumer)
{
    struct mq_sm_cmd c;

    cmd_init(&c, MQ_SM_CONSUME, q);
    c.who = who_of(channel, consumer);
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
}

/* Checkout into @res; returns how many were delivered. */
static size_t checkout(struct mq_sm *sm, uint64_t now, const char *q,
                       uint64_t channel, uint64_t consumer, uint32_t max,
                       uint32_t prefetch, struct mq_sm_result *res)
{
    struct mq_sm_cmd c;

    cmd_init(&c, MQ_SM_CHECKOUT, q);
    c.who = who_of(channel, consumer);
    c.max_messages = max;
    c.prefetch = prefetch;
    assert_int_equal(run(sm, now, &c, res), MQ_SM_OK);
    assert_int_equal(res->count, res->n_deliveries);
    return res->n_deliveries;
}

static void assert_body(const struct mq_sm_delivery *d, const char *body)
{
    assert_int_equal(d->body_len, strlen(body));
    assert_memory_equal(d->body, body, d->body_len);
}

/* settle/return/drop by tag on channel @channel; returns count. */
static uint64_t by_tag(struct mq_sm *sm, enum mq_sm_cmd_type type,
                       uint64_t channel, uint64_t tag, bool multiple,
                       struct mq_sm_result *keep)
{
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    uint64_t n;

    cmd_init(&c, type, NULL);
    c.who = who_of(channel, 0);
    c.scope = MQ_SM_SCOPE_TAG;
    c.tag = tag;
    c.multiple = multiple;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    n = res.count;
    if (keep != NULL) {
        *keep = res;
    } else {
        mq_sm_result_clear(&res);
    }
    return n;
}

static struct mq_sm_queue_stats qstats(struct mq_sm *sm, const char *q)
{
    struct mq_sm_queue_stats st;

    assert_int_equal(mq_sm_queue_stats(sm, VH, strlen(VH), q, strlen(q), &st),
                     0);
    return st;
}

static bool queue_exists(struct mq_sm *sm, const char *q)
{
    struct mq_sm_queue_stats st;

    return mq_sm_queue_stats(sm, VH, strlen(VH), q, strlen(q), &st) == 0;
}

/* Drain the queue with a fresh basic.get consumer and check the bodies and
 * redelivered flags, then ack them. */
static void expect_order(struct mq_sm *sm, const char *q, uint64_t consumer,
                         const char *const *bodies, const bool *redelivered,
                         size_t n)
{
    struct mq_sm_result res;
    size_t i;

    assert_int_equal(checkout(sm, T0, q, 99, consumer, 1000, 0, &res), n);
    for (i = 0; i < n; i++) {
        assert_body(&res.deliveries[i], bodies[i]);
        assert_int_equal(res.deliveries[i].redelivered, redelivered[i]);
    }
    mq_sm_result_clear(&res);
    by_tag(sm, MQ_SM_SETTLE, 99, 0, true, NULL);
}

/* -------------------------------------------------------------------- tests */

static void test_fifo_order(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_result res;
    uint64_t ids[3];

    (void)state;
    declare(sm, "q");
    ids[0] = enqueue(sm, T0, "q", "a");
    ids[1] = enqueue(sm, T0, "q", "b");
    ids[2] = enqueue(sm, T0, "q", "c");
    assert_true(ids[0] < ids[1] && ids[1] < ids[2]);
    assert_int_equal(qstats(sm, "q").ready, 3);

    assert_int_equal(checkout(sm, T0, "q", 1, 7, 2, 0, &res), 2);
    assert_body(&res.deliveries[0], "a");
    assert_body(&res.deliveries[1], "b");
    assert_int_equal(res.deliveries[0].msg_id, ids[0]);
    assert_false(res.deliveries[0].redelivered);
    assert_int_equal(res.deliveries[0].delivery_count, 1);
    assert_true(res.deliveries[0].tag < res.deliveries[1].tag);
    mq_sm_result_clear(&res);
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 5, 0, &res), 1);
    assert_body(&res.deliveries[0], "c");
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "q").ready, 0);
    assert_int_equal(qstats(sm, "q").unacked, 3);
    mq_sm_free(sm);
}

static void test_prefetch_bound(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_result res;
    int i;

    (void)state;
    declare(sm, "q");
    consume(sm, "q", 1, 7);
    for (i = 0; i < 5; i++) {
        enqueue(sm, T0, "q", "m");
    }
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 10, 2, &res), 2);
    mq_sm_result_clear(&res);
    /* at the bound: nothing more until an ack */
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 10, 2, &res), 0);
    mq_sm_result_clear(&res);
    assert_int_equal(by_tag(sm, MQ_SM_SETTLE, 1, 1, false, NULL), 1);
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 10, 2, &res), 1);
    assert_body(&res.deliveries[0], "m");
    assert_int_equal(res.deliveries[0].tag, 3);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "q").unacked, 2);
    assert_int_equal(qstats(sm, "q").ready, 2);
    mq_sm_free(sm);
}

static void test_ack_single_and_multiple(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_result res;
    uint64_t tags[5];
    int i;

    (void)state;
    declare(sm, "q");
    for (i = 0; i < 5; i++) {
        enqueue(sm, T0, "q", "m");
    }
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 5, 0, &res), 5);
    for (i = 0; i < 5; i++) {
        tags[i] = res.deliveries[i].tag;
    }
    mq_sm_result_clear(&res);

    /* single ack of the middle one */
    assert_int_equal(by_tag(sm, MQ_SM_SETTLE, 1, tags[2], false, NULL), 1);
    /* idempotent: a retried ack is a no-op, not an error */
    assert_int_equal(by_tag(sm, MQ_SM_SETTLE, 1, tags[2], false, NULL), 0);
    /* another channel cannot ack our tag */
    assert_int_equal(by_tag(sm, MQ_SM_SETTLE, 2, tags[0], false, NULL), 0);
    /* multiple up to tags[3]: 0, 1 and 3 */
    assert_int_equal(by_tag(sm, MQ_SM_SETTLE, 1, tags[3], true, NULL), 3);
    assert_int_equal(qstats(sm, "q").unacked, 1);
    /* multiple with tag 0: everything of the channel */
    assert_int_equal(by_tag(sm, MQ_SM_SETTLE, 1, 0, true, NULL), 1);
    assert_int_equal(qstats(sm, "q").unacked, 0);
    assert_int_equal(qstats(sm, "q").ready, 0);
    mq_sm_free(sm);
}

/* Regression (fault suite, queue workload seed 1): a CHECKOUT whose reply
 * the edge never got leaves a delivery it does not know of on the channel.
 * A batch settled by an exact tag list must leave that one unacked, so
 * that it is returned (here by a leader change) instead of acked unseen;
 * "multiple up to the highest tag" acked it, and the message was lost. */
static void test_settle_exact_tags_spares_unseen_delivery(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    uint64_t seen[2];
    uint64_t unseen;
    uint64_t tags[3];
    int i;

    (void)state;
    declare(sm, "q");
    for (i = 0; i < 3; i++) {
        enqueue(sm, T0, "q", i == 1 ? "unseen" : "m");
    }
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 1, 0, &res), 1);
    seen[0] = res.deliveries[0].tag;
    mq_sm_result_clear(&res);
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 1, 0, &res), 1); /* lost */
    unseen = res.deliveries[0].tag;
    mq_sm_result_clear(&res);
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 1, 0, &res), 1);
    seen[1] = res.deliveries[0].tag;
    mq_sm_result_clear(&res);
    assert_true(seen[0] < unseen && unseen < seen[1]);

    tags[0] = seen[1];
    tags[1] = seen[0];
    tags[2] = seen[0]; /* a repeated tag is settled once */
    cmd_init(&c, MQ_SM_SETTLE, NULL);
    c.who = who_of(1, 0);
    c.scope = MQ_SM_SCOPE_TAG;
    c.tags = tags;
    c.n_tags = 3;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 2);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "q").unacked, 1);

    /* another channel's list touches nothing of ours */
    tags[0] = unseen;
    c.who = who_of(2, 0);
    c.n_tags = 1;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 0);
    mq_sm_result_clear(&res);

    cmd_init(&c, MQ_SM_LEADER_CHANGED, NULL);
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    assert_int_equal(qstats(sm, "q").ready, 1);
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 5, 0, &res), 1);
    assert_body(&res.deliveries[0], "unseen");
    assert_true(res.deliveries[0].redelivered);
    mq_sm_result_clear(&res);
    mq_sm_free(sm);
}

static size_t checkout_seq(struct mq_sm *sm, uint64_t seq, uint32_t max,
                           struct mq_sm_result *res)
{
    struct mq_sm_cmd c;

    cmd_init(&c, MQ_SM_CHECKOUT, "q");
    c.who = who_of(1, 7);
    c.max_messages = max;
    c.seq = seq;
    assert_int_equal(run(sm, T0, &c, res), MQ_SM_OK);
    return res->n_deliveries;
}

/* A CHECKOUT carries the consumer's seq; a retry (same seq) whose reply the
 * edge lost gets the same deliveries again instead of new ones, and so does
 * a late copy of an older one, never new ones: no delivery exists that the
 * edge cannot know of. An empty one may be proposed again (the long poll) and a
 * leader change makes every seq new again. */
static void test_checkout_retry_replays(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_result res;
    uint64_t first[2];
    struct mq_sm_cmd c;
    int i;

    (void)state;
    declare(sm, "q");
    assert_int_equal(checkout_seq(sm, 1, 2, &res), 0); /* empty: parked */
    mq_sm_result_clear(&res);
    for (i = 0; i < 5; i++) {
        enqueue(sm, T0, "q", "m");
    }
    assert_int_equal(checkout_seq(sm, 1, 2, &res), 2); /* proposed again */
    first[0] = res.deliveries[0].tag;
    first[1] = res.deliveries[1].tag;
    mq_sm_result_clear(&res);
    assert_int_equal(checkout_seq(sm, 1, 2, &res), 2); /* reply was lost */
    assert_int_equal(res.deliveries[0].tag, first[0]);
    assert_int_equal(res.deliveries[1].tag, first[1]);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "q").unacked, 2);
    assert_int_equal(by_tag(sm, MQ_SM_SETTLE, 1, first[0], false, NULL), 1);
    assert_int_equal(checkout_seq(sm, 1, 2, &res), 1); /* what is left */
    assert_int_equal(res.deliveries[0].tag, first[1]);
    mq_sm_result_clear(&res);
    assert_int_equal(checkout_seq(sm, 2, 2, &res), 2); /* the next one */
    mq_sm_result_clear(&res);
    /* a late copy: only what it delivered that is still out, nothing new */
    assert_int_equal(checkout_seq(sm, 1, 2, &res), 1);
    assert_int_equal(res.deliveries[0].tag, first[1]);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "q").unacked, 3);
    assert_int_equal(qstats(sm, "q").ready, 1);

    cmd_init(&c, MQ_SM_LEADER_CHANGED, NULL);
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    assert_int_equal(checkout_seq(sm, 2, 10, &res), 4); /* new again */
    mq_sm_result_clear(&res);
    mq_sm_free(sm);
}

static void test_requeue_redelivered_at_head(void **state)
{
    static const char *const order[] = {"a", "b", "c", "d", "e"};
    static const bool redel[] = {true, true, true, true, true};
    struct mq_sm *sm = sm_make();
    struct mq_sm_result res;
    uint64_t tags[4];
    int i;

    (void)state;
    declare(sm, "q");
    for (i = 0; i < 5; i++) {
        enqueue(sm, T0, "q", order[i]);
    }
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 4, 0, &res), 4);
    for (i = 0; i < 4; i++) {
        tags[i] = res.deliveries[i].tag;
    }
    mq_sm_result_clear(&res);
    /* reject d (requeue), then nack multiple up to b (requeue): c stays out */
    assert_int_equal(by_tag(sm, MQ_SM_RETURN, 1, tags[3], false, NULL), 1);
    assert_int_equal(by_tag(sm, MQ_SM_RETURN, 1, tags[1], true, NULL), 2);
    assert_int_equal(qstats(sm, "q").ready, 4);
    assert_int_equal(qstats(sm, "q").unacked, 1);
    /* c is still checked out: a b d e on the queue, original order */
    {
        static const char *const o2[] = {"a", "b", "d", "e"};
        static const bool r2[] = {true, true, true, false};

        assert_int_equal(checkout(sm, T0, "q", 99, 50, 10, 0, &res), 4);
        for (i = 0; i < 4; i++) {
            assert_body(&res.deliveries[i], o2[i]);
            assert_int_equal(res.deliveries[i].redelivered, r2[i]);
        }
        assert_int_equal(res.deliveries[0].delivery_count, 2);
        mq_sm_result_clear(&res);
    }
    /* return all of them and c too: back in full original order, all
     * redelivered now (e was delivered to consumer 50) */
    assert_int_equal(by_tag(sm, MQ_SM_RETURN, 99, 0, true, NULL), 4);
    assert_int_equal(by_tag(sm, MQ_SM_RETURN, 1, 0, true, NULL), 1);
    expect_order(sm, "q", 51, order, redel, 5);
    mq_sm_free(sm);
}

static void test_reject_without_requeue(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    struct mq_sm_result dl;

    (void)state;
    /* no DLX: discarded, nothing returned */
    declare(sm, "plain");
    enqueue(sm, T0, "plain", "x");
    assert_int_equal(checkout(sm, T0, "plain", 1, 7, 1, 0, &res), 1);
    mq_sm_result_clear(&res);
    assert_int_equal(by_tag(sm, MQ_SM_DROP, 1, 1, false, &dl), 1);
    assert_int_equal(dl.n_dead, 0);
    mq_sm_result_clear(&dl);
    assert_int_equal(qstats(sm, "plain").ready, 0);
    assert_int_equal(qstats(sm, "plain").unacked, 0);

    /* with DLX and routing key: dead letter handed to the edge */
    cmd_init(&c, MQ_SM_DECLARE, "dlq");
    c.args.has_dlx = true;
    c.args.dlx = "dlx";
    c.args.dlx_len = 3;
    c.args.has_dlrk = true;
    c.args.dlrk = "rk";
    c.args.dlrk_len = 2;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    enqueue(sm, T0, "dlq", "y");
    assert_int_equal(checkout(sm, T0, "dlq", 1, 8, 1, 0, &res), 1);
    mq_sm_result_clear(&res);
    assert_int_equal(by_tag(sm, MQ_SM_DROP, 1, 0, true, &dl), 1);
    assert_int_equal(dl.n_dead, 1);
    assert_int_equal(dl.dead[0].reason, MQ_SM_DL_REJECTED);
    assert_int_equal(dl.dead[0].queue_len, 3);
    assert_memory_equal(dl.dead[0].queue, "dlq", 3);
    assert_memory_equal(dl.dead[0].vhost, "/", 1);
    assert_int_equal(dl.dead[0].dlx_len, 3);
    assert_memory_equal(dl.dead[0].dlx, "dlx", 3);
    assert_true(dl.dead[0].has_dlrk);
    assert_memory_equal(dl.dead[0].dlrk, "rk", 2);
    assert_int_equal(dl.dead[0].body_len, 1);
    assert_memory_equal(dl.dead[0].body, "y", 1);
    mq_sm_result_clear(&dl);
    assert_int_equal(qstats(sm, "dlq").ready + qstats(sm, "dlq").unacked, 0);
    mq_sm_free(sm);
}

static void test_consumer_gone_returns(void **state)
{
    static const char *const order[] = {"a", "b", "c", "d"};
    static const bool redel[] = {true, true, true, false};
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    int i;

    (void)state;
    declare(sm, "q");
    consume(sm, "q", 1, 7);
    consume(sm, "q", 2, 8);
    for (i = 0; i < 4; i++) {
        enqueue(sm, T0, "q", order[i]);
    }
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 1, 1, &res), 1); /* a */
    mq_sm_result_clear(&res);
    assert_int_equal(checkout(sm, T0, "q", 2, 8, 1, 1, &res), 1); /* b */
    mq_sm_result_clear(&res);
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 1, 2, &res), 1); /* c */
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "q").consumers, 2);

    /* consumer 7's channel goes away: a and c come back, 7 unregistered */
    cmd_init(&c, MQ_SM_RETURN, NULL);
    c.who = who_of(1, 0);
    c.scope = MQ_SM_SCOPE_CHANNEL;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 2);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "q").consumers, 1);
    assert_int_equal(qstats(sm, "q").unacked, 1);

    /* consumer 8 gone by id */
    cmd_init(&c, MQ_SM_RETURN, NULL);
    c.who.consumer = 8;
    c.scope = MQ_SM_SCOPE_CONSUMER;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 1);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "q").consumers, 0);
    expect_order(sm, "q", 60, order, redel, 4);
    mq_sm_free(sm);
}

static void test_connection_gone_deletes_exclusive(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;

    (void)state;
    cmd_init(&c, MQ_SM_DECLARE, "excl");
    c.exclusive = true;
    c.who = who_of(1, 0);
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    /* another connection: 405 */
    c.who.conn = 11;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_RESOURCE_LOCKED);
    assert_int_equal(res.reply_code, 405);
    mq_sm_result_clear(&res);

    cmd_init(&c, MQ_SM_RETURN, NULL);
    c.who = who_of(0, 0);
    c.scope = MQ_SM_SCOPE_CONNECTION;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_deleted, 1);
    assert_int_equal(res.deleted[0].reason, MQ_SM_DEL_EXCLUSIVE);
    mq_sm_result_clear(&res);
    assert_false(queue_exists(sm, "excl"));
    mq_sm_free(sm);
}

static void test_auto_delete_last_consumer(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;

    (void)state;
    cmd_init(&c, MQ_SM_DECLARE, "ad");
    c.auto_delete = true;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    consume(sm, "ad", 1, 7);
    consume(sm, "ad", 1, 8);
    cmd_init(&c, MQ_SM_CANCEL, NULL);
    c.who.consumer = 7;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    assert_true(queue_exists(sm, "ad"));
    c.who.consumer = 8;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_deleted, 1);
    assert_int_equal(res.deleted[0].reason, MQ_SM_DEL_AUTO_DELETE);
    mq_sm_result_clear(&res);
    assert_false(queue_exists(sm, "ad"));
    mq_sm_free(sm);
}

static void test_exclusive_consumer(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;

    (void)state;
    declare(sm, "q");
    cmd_init(&c, MQ_SM_CONSUME, "q");
    c.who = who_of(1, 7);
    c.exclusive = true;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    c.who = who_of(2, 8);
    c.exclusive = false;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_ACCESS_REFUSED);
    assert_int_equal(res.reply_code, 403);
    mq_sm_result_clear(&res);
    mq_sm_free(sm);
}

static void test_leader_change_returns_all(void **state)
{
    static const char *const order[] = {"a", "b", "c", "d"};
    static const bool redel[] = {true, true, true, false};
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    int i;

    (void)state;
    declare(sm, "q");
    consume(sm, "q", 1, 7);
    for (i = 0; i < 4; i++) {
        enqueue(sm, T0, "q", order[i]);
    }
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 2, 0, &res), 2);
    mq_sm_result_clear(&res);
    assert_int_equal(checkout(sm, T0, "q", 2, 70, 1, 0, &res), 1); /* get */
    mq_sm_result_clear(&res);

    cmd_init(&c, MQ_SM_LEADER_CHANGED, NULL);
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 3);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "q").unacked, 0);
    assert_int_equal(qstats(sm, "q").ready, 4);
    /* consumers stay registered; the old tags are now no-ops */
    assert_int_equal(qstats(sm, "q").consumers, 1);
    assert_int_equal(by_tag(sm, MQ_SM_SETTLE, 1, 1, false, NULL), 0);
    expect_order(sm, "q", 61, order, redel, 4);
    mq_sm_free(sm);
}

/* BOOT: non-durable and exclusive queues go, durable ones keep their
 * messages with every checked-out one returned (redelivered), consumers
 * are all unregistered, and an auto-delete queue is not swept later by an
 * unrelated cancel. */
static void test_boot(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm *copy = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    static const char *const bodies[] = {"m1", "m2", "m3"};
    static const bool redel[] = {true, true, false};
    void *snap;
    size_t snap_len;
    size_t i;

    (void)state;
    declare(sm, "durable");
    cmd_init(&c, MQ_SM_DECLARE, "transient");
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    cmd_init(&c, MQ_SM_DECLARE, "excl");
    c.durable = true;
    c.exclusive = true;
    c.who = who_of(0, 0);
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    cmd_init(&c, MQ_SM_DECLARE, "ad");
    c.durable = true;
    c.auto_delete = true;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    consume(sm, "ad", 3, 30);

    for (i = 0; i < 3; i++) {
        enqueue(sm, T0, "durable", bodies[i]);
    }
    enqueue(sm, T0, "transient", "t");
    consume(sm, "durable", 1, 7);
    assert_int_equal(checkout(sm, T0, "durable", 1, 7, 1, 0, &res), 1);
    mq_sm_result_clear(&res);
    assert_int_equal(checkout(sm, T0, "durable", 2, 8, 1, 0, &res), 1);
    mq_sm_result_clear(&res);

    cmd_init(&c, MQ_SM_BOOT, NULL);
    assert_int_equal(run(sm, T0 + 5, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 2);
    assert_int_equal(res.n_deleted, 2);
    for (i = 0; i < res.n_deleted; i++) {
        assert_int_equal(res.deleted[i].reason, MQ_SM_DEL_BOOT);
    }
    assert_memory_equal(res.deleted[0].queue, "transient", 9);
    assert_memory_equal(res.deleted[1].queue, "excl", 4);
    mq_sm_result_clear(&res);

    assert_false(queue_exists(sm, "transient"));
    assert_false(queue_exists(sm, "excl"));
    assert_true(queue_exists(sm, "ad"));
    assert_int_equal(qstats(sm, "durable").consumers, 0);
    assert_int_equal(qstats(sm, "durable").unacked, 0);
    assert_int_equal(qstats(sm, "ad").consumers, 0);

    /* a snapshot after BOOT restores to the same state */
    assert_int_equal(mq_sm_snapshot(sm, malloc, &snap, &snap_len), 0);
    assert_int_equal(mq_sm_restore(copy, snap, snap_len), 0);
    free(snap);
    assert_int_equal(mq_sm_digest(copy), mq_sm_digest(sm));

    /* the old consumer id is free again; an unrelated cancel does not sweep
     * the auto-delete queue that lost its consumer to the restart */
    consume(sm, "durable", 1, 7);
    cmd_init(&c, MQ_SM_CANCEL, NULL);
    c.who = who_of(1, 7);
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    assert_true(queue_exists(sm, "ad"));

    expect_order(sm, "durable", 62, bodies, redel, 3);

    /* a second BOOT finds nothing to return or delete */
    cmd_init(&c, MQ_SM_BOOT, NULL);
    assert_int_equal(run(copy, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 0);
    assert_int_equal(res.n_deleted, 0);
    mq_sm_result_clear(&res);
    mq_sm_free(copy);
    mq_sm_free(sm);
}

static void test_dedup_enqueue(void **state)
{
    struct mq_sm_config cfg = {64, 2};
    struct mq_sm *sm = mq_sm_new(&cfg);
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    uint64_t seq;

    (void)state;
    assert_non_null(sm);
    declare(sm, "q");
    cmd_init(&c, MQ_SM_ENQUEUE, "q");
    c.body = "x";
    c.body_len = 1;
    c.client_id = 42;
    c.seq = 5;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    assert_int_equal(run1(sm, T0, &c), MQ_SM_DUPLICATE);
    /* out of order within the window is fine, once */
    c.seq = 3;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    assert_int_equal(run1(sm, T0, &c), MQ_SM_DUPLICATE);
    /* another client with the same seq is independent */
    c.client_id = 43;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    assert_int_equal(qstats(sm, "q").ready, 3);

    /* slide the window: seqs 6..200 for client 42 */
    c.client_id = 42;
    for (seq = 6; seq <= 200; seq++) {
        c.seq = seq;
        assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    }
    c.seq = 150; /* still in the window (200 - 63 = 137) */
    assert_int_equal(run1(sm, T0, &c), MQ_SM_DUPLICATE);
    c.seq = 137;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_DUPLICATE);
    c.seq = 136; /* below it: refused as stale, never enqueued */
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_STALE);
    mq_sm_result_clear(&res);
    c.seq = 300; /* a jump larger than the window */
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    c.seq = 200;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_STALE);
    c.seq = 299;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    assert_int_equal(qstats(sm, "q").ready, 3 + 195 + 2);

    /* bounded: a third client evicts the least recently used (43) */
    c.client_id = 44;
    c.seq = 1;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    {
        struct mq_sm_stats st;

        mq_sm_stats(sm, &st);
        assert_int_equal(st.clients, 2);
    }
    c.client_id = 43;
    c.seq = 3;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK); /* forgotten */
    mq_sm_free(sm);
}

static void test_message_ttl(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;

    (void)state;
    cmd_init(&c, MQ_SM_DECLARE, "ttl");
    c.args.has_message_ttl = true;
    c.args.message_ttl_ms = 1000;
    c.args.has_dlx = true;
    c.args.dlx = "";
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    enqueue(sm, T0, "ttl", "a");
    enqueue(sm, T0 + 500, "ttl", "b");
    /* per-message TTL shorter than the queue's, behind b: head-only */
    cmd_init(&c, MQ_SM_ENQUEUE, "ttl");
    c.body = "c";
    c.body_len = 1;
    c.has_ttl = true;
    c.ttl_ms = 10;
    assert_int_equal(run1(sm, T0 + 600, &c), MQ_SM_OK);

    cmd_init(&c, MQ_SM_EXPIRE, NULL);
    assert_int_equal(run(sm, T0 + 999, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 0);
    mq_sm_result_clear(&res);
    assert_int_equal(run(sm, T0 + 1000, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 1); /* a, exactly at its deadline */
    assert_int_equal(res.n_dead, 1);
    assert_int_equal(res.dead[0].reason, MQ_SM_DL_EXPIRED);
    assert_memory_equal(res.dead[0].body, "a", 1);
    mq_sm_result_clear(&res);
    /* time never goes back: an older stamp changes nothing */
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 0);
    mq_sm_result_clear(&res);
    /* checkout expires the head itself: b (T0+1500) and c (T0+610) go */
    assert_int_equal(checkout(sm, T0 + 1500, "ttl", 1, 7, 5, 0, &res), 0);
    assert_int_equal(res.n_dead, 2);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "ttl").ready, 0);
    mq_sm_free(sm);
}

static void test_queue_expires(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_cmd tick;
    struct mq_sm_result res;

    (void)state;
    cmd_init(&c, MQ_SM_DECLARE, "tmp");
    c.args.has_expires = true;
    c.args.expires_ms = 5000;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    cmd_init(&tick, MQ_SM_EXPIRE, NULL);
    /* redeclare at +3000 counts as use */
    assert_int_equal(run1(sm, T0 + 3000, &c), MQ_SM_OK);
    assert_int_equal(run1(sm, T0 + 7999, &tick), MQ_SM_OK);
    assert_true(queue_exists(sm, "tmp"));
    /* publishing is not use */
    enqueue(sm, T0 + 7999, "tmp", "m");
    assert_int_equal(run(sm, T0 + 8000, &tick, &res), MQ_SM_OK);
    assert_int_equal(res.n_deleted, 1);
    assert_int_equal(res.deleted[0].reason, MQ_SM_DEL_EXPIRES);
    assert_memory_equal(res.deleted[0].queue, "tmp", 3);
    mq_sm_result_clear(&res);
    assert_false(queue_exists(sm, "tmp"));

    /* a queue with a consumer does not expire */
    cmd_init(&c, MQ_SM_DECLARE, "held");
    c.args.has_expires = true;
    c.args.expires_ms = 10;
    assert_int_equal(run1(sm, T0 + 8000, &c), MQ_SM_OK);
    consume(sm, "held", 1, 7);
    assert_int_equal(run1(sm, T0 + 100000, &tick), MQ_SM_OK);
    assert_true(queue_exists(sm, "held"));
    /* x-expires 0 is invalid, as in RabbitMQ */
    cmd_init(&c, MQ_SM_DECLARE, "zero");
    c.args.has_expires = true;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_PRECONDITION_FAILED);
    mq_sm_free(sm);
}

/* x-overflow reject-publish: a full queue refuses the new message and keeps
 * the old ones; the refusal is not a dedup record (nothing was stored); the
 * setting is part of the queue's identity, snapshots and the digest. */
static void test_max_length_reject_publish(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm *copy = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    void *snap;
    size_t snap_len;

    (void)state;
    cmd_init(&c, MQ_SM_DECLARE, "rp");
    c.args.has_max_length = true;
    c.args.max_length = 1;
    c.args.overflow_reject = true;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    enqueue(sm, T0, "rp", "first");
    cmd_init(&c, MQ_SM_ENQUEUE, "rp");
    c.body = "second";
    c.body_len = 6;
    c.client_id = 9;
    c.seq = 1;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_REJECTED);
    assert_int_equal(res.n_dead, 0);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "rp").ready, 1);
    /* redeclared with drop-head: inequivalent */
    cmd_init(&c, MQ_SM_DECLARE, "rp");
    c.args.has_max_length = true;
    c.args.max_length = 1;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_PRECONDITION_FAILED);
    assert_string_equal(res.reply_text,
                        "PRECONDITION_FAILED - inequivalent arg 'x-overflow'");
    mq_sm_result_clear(&res);
    assert_int_equal(mq_sm_snapshot(sm, malloc, &snap, &snap_len), 0);
    assert_int_equal(mq_sm_restore(copy, snap, snap_len), 0);
    free(snap);
    assert_int_equal(mq_sm_digest(copy), mq_sm_digest(sm));
    /* the copy still rejects; the same (client, seq) is not a duplicate */
    cmd_init(&c, MQ_SM_ENQUEUE, "rp");
    c.body = "second";
    c.body_len = 6;
    c.client_id = 9;
    c.seq = 1;
    assert_int_equal(run1(copy, T0, &c), MQ_SM_REJECTED);
    mq_sm_free(copy);
    mq_sm_free(sm);
}

static void test_max_length_drop_head(void **state)
{
    static const char *const order[] = {"c", "d"};
    static const bool redel[] = {false, false};
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;

    (void)state;
    cmd_init(&c, MQ_SM_DECLARE, "ml");
    c.args.has_max_length = true;
    c.args.max_length = 2;
    c.args.has_dlx = true;
    c.args.dlx = "dx";
    c.args.dlx_len = 2;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    enqueue(sm, T0, "ml", "a");
    enqueue(sm, T0, "ml", "b");
    cmd_init(&c, MQ_SM_ENQUEUE, "ml");
    c.body = "c";
    c.body_len = 1;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 1);
    assert_int_equal(res.n_dead, 1);
    assert_int_equal(res.dead[0].reason, MQ_SM_DL_MAXLEN);
    assert_memory_equal(res.dead[0].body, "a", 1);
    mq_sm_result_clear(&res);
    enqueue(sm, T0, "ml", "d");
    assert_int_equal(qstats(sm, "ml").ready, 2);
    expect_order(sm, "ml", 62, order, redel, 2);

    /* max-length 0: every message dropped at once */
    cmd_init(&c, MQ_SM_DECLARE, "z");
    c.args.has_max_length = true;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    cmd_init(&c, MQ_SM_ENQUEUE, "z");
    c.body = "x";
    c.body_len = 1;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 0);
    assert_int_equal(res.n_dead, 0); /* no DLX */
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "z").ready, 0);
    mq_sm_free(sm);
}

static void test_redeclare_mismatch(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;

    (void)state;
    cmd_init(&c, MQ_SM_DECLARE, "q");
    c.durable = true;
    c.args.has_message_ttl = true;
    c.args.message_ttl_ms = 100;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    enqueue(sm, T0, "q", "m");
    /* identical redeclare: ok, message count */
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 1);
    mq_sm_result_clear(&res);

    c.durable = false;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_PRECONDITION_FAILED);
    assert_int_equal(res.reply_code, 406);
    assert_non_null(strstr(res.reply_text, "durable"));
    mq_sm_result_clear(&res);
    c.durable = true;
    c.args.message_ttl_ms = 200;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_PRECONDITION_FAILED);
    c.args.has_message_ttl = false;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_PRECONDITION_FAILED);
    c.args.has_message_ttl = true;
    c.args.message_ttl_ms = 100;
    c.auto_delete = true;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_PRECONDITION_FAILED);
    /* passive ignores the properties */
    c.passive = true;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    mq_sm_free(sm);
}

static void test_passive_missing(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;

    (void)state;
    cmd_init(&c, MQ_SM_DECLARE, "nope");
    c.passive = true;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_NOT_FOUND);
    assert_int_equal(res.reply_code, 404);
    mq_sm_result_clear(&res);
    assert_false(queue_exists(sm, "nope"));
    /* the same name in another vhost is another queue */
    declare(sm, "nope");
    c.vhost = "other";
    c.vhost_len = 5;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_NOT_FOUND);
    mq_sm_free(sm);
}

static void test_delete_if_unused_if_empty(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;

    (void)state;
    declare(sm, "q");
    consume(sm, "q", 1, 7);
    enqueue(sm, T0, "q", "m");
    cmd_init(&c, MQ_SM_DELETE, "q");
    c.if_unused = true;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_PRECONDITION_FAILED);
    assert_int_equal(res.reply_code, 406);
    mq_sm_result_clear(&res);
    c.if_unused = false;
    c.if_empty = true;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_PRECONDITION_FAILED);
    c.if_empty = false;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 1);
    assert_int_equal(res.n_deleted, 1);
    assert_int_equal(res.deleted[0].reason, MQ_SM_DEL_COMMAND);
    mq_sm_result_clear(&res);
    assert_false(queue_exists(sm, "q"));
    /* gone: the edge answers delete-ok(0) as RabbitMQ does */
    assert_int_equal(run1(sm, T0, &c), MQ_SM_NOT_FOUND);
    /* unused and empty: both conditions pass */
    declare(sm, "q2");
    cmd_init(&c, MQ_SM_DELETE, "q2");
    c.if_unused = true;
    c.if_empty = true;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    {
        struct mq_sm_stats st;

        mq_sm_stats(sm, &st);
        assert_int_equal(st.queues, 0);
        assert_int_equal(st.consumers, 0);
    }
    mq_sm_free(sm);
}

static void test_purge(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;

    (void)state;
    declare(sm, "q");
    enqueue(sm, T0, "q", "a");
    enqueue(sm, T0, "q", "b");
    enqueue(sm, T0, "q", "c");
    assert_int_equal(checkout(sm, T0, "q", 1, 7, 1, 0, &res), 1);
    mq_sm_result_clear(&res);
    cmd_init(&c, MQ_SM_PURGE, "q");
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 2); /* ready only */
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "q").ready, 0);
    assert_int_equal(qstats(sm, "q").unacked, 1);
    cmd_init(&c, MQ_SM_PURGE, "missing");
    assert_int_equal(run1(sm, T0, &c), MQ_SM_NOT_FOUND);
    mq_sm_free(sm);
}

/* ----------------------------------------------- random streams, snapshots */

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: the stream must be the same for both replicas */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static const char *const qnames[] = {"q0", "q1", "q2", "q3"};

/* One random command at a random-ish increasing time. */
static void random_cmd(uint64_t *rng, struct mq_sm_cmd *c, uint64_t *now,
                       char *body)
{
    uint64_t r = rng_next(rng);
    const char *q = qnames[r % 4];
    uint64_t kind = (r >> 8) % 100;

    *now += (r >> 16) % 50;
    cmd_init(c, MQ_SM_ENQUEUE, q);
    c->who = who_of((r >> 24) % 3, (r >> 28) % 6 + 1);
    if (kind < 5) {
        c->type = MQ_SM_DECLARE;
        c->durable = true;
        c->auto_delete = (r >> 32) % 4 == 0;
        c->args.has_message_ttl = q[1] == '1';
        c->args.message_ttl_ms = 300;
        c->args.has_max_length = q[1] == '2';
        c->args.max_length = 8;
        c->args.has_dlx = q[1] != '3';
        c->args.dlx = "dlx";
        c->args.dlx_len = 3;
        c->args.has_expires = q[1] == '3';
        c->args.expires_ms = 2000;
    } else if (kind < 45) {
        int len = (int)((r >> 32) % 40);

        snprintf(body, 64, "%0*d", len, (int)(r >> 40));
        c->body = body;
        c->body_len = strlen(body);
        c->client_id = (r >> 36) % 3;
        c->seq = (r >> 40) % 200;
        c->has_ttl = (r >> 50) % 5 == 0;
        c->ttl_ms = (r >> 52) % 400;
    } else if (kind < 48) {
        c->type = MQ_SM_CONSUME;
        c->exclusive = (r >> 40) % 7 == 0;
    } else if (kind < 50) {
        c->type = MQ_SM_CANCEL;
    } else if (kind < 65) {
        c->type = MQ_SM_CHECKOUT;
        c->max_messages = (uint32_t)((r >> 40) % 5);
        c->prefetch = (uint32_t)((r >> 44) % 4);
    } else if (kind < 77) {
        c->type = MQ_SM_SETTLE;
        c->tag = (r >> 40) % 64;
        c->multiple = (r >> 48) % 3 == 0;
    } else if (kind < 85) {
        c->type = MQ_SM_RETURN;
        c->tag = (r >> 40) % 64;
        c->multiple = (r >> 48) % 3 == 0;
        c->scope = (enum mq_sm_scope)((r >> 50) % 8);
        if (c->scope >= MQ_SM_SCOPE__COUNT) {
            c->scope = MQ_SM_SCOPE_TAG;
        }
    } else if (kind < 90) {
        c->type = MQ_SM_DROP;
        c->tag = (r >> 40) % 64;
        c->multiple = (r >> 48) % 2 == 0;
    } else if (kind < 94) {
        c->type = MQ_SM_EXPIRE;
    } else if (kind < 96) {
        c->type = MQ_SM_LEADER_CHANGED;
    } else if (kind < 98) {
        c->type = MQ_SM_PURGE;
    } else {
        c->type = MQ_SM_DELETE;
        c->if_unused = (r >> 40) % 2 == 0;
    }
}

/* What the random streams exercised, so a stream that stops doing real
 * work (e.g. every command failing) does not pass silently. */
static struct {
    uint64_t ok;
    uint64_t deliveries;
    uint64_t dead;
    uint64_t deleted;
    uint64_t duplicates;
} fed;

/* Feed @n random commands from @seed to every sm in @sms. */
static void feed(struct mq_sm **sms, size_t nsms, uint64_t seed, int n,
                 uint64_t *now)
{
    uint64_t rng = seed;
    char body[64];
    int i;
    size_t k;

    for (i = 0; i < n; i++) {
        struct mq_sm_cmd c;
        struct mq_sm_result first;

        random_cmd(&rng, &c, now, body);
        for (k = 0; k < nsms; k++) {
            struct mq_sm_result res;

            mq_sm_apply(sms[k], *now, &c, &res);
            if (k == 0) {
                first = res;
                continue;
            }
            /* same answer on every replica */
            assert_int_equal(res.status, first.status);
            assert_int_equal(res.count, first.count);
            assert_int_equal(res.n_deliveries, first.n_deliveries);
            assert_int_equal(res.n_dead, first.n_dead);
            assert_int_equal(res.n_deleted, first.n_deleted);
            mq_sm_result_clear(&res);
        }
        fed.ok += first.status == MQ_SM_OK;
        fed.deliveries += first.n_deliveries;
        fed.dead += first.n_dead;
        fed.deleted += first.n_deleted;
        fed.duplicates += first.status == MQ_SM_DUPLICATE;
        mq_sm_result_clear(&first);
    }
}

static void test_determinism(void **state)
{
    struct mq_sm *sms[2];
    uint64_t now = T0;
    uint64_t seed;
    struct mq_sm_stats st;

    (void)state;
    for (seed = 1; seed <= 5; seed++) {
        sms[0] = sm_make();
        sms[1] = sm_make();
        feed(sms, 2, seed, 5000, &now);
        assert_true(mq_sm_digest(sms[0]) == mq_sm_digest(sms[1]));
        mq_sm_stats(sms[0], &st);
        assert_true(st.next_msg_id > 100); /* the stream did real work */
        mq_sm_free(sms[0]);
        mq_sm_free(sms[1]);
    }
    print_message("random streams: ok %llu deliveries %llu dead %llu "
                  "deleted %llu duplicates %llu\n",
                  (unsigned long long)fed.ok,
                  (unsigned long long)fed.deliveries,
                  (unsigned long long)fed.dead,
                  (unsigned long long)fed.deleted,
                  (unsigned long long)fed.duplicates);
    assert_true(fed.ok > 10000);
    assert_true(fed.deliveries > 1000);
    assert_true(fed.dead > 100);
    assert_true(fed.deleted > 10);
    assert_true(fed.duplicates > 100);
    /* and different streams give different digests */
    sms[0] = sm_make();
    sms[1] = sm_make();
    now = T0;
    feed(&sms[0], 1, 11, 2000, &now);
    now = T0;
    feed(&sms[1], 1, 12, 2000, &now);
    assert_true(mq_sm_digest(sms[0]) != mq_sm_digest(sms[1]));
    mq_sm_free(sms[0]);
    mq_sm_free(sms[1]);
}

static void test_digest_order(void **state)
{
    struct mq_sm *a = sm_make();
    struct mq_sm *b = sm_make();

    (void)state;
    /* queue creation order does not matter */
    declare(a, "x");
    declare(a, "y");
    declare(b, "y");
    declare(b, "x");
    assert_true(mq_sm_digest(a) == mq_sm_digest(b));
    /* message order within a queue does */
    enqueue(a, T0, "x", "1");
    enqueue(a, T0, "y", "2");
    enqueue(b, T0, "y", "1");
    enqueue(b, T0, "x", "2");
    assert_true(mq_sm_digest(a) != mq_sm_digest(b));
    mq_sm_free(a);
    mq_sm_free(b);
}

static void test_snapshot_roundtrip(void **state)
{
    struct mq_sm *sms[2];
    struct mq_sm *restored;
    uint64_t now = T0;
    uint64_t now2;
    void *buf;
    size_t len;
    void *buf2;
    size_t len2;

    (void)state;
    sms[0] = sm_make();
    feed(sms, 1, 77, 4000, &now);
    assert_int_equal(mq_sm_snapshot(sms[0], malloc, &buf, &len), 0);

    restored = sm_make();
    declare(restored, "old-state");
    assert_int_equal(mq_sm_restore(restored, buf, len), 0);
    assert_true(mq_sm_digest(restored) == mq_sm_digest(sms[0]));
    assert_false(queue_exists(restored, "old-state"));
    /* the snapshot of the restored state is byte-identical */
    assert_int_equal(mq_sm_snapshot(restored, malloc, &buf2, &len2), 0);
    assert_int_equal(len2, len);
    assert_memory_equal(buf2, buf, len);
    free(buf2);

    /* same behaviour after: the same stream keeps them equal */
    sms[1] = restored;
    now2 = now;
    feed(sms, 2, 78, 4000, &now2);
    assert_true(mq_sm_digest(sms[0]) == mq_sm_digest(sms[1]));
    free(buf);

    /* empty state round trip */
    mq_sm_free(restored);
    restored = sm_make();
    assert_int_equal(mq_sm_snapshot(restored, malloc, &buf, &len), 0);
    assert_int_equal(mq_sm_restore(sms[0], buf, len), 0);
    assert_true(mq_sm_digest(sms[0]) == mq_sm_digest(restored));
    free(buf);
    mq_sm_free(sms[0]);
    mq_sm_free(restored);
}

static void *fail_alloc(size_t n)
{
    (void)n;
    return NULL;
}

static void test_snapshot_corrupt(void **state)
{
    struct mq_sm *src = sm_make();
    struct mq_sm *dst = sm_make();
    uint64_t now = T0;
    unsigned char *buf;
    void *out;
    size_t len;
    size_t i;
    uint64_t before;

    (void)state;
    feed(&src, 1, 5, 1500, &now);
    assert_int_equal(mq_sm_snapshot(src, fail_alloc, &out, &len), -1);
    assert_int_equal(mq_sm_snapshot(src, malloc, &out, &len), 0);
    buf = out;
    declare(dst, "keep");
    enqueue(dst, T0, "keep", "me");
    before = mq_sm_digest(dst);

    assert_int_equal(mq_sm_restore(dst, NULL, 0), -1);
    /* every truncation */
    for (i = 0; i < len; i += (i < 256 ? 1 : 97)) {
        assert_int_equal(mq_sm_restore(dst, buf, i), -1);
    }
    /* flipped bits anywhere */
    for (i = 0; i < len; i += (i < 256 ? 1 : 61)) {
        buf[i] ^= 0x10;
        assert_int_equal(mq_sm_restore(dst, buf, len), -1);
        buf[i] ^= 0x10;
    }
    assert_true(mq_sm_digest(dst) == before);
    assert_int_equal(qstats(dst, "keep").ready, 1);
    assert_int_equal(mq_sm_restore(dst, buf, len), 0);
    assert_true(mq_sm_digest(dst) == mq_sm_digest(src));
    free(buf);
    mq_sm_free(src);
    mq_sm_free(dst);
}

/* Put a valid checksum on a crafted buffer. Mirrors hash_bytes() in
 * mq_sm.c: crafted snapshots test the validation behind the checksum. */
static uint64_t t_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t t_hash(const unsigned char *s, size_t len, uint64_t seed)
{
    uint64_t h = t_mix64(seed ^ ((uint64_t)len * 0x9e3779b97f4a7c15ULL));
    uint64_t w;
    size_t i;

    while (len >= 8) {
        w = 0;
        for (i = 0; i < 8; i++) {
            w |= (uint64_t)s[i] << (8 * i);
        }
        h = t_mix64(h ^ w) + 0x9e3779b97f4a7c15ULL;
        s += 8;
        len -= 8;
    }
    w = 0;
    for (i = 0; i < len; i++) {
        w |= (uint64_t)s[i] << (8 * i);
    }
    return t_mix64(h ^ w ^ ((uint64_t)len << 56));
}

static void reseal(unsigned char *buf, size_t len)
{
    uint64_t h = t_hash(buf, len - 8, 0x6d712d736e617073ULL);
    int i;

    for (i = 0; i < 8; i++) {
        buf[len - 8 + i] = (unsigned char)(h >> (8 * i));
    }
}

static void test_snapshot_crafted(void **state)
{
    struct mq_sm *src = sm_make();
    struct mq_sm *dst = sm_make();
    struct mq_sm_result res;
    unsigned char *buf;
    void *out;
    size_t len;
    uint64_t before;

    (void)state;
    declare(src, "q");
    enqueue(src, T0, "q", "a");
    enqueue(src, T0, "q", "b");
    assert_int_equal(checkout(src, T0, "q", 1, 7, 1, 0, &res), 1);
    mq_sm_result_clear(&res);
    assert_int_equal(mq_sm_snapshot(src, malloc, &out, &len), 0);
    buf = out;
    before = mq_sm_digest(dst);

    /* resealing an untouched copy is accepted: the checksum is what we think */
    reseal(buf, len);
    assert_int_equal(mq_sm_restore(dst, buf, len), 0);
    mq_sm_free(dst);
    dst = sm_make();
    before = mq_sm_digest(dst);

    /* next_msg_id (offset 16) below the stored ids */
    buf[16] = 1;
    reseal(buf, len);
    assert_int_equal(mq_sm_restore(dst, buf, len), -1);
    buf[16] = 3;
    /* next_tag (offset 24) at the checked-out tag */
    buf[24] = 1;
    reseal(buf, len);
    assert_int_equal(mq_sm_restore(dst, buf, len), -1);
    buf[24] = 2;
    /* queue count (offset 36) larger than present */
    buf[36] = 2;
    reseal(buf, len);
    assert_int_equal(mq_sm_restore(dst, buf, len), -1);
    buf[36] = 1;
    /* a version from the future */
    buf[4] = 3;
    reseal(buf, len);
    assert_int_equal(mq_sm_restore(dst, buf, len), -1);
    buf[4] = 2;
    reseal(buf, len);
    assert_true(mq_sm_digest(dst) == before);
    assert_int_equal(mq_sm_restore(dst, buf, len), 0);
    assert_true(mq_sm_digest(dst) == mq_sm_digest(src));
    free(buf);

    /* Version 1 (before CHECKOUT seqs) is still read: without consumers
     * the two formats differ in the version only. */
    mq_sm_free(src);
    src = sm_make();
    declare(src, "q");
    enqueue(src, T0, "q", "a");
    assert_int_equal(mq_sm_snapshot(src, malloc, &out, &len), 0);
    buf = out;
    buf[4] = 1;
    reseal(buf, len);
    assert_int_equal(mq_sm_restore(dst, buf, len), 0);
    assert_true(mq_sm_digest(dst) == mq_sm_digest(src));
    free(buf);

    /* Version 1 (before CHECKOUT seqs) is still read: without consumers
     * the two formats differ in the version only. */
    mq_sm_free(src);
    src = sm_make();
    declare(src, "q");
    enqueue(src, T0, "q", "a");
    assert_int_equal(mq_sm_snapshot(src, malloc, &out, &len), 0);
    buf = out;
    buf[4] = 1;
    reseal(buf, len);
    assert_int_equal(mq_sm_restore(dst, buf, len), 0);
    assert_true(mq_sm_digest(dst) == mq_sm_digest(src));
    free(buf);
    mq_sm_free(src);
    mq_sm_free(dst);
}

static void test_bad_requests(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    uint64_t before;

    (void)state;
    declare(sm, "q");
    before = mq_sm_digest(sm);
    cmd_init(&c, MQ_SM_ENQUEUE, "");
    assert_int_equal(run1(sm, T0, &c), MQ_SM_BAD_REQUEST);
    cmd_init(&c, MQ_SM_CMD__COUNT, "q");
    assert_int_equal(run1(sm, T0, &c), MQ_SM_BAD_REQUEST);
    cmd_init(&c, MQ_SM_RETURN, NULL);
    c.scope = MQ_SM_SCOPE__COUNT;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_BAD_REQUEST);
    cmd_init(&c, MQ_SM_ENQUEUE, "q");
    c.body_len = 3; /* NULL body */
    assert_int_equal(run1(sm, T0, &c), MQ_SM_BAD_REQUEST);
    /* a consumer id cannot move to another queue */
    declare(sm, "r");
    consume(sm, "q", 1, 7);
    cmd_init(&c, MQ_SM_CHECKOUT, "r");
    c.who = who_of(1, 7);
    c.max_messages = 1;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_BAD_REQUEST);
    assert_true(mq_sm_digest(sm) != before); /* the declares/consume */
    mq_sm_free(sm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_order),
        cmocka_unit_test(test_prefetch_bound),
        cmocka_unit_test(test_ack_single_and_multiple),
        cmocka_unit_test(test_settle_exact_tags_spares_unseen_delivery),
        cmocka_unit_test(test_checkout_retry_replays),
        cmocka_unit_test(test_requeue_redelivered_at_head),
        cmocka_unit_test(test_reject_without_requeue),
        cmocka_unit_test(test_consumer_gone_returns),
        cmocka_unit_test(test_connection_gone_deletes_exclusive),
        cmocka_unit_test(test_auto_delete_last_consumer),
        cmocka_unit_test(test_exclusive_consumer),
        cmocka_unit_test(test_leader_change_returns_all),
        cmocka_unit_test(test_boot),
        cmocka_unit_test(test_dedup_enqueue),
        cmocka_unit_test(test_message_ttl),
        cmocka_unit_test(test_queue_expires),
        cmocka_unit_test(test_max_length_drop_head),
        cmocka_unit_test(test_max_length_reject_publish),
        cmocka_unit_test(test_redeclare_mismatch),
        cmocka_unit_test(test_passive_missing),
        cmocka_unit_test(test_delete_if_unused_if_empty),
        cmocka_unit_test(test_purge),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_digest_order),
        cmocka_unit_test(test_snapshot_roundtrip),
        cmocka_unit_test(test_snapshot_corrupt),
        cmocka_unit_test(test_snapshot_crafted),
        cmocka_unit_test(test_bad_requests),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
