/*
 * rpc_server: see rpc_server.h.
 *
 * Lifetimes:
 *   struct rpc_server  freed once the listener, the flush idle handle and
 *                      every connection handle are closed (close callbacks).
 *   struct conn        refcounted: 1 for its open handle, 1 per unanswered
 *                      request, 1 per write in flight, 1 while on the dirty
 *                      list. conn->s is valid only while conn->open.
 *   struct rpc_server_req  freed by rpc_server_reply().
 *
 * Deadlines: a request's budget_ms counts from the earliest moment its
 * bytes can have reached the socket, not from when we read them: the node
 * may have been paused (SIGSTOP, a VM freeze) or busy while they waited in
 * the kernel. A connection that is reading and was drained (a read came
 * back short or empty) has every byte that arrived before the previous loop
 * turn's poll read already, so bytes read now arrived after that poll began
 * (s->poll_prev, taken by a prepare handle). Bytes that may have waited
 * longer (a new connection's, a connection not read for a while: stopped
 * by backpressure, or left undrained by libuv's per-turn read limit) date
 * from conn->backlog_since, and a frame read in pieces from its first.
 */
#include "rpc/rpc_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/tcp_dead_peer.h"
#include "proto/rpc_frame.h"

#define READ_BUF_SIZE (64 * 1024)
#define LISTEN_BACKLOG 511

struct conn;

struct rpc_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_idle_t flush_idle; /* runs while some connection has replies queued */
    uv_prepare_t before_poll;
    uint64_t poll_last; /* clock_mono_ms() before this loop turn's poll */
    uint64_t poll_prev; /* ... and before the previous turn's */
    rpc_request_cb cb;
    void *data;
    struct rpc_server_config cfg;
    int port;
    struct conn *conns; /* open connections, doubly linked */
    struct conn *dirty; /* connections with queued replies (hold a ref) */
    unsigned n_conns;
    unsigned handles; /* handles not yet closed */
    bool closing;
    void (*close_cb)(void *data);
    void *close_data;
    char rbuf[READ_BUF_SIZE]; /* shared: reads are serialised per loop */
};

struct conn {
    uv_tcp_t tcp;
    struct rpc_server *s; /* valid while open */
    struct conn *prev, *next;
    struct conn *dirty_next;
    bool dirty;
    bool open;
    bool reading;
    bool backlog;           /* bytes may wait unread since backlog_since */
    uint64_t backlog_since;
    bool partial;           /* the decoder holds part of a frame ... */
    uint64_t partial_since; /* ... whose first bytes date from this */
    unsigned refs;
    unsigned inflight; /* unanswered requests */
    size_t inflight_bytes; /* their frames' (decompressed) sizes */
    size_t unsent;     /* bytes in out + in writes in flight */
    struct rpc_frame_decoder dec;
    struct buf out; /* encoded replies not yet handed to uv_write */
    char peer[64];
};

struct rpc_server_req {
    struct conn *conn;
    Ringmq__RpcRequest *msg;
    uint64_t id;
    uint64_t deadline; /* clock_mono_ms(), 0: none */
    size_t bytes;      /* counted in conn->inflight_bytes */
};

struct wreq {
    uv_write_t w;
    struct conn *conn;
    struct buf data;
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);
static void conn_close(struct conn *c);

static void server_handle_closed(struct rpc_server *s)
{
    void (*cb)(void *) = s->close_cb;
    void *data = s->close_data;

    if (--s->handles > 0) {
        return;
    }
    free(s);
    if (cb) {
        cb(data);
    }
}

static void conn_unref(struct conn *c)
{
    if (--c->refs > 0) {
        return;
    }
    rpc_frame_decoder_close(&c->dec);
    buf_free(&c->out);
    free(c);
}

/* From now on bytes may wait in @c's socket without being read. */
static void conn_mark_backlog(struct conn *c)
{
    if (!c->backlog) {
        c->backlog = true;
        c->backlog_since = c->s->poll_prev;
    }
}

