/*
 * cluster_map: the one file that describes a ringmq cluster, shared by
 * storage nodes and routers (docs/cluster.md is the reference).
 *
 *   epoch: 1                       # bump on every change of shards/weights
 *   shards:
 *     - name: s1
 *       weight: 1                  # share of the key space (ketama points)
 *       members:                   # a Raft group: 1, 3 or 5 storage nodes
 *         - {id: 1, raft: 127.0.0.1:7201, rpc: 127.0.0.1:7101}
 *         - {id: 4, raft: ..., rpc: ..., join: true}  # added later
 *   routers:
 *     - {name: r1, memcached: 127.0.0.1:11211, http: 127.0.0.1:9101}
 *
 * A node with id N runs one replica of every shard that lists member N, and
 * serves RPC on that member's rpc address. Parsed with libyaml.
 *
 * Errors: cluster_map_load returns 0 or -1 with a reason in @err; the map is
 * plain data owned by the caller (no allocation outside the struct).
 */
#ifndef RINGMQ_CLUSTER_MAP_H
#define RINGMQ_CLUSTER_MAP_H

#include <stddef.h>
#include <stdint.h>

#define CLUSTER_MAX_SHARDS 64
#define CLUSTER_MAX_MEMBERS 9
#define CLUSTER_MAX_ROUTERS 32
#define CLUSTER_NAME_MAX 64
/* "host:port" with a DNS name (253) and a 5-digit port, and the NUL */
#define CLUSTER_HOST_MAX 253
#define CLUSTER_ADDR_MAX 264

struct cluster_member {
    uint64_t id;
    char raft[CLUSTER_ADDR_MAX]; /* "a.b.c.d:port" or "name:port" */
    char rpc[CLUSTER_ADDR_MAX];  /* "host:port" */
    /* Added to a running group (docs/cluster.md#membership): a pristine
     * replica waits to be added instead of bootstrapping. */
    int join;
};

struct cluster_shard {
    char name[CLUSTER_NAME_MAX];
    unsigned weight;
    struct cluster_member members[CLUSTER_MAX_MEMBERS];
    unsigned n_members;
};

struct cluster_router {
    char name[CLUSTER_NAME_MAX];
    char memcached[CLUSTER_ADDR_MAX]; /* "" = none */
    char amqp[CLUSTER_ADDR_MAX];      /* "" = none */
    char http[CLUSTER_ADDR_MAX];      /* "" = none */
};

struct cluster_map {
    uint64_t epoch;
    struct cluster_shard shards[CLUSTER_MAX_SHARDS];
    unsigned n_shards;
    struct cluster_router routers[CLUSTER_MAX_ROUTERS];
    unsigned n_routers;
};

/* Parse and validate @path into @map (overwritten). */
int cluster_map_load(struct cluster_map *map, const char *path, char *err,
                     size_t errlen);

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

#endif
