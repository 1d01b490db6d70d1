/*
 * rpc_client: internal RPC client to one node address (libuv TCP).
 *
 * - Lazy connect: the first call connects (resolving host names with
 *   uv_getaddrinfo, re-resolved on every attempt). A lost connection is
 *   re-established by the next call; a failed attempt (refused, unreachable,
 *   connect timeout) delays the next one by an exponential backoff
 *   (backoff_min_ms doubling up to backoff_max_ms); calls made meanwhile are
 *   queued and go out with the next attempt.
 * - Many calls in flight: the client assigns request ids and matches replies
 *   in any order. Requests produced in the same loop turn are coalesced into
 *   one write.
 * - Per-call timeouts, checked by one timer armed at the earliest deadline,
 *   after the loop turn's reads: a reply that arrived while the loop was
 *   held up past the deadline still completes its call.
 *   Each request carries the time its call has left when it is handed to
 *   the socket (RpcRequest.budget_ms), less budget_margin_ms: the node
 *   does not start a request whose time is up. A call that completes before its request was handed
 *   to the socket (timed out while connecting, say) takes the request with
 *   it: it is never sent.
 *
 * Callback guarantee: for every rpc_client_call() that returned 0, the
 * callback fires exactly once, never from inside rpc_client_call(), with
 *   status 0 and the response (borrowed: valid until the callback returns;
 *     its code may still be NOT_LEADER etc., that is the caller's business), or
 *   status < 0 and resp NULL, a negative libuv code (see uv_strerror()):
 *     UV_ETIMEDOUT     the call's timeout expired (the node may or may not
 *                      have executed it, if it was sent; see above), or
 *                      the connect timed out (never sent)
 *     UV_ECONNRESET    connection lost (EOF/reset) with the call in flight;
 *                      the node may or may not have executed it
 *     UV_ECONNREFUSED, UV_EHOSTUNREACH, UV_EAI_* ...
 *                      the connection attempt (or name lookup) failed
 *     UV_EPROTO        the node sent a bad frame; the connection was closed
 *     UV_ECANCELED     rpc_client_close()
 * A connection failure fails every call accepted before it (queued or sent).
 * Callbacks may call rpc_client_call() and rpc_client_close().
 *
 * Everything runs on the loop thread.
 */
#ifndef RINGMQ_RPC_CLIENT_H
#define RINGMQ_RPC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "rpc.pb-c.h"

struct rpc_client;

typedef void (*rpc_client_call_cb)(void *data,
                                   int status,
                                   const Ringmq__RpcResponse *resp);

struct rpc_client_config {
    /* "host:port", "[v6addr]:port" or "host" (port RPC_PORT_DEFAULT); host
     * is a name or an IP literal. Copied. */
    const char *address;
    unsigned call_timeout_ms;    /* default per-call timeout, 0 = 5000 */
    unsigned connect_timeout_ms; /* resolve + connect, 0 = 3000 */
    unsigned backoff_min_ms;     /* 0 = 50 */
    unsigned backoff_max_ms;     /* 0 = 2000 */
    size_t max_frame;            /* 0 = RPC_FRAME_MAX_DEFAULT */
    size_t compress_min;         /* 0 = RPC_FRAME_COMPRESS_MIN_DEFAULT */
    /* A request carries this much less than the time its call has left
     * (never more than half of it), so that a node's answer that its
     * budget ran out unexecuted (RPC_EXPIRED) arrives while the call
     * still waits, rather than racing its timeout. 0 = none. */
    unsigned budget_margin_ms;
};

/*
 * Creates a client; nothing is connected yet. @loop is borrowed until the
 * close callback; @cfg is copied (address included). Returns NULL with a
 * NUL-terminated reason in @errmsg[@errlen] if the address cannot be parsed.
 */
struct rpc_client *rpc_client_new(uv_loop_t *loop,
                                  const struct rpc_client_config *cfg,
                                  char *errmsg,
                                  size_t errlen);

/* The configured address ("host:port"), owned by the client. */
const char *rpc_client_address(const struct rpc_client *c);

/* Calls accepted and not yet completed. */
size_t rpc_client_pending(const struct rpc_client *c);

/*
 * Send @req. @req is borrowed for the call only (encoded immediately); its
 * id is ignored: the client assigns one, stored in *id_out if non-NULL.
 * @timeout_ms 0 = the configured call_timeout_ms. @data is passed to @cb.
 *
 * Returns 0 (then @cb fires exactly once, later), or without ever calling
 * @cb: UV_ECANCELED if the client is closing, UV_E2BIG if the request does
 * not fit in a frame uncompressed (the node's limit on a decompressed
 * payload is the frame limit too).
 */
int rpc_client_call(struct rpc_client *c,
                    const Ringmq__RpcRequest *req,
                    unsigned timeout_ms,
                    rpc_client_call_cb cb,
                    void *data,
                    uint64_t *id_out);

/*
 * Synchronous convenience for tools and tests: send @req and run the loop
 * (uv_run UV_RUN_ONCE) until its reply arrives or it fails. Must not be
 * called from a callback of the same loop. Other handles of the loop run
 * meanwhile.
 *
 * Returns 0 with *resp set to a response owned by the caller (release with
 * ringmq__rpc_response__free_unpacked(*resp, NULL)), or a negative status as
 * listed above (*resp = NULL).
 */
int rpc_client_call_sync(struct rpc_client *c,
                         const Ringmq__RpcRequest *req,
                         unsigned timeout_ms,
                         Ringmq__RpcResponse **resp);

/*
 * Fail every pending call with UV_ECANCELED (their callbacks run before this
 * returns), close the connection and the client's handles. The client is
 * freed before @cb(@data) runs (@cb may be NULL). Call once; no other
 * function may be called on @c afterwards, except rpc_client_call() from
 * within those callbacks, which returns UV_ECANCELED.
 */
void rpc_client_close(struct rpc_client *c, void (*cb)(void *data), void *data);

#endif
