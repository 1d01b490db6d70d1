/* mq_pb: see mq_pb.h. */
#include "proto/mq_pb.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "sm/meta_rules.h"

/* ------------------------------------------------------------- helpers */

static void bytes_set(ProtobufCBinaryData *b, const void *p, size_t len)
{
    b->data = len > 0 ? (uint8_t *)(uintptr_t)p : NULL;
    b->len = len;
}

/* Decoded empty fields point at "" so no consumer ever sees NULL with a
 * length it might hand to memcmp. */
static const char *bytes_ptr(const ProtobufCBinaryData *b)
{
    return b->len > 0 && b->data != NULL ? (const char *)b->data : "";
}

static bool name_ok(const ProtobufCBinaryData *b)
{
    return b->len <= MQ_SM_NAME_MAX && (b->len == 0 || b->data != NULL);
}

static bool body_ok(const ProtobufCBinaryData *b)
{
    return (uint64_t)b->len <= MQ_PB_BODY_MAX &&
           (b->len == 0 || b->data != NULL);
}

/* The reply texts the state machines produce. A decoded result must carry
 * a static string (the C contract), and the edge prints it verbatim, so the
 * known ones map to themselves. Keep in sync with mq_sm.c / meta_sm.c; a
 * text missing here only degrades to the generic one below. */
static const char *const known_texts[] = {
    "",
    "NOT_FOUND - no queue",
    "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue",
    "PRECONDITION_FAILED - inequivalent arg 'durable'",
    "PRECONDITION_FAILED - inequivalent arg 'auto_delete'",
    "PRECONDITION_FAILED - inequivalent arg 'exclusive'",
    "PRECONDITION_FAILED - inequivalent arg",
    "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl'",
    "PRECONDITION_FAILED - inequivalent arg 'x-expires'",
    "PRECONDITION_FAILED - inequivalent arg 'x-max-length'",
    "PRECONDITION_FAILED - inequivalent arg 'x-overflow'",
    "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange'",
    "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-routing-key'",
    "queue full (reject-publish)",
    "an earlier publish is not applied yet",
    "PRECONDITION_FAILED - invalid arg 'x-expires'",
    "PRECONDITION_FAILED - queue in use",
    "PRECONDITION_FAILED - queue not empty",
    "ACCESS_REFUSED - queue in exclusive use",
    "bad arguments",
    "bad command",
    "bad queue name",
    "bad scope",
    "body too large",
    "consumer id in use",
    "consumer on another queue",
    "no memory",
    "NOT_FOUND - no exchange",
    "PRECONDITION_FAILED - inequivalent arg 'type'",
    "PRECONDITION_FAILED - inequivalent arg 'internal'",
    "PRECONDITION_FAILED - inequivalent arg for a pre-declared exchange",
    "PRECONDITION_FAILED - exchange in use",
    "ACCESS_REFUSED - exchange name contains reserved prefix 'amq.*'",
    "ACCESS_REFUSED - operation not permitted on a pre-declared exchange",
    "ACCESS_REFUSED - operation not permitted on the default exchange",
    "COMMAND_INVALID - unknown exchange type",
    "SYNTAX_ERROR - name longer than 255 bytes",
    "NOT_IMPLEMENTED - unknown meta command",
    "SYNTAX_ERROR - bad shard name",
    "PRECONDITION_FAILED - queue not in the directory",
    META_RULES_NOT_SERVING,
    "PRECONDITION_FAILED - placement changed",
    "PRECONDITION_FAILED - queue already on that shard",
    "PRECONDITION_FAILED - queue moving to another shard",
    "PRECONDITION_FAILED - queue not moving to that shard",
    "MOVING - queue is being moved",
    "MOVED - queue moved to another shard",
    "PLACE_STALE - placement generation below the floor",
    "PRECONDITION_FAILED - exclusive queues do not move",
    "PRECONDITION_FAILED - queue exists here",
    "PRECONDITION_FAILED - another move of this queue",
    "PRECONDITION_FAILED - queue not imported",
    "PRECONDITION_FAILED - import incomplete",
    "PRECONDITION_FAILED - queue not frozen",
    "bad placement gen",
    "bad export chunk",
    "export chunk out of order",
};

