/*
 * http_admin: see http_admin.h.
 *
 * A connection is split in two layers so the request path can be fuzzed
 * without sockets:
 *
 *   engine (conn_feed, parser callbacks)   bytes in  -> responses into c->out
 *   driver (conn_pump, uv callbacks)       c->out -> uv_write, reads, close
 *
 * Connection states:
 *
 *            message complete and
 *            >= OUT_HIGH bytes waiting            output drained
 *   READ ---------------------------------> BLOCKED -------------> READ
 *     |                                        |
 *     | not keep-alive / parse error / EOF     |
 *     v                                        v
 *   DRAIN  (no more parsing, input discarded; write what is queued)
 *     |
 *     v
 *   LINGER (write side shut down; discard input until EOF or LINGER_MS)
 *     |
 *     v
 *   CLOSED (uv_close called; freed in the close callback)
 *
 * LINGER exists because closing a socket with unread input makes the kernel
 * send RST, and an RST can destroy the response (say the 431) before the
 * client reads it. Abusive clients (idle timeout, twice max_connections)
 * are closed without it.
 *
 * In BLOCKED the parser is paused (http_parser_pause) right after a
 * message, the unparsed rest of the last read waits in c->in and reading is
 * stopped, so a client that pipelines without reading costs a bounded
 * amount of memory.
 */
#include "common/http_admin.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h> /* isnan, isinf: macros, no libm */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <http_parser.h>

#include "common/log.h"

/* Stop parsing a connection's requests while this much output waits. */
#define OUT_HIGH (64 * 1024)
#define READ_SIZE 8192
#define LISTEN_BACKLOG 128
/* Longest wait for a client's EOF after our last response. */
#define LINGER_MS 2000

enum conn_state {
    CONN_READ,
    CONN_BLOCKED,
    CONN_DRAIN,
    CONN_LINGER,
    CONN_CLOSED
};

struct route {
    char *path;
    http_admin_request_cb cb;
    void *data;
};

struct http_admin {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t sweep; /* enforces idle_timeout_ms on every connection */
    struct http_admin_config cfg; /* host not kept */
    int port;
    struct route routes[HTTP_ADMIN_MAX_ROUTES];
    unsigned nroutes;
    struct conn *conns; /* open (not CLOSED) connections */
    unsigned nconns;
    unsigned handles; /* uv handles not yet closed */
    bool closing;
    http_admin_close_cb close_cb;
    void *close_data;
};

struct conn {
    struct http_admin *server;
    struct conn *prev, *next;
    uv_tcp_t tcp;
    http_parser parser;
    enum conn_state state;
    bool eof;      /* the client shut down its side */
    bool reading;  /* uv_read_start in effect */
    bool writing;  /* uv_write in flight from wbuf */
    bool no_date;  /* http_admin__feed: deterministic output */
    uint64_t deadline; /* uv_now() by which the next request must be in */

    /* per request, reset by on_message_begin */
    struct buf url;
    size_t header_bytes;
    size_t body_bytes;
    int err_status; /* set by a callback that fails the parse */
    bool host_seen;
    bool in_value;  /* last header callback was a value */
    char field[8];  /* start of the current header name, to spot Host */
    size_t field_len;

    struct buf in;   /* unparsed input while BLOCKED */
    struct buf out;  /* responses not yet handed to uv_write */
    struct buf wbuf; /* bytes of the write in flight */
    uv_write_t wreq;
    uv_shutdown_t sreq;
    char rbuf[READ_SIZE];
};

/* ---- responses --------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 300 ? "OK" : status < 400 ? "Redirect"
                  : status < 500 ? "Client Error" : "Server Error";
    }
}

/* The whole response into @out. @keep_alive says what the connection will
 * do; @http10_keep_alive asks for the explicit header an HTTP/1.0 client
 * needs to know the connection persists. */
