/*
 * map_follow: see map_follow.h.
 *
 * One rpc_client, to the meta member being asked; moving to another
 * member closes it and opens the next. At most one watch is in flight; a
 * timer paces retries. Closing: the client's close and the timer's close
 * are both awaited before the free.
 */
#include "router/map_follow.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "proto/map_pb.h"
#include "proto/rpc_frame.h"
#include "rpc/rpc_client.h"

struct map_follow {
    uv_loop_t *loop;
    struct map_follow_config cfg;
    struct cluster_map map;
    bool adopted; /* the meta group's map replaced the seed */
    unsigned member;
    struct rpc_client *client;
    bool inflight;
    uv_timer_t timer;
    struct map_follow_counters counters;
    bool closing;
    unsigned open; /* the timer and the client, not yet closed */
    void (*close_cb)(void *data);
    void *close_data;
};

static void watch_send(struct map_follow *f);

static void maybe_free(struct map_follow *f)
{
    void (*cb)(void *) = f->close_cb;
    void *data = f->close_data;

    if (!f->closing || f->open > 0 || f->inflight) {
        return;
    }
    cluster_map_clear(&f->map);
    free(f);
    if (cb != NULL) {
        cb(data);
    }
}

static void on_client_closed(void *data)
{
    struct map_follow *f = data;

    f->open--;
    maybe_free(f);
}

static void drop_client(struct map_follow *f)
{
    if (f->client != NULL) {
        rpc_client_close(f->client, on_client_closed, f);
        f->client = NULL;
    }
}

static void on_timer(uv_timer_t *t)
{
    watch_send(t->data);
}

static void later(struct map_follow *f, unsigned ms)
{
    if (!f->closing) {
        uv_timer_start(&f->timer, on_timer, ms, 0);
    }
}

/* The member failed us: the next one, after a pause. */
static void next_member(struct map_follow *f)
{
    f->counters.failures++;
    drop_client(f);
    f->member = f->map.n_meta > 0 ? (f->member + 1) % f->map.n_meta : 0;
    later(f, MAP_FOLLOW_RETRY_MS);
}

/* Apply @d to a copy; adopt it when valid and newer. */
static void take(struct map_follow *f, const struct map_delta *d)
{
    struct cluster_map next;
    char err[256];

    if (!f->adopted && !d->full) {
        return; /* asked for the whole map: an old replica's "nothing" */
    }
    if (f->adopted && d->epoch <= f->map.epoch) {
        return;
    }
    cluster_map_init(&next);
    if (f->adopted) {
        cluster_map_copy(&next, &f->map);
    }
    if (map_delta_apply(&next, d) != 0 ||
        cluster_map_validate(&next, err, sizeof(err)) != 0) {
        log_warn("router: cluster map epoch %" PRIu64
                 " from meta not taken: %s; asking for the whole map",
                 d->epoch, d->full ? err : "delta for another epoch");
        cluster_map_clear(&next);
        f->adopted = false; /* the next watch asks for all of it */
        return;
    }
    if (next.epoch != f->map.epoch || !f->adopted) {
        log_info("router: cluster map epoch %" PRIu64 " (%u shards)",
                 next.epoch, next.n_shards);
    }
    cluster_map_clear(&f->map);
    f->map = next;
    f->adopted = true;
    f->counters.changes++;
    if (f->member >= f->map.n_meta) {
        f->member = 0;
    }
    f->cfg.changed(f->cfg.data, &f->map);
}

static void on_watch(void *data, int status, const Ringmq__RpcResponse *resp)
{
    struct map_follow *f = data;
    struct map_delta d;

    f->inflight = false;
    if (f->closing) {
        maybe_free(f);
        return;
    }
    if (status < 0 || rpc_outcome(resp->code) != OUTCOME_OK ||
        resp->body_case != RINGMQ__RPC_RESPONSE__BODY_MAP_DELTA) {
        log_debug("router: map watch at meta member %u: %s", f->member,
                  status < 0 ? uv_strerror(status)
                             : (resp->error ? resp->error : "refused"));
        next_member(f);
        return;
    }
    f->counters.answers++;
    map_delta_init(&d);
    if (map_pb_delta_from(resp->map_delta, &d) == 0) {
        take(f, &d);
    } else {
        log_warn("router: undecodable map delta from meta");
    }
    map_delta_clear(&d);
    /* an empty map (a new cluster before its first leader) or a replica
     * behind us: the long poll waits there, so ask again at once */
    watch_send(f);
}

static void watch_send(struct map_follow *f)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__MapWatch w = RINGMQ__MAP_WATCH__INIT;
    char err[256];
    int rv;

    if (f->closing || f->inflight) {
        return;
    }
    if (f->client == NULL) {
        struct rpc_client_config cc = {0};

        if (f->map.n_meta == 0) {
            return;
        }
        cc.address = f->map.meta[f->member].rpc;
        cc.connect_timeout_ms = 1000;
        f->client = rpc_client_new(f->loop, &cc, err, sizeof(err));
        if (f->client == NULL) {
            log_warn("router: meta member %s: %s", cc.address, err);
            f->member = (f->member + 1) % f->map.n_meta;
            later(f, MAP_FOLLOW_RETRY_MS);
            return;
        }
        f->open++;
    }
    w.known_epoch = f->adopted ? f->map.epoch : 0;
    w.wait_ms = MAP_FOLLOW_WAIT_MS;
    req.group = MAP_SM_META;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_MAP_WATCH;
    req.map_watch = &w;
    rv = rpc_client_call(f->client, &req, MAP_FOLLOW_WAIT_MS + 5000, on_watch,
                         f, NULL);
    if (rv != 0) {
        next_member(f);
        return;
    }
    f->inflight = true;
}

struct map_follow *map_follow_new(uv_loop_t *loop,
                                  const struct map_follow_config *cfg,
                                  char *errmsg, size_t errlen)
{
    struct map_follow *f;

    if (cfg->seed == NULL || cfg->seed->n_meta == 0) {
        snprintf(errmsg, errlen, "the cluster map names no meta members");
        return NULL;
    }
    f = xcalloc(1, sizeof(*f));
    f->loop = loop;
    f->cfg = *cfg;
    f->cfg.seed = NULL;
    cluster_map_init(&f->map);
    cluster_map_copy(&f->map, cfg->seed);
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    f->open = 1;
    later(f, 0);
    return f;
}

const struct cluster_map *map_follow_map(const struct map_follow *f)
{
    return &f->map;
}

void map_follow_counters(const struct map_follow *f,
                         struct map_follow_counters *out)
{
    *out = f->counters;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct map_follow *f = h->data;

    f->open--;
    maybe_free(f);
}

void map_follow_close(struct map_follow *f, void (*cb)(void *data),
                      void *data)
{
    f->closing = true;
    f->close_cb = cb;
    f->close_data = data;
    uv_timer_stop(&f->timer);
    uv_close((uv_handle_t *)&f->timer, on_timer_closed);
    drop_client(f); /* fails a watch in flight with UV_ECANCELED */
}
