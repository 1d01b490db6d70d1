#!/usr/bin/python3
"""Issue 15 item 9: a queue leader's failover keeps deliveries with their
consumers (docs/consistency.md, "Deliveries across a failover").

The local cluster (2 shards of 3 nodes, 2 routers):

1. A consumer on router 1 holds unacked deliveries; a second consumer on
   router 2 waits on the same queue. The leader of the queue's group is
   killed with SIGKILL. After the failover no copy of the held messages
   arrives at either consumer (a new leader returned them all before); a
   message published after the failover does. The held messages' acks
   settle at the new leader: once router 1's consumer acked them and closed
   its channel (which would give back whatever it still held), nothing
   comes back and the queue ends empty.
2. A consumer's router dies together with the queue's leader (both killed
   at once): the new leader never heard from that router, yet its
   deliveries come back, redelivered, to a consumer on the other router
   once the router's lease (seeded at the era) runs out.
"""
import time

import pika

import amqp_tutorials as at
import ringmq_test as rt
from test_amqp_kill9 import amqp_port, group_leader
from test_cluster_routers import LocalCluster

HOST = "127.0.0.1"
HELD = 10
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def connect(port):
    return pika.BlockingConnection(at.params(HOST, port))


class Recorder:
    """Every delivery of a consumer as (body, redelivered); acks at once
    when @ack."""

    def __init__(self, ack):
        self.got = []
        self.ack = ack

    def __call__(self, ch, method, props, body):
        self.got.append((body, method.redelivered))
        if self.ack:
            ch.basic_ack(method.delivery_tag)


def kill_queue_leader(lc, q, killed):
    """Kill the leader of @q's group (its name and argv go to @killed, for
    the restart); return once another node leads the group."""
    shard = lc.ctl("owner", "-", stdin=q + "\n").split()[1]
    group = shard + ".mq"
    old = rt.wait_until(lambda: group_leader(lc, group), 30, "a leader of " + group)
    name = "n%d" % old[0]
    killed.append((name, lc.kill9(name)))
    new = rt.wait_until(lambda: (lambda g: g if g and g[0] != old[0] else None)(
        group_leader(lc, group)), 60, "a new leader of " + group)
    print("     %s: leader node %d killed, node %d leads" % (group, old[0], new[0]))


def publish_confirmed(port, q, bodies):
    c = connect(port)
    ch = c.channel()
    ch.confirm_delivery()
    for b in bodies:
        ch.basic_publish("", q, b, properties=PERSISTENT)
    c.close()


def test_failover_keeps_deliveries(lc):
    p1, p2 = amqp_port(lc, 1), amqp_port(lc, 2)
    q = at.uniq("keep")
    held_bodies = [b"held %d" % i for i in range(HELD)]
    c1, c2 = connect(p1), connect(p2)
    ch1 = c1.channel()
    ch1.queue_declare(q, durable=True)
    publish_confirmed(p2, q, held_bodies)
    # prefetch above what it holds: its CHECKOUT stays parked at the
    # leader that is killed, and is retried at the new one
    holder = Recorder(ack=False)
    ch1.basic_qos(prefetch_count=2 * HELD)
    ch1.basic_consume(q, holder)
    at.pump([c1], lambda: len(holder.got) >= HELD, 30, "deliveries to r1's consumer")
    other = Recorder(ack=True)
    ch2 = c2.channel()
    ch2.basic_qos(prefetch_count=2 * HELD)
    ch2.basic_consume(q, other)

    killed = []
    try:
        kill_queue_leader(lc, q, killed)
        # Confirmed means applied by the new leader, after its era command;
        # it has the highest id: anything returned at the era comes first.
        publish_confirmed(p2, q, [b"after"])
        seen = lambda: holder.got + other.got  # noqa: E731
        at.pump([c1, c2], lambda: (b"after", False) in seen(), 60,
                "the message published after the failover")
        rt.check(sorted(holder.got) == sorted((b, False) for b in held_bodies),
                 "r1's consumer got %r" % holder.got)
        rt.check([b for b, _ in other.got] in ([], [b"after"]),
                 "copies after the failover at r2's consumer: %r" % other.got)

        for tag in range(1, HELD + 1):  # the held ones (delivery tags 1..HELD)
            ch1.basic_ack(tag)
        if (b"after", False) in holder.got:
            ch1.basic_ack(HELD + 1)
        # the close gives back whatever this channel still holds: had an ack
        # not settled, that message would reach r2's consumer before "last"
        ch1.close()
        publish_confirmed(p1, q, [b"last"])
        at.pump([c2], lambda: any(b == b"last" for b, _ in other.got), 60,
                "the message published after the acks")
        rt.check([b for b, _ in other.got if b not in (b"after", b"last")] == [],
                 "came back after the acks: %r" % other.got)
        ch2.close()
        ch = c2.channel()
        left = ch.queue_declare(q, passive=True).method.message_count
        rt.check(left == 0, "%d messages left in the queue" % left)
        ch.queue_delete(q)
        c1.close()
        c2.close()
    finally:
        for name, argv in killed:
            lc.restart(name, argv)


def test_router_dies_with_leader(lc):
    p1, p2 = amqp_port(lc, 1), amqp_port(lc, 2)
    q = at.uniq("keep_gone")
    bodies = [b"gone %d" % i for i in range(5)]
    c1 = connect(p1)
    ch1 = c1.channel()
    ch1.queue_declare(q, durable=True)
    publish_confirmed(p2, q, bodies)
    holder = Recorder(ack=False)
    ch1.basic_qos(prefetch_count=len(bodies))
    ch1.basic_consume(q, holder)
    at.pump([c1], lambda: len(holder.got) >= len(bodies), 30,
            "deliveries to r1's consumer")

    r1_argv = lc.kill9("r1")
    t0 = time.time()
    killed = []
    try:
        kill_queue_leader(lc, q, killed)
        c3 = connect(p2)
        back = Recorder(ack=True)
        ch3 = c3.channel()
        ch3.basic_consume(q, back)
        at.pump([c3], lambda: len(back.got) >= len(bodies), 120,
                "the dead router's deliveries back through r2")
        print("     back %.1fs after the router died with the leader" %
              (time.time() - t0))
        rt.check(sorted(back.got) == sorted((b, True) for b in bodies),
                 "returned after the router died: %r" % back.got)
        ch3.queue_delete(q)
        c3.close()
    finally:
        for name, argv in killed:
            lc.restart(name, argv)
        lc.restart("r1", r1_argv)
    at.wait_amqp_ready(HOST, p1, timeout=60)


def main():
    state = {}

    def setup():
        lc = LocalCluster().up()
        at.wait_amqp_ready(HOST, amqp_port(lc, 1), timeout=60)
        at.wait_amqp_ready(HOST, amqp_port(lc, 2), timeout=60)
        state["lc"] = lc

    def gated(t):
        def g():
            if "lc" not in state:
                raise AssertionError("skipped: the cluster never came up")
            t(state["lc"])
        g.__name__ = t.__name__
        return g

    rt.run_tests([setup, gated(test_failover_keeps_deliveries),
                  gated(test_router_dies_with_leader)])


if __name__ == "__main__":
    main()
