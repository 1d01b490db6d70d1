/*
 * ringmqctl member: change and list the members of a shard's Raft groups.
 *
 * A shard is up to three groups on the same members: the cache group
 * "<shard>" at each member's raft port P, the queue group "<shard>.mq" at
 * P+1 and, on the map's first shard, "meta" at P+2 (docs/cluster.md). A
 * change goes to every one of them, in that order, at each group's leader:
 * the request is sent to the shard's members from the map and follows
 * NOT_LEADER hints; a group that has no leader yet, is busy with another
 * change, or lost its leader mid-change is asked again until --seconds
 * pass (both changes are idempotent at the node). Then the change is
 * recorded in the cluster map the meta group holds (for the shard, and for
 * meta when the shard hosts it), which routers follow: no router restarts.
 *
 * Direction: called by ringmqctl.c; calls only ctl, ctl_map and ctl_live.
 */
#include "tools/ctl_member.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "tools/ctl_live.h"

struct shard_group {
    char name[CLUSTER_NAME_MAX + 8];
    int port_delta;
};

/* The groups of shard @s, in the order changes are made. */
static unsigned shard_groups(const struct cluster_map *map,
                             const struct cluster_shard *s,
                             struct shard_group out[3])
{
    unsigned n = 0;

    snprintf(out[n].name, sizeof(out[n].name), "%s", s->name);
    out[n++].port_delta = 0;
    snprintf(out[n].name, sizeof(out[n].name), "%s.mq", s->name);
    out[n++].port_delta = 1;
    if (s == &map->shards[0]) {
        snprintf(out[n].name, sizeof(out[n].name), "meta");
        out[n++].port_delta = 2;
    }
    return n;
}

/* One member change of one group, asked until done or @deadline. */
static int change_group(struct ctl *ctl,
                        const struct cluster_shard *s,
                        const char *group,
                        const Ringmq__MemberChange *mc,
                        uint64_t deadline)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__RpcResponse *resp = NULL;
    int rv;

    req.group = (char *)group;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_MEMBER;
    req.member = (Ringmq__MemberChange *)mc;
    if (ctl_call_leader(ctl, s, &req, deadline, &resp) != 0) {
        return EXIT_ERROR;
    }
    rv = 0;
    if (rpc_outcome(resp->code) != OUTCOME_OK) {
        fprintf(stderr, "ringmqctl: %s: ", group);
        rv = ctl_check_code(resp);
    }
    ringmq__rpc_response__free_unpacked(resp, NULL);
    return rv;
}

/* Before adding @m: its node answers, and runs every group of the shard.
 * Raft would otherwise add it as a spare and give up catching it up after
 * a while, leaving a spare behind. */
static int check_new_member(struct ctl *ctl,
                            const struct cluster_member *m,
                            const struct shard_group *groups,
                            unsigned n)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__StatusRequest sreq = RINGMQ__STATUS_REQUEST__INIT;
    Ringmq__RpcResponse *resp = NULL;
    unsigned i;
    size_t k;
    int rv = 0;

    req.body_case = RINGMQ__RPC_REQUEST__BODY_STATUS;
    req.status = &sreq;
    if (ctl_connect(ctl, m->rpc) != 0 ||
        rpc_client_call_sync(ctl->client, &req, 0, &resp) != 0 ||
        resp->body_case != RINGMQ__RPC_RESPONSE__BODY_STATUS) {
        fprintf(stderr,
                "ringmqctl: member %" PRIu64
                " does not answer at %s: start "
                "its node (with this map) first\n",
                m->id, m->rpc);
        rv = EXIT_ERROR;
        goto out;
    }
    for (i = 0; i < n; i++) {
        for (k = 0; k < resp->status->n_groups; k++) {
            if (strcmp(resp->status->groups[k]->name, groups[i].name) == 0) {
                break;
            }
        }
        if (k == resp->status->n_groups) {
            fprintf(stderr,
                    "ringmqctl: node %" PRIu64
                    " at %s runs no group %s: is "
                    "it started with a map that lists it in this shard?\n",
                    m->id, m->rpc, groups[i].name);
            rv = EXIT_ERROR;
            goto out;
        }
    }
