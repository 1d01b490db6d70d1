#!/usr/bin/python3
"""A node stopped with SIGTERM hands the leadership of its groups off
before it stops (node/node.c, rgroup_hand_off), and /readyz (node_http.c)
says when a node's replicas are ready.

On a local cluster (scripts/local-cluster: 2 shards of 3 nodes) whose
election timeout is 3 s: the leader of s2 gets SIGTERM; another s2 replica
reports a new leader well within the election timeout (without a hand-off
no follower even starts an election before it), the stopped node exits
within the hand-off bound, and writes through a router go on. /readyz is
200 on every node of a healthy cluster, 503 naming the group on a node
whose shard lost its majority, and 200 again on the restarted node once it
has caught up.
"""
import os
import re
import signal
import time

from pymemcache.client.base import Client

import ringmq_test as rt

ELECTION_MS = 3000
os.environ["RINGMQ_NODE_FLAGS"] = "--election-ms %d" % ELECTION_MS

from test_cluster_routers import LocalCluster, http_get, owners, process_gone  # noqa: E402


def leader_seen_by(lc, node, group):
    """The leader id node @node's /metrics reports for @group (0: none),
    None when it does not answer."""
    try:
        status, body = http_get(9200 + node + lc.off, "/metrics")
    except OSError:
        return None
    m = re.search(r'^ringmq_group_leader_id\{group="%s"\} (\d+)' % group,
                  body, re.M)
    return int(m.group(1)) if status == 200 and m else None


def readyz(lc, node):
    try:
        return http_get(9200 + node + lc.off, "/readyz")[0]
    except OSError:  # not listening (yet)
        return None


def test_sigterm_hands_leadership_off():
    lc = LocalCluster().up()
    for node in range(1, 7):
        status, body = rt.wait_until(
            lambda: (lambda r: r if r[0] == 200 else None)(
                http_get(9200 + node + lc.off, "/readyz")),
            30, "node %d /readyz" % node)
        rt.check(body == "ready\n", "node %d /readyz: %r" % (node, body))
    key = next(k for k in ("k%d" % i for i in range(100))
               if owners(lc, [k])[k] == "s2")
    c = Client(("127.0.0.1", lc.mc_port(1)), timeout=10)
    rt.check(c.set(key, b"before", noreply=False), "write before the stop")
    old = lc.leader_of("s2")
    rt.check(old in (4, 5, 6), "s2 has a leader: %r" % old)
    others = [n for n in (4, 5, 6) if n != old]
    pid = lc.pids()["n%d" % old]
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0") if a]
    t0 = time.time()
    os.kill(pid, signal.SIGTERM)
    new = rt.wait_until(
        lambda: next((l for l in (leader_seen_by(lc, n, "s2") for n in others)
                      if l not in (None, 0, old)), None),
        10, "a new s2 leader", interval=0.01)
    dt = time.time() - t0
    print("  SIGTERM to leader %d: node %d leads s2 after %.3fs "
          "(election timeout %.1fs)" % (old, new, dt, ELECTION_MS / 1000.0))
    rt.check(dt < ELECTION_MS / 1000.0 / 2,
             "a new leader within half an election timeout: %.3fs" % dt)
    rt.wait_until(lambda: process_gone(pid), 10, "the stopped node to exit")
    gone = time.time() - t0
    rt.check(gone < 6, "the node stopped within the hand-off bound: %.1fs" % gone)
    with open(os.path.join(lc.dir, "logs", "n%d.log" % old)) as f:
        log = f.read()
    rt.check("handing off the leadership" in log and
             "every group I led has a new leader" in log,
             "the node logged its hand-off")
    rt.check(c.set(key, b"after", noreply=False), "a write after the stop")
    rt.check(c.get(key) == b"after", "read back")
    c.close()
    # back, it catches up and is ready again
    lc.restart("n%d" % old, argv)
    rt.wait_until(lambda: readyz(lc, old) == 200, 60,
                  "the restarted node to be ready")
    # a shard without a majority: not ready, naming the group. Node 3's
    # groups (s1, s1.mq, meta) notice the lost leaders one by one, and
    # /readyz names the first failing group in that order, so wait until
    # s1's loss shows.
    lc.kill9("n1")
    lc.kill9("n2")
    status, body = rt.wait_until(
        lambda: (lambda r: r if r[0] == 503 and r[1].startswith("group s1:")
                 else None)(http_get(9203 + lc.off, "/readyz")),
        30, "node 3 /readyz to say s1 is not ready")
    rt.check("no leader" in body, "names the group and why: %r" % body)
    rt.check(http_get(9203 + lc.off, "/healthz?live")[0] == 200,
             "node 3 alive")
    lc.down()


if __name__ == "__main__":
    rt.run_tests([test_sigterm_hands_leadership_off])
