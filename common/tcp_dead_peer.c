/* tcp_dead_peer: see tcp_dead_peer.h. */
#include "common/tcp_dead_peer.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"

void tcp_dead_peer(uv_tcp_t *h, unsigned timeout_ms)
{
    uv_os_fd_t fd;
    int one = 1;
    int idle_s = 1;
    int interval_s = 1;
    int count = (int)(timeout_ms / 1000u) + 1;

    if (uv_fileno((uv_handle_t *)h, &fd) != 0) {
        return;
    }
    /* keepalive first: with TCP_USER_TIMEOUT set, Linux ends a connection
     * whose probes go unanswered for that long, whatever the count */
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof(idle_s)) !=
            0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s,
                   sizeof(interval_s)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout_ms,
                   sizeof(timeout_ms)) != 0) {
        log_debug("tcp: dead peer detection not set: %s", strerror(errno));
    }
}
