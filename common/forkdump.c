/* forkdump: see forkdump.h. */
#include "common/forkdump.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/invariant.h"

#define HEAD_MAGIC UINT64_C(0x504d55444b524f46) /* "FORKDUMP" */
#define TAIL_MAGIC UINT64_C(0x454e4f44504d5544) /* "DUMPDONE" */

/* Fewer wake-ups of the reader than the default 64 KiB pipe. */
#define PIPE_BYTES (1 << 20)

/* All @len bytes through @fd, whatever the pipe takes at a time: read
 * into @in, or write @out. -1 on error or end of file. */
static int move_all(int fd, void *in, const void *out, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = in != NULL ? read(fd, (char *)in + done, len - done)
                               : write(fd, (const char *)out + done,
                                       len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
    return move_all(fd, NULL, buf, len);
}

static int read_all(int fd, void *buf, size_t len)
{
    INVARIANT(buf != NULL); /* NULL would mean "write" to move_all */
    return move_all(fd, buf, NULL, len);
}

static _Noreturn void child_main(int fd, pid_t parent,
                                 forkdump_produce_fn produce, void *data)
{
    uint64_t head[2];
    uint64_t tail = TAIL_MAGIC;
    void *buf = NULL;
    size_t len = 0;

    /* a parent killed with -9 takes its child along: nobody reads */
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(3);
    }
    /* the parent serves clients meanwhile: on a busy machine a snapshot
     * may take longer, the parent's loop must not wait for a CPU */
    (void)setpriority(PRIO_PROCESS, 0, FORKDUMP_NICE);
    if (produce(data, &buf, &len) != 0) {
        _exit(1);
    }
    head[0] = HEAD_MAGIC;
    head[1] = len;
    if (write_all(fd, head, sizeof head) != 0 ||
        write_all(fd, buf != NULL ? buf : "", len) != 0 ||
        write_all(fd, &tail, sizeof tail) != 0) {
        _exit(2);
    }
    /* _exit: no atexit handlers, no stdio flush, no leak check of the
     * parent's copy */
    _exit(0);
}

int forkdump_start(struct forkdump *d, forkdump_produce_fn produce,
                   void *data)
{
    int p[2];
    pid_t parent = getpid();
    pid_t pid;

    memset(d, 0, sizeof *d);
    d->fd = -1;
    if (pipe2(p, O_CLOEXEC) != 0) {
        return -1;
    }
    (void)fcntl(p[1], F_SETPIPE_SZ, PIPE_BYTES);
    pid = fork();
    if (pid < 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        child_main(p[1], parent, produce, data);
    }
    close(p[1]);
    d->pid = pid;
    d->fd = p[0];
    pthread_mutex_init(&d->lock, NULL);
    return 0;
}

static void kill_child(struct forkdump *d)
{
    pthread_mutex_lock(&d->lock);
    if (!d->reaped && !d->killed) {
        d->killed = true;
        (void)kill(d->pid, SIGKILL);
    }
    pthread_mutex_unlock(&d->lock);
}

/* Reap the child (blocking); true if it exited with status 0. Under the
 * lock, so that abort never signals a pid already reaped (and maybe
 * reused). */
static bool reap(struct forkdump *d)
{
    int status = 0;
    pid_t r;
    bool ok;

    pthread_mutex_lock(&d->lock);
    if (d->reaped) {
        pthread_mutex_unlock(&d->lock);
        return false;
    }
    do {
        r = waitpid(d->pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    d->reaped = true;
    ok = r == d->pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
         !d->killed;
    pthread_mutex_unlock(&d->lock);
    return ok;
}

int forkdump_collect(struct forkdump *d, size_t max_len,
                     void *(*alloc)(size_t), void **out, size_t *out_len)
{
    uint64_t head[2];
    uint64_t tail = 0;
    char extra;
    void *buf = NULL;
    bool whole;

    INVARIANT(d->fd >= 0);
    whole = read_all(d->fd, head, sizeof head) == 0 &&
            head[0] == HEAD_MAGIC && head[1] <= max_len;
    if (whole) {
        buf = (alloc != NULL ? alloc : malloc)(head[1] > 0 ? head[1] : 1);
        whole = buf != NULL && read_all(d->fd, buf, head[1]) == 0 &&
                read_all(d->fd, &tail, sizeof tail) == 0 &&
                tail == TAIL_MAGIC && read(d->fd, &extra, 1) == 0;
    }
    /* the child exits once it wrote everything, or was told to */
    if (!whole) {
        kill_child(d);
    }
    if (!reap(d) || !whole) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = head[1];
    return 0;
}

void forkdump_abort(struct forkdump *d)
{
    pthread_mutex_lock(&d->lock);
    d->aborted = true;
    pthread_mutex_unlock(&d->lock);
    kill_child(d);
}

void forkdump_finish(struct forkdump *d)
{
    if (d->fd < 0) {
        return;
    }
    close(d->fd);
    d->fd = -1;
    /* collect never ran: nothing is read any more, so a child still
     * writing must not be waited for */
    kill_child(d);
    (void)reap(d);
    pthread_mutex_destroy(&d->lock);
}
