/*
 * map_sm: see map_sm.h.
 *
 * A command edits a copy of the map, which replaces the map only if it
 * validates: a refused command leaves nothing half done. Per-shard epochs
 * (added, changed) sit in an array parallel to map.shards.
 */
#include "sm/map_sm.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/fnv.h"
#include "common/le.h"

struct shard_epochs {
    uint64_t added_at;
    uint64_t changed_at;
};

struct tombstone {
    char name[CLUSTER_NAME_MAX];
    uint64_t epoch;
};

struct map_sm {
    struct cluster_map map;
    struct shard_epochs *ep; /* map.n_shards of them */
    uint64_t meta_changed_at;
    uint64_t routers_changed_at;
    uint64_t plan_changed_at;
    uint64_t queue_ring_changed_at;
    /* ring buffer would do; a shifted array keeps the snapshot simple */
    struct tombstone tomb[MAP_SM_TOMBSTONES];
    unsigned n_tomb;
    /* Followers at an epoch below this may miss a forgotten removal. */
    uint64_t forgotten_at;
};

struct map_sm *map_sm_new(void)
{
    struct map_sm *sm = xcalloc(1, sizeof(*sm));

    cluster_map_init(&sm->map);
    return sm;
}

void map_sm_free(struct map_sm *sm)
{
    if (sm != NULL) {
        cluster_map_clear(&sm->map);
        free(sm->ep);
        free(sm);
    }
}

uint64_t map_sm_epoch(const struct map_sm *sm)
{
    return sm->map.epoch;
}

const struct cluster_map *map_sm_map(const struct map_sm *sm)
{
    return &sm->map;
}

/* ---- commands ----------------------------------------------------------- */

static void refuse(struct map_sm_result *res, enum map_sm_code code,
                   const char *why)
{
    res->code = code;
    snprintf(res->why, sizeof(res->why), "%s", why);
}

static bool member_equal(const struct cluster_member *a,
                         const struct cluster_member *b)
{
    return a->id == b->id && strcmp(a->raft, b->raft) == 0 &&
           strcmp(a->rpc, b->rpc) == 0 && !a->join == !b->join;
}

/* The member list of @group in @map, or NULL. */
static struct cluster_member *members_of(struct cluster_map *map,
                                         const char *group, unsigned **n)
{
    int i;

    if (group == NULL) {
        return NULL;
    }
    if (strcmp(group, MAP_SM_META) == 0) {
        *n = &map->n_meta;
        return map->meta;
    }
    i = cluster_map_find(map, group);
    if (i < 0) {
        return NULL;
    }
    *n = &map->shards[i].n_members;
    return map->shards[i].members;
}

static void tombstone_add(struct map_sm *sm, const char *name, uint64_t epoch)
{
    if (sm->n_tomb == MAP_SM_TOMBSTONES) {
        sm->forgotten_at = sm->tomb[0].epoch;
        memmove(&sm->tomb[0], &sm->tomb[1],
                (MAP_SM_TOMBSTONES - 1) * sizeof(sm->tomb[0]));
        sm->n_tomb--;
    }
    snprintf(sm->tomb[sm->n_tomb].name, CLUSTER_NAME_MAX, "%s", name);
    sm->tomb[sm->n_tomb].epoch = epoch;
    sm->n_tomb++;
}

/* Edit @next (a copy of the map) as @cmd says. Returns the index of the
 * shard it touched (appended or changed), -1 for meta members, -2 when it
 * refused (@res says why), -3 when nothing changes. */
