/* kaio: see kaio.h. */
#include "raft/kaio.h"

#include <dlfcn.h>
#include <errno.h>
#include <linux/aio_abi.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h> /* RWF_NOWAIT */

/* Contexts waiting for the destroying thread; a full queue destroys in
 * the caller, as raft would have. */
#define KAIO_QUEUE 64

typedef long (*syscall_fn)(long, ...);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static syscall_fn libc_syscall;
static int enabled;

static _Thread_local unsigned probing;

static atomic_uint_fast64_t submits_to_pool;
static atomic_uint_fast64_t destroys_deferred;
static atomic_uint_fast64_t destroys_done;

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static aio_context_t queue[KAIO_QUEUE];
static unsigned queue_head, queue_len;
static int destroyer_state; /* 0 not started, 1 running, -1 cannot start */

static void init_once(void)
{
    const char *off = getenv("RINGMQ_RAFT_DISK_ON_LOOP");

    libc_syscall = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
    enabled = libc_syscall != NULL && (off == NULL || strcmp(off, "1") != 0);
}

static void *destroyer(void *arg)
{
    (void)arg;
    for (;;) {
        aio_context_t ctx;

        pthread_mutex_lock(&queue_lock);
        while (queue_len == 0) {
            pthread_cond_wait(&queue_cond, &queue_lock);
        }
        ctx = queue[queue_head];
        queue_head = (queue_head + 1) % KAIO_QUEUE;
        queue_len--;
        pthread_mutex_unlock(&queue_lock);
        (void)libc_syscall(SYS_io_destroy, ctx);
        atomic_fetch_add(&destroys_done, 1);
    }
    return NULL;
}

/* Hand @ctx to the destroying thread: false if it cannot take it. */
static int defer_destroy(aio_context_t ctx)
{
    int queued = 0;

    pthread_mutex_lock(&queue_lock);
    if (destroyer_state == 0) {
        pthread_t t;
        pthread_attr_t attr;

        destroyer_state = -1;
        if (pthread_attr_init(&attr) == 0) {
            (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            if (pthread_create(&t, &attr, destroyer, NULL) == 0) {
                destroyer_state = 1;
            }
            pthread_attr_destroy(&attr);
        }
    }
    if (destroyer_state == 1 && queue_len < KAIO_QUEUE) {
        queue[(queue_head + queue_len) % KAIO_QUEUE] = ctx;
        queue_len++;
        queued = 1;
        pthread_cond_signal(&queue_cond);
    }
    pthread_mutex_unlock(&queue_lock);
    if (queued) {
        atomic_fetch_add(&destroys_deferred, 1);
    }
    return queued;
}

/* The interposer. libc's syscall() reads six arguments whatever the call
 * takes; so does this one, and hands all six on. */
long syscall(long number, ...)
{
    va_list ap;
    long a[6];
    int i;

    va_start(ap, number);
    for (i = 0; i < 6; i++) {
        a[i] = va_arg(ap, long);
    }
    va_end(ap);
    pthread_once(&once, init_once);
    if (libc_syscall == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (enabled && number == SYS_io_submit && probing == 0 && a[1] == 1) {
        struct iocb **iocbs = (struct iocb **)a[2];

        if (iocbs != NULL && iocbs[0] != NULL &&
            (iocbs[0]->aio_rw_flags & RWF_NOWAIT) != 0) {
            atomic_fetch_add(&submits_to_pool, 1);
            errno = EAGAIN;
            return -1;
        }
    }
    if (enabled && number == SYS_io_destroy &&
        defer_destroy((aio_context_t)a[0])) {
        return 0;
    }
    return libc_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

void kaio_probe_begin(void)
{
    probing++;
}

void kaio_probe_end(void)
{
    if (probing > 0) {
        probing--;
    }
}

void kaio_stats(struct kaio_stats *out)
{
    out->submits_to_pool = atomic_load(&submits_to_pool);
    out->destroys_deferred = atomic_load(&destroys_deferred);
    out->destroys_done = atomic_load(&destroys_done);
}

int kaio_enabled(void)
{
    pthread_once(&once, init_once);
    return enabled;
}
