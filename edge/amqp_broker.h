/*
 * amqp_broker: what the AMQP edge (amqp_server / amqp_conn) needs from the
 * storage side, as a table of functions, so one edge serves both:
 *   - the standalone node: node/amqp_local, the node's own queue and meta
 *     groups in the same process;
 *   - the router: router/amqp_remote, RPC to the shard leaders and the meta
 *     group of the cluster;
 *   - unit tests: tests/unit/lib/fake_broker, mq_sm and meta_sm applied at
 *     once, no Raft.
 *
 * Queues are spread over shards; the edge asks which shard holds a queue
 * and addresses every queue command to one shard. Commands that concern a
 * channel or connection as a whole (RETURN with scope CHANNEL/CONNECTION)
 * and the EXPIRE tick go to every shard, one call per shard.
 *
 * Calls complete exactly once through call->cb, possibly before submit
 * returns, always on the loop thread. MQ calls to one shard that were
 * applied complete in the order the shard applied them (the edge relies on
 * it to settle "every delivery up to tag N" safely). Status, of the
 * shared vocabulary (sm/outcome.h); a broker answers only these four:
 *   OUTCOME_OK           the command was applied; the result is valid;
 *   OUTCOME_UNAVAILABLE  not applied, or the outcome is unknown (leader
 *                        lost, deadline): the edge may retry the same
 *                        command (ENQUEUE is deduplicated by client_id +
 *                        seq) or give up (nack, channel error);
 *   OUTCOME_BUSY         not applied, never proposed: the shard's group
 *                        has too much waiting (admission control); the
 *                        edge may send the same command again after a
 *                        pause (a broker may report it as UNAVAILABLE);
 *   OUTCOME_CLOSING      the broker is shutting down.
 *
 * Ownership: the pointers inside call->mq / call->meta (names, body, args)
 * are borrowed until cb. call->mq_result is owned by the call once cb runs:
 * the edge releases it with mq_sm_result_clear(). The meta view returned by
 * meta_view() is owned by the broker and valid until control returns to the
 * loop; after a META call completes OK the view already includes its change.
 */
#ifndef RINGMQ_AMQP_BROKER_H
#define RINGMQ_AMQP_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sm/meta_sm.h"
#include "sm/mq_sm.h"
#include "sm/outcome.h"

enum amqp_broker_kind {
    AMQP_BROKER_MQ = 0, /* a queue command to one shard */
    AMQP_BROKER_META    /* an exchange/binding command to the meta group */
};

struct amqp_broker_call {
    /* in */
    enum amqp_broker_kind kind;
    /* MQ: index < shard_count(). A broker whose queues can move routes
     * commands that name their queue by the name instead, and writes the
     * shard it used back here before cb (deliveries are that shard's). */
    unsigned shard;
    struct mq_sm_cmd mq;    /* MQ */
    /* MQ CHECKOUT only: when no message is ready for this consumer, the
     * broker holds the call until one is (then checks it out) or until
     * wait_ms pass (then completes OK with no deliveries). 0 = answer now.
     * This is how pushed deliveries reach a consumer: the edge keeps one
     * waiting CHECKOUT per consumer with credit whose queue ran dry, and
     * while the queue has messages for it, up to 4 that do not wait. */
    uint32_t wait_ms;
    struct meta_sm_cmd meta; /* META */
    /* out */
    enum outcome status;
    struct mq_sm_result mq_result;     /* MQ, when OK */
    struct meta_sm_result meta_result; /* META, when OK */
    void (*cb)(struct amqp_broker_call *call);
    void *data; /* caller's */
};

struct amqp_broker_ops {
    unsigned (*shard_count)(void *self);
    /* The shard holding queue (@vhost, @queue). */
    unsigned (*shard_of)(void *self, const char *vhost, size_t vhost_len,
                         const char *queue, size_t queue_len);
    void (*submit)(void *self, struct amqp_broker_call *call);
    /* Read-only copy of the meta state, for routing and exchange checks. */
    const struct meta_sm *(*meta_view)(void *self);
    /* Publishers should be blocked (memory or disk watermark): the edge
     * sends connection.blocked while true. The edge asks on its tick and
     * whenever a call completes, before the call's cb goes on: a broker
     * that learns the state from answers (the router) updates it before
     * completing the call that brought it. May be NULL (never). */
    bool (*should_block)(void *self);
    /* The broker can serve (the meta view is loaded): until then the edge
     * holds new connections before connection.start. May be NULL (always
     * ready). */
    bool (*ready)(void *self);
    /* Publishes may be routed on meta_view() now: a router's view is
     * within its lease (sm/meta_sm.h, META_VIEW_LEASE_MS). While false the
     * edge holds a channel's publishes, in order, and nacks those held
     * EDGE_ROUTE_WAIT_MS; it asks again on its tick and whenever a call
     * completes. May be NULL (always: a local view). */
    bool (*routable)(void *self);
};

struct amqp_broker {
    const struct amqp_broker_ops *ops;
    void *self;
};

#endif