static void conn_update_reading(struct conn *c)
{
    bool want;
    int rv;

    if (!c->open) {
        return;
    }
    want = c->inflight < c->s->cfg.max_inflight &&
           c->inflight_bytes < c->s->cfg.max_inflight_bytes &&
           c->unsent < c->s->cfg.max_unsent;
    if (want && !c->reading) {
        rv = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        if (rv != 0) {
            log_info("rpc: connection from %s: read: %s", c->peer,
                     uv_strerror(rv));
            conn_close(c);
            return;
        }
        c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
        conn_mark_backlog(c);
    }
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct rpc_server *s = c->s;

    c->s = NULL;
    conn_unref(c);
    server_handle_closed(s);
}

/* Close @c (idempotent). Queued replies are dropped. */
static void conn_close(struct conn *c)
{
    struct rpc_server *s = c->s;

    if (!c->open) {
        return;
    }
    c->open = false;
    c->reading = false;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    s->n_conns--;
    buf_free(&c->out);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_write(uv_write_t *w, int status)
{
    struct wreq *wr = (struct wreq *)w;
    struct conn *c = wr->conn;

    c->unsent -= wr->data.len;
    buf_free(&wr->data);
    free(wr);
    if (status < 0 && c->open) {
        log_info("rpc: closing connection from %s: write: %s", c->peer,
                 uv_strerror(status));
        conn_close(c);
    }
    conn_update_reading(c);
    conn_unref(c);
}

static void conn_flush(struct conn *c)
{
    struct wreq *wr;
    uv_buf_t b;
    int rv;

    if (!c->open || c->out.len == 0) {
        return;
    }
    wr = xmalloc(sizeof(*wr));
    wr->conn = c;
    wr->data = c->out;
    buf_init(&c->out);
    b = uv_buf_init(wr->data.data, (unsigned)wr->data.len);
    rv = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rv != 0) {
        log_info("rpc: closing connection from %s: write: %s", c->peer,
                 uv_strerror(rv));
        c->unsent -= wr->data.len;
        buf_free(&wr->data);
        free(wr);
        conn_close(c);
        return;
    }
    c->refs++; /* dropped by on_write */
}

static void on_flush(uv_idle_t *idle)
{
    struct rpc_server *s = idle->data;
    struct conn *c;

    uv_idle_stop(idle);
    while ((c = s->dirty) != NULL) {
        s->dirty = c->dirty_next;
        c->dirty_next = NULL;
        c->dirty = false;
        conn_flush(c);
        conn_unref(c);
    }
}

static void conn_mark_dirty(struct conn *c)
{
    struct rpc_server *s = c->s;

    if (c->dirty) {
        return;
    }
    c->dirty = true;
    c->refs++;
    c->dirty_next = s->dirty;
    s->dirty = c;
    uv_idle_start(&s->flush_idle, on_flush);
}

void rpc_server_reply(struct rpc_server_req *req,
                      const Ringmq__RpcResponse *resp)
{
    struct conn *c = req->conn;
    Ringmq__RpcResponse r = *resp;
    size_t before;
    int rv;

    if (c->open) {
        r.id = req->id;
        before = c->out.len;
        rv = rpc_frame_encode_response(&c->out, &r, c->s->cfg.compress_min,
                                       c->s->cfg.max_frame);
        if (rv != 0) {
            log_warn("rpc: reply to request %llu from %s: %s",
                     (unsigned long long)req->id, c->peer,
                     rpc_frame_strerror(rv));
            ringmq__rpc_response__init(&r);
            r.id = req->id;
            r.code = rpc_code(OUTCOME_BAD_REQUEST);
            r.error = "reply exceeds the rpc frame limit";
            rv = rpc_frame_encode_response(&c->out, &r, 0, 0);
        }
        if (rv == 0) {
            c->unsent += c->out.len - before;
            conn_mark_dirty(c);
        }
    }
    c->inflight--;
    c->inflight_bytes -= req->bytes;
    conn_update_reading(c);
    ringmq__rpc_request__free_unpacked(req->msg, NULL);
    free(req);
    conn_unref(c);
}

bool rpc_server_req_connected(const struct rpc_server_req *req)
{
    return req->conn->open;
}

uint64_t rpc_server_req_deadline(const struct rpc_server_req *req)
{
    return req->deadline;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct conn *c = h->data;

    (void)suggested;
    if (!c->open) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    *b = uv_buf_init(c->s->rbuf, sizeof(c->s->rbuf));
}

