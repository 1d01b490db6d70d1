/*
 * amqp_chan: what the files of one AMQP channel share; private to
 * edge/amqp_channel.c (ops, order, input, close), amqp_deliver.c
 * (consumers, deliveries, acks, basic.get), amqp_declare.c (queue and
 * exchange methods) and amqp_publish.c (publish, confirms, returns). The
 * design is described at the top of amqp_channel.c.
 *
 * Ownership: a channel owns its ops, consumers and delivery records. An op
 * with broker calls in flight outlives its channel (op->ch is then NULL)
 * until the last call returns: chan_op_of_call() frees it then.
 */
#ifndef RINGMQ_AMQP_CHAN_H
#define RINGMQ_AMQP_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edge/amqp_edge.h"
#include "proto/amqp_msg.h"

struct delivery {
    uint64_t tag; /* channel delivery tag */
    uint64_t shard_tag;
    uint64_t consumer; /* consumer id, or the channel's basic.get id */
    unsigned shard;
    bool done; /* settled, returned or dropped */
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
    bool polling; /* a CHECKOUT is in the broker */
    uint32_t unacked;
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

struct amqp_channel {
    struct amqp_conn *conn;
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
    /* Single acks read in one go, sent together (amqp_deliver.c): copies
     * of their records, and the last ack op, held until they are sent. */
    struct delivery *ack_batch;
    size_t ack_n;
    size_t ack_cap;
    struct chan_op *ack_op;
};

/* ---- amqp_channel.c ---- */

struct amqp_server *chan_srv(const struct amqp_channel *ch);
struct mq_sm_who chan_who(const struct amqp_channel *ch);
/* The channel of @ec if it is still the one that made the call. */
struct amqp_channel *chan_of_call(const struct edge_call *ec, uint16_t num);
/* Start what may start, send what finished, in order. Re-entrant. */
void chan_pump(struct amqp_channel *ch);
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
unsigned chan_shard_of(struct amqp_channel *ch, const char *q, size_t len);
/* Resolve "" to the channel's last declared queue (RabbitMQ's rule) into
 * op->queue. Returns false after failing @op. */
bool chan_op_queue_name(struct chan_op *op, struct amqp_bytes name);
/* @prefix + 22 random characters, as RabbitMQ names amq.gen-* and
 * amq.ctag-*. */
void chan_gen_name(char *out, size_t *len, const char *prefix);

/* ---- amqp_deliver.c ---- */

struct consumer *chan_cons_by_id(struct amqp_channel *ch, uint64_t id);
/* Keep one CHECKOUT waiting for @cs while it has credit. */
void chan_cons_arm(struct amqp_channel *ch, struct consumer *cs);
void chan_emit_delivery(struct amqp_channel *ch, struct buf *out,
                        const struct amqp_method *m,
                        const struct amqp_msg_view *v);
/* SETTLE, RETURN or DROP the records at indexes @sel (sorted) of ch->dl. */
void chan_settle(struct chan_op *op, enum mq_sm_cmd_type type, size_t *sel,
                 size_t n);
/* basic.ack / reject / nack / recover on tag (or up to it, @multiple). */
void chan_op_settle(struct chan_op *op, enum mq_sm_cmd_type type,
                    uint64_t tag, bool multiple);
/* Send the batched acks (see struct amqp_channel). */
void chan_flush_acks(struct amqp_channel *ch);
void chan_start_consume(struct chan_op *op,
                        const struct amqp_basic_consume *c);
void chan_start_cancel(struct chan_op *op, const struct amqp_basic_cancel *c);
void chan_start_get(struct chan_op *op, const struct amqp_basic_get *g);

/* ---- amqp_declare.c ---- */

void chan_fail_queue(struct chan_op *op, const struct mq_sm_result *r);
void chan_fail_unavailable(struct chan_op *op);
/* Encoded (key, field value) pairs of @t for meta_sm, copied into @store
 * (which must outlive them); free() the array. NULL when @t is empty. */
struct meta_sm_kv *chan_table_kv(const struct amqp_table *t,
                                 struct buf *store, size_t *n);
void chan_start_queue_declare(struct chan_op *op,
                              const struct amqp_queue_declare *q);
void chan_start_queue_simple(struct chan_op *op, const struct amqp_method *m);
void chan_start_queue_bind(struct chan_op *op, const struct amqp_method *m);
void chan_start_exchange(struct chan_op *op, const struct amqp_method *m);

/* ---- amqp_publish.c ---- */

/* The publish op's content is complete: route, enqueue, confirm. */
void chan_start_publish(struct chan_op *op);

#endif