static int edit(struct cluster_map *next,
                const struct map_sm_cmd *cmd, struct map_sm_result *res)
{
    struct cluster_member *m;
    struct cluster_shard *s;
    unsigned *n = NULL;
    unsigned i;
    int idx;

    switch (cmd->type) {
    case MAP_SM_MEMBER_ADD:
        m = members_of(next, cmd->group, &n);
        if (m == NULL) {
            refuse(res, MAP_SM_NOT_FOUND, "no such group");
            return -2;
        }
        for (i = 0; i < *n; i++) {
            if (m[i].id == cmd->member.id) {
                if (member_equal(&m[i], &cmd->member)) {
                    return -3;
                }
                refuse(res, MAP_SM_INVALID,
                       "the group has a member with this id and other "
                       "addresses");
                return -2;
            }
        }
        if (*n == CLUSTER_MAX_MEMBERS) {
            refuse(res, MAP_SM_INVALID, "the group has the most members");
            return -2;
        }
        m[(*n)++] = cmd->member;
        break;
    case MAP_SM_MEMBER_REMOVE:
        m = members_of(next, cmd->group, &n);
        if (m == NULL) {
            refuse(res, MAP_SM_NOT_FOUND, "no such group");
            return -2;
        }
        for (i = 0; i < *n && m[i].id != cmd->member.id; i++) {
        }
        if (i == *n) {
            return -3;
        }
        if (*n == 1) {
            refuse(res, MAP_SM_INVALID, "the last member cannot be removed");
            return -2;
        }
        memmove(&m[i], &m[i + 1], (*n - i - 1) * sizeof(*m));
        (*n)--;
        /* the group now starts from its remaining first member */
        m[0].join = 0;
        break;
    case MAP_SM_SHARD_ADD:
        if (cmd->shard == NULL) {
            refuse(res, MAP_SM_INVALID, "no shard");
            return -2;
        }
        idx = cluster_map_find(next, cmd->shard->name);
        if (idx >= 0) {
            const struct cluster_shard *o = &next->shards[idx];
            bool same = o->weight == cmd->shard->weight &&
                        o->n_members == cmd->shard->n_members;
            for (i = 0; same && i < o->n_members; i++) {
                same = member_equal(&o->members[i], &cmd->shard->members[i]);
            }
            if (same) {
                return -3;
            }
            refuse(res, MAP_SM_INVALID, "a shard of this name exists");
            return -2;
        }
        s = cluster_map_append(next);
        if (s == NULL) {
            refuse(res, MAP_SM_INVALID, "the map has the most shards");
            return -2;
        }
        *s = *cmd->shard;
        break;
    case MAP_SM_SHARD_WEIGHT:
    case MAP_SM_SHARD_STATE:
        idx = cmd->group != NULL ? cluster_map_find(next, cmd->group) : -1;
        if (idx < 0) {
            refuse(res, MAP_SM_NOT_FOUND, "no such shard");
            return -2;
        }
        s = &next->shards[idx];
        if (cmd->type == MAP_SM_SHARD_WEIGHT) {
            if (s->weight == cmd->weight) {
                return -3;
            }
            s->weight = cmd->weight;
        } else {
            if (s->state == cmd->state) {
                return -3;
            }
            s->state = cmd->state;
        }
        return idx;
    default:
        refuse(res, MAP_SM_INVALID, "unknown map command");
        return -2;
    }
    if (cmd->type == MAP_SM_SHARD_ADD) {
        return (int)next->n_shards - 1;
    }
    return strcmp(cmd->group, MAP_SM_META) == 0
               ? -1
               : cluster_map_find(next, cmd->group);
}

static void apply_init(struct map_sm *sm, const struct map_sm_cmd *cmd,
                       struct map_sm_result *res)
{
    unsigned i;

