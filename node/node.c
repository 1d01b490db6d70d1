/*
 * node: see node.h.
 *
 * Start-up order: lock the data directory (two processes on one Raft log would
 * corrupt it), start every group, then the listeners. Stop order is the
 * reverse, after a hand-off: every group this node leads hands its
 * leadership to a caught-up voter (rgroup_hand_off), and the node waits
 * until each knows another leader or HANDOFF_MS passed, still serving (its
 * leaders refuse writes meanwhile, so routers go to the new ones). Then
 * listeners first so no new work arrives (the AMQP server returns its
 * connections' deliveries on the way out), then amqp_local, then the
 * groups, whose pending calls complete with *_UNAVAILABLE / CLOSING. The
 * groups elect at once instead of after an election timeout.
 *
 * AMQP groups (docs/amqp.md, docs/cluster.md): beside each cache group S
 * whose member raft address is host:P, the node runs "S.mq" at host:P+1;
 * the members of the first shard (standalone: the single group) also run
 * "meta" at P+2. Their data lives in data_dir/S.mq and data_dir/meta. A
 * port 0 (the standalone default) stays 0: single-member groups have no
 * peer that needs to know the port. The standalone node serves them over
 * its own AMQP edge (amqp_local + amqp_server) and starts them with BOOT;
 * in a cluster they are there for the routers.
 */
#include "node/node.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/mkdir_p.h"
#include "common/clock.h"
#include "node/amqp_local.h"
#include "node/cache_svc.h"
#include "node/meta_svc.h"
#include "node/mq_fetch.h"
#include "node/mq_svc.h"
#include "node/node_http.h"
#include "node/node_rpc.h"
#include "edge/amqp_server.h"
#include "edge/mc_server.h"

struct node {
    uv_loop_t *loop;
    struct node_config cfg;
    int lock_fd;
    struct cache_svc *groups[NODE_MAX_GROUPS];
    unsigned n_groups;
    struct cache_svc *edge_group; /* behind the memcached edge */
    struct mc_server *mc;
    struct node_rpc *rpc;
    struct node_http *http;
    struct mq_svc *mq[NODE_MAX_GROUPS]; /* "<group>.mq", by group index */
    unsigned n_mq;
    /* fetchers of the bodies a queue group's store lacks (not standalone:
     * no peers), and what their peer lists and kicks need */
    struct mq_fetch *fetch[NODE_MAX_GROUPS];
    struct mq_fetch_ctx {
        struct node *n;
        unsigned g;
    } fetch_ctx[NODE_MAX_GROUPS];
    struct meta_svc *meta;    /* NULL if this node is not a meta member */
    struct amqp_local *local; /* standalone AMQP broker */
    struct amqp_server *amqp; /* standalone AMQP edge */
    struct watermark watermark; /* blocks AMQP publishers */
    unsigned closing; /* things still closing */
    void (*stop_cb)(void *data);
    void *stop_data;
};

/* How long a starting node waits for its data directory's lock. A node
 * killed with -9 keeps it until its last thread has exited (a threadpool
 * thread may still be in fsync); a restart a moment later must wait, not
 * fail. */
#define LOCK_WAIT_MS 5000
#define LOCK_POLL_MS 50

static int lock_data_dir(struct node *n, char *err, size_t errlen)
{
    char path[PATH_MAX + 16];
    char sub[PATH_MAX + 64];
    struct stat st;
    uint64_t deadline;

    if (mkdir_p(n->cfg.data_dir, sub, sizeof(sub)) != 0) {
        snprintf(err, errlen, "data directory '%s': %s", n->cfg.data_dir,
                 sub);
        return -1;
    }
    if (stat(n->cfg.data_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "data directory '%s' is not a directory",
                 n->cfg.data_dir);
        return -1;
    }
    snprintf(path, sizeof(path), "%s/LOCK", n->cfg.data_dir);
    n->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (n->lock_fd < 0) {
        snprintf(err, errlen, "data directory '%s' is not writable: %s",
                 n->cfg.data_dir, strerror(errno));
        return -1;
    }
    deadline = clock_mono_ms() + LOCK_WAIT_MS;
    while (flock(n->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK || clock_mono_ms() >= deadline) {
            snprintf(err, errlen,
                     "data directory '%s' is in use by another process",
                     n->cfg.data_dir);
            close(n->lock_fd);
            n->lock_fd = -1;
            return -1;
        }
        usleep(LOCK_POLL_MS * 1000);
    }
    return 0;
}

