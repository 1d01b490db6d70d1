/*
 * test_rpc: rpc_server + rpc_client over 127.0.0.1 in one loop.
 *
 * The server's handler echoes CacheOps back as a HIT whose value, flags and
 * number (= op delta) come from the request, either at once, after a random
 * delay (timers), or when the test releases it (held requests).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "common/buf.h"
#include "sm/cache_op.h"
#include "common/log.h"
#include "rpc/rpc_server.h"
#include "proto/rpc_frame.h"
#include "rpc/rpc_client.h"
#include "tests/unit/lib/frame_read.h"

enum mode { MODE_NOW, MODE_DELAY, MODE_HOLD };

#define MAX_HELD 64

struct fx {
    uv_loop_t loop;
    uv_timer_t ticker; /* keeps uv_run(ONCE) from blocking for long */
    struct rpc_server *server;
    struct rpc_client *client;
    int port;
    enum mode mode;
    unsigned requests; /* seen by the handler */
    struct rpc_server_req *held[MAX_HELD];
    const Ringmq__RpcRequest *held_msg[MAX_HELD];
    unsigned n_held;
    unsigned delayed; /* delay timers outstanding */
};

static struct fx *F;

/* ---- server side ------------------------------------------------------- */

static void reply_echo(struct rpc_server_req *req,
                       const Ringmq__RpcRequest *msg)
{
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__CacheResult res = RINGMQ__CACHE_RESULT__INIT;

    resp.id = 999999; /* ignored: the server stamps the request's id */
    resp.code = rpc_code(OUTCOME_OK);
    if (msg->body_case == RINGMQ__RPC_REQUEST__BODY_CACHE) {
        res.status = CACHE_HIT;
        res.value = msg->cache->value; /* msg valid until the reply */
        res.flags = msg->cache->flags;
        res.number = msg->cache->delta;
        resp.body_case = RINGMQ__RPC_RESPONSE__BODY_CACHE;
        resp.cache = &res;
    }
    rpc_server_reply(req, &resp);
}

struct delayed {
    uv_timer_t timer;
    struct rpc_server_req *req;
    const Ringmq__RpcRequest *msg;
};

static void on_delayed_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_delay(uv_timer_t *t)
{
    struct delayed *d = t->data;

    reply_echo(d->req, d->msg);
    F->delayed--;
    uv_close((uv_handle_t *)&d->timer, on_delayed_closed);
}

static void on_request(void *data,
                       struct rpc_server_req *req,
                       const Ringmq__RpcRequest *msg)
{
    struct fx *fx = data;
    struct delayed *d;

    fx->requests++;
    switch (fx->mode) {
        case MODE_NOW:
            reply_echo(req, msg);
            break;
        case MODE_DELAY:
            d = malloc(sizeof(*d));
            d->req = req;
            d->msg = msg;
            uv_timer_init(&fx->loop, &d->timer);
            d->timer.data = d;
            uv_timer_start(&d->timer, on_delay, (uint64_t)(rand() % 20), 0);
            fx->delayed++;
            break;
        case MODE_HOLD:
            assert_true(fx->n_held < MAX_HELD);
            fx->held[fx->n_held] = req;
            fx->held_msg[fx->n_held] = msg;
            fx->n_held++;
            break;
    }
}

static void release_held(struct fx *fx)
{
    unsigned i;

    for (i = 0; i < fx->n_held; i++) {
        reply_echo(fx->held[i], fx->held_msg[i]);
    }
    fx->n_held = 0;
}

static struct rpc_server *start_server_cfg(struct fx *fx,
                                           struct rpc_server_config *sc)
{
    struct rpc_server *s;
    char err[256];

    s = rpc_server_new(&fx->loop, sc, on_request, fx, err, sizeof(err));
    if (s == NULL) {
        fail_msg("rpc_server_new: %s", err);
    }
    return s;
}

static struct rpc_server *start_server(struct fx *fx, int port)
{
    struct rpc_server_config sc = {0};
    struct rpc_server *s;
    char err[256];

    sc.host = "127.0.0.1";
    sc.port = port;
    s = rpc_server_new(&fx->loop, &sc, on_request, fx, err, sizeof(err));
    if (s == NULL) {
        fail_msg("rpc_server_new: %s", err);
    }
    return s;
}

static struct rpc_client *make_client(struct fx *fx, const char *host, int port)
{
    struct rpc_client_config cc = {0};
    struct rpc_client *c;
    char addr[64];
    char err[256];

