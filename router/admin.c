/*
 * admin: see admin.h. HTTP framing, routing and the Prometheus builder are
 * common/http_admin's; this file only decides what the router reports.
 */
#include "router/admin.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sm/cache_op.h"
#include "common/http_admin.h"

/* ---- memcached stats -------------------------------------------------- */

void admin_stats(const struct backend *b, struct buf *out)
{
    unsigned n = backend_shard_count(b);
    uint64_t items = 0, bytes = 0, retries = 0, changes = 0, errors = 0;
    uint64_t moved = 0, moving = 0;
    uint64_t evictions = 0, limit = 0;
    struct backend_shard_info si;
    char why[128];
    unsigned i;

    for (i = 0; i < n; i++) {
        backend_shard_info(b, i, &si);
        items += si.items;
        evictions += si.evictions;
        limit += si.limit_maxbytes;
        bytes += si.bytes;
        retries += si.retries;
        moved += si.owner_refusals;
        moving += si.moving_refusals;
        changes += si.leader_changes;
        errors += si.errors;
    }
    buf_printf(out, "STAT curr_items %" PRIu64 "\r\n", items);
    buf_printf(out, "STAT bytes %" PRIu64 "\r\n", bytes);
    buf_printf(out, "STAT evictions %" PRIu64 "\r\n", evictions);
    buf_printf(out, "STAT limit_maxbytes %" PRIu64 "\r\n", limit);
    buf_printf(out, "STAT router_shards %u\r\n", n);
    buf_printf(out, "STAT router_epoch %" PRIu64 "\r\n", backend_epoch(b));
    buf_printf(out, "STAT router_retries %" PRIu64 "\r\n", retries);
    buf_printf(out, "STAT router_leader_changes %" PRIu64 "\r\n", changes);
    buf_printf(out, "STAT router_wrong_owner %" PRIu64 "\r\n", moved);
    buf_printf(out, "STAT router_moving %" PRIu64 "\r\n", moving);
    buf_printf(out, "STAT router_errors %" PRIu64 "\r\n", errors);
    buf_printf(out, "STAT router_healthy %d\r\n",
               backend_healthy(b, why, sizeof(why)) ? 1 : 0);

    for (i = 0; i < n; i++) {
        backend_shard_info(b, i, &si);
#define SHARD_U64(field, value)                                         \
    buf_printf(out, "STAT shard:%s:" field " %" PRIu64 "\r\n", si.name, \
               (uint64_t)(value))
        SHARD_U64("weight", si.weight);
        SHARD_U64("members", si.n_members);
        SHARD_U64("healthy", si.healthy);
        if (si.status_seen) {
            SHARD_U64("leader_id", si.leader_id);
            buf_printf(out, "STAT shard:%s:leader_rpc %s\r\n", si.name,
                       si.leader_rpc[0] ? si.leader_rpc : "-");
            SHARD_U64("term", si.term);
            SHARD_U64("commit_index", si.commit_index);
            SHARD_U64("applied_index", si.applied_index);
            SHARD_U64("curr_items", si.items);
            SHARD_U64("bytes", si.bytes);
            SHARD_U64("evictions", si.evictions);
            SHARD_U64("limit_maxbytes", si.limit_maxbytes);
            SHARD_U64("status_age_ms", si.status_age_ms);
        }
        SHARD_U64("gets", si.gets);
        SHARD_U64("sets", si.sets);
        SHARD_U64("hits", si.hits);
        SHARD_U64("misses", si.misses);
        SHARD_U64("retries", si.retries);
        SHARD_U64("wrong_owner", si.owner_refusals);
        SHARD_U64("moving", si.moving_refusals);
        SHARD_U64("leader_changes", si.leader_changes);
        SHARD_U64("errors", si.errors);
        SHARD_U64("latency_us_sum", si.latency_ns_sum / 1000);
        SHARD_U64("latency_count", si.latency_count);
#undef SHARD_U64
    }
}

/* ---- Prometheus --------------------------------------------------------- */

/* One per-shard family through the http_admin builder. */
#define SHARD_FAMILY(fam, type, help, expr)                             \
    do {                                                                \
        for (i = 0; i < n; i++) {                                       \
            backend_shard_info(b, i, &si);                              \
            http_admin_metric(&m, fam, type, help,                      \
                              (const char *[]){"shard", si.name, NULL}, \
                              (double)(expr));                          \
        }                                                               \
    } while (0)

/* The builder knows counters and gauges only: the histogram is written by
 * hand, in the layout Prometheus expects (cumulative buckets, +Inf, sum,
 * count). */
