/*
 * rpc_client: see rpc_client.h.
 *
 * Connection states:
 *
 *            call (via pump)           resolved
 *   IDLE ------------------> RESOLVING ---------> CONNECTING --ok--> CONNECTED
 *    ^  \________________numeric address_______/^     |                  |
 *    |                                              fail/timeout     lost (EOF,
 *    |   backoff timer, no calls                      v               error)
 *    +------------------------------------------- BACKOFF               |
 *    |             backoff timer, calls queued -> (start again)        |
 *    +------------------------------------------------------------------+
 *
 * Every accepted call sits in a hash table by id and in a list sorted by
 * deadline; one timer is armed at the head's deadline. A call's request
 * waits packed, in the list of unsent calls (call order), until the
 * connection is up; flush() frames each with the time its call has left
 * (RpcRequest.budget_ms) and hands them to the socket together. A call that
 * completes before that (timeout, failure, close) takes its request out of
 * the list: nothing its caller was told failed is sent afterwards. The idle
 * handle ("pump") flushes once per loop turn and starts connections, so
 * that nothing completes a call synchronously inside rpc_client_call().
 *
 * Lifetimes: a struct cconn lives until its tcp handle's close callback; the
 * client is freed when its four handles, every closing cconn and every
 * pending getaddrinfo request are done (c->handles counts them).
 */
#include "rpc/rpc_client.h"

#include <assert.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/tcp_dead_peer.h"
#include "proto/pb_arena.h"
#include "proto/rpc_frame.h"

#define READ_BUF_SIZE (64 * 1024)
#define TABLE_MIN 64
/* RpcRequest.budget_ms on the wire: a one-byte tag and a varint of at most
 * five bytes. */
#define BUDGET_FIELD_MAX 6

enum cstate { CS_IDLE, CS_RESOLVING, CS_CONNECTING, CS_CONNECTED, CS_BACKOFF };

struct call {
    uint64_t id;
    uint64_t deadline; /* uv_now() ms */
    rpc_client_call_cb cb;
    void *data;
    Ringmq__RpcResponse **steal; /* sync calls: take ownership of resp */
    uint8_t *packed; /* the request without its budget, until sent */
    size_t packed_len;
    struct call *hnext;
    struct call *prev, *next;
    struct call *unext, *uprev; /* in the unsent list while packed */
};

struct cconn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    struct rpc_client *c;
    struct rpc_frame_decoder dec;
};

struct gai {
    uv_getaddrinfo_t req;
    struct rpc_client *c;
};

struct wreq {
    uv_write_t w;
    struct cconn *cc;
    struct buf data;
};

struct rpc_client {
    uv_loop_t *loop;
    struct rpc_client_config cfg;
    char address[300];
    char host[256];
    char port[8];
    enum cstate state;
    struct cconn *conn;    /* current connection (attempt), or NULL */
    struct gai *gai;       /* current name lookup, or NULL */
    uv_timer_t conn_timer; /* connect timeout / backoff */
    uv_timer_t call_timer; /* earliest call deadline */
    uv_check_t expire;     /* fails the calls past it, after the reads */
    uv_idle_t pump;
    uint64_t call_timer_due; /* 0: not armed */
    unsigned backoff_ms;
    struct call *unsent_head, *unsent_tail; /* requests not yet written */
    struct call **table;
    size_t table_size; /* power of two */
    size_t n_calls;
    struct call *head, *tail;
    uint64_t next_id;
    unsigned handles;
    bool closing;
    void (*close_cb)(void *data);
    void *close_data;
    char rbuf[READ_BUF_SIZE];
    /* Responses handed to callbacks (borrowed until they return) are
     * unpacked here: no malloc per field, nor per copy of a value. */
    struct pb_arena resp_arena;
};

static void start_connect(struct rpc_client *c);

/* ---- call bookkeeping -------------------------------------------------- */

