/*
 * map_scale: what the cluster map costs as it grows (docs/scaling.md).
 *
 *   build/bench/map_scale [--runs R] [N ...]     (default: 100 256 1000 4096)
 *   build/bench/map_scale --router FILE          (the router's part, below)
 *
 * For each N, a map of N shards with 3 members each, placed as a real
 * cluster would be: N nodes, shard s on nodes s, s+1, s+2 (mod N), so every
 * node hosts 3 replicas (raft ports 7200, 7210, 7220 on its own IPv4
 * address; rpc port 7100). It times, as the median of R runs: loading the
 * YAML file (which validates), validating again, building the ring, one
 * map_sm_apply of a member change (a copy of the map, the edit, a
 * validation), a follower taking that change (copy, delta, validation, as
 * router/map_follow does), and the arc diff of adding one shard
 * (shard_ring_diff). It sizes the meta group's snapshot and the protobuf
 * watch answers: the whole map (a new follower), a member change and a
 * weight change (a follower one epoch behind). The router's memory is the
 * RSS a fresh process gains in backend_new with the map (one leader group
 * per shard, one rpc client per node address; nothing connects): that
 * process is this program again, run with --router FILE.
 *
 * Unlike the load generators beside it, this links ringmq's own modules:
 * it measures them from the inside, not a server from the outside.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "common/log.h"
#include "common/ring.h"
#include "proto/map_pb.h"
#include "proto/map_yaml.h"
#include "router/backend.h"
#include "sm/map_sm.h"
#include "sm/shard_ring.h"

#define MAX_RUNS 15

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "map_scale: %s: %s\n", what, why);
    exit(1);
}

/* Node i's address: its own IPv4 address, 10.x.y.z. */
static void node_host(unsigned i, char *out, size_t len)
{
    snprintf(out, len, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255,
             i & 255);
}

static void write_map(const char *path, unsigned n)
{
    FILE *f = fopen(path, "w");
    unsigned nodes = n < 3 ? 3 : n;
    unsigned s, k;
    char host[32];

    if (f == NULL) {
        die(path, strerror(errno));
    }
    fprintf(f, "epoch: 1\nshards:\n");
    for (s = 0; s < n; s++) {
        fprintf(f, "  - name: shard-%04u\n    weight: 1\n    members:\n", s);
        for (k = 0; k < 3; k++) {
            unsigned node = (s + k) % nodes;
            node_host(node, host, sizeof(host));
            /* on node s+k, shard s is its replica k: raft port 7200+10k */
            fprintf(f,
                    "      - {id: %u, raft: %s:%u, rpc: %s:7100}\n",
                    node + 1, host, 7200 + 10 * k, host);
        }
    }
    fprintf(f, "routers:\n  - {name: r1, memcached: 10.255.0.1:11211}\n");
    if (fclose(f) != 0) {
        die(path, strerror(errno));
    }
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;

    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "VmRSS: %ld", &kb) == 1) {
            break;
        }
    }
    fclose(f);
    return kb;
}

/* ---- the router's memory: a process of its own ------------------------ */

static void on_closed(void *data)
{
    *(int *)data = 1;
}

/* Prints "rss_before rss_after" (KiB): around backend_new. */
static int router_mode(const char *path)
{
    struct cluster_map map;
    struct backend_config bc = {0};
    struct backend *b;
    uv_loop_t loop;
    char err[256];
    long before, after;
    int closed = 0;

    log_set_level(LOG_WARN);
    cluster_map_init(&map);
    if (cluster_map_load(&map, path, err, sizeof(err)) != 0) {
        die(path, err);
    }
    uv_loop_init(&loop);
    bc.map = &map;
    before = rss_kb();
    b = backend_new(&loop, &bc, err, sizeof(err));
    if (b == NULL) {
        die("backend_new", err);
    }
    after = rss_kb();
    printf("%ld %ld\n", before, after);
    fflush(stdout);
    backend_close(b, on_closed, &closed);
    while (!closed) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    cluster_map_clear(&map);
    return 0;
}

/* RSS gained by a fresh process in backend_new, KiB; -1 on failure. */
static long router_rss(const char *path, long *base)
{
    char cmd[8300];
    FILE *p;
    long before = -1, after = -1;
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);

    if (len < 0) {
        return -1;
    }
    self[len] = '\0';
    snprintf(cmd, sizeof(cmd), "'%s' --router '%s'", self, path);
    p = popen(cmd, "r");
    if (p == NULL) {
        return -1;
    }
    if (fscanf(p, "%ld %ld", &before, &after) != 2) {
        before = after = -1;
    }
    if (pclose(p) != 0 || before < 0) {
        return -1;
    }
    *base = before;
    return after - before;
}

/* ---- sizes -------------------------------------------------------------- */

static size_t delta_bytes(const struct map_sm *sm, uint64_t known)
{
    struct map_delta d;
    struct map_pb_arena a = {0};
    Ringmq__MapDelta pb;
    size_t n;

    map_delta_init(&d);
    map_sm_delta(sm, known, &d);
    map_pb_delta_to(&d, &pb, &a);
    n = ringmq__map_delta__get_packed_size(&pb);
    map_pb_arena_clear(&a);
    map_delta_clear(&d);
    return n;
}

