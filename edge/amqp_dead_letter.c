/*
 * amqp_dead_letter: republishing dead letters; contract in
 * amqp_dead_letter.h.
 */
#include "edge/amqp_dead_letter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/fnv.h"
#include "common/le.h"
#include "edge/amqp_edge.h"
#include "proto/amqp_method.h"
#include "proto/amqp_msg.h"

static const char *dl_reason(enum mq_sm_dl_reason r)
{
    switch (r) {
    case MQ_SM_DL_EXPIRED:
        return "expired";
    case MQ_SM_DL_MAXLEN:
        return "maxlen";
    default:
        return "rejected";
    }
}

static void put_bytes_field(struct amqp_table *t, const char *key,
                            const void *data, size_t len)
{
    struct amqp_field *f = amqp_table_add(t, key, AMQP_FIELD_LONGSTR);

    f->v.bytes = amqp_table_copy_bytes(t, data, len);
}

/* The content header of a dead letter: the original with x-death (newest
 * first) and the x-first-death-* headers RabbitMQ adds. */
static int dead_letter_header(const struct mq_sm_dead_letter *d,
                              const struct amqp_msg_view *v, struct buf *out)
{
    struct amqp_content_header h;
    struct amqp_table *t = amqp_table_new();
    struct amqp_table *death;
    struct amqp_array *deaths;
    struct amqp_array *rks;
    struct amqp_field *f;
    const struct amqp_field *old_death = NULL;
    struct amqp_table *old;
    bool first = true;
    int rv;

    if (amqp_content_header_decode(v->header.data, v->header.len, &h) != 0) {
        amqp_table_free(t);
        return -1;
    }
    deaths = amqp_table_add_array(t, "x-death");
    f = amqp_array_add(deaths, AMQP_FIELD_TABLE);
    death = amqp_table_new();
    f->v.table = death;
    f = amqp_table_add(death, "count", AMQP_FIELD_I64);
    f->v.i64 = 1;
    amqp_table_add_longstr(death, "reason", dl_reason(d->reason));
    put_bytes_field(death, "queue", d->queue, d->queue_len);
    f = amqp_table_add(death, "time", AMQP_FIELD_TIMESTAMP);
    f->v.timestamp = clock_wall_ms() / 1000;
    put_bytes_field(death, "exchange", v->exchange.data, v->exchange.len);
    rks = amqp_table_add_array(death, "routing-keys");
    f = amqp_array_add(rks, AMQP_FIELD_LONGSTR);
    f->v.bytes.data = v->routing_key.data;
    f->v.bytes.len = v->routing_key.len;
    if (h.props.flags & AMQP_BASIC_HEADERS) {
        old_death = amqp_table_get(h.props.headers, "x-death");
        first = amqp_table_get(h.props.headers, "x-first-death-reason") ==
                NULL;
    }
    if (old_death && old_death->type == AMQP_FIELD_ARRAY) {
        size_t i;

        for (i = 0; i < old_death->v.array->count; i++) {
            *amqp_array_add(deaths, old_death->v.array->items[i].type) =
                old_death->v.array->items[i];
        }
    }
    if (first) {
        amqp_table_add_longstr(t, "x-first-death-reason", dl_reason(d->reason));
        put_bytes_field(t, "x-first-death-queue", d->queue, d->queue_len);
        put_bytes_field(t, "x-first-death-exchange", v->exchange.data,
                        v->exchange.len);
    }
    if (h.props.flags & AMQP_BASIC_HEADERS) {
        size_t i;

        for (i = 0; i < h.props.headers->count; i++) {
            const struct amqp_table_entry *e = &h.props.headers->entries[i];
            char key[256];

            if (amqp_bytes_eq(e->key, "x-death")) {
                continue;
            }
            snprintf(key, sizeof(key), "%.*s", (int)e->key.len,
                     (const char *)e->key.data);
            *amqp_table_add(t, key, e->value.type) = e->value;
        }
    }
    /* Per-message TTL does not follow a dead letter (RabbitMQ removes it). */
    h.props.flags &= (uint16_t)~AMQP_BASIC_EXPIRATION;
    /* t borrows values of the old headers: free them after encoding. */
    old = (h.props.flags & AMQP_BASIC_HEADERS) ? h.props.headers : NULL;
    h.props.headers = t;
    h.props.flags |= AMQP_BASIC_HEADERS;
    rv = amqp_content_header_encode_payload(out, &h);
    amqp_table_free(old);
    amqp_table_free(death);
    amqp_table_free(t);
    return rv;
}

