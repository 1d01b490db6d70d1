/*
 * test_http_admin: the admin HTTP server over real sockets, its request
 * engine without sockets (http_admin__feed), and the Prometheus builder.
 *
 * Socket tests run the server on a libuv loop in a second thread; the test
 * (main thread) is the client, with blocking sockets and a 5 s receive
 * timeout, so cmocka asserts stay on the main thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <uv.h>

#include "common/buf.h"
#include "common/http_admin.h"

#define BIG_LEN (100 * 1000)

/* ---- handlers ---------------------------------------------------------- */

struct handlers {
    int calls;   /* atomic: handler invocations */
    int healthy; /* atomic */
};

static void h_hello(void *data, const char *path, const char *query,
                    struct http_admin_response *resp)
{
    struct handlers *h = data;
    (void)path;
    (void)query;
    __atomic_add_fetch(&h->calls, 1, __ATOMIC_SEQ_CST);
    buf_append_str(&resp->body, "hello\n");
}

static void h_echo(void *data, const char *path, const char *query,
                   struct http_admin_response *resp)
{
    struct handlers *h = data;
    __atomic_add_fetch(&h->calls, 1, __ATOMIC_SEQ_CST);
    buf_printf(&resp->body, "path=%s query=%s\n", path, query);
}

static void h_healthz(void *data, const char *path, const char *query,
                      struct http_admin_response *resp)
{
    struct handlers *h = data;
    (void)path;
    (void)query;
    __atomic_add_fetch(&h->calls, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&h->healthy, __ATOMIC_SEQ_CST)) {
        buf_append_str(&resp->body, "ok\n");
    } else {
        resp->status = 503;
        buf_append_str(&resp->body, "no leader\n");
    }
}

static void h_metrics(void *data, const char *path, const char *query,
                      struct http_admin_response *resp)
{
    struct handlers *h = data;
    struct http_admin_metrics m;
    (void)path;
    (void)query;
    __atomic_add_fetch(&h->calls, 1, __ATOMIC_SEQ_CST);
    http_admin_metrics_init(&m, &resp->body);
    http_admin_metric(&m, "ringmq_up", "gauge", "1 when serving.", NULL, 1);
    http_admin_metrics_free(&m);
    resp->content_type = HTTP_ADMIN_METRICS_CONTENT_TYPE;
}

/* BIG_LEN bytes: the body is i % 26 letters, so order is checkable. */
static void h_big(void *data, const char *path, const char *query,
                  struct http_admin_response *resp)
{
    struct handlers *h = data;
    size_t i;
    (void)path;
    (void)query;
    __atomic_add_fetch(&h->calls, 1, __ATOMIC_SEQ_CST);
    buf_reserve(&resp->body, BIG_LEN);
    for (i = 0; i < BIG_LEN; i++) {
        resp->body.data[i] = (char)('a' + i % 26);
    }
    resp->body.len = BIG_LEN;
}

static void h_bad_status(void *data, const char *path, const char *query,
                         struct http_admin_response *resp)
{
    (void)data;
    (void)path;
    (void)query;
    resp->status = 204;
    buf_append_str(&resp->body, "x");
}

static void add_routes(struct http_admin *a, struct handlers *h)
{
    assert_int_equal(http_admin_route(a, "/hello", h_hello, h), 0);
    assert_int_equal(http_admin_route(a, "/echo", h_echo, h), 0);
    assert_int_equal(http_admin_route(a, "/", h_echo, h), 0);
    assert_int_equal(http_admin_route(a, "/healthz", h_healthz, h), 0);
    assert_int_equal(http_admin_route(a, "/metrics", h_metrics, h), 0);
    assert_int_equal(http_admin_route(a, "/big", h_big, h), 0);
    assert_int_equal(http_admin_route(a, "/bad", h_bad_status, h), 0);
}

/* ---- fixture: loop thread ---------------------------------------------- */

struct fixture {
    uv_loop_t loop;
    uv_async_t stop;
    pthread_t thread;
    struct http_admin *server;
    struct handlers h;
    int closed; /* the close callback ran */
    int port;
};

static void on_server_closed(void *data)
{
    struct fixture *fx = data;

    fx->server = NULL;
    fx->closed = 1;
    uv_close((uv_handle_t *)&fx->stop, NULL);
}

static void on_stop(uv_async_t *as)
{
    struct fixture *fx = as->data;
    http_admin_close(fx->server, on_server_closed, fx);
}

static void *loop_main(void *arg)
{
    struct fixture *fx = arg;
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    return NULL;
}

static struct fixture *start_cfg(const struct http_admin_config *cfg)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    char errmsg[256];

    assert_non_null(fx);
    fx->h.healthy = 1;
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    assert_int_equal(uv_async_init(&fx->loop, &fx->stop, on_stop), 0);
    fx->stop.data = fx;
    fx->server = http_admin_new(&fx->loop, cfg, errmsg, sizeof(errmsg));
    if (fx->server == NULL) {
        fail_msg("http_admin_new: %s", errmsg);
    }
    add_routes(fx->server, &fx->h);
    fx->port = http_admin_port(fx->server);
    assert_true(fx->port > 0);
    assert_int_equal(pthread_create(&fx->thread, NULL, loop_main, fx), 0);
    return fx;
}