static void table_insert(struct rpc_client *c, struct call *call)
{
    size_t i;

    if (c->n_calls >= c->table_size) {
        size_t n = c->table_size * 2;
        struct call **t = xcalloc(n, sizeof(*t));
        struct call *p, *next;
        for (i = 0; i < c->table_size; i++) {
            for (p = c->table[i]; p; p = next) {
                next = p->hnext;
                p->hnext = t[p->id & (n - 1)];
                t[p->id & (n - 1)] = p;
            }
        }
        free(c->table);
        c->table = t;
        c->table_size = n;
    }
    i = call->id & (c->table_size - 1);
    call->hnext = c->table[i];
    c->table[i] = call;
    c->n_calls++;
}

static void unsent_append(struct rpc_client *c, struct call *call)
{
    call->unext = NULL;
    call->uprev = c->unsent_tail;
    if (c->unsent_tail) {
        c->unsent_tail->unext = call;
    } else {
        c->unsent_head = call;
    }
    c->unsent_tail = call;
}

/* Takes @call's request out of the unsent list (if there) and frees it. */
static void unsent_drop(struct rpc_client *c, struct call *call)
{
    if (call->packed == NULL) {
        return;
    }
    if (call->uprev) {
        call->uprev->unext = call->unext;
    } else {
        c->unsent_head = call->unext;
    }
    if (call->unext) {
        call->unext->uprev = call->uprev;
    } else {
        c->unsent_tail = call->uprev;
    }
    call->unext = call->uprev = NULL;
    free(call->packed);
    call->packed = NULL;
}

/* Removes and returns the call with @id from the table and the lists. */
static struct call *call_take(struct rpc_client *c, uint64_t id)
{
    struct call **pp = &c->table[id & (c->table_size - 1)];
    struct call *call;

    for (; *pp; pp = &(*pp)->hnext) {
        if ((*pp)->id == id) {
            break;
        }
    }
    call = *pp;
    if (call == NULL) {
        return NULL;
    }
    *pp = call->hnext;
    c->n_calls--;
    if (call->prev) {
        call->prev->next = call->next;
    } else {
        c->head = call->next;
    }
    if (call->next) {
        call->next->prev = call->prev;
    } else {
        c->tail = call->prev;
    }
    unsent_drop(c, call);
    return call;
}

static void on_call_timer(uv_timer_t *t);
static void on_expire(uv_check_t *h);
static void on_pump(uv_idle_t *idle);

static void arm_call_timer(struct rpc_client *c)
{
    uint64_t now = uv_now(c->loop);
    uint64_t due;

    if (c->head == NULL) {
        uv_timer_stop(&c->call_timer);
        c->call_timer_due = 0;
        return;
    }
    due = c->head->deadline;
    if (c->call_timer_due != 0 && c->call_timer_due <= due) {
        return; /* fires earlier anyway and re-arms then */
    }
    c->call_timer_due = due;
    uv_timer_start(&c->call_timer, on_call_timer, due > now ? due - now : 0, 0);
}

/* Inserts into the deadline list, scanning from the tail: with one timeout
 * value for every call this is O(1). */
static void list_insert(struct rpc_client *c, struct call *call)
{
    struct call *p = c->tail;

    while (p && p->deadline > call->deadline) {
        p = p->prev;
    }
    call->prev = p;
    call->next = p ? p->next : c->head;
    if (call->next) {
        call->next->prev = call;
    } else {
        c->tail = call;
    }
    if (p) {
        p->next = call;
    } else {
        c->head = call;
    }
}

/* @resp: the sync caller's to own (call->steal), else borrowed for the
 * callback and released by our caller after. */
static void call_complete(struct call *call,
                          int status,
                          Ringmq__RpcResponse *resp)
{
    if (call->steal) {
        *call->steal = resp; /* ownership to the sync caller */
    }
    call->cb(call->data, status, resp);
    free(call);
}

