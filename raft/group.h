/*
 * rgroup: one replica of one Raft group, over canonical/raft 0.15 with its
 * libuv disk backend and TCP transport.
 *
 * The group hides raft from the rest of ringmq (docs/raft.md: a newer raft
 * can replace 0.15 behind this interface). It gives:
 *   - bootstrap of a pristine data directory with the configured members
 *     (or, to join a running group, no bootstrap: wait to be added),
 *     restart from an existing one, a clear error for an unusable one or
 *     for a replica that lost its data (the identity marker, raft/ident.h);
 *   - membership changes, one at a time, at the leader (raft/member.c);
 *   - group commit: commands submitted while earlier entries are in flight are
 *     packed into one Raft entry (a batch stamped with the leader's clock,
 *     rgroup_clock_ms), with a cap on entries and bytes in flight
 *     (docs/raft.md);
 *   - leader tracking by polling raft_state (0.15 has no callback) and a
 *     barrier after every election: rgroup_is_leader() is true only once
 *     everything committed by earlier leaders is applied here;
 *   - lz4-compressed snapshots of the state machine by threshold.
 *
 * The status codes, struct rgroup_cmd and struct rgroup_fsm are in
 * raft/types.h, which this header includes.
 *
 * Errors: functions return 0 or a negative RGROUP_E* code; construction
 * failures also fill @errmsg. A command callback fires exactly once for every
 * rgroup_submit() that returned 0, and never for one that did not.
 * Everything runs on the loop thread.
 *
 * Callback delivery (raft/group.c): command callbacks never run inside raft
 * code; they run from the group's own uv_prepare/uv_check handles (or from
 * the close sequence), in completion order, which for one replica is
 * submission order. A command callback may submit more commands or call
 * rgroup_close(). The rgroup_fsm callbacks DO run inside raft: they must not
 * call rgroup_submit() or rgroup_close().
 *
 * Status of a command, by what happened to it:
 *   0                  the fsm applied it here (apply saw mine == cmd);
 *   RGROUP_ENOTLEADER  queued when this replica stopped being a ready leader
 *                      (never proposed);
 *   RGROUP_EUNKNOWN    proposed, then leadership was lost (or the group
 *                      closed) before it was applied here: it may still be
 *                      committed by the next leader, so commands should carry
 *                      a request id and apply should be idempotent;
 *   RGROUP_ECLOSING    queued when rgroup_close() was called;
 *   RGROUP_EIO         raft refused the batch (raft_apply error other than
 *                      not-leader) or out of memory: never proposed;
 *   RGROUP_EEXPIRED    its deadline (cmd->deadline_ms) passed while it was
 *                      queued: dropped before batching, never proposed,
 *                      at its deadline (a timer: also while entries that
 *                      do not commit keep every batch slot), so that its
 *                      sender can still be told. Its callback may come
 *                      before those of earlier commands still in flight
 *                      or queued.
 *
 * Process requirement: raft's TCP transport writes to peers that may have
 * gone away; the process must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)).
 */
#ifndef RINGMQ_RAFT_GROUP_H
#define RINGMQ_RAFT_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "raft/types.h"

struct rgroup_member {
    uint64_t id;           /* raft server id, > 0 */
    char raft_address[RGROUP_ADDR_MAX]; /* "a.b.c.d:port" or "name:port" */
};

