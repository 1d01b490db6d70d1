/*
 * The AMQP edge (edge/amqp_server, amqp_conn, amqp_channel) against the
 * fake broker, driven by a raw-frame client built on our codec.
 *
 * `test_amqp_edge --serve PORT` runs the edge on the fake broker until
 * killed, for trying real clients (pika) by hand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <uv.h>

#include "common/buf.h"
#include "common/clock.h"
#include "edge/amqp_edge.h"
#include "tests/unit/lib/fake_broker.h"
#include "proto/amqp_frame.h"
#include "proto/amqp_method.h"
#include "edge/amqp_server.h"

static int serve(int port)
{
    uv_loop_t loop;
    struct fake_broker *fb;
    struct amqp_broker b;
    struct amqp_server_config cfg;
    struct amqp_server *srv;
    char err[256];

    uv_loop_init(&loop);
    fb = fake_broker_new(&loop, 2);
    b = fake_broker_table(fb);
    memset(&cfg, 0, sizeof(cfg));
    cfg.host = "127.0.0.1";
    cfg.port = port;
    cfg.router_id = 42;
    srv = amqp_server_new(&loop, &cfg, &b, err, sizeof(err));
    if (srv == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    fprintf(stderr, "serving AMQP on 127.0.0.1:%d\n", amqp_server_port(srv));
    uv_run(&loop, UV_RUN_DEFAULT);
    return 0;
}

/* ---- fixture: the edge on the fake broker, in a loop thread ---------- */

struct fixture {
    uv_loop_t loop;
    uv_async_t stop;
    pthread_t thread;
    struct fake_broker *fb;
    struct amqp_server *srv;
    int port;
    int closed;
    int open_fd; /* a client left connected through teardown, or 0 */
};

static void on_server_closed(void *data)
{
    struct fixture *fx = data;

    fx->closed = 1;
    fake_broker_free(fx->fb);
    uv_close((uv_handle_t *)&fx->stop, NULL);
}

/* The broker goes first: a CHECKOUT it holds would keep the closing edge
 * waiting until the long poll ends (10 s). */
static void on_stop(uv_async_t *as)
{
    struct fixture *fx = as->data;

    fake_broker_close(fx->fb);
    amqp_server_close(fx->srv, on_server_closed, fx);
}

