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

#include <malloc.h>

#include <cmocka.h>

#if defined(__SANITIZE_ADDRESS__)
#define RINGMQ_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RINGMQ_TEST_ASAN 1
#endif
#endif

#include "sm/mq_outbox.h"
#include "sm/mq_sm.h"
#include "tests/unit/lib/mq_body_store.h"

#define T0 1700000000000ULL
#define VH "/"

/* ------------------------------------------------------------------ helpers */

static void era(struct mq_sm *sm, uint64_t now);

/* A machine as a node has it once its first leader's ERA is applied:
 * bodies external (mq_sm.h, "Switching to external bodies"). */
static struct mq_sm *sm_make(void)
{
    struct mq_sm *sm = mq_sm_new(NULL);

    assert_non_null(sm);
    mbs_fresh(sm);
    era(sm, 0);
    return sm;
}

/* A new machine, bodies inline: as a replica that replays an old log
 * from its start. */
static struct mq_sm *sm_make_inline(void)
{
    struct mq_sm *sm = mq_sm_new(NULL);

    assert_non_null(sm);
    mbs_fresh(sm);
    return sm;
}

/* Free a machine with its body store. */
static void sm_free(struct mq_sm *sm)
{
    mbs_forget(sm);
    mq_sm_free(sm);
}

/* Restore @dst from @buf, a snapshot of @src (NULL: made up, or with
 * bodies inline): @dst's bodies are then @src's, or none. */
static int restore(struct mq_sm *dst, const struct mq_sm *src,
                   const void *buf, size_t len)
{
    int rc = mq_sm_restore(dst, buf, len);

    if (rc != 0) {
        return rc;
    }
    mbs_set(dst, src != NULL ? mbs_clone(mbs_of(src)) : mbs_new());
    return 0;
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
    mbs_result(mbs_of(sm), res);
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

static void era(struct mq_sm *sm, uint64_t now)
{
    struct mq_sm_cmd c;

    cmd_init(&c, MQ_SM_ERA, NULL);
    assert_int_equal(run1(sm, now, &c), MQ_SM_OK);
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

/* Two replicas' results of one command: the same writes and frees, the
 * same refs and bodies delivered and dead-lettered. */
static void assert_same_bodies(const struct mq_sm_result *a,
                               const struct mq_sm_result *b)
{
    size_t i;

    assert_int_equal(a->n_writes, b->n_writes);
    for (i = 0; i < a->n_writes; i++) {
        assert_int_equal(a->writes[i].seg, b->writes[i].seg);
        assert_int_equal(a->writes[i].off, b->writes[i].off);
        assert_int_equal(a->writes[i].len, b->writes[i].len);
    }
    assert_int_equal(a->n_freed, b->n_freed);
    for (i = 0; i < a->n_freed; i++) {
        assert_int_equal(a->freed[i], b->freed[i]);
    }
    assert_int_equal(a->n_deliveries, b->n_deliveries);
    for (i = 0; i < a->n_deliveries; i++) {
        const struct mq_sm_delivery *x = &a->deliveries[i];
        const struct mq_sm_delivery *y = &b->deliveries[i];

        assert_true(x->seg == y->seg && x->off == y->off);
        assert_int_equal(x->body_len, y->body_len);
        assert_memory_equal(x->body, y->body, x->body_len);
    }
    assert_int_equal(a->n_dead, b->n_dead);
    for (i = 0; i < a->n_dead; i++) {
        const struct mq_sm_dead_letter *x = &a->dead[i];
        const struct mq_sm_dead_letter *y = &b->dead[i];

        assert_true(x->seg == y->seg && x->off == y->off);
        assert_int_equal(x->body_len, y->body_len);
        assert_memory_equal(x->body, y->body, x->body_len);
    }
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
    sm_free(sm);
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
    sm_free(sm);
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
    sm_free(sm);
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
    sm_free(sm);
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
 * edge cannot know of. An empty one may be proposed again (the long poll) and
 * an old log's LEADER_CHANGED makes every seq new again (ERA does not:
 * test_era_keeps_deliveries). */
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
    sm_free(sm);
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
    sm_free(sm);
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
    sm_free(sm);
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
    sm_free(sm);
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
    sm_free(sm);
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
    sm_free(sm);
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
    sm_free(sm);
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
    sm_free(sm);
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
    assert_int_equal(restore(copy, sm, snap, snap_len), 0);
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
    sm_free(copy);
    sm_free(sm);
}

/* A publish names the previous one of its channel to the same queue that
 * the edge has not seen settle (prev_seq): while that one is not applied,
 * it is refused OUT_OF_ORDER and nothing changes, so a retried publish of
 * unknown outcome is not overtaken by a later one that a new leader got
 * first. A prev below the client's window counts as applied. */
static void test_enqueue_prev_seq_order(void **state)
{
    static const char *const ab[] = {"a", "b"};
    static const bool fresh[] = {false, false};
    struct mq_sm_config cfg = {64, 4};
    struct mq_sm *sm = mq_sm_new(&cfg);
    struct mq_sm_cmd a, b;
    struct mq_sm_result res;
    uint64_t seq;

    (void)state;
    assert_non_null(sm);
    declare(sm, "q");
    cmd_init(&a, MQ_SM_ENQUEUE, "q");
    a.body = "a";
    a.body_len = 1;
    a.client_id = 42;
    a.seq = 7;
    b = a;
    b.body = "b";
    b.seq = 8;
    b.prev_seq = 7;
    /* b first: refused, nothing stored, not recorded as seen */
    assert_int_equal(run(sm, T0, &b, &res), MQ_SM_OUT_OF_ORDER);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "q").ready, 0);
    assert_int_equal(run1(sm, T0, &a), MQ_SM_OK);
    assert_int_equal(run1(sm, T0, &b), MQ_SM_OK);
    assert_int_equal(run1(sm, T0, &b), MQ_SM_DUPLICATE);
    expect_order(sm, "q", 61, ab, fresh, 2);

    /* a prev that left the window (4 words: 256 seqs) is not waited for */
    for (seq = 9; seq < 400; seq++) {
        a.seq = seq;
        assert_int_equal(run1(sm, T0, &a), MQ_SM_OK);
    }
    b.seq = 400;
    b.prev_seq = 100;
    assert_int_equal(run1(sm, T0, &b), MQ_SM_OK);
    sm_free(sm);
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
    sm_free(sm);
}

/* A queue with x-message-ttl @ttl_ms and the default exchange as its
 * dead-letter exchange. */
static void declare_ttl_dlx(struct mq_sm *sm, const char *q, uint64_t ttl_ms)
{
    struct mq_sm_cmd c;

    cmd_init(&c, MQ_SM_DECLARE, q);
    c.args.has_message_ttl = true;
    c.args.message_ttl_ms = ttl_ms;
    c.args.has_dlx = true;
    c.args.dlx = "";
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
}

static void test_message_ttl(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;

    (void)state;
    declare_ttl_dlx(sm, "ttl", 1000);
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
    sm_free(sm);
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
    sm_free(sm);
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
    assert_int_equal(restore(copy, sm, snap, snap_len), 0);
    free(snap);
    assert_int_equal(mq_sm_digest(copy), mq_sm_digest(sm));
    /* the copy still rejects; the same (client, seq) is not a duplicate */
    cmd_init(&c, MQ_SM_ENQUEUE, "rp");
    c.body = "second";
    c.body_len = 6;
    c.client_id = 9;
    c.seq = 1;
    assert_int_equal(run1(copy, T0, &c), MQ_SM_REJECTED);
    sm_free(copy);
    sm_free(sm);
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
    sm_free(sm);
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
    sm_free(sm);
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
    sm_free(sm);
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
    sm_free(sm);
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
    sm_free(sm);
}

/* ------------------------------------------------------------ dispatch */

static void consume_credit(struct mq_sm *sm, const char *q, uint64_t channel,
                           uint64_t consumer, uint32_t credit,
                           uint32_t prefetch)
{
    struct mq_sm_cmd c;

    cmd_init(&c, MQ_SM_CONSUME, q);
    c.who = who_of(channel, consumer);
    c.max_messages = credit;
    c.prefetch = prefetch;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
}

/* Checkout of @consumer (on channel @consumer) expecting exactly @want
 * bodies, in order, none redelivered; returns how many it set aside. */
static uint64_t expect_bodies(struct mq_sm *sm, uint64_t consumer,
                              uint32_t prefetch, const char *const *want,
                              size_t n)
{
    struct mq_sm_result res;
    uint64_t set_aside;
    size_t i;

    assert_int_equal(checkout(sm, T0, "q", consumer, consumer, 64, prefetch,
                              &res),
                     n);
    for (i = 0; i < n; i++) {
        assert_body(&res.deliveries[i], want[i]);
        assert_false(res.deliveries[i].redelivered);
        assert_int_equal(res.deliveries[i].delivery_count, 1);
    }
    set_aside = res.set_aside;
    mq_sm_result_clear(&res);
    return set_aside;
}

/* RabbitMQ's round robin (tutorial 2): with two consumers on a queue, ten
 * messages alternate 5/5 whichever consumer's CHECKOUT comes first; the
 * turn carries over to the next batch; a consumer's prefetch is honoured
 * for what is set aside for it. */
static void test_round_robin_dispatch(void **state)
{
    static const char *const all[] = {"0", "1", "2", "3", "4",
                                      "5", "6", "7", "8", "9"};
    static const char *const even[] = {"0", "2", "4", "6", "8"};
    static const char *const odd[] = {"1", "3", "5", "7", "9"};
    static const char *const then_2[] = {"b"};
    static const char *const then_1[] = {"a", "c"};
    struct mq_sm *sm = sm_make();
    int i;

    (void)state;
    declare(sm, "q");
    consume_credit(sm, "q", 1, 1, 64, 0);
    consume_credit(sm, "q", 2, 2, 64, 0);
    for (i = 0; i < 10; i++) {
        enqueue(sm, T0, "q", all[i]);
    }
    /* the first CHECKOUT deals all ten: its own five, five set aside */
    assert_int_equal(expect_bodies(sm, 1, 0, even, 5), 5);
    assert_int_equal(mq_sm_consumer_pending(sm, 2), 5);
    assert_int_equal(qstats(sm, "q").ready, 0);
    assert_int_equal(qstats(sm, "q").unacked, 10);
    assert_int_equal(expect_bodies(sm, 2, 0, odd, 5), 0);
    assert_int_equal(mq_sm_consumer_pending(sm, 2), 0);
    /* consumer 1 was served last-but-one: the next message is its turn,
     * even when consumer 2 asks */
    enqueue(sm, T0, "q", "a");
    enqueue(sm, T0, "q", "b");
    enqueue(sm, T0, "q", "c");
    assert_int_equal(expect_bodies(sm, 2, 0, then_2, 1), 2);
    assert_int_equal(expect_bodies(sm, 1, 0, then_1, 2), 0);

    /* prefetch 2 for consumer 2: two set aside for it, the rest is 1's */
    sm_free(sm);
    sm = sm_make();
    declare(sm, "q");
    consume_credit(sm, "q", 1, 1, 64, 0);
    consume_credit(sm, "q", 2, 2, 2, 2);
    for (i = 0; i < 10; i++) {
        enqueue(sm, T0, "q", all[i]);
    }
    {
        static const char *const mine[] = {"0", "2", "4", "5", "6",
                                           "7", "8", "9"};
        static const char *const its[] = {"1", "3"};

        assert_int_equal(expect_bodies(sm, 1, 0, mine, 8), 2);
        assert_int_equal(expect_bodies(sm, 2, 2, its, 2), 0);
    }
    sm_free(sm);
}

/* What is set aside was never delivered: when its consumer cancels, goes,
 * or the leader changes, it is ready again at its place, not redelivered,
 * and by-tag settles never touch it. */
static void test_set_aside_returns(void **state)
{
    static const char *const abcd[] = {"a", "b", "c", "d"};
    /* consumer 1 got a and c: those come back redelivered */
    static const bool redel[] = {true, false, true, false};
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    int round;
    int i;

    (void)state;
    for (round = 0; round < 3; round++) {
        struct mq_sm *sm = sm_make();

        declare(sm, "q");
        consume_credit(sm, "q", 1, 1, 64, 0);
        consume_credit(sm, "q", 2, 2, 64, 0);
        for (i = 0; i < 4; i++) {
            enqueue(sm, T0, "q", abcd[i]);
        }
        assert_int_equal(checkout(sm, T0, "q", 1, 1, 64, 0, &res), 2);
        assert_int_equal(res.set_aside, 2);
        mq_sm_result_clear(&res);
        /* consumer 2's channel acks "every tag": only what it got */
        assert_int_equal(by_tag(sm, MQ_SM_SETTLE, 2, 0, true, NULL), 0);
        assert_int_equal(mq_sm_consumer_pending(sm, 2), 2);
        if (round == 0) {
            cmd_init(&c, MQ_SM_CANCEL, NULL);
            c.who = who_of(2, 2);
        } else if (round == 1) {
            cmd_init(&c, MQ_SM_RETURN, NULL);
            c.scope = MQ_SM_SCOPE_CHANNEL;
            c.who = who_of(2, 2);
        } else {
            cmd_init(&c, MQ_SM_LEADER_CHANGED, NULL);
        }
        assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
        assert_int_equal(mq_sm_consumer_pending(sm, 2), 0);
        by_tag(sm, MQ_SM_RETURN, 1, 0, true, NULL);
        assert_int_equal(qstats(sm, "q").unacked, 0);
        expect_order(sm, "q", 61, abcd, redel, 4);
        sm_free(sm);
    }
}

/* ERA (a new leader's era) changes nothing at all: what was delivered
 * stays with its consumer and settles by its tag, what was set aside
 * stays set aside for its consumer, a basic.get delivery stays with its
 * channel, and a CHECKOUT retried with its seq gets its deliveries again
 * (the edge's answer may have been lost with the old leader). */
static void test_era_keeps_deliveries(void **state)
{
    static const char *const abcd[] = {"a", "b", "c", "d"};
    static const char *const rest[] = {"e"};
    static const bool fresh[] = {false};
    struct mq_sm *sm = sm_make();
    struct mq_sm_result res;
    struct mq_sm_cmd co;
    struct mq_sm_cmd c;
    uint64_t got[2];
    uint64_t get_tag;
    uint64_t digest;
    int i;

    (void)state;
    declare(sm, "q");
    consume_credit(sm, "q", 1, 1, 2, 0);
    consume_credit(sm, "q", 2, 2, 64, 0);
    for (i = 0; i < 4; i++) {
        enqueue(sm, T0, "q", abcd[i]);
    }
    cmd_init(&co, MQ_SM_CHECKOUT, "q");
    co.who = who_of(1, 1);
    co.max_messages = 2;
    co.seq = 1;
    assert_int_equal(run(sm, T0, &co, &res), MQ_SM_OK);
    assert_int_equal(res.n_deliveries, 2);
    assert_int_equal(res.set_aside, 1);
    got[0] = res.deliveries[0].tag;
    got[1] = res.deliveries[1].tag;
    mq_sm_result_clear(&res);
    assert_int_equal(checkout(sm, T0, "q", 3, 70, 1, 0, &res), 1); /* get */
    get_tag = res.deliveries[0].tag;
    mq_sm_result_clear(&res);
    enqueue(sm, T0, "q", "e");
    digest = mq_sm_digest(sm);

    cmd_init(&c, MQ_SM_ERA, NULL);
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 0);
    mq_sm_result_clear(&res);
    assert_int_equal(mq_sm_digest(sm), digest);
    assert_int_equal(qstats(sm, "q").unacked, 4);
    assert_int_equal(qstats(sm, "q").ready, 1);
    assert_int_equal(qstats(sm, "q").consumers, 2);
    assert_int_equal(mq_sm_consumer_pending(sm, 2), 1);

    /* the retry of CHECKOUT 1: the same two deliveries, nothing new */
    assert_int_equal(run(sm, T0, &co, &res), MQ_SM_OK);
    assert_int_equal(res.n_deliveries, 2);
    assert_int_equal(res.deliveries[0].tag, got[0]);
    assert_int_equal(res.deliveries[1].tag, got[1]);
    assert_false(res.deliveries[0].redelivered);
    mq_sm_result_clear(&res);
    /* the old tags settle at the new leader */
    assert_int_equal(by_tag(sm, MQ_SM_SETTLE, 1, got[0], false, NULL), 1);
    assert_int_equal(by_tag(sm, MQ_SM_SETTLE, 1, got[1], false, NULL), 1);
    assert_int_equal(by_tag(sm, MQ_SM_SETTLE, 3, get_tag, false, NULL), 1);
    /* consumer 2 still gets its share first, a first delivery */
    assert_int_equal(checkout(sm, T0, "q", 2, 2, 1, 0, &res), 1);
    assert_false(res.deliveries[0].redelivered);
    assert_int_equal(res.deliveries[0].delivery_count, 1);
    mq_sm_result_clear(&res);
    by_tag(sm, MQ_SM_SETTLE, 2, 0, true, NULL);
    assert_int_equal(qstats(sm, "q").unacked, 0);
    expect_order(sm, "q", 61, rest, fresh, 1);
    sm_free(sm);
}

struct routers_seen {
    uint64_t ids[8];
    size_t n;
};

static void router_seen(void *data, uint64_t router)
{
    struct routers_seen *r = data;

    assert_true(r->n < 8);
    r->ids[r->n++] = router;
}

static bool router_named(const struct routers_seen *r, uint64_t router)
{
    size_t i;
    size_t n = 0;

    for (i = 0; i < r->n; i++) {
        n += r->ids[i] == router;
    }
    assert_true(n <= 1); /* once each */
    return n == 1;
}

/* mq_sm_for_each_router names each router that owns something a RETURN
 * scope ROUTER would act on, once: registered consumers, consumer records
 * holding deliveries (basic.get) and exclusive queues; not a router whose
 * consumer cancelled holding nothing, nor one returned. */
