/*
 * meta_cmd: a meta_sm command for tests, in vhost "/": @exchange (direct,
 * durable when declared), @dest and @key (each may be NULL), borrowed.
 */
#ifndef RINGMQ_TEST_META_CMD_H
#define RINGMQ_TEST_META_CMD_H

#include "sm/meta_sm.h"

struct meta_sm_cmd meta_cmd(enum meta_sm_cmd_type type, const char *exchange,
                            const char *dest, const char *key);

#endif
