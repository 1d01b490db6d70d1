/*
 * ctl: what the commands of ringmqctl share: the parsed command line, the
 * connection to one node and the calls over it, the exit codes.
 *
 * Direction: the bottom of tools/. ringmqctl.c (the command line and the
 * command table) calls the ctl_*.c command modules; they and ringmqctl.c
 * call this module (and ctl_map); this module calls none of them.
 *
 *   ringmqctl.c ──> ctl_status, ctl_cache, ctl_load, ctl_cluster, ctl_member,
 *                   ctl_shard, ctl_plan (──> ctl_live, ctl_move),
 *                   ctl_queue (──> ctl_live)
 *        │                           │ (each of them)
 *        └──────> ctl, ctl_map <─────┘
 *
 * Errors are printed to stderr where they happen ("ringmqctl: ..."), and
 * reported as -1 or an exit code, as each function says. Single-threaded,
 * on ctl->loop.
 */
#ifndef RINGMQ_TOOLS_CTL_H
#define RINGMQ_TOOLS_CTL_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "common/parse_num.h"
#include "proto/map_yaml.h"
#include "proto/rpc_frame.h"
#include "rpc/rpc_client.h"

/* Exit codes (usage() in ringmqctl.c documents them). */
#define EXIT_NEGATIVE 1
#define EXIT_ERROR 2
#define EXIT_USAGE 64

#define MAX_REDIRECTS 2
#define MAX_ARGS 8
#define MAX_NODES 16

/* The command line (ringmqctl.c fills it; commands only read it). */
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
    unsigned weight;     /* shard add --weight (0: not given) */
    const char *members; /* shard add --members ID@RAFT@RPC,... */
    uint64_t rate;       /* plans: bytes per second imported */
    const char *args[MAX_ARGS];
    int n_args;
};

struct ctl {
    uv_loop_t loop;
    struct rpc_client *client;
    const struct opts *o;
    int addr_index; /* next --node address to try after a failure */
};

/* Connect to @address (replacing the current client). 0 or -1 (printed). */
int ctl_connect(struct ctl *ctl, const char *address);

/* Send @req, following NOT_LEADER hints up to MAX_REDIRECTS times; with
 * @try_others, a failed call moves on to the next --node address. 0 with
 * *resp (the caller frees it), or -1 after printing the failure. */
int ctl_call(struct ctl *ctl,
             const Ringmq__RpcRequest *req,
             bool try_others,
             Ringmq__RpcResponse **resp);

/* Ask the leader of @req->group among @s's members: each member in turn,
 * and the leader a NOT_LEADER names, until a final answer or @deadline
 * (clock_mono_ms). UNAVAILABLE and NO_GROUP (no leader yet, busy, the
 * outcome unknown, a replica still starting) are asked again, so @req must
 * be safe to apply twice. 0 with *@resp, whose code is any other (the
 * caller frees it), or EXIT_ERROR after printing why. */
int ctl_call_leader(struct ctl *ctl,
                    const struct cluster_shard *s,
                    const Ringmq__RpcRequest *req,
                    uint64_t deadline,
                    Ringmq__RpcResponse **resp);

/* Copies paced at --rate: bytes per second, 0 = no limit. */
struct ctl_pace {
    uint64_t rate;
    uint64_t paced;    /* bytes since start_ms */
    uint64_t start_ms;
    uint64_t slept_ns; /* in all */
};

void ctl_pace_init(struct ctl_pace *p, uint64_t rate);
/* @bytes were copied: sleep until they are within the rate. Idle time is
 * no credit for a burst later. */
void ctl_pace(struct ctl_pace *p, size_t bytes);

/* NOT_LEADER as an RPC code. */
bool ctl_is_not_leader(const Ringmq__RpcResponse *r);

/* The name of an RPC code ("RPC_NOT_LEADER"), "?" if unknown. */
const char *ctl_code_name(Ringmq__RpcCode code);

/* Non-OK RPC code: print it and return EXIT_ERROR; 0 if OK. */
int ctl_check_code(const Ringmq__RpcResponse *r);

/* A signed decimal, the whole string: 0, or -1 (nothing printed). Unsigned
 * ones: common/parse_num.h. */
int ctl_parse_i64(const char *s, int64_t *out);

#endif