static void test_for_each_router(void **state)
{
    struct mq_sm *sm = sm_make();
    struct routers_seen seen = {{0}, 0};
    struct mq_sm_result res;
    struct mq_sm_cmd c;

    (void)state;
    declare(sm, "q");
    enqueue(sm, T0, "q", "a");
    consume(sm, "q", 1, 7);  /* router 1 */
    consume(sm, "q", 2, 8);  /* router 1 again */
    cmd_init(&c, MQ_SM_CHECKOUT, "q"); /* router 3: basic.get */
    c.who = (struct mq_sm_who){3, 30, 1, 300};
    c.max_messages = 1;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_deliveries, 1);
    mq_sm_result_clear(&res);
    cmd_init(&c, MQ_SM_DECLARE, "excl"); /* router 4 */
    c.who = (struct mq_sm_who){4, 40, 1, 0};
    c.exclusive = true;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    cmd_init(&c, MQ_SM_CONSUME, "q"); /* router 5 comes and goes */
    c.who = (struct mq_sm_who){5, 50, 1, 500};
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    cmd_init(&c, MQ_SM_CANCEL, NULL);
    c.who.consumer = 500;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);

    mq_sm_for_each_router(sm, router_seen, &seen);
    assert_int_equal(seen.n, 3);
    assert_true(router_named(&seen, 1));
    assert_true(router_named(&seen, 3));
    assert_true(router_named(&seen, 4));

    cmd_init(&c, MQ_SM_RETURN, NULL);
    c.scope = MQ_SM_SCOPE_ROUTER;
    c.who.router = 3;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    seen.n = 0;
    mq_sm_for_each_router(sm, router_seen, &seen);
    assert_int_equal(seen.n, 2);
    assert_false(router_named(&seen, 3));
    sm_free(sm);
}

/* ------------------------------------------------ placement and queue moves */

static struct mq_sm_stats sm_stats(struct mq_sm *sm)
{
    struct mq_sm_stats st;

    mq_sm_stats(sm, &st);
    return st;
}

static enum mq_sm_status declare_gen(struct mq_sm *sm, uint64_t now,
                                     const char *q, uint64_t gen,
                                     struct mq_sm_result *keep)
{
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    enum mq_sm_status st;

    cmd_init(&c, MQ_SM_DECLARE, q);
    c.durable = true;
    c.place_gen = gen;
    st = run(sm, now, &c, &res);
    if (keep != NULL) {
        *keep = res;
    } else {
        mq_sm_result_clear(&res);
    }
    return st;
}

/* A move command on @q; the result kept in @keep if not NULL. */
static enum mq_sm_status move_cmd(struct mq_sm *sm, enum mq_sm_cmd_type type,
                                  const char *q, struct mq_sm_result *keep)
{
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    enum mq_sm_status st;

    cmd_init(&c, type, q);
    st = run(sm, T0, &c, &res);
    if (keep != NULL) {
        *keep = res;
    } else {
        mq_sm_result_clear(&res);
    }
    return st;
}

static enum mq_sm_status move_in(struct mq_sm *sm, const char *q,
                                 const void *chunk, size_t len, uint64_t gen,
                                 uint64_t *count)
{
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    enum mq_sm_status st;

    cmd_init(&c, MQ_SM_MOVE_IN, q);
    c.body = chunk;
    c.body_len = len;
    c.place_gen = gen;
    st = run(sm, T0, &c, &res);
    if (count != NULL) {
        *count = res.count;
    }
    mq_sm_result_clear(&res);
    return st;
}

#define MAX_CHUNKS 64

struct chunks {
    void *buf[MAX_CHUNKS];
    size_t len[MAX_CHUNKS];
    size_t n;
};

/* Every chunk of frozen @q, from @cursor on. */
static void export_all(struct mq_sm *sm, const char *q, uint64_t cursor,
                       size_t max_bytes, struct chunks *out)
{
    bool last = false;

    out->n = 0;
    while (!last) {
        uint64_t next = 0;

        assert_true(out->n < MAX_CHUNKS);
        assert_int_equal(mq_sm_export(sm, VH, strlen(VH), q, strlen(q),
                                      cursor, max_bytes, malloc, mbs_read, mbs_of(sm),
                                      &out->buf[out->n], &out->len[out->n],
                                      &next, &last),
                         MQ_SM_OK);
        assert_true(next > cursor);
        cursor = next;
        out->n++;
    }
}

static void chunks_free(struct chunks *ch)
{
    size_t i;

    for (i = 0; i < ch->n; i++) {
        free(ch->buf[i]);
    }
    ch->n = 0;
}

static enum mq_sm_status enqueue_seq(struct mq_sm *sm, uint64_t now,
                                     const char *q, uint64_t client,
                                     uint64_t seq, const char *body)
{
    struct mq_sm_cmd c;

    cmd_init(&c, MQ_SM_ENQUEUE, q);
    c.client_id = client;
    c.seq = seq;
    c.body = body;
    c.body_len = strlen(body);
    return run1(sm, now, &c);
}

/* Placement gens: a stale one cannot re-create a deleted queue, an
 * existing queue ignores it, 0 means no directory, deletions report it. */
static void test_place_gen(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    uint64_t before;

    (void)state;
    assert_int_equal(declare_gen(sm, T0, "q", 5, &res), MQ_SM_OK);
    assert_int_equal(res.gen, 5);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(sm, "q").gen, 5);
    /* an existing queue ignores place_gen, stale or not */
    assert_int_equal(declare_gen(sm, T0, "q", 1, &res), MQ_SM_OK);
    assert_int_equal(res.gen, 5);
    mq_sm_result_clear(&res);
    assert_int_equal(sm_stats(sm).create_floor, 0);

    cmd_init(&c, MQ_SM_DELETE, "q");
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_deleted, 1);
    assert_int_equal(res.deleted[0].gen, 5);
    mq_sm_result_clear(&res);
    assert_int_equal(sm_stats(sm).create_floor, 6);

    /* the deleted incarnation's gen (or any older) cannot re-create it */
    before = mq_sm_digest(sm);
    assert_int_equal(declare_gen(sm, T0, "q", 5, &res), MQ_SM_PLACE_STALE);
    assert_int_equal(res.reply_code, 0);
    mq_sm_result_clear(&res);
    assert_int_equal(declare_gen(sm, T0, "q", 2, NULL), MQ_SM_PLACE_STALE);
    assert_true(mq_sm_digest(sm) == before);
    assert_false(queue_exists(sm, "q"));
    /* the floor is per shard: another queue needs a fresh gen too */
    assert_int_equal(declare_gen(sm, T0, "r", 4, NULL), MQ_SM_PLACE_STALE);
    /* a fresh gen does; so does no directory at all */
    assert_int_equal(declare_gen(sm, T0, "q", 6, NULL), MQ_SM_OK);
    assert_int_equal(declare_gen(sm, T0, "r", 0, NULL), MQ_SM_OK);
    assert_int_equal(qstats(sm, "r").gen, 0);

    /* every way of going raises the floor: x-expires here */
    cmd_init(&c, MQ_SM_DECLARE, "x");
    c.args.has_expires = true;
    c.args.expires_ms = 1000;
    c.place_gen = 20;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    cmd_init(&c, MQ_SM_EXPIRE, NULL);
    assert_int_equal(run(sm, T0 + 2000, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_deleted, 1);
    assert_int_equal(res.deleted[0].reason, MQ_SM_DEL_EXPIRES);
    assert_int_equal(res.deleted[0].gen, 20);
    mq_sm_result_clear(&res);
    assert_int_equal(sm_stats(sm).create_floor, 21);
    assert_int_equal(declare_gen(sm, T0 + 2000, "y", 20, NULL),
                     MQ_SM_PLACE_STALE);
    assert_int_equal(declare_gen(sm, T0 + 2000, "y", 21, NULL), MQ_SM_OK);
    /* a passive declare neither creates nor looks at the gen */
    cmd_init(&c, MQ_SM_DECLARE, "q");
    c.passive = true;
    c.place_gen = 1;
    assert_int_equal(run1(sm, T0 + 2000, &c), MQ_SM_OK);
    sm_free(sm);
}

/* Ready "m1".."m5" (m1 with a 30 s TTL, the queue 60 s and a DLX); a
 * consumer holds m1 and m2; publisher 42 sent them as seqs 1..5. */
static void move_source(struct mq_sm *s)
{
    static const char *const bodies[] = {"m1", "m2", "m3", "m4", "m5"};
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    uint64_t i;

    cmd_init(&c, MQ_SM_DECLARE, "mq");
    c.durable = true;
    c.args.has_message_ttl = true;
    c.args.message_ttl_ms = 60000;
    c.args.has_dlx = true;
    c.args.dlx = "dlx";
    c.args.dlx_len = 3;
    c.place_gen = 3;
    assert_int_equal(run1(s, T0, &c), MQ_SM_OK);
    declare(s, "other");
    enqueue(s, T0, "other", "stays");
    for (i = 0; i < 5; i++) {
        cmd_init(&c, MQ_SM_ENQUEUE, "mq");
        c.client_id = 42;
        c.seq = i + 1;
        c.body = bodies[i];
        c.body_len = 2;
        c.has_ttl = i == 0;
        c.ttl_ms = 30000;
        assert_int_equal(run1(s, T0, &c), MQ_SM_OK);
    }
    consume(s, "mq", 1, 7);
    assert_int_equal(checkout(s, T0, "mq", 1, 7, 2, 0, &res), 2);
    mq_sm_result_clear(&res);
}

/* Every command naming the frozen queue answers MOVING and changes
 * nothing; the tags it had out act on nothing. */
static void expect_frozen(struct mq_sm *s)
{
    static const enum mq_sm_cmd_type types[] = {
        MQ_SM_DECLARE, MQ_SM_DELETE, MQ_SM_PURGE,
        MQ_SM_ENQUEUE, MQ_SM_CONSUME, MQ_SM_CHECKOUT,
        MQ_SM_MOVE_IN_END,
    };
    uint64_t before = mq_sm_digest(s);
    struct mq_sm_cmd c;
    size_t i;

    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        cmd_init(&c, types[i], "mq");
        c.who = who_of(1, types[i] == MQ_SM_CONSUME ? 8 : 7);
        c.durable = true;
        c.max_messages = 5;
        c.client_id = 42;
        c.seq = 6;
        c.body = "new";
        c.body_len = 3;
        c.place_gen = 9;
        assert_int_equal(run1(s, T0, &c), MQ_SM_MOVING);
        c.passive = true;
        c.body = NULL;
        c.body_len = 0;
        if (types[i] == MQ_SM_DECLARE) {
            assert_int_equal(run1(s, T0, &c), MQ_SM_MOVING);
        }
    }
    /* a seq applied before the freeze is still a duplicate */
    assert_int_equal(enqueue_seq(s, T0, "mq", 42, 3, "m3"), MQ_SM_DUPLICATE);
    assert_int_equal(by_tag(s, MQ_SM_SETTLE, 1, 0, true, NULL), 0);
    assert_int_equal(by_tag(s, MQ_SM_RETURN, 1, 1, false, NULL), 0);
    assert_int_equal(by_tag(s, MQ_SM_DROP, 1, 2, false, NULL), 0);
    assert_true(mq_sm_digest(s) == before);
}

/* The queue is gone from S: every command naming it answers MOVED. */
static void expect_moved(struct mq_sm *s)
{
    static const enum mq_sm_cmd_type types[] = {
        MQ_SM_DECLARE, MQ_SM_DELETE, MQ_SM_PURGE,  MQ_SM_ENQUEUE,
        MQ_SM_CONSUME, MQ_SM_CHECKOUT, MQ_SM_MOVE_IN_END,
    };
    uint64_t before = mq_sm_digest(s);
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    size_t i;

    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        cmd_init(&c, types[i], "mq");
        c.who = who_of(1, 8);
        c.max_messages = 5;
        c.client_id = 42;
        c.seq = 6;
        c.body = "new";
        c.body_len = 3;
        c.place_gen = 3; /* the moved incarnation's: no re-creation */
        assert_int_equal(run(s, T0, &c, &res), MQ_SM_MOVED);
        assert_true(res.moved);
        assert_int_equal(res.reply_code, 0);
        mq_sm_result_clear(&res);
    }
    assert_true(mq_sm_digest(s) == before);
    /* the seq refused is not recorded: it belongs where the queue is */
    assert_int_equal(enqueue_seq(s, T0, "other", 42, 6, "x"), MQ_SM_OK);
}

/* A whole move of "mq" from S to T, with every step rerun, a resent and a
 * skipped chunk, and the target's own queue and publishers around. */
static void test_move_full(void **state)
{
    struct mq_sm *s = sm_make();
    struct mq_sm *t = sm_make();
    struct mq_sm_result res;
    struct chunks ch;
    struct chunks rest;
    struct mq_sm_cmd c;
    uint64_t before;
    uint64_t count;
    void *buf;
    size_t len;
    uint64_t next;
    bool last;
    size_t i;
    char bad[8];

    (void)state;
    move_source(s);
    declare(t, "t-own");
    assert_int_equal(enqueue_seq(t, T0, "t-own", 42, 100, "t"), MQ_SM_OK);
    assert_int_equal(enqueue_seq(t, T0, "t-own", 77, 1, "t"), MQ_SM_OK);
    consume(t, "t-own", 5, 70);

    /* not frozen: no export */
    assert_int_equal(mq_sm_export(s, VH, 1, "mq", 2, 0, 0, malloc, mbs_read, mbs_of(s), &buf, &len,
                                  &next, &last),
                     MQ_SM_PRECONDITION_FAILED);
    assert_int_equal(mq_sm_export(s, VH, 1, "nope", 4, 0, 0, malloc, mbs_read, mbs_of(s), &buf,
                                  &len, &next, &last),
                     MQ_SM_NOT_FOUND);

    /* 1. MOVE_OUT: the two out come back first, redelivered */
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "mq", &res), MQ_SM_OK);
    assert_int_equal(res.count, 5);
    assert_int_equal(res.gen, 3);
    assert_false(res.moved);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(s, "mq").ready, 5);
    assert_int_equal(qstats(s, "mq").unacked, 0);
    assert_int_equal(qstats(s, "mq").consumers, 1);
    assert_int_equal(qstats(s, "mq").move, MQ_SM_MOVE_FROZEN);
    before = mq_sm_digest(s);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "mq", &res), MQ_SM_OK);
    assert_int_equal(res.count, 5); /* the same answer */
    mq_sm_result_clear(&res);
    assert_true(mq_sm_digest(s) == before);
    expect_frozen(s);
    /* time stands still for it: neither TTL nor x-expires */
    cmd_init(&c, MQ_SM_EXPIRE, NULL);
    assert_int_equal(run(s, T0 + 100000, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 0);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(s, "mq").ready, 5);

    /* 2. export, one message per chunk: definition + 5 */
    export_all(s, "mq", 0, 1, &ch);
    assert_int_equal(ch.n, 6);
    assert_int_equal(mq_sm_export(s, VH, 1, "mq", 2, 7, 1, malloc, mbs_read, mbs_of(s), &buf, &len,
                                  &next, &last),
                     MQ_SM_BAD_REQUEST); /* beyond the end */

    /* 3. MOVE_IN: chunk 0 creates it importing, with the consumer */
    assert_int_equal(move_in(t, "mq", ch.buf[0], ch.len[0], 9, &count),
                     MQ_SM_OK);
    assert_int_equal(count, 5);
    assert_int_equal(qstats(t, "mq").move, MQ_SM_MOVE_IMPORT);
    assert_int_equal(qstats(t, "mq").consumers, 1);
    assert_int_equal(qstats(t, "mq").gen, 9);
    before = mq_sm_digest(t);
    assert_int_equal(move_in(t, "mq", ch.buf[0], ch.len[0], 9, &count),
                     MQ_SM_OK); /* rerun */
    assert_true(mq_sm_digest(t) == before);
    cmd_init(&c, MQ_SM_CHECKOUT, "mq");
    c.who = who_of(1, 7);
    c.max_messages = 5;
    assert_int_equal(run1(t, T0, &c), MQ_SM_MOVING);
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_IN_END, "mq", NULL),
                     MQ_SM_PRECONDITION_FAILED); /* messages missing */
    /* a gap, a corrupt chunk, a chunk under another queue's name, another
     * gen: refused, nothing changes */
    assert_int_equal(move_in(t, "mq", ch.buf[2], ch.len[2], 9, NULL),
                     MQ_SM_BAD_REQUEST);
    ((unsigned char *)ch.buf[1])[30] ^= 1;
    assert_int_equal(move_in(t, "mq", ch.buf[1], ch.len[1], 9, NULL),
                     MQ_SM_BAD_REQUEST);
    ((unsigned char *)ch.buf[1])[30] ^= 1;
    assert_int_equal(move_in(t, "t-own", ch.buf[1], ch.len[1], 9, NULL),
                     MQ_SM_BAD_REQUEST);
    assert_int_equal(move_in(t, "mq", ch.buf[1], ch.len[1], 8, NULL),
                     MQ_SM_PRECONDITION_FAILED);
    assert_int_equal(move_in(t, "mq", ch.buf[1], ch.len[1], 0, NULL),
                     MQ_SM_BAD_REQUEST);
    memcpy(bad, "garbage", 8);
    assert_int_equal(move_in(t, "mq", bad, sizeof(bad), 9, NULL),
                     MQ_SM_BAD_REQUEST);
    for (i = 1; i < ch.len[1]; i += 7) {
        assert_int_equal(move_in(t, "mq", ch.buf[1], i, 9, NULL),
                         MQ_SM_BAD_REQUEST);
    }
    assert_true(mq_sm_digest(t) == before);
    assert_int_equal(move_in(t, "mq", ch.buf[1], ch.len[1], 9, &count),
                     MQ_SM_OK);
    assert_int_equal(count, 1);
    before = mq_sm_digest(t);
    assert_int_equal(move_in(t, "mq", ch.buf[1], ch.len[1], 9, &count),
                     MQ_SM_OK); /* resent */
    assert_int_equal(count, 0);
    assert_true(mq_sm_digest(t) == before);
    /* a coordinator restarted with bigger chunks: the rest in one, which
     * overlaps what is in already */
    export_all(s, "mq", 1, 1 << 20, &rest);
    assert_int_equal(rest.n, 1);
    assert_int_equal(move_in(t, "mq", rest.buf[0], rest.len[0], 9, &count),
                     MQ_SM_OK);
    assert_int_equal(count, 4);
    assert_int_equal(qstats(t, "mq").ready, 5);
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_IN_END, "mq", &res), MQ_SM_OK);
    assert_int_equal(res.count, 5);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(t, "mq").move, MQ_SM_MOVE_NONE);
    /* every rerun is a no-op */
    before = mq_sm_digest(t);
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_IN_END, "mq", NULL), MQ_SM_OK);
    for (i = 0; i < ch.n; i++) {
        assert_int_equal(move_in(t, "mq", ch.buf[i], ch.len[i], 9, &count),
                         MQ_SM_OK);
        assert_int_equal(count, i == 0 ? 5 : 0);
    }
    assert_int_equal(move_in(t, "mq", rest.buf[0], rest.len[0], 9, NULL),
                     MQ_SM_OK);
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_ABORT, "mq", NULL), MQ_SM_OK);
    assert_true(mq_sm_digest(t) == before);
    chunks_free(&rest);

    /* 5. MOVE_DONE at S: gone, with a tombstone; reruns are OK */
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_DONE, "mq", &res), MQ_SM_OK);
    assert_true(res.moved);
    assert_int_equal(res.n_deleted, 1);
    assert_int_equal(res.deleted[0].reason, MQ_SM_DEL_MOVED);
    assert_int_equal(res.deleted[0].gen, 3);
    mq_sm_result_clear(&res);
    assert_false(queue_exists(s, "mq"));
    assert_int_equal(sm_stats(s).tombstones, 1);
    assert_int_equal(sm_stats(s).create_floor, 4);
    assert_int_equal(sm_stats(s).consumers, 0);
    assert_int_equal(qstats(s, "other").ready, 1);
    before = mq_sm_digest(s);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_DONE, "mq", &res), MQ_SM_OK);
    assert_true(res.moved);
    assert_int_equal(res.n_deleted, 0);
    mq_sm_result_clear(&res);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "mq", &res), MQ_SM_OK);
    assert_true(res.moved);
    assert_int_equal(res.gen, 3);
    mq_sm_result_clear(&res);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_ABORT, "mq", &res), MQ_SM_OK);
    assert_true(res.moved);
    assert_int_equal(res.count, 0);
    mq_sm_result_clear(&res);
    assert_int_equal(mq_sm_export(s, VH, 1, "mq", 2, 0, 0, malloc, mbs_read, mbs_of(s), &buf, &len,
                                  &next, &last),
                     MQ_SM_MOVED);
    assert_true(mq_sm_digest(s) == before);
    expect_moved(s);

    /* T serves it: m1's own TTL (30 s from S's enqueue) still holds and
     * dead-letters to the queue's DLX; then the returned m2 first,
     * redelivered, then the rest in order */
    cmd_init(&c, MQ_SM_EXPIRE, NULL);
    assert_int_equal(run(t, T0 + 40000, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_dead, 1);
    assert_memory_equal(res.dead[0].body, "m1", 2);
    assert_memory_equal(res.dead[0].dlx, "dlx", 3);
    assert_int_equal(res.dead[0].reason, MQ_SM_DL_EXPIRED);
    mq_sm_result_clear(&res);
    assert_int_equal(checkout(t, T0 + 40000, "mq", 1, 7, 10, 0, &res), 4);
    assert_body(&res.deliveries[0], "m2");
    assert_true(res.deliveries[0].redelivered);
    assert_int_equal(res.deliveries[0].delivery_count, 2);
    for (i = 1; i < 4; i++) {
        char body[3] = {'m', (char)('2' + i), 0};

        assert_body(&res.deliveries[i], body);
        assert_false(res.deliveries[i].redelivered);
        assert_true(res.deliveries[i].msg_id > res.deliveries[i - 1].msg_id);
    }
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(t, "mq").consumers, 1);
    /* the publisher's retries are duplicates here, S's seqs and T's own */
    assert_int_equal(enqueue_seq(t, T0 + 40000, "mq", 42, 3, "m3"),
                     MQ_SM_DUPLICATE);
    assert_int_equal(enqueue_seq(t, T0 + 40000, "mq", 42, 1, "m1"),
                     MQ_SM_DUPLICATE);
    assert_int_equal(enqueue_seq(t, T0 + 40000, "t-own", 42, 100, "t"),
                     MQ_SM_DUPLICATE);
    assert_int_equal(enqueue_seq(t, T0 + 40000, "t-own", 77, 1, "t"),
                     MQ_SM_DUPLICATE);
    assert_int_equal(enqueue_seq(t, T0 + 40000, "mq", 42, 6, "m6"), MQ_SM_OK);
    /* S's seq 6 refused with MOVED then stored at "other" is S's alone */
    assert_int_equal(qstats(t, "mq").ready, 1);
    /* deleted at T since: a blind rerun of the move cannot bring it back */
    cmd_init(&c, MQ_SM_DELETE, "mq");
    assert_int_equal(run(t, T0 + 40000, &c, &res), MQ_SM_OK);
    assert_int_equal(res.deleted[0].gen, 9);
    mq_sm_result_clear(&res);
    before = mq_sm_digest(t);
    assert_int_equal(move_in(t, "mq", ch.buf[0], ch.len[0], 9, NULL),
                     MQ_SM_PLACE_STALE);
    for (i = 1; i < ch.n; i++) {
        assert_int_equal(move_in(t, "mq", ch.buf[i], ch.len[i], 9, NULL),
                         MQ_SM_NOT_FOUND);
    }
    assert_true(mq_sm_digest(t) == before);
    chunks_free(&ch);
    sm_free(s);
    sm_free(t);
}

