/* map_pb: see map_pb.h. */
#include "proto/map_pb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

void map_pb_arena_clear(struct map_pb_arena *a)
{
    size_t i;

    for (i = 0; i < a->n; i++) {
        free(a->blocks[i]);
    }
    free(a->blocks);
    memset(a, 0, sizeof(*a));
}

static void *arena_alloc(struct map_pb_arena *a, size_t n)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 16;
        a->blocks = xrealloc(a->blocks, a->cap * sizeof(*a->blocks));
    }
    a->blocks[a->n] = xcalloc(1, n ? n : 1);
    return a->blocks[a->n++];
}

/* protobuf-c's strings are char *; ours stay unchanged while packed */
static char *str(const char *s)
{
    return (char *)s;
}

/* ---- to protobuf -------------------------------------------------------- */

static Ringmq__ClusterMember **members_to(const struct cluster_member *m,
                                          unsigned n, struct map_pb_arena *a)
{
    Ringmq__ClusterMember **out = arena_alloc(a, n * sizeof(*out));
    Ringmq__ClusterMember *pb = arena_alloc(a, n * sizeof(*pb));
    unsigned i;

    for (i = 0; i < n; i++) {
        ringmq__cluster_member__init(&pb[i]);
        pb[i].id = m[i].id;
        pb[i].raft = str(m[i].raft);
        pb[i].rpc = str(m[i].rpc);
        pb[i].join = m[i].join != 0;
        out[i] = &pb[i];
    }
    return out;
}

static void shard_to(const struct cluster_shard *s, Ringmq__ClusterShard *pb,
                     struct map_pb_arena *a)
{
    ringmq__cluster_shard__init(pb);
    pb->name = str(s->name);
    pb->weight = s->weight;
    pb->state = (uint32_t)s->state;
    pb->n_members = s->n_members;
    pb->members = members_to(s->members, s->n_members, a);
}

static Ringmq__ClusterShard **shards_to(const struct cluster_map *map,
                                        struct map_pb_arena *a)
{
    Ringmq__ClusterShard **out = arena_alloc(a, map->n_shards * sizeof(*out));
    Ringmq__ClusterShard *pb = arena_alloc(a, map->n_shards * sizeof(*pb));
    unsigned i;

    for (i = 0; i < map->n_shards; i++) {
        shard_to(&map->shards[i], &pb[i], a);
        out[i] = &pb[i];
    }
    return out;
}

static Ringmq__ClusterRouter **routers_to(const struct cluster_map *map,
                                          struct map_pb_arena *a)
{
    Ringmq__ClusterRouter **out =
        arena_alloc(a, map->n_routers * sizeof(*out));
    Ringmq__ClusterRouter *pb = arena_alloc(a, map->n_routers * sizeof(*pb));
    unsigned i;

    for (i = 0; i < map->n_routers; i++) {
        const struct cluster_router *r = &map->routers[i];
        ringmq__cluster_router__init(&pb[i]);
        pb[i].name = str(r->name);
        pb[i].memcached = str(r->memcached);
        pb[i].amqp = str(r->amqp);
        pb[i].http = str(r->http);
        out[i] = &pb[i];
    }
    return out;
}

static Ringmq__ClusterRingEntry **entries_to(const struct cluster_ring_entry *e,
                                              unsigned n,
                                              struct map_pb_arena *a)
{
    Ringmq__ClusterRingEntry **t = arena_alloc(a, n * sizeof(*t));
    Ringmq__ClusterRingEntry *ts = arena_alloc(a, n * sizeof(*ts));
    unsigned i;

    for (i = 0; i < n; i++) {
        ringmq__cluster_ring_entry__init(&ts[i]);
        ts[i].name = str(e[i].name);
        ts[i].weight = e[i].weight;
        t[i] = &ts[i];
    }
    return t;
}

static Ringmq__ClusterPlan *plan_to(const struct cluster_plan *p,
                                    struct map_pb_arena *a)
{
    Ringmq__ClusterPlan *pb = arena_alloc(a, sizeof(*pb));

    ringmq__cluster_plan__init(pb);
    pb->id = p->id;
    pb->state = (uint32_t)p->state;
    pb->n_target = p->n_target;
    pb->target = entries_to(p->target, p->n_target, a);
    return pb;
}