struct rgroup_config {
    const char *name;      /* for logs; copied */
    uint64_t id;           /* this replica's id; must be in members */
    const char *dir;       /* data directory, created if missing; copied */
    struct rgroup_member members[RGROUP_MAX_MEMBERS]; /* bootstrap config */
    unsigned n_members;
    unsigned election_ms;  /* 0 = 1000 */
    unsigned heartbeat_ms; /* 0 = 100 */
    unsigned snapshot_threshold; /* entries; 0 = 1024 */
    unsigned snapshot_trailing;  /* entries; 0 = 2048 */
    /* Bytes of log raft keeps in memory, roughly: raft 0.15 keeps every
     * entry since the last snapshot plus `trailing` before it, so with
     * large entries (big values, big batches) the counts above would hold
     * GBs. The group lowers its threshold and trailing (never below
     * RGROUP_MIN_THRESHOLD / _TRAILING entries, never above the counts
     * above) so that they hold about this many bytes at the entry size it
     * sees: 3/4 for the threshold, 1/4 for the trailing part. 0 = 256 MiB;
     * SIZE_MAX = counts only. */
    size_t log_memory_bytes;
    /* Serialize snapshots on the loop thread instead of in a forked child
     * (raft/fsm.h): the loop stalls for as long as the state takes. */
    bool inline_snapshots;
    /* Write snapshots on the loop a slice at a time while entries keep
     * being applied, if the fsm can (snapshot_begin, raft/types.h): no
     * fork, no stall. Overrides inline_snapshots for such an fsm; any
     * other snapshots as inline_snapshots says. */
    bool incremental_snapshots;
    size_t max_entry_bytes;      /* batch size cap; 0 = 4 MiB */
    unsigned max_inflight;       /* raft_apply calls in flight; 0 = 16 */
    /* Admission bound on the commands queued behind those in flight (not
     * yet proposed): rgroup_submit refuses with RGROUP_EFULL beyond
     * either. 0 = RGROUP_MAX_QUEUED_CMDS_DEFAULT /
     * RGROUP_MAX_QUEUED_BYTES_DEFAULT. */
    unsigned max_queued_cmds;
    size_t max_queued_bytes;
    /* A pristine data directory is not bootstrapped with @members: the
     * replica waits, with no configuration, until a leader adds it
     * (rgroup_add_voter there). For members added to a running group: a
     * bootstrap would give it another first configuration than the
     * group's. Ignored when the directory has state. */
    bool join;
    /* Where this replica's identity marker lives (raft/ident.h), outside
     * @dir: the node's data directory. With it, a replica that belonged
     * to the group and finds @dir empty (its data lost) refuses to start
     * instead of bootstrapping again, and data of another group, member
     * or incarnation is refused. @name is then required. NULL: no
     * identity is kept. */
    const char *marker_dir;
    /* The operator's word that this replica, having lost its data, was
     * removed from the group: an empty @dir that the marker says belonged
     * starts as a joining replica (as @join) under a new incarnation.
     * No effect when @dir has this replica's data. */
    bool rejoin;
};

/* A leader whose entries do not commit (a slow disk, followers that do
 * not answer) keeps at most this much waiting to be proposed, besides
 * max_inflight entries of at most max_entry_bytes in flight. */
#define RGROUP_MAX_QUEUED_CMDS_DEFAULT 4096u
#define RGROUP_MAX_QUEUED_BYTES_DEFAULT ((size_t)64 << 20)

#define RGROUP_PROGRESS_LEN 256

#define RGROUP_LOG_MEMORY_DEFAULT ((size_t)256 << 20)
#define RGROUP_MIN_THRESHOLD 32u
#define RGROUP_MIN_TRAILING 16u

struct rgroup_status {
    const char *state; /* "leader", "follower", "candidate", "unavailable" */
    bool ready;        /* rgroup_is_leader() */
    uint64_t id;
    uint64_t leader_id; /* 0 if unknown */
    uint64_t term;
    uint64_t commit_index;
    uint64_t last_applied;
    uint64_t last_index;
    uint64_t snapshot_index; /* index of the last snapshot taken/installed */
    uint64_t snapshots_taken;
    uint64_t snapshots_restored;
    uint64_t snapshots_sliced; /* of snapshots_taken, written in slices */
    uint64_t snapshot_slice_max_us; /* their longest slice on the loop */
    uint64_t snapshot_slice_cpu_max_us; /* the most CPU one took (the
                                           same without preemption) */
    uint64_t snapshot_chunk_waits; /* times their loop found no free
                                      chunk and waited for the worker */
    uint64_t batches_proposed; /* entries this replica proposed */
    uint64_t cmds_proposed;    /* commands in them (group commit ratio) */
    uint64_t queued_cmds;      /* submitted, waiting to be proposed */
    uint64_t queued_bytes;     /* their payload bytes (admission bound) */
    uint64_t leader_changes;   /* times the known leader changed
                                  (a new (leader id, term) pair seen) */
    unsigned snapshot_threshold; /* in effect now (log_memory_bytes) */
    unsigned snapshot_trailing;
    uint64_t last_stored; /* highest entry raft counts as persisted here: a
                             follower's commit index never passes it, and
                             it is what it reports to the leader */
    /* A leader's view of each other member, for diagnosis:
     * "ID:MODE:NEXT:MATCH" joined by ',', MODE probe|pipeline|snapshot
     * (snapshot also gives ":SNAPSHOT_INDEX"); "" on a non-leader. */
    char progress[RGROUP_PROGRESS_LEN];
};

struct rgroup;

/* Create the replica and start raft. Returns NULL and fills @errmsg (for
 * example "data directory '/x' is not writable") on failure. @cfg and @fsm
 * are copied; fsm->data is borrowed for the group's lifetime.
 * fsm->restore may be called from here (local snapshot). If the failure comes
 * after raft_init (bootstrap or start, e.g. the address is in use), the
 * half-built replica is released asynchronously: keep running @loop before
 * uv_loop_close(). */
