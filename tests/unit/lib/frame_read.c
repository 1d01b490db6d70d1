/* frame_read: see frame_read.h. */
#include "tests/unit/lib/frame_read.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "proto/rpc_frame.h"

ProtobufCMessage *frame_read(int fd, const ProtobufCMessageDescriptor *desc,
                             bool (*wait)(void *arg), void *arg)
{
    struct rpc_frame_decoder dec;
    struct rpc_frame frame;
    ProtobufCMessage *msg = NULL;
    char b[4096]; /* the frame may point into it: unpacked before return */
    size_t used;
    ssize_t n;
    int rv = 0;

    rpc_frame_decoder_init(&dec, 0);
    while (rv == 0) {
        assert_true(wait(arg));
        n = read(fd, b, sizeof(b));
        assert_true(n > 0);
        rv = rpc_frame_decoder_feed(&dec, b, (size_t)n, &used, &frame);
    }
    assert_int_equal(rv, 1);
    msg = protobuf_c_message_unpack(desc, NULL, frame.len, frame.payload);
    assert_non_null(msg);
    rpc_frame_decoder_close(&dec);
    return msg;
}

int frame_connect(unsigned port)
{
    struct sockaddr_in a;
    int fd;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

bool frame_fd_readable(void *fd)
{
    struct pollfd p = {.fd = *(int *)fd, .events = POLLIN};

    return poll(&p, 1, 0) == 1;
}
