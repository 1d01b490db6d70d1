/*
 * cluster_map: the cluster map as data: shards (name, weight, state,
 * members), the meta group's members and the routers, with the epoch that
 * counts its changes. docs/cluster.md is the reference.
 *
 * The map has two sources. A YAML file bootstraps it (proto/map_yaml reads
 * one); from then on the meta group holds it as replicated state
 * (sm/map_sm) and routers and nodes follow it. Both produce this struct.
 *
 * Shards live in one growing array, in map order: the order is part of the
 * ring (ketama breaks ties between two shards' points by index), so shards
 * are only ever appended and removal keeps the others' order. Members,
 * meta members and routers are small fixed arrays.
 *
 * Ownership: a map owns its shard array; cluster_map_clear() frees it,
 * cluster_map_copy() makes an independent copy. Pointers into the array
 * (cluster_map_shard()) are valid until the next change of the map.
 * Out of memory aborts (common/buf.h xmalloc), as everywhere in sm/.
 *
 * Pure data: no I/O, no clock. Not thread-safe; a map is owned by one
 * thread (or shared read-only).
 */
#ifndef RINGMQ_CLUSTER_MAP_H
#define RINGMQ_CLUSTER_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The ring allows 4096 nodes (common/ring.h); the map keeps below it. */
#define CLUSTER_MAX_SHARDS 4096
#define CLUSTER_MAX_MEMBERS 9
#define CLUSTER_MAX_ROUTERS 32
#define CLUSTER_NAME_MAX 64
/* "host:port" with a DNS name (253) and a 5-digit port, and the NUL */
#define CLUSTER_HOST_MAX 253
#define CLUSTER_ADDR_MAX 264
#define CLUSTER_WEIGHT_MAX 1000

struct cluster_member {
    uint64_t id;
    char raft[CLUSTER_ADDR_MAX]; /* "a.b.c.d:port" or "name:port" */
    char rpc[CLUSTER_ADDR_MAX];  /* "host:port" */
    /* Added to a running group (docs/cluster.md#membership): a pristine
     * replica waits to be added instead of bootstrapping. */
    int join;
};

/* What a shard does on the ring. Only SERVING shards own keys today;
 * JOINING (being filled) and DRAINING (being emptied) are the states of a
 * shard while a plan moves keys to or from it. */
enum cluster_shard_state {
    CLUSTER_SHARD_SERVING = 0,
    CLUSTER_SHARD_JOINING,
    CLUSTER_SHARD_DRAINING,
    CLUSTER_SHARD_STATE__COUNT
};

struct cluster_shard {
    char name[CLUSTER_NAME_MAX];
    unsigned weight;
    enum cluster_shard_state state;
    struct cluster_member members[CLUSTER_MAX_MEMBERS];
    unsigned n_members;
};

struct cluster_router {
    char name[CLUSTER_NAME_MAX];
    char memcached[CLUSTER_ADDR_MAX]; /* "" = none */
    char amqp[CLUSTER_ADDR_MAX];      /* "" = none */
    char http[CLUSTER_ADDR_MAX];      /* "" = none */
};

/* A change of the ring under way (docs/resharding.md): the ring it leads
 * to, as the shards on it in map order with their weights. The moves of
 * keys it needs are the arc diff of the two rings; their state lives in
 * the shards involved. */
enum cluster_plan_state {
    CLUSTER_PLAN_NONE = 0,
    CLUSTER_PLAN_RUNNING,
    CLUSTER_PLAN_PAUSED,
    CLUSTER_PLAN_STATE__COUNT
};

/* A shard on a ring, with its weight. */
struct cluster_ring_entry {
    char name[CLUSTER_NAME_MAX];
    unsigned weight;
};

struct cluster_plan {
    uint64_t id; /* the map epoch it started at; 0 = no plan */
    enum cluster_plan_state state;
    struct cluster_ring_entry *target;
    unsigned n_target;
};

struct cluster_map {
    uint64_t epoch; /* +1 per change; 0 = no map yet */
    struct cluster_shard *shards;
    unsigned n_shards;
    unsigned cap_shards;
    /* The meta group's members; raft is the meta group's own address. */
    struct cluster_member meta[CLUSTER_MAX_MEMBERS];
    unsigned n_meta;
    struct cluster_router routers[CLUSTER_MAX_ROUTERS];
    unsigned n_routers;
    struct cluster_plan plan;
    /* Where queues live (docs/resharding.md, "Queues are placed once"):
     * the ring of the cluster's first map, kept when shards are added or
     * reweighted, so no queue moves with the keys. A shard on it cannot
     * leave the map. */
    struct cluster_ring_entry *queue_ring;
    unsigned n_queue_ring;
};

