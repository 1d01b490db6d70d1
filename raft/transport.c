/*
 * rtransport: see transport.h.
 *
 *   connect(name:port) --uv_getaddrinfo--> on_resolved --> inner connect
 *                                           (a.b.c.d:port)  --> raft's cb
 *   close --> cancel pending lookups (their cbs get RAFT_CANCELED)
 *         --> inner close --> once both are done, raft's close cb
 */
#include "raft/transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/invariant.h"
#include "common/log.h"
#include "common/tcp_dead_peer.h"

/* One connect on its way: raft's request and callback, and ours, handed
 * to the inner transport, so that the socket can be set up before raft
 * gets it. */
struct attempt {
    struct raft_uv_connect inner_req;
    struct raft_uv_connect *req;
    raft_uv_connect_cb cb;
};

struct lookup {
    uv_getaddrinfo_t req;
    struct rtransport *rt;
    struct attempt *attempt;
    raft_id id;
    int port;
    struct lookup *next;
};

struct rtransport {
    struct raft_uv_transport inner;
    struct raft_uv_transport *outer;
    uv_loop_t *loop;
    struct lookup *lookups; /* in flight */
    bool closing;
    bool inner_closed;
    raft_uv_transport_close_cb close_cb;
};

int rtransport_split(const char *address, char *host, size_t hostlen,
                     int *port)
{
    const char *colon = strrchr(address, ':');
    char *end;
    long p;

    if (colon == NULL || colon == address ||
        (size_t)(colon - address) >= hostlen) {
        return -1;
    }
    p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || p < 0 || p > 65535) {
        return -1;
    }
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    *port = (int)p;
    return 0;
}

static bool is_ipv4(const char *host)
{
    struct in_addr a;

    return inet_pton(AF_INET, host, &a) == 1;
}

/* Raft only writes on the connections it opens and never reads them, so a
 * peer that went away unseen (its container re-created under a new IP, a
 * host gone) shows up only as writes that are never acknowledged, and TCP
 * would retransmit them for many minutes before raft reconnects (and
 * resolves the name again): common/tcp_dead_peer fails them within
 * seconds.
 *
 * libraft 0.15 leaves Nagle's algorithm on. A leader writes the next
 * AppendEntries while the previous one is still unacknowledged, so Nagle
 * holds it until the follower's delayed ACK (40 ms on Linux): every commit
 * under load waited that long. TCP_NODELAY sends each message at once. */
static void attempt_done(struct raft_uv_connect *inner_req,
                         struct uv_stream_s *stream, int status)
{
    struct attempt *a = inner_req->data;
    struct raft_uv_connect *req = a->req;
    raft_uv_connect_cb cb = a->cb;

    free(a);
    if (status == 0 && stream != NULL) {
        uv_tcp_nodelay((uv_tcp_t *)stream, 1);
        tcp_dead_peer((uv_tcp_t *)stream, TCP_DEAD_PEER_MS_DEFAULT);
    }
    cb(req, stream, status);
}

static struct rtransport *of(struct raft_uv_transport *t)
{
    return t->impl;
}

static int t_init(struct raft_uv_transport *t, raft_id id,
                  const char *address)
{
    struct rtransport *rt = of(t);

    rt->inner.data = t->data;
    return rt->inner.init(&rt->inner, id, address);
}

static int t_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct rtransport *rt = of(t);

    /* raft's accept callback finds its io through transport->data */
    rt->inner.data = t->data;
    return rt->inner.listen(&rt->inner, cb);
}

static void unlink_lookup(struct lookup *l)
{
    struct lookup **p = &l->rt->lookups;

    while (*p != l) {
        INVARIANT(*p != NULL); /* every lookup in flight is listed */
        p = &(*p)->next;
    }
    *p = l->next;
}

