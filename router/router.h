/*
 * router: the ringmq-router process wiring: the cluster map's shards behind
 * a backend (ring + RPC + leader tracking), the memcached edge in front of
 * it, the AMQP edge over amqp_remote (queue and meta groups over RPC), and
 * the admin HTTP endpoints.
 *
 *   memcached clients --> mc_server --submit--> backend --RPC--> shard leaders
 *                             |  stats hook         ^ status poll (1 s)
 *                             +--> admin_stats -----+
 *   HTTP /healthz /metrics --> admin ---------------+
 *   AMQP clients --> amqp_server --broker--> amqp_remote --RPC--> "<shard>.mq"
 *                                                       \--> "meta" group
 *
 * Errors: router_new() returns NULL with a reason in @errmsg; the loop must
 * then still run until it has no handles (parts already started close
 * asynchronously), as ringmq-node does.
 */
#ifndef RINGMQ_ROUTER_H
#define RINGMQ_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "proto/map_yaml.h"
#include "edge/amqp_server.h"

struct router_config {
    const struct cluster_map *map; /* copied */
    const char *name;              /* this router's name, for logs; copied */
    /* "HOST:PORT" or "[V6]:PORT", IP literals; "" or NULL = off. Copied. */
    const char *memcached;
    const char *amqp;
    const char *http;
    unsigned request_timeout_ms; /* 0 = BACKEND_REQUEST_TIMEOUT_MS_DEFAULT */
    unsigned attempt_timeout_ms; /* 0 = BACKEND_ATTEMPT_TIMEOUT_MS_DEFAULT */
    /* AMQP accounts (edge/amqp_users); 0 users = guest, loopback only.
     * Copied. */
    const struct amqp_user *amqp_users;
    unsigned n_amqp_users;
};

struct router;

/*
 * Start serving: build the backend, listen for memcached clients, AMQP
 * clients (when cfg->amqp is set) and HTTP. Logs one line
 *   "ready: router NAME, memcached ADDR, amqp ADDR|off, http ADDR|off,
 *    N shard(s), epoch E"
 * A build without common/http_admin.c logs a warning instead of serving
 * HTTP. @loop is borrowed until the close callback.
 */
struct router *router_new(uv_loop_t *loop,
                          const struct router_config *cfg,
                          char *errmsg,
                          size_t errlen);

/* Split "HOST:PORT" / "[V6]:PORT" into @host[@hostlen] and @port. Returns 0,
 * or -1 when @addr is malformed or the port is not 0..65535. */
int router_split_addr(const char *addr, char *host, size_t hostlen, int *port);

/*
 * Stop: close the HTTP and memcached listeners and their connections, then
 * the backend (calls still in flight complete with OUTCOME_UNAVAILABLE into
 * the closed edge). The router is freed before @cb(@data) runs on the loop
 * (@cb may be NULL). Call once.
 */
void router_close(struct router *r, void (*cb)(void *data), void *data);

#endif
