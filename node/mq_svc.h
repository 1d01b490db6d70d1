/*
 * mq_svc: one AMQP queue shard replica on this node ("<shard>.mq"): the
 * queue state machine (sm/mq_sm) behind a Raft group (raft/group),
 * in the pattern of cache_svc.
 *
 * Commands are encoded as MqCommand (proto/mq.proto) and submitted to the
 * group, which packs concurrent ones into shared entries (group commit) and
 * stamps each entry with the leader's wall clock; the result comes from the
 * leader's own apply (no second read).
 *
 * What the service adds on the leader:
 *   - Era start: every time this replica becomes the ready leader (a new
 *     term), it first submits ERA (sm/mq_sm.h: a marker; deliveries stay
 *     with their consumers, since the checkouts are replicated and the
 *     consumers' routers usually outlive a leader), or BOOT instead the
 *     first time when mq_svc_config.boot is set (standalone broker start:
 *     every connection died with the process). Client commands submitted
 *     afterwards are ordered behind it. One era command per term: leading
 *     again in the same term (raft said not-leader for a moment) keeps the
 *     era; one that failed unapplied (the group dropped or refused it) is
 *     submitted again while this replica leads in its term, and
 *     mq_svc_ready() stays false until one is applied.
 *   - Long-poll CHECKOUT: a CHECKOUT with wait_ms > 0 finding no ready
 *     message and none set aside for its consumer (local state), or its
 *     queue in a move (mq_sm.h), is parked, not proposed, and re-proposed
 *     when an applied command may have made messages available on its
 *     queue (or for it: another consumer's CHECKOUT that set messages
 *     aside; a settle that frees prefetch; a cancel; the end of a move),
 *     or completed OK with no deliveries when wait_ms pass. How a queue's
 *     messages are shared is the state machine's (mq_sm.h, CHECKOUT:
 *     round robin over the registered consumers, in the log); woken
 *     waiters are proposed in arrival order and go to the back when they
 *     park again.
 *   - Router lease: routers are remembered by who.router of each command
 *     submitted here; one not seen for MQ_SVC_LEASE_MS gets a RETURN scope
 *     ROUTER (its deliveries back, its consumers and exclusive queues gone).
 *     The edge's per-second EXPIRE keeps a live router seen. Leases are
 *     the leader's own: whenever this replica starts leading (a new era,
 *     or again within its term), every router the state names
 *     (mq_sm_for_each_router) gets a lease starting then, once more when
 *     the era command is applied (the state then holds every earlier
 *     term). So a router that died with the previous leader, which will
 *     never send here, still loses its deliveries one lease after the
 *     failover, and a live one keeps them.
 *   - EXPIRE: proposed only when it would act on something, i.e. when
 *     mq_sm_next_due() (a message TTL, an x-expires, an outbox entry to
 *     hand out again) is at or before the stamp its entry would get
 *     (rgroup_clock_ms) and no EXPIRE proposed here is still on its
 *     way (another router's tick: that one applies what is due), or
 *     before this leader's era command is applied. Otherwise it is
 *     answered OK at once with an empty result: an edge's tick then only
 *     renews its router's lease, and an idle shard writes nothing to its
 *     log. Apply never depends on this choice: an EXPIRE that is not due
 *     changes nothing but the replicated clock, which the next entry's
 *     stamp moves anyway.
 *
 * Message bodies live in the group's body store (node/mq_store.h,
 * DIR/bodies beside the Raft data, docs/bodies.md), not in the state:
 *   - every replica stores the bodies a command's result asks for
 *     (ENQUEUE, MOVE_IN: mq_sm.h "Message bodies") when it applies it; a
 *     store that cannot write stops the process (the others stored them);
 *   - the result handed to a caller (this replica proposed it) gets its
 *     deliveries' and dead letters' bodies read from the store. One that
 *     cannot be read (a range still missing after an installed snapshot)
 *     is left out and the result marked incomplete: the edge gives back
 *     the deliveries it did not see (mq_sm.h);
 *   - a segment the state freed is unlinked once a snapshot at or after
 *     the entry that freed it is stored (checked every tick); a snapshot
 *     first makes the bodies durable (mq_store_sync, in the forked child);
 *   - a restore tells the store what the state names; one installed from
 *     the leader (not this replica's own snapshot at start) leaves those
 *     ranges missing until the owner's fetcher fills them
 *     (on_bodies_missing, node/mq_fetch.h);
 *   - a move's export reads bodies from the store: one missing answers
 *     OUTCOME_UNAVAILABLE (ask again).
 *
 * Completion: mq_svc_submit() completes @call exactly once through
 * call->cb, possibly before returning, always on the loop thread. Status
 * (sm/outcome.h):
 *   OUTCOME_OK           applied; call->result is the state machine's
 *                        result, owned by the call (mq_sm_result_clear);
 *                        or an EXPIRE not due, answered unproposed with
 *                        an empty result;
 *   OUTCOME_NOT_LEADER   nothing was proposed: this replica is not the
 *                        ready leader (ask mq_svc_leader_id(), redirect);
 *   OUTCOME_UNAVAILABLE  proposed, then leadership was lost, or raft
 *                        refused it: the command may or may not be applied;
 *   OUTCOME_TOO_LARGE    the command exceeds the group's entry limit;
 *   OUTCOME_BUSY         nothing was proposed: the group's queue is full
 *                        (raft/group.h, admission control);
 *   OUTCOME_EXPIRED      nothing was proposed: mq_svc_submit_until's
 *                        deadline passed while the command was queued;
 *   OUTCOME_CLOSING      mq_svc_close() was called.
 * On any status but OK call->result is empty (nothing to clear, but
 * clearing is harmless). Applied calls complete in the order this replica
 * applied them (rgroup delivers callbacks in order); a long-poll CHECKOUT
 * that came back empty and parked again counts as applied when the
 * proposal whose result it reports is, so "every delivery up to tag N" is
 * always known to the edge before a later result.
 *
 * Cost: a consumer whose prefetch is full but whose queue has ready
 * messages is re-proposed (and comes back empty) after each event that
 * could free it; the edge should not long-poll for consumers without
 * credit. A command the wire form cannot carry (type or
 * scope out of range) completes OK with result status MQ_SM_BAD_REQUEST.
 *
 * Ownership: the pointers inside call->cmd are borrowed until cb (a parked
 * call is re-encoded from them). @call is caller-owned and must stay alive
 * until cb.
 */