/* ------------------------- memcached edge backend ----------------------- */

static void edge_submit(void *data, struct cache_call *call)
{
    struct node *n = data;
    cache_svc_submit(n->edge_group, call);
}

static void edge_stats(void *data, struct buf *out)
{
    struct node *n = data;
    cache_svc_stats(n->edge_group, out);
}

static int start_memcached(struct node *n, char *err, size_t errlen)
{
    struct mc_server_config mc = {0};
    struct mc_backend backend = {
        .data = n,
        .submit = edge_submit,
        .stats = edge_stats,
    };
    char host[NODE_ADDR_MAX];
    char sub[256];
    unsigned g;

    n->edge_group = n->groups[0];
    for (g = 0; g < n->n_groups; g++) {
        if (strcmp(n->cfg.groups[g].name, "cache") == 0) {
            n->edge_group = n->groups[g];
        }
    }
    if (node_config_split_addr(n->cfg.memcached, host, sizeof(host),
                               &mc.port) != 0) {
        snprintf(err, errlen, "memcached: bad address '%s'",
                 n->cfg.memcached);
        return -1;
    }
    mc.host = host;
    mc.item_size_max = n->cfg.item_size_max;
    n->mc = mc_server_new(n->loop, &mc, &backend, sub, sizeof(sub));
    if (n->mc == NULL) {
        snprintf(err, errlen, "memcached %s: %s", n->cfg.memcached, sub);
        return -1;
    }
    return 0;
}

/* ------------------------------ AMQP side ------------------------------- */

/* Group @g's config moved to the AMQP group @name at raft ports + @delta. */
static int amqp_group_config(struct node *n, unsigned g, const char *name,
                             int delta, struct rgroup_config *rc, char *dir,
                             size_t dirlen, char *err, size_t errlen)
{
    const struct node_group_config *gc = &n->cfg.groups[g];
    unsigned i;

    node_config_group(&n->cfg, g, rc, dir, dirlen);
    if ((size_t)snprintf(dir, dirlen, "%s/%s", n->cfg.data_dir, name) >=
        dirlen) {
        snprintf(err, errlen, "data directory path too long for '%s'", name);
        return -1;
    }
    rc->name = name;
    rc->dir = dir;
    for (i = 0; i < rc->n_members; i++) {
        char *addr = rc->members[i].raft_address;
        char moved[RGROUP_ADDR_MAX];

        if (cluster_raft_port_offset(addr, delta, moved, sizeof(moved)) !=
            0) {
            snprintf(err, errlen,
                     "group %s: member %s: no room for the AMQP group port "
                     "+%d",
                     gc->name, addr, delta);
            return -1;
        }
        memcpy(addr, moved, sizeof(moved));
    }
    return 0;
}

/* Index of the group whose members also run "meta", or -1. */
static int meta_group_index(const struct node *n)
{
    const struct cluster_map *map = n->cfg.cluster;
    unsigned g;

    if (n->cfg.standalone) {
        return 0;
    }
    if (map == NULL || map->n_shards == 0 ||
        cluster_shard_member(&map->shards[0], n->cfg.id) == NULL) {
        return -1;
    }
    for (g = 0; g < n->cfg.n_groups; g++) {
        if (strcmp(n->cfg.groups[g].name, map->shards[0].name) == 0) {
            return (int)g;
        }
    }
    return -1;
}

static unsigned fetch_peers(void *data, const char **out, unsigned max)
{
    struct mq_fetch_ctx *fc = data;
    struct node *n = fc->n;

    return mq_fetch_config_peers(&n->cfg, fc->g, n->cfg.id,
                                 mq_svc_leader_id(n->mq[fc->g]), out, max);
}

/* A restore left bodies missing (mq_svc_config.on_bodies_missing): at
 * start, before the fetcher exists, it finds them itself. */
static void fetch_kick(void *data)
{
    struct mq_fetch_ctx *fc = data;

    if (fc->n->fetch[fc->g] != NULL) {
        mq_fetch_kick(fc->n->fetch[fc->g]);
    }
}

