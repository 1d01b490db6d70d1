/*
 * amqp_deliver: a channel's consumers (basic.consume, basic.cancel), the
 * deliveries pushed to them, and basic.get; contract in amqp_deliver.h.
 *
 * Each consumer with credit keeps CHECKOUTs on their way to its queue's
 * shard: while the queue has messages for it, up to FETCHES_MAX, each
 * asking for part of its window (wait_ms 0: answered at once); once an
 * answer brings less than it asked (the queue ran dry), one alone that
 * waits in the shard until messages come (a long poll). Answers are
 * delivered in the order the CHECKOUTs were sent. The records of what was
 * delivered and their settling are amqp_ack.c's.
 */
#include "edge/amqp_deliver.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "edge/amqp_ack.h"
#include "edge/amqp_after.h"
#include "edge/amqp_config.h"
#include "edge/amqp_edge.h"
#include "edge/amqp_fail.h"
#include "edge/amqp_op.h"
#include "proto/amqp_msg.h"

/* ------------------------------------------------------------- deliveries */

/* The CHECKOUT of a consumer that went (cancel, channel closed) came back
 * with its outcome unknown. If it was applied, what it delivered is checked
 * out to the channel and no client will see it: a new leader keeps
 * deliveries (sm/mq_sm.h, ERA). Ask again with the same seq for nothing
 * new (no credit, no wait): a retry is answered with what that CHECKOUT
 * delivered and is still out, which on_checkout_done() gives back; one
 * that was never applied takes nothing. */
static void recover_orphan_checkout(struct edge_call *ec)
{
    if (ec->bc.status != OUTCOME_UNAVAILABLE || ec->bc.mq.seq == 0) {
        return;
    }
    if (ec->bc.mq.max_messages > 0) {
        ec->bc.mq.max_messages = 0;
        ec->bc.wait_ms = 0;
        ec->deadline_ms = clock_mono_ms() + EDGE_ENQUEUE_RETRY_MS;
    }
    (void)edge_call_retry_unavailable(ec);
}

/* Deliver what fetch @f of @cs brought: basic.deliver each, in order,
 * with the channel's next tags. */
static void cons_deliver(struct amqp_channel *ch, struct consumer *cs,
                         const struct cons_fetch *f)
{
    const struct mq_sm_result *r = &f->res;
    struct buf *out = chan_out(ch);
    size_t i;

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
        chan_dl_add(ch, ch->next_tag++, d->tag, cs->id, f->shard);
        cs->unacked++;
        ch->conn->stats->delivered++;
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
        struct mq_sm_who who = f->who;

        edge_return_everywhere(ch->conn->calls, MQ_SM_SCOPE_CHANNEL, &who);
    }
}

static struct cons_fetch *fetch_find(const struct consumer *cs, uint64_t seq)
{
    struct cons_fetch *f;

    for (f = cs->fetches; f != NULL; f = f->next) {
        if (f->seq == seq) {
            return f;
        }
    }
    return NULL;
}

static void fetch_unlink(struct consumer *cs, struct cons_fetch *f)
{
    struct cons_fetch **pp;

    for (pp = &cs->fetches; *pp != f; pp = &(*pp)->next) {
        assert(*pp != NULL);
    }
    *pp = f->next;
    assert(cs->n_fetches > 0 && cs->asked >= f->asked);
    cs->n_fetches--;
    cs->asked -= f->asked;
}

/* Deliver the answered fetches at the head of @cs's, oldest first: a
 * later CHECKOUT's answer that came back first (an earlier one was lost
 * and is being retried) waits for the earlier one's, so the consumer sees
 * the queue's order. Then ask for more if @ask. */
static void cons_drain(struct amqp_channel *ch, struct consumer *cs,
                       bool ask)
{
    uint64_t id = cs->id;
    struct cons_fetch *f;

    while (cs != NULL && (f = cs->fetches) != NULL && f->answered) {
        fetch_unlink(cs, f);
        cs->dry = f->res.n_deliveries < f->asked;
        cons_deliver(ch, cs, f);
        mq_sm_result_clear(&f->res);
        free(f);
        /* settling no-ack deliveries may have completed other calls */
        cs = chan_cons_by_id(ch, id);
    }
    chan_flush(ch);
    if (cs != NULL && ask) {
        chan_cons_arm(ch, cs);
    }
    chan_wake(ch);
}

