/*
 * mcload: a closed-loop memcached text-protocol load generator on libuv.
 *
 * Each connection keeps up to --pipeline requests outstanding; a request is
 * a single-key "get" or a "set" (noreply off, so every request has a reply
 * and a latency). Latency is taken from the moment a request's bytes are
 * handed to the kernel to the moment its reply has been read, and goes into
 * a log-linear histogram (bench/hist.h) per operation and thread.
 *
 * With --rate R the run is open-loop instead: every connection has a
 * schedule (R requests/s spread evenly over all connections) and a
 * request's latency counts from its scheduled time, not from when it could
 * be sent. A server that stalls therefore shows the stall in every request
 * scheduled during it (a closed loop would record one slow request per
 * connection and simply send fewer: "coordinated omission"). --pipeline
 * still caps what is outstanding; requests due beyond it wait, late, and
 * are reported as the backlog left at the end.
 *
 * Threads (--threads) each run their own uv loop over their share of the
 * connections and meet only at a barrier between warmup and the measured
 * run; their counters and histograms are merged after they have joined.
 *
 * Per thread, one run goes through these phases, each bounded by a timer:
 *
 *   CONNECT --all connected or failed / --connect-timeout--> [WARMUP]
 *   WARMUP  --every key set once / --warmup-seconds--------> barrier
 *   RUN     --deadline (--seconds) or quota (--requests)----> DONE
 *   DONE: close everything, drain the loop, report.
 *
 * A connection that fails or is closed by the server is counted, its
 * outstanding requests are counted as lost, and it reconnects after
 * RETRY_MS; the run goes on. Nothing a server sends makes mcload exit early.
 * SIGINT or SIGTERM ends the current phase and the run early, and mcload
 * reports what it measured until then (a script measuring a window of
 * unknown length starts it with a long --seconds and signals it).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RUSAGE_THREAD; the build defines it already */
#endif
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>

#include <uv.h>

#include "bench/hist.h"
#include "bench/mcreply.h"
#include "bench/pace.h"

#define MAX_SERVERS 64
#define MAX_PIPELINE 512    /* 2 iovecs per set: stays under IOV_MAX (1024) */
#define MAX_KEYS 100000000u /* "key:%08u" stays 12 bytes */
#define READ_BUF_SIZE (256 * 1024)
#define RETRY_MS 100
#define KEY_DIGITS 8

enum { OP_GET, OP_SET };
enum { PH_CONNECT, PH_WARMUP, PH_RUN, PH_DONE };
enum { SPREAD_MOD, SPREAD_ANY };
enum {
    CONN_IDLE, /* not connected, no handle open (initial / retry wait) */
    CONN_CONNECTING,
    CONN_READY,
    CONN_CLOSING,
};

struct server {
    char name[128];
    struct sockaddr_storage addr;
};

struct opts {
    struct server servers[MAX_SERVERS];
    unsigned n_servers;
    unsigned connections; /* per server */
    unsigned pipeline;
    unsigned value_size;
    unsigned ratio_get;
    unsigned ratio_set;
    unsigned keys;
    double seconds;
    uint64_t requests;
    int warmup;
    double warmup_seconds;
    double connect_timeout;
    uint64_t seed;
    double rate; /* requests/s in all, 0 = closed loop */
    unsigned threads;
    int spread;
    int json;
};

struct counts {
    uint64_t gets;
    uint64_t sets; /* answered STORED */
    uint64_t hits;
    uint64_t misses;
    uint64_t not_stored; /* NOT_STORED / EXISTS / NOT_FOUND to a set */
    uint64_t server_errors;
    uint64_t client_errors;
    uint64_t errors;       /* plain "ERROR" */
    uint64_t protocol;     /* unparsable or unexpected reply */
    uint64_t key_mismatch; /* VALUE for another key than asked */
    uint64_t conn_closed;  /* established connection lost */
    uint64_t connect_failed;
    uint64_t lost; /* requests outstanding on a lost connection */
};

/* One outstanding request; slots form a ring of --pipeline per conn. */
struct slot {
    uint64_t t_send;
    uint32_t key;
    uint8_t op;
    char hdr[64];
    uint8_t hdr_len;
};

struct worker;

struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    uv_timer_t retry_timer;
    struct worker *w;
    const struct server *server;
    unsigned server_idx;
    int state;
    int writing;     /* a uv_write is in flight: no new requests till cb */
    int first_done;  /* first connect attempt has finished */
    int proto_error; /* set from the reply callback, acted on after feed */
    struct slot *slots;
    unsigned head;  /* oldest outstanding */
    unsigned count; /* outstanding */
    uv_buf_t *bufs;
    struct mcreply_parser parser;
    uint64_t warm_next;
    uint64_t warm_stride;
    uint64_t next_due; /* --rate: uv_hrtime() of its next request */
};

struct worker {
    const struct opts *o;
    unsigned id;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_timer_t phase_timer;
    uv_timer_t pace_timer; /* --rate: sends what has come due */
    uint64_t interval_ns;  /* --rate: between one connection's requests */
    uv_signal_t sig_int, sig_term; /* end the run early */
    int stop_asked;
    uv_barrier_t *barrier;
    struct conn *conns;
    unsigned n_conns;
    int phase;
    unsigned connect_pending;
    uint64_t rng;
    uint64_t now;   /* uv_hrtime() of the read being parsed */
    uint64_t quota; /* requests to issue in RUN, 0 = unbounded */
    uint64_t issued;
    uint64_t completed;
    uint64_t backlog; /* --rate: due at the end, never sent */
    uint64_t t_start;
    uint64_t t_end;
    int warm_incomplete;
    uint64_t setup_errors;
    double cpu_user;
    double cpu_sys;
    struct counts c;
    struct hist h_get;
    struct hist h_set;
    char *read_buf;
    char *value; /* value bytes + "\r\n", shared by every set */
    char set_hdr[64];
    size_t set_hdr_len;
    size_t set_key_at;
};

