/*
 * amqp_after: broker work that outlives whoever caused it; contract in
 * amqp_after.h.
 */
#include "edge/amqp_after.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"
#include "edge/amqp_dead_letter.h"
#include "edge/amqp_edge.h"

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

/* One dead letter's republish: its ENQUEUEs, then the DL_SETTLE of its
 * outbox entry at the shard that keeps it. */
struct dl_job {
    struct edge_calls *k;
    unsigned shard;
    uint64_t outbox_id; /* 0: not kept, nothing to settle */
    /* ENQUEUEs submitted minus completed; below 0 while submitting, as a
     * broker may complete a call inside its submit */
    int pending;
    bool submitting;
    bool failed; /* one not confirmed: left to a later hand-out */
};

static void on_dl_settle_done(struct edge_call *ec)
{
    /* Settles are idempotent. One lost for good costs a second republish
     * after the claim window, DUPLICATE at the targets within their dedup
     * windows. */
    (void)edge_call_retry_unavailable(ec);
}

static void dl_settle(struct edge_calls *k, unsigned shard, uint64_t id)
{
    struct edge_call *ec = edge_call_new(k, NULL, on_dl_settle_done);

    buf_append(&ec->owned, &id, sizeof(id));
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = shard;
    ec->bc.mq.type = MQ_SM_DL_SETTLE;
    ec->bc.mq.tags = (const uint64_t *)(const void *)ec->owned.data;
    ec->bc.mq.n_tags = 1;
    ec->deadline_ms = clock_mono_ms() + EDGE_ENQUEUE_RETRY_MS;
    edge_call_submit(ec);
}

static void dl_job_end(struct dl_job *job)
{
    if (!job->failed && job->outbox_id != 0 && !job->k->closing) {
        dl_settle(job->k, job->shard, job->outbox_id);
    }
    free(job);
}

/* Confirmed: stored, stored before (DUPLICATE), or the queue is gone
 * (RabbitMQ drops a dead letter whose queue went: it is not routed). */
static bool republish_confirmed(const struct edge_call *ec)
{
    enum mq_sm_status st = ec->bc.mq_result.status;

    return ec->bc.status == OUTCOME_OK &&
           (st == MQ_SM_OK || st == MQ_SM_DUPLICATE || st == MQ_SM_NOT_FOUND);
}

static void on_republish_done(struct edge_call *ec)
{
    struct dl_job *job = edge_dead_letter_data(ec);

    /* The same (client, seq) whatever happened before: stored once. One
     * without dedup (not kept, or past the target's window) is not sent
     * again: it could be stored twice. */
    if (ec->bc.mq.seq != 0 && edge_call_retry_unavailable(ec)) {
        return;
    }
    /* Below the target's dedup window for this client: whether an earlier
     * republish is there cannot be known, so a copy without dedup (at
     * least once). */
    if (ec->bc.status == OUTCOME_OK &&
        ec->bc.mq_result.status == MQ_SM_STALE && ec->bc.mq.seq != 0 &&
        !ec->calls->closing) {
        mq_sm_result_clear(&ec->bc.mq_result);
        ec->bc.mq.seq = 0;
        edge_call_retry(ec);
        return;
    }
    if (!republish_confirmed(ec)) {
        log_warn("amqp: dead letter to '%.*s' not republished%s",
                 (int)ec->queue_len, ec->queue,
                 job->outbox_id != 0 ? ": its shard hands it out again"
                                     : " (not kept: lost)");
        job->failed = true;
    }
    if (ec->bc.status == OUTCOME_OK) {
        edge_after_result(ec->calls, ec->bc.shard, &ec->bc.mq_result);
    }
    job->pending--;
    if (!job->submitting && job->pending == 0) {
        dl_job_end(job);
    }
}

/* Republish dead letter @d of @shard's result; settle it once confirmed. */
static void dead_letter(struct edge_calls *k, unsigned shard,
                        const struct mq_sm_dead_letter *d)
{
    const struct amqp_broker *b = &k->broker;
    struct dl_job *job = xcalloc(1, sizeof(*job));
    int sent;

    job->k = k;
    job->shard = shard;
    job->outbox_id = d->outbox_id;
    job->submitting = true;
    sent = edge_dead_letter(k, d, on_republish_done, job);
    job->submitting = false;
    if (sent < 0 || (sent == 0 && b->ops->routable != NULL &&
                     !b->ops->routable(b->self))) {
        /* No view to route on, or one that may be stale: "routes
         * nowhere" is not known. */
        job->failed = true;
    }
    if (sent > 0) {
        job->pending += sent;
    }
    if (job->pending == 0) {
        dl_job_end(job);
    }
}

void edge_after_result(struct edge_calls *k, unsigned shard,
                       const struct mq_sm_result *r)
{
    size_t i;

    if (k->closing) {
        return;
    }
    for (i = 0; i < r->n_dead; i++) {
        dead_letter(k, shard, &r->dead[i]);
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
        edge_after_result(ec->calls, ec->bc.shard, &ec->bc.mq_result);
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
