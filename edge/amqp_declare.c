/*
 * amqp_declare: the queue methods of a channel that are queue commands to
 * the queue's shard: queue.declare with its x-arguments, queue.purge,
 * queue.delete, with RabbitMQ's reply texts; contract in amqp_declare.h.
 */
#include "edge/amqp_declare.h"

#include <stdio.h>
#include <string.h>

#include "edge/amqp_after.h"
#include "edge/amqp_fail.h"
#include "edge/amqp_op.h"

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
                chan_op_fail(op, 406,
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
            chan_op_fail(op, 406,
                    "PRECONDITION_FAILED - argument '%.*s' is not supported "
                    "by ringmq",
                    (int)e->key.len, (const char *)e->key.data);
            return -1;
        }
        /* Other arguments are kept by RabbitMQ without meaning; ignored. */
        if (bad) {
            chan_op_fail(op, 406,
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
        chan_op_fail(op, 406,
                "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key'"
                " for queue '%.*s' in vhost '/': Key "
                "x-dead-letter-exchange should be specified",
                (int)op->queue_len, op->queue);
        return -1;
    }
    return 0;
}

static void on_declare_done(struct edge_call *ec)
{
    struct chan_op *op = chan_op_of_call(ec);
    const struct mq_sm_result *r = &ec->bc.mq_result;
    struct amqp_method m;
    struct amqp_method req;

    if (op == NULL) {
        return;
    }
    op->done = true;
    if (ec->bc.status != OUTCOME_OK) {
        chan_fail_unavailable(op);
    } else if (r->status != MQ_SM_OK) {
        chan_fail_queue(op, r);
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
                chan_op_reply(op, &m);
            }
            amqp_method_free(&req);
        }
    }
    chan_wake(op->ch);
}

void chan_start_queue_declare(struct chan_op *op,
                                const struct amqp_queue_declare *q)
{
    struct edge_call *ec;
    struct mq_sm_queue_args args;

    if (q->queue.len == 0) {
        chan_gen_name(op->queue, &op->queue_len, "amq.gen-");
    } else {
        memcpy(op->queue, q->queue.data, q->queue.len);
        op->queue_len = q->queue.len;
        if (!q->passive && op->queue_len >= 4 &&
            memcmp(op->queue, "amq.", 4) == 0) {
            chan_op_fail(op, 403,
                    "ACCESS_REFUSED - queue name '%.*s' contains reserved "
                    "prefix 'amq.*'",
                    (int)op->queue_len, op->queue);
            return;
        }
    }
    if (queue_args(op, q->arguments, &args) != 0) {
        return;
    }
    ec = chan_op_call(op, on_declare_done);
    edge_call_set_queue(ec, op->queue, op->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = chan_shard_of(op->ch, op->queue, op->queue_len);
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
    struct chan_op *op = chan_op_of_call(ec);
    const struct mq_sm_result *r = &ec->bc.mq_result;
    struct amqp_method m;
    struct amqp_method req;

    if (op == NULL) {
        if (ec->bc.status == OUTCOME_OK) {
            edge_after_result(ec->calls, ec->bc.shard, r);
        }
        return;
    }
    op->done = true;
    if (ec->bc.status != OUTCOME_OK) {
        chan_fail_unavailable(op);
        chan_wake(op->ch);
        return;
    }
    edge_after_result(ec->calls, ec->bc.shard, r);
    if (r->status != MQ_SM_OK &&
        !(r->status == MQ_SM_NOT_FOUND && op->method == AMQP_QUEUE_DELETE)) {
        /* RabbitMQ answers delete-ok for a queue that does not exist. */
        chan_fail_queue(op, r);
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
            chan_op_reply(op, &m);
        }
        amqp_method_free(&req);
    }
    chan_wake(op->ch);
}

void chan_start_queue_simple(struct chan_op *op, const struct amqp_method *m)
{
    struct edge_call *ec;
    struct amqp_bytes name = op->method == AMQP_QUEUE_PURGE
                                 ? m->queue_purge.queue
                                 : m->queue_delete.queue;

    if (!chan_op_queue_name(op, name)) {
        return;
    }
    ec = chan_op_call(op, on_queue_simple_done);
    edge_call_set_queue(ec, op->queue, op->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = chan_shard_of(op->ch, op->queue, op->queue_len);
    if (op->method == AMQP_QUEUE_PURGE) {
        ec->bc.mq.type = MQ_SM_PURGE;
    } else {
        ec->bc.mq.type = MQ_SM_DELETE;
        ec->bc.mq.if_unused = m->queue_delete.if_unused;
        ec->bc.mq.if_empty = m->queue_delete.if_empty;
    }
    edge_call_submit(ec);
}