void map_pb_map_to(const struct cluster_map *map, Ringmq__ClusterMap *out,
                   struct map_pb_arena *a)
{
    ringmq__cluster_map__init(out);
    out->epoch = map->epoch;
    out->n_shards = map->n_shards;
    out->shards = shards_to(map, a);
    out->n_meta = map->n_meta;
    out->meta = members_to(map->meta, map->n_meta, a);
    out->n_routers = map->n_routers;
    out->routers = routers_to(map, a);
    out->plan = plan_to(&map->plan, a);
    out->n_queue_ring = map->n_queue_ring;
    out->queue_ring = entries_to(map->queue_ring, map->n_queue_ring, a);
}

void map_pb_cmd_to(const struct map_sm_cmd *c, Ringmq__MapCommand *out,
                   struct map_pb_arena *a)
{
    ringmq__map_command__init(out);
    out->type = (uint32_t)c->type;
    out->expected_epoch = c->expected_epoch;
    if (c->map != NULL) {
        out->map = arena_alloc(a, sizeof(*out->map));
        map_pb_map_to(c->map, out->map, a);
    }
    out->group = str(c->group != NULL ? c->group : "");
    if (c->type == MAP_SM_MEMBER_ADD || c->type == MAP_SM_MEMBER_REMOVE) {
        out->member = *members_to(&c->member, 1, a);
    }
    if (c->shard != NULL) {
        out->shard = arena_alloc(a, sizeof(*out->shard));
        shard_to(c->shard, out->shard, a);
    }
    out->weight = c->weight;
    out->state = (uint32_t)c->state;
    if (c->plan != NULL) {
        out->plan = plan_to(c->plan, a);
    }
    out->plan_state = (uint32_t)c->plan_state;
    out->plan_id = c->plan_id;
}

void map_pb_result_to(const struct map_sm_result *r, Ringmq__MapResult *out)
{
    ringmq__map_result__init(out);
    out->code = (uint32_t)r->code;
    out->changed = r->changed;
    out->epoch = r->epoch;
    out->why = str(r->why);
}

void map_pb_delta_to(const struct map_delta *d, Ringmq__MapDelta *out,
                     struct map_pb_arena *a)
{
    unsigned i;

    ringmq__map_delta__init(out);
    out->from = d->from;
    out->epoch = d->epoch;
    out->full = d->full;
    out->n_shards = d->part.n_shards;
    out->shards = shards_to(&d->part, a);
    out->has_meta = d->has_meta;
    if (d->has_meta) {
        out->n_meta = d->part.n_meta;
        out->meta = members_to(d->part.meta, d->part.n_meta, a);
    }
    out->has_routers = d->has_routers;
    if (d->has_routers) {
        out->n_routers = d->part.n_routers;
        out->routers = routers_to(&d->part, a);
    }
    out->has_plan = d->has_plan;
    if (d->has_plan) {
        out->plan = plan_to(&d->part.plan, a);
    }
    out->has_queue_ring = d->has_queue_ring;
    if (d->has_queue_ring) {
        out->n_queue_ring = d->part.n_queue_ring;
        out->queue_ring =
            entries_to(d->part.queue_ring, d->part.n_queue_ring, a);
    }
    out->n_removed = d->n_removed;
    out->removed = arena_alloc(a, d->n_removed * sizeof(*out->removed));
    for (i = 0; i < d->n_removed; i++) {
        out->removed[i] = str(d->removed[i]);
    }
}

/* ---- from protobuf ------------------------------------------------------ */

static int copy_str(char *dst, size_t cap, const char *s)
{
    size_t len = s != NULL ? strlen(s) : 0;

    if (len >= cap) {
        return -1;
    }
    memcpy(dst, s != NULL ? s : "", len + 1);
    return 0;
}

static int member_from(const Ringmq__ClusterMember *pb,
                       struct cluster_member *m)
{
    memset(m, 0, sizeof(*m));
    if (pb == NULL) {
        return -1;
    }
    m->id = pb->id;
    m->join = pb->join ? 1 : 0;
    return copy_str(m->raft, sizeof(m->raft), pb->raft) != 0 ||
                   copy_str(m->rpc, sizeof(m->rpc), pb->rpc) != 0
               ? -1
               : 0;
}

