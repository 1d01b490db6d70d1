/* ctl_live: see ctl_live.h. Calls only ctl. */
#include "tools/ctl_live.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "proto/map_pb.h"


void ctl_live_meta_group(const struct cluster_map *seed,
                         struct cluster_shard *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", MAP_SM_META);
    memcpy(out->members, seed->meta, sizeof(seed->meta));
    out->n_members = seed->n_meta;
}

static uint64_t deadline(const struct ctl *ctl)
{
    return clock_mono_ms() + (uint64_t)ctl->o->seconds * 1000;
}

int ctl_live_fetch(struct ctl *ctl, const struct cluster_map *seed,
                   struct cluster_map *out)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__MapWatch w = RINGMQ__MAP_WATCH__INIT;
    Ringmq__RpcResponse *resp = NULL;
    struct cluster_shard meta;
    struct map_delta d;
    int rv = EXIT_ERROR;

    ctl_live_meta_group(seed, &meta);
    req.group = MAP_SM_META;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_MAP_WATCH;
    req.map_watch = &w; /* known 0, wait 0: the whole map, now */
    /* a follower may not have applied a change already acknowledged */
    w.at_leader = true;
    if (ctl_call_leader(ctl, &meta, &req, deadline(ctl), &resp) != 0) {
        return EXIT_ERROR;
    }
    map_delta_init(&d);
    if (ctl_check_code(resp) != 0) {
        goto out;
    }
    if (resp->body_case != RINGMQ__RPC_RESPONSE__BODY_MAP_DELTA ||
        map_pb_delta_from(resp->map_delta, &d) != 0) {
        fprintf(stderr, "ringmqctl: meta: bad map answer\n");
        goto out;
    }
    if (d.epoch == 0) {
        fprintf(stderr, "ringmqctl: meta: the cluster has no map yet (is "
                        "the meta group up?)\n");
        goto out;
    }
    cluster_map_clear(out);
    if (map_delta_apply(out, &d) != 0) {
        fprintf(stderr, "ringmqctl: meta: bad map answer\n");
        goto out;
    }
    rv = 0;
out:
    map_delta_clear(&d);
    ringmq__rpc_response__free_unpacked(resp, NULL);
    return rv;
}

int ctl_live_change(struct ctl *ctl, const struct cluster_map *seed,
                    const struct map_sm_cmd *cmd, struct map_sm_result *res)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__RpcResponse *resp = NULL;
    Ringmq__MapCommand pb;
    struct map_pb_arena a = {0};
    struct cluster_shard meta;
    int rv = EXIT_ERROR;

    ctl_live_meta_group(seed, &meta);
    map_pb_cmd_to(cmd, &pb, &a);
    req.group = MAP_SM_META;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_MAP;
    req.map = &pb;
    if (ctl_call_leader(ctl, &meta, &req, deadline(ctl), &resp) != 0) {
        goto out;
    }
    if (ctl_check_code(resp) == 0) {
        if (resp->body_case == RINGMQ__RPC_RESPONSE__BODY_MAP &&
            map_pb_result_from(resp->map, res) == 0) {
            rv = 0;
        } else {
            fprintf(stderr, "ringmqctl: meta: bad map answer\n");
        }
    }
    ringmq__rpc_response__free_unpacked(resp, NULL);
out:
    map_pb_arena_clear(&a);
    return rv;
}

static void print_members(const char *group, const struct cluster_member *m,
                          unsigned n)
{
    unsigned i;

    for (i = 0; i < n; i++) {
        printf("  %-10s member %" PRIu64 " raft %s rpc %s%s\n", group,
               m[i].id, m[i].raft, m[i].rpc, m[i].join ? " join" : "");
    }
}

int cmd_map(struct ctl *ctl, const struct cluster_map *seed)
{
    struct cluster_map map;
    unsigned i;
    int rv;

    cluster_map_init(&map);
    rv = ctl_live_fetch(ctl, seed, &map);
    if (rv != 0) {
        return rv;
    }
    printf("epoch %" PRIu64 "\n", map.epoch);
    for (i = 0; i < map.n_shards; i++) {
        const struct cluster_shard *s = &map.shards[i];
        printf("shard %s weight %u %s\n", s->name, s->weight,
               cluster_shard_state_name(s->state));
        print_members(s->name, s->members, s->n_members);
    }
    printf("meta\n");
    print_members(MAP_SM_META, map.meta, map.n_meta);
    for (i = 0; i < map.n_routers; i++) {
        const struct cluster_router *r = &map.routers[i];
        printf("router %s memcached %s amqp %s http %s\n", r->name,
               r->memcached[0] ? r->memcached : "-",
               r->amqp[0] ? r->amqp : "-", r->http[0] ? r->http : "-");
    }
    cluster_map_clear(&map);
    return 0;
}