    snprintf(addr, sizeof(addr), "%s:%d", host, port);
    cc.address = addr;
    cc.call_timeout_ms = 5000;
    c = rpc_client_new(&fx->loop, &cc, err, sizeof(err));
    if (c == NULL) {
        fail_msg("rpc_client_new: %s", err);
    }
    return c;
}

/* ---- loop helpers ------------------------------------------------------ */

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until *flag becomes true (or fails after @ms). */
static void run_until(struct fx *fx, const bool *flag, unsigned ms)
{
    uint64_t end = uv_now(&fx->loop) + ms;

    while (!*flag) {
        assert_true(uv_now(&fx->loop) < end);
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
}

static void run_for(struct fx *fx, unsigned ms)
{
    uint64_t end;

    uv_update_time(&fx->loop);
    end = uv_now(&fx->loop) + ms;
    while (uv_now(&fx->loop) < end) {
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));

    /* TEST_RPC_LOG=1 shows the server's reasons for closing connections */
    log_init("test_rpc", getenv("TEST_RPC_LOG") ? LOG_DEBUG : LOG_ERROR);
    srand(4242);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    uv_timer_init(&fx->loop, &fx->ticker);
    uv_timer_start(&fx->ticker, on_tick, 5, 5);
    fx->server = start_server(fx, 0);
    fx->port = rpc_server_port(fx->server);
    assert_true(fx->port > 0);
    fx->client = make_client(fx, "127.0.0.1", fx->port);
    F = fx;
    *state = fx;
    return 0;
}

static void on_closed_flag(void *data)
{
    *(bool *)data = true;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    bool sdone = fx->server == NULL, cdone = fx->client == NULL;

    if (fx->client) {
        rpc_client_close(fx->client, on_closed_flag, &cdone);
    }
    if (fx->server) {
        rpc_server_close(fx->server, on_closed_flag, &sdone);
    }
    release_held(fx); /* replies after close are dropped */
    while (fx->delayed > 0) {
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&fx->ticker, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_true(sdone);
    assert_true(cdone);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx);
    F = NULL;
    return 0;
}

/* ---- calls ------------------------------------------------------------- */

static void init_cache_req(Ringmq__RpcRequest *req,
                           Ringmq__CacheOp *op,
                           uint64_t delta,
                           const void *value,
                           size_t len)
{
    ringmq__rpc_request__init(req);
    ringmq__cache_op__init(op);
    op->type = CACHE_OP_GET;
    op->key.data = (uint8_t *)"k";
    op->key.len = 1;
    op->value.data = (uint8_t *)value;
    op->value.len = len;
    op->delta = delta;
    req->group = "cache";
    req->body_case = RINGMQ__RPC_REQUEST__BODY_CACHE;
    req->cache = op;
}

struct result {
    bool done;
    int calls; /* callback count: must end at 1 */
    int status;
    uint64_t number;
    uint64_t id;
    unsigned order; /* completion rank */
};

static unsigned completed;

static void on_result(void *data, int status, const Ringmq__RpcResponse *resp)
{
    struct result *r = data;

    r->calls++;
    r->done = true;
    r->status = status;
    r->order = completed++;
    if (status == 0) {
        assert_non_null(resp);
        r->id = resp->id;
        assert_int_equal(resp->body_case, RINGMQ__RPC_RESPONSE__BODY_CACHE);
        r->number = resp->cache->number;
    } else {
        assert_null(resp);
    }
}

static void test_sync_call(void **state)
{
    struct fx *fx = *state;
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    Ringmq__RpcResponse *resp;

    init_cache_req(&req, &op, 5, "abc", 3);
    req.id = 12345; /* ignored: the client assigns ids */
    assert_int_equal(rpc_client_call_sync(fx->client, &req, 0, &resp), 0);
    assert_int_equal(resp->id, 1);
    assert_int_equal(rpc_outcome(resp->code), OUTCOME_OK);
    assert_int_equal(resp->cache->number, 5);
    assert_int_equal(resp->cache->value.len, 3);
    assert_memory_equal(resp->cache->value.data, "abc", 3);
    ringmq__rpc_response__free_unpacked(resp, NULL);
    assert_int_equal(rpc_client_call_sync(fx->client, &req, 0, &resp), 0);
    assert_int_equal(resp->id, 2);
    ringmq__rpc_response__free_unpacked(resp, NULL);
    assert_int_equal(rpc_client_pending(fx->client), 0);
    assert_int_equal(rpc_server_connections(fx->server), 1);
}

#define N_CONCURRENT 2000

