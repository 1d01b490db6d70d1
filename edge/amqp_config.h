/*
 * amqp_config: what an AMQP edge is made with (struct amqp_server_config)
 * and what it counts (struct amqp_server_stats). Part of amqp_server.h's
 * contract, which includes it; a header of its own so that connections and
 * channels can read the configuration and count without depending on the
 * server.
 */
#ifndef RINGMQ_AMQP_CONFIG_H
#define RINGMQ_AMQP_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

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
    /* A publish waits this long for a routable view (amqp_broker.h), then
     * is nacked; 0 = EDGE_ROUTE_WAIT_MS. */
    unsigned route_wait_ms;
};

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

#endif