static int start_amqp_groups(struct node *n, char *err, size_t errlen)
{
    struct mq_svc_config mc = {0};
    struct rgroup_config rc;
    char dir[PATH_MAX + 80];
    char name[96];
    unsigned g;
    int mg;

    /* Standalone restarts are broker restarts: BOOT cleans up. A cluster
     * member restarting is not (the other members keep the queue alive). */
    mc.boot = n->cfg.standalone;
    for (g = 0; g < n->cfg.n_groups; g++) {
        snprintf(name, sizeof(name), "%s.mq", n->cfg.groups[g].name);
        if (amqp_group_config(n, g, name, 1, &rc, dir, sizeof(dir), err,
                              errlen) != 0) {
            return -1;
        }
        n->fetch_ctx[g].n = n;
        n->fetch_ctx[g].g = g;
        mc.on_bodies_missing = fetch_kick;
        mc.on_bodies_missing_data = &n->fetch_ctx[g];
        n->mq[g] = mq_svc_new(n->loop, &rc, &mc, err, errlen);
        if (n->mq[g] == NULL) {
            return -1;
        }
        n->n_mq++;
        if (!n->cfg.standalone) {
            struct mq_fetch_config fc = {
                .group = name,
                .peers = fetch_peers,
                .peers_data = &n->fetch_ctx[g],
            };

            n->fetch[g] = mq_fetch_start(n->loop, mq_svc_store(n->mq[g]),
                                         &fc, err, errlen);
            if (n->fetch[g] == NULL) {
                return -1;
            }
        }
    }
    mg = meta_group_index(n);
    if (mg < 0) {
        return 0;
    }
    if (amqp_group_config(n, (unsigned)mg, "meta", 2, &rc, dir, sizeof(dir),
                          err, errlen) != 0) {
        return -1;
    }
    n->meta = meta_svc_new(n->loop, &rc, err, errlen);
    if (n->meta == NULL) {
        return -1;
    }
    if (n->cfg.cluster != NULL) {
        /* the first leader of a new cluster's meta group proposes it */
        meta_svc_set_bootstrap(n->meta, n->cfg.cluster);
    }
    return 0;
}

/* An edge identity unique among live edges (amqp_server.h): nothing in
 * the node is unique across restarts, so mix the clock and the pid. */
static uint64_t random_router_id(void)
{
    uint64_t x = clock_mono_ns() ^ clock_wall_ms() ^ ((uint64_t)getpid() << 40);

    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x != 0 ? x : 1;
}

static int start_amqp(struct node *n, char *err, size_t errlen)
{
    struct amqp_server_config ac;
    struct amqp_broker broker;
    char host[NODE_ADDR_MAX];
    char sub[256];

    n->local = amqp_local_new();
    if (amqp_local_attach(n->local, n->mq, n->n_mq, n->meta) != 0) {
        snprintf(err, errlen, "amqp: no queue group to serve");
        return -1;
    }
    memset(&ac, 0, sizeof(ac));
    if (node_config_split_addr(n->cfg.amqp, host, sizeof(host), &ac.port) !=
        0) {
        snprintf(err, errlen, "amqp: bad address '%s'", n->cfg.amqp);
        return -1;
    }
    ac.host = host;
    ac.router_id = random_router_id();
    amqp_local_set_watermark(n->local, &n->watermark);
    amqp_local_broker(n->local, &broker);
    n->amqp = amqp_server_new(n->loop, &ac, &broker, sub, sizeof(sub));
    if (n->amqp == NULL) {
        snprintf(err, errlen, "amqp %s: %s", n->cfg.amqp, sub);
        return -1;
    }
    return 0;
}

/* ------------------------------ lifecycle ------------------------------- */

static void node_free(struct node *n)
{
    if (n->lock_fd >= 0) {
        close(n->lock_fd);
    }
    free(n);
}

static void part_closed(void *data)
{
    struct node *n = data;
    void (*cb)(void *);
    void *cb_data;

    if (--n->closing > 0) {
        return;
    }
    cb = n->stop_cb;
    cb_data = n->stop_data;
    node_free(n);
    if (cb != NULL) {
        cb(cb_data);
    }
}

