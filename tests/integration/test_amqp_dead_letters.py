#!/usr/bin/python3
"""Dead letters are at least once (docs/amqp.md "Dead letters"), on the
local cluster (2 shards of 3 nodes, 2 routers), with the source queue on s1
and its dead-letter queue on s2:

1. rejected messages whose router dies before it republished them (s2, the
   target, paused meanwhile so the republish cannot be done): each one
   arrives in the dead-letter queue anyway, through the other router, once
   the claim window (20 s) passed;
2. messages expired by x-message-ttl while s2 is paused longer than an
   edge retries a republish (10 s): each one arrives once s2 is back.

Both happen during one outage of s2.

Before the outbox, a dead letter lived only in the answer of the command
that made it: both lost every message.
"""
import os
import signal
import time

import pika

import amqp_tutorials as at
import ringmq_test as rt
from test_amqp_cluster import C, HOST, conn, gated

N = 30
S2 = ("n4", "n5", "n6")


def pause(names, on):
    pids = C.lc.pids()
    for n in names:
        os.kill(pids[n], signal.SIGSTOP if on else signal.SIGCONT)


def declare_pair(ch, src, dlq, ex, src_args):
    ch.exchange_declare(ex, "fanout", durable=True)
    ch.queue_declare(dlq, durable=True)
    ch.queue_bind(dlq, ex)
    args = dict(src_args, **{"x-dead-letter-exchange": ex})
    ch.queue_declare(src, durable=True, arguments=args)
    C.lc.ctl("queue", "move", src, "s1", timeout=120)
    C.lc.ctl("queue", "move", dlq, "s2", timeout=120)


def ready(ch, q):
    return ch.queue_declare(q, durable=True, passive=True).method.message_count


def ready_via(r, q):
    """q's ready count through router r, or None while its shard does not
    answer (right after an outage the router closes with 541: retry)."""
    try:
        c = conn(r)
    except pika.exceptions.AMQPError:
        return None
    try:
        return ready(c.channel(), q)
    except pika.exceptions.AMQPError:
        return None
    finally:
        if c.is_open:
            c.close()


def expect_all_dead_lettered(r, dlq, bodies, timeout):
    """Every body in dlq (at least once), read through router r."""
    t0 = time.time()
    rt.wait_until(lambda: (ready_via(r, dlq) or 0) >= len(bodies), timeout,
                  "%d dead letters in %s" % (len(bodies), dlq), interval=0.5)
    c = conn(r)
    ch = c.channel()
    got = at.drain_get(ch, dlq, limit=10 * len(bodies))
    c.close()
    missing = set(bodies) - set(got)
    rt.check(not missing, "dead letters lost: %r" % sorted(missing))
    print("     all %d dead-lettered %.1fs after the outage, %d extra copies" % (
        len(bodies), time.time() - t0, len(got) - len(bodies)))


def cleanup(r, pairs):
    c = conn(r)
    ch = c.channel()
    for src, dlq, ex in pairs:
        rt.check(ready(ch, src) == 0, "%s holds messages again" % src)
        for q in (src, dlq):
            ch.queue_delete(q)
        ch.exchange_delete(ex)
    c.close()


def test_rejected_and_expired_during_an_outage():
    """Both cases share one outage of s2 (the suite's time): the rejects'
    router dies with their republishes, and r2, the router left, gives up
    on the expired messages' republishes after its retries."""
    rej = (at.uniq("dl_src"), at.uniq("dl_q"), at.uniq("dl_x"))
    ttl = (at.uniq("dl_ttl"), at.uniq("dl_ttlq"), at.uniq("dl_ttlx"))
    rejected = [b"rejected %d" % i for i in range(N)]
    expired = [b"expired %d" % i for i in range(N)]
    c1 = conn("r1")
    ch1 = c1.channel()
    declare_pair(ch1, rej[0], rej[1], rej[2], {})
    declare_pair(ch1, ttl[0], ttl[1], ttl[2], {"x-message-ttl": 500})
    ch1.confirm_delivery()
    for b in rejected:
        ch1.basic_publish("", rej[0], b, properties=pika.BasicProperties(delivery_mode=2))
    tags = []
    for _ in range(N):
        m, _, _ = ch1.basic_get(rej[0], auto_ack=False)
        rt.check(m is not None, "%s has fewer than %d messages" % (rej[0], N))
        tags.append(m.delivery_tag)
    pause(S2, True)
    try:
        for t in tags:
            ch1.basic_reject(t, requeue=False)
        # The channel's operations complete in order: the rejects were
        # applied at s1 when this answers.
        rt.check(ready(ch1, rej[0]) == 0, "%s not empty after the rejects" % rej[0])
        for b in expired:
            ch1.basic_publish("", ttl[0], b, properties=pika.BasicProperties(delivery_mode=2))
        t_killed = time.time()
        C.lc.kill9("r1")  # its republishes to the paused s2 die with it
        c2 = conn("r2")
        ch2 = c2.channel()
        rt.wait_until(lambda: ready(ch2, ttl[0]) == 0, 30,
                      "the messages of %s expired" % ttl[0])
        t_expired = time.time()
        # Longer than any request's deadline (what r1 had sent to s2 before
        # it died is refused unexecuted when s2 reads it) and than an
        # edge's retries of one republish (10 s) after the expiry.
        while time.time() - t_killed < 12 or time.time() - t_expired < 11:
            c2.process_data_events(time_limit=0.5)
        c2.close()
    finally:
        pause(S2, False)
    try:
        expect_all_dead_lettered("r2", rej[1], rejected, 120)
        expect_all_dead_lettered("r2", ttl[1], expired, 120)
        cleanup("r2", (rej, ttl))
    finally:
        C.start_router("r1")
        at.wait_amqp_ready(HOST, C.port("r1"), timeout=30)


if __name__ == "__main__":
    state = {}

    def setup():
        C.setup()
        state["up"] = True

    rt.run_tests([setup, gated(test_rejected_and_expired_during_an_outage, state)])