out:
    if (resp != NULL) {
        ringmq__rpc_response__free_unpacked(resp, NULL);
    }
    return rv;
}

/* The change in the cluster map: one command per group the map lists
 * members for (the shard, and meta), each idempotent. */
static int record(struct ctl *ctl, const struct cluster_map *map,
                  const struct cluster_shard *s,
                  const struct shard_group *groups, unsigned n, bool add,
                  uint64_t id, const struct cluster_member *m)
{
    unsigned i;

    for (i = 0; i < n; i++) {
        struct map_sm_cmd c = {0};
        struct map_sm_result res;

        if (groups[i].port_delta == 1) {
            continue; /* "<shard>.mq" shares the shard's entry */
        }
        c.type = add ? MAP_SM_MEMBER_ADD : MAP_SM_MEMBER_REMOVE;
        c.group = groups[i].port_delta == 0 ? s->name : MAP_SM_META;
        c.member.id = id;
        if (add) {
            c.member = *m;
            if (cluster_raft_port_offset(m->raft, groups[i].port_delta,
                                         c.member.raft,
                                         sizeof(c.member.raft)) != 0) {
                return EXIT_USAGE;
            }
        }
        if (ctl_live_change(ctl, map, &c, &res) != 0) {
            return EXIT_ERROR;
        }
        if (res.code != MAP_SM_OK) {
            fprintf(stderr,
                    "ringmqctl: the cluster map did not take the change "
                    "(%s): %s\n",
                    c.group, res.why);
            return EXIT_ERROR;
        }
        printf("map: %s member %" PRIu64 " %s, epoch %" PRIu64 "\n",
               c.group, id, add ? "recorded" : "dropped", res.epoch);
    }
    return 0;
}

static int member_change(struct ctl *ctl,
                         const struct cluster_map *map,
                         const struct cluster_shard *s,
                         bool add,
                         uint64_t id)
{
    const struct cluster_member *m = cluster_shard_member(s, id);
    struct shard_group groups[3];
    uint64_t deadline = clock_mono_ms() + (uint64_t)ctl->o->seconds * 1000;
    unsigned n = shard_groups(map, s, groups);
    unsigned i;

    if (add && m == NULL) {
        fprintf(stderr,
                "ringmqctl: shard %s has no member %" PRIu64
                " in the map: "
                "add it there (with join: true) first\n",
                s->name, id);
        return EXIT_USAGE;
    }
    if (add && !m->join) {
        /* a node that was not told to join bootstrapped a configuration
         * of its own; adding it would mix two first configurations */
        fprintf(stderr,
                "ringmqctl: member %" PRIu64
                " of shard %s has no "
                "\"join: true\" in the map: a new member must join (start "
                "it with that map and an empty data directory)\n",
                id, s->name);
        return EXIT_USAGE;
    }
    if (add && check_new_member(ctl, m, groups, n) != 0) {
        return EXIT_ERROR;
    }
    for (i = 0; i < n; i++) {
        Ringmq__MemberChange mc = RINGMQ__MEMBER_CHANGE__INIT;
        char raft[CLUSTER_ADDR_MAX];

        mc.id = id;
        mc.op = add ? RINGMQ__MEMBER_CHANGE__OP__ADD_VOTER
                    : RINGMQ__MEMBER_CHANGE__OP__REMOVE;
        if (add) {
            if (cluster_raft_port_offset(m->raft, groups[i].port_delta, raft,
                                         sizeof(raft)) != 0) {
                fprintf(stderr,
                        "ringmqctl: member %" PRIu64
                        ": bad raft "
                        "address %s\n",
                        id, m->raft);
                return EXIT_USAGE;
            }
            mc.raft = raft;
        }
        if (change_group(ctl, s, groups[i].name, &mc, deadline) != 0) {
            return EXIT_ERROR;
        }
        printf("%s: member %" PRIu64 " %s\n", groups[i].name, id,
               add ? "is a voter" : "removed");
        fflush(stdout);
    }
    return record(ctl, map, s, groups, n, add, id, m);
}

