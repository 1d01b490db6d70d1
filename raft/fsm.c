/* rfsm: see fsm.h. Below raft/group: includes raft/types.h, never group.h. */
#include "raft/fsm.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/invariant.h"
#include "common/log.h"
#include "common/lz.h"
#include "raft_entry.pb-c.h"

static void *rfsm_raft_alloc(size_t n)
{
    return raft_malloc(n);
}

static int rfsm_apply(struct raft_fsm *fsm,
                      const struct raft_buffer *buf,
                      void **result)
{
    struct rfsm *a = fsm->data;
    Ringmq__RaftBatch *b;
    struct rgroup_cmd *mine = NULL;
    bool claimed;
    size_t i;

    INVARIANT(a != NULL && &a->raft_fsm == fsm && buf != NULL);
    if (a->raft != NULL) {
        /* raft applies each entry once, in log order (0.15 raises
         * last_applied after each) */
        INVARIANT(!a->applied_any || a->raft->last_applied > a->applied_index);
        a->applied_any = true;
        a->applied_index = a->raft->last_applied;
    }
    *result = NULL; /* followers drop it: never allocate */
    /* Into the arena: no malloc per command, nor per copy of its bytes */
    b = ringmq__raft_batch__unpack(pb_arena_allocator(&a->batch_arena),
                                   buf->len, buf->base);
    if (b == NULL) {
        pb_arena_reset(&a->batch_arena);
        a->corrupt_entries++;
        log_error("raft fsm: corrupt batch entry (%zu bytes) skipped",
                  buf->len);
        return 0;
    }
    if (a->claim != NULL) {
        mine = a->claim(a->claim_data, b->proposer, b->seq, b->n_cmds);
    }
    if (a->stamp != NULL) {
        clock_stamp_seen(a->stamp, b->time_ms, clock_mono_ms());
    }
    if (b->time_ms > a->newest_stamp) {
        a->newest_stamp = b->time_ms;
    }
    claimed = mine != NULL;
    for (i = 0; i < b->n_cmds; i++) {
        struct rgroup_cmd *next;
        const void *data = b->cmds[i].len > 0 ? (const void *)b->cmds[i].data
                                              : (const void *)"";

        /* the claimed commands are this batch's, one for one */
        INVARIANT(!claimed || (mine != NULL && mine->len == b->cmds[i].len));
        next = mine != NULL ? mine->next : NULL;
        a->user.apply(a->user.data, b->time_ms, data, b->cmds[i].len, mine);
        mine = next;
    }
    INVARIANT(mine == NULL);
    a->entries_applied++;
    a->entry_bytes_applied += buf->len;
    a->cmds_applied += b->n_cmds;
    pb_arena_reset(&a->batch_arena); /* b, and the commands' bytes */
    return 0;
}

/* The state, serialized and compressed into a buffer from @alloc. */
static int snapshot_bytes(struct rfsm *a, void *(*alloc)(size_t), void **out,
                          size_t *out_len, size_t *raw_len_out)
{
    void *raw = NULL;
    size_t raw_len = 0;
    int rv;

    if (a->user.snapshot(a->user.data, &raw, &raw_len) != 0) {
        return -1;
    }
    rv = lz_compress(raw != NULL ? raw : "", raw_len, alloc, out, out_len);
    free(raw);
    *raw_len_out = raw_len;
    return rv;
}

/* In the child (common/forkdump): no logging, nothing shared. */
static int produce_in_child(void *data, void **buf, size_t *len)
{
    size_t raw_len;

    return snapshot_bytes(data, malloc, buf, len, &raw_len);
}

/* Children serializing at once in this process: each holds a copy-on-write
 * image and a worker thread, so one at a time. Loop thread only. */
static unsigned dumps_running;

/* Snapshots being written in slices in this process: each holds a worker
 * thread of libuv's pool (4 by default, which raft's disk work shares)
 * while it waits for the loop, and the chunk pool, so one at a time. Loop
 * thread only. */
static unsigned slicings_running;