static const char *generic_text(uint32_t code)
{
    switch (code) {
        case 0:
            return "";
        case 403:
            return "ACCESS_REFUSED";
        case 404:
            return "NOT_FOUND";
        case 405:
            return "RESOURCE_LOCKED";
        case 406:
            return "PRECONDITION_FAILED";
        case 502:
            return "SYNTAX_ERROR";
        case 503:
            return "COMMAND_INVALID";
        case 540:
            return "NOT_IMPLEMENTED";
        default:
            return "error";
    }
}

static const char *intern_text(const char *s, uint32_t code)
{
    size_t i;

    if (s != NULL) {
        for (i = 0; i < sizeof(known_texts) / sizeof(known_texts[0]); i++) {
            if (strcmp(s, known_texts[i]) == 0) {
                return known_texts[i];
            }
        }
    }
    return generic_text(code);
}

/* -------------------------------------------------------- mq commands */

int mq_pb_cmd_to_pb(const struct mq_sm_cmd *c, uint32_t wait_ms,
                    struct mq_pb_cmd_buf *b)
{
    Ringmq__MqCommand *pb = &b->pb;
    const struct mq_sm_queue_args *a = &c->args;

    ringmq__mq_command__init(pb);
    ringmq__mq_who__init(&b->who);
    ringmq__mq_queue_args__init(&b->args);
    if ((unsigned)c->type >= MQ_SM_CMD__COUNT ||
        (unsigned)c->scope >= MQ_SM_SCOPE__COUNT ||
        (uint64_t)c->body_len > MQ_PB_BODY_MAX) {
        return -1;
    }
    pb->type = (uint32_t)c->type;
    bytes_set(&pb->vhost, c->vhost, c->vhost_len);
    bytes_set(&pb->queue, c->queue, c->queue_len);
    b->who.router = c->who.router;
    b->who.conn = c->who.conn;
    b->who.channel = c->who.channel;
    b->who.consumer = c->who.consumer;
    pb->who = &b->who;
    pb->passive = c->passive;
    pb->durable = c->durable;
    pb->exclusive = c->exclusive;
    pb->auto_delete = c->auto_delete;
    b->args.has_message_ttl = a->has_message_ttl;
    b->args.has_expires = a->has_expires;
    b->args.has_max_length = a->has_max_length;
    b->args.has_dlx = a->has_dlx;
    b->args.has_dlrk = a->has_dlrk;
    b->args.message_ttl_ms = a->message_ttl_ms;
    b->args.expires_ms = a->expires_ms;
    b->args.max_length = a->max_length;
    b->args.overflow_reject = a->overflow_reject;
    bytes_set(&b->args.dlx, a->dlx, a->dlx_len);
    bytes_set(&b->args.dlrk, a->dlrk, a->dlrk_len);
    /* Only DECLARE reads args: other commands stay small in the log. */
    if (c->type == MQ_SM_DECLARE) {
        pb->args = &b->args;
    }
    pb->if_unused = c->if_unused;
    pb->if_empty = c->if_empty;
    pb->client_id = c->client_id;
    pb->seq = c->seq;
    pb->prev_seq = c->prev_seq;
    pb->has_ttl = c->has_ttl;
    pb->ttl_ms = c->ttl_ms;
    bytes_set(&pb->body, c->body, c->body_len);
    pb->max_messages = c->max_messages;
    pb->prefetch = c->prefetch;
    pb->scope = (uint32_t)c->scope;
    pb->tag = c->tag;
    pb->multiple = c->multiple;
    pb->n_tags = c->n_tags;
    pb->tags = (uint64_t *)c->tags; /* read only while packing */
    pb->wait_ms = wait_ms;
    pb->place_gen = c->place_gen;
    return 0;
}

