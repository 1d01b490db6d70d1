/*
 * backend: the router's cache backend over the cluster's shards.
 *
 * Every cache op is routed by key with the ketama ring built from the
 * cluster map (ring node name = shard name, weight = shard weight), then
 * forwarded as an RpcRequest {epoch = map epoch, group = shard name} to the
 * shard's leader. FLUSH_ALL, which has no key, goes to every shard.
 *
 *   backend_submit(call)
 *        | ring_lookup(key) -> shard
 *        v
 *   attempt: rpc_client of the member we believe leads the shard
 *        |                      (one client per distinct node address,
 *        v                       shared by all shards the node hosts)
 *   reply / failure --classify--> done | retry now | retry after backoff
 *
 * Leader tracking and retries are router/leader's (its header has the
 * rules): each shard is a leader group with a guess of its leader, moved by
 * NOT_LEADER hints (except hints naming a node just found dead), NO_GROUP
 * and failed connections. A status poll (every status_interval_ms, one
 * StatusRequest per shard) also corrects the guess, and feeds the per-shard
 * status cache behind `stats`, /metrics and /healthz.
 *
 * The map changes while the backend serves (backend_map_update): a newer
 * map replaces the ring, the shards counted and described below, and the
 * epoch sent with requests. Shards are matched by name. A shard that left
 * the map owns no keys any more, but what the backend keeps for it lives
 * until close, so requests in flight to it complete normally.
 *
 * Retries never apply a write twice: each write carries a request id
 * (client id, seq), a random client id per shard for the router's life
 * and the shard's writes numbered from 1, and the shard applies an id once,
 * answering a repeat with the first result (sm/cache_sm.h). So every op is
 * retried until the request deadline: a request the node certainly did not
 * execute (a refused connection: on the next member at once; RPC_BUSY
 * and RPC_EXPIRED: after a backoff that doubles), and one whose outcome is
 * unknown (an
 * attempt timed out, the connection was lost after sending,
 * RPC_UNAVAILABLE: leadership lost) after the backoff, at the leader then
 * known. A write whose retry comes after more newer writes of this router
 * to the shard than it remembers is answered CACHE_STALE_RETRY (not
 * applied again; the first attempt's outcome is unknown).
 *
 * Errors: backend_new() returns NULL with a reason in @errmsg. An op that
 * gets no answer from the cache completes with call->outcome (sm/outcome.h)
 * other than OK, never an error code: UNAVAILABLE (deadline, stale
 * epoch), BUSY (the shard's leader refused it with RPC_BUSY,
 * admission control, or held it queued past each attempt's budget,
 * RPC_EXPIRED, until the deadline was too close for another retry:
 * never executed), CLOSING (submitted after backend_close), BAD_REQUEST
 * (the node refused the request), TOO_LARGE (it does not fit in an RPC
 * frame).
 *
 * Everything runs on the loop thread; nothing here is thread-safe.
 */
#ifndef RINGMQ_BACKEND_H
#define RINGMQ_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "sm/cache_op.h"
#include "proto/map_yaml.h"

#define BACKEND_REQUEST_TIMEOUT_MS_DEFAULT 5000
#define BACKEND_ATTEMPT_TIMEOUT_MS_DEFAULT 1000
#define BACKEND_RETRY_BACKOFF_MS_DEFAULT 30
#define BACKEND_STATUS_INTERVAL_MS_DEFAULT 1000

/* Zero fields take the defaults above. */
struct backend_config {
    /* Copied (cluster_map_copy): the backend keeps its own copy. */
    const struct cluster_map *map;
    /* Whole budget of one cache op, retries included; past it the op
     * completes with OUTCOME_UNAVAILABLE. */
    unsigned request_timeout_ms;
    /* Longest single RPC attempt (an op that times out is retried
     * elsewhere while budget remains; a write with its request id). The
     * node is told half of it (rpc_client budget_margin_ms): an op its
     * leader holds queued that long is answered EXPIRED, "not executed",
     * while the attempt still waits, and retried as BUSY. */
    unsigned attempt_timeout_ms;
    /* Wait before retrying when no leader is known or the shard answered
     * "unavailable". */
    unsigned retry_backoff_ms;
    /* Status poll period; a shard whose status is older than 3 periods is
     * unhealthy. */
    unsigned status_interval_ms;
    /* Hold requests until backend_map_confirmed(): the map given here is
     * the file's, and only the meta group's map says which shards own
     * keys (a file may list a shard still being filled). Held requests
     * wait within their deadline. */
    bool wait_for_map;
};

/* Latency histogram upper bounds in seconds (the last bucket is +Inf). */
#define BACKEND_LATENCY_BUCKETS 14
extern const double backend_latency_bounds[BACKEND_LATENCY_BUCKETS];

/* A snapshot of one shard: its last status answer and the router's
 * counters. Strings are owned by the backend and valid until the next
 * loop iteration. */
