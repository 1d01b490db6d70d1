/* raft/kaio: the interposed syscall() keeps raft's AIO waits off the
 * caller's thread and leaves every other call alone. */
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "raft/kaio.h"

struct fix {
    char dir[64];
    char path[96];
    int fd;
    aio_context_t ctx;
};

static int setup(void **state)
{
    struct fix *f = calloc(1, sizeof(*f));

    snprintf(f->dir, sizeof(f->dir), "/tmp/ringmq-kaio.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/file", f->dir);
    f->fd = open(f->path, O_RDWR | O_CREAT, 0600);
    assert_true(f->fd >= 0);
    assert_int_equal(syscall(SYS_io_setup, 4, &f->ctx), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;

    if (f->ctx != 0) {
        (void)syscall(SYS_io_destroy, f->ctx);
    }
    close(f->fd);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static long submit_write(struct fix *f, const char *text, int flags)
{
    struct iocb cb;
    struct iocb *cbs[1] = {&cb};

    memset(&cb, 0, sizeof(cb));
    cb.aio_fildes = (uint32_t)f->fd;
    cb.aio_lio_opcode = IOCB_CMD_PWRITE;
    cb.aio_buf = (uint64_t)(uintptr_t)text;
    cb.aio_nbytes = strlen(text);
    cb.aio_rw_flags = flags;
    return syscall(SYS_io_submit, f->ctx, 1L, cbs);
}

/* The result of the one submitted write. */
static int64_t reap_one(struct fix *f)
{
    struct io_event ev;

    assert_int_equal(syscall(SYS_io_getevents, f->ctx, 1L, 1L, &ev, NULL), 1);
    return ev.res;
}

/* What raft submits on its loop thread (RWF_NOWAIT) is refused with the
 * EAGAIN raft answers by writing in its threadpool; it never reaches the
 * file. */
static void test_nowait_submit_goes_to_pool(void **state)
{
    struct fix *f = *state;
    struct kaio_stats a, b;
    char buf[8] = "";

    assert_true(kaio_enabled());
    kaio_stats(&a);
    errno = 0;
    assert_int_equal(submit_write(f, "loop", RWF_NOWAIT), -1);
    assert_int_equal(errno, EAGAIN);
    kaio_stats(&b);
    assert_int_equal(b.submits_to_pool, a.submits_to_pool + 1);
    assert_int_equal(pread(f->fd, buf, sizeof(buf), 0), 0);

    /* the threadpool's submit (no RWF_NOWAIT) reaches the kernel */
    assert_int_equal(submit_write(f, "pool", 0), 1);
    assert_int_equal(reap_one(f), 4);
    assert_int_equal(pread(f->fd, buf, sizeof(buf), 0), 4);
    assert_memory_equal(buf, "pool", 4);
    kaio_stats(&a);
    assert_int_equal(a.submits_to_pool, b.submits_to_pool);
}

/* raft_init's probe of the data directory submits with RWF_NOWAIT and
 * takes EAGAIN as fatal (0.15): inside the bracket it reaches the kernel. */
static void test_probe_passes_through(void **state)
{
    struct fix *f = *state;
    struct kaio_stats a, b;
    long rv;

    kaio_stats(&a);
    kaio_probe_begin();
    kaio_probe_begin(); /* nested */
    kaio_probe_end();
    rv = submit_write(f, "probe", RWF_NOWAIT);
    kaio_probe_end();
    kaio_stats(&b);
    assert_int_equal(b.submits_to_pool, a.submits_to_pool);
    if (rv == 1) {
        /* the kernel's own answer: written, or e.g. -EAGAIN for a buffered
         * file */
        (void)reap_one(f);
    } else {
        assert_int_equal(rv, -1); /* refused by the kernel itself */
    }
    /* outside the bracket again */
    assert_int_equal(submit_write(f, "x", RWF_NOWAIT), -1);
    kaio_stats(&a);
    assert_int_equal(a.submits_to_pool, b.submits_to_pool + 1);
}

/* io_destroy returns at once and the context is destroyed on the other
 * thread: afterwards the kernel no longer knows it. */
static void test_destroy_is_deferred(void **state)
{
    struct fix *f = *state;
    struct kaio_stats a, b;
    struct io_event ev;
    struct timespec nap = {0, 1000000};
    int waited;

    kaio_stats(&a);
    assert_int_equal(syscall(SYS_io_destroy, f->ctx), 0);
    kaio_stats(&b);
    assert_int_equal(b.destroys_deferred, a.destroys_deferred + 1);
    for (waited = 0; waited < 5000; waited++) {
        kaio_stats(&b);
        if (b.destroys_done == b.destroys_deferred) {
            break;
        }
        nanosleep(&nap, NULL);
    }
    assert_int_equal(b.destroys_done, b.destroys_deferred);
    errno = 0;
    assert_int_equal(syscall(SYS_io_getevents, f->ctx, 0L, 1L, &ev, NULL),
                     -1);
    assert_int_equal(errno, EINVAL);
    f->ctx = 0;
}

/* Everything else is libc's syscall(), with its arguments. */
static void test_other_calls_pass_through(void **state)
{
    struct fix *f = *state;
    char buf[4] = "";

    assert_int_equal(syscall(SYS_gettid), gettid());
    errno = 0;
    assert_int_equal(syscall(SYS_close, -1), -1);
    assert_int_equal(errno, EBADF);
    /* the fourth argument arrives too: 3 bytes at offset 2 */
    assert_int_equal(pwrite(f->fd, "abcdef", 6, 0), 6);
    assert_int_equal(syscall(SYS_pread64, f->fd, buf, 3L, 2L), 3);
    assert_memory_equal(buf, "cde", 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nowait_submit_goes_to_pool,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_passes_through, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_destroy_is_deferred, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_other_calls_pass_through, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