/* Aborts at both ends, and what a move refuses. */
static int allocs;

static void *counting_alloc(size_t n)
{
    allocs++;
    return malloc(n);
}

static int read_fails(void *arg, uint32_t seg, uint32_t off, uint32_t len,
                      void *out)
{
    (void)arg;
    (void)seg;
    (void)off;
    (void)len;
    (void)out;
    return -1;
}

/* An export chunk whose bodies the store cannot give answers UNAVAILABLE
 * and allocates nothing; the definition chunk reads no body; once the
 * bodies can be read the same cursor answers them. */
static void test_export_body_unreadable(void **state)
{
    struct mq_sm *s = sm_make();
    void *buf = NULL;
    size_t len = 0;
    uint64_t next = 0;
    bool last = false;

    (void)state;
    declare(s, "mq");
    enqueue(s, T0, "mq", "m1");
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "mq", NULL), MQ_SM_OK);
    allocs = 0;
    assert_int_equal(mq_sm_export(s, VH, 1, "mq", 2, 1, 1 << 16,
                                  counting_alloc, read_fails, NULL, &buf,
                                  &len, &next, &last),
                     MQ_SM_UNAVAILABLE);
    assert_int_equal(allocs, 0);
    assert_null(buf);
    assert_int_equal(mq_sm_export(s, VH, 1, "mq", 2, 0, 1 << 16,
                                  counting_alloc, read_fails, NULL, &buf,
                                  &len, &next, &last),
                     MQ_SM_OK);
    free(buf);
    assert_int_equal(mq_sm_export(s, VH, 1, "mq", 2, 1, 1 << 16,
                                  counting_alloc, mbs_read, mbs_of(s), &buf,
                                  &len, &next, &last),
                     MQ_SM_OK);
    assert_true(last && next == 2);
    assert_true(len > 2 && memmem(buf, len, "m1", 2) != NULL);
    free(buf);
    sm_free(s);
}

static void test_move_abort(void **state)
{
    struct mq_sm *s = sm_make();
    struct mq_sm *t = sm_make();
    struct mq_sm_result res;
    struct chunks ch;
    struct chunks again;
    struct mq_sm_cmd c;
    uint64_t count;
    uint64_t before;
    static const char *const order[] = {"m1", "m2", "m3", "m4", "m5"};
    static const bool redelivered[] = {true, true, false, false, false};

    (void)state;
    move_source(s);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "mq", NULL), MQ_SM_OK);
    export_all(s, "mq", 0, 4, &ch);
    assert_int_equal(move_in(t, "mq", ch.buf[0], ch.len[0], 9, NULL),
                     MQ_SM_OK);
    assert_int_equal(move_in(t, "mq", ch.buf[1], ch.len[1], 9, NULL),
                     MQ_SM_OK);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_DONE, "nope", NULL),
                     MQ_SM_NOT_FOUND);
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_DONE, "mq", NULL), MQ_SM_MOVING);
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_OUT, "mq", NULL), MQ_SM_MOVING);

    /* T drops the partial import and the consumer it registered; it never
     * served, so the floor stays and the move may be redone with its gen */
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_ABORT, "mq", &res), MQ_SM_OK);
    assert_int_equal(res.count, 1);
    assert_int_equal(res.n_deleted, 1);
    assert_int_equal(res.deleted[0].reason, MQ_SM_DEL_MOVED);
    mq_sm_result_clear(&res);
    assert_int_equal(sm_stats(t).create_floor, 0);
    assert_false(queue_exists(t, "mq"));
    assert_int_equal(sm_stats(t).consumers, 0);
    before = mq_sm_digest(t);
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_ABORT, "mq", &res), MQ_SM_OK);
    assert_int_equal(res.count, 0);
    assert_false(res.moved);
    mq_sm_result_clear(&res);
    assert_true(mq_sm_digest(t) == before);
    assert_int_equal(move_in(t, "mq", ch.buf[1], ch.len[1], 9, NULL),
                     MQ_SM_NOT_FOUND);
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_IN_END, "mq", NULL),
                     MQ_SM_NOT_FOUND);

    /* S serves it again, the returned ones first */
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_ABORT, "mq", &res), MQ_SM_OK);
    assert_int_equal(res.count, 1);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(s, "mq").move, MQ_SM_MOVE_NONE);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_DONE, "mq", NULL),
                     MQ_SM_PRECONDITION_FAILED);
    expect_order(s, "mq", 50, order, redelivered, 5);
    enqueue(s, T0, "mq", "m6");

    /* a second freeze is another move: the old chunks do not fit it */
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "mq", NULL), MQ_SM_OK);
    export_all(s, "mq", 0, 1 << 20, &again);
    assert_int_equal(again.n, 2);
    assert_int_equal(move_in(t, "mq", again.buf[0], again.len[0], 9, &count),
                     MQ_SM_OK);
    assert_int_equal(count, 1);
    assert_int_equal(move_in(t, "mq", ch.buf[0], ch.len[0], 9, NULL),
                     MQ_SM_PRECONDITION_FAILED);
    assert_int_equal(move_in(t, "mq", ch.buf[1], ch.len[1], 9, NULL),
                     MQ_SM_PRECONDITION_FAILED);
    assert_int_equal(move_in(t, "mq", again.buf[1], again.len[1], 9, NULL),
                     MQ_SM_OK);
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_IN_END, "mq", NULL), MQ_SM_OK);
    assert_int_equal(qstats(t, "mq").ready, 1);

    /* the queue name taken at the target by a queue of its own */
    declare(t, "own");
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_IN_END, "own", NULL),
                     MQ_SM_PRECONDITION_FAILED);
    chunks_free(&again);
    declare(s, "own");
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "own", NULL), MQ_SM_OK);
    export_all(s, "own", 0, 0, &again);
    assert_int_equal(move_in(t, "own", again.buf[0], again.len[0], 9, NULL),
                     MQ_SM_PRECONDITION_FAILED);
    chunks_free(&again);

    /* a consumer id the target knows already: refused */
    declare(s, "cq");
    consume(s, "cq", 3, 70);
    consume(t, "own", 3, 70);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "cq", NULL), MQ_SM_OK);
    export_all(s, "cq", 0, 0, &again);
    before = mq_sm_digest(t);
    assert_int_equal(move_in(t, "cq", again.buf[0], again.len[0], 9, NULL),
                     MQ_SM_BAD_REQUEST);
    assert_true(mq_sm_digest(t) == before);
    chunks_free(&again);

    /* exclusive queues do not move */
    cmd_init(&c, MQ_SM_DECLARE, "ex");
    c.exclusive = true;
    c.who = who_of(1, 0);
    assert_int_equal(run1(s, T0, &c), MQ_SM_OK);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "ex", NULL),
                     MQ_SM_PRECONDITION_FAILED);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "nope", NULL),
                     MQ_SM_NOT_FOUND);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_ABORT, "nope", NULL), MQ_SM_OK);
    chunks_free(&ch);
    sm_free(s);
    sm_free(t);
}

/* MOVE_ABORT at the target with the move's gen, as `queue abort` sends
 * it (T first, then S). Before MOVE_IN_END it drops the partial import
 * and the queue stays at S, where a new move takes it whole. After
 * MOVE_IN_END it changes nothing and answers moved: T may have served
 * the queue, and the move is finished instead. (The fault lab found the
 * old order, S unfrozen first and T's abort a no-op after MOVE_IN_END,
 * leaving a whole copy at T that refused every later move of the queue
 * there with "queue exists here", the queue frozen at S by each try.) */
static void test_move_abort_at_target_with_gen(void **state)
{
    struct mq_sm *s = sm_make();
    struct mq_sm *t = sm_make();
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    struct chunks ch;
    uint64_t before_s;
    uint64_t before_t;
    size_t i;

    (void)state;
    move_source(s);

    /* 1. copied in part: the abort drops T's import, S serves again */
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "mq", NULL), MQ_SM_OK);
    export_all(s, "mq", 0, 1, &ch);
    assert_int_equal(move_in(t, "mq", ch.buf[0], ch.len[0], 9, NULL),
                     MQ_SM_OK);
    assert_int_equal(move_in(t, "mq", ch.buf[1], ch.len[1], 9, NULL),
                     MQ_SM_OK);
    chunks_free(&ch);
    cmd_init(&c, MQ_SM_MOVE_ABORT, "mq");
    c.place_gen = 9;
    assert_int_equal(run(t, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 1);
    assert_false(res.moved);
    mq_sm_result_clear(&res);
    assert_false(queue_exists(t, "mq"));
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_ABORT, "mq", &res), MQ_SM_OK);
    assert_int_equal(res.count, 1);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(s, "mq").move, MQ_SM_MOVE_NONE);

    /* 2. the next move (a new gen, a new freeze), copied whole */
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "mq", NULL), MQ_SM_OK);
    export_all(s, "mq", 0, 1 << 20, &ch);
    for (i = 0; i < ch.n; i++) {
        assert_int_equal(move_in(t, "mq", ch.buf[i], ch.len[i], 10, NULL),
                         MQ_SM_OK);
    }
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_IN_END, "mq", NULL), MQ_SM_OK);
    assert_int_equal(qstats(t, "mq").ready, 5);

    /* its abort at T, with the move's gen: refused (moved), nothing
     * changes at either end; without a gen, or with another move's, a
     * no-op as before */
    before_s = mq_sm_digest(s);
    before_t = mq_sm_digest(t);
    cmd_init(&c, MQ_SM_MOVE_ABORT, "mq");
    c.place_gen = 10;
    assert_int_equal(run(t, T0, &c, &res), MQ_SM_OK);
    assert_true(res.moved);
    assert_int_equal(res.count, 0);
    assert_int_equal(res.n_deleted, 0);
    mq_sm_result_clear(&res);
    c.place_gen = 9;
    assert_int_equal(run(t, T0, &c, &res), MQ_SM_OK);
    assert_false(res.moved);
    mq_sm_result_clear(&res);
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_ABORT, "mq", &res), MQ_SM_OK);
    assert_false(res.moved);
    assert_int_equal(res.count, 0);
    mq_sm_result_clear(&res);
    assert_true(mq_sm_digest(t) == before_t);
    assert_true(mq_sm_digest(s) == before_s);
    assert_int_equal(qstats(s, "mq").move, MQ_SM_MOVE_FROZEN);

    /* the rerun finishes it: S hands off, T serves every message */
    for (i = 0; i < ch.n; i++) {
        assert_int_equal(move_in(t, "mq", ch.buf[i], ch.len[i], 10, NULL),
                         MQ_SM_OK);
    }
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_IN_END, "mq", NULL), MQ_SM_OK);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_DONE, "mq", NULL), MQ_SM_OK);
    assert_false(queue_exists(s, "mq"));
    assert_int_equal(qstats(t, "mq").ready, 5);
    assert_int_equal(qstats(t, "mq").gen, 10);
    chunks_free(&ch);

    /* 3. moving back to S, where the tombstone of gen 3 lies: an abort
     * at S as the target (gen 11) is not refused by that tombstone (the
     * lab saw `queue abort` refused as "copied whole" this way), and
     * undoes the move: nothing imported at S, T serves again */
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_OUT, "mq", NULL), MQ_SM_OK);
    before_s = mq_sm_digest(s);
    cmd_init(&c, MQ_SM_MOVE_ABORT, "mq");
    c.place_gen = 11;
    assert_int_equal(run(s, T0, &c, &res), MQ_SM_OK);
    assert_false(res.moved);
    assert_int_equal(res.count, 0);
    mq_sm_result_clear(&res);
    assert_true(mq_sm_digest(s) == before_s);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_ABORT, "mq", &res), MQ_SM_OK);
    assert_true(res.moved); /* without a gen: the source's answer */
    mq_sm_result_clear(&res);
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_ABORT, "mq", &res), MQ_SM_OK);
    assert_int_equal(res.count, 1);
    mq_sm_result_clear(&res);
    assert_int_equal(qstats(t, "mq").move, MQ_SM_MOVE_NONE);
    sm_free(s);
    sm_free(t);
}

/* Frozen, an auto-delete queue outlives its last consumer; the abort
 * deletes it then. A moved queue's tombstone yields to a later gen. */
