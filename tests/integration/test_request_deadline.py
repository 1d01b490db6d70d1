#!/usr/bin/python3
"""A write the router reported failed is not applied afterwards by a node
that was paused while the write waited for it (docs/consistency.md, "Timed-out
requests").

On a local cluster (scripts/local-cluster: 2 shards of 3 nodes) whose
election timeout (5 s) is well above the routers' request timeout (1 s): the
leader of the key's shard gets SIGSTOP, a set through a router comes back
SERVER_ERROR after the timeout, the leader gets SIGCONT and reads the set
from its socket. The set carried its budget (RpcRequest.budget_ms), counted
at the node from before the pause, so the node refuses it instead of
proposing it: the key keeps its earlier value. (Before, the node proposed
it on waking, still leader, and the write reported failed was applied.)
"""
import os
import signal
import time

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError

import ringmq_test as rt

ELECTION_MS = 5000
REQUEST_TIMEOUT_MS = 1000
os.environ["RINGMQ_NODE_FLAGS"] = "--election-ms %d" % ELECTION_MS
os.environ["RINGMQ_ROUTER_FLAGS"] = "--request-timeout %d" % REQUEST_TIMEOUT_MS

from test_cluster_routers import LocalCluster, owners, set_ok  # noqa: E402


def test_write_reported_failed_is_not_applied_after_a_pause():
    lc = LocalCluster().up()
    lc.wait_nodes_ready()
    keys = [k for k in ("k%d" % i for i in range(200))
            if owners(lc, [k])[k] == "s2"][:2]
    key, other = keys
    c = Client(("127.0.0.1", lc.mc_port(1)), timeout=10)
    # the router's connection to the leader is up and used
    rt.wait_until(lambda: set_ok(c, key, b"before"), 20, "write before")
    leader = rt.wait_until(lambda: lc.leader_of("s2"), 20, "s2's leader")
    pid = lc.pids()["n%d" % leader]
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.time()
        try:
            c.set(key, b"late", noreply=False)
            raise AssertionError("a write to a paused leader succeeded")
        except MemcacheServerError:
            pass
        waited = time.time() - t0
        rt.check(waited >= REQUEST_TIMEOUT_MS / 1000.0 * 0.9,
                 "the router timed the write out (after %.2f s)" % waited)
    finally:
        os.kill(pid, signal.SIGCONT)
    # The router's connection delivers the late set to the leader before
    # this write, so once this one is through, the late one was decided.
    rt.wait_until(lambda: set_ok(c, other, b"after"), 20, "write after")
    rt.check(lc.leader_of("s2") == leader,
             "no election happened: the woken leader could have proposed it")
    got = c.get(key)
    rt.check(got == b"before",
             "the write reported failed was applied afterwards: %r" % got)


if __name__ == "__main__":
    rt.run_tests([test_write_reported_failed_is_not_applied_after_a_pause])
