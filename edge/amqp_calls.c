/*
 * amqp_calls: the AMQP edge's broker calls; contract in amqp_calls.h.
 *
 * A parked call (edge_call_retry) counts as in flight, so the server's
 * close waits for it; closing submits the parked calls at once rather than
 * wait for the timer, and their done functions see k->closing and give up.
 */
#include "edge/amqp_calls.h"

#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/container_of.h"
#include "common/random_id.h"
#include "edge/amqp_edge.h"

void edge_ref_get(struct edge_ref *r)
{
    r->n++;
}

void edge_ref_put(struct edge_ref *r)
{
    if (--r->n == 0 && r->zero) {
        r->zero(r);
    }
}

/* The longest wait before sending again a call answered BUSY. */
#define EDGE_BUSY_BACKOFF_MAX_MS 1600

/* The wait after the @busy-th BUSY answer (0 = the first): the retry tick
 * doubled each time, drawn between its half and its whole so that the
 * calls refused together do not come back together. */
static uint64_t busy_backoff(unsigned busy)
{
    uint64_t delay = EDGE_RETRY_TICK_MS;
    uint64_t jitter;
    unsigned i;

    for (i = 0; i < busy && delay < EDGE_BUSY_BACKOFF_MAX_MS; i++) {
        delay *= 2;
    }
    if (delay > EDGE_BUSY_BACKOFF_MAX_MS) {
        delay = EDGE_BUSY_BACKOFF_MAX_MS;
    }
    random_bytes(&jitter, sizeof(jitter));
    return delay - delay / 2 + jitter % (delay / 2 + 1);
}

bool edge_call_retry_unavailable(struct edge_call *ec)
{
    uint64_t now = clock_mono_ms();
    uint64_t delay = EDGE_RETRY_TICK_MS;

    if (now >= ec->deadline_ms || ec->calls->closing) {
        return false;
    }
    switch (ec->bc.status) {
        case OUTCOME_UNAVAILABLE:
            break;
        case OUTCOME_BUSY:
            /* never proposed: no point waiting past the deadline */
            delay = busy_backoff(ec->busy++);
            if (now + delay >= ec->deadline_ms) {
                return false;
            }
            break;
        default:
            return false;
    }
    edge_call_retry_after(ec, delay);
    return true;
}

static void on_retry(uv_timer_t *t);

void edge_calls_init(struct edge_calls *k, uv_loop_t *loop,
                     const struct amqp_broker *broker, uint64_t router_id,
                     void (*idle)(void *data), void *data)
{
    memset(k, 0, sizeof(*k));
    k->broker = *broker;
    k->router_id = router_id;
    k->idle = idle;
    k->data = data;
    uv_timer_init(loop, &k->retry);
    k->retry.data = k;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct edge_calls *k = h->data;

    k->timer_closed = true;
    k->idle(k->data); /* may free k */
}

void edge_calls_close(struct edge_calls *k)
{
    k->closing = true;
    if (k->retry_list) {
        on_retry(&k->retry);
    }
    uv_close((uv_handle_t *)&k->retry, on_timer_closed);
}

bool edge_calls_idle(const struct edge_calls *k)
{
    return k->closing && k->n == 0 && k->timer_closed;
}

static void edge_call_free(struct edge_call *ec)
{
    if (ec->bc.kind == AMQP_BROKER_MQ) {
        mq_sm_result_clear(&ec->bc.mq_result);
    }
    buf_free(&ec->owned);
    free(ec->extra);
    if (ec->ref) {
        edge_ref_put(ec->ref);
    }
    free(ec);
}