static void test_move_auto_delete_and_tombstone(void **state)
{
    struct mq_sm *s = sm_make();
    struct mq_sm_result res;
    struct mq_sm_cmd c;

    (void)state;
    cmd_init(&c, MQ_SM_DECLARE, "ad");
    c.auto_delete = true;
    assert_int_equal(run1(s, T0, &c), MQ_SM_OK);
    consume(s, "ad", 1, 7);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "ad", NULL), MQ_SM_OK);
    cmd_init(&c, MQ_SM_CANCEL, NULL);
    c.who = who_of(1, 7);
    assert_int_equal(run(s, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 1);
    assert_int_equal(res.n_deleted, 0);
    mq_sm_result_clear(&res);
    assert_true(queue_exists(s, "ad"));
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_ABORT, "ad", &res), MQ_SM_OK);
    assert_int_equal(res.n_deleted, 1);
    assert_int_equal(res.deleted[0].reason, MQ_SM_DEL_AUTO_DELETE);
    mq_sm_result_clear(&res);
    assert_false(queue_exists(s, "ad"));

    /* tombstone of gen 3: re-created only by a later gen (moved back) */
    assert_int_equal(declare_gen(s, T0, "mq", 3, NULL), MQ_SM_OK);
    enqueue(s, T0, "mq", "a");
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "mq", NULL), MQ_SM_OK);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_DONE, "mq", NULL), MQ_SM_OK);
    assert_int_equal(declare_gen(s, T0, "mq", 0, NULL), MQ_SM_MOVED);
    assert_int_equal(declare_gen(s, T0, "mq", 3, NULL), MQ_SM_MOVED);
    assert_int_equal(declare_gen(s, T0, "mq", 4, &res), MQ_SM_OK);
    assert_int_equal(res.gen, 4);
    assert_int_equal(res.count, 0);
    mq_sm_result_clear(&res);
    assert_int_equal(sm_stats(s).tombstones, 0);
    assert_int_equal(enqueue_seq(s, T0, "mq", 1, 1, "b"), MQ_SM_OK);
    sm_free(s);
}

/* Move from @s to @t in chunks of @max_bytes, every chunk applied twice,
 * then MOVE_IN_END and MOVE_DONE. */
static void move_queue(struct mq_sm *s, struct mq_sm *t, const char *q,
                       uint64_t gen, size_t max_bytes)
{
    struct chunks ch;
    size_t i;

    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, q, NULL), MQ_SM_OK);
    export_all(s, q, 0, max_bytes, &ch);
    for (i = 0; i < ch.n; i++) {
        assert_int_equal(move_in(t, q, ch.buf[i], ch.len[i], gen, NULL),
                         MQ_SM_OK);
        assert_int_equal(move_in(t, q, ch.buf[i], ch.len[i], gen, NULL),
                         MQ_SM_OK);
    }
    chunks_free(&ch);
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_IN_END, q, NULL), MQ_SM_OK);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_DONE, q, NULL), MQ_SM_OK);
}

/* A snapshot taken mid-move, at either end, restores to the same state,
 * which goes on with the move as the original does. */
static void test_move_snapshot(void **state)
{
    struct mq_sm *s = sm_make();
    struct mq_sm *t = sm_make();
    struct mq_sm *s2 = sm_make();
    struct mq_sm *t2 = sm_make();
    struct chunks ch;
    struct chunks ch2;
    void *buf;
    size_t len;
    size_t i;

    (void)state;
    move_source(s);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "mq", NULL), MQ_SM_OK);
    export_all(s, "mq", 0, 30, &ch);
    assert_true(ch.n > 2);
    assert_int_equal(move_in(t, "mq", ch.buf[0], ch.len[0], 9, NULL),
                     MQ_SM_OK);
    assert_int_equal(move_in(t, "mq", ch.buf[1], ch.len[1], 9, NULL),
                     MQ_SM_OK);

    /* frozen source: same digest, same export bytes (the array rebuilt) */
    assert_int_equal(mq_sm_snapshot(s, malloc, &buf, &len), 0);
    assert_int_equal(restore(s2, s, buf, len), 0);
    free(buf);
    assert_true(mq_sm_digest(s2) == mq_sm_digest(s));
    export_all(s2, "mq", 0, 30, &ch2);
    assert_int_equal(ch2.n, ch.n);
    for (i = 0; i < ch.n; i++) {
        assert_int_equal(ch2.len[i], ch.len[i]);
        assert_memory_equal(ch2.buf[i], ch.buf[i], ch.len[i]);
    }
    chunks_free(&ch2);
    /* importing target */
    assert_int_equal(mq_sm_snapshot(t, malloc, &buf, &len), 0);
    assert_int_equal(restore(t2, t, buf, len), 0);
    free(buf);
    assert_true(mq_sm_digest(t2) == mq_sm_digest(t));
    assert_int_equal(qstats(t2, "mq").move, MQ_SM_MOVE_IMPORT);

    /* both pairs finish alike */
    for (i = 2; i < ch.n; i++) {
        assert_int_equal(move_in(t, "mq", ch.buf[i], ch.len[i], 9, NULL),
                         MQ_SM_OK);
        assert_int_equal(move_in(t2, "mq", ch.buf[i], ch.len[i], 9, NULL),
                         MQ_SM_OK);
    }
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_IN_END, "mq", NULL), MQ_SM_OK);
    assert_int_equal(move_cmd(t2, MQ_SM_MOVE_IN_END, "mq", NULL), MQ_SM_OK);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_DONE, "mq", NULL), MQ_SM_OK);
    assert_int_equal(move_cmd(s2, MQ_SM_MOVE_DONE, "mq", NULL), MQ_SM_OK);
    assert_true(mq_sm_digest(s2) == mq_sm_digest(s));
    assert_true(mq_sm_digest(t2) == mq_sm_digest(t));

    /* the tombstone and floor survive a snapshot too, byte for byte */
    assert_int_equal(mq_sm_snapshot(s, malloc, &buf, &len), 0);
    sm_free(s2);
    s2 = sm_make();
    assert_int_equal(restore(s2, s, buf, len), 0);
    assert_true(mq_sm_digest(s2) == mq_sm_digest(s));
    assert_int_equal(sm_stats(s2).tombstones, 1);
    assert_int_equal(sm_stats(s2).create_floor, 4);
    assert_int_equal(declare_gen(s2, T0, "mq", 3, NULL), MQ_SM_MOVED);
    free(buf);

    /* and back again: T -> S clears S's tombstone */
    move_queue(t, s, "mq", 12, 1);
    assert_int_equal(sm_stats(s).tombstones, 0);
    assert_int_equal(sm_stats(t).tombstones, 1);
    assert_int_equal(qstats(s, "mq").ready, 5);
    assert_int_equal(qstats(s, "mq").gen, 12);
    chunks_free(&ch);
    sm_free(s);
    sm_free(t);
    sm_free(s2);
    sm_free(t2);
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
        /* half from a directory, some of those stale */
        if ((r >> 34) % 2 == 0) {
            c->place_gen = (r >> 35) % 4 == 0 ? 1 : *now;
        }
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
        c->max_messages = (uint32_t)((r >> 44) % 5);
        c->prefetch = (uint32_t)((r >> 48) % 4);
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
    } else if (kind < 95) {
        c->type = MQ_SM_LEADER_CHANGED;
    } else if (kind < 96) {
        c->type = MQ_SM_ERA;
    } else if (kind < 98) {
        c->type = MQ_SM_PURGE;
    } else {
        c->type = MQ_SM_DELETE;
        c->if_unused = (r >> 40) % 2 == 0;
    }
    /* Now and then a move step at this end (the source side: the target
     * side needs a second machine, test_move_random). */
    if ((r >> 56) % 64 == 0) {
        /* short freezes, so the queues mostly serve */
        static const enum mq_sm_cmd_type moves[] = {
            MQ_SM_MOVE_OUT,   MQ_SM_MOVE_ABORT, MQ_SM_MOVE_ABORT,
            MQ_SM_MOVE_ABORT, MQ_SM_MOVE_ABORT, MQ_SM_MOVE_DONE,
            MQ_SM_MOVE_DONE,  MQ_SM_MOVE_DONE};

        c->type = moves[(r >> 44) % 8];
    }
}

/* What the random streams exercised, so a stream that stops doing real
 * work (e.g. every command failing) does not pass silently. */
static struct {
    uint64_t ok;
    uint64_t deliveries;
    uint64_t set_aside;
    uint64_t dead;
    uint64_t deleted;
    uint64_t duplicates;
    uint64_t moving;
    uint64_t moved;
    uint64_t stale;
} fed;

/* Feed @n random commands from @seed to every sm in @sms; @other_end
 * renames queue q1 to t1 and shifts consumer ids (a second shard, whose
 * consumers a queue moving in must not collide with). */
static void feed_end(struct mq_sm **sms, size_t nsms, uint64_t seed, int n,
                     uint64_t *now, bool other_end)
{
    uint64_t rng = seed;
    char body[64];
    int i;
    size_t k;

    for (i = 0; i < n; i++) {
        struct mq_sm_cmd c;
        struct mq_sm_result first;

        random_cmd(&rng, &c, now, body);
        if (other_end) {
            c.who.consumer += 100;
            if (c.queue != NULL && strcmp(c.queue, "q1") == 0) {
                c.queue = "t1";
            }
        }
        for (k = 0; k < nsms; k++) {
            struct mq_sm_result res;

            mq_sm_apply(sms[k], *now, &c, &res);
            mbs_result(mbs_of(sms[k]), &res);
            if (k == 0) {
                first = res;
                continue;
            }
            assert_same_bodies(&res, &first);
            /* same answer on every replica */
            assert_int_equal(res.status, first.status);
            assert_int_equal(res.count, first.count);
            assert_int_equal(res.n_deliveries, first.n_deliveries);
            assert_int_equal(res.set_aside, first.set_aside);
            assert_int_equal(res.n_dead, first.n_dead);
            assert_int_equal(res.n_deleted, first.n_deleted);
            mq_sm_result_clear(&res);
        }
        fed.ok += first.status == MQ_SM_OK;
        fed.deliveries += first.n_deliveries;
        fed.set_aside += first.set_aside;
        fed.dead += first.n_dead;
        fed.deleted += first.n_deleted;
        fed.duplicates += first.status == MQ_SM_DUPLICATE;
        fed.moving += first.status == MQ_SM_MOVING;
        fed.moved += first.status == MQ_SM_MOVED;
        fed.stale += first.status == MQ_SM_PLACE_STALE;
        mq_sm_result_clear(&first);
    }
}

static void feed(struct mq_sm **sms, size_t nsms, uint64_t seed, int n,
                 uint64_t *now)
{
    feed_end(sms, nsms, seed, n, now, false);
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
        sm_free(sms[0]);
        sm_free(sms[1]);
    }
    print_message("random streams: ok %llu deliveries %llu set aside %llu "
                  "dead %llu "
                  "deleted %llu duplicates %llu moving %llu moved %llu "
                  "stale %llu\n",
                  (unsigned long long)fed.ok,
                  (unsigned long long)fed.deliveries,
                  (unsigned long long)fed.set_aside,
                  (unsigned long long)fed.dead,
                  (unsigned long long)fed.deleted,
                  (unsigned long long)fed.duplicates,
                  (unsigned long long)fed.moving,
                  (unsigned long long)fed.moved,
                  (unsigned long long)fed.stale);
    assert_true(fed.ok > 10000);
    assert_true(fed.deliveries > 1000);
    assert_true(fed.dead > 100);
    assert_true(fed.deleted > 10);
    assert_true(fed.duplicates > 100);
    assert_true(fed.moving > 100);
    assert_true(fed.moved > 10);
    assert_true(fed.stale > 10);
    /* and different streams give different digests */
    sms[0] = sm_make();
    sms[1] = sm_make();
    now = T0;
    feed(&sms[0], 1, 11, 2000, &now);
    now = T0;
    feed(&sms[1], 1, 12, 2000, &now);
    assert_true(mq_sm_digest(sms[0]) != mq_sm_digest(sms[1]));
    sm_free(sms[0]);
    sm_free(sms[1]);
}

/* Dispatch over several consumers of one queue, at random: replicas deal
 * alike, and so does one restored from a snapshot taken midway (the
 * consumers' credits and turns are state). */
static void dispatch_cmd(uint64_t *rng, struct mq_sm_cmd *c, char *body)
{
    uint64_t r = rng_next(rng);
    uint64_t kind = (r >> 8) % 100;
    uint64_t consumer = (r >> 16) % 4 + 1;

    cmd_init(c, MQ_SM_ENQUEUE, "q");
    c->who = who_of(consumer, consumer);
    if (kind < 40) {
        snprintf(body, 64, "%d", (int)(r >> 40));
        c->body = body;
        c->body_len = strlen(body);
    } else if (kind < 75) {
        c->type = MQ_SM_CHECKOUT;
        c->max_messages = (uint32_t)((r >> 24) % 6);
        c->prefetch = (uint32_t)((r >> 32) % 5);
        c->seq = (r >> 36) % 50;
    } else if (kind < 88) {
        c->type = MQ_SM_SETTLE;
        c->tag = (r >> 24) % 64;
        c->multiple = (r >> 32) % 2 == 0;
    } else if (kind < 92) {
        c->type = MQ_SM_RETURN;
        c->scope = (r >> 24) % 4 == 0 ? MQ_SM_SCOPE_CHANNEL : MQ_SM_SCOPE_TAG;
        c->multiple = true;
    } else if (kind < 93) {
        c->type = MQ_SM_CANCEL;
    } else {
        c->type = MQ_SM_CONSUME;
        c->max_messages = (uint32_t)((r >> 24) % 6);
        c->prefetch = (uint32_t)((r >> 32) % 3);
    }
}

static void test_dispatch_determinism(void **state)
{
    struct mq_sm *sms[3];
    uint64_t rng = 42;
    uint64_t set_aside = 0;
    char body[64];
    void *buf;
    size_t len;
    int i;
    int k;

    (void)state;
    for (k = 0; k < 2; k++) {
        sms[k] = sm_make();
        declare(sms[k], "q");
    }
    sms[2] = NULL;
    for (i = 0; i < 20000; i++) {
        struct mq_sm_cmd c;
        struct mq_sm_result res[3];

        if (i == 10000) {
            assert_int_equal(mq_sm_snapshot(sms[0], malloc, &buf, &len), 0);
            sms[2] = sm_make();
            assert_int_equal(restore(sms[2], sms[0], buf, len), 0);
            free(buf);
        }
        dispatch_cmd(&rng, &c, body);
        for (k = 0; k < 3 && sms[k] != NULL; k++) {
            mq_sm_apply(sms[k], T0 + (uint64_t)i, &c, &res[k]);
            mbs_result(mbs_of(sms[k]), &res[k]);
            if (k > 0) {
                assert_same_bodies(&res[k], &res[0]);
                assert_int_equal(res[k].status, res[0].status);
                assert_int_equal(res[k].n_deliveries, res[0].n_deliveries);
                assert_int_equal(res[k].set_aside, res[0].set_aside);
                mq_sm_result_clear(&res[k]);
            }
        }
        set_aside += res[0].set_aside;
        mq_sm_result_clear(&res[0]);
    }
    print_message("dispatch stream: %llu set aside\n",
                  (unsigned long long)set_aside);
    assert_true(set_aside > 200); /* the stream dealt (fixed seed) */
    assert_true(mq_sm_digest(sms[0]) == mq_sm_digest(sms[1]));
    assert_true(mq_sm_digest(sms[0]) == mq_sm_digest(sms[2]));
    for (k = 0; k < 3; k++) {
        sm_free(sms[k]);
    }
}

static uint64_t fold_bytes(uint64_t h, const void *p, size_t len)
{
    const unsigned char *b = p;
    size_t i;

    for (i = 0; i < len; i++) {
        h = (h ^ b[i]) * 1099511628211ULL;
    }
    return h;
}

static uint64_t fold_u64(uint64_t h, uint64_t v)
{
    return fold_bytes(h, &v, sizeof(v));
}

/* What a result answers the edge: status, ids, deliveries and dead
 * letters with their bodies (not where the bodies are kept). */
static uint64_t fold_answer(uint64_t h, const struct mq_sm_result *res)
{
    size_t i;

    h = fold_u64(h, res->status);
    h = fold_u64(h, res->msg_id);
    h = fold_u64(h, res->count);
    h = fold_u64(h, res->n_deliveries);
    for (i = 0; i < res->n_deliveries; i++) {
        const struct mq_sm_delivery *d = &res->deliveries[i];

        h = fold_u64(h, d->tag);
        h = fold_u64(h, d->msg_id);
        h = fold_u64(h, d->delivery_count << 1 | d->redelivered);
        h = fold_u64(h, d->body_len);
        h = fold_bytes(h, d->body, d->body_len);
    }
    h = fold_u64(h, res->n_dead);
    for (i = 0; i < res->n_dead; i++) {
        const struct mq_sm_dead_letter *d = &res->dead[i];

        h = fold_u64(h, d->reason);
        h = fold_u64(h, d->msg_id);
        h = fold_u64(h, d->outbox_id);
        h = fold_u64(h, d->body_len);
        h = fold_bytes(h, d->body, d->body_len);
    }
    return h;
}

/* Old logs replay to the same state: the final digests of fixed streams
 * (random commands of every kind, and dealing over several consumers of
 * one queue) as the machine computed them before its walks were indexed
 * (commit 427a018). A change of any choice (whom dispatch deals to, which
 * records a RETURN takes, what is deleted) changes them.
 * The digests were re-recorded when bodies left the state for refs (the
 * digest covers refs, not bytes); the answers of the same streams, bodies
 * included (fold_answer), were recorded by the machine before that change
 * and are what it answers since, also when the streams start on a new
 * machine, bodies inline, which switches at the stream's first ERA. */
/* The answers of the streams of test_replay_unchanged, folded, and
 * each stream's final digest in @got; on new machines if @inl. */
static uint64_t replay_streams(bool inl, uint64_t got[4])
{
    uint64_t answers = 1469598103934665603ULL;
    struct mq_sm *sm;
    uint64_t now;
    uint64_t rng;
    uint64_t owners = 99;
    uint64_t exclusive_gone = 0;
    struct mq_sm_result res;
    char body[64];
    size_t j;
    int i;
    int k;

    for (k = 0; k < 3; k++) {
        sm = inl ? sm_make_inline() : sm_make();
        now = T0;
        rng = (uint64_t)k + 21;
        for (i = 0; i < 5000; i++) {
            struct mq_sm_cmd c;
            uint64_t r = rng_next(&owners);

            random_cmd(&rng, &c, &now, body);
            if (k == 2) {
                /* two routers of two connections each, exclusive
                 * queues: what RETURNs of connections and routers take */
                c.who.router = 1 + r % 2;
                c.who.conn = 10 + (r >> 2) % 2;
                c.exclusive |= c.type == MQ_SM_DECLARE && (r >> 4) % 3 == 0;
            }
            run(sm, now, &c, &res);
            answers = fold_answer(answers, &res);
            for (j = 0; j < res.n_deleted; j++) {
                exclusive_gone += res.deleted[j].reason == MQ_SM_DEL_EXCLUSIVE;
            }
            mq_sm_result_clear(&res);
        }
        assert_true(sm_stats(sm).bodies_external); /* an ERA came */
        got[k] = mq_sm_digest(sm);
        sm_free(sm);
    }
    sm = inl ? sm_make_inline() : sm_make();
    declare(sm, "q");
    rng = 7;
    for (i = 0; i < 5000; i++) {
        struct mq_sm_cmd c;

        dispatch_cmd(&rng, &c, body);
        run(sm, T0 + (uint64_t)i, &c, &res);
        answers = fold_answer(answers, &res);
        mq_sm_result_clear(&res);
    }
    got[3] = mq_sm_digest(sm);
    sm_free(sm);
    assert_true(exclusive_gone > 5); /* owners' RETURNs did take some */
    for (i = 0; i < 4; i++) {
        print_message("stream %d: digest 0x%016llxULL\n", i,
                      (unsigned long long)got[i]);
    }
    print_message("answers 0x%016llxULL\n", (unsigned long long)answers);
    return answers;
}

