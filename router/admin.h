/*
 * admin: the router's operational views of its backend: memcached `stats`
 * lines, Prometheus /metrics, and /healthz, plus the HTTP listener that
 * serves the last two (common/http_admin).
 *
 * The renderers are pure functions of backend_shard_info() and
 * backend_latency(): they read the status cache the backend refreshes every
 * second and never wait for a shard, so `stats` and scrapes answer at once.
 *
 * Everything runs on the loop thread.
 */
#ifndef RINGMQ_ADMIN_H
#define RINGMQ_ADMIN_H

#include <stddef.h>

#include <uv.h>

#include "common/buf.h"
#include "router/backend.h"

/*
 * Append memcached "STAT name value\r\n" lines aggregating the shards:
 *   curr_items, bytes                 sums of the shards' last status
 *   router_shards, router_epoch
 *   router_retries, router_leader_changes, router_errors   (sums)
 * and per shard "STAT shard:<name>:<field> <value>" with fields
 *   weight members healthy leader_id leader_rpc term commit_index
 *   applied_index digest curr_items bytes status_age_ms
 *   gets sets hits misses retries leader_changes errors
 *   latency_us_sum latency_count
 * (status fields are absent until the shard first answers). The edge's own
 * counters (cmd_get, get_hits, ...) come from mc_server. limit_maxbytes is
 * not reported: the shards' status does not carry it.
 * @b is borrowed for the call; @out is appended to.
 */
void admin_stats(const struct backend *b, struct buf *out);

/*
 * Append the Prometheus text exposition (format 0.0.4) of the router:
 *   ringmq_router_up                              gauge, 1
 *   ringmq_router_requests_total{shard,op}        counter
 *   ringmq_router_hits_total{shard}, ringmq_router_misses_total{shard}
 *   ringmq_router_errors_total{shard}
 *   ringmq_router_retries_total{shard}            counter
 *   ringmq_router_leader_changes_total{shard}     counter
 *   ringmq_router_request_seconds                 histogram (all shards)
 *   ringmq_shard_up{shard}                        gauge, 1 = healthy
 *   ringmq_shard_items{shard}, ringmq_shard_bytes{shard}
 *   ringmq_shard_leader_id{shard}, ringmq_shard_term{shard}
 *   ringmq_shard_applied_index{shard}, ringmq_shard_commit_index{shard}
 *   ringmq_shard_status_age_seconds{shard}        gauges
 * (The plain `up` series is Prometheus' own, set per scrape target; a
 * target exporting `up` would clash with it, hence ringmq_router_up.)
 */
void admin_metrics(const struct backend *b, struct buf *out);

/* /healthz: returns 200 with body "ok\n" when backend_healthy(), else 503
 * with the reason and a newline. */
int admin_health(const struct backend *b, struct buf *out);

struct admin_config {
    const char *host; /* IPv4 or IPv6 literal; copied */
    int port;         /* 0 = any free port */
};

struct admin;

/*
 * Serve GET/HEAD /healthz and /metrics for @b on @cfg (common/http_admin:
 * other paths 404, other methods 405). @b is borrowed until admin_close().
 * Returns NULL with a reason in @errmsg when the port cannot be bound (the
 * loop must still run once to release the listener).
 */
struct admin *admin_new(uv_loop_t *loop,
                        const struct admin_config *cfg,
                        const struct backend *b,
                        char *errmsg,
                        size_t errlen);

/* The bound port. */
int admin_port(const struct admin *a);

/* Stop serving; freed before @cb(@data) runs on the loop (@cb may be NULL).
 * Call once, before the backend is closed. */
void admin_close(struct admin *a, void (*cb)(void *data), void *data);

#endif
