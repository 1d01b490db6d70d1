/* clock: see clock.h. */
#include "common/clock.h"

#include <time.h>

uint64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t clock_mono_ms(void)
{
    return clock_mono_ns() / 1000000u;
}

uint64_t clock_stamp_next(struct clock_stamp *s, uint64_t wall_ms,
                          uint64_t mono_ms)
{
    uint64_t el, lo, hi, t;

    if (!s->started) {
        s->started = true;
        s->last_ms = s->base_ms = wall_ms;
        s->base_mono = mono_ms;
        return wall_ms;
    }
    el = mono_ms > s->base_mono ? mono_ms - s->base_mono : 0;
    lo = s->base_ms + el - el / CLOCK_STAMP_SLEW;
    hi = s->base_ms + el + el / CLOCK_STAMP_SLEW;
    t = wall_ms < lo ? lo : wall_ms > hi ? hi : wall_ms;
    if (t < s->last_ms) {
        t = s->last_ms;
    }
    s->last_ms = t;
    if (el >= CLOCK_STAMP_REBASE_MS) {
        s->base_ms = t;
        s->base_mono = mono_ms;
    }
    return t;
}

void clock_stamp_seen(struct clock_stamp *s, uint64_t stamp_ms,
                      uint64_t mono_ms)
{
    /* our own stamps come back no newer than the last one made: only
     * another leader's move the base */
    if (!s->started || stamp_ms > s->last_ms) {
        s->started = true;
        s->last_ms = s->base_ms = stamp_ms;
        s->base_mono = mono_ms;
    }
}