static void ring_of(const struct cluster_map *map, struct shard_ring *out)
{
    size_t len;
    void *spec = shard_ring_encode_map(map, map->shards[0].name, &len);

    shard_ring_init(out);
    if (shard_ring_decode(spec, len, out) != 0) {
        die("shard_ring_decode", "refused");
    }
    free(spec);
}

/* Share of the hash space (%) in @moves, and the part of it that goes
 * to another shard than @added: ketama's float rounding can change the
 * point count of every shard when one is added (common/ring.c). */
static void share_moved(const struct arc_move *moves, size_t n,
                        const char *added, double *all, double *old)
{
    double a = 0, o = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        double len = (double)moves[i].arc.hi - moves[i].arc.lo + 1;

        a += len;
        if (strcmp(moves[i].to, added) != 0) {
            o += len;
        }
    }
    *all = a * 100 / 4294967296.0;
    *old = o * 100 / 4294967296.0;
}

struct row {
    unsigned n;
    double load_ms, validate_ms, ring_ms, apply_ms, follow_ms, diff_ms;
    size_t snapshot, full_pb, member_pb, weight_pb, arcs;
    double moved_pct, moved_old_pct; /* of the hash space: all, not to the
                                      * new shard */
    long router_kb, router_base_kb;
};

static void measure(unsigned n, unsigned runs, const char *dir, struct row *r)
{
    char path[4096];
    char err[256];
    double t_load[MAX_RUNS], t_val[MAX_RUNS], t_ring[MAX_RUNS];
    double t_apply[MAX_RUNS], t_follow[MAX_RUNS], t_diff[MAX_RUNS];
    struct cluster_map map;
    struct map_sm *sm;
    struct map_sm_cmd c;
    struct map_sm_result res;
    unsigned i;

    memset(r, 0, sizeof(*r));
    r->n = n;
    snprintf(path, sizeof(path), "%s/map-%u.yaml", dir, n);
    write_map(path, n);

    cluster_map_init(&map);
    for (i = 0; i < runs; i++) {
        double t0;
        struct ring *ring;

        cluster_map_clear(&map);
        t0 = now_ms();
        if (cluster_map_load(&map, path, err, sizeof(err)) != 0) {
            die(path, err);
        }
        t_load[i] = now_ms() - t0;
        t0 = now_ms();
        if (cluster_map_validate(&map, err, sizeof(err)) != 0) {
            die("validate", err);
        }
        t_val[i] = now_ms() - t0;
        t0 = now_ms();
        ring = cluster_map_ring(&map, err, sizeof(err));
        t_ring[i] = now_ms() - t0;
        if (ring == NULL) {
            die("ring", err);
        }
        ring_free(ring);
    }
    r->load_ms = median(t_load, runs);
    r->validate_ms = median(t_val, runs);
    r->ring_ms = median(t_ring, runs);

    sm = map_sm_new();
    c = (struct map_sm_cmd){.type = MAP_SM_INIT, .map = &map};
    map_sm_apply(sm, &c, &res);
    if (res.code != MAP_SM_OK) {
        die("init", res.why);
    }
    {
        void *buf;
        size_t len;

        if (map_sm_snapshot(sm, malloc, &buf, &len) != 0) {
            die("snapshot", "alloc");
        }
        r->snapshot = len;
        free(buf);
    }
    r->full_pb = delta_bytes(sm, 0);

    /* Member changes: a new node joins shard i; the follower is one epoch
     * behind and takes the delta as router/map_follow does. */
    for (i = 0; i < runs; i++) {
        struct cluster_map view;
        struct map_delta d;
        uint64_t known = map_sm_epoch(sm);
        double t0;

        cluster_map_init(&view);
        cluster_map_copy(&view, map_sm_map(sm));
        c = (struct map_sm_cmd){.type = MAP_SM_MEMBER_ADD,
                                .expected_epoch = known,
                                .group = map.shards[i % n].name};
        c.member.id = n + 1000 + i;
        node_host(n + 1000 + i, c.member.raft, sizeof(c.member.raft));
        strcpy(c.member.rpc, c.member.raft);
        strcat(c.member.raft, ":7200");
        strcat(c.member.rpc, ":7100");
        c.member.join = 1;
        t0 = now_ms();
        map_sm_apply(sm, &c, &res);
        t_apply[i] = now_ms() - t0;
        if (res.code != MAP_SM_OK || !res.changed) {
            die("member add", res.why);
        }
        if (i == 0) {
            r->member_pb = delta_bytes(sm, known);
        }
        map_delta_init(&d);
        map_sm_delta(sm, known, &d);
        t0 = now_ms();
        {
            struct cluster_map next;

            cluster_map_init(&next);
            cluster_map_copy(&next, &view);
            if (map_delta_apply(&next, &d) != 0 ||
                cluster_map_validate(&next, err, sizeof(err)) != 0) {
                die("follow", err);
            }
            cluster_map_copy(&view, &next);
            cluster_map_clear(&next);
        }
        t_follow[i] = now_ms() - t0;
        map_delta_clear(&d);
        cluster_map_clear(&view);
    }
    r->apply_ms = median(t_apply, runs);
    r->follow_ms = median(t_follow, runs);

    {
        uint64_t known = map_sm_epoch(sm);

        c = (struct map_sm_cmd){.type = MAP_SM_SHARD_WEIGHT,
                                .expected_epoch = known,
                                .group = map.shards[n / 2].name,
                                .weight = 2};
        map_sm_apply(sm, &c, &res);
        if (res.code != MAP_SM_OK) {
            die("weight", res.why);
        }
        r->weight_pb = delta_bytes(sm, known);
    }

    /* One shard joins the ring with weight 1: the arcs it takes. */
    for (i = 0; i < runs; i++) {
        struct cluster_map base, grown;
        struct shard_ring a, b;
        struct arc_move *moves = NULL;
        double t0;

        cluster_map_init(&base);
        cluster_map_init(&grown);
        cluster_map_copy(&base, &map);
        cluster_map_copy(&grown, &map);
        if (n == CLUSTER_MAX_SHARDS) {
            /* a full map: the last shard is the one added */
            base.n_shards--;
        } else {
            struct cluster_shard *s = cluster_map_append(&grown);
            snprintf(s->name, sizeof(s->name), "shard-new");
            s->weight = 1;
        }
        ring_of(&base, &a);
        ring_of(&grown, &b);
        t0 = now_ms();
        r->arcs = shard_ring_diff(&a, &b, &moves);
        t_diff[i] = now_ms() - t0;
        share_moved(moves, r->arcs, grown.shards[grown.n_shards - 1].name,
                    &r->moved_pct, &r->moved_old_pct);
        free(moves);
        shard_ring_clear(&a);
        shard_ring_clear(&b);
        cluster_map_clear(&base);
        cluster_map_clear(&grown);
    }
    r->diff_ms = median(t_diff, runs);

    r->router_kb = router_rss(path, &r->router_base_kb);

    map_sm_free(sm);
    cluster_map_clear(&map);
    unlink(path);
}

