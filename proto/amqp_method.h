/*
 * amqp_method: AMQP 0-9-1 method frames and content headers.
 *
 * A method frame's payload is class-id (short), method-id (short) and the
 * method's arguments in order. Argument domains: octet, short, long,
 * longlong, shortstr, longstr, timestamp (longlong), table, and bit:
 * consecutive bit arguments share octets, the first in the least
 * significant bit, at most 8 per octet; any other argument ends the run.
 *
 * The class/method table (amqp_method.c) is written by hand from the
 * 0-9-1 spec plus RabbitMQ's extensions (exchange.bind/unbind,
 * basic.nack, confirm, connection.blocked/unblocked); it covers what the
 * broker speaks: connection, channel, exchange, queue, basic, confirm, tx.
 * Reserved arguments keep RabbitMQ's names (ticket, out_of_band, ...) and
 * are decoded and re-encoded like the others.
 *
 * A decoded method is a struct amqp_method: the id says which member of
 * its anonymous union is valid, e.g. m->queue_declare.queue when
 * m->id == AMQP_QUEUE_DECLARE. Ownership after decode: shortstr/longstr
 * arguments borrow the frame payload (valid while the payload is); table
 * arguments are trees owned by the method, released by amqp_method_free()
 * (call it after every successful decode).
 *
 * A content header (frame type 2) is class-id, weight (unused, 0), body
 * size (longlong), property flags and the present properties; basic is the
 * only class with content, its 14 properties are struct
 * amqp_basic_properties.
 */
#ifndef RINGMQ_AMQP_METHOD_H
#define RINGMQ_AMQP_METHOD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "proto/amqp_codec.h"
#include "proto/amqp_table.h"

#define AMQP_CLASS_CONNECTION 10
#define AMQP_CLASS_CHANNEL 20
#define AMQP_CLASS_EXCHANGE 40
#define AMQP_CLASS_QUEUE 50
#define AMQP_CLASS_BASIC 60
#define AMQP_CLASS_CONFIRM 85
#define AMQP_CLASS_TX 90

#define AMQP_METHOD_ID(class_id, method_id) \
    (((uint32_t)(class_id) << 16) | (uint32_t)(method_id))
#define AMQP_METHOD_CLASS(id) ((uint16_t)((id) >> 16))
#define AMQP_METHOD_INDEX(id) ((uint16_t)((id)&0xffff))

enum amqp_method_id {
    AMQP_CONNECTION_START = AMQP_METHOD_ID(10, 10),
    AMQP_CONNECTION_START_OK = AMQP_METHOD_ID(10, 11),
    AMQP_CONNECTION_SECURE = AMQP_METHOD_ID(10, 20),
    AMQP_CONNECTION_SECURE_OK = AMQP_METHOD_ID(10, 21),
    AMQP_CONNECTION_TUNE = AMQP_METHOD_ID(10, 30),
    AMQP_CONNECTION_TUNE_OK = AMQP_METHOD_ID(10, 31),
    AMQP_CONNECTION_OPEN = AMQP_METHOD_ID(10, 40),
    AMQP_CONNECTION_OPEN_OK = AMQP_METHOD_ID(10, 41),
    AMQP_CONNECTION_CLOSE = AMQP_METHOD_ID(10, 50),
    AMQP_CONNECTION_CLOSE_OK = AMQP_METHOD_ID(10, 51),
    AMQP_CONNECTION_BLOCKED = AMQP_METHOD_ID(10, 60),
    AMQP_CONNECTION_UNBLOCKED = AMQP_METHOD_ID(10, 61),

    AMQP_CHANNEL_OPEN = AMQP_METHOD_ID(20, 10),
    AMQP_CHANNEL_OPEN_OK = AMQP_METHOD_ID(20, 11),
    AMQP_CHANNEL_FLOW = AMQP_METHOD_ID(20, 20),
    AMQP_CHANNEL_FLOW_OK = AMQP_METHOD_ID(20, 21),
    AMQP_CHANNEL_CLOSE = AMQP_METHOD_ID(20, 40),
    AMQP_CHANNEL_CLOSE_OK = AMQP_METHOD_ID(20, 41),

