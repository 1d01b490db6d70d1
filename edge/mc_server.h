/*
 * mc_server: the memcached text-protocol edge.
 *
 * Listens on TCP, parses requests (mc_parse), turns each into cache_ops and
 * hands them to a backend: the local cache service in the standalone node, the
 * RPC client in the router. Replies go back in request order.
 *
 * Ordering within a connection is per key. A request is handed to the
 * backend (submit) as soon as no earlier request of the same connection
 * that has not completed yet, submitted or not, conflicts with it. Two
 * requests conflict when they share a key and at least one of them is a
 * write (every op but get/gets; gat and touch count as writes); flush_all
 * conflicts with every request that uses the backend; requests that do not
 * (version, verbosity, stats, errors) conflict with nothing. So:
 *   - "set k; get k" reads its own write, "get k; set k" does not see the
 *     set, and writes of one key are submitted one at a time, in order
 *     (each after the previous one completed);
 *   - a multi-get waits if any of its keys has an earlier pending write;
 *   - flush_all is submitted after everything before it completed, and
 *     nothing after it is submitted before it completed;
 *   - requests on different keys do not wait for each other: a get is not
 *     delayed by an unrelated set still being committed, and writes of
 *     different keys may be in the backend together (submitted in request
 *     order; the backend may complete them in any order).
 * Keys are compared by a 64-bit hash; a collision only adds a wait. A
 * request held back by a conflict also holds back the later requests that
 * conflict with it. Replies, "stats" counters included, are produced in
 * request order regardless; "quit" answers everything before it, then
 * closes. Nothing is ordered across connections.
 *
 * Errors: construction failures return NULL with @errmsg. Bad input gets the
 * reply memcached gives (ERROR, CLIENT_ERROR ..., SERVER_ERROR ...) or a
 * closed connection, never a crash.
 */
#ifndef RINGMQ_MC_SERVER_H
#define RINGMQ_MC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/buf.h"
#include "sm/cache_op.h"

struct mc_backend {
    void *data;
    /* Execute call->op; fill call->outcome and call->result (sm/cache_op.h)
     * and call call->cb exactly once, possibly before returning. op's
     * key/value stay valid until then. */
    void (*submit)(void *data, struct cache_call *call);
    /* Append "STAT name value\r\n" lines about the data behind the edge
     * (curr_items, bytes, evictions, limit_maxbytes, ...). May be NULL. */
    void (*stats)(void *data, struct buf *out);
};

struct mc_server_config {
    const char *host;       /* IPv4 or IPv6 literal; copied */
    int port;
    uint32_t item_size_max; /* 0 = CACHE_ITEM_SIZE_MAX_DEFAULT */
    unsigned max_connections; /* 0 = 4096 */
};

struct mc_server;

/* @backend is copied; backend->data borrowed for the server's lifetime. */
struct mc_server *mc_server_new(uv_loop_t *loop,
                                const struct mc_server_config *cfg,
                                const struct mc_backend *backend,
                                char *errmsg, size_t errlen);

/* The bound port (useful with port 0). */
int mc_server_port(const struct mc_server *s);

/* Stop listening and close every connection; calls still in a backend
 * complete into the void. The server is freed before @cb. */
void mc_server_close(struct mc_server *s, void (*cb)(void *data), void *data);

#endif
