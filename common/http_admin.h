/*
 * http_admin: a small HTTP/1.1 server for operational endpoints (/healthz,
 * /metrics) on the process's libuv loop.
 *
 * Requests are parsed by Debian's libhttp-parser (nodejs/http-parser 2.9);
 * this module only routes and frames. It serves GET and HEAD on exact paths
 * registered with http_admin_route() and answers everything else itself:
 *
 *   unknown path                       404
 *   method other than GET/HEAD         405 + "Allow: GET, HEAD"
 *   unparsable request, HTTP/1.1
 *   without Host                       400, then close
 *   HTTP major version other than 1    505, then close
 *   request target > max_url_bytes     414, then close
 *   headers > max_header_bytes         431, then close
 *   request body > max_header_bytes    413, then close (bodies are ignored)
 *   more than max_connections open     503, then close
 *
 * Every response carries Content-Length (HEAD: the length GET would have).
 * Connections are persistent as HTTP/1.1 and HTTP/1.0 define it
 * (http_should_keep_alive: `Connection: close` and 1.0 without keep-alive
 * close after the response). Pipelined requests are answered in order.
 *
 * Time limit: each request must arrive completely within idle_timeout_ms of
 * the connection being accepted or of the previous response being produced
 * or written, whichever is later. Trickling bytes does not extend it, so a
 * slowloris client holds a connection for one timeout at most; an idle
 * keep-alive connection is closed after one timeout. Resolution is a quarter
 * of the timeout.
 *
 * Output is bounded per connection: once about 64 KiB of responses wait for
 * the client to read, the connection stops reading and parsing until they are
 * written.
 *
 * Threading: everything runs on @loop's thread; no function here is
 * thread-safe.
 */
#ifndef RINGMQ_HTTP_ADMIN_H
#define RINGMQ_HTTP_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "common/buf.h"

/* Prometheus text exposition format 0.0.4. */
#define HTTP_ADMIN_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define HTTP_ADMIN_TEXT_CONTENT_TYPE "text/plain; charset=utf-8"

#define HTTP_ADMIN_MAX_CONNECTIONS_DEFAULT 64
#define HTTP_ADMIN_IDLE_TIMEOUT_MS_DEFAULT 10000
#define HTTP_ADMIN_MAX_URL_DEFAULT 8192
#define HTTP_ADMIN_MAX_HEADER_DEFAULT 8192
#define HTTP_ADMIN_MAX_ROUTES 32

/* Zero fields take the defaults above. */
struct http_admin_config {
    const char *host;          /* IPv4 or IPv6 literal, NULL = 127.0.0.1;
                                * copied */
    int port;                  /* 0 = any free port, see http_admin_port() */
    unsigned max_connections;  /* open connections; more get 503 */
    unsigned idle_timeout_ms;  /* see "Time limit" above */
    unsigned max_url_bytes;    /* request target; longer gets 414 */
    unsigned max_header_bytes; /* header names + values; larger gets 431 */
};

/* What a handler answers. On entry status is 200, content_type is
 * HTTP_ADMIN_TEXT_CONTENT_TYPE and body is empty (initialised). */
struct http_admin_response {
    int status;               /* 200..599 except 204 and 304 (which carry
                               * no Content-Length); anything else is sent
                               * as 500 */
    const char *content_type; /* borrowed until the handler returns */
    struct buf body;          /* owned by the server: appended to, never
                               * freed or replaced by the handler */
};

/* A route handler, for GET and HEAD of its path. Called on the loop thread,
 * synchronously while the request is parsed: it must not block and must not
 * call http_admin_close() or http_admin_route(). @path and @query ("" when
 * absent, without the '?') are borrowed for the call; they are the raw,
 * still percent-encoded bytes of the request target. For HEAD the body is
 * measured for Content-Length and dropped. */
typedef void (*http_admin_request_cb)(void *data, const char *path,
                                      const char *query,
                                      struct http_admin_response *resp);