uint64_t edge_dead_letter_client(const struct mq_sm_dead_letter *d)
{
    /* "dlx" | u8 vhost_len | vhost | u8 queue_len | queue | gen, le */
    unsigned char key[3 + 1 + MQ_SM_NAME_MAX + 1 + MQ_SM_NAME_MAX + 8];
    unsigned char *p = key;
    uint64_t h;

    memcpy(p, "dlx", 3);
    p += 3;
    *p++ = (unsigned char)d->vhost_len;
    memcpy(p, d->vhost, d->vhost_len);
    p += d->vhost_len;
    *p++ = (unsigned char)d->queue_len;
    memcpy(p, d->queue, d->queue_len);
    p += d->queue_len;
    p = le_put_u64(p, d->gen);
    h = fnv1a64(key, (size_t)(p - key));
    return h != 0 ? h : 1;
}

void *edge_dead_letter_data(const struct edge_call *ec)
{
    return ec->extra != NULL ? *(void **)ec->extra : NULL;
}

int edge_dead_letter(struct edge_calls *k, const struct mq_sm_dead_letter *d,
                     void (*done)(struct edge_call *ec), void *data)
{
    struct amqp_msg_view v;
    struct buf header;
    struct buf blob;
    struct meta_sm_route_result route;
    struct amqp_bytes rk;
    const struct meta_sm *view = k->broker.ops->meta_view(k->broker.self);
    int sent = 0;
    size_t i;

    if (view == NULL) {
        return -1;
    }
    if (amqp_msg_decode(d->body, d->body_len, &v) != 0) {
        return 0;
    }
    rk = v.routing_key;
    if (d->has_dlrk) {
        rk.data = (const uint8_t *)d->dlrk;
        rk.len = d->dlrk_len;
    }
    buf_init(&header);
    buf_init(&blob);
    meta_sm_route_result_init(&route);
    if (dead_letter_header(d, &v, &header) != 0 ||
        amqp_msg_encode(&blob,
                        (struct amqp_bytes){(const uint8_t *)d->dlx, d->dlx_len},
                        rk,
                        (struct amqp_bytes){(const uint8_t *)header.data,
                                            header.len},
                        v.body) != 0) {
        goto out;
    }
    meta_sm_route(view, d->vhost, d->vhost_len, d->dlx, d->dlx_len,
                  (const char *)rk.data, rk.len, NULL, 0, &route);
    for (i = 0; i < route.n_queues; i++) {
        struct edge_call *ec = edge_call_new(k, NULL, done);
        void **holder = xmalloc(sizeof(*holder));

        *holder = data;
        ec->extra = holder;
        edge_call_set_queue(ec, route.queues[i].name, route.queues[i].len);
        buf_append(&ec->owned, blob.data, blob.len);
        ec->bc.kind = AMQP_BROKER_MQ;
        ec->bc.shard = edge_shard_of(k, ec->queue, ec->queue_len);
        ec->bc.mq.type = MQ_SM_ENQUEUE;
        ec->bc.mq.body = ec->owned.data;
        ec->bc.mq.body_len = ec->owned.len;
        if (d->outbox_id != 0) {
            ec->bc.mq.client_id = edge_dead_letter_client(d);
            ec->bc.mq.seq = d->outbox_id;
        }
        ec->deadline_ms = clock_mono_ms() + EDGE_ENQUEUE_RETRY_MS;
        sent++;
        edge_call_submit(ec);
    }
out:
    meta_sm_route_result_clear(&route);
    buf_free(&header);
    buf_free(&blob);
    return sent;
}
