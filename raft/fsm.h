/*
 * rfsm: the struct raft_fsm adapter between canonical/raft and a
 * struct rgroup_fsm (raft/types.h), plus the batch entry codec.
 *
 * One Raft COMMAND entry is one RaftBatch (proto/raft_entry.proto): the
 * proposing leader's wall clock, a random proposer id, the proposer's batch
 * sequence number and the commands. Its length is padded to a multiple of 8
 * (raft 0.15 libuv log requirement, see rfsm_encode) with an unknown bytes
 * field number RFSM_PAD_FIELD, which decoders skip. The adapter
 *   - apply: decodes the batch, asks the optional @claim hook for the local
 *     waiting commands of (proposer, seq), then calls rgroup_fsm.apply once
 *     per command in order, with @mine = the matching local command or NULL.
 *     A corrupt entry is logged, counted and skipped; apply always returns 0
 *     (a non-zero return makes raft 0.15 retry the entry for ever);
 *   - snapshot (raft_fsm version 1): rgroup_fsm.snapshot, then lz_compress
 *     into a raft_malloc'd buffer that raft frees. Failures return RAFT_BUSY,
 *     which raft ignores and retries at the next apply;
 *   - snapshot in a child (rfsm_fork_snapshots, raft_fsm version 3): the
 *     loop thread only forks (common/forkdump); the child runs
 *     rgroup_fsm.snapshot and lz_compress on its copy-on-write image of the
 *     state at raft's snapshot index, raft's threadpool reads the result
 *     (snapshot_async), and snapshot_finalize frees it on the loop. So a
 *     snapshot costs the loop a fork (page tables: ~1 ms per GiB here), not
 *     a pass over the state. One child per process at a time (others get
 *     RAFT_BUSY and raft retries them at a later apply); if fork fails the
 *     snapshot is taken inline as in version 1. rgroup_fsm.snapshot then
 *     runs in the child: it must not log or change anything the parent
 *     relies on (its changes are lost with the child);
 *   - snapshot in slices (rfsm_slice_snapshots, raft_fsm version 3), for
 *     an fsm with snapshot_begin/step/end (raft/types.h): snapshot() on
 *     the loop only begins it (the fsm fixes the state at raft's index);
 *     the loop then writes its bytes one slice per turn
 *     (rfsm_snapshot_slice: at most RFSM_SLICE_NS, however large the
 *     state) while entries keep being applied, into a pool of
 *     RFSM_CHUNKS reused chunks of RFSM_CHUNK_BYTES, never into one
 *     buffer of the whole. A full chunk (or the last) goes to the worker:
 *     snapshot_async, on raft's threadpool, runs a thread at FORKDUMP_NICE
 *     that takes the chunks in order, streams the fsm's seal over them
 *     (seal_begin/update/end: the trailer is patched into the last chunk),
 *     compresses each into one LZ4 frame (common/lz: lz_frame_*, the
 *     output grown with raft_realloc) and gives it back to the pool. When
 *     no chunk is free the slice writes nothing and the loop may block in
 *     poll (rfsm_snapshot_slicing is false) until the worker frees one and
 *     calls the @wake hook. Memory: the pool and the compressed output,
 *     never O(state). finalize ends the fsm's snapshot if it was not whole
 *     (a failure, or rfsm_abort_snapshot on close, which also stops the
 *     worker at its next chunk). The loop never waits for the worker. One
 *     per process at a time, as for children: each holds a threadpool
 *     thread and the pool;
 *   - restore: lz_decompress (an RLZ4 block or an LZ4 frame, as written
 *     by the paths above), rgroup_fsm.restore, and on success
 *     raft_free(buf->base) as raft 0.15 requires (on failure raft keeps it).
 *
 * The adapter knows nothing about libuv or rgroup internals, so tests can run
 * it under raft_fixture (version 1, inline snapshots): hand &a->raft_fsm to raft_init/raft_fixture_grow.
 * Direction: raft/group uses this module; it uses raft/types.h only (never
 * group.h), and reaches the group's waiting commands through @claim.
 * Everything runs on the raft loop thread, except snapshot_async (raft's
 * threadpool, and the thread it starts: it touches only the forkdump and
 * dump_ok, or the struct rfsm_slices under its lock, the chunks the loop
 * queued to it, the fsm's seal, and calls @wake).
 */
