/*
 * amqp_op: what the operations of a channel share; contract in amqp_op.h.
 */
#include "edge/amqp_op.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/container_of.h"
#include "common/log.h"
#include "common/random_id.h"

/* ------------------------------------------------ channel and connection */

struct mq_sm_who chan_who(const struct amqp_channel *ch)
{
    struct mq_sm_who w = {
        .router = ch->conn->calls->router_id,
        .conn = ch->conn->id,
        .channel = ch->uid,
    };
    return w;
}

struct buf *chan_out(struct amqp_channel *ch)
{
    return ch->conn->out;
}

size_t chan_frame_max(const struct amqp_channel *ch)
{
    return ch->conn->ops->frame_max(ch->conn);
}

void chan_flush(struct amqp_channel *ch)
{
    ch->conn->ops->flush(ch->conn);
}

bool chan_conn_dead(const struct amqp_channel *ch)
{
    return ch->conn->ops->dead(ch->conn);
}

void chan_conn_error(struct amqp_channel *ch, uint16_t code, const char *text,
                     uint32_t method_id)
{
    ch->conn->ops->error(ch->conn, code, text, method_id);
}

void chan_wake(struct amqp_channel *ch)
{
    ch->wake(ch);
}

struct chan_conn *chan_conn_of_call(const struct edge_call *ec)
{
    return ec->ref ? container_of(ec->ref, struct chan_conn, ref) : NULL;
}

struct amqp_channel *chan_of_call(const struct edge_call *ec, uint16_t num)
{
    struct chan_conn *cc = chan_conn_of_call(ec);
    struct amqp_channel *ch;

    if (cc == NULL || cc->ops->dead(cc)) {
        return NULL;
    }
    ch = cc->ops->channel(cc, num);
    if (ch == NULL || ch->uid != ec->chan_uid || ch->closing ||
        ch->client_closing) {
        return NULL;
    }
    return ch;
}

unsigned chan_shard_of(struct amqp_channel *ch, const char *q, size_t len)
{
    return edge_shard_of(ch->conn->calls, q, len);
}

void chan_emit_delivery(struct amqp_channel *ch, struct buf *out,
                        const struct amqp_method *m,
                        const struct amqp_msg_view *v)
{
    size_t fm = chan_frame_max(ch);

    (void)amqp_method_encode(out, ch->num, m, fm);
    (void)amqp_frame_encode(out, AMQP_FRAME_HEADER, ch->num, v->header.data,
                            v->header.len, fm);
    amqp_frame_encode_body(out, ch->num, v->body.data, v->body.len, fm);
}

/* ------------------------------------------------------------------ ops */

void chan_op_free(struct chan_op *op)
{
    buf_free(&op->payload);
    buf_free(&op->out);
    buf_free(&op->blob);
    free(op->cons);
    free(op);
}

struct chan_op *chan_op_new(struct amqp_channel *ch, uint32_t method,
                            bool barrier)
{
    struct chan_op *op = xcalloc(1, sizeof(*op));

    op->ch = ch;
    op->method = method;
    op->barrier = barrier;
    op->ready = true;
    op->arrived_ms = clock_mono_ms();
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

void chan_op_fail(struct chan_op *op, uint16_t code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(op->err_text, sizeof(op->err_text), fmt, ap);
    va_end(ap);
    op->err_code = code;
    op->conn_err = code >= 500 || code == 530;
    op->done = true;
}

void chan_op_reply(struct chan_op *op, const struct amqp_method *m)
{
    if (amqp_method_encode(&op->out, op->ch->num, m,
                           chan_frame_max(op->ch)) != 0) {
        log_warn("amqp: cannot encode %s", amqp_method_name(m->id));
    }
}

void chan_op_reply_simple(struct chan_op *op, uint32_t id)
{
    struct amqp_method m;

    amqp_method_init(&m, id);
    chan_op_reply(op, &m);
}

/* The op's call came back; the op may be orphaned (channel gone). */
struct chan_op *chan_op_of_call(struct edge_call *ec)
{
    struct chan_op *op = ec->op;

    op->pending--;
    if (op->ch == NULL) {
        if (op->pending == 0) {
            chan_op_free(op);
        }
        return NULL;
    }
    return op;
}

struct edge_call *chan_op_call(struct chan_op *op,
                               void (*done)(struct edge_call *ec))
{
    struct amqp_channel *ch = op->ch;
    struct edge_call *ec = edge_call_new(ch->conn->calls, &ch->conn->ref,
                                         done);

    ec->op = op;
    ec->chan_uid = ch->uid;
    ec->index = ch->num;
    ec->bc.mq.who = chan_who(ch);
    op->pending++;
    return ec;
}

/* ---------------------------------------------------------------- names */

bool chan_op_queue_name(struct chan_op *op, struct amqp_bytes name)
{
    struct amqp_channel *ch = op->ch;

    if (name.len == 0) {
        if (ch->last_queue_len == 0) {
            chan_op_fail(op, 404, "NOT_FOUND - no previously declared queue");
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

void chan_gen_name(char *out, size_t *len, const char *prefix)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t rnd[22];
    size_t n = strlen(prefix);
    size_t i;

    random_bytes(rnd, sizeof(rnd));
    memcpy(out, prefix, n);
    for (i = 0; i < sizeof(rnd); i++) {
        out[n + i] = b64[rnd[i] & 63];
    }
    *len = n + sizeof(rnd);
}