void mq_pb_cmd_buf_clear(struct mq_pb_cmd_buf *b)
{
    /* Nothing is allocated today; callers still clear so the buffer may
     * grow owned parts without touching them. */
    memset(b, 0, sizeof(*b));
}

int mq_pb_cmd_from_pb(const Ringmq__MqCommand *pb, struct mq_sm_cmd *c,
                      uint32_t *wait_ms)
{
    const Ringmq__MqQueueArgs *a = pb->args;

    if (pb->type >= MQ_SM_CMD__COUNT || pb->scope >= MQ_SM_SCOPE__COUNT ||
        pb->n_tags > MQ_SM_MAX_TAGS ||
        !name_ok(&pb->vhost) || !name_ok(&pb->queue) ||
        !body_ok(&pb->body)) {
        return -1;
    }
    if (a != NULL && (!name_ok(&a->dlx) || !name_ok(&a->dlrk))) {
        return -1;
    }
    memset(c, 0, sizeof(*c));
    c->type = (enum mq_sm_cmd_type)pb->type;
    c->vhost = bytes_ptr(&pb->vhost);
    c->vhost_len = pb->vhost.len;
    c->queue = bytes_ptr(&pb->queue);
    c->queue_len = pb->queue.len;
    if (pb->who != NULL) {
        c->who.router = pb->who->router;
        c->who.conn = pb->who->conn;
        c->who.channel = pb->who->channel;
        c->who.consumer = pb->who->consumer;
    }
    c->passive = pb->passive;
    c->durable = pb->durable;
    c->exclusive = pb->exclusive;
    c->auto_delete = pb->auto_delete;
    if (a != NULL) {
        c->args.has_message_ttl = a->has_message_ttl;
        c->args.has_expires = a->has_expires;
        c->args.has_max_length = a->has_max_length;
        c->args.has_dlx = a->has_dlx;
        c->args.has_dlrk = a->has_dlrk;
        c->args.message_ttl_ms = a->message_ttl_ms;
        c->args.expires_ms = a->expires_ms;
        c->args.max_length = a->max_length;
        c->args.overflow_reject = a->overflow_reject;
        c->args.dlx = bytes_ptr(&a->dlx);
        c->args.dlx_len = a->dlx.len;
        c->args.dlrk = bytes_ptr(&a->dlrk);
        c->args.dlrk_len = a->dlrk.len;
    } else {
        c->args.dlx = "";
        c->args.dlrk = "";
    }
    c->if_unused = pb->if_unused;
    c->if_empty = pb->if_empty;
    c->client_id = pb->client_id;
    c->seq = pb->seq;
    c->prev_seq = pb->prev_seq;
    c->has_ttl = pb->has_ttl;
    c->ttl_ms = pb->ttl_ms;
    c->body = pb->body.len > 0 ? (const void *)pb->body.data : NULL;
    c->body_len = pb->body.len;
    c->max_messages = pb->max_messages;
    c->prefetch = pb->prefetch;
    c->scope = (enum mq_sm_scope)pb->scope;
    c->tag = pb->tag;
    c->multiple = pb->multiple;
    c->tags = pb->tags;
    c->n_tags = pb->n_tags;
    c->place_gen = pb->place_gen;
    if (wait_ms != NULL) {
        *wait_ms = pb->wait_ms;
    }
    return 0;
}

/* --------------------------------------------------------- mq results */

int mq_pb_result_to_pb(const struct mq_sm_result *r,
                       struct mq_pb_result_buf *b)
{
    Ringmq__MqResult *pb = &b->pb;
    size_t i;