static void maybe_closed(struct rtransport *rt)
{
    if (rt->closing && rt->inner_closed && rt->lookups == NULL &&
        rt->close_cb != NULL) {
        raft_uv_transport_close_cb cb = rt->close_cb;

        rt->close_cb = NULL;
        cb(rt->outer);
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res)
{
    struct lookup *l = req->data;
    struct rtransport *rt = l->rt;
    char ip[INET_ADDRSTRLEN];
    char addr[INET_ADDRSTRLEN + 8];
    int rv = RAFT_NOCONNECTION;

    unlink_lookup(l);
    if (rt->closing) {
        rv = RAFT_CANCELED;
    } else if (status == 0 && res != NULL &&
               inet_ntop(AF_INET,
                         &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip,
                         sizeof(ip)) != NULL) {
        snprintf(addr, sizeof(addr), "%s:%d", ip, l->port);
        rt->inner.data = rt->outer->data;
        rv = rt->inner.connect(&rt->inner, &l->attempt->inner_req, l->id,
                               addr, attempt_done);
        if (rv == 0) {
            goto out; /* the inner transport calls attempt_done */
        }
    } else {
        log_debug("raft transport: cannot resolve peer %llu: %s",
                  (unsigned long long)l->id,
                  status ? uv_strerror(status) : "no IPv4 address");
    }
    l->attempt->cb(l->attempt->req, NULL, rv);
    free(l->attempt);
out:
    if (res != NULL) {
        uv_freeaddrinfo(res);
    }
    free(l);
    maybe_closed(rt);
}

static int t_connect(struct raft_uv_transport *t, struct raft_uv_connect *req,
                     raft_id id, const char *address, raft_uv_connect_cb cb)
{
    struct rtransport *rt = of(t);
    struct addrinfo hints;
    struct attempt *a;
    struct lookup *l;
    char host[256];
    int port;
    int rv;

    rt->inner.data = t->data;
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return RAFT_NOMEM;
    }
    a->req = req;
    a->cb = cb;
    a->inner_req.data = a;
    if (rtransport_split(address, host, sizeof(host), &port) != 0 ||
        is_ipv4(host)) {
        rv = rt->inner.connect(&rt->inner, &a->inner_req, id, address,
                               attempt_done);
        if (rv != 0) {
            free(a);
        }
        return rv;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        free(a);
        return RAFT_NOMEM;
    }
    l->rt = rt;
    l->attempt = a;
    l->id = id;
    l->port = port;
    l->req.data = l;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET; /* the inner transport speaks IPv4 only */
    hints.ai_socktype = SOCK_STREAM;
    rv = uv_getaddrinfo(rt->loop, &l->req, on_resolved, host, NULL, &hints);
    if (rv != 0) {
        free(a);
        free(l);
        return RAFT_NOCONNECTION;
    }
    l->next = rt->lookups;
    rt->lookups = l;
    return 0;
}

static void inner_closed(struct raft_uv_transport *inner)
{
    struct rtransport *rt = (struct rtransport *)inner; /* first member */

    rt->inner_closed = true;
    maybe_closed(rt);
}

static void t_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    struct rtransport *rt = of(t);
    struct lookup *l;

    INVARIANT(!rt->closing); /* raft closes its transport once */
    rt->closing = true;
    rt->close_cb = cb;
    /* A lookup already running in the threadpool cannot be cancelled: its
     * callback then sees `closing` and reports RAFT_CANCELED. */
    for (l = rt->lookups; l != NULL; l = l->next) {
        uv_cancel((uv_req_t *)&l->req);
    }
    rt->inner.close(&rt->inner, inner_closed);
}

int rtransport_init(struct raft_uv_transport *t, uv_loop_t *loop,
                    const char *address)
{
    struct rtransport *rt;
    char host[256];
    char bind[300];
    int port;
    int rv;

    if (rtransport_split(address, host, sizeof(host), &port) != 0) {
        return RAFT_INVALID;
    }
    rt = calloc(1, sizeof(*rt));
    if (rt == NULL) {
        return RAFT_NOMEM;
    }
    rv = raft_uv_tcp_init(&rt->inner, loop);
    if (rv != 0) {
        free(rt);
        return rv;
    }
    snprintf(bind, sizeof(bind), "%s:%d", is_ipv4(host) ? host : "0.0.0.0",
             port);
    rv = raft_uv_tcp_set_bind_address(&rt->inner, bind);
    if (rv != 0) {
        raft_uv_tcp_close(&rt->inner);
        free(rt);
        return rv;
    }
    rt->outer = t;
    rt->loop = loop;
    memset(t->errmsg, 0, sizeof(t->errmsg));
    t->impl = rt;
    t->init = t_init;
    t->listen = t_listen;
    t->connect = t_connect;
    t->close = t_close;
    return 0;
}

void rtransport_release(struct raft_uv_transport *t)
{
    struct rtransport *rt = of(t);

    /* released after the close finished, or before any connect */
    INVARIANT(rt->lookups == NULL);
    raft_uv_tcp_close(&rt->inner);
    free(rt);
}