/* Detaches every call first, so callbacks see a consistent, empty client. */
static void fail_all(struct rpc_client *c, int status)
{
    struct call *list = c->head;
    struct call *next;

    if (list == NULL) {
        return;
    }
    memset(c->table, 0, c->table_size * sizeof(*c->table));
    c->n_calls = 0;
    c->head = c->tail = NULL;
    uv_timer_stop(&c->call_timer);
    c->call_timer_due = 0;
    for (next = list; next; next = next->next) {
        unsent_drop(c, next);
    }
    assert(c->unsent_head == NULL);
    for (; list; list = next) {
        next = list->next;
        call_complete(list, status, NULL);
    }
}

/* A call's deadline passed: fail it once this loop turn has read what the
 * sockets hold. libuv runs timers before it polls, so after the loop was
 * held up (a burst of work, a descheduled process) a reply that came in
 * the meantime would otherwise lose to the timeout it beat (and the node's
 * definite answer become an unknown outcome). The pump keeps this turn's
 * poll from blocking; the check handle runs after it. */
static void on_call_timer(uv_timer_t *t)
{
    struct rpc_client *c = t->data;

    c->call_timer_due = 0;
    uv_idle_start(&c->pump, on_pump);
    uv_check_start(&c->expire, on_expire);
}

static void on_expire(uv_check_t *h)
{
    struct rpc_client *c = h->data;
    uint64_t now = uv_now(c->loop);
    struct call *expired = NULL;
    struct call **tailp = &expired;
    struct call *call;
    struct call *next;

    uv_check_stop(h);
    while (c->head && c->head->deadline <= now) {
        call = call_take(c, c->head->id);
        call->next = NULL;
        *tailp = call;
        tailp = &call->next;
    }
    arm_call_timer(c);
    for (call = expired; call; call = next) {
        next = call->next;
        call_complete(call, UV_ETIMEDOUT, NULL);
    }
}

/* ---- connection -------------------------------------------------------- */

static void client_handle_done(struct rpc_client *c)
{
    void (*cb)(void *) = c->close_cb;
    void *data = c->close_data;

    if (--c->handles > 0) {
        return;
    }
    free(c->table);
    pb_arena_close(&c->resp_arena);
    free(c);
    if (cb) {
        cb(data);
    }
}

static void on_cconn_closed(uv_handle_t *h)
{
    struct cconn *cc = h->data;
    struct rpc_client *c = cc->c;

    rpc_frame_decoder_close(&cc->dec);
    free(cc);
    client_handle_done(c);
}

static void on_conn_timer(uv_timer_t *t);

/*
 * Drop the current connection (attempt) and fail every call with @status.
 * @backoff: the attempt failed, so wait before the next one; otherwise an
 * established connection was lost and the next call reconnects at once.
 */
static void conn_fail(struct rpc_client *c, int status, bool backoff)
{
    if (c->conn) {
        uv_close((uv_handle_t *)&c->conn->tcp, on_cconn_closed);
        c->conn = NULL;
    }
    if (c->gai) {
        uv_cancel((uv_req_t *)&c->gai->req); /* its cb still runs */
        c->gai = NULL;
    }
    uv_timer_stop(&c->conn_timer);
    if (backoff && !c->closing) {
        c->state = CS_BACKOFF;
        uv_timer_start(&c->conn_timer, on_conn_timer, c->backoff_ms, 0);
        c->backoff_ms *= 2;
        if (c->backoff_ms > c->cfg.backoff_max_ms) {
            c->backoff_ms = c->cfg.backoff_max_ms;
        }
    } else {
        c->state = CS_IDLE;
    }
    /* Calls made by these callbacks see the new state (and are queued for
     * the next attempt). */
    fail_all(c, status);
}

static void on_conn_timer(uv_timer_t *t)
{
    struct rpc_client *c = t->data;

    switch (c->state) {
        case CS_BACKOFF:
            c->state = CS_IDLE;
            if (c->n_calls > 0) {
                start_connect(c);
            }
            break;
        case CS_RESOLVING:
        case CS_CONNECTING:
            log_info("rpc: connect to %s: timed out", c->address);
            conn_fail(c, UV_ETIMEDOUT, true);
            break;
        default:
            break;
    }
}

