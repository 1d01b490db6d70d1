/*
 * mq_pb: conversions between the AMQP state machine vocabulary
 * (sm/mq_sm.h, sm/meta_sm.h) and its protobuf form (mq.proto),
 * for Raft commands of the "<shard>.mq" and "meta" groups and for RPC.
 *
 * Encoding (*_to_pb): fills a caller-owned buffer struct whose message
 * BORROWS every byte field from the source (nothing copied: keep the source
 * alive until the message is packed); the buffer may hold small arrays of
 * sub-messages, released by its *_clear (always call it, also after an
 * error). Returns -1 if the source holds an out-of-range enum or a length
 * the wire form cannot carry; the buffer is then still safe to clear.
 *
 * Decoding (*_from_pb) takes messages unpacked from untrusted bytes (RPC,
 * a peer's log entry) and must never crash: every enum is range-checked and
 * every name length capped (255, the AMQP shortstr limit); a bad message
 * gives -1 and leaves nothing to release.
 *   - mq_pb_cmd_from_pb and mq_pb_meta_cmd_from_pb BORROW from the message
 *     (keep it until the command is applied); the meta command's args array
 *     is allocated: release it with mq_pb_meta_cmd_release().
 *   - mq_pb_result_from_pb COPIES everything into the layout mq_sm.c
 *     produces, so the result is released with mq_sm_result_clear().
 *   - reply_text of both results is a static string in C: decoding maps
 *     the text to the identical static text of mq_sm/meta_sm when known,
 *     otherwise to a generic text for the reply code.
 */
#ifndef RINGMQ_MQ_PB_H
#define RINGMQ_MQ_PB_H

#include <stddef.h>
#include <stdint.h>

#include "mq.pb-c.h"
#include "sm/meta_sm.h"
#include "sm/mq_sm.h"

/* Largest body a command or result may carry (mq_sm stores uint32 lengths). */
#define MQ_PB_BODY_MAX UINT32_MAX

struct mq_pb_cmd_buf {
    Ringmq__MqCommand pb; /* pack this */
    Ringmq__MqWho who;
    Ringmq__MqQueueArgs args;
};

int mq_pb_cmd_to_pb(const struct mq_sm_cmd *c, uint32_t wait_ms,
                    struct mq_pb_cmd_buf *b);
void mq_pb_cmd_buf_clear(struct mq_pb_cmd_buf *b);
/* @wait_ms may be NULL. */
int mq_pb_cmd_from_pb(const Ringmq__MqCommand *pb, struct mq_sm_cmd *c,
                      uint32_t *wait_ms);

struct mq_pb_result_buf {
    Ringmq__MqResult pb; /* pack this */
    Ringmq__MqDelivery *deliveries;
    Ringmq__MqDelivery **delivery_ptrs;
    Ringmq__MqDeadLetter *dead;
    Ringmq__MqDeadLetter **dead_ptrs;
    Ringmq__MqDeleted *deleted;
    Ringmq__MqDeleted **deleted_ptrs;
};

int mq_pb_result_to_pb(const struct mq_sm_result *r,
                       struct mq_pb_result_buf *b);
void mq_pb_result_buf_clear(struct mq_pb_result_buf *b);
/* @r is initialized here; on -1 it is empty (nothing to clear). */
int mq_pb_result_from_pb(const Ringmq__MqResult *pb, struct mq_sm_result *r);

struct mq_pb_meta_buf {
    Ringmq__MetaCommand pb; /* pack this */
    Ringmq__MetaKv *kv;
    Ringmq__MetaKv **kv_ptrs;
};

int mq_pb_meta_cmd_to_pb(const struct meta_sm_cmd *c,
                         struct mq_pb_meta_buf *b);
void mq_pb_meta_buf_clear(struct mq_pb_meta_buf *b);
/* On 0, c->args is an allocated array (NULL if none) pointing into @pb:
 * call mq_pb_meta_cmd_release(c) when done. */
int mq_pb_meta_cmd_from_pb(const Ringmq__MetaCommand *pb,
                           struct meta_sm_cmd *c);
void mq_pb_meta_cmd_release(struct meta_sm_cmd *c);

/* reply_text borrowed (static), the placement's names borrowed from @r
 * (keep it until the message is packed). snapshot is left unset (NULL): the
 * caller attaches one when it wants the state to travel with the result.
 * Decoding refuses placement names longer than META_SM_SHARD_MAX. */
void mq_pb_meta_result_to_pb(const struct meta_sm_result *r,
                             Ringmq__MetaResult *pb);
int mq_pb_meta_result_from_pb(const Ringmq__MetaResult *pb,
                              struct meta_sm_result *r);

#endif
