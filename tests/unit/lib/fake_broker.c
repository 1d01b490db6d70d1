/*
 * fake_broker: see fake_broker.h.
 */
#include "tests/unit/lib/fake_broker.h"
#include "tests/unit/lib/mq_body_store.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/clock.h"

struct held {
    struct held *next;
    struct amqp_broker_call *call;
    uint64_t deadline_ms;
};

struct fake_broker {
    uv_loop_t *loop;
    unsigned shards;
    struct mq_sm *mq[FAKE_BROKER_MAX_SHARDS];
    struct meta_sm *meta;
    struct held *held[FAKE_BROKER_MAX_SHARDS];
    uv_timer_t timer;
    bool unavailable;
    bool blocked;
    bool block_on_enqueue;
    bool unroutable;
    unsigned lose_enqueues; /* the next ones answer UNAVAILABLE, unapplied */
    unsigned busy[MQ_SM_CMD__COUNT]; /* the next ones answer BUSY, unapplied */
    unsigned lose_replies[MQ_SM_CMD__COUNT]; /* applied, answer UNAVAILABLE */
    unsigned applied[MQ_SM_CMD__COUNT];
    uint64_t clock_ahead_ms;
    /* Calls of a slow type wait here, in arrival order, until it is fast
     * again (fake_broker_slow()). */
    bool slow[MQ_SM_CMD__COUNT];
    unsigned n_slowed[MQ_SM_CMD__COUNT];
    unsigned release[MQ_SM_CMD__COUNT]; /* slowed ones to submit anyway */
    struct held *slowed;
    bool closing;
};

static unsigned fb_shard_count(void *self)
{
    return ((struct fake_broker *)self)->shards;
}

static unsigned fb_shard_of(void *self, const char *vhost, size_t vhost_len,
                            const char *queue, size_t queue_len)
{
    struct fake_broker *fb = self;
    uint64_t h = 1469598103934665603ULL;
    size_t i;

    (void)vhost;
    (void)vhost_len;
    for (i = 0; i < queue_len; i++) {
        h = (h ^ (uint8_t)queue[i]) * 1099511628211ULL;
    }
    return (unsigned)(h % fb->shards);
}

static const struct meta_sm *fb_meta_view(void *self)
{
    return ((struct fake_broker *)self)->meta;
}

static void apply_now(struct fake_broker *fb, struct amqp_broker_call *c)
{
    c->status = OUTCOME_OK;
    if (c->kind == AMQP_BROKER_META) {
        meta_sm_apply(fb->meta, &c->meta, &c->meta_result);
    } else {
        mq_sm_apply(fb->mq[c->shard],
                    clock_wall_ms() + __atomic_load_n(&fb->clock_ahead_ms,
                                                      __ATOMIC_SEQ_CST),
                    &c->mq, &c->mq_result);
        /* bodies from the shard's store, as a node fills them */
        mbs_result(mbs_of(fb->mq[c->shard]), &c->mq_result);
        if ((unsigned)c->mq.type < MQ_SM_CMD__COUNT) {
            unsigned *lose = &fb->lose_replies[c->mq.type];
            unsigned n = __atomic_load_n(lose, __ATOMIC_SEQ_CST);

            __atomic_add_fetch(&fb->applied[c->mq.type], 1, __ATOMIC_SEQ_CST);
            if (n > 0) {
                __atomic_store_n(lose, n - 1, __ATOMIC_SEQ_CST);
                mq_sm_result_clear(&c->mq_result);
                c->status = OUTCOME_UNAVAILABLE;
            }
        }
        if (c->mq.type == MQ_SM_ENQUEUE &&
            __atomic_load_n(&fb->block_on_enqueue, __ATOMIC_SEQ_CST)) {
            __atomic_store_n(&fb->blocked, true, __ATOMIC_SEQ_CST);
        }
    }
}

static void retry_held(struct fake_broker *fb, unsigned shard, bool all);
static void fb_run(struct fake_broker *fb, struct amqp_broker_call *c);