    AMQP_EXCHANGE_DECLARE = AMQP_METHOD_ID(40, 10),
    AMQP_EXCHANGE_DECLARE_OK = AMQP_METHOD_ID(40, 11),
    AMQP_EXCHANGE_DELETE = AMQP_METHOD_ID(40, 20),
    AMQP_EXCHANGE_DELETE_OK = AMQP_METHOD_ID(40, 21),
    AMQP_EXCHANGE_BIND = AMQP_METHOD_ID(40, 30),
    AMQP_EXCHANGE_BIND_OK = AMQP_METHOD_ID(40, 31),
    AMQP_EXCHANGE_UNBIND = AMQP_METHOD_ID(40, 40),
    AMQP_EXCHANGE_UNBIND_OK = AMQP_METHOD_ID(40, 51), /* sic: 51 */

    AMQP_QUEUE_DECLARE = AMQP_METHOD_ID(50, 10),
    AMQP_QUEUE_DECLARE_OK = AMQP_METHOD_ID(50, 11),
    AMQP_QUEUE_BIND = AMQP_METHOD_ID(50, 20),
    AMQP_QUEUE_BIND_OK = AMQP_METHOD_ID(50, 21),
    AMQP_QUEUE_PURGE = AMQP_METHOD_ID(50, 30),
    AMQP_QUEUE_PURGE_OK = AMQP_METHOD_ID(50, 31),
    AMQP_QUEUE_DELETE = AMQP_METHOD_ID(50, 40),
    AMQP_QUEUE_DELETE_OK = AMQP_METHOD_ID(50, 41),
    AMQP_QUEUE_UNBIND = AMQP_METHOD_ID(50, 50),
    AMQP_QUEUE_UNBIND_OK = AMQP_METHOD_ID(50, 51),

    AMQP_BASIC_QOS = AMQP_METHOD_ID(60, 10),
    AMQP_BASIC_QOS_OK = AMQP_METHOD_ID(60, 11),
    AMQP_BASIC_CONSUME = AMQP_METHOD_ID(60, 20),
    AMQP_BASIC_CONSUME_OK = AMQP_METHOD_ID(60, 21),
    AMQP_BASIC_CANCEL = AMQP_METHOD_ID(60, 30),
    AMQP_BASIC_CANCEL_OK = AMQP_METHOD_ID(60, 31),
    AMQP_BASIC_PUBLISH = AMQP_METHOD_ID(60, 40),
    AMQP_BASIC_RETURN = AMQP_METHOD_ID(60, 50),
    AMQP_BASIC_DELIVER = AMQP_METHOD_ID(60, 60),
    AMQP_BASIC_GET = AMQP_METHOD_ID(60, 70),
    AMQP_BASIC_GET_OK = AMQP_METHOD_ID(60, 71),
    AMQP_BASIC_GET_EMPTY = AMQP_METHOD_ID(60, 72),
    AMQP_BASIC_ACK = AMQP_METHOD_ID(60, 80),
    AMQP_BASIC_REJECT = AMQP_METHOD_ID(60, 90),
    AMQP_BASIC_RECOVER_ASYNC = AMQP_METHOD_ID(60, 100),
    AMQP_BASIC_RECOVER = AMQP_METHOD_ID(60, 110),
    AMQP_BASIC_RECOVER_OK = AMQP_METHOD_ID(60, 111),
    AMQP_BASIC_NACK = AMQP_METHOD_ID(60, 120),

    AMQP_CONFIRM_SELECT = AMQP_METHOD_ID(85, 10),
    AMQP_CONFIRM_SELECT_OK = AMQP_METHOD_ID(85, 11),