static int members_from(Ringmq__ClusterMember *const *pb, size_t n,
                        struct cluster_member *m, unsigned *count)
{
    size_t i;

    if (n > CLUSTER_MAX_MEMBERS) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (member_from(pb[i], &m[i]) != 0) {
            return -1;
        }
    }
    *count = (unsigned)n;
    return 0;
}

static int shard_from(const Ringmq__ClusterShard *pb, struct cluster_shard *s)
{
    memset(s, 0, sizeof(*s));
    if (pb == NULL || pb->state >= CLUSTER_SHARD_STATE__COUNT ||
        pb->weight > CLUSTER_WEIGHT_MAX ||
        copy_str(s->name, sizeof(s->name), pb->name) != 0) {
        return -1;
    }
    s->weight = pb->weight;
    s->state = (enum cluster_shard_state)pb->state;
    return members_from(pb->members, pb->n_members, s->members,
                        &s->n_members);
}

static int routers_from(Ringmq__ClusterRouter *const *pb, size_t n,
                        struct cluster_map *map)
{
    size_t i;

    if (n > CLUSTER_MAX_ROUTERS) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        struct cluster_router *r = &map->routers[i];
        if (pb[i] == NULL ||
            copy_str(r->name, sizeof(r->name), pb[i]->name) != 0 ||
            copy_str(r->memcached, sizeof(r->memcached), pb[i]->memcached) ||
            copy_str(r->amqp, sizeof(r->amqp), pb[i]->amqp) != 0 ||
            copy_str(r->http, sizeof(r->http), pb[i]->http) != 0) {
            return -1;
        }
    }
    map->n_routers = (unsigned)n;
    return 0;
}

/* Shards, meta and routers of a map or a delta into @out. */
static int parts_from(Ringmq__ClusterShard *const *shards, size_t n_shards,
                      Ringmq__ClusterMember *const *meta, size_t n_meta,
                      Ringmq__ClusterRouter *const *routers, size_t n_routers,
                      struct cluster_map *out)
{
    size_t i;

    if (n_shards > CLUSTER_MAX_SHARDS) {
        return -1;
    }
    for (i = 0; i < n_shards; i++) {
        if (shard_from(shards[i], cluster_map_append(out)) != 0) {
            return -1;
        }
    }
    if (members_from(meta, n_meta, out->meta, &out->n_meta) != 0) {
        return -1;
    }
    return routers_from(routers, n_routers, out);
}

static int entries_from(Ringmq__ClusterRingEntry *const *pb, size_t n,
                        struct cluster_ring_entry **out, unsigned *n_out)
{
    size_t i;

    free(*out);
    *out = NULL;
    *n_out = 0;
    if (n > CLUSTER_MAX_SHARDS) {
        return -1;
    }
    *out = xcalloc(n ? n : 1, sizeof(**out));
    for (i = 0; i < n; i++) {
        if (pb[i] == NULL ||
            copy_str((*out)[i].name, CLUSTER_NAME_MAX, pb[i]->name) != 0 ||
            pb[i]->weight > CLUSTER_WEIGHT_MAX) {
            return -1;
        }
        (*out)[i].weight = pb[i]->weight;
    }
    *n_out = (unsigned)n;
    return 0;
}

static int plan_from(const Ringmq__ClusterPlan *pb, struct cluster_plan *out)
{
    cluster_plan_clear(out);
    if (pb == NULL) {
        return 0;
    }
    if (pb->state >= CLUSTER_PLAN_STATE__COUNT ||
        entries_from(pb->target, pb->n_target, &out->target,
                     &out->n_target) != 0) {
        cluster_plan_clear(out);
        return -1;
    }
    out->id = pb->id;
    out->state = (enum cluster_plan_state)pb->state;
    return 0;
}