static void conn_bad_input(struct conn *c, int rv)
{
    log_warn("rpc: closing connection from %s: %s", c->peer,
             rpc_frame_strerror(rv));
    conn_close(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = stream->data;
    struct rpc_server_req *req;
    Ringmq__RpcRequest *msg;
    struct rpc_frame frame;
    const char *p = b->base;
    uint64_t since;
    size_t left;
    size_t used;
    int rv;

    if (nread < 0) {
        if (nread != UV_EOF) {
            log_info("rpc: connection from %s: read: %s", c->peer,
                     uv_strerror((int)nread));
        }
        conn_close(c);
        return;
    }
    if (!c->open) {
        return;
    }
    since = c->backlog ? c->backlog_since : c->s->poll_prev;
    /* a full buffer may leave bytes behind; anything less drained it */
    c->backlog = (size_t)nread == b->len;
    c->backlog_since = since;
    left = (size_t)nread;
    while (left > 0 && c->open) {
        rv = rpc_frame_decoder_feed(&c->dec, p, left, &used, &frame);
        p += used;
        left -= used;
        if (rv == 0) { /* all of it is the start of a frame */
            if (!c->partial) {
                c->partial = true;
                c->partial_since = since;
            }
            break;
        }
        if (rv < 0) {
            conn_bad_input(c, rv);
            return;
        }
        rv = rpc_frame_unpack_request(&frame, &msg);
        if (rv != 0) {
            conn_bad_input(c, rv);
            return;
        }
        req = xmalloc(sizeof(*req));
        req->conn = c;
        req->msg = msg;
        req->id = msg->id;
        req->bytes = frame.len;
        req->deadline =
            msg->budget_ms == 0
                ? 0
                : (c->partial ? c->partial_since : since) + msg->budget_ms;
        c->partial = false;
        c->refs++;
        c->inflight++;
        c->inflight_bytes += req->bytes;
        c->s->cb(c->s->data, req, msg);
    }
    conn_update_reading(c);
}

static void format_peer(uv_tcp_t *tcp, char *out, size_t len)
{
    struct sockaddr_storage ss;
    int n = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &n) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, ip, sizeof(ip));
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, ip, sizeof(ip));
            port = ntohs(a->sin6_port);
        }
    }
    snprintf(out, len, "%s:%d", ip, port);
}

static void on_reject_closed(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct rpc_server *s = listener->data;
    struct conn *c;
    uv_tcp_t *t;

    if (status < 0) {
        log_warn("rpc: accept: %s", uv_strerror(status));
        return;
    }
    if (s->closing) {
        return;
    }
    if (s->n_conns >= s->cfg.max_connections) {
        t = xmalloc(sizeof(*t));
        uv_tcp_init(s->loop, t);
        if (uv_accept(listener, (uv_stream_t *)t) == 0) {
            log_warn("rpc: too many connections (%u), refusing one",
                     s->n_conns);
        }
        uv_close((uv_handle_t *)t, on_reject_closed);
        return;
    }
    c = xcalloc(1, sizeof(*c));
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->s = s;
    c->refs = 1;
    c->open = true;
    rpc_frame_decoder_init(&c->dec, s->cfg.max_frame);
    buf_init(&c->out);
    s->handles++;
    s->n_conns++;
    c->next = s->conns;
    if (s->conns) {
        s->conns->prev = c;
    }
    s->conns = c;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    /* a reply to a router that went away is not retransmitted for minutes
     * (the router reconnects and asks again) */
    tcp_dead_peer(&c->tcp, TCP_DEAD_PEER_MS_DEFAULT);
    format_peer(&c->tcp, c->peer, sizeof(c->peer));
    log_debug("rpc: connection from %s", c->peer);
    /* it (and its first requests) may have waited in the listen queue */
    conn_mark_backlog(c);
    conn_update_reading(c);
}

/* socket + bind + listen done by hand so that every failure is synchronous
 * and leaves no libuv handle behind. Returns the fd or -errno. */