    AMQP_TX_SELECT = AMQP_METHOD_ID(90, 10),
    AMQP_TX_SELECT_OK = AMQP_METHOD_ID(90, 11),
    AMQP_TX_COMMIT = AMQP_METHOD_ID(90, 20),
    AMQP_TX_COMMIT_OK = AMQP_METHOD_ID(90, 21),
    AMQP_TX_ROLLBACK = AMQP_METHOD_ID(90, 30),
    AMQP_TX_ROLLBACK_OK = AMQP_METHOD_ID(90, 31)
};

/* ---- argument structs (methods without arguments have none) ---------- */

struct amqp_connection_start {
    uint8_t version_major; /* 0 */
    uint8_t version_minor; /* 9 */
    struct amqp_table *server_properties;
    struct amqp_bytes mechanisms; /* space-separated, e.g. "PLAIN AMQPLAIN" */
    struct amqp_bytes locales;    /* space-separated, e.g. "en_US" */
};

struct amqp_connection_start_ok {
    struct amqp_table *client_properties;
    struct amqp_bytes mechanism;
    struct amqp_bytes response; /* PLAIN: "\0user\0password" */
    struct amqp_bytes locale;
};

struct amqp_connection_secure {
    struct amqp_bytes challenge;
};

struct amqp_connection_secure_ok {
    struct amqp_bytes response;
};

/* tune and tune-ok have the same arguments. */
struct amqp_connection_tune {
    uint16_t channel_max; /* 0: no limit */
    uint32_t frame_max;   /* 0: no limit */
    uint16_t heartbeat;   /* seconds, 0: none */
};

struct amqp_connection_open {
    struct amqp_bytes virtual_host;
    struct amqp_bytes capabilities; /* reserved-1 */
    bool insist;                    /* reserved-2 */
};

struct amqp_connection_open_ok {
    struct amqp_bytes known_hosts; /* reserved-1 */
};

/* connection.close and channel.close. */
struct amqp_close {
    uint16_t reply_code;
    struct amqp_bytes reply_text;
    uint16_t class_id;  /* of the failing method, or 0 */
    uint16_t method_id; /* of the failing method, or 0 */
};

struct amqp_connection_blocked {
    struct amqp_bytes reason;
};

struct amqp_channel_open {
    struct amqp_bytes out_of_band; /* reserved-1 */
};

struct amqp_channel_open_ok {
    struct amqp_bytes channel_id; /* reserved-1 (longstr) */
};

/* channel.flow and channel.flow-ok. */
struct amqp_channel_flow {
    bool active;
};

struct amqp_exchange_declare {
    uint16_t ticket; /* reserved-1 */
    struct amqp_bytes exchange;
    struct amqp_bytes type;
    bool passive;
    bool durable;
    bool auto_delete; /* reserved-2 in the spec; RabbitMQ's auto-delete */
    bool internal;    /* reserved-3 in the spec; RabbitMQ's internal */
    bool no_wait;
    struct amqp_table *arguments;
};

struct amqp_exchange_delete {
    uint16_t ticket;
    struct amqp_bytes exchange;
    bool if_unused;
    bool no_wait;
};

/* exchange.bind and exchange.unbind. */
struct amqp_exchange_bind {
    uint16_t ticket;
    struct amqp_bytes destination;
    struct amqp_bytes source;
    struct amqp_bytes routing_key;
    bool no_wait;
    struct amqp_table *arguments;
};

struct amqp_queue_declare {
    uint16_t ticket;
    struct amqp_bytes queue;
    bool passive;
    bool durable;
    bool exclusive;
    bool auto_delete;
    bool no_wait;
    struct amqp_table *arguments;
};

struct amqp_queue_declare_ok {
    struct amqp_bytes queue;
    uint32_t message_count;
    uint32_t consumer_count;
};

struct amqp_queue_bind {
    uint16_t ticket;
    struct amqp_bytes queue;
    struct amqp_bytes exchange;
    struct amqp_bytes routing_key;
    bool no_wait;
    struct amqp_table *arguments;
};