typedef void (*http_admin_close_cb)(void *data);

struct http_admin;

/* Bind and listen on cfg->host:cfg->port. @cfg and its strings are copied.
 * Returns NULL and fills @errmsg on a bad config or when the port cannot be
 * bound; in that case the loop must still run once to release the listener
 * handle (uv_close is asynchronous). */
struct http_admin *http_admin_new(uv_loop_t *loop,
                                  const struct http_admin_config *cfg,
                                  char *errmsg, size_t errlen);

/* "/healthz?live" asks whether the process serves at all (a liveness probe:
 * restarting the process would help), plain "/healthz" whether it is ready
 * to do its job (a readiness probe: every group has a leader...). True for
 * the query "live". */
bool http_admin_is_liveness(const char *query);

/* The bound port (useful with port 0). */
int http_admin_port(const struct http_admin *a);

/* Serve @path (exact, byte-wise match of the path part of the request
 * target, e.g. "/metrics") with @cb. @path is copied; @data is borrowed
 * until the server is closed. Returns 0, -EINVAL when @path does not start
 * with '/' or @cb is NULL, -EEXIST when @path already has a route, -ENOSPC
 * beyond HTTP_ADMIN_MAX_ROUTES. */
int http_admin_route(struct http_admin *a, const char *path,
                     http_admin_request_cb cb, void *data);

/* Stop listening and close every connection at once (responses not yet
 * written are dropped). The server is freed before @cb (may be NULL) runs
 * on the loop; @data is passed to it. Handlers are not called after this
 * returns. */
void http_admin_close(struct http_admin *a, http_admin_close_cb cb,
                      void *data);

/*
 * Prometheus text exposition: a builder that appends samples to a buffer and
 * writes each metric family's "# HELP" and "# TYPE" lines once, before its
 * first sample. Emit all samples of one family together (the format wants
 * families contiguous); a family name seen again later gets its samples but
 * no second HELP/TYPE.
 *
 *   struct http_admin_metrics m;
 *   http_admin_metrics_init(&m, &resp->body);
 *   http_admin_metric(&m, "ringmq_gets_total", "counter", "Get commands.",
 *                     (const char *[]){"shard", "a", NULL}, 42);
 *   http_admin_metrics_free(&m);
 *   resp->content_type = HTTP_ADMIN_METRICS_CONTENT_TYPE;
 */
struct http_admin_metrics {
    struct buf *out;   /* borrowed */
    struct buf names;  /* families already introduced, NUL-separated */
};

/* @out is borrowed until http_admin_metrics_free(). */
void http_admin_metrics_init(struct http_admin_metrics *m, struct buf *out);
void http_admin_metrics_free(struct http_admin_metrics *m); /* keeps *out */

/* Append one sample `name{l1="v1",...} value`.
 * @type: "counter", "gauge" or "untyped". @help: free text (backslashes
 * and newlines are escaped). @labels: NULL or a NULL-terminated array of
 * alternating label names and values; values are escaped (\\, \", \n),
 * names must match [a-zA-Z_][a-zA-Z0-9_]* and not start with "__".
 * @value: integers below 2^53 print exactly; NaN and +-Inf as Prometheus
 * spells them. All strings are only read during the call.
 * Returns 0, or -EINVAL (and appends nothing) for a bad metric name
 * ([a-zA-Z_:][a-zA-Z0-9_:]*), label name or type. */
int http_admin_metric(struct http_admin_metrics *m, const char *name,
                      const char *type, const char *help,
                      const char *const *labels, double value);

/* Internal, for tests and the fuzz target: run the request engine on @data
 * as if it arrived on one fresh connection to @a, in reads of @chunk bytes
 * (0 = all at once), without sockets. Responses (with the Date header
 * removed, so output is deterministic) are appended to @out. Returns 1 when
 * the server would have closed the connection, 0 when it stays open. */
int http_admin__feed(struct http_admin *a, const char *data, size_t len,
                     size_t chunk, struct buf *out);

#endif
