/* frame_read: see frame_read.h. */
#include "tests/unit/lib/frame_read.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

void frame_read(int fd, struct rpc_frame_decoder *dec,
                struct rpc_frame *frame, bool (*wait)(void *arg), void *arg)
{
    char b[4096];
    size_t used;
    ssize_t n;
    int rv = 0;

    while (rv == 0) {
        assert_true(wait(arg));
        n = read(fd, b, sizeof(b));
        assert_true(n > 0);
        rv = rpc_frame_decoder_feed(dec, b, (size_t)n, &used, frame);
    }
    assert_int_equal(rv, 1);
}
