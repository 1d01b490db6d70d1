/*
 * leader: finding the leader of remote Raft groups and retrying requests on
 * it, for the router's two remote backends: router/backend (cache ops to
 * the shard groups) and router/amqp_remote (queue commands to the
 * "<shard>.mq" groups, exchange and binding commands to "meta").
 *
 * An engine holds one rpc_client per distinct node address, shared by every
 * group the node hosts, and the groups added to it. A group knows its
 * members (in map order) and keeps a guess of which one leads. A request
 * (struct leader_req, embedded in the caller's own request) goes to the
 * guess and is retried by the engine until it gets an answer the engine
 * leaves to the caller, may have been applied, or runs out of time:
 *
 *   leader_req_start --> ops->send --> leader_req_call --RPC--> member
 *                          ^   ^                                  |
 *                          |   +---- at once -------- retry? <----+
 *                          +-- retry timer <-- after backoff |
 *                                                            v  ended
 *                                                        ops->done
 *
 * Leader tracking. Every attempt goes to the group's guess as it is when
 * the attempt is sent, so each answer helps every request of the group.
 *   - NOT_LEADER naming another member: the guess moves there and the
 *     request is retried at once. Unless the named node was found dead less
 *     than LEADER_NODE_DOWN_MS ago: a follower keeps naming its dead leader
 *     until its election timeout, and following that name would bounce the
 *     request between the two until its deadline. Such a hint counts as no
 *     hint. The same for a node that answered NOT_LEADER itself less than
 *     LEADER_NODE_DOWN_MS ago (and no request OK since): a leader that
 *     stepped down is alive and says so, while its followers name it
 *     until they elect another; following them would bounce every request
 *     between them and it until the election (each bounce a "leader
 *     change").
 *   - NOT_LEADER without a (usable) hint, NO_GROUP, a failed connection:
 *     the guess leaves the member that failed (if it was the guess) for the
 *     next member not known dead (any, if all are). So does a timed-out
 *     attempt, unless the member answered anything after the attempt was
 *     sent: it is alive (a leader that held this request in a long queue,
 *     say), and the next member may be a follower that cannot answer.
 *   - A node is "known dead" for LEADER_NODE_DOWN_MS after a connection
 *     to it was refused (or its name did not resolve) or was reset under a
 *     call, and no longer once it answers anything.
 *   - Status polls and watches (the callers' own calls) feed the same
 *     knowledge with leader_group_hint/adopt/failed/answered.
 *
 * Which requests are retried. The state machines do not deduplicate client
 * requests, so a write retried after it was executed would apply twice:
 *
 *   not executed (nothing was proposed) -> retried, every request, until
 *   its deadline:
 *     RPC_NOT_LEADER     at once when it names a usable leader, otherwise
 *                        after the backoff
 *     RPC_NO_GROUP       the node does not (yet) host the group: backoff
 *     never sent         UV_ECONNREFUSED, UV_EADDRNOTAVAIL, UV_EAI_*: the
 *                        connection attempt or name lookup failed, nothing
 *                        was written: at once or after the backoff
 *                        (leader_config.unsent_retry_at_once)
 *
 *   busy (nothing was proposed: the leader's group has too much waiting to
 *   be proposed, raft/group.h admission control) -> retried, every
 *   request, after an exponential backoff (leader_config.retry_backoff_ms,
 *   doubled at each BUSY answer up to LEADER_BUSY_BACKOFF_MAX_MS,
 *   each wait drawn between its half and its whole so that the requests
 *   refused together do not come back together); when the next retry
 *   would be due at or after the deadline the request ends at once,
 *   LEADER_ANSWERED with that answer, for the caller to report "busy"
 *   (LEADER_MAYBE_APPLIED instead when an earlier attempt's outcome was
 *   unknown: "busy" would say it never ran):
 *     RPC_BUSY
 *     RPC_EXPIRED        the request's budget (RpcRequest.budget_ms) ran
 *                        out before the node executed it: it waited in the
 *                        leader's queue (or unread) that long. Definite,
 *                        and it comes before the attempt times out when
 *                        the client's budget_margin_ms leaves room
 *
 *   maybe applied (the outcome is unknown) -> retried after the backoff only
 *   for requests started with may_retry_maybe_applied (idempotent ones: a
 *   cache GET), otherwise the request ends LEADER_MAYBE_APPLIED:
 *     RPC_UNAVAILABLE    no leader, closing, or leadership lost after the
 *                        command was proposed
 *     UV_ETIMEDOUT       the call (or the connect: rpc_client does not say
 *                        which) timed out
 *     any other error    the connection was lost with the call queued or
 *                        sent (rpc_client fails every call it accepted);
 *                        UV_EHOSTUNREACH and the like can also come from an
 *                        established connection, so they count here
 *
 *   anything else (RPC_OK, RPC_WRONG_EPOCH, RPC_BAD_REQUEST, codes this
 *   module does not know) -> ends LEADER_ANSWERED: the caller reads it.
 *
 * Backoff and deadline: a request's deadline is fixed at start (its
 * budget); an attempt due at or after it ends the request LEADER_DEADLINE.
 * "After the backoff" is leader_config.retry_backoff_ms later, never past
 * the deadline. "At once" retries are capped at 2 x members in a row (a
 * ping-pong of stale hints must not spin), then the backoff applies.
 *
 * Callbacks. ops->send runs for every attempt: from leader_req_start(),
 * from the reply of the previous attempt, or from the retry timer. ops->done
 * runs exactly once per started request and ends the engine's use of it:
 * possibly inside leader_req_start() (closing, deadline, send failure),
 * inside leader_engine_close(), or later on the loop. Both may start other
 * requests. No callback runs for a request after its done.
 *
 * Membership changes. The cluster map changes while the router serves:
 * leader_group_set_members() gives a group new members and
 * leader_engine_set_epoch() the epoch of later requests. A member index is
 * an index into the group's current member list, so one held across an
 * asynchronous call (leader_req.member, a caller's status poll or watch)
 * may name another node, or none, afterwards. Every function taking a
 * member index accepts any index: out of range it does nothing, or uses
 * the first member where it must return something. The engine itself
 * learns nothing about members from an answer to an attempt sent before
 * the change (it still ends or retries the request as the answer says).
 *
 * Ownership: the engine owns its rpc clients and groups (pointers valid
 * until the close callback; a client stays open after its node left every
 * group, until then). The memory of a leader_req is the caller's; the
 * engine uses it from leader_req_start() until it calls ops->done (which may
 * free it). Responses handed to ops->done are borrowed until it returns.
 *
 * Errors: leader_engine_new() cannot fail; leader_group_add() returns NULL
 * and leader_group_set_members() -1 with a reason in @errmsg. Request outcomes
 * are enum leader_end values, never error returns.
 *
 * Everything runs on the loop thread; nothing here is thread-safe.
 */
