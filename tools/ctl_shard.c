/*
 * ringmqctl shard set: see ctl_shard.h.
 *
 * The CONFIG command goes to the leader of the shard's cache group (asked
 * in turn among the map's members, hints followed, no leader asked again
 * until --seconds): setting a value twice is the same as once, so a
 * command whose outcome was unknown is simply sent again.
 */
#include "tools/ctl_shard.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/parse_num.h"
#include "proto/cache_pb.h"

static int usage_error(void)
{
    fprintf(stderr,
            "ringmqctl: shard set SHARD memory-limit SIZE | item-size-max "
            "SIZE (both may be given; SIZE like 1048576, 64k, 512m, 1g)\n");
    return EXIT_USAGE;
}

/* The settings named by @args (pairs of name and size) into @c. */
static int parse_settings(const char *const *args, int n,
                          struct cache_op_config *c)
{
    int i;

    if (n == 0 || n % 2 != 0) {
        return usage_error();
    }
    for (i = 0; i < n; i += 2) {
        uint64_t v;

        if (parse_num_size(args[i + 1], &v) != 0) {
            fprintf(stderr, "ringmqctl: bad size '%s'\n", args[i + 1]);
            return EXIT_USAGE;
        }
        if (strcmp(args[i], "memory-limit") == 0) {
            c->mem_limit = v;
        } else if (strcmp(args[i], "item-size-max") == 0 && v <= UINT32_MAX) {
            c->item_size_max = (uint32_t)v;
        } else {
            return usage_error();
        }
    }
    if (!cache_op_config_valid(c)) {
        fprintf(stderr,
                "ringmqctl: memory-limit must be %llu..%llu bytes and "
                "item-size-max %u..%u\n",
                (unsigned long long)CACHE_MEM_LIMIT_MIN,
                (unsigned long long)CACHE_MEM_LIMIT_MAX, CACHE_ITEM_SIZE_MIN,
                CACHE_ITEM_SIZE_MAX);
        return EXIT_USAGE;
    }
    return 0;
}

int cmd_shard(struct ctl *ctl, const struct ctl_map *m)
{
    const struct opts *o = ctl->o;
    const struct cluster_shard *s;
    struct cache_op op;
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__RpcResponse *resp = NULL;
    Ringmq__CacheOp pb;
    uint64_t deadline = clock_mono_ms() + (uint64_t)o->seconds * 1000;
    int rv;

    if (o->n_args < 3 || strcmp(o->args[1], "set") != 0) {
        return usage_error();
    }
    s = cluster_map_shard(&m->map, o->args[2]);
    if (s == NULL) {
        fprintf(stderr, "ringmqctl: no shard '%s' in the map\n", o->args[2]);
        return EXIT_USAGE;
    }
    memset(&op, 0, sizeof(op));
    op.type = CACHE_OP_CONFIG;
    rv = parse_settings(o->args + 3, o->n_args - 3, &op.config);
    if (rv != 0) {
        return rv;
    }
    cache_op_to_pb(&op, &pb);
    req.group = (char *)s->name;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_CACHE;
    req.cache = &pb;
    if (ctl_call_leader(ctl, s, &req, deadline, &resp) != 0) {
        return EXIT_ERROR;
    }
    rv = ctl_check_code(resp);
    if (rv == 0 && (resp->body_case != RINGMQ__RPC_RESPONSE__BODY_CACHE ||
                    resp->cache->status != CACHE_OK)) {
        fprintf(stderr, "ringmqctl: %s: settings refused\n", s->name);
        rv = EXIT_ERROR;
    }
    if (rv == 0 && op.config.mem_limit != 0) {
        printf("%s memory-limit %" PRIu64 "\n", s->name, op.config.mem_limit);
    }
    if (rv == 0 && op.config.item_size_max != 0) {
        printf("%s item-size-max %" PRIu32 "\n", s->name,
               op.config.item_size_max);
    }
    ringmq__rpc_response__free_unpacked(resp, NULL);
    return rv;
}
