/*
 * lincheck: is a history of operations on one compare-and-set register
 * linearizable? The register workload's checker (issue 5), after Wing &
 * Gong's search with Lowe's memoization (the way Knossos and Porcupine
 * check it): take, in real-time order, any operation that may go next,
 * apply it to the model, and backtrack when an operation's return passes
 * while it is not yet placed; a (placed set, register value) pair seen once
 * is not searched again.
 *
 * Model: a register that starts as LC_NIL; write v sets v; cas [a b] sets
 * b if the value is a (ok), else changes nothing (fail: an observation that
 * the value was not a); read returns the value.
 *
 * Outcomes, as Jepsen records them:
 *   LC_OK     the operation happened between its call and its return;
 *   LC_FAIL   a cas that saw another value (an observation); a failed read
 *             or write did not happen and is dropped;
 *   LC_INFO   unknown: it may have happened at any time after its call, or
 *             never. A read's unknown answer constrains nothing (dropped);
 *             a write or cas may be placed anywhere after its call.
 *
 * Errors: lc_check returns -1 when the history is too large for the search
 * (LC_MAX_OPS) or memory runs out; the verdict is then unknown.
 */
#ifndef RINGMQ_LINCHECK_H
#define RINGMQ_LINCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LC_NIL INT64_MIN
#define LC_MAX_OPS 4096

enum lc_f { LC_READ = 0, LC_WRITE, LC_CAS };
enum lc_outcome { LC_OK = 0, LC_FAIL, LC_INFO };

struct lc_op {
    int process;
    enum lc_f f;
    enum lc_outcome outcome;
    int64_t value;  /* read: the value read; write: the value written */
    int64_t expect; /* cas: [expect, value] */
    uint64_t call;  /* invocation time (any monotonic unit) */
    uint64_t ret;   /* completion time; ignored for LC_INFO */
};

struct lc_result {
    bool linearizable;
    size_t ops_checked;   /* operations the search had to place */
    uint64_t states;      /* search states explored */
    /* Not linearizable: the longest prefix placed, and the index (into the
     * input) of an operation that could not be placed after it. */
    size_t longest_prefix;
    size_t stuck_op;
};

/* 1 linearizable, 0 not, -1 could not decide. @ops need not be sorted. */
int lc_check(const struct lc_op *ops, size_t n, struct lc_result *res);

/* Parse a Jepsen log ("INFO  jepsen.util - 3\t:ok\t:read\t4" lines; the line
 * number is the time) into a new array (free() it). 0, or -1 with a reason
 * in @err for lines that are not such events or unmatched completions. */
int lc_parse_jepsen_log(const char *text, struct lc_op **out, size_t *n,
                        char *err, size_t errlen);

#endif