#ifndef RINGMQ_LEADER_H
#define RINGMQ_LEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "proto/map_yaml.h"
#include "rpc/rpc_client.h"

/* How long a node found dead is skipped and its name in hints ignored.
 * Nodes restart in a second or two; an election takes about as long. */
#define LEADER_NODE_DOWN_MS 1000
/* The longest wait between two attempts of a request answered BUSY. */
#define LEADER_BUSY_BACKOFF_MAX_MS 1000
/* A BUSY request is tried again only if this much of its deadline is left
 * after the backoff: an attempt with less would time out unanswered and
 * end "unavailable", although nothing ran (the BUSY answer is definite). */
#define LEADER_BUSY_ANSWER_MIN_MS 100
/* Group names: a shard name plus a suffix such as ".mq". */
#define LEADER_GROUP_NAME_MAX (CLUSTER_NAME_MAX + 8)

struct leader_engine;
struct leader_group;
struct leader_req;

/* How a request ended (the argument of ops->done). */
enum leader_end {
    LEADER_ANSWERED,      /* an answer left to the caller: @resp */
    LEADER_MAYBE_APPLIED, /* outcome unknown, not retried: @err < 0 (a
                           * transport error) or @resp (RPC_UNAVAILABLE) */
    LEADER_DEADLINE,      /* the budget ran out before an answer */
    LEADER_NOT_SENT,      /* ops->send failed with @err (UV_E2BIG: does
                           * not fit in a frame; or the caller's own) */
    LEADER_CLOSING,       /* the engine is closing */
};

