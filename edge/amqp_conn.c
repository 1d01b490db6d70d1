/*
 * amqp_conn: one AMQP 0-9-1 client connection of the edge; contract in
 * amqp_conn.h.
 *
 * Life: protocol header -> connection.start -> start-ok (PLAIN or AMQPLAIN
 * against the configured users; guest only from loopback, as RabbitMQ) ->
 * tune -> tune-ok -> open (vhost "/" only) -> running, where frames of
 * channel 0 are connection methods and the rest go to their channel
 * (amqp_channel.c). A wrong protocol header gets our header and a close, as
 * the spec says (the login itself is amqp_auth.c's). A connection exception
 * sends connection.close and waits a short while for close-ok, ignoring
 * everything else; a client's connection.close gets close-ok.
 *
 * Closing, as RabbitMQ: once the last frame (close-ok, or our close after
 * the client's close-ok) is written, the connection is gone for the broker
 * and we shut down our sending side, but the socket is closed only after
 * the client's EOF (or DRAIN_MS), reading and dropping whatever it still
 * sends meanwhile. Closing a socket with unread input, or one the client
 * still writes to, makes the kernel answer with RST, which can reach the
 * client before it read the close-ok ("connection reset by peer").
 *
 * When the connection goes, however it goes, its channels are freed and one
 * RETURN scope CONNECTION per shard gives back every unacked delivery,
 * unregisters its consumers and deletes its exclusive queues. Broker calls
 * still in flight hold a reference (cc.ref) and see it dead (cc_dead()).
 *
 * Channels reach the connection through cc, the struct chan_conn this file
 * fills in: its functions (cc_ops) are the only way up from a channel.
 *
 * Heartbeats: we send one when nothing else was sent for half the
 * negotiated interval, and close a connection silent for two intervals.
 * Back-pressure: reading stops while the output is large, while many
 * enqueues are in flight, or (for connections that published) while the
 * broker asks to block publishers.
 */
#include "edge/amqp_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/container_of.h"
#include "common/log.h"
#include "edge/amqp_after.h"
#include "edge/amqp_auth.h"
#include "edge/amqp_chan.h"
#include "edge/amqp_channel.h"
#include "edge/amqp_config.h"
#include "edge/amqp_edge.h"
#include "proto/amqp_frame.h"
#include "proto/amqp_method.h"

#define READ_CHUNK 65536
#define CLOSE_OK_WAIT_MS 2000
#define DRAIN_MS 2000 /* the client's EOF after the last frame, at most */
#define HANDSHAKE_TIMEOUT_MS 10000 /* RabbitMQ's default */

enum conn_state {
    CONN_HEADER = 0, /* waiting for the protocol header */
    CONN_START_OK,
    CONN_TUNE_OK,
    CONN_OPEN,
    CONN_RUNNING,
    CONN_CLOSE_SENT, /* our connection.close sent: wait for close-ok */
    CONN_FINISHING,  /* write what is buffered, then drain */
    CONN_DRAINING    /* written and shut down: drop input until EOF */
};

struct amqp_conn {
    struct amqp_conn_env *env;
    struct amqp_conn_link link; /* the server's */
    struct chan_conn cc; /* what channels see: ops, refs, output, ids */
    uv_tcp_t tcp;
    uv_timer_t timer; /* heartbeats, close-ok wait */
    uv_write_t wreq;
    uv_shutdown_t sreq;
    uint64_t next_chan_uid;
    enum conn_state state;
    struct amqp_frame_decoder dec;
    struct buf in;
    struct buf out;
    struct buf wbuf;
    size_t frame_max;
    uint16_t channel_max;
    uint16_t heartbeat_s;
    uint64_t last_recv_ms;
    uint64_t last_send_ms;
    uint64_t close_deadline_ms;
    uint64_t accepted_ms;
    struct amqp_channel **chans; /* [channel_max + 1] */
    uint16_t chan_hi; /* highest channel number opened: loops stop there */
    unsigned handles;
    int enqueues; /* in flight */
    bool loopback;
    bool cap_blocked; /* the client understands connection.blocked */
    bool blocked_sent;
    bool published;
    bool writing;
    bool reading;
    bool eof;
    bool dead;    /* released: channels freed, deliveries returned */
    bool closing; /* handles closing, out of the server's registry */
    bool in_read;
    bool waiting_ready; /* protocol header held until the broker is ready */
    bool acks_pending;  /* a channel batched acks during this read */
};