    if (sm->map.epoch != 0) {
        refuse(res, MAP_SM_CONFLICT, "the cluster already has a map");
        return;
    }
    if (cmd->map == NULL || cmd->map->epoch == 0) {
        refuse(res, MAP_SM_INVALID, "the map needs an epoch > 0");
        return;
    }
    if (cluster_map_validate(cmd->map, res->why, sizeof(res->why)) != 0) {
        res->code = MAP_SM_INVALID;
        return;
    }
    cluster_map_copy(&sm->map, cmd->map);
    if (sm->map.n_queue_ring == 0) {
        cluster_map_set_queue_ring(&sm->map); /* queues stay where they are */
    }
    free(sm->ep);
    sm->ep = xcalloc(sm->map.n_shards ? sm->map.n_shards : 1,
                     sizeof(*sm->ep));
    for (i = 0; i < sm->map.n_shards; i++) {
        sm->ep[i].added_at = sm->map.epoch;
        sm->ep[i].changed_at = sm->map.epoch;
    }
    sm->meta_changed_at = sm->map.epoch;
    sm->routers_changed_at = sm->map.epoch;
    sm->plan_changed_at = sm->map.epoch;
    sm->queue_ring_changed_at = sm->map.epoch;
    res->changed = true;
}

static bool plan_equal(const struct cluster_plan *a,
                       const struct cluster_plan *b)
{
    return a->n_target == b->n_target &&
           memcmp(a->target, b->target, a->n_target * sizeof(*a->target)) ==
               0;
}

/* Replace the map by @next (validated by the caller) at a new epoch: the
 * shards that differ are changed at it, those gone get tombstones, and the
 * plan counts as changed. */
static void adopt(struct map_sm *sm, struct cluster_map *next, uint64_t epoch)
{
    struct shard_epochs *old_ep = sm->ep;
    unsigned i;

    sm->ep = xcalloc(next->n_shards ? next->n_shards : 1, sizeof(*sm->ep));
    for (i = 0; i < next->n_shards; i++) {
        int old = cluster_map_find(&sm->map, next->shards[i].name);
        if (old >= 0) {
            sm->ep[i] = old_ep[old];
        } else {
            sm->ep[i].added_at = epoch;
        }
        if (old < 0 || memcmp(&sm->map.shards[old], &next->shards[i],
                              sizeof(next->shards[i])) != 0) {
            sm->ep[i].changed_at = epoch;
        }
    }
    for (i = 0; i < sm->map.n_shards; i++) {
        if (cluster_map_find(next, sm->map.shards[i].name) < 0) {
            tombstone_add(sm, sm->map.shards[i].name, epoch);
        }
    }
    free(old_ep);
    sm->plan_changed_at = epoch;
    next->epoch = epoch;
    cluster_map_clear(&sm->map);
    sm->map = *next;
}

static void apply_plan(struct map_sm *sm, const struct map_sm_cmd *cmd,
                       struct map_sm_result *res)
{
    struct cluster_plan *cur = &sm->map.plan;
    struct cluster_map next;
    unsigned i;

    if (cmd->type != MAP_SM_PLAN_START &&
        (cur->id == 0 || cmd->plan_id != cur->id)) {
        /* a plan that ended (or another one): done, or not ours */
        if (cmd->type != MAP_SM_PLAN_STATE && cur->id == 0) {
            return;
        }
        refuse(res, MAP_SM_CONFLICT, "no such plan (another one runs, or "
                                     "it ended)");
        return;
    }
    cluster_map_init(&next);
    cluster_map_copy(&next, &sm->map);
    switch (cmd->type) {
    case MAP_SM_PLAN_START:
        if (cmd->plan == NULL) {
            refuse(res, MAP_SM_INVALID, "no plan");
            goto out;
        }
        if (cur->id != 0) {
            if (plan_equal(cur, cmd->plan)) {
                goto out; /* started already: done */
            }
            refuse(res, MAP_SM_CONFLICT, "another plan runs: finish or "
                                         "abort it first");
            goto out;
        }
        cluster_plan_copy(&next.plan, cmd->plan);
        next.plan.id = sm->map.epoch + 1;
        next.plan.state = CLUSTER_PLAN_RUNNING;
        break;
    case MAP_SM_PLAN_STATE:
        if (cmd->plan_state != CLUSTER_PLAN_RUNNING &&
            cmd->plan_state != CLUSTER_PLAN_PAUSED) {
            refuse(res, MAP_SM_INVALID, "a plan runs or is paused");
            goto out;
        }
        if (cur->state == cmd->plan_state) {
            goto out;
        }
        next.plan.state = cmd->plan_state;
        break;
    case MAP_SM_PLAN_COMMIT:
        for (i = 0; i < next.n_shards;) {
            struct cluster_shard *s = &next.shards[i];
            unsigned t;

            for (t = 0; t < cur->n_target &&
                        strcmp(cur->target[t].name, s->name) != 0;
                 t++) {
            }
            if (t == cur->n_target) {
                cluster_map_remove(&next, i);
                continue;
            }
            s->weight = cur->target[t].weight;
            s->state = CLUSTER_SHARD_SERVING;
            i++;
        }
        cluster_plan_clear(&next.plan);
        break;
    default: /* MAP_SM_PLAN_ABORT */
        cluster_plan_clear(&next.plan);
        break;
    }
    if (cluster_map_validate(&next, res->why, sizeof(res->why)) != 0) {
        res->code = MAP_SM_INVALID;
        goto out;
    }
    adopt(sm, &next, sm->map.epoch + 1);
    res->changed = true;
    res->epoch = sm->map.epoch;
    return;
out:
    cluster_map_clear(&next);
}

