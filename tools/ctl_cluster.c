/* ctl_cluster: see ctl_cluster.h. Calls only ctl and ctl_map. */
#include "tools/ctl_cluster.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "sm/cache_op.h"

static void print_owner(const struct ctl_map *m, const char *key)
{
    const struct cluster_shard *s = ctl_map_owner(m, key);
    unsigned i;

    printf("key=%s hash=%08x shard=%s weight=%u epoch=%" PRIu64 " members=",
           key, ring_hash(key, strlen(key)), s->name, s->weight, m->map.epoch);
    for (i = 0; i < s->n_members; i++) {
        printf("%s%" PRIu64 "@%s", i ? "," : "", s->members[i].id,
               s->members[i].rpc);
    }
    printf("\n");
}

/* owner KEY...; "owner -" reads one key a line from standard input and
 * prints "<key> <shard>" lines (for scripts checking many keys). */
int cmd_owner(const struct ctl_map *m, const struct opts *o)
{
    int i;

    if (o->n_args < 2) {
        fprintf(stderr, "ringmqctl: owner needs a KEY (or - for stdin)\n");
        return EXIT_USAGE;
    }
    if (o->n_args == 2 && strcmp(o->args[1], "-") == 0) {
        char line[CACHE_KEY_MAX + 8];

        while (fgets(line, sizeof(line), stdin) != NULL) {
            line[strcspn(line, "\r\n")] = '\0';
            printf("%s %s\n", line, ctl_map_owner(m, line)->name);
        }
        return 0;
    }
    for (i = 1; i < o->n_args; i++) {
        print_owner(m, o->args[i]);
    }
    return 0;
}

/* One row per shard replica, from a status call to every node. */
int cmd_cluster(struct ctl *ctl, const struct ctl_map *m)
{
    const struct cluster_map *map = &m->map;
    unsigned max_addrs = map->n_shards * CLUSTER_MAX_MEMBERS;
    Ringmq__RpcResponse **replies = xcalloc(max_addrs, sizeof(*replies));
    const char **addrs = xcalloc(max_addrs, sizeof(*addrs));
    unsigned n_addrs = 0;
    unsigned s, i, j, k;
    int rv = 0;

    /* distinct node addresses */
    for (s = 0; s < map->n_shards; s++) {
        for (i = 0; i < map->shards[s].n_members; i++) {
            const char *a = map->shards[s].members[i].rpc;
            for (j = 0; j < n_addrs && strcmp(addrs[j], a) != 0; j++) {
            }
            if (j == n_addrs) {
                addrs[n_addrs++] = a;
            }
        }
    }
    for (j = 0; j < n_addrs; j++) {
        Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
        Ringmq__StatusRequest sreq = RINGMQ__STATUS_REQUEST__INIT;

        sreq.digest = true; /* the table compares replicas */
        replies[j] = NULL;
        req.body_case = RINGMQ__RPC_REQUEST__BODY_STATUS;
        req.status = &sreq;
        if (ctl_connect(ctl, addrs[j]) != 0 ||
            rpc_client_call_sync(ctl->client, &req, 0, &replies[j]) != 0 ||
            replies[j]->body_case != RINGMQ__RPC_RESPONSE__BODY_STATUS) {
            if (replies[j] != NULL) {
                ringmq__rpc_response__free_unpacked(replies[j], NULL);
                replies[j] = NULL;
            }
            rv = EXIT_ERROR; /* a node down is worth an exit status */
        }
    }
    printf("epoch %" PRIu64 "\n", map->epoch);
    printf("%-10s %6s %4s %-21s %-9s %6s %6s %10s %8s %-16s\n", "SHARD",
           "WEIGHT", "NODE", "RPC", "STATE", "LEADER", "TERM", "APPLIED", "LAG",
           "DIGEST");
    for (s = 0; s < map->n_shards; s++) {
        const struct cluster_shard *sh = &map->shards[s];
        const Ringmq__GroupStatus *gs[CLUSTER_MAX_MEMBERS] = {0};
        uint64_t newest = 0;

        for (i = 0; i < sh->n_members; i++) {
            for (j = 0; j < n_addrs; j++) {
                if (strcmp(addrs[j], sh->members[i].rpc) != 0 ||
                    replies[j] == NULL) {
                    continue;
                }
                for (k = 0; k < replies[j]->status->n_groups; k++) {
                    if (strcmp(replies[j]->status->groups[k]->name, sh->name) ==
                        0) {
                        gs[i] = replies[j]->status->groups[k];
                    }
                }
            }
            if (gs[i] != NULL && gs[i]->last_index > newest) {
                newest = gs[i]->last_index;
            }
        }
        for (i = 0; i < sh->n_members; i++) {
            if (gs[i] == NULL) {
                printf("%-10s %6u %4" PRIu64 " %-21s %-9s\n", sh->name,
                       sh->weight, sh->members[i].id, sh->members[i].rpc,
                       "down");
                continue;
            }
            printf("%-10s %6u %4" PRIu64 " %-21s %-9s %6" PRIu64 " %6" PRIu64
                   " %10" PRIu64 " %8" PRIu64 " %016" PRIx64 "\n",
                   sh->name, sh->weight, sh->members[i].id, sh->members[i].rpc,
                   gs[i]->state, gs[i]->leader_id, gs[i]->term,
                   gs[i]->last_applied, newest - gs[i]->last_applied,
                   gs[i]->digest);
        }
    }
    for (j = 0; j < n_addrs; j++) {
        if (replies[j] != NULL) {
            ringmq__rpc_response__free_unpacked(replies[j], NULL);
        }
    }
    free(replies);
    free(addrs);
    return rv;
}