struct amqp_conn_link *amqp_conn_link(struct amqp_conn *c)
{
    return &c->link;
}

static bool conn_dead(const struct amqp_conn *c)
{
    return c->dead || c->state >= CONN_CLOSE_SENT;
}

static struct amqp_channel *conn_channel(struct amqp_conn *c, uint16_t num)
{
    if (c->chans == NULL || num == 0 || num > c->channel_max) {
        return NULL;
    }
    return c->chans[num];
}

static void conn_update_reading(struct amqp_conn *c);

static void conn_enqueues(struct amqp_conn *c, int delta)
{
    c->enqueues += delta;
    if (delta < 0 && !c->dead) {
        conn_update_reading(c);
    }
}

/* ------------------------------------------------------------ lifetime */

static void conn_free(struct amqp_conn *c)
{
    amqp_frame_decoder_close(&c->dec);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->wbuf);
    free(c->chans);
    free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct amqp_conn *c = h->data;
    struct amqp_conn_env *env = c->env;

    if (--c->handles > 0) {
        return;
    }
    if (c->cc.ref.n == 0) {
        conn_free(c); /* else the last reference frees it */
    }
    env->closed(env->data);
}

/* The last reference went (a broker call, or the read that held one). */
static void on_ref_zero(struct edge_ref *r)
{
    struct amqp_conn *c = container_of(r, struct amqp_conn, cc.ref);

    if (c->dead && c->handles == 0) {
        conn_free(c);
    }
}

/* The broker's side of the end: channels, deliveries, consumers. */
static void conn_release(struct amqp_conn *c)
{
    struct amqp_conn_env *env = c->env;
    bool opened = c->state >= CONN_RUNNING || c->chans != NULL;
    unsigned i;

    if (c->dead) {
        return;
    }
    c->dead = true;
    if (c->chans) {
        for (i = 1; i <= c->chan_hi; i++) {
            if (c->chans[i]) {
                amqp_channel_free(c->chans[i]);
                c->chans[i] = NULL;
            }
        }
    }
    if (opened) {
        struct mq_sm_who who = {.router = env->cfg->router_id,
                                .conn = c->cc.id};

        edge_return_everywhere(env->calls, MQ_SM_SCOPE_CONNECTION, &who);
    }
}

static void conn_teardown(struct amqp_conn *c)
{
    conn_release(c);
    if (c->closing) {
        return;
    }
    c->closing = true;
    c->env->gone(c, c->env->data);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status; /* the drain ends on EOF or its timer either way */
}

static void on_drain_timeout(uv_timer_t *t)
{
    conn_teardown(t->data);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *out);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);

/* The last frame is written: see the top of this file. */
static void conn_drain(struct amqp_conn *c)
{
    conn_release(c);
    c->state = CONN_DRAINING;
    uv_timer_start(&c->timer, on_drain_timeout, DRAIN_MS, 0);
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0 ||
        (!c->reading &&
         uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)) {
        conn_teardown(c);
        return;
    }
    c->reading = true;
}

void amqp_conn_abort(struct amqp_conn *c)
{
    conn_teardown(c);
}

/* ---------------------------------------------------------------- output */

static void on_write(uv_write_t *w, int status);

static void conn_write(struct amqp_conn *c)
{
    struct buf tmp;
    uv_buf_t b;
    int rc;

    if (c->writing || c->dead || c->out.len == 0) {
        return;
    }
    tmp = c->wbuf;
    c->wbuf = c->out;
    c->out = tmp;
    b = uv_buf_init(c->wbuf.data, (unsigned)c->wbuf.len);
    rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc != 0) {
        log_debug("amqp: write failed: %s", uv_strerror(rc));
        conn_teardown(c);
        return;
    }
    c->writing = true;
    c->last_send_ms = clock_mono_ms();
}