void chan_cons_free(struct amqp_channel *ch, struct consumer *cs)
{
    while (cs->fetches != NULL) {
        struct cons_fetch *f = cs->fetches;

        cs->fetches = f->next;
        if (f->answered && f->res.n_deliveries > 0) {
            edge_return_deliveries(ch->conn->calls, f->shard, &f->who,
                                   &f->res);
        }
        mq_sm_result_clear(&f->res);
        free(f);
    }
    free(cs);
}

/* @cs's queue is gone: tell the client (consumer_cancel_notify). */
static void cons_queue_gone(struct amqp_channel *ch, struct consumer *cs)
{
    struct amqp_method m;
    struct consumer **pp;

    amqp_method_init(&m, AMQP_BASIC_CANCEL);
    m.basic_cancel.consumer_tag.data = (const uint8_t *)cs->tag;
    m.basic_cancel.consumer_tag.len = cs->tag_len;
    m.basic_cancel.no_wait = true;
    (void)amqp_method_encode(chan_out(ch), ch->num, &m, chan_frame_max(ch));
    for (pp = &ch->consumers; *pp; pp = &(*pp)->next) {
        if (*pp == cs) {
            *pp = cs->next;
            break;
        }
    }
    chan_cons_free(ch, cs);
    ch->conn->stats->consumers--;
    chan_flush(ch);
}

/* One of the consumer's CHECKOUTs came back: deliver (in order), or give
 * back what nobody can take any more. */
static void on_checkout_done(struct edge_call *ec)
{
    struct amqp_channel *ch = chan_of_call(ec, (uint16_t)ec->index);
    struct consumer *cs = ch ? chan_cons_by_id(ch, ec->consumer) : NULL;
    struct cons_fetch *f = cs ? fetch_find(cs, ec->bc.mq.seq) : NULL;
    const struct mq_sm_result *r = &ec->bc.mq_result;

    if (f == NULL) {
        if (ec->bc.status == OUTCOME_OK && r->n_deliveries > 0) {
            edge_return_deliveries(ec->calls, ec->bc.shard, &ec->bc.mq.who, r);
        } else {
            recover_orphan_checkout(ec);
        }
        return;
    }
    assert(!f->answered);
    if (ec->bc.status != OUTCOME_OK) {
        if ((ec->bc.status == OUTCOME_UNAVAILABLE ||
             ec->bc.status == OUTCOME_BUSY) &&
            !ec->calls->closing) {
            /* Leader change, lost answer, or a busy shard: ask again
             * shortly, with the same seq (later answers wait for it). */
            edge_call_retry(ec);
            return;
        }
        /* The broker or the edge is closing: ask no more (a CHECKOUT
         * would come back CLOSING at once, again and again); deliver what
         * waited for this one. */
        fetch_unlink(cs, f);
        free(f);
        if (cs->fetches != NULL && cs->fetches->answered) {
            cons_drain(ch, cs, false);
        }
        return;
    }
    if (r->status != MQ_SM_OK) {
        cons_queue_gone(ch, cs);
        return;
    }
    if (f->waiting && r->n_deliveries == 0 &&
        clock_mono_ms() - ec->submitted_ms < EDGE_CHECKOUT_WAIT_MS / 2) {
        /* Empty and early: the broker did not hold it (nothing it could
         * give this consumer now, or a retry with nothing left). Ask
         * again a little later, never in a loop that spins on the broker,
         * with a new seq: one whose answer is known is not held
         * (node/mq_svc.c), and this one holds nothing. A long poll is
         * its consumer's only CHECKOUT: the order stays. */
        assert(cs->fetches == f && f->next == NULL);
        f->seq = ++cs->co_seq;
        ec->bc.mq.seq = f->seq;
        edge_call_retry(ec);
        chan_wake(ch);
        return;
    }
    /* Held by the fetch until delivered (cons_drain()). */
    f->res = ec->bc.mq_result;
    mq_sm_result_init(&ec->bc.mq_result);
    f->answered = true;
    f->shard = ec->bc.shard;
    f->who = ec->bc.mq.who;
    cons_drain(ch, cs, true);
}

/* CHECKOUTs a consumer keeps on their way while its queue has messages
 * for it. Each is a Raft commit: with one at a time a consumer gets at
 * most one batch per commit round trip, and trails its publishers once
 * they publish faster than that. */