struct amqp_queue_purge {
    uint16_t ticket;
    struct amqp_bytes queue;
    bool no_wait;
};

/* queue.purge-ok and queue.delete-ok. */
struct amqp_queue_message_count {
    uint32_t message_count;
};

struct amqp_queue_delete {
    uint16_t ticket;
    struct amqp_bytes queue;
    bool if_unused;
    bool if_empty;
    bool no_wait;
};

struct amqp_queue_unbind {
    uint16_t ticket;
    struct amqp_bytes queue;
    struct amqp_bytes exchange;
    struct amqp_bytes routing_key;
    struct amqp_table *arguments;
};

struct amqp_basic_qos {
    uint32_t prefetch_size;
    uint16_t prefetch_count;
    bool global;
};

struct amqp_basic_consume {
    uint16_t ticket;
    struct amqp_bytes queue;
    struct amqp_bytes consumer_tag;
    bool no_local;
    bool no_ack;
    bool exclusive;
    bool no_wait;
    struct amqp_table *arguments;
};

/* basic.consume-ok and basic.cancel-ok. */
struct amqp_basic_consumer_tag {
    struct amqp_bytes consumer_tag;
};

struct amqp_basic_cancel {
    struct amqp_bytes consumer_tag;
    bool no_wait;
};

struct amqp_basic_publish {
    uint16_t ticket;
    struct amqp_bytes exchange;
    struct amqp_bytes routing_key;
    bool mandatory;
    bool immediate;
};

struct amqp_basic_return {
    uint16_t reply_code;
    struct amqp_bytes reply_text;
    struct amqp_bytes exchange;
    struct amqp_bytes routing_key;
};

struct amqp_basic_deliver {
    struct amqp_bytes consumer_tag;
    uint64_t delivery_tag;
    bool redelivered;
    struct amqp_bytes exchange;
    struct amqp_bytes routing_key;
};

struct amqp_basic_get {
    uint16_t ticket;
    struct amqp_bytes queue;
    bool no_ack;
};

struct amqp_basic_get_ok {
    uint64_t delivery_tag;
    bool redelivered;
    struct amqp_bytes exchange;
    struct amqp_bytes routing_key;
    uint32_t message_count;
};

struct amqp_basic_get_empty {
    struct amqp_bytes cluster_id; /* reserved-1 */
};

struct amqp_basic_ack {
    uint64_t delivery_tag;
    bool multiple;
};

struct amqp_basic_reject {
    uint64_t delivery_tag;
    bool requeue;
};

/* basic.recover and basic.recover-async. */
struct amqp_basic_recover {
    bool requeue;
};

struct amqp_basic_nack {
    uint64_t delivery_tag;
    bool multiple;
    bool requeue;
};

struct amqp_confirm_select {
    bool no_wait;
};

struct amqp_method_info;

/* A decoded (or to-be-encoded) method. Zero it (amqp_method_init) before
 * filling it in for encoding. */