void map_sm_apply(struct map_sm *sm, const struct map_sm_cmd *cmd,
                  struct map_sm_result *res)
{
    struct cluster_map next;
    uint64_t epoch;
    int touched;
    unsigned i;

    memset(res, 0, sizeof(*res));
    if (cmd->type == MAP_SM_INIT) {
        apply_init(sm, cmd, res);
        res->epoch = sm->map.epoch;
        return;
    }
    res->epoch = sm->map.epoch;
    if (sm->map.epoch == 0) {
        refuse(res, MAP_SM_NOT_FOUND, "the cluster has no map yet");
        return;
    }
    if (cmd->expected_epoch != 0 && cmd->expected_epoch != sm->map.epoch) {
        refuse(res, MAP_SM_CONFLICT, "the map changed since (epoch differs)");
        return;
    }
    if (cmd->type >= MAP_SM_PLAN_START && cmd->type <= MAP_SM_PLAN_ABORT) {
        apply_plan(sm, cmd, res);
        return;
    }
    if (cmd->type == MAP_SM_SHARD_REMOVE) {
        int idx = cmd->group != NULL ? cluster_map_find(&sm->map, cmd->group)
                                     : -1;
        if (idx < 0) {
            return; /* gone already: done */
        }
        if (sm->map.n_shards == 1) {
            refuse(res, MAP_SM_INVALID, "the last shard cannot be removed");
            return;
        }
        cluster_map_init(&next);
        cluster_map_copy(&next, &sm->map);
        cluster_map_remove(&next, (unsigned)idx);
        if (cluster_map_validate(&next, res->why, sizeof(res->why)) != 0) {
            res->code = MAP_SM_INVALID;
            cluster_map_clear(&next);
            return;
        }
        cluster_map_clear(&next);
        epoch = sm->map.epoch + 1;
        tombstone_add(sm, sm->map.shards[idx].name, epoch);
        cluster_map_remove(&sm->map, (unsigned)idx);
        memmove(&sm->ep[idx], &sm->ep[idx + 1],
                (sm->map.n_shards - (unsigned)idx) * sizeof(*sm->ep));
        sm->map.epoch = epoch;
        res->changed = true;
        res->epoch = epoch;
        return;
    }
    cluster_map_init(&next);
    cluster_map_copy(&next, &sm->map);
    touched = edit(&next, cmd, res);
    if (touched == -2 || touched == -3) {
        cluster_map_clear(&next);
        return;
    }
    if (cluster_map_validate(&next, res->why, sizeof(res->why)) != 0) {
        res->code = MAP_SM_INVALID;
        cluster_map_clear(&next);
        return;
    }
    epoch = sm->map.epoch + 1;
    next.epoch = epoch;
    if (next.n_shards > sm->map.n_shards) {
        sm->ep = xrealloc(sm->ep, next.n_shards * sizeof(*sm->ep));
        for (i = sm->map.n_shards; i < next.n_shards; i++) {
            sm->ep[i].added_at = epoch;
            sm->ep[i].changed_at = epoch;
        }
    }
    if (touched >= 0) {
        sm->ep[touched].changed_at = epoch;
    } else {
        sm->meta_changed_at = epoch;
    }
    cluster_map_clear(&sm->map);
    sm->map = next;
    res->changed = true;
    res->epoch = epoch;
}

