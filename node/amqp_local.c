/*
 * amqp_local: see amqp_local.h.
 *
 *   edge -> amqp_broker_call -> submit -> wrapper {mq_svc_call | meta_svc_call}
 *        -> mq_svc / meta_svc -> wrapper cb -> status mapped, result moved
 *        -> call->cb
 */
#include "node/amqp_local.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"

/* A QUEUE_GONE still to be applied to the meta group. */
struct gone {
    struct gone *next;
    size_t vhost_len;
    size_t queue_len;
    char name[]; /* vhost then queue */
};

struct amqp_local {
    struct mq_svc *shards[AMQP_LOCAL_MAX_SHARDS];
    unsigned n_shards;
    struct meta_svc *meta;
    bool closing;
    struct gone *gone;      /* waiting to be submitted */
    unsigned gone_inflight; /* our own meta calls in flight */
    struct watermark *watermark; /* borrowed, or NULL */
};

struct mq_wrap {
    struct mq_svc_call call;
    struct amqp_broker_call *bc;
};

struct meta_wrap {
    struct meta_svc_call call;
    struct amqp_broker_call *bc;
};

struct gone_wrap {
    struct meta_svc_call call;
    struct amqp_local *l;
    struct gone *g;
};

/* ------------------------------------------------------- QUEUE_GONE */

static void gone_flush(struct amqp_local *l);

static void gone_done(struct meta_svc_call *call)
{
    struct gone_wrap *w = call->data;
    struct amqp_local *l = w->l;

    l->gone_inflight--;
    if (call->status == OUTCOME_OK || l->closing) {
        free(w->g);
    } else {
        /* not applied (yet): retry on a later submit */
        w->g->next = l->gone;
        l->gone = w->g;
    }
    free(w);
    if (l->closing && l->gone_inflight == 0) {
        while (l->gone != NULL) {
            struct gone *g = l->gone;

            l->gone = g->next;
            free(g);
        }
        free(l);
    }
}

static void gone_flush(struct amqp_local *l)
{
    struct gone *list;

    if (l->gone == NULL || l->meta == NULL ||
        !meta_svc_is_leader(l->meta)) {
        return;
    }
    list = l->gone;
    l->gone = NULL;
    while (list != NULL) {
        struct gone_wrap *w = xcalloc(1, sizeof(*w));

        w->l = l;
        w->g = list;
        list = list->next;
        w->g->next = NULL;
        w->call.cmd.type = META_SM_QUEUE_GONE;
        w->call.cmd.vhost = w->g->name;
        w->call.cmd.vhost_len = w->g->vhost_len;
        w->call.cmd.dest = w->g->name + w->g->vhost_len;
        w->call.cmd.dest_len = w->g->queue_len;
        w->call.cb = gone_done;
        w->call.data = w;
        l->gone_inflight++;
        meta_svc_submit(l->meta, &w->call);
    }
}

void amqp_local_on_internal(void *data, const struct mq_sm_cmd *cmd,
                            const struct mq_sm_result *res)
{
    struct amqp_local *l = data;
    size_t i;

    (void)cmd;
    if (l->closing) {
        return;
    }
    for (i = 0; i < res->n_deleted; i++) {
        const struct mq_sm_deleted *d = &res->deleted[i];
        struct gone *g;

        if (d->reason == MQ_SM_DEL_MOVED) {
            continue; /* lives on at another shard: bindings stay */
        }
        g = xmalloc(sizeof(*g) + d->vhost_len + d->queue_len + 1);

        g->vhost_len = d->vhost_len;
        g->queue_len = d->queue_len;
        memcpy(g->name, d->vhost, d->vhost_len);
        memcpy(g->name + d->vhost_len, d->queue, d->queue_len);
        g->next = l->gone;
        l->gone = g;
    }
    gone_flush(l);
}

/* ------------------------------------------------------------ broker */

/* The broker contract knows applied, closing, busy (never proposed,
 * retried with a growing backoff) and "not applied or unknown"
 * (amqp_broker.h): a standalone node's groups never have another leader
 * to redirect to. */
static enum outcome map_outcome(enum outcome c)
{
    switch (c) {
        case OUTCOME_OK:
        case OUTCOME_CLOSING:
        case OUTCOME_BUSY:
            return c;
        default:
            return OUTCOME_UNAVAILABLE;
    }
}

static void finish(struct amqp_broker_call *bc, enum outcome st)
{
    bc->status = st;
    bc->cb(bc);
}

static void mq_done(struct mq_svc_call *call)
{
    struct mq_wrap *w = call->data;
    struct amqp_broker_call *bc = w->bc;
    enum outcome st = map_outcome(call->status);

    /* moved: the edge owns and clears it */
    bc->mq_result = call->result;
    if (st != OUTCOME_OK) {
        mq_sm_result_clear(&bc->mq_result);
    }
    free(w);
    finish(bc, st);
}

static void meta_done(struct meta_svc_call *call)
{
    struct meta_wrap *w = call->data;
    struct amqp_broker_call *bc = w->bc;
    enum outcome st = map_outcome(call->status);

    bc->meta_result = call->result;
    free(w); /* @call lives in w */
    finish(bc, st);
}

