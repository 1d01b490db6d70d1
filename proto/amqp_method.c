/*
 * amqp_method: the class/method table, written by hand from the AMQP 0-9-1
 * spec (amqp0-9-1.xml) plus RabbitMQ's documented extensions, and a
 * table-driven codec for method arguments and basic content headers.
 *
 * Each method is one row: id, name, content/synchronous flags and its
 * argument list; each argument names its domain and where it lives in
 * struct amqp_method (offsetof), so decode and encode are one loop each and
 * adding a method is adding a row.
 */
#include "proto/amqp_method.h"

#include <stdlib.h>
#include <string.h>

#include "proto/amqp_frame.h"

#define ARG(member, field, name, type)                                    \
    {                                                                     \
        name, AMQP_ARG_##type, offsetof(struct amqp_method, member.field) \
    }

#define NARGS(a) ((uint8_t)(sizeof(a) / sizeof((a)[0])))

/* ---- argument lists, in wire order -------------------------------------- */

static const struct amqp_arg_info connection_start_args[] = {
    ARG(connection_start, version_major, "version-major", OCTET),
    ARG(connection_start, version_minor, "version-minor", OCTET),
    ARG(connection_start, server_properties, "server-properties", TABLE),
    ARG(connection_start, mechanisms, "mechanisms", LONGSTR),
    ARG(connection_start, locales, "locales", LONGSTR),
};
static const struct amqp_arg_info connection_start_ok_args[] = {
    ARG(connection_start_ok, client_properties, "client-properties", TABLE),
    ARG(connection_start_ok, mechanism, "mechanism", SHORTSTR),
    ARG(connection_start_ok, response, "response", LONGSTR),
    ARG(connection_start_ok, locale, "locale", SHORTSTR),
};
static const struct amqp_arg_info connection_secure_args[] = {
    ARG(connection_secure, challenge, "challenge", LONGSTR),
};
static const struct amqp_arg_info connection_secure_ok_args[] = {
    ARG(connection_secure_ok, response, "response", LONGSTR),
};
static const struct amqp_arg_info connection_tune_args[] = {
    ARG(connection_tune, channel_max, "channel-max", SHORT),
    ARG(connection_tune, frame_max, "frame-max", LONG),
    ARG(connection_tune, heartbeat, "heartbeat", SHORT),
};
static const struct amqp_arg_info connection_tune_ok_args[] = {
    ARG(connection_tune_ok, channel_max, "channel-max", SHORT),
    ARG(connection_tune_ok, frame_max, "frame-max", LONG),
    ARG(connection_tune_ok, heartbeat, "heartbeat", SHORT),
};
static const struct amqp_arg_info connection_open_args[] = {
    ARG(connection_open, virtual_host, "virtual-host", SHORTSTR),
    ARG(connection_open, capabilities, "capabilities", SHORTSTR),
    ARG(connection_open, insist, "insist", BIT),
};
static const struct amqp_arg_info connection_open_ok_args[] = {
    ARG(connection_open_ok, known_hosts, "known-hosts", SHORTSTR),
};
static const struct amqp_arg_info connection_close_args[] = {
    ARG(connection_close, reply_code, "reply-code", SHORT),
    ARG(connection_close, reply_text, "reply-text", SHORTSTR),
    ARG(connection_close, class_id, "class-id", SHORT),
    ARG(connection_close, method_id, "method-id", SHORT),
};
static const struct amqp_arg_info connection_blocked_args[] = {
    ARG(connection_blocked, reason, "reason", SHORTSTR),
};