static void fb_submit(void *self, struct amqp_broker_call *c)
{
    struct fake_broker *fb = self;

    if (!fb->closing && c->kind == AMQP_BROKER_MQ &&
        (unsigned)c->mq.type < MQ_SM_CMD__COUNT &&
        __atomic_load_n(&fb->slow[c->mq.type], __ATOMIC_SEQ_CST)) {
        struct held *h = xcalloc(1, sizeof(*h));
        struct held **pp = &fb->slowed;

        h->call = c;
        while (*pp) {
            pp = &(*pp)->next;
        }
        *pp = h;
        __atomic_add_fetch(&fb->n_slowed[c->mq.type], 1, __ATOMIC_SEQ_CST);
        return;
    }
    fb_run(fb, c);
}

/* Submit the slowed calls whose type is fast again, in arrival order (all
 * of them when closing). */
static void run_slowed(struct fake_broker *fb)
{
    struct held **pp = &fb->slowed;

    while (*pp) {
        struct held *h = *pp;
        struct amqp_broker_call *c = h->call;

        if (!fb->closing &&
            __atomic_load_n(&fb->slow[c->mq.type], __ATOMIC_SEQ_CST)) {
            unsigned *rel = &fb->release[c->mq.type];
            unsigned n = __atomic_load_n(rel, __ATOMIC_SEQ_CST);

            if (n == 0) {
                pp = &h->next;
                continue;
            }
            __atomic_store_n(rel, n - 1, __ATOMIC_SEQ_CST);
        }
        *pp = h->next;
        free(h);
        __atomic_sub_fetch(&fb->n_slowed[c->mq.type], 1, __ATOMIC_SEQ_CST);
        fb_run(fb, c);
        pp = &fb->slowed; /* the callback may have changed the list */
    }
}

static void fb_run(struct fake_broker *fb, struct amqp_broker_call *c)
{
    if (fb->closing) {
        c->status = OUTCOME_CLOSING;
        c->cb(c);
        return;
    }
    if (__atomic_load_n(&fb->unavailable, __ATOMIC_SEQ_CST)) {
        c->status = OUTCOME_UNAVAILABLE;
        c->cb(c);
        return;
    }
    if (c->kind == AMQP_BROKER_MQ && (unsigned)c->mq.type < MQ_SM_CMD__COUNT) {
        unsigned *busy = &fb->busy[c->mq.type];
        unsigned n = __atomic_load_n(busy, __ATOMIC_SEQ_CST);

        if (n > 0) {
            __atomic_store_n(busy, n - 1, __ATOMIC_SEQ_CST);
            c->status = OUTCOME_BUSY;
            c->cb(c);
            return;
        }
    }
    if (c->kind == AMQP_BROKER_MQ && c->mq.type == MQ_SM_ENQUEUE) {
        unsigned n = __atomic_load_n(&fb->lose_enqueues, __ATOMIC_SEQ_CST);

        if (n > 0) {
            __atomic_store_n(&fb->lose_enqueues, n - 1, __ATOMIC_SEQ_CST);
            c->status = OUTCOME_UNAVAILABLE;
            c->cb(c);
            return;
        }
    }
    if (c->kind == AMQP_BROKER_MQ && c->mq.type == MQ_SM_CHECKOUT &&
        c->wait_ms > 0) {
        struct mq_sm_queue_stats qs;

        /* a retry's answer is known: never held (node/mq_svc.c) */
        bool retry = c->mq.seq != 0 &&
                     c->mq.seq <= mq_sm_consumer_seq(fb->mq[c->shard],
                                                     c->mq.who.consumer);

        if (!retry &&
            mq_sm_queue_stats(fb->mq[c->shard], c->mq.vhost, c->mq.vhost_len,
                              c->mq.queue, c->mq.queue_len, &qs) == 0 &&
            qs.ready == 0) {
            struct held *h = calloc(1, sizeof(*h));

            struct held **pp = &fb->held[c->shard];

            h->call = c;
            h->deadline_ms = clock_mono_ms() + c->wait_ms;
            while (*pp) { /* FIFO: waiters take turns, as consumers do */
                pp = &(*pp)->next;
            }
            *pp = h;
            return;
        }
    }
    apply_now(fb, c);
    c->cb(c); /* may free c */
    {
        unsigned i;

        for (i = 0; i < fb->shards; i++) {
            retry_held(fb, i, false);
        }
    }
}

