/*
 * ctl_plan: see ctl_plan.h. Calls ctl, ctl_map, ctl_live and ctl_move.
 *
 * Map changes are the meta group's commands (sm/map_sm.h): adding a shard
 * twice with the same members, starting the same plan twice, pausing a
 * paused plan all succeed without a change, which is what lets a killed
 * run be run again. The shards' own steps are ctl_move's.
 */
#include "tools/ctl_plan.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/parse_num.h"
#include "sm/shard_ring.h"
#include "tools/ctl_live.h"
#include "tools/ctl_move.h"

/* How often a running plan looks whether it was paused or ended. */
#define STOP_CHECK_MS 1000

struct run {
    struct ctl *ctl;
    const struct cluster_map *seed; /* the --cluster file: where meta is */
    struct cluster_map map;         /* the live map */
    struct ctl_mover *mv;
    uint64_t plan_id;
    uint64_t seen_epoch; /* the newest epoch a change answered */
    uint64_t last_check_ms;
    bool paused; /* the stop hook saw the plan paused */
};

/* A move of a plan: its arcs, owned; shards point into run->map. */
struct plan_move {
    struct ctl_move m;
    struct arc *arcs;
    size_t cap;
};


static void print_target(const struct cluster_plan *p)
{
    unsigned i;

    for (i = 0; i < p->n_target; i++) {
        printf("%s%s:%u", i ? " " : "", p->target[i].name,
               p->target[i].weight);
    }
}

/* The live map, at least as new as the last change made: a map watch
 * may be answered by a replica that has not applied it yet. */
static int fetch_into(struct run *r, struct cluster_map *map)
{
    uint64_t deadline =
        clock_mono_ms() + (uint64_t)r->ctl->o->seconds * 1000;

    for (;;) {
        if (ctl_live_fetch(r->ctl, r->seed, map) != 0) {
            return EXIT_ERROR;
        }
        if (map->epoch >= r->seen_epoch) {
            return 0;
        }
        if (clock_mono_ms() > deadline) {
            fprintf(stderr, "ringmqctl: meta: no replica answers with the "
                            "map of epoch %" PRIu64 " (--seconds)\n",
                    r->seen_epoch);
            return EXIT_ERROR;
        }
        usleep(50 * 1000);
    }
}

static int fetch(struct run *r)
{
    return fetch_into(r, &r->map);
}

static void saw_epoch(struct run *r, uint64_t epoch)
{
    if (epoch > r->seen_epoch) {
        r->seen_epoch = epoch;
    }
}

/* A map command that must be taken (a repeat that changes nothing is). */
static int change(struct run *r, const struct map_sm_cmd *c, const char *what)
{
    struct map_sm_result res;

    if (ctl_live_change(r->ctl, r->seed, c, &res) != 0) {
        return EXIT_ERROR;
    }
    if (res.code != MAP_SM_OK) {
        fprintf(stderr, "ringmqctl: the cluster map refused %s: %s\n", what,
                res.why);
        return EXIT_ERROR;
    }
    saw_epoch(r, res.epoch);
    if (res.changed) {
        printf("map: %s, epoch %" PRIu64 "\n", what, res.epoch);
        fflush(stdout);
    }
    return 0;
}

/* The stop hook of moves: the plan paused or ended (looked up at most
 * once a STOP_CHECK_MS). */
static bool plan_stopped(void *data)
{
    struct run *r = data;
    struct cluster_map now;
    bool stop = false;

    if (clock_mono_ms() - r->last_check_ms < STOP_CHECK_MS) {
        return false;
    }
    r->last_check_ms = clock_mono_ms();
    cluster_map_init(&now);
    /* a replica behind the last change knows nothing newer: go on */
    if (ctl_live_fetch(r->ctl, r->seed, &now) == 0 &&
        now.epoch >= r->seen_epoch) {
        r->paused = now.plan.id == r->plan_id &&
                    now.plan.state == CLUSTER_PLAN_PAUSED;
        stop = now.plan.id != r->plan_id || r->paused;
    }
    cluster_map_clear(&now);
    return stop;
}