static void test_concurrent_out_of_order(void **state)
{
    struct fx *fx = *state;
    struct result *res = calloc(N_CONCURRENT, sizeof(*res));
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    unsigned inversions = 0;
    bool all = false;
    int i, n;

    fx->mode = MODE_DELAY;
    completed = 0;
    for (i = 0; i < N_CONCURRENT; i++) {
        char v[16];
        n = snprintf(v, sizeof(v), "v%d", i);
        init_cache_req(&req, &op, (uint64_t)i, v, (size_t)n);
        assert_int_equal(
            rpc_client_call(fx->client, &req, 0, on_result, &res[i], NULL), 0);
    }
    assert_int_equal(rpc_client_pending(fx->client), N_CONCURRENT);
    while (!all) {
        uv_run(&fx->loop, UV_RUN_ONCE);
        all = completed == N_CONCURRENT;
    }
    for (i = 0; i < N_CONCURRENT; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].status, 0);
        assert_int_equal(res[i].number, (uint64_t)i);
        assert_int_equal(res[i].id, (uint64_t)i + 1);
        if (i > 0 && res[i].order < res[i - 1].order) {
            inversions++;
        }
    }
    assert_true(inversions > 0); /* replies really came out of order */
    assert_int_equal(fx->requests, N_CONCURRENT);
    assert_int_equal(rpc_client_pending(fx->client), 0);
    free(res);
}

static void test_large_payload(void **state)
{
    struct fx *fx = *state;
    size_t len = 1 << 20;
    uint8_t *value = malloc(len);
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    Ringmq__RpcResponse *resp;
    uint32_t x = 1;
    size_t i;
    int round;

    for (round = 0; round < 2; round++) {
        for (i = 0; i < len; i++) {
            if (round == 0) {
                value[i] = (uint8_t)('a' + (i / 7) % 26); /* compressible */
            } else {
                x = x * 1103515245u + 12345u;
                value[i] = (uint8_t)(x >> 16); /* incompressible */
            }
        }
        init_cache_req(&req, &op, 9, value, len);
        assert_int_equal(rpc_client_call_sync(fx->client, &req, 0, &resp), 0);
        assert_int_equal(resp->cache->value.len, len);
        assert_memory_equal(resp->cache->value.data, value, len);
        ringmq__rpc_response__free_unpacked(resp, NULL);
    }
    free(value);
}

static void test_timeout(void **state)
{
    struct fx *fx = *state;
    struct result r1 = {0}, r2 = {0};
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    Ringmq__RpcResponse *resp;
    uint64_t start;

    fx->mode = MODE_HOLD;
    init_cache_req(&req, &op, 1, "", 0);
    uv_update_time(&fx->loop);
    start = uv_now(&fx->loop);
    assert_int_equal(
        rpc_client_call(fx->client, &req, 100, on_result, &r1, NULL), 0);
    assert_int_equal(
        rpc_client_call(fx->client, &req, 300, on_result, &r2, NULL), 0);
    run_until(fx, &r1.done, 2000);
    assert_int_equal(r1.status, UV_ETIMEDOUT);
    assert_true(uv_now(&fx->loop) - start >= 100);
    assert_false(r2.done);
    run_until(fx, &r2.done, 2000);
    assert_int_equal(r2.status, UV_ETIMEDOUT);
    assert_true(uv_now(&fx->loop) - start >= 300);
    /* late replies to timed-out calls are dropped by the client */
    assert_int_equal(fx->n_held, 2);
    release_held(fx);
    run_for(fx, 30);
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r2.calls, 1);
    /* the connection is still fine */
    fx->mode = MODE_NOW;
    assert_int_equal(rpc_client_call_sync(fx->client, &req, 0, &resp), 0);
    ringmq__rpc_response__free_unpacked(resp, NULL);
    assert_int_equal(rpc_client_call_sync(fx->client, &req, 0, &resp), 0);
    ringmq__rpc_response__free_unpacked(resp, NULL);
}

static void test_server_close_fails_pending_then_reconnect(void **state)
{
    struct fx *fx = *state;
    struct result r[5] = {{0}};
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    Ringmq__RpcResponse *resp;
    bool closed = false;
    int i;

    fx->mode = MODE_HOLD;
    init_cache_req(&req, &op, 3, "x", 1);
    for (i = 0; i < 5; i++) {
        assert_int_equal(
            rpc_client_call(fx->client, &req, 0, on_result, &r[i], NULL), 0);
    }
    while (fx->n_held < 5) {
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
    rpc_server_close(fx->server, on_closed_flag, &closed);
    fx->server = NULL;
    run_until(fx, &r[4].done, 2000);
    for (i = 0; i < 5; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, UV_ECONNRESET);
    }
    run_until(fx, &closed, 2000);
    /* requests outlive their connection and server; replies are dropped */
    for (i = 0; i < 5; i++) {
        assert_false(rpc_server_req_connected(fx->held[i]));
    }
    release_held(fx);

    /* nothing listens now: refused */
    assert_int_equal(rpc_client_call_sync(fx->client, &req, 0, &resp),
                     UV_ECONNREFUSED);
    /* a new server on the same port: the client reconnects */
    fx->server = start_server(fx, fx->port);
    fx->mode = MODE_NOW;
    assert_int_equal(rpc_client_call_sync(fx->client, &req, 0, &resp), 0);
    assert_int_equal(resp->cache->number, 3);
    ringmq__rpc_response__free_unpacked(resp, NULL);
}