static void test_replay_unchanged(void **state)
{
    static const uint64_t want[4] = {
        0x4704a5f3460e9bc7ULL, 0xd76358254660df27ULL, 0x8114133aaad4d12cULL,
        0x02636f35c9741d4eULL};
    static const uint64_t want_answers = 0xfbbe3ff0720ec999ULL;
    uint64_t got[4];
    int i;

    (void)state;
    assert_true(replay_streams(false, got) == want_answers);
    for (i = 0; i < 4; i++) {
        assert_true(got[i] == want[i]);
    }
    assert_true(replay_streams(true, got) == want_answers);
    /* the dispatch stream has no ERA: bodies inline all along, and the
     * digest the machine before refs recorded for it */
    assert_true(got[3] == 0x0053804327d17d65ULL);
}

/* A version 5 snapshot (bodies inline), as the machine before body refs
 * wrote it after old_format_script(): queue "q" with a dead-letter
 * exchange, three ready messages, two checked out to consumer 7, one dead
 * letter in the outbox. */
static const unsigned char snap_v5[] = {    0x52, 0x4d, 0x51, 0x51, 0x05, 0x00, 0x00, 0x00, 0x00, 0x68, 0xe5, 0xcf,
    0x8b, 0x01, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x03, 0x00,
    0x41, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01,
    0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2f, 0x71,
    0x64, 0x6c, 0x78, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x64, 0x64, 0x64,
    0x64, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00,
    0x00, 0x00, 0x65, 0x65, 0x65, 0x65, 0x65, 0x06, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x66, 0x66, 0x66, 0x66,
    0x66, 0x66, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x61, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, 0x02, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00,
    0x2f, 0x71, 0x64, 0x6c, 0x78, 0x62, 0x62, 0x45, 0x1a, 0xb9, 0x75, 0xe8,
    0xfb, 0x0c, 0xfd,
};

/* What made snap_v5 (the generator applied it to the old machine). */
static void old_format_script(struct mq_sm *sm)
{
    static const char *bodies[] = {"a", "bb", "", "dddd", "eeeee", "ffffff"};
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    size_t i;

    cmd_init(&c, MQ_SM_DECLARE, "q");
    c.durable = true;
    c.args.has_dlx = true;
    c.args.dlx = "dlx";
    c.args.dlx_len = 3;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    for (i = 0; i < 6; i++) {
        enqueue(sm, T0, "q", bodies[i]);
    }
    assert_int_equal(checkout(sm, T0, "q", 3, 7, 3, 0, &res), 3);
    mq_sm_result_clear(&res);
    assert_int_equal(by_tag(sm, MQ_SM_DROP, 3, 2, false, NULL), 1);
}

/* What a replica that restores an old snapshot answers from then on is
 * what one that applied the log answers, bodies included (their places
 * differ: restore gives them places in state order). */
static void test_restore_old_format_bodies(void **state)
{
    struct mq_sm *applied = sm_make();
    struct mq_sm *restored = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result a, r;
    uint64_t ha = 1, hr = 1;
    int step;

    (void)state;
    old_format_script(applied);
    assert_int_equal(restore(restored, NULL, snap_v5, sizeof(snap_v5)), 0);
    mq_sm_check(restored);
    assert_int_equal(sm_stats(restored).dead_kept, 1);
    for (step = 0; step < 3; step++) {
        if (step == 0) { /* the checked-out ones come back */
            cmd_init(&c, MQ_SM_RETURN, NULL);
            c.who = who_of(3, 7);
            c.scope = MQ_SM_SCOPE_CHANNEL;
        } else if (step == 1) {
            cmd_init(&c, MQ_SM_CHECKOUT, "q");
            c.who = who_of(3, 8);
            c.max_messages = 10;
        } else { /* the outbox entry is handed out again */
            cmd_init(&c, MQ_SM_EXPIRE, NULL);
        }
        assert_int_equal(run(applied, T0 + MQ_SM_DL_CLAIM_MS + 1, &c, &a),
                         MQ_SM_OK);
        assert_int_equal(run(restored, T0 + MQ_SM_DL_CLAIM_MS + 1, &c, &r),
                         MQ_SM_OK);
        ha = fold_answer(ha, &a);
        hr = fold_answer(hr, &r);
        assert_true(ha == hr);
        assert_int_equal(a.n_deliveries, step == 1 ? 5 : 0);
        assert_int_equal(a.n_dead, step == 2 ? 1 : 0);
        if (step == 2) {
            assert_int_equal(r.dead[0].body_len, 2);
            assert_memory_equal(r.dead[0].body, "bb", 2);
        }
        mq_sm_result_clear(&a);
        mq_sm_result_clear(&r);
    }
    mq_sm_check(restored);
    sm_free(applied);
    sm_free(restored);
}

/* Enqueue a body of @len bytes of @fill; its record's place. */
static struct mq_sm_write enqueue_big(struct mq_sm *sm, const char *q,
                                      size_t len, int fill)
{
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    struct mq_sm_write w;
    char *body = malloc(len > 0 ? len : 1);

    assert_non_null(body);
    memset(body, fill, len);
    cmd_init(&c, MQ_SM_ENQUEUE, q);
    c.body = body;
    c.body_len = len;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_writes, 1);
    assert_int_equal(res.n_freed, 0);
    w = res.writes[0];
    w.body = NULL; /* freed below */
    mq_sm_result_clear(&res);
    free(body);
    return w;
}

/* Settle shard tag @tag of channel 1; the segments that freed. */
static size_t settle_freeing(struct mq_sm *sm, uint64_t tag, uint32_t *freed)
{
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    size_t n;

    cmd_init(&c, MQ_SM_SETTLE, NULL);
    c.who = who_of(1, 0);
    c.tag = tag;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 1);
    n = res.n_freed;
    if (n > 0) {
        memcpy(freed, res.freed, n * sizeof(*freed));
    }
    mq_sm_result_clear(&res);
    return n;
}

struct segs_seen {
    size_t n;
    uint32_t seg[8];
    uint64_t used[8];
};

static void seg_seen(void *arg, uint32_t seg, uint64_t used)
{
    struct segs_seen *s = arg;

    assert_true(s->n < 8);
    s->seg[s->n] = seg;
    s->used[s->n++] = used;
}

/* Where bodies go (mq_sm.h, "Message bodies"): records back to back,
 * 8-aligned after an 8-byte header; the cursor moves to a new segment
 * when a record does not fit; a record larger than a segment has one of
 * its own; a segment is freed once its last ref goes and the cursor is
 * elsewhere, or when the cursor leaves it with none. */
static void test_body_places(void **state)
{
    const size_t mib = 1024 * 1024;
    struct mq_sm *sm = sm_make();
    struct segs_seen segs_seen = {0};
    struct mq_sm_result res;
    struct mq_sm_write w;
    uint32_t freed[4];
    size_t i;

    (void)state;
    /* a new state names the cursor's segment, empty */
    mq_sm_for_each_segment(sm, seg_seen, &segs_seen);
    assert_int_equal(segs_seen.n, 1);
    assert_true(segs_seen.seg[0] == 1 && segs_seen.used[0] == 0);
    declare(sm, "q");
    w = enqueue_big(sm, "q", 1, 'a');
    assert_true(w.seg == 1 && w.off == 0 && w.len == 1);
    w = enqueue_big(sm, "q", 0, 'b');
    assert_true(w.seg == 1 && w.off == 16 && w.len == 0);
    w = enqueue_big(sm, "q", 24 * mib, 'c');
    assert_true(w.seg == 1 && w.off == 24);
    w = enqueue_big(sm, "q", 24 * mib, 'd');
    assert_true(w.seg == 1 && w.off == 24 + 24 * mib + 8);
    /* 24 MiB more does not fit in the 16 left */
    w = enqueue_big(sm, "q", 24 * mib, 'e');
    assert_true(w.seg == 2 && w.off == 0);
    /* larger than a segment: one of its own; the cursor then leaves it */
    w = enqueue_big(sm, "q", MQ_SM_SEG_BYTES + 1, 'f');
    assert_true(w.seg == 3 && w.off == 0);
    w = enqueue_big(sm, "q", 3, 'g');
    assert_true(w.seg == 4 && w.off == 0);
    mq_sm_check(sm);

    /* every body reads back as published (mbs_result fills them) */
    assert_int_equal(checkout(sm, T0, "q", 1, 0, 100, 0, &res), 7);
    for (i = 0; i < 7; i++) {
        const unsigned char *b = res.deliveries[i].body;
        size_t len = res.deliveries[i].body_len;

        assert_true(len == 0 || (b[0] == "abcdefg"[i] && b[len - 1] == b[0]));
    }
    mq_sm_result_clear(&res);

    /* segment 1 goes with its last message, not before */
    assert_int_equal(settle_freeing(sm, 1, freed), 0);
    assert_int_equal(settle_freeing(sm, 2, freed), 0);
    assert_int_equal(settle_freeing(sm, 3, freed), 0);
    assert_int_equal(settle_freeing(sm, 4, freed), 1);
    assert_int_equal(freed[0], 1);
    /* segment 3 (the big one) too; 4 holds the cursor and stays */
    assert_int_equal(settle_freeing(sm, 6, freed), 1);
    assert_int_equal(freed[0], 3);
    assert_int_equal(settle_freeing(sm, 7, freed), 0);
    assert_int_equal(sm_stats(sm).ready + sm_stats(sm).unacked, 1);
    mq_sm_check(sm);

    /* the cursor leaving segment 4, which has no ref, frees it */
    {
        struct mq_sm_cmd c;
        size_t len = MQ_SM_SEG_BYTES - 16;
        char *b = malloc(len);

        assert_non_null(b);
        memset(b, 'h', len);
        cmd_init(&c, MQ_SM_ENQUEUE, "q");
        c.body = b;
        c.body_len = len;
        assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
        assert_true(res.writes[0].seg == 5 && res.writes[0].off == 0);
        assert_int_equal(res.n_freed, 1);
        assert_int_equal(res.freed[0], 4);
        mq_sm_result_clear(&res);
        free(b);
    }
    w = enqueue_big(sm, "q", 1, 'i');
    assert_true(w.seg == 6 && w.off == 0);
    /* what a store must hold after a restore */
    segs_seen.n = 0;
    mq_sm_for_each_segment(sm, seg_seen, &segs_seen);
    assert_int_equal(segs_seen.n, 3);
    assert_true(segs_seen.seg[0] == 2 && segs_seen.used[0] == 24 * mib + 8);
    assert_true(segs_seen.seg[1] == 5 &&
                segs_seen.used[1] == MQ_SM_SEG_BYTES - 8);
    assert_true(segs_seen.seg[2] == 6 && segs_seen.used[2] == 16);
    mq_sm_check(sm);
    sm_free(sm);
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
    sm_free(a);
    sm_free(b);
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
    assert_int_equal(restore(restored, sms[0], buf, len), 0);
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
    sm_free(restored);
    restored = sm_make();
    assert_int_equal(mq_sm_snapshot(restored, malloc, &buf, &len), 0);
    assert_int_equal(restore(sms[0], restored, buf, len), 0);
    assert_true(mq_sm_digest(sms[0]) == mq_sm_digest(restored));
    free(buf);
    sm_free(sms[0]);
    sm_free(restored);
}

/* Export one chunk from both replicas of the source (they must agree byte
 * for byte) and apply it at both replicas of the target. */
static bool move_step(struct mq_sm **src, struct mq_sm **dst, uint64_t gen,
                      uint64_t cursor, size_t max_bytes, uint64_t *next)
{
    void *buf[2];
    size_t len[2];
    bool last[2];
    uint64_t nx[2];
    int k;

    for (k = 0; k < 2; k++) {
        assert_int_equal(mq_sm_export(src[k], VH, 1, "q1", 2, cursor,
                                      max_bytes, malloc, mbs_read, mbs_of(src[k]), &buf[k], &len[k],
                                      &nx[k], &last[k]),
                         MQ_SM_OK);
    }
    assert_int_equal(len[0], len[1]);
    assert_memory_equal(buf[0], buf[1], len[0]);
    for (k = 0; k < 2; k++) {
        assert_int_equal(move_in(dst[k], "q1", buf[0], len[0], gen, NULL),
                         MQ_SM_OK);
    }
    free(buf[0]);
    free(buf[1]);
    *next = nx[0];
    return last[0];
}

/* Random traffic at both ends, two replicas each, while q1 moves from S
 * to T; the coordinator restarts at random points with other chunk
 * sizes. Replicas agree throughout, T ends with what S froze, and both
 * ends go on serving. */
