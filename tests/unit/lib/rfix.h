/*
 * rfix: a raft_fixture cluster for tests of the raft/ adapter: one server
 * per raft_fsm, bootstrapped with all of them as voters and started; and
 * raft_apply of one buffer with its outcome counted.
 */
#ifndef RINGMQ_TEST_RFIX_H
#define RINGMQ_TEST_RFIX_H

#include <raft.h>
#include <raft/fixture.h>

/* Initialize @f with @n servers over @fsms (which must outlive
 * raft_fixture_close), bootstrap and start them; cmocka-asserts. */
void rfix_start(struct raft_fixture *f, struct raft_fsm *const *fsms,
                unsigned n);

/* Outcomes of rfix_apply's requests so far. */
struct rfix_counts {
    unsigned ok;
    unsigned failed;
};

/* raft_apply @buf (ownership to raft) on @r; the outcome counted in @c
 * (which must outlive the request). Returns the entry's index. */
raft_index rfix_apply(struct raft *r, struct raft_buffer *buf,
                      struct rfix_counts *c);

#endif