static const struct amqp_arg_info channel_open_args[] = {
    ARG(channel_open, out_of_band, "out-of-band", SHORTSTR),
};
static const struct amqp_arg_info channel_open_ok_args[] = {
    ARG(channel_open_ok, channel_id, "channel-id", LONGSTR),
};
static const struct amqp_arg_info channel_flow_args[] = {
    ARG(channel_flow, active, "active", BIT),
};
static const struct amqp_arg_info channel_flow_ok_args[] = {
    ARG(channel_flow_ok, active, "active", BIT),
};
static const struct amqp_arg_info channel_close_args[] = {
    ARG(channel_close, reply_code, "reply-code", SHORT),
    ARG(channel_close, reply_text, "reply-text", SHORTSTR),
    ARG(channel_close, class_id, "class-id", SHORT),
    ARG(channel_close, method_id, "method-id", SHORT),
};

static const struct amqp_arg_info exchange_declare_args[] = {
    ARG(exchange_declare, ticket, "ticket", SHORT),
    ARG(exchange_declare, exchange, "exchange", SHORTSTR),
    ARG(exchange_declare, type, "type", SHORTSTR),
    ARG(exchange_declare, passive, "passive", BIT),
    ARG(exchange_declare, durable, "durable", BIT),
    ARG(exchange_declare, auto_delete, "auto-delete", BIT),
    ARG(exchange_declare, internal, "internal", BIT),
    ARG(exchange_declare, no_wait, "no-wait", BIT),
    ARG(exchange_declare, arguments, "arguments", TABLE),
};
static const struct amqp_arg_info exchange_delete_args[] = {
    ARG(exchange_delete, ticket, "ticket", SHORT),
    ARG(exchange_delete, exchange, "exchange", SHORTSTR),
    ARG(exchange_delete, if_unused, "if-unused", BIT),
    ARG(exchange_delete, no_wait, "no-wait", BIT),
};
static const struct amqp_arg_info exchange_bind_args[] = {
    ARG(exchange_bind, ticket, "ticket", SHORT),
    ARG(exchange_bind, destination, "destination", SHORTSTR),
    ARG(exchange_bind, source, "source", SHORTSTR),
    ARG(exchange_bind, routing_key, "routing-key", SHORTSTR),
    ARG(exchange_bind, no_wait, "no-wait", BIT),
    ARG(exchange_bind, arguments, "arguments", TABLE),
};
static const struct amqp_arg_info exchange_unbind_args[] = {
    ARG(exchange_unbind, ticket, "ticket", SHORT),
    ARG(exchange_unbind, destination, "destination", SHORTSTR),
    ARG(exchange_unbind, source, "source", SHORTSTR),
    ARG(exchange_unbind, routing_key, "routing-key", SHORTSTR),
    ARG(exchange_unbind, no_wait, "no-wait", BIT),
    ARG(exchange_unbind, arguments, "arguments", TABLE),
};

static const struct amqp_arg_info queue_declare_args[] = {
    ARG(queue_declare, ticket, "ticket", SHORT),
    ARG(queue_declare, queue, "queue", SHORTSTR),
    ARG(queue_declare, passive, "passive", BIT),
    ARG(queue_declare, durable, "durable", BIT),
    ARG(queue_declare, exclusive, "exclusive", BIT),
    ARG(queue_declare, auto_delete, "auto-delete", BIT),
    ARG(queue_declare, no_wait, "no-wait", BIT),
    ARG(queue_declare, arguments, "arguments", TABLE),
};
static const struct amqp_arg_info queue_declare_ok_args[] = {
    ARG(queue_declare_ok, queue, "queue", SHORTSTR),
    ARG(queue_declare_ok, message_count, "message-count", LONG),
    ARG(queue_declare_ok, consumer_count, "consumer-count", LONG),
};
static const struct amqp_arg_info queue_bind_args[] = {
    ARG(queue_bind, ticket, "ticket", SHORT),
    ARG(queue_bind, queue, "queue", SHORTSTR),
    ARG(queue_bind, exchange, "exchange", SHORTSTR),
    ARG(queue_bind, routing_key, "routing-key", SHORTSTR),
    ARG(queue_bind, no_wait, "no-wait", BIT),
    ARG(queue_bind, arguments, "arguments", TABLE),
};
static const struct amqp_arg_info queue_purge_args[] = {
    ARG(queue_purge, ticket, "ticket", SHORT),
    ARG(queue_purge, queue, "queue", SHORTSTR),
    ARG(queue_purge, no_wait, "no-wait", BIT),
};
static const struct amqp_arg_info queue_purge_ok_args[] = {
    ARG(queue_purge_ok, message_count, "message-count", LONG),
};
static const struct amqp_arg_info queue_delete_args[] = {
    ARG(queue_delete, ticket, "ticket", SHORT),
    ARG(queue_delete, queue, "queue", SHORTSTR),
    ARG(queue_delete, if_unused, "if-unused", BIT),
    ARG(queue_delete, if_empty, "if-empty", BIT),
    ARG(queue_delete, no_wait, "no-wait", BIT),
};
static const struct amqp_arg_info queue_delete_ok_args[] = {
    ARG(queue_delete_ok, message_count, "message-count", LONG),
};
static const struct amqp_arg_info queue_unbind_args[] = {
    ARG(queue_unbind, ticket, "ticket", SHORT),
    ARG(queue_unbind, queue, "queue", SHORTSTR),
    ARG(queue_unbind, exchange, "exchange", SHORTSTR),
    ARG(queue_unbind, routing_key, "routing-key", SHORTSTR),
    ARG(queue_unbind, arguments, "arguments", TABLE),
};

