/* tsm: see tsm.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/unit/lib/tsm.h"

const struct rgroup_fsm tsm_ops = {
    .apply = tsm_apply,
    .snapshot = tsm_snapshot,
    .restore = tsm_restore,
};

void tsm_apply(void *data, uint64_t time_ms, const void *cmd, size_t len,
               struct rgroup_cmd *mine)
{
    struct tsm *t = data;
    uint32_t v;

    if (t->want_wall_clock) {
        assert_true(time_ms > 1600000000000ull);
    }
    assert_int_equal(len, sizeof v);
    memcpy(&v, cmd, sizeof v);
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 256;
        t->vals = realloc(t->vals, t->cap * sizeof *t->vals);
    }
    t->vals[t->n++] = v;
    t->sum += v;
    t->last_time = time_ms;
    if (mine != NULL) {
        t->mine_seen++;
        if (t->on_mine != NULL) {
            t->on_mine(t, mine, v);
        } else {
            assert_int_equal(mine->len, len);
            assert_memory_equal(mine->payload, cmd, len);
        }
    }
}

int tsm_snapshot(void *data, void **buf, size_t *len)
{
    struct tsm *t = data;
    uint8_t *p;

    if (t->fail_snapshot) {
        return -1;
    }
    if (t->snapshot_sleep_ms > 0) {
        usleep(t->snapshot_sleep_ms * 1000u);
    }
    *len = 16 + t->n * sizeof(uint32_t);
    p = malloc(*len);
    memcpy(p, &t->n, 8);
    memcpy(p + 8, &t->sum, 8);
    if (t->n > 0) {
        memcpy(p + 16, t->vals, t->n * sizeof(uint32_t));
    }
    *buf = p;
    return 0;
}

int tsm_restore(void *data, const void *buf, size_t len)
{
    struct tsm *t = data;
    const uint8_t *p = buf;
    uint64_t n;

    if (len < 16) {
        return -1;
    }
    memcpy(&n, p, 8);
    if (len != 16 + n * sizeof(uint32_t)) {
        return -1;
    }
    free(t->vals);
    t->n = t->cap = (size_t)n;
    t->vals = malloc(n > 0 ? n * sizeof(uint32_t) : 1);
    if (n > 0) {
        memcpy(t->vals, p + 16, n * sizeof(uint32_t));
    }
    memcpy(&t->sum, p + 8, 8);
    t->restores++;
    return 0;
}

void tsm_free(struct tsm *t)
{
    free(t->vals);
    t->vals = NULL;
    t->n = t->cap = 0;
}
