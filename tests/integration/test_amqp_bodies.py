#!/usr/bin/python3
"""Message bodies on disk (issue 16; docs/bodies.md) on the local cluster
(2 shards of 3 nodes, 2 routers), with small snapshot limits so that the
queue group snapshots often and keeps little log:

  1. A backlog of persistent, confirmed messages on one queue, published
     in two halves of BACKLOG_MB / 2: the second half grows the group
     leader's resident memory by less than a quarter of its bytes. The
     bodies are in segment files, the state keeps an index entry per
     message, and what is bounded (the Raft log's copy, --log-memory-mb,
     and buffers) is full after the first half. With bodies in memory
     each half grew the leader by more than its bytes.
  2. A follower of that group that was killed before the first publish
     comes back past the leader's log: it installs a snapshot, which names
     bodies it never wrote, and fetches them from its peers (MqSegmentRead).
  3. That replica then leads the group (the old leader gets SIGTERM and
     hands leadership to the voter with the longest log, the first in the
     configuration on a tie: the returning replica, the lower id of the
     two, once both are level) and every message is consumed through a
     router with exactly the body it was published with: the fetched bytes
     are the bodies.

Time is bounded throughout.
"""
import hashlib
import os
import signal
import subprocess
import time

import pika

import amqp_tutorials as at
import ringmq_test as rt

os.environ["RINGMQ_NODE_FLAGS"] = (
    "--snapshot-threshold 32 --snapshot-trailing 8 --log-memory-mb 8")
# ASan (scripts/test's second pass) keeps freed memory in a quarantine that
# counts in RSS: keep it small so the bound measures what the node holds.
os.environ["ASAN_OPTIONS"] = ":".join(
    o for o in (os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=4") if o)

from test_amqp_kill9 import amqp_port, group_leader  # noqa: E402
from test_cluster_routers import LocalCluster, process_gone  # noqa: E402

HOST = "127.0.0.1"
BODY = 256 * 1024
BACKLOG_MB = 32
COUNT = BACKLOG_MB * 1024 * 1024 // BODY


def body_of(i):
    """Message i's body: distinct, and checkable from its first line."""
    seed = hashlib.sha256(b"%d" % i).digest()
    head = b"%08d\n" % i
    return head + (seed * (BODY // len(seed) + 1))[:BODY - len(head)]


def group_kv(rpc, group):
    out = subprocess.run([rt.CTL, "--node", rpc, "--group", group, "status",
                          "--format", "kv"], capture_output=True, text=True,
                         timeout=10)
    return dict(t.split("=", 1) for t in out.stdout.split() if "=" in t)


def node_rpc(lc, nid):
    """Node @nid's RPC address from the cluster map."""
    with open(lc.map) as f:
        for line in f:
            if "id: %d," % nid in line and "rpc:" in line:
                return line.split("rpc:")[1].split("}")[0].strip()
    raise AssertionError("node %d not in the map" % nid)


def members_of(lc, shard):
    return sorted(n for s, n, _, _, _, _ in lc.replicas() if s == shard)


def test_backlog_on_disk_install_and_fetch():
    lc = LocalCluster().up()
    p1, p2 = amqp_port(lc, 1), amqp_port(lc, 2)
    at.wait_amqp_ready(HOST, p1, timeout=60)
    at.wait_amqp_ready(HOST, p2, timeout=60)
    q = at.uniq("bodies")
    c = pika.BlockingConnection(at.params(HOST, p1))
    c.channel().queue_declare(q, durable=True)
    c.close()
    shard = lc.ctl("owner", "-", stdin=q + "\n").split()[1]
    group = shard + ".mq"
    leader = rt.wait_until(lambda: group_leader(lc, group), 30,
                           "a leader of " + group)[0]
    members = rt.wait_until(lambda: (lambda m: m if len(m) == 3 else None)(
        members_of(lc, shard)), 30, "the members of " + shard)
    back, other = [n for n in members if n != leader]
    print("  queue %s in %s: leader n%d, n%d misses the publishes" %
          (q, group, leader, back))
    back_end = int(group_kv(node_rpc(lc, back), group)["last_index"])
    argv = lc.kill9("n%d" % back)

    # 1. the backlog, with the returning replica away
    lpid = lc.pids()["n%d" % leader]
    rss = [rt.rss_kib(lpid)]
    c = pika.BlockingConnection(at.params(HOST, p1))
    ch = c.channel()
    ch.confirm_delivery()
    for half in (range(COUNT // 2), range(COUNT // 2, COUNT)):
        for i in half:
            ch.basic_publish("", q, body_of(i), mandatory=True,
                             properties=pika.BasicProperties(delivery_mode=2))
        rss.append(rt.rss_kib(lpid))
    c.close()
    print("  %d messages of %d KiB confirmed; leader RSS %d -> %d -> %d KiB"
          % (COUNT, BODY // 1024, rss[0], rss[1], rss[2]))
    rt.check(rss[2] - rss[1] < BACKLOG_MB * 1024 // 2 // 4,
             "the second %d MiB grow the leader by less than a quarter of "
             "that (%d KiB)" % (BACKLOG_MB // 2, rss[2] - rss[1]))

    # 2. back past the leader's log: a snapshot, then the bodies fetched
    lead_rpc = node_rpc(lc, leader)
    target = int(group_kv(lead_rpc, group)["last_applied"])
    lc.restart("n%d" % back, argv)
    back_rpc = node_rpc(lc, back)

    def caught_up():
        kv = group_kv(back_rpc, group)
        return kv if int(kv.get("last_applied", 0)) >= target else None
    kv = rt.wait_until(caught_up, 60, "n%d catching up" % back)
    rt.check(int(kv["snapshot_index"]) > back_end,
             "n%d installed a snapshot past its log (%s > %d)" %
             (back, kv["snapshot_index"], back_end))
    rt.wait_until(lambda: int(group_kv(back_rpc, group).get(
        "body_missing_bytes", 1)) == 0, 60, "n%d fetching its bodies" % back)
    print("  n%d installed a snapshot and fetched the bodies it names" % back)

    # 3. it leads, and serves every body
    def level():
        ends = [int(group_kv(node_rpc(lc, x), group).get("last_index", -1))
                for x in (leader, back, other)]
        return len(set(ends)) == 1
    rt.wait_until(level, 30, "the three replicas' logs level")
    os.kill(lpid, signal.SIGTERM)
    rt.wait_until(lambda: process_gone(lpid), 30, "n%d stopping" % leader)
    new = rt.wait_until(lambda: (lambda g: g if g and g[0] != leader else None)(
        group_leader(lc, group)), 60, "a new leader of " + group)[0]
    rt.check(new == back, "n%d (handed the leadership) leads, not n%d" %
             (back, new))
    got = {}
    c = pika.BlockingConnection(at.params(HOST, p2))
    ch = c.channel()
    deadline = time.time() + 120
    while len(got) < COUNT and time.time() < deadline:
        m, _, b = ch.basic_get(q, auto_ack=True)
        if m is None:
            time.sleep(0.1)
            continue
        i = int(b[:8])
        rt.check(b == body_of(i), "message %d has its body" % i)
        got[i] = True
    c.close()
    rt.check(len(got) == COUNT, "every message consumed from n%d: %d of %d" %
             (back, len(got), COUNT))
    lc.down()


if __name__ == "__main__":
    rt.run_tests([test_backlog_on_disk_install_and_fetch])