static void conn_connect(struct conn *c);
static uint64_t counts_errors(const struct counts *c);
static void conn_fill(struct conn *c);

/* ------------------------------- helpers ------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: fast, good enough for uniform keys and the op mix. */
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint32_t rng_below(uint64_t *s, uint32_t n)
{
    return (uint32_t)(((rng_next(s) >> 32) * (uint64_t)n) >> 32);
}

static void put_key_digits(char *at, uint32_t key)
{
    int i;

    for (i = KEY_DIGITS - 1; i >= 0; i--) {
        at[i] = (char)('0' + key % 10);
        key /= 10;
    }
}

static double thread_cpu(double *sys)
{
    struct rusage ru;

    getrusage(RUSAGE_THREAD, &ru);
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
}

/* ----------------------------- connection ------------------------------ */

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void phase_stop(struct worker *w)
{
    uv_timer_stop(&w->phase_timer);
    uv_stop(&w->loop);
}

/* WARMUP ends once every live connection has set its share of keys and
 * has nothing outstanding; a dead connection's share is abandoned (the
 * run reports it through its error counters). */
static void warmup_check(struct worker *w)
{
    unsigned i;

    if (w->phase != PH_WARMUP) {
        return;
    }
    for (i = 0; i < w->n_conns; i++) {
        struct conn *c = &w->conns[i];

        if (c->state == CONN_READY &&
            (c->warm_next < w->o->keys || c->count > 0)) {
            return;
        }
        if (c->state == CONN_CONNECTING) {
            return;
        }
    }
    phase_stop(w);
}

static void connect_check(struct worker *w)
{
    if (w->phase == PH_CONNECT && w->connect_pending == 0) {
        phase_stop(w);
    }
}

static void on_retry(uv_timer_t *t)
{
    struct conn *c = t->data;

    if (c->w->phase != PH_DONE && c->state == CONN_IDLE) {
        conn_connect(c);
    }
}

static void on_tcp_closed(uv_handle_t *h)
{
    struct conn *c = h->data;

    c->state = CONN_IDLE;
    c->head = 0;
    c->count = 0;
    c->writing = 0;
    mcreply_init(&c->parser);
    if (c->w->phase != PH_DONE) {
        uv_timer_start(&c->retry_timer, on_retry, RETRY_MS, 0);
    }
    warmup_check(c->w);
}

/* Drop the connection: its outstanding requests will never be answered. */
static void conn_close(struct conn *c)
{
    if (c->state != CONN_READY && c->state != CONN_CONNECTING) {
        return;
    }
    if (c->w->phase != PH_DONE) {
        c->w->c.lost += c->count;
    }
    c->state = CONN_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct conn *c = h->data;

    (void)hint;
    /* One buffer per thread: each read is parsed to the end before the
     * loop can hand out the buffer again. */
    buf->base = c->w->read_buf;
    buf->len = READ_BUF_SIZE;
}

static void count_reply(struct worker *w,
                        struct conn *c,
                        const struct slot *s,
                        const struct mcreply *r)
{
    uint64_t lat = w->now - s->t_send;
    int measuring = w->phase == PH_RUN;

    switch (r->kind) {
        case MCREPLY_SERVER_ERROR:
            w->c.server_errors++;
            break;
        case MCREPLY_CLIENT_ERROR:
            w->c.client_errors++;
            break;
        case MCREPLY_ERROR:
            w->c.errors++;
            break;
        case MCREPLY_GET:
            if (s->op != OP_GET) {
                c->proto_error = 1;
                break;
            }
            if (r->n_values > 0) {
                /* "key:" + 8 digits: check it is the key we asked for. */
                char want[16];

                memcpy(want, "key:", 4);
                put_key_digits(want + 4, s->key);
                if (r->key_len != 4 + KEY_DIGITS ||
                    memcmp(r->key, want, r->key_len) != 0) {
                    w->c.key_mismatch++;
                    break;
                }
            }
            if (!measuring) {
                break;
            }
            w->c.gets++;
            if (r->n_values > 0) {
                w->c.hits++;
            } else {
                w->c.misses++;
            }
            hist_record(&w->h_get, lat);
            w->completed++;
            break;
        case MCREPLY_STORED:
            if (s->op != OP_SET) {
                c->proto_error = 1;
                break;
            }
            if (measuring) {
                w->c.sets++;
                hist_record(&w->h_set, lat);
                w->completed++;
            }
            break;
        case MCREPLY_NOT_STORED:
        case MCREPLY_EXISTS:
        case MCREPLY_NOT_FOUND:
            if (s->op != OP_SET) {
                c->proto_error = 1;
                break;
            }
            w->c.not_stored++;
            break;
        default:
            c->proto_error = 1;
            break;
    }
}

static void on_reply(void *arg, const struct mcreply *r)
{
    struct conn *c = arg;
    struct slot *s;

    if (c->proto_error) {
        return;
    }
    if (c->count == 0) {
        c->proto_error = 1; /* a reply nobody asked for */
        return;
    }
    s = &c->slots[c->head];
    c->head = (c->head + 1) % c->w->o->pipeline;
    c->count--;
    count_reply(c->w, c, s, r);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    struct worker *w = c->w;

    if (nread < 0) {
        if (w->phase != PH_DONE) {
            w->c.conn_closed++;
        }
        conn_close(c);
        return;
    }
    if (nread == 0) {
        return;
    }
    w->now = uv_hrtime();
    if (mcreply_feed(&c->parser, buf->base, (size_t)nread, on_reply, c) != 0 ||
        c->proto_error) {
        w->c.protocol++;
        c->proto_error = 0;
        conn_close(c);
        return;
    }
    if (w->phase == PH_RUN && w->quota != 0 && w->completed >= w->quota) {
        w->t_end = w->now;
        phase_stop(w);
        return;
    }
    conn_fill(c);
    warmup_check(w);
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;

    c->writing = 0;
    if (status < 0) {
        if (status != UV_ECANCELED && c->w->phase != PH_DONE) {
            c->w->c.conn_closed++;
        }
        conn_close(c);
        return;
    }
    conn_fill(c);
}

