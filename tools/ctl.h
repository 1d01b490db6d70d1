/*
 * ctl: what the parts of ringmqctl share: the parsed command line, the
 * connection to one node, the loaded cluster map, and the exit codes.
 * ringmqctl.c parses and dispatches; ctl_member.c changes and lists the
 * members of a shard's groups.
 */
#ifndef RINGMQ_TOOLS_CTL_H
#define RINGMQ_TOOLS_CTL_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "proto/cluster_map.h"
#include "common/ring.h"
#include "proto/rpc_frame.h"
#include "rpc/rpc_client.h"

#define EXIT_NEGATIVE 1
#define EXIT_ERROR 2
#define EXIT_USAGE 64
#define MAX_REDIRECTS 2
#define MAX_ARGS 8
#define MAX_NODES 16

struct opts {
    const char *cluster; /* --cluster FILE */
    uint64_t epoch;      /* the map's, when routing by it: nodes check it */
    bool epoch_set;      /* --epoch given: send exactly that */
    bool node_set;       /* --node or $RINGMQ_NODE given */
    const char *node;
    char *node_list; /* writable copy of node, split at ',' */
    const char *addrs[MAX_NODES];
    int n_addrs;
    bool kv; /* status --format kv */
    uint64_t count;
    const char *prefix;
    uint64_t value_size;
    unsigned concurrency;
    const char *acked;
    unsigned seconds;
    unsigned timeout_ms;
    const char *group;
    bool group_set;
    uint32_t flags;
    int64_t exptime;
    uint64_t cas;
    bool verbose;
    const char *args[MAX_ARGS];
    int n_args;
};

struct ctl {
    uv_loop_t loop;
    struct rpc_client *client;
    const struct opts *o;
    int addr_index; /* next --node address to try after a failure */
};

struct ctl_map {
    struct cluster_map map;
    struct ring *ring;
};

/* Connect to @address (replacing the current client). 0 or -1 (printed). */
int ctl_connect(struct ctl *ctl, const char *address);

/* Non-OK RPC code: print it and return EXIT_ERROR; 0 if OK. */
int check_code(const Ringmq__RpcResponse *r);

/* member add|remove|list SHARD [ID] (--cluster): ctl_member.c. */
int cmd_member(struct ctl *ctl, const struct ctl_map *m);

#endif
