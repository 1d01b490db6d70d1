/*
 * amqp_channel: one AMQP channel of a connection (amqp_edge.h).
 *
 * Order. Every method becomes an op in the channel's FIFO; replies leave in
 * that order. Publishes, acks, rejects and nacks may run together (they
 * only need the broker to see them in order per queue, which submission
 * order gives); every other method is a barrier: it starts when everything
 * before it finished, and nothing after it starts before it finished. So a
 * queue.declare after a publish sees the message, and confirms leave in
 * publish order.
 *
 * Publish: the exchange is checked and the message routed on the broker's
 * meta view; one ENQUEUE per target queue, each with the connection's
 * (client id, sequence) so a retry after an unknown outcome is stored once.
 * The confirm (basic.ack) goes out when every ENQUEUE is applied; basic.nack
 * when one could not be within EDGE_ENQUEUE_RETRY_MS. A mandatory message
 * stored nowhere comes back with basic.return before its confirm.
 *
 * Consumers: each one with credit (prefetch minus unacked, per consumer, or
 * per channel with global qos) keeps one CHECKOUT waiting in the broker,
 * which answers when messages are ready. Deliveries are recorded by channel
 * delivery tag with their shard tag; acks, rejects and nacks act on the
 * records. Settling uses the broker's "every tag up to N of this channel"
 * form when no other record of the channel on that shard is below N, which
 * is safe because a shard's answers reach the edge in apply order
 * (amqp_broker.h), so a delivery applied before N but not seen yet cannot
 * exist.
 *
 * Errors: a channel exception (404, 405, 406, 403) closes the channel with
 * channel.close when its op reaches the head; its unacked deliveries go
 * back (RETURN scope CHANNEL). A connection exception (503, 505, 530, 540)
 * goes through amqp_conn_error.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/clock.h"
#include "common/log.h"
#include "router/amqp_edge.h"
#include "router/amqp_msg.h"

struct delivery {
    uint64_t tag; /* channel delivery tag */
    uint64_t shard_tag;
    uint64_t consumer; /* consumer id, or the channel's basic.get id */
    unsigned shard;
    bool done; /* settled, returned or dropped */
};

struct consumer {
    struct consumer *next;
    char tag[256];
    size_t tag_len;
    char queue[256];
    size_t queue_len;
    unsigned shard;
    uint64_t id;
    bool no_ack;
    bool polling; /* a CHECKOUT is in the broker */
    uint32_t unacked;
};

struct chan_op {
    struct chan_op *next;
    struct amqp_channel *ch; /* NULL once the channel is gone */
    uint32_t method;
    bool barrier;
    bool ready; /* a publish waits for its content */
    bool started;
    bool done;
    unsigned pending; /* broker calls in flight */
    struct buf payload; /* the method frame's payload */
    struct buf out;     /* frames to send when the op reaches the head */
    uint16_t err_code;
    bool conn_err;
    char err_text[400];
    int step;
    /* publish */
    struct buf blob; /* amqp_msg */
    unsigned targets;
    unsigned stored;
    unsigned failed;
    uint64_t confirm_tag;
    /* consume / declare */
    struct consumer *cons;
    char queue[256];
    size_t queue_len;
};

struct amqp_channel {
    struct amqp_conn *conn;
    uint16_t num;
    uint64_t uid;
    bool closing; /* our channel.close sent; wait for close-ok */
    bool freed_after_pump;
    bool in_pump;
    bool pump_again;
    struct chan_op *head;
    struct chan_op *tail;
    struct chan_op *pub; /* publish whose content is arriving */
    bool pub_has_header;
    uint64_t pub_body_size;
    struct buf pub_header;
    struct buf pub_body;
    bool confirm;
    uint64_t confirm_next;
    uint16_t prefetch;        /* per consumer */
    uint16_t global_prefetch; /* per channel */
    bool flow_active;
    struct consumer *consumers;
    struct delivery *dl;
    size_t dl_head;
    size_t dl_len;
    size_t dl_cap;
    uint64_t next_tag;
    uint64_t get_id;
    uint32_t unacked;
    char last_queue[256];
    size_t last_queue_len;
};

static void ch_pump(struct amqp_channel *ch);
static void cons_arm(struct amqp_channel *ch, struct consumer *cs);

uint64_t amqp_channel_uid(const struct amqp_channel *ch)
{
    return ch->uid;
}

bool amqp_channel_closing(const struct amqp_channel *ch)
{
    return ch->closing;
}

struct amqp_channel *amqp_channel_new(struct amqp_conn *c, uint16_t num,
                                      uint64_t uid)
{
    struct amqp_channel *ch = xcalloc(1, sizeof(*ch));

    ch->conn = c;
    ch->num = num;
    ch->uid = uid;
    ch->flow_active = true;
    ch->next_tag = 1;
    ch->confirm_next = 1;
    ch->get_id = edge_new_consumer_id(amqp_conn_server(c));
    buf_init(&ch->pub_header);
    buf_init(&ch->pub_body);
    return ch;
}

static struct amqp_server *ch_srv(const struct amqp_channel *ch)
{
    return amqp_conn_server(ch->conn);
}

static struct mq_sm_who ch_who(const struct amqp_channel *ch)
{
    struct mq_sm_who w = {
        .router = ch_srv(ch)->cfg.router_id,
        .conn = amqp_conn_id(ch->conn),
        .channel = ch->uid,
    };
    return w;
}

/* The channel of @ec if it is still the one that made the call. */
static struct amqp_channel *call_channel(const struct edge_call *ec,
                                         uint16_t num)
{
    struct amqp_channel *ch;

    if (ec->conn == NULL || amqp_conn_dead(ec->conn)) {
        return NULL;
    }
    ch = amqp_conn_channel(ec->conn, num);
    if (ch == NULL || ch->uid != ec->chan_uid || ch->closing) {
        return NULL;
    }
    return ch;
}

/* ------------------------------------------------------------------ ops */

static void op_free(struct chan_op *op)
{
    buf_free(&op->payload);
    buf_free(&op->out);
    buf_free(&op->blob);
    free(op->cons);
    free(op);
}

static struct chan_op *op_new(struct amqp_channel *ch, uint32_t method,
                              bool barrier)
{
    struct chan_op *op = xcalloc(1, sizeof(*op));

    op->ch = ch;
    op->method = method;
    op->barrier = barrier;
    op->ready = true;
    buf_init(&op->payload);
    buf_init(&op->out);
    buf_init(&op->blob);
    if (ch->tail) {
        ch->tail->next = op;
    } else {
        ch->head = op;
    }
    ch->tail = op;
    return op;
}

static void op_fail(struct chan_op *op, uint16_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void op_fail(struct chan_op *op, uint16_t code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(op->err_text, sizeof(op->err_text), fmt, ap);
    va_end(ap);
    op->err_code = code;
    op->conn_err = code >= 500 || code == 530;
    op->done = true;
}

static void op_reply(struct chan_op *op, const struct amqp_method *m)
{
    if (amqp_method_encode(&op->out, op->ch->num, m,
                           amqp_conn_frame_max(op->ch->conn)) != 0) {
        log_warn("amqp: cannot encode %s", amqp_method_name(m->id));
    }
}

static void op_reply_simple(struct chan_op *op, uint32_t id)
{
    struct amqp_method m;

    amqp_method_init(&m, id);
    op_reply(op, &m);
}

/* The op's call came back; the op may be orphaned (channel gone). */
static struct chan_op *call_op(struct edge_call *ec)
{
    struct chan_op *op = ec->op;

    op->pending--;
    if (op->ch == NULL) {
        if (op->pending == 0) {
            op_free(op);
        }
        return NULL;
    }
    return op;
}

static struct edge_call *op_call(struct chan_op *op,
                                 void (*done)(struct edge_call *ec))
{
    struct amqp_channel *ch = op->ch;
    struct edge_call *ec = edge_call_new(ch_srv(ch), ch->conn, done);

    ec->op = op;
    ec->chan_uid = ch->uid;
    ec->index = ch->num;
    ec->bc.mq.who = ch_who(ch);
    op->pending++;
    return ec;
}

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

static struct consumer *cons_by_id(struct amqp_channel *ch, uint64_t id)
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
    struct consumer *cs = cons_by_id(ch, d->consumer);

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
    op = call_op(ec);
    if (op && op->pending == 0) {
        op->done = true;
        ch_pump(op->ch);
    }
}

/* Settle (SETTLE, RETURN or DROP) the records marked in @sel (indexes into
 * ch->dl), as few broker commands as is safe. Marks them done. */
