/*
 * amqp_exchange: the methods of a channel that are commands to the meta
 * group: the exchange class, queue.bind (after checking the queue exists on
 * its shard) and queue.unbind, with RabbitMQ's reply texts (meta_sm gives
 * codes and texts without names; names are added here); contract in
 * amqp_exchange.h.
 */
#include "edge/amqp_exchange.h"

#include <stdlib.h>
#include <string.h>

#include "edge/amqp_fail.h"
#include "edge/amqp_kv.h"
#include "edge/amqp_op.h"

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
        chan_op_fail(op, 404, "%s '%.*s' in vhost '/'", t, n, nm);
    } else if (strcmp(t, "PRECONDITION_FAILED - exchange in use") == 0) {
        chan_op_fail(op, 406,
                "PRECONDITION_FAILED - exchange '%.*s' in vhost '/' in use", n,
                nm);
    } else if (strncmp(t, "PRECONDITION_FAILED - inequivalent arg", 38) == 0) {
        chan_op_fail(op, 406, "%s for %s '%.*s' in vhost '/'", t, what, n, nm);
    } else if (strstr(t, "reserved prefix") != NULL) {
        chan_op_fail(op, 403,
                "ACCESS_REFUSED - %s name '%.*s' contains reserved prefix "
                "'amq.*'",
                what, n, nm);
    } else {
        chan_op_fail(op, r->reply_code, "%s", t);
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
        chan_op_reply_simple(op, ok);
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
    struct chan_op *op = chan_op_of_call(ec);
    struct amqp_method req;

    if (op == NULL) {
        return;
    }
    op->done = true;
    if (ec->bc.status != OUTCOME_OK) {
        chan_fail_unavailable(op);
    } else if (amqp_method_decode(op->payload.data, op->payload.len, &req) ==
               0) {
        const struct meta_sm_result *r = &ec->bc.meta_result;

        if (r->reply_code != 0) {
            const char *what;
            struct amqp_bytes name = meta_subject(op, &req, &what);

            if (r->reply_code == 404 && (op->method == AMQP_EXCHANGE_BIND ||
                                         op->method == AMQP_EXCHANGE_UNBIND)) {
                /* Either end may be the missing one; name both. */
                chan_op_fail(op, 404,
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
    chan_wake(op->ch);
}

static void meta_submit(struct edge_call *ec, const struct amqp_table *args)
{
    ec->bc.meta.args = edge_table_kv(args, &ec->owned, &ec->bc.meta.n_args);
    ec->extra = (void *)ec->bc.meta.args;
    edge_call_submit(ec);
}

static struct edge_call *meta_call(struct chan_op *op,
                                   enum meta_sm_cmd_type type)
{
    struct edge_call *ec = chan_op_call(op, on_meta_done);

    ec->bc.kind = AMQP_BROKER_META;
    ec->bc.meta.type = type;
    return ec;
}

static void set_str(const char **p, size_t *len, struct amqp_bytes b)
{
    *p = (const char *)b.data;
    *len = b.len;
}

void chan_start_exchange(struct chan_op *op, const struct amqp_method *m)
{
    struct edge_call *ec;

    switch (op->method) {
    case AMQP_EXCHANGE_DECLARE: {
        const struct amqp_exchange_declare *d = &m->exchange_declare;
        int type = meta_sm_exchange_type_parse((const char *)d->type.data,
                                               d->type.len);

        if (type < 0 && !d->passive) {
            chan_op_fail(op, 503,
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
    struct chan_op *op = chan_op_of_call(ec);
    struct amqp_method m;

    if (op == NULL) {
        return;
    }
    if (ec->bc.status != OUTCOME_OK) {
        chan_fail_unavailable(op);
        chan_wake(op->ch);
        return;
    }
    if (ec->bc.mq_result.status != MQ_SM_OK) {
        chan_fail_queue(op, &ec->bc.mq_result);
        chan_wake(op->ch);
        return;
    }
    if (amqp_method_decode(op->payload.data, op->payload.len, &m) != 0) {
        chan_op_fail(op, 502, "SYNTAX_ERROR");
        chan_wake(op->ch);
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

void chan_start_queue_bind(struct chan_op *op, const struct amqp_method *m)
{
    struct edge_call *ec;

    if (op->method == AMQP_QUEUE_UNBIND) {
        if (!chan_op_queue_name(op, m->queue_unbind.queue)) {
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
    if (!chan_op_queue_name(op, m->queue_bind.queue)) {
        return;
    }
    ec = chan_op_call(op, on_bind_queue_checked);
    edge_call_set_queue(ec, op->queue, op->queue_len);
    ec->bc.kind = AMQP_BROKER_MQ;
    ec->bc.shard = chan_shard_of(op->ch, op->queue, op->queue_len);
    ec->bc.mq.type = MQ_SM_DECLARE;
    ec->bc.mq.passive = true;
    edge_call_submit(ec);
}