#ifndef RINGMQ_MQ_SVC_H
#define RINGMQ_MQ_SVC_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "node/mq_store.h"
#include "sm/mq_sm.h"
#include "raft/group.h"
#include "sm/outcome.h"

#define MQ_SVC_LEASE_MS 15000

struct mq_svc;

struct mq_svc_call {
    /* in */
    struct mq_sm_cmd cmd;
    uint32_t wait_ms; /* CHECKOUT long poll; 0 = answer now */
    void (*cb)(struct mq_svc_call *call);
    void *data; /* caller's */
    /* out */
    enum outcome status;
    struct mq_sm_result result;
    /* private */
    struct mq_svc *svc;
    uint64_t deadline;    /* uv_now() when a long poll gives up */
    uint64_t until_ms;    /* mq_svc_submit_until's deadline, 0 = none */
    uint64_t seen_wakes;  /* svc->wakes when the CHECKOUT was applied */
    struct mq_svc_call *wnext; /* waiter list of its queue */
    struct mq_svc_call *wprev;
    struct mq_svc_waitq *wq;   /* non-NULL while parked */
};

struct mq_svc_config {
    struct mq_sm_config sm;
    /* Submit BOOT instead of ERA the first time this replica
     * leads (once per process): only for a broker whose every connection
     * died with this process, i.e. the standalone node. */
    bool boot;
    /* Router lease; 0 = MQ_SVC_LEASE_MS. */
    uint32_t lease_ms;
    /* Optional: the result of each command the service submits itself
     * (ERA, BOOT, lease RETURN), when applied; borrowed for the
     * call. The owner uses it for what the edge would do with a result:
     * deleted queues lose their bindings (meta QUEUE_GONE). */
    void (*on_internal)(void *data, const struct mq_sm_cmd *cmd,
                        const struct mq_sm_result *res);
    void *on_internal_data;
    /* Optional: a snapshot installed from the leader left body ranges
     * missing in the store (mq_svc_store): the owner's fetcher
     * (node/mq_fetch) is to get them. */
    void (*on_bodies_missing)(void *data);
    void *on_bodies_missing_data;
    /* Tests only (zero in production). test_expire_eras: the first N era
     * commands are submitted with a deadline already passed, so the group
     * drops them unproposed (RGROUP_EEXPIRED), as it fails one it cannot
     * propose. test_leads: consulted after rgroup_is_leader(); false
     * makes the service see no leadership, as when raft reports
     * not-leader for a moment within a term. */
    unsigned test_expire_eras;
    bool (*test_leads)(void *data);
    void *test_data;
};

