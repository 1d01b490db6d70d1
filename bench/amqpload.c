/*
 * amqpload: an AMQP 0-9-1 load generator on rabbitmq-c (librabbitmq).
 *
 * P publisher threads and C consumer threads, one connection and one
 * channel (number 1) each, on one queue. Connections are dealt over the
 * --server list: publisher i uses server i % N, consumer j server (P + j) % N.
 *
 * Every body starts with (run id, publisher id, sequence, send time)
 * (bench/amqpacct.h), so at the end amqpload knows, per message, whether it
 * was published, confirmed, consumed once, consumed twice or never:
 *
 *   published   basic.publish calls that were sent
 *   confirmed   basic.ack'ed by the broker (--confirms), else = published
 *   missing     confirmed (or, without --confirms, published) and never
 *               consumed: must be 0 for exit status 0
 *   duplicates  deliveries of a message already consumed
 *
 * The run:
 *
 *   SETUP    control connection: queue.delete (unless --no-purge), then
 *            queue.declare durable (x-queue-type=quorum with --quorum)
 *   CONNECT  consumers: connect, basic.qos, basic.consume; then publishers:
 *            connect (+ confirm.select); all within --connect-timeout
 *   RUN      publishers publish until their share of --messages or
 *            --seconds; with --confirms at most --confirm-window
 *            unconfirmed per publisher, with --rate at most their share
 *            of it, then wait for the last confirms
 *   DRAIN    consumers stop once every published message was consumed,
 *            or --drain-timeout after the last publisher has finished
 *
 * With --backlog the consumers connect only after every publisher has
 * finished (its last confirm in): the queue fills first, then drains, and
 * the consume rate is measured from the consumers' start (a backlog's
 * drain rate).
 *   REPORT
 *
 * Every phase is bounded: a thread still blocked (a publish the broker does
 * not read, say) 5 s after its deadline gets its socket shut down. Latencies
 * go into bench/hist histograms in nanoseconds: confirm latency from the
 * publish to the basic.ack that covers it, end-to-end from the publish to the
 * consumer's read of the delivery (same host, same CLOCK_MONOTONIC).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include "bench/amqpacct.h"
#include "bench/hist.h"

#define MAX_SERVERS 64
#define MAX_THREADS 1024
#define CHANNEL 1
#define FRAME_MAX 131072
#define POLL_MS 50         /* consumer wait for a delivery, then acks flush */
#define WATCHDOG_GRACE_S 5 /* then a stuck thread loses its socket */
/* --rate: how far a publisher may fall behind its schedule and still catch
 * up (see struct amqpacct_pace): scheduler delays on a busy machine and a
 * broker's short stalls (a confirm window full for a few tens of ms) are
 * made up for, so a broker that takes the rate on average gets it; a
 * longer stall loses its slots. */
#define PACE_SLACK_NS (100 * 1000000u)

struct server {
    char host[128];
    int port;
    char name[160];
};

struct opts {
    struct server servers[MAX_SERVERS];
    unsigned n_servers;
    char queue[256];
    int quorum;
    unsigned publishers;
    unsigned consumers;
    int persistent;
    int confirms;
    unsigned confirm_window;
    unsigned prefetch;
    unsigned multiple_ack;
    unsigned size;
    uint64_t messages;
    double seconds;
    double rate; /* msgs/s over all publishers; 0 = as fast as they can */
    double drain_timeout;
    double connect_timeout;
    int no_purge;
    int backlog; /* consumers start after publishing ended */
    int json;
    int probe;
    const char *vhost;
    const char *user;
    const char *password;
};

/* What the threads share. */
struct run {
    const struct opts *o;
    uint64_t run_id;
    atomic_int go;               /* publishers may start */
    atomic_int stop;             /* give up now (setup failed, watchdog) */
    atomic_uint consumers_ready; /* consuming, or failed */
    atomic_uint publishers_ready;
    uint64_t t0;                   /* set before go */
    uint64_t t_drain0; /* when the consumers were started */
    uint64_t publish_deadline;     /* set before go */
    atomic_int publishing_done;    /* every publisher has published */
    atomic_int consumers_done;     /* every consumer has joined */
    atomic_uint consumers_stopped; /* consumers done reading */
    atomic_uint_fast64_t drain_deadline;
    atomic_uint_fast64_t sent_total;
    atomic_uint_fast64_t consumed_new; /* first deliveries, all consumers */
};

struct worker {
    struct run *r;
    unsigned id;
    const struct server *sv;
    pthread_t thread;
    atomic_int fd;        /* -1 until connected; the watchdog shuts it down */
    atomic_int published; /* publisher: done publishing, confirms in */
    atomic_int finished;
    int failed;
    char err[256];
    /* publisher */
    uint64_t quota; /* 0 = until the deadline */
    uint64_t sent;
    uint64_t confirmed;
    uint64_t nacked;
    uint64_t bad_confirms; /* confirm of a tag never sent */
    uint64_t returned;
    uint64_t blocked; /* connection.blocked received */
    struct amqpacct_window win;
    struct hist confirm_lat;
    uint64_t t_end;
    /* consumer */
    uint64_t deliveries;
    uint64_t dup_local;
    uint64_t redelivered;
    uint64_t foreign; /* not from this run */
    uint64_t t_last;  /* last delivery */
    struct hist e2e_lat;
    /* publisher: what may be expected; consumer: what was consumed */
    struct amqpacct_seen seen;
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct timeval tv_of(double s)
{
    struct timeval tv;

    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Describe a failed synchronous call into @buf. */
static void reply_str(amqp_rpc_reply_t r,
                      const char *what,
                      char *buf,
                      size_t len)
{
    switch (r.reply_type) {
        case AMQP_RESPONSE_NORMAL:
            snprintf(buf, len, "%s: ok", what);
            break;
        case AMQP_RESPONSE_NONE:
            snprintf(buf, len, "%s: no reply", what);
            break;
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            snprintf(buf, len, "%s: %s", what,
                     amqp_error_string2(r.library_error));
            break;
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
                amqp_connection_close_t *m = r.reply.decoded;

                snprintf(buf, len, "%s: connection closed by server: %u %.*s",
                         what, m->reply_code, (int)m->reply_text.len,
                         (const char *)m->reply_text.bytes);
            } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
                amqp_channel_close_t *m = r.reply.decoded;

                snprintf(buf, len, "%s: channel closed by server: %u %.*s",
                         what, m->reply_code, (int)m->reply_text.len,
                         (const char *)m->reply_text.bytes);
            } else {
                snprintf(buf, len, "%s: unexpected method 0x%08x", what,
                         r.reply.id);
            }
            break;
    }
}