/* Apply held CHECKOUTs whose queue has messages now (or all, expired). */
static void retry_held(struct fake_broker *fb, unsigned shard, bool all)
{
    struct held **pp = &fb->held[shard];
    uint64_t now = clock_mono_ms();

    while (*pp) {
        struct held *h = *pp;
        struct amqp_broker_call *c = h->call;
        struct mq_sm_queue_stats qs = {0};
        bool ready = mq_sm_queue_stats(fb->mq[shard], c->mq.vhost,
                                       c->mq.vhost_len, c->mq.queue,
                                       c->mq.queue_len, &qs) != 0 ||
                     qs.ready > 0;

        if (!ready && !all && now < h->deadline_ms) {
            pp = &h->next;
            continue;
        }
        *pp = h->next;
        free(h);
        if (ready && qs.ready > 0) {
            /* A fair share: the first waiter must not take everything. */
            unsigned waiters = 1;
            struct held *o;

            for (o = fb->held[shard]; o; o = o->next) {
                waiters++;
            }
            if (c->mq.max_messages > (qs.ready + waiters - 1) / waiters) {
                c->mq.max_messages =
                    (uint32_t)((qs.ready + waiters - 1) / waiters);
            }
        }
        if (fb->closing) {
            c->status = OUTCOME_CLOSING;
        } else {
            apply_now(fb, c);
        }
        c->cb(c);
        pp = &fb->held[shard]; /* the callback may have changed the list */
    }
}

static void on_timer(uv_timer_t *t)
{
    struct fake_broker *fb = t->data;
    unsigned i;

    run_slowed(fb);
    for (i = 0; i < fb->shards; i++) {
        retry_held(fb, i, false);
    }
}

static bool fb_should_block(void *self)
{
    return __atomic_load_n(&((struct fake_broker *)self)->blocked,
                           __ATOMIC_SEQ_CST);
}

void fake_broker_set_blocked(struct fake_broker *fb, bool on)
{
    __atomic_store_n(&fb->blocked, on, __ATOMIC_SEQ_CST);
}

void fake_broker_block_on_enqueue(struct fake_broker *fb, bool on)
{
    __atomic_store_n(&fb->block_on_enqueue, on, __ATOMIC_SEQ_CST);
}

static bool fb_routable(void *self)
{
    return !__atomic_load_n(&((struct fake_broker *)self)->unroutable,
                            __ATOMIC_SEQ_CST);
}

void fake_broker_lose_enqueues(struct fake_broker *fb, unsigned n)
{
    __atomic_store_n(&fb->lose_enqueues, n, __ATOMIC_SEQ_CST);
}

void fake_broker_busy(struct fake_broker *fb, enum mq_sm_cmd_type type,
                      unsigned n)
{
    assert((unsigned)type < MQ_SM_CMD__COUNT);
    __atomic_store_n(&fb->busy[type], n, __ATOMIC_SEQ_CST);
}

void fake_broker_lose_replies(struct fake_broker *fb,
                              enum mq_sm_cmd_type type, unsigned n)
{
    assert((unsigned)type < MQ_SM_CMD__COUNT);
    __atomic_store_n(&fb->lose_replies[type], n, __ATOMIC_SEQ_CST);
}