/*
 * The chunk pool: allocated at the first snapshot in slices and kept, so
 * that a snapshot writes into pages that are already there (first touches
 * of fresh pages cost far more than the copy on a virtual machine) and
 * its memory is the pool plus the compressed output, however large the
 * state. Loop thread only (rfsm_snapshot_chunks, slices_start); a
 * snapshot's worker reaches the buffers through its chunks.
 */
static unsigned char *pool_buf[RFSM_MAX_CHUNKS];
static size_t pool_chunk_bytes = RFSM_CHUNK_BYTES;
static unsigned pool_chunks = RFSM_CHUNKS;

/* A chunk of a snapshot in slices: the loop fills it, the worker seals
 * and compresses it and gives it back. */
struct rfsm_chunk {
    unsigned char *buf; /* a pool buffer */
    size_t off;         /* where its bytes are in the snapshot */
    size_t len;         /* bytes written so far */
    size_t want;        /* bytes it takes (chunk_want) */
    struct rfsm_chunk *next;
};

/*
 * A snapshot written in slices (fsm.h):
 *
 *   loop: take a free chunk ──step──> full ──> full queue ──> worker:
 *         (none free: wait,                    seal, compress into the
 *          woken by a->wake)    <── free list <── frame, give it back
 *
 * The loop fills one chunk at a time (cur) and queues it in order; the
 * worker (slices_compress, at FORKDUMP_NICE) takes them in order, so the
 * frame and the seal see the bytes in order.
 */
struct rfsm_slices {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* the worker waits on it: a full chunk, abort */
    /* under lock */
    struct rfsm_chunk *free;
    struct rfsm_chunk *full_head, *full_tail;
    bool loop_waits; /* the loop found no free chunk: wake it for one */
    bool aborted;    /* the worker gives up */
    /* loop only */
    void *snap; /* the fsm's, until ended */
    struct rfsm_chunk *cur;
    size_t off;   /* bytes written */
    bool waiting; /* since the loop last found no free chunk */
    uint64_t slices;
    uint64_t max_ns;
    uint64_t waits;
    uint64_t started_ns;
    /* fixed at start */
    size_t len;
    unsigned n_chunks;
    struct rfsm_chunk chunks[RFSM_MAX_CHUNKS];
    /* the worker's until snapshot_async returns, then finalize's */
    bool ok; /* compressed */
    size_t out_len;
};

void rfsm_snapshot_chunks(size_t bytes, unsigned n)
{
    unsigned i;

    INVARIANT(slicings_running == 0 && bytes % 8 == 0 &&
              bytes >= 2 * RGROUP_SEAL_LEN && n >= 1 &&
              n <= RFSM_MAX_CHUNKS);
    for (i = 0; i < RFSM_MAX_CHUNKS; i++) {
        free(pool_buf[i]);
        pool_buf[i] = NULL;
    }
    pool_chunk_bytes = bytes;
    pool_chunks = n;
}

static int pool_fill(void)
{
    unsigned i;

    for (i = 0; i < pool_chunks; i++) {
        if (pool_buf[i] == NULL &&
            (pool_buf[i] = malloc(pool_chunk_bytes)) == NULL) {
            return -1; /* those allocated stay, for the next try */
        }
    }
    return 0;
}

/* The bytes a chunk at @left bytes from the end takes: a whole buffer, so
 * that every chunk but the last ends at a multiple of 8 (the seal reads
 * whole words), but 8 fewer when that would leave fewer than the trailer
 * for the last chunk: the trailer is then in the last chunk alone, where
 * the worker patches it before compressing. */
static size_t chunk_want(size_t left)
{
    size_t n = left < pool_chunk_bytes ? left : pool_chunk_bytes;

    if (left - n > 0 && left - n < RGROUP_SEAL_LEN) {
        n -= RGROUP_SEAL_LEN;
    }
    return n;
}

/* 0, -1 (not now), or 1: nothing to write in slices (an empty snapshot
 * makes no frame): take it inline. */