struct mq_svc_status {
    struct rgroup_status raft;
    struct mq_sm_stats sm;
    uint64_t digest;       /* 0 unless asked for */
    uint64_t waiters;      /* parked CHECKOUTs */
    uint64_t wakeups;      /* waiters re-proposed */
    uint64_t poll_timeouts;
    uint64_t eras;         /* ERA/BOOT applied as leader */
    uint64_t lease_returns;
    uint64_t expires_answered; /* EXPIREs answered unproposed: none due */
    bool booted;           /* BOOT applied (config.boot) */
    struct mq_store_stats store;
    uint64_t body_misses; /* bodies a result could not be given (missing
                             or not checking): left out */
};

/* @group and @cfg are copied (@cfg NULL = defaults). Returns NULL with
 * @errmsg on failure. */
struct mq_svc *mq_svc_new(uv_loop_t *loop, const struct rgroup_config *group,
                          const struct mq_svc_config *cfg, char *errmsg,
                          size_t errlen);

void mq_svc_submit(struct mq_svc *svc, struct mq_svc_call *call);
/* The same, for a call whose sender gives up at @deadline_ms
 * (clock_mono_ms(); 0 = never): a command still waiting in the group's
 * queue then is dropped, never proposed, and completes OUTCOME_EXPIRED. A
 * parked long-poll CHECKOUT is not proposed and keeps its wait_ms; each
 * proposal made for it when woken carries @deadline_ms. */
void mq_svc_submit_until(struct mq_svc *svc, struct mq_svc_call *call,
                         uint64_t deadline_ms);

/* @with_digest: also compute the state digest (walks everything). */
void mq_svc_status(struct mq_svc *svc, struct mq_svc_status *out,
                   bool with_digest);
const char *mq_svc_name(const struct mq_svc *svc);
/* The group's body store, for the owner's fetcher and node RPC's segment
 * reads (node/mq_fetch.h); valid until the service is closed. */
struct mq_store *mq_svc_store(struct mq_svc *svc);
uint64_t mq_svc_leader_id(const struct mq_svc *svc);
/* A chunk of a queue's export for a move (sm/mq_sm.h, mq_sm_export). */
struct mq_svc_export {
    void *chunk; /* malloc'ed, the caller frees it; NULL: the queue is not
                  * frozen for a move here (or does not exist) */
    size_t len;
    uint64_t next_cursor;
    bool last;
};

/* Read the chunk of (@vhost, @queue)'s export at @cursor, about
 * @max_bytes, from this replica's state: OUTCOME_OK with @out, or
 * OUTCOME_NOT_LEADER (only the ready leader answers: it has applied every
 * entry of earlier terms, so a freeze committed before is seen), or
 * OUTCOME_UNAVAILABLE (a body of the chunk is missing here for now). */
enum outcome mq_svc_export(struct mq_svc *svc, const char *vhost,
                           const char *queue, uint64_t cursor,
                           uint32_t max_bytes, struct mq_svc_export *out);

/* Ready leader that has submitted its era command: submits are accepted. */
bool mq_svc_is_leader(struct mq_svc *svc);
/* The queue group (membership, member list). Valid until mq_svc_close(). */
struct rgroup *mq_svc_group(struct mq_svc *svc);
/* Leader, and the era command of this leadership (ERA or BOOT) has been
 * applied: O(1), for the edge's hot path. */
bool mq_svc_ready(struct mq_svc *svc);
/* config.boot and BOOT has been applied here (as leader). */
bool mq_svc_booted(const struct mq_svc *svc);
/* Replace config.on_internal / on_internal_data (NULL: none), e.g. before
 * the owner of @data goes away. */
void mq_svc_set_on_internal(struct mq_svc *svc,
                            void (*cb)(void *data, const struct mq_sm_cmd *,
                                       const struct mq_sm_result *),
                            void *data);
/* The local state machine (read-only: for stats and tests). */
const struct mq_sm *mq_svc_sm(const struct mq_svc *svc);

/* Stop: parked calls complete with CLOSING at once, queued and in-flight
 * ones with CLOSING or UNAVAILABLE; then the group stops. @svc is freed
 * before @cb runs. Call once. */
void mq_svc_close(struct mq_svc *svc, void (*cb)(void *data), void *data);

#endif