/* ---- deltas ------------------------------------------------------------- */

void map_delta_init(struct map_delta *d)
{
    memset(d, 0, sizeof(*d));
    cluster_map_init(&d->part);
}

void map_delta_clear(struct map_delta *d)
{
    cluster_map_clear(&d->part);
    free(d->removed);
    map_delta_init(d);
}

void map_sm_delta(const struct map_sm *sm, uint64_t known,
                  struct map_delta *d)
{
    const struct cluster_map *map = &sm->map;
    unsigned i;

    map_delta_clear(d);
    if (known >= map->epoch) {
        d->from = known;
        d->epoch = map->epoch; /* not newer: applies as nothing */
        return;
    }
    d->epoch = map->epoch;
    if (known == 0 || known < sm->forgotten_at) {
        d->full = true;
        cluster_map_copy(&d->part, map);
        d->has_meta = true;
        d->has_routers = true;
        d->has_plan = true;
        d->has_queue_ring = true;
        return;
    }
    d->from = known;
    d->part.epoch = map->epoch;
    for (i = 0; i < map->n_shards; i++) {
        if (sm->ep[i].changed_at > known) {
            *cluster_map_append(&d->part) = map->shards[i];
        }
    }
    if (sm->meta_changed_at > known) {
        d->has_meta = true;
        memcpy(d->part.meta, map->meta, sizeof(map->meta));
        d->part.n_meta = map->n_meta;
    }
    if (sm->plan_changed_at > known) {
        d->has_plan = true;
        cluster_plan_copy(&d->part.plan, &map->plan);
    }
    if (sm->queue_ring_changed_at > known) {
        d->has_queue_ring = true;
        d->part.queue_ring = xmemdup(map->queue_ring,
                                     (map->n_queue_ring ? map->n_queue_ring
                                                        : 1) *
                                         sizeof(*map->queue_ring));
        d->part.n_queue_ring = map->n_queue_ring;
    }
    if (sm->routers_changed_at > known) {
        d->has_routers = true;
        memcpy(d->part.routers, map->routers, sizeof(map->routers));
        d->part.n_routers = map->n_routers;
    }
    for (i = 0; i < sm->n_tomb; i++) {
        if (sm->tomb[i].epoch > known) {
            d->removed = xrealloc(d->removed,
                                  (d->n_removed + 1) * sizeof(*d->removed));
            memcpy(d->removed[d->n_removed++], sm->tomb[i].name,
                   CLUSTER_NAME_MAX);
        }
    }
}