static struct fixture *start(void)
{
    struct http_admin_config cfg = {0};
    cfg.port = 0;
    return start_cfg(&cfg);
}

static void stop(struct fixture *fx)
{
    uv_async_send(&fx->stop);
    assert_int_equal(pthread_join(fx->thread, NULL), 0);
    assert_true(fx->closed);
    /* Every handle (listener, timer, connections) was closed. */
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx);
}

/* ---- client ------------------------------------------------------------ */

struct client {
    int fd;
    struct buf rb; /* received, not yet returned */
};

struct response {
    int status;
    char *head; /* status line + headers, NUL-terminated */
    char *body;
    size_t body_len;
};

static struct client *cl_connect_rcvbuf(int port, int rcvbuf)
{
    struct client *cl = calloc(1, sizeof(*cl));
    struct sockaddr_in sa;
    struct timeval tv = {5, 0};
    int one = 1;

    assert_non_null(cl);
    cl->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(cl->fd >= 0);
    if (rcvbuf > 0) {
        setsockopt(cl->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    }
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(cl->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    setsockopt(cl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(cl->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    buf_init(&cl->rb);
    return cl;
}

static struct client *cl_connect(int port)
{
    return cl_connect_rcvbuf(port, 0);
}

static void cl_free(struct client *cl)
{
    close(cl->fd);
    buf_free(&cl->rb);
    free(cl);
}

static void cl_send(struct client *cl, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(cl->fd, p, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

static void cl_sends(struct client *cl, const char *s)
{
    cl_send(cl, s, strlen(s));
}

/* Read more into cl->rb; false on EOF, reset or timeout. */
static bool cl_fill(struct client *cl)
{
    char tmp[16384];
    ssize_t r = recv(cl->fd, tmp, sizeof(tmp), 0);
    if (r <= 0) {
        return false;
    }
    buf_append(&cl->rb, tmp, (size_t)r);
    return true;
}

static char *find_crlfcrlf(struct buf *b)
{
    return b->len >= 4 ? memmem(b->data, b->len, "\r\n\r\n", 4) : NULL;
}

/* One response; @head: the request was HEAD (no body follows). */
static void cl_response(struct client *cl, bool head, struct response *r)
{
    char *end;
    size_t hlen;
    const char *cl_hdr;

    while ((end = find_crlfcrlf(&cl->rb)) == NULL) {
        if (!cl_fill(cl)) {
            fail_msg("connection ended before a response (have %zu bytes)",
                     cl->rb.len);
        }
    }
    hlen = (size_t)(end - cl->rb.data) + 4;
    r->head = calloc(1, hlen + 1);
    memcpy(r->head, cl->rb.data, hlen);
    buf_consume(&cl->rb, hlen);
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d ", &r->status), 1);
    cl_hdr = strstr(r->head, "\r\nContent-Length: ");
    assert_non_null(cl_hdr);
    r->body_len = head ? 0 : strtoul(cl_hdr + 18, NULL, 10);
    while (cl->rb.len < r->body_len) {
        if (!cl_fill(cl)) {
            fail_msg("connection ended inside a body");
        }
    }
    r->body = calloc(1, r->body_len + 1);
    memcpy(r->body, cl->rb.data, r->body_len);
    buf_consume(&cl->rb, r->body_len);
}

static void resp_free(struct response *r)
{
    free(r->head);
    free(r->body);
}

/* The value of header @name in @r, in a static buffer; NULL if absent. */
static const char *hdr(const struct response *r, const char *name)
{
    static char val[256];
    char pat[64];
    const char *p, *e;

    snprintf(pat, sizeof(pat), "\r\n%s: ", name);
    p = strstr(r->head, pat);
    if (p == NULL) {
        return NULL;
    }
    p += strlen(pat);
    e = strstr(p, "\r\n");
    snprintf(val, sizeof(val), "%.*s", (int)(e - p), p);
    return val;
}

/* The server closed the connection: EOF (or reset), nothing unread. */
static void cl_expect_eof(struct client *cl)
{
    char c;
    ssize_t r;

    assert_int_equal(cl->rb.len, 0);
    r = recv(cl->fd, &c, 1, 0);
    if (r != 0 && !(r < 0 && errno == ECONNRESET)) {
        fail_msg("expected EOF, got %zd (errno %d)", r, errno);
    }
}

/* Send @req and check a simple response: @status, @body (NULL: any). */
static void roundtrip(struct client *cl, const char *req, int status,
                      const char *body)
{
    struct response r;
    cl_sends(cl, req);
    cl_response(cl, strncmp(req, "HEAD ", 5) == 0, &r);
    assert_int_equal(r.status, status);
    if (body) {
        assert_string_equal(r.body, body);
    }
    resp_free(&r);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- socket tests ------------------------------------------------------ */

static void test_get(void **state)
{
    struct fixture *fx = start();
    struct client *cl = cl_connect(fx->port);
    struct response r;
    (void)state;

    cl_sends(cl, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    cl_response(cl, false, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello\n");
    assert_string_equal(hdr(&r, "Content-Length"), "6");
    assert_string_equal(hdr(&r, "Content-Type"), "text/plain; charset=utf-8");
    assert_non_null(hdr(&r, "Date"));
    assert_null(hdr(&r, "Connection")); /* 1.1: persistent by default */
    resp_free(&r);
    cl_free(cl);
    stop(fx);
}

static void test_status_codes(void **state)
{
    struct fixture *fx = start();
    struct client *cl = cl_connect(fx->port);
    struct response r;
    (void)state;

    /* All on one connection: none of these ends it. */
    roundtrip(cl, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404,
              "Not Found\n");
    roundtrip(cl, "GET /hello/ HTTP/1.1\r\nHost: x\r\n\r\n", 404, NULL);
    roundtrip(cl, "GET /HELLO HTTP/1.1\r\nHost: x\r\n\r\n", 404, NULL);

    cl_sends(cl, "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                 "\r\nabc");
    cl_response(cl, false, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(hdr(&r, "Allow"), "GET, HEAD");
    resp_free(&r);
    roundtrip(cl, "DELETE /nope HTTP/1.1\r\nHost: x\r\n\r\n", 405, NULL);
    roundtrip(cl, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 405, NULL);

    __atomic_store_n(&fx->h.healthy, 0, __ATOMIC_SEQ_CST);
    roundtrip(cl, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 503,
              "no leader\n");
    __atomic_store_n(&fx->h.healthy, 1, __ATOMIC_SEQ_CST);
    roundtrip(cl, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, "ok\n");

    /* A handler's impossible status becomes 500, framing intact. */
    roundtrip(cl, "GET /bad HTTP/1.1\r\nHost: x\r\n\r\n", 500, NULL);

    roundtrip(cl, "GET /echo?a=1&b=%20 HTTP/1.1\r\nHost: x\r\n\r\n", 200,
              "path=/echo query=a=1&b=%20\n");
    roundtrip(cl, "GET /echo#frag HTTP/1.1\r\nHost: x\r\n\r\n", 200,
              "path=/echo query=\n");
    roundtrip(cl, "GET http://example.com:9/echo?q HTTP/1.1\r\nHost: x\r\n\r\n",
              200, "path=/echo query=q\n");
    roundtrip(cl, "GET http://example.com?z HTTP/1.1\r\nHost: x\r\n\r\n", 200,
              "path=/ query=z\n");
    /* A body on GET is read and ignored. */
    roundtrip(cl, "GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n"
                  "zz", 200, "hello\n");
    roundtrip(cl, "GET /hello HTTP/1.1\r\nHost: x\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n2\r\nzz\r\n0\r\n\r\n",
              200, "hello\n");
    roundtrip(cl, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 200, "hello\n");
    assert_int_equal(fx->h.calls, 9);
    cl_free(cl);
    stop(fx);
}

static void test_head(void **state)
{
    struct fixture *fx = start();
    struct client *cl = cl_connect(fx->port);
    struct response r;
    (void)state;

    /* HEAD then GET pipelined: if HEAD carried a body, the second response
     * would not start where the first one's headers end. */
    cl_sends(cl, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                 "HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                 "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    cl_response(cl, true, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(hdr(&r, "Content-Length"), "6");
    resp_free(&r);
    cl_response(cl, true, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(hdr(&r, "Content-Length"), "10");
    resp_free(&r);
    cl_response(cl, false, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello\n");
    resp_free(&r);
    cl_free(cl);
    stop(fx);
}

static void test_keep_alive(void **state)
{
    struct fixture *fx = start();
    struct client *cl = cl_connect(fx->port);
    struct response r;
    (void)state;

    roundtrip(cl, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 200, "hello\n");
    usleep(20000);
    roundtrip(cl, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, "ok\n");

    /* Connection: close is honoured, and said back. */
    cl_sends(cl, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    cl_response(cl, false, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(hdr(&r, "Connection"), "close");
    resp_free(&r);
    cl_expect_eof(cl);
    cl_free(cl);

    /* HTTP/1.0: closes unless asked to keep alive; then says so. */
    cl = cl_connect(fx->port);
    cl_sends(cl, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    cl_response(cl, false, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(hdr(&r, "Connection"), "keep-alive");
    resp_free(&r);
    cl_sends(cl, "GET /hello HTTP/1.0\r\n\r\n");
    cl_response(cl, false, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello\n");
    assert_string_equal(hdr(&r, "Connection"), "close");
    resp_free(&r);
    cl_expect_eof(cl);
    cl_free(cl);
    stop(fx);
}

static void test_pipeline(void **state)
{
    struct fixture *fx = start();
    struct client *cl = cl_connect(fx->port);
    const char *paths[] = {"/hello", "/nope", "/healthz", "/echo?1",
                           "/metrics"};
    struct buf req;
    struct response r;
    int round, i;
    (void)state;

    buf_init(&req);
    for (round = 0; round < 20; round++) {
        for (i = 0; i < 5; i++) {
            buf_printf(&req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", paths[i]);
        }
    }
    /* The last one closes: everything before it must still be answered. */
    buf_printf(&req, "GET /hello HTTP/1.1\r\nHost: x\r\n"
                     "Connection: close\r\n\r\n"
                     "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    cl_send(cl, req.data, req.len);
    for (round = 0; round < 20; round++) {
        cl_response(cl, false, &r);
        assert_string_equal(r.body, "hello\n");
        resp_free(&r);
        cl_response(cl, false, &r);
        assert_int_equal(r.status, 404);
        resp_free(&r);
        cl_response(cl, false, &r);
        assert_string_equal(r.body, "ok\n");
        resp_free(&r);
        cl_response(cl, false, &r);
        assert_string_equal(r.body, "path=/echo query=1\n");
        resp_free(&r);
        cl_response(cl, false, &r);
        assert_string_equal(hdr(&r, "Content-Type"),
                            HTTP_ADMIN_METRICS_CONTENT_TYPE);
        resp_free(&r);
    }
    cl_response(cl, false, &r);
    assert_string_equal(hdr(&r, "Connection"), "close");
    resp_free(&r);
    /* The request after Connection: close is not answered. */
    cl_expect_eof(cl);
    buf_free(&req);
    cl_free(cl);
    stop(fx);
}

static void test_byte_by_byte(void **state)
{
    struct fixture *fx = start();
    struct client *cl = cl_connect(fx->port);
    const char *req = "GET /echo?x=y HTTP/1.1\r\nHost: example\r\n"
                      "User-Agent: t\r\nHost-Ish: nope\r\n\r\n";
    struct response r;
    size_t i;
    (void)state;

    for (i = 0; req[i]; i++) {
        cl_send(cl, req + i, 1);
        usleep(500); /* separate segments, separate reads */
    }
    cl_response(cl, false, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "path=/echo query=x=y\n");
    resp_free(&r);
    cl_free(cl);
    stop(fx);
}

static void expect_error_close(int port, const char *req, size_t len,
                               int status)
{
    struct client *cl = cl_connect(port);
    struct response r;

    cl_send(cl, req, len);
    cl_response(cl, false, &r);
    if (r.status != status) {
        fail_msg("want %d, got %d for: %.*s", status, r.status,
                 (int)(len < 200 ? len : 200), req);
    }
    assert_string_equal(hdr(&r, "Connection"), "close");
    resp_free(&r);
    cl_expect_eof(cl);
    cl_free(cl);
}

static void test_malformed(void **state)
{
    struct fixture *fx = start();
    static const char nul_req[] = "GET /he\0llo HTTP/1.1\r\nHost: x\r\n\r\n";
    (void)state;

#define BAD(req, status) expect_error_close(fx->port, req, strlen(req), status)
    BAD("GARBAGE\r\n\r\n", 400);
    BAD("GET /hello HTTP/1.1\r\n\r\n", 400); /* 1.1 without Host */
    BAD("GET /hello HTTP/9.9\r\nHost: x\r\n\r\n", 505);
    BAD("GET /hello HTTP/0.9\r\nHost: x\r\n\r\n", 505);
    BAD("GET /hello HTTP/1.1\r\nHost x\r\n\r\n", 400);
    BAD("GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        "Content-Length: 2\r\n\r\nab", 400);
    /* Smuggling shapes http_parser refuses. */
    BAD("GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    BAD("GET /hello HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: gzip\r\n\r\n", 400);
    BAD("GET /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "\r\nzz\r\n", 400);
    /* A good request first: answered, then the bad one closes. */
    {
        struct client *cl = cl_connect(fx->port);
        struct response r;
        cl_sends(cl, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n\x01\x02\r\n\r\n");
        cl_response(cl, false, &r);
        assert_int_equal(r.status, 200);
        resp_free(&r);
        cl_response(cl, false, &r);
        assert_int_equal(r.status, 400);
        resp_free(&r);
        cl_expect_eof(cl);
        cl_free(cl);
    }
    expect_error_close(fx->port, nul_req, sizeof(nul_req) - 1, 400);
#undef BAD
    stop(fx);
}

static void test_limits(void **state)
{
    struct fixture *fx = start();
    struct buf req;
    (void)state;

    /* Headers over 8 KiB: 431, even though more keeps coming (the server
     * must not reset the connection before we read the answer). */
    buf_init(&req);
    buf_printf(&req, "GET /hello HTTP/1.1\r\nHost: x\r\n");
    while (req.len < 64 * 1024) {
        buf_printf(&req, "X-Pad-%zu: %0100d\r\n", req.len, 0);
    }
    buf_printf(&req, "\r\n");
    expect_error_close(fx->port, req.data, req.len, 431);

    /* One huge header value. */
    buf_reset(&req);
    buf_printf(&req, "GET /hello HTTP/1.1\r\nHost: x\r\nCookie: ");
    while (req.len < 9000) {
        buf_append_str(&req, "aaaaaaaaaa");
    }
    buf_printf(&req, "\r\n\r\n");
    expect_error_close(fx->port, req.data, req.len, 431);

    /* Just under the limit is fine. */
    {
        struct client *cl = cl_connect(fx->port);
        buf_reset(&req);
        buf_printf(&req, "GET /hello HTTP/1.1\r\nHost: x\r\nCookie: ");
        while (req.len < 7000) {
            buf_append_str(&req, "aaaaaaaaaa");
        }
        buf_printf(&req, "\r\n\r\n");
        cl_send(cl, req.data, req.len);
        {
            struct response r;
            cl_response(cl, false, &r);
            assert_int_equal(r.status, 200);
            resp_free(&r);
        }
        cl_free(cl);
    }

    /* URL over 8 KiB: 414. */
    buf_reset(&req);
    buf_printf(&req, "GET /");
    while (req.len < 10000) {
        buf_append_str(&req, "bbbbbbbbbb");
    }
    buf_printf(&req, " HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_error_close(fx->port, req.data, req.len, 414);

    /* Body over the limit: 413. */
    buf_reset(&req);
    buf_printf(&req, "POST /hello HTTP/1.1\r\nHost: x\r\n"
                     "Content-Length: 100000\r\n\r\n");
    while (req.len < 100000) {
        buf_append_str(&req, "cccccccccc");
    }
    expect_error_close(fx->port, req.data, req.len, 413);
    buf_free(&req);
    stop(fx);
}

static void test_idle_timeout(void **state)
{
    struct http_admin_config cfg = {0};
    struct fixture *fx;
    struct client *cl;
    uint64_t t0, dt;
    int i;
    (void)state;

    cfg.idle_timeout_ms = 200;
    fx = start_cfg(&cfg);

    /* Connected, silent: closed after about one timeout. */
    cl = cl_connect(fx->port);
    t0 = now_ms();
    cl_expect_eof(cl);
    dt = now_ms() - t0;
    assert_true(dt >= 150 && dt < 1000);
    cl_free(cl);

    /* Idle after a response: same. */
    cl = cl_connect(fx->port);
    roundtrip(cl, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 200, "hello\n");
    t0 = now_ms();
    cl_expect_eof(cl);
    dt = now_ms() - t0;
    assert_true(dt >= 150 && dt < 1000);
    cl_free(cl);

    /* Slowloris: a byte every 20 ms does not keep the connection. */
    cl = cl_connect(fx->port);
    t0 = now_ms();
    for (i = 0; i < 100; i++) {
        if (send(cl->fd, "G", 1, MSG_NOSIGNAL) != 1) {
            break;
        }
        usleep(20000);
        {
            char c;
            ssize_t r = recv(cl->fd, &c, 1, MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN)) {
                break;
            }
        }
    }
    dt = now_ms() - t0;
    assert_true(i < 100);
    assert_true(dt < 1000);
    cl_free(cl);

    /* Steady requests are activity: 10 requests 50 ms apart (> the
     * timeout in total) all succeed on one connection. */
    cl = cl_connect(fx->port);
    for (i = 0; i < 10; i++) {
        roundtrip(cl, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 200,
                  "hello\n");
        usleep(50000);
    }
    cl_free(cl);
    stop(fx);
}

static void test_max_connections(void **state)
{
    struct http_admin_config cfg = {0};
    struct fixture *fx;
    struct client *a, *b, *c;
    struct response r;
    (void)state;

    cfg.max_connections = 2;
    fx = start_cfg(&cfg);
    a = cl_connect(fx->port);
    b = cl_connect(fx->port);
    roundtrip(a, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 200, NULL);
    roundtrip(b, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 200, NULL);
    c = cl_connect(fx->port);
    cl_response(c, false, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(hdr(&r, "Connection"), "close");
    resp_free(&r);
    cl_expect_eof(c);
    cl_free(c);
    /* A slot frees up when a client leaves. */
    cl_free(a);
    usleep(100000);
    c = cl_connect(fx->port);
    roundtrip(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 200, NULL);
    roundtrip(b, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 200, NULL);
    cl_free(b);
    cl_free(c);
    stop(fx);
}

/* A client that pipelines without reading: the server stops parsing once
 * its output buffer and the kernel buffers are full, then finishes
 * everything, in order, once the client reads. */
static void test_backpressure(void **state)
{
    enum { N = 200 };
    struct fixture *fx = start();
    struct client *cl = cl_connect_rcvbuf(fx->port, 64 * 1024);
    struct buf req;
    struct response r;
    int i, calls;
    (void)state;

    buf_init(&req);
    for (i = 0; i < N; i++) {
        buf_printf(&req, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    buf_printf(&req, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    cl_send(cl, req.data, req.len);
    usleep(300000);
    calls = __atomic_load_n(&fx->h.calls, __ATOMIC_SEQ_CST);
    /* 20 MB would be answered; kernel buffers hold a few MB at most. */
    assert_true(calls > 0 && calls < N);
    for (i = 0; i < N; i++) {
        cl_response(cl, false, &r);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, BIG_LEN);
        assert_int_equal(r.body[0], 'a');
        assert_int_equal(r.body[BIG_LEN - 1], 'a' + (BIG_LEN - 1) % 26);
        resp_free(&r);
    }
    cl_response(cl, false, &r);
    assert_string_equal(r.body, "hello\n");
    resp_free(&r);
    buf_free(&req);
    cl_free(cl);
    stop(fx);
}

static void test_half_close(void **state)
{
    struct fixture *fx = start();
    struct client *cl = cl_connect(fx->port);
    struct response r;
    (void)state;

    cl_sends(cl, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                 "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    shutdown(cl->fd, SHUT_WR);
    cl_response(cl, false, &r);
    assert_string_equal(r.body, "hello\n");
    resp_free(&r);
    cl_response(cl, false, &r);
    assert_string_equal(r.body, "ok\n");
    resp_free(&r);
    cl_expect_eof(cl);
    cl_free(cl);
    stop(fx);
}

/* Closing the server with connections in every state frees everything
 * (ASan/LSan would report otherwise) and closes every handle. */
static void test_close_with_connections(void **state)
{
    struct fixture *fx = start();
    struct client *idle = cl_connect(fx->port);
    struct client *partial = cl_connect(fx->port);
    struct client *blocked = cl_connect_rcvbuf(fx->port, 64 * 1024);
    struct client *draining = cl_connect(fx->port);
    struct response r;
    struct buf req;
    int i;
    (void)state;

    roundtrip(idle, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 200, NULL);
    cl_sends(partial, "GET /hello HTTP/1.1\r\nHo");
    buf_init(&req);
    for (i = 0; i < 100; i++) {
        buf_printf(&req, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    cl_send(blocked, req.data, req.len);
    buf_free(&req);
    /* 400 written, lingering until our EOF. */
    cl_sends(draining, "BAD\r\n\r\n");
    cl_response(draining, false, &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    usleep(100000);

    stop(fx);
    cl_expect_eof(idle);
    cl_free(idle);
    cl_free(partial);
    cl_free(blocked);
    cl_free(draining);
}

static void test_metrics_http(void **state)
{
    struct fixture *fx = start();
    struct client *cl = cl_connect(fx->port);
    struct response r;
    (void)state;

    cl_sends(cl, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    cl_response(cl, false, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(hdr(&r, "Content-Type"),
                        "text/plain; version=0.0.4; charset=utf-8");
    assert_string_equal(r.body, "# HELP ringmq_up 1 when serving.\n"
                                "# TYPE ringmq_up gauge\n"
                                "ringmq_up 1\n");
    resp_free(&r);
    cl_free(cl);
    stop(fx);
}

/* ---- API edges --------------------------------------------------------- */

static void test_config_and_routes(void **state)
{
    uv_loop_t loop;
    struct http_admin_config cfg = {0};
    struct http_admin *a, *b;
    struct handlers h = {0};
    char errmsg[256];
    (void)state;

    assert_int_equal(uv_loop_init(&loop), 0);
    cfg.host = "not-an-ip";
    assert_null(http_admin_new(&loop, &cfg, errmsg, sizeof(errmsg)));
    assert_non_null(strstr(errmsg, "bad address"));
    cfg.host = "127.0.0.1";
    cfg.port = 70000;
    assert_null(http_admin_new(&loop, &cfg, errmsg, sizeof(errmsg)));
    cfg.port = 0;
    a = http_admin_new(&loop, &cfg, errmsg, sizeof(errmsg));
    assert_non_null(a);
    /* The port is taken: NULL, and the loop releases what was made. */
    cfg.port = http_admin_port(a);
    b = http_admin_new(&loop, &cfg, errmsg, sizeof(errmsg));
    assert_null(b);
    assert_non_null(strstr(errmsg, "listen"));

    assert_int_equal(http_admin_route(a, "/x", h_hello, &h), 0);
    assert_int_equal(http_admin_route(a, "/x", h_hello, &h), -EEXIST);
    assert_int_equal(http_admin_route(a, "x", h_hello, &h), -EINVAL);
    assert_int_equal(http_admin_route(a, "/y", NULL, &h), -EINVAL);
    {
        char p[16];
        int i, rc = 0;
        for (i = 0; i < HTTP_ADMIN_MAX_ROUTES + 1 && rc == 0; i++) {
            snprintf(p, sizeof(p), "/r%d", i);
            rc = http_admin_route(a, p, h_hello, &h);
        }
        assert_int_equal(rc, -ENOSPC);
    }
    http_admin_close(a, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- engine without sockets -------------------------------------------- */

struct engine {
    uv_loop_t loop;
    struct http_admin *a;
    struct handlers h;
};

static int engine_setup(void **state)
{
    struct engine *e = calloc(1, sizeof(*e));
    struct http_admin_config cfg = {0};
    char errmsg[256];

    e->h.healthy = 1;
    uv_loop_init(&e->loop);
    e->a = http_admin_new(&e->loop, &cfg, errmsg, sizeof(errmsg));
    assert_non_null(e->a);
    add_routes(e->a, &e->h);
    *state = e;
    return 0;
}

static int engine_teardown(void **state)
{
    struct engine *e = *state;
    http_admin_close(e->a, NULL, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    free(e);
    return 0;
}

/* Feed @in in every chunk size 1..len and check the output is the same. */
static char *feed_all_chunkings(struct engine *e, const char *in, int *closed)
{
    struct buf ref, out;
    size_t chunk, len = strlen(in);
    int c0;

    buf_init(&ref);
    c0 = http_admin__feed(e->a, in, len, 0, &ref);
    for (chunk = 1; chunk <= len; chunk++) {
        buf_init(&out);
        assert_int_equal(http_admin__feed(e->a, in, len, chunk, &out), c0);
        assert_int_equal(out.len, ref.len);
        assert_memory_equal(out.data, ref.data, ref.len);
        buf_free(&out);
    }
    buf_append(&ref, "", 1);
    *closed = c0;
    return ref.data;
}

static void test_engine_exact(void **state)
{
    struct engine *e = *state;
    int closed;
    char *out;

    out = feed_all_chunkings(e,
                             "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                             "HEAD /nope HTTP/1.1\r\nhOsT: x\r\n\r\n"
                             "PUT /hello HTTP/1.1\r\nHost: x\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n"
                             "3\r\nabc\r\n0\r\n\r\n"
                             "GET /hello HTTP/1.0\r\n\r\n"
                             "GET /never HTTP/1.1\r\nHost: x\r\n\r\n",
                             &closed);
    assert_int_equal(closed, 1);
    assert_string_equal(out,
                        "HTTP/1.1 200 OK\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: 6\r\n"
                        "Cache-Control: no-store\r\n"
                        "\r\n"
                        "hello\n"
                        "HTTP/1.1 404 Not Found\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: 10\r\n"
                        "Cache-Control: no-store\r\n"
                        "\r\n"
                        "HTTP/1.1 405 Method Not Allowed\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: 19\r\n"
                        "Cache-Control: no-store\r\n"
                        "Allow: GET, HEAD\r\n"
                        "\r\n"
                        "Method Not Allowed\n"
                        "HTTP/1.1 200 OK\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: 6\r\n"
                        "Cache-Control: no-store\r\n"
                        "Connection: close\r\n"
                        "\r\n"
                        "hello\n");
    free(out);

    /* Still open after complete requests; a partial one is not answered. */
    out = feed_all_chunkings(e, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                "GET /hello HTTP/1.1\r\nHost:",
                             &closed);
    assert_int_equal(closed, 0);
    assert_non_null(strstr(out, "\r\n\r\nok\n"));
    assert_null(strstr(out, "hello"));
    free(out);

    /* An upgrade is not followed: answered, then closed. */
    out = feed_all_chunkings(e, "GET /hello HTTP/1.1\r\nHost: x\r\n"
                                "Upgrade: websocket\r\n"
                                "Connection: Upgrade\r\n\r\n"
                                "\x81\x05hello",
                             &closed);
    assert_int_equal(closed, 1);
    assert_non_null(strstr(out, "Connection: close\r\n\r\nhello\n"));
    free(out);

    out = feed_all_chunkings(e, "CONNECT example.com:443 HTTP/1.1\r\n"
                                "Host: x\r\n\r\nxx",
                             &closed);
    assert_int_equal(closed, 1);
    assert_non_null(strstr(out, "405 Method Not Allowed"));
    free(out);
}

static void test_engine_garbage(void **state)
{
    struct engine *e = *state;
    static const char *inputs[] = {
        "\r\n\r\n\r\n",
        "GET\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n\0\0\0",
        "GET / HTTP/1.1\nHost: x\n\n",
        "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        "get / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        ("GET / HTTP/1.1\r\nHost: x\r\n"
         "Content-Length: 99999999999999999999999\r\n\r\n"),
        "GET / HTTP/1.1\r\n Host: x\r\n\r\n",
    };
    size_t i;

    for (i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        struct buf out;
        size_t len = strlen(inputs[i]);
        int closed;
        if (i == 2) {
            len += 3;
        }
        buf_init(&out);
        closed = http_admin__feed(e->a, inputs[i], len, 1, &out);
        buf_append(&out, "", 1);
        /* Whatever it is: well-framed, and never a crash. */
        assert_true(out.len == 1 || strncmp(out.data, "HTTP/1.1 ", 9) == 0);
        (void)closed;
        buf_free(&out);
    }
}

/* ---- Prometheus builder ------------------------------------------------ */

static void test_metrics_format(void **state)
{
    struct buf out;
    struct http_admin_metrics m;
    (void)state;

    buf_init(&out);
    http_admin_metrics_init(&m, &out);
    assert_int_equal(http_admin_metric(&m, "ringmq_gets_total", "counter",
                                       "Get commands.\nPer \\shard.",
                                       (const char *[]){"shard", "a", NULL},
                                       42),
                     0);
    assert_int_equal(
        http_admin_metric(&m, "ringmq_gets_total", "counter", "ignored",
                          (const char *[]){"shard", "b\"\\\nc", "node",
                                           "n1", NULL},
                          1e15),
        0);
    assert_int_equal(http_admin_metric(&m, "ringmq:lag_seconds", "gauge",
                                       "", NULL, 0.25),
                     0);
    assert_int_equal(http_admin_metric(&m, "x", "untyped", "h", NULL, -3), 0);
    assert_int_equal(http_admin_metric(&m, "x", "untyped", "h", NULL, NAN), 0);
    assert_int_equal(http_admin_metric(&m, "y", "gauge", "h",
                                       (const char *[]){NULL}, INFINITY),
                     0);
    assert_int_equal(http_admin_metric(&m, "y", "gauge", "h", NULL,
                                       -INFINITY),
                     0);
    assert_int_equal(http_admin_metric(&m, "z", "gauge", "h", NULL, 1e300),
                     0);
    assert_int_equal(http_admin_metric(&m, "z", "gauge", "h", NULL, 0.1),
                     0);
    /* Seen before, not contiguous: no second HELP/TYPE. */
    assert_int_equal(http_admin_metric(&m, "x", "untyped", "h", NULL, 7), 0);

    /* Refused, nothing appended. */
    {
        size_t before = out.len;
        assert_int_equal(http_admin_metric(&m, "1abc", "gauge", "", NULL, 1),
                         -EINVAL);
        assert_int_equal(http_admin_metric(&m, "a-b", "gauge", "", NULL, 1),
                         -EINVAL);
        assert_int_equal(http_admin_metric(&m, "", "gauge", "", NULL, 1),
                         -EINVAL);
        assert_int_equal(http_admin_metric(&m, "ok", "histogram", "", NULL,
                                           1),
                         -EINVAL);
        assert_int_equal(http_admin_metric(&m, "ok", "gauge", "",
                                           (const char *[]){"a:b", "v",
                                                            NULL},
                                           1),
                         -EINVAL);
        assert_int_equal(http_admin_metric(&m, "ok", "gauge", "",
                                           (const char *[]){"__name__", "v",
                                                            NULL},
                                           1),
                         -EINVAL);
        assert_int_equal(http_admin_metric(&m, "ok", "gauge", "",
                                           (const char *[]){"a", NULL}, 1),
                         -EINVAL);
        assert_int_equal(out.len, before);
    }
    http_admin_metrics_free(&m);
    buf_append(&out, "", 1);
    assert_string_equal(out.data,
                        "# HELP ringmq_gets_total Get commands.\\nPer "
                        "\\\\shard.\n"
                        "# TYPE ringmq_gets_total counter\n"
                        "ringmq_gets_total{shard=\"a\"} 42\n"
                        "ringmq_gets_total{shard=\"b\\\"\\\\\\nc\",node=\"n1\"}"
                        " 1000000000000000\n"
                        "# HELP ringmq:lag_seconds \n"
                        "# TYPE ringmq:lag_seconds gauge\n"
                        "ringmq:lag_seconds 0.25\n"
                        "# HELP x h\n"
                        "# TYPE x untyped\n"
                        "x -3\n"
                        "x NaN\n"
                        "# HELP y h\n"
                        "# TYPE y gauge\n"
                        "y +Inf\n"
                        "y -Inf\n"
                        "# HELP z h\n"
                        "# TYPE z gauge\n"
                        "z 1e+300\n"
                        "z 0.1\n"
                        "x 7\n");
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_status_codes),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_half_close),
        cmocka_unit_test(test_close_with_connections),
        cmocka_unit_test(test_metrics_http),
        cmocka_unit_test(test_config_and_routes),
        cmocka_unit_test_setup_teardown(test_engine_exact, engine_setup,
                                        engine_teardown),
        cmocka_unit_test_setup_teardown(test_engine_garbage, engine_setup,
                                        engine_teardown),
        cmocka_unit_test(test_metrics_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