static void test_move_random(void **state)
{
    uint64_t seed;

    (void)state;
    for (seed = 1; seed <= 6; seed++) {
        struct mq_sm *src[2] = {sm_make(), sm_make()};
        struct mq_sm *dst[2] = {sm_make(), sm_make()};
        struct mq_sm_queue_stats frozen;
        uint64_t rng = seed * 7919;
        uint64_t now = T0;
        uint64_t cursor = 0;
        size_t max_bytes = 1 + rng_next(&rng) % 300;
        uint64_t gen;
        int restarts = 0;
        int k;

        feed_end(src, 2, seed, 1500, &now, false);
        feed_end(dst, 2, seed + 1000, 1500, &now, true);
        for (k = 0; k < 2; k++) {
            struct mq_sm_cmd c;

            /* q1 afresh: the stream may have moved it, or made it
             * auto-delete */
            (void)move_cmd(src[k], MQ_SM_MOVE_ABORT, "q1", NULL);
            (void)move_cmd(src[k], MQ_SM_DELETE, "q1", NULL);
            cmd_init(&c, MQ_SM_DECLARE, "q1");
            c.durable = true;
            c.args.has_message_ttl = true;
            c.args.message_ttl_ms = 300;
            c.args.has_dlx = true;
            c.args.dlx = "dlx";
            c.args.dlx_len = 3;
            c.place_gen = now + 1;
            (void)run1(src[k], now, &c);
            assert_int_equal(move_cmd(src[k], MQ_SM_MOVE_OUT, "q1", NULL),
                             MQ_SM_OK);
        }
        frozen = qstats(src[0], "q1");
        gen = now + 2; /* fresh from the directory: above every gen yet */
        for (;;) {
            uint64_t next;
            bool last = move_step(src, dst, gen, cursor, max_bytes, &next);

            if (restarts < 3 && rng_next(&rng) % 4 == 0) {
                restarts++;
                cursor = 0;
                max_bytes = 1 + rng_next(&rng) % 300;
            } else if (last) {
                break;
            } else {
                cursor = next;
            }
            feed_end(src, 2, rng_next(&rng), 20, &now, false);
            feed_end(dst, 2, rng_next(&rng), 20, &now, true);
        }
        for (k = 0; k < 2; k++) {
            assert_int_equal(move_cmd(dst[k], MQ_SM_MOVE_IN_END, "q1", NULL),
                             MQ_SM_OK);
        }
        assert_int_equal(qstats(dst[0], "q1").ready, frozen.ready);
        assert_int_equal(qstats(dst[0], "q1").ready_bytes,
                         frozen.ready_bytes);
        /* consumers may have gone at either end meanwhile, none came */
        assert_true(qstats(dst[0], "q1").consumers <= frozen.consumers);
        for (k = 0; k < 2; k++) {
            assert_int_equal(move_cmd(src[k], MQ_SM_MOVE_DONE, "q1", NULL),
                             MQ_SM_OK);
        }
        /* life after: the same names at both ends */
        feed_end(src, 2, seed + 2000, 1000, &now, false);
        feed_end(dst, 2, seed + 3000, 1000, &now, false);
        assert_true(mq_sm_digest(src[0]) == mq_sm_digest(src[1]));
        assert_true(mq_sm_digest(dst[0]) == mq_sm_digest(dst[1]));
        for (k = 0; k < 2; k++) {
            sm_free(src[k]);
            sm_free(dst[k]);
        }
    }
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

    assert_int_equal(restore(dst, NULL, NULL, 0), -1);
    /* every truncation */
    for (i = 0; i < len; i += (i < 256 ? 1 : 97)) {
        assert_int_equal(restore(dst, NULL, buf, i), -1);
    }
    /* flipped bits anywhere */
    for (i = 0; i < len; i += (i < 256 ? 1 : 61)) {
        buf[i] ^= 0x10;
        assert_int_equal(restore(dst, NULL, buf, len), -1);
        buf[i] ^= 0x10;
    }
    assert_true(mq_sm_digest(dst) == before);
    assert_int_equal(qstats(dst, "keep").ready, 1);
    assert_int_equal(restore(dst, src, buf, len), 0);
    assert_true(mq_sm_digest(dst) == mq_sm_digest(src));
    free(buf);
    sm_free(src);
    sm_free(dst);
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

static void reseal_with(unsigned char *buf, size_t len, uint64_t seed)
{
    uint64_t h = t_hash(buf, len - 8, seed);
    int i;

    for (i = 0; i < 8; i++) {
        buf[len - 8 + i] = (unsigned char)(h >> (8 * i));
    }
}

static void reseal(unsigned char *buf, size_t len)
{
    reseal_with(buf, len, 0x6d712d736e617073ULL); /* SNAP_SEED */
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
    int i;

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
    assert_int_equal(restore(dst, src, buf, len), 0);
    sm_free(dst);
    dst = sm_make();
    before = mq_sm_digest(dst);

    /* next_msg_id (offset 16) below the stored ids */
    buf[16] = 1;
    reseal(buf, len);
    assert_int_equal(restore(dst, NULL, buf, len), -1);
    buf[16] = 3;
    /* next_tag (offset 24) at the checked-out tag */
    buf[24] = 1;
    reseal(buf, len);
    assert_int_equal(restore(dst, NULL, buf, len), -1);
    buf[24] = 2;
    /* queue count (offset 37, after the bodies flag) larger than present */
    buf[37] = 2;
    reseal(buf, len);
    assert_int_equal(restore(dst, NULL, buf, len), -1);
    buf[37] = 1;
    /* a version from the future */
    buf[4] = 8;
    reseal(buf, len);
    assert_int_equal(restore(dst, NULL, buf, len), -1);
    buf[4] = 7;
    /* the body table (last before the checksum: one segment, its u32
     * refs then u64 used): refs that the messages do not add up to, a
     * record past what was reserved */
    buf[len - 20] ^= 1;
    reseal(buf, len);
    assert_int_equal(restore(dst, NULL, buf, len), -1);
    buf[len - 20] ^= 1;
    buf[len - 16] -= 8;
    reseal(buf, len);
    assert_int_equal(restore(dst, NULL, buf, len), -1);
    buf[len - 16] += 8;
    reseal(buf, len);
    assert_true(mq_sm_digest(dst) == before);
    assert_int_equal(restore(dst, src, buf, len), 0);
    assert_true(mq_sm_digest(dst) == mq_sm_digest(src));
    free(buf);

    /* Versions 2 (before placement gens and moves) and 1 (before CHECKOUT
     * seqs) are still read. Without consumers, gens, moves or tombstones
     * they are version 7 with bodies inline without the bodies flag
     * (after the header), without the per-queue move fields (after the
     * queue's names) and without the tail (before the checksum: version
     * 3's, version 5's empty outbox, version 6's empty body table, 24
     * bytes each); 1 and 2 then differ in the version only. The body
     * stays inline, as the enqueue that made it kept it. */
    sm_free(src);
    src = sm_make_inline();
    declare(src, "q");
    enqueue(src, T0, "q", "a");
    assert_int_equal(mq_sm_snapshot(src, malloc, &out, &len), 0);
    {
        size_t flag = 36;
        size_t qend = flag + 1 + 8 + 62 + 2; /* queue count, QDEF "/" "q" */
        size_t old_len = len - 1 - 41 - 24 - 24 - 24;
        unsigned char *old = malloc(old_len);

        assert_non_null(old);
        memcpy(old, out, flag);
        memcpy(old + flag, (unsigned char *)out + flag + 1, qend - flag - 1);
        /* MSG with its body, consumer and client counts */
        memcpy(old + qend - 1, (unsigned char *)out + qend + 41, 26 + 16);
        assert_int_equal(qend - 1 + 26 + 16 + 8, old_len);
        for (i = 2; i >= 1; i--) {
            sm_free(dst);
            dst = sm_make();
            declare(dst, "junk");
            old[4] = (unsigned char)i;
            reseal(old, old_len);
            assert_int_equal(restore(dst, NULL, old, old_len), 0);
            assert_true(mq_sm_digest(dst) == mq_sm_digest(src));
            assert_int_equal(qstats(dst, "q").ready, 1);
            assert_int_equal(qstats(dst, "q").gen, 0);
            assert_int_equal(sm_stats(dst).create_floor, 0);
            assert_false(sm_stats(dst).bodies_external);
        }
        /* version 3 parts in a version 2 snapshot are garbage */
        memcpy(old, out, old_len - 8);
        old[4] = 2;
        reseal(old, old_len);
        assert_int_equal(restore(dst, NULL, old, old_len), -1);
        free(old);
    }
    free(out);
    sm_free(src);

    /* Version 3 (before dispatch): a consumer's credit and turn are not
     * there and restore as 0, as a CONSUME that announced none. */
    src = sm_make_inline();
    declare(src, "q");
    consume_credit(src, "q", 1, 7, 64, 0);
    assert_int_equal(mq_sm_snapshot(src, malloc, &out, &len), 0);
    {
        /* header, bodies flag, queue "/" "q" with its move fields,
         * consumer count, then the consumer up to co_seq */
        size_t at = 36 + 1 + 8 + 62 + 2 + 41 + 8 + 49;
        /* nor the flag, nor version 5's outbox, nor 6's body table */
        size_t old_len = len - 1 - 16 - 24 - 24;
        unsigned char *old = malloc(old_len);
        struct mq_sm *want = sm_make_inline();

        assert_non_null(old);
        memcpy(old, out, 36);
        memcpy(old + 36, (unsigned char *)out + 37, at - 37);
        memcpy(old + at - 1, (unsigned char *)out + at + 16,
               len - at - 16 - 24 - 24 - 8);
        old[4] = 3;
        reseal(old, old_len);
        sm_free(dst);
        dst = sm_make();
        assert_int_equal(restore(dst, NULL, old, old_len), 0);
        declare(want, "q");
        consume(want, "q", 1, 7);
        assert_true(mq_sm_digest(dst) == mq_sm_digest(want));
        assert_true(mq_sm_digest(dst) != mq_sm_digest(src));
        sm_free(want);
        free(old);
    }
    free(out);
    sm_free(src);
    sm_free(dst);
}

/* ---------------------------------------------------- dead-letter outbox */

static void declare_dlx(struct mq_sm *sm, const char *q, bool maxlen0)
{
    struct mq_sm_cmd c;

    cmd_init(&c, MQ_SM_DECLARE, q);
    c.args.has_dlx = true;
    c.args.dlx = "dlx";
    c.args.dlx_len = 3;
    c.args.has_max_length = maxlen0; /* every ENQUEUE dead-letters */
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
}

/* EXPIRE at @now; the outbox ids it hands out go to @ids (up to @max). */
static size_t expire_ids(struct mq_sm *sm, uint64_t now, uint64_t *ids,
                         size_t max)
{
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    size_t n;

    cmd_init(&c, MQ_SM_EXPIRE, NULL);
    assert_int_equal(run(sm, now, &c, &res), MQ_SM_OK);
    n = res.n_dead;
    for (size_t i = 0; i < n && i < max; i++) {
        ids[i] = res.dead[i].outbox_id;
    }
    mq_sm_result_clear(&res);
    return n;
}

static uint64_t dl_settle(struct mq_sm *sm, uint64_t now, const uint64_t *ids,
                          size_t n)
{
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    uint64_t count;

    cmd_init(&c, MQ_SM_DL_SETTLE, NULL);
    c.tags = ids;
    c.n_tags = n;
    assert_int_equal(run(sm, now, &c, &res), MQ_SM_OK);
    count = res.count;
    mq_sm_result_clear(&res);
    return count;
}

/* A dead letter stays in the outbox until DL_SETTLE names it; an EXPIRE
 * hands it out again once its claim is MQ_SM_DL_CLAIM_MS old, and again
 * each claim window after; snapshots, restore and the deletion of its
 * queue keep it. */
static void test_dead_letter_outbox(void **state)
{
    const uint64_t w = MQ_SM_DL_CLAIM_MS;
    struct mq_sm *sm = sm_make();
    struct mq_sm *copy = sm_make();
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    uint64_t ids[4];
    void *snap;
    size_t len;

    (void)state;
    declare_dlx(sm, "dlq", false);
    enqueue(sm, T0, "dlq", "a");
    enqueue(sm, T0, "dlq", "b");
    assert_int_equal(checkout(sm, T0, "dlq", 1, 7, 2, 0, &res), 2);
    mq_sm_result_clear(&res);
    assert_int_equal(by_tag(sm, MQ_SM_DROP, 1, 0, true, &res), 2);
    assert_int_equal(res.n_dead, 2);
    assert_int_equal(res.dead[0].outbox_id, 1);
    assert_int_equal(res.dead[1].outbox_id, 2);
    mq_sm_result_clear(&res);
    assert_int_equal(sm_stats(sm).dead_kept, 2);
    assert_int_equal(sm_stats(sm).dead_kept_bytes, 2 * (1 + 3 + 3 + 1));

    /* within the claim window: nobody else gets them */
    assert_int_equal(expire_ids(sm, T0 + w - 1, ids, 4), 0);
    ids[0] = 1;
    assert_int_equal(dl_settle(sm, T0 + w - 1, ids, 1), 1);
    assert_int_equal(dl_settle(sm, T0 + w - 1, ids, 1), 0); /* repeated */
    /* #2 was never settled (its reply lost): handed out again, once */
    assert_int_equal(expire_ids(sm, T0 + w, ids, 4), 1);
    assert_int_equal(ids[0], 2);
    assert_int_equal(expire_ids(sm, T0 + w, ids, 4), 0);
    assert_int_equal(expire_ids(sm, T0 + 2 * w - 1, ids, 4), 0);

    /* a restored replica has it, with its claim */
    assert_int_equal(mq_sm_snapshot(sm, malloc, &snap, &len), 0);
    assert_int_equal(restore(copy, sm, snap, len), 0);
    free(snap);
    assert_true(mq_sm_digest(copy) == mq_sm_digest(sm));
    assert_int_equal(sm_stats(copy).dead_kept, 1);

    /* the source queue's deletion leaves it: the shard's, not the queue's */
    cmd_init(&c, MQ_SM_DELETE, "dlq");
    assert_int_equal(run1(copy, T0 + w, &c), MQ_SM_OK);
    cmd_init(&c, MQ_SM_EXPIRE, NULL);
    assert_int_equal(run(copy, T0 + 2 * w, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_dead, 1);
    assert_int_equal(res.dead[0].outbox_id, 2);
    assert_int_equal(res.dead[0].reason, MQ_SM_DL_REJECTED);
    assert_memory_equal(res.dead[0].queue, "dlq", 3);
    assert_int_equal(res.dead[0].body_len, 1);
    assert_memory_equal(res.dead[0].body, "b", 1);
    mq_sm_result_clear(&res);

    ids[0] = 2;
    assert_int_equal(dl_settle(copy, T0 + 2 * w, ids, 1), 1);
    assert_int_equal(sm_stats(copy).dead_kept, 0);
    assert_int_equal(sm_stats(copy).dead_kept_bytes, 0);
    assert_int_equal(expire_ids(copy, T0 + 5 * w, ids, 4), 0);
    sm_free(copy);
    sm_free(sm);
}

/* One EXPIRE hands out at most MQ_SM_DL_HAND_MAX entries, the next the
 * rest; a full outbox keeps no more (outbox id 0, counted dropped). */
static void test_dead_letter_outbox_bounds(void **state)
{
    const uint64_t w = MQ_SM_DL_CLAIM_MS;
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    uint64_t ids[MQ_SM_DL_HAND_MAX];
    uint64_t i;

    (void)state;
    declare_dlx(sm, "full", true);
    cmd_init(&c, MQ_SM_ENQUEUE, "full");
    c.body = "m";
    c.body_len = 1;
    for (i = 1; i <= MQ_OUTBOX_MAX + 1; i++) {
        assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
        assert_int_equal(res.n_dead, 1);
        assert_int_equal(res.dead[0].reason, MQ_SM_DL_MAXLEN);
        assert_int_equal(res.dead[0].outbox_id, i <= MQ_OUTBOX_MAX ? i : 0);
        mq_sm_result_clear(&res);
    }
    assert_int_equal(sm_stats(sm).dead_kept, MQ_OUTBOX_MAX);
    assert_int_equal(sm_stats(sm).dead_dropped, 1);

    /* settle all but the first 300, then they come back 256 + 44 */
    for (i = 301; i <= MQ_OUTBOX_MAX; i += MQ_SM_DL_HAND_MAX) {
        size_t n = 0;

        while (n < MQ_SM_DL_HAND_MAX && i + n <= MQ_OUTBOX_MAX) {
            ids[n] = i + n;
            n++;
        }
        assert_int_equal(dl_settle(sm, T0, ids, n), n);
    }
    assert_int_equal(sm_stats(sm).dead_kept, 300);
    assert_int_equal(expire_ids(sm, T0 + w, ids, MQ_SM_DL_HAND_MAX),
                     MQ_SM_DL_HAND_MAX);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[MQ_SM_DL_HAND_MAX - 1], MQ_SM_DL_HAND_MAX);
    assert_int_equal(expire_ids(sm, T0 + w, ids, MQ_SM_DL_HAND_MAX), 44);
    assert_int_equal(ids[0], MQ_SM_DL_HAND_MAX + 1);
    assert_int_equal(expire_ids(sm, T0 + w, ids, MQ_SM_DL_HAND_MAX), 0);
    mq_sm_check(sm);
    sm_free(sm);
}

/* Every byte of real chunks changed, with a valid checksum: MOVE_IN either
 * accepts what it can make sense of or refuses with nothing changed; never
 * a crash (ASan) or a half-applied chunk. */
static void test_move_chunk_crafted(void **state)
{
    struct mq_sm *s = sm_make();
    struct chunks ch;
    size_t i;
    size_t k;
    int bit;

    (void)state;
    move_source(s);
    assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "mq", NULL), MQ_SM_OK);
    export_all(s, "mq", 0, 1 << 20, &ch);
    assert_int_equal(ch.n, 2);
    for (k = 0; k < ch.n; k++) {
        unsigned char *b = ch.buf[k];

        for (i = 0; i + 8 < ch.len[k]; i++) {
            for (bit = 0; bit < 8; bit += 3) {
                struct mq_sm *t = sm_make();
                uint64_t before;
                enum mq_sm_status st;

                if (k == 1) {
                    assert_int_equal(move_in(t, "mq", ch.buf[0], ch.len[0],
                                             9, NULL),
                                     MQ_SM_OK);
                }
                /* the clock is state too: at T0 before the attempt */
                assert_int_equal(move_cmd(t, MQ_SM_EXPIRE, NULL, NULL),
                                 MQ_SM_OK);
                before = mq_sm_digest(t);
                b[i] ^= (unsigned char)(1 << bit);
                reseal_with(b, ch.len[k], 0x6d712d6d6f766573ULL);
                st = move_in(t, "mq", b, ch.len[k], 9, NULL);
                if (st != MQ_SM_OK) {
                    assert_true(mq_sm_digest(t) == before);
                }
                b[i] ^= (unsigned char)(1 << bit);
                sm_free(t);
            }
        }
        reseal_with(b, ch.len[k], 0x6d712d6d6f766573ULL);
    }
    chunks_free(&ch);
    sm_free(s);
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
    sm_free(sm);
}

/* Cancel, queue deletion and multiple settle walk what they touch, not the
 * shard: with N queues each holding a consumer on its own channel, each
 * visits a few records (mq_sm_visits), where sweeping every queue or
 * consumer record visits N. The indexes survive a snapshot round trip. */
static void test_cost_proportional_to_what_is_touched(void **state)
{
    enum { N = 1000 };
    struct mq_sm *sm = sm_make();
    struct mq_sm *copy = sm_make();
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    char name[32];
    uint64_t v;
    void *snap;
    size_t len;
    int i;

    (void)state;
    for (i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "q%04d", i);
        cmd_init(&c, MQ_SM_DECLARE, name);
        c.auto_delete = i % 2 == 0;
        assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
        enqueue(sm, T0, name, "a");
        enqueue(sm, T0, name, "b");
        consume(sm, name, (uint64_t)i + 1, (uint64_t)i + 1000);
        assert_int_equal(checkout(sm, T0, name, (uint64_t)i + 1,
                                  (uint64_t)i + 1000, 10, 0, &res),
                         2);
        mq_sm_result_clear(&res);
    }
    /* a snapshot's copy goes on with its own indexes */
    assert_int_equal(mq_sm_snapshot(sm, malloc, &snap, &len), 0);
    assert_int_equal(restore(copy, sm, snap, len), 0);
    free(snap);
    mq_sm_check(copy);
    for (i = 0; i < 2; i++) {
        struct mq_sm *s = i == 0 ? sm : copy;

        /* multiple ack of one channel's deliveries */
        v = mq_sm_visits(s);
        assert_int_equal(by_tag(s, MQ_SM_SETTLE, 21, 0, true, NULL), 2);
        assert_true(mq_sm_visits(s) - v <= 2);
        assert_int_equal(qstats(s, "q0020").unacked, 0);

        /* cancel of an auto-delete queue's last consumer: the queue goes
         * with its record (returned messages go back first) */
        v = mq_sm_visits(s);
        cmd_init(&c, MQ_SM_CANCEL, NULL);
        c.who = who_of(501, 1500);
        assert_int_equal(run(s, T0, &c, &res), MQ_SM_OK);
        assert_int_equal(res.n_deleted, 1);
        assert_int_equal(res.deleted[0].reason, MQ_SM_DEL_AUTO_DELETE);
        mq_sm_result_clear(&res);
        assert_false(queue_exists(s, "q0500"));
        assert_true(mq_sm_visits(s) - v <= 4);

        /* cancel elsewhere: nothing to sweep */
        v = mq_sm_visits(s);
        c.who = who_of(502, 1501);
        assert_int_equal(run1(s, T0, &c), MQ_SM_OK);
        assert_true(queue_exists(s, "q0501"));
        assert_true(mq_sm_visits(s) - v <= 2);

        /* queue.delete of a queue with a consumer record */
        v = mq_sm_visits(s);
        cmd_init(&c, MQ_SM_DELETE, "q0010");
        assert_int_equal(run1(s, T0, &c), MQ_SM_OK);
        assert_false(queue_exists(s, "q0010"));
        assert_true(mq_sm_visits(s) - v <= 2);
        /* its consumer's deliveries went with it: acks are no-ops */
        assert_int_equal(by_tag(s, MQ_SM_SETTLE, 11, 0, true, NULL), 0);
        mq_sm_check(s);
    }
    assert_true(mq_sm_digest(sm) == mq_sm_digest(copy));
    sm_free(sm);
    sm_free(copy);
}

static void note_router_id(void *data, uint64_t router)
{
    uint64_t *seen = data;

    assert_true(router == 1 || router == 2);
    *seen |= router;
}

static struct mq_sm_who who_at(uint64_t router, uint64_t conn,
                               uint64_t channel, uint64_t consumer)
{
    struct mq_sm_who w = {router, conn, channel, consumer};

    return w;
}

