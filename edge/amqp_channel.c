/*
 * amqp_channel: one AMQP channel of a connection; contract in
 * amqp_channel.h.
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
 * records, naming exactly their shard tags (amqp_ack.c says why never "up
 * to N").
 *
 * Files: this one has the channel's input (methods, content assembly), its
 * ops in order (the pump), the methods that only change the channel (flow,
 * qos, confirm.select, close) and the channel exception. Below it, started
 * from here and never calling up: amqp_declare.c (queue commands),
 * amqp_exchange.c (meta commands), amqp_deliver.c (consumers, deliveries,
 * basic.get), amqp_ack.c (delivery records, acks), amqp_publish.c; all of
 * them on amqp_op.c (ops, replies, broker calls for an op) and amqp_chan.h
 * (the state). They tell the channel to go on with chan_wake(), which runs
 * the pump through ch->wake; the connection is reached through
 * struct chan_conn's functions, never by name.
 *
 * Errors: a channel exception (404, 405, 406, 403) closes the channel with
 * channel.close when its op reaches the head; its unacked deliveries go
 * back (RETURN scope CHANNEL). A connection exception (503, 505, 530, 540)
 * goes to the connection (chan_conn_error).
 */
#include "edge/amqp_channel.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"
#include "edge/amqp_ack.h"
#include "edge/amqp_after.h"
#include "edge/amqp_chan.h"
#include "edge/amqp_config.h"
#include "edge/amqp_declare.h"
#include "edge/amqp_deliver.h"
#include "edge/amqp_edge.h"
#include "edge/amqp_exchange.h"
#include "edge/amqp_op.h"
#include "edge/amqp_publish.h"
#include "proto/amqp_msg.h"

static void chan_pump(struct amqp_channel *ch);

struct amqp_channel *amqp_channel_new(struct chan_conn *cc, uint16_t num,
                                      uint64_t uid)
{
    struct amqp_channel *ch = xcalloc(1, sizeof(*ch));

    ch->conn = cc;
    ch->wake = chan_pump;
    ch->num = num;
    ch->uid = uid;
    ch->flow_active = true;
    ch->next_tag = 1;
    ch->confirm_next = 1;
    ch->get_id = edge_new_consumer_id(cc->calls);
    buf_init(&ch->pub_header);
    buf_init(&ch->pub_body);
    return ch;
}

void amqp_channel_kick(struct amqp_channel *ch)
{
    chan_arm_all(ch);
}

void amqp_channel_pump(struct amqp_channel *ch)
{
    chan_pump(ch);
}

/* ------------------------------------------------------------ dispatch */

/* basic.ack / reject / nack / recover; credit that came back lets the
 * consumers ask for more. */
static void settle_then_arm(struct chan_op *op, enum mq_sm_cmd_type type,
                            uint64_t tag, bool multiple)
{
    struct amqp_channel *ch = op->ch;

    if (chan_op_settle(op, type, tag, multiple)) {
        chan_arm_all(ch);
    }
}

