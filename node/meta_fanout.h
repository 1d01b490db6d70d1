/*
 * meta_fanout: "bind-ok after every router has seen the binding".
 *
 * Routers route publishes on their own copy of the meta state, kept fresh
 * by a watch each router keeps parked at the meta leader (node_rpc). For
 * RabbitMQ's guarantee (once queue.bind-ok is back, every publish from any
 * connection routes by the new binding), the leader answers a meta command
 * that changed the state only once every router's copy includes it:
 *
 *   - every parked watch knows a version >= the command's, and
 *   - every watch answer sent has been followed by the router's next watch
 *     (which carries the version it now knows).
 *
 * Watches are anonymous, so the second point is counted: each router
 * alternates answer and request, so outstanding answers = answers sent -
 * requests received since. An answer not followed by a request within
 * @answer_ttl_ms is forgotten (that router died or is cut off: it no longer
 * routes), and a wait never lasts longer than @max_wait_ms: a lost router
 * delays a bind, it never blocks one.
 *
 * Everything runs on the loop thread; structs passed in are caller-owned
 * and must stay alive until unparked / called back.
 */
#ifndef RINGMQ_META_FANOUT_H
#define RINGMQ_META_FANOUT_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

struct meta_fanout;

struct meta_fanout_park {
    uint64_t known; /* the version the parked watch's router has */
    struct meta_fanout_park *prev;
    struct meta_fanout_park *next;
};

struct meta_fanout_wait {
    uint64_t version;
    void (*cb)(struct meta_fanout_wait *w, bool timed_out);
    void *data;
    /* private */
    uint64_t deadline;
    struct meta_fanout_wait *next;
};

/* 0 for a bound means its default: max_wait 1000 ms, answer_ttl 1000 ms. */
struct meta_fanout *meta_fanout_new(uv_loop_t *loop, unsigned max_wait_ms,
                                    unsigned answer_ttl_ms);

/* A watch request arrived (a router's next watch, or its first). */
void meta_fanout_request(struct meta_fanout *f);
void meta_fanout_park(struct meta_fanout *f, struct meta_fanout_park *p,
                      uint64_t known);
void meta_fanout_unpark(struct meta_fanout *f, struct meta_fanout_park *p);
/* A watch answer went out (its router will send its next request). */
void meta_fanout_answered(struct meta_fanout *f);

/* Call w->cb once every router knows w->version (possibly at once, from
 * here), or after max_wait_ms with timed_out = true. */
void meta_fanout_wait(struct meta_fanout *f, struct meta_fanout_wait *w);

/* Waits complete (timed_out = true); freed when the loop ran the close. */
void meta_fanout_close(struct meta_fanout *f);

#endif
