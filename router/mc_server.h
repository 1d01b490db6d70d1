/*
 * mc_server: the memcached text-protocol edge.
 *
 * Listens on TCP, parses requests (mc_parse), turns each into cache_ops and
 * hands them to a backend: the local cache service in the standalone node, the
 * RPC client in the router. Replies go back in request order. Requests of one
 * connection are dispatched in runs: consecutive reads together, consecutive
 * writes together, and a run starts only when the previous one completed, so
 * a pipelined "set k; get k" always reads its own write.
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
#include "common/cache_op.h"

struct mc_backend {
    void *data;
    /* Execute call->op; fill call->result and call call->cb exactly once,
     * possibly before returning. op's key/value stay valid until then. */
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
