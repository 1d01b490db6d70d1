/*
 * hist: log-linear latency histogram (see hist.h for the layout).
 *
 * Index math, with S = HIST_SUB_BITS and H = 2^(S-1):
 *   v < 2^S          -> index v                      (exact)
 *   otherwise e = msb(v) - (S-1) >= 1, m = v >> e     (m in [H, 2H))
 *                    -> index e*H + m
 * which makes indexes contiguous across exponents (2^S maps to 2H, the
 * index right after the linear range) and invertible: e = idx/H - 1,
 * m = idx - e*H, bucket = [m << e, ((m+1) << e) - 1].
 */
#include "bench/hist.h"

#include <string.h>

#define HALF (UINT64_C(1) << (HIST_SUB_BITS - 1))

static unsigned bucket_index(uint64_t v)
{
    unsigned e;

    if (v > HIST_MAX_VALUE) {
        v = HIST_MAX_VALUE;
    }
    if (v < (UINT64_C(1) << HIST_SUB_BITS)) {
        return (unsigned)v;
    }
    e = (unsigned)(63 - __builtin_clzll(v)) - (HIST_SUB_BITS - 1);
    return (unsigned)(e * HALF + (v >> e));
}

static uint64_t bucket_highest(unsigned idx)
{
    uint64_t e;
    uint64_t m;

    if (idx < (1u << HIST_SUB_BITS)) {
        return idx;
    }
    e = idx / HALF - 1;
    m = idx - e * HALF;
    return ((m + 1) << e) - 1;
}

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void hist_record(struct hist *h, uint64_t value)
{
    h->buckets[bucket_index(value)]++;
    h->count++;
    h->sum += value;
    if (value < h->min) {
        h->min = value;
    }
    if (value > h->max) {
        h->max = value;
    }
}

void hist_add(struct hist *dst, const struct hist *src)
{
    unsigned i;

    for (i = 0; i < HIST_N_BUCKETS; i++) {
        dst->buckets[i] += src->buckets[i];
    }
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min) {
        dst->min = src->min;
    }
    if (src->max > dst->max) {
        dst->max = src->max;
    }
}

uint64_t hist_percentile(const struct hist *h, double p)
{
    uint64_t target;
    uint64_t seen = 0;
    uint64_t v;
    unsigned i;

    if (h->count == 0) {
        return 0;
    }
    if (p <= 0.0) {
        return h->min;
    }
    if (p >= 100.0) {
        return h->max;
    }
    /* ceil without libm: the rank of the sample we want, 1-based. */
    target = (uint64_t)(p / 100.0 * (double)h->count);
    if ((double)target < p / 100.0 * (double)h->count) {
        target++;
    }
    if (target == 0) {
        target = 1;
    }
    for (i = 0; i < HIST_N_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= target) {
            v = bucket_highest(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

double hist_mean(const struct hist *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}