struct amqp_method {
    uint32_t id;                         /* enum amqp_method_id */
    const struct amqp_method_info *info; /* set by decode / init */
    union {
        struct amqp_connection_start connection_start;
        struct amqp_connection_start_ok connection_start_ok;
        struct amqp_connection_secure connection_secure;
        struct amqp_connection_secure_ok connection_secure_ok;
        struct amqp_connection_tune connection_tune;
        struct amqp_connection_tune connection_tune_ok;
        struct amqp_connection_open connection_open;
        struct amqp_connection_open_ok connection_open_ok;
        struct amqp_close connection_close;
        struct amqp_connection_blocked connection_blocked;
        struct amqp_channel_open channel_open;
        struct amqp_channel_open_ok channel_open_ok;
        struct amqp_channel_flow channel_flow;
        struct amqp_channel_flow channel_flow_ok;
        struct amqp_close channel_close;
        struct amqp_exchange_declare exchange_declare;
        struct amqp_exchange_delete exchange_delete;
        struct amqp_exchange_bind exchange_bind;
        struct amqp_exchange_bind exchange_unbind;
        struct amqp_queue_declare queue_declare;
        struct amqp_queue_declare_ok queue_declare_ok;
        struct amqp_queue_bind queue_bind;
        struct amqp_queue_purge queue_purge;
        struct amqp_queue_message_count queue_purge_ok;
        struct amqp_queue_delete queue_delete;
        struct amqp_queue_message_count queue_delete_ok;
        struct amqp_queue_unbind queue_unbind;
        struct amqp_basic_qos basic_qos;
        struct amqp_basic_consume basic_consume;
        struct amqp_basic_consumer_tag basic_consume_ok;
        struct amqp_basic_cancel basic_cancel;
        struct amqp_basic_consumer_tag basic_cancel_ok;
        struct amqp_basic_publish basic_publish;
        struct amqp_basic_return basic_return;
        struct amqp_basic_deliver basic_deliver;
        struct amqp_basic_get basic_get;
        struct amqp_basic_get_ok basic_get_ok;
        struct amqp_basic_get_empty basic_get_empty;
        struct amqp_basic_ack basic_ack;
        struct amqp_basic_reject basic_reject;
        struct amqp_basic_recover basic_recover_async;
        struct amqp_basic_recover basic_recover;
        struct amqp_basic_nack basic_nack;
        struct amqp_confirm_select confirm_select;
    };
};

/* ---- the method table ------------------------------------------------- */

enum amqp_arg_type {
    AMQP_ARG_OCTET = 1, /* uint8_t */
    AMQP_ARG_SHORT,     /* uint16_t */
    AMQP_ARG_LONG,      /* uint32_t */
    AMQP_ARG_LONGLONG,  /* uint64_t */
    AMQP_ARG_SHORTSTR,  /* struct amqp_bytes, <= 255 */
    AMQP_ARG_LONGSTR,   /* struct amqp_bytes */
    AMQP_ARG_BIT,       /* bool */
    AMQP_ARG_TIMESTAMP, /* uint64_t */
    AMQP_ARG_TABLE      /* struct amqp_table * (NULL encodes {}) */
};

struct amqp_arg_info {
    const char *name; /* spec name, e.g. "routing-key" */
    uint8_t type;     /* enum amqp_arg_type */
    uint16_t offset;  /* of the field in struct amqp_method */
};

struct amqp_method_info {
    uint32_t id;
    const char *name; /* "queue.declare" */
    bool content;     /* followed by a content header and body */
    bool synchronous; /* the peer answers it (spec's synchronous="1") */
    uint8_t nargs;
    const struct amqp_arg_info *args;
};

/* Entry for @id, or NULL if the broker does not know it. Static data. */
const struct amqp_method_info *amqp_method_lookup(uint32_t id);

/* All entries, sorted by id (for docs and tests). *n gets the count. */
const struct amqp_method_info *amqp_method_table(size_t *n);

/* "queue.declare" for a known id, "unknown" otherwise. */
const char *amqp_method_name(uint32_t id);

/* Zero @m and set its id (and info). Use before filling in a method to
 * encode. */
void amqp_method_init(struct amqp_method *m, uint32_t id);

/*
 * Decode a method frame payload (@payload/@len, borrowed: string arguments
 * point into it). Returns 0 with *m filled in (call amqp_method_free()
 * later), or AMQP_EUNKNOWN_METHOD, AMQP_ESYNTAX (short payload, truncated
 * argument, bytes after the last argument), AMQP_ETABLE_TYPE,
 * AMQP_ETABLE_DEPTH; nothing is left allocated then. Unused bits of a bit
 * octet are ignored, as RabbitMQ does.
 */
int amqp_method_decode(const void *payload, size_t len, struct amqp_method *m);

/* Release the tables of a decoded method (not tables a caller put into a
 * method it encodes: those stay the caller's). Safe on a zeroed method. */