static void render(struct buf *out, int status, const char *content_type,
                   const struct buf *body, bool head, bool keep_alive,
                   bool http10_keep_alive, bool date)
{
    if (status < 200 || status > 599 || status == 204 || status == 304) {
        static const char msg[] = "bad status from handler\n";
        static const struct buf fallback = {(char *)msg, sizeof(msg) - 1, 0};
        log_warn("http_admin: handler returned status %d", status);
        status = 500;
        content_type = HTTP_ADMIN_TEXT_CONTENT_TYPE;
        body = &fallback;
    }
    buf_printf(out, "HTTP/1.1 %d %s\r\n", status, reason(status));
    if (date) {
        char d[64];
        struct tm tm;
        time_t now = time(NULL);
        gmtime_r(&now, &tm);
        strftime(d, sizeof(d), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        buf_printf(out, "Date: %s\r\n", d);
    }
    buf_printf(out,
               "Content-Type: %s\r\n"
               "Content-Length: %zu\r\n"
               "Cache-Control: no-store\r\n",
               content_type ? content_type : HTTP_ADMIN_TEXT_CONTENT_TYPE,
               body->len);
    if (status == 405) {
        buf_append_str(out, "Allow: GET, HEAD\r\n");
    }
    if (!keep_alive) {
        buf_append_str(out, "Connection: close\r\n");
    } else if (http10_keep_alive) {
        buf_append_str(out, "Connection: keep-alive\r\n");
    }
    buf_append_str(out, "\r\n");
    if (!head && body->len > 0) {
        buf_append(out, body->data, body->len);
    }
}

/* A response the server makes up itself: reason phrase as body. */
static void render_simple(struct conn *c, int status, bool head,
                          bool keep_alive, bool http10_keep_alive)
{
    struct buf body;

    buf_init(&body);
    buf_printf(&body, "%s\n", reason(status));
    render(&c->out, status, HTTP_ADMIN_TEXT_CONTENT_TYPE, &body, head,
           keep_alive, http10_keep_alive, !c->no_date);
    buf_free(&body);
}

/* ---- engine: parser callbacks ------------------------------------------ */

static struct conn *conn_of(http_parser *p)
{
    return p->data;
}

/* Fail the parse with @status; http_parser turns the non-zero return into
 * an HPE_CB_* error and stops. */
static int fail(struct conn *c, int status)
{
    c->err_status = status;
    return -1;
}

static int on_message_begin(http_parser *p)
{
    struct conn *c = conn_of(p);

    buf_reset(&c->url);
    c->header_bytes = 0;
    c->body_bytes = 0;
    c->host_seen = false;
    c->in_value = true; /* the first name callback starts a new name */
    c->field_len = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct conn *c = conn_of(p);

    if (c->url.len + len > c->server->cfg.max_url_bytes) {
        return fail(c, 414);
    }
    buf_append(&c->url, at, len);
    return 0;
}

/* Header names and values may come in pieces (one per read). Only whether
 * a Host header exists matters to us, so the name is kept just long enough
 * to compare it with "host". */
static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = conn_of(p);
    size_t n;

    if (c->in_value) {
        c->in_value = false;
        c->field_len = 0;
        c->header_bytes += 4; /* ": " and CRLF of the line */
    }
    c->header_bytes += len;
    if (c->header_bytes > c->server->cfg.max_header_bytes) {
        return fail(c, 431);
    }
    if (c->field_len < sizeof(c->field)) {
        n = sizeof(c->field) - c->field_len;
        memcpy(c->field + c->field_len, at, len < n ? len : n);
    }
    c->field_len += len; /* may exceed sizeof(field): then it is not Host */
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = conn_of(p);

    (void)at;
    if (!c->in_value) {
        c->in_value = true;
        if (c->field_len == 4 && strncasecmp(c->field, "host", 4) == 0) {
            c->host_seen = true;
        }
    }
    c->header_bytes += len;
    if (c->header_bytes > c->server->cfg.max_header_bytes) {
        return fail(c, 431);
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct conn *c = conn_of(p);

    if (p->http_major != 1) {
        return fail(c, 505);
    }
    /* RFC 9112 3.2: a 1.1 request without Host gets 400. */
    if (p->http_major == 1 && p->http_minor >= 1 && !c->host_seen) {
        return fail(c, 400);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = conn_of(p);

    (void)at;
    /* Nothing here takes a body; accept a small one (some clients send
     * bodies with GET) and refuse to spend time on a big one. */
    c->body_bytes += len;
    if (c->body_bytes > c->server->cfg.max_header_bytes) {
        return fail(c, 413);
    }
    return 0;
}

static const struct route *find_route(const struct http_admin *a,
                                      const char *path)
{
    unsigned i;

    for (i = 0; i < a->nroutes; i++) {
        if (strcmp(a->routes[i].path, path) == 0) {
            return &a->routes[i];
        }
    }
    return NULL;
}

/* Answer the request just parsed: 405, 400 for a target http_parser_parse_url
 * rejects, 404, or the route's handler. */
static void respond(struct conn *c, bool keep_alive)
{
    http_parser *p = &c->parser;
    bool head = p->method == HTTP_HEAD;
    bool http10_keep_alive = keep_alive && p->http_major == 1 &&
                             p->http_minor == 0;
    struct http_parser_url u;
    const struct route *r;
    struct http_admin_response resp;
    char *path = NULL;
    const char *query = "";

    if (p->method != HTTP_GET && !head) {
        render_simple(c, 405, false, keep_alive, http10_keep_alive);
        return;
    }
    http_parser_url_init(&u);
    buf_append(&c->url, "", 1); /* NUL for the strings cut out below */
    if (http_parser_parse_url(c->url.data, c->url.len - 1, 0, &u) != 0) {
        render_simple(c, 400, head, keep_alive, http10_keep_alive);
        return;
    }
    /* Cut path and query out in place: each is followed by '?', '#' or the
     * NUL appended above, which become its terminator. */
    if (u.field_set & (1 << UF_QUERY)) {
        char *q = c->url.data + u.field_data[UF_QUERY].off;
        q[u.field_data[UF_QUERY].len] = '\0';
        query = q;
    }
    if (u.field_set & (1 << UF_PATH)) {
        path = c->url.data + u.field_data[UF_PATH].off;
        path[u.field_data[UF_PATH].len] = '\0';
    }
    /* Absolute-form ("GET http://h?x") may lack a path: that means "/". */
    r = find_route(c->server, path ? path : "/");
    if (r == NULL) {
        render_simple(c, 404, head, keep_alive, http10_keep_alive);
        return;
    }
    resp.status = 200;
    resp.content_type = HTTP_ADMIN_TEXT_CONTENT_TYPE;
    buf_init(&resp.body);
    r->cb(r->data, path ? path : "/", query, &resp);
    render(&c->out, resp.status, resp.content_type, &resp.body, head,
           keep_alive, http10_keep_alive, !c->no_date);
    buf_free(&resp.body);
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = conn_of(p);
    /* An upgrade (CONNECT, "Upgrade:" + "Connection: upgrade") ends HTTP on
     * this connection as far as the parser goes; we do not switch
     * protocols, so answer normally and close. */
    bool keep_alive = http_should_keep_alive(p) && !p->upgrade;

    respond(c, keep_alive);
    c->deadline = uv_now(c->server->loop) + c->server->cfg.idle_timeout_ms;
    if (!keep_alive) {
        c->state = CONN_DRAIN;
        http_parser_pause(p, 1);
    } else if (c->out.len >= OUT_HIGH) {
        c->state = CONN_BLOCKED;
        http_parser_pause(p, 1);
    }
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- engine: feeding --------------------------------------------------- */

static void conn_init(struct conn *c, struct http_admin *a)
{
    memset(c, 0, sizeof(*c));
    c->server = a;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->state = CONN_READ;
    c->deadline = uv_now(a->loop) + a->cfg.idle_timeout_ms;
    buf_init(&c->url);
    buf_init(&c->in);
    buf_init(&c->out);
    buf_init(&c->wbuf);
}

static void conn_release(struct conn *c)
{
    buf_free(&c->url);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->wbuf);
}

/* Parse @len bytes of @data (or, with @data NULL, the stashed c->in) in
 * state READ. Afterwards the state is READ (all consumed), BLOCKED (the
 * rest is in c->in) or DRAIN (the rest is dropped). */
static void conn_feed(struct conn *c, const char *data, size_t len)
{
    bool stashed = data == NULL;
    enum http_errno err;
    size_t n;

    if (stashed) {
        data = c->in.data;
        len = c->in.len;
    }
    if (len == 0) {
        return;
    }
    n = http_parser_execute(&c->parser, &settings, data, len);
    err = HTTP_PARSER_ERRNO(&c->parser);
    if (err == HPE_OK && c->parser.upgrade) {
        c->state = CONN_DRAIN; /* already answered in on_message_complete */
    } else if (err != HPE_OK && err != HPE_PAUSED) {
        int status = c->err_status ? c->err_status
                     : err == HPE_HEADER_OVERFLOW ? 431 /* http_parser's
                                                         * 80 KiB bound */
                                                  : 400;
        log_debug("http_admin: bad request (%s): %d",
                  http_errno_name(err), status);
        render_simple(c, status, false, false, false);
        c->state = CONN_DRAIN;
    }
    if (c->state == CONN_BLOCKED) {
        if (stashed) {
            buf_consume(&c->in, n);
        } else {
            buf_append(&c->in, data + n, len - n);
        }
    } else {
        buf_reset(&c->in);
    }
}

int http_admin__feed(struct http_admin *a, const char *data, size_t len,
                     size_t chunk, struct buf *out)
{
    struct conn *c = xmalloc(sizeof(*c));
    size_t off = 0;
    int closed;

    conn_init(c, a);
    c->no_date = true;
    if (chunk == 0) {
        chunk = len;
    }
    while (c->state != CONN_DRAIN) {
        if (c->state == CONN_BLOCKED) {
            /* The "client" reads everything at once. */
            buf_append(out, c->out.data, c->out.len);
            buf_reset(&c->out);
            c->state = CONN_READ;
            http_parser_pause(&c->parser, 0);
            conn_feed(c, NULL, 0);
            continue;
        }
        if (off == len) {
            break;
        }
        {
            size_t n = len - off < chunk ? len - off : chunk;
            conn_feed(c, data + off, n);
            off += n;
        }
    }
    buf_append(out, c->out.data, c->out.len);
    closed = c->state == CONN_DRAIN;
    conn_release(c);
    free(c);
    return closed;
}

/* ---- driver: libuv ----------------------------------------------------- */

static void conn_pump(struct conn *c);
static void conn_close(struct conn *c);

static void server_maybe_free(struct http_admin *a)
{
    http_admin_close_cb cb;
    void *data;
    unsigned i;

    if (!a->closing || a->handles > 0) {
        return;
    }
    cb = a->close_cb;
    data = a->close_data;
    for (i = 0; i < a->nroutes; i++) {
        free(a->routes[i].path);
    }
    free(a);
    if (cb) {
        cb(data);
    }
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct http_admin *a = c->server;

    conn_release(c);
    free(c);
    a->handles--;
    server_maybe_free(a);
}

static void conn_close(struct conn *c)
{
    struct http_admin *a = c->server;

    if (c->state == CONN_CLOSED) {
        return;
    }
    c->state = CONN_CLOSED;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        a->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
    a->nconns--;
    /* A write in flight completes with UV_ECANCELED before on_conn_closed,
     * so wbuf stays valid until then. */
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_write(uv_write_t *w, int status)
{
    struct conn *c = w->data;

    c->writing = false;
    buf_reset(&c->wbuf);
    if (c->state == CONN_CLOSED) {
        return;
    }
    if (status < 0) {
        log_debug("http_admin: write failed: %s", uv_strerror(status));
        conn_close(c);
        return;
    }
    /* The client is reading: that is progress, not idleness. */
    c->deadline = uv_now(c->server->loop) + c->server->cfg.idle_timeout_ms;
    conn_pump(c);
}

/* Hand c->out to uv_write if no write is in flight. Returns false when the
 * connection was closed. */
static bool conn_write(struct conn *c)
{
    struct buf t;
    uv_buf_t b;
    int rc;

    if (c->writing || c->out.len == 0) {
        return true;
    }
    t = c->wbuf; /* empty, maybe with an allocation to reuse */
    c->wbuf = c->out;
    c->out = t;
    b = uv_buf_init(c->wbuf.data, (unsigned)c->wbuf.len);
    c->wreq.data = c;
    rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc != 0) {
        log_debug("http_admin: write failed: %s", uv_strerror(rc));
        buf_reset(&c->wbuf);
        conn_close(c);
        return false;
    }
    c->writing = true;
    return true;
}

static void on_read_alloc(uv_handle_t *h, size_t hint, uv_buf_t *out)
{
    struct conn *c = h->data;

    (void)hint;
    /* One read at a time per stream, and it is parsed before the next
     * alloc, so a fixed per-connection buffer is enough. */
    *out = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = stream->data;

    if (nread == 0) {
        return; /* EAGAIN */
    }
    if (nread < 0) {
        if (nread != UV_EOF) {
            log_debug("http_admin: read failed: %s",
                      uv_strerror((int)nread));
            conn_close(c);
            return;
        }
        /* Half close: still answer what was asked. */
        c->eof = true;
        conn_pump(c);
        return;
    }
    if (c->state == CONN_READ) {
        conn_feed(c, b->base, (size_t)nread);
    }
    /* Otherwise DRAIN or LINGER: the input is dropped. */
    conn_pump(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;

    if (status < 0 && c->state != CONN_CLOSED) {
        conn_close(c);
    }
}

/* Move the connection along after any event: start writes, resume parsing
 * once output drained, linger or close once DRAIN has written everything,
 * and read in every state but BLOCKED. */
static void conn_pump(struct conn *c)
{
    struct http_admin *a = c->server;
    bool want_read;
    int rc;

    if (c->state == CONN_CLOSED) {
        return;
    }
    for (;;) {
        if (!conn_write(c)) {
            return;
        }
        if (c->state == CONN_BLOCKED && c->out.len < OUT_HIGH) {
            c->state = CONN_READ;
            http_parser_pause(&c->parser, 0);
            conn_feed(c, NULL, 0);
            continue;
        }
        break;
    }
    if (c->state == CONN_READ && c->eof) {
        c->state = CONN_DRAIN;
    }
    if (c->state == CONN_DRAIN && !c->writing && c->out.len == 0) {
        if (c->eof) {
            conn_close(c);
            return;
        }
        c->sreq.data = c;
        rc = uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown);
        if (rc != 0) {
            conn_close(c);
            return;
        }
        c->state = CONN_LINGER;
        c->deadline = uv_now(a->loop) + (a->cfg.idle_timeout_ms < LINGER_MS
                                             ? a->cfg.idle_timeout_ms
                                             : LINGER_MS);
    }
    if (c->state == CONN_LINGER && c->eof) {
        conn_close(c);
        return;
    }
    want_read = c->state != CONN_BLOCKED && !c->eof;
    if (want_read && !c->reading) {
        rc = uv_read_start((uv_stream_t *)&c->tcp, on_read_alloc, on_read);
        if (rc != 0) {
            log_debug("http_admin: read start: %s", uv_strerror(rc));
            conn_close(c);
            return;
        }
        c->reading = true;
    } else if (!want_read && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void on_sweep(uv_timer_t *t)
{
    struct http_admin *a = t->data;
    uint64_t now = uv_now(a->loop);
    struct conn *c = a->conns;

    while (c) {
        struct conn *next = c->next;
        if (now >= c->deadline) {
            log_debug("http_admin: closing idle or slow connection");
            conn_close(c);
        }
        c = next;
    }
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct http_admin *a = listener->data;
    struct conn *c;

    if (status < 0) {
        log_warn("http_admin: accept failed: %s", uv_strerror(status));
        return;
    }
    c = xmalloc(sizeof(*c));
    conn_init(c, a);
    if (uv_tcp_init(a->loop, &c->tcp) != 0) {
        conn_release(c);
        free(c);
        return;
    }
    c->tcp.data = c;
    a->handles++;
    c->next = a->conns;
    if (a->conns) {
        a->conns->prev = c;
    }
    a->conns = c;
    a->nconns++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (a->nconns > a->cfg.max_connections) {
        /* Rejected connections still linger (up to LINGER_MS), so they hold
         * a slot a while; past twice the limit, stop being polite. */
        if (a->nconns > 2 * a->cfg.max_connections) {
            conn_close(c);
            return;
        }
        log_warn("http_admin: too many connections (%u)", a->nconns - 1);
        render_simple(c, 503, false, false, false);
        c->state = CONN_DRAIN;
    }
    conn_pump(c);
}

static void on_server_handle_closed(uv_handle_t *h)
{
    struct http_admin *a = h->data;

    a->handles--;
    server_maybe_free(a);
}

struct http_admin *http_admin_new(uv_loop_t *loop,
                                  const struct http_admin_config *cfg,
                                  char *errmsg, size_t errlen)
{
    struct http_admin *a;
    struct sockaddr_storage addr;
    struct sockaddr_storage bound;
    int namelen = sizeof(bound);
    const char *host = cfg->host ? cfg->host : "127.0.0.1";
    uint64_t sweep_ms;
    int rc;

    if (cfg->port < 0 || cfg->port > 65535) {
        snprintf(errmsg, errlen, "http_admin: bad port %d", cfg->port);
        return NULL;
    }
    if (uv_ip4_addr(host, cfg->port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, cfg->port, (struct sockaddr_in6 *)&addr) != 0) {
        snprintf(errmsg, errlen, "http_admin: bad address '%s'", host);
        return NULL;
    }

    a = xcalloc(1, sizeof(*a));
    a->loop = loop;
    a->cfg = *cfg;
    a->cfg.host = NULL;
    if (a->cfg.max_connections == 0) {
        a->cfg.max_connections = HTTP_ADMIN_MAX_CONNECTIONS_DEFAULT;
    }
    if (a->cfg.idle_timeout_ms == 0) {
        a->cfg.idle_timeout_ms = HTTP_ADMIN_IDLE_TIMEOUT_MS_DEFAULT;
    }
    if (a->cfg.max_url_bytes == 0) {
        a->cfg.max_url_bytes = HTTP_ADMIN_MAX_URL_DEFAULT;
    }
    if (a->cfg.max_header_bytes == 0) {
        a->cfg.max_header_bytes = HTTP_ADMIN_MAX_HEADER_DEFAULT;
    }

    rc = uv_timer_init(loop, &a->sweep);
    if (rc != 0) {
        snprintf(errmsg, errlen, "http_admin: timer init: %s",
                 uv_strerror(rc));
        goto err_after_alloc;
    }
    a->sweep.data = a;
    a->handles = 1;
    sweep_ms = a->cfg.idle_timeout_ms / 4 ? a->cfg.idle_timeout_ms / 4 : 1;
    uv_timer_start(&a->sweep, on_sweep, sweep_ms, sweep_ms);

    rc = uv_tcp_init(loop, &a->listener);
    if (rc != 0) {
        snprintf(errmsg, errlen, "http_admin: tcp init: %s", uv_strerror(rc));
        goto err_after_timer;
    }
    a->listener.data = a;
    a->handles = 2;
    rc = uv_tcp_bind(&a->listener, (struct sockaddr *)&addr, 0);
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *)&a->listener, LISTEN_BACKLOG,
                       on_connection);
    }
    if (rc != 0) {
        snprintf(errmsg, errlen, "http_admin: listen on %s:%d: %s", host,
                 cfg->port, uv_strerror(rc));
        goto err_after_listener;
    }
    rc = uv_tcp_getsockname(&a->listener, (struct sockaddr *)&bound,
                            &namelen);
    if (rc != 0) {
        snprintf(errmsg, errlen, "http_admin: getsockname: %s",
                 uv_strerror(rc));
        goto err_after_listener;
    }
    a->port = bound.ss_family == AF_INET6
                  ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                  : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    return a;

    /* Handles known to the loop are closed asynchronously: the server is
     * freed by the last close callback, when the loop next runs. */
err_after_listener:
    a->closing = true;
    uv_close((uv_handle_t *)&a->listener, on_server_handle_closed);
    uv_close((uv_handle_t *)&a->sweep, on_server_handle_closed);
    return NULL;
err_after_timer:
    a->closing = true;
    uv_close((uv_handle_t *)&a->sweep, on_server_handle_closed);
    return NULL;
err_after_alloc:
    free(a);
    return NULL;
}

int http_admin_port(const struct http_admin *a)
{
    return a->port;
}

int http_admin_route(struct http_admin *a, const char *path,
                     http_admin_request_cb cb, void *data)
{
    struct route *r;

    if (path == NULL || path[0] != '/' || cb == NULL) {
        return -EINVAL;
    }
    if (find_route(a, path) != NULL) {
        return -EEXIST;
    }
    if (a->nroutes == HTTP_ADMIN_MAX_ROUTES) {
        return -ENOSPC;
    }
    r = &a->routes[a->nroutes++];
    r->path = xstrdup(path);
    r->cb = cb;
    r->data = data;
    return 0;
}

void http_admin_close(struct http_admin *a, http_admin_close_cb cb,
                      void *data)
{
    a->closing = true;
    a->close_cb = cb;
    a->close_data = data;
    while (a->conns) {
        conn_close(a->conns);
    }
    uv_close((uv_handle_t *)&a->listener, on_server_handle_closed);
    uv_close((uv_handle_t *)&a->sweep, on_server_handle_closed);
}

/* ---- Prometheus text format -------------------------------------------- */

static bool valid_name(const char *s, bool colon)
{
    const char *p;

    if (s == NULL || *s == '\0' || (*s >= '0' && *s <= '9')) {
        return false;
    }
    for (p = s; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '_' || (colon && ch == ':'))) {
            return false;
        }
    }
    return true;
}

