/*
 * tsm: a tiny state machine for raft/ tests: an ordered list of uint32
 * commands and their sum, behind struct rgroup_fsm (tsm_ops, raft/types.h).
 *
 * apply checks what every test relies on (4-byte commands; with
 * want_wall_clock, a wall-clock stamp) and, for commands this replica
 * proposed, either calls @on_mine or checks that @mine is the command being
 * applied. snapshot/restore serialize the whole list.
 */
#ifndef RINGMQ_TEST_TSM_H
#define RINGMQ_TEST_TSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/types.h"

struct tsm {
    uint32_t *vals;
    size_t n, cap;
    uint64_t sum;
    uint64_t last_time;
    unsigned mine_seen;
    unsigned restores;
    bool fail_snapshot;   /* snapshot returns -1 */
    unsigned snapshot_sleep_ms; /* snapshot sleeps first: a large state */
    bool want_wall_clock; /* apply asserts time_ms is a wall-clock stamp */
    void (*on_mine)(struct tsm *t, struct rgroup_cmd *mine, uint32_t v);
};

extern const struct rgroup_fsm tsm_ops;

void tsm_apply(void *data, uint64_t time_ms, const void *cmd, size_t len,
               struct rgroup_cmd *mine);
int tsm_snapshot(void *data, void **buf, size_t *len);
int tsm_restore(void *data, const void *buf, size_t len);
void tsm_free(struct tsm *t);

#endif