/* ---- raw connection sending garbage ------------------------------------ */

struct raw {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    bool connected;
    bool eof;
    bool closed;
    char rb[256];
};

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    struct raw *r = h->data;

    (void)s;
    *b = uv_buf_init(r->rb, sizeof(r->rb));
}

static void raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct raw *r = st->data;

    (void)b;
    if (n < 0) {
        r->eof = true;
    }
}

static void raw_connected(uv_connect_t *c, int status)
{
    struct raw *r = c->data;

    assert_int_equal(status, 0);
    r->connected = true;
    uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
}

static void raw_written(uv_write_t *w, int status)
{
    (void)w;
    (void)status;
}

static void raw_closed(uv_handle_t *h)
{
    ((struct raw *)h->data)->closed = true;
}

static void send_garbage(struct fx *fx, const void *bytes, size_t len)
{
    struct raw r;
    struct sockaddr_in a;
    uv_buf_t b = uv_buf_init((char *)bytes, (unsigned)len);
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    Ringmq__RpcResponse *resp;

    memset(&r, 0, sizeof(r));
    uv_ip4_addr("127.0.0.1", fx->port, &a);
    uv_tcp_init(&fx->loop, &r.tcp);
    r.tcp.data = &r;
    r.connect.data = &r;
    assert_int_equal(uv_tcp_connect(&r.connect, &r.tcp, (struct sockaddr *)&a,
                                    raw_connected),
                     0);
    run_until(fx, &r.connected, 2000);
    assert_int_equal(
        uv_write(&r.write, (uv_stream_t *)&r.tcp, &b, 1, raw_written), 0);
    run_until(fx, &r.eof, 2000); /* the server closed it */
    uv_close((uv_handle_t *)&r.tcp, raw_closed);
    run_until(fx, &r.closed, 2000);

    /* the well-behaved client's connection is unaffected */
    init_cache_req(&req, &op, 8, "", 0);
    assert_int_equal(rpc_client_call_sync(fx->client, &req, 0, &resp), 0);
    assert_int_equal(resp->cache->number, 8);
    ringmq__rpc_response__free_unpacked(resp, NULL);
}

static void test_garbage_closes_only_that_connection(void **state)
{
    struct fx *fx = *state;
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    Ringmq__RpcResponse *resp;
    uint64_t id_before;
    static const char huge[] = "\xff\xff\xff\xff\x00";
    static const char flags[] = "\x00\x00\x00\x02\x80z";
    static const char proto[] = "\x00\x00\x00\x03\x00\x08\xff";
    static const char lz[] = "\x00\x00\x00\x04\x01RLZ";
    static const char text[] = "GET / HTTP/1.0\r\n\r\n";

    init_cache_req(&req, &op, 1, "", 0);
    assert_int_equal(rpc_client_call_sync(fx->client, &req, 0, &resp), 0);
    id_before = resp->id;
    ringmq__rpc_response__free_unpacked(resp, NULL);

    send_garbage(fx, huge, sizeof(huge) - 1);
    send_garbage(fx, flags, sizeof(flags) - 1);
    send_garbage(fx, proto, sizeof(proto) - 1);
    send_garbage(fx, lz, sizeof(lz) - 1);
    send_garbage(fx, text, sizeof(text) - 1);
    assert_int_equal(rpc_server_connections(fx->server), 1);
    /* and it never reconnected: ids continue on the same connection */
    assert_int_equal(rpc_client_call_sync(fx->client, &req, 0, &resp), 0);
    assert_int_equal(resp->id, id_before + 6);
    ringmq__rpc_response__free_unpacked(resp, NULL);
}