/* Hand @nb buffers to the kernel: directly when the socket takes them all
 * (the common case: no request object, no callback), else queue the rest
 * with uv_write and hold further requests until it completes. */
static int conn_send(struct conn *c, uv_buf_t *bufs, unsigned nb)
{
    int rv = uv_try_write((uv_stream_t *)&c->tcp, bufs, nb);
    size_t done;

    if (rv < 0 && rv != UV_EAGAIN) {
        return rv;
    }
    done = rv < 0 ? 0 : (size_t)rv;
    while (nb > 0 && done >= bufs[0].len) {
        done -= bufs[0].len;
        bufs++;
        nb--;
    }
    if (nb == 0) {
        return 0;
    }
    bufs[0].base += done;
    bufs[0].len -= done;
    rv = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, bufs, nb, on_write);
    if (rv == 0) {
        c->writing = 1;
    }
    return rv;
}

static int next_request(struct conn *c, uint8_t *op, uint32_t *key)
{
    struct worker *w = c->w;
    const struct opts *o = w->o;
    uint32_t span;

    if (w->phase == PH_WARMUP) {
        if (c->warm_next >= o->keys) {
            return 0;
        }
        *op = OP_SET;
        *key = (uint32_t)c->warm_next;
        c->warm_next += c->warm_stride;
        return 1;
    }
    if (w->phase != PH_RUN || (w->quota != 0 && w->issued >= w->quota)) {
        return 0;
    }
    w->issued++;
    *op = rng_below(&w->rng, o->ratio_get + o->ratio_set) < o->ratio_get
              ? OP_GET
              : OP_SET;
    if (o->spread == SPREAD_MOD && o->n_servers > 1) {
        /* keys k with k % n_servers == this server */
        span = (o->keys - c->server_idx + o->n_servers - 1) / o->n_servers;
        *key = c->server_idx + o->n_servers * rng_below(&w->rng, span);
    } else {
        *key = rng_below(&w->rng, o->keys);
    }
    return 1;
}