static const struct amqp_arg_info basic_qos_args[] = {
    ARG(basic_qos, prefetch_size, "prefetch-size", LONG),
    ARG(basic_qos, prefetch_count, "prefetch-count", SHORT),
    ARG(basic_qos, global, "global", BIT),
};
static const struct amqp_arg_info basic_consume_args[] = {
    ARG(basic_consume, ticket, "ticket", SHORT),
    ARG(basic_consume, queue, "queue", SHORTSTR),
    ARG(basic_consume, consumer_tag, "consumer-tag", SHORTSTR),
    ARG(basic_consume, no_local, "no-local", BIT),
    ARG(basic_consume, no_ack, "no-ack", BIT),
    ARG(basic_consume, exclusive, "exclusive", BIT),
    ARG(basic_consume, no_wait, "no-wait", BIT),
    ARG(basic_consume, arguments, "arguments", TABLE),
};
static const struct amqp_arg_info basic_consume_ok_args[] = {
    ARG(basic_consume_ok, consumer_tag, "consumer-tag", SHORTSTR),
};
static const struct amqp_arg_info basic_cancel_args[] = {
    ARG(basic_cancel, consumer_tag, "consumer-tag", SHORTSTR),
    ARG(basic_cancel, no_wait, "no-wait", BIT),
};
static const struct amqp_arg_info basic_cancel_ok_args[] = {
    ARG(basic_cancel_ok, consumer_tag, "consumer-tag", SHORTSTR),
};
static const struct amqp_arg_info basic_publish_args[] = {
    ARG(basic_publish, ticket, "ticket", SHORT),
    ARG(basic_publish, exchange, "exchange", SHORTSTR),
    ARG(basic_publish, routing_key, "routing-key", SHORTSTR),
    ARG(basic_publish, mandatory, "mandatory", BIT),
    ARG(basic_publish, immediate, "immediate", BIT),
};
static const struct amqp_arg_info basic_return_args[] = {
    ARG(basic_return, reply_code, "reply-code", SHORT),
    ARG(basic_return, reply_text, "reply-text", SHORTSTR),
    ARG(basic_return, exchange, "exchange", SHORTSTR),
    ARG(basic_return, routing_key, "routing-key", SHORTSTR),
};
static const struct amqp_arg_info basic_deliver_args[] = {
    ARG(basic_deliver, consumer_tag, "consumer-tag", SHORTSTR),
    ARG(basic_deliver, delivery_tag, "delivery-tag", LONGLONG),
    ARG(basic_deliver, redelivered, "redelivered", BIT),
    ARG(basic_deliver, exchange, "exchange", SHORTSTR),
    ARG(basic_deliver, routing_key, "routing-key", SHORTSTR),
};
static const struct amqp_arg_info basic_get_args[] = {
    ARG(basic_get, ticket, "ticket", SHORT),
    ARG(basic_get, queue, "queue", SHORTSTR),
    ARG(basic_get, no_ack, "no-ack", BIT),
};
static const struct amqp_arg_info basic_get_ok_args[] = {
    ARG(basic_get_ok, delivery_tag, "delivery-tag", LONGLONG),
    ARG(basic_get_ok, redelivered, "redelivered", BIT),
    ARG(basic_get_ok, exchange, "exchange", SHORTSTR),
    ARG(basic_get_ok, routing_key, "routing-key", SHORTSTR),
    ARG(basic_get_ok, message_count, "message-count", LONG),
};
static const struct amqp_arg_info basic_get_empty_args[] = {
    ARG(basic_get_empty, cluster_id, "cluster-id", SHORTSTR),
};
static const struct amqp_arg_info basic_ack_args[] = {
    ARG(basic_ack, delivery_tag, "delivery-tag", LONGLONG),
    ARG(basic_ack, multiple, "multiple", BIT),
};
static const struct amqp_arg_info basic_reject_args[] = {
    ARG(basic_reject, delivery_tag, "delivery-tag", LONGLONG),
    ARG(basic_reject, requeue, "requeue", BIT),
};
static const struct amqp_arg_info basic_recover_async_args[] = {
    ARG(basic_recover_async, requeue, "requeue", BIT),
};
static const struct amqp_arg_info basic_recover_args[] = {
    ARG(basic_recover, requeue, "requeue", BIT),
};
static const struct amqp_arg_info basic_nack_args[] = {
    ARG(basic_nack, delivery_tag, "delivery-tag", LONGLONG),
    ARG(basic_nack, multiple, "multiple", BIT),
    ARG(basic_nack, requeue, "requeue", BIT),
};

