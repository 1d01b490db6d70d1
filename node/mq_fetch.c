/* mq_fetch: see mq_fetch.h. */
#include "node/mq_fetch.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "rpc/rpc_client.h"

#define CALL_TIMEOUT_DEFAULT_MS 10000
#define RETRY_MIN_DEFAULT_MS 100
#define RETRY_MAX_DEFAULT_MS 5000
/* Clients are kept per address; a membership change brings new ones. */
#define CLIENTS_MAX (2 * MQ_FETCH_PEERS_MAX)

struct fetch_client {
    char addr[NODE_ADDR_MAX];
    struct rpc_client *c;
};

struct mq_fetch {
    uv_loop_t *loop;
    struct mq_store *st;
    struct mq_fetch_config cfg;
    char *group;
    uv_timer_t timer;

    struct fetch_client clients[CLIENTS_MAX];
    unsigned n_clients;

    /* This round's peers, copied when it starts. */
    char peers[MQ_FETCH_PEERS_MAX][NODE_ADDR_MAX];
    unsigned n_peers;
    unsigned peer; /* the one asked now */
    unsigned backoff_ms;

    bool in_flight;
    bool waiting; /* the timer is armed */
    bool had_work;
    bool closing;

    /* What the call in flight asked. */
    uint32_t ask_seg;
    uint32_t ask_off;
    uint32_t ask_max;
    /* A record larger than a chunk starts at (big_seg, big_off). */
    uint32_t big_seg;
    uint32_t big_off;
    uint64_t big_need;

    struct mq_fetch_stats stats;
    unsigned closes_pending;
    void (*close_cb)(void *data);
    void *close_data;
};

static void step(struct mq_fetch *f);

/* ---- peers ------------------------------------------------------------- */

unsigned mq_fetch_config_peers(const struct node_config *cfg, unsigned g,
                               uint64_t self, uint64_t leader,
                               const char **out, unsigned max)
{
    const struct node_group_config *gc;
    unsigned n = 0, pass, i;

    if (g >= cfg->n_groups) {
        return 0;
    }
    gc = &cfg->groups[g];
    /* the leader in the first pass, the others in the second */
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < gc->n_members && n < max; i++) {
            const struct node_member *m = &gc->members[i];
            bool is_leader = leader != 0 && m->id == leader;

            if (m->id == self || m->rpc[0] == '\0' ||
                is_leader != (pass == 0)) {
                continue;
            }
            out[n++] = m->rpc;
        }
    }
    return n;
}

static void round_start(struct mq_fetch *f)
{
    const char *list[MQ_FETCH_PEERS_MAX];
    unsigned n = f->cfg.peers(f->cfg.peers_data, list, MQ_FETCH_PEERS_MAX);
    unsigned i;

    if (n > MQ_FETCH_PEERS_MAX) {
        n = MQ_FETCH_PEERS_MAX;
    }
    for (i = 0; i < n; i++) {
        snprintf(f->peers[i], sizeof(f->peers[i]), "%s", list[i]);
    }
    f->n_peers = n;
    f->peer = 0;
}

static struct rpc_client *client_for(struct mq_fetch *f, const char *addr)
{
    struct rpc_client_config rc = {0};
    struct fetch_client *fc;
    char err[256];
    unsigned i;

    for (i = 0; i < f->n_clients; i++) {
        if (strcmp(f->clients[i].addr, addr) == 0) {
            return f->clients[i].c;
        }
    }
    if (f->n_clients == CLIENTS_MAX) {
        /* the oldest goes: nothing is in flight while a call is made */
        rpc_client_close(f->clients[0].c, NULL, NULL);
        memmove(&f->clients[0], &f->clients[1],
                (CLIENTS_MAX - 1) * sizeof(f->clients[0]));
        f->n_clients--;
    }
    rc.address = addr;
    rc.call_timeout_ms = f->cfg.call_timeout_ms;
    fc = &f->clients[f->n_clients];
    fc->c = rpc_client_new(f->loop, &rc, err, sizeof(err));
    if (fc->c == NULL) {
        log_warn("mq_fetch %s: peer %s: %s", f->group, addr, err);
        return NULL;
    }
    /* @addr is one of f->peers, never this slot */
    memcpy(fc->addr, addr, strnlen(addr, sizeof(fc->addr) - 1));
    fc->addr[strnlen(addr, sizeof(fc->addr) - 1)] = '\0';
    f->n_clients++;
    return fc->c;
}

/* ---- the fetch --------------------------------------------------------- */

static void timer_cb(uv_timer_t *t)
{
    struct mq_fetch *f = t->data;

    f->waiting = false;
    round_start(f);
    step(f);
}

