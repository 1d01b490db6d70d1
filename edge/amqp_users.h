/*
 * amqp_users: the AMQP edge's accounts, from a users file.
 *
 * File format (a Kubernetes Secret or a compose secret mounts it as is):
 * one "name:password" per line; blank lines and lines starting with '#'
 * are skipped; the password is everything after the first ':' (it may hold
 * ':'), up to the end of the line (a trailing '\r' is dropped). A user named
 * "guest" may still connect from loopback only, as RabbitMQ's default
 * loopback_users. Without a file the edge has guest/guest (loopback only).
 *
 * Errors: amqp_users_load() returns 0, or -1 with a reason naming the file
 * and line in @err (unreadable file, a line without ':', an empty name, a
 * name or password too long, more than AMQP_SERVER_MAX_USERS users, a name
 * given twice, no user at all). @cfg is changed only on success.
 */
#ifndef RINGMQ_AMQP_USERS_H
#define RINGMQ_AMQP_USERS_H

#include <stddef.h>

#include "edge/amqp_server.h"

int amqp_users_load(const char *path, struct amqp_server_config *cfg,
                    char *err, size_t errlen);

#endif
