/*
 * The inside of an rgroup, shared by raft/group.c (lifecycle, commands,
 * leader tracking) and raft/member.c (membership changes). Nothing outside
 * raft/ includes this.
 */
#ifndef RINGMQ_RAFT_GROUP_PRIV_H
#define RINGMQ_RAFT_GROUP_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "common/container_of.h"
#include "raft/fsm.h"
#include "raft/group.h"

/* A list of commands that complete together: an in-flight batch, or (on the
 * done list only) a set of queued commands being failed. */
struct rgroup_batch {
    struct raft_apply req; /* in flight: raft's request */
    struct rgroup *g;
    uint64_t seq;
    struct rgroup_cmd *head; /* cmds linked by ->next, submission order */
    size_t n;
    bool applied; /* the fsm applied it here with mine = these cmds */
    int status;   /* on the done list */
    struct rgroup_batch *prev, *next;
};

struct rgroup_barrier {
    struct raft_barrier req;
    struct rgroup *g;
    uint64_t epoch;
};

struct rgroup {
    uv_loop_t *loop;
    char name[64];
    char *dir;
    uint64_t id;
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft raft;
    struct rfsm fsm;

    uv_prepare_t prepare;
    uv_check_t check;
    uv_idle_t idle;
    bool handles_init;
    unsigned handles_open;

    size_t max_entry_bytes;
    unsigned max_inflight;
    uint64_t proposer; /* random per process lifetime */
    uint64_t seq;      /* last batch sequence number used */

    struct rgroup_cmd *q_head, *q_tail; /* submitted, not yet proposed */
    size_t q_len;
    struct rgroup_batch *fl_head, *fl_tail; /* raft_apply in flight */
    unsigned n_inflight;
    struct rgroup_batch *done_head, *done_tail; /* callbacks to deliver */

    bool leading;        /* raft_state was LEADER at the last poll */
    bool ready;          /* leading and the epoch's barrier completed */
    bool barrier_needed; /* leading, barrier not issued yet */
    uint64_t lead_term;
    uint64_t lead_epoch; /* bumped on every leadership gain and loss */
    uint64_t known_leader, known_leader_term;

    uint64_t batches_proposed, cmds_proposed, leader_changes;

    struct rgroup_change_op *change; /* the membership change under way */
    bool change_ready; /* its raft step finished: member.c continues it */

    bool closing;
    bool raft_closed;
    /* libraft 0.15 can fire the raft_io close callback twice (its
     * uvMaybeFireCloseCb has no once-guard; upstream c042b4e added one and
     * was reverted): the second call frees raft's address and log again, or
     * reads a freed group. io_close_wrap lets only the first through, and
     * the io, transport and group are released one loop turn after raft
     * reported closed (free_timer), when its close callbacks have run. */
    void (*io_close)(struct raft_io *io, raft_io_close_cb cb);
    raft_io_close_cb raft_io_close_cb;
    bool io_closed;
    uv_timer_t free_timer;
    rgroup_close_cb close_cb;
    void *close_data;
};

/* raft/member.c: continue or complete the membership change whose raft
 * step finished (change_ready), outside raft code: from process(). On
 * close, complete it with the outcome it has. */
void rgroup_member_process(struct rgroup *g);
void rgroup_member_close(struct rgroup *g);
/* raft/group.c: keep the loop from blocking while there is work
 * (change_ready, commands to flush or deliver). */
void rgroup_update_idle(struct rgroup *g);

#endif
