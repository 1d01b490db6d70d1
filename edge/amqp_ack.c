/*
 * amqp_ack: a channel's delivery records and settling them: basic.ack,
 * reject, nack and recover, batched acks, and the settles of no-ack
 * deliveries; contract in amqp_ack.h.
 *
 * Settling names exactly the shard tags of the records, one command per
 * shard (per SETTLE_CHUNK tags): see settle_exact().
 */
#include "edge/amqp_ack.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "edge/amqp_after.h"
#include "edge/amqp_edge.h"
#include "edge/amqp_op.h"

/* ------------------------------------------------------ delivery records */

static struct delivery *dl_find(struct amqp_channel *ch, uint64_t tag)
{
    size_t lo = ch->dl_head;
    size_t hi = ch->dl_len;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (ch->dl[mid].tag < tag) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < ch->dl_len && ch->dl[lo].tag == tag && !ch->dl[lo].done) {
        return &ch->dl[lo];
    }
    return NULL;
}

void chan_dl_add(struct amqp_channel *ch, uint64_t tag, uint64_t shard_tag,
                 uint64_t consumer, unsigned shard)
{
    struct delivery *d;

    if (ch->dl_len == ch->dl_cap) {
        if (ch->dl_head > 0) {
            memmove(ch->dl, ch->dl + ch->dl_head,
                    (ch->dl_len - ch->dl_head) * sizeof(*ch->dl));
            ch->dl_len -= ch->dl_head;
            ch->dl_head = 0;
        }
        if (ch->dl_len == ch->dl_cap) {
            ch->dl_cap = ch->dl_cap ? ch->dl_cap * 2 : 64;
            ch->dl = xrealloc(ch->dl, ch->dl_cap * sizeof(*ch->dl));
        }
    }
    d = &ch->dl[ch->dl_len++];
    d->tag = tag;
    d->shard_tag = shard_tag;
    d->consumer = consumer;
    d->shard = shard;
    d->done = false;
    ch->unacked++;
}

struct consumer *chan_cons_by_id(struct amqp_channel *ch, uint64_t id)
{
    struct consumer *cs;

    for (cs = ch->consumers; cs; cs = cs->next) {
        if (cs->id == id) {
            return cs;
        }
    }
    return NULL;
}

static void dl_mark_done(struct amqp_channel *ch, struct delivery *d)
{
    struct consumer *cs = chan_cons_by_id(ch, d->consumer);

    d->done = true;
    ch->unacked--;
    if (cs && cs->unacked > 0) {
        cs->unacked--;
    }
    while (ch->dl_head < ch->dl_len && ch->dl[ch->dl_head].done) {
        ch->dl_head++;
    }
    if (ch->dl_head == ch->dl_len) {
        ch->dl_head = ch->dl_len = 0;
    }
}

static void on_settle_done(struct edge_call *ec)
{
    struct chan_op *op;

    if (edge_call_retry_unavailable(ec)) {
        return; /* settles are idempotent */
    }
    if (ec->bc.status == OUTCOME_OK) {
        edge_after_result(ec->calls, ec->bc.shard, &ec->bc.mq_result);
    } else if ((ec->bc.status == OUTCOME_UNAVAILABLE ||
                ec->bc.status == OUTCOME_BUSY) &&
               !ec->calls->closing) {
        /* the op stops waiting; the settle goes on without it */
        edge_settle_detached(ec->calls, &ec->bc);
    }
    op = chan_op_of_call(ec);
    if (op && op->pending == 0) {
        op->done = true;
        chan_wake(op->ch);
    }
}

struct shard_tag {
    unsigned shard;
    uint64_t tag;
};

static int by_shard(const void *a, const void *b)
{
    const struct shard_tag *x = a;
    const struct shard_tag *y = b;

    if (x->shard != y->shard) {
        return x->shard < y->shard ? -1 : 1;
    }
    return x->tag < y->tag ? -1 : x->tag > y->tag;
}

/* Tags in one settle command: a multiple ack of a huge unacked window goes
 * as several (mq_sm takes at most MQ_SM_MAX_TAGS). */
#define SETTLE_CHUNK 4096

/* One broker command per shard (per SETTLE_CHUNK tags) naming exactly the
 * shard tags of @st (sorted here). Never "every tag up to": the shard may
 * hold deliveries for this channel that this edge never received (a
 * CHECKOUT whose reply was lost to a timeout or a partition), and a range
 * would settle those unseen - for an ack, a message gone that no client
 * ever got. */
static void settle_exact(struct chan_op *op, enum mq_sm_cmd_type type,
                         struct shard_tag *st, size_t n)
{
    size_t i = 0;