void fake_broker_slow(struct fake_broker *fb, enum mq_sm_cmd_type type,
                      bool on)
{
    assert((unsigned)type < MQ_SM_CMD__COUNT);
    __atomic_store_n(&fb->slow[type], on, __ATOMIC_SEQ_CST);
}

void fake_broker_release(struct fake_broker *fb, enum mq_sm_cmd_type type)
{
    assert((unsigned)type < MQ_SM_CMD__COUNT);
    __atomic_store_n(&fb->release[type],
                     __atomic_load_n(&fb->n_slowed[type], __ATOMIC_SEQ_CST),
                     __ATOMIC_SEQ_CST);
}

unsigned fake_broker_slowed(struct fake_broker *fb, enum mq_sm_cmd_type type)
{
    assert((unsigned)type < MQ_SM_CMD__COUNT);
    return __atomic_load_n(&fb->n_slowed[type], __ATOMIC_SEQ_CST);
}

unsigned fake_broker_applied(struct fake_broker *fb, enum mq_sm_cmd_type type)
{
    assert((unsigned)type < MQ_SM_CMD__COUNT);
    return __atomic_load_n(&fb->applied[type], __ATOMIC_SEQ_CST);
}

void fake_broker_advance_clock(struct fake_broker *fb, uint64_t ms)
{
    __atomic_add_fetch(&fb->clock_ahead_ms, ms, __ATOMIC_SEQ_CST);
}

void fake_broker_set_routable(struct fake_broker *fb, bool on)
{
    __atomic_store_n(&fb->unroutable, !on, __ATOMIC_SEQ_CST);
}

static const struct amqp_broker_ops fb_ops = {
    .shard_count = fb_shard_count,
    .shard_of = fb_shard_of,
    .submit = fb_submit,
    .meta_view = fb_meta_view,
    .should_block = fb_should_block,
    .routable = fb_routable,
};

struct fake_broker *fake_broker_new(uv_loop_t *loop, unsigned shards)
{
    struct fake_broker *fb = xcalloc(1, sizeof(*fb));
    unsigned i;

    fb->loop = loop;
    fb->shards = shards ? shards : 1;
    for (i = 0; i < fb->shards; i++) {
        struct mq_sm_cmd era = {.type = MQ_SM_ERA};
        struct mq_sm_result res;

        fb->mq[i] = mq_sm_new(NULL);
        mbs_fresh(fb->mq[i]);
        /* a node's first leader: bodies external from here on */
        mq_sm_apply(fb->mq[i], 0, &era, &res);
        mq_sm_result_clear(&res);
    }
    fb->meta = meta_sm_new();
    uv_timer_init(loop, &fb->timer);
    fb->timer.data = fb;
    uv_timer_start(&fb->timer, on_timer, 20, 20);
    return fb;
}

struct amqp_broker fake_broker_table(struct fake_broker *fb)
{
    struct amqp_broker b = {.ops = &fb_ops, .self = fb};
    return b;
}

void fake_broker_set_unavailable(struct fake_broker *fb, bool on)
{
    /* Called from a test thread while the loop thread reads it. */
    __atomic_store_n(&fb->unavailable, on, __ATOMIC_SEQ_CST);
}

struct mq_sm *fake_broker_mq(struct fake_broker *fb, unsigned shard)
{
    return fb->mq[shard];
}

static void on_closed(uv_handle_t *h)
{
    struct fake_broker *fb = h->data;
    unsigned i;

    for (i = 0; i < fb->shards; i++) {
        mbs_forget(fb->mq[i]);
        mq_sm_free(fb->mq[i]);
    }
    meta_sm_free(fb->meta);
    free(fb);
}

void fake_broker_close(struct fake_broker *fb)
{
    unsigned i;

    fb->closing = true;
    run_slowed(fb);
    for (i = 0; i < fb->shards; i++) {
        retry_held(fb, i, true);
    }
}

void fake_broker_free(struct fake_broker *fb)
{
    fake_broker_close(fb);
    uv_close((uv_handle_t *)&fb->timer, on_closed);
}