/* Every peer of the round failed (or there is none): a pause, then the
 * next round from the first. */
static void round_failed(struct mq_fetch *f)
{
    f->stats.rounds++;
    f->waiting = true;
    uv_timer_start(&f->timer, timer_cb, f->backoff_ms, 0);
    f->backoff_ms = f->backoff_ms * 2 > f->cfg.retry_max_ms
                        ? f->cfg.retry_max_ms
                        : f->backoff_ms * 2;
}

/* The peer asked now brought nothing usable: the next one. */
static void peer_failed(struct mq_fetch *f)
{
    f->stats.failures++;
    f->peer++;
    if (f->peer < f->n_peers) {
        step(f);
    } else {
        round_failed(f);
    }
}

/* Fill what @data brings, if it is whole records that check and the range
 * is still missing. 0: progress (or nothing left to do there), 1: ask the
 * same peer for more (a record larger than asked), -1: the peer failed. */
static int take(struct mq_fetch *f, const uint8_t *data, size_t len)
{
    uint32_t whole, missing;
    uint64_t need;
    int rv;

    if (mq_store_missing_at(f->st, f->ask_seg, f->ask_off, &missing) != 0) {
        return 0; /* filled or dropped meanwhile */
    }
    rv = mq_store_check_records(data, (uint32_t)len, &whole, &need);
    if (rv < 0) {
        log_warn("mq_fetch %s: peer %s sent segment %" PRIu32 " at %" PRIu32
                 " with a record that does not check",
                 f->group, f->peers[f->peer], f->ask_seg, f->ask_off);
        return -1;
    }
    if (rv > 0) {
        /* all we asked, and the first record goes on: ask for it whole */
        if (len == f->ask_max && need > f->ask_max &&
            need <= MQ_FETCH_ASK_MAX && need <= missing) {
            f->big_seg = f->ask_seg;
            f->big_off = f->ask_off;
            f->big_need = need;
            return 1;
        }
        return -1;
    }
    if (whole > missing) {
        whole = missing;
    }
    if (mq_store_fill(f->st, f->ask_seg, f->ask_off, data, whole) != 0) {
        /* our disk, not the peer: the pause before the next round helps
         * as much as anything */
        return -1;
    }
    f->stats.chunks++;
    f->stats.bytes += whole;
    return 0;
}

static void on_reply(void *data, int status, const Ringmq__RpcResponse *resp)
{
    struct mq_fetch *f = data;
    const Ringmq__MqSegmentData *d;
    int rv;

    f->in_flight = false;
    if (f->closing) {
        return;
    }
    if (status != 0 || resp->code != RINGMQ__RPC_CODE__RPC_OK ||
        resp->body_case != RINGMQ__RPC_RESPONSE__BODY_MQ_SEGMENT) {
        log_debug("mq_fetch %s: peer %s: %s", f->group, f->peers[f->peer],
                  status != 0 ? uv_strerror(status)
                              : (resp->error ? resp->error : "refused"));
        peer_failed(f);
        return;
    }
    d = resp->mq_segment;
    if (d->absent || d->data.len == 0) {
        peer_failed(f);
        return;
    }
    rv = take(f, d->data.data, d->data.len);
    if (rv < 0) {
        peer_failed(f);
        return;
    }
    f->backoff_ms = f->cfg.retry_min_ms;
    step(f);
}

static void ask(struct mq_fetch *f, uint32_t seg, uint32_t off, uint32_t len)
{
    Ringmq__RpcRequest req = RINGMQ__RPC_REQUEST__INIT;
    Ringmq__MqSegmentRead rd = RINGMQ__MQ_SEGMENT_READ__INIT;
    struct rpc_client *c = client_for(f, f->peers[f->peer]);
    uint32_t max = len < f->cfg.chunk_bytes ? len : f->cfg.chunk_bytes;

    if (seg == f->big_seg && off == f->big_off && f->big_need > max) {
        max = (uint32_t)f->big_need;
    }
    if (c == NULL) {
        peer_failed(f);
        return;
    }
    rd.seg = seg;
    rd.off = off;
    rd.max = max;
    req.group = f->group;
    req.body_case = RINGMQ__RPC_REQUEST__BODY_MQ_SEGMENT_READ;
    req.mq_segment_read = &rd;
    f->ask_seg = seg;
    f->ask_off = off;
    f->ask_max = max;
    f->in_flight = true;
    if (rpc_client_call(c, &req, f->cfg.call_timeout_ms, on_reply, f, NULL) !=
        0) {
        f->in_flight = false;
        peer_failed(f);
    }
}