static void *loop_main(void *arg)
{
    struct fixture *fx = arg;

    uv_run(&fx->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int setup_edge(void **state, unsigned tick_ms, unsigned route_wait_ms)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    struct amqp_server_config cfg;
    struct amqp_broker b;
    char err[256];

    assert_int_equal(uv_loop_init(&fx->loop), 0);
    assert_int_equal(uv_async_init(&fx->loop, &fx->stop, on_stop), 0);
    fx->stop.data = fx;
    fx->fb = fake_broker_new(&fx->loop, 2);
    b = fake_broker_table(fx->fb);
    memset(&cfg, 0, sizeof(cfg));
    cfg.host = "127.0.0.1";
    cfg.router_id = 7;
    cfg.frame_max = 8192;
    cfg.tick_ms = tick_ms;
    cfg.route_wait_ms = route_wait_ms;
    fx->srv = amqp_server_new(&fx->loop, &cfg, &b, err, sizeof(err));
    if (fx->srv == NULL) {
        fail_msg("amqp_server_new: %s", err);
    }
    fx->port = amqp_server_port(fx->srv);
    assert_int_equal(pthread_create(&fx->thread, NULL, loop_main, fx), 0);
    *state = fx;
    return 0;
}

static int setup_tick(void **state, unsigned tick_ms)
{
    return setup_edge(state, tick_ms, 0);
}

static int setup(void **state)
{
    return setup_tick(state, 50);
}

/* Publishes wait 500 ms for a routable view. */
static int setup_route_wait(void **state)
{
    return setup_edge(state, 50, 500);
}

/* A tick that never comes within a test: what the edge does without it. */
static int setup_no_tick(void **state)
{
    return setup_tick(state, 600 * 1000);
}

static int teardown(void **state)
{
    struct fixture *fx = *state;

    uv_async_send(&fx->stop);
    assert_int_equal(pthread_join(fx->thread, NULL), 0);
    assert_true(fx->closed);
    /* Every handle (listener, timers, connections) was closed. */
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    if (fx->open_fd > 0) {
        close(fx->open_fd);
    }
    free(fx);
    return 0;
}

/* ---- a blocking raw-frame client ---------------------------------------- */

struct client {
    int fd;
    struct amqp_frame_decoder dec;
    uint8_t in[65536];
    size_t in_len;
    size_t in_off;
    /* the last frame read; payload copied */
    uint8_t type;
    uint16_t channel;
    uint8_t payload[65536];
    size_t size;
};

static void cl_connect(struct client *c, int port)
{
    struct sockaddr_in a;
    struct timeval tv = {.tv_sec = 5};

    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    amqp_frame_decoder_init(&c->dec, 1 << 20);
}

static void cl_close(struct client *c)
{
    close(c->fd);
    amqp_frame_decoder_close(&c->dec);
}

static void cl_send(struct client *c, const void *data, size_t len)
{
    assert_int_equal(send(c->fd, data, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void cl_send_buf(struct client *c, struct buf *b)
{
    cl_send(c, b->data, b->len);
    buf_free(b);
}

/* Read raw bytes; 0 at EOF. */
static size_t cl_read_raw(struct client *c, void *out, size_t cap)
{
    ssize_t n = recv(c->fd, out, cap, 0);

    assert_true(n >= 0);
    return (size_t)n;
}

/* Next frame other than a heartbeat; false at EOF. */
static bool cl_frame(struct client *c)
{
    for (;;) {
        struct amqp_frame f;
        size_t used = 0;
        int rv;

        if (c->in_off == c->in_len) {
            ssize_t n = recv(c->fd, c->in, sizeof(c->in), 0);

            if (n <= 0) {
                return false;
            }
            c->in_len = (size_t)n;
            c->in_off = 0;
        }
        rv = amqp_frame_decoder_feed(&c->dec, c->in + c->in_off,
                                     c->in_len - c->in_off, &used, &f);
        c->in_off += used;
        assert_true(rv >= 0);
        if (rv == 1 && f.type != AMQP_FRAME_HEARTBEAT) {
            c->type = f.type;
            c->channel = f.channel;
            c->size = f.size;
            memcpy(c->payload, f.payload, f.size);
            return true;
        }
    }
}

/* Read the next frame: a method with @id, decoded into @m (free it). */
static void cl_expect(struct client *c, uint32_t id, struct amqp_method *m)
{
    assert_true(cl_frame(c));
    assert_int_equal(c->type, AMQP_FRAME_METHOD);
    assert_int_equal(amqp_method_decode(c->payload, c->size, m), 0);
    if (m->id != id) {
        fail_msg("got %s, want %s", amqp_method_name(m->id),
                 amqp_method_name(id));
    }
}

static void cl_expect_free(struct client *c, uint32_t id)
{
    struct amqp_method m;

    cl_expect(c, id, &m);
    amqp_method_free(&m);
}

/* Nothing arrives for @ms. */
/* basic.ack (or nack) of @tag, not multiple. */
static void cl_expect_confirm(struct client *c, uint32_t id, uint64_t tag)
{
    struct amqp_method m;

    cl_expect(c, id, &m);
    if (id == AMQP_BASIC_ACK) {
        assert_int_equal(m.basic_ack.delivery_tag, tag);
        assert_false(m.basic_ack.multiple);
    } else {
        assert_int_equal(m.basic_nack.delivery_tag, tag);
        assert_false(m.basic_nack.multiple);
    }
    amqp_method_free(&m);
}

static void cl_expect_ack(struct client *c, uint64_t tag)
{
    cl_expect_confirm(c, AMQP_BASIC_ACK, tag);
}

static void cl_expect_nack(struct client *c, uint64_t tag)
{
    cl_expect_confirm(c, AMQP_BASIC_NACK, tag);
}

static void cl_quiet(struct client *c, int ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};

    assert_int_equal(c->in_off, c->in_len);
    assert_int_equal(poll(&p, 1, ms), 0);
}

static void cl_method(struct client *c, uint16_t channel,
                      const struct amqp_method *m)
{
    struct buf b;

    buf_init(&b);
    assert_int_equal(amqp_method_encode(&b, channel, m, 0), 0);
    cl_send_buf(c, &b);
}

static void cl_simple(struct client *c, uint16_t channel, uint32_t id)
{
    struct amqp_method m;

    amqp_method_init(&m, id);
    cl_method(c, channel, &m);
}

/* Protocol header, PLAIN guest/guest (announcing the connection.blocked
 * capability if @blocked_cap), tune-ok, open. */
static void cl_handshake_caps(struct client *c, int port, bool blocked_cap)
{
    struct amqp_method m;
    static const char plain[] = "\0guest\0guest";
    struct amqp_table *props = amqp_table_new();

    cl_connect(c, port);
    cl_send(c, AMQP_PROTOCOL_HEADER, AMQP_PROTOCOL_HEADER_SIZE);
    cl_expect(c, AMQP_CONNECTION_START, &m);
    assert_non_null(amqp_table_get(m.connection_start.server_properties,
                                   "capabilities"));
    amqp_method_free(&m);
    if (blocked_cap) {
        amqp_table_add_bool(amqp_table_add_table(props, "capabilities"),
                            "connection.blocked", 1);
    }
    amqp_method_init(&m, AMQP_CONNECTION_START_OK);
    m.connection_start_ok.client_properties = props;
    m.connection_start_ok.mechanism = amqp_cstr("PLAIN");
    m.connection_start_ok.response.data = (const uint8_t *)plain;
    m.connection_start_ok.response.len = sizeof(plain) - 1;
    m.connection_start_ok.locale = amqp_cstr("en_US");
    cl_method(c, 0, &m);
    amqp_table_free(props);
    cl_expect(c, AMQP_CONNECTION_TUNE, &m);
    assert_int_equal(m.connection_tune.frame_max, 8192);
    amqp_method_free(&m);
    amqp_method_init(&m, AMQP_CONNECTION_TUNE_OK);
    m.connection_tune_ok.channel_max = 16;
    m.connection_tune_ok.frame_max = 8192;
    cl_method(c, 0, &m);
    amqp_method_init(&m, AMQP_CONNECTION_OPEN);
    m.connection_open.virtual_host = amqp_cstr("/");
    cl_method(c, 0, &m);
    cl_expect_free(c, AMQP_CONNECTION_OPEN_OK);
    cl_simple(c, 1, AMQP_CHANNEL_OPEN);
    cl_expect_free(c, AMQP_CHANNEL_OPEN_OK);
}

static void cl_handshake(struct client *c, int port)
{
    cl_handshake_caps(c, port, false);
}

/* connection.close with @code is the next frame, then EOF after close-ok. */
static void cl_expect_conn_close(struct client *c, uint16_t code)
{
    struct amqp_method m;

    cl_expect(c, AMQP_CONNECTION_CLOSE, &m);
    assert_int_equal(m.connection_close.reply_code, code);
    amqp_method_free(&m);
    cl_simple(c, 0, AMQP_CONNECTION_CLOSE_OK);
    assert_false(cl_frame(c));
}

static void cl_declare(struct client *c, const char *q)
{
    struct amqp_method m;

    amqp_method_init(&m, AMQP_QUEUE_DECLARE);
    m.queue_declare.queue = amqp_cstr(q);
    cl_method(c, 1, &m);
    cl_expect(c, AMQP_QUEUE_DECLARE_OK, &m);
    amqp_method_free(&m);
}

static void cl_publish(struct client *c, const char *exchange, const char *rk,
                       const char *body, bool mandatory)
{
    struct amqp_method m;
    struct amqp_content_header h;
    struct buf b;

    buf_init(&b);
    amqp_method_init(&m, AMQP_BASIC_PUBLISH);
    m.basic_publish.exchange = amqp_cstr(exchange);
    m.basic_publish.routing_key = amqp_cstr(rk);
    m.basic_publish.mandatory = mandatory;
    assert_int_equal(amqp_method_encode(&b, 1, &m, 0), 0);
    memset(&h, 0, sizeof(h));
    h.class_id = AMQP_CLASS_BASIC;
    h.body_size = strlen(body);
    h.props.flags = AMQP_BASIC_DELIVERY_MODE;
    h.props.delivery_mode = 2;
    assert_int_equal(amqp_content_header_encode(&b, 1, &h, 0), 0);
    amqp_frame_encode_body(&b, 1, body, strlen(body), 8192);
    cl_send_buf(c, &b);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_protocol_header_mismatch(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    char got[16];

    cl_connect(&c, fx->port);
    cl_send(&c, "AMQP\x01\x01\x00\x09", 8);
    assert_int_equal(cl_read_raw(&c, got, sizeof(got)), 8);
    assert_memory_equal(got, AMQP_PROTOCOL_HEADER, 8);
    assert_int_equal(cl_read_raw(&c, got, sizeof(got)), 0);
    cl_close(&c);
    /* HTTP on the AMQP port: the same answer */
    cl_connect(&c, fx->port);
    cl_send(&c, "GET / HTTP/1.1\r\n\r\n", 18);
    assert_int_equal(cl_read_raw(&c, got, sizeof(got)), 8);
    cl_close(&c);
}

static void test_auth_failure(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    struct amqp_method m;
    static const char plain[] = "\0guest\0wrong";

    cl_connect(&c, fx->port);
    cl_send(&c, AMQP_PROTOCOL_HEADER, AMQP_PROTOCOL_HEADER_SIZE);
    cl_expect_free(&c, AMQP_CONNECTION_START);
    amqp_method_init(&m, AMQP_CONNECTION_START_OK);
    m.connection_start_ok.mechanism = amqp_cstr("PLAIN");
    m.connection_start_ok.response.data = (const uint8_t *)plain;
    m.connection_start_ok.response.len = sizeof(plain) - 1;
    cl_method(&c, 0, &m);
    cl_expect_conn_close(&c, 403);
    cl_close(&c);
}

static void test_publish_get_ack(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    struct amqp_method m;

    cl_handshake(&c, fx->port);
    cl_declare(&c, "q1");
    cl_simple(&c, 1, AMQP_CONFIRM_SELECT);
    cl_expect_free(&c, AMQP_CONFIRM_SELECT_OK);
    /* a body larger than a frame: split by the client, joined by us */
    {
        char big[20000];

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        cl_publish(&c, "", "q1", big, false);
    }
    cl_expect_ack(&c, 1);
    /* mandatory and unroutable: basic.return, then the confirm */
    cl_publish(&c, "", "nowhere", "lost", true);
    cl_expect(&c, AMQP_BASIC_RETURN, &m);
    assert_int_equal(m.basic_return.reply_code, 312);
    amqp_method_free(&m);
    assert_true(cl_frame(&c));
    assert_int_equal(c.type, AMQP_FRAME_HEADER);
    assert_true(cl_frame(&c));
    assert_int_equal(c.type, AMQP_FRAME_BODY);
    assert_memory_equal(c.payload, "lost", 4);
    cl_expect_ack(&c, 2);

    amqp_method_init(&m, AMQP_BASIC_GET);
    m.basic_get.queue = amqp_cstr("q1");
    cl_method(&c, 1, &m);
    cl_expect(&c, AMQP_BASIC_GET_OK, &m);
    assert_int_equal(m.basic_get_ok.delivery_tag, 1);
    assert_false(m.basic_get_ok.redelivered);
    amqp_method_free(&m);
    {
        size_t got = 0;

        assert_true(cl_frame(&c));
        assert_int_equal(c.type, AMQP_FRAME_HEADER);
        while (got < 19999) {
            assert_true(cl_frame(&c));
            assert_int_equal(c.type, AMQP_FRAME_BODY);
            assert_true(c.size <= 8192 - 8);
            got += c.size;
        }
        assert_int_equal(got, 19999);
    }
    /* an unknown tag is a channel error 406; the connection lives */
    amqp_method_init(&m, AMQP_BASIC_ACK);
    m.basic_ack.delivery_tag = 99;
    cl_method(&c, 1, &m);
    cl_expect(&c, AMQP_CHANNEL_CLOSE, &m);
    assert_int_equal(m.channel_close.reply_code, 406);
    amqp_method_free(&m);
    cl_simple(&c, 1, AMQP_CHANNEL_CLOSE_OK);
    /* the unacked message went back with the channel */
    cl_simple(&c, 2, AMQP_CHANNEL_OPEN);
    cl_expect_free(&c, AMQP_CHANNEL_OPEN_OK);
    amqp_method_init(&m, AMQP_BASIC_GET);
    m.basic_get.queue = amqp_cstr("q1");
    m.basic_get.no_ack = true;
    cl_method(&c, 2, &m);
    cl_expect(&c, AMQP_BASIC_GET_OK, &m);
    assert_true(m.basic_get_ok.redelivered);
    amqp_method_free(&m);
    cl_close(&c);
}

/* Bad frames: the spec's connection.close code, and the server lives. */
static void test_bad_frames(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    struct buf b;
    static const uint8_t bad_end[] = {1, 0, 1, 0, 0, 0, 4, 0, 20, 0, 10, 0};
    static const uint8_t unknown[] = {1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, 0xCE};
    static const uint8_t huge[] = {1, 0, 1, 0, 1, 0, 0};
    static const uint8_t body[] = {3, 0, 1, 0, 0, 0, 1, 'x', 0xCE};

    cl_handshake(&c, fx->port);
    cl_send(&c, bad_end, sizeof(bad_end));
    cl_expect_conn_close(&c, 501);
    cl_close(&c);

    cl_handshake(&c, fx->port);
    cl_send(&c, unknown, sizeof(unknown));
    cl_expect_conn_close(&c, 540);
    cl_close(&c);

    cl_handshake(&c, fx->port);
    cl_send(&c, huge, sizeof(huge));
    cl_expect_conn_close(&c, 501);
    cl_close(&c);

    cl_handshake(&c, fx->port);
    cl_send(&c, body, sizeof(body));
    cl_expect_conn_close(&c, 505);
    cl_close(&c);

    /* a method on a channel that was never opened */
    cl_handshake(&c, fx->port);
    buf_init(&b);
    {
        struct amqp_method m;

        amqp_method_init(&m, AMQP_QUEUE_DECLARE);
        m.queue_declare.queue = amqp_cstr("x");
        assert_int_equal(amqp_method_encode(&b, 5, &m, 0), 0);
    }
    cl_send_buf(&c, &b);
    cl_expect_conn_close(&c, 504);
    cl_close(&c);

    /* a bad field table type in queue.declare's arguments */
    cl_handshake(&c, fx->port);
    {
        /* class 50 method 10, ticket, "x", bits, table {k: type '!'} */
        static const uint8_t p[] = {0, 50, 0, 10, 0, 0, 1, 'x', 0,
                                    0, 0, 0, 4, 1, 'k', '!', 0};
        struct buf fb;

        buf_init(&fb);
        assert_int_equal(
            amqp_frame_encode(&fb, AMQP_FRAME_METHOD, 1, p, sizeof(p), 0), 0);
        cl_send_buf(&c, &fb);
    }
    cl_expect_conn_close(&c, 502);
    cl_close(&c);

    /* still serving */
    cl_handshake(&c, fx->port);
    cl_declare(&c, "alive");
    cl_close(&c);
}

/* A consumer gets pushed deliveries; prefetch 1 holds the second until the
 * first is acked; closing the connection returns the unacked one. */
static void test_consume_prefetch(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    struct client p;
    struct amqp_method m;

    cl_handshake(&p, fx->port);
    cl_declare(&p, "work");
    cl_publish(&p, "", "work", "one", false);
    cl_publish(&p, "", "work", "two", false);
    /* Publishes without confirms are answered by nothing: a passive
     * declare on the same channel, ordered after them, says both are
     * stored before the consumer's connection looks (its own declare
     * below could otherwise overtake "two" on the way in). */
    amqp_method_init(&m, AMQP_QUEUE_DECLARE);
    m.queue_declare.queue = amqp_cstr("work");
    m.queue_declare.passive = true;
    cl_method(&p, 1, &m);
    cl_expect(&p, AMQP_QUEUE_DECLARE_OK, &m);
    assert_int_equal(m.queue_declare_ok.message_count, 2);
    amqp_method_free(&m);

    cl_handshake(&c, fx->port);
    amqp_method_init(&m, AMQP_BASIC_QOS);
    m.basic_qos.prefetch_count = 1;
    cl_method(&c, 1, &m);
    cl_expect_free(&c, AMQP_BASIC_QOS_OK);
    amqp_method_init(&m, AMQP_BASIC_CONSUME);
    m.basic_consume.queue = amqp_cstr("work");
    m.basic_consume.consumer_tag = amqp_cstr("ct");
    cl_method(&c, 1, &m);
    cl_expect_free(&c, AMQP_BASIC_CONSUME_OK);
    cl_expect(&c, AMQP_BASIC_DELIVER, &m);
    assert_int_equal(m.basic_deliver.delivery_tag, 1);
    assert_true(amqp_bytes_eq(m.basic_deliver.consumer_tag, "ct"));
    amqp_method_free(&m);
    assert_true(cl_frame(&c)); /* header */
    assert_true(cl_frame(&c)); /* body */
    assert_memory_equal(c.payload, "one", 3);
    /* nothing more until the ack: a passive declare answers first */
    amqp_method_init(&m, AMQP_QUEUE_DECLARE);
    m.queue_declare.queue = amqp_cstr("work");
    m.queue_declare.passive = true;
    cl_method(&c, 1, &m);
    cl_expect(&c, AMQP_QUEUE_DECLARE_OK, &m);
    assert_int_equal(m.queue_declare_ok.message_count, 1);
    assert_int_equal(m.queue_declare_ok.consumer_count, 1);
    amqp_method_free(&m);
    amqp_method_init(&m, AMQP_BASIC_ACK);
    m.basic_ack.delivery_tag = 1;
    cl_method(&c, 1, &m);
    cl_expect(&c, AMQP_BASIC_DELIVER, &m);
    assert_int_equal(m.basic_deliver.delivery_tag, 2);
    assert_false(m.basic_deliver.redelivered);
    amqp_method_free(&m);
    assert_true(cl_frame(&c));
    assert_true(cl_frame(&c));
    assert_memory_equal(c.payload, "two", 3);
    cl_close(&c); /* "two" unacked: returned */

    amqp_method_init(&m, AMQP_BASIC_CONSUME);
    m.basic_consume.queue = amqp_cstr("work");
    m.basic_consume.no_ack = true;
    cl_method(&p, 1, &m);
    cl_expect_free(&p, AMQP_BASIC_CONSUME_OK);
    cl_expect(&p, AMQP_BASIC_DELIVER, &m);
    assert_true(m.basic_deliver.redelivered);
    amqp_method_free(&m);
    assert_true(cl_frame(&p));
    assert_true(cl_frame(&p));
    assert_memory_equal(p.payload, "two", 3);
    cl_close(&p);
}

/* Acks of one read are batched: all take effect (nothing comes back when
 * the channel closes), and a tag acked twice in the same read is still
 * the 406 RabbitMQ gives. */
static void test_acks_batched(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    struct amqp_method m;
    struct buf b;
    int i;

    cl_handshake(&c, fx->port);
    cl_declare(&c, "ab");
    for (i = 0; i < 5; i++) {
        cl_publish(&c, "", "ab", "x", false);
    }
    amqp_method_init(&m, AMQP_BASIC_CONSUME);
    m.basic_consume.queue = amqp_cstr("ab");
    cl_method(&c, 1, &m);
    cl_expect_free(&c, AMQP_BASIC_CONSUME_OK);
    for (i = 0; i < 5; i++) {
        cl_expect_free(&c, AMQP_BASIC_DELIVER);
        assert_true(cl_frame(&c));
        assert_true(cl_frame(&c));
    }
    /* acks 1, 3, 2, 5 in one write; 4 stays unacked */
    buf_init(&b);
    {
        static const uint64_t tags[] = {1, 3, 2, 5};
        size_t t;

        for (t = 0; t < 4; t++) {
            amqp_method_init(&m, AMQP_BASIC_ACK);
            m.basic_ack.delivery_tag = tags[t];
            assert_int_equal(amqp_method_encode(&b, 1, &m, 0), 0);
        }
    }
    amqp_method_init(&m, AMQP_BASIC_CANCEL);
    m.basic_cancel.consumer_tag = amqp_cstr("");
    cl_send_buf(&c, &b);
    /* close the channel: only 4 goes back */
    cl_simple(&c, 1, AMQP_CHANNEL_CLOSE);
    for (;;) {
        assert_true(cl_frame(&c));
        if (c.type == AMQP_FRAME_METHOD &&
            amqp_method_decode(c.payload, c.size, &m) == 0) {
            uint32_t id = m.id;

            amqp_method_free(&m);
            if (id == AMQP_CHANNEL_CLOSE_OK) {
                break;
            }
        }
    }
    cl_simple(&c, 2, AMQP_CHANNEL_OPEN);
    cl_expect_free(&c, AMQP_CHANNEL_OPEN_OK);
    amqp_method_init(&m, AMQP_QUEUE_DECLARE);
    m.queue_declare.queue = amqp_cstr("ab");
    m.queue_declare.passive = true;
    cl_method(&c, 2, &m);
    cl_expect(&c, AMQP_QUEUE_DECLARE_OK, &m);
    assert_int_equal(m.queue_declare_ok.message_count, 1);
    amqp_method_free(&m);

    /* a double ack in one read */
    amqp_method_init(&m, AMQP_BASIC_GET);
    m.basic_get.queue = amqp_cstr("ab");
    cl_method(&c, 2, &m);
    cl_expect(&c, AMQP_BASIC_GET_OK, &m);
    assert_true(m.basic_get_ok.redelivered);
    amqp_method_free(&m);
    assert_true(cl_frame(&c));
    assert_true(cl_frame(&c));
    buf_init(&b);
    for (i = 0; i < 2; i++) {
        amqp_method_init(&m, AMQP_BASIC_ACK);
        m.basic_ack.delivery_tag = 1;
        assert_int_equal(amqp_method_encode(&b, 2, &m, 0), 0);
    }
    cl_send_buf(&c, &b);
    cl_expect(&c, AMQP_CHANNEL_CLOSE, &m);
    assert_int_equal(m.channel_close.reply_code, 406);
    amqp_method_free(&m);
    cl_close(&c);
}

/* basic.consume of @q with no-ack on channel 1, answered. */
static void cl_consume_no_ack(struct client *c, const char *q)
{
    struct amqp_method m;

    amqp_method_init(&m, AMQP_BASIC_CONSUME);
    m.basic_consume.queue = amqp_cstr(q);
    m.basic_consume.no_ack = true;
    cl_method(c, 1, &m);
    cl_expect_free(c, AMQP_BASIC_CONSUME_OK);
}

/* The body frame just read is @body. */
static void cl_expect_body(struct client *c, const char *body)
{
    if (c->size != strlen(body) || memcmp(c->payload, body, c->size) != 0) {
        fail_msg("got '%.*s', expected '%s'", (int)c->size,
                 (const char *)c->payload, body);
    }
}

/* The header and body frames of a delivery; the body must be @body. */
static void cl_expect_content(struct client *c, const char *body)
{
    assert_true(cl_frame(c));
    assert_true(cl_frame(c));
    cl_expect_body(c, body);
}

/* A basic.deliver of a message whose body is @body. */
static void cl_expect_delivery(struct client *c, const char *body)
{
    struct amqp_method m;

    cl_expect(c, AMQP_BASIC_DELIVER, &m);
    amqp_method_free(&m);
    cl_expect_content(c, body);
}

/* The same, for a message that was returned (redelivered=true). */
static void cl_expect_redelivery(struct client *c, const char *body)
{
    struct amqp_method m;

    cl_expect(c, AMQP_BASIC_DELIVER, &m);
    assert_true(m.basic_deliver.redelivered);
    amqp_method_free(&m);
    cl_expect_content(c, body);
}

/* A broker that is unavailable for a while (a leader election): the edge
 * retries the enqueue with the same dedup id and confirms once it lands;
 * a waiting consumer gets the message after its retried CHECKOUT. */
static void test_retry_while_unavailable(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    struct client k;

    cl_handshake(&c, fx->port);
    cl_declare(&c, "r1");
    cl_simple(&c, 1, AMQP_CONFIRM_SELECT);
    cl_expect_free(&c, AMQP_CONFIRM_SELECT_OK);
    cl_handshake(&k, fx->port);
    cl_consume_no_ack(&k, "r1");
    fake_broker_set_unavailable(fx->fb, true);
    cl_publish(&c, "", "r1", "later", false);
    usleep(300 * 1000);
    fake_broker_set_unavailable(fx->fb, false);
    cl_expect_ack(&c, 1);
    cl_expect_delivery(&k, "later");
    cl_close(&k);
    cl_close(&c);
}

/* A watermark: clients that understand it get connection.blocked, and a
 * publishing connection is not read until connection.unblocked. */
static void test_blocked_publishers(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    struct amqp_method m;

    cl_handshake_caps(&c, fx->port, true);
    cl_declare(&c, "b1");
    cl_simple(&c, 1, AMQP_CONFIRM_SELECT);
    cl_expect_free(&c, AMQP_CONFIRM_SELECT_OK);
    cl_publish(&c, "", "b1", "before", false);
    cl_expect_free(&c, AMQP_BASIC_ACK);
    fake_broker_set_blocked(fx->fb, true);
    cl_expect(&c, AMQP_CONNECTION_BLOCKED, &m);
    assert_true(m.connection_blocked.reason.len > 0);
    amqp_method_free(&m);
    /* not read while blocked: the confirm comes only after unblocking */
    cl_publish(&c, "", "b1", "during", false);
    usleep(200 * 1000);
    fake_broker_set_blocked(fx->fb, false);
    cl_expect_free(&c, AMQP_CONNECTION_UNBLOCKED);
    cl_expect_ack(&c, 2);
    cl_close(&c);
}

/* A router hears a shard's watermark in the shard's answers. The answer
 * to a publish that says "blocked" blocks publishers at once: the client
 * gets connection.blocked before that publish's confirm, and its next
 * publish is not read. Waiting for the tick (up to a second on a router)
 * let a publisher that had just connected have ten confirmed publishes
 * through while the nodes were over their watermark
 * (it_test_amqp_watermark). An answer that says "not blocked" unblocks as
 * promptly. The tick never comes here. */
static void test_blocked_by_an_answer(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    struct client k;
    struct amqp_method m;

    cl_handshake_caps(&c, fx->port, true);
    cl_declare(&c, "b2");
    cl_simple(&c, 1, AMQP_CONFIRM_SELECT);
    cl_expect_free(&c, AMQP_CONFIRM_SELECT_OK);
    fake_broker_block_on_enqueue(fx->fb, true);
    cl_publish(&c, "", "b2", "first", false);
    cl_expect(&c, AMQP_CONNECTION_BLOCKED, &m);
    assert_true(m.connection_blocked.reason.len > 0);
    amqp_method_free(&m);
    cl_expect_ack(&c, 1);
    cl_publish(&c, "", "b2", "second", false);
    cl_quiet(&c, 300);
    /* another connection's call brings an answer that says "not blocked" */
    fake_broker_block_on_enqueue(fx->fb, false);
    fake_broker_set_blocked(fx->fb, false);
    cl_handshake(&k, fx->port);
    cl_declare(&k, "b3");
    cl_expect_free(&c, AMQP_CONNECTION_UNBLOCKED);
    cl_expect_ack(&c, 2);
    cl_close(&k);
    cl_close(&c);
}

/* A router whose meta view's lease ran out (amqp_broker.h routable()) may
 * lack a binding already confirmed to a client: it holds publishes, in
 * order, and routes them once the view is routable again; one held longer
 * than the route wait is nacked, not routed. Before, publishes were routed
 * on any view, however old. */
static void test_publish_held_while_unroutable(void **state)
{
    struct fixture *fx = *state;
    struct client c;

    cl_handshake(&c, fx->port);
    cl_declare(&c, "r1");
    cl_simple(&c, 1, AMQP_CONFIRM_SELECT);
    cl_expect_free(&c, AMQP_CONFIRM_SELECT_OK);
    fake_broker_set_routable(fx->fb, false);
    cl_publish(&c, "", "r1", "one", false);
    cl_publish(&c, "", "r1", "two", false);
    cl_quiet(&c, 250);
    fake_broker_set_routable(fx->fb, true);
    cl_expect_ack(&c, 1);
    cl_expect_ack(&c, 2);

    fake_broker_set_routable(fx->fb, false);
    cl_publish(&c, "", "r1", "three", false);
    cl_quiet(&c, 250);
    cl_expect_nack(&c, 3); /* within the route wait + a tick */
    fake_broker_set_routable(fx->fb, true);
    cl_publish(&c, "", "r1", "four", false);
    cl_expect_ack(&c, 4);
    cl_close(&c);
}

/* The view's lease may lapse and come back between two looks of the edge
 * (its tick, a call's answer): a publish that came meanwhile is held while
 * the edge still takes the view for routable. It goes on at the edge's
 * next look, here the answer to another connection's declare (the tick
 * never comes). Before, nothing woke it: the fault test's pika publishers
 * waited for their confirms to the end of the run after a short partition
 * of their routers from the meta leader. */
static void test_publish_held_between_looks(void **state)
{
    struct fixture *fx = *state;
    struct client c, k;

    cl_handshake(&c, fx->port);
    cl_declare(&c, "r2");
    cl_simple(&c, 1, AMQP_CONFIRM_SELECT);
    cl_expect_free(&c, AMQP_CONFIRM_SELECT_OK);
    fake_broker_set_routable(fx->fb, false);
    cl_publish(&c, "", "r2", "one", false);
    cl_quiet(&c, 100);
    fake_broker_set_routable(fx->fb, true);
    cl_handshake(&k, fx->port);
    cl_declare(&k, "r3");
    cl_expect_ack(&c, 1);
    cl_close(&k);
    cl_close(&c);
}

/* basic.get of @q (no-ack): true with the body in c->payload, false if
 * the queue is empty. */
static bool cl_get_maybe(struct client *c, const char *q)
{
    struct amqp_method m;

    amqp_method_init(&m, AMQP_BASIC_GET);
    m.basic_get.queue = amqp_cstr(q);
    m.basic_get.no_ack = true;
    cl_method(c, 1, &m);
    assert_true(cl_frame(c));
    assert_int_equal(c->type, AMQP_FRAME_METHOD);
    assert_int_equal(amqp_method_decode(c->payload, c->size, &m), 0);
    if (m.id == AMQP_BASIC_GET_EMPTY) {
        amqp_method_free(&m);
        return false;
    }
    assert_int_equal(m.id, AMQP_BASIC_GET_OK);
    amqp_method_free(&m);
    assert_true(cl_frame(c));
    assert_int_equal(c->type, AMQP_FRAME_HEADER);
    assert_true(cl_frame(c));
    assert_int_equal(c->type, AMQP_FRAME_BODY);
    return true;
}

/* basic.get of @q with no-ack: the body of the message, which must be
 * @body. */
static void cl_get_expect(struct client *c, const char *q, const char *body)
{
    assert_true(cl_get_maybe(c, q));
    cl_expect_body(c, body);
}

/* A publish whose outcome is unknown (a leader lost with it in flight) is
 * sent again 100 ms later; the channel's next publish into the same queue,
 * sent at once, must not land before it: RabbitMQ keeps a channel's
 * publishes in order. Before, "second" was stored first. */
static void test_publish_order_across_a_lost_enqueue(void **state)
{
    struct fixture *fx = *state;
    struct client c;

    cl_handshake(&c, fx->port);
    cl_declare(&c, "o1");
    cl_declare(&c, "o2");
    cl_simple(&c, 1, AMQP_CONFIRM_SELECT);
    cl_expect_free(&c, AMQP_CONFIRM_SELECT_OK);
    fake_broker_lose_enqueues(fx->fb, 1);
    cl_publish(&c, "", "o1", "first", false);
    cl_publish(&c, "", "o1", "second", false);
    cl_publish(&c, "", "o2", "other", false); /* another queue: no wait */
    cl_expect_ack(&c, 1);
    cl_expect_ack(&c, 2);
    cl_expect_ack(&c, 3);
    cl_get_expect(&c, "o1", "first");
    cl_get_expect(&c, "o1", "second");
    cl_get_expect(&c, "o2", "other");
    cl_close(&c);
}

/* A shard whose group is full answers BUSY: never proposed, so the edge
 * sends the ENQUEUE again, after waits that double (at least 50 + 100 +
 * 200 ms for three BUSY answers), and confirms it once it is taken,
 * stored once; a consumer's CHECKOUT answered BUSY is asked again too.
 * Before, a BUSY publish was nacked, and a consumer whose CHECKOUTs came
 * back BUSY polled again only when its connection next wrote something
 * (here: never). */
static void test_busy_retried(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    struct client k;
    struct amqp_method m;
    uint64_t t0;

    cl_handshake(&c, fx->port);
    cl_declare(&c, "b1");
    cl_simple(&c, 1, AMQP_CONFIRM_SELECT);
    cl_expect_free(&c, AMQP_CONFIRM_SELECT_OK);
    fake_broker_busy(fx->fb, MQ_SM_ENQUEUE, 3);
    t0 = clock_mono_ms();
    cl_publish(&c, "", "b1", "busy", false);
    cl_expect_ack(&c, 1);
    assert_true(clock_mono_ms() - t0 >= 350);
    cl_get_expect(&c, "b1", "busy");
    /* stored once: the consumer's first delivery is the next message */
    cl_handshake(&k, fx->port);
    fake_broker_busy(fx->fb, MQ_SM_CHECKOUT, 5);
    cl_consume_no_ack(&k, "b1");
    cl_publish(&c, "", "b1", "later", false);
    cl_expect(&c, AMQP_BASIC_ACK, &m);
    amqp_method_free(&m);
    cl_expect_delivery(&k, "later");
    cl_close(&k);
    cl_close(&c);
}

/* ---- dead letters, at least once ----------------------------------------- */

/* queue.declare of @q with @args (freed here). */
static void cl_declare_args(struct client *c, const char *q,
                            struct amqp_table *args)
{
    struct amqp_method m;

    amqp_method_init(&m, AMQP_QUEUE_DECLARE);
    m.queue_declare.queue = amqp_cstr(q);
    m.queue_declare.arguments = args;
    cl_method(c, 1, &m);
    amqp_table_free(args);
    cl_expect(c, AMQP_QUEUE_DECLARE_OK, &m);
    amqp_method_free(&m);
}

/* Dead-lettering to the default exchange, so into queue @to. */
static struct amqp_table *dlx_to(const char *to)
{
    struct amqp_table *t = amqp_table_new();

    amqp_table_add_longstr(t, "x-dead-letter-exchange", "");
    amqp_table_add_longstr(t, "x-dead-letter-routing-key", to);
    return t;
}

/* Publish @body to @q with confirms on, take it with basic.get and reject
 * it without requeue. */
static void cl_publish_reject(struct client *c, const char *q,
                              const char *body, uint64_t confirm_tag)
{
    struct amqp_method m;
    uint64_t tag;

    cl_publish(c, "", q, body, false);
    cl_expect_ack(c, confirm_tag);
    amqp_method_init(&m, AMQP_BASIC_GET);
    m.basic_get.queue = amqp_cstr(q);
    cl_method(c, 1, &m);
    cl_expect(c, AMQP_BASIC_GET_OK, &m);
    tag = m.basic_get_ok.delivery_tag;
    amqp_method_free(&m);
    assert_true(cl_frame(c));
    assert_true(cl_frame(c));
    amqp_method_init(&m, AMQP_BASIC_REJECT);
    m.basic_reject.delivery_tag = tag;
    m.basic_reject.requeue = false;
    cl_method(c, 1, &m);
}

/* Wait until @n more EXPIREs were applied (both shards tick): what each
 * one handed out was republished before the next one applied, since the
 * fake broker applies at submit. */
static void wait_expires(struct fixture *fx, unsigned n)
{
    unsigned start = fake_broker_applied(fx->fb, MQ_SM_EXPIRE);
    uint64_t until = clock_mono_ms() + 10000;

    while (fake_broker_applied(fx->fb, MQ_SM_EXPIRE) < start + n) {
        assert_true(clock_mono_ms() < until);
        usleep(5000);
    }
}

/* Poll @q until a message arrives (at most 10 s); it must be @body. */
static void cl_get_eventually(struct fixture *fx, struct client *c,
                              const char *q, const char *body)
{
    uint64_t until = clock_mono_ms() + 10000;

    while (!cl_get_maybe(c, q)) {
        if (clock_mono_ms() >= until) {
            fail_msg("no message in '%s'", q);
        }
        wait_expires(fx, 2);
    }
    cl_expect_body(c, body);
}

/* The reply of a reject is lost after the shard applied it (a leader lost
 * with it): the edge's retried DROP finds nothing, the dead letter was
 * only in the lost reply. Its shard's outbox hands it out again once the
 * claim window passed; once republished it is settled, and not handed out
 * a second time. Before, it was lost: "dead" stayed empty. */
static void test_dead_letter_reply_lost(void **state)
{
    struct fixture *fx = *state;
    struct client c;

    cl_handshake(&c, fx->port);
    cl_declare(&c, "dead");
    cl_declare_args(&c, "src", dlx_to("dead"));
    cl_simple(&c, 1, AMQP_CONFIRM_SELECT);
    cl_expect_free(&c, AMQP_CONFIRM_SELECT_OK);
    fake_broker_lose_replies(fx->fb, MQ_SM_DROP, 1);
    cl_publish_reject(&c, "src", "m1", 1);
    wait_expires(fx, 4);
    assert_false(cl_get_maybe(&c, "dead")); /* not within the claim */
    fake_broker_advance_clock(fx->fb, MQ_SM_DL_CLAIM_MS);
    cl_get_eventually(fx, &c, "dead", "m1");
    /* settled: a later claim window hands out nothing */
    fake_broker_advance_clock(fx->fb, 2 * MQ_SM_DL_CLAIM_MS);
    wait_expires(fx, 4);
    assert_false(cl_get_maybe(&c, "dead"));
    cl_close(&c);
}

/* The republish itself is refused (the target is full, reject-publish):
 * not settled, so handed out again after the claim window, when there is
 * room. That republish's reply is lost after it was applied: sent again
 * with the same dedup id, it is DUPLICATE, so the target has one copy.
 * Before, the refused dead letter was lost. */
static void test_dead_letter_republish_refused(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    struct amqp_table *full = amqp_table_new();

    amqp_table_add_i32(full, "x-max-length", 0);
    amqp_table_add_longstr(full, "x-overflow", "reject-publish");
    cl_handshake(&c, fx->port);
    cl_declare_args(&c, "dead2", full);
    cl_declare_args(&c, "src2", dlx_to("dead2"));
    cl_simple(&c, 1, AMQP_CONFIRM_SELECT);
    cl_expect_free(&c, AMQP_CONFIRM_SELECT_OK);
    cl_publish_reject(&c, "src2", "m2", 1);
    wait_expires(fx, 4);
    /* room in dead2: the same name without the limit */
    {
        struct amqp_method m;

        amqp_method_init(&m, AMQP_QUEUE_DELETE);
        m.queue_delete.queue = amqp_cstr("dead2");
        cl_method(&c, 1, &m);
        cl_expect_free(&c, AMQP_QUEUE_DELETE_OK);
    }
    cl_declare(&c, "dead2");
    assert_false(cl_get_maybe(&c, "dead2"));
    fake_broker_lose_replies(fx->fb, MQ_SM_ENQUEUE, 1);
    fake_broker_advance_clock(fx->fb, MQ_SM_DL_CLAIM_MS);
    cl_get_eventually(fx, &c, "dead2", "m2");
    fake_broker_advance_clock(fx->fb, 2 * MQ_SM_DL_CLAIM_MS);
    wait_expires(fx, 4);
    assert_false(cl_get_maybe(&c, "dead2")); /* one copy, then settled */
    cl_close(&c);
}

/* A consumer cancelled while its CHECKOUT's answer is lost (a leader lost
 * with it, the CHECKOUT applied): what that CHECKOUT took sits with the
 * channel, and no client will ever see it. A new leader no longer returns
 * every delivery, so the edge asks again with the same seq for nothing new,
 * learns what it delivered and gives that back: another consumer gets the
 * message, redelivered. Before, it stayed out until the channel closed. */
static void test_cancelled_consumer_lost_checkout(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    struct client k;
    struct client w;
    struct amqp_method m;

    cl_handshake(&c, fx->port);
    cl_declare(&c, "lc");
    cl_handshake(&k, fx->port);
    amqp_method_init(&m, AMQP_BASIC_CONSUME);
    m.basic_consume.queue = amqp_cstr("lc");
    m.basic_consume.consumer_tag = amqp_cstr("gone");
    cl_method(&k, 1, &m);
    cl_expect_free(&k, AMQP_BASIC_CONSUME_OK);
    /* its CHECKOUT now waits in the broker; its answer will be lost */
    fake_broker_lose_replies(fx->fb, MQ_SM_CHECKOUT, 1);
    amqp_method_init(&m, AMQP_BASIC_CANCEL);
    m.basic_cancel.consumer_tag = amqp_cstr("gone");
    cl_method(&k, 1, &m);
    cl_expect_free(&k, AMQP_BASIC_CANCEL_OK);
    cl_publish(&c, "", "lc", "orphan", false);

    cl_handshake(&w, fx->port);
    cl_consume_no_ack(&w, "lc");
    cl_expect_redelivery(&w, "orphan");
    cl_close(&w);
    cl_close(&k);
    cl_close(&c);
}

/* Wait (at most 10 s) until @n CHECKOUTs wait in the slow broker. */
static void wait_slowed(struct fixture *fx, unsigned n)
{
    uint64_t until = clock_mono_ms() + 10000;

    while (fake_broker_slowed(fx->fb, MQ_SM_CHECKOUT) != n) {
        if (clock_mono_ms() >= until) {
            fail_msg("%u CHECKOUTs in flight, want %u",
                     fake_broker_slowed(fx->fb, MQ_SM_CHECKOUT), n);
        }
        usleep(2000);
    }
}

/* Ready messages of @q, by a passive declare on channel 1. */
static uint32_t cl_queue_count(struct client *c, const char *q)
{
    struct amqp_method m;
    uint32_t n;

    amqp_method_init(&m, AMQP_QUEUE_DECLARE);
    m.queue_declare.queue = amqp_cstr(q);
    m.queue_declare.passive = true;
    cl_method(c, 1, &m);
    cl_expect(c, AMQP_QUEUE_DECLARE_OK, &m);
    n = m.queue_declare_ok.message_count;
    amqp_method_free(&m);
    return n;
}

/* Poll until @q holds @n ready messages (at most 10 s). */
static void cl_queue_count_eventually(struct client *c, const char *q,
                                      uint32_t n)
{
    uint64_t until = clock_mono_ms() + 10000;
    uint32_t got;

    while ((got = cl_queue_count(c, q)) != n) {
        if (clock_mono_ms() >= until) {
            fail_msg("'%s' holds %u messages, want %u", q, got, n);
        }
        usleep(10000);
    }
}

/* Declare @q and publish "m<i>" into it for i in [0, @n), stored. */
static void cl_fill_numbered(struct client *p, const char *q, int n)
{
    char body[32];
    int i;

    cl_declare(p, q);
    for (i = 0; i < n; i++) {
        snprintf(body, sizeof(body), "m%d", i);
        cl_publish(p, "", q, body, false);
    }
    /* ordered after the publishes on the same channel */
    assert_int_equal(cl_queue_count(p, q), (uint32_t)n);
}

/* basic.qos @prefetch, then basic.consume @q as "ct", on channel 1. */
static void cl_consume_prefetch(struct client *c, const char *q,
                                uint16_t prefetch)
{
    struct amqp_method m;

    amqp_method_init(&m, AMQP_BASIC_QOS);
    m.basic_qos.prefetch_count = prefetch;
    cl_method(c, 1, &m);
    cl_expect_free(c, AMQP_BASIC_QOS_OK);
    amqp_method_init(&m, AMQP_BASIC_CONSUME);
    m.basic_consume.queue = amqp_cstr(q);
    m.basic_consume.consumer_tag = amqp_cstr("ct");
    cl_method(c, 1, &m);
    cl_expect_free(c, AMQP_BASIC_CONSUME_OK);
}

/* basic.deliver of "m<i>" with delivery tag @tag, not redelivered. */
static void cl_expect_numbered(struct client *c, uint64_t tag, int i)
{
    struct amqp_method m;
    char body[32];

    cl_expect(c, AMQP_BASIC_DELIVER, &m);
    assert_int_equal(m.basic_deliver.delivery_tag, tag);
    assert_false(m.basic_deliver.redelivered);
    amqp_method_free(&m);
    snprintf(body, sizeof(body), "m%d", i);
    cl_expect_content(c, body);
}

/* basic.ack of every tag in [@from, @to], one at a time, in one write. */
static void cl_ack_range(struct client *c, uint64_t from, uint64_t to)
{
    struct amqp_method m;
    struct buf b;
    uint64_t t;

    buf_init(&b);
    for (t = from; t <= to; t++) {
        amqp_method_init(&m, AMQP_BASIC_ACK);
        m.basic_ack.delivery_tag = t;
        assert_int_equal(amqp_method_encode(&b, 1, &m, 0), 0);
    }
    cl_send_buf(c, &b);
}

/* 80 ready, prefetch 40: "ct" gets m0..m39 (tags 1..40). Then, CHECKOUTs
 * slow (each a Raft commit), it acks 10, 10 and 10: each frees a quarter
 * of its window, and it asks again at once, not after the previous
 * answer: 3 CHECKOUTs on their way. Before, it had one at a time. */
static void consume_with_three_fetches(struct fixture *fx, struct client *p,
                                       struct client *c, const char *q)
{
    int i;

    cl_handshake(p, fx->port);
    cl_fill_numbered(p, q, 80);
    cl_handshake(c, fx->port);
    cl_consume_prefetch(c, q, 40);
    for (i = 0; i < 40; i++) {
        cl_expect_numbered(c, (uint64_t)i + 1, i);
    }
    fake_broker_slow(fx->fb, MQ_SM_CHECKOUT, true);
    for (i = 0; i < 3; i++) {
        cl_ack_range(c, 10 * (uint64_t)i + 1, 10 * (uint64_t)i + 10);
        wait_slowed(fx, (unsigned)i + 1);
    }
}

/* Several CHECKOUTs on their way: the consumer gets the queue's messages
 * in queue order with ascending tags, even when the first one's answer is
 * lost and comes (by its retry) after the other two. */
static void test_fetches_pipelined(void **state)
{
    struct fixture *fx = *state;
    struct client p;
    struct client c;
    int i;

    consume_with_three_fetches(fx, &p, &c, "pl");
    fake_broker_lose_replies(fx->fb, MQ_SM_CHECKOUT, 1);
    fake_broker_slow(fx->fb, MQ_SM_CHECKOUT, false);
    for (i = 40; i < 70; i++) {
        cl_expect_numbered(&c, (uint64_t)i + 1, i);
    }
    /* its window is full again: 10 left in the queue */
    assert_int_equal(cl_queue_count(&c, "pl"), 10);
    cl_close(&c);
    cl_close(&p);
}

/* basic.cancel while a consumer has CHECKOUTs on their way: the first's
 * answer lost (its retry still waiting), the two later ones answered and
 * held for it. Every message they took goes back to the queue: the held
 * ones at the cancel, the retried one's when it comes back to no
 * consumer. Only the 10 delivered and unacked stay with the channel. */
static void test_cancel_with_fetches_in_flight(void **state)
{
    struct fixture *fx = *state;
    unsigned applied;
    struct client p;
    struct client c;
    struct amqp_method m;
    uint64_t until = clock_mono_ms() + 10000;

    consume_with_three_fetches(fx, &p, &c, "cf");
    applied = fake_broker_applied(fx->fb, MQ_SM_CHECKOUT);
    fake_broker_lose_replies(fx->fb, MQ_SM_CHECKOUT, 1);
    fake_broker_release(fx->fb, MQ_SM_CHECKOUT);
    /* the three applied, and the lost one's retry waits again */
    while (fake_broker_applied(fx->fb, MQ_SM_CHECKOUT) != applied + 3 ||
           fake_broker_slowed(fx->fb, MQ_SM_CHECKOUT) != 1) {
        assert_true(clock_mono_ms() < until);
        usleep(2000);
    }
    amqp_method_init(&m, AMQP_BASIC_CANCEL);
    m.basic_cancel.consumer_tag = amqp_cstr("ct");
    cl_method(&c, 1, &m);
    cl_expect_free(&c, AMQP_BASIC_CANCEL_OK);
    cl_queue_count_eventually(&p, "cf", 30);
    fake_broker_slow(fx->fb, MQ_SM_CHECKOUT, false);
    cl_queue_count_eventually(&p, "cf", 40);
    cl_close(&c); /* its 10 unacked go back */
    cl_queue_count_eventually(&p, "cf", 50);
    cl_close(&p);
}

/* Something to read within @ms. */
static bool cl_readable(struct client *c, int ms)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

    return c->in_off < c->in_len || poll(&pfd, 1, ms) > 0;
}

/* One consumer, random prefetch, random acks (single ones read together,
 * or multiple), CHECKOUTs slow for a while and answers lost, by a fixed
 * seed: whatever the interleaving, it gets every message once, in queue
 * order, never redelivered, with tags 1, 2, 3... */
static void test_fetches_random(void **state)
{
    struct fixture *fx = *state;
    struct client p;
    struct client c;
    const int n = 300;
    uint64_t rnd = 0x9e3779b97f4a7c15ULL;
    uint64_t until = clock_mono_ms() + 30000;
    bool slow = false;
    int got = 0;
    int acked = 0;
    int lost_at = -1;

#define NEXT_RND() (rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17, rnd)
    cl_handshake(&p, fx->port);
    cl_fill_numbered(&p, "rnd", n);
    cl_handshake(&c, fx->port);
    cl_consume_prefetch(&c, "rnd", (uint16_t)(4 + NEXT_RND() % 60));
    while (acked < n) {
        if (clock_mono_ms() >= until) {
            fail_msg("stuck: %d delivered, %d acked", got, acked);
        }
        if (cl_readable(&c, 10)) {
            assert_true(got < n);
            cl_expect_numbered(&c, (uint64_t)got + 1, got);
            got++;
            continue;
        }
        switch (NEXT_RND() % 4) {
        case 0:
            slow = !slow;
            fake_broker_slow(fx->fb, MQ_SM_CHECKOUT, slow);
            break;
        case 1:
            /* not again before a delivery: every retry lost stalls */
            if (got > lost_at) {
                fake_broker_lose_replies(fx->fb, MQ_SM_CHECKOUT, 1);
                lost_at = got;
            }
            break;
        default:
            if (got > acked) {
                int k = 1 + (int)(NEXT_RND() % (uint64_t)(got - acked));

                if (NEXT_RND() % 2 == 0) {
                    cl_ack_range(&c, (uint64_t)acked + 1,
                                 (uint64_t)acked + (uint64_t)k);
                } else {
                    struct amqp_method m;

                    amqp_method_init(&m, AMQP_BASIC_ACK);
                    m.basic_ack.delivery_tag = (uint64_t)acked + (uint64_t)k;
                    m.basic_ack.multiple = true;
                    cl_method(&c, 1, &m);
                }
                acked += k;
            }
            break;
        }
    }
#undef NEXT_RND
    fake_broker_slow(fx->fb, MQ_SM_CHECKOUT, false);
    assert_int_equal(got, n);
    assert_int_equal(cl_queue_count(&p, "rnd"), 0);
    cl_close(&c);
    cl_close(&p);
}

/* Acks read together go to the shard together, at the end of the read;
 * the CHECKOUT their credit allows goes after them. Before, it went at
 * the first ack that freed a quarter of the window, ahead of the acks:
 * the shard's prefetch check still counted them unacked and gave nothing,
 * the consumer ran "dry" and got the next messages only from a long poll
 * retried 100 ms later (4 CHECKOUTs where 1 does). */
static void test_checkout_after_acks(void **state)
{
    struct fixture *fx = *state;
    struct client p;
    struct client c;
    unsigned applied;
    int i;

    cl_handshake(&p, fx->port);
    cl_fill_numbered(&p, "aa", 20);
    cl_handshake(&c, fx->port);
    cl_consume_prefetch(&c, "aa", 10);
    for (i = 0; i < 10; i++) {
        cl_expect_numbered(&c, (uint64_t)i + 1, i);
    }
    applied = fake_broker_applied(fx->fb, MQ_SM_CHECKOUT);
    cl_ack_range(&c, 1, 10);
    for (i = 10; i < 20; i++) {
        cl_expect_numbered(&c, (uint64_t)i + 1, i);
    }
    assert_int_equal(fake_broker_applied(fx->fb, MQ_SM_CHECKOUT), applied + 1);
    cl_close(&c);
    cl_close(&p);
}

/* The broker closes (the fixture closes it first) under a connected
 * consumer whose long poll it holds: the CHECKOUT answers CLOSING, and so
 * would every new one, at once. The consumer asks no more. Before, it
 * asked again from the answer, recursing until the stack ran out. */
static void test_broker_closing_under_a_consumer(void **state)
{
    struct fixture *fx = *state;
    struct client c;

    cl_handshake(&c, fx->port);
    cl_declare(&c, "bcl");
    cl_consume_prefetch(&c, "bcl", 10);
    /* its long poll was sent with consume-ok: held, the queue empty */
    fx->open_fd = c.fd;
    amqp_frame_decoder_close(&c.dec);
}

/* A shard out for longer than the edge's calls are retried: an ack sent
 * during the outage, and the RETURN of a connection that closed holding an
 * unacked delivery, are still applied once it is back. The acking
 * consumer (prefetch 1) gets the next message; another consumer gets the
 * held one, redelivered. A new leader no longer returns every delivery,
 * and this router's lease never runs out while it lives: before, the acked
 * message kept its consumer's prefetch full and the held one stayed out,
 * for good. */
static void test_outage_outlasted(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    struct client a;
    struct client k;
    struct amqp_method m;

    cl_handshake(&c, fx->port);
    cl_declare(&c, "ro");
    cl_declare(&c, "ra");
    cl_publish(&c, "", "ro", "held", false);
    cl_publish(&c, "", "ra", "first", false);
    cl_handshake(&k, fx->port);
    amqp_method_init(&m, AMQP_BASIC_CONSUME);
    m.basic_consume.queue = amqp_cstr("ro");
    cl_method(&k, 1, &m);
    cl_expect_free(&k, AMQP_BASIC_CONSUME_OK);
    cl_expect_delivery(&k, "held"); /* never acked */
    cl_handshake(&a, fx->port);
    amqp_method_init(&m, AMQP_BASIC_QOS);
    m.basic_qos.prefetch_count = 1;
    cl_method(&a, 1, &m);
    cl_expect_free(&a, AMQP_BASIC_QOS_OK);
    amqp_method_init(&m, AMQP_BASIC_CONSUME);
    m.basic_consume.queue = amqp_cstr("ra");
    cl_method(&a, 1, &m);
    cl_expect_free(&a, AMQP_BASIC_CONSUME_OK);
    cl_expect_delivery(&a, "first");

    fake_broker_set_unavailable(fx->fb, true);
    amqp_method_init(&m, AMQP_BASIC_ACK);
    m.basic_ack.delivery_tag = 1;
    cl_method(&a, 1, &m);
    cl_close(&k);
    /* an outage longer than any retry window of the edge's calls */
    usleep((EDGE_ENQUEUE_RETRY_MS + 1000) * 1000);
    fake_broker_set_unavailable(fx->fb, false);

    cl_publish(&c, "", "ra", "second", false);
    cl_expect_delivery(&a, "second");
    cl_handshake(&k, fx->port);
    cl_consume_no_ack(&k, "ro");
    cl_expect_redelivery(&k, "held");
    cl_close(&k);
    cl_close(&a);
    cl_close(&c);
}

/* tx is refused clearly (540), not half done. */
static void test_tx_not_implemented(void **state)
{
    struct fixture *fx = *state;
    struct client c;

    cl_handshake(&c, fx->port);
    cl_simple(&c, 1, AMQP_TX_SELECT);
    cl_expect_conn_close(&c, 540);
    cl_close(&c);
}

/* Frames the client still sends after its connection.close, or after its
 * close-ok to ours, more than the server reads at once (64 KiB): closing
 * with them unread made the kernel reset the connection. */
#define AFTER_CLOSE_HEARTBEATS 12000 /* 96 KB */

static void cl_send_with_tail(struct client *c, uint32_t id)
{
    struct timeval tv = {.tv_sec = 5};
    struct amqp_method m;
    struct buf b;
    int i;

    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    buf_init(&b);
    amqp_method_init(&m, id);
    if (id == AMQP_CONNECTION_CLOSE) {
        m.connection_close.reply_code = 200;
        m.connection_close.reply_text = amqp_cstr("bye");
    }
    assert_int_equal(amqp_method_encode(&b, 0, &m, 0), 0);
    for (i = 0; i < AFTER_CLOSE_HEARTBEATS; i++) {
        amqp_frame_encode_heartbeat(&b);
    }
    cl_send_buf(c, &b);
}

/* Nothing but EOF follows: no byte, and no reset (recv fails then). */
static void cl_expect_clean_eof(struct client *c)
{
    char got[16];

    assert_int_equal(c->in_off, c->in_len);
    assert_int_equal(cl_read_raw(c, got, sizeof(got)), 0);
}

/* The client closes and keeps talking: close-ok, then a clean EOF (the
 * server shut down its side), never a reset. */
static void test_client_close_drains(void **state)
{
    struct fixture *fx = *state;
    struct client c;

    cl_handshake(&c, fx->port);
    cl_send_with_tail(&c, AMQP_CONNECTION_CLOSE);
    cl_expect_free(&c, AMQP_CONNECTION_CLOSE_OK);
    cl_expect_clean_eof(&c);
    cl_close(&c);
}

/* Our connection.close, the client's close-ok and more frames: the same. */
static void test_server_close_drains(void **state)
{
    struct fixture *fx = *state;
    struct client c;
    struct amqp_method m;

    cl_handshake(&c, fx->port);
    cl_simple(&c, 1, AMQP_TX_SELECT);
    cl_expect(&c, AMQP_CONNECTION_CLOSE, &m);
    amqp_method_free(&m);
    cl_send_with_tail(&c, AMQP_CONNECTION_CLOSE_OK);
    cl_expect_clean_eof(&c);
    cl_close(&c);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_protocol_header_mismatch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_auth_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_get_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consume_prefetch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_acks_batched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fetches_pipelined, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_with_fetches_in_flight,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkout_after_acks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fetches_random, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_broker_closing_under_a_consumer,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_consumer_lost_checkout,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_outage_outlasted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_retry_while_unavailable, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_blocked_publishers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_blocked_by_an_answer,
                                        setup_no_tick, teardown),
        cmocka_unit_test_setup_teardown(test_tx_not_implemented, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_publish_held_while_unroutable,
                                        setup_route_wait, teardown),
        cmocka_unit_test_setup_teardown(test_publish_held_between_looks,
                                        setup_no_tick, teardown),
        cmocka_unit_test_setup_teardown(
            test_publish_order_across_a_lost_enqueue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_reply_lost, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_republish_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_close_drains, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_server_close_drains, setup,
                                        teardown),
    };

    if (argc == 3 && strcmp(argv[1], "--serve") == 0) {
        return serve(atoi(argv[2]));
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