static void start_op(struct chan_op *op)
{
    struct amqp_channel *ch = op->ch;
    struct amqp_method m;

    op->started = true;
    if (op->done) {
        return; /* failed when it arrived */
    }
    if (op->method == AMQP_BASIC_PUBLISH) {
        chan_start_publish(op);
        return;
    }
    if (amqp_method_decode(op->payload.data, op->payload.len, &m) != 0) {
        chan_op_fail(op, 502, "SYNTAX_ERROR");
        return;
    }
    switch (op->method) {
    case AMQP_CHANNEL_FLOW:
        ch->flow_active = m.channel_flow.active;
        {
            struct amqp_method r;

            amqp_method_init(&r, AMQP_CHANNEL_FLOW_OK);
            r.channel_flow_ok.active = m.channel_flow.active;
            chan_op_reply(op, &r);
        }
        op->done = true;
        chan_arm_all(ch);
        break;
    case AMQP_EXCHANGE_DECLARE:
    case AMQP_EXCHANGE_DELETE:
    case AMQP_EXCHANGE_BIND:
    case AMQP_EXCHANGE_UNBIND:
        chan_start_exchange(op, &m);
        break;
    case AMQP_QUEUE_DECLARE:
        chan_start_queue_declare(op, &m.queue_declare);
        break;
    case AMQP_QUEUE_BIND:
    case AMQP_QUEUE_UNBIND:
        chan_start_queue_bind(op, &m);
        break;
    case AMQP_QUEUE_PURGE:
    case AMQP_QUEUE_DELETE:
        chan_start_queue_simple(op, &m);
        break;
    case AMQP_BASIC_QOS:
        if (m.basic_qos.prefetch_size != 0) {
            chan_op_fail(op, 540,
                    "NOT_IMPLEMENTED - prefetch_size!=0 (%u)",
                    m.basic_qos.prefetch_size);
            break;
        }
        if (m.basic_qos.global) {
            ch->global_prefetch = m.basic_qos.prefetch_count;
        } else {
            ch->prefetch = m.basic_qos.prefetch_count;
        }
        chan_op_reply_simple(op, AMQP_BASIC_QOS_OK);
        op->done = true;
        chan_arm_all(ch);
        break;
    case AMQP_BASIC_CONSUME:
        chan_start_consume(op, &m.basic_consume);
        break;
    case AMQP_BASIC_CANCEL:
        chan_start_cancel(op, &m.basic_cancel);
        break;
    case AMQP_BASIC_GET:
        chan_start_get(op, &m.basic_get);
        break;
    case AMQP_BASIC_ACK:
        settle_then_arm(op, MQ_SM_SETTLE, m.basic_ack.delivery_tag,
                        m.basic_ack.multiple);
        ch->conn->stats->acked++;
        break;
    case AMQP_BASIC_REJECT:
        settle_then_arm(op,
                        m.basic_reject.requeue ? MQ_SM_RETURN : MQ_SM_DROP,
                        m.basic_reject.delivery_tag, false);
        break;
    case AMQP_BASIC_NACK:
        settle_then_arm(op, m.basic_nack.requeue ? MQ_SM_RETURN : MQ_SM_DROP,
                        m.basic_nack.delivery_tag, m.basic_nack.multiple);
        break;
    case AMQP_BASIC_RECOVER:
    case AMQP_BASIC_RECOVER_ASYNC:
        /* requeue=false (redeliver to the same consumer) is deprecated in
         * RabbitMQ; both requeue. */
        settle_then_arm(op, MQ_SM_RETURN, 0, true);
        if (op->method == AMQP_BASIC_RECOVER) {
            chan_op_reply_simple(op, AMQP_BASIC_RECOVER_OK);
        }
        break;
    case AMQP_CONFIRM_SELECT:
        ch->confirm = true;
        if (!m.confirm_select.no_wait) {
            chan_op_reply_simple(op, AMQP_CONFIRM_SELECT_OK);
        }
        op->done = true;
        break;
    case AMQP_CHANNEL_CLOSE: {
        struct mq_sm_who who = chan_who(ch);
        struct consumer *cs;

        /* From here deliveries still on their way go back, not out: a
         * CHECKOUT applied after the RETURN would otherwise leave its
         * messages with a channel that is going. */
        ch->client_closing = true;
        while ((cs = ch->consumers) != NULL) {
            ch->consumers = cs->next;
            ch->conn->stats->consumers--;
            chan_cons_free(ch, cs);
        }
        edge_return_everywhere(ch->conn->calls, MQ_SM_SCOPE_CHANNEL, &who);
        chan_op_reply_simple(op, AMQP_CHANNEL_CLOSE_OK);
        op->done = true;
        break;
    }
    default:
        chan_op_fail(op, 540, "NOT_IMPLEMENTED - %s", amqp_method_name(op->method));
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
            chan_op_free(from);
        }
        from = next;
    }
}

static void ch_release(struct amqp_channel *ch)
{
    struct consumer *cs;

    /* Unsent acks die with the channel: the connection's or channel's
     * RETURN gives their messages back (redelivered). */
    if (ch->ack_op != NULL) {
        ch->ack_op->pending--;
        ch->ack_op = NULL;
    }
    free(ch->ack_batch);
    ch_free_ops(ch->head);
    ch->head = ch->tail = NULL;
    while ((cs = ch->consumers) != NULL) {
        ch->consumers = cs->next;
        ch->conn->stats->consumers--;
        chan_cons_free(ch, cs);
    }
    buf_free(&ch->pub_header);
    buf_free(&ch->pub_body);
    free(ch->dl);
    ch->conn->stats->channels--;
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
    struct mq_sm_who who = chan_who(ch);
    struct consumer *cs;

    chan_flush_acks(ch); /* acks before the failing method go first */
    if (op->conn_err) {
        chan_conn_error(ch, op->err_code, op->err_text, op->method);
        return;
    }
    amqp_method_init(&m, AMQP_CHANNEL_CLOSE);
    m.channel_close.reply_code = op->err_code;
    m.channel_close.reply_text = amqp_cstr(op->err_text);
    m.channel_close.class_id = AMQP_METHOD_CLASS(op->method);
    m.channel_close.method_id = AMQP_METHOD_INDEX(op->method);
    (void)amqp_method_encode(chan_out(ch), ch->num, &m, chan_frame_max(ch));
    ch->closing = true;
    ch_free_ops(op->next);
    op->next = NULL;
    ch->tail = op;
    while ((cs = ch->consumers) != NULL) {
        ch->consumers = cs->next;
        ch->conn->stats->consumers--;
        chan_cons_free(ch, cs);
    }
    ch->dl_head = ch->dl_len = 0;
    ch->unacked = 0;
    edge_return_everywhere(ch->conn->calls, MQ_SM_SCOPE_CHANNEL, &who);
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
        /* a publish held for a routable view holds those after it */
        if (!p->started && p->method == AMQP_BASIC_PUBLISH) {
            return false;
        }
    }
    return op->method != AMQP_BASIC_PUBLISH || chan_publish_may_start(op);
}

