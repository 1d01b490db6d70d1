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
#include "edge/amqp_config.h" /* config, users, stats */

struct amqp_server;

/* Listen on cfg->host:cfg->port (port 0: any; see amqp_server_port()).
 * @broker is copied; broker->self is borrowed until the close callback. */
struct amqp_server *amqp_server_new(uv_loop_t *loop,
                                    const struct amqp_server_config *cfg,
                                    const struct amqp_broker *broker,
                                    char *errmsg, size_t errlen);

int amqp_server_port(const struct amqp_server *srv);

void amqp_server_stats(const struct amqp_server *srv,
                       struct amqp_server_stats *out);

/* Stop listening, close every connection (their deliveries are returned
 * through the broker when it is still up), then call @cb. The server is
 * freed before @cb runs. */
void amqp_server_close(struct amqp_server *srv, void (*cb)(void *data),
                       void *data);

#endif
