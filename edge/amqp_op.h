/*
 * amqp_op: what the operations of a channel share: ops (one per method, in
 * the channel's FIFO: new, fail, reply, broker calls on their behalf),
 * queue names, and the channel's connection seen through struct chan_conn
 * (amqp_chan.h). Below amqp_channel.c and the per-method files
 * (amqp_declare, amqp_exchange, amqp_deliver, amqp_ack, amqp_publish);
 * calls none of them: what the channel must learn comes back through
 * chan_wake(), its function pointer.
 *
 * Ownership as in amqp_chan.h. Everything runs on the loop thread.
 */
#ifndef RINGMQ_AMQP_OP_H
#define RINGMQ_AMQP_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edge/amqp_calls.h"
#include "edge/amqp_chan.h"
#include "proto/amqp_method.h"
#include "proto/amqp_msg.h"

/* ---- the channel and its connection */

struct mq_sm_who chan_who(const struct amqp_channel *ch);
struct buf *chan_out(struct amqp_channel *ch);
size_t chan_frame_max(const struct amqp_channel *ch);
void chan_flush(struct amqp_channel *ch);
bool chan_conn_dead(const struct amqp_channel *ch);
/* Connection exception (struct chan_conn_ops.error). */
void chan_conn_error(struct amqp_channel *ch, uint16_t code, const char *text,
                     uint32_t method_id);
/* The channel's state changed: run its pump (start what may start, send
 * what finished, in order). Re-entrant. */
void chan_wake(struct amqp_channel *ch);
/* The connection that made @ec, or NULL (a call of no channel). */
struct chan_conn *chan_conn_of_call(const struct edge_call *ec);
/* The channel of @ec if it is still the one that made the call. */
struct amqp_channel *chan_of_call(const struct edge_call *ec, uint16_t num);
unsigned chan_shard_of(struct amqp_channel *ch, const char *q, size_t len);
/* basic.deliver / get-ok / return @m with the message of @v into @out. */
void chan_emit_delivery(struct amqp_channel *ch, struct buf *out,
                        const struct amqp_method *m,
                        const struct amqp_msg_view *v);

/* ---- ops */

/* Appended to the channel's FIFO. */
struct chan_op *chan_op_new(struct amqp_channel *ch, uint32_t method,
                            bool barrier);
void chan_op_free(struct chan_op *op);
/* Finish @op with a channel exception (or a connection one, 5xx/530). */
void chan_op_fail(struct chan_op *op, uint16_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void chan_op_reply(struct chan_op *op, const struct amqp_method *m);
void chan_op_reply_simple(struct chan_op *op, uint32_t id);
/* A broker call on behalf of @op (counted in op->pending). */
struct edge_call *chan_op_call(struct chan_op *op,
                               void (*done)(struct edge_call *ec));
/* In a call's done: its op, or NULL if the channel went (the op is freed
 * with its last call). */
struct chan_op *chan_op_of_call(struct edge_call *ec);
/* Resolve "" to the channel's last declared queue (RabbitMQ's rule) into
 * op->queue. Returns false after failing @op. */
bool chan_op_queue_name(struct chan_op *op, struct amqp_bytes name);
/* @prefix + 22 random characters, as RabbitMQ names amq.gen-* and
 * amq.ctag-*. */
void chan_gen_name(char *out, size_t *len, const char *prefix);

#endif