static uint64_t move_id(uint64_t plan_id, const char *from, const char *to)
{
    /* FNV-1a over (plan id, from, to): the same moves on every run */
    uint64_t h = 14695981039346656037ULL;
    unsigned char b[8];
    size_t i;

    for (i = 0; i < 8; i++) {
        b[i] = (unsigned char)(plan_id >> (8 * i));
    }
    for (i = 0; i < 8; i++) {
        h = (h ^ b[i]) * 1099511628211ULL;
    }
    for (; *from; from++) {
        h = (h ^ (unsigned char)*from) * 1099511628211ULL;
    }
    h = (h ^ 0xff) * 1099511628211ULL; /* "a","bc" differs from "ab","c" */
    for (; *to; to++) {
        h = (h ^ (unsigned char)*to) * 1099511628211ULL;
    }
    return h != 0 ? h : 1;
}

/* @map's shards as a ring spec (a map with only @target when non-NULL). */
static int ring_of(const struct cluster_map *map,
                   const struct cluster_plan *target, struct shard_ring *out)
{
    struct cluster_map tmp;
    const struct cluster_map *src = map;
    void *spec;
    size_t len;
    unsigned i;
    int rv;

    cluster_map_init(&tmp);
    if (target != NULL) {
        for (i = 0; i < target->n_target; i++) {
            struct cluster_shard *s = cluster_map_append(&tmp);

            snprintf(s->name, sizeof(s->name), "%s", target->target[i].name);
            s->weight = target->target[i].weight;
        }
        tmp.epoch = map->epoch;
        src = &tmp;
    }
    spec = shard_ring_encode_map(src, src->shards[0].name, &len);
    rv = shard_ring_decode(spec, len, out);
    free(spec);
    cluster_map_clear(&tmp);
    if (rv != 0) {
        fprintf(stderr, "ringmqctl: cannot build the ring of %s\n",
                target != NULL ? "the plan's target" : "the map");
        return EXIT_ERROR;
    }
    return 0;
}

static void moves_free(struct plan_move *v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        free(v[i].arcs);
    }
    free(v);
}

/* The moves of @map's plan: the arcs whose owner differs between the
 * map's ring and the target, one move per (source, target) pair in the
 * order the pairs first appear. */
static int plan_moves(const struct cluster_map *map, struct plan_move **out,
                      size_t *n_out)
{
    struct shard_ring cur, want;
    struct arc_move *diff = NULL;
    struct plan_move *v = NULL;
    size_t n_diff, n = 0, i, j;
    int rv = EXIT_ERROR;

    shard_ring_init(&cur);
    shard_ring_init(&want);
    if (ring_of(map, NULL, &cur) != 0 ||
        ring_of(map, &map->plan, &want) != 0) {
        goto out;
    }
    n_diff = shard_ring_diff(&cur, &want, &diff);
    for (i = 0; i < n_diff; i++) {
        const struct arc_move *d = &diff[i];
        struct plan_move *pm;

        for (j = 0; j < n && (strcmp(v[j].m.from->name, d->from) != 0 ||
                              strcmp(v[j].m.to->name, d->to) != 0);
             j++) {
        }
        if (j == n) {
            const struct cluster_shard *from = cluster_map_shard(map, d->from);
            const struct cluster_shard *to = cluster_map_shard(map, d->to);

            if (from == NULL || to == NULL) {
                fprintf(stderr, "ringmqctl: the plan moves arcs between "
                                "%s and %s, which the map lacks\n",
                        d->from, d->to);
                goto out;
            }
            v = xrealloc(v, (n + 1) * sizeof(*v));
            memset(&v[n], 0, sizeof(v[n]));
            v[n].m.from = from;
            v[n].m.to = to;
            v[n].m.id = move_id(map->plan.id, d->from, d->to);
            n++;
        }
        pm = &v[j];
        if (pm->m.n_arcs == CACHE_MOVE_MAX_ARCS) {
            fprintf(stderr, "ringmqctl: move %s->%s: more than %d arcs\n",
                    d->from, d->to, CACHE_MOVE_MAX_ARCS);
            goto out;
        }
        if (pm->m.n_arcs == pm->cap) {
            pm->cap = pm->cap ? 2 * pm->cap : 64;
            pm->arcs = xrealloc(pm->arcs, pm->cap * sizeof(*pm->arcs));
        }
        pm->arcs[pm->m.n_arcs++] = d->arc;
        pm->m.arcs = pm->arcs;
    }
    *out = v;
    *n_out = n;
    v = NULL;
    n = 0;
    rv = 0;
out:
    moves_free(v, n);
    free(diff);
    shard_ring_clear(&cur);
    shard_ring_clear(&want);
    return rv;
}

