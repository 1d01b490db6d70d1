#!/usr/bin/python3
"""Issue 4, done-when 3: kill -9 of a queue's shard leader under load.

The local cluster (2 shards of 3 nodes, 2 routers). A publisher with
confirms on router 1 and a consumer with manual acks (prefetch 20) on
router 2 work one durable queue; while they run, the leader of the queue's
group ("<shard>.mq") is killed with SIGKILL, later restarted. Then the
queue is drained. Checked, from what the clients saw alone:

  - every confirmed message was delivered at least once (lost = 0);
  - nothing was delivered that was never published (unexpected = 0);
  - a message delivered twice came the second time with redelivered=true
    (duplicates only as redeliveries).

The publisher never re-sends: after an error it goes on with new ids, so a
duplicate can only come from the broker. Time is bounded throughout.
"""
import os
import subprocess
import threading
import time

import pika
import pika.exceptions as pex

import amqp_tutorials as at
import ringmq_test as rt
from test_cluster_routers import LocalCluster

HOST = "127.0.0.1"
LOAD_BEFORE_KILL_S = 2.0
LOAD_AFTER_KILL_S = 4.0
DRAIN_TIMEOUT_S = 60.0


def amqp_port(lc, r):
    return 5671 + r + lc.off


def group_leader(lc, group):
    """(node id, node rpc port) of the leader of @group, or None."""
    with open(lc.map) as f:
        text = f.read()
    for line in text.splitlines():
        if "rpc:" not in line or "id:" not in line:
            continue
        nid = int(line.split("id:")[1].split(",")[0])
        rpc = line.split("rpc:")[1].split("}")[0].strip()
        out = subprocess.run([rt.CTL, "--node", rpc, "--group", group, "status",
                              "--format", "kv"], capture_output=True, text=True,
                             timeout=10)
        kv = dict(t.split("=", 1) for t in out.stdout.split() if "=" in t)
        if kv.get("state") == "leader" and kv.get("ready") == "true":
            return nid, rpc
    return None


class Publisher(threading.Thread):
    def __init__(self, port, q):
        super().__init__(daemon=True)
        self.port, self.q = port, q
        self.attempted = set()
        self.confirmed = set()
        self.errors = 0
        self.stop = threading.Event()

    def run(self):
        i = 0
        while not self.stop.is_set():
            try:
                c = pika.BlockingConnection(at.params(HOST, self.port))
                ch = c.channel()
                ch.confirm_delivery()
                while not self.stop.is_set():
                    i += 1
                    body = "m-%d" % i
                    self.attempted.add(body)
                    ch.basic_publish("", self.q, body, properties=pika.BasicProperties(
                        delivery_mode=2), mandatory=True)
                    self.confirmed.add(body)
                c.close()
            except (pex.AMQPError, OSError) as e:  # noqa: PERF203
                self.errors += 1
                print("  publisher: %r" % (e,))
                time.sleep(0.2)


class Consumer(threading.Thread):
    def __init__(self, port, q):
        super().__init__(daemon=True)
        self.port, self.q = port, q
        self.seen = {}   # body -> [redelivered flags]
        self.errors = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        while not self.stop.is_set():
            try:
                c = pika.BlockingConnection(at.params(HOST, self.port))
                ch = c.channel()
                ch.basic_qos(prefetch_count=20)

                def on_msg(chx, m, props, body):
                    with self.lock:
                        self.seen.setdefault(body.decode(), []).append(m.redelivered)
                    chx.basic_ack(m.delivery_tag)

                ch.basic_consume(self.q, on_msg)
                while not self.stop.is_set():
                    c.process_data_events(time_limit=0.2)
                c.close()
            except (pex.AMQPError, OSError) as e:  # noqa: PERF203
                self.errors += 1
                print("  consumer: %r" % (e,))
                time.sleep(0.2)


def test_kill9_queue_leader_under_load():
    lc = LocalCluster().up()
    p1, p2 = amqp_port(lc, 1), amqp_port(lc, 2)
    at.wait_amqp_ready(HOST, p1, timeout=60)
    at.wait_amqp_ready(HOST, p2, timeout=60)
    q = at.uniq("k9")
    c = pika.BlockingConnection(at.params(HOST, p1))
    c.channel().queue_declare(q, durable=True)
    c.close()
    # A queue in vhost "/" lives on the shard that owns its name as a key.
    shard = lc.ctl("owner", "-", stdin=q + "\n").split()[1]
    group = shard + ".mq"
    leader = rt.wait_until(lambda: group_leader(lc, group), 30, "a leader of " + group)
    print("  queue %s lives in %s, leader node %d" % (q, group, leader[0]))

    pub, con = Publisher(p1, q), Consumer(p2, q)
    pub.start()
    con.start()
    time.sleep(LOAD_BEFORE_KILL_S)
    before = len(pub.confirmed)
    name = "n%d" % leader[0]
    argv = lc.kill9(name)
    print("  killed %s after %d confirmed publishes" % (name, before))
    new = rt.wait_until(lambda: (lambda g: g if g and g[0] != leader[0] else None)(
        group_leader(lc, group)), 30, "a new leader of " + group)
    print("  new leader node %d" % new[0])
    time.sleep(LOAD_AFTER_KILL_S)
    lc.restart(name, argv)
    pub.stop.set()
    pub.join(30)
    rt.check(not pub.is_alive(), "publisher stopped")
    rt.check(len(pub.confirmed) > before, "publishes were confirmed after the kill "
             "(%d before, %d in all)" % (before, len(pub.confirmed)))

    def drained():
        with con.lock:
            return all(b in con.seen for b in pub.confirmed)
    try:
        rt.wait_until(drained, DRAIN_TIMEOUT_S, "every confirmed message consumed")
    finally:
        con.stop.set()
        con.join(30)
    with con.lock:
        seen = dict(con.seen)
    lost = sorted(pub.confirmed - set(seen))
    unexpected = sorted(set(seen) - pub.attempted)
    dups = {b: f for b, f in seen.items() if len(f) > 1}
    bad_dups = {b: f for b, f in dups.items() if not all(f[1:])}
    print("  attempted %d, confirmed %d, consumed %d distinct, %d redelivered "
          "duplicates, publisher errors %d, consumer errors %d" %
          (len(pub.attempted), len(pub.confirmed), len(seen), len(dups),
           pub.errors, con.errors))
    rt.check(not lost, "lost confirmed messages: %r" % lost[:10])
    rt.check(not unexpected, "never-published messages delivered: %r" % unexpected[:10])
    rt.check(not bad_dups, "duplicates without redelivered: %r" %
             list(bad_dups.items())[:10])
    lc.down()


if __name__ == "__main__":
    rt.run_tests([test_kill9_queue_leader_under_load])