int map_delta_apply(struct cluster_map *view, const struct map_delta *d)
{
    unsigned i;
    int idx;

    if (d->epoch <= view->epoch) {
        return 0;
    }
    if (d->full) {
        cluster_map_copy(view, &d->part);
        view->epoch = d->epoch;
        return 0;
    }
    if (d->from != view->epoch) {
        return -1;
    }
    /* removals first: a shard removed and added again goes to the end, as
     * in the map it came from */
    for (i = 0; i < d->n_removed; i++) {
        idx = cluster_map_find(view, d->removed[i]);
        if (idx >= 0) {
            cluster_map_remove(view, (unsigned)idx);
        }
    }
    for (i = 0; i < d->part.n_shards; i++) {
        idx = cluster_map_find(view, d->part.shards[i].name);
        if (idx >= 0) {
            view->shards[idx] = d->part.shards[i];
        } else {
            struct cluster_shard *s = cluster_map_append(view);
            if (s == NULL) {
                return -1;
            }
            *s = d->part.shards[i];
        }
    }
    if (d->has_meta) {
        memcpy(view->meta, d->part.meta, sizeof(view->meta));
        view->n_meta = d->part.n_meta;
    }
    if (d->has_routers) {
        memcpy(view->routers, d->part.routers, sizeof(view->routers));
        view->n_routers = d->part.n_routers;
    }
    if (d->has_plan) {
        cluster_plan_copy(&view->plan, &d->part.plan);
    }
    if (d->has_queue_ring) {
        free(view->queue_ring);
        view->queue_ring =
            xmemdup(d->part.queue_ring, (d->part.n_queue_ring
                                             ? d->part.n_queue_ring
                                             : 1) *
                                            sizeof(*view->queue_ring));
        view->n_queue_ring = d->part.n_queue_ring;
    }
    view->epoch = d->epoch;
    return 0;
}

/* ---- snapshots ---------------------------------------------------------- */

#define SNAP_MAGIC 0x5350414du /* "MAPS" */
#define SNAP_VERSION 1u
static unsigned char *put_str(unsigned char *p, const char *s)
{
    size_t len = strlen(s);

    p = le_put_u32(p, (uint32_t)len);
    memcpy(p, s, len);
    return p + len;
}

static size_t members_size(const struct cluster_member *m, unsigned n)
{
    size_t len = 4;
    unsigned i;

    for (i = 0; i < n; i++) {
        len += 8 + 1 + 4 + strlen(m[i].raft) + 4 + strlen(m[i].rpc);
    }
    return len;
}

static size_t snapshot_size(const struct map_sm *sm)
{
    const struct cluster_map *map = &sm->map;
    size_t len = 4 + 4 + 8 * 5 + 4;
    unsigned i;

    for (i = 0; i < map->n_shards; i++) {
        const struct cluster_shard *s = &map->shards[i];
        len += 4 + strlen(s->name) + 4 + 1 + 16 +
               members_size(s->members, s->n_members);
    }
    len += members_size(map->meta, map->n_meta) + 4;
    for (i = 0; i < map->n_routers; i++) {
        const struct cluster_router *r = &map->routers[i];
        len += 16 + strlen(r->name) + strlen(r->memcached) +
               strlen(r->amqp) + strlen(r->http);
    }
    len += 4;
    for (i = 0; i < sm->n_tomb; i++) {
        len += 4 + strlen(sm->tomb[i].name) + 8;
    }
    len += 8 + 4;
    for (i = 0; i < map->n_queue_ring; i++) {
        len += 4 + strlen(map->queue_ring[i].name) + 4;
    }
    len += 8 + 1 + 4;
    for (i = 0; i < map->plan.n_target; i++) {
        len += 4 + strlen(map->plan.target[i].name) + 4;
    }
    return len;
}

static unsigned char *put_members(unsigned char *p,
                                  const struct cluster_member *m, unsigned n)
{
    unsigned i;

    p = le_put_u32(p, n);
    for (i = 0; i < n; i++) {
        p = le_put_u64(p, m[i].id);
        *p++ = m[i].join ? 1 : 0;
        p = put_str(p, m[i].raft);
        p = put_str(p, m[i].rpc);
    }
    return p;
}

