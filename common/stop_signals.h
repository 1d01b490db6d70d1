/*
 * stop_signals: what every ringmq process does with signals. SIGPIPE is
 * ignored (peers vanish; writes then fail with EPIPE instead of killing us),
 * and the first SIGTERM or SIGINT calls @stop once; later ones are logged
 * and ignored, so a second Ctrl-C never interrupts a clean shutdown.
 *
 * The caller owns @s and calls stop_signals_close() once its shutdown is
 * complete (the handles are then closed by the loop's next iteration).
 */
#ifndef RINGMQ_STOP_SIGNALS_H
#define RINGMQ_STOP_SIGNALS_H

#include <uv.h>

struct stop_signals {
    uv_signal_t term;
    uv_signal_t intr;
    void (*stop)(void *data);
    void *data;
    int fired;
};

void stop_signals_start(struct stop_signals *s, uv_loop_t *loop,
                        void (*stop)(void *data), void *data);
void stop_signals_close(struct stop_signals *s);

#endif