static void consume_as(struct mq_sm *sm, const char *q, uint64_t router,
                       uint64_t conn, uint64_t channel, uint64_t consumer)
{
    struct mq_sm_cmd c;

    cmd_init(&c, MQ_SM_CONSUME, q);
    c.who = who_at(router, conn, channel, consumer);
    c.max_messages = 1;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
}

/* RETURN of router 1's @scope (conn 1, channel @channel, consumer
 * @consumer); returns the queues it deleted. */
static size_t return_owner(struct mq_sm *sm, enum mq_sm_scope scope,
                           uint64_t channel, uint64_t consumer)
{
    struct mq_sm_cmd c;
    struct mq_sm_result res;
    size_t n;

    cmd_init(&c, MQ_SM_RETURN, NULL);
    c.who = who_at(1, 1, channel, consumer);
    c.scope = scope;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    n = res.n_deleted;
    mq_sm_result_clear(&res);
    return n;
}

/* Dispatch over a queue's consumers, the RETURNs of a gone consumer,
 * channel, connection and router, mq_sm_for_each_router, a freeze and an
 * export walk what they touch: with N queues each holding a consumer
 * record of router 2 (each on its own connection), each visits a few
 * records (mq_sm_visits), where a walk over every record or queue visits
 * N. On the machine and on its snapshot's copy. */
static void test_owner_cost(void **state)
{
    enum { N = 1000 };
    struct mq_sm *sm = sm_make();
    struct mq_sm *copy = sm_make();
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    char name[32];
    uint64_t v;
    uint64_t seen;
    uint64_t next;
    void *snap;
    size_t len;
    bool last;
    int i;

    (void)state;
    for (i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "q%04d", i);
        declare(sm, name);
        enqueue(sm, T0, name, "a");
        consume_as(sm, name, 2, (uint64_t)i + 1, 1, (uint64_t)i + 1000);
        cmd_init(&c, MQ_SM_CHECKOUT, name);
        c.who = who_at(2, (uint64_t)i + 1, 1, (uint64_t)i + 1000);
        c.max_messages = 1;
        assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    }
    /* router 1, connection 1: four consumers of one queue on channels
     * 1..4, an exclusive queue with a consumer on channel 5 */
    declare(sm, "shared");
    for (i = 1; i <= 4; i++) {
        consume_as(sm, "shared", 1, 1, (uint64_t)i, (uint64_t)i);
    }
    cmd_init(&c, MQ_SM_DECLARE, "x");
    c.exclusive = true;
    c.who = who_at(1, 1, 0, 0);
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    consume_as(sm, "x", 1, 1, 5, 5);
    for (i = 0; i < 8; i++) {
        enqueue(sm, T0, "shared", "s");
    }
    assert_int_equal(mq_sm_snapshot(sm, malloc, &snap, &len), 0);
    assert_int_equal(restore(copy, sm, snap, len), 0);
    free(snap);
    mq_sm_check(copy);
    for (i = 0; i < 2; i++) {
        struct mq_sm *s = i == 0 ? sm : copy;

        /* dealt over the queue's four: one each, the others' set aside */
        v = mq_sm_visits(s);
        cmd_init(&c, MQ_SM_CHECKOUT, "shared");
        c.who = who_at(1, 1, 1, 1);
        c.max_messages = 2;
        assert_int_equal(run(s, T0, &c, &res), MQ_SM_OK);
        assert_int_equal(res.n_deliveries, 2);
        assert_int_equal(res.set_aside, 3);
        mq_sm_result_clear(&res);
        assert_true(mq_sm_visits(s) - v <= 4);

        v = mq_sm_visits(s);
        assert_int_equal(return_owner(s, MQ_SM_SCOPE_CONSUMER, 4, 4), 0);
        assert_int_equal(qstats(s, "shared").consumers, 3);
        assert_true(mq_sm_visits(s) - v <= 2);

        v = mq_sm_visits(s);
        assert_int_equal(return_owner(s, MQ_SM_SCOPE_CHANNEL, 3, 0), 0);
        assert_int_equal(qstats(s, "shared").consumers, 2);
        assert_true(mq_sm_visits(s) - v <= 2);

        v = mq_sm_visits(s);
        seen = 0;
        mq_sm_for_each_router(s, note_router_id, &seen);
        assert_int_equal(seen, 3);
        assert_true(mq_sm_visits(s) - v <= 2);

        /* the connection's records and its exclusive queue */
        v = mq_sm_visits(s);
        assert_int_equal(return_owner(s, MQ_SM_SCOPE_CONNECTION, 0, 0), 1);
        assert_false(queue_exists(s, "x"));
        assert_int_equal(qstats(s, "shared").consumers, 0);
        assert_int_equal(qstats(s, "shared").ready, 8);
        assert_true(mq_sm_visits(s) - v <= 6);

        v = mq_sm_visits(s);
        consume_as(s, "shared", 1, 2, 1, 7);
        assert_int_equal(return_owner(s, MQ_SM_SCOPE_ROUTER, 0, 0), 0);
        assert_int_equal(qstats(s, "shared").consumers, 0);
        assert_true(mq_sm_visits(s) - v <= 2);

        /* a freeze and the export of its definition: its own record */
        v = mq_sm_visits(s);
        assert_int_equal(move_cmd(s, MQ_SM_MOVE_OUT, "q0007", NULL),
                         MQ_SM_OK);
        assert_int_equal(qstats(s, "q0007").ready, 1);
        assert_int_equal(mq_sm_export(s, VH, strlen(VH), "q0007", 5, 0,
                                      1 << 16, malloc, mbs_read, mbs_of(s), &snap, &len, &next,
                                      &last),
                         MQ_SM_OK);
        free(snap);
        assert_true(mq_sm_visits(s) - v <= 2);
        mq_sm_check(s);
    }
    assert_true(mq_sm_digest(sm) == mq_sm_digest(copy));
    sm_free(sm);
    sm_free(copy);
}

/* Giving back many deliveries to one queue takes one pass over its ready
 * list, not one per consumer record or per tag: C basic.get records of
 * router 1 hold 2 messages each, and the router's RETURN visits O(C)
 * (records and ready messages passed), where requeueing each record's in
 * turn passes those given back before it, O(C^2); the same for one
 * record's N deliveries returned by a tag list. The queue ends in id
 * order, redelivered. */
static void test_return_cost(void **state)
{
    enum { C = 500, N = 1000 };
    struct mq_sm *sm = sm_make();
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    uint64_t *tags = calloc(N, sizeof(*tags));
    uint64_t v;
    int i;

    (void)state;
    assert_non_null(tags);
    declare(sm, "q");
    for (i = 0; i < 2 * C + 10; i++) {
        enqueue(sm, T0, "q", "m");
    }
    for (i = 0; i < C; i++) {
        cmd_init(&c, MQ_SM_CHECKOUT, "q");
        c.who = who_at(1, (uint64_t)i + 1, 1, (uint64_t)i + 1);
        c.max_messages = 2;
        assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    }
    assert_int_equal(qstats(sm, "q").unacked, 2 * C);
    v = mq_sm_visits(sm);
    cmd_init(&c, MQ_SM_RETURN, NULL);
    c.who = who_at(1, 0, 0, 0);
    c.scope = MQ_SM_SCOPE_ROUTER;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, 2 * C);
    mq_sm_result_clear(&res);
    assert_true(mq_sm_visits(sm) - v <= 3 * C + 10);
    assert_int_equal(qstats(sm, "q").ready, 2 * C + 10);

    /* one record's N deliveries, returned by a tag list */
    for (i = 0; i < N - 2 * C - 10; i++) {
        enqueue(sm, T0, "q", "m");
    }
    cmd_init(&c, MQ_SM_CHECKOUT, "q");
    c.who = who_at(1, 1, 1, 9999);
    c.max_messages = N;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_deliveries, N);
    for (i = 0; i < N; i++) {
        tags[i] = res.deliveries[i].tag;
    }
    mq_sm_result_clear(&res);
    v = mq_sm_visits(sm);
    cmd_init(&c, MQ_SM_RETURN, NULL);
    c.who = who_at(1, 1, 1, 0);
    c.tags = tags;
    c.n_tags = N;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.count, N);
    mq_sm_result_clear(&res);
    assert_true(mq_sm_visits(sm) - v <= 2 * N);
    /* all back, in id order, each redelivered */
    assert_int_equal(checkout(sm, T0, "q", 7, 7777, N, 0, &res), N);
    for (i = 0; i < N; i++) {
        assert_true(res.deliveries[i].redelivered);
        assert_true(i == 0 ||
                    res.deliveries[i].msg_id > res.deliveries[i - 1].msg_id);
    }
    mq_sm_result_clear(&res);
    mq_sm_check(sm);
    free(tags);
    sm_free(sm);
}

/* One command leaving several auto-delete queues without consumers
 * deletes them in creation order, whatever order their consumers came
 * in; one in a move stays for a later sweep. */
static void test_auto_delete_order(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    static const char *const names[] = {"a1", "a2", "a3", "a4"};
    int i;

    (void)state;
    for (i = 0; i < 4; i++) {
        cmd_init(&c, MQ_SM_DECLARE, names[i]);
        c.auto_delete = true;
        assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    }
    consume(sm, "a4", 1, 4);
    consume(sm, "a3", 1, 3);
    consume(sm, "a1", 1, 1);
    consume(sm, "a2", 1, 2);
    assert_int_equal(move_cmd(sm, MQ_SM_MOVE_OUT, "a2", NULL), MQ_SM_OK);
    cmd_init(&c, MQ_SM_RETURN, NULL);
    c.who = who_of(1, 0);
    c.scope = MQ_SM_SCOPE_CONNECTION;
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_deleted, 3);
    assert_memory_equal(res.deleted[0].queue, "a1", 2);
    assert_memory_equal(res.deleted[1].queue, "a3", 2);
    assert_memory_equal(res.deleted[2].queue, "a4", 2);
    mq_sm_result_clear(&res);
    mq_sm_check(sm);
    /* the frozen one: the abort's sweep finds it */
    assert_true(queue_exists(sm, "a2"));
    assert_int_equal(move_cmd(sm, MQ_SM_MOVE_ABORT, "a2", &res), MQ_SM_OK);
    assert_int_equal(res.n_deleted, 1);
    assert_memory_equal(res.deleted[0].queue, "a2", 2);
    mq_sm_result_clear(&res);
    mq_sm_check(sm);
    sm_free(sm);
}

/* mq_sm_next_due: the first time an EXPIRE acts on something, so a leader
 * can leave out every EXPIRE before it (node/mq_svc.c). */
static void test_next_due_ttl_and_outbox(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm *copy = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_cmd tick;
    struct mq_sm_result res;
    uint64_t first;
    void *snap;
    size_t len;

    (void)state;
    cmd_init(&tick, MQ_SM_EXPIRE, NULL);
    assert_true(mq_sm_next_due(sm) == UINT64_MAX);
    declare(sm, "plain");
    enqueue(sm, T0, "plain", "m");
    assert_true(mq_sm_next_due(sm) == UINT64_MAX); /* nothing can expire */

    declare_ttl_dlx(sm, "ttl", 1000);
    enqueue(sm, T0 + 100, "ttl", "a");
    enqueue(sm, T0 + 200, "ttl", "b");
    assert_int_equal(mq_sm_next_due(sm), T0 + 1100); /* the head's */
    assert_int_equal(mq_sm_next_due(sm), T0 + 1100);
    /* a restored replica computes the same */
    assert_int_equal(mq_sm_snapshot(sm, malloc, &snap, &len), 0);
    assert_int_equal(restore(copy, sm, snap, len), 0);
    free(snap);
    assert_int_equal(mq_sm_next_due(copy), T0 + 1100);

    /* before it, an EXPIRE acts on nothing */
    assert_int_equal(run(sm, T0 + 1099, &tick, &res), MQ_SM_OK);
    assert_int_equal(res.count + res.n_dead + res.n_deleted, 0);
    mq_sm_result_clear(&res);
    assert_int_equal(mq_sm_next_due(sm), T0 + 1100);
    /* at it, a goes to the outbox (claimed now) and b is next */
    assert_int_equal(run(sm, T0 + 1100, &tick, &res), MQ_SM_OK);
    assert_int_equal(res.count, 1);
    assert_int_equal(res.n_dead, 1);
    first = res.dead[0].outbox_id;
    mq_sm_result_clear(&res);
    assert_int_equal(mq_sm_next_due(sm), T0 + 1200);
    assert_int_equal(run(sm, T0 + 1200, &tick, &res), MQ_SM_OK);
    assert_int_equal(res.count, 1);
    mq_sm_result_clear(&res);
    /* only the outbox is left: its oldest claim, MQ_SM_DL_CLAIM_MS on */
    assert_int_equal(mq_sm_next_due(sm), T0 + 1100 + MQ_SM_DL_CLAIM_MS);
    cmd_init(&c, MQ_SM_DL_SETTLE, NULL);
    c.tags = &first;
    c.n_tags = 1;
    assert_int_equal(run1(sm, T0 + 1300, &c), MQ_SM_OK);
    assert_int_equal(mq_sm_next_due(sm), T0 + 1200 + MQ_SM_DL_CLAIM_MS);
    assert_int_equal(run(sm, T0 + 1199 + MQ_SM_DL_CLAIM_MS, &tick, &res),
                     MQ_SM_OK);
    assert_int_equal(res.n_dead, 0);
    mq_sm_result_clear(&res);
    /* handed out again, claimed again */
    assert_int_equal(run(sm, T0 + 1200 + MQ_SM_DL_CLAIM_MS, &tick, &res),
                     MQ_SM_OK);
    assert_int_equal(res.n_dead, 1);
    mq_sm_result_clear(&res);
    assert_int_equal(mq_sm_next_due(sm), T0 + 1200 + 2 * MQ_SM_DL_CLAIM_MS);
    sm_free(copy);
    sm_free(sm);
}