int main(int argc, char **argv)
{
    static const unsigned defaults[] = {100, 256, 1000, 4096};
    unsigned ns[16];
    unsigned n_ns = 0, runs = 3, i;
    char dir[] = "/tmp/ringmq-mapscale-XXXXXX";
    struct row rows[16];

    if (argc == 3 && strcmp(argv[1], "--router") == 0) {
        return router_mode(argv[2]);
    }
    for (i = 1; i < (unsigned)argc; i++) {
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < (unsigned)argc) {
            runs = (unsigned)atoi(argv[++i]);
        } else if (n_ns < 16 && atoi(argv[i]) > 0 &&
                   atoi(argv[i]) <= CLUSTER_MAX_SHARDS) {
            ns[n_ns++] = (unsigned)atoi(argv[i]);
        } else {
            fprintf(stderr, "usage: map_scale [--runs R] [N ...] "
                            "(1 <= N <= %d, R 1..%d)\n",
                    CLUSTER_MAX_SHARDS, MAX_RUNS);
            return 2;
        }
    }
    if (runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "map_scale: --runs 1..%d\n", MAX_RUNS);
        return 2;
    }
    if (n_ns == 0) {
        memcpy(ns, defaults, sizeof(defaults));
        n_ns = sizeof(defaults) / sizeof(defaults[0]);
    }
    if (mkdtemp(dir) == NULL) {
        die("mkdtemp", strerror(errno));
    }
    log_set_level(LOG_WARN);
    for (i = 0; i < n_ns; i++) {
        measure(ns[i], runs, dir, &rows[i]);
    }
    rmdir(dir);

    printf("map of N shards x 3 members on N nodes; times: median of %u "
           "runs\n\n",
           runs);
    printf("| shards | load YAML ms | validate ms | ring ms | apply member "
           "ms | follow ms | diff +1 shard ms | arcs | moved %% (not to it) |\n"
           "|---|---|---|---|---|---|---|---|---|\n");
    for (i = 0; i < n_ns; i++) {
        const struct row *r = &rows[i];
        printf("| %u | %.2f | %.2f | %.2f | %.3f | %.3f | %.2f | %zu | "
               "%.3f (%.3f) |\n",
               r->n, r->load_ms, r->validate_ms, r->ring_ms, r->apply_ms,
               r->follow_ms, r->diff_ms, r->arcs, r->moved_pct,
               r->moved_old_pct);
    }
    printf("\n| shards | meta snapshot B | whole map pb B | member delta pb B "
           "| weight delta pb B | map struct KiB | router backend KiB (base "
           "RSS KiB) |\n|---|---|---|---|---|---|---|\n");
    for (i = 0; i < n_ns; i++) {
        const struct row *r = &rows[i];
        printf("| %u | %zu | %zu | %zu | %zu | %zu | %ld (%ld) |\n", r->n,
               r->snapshot, r->full_pb, r->member_pb, r->weight_pb,
               r->n * sizeof(struct cluster_shard) / 1024, r->router_kb,
               r->router_base_kb);
    }
    return 0;
}