/* Whether @map's ring is exactly @t (every shard serving, same weights). */
static bool ring_is(const struct cluster_map *map,
                    const struct cluster_ring_entry *t, unsigned n)
{
    unsigned i;

    if (map->n_shards != n || cluster_map_ring_size(map) != n) {
        return false;
    }
    for (i = 0; i < n; i++) {
        if (strcmp(map->shards[i].name, t[i].name) != 0 ||
            map->shards[i].weight != t[i].weight ||
            map->shards[i].state != CLUSTER_SHARD_SERVING) {
            return false;
        }
    }
    return true;
}

/* After the commit: the new ring on every shard of the map. */
static int install_rings(struct run *r)
{
    unsigned i;

    for (i = 0; i < r->map.n_shards; i++) {
        if (ctl_move_install_ring(r->mv, &r->map, &r->map.shards[i]) != 0) {
            return EXIT_ERROR;
        }
    }
    printf("ring of epoch %" PRIu64 " installed on %u shards\n", r->map.epoch,
           r->map.n_shards);
    return 0;
}

/* Why a plan run stops without finishing: 0 if it may go on. The live
 * map is fetched into @map. */
static int plan_gone_or_paused(struct run *r, struct cluster_map *map)
{
    if (fetch_into(r, map) != 0) {
        return EXIT_ERROR;
    }
    if (map->plan.id != r->plan_id) {
        fprintf(stderr, "ringmqctl: plan %" PRIu64 " ended meanwhile (committed "
                        "or aborted by another ringmqctl)\n",
                r->plan_id);
        return EXIT_ERROR;
    }
    if (map->plan.state == CLUSTER_PLAN_PAUSED) {
        printf("plan %" PRIu64 " is paused: `ringmqctl plan resume` goes on\n",
               r->plan_id);
        return EXIT_NEGATIVE;
    }
    return 0;
}

/* Run the plan of the live map to its end: every move, the commit, the
 * rings. */
