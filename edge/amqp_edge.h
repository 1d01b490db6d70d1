/*
 * amqp_edge: the structures the AMQP edge's three files share; not a public
 * contract (users see amqp_server.h).
 *
 *   amqp_server.c   listener, the tick (EXPIRE to every shard, blocked
 *                   check), dead-letter republishing, broker calls that
 *                   outlive a connection
 *   amqp_conn.c     one TCP connection: protocol header, negotiation,
 *                   frames, heartbeats, connection errors, teardown
 *   amqp_channel.c  one channel: its methods in order, publishes, confirms,
 *                   consumers, deliveries, acks
 *
 * Ownership: the server owns its connections; a connection owns its
 * channels; a channel owns its ops, consumers and delivery records. A broker
 * call (struct edge_call) may outlive what asked for it: it holds a
 * reference on its connection (conn->refs), and its op pointer is cleared
 * when the channel goes (the op stays allocated until its calls finish).
 * Everything runs on the loop thread.
 */
#ifndef RINGMQ_AMQP_EDGE_H
#define RINGMQ_AMQP_EDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/buf.h"
#include "edge/amqp_broker.h"
#include "proto/amqp_frame.h"
#include "proto/amqp_method.h"
#include "edge/amqp_server.h"

#define EDGE_VHOST "/"
#define EDGE_VHOST_LEN 1
/* A held CHECKOUT is answered by the broker within this many ms. */
#define EDGE_CHECKOUT_WAIT_MS 10000
#define EDGE_CHECKOUT_MAX 64
/* Enqueues retried after UNAVAILABLE for this long, then nacked. */
#define EDGE_ENQUEUE_RETRY_MS 10000
#define EDGE_RETRY_TICK_MS 100
/* Largest message body; a Raft entry holds it with room to spare. */
#define EDGE_MESSAGE_MAX (4u * 1024 * 1024 - 64 * 1024)
/* Enqueues in flight per connection before it stops reading; below the
 * queue state machine's dedup window (MQ_SM_DEDUP_WINDOW_DEFAULT). */
#define EDGE_INFLIGHT_ENQUEUES 512
#define EDGE_OUT_HIGH (4u * 1024 * 1024)

struct amqp_conn;
struct amqp_channel;
struct chan_op;

struct amqp_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t tick;
    uv_timer_t retry;
    struct amqp_broker broker;
    struct amqp_server_config cfg;
    char host[256]; /* a literal or a DNS name (up to 253) */
    int port;
    struct amqp_conn *conns;
    uint64_t next_conn_id;
    uint64_t next_consumer;
    struct amqp_server_stats stats;
    struct edge_call *retry_list; /* calls waiting to be resubmitted */
    unsigned handles; /* open uv handles: listener, timers, connections */
    unsigned calls;   /* broker calls in flight */
    bool closing;
    bool blocked;     /* should_block() at the last tick */
    void (*close_cb)(void *data);
    void *close_data;
};

/* One broker call and what it needs to outlive its borrowers. */
struct edge_call {
    struct amqp_broker_call bc;
    struct amqp_server *srv;
    struct amqp_conn *conn; /* referenced, or NULL */
    struct chan_op *op;     /* NULL when not for an op or the op is gone */
    uint64_t chan_uid;      /* channel the call belongs to, or 0 */
    uint64_t consumer;      /* CHECKOUT: consumer id */
    void (*done)(struct edge_call *ec);
    uint64_t deadline_ms;   /* retries after UNAVAILABLE stop here; 0 none */
    uint64_t retry_at_ms;
    uint64_t submitted_ms;  /* last submit */
    struct edge_call *retry_next;
    unsigned index;         /* caller's: which queue of a publish, etc. */
    char queue[256];        /* owned copy of the queue name */
    size_t queue_len;
    struct buf owned;       /* other borrowed bytes (message blob) */
    void *extra;            /* freed with the call */
};

/* ---- amqp_server.c ---- */

struct edge_call *edge_call_new(struct amqp_server *s, struct amqp_conn *conn,
                                void (*done)(struct edge_call *ec));
/* Submit; the call is freed after ec->done returns, unless done resubmitted
 * it with edge_call_retry(). */
