/*
 * model_run: what the model-based random tests of tests/unit/sm share: a
 * seeded PRNG, the seeds and length of a run taken from the environment,
 * and a check that names the seed and step when it fails.
 *
 *   RINGMQ_TEST_SEED=N     run only seed N (replays a failure)
 *   RINGMQ_MODEL_SEEDS=N   seeds 1..N (default: the test's own)
 *   RINGMQ_MODEL_STEPS=N   steps per seed (default: the test's own)
 *
 * Header only: each test is one executable (tests/unit/CMakeLists.txt).
 */
#ifndef RINGMQ_TEST_MODEL_RUN_H
#define RINGMQ_TEST_MODEL_RUN_H

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* splitmix64: tiny, and the same sequence on every host */
struct model_rng {
    uint64_t s;
};

static inline uint64_t model_next(struct model_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* 0..n-1 (n > 0); the slight modulo bias does not matter here */
static inline uint64_t model_below(struct model_rng *r, uint64_t n)
{
    return model_next(r) % n;
}

static inline bool model_percent(struct model_rng *r, unsigned pct)
{
    return model_below(r, 100) < pct;
}

/* An index into @mix, an array of structs with an `unsigned weight`
 * member, drawn with probability proportional to the weights. */
#define MODEL_PICK(rng, mix)                                                 \
    model_pick((rng), &(mix)[0].weight, sizeof(mix) / sizeof((mix)[0]),     \
               sizeof((mix)[0]))

static inline size_t model_pick(struct model_rng *r, const unsigned *weight0,
                                size_t n, size_t stride)
{
    const char *w = (const char *)weight0;
    uint64_t total = 0, pick;
    size_t i;

    for (i = 0; i < n; i++) {
        total += *(const unsigned *)(const void *)(w + i * stride);
    }
    pick = model_below(r, total);
    for (i = 0; pick >= *(const unsigned *)(const void *)(w + i * stride);
         i++) {
        pick -= *(const unsigned *)(const void *)(w + i * stride);
    }
    return i;
}

/* Where a run is, for the failure message. */
struct model_where {
    uint64_t seed;
    unsigned long step;
};

static inline unsigned long model_env(const char *name, unsigned long dflt)
{
    const char *s = getenv(name);
    char *end;
    unsigned long v;

    if (s == NULL || *s == '\0') {
        return dflt;
    }
    v = strtoul(s, &end, 10);
    return *end == '\0' ? v : dflt;
}

/* The seeds to run: RINGMQ_TEST_SEED alone, or 1..RINGMQ_MODEL_SEEDS. */
static inline void model_seeds(unsigned long dflt_seeds, uint64_t *first,
                               uint64_t *last)
{
    const char *one = getenv("RINGMQ_TEST_SEED");

    if (one != NULL && *one != '\0') {
        *first = *last = strtoull(one, NULL, 10);
        return;
    }
    *first = 1;
    *last = model_env("RINGMQ_MODEL_SEEDS", dflt_seeds);
}

/* A failed check prints the seed and step and how to replay, then fails the
 * cmocka test. */
#define MODEL_CHECK(where, cond, ...)                                        \
    do {                                                                     \
        if (!(cond)) {                                                       \
            print_error("%s:%d: seed %" PRIu64 " step %lu: ", __FILE__,      \
                        __LINE__, (where)->seed, (where)->step);             \
            print_error(__VA_ARGS__);                                        \
            print_error("\nreplay: RINGMQ_TEST_SEED=%" PRIu64 "\n",          \
                        (where)->seed);                                      \
            fail();                                                          \
        }                                                                    \
    } while (0)

#endif