static int run_plan(struct run *r)
{
    struct cluster_plan target = {0};
    struct plan_move *moves = NULL;
    size_t n_moves = 0, i;
    uint64_t t0 = clock_mono_ms();
    int rv;

    if (fetch(r) != 0) {
        return EXIT_ERROR;
    }
    if (r->map.plan.id == 0) {
        printf("no plan runs (epoch %" PRIu64 ")\n", r->map.epoch);
        return 0;
    }
    r->plan_id = r->map.plan.id;
    rv = plan_gone_or_paused(r, &r->map);
    if (rv != 0) {
        return rv;
    }
    if (plan_moves(&r->map, &moves, &n_moves) != 0) {
        return EXIT_ERROR;
    }
    printf("plan %" PRIu64 ": target ", r->plan_id);
    print_target(&r->map.plan);
    printf(", %zu moves\n", n_moves);
    fflush(stdout);
    for (i = 0; i < n_moves; i++) {
        rv = ctl_move_run(r->mv, &moves[i].m);
        if (rv != 0) {
            /* stopped, or failed because another ringmqctl paused or
             * aborted the plan meanwhile (its messages say which);
             * looked up aside: the moves point into r->map */
            struct cluster_map now;
            int why;

            cluster_map_init(&now);
            why = plan_gone_or_paused(r, &now);
            cluster_map_clear(&now);
            if (why == 0 && rv == CTL_MOVE_STOPPED) {
                i--; /* running after all: that move again */
                continue;
            }
            rv = why != 0 ? why : rv;
        }
        if (rv != 0) {
            moves_free(moves, n_moves);
            return rv;
        }
    }
    moves_free(moves, n_moves);
    /* the map is fetched again here: the moves' shards pointed into it */
    rv = plan_gone_or_paused(r, &r->map);
    if (rv != 0) {
        return rv;
    }
    cluster_plan_copy(&target, &r->map.plan);
    {
        struct map_sm_cmd c = {0};

        c.type = MAP_SM_PLAN_COMMIT;
        c.plan_id = r->plan_id;
        rv = change(r, &c, "plan committed");
    }
    if (rv == 0) {
        rv = fetch(r);
    }
    /* a commit of a plan that ended is taken as done: install the ring
     * only if it is the target (a ring spec replaces the overrides moves
     * left, which an aborted plan's ring does not include) */
    if (rv == 0 && !ring_is(&r->map, target.target, target.n_target)) {
        fprintf(stderr, "ringmqctl: plan %" PRIu64 " ended without this "
                        "commit (aborted?): the map's ring is not its "
                        "target\n",
                r->plan_id);
        rv = EXIT_ERROR;
    }
    if (rv == 0) {
        rv = install_rings(r);
    }
    if (rv == 0) {
        printf("plan %" PRIu64 " done in %.1f s: epoch %" PRIu64 ", ring ",
               r->plan_id, (double)(clock_mono_ms() - t0) / 1000.0,
               r->map.epoch);
        print_target(&target);
        printf("\n");
    }
    cluster_plan_clear(&target);
    return rv;
}

/* The target: every shard of @map in map order with its weight, @name
 * with @weight instead (0: @name leaves). */
static struct cluster_ring_entry *target_of(const struct cluster_map *map,
                                            const char *name, unsigned weight,
                                            unsigned *n)
{
    /* calloc'ed: the meta group compares targets byte by byte */
    struct cluster_ring_entry *t =
        xcalloc(map->n_shards ? map->n_shards : 1, sizeof(*t));
    unsigned i;

    *n = 0;
    for (i = 0; i < map->n_shards; i++) {
        const struct cluster_shard *s = &map->shards[i];
        bool it = strcmp(s->name, name) == 0;

        if (it && weight == 0) {
            continue;
        }
        snprintf(t[*n].name, sizeof(t[*n].name), "%s", s->name);
        t[(*n)++].weight = it ? weight : s->weight;
    }
    return t;
}

/* Start a plan to @t (or find it started) and run it. */
static int start_and_run(struct run *r, struct cluster_ring_entry *t,
                         unsigned n)
{
    struct cluster_plan p = {0};
    struct map_sm_cmd c = {0};
    struct map_sm_result res;

    if (r->map.plan.id == 0 && ring_is(&r->map, t, n)) {
        printf("nothing to do: the ring is that already (epoch %" PRIu64
               ")\n",
               r->map.epoch);
        return 0;
    }
    p.target = t;
    p.n_target = n;
    c.type = MAP_SM_PLAN_START;
    c.plan = &p;
    if (ctl_live_change(r->ctl, r->seed, &c, &res) != 0) {
        return EXIT_ERROR;
    }
    if (res.code == MAP_SM_CONFLICT) {
        fprintf(stderr, "ringmqctl: another plan runs (id %" PRIu64
                        ", target ",
                r->map.plan.id);
        fflush(stdout);
        {
            unsigned i;
            for (i = 0; i < r->map.plan.n_target; i++) {
                fprintf(stderr, "%s%s:%u", i ? " " : "",
                        r->map.plan.target[i].name,
                        r->map.plan.target[i].weight);
            }
        }
        fprintf(stderr, "): `ringmqctl plan resume` finishes it, `plan "
                        "abort` drops it\n");
        return EXIT_ERROR;
    }
    if (res.code != MAP_SM_OK) {
        fprintf(stderr, "ringmqctl: the cluster map refused the plan: %s\n",
                res.why);
        return EXIT_ERROR;
    }
    saw_epoch(r, res.epoch);
    printf("map: plan %s, epoch %" PRIu64 "\n",
           res.changed ? "started" : "runs already", res.epoch);
    fflush(stdout);
    return run_plan(r);
}