struct leader_ops {
    /* Build the request's body into an RpcRequest and hand it to
     * leader_req_call() with @timeout_ms (the time left until the
     * deadline; the caller may shorten it, or lengthen it for a long
     * poll); return what that returned, or a negative libuv code if the
     * body cannot be built (the request then ends LEADER_NOT_SENT). */
    int (*send)(struct leader_req *q, unsigned timeout_ms);
    /* The request ended; see enum leader_end. @err is 0 unless said. */
    void (*done)(struct leader_req *q,
                 enum leader_end end,
                 int err,
                 const Ringmq__RpcResponse *resp);
};

struct leader_config {
    const struct leader_ops *ops; /* every request's; borrowed */
    uint64_t epoch;               /* sent with every request */
    unsigned retry_backoff_ms;    /* 0 = 30 */
    /* A BUSY or EXPIRED request is tried again only if this much of its
     * deadline is left after the backoff; 0 = LEADER_BUSY_ANSWER_MIN_MS.
     * A caller whose nodes take a share of each attempt before they
     * answer EXPIRED (rpc_client budget_margin_ms) leaves them room. */
    unsigned busy_answer_min_ms;
    /* After a connection that failed before sending: true = the next
     * member at once (cache ops), false = after the backoff (AMQP). */
    bool unsent_retry_at_once;
    /* For every node's client; the address is ignored. */
    struct rpc_client_config client;
};

/* A request: embedded in the caller's, which finds itself with
 * container_of(). The caller sets nothing; leader_req_start() sets all. */
struct leader_req {
    /* read-only for the caller */
    struct leader_group *group;
    unsigned member;   /* index asked by the last attempt (may be stale
                        * after leader_group_set_members) */
    unsigned attempts; /* sent so far */
    /* the engine's */
    unsigned gen; /* the group's membership generation at the attempt */
    bool may_retry_maybe_applied;
    bool maybe_applied; /* an attempt's outcome was unknown */
    unsigned hops; /* retries at once in a row */
    unsigned busy; /* BUSY answers so far (each doubles the backoff) */
    uint64_t deadline;
    uint64_t sent_at; /* uv_now() of the last attempt */
    uint64_t due; /* uv_now() of the retry, while waiting */
    void (*resume)(struct leader_req *q); /* instead of the attempt */
    struct leader_req *prev, *next;
};

/* @loop is borrowed until the close callback; @cfg is copied. Nothing
 * connects yet. */
struct leader_engine *leader_engine_new(uv_loop_t *loop,
                                        const struct leader_config *cfg);

/*
 * Add the group @name whose members are @members[0..@n) (ids and rpc
 * addresses, map order; copied), creating the clients of addresses not
 * seen yet. The first guess is the first member. Returns NULL with a
 * reason in @errmsg[@errlen] when @n is 0 or above CLUSTER_MAX_MEMBERS, an
 * address does not parse, or the engine is closing.
 */
struct leader_group *leader_group_add(struct leader_engine *e,
                                      const char *name,
                                      const struct cluster_member *members,
                                      unsigned n,
                                      char *errmsg,
                                      size_t errlen);

/*
 * Make @members[0..@n) (copied) @g's members, creating the clients of
 * addresses not seen yet; the clients of members that left stay open until
 * the engine closes (calls may be in flight on them). The guess stays on
 * the member of the same id if it is still there, otherwise it is the
 * first member. Requests of @g in flight or waiting go on, to the new
 * members from their next attempt. The same members in the same order
 * change nothing (member indexes stay valid). Returns 0, or -1 with a
 * reason in @errmsg[@errlen] (as leader_group_add) and @g unchanged.
 */
int leader_group_set_members(struct leader_group *g,
                             const struct cluster_member *members,
                             unsigned n,
                             char *errmsg,
                             size_t errlen);

/* The epoch sent with every request attempted from now on. */
void leader_engine_set_epoch(struct leader_engine *e, uint64_t epoch);

/*
 * Send @q to @g's leader, retried as described above, within @budget_ms;
 * @may_retry_maybe_applied: the request is idempotent. ops->done ends it,
 * possibly before this returns.
 */
