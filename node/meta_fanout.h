/*
 * meta_fanout: "bind-ok after every router routes by the binding".
 *
 * Routers route publishes on their own copy of the meta state, kept fresh
 * by a watch each router keeps parked at the meta leader (node_rpc). For
 * RabbitMQ's guarantee (once queue.bind-ok is back, every publish from any
 * connection routes by the new binding), the leader answers a meta command
 * that changed the state to version V only when no router can still route
 * on a view older than V. Two rules make that so:
 *
 *   - A router's lease (router/amqp_remote): it routes publishes only
 *     until META_VIEW_LEASE_MS after it sent the last watch the leader
 *     answered (the answer holds the state the leader had when it
 *     answered, at or after that send). The leader answers an unchanged
 *     watch after META_VIEW_HEARTBEAT_MS, so a router in touch keeps its
 *     lease; one cut off stops routing publishes within the lease.
 *   - The leader's wait, per router (keyed by the router id its watches
 *     carry): V is known to router R once a watch from R says it knows V;
 *     R's lease has run out at the arrival of the last watch of R it
 *     answered plus the lease and a margin for clock rates (LAPSE_MS).
 *     The wait ends when every router it has heard from knows V or has
 *     run out. Routers it has not heard from in this term may still hold
 *     a lease from the previous leader (which answers until it notices it
 *     lost its majority, within an election timeout): no wait ends before
 *     the term is @election_ms + LAPSE_MS old.
 *
 * Whatever the routers do, a wait ends LAPSE_MS after it began (and not
 * before the term's grace): a router that did not learn V by then was
 * answered before V was applied here, so its lease has run out. It ends
 * META_FANOUT_LAPSED then.
 *
 * Watches without a router id (ringmqctl's one-off reads) are not routers.
 *
 * Everything runs on the loop thread; structs passed in are caller-owned
 * and must stay alive until called back.
 */
#ifndef RINGMQ_META_FANOUT_H
#define RINGMQ_META_FANOUT_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "sm/meta_sm.h"

struct meta_fanout;

enum meta_fanout_end {
    META_FANOUT_KNOWN,  /* every router heard from knows the version */
    META_FANOUT_LAPSED, /* some did not confirm it: their leases ran out */
    META_FANOUT_CLOSED  /* meta_fanout_close(): nothing is known */
};

struct meta_fanout_wait {
    uint64_t version;
    void (*cb)(struct meta_fanout_wait *w, enum meta_fanout_end end);
    void *data;
    /* private */
    uint64_t deadline;
    struct meta_fanout_wait *next;
};

/* @lease_ms 0: META_VIEW_LEASE_MS; @election_ms: the meta group's
 * election timeout (the previous leader's answers end within it). */
struct meta_fanout *meta_fanout_new(uv_loop_t *loop, unsigned lease_ms,
                                    unsigned election_ms);

/* This replica leads the meta group in @term: call before anything else
 * of a term. A new term forgets every router and starts the grace. */
void meta_fanout_term(struct meta_fanout *f, uint64_t term);
/* A watch from router @router_id (0: not a router) that knows @known
 * arrived now. */
void meta_fanout_request(struct meta_fanout *f, uint64_t router_id,
                         uint64_t known);
/* The answer to router @router_id's watch that arrived at @arrived_ms
 * (uv_now time) went out. */
void meta_fanout_answered(struct meta_fanout *f, uint64_t router_id,
                          uint64_t arrived_ms);

/* Call w->cb once no router can route on a view older than w->version
 * (possibly at once, from here). */
void meta_fanout_wait(struct meta_fanout *f, struct meta_fanout_wait *w);

/* Routers heard from in this term and not yet run out. */
unsigned meta_fanout_routers(struct meta_fanout *f);

/* Waits complete (META_FANOUT_CLOSED); freed when the loop ran the
 * close. */
void meta_fanout_close(struct meta_fanout *f);

#endif