/* "serving", "joining", "draining" ("?" out of range). */
const char *cluster_shard_state_name(enum cluster_shard_state s);
/* "none", "running", "paused" ("?" out of range). */
const char *cluster_plan_state_name(enum cluster_plan_state s);

/* An empty map (no shards, epoch 0). */
void cluster_map_init(struct cluster_map *map);
/* Free the shards and the plan; the map is empty afterwards. */
void cluster_map_clear(struct cluster_map *map);
/* @dst (initialised, emptied first) becomes an independent copy of @src. */
void cluster_map_copy(struct cluster_map *dst, const struct cluster_map *src);

/* Append a zeroed shard (weight 1, SERVING) and return it; NULL when the
 * map holds CLUSTER_MAX_SHARDS. */
struct cluster_shard *cluster_map_append(struct cluster_map *map);
/* Remove shard @i, keeping the order of the others. */
void cluster_map_remove(struct cluster_map *map, unsigned i);
/* The map's ring shards as a queue ring (@map->queue_ring replaced). */
void cluster_map_set_queue_ring(struct cluster_map *map);
/* The ketama ring of @map's queue ring (ring node i = queue_ring[i]). */
struct ring *cluster_map_queue_ring(const struct cluster_map *map, char *err,
                                    size_t errlen);
/* @dst := @src (an independent copy); @dst's old target is freed. */
void cluster_plan_copy(struct cluster_plan *dst, const struct cluster_plan *src);
void cluster_plan_clear(struct cluster_plan *p);

/* Check what every map must satisfy: at least one shard, names unique and
 * well formed, weights 1..CLUSTER_WEIGHT_MAX, members unique per shard
 * with one rpc address per node id, raft addresses unique, meta members
 * present, routers unique. 0, or -1 with a reason in @err. */
int cluster_map_validate(const struct cluster_map *map, char *err,
                         size_t errlen);

/* Whether @name may name a shard (also a group and a directory name). */
int cluster_shard_name_ok(const char *name);
/* Whether @v is "host:port" with a port 1..65535; @raft: no IPv6 (raft
 * 0.15 speaks IPv4 only and ':' in the host would be ambiguous). */
int cluster_addr_ok(const char *v, int raft);

/* Index of the shard named @name, or -1. */
int cluster_map_find(const struct cluster_map *map, const char *name);
/* The shard named @name, or NULL. */
const struct cluster_shard *cluster_map_shard(const struct cluster_map *map,
                                              const char *name);
/* The member @id of @shard, or NULL. */
const struct cluster_member *cluster_shard_member(
    const struct cluster_shard *shard, uint64_t id);
/* The router named @name, or NULL. */
const struct cluster_router *cluster_map_router(const struct cluster_map *map,
                                                const char *name);

/* The raft address of the member's group at @addr's port + @delta: the
 * shard's queue group "<shard>.mq" listens at +1, the "meta" group at +2
 * (port 0 stays 0: an ephemeral port for a single-member group). 0, or -1
 * if @addr is malformed or the port leaves 0..65535. */
int cluster_raft_port_offset(const char *addr, int delta, char *out,
                             size_t outlen);

/* Shards on the ring: the map's first ones, up to the first JOINING one.
 * Joining shards (being filled by a move) own no key by the ring and are
 * kept at the end of the map (cluster_map_validate), so ring node i is
 * shard i. */
unsigned cluster_map_ring_size(const struct cluster_map *map);
/* Whether @a and @b have the same ring: the same ring shards, in the same
 * order, with the same weights. Most changes of a map (members, a shard
 * joining or draining) leave the ring as it is; a follower keeps its ring
 * then instead of building another (O(points), docs/scaling.md). */
bool cluster_map_same_ring(const struct cluster_map *a,
                           const struct cluster_map *b);
/* The ketama ring of @map's ring shards (ring node i = shard i, named and
 * weighted as it). NULL with errno and a reason in @err (common/ring.h). */
struct ring;
struct ring *cluster_map_ring(const struct cluster_map *map, char *err,
                              size_t errlen);

/* Fill @map's meta members from its first shard's (raft ports + 2): the
 * meta group of a map that does not name its own. 0, or -1 with @err. */
int cluster_map_default_meta(struct cluster_map *map, char *err,
                             size_t errlen);

#endif
