/*
 * kaio: keeps the Linux AIO system calls of raft 0.15's libuv backend that
 * wait for the disk off the loop thread (docs/raft.md, "Disk waits on the
 * loop thread").
 *
 * raft_uv (Debian's libraft 0.15) appends to its open segment with Linux
 * AIO: where the data directory's file system can (ext4, xfs), it calls
 * io_submit with RWF_NOWAIT on the loop thread and waits for completion on
 * an eventfd; it falls back to libuv's threadpool only when io_submit says
 * EAGAIN. Two of its calls still wait on the loop, measured here (perf
 * sched, stacks of the loop thread in state D):
 *   - io_submit of an O_DIRECT + O_DSYNC append: when the write itself
 *     completes before io_submit returns (a fast or virtual disk), the
 *     kernel completes it inline, device cache flush included: 30-45 ms;
 *   - io_destroy of a closed segment's AIO context (every 8 MiB of log):
 *     it waits for the context's teardown (an RCU grace period): 25-54 ms.
 * Every group and connection of the node stops for as long. raft offers
 * no setting for either, so this module interposes libc's syscall(), the
 * function libraft makes both calls through: an executable's definition
 * of a symbol comes before libc's for every shared library in the process
 * (ELF symbol interposition). Linking this module (any use of kaio_*)
 * puts the interposer in the program.
 *
 * What changes, when enabled (the default):
 *   - io_submit of one iocb carrying RWF_NOWAIT fails with EAGAIN, so
 *     raft takes its own fallback: the write runs in libuv's threadpool
 *     (io_submit without RWF_NOWAIT, then io_getevents, on a worker). A
 *     probe (kaio_probe_begin/end around raft_init, whose data directory
 *     probe submits with RWF_NOWAIT and treats EAGAIN as fatal in 0.15)
 *     passes through;
 *   - io_destroy returns 0 at once and a background thread destroys the
 *     context. raft only destroys a context once its writes completed, and
 *     the kernel never reuses a context id before it is destroyed.
 * Every other system call passes through unchanged.
 *
 * RINGMQ_RAFT_DISK_ON_LOOP=1 in the environment disables it (a diagnostic
 * switch: raft 0.15 as shipped, for comparisons).
 * Threads: syscall() may be called from any thread; the probe bracket is
 * per thread; counters are atomic.
 */
#ifndef RINGMQ_KAIO_H
#define RINGMQ_KAIO_H

#include <stdint.h>

/* The calling thread's io_submit calls pass through until kaio_probe_end
 * (nesting allowed). */
void kaio_probe_begin(void);
void kaio_probe_end(void);

struct kaio_stats {
    uint64_t submits_to_pool;    /* io_submit answered EAGAIN */
    uint64_t destroys_deferred;  /* io_destroy handed to the thread */
    uint64_t destroys_done;      /* of those, destroyed */
};
void kaio_stats(struct kaio_stats *out);

/* Whether the interposer changes anything in this process (not disabled
 * by the environment). */
int kaio_enabled(void);

#endif
