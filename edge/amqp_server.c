/*
 * amqp_server: the AMQP edge's listener and the work that belongs to no
 * connection: the tick, broker calls that outlive a connection, dead-letter
 * republishing. Contract in amqp_server.h; shared structures in amqp_edge.h.
 *
 * The tick sends EXPIRE to every shard: it applies TTLs and x-expires, and
 * because it carries this edge's router id it renews the edge's lease on
 * its deliveries (a shard leader returns the deliveries of an edge it has
 * not heard from). A publish blocked by a watermark is the connection's
 * business; the tick only notices the change.
 *
 * Dead letters come back in the result of whatever command removed the
 * message (reject, expiry, max-length); the edge that got the result routes
 * them to their dead-letter exchange with an x-death header, as RabbitMQ
 * does, without dedup (a retried drop may dead-letter twice: at least once).
 */
#include "edge/amqp_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/container_of.h"
#include "common/tcp_listen.h"
#include "edge/amqp_edge.h"
#include "proto/amqp_msg.h"

static void server_maybe_free(struct amqp_server *s)
{
    void (*cb)(void *data);
    void *data;

    if (!s->closing || s->handles > 0 || s->calls > 0) {
        return;
    }
    cb = s->close_cb;
    data = s->close_data;
    free(s);
    if (cb) {
        cb(data);
    }
}

void edge_server_handle_closed(struct amqp_server *s)
{
    s->handles--;
    server_maybe_free(s);
}

/* ---------------------------------------------------------------- calls */

static void edge_call_free(struct edge_call *ec)
{
    if (ec->bc.kind == AMQP_BROKER_MQ) {
        mq_sm_result_clear(&ec->bc.mq_result);
    }
    buf_free(&ec->owned);
    free(ec->extra);
    if (ec->conn) {
        amqp_conn_unref(ec->conn);
    }
    free(ec);
}

static void on_broker_done(struct amqp_broker_call *bc)
{
    struct edge_call *ec = container_of(bc, struct edge_call, bc);
    struct amqp_server *s = ec->srv;

    ec->retry_at_ms = 0;
    ec->done(ec);
    if (ec->retry_at_ms == 0) {
        edge_call_free(ec);
    }
    s->calls--;
    server_maybe_free(s);
}

struct edge_call *edge_call_new(struct amqp_server *s, struct amqp_conn *conn,
                                void (*done)(struct edge_call *ec))
{
    struct edge_call *ec = xcalloc(1, sizeof(*ec));

    ec->srv = s;
    ec->conn = conn;
    if (conn) {
        amqp_conn_ref(conn);
    }
    ec->done = done;
    buf_init(&ec->owned);
    mq_sm_result_init(&ec->bc.mq_result);
    ec->bc.mq.vhost = EDGE_VHOST;
    ec->bc.mq.vhost_len = EDGE_VHOST_LEN;
    ec->bc.mq.who.router = s->cfg.router_id;
    ec->bc.meta.vhost = EDGE_VHOST;
    ec->bc.meta.vhost_len = EDGE_VHOST_LEN;
    return ec;
}

void edge_call_set_queue(struct edge_call *ec, const void *name, size_t len)
{
    if (len > sizeof(ec->queue)) {
        len = sizeof(ec->queue);
    }
    memcpy(ec->queue, name, len);
    ec->queue_len = len;
    ec->bc.mq.queue = ec->queue;
    ec->bc.mq.queue_len = len;
}

void edge_call_submit(struct edge_call *ec)
{
    struct amqp_server *s = ec->srv;

    s->calls++;
    ec->submitted_ms = clock_mono_ms();
    ec->bc.cb = on_broker_done;
    ec->bc.status = AMQP_BROKER_OK;
    if (ec->bc.kind == AMQP_BROKER_MQ) {
        mq_sm_result_clear(&ec->bc.mq_result);
    }
    s->broker.ops->submit(s->broker.self, &ec->bc);
}

static void on_retry(uv_timer_t *t);

