/*
 * amqp_server: the AMQP edge's listener, its registry of connections and
 * the tick; contract in amqp_server.h.
 *
 * The tick sends EXPIRE to every shard: it applies TTLs and x-expires and
 * hands out dead letters again, and because it carries this edge's router
 * id it renews the edge's lease on its deliveries (a shard leader returns
 * the deliveries of an edge it has not heard from). A leader puts it in
 * its log only when one of those is due (node/mq_svc.h); otherwise it
 * only renews the lease, so an idle cluster writes nothing. A publish
 * blocked by a watermark is the connection's business; the server notices
 * the change, on every broker answer (a router hears a shard's watermark
 * in its answers) and on the tick (a broker's "blocked" may lapse with
 * time).
 *
 * The edge's files call one way, down (a file never calls one above it;
 * what must come back up goes through function pointers):
 *
 *   amqp_server      listener, registry, tick, close
 *     |  amqp_conn_env: gone(), closed()      (callbacks up)
 *     v
 *   amqp_conn        one TCP connection: negotiation (amqp_auth), frames,
 *     |              heartbeats, output, back-pressure, teardown
 *     |  struct chan_conn + chan_conn_ops     (callbacks up)
 *     v
 *   amqp_channel     one channel: input, content, ops in order (the pump),
 *     |              flow/qos/confirm/close, channel exceptions
 *     |  ch->wake (chan_wake)                 (callback up)
 *     v
 *   amqp_declare  amqp_exchange  amqp_deliver -> amqp_ack  amqp_publish
 *     |            per-method operations, started by the channel
 *     v
 *   amqp_fail, amqp_kv   reply texts of failed ops; tables as meta kv
 *     v
 *   amqp_op          ops, replies, broker calls for an op, names, the
 *     |              connection seen through chan_conn
 *     v
 *   amqp_after       RETURNs, dead letters (amqp_dead_letter), dropped
 *     |              bindings: work that outlives its asker
 *     v
 *   amqp_calls       broker calls: submit, retry list, count, ids
 *     |  edge_ref.zero(), edge_calls.idle()   (callbacks up)
 *     v
 *   amqp_broker.h (the broker's table)
 *
 * Headers without code: amqp_chan.h (a channel's state and struct
 * chan_conn), amqp_config.h (configuration, counters), amqp_edge.h
 * (limits). The server and the connections use amqp_after and amqp_calls
 * directly too (the tick's EXPIRE, a connection's RETURN).
 *
 * One publish with confirms, down and back up:
 *
 *   on_read (conn) -> amqp_channel_frame -> content complete -> pump
 *     -> chan_start_publish (publish) -> chan_op_call (op)
 *     -> edge_call_submit (calls) -> broker
 *   broker done -> on_enqueue_done (publish: the call's done pointer)
 *     -> cc->ops->enqueues (conn, by pointer); basic.ack into op->out
 *     -> chan_wake -> ch->wake (the channel's pump, by pointer)
 *     -> op->out into cc->out -> cc->ops->flush (conn, by pointer)
 */
#include "edge/amqp_server.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"
#include "common/tcp_listen.h"
#include "edge/amqp_after.h"
#include "edge/amqp_calls.h"
#include "edge/amqp_conn.h"
#include "edge/amqp_edge.h"
#include "proto/amqp_frame.h"

struct amqp_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t tick;
    struct amqp_server_config cfg;
    char host[256]; /* a literal or a DNS name (up to 253) */
    int port;
    struct edge_calls calls;
    struct amqp_conn_env env; /* lent to every connection */
    struct amqp_conn *conns;
    uint64_t next_conn_id;
    struct amqp_server_stats stats;
    unsigned handles; /* open uv handles: listener, tick, connections */
    bool closing;
    bool routable; /* the broker's view, as last seen (check_routable) */
    void (*close_cb)(void *data);
    void *close_data;
};

static void server_maybe_free(struct amqp_server *s)
{
    void (*cb)(void *data);
    void *data;

    if (!s->closing || s->handles > 0 || !edge_calls_idle(&s->calls)) {
        return;
    }
    cb = s->close_cb;
    data = s->close_data;
    free(s);
    if (cb) {
        cb(data);
    }
}

/* The broker calls: one finished, or their timer closed. */
static void on_calls_idle(void *data)
{
    server_maybe_free(data);
}

/* ------------------------------------------------------------- registry */

static void registry_add(struct amqp_server *s, struct amqp_conn *c)
{
    struct amqp_conn_link *l = amqp_conn_link(c);

    l->prev = NULL;
    l->next = s->conns;
    if (s->conns) {
        amqp_conn_link(s->conns)->prev = c;
    }
    s->conns = c;
}

/* A connection was torn down. */
static void on_conn_gone(struct amqp_conn *c, void *data)
{
    struct amqp_server *s = data;
    struct amqp_conn_link *l = amqp_conn_link(c);

    if (l->prev) {
        amqp_conn_link(l->prev)->next = l->next;
    } else {
        s->conns = l->next;
    }
    if (l->next) {
        amqp_conn_link(l->next)->prev = l->prev;
    }
    l->prev = l->next = NULL;
    s->stats.connections--;
}