/* --members ID@RAFT@RPC[,...] into @s. */
static int parse_members(const char *list, struct cluster_shard *s)
{
    char *copy = xstrdup(list);
    char *save = NULL, *t;
    int rv = 0;

    for (t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        struct cluster_member *m;
        char *raft = strchr(t, '@');
        char *rpc = raft ? strchr(raft + 1, '@') : NULL;

        if (s->n_members == CLUSTER_MAX_MEMBERS || rpc == NULL) {
            rv = -1;
            break;
        }
        *raft++ = '\0';
        *rpc++ = '\0';
        m = &s->members[s->n_members];
        if (parse_num_u64(t, &m->id) != 0 || m->id == 0 ||
            strlen(raft) >= sizeof(m->raft) || strlen(rpc) >= sizeof(m->rpc) ||
            !cluster_addr_ok(raft, 1) || !cluster_addr_ok(rpc, 0)) {
            rv = -1;
            break;
        }
        snprintf(m->raft, sizeof(m->raft), "%s", raft);
        snprintf(m->rpc, sizeof(m->rpc), "%s", rpc);
        s->n_members++;
    }
    free(copy);
    if (rv != 0 || s->n_members == 0) {
        fprintf(stderr, "ringmqctl: --members: expected "
                        "ID@RAFT_HOST:PORT@RPC_HOST:PORT[,...]\n");
        return EXIT_USAGE;
    }
    return 0;
}

static bool same_members(const struct cluster_shard *a,
                         const struct cluster_shard *b)
{
    unsigned i;

    if (a->n_members != b->n_members) {
        return false;
    }
    for (i = 0; i < a->n_members; i++) {
        if (a->members[i].id != b->members[i].id ||
            strcmp(a->members[i].raft, b->members[i].raft) != 0 ||
            strcmp(a->members[i].rpc, b->members[i].rpc) != 0) {
            return false;
        }
    }
    return true;
}

static int shard_add(struct run *r, const char *name)
{
    const struct opts *o = r->ctl->o;
    unsigned weight = o->weight ? o->weight : 1;
    struct cluster_shard want;
    const struct cluster_shard *s;
    struct cluster_ring_entry *t;
    unsigned n;
    int rv;

    memset(&want, 0, sizeof(want));
    snprintf(want.name, sizeof(want.name), "%s", name);
    want.weight = weight;
    want.state = CLUSTER_SHARD_JOINING;
    if (!cluster_shard_name_ok(name) || weight > CLUSTER_WEIGHT_MAX) {
        fprintf(stderr, "ringmqctl: shard add: bad name '%s' or weight %u "
                        "(1..%d)\n",
                name, weight, CLUSTER_WEIGHT_MAX);
        return EXIT_USAGE;
    }
    if (o->members != NULL && parse_members(o->members, &want) != 0) {
        return EXIT_USAGE;
    }
    s = cluster_map_shard(&r->map, name);
    if (s == NULL) {
        struct map_sm_cmd c = {0};

        if (o->members == NULL) {
            fprintf(stderr, "ringmqctl: shard add %s needs --members "
                            "ID@RAFT@RPC[,...] (start those nodes first)\n",
                    name);
            return EXIT_USAGE;
        }
        c.type = MAP_SM_SHARD_ADD;
        c.shard = &want;
        rv = change(r, &c, "shard added (joining)");
        if (rv != 0) {
            return rv;
        }
        if (fetch(r) != 0) {
            return EXIT_ERROR;
        }
        s = cluster_map_shard(&r->map, name);
        if (s == NULL) {
            fprintf(stderr, "ringmqctl: shard %s is not in the map after "
                            "adding it\n",
                    name);
            return EXIT_ERROR;
        }
    } else if (o->members != NULL && !same_members(s, &want)) {
        fprintf(stderr, "ringmqctl: shard %s is in the map already, with "
                        "other members\n",
                name);
        return EXIT_USAGE;
    }
    if (ctl_move_wait_leader(r->mv, s) != 0) {
        fprintf(stderr, "ringmqctl: shard %s: its cache group has no leader: "
                        "are its nodes up?\n",
                name);
        return EXIT_ERROR;
    }
    printf("shard %s: its cache group has a leader\n", name);
    fflush(stdout);
    if (r->map.plan.id == 0 && s->state == CLUSTER_SHARD_JOINING) {
        /* before any move: the new shard owns nothing until activated,
         * whatever ring its nodes seeded from their file */
        if (ctl_move_install_ring(r->mv, &r->map, s) != 0) {
            return EXIT_ERROR;
        }
    }
    t = target_of(&r->map, name, weight, &n);
    rv = start_and_run(r, t, n);
    free(t);
    return rv;
}