void edge_call_retry(struct edge_call *ec)
{
    struct amqp_server *s = ec->srv;

    ec->retry_at_ms = clock_mono_ms() + EDGE_RETRY_TICK_MS;
    ec->retry_next = s->retry_list;
    s->retry_list = ec;
    /* Counted as in flight while parked, so close waits for it. */
    s->calls++;
    if (!s->closing && !uv_is_active((uv_handle_t *)&s->retry)) {
        uv_timer_start(&s->retry, on_retry, EDGE_RETRY_TICK_MS, 0);
    }
}

static void on_retry(uv_timer_t *t)
{
    struct amqp_server *s = t->data;
    uint64_t now = clock_mono_ms();
    struct edge_call **pp = &s->retry_list;
    bool more = false;

    while (*pp) {
        struct edge_call *ec = *pp;

        if (ec->retry_at_ms <= now || s->closing) {
            *pp = ec->retry_next;
            ec->retry_next = NULL;
            s->calls--;
            edge_call_submit(ec);
            continue;
        }
        more = true;
        pp = &ec->retry_next;
    }
    if (more && !s->closing) {
        uv_timer_start(&s->retry, on_retry, EDGE_RETRY_TICK_MS, 0);
    }
}

uint64_t edge_new_consumer_id(struct amqp_server *s)
{
    /* Unique within a shard across edges: the router ids are random. */
    uint64_t x = s->cfg.router_id + (++s->next_consumer) * 0x9e3779b97f4a7c15ULL;

    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 29;
    return x ? x : 1;
}

/* ------------------------------------------------ deleted queues, DLX */

static void on_queue_gone_done(struct edge_call *ec)
{
    if (ec->bc.status != AMQP_BROKER_OK) {
        log_warn("amqp: bindings of deleted queue '%.*s' not dropped",
                 (int)ec->queue_len, ec->queue);
    }
}

static void queue_gone(struct amqp_server *s, const char *name, size_t len)
{
    struct edge_call *ec = edge_call_new(s, NULL, on_queue_gone_done);

    edge_call_set_queue(ec, name, len);
    ec->bc.kind = AMQP_BROKER_META;
    ec->bc.meta.type = META_SM_QUEUE_GONE;
    ec->bc.meta.dest = ec->queue;
    ec->bc.meta.dest_len = ec->queue_len;
    edge_call_submit(ec);
}

static void on_republish_done(struct edge_call *ec)
{
    if (ec->bc.status != AMQP_BROKER_OK) {
        log_warn("amqp: dead letter to '%.*s' lost: broker unavailable",
                 (int)ec->queue_len, ec->queue);
        return;
    }
    edge_after_result(ec->srv, &ec->bc.mq_result);
}

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