/* Escape for HELP text (\\ and \n) or, with @quote, label values (also \"). */
static void append_escaped(struct buf *out, const char *s, bool quote)
{
    const char *p;

    for (p = s; *p; p++) {
        if (*p == '\\') {
            buf_append(out, "\\\\", 2);
        } else if (*p == '\n') {
            buf_append(out, "\\n", 2);
        } else if (quote && *p == '"') {
            buf_append(out, "\\\"", 2);
        } else {
            buf_append(out, p, 1);
        }
    }
}

static void append_value(struct buf *out, double v)
{
    if (isnan(v)) {
        buf_append_str(out, "NaN");
    } else if (isinf(v)) {
        buf_append_str(out, v > 0 ? "+Inf" : "-Inf");
    } else if (v > -9007199254740992.0 && v < 9007199254740992.0 &&
               v == (double)(int64_t)v) {
        /* Below 2^53 every integer is exact: print it without exponent. */
        buf_printf(out, "%" PRId64, (int64_t)v);
    } else {
        /* Shortest form that reads back as the same double. */
        char s[40];
        int prec;
        for (prec = 15; prec <= 17; prec++) {
            snprintf(s, sizeof(s), "%.*g", prec, v);
            if (strtod(s, NULL) == v) {
                break;
            }
        }
        buf_append_str(out, s);
    }
}