static void settle_records(struct chan_op *op, enum mq_sm_cmd_type type,
                           size_t *sel, size_t n)
{
    struct amqp_channel *ch = op->ch;
    size_t i;
    size_t j;

    /* Held while submitting: a call completing at once must not see the op
     * finished (and flushed) before its siblings are submitted. */
    op->pending++;
    for (i = 0; i < n; i++) {
        struct delivery *d = &ch->dl[sel[i]];
        uint64_t max_tag = 0;
        bool safe = true;
        unsigned shard = d->shard;
        size_t k;

        if (d->done) {
            continue;
        }
        /* Highest shard tag of the selection on this shard. */
        for (j = i; j < n; j++) {
            const struct delivery *e = &ch->dl[sel[j]];

            if (!e->done && e->shard == shard && e->shard_tag > max_tag) {
                max_tag = e->shard_tag;
            }
        }
        /* Every live record of the channel on the shard below max_tag must
         * be in the selection. sel is sorted by index. */
        j = i;
        for (k = ch->dl_head; k < ch->dl_len && safe; k++) {
            const struct delivery *e = &ch->dl[k];

            while (j < n && sel[j] < k) {
                j++;
            }
            if (e->done || e->shard != shard || e->shard_tag > max_tag) {
                continue;
            }
            if (j >= n || sel[j] != k) {
                safe = false;
            }
        }
        if (safe) {
            struct edge_call *ec = op_call(op, on_settle_done);

            ec->bc.kind = AMQP_BROKER_MQ;
            ec->bc.shard = shard;
            ec->bc.mq.type = type;
            ec->bc.mq.scope = MQ_SM_SCOPE_TAG;
            ec->bc.mq.tag = max_tag;
            ec->bc.mq.multiple = true;
            ec->deadline_ms = clock_mono_ms() + EDGE_ENQUEUE_RETRY_MS;
            for (j = i; j < n; j++) {
                struct delivery *e = &ch->dl[sel[j]];

                if (!e->done && e->shard == shard) {
                    dl_mark_done(ch, e);
                }
            }
            edge_call_submit(ec);
            continue;
        }
        for (j = i; j < n; j++) {
            struct delivery *e = &ch->dl[sel[j]];
            struct edge_call *ec;

            if (e->done || e->shard != shard) {
                continue;
            }
            ec = op_call(op, on_settle_done);
            ec->bc.kind = AMQP_BROKER_MQ;
            ec->bc.shard = shard;
            ec->bc.mq.type = type;
            ec->bc.mq.scope = MQ_SM_SCOPE_TAG;
            ec->bc.mq.tag = e->shard_tag;
            ec->deadline_ms = clock_mono_ms() + EDGE_ENQUEUE_RETRY_MS;
            dl_mark_done(ch, e);
            edge_call_submit(ec);
        }
    }
    op->pending--;
}

/* basic.ack / reject / nack / recover: select the records, settle them. */
static void op_settle(struct chan_op *op, enum mq_sm_cmd_type type,
                      uint64_t tag, bool multiple)
{
    struct amqp_channel *ch = op->ch;
    size_t *sel;
    size_t n = 0;
    size_t k;
    struct consumer *cs;

    if (!multiple || tag != 0) {
        if (dl_find(ch, tag) == NULL) {
            op_fail(op, 406, "PRECONDITION_FAILED - unknown delivery tag %" PRIu64,
                    tag);
            return;
        }
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
    settle_records(op, type, sel, n);
    free(sel);
    if (op->pending == 0) {
        op->done = true;
    }
    /* Credit came back. */
    for (cs = ch->consumers; cs; cs = cs->next) {
        cons_arm(ch, cs);
    }
}

/* ------------------------------------------------------------- deliveries */

static void emit_delivery(struct amqp_channel *ch, struct buf *out,
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
    struct amqp_channel *ch = call_channel(ec, (uint16_t)ec->index);
    struct consumer *cs = ch ? cons_by_id(ch, ec->consumer) : NULL;
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
        ch_srv(ch)->stats.consumers--;
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
        emit_delivery(ch, out, &m, &v);
        dl_add(ch, ch->next_tag++, d->tag, cs->id, ec->bc.shard);
        cs->unacked++;
        ch_srv(ch)->stats.delivered++;
    }
    if (cs->no_ack && r->n_deliveries > 0) {
        /* Settled as sent: a barrier-free op keeps the settle ordered
         * before a later channel.close. */
        struct chan_op *op = op_new(ch, AMQP_BASIC_ACK, false);
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
        settle_records(op, MQ_SM_SETTLE, sel, n);
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
        ch_pump(ch);
        return;
    }
    cons_arm(ch, cs);
    ch_pump(ch);
}

