/* Unit tests for common/tcp_dead_peer: the socket options it sets on a
 * connected libuv TCP handle, and that it leaves a handle without a socket
 * alone. (What the options do after a partition: tests/fault
 * test_heal_resume.py.) */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <uv.h>

#include "common/tcp_dead_peer.h"

static int connected;

static void on_connect(uv_connect_t *req, int status)
{
    (void)req;
    assert_int_equal(status, 0);
    connected = 1;
}

static void on_connection(uv_stream_t *server, int status)
{
    uv_tcp_t *peer = server->data;

    assert_int_equal(status, 0);
    assert_int_equal(uv_accept(server, (uv_stream_t *)peer), 0);
}

static int opt(uv_tcp_t *h, int level, int name)
{
    uv_os_fd_t fd;
    int v = -1;
    unsigned u = 0;
    socklen_t len = sizeof(v);

    assert_int_equal(uv_fileno((uv_handle_t *)h, &fd), 0);
    if (name == TCP_USER_TIMEOUT) {
        len = sizeof(u);
        assert_int_equal(getsockopt(fd, level, name, &u, &len), 0);
        return (int)u;
    }
    assert_int_equal(getsockopt(fd, level, name, &v, &len), 0);
    return v;
}

static void test_options_on_a_connection(void **state)
{
    uv_loop_t loop;
    uv_tcp_t server, client, peer, unopened;
    uv_connect_t req;
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int len = sizeof(bound);

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_tcp_init(&loop, &server);
    uv_tcp_init(&loop, &client);
    uv_tcp_init(&loop, &peer);
    uv_tcp_init(&loop, &unopened);
    server.data = &peer;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_bind(&server, (struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&server, 4, on_connection), 0);
    assert_int_equal(
        uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len), 0);
    assert_int_equal(uv_tcp_connect(&req, &client, (struct sockaddr *)&bound,
                                    on_connect),
                     0);
    while (!connected) {
        uv_run(&loop, UV_RUN_ONCE);
    }

    assert_int_equal(opt(&client, IPPROTO_TCP, TCP_USER_TIMEOUT), 0);
    tcp_dead_peer(&client, 5000);
    assert_int_equal(opt(&client, SOL_SOCKET, SO_KEEPALIVE), 1);
    assert_int_equal(opt(&client, IPPROTO_TCP, TCP_KEEPIDLE), 1);
    assert_int_equal(opt(&client, IPPROTO_TCP, TCP_KEEPINTVL), 1);
    assert_int_equal(opt(&client, IPPROTO_TCP, TCP_KEEPCNT), 6);
    assert_int_equal(opt(&client, IPPROTO_TCP, TCP_USER_TIMEOUT), 5000);

    tcp_dead_peer(&unopened, 5000); /* no socket yet: nothing happens */

    uv_close((uv_handle_t *)&client, NULL);
    uv_close((uv_handle_t *)&peer, NULL);
    uv_close((uv_handle_t *)&server, NULL);
    uv_close((uv_handle_t *)&unopened, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options_on_a_connection),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