#ifndef RINGMQ_RAFT_FSM_H
#define RINGMQ_RAFT_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/clock.h"
#include "common/forkdump.h"
#include "proto/pb_arena.h"

#include <raft.h>

#include "raft/types.h"

/* Upper bounds of the encoded size: a batch header (three varint fields with
 * their tags, plus up to 9 bytes of padding to a multiple of 8) and each
 * command (tag + varint length + bytes). */
#define RFSM_BATCH_OVERHEAD 42u
#define RFSM_CMD_OVERHEAD 11u

/* Field number used only for padding; never give it a meaning in
 * raft_entry.proto (it should be declared `reserved 15;` there). */
#define RFSM_PAD_FIELD 15u

/* A slice of an incremental snapshot on the loop: it stops at the first
 * look at the clock past RFSM_SLICE_NS; it looks after every
 * RFSM_SLICE_STEP bytes. */
#define RFSM_SLICE_NS 500000u
#define RFSM_SLICE_STEP ((size_t)32 << 10)

/* The chunk pool a snapshot in slices goes through (rfsm_snapshot_chunks
 * changes it): allocated at the first such snapshot in the process and
 * kept. 4 MiB: a few of the worker's lz4 blocks, and few hand-overs. */
#define RFSM_CHUNK_BYTES ((size_t)4 << 20)
#define RFSM_CHUNKS 4u
#define RFSM_MAX_CHUNKS 16u

/* Default cap on a decompressed snapshot (lz also caps at LZ4's ~2 GiB). */
#define RFSM_DEFAULT_MAX_SNAPSHOT ((size_t)1 << 31)

/* Local waiters of a batch: called once per decoded batch, before any of its
 * commands is applied. Return the first of the @n_cmds commands this replica
 * proposed as batch (@proposer, @seq) and still waits for, linked by ->next in
 * batch order, or NULL. Returning non-NULL means "these are being applied
 * now": the hook's owner may treat them as applied once apply returns. */
typedef struct rgroup_cmd *(*rfsm_claim_cb)(void *data,
                                            uint64_t proposer,
                                            uint64_t seq,
                                            size_t n_cmds);

/* Wake the loop: called from the snapshot worker's thread when it frees a
 * chunk the loop is waiting for (uv_async_send, for instance). Must be
 * safe to call from any thread until raft's close has completed. */
typedef void (*rfsm_wake_cb)(void *data);

struct rfsm {
    struct raft_fsm raft_fsm; /* give &raft_fsm to raft; data = this */
    struct pb_arena batch_arena; /* what apply unpacks a batch into */
    struct rgroup_fsm user;   /* copied; user.data borrowed */
    rfsm_claim_cb claim;      /* optional, NULL = no local waiters */
    void *claim_data;
    /* optional (slices): wakes a loop that waits for a free chunk; NULL =
     * the loop must keep turning meanwhile (rfsm_snapshot_slicing stays
     * true). Set before the first snapshot. */
    rfsm_wake_cb wake;
    void *wake_data;
    size_t max_snapshot_raw; /* restore refuses larger snapshots */
    /* optional: told of every batch's stamp as it is applied, so that a
     * new leader's stamps continue from the old leader's */
    struct clock_stamp *stamp;
    /* optional: the raft instance applying, whose applied index apply
     * checks rises with every entry (common/invariant.h) */
    const struct raft *raft;
    uint64_t newest_stamp; /* the largest batch stamp applied */
    /* counters, read freely */
    uint64_t entries_applied; /* batch entries decoded and applied */
    uint64_t entry_bytes_applied; /* their encoded sizes, summed */
    uint64_t cmds_applied;
    uint64_t corrupt_entries; /* undecodable entries skipped */
    uint64_t snapshots_taken; /* snapshot() calls that produced a buffer */
    uint64_t snapshots_restored;
    uint64_t snapshot_failures; /* snapshot()/restore() errors */
    uint64_t snapshots_forked;  /* of snapshots_taken, made by a child */
    uint64_t snapshots_sliced;  /* of snapshots_taken, made in slices */
    uint64_t slice_max_ns;      /* the longest slice on the loop so far */
    uint64_t slice_cpu_max_ns;  /* the most CPU a slice took so far */
    uint64_t slice_waits; /* times the loop found no free chunk (and
                             waited for the worker to free one) */
    /* private */
    bool fork_snapshots;
    bool slice_snapshots;
    struct rfsm_slices *slices; /* the snapshot being written in slices */
    bool dumping;          /* a child is serializing (forked) */
    bool dump_ok;          /* set by snapshot_async, read in finalize */
    size_t dump_len;       /* likewise: the compressed snapshot's size */
    uint64_t dump_started_ms, dump_fork_ms;
    struct forkdump dump;
    bool applied_any;
    uint64_t applied_index; /* raft's last_applied at the last apply */
};

