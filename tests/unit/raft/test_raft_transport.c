/* Unit tests for raft/transport: the socket options of the connections it
 * hands to raft (TCP_NODELAY, which libraft 0.15 never sets, and the dead
 * peer options), for a peer given as an IPv4 literal and as a host name;
 * and the address splitting. (What Nagle cost: BENCHMARKS.md.) */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "raft/transport.h"

struct env {
    uv_loop_t loop;
    uv_tcp_t server;
    uv_tcp_t peers[4];
    unsigned n_peers;
    int port;
    struct raft_uv_transport t;
    struct uv_stream_s *stream; /* what raft would get */
    int status;
    bool done;
    bool closed;
};

static void on_connection(uv_stream_t *server, int status)
{
    struct env *e = server->data;
    uv_tcp_t *peer;

    assert_int_equal(status, 0);
    assert_true(e->n_peers < 4);
    peer = &e->peers[e->n_peers++];
    uv_tcp_init(&e->loop, peer);
    assert_int_equal(uv_accept(server, (uv_stream_t *)peer), 0);
}

static void on_connect(struct raft_uv_connect *req, struct uv_stream_s *stream,
                       int status)
{
    struct env *e = req->data;

    e->stream = stream;
    e->status = status;
    e->done = true;
}

static void on_transport_closed(struct raft_uv_transport *t)
{
    struct env *e = t->data;

    e->closed = true;
}

static int opt(uv_stream_t *s, int level, int name)
{
    uv_os_fd_t fd;
    unsigned v = 0;
    socklen_t len = sizeof(v);

    assert_int_equal(uv_fileno((uv_handle_t *)s, &fd), 0);
    assert_int_equal(getsockopt(fd, level, name, &v, &len), 0);
    return (int)v;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    struct sockaddr_in addr;
    struct sockaddr_in bound;
    int len = sizeof(bound);

    assert_non_null(e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_tcp_init(&e->loop, &e->server);
    e->server.data = e;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_bind(&e->server, (struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&e->server, 4, on_connection),
                     0);
    assert_int_equal(
        uv_tcp_getsockname(&e->server, (struct sockaddr *)&bound, &len), 0);
    e->port = ntohs(bound.sin_port);
    assert_int_equal(rtransport_init(&e->t, &e->loop, "127.0.0.1:0"), 0);
    e->t.data = e;
    assert_int_equal(e->t.init(&e->t, 1, "127.0.0.1:0"), 0);
    *state = e;
    return 0;
}

static void free_stream(uv_handle_t *h)
{
    raft_free(h);
}

static int teardown(void **state)
{
    struct env *e = *state;
    unsigned i;

    e->t.close(&e->t, on_transport_closed);
    while (!e->closed) {
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    rtransport_release(&e->t);
    for (i = 0; i < e->n_peers; i++) {
        uv_close((uv_handle_t *)&e->peers[i], NULL);
    }
    uv_close((uv_handle_t *)&e->server, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    free(e);
    return 0;
}

/* Connect to the listener through the transport as raft would and check the
 * options of the stream raft gets. */
static void connect_and_check(struct env *e, const char *host)
{
    struct raft_uv_connect req;
    char address[64];

    snprintf(address, sizeof(address), "%s:%d", host, e->port);
    req.data = e;
    e->done = false;
    assert_int_equal(e->t.connect(&e->t, &req, 2, address, on_connect), 0);
    while (!e->done) {
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    assert_int_equal(e->status, 0);
    assert_non_null(e->stream);

    /* Without it, pipelined AppendEntries wait for delayed ACKs. */
    assert_int_equal(opt(e->stream, IPPROTO_TCP, TCP_NODELAY), 1);
    assert_int_equal(opt(e->stream, SOL_SOCKET, SO_KEEPALIVE), 1);
    assert_int_equal(opt(e->stream, IPPROTO_TCP, TCP_USER_TIMEOUT), 5000);

    uv_close((uv_handle_t *)e->stream, free_stream);
    e->stream = NULL;
}

static void test_ipv4_peer_options(void **state)
{
    connect_and_check(*state, "127.0.0.1");
}

static void test_named_peer_options(void **state)
{
    connect_and_check(*state, "localhost");
}

static void test_split(void **state)
{
    char host[16];
    int port = -1;

    (void)state;
    assert_int_equal(rtransport_split("node-1.svc:9001", host, sizeof(host),
                                      &port),
                     0);
    assert_string_equal(host, "node-1.svc");
    assert_int_equal(port, 9001);
    assert_int_equal(rtransport_split("nocolon", host, sizeof(host), &port),
                     -1);
    assert_int_equal(rtransport_split(":80", host, sizeof(host), &port), -1);
    assert_int_equal(rtransport_split("h:70000", host, sizeof(host), &port),
                     -1);
    assert_int_equal(rtransport_split("h:", host, sizeof(host), &port), -1);
    assert_int_equal(rtransport_split("a-host-name-too-long:1", host,
                                      sizeof(host), &port),
                     -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ipv4_peer_options, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_named_peer_options, setup,
                                        teardown),
        cmocka_unit_test(test_split),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