static void test_reply_after_client_gone(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    bool closed = false;

    fx->mode = MODE_HOLD;
    init_cache_req(&req, &op, 1, "v", 1);
    assert_int_equal(rpc_client_call(fx->client, &req, 0, on_result, &r, NULL),
                     0);
    while (fx->n_held < 1) {
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
    assert_true(rpc_server_req_connected(fx->held[0]));
    rpc_client_close(fx->client, on_closed_flag, &closed);
    fx->client = NULL;
    /* pending calls fail synchronously inside close */
    assert_true(r.done);
    assert_int_equal(r.status, UV_ECANCELED);
    run_until(fx, &closed, 2000);
    while (rpc_server_connections(fx->server) > 0) {
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
    assert_false(rpc_server_req_connected(fx->held[0]));
    release_held(fx); /* dropped, no crash, no leak */
    run_for(fx, 20);
    assert_int_equal(r.calls, 1);
}

static void test_refused(void **state)
{
    struct fx *fx = *state;
    struct rpc_client *c;
    struct result r1 = {0}, r2 = {0};
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    bool closed = false;
    bool sclosed = false;
    int port = fx->port;

    rpc_server_close(fx->server, on_closed_flag, &sclosed);
    fx->server = NULL;
    run_until(fx, &sclosed, 2000);
    c = make_client(fx, "127.0.0.1", port);
    init_cache_req(&req, &op, 1, "", 0);
    assert_int_equal(rpc_client_call(c, &req, 0, on_result, &r1, NULL), 0);
    assert_false(r1.done); /* never synchronously */
    run_until(fx, &r1.done, 2000);
    assert_int_equal(r1.status, UV_ECONNREFUSED);
    /* during the backoff calls are queued, then refused again */
    assert_int_equal(rpc_client_call(c, &req, 0, on_result, &r2, NULL), 0);
    assert_false(r2.done);
    run_until(fx, &r2.done, 2000);
    assert_int_equal(r2.status, UV_ECONNREFUSED);
    rpc_client_close(c, on_closed_flag, &closed);
    run_until(fx, &closed, 2000);
}

/* Callbacks that issue new calls, and a close from inside a callback. */
struct chain {
    struct rpc_client *c;
    int left;
    int ok;
    int cancelled;
    bool done;
    bool close_in_cb;
    bool closed;
};

static void on_chain(void *data, int status, const Ringmq__RpcResponse *resp)
{
    struct chain *ch = data;
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;

    (void)resp;
    if (status == UV_ECANCELED) {
        ch->cancelled++;
        /* calls from callbacks of a closing client are refused */
        init_cache_req(&req, &op, 0, "", 0);
        assert_int_equal(rpc_client_call(ch->c, &req, 0, on_chain, ch, NULL),
                         UV_ECANCELED);
        return;
    }
    assert_int_equal(status, 0);
    ch->ok++;
    if (--ch->left == 0) {
        ch->done = true;
        if (ch->close_in_cb) {
            rpc_client_close(ch->c, on_closed_flag, &ch->closed);
        }
        return;
    }
    init_cache_req(&req, &op, 0, "", 0);
    assert_int_equal(rpc_client_call(ch->c, &req, 0, on_chain, ch, NULL), 0);
    if (ch->close_in_cb) {
        /* a second one that the close will cancel */
        assert_int_equal(rpc_client_call(ch->c, &req, 0, on_chain, ch, NULL),
                         0);
    }
}

static void test_calls_from_callbacks(void **state)
{
    struct fx *fx = *state;
    struct chain ch = {0};
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;

    ch.c = fx->client;
    ch.left = 50;
    init_cache_req(&req, &op, 0, "", 0);
    assert_int_equal(rpc_client_call(ch.c, &req, 0, on_chain, &ch, NULL), 0);
    run_until(fx, &ch.done, 5000);
    assert_int_equal(ch.ok, 50);

    /* close from inside a callback with another call pending */
    memset(&ch, 0, sizeof(ch));
    ch.c = make_client(fx, "127.0.0.1", fx->port);
    ch.left = 1;
    ch.close_in_cb = true;
    fx->mode = MODE_DELAY;
    assert_int_equal(rpc_client_call(ch.c, &req, 0, on_chain, &ch, NULL), 0);
    assert_int_equal(rpc_client_call(ch.c, &req, 0, on_chain, &ch, NULL), 0);
    run_until(fx, &ch.closed, 5000);
    assert_int_equal(ch.ok + ch.cancelled, 2);
    assert_true(ch.ok >= 1);
}

static void test_hostname_and_bad_address(void **state)
{
    struct fx *fx = *state;
    struct rpc_client_config cc = {0};
    struct rpc_client *c;
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    Ringmq__RpcResponse *resp;
    bool closed = false;
    char err[256];
    const char *bad[] = {"",     "host:",  "host:0", "host:99999",
                         "[::1", "[::1]x", "h:12ab"};
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cc.address = bad[i];
        assert_null(rpc_client_new(&fx->loop, &cc, err, sizeof(err)));
    }
    cc.address = "::1";
    c = rpc_client_new(&fx->loop, &cc, err, sizeof(err));
    assert_non_null(c);
    assert_string_equal(rpc_client_address(c), "[::1]:7100");
    rpc_client_close(c, NULL, NULL);

    c = make_client(fx, "localhost", fx->port);
    init_cache_req(&req, &op, 4, "", 0);
    /* localhost may resolve to ::1 first where nothing listens: accept a
     * refusal on the first try, then the next attempt re-resolves */
    if (rpc_client_call_sync(c, &req, 0, &resp) == 0) {
        assert_int_equal(resp->cache->number, 4);
        ringmq__rpc_response__free_unpacked(resp, NULL);
    }
    rpc_client_close(c, on_closed_flag, &closed);
    run_until(fx, &closed, 2000);
}

static void test_status_body_and_empty_request(void **state)
{
    struct fx *fx = *state;
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__StatusRequest sreq = RINGMQ__STATUS_REQUEST__INIT;
    Ringmq__RpcResponse *resp;

    req.body_case = RINGMQ__RPC_REQUEST__BODY_STATUS;
    req.status = &sreq;
    assert_int_equal(rpc_client_call_sync(fx->client, &req, 0, &resp), 0);
    assert_int_equal(resp->body_case, RINGMQ__RPC_RESPONSE__BODY__NOT_SET);
    ringmq__rpc_response__free_unpacked(resp, NULL);
    ringmq__rpc_request__init(&req);
    assert_int_equal(rpc_client_call_sync(fx->client, &req, 0, &resp), 0);
    ringmq__rpc_response__free_unpacked(resp, NULL);
}

static void test_pipelined_burst_sync_replies(void **state)
{
    struct fx *fx = *state;
    enum { N = 20000 };
    struct result *res = calloc(N, sizeof(*res));
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    int i;

    completed = 0;
    for (i = 0; i < N; i++) {
        init_cache_req(&req, &op, (uint64_t)i, "value", 5);
        assert_int_equal(
            rpc_client_call(fx->client, &req, 0, on_result, &res[i], NULL), 0);
    }
    while (completed < N) {
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
    for (i = 0; i < N; i++) {
        assert_int_equal(res[i].status, 0);
        assert_int_equal(res[i].number, (uint64_t)i);
        assert_int_equal(res[i].order, (unsigned)i); /* one conn, in order */
    }
    free(res);
}

/* A connection whose unanswered requests hold max_inflight_bytes is not
 * read any further (the rest waits in the socket) until replies free
 * room: what a slow group keeps a node holding is bounded in bytes. */
static void test_inflight_bytes_bound(void **state)
{
    struct fx *fx = *state;
    enum { N = 8, LEN = 64 << 10 };
    struct rpc_server_config sc = {0};
    static struct result res[N]; /* outlives a failed test's calls */
    uint8_t *value = malloc(LEN);
    Ringmq__RpcRequest req;
    Ringmq__CacheOp op;
    uint32_t x = 7;
    bool closed = false;
    int i;

    for (i = 0; i < LEN; i++) {
        x = x * 1103515245u + 12345u;
        value[i] = (uint8_t)(x >> 16); /* incompressible: one frame a read */
    }
    rpc_client_close(fx->client, on_closed_flag, &closed);
    run_until(fx, &closed, 2000);
    sc.host = "127.0.0.1";
    sc.max_inflight_bytes = 100 << 10;
    rpc_server_close(fx->server, NULL, NULL);
    fx->server = start_server_cfg(fx, &sc);
    fx->client = make_client(fx, "127.0.0.1", rpc_server_port(fx->server));

    fx->mode = MODE_HOLD;
    memset(res, 0, sizeof(res));
    completed = 0;
    for (i = 0; i < N; i++) {
        init_cache_req(&req, &op, (uint64_t)i, value, LEN);
        assert_int_equal(
            rpc_client_call(fx->client, &req, 0, on_result, &res[i], NULL), 0);
    }
    run_for(fx, 200);
    /* the second frame took the connection past 100 KiB: not read on */
    assert_int_equal(fx->requests, 2);
    assert_int_equal(fx->n_held, 2);
    fx->mode = MODE_NOW;
    release_held(fx);
    while (completed < N) {
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
    for (i = 0; i < N; i++) {
        assert_int_equal(res[i].status, 0);
        assert_int_equal(res[i].number, (uint64_t)i);
    }
    assert_int_equal(fx->requests, N);
    free(value);
}

/* ---- a call that timed out before its connection came up --------------- */

/* A listening socket whose accept queue is full: a connect to it stays
 * pending (the SYN is dropped and retransmitted after about a second) until
 * the queued connection is accepted. */
struct full_listener {
    int fd;
    int filler;
    int port;
};

static void full_listener_open(struct full_listener *l)
{
    struct sockaddr_in a;
    socklen_t n = sizeof(a);

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    l->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l->fd >= 0);
    assert_int_equal(bind(l->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l->fd, 0), 0); /* room for one */
    assert_int_equal(getsockname(l->fd, (struct sockaddr *)&a, &n), 0);
    l->port = ntohs(a.sin_port);
    l->filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l->filler >= 0);
    assert_int_equal(connect(l->filler, (struct sockaddr *)&a, sizeof(a)), 0);
}

/* Accepts with the uv loop running, within @ms. Returns the fd. */
static int accept_running(struct fx *fx, int fd, unsigned ms)
{
    uint64_t end;
    struct pollfd p = {.fd = fd, .events = POLLIN};

    uv_update_time(&fx->loop);
    end = uv_now(&fx->loop) + ms;
    while (poll(&p, 1, 0) == 0) {
        assert_true(uv_now(&fx->loop) < end);
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
    fd = accept(fd, NULL, NULL);
    assert_true(fd >= 0);
    return fd;
}

static bool readable_soon(void *arg)
{
    struct pollfd p = {.fd = *(int *)arg, .events = POLLIN};

    return poll(&p, 1, 10000) == 1;
}

/* Reads the first request frame from socket @fd (the loop is not run: the
 * client's bytes were handed to the socket already). */
static Ringmq__RpcRequest *read_request(int fd)
{
    return (Ringmq__RpcRequest *)frame_read(
        fd, &ringmq__rpc_request__descriptor, readable_soon, &fd);
}

/* Replace the fixture's client (teardown closes it) by one to 127.0.0.1:
 * @port configured as @cc (its address set here). */
static struct rpc_client *client_to(struct fx *fx, int port,
                                    struct rpc_client_config *cc)
{
    char addr[64];
    char err[256];
    bool closed = false;

    rpc_client_close(fx->client, on_closed_flag, &closed);
    run_until(fx, &closed, 2000);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    cc->address = addr;
    fx->client = rpc_client_new(&fx->loop, cc, err, sizeof(err));
    assert_non_null(fx->client);
    return fx->client;
}

/* Close @c, the fixture's client, now: its calls complete. */
static void close_client(struct fx *fx, struct rpc_client *c)
{
    bool closed = false;

    fx->client = NULL;
    rpc_client_close(c, on_closed_flag, &closed);
    run_until(fx, &closed, 2000);
}

/*
 * A call that timed out while the connect was pending was reported failed:
 * when the connection comes up, its request must not go out, or the node
 * would execute what its caller was told had failed. The next call's
 * request is the first thing the node reads.
 */
static void test_timed_out_call_not_sent_after_connect(void **state)
{
    struct fx *fx = *state;
    struct full_listener l;
    struct rpc_client_config cc = {0};
    struct rpc_client *c;
    struct result r1 = {0}, r2 = {0};
    Ringmq__RpcRequest req;
    Ringmq__RpcRequest *got;
    Ringmq__CacheOp op;
    uint64_t id2;
    int conn;

    full_listener_open(&l);
    cc.connect_timeout_ms = 30000;
    c = client_to(fx, l.port, &cc);
    init_cache_req(&req, &op, 1, "first", 5);
    assert_int_equal(rpc_client_call(c, &req, 100, on_result, &r1, NULL), 0);
    run_until(fx, &r1.done, 5000);
    assert_int_equal(r1.status, UV_ETIMEDOUT);
    init_cache_req(&req, &op, 2, "second", 6);
    assert_int_equal(rpc_client_call(c, &req, 30000, on_result, &r2, &id2),
                     0);
    /* make room: the client's retransmitted SYN gets through */
    close(accept(l.fd, NULL, NULL));
    close(l.filler);
    conn = accept_running(fx, l.fd, 20000);
    got = read_request(conn);
    assert_int_equal(got->id, id2);
    assert_int_equal(got->cache->delta, 2);
    /* with the time it had left when it went out */
    assert_true(got->budget_ms > 0 && got->budget_ms <= 30000);
    ringmq__rpc_request__free_unpacked(got, NULL);
    assert_false(r2.done);
    close_client(fx, c);
    assert_int_equal(r2.status, UV_ECANCELED);
    assert_int_equal(r1.calls, 1);
    close(conn);
    close(l.fd);
}

/* Runs the loop until @fd is readable (the client wrote), within 10 s. */
static void run_until_readable(struct fx *fx, int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    unsigned waited = 0;

    while (poll(&p, 1, 0) == 0) {
        assert_true(waited < 10000);
        run_for(fx, 10);
        waited += 10;
    }
}

/* With budget_margin_ms, a request tells the node less time than its call
 * has left, so that the node's "expired, not executed" answer comes while
 * the call still waits; never more than half of it. */
static void test_budget_margin(void **state)
{
    struct fx *fx = *state;
    struct full_listener l;
    struct rpc_client_config cc = {0};
    struct rpc_client *c;
    struct result r1 = {0}, r2 = {0};
    Ringmq__RpcRequest req;
    Ringmq__RpcRequest *got;
    Ringmq__CacheOp op;
    int conn;

    full_listener_open(&l);
    close(accept(l.fd, NULL, NULL)); /* room for the client */
    close(l.filler);
    cc.budget_margin_ms = 300;
    c = client_to(fx, l.port, &cc);
    /* one request at a time: read_request takes the first frame only */
    init_cache_req(&req, &op, 1, "long", 4);
    assert_int_equal(rpc_client_call(c, &req, 20000, on_result, &r1, NULL), 0);
    conn = accept_running(fx, l.fd, 10000);
    run_until_readable(fx, conn);
    got = read_request(conn);
    assert_int_equal(got->cache->delta, 1);
    assert_true(got->budget_ms > 0 && got->budget_ms <= 20000 - 300);
    ringmq__rpc_request__free_unpacked(got, NULL);
    init_cache_req(&req, &op, 2, "short", 5);
    assert_int_equal(rpc_client_call(c, &req, 400, on_result, &r2, NULL), 0);
    run_until_readable(fx, conn);
    got = read_request(conn);
    assert_int_equal(got->cache->delta, 2);
    assert_true(got->budget_ms > 0 && got->budget_ms <= 200);
    ringmq__rpc_request__free_unpacked(got, NULL);
    close_client(fx, c);
    close(conn);
    close(l.fd);
}

/* A reply that arrived while the loop was held up past its call's deadline
 * (a burst of work, the process descheduled) completes the call: the
 * timeout is judged once the loop has read what the socket holds. */
static void test_reply_beats_late_timer(void **state)
{
    struct fx *fx = *state;
    struct full_listener l;
    struct rpc_client_config cc = {0};
    struct rpc_client *c;
    struct result r = {0};
    Ringmq__RpcRequest req;
    Ringmq__RpcRequest *got;
    Ringmq__RpcResponse resp = RINGMQ__RPC_RESPONSE__INIT;
    Ringmq__CacheResult cache = RINGMQ__CACHE_RESULT__INIT;
    Ringmq__CacheOp op;
    struct buf out;
    int conn;

    full_listener_open(&l);
    close(accept(l.fd, NULL, NULL)); /* room for the client */
    close(l.filler);
    c = client_to(fx, l.port, &cc);
    init_cache_req(&req, &op, 1, "k", 1);
    assert_int_equal(rpc_client_call(c, &req, 300, on_result, &r, NULL), 0);
    conn = accept_running(fx, l.fd, 10000);
    run_until_readable(fx, conn);
    got = read_request(conn);
    resp.id = got->id;
    resp.code = RINGMQ__RPC_CODE__RPC_OK;
    resp.body_case = RINGMQ__RPC_RESPONSE__BODY_CACHE;
    resp.cache = &cache;
    ringmq__rpc_request__free_unpacked(got, NULL);
    buf_init(&out);
    assert_int_equal(rpc_frame_encode_response(&out, &resp, 0, 0), 0);
    assert_int_equal(write(conn, out.data, out.len), (ssize_t)out.len);
    buf_free(&out);
    usleep(400 * 1000); /* the loop is held up past the deadline */
    run_until(fx, &r.done, 2000);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.calls, 1);
    close_client(fx, c);
    close(conn);
    close(l.fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sync_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_out_of_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_large_payload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_server_close_fails_pending_then_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_garbage_closes_only_that_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_after_client_gone, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget_margin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_beats_late_timer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_calls_from_callbacks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hostname_and_bad_address, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_status_body_and_empty_request,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_timed_out_call_not_sent_after_connect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inflight_bytes_bound, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_burst_sync_replies,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