static void groups_close(struct node *n)
{
    unsigned g;

    n->closing++; /* guard: don't finish while still issuing closes */
    if (n->local != NULL) {
        amqp_local_close(n->local);
        n->local = NULL;
    }
    for (g = 0; g < n->n_mq; g++) {
        /* before its service: the store goes with the service */
        if (n->fetch[g] != NULL) {
            n->closing++;
            mq_fetch_close(n->fetch[g], part_closed, n);
            n->fetch[g] = NULL;
        }
        n->closing++;
        mq_svc_close(n->mq[g], part_closed, n);
    }
    n->n_mq = 0;
    if (n->meta != NULL) {
        n->closing++;
        meta_svc_close(n->meta, part_closed, n);
        n->meta = NULL;
    }
    for (g = 0; g < n->n_groups; g++) {
        n->closing++;
        cache_svc_close(n->groups[g], part_closed, n);
    }
    n->n_groups = 0;
    part_closed(n);
}

static void edges_closed(void *data)
{
    struct node *n = data;

    if (--n->closing > 0) {
        return;
    }
    groups_close(n);
}

/* How long a stopping node waits for its groups' new leaders. */
#define HANDOFF_MS 2000
#define HANDOFF_POLL_MS 10
#define NODE_MAX_RGROUPS (2 * NODE_MAX_GROUPS + 1)

struct handoff {
    uv_timer_t timer;
    struct node *n;
    uint64_t deadline;
    struct rgroup *groups[NODE_MAX_RGROUPS]; /* the ones handed off */
    unsigned n_groups;
};

static void close_now(struct node *n);

/* Every Raft group of @n (cache, queues, meta) into @out. */
static unsigned all_rgroups(struct node *n, struct rgroup **out)
{
    unsigned k = 0;
    unsigned g;

    for (g = 0; g < n->n_groups; g++) {
        out[k++] = cache_svc_group(n->groups[g]);
    }
    for (g = 0; g < n->n_mq; g++) {
        out[k++] = mq_svc_group(n->mq[g]);
    }
    if (n->meta != NULL) {
        out[k++] = meta_svc_group(n->meta);
    }
    return k;
}

static void handoff_freed(uv_handle_t *h)
{
    free(h->data);
}

static void handoff_tick(uv_timer_t *t)
{
    struct handoff *ho = t->data;
    struct node *n = ho->n;
    unsigned moved = 0;
    unsigned i;

    for (i = 0; i < ho->n_groups; i++) {
        uint64_t leader = rgroup_leader_id(ho->groups[i]);

        moved += leader != 0 && leader != n->cfg.id;
    }
    if (moved < ho->n_groups && clock_mono_ms() < ho->deadline) {
        return;
    }
    if (moved < ho->n_groups) {
        log_warn("stopping: %u of %u group(s) have a new leader after %d ms; "
                 "stopping anyway",
                 moved, ho->n_groups, HANDOFF_MS);
    } else {
        log_info("stopping: every group I led has a new leader");
    }
    uv_timer_stop(t);
    t->data = ho;
    uv_close((uv_handle_t *)t, handoff_freed);
    close_now(n);
}

/* Ask every group this node leads to hand off; true if any did (the stop
 * goes on from handoff_tick). */
static bool start_handoff(struct node *n)
{
    struct rgroup *groups[NODE_MAX_RGROUPS];
    struct handoff *ho;
    unsigned k = all_rgroups(n, groups);
    unsigned i;

    if (n->cfg.standalone) {
        return false; /* single-member groups: nobody to hand to */
    }
    ho = xcalloc(1, sizeof(*ho));
    for (i = 0; i < k; i++) {
        if (rgroup_leader_id(groups[i]) == n->cfg.id &&
            rgroup_hand_off(groups[i]) == RGROUP_OK) {
            ho->groups[ho->n_groups++] = groups[i];
        }
    }
    if (ho->n_groups == 0) {
        free(ho);
        return false;
    }
    log_info("stopping: handing off the leadership of %u group(s)",
             ho->n_groups);
    ho->n = n;
    ho->deadline = clock_mono_ms() + HANDOFF_MS;
    uv_timer_init(n->loop, &ho->timer);
    ho->timer.data = ho;
    uv_timer_start(&ho->timer, handoff_tick, HANDOFF_POLL_MS,
                   HANDOFF_POLL_MS);
    return true;
}

