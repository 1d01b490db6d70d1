/*
 * amqp_local: the struct amqp_broker (edge/amqp_broker.h) of the
 * standalone node: the AMQP edge's commands go straight to this process's
 * own queue groups (mq_svc, one per shard) and meta group (meta_svc).
 *
 * Wiring (node.c):
 *     mq_svc_config.boot = true;
 *     shards[i] = mq_svc_new(...); meta = meta_svc_new(...);
 *     local = amqp_local_new();
 *     amqp_local_attach(local, shards, n, meta);  (hooks on_internal)
 *     amqp_local_broker(local, &broker); amqp_server_new(..., &broker, ...)
 *
 * Submit: calls complete exactly once through call->cb (possibly before
 * submit returns). The services' NOT_LEADER / UNAVAILABLE / TOO_LARGE /
 * EXPIRED all become OUTCOME_UNAVAILABLE (standalone has no other leader
 * to try); BUSY (a full group, never proposed) and CLOSING stay. Until every shard has applied its
 * BOOT (mq_svc_config.boot), MQ calls are UNAVAILABLE: nothing from before
 * the restart cleanup is ever applied after it.
 *
 * Deleted queues must lose their bindings: the edge sends QUEUE_GONE for
 * the deletions it sees in results; the ones the services cause themselves
 * (BOOT, lease returns) reach amqp_local_on_internal, which sends
 * QUEUE_GONE to the meta group, retried on later submits until applied.
 *
 * Ownership: @shards and @meta are borrowed and must outlive every call
 * submitted; the array @shards is copied. amqp_local_close() may run while
 * calls are in flight (they still complete, through the services).
 */
#ifndef RINGMQ_AMQP_LOCAL_H
#define RINGMQ_AMQP_LOCAL_H

#include <stdbool.h>

#include "common/watermark.h"
#include "node/meta_svc.h"
#include "node/mq_svc.h"
#include "edge/amqp_broker.h"

#define AMQP_LOCAL_MAX_SHARDS 64

struct amqp_local;

struct amqp_local *amqp_local_new(void);
/* 0, or -1 if @n is 0 or above AMQP_LOCAL_MAX_SHARDS. Installs
 * amqp_local_on_internal on every shard. A BOOT applied before attach (the
 * services start electing at once) is not seen here: attach right after
 * creating the services, before running the loop. */
int amqp_local_attach(struct amqp_local *l, struct mq_svc *const *shards,
                      unsigned n, struct meta_svc *meta);
void amqp_local_broker(struct amqp_local *l, struct amqp_broker *out);

/* Every shard booted (when asked to boot) and leading, meta leading. */
bool amqp_local_ready(struct amqp_local *l);

/* The shards' on_internal hook, installed by attach (data = the
 * amqp_local) and removed by close. */
void amqp_local_on_internal(void *data, const struct mq_sm_cmd *cmd,
                            const struct mq_sm_result *res);

/* Further submits complete with CLOSING. Freed once its own meta calls
 * (QUEUE_GONE) have completed: close it before the services. */
/* Publishers are blocked (connection.blocked) while @w is exceeded.
 * Borrowed; NULL = never. */
void amqp_local_set_watermark(struct amqp_local *l, struct watermark *w);

void amqp_local_close(struct amqp_local *l);

#endif
