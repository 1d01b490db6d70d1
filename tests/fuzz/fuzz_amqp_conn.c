/*
 * libFuzzer target: the whole AMQP edge (edge/amqp_server, amqp_conn,
 * amqp_channel) fed arbitrary bytes over a real loopback connection.
 *
 * One server lives for the whole run, on a broker that applies mq_sm and
 * meta_sm at once (state accumulates across inputs, as on a real server).
 * Input byte 0 picks the start: even = the bytes as they are (protocol
 * header included, or not); odd = after a valid handshake and channel 1
 * open, so the fuzzer spends its time on channel methods and content.
 * The client then half-closes and the loop runs until the server closes
 * or a short deadline. A crash, a sanitizer report or a leak is a finding.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/amqp_frame.h"
#include "proto/amqp_method.h"
#include "edge/amqp_server.h"

/* A segment of message bodies (sm/mq_sm.h, "Message bodies"): the bytes
 * mq_sm placed there, as a node's body store holds them (headers left
 * out). */
struct fuzz_seg {
    unsigned char *buf;
    size_t len;
};

struct fuzz_broker {
    struct mq_sm *mq;
    struct meta_sm *meta;
    struct fuzz_seg *segs; /* by segment number */
    size_t n_segs;
};

static void body_store(struct fuzz_broker *fb, const struct mq_sm_write *w)
{
    size_t end = (size_t)w->off + w->len;
    struct fuzz_seg *sg;

    if (w->seg >= fb->n_segs) {
        fb->segs = xrealloc(fb->segs, ((size_t)w->seg + 1) * sizeof(*sg));
        memset(fb->segs + fb->n_segs, 0,
               ((size_t)w->seg + 1 - fb->n_segs) * sizeof(*sg));
        fb->n_segs = (size_t)w->seg + 1;
    }
    sg = &fb->segs[w->seg];
    if (end > sg->len) {
        sg->buf = xrealloc(sg->buf, end);
        sg->len = end;
    }
    memcpy(sg->buf + w->off, w->body, w->len);
}

/* mq_sm names only bodies it asked to store, in segments not freed. */
static void *body_copy(struct fuzz_broker *fb, uint32_t seg, uint32_t off,
                       size_t len)
{
    void *body;

    if (len == 0) {
        return NULL;
    }
    if (seg >= fb->n_segs || (size_t)off + len > fb->segs[seg].len) {
        abort(); /* a finding: a ref to nothing */
    }
    body = xmalloc(len);
    memcpy(body, fb->segs[seg].buf + off, len);
    return body;
}

/* What a node does with a result: store its bodies, fill those it names,
 * drop the segments it freed. */
static void bodies(struct fuzz_broker *fb, struct mq_sm_result *r)
{
    size_t i;

    for (i = 0; i < r->n_writes; i++) {
        body_store(fb, &r->writes[i]);
    }
    for (i = 0; i < r->n_deliveries; i++) {
        r->deliveries[i].body = body_copy(fb, r->deliveries[i].seg,
                                          r->deliveries[i].off,
                                          r->deliveries[i].body_len);
    }
    for (i = 0; i < r->n_dead; i++) {
        r->dead[i].body = body_copy(fb, r->dead[i].seg, r->dead[i].off,
                                    r->dead[i].body_len);
    }
    for (i = 0; i < r->n_freed; i++) {
        free(fb->segs[r->freed[i]].buf);
        fb->segs[r->freed[i]].buf = NULL;
        fb->segs[r->freed[i]].len = 0;
    }
}

static unsigned fb_shard_count(void *self)
{
    (void)self;
    return 1;
}

static unsigned fb_shard_of(void *self, const char *v, size_t vl,
                            const char *q, size_t ql)
{
    (void)self;
    (void)v;
    (void)vl;
    (void)q;
    (void)ql;
    return 0;
}