static void on_write(uv_write_t *w, int status)
{
    struct amqp_conn *c = (struct amqp_conn *)((char *)w -
                                               offsetof(struct amqp_conn, wreq));
    unsigned i;

    c->writing = false;
    if (c->wbuf.cap > 4 * READ_CHUNK) {
        buf_free(&c->wbuf);
    } else {
        buf_reset(&c->wbuf);
    }
    if (c->dead) {
        return;
    }
    if (status < 0) {
        conn_teardown(c);
        return;
    }
    if (c->state == CONN_FINISHING && c->out.len == 0) {
        conn_drain(c);
        return;
    }
    conn_write(c);
    conn_update_reading(c);
    /* Output drained: consumers paused by it may go on. */
    if (c->out.len < EDGE_OUT_HIGH / 2 && c->chans) {
        for (i = 1; i <= c->chan_hi && !c->dead; i++) {
            if (c->chans[i]) {
                amqp_channel_kick(c->chans[i]);
            }
        }
    }
}

static void conn_flush(struct amqp_conn *c)
{
    if (!c->in_read) {
        conn_write(c);
    }
}

static void send_method(struct amqp_conn *c, uint16_t channel,
                        const struct amqp_method *m)
{
    if (amqp_method_encode(&c->out, channel, m, c->frame_max) != 0) {
        log_warn("amqp: cannot encode %s", amqp_method_name(m->id));
    }
}

static void conn_error(struct amqp_conn *c, uint16_t code, const char *text,
                       uint32_t method_id)
{
    struct amqp_method m;

    if (c->state >= CONN_CLOSE_SENT || c->dead) {
        return;
    }
    c->env->stats->protocol_errors++;
    log_debug("amqp: connection %llu: %u %s", (unsigned long long)c->cc.id,
              code, text);
    amqp_method_init(&m, AMQP_CONNECTION_CLOSE);
    m.connection_close.reply_code = code;
    m.connection_close.reply_text = amqp_cstr(text);
    m.connection_close.class_id = AMQP_METHOD_CLASS(method_id);
    m.connection_close.method_id = AMQP_METHOD_INDEX(method_id);
    send_method(c, 0, &m);
    c->state = CONN_CLOSE_SENT;
    c->close_deadline_ms = clock_mono_ms() + CLOSE_OK_WAIT_MS;
    conn_flush(c);
}

void amqp_conn_pump_channels(struct amqp_conn *c)
{
    uint16_t i;

    if (c->state != CONN_RUNNING || c->chans == NULL) {
        return;
    }
    for (i = 1; i <= c->chan_hi && !c->dead; i++) {
        if (c->chans[i]) {
            amqp_channel_pump(c->chans[i]);
        }
    }
}

void amqp_conn_set_blocked(struct amqp_conn *c, bool blocked)
{
    struct amqp_method m;

    if (c->cap_blocked && c->state == CONN_RUNNING &&
        blocked != c->blocked_sent) {
        if (blocked) {
            amqp_method_init(&m, AMQP_CONNECTION_BLOCKED);
            m.connection_blocked.reason = amqp_cstr("low on memory");
        } else {
            amqp_method_init(&m, AMQP_CONNECTION_UNBLOCKED);
        }
        send_method(c, 0, &m);
        c->blocked_sent = blocked;
        conn_flush(c);
    }
    conn_update_reading(c);
}

/* A method frame that does not decode, answered as RabbitMQ does:
 * truncated or overlong arguments are 501 FRAME_ERROR ("cannot decode"),
 * a bad field table 502 SYNTAX_ERROR, an unknown class or method 540. The
 * failing class and method go into connection.close when readable. */
static void conn_decode_error(struct amqp_conn *c, const struct amqp_frame *f,
                              int rv)
{
    uint32_t id = 0;
    char text[160];
    uint16_t code;

    if (f->size >= 4) {
        id = AMQP_METHOD_ID((f->payload[0] << 8) | f->payload[1],
                            (f->payload[2] << 8) | f->payload[3]);
    }
    switch (rv) {
    case AMQP_ESYNTAX:
        code = AMQP_REPLY_FRAME_ERROR;
        snprintf(text, sizeof(text), "FRAME_ERROR - cannot decode %s",
                 amqp_method_name(id));
        break;
    case AMQP_EUNKNOWN_METHOD:
        code = AMQP_REPLY_NOT_IMPLEMENTED;
        snprintf(text, sizeof(text),
                 "NOT_IMPLEMENTED - unknown class %u method %u",
                 AMQP_METHOD_CLASS(id), AMQP_METHOD_INDEX(id));
        break;
    default:
        code = AMQP_REPLY_SYNTAX_ERROR;
        snprintf(text, sizeof(text), "SYNTAX_ERROR - %s",
                 amqp_codec_strerror(rv));
        break;
    }
    conn_error(c, code, text, id);
}

