/*
 * node: see node.h.
 *
 * Start-up order: lock the data directory (two processes on one Raft log would
 * corrupt it), start every group, then the listeners. Stop order is the
 * reverse: listeners first so no new work arrives, then the groups, whose
 * pending calls complete with CACHE_UNAVAILABLE.
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
#include "node/cache_svc.h"
#include "node/node_http.h"
#include "node/node_rpc.h"
#include "router/mc_server.h"

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
    unsigned closing; /* things still closing */
    void (*stop_cb)(void *data);
    void *stop_data;
};

static int mkdir_p(const char *path, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    char *p;

    snprintf(tmp, sizeof(tmp), "%s", path);
    for (p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
                goto fail;
            }
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
        goto fail;
    }
    return 0;
fail:
    snprintf(err, errlen, "data directory '%s': cannot create '%s': %s", path,
             tmp, strerror(errno));
    return -1;
}

static int lock_data_dir(struct node *n, char *err, size_t errlen)
{
    char path[PATH_MAX + 16];
    struct stat st;

    if (mkdir_p(n->cfg.data_dir, err, errlen) != 0) {
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
    if (flock(n->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen,
                 "data directory '%s' is in use by another process",
                 n->cfg.data_dir);
        close(n->lock_fd);
        n->lock_fd = -1;
        return -1;
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

void node_stop(struct node *n, void (*cb)(void *data), void *data)
{
    n->stop_cb = cb;
    n->stop_data = data;
    n->closing = 1;
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
        n->groups[g] = cache_svc_new(loop, &rc, &smc, err, errlen);
        if (n->groups[g] == NULL) {
            goto err;
        }
        n->n_groups++;
    }
    if (cfg->rpc[0] != '\0') {
        n->rpc = node_rpc_new(loop, &n->cfg, n->groups, n->n_groups, err,
                              errlen);
        if (n->rpc == NULL) {
            goto err;
        }
    }
    if (cfg->http[0] != '\0') {
        n->http = node_http_new(loop, &n->cfg, n->groups, n->n_groups, err,
                                errlen);
        if (n->http == NULL) {
            goto err;
        }
    }
    if (cfg->memcached[0] != '\0' && start_memcached(n, err, errlen) != 0) {
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
    return n->n_groups > 0;
}