static const struct amqp_arg_info confirm_select_args[] = {
    ARG(confirm_select, no_wait, "nowait", BIT),
};

/* ---- the table, sorted by id (amqp_method_lookup bisects it) ------------- */

#define M(id, name, content, sync, args)                  \
    {                                                     \
        AMQP_##id, name, content, sync, NARGS(args), args \
    }
#define M0(id, name, sync)                    \
    {                                         \
        AMQP_##id, name, false, sync, 0, NULL \
    }

static const struct amqp_method_info methods[] = {
    M(CONNECTION_START, "connection.start", false, true, connection_start_args),
    M(CONNECTION_START_OK,
      "connection.start-ok",
      false,
      false,
      connection_start_ok_args),
    M(CONNECTION_SECURE,
      "connection.secure",
      false,
      true,
      connection_secure_args),
    M(CONNECTION_SECURE_OK,
      "connection.secure-ok",
      false,
      false,
      connection_secure_ok_args),
    M(CONNECTION_TUNE, "connection.tune", false, true, connection_tune_args),
    M(CONNECTION_TUNE_OK,
      "connection.tune-ok",
      false,
      false,
      connection_tune_ok_args),
    M(CONNECTION_OPEN, "connection.open", false, true, connection_open_args),
    M(CONNECTION_OPEN_OK,
      "connection.open-ok",
      false,
      false,
      connection_open_ok_args),
    M(CONNECTION_CLOSE, "connection.close", false, true, connection_close_args),
    M0(CONNECTION_CLOSE_OK, "connection.close-ok", false),
    M(CONNECTION_BLOCKED,
      "connection.blocked",
      false,
      false,
      connection_blocked_args),
    M0(CONNECTION_UNBLOCKED, "connection.unblocked", false),

    M(CHANNEL_OPEN, "channel.open", false, true, channel_open_args),
    M(CHANNEL_OPEN_OK, "channel.open-ok", false, false, channel_open_ok_args),
    M(CHANNEL_FLOW, "channel.flow", false, true, channel_flow_args),
    M(CHANNEL_FLOW_OK, "channel.flow-ok", false, false, channel_flow_ok_args),
    M(CHANNEL_CLOSE, "channel.close", false, true, channel_close_args),
    M0(CHANNEL_CLOSE_OK, "channel.close-ok", false),

    M(EXCHANGE_DECLARE, "exchange.declare", false, true, exchange_declare_args),
    M0(EXCHANGE_DECLARE_OK, "exchange.declare-ok", false),
    M(EXCHANGE_DELETE, "exchange.delete", false, true, exchange_delete_args),
    M0(EXCHANGE_DELETE_OK, "exchange.delete-ok", false),
    M(EXCHANGE_BIND, "exchange.bind", false, true, exchange_bind_args),
    M0(EXCHANGE_BIND_OK, "exchange.bind-ok", false),
    M(EXCHANGE_UNBIND, "exchange.unbind", false, true, exchange_unbind_args),
    M0(EXCHANGE_UNBIND_OK, "exchange.unbind-ok", false),

    M(QUEUE_DECLARE, "queue.declare", false, true, queue_declare_args),
    M(QUEUE_DECLARE_OK,
      "queue.declare-ok",
      false,
      false,
      queue_declare_ok_args),
    M(QUEUE_BIND, "queue.bind", false, true, queue_bind_args),
    M0(QUEUE_BIND_OK, "queue.bind-ok", false),
    M(QUEUE_PURGE, "queue.purge", false, true, queue_purge_args),
    M(QUEUE_PURGE_OK, "queue.purge-ok", false, false, queue_purge_ok_args),
    M(QUEUE_DELETE, "queue.delete", false, true, queue_delete_args),
    M(QUEUE_DELETE_OK, "queue.delete-ok", false, false, queue_delete_ok_args),
    M(QUEUE_UNBIND, "queue.unbind", false, true, queue_unbind_args),
    M0(QUEUE_UNBIND_OK, "queue.unbind-ok", false),

    M(BASIC_QOS, "basic.qos", false, true, basic_qos_args),
    M0(BASIC_QOS_OK, "basic.qos-ok", false),
    M(BASIC_CONSUME, "basic.consume", false, true, basic_consume_args),
    M(BASIC_CONSUME_OK,
      "basic.consume-ok",
      false,
      false,
      basic_consume_ok_args),
    M(BASIC_CANCEL, "basic.cancel", false, true, basic_cancel_args),
    M(BASIC_CANCEL_OK, "basic.cancel-ok", false, false, basic_cancel_ok_args),
    M(BASIC_PUBLISH, "basic.publish", true, false, basic_publish_args),
    M(BASIC_RETURN, "basic.return", true, false, basic_return_args),
    M(BASIC_DELIVER, "basic.deliver", true, false, basic_deliver_args),
    M(BASIC_GET, "basic.get", false, true, basic_get_args),
    M(BASIC_GET_OK, "basic.get-ok", true, false, basic_get_ok_args),
    M(BASIC_GET_EMPTY, "basic.get-empty", false, false, basic_get_empty_args),
    M(BASIC_ACK, "basic.ack", false, false, basic_ack_args),
    M(BASIC_REJECT, "basic.reject", false, false, basic_reject_args),
    M(BASIC_RECOVER_ASYNC,
      "basic.recover-async",
      false,
      false,
      basic_recover_async_args),
    M(BASIC_RECOVER, "basic.recover", false, true, basic_recover_args),
    M0(BASIC_RECOVER_OK, "basic.recover-ok", false),
    M(BASIC_NACK, "basic.nack", false, false, basic_nack_args),

    M(CONFIRM_SELECT, "confirm.select", false, true, confirm_select_args),
    M0(CONFIRM_SELECT_OK, "confirm.select-ok", false),

    M0(TX_SELECT, "tx.select", true),
    M0(TX_SELECT_OK, "tx.select-ok", false),
    M0(TX_COMMIT, "tx.commit", true),
    M0(TX_COMMIT_OK, "tx.commit-ok", false),
    M0(TX_ROLLBACK, "tx.rollback", true),
    M0(TX_ROLLBACK_OK, "tx.rollback-ok", false),
};

