#!/usr/bin/python3
"""Queues are placed once and moved only when asked (docs/resharding.md,
"Queues are placed once"), on a local cluster (scripts/local-cluster: s1
weight 1, s2 weight 2, 2 routers) grown to a third shard s3:

1. New queues spread over the serving shards by weight, s3 included: the
   meta group's queue directory records each at its first declare
   (`ringmqctl queue where` shows the entry); adding s3 moved none of the
   queues declared before it.
2. `ringmqctl queue move Q s3` and back, while a publisher (confirms,
   persistent, mandatory) publishes to Q through router 1 and a consumer
   (manual acks, prefetch) consumes through router 2. Afterwards the
   publisher stops and the consumer drains: every confirmed message was
   consumed (redeliveries allowed), nothing unexpected was, the messages
   delivered for the first time came in the order they were published,
   and Q is where the last move put it, with a new generation.
3. A move of a queue with a backlog and no consumer keeps every message,
   in order; moving it again is "already there"; `queue abort` of a queue
   not moving changes nothing. A coordinator killed mid-copy (--rate)
   leaves the queue moving; `queue abort` then keeps it where it was, and
   running the move again finishes it. One killed (-9) when it reports
   "serving" (the target has the whole copy), then `queue abort`: refused
   and finished by a rerun; either way exactly one shard holds the queue
   (`queue find`), the one `queue where` names, and it moves on from
   there. The backlog comes out whole and in order each time.
4. s3 cannot start draining while the directory has queues on it; after
   they are moved off, `local-cluster remove-shard s3` succeeds and the
   queues still serve.
Client errors during the moves are counted and reported (goal: none; the
routers wait out the fence).
"""
import subprocess
import time

import ringmq_test as rt
from test_reshard import (AmqpConsumer, AmqpPublisher, Cluster, amqp_connect,
                          persistent)


def where(cl, q):
    """(shard, gen) of queue @q; gen None: no directory entry."""
    f = cl.ctl("queue", "where", q).split()
    return f[2], (int(f[4]) if len(f) > 4 and f[3] == "gen" else None)


def move(cl, q, shard):
    t0 = time.time()
    out = cl.ctl("queue", "move", q, shard, timeout=120)
    print("  %s (%.2f s)" % (out.strip().splitlines()[-1],
                             time.time() - t0))
    return out


def seq_of(body):
    return int(body.decode().rsplit(":", 1)[1])


def place_queues(cl):
    """Declare qm-00.. through router 1 until one lands on s3 and two on
    others; {name: (shard, gen)}."""
    conn = amqp_connect(cl.amqp_port(1))
    ch = conn.channel()
    placed = {}
    for i in range(64):
        name = "qm-%02d" % i
        ch.queue_declare(name, durable=True)
        placed[name] = where(cl, name)
        on = [s for s, _ in placed.values()]
        if "s3" in on and len([s for s in on if s != "s3"]) >= 2:
            break
    conn.close()
    return placed