#define FETCHES_MAX 4

/* What @ch's consumers' CHECKOUTs on their way ask for. */
static int64_t chan_asked(const struct amqp_channel *ch)
{
    const struct consumer *cs;
    int64_t n = 0;

    for (cs = ch->consumers; cs; cs = cs->next) {
        n += cs->asked;
    }
    return n;
}

/* How many more messages @cs may be sent beyond what its CHECKOUTs on
 * their way ask for, and in @window the window that bounds it: its
 * prefetch, the channel's, or (none, or no-ack) FETCHES_MAX full
 * CHECKOUTs on their way. */
static int64_t cons_room(const struct amqp_channel *ch,
                         const struct consumer *cs, int64_t *window)
{
    int64_t w = (int64_t)EDGE_CHECKOUT_MAX * FETCHES_MAX;
    int64_t room = w - cs->asked;

    if (!cs->no_ack) {
        if (ch->prefetch > 0 && (int64_t)ch->prefetch - cs->unacked -
                                        cs->asked < room) {
            room = (int64_t)ch->prefetch - cs->unacked - cs->asked;
            w = ch->prefetch;
        }
        if (ch->global_prefetch > 0 &&
            (int64_t)ch->global_prefetch - ch->unacked - chan_asked(ch) <
                room) {
            room = (int64_t)ch->global_prefetch - ch->unacked -
                   chan_asked(ch);
            w = ch->global_prefetch;
        }
    }
    *window = w;
    return room;
}

/* Send @cs a CHECKOUT for @n messages: a long poll when its queue ran
 * dry. */
