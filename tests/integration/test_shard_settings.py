#!/usr/bin/python3
"""A shard's settings that change what apply does live in its log, not in
node flags (a rolling flag change used to diverge replicas: each evicted by
its own -m).

The local cluster (2 shards x 3 nodes, 2 routers) under a write load of
1 KiB values through both routers:
  1. every node of shard s1 is killed and started again, one at a time,
     with another -m each (a rolling flag change): the shard keeps the
     settings of its log (the first leader seeded them from its flags), so
     its replicas end with equal digests at equal applied indexes;
  2. `ringmqctl shard set s1 memory-limit 2m` while the load runs: every
     replica of s1 applies it at the same point, evicts down to 2 MiB the
     same way, and reports the new limit; s2 keeps its own.
Write errors are counted and printed (a killed leader's in-flight writes
may fail); the checks are on the replicas.
"""
import subprocess
import threading
import time

from pymemcache.client.base import Client

import ringmq_test as rt
from test_cluster_routers import LocalCluster

VALUE = b"v" * 1024


class Load:
    """One writer per router: distinct keys, 1 KiB values, until stopped."""

    def __init__(self, lc):
        self.lc = lc
        self.stop_flag = threading.Event()
        self.stored = 0
        self.errors = 0
        self.threads = [threading.Thread(target=self.run, args=(r,), daemon=True)
                        for r in (1, 2)]

    def run(self, r):
        c = Client(("127.0.0.1", self.lc.mc_port(r)), timeout=10,
                   connect_timeout=5)
        i = 0
        while not self.stop_flag.is_set():
            try:
                if c.set("r%d:%07d" % (r, i), VALUE, noreply=False):
                    self.stored += 1
                else:
                    self.errors += 1
            except Exception:  # noqa: BLE001 - SERVER_ERROR, reconnects
                self.errors += 1
                c.close()
                time.sleep(0.05)
            i += 1
        c.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)


def shard_nodes(lc, shard):
    return sorted(node for s, node, _, _, _, _ in lc.replicas() if s == shard)


def group_kv(lc, node, shard):
    out = lc.ctl("--node", "127.0.0.1:%d" % (7100 + node + lc.off),
                 "--group", shard, "status", "--format", "kv")
    return dict(t.split("=", 1) for t in out.split() if "=" in t)


def wait_serving(lc, node, shard):
    def ok():
        for s, n, state, _, _, _ in lc.replicas():
            if s == shard and n == node and state in ("leader", "follower"):
                return lc.leader_of(shard) is not None
        return False
    rt.wait_until(ok, 60, "node %d back in %s" % (node, shard), interval=0.2)


def check_alike(lc, shard, limit):
    """Every replica of @shard at one applied index with one digest, and
    the limit @limit; returns the replicas' key/value rows."""
    rt.wait_until(lc.converged, 60, "replicas to converge", interval=0.5)
    rows = {n: group_kv(lc, n, shard) for n in shard_nodes(lc, shard)}
    seen = {(kv["last_applied"], kv["digest"]) for kv in rows.values()}
    rt.check(len(seen) == 1, "%s: replicas differ: %s" % (shard, seen))
    for n, kv in rows.items():
        rt.check(int(kv["limit_maxbytes"]) == limit,
                 "%s node %d: limit %s, not %d" % (shard, n,
                                                   kv["limit_maxbytes"], limit))
    return rows


def test_rolling_flags_and_shard_set():
    lc = LocalCluster().up()
    nodes = shard_nodes(lc, "s1")
    rt.check(len(nodes) == 3, "s1 has 3 replicas: %s" % nodes)
    with Load(lc) as load:
        time.sleep(2)
        for k, node in enumerate(nodes):
            argv = lc.kill9("n%d" % node)
            # another memory limit on every node: 3, 4, 5 MiB
            argv = [a for a in argv] + ["-m", str(3 + k)]
            lc.restart("n%d" % node, argv)
            wait_serving(lc, node, "s1")
            time.sleep(1)
        first = load.stored
        out = lc.ctl("shard", "set", "s1", "memory-limit", "2m")
        rt.check("s1 memory-limit 2097152" in out, "shard set: %r" % out)
        rt.wait_until(lambda: load.stored > first + 3000, 60,
                      "3000 more writes after shard set", interval=0.2)

        # the load goes on until s1 is full and evicts: how many writes
        # that takes depends on how fast the machine is
        def s1_evicts():
            for n in nodes:
                kv = group_kv(lc, n, "s1")
                if kv.get("state") == "leader":
                    return int(kv["evictions"]) > 0
            return False
        rt.wait_until(s1_evicts, 120, "s1 to evict under its 2 MiB limit",
                      interval=0.5)
    print("writes stored %d, failed %d" % (load.stored, load.errors))
    rows = check_alike(lc, "s1", 2 << 20)
    evicted = {int(kv["evictions"]) for kv in rows.values()}
    rt.check(len(evicted) == 1 and evicted.pop() > 0,
             "s1 replicas evicted alike: %s" % rows)
    # s2 was never set: it keeps the limit its first leader seeded
    s2 = check_alike(lc, "s2", int(group_kv(lc, shard_nodes(lc, "s2")[0],
                                            "s2")["limit_maxbytes"]))
    rt.check(all(int(kv["limit_maxbytes"]) != 2 << 20 for kv in s2.values()),
             "s2 keeps its own limit")


def test_shard_set_refusals():
    lc = LocalCluster().up()
    for args, why in ((["shard", "set", "s1", "memory-limit", "100"], "too small"),
                      (["shard", "set", "s1", "item-size-max", "1g"], "too large"),
                      (["shard", "set", "nope", "memory-limit", "2m"], "no shard"),
                      (["shard", "set", "s1"], "nothing to set"),
                      (["shard", "get", "s1"], "unknown verb")):
        r = subprocess.run([rt.CTL, "--cluster", lc.map] + args,
                           capture_output=True, text=True, timeout=30)
        rt.check(r.returncode == 64, "%s refused (%s): exit %d, %r %r" % (
            args, why, r.returncode, r.stdout, r.stderr))
    kv = group_kv(lc, shard_nodes(lc, "s1")[0], "s1")
    rt.check(int(kv["limit_maxbytes"]) != 100, "nothing was set")


if __name__ == "__main__":
    rt.run_tests([test_rolling_flags_and_shard_set, test_shard_set_refusals])