static unsigned op_shard_count(void *self)
{
    struct amqp_local *l = self;

    return l->n_shards;
}

static unsigned op_shard_of(void *self, const char *vhost, size_t vhost_len,
                            const char *queue, size_t queue_len)
{
    struct amqp_local *l = self;
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;

    if (l->n_shards <= 1) {
        return 0;
    }
    /* FNV-1a over vhost, a separator, queue: stable across restarts, which
     * is all a standalone node needs (its shard count is fixed). */
    for (i = 0; i < vhost_len; i++) {
        h = (h ^ (unsigned char)vhost[i]) * 0x100000001b3ULL;
    }
    h = (h ^ 0xffu) * 0x100000001b3ULL;
    for (i = 0; i < queue_len; i++) {
        h = (h ^ (unsigned char)queue[i]) * 0x100000001b3ULL;
    }
    return (unsigned)(h % l->n_shards);
}

static void op_submit(void *self, struct amqp_broker_call *bc)
{
    struct amqp_local *l = self;

    mq_sm_result_init(&bc->mq_result);
    memset(&bc->meta_result, 0, sizeof(bc->meta_result));
    bc->meta_result.reply_text = "";
    if (l->closing) {
        finish(bc, OUTCOME_CLOSING);
        return;
    }
    gone_flush(l);
    if (bc->kind == AMQP_BROKER_META) {
        struct meta_wrap *w;

        if (l->meta == NULL) {
            finish(bc, OUTCOME_UNAVAILABLE);
            return;
        }
        w = xcalloc(1, sizeof(*w));
        w->bc = bc;
        w->call.cmd = bc->meta;
        w->call.cb = meta_done;
        w->call.data = w;
        meta_svc_submit(l->meta, &w->call);
        return;
    }
    if (bc->kind != AMQP_BROKER_MQ || bc->shard >= l->n_shards) {
        finish(bc, OUTCOME_UNAVAILABLE);
        return;
    }
    {
        struct mq_svc *svc = l->shards[bc->shard];
        struct mq_wrap *w;

        if (!mq_svc_ready(svc)) {
            /* before the era command (BOOT) applied: refuse rather than
             * queue behind it, the edge retries */
            finish(bc, OUTCOME_UNAVAILABLE);
            return;
        }
        w = xcalloc(1, sizeof(*w));
        w->bc = bc;
        w->call.cmd = bc->mq;
        w->call.wait_ms = bc->wait_ms;
        w->call.cb = mq_done;
        w->call.data = w;
        mq_svc_submit(svc, &w->call);
    }
}

static const struct meta_sm *op_meta_view(void *self)
{
    struct amqp_local *l = self;

    return l->meta != NULL ? meta_svc_sm(l->meta) : NULL;
}

static bool op_should_block(void *self)
{
    struct amqp_local *l = self;

    return l->watermark != NULL &&
           watermark_exceeded(l->watermark, clock_mono_ms());
}

static bool op_ready(void *self)
{
    return amqp_local_ready(self);
}

static const struct amqp_broker_ops local_ops = {
    .shard_count = op_shard_count,
    .shard_of = op_shard_of,
    .submit = op_submit,
    .meta_view = op_meta_view,
    .should_block = op_should_block,
    .ready = op_ready,
};

/* ---------------------------------------------------------------- API */

void amqp_local_set_watermark(struct amqp_local *l, struct watermark *w)
{
    l->watermark = w;
}

struct amqp_local *amqp_local_new(void)
{
    return xcalloc(1, sizeof(struct amqp_local));
}

int amqp_local_attach(struct amqp_local *l, struct mq_svc *const *shards,
                      unsigned n, struct meta_svc *meta)
{
    unsigned i;

    if (n == 0 || n > AMQP_LOCAL_MAX_SHARDS) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        l->shards[i] = shards[i];
        mq_svc_set_on_internal(shards[i], amqp_local_on_internal, l);
    }
    l->n_shards = n;
    l->meta = meta;
    return 0;
}

void amqp_local_broker(struct amqp_local *l, struct amqp_broker *out)
{
    out->ops = &local_ops;
    out->self = l;
}

bool amqp_local_ready(struct amqp_local *l)
{
    unsigned i;

    if (l->n_shards == 0 || l->meta == NULL || !meta_svc_is_leader(l->meta)) {
        return false;
    }
    for (i = 0; i < l->n_shards; i++) {
        if (!mq_svc_ready(l->shards[i])) {
            return false;
        }
    }
    return true;
}

void amqp_local_close(struct amqp_local *l)
{
    unsigned i;

    l->closing = true;
    for (i = 0; i < l->n_shards; i++) {
        mq_svc_set_on_internal(l->shards[i], NULL, NULL);
    }
    while (l->gone != NULL) {
        struct gone *g = l->gone;

        l->gone = g->next;
        free(g);
    }
    if (l->gone_inflight == 0) {
        free(l);
    }
}