static bool hosts_meta(const struct cluster_map *map,
                       const struct cluster_shard *s)
{
    unsigned i;

    for (i = 0; i < map->n_meta; i++) {
        if (cluster_shard_member(s, map->meta[i].id) == NULL) {
            return false;
        }
    }
    return map->n_meta > 0;
}

static int shard_remove(struct run *r, const char *name)
{
    const struct cluster_shard *s = cluster_map_shard(&r->map, name);
    struct cluster_ring_entry *t;
    unsigned n;
    int rv;

    if (s == NULL) {
        printf("shard %s is not in the map (removed already?)\n", name);
        return 0;
    }
    if (hosts_meta(&r->map, s)) {
        fprintf(stderr, "ringmqctl: shard %s's members host the meta group "
                        "(the cluster map itself): it cannot be removed\n",
                name);
        return EXIT_USAGE;
    }
    for (n = 0; n < r->map.n_queue_ring; n++) {
        if (strcmp(r->map.queue_ring[n].name, name) == 0) {
            fprintf(stderr, "ringmqctl: shard %s holds queues (it is on the "
                            "queue ring of the first map): it cannot leave "
                            "until its queues can move\n",
                    name);
            return EXIT_USAGE;
        }
    }
    if (s->state == CLUSTER_SHARD_JOINING) {
        fprintf(stderr, "ringmqctl: shard %s is joining: finish adding it "
                        "(shard add) first\n",
                name);
        return EXIT_USAGE;
    }
    t = target_of(&r->map, name, 0, &n);
    if (n == 0) {
        fprintf(stderr, "ringmqctl: the last shard cannot be removed\n");
        free(t);
        return EXIT_USAGE;
    }
    if (r->map.plan.id != 0 &&
        (r->map.plan.n_target != n ||
         memcmp(r->map.plan.target, t, n * sizeof(*t)) != 0)) {
        rv = start_and_run(r, t, n); /* says which plan runs */
        free(t);
        return rv;
    }
    {
        struct map_sm_cmd c = {0};

        c.type = MAP_SM_SHARD_STATE;
        c.group = name;
        c.state = CLUSTER_SHARD_DRAINING;
        rv = change(r, &c, "shard draining");
    }
    if (rv == 0) {
        rv = fetch(r);
    }
    if (rv == 0) {
        rv = start_and_run(r, t, n);
    }
    free(t);
    if (rv == 0) {
        printf("shard %s left the map: its nodes can be stopped\n", name);
    }
    return rv;
}

static int shard_weight(struct run *r, const char *name, const char *w)
{
    const struct cluster_shard *s = cluster_map_shard(&r->map, name);
    struct cluster_ring_entry *t;
    uint64_t weight;
    unsigned n;
    int rv;

    if (parse_num_u64(w, &weight) != 0 || weight == 0 ||
        weight > CLUSTER_WEIGHT_MAX) {
        fprintf(stderr, "ringmqctl: weight must be 1..%d\n",
                CLUSTER_WEIGHT_MAX);
        return EXIT_USAGE;
    }
    if (s == NULL) {
        fprintf(stderr, "ringmqctl: no shard '%s' in the map\n", name);
        return EXIT_USAGE;
    }
    t = target_of(&r->map, name, (unsigned)weight, &n);
    rv = start_and_run(r, t, n);
    free(t);
    return rv;
}

