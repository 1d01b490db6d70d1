#!/usr/bin/python3
"""The seven RabbitMQ tutorials, and the broker rules applications lean on,
as checks against any AMQP 0-9-1 server: the acceptance tests of ringmq's
AMQP edge, proven against a real RabbitMQ.

Every check is a function f(host, port) (durability also takes restart, a
callable that restarts the broker keeping its data) that raises on a wrong
outcome. They use python3-pika 1.2's BlockingConnection the way the official
tutorials do (https://www.rabbitmq.com/tutorials, Python). Every check is
bounded in time: connections time out, waits poll with deadlines, and a
SIGALRM watchdog ends a check that still hangs. Names are unique per run, so
checks can run again on the same broker.

    /usr/bin/python3 tests/integration/amqp_tutorials.py --rabbitmq
        start a private RabbitMQ (rabbitmq_ref.py) and run every check on it
    /usr/bin/python3 tests/integration/amqp_tutorials.py --target HOST:PORT
        run every check (durability skipped: it needs a restart) on a server
    ... [-k SUBSTRING] runs only the checks whose name contains SUBSTRING

Used by test_amqp_standalone.py and test_amqp_cluster.py.
"""
import datetime
import decimal
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pika
import pika.exceptions as pex
from pika.spec import PERSISTENT_DELIVERY_MODE

HERE = os.path.dirname(os.path.abspath(__file__))

CHECK_TIMEOUT = 30  # seconds; the watchdog's budget for one check (RabbitMQ: < 2 s)
MAX_HUNG = 3  # after this many checks in a row hit the watchdog, fail the rest at once