static void fetch_submit(struct amqp_channel *ch, struct consumer *cs,
                         uint32_t n)
{
    struct cons_fetch *f = xcalloc(1, sizeof(*f));
    struct cons_fetch **pp;
    struct edge_call *ec;

    f->seq = ++cs->co_seq;
    f->asked = n;
    f->waiting = cs->dry;
    mq_sm_result_init(&f->res);
    for (pp = &cs->fetches; *pp != NULL; pp = &(*pp)->next) {
    }
    *pp = f;
    cs->n_fetches++;
    cs->asked += n;
    ec = edge_call_new(ch->conn->calls, &ch->conn->ref, on_checkout_done);
    ec->chan_uid = ch->uid;
    ec->index = ch->num;
    ec->consumer = cs->id;
    edge_call_set_queue(ec, cs->queue, cs->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = cs->shard;
    ec->bc.mq.type = MQ_SM_CHECKOUT;
    ec->bc.mq.who = chan_who(ch);
    ec->bc.mq.who.consumer = cs->id;
    ec->bc.mq.max_messages = n;
    ec->bc.mq.prefetch = cs->no_ack ? 0 : ch->prefetch;
    /* Retries (edge_call_retry) resend this very command: same seq. */
    ec->bc.mq.seq = f->seq;
    /* Only a CHECKOUT alone waits in the broker: one parked there while
     * a later one of the consumer is applied could only ever be answered
     * as a stale retry (mq_sm.h, CHECKOUT seq). */
    ec->bc.wait_ms = f->waiting ? EDGE_CHECKOUT_WAIT_MS : 0;
    edge_call_submit(ec);
}

void chan_cons_arm(struct amqp_channel *ch, struct consumer *cs)
{
    uint64_t id = cs->id;

    /* Acks of the read going on are not sent yet (amqp_ack.c batches
     * them): a CHECKOUT now would reach the shard before them, whose
     * prefetch check would still count them unacked and give less. The
     * channel arms its consumers again once they are sent. */
    while (cs != NULL && ch->ack_op == NULL && !ch->closing &&
           ch->flow_active && !chan_conn_dead(ch) &&
           !ch->conn->calls->closing && chan_out(ch)->len <= EDGE_OUT_HIGH) {
        int64_t window;
        int64_t room;
        unsigned before;

        /* A dry consumer waits for its answers, then long-polls alone. */
        if (cs->n_fetches >= FETCHES_MAX ||
            (cs->n_fetches > 0 && cs->dry)) {
            return;
        }
        room = cons_room(ch, cs, &window);
        /* Every CHECKOUT is a Raft commit: ask again once a quarter of
         * the window is free (the consumer still holds the rest to work
         * on, or it is on its way), not for each ack, so one commit
         * carries many deliveries. With nothing unacked or asked, at
         * once. */
        if (room <= 0 || (room < window / FETCHES_MAX &&
                          (cs->unacked > 0 || cs->asked > 0))) {
            return;
        }
        before = cs->n_fetches;
        fetch_submit(ch, cs,
                     (uint32_t)(room < EDGE_CHECKOUT_MAX ? room
                                                         : EDGE_CHECKOUT_MAX));
        cs = chan_cons_by_id(ch, id);
        if (cs == NULL || cs->n_fetches <= before) {
            /* Answered already: delivered, and asked again from there,
             * or failed for good (closing), and asks no more. */
            return;
        }
    }
}

void chan_arm_all(struct amqp_channel *ch)
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
    if (ec->bc.status != OUTCOME_OK) {
        chan_fail_unavailable(op);
    } else if (ec->bc.mq_result.status != MQ_SM_OK) {
        chan_fail_queue(op, &ec->bc.mq_result);
    } else {
        cs = op->cons;
        op->cons = NULL;
        cs->next = ch->consumers;
        ch->consumers = cs;
        ch->conn->stats->consumers++;
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
         * leaves (the channel's pump flushes it first). */
        ch->pump_again = true;
    }
    chan_wake(ch);
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
    int64_t window;
    int64_t room;

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
    cs->id = edge_new_consumer_id(ch->conn->calls);
    cs->no_ack = c->no_ack;
    op->cons = cs;
    ec = chan_op_call(op, on_consume_done);
    edge_call_set_queue(ec, op->queue, op->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = cs->shard;
    ec->bc.mq.type = MQ_SM_CONSUME;
    ec->bc.mq.who.consumer = cs->id;
    ec->bc.mq.exclusive = c->exclusive;
    /* Its first CHECKOUT's credit: from now on the queue's other
     * consumers' CHECKOUTs deal it its turn (mq_sm.h, dispatch). */
    cs->dry = true; /* the first is a long poll */
    room = cons_room(ch, cs, &window);
    ec->bc.mq.max_messages =
        room <= 0 ? 0
                  : (uint32_t)(room < EDGE_CHECKOUT_MAX ? room
                                                        : EDGE_CHECKOUT_MAX);
    ec->bc.mq.prefetch = cs->no_ack ? 0 : ch->prefetch;
    edge_call_submit(ec);
}

static void on_cancel_done(struct edge_call *ec)
{
    struct chan_op *op = chan_op_of_call(ec);

    if (ec->bc.status == OUTCOME_OK) {
        edge_after_result(ec->calls, ec->bc.shard, &ec->bc.mq_result);
    }
    if (op == NULL) {
        return;
    }
    /* A lost CANCEL is covered by the channel's RETURN when it closes. */
    op->done = true;
    chan_wake(op->ch);
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
    ch->conn->stats->consumers--;
    ec = chan_op_call(op, on_cancel_done);
    /* the queue's name lets a cluster broker find the consumer where its
     * queue is now (it may have moved since consume-ok) */
    edge_call_set_queue(ec, cs->queue, cs->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = cs->shard;
    ec->bc.mq.type = MQ_SM_CANCEL;
    ec->bc.mq.who.consumer = cs->id;
    chan_cons_free(ch, cs);
    edge_call_submit(ec);
}

static void on_get_done(struct edge_call *ec)
{
    struct chan_op *op = chan_op_of_call(ec);
    struct amqp_channel *ch;
    const struct mq_sm_result *r = &ec->bc.mq_result;
    struct amqp_method req;

    if (op == NULL) {
        if (ec->bc.status == OUTCOME_OK && r->n_deliveries > 0) {
            edge_return_deliveries(ec->calls, ec->bc.shard, &ec->bc.mq.who, r);
        }
        return;
    }
    op->done = true;
    ch = op->ch;
    if (ec->bc.status != OUTCOME_OK) {
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
        chan_dl_add(ch, ch->next_tag++, d->tag, ch->get_id, ec->bc.shard);
        ch->conn->stats->delivered++;
        if (req.basic_get.no_ack) {
            size_t sel = ch->dl_len - 1;

            chan_settle(op, MQ_SM_SETTLE, &sel, 1);
            op->done = op->pending == 0;
        }
        amqp_method_free(&req);
    }
    chan_wake(ch);
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
