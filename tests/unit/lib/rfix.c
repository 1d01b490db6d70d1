/* rfix: see rfix.h. */
#include "tests/unit/lib/rfix.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

void rfix_start(struct raft_fixture *f, struct raft_fsm *const *fsms,
                unsigned n)
{
    struct raft_configuration conf;
    unsigned i;

    assert_int_equal(raft_fixture_initialize(f), 0);
    for (i = 0; i < n; i++) {
        assert_int_equal(raft_fixture_grow(f, fsms[i]), 0);
    }
    assert_int_equal(raft_fixture_configuration(f, n, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(f), 0);
}

struct req {
    struct raft_apply apply;
    struct rfix_counts *c;
};

static void apply_done(struct raft_apply *r, int status, void *result)
{
    struct req *q = (struct req *)r;

    assert_null(result);
    if (status == 0) {
        q->c->ok++;
    } else {
        q->c->failed++;
    }
    free(q);
}

raft_index rfix_apply(struct raft *r, struct raft_buffer *buf,
                      struct rfix_counts *c)
{
    struct req *q = calloc(1, sizeof(*q));
    raft_index index;

    assert_non_null(q);
    q->c = c;
    assert_int_equal(raft_apply(r, &q->apply, buf, 1, apply_done), 0);
    index = q->apply.index;
    return index;
}
