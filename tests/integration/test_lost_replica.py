#!/usr/bin/python3
"""A replica that lost its data (docs/raft.md, "A replica that lost its
data"; docs/cluster.md#membership-adding-and-removing-replicas): a shard
of three nodes, one router, cache keys in it.

1. A follower of s1 is stopped and its s1 directory deleted (its s1.mq and
   meta data stay). Started again it exits with status 1 and says why and
   what to do: it must not bootstrap s1 again with no vote and no log.
2. The documented way back: `ringmqctl member remove s1 ID`, the map gives
   it join: true (below the first member), the node starts with --rejoin (s1 starts empty and waits
   to be added; s1.mq and meta restart from their data), `ringmqctl member
   add s1 ID`: its replicas reach the others' digests and every key is
   read back through the router.
3. Started again without --rejoin, it restarts from its new data.
"""
import os
import shutil

from pymemcache.client.base import Client

import ringmq_test as rt
from test_membership import HOST, Shard, members, wait_digests_equal

KEYS = 300


def test_lost_replica():
    s = Shard(n=3)
    map3 = s.write_map("map3.yaml", [1, 2, 3])
    for i in (1, 2, 3):
        s.start_node(i, map3)
    rt.wait_until(lambda: s.leader("s1") and s.leader("s1.mq") and
                  s.leader("meta"), 60, "leaders")
    s.start_router(map3)
    mc = Client((HOST, s.mc), timeout=10)
    for k in range(KEYS):
        rt.check(mc.set("k%d" % k, b"v%d" % k), "set k%d" % k)
    for i in (1, 2, 3):
        rt.check(os.path.exists(os.path.join(s.dir, "n%d" % i, "s1.member")),
                 "node %d recorded its membership of s1" % i)

    # 1. a follower loses its s1 directory: refused
    lost = 1 if s.leader("s1") != 1 else 2  # the map's first, if it can
    rt.check(s.nodes[lost].stop() == 0, "node %d stopped" % lost)
    shutil.rmtree(os.path.join(s.dir, "n%d" % lost, "s1"))
    n = s.start_node(lost, map3, wait=False)
    rc = n.proc.wait(timeout=60)
    log = n.log()
    rt.check(rc == 1, "node %d exits with status 1, got %s" % (lost, rc))
    rt.check("group s1: this node was member %d" % lost in log and
             "must not start as that member again" in log and
             "ringmqctl member remove" in log and "--rejoin" in log,
             "node %d says why and what to do: %s" % (lost, log[-800:]))
    rt.check(not os.listdir(os.path.join(s.dir, "n%d" % lost, "s1")),
             "the refused s1 directory stays empty")

    # 2. remove, join: true, --rejoin, add
    out = s.ctl(map3, "member", "remove", "s1", str(lost))
    rt.check("s1: member %d removed" % lost in out.stdout, out.stdout)
    # a shard's first member cannot join: it goes down the list
    rejoin = s.write_map("rejoin.yaml",
                         [i for i in (1, 2, 3) if i != lost] + [lost],
                         join=[lost])
    s.start_node(lost, rejoin, extra=["--rejoin"])
    log = s.nodes[lost].log()
    rt.check("raft group s1: data lost, rejoining as member %d" % lost in log,
             "node %d rejoins s1 empty: %s" % (lost, log[-800:]))
    out = s.ctl(rejoin, "member", "add", "s1", str(lost))
    rt.check("s1: member %d is a voter" % lost in out.stdout, out.stdout)
    listed = members(s.ctl(rejoin, "member", "list", "s1").stdout)
    for g in ("s1", "s1.mq", "meta"):
        rt.check(listed.get(g) == {1: "voter", 2: "voter", 3: "voter"},
                 "members of %s: %s" % (g, listed.get(g)))
    wait_digests_equal(s, [1, 2, 3])
    mc = Client((HOST, s.mc), timeout=10)
    missing = [k for k in range(KEYS) if mc.get("k%d" % k) != b"v%d" % k]
    rt.check(not missing, "keys lost: %s" % missing[:10])

    # 3. a plain restart restarts from the new data
    rt.check(s.nodes[lost].stop() == 0, "node %d stopped again" % lost)
    s.start_node(lost, rejoin)
    rt.check(mc.set("after", b"1"), "a write after the restart")
    wait_digests_equal(s, [1, 2, 3])
    rt.check(s.nodes[lost].alive(), "node %d runs" % lost)


if __name__ == "__main__":
    rt.run_tests([test_lost_replica])