static void latency_histogram(const struct backend *b, struct buf *out)
{
    static const char name[] = "ringmq_router_request_seconds";
    uint64_t counts[BACKEND_LATENCY_BUCKETS + 1];
    uint64_t sum_ns, count, cum = 0;
    unsigned k;

    backend_latency(b, counts, &sum_ns, &count);
    buf_printf(out,
               "# HELP %s Time from submit to completion of cache ops, "
               "retries included.\n# TYPE %s histogram\n",
               name, name);
    for (k = 0; k < BACKEND_LATENCY_BUCKETS; k++) {
        cum += counts[k];
        buf_printf(out, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
                   backend_latency_bounds[k], cum);
    }
    cum += counts[BACKEND_LATENCY_BUCKETS];
    buf_printf(out, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
    buf_printf(out, "%s_sum %.9f\n", name, (double)sum_ns / 1e9);
    buf_printf(out, "%s_count %" PRIu64 "\n", name, count);
}

void admin_metrics(const struct backend *b, struct buf *out)
{
    unsigned n = backend_shard_count(b);
    struct http_admin_metrics m;
    struct backend_shard_info si;
    unsigned i, k;

    http_admin_metrics_init(&m, out);
    http_admin_metric(&m, "ringmq_router_up", "gauge",
                      "1 while the router process serves.", NULL, 1);
    for (i = 0; i < n; i++) {
        backend_shard_info(b, i, &si);
        for (k = 0; k < CACHE_OP__COUNT; k++) {
            http_admin_metric(
                &m, "ringmq_router_requests_total", "counter",
                "Cache ops completed by the router, by shard and op.",
                (const char *[]){"shard", si.name, "op",
                                 cache_op_name((enum cache_op_type)k), NULL},
                (double)si.requests[k]);
        }
    }
    SHARD_FAMILY("ringmq_router_hits_total", "counter",
                 "Gets answered with a value.", si.hits);
    SHARD_FAMILY("ringmq_router_misses_total", "counter",
                 "Gets answered not found.", si.misses);
    SHARD_FAMILY("ringmq_router_errors_total", "counter",
                 "Ops completed with a server or client error by the router.",
                 si.errors);
    SHARD_FAMILY("ringmq_router_retries_total", "counter",
                 "RPC attempts beyond the first.", si.retries);
    SHARD_FAMILY("ringmq_router_wrong_owner_total", "counter",
                 "Keys refused by a shard that named another owner; retried "
                 "there.",
                 si.owner_refusals);
    SHARD_FAMILY("ringmq_router_moving_total", "counter",
                 "Keys refused because their arc was moving; retried.",
                 si.moving_refusals);
    SHARD_FAMILY("ringmq_router_leader_changes_total", "counter",
                 "Times the router's leader guess moved to another member.",
                 si.leader_changes);
    latency_histogram(b, out);
    SHARD_FAMILY("ringmq_shard_up", "gauge",
                 "1 when the shard answered a recent status poll and has a "
                 "leader.",
                 si.healthy);
    SHARD_FAMILY("ringmq_shard_items", "gauge",
                 "Items in the shard (last status answer).", si.items);
    SHARD_FAMILY("ringmq_shard_bytes", "gauge",
                 "Bytes of items in the shard (last status answer).", si.bytes);
    SHARD_FAMILY("ringmq_shard_evictions_total", "counter",
                 "Items evicted by the shard's memory limit (last status "
                 "answer).",
                 si.evictions);
    SHARD_FAMILY("ringmq_shard_leader_id", "gauge",
                 "Raft id of the shard's leader, 0 when unknown.",
                 si.leader_id);
    SHARD_FAMILY("ringmq_shard_term", "gauge", "Raft term of the shard.",
                 si.term);
    SHARD_FAMILY("ringmq_shard_applied_index", "gauge",
                 "Last applied Raft index (answering member).",
                 si.applied_index);
    SHARD_FAMILY("ringmq_shard_commit_index", "gauge",
                 "Raft commit index (answering member).", si.commit_index);
    SHARD_FAMILY("ringmq_shard_status_age_seconds", "gauge",
                 "Seconds since the shard last answered a status poll "
                 "(+Inf: never).",
                 si.status_seen ? (double)si.status_age_ms / 1000.0 : INFINITY);
    http_admin_metrics_free(&m);
}

#undef SHARD_FAMILY

int admin_health(const struct backend *b, struct buf *out)
{
    char why[256];

    if (backend_healthy(b, why, sizeof(why))) {
        buf_append_str(out, "ok\n");
        return 200;
    }
    buf_printf(out, "%s\n", why);
    return 503;
}

/* ---- HTTP --------------------------------------------------------------- */

struct admin {
    struct http_admin *http;
    const struct backend *b;
    void (*close_cb)(void *data);
    void *close_data;
};

static void on_metrics(void *data,
                       const char *path,
                       const char *query,
                       struct http_admin_response *resp)
{
    struct admin *a = data;

    (void)path;
    (void)query;
    resp->content_type = HTTP_ADMIN_METRICS_CONTENT_TYPE;
    admin_metrics(a->b, &resp->body);
}

static void on_healthz(void *data,
                       const char *path,
                       const char *query,
                       struct http_admin_response *resp)
{
    struct admin *a = data;

    (void)path;
    if (http_admin_is_liveness(query)) {
        buf_append_str(&resp->body, "live\n");
        return;
    }
    resp->status = admin_health(a->b, &resp->body);
}

struct admin *admin_new(uv_loop_t *loop,
                        const struct admin_config *cfg,
                        const struct backend *b,
                        char *errmsg,
                        size_t errlen)
{
    struct http_admin_config hc = {0};
    struct admin *a = xcalloc(1, sizeof(*a));

    a->b = b;
    hc.host = cfg->host;
    hc.port = cfg->port;
    a->http = http_admin_new(loop, &hc, errmsg, errlen);
    if (a->http == NULL) {
        goto err_after_alloc;
    }
    if (http_admin_route(a->http, "/metrics", on_metrics, a) != 0 ||
        http_admin_route(a->http, "/healthz", on_healthz, a) != 0) {
        snprintf(errmsg, errlen, "admin: cannot register routes");
        goto err_after_http;
    }
    return a;

err_after_http:
    http_admin_close(a->http, NULL, NULL);
err_after_alloc:
    free(a);
    return NULL;
}

int admin_port(const struct admin *a)
{
    return http_admin_port(a->http);
}

static void on_http_closed(void *data)
{
    struct admin *a = data;
    void (*cb)(void *) = a->close_cb;
    void *cb_data = a->close_data;

    free(a);
    if (cb) {
        cb(cb_data);
    }
}

void admin_close(struct admin *a, void (*cb)(void *data), void *data)
{
    a->close_cb = cb;
    a->close_data = data;
    http_admin_close(a->http, on_http_closed, a);
}