def drain_check(pub, cons, timeout=60):
    """Wait until the consumer got every confirmed body; check nothing
    unexpected came and first deliveries kept the publish order."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = {b for _, b, _ in cons.got}
        if pub.confirmed <= got:
            break
        time.sleep(0.2)
    got = {b for _, b, _ in cons.got}
    missing = pub.confirmed - got
    rt.check(not missing, "every confirmed message consumed (missing %d, "
             "e.g. %s)" % (len(missing), sorted(missing)[:3]))
    unexpected = got - pub.confirmed - pub.unknown
    rt.check(not unexpected, "nothing unexpected: %s" % sorted(unexpected)[:3])
    first = [seq_of(b) for _, b, redelivered in cons.got if not redelivered]
    rt.check(first == sorted(first),
             "first deliveries in publish order (%d messages)" % len(first))
    redelivered = sum(1 for _, _, r in cons.got if r)
    print("  published %d confirmed, %d unknown; consumed %d (%d "
          "redelivered); errors: publisher %d %s, consumer %d %s" % (
              len(pub.confirmed), len(pub.unknown), len(cons.got),
              redelivered, pub.errors.count, pub.errors.kinds,
              cons.errors.count, cons.errors.kinds))


def fill(cl, q, n):
    """@n persistent 1 KiB messages "b:<q>:<seq>xxx..." into @q."""
    conn = amqp_connect(cl.amqp_port(1))
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", q, ("b:%s:%06d" % (q, i)).encode() + b"x" * 1000,
                         properties=persistent(), mandatory=True)
    conn.close()


def drain_in_order(cl, q):
    """Get every message of @q (made by fill) through router 2: the seqs in
    the order they came."""
    conn = amqp_connect(cl.amqp_port(2))
    ch = conn.channel()
    seqs = []
    while True:
        m = ch.basic_get(q, auto_ack=True)
        if m[0] is None:
            break
        seqs.append(seq_of(m[2][:m[2].index(b"x")]))
    conn.close()
    return seqs


def holders(cl, q):
    """The shards that `queue find` says hold @q."""
    return [f[0] for f in (line.split() for line in
                           cl.ctl("queue", "find", q).splitlines())
            if len(f) > 1 and f[1] == "holds"]


def kill_abort_finish(cl, q, stage):
    """`queue move` of @q to the other shard killed (-9) when it reports
    @stage, then `queue abort`: either it takes the move back (the copy
    was not complete) or it refuses and a rerun finishes the move. Either
    way exactly one shard holds @q after, the one `queue where` names,
    and @q moves on from there (an abort once left a whole copy at the
    target, which refused every later move there)."""
    home = where(cl, q)[0]
    to = "s1" if home == "s3" else "s3"
    p = subprocess.Popen([rt.CTL, "--cluster", cl.map, "queue", "move", q,
                          to], stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("queue %s: %s" % (q, stage)):
            p.kill()
            break
    p.wait()
    p.stdout.close()
    out = subprocess.run([rt.CTL, "--cluster", cl.map, "queue", "abort", q],
                         capture_output=True, text=True, timeout=60)
    if out.returncode == 0:
        outcome = out.stdout.strip().splitlines()[-1]
    else:
        rt.check("finish the move" in out.stderr,
                 "an abort refused says why: %r" % out.stderr)
        outcome = "refused, then " + \
            move(cl, q, to).strip().splitlines()[-1]
    print("  killed at '%s', abort: %s" % (stage, outcome))
    now = where(cl, q)[0]
    rt.check(holders(cl, q) == [now],
             "after the abort %s is held by %s, the directory says %s" %
             (q, holders(cl, q), now))
    back = "s1" if now == "s3" else "s3"
    move(cl, q, back)
    rt.check(holders(cl, q) == [back] and where(cl, q)[0] == back,
             "%s moves on to %s after the abort" % (q, back))


def test_place_and_move():
    cl = Cluster().up()
    conn = amqp_connect(cl.amqp_port(1))
    ch = conn.channel()
    ch.queue_declare("before-s3", durable=True)
    conn.close()
    before = where(cl, "before-s3")
    rt.check(before[1] is not None, "a declared queue has a directory "
             "entry: %s" % (before,))
    cl.script("add-shard", cl.dir, "s3", "1", timeout=300)
    rt.check(where(cl, "before-s3") == before,
             "adding s3 moved no queue: %s" % (where(cl, "before-s3"),))

    # 1. new queues go to every serving shard, s3 included
    placed = place_queues(cl)
    print("  placed: %s" % placed)
    rt.check(any(s == "s3" for s, _ in placed.values()),
             "a new queue went to the new shard")
    rt.check(all(g is not None for _, g in placed.values()),
             "every new queue is in the directory")

    # 2. a queue in use moves to s3 and back
    q = next(n for n, (s, _) in placed.items() if s != "s3")
    home, gen0 = placed[q]
    pub = AmqpPublisher(cl.amqp_port(1), "p", [q])
    cons = AmqpConsumer(cl.amqp_port(2), "c", [q])
    pub.start()
    cons.start()
    time.sleep(2)
    move(cl, q, "s3")
    s, gen1 = where(cl, q)
    rt.check(s == "s3" and gen1 > gen0, "%s on s3 with a new gen: %s %s" %
             (q, s, gen1))
    time.sleep(2)
    move(cl, q, home)
    time.sleep(2)
    pub.stop.set()
    pub.join(30)
    drain_check(pub, cons)
    cons.stop.set()
    cons.join(30)
    s, gen2 = where(cl, q)
    rt.check(s == home and gen2 > gen1, "%s back on %s: %s %s" %
             (q, home, s, gen2))

    # 3. a backlog without consumers moves whole and in order
    b = next(n for n, (s, _) in placed.items() if s != "s3" and n != q)
    fill(cl, b, 3000)
    move(cl, b, "s3")
    rt.check("is on s3" in cl.ctl("queue", "move", b, "s3"),
             "moving again: already there")
    rt.check("not moving" in cl.ctl("queue", "abort", b),
             "abort of a queue not moving")
    rt.check(drain_in_order(cl, b) == list(range(3000)),
             "backlog moved whole and in order")

    # 3b. a coordinator killed mid-copy: the queue stays frozen at its
    # shard until the move is aborted (it stays) or run again (it moves)
    home_b = where(cl, b)[0]
    move(cl, b, home_b if home_b != "s3" else "s1")
    src = where(cl, b)[0]
    fill(cl, b, 3000)
    for finish in ("abort", "rerun"):
        p = subprocess.Popen([rt.CTL, "--cluster", cl.map, "--rate", "1m",
                              "queue", "move", b, "s3"],
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(1.2)
        p.kill()
        p.wait()
        out = cl.ctl("queue", "where", b)
        rt.check("moving-to s3" in out, "killed mid-copy: moving (%s)" % out)
        if finish == "abort":
            rt.check("stays on %s" % src in cl.ctl("queue", "abort", b),
                     "abort: the queue stays")
            rt.check(where(cl, b)[0] == src and
                     "moving" not in cl.ctl("queue", "where", b),
                     "abort: back on %s" % src)
        else:
            move(cl, b, "s3")
            rt.check(where(cl, b)[0] == "s3", "rerun: on s3")
    rt.check(drain_in_order(cl, b) == list(range(3000)),
             "the backlog survived an aborted and a resumed move, in order")

    # 3c. killed once the target has the whole copy: abort refused, the
    # rerun finishes; one shard holds it, and it moves on
    fill(cl, b, 3000)
    kill_abort_finish(cl, b, "serving")
    rt.check(drain_in_order(cl, b) == list(range(3000)),
             "the backlog survived a move killed at 'serving', in order")

    # 4. a shard with queues does not drain; without them it leaves
    out = subprocess.run([rt.CTL, "--cluster", cl.map, "shard", "remove",
                          "s3"], capture_output=True, text=True, timeout=60)
    rt.check(out.returncode != 0 and "queue" in out.stderr,
             "removing a shard with queues is refused: %r" % out.stderr)
    for name in list(placed) + [b]:
        if where(cl, name)[0] == "s3":
            move(cl, name, "s1")
    cl.script("remove-shard", cl.dir, "s3", timeout=300)
    conn = amqp_connect(cl.amqp_port(1))
    ch = conn.channel()
    ch.confirm_delivery()
    for name in placed:
        ch.basic_publish("", name, b"after", properties=persistent(),
                         mandatory=True)
        rt.check(ch.basic_get(name, auto_ack=True)[2] == b"after",
                 "%s serves after s3 left" % name)
    conn.close()
    cl.down()


if __name__ == "__main__":
    rt.run_tests([test_place_and_move])
