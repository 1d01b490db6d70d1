/*
 * cache_svc: one cache shard replica on this node: the cache state machine
 * (sm/cache_sm) behind a Raft group (raft/group).
 *
 * Writes are encoded as CacheOp commands and submitted to the group, which
 * packs concurrent ones into shared entries (group commit); the result comes
 * from the leader's own apply. Reads are served from the local state machine
 * when this replica is the ready leader ("leader" reads), or, with
 * @linearizable_reads, go through the log like writes and are answered by
 * the proposer's apply (see docs/consistency.md).
 *
 * cache_svc_submit is the memcached edge's backend and the RPC dispatcher's
 * executor: it fills call->outcome and call->result and calls call->cb
 * exactly once, possibly before returning. Outcomes (sm/outcome.h):
 * OK (call->result is the cache's answer; an op larger than an entry is
 * answered CACHE_TOO_LARGE, as memcached answers an item over its limit),
 * NOT_LEADER (nothing was done: ask the leader), CLOSING (nothing was
 * done), BUSY (nothing was done: the group has too many writes waiting to
 * be proposed, raft/group.h admission control), EXPIRED (nothing was done:
 * the deadline of cache_svc_submit_until passed while the write waited to
 * be proposed), UNAVAILABLE (leadership lost after proposing: the write
 * may or may not be applied).
 */
#ifndef RINGMQ_CACHE_SVC_H
#define RINGMQ_CACHE_SVC_H

#include <uv.h>

#include "common/buf.h"
#include "sm/cache_op.h"
#include "sm/cache_sm.h"
#include "sm/cluster_map.h"
#include "raft/group.h"

struct cache_svc;

struct cache_svc_status {
    struct rgroup_status raft;
    struct cache_sm_stats sm;
    uint64_t digest;
};

/* @group and @seed are copied. @seed is this node's flags (-m, -I): they
 * seed a shard never configured, through its log; a shard that is keeps
 * the settings of its log (changed by CACHE_OP_CONFIG, `ringmqctl shard
 * set`), and the node logs once that its flags differ. Returns NULL with
 * @errmsg on failure. */
struct cache_svc *cache_svc_new(uv_loop_t *loop,
                                const struct rgroup_config *group,
                                const struct cache_sm_config *seed,
                                bool linearizable_reads, char *errmsg,
                                size_t errlen);

/* The ring this shard starts with, when its log has none: @map's ring for
 * the shard named as this group (encoded and kept). A leader proposes it
 * as a seed RING (sm/cache_sm.h), which applies only to a shard without a
 * ring spec. Keys the shard does not own are then refused with
 * CACHE_WRONG_OWNER naming the owner, before the log and at apply. */
void cache_svc_set_ring_seed(struct cache_svc *svc,
                             const struct cluster_map *map);

void cache_svc_submit(struct cache_svc *svc, struct cache_call *call);
/* The same, for a call whose sender gives up at @deadline_ms
 * (clock_mono_ms(); 0 = never): a write still waiting to be proposed then
 * is dropped, never proposed, and completes EXPIRED. */
void cache_svc_submit_until(struct cache_svc *svc, struct cache_call *call,
                            uint64_t deadline_ms);

/* "STAT name value\r\n" lines for the memcached stats command. */
void cache_svc_stats(struct cache_svc *svc, struct buf *out);

/* @with_digest: also compute the digest, which walks every item (O(items)):
 * for replica comparison, not for frequent polling. Otherwise digest = 0. */
void cache_svc_status(struct cache_svc *svc, struct cache_svc_status *out,
                      bool with_digest);
const char *cache_svc_name(const struct cache_svc *svc);
uint64_t cache_svc_leader_id(const struct cache_svc *svc);
/* Raft log entries held in memory and their bytes (rgroup_log_memory:
 * O(entries), for /metrics). */
void cache_svc_log_memory(const struct cache_svc *svc, uint64_t *entries,
                          uint64_t *bytes);
/* This replica is the leader and serves reads and writes. */
bool cache_svc_is_leader(const struct cache_svc *svc);
/* The service's Raft group, for membership changes and the member list
 * (node_rpc). Valid until cache_svc_close(). */
struct rgroup *cache_svc_group(struct cache_svc *svc);

/* Stop the group; pending calls complete, not OK. Freed
 * before @cb runs. */
void cache_svc_close(struct cache_svc *svc, void (*cb)(void *data),
                     void *data);

#endif