/* ----------------------------------------------------------- negotiation */

static void send_start(struct amqp_conn *c)
{
    struct amqp_method m;
    struct amqp_table *props = amqp_table_new();
    struct amqp_table *caps;

    amqp_table_add_longstr(props, "product", "ringmq");
    amqp_table_add_longstr(props, "version", "0.1");
    amqp_table_add_longstr(props, "platform", "C/libuv");
    amqp_table_add_longstr(props, "cluster_name", "ringmq");
    amqp_table_add_longstr(props, "copyright", "ringmq authors");
    amqp_table_add_longstr(props, "information", "https://ringmq.invalid/");
    caps = amqp_table_add_table(props, "capabilities");
    amqp_table_add_bool(caps, "publisher_confirms", 1);
    amqp_table_add_bool(caps, "exchange_exchange_bindings", 1);
    amqp_table_add_bool(caps, "basic.nack", 1);
    amqp_table_add_bool(caps, "consumer_cancel_notify", 1);
    amqp_table_add_bool(caps, "connection.blocked", 1);
    amqp_table_add_bool(caps, "consumer_priorities", 0);
    amqp_table_add_bool(caps, "authentication_failure_close", 1);
    amqp_table_add_bool(caps, "per_consumer_qos", 1);
    amqp_table_add_bool(caps, "direct_reply_to", 0);
    amqp_method_init(&m, AMQP_CONNECTION_START);
    m.connection_start.version_major = 0;
    m.connection_start.version_minor = 9;
    m.connection_start.server_properties = props;
    m.connection_start.mechanisms = amqp_cstr("PLAIN AMQPLAIN");
    m.connection_start.locales = amqp_cstr("en_US");
    send_method(c, 0, &m);
    amqp_table_free(props);
}

static void note_client_caps(struct amqp_conn *c, const struct amqp_table *p)
{
    const struct amqp_field *caps = amqp_table_get(p, "capabilities");
    const struct amqp_field *b;

    if (caps && caps->type == AMQP_FIELD_TABLE) {
        b = amqp_table_get(caps->v.table, "connection.blocked");
        c->cap_blocked = b && b->type == AMQP_FIELD_BOOL && b->v.boolean;
    }
}

