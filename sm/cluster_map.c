/* cluster_map: see cluster_map.h. */
#include "sm/cluster_map.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/parse_num.h"
#include "common/ring.h"

#define FAIL(...)                                   \
    do {                                            \
        snprintf(err, errlen, __VA_ARGS__);         \
        return -1;                                  \
    } while (0)

const char *cluster_shard_state_name(enum cluster_shard_state s)
{
    static const char *names[CLUSTER_SHARD_STATE__COUNT] = {
        "serving", "joining", "draining"};

    return (unsigned)s < CLUSTER_SHARD_STATE__COUNT ? names[s] : "?";
}

const char *cluster_plan_state_name(enum cluster_plan_state s)
{
    static const char *names[CLUSTER_PLAN_STATE__COUNT] = {"none", "running",
                                                           "paused"};

    return (unsigned)s < CLUSTER_PLAN_STATE__COUNT ? names[s] : "?";
}

void cluster_map_init(struct cluster_map *map)
{
    memset(map, 0, sizeof(*map));
}

void cluster_plan_clear(struct cluster_plan *p)
{
    free(p->target);
    memset(p, 0, sizeof(*p));
}

void cluster_plan_copy(struct cluster_plan *dst, const struct cluster_plan *src)
{
    struct cluster_ring_entry *t = NULL;

    if (src->n_target > 0) {
        t = xmemdup(src->target, src->n_target * sizeof(*t));
    }
    free(dst->target);
    *dst = *src;
    dst->target = t;
}

void cluster_map_clear(struct cluster_map *map)
{
    free(map->shards);
    free(map->queue_ring);
    cluster_plan_clear(&map->plan);
    cluster_map_init(map);
}

void cluster_map_set_queue_ring(struct cluster_map *map)
{
    unsigned n = cluster_map_ring_size(map), i;

    free(map->queue_ring);
    map->queue_ring = xcalloc(n ? n : 1, sizeof(*map->queue_ring));
    for (i = 0; i < n; i++) {
        snprintf(map->queue_ring[i].name, CLUSTER_NAME_MAX, "%s",
                 map->shards[i].name);
        map->queue_ring[i].weight = map->shards[i].weight;
    }
    map->n_queue_ring = n;
}

void cluster_map_copy(struct cluster_map *dst, const struct cluster_map *src)
{
    struct cluster_shard *shards = NULL;
    struct cluster_plan plan = {0};

    if (src->n_shards > 0) {
        shards = xmalloc(src->n_shards * sizeof(*shards));
        memcpy(shards, src->shards, src->n_shards * sizeof(*shards));
    }
    cluster_plan_copy(&plan, &src->plan);
    free(dst->shards);
    free(dst->queue_ring);
    cluster_plan_clear(&dst->plan);
    *dst = *src;
    dst->shards = shards;
    dst->cap_shards = src->n_shards;
    dst->plan = plan;
    dst->queue_ring =
        src->n_queue_ring
            ? xmemdup(src->queue_ring,
                      src->n_queue_ring * sizeof(*src->queue_ring))
            : NULL;
}

struct cluster_shard *cluster_map_append(struct cluster_map *map)
{
    struct cluster_shard *s;

    if (map->n_shards >= CLUSTER_MAX_SHARDS) {
        return NULL;
    }
    if (map->n_shards == map->cap_shards) {
        unsigned cap = map->cap_shards ? map->cap_shards * 2 : 4;
        map->shards = xrealloc(map->shards, cap * sizeof(*map->shards));
        map->cap_shards = cap;
    }
    s = &map->shards[map->n_shards++];
    memset(s, 0, sizeof(*s));
    s->weight = 1;
    s->state = CLUSTER_SHARD_SERVING;
    return s;
}

void cluster_map_remove(struct cluster_map *map, unsigned i)
{
    if (i >= map->n_shards) {
        return;
    }
    memmove(&map->shards[i], &map->shards[i + 1],
            (map->n_shards - i - 1) * sizeof(*map->shards));
    map->n_shards--;
}