/* Fill @a for @fsm (copied). claim = NULL, counters 0. Allocates
 * nothing; once @a has applied entries, rfsm_close() frees what apply
 * keeps for the next batch. */
void rfsm_init(struct rfsm *a, const struct rgroup_fsm *fsm);
/* Free what @a holds (not the user's state): after raft is closed. */
void rfsm_close(struct rfsm *a);

/* Take snapshots in a child process from now on (raft_fsm version 3).
 * Before raft_init; the io must have async_work and version >= 2. */
void rfsm_fork_snapshots(struct rfsm *a);

/* Take snapshots in slices on the loop from now on (raft_fsm version 3),
 * if the fsm has snapshot_begin/step/end (else nothing changes). Before
 * raft_init; the io as for rfsm_fork_snapshots. The loop must then call
 * rfsm_snapshot_slice once a turn, and not block in poll while
 * rfsm_snapshot_slicing; with a @wake hook, it may block while the
 * snapshot waits for a free chunk, and is woken when one is. */
void rfsm_slice_snapshots(struct rfsm *a);
/* A snapshot has bytes left to write on the loop, and a chunk to write
 * them into (or no @wake hook to say when there is one). */
bool rfsm_snapshot_slicing(const struct rfsm *a);
/* Write the next slice of the snapshot in progress, if any (nothing while
 * no chunk is free). */
void rfsm_snapshot_slice(struct rfsm *a);

/* The chunk pool's shape for the snapshots in slices from now on (tests:
 * a state larger than the pool without a large state): @n chunks (1 to
 * RFSM_MAX_CHUNKS) of @bytes (a multiple of 8, at least 16). Frees the
 * pool; only while no snapshot in slices runs in the process. */
void rfsm_snapshot_chunks(size_t bytes, unsigned n);

/* Shutting down: a child still serializing is killed, a snapshot being
 * sliced is ended and its worker stops at its next chunk, so raft's close
 * (which waits for its async work) does not wait for either. */
void rfsm_abort_snapshot(struct rfsm *a);

/* Encoded-size bound of a command of @len bytes inside a batch. */
static inline size_t rfsm_cmd_size(size_t len)
{
    return len + RFSM_CMD_OVERHEAD;
}

/* Encode the @n commands starting at @first (linked by ->next; payloads are
 * read, not kept) as one batch into out->base, allocated with raft_malloc
 * (ownership to the caller, normally handed to raft_apply). out->len is a
 * multiple of 8 and at most RFSM_BATCH_OVERHEAD + sum(rfsm_cmd_size(len)).
 * 0, or -1 on allocation failure. */
int rfsm_encode(uint64_t time_ms,
                uint64_t proposer,
                uint64_t seq,
                const struct rgroup_cmd *first,
                size_t n,
                struct raft_buffer *out);

#endif