static void on_write(uv_write_t *w, int status)
{
    struct wreq *wr = (struct wreq *)w;
    struct cconn *cc = wr->cc;
    struct rpc_client *c = cc->c;

    buf_free(&wr->data);
    free(wr);
    if (status < 0 && c->conn == cc) {
        log_info("rpc: %s: write: %s", c->address, uv_strerror(status));
        conn_fail(c, status, false);
    }
}

/* Appends @call's request as a frame carrying the time it has left. */
static void frame_request(struct rpc_client *c,
                          struct call *call,
                          uint64_t now,
                          struct buf *out)
{
    Ringmq__RpcRequest budget = RINGMQ__RPC_REQUEST__INIT;
    uint8_t field[BUDGET_FIELD_MAX];
    uint64_t left = call->deadline - now;
    uint64_t margin = c->cfg.budget_margin_ms;
    size_t n;
    int rv;

    assert(call->deadline > now);
    left -= margin < left / 2 ? margin : left / 2;
    budget.budget_ms = left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
    assert(ringmq__rpc_request__get_packed_size(&budget) <= sizeof(field));
    n = ringmq__rpc_request__pack(&budget, field);
    rv = rpc_frame_encode_packed(out, call->packed, call->packed_len, field,
                                 n, c->cfg.compress_min, c->cfg.max_frame);
    assert(rv == 0); /* its size was checked by call_start() */
    (void)rv;
}

static void flush(struct rpc_client *c)
{
    uint64_t now = uv_now(c->loop);
    struct call *call;
    struct call *next;
    struct wreq *wr;
    uv_buf_t b;
    int rv;

    if (c->state != CS_CONNECTED || c->unsent_head == NULL) {
        return;
    }
    wr = xmalloc(sizeof(*wr));
    wr->cc = c->conn;
    buf_init(&wr->data);
    for (call = c->unsent_head; call; call = next) {
        next = call->unext;
        /* out of time: its timer fails it this loop turn, unsent */
        if (call->deadline > now) {
            frame_request(c, call, now, &wr->data);
            unsent_drop(c, call);
        }
    }
    if (wr->data.len == 0) {
        buf_free(&wr->data);
        free(wr);
        return;
    }
    b = uv_buf_init(wr->data.data, (unsigned)wr->data.len);
    rv = uv_write(&wr->w, (uv_stream_t *)&c->conn->tcp, &b, 1, on_write);
    if (rv != 0) {
        buf_free(&wr->data);
        free(wr);
        log_info("rpc: %s: write: %s", c->address, uv_strerror(rv));
        conn_fail(c, rv, false);
    }
}

