/*
 * amqp_fail: an op's failure after a broker call; contract in amqp_fail.h.
 */
#include "edge/amqp_fail.h"

#include <string.h>

#include "edge/amqp_op.h"

/* A queue command's error with RabbitMQ's reply text: the state machine
 * gives the code and a text without names; the names are added here. */
void chan_fail_queue(struct chan_op *op, const struct mq_sm_result *r)
{
    static const char ineq[] = "PRECONDITION_FAILED - inequivalent arg '";
    const char *t = r->reply_text ? r->reply_text : "";
    int qn = (int)op->queue_len;
    const char *q = op->queue;

    switch (r->reply_code) {
    case 0:
        chan_op_fail(op, 541, "INTERNAL_ERROR - %s", t);
        return;
    case 404:
        chan_op_fail(op, 404, "NOT_FOUND - no queue '%.*s' in vhost '/'", qn, q);
        return;
    case 405:
        chan_op_fail(op, 405,
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked "
                "queue '%.*s' in vhost '/'. It could be originally declared "
                "on another connection or the exclusive property value does "
                "not match that of the original declaration.",
                qn, q);
        return;
    case 403:
        chan_op_fail(op, 403,
                "ACCESS_REFUSED - queue '%.*s' in vhost '/' in exclusive use",
                qn, q);
        return;
    default:
        break;
    }
    if (strcmp(t, "PRECONDITION_FAILED - queue in use") == 0) {
        chan_op_fail(op, 406, "PRECONDITION_FAILED - queue '%.*s' in vhost '/' in use",
                qn, q);
    } else if (strcmp(t, "PRECONDITION_FAILED - queue not empty") == 0) {
        chan_op_fail(op, 406,
                "PRECONDITION_FAILED - queue '%.*s' in vhost '/' not empty", qn,
                q);
    } else if (strncmp(t, ineq, sizeof(ineq) - 1) == 0 &&
               op->method == AMQP_QUEUE_DECLARE) {
        const char *arg = t + sizeof(ineq) - 1;
        struct amqp_method m;
        int flag = -1;

        if (amqp_method_decode(op->payload.data, op->payload.len, &m) == 0) {
            if (strcmp(arg, "durable'") == 0) {
                flag = m.queue_declare.durable;
            } else if (strcmp(arg, "auto_delete'") == 0) {
                flag = m.queue_declare.auto_delete;
            } else if (strcmp(arg, "exclusive'") == 0) {
                flag = m.queue_declare.exclusive;
            }
            amqp_method_free(&m);
        }
        if (flag >= 0) {
            chan_op_fail(op, 406,
                    "%s for queue '%.*s' in vhost '/': received '%s' but "
                    "current is '%s'",
                    t, qn, q, flag ? "true" : "false",
                    flag ? "false" : "true");
        } else {
            chan_op_fail(op, 406, "%s for queue '%.*s' in vhost '/'", t, qn, q);
        }
    } else {
        chan_op_fail(op, r->reply_code, "%s for queue '%.*s' in vhost '/'", t, qn,
                q);
    }
}

void chan_fail_unavailable(struct chan_op *op)
{
    /* Not a RabbitMQ situation; 541 closes the connection, which makes
     * clients reconnect, the right reaction to a lost leader. */
    chan_op_fail(op, 541, "INTERNAL_ERROR - storage unavailable, retry");
}