static void on_broker_done(struct amqp_broker_call *bc)
{
    struct edge_call *ec = container_of(bc, struct edge_call, bc);
    struct edge_calls *k = ec->calls;

    /* A queue frozen or moved (mq_sm.h) is the router's to retry at the
     * right shard; one that still gets here was not applied: say so, and
     * every caller reacts as to a lost leader. */
    if (bc->kind == AMQP_BROKER_MQ && bc->status == OUTCOME_OK &&
        mq_sm_status_placement(bc->mq_result.status)) {
        mq_sm_result_clear(&bc->mq_result);
        bc->status = OUTCOME_UNAVAILABLE;
    }
    ec->retry_at_ms = 0;
    if (k->answered && !k->closing) {
        k->answered(k->data);
    }
    ec->done(ec);
    if (ec->retry_at_ms == 0) {
        edge_call_free(ec);
    }
    k->n--;
    k->idle(k->data); /* may free k */
}

struct edge_call *edge_call_new(struct edge_calls *k, struct edge_ref *ref,
                                void (*done)(struct edge_call *ec))
{
    struct edge_call *ec = xcalloc(1, sizeof(*ec));

    ec->calls = k;
    ec->ref = ref;
    if (ref) {
        edge_ref_get(ref);
    }
    ec->done = done;
    buf_init(&ec->owned);
    mq_sm_result_init(&ec->bc.mq_result);
    ec->bc.mq.vhost = EDGE_VHOST;
    ec->bc.mq.vhost_len = EDGE_VHOST_LEN;
    ec->bc.mq.who.router = k->router_id;
    ec->bc.meta.vhost = EDGE_VHOST;
    ec->bc.meta.vhost_len = EDGE_VHOST_LEN;
    return ec;
}

void edge_call_set_queue(struct edge_call *ec, const void *name, size_t len)
{
    if (len > sizeof(ec->queue)) {
        len = sizeof(ec->queue);
    }
    memcpy(ec->queue, name, len);
    ec->queue_len = len;
    ec->bc.mq.queue = ec->queue;
    ec->bc.mq.queue_len = len;
}

void edge_call_submit(struct edge_call *ec)
{
    struct edge_calls *k = ec->calls;

    k->n++;
    ec->submitted_ms = clock_mono_ms();
    ec->bc.cb = on_broker_done;
    ec->bc.status = OUTCOME_OK;
    if (ec->bc.kind == AMQP_BROKER_MQ) {
        mq_sm_result_clear(&ec->bc.mq_result);
    }
    k->broker.ops->submit(k->broker.self, &ec->bc);
}

void edge_call_retry(struct edge_call *ec)
{
    edge_call_retry_after(ec, EDGE_RETRY_TICK_MS);
}

void edge_call_retry_after(struct edge_call *ec, uint64_t delay_ms)
{
    struct edge_calls *k = ec->calls;

    ec->retry_at_ms = clock_mono_ms() + delay_ms;
    ec->retry_next = k->retry_list;
    k->retry_list = ec;
    /* Counted as in flight while parked, so close waits for it. */
    k->n++;
    if (!k->closing && !uv_is_active((uv_handle_t *)&k->retry)) {
        uv_timer_start(&k->retry, on_retry, EDGE_RETRY_TICK_MS, 0);
    }
}

static void on_retry(uv_timer_t *t)
{
    struct edge_calls *k = t->data;
    uint64_t now = clock_mono_ms();
    struct edge_call **pp = &k->retry_list;
    bool more = false;

    while (*pp) {
        struct edge_call *ec = *pp;

        if (ec->retry_at_ms <= now || k->closing) {
            *pp = ec->retry_next;
            ec->retry_next = NULL;
            k->n--;
            edge_call_submit(ec);
            continue;
        }
        more = true;
        pp = &ec->retry_next;
    }
    if (more && !k->closing) {
        uv_timer_start(&k->retry, on_retry, EDGE_RETRY_TICK_MS, 0);
    }
}

unsigned edge_shard_of(const struct edge_calls *k, const char *name,
                       size_t len)
{
    return k->broker.ops->shard_of(k->broker.self, EDGE_VHOST,
                                   EDGE_VHOST_LEN, name, len);
}

uint64_t edge_new_consumer_id(struct edge_calls *k)
{
    /* Unique within a shard across edges: the router ids are random. */
    uint64_t x = k->router_id + (++k->next_consumer) * 0x9e3779b97f4a7c15ULL;

    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 29;
    return x ? x : 1;
}