struct rgroup *rgroup_new(uv_loop_t *loop, const struct rgroup_config *cfg,
                          const struct rgroup_fsm *fsm, char *errmsg,
                          size_t errlen);

/* Queue @cmd for the next batch. 0, or RGROUP_ENOTLEADER / ECLOSING /
 * ETOOBIG / EFULL (max_queued_cmds or max_queued_bytes reached: admission
 * control, the caller answers "busy") without calling cb. Commands
 * submitted on one replica are applied in submission order. */
int rgroup_submit(struct rgroup *g, struct rgroup_cmd *cmd);

/* The group's clock: what a batch proposed now would be stamped with
 * (common/clock.h, clock_stamp: the wall clock without its jumps,
 * continuing from the stamps applied). A leader decides with it what it
 * decides before the log (admission, reads of expiring items), so that
 * those agree with apply. */
uint64_t rgroup_clock_ms(struct rgroup *g);

/* Walk the queue, the batches in flight and the callbacks waiting, and abort
 * on a broken invariant (common/invariant.h): the counters and the admission
 * bounds agree with the lists, batches are in flight in proposal order,
 * every command once, in submission order. O(commands waiting): the group
 * runs it itself only in the sanitizer build (deep_check_due); cheap checks
 * (the counters, the order of callbacks and of applied batches, the
 * replicated clock, the entry size) run in every build. */
void rgroup_check(const struct rgroup *g);

/* Leader, and every entry of earlier terms applied (post-election barrier). */
bool rgroup_is_leader(const struct rgroup *g);
/* Known leader's id, 0 if none. */
uint64_t rgroup_leader_id(const struct rgroup *g);
/* O(1): services call it on hot paths. */
void rgroup_status(const struct rgroup *g, struct rgroup_status *out);
/* The entries raft holds in memory and their bytes: O(entries held), for
 * /metrics and tests, not for every command. */
void rgroup_log_memory(const struct rgroup *g, uint64_t *entries,
                       uint64_t *bytes);

/* ---- Membership (carried out by raft/member.c) ---------------------------
 * Changes are proposed by the ready leader, one at a time per group. A
 * change callback (rgroup_change_cb) fires exactly once for every call that
 * returned 0, never inside raft code, with 0 (done: the configuration entry
 * committed), RGROUP_ENOTLEADER / EUNKNOWN / ECLOSING as for commands (retry
 * at the next leader: both calls are idempotent), RGROUP_ECATCHUP,
 * RGROUP_EINVAL or RGROUP_EIO. */

/* Add server @id at @address as a voter: it joins as a spare, the leader
 * brings its log up to date, then promotes it. Already a voter there: 0.
 * RGROUP_EINVAL if @id or @address is in use by another member. */
int rgroup_add_voter(struct rgroup *g, uint64_t id, const char *address,
                     rgroup_change_cb cb, void *data);

/* Remove server @id. Not a member: 0. @id is this leader: RGROUP_ESELF
 * right away (no callback), and leadership moves to another voter. The
 * last voter cannot be removed (RGROUP_EINVAL). */
int rgroup_remove_member(struct rgroup *g, uint64_t id, rgroup_change_cb cb,
                         void *data);

/* This leader asks the voter with the longest log to take over at once
 * (raft's TimeoutNow: it starts an election without waiting for an
 * election timeout), e.g. before the process stops. RGROUP_OK when asked
 * (or already handing over): leadership is lost within an election
 * timeout, at once when the target wins; RGROUP_ENOTLEADER when not the
 * leader, RGROUP_ECLOSING, or raft's refusal (no other voter). Commands
 * are refused meanwhile (RGROUP_ENOTLEADER). */
int rgroup_hand_off(struct rgroup *g);

/* The configuration this replica knows (the latest appended, committed or
 * not): up to @max members into @out. Returns the member count. */
unsigned rgroup_members(const struct rgroup *g, struct rgroup_member_info *out,
                        unsigned max);

typedef void (*rgroup_close_cb)(void *data);
/* Stop raft; queued and in-flight commands get RGROUP_ECLOSING or
 * RGROUP_EUNKNOWN. The group is freed before @cb runs.
 * (Commands already applied but not yet called back get 0. Until @cb,
 * rgroup_submit() returns RGROUP_ECLOSING; call rgroup_close() once.) */
void rgroup_close(struct rgroup *g, rgroup_close_cb cb, void *data);

#endif
