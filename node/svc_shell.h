/*
 * svc_shell: the loop side of a replicated service (node/mq_svc,
 * node/meta_svc): its Raft group, a uv_prepare and a uv_check that run the
 * service's process() every loop turn (outside raft code, where submitting
 * is allowed), a periodic tick, and the close sequence that waits for all
 * of them before the service frees itself.
 *
 * Embed it in the service; the service reads sh.group, sh.loop and
 * sh.closing freely. Errors: svc_shell_start() returns -1 with @errmsg
 * (the group could not start); the shell holds nothing then. Everything
 * runs on the loop thread.
 */
#ifndef RINGMQ_SVC_SHELL_H
#define RINGMQ_SVC_SHELL_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "raft/group.h"
#include "sm/outcome.h"

struct svc_shell {
    uv_loop_t *loop;
    struct rgroup *group;
    bool closing;
    /* private */
    uv_prepare_t prepare;
    uv_check_t check;
    uv_timer_t timer;
    unsigned closes_left;
    void *owner;
    void (*process)(void *owner);
    void (*tick)(void *owner);
    void (*destroy)(void *owner);
    void (*close_cb)(void *data);
    void *close_data;
};

/* Start the group (@fsm copied, its data borrowed) and the handles:
 * @process after every loop turn, @tick every @tick_ms. */
int svc_shell_start(struct svc_shell *sh, uv_loop_t *loop,
                    const struct rgroup_config *group,
                    const struct rgroup_fsm *fsm, void *owner,
                    void (*process)(void *owner), void (*tick)(void *owner),
                    unsigned tick_ms, char *errmsg, size_t errlen);

/* The outcome of a command that rgroup_submit refused or that completed
 * with @rgroup_status (an RGROUP_* code other than 0): a refusal while the
 * service closes is CLOSING, whatever raft said; a full queue is BUSY, a
 * deadline passed in the queue EXPIRED (neither proposed). */
enum outcome svc_outcome(int rgroup_status, bool closing);

/* Set closing, close the handles and the group; when all are closed call
 * @destroy(owner) (which frees the owner and the shell in it), then
 * @cb(@data). The service fails its own pending work before or after. */
void svc_shell_close(struct svc_shell *sh, void (*destroy)(void *owner),
                     void (*cb)(void *data), void *data);

#endif
