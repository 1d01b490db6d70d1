/*
 * router: see router.h.
 */
#include "router/router.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/random_id.h"
#include "router/admin.h"
#include "router/amqp_remote.h"
#include "edge/amqp_server.h"
#include "router/backend.h"
#include "router/map_follow.h"
#include "edge/mc_server.h"

#define ADDR_MAX CLUSTER_ADDR_MAX

struct router {
    uv_loop_t *loop;
    char name[CLUSTER_NAME_MAX];
    struct backend *backend;
    struct mc_server *mc;
    struct amqp_remote *mq;
    struct amqp_server *amqp;
    struct admin *admin;
    struct map_follow *follow;
    unsigned closing_parts; /* parts whose close callback is pending */
    void (*close_cb)(void *data);
    void *close_data;
};

/* A newer cluster map from the meta group: both backends take it. A map
 * they refuse leaves them on the one they have (logged): routing on an
 * older map is safe, nodes refuse keys their shard does not own. */
static void map_changed(void *data, const struct cluster_map *map)
{
    struct router *r = data;
    char err[256];

    if (backend_map_update(r->backend, map, err, sizeof(err)) != 0) {
        log_warn("router: cache backend keeps epoch %llu: %s",
                 (unsigned long long)backend_epoch(r->backend), err);
    }
    if (r->mq != NULL &&
        amqp_remote_map_update(r->mq, map, err, sizeof(err)) != 0) {
        log_warn("router: amqp keeps its map: %s", err);
    }
}

/* mc_backend glue: the edge knows nothing but these two hooks. */
static void mc_submit(void *data, struct cache_call *call)
{
    struct router *r = data;

    backend_submit(r->backend, call);
}

static void mc_stats(void *data, struct buf *out)
{
    struct router *r = data;

    admin_stats(r->backend, out);
}

/* The AMQP edge over the cluster's queue and meta groups. 0 or -1. */
static int start_amqp(struct router *r, const struct router_config *cfg,
                      const char *addr, char *errmsg, size_t errlen)
{
    struct amqp_remote_config qc = {0};
    struct amqp_server_config ac = {0};
    struct amqp_broker broker;
    char host[ADDR_MAX];
    char sub[512];

    if (router_split_addr(addr, host, sizeof(host), &ac.port) != 0) {
        snprintf(errmsg, errlen, "amqp: bad address '%s'", addr);
        return -1;
    }
    qc.map = cfg->map;
    qc.request_timeout_ms = cfg->request_timeout_ms;
    qc.wait_for_map = true; /* until map_follow brings meta's */
    qc.router_id = random_id_nonzero(); /* 0: "no router" to mq_sm */
    r->mq = amqp_remote_new(r->loop, &qc, sub, sizeof(sub));
    if (r->mq == NULL) {
        snprintf(errmsg, errlen, "amqp: %s", sub);
        return -1;
    }
    ac.host = host;
    if (cfg->n_amqp_users > 0) {
        memcpy(ac.users, cfg->amqp_users,
               cfg->n_amqp_users * sizeof(*cfg->amqp_users));
        ac.n_users = cfg->n_amqp_users;
    }
    ac.router_id = qc.router_id; /* one id: mq_sm's leases, meta's watch */
    broker = amqp_remote_broker(r->mq);
    r->amqp = amqp_server_new(r->loop, &ac, &broker, sub, sizeof(sub));
    if (r->amqp == NULL) {
        snprintf(errmsg, errlen, "amqp %s: %s", addr, sub);
        amqp_remote_close(r->mq, NULL, NULL);
        r->mq = NULL;
        return -1;
    }
    return 0;
}

