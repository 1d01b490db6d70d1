/* stop_signals: see stop_signals.h. */
#include "common/stop_signals.h"

#include <signal.h>

#include "common/log.h"

static void on_signal(uv_signal_t *h, int signum)
{
    struct stop_signals *s = h->data;

    if (s->fired++) {
        log_info("signal %d: already stopping", signum);
        return;
    }
    log_info("signal %d: stopping", signum);
    s->stop(s->data);
}

void stop_signals_start(struct stop_signals *s, uv_loop_t *loop,
                        void (*stop)(void *data), void *data)
{
    signal(SIGPIPE, SIG_IGN);
    s->stop = stop;
    s->data = data;
    s->fired = 0;
    uv_signal_init(loop, &s->term);
    uv_signal_init(loop, &s->intr);
    s->term.data = s;
    s->intr.data = s;
    uv_signal_start(&s->term, on_signal, SIGTERM);
    uv_signal_start(&s->intr, on_signal, SIGINT);
}

void stop_signals_close(struct stop_signals *s)
{
    uv_close((uv_handle_t *)&s->term, NULL);
    uv_close((uv_handle_t *)&s->intr, NULL);
}