    memset(b, 0, sizeof(*b));
    ringmq__mq_result__init(pb);
    pb->status = (uint32_t)r->status;
    pb->reply_code = r->reply_code;
    pb->reply_text = (char *)(uintptr_t)(r->reply_text != NULL
                                             ? r->reply_text
                                             : "");
    pb->msg_id = r->msg_id;
    pb->count = r->count;
    pb->consumer_count = r->consumer_count;
    pb->message_count = r->message_count;
    pb->incomplete = r->incomplete;
    pb->moved = r->moved;
    pb->gen = r->gen;
    if (r->n_deliveries > 0) {
        b->deliveries = xcalloc(r->n_deliveries, sizeof(*b->deliveries));
        b->delivery_ptrs = xcalloc(r->n_deliveries, sizeof(*b->delivery_ptrs));
        for (i = 0; i < r->n_deliveries; i++) {
            const struct mq_sm_delivery *d = &r->deliveries[i];
            Ringmq__MqDelivery *p = &b->deliveries[i];

            ringmq__mq_delivery__init(p);
            p->tag = d->tag;
            p->msg_id = d->msg_id;
            p->delivery_count = d->delivery_count;
            p->redelivered = d->redelivered;
            bytes_set(&p->body, d->body, d->body_len);
            b->delivery_ptrs[i] = p;
        }
        pb->deliveries = b->delivery_ptrs;
        pb->n_deliveries = r->n_deliveries;
    }
    if (r->n_dead > 0) {
        b->dead = xcalloc(r->n_dead, sizeof(*b->dead));
        b->dead_ptrs = xcalloc(r->n_dead, sizeof(*b->dead_ptrs));
        for (i = 0; i < r->n_dead; i++) {
            const struct mq_sm_dead_letter *d = &r->dead[i];
            Ringmq__MqDeadLetter *p = &b->dead[i];

            ringmq__mq_dead_letter__init(p);
            p->reason = (uint32_t)d->reason;
            p->msg_id = d->msg_id;
            p->outbox_id = d->outbox_id;
            p->gen = d->gen;
            p->has_dlrk = d->has_dlrk;
            bytes_set(&p->vhost, d->vhost, d->vhost_len);
            bytes_set(&p->queue, d->queue, d->queue_len);
            bytes_set(&p->dlx, d->dlx, d->dlx_len);
            bytes_set(&p->dlrk, d->dlrk, d->dlrk_len);
            bytes_set(&p->body, d->body, d->body_len);
            b->dead_ptrs[i] = p;
        }
        pb->dead = b->dead_ptrs;
        pb->n_dead = r->n_dead;
    }
    if (r->n_deleted > 0) {
        b->deleted = xcalloc(r->n_deleted, sizeof(*b->deleted));
        b->deleted_ptrs = xcalloc(r->n_deleted, sizeof(*b->deleted_ptrs));
        for (i = 0; i < r->n_deleted; i++) {
            const struct mq_sm_deleted *d = &r->deleted[i];
            Ringmq__MqDeleted *p = &b->deleted[i];

            ringmq__mq_deleted__init(p);
            p->reason = (uint32_t)d->reason;
            p->gen = d->gen;
            bytes_set(&p->vhost, d->vhost, d->vhost_len);
            bytes_set(&p->queue, d->queue, d->queue_len);
            b->deleted_ptrs[i] = p;
        }
        pb->deleted = b->deleted_ptrs;
        pb->n_deleted = r->n_deleted;
    }
    return 0;
}

void mq_pb_result_buf_clear(struct mq_pb_result_buf *b)
{
    free(b->deliveries);
    free(b->delivery_ptrs);
    free(b->dead);
    free(b->dead_ptrs);
    free(b->deleted);
    free(b->deleted_ptrs);
    memset(b, 0, sizeof(*b));
}

/* Copies below use malloc/realloc exactly as mq_sm.c does, since
 * mq_sm_result_clear() is what frees them: bodies one block each (NULL when
 * empty), a dead letter's vhost/queue/dlx/dlrk/body one block freed through
 * vhost, a deleted queue's vhost/queue one block freed through vhost. */
static char *dup_concat(const ProtobufCBinaryData *parts, size_t n)
{
    size_t len = 0;
    size_t i;
    char *p;
    char *at;

    for (i = 0; i < n; i++) {
        len += parts[i].len;
    }
    p = xmalloc(len > 0 ? len : 1);
    at = p;
    for (i = 0; i < n; i++) {
        if (parts[i].len > 0) {
            memcpy(at, parts[i].data, parts[i].len);
            at += parts[i].len;
        }
    }
    return p;
}