void leader_req_start(struct leader_group *g,
                      struct leader_req *q,
                      unsigned budget_ms,
                      bool may_retry_maybe_applied);

/* leader_req_start(), but the first attempt @delay_ms from now (the
 * budget counts from now), or, with @resume, @resume(@q) then instead of
 * an attempt (see leader_req_wait): for a caller that knows its request
 * cannot succeed yet, or not at @g (the group it belongs to is not in its
 * map yet). */
void leader_req_start_later(struct leader_group *g,
                            struct leader_req *q,
                            unsigned budget_ms,
                            bool may_retry_maybe_applied,
                            unsigned delay_ms,
                            void (*resume)(struct leader_req *q));

/*
 * For ops->done (and @resume) only, instead of ending @q on an answer that
 * executed nothing and asks to be sent again, maybe elsewhere (a key or
 * queue in a move, an owner named that is not in the map yet): send @q to
 * @g (its own group or another of the engine) now, within its first
 * deadline; ops->done runs again for it later. Not counted as a retry:
 * the engine did not decide it.
 */
void leader_req_again(struct leader_req *q, struct leader_group *g);

/* The same, later: @resume(@q) runs in @delay_ms (never past the
 * deadline; the request ends LEADER_DEADLINE or LEADER_CLOSING instead
 * when it is due by then), and decides where it goes then
 * (leader_req_again) or ends it itself. */
void leader_req_wait(struct leader_req *q, unsigned delay_ms,
                     void (*resume)(struct leader_req *q));

/*
 * For ops->send only: send @req (borrowed for the call; its epoch and
 * group are set here) to the member this attempt asks. Returns
 * rpc_client_call()'s result.
 */
int leader_req_call(struct leader_req *q,
                    Ringmq__RpcRequest *req,
                    unsigned timeout_ms);

/* ---- a group, for the callers' own calls (status polls, watches) -------
 * Member indexes: any value is accepted (see "Membership changes"). */

const char *leader_group_name(const struct leader_group *g);
unsigned leader_group_size(const struct leader_group *g);
unsigned leader_group_guess(const struct leader_group *g);
/* 0 for an index out of range. */
uint64_t leader_group_member_id(const struct leader_group *g, unsigned m);
/* The first member's client for an index out of range. */
struct rpc_client *leader_group_client(const struct leader_group *g,
                                       unsigned m);

/* The member after @m, skipping members known dead unless all are; for @m
 * out of range, the first such member from 0. */
unsigned leader_group_next(const struct leader_group *g, unsigned m);

/*
 * The member a leader hint or a status names (@id first, @rpc for nodes
 * that send no id), or -1: when it names no member, names @except (-1 =
 * none), or names a node known dead.
 */
int leader_group_hint(const struct leader_group *g,
                      uint64_t id,
                      const char *rpc,
                      int except);

/* Make @m the guess (logged and counted when it changes; @why says who
 * told us). No-op for @m out of range. */
void leader_group_adopt(struct leader_group *g, unsigned m, const char *why);

/* A call to @m failed with @status (< 0): remember the node as dead when
 * the status says so (a failed connection attempt, or a reset). No-op for
 * @m out of range. */
void leader_group_failed(struct leader_group *g, unsigned m, int status);

/* @m answered: its node is alive. No-op for @m out of range. */
void leader_group_answered(struct leader_group *g, unsigned m);

/* Counters since start. */
struct leader_group_counters {
    uint64_t retries;        /* attempts beyond a request's first */
    uint64_t leader_changes; /* guess moved by a hint or adopt */
};
void leader_group_counters(const struct leader_group *g,
                           struct leader_group_counters *out);

/*
 * Stop: requests waiting for a retry and requests in flight end
 * LEADER_CLOSING (their done runs before this returns), as do requests
 * started afterwards; the callers' own calls on the clients complete with
 * UV_ECANCELED. The clients and the timer close, and the engine is freed
 * before @cb(@data) runs on the loop (@cb may be NULL). Call once.
 */
void leader_engine_close(struct leader_engine *e,
                         void (*cb)(void *data),
                         void *data);

#endif