/* Top the pipeline up and send the new requests in one write. */
static void conn_fill(struct conn *c)
{
    struct worker *w = c->w;
    unsigned p = w->o->pipeline;
    unsigned nb = 0;
    uint64_t t;
    uint8_t op;
    uint32_t key;
    int paced;
    int rv;

    if (c->state != CONN_READY || c->writing) {
        return;
    }
    t = uv_hrtime();
    paced = w->phase == PH_RUN && w->interval_ns != 0;
    while (c->count < p && (!paced || c->next_due <= t) &&
           next_request(c, &op, &key)) {
        struct slot *s = &c->slots[(c->head + c->count) % p];

        c->count++;
        s->op = op;
        s->key = key;
        s->t_send = t;
        if (paced) {
            s->t_send = pace_latency_start(c->next_due, t);
            c->next_due += w->interval_ns;
        }
        if (op == OP_GET) {
            memcpy(s->hdr, "get key:", 8);
            put_key_digits(s->hdr + 8, key);
            memcpy(s->hdr + 8 + KEY_DIGITS, "\r\n", 2);
            s->hdr_len = 8 + KEY_DIGITS + 2;
            c->bufs[nb++] = uv_buf_init(s->hdr, s->hdr_len);
        } else {
            memcpy(s->hdr, w->set_hdr, w->set_hdr_len);
            put_key_digits(s->hdr + w->set_key_at, key);
            s->hdr_len = (uint8_t)w->set_hdr_len;
            c->bufs[nb++] = uv_buf_init(s->hdr, s->hdr_len);
            c->bufs[nb++] = uv_buf_init(w->value, w->o->value_size + 2);
        }
    }
    if (nb == 0) {
        return;
    }
    rv = conn_send(c, c->bufs, nb);
    if (rv != 0) {
        if (w->phase != PH_DONE) {
            w->c.conn_closed++;
        }
        conn_close(c);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    struct worker *w = c->w;

    if (!c->first_done) {
        c->first_done = 1;
        w->connect_pending--;
    }
    if (c->state != CONN_CONNECTING) {
        connect_check(w); /* closed while connecting (shutdown) */
        return;
    }
    if (status < 0) {
        if (w->phase != PH_DONE) {
            w->c.connect_failed++;
        }
        conn_close(c);
        connect_check(w);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        w->c.conn_closed++;
        conn_close(c);
        connect_check(w);
        return;
    }
    c->state = CONN_READY;
    connect_check(w);
    conn_fill(c);
}

static void conn_connect(struct conn *c)
{
    int rv;

    uv_tcp_init(&c->w->loop, &c->tcp);
    c->tcp.data = c;
    c->connect_req.data = c;
    c->write_req.data = c;
    c->state = CONN_CONNECTING;
    rv = uv_tcp_connect(&c->connect_req, &c->tcp,
                        (const struct sockaddr *)&c->server->addr, on_connect);
    if (rv != 0) {
        /* No callback will come: count it here and retry later. */
        if (!c->first_done) {
            c->first_done = 1;
            c->w->connect_pending--;
        }
        c->w->c.connect_failed++;
        c->state = CONN_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
    }
}

/* ------------------------------- worker -------------------------------- */

static void on_phase_timer(uv_timer_t *t)
{
    struct worker *w = t->data;

    if (w->phase == PH_WARMUP) {
        w->warm_incomplete = 1;
    }
    if (w->phase == PH_RUN) {
        w->t_end = uv_hrtime();
    }
    uv_stop(&w->loop);
}

static void on_pace_timer(uv_timer_t *t)
{
    struct worker *w = t->data;
    unsigned i;

    for (i = 0; i < w->n_conns; i++) {
        conn_fill(&w->conns[i]);
    }
}

/* Requests scheduled before now that were never sent. */
static uint64_t paced_backlog(const struct worker *w, uint64_t now)
{
    uint64_t n = 0;
    unsigned i;

    for (i = 0; i < w->n_conns && w->interval_ns != 0; i++) {
        n += pace_backlog(w->conns[i].next_due, w->interval_ns, now);
    }
    return n;
}

/* SIGINT/SIGTERM: this phase ends now, and the ones after it at once. */
static void on_stop_signal(uv_signal_t *s, int signum)
{
    struct worker *w = s->data;

    (void)signum;
    w->stop_asked = 1;
    if (w->phase == PH_DONE) {
        return;
    }
    if (w->phase == PH_WARMUP) {
        w->warm_incomplete = 1;
    }
    if (w->phase == PH_RUN && w->t_end == 0) {
        w->t_end = uv_hrtime();
    }
    uv_timer_stop(&w->phase_timer);
    uv_stop(&w->loop);
}

static void run_phase(struct worker *w, int phase, double seconds)
{
    w->phase = phase;
    uv_timer_start(&w->phase_timer, on_phase_timer,
                   (uint64_t)(seconds * 1000.0 + 0.5), 0);
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    const struct opts *o = w->o;
    double u0, s0, u1, s1;
    unsigned i;

    w->phase = PH_CONNECT;
    w->connect_pending = w->n_conns;
    for (i = 0; i < w->n_conns; i++) {
        conn_connect(&w->conns[i]);
    }
    if (w->connect_pending > 0) {
        run_phase(w, PH_CONNECT, o->connect_timeout);
        uv_run(&w->loop, UV_RUN_DEFAULT);
    }
    if (o->warmup && !w->stop_asked) {
        run_phase(w, PH_WARMUP, o->warmup_seconds);
        for (i = 0; i < w->n_conns; i++) {
            conn_fill(&w->conns[i]);
        }
        warmup_check(w);
        uv_run(&w->loop, UV_RUN_DEFAULT);
    }
    /* Everyone starts measuring together; nothing is outstanding here
     * unless warmup hit its time cap, and those replies count for nothing. */
    uv_barrier_wait(w->barrier);
    w->setup_errors = counts_errors(&w->c) + w->c.not_stored;
    memset(&w->c, 0, sizeof(w->c));
    u0 = thread_cpu(&s0);
    w->t_start = uv_hrtime();
    if (!w->stop_asked) {
        run_phase(w, PH_RUN, o->seconds);
        for (i = 0; i < w->n_conns && w->interval_ns != 0; i++) {
            /* spread the connections' schedules over one interval */
            w->conns[i].next_due =
                w->t_start + w->interval_ns * i / w->n_conns;
        }
        if (w->interval_ns != 0) {
            uv_timer_start(&w->pace_timer, on_pace_timer,
                           PACE_TICK_NS / 1000000, PACE_TICK_NS / 1000000);
        }
        for (i = 0; i < w->n_conns; i++) {
            conn_fill(&w->conns[i]);
        }
        uv_run(&w->loop, UV_RUN_DEFAULT);
    }
    if (w->t_end == 0) {
        w->t_end = uv_hrtime();
    }
    w->backlog = paced_backlog(w, w->t_end);
    u1 = thread_cpu(&s1);
    w->cpu_user = u1 - u0;
    w->cpu_sys = s1 - s0;

    w->phase = PH_DONE;
    uv_timer_stop(&w->phase_timer);
    uv_close((uv_handle_t *)&w->phase_timer, on_handle_closed);
    uv_timer_stop(&w->pace_timer);
    uv_close((uv_handle_t *)&w->pace_timer, on_handle_closed);
    uv_close((uv_handle_t *)&w->sig_int, on_handle_closed);
    uv_close((uv_handle_t *)&w->sig_term, on_handle_closed);
    for (i = 0; i < w->n_conns; i++) {
        struct conn *c = &w->conns[i];

        conn_close(c);
        uv_timer_stop(&c->retry_timer);
        uv_close((uv_handle_t *)&c->retry_timer, on_handle_closed);
    }
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

static int worker_init(struct worker *w,
                       const struct opts *o,
                       unsigned id,
                       uv_barrier_t *barrier)
{
    unsigned total = o->n_servers * o->connections;
    unsigned g;
    unsigned n = 0;
    int rv;

    memset(w, 0, sizeof(*w));
    w->o = o;
    w->id = id;
    w->barrier = barrier;
    w->rng = o->seed * UINT64_C(0x100000001b3) + id;
    hist_init(&w->h_get);
    hist_init(&w->h_set);
    if (o->requests) {
        w->quota =
            o->requests / o->threads + (id < o->requests % o->threads ? 1 : 0);
    }
    w->set_hdr_len = (size_t)snprintf(w->set_hdr, sizeof(w->set_hdr),
                                      "set key:%0*u 0 0 %u\r\n", KEY_DIGITS, 0u,
                                      o->value_size);
    w->set_key_at = 8;

    rv = uv_loop_init(&w->loop);
    if (rv != 0) {
        goto err;
    }
    rv = UV_ENOMEM;
    w->read_buf = malloc(READ_BUF_SIZE);
    if (w->read_buf == NULL) {
        goto err_after_loop;
    }
    w->value = malloc((size_t)o->value_size + 2);
    if (w->value == NULL) {
        goto err_after_read_buf;
    }
    for (g = 0; g < o->value_size; g++) {
        w->value[g] = (char)('a' + g % 26);
    }
    memcpy(w->value + o->value_size, "\r\n", 2);
    for (g = id; g < total; g += o->threads) {
        n++;
    }
    w->conns = calloc(n ? n : 1, sizeof(*w->conns));
    if (w->conns == NULL) {
        goto err_after_value;
    }
    uv_timer_init(&w->loop, &w->phase_timer);
    w->phase_timer.data = w;
    uv_timer_init(&w->loop, &w->pace_timer);
    w->pace_timer.data = w;
    if (o->rate > 0) {
        w->interval_ns = (uint64_t)((double)total * 1e9 / o->rate);
        if (w->interval_ns == 0) {
            w->interval_ns = 1;
        }
    }
    /* started here, before any thread runs: a signal never finds a
     * worker without its watcher (and so never kills the process) */
    uv_signal_init(&w->loop, &w->sig_int);
    uv_signal_init(&w->loop, &w->sig_term);
    w->sig_int.data = w->sig_term.data = w;
    uv_signal_start(&w->sig_int, on_stop_signal, SIGINT);
    uv_signal_start(&w->sig_term, on_stop_signal, SIGTERM);
    uv_unref((uv_handle_t *)&w->sig_int);
    uv_unref((uv_handle_t *)&w->sig_term);
    /* Connection g talks to server g % S; it is the (g / S)-th connection
     * of that server, which fixes its share of the warmup keys. */
    for (g = id; g < total; g += o->threads) {
        struct conn *c = &w->conns[w->n_conns];
        unsigned s = g % o->n_servers;
        unsigned j = g / o->n_servers;

        c->w = w;
        c->server_idx = s;
        c->server = &o->servers[s];
        c->state = CONN_IDLE;
        mcreply_init(&c->parser);
        if (o->spread == SPREAD_MOD) {
            c->warm_next = s + (uint64_t)o->n_servers * j;
            c->warm_stride = (uint64_t)o->n_servers * o->connections;
        } else {
            c->warm_next = g;
            c->warm_stride = total;
        }
        c->slots = calloc(o->pipeline, sizeof(*c->slots));
        c->bufs = calloc(2 * (size_t)o->pipeline, sizeof(*c->bufs));
        w->n_conns++; /* counted before the check: freed on error too */
        if (c->slots == NULL || c->bufs == NULL) {
            goto err_after_conns;
        }
        uv_timer_init(&w->loop, &c->retry_timer);
        c->retry_timer.data = c;
    }
    return 0;

err_after_conns:
    /* Timers are never started on this path; closing them needs a loop
     * run, which worker_free does. */
    return rv;
err_after_value:
    free(w->value);
err_after_read_buf:
    free(w->read_buf);
err_after_loop:
    uv_loop_close(&w->loop);
err:
    return rv;
}

/* Release what worker_init allocated (after worker_main, or after a failed
 * worker_init that got as far as the connections). */
static void worker_free(struct worker *w)
{
    unsigned i;

    if (w->conns == NULL) {
        return;
    }
    if (!uv_is_closing((uv_handle_t *)&w->phase_timer)) {
        uv_close((uv_handle_t *)&w->phase_timer, on_handle_closed);
    }
    if (!uv_is_closing((uv_handle_t *)&w->pace_timer)) {
        uv_close((uv_handle_t *)&w->pace_timer, on_handle_closed);
    }
    if (!uv_is_closing((uv_handle_t *)&w->sig_int)) {
        uv_close((uv_handle_t *)&w->sig_int, on_handle_closed);
        uv_close((uv_handle_t *)&w->sig_term, on_handle_closed);
    }
    for (i = 0; i < w->n_conns; i++) {
        uv_handle_t *t = (uv_handle_t *)&w->conns[i].retry_timer;

        if (t->loop != NULL && !uv_is_closing(t)) {
            uv_close(t, on_handle_closed);
        }
    }
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    for (i = 0; i < w->n_conns; i++) {
        free(w->conns[i].slots);
        free(w->conns[i].bufs);
    }
    free(w->conns);
    free(w->value);
    free(w->read_buf);
}

/* ------------------------------- report -------------------------------- */

static void counts_add(struct counts *d, const struct counts *s)
{
    d->gets += s->gets;
    d->sets += s->sets;
    d->hits += s->hits;
    d->misses += s->misses;
    d->not_stored += s->not_stored;
    d->server_errors += s->server_errors;
    d->client_errors += s->client_errors;
    d->errors += s->errors;
    d->protocol += s->protocol;
    d->key_mismatch += s->key_mismatch;
    d->conn_closed += s->conn_closed;
    d->connect_failed += s->connect_failed;
    d->lost += s->lost;
}

static uint64_t counts_errors(const struct counts *c)
{
    return c->server_errors + c->client_errors + c->errors + c->protocol +
           c->key_mismatch + c->conn_closed + c->connect_failed;
}

static void print_lat_json(const char *name, const struct hist *h, int last)
{
    printf("    \"%s\": {\"count\": %" PRIu64
           ", \"mean\": %.1f, "
           "\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, "
           "\"max\": %.1f}%s\n",
           name, h->count, hist_mean(h) / 1e3,
           (double)hist_percentile(h, 50) / 1e3,
           (double)hist_percentile(h, 90) / 1e3,
           (double)hist_percentile(h, 99) / 1e3,
           (double)hist_percentile(h, 99.9) / 1e3,
           (double)(h->count ? h->max : 0) / 1e3, last ? "" : ",");
}

static void print_lat_text(const char *name, const struct hist *h)
{
    if (h->count == 0) {
        printf("  %-4s %10s\n", name, "-");
        return;
    }
    printf("  %-4s %10.1f %10.1f %10.1f %10.1f %10.1f %10.1f\n", name,
           (double)hist_percentile(h, 50) / 1e3,
           (double)hist_percentile(h, 90) / 1e3,
           (double)hist_percentile(h, 99) / 1e3,
           (double)hist_percentile(h, 99.9) / 1e3, (double)h->max / 1e3,
           hist_mean(h) / 1e3);
}

static void report(const struct opts *o, struct worker *ws)
{
    struct counts c;
    struct hist *all = malloc(sizeof(*all));
    struct hist *get = malloc(sizeof(*get));
    struct hist *set = malloc(sizeof(*set));
    double elapsed = 0;
    double cpu_u = 0, cpu_s = 0;
    double ops_s, hit_ratio;
    uint64_t ops;
    int warm_incomplete = 0;
    uint64_t setup_errors = 0;
    uint64_t backlog = 0;
    unsigned i;

    if (all == NULL || get == NULL || set == NULL) {
        fprintf(stderr, "mcload: out of memory for the report\n");
        goto out;
    }
    memset(&c, 0, sizeof(c));
    hist_init(get);
    hist_init(set);
    for (i = 0; i < o->threads; i++) {
        double e = (double)(ws[i].t_end - ws[i].t_start) / 1e9;

        if (e > elapsed) {
            elapsed = e;
        }
        counts_add(&c, &ws[i].c);
        hist_add(get, &ws[i].h_get);
        hist_add(set, &ws[i].h_set);
        cpu_u += ws[i].cpu_user;
        cpu_s += ws[i].cpu_sys;
        warm_incomplete |= ws[i].warm_incomplete;
        setup_errors += ws[i].setup_errors;
        backlog += ws[i].backlog;
    }
    *all = *get;
    hist_add(all, set);
    ops = c.gets + c.sets;
    ops_s = elapsed > 0 ? (double)ops / elapsed : 0;
    hit_ratio = c.gets ? (double)c.hits / (double)c.gets : 0;

    if (o->json) {
        printf("{\n  \"servers\": [");
        for (i = 0; i < o->n_servers; i++) {
            printf("%s\"%s\"", i ? ", " : "", o->servers[i].name);
        }
        printf(
            "],\n  \"threads\": %u, \"connections\": %u, "
            "\"pipeline\": %u, \"value_size\": %u, \"ratio\": \"%u:%u\", "
            "\"keys\": %u, \"warmup\": %s, \"warmup_complete\": %s, "
            "\"setup_errors\": %" PRIu64 ",\n",
            o->threads, o->connections, o->pipeline, o->value_size,
            o->ratio_get, o->ratio_set, o->keys, o->warmup ? "true" : "false",
            o->warmup && warm_incomplete ? "false" : "true", setup_errors);
        printf("  \"elapsed_s\": %.3f, \"ops\": %" PRIu64
               ", \"ops_per_sec\": %.1f, \"gets\": %" PRIu64
               ", \"sets\": %" PRIu64 ", \"hits\": %" PRIu64
               ", \"misses\": %" PRIu64 ", \"hit_ratio\": %.4f,\n",
               elapsed, ops, ops_s, c.gets, c.sets, c.hits, c.misses,
               hit_ratio);
        printf("  \"errors\": %" PRIu64
               ", \"error_detail\": {"
               "\"server_error\": %" PRIu64 ", \"client_error\": %" PRIu64
               ", \"error\": %" PRIu64 ", \"protocol\": %" PRIu64
               ", \"key_mismatch\": %" PRIu64 ", \"conn_closed\": %" PRIu64
               ", \"connect_failed\": %" PRIu64 ", \"lost\": %" PRIu64
               ", \"not_stored\": %" PRIu64 "},\n",
               counts_errors(&c), c.server_errors, c.client_errors, c.errors,
               c.protocol, c.key_mismatch, c.conn_closed, c.connect_failed,
               c.lost, c.not_stored);
        printf("  \"rate\": %.0f, \"backlog\": %" PRIu64 ",\n", o->rate,
               backlog);
        printf("  \"cpu_user_s\": %.2f, \"cpu_sys_s\": %.2f,\n", cpu_u, cpu_s);
        printf("  \"latency_us\": {\n");
        print_lat_json("all", all, 0);
        print_lat_json("get", get, 0);
        print_lat_json("set", set, 1);
        printf("  }\n}\n");
        goto out;
    }
    printf(
        "mcload: %u server(s) %s%s, %u conn(s)/server x pipeline %u, "
        "%u thread(s)\n",
        o->n_servers, o->servers[0].name, o->n_servers > 1 ? ",..." : "",
        o->connections, o->pipeline, o->threads);
    printf("        value %u B, get:set %u:%u, %u keys%s\n", o->value_size,
           o->ratio_get, o->ratio_set, o->keys,
           !o->warmup        ? ""
           : warm_incomplete ? ", warmup INCOMPLETE (time cap)"
                             : ", warmed up");
    if (setup_errors) {
        printf("setup      %" PRIu64
               " errors (connect, warmup) before the run\n",
               setup_errors);
    }
    printf("elapsed    %.2f s\n", elapsed);
    if (o->rate > 0) {
        printf("rate       %.0f/s scheduled (open loop); backlog %" PRIu64
               " due but never sent\n",
               o->rate, backlog);
    }
    printf("ops/s      %.0f  (%" PRIu64 " ops: %" PRIu64 " gets, %" PRIu64
           " sets)\n",
           ops_s, ops, c.gets, c.sets);
    printf("hit ratio  %.4f  (%" PRIu64 " hits, %" PRIu64 " misses)\n",
           hit_ratio, c.hits, c.misses);
    printf("errors     %" PRIu64 "  (server %" PRIu64 ", client %" PRIu64
           ", error %" PRIu64 ", protocol %" PRIu64 ", key mismatch %" PRIu64
           ", closed %" PRIu64 ", connect failed %" PRIu64 "); lost %" PRIu64
           ", not stored %" PRIu64 "\n",
           counts_errors(&c), c.server_errors, c.client_errors, c.errors,
           c.protocol, c.key_mismatch, c.conn_closed, c.connect_failed, c.lost,
           c.not_stored);
    printf("cpu        %.2f s user, %.2f s sys (%.0f%% of one core)\n", cpu_u,
           cpu_s, elapsed > 0 ? 100.0 * (cpu_u + cpu_s) / elapsed : 0.0);
    printf("latency us %10s %10s %10s %10s %10s %10s\n", "p50", "p90", "p99",
           "p99.9", "max", "mean");
    print_lat_text("all", all);
    print_lat_text("get", get);
    print_lat_text("set", set);
out:
    free(all);
    free(get);
    free(set);
}

/* ------------------------------- options ------------------------------- */

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: mcload [options]\n"
        "Closed-loop (or --rate) memcached text-protocol load: single-key get and set\n"
        "(noreply off), keys \"key:%%08u\" uniform over --keys.\n"
        "  -s, --server HOST:PORT  target; repeat or comma-separate for\n"
        "                          several (default 127.0.0.1:11211)\n"
        "      --spread mod|any    several servers: key k goes to server\n"
        "                          k %% N (mod, default), or every\n"
        "                          connection uses all keys (any: servers\n"
        "                          share data, e.g. routers of one cluster)\n"
        "  -c, --connections C     connections per server (default 16)\n"
        "  -p, --pipeline P        requests outstanding per connection\n"
        "                          (default 8, max %d)\n"
        "  -d, --value-size B      set value size in bytes (default 100)\n"
        "  -r, --ratio G:S         get:set mix (default 9:1)\n"
        "  -k, --keys K            key space (default 100000, max %u)\n"
        "  -t, --seconds S         measured run length (default 10; with\n"
        "                          --requests it is the time cap, default 60)\n"
        "  -n, --requests N        stop after N replies instead\n"
        "  -w, --warmup            set every key once before measuring\n"
        "      --warmup-seconds S  warmup time cap (default 120)\n"
        "      --connect-timeout S (default 5)\n"
        "  -T, --threads N         threads, one uv loop each (default 1)\n"
        "      --seed N            random seed (default 1)\n"
        "  -R, --rate N            open loop: N requests/s in all, latency\n"
        "                          from each request's scheduled time\n"
        "  -j, --json              JSON report on stdout\n"
        "  -h, --help\n"
        "Exit status: 0 after a run with at least one reply, 1 if nothing\n"
        "was answered, 2 on bad options.\n",
        MAX_PIPELINE, MAX_KEYS);
}

