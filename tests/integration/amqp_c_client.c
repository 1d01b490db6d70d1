/*
 * amqp_c_client: a rabbitmq-c (librabbitmq 0.11) round trip for
 * test_amqp_tools.py.
 *
 *   amqp_c_client HOST PORT QUEUE N
 *
 * Declares QUEUE (durable), publishes N persistent messages "msg-<i>" with
 * publisher confirms (waits for every basic.ack; a basic.nack or a
 * basic.return fails), then consumes them with manual acks (prefetch 10)
 * and exits 0 only if all N arrived exactly once, in order, with their
 * properties. Every wait is bounded (5 s per frame). Exit codes: 0 ok,
 * 1 wrong outcome, 2 usage, 3 connection/protocol error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

static int fail(const char *what, amqp_rpc_reply_t r)
{
    switch (r.reply_type) {
        case AMQP_RESPONSE_NORMAL:
            return 0;
        case AMQP_RESPONSE_NONE:
            fprintf(stderr, "%s: missing RPC reply\n", what);
            break;
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            fprintf(stderr, "%s: %s\n", what, amqp_error_string2(r.library_error));
            break;
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
                amqp_connection_close_t *m = r.reply.decoded;
                fprintf(stderr, "%s: connection.close %u %.*s\n", what, m->reply_code,
                        (int)m->reply_text.len, (char *)m->reply_text.bytes);
            } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
                amqp_channel_close_t *m = r.reply.decoded;
                fprintf(stderr, "%s: channel.close %u %.*s\n", what, m->reply_code,
                        (int)m->reply_text.len, (char *)m->reply_text.bytes);
            } else {
                fprintf(stderr, "%s: server exception 0x%08x\n", what, r.reply.id);
            }
            break;
    }
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s HOST PORT QUEUE N\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    const char *queue = argv[3];
    int n = atoi(argv[4]);
    struct timeval tv = {5, 0};

    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (sock == NULL || amqp_socket_open_noblock(sock, host, port, &tv) != AMQP_STATUS_OK) {
        fprintf(stderr, "cannot connect to %s:%d\n", host, port);
        return 3;
    }
    if (fail("login", amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                                 "guest", "guest"))) {
        return 3;
    }
    amqp_channel_open(conn, 1);
    if (fail("channel.open", amqp_get_rpc_reply(conn))) {
        return 3;
    }
    amqp_queue_declare_ok_t *dok = amqp_queue_declare(
        conn, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    if (dok == NULL || fail("queue.declare", amqp_get_rpc_reply(conn))) {
        fail("queue.declare", amqp_get_rpc_reply(conn));
        return 3;
    }
    amqp_confirm_select(conn, 1);
    if (fail("confirm.select", amqp_get_rpc_reply(conn))) {
        return 3;
    }

    /* publish N persistent messages, then collect N confirms */
    for (int i = 1; i <= n; i++) {
        char body[64];
        snprintf(body, sizeof body, "msg-%d", i);
        amqp_basic_properties_t props;
        memset(&props, 0, sizeof props);
        props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                       AMQP_BASIC_MESSAGE_ID_FLAG;
        props.content_type = amqp_cstring_bytes("text/plain");
        props.delivery_mode = 2;
        props.message_id = amqp_cstring_bytes(body);
        if (amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 1, 0,
                               &props, amqp_cstring_bytes(body)) != AMQP_STATUS_OK) {
            fprintf(stderr, "basic.publish %d failed\n", i);
            return 3;
        }
    }
    /* acks may come single or multiple, in any order: count distinct tags */
    char *acked = calloc((size_t)n + 1, 1);
    int confirmed = 0;
    while (confirmed < n) {
        amqp_frame_t f;
        int rc = amqp_simple_wait_frame_noblock(conn, &f, &tv);
        if (rc != AMQP_STATUS_OK) {
            fprintf(stderr, "waiting for confirms (%d of %d): %s\n", confirmed, n,
                    amqp_error_string2(rc));
            return 3;
        }
        if (f.frame_type != AMQP_FRAME_METHOD || f.channel != 1) {
            continue;
        }
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            if (a->delivery_tag < 1 || a->delivery_tag > (uint64_t)n) {
                fprintf(stderr, "confirm of unknown tag %llu\n",
                        (unsigned long long)a->delivery_tag);
                return 1;
            }
            for (uint64_t t = a->multiple ? 1 : a->delivery_tag; t <= a->delivery_tag; t++) {
                if (!acked[t]) {
                    acked[t] = 1;
                    confirmed++;
                }
            }
        } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            fprintf(stderr, "basic.nack\n");
            return 1;
        } else if (f.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
            fprintf(stderr, "basic.return\n");
            return 1;
        } else {
            fprintf(stderr, "unexpected method 0x%08x while confirming\n",
                    f.payload.method.id);
            return 3;
        }
    }

    free(acked);
    amqp_basic_qos(conn, 1, 0, 10, 0);
    if (fail("basic.qos", amqp_get_rpc_reply(conn))) {
        return 3;
    }
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    if (fail("basic.consume", amqp_get_rpc_reply(conn))) {
        return 3;
    }
    for (int i = 1; i <= n; i++) {
        amqp_envelope_t env;
        amqp_maybe_release_buffers(conn);
        amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tv, 0);
        if (fail("consume", r)) {
            fprintf(stderr, "after %d of %d messages\n", i - 1, n);
            return 1;
        }
        char want[64];
        snprintf(want, sizeof want, "msg-%d", i);
        int ok = env.message.body.len == strlen(want) &&
                 memcmp(env.message.body.bytes, want, strlen(want)) == 0 &&
                 (env.message.properties._flags & AMQP_BASIC_DELIVERY_MODE_FLAG) &&
                 env.message.properties.delivery_mode == 2 &&
                 (env.message.properties._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) &&
                 env.message.properties.content_type.len == 10 &&
                 memcmp(env.message.properties.content_type.bytes, "text/plain", 10) == 0 &&
                 !env.redelivered;
        if (!ok) {
            fprintf(stderr, "message %d: got '%.*s' (redelivered %d)\n", i,
                    (int)env.message.body.len, (char *)env.message.body.bytes,
                    env.redelivered);
            return 1;
        }
        if (amqp_basic_ack(conn, 1, env.delivery_tag, 0) != AMQP_STATUS_OK) {
            fprintf(stderr, "basic.ack %d failed\n", i);
            return 3;
        }
        amqp_destroy_envelope(&env);
    }
    /* nothing more must come */
    {
        amqp_envelope_t env;
        struct timeval shortv = {0, 300000};
        amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &shortv, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            fprintf(stderr, "an extra message: '%.*s'\n", (int)env.message.body.len,
                    (char *)env.message.body.bytes);
            return 1;
        }
    }
    amqp_queue_delete_ok_t *del = amqp_queue_delete(conn, 1, amqp_cstring_bytes(queue), 0, 0);
    if (del == NULL || fail("queue.delete", amqp_get_rpc_reply(conn))) {
        return 3;
    }
    if (del->message_count != 0) {
        fprintf(stderr, "queue.delete-ok: %u messages left\n", del->message_count);
        return 1;
    }
    if (fail("channel.close", amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS)) ||
        fail("connection.close", amqp_connection_close(conn, AMQP_REPLY_SUCCESS))) {
        return 3;
    }
    amqp_destroy_connection(conn);
    printf("ok %d\n", n);
    return 0;
}