/* Runs once per loop turn while something is to be done. */
static void on_pump(uv_idle_t *idle)
{
    struct rpc_client *c = idle->data;

    uv_idle_stop(idle);
    if (c->closing) {
        return;
    }
    if (c->state == CS_IDLE && c->n_calls > 0) {
        start_connect(c);
    } else if (c->state == CS_CONNECTED) {
        flush(c);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct cconn *cc = h->data;

    (void)suggested;
    *b = uv_buf_init(cc->c->rbuf, sizeof(cc->c->rbuf));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct cconn *cc = stream->data;
    struct rpc_client *c = cc->c;
    Ringmq__RpcResponse *resp;
    struct rpc_frame frame;
    struct call *call;
    const char *p = b->base;
    size_t left;
    size_t used;
    int rv;

    if (c->conn != cc) {
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF) {
            log_info("rpc: %s: read: %s", c->address, uv_strerror((int)nread));
        }
        conn_fail(c, nread == UV_EOF ? UV_ECONNRESET : (int)nread, false);
        return;
    }
    left = (size_t)nread;
    while (left > 0 && c->conn == cc) {
        rv = rpc_frame_decoder_feed(&cc->dec, p, left, &used, &frame);
        p += used;
        left -= used;
        if (rv == 0) {
            break;
        }
        if (rv == 1) {
            rv = rpc_frame_unpack_response(
                &frame, pb_arena_allocator(&c->resp_arena), &resp);
        }
        if (rv < 0) {
            pb_arena_reset(&c->resp_arena);
            log_warn("rpc: %s: closing connection: %s", c->address,
                     rpc_frame_strerror(rv));
            conn_fail(c, UV_EPROTO, false);
            return;
        }
        call = call_take(c, resp->id);
        if (call != NULL && call->steal != NULL) {
            /* a sync caller keeps its response: one of its own */
            pb_arena_reset(&c->resp_arena);
            if (rpc_frame_unpack_response(&frame, NULL, &resp) != 0) {
                resp = NULL; /* malloc failed: it unpacked just now */
            }
            call_complete(call, resp != NULL ? 0 : UV_ENOMEM, resp);
            continue;
        }
        if (call != NULL) {
            call_complete(call, 0, resp);
        } /* else timed out meanwhile */
        pb_arena_reset(&c->resp_arena);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    struct cconn *cc = req->data;
    struct rpc_client *c = cc->c;
    int rv;

    if (c->conn != cc) {
        return; /* abandoned attempt (closing, timeout) */
    }
    if (status < 0) {
        log_info("rpc: connect to %s: %s", c->address, uv_strerror(status));
        conn_fail(c, status, true);
        return;
    }
    rv = uv_read_start((uv_stream_t *)&cc->tcp, on_alloc, on_read);
    if (rv != 0) {
        conn_fail(c, rv, true);
        return;
    }
    uv_timer_stop(&c->conn_timer);
    uv_tcp_nodelay(&cc->tcp, 1);
    /* a long poll in flight must not wait for TCP's retransmit backoff
     * after a partition: fail the connection, the caller retries */
    tcp_dead_peer(&cc->tcp, TCP_DEAD_PEER_MS_DEFAULT);
    c->state = CS_CONNECTED;
    c->backoff_ms = c->cfg.backoff_min_ms;
    log_debug("rpc: connected to %s", c->address);
    flush(c);
}

static void connect_addr(struct rpc_client *c, const struct sockaddr *addr)
{
    struct cconn *cc = xcalloc(1, sizeof(*cc));
    int rv;

    cc->c = c;
    rpc_frame_decoder_init(&cc->dec, c->cfg.max_frame);
    uv_tcp_init(c->loop, &cc->tcp);
    cc->tcp.data = cc;
    cc->connect.data = cc;
    c->handles++;
    c->conn = cc;
    c->state = CS_CONNECTING;
    rv = uv_tcp_connect(&cc->connect, &cc->tcp, addr, on_connect);
    if (rv != 0) {
        log_info("rpc: connect to %s: %s", c->address, uv_strerror(rv));
        conn_fail(c, rv, true);
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct gai *g = (struct gai *)req;
    struct rpc_client *c = g->c;

    if (c->gai == g) {
        c->gai = NULL;
        if (status < 0 || res == NULL) {
            log_info("rpc: resolve %s: %s", c->address,
                     uv_strerror(status < 0 ? status : UV_EAI_NONAME));
            conn_fail(c, status < 0 ? status : UV_EAI_NONAME, true);
        } else {
            connect_addr(c, res->ai_addr);
        }
    }
    uv_freeaddrinfo(res);
    free(g);
    client_handle_done(c);
}

/* From IDLE: resolve (unless numeric) and connect; the connect timeout
 * covers both. Failures go through conn_fail(). */
static void start_connect(struct rpc_client *c)
{
    struct sockaddr_storage ss;
    struct addrinfo hints;
    int port = atoi(c->port);
    struct gai *g;
    int rv;

    uv_timer_start(&c->conn_timer, on_conn_timer, c->cfg.connect_timeout_ms, 0);
    if (uv_ip4_addr(c->host, port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(c->host, port, (struct sockaddr_in6 *)&ss) == 0) {
        connect_addr(c, (struct sockaddr *)&ss);
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    g = xcalloc(1, sizeof(*g));
    g->c = c;
    c->state = CS_RESOLVING;
    rv =
        uv_getaddrinfo(c->loop, &g->req, on_resolved, c->host, c->port, &hints);
    if (rv != 0) {
        free(g);
        log_info("rpc: resolve %s: %s", c->address, uv_strerror(rv));
        conn_fail(c, rv, true);
        return;
    }
    c->handles++;
    c->gai = g;
}

/* ---- public ------------------------------------------------------------ */

static int parse_address(const char *addr,
                         char *host,
                         size_t hostlen,
                         char *port,
                         size_t portlen)
{
    const char *colon;
    const char *h = addr;
    size_t hl;
    long p = RPC_PORT_DEFAULT;
    char *end;

    if (addr == NULL || *addr == '\0') {
        return -1;
    }
    if (*addr == '[') {
        const char *rb = strchr(addr, ']');
        if (rb == NULL) {
            return -1;
        }
        h = addr + 1;
        hl = (size_t)(rb - h);
        colon = rb[1] == ':' ? rb + 1 : NULL;
        if (rb[1] != '\0' && colon == NULL) {
            return -1;
        }
    } else {
        colon = strrchr(addr, ':');
        if (colon && strchr(addr, ':') != colon) {
            colon = NULL; /* bare IPv6 literal */
        }
        hl = colon ? (size_t)(colon - addr) : strlen(addr);
    }
    if (colon) {
        p = strtol(colon + 1, &end, 10);
        if (*end != '\0' || end == colon + 1 || p < 1 || p > 65535) {
            return -1;
        }
    }
    if (hl == 0 || hl >= hostlen) {
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, portlen, "%ld", p);
    return 0;
}

struct rpc_client *rpc_client_new(uv_loop_t *loop,
                                  const struct rpc_client_config *cfg,
                                  char *errmsg,
                                  size_t errlen)
{
    struct rpc_client *c = xcalloc(1, sizeof(*c));

    if (parse_address(cfg->address, c->host, sizeof(c->host), c->port,
                      sizeof(c->port)) != 0) {
        snprintf(errmsg, errlen, "rpc: bad node address '%s'",
                 cfg->address ? cfg->address : "");
        goto err;
    }
    c->loop = loop;
    c->cfg = *cfg;
    c->cfg.address = NULL; /* not kept */
    if (c->cfg.call_timeout_ms == 0) {
        c->cfg.call_timeout_ms = 5000;
    }
    if (c->cfg.connect_timeout_ms == 0) {
        c->cfg.connect_timeout_ms = 3000;
    }
    if (c->cfg.backoff_min_ms == 0) {
        c->cfg.backoff_min_ms = 50;
    }
    if (c->cfg.backoff_max_ms == 0) {
        c->cfg.backoff_max_ms = 2000;
    }
    if (c->cfg.backoff_max_ms < c->cfg.backoff_min_ms) {
        c->cfg.backoff_max_ms = c->cfg.backoff_min_ms;
    }
    c->backoff_ms = c->cfg.backoff_min_ms;
    snprintf(c->address, sizeof(c->address),
             strchr(c->host, ':') ? "[%s]:%s" : "%s:%s", c->host, c->port);
    c->state = CS_IDLE;
    c->next_id = 1;
    pb_arena_init(&c->resp_arena);
    c->table_size = TABLE_MIN;
    c->table = xcalloc(c->table_size, sizeof(*c->table));
    uv_timer_init(loop, &c->conn_timer);
    uv_timer_init(loop, &c->call_timer);
    uv_check_init(loop, &c->expire);
    uv_idle_init(loop, &c->pump);
    c->conn_timer.data = c;
    c->call_timer.data = c;
    c->expire.data = c;
    c->pump.data = c;
    c->handles = 4;
    return c;

err:
    free(c);
    return NULL;
}

const char *rpc_client_address(const struct rpc_client *c)
{
    return c->address;
}

size_t rpc_client_pending(const struct rpc_client *c)
{
    return c->n_calls;
}

static int call_start(struct rpc_client *c,
                      const Ringmq__RpcRequest *req,
                      unsigned timeout_ms,
                      rpc_client_call_cb cb,
                      void *data,
                      Ringmq__RpcResponse **steal,
                      uint64_t *id_out)
{
    size_t max_frame =
        c->cfg.max_frame ? c->cfg.max_frame : RPC_FRAME_MAX_DEFAULT;
    Ringmq__RpcRequest r;
    struct call *call;
    size_t len;

    if (c->closing) {
        return UV_ECANCELED;
    }
    r = *req;
    r.id = c->next_id;
    r.budget_ms = 0; /* flush() appends the time left when it is sent */
    len = ringmq__rpc_request__get_packed_size(&r);
    /* room for the flags byte and the budget; compression is never needed
     * to fit: the node bounds the decompressed payload by its limit too */
    if (len >= max_frame || max_frame - len < 1 + BUDGET_FIELD_MAX) {
        return UV_E2BIG;
    }
    c->next_id++;
    call = xcalloc(1, sizeof(*call));
    call->id = r.id;
    call->packed = xmalloc(len > 0 ? len : 1);
    call->packed_len = ringmq__rpc_request__pack(&r, call->packed);
    assert(call->packed_len == len);
    unsent_append(c, call);
    call->deadline =
        uv_now(c->loop) + (timeout_ms ? timeout_ms : c->cfg.call_timeout_ms);
    call->cb = cb;
    call->data = data;
    call->steal = steal;
    table_insert(c, call);
    list_insert(c, call);
    arm_call_timer(c);
    if (c->state == CS_IDLE || c->state == CS_CONNECTED) {
        uv_idle_start(&c->pump, on_pump);
    }
    if (id_out) {
        *id_out = call->id;
    }
    return 0;
}

int rpc_client_call(struct rpc_client *c,
                    const Ringmq__RpcRequest *req,
                    unsigned timeout_ms,
                    rpc_client_call_cb cb,
                    void *data,
                    uint64_t *id_out)
{
    return call_start(c, req, timeout_ms, cb, data, NULL, id_out);
}

struct sync_ctx {
    bool done;
    int status;
};

static void on_sync_done(void *data,
                         int status,
                         const Ringmq__RpcResponse *resp)
{
    struct sync_ctx *ctx = data;

    (void)resp; /* already stored through call->steal */
    ctx->done = true;
    ctx->status = status;
}

int rpc_client_call_sync(struct rpc_client *c,
                         const Ringmq__RpcRequest *req,
                         unsigned timeout_ms,
                         Ringmq__RpcResponse **resp)
{
    struct sync_ctx ctx = {false, 0};
    int rv;

    *resp = NULL;
    rv = call_start(c, req, timeout_ms, on_sync_done, &ctx, resp, NULL);
    if (rv != 0) {
        return rv;
    }
    while (!ctx.done) {
        uv_run(c->loop, UV_RUN_ONCE);
    }
    return ctx.status;
}

static void on_handle_closed(uv_handle_t *h)
{
    client_handle_done(h->data);
}

void rpc_client_close(struct rpc_client *c, void (*cb)(void *data), void *data)
{
    c->closing = true;
    c->close_cb = cb;
    c->close_data = data;
    conn_fail(c, UV_ECANCELED, false);
    uv_close((uv_handle_t *)&c->conn_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->call_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->expire, on_handle_closed);
    uv_close((uv_handle_t *)&c->pump, on_handle_closed);
}
