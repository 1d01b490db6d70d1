/*
 * svc_shell: see svc_shell.h.
 */
#include "node/svc_shell.h"

static void prepare_cb(uv_prepare_t *h)
{
    struct svc_shell *sh = h->data;

    sh->process(sh->owner);
}

static void check_cb(uv_check_t *h)
{
    struct svc_shell *sh = h->data;

    sh->process(sh->owner);
}

static void timer_cb(uv_timer_t *t)
{
    struct svc_shell *sh = t->data;

    if (!sh->closing && sh->tick != NULL) {
        sh->tick(sh->owner);
    }
}

int svc_shell_start(struct svc_shell *sh, uv_loop_t *loop,
                    const struct rgroup_config *group,
                    const struct rgroup_fsm *fsm, void *owner,
                    void (*process)(void *owner), void (*tick)(void *owner),
                    unsigned tick_ms, char *errmsg, size_t errlen)
{
    sh->loop = loop;
    sh->owner = owner;
    sh->process = process;
    sh->tick = tick;
    sh->group = rgroup_new(loop, group, fsm, errmsg, errlen);
    if (sh->group == NULL) {
        return -1;
    }
    uv_prepare_init(loop, &sh->prepare);
    uv_check_init(loop, &sh->check);
    uv_timer_init(loop, &sh->timer);
    sh->prepare.data = sh;
    sh->check.data = sh;
    sh->timer.data = sh;
    uv_prepare_start(&sh->prepare, prepare_cb);
    uv_check_start(&sh->check, check_cb);
    uv_timer_start(&sh->timer, timer_cb, tick_ms, tick_ms);
    return 0;
}

static void close_step(struct svc_shell *sh)
{
    void (*cb)(void *);
    void *data;

    if (--sh->closes_left > 0) {
        return;
    }
    cb = sh->close_cb;
    data = sh->close_data;
    sh->destroy(sh->owner); /* frees sh too */
    if (cb != NULL) {
        cb(data);
    }
}

static void handle_closed(uv_handle_t *h)
{
    close_step(h->data);
}

static void group_closed(void *data)
{
    struct svc_shell *sh = data;

    sh->group = NULL;
    close_step(sh);
}

void svc_shell_close(struct svc_shell *sh, void (*destroy)(void *owner),
                     void (*cb)(void *data), void *data)
{
    sh->closing = true;
    sh->destroy = destroy;
    sh->close_cb = cb;
    sh->close_data = data;
    sh->closes_left = 4;
    uv_close((uv_handle_t *)&sh->prepare, handle_closed);
    uv_close((uv_handle_t *)&sh->check, handle_closed);
    uv_close((uv_handle_t *)&sh->timer, handle_closed);
    rgroup_close(sh->group, group_closed, sh);
}

enum outcome svc_outcome(int rgroup_status, bool closing)
{
    switch (rgroup_status) {
        case RGROUP_ENOTLEADER:
            return closing ? OUTCOME_CLOSING : OUTCOME_NOT_LEADER;
        case RGROUP_ECLOSING:
            return OUTCOME_CLOSING;
        case RGROUP_ETOOBIG:
            return OUTCOME_TOO_LARGE;
        case RGROUP_EFULL:
            return OUTCOME_BUSY;
        case RGROUP_EEXPIRED:
            return OUTCOME_EXPIRED;
        default:
            return OUTCOME_UNAVAILABLE;
    }
}
