/*
 * amqp_auth: a client's login (connection.start-ok) against the edge's
 * users: PLAIN ([authzid] NUL user NUL password) or AMQPLAIN (a LOGIN and
 * PASSWORD table); a loopback_only user (guest) from loopback only, as
 * RabbitMQ's loopback_users.
 */
#ifndef RINGMQ_AMQP_AUTH_H
#define RINGMQ_AMQP_AUTH_H

#include <stdbool.h>

#include "edge/amqp_config.h"
#include "proto/amqp_method.h"

/* True when @s names a user of @cfg with its password and that user may
 * connect from where the client is (@loopback). */
bool amqp_auth_check(const struct amqp_server_config *cfg, bool loopback,
                     const struct amqp_connection_start_ok *s);

#endif
