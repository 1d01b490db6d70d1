/*
 * config: what a ringmq-node process runs, from a YAML file and/or flags.
 *
 * Precedence: defaults < --config file < flags given after it on the command
 * line (flags are applied in order, so a flag before --config is overridden
 * by the file). docs/configuration.md is the reference for every key and
 * flag; node_config_usage() prints the same list.
 *
 * Errors: functions return 0 or -1 with a message in @err.
 */
#ifndef RINGMQ_NODE_CONFIG_H
#define RINGMQ_NODE_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "proto/map_yaml.h"
#include "common/log.h"
#include "raft/group.h"

#define NODE_MAX_GROUPS 16
#define NODE_ADDR_MAX CLUSTER_ADDR_MAX

struct node_member {
    uint64_t id;
    char raft[NODE_ADDR_MAX]; /* "host:port" of its Raft transport */
    char rpc[NODE_ADDR_MAX];  /* "host:port" of its RPC listener, or "" */
    bool join;                /* added to the running group (the map's join) */
};

struct node_group_config {
    char name[64];
    struct node_member members[RGROUP_MAX_MEMBERS];
    unsigned n_members;
    bool join; /* this node's replica joins (rgroup_config.join) */
};

struct node_config {
    bool standalone;
    uint64_t id;                 /* this node's Raft id in every group */
    char data_dir[PATH_MAX];     /* groups live in data_dir/<group name> */
    char memcached[NODE_ADDR_MAX]; /* memcached edge, "" = none */
    char rpc[NODE_ADDR_MAX];     /* RPC listener, "" = none */
    char http[NODE_ADDR_MAX];    /* /healthz and /metrics, "" = none */
    char amqp[NODE_ADDR_MAX];    /* AMQP 0-9-1 edge (standalone), "" = none */
    /* AMQP publishers are blocked above/below these (common/watermark);
     * 0 = the defaults (40% of RAM, 50 MB free). */
    uint64_t amqp_memory_limit;
    uint64_t amqp_disk_free_limit;
    char raft[NODE_ADDR_MAX];    /* standalone: the single member's Raft addr */
    uint64_t memory_limit;       /* bytes per cache group (memcached -m) */
    uint32_t item_size_max;      /* bytes (memcached -I) */
    /* read_mode: false "leader" (served from the leader's state), true
     * "linearizable" (through the log); docs/consistency.md. */
    bool linearizable_reads;
    /* --rejoin (rgroup_config.rejoin): an operator's one-off word, so a
     * flag and no configuration key. */
    bool rejoin;
    unsigned election_ms;
    unsigned heartbeat_ms;
    unsigned snapshot_threshold;
    unsigned snapshot_trailing;
    /* snapshot_mode (raft/fsm.h): "incremental" (the default: the loop
     * writes a cache group's snapshots in slices, rgroup_config's
     * incremental_snapshots; other groups fork), "fork" (a child
     * serializes) or "inline" (the loop does, in one go). */
    bool inline_snapshots;
    bool incremental_snapshots;
    unsigned log_memory_mb; /* rgroup_config.log_memory_bytes, in MiB */
    enum log_level log_level;
    struct node_group_config groups[NODE_MAX_GROUPS];
    unsigned n_groups;
    char cluster_path[PATH_MAX]; /* cluster map file, "" = none */
    /* Loaded by node_config_finish from cluster_path; groups are then the
     * shards this node is a member of, in map order. Lives as long as the
     * process (never freed). */
    const struct cluster_map *cluster;
};

void node_config_defaults(struct node_config *c);

/* Apply a YAML file on top of @c. */
int node_config_load(struct node_config *c, const char *path, char *err,
                     size_t errlen);

/* Apply argv on top of @c (--config loads the file at that point).
 * Returns 0, -1 on error, 1 when --help or --version was printed. */
int node_config_parse_args(struct node_config *c, int argc, char **argv,
                           char *err, size_t errlen);

/* Free what node_config_finish loaded (the cluster map). */
void node_config_release(struct node_config *c);

/* Fill derived values (the standalone group) and check consistency. */
int node_config_finish(struct node_config *c, char *err, size_t errlen);

/* Group @g as the raft layer wants it, with its data directory. */
void node_config_group(const struct node_config *c, unsigned g,
                       struct rgroup_config *out, char *dir, size_t dirlen);

/* The RPC address of member @id of group @g, or NULL. */
const char *node_config_member_rpc(const struct node_config *c, unsigned g,
                                   uint64_t id);

void node_config_usage(FILE *f);

/* "host:port" -> parts. 0 or -1. */
int node_config_split_addr(const char *addr, char *host, size_t hostlen,
                           int *port);

#endif