    qsort(st, n, sizeof(*st), by_shard);
    while (i < n) {
        struct edge_call *ec = chan_op_call(op, on_settle_done);
        size_t j = i;

        while (j < n && st[j].shard == st[i].shard && j - i < SETTLE_CHUNK) {
            j++;
        }
        ec->bc.kind = AMQP_BROKER_MQ;
        ec->bc.shard = st[i].shard;
        ec->bc.mq.type = type;
        ec->bc.mq.scope = MQ_SM_SCOPE_TAG;
        if (j - i == 1) {
            ec->bc.mq.tag = st[i].tag;
        } else {
            uint64_t *tags = xmalloc((j - i) * sizeof(*tags));
            size_t k;

            for (k = i; k < j; k++) {
                tags[k - i] = st[k].tag;
            }
            ec->extra = tags; /* freed with the call */
            ec->bc.mq.tags = tags;
            ec->bc.mq.n_tags = j - i;
        }
        ec->deadline_ms = clock_mono_ms() + EDGE_ENQUEUE_RETRY_MS;
        edge_call_submit(ec);
        i = j;
    }
}

/* Settle (SETTLE, RETURN or DROP) the records marked in @sel (indexes into
 * ch->dl), one broker command per shard. Marks them done. */
void chan_settle(struct chan_op *op, enum mq_sm_cmd_type type, size_t *sel,
                 size_t n)
{
    struct amqp_channel *ch = op->ch;
    struct shard_tag *st = xmalloc((n + 1) * sizeof(*st));
    size_t m = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        struct delivery *d = &ch->dl[sel[i]];

        if (!d->done) {
            st[m].shard = d->shard;
            st[m++].tag = d->shard_tag;
            dl_mark_done(ch, d);
        }
    }
    /* Held while submitting: a call completing at once must not see the op
     * finished (and flushed) before its siblings are submitted. */
    op->pending++;
    settle_exact(op, type, st, m);
    op->pending--;
    free(st);
}

/* A client acks one message at a time but many per read: those of one read
 * go as one SETTLE per shard when exact. The record is done now (credit
 * returns, a second ack of it is 406 as in RabbitMQ); the last ack op of
 * the batch is held until the batch is sent, so a later barrier (a
 * channel.close) cannot overtake it. */
static void ack_batch_add(struct amqp_channel *ch, struct chan_op *op,
                          struct delivery *d)
{
    if (ch->ack_n == ch->ack_cap) {
        ch->ack_cap = ch->ack_cap ? 2 * ch->ack_cap : 64;
        ch->ack_batch =
            xrealloc(ch->ack_batch, ch->ack_cap * sizeof(*ch->ack_batch));
    }
    ch->ack_batch[ch->ack_n++] = *d;
    dl_mark_done(ch, d);
    if (ch->ack_op != op) {
        struct chan_op *prev = ch->ack_op;

        if (prev != NULL && --prev->pending == 0) {
            prev->done = true;
        }
        ch->ack_op = op;
        op->pending++;
    }
    ch->conn->ops->note_acks(ch->conn);
}

void chan_flush_acks(struct amqp_channel *ch)
{
    struct chan_op *op = ch->ack_op;
    struct shard_tag *st;
    size_t i;

    if (op == NULL) {
        return;
    }
    ch->ack_op = NULL;
    st = xmalloc((ch->ack_n + 1) * sizeof(*st));
    for (i = 0; i < ch->ack_n; i++) {
        st[i].shard = ch->ack_batch[i].shard;
        st[i].tag = ch->ack_batch[i].shard_tag;
    }
    settle_exact(op, MQ_SM_SETTLE, st, ch->ack_n);
    free(st);
    ch->ack_n = 0;
    if (--op->pending == 0) {
        op->done = true;
    }
}

bool chan_op_settle(struct chan_op *op, enum mq_sm_cmd_type type,
                    uint64_t tag, bool multiple)
{
    struct amqp_channel *ch = op->ch;
    size_t *sel;
    size_t n = 0;
    size_t k;

    if (!multiple || tag != 0) {
        if (dl_find(ch, tag) == NULL) {
            chan_op_fail(op, 406, "PRECONDITION_FAILED - unknown delivery tag %" PRIu64,
                    tag);
            return false;
        }
    }
    if (type == MQ_SM_SETTLE && !multiple) {
        ack_batch_add(ch, op, dl_find(ch, tag));
        return true;
    }
    sel = xmalloc((ch->dl_len - ch->dl_head + 1) * sizeof(*sel));
    for (k = ch->dl_head; k < ch->dl_len; k++) {
        const struct delivery *d = &ch->dl[k];

        if (d->done) {
            continue;
        }
        if (multiple ? (tag == 0 || d->tag <= tag) : d->tag == tag) {
            sel[n++] = k;
        }
    }
    chan_settle(op, type, sel, n);
    free(sel);
    if (op->pending == 0) {
        op->done = true;
    }
    return true;
}
