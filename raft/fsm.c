/* rfsm: see fsm.h. Below raft/group: includes raft/types.h, never group.h. */
#include "raft/fsm.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

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

    INVARIANT(a != NULL && bufs != NULL && n_bufs != NULL && !a->dumping);
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

/* raft's threadpool: wait for the child's bytes. */
static int rfsm_snapshot_async(struct raft_fsm *fsm,
                               struct raft_buffer *bufs[],
                               unsigned *n_bufs)
{
    struct rfsm *a = fsm->data;
    struct raft_buffer *arr;
    void *out;
    size_t out_len;

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

void rfsm_abort_snapshot(struct rfsm *a)
{
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