static bool family_seen(struct http_admin_metrics *m, const char *name)
{
    size_t off = 0;

    while (off < m->names.len) {
        const char *n = m->names.data + off;
        size_t l = strlen(n);
        if (strcmp(n, name) == 0) {
            return true;
        }
        off += l + 1;
    }
    buf_append(&m->names, name, strlen(name) + 1);
    return false;
}

void http_admin_metrics_init(struct http_admin_metrics *m, struct buf *out)
{
    m->out = out;
    buf_init(&m->names);
}

void http_admin_metrics_free(struct http_admin_metrics *m)
{
    buf_free(&m->names);
    m->out = NULL;
}

int http_admin_metric(struct http_admin_metrics *m, const char *name,
                      const char *type, const char *help,
                      const char *const *labels, double value)
{
    struct buf *out = m->out;
    const char *const *l;

    if (!valid_name(name, true) || type == NULL ||
        (strcmp(type, "counter") != 0 && strcmp(type, "gauge") != 0 &&
         strcmp(type, "untyped") != 0)) {
        return -EINVAL;
    }
    for (l = labels; l && l[0]; l += 2) {
        if (!valid_name(l[0], false) || strncmp(l[0], "__", 2) == 0 ||
            l[1] == NULL) {
            return -EINVAL;
        }
    }

    if (!family_seen(m, name)) {
        buf_printf(out, "# HELP %s ", name);
        append_escaped(out, help ? help : "", false);
        buf_printf(out, "\n# TYPE %s %s\n", name, type);
    }
    buf_append_str(out, name);
    if (labels && labels[0]) {
        buf_append_str(out, "{");
        for (l = labels; l[0]; l += 2) {
            buf_printf(out, "%s%s=\"", l == labels ? "" : ",", l[0]);
            append_escaped(out, l[1], true);
            buf_append_str(out, "\"");
        }
        buf_append_str(out, "}");
    }
    buf_append_str(out, " ");
    append_value(out, value);
    buf_append_str(out, "\n");
    return 0;
}

bool http_admin_is_liveness(const char *query)
{
    return query != NULL && strcmp(query, "live") == 0;
}