static void conn_method0(struct amqp_conn *c, const struct amqp_method *m)
{
    struct amqp_method r;

    switch (c->state) {
    case CONN_START_OK:
        if (m->id != AMQP_CONNECTION_START_OK) {
            break;
        }
        note_client_caps(c, m->connection_start_ok.client_properties);
        if (!amqp_bytes_eq(m->connection_start_ok.mechanism, "PLAIN") &&
            !amqp_bytes_eq(m->connection_start_ok.mechanism, "AMQPLAIN")) {
            conn_error(c, 403,
                       "ACCESS_REFUSED - unsupported authentication "
                       "mechanism",
                       m->id);
            return;
        }
        if (!amqp_auth_check(c->env->cfg, c->loopback,
                             &m->connection_start_ok)) {
            char text[200];

            snprintf(text, sizeof(text),
                     "ACCESS_REFUSED - Login was refused using "
                     "authentication mechanism %.*s. For details see the "
                     "broker logfile.",
                     (int)m->connection_start_ok.mechanism.len,
                     (const char *)m->connection_start_ok.mechanism.data);
            conn_error(c, 403, text, m->id);
            return;
        }
        amqp_method_init(&r, AMQP_CONNECTION_TUNE);
        r.connection_tune.channel_max = c->env->cfg->channel_max;
        r.connection_tune.frame_max = c->env->cfg->frame_max;
        r.connection_tune.heartbeat = c->env->cfg->heartbeat_s;
        send_method(c, 0, &r);
        c->state = CONN_TUNE_OK;
        return;
    case CONN_TUNE_OK:
        if (m->id != AMQP_CONNECTION_TUNE_OK) {
            break;
        }
        {
            const struct amqp_connection_tune *t = &m->connection_tune_ok;
            uint32_t fm = t->frame_max;

            if (fm == 0 || fm > c->env->cfg->frame_max) {
                fm = c->env->cfg->frame_max;
            }
            if (fm < AMQP_FRAME_MIN_SIZE) {
                conn_error(c, 530,
                           "NOT_ALLOWED - frame_max below 4096", m->id);
                return;
            }
            c->frame_max = fm;
            /* RabbitMQ accepts payloads up to frame_max: be as lenient. */
            amqp_frame_decoder_set_max(&c->dec, fm + AMQP_FRAME_OVERHEAD);
            c->channel_max = t->channel_max == 0 ||
                                     t->channel_max > c->env->cfg->channel_max
                                 ? c->env->cfg->channel_max
                                 : t->channel_max;
            c->heartbeat_s = t->heartbeat;
            c->chans = xcalloc((size_t)c->channel_max + 1, sizeof(*c->chans));
            c->state = CONN_OPEN;
            if (c->heartbeat_s > 0) {
                uint64_t every = (uint64_t)c->heartbeat_s * 1000 / 2;

                uv_timer_set_repeat(&c->timer, every ? every : 500);
                uv_timer_again(&c->timer);
            }
        }
        return;
    case CONN_OPEN:
        if (m->id != AMQP_CONNECTION_OPEN) {
            break;
        }
        if (!amqp_bytes_eq(m->connection_open.virtual_host, "/")) {
            char text[300];

            snprintf(text, sizeof(text),
                     "NOT_ALLOWED - vhost %.*s not found",
                     (int)m->connection_open.virtual_host.len,
                     (const char *)m->connection_open.virtual_host.data);
            conn_error(c, 530, text, m->id);
            return;
        }
        amqp_method_init(&r, AMQP_CONNECTION_OPEN_OK);
        send_method(c, 0, &r);
        c->state = CONN_RUNNING;
        if (c->env->blocked) {
            amqp_conn_set_blocked(c, true);
        }
        return;
    case CONN_RUNNING:
        switch (m->id) {
        case AMQP_CONNECTION_CLOSE:
            amqp_method_init(&r, AMQP_CONNECTION_CLOSE_OK);
            send_method(c, 0, &r);
            c->state = CONN_FINISHING;
            return;
        case AMQP_CONNECTION_BLOCKED:
        case AMQP_CONNECTION_UNBLOCKED:
            return; /* a client may send them too; nothing to do */
        default:
            break;
        }
        break;
    case CONN_CLOSE_SENT:
        if (m->id == AMQP_CONNECTION_CLOSE_OK ||
            m->id == AMQP_CONNECTION_CLOSE) {
            if (m->id == AMQP_CONNECTION_CLOSE) {
                amqp_method_init(&r, AMQP_CONNECTION_CLOSE_OK);
                send_method(c, 0, &r);
            }
            c->state = CONN_FINISHING;
        }
        return;
    default:
        return;
    }
    if (AMQP_METHOD_CLASS(m->id) != AMQP_CLASS_CONNECTION) {
        conn_error(c, AMQP_REPLY_CHANNEL_ERROR,
                   "CHANNEL_ERROR - unexpected method in connection "
                   "state running",
                   m->id);
        return;
    }
    conn_error(c, AMQP_REPLY_COMMAND_INVALID,
               "COMMAND_INVALID - unexpected method on channel 0",
               m->id);
}

/* -------------------------------------------------------------- frames */

