/*
 * rpc_server: the node's internal RPC listener (libuv TCP).
 *
 * Per connection: read -> rpc_frame decoder -> unpack RpcRequest -> the
 * node's handler, with the request's deadline (rpc_server_req_deadline). The handler answers each request exactly once with
 * rpc_server_reply(), now or later, in any order; many requests may be in
 * flight on one connection. Replies produced in the same loop iteration are
 * coalesced into one write per connection.
 *
 *   read_cb --frames--> handler(req, msg) ... (raft, timers, ...) ...
 *                                  rpc_server_reply(req, resp)
 *                                        | encode into conn->out
 *                                        v
 *                    idle handle (once per loop turn) -> one uv_write
 *
 * A request holds a reference on its connection: when the connection closes
 * (peer gone, bad frame, rpc_server_close) the request stays valid and its
 * reply is simply dropped. Bad frames (oversized, bad flags, corrupt lz4,
 * undecodable protobuf) close that connection only, with a logged reason.
 *
 * Backpressure: a connection stops reading while it has too many requests
 * unanswered, too many request bytes unanswered or too many reply bytes
 * unsent, and resumes below the limits. What a connection holds is thus
 * bounded by about max_inflight_bytes + max_unsent, plus what one read
 * brings beyond them (a read buffer's frames, and one frame of up to
 * max_frame being received); requests are admitted whole, so a single one
 * larger than a limit still passes, alone.
 *
 * Everything runs on the loop thread.
 */
#ifndef RINGMQ_RPC_SERVER_H
#define RINGMQ_RPC_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "rpc.pb-c.h"

struct rpc_server;
struct rpc_server_req; /* one request awaiting its reply; opaque */

/*
 * Handler for one request. @req must be answered with rpc_server_reply()
 * exactly once (also after rpc_server_close(); the reply is dropped then).
 * @msg is owned by @req and stays valid until that reply; the handler may
 * keep pointers into it (key/value bytes) until then. The handler may reply
 * from inside this callback, and may call rpc_server_close().
 */
typedef void (*rpc_request_cb)(void *data,
                               struct rpc_server_req *req,
                               const Ringmq__RpcRequest *msg);

struct rpc_server_config {
    const char *host;         /* IPv4 or IPv6 literal; copied */
    int port;                 /* 0 = any free port, see rpc_server_port() */
    size_t max_frame;         /* 0 = RPC_FRAME_MAX_DEFAULT */
    size_t compress_min;      /* 0 = RPC_FRAME_COMPRESS_MIN_DEFAULT */
    unsigned max_connections; /* 0 = 1024; extra connections are closed */
    /* Per connection; 0 = the defaults below. */
    unsigned max_inflight;     /* unanswered requests */
    size_t max_inflight_bytes; /* their (decompressed) frame bytes */
    size_t max_unsent;         /* reply bytes queued */
};

/* A router sends all its requests to a node over one connection: the
 * count leaves room for its pipelined clients and its long polls (one per
 * waiting AMQP consumer); the byte bounds are what keeps a node's memory
 * bounded when its groups stop taking writes (docs/configuration.md). */
#define RPC_SERVER_MAX_INFLIGHT_DEFAULT 16384u
#define RPC_SERVER_MAX_INFLIGHT_BYTES_DEFAULT ((size_t)32 << 20)
#define RPC_SERVER_MAX_UNSENT_DEFAULT ((size_t)16 << 20)

/*
 * Binds and listens. @loop is borrowed until the close callback; @cfg is
 * copied (host included); @cb is called on the loop thread with @data
 * (borrowed for the server's lifetime). Returns NULL on failure with a
 * NUL-terminated reason in @errmsg[@errlen] (bad host, address in use, ...);
 * nothing for the caller to clean up then.
 */
struct rpc_server *rpc_server_new(uv_loop_t *loop,
                                  const struct rpc_server_config *cfg,
                                  rpc_request_cb cb,
                                  void *data,
                                  char *errmsg,
                                  size_t errlen);

/* The bound port (useful with port 0). */
int rpc_server_port(const struct rpc_server *s);

/* Connections currently open (for stats and tests). */
unsigned rpc_server_connections(const struct rpc_server *s);

/*
 * Answer @req and release it (@req is invalid afterwards). @resp is borrowed
 * for the call only: it is encoded immediately. Its id is ignored: the reply
 * carries the request's id. If the connection is gone the reply is dropped.
 * A reply too large for a frame is replaced by RPC_BAD_REQUEST with an
 * error text. Never fails.
 */
void rpc_server_reply(struct rpc_server_req *req,
                      const Ringmq__RpcResponse *resp);

/* true while the request's connection is open (a reply would be sent).
 * Lets a handler skip work nobody waits for; purely advisory. */
bool rpc_server_req_connected(const struct rpc_server_req *req);

/*
 * When the request's time is up, on this host's monotonic clock
 * (clock_mono_ms(), common/clock.h); 0 if it has no deadline (budget_ms 0).
 * The budget counts from the earliest moment the request's bytes can have
 * reached this host's socket, not from when they were read, so time spent
 * waiting unread (a paused or busy process, backpressure) counts too; it
 * may be counted from a little earlier than that (about one loop turn, or
 * since the connection was last read). The sender counted the same budget
 * from when it wrote the bytes, so this deadline is later than the
 * sender's by at most the time the bytes took through the network (and the
 * difference in rate of the two monotonic clocks), and may be earlier.
 */
uint64_t rpc_server_req_deadline(const struct rpc_server_req *req);

/*
 * Stop listening and close every connection; no handler call happens after
 * this returns. Requests still unanswered stay valid until replied (replies
 * are dropped). The server is freed before @cb(@data) runs (@cb may be NULL).
 * Call once.
 */
void rpc_server_close(struct rpc_server *s, void (*cb)(void *data), void *data);

#endif