int map_sm_snapshot(const struct map_sm *sm, void *(*alloc)(size_t),
                    void **out, size_t *out_len)
{
    const struct cluster_map *map = &sm->map;
    size_t cap = snapshot_size(sm);
    unsigned char *buf = alloc(cap);
    unsigned char *p;
    unsigned i;

    if (buf == NULL) {
        return -1;
    }
    p = le_put_u32(buf, SNAP_MAGIC);
    p = le_put_u32(p, SNAP_VERSION);
    p = le_put_u64(p, map->epoch);
    p = le_put_u64(p, sm->meta_changed_at);
    p = le_put_u64(p, sm->routers_changed_at);
    p = le_put_u64(p, sm->forgotten_at);
    p = le_put_u64(p, sm->plan_changed_at);
    p = le_put_u32(p, map->n_shards);
    for (i = 0; i < map->n_shards; i++) {
        const struct cluster_shard *s = &map->shards[i];
        p = put_str(p, s->name);
        p = le_put_u32(p, s->weight);
        *p++ = (unsigned char)s->state;
        p = le_put_u64(p, sm->ep[i].added_at);
        p = le_put_u64(p, sm->ep[i].changed_at);
        p = put_members(p, s->members, s->n_members);
    }
    p = put_members(p, map->meta, map->n_meta);
    p = le_put_u32(p, map->n_routers);
    for (i = 0; i < map->n_routers; i++) {
        p = put_str(p, map->routers[i].name);
        p = put_str(p, map->routers[i].memcached);
        p = put_str(p, map->routers[i].amqp);
        p = put_str(p, map->routers[i].http);
    }
    p = le_put_u32(p, sm->n_tomb);
    for (i = 0; i < sm->n_tomb; i++) {
        p = put_str(p, sm->tomb[i].name);
        p = le_put_u64(p, sm->tomb[i].epoch);
    }
    p = le_put_u64(p, sm->queue_ring_changed_at);
    p = le_put_u32(p, map->n_queue_ring);
    for (i = 0; i < map->n_queue_ring; i++) {
        p = put_str(p, map->queue_ring[i].name);
        p = le_put_u32(p, map->queue_ring[i].weight);
    }
    p = le_put_u64(p, map->plan.id);
    *p++ = (unsigned char)map->plan.state;
    p = le_put_u32(p, map->plan.n_target);
    for (i = 0; i < map->plan.n_target; i++) {
        p = put_str(p, map->plan.target[i].name);
        p = le_put_u32(p, map->plan.target[i].weight);
    }
    assert((size_t)(p - buf) == cap);
    *out = buf;
    *out_len = cap;
    return 0;
}

static bool get_str(struct le_reader *r, char *dst, size_t cap)
{
    const unsigned char *p;
    uint32_t len;

    if (!le_get_u32(r, &len) || len >= cap || !le_get_bytes(r, &p, len)) {
        return false;
    }
    memcpy(dst, p, len);
    dst[len] = '\0';
    return true;
}

static bool get_members(struct le_reader *r, struct cluster_member *m,
                        unsigned *n)
{
    uint32_t count;
    uint32_t i;

    if (!le_get_u32(r, &count) || count > CLUSTER_MAX_MEMBERS) {
        return false;
    }
    for (i = 0; i < count; i++) {
        uint8_t join;
        memset(&m[i], 0, sizeof(m[i]));
        if (!le_get_u64(r, &m[i].id) || !le_get_u8(r, &join) ||
            !get_str(r, m[i].raft, sizeof(m[i].raft)) ||
            !get_str(r, m[i].rpc, sizeof(m[i].rpc))) {
            return false;
        }
        m[i].join = join != 0;
    }
    *n = count;
    return true;
}