static void conn_channel_frame(struct amqp_conn *c, const struct amqp_frame *f)
{
    struct amqp_channel *ch = conn_channel(c, f->channel);
    struct amqp_method m;
    int rv;

    if (c->state != CONN_RUNNING) {
        if (c->state < CONN_CLOSE_SENT) {
            conn_error(c, AMQP_REPLY_CHANNEL_ERROR,
                       "CHANNEL_ERROR - connection not open", 0);
        }
        return;
    }
    if (f->channel > c->channel_max) {
        conn_error(c, AMQP_REPLY_CHANNEL_ERROR,
                   "CHANNEL_ERROR - channel number above channel_max",
                   0);
        return;
    }
    if (ch != NULL) {
        (void)amqp_channel_frame(ch, f);
        return;
    }
    /* Not open: only channel.open is valid. */
    if (f->type != AMQP_FRAME_METHOD) {
        conn_error(c, AMQP_REPLY_UNEXPECTED_FRAME,
                   "UNEXPECTED_FRAME - content on a closed channel", 0);
        return;
    }
    rv = amqp_method_decode(f->payload, f->size, &m);
    if (rv != 0) {
        conn_decode_error(c, f, rv);
        return;
    }
    if (m.id == AMQP_CHANNEL_OPEN) {
        struct amqp_method r;

        if (f->channel > c->chan_hi) {
            c->chan_hi = f->channel;
        }
        c->chans[f->channel] =
            amqp_channel_new(&c->cc, f->channel, ++c->next_chan_uid);
        c->env->stats->channels++;
        amqp_method_init(&r, AMQP_CHANNEL_OPEN_OK);
        send_method(c, f->channel, &r);
    } else if (m.id == AMQP_CHANNEL_CLOSE_OK) {
        /* A late close-ok for a channel we already forgot. */
    } else {
        conn_error(c, AMQP_REPLY_CHANNEL_ERROR,
                   "CHANNEL_ERROR - expected 'channel.open'", m.id);
    }
    amqp_method_free(&m);
}

static void conn_frame(struct amqp_conn *c, const struct amqp_frame *f)
{
    struct amqp_method m;
    int rv;

    if (f->type == AMQP_FRAME_HEARTBEAT) {
        return;
    }
    if (c->state == CONN_FINISHING) {
        return;
    }
    if (f->channel != 0) {
        if (c->state == CONN_CLOSE_SENT) {
            return;
        }
        conn_channel_frame(c, f);
        return;
    }
    if (f->type != AMQP_FRAME_METHOD) {
        conn_error(c, AMQP_REPLY_UNEXPECTED_FRAME,
                   "UNEXPECTED_FRAME - content frame on channel 0", 0);
        return;
    }
    rv = amqp_method_decode(f->payload, f->size, &m);
    if (rv != 0) {
        conn_decode_error(c, f, rv);
        return;
    }
    conn_method0(c, &m);
    amqp_method_free(&m);
}

static bool broker_ready(const struct amqp_conn_env *env)
{
    const struct amqp_broker *b = &env->calls->broker;

    return b->ops->ready == NULL || b->ops->ready(b->self);
}

