/* rfsm: see fsm.h. Below raft/group: includes raft/types.h, never group.h. */
#include "raft/fsm.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
    b = ringmq__raft_batch__unpack(NULL, buf->len, buf->base);
    if (b == NULL) {
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
    ringmq__raft_batch__free_unpacked(b, NULL);
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
 * while it waits for the loop, so one at a time. Loop thread only. */
static unsigned slicings_running;

/* The raw bytes are faulted in and unmapped in pieces of this size: each
 * piece holds the process's memory map lock (which a malloc on the loop
 * may need) only briefly. */
#define SLICES_MAP_PIECE ((size_t)4 << 20)

/* A snapshot written in slices (fsm.h). */
struct rfsm_slices {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;    /* under lock: all bytes written; the worker's from now */
    bool aborted; /* under lock: the worker gives up */
    void *snap;   /* the fsm's, until ended; loop only */
    unsigned char *raw;
    size_t len;
    size_t off; /* bytes written; loop only */
    bool ok;    /* set by the worker: compressed */
    size_t out_len;
    uint64_t started_ns;
    uint64_t slices;
    uint64_t max_ns;
};

static unsigned char *slices_map(size_t len)
{
    void *p = mmap(NULL, len > 0 ? len : 1, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    return p == MAP_FAILED ? NULL : p;
}

/* Piece by piece: unmapping a GiB in one call holds the memory map lock
 * for as long as it takes to free every page. */
static void slices_unmap(unsigned char *raw, size_t len)
{
    size_t off;

    if (len == 0) {
        len = 1;
    }
    for (off = 0; off < len; off += SLICES_MAP_PIECE) {
        size_t n = len - off < SLICES_MAP_PIECE ? len - off : SLICES_MAP_PIECE;

        (void)munmap(raw + off, n);
    }
}

static int slices_start(struct rfsm *a)
{
    struct rfsm_slices *s;
    size_t len = 0;
    void *snap = a->user.snapshot_begin(a->user.data, &len);
    unsigned char *raw;

    if (snap == NULL) {
        return -1;
    }
    /* untouched until written: the pages cost nothing on the loop yet */
    raw = slices_map(len);
    if (raw == NULL) {
        a->user.snapshot_end(snap);
        return -1;
    }
    s = xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->snap = snap;
    s->raw = raw;
    s->len = len;
    s->started_ns = clock_mono_ns();
    a->slices = s;
    slicings_running++;
    return 0;
}

/* End the fsm's snapshot, whole or not, and tell the worker. */
static void slices_stop(struct rfsm *a, struct rfsm_slices *s, bool done)
{
    if (s->snap != NULL) {
        a->user.snapshot_end(s->snap);
        s->snap = NULL;
    }
    pthread_mutex_lock(&s->lock);
    if (done) {
        s->done = true;
    } else {
        s->aborted = true;
    }
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
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
    return a->slices != NULL && a->slices->snap != NULL;
}

void rfsm_snapshot_slice(struct rfsm *a)
{
    struct rfsm_slices *s = a->slices;
    uint64_t t0, took, cpu0, cpu;

    if (s == NULL || s->snap == NULL) {
        return;
    }
    cpu0 = thread_cpu_ns();
    t0 = clock_mono_ns();
    while (s->off < s->len) {
        size_t room = s->len - s->off;
        size_t n;

        if (room > RFSM_SLICE_CHUNK) {
            room = RFSM_SLICE_CHUNK;
        }
        n = a->user.snapshot_step(s->snap, s->raw + s->off, room);
        INVARIANT(n > 0 && n <= room); /* begin said how many bytes */
        s->off += n;
        if (clock_mono_ns() - t0 >= RFSM_SLICE_NS) {
            break;
        }
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
    if (s->off == s->len) {
        slices_stop(a, s, true);
    }
}

/* Fault the pages in ahead of the loop's slices, so that it pays for
 * none of them: MADV_POPULATE_WRITE changes no byte, so it may overlap
 * the loop's writes. A kernel without it (before 5.14) leaves the faults
 * to the loop. */
static void slices_populate(struct rfsm_slices *s)
{
#ifdef MADV_POPULATE_WRITE
    size_t off;

    /* mmap'd: page-aligned, and so is every piece */
    for (off = 0; off < s->len; off += SLICES_MAP_PIECE) {
        size_t n = s->len - off < SLICES_MAP_PIECE ? s->len - off
                                                   : SLICES_MAP_PIECE;
        bool stop;

        if (madvise(s->raw + off, n, MADV_POPULATE_WRITE) != 0) {
            return;
        }
        pthread_mutex_lock(&s->lock);
        stop = s->done || s->aborted; /* the loop got there first */
        pthread_mutex_unlock(&s->lock);
        if (stop) {
            return;
        }
    }
#else
    (void)s;
#endif
}

/* Sealing and compressing: a second of CPU per GiB, taken at the nice of
 * forkdump's child so that the loop (on a 2-core machine, the other core
 * may be all there is) keeps its share. */
struct slices_seal {
    struct rfsm *a;
    struct rfsm_slices *s;
    void *out;
    size_t out_len;
    int rv;
};

static void slices_seal(struct slices_seal *j)
{
    if (j->a->user.snapshot_seal != NULL) {
        j->a->user.snapshot_seal(j->s->raw, j->s->len);
    }
    j->rv = lz_compress(j->s->raw, j->s->len, rfsm_raft_alloc, &j->out,
                        &j->out_len);
}

static void *slices_seal_thread(void *arg)
{
    /* Linux: a thread's own nice (the process's other threads keep theirs) */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), FORKDUMP_NICE);
    slices_seal(arg);
    return NULL;
}

/* raft's threadpool: wait for the loop's last slice, then seal and
 * compress. */
static int slices_collect(struct rfsm *a, struct rfsm_slices *s,
                          struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct slices_seal job = {.a = a, .s = s};
    struct raft_buffer *arr;
    pthread_t t;
    bool aborted;

    slices_populate(s);
    pthread_mutex_lock(&s->lock);
    while (!s->done && !s->aborted) {
        pthread_cond_wait(&s->cond, &s->lock);
    }
    aborted = s->aborted;
    pthread_mutex_unlock(&s->lock);
    if (aborted) {
        return RAFT_CANCELED;
    }
    if (pthread_create(&t, NULL, slices_seal_thread, &job) == 0) {
        pthread_join(t, NULL);
    } else {
        slices_seal(&job); /* no thread: at the pool thread's nice, then */
    }
    if (job.rv != 0) {
        return RAFT_NOMEM;
    }
    arr = raft_malloc(sizeof *arr);
    if (arr == NULL) {
        raft_free(job.out);
        return RAFT_NOMEM;
    }
    /* here, not on the loop: unmapping a large buffer takes a while */
    slices_unmap(s->raw, s->len);
    s->raw = NULL;
    arr[0].base = job.out;
    arr[0].len = job.out_len;
    *bufs = arr;
    *n_bufs = 1;
    s->out_len = job.out_len;
    s->ok = true;
    return 0;
}

/* Loop thread, after raft is done with the snapshot (or gave up). */
static void slices_finish(struct rfsm *a)
{
    struct rfsm_slices *s = a->slices;

    if (s->snap != NULL) {
        slices_stop(a, s, false); /* never got whole */
    }
    if (s->raw != NULL) {
        slices_unmap(s->raw, s->len);
    }
    if (s->ok) {
        a->snapshots_taken++;
        a->snapshots_sliced++;
        log_info("raft fsm: snapshot of %zu bytes (%zu compressed) in %" PRIu64
                 " slices, the longest %" PRIu64 " us, stored %" PRIu64
                 " ms after it began",
                 s->len, s->out_len, s->slices, s->max_ns / 1000,
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
        if (slicings_running > 0) {
            return RAFT_BUSY;
        }
        if (slices_start(a) != 0) {
            a->snapshot_failures++;
            log_warn("raft fsm: cannot begin a snapshot; retrying later");
            return RAFT_BUSY;
        }
        *bufs = NULL; /* filled by snapshot_async */
        *n_bufs = 0;
        return 0;
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
    if (a->slices != NULL && a->slices->snap != NULL) {
        slices_stop(a, a->slices, false);
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
    memset(a, 0, sizeof *a);
    a->user = *fsm;
    a->max_snapshot_raw = RFSM_DEFAULT_MAX_SNAPSHOT;
    a->raft_fsm.version = 1;
    a->raft_fsm.data = a;
    a->raft_fsm.apply = rfsm_apply;
    a->raft_fsm.snapshot = rfsm_snapshot;
    a->raft_fsm.restore = rfsm_restore;
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
