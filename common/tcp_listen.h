/*
 * tcp_listen: put an initialized uv_tcp_t in listening state on an IPv4 or
 * IPv6 literal address, and tell which port it got (port 0 asks for any).
 * Shared by the edges (memcached, AMQP) that each own their listener.
 *
 * Errors: returns 0, or a libuv error code with a reason in @errmsg
 * ("bad address 'x'", "listen on HOST:PORT: address already in use"). The
 * handle stays initialized either way: the caller closes it.
 */
#ifndef RINGMQ_TCP_LISTEN_H
#define RINGMQ_TCP_LISTEN_H

#include <stddef.h>

#include <uv.h>

int tcp_listen(uv_tcp_t *tcp, const char *host, int port, int backlog,
               uv_connection_cb cb, int *bound_port, char *errmsg,
               size_t errlen);

#endif