static void step(struct mq_fetch *f)
{
    uint32_t seg, off, len;

    if (f->closing || f->in_flight || f->waiting) {
        return;
    }
    if (mq_store_next_missing(f->st, &seg, &off, &len) != 0) {
        f->stats.idle = true;
        if (f->had_work) {
            f->had_work = false;
            log_info("mq_fetch %s: every missing body range fetched",
                     f->group);
            if (f->cfg.on_done != NULL) {
                f->cfg.on_done(f->cfg.on_done_data);
            }
        }
        return;
    }
    f->stats.idle = false;
    f->had_work = true;
    if (f->peer >= f->n_peers) {
        round_failed(f); /* no peer known (yet) */
        return;
    }
    ask(f, seg, off, len);
}

struct mq_fetch *mq_fetch_start(uv_loop_t *loop, struct mq_store *st,
                                const struct mq_fetch_config *cfg, char *err,
                                size_t errlen)
{
    struct mq_fetch *f;

    if (cfg->group == NULL || cfg->group[0] == '\0' || cfg->peers == NULL) {
        snprintf(err, errlen, "mq_fetch: a group and a peers function");
        return NULL;
    }
    f = xcalloc(1, sizeof(*f));
    f->loop = loop;
    f->st = st;
    f->cfg = *cfg;
    f->group = xstrdup(cfg->group);
    f->cfg.group = f->group;
    if (f->cfg.chunk_bytes == 0) {
        f->cfg.chunk_bytes = MQ_FETCH_CHUNK_DEFAULT;
    }
    if (f->cfg.call_timeout_ms == 0) {
        f->cfg.call_timeout_ms = CALL_TIMEOUT_DEFAULT_MS;
    }
    if (f->cfg.retry_min_ms == 0) {
        f->cfg.retry_min_ms = RETRY_MIN_DEFAULT_MS;
    }
    if (f->cfg.retry_max_ms < f->cfg.retry_min_ms) {
        f->cfg.retry_max_ms = f->cfg.retry_min_ms > RETRY_MAX_DEFAULT_MS
                                  ? f->cfg.retry_min_ms
                                  : RETRY_MAX_DEFAULT_MS;
    }
    f->backoff_ms = f->cfg.retry_min_ms;
    f->big_seg = UINT32_MAX;
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    round_start(f);
    step(f);
    return f;
}

void mq_fetch_kick(struct mq_fetch *f)
{
    if (f->closing || f->in_flight) {
        return; /* the answer's step looks again */
    }
    if (f->waiting) {
        uv_timer_stop(&f->timer);
        f->waiting = false;
    }
    f->backoff_ms = f->cfg.retry_min_ms;
    round_start(f);
    step(f);
}

void mq_fetch_stats(const struct mq_fetch *f, struct mq_fetch_stats *out)
{
    *out = f->stats;
}

/* ---- close ------------------------------------------------------------- */

static void close_one(struct mq_fetch *f)
{
    void (*cb)(void *) = f->close_cb;
    void *data = f->close_data;

    if (--f->closes_pending > 0) {
        return;
    }
    free(f->group);
    free(f);
    if (cb != NULL) {
        cb(data);
    }
}

static void client_closed(void *data)
{
    close_one(data);
}

static void timer_closed(uv_handle_t *h)
{
    close_one(h->data);
}

void mq_fetch_close(struct mq_fetch *f, void (*cb)(void *data), void *data)
{
    unsigned i;

    f->closing = true;
    f->close_cb = cb;
    f->close_data = data;
    /* one for the timer, and one held until every close is started */
    f->closes_pending = 2 + f->n_clients;
    for (i = 0; i < f->n_clients; i++) {
        /* a call in flight completes with UV_ECANCELED, ignored */
        rpc_client_close(f->clients[i].c, client_closed, f);
    }
    uv_close((uv_handle_t *)&f->timer, timer_closed);
    close_one(f);
}

/* ---- the serving side -------------------------------------------------- */

void mq_fetch_answer(struct mq_store *st, const Ringmq__MqSegmentRead *rq,
                     Ringmq__MqSegmentData *out)
{
    uint32_t max = rq->max < MQ_FETCH_ASK_MAX ? rq->max : MQ_FETCH_ASK_MAX;
    uint32_t got;
    void *buf;

    ringmq__mq_segment_data__init(out);
    if (st == NULL || max == 0) {
        out->absent = true;
        return;
    }
    buf = xmalloc(max);
    if (mq_store_read_raw(st, rq->seg, rq->off, buf, max, &got) != 0) {
        free(buf);
        out->absent = true;
        return;
    }
    out->data.data = buf;
    out->data.len = got;
}

void mq_fetch_answer_free(Ringmq__MqSegmentData *out)
{
    free(out->data.data);
    out->data.data = NULL;
    out->data.len = 0;
}
