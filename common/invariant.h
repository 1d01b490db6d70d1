/*
 * invariant: what must hold, checked while running.
 *
 *   INVARIANT(cond)   checked in every build, so only cheap conditions (a
 *                     comparison, a counter): the release build compiles
 *                     assert() out (-DNDEBUG), these stay.
 *   RINGMQ_DEEP_CHECKS is 1 in the sanitizer build (RINGMQ_SANITIZE): the
 *                     state machines then walk their whole state after
 *                     every command (cache_sm_check, mq_sm_check), which
 *                     the tests and the fault lab's sanitizer runs exercise.
 *
 * A broken invariant logs the condition and where, then aborts: state that
 * broke one must not be applied further or replicated (as raft and dqlite
 * abort).
 */
#ifndef RINGMQ_INVARIANT_H
#define RINGMQ_INVARIANT_H

#ifndef RINGMQ_DEEP_CHECKS
#define RINGMQ_DEEP_CHECKS 0
#endif

/* Whether a deep check of a state of about @size elements is due at
 * command @n: every command while the state is small, then every
 * (size / 256)th, so walking it costs about 256 element visits per command
 * (a test that fills a cache with 100,000 keys must not turn quadratic). */
static inline int deep_check_due(unsigned long long n, unsigned long long size)
{
    return RINGMQ_DEEP_CHECKS && n % (size / 256 + 1) == 0;
}

#define INVARIANT(cond)                                                    \
    ((cond) ? (void)0 : invariant_failed(#cond, __FILE__, __LINE__))

_Noreturn void invariant_failed(const char *cond, const char *file, int line);

#endif