void edge_call_submit(struct edge_call *ec);
/* From done: submit the same call again after EDGE_RETRY_TICK_MS. */
void edge_call_retry(struct edge_call *ec);
void edge_call_set_queue(struct edge_call *ec, const void *name, size_t len);

/* RETURN with @scope (CHANNEL/CONNECTION) of @who to every shard, and drop
 * the bindings of queues the return deleted. Outlives the caller. */
void edge_return_everywhere(struct amqp_server *s, enum mq_sm_scope scope,
                            const struct mq_sm_who *who);
/* RETURN (scope TAG) every delivery of CHECKOUT result @r on @shard to
 * @who: deliveries that reached no consumer (it or its channel went). */
void edge_return_deliveries(struct amqp_server *s, unsigned shard,
                            const struct mq_sm_who *who,
                            const struct mq_sm_result *r);
/* Act on what a queue command did beyond its own answer: republish dead
 * letters, drop bindings of deleted queues. */
void edge_after_result(struct amqp_server *s, const struct mq_sm_result *r);

uint64_t edge_new_consumer_id(struct amqp_server *s);
/* A connection's handles closed (the server counts one per connection). */
void edge_server_handle_closed(struct amqp_server *s);

/* ---- amqp_conn.c ---- */

void amqp_conn_accept(struct amqp_server *s);
struct amqp_conn *amqp_conn_next(const struct amqp_conn *c);
/* Close the socket at once (server close, fatal error). */
void amqp_conn_abort(struct amqp_conn *c);
void amqp_conn_set_blocked(struct amqp_conn *c, bool blocked);
/* A channel batched acks: flush them when the current read is done. */
void amqp_conn_note_acks(struct amqp_conn *c);
/* Inside the processing of one read (acks wait for its end). */
bool amqp_conn_reading(const struct amqp_conn *c);
/* The connection published: a watermark now stops its reading. */
void amqp_conn_published(struct amqp_conn *c);
/* Output for the client; the connection writes it when the loop runs. */
struct buf *amqp_conn_out(struct amqp_conn *c);
void amqp_conn_flush(struct amqp_conn *c);
size_t amqp_conn_frame_max(const struct amqp_conn *c);
uint64_t amqp_conn_id(const struct amqp_conn *c);
struct amqp_server *amqp_conn_server(const struct amqp_conn *c);
bool amqp_conn_dead(const struct amqp_conn *c);
void amqp_conn_ref(struct amqp_conn *c);
void amqp_conn_unref(struct amqp_conn *c);
/* Connection exception: connection.close with @code/@text for the failing
 * method @method_id (0 = none), then wait for close-ok. */
void amqp_conn_error(struct amqp_conn *c, uint16_t code, const char *text,
                     uint32_t method_id);
/* A method frame that did not decode (@rv from amqp_method_decode). */
void amqp_conn_decode_error(struct amqp_conn *c, const struct amqp_frame *f,
                            int rv);
struct amqp_channel *amqp_conn_channel(struct amqp_conn *c, uint16_t num);
/* Next publisher dedup sequence of the connection (never 0). */
uint64_t amqp_conn_next_seq(struct amqp_conn *c);
uint64_t amqp_conn_client_id(const struct amqp_conn *c);
void amqp_conn_enqueues(struct amqp_conn *c, int delta);
/* Forget channel @num (its struct is freed by the caller). */
void amqp_conn_channel_gone(struct amqp_conn *c, uint16_t num);

/* ---- amqp_channel.c ---- */

struct amqp_channel *amqp_channel_new(struct amqp_conn *c, uint16_t num,
                                      uint64_t uid);
/* A frame for this channel while it is open. Returns 0, or -1 after it
 * raised a connection error. */
int amqp_channel_frame(struct amqp_channel *ch, const struct amqp_frame *f);
/* channel.close-ok received after our channel.close: forget the channel. */
bool amqp_channel_closing(const struct amqp_channel *ch);
uint64_t amqp_channel_uid(const struct amqp_channel *ch);
/* Free the channel without telling the broker (the connection returns
 * everything of the connection at once). */
void amqp_channel_free(struct amqp_channel *ch);
/* Send the acks batched during a read. */
void amqp_channel_flush_acks(struct amqp_channel *ch);
/* Resume deliveries after the connection's output drained. */
void amqp_channel_kick(struct amqp_channel *ch);

#endif