static void republish(struct amqp_server *s, const struct mq_sm_dead_letter *d)
{
    struct amqp_msg_view v;
    struct buf header;
    struct buf blob;
    struct meta_sm_route_result route;
    struct amqp_bytes rk;
    const struct meta_sm *view = s->broker.ops->meta_view(s->broker.self);
    size_t i;

    if (amqp_msg_decode(d->body, d->body_len, &v) != 0) {
        return;
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
    if (view == NULL) {
        goto out;
    }
    meta_sm_route(view, d->vhost, d->vhost_len, d->dlx, d->dlx_len,
                  (const char *)rk.data, rk.len, NULL, 0, &route);
    for (i = 0; i < route.n_queues; i++) {
        struct edge_call *ec = edge_call_new(s, NULL, on_republish_done);

        edge_call_set_queue(ec, route.queues[i].name, route.queues[i].len);
        buf_append(&ec->owned, blob.data, blob.len);
        ec->bc.kind = AMQP_BROKER_MQ;
        ec->bc.shard = s->broker.ops->shard_of(s->broker.self, EDGE_VHOST,
                                               EDGE_VHOST_LEN, ec->queue,
                                               ec->queue_len);
        ec->bc.mq.type = MQ_SM_ENQUEUE;
        ec->bc.mq.body = ec->owned.data;
        ec->bc.mq.body_len = ec->owned.len;
        edge_call_submit(ec);
    }
out:
    meta_sm_route_result_clear(&route);
    buf_free(&header);
    buf_free(&blob);
}

void edge_after_result(struct amqp_server *s, const struct mq_sm_result *r)
{
    size_t i;

    if (s->closing) {
        return;
    }
    for (i = 0; i < r->n_dead; i++) {
        republish(s, &r->dead[i]);
    }
    for (i = 0; i < r->n_deleted; i++) {
        queue_gone(s, r->deleted[i].queue, r->deleted[i].queue_len);
    }
}

static void on_return_done(struct edge_call *ec)
{
    if (ec->bc.status == AMQP_BROKER_UNAVAILABLE &&
        clock_mono_ms() < ec->deadline_ms && !ec->srv->closing) {
        edge_call_retry(ec);
        return;
    }
    if (ec->bc.status == AMQP_BROKER_OK) {
        edge_after_result(ec->srv, &ec->bc.mq_result);
    }
}

void edge_return_everywhere(struct amqp_server *s, enum mq_sm_scope scope,
                            const struct mq_sm_who *who)
{
    unsigned n = s->broker.ops->shard_count(s->broker.self);
    unsigned i;

    for (i = 0; i < n; i++) {
        struct edge_call *ec = edge_call_new(s, NULL, on_return_done);

        ec->bc.kind = AMQP_BROKER_MQ;
        ec->bc.shard = i;
        ec->bc.mq.type = MQ_SM_RETURN;
        ec->bc.mq.scope = scope;
        ec->bc.mq.who = *who;
        /* If this is lost, the shard's lease on this edge returns them. */
        ec->deadline_ms = clock_mono_ms() + EDGE_ENQUEUE_RETRY_MS;
        edge_call_submit(ec);
    }
}

void edge_return_deliveries(struct amqp_server *s, unsigned shard,
                            const struct mq_sm_who *who,
                            const struct mq_sm_result *r)
{
    size_t i;

    for (i = 0; i < r->n_deliveries; i++) {
        struct edge_call *ec = edge_call_new(s, NULL, on_return_done);

        ec->bc.kind = AMQP_BROKER_MQ;
        ec->bc.shard = shard;
        ec->bc.mq.type = MQ_SM_RETURN;
        ec->bc.mq.scope = MQ_SM_SCOPE_TAG;
        ec->bc.mq.who = *who;
        ec->bc.mq.tag = r->deliveries[i].tag;
        ec->deadline_ms = clock_mono_ms() + EDGE_ENQUEUE_RETRY_MS;
        edge_call_submit(ec);
    }
}

/* ------------------------------------------------------------------ tick */

static void on_expire_done(struct edge_call *ec)
{
    if (ec->bc.status == AMQP_BROKER_OK) {
        edge_after_result(ec->srv, &ec->bc.mq_result);
    }
}

static void on_tick(uv_timer_t *t)
{
    struct amqp_server *s = t->data;
    unsigned n = s->broker.ops->shard_count(s->broker.self);
    bool blocked;
    unsigned i;

    for (i = 0; i < n; i++) {
        struct edge_call *ec = edge_call_new(s, NULL, on_expire_done);

        ec->bc.kind = AMQP_BROKER_MQ;
        ec->bc.shard = i;
        ec->bc.mq.type = MQ_SM_EXPIRE;
        edge_call_submit(ec);
    }
    blocked = s->broker.ops->should_block &&
              s->broker.ops->should_block(s->broker.self);
    if (blocked != s->blocked) {
        struct amqp_conn *c;

        s->blocked = blocked;
        log_warn("amqp: publishers %s", blocked ? "blocked" : "unblocked");
        for (c = s->conns; c; c = amqp_conn_next(c)) {
            amqp_conn_set_blocked(c, blocked);
        }
    }
}

/* --------------------------------------------------------------- server */

static void on_connection(uv_stream_t *listener, int status)
{
    struct amqp_server *s = listener->data;

    if (status < 0) {
        log_warn("amqp: accept failed: %s", uv_strerror(status));
        return;
    }
    amqp_conn_accept(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct amqp_server *s = h->data;

    s->handles--;
    server_maybe_free(s);
}

struct amqp_server *amqp_server_new(uv_loop_t *loop,
                                    const struct amqp_server_config *cfg,
                                    const struct amqp_broker *broker,
                                    char *errmsg, size_t errlen)
{
    struct amqp_server *s;
    const char *host = cfg->host ? cfg->host : "127.0.0.1";
    char sub[192];
    int rc;

    if (broker == NULL || broker->ops == NULL || broker->ops->submit == NULL) {
        snprintf(errmsg, errlen, "amqp: no broker");
        return NULL;
    }
    if (cfg->port < 0 || cfg->port > 65535) {
        snprintf(errmsg, errlen, "amqp: bad port %d", cfg->port);
        return NULL;
    }
    s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->broker = *broker;
    s->cfg = *cfg;
    snprintf(s->host, sizeof(s->host), "%s", host);
    s->cfg.host = s->host;
    if (s->cfg.frame_max == 0) {
        s->cfg.frame_max = AMQP_FRAME_MAX_DEFAULT;
    }
    if (s->cfg.frame_max < AMQP_FRAME_MIN_SIZE) {
        s->cfg.frame_max = AMQP_FRAME_MIN_SIZE;
    }
    if (s->cfg.channel_max == 0) {
        s->cfg.channel_max = 2047;
    }
    if (s->cfg.heartbeat_s == 0) {
        s->cfg.heartbeat_s = 60;
    }
    if (s->cfg.tick_ms == 0) {
        s->cfg.tick_ms = 1000;
    }
    if (s->cfg.n_users == 0) {
        snprintf(s->cfg.users[0].name, sizeof(s->cfg.users[0].name), "guest");
        snprintf(s->cfg.users[0].password, sizeof(s->cfg.users[0].password),
                 "guest");
        s->cfg.users[0].loopback_only = true;
        s->cfg.n_users = 1;
    }
    rc = uv_tcp_init(loop, &s->listener);
    if (rc != 0) {
        snprintf(errmsg, errlen, "amqp: tcp init: %s", uv_strerror(rc));
        free(s);
        return NULL;
    }
    s->listener.data = s;
    s->handles = 1;
    uv_timer_init(loop, &s->tick);
    s->tick.data = s;
    s->handles++;
    uv_timer_init(loop, &s->retry);
    s->retry.data = s;
    s->handles++;
    if (tcp_listen(&s->listener, host, cfg->port, 1024, on_connection,
                   &s->port, sub, sizeof(sub)) != 0) {
        snprintf(errmsg, errlen, "amqp: %s", sub);
        goto err;
    }
    uv_timer_start(&s->tick, on_tick, s->cfg.tick_ms, s->cfg.tick_ms);
    return s;
err:
    /* The handles are known to the loop: freed when the loop next runs. */
    s->closing = true;
    uv_close((uv_handle_t *)&s->listener, on_handle_closed);
    uv_close((uv_handle_t *)&s->tick, on_handle_closed);
    uv_close((uv_handle_t *)&s->retry, on_handle_closed);
    return NULL;
}

int amqp_server_port(const struct amqp_server *srv)
{
    return srv->port;
}

void amqp_server_stats(const struct amqp_server *srv,
                       struct amqp_server_stats *out)
{
    *out = srv->stats;
}

void amqp_server_close(struct amqp_server *s, void (*cb)(void *data),
                       void *data)
{
    s->close_cb = cb;
    s->close_data = data;
    /* Connections first, while closing is false: their teardown still
     * returns their deliveries through the broker. */
    while (s->conns) {
        amqp_conn_abort(s->conns);
    }
    s->closing = true;
    uv_timer_stop(&s->tick);
    if (s->retry_list) {
        on_retry(&s->retry);
    }
    uv_close((uv_handle_t *)&s->listener, on_handle_closed);
    uv_close((uv_handle_t *)&s->tick, on_handle_closed);
    uv_close((uv_handle_t *)&s->retry, on_handle_closed);
}