int cluster_shard_name_ok(const char *name)
{
    size_t len = name != NULL ? strlen(name) : 0;

    /* a group name and a directory name: "<name>.mq" must stay distinct
     * from any shard name, "meta" is the meta group */
    return len > 0 && len < CLUSTER_NAME_MAX && strchr(name, '/') == NULL &&
           name[0] != '.' && strcmp(name, "meta") != 0 &&
           (len < 3 || strcmp(name + len - 3, ".mq") != 0);
}

int cluster_addr_ok(const char *v, int raft)
{
    const char *colon = v ? strrchr(v, ':') : NULL;
    uint64_t port;

    if (colon == NULL || colon == v || (size_t)(colon - v) > CLUSTER_HOST_MAX ||
        strlen(v) >= CLUSTER_ADDR_MAX ||
        (raft && memchr(v, ':', (size_t)(colon - v)) != NULL) ||
        parse_num_u64(colon + 1, &port) != 0 || port == 0 || port > 65535) {
        return 0;
    }
    return 1;
}

static int members_ok(const char *what, const struct cluster_member *m,
                      unsigned n, char *err, size_t errlen)
{
    unsigned i, j;

    if (n == 0) {
        FAIL("%s: no members", what);
    }
    if (n > CLUSTER_MAX_MEMBERS) {
        FAIL("%s: more than %d members", what, CLUSTER_MAX_MEMBERS);
    }
    for (i = 0; i < n; i++) {
        if (m[i].id == 0 || !cluster_addr_ok(m[i].raft, 1) ||
            !cluster_addr_ok(m[i].rpc, 0)) {
            FAIL("%s: member %" PRIu64 " needs an id > 0, a raft and an rpc "
                 "address",
                 what, m[i].id);
        }
        for (j = 0; j < i; j++) {
            if (m[i].id == m[j].id) {
                FAIL("%s: member %" PRIu64 " twice", what, m[i].id);
            }
        }
    }
    if (m[0].join) {
        FAIL("%s: the first member cannot join: a group starts from "
             "members without join",
             what);
    }
    return 0;
}

/* Members of every group in map order (the shards', then meta's), for the
 * checks across groups below. */
struct member_ref {
    const struct cluster_member *m;
    unsigned idx; /* position in map order */
};

