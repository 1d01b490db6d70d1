/*
 * forkdump: serialize a process's state in a forked child, so the parent's
 * event loop keeps running while a large state is written out.
 *
 * fork() gives the child a copy-on-write image of the parent at one
 * instant: whatever the parent changes afterwards, the child serializes the
 * state as it was when forkdump_start returned. The child runs @produce,
 * streams the bytes it made to the parent through a pipe and exits; the
 * parent reads them with forkdump_collect, which blocks and belongs on a
 * worker thread (libuv's threadpool), never on the loop.
 *
 * The child runs at nice FORKDUMP_NICE: it takes the CPU the parent leaves
 * (a busy machine makes the snapshot slower, not the parent's requests).
 *
 * Wire (private to this module): header {magic, length}, the bytes, trailer
 * {magic}. A child that dies or fails sends no trailer, so a short or
 * garbled stream is an error, never a truncated state taken for whole.
 *
 * Lifecycle and threads:
 *   forkdump_start    loop thread; forks. The child calls only @produce,
 *                     write() and _exit(): @produce must not log, take locks
 *                     other threads may hold, or touch the parent's fds.
 *   forkdump_collect  one worker thread, once; reads until the trailer and
 *                     reaps the child.
 *   forkdump_abort    any thread (the loop, on shutdown): kills the child if
 *                     it was not reaped yet; collect then fails promptly.
 *   forkdump_finish   loop thread, after collect returned (or if collect
 *                     never ran): closes the pipe, reaps a child still left.
 * The struct is owned by the caller and must stay put from start to finish.
 *
 * Errors: forkdump_start returns -1 (errno set) when pipe() or fork()
 * fails, and the caller serializes inline instead; forkdump_collect returns
 * -1 for anything short of a whole stream and a clean child exit.
 */
#ifndef RINGMQ_FORKDUMP_H
#define RINGMQ_FORKDUMP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define FORKDUMP_NICE 19

/* In the child: serialize into a malloc'd buffer (ownership passes to the
 * child's caller, which exits without freeing). 0 on success. */
typedef int (*forkdump_produce_fn)(void *data, void **buf, size_t *len);

struct forkdump {
    pid_t pid;
    int fd; /* read end, parent side */
    pthread_mutex_t lock; /* pid/reaped between collect and abort */
    bool reaped;
    bool killed;  /* signalled: its output is not whole */
    bool aborted; /* by forkdump_abort: failures are expected */
};

int forkdump_start(struct forkdump *d, forkdump_produce_fn produce,
                   void *data);
/* Read the child's bytes into a buffer from @alloc (malloc-compatible) of
 * at most @max_len bytes. 0 with out and out_len set, or -1. */
int forkdump_collect(struct forkdump *d, size_t max_len,
                     void *(*alloc)(size_t), void **out, size_t *out_len);
void forkdump_abort(struct forkdump *d);
void forkdump_finish(struct forkdump *d);

#endif