/* Consume buffered input. */
static void conn_process(struct amqp_conn *c)
{
    size_t off = 0;

    if (c->state == CONN_HEADER) {
        if (c->in.len < AMQP_PROTOCOL_HEADER_SIZE) {
            return;
        }
        if (!broker_ready(c->env)) {
            /* Held until the broker can serve (a router that just started
             * has no meta view yet); the timer looks again. */
            c->waiting_ready = true;
            return;
        }
        c->waiting_ready = false;
        if (amqp_frame_check_protocol_header(c->in.data,
                                             AMQP_PROTOCOL_HEADER_SIZE) != 0) {
            buf_append(&c->out, AMQP_PROTOCOL_HEADER,
                       AMQP_PROTOCOL_HEADER_SIZE);
            c->env->stats->protocol_errors++;
            c->state = CONN_FINISHING;
            buf_reset(&c->in);
            return;
        }
        off = AMQP_PROTOCOL_HEADER_SIZE;
        send_start(c);
        c->state = CONN_START_OK;
    }
    while (off < c->in.len && c->state != CONN_FINISHING && !c->dead) {
        struct amqp_frame f;
        size_t used = 0;
        int rv = amqp_frame_decoder_feed(&c->dec, c->in.data + off,
                                         c->in.len - off, &used, &f);

        off += used;
        if (rv == 0) {
            break;
        }
        if (rv < 0) {
            if (rv == AMQP_EFRAME_HEARTBEAT) {
                /* RabbitMQ: a heartbeat on a channel is out of place. */
                conn_error(c, AMQP_REPLY_UNEXPECTED_FRAME,
                           "UNEXPECTED_FRAME - heartbeat on a channel "
                           "other than 0",
                           0);
            } else {
                char text[160];

                snprintf(text, sizeof(text), "FRAME_ERROR - %s",
                         amqp_codec_strerror(rv));
                conn_error(c, (uint16_t)amqp_codec_reply_code(rv), text,
                           0);
            }
            /* The stream is out of sync: nothing more can be read. */
            c->state = CONN_FINISHING;
            off = c->in.len;
            break;
        }
        conn_frame(c, &f);
    }
    if (!c->dead) {
        buf_consume(&c->in, off);
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *out)
{
    struct amqp_conn *c = h->data;

    (void)hint;
    buf_reserve(&c->in, READ_CHUNK);
    out->base = c->in.data + c->in.len;
    out->len = c->in.cap - c->in.len;
}

/* End of a read: the acks it carried go out, one command per shard where
 * exact. */
static void conn_flush_acks(struct amqp_conn *c)
{
    unsigned i;

    c->acks_pending = false;
    for (i = 1; c->chans && i <= c->chan_hi && !c->dead; i++) {
        if (c->chans[i]) {
            amqp_channel_flush_acks(c->chans[i]);
        }
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct amqp_conn *c = stream->data;

    (void)b;
    if (c->state == CONN_DRAINING && !c->closing) {
        if (nread < 0) {
            conn_teardown(c); /* the client's EOF: nothing left unread */
        }
        return; /* dropped: c->in.len stays */
    }
    if (nread == 0 || c->dead) {
        return;
    }
    if (nread < 0) {
        conn_teardown(c);
        return;
    }
    c->in.len += (size_t)nread;
    c->last_recv_ms = clock_mono_ms();
    c->in_read = true;
    edge_ref_get(&c->cc.ref);
    conn_process(c);
    c->in_read = false;
    if (c->acks_pending && !c->dead) {
        conn_flush_acks(c);
    }
    if (!c->dead) {
        conn_write(c);
    }
    if (!c->dead) {
        if (c->state == CONN_FINISHING && !c->writing && c->out.len == 0) {
            conn_drain(c);
        } else {
            conn_update_reading(c);
        }
    }
    edge_ref_put(&c->cc.ref);
}

static void conn_update_reading(struct amqp_conn *c)
{
    bool want;

    if (c->dead) {
        return;
    }
    want = c->state != CONN_FINISHING &&
           c->out.len + c->wbuf.len < EDGE_OUT_HIGH &&
           c->enqueues < EDGE_INFLIGHT_ENQUEUES &&
           !(c->env->blocked && c->published);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) {
            c->reading = true;
        }
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void on_timer(uv_timer_t *t)
{
    struct amqp_conn *c = t->data;
    uint64_t now = clock_mono_ms();

    if (c->dead) {
        return;
    }
    if (c->state == CONN_CLOSE_SENT && now >= c->close_deadline_ms) {
        conn_teardown(c);
        return;
    }
    if (c->waiting_ready) {
        conn_process(c);
        conn_write(c);
        if (!c->waiting_ready) {
            uv_timer_start(&c->timer, on_timer, 1000, 1000);
        } else if (now - c->accepted_ms > HANDSHAKE_TIMEOUT_MS) {
            conn_teardown(c);
        }
        return;
    }
    if (c->state < CONN_RUNNING && now - c->accepted_ms > HANDSHAKE_TIMEOUT_MS) {
        /* RabbitMQ's handshake_timeout: a silent or stuck peer goes. */
        conn_teardown(c);
        return;
    }
    if (c->state < CONN_OPEN || c->heartbeat_s == 0) {
        return;
    }
    if (now - c->last_recv_ms > 2000ull * c->heartbeat_s) {
        log_info("amqp: connection %llu: missed heartbeats, closing",
                 (unsigned long long)c->cc.id);
        conn_teardown(c);
        return;
    }
    if (now - c->last_send_ms >= 500ull * c->heartbeat_s && !c->writing &&
        c->out.len == 0) {
        amqp_frame_encode_heartbeat(&c->out);
        conn_write(c);
    }
}

static bool peer_is_loopback(uv_tcp_t *tcp)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0) {
        return false;
    }
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;

        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        static const uint8_t lo[16] = {[15] = 1};
        static const uint8_t v4[12] = {[10] = 0xff, [11] = 0xff};

        return memcmp(a->sin6_addr.s6_addr, lo, 16) == 0 ||
               (memcmp(a->sin6_addr.s6_addr, v4, 12) == 0 &&
                a->sin6_addr.s6_addr[12] == 127);
    }
    return false;
}

