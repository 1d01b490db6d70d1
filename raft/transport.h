/*
 * rtransport: canonical/raft's TCP transport, taught host names.
 *
 * raft 0.15's raft_uv_tcp takes IPv4 literals only (docs/raft.md), and it
 * keeps members' addresses in the log's configuration. Containers get a new
 * IP on every restart but keep a stable DNS name (a compose service, a
 * Kubernetes StatefulSet pod), so the configuration holds "name:port" and
 * this wrapper resolves the name on every connect (libuv's threadpool, so
 * the loop never blocks) and hands the inner transport "a.b.c.d:port". An
 * IPv4 literal is passed through untouched. Our own listener binds to the
 * literal when the address is one, else to 0.0.0.0 on its port. Outbound
 * connections give up on data unacknowledged for 5 s (TCP_USER_TIMEOUT,
 * keepalive): raft never reads them, and without this a peer gone from
 * under its old IP would hold raft's writes for many minutes. They also
 * run with TCP_NODELAY, which libraft does not set: with Nagle's algorithm
 * each pipelined AppendEntries waited for the follower's delayed ACK.
 *
 * Ownership: the wrapper owns the inner raft_uv_tcp transport; raft owns the
 * calls (init, listen, connect, close) as for any raft_uv_transport, and
 * rtransport_release() frees the wrapper after raft's io has closed it.
 *
 * Errors: rtransport_init returns 0 or a RAFT_* code; a name that does not
 * resolve fails that connect attempt with RAFT_NOCONNECTION, and raft
 * retries it after its connect retry delay, as for a refused connection.
 */
#ifndef RINGMQ_RAFT_TRANSPORT_H
#define RINGMQ_RAFT_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

/* Set up @t as the wrapper; @address is this replica's own raft address
 * ("name:port" or "a.b.c.d:port"), from which the bind address comes. */
int rtransport_init(struct raft_uv_transport *t, uv_loop_t *loop,
                    const char *address);

/* Free what rtransport_init allocated, after raft closed the transport. */
void rtransport_release(struct raft_uv_transport *t);

/* "host:port" -> @host, @port; 0 or -1 (no colon, empty host, bad port). */
int rtransport_split(const char *address, char *host, size_t hostlen,
                     int *port);

#endif
