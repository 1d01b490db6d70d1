/*
 * tcp_dead_peer: make a connection fail within a few seconds once its peer
 * stops acknowledging (a partition, a host or container gone without a
 * reset), instead of the many minutes of TCP's exponential retransmit
 * backoff. After such a stall TCP would also send the next retransmit long
 * after the network is back: on a connection that carries a long poll
 * (a router's CHECKOUT), deliveries waited that long after a partition
 * healed. Failing the connection lets its owner reconnect at once.
 *
 * Sets TCP_USER_TIMEOUT (data unacknowledged for @timeout_ms fails the
 * connection) and keepalive probes every second after a second of silence
 * (an idle connection to a dead peer fails within the same bound). Best
 * effort: a failure leaves the connection as it was (logged at debug).
 */
#ifndef RINGMQ_TCP_DEAD_PEER_H
#define RINGMQ_TCP_DEAD_PEER_H

#include <uv.h>

#define TCP_DEAD_PEER_MS_DEFAULT 5000

void tcp_dead_peer(uv_tcp_t *h, unsigned timeout_ms);

#endif