static int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min ||
        v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || *end != '\0' || !(v > 0) || v > 86400) {
        return -1;
    }
    *out = v;
    return 0;
}

static int add_server(struct opts *o, const char *spec)
{
    struct addrinfo hints;
    struct addrinfo *res;
    struct server *sv;
    char host[128];
    const char *colon = strrchr(spec, ':');
    const char *h = spec;
    size_t hl;

    if (o->n_servers == MAX_SERVERS || colon == NULL || colon[1] == '\0') {
        return -1;
    }
    hl = (size_t)(colon - spec);
    if (hl >= 2 && spec[0] == '[' && spec[hl - 1] == ']') {
        h = spec + 1; /* [v6]:port */
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof(host)) {
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) {
        return -1;
    }
    sv = &o->servers[o->n_servers++];
    memcpy(&sv->addr, res->ai_addr, res->ai_addrlen);
    snprintf(sv->name, sizeof(sv->name), "%s", spec);
    freeaddrinfo(res);
    return 0;
}

static int parse_servers(struct opts *o, const char *list)
{
    char buf[4096];
    char *save = NULL;
    char *tok;

    if (strlen(list) >= sizeof(buf)) {
        return -1;
    }
    strcpy(buf, list);
    for (tok = strtok_r(buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        if (add_server(o, tok) != 0) {
            fprintf(stderr, "mcload: bad or unresolvable server '%s'\n", tok);
            return -1;
        }
    }
    return 0;
}

static int parse_opts(struct opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},
        {"spread", required_argument, NULL, 'S'},
        {"connections", required_argument, NULL, 'c'},
        {"pipeline", required_argument, NULL, 'p'},
        {"value-size", required_argument, NULL, 'd'},
        {"ratio", required_argument, NULL, 'r'},
        {"keys", required_argument, NULL, 'k'},
        {"seconds", required_argument, NULL, 't'},
        {"requests", required_argument, NULL, 'n'},
        {"warmup", no_argument, NULL, 'w'},
        {"warmup-seconds", required_argument, NULL, 'W'},
        {"connect-timeout", required_argument, NULL, 'C'},
        {"threads", required_argument, NULL, 'T'},
        {"seed", required_argument, NULL, 'e'},
        {"rate", required_argument, NULL, 'R'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint64_t v, g, s;
    char *colon;
    int seconds_set = 0;
    int ch;

    memset(o, 0, sizeof(*o));
    o->connections = 16;
    o->pipeline = 8;
    o->value_size = 100;
    o->ratio_get = 9;
    o->ratio_set = 1;
    o->keys = 100000;
    o->seconds = 10;
    o->warmup_seconds = 120;
    o->connect_timeout = 5;
    o->seed = 1;
    o->threads = 1;
    o->spread = SPREAD_MOD;

    while ((ch = getopt_long(argc, argv, "s:c:p:d:r:k:t:n:wT:R:jh", longopts,
                             NULL)) != -1) {
        switch (ch) {
            case 's':
                if (parse_servers(o, optarg) != 0) {
                    return -1;
                }
                break;
            case 'S':
                if (strcmp(optarg, "mod") == 0) {
                    o->spread = SPREAD_MOD;
                } else if (strcmp(optarg, "any") == 0) {
                    o->spread = SPREAD_ANY;
                } else {
                    goto bad;
                }
                break;
            case 'c':
                if (parse_uint(optarg, 1, 10000, &v) != 0) {
                    goto bad;
                }
                o->connections = (unsigned)v;
                break;
            case 'p':
                if (parse_uint(optarg, 1, MAX_PIPELINE, &v) != 0) {
                    goto bad;
                }
                o->pipeline = (unsigned)v;
                break;
            case 'd':
                /* memcached's own ceiling is 1 MiB by default (-I). */
                if (parse_uint(optarg, 0, 128u << 20, &v) != 0) {
                    goto bad;
                }
                o->value_size = (unsigned)v;
                break;
            case 'r':
                colon = strchr(optarg, ':');
                if (colon == NULL) {
                    goto bad;
                }
                *colon = '\0';
                if (parse_uint(optarg, 0, 1000000, &g) != 0 ||
                    parse_uint(colon + 1, 0, 1000000, &s) != 0 || g + s == 0) {
                    *colon = ':';
                    goto bad;
                }
                *colon = ':';
                o->ratio_get = (unsigned)g;
                o->ratio_set = (unsigned)s;
                break;
            case 'k':
                if (parse_uint(optarg, 1, MAX_KEYS, &v) != 0) {
                    goto bad;
                }
                o->keys = (unsigned)v;
                break;
            case 't':
                if (parse_seconds(optarg, &o->seconds) != 0) {
                    goto bad;
                }
                seconds_set = 1;
                break;
            case 'n':
                if (parse_uint(optarg, 1, UINT64_MAX / 2, &o->requests) != 0) {
                    goto bad;
                }
                break;
            case 'w':
                o->warmup = 1;
                break;
            case 'W':
                if (parse_seconds(optarg, &o->warmup_seconds) != 0) {
                    goto bad;
                }
                break;
            case 'C':
                if (parse_seconds(optarg, &o->connect_timeout) != 0) {
                    goto bad;
                }
                break;
            case 'T':
                if (parse_uint(optarg, 1, 256, &v) != 0) {
                    goto bad;
                }
                o->threads = (unsigned)v;
                break;
            case 'e':
                if (parse_uint(optarg, 0, UINT64_MAX, &o->seed) != 0) {
                    goto bad;
                }
                break;
            case 'R':
                if (parse_uint(optarg, 1, 100000000, &v) != 0) {
                    goto bad;
                }
                o->rate = (double)v;
                break;
            case 'j':
                o->json = 1;
                break;
            case 'h':
                usage(stdout);
                exit(0);
            default:
                usage(stderr);
                return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mcload: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (o->n_servers == 0 && parse_servers(o, "127.0.0.1:11211") != 0) {
        return -1;
    }
    if (o->requests && !seconds_set) {
        o->seconds = 60;
    }
    if (o->spread == SPREAD_MOD && o->keys < o->n_servers) {
        fprintf(stderr, "mcload: --keys must be >= the number of servers\n");
        return -1;
    }
    if (o->threads > o->n_servers * o->connections) {
        o->threads = o->n_servers * o->connections;
    }
    if (o->requests && o->threads > o->requests) {
        o->threads = (unsigned)o->requests; /* every thread gets a quota */
    }
    return 0;

bad:
    fprintf(stderr, "mcload: bad value for option %s: '%s' (see --help)\n",
            argv[optind - 1], optarg);
    return -1;
}

int main(int argc, char **argv)
{
    static struct opts o;
    struct worker *ws;
    uv_barrier_t barrier;
    uint64_t ops = 0;
    unsigned started = 0;
    unsigned i;
    int rv = 1;

    if (parse_opts(&o, argc, argv) != 0) {
        return 2;
    }
    ws = calloc(o.threads, sizeof(*ws));
    if (ws == NULL) {
        fprintf(stderr, "mcload: out of memory\n");
        return 1;
    }
    if (uv_barrier_init(&barrier, o.threads) != 0) {
        fprintf(stderr, "mcload: cannot create barrier\n");
        goto err_after_ws;
    }
    for (i = 0; i < o.threads; i++) {
        if (worker_init(&ws[i], &o, i, &barrier) != 0) {
            fprintf(stderr, "mcload: cannot set up thread %u\n", i);
            worker_free(&ws[i]);
            goto err_after_workers;
        }
        started++;
    }
    /* Thread 0 runs on the main thread: --threads 1 spawns nothing. */
    for (i = 1; i < o.threads; i++) {
        if (uv_thread_create(&ws[i].thread, worker_main, &ws[i]) != 0) {
            /* The barrier would never open: nothing sane left to do. */
            fprintf(stderr, "mcload: cannot start thread %u\n", i);
            exit(1);
        }
    }
    worker_main(&ws[0]);
    for (i = 1; i < o.threads; i++) {
        uv_thread_join(&ws[i].thread);
    }
    report(&o, ws);
    for (i = 0; i < o.threads; i++) {
        ops += ws[i].c.gets + ws[i].c.sets;
    }
    rv = ops > 0 ? 0 : 1;

err_after_workers:
    for (i = 0; i < started; i++) {
        worker_free(&ws[i]);
    }
    uv_barrier_destroy(&barrier);
err_after_ws:
    free(ws);
    return rv;
}