static void cons_arm(struct amqp_channel *ch, struct consumer *cs)
{
    struct edge_call *ec;
    int64_t credit = EDGE_CHECKOUT_MAX;

    if (cs->polling || ch->closing || !ch->flow_active ||
        amqp_conn_dead(ch->conn) || ch_srv(ch)->closing ||
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
    ec = edge_call_new(ch_srv(ch), ch->conn, on_checkout_done);
    ec->chan_uid = ch->uid;
    ec->index = ch->num;
    ec->consumer = cs->id;
    edge_call_set_queue(ec, cs->queue, cs->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = cs->shard;
    ec->bc.mq.type = MQ_SM_CHECKOUT;
    ec->bc.mq.who = ch_who(ch);
    ec->bc.mq.who.consumer = cs->id;
    ec->bc.mq.max_messages = (uint32_t)credit;
    ec->bc.mq.prefetch = cs->no_ack ? 0 : ch->prefetch;
    ec->bc.wait_ms = EDGE_CHECKOUT_WAIT_MS;
    cs->polling = true;
    edge_call_submit(ec);
}

void amqp_channel_kick(struct amqp_channel *ch)
{
    struct consumer *cs;

    for (cs = ch->consumers; cs; cs = cs->next) {
        cons_arm(ch, cs);
    }
}

/* ---------------------------------------------------------------- names */

static unsigned shard_of(struct amqp_channel *ch, const char *q, size_t len)
{
    struct amqp_server *s = ch_srv(ch);

    return s->broker.ops->shard_of(s->broker.self, EDGE_VHOST, EDGE_VHOST_LEN,
                                   q, len);
}

/* Resolve "" to the channel's last declared queue (RabbitMQ's rule).
 * Returns false after failing @op. */
static bool op_queue_name(struct chan_op *op, struct amqp_bytes name)
{
    struct amqp_channel *ch = op->ch;

    if (name.len == 0) {
        if (ch->last_queue_len == 0) {
            op_fail(op, 404, "NOT_FOUND - no previously declared queue");
            return false;
        }
        memcpy(op->queue, ch->last_queue, ch->last_queue_len);
        op->queue_len = ch->last_queue_len;
        return true;
    }
    memcpy(op->queue, name.data, name.len);
    op->queue_len = name.len;
    return true;
}

/* A queue command's error with RabbitMQ's reply text: the state machine
 * gives the code and a text without names; the names are added here. */
static void fail_queue(struct chan_op *op, const struct mq_sm_result *r)
{
    static const char ineq[] = "PRECONDITION_FAILED - inequivalent arg '";
    const char *t = r->reply_text ? r->reply_text : "";
    int qn = (int)op->queue_len;
    const char *q = op->queue;

    switch (r->reply_code) {
    case 0:
        op_fail(op, 541, "INTERNAL_ERROR - %s", t);
        return;
    case 404:
        op_fail(op, 404, "NOT_FOUND - no queue '%.*s' in vhost '/'", qn, q);
        return;
    case 405:
        op_fail(op, 405,
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked "
                "queue '%.*s' in vhost '/'. It could be originally declared "
                "on another connection or the exclusive property value does "
                "not match that of the original declaration.",
                qn, q);
        return;
    case 403:
        op_fail(op, 403,
                "ACCESS_REFUSED - queue '%.*s' in vhost '/' in exclusive use",
                qn, q);
        return;
    default:
        break;
    }
    if (strcmp(t, "PRECONDITION_FAILED - queue in use") == 0) {
        op_fail(op, 406, "PRECONDITION_FAILED - queue '%.*s' in vhost '/' in use",
                qn, q);
    } else if (strcmp(t, "PRECONDITION_FAILED - queue not empty") == 0) {
        op_fail(op, 406,
                "PRECONDITION_FAILED - queue '%.*s' in vhost '/' not empty", qn,
                q);
    } else if (strncmp(t, ineq, sizeof(ineq) - 1) == 0 &&
               op->method == AMQP_QUEUE_DECLARE) {
        const char *arg = t + sizeof(ineq) - 1;
        struct amqp_method m;
        int flag = -1;

        if (amqp_method_decode(op->payload.data, op->payload.len, &m) == 0) {
            if (strcmp(arg, "durable'") == 0) {
                flag = m.queue_declare.durable;
            } else if (strcmp(arg, "auto_delete'") == 0) {
                flag = m.queue_declare.auto_delete;
            } else if (strcmp(arg, "exclusive'") == 0) {
                flag = m.queue_declare.exclusive;
            }
            amqp_method_free(&m);
        }
        if (flag >= 0) {
            op_fail(op, 406,
                    "%s for queue '%.*s' in vhost '/': received '%s' but "
                    "current is '%s'",
                    t, qn, q, flag ? "true" : "false",
                    flag ? "false" : "true");
        } else {
            op_fail(op, 406, "%s for queue '%.*s' in vhost '/'", t, qn, q);
        }
    } else {
        op_fail(op, r->reply_code, "%s for queue '%.*s' in vhost '/'", t, qn,
                q);
    }
}

static void fail_unavailable(struct chan_op *op)
{
    /* Not a RabbitMQ situation; 541 closes the connection, which makes
     * clients reconnect, the right reaction to a lost leader. */
    op_fail(op, 541, "INTERNAL_ERROR - storage unavailable, retry");
}

/* ----------------------------------------------------------- queue class */

/* RabbitMQ ends an invalid-argument text with the reason as an Erlang
 * term; clients show it, some match on it. */
static const char *why_invalid(const struct amqp_field *f, bool want_int,
                               bool is_int, int64_t v, char *buf, size_t len)
{
    static const struct {
        uint8_t type;
        const char *name;
    } names[] = {
        {AMQP_FIELD_LONGSTR, "longstr"}, {AMQP_FIELD_BOOL, "bool"},
        {AMQP_FIELD_TABLE, "table"},     {AMQP_FIELD_ARRAY, "array"},
        {AMQP_FIELD_FLOAT, "float"},     {AMQP_FIELD_DOUBLE, "double"},
        {AMQP_FIELD_DECIMAL, "decimal"}, {AMQP_FIELD_TIMESTAMP, "timestamp"},
        {AMQP_FIELD_VOID, "void"},       {AMQP_FIELD_BYTES, "binary"},
    };
    size_t i;

    if (want_int && is_int) {
        snprintf(buf, len, "{%s,%lld}", v < 0 ? "value_negative" : "value_zero",
                 (long long)v);
        return buf;
    }
    if (!want_int && f->type == AMQP_FIELD_LONGSTR) {
        snprintf(buf, len, "{unacceptable_value,<<\"%.*s\">>}",
                 (int)(f->v.bytes.len > 64 ? 64 : f->v.bytes.len),
                 (const char *)f->v.bytes.data);
        return buf;
    }
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (names[i].type == f->type) {
            snprintf(buf, len, "{unacceptable_type,%s}", names[i].name);
            return buf;
        }
    }
    snprintf(buf, len, "{unacceptable_type,%c}", f->type);
    return buf;
}

static int queue_args(struct chan_op *op, const struct amqp_table *t,
                      struct mq_sm_queue_args *a)
{
    size_t i;

    memset(a, 0, sizeof(*a));
    if (t == NULL) {
        return 0;
    }
    for (i = 0; i < t->count; i++) {
        const struct amqp_table_entry *e = &t->entries[i];
        const struct amqp_field *f = &e->value;
        int64_t v = 0;
        bool is_int = amqp_field_get_int(f, &v) == 0;
        const char *bad = NULL;
        char why[128];

        if (amqp_bytes_eq(e->key, "x-message-ttl")) {
            if (!is_int || v < 0) {
                bad = "x-message-ttl";
            } else {
                a->has_message_ttl = true;
                a->message_ttl_ms = (uint64_t)v;
            }
        } else if (amqp_bytes_eq(e->key, "x-expires")) {
            if (!is_int || v <= 0) {
                bad = "x-expires";
            } else {
                a->has_expires = true;
                a->expires_ms = (uint64_t)v;
            }
        } else if (amqp_bytes_eq(e->key, "x-max-length")) {
            if (!is_int || v < 0) {
                bad = "x-max-length";
            } else {
                a->has_max_length = true;
                a->max_length = (uint64_t)v;
            }
        } else if (amqp_bytes_eq(e->key, "x-dead-letter-exchange")) {
            if (f->type != AMQP_FIELD_LONGSTR || f->v.bytes.len > 255) {
                bad = "x-dead-letter-exchange";
            } else {
                a->has_dlx = true;
                a->dlx = (const char *)f->v.bytes.data;
                a->dlx_len = f->v.bytes.len;
            }
        } else if (amqp_bytes_eq(e->key, "x-dead-letter-routing-key")) {
            if (f->type != AMQP_FIELD_LONGSTR || f->v.bytes.len > 255) {
                bad = "x-dead-letter-routing-key";
            } else {
                a->has_dlrk = true;
                a->dlrk = (const char *)f->v.bytes.data;
                a->dlrk_len = f->v.bytes.len;
            }
        } else if (amqp_bytes_eq(e->key, "x-queue-type")) {
            /* Every ringmq queue is replicated: classic and quorum both
             * mean "a queue"; streams are something else. */
            if (f->type != AMQP_FIELD_LONGSTR ||
                !(amqp_bytes_eq(f->v.bytes, "classic") ||
                  amqp_bytes_eq(f->v.bytes, "quorum"))) {
                bad = "x-queue-type";
            }
        } else if (amqp_bytes_eq(e->key, "x-overflow")) {
            if (f->type == AMQP_FIELD_LONGSTR &&
                amqp_bytes_eq(f->v.bytes, "drop-head")) {
                a->overflow_reject = false;
            } else if (f->type == AMQP_FIELD_LONGSTR &&
                       amqp_bytes_eq(f->v.bytes, "reject-publish")) {
                a->overflow_reject = true;
            } else if (f->type == AMQP_FIELD_LONGSTR &&
                       amqp_bytes_eq(f->v.bytes, "reject-publish-dlx")) {
                op_fail(op, 406,
                        "PRECONDITION_FAILED - x-overflow 'reject-publish-dlx'"
                        " is not supported by ringmq");
                return -1;
            } else {
                bad = "x-overflow";
            }
        } else if (amqp_bytes_eq(e->key, "x-max-length-bytes") ||
                   amqp_bytes_eq(e->key, "x-max-priority") ||
                   amqp_bytes_eq(e->key, "x-single-active-consumer") ||
                   amqp_bytes_eq(e->key, "x-delivery-limit")) {
            op_fail(op, 406,
                    "PRECONDITION_FAILED - argument '%.*s' is not supported "
                    "by ringmq",
                    (int)e->key.len, (const char *)e->key.data);
            return -1;
        }
        /* Other arguments are kept by RabbitMQ without meaning; ignored. */
        if (bad) {
            op_fail(op, 406,
                    "PRECONDITION_FAILED - invalid arg '%s' for queue "
                    "'%.*s' in vhost '/': %s",
                    bad, (int)op->queue_len, op->queue,
                    why_invalid(f,
                                strcmp(bad, "x-message-ttl") == 0 ||
                                    strcmp(bad, "x-expires") == 0 ||
                                    strcmp(bad, "x-max-length") == 0,
                                is_int, v, why, sizeof(why)));
            return -1;
        }
    }
    if (a->has_dlrk && !a->has_dlx) {
        op_fail(op, 406,
                "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key'"
                " for queue '%.*s' in vhost '/': Key "
                "x-dead-letter-exchange should be specified",
                (int)op->queue_len, op->queue);
        return -1;
    }
    return 0;
}

static void gen_name(char *out, size_t *len, const char *prefix)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t rnd[22];
    size_t n = strlen(prefix);
    size_t i;

    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        uint64_t x = clock_mono_ns();

        for (i = 0; i < sizeof(rnd); i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            rnd[i] = (uint8_t)(x >> 56);
        }
    }
    memcpy(out, prefix, n);
    for (i = 0; i < sizeof(rnd); i++) {
        out[n + i] = b64[rnd[i] & 63];
    }
    *len = n + sizeof(rnd);
}

static void on_declare_done(struct edge_call *ec)
{
    struct chan_op *op = call_op(ec);
    const struct mq_sm_result *r = &ec->bc.mq_result;
    struct amqp_method m;
    struct amqp_method req;

    if (op == NULL) {
        return;
    }
    op->done = true;
    if (ec->bc.status != AMQP_BROKER_OK) {
        fail_unavailable(op);
    } else if (r->status != MQ_SM_OK) {
        fail_queue(op, r);
    } else {
        struct amqp_channel *ch = op->ch;

        memcpy(ch->last_queue, op->queue, op->queue_len);
        ch->last_queue_len = op->queue_len;
        if (amqp_method_decode(op->payload.data, op->payload.len, &req) == 0) {
            if (!req.queue_declare.no_wait) {
                amqp_method_init(&m, AMQP_QUEUE_DECLARE_OK);
                m.queue_declare_ok.queue.data = (const uint8_t *)op->queue;
                m.queue_declare_ok.queue.len = op->queue_len;
                m.queue_declare_ok.message_count = (uint32_t)r->count;
                m.queue_declare_ok.consumer_count = r->consumer_count;
                op_reply(op, &m);
            }
            amqp_method_free(&req);
        }
    }
    ch_pump(op->ch);
}