static void fb_submit(void *self, struct amqp_broker_call *c)
{
    struct fuzz_broker *fb = self;

    c->status = OUTCOME_OK;
    if (c->kind == AMQP_BROKER_META) {
        meta_sm_apply(fb->meta, &c->meta, &c->meta_result);
    } else {
        mq_sm_apply(fb->mq, clock_wall_ms(), &c->mq, &c->mq_result);
        bodies(fb, &c->mq_result);
    }
    c->cb(c);
}

static const struct meta_sm *fb_meta_view(void *self)
{
    return ((struct fuzz_broker *)self)->meta;
}

static const struct amqp_broker_ops fb_ops = {
    .shard_count = fb_shard_count,
    .shard_of = fb_shard_of,
    .submit = fb_submit,
    .meta_view = fb_meta_view,
};

static uv_loop_t loop;
static struct fuzz_broker broker;
static int port;
static struct buf handshake;

static void add_method(struct buf *b, uint16_t ch, struct amqp_method *m)
{
    (void)amqp_method_encode(b, ch, m, 0);
}

static void init(void)
{
    struct amqp_server_config cfg;
    struct amqp_broker b = {.ops = &fb_ops, .self = &broker};
    struct amqp_server *srv;
    struct amqp_method m;
    static const char plain[] = "\0guest\0guest";
    char err[256];

    log_init("fuzz", LOG_ERROR);
    uv_loop_init(&loop);
    broker.mq = mq_sm_new(NULL);
    {
        struct mq_sm_cmd era = {.type = MQ_SM_ERA};
        struct mq_sm_result res;

        /* a node's first leader: bodies external from here on */
        mq_sm_apply(broker.mq, 0, &era, &res);
        mq_sm_result_clear(&res);
    }
    broker.meta = meta_sm_new();
    memset(&cfg, 0, sizeof(cfg));
    cfg.host = "127.0.0.1";
    cfg.router_id = 1;
    srv = amqp_server_new(&loop, &cfg, &b, err, sizeof(err));
    if (srv == NULL) {
        abort();
    }
    port = amqp_server_port(srv);
    buf_init(&handshake);
    buf_append(&handshake, AMQP_PROTOCOL_HEADER, AMQP_PROTOCOL_HEADER_SIZE);
    amqp_method_init(&m, AMQP_CONNECTION_START_OK);
    m.connection_start_ok.mechanism = amqp_cstr("PLAIN");
    m.connection_start_ok.response.data = (const uint8_t *)plain;
    m.connection_start_ok.response.len = sizeof(plain) - 1;
    add_method(&handshake, 0, &m);
    amqp_method_init(&m, AMQP_CONNECTION_TUNE_OK);
    m.connection_tune_ok.channel_max = 8;
    m.connection_tune_ok.frame_max = 131072;
    add_method(&handshake, 0, &m);
    amqp_method_init(&m, AMQP_CONNECTION_OPEN);
    m.connection_open.virtual_host = amqp_cstr("/");
    add_method(&handshake, 0, &m);
    amqp_method_init(&m, AMQP_CHANNEL_OPEN);
    add_method(&handshake, 1, &m);
}

static int client_connect(void)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        abort();
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

/* Write everything, running the loop while the socket is full. */
static void send_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        char sink[65536];

        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN) {
            return; /* the server closed on us: fine */
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        while (recv(fd, sink, sizeof(sink), 0) > 0) {
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    uint64_t deadline;
    int fd;

    if (!ready) {
        init();
        ready = 1;
    }
    if (size == 0) {
        return 0;
    }
    fd = client_connect();
    if (data[0] & 1) {
        send_all(fd, (const uint8_t *)handshake.data, handshake.len);
    }
    send_all(fd, data + 1, size - 1);
    shutdown(fd, SHUT_WR);
    deadline = clock_mono_ms() + 200;
    while (clock_mono_ms() < deadline) {
        char sink[65536];
        ssize_t r;

        uv_run(&loop, UV_RUN_NOWAIT);
        r = recv(fd, sink, sizeof(sink), 0);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
            break;
        }
    }
    close(fd);
    /* Let the server see the close and free the connection. */
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_run(&loop, UV_RUN_NOWAIT);
    return 0;
}