/* Connect, log in and open channel 1. NULL with @err filled on failure. */
static amqp_connection_state_t conn_open(const struct opts *o,
                                         const struct server *sv,
                                         char *err,
                                         size_t errlen)
{
    amqp_connection_state_t conn;
    amqp_socket_t *sock;
    struct timeval ct = tv_of(o->connect_timeout);
    struct timeval rpc = tv_of(o->connect_timeout + o->drain_timeout);
    amqp_rpc_reply_t r;
    char what[200];
    int rv;

    conn = amqp_new_connection();
    if (conn == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    sock = amqp_tcp_socket_new(conn);
    if (sock == NULL) {
        snprintf(err, errlen, "out of memory");
        goto err_after_conn;
    }
    rv = amqp_socket_open_noblock(sock, sv->host, sv->port, &ct);
    if (rv != AMQP_STATUS_OK) {
        snprintf(err, errlen, "connect to %s: %s", sv->name,
                 amqp_error_string2(rv));
        goto err_after_conn;
    }
    amqp_set_handshake_timeout(conn, &ct);
    amqp_set_rpc_timeout(conn, &rpc);
    r = amqp_login(conn, o->vhost, 0, FRAME_MAX, 0, AMQP_SASL_METHOD_PLAIN,
                   o->user, o->password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        snprintf(what, sizeof(what), "login to %s", sv->name);
        reply_str(r, what, err, errlen);
        goto err_after_conn;
    }
    amqp_channel_open(conn, CHANNEL);
    r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        snprintf(what, sizeof(what), "channel.open on %s", sv->name);
        reply_str(r, what, err, errlen);
        goto err_after_conn;
    }
    return conn;

err_after_conn:
    amqp_destroy_connection(conn); /* closes the socket */
    return NULL;
}

