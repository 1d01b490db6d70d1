/*
 * amqp_after: broker work that outlives whoever caused it; contract in
 * amqp_after.h.
 */
#include "edge/amqp_after.h"

#include <string.h>

#include "common/log.h"
#include "edge/amqp_dead_letter.h"

static void on_queue_gone_done(struct edge_call *ec)
{
    if (ec->bc.status != OUTCOME_OK) {
        log_warn("amqp: bindings of deleted queue '%.*s' not dropped",
                 (int)ec->queue_len, ec->queue);
    }
}

/* @gen: the deleted queue's placement generation (0: none), so that the
 * meta group drops nothing of a queue declared again since. */
static void queue_gone(struct edge_calls *k, const char *name, size_t len,
                       uint64_t gen)
{
    struct edge_call *ec = edge_call_new(k, NULL, on_queue_gone_done);

    edge_call_set_queue(ec, name, len);
    ec->bc.kind = AMQP_BROKER_META;
    ec->bc.meta.type = META_SM_QUEUE_GONE;
    ec->bc.meta.dest = ec->queue;
    ec->bc.meta.dest_len = ec->queue_len;
    ec->bc.meta.gen = gen;
    edge_call_submit(ec);
}

static void on_republish_done(struct edge_call *ec)
{
    if (ec->bc.status != OUTCOME_OK) {
        log_warn("amqp: dead letter to '%.*s' lost: broker unavailable",
                 (int)ec->queue_len, ec->queue);
        return;
    }
    edge_after_result(ec->calls, &ec->bc.mq_result);
}

void edge_after_result(struct edge_calls *k, const struct mq_sm_result *r)
{
    size_t i;

    if (k->closing) {
        return;
    }
    for (i = 0; i < r->n_dead; i++) {
        edge_dead_letter(k, &r->dead[i], on_republish_done);
    }
    for (i = 0; i < r->n_deleted; i++) {
        if (r->deleted[i].reason == MQ_SM_DEL_MOVED) {
            continue; /* it lives on at another shard */
        }
        queue_gone(k, r->deleted[i].queue, r->deleted[i].queue_len,
                   r->deleted[i].gen);
    }
}

/* Returns of what went (a channel, a connection, deliveries nobody took),
 * and settles whose operation stopped waiting (edge_settle_detached()):
 * nobody waits for them, and nothing else gives those messages back while
 * this router lives (its EXPIRE ticks keep its lease at every shard, and a
 * new shard leader keeps deliveries: sm/mq_sm.h, ERA). So they are sent
 * again, idempotent as they are, until applied however long the shard is
 * out; only the edge closing or the shard leaving the map ends them. */
static void on_return_done(struct edge_call *ec)
{
    const struct amqp_broker *b = &ec->calls->broker;

    if (ec->bc.shard < b->ops->shard_count(b->self) &&
        edge_call_retry_unavailable(ec)) {
        return;
    }
    if (ec->bc.status == OUTCOME_OK) {
        edge_after_result(ec->calls, &ec->bc.mq_result);
    }
}

void edge_return_everywhere(struct edge_calls *k, enum mq_sm_scope scope,
                            const struct mq_sm_who *who)
{
    unsigned n = k->broker.ops->shard_count(k->broker.self);
    unsigned i;

    for (i = 0; i < n; i++) {
        struct edge_call *ec = edge_call_new(k, NULL, on_return_done);

        ec->bc.kind = AMQP_BROKER_MQ;
        ec->bc.shard = i;
        ec->bc.mq.type = MQ_SM_RETURN;
        ec->bc.mq.scope = scope;
        ec->bc.mq.who = *who;
        ec->deadline_ms = UINT64_MAX; /* see on_return_done() */
        edge_call_submit(ec);
    }
}

void edge_settle_detached(struct edge_calls *k,
                          const struct amqp_broker_call *bc)
{
    struct edge_call *ec = edge_call_new(k, NULL, on_return_done);

    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = bc->shard;
    ec->bc.mq = bc->mq;
    if (bc->mq.n_tags > 0) {
        size_t size = bc->mq.n_tags * sizeof(*bc->mq.tags);

        ec->extra = xmalloc(size); /* freed with the call */
        memcpy(ec->extra, bc->mq.tags, size);
        ec->bc.mq.tags = ec->extra;
    }
    ec->deadline_ms = UINT64_MAX; /* see on_return_done() */
    edge_call_submit(ec);
}

void edge_return_deliveries(struct edge_calls *k, unsigned shard,
                            const struct mq_sm_who *who,
                            const struct mq_sm_result *r)
{
    size_t i;

    for (i = 0; i < r->n_deliveries; i++) {
        struct edge_call *ec = edge_call_new(k, NULL, on_return_done);

        ec->bc.kind = AMQP_BROKER_MQ;
        ec->bc.shard = shard;
        ec->bc.mq.type = MQ_SM_RETURN;
        ec->bc.mq.scope = MQ_SM_SCOPE_TAG;
        ec->bc.mq.who = *who;
        ec->bc.mq.tag = r->deliveries[i].tag;
        ec->deadline_ms = UINT64_MAX; /* see on_return_done() */
        edge_call_submit(ec);
    }
}
