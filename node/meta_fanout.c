/*
 * meta_fanout: see meta_fanout.h.
 */
#include "node/meta_fanout.h"

#include <stdlib.h>

#include "common/buf.h"

#define TICK_MS 10
/* Routers remembered per term; more are left to the wait's bound. */
#define ROUTERS_MAX 4096

struct router {
    uint64_t id;
    uint64_t known;       /* the version its latest watch knew */
    uint64_t answered_at; /* arrival of its latest answered watch; 0: none */
    uint64_t seen_at;     /* arrival of its latest watch */
};

struct meta_fanout {
    uv_loop_t *loop;
    uv_timer_t timer;
    uint64_t lapse_ms; /* a lease, seen from here: with a margin */
    uint64_t grace_ms; /* of a new term */
    uint64_t term;
    uint64_t grace_end;
    struct router *routers;
    unsigned n_routers;
    unsigned cap_routers;
    bool overflow; /* a router of this term is not remembered */
    struct meta_fanout_wait *waits;
    bool closing;
};

/* A router's lease has run out by now: the last answer it can hold came
 * for a watch sent before that watch arrived here. Monotonic clocks of two
 * hosts run at rates a little apart: the margin is an eighth and 100 ms. */
static bool lapsed(const struct meta_fanout *f, const struct router *r,
                   uint64_t now)
{
    return r->answered_at == 0 || now >= r->answered_at + f->lapse_ms;
}

static void forget_gone(struct meta_fanout *f, uint64_t now)
{
    unsigned i = 0;

    while (i < f->n_routers) {
        struct router *r = &f->routers[i];

        if (lapsed(f, r, now) && now >= r->seen_at + f->lapse_ms) {
            *r = f->routers[--f->n_routers];
        } else {
            i++;
        }
    }
}

static bool everyone_knows(const struct meta_fanout *f, uint64_t version,
                           uint64_t now)
{
    unsigned i;

    if (now < f->grace_end || f->overflow) {
        return false;
    }
    for (i = 0; i < f->n_routers; i++) {
        const struct router *r = &f->routers[i];

        if (r->known < version && !lapsed(f, r, now)) {
            return false;
        }
    }
    return true;
}

/* Complete the waits that may go; keep the timer running while any is
 * left (leases run out and deadlines pass with time). */
static void check(struct meta_fanout *f)
{
    uint64_t now = uv_now(f->loop);
    struct meta_fanout_wait **pp = &f->waits;
    struct meta_fanout_wait *done = NULL;

    forget_gone(f, now);
    while (*pp) {
        struct meta_fanout_wait *w = *pp;

        if (f->closing || everyone_knows(f, w->version, now) ||
            now >= w->deadline) {
            *pp = w->next;
            w->next = done;
            done = w;
            continue;
        }
        pp = &w->next;
    }
    if (f->waits == NULL) {
        uv_timer_stop(&f->timer);
    }
    while (done) {
        struct meta_fanout_wait *w = done;
        enum meta_fanout_end end =
            f->closing                           ? META_FANOUT_CLOSED
            : everyone_knows(f, w->version, now) ? META_FANOUT_KNOWN
                                                 : META_FANOUT_LAPSED;

        done = w->next;
        w->next = NULL;
        w->cb(w, end);
    }
}

static void on_tick(uv_timer_t *t)
{
    check(t->data);
}

struct meta_fanout *meta_fanout_new(uv_loop_t *loop, unsigned lease_ms,
                                    unsigned election_ms)
{
    struct meta_fanout *f = xcalloc(1, sizeof(*f));
    uint64_t lease = lease_ms ? lease_ms : META_VIEW_LEASE_MS;

    f->loop = loop;
    f->lapse_ms = lease + lease / 8 + 100;
    f->grace_ms = election_ms + f->lapse_ms;
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    return f;
}

void meta_fanout_term(struct meta_fanout *f, uint64_t term)
{
    if (term == f->term) {
        return;
    }
    f->term = term;
    f->n_routers = 0;
    f->overflow = false;
    f->grace_end = uv_now(f->loop) + f->grace_ms;
}

static struct router *router_find(struct meta_fanout *f, uint64_t id,
                                  bool add)
{
    unsigned i;

    for (i = 0; i < f->n_routers; i++) {
        if (f->routers[i].id == id) {
            return &f->routers[i];
        }
    }
    if (!add) {
        return NULL;
    }
    if (f->n_routers == ROUTERS_MAX) {
        f->overflow = true; /* its answers go unrecorded: waits run out */
        return NULL;
    }
    if (f->n_routers == f->cap_routers) {
        f->cap_routers = f->cap_routers ? 2 * f->cap_routers : 16;
        f->routers =
            xrealloc(f->routers, f->cap_routers * sizeof(*f->routers));
    }
    f->routers[f->n_routers] = (struct router){.id = id};
    return &f->routers[f->n_routers++];
}

void meta_fanout_request(struct meta_fanout *f, uint64_t router_id,
                         uint64_t known)
{
    struct router *r;

    if (router_id == 0 || (r = router_find(f, router_id, true)) == NULL) {
        return;
    }
    if (known > r->known) {
        r->known = known;
    }
    r->seen_at = uv_now(f->loop);
    if (f->waits) {
        check(f);
    }
}

void meta_fanout_answered(struct meta_fanout *f, uint64_t router_id,
                          uint64_t arrived_ms)
{
    struct router *r;

    if (router_id == 0 || (r = router_find(f, router_id, false)) == NULL) {
        return;
    }
    if (arrived_ms > r->answered_at) {
        r->answered_at = arrived_ms;
    }
}

void meta_fanout_wait(struct meta_fanout *f, struct meta_fanout_wait *w)
{
    uint64_t now = uv_now(f->loop);

    w->deadline = now + f->lapse_ms;
    if (w->deadline < f->grace_end) {
        w->deadline = f->grace_end;
    }
    w->next = f->waits;
    f->waits = w;
    if (!uv_is_active((uv_handle_t *)&f->timer)) {
        uv_timer_start(&f->timer, on_tick, TICK_MS, TICK_MS);
    }
    check(f);
}

unsigned meta_fanout_routers(struct meta_fanout *f)
{
    forget_gone(f, uv_now(f->loop));
    return f->n_routers;
}

static void on_closed(uv_handle_t *h)
{
    struct meta_fanout *f = h->data;

    free(f->routers);
    free(f);
}

void meta_fanout_close(struct meta_fanout *f)
{
    f->closing = true;
    check(f);
    uv_close((uv_handle_t *)&f->timer, on_closed);
}
