/*
 * meta_fanout: see meta_fanout.h.
 */
#include "node/meta_fanout.h"

#include <stdlib.h>

#include "common/buf.h"

#define TICK_MS 10
#define ANSWERS_MAX 1024 /* outstanding answers remembered (routers) */

struct meta_fanout {
    uv_loop_t *loop;
    uv_timer_t timer;
    unsigned max_wait_ms;
    unsigned answer_ttl_ms;
    struct meta_fanout_park *parked;
    struct meta_fanout_wait *waits;
    /* send times of answers not yet followed by a request, oldest first */
    uint64_t answers[ANSWERS_MAX];
    unsigned head;
    unsigned n;
    bool closing;
};

static void expire_answers(struct meta_fanout *f, uint64_t now)
{
    while (f->n > 0 && f->answers[f->head] + f->answer_ttl_ms <= now) {
        f->head = (f->head + 1) % ANSWERS_MAX;
        f->n--;
    }
}

static bool everyone_knows(const struct meta_fanout *f, uint64_t version)
{
    const struct meta_fanout_park *p;

    if (f->n > 0) {
        return false;
    }
    for (p = f->parked; p; p = p->next) {
        if (p->known < version) {
            return false;
        }
    }
    return true;
}

/* Complete the waits that may go; keep the timer running while any is
 * left (answers expire and deadlines pass with time). */
static void check(struct meta_fanout *f)
{
    uint64_t now = uv_now(f->loop);
    struct meta_fanout_wait **pp = &f->waits;
    struct meta_fanout_wait *done = NULL;

    expire_answers(f, now);
    while (*pp) {
        struct meta_fanout_wait *w = *pp;

        if (f->closing || everyone_knows(f, w->version) ||
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
        bool timed_out = f->closing || !everyone_knows(f, w->version);

        done = w->next;
        w->next = NULL;
        w->cb(w, timed_out);
    }
}

static void on_tick(uv_timer_t *t)
{
    check(t->data);
}

struct meta_fanout *meta_fanout_new(uv_loop_t *loop, unsigned max_wait_ms,
                                    unsigned answer_ttl_ms)
{
    struct meta_fanout *f = xcalloc(1, sizeof(*f));

    f->loop = loop;
    f->max_wait_ms = max_wait_ms ? max_wait_ms : 1000;
    f->answer_ttl_ms = answer_ttl_ms ? answer_ttl_ms : 1000;
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    return f;
}

void meta_fanout_request(struct meta_fanout *f)
{
    if (f->n > 0) {
        f->head = (f->head + 1) % ANSWERS_MAX;
        f->n--;
    }
    if (f->waits) {
        check(f);
    }
}

void meta_fanout_park(struct meta_fanout *f, struct meta_fanout_park *p,
                      uint64_t known)
{
    p->known = known;
    p->prev = NULL;
    p->next = f->parked;
    if (f->parked) {
        f->parked->prev = p;
    }
    f->parked = p;
    if (f->waits) {
        check(f);
    }
}

void meta_fanout_unpark(struct meta_fanout *f, struct meta_fanout_park *p)
{
    if (p->prev) {
        p->prev->next = p->next;
    } else {
        f->parked = p->next;
    }
    if (p->next) {
        p->next->prev = p->prev;
    }
    p->prev = p->next = NULL;
}

void meta_fanout_answered(struct meta_fanout *f)
{
    uint64_t now = uv_now(f->loop);

    if (f->n == ANSWERS_MAX) {
        /* More routers than remembered: forget the oldest answer. */
        f->head = (f->head + 1) % ANSWERS_MAX;
        f->n--;
    }
    f->answers[(f->head + f->n) % ANSWERS_MAX] = now;
    f->n++;
}

void meta_fanout_wait(struct meta_fanout *f, struct meta_fanout_wait *w)
{
    w->deadline = uv_now(f->loop) + f->max_wait_ms;
    w->next = f->waits;
    f->waits = w;
    if (!uv_is_active((uv_handle_t *)&f->timer)) {
        uv_timer_start(&f->timer, on_tick, TICK_MS, TICK_MS);
    }
    check(f);
}

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

void meta_fanout_close(struct meta_fanout *f)
{
    f->closing = true;
    check(f);
    uv_close((uv_handle_t *)&f->timer, on_closed);
}