/* The members of every group of @s as its leader knows them (or, with no
 * leader, as the first member that answers does). */
static int member_list(struct ctl *ctl,
                       const struct cluster_map *map,
                       const struct cluster_shard *s)
{
    struct shard_group groups[3];
    Ringmq__RpcResponse *replies[CLUSTER_MAX_MEMBERS] = {0};
    unsigned n = shard_groups(map, s, groups);
    unsigned i, j, k;
    int rv = 0;

    for (j = 0; j < s->n_members; j++) {
        Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
        Ringmq__StatusRequest sreq = RINGMQ__STATUS_REQUEST__INIT;

        req.body_case = RINGMQ__RPC_REQUEST__BODY_STATUS;
        req.status = &sreq;
        if (ctl_connect(ctl, s->members[j].rpc) != 0 ||
            rpc_client_call_sync(ctl->client, &req, 0, &replies[j]) != 0 ||
            replies[j]->body_case != RINGMQ__RPC_RESPONSE__BODY_STATUS) {
            if (replies[j] != NULL) {
                ringmq__rpc_response__free_unpacked(replies[j], NULL);
                replies[j] = NULL;
            }
        }
    }
    printf("%-12s %6s %-8s %-7s %s\n", "GROUP", "ID", "ROLE", "LEADER", "RAFT");
    for (i = 0; i < n; i++) {
        const Ringmq__GroupStatus *best = NULL;

        for (j = 0; j < s->n_members; j++) {
            for (k = 0; replies[j] != NULL && k < replies[j]->status->n_groups;
                 k++) {
                const Ringmq__GroupStatus *g = replies[j]->status->groups[k];

                if (strcmp(g->name, groups[i].name) != 0 || g->n_members == 0) {
                    continue;
                }
                if (best == NULL || strcmp(g->state, "leader") == 0) {
                    best = g;
                }
            }
        }
        if (best == NULL) {
            printf("%-12s (no member answered)\n", groups[i].name);
            rv = EXIT_ERROR;
            continue;
        }
        for (k = 0; k < best->n_members; k++) {
            const Ringmq__RaftMember *m = best->members[k];

            printf("%-12s %6" PRIu64 " %-8s %-7s %s\n", groups[i].name, m->id,
                   m->role, m->id == best->leader_id ? "yes" : "", m->raft);
        }
    }
    for (j = 0; j < s->n_members; j++) {
        if (replies[j] != NULL) {
            ringmq__rpc_response__free_unpacked(replies[j], NULL);
        }
    }
    return rv;
}

int cmd_member(struct ctl *ctl, const struct ctl_map *m)
{
    const struct opts *o = ctl->o;
    const struct cluster_shard *s;
    const char *verb = o->n_args > 1 ? o->args[1] : "";
    uint64_t id = 0;
    char *end = NULL;

    if (o->n_args < 3) {
        fprintf(stderr,
                "ringmqctl: member add|remove SHARD ID, or member "
                "list SHARD\n");
        return EXIT_USAGE;
    }
    s = cluster_map_shard(&m->map, o->args[2]);
    if (s == NULL) {
        fprintf(stderr, "ringmqctl: no shard '%s' in the map\n", o->args[2]);
        return EXIT_USAGE;
    }
    if (strcmp(verb, "list") == 0 && o->n_args == 3) {
        return member_list(ctl, &m->map, s);
    }
    if (o->n_args == 4) {
        id = strtoull(o->args[3], &end, 10);
    }
    if (id == 0 || end == NULL || *end != '\0' ||
        (strcmp(verb, "add") != 0 && strcmp(verb, "remove") != 0)) {
        fprintf(stderr,
                "ringmqctl: member add|remove SHARD ID, or member "
                "list SHARD\n");
        return EXIT_USAGE;
    }
    return member_change(ctl, &m->map, s, verb[0] == 'a', id);
}
