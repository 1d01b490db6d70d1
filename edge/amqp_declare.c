/*
 * amqp_declare: the queue and exchange methods of a channel (amqp_chan.h):
 * queue.declare with its x-arguments, bind, unbind, purge, delete and the
 * exchange class, with RabbitMQ's reply texts (the state machines give the
 * codes and texts without names; names are added here).
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

/* A queue command's error with RabbitMQ's reply text: the state machine
 * gives the code and a text without names; the names are added here. */
void chan_fail_queue(struct chan_op *op, const struct mq_sm_result *r)
{
    static const char ineq[] = "PRECONDITION_FAILED - inequivalent arg '";
    const char *t = r->reply_text ? r->reply_text : "";
    int qn = (int)op->queue_len;
    const char *q = op->queue;

    switch (r->reply_code) {
    case 0:
        chan_op_fail(op, 541, "INTERNAL_ERROR - %s", t);
        return;
    case 404:
        chan_op_fail(op, 404, "NOT_FOUND - no queue '%.*s' in vhost '/'", qn, q);
        return;
    case 405:
        chan_op_fail(op, 405,
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked "
                "queue '%.*s' in vhost '/'. It could be originally declared "
                "on another connection or the exclusive property value does "
                "not match that of the original declaration.",
                qn, q);
        return;
    case 403:
        chan_op_fail(op, 403,
                "ACCESS_REFUSED - queue '%.*s' in vhost '/' in exclusive use",
                qn, q);
        return;
    default:
        break;
    }
    if (strcmp(t, "PRECONDITION_FAILED - queue in use") == 0) {
        chan_op_fail(op, 406, "PRECONDITION_FAILED - queue '%.*s' in vhost '/' in use",
                qn, q);
    } else if (strcmp(t, "PRECONDITION_FAILED - queue not empty") == 0) {
        chan_op_fail(op, 406,
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
            chan_op_fail(op, 406,
                    "%s for queue '%.*s' in vhost '/': received '%s' but "
                    "current is '%s'",
                    t, qn, q, flag ? "true" : "false",
                    flag ? "false" : "true");
        } else {
            chan_op_fail(op, 406, "%s for queue '%.*s' in vhost '/'", t, qn, q);
        }
    } else {
        chan_op_fail(op, r->reply_code, "%s for queue '%.*s' in vhost '/'", t, qn,
                q);
    }
}

void chan_fail_unavailable(struct chan_op *op)
{
    /* Not a RabbitMQ situation; 541 closes the connection, which makes
     * clients reconnect, the right reaction to a lost leader. */
    chan_op_fail(op, 541, "INTERNAL_ERROR - storage unavailable, retry");
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
    if (ec->bc.status != AMQP_BROKER_OK) {
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
    chan_pump(op->ch);
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
        if (ec->bc.status == AMQP_BROKER_OK) {
            edge_after_result(ec->srv, r);
        }
        return;
    }
    op->done = true;
    if (ec->bc.status != AMQP_BROKER_OK) {
        chan_fail_unavailable(op);
        chan_pump(op->ch);
        return;
    }
    edge_after_result(ec->srv, r);
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
    chan_pump(op->ch);
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
    if (ec->bc.status != AMQP_BROKER_OK) {
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
    chan_pump(op->ch);
}

/* Encoded (key, field value) pairs of @t for meta_sm (headers matching and
 * binding arguments): keys and values are copied into @store, which must
 * outlive the returned array (free() it). NULL when @t is empty. */
struct meta_sm_kv *chan_table_kv(const struct amqp_table *t,
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
    ec->bc.meta.args = chan_table_kv(args, &ec->owned, &ec->bc.meta.n_args);
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
    if (ec->bc.status != AMQP_BROKER_OK) {
        chan_fail_unavailable(op);
        chan_pump(op->ch);
        return;
    }
    if (ec->bc.mq_result.status != MQ_SM_OK) {
        chan_fail_queue(op, &ec->bc.mq_result);
        chan_pump(op->ch);
        return;
    }
    if (amqp_method_decode(op->payload.data, op->payload.len, &m) != 0) {
        chan_op_fail(op, 502, "SYNTAX_ERROR");
        chan_pump(op->ch);
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
