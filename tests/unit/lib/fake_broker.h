/*
 * fake_broker: a struct amqp_broker for edge tests: one mq_sm per shard and
 * a meta_sm, applied at once on the loop, no Raft. CHECKOUTs that find
 * nothing wait (as the real services hold them) until a later command on
 * the same shard, or until wait_ms pass.
 *
 * Knob for fault tests: fake_broker_set_unavailable() makes every call
 * complete with OUTCOME_UNAVAILABLE without applying it (safe to call
 * from another thread).
 */
#ifndef RINGMQ_TEST_FAKE_BROKER_H
#define RINGMQ_TEST_FAKE_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "edge/amqp_broker.h"

#define FAKE_BROKER_MAX_SHARDS 4

struct fake_broker;

struct fake_broker *fake_broker_new(uv_loop_t *loop, unsigned shards);
struct amqp_broker fake_broker_table(struct fake_broker *fb);
void fake_broker_set_unavailable(struct fake_broker *fb, bool on);
/* should_block() answers @on (any thread). */
void fake_broker_set_blocked(struct fake_broker *fb, bool on);
/* While @on, applying an ENQUEUE sets blocked before the call completes,
 * as a router hears a shard's watermark in the answer to a publish: the
 * state changes with an answer, not by itself (any thread). */
void fake_broker_block_on_enqueue(struct fake_broker *fb, bool on);
/* The next @n ENQUEUEs answer UNAVAILABLE without being applied, as a
 * leader lost with them in flight (any thread). */
void fake_broker_lose_enqueues(struct fake_broker *fb, unsigned n);
/* The next @n queue commands of @type answer BUSY without being applied,
 * as a shard whose group is full (any thread). */
void fake_broker_busy(struct fake_broker *fb, enum mq_sm_cmd_type type,
                      unsigned n);
/* The next @n queue commands of @type are applied but answer UNAVAILABLE,
 * as a leader lost after it committed them: the reply is lost (any
 * thread). */
void fake_broker_lose_replies(struct fake_broker *fb,
                              enum mq_sm_cmd_type type, unsigned n);
/* While @on, queue commands of @type wait unapplied, in arrival order (a
 * slow commit); once off, the broker's 20 ms timer submits them, in that
 * order (any thread). */
void fake_broker_slow(struct fake_broker *fb, enum mq_sm_cmd_type type,
                      bool on);
/* The commands of slow @type waiting now go on (on the next timer tick,
 * in arrival order); later ones still wait (any thread). */
void fake_broker_release(struct fake_broker *fb, enum mq_sm_cmd_type type);
/* Queue commands of @type waiting because @type is slow (any thread). */
unsigned fake_broker_slowed(struct fake_broker *fb, enum mq_sm_cmd_type type);
/* Queue commands of @type applied so far, on any shard (any thread). */
unsigned fake_broker_applied(struct fake_broker *fb, enum mq_sm_cmd_type type);
/* The time the state machines apply at jumps @ms ahead of the wall clock,
 * for what they decide by time (TTLs, claim windows; any thread). */
void fake_broker_advance_clock(struct fake_broker *fb, uint64_t ms);
/* routable() answers @on (any thread; true at start). */
void fake_broker_set_routable(struct fake_broker *fb, bool on);
struct mq_sm *fake_broker_mq(struct fake_broker *fb, unsigned shard);
/* Complete held calls, and every later one, with CLOSING: a broker going
 * away before its edge has closed (loop thread). */
void fake_broker_close(struct fake_broker *fb);
/* fake_broker_close() and free, once the loop ran their timers' close
 * callbacks. */
void fake_broker_free(struct fake_broker *fb);

#endif