/* Start what may start, send what finished, in order. Re-entrant: the
 * operations below call it back through ch->wake. */
static void chan_pump(struct amqp_channel *ch)
{
    struct chan_conn *conn = ch->conn;
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
        /* Acks are sent together once the connection has read what it
         * has (amqp_channel_flush_acks), or now outside a read. */
        if (ch->ack_op != NULL && !conn->ops->reading(conn)) {
            chan_flush_acks(ch);
        }
        /* Flush finished ops at the head, in order. */
        while (ch->head && ch->head->done && !ch->freed_after_pump) {
            op = ch->head;
            buf_append(conn->out, op->out.data, op->out.len);
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
                chan_op_free(op);
            }
            if (close_after || conn->ops->dead(conn)) {
                break;
            }
            ch->pump_again = true;
        }
        if (close_after || conn->ops->dead(conn)) {
            break;
        }
        if (!ch->closing) {
            struct consumer *cs;

            for (cs = ch->consumers; cs; cs = cs->next) {
                chan_cons_arm(ch, cs);
            }
        }
    } while (ch->pump_again && !ch->freed_after_pump);
    ch->in_pump = false;
    if (close_after) {
        conn->ops->channel_gone(conn, ch->num);
        ch_release(ch);
    } else if (ch->freed_after_pump) {
        ch_release(ch);
    }
    conn->ops->flush(conn);
}

/* ---------------------------------------------------------------- input */

static void content_done(struct amqp_channel *ch)
{
    struct chan_op *op = ch->pub;
    struct amqp_method m;

    ch->pub = NULL;
    if (amqp_method_decode(op->payload.data, op->payload.len, &m) != 0) {
        chan_op_fail(op, 502, "SYNTAX_ERROR");
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
    chan_pump(ch);
}

static int content_frame(struct amqp_channel *ch, const struct amqp_frame *f)
{
    if (f->type == AMQP_FRAME_HEADER && !ch->pub_has_header) {
        struct amqp_content_header h;
        int rv = amqp_content_header_decode(f->payload, f->size, &h);

        if (f->size >= 2 &&
            ((f->payload[0] << 8) | f->payload[1]) != AMQP_CLASS_BASIC) {
            chan_conn_error(ch, AMQP_REPLY_UNEXPECTED_FRAME,
                            "UNEXPECTED_FRAME - content header for class "
                            "other than basic",
                            AMQP_BASIC_PUBLISH);
            return -1;
        }
        if (rv != 0) {
            chan_conn_error(ch, AMQP_REPLY_FRAME_ERROR,
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
            chan_conn_error(ch, 406, text, AMQP_BASIC_PUBLISH);
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
    chan_conn_error(ch, AMQP_REPLY_UNEXPECTED_FRAME,
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
                    (void)amqp_method_encode(chan_out(ch), ch->num, &r,
                                             chan_frame_max(ch));
                }
                ch->conn->ops->channel_gone(ch->conn, ch->num);
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
        chan_conn_error(ch, AMQP_REPLY_UNEXPECTED_FRAME,
                        "UNEXPECTED_FRAME - content without basic.publish",
                        0);
        return -1;
    }
    rv = amqp_method_decode(f->payload, f->size, &m);
    if (rv != 0) {
        ch->conn->ops->decode_error(ch->conn, f, rv);
        return -1;
    }
    switch (m.id) {
    case AMQP_CHANNEL_OPEN:
        amqp_method_free(&m);
        chan_conn_error(ch, AMQP_REPLY_CHANNEL_ERROR,
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
        chan_conn_error(ch, 540,
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
        chan_conn_error(ch, AMQP_REPLY_COMMAND_INVALID,
                        "COMMAND_INVALID - method not allowed from a client",
                        m.id);
        return -1;
    }
    op = chan_op_new(ch, m.id, !method_is_barrier_free(m.id));
    buf_append(&op->payload, f->payload, f->size);
    if (m.id == AMQP_BASIC_PUBLISH) {
        op->ready = false;
        ch->pub = op;
        ch->pub_has_header = false;
        ch->pub_body_size = 0;
    }
    amqp_method_free(&m);
    if (op->ready) {
        chan_pump(ch);
    }
    return 0;
}

void amqp_channel_flush_acks(struct amqp_channel *ch)
{
    if (ch->ack_op != NULL) {
        chan_flush_acks(ch);
        chan_pump(ch);
    }
}