/* Close politely when the connection is still healthy, then free it. */
static void conn_close(amqp_connection_state_t conn, int healthy)
{
    if (healthy) {
        amqp_channel_close(conn, CHANNEL, AMQP_REPLY_SUCCESS);
        amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(conn);
}

/* Mark @w failed; the first reason is kept. */
__attribute__((format(printf, 2, 3))) static void fail(struct worker *w,
                                                       const char *fmt,
                                                       ...)
{
    va_list ap;

    if (!w->failed) {
        va_start(ap, fmt);
        vsnprintf(w->err, sizeof(w->err), fmt, ap);
        va_end(ap);
    }
    w->failed = 1;
}

/* A method a publisher or consumer did not ask for. Returns 0 to go on,
 * -1 if the channel or connection is gone (w->err says why). */
static int handle_async_method(struct worker *w,
                               amqp_connection_state_t conn,
                               const amqp_frame_t *f)
{
    char buf[256];

    switch (f->payload.method.id) {
        case AMQP_CHANNEL_CLOSE_METHOD: {
            amqp_channel_close_t *m = f->payload.method.decoded;
            amqp_channel_close_ok_t ok = {0};

            snprintf(buf, sizeof(buf), "%u %.*s (method %u.%u)", m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes,
                     m->class_id, m->method_id);
            fail(w, "channel closed by server: %s", buf);
            amqp_send_method(conn, CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
            return -1;
        }
        case AMQP_CONNECTION_CLOSE_METHOD: {
            amqp_connection_close_t *m = f->payload.method.decoded;
            amqp_connection_close_ok_t ok = {0};

            snprintf(buf, sizeof(buf), "%u %.*s", m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
            fail(w, "connection closed by server: %s", buf);
            amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
            return -1;
        }
        case AMQP_BASIC_CANCEL_METHOD:
            fail(w, "%s", "consumer cancelled by server (basic.cancel)");
            return -1;
        case AMQP_CONNECTION_BLOCKED_METHOD:
            w->blocked++;
            return 0;
        default:
            return 0;
    }
}

/* ------------------------------- publisher -------------------------------- */

static void on_confirm(void *arg, uint64_t tag, uint64_t sent_ns, int acked)
{
    struct worker *w = arg;

    if (acked) {
        w->confirmed++;
        hist_record(&w->confirm_lat, now_ns() - sent_ns);
        amqpacct_seen_add(&w->seen, w->id, tag - 1);
    } else {
        w->nacked++;
    }
}

/* Read one frame, waiting at most @timeout_ms (0: only what is there), and
 * account for it. 0 on a frame or a timeout, -1 if the connection failed. */
static int pub_read(struct worker *w,
                    amqp_connection_state_t conn,
                    unsigned timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000,
                         (suseconds_t)(timeout_ms % 1000) * 1000};
    amqp_frame_t f;
    int rv;

    rv = amqp_simple_wait_frame_noblock(conn, &f, &tv);
    if (rv == AMQP_STATUS_TIMEOUT) {
        return 0;
    }
    if (rv != AMQP_STATUS_OK) {
        fail(w, "publisher connection: %s", amqp_error_string2(rv));
        return -1;
    }
    if (f.frame_type != AMQP_FRAME_METHOD) {
        return 0; /* content of a basic.return */
    }
    if (f.payload.method.id == AMQP_BASIC_ACK_METHOD ||
        f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
        int acked = f.payload.method.id == AMQP_BASIC_ACK_METHOD;
        uint64_t tag;
        int multiple;

        if (acked) {
            amqp_basic_ack_t *m = f.payload.method.decoded;

            tag = m->delivery_tag;
            multiple = m->multiple;
        } else {
            amqp_basic_nack_t *m = f.payload.method.decoded;

            tag = m->delivery_tag;
            multiple = m->multiple;
        }
        if (amqpacct_window_resolve(&w->win, tag, multiple, acked, on_confirm,
                                    w) < 0) {
            w->bad_confirms++;
        }
        return 0;
    }
    if (f.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
        w->returned++;
        return 0;
    }
    return handle_async_method(w, conn, &f);
}

/* Read every frame that can be read without blocking. 0, or -1 if the
 * connection failed. */
static int pub_drain(struct worker *w, amqp_connection_state_t conn)
{
    if (pub_read(w, conn, 0) != 0) {
        return -1;
    }
    while (amqp_frames_enqueued(conn) || amqp_data_in_buffer(conn)) {
        if (pub_read(w, conn, 0) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Wait for the --rate slot of the next publish. With confirms the wait reads
 * them as they come, so a confirm is timed when it arrives, not when the
 * next slot is due. The wait is a ppoll on the socket: rabbitmq-c's own
 * timeouts count in milliseconds, and a slot is often less than one away,
 * which would spin. 0, or -1 if the connection failed. */
static int pub_pace(struct worker *w,
                    amqp_connection_state_t conn,
                    struct amqpacct_pace *pace)
{
    uint64_t wait_ns;

    while ((wait_ns = amqpacct_pace_wait(pace, now_ns())) > 0) {
        struct timespec ts = {(time_t)(wait_ns / 1000000000u),
                              (long)(wait_ns % 1000000000u)};
        struct pollfd pfd = {amqp_get_sockfd(conn), POLLIN, 0};

        if (!w->r->o->confirms) {
            nanosleep(&ts, NULL);
            continue;
        }
        if (!amqp_frames_enqueued(conn) && !amqp_data_in_buffer(conn) &&
            ppoll(&pfd, 1, &ts, NULL) <= 0) {
            continue; /* the slot is due (or a signal): look at the clock */
        }
        if (pub_drain(w, conn) != 0) {
            return -1;
        }
    }
    return 0;
}

static void *publisher_main(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->r;
    const struct opts *o = r->o;
    amqp_connection_state_t conn;
    amqp_basic_properties_t props;
    amqp_bytes_t body;
    struct amqpacct_body hdr = {0};
    struct amqpacct_pace pace;
    uint64_t now;
    uint64_t drain_end;
    int healthy = 1;
    int rv;

    conn = conn_open(o, w->sv, w->err, sizeof(w->err));
    if (conn == NULL) {
        w->failed = 1;
        atomic_fetch_add(&r->publishers_ready, 1);
        atomic_store(&w->published, 1);
        atomic_store(&w->finished, 1);
        return NULL;
    }
    atomic_store(&w->fd, amqp_get_sockfd(conn));
    if (o->confirms) {
        amqp_confirm_select(conn, CHANNEL);
        amqp_rpc_reply_t rr = amqp_get_rpc_reply(conn);
        if (rr.reply_type != AMQP_RESPONSE_NORMAL) {
            reply_str(rr, "confirm.select", w->err, sizeof(w->err));
            w->failed = 1;
            healthy = 0;
        }
    }
    atomic_fetch_add(&r->publishers_ready, 1);
    while (!atomic_load(&r->go) && !atomic_load(&r->stop)) {
        sleep_ms(1);
    }

    body.len = o->size;
    body.bytes = malloc(o->size);
    if (body.bytes == NULL) {
        fail(w, "%s", "out of memory");
        goto out;
    }
    memset(body.bytes, 'x', o->size);
    memset(&props, 0, sizeof(props));
    if (o->persistent) {
        props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
        props.delivery_mode = 2;
    }
    hdr.run_id = r->run_id;
    hdr.publisher = w->id;
    if (o->rate > 0) {
        amqpacct_pace_init(&pace, o->rate, o->publishers, w->id, r->t0,
                           PACE_SLACK_NS);
    }

    while (!w->failed && !atomic_load(&r->stop)) {
        if (o->rate > 0 && pub_pace(w, conn, &pace) != 0) {
            break;
        }
        now = now_ns();
        if ((w->quota && w->sent >= w->quota) || now >= r->publish_deadline) {
            break;
        }
        if (o->confirms) {
            if (amqpacct_window_full(&w->win, o->confirm_window)) {
                if (pub_read(w, conn, POLL_MS) != 0) {
                    break;
                }
                continue;
            }
        }
        if (o->rate > 0) {
            amqpacct_pace_take(&pace, now);
        }
        hdr.seq = w->sent;
        hdr.sent_ns = now;
        amqpacct_body_encode(&hdr, body.bytes);
        rv = amqp_basic_publish(conn, CHANNEL, amqp_empty_bytes,
                                amqp_cstring_bytes(o->queue), 0, 0, &props,
                                body);
        if (rv != AMQP_STATUS_OK) {
            fail(w, "basic.publish: %s", amqp_error_string2(rv));
            break;
        }
        if (o->confirms) {
            amqpacct_window_push(&w->win, now);
        } else {
            amqpacct_seen_add(&w->seen, w->id, w->sent);
        }
        w->sent++;
        atomic_fetch_add(&r->sent_total, 1);
        /* Read whatever confirms have arrived, without blocking. */
        if (o->confirms && pub_drain(w, conn) != 0) {
            break;
        }
        amqp_maybe_release_buffers(conn);
    }
    /* The last confirms, within the drain timeout. */
    drain_end = now_ns() + (uint64_t)(o->drain_timeout * 1e9);
    while (o->confirms && !w->failed && !atomic_load(&r->stop) &&
           w->win.outstanding > 0 && now_ns() < drain_end) {
        if (pub_read(w, conn, POLL_MS) != 0) {
            break;
        }
        amqp_maybe_release_buffers(conn);
    }
    free(body.bytes);

out:
    w->t_end = now_ns();
    atomic_store(&w->published, 1);
    /* Stay connected until the consumers are done: a channel closed right
     * after its last publish can lose messages the broker has not queued
     * yet, which would show as missing without any broker fault. */
    while (!atomic_load(&r->consumers_done) && !atomic_load(&r->stop)) {
        sleep_ms(5);
    }
    if (w->failed) {
        healthy = 0;
    }
    conn_close(conn, healthy && !atomic_load(&r->stop));
    atomic_store(&w->finished, 1);
    return NULL;
}

/* -------------------------------- consumer -------------------------------- */

static int ack_pending(struct worker *w,
                       amqp_connection_state_t conn,
                       uint64_t *pending,
                       uint64_t last_tag)
{
    int rv;

    if (*pending == 0) {
        return 0;
    }
    rv = amqp_basic_ack(conn, CHANNEL, last_tag, *pending > 1);
    *pending = 0;
    if (rv != AMQP_STATUS_OK) {
        fail(w, "basic.ack: %s", amqp_error_string2(rv));
        return -1;
    }
    return 0;
}

static void consume_one(struct worker *w, const amqp_envelope_t *env)
{
    struct run *r = w->r;
    struct amqpacct_body b;
    uint64_t now = now_ns();
    int rv;

    w->deliveries++;
    w->t_last = now;
    if (env->redelivered) {
        w->redelivered++;
    }
    if (amqpacct_body_decode(env->message.body.bytes, env->message.body.len,
                             &b) != 0 ||
        b.run_id != r->run_id || b.publisher >= r->o->publishers) {
        w->foreign++;
        return;
    }
    hist_record(&w->e2e_lat, now > b.sent_ns ? now - b.sent_ns : 0);
    rv = amqpacct_seen_add(&w->seen, b.publisher, b.seq);
    if (rv == 1) {
        atomic_fetch_add(&r->consumed_new, 1);
    } else if (rv == 0) {
        w->dup_local++;
    } else {
        fail(w, "%s", "out of memory for the seen-set");
    }
}

/* Time to stop: everything published was consumed once publishing ended,
 * or the drain timeout has passed. */
static int consumer_done(struct run *r)
{
    uint64_t dl;

    if (atomic_load(&r->stop)) {
        return 1;
    }
    if (!atomic_load(&r->publishing_done)) {
        return 0;
    }
    if (atomic_load(&r->consumed_new) >= atomic_load(&r->sent_total)) {
        return 1;
    }
    dl = atomic_load(&r->drain_deadline);
    return dl && now_ns() >= dl;
}

static void *consumer_main(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->r;
    const struct opts *o = r->o;
    amqp_connection_state_t conn;
    amqp_rpc_reply_t rr;
    amqp_envelope_t env;
    amqp_frame_t f;
    struct timeval tv = {0, POLL_MS * 1000};
    uint64_t pending = 0;
    uint64_t last_tag = 0;
    unsigned ack_every = o->multiple_ack ? o->multiple_ack : 1;

    conn = conn_open(o, w->sv, w->err, sizeof(w->err));
    if (conn == NULL) {
        w->failed = 1;
        atomic_fetch_add(&r->consumers_ready, 1);
        atomic_fetch_add(&r->consumers_stopped, 1);
        atomic_store(&w->finished, 1);
        return NULL;
    }
    atomic_store(&w->fd, amqp_get_sockfd(conn));
    if (o->prefetch) {
        amqp_basic_qos(conn, CHANNEL, 0, (uint16_t)o->prefetch, 0);
        rr = amqp_get_rpc_reply(conn);
        if (rr.reply_type != AMQP_RESPONSE_NORMAL) {
            reply_str(rr, "basic.qos", w->err, sizeof(w->err));
            w->failed = 1;
        }
    }
    if (!w->failed) {
        amqp_basic_consume(conn, CHANNEL, amqp_cstring_bytes(o->queue),
                           amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
        rr = amqp_get_rpc_reply(conn);
        if (rr.reply_type != AMQP_RESPONSE_NORMAL) {
            reply_str(rr, "basic.consume", w->err, sizeof(w->err));
            w->failed = 1;
        }
    }
    atomic_fetch_add(&r->consumers_ready, 1);

    while (!w->failed && !consumer_done(r)) {
        amqp_maybe_release_buffers(conn);
        rr = amqp_consume_message(conn, &env, &tv, 0);
        if (rr.reply_type == AMQP_RESPONSE_NORMAL) {
            consume_one(w, &env);
            last_tag = env.delivery_tag;
            amqp_destroy_envelope(&env);
            if (++pending >= ack_every) {
                ack_pending(w, conn, &pending, last_tag);
            }
            continue;
        }
        if (rr.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            rr.library_error == AMQP_STATUS_TIMEOUT) {
            ack_pending(w, conn, &pending, last_tag); /* idle: flush acks */
            continue;
        }
        if (rr.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            rr.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            /* Not a delivery: read it and see. */
            if (amqp_simple_wait_frame(conn, &f) != AMQP_STATUS_OK) {
                fail(w, "%s", "consumer connection lost");
                break;
            }
            if (f.frame_type == AMQP_FRAME_METHOD &&
                handle_async_method(w, conn, &f) != 0) {
                break;
            }
            continue;
        }
        reply_str(rr, "consume", w->err, sizeof(w->err));
        w->failed = 1;
    }
    if (!w->failed) {
        ack_pending(w, conn, &pending, last_tag);
    }
    /* Close only once every consumer has stopped reading: a broker may
     * requeue what a closing channel had just acked (one RabbitMQ quorum
     * run out of 8 ended with 3 redelivered duplicates; acks ignored at
     * channel.close is rabbitmq-server#10327), and a consumer still reading
     * would count those redeliveries as duplicates of this run. */
    atomic_fetch_add(&r->consumers_stopped, 1);
    while (atomic_load(&r->consumers_stopped) < o->consumers &&
           !atomic_load(&r->stop)) {
        sleep_ms(1);
    }
    conn_close(conn, !w->failed && !atomic_load(&r->stop));
    atomic_store(&w->finished, 1);
    return NULL;
}

/* --------------------------------- setup ---------------------------------- */

/* Delete (unless --no-purge) and declare the queue. 0, or -1 with @err. */
static int setup_queue(const struct opts *o, char *err, size_t errlen)
{
    amqp_connection_state_t conn;
    amqp_rpc_reply_t rr;
    amqp_table_entry_t qtype;
    amqp_table_t args = amqp_empty_table;
    amqp_bytes_t q = amqp_cstring_bytes(o->queue);

    conn = conn_open(o, &o->servers[0], err, errlen);
    if (conn == NULL) {
        return -1;
    }
    if (!o->no_purge) {
        amqp_queue_delete(conn, CHANNEL, q, 0, 0);
        rr = amqp_get_rpc_reply(conn);
        if (rr.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
            rr.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            /* e.g. 404 from a broker that does not delete a missing queue
             * silently: the channel is closed, open it again. */
            amqp_channel_close_ok_t ok = {0};

            amqp_send_method(conn, CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
            amqp_channel_open(conn, CHANNEL);
            rr = amqp_get_rpc_reply(conn);
        } else if (rr.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
                   rr.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            /* A broker without queue.delete (540 not implemented, say):
             * say so and declare over whatever is there; messages of
             * earlier runs are then counted as foreign. */
            amqp_connection_close_ok_t ok = {0};

            reply_str(rr, "queue.delete", err, errlen);
            fprintf(stderr, "amqpload: %s: keeping the queue\n", err);
            amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
            amqp_destroy_connection(conn);
            conn = conn_open(o, &o->servers[0], err, errlen);
            if (conn == NULL) {
                return -1;
            }
            rr.reply_type = AMQP_RESPONSE_NORMAL;
        }
        if (rr.reply_type != AMQP_RESPONSE_NORMAL) {
            reply_str(rr, "queue.delete", err, errlen);
            conn_close(conn, 0);
            return -1;
        }
    }
    if (o->quorum) {
        qtype.key = amqp_cstring_bytes("x-queue-type");
        qtype.value.kind = AMQP_FIELD_KIND_UTF8;
        qtype.value.value.bytes = amqp_cstring_bytes("quorum");
        args.num_entries = 1;
        args.entries = &qtype;
    }
    amqp_queue_declare(conn, CHANNEL, q, 0, 1, 0, 0, args);
    rr = amqp_get_rpc_reply(conn);
    if (rr.reply_type != AMQP_RESPONSE_NORMAL) {
        reply_str(rr, "queue.declare", err, errlen);
        conn_close(conn, 0);
        return -1;
    }
    conn_close(conn, 1);
    return 0;
}

/* Wait for @flag of @w (and then join the thread if @join); past @deadline
 * + grace shut its socket down (and stop everyone) so a blocked call
 * returns. */
static void join_bounded(struct run *r,
                         struct worker *w,
                         atomic_int *flag,
                         uint64_t deadline,
                         int join)
{
    uint64_t grace = deadline + (uint64_t)WATCHDOG_GRACE_S * 1000000000u;
    int shut = 0;
    int fd;

    while (!atomic_load(flag)) {
        if (!shut && now_ns() > grace) {
            atomic_store(&r->stop, 1);
            fd = atomic_load(&w->fd);
            if (fd >= 0) {
                shutdown(fd, SHUT_RDWR);
            }
            fail(w, "%s", "stuck past its deadline: socket shut down");
            shut = 1;
        }
        sleep_ms(5);
    }
    if (join) {
        pthread_join(w->thread, NULL);
    }
}

/* -------------------------------- report ---------------------------------- */

struct totals {
    uint64_t sent, confirmed, nacked, unconfirmed, bad_confirms, returned;
    uint64_t blocked;
    uint64_t deliveries, unique, duplicates, redelivered, foreign;
    uint64_t missing, unexpected;
    uint64_t pub_errors, con_errors;
    double pub_s, con_s;
    struct hist confirm_lat, e2e_lat;
};

static void print_lat_json(const char *name, const struct hist *h, int last)
{
    printf("    \"%s\": {\"count\": %" PRIu64
           ", \"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, "
           "\"max\": %.1f, \"mean\": %.1f}%s\n",
           name, h->count, hist_percentile(h, 50) / 1e3,
           hist_percentile(h, 90) / 1e3, hist_percentile(h, 99) / 1e3,
           hist_percentile(h, 99.9) / 1e3, h->count ? h->max / 1e3 : 0.0,
           hist_mean(h) / 1e3, last ? "" : ",");
}

static void print_lat_text(const char *name, const struct hist *h)
{
    if (h->count == 0) {
        printf("  %-8s %10s\n", name, "-");
        return;
    }
    printf("  %-8s %10.1f %10.1f %10.1f %10.1f %10.1f\n", name,
           hist_percentile(h, 50) / 1e3, hist_percentile(h, 90) / 1e3,
           hist_percentile(h, 99) / 1e3, hist_percentile(h, 99.9) / 1e3,
           h->max / 1e3);
}

static void report(const struct opts *o,
                   const struct totals *t,
                   struct worker *pubs,
                   struct worker *cons,
                   double cpu_u,
                   double cpu_s)
{
    double pub_rate = t->pub_s > 0 ? (double)t->sent / t->pub_s : 0;
    double con_rate = t->con_s > 0 ? (double)t->unique / t->con_s : 0;
    unsigned i;

    if (o->json) {
        printf("{\n  \"servers\": [");
        for (i = 0; i < o->n_servers; i++) {
            printf("%s\"%s\"", i ? ", " : "", o->servers[i].name);
        }
        printf(
            "],\n  \"queue\": \"%s\", \"quorum\": %s, \"publishers\": %u, "
            "\"consumers\": %u,\n",
            o->queue, o->quorum ? "true" : "false", o->publishers,
            o->consumers);
        printf(
            "  \"persistent\": %s, \"confirms\": %s, \"confirm_window\": "
            "%u, \"prefetch\": %u, \"multiple_ack\": %u, \"size\": %u, "
            "\"rate\": %.0f,\n",
            o->persistent ? "true" : "false", o->confirms ? "true" : "false",
            o->confirm_window, o->prefetch, o->multiple_ack, o->size, o->rate);
        printf("  \"published\": %" PRIu64 ", \"confirmed\": %" PRIu64
               ", \"nacked\": %" PRIu64 ", \"unconfirmed\": %" PRIu64
               ", \"returned\": %" PRIu64 ", \"bad_confirms\": %" PRIu64
               ", \"blocked\": %" PRIu64 ",\n",
               t->sent, t->confirmed, t->nacked, t->unconfirmed, t->returned,
               t->bad_confirms, t->blocked);
        printf("  \"consumed\": %" PRIu64 ", \"deliveries\": %" PRIu64
               ", \"duplicates\": %" PRIu64 ", \"redelivered\": %" PRIu64
               ", \"missing\": %" PRIu64 ", \"unexpected\": %" PRIu64
               ", \"foreign\": %" PRIu64 ",\n",
               t->unique, t->deliveries, t->duplicates, t->redelivered,
               t->missing, t->unexpected, t->foreign);
        printf("  \"errors\": %" PRIu64 ", \"publisher_errors\": %" PRIu64
               ", \"consumer_errors\": %" PRIu64 ",\n",
               t->pub_errors + t->con_errors, t->pub_errors, t->con_errors);
        printf(
            "  \"publish_s\": %.3f, \"consume_s\": %.3f, "
            "\"published_per_sec\": %.1f, \"consumed_per_sec\": %.1f,\n",
            t->pub_s, t->con_s, pub_rate, con_rate);
        printf("  \"cpu_user_s\": %.2f, \"cpu_sys_s\": %.2f,\n", cpu_u, cpu_s);
        printf("  \"latency_us\": {\n");
        print_lat_json("confirm", &t->confirm_lat, 0);
        print_lat_json("end_to_end", &t->e2e_lat, 1);
        printf("  }\n}\n");
    } else {
        printf(
            "amqpload: queue %s%s, %u publisher(s), %u consumer(s), %u B, "
            "%s%s, prefetch %u, ack every %u\n",
            o->queue, o->quorum ? " (quorum)" : "", o->publishers, o->consumers,
            o->size, o->persistent ? "persistent" : "transient",
            o->confirms ? ", confirms" : "", o->prefetch,
            o->multiple_ack ? o->multiple_ack : 1);
        printf("published  %" PRIu64 " in %.2f s: %.0f msgs/s", t->sent,
               t->pub_s, pub_rate);
        if (o->rate > 0) {
            printf(" (--rate %.0f)", o->rate);
        }
        printf("\n");
        if (o->confirms) {
            printf("confirmed  %" PRIu64 ", nacked %" PRIu64
                   ", unconfirmed %" PRIu64 "\n",
                   t->confirmed, t->nacked, t->unconfirmed);
        }
        printf("consumed   %" PRIu64 " in %.2f s: %.0f msgs/s (%" PRIu64
               " deliveries, %" PRIu64 " redelivered, %" PRIu64 " foreign)\n",
               t->unique, t->con_s, con_rate, t->deliveries, t->redelivered,
               t->foreign);
        printf("duplicates %" PRIu64 "\nmissing    %" PRIu64
               "  (unconfirmed but consumed: %" PRIu64 ")\n",
               t->duplicates, t->missing, t->unexpected);
        printf("errors     %" PRIu64 "  (publishers %" PRIu64
               ", consumers %" PRIu64 ")\n",
               t->pub_errors + t->con_errors, t->pub_errors, t->con_errors);
        printf("cpu        %.2f s user, %.2f s sys\n", cpu_u, cpu_s);
        printf("latency us %10s %10s %10s %10s %10s\n", "p50", "p90", "p99",
               "p99.9", "max");
        print_lat_text("confirm", &t->confirm_lat);
        print_lat_text("e2e", &t->e2e_lat);
    }
    for (i = 0; i < o->publishers; i++) {
        if (pubs[i].failed) {
            fprintf(stderr, "amqpload: publisher %u: %s\n", i, pubs[i].err);
        }
    }
    for (i = 0; i < o->consumers; i++) {
        if (cons[i].failed) {
            fprintf(stderr, "amqpload: consumer %u: %s\n", i, cons[i].err);
        }
    }
}

/* --------------------------------- options -------------------------------- */

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: amqpload [options]\n"
        "  -s, --server HOST:PORT   broker; repeat or comma-separate for "
        "several\n"
        "                           (publisher i -> server i%%N, consumer j "
        "-> (P+j)%%N)\n"
        "                           (127.0.0.1:5672)\n"
        "  -q, --queue NAME         queue (amqpload), declared durable\n"
        "      --quorum             declare it with x-queue-type=quorum\n"
        "  -P, --publishers P       publisher threads/connections (1)\n"
        "  -C, --consumers C        consumer threads/connections (1)\n"
        "      --persistent         delivery_mode 2\n"
        "      --confirms           publisher confirms\n"
        "  -W, --confirm-window W   unconfirmed messages per publisher (64)\n"
        "      --prefetch N         basic.qos prefetch_count per consumer "
        "(100, 0 = none)\n"
        "      --multiple-ack K     ack every K messages with multiple=true "
        "(1)\n"
        "  -d, --size BYTES         body size, >= 32 (1024)\n"
        "  -n, --messages N         publish N in all; --seconds is then a cap "
        "(60)\n"
        "  -t, --seconds S          publish for S seconds (10)\n"
        "      --rate N             publish N msgs/s in all, paced evenly "
        "over the\n"
        "                           publishers (0 = as fast as they can)\n"
        "      --drain-timeout S    wait for consumers/confirms after "
        "publishing (30)\n"
        "      --connect-timeout S  connect + login, per connection (5)\n"
        "      --no-purge           keep the queue as it is (default: delete "
        "and redeclare)\n"
        "      --backlog            start the consumers only once publishing "
        "ended:\n"
        "                           fill the queue, then drain it (consume "
        "rate\n"
        "                           from the consumers' start)\n"
        "      --vhost V --user U --password P   (/ guest guest)\n"
        "      --probe              only connect, log in and open a channel "
        "on\n"
        "                           every server; exit 0 if all do\n"
        "  -j, --json               JSON report on stdout\n"
        "Exit status: 0 if something was published, nothing is missing and "
        "no\n"
        "connection failed; 1 otherwise; 2 for bad options.\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_uint(const char *s, unsigned max, unsigned *out)
{
    uint64_t v;

    if (parse_u64(s, &v) != 0 || v > max) {
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(s, &end);
    return (errno || end == s || *end || *out < 0) ? -1 : 0;
}

static int add_servers(struct opts *o, const char *spec)
{
    char buf[1024];
    char *save = NULL;
    char *tok;
    char *colon;
    unsigned port;
    struct server *sv;

    snprintf(buf, sizeof(buf), "%s", spec);
    for (tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (o->n_servers == MAX_SERVERS) {
            return -1;
        }
        colon = strrchr(tok, ':');
        if (colon == NULL || colon == tok ||
            parse_uint(colon + 1, 65535, &port) != 0 || port == 0 ||
            (size_t)(colon - tok) >= sizeof(sv->host)) {
            return -1;
        }
        sv = &o->servers[o->n_servers++];
        memcpy(sv->host, tok, (size_t)(colon - tok));
        sv->host[colon - tok] = '\0';
        sv->port = (int)port;
        snprintf(sv->name, sizeof(sv->name), "%.*s:%u", (int)(colon - tok), tok,
                 port);
    }
    return 0;
}

enum {
    OPT_QUORUM = 256,
    OPT_PERSISTENT,
    OPT_CONFIRMS,
    OPT_PREFETCH,
    OPT_MULTIPLE_ACK,
    OPT_DRAIN,
    OPT_CONNECT_TIMEOUT,
    OPT_NO_PURGE,
    OPT_BACKLOG,
    OPT_VHOST,
    OPT_USER,
    OPT_PASSWORD,
    OPT_PROBE,
    OPT_RATE,
};

static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},
        {"queue", required_argument, NULL, 'q'},
        {"quorum", no_argument, NULL, OPT_QUORUM},
        {"publishers", required_argument, NULL, 'P'},
        {"consumers", required_argument, NULL, 'C'},
        {"persistent", no_argument, NULL, OPT_PERSISTENT},
        {"confirms", no_argument, NULL, OPT_CONFIRMS},
        {"confirm-window", required_argument, NULL, 'W'},
        {"prefetch", required_argument, NULL, OPT_PREFETCH},
        {"multiple-ack", required_argument, NULL, OPT_MULTIPLE_ACK},
        {"size", required_argument, NULL, 'd'},
        {"messages", required_argument, NULL, 'n'},
        {"seconds", required_argument, NULL, 't'},
        {"rate", required_argument, NULL, OPT_RATE},
        {"drain-timeout", required_argument, NULL, OPT_DRAIN},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"no-purge", no_argument, NULL, OPT_NO_PURGE},
        {"backlog", no_argument, NULL, OPT_BACKLOG},
        {"vhost", required_argument, NULL, OPT_VHOST},
        {"user", required_argument, NULL, OPT_USER},
        {"password", required_argument, NULL, OPT_PASSWORD},
        {"probe", no_argument, NULL, OPT_PROBE},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int seconds_set = 0;
    int c;

    memset(o, 0, sizeof(*o));
    snprintf(o->queue, sizeof(o->queue), "amqpload");
    o->publishers = 1;
    o->consumers = 1;
    o->confirm_window = 64;
    o->prefetch = 100;
    o->multiple_ack = 1;
    o->size = 1024;
    o->seconds = 10;
    o->drain_timeout = 30;
    o->connect_timeout = 5;
    o->vhost = "/";
    o->user = "guest";
    o->password = "guest";

    while ((c = getopt_long(argc, argv, "s:q:P:C:W:d:n:t:jh", longopts,
                            NULL)) != -1) {
        switch (c) {
            case 's':
                if (add_servers(o, optarg) != 0) {
                    fprintf(stderr, "amqpload: bad server '%s'\n", optarg);
                    return 2;
                }
                break;
            case 'q':
                if (optarg[0] == '\0' || strlen(optarg) > 255) {
                    goto bad;
                }
                memcpy(o->queue, optarg, strlen(optarg) + 1);
                break;
            case OPT_QUORUM:
                o->quorum = 1;
                break;
            case 'P':
                if (parse_uint(optarg, MAX_THREADS, &o->publishers) != 0 ||
                    o->publishers == 0) {
                    goto bad;
                }
                break;
            case 'C':
                if (parse_uint(optarg, MAX_THREADS, &o->consumers) != 0 ||
                    o->consumers == 0) {
                    goto bad;
                }
                break;
            case OPT_PERSISTENT:
                o->persistent = 1;
                break;
            case OPT_CONFIRMS:
                o->confirms = 1;
                break;
            case 'W':
                if (parse_uint(optarg, 1u << 20, &o->confirm_window) != 0 ||
                    o->confirm_window == 0) {
                    goto bad;
                }
                break;
            case OPT_PREFETCH:
                if (parse_uint(optarg, 65535, &o->prefetch) != 0) {
                    goto bad;
                }
                break;
            case OPT_MULTIPLE_ACK:
                if (parse_uint(optarg, 65535, &o->multiple_ack) != 0 ||
                    o->multiple_ack == 0) {
                    goto bad;
                }
                break;
            case 'd':
                if (parse_uint(optarg, 1u << 27, &o->size) != 0) {
                    goto bad;
                }
                break;
            case 'n':
                if (parse_u64(optarg, &o->messages) != 0 || o->messages == 0) {
                    goto bad;
                }
                break;
            case 't':
                if (parse_double(optarg, &o->seconds) != 0 || o->seconds <= 0) {
                    goto bad;
                }
                seconds_set = 1;
                break;
            case OPT_RATE:
                if (parse_double(optarg, &o->rate) != 0) {
                    goto bad;
                }
                break;
            case OPT_DRAIN:
                if (parse_double(optarg, &o->drain_timeout) != 0) {
                    goto bad;
                }
                break;
            case OPT_CONNECT_TIMEOUT:
                if (parse_double(optarg, &o->connect_timeout) != 0 ||
                    o->connect_timeout <= 0) {
                    goto bad;
                }
                break;
            case OPT_NO_PURGE:
                o->no_purge = 1;
                break;
            case OPT_BACKLOG:
                o->backlog = 1;
                break;
            case OPT_VHOST:
                o->vhost = optarg;
                break;
            case OPT_USER:
                o->user = optarg;
                break;
            case OPT_PASSWORD:
                o->password = optarg;
                break;
            case OPT_PROBE:
                o->probe = 1;
                break;
            case 'j':
                o->json = 1;
                break;
            case 'h':
                usage(stdout);
                exit(0);
            default:
                usage(stderr);
                return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "amqpload: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (o->n_servers == 0) {
        add_servers(o, "127.0.0.1:5672");
    }
    if (o->messages && !seconds_set) {
        o->seconds = 60;
    }
    if (o->size < AMQPACCT_HDR_SIZE) {
        fprintf(stderr, "amqpload: --size must be at least %d\n",
                AMQPACCT_HDR_SIZE);
        return 2;
    }
    if (o->prefetch && o->multiple_ack > o->prefetch) {
        fprintf(stderr,
                "amqpload: --multiple-ack %u > --prefetch %u would stall: "
                "using %u\n",
                o->multiple_ack, o->prefetch, o->prefetch);
        o->multiple_ack = o->prefetch;
    }
    return 0;

bad:
    fprintf(stderr, "amqpload: bad value for option %s: '%s' (see --help)\n",
            argv[optind - 1], optarg);
    return 2;
}

/* ---------------------------------- main ---------------------------------- */

static int probe(const struct opts *o)
{
    amqp_connection_state_t conn;
    char err[256];
    unsigned i;
    int bad = 0;

    for (i = 0; i < o->n_servers; i++) {
        conn = conn_open(o, &o->servers[i], err, sizeof(err));
        if (conn == NULL) {
            fprintf(stderr, "amqpload: %s\n", err);
            bad = 1;
            continue;
        }
        conn_close(conn, 1);
    }
    return bad;
}

static int init_worker(struct worker *w,
                       struct run *r,
                       unsigned id,
                       const struct server *sv)
{
    memset(w, 0, sizeof(*w));
    w->r = r;
    w->id = id;
    w->sv = sv;
    atomic_init(&w->fd, -1);
    atomic_init(&w->published, 0);
    atomic_init(&w->finished, 0);
    hist_init(&w->confirm_lat);
    hist_init(&w->e2e_lat);
    if (amqpacct_seen_init(&w->seen, r->o->publishers) != 0) {
        return -1;
    }
    return amqpacct_window_init(&w->win, r->o->confirm_window);
}

/* After the worker's thread has been joined. */
static void free_worker(struct worker *w)
{
    amqpacct_seen_free(&w->seen);
    amqpacct_window_free(&w->win);
}

static void wait_ready(struct run *r,
                       atomic_uint *ready,
                       unsigned n,
                       double timeout)
{
    uint64_t end = now_ns() + (uint64_t)((timeout + 1) * 1e9);

    while (atomic_load(ready) < n && now_ns() < end) {
        sleep_ms(1);
    }
    if (atomic_load(ready) < n) {
        atomic_store(&r->stop, 1);
    }
}

/* Start the consumers and wait until they consume (or failed). */
static int start_consumers(struct run *r, struct worker *cons)
{
    const struct opts *o = r->o;
    unsigned i;

    for (i = 0; i < o->consumers; i++) {
        if (init_worker(&cons[i], r, i,
                        &o->servers[(o->publishers + i) % o->n_servers]) != 0 ||
            pthread_create(&cons[i].thread, NULL, consumer_main, &cons[i])) {
            fprintf(stderr, "amqpload: cannot start consumer %u\n", i);
            return -1;
        }
    }
    wait_ready(r, &r->consumers_ready, o->consumers, o->connect_timeout);
    if (o->backlog) {
        r->t_drain0 = now_ns();
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct opts o;
    static struct run r;
    static struct totals t;
    struct worker *pubs;
    struct worker *cons;
    struct amqpacct_seen expected;
    struct amqpacct_seen got;
    char err[256];
    struct rusage ru0, ru1;
    uint64_t t_pub_end = 0;
    uint64_t t_con_end = 0;
    uint64_t deadline;
    int64_t both;
    unsigned i;
    int rv;

    rv = parse_opts(argc, argv, &o);
    if (rv != 0) {
        return rv;
    }
    if (o.probe) {
        return probe(&o);
    }
    r.o = &o;
    if (getrandom(&r.run_id, sizeof(r.run_id), 0) != sizeof(r.run_id)) {
        r.run_id = now_ns() ^ ((uint64_t)getpid() << 32);
    }
    atomic_init(&r.drain_deadline, 0);

    if (setup_queue(&o, err, sizeof(err)) != 0) {
        fprintf(stderr, "amqpload: setup: %s\n", err);
        return 1;
    }

    pubs = calloc(o.publishers, sizeof(*pubs));
    cons = calloc(o.consumers, sizeof(*cons));
    if (pubs == NULL || cons == NULL ||
        amqpacct_seen_init(&expected, o.publishers) != 0 ||
        amqpacct_seen_init(&got, o.publishers) != 0) {
        fprintf(stderr, "amqpload: out of memory\n");
        return 1;
    }
    getrusage(RUSAGE_SELF, &ru0);
    if (!o.backlog && start_consumers(&r, cons) != 0) {
        return 1;
    }
    for (i = 0; i < o.publishers; i++) {
        if (init_worker(&pubs[i], &r, i, &o.servers[i % o.n_servers]) != 0) {
            fprintf(stderr, "amqpload: out of memory\n");
            return 1;
        }
        pubs[i].quota =
            o.messages / o.publishers + (i < o.messages % o.publishers ? 1 : 0);
        if (pthread_create(&pubs[i].thread, NULL, publisher_main, &pubs[i])) {
            fprintf(stderr, "amqpload: cannot start publisher %u\n", i);
            return 1;
        }
    }
    wait_ready(&r, &r.publishers_ready, o.publishers, o.connect_timeout);
    r.t0 = now_ns();
    if (!o.backlog) {
        r.t_drain0 = r.t0;
    }
    r.publish_deadline = r.t0 + (uint64_t)(o.seconds * 1e9);
    atomic_store(&r.go, 1);

    /* A publisher is done by the deadline plus the drain of its confirms. */
    deadline = r.publish_deadline + (uint64_t)(o.drain_timeout * 1e9);
    for (i = 0; i < o.publishers; i++) {
        join_bounded(&r, &pubs[i], &pubs[i].published, deadline, 0);
        if (pubs[i].t_end > t_pub_end) {
            t_pub_end = pubs[i].t_end;
        }
    }
    atomic_store(&r.drain_deadline,
                 now_ns() + (uint64_t)(o.drain_timeout * 1e9));
    atomic_store(&r.publishing_done, 1);
    if (o.backlog) {
        if (start_consumers(&r, cons) != 0) {
            return 1;
        }
        /* the drain's timeout counts from the consumers' start */
        atomic_store(&r.drain_deadline,
                     now_ns() + (uint64_t)(o.drain_timeout * 1e9));
    }
    deadline = atomic_load(&r.drain_deadline);
    for (i = 0; i < o.consumers; i++) {
        join_bounded(&r, &cons[i], &cons[i].finished, deadline, 1);
        if (cons[i].t_last > t_con_end) {
            t_con_end = cons[i].t_last;
        }
    }
    atomic_store(&r.consumers_done, 1);
    deadline = now_ns() + (uint64_t)(o.connect_timeout * 1e9);
    for (i = 0; i < o.publishers; i++) {
        join_bounded(&r, &pubs[i], &pubs[i].finished, deadline, 1);
    }
    getrusage(RUSAGE_SELF, &ru1);

    hist_init(&t.confirm_lat);
    hist_init(&t.e2e_lat);
    for (i = 0; i < o.publishers; i++) {
        struct worker *w = &pubs[i];

        t.sent += w->sent;
        t.confirmed += o.confirms ? w->confirmed : w->sent;
        t.nacked += w->nacked;
        t.bad_confirms += w->bad_confirms;
        t.returned += w->returned;
        t.blocked += w->blocked;
        t.pub_errors += w->failed ? 1 : 0;
        hist_add(&t.confirm_lat, &w->confirm_lat);
        if (amqpacct_seen_merge(&expected, &w->seen) < 0) {
            fprintf(stderr, "amqpload: out of memory\n");
            return 1;
        }
    }
    t.unconfirmed = o.confirms ? t.sent - t.confirmed - t.nacked : 0;
    for (i = 0; i < o.consumers; i++) {
        struct worker *w = &cons[i];

        t.deliveries += w->deliveries;
        t.duplicates += w->dup_local;
        t.redelivered += w->redelivered;
        t.foreign += w->foreign;
        t.con_errors += w->failed ? 1 : 0;
        hist_add(&t.e2e_lat, &w->e2e_lat);
        both = amqpacct_seen_merge(&got, &w->seen);
        if (both < 0) {
            fprintf(stderr, "amqpload: out of memory\n");
            return 1;
        }
        t.duplicates += (uint64_t)both;
    }
    t.unique = amqpacct_seen_count(&got);
    t.missing = amqpacct_seen_diff(&expected, &got);
    t.unexpected = amqpacct_seen_diff(&got, &expected);
    t.pub_s = t_pub_end > r.t0 ? (double)(t_pub_end - r.t0) / 1e9 : 0;
    t.con_s = t_con_end > r.t_drain0
                  ? (double)(t_con_end - r.t_drain0) / 1e9
                  : 0;

    report(&o, &t, pubs, cons,
           (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
               (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6,
           (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
               (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6);
    /* Every thread has been joined: its memory can go (LeakSanitizer runs
     * of amqpload stay quiet). */
    for (i = 0; i < o.publishers; i++) {
        free_worker(&pubs[i]);
    }
    for (i = 0; i < o.consumers; i++) {
        free_worker(&cons[i]);
    }
    free(pubs);
    free(cons);
    amqpacct_seen_free(&expected);
    amqpacct_seen_free(&got);
    return (t.sent > 0 && t.missing == 0 && t.pub_errors == 0 &&
            t.con_errors == 0)
               ? 0
               : 1;
}