static int result_check(const Ringmq__MqResult *pb)
{
    size_t i;

    if (pb->status >= MQ_SM_STATUS__COUNT || pb->reply_code > UINT16_MAX) {
        return -1;
    }
    for (i = 0; i < pb->n_deliveries; i++) {
        if (pb->deliveries[i] == NULL || !body_ok(&pb->deliveries[i]->body)) {
            return -1;
        }
    }
    for (i = 0; i < pb->n_dead; i++) {
        const Ringmq__MqDeadLetter *d = pb->dead[i];

        if (d == NULL || d->reason > MQ_SM_DL_MAXLEN || !name_ok(&d->vhost) ||
            !name_ok(&d->queue) || !name_ok(&d->dlx) || !name_ok(&d->dlrk) ||
            !body_ok(&d->body)) {
            return -1;
        }
    }
    for (i = 0; i < pb->n_deleted; i++) {
        const Ringmq__MqDeleted *d = pb->deleted[i];

        if (d == NULL || d->reason > MQ_SM_DEL_MOVED || !name_ok(&d->vhost) ||
            !name_ok(&d->queue)) {
            return -1;
        }
    }
    return 0;
}

int mq_pb_result_from_pb(const Ringmq__MqResult *pb, struct mq_sm_result *r)
{
    size_t i;

    mq_sm_result_init(r);
    if (result_check(pb) != 0) {
        return -1;
    }
    r->status = (enum mq_sm_status)pb->status;
    r->reply_code = (uint16_t)pb->reply_code;
    r->reply_text = intern_text(pb->reply_text, pb->reply_code);
    r->msg_id = pb->msg_id;
    r->count = pb->count;
    r->consumer_count = pb->consumer_count;
    r->message_count = pb->message_count;
    r->incomplete = pb->incomplete;
    r->moved = pb->moved;
    r->gen = pb->gen;
    if (pb->n_deliveries > 0) {
        r->deliveries = xcalloc(pb->n_deliveries, sizeof(*r->deliveries));
        for (i = 0; i < pb->n_deliveries; i++) {
            const Ringmq__MqDelivery *p = pb->deliveries[i];
            struct mq_sm_delivery *d = &r->deliveries[i];

            d->tag = p->tag;
            d->msg_id = p->msg_id;
            d->delivery_count = p->delivery_count;
            d->redelivered = p->redelivered;
            d->body = p->body.len > 0 ? xmemdup(p->body.data, p->body.len)
                                      : NULL;
            d->body_len = p->body.len;
        }
        r->n_deliveries = pb->n_deliveries;
    }
    if (pb->n_dead > 0) {
        r->dead = xcalloc(pb->n_dead, sizeof(*r->dead));
        for (i = 0; i < pb->n_dead; i++) {
            const Ringmq__MqDeadLetter *p = pb->dead[i];
            struct mq_sm_dead_letter *d = &r->dead[i];
            ProtobufCBinaryData parts[4];
            char *blk;

            parts[0] = p->vhost;
            parts[1] = p->queue;
            parts[2] = p->dlx;
            parts[3] = p->dlrk;
            blk = dup_concat(parts, 4);
            d->reason = (enum mq_sm_dl_reason)p->reason;
            d->msg_id = p->msg_id;
            d->outbox_id = p->outbox_id;
            d->gen = p->gen;
            d->has_dlrk = p->has_dlrk;
            d->vhost = blk;
            d->vhost_len = p->vhost.len;
            d->queue = d->vhost + d->vhost_len;
            d->queue_len = p->queue.len;
            d->dlx = d->queue + d->queue_len;
            d->dlx_len = p->dlx.len;
            d->dlrk = d->dlx + d->dlx_len;
            d->dlrk_len = p->dlrk.len;
            /* its own block, as mq_sm_result_clear() frees it */
            d->body = p->body.len > 0 ? xmemdup(p->body.data, p->body.len)
                                      : NULL;
            d->body_len = p->body.len;
            r->n_dead = i + 1;
        }
    }
    if (pb->n_deleted > 0) {
        r->deleted = xcalloc(pb->n_deleted, sizeof(*r->deleted));
        for (i = 0; i < pb->n_deleted; i++) {
            const Ringmq__MqDeleted *p = pb->deleted[i];
            struct mq_sm_deleted *d = &r->deleted[i];
            ProtobufCBinaryData parts[2];
            char *blk;

            parts[0] = p->vhost;
            parts[1] = p->queue;
            blk = dup_concat(parts, 2);
            d->reason = (enum mq_sm_deleted_reason)p->reason;
            d->gen = p->gen;
            d->vhost = blk;
            d->vhost_len = p->vhost.len;
            d->queue = blk + d->vhost_len;
            d->queue_len = p->queue.len;
            r->n_deleted = i + 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------ meta commands */

int mq_pb_meta_cmd_to_pb(const struct meta_sm_cmd *c,
                         struct mq_pb_meta_buf *b)
{
    Ringmq__MetaCommand *pb = &b->pb;
    size_t i;

    memset(b, 0, sizeof(*b));
    ringmq__meta_command__init(pb);
    if ((unsigned)c->type >= META_SM_CMD__COUNT ||
        (unsigned)c->exchange_type >= META_SM_EXCHANGE_TYPE__COUNT) {
        return -1;
    }
    pb->type = (uint32_t)c->type;
    bytes_set(&pb->vhost, c->vhost, c->vhost_len);
    bytes_set(&pb->exchange, c->exchange, c->exchange_len);
    pb->exchange_type = (uint32_t)c->exchange_type;
    pb->passive = c->passive;
    pb->durable = c->durable;
    pb->auto_delete = c->auto_delete;
    pb->internal = c->internal;
    pb->if_unused = c->if_unused;
    bytes_set(&pb->dest, c->dest, c->dest_len);
    pb->dest_is_exchange = c->dest_is_exchange;
    bytes_set(&pb->routing_key, c->routing_key, c->routing_key_len);
    bytes_set(&pb->shard, c->shard, c->shard_len);
    bytes_set(&pb->target, c->target, c->target_len);
    pb->gen = c->gen;
    if (c->n_args > 0) {
        b->kv = xcalloc(c->n_args, sizeof(*b->kv));
        b->kv_ptrs = xcalloc(c->n_args, sizeof(*b->kv_ptrs));
        for (i = 0; i < c->n_args; i++) {
            ringmq__meta_kv__init(&b->kv[i]);
            bytes_set(&b->kv[i].key, c->args[i].key, c->args[i].key_len);
            bytes_set(&b->kv[i].value, c->args[i].value,
                      c->args[i].value_len);
            b->kv_ptrs[i] = &b->kv[i];
        }
        pb->args = b->kv_ptrs;
        pb->n_args = c->n_args;
    }
    return 0;
}

void mq_pb_meta_buf_clear(struct mq_pb_meta_buf *b)
{
    free(b->kv);
    free(b->kv_ptrs);
    memset(b, 0, sizeof(*b));
}

/* Field values and routing keys are not shortstrs: cap them generously
 * (a field table entry cannot exceed a frame anyway). */
#define MQ_PB_VALUE_MAX (1u << 24)

int mq_pb_meta_cmd_from_pb(const Ringmq__MetaCommand *pb,
                           struct meta_sm_cmd *c)
{
    struct meta_sm_kv *kv = NULL;
    size_t i;

    if (pb->type >= META_SM_CMD__COUNT ||
        pb->exchange_type >= META_SM_EXCHANGE_TYPE__COUNT ||
        !name_ok(&pb->vhost) || !name_ok(&pb->exchange) ||
        !name_ok(&pb->dest) || !name_ok(&pb->routing_key) ||
        !name_ok(&pb->shard) || !name_ok(&pb->target)) {
        return -1; /* meta_sm answers 502 for shard names of 64..255 */
    }
    for (i = 0; i < pb->n_args; i++) {
        const Ringmq__MetaKv *p = pb->args[i];

        if (p == NULL || !name_ok(&p->key) ||
            p->value.len > MQ_PB_VALUE_MAX ||
            (p->value.len > 0 && p->value.data == NULL)) {
            return -1;
        }
    }
    if (pb->n_args > 0) {
        kv = xcalloc(pb->n_args, sizeof(*kv));
        for (i = 0; i < pb->n_args; i++) {
            kv[i].key = bytes_ptr(&pb->args[i]->key);
            kv[i].key_len = pb->args[i]->key.len;
            kv[i].value = bytes_ptr(&pb->args[i]->value);
            kv[i].value_len = pb->args[i]->value.len;
        }
    }
    memset(c, 0, sizeof(*c));
    c->type = (enum meta_sm_cmd_type)pb->type;
    c->vhost = bytes_ptr(&pb->vhost);
    c->vhost_len = pb->vhost.len;
    c->exchange = bytes_ptr(&pb->exchange);
    c->exchange_len = pb->exchange.len;
    c->exchange_type = (enum meta_sm_exchange_type)pb->exchange_type;
    c->passive = pb->passive;
    c->durable = pb->durable;
    c->auto_delete = pb->auto_delete;
    c->internal = pb->internal;
    c->if_unused = pb->if_unused;
    c->dest = bytes_ptr(&pb->dest);
    c->dest_len = pb->dest.len;
    c->dest_is_exchange = pb->dest_is_exchange;
    c->routing_key = bytes_ptr(&pb->routing_key);
    c->routing_key_len = pb->routing_key.len;
    c->args = kv;
    c->n_args = pb->n_args;
    c->shard = bytes_ptr(&pb->shard);
    c->shard_len = pb->shard.len;
    c->target = bytes_ptr(&pb->target);
    c->target_len = pb->target.len;
    c->gen = pb->gen;
    return 0;
}

void mq_pb_meta_cmd_release(struct meta_sm_cmd *c)
{
    free((void *)(uintptr_t)c->args);
    c->args = NULL;
    c->n_args = 0;
}

void mq_pb_meta_result_to_pb(const struct meta_sm_result *r,
                             Ringmq__MetaResult *pb)
{
    ringmq__meta_result__init(pb);
    pb->reply_code = r->reply_code;
    pb->reply_text = (char *)(uintptr_t)(r->reply_text != NULL
                                             ? r->reply_text
                                             : "");
    pb->version = r->version;
    pb->changed = r->changed;
    /* borrowed from @r, like reply_text */
    bytes_set(&pb->placement_shard, r->placement.shard,
              strlen(r->placement.shard));
    pb->placement_gen = r->placement.gen;
    pb->placement_moving = r->placement.moving;
    bytes_set(&pb->placement_target, r->placement.target,
              strlen(r->placement.target));
    pb->placement_move_gen = r->placement.move_gen;
}

/* Into a char[META_SM_SHARD_MAX + 1]. */
static bool shard_from(const ProtobufCBinaryData *b, char *out)
{
    if (b->len > META_SM_SHARD_MAX || (b->len > 0 && b->data == NULL)) {
        return false;
    }
    memcpy(out, bytes_ptr(b), b->len);
    out[b->len] = '\0';
    return true;
}

int mq_pb_meta_result_from_pb(const Ringmq__MetaResult *pb,
                              struct meta_sm_result *r)
{
    memset(r, 0, sizeof(*r));
    r->reply_text = "";
    if (pb->reply_code > UINT16_MAX) {
        return -1;
    }
    if (!shard_from(&pb->placement_shard, r->placement.shard) ||
        !shard_from(&pb->placement_target, r->placement.target)) {
        memset(&r->placement, 0, sizeof(r->placement));
        return -1;
    }
    r->reply_code = (uint16_t)pb->reply_code;
    r->reply_text = intern_text(pb->reply_text, pb->reply_code);
    r->version = pb->version;
    r->changed = pb->changed;
    r->placement.gen = pb->placement_gen;
    r->placement.moving = pb->placement_moving;
    r->placement.move_gen = pb->placement_move_gen;
    return 0;
}