static void run_init(struct run *r, struct ctl *ctl, const struct ctl_map *m)
{
    memset(r, 0, sizeof(*r));
    r->ctl = ctl;
    r->seed = &m->map;
    cluster_map_init(&r->map);
    r->mv = ctl_mover_new(ctl, ctl->o->rate, plan_stopped, r);
}

static void run_clear(struct run *r)
{
    ctl_mover_free(r->mv);
    cluster_map_clear(&r->map);
}

int cmd_shard_plan(struct ctl *ctl, const struct ctl_map *m)
{
    const struct opts *o = ctl->o;
    const char *verb = o->args[1];
    struct run r;
    int rv;

    if (!((strcmp(verb, "add") == 0 && o->n_args == 3) ||
          (strcmp(verb, "remove") == 0 && o->n_args == 3) ||
          (strcmp(verb, "weight") == 0 && o->n_args == 4))) {
        fprintf(stderr, "ringmqctl: shard add NAME [--weight W] --members "
                        "ID@RAFT@RPC[,...] | shard remove NAME | shard "
                        "weight NAME W\n");
        return EXIT_USAGE;
    }
    run_init(&r, ctl, m);
    rv = fetch(&r);
    if (rv == 0 && verb[0] == 'a') {
        rv = shard_add(&r, o->args[2]);
    } else if (rv == 0 && verb[0] == 'r') {
        rv = shard_remove(&r, o->args[2]);
    } else if (rv == 0) {
        rv = shard_weight(&r, o->args[2], o->args[3]);
    }
    run_clear(&r);
    return rv;
}

static int plan_status(struct run *r)
{
    struct plan_move *moves = NULL;
    size_t n_moves = 0, i;
    unsigned done = 0;

    if (r->map.plan.id == 0) {
        printf("no plan (epoch %" PRIu64 ")\n", r->map.epoch);
        return 0;
    }
    printf("plan %" PRIu64 " %s, epoch %" PRIu64 ", target ", r->map.plan.id,
           cluster_plan_state_name(r->map.plan.state), r->map.epoch);
    print_target(&r->map.plan);
    printf("\n");
    if (plan_moves(&r->map, &moves, &n_moves) != 0) {
        return EXIT_ERROR;
    }
    for (i = 0; i < n_moves; i++) {
        const struct ctl_move *m = &moves[i].m;
        enum cache_move_state at_s, at_t;

        if (ctl_move_state(r->mv, m, &at_s, &at_t) != 0) {
            moves_free(moves, n_moves);
            return EXIT_ERROR;
        }
        done += ctl_move_done(at_s, at_t);
        printf("move %s->%s id %016" PRIx64 " arcs %zu: %s %s, %s %s\n",
               m->from->name, m->to->name, m->id, m->n_arcs, m->from->name,
               cache_move_state_name(at_s), m->to->name,
               cache_move_state_name(at_t));
    }
    printf("%u of %zu moves done\n", done, n_moves);
    moves_free(moves, n_moves);
    return 0;
}

static int plan_set_state(struct run *r, enum cluster_plan_state st)
{
    struct map_sm_cmd c = {0};

    c.type = MAP_SM_PLAN_STATE;
    c.plan_id = r->map.plan.id;
    c.plan_state = st;
    return change(r, &c, st == CLUSTER_PLAN_PAUSED ? "plan paused"
                                                   : "plan running");
}

/* Every move is aborted and the plan ends, the ring as it was. Refused
 * once a move was handed off: its arcs are served by the new owner
 * through the shards' ring overrides, which the map's ring does not show,
 * and a later plan computed from the map's ring would strand them; such a
 * plan can only finish (plan resume). */