#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

const struct amqp_method_info *amqp_method_lookup(uint32_t id)
{
    size_t lo = 0, hi = NMETHODS;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (methods[mid].id == id) {
            return &methods[mid];
        }
        if (methods[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

const struct amqp_method_info *amqp_method_table(size_t *n)
{
    *n = NMETHODS;
    return methods;
}

const char *amqp_method_name(uint32_t id)
{
    const struct amqp_method_info *info = amqp_method_lookup(id);

    return info ? info->name : "unknown";
}

void amqp_method_init(struct amqp_method *m, uint32_t id)
{
    memset(m, 0, sizeof(*m));
    m->id = id;
    m->info = amqp_method_lookup(id);
}

/* ---- argument codec ----------------------------------------------------- */

#define FIELD(m, a, type) ((type *)((char *)(m) + (a)->offset))
#define CFIELD(m, a, type) ((const type *)((const char *)(m) + (a)->offset))

/* One non-bit argument or property of type @type between the wire and its
 * struct field (bits are packed by the method loops). Shared by methods and
 * content-header properties, which use the same field encodings. */
static int get_value(struct amqp_reader *r, unsigned type, void *field)
{
    switch (type) {
        case AMQP_ARG_OCTET:
            return amqp_get_u8(r, field);
        case AMQP_ARG_SHORT:
            return amqp_get_u16(r, field);
        case AMQP_ARG_LONG:
            return amqp_get_u32(r, field);
        case AMQP_ARG_LONGLONG:
        case AMQP_ARG_TIMESTAMP:
            return amqp_get_u64(r, field);
        case AMQP_ARG_SHORTSTR:
            return amqp_get_shortstr(r, field);
        case AMQP_ARG_LONGSTR:
            return amqp_get_longstr(r, field);
        case AMQP_ARG_TABLE:
            return amqp_table_decode(r, 0, field);
        default:
            return AMQP_ESYNTAX;
    }
}

static int put_value(struct buf *out, unsigned type, const void *field)
{
    switch (type) {
        case AMQP_ARG_OCTET:
            amqp_put_u8(out, *(const uint8_t *)field);
            return 0;
        case AMQP_ARG_SHORT:
            amqp_put_u16(out, *(const uint16_t *)field);
            return 0;
        case AMQP_ARG_LONG:
            amqp_put_u32(out, *(const uint32_t *)field);
            return 0;
        case AMQP_ARG_LONGLONG:
        case AMQP_ARG_TIMESTAMP:
            amqp_put_u64(out, *(const uint64_t *)field);
            return 0;
        case AMQP_ARG_SHORTSTR:
            return amqp_put_shortstr(out, *(const struct amqp_bytes *)field);
        case AMQP_ARG_LONGSTR:
            return amqp_put_longstr(out, *(const struct amqp_bytes *)field);
        case AMQP_ARG_TABLE:
            return amqp_table_encode(out, *(struct amqp_table *const *)field);
        default:
            return AMQP_ESYNTAX;
    }
}

void amqp_method_free(struct amqp_method *m)
{
    const struct amqp_method_info *info = m->info;
    size_t i;

    if (info == NULL) {
        return;
    }
    for (i = 0; i < info->nargs; i++) {
        const struct amqp_arg_info *a = &info->args[i];
        if (a->type == AMQP_ARG_TABLE) {
            struct amqp_table **t = FIELD(m, a, struct amqp_table *);
            amqp_table_free(*t);
            *t = NULL;
        }
    }
}

int amqp_method_decode(const void *payload, size_t len, struct amqp_method *m)
{
    const struct amqp_method_info *info;
    struct amqp_reader r;
    uint16_t class_id, method_id;
    uint8_t bits = 0;
    unsigned nbits = 8; /* bits used of the current octet; 8: none open */
    size_t i;
    int rv;

    memset(m, 0, sizeof(*m));
    amqp_reader_init(&r, payload, len);
    if (amqp_get_u16(&r, &class_id) != 0 || amqp_get_u16(&r, &method_id) != 0) {
        return AMQP_ESYNTAX;
    }
    m->id = AMQP_METHOD_ID(class_id, method_id);
    info = amqp_method_lookup(m->id);
    if (info == NULL) {
        return AMQP_EUNKNOWN_METHOD;
    }
    m->info = info;
    for (i = 0; i < info->nargs; i++) {
        const struct amqp_arg_info *a = &info->args[i];

        if (a->type != AMQP_ARG_BIT) {
            nbits = 8; /* a following bit starts a new octet */
            rv = get_value(&r, a->type, FIELD(m, a, char));
        } else {
            rv = 0;
            if (nbits == 8) {
                rv = amqp_get_u8(&r, &bits);
                nbits = 0;
            }
            *FIELD(m, a, bool) = (bits >> nbits) & 1;
            nbits++;
        }
        if (rv != 0) {
            goto err_after_args;
        }
    }
    if (r.pos != r.len) {
        rv = AMQP_ESYNTAX;
        goto err_after_args;
    }
    return 0;

err_after_args:
    amqp_method_free(m);
    return rv;
}

int amqp_method_encode_payload(struct buf *out, const struct amqp_method *m)
{
    const struct amqp_method_info *info = amqp_method_lookup(m->id);
    size_t start = out->len;
    size_t bits_at = 0; /* offset of the open bit octet in @out */
    unsigned nbits = 8;
    size_t i;
    int rv = 0;

    if (info == NULL) {
        return AMQP_EUNKNOWN_METHOD;
    }
    amqp_put_u16(out, AMQP_METHOD_CLASS(m->id));
    amqp_put_u16(out, AMQP_METHOD_INDEX(m->id));
    for (i = 0; i < info->nargs; i++) {
        const struct amqp_arg_info *a = &info->args[i];

        if (a->type != AMQP_ARG_BIT) {
            nbits = 8; /* a following bit starts a new octet */
            rv = put_value(out, a->type, CFIELD(m, a, char));
        } else {
            if (nbits == 8) {
                bits_at = out->len;
                amqp_put_u8(out, 0);
                nbits = 0;
            }
            if (*CFIELD(m, a, bool)) {
                out->data[bits_at] = (char)(out->data[bits_at] | (1 << nbits));
            }
            nbits++;
        }
        if (rv != 0) {
            out->len = start;
            return rv;
        }
    }
    return 0;
}

int amqp_method_encode(struct buf *out,
                       uint16_t channel,
                       const struct amqp_method *m,
                       size_t frame_max)
{
    size_t start = amqp_frame_begin(out, AMQP_FRAME_METHOD, channel);
    int rv = amqp_method_encode_payload(out, m);

    if (rv != 0) {
        out->len = start;
        return rv;
    }
    return amqp_frame_finish(out, start, frame_max);
}

/* ---- content header ----------------------------------------------------- */

/* The 14 basic properties, from flag bit 15 down. */
#define PROP(field, flag, type)                                                \
    {                                                                          \
#field, AMQP_ARG_##type, offsetof(struct amqp_basic_properties, field) \
    }

static const struct amqp_arg_info basic_props[] = {
    PROP(content_type, AMQP_BASIC_CONTENT_TYPE, SHORTSTR),
    PROP(content_encoding, AMQP_BASIC_CONTENT_ENCODING, SHORTSTR),
    PROP(headers, AMQP_BASIC_HEADERS, TABLE),
    PROP(delivery_mode, AMQP_BASIC_DELIVERY_MODE, OCTET),
    PROP(priority, AMQP_BASIC_PRIORITY, OCTET),
    PROP(correlation_id, AMQP_BASIC_CORRELATION_ID, SHORTSTR),
    PROP(reply_to, AMQP_BASIC_REPLY_TO, SHORTSTR),
    PROP(expiration, AMQP_BASIC_EXPIRATION, SHORTSTR),
    PROP(message_id, AMQP_BASIC_MESSAGE_ID, SHORTSTR),
    PROP(timestamp, AMQP_BASIC_TIMESTAMP, TIMESTAMP),
    PROP(type, AMQP_BASIC_TYPE, SHORTSTR),
    PROP(user_id, AMQP_BASIC_USER_ID, SHORTSTR),
    PROP(app_id, AMQP_BASIC_APP_ID, SHORTSTR),
    PROP(cluster_id, AMQP_BASIC_CLUSTER_ID, SHORTSTR),
};

#define NPROPS (sizeof(basic_props) / sizeof(basic_props[0]))

void amqp_content_header_free(struct amqp_content_header *h)
{
    amqp_table_free(h->props.headers);
    h->props.headers = NULL;
}

int amqp_content_header_decode(const void *payload,
                               size_t len,
                               struct amqp_content_header *h)
{
    struct amqp_basic_properties *p = &h->props;
    struct amqp_reader r;
    size_t i;
    int rv;

    memset(h, 0, sizeof(*h));
    amqp_reader_init(&r, payload, len);
    if (amqp_get_u16(&r, &h->class_id) != 0 ||
        amqp_get_u16(&r, &h->weight) != 0 ||
        amqp_get_u64(&r, &h->body_size) != 0 ||
        amqp_get_u16(&r, &p->flags) != 0) {
        return AMQP_ESYNTAX;
    }
    /* Basic is the only class with content; its 14 flags fit one word, so
     * a continuation bit would announce properties that do not exist. */
    if (h->class_id != AMQP_CLASS_BASIC ||
        (p->flags & ~AMQP_BASIC_FLAGS_ALL) != 0) {
        return AMQP_ESYNTAX;
    }
    for (i = 0; i < NPROPS; i++) {
        const struct amqp_arg_info *a = &basic_props[i];

        if ((p->flags & (1u << (15 - i))) == 0) {
            continue;
        }
        rv = get_value(&r, a->type, FIELD(p, a, char));
        if (rv != 0) {
            goto err_after_props;
        }
    }
    if (r.pos != r.len) {
        rv = AMQP_ESYNTAX;
        goto err_after_props;
    }
    return 0;

err_after_props:
    amqp_content_header_free(h);
    return rv;
}

int amqp_content_header_encode_payload(struct buf *out,
                                       const struct amqp_content_header *h)
{
    const struct amqp_basic_properties *p = &h->props;
    size_t start = out->len;
    size_t i;
    int rv = 0;

    if ((p->flags & ~AMQP_BASIC_FLAGS_ALL) != 0) {
        return AMQP_ETOO_LONG;
    }
    amqp_put_u16(out, h->class_id);
    amqp_put_u16(out, h->weight);
    amqp_put_u64(out, h->body_size);
    amqp_put_u16(out, p->flags);
    for (i = 0; i < NPROPS && rv == 0; i++) {
        const struct amqp_arg_info *a = &basic_props[i];

        if ((p->flags & (1u << (15 - i))) == 0) {
            continue;
        }
        rv = put_value(out, a->type, CFIELD(p, a, char));
    }
    if (rv != 0) {
        out->len = start;
    }
    return rv;
}

int amqp_content_header_encode(struct buf *out,
                               uint16_t channel,
                               const struct amqp_content_header *h,
                               size_t frame_max)
{
    size_t start = amqp_frame_begin(out, AMQP_FRAME_HEADER, channel);
    int rv = amqp_content_header_encode_payload(out, h);

    if (rv != 0) {
        out->len = start;
        return rv;
    }
    return amqp_frame_finish(out, start, frame_max);
}