struct backend_shard_info {
    const char *name;
    unsigned weight;
    unsigned n_members;
    /* Status cache (from the last StatusRequest answered). */
    bool status_seen;       /* ever answered */
    bool healthy;           /* answered within 3 status intervals and
                             * reported a leader */
    uint64_t status_age_ms; /* since that answer; UINT64_MAX if never */
    uint64_t status_from;   /* node id that answered */
    uint64_t leader_id;     /* 0 = no leader known */
    const char *leader_rpc; /* "" = unknown */
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t items;
    uint64_t evictions;      /* (last status answer) */
    uint64_t limit_maxbytes; /* the shard's -m */
    uint64_t bytes;
    /* Router counters since start. */
    uint64_t requests[CACHE_OP__COUNT]; /* completed ops by type */
    uint64_t gets;                      /* GET and GAT */
    uint64_t sets;                      /* every other op (writes) */
    uint64_t hits;                      /* GET/GAT answered CACHE_HIT */
    uint64_t misses;                    /* GET/GAT answered CACHE_NOT_FOUND */
    uint64_t retries;                   /* attempts beyond the first */
    uint64_t owner_refusals; /* WRONG_OWNER answers followed elsewhere */
    uint64_t moving_refusals; /* MOVING answers waited out */
    uint64_t leader_changes; /* leader guess corrected by a hint/status */
    uint64_t errors;         /* ops completed UNAVAILABLE/BAD_REQUEST/... */
    uint64_t latency_ns_sum;
    uint64_t latency_count;
};

struct backend;

/*
 * Build the ring and one RPC client per distinct node address of @cfg->map
 * (nothing connects yet) and start the status poll. @loop is borrowed until
 * the close callback; @cfg and the map are copied.
 *
 * Returns NULL with a NUL-terminated reason in @errmsg[@errlen] when the map
 * has no shard, a shard has no member, the ring refuses the weights, or an
 * RPC address does not parse. The loop must then still run once to release
 * the RPC clients already created (they close asynchronously).
 */
struct backend *backend_new(uv_loop_t *loop,
                            const struct backend_config *cfg,
                            char *errmsg,
                            size_t errlen);

/*
 * Route with @map (copied) from now on, if its epoch is newer than the
 * current map's; an older or equal epoch is ignored (returns 0, nothing
 * changes). Shards keep their leader guess, counters and status by name:
 * changed members take effect from each request's next attempt (requests
 * in flight complete), new shards get a group (and a status poll at once),
 * shards no longer in the map leave the ring. Requests attempted from now
 * on carry @map's epoch.
 *
 * Returns 0, or -1 with a reason in @errmsg[@errlen] when @map has no
 * shard, a shard has no member, the ring refuses the weights or names, or
 * the backend is closing: the backend then keeps routing with its old map
 * (a member address the RPC client cannot parse, which
 * cluster_map_validate already refuses, may leave earlier shards with
 * their new members).
 */
int backend_map_update(struct backend *b,
                       const struct cluster_map *map,
                       char *errmsg,
                       size_t errlen);

/*
 * Execute @call->op on the shard owning its key (every shard for FLUSH_ALL).
 * The mc_backend submit contract: fills @call->outcome and @call->result
 * (initialised here) and calls @call->cb exactly once, possibly before
 * returning (only when the backend is closing or the op cannot be encoded).
 * @call, op->key and op->value are borrowed until then. After
 * backend_close() every call completes with OUTCOME_CLOSING at once.
 */
void backend_submit(struct backend *b, struct cache_call *call);

/* Index of the shard owning @key (the current map's shard order). */
unsigned backend_shard_of(const struct backend *b, const char *key, size_t len);

/* The shards of the current map. */
unsigned backend_shard_count(const struct backend *b);

/* Fill @out for the current map's shard @i (< backend_shard_count). */
void backend_shard_info(const struct backend *b,
                        unsigned i,
                        struct backend_shard_info *out);

/* Latency of completed ops over all shards: @counts[k] ops at most
 * backend_latency_bounds[k] seconds and above the previous bound (not
 * cumulative), @counts[BACKEND_LATENCY_BUCKETS] the rest. */
void backend_latency(const struct backend *b,
                     uint64_t counts[BACKEND_LATENCY_BUCKETS + 1],
                     uint64_t *sum_ns,
                     uint64_t *count);

/* The map the backend has is the meta group's: held requests go.
 * backend_map_update() confirms the map it takes; the first update of a
 * backend that waits for the map takes it whatever its epoch. */
void backend_map_confirmed(struct backend *b);

/* The map epoch the backend routes with. */
uint64_t backend_epoch(const struct backend *b);

/*
 * true when every shard of the current map answered a status poll within 3 status intervals
 * and reported a leader. Otherwise false with the first reason found in
 * @why[@whylen] (e.g. "shard s1: no leader").
 */
bool backend_healthy(const struct backend *b, char *why, size_t whylen);

/*
 * Stop: calls waiting for a retry and calls in flight complete with
 * OUTCOME_UNAVAILABLE (their callbacks run before this returns), the RPC
 * clients and timers close, and the backend is freed before @cb(@data)
 * runs on the loop (@cb may be NULL). Call once.
 */
void backend_close(struct backend *b, void (*cb)(void *data), void *data);

#endif