/* ------------------------------------------------- what channels see */

static struct amqp_conn *of_cc(const struct chan_conn *cc)
{
    return container_of(cc, struct amqp_conn, cc);
}

static size_t cc_frame_max(const struct chan_conn *cc)
{
    return of_cc(cc)->frame_max;
}

static bool cc_dead(const struct chan_conn *cc)
{
    return conn_dead(of_cc(cc));
}

static bool cc_reading(const struct chan_conn *cc)
{
    return of_cc(cc)->in_read;
}

static void cc_flush(struct chan_conn *cc)
{
    conn_flush(of_cc(cc));
}

static void cc_note_acks(struct chan_conn *cc)
{
    of_cc(cc)->acks_pending = true;
}

static void cc_published(struct chan_conn *cc)
{
    of_cc(cc)->published = true;
}

static void cc_enqueues(struct chan_conn *cc, int delta)
{
    conn_enqueues(of_cc(cc), delta);
}

static void cc_error(struct chan_conn *cc, uint16_t code, const char *text,
                     uint32_t method_id)
{
    conn_error(of_cc(cc), code, text, method_id);
}

static void cc_decode_error(struct chan_conn *cc, const struct amqp_frame *f,
                            int rv)
{
    conn_decode_error(of_cc(cc), f, rv);
}

static struct amqp_channel *cc_channel(struct chan_conn *cc, uint16_t num)
{
    return conn_channel(of_cc(cc), num);
}

static void cc_channel_gone(struct chan_conn *cc, uint16_t num)
{
    struct amqp_conn *c = of_cc(cc);

    if (c->chans && num > 0 && num <= c->channel_max) {
        c->chans[num] = NULL;
    }
}

static const struct chan_conn_ops cc_ops = {
    .frame_max = cc_frame_max,
    .dead = cc_dead,
    .reading = cc_reading,
    .flush = cc_flush,
    .note_acks = cc_note_acks,
    .published = cc_published,
    .enqueues = cc_enqueues,
    .error = cc_error,
    .decode_error = cc_decode_error,
    .channel = cc_channel,
    .channel_gone = cc_channel_gone,
};

/* ------------------------------------------------------------- accept */

struct amqp_conn *amqp_conn_new(struct amqp_conn_env *env, uint64_t id)
{
    struct amqp_conn *c = xcalloc(1, sizeof(*c));
    uint64_t x;

    c->env = env;
    x = env->cfg->router_id ^ (id * 0xd6e8feb86659fd93ULL);
    x ^= x >> 32;
    c->cc.ops = &cc_ops;
    c->cc.ref.zero = on_ref_zero;
    c->cc.calls = env->calls;
    c->cc.stats = env->stats;
    c->cc.out = &c->out;
    c->cc.id = id;
    c->cc.client_id = x ? x : 1;
    c->frame_max = env->cfg->frame_max;
    amqp_frame_decoder_init(&c->dec, env->cfg->frame_max + AMQP_FRAME_OVERHEAD);
    if (uv_tcp_init(env->loop, &c->tcp) != 0) {
        amqp_frame_decoder_close(&c->dec);
        free(c);
        return NULL;
    }
    c->tcp.data = c;
    uv_timer_init(env->loop, &c->timer);
    c->timer.data = c;
    c->handles = 2;
    return c;
}

int amqp_conn_start(struct amqp_conn *c, uv_stream_t *listener)
{
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_teardown(c);
        return -1;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->loopback = peer_is_loopback(&c->tcp);
    c->last_recv_ms = c->last_send_ms = c->accepted_ms = clock_mono_ms();
    /* Also bounds the handshake: the timer closes a silent peer. Fast
     * while the broker is not ready, so held connections start soon. */
    uv_timer_start(&c->timer, on_timer, broker_ready(c->env) ? 1000 : 50,
                   broker_ready(c->env) ? 1000 : 50);
    conn_update_reading(c);
    return 0;
}
