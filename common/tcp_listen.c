/*
 * tcp_listen: see tcp_listen.h.
 */
#include "common/tcp_listen.h"

#include <stdio.h>

int tcp_listen(uv_tcp_t *tcp, const char *host, int port, int backlog,
               uv_connection_cb cb, int *bound_port, char *errmsg,
               size_t errlen)
{
    struct sockaddr_storage addr;
    struct sockaddr_storage bound;
    int namelen = sizeof(bound);
    int rc;

    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0) {
        snprintf(errmsg, errlen, "bad address '%s'", host);
        return UV_EINVAL;
    }
    rc = uv_tcp_bind(tcp, (struct sockaddr *)&addr, 0);
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *)tcp, backlog, cb);
    }
    if (rc == 0) {
        rc = uv_tcp_getsockname(tcp, (struct sockaddr *)&bound, &namelen);
    }
    if (rc != 0) {
        snprintf(errmsg, errlen, "listen on %s:%d: %s", host, port,
                 uv_strerror(rc));
        return rc;
    }
    *bound_port = bound.ss_family == AF_INET6
                      ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                      : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}