int map_sm_restore(struct map_sm *sm, const void *buf, size_t len)
{
    struct le_reader r = {buf, len};
    struct map_sm *next = map_sm_new();
    uint32_t magic, version, n, i;
    char err[192];

    if (!le_get_u32(&r, &magic) || magic != SNAP_MAGIC ||
        !le_get_u32(&r, &version) || version != SNAP_VERSION ||
        !le_get_u64(&r, &next->map.epoch) ||
        !le_get_u64(&r, &next->meta_changed_at) ||
        !le_get_u64(&r, &next->routers_changed_at) ||
        !le_get_u64(&r, &next->forgotten_at) ||
        !le_get_u64(&r, &next->plan_changed_at) || !le_get_u32(&r, &n) ||
        n > CLUSTER_MAX_SHARDS) {
        goto err;
    }
    next->ep = xcalloc(n ? n : 1, sizeof(*next->ep));
    for (i = 0; i < n; i++) {
        struct cluster_shard *s = cluster_map_append(&next->map);
        uint8_t state;
        if (!get_str(&r, s->name, sizeof(s->name)) ||
            !le_get_u32(&r, &s->weight) || !le_get_u8(&r, &state) ||
            state >= CLUSTER_SHARD_STATE__COUNT ||
            !le_get_u64(&r, &next->ep[i].added_at) ||
            !le_get_u64(&r, &next->ep[i].changed_at) ||
            !get_members(&r, s->members, &s->n_members)) {
            goto err;
        }
        s->state = (enum cluster_shard_state)state;
    }
    if (!get_members(&r, next->map.meta, &next->map.n_meta) ||
        !le_get_u32(&r, &n) || n > CLUSTER_MAX_ROUTERS) {
        goto err;
    }
    for (i = 0; i < n; i++) {
        struct cluster_router *rt = &next->map.routers[i];
        if (!get_str(&r, rt->name, sizeof(rt->name)) ||
            !get_str(&r, rt->memcached, sizeof(rt->memcached)) ||
            !get_str(&r, rt->amqp, sizeof(rt->amqp)) ||
            !get_str(&r, rt->http, sizeof(rt->http))) {
            goto err;
        }
    }
    next->map.n_routers = n;
    if (!le_get_u32(&r, &n) || n > MAP_SM_TOMBSTONES) {
        goto err;
    }
    for (i = 0; i < n; i++) {
        if (!get_str(&r, next->tomb[i].name, CLUSTER_NAME_MAX) ||
            !le_get_u64(&r, &next->tomb[i].epoch)) {
            goto err;
        }
    }
    next->n_tomb = n;
    if (!le_get_u64(&r, &next->queue_ring_changed_at) ||
        !le_get_u32(&r, &n) || n > CLUSTER_MAX_SHARDS || n > r.left / 9) {
        goto err;
    }
    next->map.queue_ring =
        xcalloc(n ? n : 1, sizeof(*next->map.queue_ring));
    next->map.n_queue_ring = n;
    for (i = 0; i < n; i++) {
        if (!get_str(&r, next->map.queue_ring[i].name, CLUSTER_NAME_MAX) ||
            !le_get_u32(&r, &next->map.queue_ring[i].weight)) {
            goto err;
        }
    }
    {
        uint8_t state;
        struct cluster_plan *pl = &next->map.plan;

        if (!le_get_u64(&r, &pl->id) || !le_get_u8(&r, &state) ||
            state >= CLUSTER_PLAN_STATE__COUNT || !le_get_u32(&r, &n) ||
            n > CLUSTER_MAX_SHARDS || n > r.left / 9) {
            goto err;
        }
        pl->state = (enum cluster_plan_state)state;
        pl->target = n ? xcalloc(n, sizeof(*pl->target)) : NULL;
        pl->n_target = n;
        for (i = 0; i < n; i++) {
            if (!get_str(&r, pl->target[i].name, CLUSTER_NAME_MAX) ||
                !le_get_u32(&r, &pl->target[i].weight)) {
                goto err;
            }
        }
    }
    if (r.left != 0 ||
        (next->map.epoch != 0 &&
         cluster_map_validate(&next->map, err, sizeof(err)) != 0) ||
        (next->map.epoch == 0 && next->map.n_shards != 0)) {
        goto err;
    }
    cluster_map_clear(&sm->map);
    free(sm->ep);
    *sm = *next;
    free(next);
    return 0;
err:
    map_sm_free(next);
    return -1;
}

uint64_t map_sm_digest(const struct map_sm *sm)
{
    void *buf;
    size_t len;
    uint64_t h;

    if (map_sm_snapshot(sm, xmalloc, &buf, &len) != 0) {
        return 0;
    }
    h = fnv1a64(buf, len); /* over the snapshot */
    free(buf);
    return h;
}
