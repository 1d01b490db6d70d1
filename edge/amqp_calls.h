/*
 * amqp_calls: the AMQP edge's broker calls (struct edge_call) and what lets
 * them outlive whatever asked for them: submission, retries after
 * UNAVAILABLE or BUSY (the retry list and its timer), the count of calls
 * in flight that the server's close waits for, and the ids the edge hands
 * out.
 *
 * Below the server, connections and channels, this calls nothing of
 * theirs: a call completes into its done function, what it keeps alive is
 * released through struct edge_ref's zero function, and the owner of
 * struct edge_calls hears through idle() when it may be done.
 *
 * Ownership: struct edge_calls is the server's (embedded in it). A call is
 * freed after its done returns, unless done parked it with
 * edge_call_retry(); it holds a reference on its ref (its connection). The
 * pointers in a call's bc.mq / bc.meta are the caller's to keep valid until
 * done (amqp_broker.h); queue, owned and extra are freed with the call.
 * Everything runs on the loop thread.
 */
#ifndef RINGMQ_AMQP_CALLS_H
#define RINGMQ_AMQP_CALLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/buf.h"
#include "edge/amqp_broker.h"

struct chan_op;

/* A count of references on something that frees itself through zero()
 * once the count is 0 and it is finished otherwise (a connection: once its
 * handles closed too). */
struct edge_ref {
    unsigned n;
    void (*zero)(struct edge_ref *r);
};

void edge_ref_get(struct edge_ref *r);
void edge_ref_put(struct edge_ref *r);

struct edge_calls {
    struct amqp_broker broker;
    uint64_t router_id;
    uint64_t route_wait_ms; /* a publish waits for a routable view */
    uint64_t next_consumer;
    struct edge_call *retry_list; /* calls waiting to be resubmitted */
    uv_timer_t retry;
    unsigned n;        /* calls in flight, parked ones included */
    bool closing;      /* no more retries: the edge is closing */
    /* A publish was held for a routable view (amqp_publish.h) since the
     * owner last woke its channels: it wakes them again once the view is
     * routable, also if it never saw it unroutable (a lease may lapse and
     * come back between two of its looks). */
    bool publishes_held;
    bool timer_closed;
    /* A call finished or the timer closed: edge_calls_idle() may hold. */
    void (*idle)(void *data);
    /* A call completed, before its done function runs: the broker's answer
     * may have changed should_block() (a router learns a shard's watermark
     * from its answers), and the owner checks it before the caller sees
     * the result (a publish's confirm). NULL: nobody asks. Not called once
     * closing. */
    void (*answered)(void *data);
    void *data;
};

/* One broker call and what it needs to outlive its borrowers. */
struct edge_call {
    struct amqp_broker_call bc;
    struct edge_calls *calls;
    struct edge_ref *ref;   /* referenced (its connection), or NULL */
    struct chan_op *op;     /* the caller's (amqp_op.h): NULL when not for
                               an op; the op outlives its channel until its
                               calls are done */
    uint64_t chan_uid;      /* channel the call belongs to, or 0 */
    uint64_t consumer;      /* CHECKOUT: consumer id */
    void (*done)(struct edge_call *ec);
    uint64_t deadline_ms;   /* retries after UNAVAILABLE or BUSY stop
                               here; 0 none */
    unsigned busy;          /* BUSY answers so far (each doubles the wait) */
    uint64_t retry_at_ms;
    uint64_t submitted_ms;  /* last submit */
    struct edge_call *retry_next;
    /* ENQUEUE: the channel's previous and next unsettled ENQUEUE into the
     * same queue (amqp_publish.c keeps them in order) */
    struct edge_call *order_prev;
    struct edge_call *order_next;
    unsigned index;         /* caller's: which channel, etc. */
    char queue[256];        /* owned copy of the queue name */
    size_t queue_len;
    struct buf owned;       /* other borrowed bytes (message blob) */
    void *extra;            /* freed with the call */
};

/* @broker is copied. The retry timer is a handle of @loop: closed by
 * edge_calls_close(). */
void edge_calls_init(struct edge_calls *k, uv_loop_t *loop,
                     const struct amqp_broker *broker, uint64_t router_id,
                     void (*idle)(void *data), void *data);
/* The edge is closing: no retry from now on, parked calls are submitted at
 * once, the timer closes. */
void edge_calls_close(struct edge_calls *k);
/* Closed, nothing in flight, the timer closed: @k may be freed. */
bool edge_calls_idle(const struct edge_calls *k);

struct edge_call *edge_call_new(struct edge_calls *k, struct edge_ref *ref,
                                void (*done)(struct edge_call *ec));
/* Submit; the call is freed after ec->done returns, unless done resubmitted
 * it with edge_call_retry(). */
void edge_call_submit(struct edge_call *ec);
/* From done: submit the same call again after EDGE_RETRY_TICK_MS. */
void edge_call_retry(struct edge_call *ec);
/* The same after @delay_ms (resolution EDGE_RETRY_TICK_MS). */
void edge_call_retry_after(struct edge_call *ec, uint64_t delay_ms);
/* From done: if @ec came back UNAVAILABLE before its deadline_ms and the
 * edge is not closing, retry it (the command must be safe to apply twice)
 * and return true: done must then return. The same for BUSY (never
 * proposed), after a wait that doubles with each BUSY answer of the call,
 * unless that wait would end at or past deadline_ms. */
bool edge_call_retry_unavailable(struct edge_call *ec);
void edge_call_set_queue(struct edge_call *ec, const void *name, size_t len);

/* The shard holding queue @name of the edge's vhost. */
unsigned edge_shard_of(const struct edge_calls *k, const char *name,
                       size_t len);
/* A consumer id unique within a shard across edges. */
uint64_t edge_new_consumer_id(struct edge_calls *k);

#endif