/* A connection's handles closed. */
static void on_conn_closed(void *data)
{
    struct amqp_server *s = data;

    s->handles--;
    server_maybe_free(s);
}

/* ------------------------------------------------------------------ tick */

static void on_expire_done(struct edge_call *ec)
{
    if (ec->bc.status == OUTCOME_OK) {
        edge_after_result(ec->calls, ec->bc.shard, &ec->bc.mq_result);
    }
}

/* Ask the broker whether publishers are blocked; tell the connections of
 * a change. Telling one may tear it down (a failed write), which unlinks
 * it: the next one is taken first. */
static void check_blocked(struct amqp_server *s)
{
    const struct amqp_broker *b = &s->calls.broker;
    bool blocked = b->ops->should_block && b->ops->should_block(b->self);
    struct amqp_conn *c, *next;

    if (blocked == s->env.blocked) {
        return;
    }
    s->env.blocked = blocked;
    log_warn("amqp: publishers %s", blocked ? "blocked" : "unblocked");
    for (c = s->conns; c; c = next) {
        next = amqp_conn_link(c)->next;
        amqp_conn_set_blocked(c, blocked);
    }
}

/* A broker call completed: its answer may have changed should_block() (the
 * router's come with the shard's watermark). Checked before the caller
 * sees the result, so that the answer that says "blocked" to a publish
 * stops its connection's reading before the confirm goes out: the tick
 * alone would let publishes through for up to tick_ms after the broker
 * said so. */
/* Held publishes (amqp_broker.h routable()) go on once the view is
 * routable again, and on every tick while it is not (those held too long
 * are nacked). "Again" is not only a change this function saw: the lease
 * may lapse and come back between two of its looks while a publish came
 * and was held (publishes_held). */
static void check_routable(struct amqp_server *s, bool tick)
{
    const struct amqp_broker *b = &s->calls.broker;
    bool routable = b->ops->routable == NULL || b->ops->routable(b->self);
    struct amqp_conn *c, *next;

    if (routable == s->routable &&
        (routable ? !s->calls.publishes_held : !tick)) {
        return;
    }
    if (routable != s->routable) {
        log_warn("amqp: %s", routable ? "publishes routed again"
                                      : "publishes held: the broker's meta "
                                        "view may be stale");
    }
    s->routable = routable;
    s->calls.publishes_held = false; /* those still held say so again */
    for (c = s->conns; c; c = next) {
        next = amqp_conn_link(c)->next;
        amqp_conn_pump_channels(c);
    }
}

static void on_calls_answered(void *data)
{
    struct amqp_server *s = data;

    if (!s->closing) {
        check_blocked(s);
        check_routable(s, false);
    }
}

static void on_tick(uv_timer_t *t)
{
    struct amqp_server *s = t->data;
    const struct amqp_broker *b = &s->calls.broker;
    unsigned n = b->ops->shard_count(b->self);
    unsigned i;

    for (i = 0; i < n; i++) {
        struct edge_call *ec = edge_call_new(&s->calls, NULL, on_expire_done);

        ec->bc.kind = AMQP_BROKER_MQ;
        ec->bc.shard = i;
        ec->bc.mq.type = MQ_SM_EXPIRE;
        edge_call_submit(ec);
    }
    /* Also without answers: a broker's "blocked" may lapse with time. */
    check_blocked(s);
    check_routable(s, true);
}

/* --------------------------------------------------------------- server */

static void on_connection(uv_stream_t *listener, int status)
{
    struct amqp_server *s = listener->data;

    struct amqp_conn *c;

    if (status < 0) {
        log_warn("amqp: accept failed: %s", uv_strerror(status));
        return;
    }
    c = amqp_conn_new(&s->env, ++s->next_conn_id);
    if (c == NULL) {
        return;
    }
    s->handles++;
    registry_add(s, c);
    s->stats.connections++;
    if (amqp_conn_start(c, listener) == 0) {
        s->stats.connections_total++;
    }
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
    s->routable = true;
    s->loop = loop;
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
    edge_calls_init(&s->calls, loop, broker, s->cfg.router_id, on_calls_idle,
                    s);
    s->calls.answered = on_calls_answered;
    s->calls.route_wait_ms =
        s->cfg.route_wait_ms ? s->cfg.route_wait_ms : EDGE_ROUTE_WAIT_MS;
    s->env.loop = loop;
    s->env.cfg = &s->cfg;
    s->env.stats = &s->stats;
    s->env.calls = &s->calls;
    s->env.gone = on_conn_gone;
    s->env.closed = on_conn_closed;
    s->env.data = s;
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
    edge_calls_close(&s->calls);
    uv_close((uv_handle_t *)&s->listener, on_handle_closed);
    uv_close((uv_handle_t *)&s->tick, on_handle_closed);
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
    /* Parked calls go now and give up; the calls' timer closes. */
    edge_calls_close(&s->calls);
    uv_close((uv_handle_t *)&s->listener, on_handle_closed);
    uv_close((uv_handle_t *)&s->tick, on_handle_closed);
}