void amqp_method_free(struct amqp_method *m);

/*
 * Append the payload of @m (borrowed) to @out. Returns 0,
 * AMQP_EUNKNOWN_METHOD, or AMQP_ETOO_LONG (a shortstr over 255 bytes, a
 * bad table); @out is unchanged on error.
 */
int amqp_method_encode_payload(struct buf *out, const struct amqp_method *m);

/* Same, as a complete method frame on @channel; also AMQP_EFRAME_TOO_BIG
 * when it exceeds @frame_max (0 = no bound). */
int amqp_method_encode(struct buf *out,
                       uint16_t channel,
                       const struct amqp_method *m,
                       size_t frame_max);

/* ---- content header --------------------------------------------------- */

/* Property flag bits of class basic, most significant first. Bits 1 and 0
 * are unused (0 is the continuation flag) and must be clear. */
#define AMQP_BASIC_CONTENT_TYPE (1u << 15)
#define AMQP_BASIC_CONTENT_ENCODING (1u << 14)
#define AMQP_BASIC_HEADERS (1u << 13)
#define AMQP_BASIC_DELIVERY_MODE (1u << 12)
#define AMQP_BASIC_PRIORITY (1u << 11)
#define AMQP_BASIC_CORRELATION_ID (1u << 10)
#define AMQP_BASIC_REPLY_TO (1u << 9)
#define AMQP_BASIC_EXPIRATION (1u << 8)
#define AMQP_BASIC_MESSAGE_ID (1u << 7)
#define AMQP_BASIC_TIMESTAMP (1u << 6)
#define AMQP_BASIC_TYPE (1u << 5)
#define AMQP_BASIC_USER_ID (1u << 4)
#define AMQP_BASIC_APP_ID (1u << 3)
#define AMQP_BASIC_CLUSTER_ID (1u << 2)
#define AMQP_BASIC_FLAGS_ALL 0xfffcu

/* A field is meaningful only if its AMQP_BASIC_* bit is set in @flags. */
struct amqp_basic_properties {
    uint16_t flags;
    struct amqp_bytes content_type;
    struct amqp_bytes content_encoding;
    struct amqp_table *headers;
    uint8_t delivery_mode; /* 1 transient, 2 persistent */
    uint8_t priority;
    struct amqp_bytes correlation_id;
    struct amqp_bytes reply_to;
    struct amqp_bytes expiration;
    struct amqp_bytes message_id;
    uint64_t timestamp;
    struct amqp_bytes type;
    struct amqp_bytes user_id;
    struct amqp_bytes app_id;
    struct amqp_bytes cluster_id; /* reserved */
};

struct amqp_content_header {
    uint16_t class_id; /* AMQP_CLASS_BASIC */
    uint16_t weight;   /* unused; kept as received (RabbitMQ ignores it) */
    uint64_t body_size;
    struct amqp_basic_properties props;
};

/*
 * Decode a content header frame payload (borrowed: strings point into it).
 * Returns 0 (call amqp_content_header_free() later), or AMQP_ESYNTAX
 * (truncated, trailing bytes, unused flag bits set, class other than
 * basic), AMQP_ETABLE_TYPE, AMQP_ETABLE_DEPTH; nothing allocated then.
 */
int amqp_content_header_decode(const void *payload,
                               size_t len,
                               struct amqp_content_header *h);

/* Release the headers table of a decoded header. Safe on a zeroed one. */
void amqp_content_header_free(struct amqp_content_header *h);

/* Append the payload / a whole header frame for @h (borrowed). Returns 0,
 * AMQP_ETOO_LONG (unused flag bits, a string too long, a bad table) or
 * AMQP_EFRAME_TOO_BIG; @out unchanged on error. */
int amqp_content_header_encode_payload(struct buf *out,
                                       const struct amqp_content_header *h);
int amqp_content_header_encode(struct buf *out,
                               uint16_t channel,
                               const struct amqp_content_header *h,
                               size_t frame_max);

#endif
