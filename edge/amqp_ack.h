/*
 * amqp_ack: a channel's delivery records (by channel delivery tag, with
 * their shard and shard tag) and settling them: basic.ack, reject, nack,
 * recover; single acks of one read batched into one SETTLE per shard.
 * Below amqp_channel.c and amqp_deliver.c; calls neither: the channel
 * learns from chan_op_settle()'s value that credit came back.
 */
#ifndef RINGMQ_AMQP_ACK_H
#define RINGMQ_AMQP_ACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edge/amqp_chan.h"

/* Record delivery @tag (shard tag @shard_tag on @shard) of @consumer; one
 * more unacked on the channel. */
void chan_dl_add(struct amqp_channel *ch, uint64_t tag, uint64_t shard_tag,
                 uint64_t consumer, unsigned shard);
struct consumer *chan_cons_by_id(struct amqp_channel *ch, uint64_t id);
/* SETTLE, RETURN or DROP the records at indexes @sel (sorted) of ch->dl,
 * with broker calls of @op; marks them done. */
void chan_settle(struct chan_op *op, enum mq_sm_cmd_type type, size_t *sel,
                 size_t n);
/* basic.ack / reject / nack / recover on tag (or up to it, @multiple).
 * Returns true when records were settled (credit came back: consumers may
 * ask for more), false after failing @op (unknown tag). */
bool chan_op_settle(struct chan_op *op, enum mq_sm_cmd_type type,
                    uint64_t tag, bool multiple);
/* Send the batched acks (see struct amqp_channel). */
void chan_flush_acks(struct amqp_channel *ch);

#endif
