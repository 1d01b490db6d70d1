/*
 * amqp_server: the AMQP 0-9-1 edge: a TCP listener whose connections
 * (edge/amqp_conn) speak to clients and to a struct amqp_broker.
 *
 * Used by the router (broker = router/amqp_remote) and by the standalone
 * node (broker = node/amqp_local). The server also runs the edge's periodic
 * work: the EXPIRE tick to every shard (which renews this edge's lease on
 * its deliveries) and the connection.blocked check.
 *
 * Errors: amqp_server_new() returns NULL with a reason in @errmsg (bad
 * address, port in use). Everything runs on the loop thread.
 */
#ifndef RINGMQ_AMQP_SERVER_H
#define RINGMQ_AMQP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "edge/amqp_broker.h"

#define AMQP_SERVER_MAX_USERS 16

struct amqp_user {
    char name[128];
    char password[128];
    bool loopback_only; /* as RabbitMQ's loopback_users (guest) */
};

struct amqp_server_config {
    const char *host; /* IPv4/IPv6 literal; copied */
    int port;
    /* Identity of this edge in queue commands (mq_sm who.router); must be
     * unique among live edges: the caller picks a random one at start. */
    uint64_t router_id;
    struct amqp_user users[AMQP_SERVER_MAX_USERS];
    unsigned n_users; /* 0 = guest/guest, loopback only */
    uint32_t frame_max;    /* offered in connection.tune; 0 = 131072 */
    uint16_t channel_max;  /* 0 = 2047 */
    uint16_t heartbeat_s;  /* offered; 0 = 60 */
    unsigned tick_ms;      /* EXPIRE tick; 0 = 1000 */
};

struct amqp_server;

/* Listen on cfg->host:cfg->port (port 0: any; see amqp_server_port()).
 * @broker is copied; broker->self is borrowed until the close callback. */
struct amqp_server *amqp_server_new(uv_loop_t *loop,
                                    const struct amqp_server_config *cfg,
                                    const struct amqp_broker *broker,
                                    char *errmsg, size_t errlen);

int amqp_server_port(const struct amqp_server *srv);

struct amqp_server_stats {
    uint64_t connections;      /* open now */
    uint64_t connections_total;
    uint64_t channels;         /* open now */
    uint64_t consumers;        /* registered now */
    uint64_t published;        /* basic.publish received */
    uint64_t confirmed;        /* basic.ack sent to publishers */
    uint64_t delivered;        /* basic.deliver + basic.get-ok sent */
    uint64_t acked;            /* basic.ack received from consumers */
    uint64_t protocol_errors;  /* connections closed with an error code */
};
void amqp_server_stats(const struct amqp_server *srv,
                       struct amqp_server_stats *out);

/* Stop listening, close every connection (their deliveries are returned
 * through the broker when it is still up), then call @cb. The server is
 * freed before @cb runs. */
void amqp_server_close(struct amqp_server *srv, void (*cb)(void *data),
                       void *data);

#endif