static void test_next_due_expires_and_moves(void **state)
{
    struct mq_sm *sm = sm_make();
    struct mq_sm_cmd c;
    struct mq_sm_result res;

    (void)state;
    cmd_init(&c, MQ_SM_DECLARE, "tmp");
    c.args.has_expires = true;
    c.args.expires_ms = 5000;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    assert_int_equal(mq_sm_next_due(sm), T0 + 5000);
    /* use restarts it; a registered consumer holds it */
    assert_int_equal(run1(sm, T0 + 1000, &c), MQ_SM_OK);
    assert_int_equal(mq_sm_next_due(sm), T0 + 6000);
    consume(sm, "tmp", 1, 7);
    assert_true(mq_sm_next_due(sm) == UINT64_MAX);
    cmd_init(&c, MQ_SM_CANCEL, NULL);
    c.who = who_of(1, 7);
    assert_int_equal(run1(sm, T0 + 2000, &c), MQ_SM_OK);
    assert_int_equal(mq_sm_next_due(sm), T0 + 6000);

    /* a queue in a move stands still: nothing due until it serves again */
    assert_int_equal(move_cmd(sm, MQ_SM_MOVE_OUT, "tmp", NULL), MQ_SM_OK);
    assert_true(mq_sm_next_due(sm) == UINT64_MAX);
    cmd_init(&c, MQ_SM_EXPIRE, NULL);
    assert_int_equal(run(sm, T0 + 100000, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_deleted, 0);
    mq_sm_result_clear(&res);
    /* unfrozen at T0 + 100000 (the clock): the freeze was not idleness */
    assert_int_equal(move_cmd(sm, MQ_SM_MOVE_ABORT, "tmp", NULL), MQ_SM_OK);
    assert_int_equal(mq_sm_next_due(sm), T0 + 105000);
    assert_int_equal(run(sm, T0 + 105000, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_deleted, 1);
    mq_sm_result_clear(&res);
    assert_true(mq_sm_next_due(sm) == UINT64_MAX);
    sm_free(sm);
}


/* Memory per ready message, bodies aside (they are the store's): the
 * allocator's count of bytes in use (glibc mallinfo2) over a backlog of
 * 500,000. struct mq_msg is 64 bytes, 80 as glibc allocates it; nothing
 * else grows per message. The sanitizer build's allocator does not keep
 * that count: there the test only runs the backlog. */
static void test_memory_per_message(void **state)
{
#ifndef RINGMQ_TEST_ASAN
    const unsigned n = 500000;
#else
    /* no byte count under ASan (its allocator's own): the path only, as
     * the sanitizer build checks the whole state every few applies */
    const unsigned n = 5000;
#endif
    struct mq_sm *sm = sm_make();
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    size_t before, after;
    unsigned i;

    (void)state;
    declare(sm, "q");
    cmd_init(&c, MQ_SM_ENQUEUE, "q");
    c.body = "0123456789abcdef";
    c.body_len = 16;
    before = mallinfo2().uordblks;
    for (i = 0; i < n; i++) {
        mq_sm_apply(sm, T0, &c, &res);
        assert_int_equal(res.status, MQ_SM_OK);
        mq_sm_result_clear(&res);
    }
    after = mallinfo2().uordblks;
    assert_int_equal(qstats(sm, "q").ready, n);
#ifndef RINGMQ_TEST_ASAN
    print_message("%.1f bytes per ready message\n",
                  (double)(after - before) / n);
    assert_true(after - before <= (size_t)n * 80 + 4096);
#else
    (void)before;
    (void)after;
#endif
    sm_free(sm);
}

/* ------------------------------------------ switching to external bodies */

/* A version 5 snapshot of @sm, whose bodies are inline, as the machine
 * before body refs would write it: a version 7 snapshot with bodies
 * inline is version 5 with the bodies flag after the header and an empty
 * body table before the checksum (test_snapshot_inline_is_v5). */
static unsigned char *snap_v5_of(const struct mq_sm *sm, size_t *len)
{
    const size_t flag_at = 4 + 4 + 8 + 8 + 8 + 4;
    const size_t table = 4 + 4 + 8 + 8; /* size, cursor, count */
    unsigned char *out;
    void *buf;
    size_t n, i;

    assert_int_equal(mq_sm_snapshot(sm, malloc, &buf, &n), 0);
    out = buf;
    assert_true(n > flag_at + 1 + table + 8);
    assert_int_equal(out[4], 7);
    assert_int_equal(out[flag_at], 0); /* inline */
    /* the cursor at (1, 0), no segment */
    for (i = n - 8 - table + 4; i < n - 8; i++) {
        assert_int_equal(out[i], i == n - 8 - table + 4 ? 1 : 0);
    }
    memmove(out + flag_at, out + flag_at + 1, n - 8 - table - flag_at - 1);
    n -= 1 + table;
    out[4] = 5;
    reseal(out, n);
    *len = n;
    return out;
}

/* A machine with bodies inline snapshots what the machine before refs
 * did (snap_v5 came from it), but for the flag and the empty table; a
 * version 7 snapshot with bodies inline restores with bodies inline, and
 * from then on the two switch alike. */
static void test_snapshot_inline_is_v5(void **state)
{
    struct mq_sm *sm = sm_make_inline();
    struct mq_sm *copy = sm_make();
    struct mq_sm_result a, b;
    struct mq_sm_cmd c;
    unsigned char *v5;
    void *s1, *s2;
    size_t len, l1, l2, i;

    (void)state;
    assert_false(sm_stats(sm).bodies_external);
    old_format_script(sm);
    mq_sm_check(sm);
    v5 = snap_v5_of(sm, &len);
    assert_int_equal(len, sizeof(snap_v5));
    assert_memory_equal(v5, snap_v5, len);
    free(v5);

    assert_true(sm_stats(copy).bodies_external);
    assert_int_equal(mq_sm_snapshot(sm, malloc, &s1, &l1), 0);
    assert_int_equal(restore(copy, NULL, s1, l1), 0);
    mq_sm_check(copy);
    assert_false(sm_stats(copy).bodies_external);
    assert_true(mq_sm_digest(copy) == mq_sm_digest(sm));
    assert_int_equal(mq_sm_snapshot(copy, malloc, &s2, &l2), 0);
    assert_int_equal(l1, l2);
    assert_memory_equal(s1, s2, l1);
    free(s1);
    free(s2);
    /* the flag (after the header): a state that says inline but placed
     * something is refused; version 6 (no flag) restores external */
    {
        const size_t flag = 4 + 4 + 8 + 8 + 8 + 4;
        struct mq_sm *ext = sm_make();
        unsigned char *p;

        assert_int_equal(mq_sm_snapshot(ext, malloc, &s1, &l1), 0);
        p = s1;
        p[flag] = 0; /* nothing placed yet: a new state's */
        reseal(p, l1);
        assert_int_equal(mq_sm_restore(copy, p, l1), 0);
        assert_false(sm_stats(copy).bodies_external);
        free(s1);
        declare(ext, "q");
        enqueue(ext, T0, "q", "x");
        assert_int_equal(mq_sm_snapshot(ext, malloc, &s1, &l1), 0);
        p = s1;
        memmove(p + flag, p + flag + 1, l1 - flag - 1);
        p[4] = 6;
        reseal(p, l1 - 1);
        assert_int_equal(restore(copy, ext, p, l1 - 1), 0);
        assert_true(sm_stats(copy).bodies_external);
        assert_true(mq_sm_digest(copy) == mq_sm_digest(ext));
        expect_order(copy, "q", 9, (const char *const[]){"x"},
                     (const bool[]){false}, 1);
        free(s1);
        cmd_init(&c, MQ_SM_PURGE, "q"); /* no message; seg 1 in use */
        assert_int_equal(run1(ext, T0, &c), MQ_SM_OK);
        assert_int_equal(mq_sm_snapshot(ext, malloc, &s1, &l1), 0);
        p = s1;
        p[flag] = 0;
        reseal(p, l1);
        assert_int_equal(mq_sm_restore(copy, p, l1), -1);
        p[flag] = 2; /* neither */
        reseal(p, l1);
        assert_int_equal(mq_sm_restore(copy, p, l1), -1);
        p[flag] = 1;
        reseal(p, l1);
        assert_int_equal(restore(copy, ext, p, l1), 0);
        free(s1);
        sm_free(ext);
        sm_free(copy);
        copy = sm_make();
        assert_int_equal(mq_sm_snapshot(sm, malloc, &s1, &l1), 0);
        assert_int_equal(restore(copy, NULL, s1, l1), 0);
        free(s1);
    }

    /* the ERA switches both alike; a second one changes nothing */
    cmd_init(&c, MQ_SM_ERA, NULL);
    for (i = 0; i < 2; i++) {
        assert_int_equal(run(sm, T0, &c, &a), MQ_SM_OK);
        assert_int_equal(run(copy, T0, &c, &b), MQ_SM_OK);
        assert_int_equal(a.n_writes, i == 0 ? 6 : 0); /* 3+2 and 1 dead */
        assert_same_bodies(&a, &b);
        mq_sm_result_clear(&a);
        mq_sm_result_clear(&b);
        assert_true(sm_stats(sm).bodies_external);
        assert_true(mq_sm_digest(copy) == mq_sm_digest(sm));
        mq_sm_check(sm);
    }
    sm_free(sm);
    sm_free(copy);
}

/* The write's bytes are @body. */
static void assert_write(const struct mq_sm_write *w, uint32_t off,
                         const char *body)
{
    assert_int_equal(w->seg, 1);
    assert_int_equal(w->off, off);
    assert_int_equal(w->len, strlen(body));
    assert_memory_equal(w->body, body, w->len);
    assert_non_null(w->own); /* the result's: the state let go of it */
}

/* The switch places every body the state holds, in the order mq_sm.h
 * gives: ready messages by queue (a frozen one too), checked-out ones by
 * consumer, then the outbox; deliveries, dead letters and exports read
 * them from the store from then on. Before it, no write is asked for and
 * deliveries come filled. */
static void test_switch_order(void **state)
{
    static const char *const order[] = {"a4", "b2", "c1", "c2",
                                        "a1", "a3", "b1", "a2"};
    struct mq_sm *sm = sm_make_inline();
    struct mq_sm *t = sm_make();
    struct mq_sm_result res;
    struct mq_sm_cmd c;
    struct chunks ch;
    char body[3];
    size_t i;

    (void)state;
    declare_dlx(sm, "qa", false);
    declare(sm, "qb");
    declare(sm, "qc");
    for (i = 1; i <= 4; i++) {
        snprintf(body, sizeof(body), "a%zu", i);
        cmd_init(&c, MQ_SM_ENQUEUE, "qa");
        c.body = body;
        c.body_len = 2;
        assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
        assert_int_equal(res.n_writes, 0); /* inline */
        mq_sm_result_clear(&res);
    }
    enqueue(sm, T0, "qb", "b1");
    enqueue(sm, T0, "qb", "b2");
    enqueue(sm, T0, "qc", "c1");
    enqueue(sm, T0, "qc", "c2");
    assert_int_equal(checkout(sm, T0, "qa", 1, 7, 3, 0, &res), 3);
    for (i = 0; i < 3; i++) {
        assert_int_equal(res.deliveries[i].seg, 0);
        /* a1, a2, a3: order[4], [7], [5] */
        assert_body(&res.deliveries[i], order[i == 1 ? 7 : 4 + i / 2]);
    }
    mq_sm_result_clear(&res);
    assert_int_equal(checkout(sm, T0, "qb", 2, 8, 1, 0, &res), 1);
    mq_sm_result_clear(&res);
    /* a2 (tag 2) to the outbox: its dead letter comes filled */
    assert_int_equal(by_tag(sm, MQ_SM_DROP, 1, 2, false, &res), 1);
    assert_int_equal(res.n_dead, 1);
    assert_true(res.dead[0].seg == 0 && res.dead[0].body_len == 2);
    assert_memory_equal(res.dead[0].body, "a2", 2);
    mq_sm_result_clear(&res);
    assert_int_equal(move_cmd(sm, MQ_SM_MOVE_OUT, "qc", NULL), MQ_SM_OK);
    mq_sm_check(sm);

    cmd_init(&c, MQ_SM_ERA, NULL);
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_writes, 8);
    for (i = 0; i < 8; i++) {
        assert_write(&res.writes[i], (uint32_t)(16 * i), order[i]);
    }
    /* the caller may let go of the writes early */
    mq_sm_result_drop_writes(&res);
    assert_int_equal(res.n_writes, 0);
    mq_sm_result_clear(&res);
    mq_sm_check(sm);
    assert_true(sm_stats(sm).bodies_external);

    /* what was checked out comes back and is delivered from the store */
    cmd_init(&c, MQ_SM_RETURN, NULL);
    c.who = who_of(1, 7);
    c.scope = MQ_SM_SCOPE_CHANNEL;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    assert_int_equal(checkout(sm, T0, "qa", 3, 9, 10, 0, &res), 3);
    assert_body(&res.deliveries[0], "a1");
    assert_body(&res.deliveries[1], "a3");
    assert_body(&res.deliveries[2], "a4");
    assert_true(res.deliveries[0].seg == 1 && res.deliveries[0].off == 64);
    mq_sm_result_clear(&res);
    /* the outbox entry, handed out again */
    cmd_init(&c, MQ_SM_EXPIRE, NULL);
    assert_int_equal(run(sm, T0 + MQ_SM_DL_CLAIM_MS, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_dead, 1);
    assert_true(res.dead[0].seg == 1 && res.dead[0].off == 112);
    assert_memory_equal(res.dead[0].body, "a2", 2);
    mq_sm_result_clear(&res);
    /* the frozen queue exports its bodies from the store */
    export_all(sm, "qc", 0, 1 << 20, &ch);
    for (i = 0; i < ch.n; i++) {
        assert_int_equal(move_in(t, "qc", ch.buf[i], ch.len[i], 5, NULL),
                         MQ_SM_OK);
    }
    chunks_free(&ch);
    assert_int_equal(move_cmd(t, MQ_SM_MOVE_IN_END, "qc", NULL), MQ_SM_OK);
    expect_order(t, "qc", 11, (const char *const[]){"c1", "c2"},
                 (const bool[]){false, false}, 2);
    mq_sm_check(sm);
    sm_free(sm);
    sm_free(t);
}

/* BOOT switches what it leaves: the queues it deletes take their bodies
 * with them, the deliveries it gives back are placed where they stand in
 * their queue. */
static void test_switch_at_boot(void **state)
{
    struct mq_sm *sm = sm_make_inline();
    struct mq_sm_result res;
    struct mq_sm_cmd c;

    (void)state;
    declare(sm, "keep");
    cmd_init(&c, MQ_SM_DECLARE, "gone");
    c.durable = false;
    assert_int_equal(run1(sm, T0, &c), MQ_SM_OK);
    enqueue(sm, T0, "gone", "g1");
    enqueue(sm, T0, "keep", "k1");
    enqueue(sm, T0, "keep", "k2");
    consume(sm, "keep", 1, 7);
    assert_int_equal(checkout(sm, T0, "keep", 1, 7, 1, 0, &res), 1);
    mq_sm_result_clear(&res);
    cmd_init(&c, MQ_SM_BOOT, NULL);
    assert_int_equal(run(sm, T0, &c, &res), MQ_SM_OK);
    assert_int_equal(res.n_deleted, 1);
    assert_int_equal(res.n_writes, 2);
    assert_write(&res.writes[0], 0, "k1");
    assert_write(&res.writes[1], 16, "k2");
    mq_sm_result_clear(&res);
    mq_sm_check(sm);
    assert_int_equal(checkout(sm, T0, "keep", 2, 8, 5, 0, &res), 2);
    assert_body(&res.deliveries[0], "k1");
    assert_true(res.deliveries[0].redelivered);
    assert_body(&res.deliveries[1], "k2");
    mq_sm_result_clear(&res);
    sm_free(sm);
}

/* The body enqueued as each message id, to check what is delivered. */
struct published {
    char body[4096][64];
};

static void note_published(struct published *p, const struct mq_sm_cmd *c,
                           const struct mq_sm_result *res)
{
    if (c->type == MQ_SM_ENQUEUE && res->status == MQ_SM_OK &&
        res->msg_id > 0) {
        assert_true(res->msg_id < 4096 && c->body_len < 64);
        memcpy(p->body[res->msg_id], c->body, c->body_len);
        p->body[res->msg_id][c->body_len] = '\0';
    }
}

static void check_published(const struct published *p,
                            const struct mq_sm_result *res)
{
    size_t i;

    for (i = 0; i < res->n_deliveries; i++) {
        assert_body(&res->deliveries[i], p->body[res->deliveries[i].msg_id]);
    }
    for (i = 0; i < res->n_dead; i++) {
        const struct mq_sm_dead_letter *d = &res->dead[i];

        assert_int_equal(d->body_len, strlen(p->body[d->msg_id]));
        assert_memory_equal(d->body, p->body[d->msg_id], d->body_len);
    }
}

/* Same writes, bytes included. */
static void assert_same_writes(const struct mq_sm_result *a,
                               const struct mq_sm_result *b)
{
    size_t i;

    assert_same_bodies(a, b);
    for (i = 0; i < a->n_writes; i++) {
        assert_memory_equal(a->writes[i].body, b->writes[i].body,
                            a->writes[i].len);
    }
}

/* The switch happens at one log index on every replica, whatever old
 * snapshot each restored: two replicas restore version 5 snapshots taken
 * at different points of one stream (as two replicas of an upgraded
 * group restore their own), a third replays the stream from its start;
 * from the later restore on they answer alike, digest alike, and at the
 * ERA and after it ask for the same writes, byte for byte. Deliveries and
 * dead letters carry the published bodies before and after. */
static void test_switch_at_one_point(void **state)
{
    enum { SNAP_A = 700, SNAP_B = 1500, SWITCH = 2000, END = 3500 };
    struct published *pub = calloc(1, sizeof(*pub));
    struct mq_sm *r[3] = {sm_make_inline(), NULL, NULL}; /* replay, A, B */
    uint64_t rng = 77, now = T0;
    uint64_t writes = 0, switched = 0, delivered = 0;
    char body[64];
    int i;
    size_t k;

    (void)state;
    assert_non_null(pub);
    for (i = 1; i <= END; i++) {
        struct mq_sm_result res[3];
        struct mq_sm_cmd c;

        if (i == SNAP_A || i == SNAP_B) {
            struct mq_sm **to = &r[i == SNAP_A ? 1 : 2];
            unsigned char *v5;
            size_t len;

            v5 = snap_v5_of(r[0], &len);
            *to = sm_make(); /* external, until it restores the old one */
            assert_int_equal(restore(*to, NULL, v5, len), 0);
            assert_false(sm_stats(*to).bodies_external);
            free(v5);
        }
        random_cmd(&rng, &c, &now, body);
        if (i < SWITCH && (c.type == MQ_SM_ERA || c.type == MQ_SM_BOOT)) {
            c.type = MQ_SM_EXPIRE; /* the upgraded leader's ERA comes at
                                      SWITCH */
        }
        if (i == SWITCH) {
            cmd_init(&c, MQ_SM_ERA, NULL);
        }
        for (k = 0; k < 3; k++) {
            if (r[k] == NULL) {
                continue;
            }
            run(r[k], now, &c, &res[k]);
            check_published(pub, &res[k]);
            if (k > 0) {
                assert_same_writes(&res[0], &res[k]);
                assert_int_equal(res[0].status, res[k].status);
                assert_int_equal(res[0].count, res[k].count);
                assert_true(mq_sm_digest(r[0]) == mq_sm_digest(r[k]));
            }
        }
        note_published(pub, &c, &res[0]);
        assert_int_equal(sm_stats(r[0]).bodies_external, i >= SWITCH);
        assert_true(i >= SWITCH || res[0].n_writes == 0);
        writes += res[0].n_writes;
        switched += i == SWITCH ? res[0].n_writes : 0;
        delivered += res[0].n_deliveries;
        for (k = 0; k < 3; k++) {
            if (r[k] != NULL) {
                mq_sm_result_clear(&res[k]);
            }
        }
    }
    print_message("switch: %llu bodies placed at the ERA, %llu writes, "
                  "%llu delivered\n",
                  (unsigned long long)switched, (unsigned long long)writes,
                  (unsigned long long)delivered);
    assert_true(switched > 20 && writes > switched && delivered > 100);
    for (k = 0; k < 3; k++) {
        mq_sm_check(r[k]);
        sm_free(r[k]);
    }
    free(pub);
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
        cmocka_unit_test(test_cost_proportional_to_what_is_touched),
        cmocka_unit_test(test_owner_cost),
        cmocka_unit_test(test_return_cost),
        cmocka_unit_test(test_auto_delete_order),
        cmocka_unit_test(test_exclusive_consumer),
        cmocka_unit_test(test_leader_change_returns_all),
        cmocka_unit_test(test_boot),
        cmocka_unit_test(test_dedup_enqueue),
        cmocka_unit_test(test_enqueue_prev_seq_order),
        cmocka_unit_test(test_message_ttl),
        cmocka_unit_test(test_queue_expires),
        cmocka_unit_test(test_next_due_ttl_and_outbox),
        cmocka_unit_test(test_next_due_expires_and_moves),
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
        cmocka_unit_test(test_dead_letter_outbox),
        cmocka_unit_test(test_dead_letter_outbox_bounds),
        cmocka_unit_test(test_round_robin_dispatch),
        cmocka_unit_test(test_set_aside_returns),
        cmocka_unit_test(test_era_keeps_deliveries),
        cmocka_unit_test(test_for_each_router),
        cmocka_unit_test(test_dispatch_determinism),
        cmocka_unit_test(test_replay_unchanged),
        cmocka_unit_test(test_restore_old_format_bodies),
        cmocka_unit_test(test_snapshot_inline_is_v5),
        cmocka_unit_test(test_switch_order),
        cmocka_unit_test(test_switch_at_boot),
        cmocka_unit_test(test_switch_at_one_point),
        cmocka_unit_test(test_body_places),
        cmocka_unit_test(test_export_body_unreadable),
        cmocka_unit_test(test_memory_per_message),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_place_gen),
        cmocka_unit_test(test_move_full),
        cmocka_unit_test(test_move_abort),
        cmocka_unit_test(test_move_abort_at_target_with_gen),
        cmocka_unit_test(test_move_auto_delete_and_tombstone),
        cmocka_unit_test(test_move_snapshot),
        cmocka_unit_test(test_move_random),
        cmocka_unit_test(test_move_chunk_crafted),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