static int slices_start(struct rfsm *a)
{
    struct rfsm_slices *s;
    size_t len = 0;
    void *snap;
    unsigned i;

    if (pool_fill() != 0) {
        return -1;
    }
    snap = a->user.snapshot_begin(a->user.data, &len);
    if (snap == NULL) {
        return -1;
    }
    if (len == 0 || (a->user.seal_begin != NULL && len < RGROUP_SEAL_LEN)) {
        a->user.snapshot_end(snap);
        return 1;
    }
    s = xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->snap = snap;
    s->len = len;
    s->n_chunks = pool_chunks;
    for (i = 0; i < s->n_chunks; i++) {
        s->chunks[i].buf = pool_buf[i];
        s->chunks[i].next = s->free;
        s->free = &s->chunks[i];
    }
    s->started_ns = clock_mono_ns();
    a->slices = s;
    slicings_running++;
    return 0;
}

/* End the fsm's snapshot, if not yet: it has all its bytes, or never will. */
static void slices_end(struct rfsm *a, struct rfsm_slices *s)
{
    if (s->snap != NULL) {
        a->user.snapshot_end(s->snap);
        s->snap = NULL;
    }
}

/* The worker gives up at its next look (the loop's bytes are ended). */
static void slices_abort(struct rfsm *a, struct rfsm_slices *s)
{
    slices_end(a, s);
    pthread_mutex_lock(&s->lock);
    s->aborted = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* A free chunk for the next bytes, or NULL: the worker then wakes the
 * loop when it frees one. */
static struct rfsm_chunk *chunk_take(struct rfsm *a, struct rfsm_slices *s)
{
    struct rfsm_chunk *c;

    pthread_mutex_lock(&s->lock);
    c = s->free;
    if (c != NULL) {
        s->free = c->next;
    } else {
        s->loop_waits = true;
    }
    pthread_mutex_unlock(&s->lock);
    if (c == NULL) {
        if (!s->waiting) {
            s->waiting = true;
            s->waits++;
            a->slice_waits++;
        }
        return NULL;
    }
    s->waiting = false;
    c->off = s->off;
    c->len = 0;
    c->want = chunk_want(s->len - s->off);
    c->next = NULL;
    return c;
}

static void chunk_queue(struct rfsm_slices *s, struct rfsm_chunk *c)
{
    pthread_mutex_lock(&s->lock);
    if (s->full_tail != NULL) {
        s->full_tail->next = c;
    } else {
        s->full_head = c;
    }
    s->full_tail = c;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* The worker: @c is done with. */
static void chunk_give_back(struct rfsm *a, struct rfsm_slices *s,
                            struct rfsm_chunk *c)
{
    bool wake;

    pthread_mutex_lock(&s->lock);
    c->next = s->free;
    s->free = c;
    wake = s->loop_waits;
    s->loop_waits = false;
    pthread_mutex_unlock(&s->lock);
    if (wake && a->wake != NULL) {
        a->wake(a->wake_data);
    }
}

/* This thread's CPU time: a slice's cost without the time the scheduler
 * gave the CPU to others meanwhile. */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return 0;
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

bool rfsm_snapshot_slicing(const struct rfsm *a)
{
    struct rfsm_slices *s = a->slices;
    bool chunk_free;

    if (s == NULL || s->snap == NULL) {
        return false;
    }
    if (s->cur != NULL || a->wake == NULL) {
        return true; /* without a wake hook, the loop polls for a chunk */
    }
    pthread_mutex_lock(&s->lock);
    chunk_free = s->free != NULL;
    if (!chunk_free) {
        /* the loop may block in poll now, also when its last slice ended
         * on a full chunk without asking for the next one: the worker
         * must wake it when it frees one */
        s->loop_waits = true;
    }
    pthread_mutex_unlock(&s->lock);
    return chunk_free;
}

void rfsm_snapshot_slice(struct rfsm *a)
{
    struct rfsm_slices *s = a->slices;
    uint64_t t0, took, cpu0, cpu;
    size_t wrote = 0;

    if (s == NULL || s->snap == NULL) {
        return;
    }
    cpu0 = thread_cpu_ns();
    t0 = clock_mono_ns();
    for (;;) {
        struct rfsm_chunk *c = s->cur;
        size_t room, n;

        if (c == NULL && (c = s->cur = chunk_take(a, s)) == NULL) {
            break; /* the worker wakes the loop when one is free */
        }
        room = c->want - c->len;
        if (room > RFSM_SLICE_STEP) {
            room = RFSM_SLICE_STEP;
        }
        n = a->user.snapshot_step(s->snap, c->buf + c->len, room);
        INVARIANT(n > 0 && n <= room); /* begin said how many bytes */
        c->len += n;
        s->off += n;
        wrote += n;
        if (c->len == c->want) {
            s->cur = NULL;
            chunk_queue(s, c);
            if (s->off == s->len) {
                slices_end(a, s); /* all written: the worker's now */
                break;
            }
        }
        if (clock_mono_ns() - t0 >= RFSM_SLICE_NS) {
            break;
        }
    }
    if (wrote == 0) {
        return; /* waited: not a slice */
    }
    took = clock_mono_ns() - t0;
    cpu = thread_cpu_ns() - cpu0;
    if (cpu > a->slice_cpu_max_ns) {
        a->slice_cpu_max_ns = cpu;
    }
    s->slices++;
    if (took > s->max_ns) {
        s->max_ns = took;
    }
    if (took > a->slice_max_ns) {
        a->slice_max_ns = took;
    }
}

/* Sealing and compressing: a second of CPU per GiB, taken at the nice of
 * forkdump's child so that the loop (on a 2-core machine, the other core
 * may be all there is) keeps its share. */
struct slices_job {
    struct rfsm *a;
    struct rfsm_slices *s;
    void *out;
    size_t out_len;
    int rv; /* 0 or a RAFT_* code */
};

/* The seal over @c's bytes, in order; the trailer is in the last chunk
 * alone (chunk_want), and is written there before it is compressed. */
static void seal_chunk(const struct rfsm *a, struct rfsm_slices *s,
                       struct rgroup_seal *st, struct rfsm_chunk *c)
{
    size_t body = s->len - RGROUP_SEAL_LEN;

    if (a->user.seal_begin == NULL) {
        return;
    }
    if (c->off < body) {
        size_t n = body - c->off < c->len ? body - c->off : c->len;

        a->user.seal_update(st, c->buf, n);
    }
    if (c->off + c->len == s->len) {
        INVARIANT(c->off <= body);
        a->user.seal_end(st, c->buf + (body - c->off));
    } else {
        INVARIANT(c->off + c->len <= body && c->len % 8 == 0);
    }
}

/* The next full chunk, in order, or NULL when aborted. */
static struct rfsm_chunk *chunk_next(struct rfsm_slices *s)
{
    struct rfsm_chunk *c = NULL;

    pthread_mutex_lock(&s->lock);
    while (s->full_head == NULL && !s->aborted) {
        pthread_cond_wait(&s->cond, &s->lock);
    }
    if (!s->aborted) {
        c = s->full_head;
        s->full_head = c->next;
        if (s->full_head == NULL) {
            s->full_tail = NULL;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return c;
}

static void slices_compress(struct slices_job *j)
{
    struct rfsm *a = j->a;
    struct rfsm_slices *s = j->s;
    struct rgroup_seal st;
    struct lz_frame f;
    size_t done = 0;

    if (lz_frame_begin(&f, s->len, raft_realloc, raft_free) != 0) {
        j->rv = RAFT_NOMEM;
        return;
    }
    memset(&st, 0, sizeof st);
    if (a->user.seal_begin != NULL) {
        a->user.seal_begin(&st, s->len);
    }
    while (done < s->len) {
        struct rfsm_chunk *c = chunk_next(s);
        int rv;

        if (c == NULL) {
            j->rv = RAFT_CANCELED;
            goto err;
        }
        INVARIANT(c->off == done && c->len == c->want && c->len > 0);
        seal_chunk(a, s, &st, c);
        rv = lz_frame_update(&f, c->buf, c->len);
        done += c->len;
        chunk_give_back(a, s, c);
        if (rv != 0) {
            j->rv = RAFT_NOMEM;
            goto err;
        }
    }
    if (lz_frame_end(&f, &j->out, &j->out_len) != 0) {
        j->rv = RAFT_NOMEM;
    }
    return;

err:
    lz_frame_abort(&f);
}

static void *slices_compress_thread(void *arg)
{
    /* Linux: a thread's own nice (the process's other threads keep theirs) */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), FORKDUMP_NICE);
    slices_compress(arg);
    return NULL;
}

/* raft's threadpool: compress the chunks as the loop fills them, in a
 * thread of lower priority; this one only waits for it. */
static int slices_collect(struct rfsm *a, struct rfsm_slices *s,
                          struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct slices_job job = {.a = a, .s = s};
    struct raft_buffer *arr;
    pthread_t t;

    if (pthread_create(&t, NULL, slices_compress_thread, &job) == 0) {
        pthread_join(t, NULL);
    } else {
        slices_compress(&job); /* no thread: at the pool thread's nice */
    }
    if (job.rv != 0) {
        return job.rv;
    }
    arr = raft_malloc(sizeof *arr);
    if (arr == NULL) {
        raft_free(job.out);
        return RAFT_NOMEM;
    }
    arr[0].base = job.out;
    arr[0].len = job.out_len;
    *bufs = arr;
    *n_bufs = 1;
    s->out_len = job.out_len;
    s->ok = true;
    return 0;
}

/* Loop thread, after raft is done with the snapshot (or gave up): the
 * worker has returned, the chunks are the pool's again. */
static void slices_finish(struct rfsm *a)
{
    struct rfsm_slices *s = a->slices;

    slices_end(a, s); /* never got whole */
    if (s->ok) {
        a->snapshots_taken++;
        a->snapshots_sliced++;
        log_info("raft fsm: snapshot of %zu bytes (%zu compressed) in %" PRIu64
                 " slices through %u chunks of %zu bytes (the loop waited "
                 "for one %" PRIu64 " times), the longest slice %" PRIu64
                 " us, stored %" PRIu64 " ms after it began",
                 s->len, s->out_len, s->slices, s->n_chunks,
                 pool_chunk_bytes, s->waits, s->max_ns / 1000,
                 (clock_mono_ns() - s->started_ns) / 1000000);
    } else if (!s->aborted) {
        a->snapshot_failures++;
        log_warn("raft fsm: snapshot in slices failed; retrying later");
    }
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
    a->slices = NULL;
    INVARIANT(slicings_running > 0);
    slicings_running--;
}

static int rfsm_snapshot(struct raft_fsm *fsm,
                         struct raft_buffer *bufs[],
                         unsigned *n_bufs)
{
    struct rfsm *a = fsm->data;
    size_t raw_len = 0;
    void *out;
    size_t out_len;
    struct raft_buffer *arr;
    uint64_t t0 = clock_mono_ms();

    INVARIANT(a != NULL && bufs != NULL && n_bufs != NULL && !a->dumping &&
              a->slices == NULL);
    if (a->slice_snapshots) {
        int rv;

        if (slicings_running > 0) {
            return RAFT_BUSY;
        }
        rv = slices_start(a);
        if (rv < 0) {
            a->snapshot_failures++;
            log_warn("raft fsm: cannot begin a snapshot; retrying later");
            return RAFT_BUSY;
        }
        if (rv == 0) {
            *bufs = NULL; /* filled by snapshot_async */
            *n_bufs = 0;
            return 0;
        }
        /* nothing to slice: inline, below */
    }
    if (a->fork_snapshots) {
        if (dumps_running > 0) {
            return RAFT_BUSY;
        }
        if (forkdump_start(&a->dump, produce_in_child, a) == 0) {
            a->dump_started_ms = clock_mono_ms();
            a->dump_fork_ms = a->dump_started_ms - t0;
            dumps_running++;
            a->dumping = true;
            a->dump_ok = false;
            *bufs = NULL; /* filled by snapshot_async */
            *n_bufs = 0;
            return 0;
        }
        log_warn("raft fsm: fork for a snapshot failed (%s); taking it on "
                 "the loop",
                 strerror(errno));
    }
    if (snapshot_bytes(a, rfsm_raft_alloc, &out, &out_len, &raw_len) != 0) {
        a->snapshot_failures++;
        log_warn("raft fsm: snapshot failed (state %zu bytes); retrying "
                 "later",
                 raw_len);
        return RAFT_BUSY;
    }
    arr = raft_malloc(sizeof *arr);
    if (arr == NULL) {
        raft_free(out);
        a->snapshot_failures++;
        return RAFT_BUSY;
    }
    arr[0].base = out;
    arr[0].len = out_len;
    *bufs = arr;
    *n_bufs = 1;
    a->snapshots_taken++;
    log_debug("raft fsm: snapshot %zu -> %zu bytes", raw_len, out_len);
    return 0;
}

/* raft's threadpool: wait for the child's bytes, or the loop's slices. */
static int rfsm_snapshot_async(struct raft_fsm *fsm,
                               struct raft_buffer *bufs[],
                               unsigned *n_bufs)
{
    struct rfsm *a = fsm->data;
    struct raft_buffer *arr;
    void *out;
    size_t out_len;

    if (a->slices != NULL) {
        return slices_collect(a, a->slices, bufs, n_bufs);
    }
    if (!a->dumping) {
        return 0; /* taken inline: bufs are filled */
    }
    arr = raft_malloc(sizeof *arr);
    if (arr == NULL) {
        return RAFT_NOMEM; /* finalize stops the child */
    }
    if (forkdump_collect(&a->dump, a->max_snapshot_raw + LZ_HEADER_SIZE,
                         rfsm_raft_alloc, &out, &out_len) != 0) {
        raft_free(arr);
        return RAFT_IOERR;
    }
    arr[0].base = out;
    arr[0].len = out_len;
    *bufs = arr;
    *n_bufs = 1;
    a->dump_len = out_len;
    a->dump_ok = true;
    return 0;
}

/* Loop thread, once the snapshot is stored (or failed): ours to free. */
static int rfsm_snapshot_finalize(struct raft_fsm *fsm,
                                  struct raft_buffer *bufs[],
                                  unsigned *n_bufs)
{
    struct rfsm *a = fsm->data;
    unsigned i;

    if (*bufs != NULL) {
        for (i = 0; i < *n_bufs; i++) {
            raft_free((*bufs)[i].base);
        }
        raft_free(*bufs);
    }
    *bufs = NULL;
    *n_bufs = 0;
    if (a->slices != NULL) {
        slices_finish(a);
    }
    if (a->dumping) {
        forkdump_finish(&a->dump);
        INVARIANT(dumps_running > 0);
        dumps_running--;
        a->dumping = false;
        if (a->dump_ok) {
            a->snapshots_taken++;
            a->snapshots_forked++;
            log_info("raft fsm: snapshot of %zu bytes: fork %" PRIu64
                     " ms, stored %" PRIu64 " ms later",
                     a->dump_len, a->dump_fork_ms,
                     clock_mono_ms() - a->dump_started_ms);
        } else if (!a->dump.aborted) {
            a->snapshot_failures++;
            log_warn("raft fsm: snapshot child failed; retrying later");
        }
    }
    return 0;
}

void rfsm_fork_snapshots(struct rfsm *a)
{
    a->fork_snapshots = true;
    a->raft_fsm.version = 3;
    a->raft_fsm.snapshot_finalize = rfsm_snapshot_finalize;
    a->raft_fsm.snapshot_async = rfsm_snapshot_async;
}

void rfsm_slice_snapshots(struct rfsm *a)
{
    if (a->user.snapshot_begin == NULL) {
        return;
    }
    a->slice_snapshots = true;
    a->raft_fsm.version = 3;
    a->raft_fsm.snapshot_finalize = rfsm_snapshot_finalize;
    a->raft_fsm.snapshot_async = rfsm_snapshot_async;
}

void rfsm_abort_snapshot(struct rfsm *a)
{
    if (a->slices != NULL) {
        slices_abort(a, a->slices);
    }
    if (a->dumping) {
        forkdump_abort(&a->dump);
    }
}

static int rfsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct rfsm *a = fsm->data;
    void *raw;
    size_t raw_len;
    int rv;

    INVARIANT(a != NULL && buf != NULL && (buf->base != NULL || buf->len == 0));
    if (lz_decompress(buf->base, buf->len, a->max_snapshot_raw, NULL, &raw,
                      &raw_len) != 0) {
        a->snapshot_failures++;
        log_error("raft fsm: corrupt snapshot (%zu bytes)", buf->len);
        return RAFT_MALFORMED;
    }
    rv = a->user.restore(a->user.data, raw, raw_len);
    free(raw);
    if (rv != 0) {
        a->snapshot_failures++;
        log_error("raft fsm: state machine rejected snapshot (%zu bytes)",
                  raw_len);
        return RAFT_MALFORMED;
    }
    raft_free(buf->base); /* success: ours to free (raft 0.15 contract) */
    a->snapshots_restored++;
    return 0;
}

void rfsm_init(struct rfsm *a, const struct rgroup_fsm *fsm)
{
    INVARIANT(fsm->apply != NULL && fsm->snapshot != NULL &&
              fsm->restore != NULL);
    INVARIANT((fsm->snapshot_begin == NULL) ==
                  (fsm->snapshot_step == NULL) &&
              (fsm->snapshot_begin == NULL) == (fsm->snapshot_end == NULL));
    INVARIANT((fsm->seal_begin == NULL) == (fsm->seal_update == NULL) &&
              (fsm->seal_begin == NULL) == (fsm->seal_end == NULL) &&
              (fsm->seal_begin == NULL || fsm->snapshot_begin != NULL));
    memset(a, 0, sizeof *a);
    a->user = *fsm;
    a->max_snapshot_raw = RFSM_DEFAULT_MAX_SNAPSHOT;
    a->raft_fsm.version = 1;
    a->raft_fsm.data = a;
    a->raft_fsm.apply = rfsm_apply;
    a->raft_fsm.snapshot = rfsm_snapshot;
    a->raft_fsm.restore = rfsm_restore;
    pb_arena_init(&a->batch_arena);
}

void rfsm_close(struct rfsm *a)
{
    pb_arena_close(&a->batch_arena);
}

int rfsm_encode(uint64_t time_ms,
                uint64_t proposer,
                uint64_t seq,
                const struct rgroup_cmd *first,
                size_t n,
                struct raft_buffer *out)
{
    Ringmq__RaftBatch b = RINGMQ__RAFT_BATCH__INIT;
    ProtobufCBinaryData *cmds = NULL;
    const struct rgroup_cmd *c = first;
    size_t len;
    size_t pad;
    size_t i;

    if (n > 0) {
        cmds = xcalloc(n, sizeof *cmds);
    }
    for (i = 0; i < n; i++) {
        cmds[i].data = (uint8_t *)c->payload;
        cmds[i].len = c->len;
        c = c->next;
    }
    b.time_ms = time_ms;
    b.proposer = proposer;
    b.seq = seq;
    b.n_cmds = n;
    b.cmds = cmds;
    len = ringmq__raft_batch__get_packed_size(&b);
    /* raft 0.15's libuv log needs every entry length to be a multiple of 8:
     * it pads the data on disk but reloads closed segments as if unpadded
     * ("read header: short read"). Pad with an unknown length-delimited
     * field (RFSM_PAD_FIELD), which every protobuf decoder skips. */
    pad = (8 - len % 8) % 8;
    if (pad == 1 || len + pad == 0) {
        pad += 8; /* a field takes a tag and a length byte; no empty entry */
    }
    out->base = raft_malloc(len + pad);
    if (out->base == NULL) {
        free(cmds);
        return -1;
    }
    out->len = ringmq__raft_batch__pack(&b, out->base);
    if (pad > 0) {
        uint8_t *p = (uint8_t *)out->base + out->len;

        p[0] = (uint8_t)(RFSM_PAD_FIELD << 3 | 2);
        p[1] = (uint8_t)(pad - 2);
        memset(p + 2, 0, pad - 2);
        out->len += pad;
    }
    INVARIANT(out->len % 8 == 0); /* raft 0.15's libuv log */
    free(cmds);
    return 0;
}
