/*
 * amqp_deliver: consumers, pushed deliveries, delivery records, acks,
 * rejects, nacks, recover and basic.get of a channel (amqp_chan.h).
 *
 * Each consumer with credit keeps one CHECKOUT waiting in its queue's
 * shard; settling uses the broker's "every tag up to N of this channel"
 * form when that is exactly the selection (amqp_channel.c explains why it
 * is safe).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "edge/amqp_chan.h"
#include "proto/amqp_msg.h"

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

static void dl_add(struct amqp_channel *ch, uint64_t tag, uint64_t shard_tag,
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

    if (ec->bc.status == AMQP_BROKER_UNAVAILABLE &&
        clock_mono_ms() < ec->deadline_ms && !ec->srv->closing) {
        /* Settles are idempotent: retry until the broker answers. */
        edge_call_retry(ec);
        return;
    }
    if (ec->bc.status == AMQP_BROKER_OK) {
        edge_after_result(ec->srv, &ec->bc.mq_result);
    }
    op = chan_op_of_call(ec);
    if (op && op->pending == 0) {
        op->done = true;
        chan_pump(op->ch);
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
 * shard tags of @st (sorted here). Never "every tag up to": the shard may hold deliveries for this
 * channel that this edge never received (a CHECKOUT whose reply was lost
 * to a timeout or a partition), and a range would settle those unseen -
 * for an ack, a message gone that no client ever got. */
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
void chan_settle(struct chan_op *op, enum mq_sm_cmd_type type,
                           size_t *sel, size_t n)
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

/* basic.ack / reject / nack / recover: select the records, settle them. */
/* Credit came back: every consumer may ask for more. */
static void chan_arm_all(struct amqp_channel *ch)
{
    struct consumer *cs;

    for (cs = ch->consumers; cs; cs = cs->next) {
        chan_cons_arm(ch, cs);
    }
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
    amqp_conn_note_acks(ch->conn);
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

void chan_op_settle(struct chan_op *op, enum mq_sm_cmd_type type,
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
            return;
        }
    }
    if (type == MQ_SM_SETTLE && !multiple) {
        ack_batch_add(ch, op, dl_find(ch, tag));
        chan_arm_all(ch);
        return;
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
    chan_arm_all(ch);
}

/* ------------------------------------------------------------- deliveries */

void chan_emit_delivery(struct amqp_channel *ch, struct buf *out,
                          const struct amqp_method *m,
                          const struct amqp_msg_view *v)
{
    size_t fm = amqp_conn_frame_max(ch->conn);

    (void)amqp_method_encode(out, ch->num, m, fm);
    (void)amqp_frame_encode(out, AMQP_FRAME_HEADER, ch->num, v->header.data,
                            v->header.len, fm);
    amqp_frame_encode_body(out, ch->num, v->body.data, v->body.len, fm);
}


/* The consumer's CHECKOUT came back: deliver, or give back what nobody can
 * take any more. */
static void on_checkout_done(struct edge_call *ec)
{
    struct amqp_channel *ch = chan_of_call(ec, (uint16_t)ec->index);
    struct consumer *cs = ch ? chan_cons_by_id(ch, ec->consumer) : NULL;
    const struct mq_sm_result *r = &ec->bc.mq_result;
    struct buf *out;
    size_t i;

    if (cs == NULL) {
        if (ec->bc.status == AMQP_BROKER_OK && r->n_deliveries > 0) {
            edge_return_deliveries(ec->srv, ec->bc.shard, &ec->bc.mq.who, r);
        }
        return;
    }
    cs->polling = false;
    if (ec->bc.status != AMQP_BROKER_OK) {
        if (ec->bc.status == AMQP_BROKER_UNAVAILABLE && !ec->srv->closing) {
            /* Leader change or lost answer: ask again shortly. */
            cs->polling = true;
            edge_call_retry(ec);
        }
        return;
    }
    if (r->status != MQ_SM_OK) {
        /* The queue is gone: tell the client (consumer_cancel_notify). */
        struct amqp_method m;
        struct consumer **pp;

        amqp_method_init(&m, AMQP_BASIC_CANCEL);
        m.basic_cancel.consumer_tag.data = (const uint8_t *)cs->tag;
        m.basic_cancel.consumer_tag.len = cs->tag_len;
        m.basic_cancel.no_wait = true;
        (void)amqp_method_encode(amqp_conn_out(ch->conn), ch->num, &m,
                                 amqp_conn_frame_max(ch->conn));
        for (pp = &ch->consumers; *pp; pp = &(*pp)->next) {
            if (*pp == cs) {
                *pp = cs->next;
                break;
            }
        }
        free(cs);
        chan_srv(ch)->stats.consumers--;
        amqp_conn_flush(ch->conn);
        return;
    }
    out = amqp_conn_out(ch->conn);
    for (i = 0; i < r->n_deliveries; i++) {
        const struct mq_sm_delivery *d = &r->deliveries[i];
        struct amqp_msg_view v;
        struct amqp_method m;

        if (amqp_msg_decode(d->body, d->body_len, &v) != 0) {
            log_warn("amqp: undecodable message %" PRIu64 " dropped",
                     d->msg_id);
            memset(&v, 0, sizeof(v));
        }
        amqp_method_init(&m, AMQP_BASIC_DELIVER);
        m.basic_deliver.consumer_tag.data = (const uint8_t *)cs->tag;
        m.basic_deliver.consumer_tag.len = cs->tag_len;
        m.basic_deliver.delivery_tag = ch->next_tag;
        m.basic_deliver.redelivered = d->redelivered;
        m.basic_deliver.exchange = v.exchange;
        m.basic_deliver.routing_key = v.routing_key;
        chan_emit_delivery(ch, out, &m, &v);
        dl_add(ch, ch->next_tag++, d->tag, cs->id, ec->bc.shard);
        cs->unacked++;
        chan_srv(ch)->stats.delivered++;
    }
    if (cs->no_ack && r->n_deliveries > 0) {
        /* Settled as sent: a barrier-free op keeps the settle ordered
         * before a later channel.close. */
        struct chan_op *op = chan_op_new(ch, AMQP_BASIC_ACK, false);
        size_t *sel = xmalloc(r->n_deliveries * sizeof(*sel));
        size_t n = 0;
        size_t k;

        op->started = true;
        for (k = ch->dl_head; k < ch->dl_len; k++) {
            if (!ch->dl[k].done && ch->dl[k].consumer == cs->id &&
                ch->dl[k].tag >= ch->next_tag - r->n_deliveries) {
                sel[n++] = k;
            }
        }
        chan_settle(op, MQ_SM_SETTLE, sel, n);
        free(sel);
        if (op->pending == 0) {
            op->done = true;
        }
    }
    if (r->incomplete) {
        /* Some bodies could not be copied: give the consumer's share back
         * rather than lose it (mq_sm.h). */
        struct mq_sm_who who = ec->bc.mq.who;

        edge_return_everywhere(ec->srv, MQ_SM_SCOPE_CHANNEL, &who);
    }
    amqp_conn_flush(ch->conn);
    if (r->n_deliveries == 0 &&
        clock_mono_ms() - ec->submitted_ms < EDGE_CHECKOUT_WAIT_MS / 2) {
        /* Empty and early: the broker did not hold it (nothing it could
         * give this consumer now). Ask again a little later, never in a
         * loop that spins on the broker. */
        cs->polling = true;
        edge_call_retry(ec);
        chan_pump(ch);
        return;
    }
    chan_cons_arm(ch, cs);
    chan_pump(ch);
}

void chan_cons_arm(struct amqp_channel *ch, struct consumer *cs)
{
    struct edge_call *ec;
    int64_t credit = EDGE_CHECKOUT_MAX;

    if (cs->polling || ch->closing || !ch->flow_active ||
        amqp_conn_dead(ch->conn) || chan_srv(ch)->closing ||
        amqp_conn_out(ch->conn)->len > EDGE_OUT_HIGH) {
        return;
    }
    if (!cs->no_ack) {
        int64_t limit = EDGE_CHECKOUT_MAX;

        if (ch->prefetch > 0 &&
            (int64_t)ch->prefetch - (int64_t)cs->unacked < credit) {
            credit = (int64_t)ch->prefetch - (int64_t)cs->unacked;
            limit = ch->prefetch;
        }
        if (ch->global_prefetch > 0 &&
            (int64_t)ch->global_prefetch - (int64_t)ch->unacked < credit) {
            credit = (int64_t)ch->global_prefetch - (int64_t)ch->unacked;
            limit = ch->global_prefetch;
        }
        /* Every CHECKOUT is a Raft commit: ask again once a good part of
         * the window is free (the consumer still holds the rest to work
         * on), not for each ack, so one commit carries many deliveries.
         * With nothing unacked, at once. */
        if (credit > 0 && credit < limit / 4 && cs->unacked > 0) {
            return;
        }
    }
    if (credit <= 0) {
        return;
    }
    ec = edge_call_new(chan_srv(ch), ch->conn, on_checkout_done);
    ec->chan_uid = ch->uid;
    ec->index = ch->num;
    ec->consumer = cs->id;
    edge_call_set_queue(ec, cs->queue, cs->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = cs->shard;
    ec->bc.mq.type = MQ_SM_CHECKOUT;
    ec->bc.mq.who = chan_who(ch);
    ec->bc.mq.who.consumer = cs->id;
    ec->bc.mq.max_messages = (uint32_t)credit;
    ec->bc.mq.prefetch = cs->no_ack ? 0 : ch->prefetch;
    /* Retries (edge_call_retry) resend this very command: same seq. */
    ec->bc.mq.seq = ++cs->co_seq;
    ec->bc.wait_ms = EDGE_CHECKOUT_WAIT_MS;
    cs->polling = true;
    edge_call_submit(ec);
}

void amqp_channel_kick(struct amqp_channel *ch)
{
    struct consumer *cs;

    for (cs = ch->consumers; cs; cs = cs->next) {
        chan_cons_arm(ch, cs);
    }
}

/* ------------------------------------------------------------ consumers */

static void on_consume_done(struct edge_call *ec)
{
    struct chan_op *op = chan_op_of_call(ec);
    struct amqp_channel *ch;
    struct consumer *cs;
    struct amqp_method m;
    struct amqp_method req;

    if (op == NULL) {
        return;
    }
    op->done = true;
    ch = op->ch;
    if (ec->bc.status != AMQP_BROKER_OK) {
        chan_fail_unavailable(op);
    } else if (ec->bc.mq_result.status != MQ_SM_OK) {
        chan_fail_queue(op, &ec->bc.mq_result);
    } else {
        cs = op->cons;
        op->cons = NULL;
        cs->next = ch->consumers;
        ch->consumers = cs;
        chan_srv(ch)->stats.consumers++;
        if (amqp_method_decode(op->payload.data, op->payload.len, &req) ==
            0) {
            if (!req.basic_consume.no_wait) {
                amqp_method_init(&m, AMQP_BASIC_CONSUME_OK);
                m.basic_consume_ok.consumer_tag.data =
                    (const uint8_t *)cs->tag;
                m.basic_consume_ok.consumer_tag.len = cs->tag_len;
                chan_op_reply(op, &m);
            }
            amqp_method_free(&req);
        }
        /* consume-ok must precede the first delivery: arm after the reply
         * leaves (chan_pump flushes it first). */
        ch->pump_again = true;
    }
    chan_pump(ch);
}

static struct consumer *cons_by_tag(struct amqp_channel *ch,
                                    struct amqp_bytes tag)
{
    struct consumer *cs;

    for (cs = ch->consumers; cs; cs = cs->next) {
        if (cs->tag_len == tag.len && memcmp(cs->tag, tag.data, tag.len) == 0) {
            return cs;
        }
    }
    return NULL;
}

void chan_start_consume(struct chan_op *op, const struct amqp_basic_consume *c)
{
    struct amqp_channel *ch = op->ch;
    struct consumer *cs;
    struct edge_call *ec;

    if (!chan_op_queue_name(op, c->queue)) {
        return;
    }
    if (c->consumer_tag.len > 0 && cons_by_tag(ch, c->consumer_tag)) {
        chan_op_fail(op, 530, "NOT_ALLOWED - attempt to reuse consumer tag '%.*s'",
                (int)c->consumer_tag.len,
                (const char *)c->consumer_tag.data);
        return;
    }
    cs = xcalloc(1, sizeof(*cs));
    if (c->consumer_tag.len > 0) {
        memcpy(cs->tag, c->consumer_tag.data, c->consumer_tag.len);
        cs->tag_len = c->consumer_tag.len;
    } else {
        chan_gen_name(cs->tag, &cs->tag_len, "amq.ctag-");
    }
    memcpy(cs->queue, op->queue, op->queue_len);
    cs->queue_len = op->queue_len;
    cs->shard = chan_shard_of(ch, op->queue, op->queue_len);
    cs->id = edge_new_consumer_id(chan_srv(ch));
    cs->no_ack = c->no_ack;
    op->cons = cs;
    ec = chan_op_call(op, on_consume_done);
    edge_call_set_queue(ec, op->queue, op->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = cs->shard;
    ec->bc.mq.type = MQ_SM_CONSUME;
    ec->bc.mq.who.consumer = cs->id;
    ec->bc.mq.exclusive = c->exclusive;
    edge_call_submit(ec);
}

static void on_cancel_done(struct edge_call *ec)
{
    struct chan_op *op = chan_op_of_call(ec);

    if (ec->bc.status == AMQP_BROKER_OK) {
        edge_after_result(ec->srv, &ec->bc.mq_result);
    }
    if (op == NULL) {
        return;
    }
    /* A lost CANCEL is covered by the channel's RETURN when it closes. */
    op->done = true;
    chan_pump(op->ch);
}

void chan_start_cancel(struct chan_op *op, const struct amqp_basic_cancel *c)
{
    struct amqp_channel *ch = op->ch;
    struct consumer *cs = cons_by_tag(ch, c->consumer_tag);
    struct consumer **pp;
    struct edge_call *ec;

    if (!c->no_wait) {
        struct amqp_method m;

        amqp_method_init(&m, AMQP_BASIC_CANCEL_OK);
        m.basic_cancel_ok.consumer_tag = c->consumer_tag;
        chan_op_reply(op, &m);
    }
    if (cs == NULL) {
        op->done = true; /* RabbitMQ answers cancel-ok for unknown tags */
        return;
    }
    for (pp = &ch->consumers; *pp; pp = &(*pp)->next) {
        if (*pp == cs) {
            *pp = cs->next;
            break;
        }
    }
    chan_srv(ch)->stats.consumers--;
    ec = chan_op_call(op, on_cancel_done);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = cs->shard;
    ec->bc.mq.type = MQ_SM_CANCEL;
    ec->bc.mq.who.consumer = cs->id;
    free(cs);
    edge_call_submit(ec);
}

static void on_get_done(struct edge_call *ec)
{
    struct chan_op *op = chan_op_of_call(ec);
    struct amqp_channel *ch;
    const struct mq_sm_result *r = &ec->bc.mq_result;
    struct amqp_method req;

    if (op == NULL) {
        if (ec->bc.status == AMQP_BROKER_OK && r->n_deliveries > 0) {
            edge_return_deliveries(ec->srv, ec->bc.shard, &ec->bc.mq.who, r);
        }
        return;
    }
    op->done = true;
    ch = op->ch;
    if (ec->bc.status != AMQP_BROKER_OK) {
        chan_fail_unavailable(op);
    } else if (r->status != MQ_SM_OK) {
        chan_fail_queue(op, r);
    } else if (r->n_deliveries == 0) {
        chan_op_reply_simple(op, AMQP_BASIC_GET_EMPTY);
    } else if (amqp_method_decode(op->payload.data, op->payload.len, &req) ==
               0) {
        const struct mq_sm_delivery *d = &r->deliveries[0];
        struct amqp_msg_view v;
        struct amqp_method m;

        if (amqp_msg_decode(d->body, d->body_len, &v) != 0) {
            memset(&v, 0, sizeof(v));
        }
        amqp_method_init(&m, AMQP_BASIC_GET_OK);
        m.basic_get_ok.delivery_tag = ch->next_tag;
        m.basic_get_ok.redelivered = d->redelivered;
        m.basic_get_ok.exchange = v.exchange;
        m.basic_get_ok.routing_key = v.routing_key;
        m.basic_get_ok.message_count = r->message_count > UINT32_MAX
                                           ? UINT32_MAX
                                           : (uint32_t)r->message_count;
        chan_emit_delivery(ch, &op->out, &m, &v);
        dl_add(ch, ch->next_tag++, d->tag, ch->get_id, ec->bc.shard);
        chan_srv(ch)->stats.delivered++;
        if (req.basic_get.no_ack) {
            size_t sel = ch->dl_len - 1;

            chan_settle(op, MQ_SM_SETTLE, &sel, 1);
            op->done = op->pending == 0;
        }
        amqp_method_free(&req);
    }
    chan_pump(ch);
}

void chan_start_get(struct chan_op *op, const struct amqp_basic_get *g)
{
    struct edge_call *ec;

    if (!chan_op_queue_name(op, g->queue)) {
        return;
    }
    ec = chan_op_call(op, on_get_done);
    edge_call_set_queue(ec, op->queue, op->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = chan_shard_of(op->ch, op->queue, op->queue_len);
    ec->bc.mq.type = MQ_SM_CHECKOUT;
    ec->bc.mq.who.consumer = op->ch->get_id;
    ec->bc.mq.max_messages = 1;
    edge_call_submit(ec);
}