class CheckTimeout(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def uniq(prefix):
    return "%s-%d-%06x" % (prefix, os.getpid(), random.randrange(1 << 24))


def params(host, port, **kw):
    """Fail fast: one attempt, bounded socket and handshake times."""
    return pika.ConnectionParameters(
        host=host, port=port, connection_attempts=1, retry_delay=0,
        socket_timeout=5, stack_timeout=15, blocked_connection_timeout=30, **kw)


class watchdog:
    """Raise CheckTimeout in the main thread after @secs (SIGALRM), so that a
    blocking pika call waiting for a reply that never comes cannot hang.
    Nests: an inner watchdog gives the outer one its remaining time back."""

    def __init__(self, secs):
        self.secs = secs
        self.armed = threading.current_thread() is threading.main_thread()

    def _fire(self, signum, frame):
        raise CheckTimeout("still waiting after %ds" % self.secs)

    def __enter__(self):
        if self.armed:
            self.t0 = time.time()
            self.old = signal.signal(signal.SIGALRM, self._fire)
            self.outer = signal.setitimer(signal.ITIMER_REAL, self.secs)[0]
        return self

    def __exit__(self, *exc):
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
            if self.outer > 0:
                signal.setitimer(signal.ITIMER_REAL,
                                 max(0.001, self.outer - (time.time() - self.t0)))
        return False


def abort(conn):
    """Drop a pika connection's socket without the closing handshake (the
    server may be the thing that hangs)."""
    try:
        conn._impl._transport._sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - best effort
        pass


class Env:
    """Connections of one check; all closed at the end, even on failure."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.conns = []
        self.procs = []

    def connect(self, **kw):
        c = pika.BlockingConnection(params(self.host, self.port, **kw))
        self.conns.append(c)
        return c

    def channel(self):
        return self.connect().channel()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for c in self.conns:
            try:
                if not c.is_open:
                    continue
                if exc[0] is not None:  # failing: the server may not answer
                    abort(c)
                    continue
                with watchdog(10):
                    c.close()
            except Exception:  # noqa: BLE001 - best effort
                abort(c)
        return False


def pump(conns, until, timeout=10, what="messages"):
    """Run the I/O loops of @conns until until() is true."""
    deadline = time.time() + timeout
    while not until():
        if time.time() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        for c in conns:
            c.process_data_events(time_limit=0.02)


def settle(conns, secs=0.5):
    """Run the I/O loops for @secs: lets anything that should NOT arrive arrive."""
    end = time.time() + secs
    while time.time() < end:
        for c in conns:
            c.process_data_events(time_limit=0.02)


def expect_channel_close(code, fn, *args, **kw):
    """fn(...) must make the broker close the channel with @code; returns the
    reply text."""
    try:
        fn(*args, **kw)
    except pex.ChannelClosedByBroker as e:
        check(e.reply_code == code, "expected channel.close %d, got %d %s" %
              (code, e.reply_code, e.reply_text))
        return e.reply_text
    raise AssertionError("expected channel.close %d from %s, got none" %
                         (code, getattr(fn, "__name__", fn)))


def drain_get(ch, q, limit=1000):
    """basic.get with auto-ack until get-empty; returns the bodies."""
    out = []
    for _ in range(limit):
        m, _, b = ch.basic_get(q, auto_ack=True)
        if m is None:
            return out
        out.append(b)
    raise AssertionError("queue %s did not run empty" % q)


def queue_gone(env, q, timeout=5.0):
    """Poll a passive declare until the queue is gone (404)."""
    deadline = time.time() + timeout
    while True:
        ch = env.channel()
        try:
            ch.queue_declare(q, passive=True)
        except pex.ChannelClosedByBroker as e:
            check(e.reply_code == 404, "passive declare of %s: %d %s" %
                  (q, e.reply_code, e.reply_text))
            return True
        ch.close()
        if time.time() > deadline:
            return False
        time.sleep(0.1)


# ---------------------------------------------------------------------------
# The seven tutorials
# ---------------------------------------------------------------------------

def t1_hello_world(host, port):
    """send.py / receive.py: the default exchange routes by queue name."""
    q = uniq("hello")
    with Env(host, port) as env:
        connection = env.connect()
        channel = connection.channel()
        channel.queue_declare(queue=q)
        channel.basic_publish(exchange="", routing_key=q, body="Hello World!")
        connection.close()

        connection = env.connect()
        channel = connection.channel()
        ok = channel.queue_declare(queue=q)  # idempotent redeclare
        check(ok.method.queue == q, "declare-ok names %r" % ok.method.queue)
        check(ok.method.message_count == 1, "declare-ok message_count %d, want 1"
              % ok.method.message_count)
        check(ok.method.consumer_count == 0, "consumer_count %d" % ok.method.consumer_count)
        got = []

        def callback(ch, method, properties, body):
            got.append((method, body))
            ch.stop_consuming()

        channel.basic_consume(queue=q, on_message_callback=callback, auto_ack=True)
        connection.call_later(10, channel.stop_consuming)
        channel.start_consuming()
        check(len(got) == 1, "received %d messages, want 1" % len(got))
        method, body = got[0]
        check(body == b"Hello World!", "body %r" % body)
        check(method.exchange == "" and method.routing_key == q and not method.redelivered,
              "deliver fields %r" % method)
        channel.queue_delete(q)


def alternates(per_worker, n):
    """Round robin as RabbitMQ deals it with no prefetch limit: the workers
    take turns, task by task (worker w gets tasks s, s + k, s + 2k ... for
    its own start s), each in publish order. @per_worker: the task numbers
    each of the k workers got, in arrival order."""
    k = len(per_worker)
    check(sorted(per_worker) == sorted(list(range(s, n, k)) for s in range(k)),
          "not round robin (%d tasks, %d workers taking turns): %r" % (n, k, per_worker))


def t2_work_queues_round_robin(host, port):
    """new_task.py / worker.py: persistent tasks, manual acks, two workers
    share them (round-robin: RabbitMQ alternates, and so must we)."""
    q = uniq("task_queue")
    with Env(host, port) as env:
        pc = env.connect()
        pch = pc.channel()
        pch.queue_declare(queue=q, durable=True)
        workers = []
        for w in range(2):
            c = env.connect()
            ch = c.channel()
            ch.queue_declare(queue=q, durable=True)
            got = []

            def callback(ch, method, properties, body, got=got):
                got.append((body, method.redelivered))
                ch.basic_ack(delivery_tag=method.delivery_tag)

            ch.basic_consume(queue=q, on_message_callback=callback)
            workers.append((c, ch, got))
        settle([c for c, _, _ in workers], 0.2)
        n = 10
        for i in range(n):
            pch.basic_publish(exchange="", routing_key=q, body="task %d" % i,
                              properties=pika.BasicProperties(
                                  delivery_mode=PERSISTENT_DELIVERY_MODE))
        conns = [c for c, _, _ in workers]
        pump(conns, lambda: sum(len(g) for _, _, g in workers) >= n, 10, "10 tasks")
        settle(conns, 0.3)
        all_bodies = sorted(b for _, _, g in workers for b, _ in g)
        check(all_bodies == sorted(b"task %d" % i for i in range(n)),
              "tasks delivered: %r" % all_bodies)
        check(not any(r for _, _, g in workers for _, r in g), "a first delivery was redelivered")
        alternates([[int(b.split()[1]) for b, _ in g] for _, _, g in workers], n)
        ok = pch.queue_declare(queue=q, durable=True, passive=True)
        check(ok.method.message_count == 0, "acked tasks left %d" % ok.method.message_count)
        check(ok.method.consumer_count == 2, "consumer_count %d, want 2" % ok.method.consumer_count)
        pch.queue_delete(q)


def round_robin_rounds(host, port, rounds=20):
    """Tutorial 2's round robin, many times: two consumers without a prefetch
    limit, ten messages published in one go, on a fresh queue each round:
    always 5/5 and alternating (RabbitMQ deals message by message; ringmq
    once gave 3/7 about one run in six)."""
    with Env(host, port) as env:
        pch = env.channel()
        workers = []
        for _ in range(2):
            c = env.connect()
            workers.append((c, c.channel()))
        conns = [c for c, _ in workers]
        for r in range(rounds):
            q = uniq("rr")
            pch.queue_declare(queue=q, auto_delete=False)
            got = []
            for _, ch in workers:
                mine = []

                def callback(ch, method, properties, body, mine=mine):
                    mine.append(int(body))
                    ch.basic_ack(delivery_tag=method.delivery_tag)

                ch.basic_consume(queue=q, on_message_callback=callback)
                got.append(mine)
            n = 10
            for i in range(n):
                pch.basic_publish(exchange="", routing_key=q, body=str(i))
            pump(conns, lambda: sum(len(g) for g in got) >= n, 10, "round %d's tasks" % r)
            try:
                alternates(got, n)
            except AssertionError as e:
                raise AssertionError("round %d: %s" % (r, e)) from None
            for _, ch in workers:
                for tag in list(ch.consumer_tags):
                    ch.basic_cancel(tag)
            pch.queue_delete(q)


def _worker_that_dies(host, port, q):
    """Subprocess body: consume one message with manual ack, print it, and
    wait without acking until killed."""
    connection = pika.BlockingConnection(params(host, int(port)))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)

    def callback(ch, method, properties, body):
        sys.stdout.write("got %s %s\n" % (body.decode(), method.redelivered))
        sys.stdout.flush()

    channel.basic_consume(queue=q, on_message_callback=callback)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    connection.call_later(60, channel.stop_consuming)
    channel.start_consuming()


def _readline(proc, timeout):
    out = []

    def rd():
        out.append(proc.stdout.readline())
    t = threading.Thread(target=rd, daemon=True)
    t.start()
    t.join(timeout)
    check(out and out[0], "worker subprocess said nothing in %.0fs" % timeout)
    return out[0].decode().strip()


def t2_work_queues_redelivery(host, port):
    """A worker killed (kill -9) while holding an unacked task: the task goes
    to another worker with redelivered=True. Same for a channel closed
    without acking."""
    q = uniq("task_queue")
    with Env(host, port) as env:
        c = env.connect()
        ch = c.channel()
        ch.queue_declare(queue=q, durable=True)
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker-dies",
                              host, str(port), q], stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
        env.procs.append(p)
        check(_readline(p, 15) == "ready", "worker did not start")
        time.sleep(0.2)
        ch.basic_publish(exchange="", routing_key=q, body="task-a",
                         properties=pika.BasicProperties(delivery_mode=PERSISTENT_DELIVERY_MODE))
        line = _readline(p, 10)
        check(line == "got task-a False", "dying worker: %r" % line)
        ok = ch.queue_declare(queue=q, durable=True, passive=True)
        check(ok.method.message_count == 0,
              "declare-ok counts ready messages only: %d with one unacked"
              % ok.method.message_count)
        check(ok.method.consumer_count == 1, "consumer_count %d" % ok.method.consumer_count)
        p.kill()
        p.wait()

        got = []

        def callback(ch2, method, properties, body):
            got.append((body, method.redelivered))

        c2 = env.connect()
        ch2 = c2.channel()
        ch2.basic_qos(prefetch_count=1)
        ch2.basic_consume(queue=q, on_message_callback=callback)
        pump([c2], lambda: got, 15, "the dead worker's task")
        check(got[0] == (b"task-a", True), "after the kill: %r" % got)

        # a channel closed without acking returns its deliveries too
        ch2.close()
        got.clear()
        ch3 = c2.channel()
        ch3.basic_consume(queue=q, on_message_callback=callback)
        pump([c2], lambda: got, 10, "the task of the closed channel")
        check(got[0] == (b"task-a", True), "after channel.close: %r" % got)
        ch3.close()
        ch.queue_delete(q)


def t3_durability(host, port, restart, transient_gone=True):
    """A durable queue, exchange and binding and persistent messages survive
    a broker restart; a non-durable queue does not."""
    q, tq, ex = uniq("durable_q"), uniq("transient_q"), uniq("durable_ex")
    n = 5
    with Env(host, port) as env:
        channel = env.channel()
        channel.queue_declare(queue=q, durable=True)
        channel.exchange_declare(exchange=ex, exchange_type="direct", durable=True)
        channel.queue_bind(queue=q, exchange=ex, routing_key="k")
        channel.queue_declare(queue=tq, durable=False)
        channel.confirm_delivery()  # so a kill -9 restart keeps them too
        for i in range(n):
            channel.basic_publish(
                exchange="", routing_key=q, body="persistent %d" % i,
                properties=pika.BasicProperties(
                    delivery_mode=PERSISTENT_DELIVERY_MODE, content_type="text/plain",
                    headers={"i": i}, message_id="m%d" % i))
        channel.basic_publish(exchange="", routing_key=tq, body="transient")
    restart()
    with Env(host, port) as env:
        channel = env.channel()
        ok = channel.queue_declare(queue=q, durable=True, passive=True)
        check(ok.method.message_count == n, "after restart: %d messages, want %d"
              % (ok.method.message_count, n))
        for i in range(n):
            m, props, body = channel.basic_get(q, auto_ack=False)
            check(m is not None, "message %d missing after restart" % i)
            check(body == b"persistent %d" % i, "message %d: %r" % (i, body))
            check(props.delivery_mode == 2 and props.content_type == "text/plain" and
                  props.headers == {"i": i} and props.message_id == "m%d" % i,
                  "properties after restart: %r" % props)
            channel.basic_ack(m.delivery_tag)
        try:
            channel.basic_publish(exchange=ex, routing_key="k", body="via exchange")
            m, _, body = channel.basic_get(q, auto_ack=True)
        except pex.ChannelClosedByBroker as e:
            # say whether it is lost or only late (a stale copy of the metadata)
            later = "still missing 5 s later"
            for i in range(50):
                time.sleep(0.1)
                try:
                    env.channel().exchange_declare(ex, "direct", passive=True)
                    later = "there %.1f s later" % ((i + 1) / 10)
                    break
                except pex.ChannelClosedByBroker:
                    pass
            raise AssertionError("after the restart, publishing to the durable exchange: "
                                 "%d %s (the exchange is %s)" % (e.reply_code, e.reply_text, later))
        check(body == b"via exchange", "the durable binding did not survive: %r" % body)
        if transient_gone:
            channel2 = env.channel()
            expect_channel_close(404, channel2.queue_declare, queue=tq, passive=True)
        channel.queue_delete(q)
        channel.exchange_delete(ex)


def t4_fair_dispatch(host, port):
    """basic_qos(prefetch_count=1): a busy worker gets no second task while
    it holds one unacked; the other worker drains the rest."""
    q = uniq("task_queue")
    n = 10
    with Env(host, port) as env:
        pc = env.connect()
        pch = pc.channel()
        pch.queue_declare(queue=q, durable=True)
        slow_c, fast_c = env.connect(), env.connect()
        slow, fast = [], []

        def slow_cb(ch, method, properties, body):
            slow.append((body, method.delivery_tag))  # busy: no ack yet

        def fast_cb(ch, method, properties, body):
            fast.append(body)
            ch.basic_ack(delivery_tag=method.delivery_tag)

        slow_ch = slow_c.channel()
        slow_ch.basic_qos(prefetch_count=1)
        slow_ch.basic_consume(queue=q, on_message_callback=slow_cb)
        fast_ch = fast_c.channel()
        fast_ch.basic_qos(prefetch_count=1)
        fast_ch.basic_consume(queue=q, on_message_callback=fast_cb)
        settle([slow_c, fast_c], 0.2)
        for i in range(n):
            pch.basic_publish(exchange="", routing_key=q, body="task %d" % i,
                              properties=pika.BasicProperties(
                                  delivery_mode=PERSISTENT_DELIVERY_MODE))
        conns = [slow_c, fast_c]
        pump(conns, lambda: len(slow) + len(fast) >= n, 15, "the tasks")
        settle(conns, 0.5)
        check(len(slow) == 1 and len(fast) == n - 1,
              "prefetch 1: slow worker got %d, fast %d (want 1 and %d)"
              % (len(slow), len(fast), n - 1))
        # once it acks, the slow worker gets the next task
        pch.basic_publish(exchange="", routing_key=q, body="task last")
        settle(conns, 0.3)
        slow_ch.basic_ack(delivery_tag=slow[0][1])
        pump(conns, lambda: len(slow) + len(fast) >= n + 1, 10, "the last task")
        bodies = sorted([b for b, _ in slow] + fast)
        check(len(set(bodies)) == n + 1, "duplicates: %r" % bodies)
        pch.queue_delete(q)


def t5_publish_subscribe(host, port):
    """emit_log.py / receive_logs.py: a fanout exchange, exclusive
    server-named queues; every subscriber gets every message; an exclusive
    queue is gone when its connection closes."""
    ex = uniq("logs")
    n_subs, n_msgs = 3, 5
    with Env(host, port) as env:
        subs = []
        for _ in range(n_subs):
            c = env.connect()
            channel = c.channel()
            channel.exchange_declare(exchange=ex, exchange_type="fanout")
            result = channel.queue_declare(queue="", exclusive=True)
            queue_name = result.method.queue
            check(queue_name.startswith("amq.gen-"), "server-named queue %r" % queue_name)
            channel.queue_bind(exchange=ex, queue=queue_name)
            got = []

            def callback(ch, method, properties, body, got=got):
                got.append(body)

            channel.basic_consume(queue=queue_name, on_message_callback=callback,
                                  auto_ack=True)
            subs.append((c, queue_name, got))
        names = [s[1] for s in subs]
        check(len(set(names)) == n_subs, "server names not unique: %r" % names)
        pch = env.channel()
        pch.exchange_declare(exchange=ex, exchange_type="fanout")
        for i in range(n_msgs):
            pch.basic_publish(exchange=ex, routing_key="", body="log %d" % i)
        conns = [s[0] for s in subs]
        pump(conns, lambda: all(len(s[2]) >= n_msgs for s in subs), 10, "the logs")
        settle(conns, 0.3)
        want = [b"log %d" % i for i in range(n_msgs)]
        for _, name, got in subs:
            check(got == want, "subscriber %s got %r" % (name, got))
        # another connection may not use an exclusive queue
        other = env.channel()
        expect_channel_close(405, other.basic_consume, queue=names[1],
                             on_message_callback=lambda *a: None)
        subs[0][0].close()
        check(queue_gone(env, names[0]), "exclusive queue %s outlived its connection" % names[0])
        pch.exchange_delete(ex)


def t6_routing(host, port):
    """emit_log_direct.py / receive_logs_direct.py: a direct exchange; one
    queue bound with several keys; messages reach only matching queues."""
    ex = uniq("direct_logs")
    with Env(host, port) as env:
        channel = env.channel()
        channel.exchange_declare(exchange=ex, exchange_type="direct")
        channel.confirm_delivery()  # routed before the basic.gets below
        qs = {}
        for name, severities in (("errors", ["error"]),
                                 ("all", ["info", "warning", "error"]),
                                 ("again", ["error"])):
            q = channel.queue_declare(queue="", exclusive=True).method.queue
            for severity in severities:
                channel.queue_bind(exchange=ex, queue=q, routing_key=severity)
            qs[name] = q
        channel.queue_bind(exchange=ex, queue=qs["all"], routing_key="info")  # twice: one binding
        for severity in ("info", "warning", "error", "debug", "Error", "error.x"):
            channel.basic_publish(exchange=ex, routing_key=severity,
                                  body="%s: message" % severity)
        want = {"errors": [b"error: message"],
                "all": [b"info: message", b"warning: message", b"error: message"],
                "again": [b"error: message"]}
        for name, q in qs.items():
            got = drain_get(channel, q)
            check(got == want[name], "queue %s got %r, want %r" % (name, got, want[name]))
        channel.queue_unbind(queue=qs["all"], exchange=ex, routing_key="info")
        channel.basic_publish(exchange=ex, routing_key="info", body="after unbind")
        channel.basic_publish(exchange=ex, routing_key="warning", body="still bound")
        check(drain_get(channel, qs["all"]) == [b"still bound"], "queue.unbind")
        channel.exchange_delete(ex)


def topic_match(pattern, key):
    """RabbitMQ's rule: words split on '.', '*' is exactly one word, '#' zero
    or more; the empty key has no words."""
    p = pattern.split(".") if pattern else []
    k = key.split(".") if key else []

    def m(i, j):
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return any(m(i + 1, jj) for jj in range(j, len(k) + 1))
        if j == len(k):
            return False
        return (p[i] == "*" or p[i] == k[j]) and m(i + 1, j + 1)
    return m(0, 0)


TOPIC_PATTERNS = ["#", "*", "a", "a.#", "#.a", "a.*", "*.b", "*.*", "a.#.b",
                  "a.*.b", "#.b.#", "*.#", "#.*", "a.b.c", "#.#", ""]
TOPIC_KEYS = ["", "a", "b", "a.b", "b.a", "a.a", "a.b.c", "a.x.b", "a.x.y.b",
              "a..b", ".", "x.a", "b.b"]


def t7_topics(host, port):
    """emit_log_topic.py / receive_logs_topic.py with the tutorial's
    examples, then RabbitMQ's edge cases of '*' and '#'."""
    ex = uniq("topic_logs")
    with Env(host, port) as env:
        channel = env.channel()
        channel.exchange_declare(exchange=ex, exchange_type="topic")
        channel.confirm_delivery()  # routed before the basic.gets below
        q1 = channel.queue_declare("", exclusive=True).method.queue
        q2 = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(exchange=ex, queue=q1, routing_key="*.orange.*")
        channel.queue_bind(exchange=ex, queue=q2, routing_key="*.*.rabbit")
        channel.queue_bind(exchange=ex, queue=q2, routing_key="lazy.#")
        for key in ("quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox",
                    "lazy.brown.fox", "lazy.pink.rabbit", "quick.brown.fox", "orange",
                    "quick.orange.male.rabbit", "lazy.orange.male.rabbit", "lazy"):
            channel.basic_publish(exchange=ex, routing_key=key, body=key)
        got1, got2 = drain_get(channel, q1), drain_get(channel, q2)
        check(got1 == [b"quick.orange.rabbit", b"lazy.orange.elephant", b"quick.orange.fox"],
              "Q1 (*.orange.*) got %r" % got1)
        check(got2 == [b"quick.orange.rabbit", b"lazy.orange.elephant", b"lazy.brown.fox",
                       b"lazy.pink.rabbit", b"lazy.orange.male.rabbit", b"lazy"],
              "Q2 (*.*.rabbit, lazy.#) got %r (lazy.pink.rabbit matches both "
              "bindings and must arrive once)" % got2)

        # the edge cases: one queue per pattern, every key published once
        # (the spec'd ones first, so a failure names them)
        for pattern, key, want in (("#", "", True), ("a.#", "a", True),
                                   ("*", "a.b", False), ("#", "a.b.c", True),
                                   ("*", "", False), ("a.*", "a", False),
                                   ("#.a", "a", True), ("a.#.b", "a.b", True),
                                   ("a.*.b", "a..b", True), ("", "", True)):
            check(topic_match(pattern, key) == want, "reference matcher: %r %r" % (pattern, key))
        qs = {}
        for pat in TOPIC_PATTERNS:
            q = channel.queue_declare("", exclusive=True).method.queue
            channel.queue_bind(exchange=ex, queue=q, routing_key=pat)
            qs[pat] = q
        for key in TOPIC_KEYS:
            channel.basic_publish(exchange=ex, routing_key=key, body=key)
        bad = []
        for pat, q in qs.items():
            got = [b.decode() for b in drain_get(channel, q)]
            want = [k for k in TOPIC_KEYS if topic_match(pat, k)]
            if got != want:
                bad.append("pattern %r got %r want %r" % (pat, got, want))
        check(not bad, "; ".join(bad))
        channel.exchange_delete(ex)


# ---------------------------------------------------------------------------
# Beyond the tutorials
# ---------------------------------------------------------------------------

def server_properties(host, port):
    """What pika reads from connection.start: the capabilities that switch on
    confirm_delivery (publisher_confirms), basic_nack (basic.nack),
    consumer cancel notifications, exchange_bind, blocked connections and an
    authentication failure closed with 403."""
    with Env(host, port) as env:
        c = env.connect()
        props = c._impl.server_properties
        caps = props.get("capabilities", {})
        for cap in ("publisher_confirms", "basic.nack", "consumer_cancel_notify",
                    "exchange_exchange_bindings", "connection.blocked",
                    "authentication_failure_close"):
            check(caps.get(cap) is True, "capability %s: %r (server_properties %r)"
                  % (cap, caps.get(cap), props))
        for k in ("product", "version", "platform"):
            check(isinstance(props.get(k), (str, bytes)), "server property %s: %r" % (k, props.get(k)))
        check(c._impl.params.frame_max >= 4096, "frame_max %d" % c._impl.params.frame_max)
        check(c._impl.params.channel_max >= 1, "channel_max %d" % c._impl.params.channel_max)
        # wrong password: connection.close 403 ACCESS_REFUSED (authentication_failure_close)
        try:
            pika.BlockingConnection(params(host, port, credentials=pika.PlainCredentials(
                "guest", "wrong")))
        except pex.ProbableAuthenticationError as e:
            check("ACCESS_REFUSED" in str(e) and "403" in str(e), "auth failure: %r" % e)
        else:
            raise AssertionError("a wrong password was accepted")
        # unknown vhost: connection.close 530 NOT_ALLOWED in reply to connection.open
        try:
            pika.BlockingConnection(params(host, port, virtual_host="no-such-vhost"))
        except pex.ProbableAccessDeniedError as e:
            check("(530) 'NOT_ALLOWED - vhost no-such-vhost not found'" in str(e),
                  "unknown vhost: %r" % e)
        else:
            raise AssertionError("an unknown vhost was accepted")


def publisher_confirms(host, port):
    """confirm_delivery: a routable publish is confirmed; a mandatory one
    that no queue takes raises UnroutableError (basic.return 312 NO_ROUTE
    then basic.ack); a non-mandatory unroutable one is just confirmed; a
    publish to a missing exchange closes the channel with 404."""
    q = uniq("confirms")
    with Env(host, port) as env:
        ch = env.channel()
        ch.queue_declare(q)
        ch.confirm_delivery()
        for i in range(20):
            ch.basic_publish("", q, "m%d" % i, properties=pika.BasicProperties(
                delivery_mode=PERSISTENT_DELIVERY_MODE))
        ch.basic_publish("", q, "mandatory and routable", mandatory=True)
        ok = ch.queue_declare(q, passive=True)
        check(ok.method.message_count == 21, "confirmed %d messages" % ok.method.message_count)
        nowhere = uniq("nowhere")
        try:
            ch.basic_publish("", nowhere, "lost", mandatory=True)
        except pex.UnroutableError as e:
            check(len(e.messages) == 1, "returned %r" % e.messages)
            r = e.messages[0]
            check(r.method.reply_code == 312 and r.method.reply_text == "NO_ROUTE" and
                  r.method.exchange == "" and r.method.routing_key == nowhere and
                  r.body == b"lost", "basic.return: %r %r" % (r.method, r.body))
        else:
            raise AssertionError("mandatory publish to no queue: no UnroutableError")
        ch.basic_publish("", nowhere, "dropped")  # not mandatory: acked, no error
        ex = uniq("confirm_ex")
        ch.exchange_declare(ex, "direct")
        try:
            ch.basic_publish(ex, "nokey", "lost", mandatory=True)
        except pex.UnroutableError as e:
            check(e.messages[0].method.exchange == ex, "return exchange %r" % e.messages[0].method)
        else:
            raise AssertionError("mandatory publish to an unbound key: no UnroutableError")
        ch.exchange_delete(ex)
        ch.queue_delete(q)
        text = expect_channel_close(404, ch.basic_publish, uniq("no_such_exchange"), "k", "x")
        check(text.startswith("NOT_FOUND - no exchange"), "reply text %r" % text)

        # without confirms: the return arrives through the return callback
        ch2 = env.channel()
        returned = []
        ch2.add_on_return_callback(lambda c, m, p, b: returned.append((m, b)))
        ch2.basic_publish("", nowhere, "back to me", mandatory=True)
        pump([ch2.connection], lambda: returned, 5, "basic.return")
        check(returned[0][0].reply_code == 312 and returned[0][1] == b"back to me",
              "return %r" % returned)


HEADERS = {"s": "v", "n": 7, "big": 1 << 40, "neg": -3, "l": [1, "x", {"in": "list"}],
           "d": decimal.Decimal("1.5"), "b": True, "f": False, "t": {"k": "v", "e": {}},
           "ts": datetime.datetime(2024, 1, 2, 3, 4, 5), "none": None, "bytes": b"\xff\x00"}


def basic_get(host, port):
    """basic.get: get-empty on an empty queue, get-ok with the count of
    messages left, manual ack, unacked message returned on channel close."""
    q = uniq("get")
    with Env(host, port) as env:
        c = env.connect()
        ch = c.channel()
        ch.queue_declare(q)
        ch.confirm_delivery()  # publishes are in the queue before the next get/declare
        m, p, b = ch.basic_get(q)
        check(m is None and b is None, "get from an empty queue: %r %r" % (m, b))
        for i in range(3):
            ch.basic_publish("", q, "g%d" % i, properties=pika.BasicProperties(
                content_type="application/json", correlation_id="c%d" % i,
                reply_to="rq", priority=3, timestamp=1700000000, type="t",
                user_id="guest", app_id="app", expiration="60000",
                content_encoding="utf-8", headers=HEADERS))
        m, p, b = ch.basic_get(q, auto_ack=False)
        check(b == b"g0" and m.message_count == 2 and not m.redelivered and
              m.exchange == "" and m.routing_key == q, "get-ok %r %r" % (m, b))
        check(p.content_type == "application/json" and p.correlation_id == "c0" and
              p.reply_to == "rq" and p.priority == 3 and p.timestamp == 1700000000 and
              p.type == "t" and p.user_id == "guest" and p.app_id == "app" and
              p.expiration == "60000" and p.content_encoding == "utf-8" and
              p.headers == HEADERS,
              "properties %r" % p)
        ch.basic_ack(m.delivery_tag)
        m, p, b = ch.basic_get(q, auto_ack=False)
        check(b == b"g1" and m.message_count == 1, "second get %r %r" % (m, b))
        ch.close()  # g1 unacked: back to the queue, redelivered
        ch = c.channel()
        m, p, b = ch.basic_get(q, auto_ack=True)
        check(b == b"g1" and m.redelivered, "after channel close: %r %r" % (m, b))
        m, p, b = ch.basic_get(q, auto_ack=True)
        check(b == b"g2" and m.message_count == 0 and not m.redelivered, "last %r %r" % (m, b))
        m, p, b = ch.basic_get(q)
        check(m is None, "drained queue: %r" % m)
        # a wrong delivery tag is a channel error 406 (PRECONDITION_FAILED - unknown delivery tag)
        text = expect_channel_close(406, lambda: (ch.basic_ack(999),
                                                  ch.queue_declare(q, passive=True)))
        check("unknown delivery tag" in text, "reply text %r" % text)
        ch = c.channel()
        ch.queue_delete(q)


def nack_and_reject(host, port):
    """basic.reject / basic.nack with and without requeue, nack multiple."""
    q = uniq("nack")
    with Env(host, port) as env:
        c = env.connect()
        ch = c.channel()
        ch.queue_declare(q)
        ch.confirm_delivery()  # publishes are in the queue before the next get/declare
        for i in range(4):
            ch.basic_publish("", q, "n%d" % i)
        m, _, b = ch.basic_get(q)
        ch.basic_reject(m.delivery_tag, requeue=True)
        m, _, b = ch.basic_get(q)
        check(b == b"n0" and m.redelivered, "reject requeue=True: %r %r" % (m, b))
        ch.basic_nack(m.delivery_tag, requeue=True)
        m, _, b = ch.basic_get(q)
        check(b == b"n0" and m.redelivered, "nack requeue=True: %r %r" % (m, b))
        ch.basic_reject(m.delivery_tag, requeue=False)  # dropped
        m, _, b = ch.basic_get(q)
        check(b == b"n1" and not m.redelivered, "after reject requeue=False: %r" % b)
        ch.basic_nack(m.delivery_tag, requeue=False)  # dropped
        tags = []
        for want in (b"n2", b"n3"):
            m, _, b = ch.basic_get(q)
            check(b == want, "got %r want %r" % (b, want))
            tags.append(m.delivery_tag)
        ch.basic_nack(tags[-1], multiple=True, requeue=True)  # both back, in order
        got = []
        for _ in range(2):
            m, _, b = ch.basic_get(q, auto_ack=True)
            got.append((b, m.redelivered))
        check(got == [(b"n2", True), (b"n3", True)], "nack multiple: %r" % got)
        ok = ch.queue_declare(q, passive=True)
        check(ok.method.message_count == 0, "rejected messages kept: %d" % ok.method.message_count)
        # reject through a consumer
        ch.basic_publish("", q, "c0")
        seen = []

        def cb(chx, method, props, body):
            seen.append(method.redelivered)
            if not method.redelivered:
                chx.basic_reject(method.delivery_tag, requeue=True)
            else:
                chx.basic_ack(method.delivery_tag)
        ch.basic_consume(q, cb)
        pump([c], lambda: len(seen) >= 2, 10, "the requeued delivery")
        check(seen == [False, True], "consumer reject/requeue: %r" % seen)
        ch.queue_delete(q)


def purge_and_delete(host, port):
    """queue.purge counts; queue.delete if-unused / if-empty → 406;
    delete of a missing queue is ok; purge of a missing queue → 404."""
    q = uniq("purge")
    with Env(host, port) as env:
        c = env.connect()
        ch = c.channel()
        ch.queue_declare(q)
        ch.confirm_delivery()  # publishes are in the queue before the next get/declare
        for i in range(3):
            ch.basic_publish("", q, "p%d" % i)
        ok = ch.queue_purge(q)
        check(ok.method.message_count == 3, "purge-ok %d" % ok.method.message_count)
        check(ch.basic_get(q)[0] is None, "purged queue not empty")
        ch.basic_publish("", q, "x")
        text = expect_channel_close(406, ch.queue_delete, q, if_empty=True)
        check(text == "PRECONDITION_FAILED - queue '%s' in vhost '/' not empty" % q,
              "reply text %r" % text)
        ch = c.channel()
        cch = c.channel()
        cch.basic_consume(q, lambda *a: None)
        text = expect_channel_close(406, ch.queue_delete, q, if_unused=True)
        check(text == "PRECONDITION_FAILED - queue '%s' in vhost '/' in use" % q,
              "reply text %r" % text)
        cch.close()
        ch = c.channel()
        ok = ch.queue_delete(q, if_unused=True)  # consumer gone; the message was delivered
        check(ok.method.message_count in (0, 1), "delete-ok %d" % ok.method.message_count)
        ch.queue_delete(q)  # missing: still delete-ok
        q2 = uniq("delete")
        ch.queue_declare(q2)
        ch.basic_publish("", q2, "a")
        ch.basic_publish("", q2, "b")
        ok = ch.queue_delete(q2)
        check(ok.method.message_count == 2, "delete-ok message_count %d" % ok.method.message_count)
        expect_channel_close(404, ch.queue_purge, q2)


def declare_errors(host, port):
    """passive declare of a missing queue → 404; redeclare with another
    durability → 406; another connection's exclusive queue → 405; amq.*
    names → 403; bad x-arguments → 406. Each closes the channel only: the
    connection goes on."""
    q = uniq("decl")
    with Env(host, port) as env:
        c = env.connect()
        ch = c.channel()
        missing = uniq("missing")
        text = expect_channel_close(404, ch.queue_declare, missing, passive=True)
        check(text == "NOT_FOUND - no queue '%s' in vhost '/'" % missing, "reply text %r" % text)
        check(c.is_open, "a channel error closed the connection")
        ch = c.channel()
        ch.queue_declare(q, durable=False)
        text = expect_channel_close(406, ch.queue_declare, q, durable=True)
        check(text == ("PRECONDITION_FAILED - inequivalent arg 'durable' for queue '%s' in "
                       "vhost '/': received 'true' but current is 'false'" % q),
              "reply text %r" % text)
        ch = c.channel()
        ok = ch.queue_declare(q, passive=True, durable=True)  # passive ignores the rest
        check(ok.method.queue == q, "passive declare-ok %r" % ok.method)
        ex = uniq("decl_ex")
        ch.exchange_declare(ex, "direct")
        text = expect_channel_close(406, ch.exchange_declare, ex, "fanout")
        check(text.startswith("PRECONDITION_FAILED - inequivalent arg 'type' for exchange"),
              "reply text %r" % text)
        ch = c.channel()
        expect_channel_close(404, ch.exchange_declare, uniq("nox"), "direct", passive=True)
        ch = c.channel()
        text = expect_channel_close(403, ch.queue_declare, "amq.mine")
        check(text.startswith("ACCESS_REFUSED"), "reply text %r" % text)
        ch = c.channel()
        expect_channel_close(403, ch.exchange_declare, "amq.mine", "direct")
        ch = c.channel()
        ch.exchange_delete(ex)
        text = expect_channel_close(404, ch.queue_bind, uniq("noq"), "amq.direct", "k")
        check(text.startswith("NOT_FOUND - no queue '"), "bind to a missing queue: %r" % text)
        ch = c.channel()
        ch.queue_declare(q, passive=True)
        text = expect_channel_close(404, ch.queue_bind, q, uniq("noex"), "k")
        check(text.startswith("NOT_FOUND - no exchange '"), "bind to a missing exchange: %r" % text)
        ch = c.channel()
        text = expect_channel_close(404, ch.basic_consume, uniq("noq"), lambda *a: None)
        check(text.startswith("NOT_FOUND - no queue '"), "consume a missing queue: %r" % text)
        # an unknown exchange type is a connection error: 503 COMMAND_INVALID
        c2 = env.connect()
        try:
            c2.channel().exchange_declare(uniq("badtype"), "nosuchtype")
        except pex.ConnectionClosedByBroker as e:
            check(e.reply_code == 503 and
                  e.reply_text == "COMMAND_INVALID - unknown exchange type 'nosuchtype'",
                  "unknown exchange type: %d %r" % (e.reply_code, e.reply_text))
        else:
            raise AssertionError("an unknown exchange type was accepted")
        check(c.is_open, "another connection's error closed this one")
        ch = c.channel()

        # exclusive queues belong to their connection
        eq = uniq("excl")
        ch.queue_declare(eq, exclusive=True)
        other = env.connect().channel()
        text = expect_channel_close(405, other.queue_declare, eq)
        check(text == ("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue "
                       "'%s' in vhost '/'. It could be originally declared on another "
                       "connection or the exclusive property value does not match that "
                       "of the original declaration." % eq), "reply text %r" % text)
        other = env.connect().channel()
        expect_channel_close(405, other.queue_declare, eq, passive=True)
        other = env.connect().channel()
        expect_channel_close(405, other.queue_purge, eq)

        # x-arguments: RabbitMQ ignores unknown ones, checks known ones' types/values
        uq = uniq("xunknown")
        ch.queue_declare(uq, arguments={"x-no-such-argument": 1, "plain": "x"})
        ch.queue_delete(uq)
        # RabbitMQ's texts end with an Erlang term ("expected integer, got
        # longstr", {value_negative,-1}, ...): only the start is checked
        for args in ({"x-max-length": "ten"}, {"x-max-length": -1},
                     {"x-message-ttl": "soon"}, {"x-message-ttl": -5},
                     {"x-expires": 0}, {"x-overflow": "explode"},
                     {"x-dead-letter-routing-key": "k"}):
            ch = c.channel()
            xq = uniq("xbad")
            text = expect_channel_close(406, ch.queue_declare, xq, arguments=args)
            want = "PRECONDITION_FAILED - invalid arg '%s' for queue '%s' in vhost '/': " % (
                list(args)[0], xq)
            check(text.startswith(want), "%r: reply text %r" % (args, text))
            ch = c.channel()
            expect_channel_close(404, ch.queue_declare, xq, passive=True)  # not created
        ch = c.channel()
        ch.queue_declare(q, arguments={})
        ch.queue_delete(q)
        ch.close()
        # redeclare with other arguments → 406 inequivalent arg
        aq = uniq("args")
        ch = c.channel()
        ch.queue_declare(aq, arguments={"x-max-length": 10})
        text = expect_channel_close(406, ch.queue_declare, aq, arguments={"x-max-length": 11})
        check("inequivalent arg 'x-max-length'" in text, "reply text %r" % text)
        ch = c.channel()
        ch.queue_delete(aq)


def message_ttl(host, port):
    """x-message-ttl on the queue and per-message expiration."""
    q = uniq("ttl")
    with Env(host, port) as env:
        ch = env.channel()
        ch.queue_declare(q, arguments={"x-message-ttl": 300})
        ch.confirm_delivery()  # publishes are in the queue before the next get/declare
        ch.basic_publish("", q, "short")
        m, _, b = ch.basic_get(q, auto_ack=True)
        check(b == b"short", "fresh message: %r" % b)
        ch.basic_publish("", q, "expires")
        time.sleep(0.8)
        m, _, b = ch.basic_get(q, auto_ack=True)
        check(m is None, "message outlived x-message-ttl: %r" % b)
        q2 = uniq("expiration")
        ch.queue_declare(q2)
        ch.basic_publish("", q2, "soon", properties=pika.BasicProperties(expiration="200"))
        ch.basic_publish("", q2, "later", properties=pika.BasicProperties(expiration="60000"))
        time.sleep(0.6)
        got = drain_get(ch, q2)
        check(got == [b"later"], "per-message expiration: %r" % got)
        ch.queue_delete(q)
        ch.queue_delete(q2)


def max_length(host, port):
    """x-max-length: the default overflow drops the oldest (drop-head)."""
    q = uniq("maxlen")
    with Env(host, port) as env:
        ch = env.channel()
        ch.queue_declare(q, arguments={"x-max-length": 2})
        ch.confirm_delivery()  # publishes are in the queue before the next get/declare
        for i in range(5):
            ch.basic_publish("", q, "m%d" % i)
        ok = ch.queue_declare(q, passive=True)
        check(ok.method.message_count == 2, "x-max-length 2 holds %d" % ok.method.message_count)
        got = drain_get(ch, q)
        check(got == [b"m3", b"m4"], "drop-head kept %r" % got)
        ch.queue_delete(q)


def max_length_reject_publish(host, port):
    """x-overflow=reject-publish: a full queue refuses new messages (basic.nack
    under confirms, pika's NackError)."""
    with Env(host, port) as env:
        ch = env.channel()
        q2 = uniq("maxlen_reject")
        ch.queue_declare(q2, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        ch.confirm_delivery()
        ch.basic_publish("", q2, "first")
        try:
            ch.basic_publish("", q2, "second")
        except pex.NackError:
            pass
        else:
            raise AssertionError("reject-publish: the second publish was not nacked")
        check(drain_get(ch, q2) == [b"first"], "reject-publish kept the wrong message")
        ch.queue_delete(q2)


def _check_death(props, reason, queue, exchange, rk, count=1):
    h = props.headers or {}
    xd = h.get("x-death")
    check(isinstance(xd, list) and len(xd) == 1, "x-death header %r" % h)
    d = xd[0]
    check(d.get("reason") == reason and d.get("queue") == queue and
          d.get("exchange") == exchange and d.get("routing-keys") == [rk] and
          d.get("count") == count and isinstance(d.get("time"), datetime.datetime),
          "x-death %r (want reason %s queue %s exchange %r key %s)" %
          (d, reason, queue, exchange, rk))
    check(h.get("x-first-death-reason") == reason and
          h.get("x-first-death-queue") == queue and
          h.get("x-first-death-exchange") == exchange,
          "x-first-death-* headers %r" % h)


def dead_letters(host, port):
    """x-dead-letter-exchange / -routing-key: rejected, expired and
    overflowed messages move to the DLX with an x-death header."""
    src, dlq, dlx = uniq("work"), uniq("dead"), uniq("dlx")
    with Env(host, port) as env:
        c = env.connect()
        ch = c.channel()
        ch.exchange_declare(dlx, "direct")
        ch.queue_declare(dlq)
        ch.queue_bind(dlq, dlx, routing_key="dead")
        ch.queue_declare(src, arguments={"x-dead-letter-exchange": dlx,
                                         "x-dead-letter-routing-key": "dead"})
        ch.basic_publish("", src, "bad", properties=pika.BasicProperties(
            headers={"mine": "kept"}, message_id="id1"))
        m, _, _ = ch.basic_get(src)
        ch.basic_reject(m.delivery_tag, requeue=False)
        pump([c], lambda: ch.queue_declare(dlq, passive=True).method.message_count > 0,
             5, "the dead letter")
        m, p, b = ch.basic_get(dlq, auto_ack=True)
        check(b == b"bad" and m.routing_key == "dead" and m.exchange == dlx,
              "dead letter %r %r" % (m, b))
        check(p.headers.get("mine") in ("kept", b"kept") and p.message_id == "id1",
              "dead letter lost its properties: %r" % p)
        _check_death(p, "rejected", src, "", src)

        # nack without requeue dead-letters too; without a dl routing key the
        # original key is kept
        src2 = uniq("work2")
        ch.queue_bind(dlq, dlx, routing_key=src2)
        ch.queue_declare(src2, arguments={"x-dead-letter-exchange": dlx,
                                          "x-message-ttl": 200})
        ch.basic_publish("", src2, "nacked")
        m, _, _ = ch.basic_get(src2)
        ch.basic_nack(m.delivery_tag, requeue=False)
        ch.basic_publish("", src2, "expired")
        pump([c], lambda: ch.queue_declare(dlq, passive=True).method.message_count >= 2,
             5, "the expired dead letter")
        m, p, b = ch.basic_get(dlq, auto_ack=True)
        check(b == b"nacked" and m.routing_key == src2, "nacked dead letter %r %r" % (m, b))
        _check_death(p, "rejected", src2, "", src2)
        m, p, b = ch.basic_get(dlq, auto_ack=True)
        check(b == b"expired", "expired dead letter %r" % b)
        _check_death(p, "expired", src2, "", src2)

        # overflow (drop-head) dead-letters with reason maxlen
        src3 = uniq("work3")
        ch.queue_declare(src3, arguments={"x-dead-letter-exchange": dlx,
                                          "x-dead-letter-routing-key": "dead",
                                          "x-max-length": 1})
        ch.basic_publish("", src3, "old")
        ch.basic_publish("", src3, "new")
        pump([c], lambda: ch.queue_declare(dlq, passive=True).method.message_count >= 1,
             5, "the maxlen dead letter")
        m, p, b = ch.basic_get(dlq, auto_ack=True)
        check(b == b"old", "maxlen dead letter %r" % b)
        _check_death(p, "maxlen", src3, "", src3)
        for q in (src, src2, src3, dlq):
            ch.queue_delete(q)
        ch.exchange_delete(dlx)


def queue_expires(host, port):
    """x-expires: an unused queue is deleted after the delay; one with a
    consumer is not."""
    q, kept = uniq("expires"), uniq("expires_used")
    with Env(host, port) as env:
        c = env.connect()
        ch = c.channel()
        ch.queue_declare(q, arguments={"x-expires": 300})
        ch.queue_declare(kept, arguments={"x-expires": 300})
        ch.basic_consume(kept, lambda *a: None)
        # every declare (passive too) and basic.get renews the lease in
        # RabbitMQ: look only after the delay has passed untouched
        gone = False
        for _ in range(4):
            settle([c], 1.0)
            ch2 = env.channel()
            try:
                ch2.queue_declare(q, passive=True)
            except pex.ChannelClosedByBroker as e:
                check(e.reply_code == 404, "passive declare %d %s" % (e.reply_code, e.reply_text))
                gone = True
                break
            ch2.close()
        check(gone, "x-expires 300: %s still there after 4s" % q)
        settle([c], 0.3)
        ch2 = env.channel()
        ok = ch2.queue_declare(kept, passive=True)
        check(ok.method.consumer_count == 1, "queue with a consumer expired")
        ch2.queue_delete(kept)


def exchange_to_exchange(host, port):
    """exchange.bind (capability exchange_exchange_bindings), and alternate
    routes through amq.* pre-declared exchanges."""
    src, dst = uniq("e2e_src"), uniq("e2e_dst")
    with Env(host, port) as env:
        ch = env.channel()
        ch.exchange_declare(src, "topic")
        ch.exchange_declare(dst, "fanout")
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, dst)
        ch.exchange_bind(destination=dst, source=src, routing_key="a.#")
        ch.basic_publish(src, "a.b", "through")
        ch.basic_publish(src, "b.a", "not through")
        check(drain_get(ch, q) == [b"through"], "exchange-to-exchange binding")
        ch.exchange_unbind(destination=dst, source=src, routing_key="a.#")
        ch.basic_publish(src, "a.b", "unbound")
        check(drain_get(ch, q) == [], "exchange.unbind")
        for name, kind in (("amq.direct", "direct"), ("amq.fanout", "fanout"),
                           ("amq.topic", "topic"), ("amq.headers", "headers")):
            ch.exchange_declare(name, kind, passive=True)
        ch.queue_bind(q, "amq.topic", "x.*")
        ch.basic_publish("amq.topic", "x.y", "amq")
        check(drain_get(ch, q) == [b"amq"], "amq.topic")
        ch.exchange_delete(src)
        ch.exchange_delete(dst)


def consumer_cancel_notify(host, port):
    """Deleting a queue cancels its consumers with a server-sent basic.cancel
    (capability consumer_cancel_notify); basic.cancel by the client stops
    deliveries."""
    q = uniq("cancel")
    with Env(host, port) as env:
        c = env.connect()
        ch = c.channel()
        ch.queue_declare(q)
        got = []
        tag = ch.basic_consume(q, lambda chx, m, p, b: got.append(b), auto_ack=True)
        check(tag in ch.consumer_tags, "consumer tag %r not registered" % tag)
        pch = env.channel()
        pch.basic_publish("", q, "one")
        pump([c], lambda: got, 5, "the first delivery")
        ch.basic_cancel(tag)
        pch.basic_publish("", q, "two")
        settle([c], 0.3)
        check(got == [b"one"], "delivered after basic.cancel: %r" % got)
        check(drain_get(pch, q) == [b"two"], "the message after cancel stays queued")
        tag2 = ch.basic_consume(q, lambda *a: None, consumer_tag="my-tag")
        check(tag2 == "my-tag", "client-chosen consumer tag: %r" % tag2)
        pch.queue_delete(q)
        pump([c], lambda: "my-tag" not in ch.consumer_tags, 5,
             "basic.cancel from the server after queue.delete")
        check(ch.is_open, "the channel closed instead of a basic.cancel")


TUTORIALS = [t1_hello_world, t2_work_queues_round_robin, t2_work_queues_redelivery,
             t3_durability, t4_fair_dispatch, t5_publish_subscribe, t6_routing,
             t7_topics]
EXTRAS = [round_robin_rounds, server_properties, publisher_confirms, basic_get,
          nack_and_reject, purge_and_delete, declare_errors, message_ttl, max_length,
          max_length_reject_publish, dead_letters,
          queue_expires, exchange_to_exchange, consumer_cancel_notify]
ALL = TUTORIALS + EXTRAS
NEEDS_RESTART = {t3_durability}


def wait_amqp_ready(host, port, timeout=30.0):
    """Until a connection opens and a server-named exclusive queue can be
    declared (the broker behind the edge serves); raises with the last error."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            c = pika.BlockingConnection(params(host, port))
            try:
                c.channel().queue_declare("", exclusive=True)
                return
            finally:
                if c.is_open:
                    c.close()
        except Exception as e:  # noqa: BLE001 - keep trying until the deadline
            last = e
            if isinstance(e, pex.AMQPConnectionError) and "refused" in repr(e) \
                    and time.time() > deadline - timeout + 5:
                break  # nobody listens at all after 5 s: fail fast
            time.sleep(0.2)
    raise AssertionError("no AMQP service on %s:%s after %.0fs: %r" % (host, port, timeout, last))


def suite(host, port, restart=None, hard_restart=None, setup=None, prefix="",
          transient_gone=True, checks=None):
    """Test functions for ringmq_test.run_tests: first "amqp_ready" (runs
    @setup, then waits until the server serves AMQP), then every check.
    @host and @port may be callables (read when a test runs). If amqp_ready
    fails every later test fails at once. @restart restarts the broker
    keeping its data; @hard_restart does it with kill -9 (durability runs
    once per given restart)."""
    state = {"ready": None}

    def h():
        return host() if callable(host) else host

    def p():
        return port() if callable(port) else port

    def amqp_ready():
        state["ready"] = False
        with watchdog(90):
            if setup:
                setup()
            wait_amqp_ready(h(), p())
        state["ready"] = True
    amqp_ready.__name__ = prefix + "amqp_ready"
    tests = [amqp_ready]

    state["hung"] = 0

    def add(fn, name, *extra, **kw):
        def t():
            if state["ready"] is False:
                raise AssertionError("skipped: the server never served AMQP (see amqp_ready)")
            if state["hung"] >= MAX_HUNG:
                raise AssertionError("skipped: %d checks in a row hung" % state["hung"])
            try:
                with watchdog(CHECK_TIMEOUT * (8 if fn in NEEDS_RESTART else 1)):
                    fn(h(), p(), *extra, **kw)
            except CheckTimeout:
                state["hung"] += 1
                raise
            state["hung"] = 0
        t.__name__ = prefix + name
        tests.append(t)

    for fn in checks or ALL:
        if fn in NEEDS_RESTART:
            if restart:
                add(fn, fn.__name__, restart, transient_gone=transient_gone)
            if hard_restart:
                add(fn, fn.__name__ + "_kill9", hard_restart, transient_gone=transient_gone)
        else:
            add(fn, fn.__name__)
    return tests


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rabbitmq", action="store_true", help="start a private RabbitMQ")
    ap.add_argument("--target", help="HOST:PORT of a running server")
    ap.add_argument("-k", default="", help="only checks whose name contains this")
    a = ap.parse_args(argv)
    sys.path.insert(0, HERE)
    import ringmq_test as rt
    restart = hard_restart = None
    if a.rabbitmq:
        import rabbitmq_ref
        rmq = rabbitmq_ref.RabbitMQ().start()
        host, port = "127.0.0.1", rmq.port
        restart = rmq.restart

        def hard_restart():
            rmq.kill9()
            rmq.start()
        print("RabbitMQ %s on %d" % (rmq.node, port))
    elif a.target:
        host, p = a.target.rsplit(":", 1)
        port = int(p)
    else:
        ap.error("--rabbitmq or --target HOST:PORT")
    if restart is None:
        print("skip t3_durability (needs a restart: use --rabbitmq or the ringmq tests)")
    tests = suite(host, port, restart=restart, hard_restart=hard_restart)
    rt.run_tests([t for t in tests if t.__name__ == "amqp_ready" or a.k in t.__name__])


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker-dies":
        _worker_that_dies(sys.argv[2], sys.argv[3], sys.argv[4])
        sys.exit(0)
    main(sys.argv[1:])