static int plan_abort(struct run *r)
{
    struct plan_move *moves = NULL;
    size_t n_moves = 0, i;
    unsigned kept = 0;
    int rv;

    if (r->map.plan.id == 0) {
        printf("no plan runs (epoch %" PRIu64 ")\n", r->map.epoch);
        return 0;
    }
    /* a running coordinator stops at its next look */
    rv = plan_set_state(r, CLUSTER_PLAN_PAUSED);
    if (rv != 0 || (rv = fetch(r)) != 0) {
        return rv;
    }
    if (plan_moves(&r->map, &moves, &n_moves) != 0) {
        return EXIT_ERROR;
    }
    for (i = 0; i < n_moves && rv == 0; i++) {
        enum cache_move_state at_s, at_t;

        rv = ctl_move_state(r->mv, &moves[i].m, &at_s, &at_t);
        if (rv == 0 && (ctl_move_done(at_s, at_t) ||
                        at_s == CACHE_MOVE_HANDED_OFF)) {
            kept++;
        }
    }
    if (rv == 0 && kept > 0) {
        fprintf(stderr,
                "ringmqctl: %u move(s) of plan %" PRIu64
                " were handed off already: their keys are served by their "
                "new shard; the plan can only finish (ringmqctl plan "
                "resume). It stays paused.\n",
                kept, r->map.plan.id);
        moves_free(moves, n_moves);
        return EXIT_ERROR;
    }
    for (i = 0; i < n_moves && rv == 0; i++) {
        const struct ctl_move *m = &moves[i].m;
        enum cache_move_state at_s, at_t;

        rv = ctl_move_state(r->mv, m, &at_s, &at_t);
        if (rv != 0) {
            break;
        }
        if (at_s != CACHE_MOVE_NONE || at_t != CACHE_MOVE_NONE) {
            rv = ctl_move_abort(r->mv, m);
            if (rv == 0) {
                printf("move %s->%s: aborted\n", m->from->name, m->to->name);
            }
        }
    }
    if (rv == 0) {
        struct map_sm_cmd c = {0};

        c.type = MAP_SM_PLAN_ABORT;
        c.plan_id = r->map.plan.id;
        rv = change(r, &c, "plan aborted");
    }
    moves_free(moves, n_moves);
    for (i = 0; rv == 0 && i < r->map.n_shards; i++) {
        if (r->map.shards[i].state == CLUSTER_SHARD_JOINING) {
            printf("shard %s stays joining (it owns nothing by the ring): "
                   "`shard add %s` adds it again\n",
                   r->map.shards[i].name, r->map.shards[i].name);
        }
    }
    return rv;
}

int cmd_plan(struct ctl *ctl, const struct ctl_map *m)
{
    const struct opts *o = ctl->o;
    const char *verb = o->n_args == 2 ? o->args[1] : "";
    struct run r;
    int rv;

    if (strcmp(verb, "status") != 0 && strcmp(verb, "pause") != 0 &&
        strcmp(verb, "resume") != 0 && strcmp(verb, "abort") != 0) {
        fprintf(stderr, "ringmqctl: plan status|pause|resume|abort\n");
        return EXIT_USAGE;
    }
    run_init(&r, ctl, m);
    rv = fetch(&r);
    if (rv == 0 && strcmp(verb, "status") == 0) {
        rv = plan_status(&r);
    } else if (rv == 0 && strcmp(verb, "abort") == 0) {
        rv = plan_abort(&r);
    } else if (rv == 0 && r.map.plan.id == 0) {
        printf("no plan runs (epoch %" PRIu64 ")\n", r.map.epoch);
    } else if (rv == 0 && strcmp(verb, "pause") == 0) {
        rv = plan_set_state(&r, CLUSTER_PLAN_PAUSED);
    } else if (rv == 0) {
        rv = plan_set_state(&r, CLUSTER_PLAN_RUNNING);
        if (rv == 0) {
            rv = run_plan(&r);
        }
    }
    run_clear(&r);
    return rv;
}
