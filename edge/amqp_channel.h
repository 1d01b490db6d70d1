/*
 * amqp_channel: one AMQP channel, as its connection (amqp_conn.c) sees it:
 * frames in, acks flushed at the end of a read, consumers resumed when the
 * output drained, freed with the connection. The channel reaches its
 * connection only through the struct chan_conn it is given (amqp_chan.h).
 *
 * Ownership: the connection owns its channels; a channel that finishes
 * its close (close-ok received, or the client's close done) tells the
 * connection with cc->ops->channel_gone() and frees itself.
 * Everything runs on the loop thread.
 */
#ifndef RINGMQ_AMQP_CHANNEL_H
#define RINGMQ_AMQP_CHANNEL_H

#include <stdint.h>

#include "proto/amqp_frame.h"

struct amqp_channel;
struct chan_conn;

/* @cc is borrowed for the channel's life (and by its broker calls, which
 * hold cc->ref). */
struct amqp_channel *amqp_channel_new(struct chan_conn *cc, uint16_t num,
                                      uint64_t uid);
/* A frame for this channel while it is open. Returns 0, or -1 after it
 * raised a connection error. */
int amqp_channel_frame(struct amqp_channel *ch, const struct amqp_frame *f);
/* Free the channel without telling the broker (the connection returns
 * everything of the connection at once). */
void amqp_channel_free(struct amqp_channel *ch);
/* Send the acks batched during a read. */
void amqp_channel_flush_acks(struct amqp_channel *ch);
/* Resume deliveries after the connection's output drained. */
void amqp_channel_kick(struct amqp_channel *ch);
/* Start what may start now (publishes held for a routable view: started,
 * or nacked once held too long). May free the channel. */
void amqp_channel_pump(struct amqp_channel *ch);

#endif
