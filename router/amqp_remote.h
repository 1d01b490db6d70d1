/*
 * amqp_remote: the router's struct amqp_broker: queue commands go over the
 * internal RPC to the leader of the queue's shard group ("<shard>.mq"),
 * exchange and binding commands to the leader of the "meta" group, whose
 * members the map lists (map->meta; docs/cluster.md).
 *
 *   amqp_conn --submit--> amqp_remote --RpcRequest{mq|meta}--> group leader
 *                              ^  meta view <-- MetaWatch long poll (meta)
 *
 * Leader tracking and retries are router/leader's (its header has the
 * rules), shared with the cache backend: per group a guess (member index),
 * moved by NOT_LEADER hints at once (unless the hint names a node just
 * found dead), and to the next member after NO_GROUP, refused connections
 * or NOT_LEADER without a hint (after a short backoff). Only requests the
 * node certainly did not execute are retried here, until the request
 * deadline; an unknown outcome (timeout, connection lost after sending,
 * RPC_UNAVAILABLE) completes with OUTCOME_UNAVAILABLE and the edge
 * decides (ENQUEUE carries its dedup id, so the edge retries it). A leader
 * still busy (RPC_BUSY: nothing proposed, router/leader backs off) when
 * the deadline comes completes OUTCOME_BUSY: certainly not executed.
 *
 * The map changes while the broker serves (amqp_remote_map_update): the
 * broker contract's shard index is a ring index of the current map (shard
 * i of the map), so shard_count() and shard_of() follow the newest map, and
 * an index obtained before an update that removed shards may name another
 * shard, or none (such a call completes OUTCOME_UNAVAILABLE). Queue groups
 * are matched by shard name; calls in flight complete normally.
 *
 * The meta view: a meta_sm restored from the snapshot in every MetaResult
 * and MetaWatch answer whose version is newer. A watch is always pending on
 * the meta leader, so changes made through other routers arrive within a
 * round trip. The leader answers it at least every META_VIEW_HEARTBEAT_MS,
 * and the view routes publishes (routable()) only within
 * META_VIEW_LEASE_MS of sending the last watch a leader answered
 * (sm/meta_sm.h): the meta leader answers a change once every router knows
 * it or has run out of lease, so a router cut off from it stops routing
 * publishes on a view that may lack a binding already confirmed.
 *
 * Errors: amqp_remote_new() returns NULL with a reason in @errmsg. Calls
 * never fail synchronously: they complete through their callback, possibly
 * before submit returns (closing). Everything runs on the loop thread.
 */
#ifndef RINGMQ_AMQP_REMOTE_H
#define RINGMQ_AMQP_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "proto/map_yaml.h"
#include "edge/amqp_broker.h"

struct amqp_remote_config {
    const struct cluster_map *map; /* copied (cluster_map_copy) */
    unsigned request_timeout_ms;   /* not-executed retries; 0 = 5000 */
    /* Not ready (no new AMQP connection) until amqp_remote_map_update()
     * brings the meta group's map: queues are placed by its queue ring,
     * which the file's may not be. */
    bool wait_for_map;
    /* This router's id in meta watches (the meta leader waits for each
     * router by it: node/meta_fanout.h); 0 = not counted as a router. */
    uint64_t router_id;
};

struct amqp_remote;

/* NULL with a reason in @errmsg when the map has no shard or no meta
 * member, a group has no members, the ring refuses the map, or an address
 * does not parse; the loop must then still run to release what was made
 * (RPC clients and a timer close asynchronously). */
struct amqp_remote *amqp_remote_new(uv_loop_t *loop,
                                    const struct amqp_remote_config *cfg,
                                    char *errmsg, size_t errlen);

/*
 * Serve with @map (copied) from now on, if its epoch is newer than the
 * current map's; an older or equal epoch is ignored (returns 0). Queue
 * groups of shards whose members changed, and the meta group (map->meta),
 * take the new members from each call's next attempt; new shards get a
 * queue group; the ring is @map's; calls attempted from now on carry its
 * epoch. When the meta group's members changed, the meta watch starts
 * again on them at once. Returns 0, or -1 with a reason in @errmsg[@errlen]
 * (no shard, no meta member, the ring refuses the map, closing): the old
 * map stays (as backend_map_update, an address the RPC client cannot parse
 * may leave earlier groups with their new members).
 */
int amqp_remote_map_update(struct amqp_remote *r,
                           const struct cluster_map *map, char *errmsg,
                           size_t errlen);

/* The broker table for amqp_server_new(); valid until close. */
struct amqp_broker amqp_remote_broker(struct amqp_remote *r);

/* The meta view has been loaded at least once. */
bool amqp_remote_meta_ready(const struct amqp_remote *r);

/* Fail calls in flight and parked (OUTCOME_CLOSING), close the RPC
 * clients; freed before @cb(@data) runs. Call once. */
void amqp_remote_close(struct amqp_remote *r, void (*cb)(void *data),
                       void *data);

#endif