static int by_raft(const void *a, const void *b)
{
    const struct member_ref *x = a, *y = b;
    int c = strcmp(x->m->raft, y->m->raft);

    return c != 0 ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

static int by_id(const void *a, const void *b)
{
    const struct member_ref *x = a, *y = b;

    if (x->m->id != y->m->id) {
        return x->m->id < y->m->id ? -1 : 1;
    }
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* A conflict between member @i and an earlier member @j; the one reported
 * is the first a pairwise scan (i ascending, then j ascending, the rpc
 * check before the raft check) would meet, so the error does not depend
 * on how it was found. */
struct conflict {
    unsigned i, j;
    int rpc; /* 1: two rpc addresses for one id; 0: a raft address twice */
};

static void conflict_note(struct conflict *c, unsigned i, unsigned j, int rpc)
{
    if (c->i == UINT32_MAX || i < c->i || (i == c->i && j < c->j) ||
        (i == c->i && j == c->j && rpc)) {
        c->i = i;
        c->j = j;
        c->rpc = rpc;
    }
}

/* One rpc address per node, one user per raft address, over every group
 * (the shards' and meta's). Sorted, not pairwise: a map of 4096 shards has
 * over 12,000 members, and every change of the map is validated
 * (docs/scaling.md). */
static int addresses_ok(const struct cluster_map *map, char *err,
                        size_t errlen)
{
    unsigned total = map->n_meta;
    struct member_ref *all;
    const struct cluster_member **ms;
    struct conflict c = {UINT32_MAX, UINT32_MAX, 0};
    unsigned s, i, k = 0;

    for (s = 0; s < map->n_shards; s++) {
        total += map->shards[s].n_members;
    }
    all = xmalloc((total ? total : 1) * sizeof(*all));
    for (s = 0; s < map->n_shards; s++) {
        for (i = 0; i < map->shards[s].n_members; i++, k++) {
            all[k] = (struct member_ref){&map->shards[s].members[i], k};
        }
    }
    for (i = 0; i < map->n_meta; i++, k++) {
        all[k] = (struct member_ref){&map->meta[i], k};
    }

    /* Equal raft addresses sit together, in map order: each one after the
     * first conflicts first with the first. */
    qsort(all, total, sizeof(*all), by_raft);
    for (i = 0; i < total;) {
        unsigned first = i;

        for (i++; i < total && strcmp(all[i].m->raft, all[first].m->raft) == 0;
             i++) {
            conflict_note(&c, all[i].idx, all[first].idx, 0);
        }
    }
    /* Equal ids together, in map order: a member conflicts first with the
     * id's first member if their rpc addresses differ, else with the first
     * member whose rpc address differs from that one's. */
    qsort(all, total, sizeof(*all), by_id);
    for (i = 0; i < total;) {
        unsigned first = i, other = UINT32_MAX;

        for (i++; i < total && all[i].m->id == all[first].m->id; i++) {
            if (strcmp(all[i].m->rpc, all[first].m->rpc) != 0) {
                conflict_note(&c, all[i].idx, all[first].idx, 1);
                if (other == UINT32_MAX) {
                    other = i;
                }
            } else if (other != UINT32_MAX) {
                conflict_note(&c, all[i].idx, all[other].idx, 1);
            }
        }
    }
    free(all);
    if (c.i == UINT32_MAX) {
        return 0;
    }
    /* back to the members themselves, by map order */
    ms = xmalloc(total * sizeof(*ms));
    for (s = 0, k = 0; s < map->n_shards; s++) {
        for (i = 0; i < map->shards[s].n_members; i++) {
            ms[k++] = &map->shards[s].members[i];
        }
    }
    for (i = 0; i < map->n_meta; i++) {
        ms[k++] = &map->meta[i];
    }
    if (c.rpc) {
        snprintf(err, errlen, "node %" PRIu64 " has two rpc addresses (%s, %s)",
                 ms[c.i]->id, ms[c.j]->rpc, ms[c.i]->rpc);
    } else {
        snprintf(err, errlen, "raft address %s used twice", ms[c.i]->raft);
    }
    free(ms);
    return -1;
}

/* A raft address a group listens at: a member's own, or the queue group's
 * that a shard member derives from it (port + 1). */
struct listen_ref {
    char addr[CLUSTER_ADDR_MAX];
    const char *group; /* a shard's name, or "meta" */
    uint64_t id;
    bool derived;
};

static int by_listen_addr(const void *a, const void *b)
{
    const struct listen_ref *x = a, *y = b;
    int c = strcmp(x->addr, y->addr);

    /* equal addresses: the member's own first, so the report is stable */
    return c != 0 ? c : (int)x->derived - (int)y->derived;
}

/* The queue group of each shard member listens at its raft port + 1
 * (cluster_raft_port_offset): that address must be no group's raft
 * address either, or two groups would share a port. Run after
 * addresses_ok, so two equal addresses are a member's and a derived one. */
static int derived_addresses_ok(const struct cluster_map *map, char *err,
                                size_t errlen)
{
    struct listen_ref *all;
    unsigned total = map->n_meta, s, i, k = 0;
    int rv = 0;

    for (s = 0; s < map->n_shards; s++) {
        total += 2 * map->shards[s].n_members;
    }
    all = xmalloc((total ? total : 1) * sizeof(*all));
    for (s = 0; s < map->n_shards && rv == 0; s++) {
        const struct cluster_shard *sh = &map->shards[s];

        for (i = 0; i < sh->n_members; i++) {
            const struct cluster_member *m = &sh->members[i];

            all[k] = (struct listen_ref){"", sh->name, m->id, false};
            snprintf(all[k++].addr, CLUSTER_ADDR_MAX, "%s", m->raft);
            all[k] = (struct listen_ref){"", sh->name, m->id, true};
            if (cluster_raft_port_offset(m->raft, 1, all[k++].addr,
                                         CLUSTER_ADDR_MAX) != 0) {
                snprintf(err, errlen,
                         "shard %s member %" PRIu64 ": raft address %s "
                         "leaves no port for its queue group (port + 1)",
                         sh->name, m->id, m->raft);
                rv = -1;
                break;
            }
        }
    }
    for (i = 0; i < map->n_meta && rv == 0; i++) {
        all[k] = (struct listen_ref){"", "meta", map->meta[i].id, false};
        snprintf(all[k++].addr, CLUSTER_ADDR_MAX, "%s", map->meta[i].raft);
    }
    if (rv == 0) {
        qsort(all, k, sizeof(*all), by_listen_addr);
        for (i = 1; i < k; i++) {
            if (strcmp(all[i].addr, all[i - 1].addr) == 0) {
                snprintf(err, errlen,
                         "raft address %s used twice: by %s member %" PRIu64
                         " and by the queue group (raft port + 1) of "
                         "shard %s member %" PRIu64,
                         all[i].addr, all[i - 1].group, all[i - 1].id,
                         all[i].group, all[i].id);
                rv = -1;
                break;
            }
        }
    }
    free(all);
    return rv;
}

static int by_name(const void *a, const void *b)
{
    const struct cluster_shard *const *x = a, *const *y = b;
    int c = strcmp((*x)->name, (*y)->name);

    /* the array is in map order: pointers compare as positions */
    return c != 0 ? c : (*x > *y) - (*x < *y);
}

/* dup[a] = 1 when shard a has the name of an earlier shard. Sorted, not
 * pairwise, for the same reason as addresses_ok. */
static unsigned char *duplicate_names(const struct cluster_map *map)
{
    const struct cluster_shard **by = xmalloc(map->n_shards * sizeof(*by));
    unsigned char *dup = xcalloc(map->n_shards, 1);
    unsigned i;

    for (i = 0; i < map->n_shards; i++) {
        by[i] = &map->shards[i];
    }
    qsort(by, map->n_shards, sizeof(*by), by_name);
    for (i = 1; i < map->n_shards; i++) {
        if (strcmp(by[i - 1]->name, by[i]->name) == 0) {
            dup[by[i] - map->shards] = 1;
        }
    }
    free(by);
    return dup;
}

/* A plan's target is the map's shards in map order, less draining ones
 * that leave, with every joining shard in it. */
static int plan_ok(const struct cluster_map *map, char *err, size_t errlen)
{
    const struct cluster_plan *p = &map->plan;
    unsigned s, t = 0;

    if (p->id == 0) {
        if (p->n_target != 0 || p->state != CLUSTER_PLAN_NONE) {
            FAIL("a plan without an id");
        }
        return 0;
    }
    if (p->state == CLUSTER_PLAN_NONE ||
        (unsigned)p->state >= CLUSTER_PLAN_STATE__COUNT) {
        FAIL("plan: bad state");
    }
    if (p->n_target == 0) {
        FAIL("plan: no shard in the target");
    }
    for (s = 0; s < map->n_shards; s++) {
        const struct cluster_shard *sh = &map->shards[s];

        if (t < p->n_target && strcmp(p->target[t].name, sh->name) == 0) {
            if (p->target[t].weight == 0 ||
                p->target[t].weight > CLUSTER_WEIGHT_MAX) {
                FAIL("plan: shard %s: weight must be 1..%d", sh->name,
                     CLUSTER_WEIGHT_MAX);
            }
            t++;
        } else if (sh->state != CLUSTER_SHARD_DRAINING) {
            FAIL("plan: shard %s leaves the ring without draining first",
                 sh->name);
        }
    }
    if (t != p->n_target) {
        FAIL("plan: the target names shards the map does not have (or not "
             "in map order)");
    }
    for (s = 0; s < map->n_queue_ring; s++) {
        for (t = 0; t < p->n_target &&
                    strcmp(p->target[t].name, map->queue_ring[s].name) != 0;
             t++) {
        }
        if (t == p->n_target) {
            FAIL("plan: shard %s holds queues and cannot leave the ring "
                 "(move its queues first)",
                 map->queue_ring[s].name);
        }
    }
    return 0;
}

int cluster_map_validate(const struct cluster_map *map, char *err,
                         size_t errlen)
{
    unsigned char *dup;
    unsigned a, b;

    if (map->n_shards == 0) {
        FAIL("no shards");
    }
    if (map->n_shards > CLUSTER_MAX_SHARDS) {
        FAIL("more than %d shards", CLUSTER_MAX_SHARDS);
    }
    dup = duplicate_names(map);
    for (a = 0; a < map->n_shards; a++) {
        const struct cluster_shard *s = &map->shards[a];
        char what[CLUSTER_NAME_MAX + 8];

        if (!cluster_shard_name_ok(s->name)) {
            snprintf(err, errlen, "bad shard name '%s'", s->name);
            break;
        }
        if (s->weight == 0 || s->weight > CLUSTER_WEIGHT_MAX) {
            snprintf(err, errlen, "shard %s: weight must be 1..%d", s->name,
                     CLUSTER_WEIGHT_MAX);
            break;
        }
        if ((unsigned)s->state >= CLUSTER_SHARD_STATE__COUNT) {
            snprintf(err, errlen, "shard %s: unknown state", s->name);
            break;
        }
        if (dup[a]) {
            snprintf(err, errlen, "shard %s defined twice", s->name);
            break;
        }
        snprintf(what, sizeof(what), "shard %s", s->name);
        if (members_ok(what, s->members, s->n_members, err, errlen) != 0) {
            break;
        }
    }
    free(dup);
    if (a < map->n_shards) {
        return -1;
    }
    if (cluster_map_ring_size(map) == 0) {
        FAIL("no shard on the ring (every one is joining)");
    }
    for (a = cluster_map_ring_size(map); a < map->n_shards; a++) {
        if (map->shards[a].state != CLUSTER_SHARD_JOINING) {
            FAIL("shard %s: joining shards come last in the map",
                 map->shards[a].name);
        }
    }
    if (plan_ok(map, err, errlen) != 0) {
        return -1;
    }
    for (a = 0; a < map->n_queue_ring; a++) {
        if (cluster_map_find(map, map->queue_ring[a].name) < 0) {
            FAIL("shard %s holds queues (it is on the queue ring) and "
                 "cannot leave the map",
                 map->queue_ring[a].name);
        }
        if (map->queue_ring[a].weight == 0 ||
            map->queue_ring[a].weight > CLUSTER_WEIGHT_MAX) {
            FAIL("queue ring: bad weight");
        }
    }
    if (members_ok("meta", map->meta, map->n_meta, err, errlen) != 0) {
        return -1;
    }
    if (addresses_ok(map, err, errlen) != 0 ||
        derived_addresses_ok(map, err, errlen) != 0) {
        return -1;
    }
    for (a = 0; a < map->n_routers; a++) {
        if (map->routers[a].name[0] == '\0') {
            FAIL("a router has no name");
        }
        for (b = 0; b < a; b++) {
            if (strcmp(map->routers[a].name, map->routers[b].name) == 0) {
                FAIL("router %s defined twice", map->routers[a].name);
            }
        }
    }
    return 0;
}

int cluster_map_find(const struct cluster_map *map, const char *name)
{
    unsigned i;

    for (i = 0; i < map->n_shards; i++) {
        if (strcmp(map->shards[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

const struct cluster_shard *cluster_map_shard(const struct cluster_map *map,
                                              const char *name)
{
    int i = cluster_map_find(map, name);

    return i >= 0 ? &map->shards[i] : NULL;
}

const struct cluster_member *cluster_shard_member(
    const struct cluster_shard *shard, uint64_t id)
{
    unsigned i;

    for (i = 0; i < shard->n_members; i++) {
        if (shard->members[i].id == id) {
            return &shard->members[i];
        }
    }
    return NULL;
}

const struct cluster_router *cluster_map_router(const struct cluster_map *map,
                                                const char *name)
{
    unsigned i;

    for (i = 0; i < map->n_routers; i++) {
        if (strcmp(map->routers[i].name, name) == 0) {
            return &map->routers[i];
        }
    }
    return NULL;
}

int cluster_raft_port_offset(const char *addr, int delta, char *out,
                             size_t outlen)
{
    const char *colon = addr != NULL ? strrchr(addr, ':') : NULL;
    uint64_t port;

    if (colon == NULL || colon == addr || parse_num_u64(colon + 1, &port) != 0 ||
        port > 65535) {
        return -1;
    }
    if (port != 0) {
        port += (uint64_t)(int64_t)delta;
    }
    if (port > 65535 || snprintf(out, outlen, "%.*s:%d", (int)(colon - addr),
                                 addr, (int)port) >= (int)outlen) {
        return -1;
    }
    return 0;
}

int cluster_map_default_meta(struct cluster_map *map, char *err, size_t errlen)
{
    const struct cluster_shard *first;
    unsigned i;

    if (map->n_shards == 0) {
        FAIL("no shards");
    }
    first = &map->shards[0];
    map->n_meta = 0;
    for (i = 0; i < first->n_members; i++) {
        struct cluster_member *m = &map->meta[map->n_meta];

        *m = first->members[i];
        if (cluster_raft_port_offset(first->members[i].raft, 2, m->raft,
                                     sizeof(m->raft)) != 0) {
            FAIL("shard %s: member %" PRIu64
                 ": no room for the meta group at raft port +2",
                 first->name, m->id);
        }
        map->n_meta++;
    }
    return 0;
}

unsigned cluster_map_ring_size(const struct cluster_map *map)
{
    unsigned n = 0;

    while (n < map->n_shards &&
           map->shards[n].state != CLUSTER_SHARD_JOINING) {
        n++;
    }
    return n;
}

bool cluster_map_same_ring(const struct cluster_map *a,
                           const struct cluster_map *b)
{
    unsigned n = cluster_map_ring_size(a);
    unsigned i;

    if (n != cluster_map_ring_size(b)) {
        return false;
    }
    for (i = 0; i < n; i++) {
        if (a->shards[i].weight != b->shards[i].weight ||
            strcmp(a->shards[i].name, b->shards[i].name) != 0) {
            return false;
        }
    }
    return true;
}

struct ring *cluster_map_ring(const struct cluster_map *map, char *err,
                              size_t errlen)
{
    unsigned n = cluster_map_ring_size(map);
    struct ring_node *nodes = xmalloc((n ? n : 1) * sizeof(*nodes));
    struct ring *r;
    unsigned i;

    for (i = 0; i < n; i++) {
        nodes[i].name = map->shards[i].name;
        nodes[i].weight = map->shards[i].weight;
    }
    r = ring_new(nodes, n, err, errlen);
    free(nodes);
    return r;
}

struct ring *cluster_map_queue_ring(const struct cluster_map *map, char *err,
                                    size_t errlen)
{
    struct ring_node *nodes =
        xmalloc((map->n_queue_ring ? map->n_queue_ring : 1) * sizeof(*nodes));
    struct ring *r;
    unsigned i;

    for (i = 0; i < map->n_queue_ring; i++) {
        nodes[i].name = map->queue_ring[i].name;
        nodes[i].weight = map->queue_ring[i].weight;
    }
    r = ring_new(nodes, map->n_queue_ring, err, errlen);
    free(nodes);
    return r;
}