static void start_queue_declare(struct chan_op *op,
                                const struct amqp_queue_declare *q)
{
    struct edge_call *ec;
    struct mq_sm_queue_args args;

    if (q->queue.len == 0) {
        gen_name(op->queue, &op->queue_len, "amq.gen-");
    } else {
        memcpy(op->queue, q->queue.data, q->queue.len);
        op->queue_len = q->queue.len;
        if (!q->passive && op->queue_len >= 4 &&
            memcmp(op->queue, "amq.", 4) == 0) {
            op_fail(op, 403,
                    "ACCESS_REFUSED - queue name '%.*s' contains reserved "
                    "prefix 'amq.*'",
                    (int)op->queue_len, op->queue);
            return;
        }
    }
    if (queue_args(op, q->arguments, &args) != 0) {
        return;
    }
    ec = op_call(op, on_declare_done);
    edge_call_set_queue(ec, op->queue, op->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = shard_of(op->ch, op->queue, op->queue_len);
    ec->bc.mq.type = MQ_SM_DECLARE;
    ec->bc.mq.passive = q->passive;
    ec->bc.mq.durable = q->durable;
    ec->bc.mq.exclusive = q->exclusive;
    ec->bc.mq.auto_delete = q->auto_delete;
    /* The strings of args point into op->payload's decoded table, which
     * dies with this function: copy them into the call. */
    if (args.has_dlx) {
        buf_append(&ec->owned, args.dlx, args.dlx_len);
    }
    if (args.has_dlrk) {
        buf_append(&ec->owned, args.dlrk, args.dlrk_len);
    }
    if (args.has_dlx) {
        args.dlx = ec->owned.data;
    }
    if (args.has_dlrk) {
        args.dlrk = ec->owned.data + (args.has_dlx ? args.dlx_len : 0);
    }
    ec->bc.mq.args = args;
    edge_call_submit(ec);
}

/* purge, delete: one MQ command, a message count back. */
static void on_queue_simple_done(struct edge_call *ec)
{
    struct chan_op *op = call_op(ec);
    const struct mq_sm_result *r = &ec->bc.mq_result;
    struct amqp_method m;
    struct amqp_method req;

    if (op == NULL) {
        if (ec->bc.status == AMQP_BROKER_OK) {
            edge_after_result(ec->srv, r);
        }
        return;
    }
    op->done = true;
    if (ec->bc.status != AMQP_BROKER_OK) {
        fail_unavailable(op);
        ch_pump(op->ch);
        return;
    }
    edge_after_result(ec->srv, r);
    if (r->status != MQ_SM_OK &&
        !(r->status == MQ_SM_NOT_FOUND && op->method == AMQP_QUEUE_DELETE)) {
        /* RabbitMQ answers delete-ok for a queue that does not exist. */
        fail_queue(op, r);
    } else if (amqp_method_decode(op->payload.data, op->payload.len, &req) ==
               0) {
        bool no_wait = op->method == AMQP_QUEUE_PURGE
                           ? req.queue_purge.no_wait
                           : req.queue_delete.no_wait;

        if (!no_wait) {
            amqp_method_init(&m, op->method == AMQP_QUEUE_PURGE
                                     ? AMQP_QUEUE_PURGE_OK
                                     : AMQP_QUEUE_DELETE_OK);
            m.queue_purge_ok.message_count = (uint32_t)r->count;
            op_reply(op, &m);
        }
        amqp_method_free(&req);
    }
    ch_pump(op->ch);
}

static void start_queue_simple(struct chan_op *op, const struct amqp_method *m)
{
    struct edge_call *ec;
    struct amqp_bytes name = op->method == AMQP_QUEUE_PURGE
                                 ? m->queue_purge.queue
                                 : m->queue_delete.queue;

    if (!op_queue_name(op, name)) {
        return;
    }
    ec = op_call(op, on_queue_simple_done);
    edge_call_set_queue(ec, op->queue, op->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = shard_of(op->ch, op->queue, op->queue_len);
    if (op->method == AMQP_QUEUE_PURGE) {
        ec->bc.mq.type = MQ_SM_PURGE;
    } else {
        ec->bc.mq.type = MQ_SM_DELETE;
        ec->bc.mq.if_unused = m->queue_delete.if_unused;
        ec->bc.mq.if_empty = m->queue_delete.if_empty;
    }
    edge_call_submit(ec);
}

/* -------------------------------------------------- meta (exchanges) */

/* A meta command's error with RabbitMQ's reply text (meta_sm.h: the names
 * are the edge's to add). */
static void fail_meta(struct chan_op *op, const struct meta_sm_result *r,
                      const char *what, struct amqp_bytes name)
{
    const char *t = r->reply_text ? r->reply_text : "";
    int n = (int)name.len;
    const char *nm = (const char *)name.data;

    if (r->reply_code == 404) {
        op_fail(op, 404, "%s '%.*s' in vhost '/'", t, n, nm);
    } else if (strcmp(t, "PRECONDITION_FAILED - exchange in use") == 0) {
        op_fail(op, 406,
                "PRECONDITION_FAILED - exchange '%.*s' in vhost '/' in use", n,
                nm);
    } else if (strncmp(t, "PRECONDITION_FAILED - inequivalent arg", 38) == 0) {
        op_fail(op, 406, "%s for %s '%.*s' in vhost '/'", t, what, n, nm);
    } else if (strstr(t, "reserved prefix") != NULL) {
        op_fail(op, 403,
                "ACCESS_REFUSED - %s name '%.*s' contains reserved prefix "
                "'amq.*'",
                what, n, nm);
    } else {
        op_fail(op, r->reply_code, "%s", t);
    }
}

/* The meta call's reply, by method. */
static void meta_reply(struct chan_op *op, const struct amqp_method *req)
{
    bool no_wait = false;
    uint32_t ok = 0;

    switch (op->method) {
    case AMQP_EXCHANGE_DECLARE:
        no_wait = req->exchange_declare.no_wait;
        ok = AMQP_EXCHANGE_DECLARE_OK;
        break;
    case AMQP_EXCHANGE_DELETE:
        no_wait = req->exchange_delete.no_wait;
        ok = AMQP_EXCHANGE_DELETE_OK;
        break;
    case AMQP_EXCHANGE_BIND:
        no_wait = req->exchange_bind.no_wait;
        ok = AMQP_EXCHANGE_BIND_OK;
        break;
    case AMQP_EXCHANGE_UNBIND:
        no_wait = req->exchange_unbind.no_wait;
        ok = AMQP_EXCHANGE_UNBIND_OK;
        break;
    case AMQP_QUEUE_BIND:
        no_wait = req->queue_bind.no_wait;
        ok = AMQP_QUEUE_BIND_OK;
        break;
    case AMQP_QUEUE_UNBIND:
        ok = AMQP_QUEUE_UNBIND_OK;
        break;
    default:
        return;
    }
    if (!no_wait) {
        op_reply_simple(op, ok);
    }
}

static struct amqp_bytes meta_subject(const struct chan_op *op,
                                      const struct amqp_method *req,
                                      const char **what)
{
    *what = "exchange";
    switch (op->method) {
    case AMQP_EXCHANGE_DECLARE:
        return req->exchange_declare.exchange;
    case AMQP_EXCHANGE_DELETE:
        return req->exchange_delete.exchange;
    case AMQP_EXCHANGE_BIND:
    case AMQP_EXCHANGE_UNBIND:
        return req->exchange_bind.source;
    case AMQP_QUEUE_BIND:
        return req->queue_bind.exchange;
    case AMQP_QUEUE_UNBIND:
        return req->queue_unbind.exchange;
    default:
        return amqp_cstr("");
    }
}

static void on_meta_done(struct edge_call *ec)
{
    struct chan_op *op = call_op(ec);
    struct amqp_method req;

    if (op == NULL) {
        return;
    }
    op->done = true;
    if (ec->bc.status != AMQP_BROKER_OK) {
        fail_unavailable(op);
    } else if (amqp_method_decode(op->payload.data, op->payload.len, &req) ==
               0) {
        const struct meta_sm_result *r = &ec->bc.meta_result;

        if (r->reply_code != 0) {
            const char *what;
            struct amqp_bytes name = meta_subject(op, &req, &what);

            if (r->reply_code == 404 && (op->method == AMQP_EXCHANGE_BIND ||
                                         op->method == AMQP_EXCHANGE_UNBIND)) {
                /* Either end may be the missing one; name both. */
                op_fail(op, 404,
                        "NOT_FOUND - no exchange '%.*s' or '%.*s' in vhost "
                        "'/'",
                        (int)req.exchange_bind.source.len,
                        (const char *)req.exchange_bind.source.data,
                        (int)req.exchange_bind.destination.len,
                        (const char *)req.exchange_bind.destination.data);
            } else {
                fail_meta(op, r, what, name);
            }
        } else {
            meta_reply(op, &req);
        }
        amqp_method_free(&req);
    }
    ch_pump(op->ch);
}

/* Encoded (key, field value) pairs of @t for meta_sm (headers matching and
 * binding arguments): keys and values are copied into @store, which must
 * outlive the returned array (free() it). NULL when @t is empty. */
static struct meta_sm_kv *table_kv(const struct amqp_table *t,
                                   struct buf *store, size_t *n)
{
    struct meta_sm_kv *kv;
    size_t *koff;
    size_t *voff;
    size_t i;

    *n = 0;
    if (t == NULL || t->count == 0) {
        return NULL;
    }
    kv = xcalloc(t->count, sizeof(*kv));
    koff = xcalloc(t->count, sizeof(*koff));
    voff = xcalloc(t->count, sizeof(*voff));
    for (i = 0; i < t->count; i++) {
        struct amqp_table one = *t;
        size_t start = store->len;

        /* A one-entry table's encoding is u32 size, key, type, value. */
        one.count = 1;
        one.entries = &t->entries[i];
        if (amqp_table_encode(store, &one) != 0) {
            store->len = start;
            continue;
        }
        voff[*n] = start + 4 + 1 + t->entries[i].key.len;
        kv[*n].value_len = store->len - voff[*n];
        koff[*n] = start + 4 + 1;
        kv[*n].key_len = t->entries[i].key.len;
        (*n)++;
    }
    /* Pointers only now: appending may have moved the store. */
    for (i = 0; i < *n; i++) {
        kv[i].key = store->data + koff[i];
        kv[i].value = store->data + voff[i];
    }
    free(koff);
    free(voff);
    return kv;
}

static void meta_submit(struct edge_call *ec, const struct amqp_table *args)
{
    ec->bc.meta.args = table_kv(args, &ec->owned, &ec->bc.meta.n_args);
    ec->extra = (void *)ec->bc.meta.args;
    edge_call_submit(ec);
}

static struct edge_call *meta_call(struct chan_op *op,
                                   enum meta_sm_cmd_type type)
{
    struct edge_call *ec = op_call(op, on_meta_done);

    ec->bc.kind = AMQP_BROKER_META;
    ec->bc.meta.type = type;
    return ec;
}

static void set_str(const char **p, size_t *len, struct amqp_bytes b)
{
    *p = (const char *)b.data;
    *len = b.len;
}

static void start_exchange(struct chan_op *op, const struct amqp_method *m)
{
    struct edge_call *ec;

    switch (op->method) {
    case AMQP_EXCHANGE_DECLARE: {
        const struct amqp_exchange_declare *d = &m->exchange_declare;
        int type = meta_sm_exchange_type_parse((const char *)d->type.data,
                                               d->type.len);

        if (type < 0 && !d->passive) {
            op_fail(op, 503,
                    "COMMAND_INVALID - unknown exchange type '%.*s'",
                    (int)d->type.len, (const char *)d->type.data);
            return;
        }
        ec = meta_call(op, META_SM_EXCHANGE_DECLARE);
        set_str(&ec->bc.meta.exchange, &ec->bc.meta.exchange_len,
                d->exchange);
        ec->bc.meta.exchange_type =
            type < 0 ? META_SM_DIRECT : (enum meta_sm_exchange_type)type;
        ec->bc.meta.passive = d->passive;
        ec->bc.meta.durable = d->durable;
        ec->bc.meta.auto_delete = d->auto_delete;
        ec->bc.meta.internal = d->internal;
        meta_submit(ec, d->arguments);
        return;
    }
    case AMQP_EXCHANGE_DELETE:
        ec = meta_call(op, META_SM_EXCHANGE_DELETE);
        set_str(&ec->bc.meta.exchange, &ec->bc.meta.exchange_len,
                m->exchange_delete.exchange);
        ec->bc.meta.if_unused = m->exchange_delete.if_unused;
        meta_submit(ec, NULL);
        return;
    case AMQP_EXCHANGE_BIND:
    case AMQP_EXCHANGE_UNBIND:
        ec = meta_call(op, op->method == AMQP_EXCHANGE_BIND ? META_SM_BIND
                                                            : META_SM_UNBIND);
        set_str(&ec->bc.meta.exchange, &ec->bc.meta.exchange_len,
                m->exchange_bind.source);
        set_str(&ec->bc.meta.dest, &ec->bc.meta.dest_len,
                m->exchange_bind.destination);
        ec->bc.meta.dest_is_exchange = true;
        set_str(&ec->bc.meta.routing_key, &ec->bc.meta.routing_key_len,
                m->exchange_bind.routing_key);
        meta_submit(ec, m->exchange_bind.arguments);
        return;
    default:
        return;
    }
}

/* queue.bind checks the queue exists (its shard), then binds (meta). */
static void on_bind_queue_checked(struct edge_call *ec)
{
    struct chan_op *op = call_op(ec);
    struct amqp_method m;

    if (op == NULL) {
        return;
    }
    if (ec->bc.status != AMQP_BROKER_OK) {
        fail_unavailable(op);
        ch_pump(op->ch);
        return;
    }
    if (ec->bc.mq_result.status != MQ_SM_OK) {
        fail_queue(op, &ec->bc.mq_result);
        ch_pump(op->ch);
        return;
    }
    if (amqp_method_decode(op->payload.data, op->payload.len, &m) != 0) {
        op_fail(op, 502, "SYNTAX_ERROR");
        ch_pump(op->ch);
        return;
    }
    ec = meta_call(op, META_SM_BIND);
    set_str(&ec->bc.meta.exchange, &ec->bc.meta.exchange_len,
            m.queue_bind.exchange);
    ec->bc.meta.dest = op->queue;
    ec->bc.meta.dest_len = op->queue_len;
    set_str(&ec->bc.meta.routing_key, &ec->bc.meta.routing_key_len,
            m.queue_bind.routing_key);
    meta_submit(ec, m.queue_bind.arguments);
    amqp_method_free(&m);
}

static void start_queue_bind(struct chan_op *op, const struct amqp_method *m)
{
    struct edge_call *ec;

    if (op->method == AMQP_QUEUE_UNBIND) {
        if (!op_queue_name(op, m->queue_unbind.queue)) {
            return;
        }
        ec = meta_call(op, META_SM_UNBIND);
        set_str(&ec->bc.meta.exchange, &ec->bc.meta.exchange_len,
                m->queue_unbind.exchange);
        ec->bc.meta.dest = op->queue;
        ec->bc.meta.dest_len = op->queue_len;
        set_str(&ec->bc.meta.routing_key, &ec->bc.meta.routing_key_len,
                m->queue_unbind.routing_key);
        meta_submit(ec, m->queue_unbind.arguments);
        return;
    }
    if (!op_queue_name(op, m->queue_bind.queue)) {
        return;
    }
    ec = op_call(op, on_bind_queue_checked);
    edge_call_set_queue(ec, op->queue, op->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = shard_of(op->ch, op->queue, op->queue_len);
    ec->bc.mq.type = MQ_SM_DECLARE;
    ec->bc.mq.passive = true;
    edge_call_submit(ec);
}

/* ------------------------------------------------------------ consumers */

static void on_consume_done(struct edge_call *ec)
{
    struct chan_op *op = call_op(ec);
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
        fail_unavailable(op);
    } else if (ec->bc.mq_result.status != MQ_SM_OK) {
        fail_queue(op, &ec->bc.mq_result);
    } else {
        cs = op->cons;
        op->cons = NULL;
        cs->next = ch->consumers;
        ch->consumers = cs;
        ch_srv(ch)->stats.consumers++;
        if (amqp_method_decode(op->payload.data, op->payload.len, &req) ==
            0) {
            if (!req.basic_consume.no_wait) {
                amqp_method_init(&m, AMQP_BASIC_CONSUME_OK);
                m.basic_consume_ok.consumer_tag.data =
                    (const uint8_t *)cs->tag;
                m.basic_consume_ok.consumer_tag.len = cs->tag_len;
                op_reply(op, &m);
            }
            amqp_method_free(&req);
        }
        /* consume-ok must precede the first delivery: arm after the reply
         * leaves (ch_pump flushes it first). */
        ch->pump_again = true;
    }
    ch_pump(ch);
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

static void start_consume(struct chan_op *op, const struct amqp_basic_consume *c)
{
    struct amqp_channel *ch = op->ch;
    struct consumer *cs;
    struct edge_call *ec;

    if (!op_queue_name(op, c->queue)) {
        return;
    }
    if (c->consumer_tag.len > 0 && cons_by_tag(ch, c->consumer_tag)) {
        op_fail(op, 530, "NOT_ALLOWED - attempt to reuse consumer tag '%.*s'",
                (int)c->consumer_tag.len,
                (const char *)c->consumer_tag.data);
        return;
    }
    cs = xcalloc(1, sizeof(*cs));
    if (c->consumer_tag.len > 0) {
        memcpy(cs->tag, c->consumer_tag.data, c->consumer_tag.len);
        cs->tag_len = c->consumer_tag.len;
    } else {
        gen_name(cs->tag, &cs->tag_len, "amq.ctag-");
    }
    memcpy(cs->queue, op->queue, op->queue_len);
    cs->queue_len = op->queue_len;
    cs->shard = shard_of(ch, op->queue, op->queue_len);
    cs->id = edge_new_consumer_id(ch_srv(ch));
    cs->no_ack = c->no_ack;
    op->cons = cs;
    ec = op_call(op, on_consume_done);
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
    struct chan_op *op = call_op(ec);

    if (ec->bc.status == AMQP_BROKER_OK) {
        edge_after_result(ec->srv, &ec->bc.mq_result);
    }
    if (op == NULL) {
        return;
    }
    /* A lost CANCEL is covered by the channel's RETURN when it closes. */
    op->done = true;
    ch_pump(op->ch);
}

static void start_cancel(struct chan_op *op, const struct amqp_basic_cancel *c)
{
    struct amqp_channel *ch = op->ch;
    struct consumer *cs = cons_by_tag(ch, c->consumer_tag);
    struct consumer **pp;
    struct edge_call *ec;

    if (!c->no_wait) {
        struct amqp_method m;

        amqp_method_init(&m, AMQP_BASIC_CANCEL_OK);
        m.basic_cancel_ok.consumer_tag = c->consumer_tag;
        op_reply(op, &m);
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
    ch_srv(ch)->stats.consumers--;
    ec = op_call(op, on_cancel_done);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = cs->shard;
    ec->bc.mq.type = MQ_SM_CANCEL;
    ec->bc.mq.who.consumer = cs->id;
    free(cs);
    edge_call_submit(ec);
}

static void on_get_done(struct edge_call *ec)
{
    struct chan_op *op = call_op(ec);
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
        fail_unavailable(op);
    } else if (r->status != MQ_SM_OK) {
        fail_queue(op, r);
    } else if (r->n_deliveries == 0) {
        op_reply_simple(op, AMQP_BASIC_GET_EMPTY);
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
        emit_delivery(ch, &op->out, &m, &v);
        dl_add(ch, ch->next_tag++, d->tag, ch->get_id, ec->bc.shard);
        ch_srv(ch)->stats.delivered++;
        if (req.basic_get.no_ack) {
            size_t sel = ch->dl_len - 1;

            settle_records(op, MQ_SM_SETTLE, &sel, 1);
            op->done = op->pending == 0;
        }
        amqp_method_free(&req);
    }
    ch_pump(ch);
}

static void start_get(struct chan_op *op, const struct amqp_basic_get *g)
{
    struct edge_call *ec;

    if (!op_queue_name(op, g->queue)) {
        return;
    }
    ec = op_call(op, on_get_done);
    edge_call_set_queue(ec, op->queue, op->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = shard_of(op->ch, op->queue, op->queue_len);
    ec->bc.mq.type = MQ_SM_CHECKOUT;
    ec->bc.mq.who.consumer = op->ch->get_id;
    ec->bc.mq.max_messages = 1;
    edge_call_submit(ec);
}

/* -------------------------------------------------------------- publish */

static void publish_finish(struct chan_op *op)
{
    struct amqp_channel *ch = op->ch;
    struct amqp_method m;

    op->done = true;
    if (op->stored == 0 && op->failed == 0) {
        struct amqp_method req;

        if (amqp_method_decode(op->payload.data, op->payload.len, &req) == 0) {
            if (req.basic_publish.mandatory) {
                struct amqp_msg_view v;

                if (amqp_msg_decode(op->blob.data, op->blob.len, &v) == 0) {
                    amqp_method_init(&m, AMQP_BASIC_RETURN);
                    m.basic_return.reply_code = 312;
                    m.basic_return.reply_text = amqp_cstr("NO_ROUTE");
                    m.basic_return.exchange = v.exchange;
                    m.basic_return.routing_key = v.routing_key;
                    emit_delivery(ch, &op->out, &m, &v);
                }
            }
            amqp_method_free(&req);
        }
    }
    if (op->confirm_tag) {
        amqp_method_init(&m, op->failed ? AMQP_BASIC_NACK : AMQP_BASIC_ACK);
        if (op->failed) {
            m.basic_nack.delivery_tag = op->confirm_tag;
        } else {
            m.basic_ack.delivery_tag = op->confirm_tag;
            ch_srv(ch)->stats.confirmed++;
        }
        op_reply(op, &m);
    }
}

static void on_enqueue_done(struct edge_call *ec)
{
    struct chan_op *op;
    const struct mq_sm_result *r = &ec->bc.mq_result;

    if (ec->bc.status == AMQP_BROKER_UNAVAILABLE &&
        clock_mono_ms() < ec->deadline_ms && !ec->srv->closing &&
        ec->op->ch != NULL) {
        /* Same (client, seq): stored once whatever happened before. */
        edge_call_retry(ec);
        return;
    }
    if (ec->conn) {
        amqp_conn_enqueues(ec->conn, -1);
    }
    op = call_op(ec);
    if (op == NULL) {
        return;
    }
    if (ec->bc.status != AMQP_BROKER_OK) {
        op->failed++;
    } else {
        edge_after_result(ec->srv, r);
        switch (r->status) {
        case MQ_SM_OK:
        case MQ_SM_DUPLICATE:
            op->stored++;
            break;
        case MQ_SM_NOT_FOUND:
            break; /* the queue went: not routed there */
        default:
            op->failed++;
            break;
        }
    }
    if (op->pending == 0) {
        publish_finish(op);
        ch_pump(op->ch);
    }
}

static bool parse_expiration(struct amqp_bytes e, uint64_t *ms)
{
    uint64_t v = 0;
    size_t i;

    if (e.len == 0 || e.len > 19) {
        return false;
    }
    for (i = 0; i < e.len; i++) {
        if (e.data[i] < '0' || e.data[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(e.data[i] - '0');
    }
    *ms = v;
    return true;
}

static void start_publish(struct chan_op *op)
{
    struct amqp_channel *ch = op->ch;
    struct amqp_server *s = ch_srv(ch);
    const struct meta_sm *view = s->broker.ops->meta_view(s->broker.self);
    struct amqp_msg_view v;
    struct amqp_content_header h;
    struct meta_sm_route_result route;
    struct meta_sm_kv *kv = NULL;
    size_t n_kv = 0;
    struct buf kv_store;
    enum meta_sm_exchange_type type;
    bool internal = false;
    uint64_t ttl = 0;
    bool has_ttl = false;
    size_t i;

    if (ch->confirm) {
        op->confirm_tag = ch->confirm_next++;
    }
    if (amqp_msg_decode(op->blob.data, op->blob.len, &v) != 0 ||
        amqp_content_header_decode(v.header.data, v.header.len, &h) != 0) {
        op_fail(op, 502, "SYNTAX_ERROR - bad content header");
        return;
    }
    if (view == NULL ||
        meta_sm_exchange_info(view, EDGE_VHOST, EDGE_VHOST_LEN,
                              (const char *)v.exchange.data, v.exchange.len,
                              &type, NULL, &internal) != 0) {
        op_fail(op, 404, "NOT_FOUND - no exchange '%.*s' in vhost '/'",
                (int)v.exchange.len, (const char *)v.exchange.data);
        amqp_content_header_free(&h);
        return;
    }
    if (internal) {
        op_fail(op, 403,
                "ACCESS_REFUSED - cannot publish to internal exchange '%.*s' "
                "in vhost '/'",
                (int)v.exchange.len, (const char *)v.exchange.data);
        amqp_content_header_free(&h);
        return;
    }
    if (h.props.flags & AMQP_BASIC_EXPIRATION) {
        if (!parse_expiration(h.props.expiration, &ttl)) {
            op_fail(op, 406,
                    "PRECONDITION_FAILED - invalid expiration '%.*s': "
                    "invalid_expiration",
                    (int)h.props.expiration.len,
                    (const char *)h.props.expiration.data);
            amqp_content_header_free(&h);
            return;
        }
        has_ttl = true;
    }
    buf_init(&kv_store);
    if (type == META_SM_HEADERS && (h.props.flags & AMQP_BASIC_HEADERS)) {
        kv = table_kv(h.props.headers, &kv_store, &n_kv);
    }
    meta_sm_route_result_init(&route);
    meta_sm_route(view, EDGE_VHOST, EDGE_VHOST_LEN,
                  (const char *)v.exchange.data, v.exchange.len,
                  (const char *)v.routing_key.data, v.routing_key.len, kv,
                  n_kv, &route);
    free(kv);
    buf_free(&kv_store);
    amqp_content_header_free(&h);
    amqp_conn_published(ch->conn);
    s->stats.published++;
    op->targets = (unsigned)route.n_queues;
    op->pending++; /* see settle_records */
    for (i = 0; i < route.n_queues; i++) {
        struct edge_call *ec = op_call(op, on_enqueue_done);

        edge_call_set_queue(ec, route.queues[i].name, route.queues[i].len);
        ec->bc.kind = AMQP_BROKER_MQ;
        ec->bc.shard = shard_of(ch, ec->queue, ec->queue_len);
        ec->bc.mq.type = MQ_SM_ENQUEUE;
        ec->bc.mq.client_id = amqp_conn_client_id(ch->conn);
        ec->bc.mq.seq = amqp_conn_next_seq(ch->conn);
        ec->bc.mq.has_ttl = has_ttl;
        ec->bc.mq.ttl_ms = ttl;
        ec->bc.mq.body = op->blob.data;
        ec->bc.mq.body_len = op->blob.len;
        ec->deadline_ms = clock_mono_ms() + EDGE_ENQUEUE_RETRY_MS;
        amqp_conn_enqueues(ch->conn, +1);
        edge_call_submit(ec);
    }
    meta_sm_route_result_clear(&route);
    op->pending--;
    if (op->pending == 0) {
        publish_finish(op);
    }
}

/* ------------------------------------------------------------ dispatch */

static void start_op(struct chan_op *op)
{
    struct amqp_channel *ch = op->ch;
    struct amqp_method m;

    op->started = true;
    if (op->done) {
        return; /* failed when it arrived */
    }
    if (op->method == AMQP_BASIC_PUBLISH) {
        start_publish(op);
        return;
    }
    if (amqp_method_decode(op->payload.data, op->payload.len, &m) != 0) {
        op_fail(op, 502, "SYNTAX_ERROR");
        return;
    }
    switch (op->method) {
    case AMQP_CHANNEL_FLOW:
        ch->flow_active = m.channel_flow.active;
        {
            struct amqp_method r;

            amqp_method_init(&r, AMQP_CHANNEL_FLOW_OK);
            r.channel_flow_ok.active = m.channel_flow.active;
            op_reply(op, &r);
        }
        op->done = true;
        amqp_channel_kick(ch);
        break;
    case AMQP_EXCHANGE_DECLARE:
    case AMQP_EXCHANGE_DELETE:
    case AMQP_EXCHANGE_BIND:
    case AMQP_EXCHANGE_UNBIND:
        start_exchange(op, &m);
        break;
    case AMQP_QUEUE_DECLARE:
        start_queue_declare(op, &m.queue_declare);
        break;
    case AMQP_QUEUE_BIND:
    case AMQP_QUEUE_UNBIND:
        start_queue_bind(op, &m);
        break;
    case AMQP_QUEUE_PURGE:
    case AMQP_QUEUE_DELETE:
        start_queue_simple(op, &m);
        break;
    case AMQP_BASIC_QOS:
        if (m.basic_qos.prefetch_size != 0) {
            op_fail(op, 540,
                    "NOT_IMPLEMENTED - prefetch_size!=0 (%u)",
                    m.basic_qos.prefetch_size);
            break;
        }
        if (m.basic_qos.global) {
            ch->global_prefetch = m.basic_qos.prefetch_count;
        } else {
            ch->prefetch = m.basic_qos.prefetch_count;
        }
        op_reply_simple(op, AMQP_BASIC_QOS_OK);
        op->done = true;
        amqp_channel_kick(ch);
        break;
    case AMQP_BASIC_CONSUME:
        start_consume(op, &m.basic_consume);
        break;
    case AMQP_BASIC_CANCEL:
        start_cancel(op, &m.basic_cancel);
        break;
    case AMQP_BASIC_GET:
        start_get(op, &m.basic_get);
        break;
    case AMQP_BASIC_ACK:
        op_settle(op, MQ_SM_SETTLE, m.basic_ack.delivery_tag,
                  m.basic_ack.multiple);
        ch_srv(ch)->stats.acked++;
        break;
    case AMQP_BASIC_REJECT:
        op_settle(op, m.basic_reject.requeue ? MQ_SM_RETURN : MQ_SM_DROP,
                  m.basic_reject.delivery_tag, false);
        break;
    case AMQP_BASIC_NACK:
        op_settle(op, m.basic_nack.requeue ? MQ_SM_RETURN : MQ_SM_DROP,
                  m.basic_nack.delivery_tag, m.basic_nack.multiple);
        break;
    case AMQP_BASIC_RECOVER:
    case AMQP_BASIC_RECOVER_ASYNC:
        /* requeue=false (redeliver to the same consumer) is deprecated in
         * RabbitMQ; both requeue. */
        op_settle(op, MQ_SM_RETURN, 0, true);
        if (op->method == AMQP_BASIC_RECOVER) {
            op_reply_simple(op, AMQP_BASIC_RECOVER_OK);
        }
        break;
    case AMQP_CONFIRM_SELECT:
        ch->confirm = true;
        if (!m.confirm_select.no_wait) {
            op_reply_simple(op, AMQP_CONFIRM_SELECT_OK);
        }
        op->done = true;
        break;
    case AMQP_CHANNEL_CLOSE: {
        struct mq_sm_who who = ch_who(ch);

        edge_return_everywhere(ch_srv(ch), MQ_SM_SCOPE_CHANNEL, &who);
        op_reply_simple(op, AMQP_CHANNEL_CLOSE_OK);
        op->done = true;
        break;
    }
    default:
        op_fail(op, 540, "NOT_IMPLEMENTED - %s", amqp_method_name(op->method));
        break;
    }
    amqp_method_free(&m);
}

static void ch_free_ops(struct chan_op *from)
{
    while (from) {
        struct chan_op *next = from->next;

        from->ch = NULL;
        if (from->pending == 0) {
            op_free(from);
        }
        from = next;
    }
}

static void ch_release(struct amqp_channel *ch)
{
    struct consumer *cs;

    ch_free_ops(ch->head);
    ch->head = ch->tail = NULL;
    while ((cs = ch->consumers) != NULL) {
        ch->consumers = cs->next;
        ch_srv(ch)->stats.consumers--;
        free(cs);
    }
    buf_free(&ch->pub_header);
    buf_free(&ch->pub_body);
    free(ch->dl);
    ch_srv(ch)->stats.channels--;
    free(ch);
}

void amqp_channel_free(struct amqp_channel *ch)
{
    if (ch->in_pump) {
        /* Freed by the pump on its way out. */
        ch->freed_after_pump = true;
        ch->closing = true;
        return;
    }
    ch_release(ch);
}

/* Raise the head op's exception: channel.close, or the connection's. */
static void ch_raise(struct amqp_channel *ch, struct chan_op *op)
{
    struct amqp_method m;
    struct mq_sm_who who = ch_who(ch);
    struct consumer *cs;

    if (op->conn_err) {
        amqp_conn_error(ch->conn, op->err_code, op->err_text, op->method);
        return;
    }
    amqp_method_init(&m, AMQP_CHANNEL_CLOSE);
    m.channel_close.reply_code = op->err_code;
    m.channel_close.reply_text = amqp_cstr(op->err_text);
    m.channel_close.class_id = AMQP_METHOD_CLASS(op->method);
    m.channel_close.method_id = AMQP_METHOD_INDEX(op->method);
    (void)amqp_method_encode(amqp_conn_out(ch->conn), ch->num, &m,
                             amqp_conn_frame_max(ch->conn));
    ch->closing = true;
    ch_free_ops(op->next);
    op->next = NULL;
    ch->tail = op;
    while ((cs = ch->consumers) != NULL) {
        ch->consumers = cs->next;
        ch_srv(ch)->stats.consumers--;
        free(cs);
    }
    ch->dl_head = ch->dl_len = 0;
    ch->unacked = 0;
    edge_return_everywhere(ch_srv(ch), MQ_SM_SCOPE_CHANNEL, &who);
}

static bool can_start(const struct amqp_channel *ch, const struct chan_op *op)
{
    const struct chan_op *p;

    if (!op->ready) {
        return false;
    }
    for (p = ch->head; p != op; p = p->next) {
        if (!p->done && (op->barrier || p->barrier)) {
            return false;
        }
    }
    return true;
}

static void ch_pump(struct amqp_channel *ch)
{
    struct amqp_conn *conn = ch->conn;
    bool close_after = false;

    if (ch->in_pump) {
        ch->pump_again = true;
        return;
    }
    ch->in_pump = true;
    do {
        struct chan_op *op;

        ch->pump_again = false;
        for (op = ch->head; op && !ch->closing; op = op->next) {
            if (!op->started && can_start(ch, op)) {
                start_op(op);
            }
            if (!op->done && op->barrier) {
                break;
            }
        }
        /* Flush finished ops at the head, in order. */
        while (ch->head && ch->head->done && !ch->freed_after_pump) {
            op = ch->head;
            buf_append(amqp_conn_out(conn), op->out.data, op->out.len);
            if (op->err_code) {
                ch_raise(ch, op);
            }
            ch->head = op->next;
            if (ch->head == NULL) {
                ch->tail = NULL;
            }
            if (op->method == AMQP_CHANNEL_CLOSE && op->err_code == 0) {
                close_after = true;
            }
            op->ch = NULL;
            if (op->pending == 0) {
                op_free(op);
            }
            if (close_after || amqp_conn_dead(conn)) {
                break;
            }
            ch->pump_again = true;
        }
        if (close_after || amqp_conn_dead(conn)) {
            break;
        }
        if (!ch->closing) {
            struct consumer *cs;

            for (cs = ch->consumers; cs; cs = cs->next) {
                cons_arm(ch, cs);
            }
        }
    } while (ch->pump_again && !ch->freed_after_pump);
    ch->in_pump = false;
    if (close_after) {
        amqp_conn_channel_gone(conn, ch->num);
        ch_release(ch);
    } else if (ch->freed_after_pump) {
        ch_release(ch);
    }
    amqp_conn_flush(conn);
}

/* ---------------------------------------------------------------- input */

static void content_done(struct amqp_channel *ch)
{
    struct chan_op *op = ch->pub;
    struct amqp_method m;

    ch->pub = NULL;
    if (amqp_method_decode(op->payload.data, op->payload.len, &m) != 0) {
        op_fail(op, 502, "SYNTAX_ERROR");
    } else {
        (void)amqp_msg_encode(&op->blob, m.basic_publish.exchange,
                              m.basic_publish.routing_key,
                              (struct amqp_bytes){(const uint8_t *)
                                                      ch->pub_header.data,
                                                  ch->pub_header.len},
                              (struct amqp_bytes){(const uint8_t *)
                                                      ch->pub_body.data,
                                                  ch->pub_body.len});
        amqp_method_free(&m);
    }
    buf_reset(&ch->pub_header);
    if (ch->pub_body.cap > 1024 * 1024) {
        buf_free(&ch->pub_body);
    } else {
        buf_reset(&ch->pub_body);
    }
    op->ready = true;
    ch_pump(ch);
}

static int content_frame(struct amqp_channel *ch, const struct amqp_frame *f)
{
    if (f->type == AMQP_FRAME_HEADER && !ch->pub_has_header) {
        struct amqp_content_header h;
        int rv = amqp_content_header_decode(f->payload, f->size, &h);

        if (f->size >= 2 &&
            ((f->payload[0] << 8) | f->payload[1]) != AMQP_CLASS_BASIC) {
            amqp_conn_error(ch->conn, AMQP_REPLY_UNEXPECTED_FRAME,
                            "UNEXPECTED_FRAME - content header for class "
                            "other than basic",
                            AMQP_BASIC_PUBLISH);
            return -1;
        }
        if (rv != 0) {
            amqp_conn_error(ch->conn, AMQP_REPLY_FRAME_ERROR,
                            "FRAME_ERROR - cannot decode content header",
                            AMQP_BASIC_PUBLISH);
            return -1;
        }
        amqp_content_header_free(&h);
        if (h.body_size > EDGE_MESSAGE_MAX) {
            char text[200];

            snprintf(text, sizeof(text),
                     "PRECONDITION_FAILED - message size %llu is larger "
                     "than configured max size %u",
                     (unsigned long long)h.body_size, EDGE_MESSAGE_MAX);
            /* RabbitMQ closes the channel; the rest of the content still
             * arrives and is dropped with it. */
            amqp_conn_error(ch->conn, 406, text, AMQP_BASIC_PUBLISH);
            return -1;
        }
        ch->pub_has_header = true;
        ch->pub_body_size = h.body_size;
        buf_append(&ch->pub_header, f->payload, f->size);
        if (h.body_size == 0) {
            content_done(ch);
        }
        return 0;
    }
    if (f->type == AMQP_FRAME_BODY && ch->pub_has_header &&
        ch->pub_body.len + f->size <= ch->pub_body_size) {
        buf_append(&ch->pub_body, f->payload, f->size);
        if (ch->pub_body.len == ch->pub_body_size) {
            content_done(ch);
        }
        return 0;
    }
    amqp_conn_error(ch->conn, AMQP_REPLY_UNEXPECTED_FRAME,
                    "UNEXPECTED_FRAME - expected content header or body", 0);
    return -1;
}

static bool method_is_barrier_free(uint32_t id)
{
    return id == AMQP_BASIC_PUBLISH || id == AMQP_BASIC_ACK ||
           id == AMQP_BASIC_REJECT || id == AMQP_BASIC_NACK;
}

int amqp_channel_frame(struct amqp_channel *ch, const struct amqp_frame *f)
{
    struct amqp_method m;
    struct chan_op *op;
    int rv;

    if (ch->closing) {
        /* After our channel.close only close-ok (or a crossing close)
         * counts. */
        if (f->type == AMQP_FRAME_METHOD &&
            amqp_method_decode(f->payload, f->size, &m) == 0) {
            if (m.id == AMQP_CHANNEL_CLOSE_OK || m.id == AMQP_CHANNEL_CLOSE) {
                if (m.id == AMQP_CHANNEL_CLOSE) {
                    struct amqp_method r;

                    amqp_method_init(&r, AMQP_CHANNEL_CLOSE_OK);
                    (void)amqp_method_encode(amqp_conn_out(ch->conn), ch->num,
                                             &r, amqp_conn_frame_max(ch->conn));
                }
                amqp_conn_channel_gone(ch->conn, ch->num);
                amqp_channel_free(ch);
            }
            amqp_method_free(&m);
        }
        return 0;
    }
    if (ch->pub) {
        return content_frame(ch, f);
    }
    if (f->type != AMQP_FRAME_METHOD) {
        amqp_conn_error(ch->conn, AMQP_REPLY_UNEXPECTED_FRAME,
                        "UNEXPECTED_FRAME - content without basic.publish",
                        0);
        return -1;
    }
    rv = amqp_method_decode(f->payload, f->size, &m);
    if (rv != 0) {
        amqp_conn_decode_error(ch->conn, f, rv);
        return -1;
    }
    switch (m.id) {
    case AMQP_CHANNEL_OPEN:
        amqp_method_free(&m);
        amqp_conn_error(ch->conn, AMQP_REPLY_CHANNEL_ERROR,
                        "CHANNEL_ERROR - second 'channel.open' seen",
                        AMQP_CHANNEL_OPEN);
        return -1;
    case AMQP_CHANNEL_CLOSE_OK:
    case AMQP_CHANNEL_FLOW_OK:
        amqp_method_free(&m);
        return 0;
    case AMQP_TX_SELECT:
    case AMQP_TX_COMMIT:
    case AMQP_TX_ROLLBACK:
        amqp_method_free(&m);
        amqp_conn_error(ch->conn, 540,
                        "NOT_IMPLEMENTED - transactions (tx) are not "
                        "supported by ringmq; use publisher confirms",
                        m.id);
        return -1;
    case AMQP_CHANNEL_FLOW:
    case AMQP_CHANNEL_CLOSE:
    case AMQP_EXCHANGE_DECLARE:
    case AMQP_EXCHANGE_DELETE:
    case AMQP_EXCHANGE_BIND:
    case AMQP_EXCHANGE_UNBIND:
    case AMQP_QUEUE_DECLARE:
    case AMQP_QUEUE_BIND:
    case AMQP_QUEUE_UNBIND:
    case AMQP_QUEUE_PURGE:
    case AMQP_QUEUE_DELETE:
    case AMQP_BASIC_QOS:
    case AMQP_BASIC_CONSUME:
    case AMQP_BASIC_CANCEL:
    case AMQP_BASIC_PUBLISH:
    case AMQP_BASIC_GET:
    case AMQP_BASIC_ACK:
    case AMQP_BASIC_REJECT:
    case AMQP_BASIC_NACK:
    case AMQP_BASIC_RECOVER:
    case AMQP_BASIC_RECOVER_ASYNC:
    case AMQP_CONFIRM_SELECT:
        break;
    default:
        amqp_method_free(&m);
        amqp_conn_error(ch->conn, AMQP_REPLY_COMMAND_INVALID,
                        "COMMAND_INVALID - method not allowed from a client",
                        m.id);
        return -1;
    }
    op = op_new(ch, m.id, !method_is_barrier_free(m.id));
    buf_append(&op->payload, f->payload, f->size);
    if (m.id == AMQP_BASIC_PUBLISH) {
        op->ready = false;
        ch->pub = op;
        ch->pub_has_header = false;
        ch->pub_body_size = 0;
    }
    amqp_method_free(&m);
    if (op->ready) {
        ch_pump(ch);
    }
    return 0;
}
