/*
 * The vocabulary of raft/: status codes, commands, the state machine
 * interface and membership types. A header of its own so that the modules
 * of raft/ can share it without including each other:
 *
 *   raft/group ──> raft/fsm, raft/member, raft/transport, raft/types
 *   raft/fsm ──> raft/types
 *   raft/member ──> raft/transport, raft/types
 *
 * group.h includes this header, so users of the group need only group.h;
 * fsm.h and member.h include it instead of group.h. Types only: no
 * functions, nothing to link.
 */
#ifndef RINGMQ_RAFT_TYPES_H
#define RINGMQ_RAFT_TYPES_H

#include <stddef.h>
#include <stdint.h>

/* Status of group operations and command callbacks (group.h says which
 * function returns which). */
enum {
    RGROUP_OK = 0,
    RGROUP_ENOTLEADER = -1, /* not (yet) a ready leader: nothing proposed */
    RGROUP_EUNKNOWN = -2,   /* leadership lost after proposing: the command
                               may or may not be applied */
    RGROUP_ECLOSING = -3,   /* group is closing: nothing proposed */
    RGROUP_EINVAL = -4,
    RGROUP_EIO = -5,        /* data directory or raft failure */
    RGROUP_ETOOBIG = -6,    /* command larger than the entry limit */
    RGROUP_EBUSY = -7,      /* another membership change is in progress */
    RGROUP_ECATCHUP = -8,   /* the new member did not catch up in time
                               (down, unreachable or too far behind) */
    RGROUP_ESELF = -9,      /* the leader was asked to remove itself: it
                               hands leadership to another voter; ask the
                               next leader */
    RGROUP_EFULL = -10,     /* the queue of commands waiting to be proposed
                               is at its bound: nothing proposed, ask again
                               later */
    RGROUP_EEXPIRED = -11   /* the command's deadline passed while it was
                               queued: nothing proposed */
};

#define RGROUP_MAX_MEMBERS 9
/* "host:port": a DNS name (253) and a port, and the NUL */
#define RGROUP_ADDR_MAX 264

struct rgroup_cmd;

typedef void (*rgroup_cmd_cb)(struct rgroup_cmd *cmd, int status);

/* A command in flight. Caller-owned; must stay alive until @cb. */
struct rgroup_cmd {
    const void *payload; /* borrowed until cb */
    size_t len;
    rgroup_cmd_cb cb;    /* status 0: applied (fsm saw it with mine = this) */
    void *data;          /* caller's */
    /* clock_mono_ms() after which proposing it is pointless (its sender
     * has given up): still queued then, it completes RGROUP_EEXPIRED
     * instead. 0 = none. */
    uint64_t deadline_ms;
    /* private */
    struct rgroup_cmd *next;
    uint64_t submit_no; /* the group's count of submits when it was taken */
};

/* A snapshot's trailer (rgroup_fsm.seal_begin): its length, and the
 * running state of its computation, the fsm's to fill. */
#define RGROUP_SEAL_LEN 8
struct rgroup_seal {
    uint64_t word[4];
};

/* The state machine behind the group. apply runs on every replica, in log
 * order, once per command of each committed batch. */
struct rgroup_fsm {
    void *data;
    /* @time_ms: the proposing leader's wall clock for the batch.
     * @mine: the command as submitted here, when this replica proposed it in
     * this process lifetime and still waits for it; NULL otherwise. The fsm
     * stores its result where @mine->data points. Must not fail: a command
     * that makes no sense is a result, not an error. */
    void (*apply)(void *data, uint64_t time_ms, const void *cmd, size_t len,
                  struct rgroup_cmd *mine);
    /* Serialize the whole state into a buffer from malloc(). 0 or -1. */
    int (*snapshot)(void *data, void **buf, size_t *len);
    /* Replace the whole state; @buf borrowed. 0 or -1 (corrupt). */
    int (*restore)(void *data, const void *buf, size_t len);
    /* Optional (begin, step and end all, or none): a snapshot written on
     * the loop a slice at a time while apply goes on (raft/fsm.h,
     * rgroup_config.incremental_snapshots). begin fixes the state to
     * snapshot, the state as it is now, and gives the size of its bytes
     * (NULL: not now); step writes the next bytes, at most @room (> 0),
     * and returns how many (> 0 until all are written), and whatever
     * apply does meanwhile must not change them; end frees the snapshot,
     * whole or not. The bytes never exist whole in memory: they go
     * through a few reused chunks to a worker thread that compresses
     * them as they come. */
    void *(*snapshot_begin)(void *data, size_t *len);
    size_t (*snapshot_step)(void *snap, void *out, size_t room);
    void (*snapshot_end)(void *snap);
    /* Optional with the above (all three or none): a trailer, the last
     * RGROUP_SEAL_LEN bytes of the snapshot, computed over the bytes
     * before it as they go past on the worker thread (step writes
     * anything there; the seal overwrites it): seal_begin(st, len) with
     * the snapshot's whole length (>= RGROUP_SEAL_LEN), seal_update on
     * the bytes before the trailer in order, in pieces whose sizes are
     * multiples of 8 but for the last, then seal_end writes the trailer at
     * @trailer. @st is the fsm's running state (raft only keeps it); they
     * touch nothing else. */
    void (*seal_begin)(struct rgroup_seal *st, size_t len);
    void (*seal_update)(struct rgroup_seal *st, const void *bytes, size_t n);
    void (*seal_end)(struct rgroup_seal *st, void *trailer);
};

/* Outcome of a membership change (group.h: rgroup_add_voter). */
typedef void (*rgroup_change_cb)(void *data, int status);

/* One member of the configuration a replica knows (rgroup_members). */
struct rgroup_member_info {
    uint64_t id;
    char raft_address[RGROUP_ADDR_MAX];
    const char *role; /* "voter", "standby", "spare" */
};

#endif