void node_stop(struct node *n, void (*cb)(void *data), void *data)
{
    n->stop_cb = cb;
    n->stop_data = data;
    if (!start_handoff(n)) {
        close_now(n);
    }
}

static void close_now(struct node *n)
{
    n->closing = 1;
    if (n->amqp != NULL) {
        n->closing++;
        amqp_server_close(n->amqp, edges_closed, n);
        n->amqp = NULL;
    }
    if (n->mc != NULL) {
        n->closing++;
        mc_server_close(n->mc, edges_closed, n);
        n->mc = NULL;
    }
    if (n->rpc != NULL) {
        n->closing++;
        node_rpc_close(n->rpc, edges_closed, n);
        n->rpc = NULL;
    }
    if (n->http != NULL) {
        n->closing++;
        node_http_close(n->http, edges_closed, n);
        n->http = NULL;
    }
    edges_closed(n);
}

struct node *node_new(uv_loop_t *loop, const struct node_config *cfg,
                      char *err, size_t errlen)
{
    struct node *n = xcalloc(1, sizeof(*n));
    struct cache_sm_config smc = {0};
    unsigned g;

    n->loop = loop;
    n->cfg = *cfg;
    watermark_init(&n->watermark, cfg->amqp_memory_limit,
                   cfg->amqp_disk_free_limit, cfg->data_dir);
    n->lock_fd = -1;
    if (lock_data_dir(n, err, errlen) != 0) {
        node_free(n);
        return NULL;
    }
    smc.mem_limit = cfg->memory_limit;
    smc.item_size_max = cfg->item_size_max;
    for (g = 0; g < cfg->n_groups; g++) {
        struct rgroup_config rc;
        char dir[PATH_MAX + 80];

        node_config_group(&n->cfg, g, &rc, dir, sizeof(dir));
        n->groups[g] = cache_svc_new(loop, &rc, &smc, cfg->linearizable_reads,
                                     err, errlen);
        if (n->groups[g] == NULL) {
            goto err;
        }
        if (cfg->cluster != NULL) {
            cache_svc_set_ring_seed(n->groups[g], cfg->cluster);
        }
        n->n_groups++;
    }
    if ((cfg->standalone && cfg->amqp[0] != '\0') || cfg->cluster != NULL) {
        if (start_amqp_groups(n, err, errlen) != 0) {
            goto err;
        }
    }
    if (cfg->rpc[0] != '\0') {
        n->rpc = node_rpc_new(loop, &n->cfg, n->groups, n->n_groups, err,
                              errlen);
        if (n->rpc == NULL) {
            goto err;
        }
        /* routers reach the queue and meta groups through RPC */
        node_rpc_set_amqp(n->rpc, n->mq, n->n_mq, n->meta);
        for (g = 0; g < n->n_mq; g++) {
            node_rpc_set_mq_store(n->rpc, mq_svc_name(n->mq[g]),
                                  mq_svc_store(n->mq[g]));
        }
        node_rpc_set_watermark(n->rpc, &n->watermark);
    }
    if (cfg->http[0] != '\0') {
        n->http = node_http_new(loop, &n->cfg, n->groups, n->n_groups, err,
                                errlen);
        if (n->http == NULL) {
            goto err;
        }
        node_http_set_amqp(n->http, n->mq, n->n_mq, n->meta);
    }
    if (cfg->memcached[0] != '\0' && start_memcached(n, err, errlen) != 0) {
        goto err;
    }
    if (cfg->standalone && cfg->amqp[0] != '\0' &&
        start_amqp(n, err, errlen) != 0) {
        goto err;
    }
    return n;

err:
    /* Close what started; the caller runs the loop until it is done. */
    node_stop(n, NULL, NULL);
    return NULL;
}

bool node_ready(const struct node *n)
{
    unsigned g;

    for (g = 0; g < n->n_groups; g++) {
        uint64_t leader = cache_svc_leader_id(n->groups[g]);

        if (leader == 0 ||
            (leader == n->cfg.id && !cache_svc_is_leader(n->groups[g]))) {
            return false;
        }
    }
    if (n->local != NULL && !amqp_local_ready(n->local)) {
        return false;
    }
    return n->n_groups > 0;
}