static int open_listener(const char *host,
                         int port,
                         char *errmsg,
                         size_t errlen)
{
    struct sockaddr_storage ss;
    int one = 1;
    int fd;
    int rv;

    memset(&ss, 0, sizeof(ss));
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        snprintf(errmsg, errlen, "rpc: bad listen address '%s'", host);
        return -EINVAL;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rv = -errno;
        snprintf(errmsg, errlen, "rpc: socket: %s", strerror(errno));
        return rv;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss,
             ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                     : sizeof(struct sockaddr_in6)) != 0 ||
        listen(fd, LISTEN_BACKLOG) != 0) {
        rv = -errno;
        snprintf(errmsg, errlen, "rpc: listen on %s:%d: %s", host, port,
                 strerror(errno));
        close(fd);
        return rv;
    }
    return fd;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t n = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &n) != 0) {
        return -1;
    }
    if (ss.ss_family == AF_INET) {
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void on_before_poll(uv_prepare_t *h)
{
    struct rpc_server *s = h->data;

    s->poll_prev = s->poll_last;
    s->poll_last = clock_mono_ms();
}

static void on_failed_listener_closed(uv_handle_t *h)
{
    free(h->data);
}

struct rpc_server *rpc_server_new(uv_loop_t *loop,
                                  const struct rpc_server_config *cfg,
                                  rpc_request_cb cb,
                                  void *data,
                                  char *errmsg,
                                  size_t errlen)
{
    struct rpc_server *s;
    int fd;
    int rv;

    fd = open_listener(cfg->host ? cfg->host : "0.0.0.0", cfg->port, errmsg,
                       errlen);
    if (fd < 0) {
        goto err;
    }
    s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->cb = cb;
    s->data = data;
    s->cfg = *cfg;
    s->cfg.host = NULL; /* not kept */
    if (s->cfg.max_connections == 0) {
        s->cfg.max_connections = 1024;
    }
    if (s->cfg.max_inflight == 0) {
        s->cfg.max_inflight = RPC_SERVER_MAX_INFLIGHT_DEFAULT;
    }
    if (s->cfg.max_inflight_bytes == 0) {
        s->cfg.max_inflight_bytes = RPC_SERVER_MAX_INFLIGHT_BYTES_DEFAULT;
    }
    if (s->cfg.max_unsent == 0) {
        s->cfg.max_unsent = RPC_SERVER_MAX_UNSENT_DEFAULT;
    }
    s->port = bound_port(fd);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    rv = uv_tcp_open(&s->listener, fd);
    if (rv != 0) {
        close(fd); /* not adopted by the handle */
    } else {
        rv = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG,
                       on_connection);
    }
    if (rv != 0) {
        snprintf(errmsg, errlen, "rpc: listen: %s", uv_strerror(rv));
        goto err_after_listener;
    }
    uv_idle_init(loop, &s->flush_idle);
    s->flush_idle.data = s;
    s->poll_last = s->poll_prev = clock_mono_ms();
    uv_prepare_init(loop, &s->before_poll);
    s->before_poll.data = s;
    uv_prepare_start(&s->before_poll, on_before_poll);
    uv_unref((uv_handle_t *)&s->before_poll); /* keeps no loop alive */
    s->handles = 3;
    log_info("rpc: listening on port %d", s->port);
    return s;

err_after_listener:
    /* Rare (uv_tcp_open/uv_listen on a bound, listening fd): the handle is
     * closed asynchronously and the struct freed with it (and the fd). */
    uv_close((uv_handle_t *)&s->listener, on_failed_listener_closed);
err:
    return NULL;
}

int rpc_server_port(const struct rpc_server *s)
{
    return s->port;
}

unsigned rpc_server_connections(const struct rpc_server *s)
{
    return s->n_conns;
}

static void on_server_handle_closed(uv_handle_t *h)
{
    server_handle_closed(h->data);
}

void rpc_server_close(struct rpc_server *s, void (*cb)(void *data), void *data)
{
    struct conn *c;

    s->closing = true;
    s->close_cb = cb;
    s->close_data = data;
    while ((c = s->dirty) != NULL) {
        s->dirty = c->dirty_next;
        c->dirty = false;
        conn_unref(c);
    }
    while ((c = s->conns) != NULL) {
        conn_close(c);
    }
    uv_idle_stop(&s->flush_idle);
    uv_close((uv_handle_t *)&s->flush_idle, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->before_poll, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
}