int router_split_addr(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon;
    const char *h = addr;
    size_t hl;
    char *end;
    long p;

    if (addr == NULL) {
        return -1;
    }
    if (*addr == '[') {
        const char *rb = strchr(addr, ']');
        if (rb == NULL || rb[1] != ':') {
            return -1;
        }
        h = addr + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL || strchr(addr, ':') != colon) {
            return -1; /* no port, or an unbracketed IPv6 literal */
        }
        hl = (size_t)(colon - addr);
    }
    p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || p < 0 || p > 65535) {
        return -1;
    }
    if (hl == 0 || hl >= hostlen) {
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

static void part_closed(void *data)
{
    struct router *r = data;
    void (*cb)(void *) = r->close_cb;
    void *cb_data = r->close_data;

    if (--r->closing_parts > 0) {
        return;
    }
    free(r);
    if (cb) {
        cb(cb_data);
    }
}

/* The backends go last: the edges' calls still in them then complete into
 * connections that are already closed ("into the void", mc_server.h). */
static void front_closed(void *data)
{
    struct router *r = data;

    if (--r->closing_parts > 1) {
        return;
    }
    if (r->mq != NULL) {
        r->closing_parts++;
        amqp_remote_close(r->mq, part_closed, r);
    }
    if (r->follow != NULL) {
        r->closing_parts++;
        map_follow_close(r->follow, part_closed, r);
    }
    backend_close(r->backend, part_closed, r);
}

void router_close(struct router *r, void (*cb)(void *data), void *data)
{
    r->close_cb = cb;
    r->close_data = data;
    /* backend + fronts + 1 guard, so front_closed() cannot reach the
     * backend before both fronts were asked to close */
    r->closing_parts = 2;
    if (r->admin) {
        r->closing_parts++;
        admin_close(r->admin, front_closed, r);
    }
    if (r->mc) {
        r->closing_parts++;
        mc_server_close(r->mc, front_closed, r);
    }
    if (r->amqp) {
        r->closing_parts++;
        amqp_server_close(r->amqp, front_closed, r);
    }
    front_closed(r); /* drop the guard */
}

struct router *router_new(uv_loop_t *loop,
                          const struct router_config *cfg,
                          char *errmsg,
                          size_t errlen)
{
    struct router *r = xcalloc(1, sizeof(*r));
    struct backend_config bc = {0};
    struct mc_backend mb = {0};
    struct mc_server_config mc = {0};
    struct admin_config ac = {0};
    char host[ADDR_MAX];
    char sub[512];
    const char *mc_addr = cfg->memcached ? cfg->memcached : "";
    const char *http_addr = cfg->http ? cfg->http : "";
    const char *amqp_addr = cfg->amqp ? cfg->amqp : "";
    bool http_on = false;

    r->loop = loop;
    snprintf(r->name, sizeof(r->name), "%s", cfg->name ? cfg->name : "");
    bc.map = cfg->map;
    bc.request_timeout_ms = cfg->request_timeout_ms;
    bc.attempt_timeout_ms = cfg->attempt_timeout_ms;
    bc.wait_for_map = true; /* until map_follow brings meta's */
    r->backend = backend_new(loop, &bc, sub, sizeof(sub));
    if (r->backend == NULL) {
        snprintf(errmsg, errlen, "%s", sub);
        goto err_after_alloc;
    }

    if (*mc_addr == '\0') {
        snprintf(errmsg, errlen,
                 "no memcached address (--memcached or the "
                 "map's router entry)");
        goto err_after_backend;
    }
    if (router_split_addr(mc_addr, host, sizeof(host), &mc.port) != 0) {
        snprintf(errmsg, errlen, "memcached: bad address '%s'", mc_addr);
        goto err_after_backend;
    }
    mc.host = host;
    mb.data = r;
    mb.submit = mc_submit;
    mb.stats = mc_stats;
    r->mc = mc_server_new(loop, &mc, &mb, sub, sizeof(sub));
    if (r->mc == NULL) {
        snprintf(errmsg, errlen, "%s", sub);
        goto err_after_backend;
    }

    if (*amqp_addr != '\0' &&
        start_amqp(r, cfg, amqp_addr, errmsg, errlen) != 0) {
        goto err_after_mc;
    }

    if (*http_addr != '\0') {
        if (router_split_addr(http_addr, host, sizeof(host), &ac.port) != 0) {
            snprintf(errmsg, errlen, "http: bad address '%s'", http_addr);
            goto err_after_amqp;
        }
        ac.host = host;
        r->admin = admin_new(loop, &ac, r->backend, sub, sizeof(sub));
        if (r->admin == NULL) {
            snprintf(errmsg, errlen, "http %s: %s", http_addr, sub);
            goto err_after_amqp;
        }
        http_on = true;
    }

    {
        struct map_follow_config fc = {
            .seed = cfg->map, .changed = map_changed, .data = r};
        r->follow = map_follow_new(loop, &fc, sub, sizeof(sub));
        if (r->follow == NULL) {
            snprintf(errmsg, errlen, "cluster map: %s", sub);
            goto err_after_admin;
        }
    }

    log_info(
        "ready: router %s, memcached %s, amqp %s, http %s, %u shard(s), "
        "epoch %llu",
        r->name, mc_addr, r->amqp ? amqp_addr : "off",
        http_on ? http_addr : "off",
        backend_shard_count(r->backend),
        (unsigned long long)backend_epoch(r->backend));
    return r;

err_after_admin:
    if (r->admin != NULL) {
        admin_close(r->admin, NULL, NULL);
    }
err_after_amqp:
    /* Nothing waits on these closes: the caller runs the loop dry. */
    if (r->amqp != NULL) {
        amqp_server_close(r->amqp, NULL, NULL);
        amqp_remote_close(r->mq, NULL, NULL);
    }
err_after_mc:
    mc_server_close(r->mc, NULL, NULL);
err_after_backend:
    backend_close(r->backend, NULL, NULL);
err_after_alloc:
    free(r);
    return NULL;
}