int map_pb_map_from(const Ringmq__ClusterMap *pb, struct cluster_map *out)
{
    cluster_map_clear(out);
    if (pb == NULL ||
        parts_from(pb->shards, pb->n_shards, pb->meta, pb->n_meta,
                   pb->routers, pb->n_routers, out) != 0 ||
        plan_from(pb->plan, &out->plan) != 0 ||
        entries_from(pb->queue_ring, pb->n_queue_ring, &out->queue_ring,
                     &out->n_queue_ring) != 0) {
        cluster_map_clear(out);
        return -1;
    }
    out->epoch = pb->epoch;
    return 0;
}

void map_pb_cmd_clear(struct map_pb_cmd *c)
{
    cluster_map_clear(&c->map);
    cluster_plan_clear(&c->plan);
    memset(c, 0, sizeof(*c));
}

int map_pb_cmd_from(const Ringmq__MapCommand *pb, struct map_pb_cmd *out)
{
    memset(out, 0, sizeof(*out));
    cluster_map_init(&out->map);
    if (pb->type >= MAP_SM_CMD__COUNT ||
        pb->state >= CLUSTER_SHARD_STATE__COUNT ||
        copy_str(out->group, sizeof(out->group), pb->group) != 0) {
        return -1;
    }
    out->cmd.type = (enum map_sm_cmd_type)pb->type;
    out->cmd.expected_epoch = pb->expected_epoch;
    out->cmd.group = out->group;
    out->cmd.weight = pb->weight;
    out->cmd.state = (enum cluster_shard_state)pb->state;
    if (pb->map != NULL) {
        if (map_pb_map_from(pb->map, &out->map) != 0) {
            return -1;
        }
        out->cmd.map = &out->map;
    }
    if (pb->member != NULL && member_from(pb->member, &out->cmd.member) != 0) {
        return -1;
    }
    if (pb->shard != NULL) {
        if (shard_from(pb->shard, &out->shard) != 0) {
            return -1;
        }
        out->cmd.shard = &out->shard;
    }
    if (pb->plan_state >= CLUSTER_PLAN_STATE__COUNT) {
        return -1;
    }
    out->cmd.plan_state = (enum cluster_plan_state)pb->plan_state;
    out->cmd.plan_id = pb->plan_id;
    if (pb->plan != NULL) {
        if (plan_from(pb->plan, &out->plan) != 0) {
            return -1;
        }
        out->cmd.plan = &out->plan;
    }
    return 0;
}

int map_pb_result_from(const Ringmq__MapResult *pb, struct map_sm_result *out)
{
    memset(out, 0, sizeof(*out));
    if (pb == NULL || pb->code > MAP_SM_NOT_FOUND) {
        return -1;
    }
    out->code = (enum map_sm_code)pb->code;
    out->changed = pb->changed;
    out->epoch = pb->epoch;
    snprintf(out->why, sizeof(out->why), "%s", pb->why ? pb->why : "");
    return 0;
}

int map_pb_delta_from(const Ringmq__MapDelta *pb, struct map_delta *out)
{
    size_t i;

    map_delta_clear(out);
    if (pb == NULL || pb->n_removed > MAP_SM_TOMBSTONES ||
        parts_from(pb->shards, pb->n_shards, pb->meta, pb->n_meta,
                   pb->routers, pb->n_routers, &out->part) != 0) {
        goto err;
    }
    out->from = pb->from;
    out->epoch = pb->epoch;
    out->full = pb->full;
    out->has_meta = pb->has_meta;
    out->has_routers = pb->has_routers;
    out->has_plan = pb->has_plan;
    if (pb->has_plan && plan_from(pb->plan, &out->part.plan) != 0) {
        goto err;
    }
    out->has_queue_ring = pb->has_queue_ring;
    if (pb->has_queue_ring &&
        entries_from(pb->queue_ring, pb->n_queue_ring, &out->part.queue_ring,
                     &out->part.n_queue_ring) != 0) {
        goto err;
    }
    out->part.epoch = pb->epoch;
    if (pb->n_removed > 0) {
        out->removed = xcalloc(pb->n_removed, sizeof(*out->removed));
    }
    for (i = 0; i < pb->n_removed; i++) {
        if (copy_str(out->removed[i], CLUSTER_NAME_MAX, pb->removed[i]) !=
            0) {
            goto err;
        }
        out->n_removed++;
    }
    return 0;
err:
    map_delta_clear(out);
    return -1;
}
