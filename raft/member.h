/*
 * rmember: membership changes of one raft instance, one at a time, and the
 * configuration it knows. What users see of it is rgroup_add_voter,
 * rgroup_remove_member and rgroup_members (group.h); this is the interface
 * between raft/group.c and raft/member.c.
 *
 *   add_voter:  raft_add (joins as spare) ──committed──> raft_assign(VOTER)
 *               (raft catches the new log up in rounds, then appends the
 *               promotion) ──committed──> cb(0)
 *   remove:     raft_remove ──committed──> cb(0)
 *
 * Direction: raft/group sits above raft/member. group.c owns the struct raft
 * and a struct rmember, decides whether a change may start (the group open,
 * a ready leader: @gate below) and calls in here; member.c knows raft,
 * raft/types.h and raft/transport.h, and never calls group.c. When a raft
 * step finishes (inside raft code, where the next step must not start nor
 * user code run) member.c only records it and calls the @wake hook the owner
 * gave; the owner then calls rmember_process() from outside raft code.
 *
 * Callbacks: a change callback fires exactly once for every change call that
 * returned 0, from rmember_process() or rmember_close() only: never inside
 * raft code, never inside the call that started the change (a change with
 * nothing to do completes at the next rmember_process()). The callback may
 * start the next change.
 *
 * Errors: RGROUP_* codes (raft/types.h). Threads: the raft loop thread.
 */
#ifndef RINGMQ_RAFT_MEMBER_H
#define RINGMQ_RAFT_MEMBER_H

#include <stdbool.h>
#include <stdint.h>

#include <raft.h>

#include "raft/types.h"

struct rmember_op;

struct rmember {
    struct raft *raft; /* borrowed: the owner's */
    const char *name;  /* for logs; borrowed */
    uint64_t self_id;  /* this replica's raft id */
    /* Called when a step finished and rmember_process() has work, possibly
     * from inside raft code: it must only make sure that
     * rmember_process() runs soon (e.g. start an idle handle). */
    void (*wake)(void *data);
    void *wake_data;
    /* private */
    struct rmember_op *op; /* the change under way */
    bool ready;            /* op's step finished: process() continues it */
};

/* Fill @m; no change under way. Nothing to release. */
void rmember_init(struct rmember *m,
                  struct raft *raft,
                  const char *name,
                  uint64_t self_id,
                  void (*wake)(void *data),
                  void *wake_data);

/* A finished step waits for rmember_process(): the owner keeps its loop
 * from blocking while this is true. */
bool rmember_pending(const struct rmember *m);

/* Start a change (contract: group.h, rgroup_add_voter and
 * rgroup_remove_member). @gate is the owner's verdict on whether a change
 * may start now: RGROUP_OK, or the status to return (RGROUP_ECLOSING,
 * RGROUP_ENOTLEADER) once the arguments are found valid. Then RGROUP_EBUSY
 * if a change is under way. */
int rmember_add_voter(struct rmember *m,
                      int gate,
                      uint64_t id,
                      const char *address,
                      rgroup_change_cb cb,
                      void *data);
int rmember_remove(struct rmember *m,
                   int gate,
                   uint64_t id,
                   rgroup_change_cb cb,
                   void *data);

/* Hand leadership to the voter with the longest log (contract: group.h,
 * rgroup_hand_off); @gate as above. */
int rmember_hand_off(struct rmember *m, int gate);

/* Outside raft code: continue or complete the change whose step finished;
 * nothing if none. */
void rmember_process(struct rmember *m);

/* After raft closed: complete the change under way, if any, with the
 * outcome it has (RGROUP_EUNKNOWN for a step raft had not finished). */
void rmember_close(struct rmember *m);

/* The configuration raft knows (the latest appended, committed or not): up
 * to @max members into @out. Returns the member count. Raft must not be
 * closed. */
unsigned rmember_list(const struct rmember *m,
                      struct rgroup_member_info *out,
                      unsigned max);

#endif
