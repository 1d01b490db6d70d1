/*
 * amqp_chan: the state of one AMQP channel, shared by the files of the
 * channel (amqp_channel.c and the operations below it, amqp_op.h), and the
 * channel's view of its connection (struct chan_conn): the few things of
 * the connection a channel uses, as state and functions the connection
 * fills in, so that nothing of a channel calls the connection by name.
 *
 * Ownership: a channel owns its ops, consumers and delivery records. An op
 * with broker calls in flight outlives its channel (op->ch is then NULL)
 * until the last call returns: chan_op_of_call() frees it then. The
 * struct chan_conn is the connection's (embedded in it): its ref keeps it
 * alive for the calls that hold one, after the connection went too.
 */
#ifndef RINGMQ_AMQP_CHAN_H
#define RINGMQ_AMQP_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "edge/amqp_calls.h"
#include "proto/amqp_frame.h"
#include "sm/mq_sm.h"

struct amqp_server_stats;
struct chan_conn;
struct amqp_channel;

/* What a channel asks of its connection. */
struct chan_conn_ops {
    size_t (*frame_max)(const struct chan_conn *cc);
    /* Gone, or closing with connection.close sent: nothing more to do. */
    bool (*dead)(const struct chan_conn *cc);
    /* Inside the processing of one read (acks wait for its end). */
    bool (*reading)(const struct chan_conn *cc);
    /* Write the output now unless inside a read (then it goes after). */
    void (*flush)(struct chan_conn *cc);
    /* A channel batched acks: flush them when the current read is done. */
    void (*note_acks)(struct chan_conn *cc);
    /* The connection published: a watermark now stops its reading. */
    void (*published)(struct chan_conn *cc);
    /* Enqueues in flight changed by @delta (reading stops at a limit). */
    void (*enqueues)(struct chan_conn *cc, int delta);
    /* Connection exception: connection.close with @code/@text for the
     * failing method @method_id (0 = none), then wait for close-ok. */
    void (*error)(struct chan_conn *cc, uint16_t code, const char *text,
                  uint32_t method_id);
    /* A method frame that did not decode (@rv from amqp_method_decode). */
    void (*decode_error)(struct chan_conn *cc, const struct amqp_frame *f,
                         int rv);
    /* Open channel @num, or NULL. */
    struct amqp_channel *(*channel)(struct chan_conn *cc, uint16_t num);
    /* Forget channel @num (its struct is freed by the caller). */
    void (*channel_gone)(struct chan_conn *cc, uint16_t num);
};

struct chan_conn {
    const struct chan_conn_ops *ops;
    struct edge_ref ref;             /* the connection's references */
    struct edge_calls *calls;        /* the edge's broker calls */
    struct amqp_server_stats *stats; /* the edge's counters */
    struct buf *out;                 /* output for the client */
    uint64_t id;                     /* mq_sm who.conn */
    uint64_t client_id;              /* publisher dedup identity */
    uint64_t next_seq;               /* last publisher dedup sequence */
};

struct delivery {
    uint64_t tag; /* channel delivery tag */
    uint64_t shard_tag;
    uint64_t consumer; /* consumer id, or the channel's basic.get id */
    unsigned shard;
    bool done; /* settled, returned or dropped */
};

/* One CHECKOUT of a consumer on its way (amqp_deliver.c). */
struct cons_fetch {
    struct cons_fetch *next; /* seq ascending */
    uint64_t seq;
    uint32_t asked;   /* its max_messages */
    bool waiting;     /* a long poll (wait_ms > 0) */
    bool answered;    /* held in res until every earlier one is answered */
    unsigned shard;   /* answered: the shard that delivered */
    struct mq_sm_who who;
    struct mq_sm_result res;
};

struct consumer {
    struct consumer *next;
    char tag[256];
    size_t tag_len;
    char queue[256];
    size_t queue_len;
    unsigned shard;
    uint64_t id;
    bool no_ack;
    uint32_t unacked;
    /* Its CHECKOUTs on their way, oldest first: answers are delivered in
     * this order, whatever order they come back in. */
    struct cons_fetch *fetches;
    unsigned n_fetches;
    uint32_t asked; /* what they may still bring */
    /* The last answer brought less than it asked: the queue has nothing
     * more for it now, and its next CHECKOUT is a long poll, alone. */
    bool dry;
    /* seq of the last CHECKOUT: a retry keeps it, so a shard that applied
     * one whose reply was lost hands the same deliveries out again */
    uint64_t co_seq;
};

struct chan_op {
    struct chan_op *next;
    struct amqp_channel *ch; /* NULL once the channel is gone */
    uint32_t method;
    bool barrier;
    bool ready; /* a publish waits for its content */
    bool started;
    bool done;
    uint64_t arrived_ms; /* clock_mono_ms() when the method arrived */
    unsigned pending; /* broker calls in flight */
    struct buf payload; /* the method frame's payload */
    struct buf out;     /* frames to send when the op reaches the head */
    uint16_t err_code;
    bool conn_err;
    char err_text[400];
    int step;
    /* publish */
    struct buf blob; /* amqp_msg */
    unsigned targets;
    unsigned stored;
    unsigned failed;
    uint64_t confirm_tag;
    /* consume / declare */
    struct consumer *cons;
    char queue[256];
    size_t queue_len;
};

/* A queue the channel published into, and its last unsettled ENQUEUE
 * (amqp_publish.c). */
#define CHAN_ORDER_SLOTS 8

struct chan_order {
    uint64_t queue_hash;
    struct edge_call *last; /* NULL: the slot is free */
};

struct amqp_channel {
    struct chan_conn *conn;
    /* Start what may start, send what finished (amqp_channel.c's pump):
     * the operations call it when their state changed (chan_wake()). */
    void (*wake)(struct amqp_channel *ch);
    uint16_t num;
    uint64_t uid;
    bool closing; /* our channel.close sent; wait for close-ok */
    bool client_closing; /* the client's channel.close is being done */
    bool freed_after_pump;
    bool in_pump;
    bool pump_again;
    struct chan_op *head;
    struct chan_op *tail;
    struct chan_op *pub; /* publish whose content is arriving */
    bool pub_has_header;
    uint64_t pub_body_size;
    struct buf pub_header;
    struct buf pub_body;
    bool confirm;
    uint64_t confirm_next;
    uint16_t prefetch;        /* per consumer */
    uint16_t global_prefetch; /* per channel */
    bool flow_active;
    struct consumer *consumers;
    struct delivery *dl;
    size_t dl_head;
    size_t dl_len;
    size_t dl_cap;
    uint64_t next_tag;
    uint64_t get_id;
    uint32_t unacked;
    char last_queue[256];
    size_t last_queue_len;
    /* Single acks read in one go, sent together (amqp_ack.c): copies of
     * their records, and the last ack op, held until they are sent. */
    struct delivery *ack_batch;
    size_t ack_n;
    size_t ack_cap;
    struct chan_op *ack_op;
    struct chan_order order[CHAN_ORDER_SLOTS];
    unsigned order_victim; /* the slot a new queue takes when all are used */
};

#endif
