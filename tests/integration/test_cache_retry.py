#!/usr/bin/python3
"""Definite answers across a failover (docs/consistency.md, request ids).

On a local cluster (scripts/local-cluster: 2 shards of 3 nodes, 2 routers),
clients of both routers increment one counter by 1 in a loop, each waiting
for its answer. The leader of the counter's shard is killed with kill -9
under that load. The routers retry the increments the dead leader had in
flight, with their request ids, at the new leader, so that:

- no client gets an error: every increment is answered with its number;
- the numbers answered are exactly 1..N, each once (an increment applied
  twice would leave a number nobody was answered; one answered from a
  wrong record would repeat a number);
- the counter ends at N, on every replica (digests equal).

The routers' request timeout is raised to 20 s so that the election, slow
under a loaded machine, fits in one request's budget.
"""
import os
import threading
import time

from pymemcache.client.base import Client

import ringmq_test as rt
from test_cluster_routers import LocalCluster, owners

KEY = "retry:counter"


class Incr(threading.Thread):
    """incr KEY 1 in a loop through one router, recording every answer."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.numbers = []
        self.errors = []

    def run(self):
        c = Client(("127.0.0.1", self.port), timeout=30)
        while not self.stop.is_set():
            try:
                n = c.incr(KEY, 1, noreply=False)
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                self.errors.append(repr(e))
                c.close()
                time.sleep(0.05)
                continue
            if n is None:
                self.errors.append("NOT_FOUND")
            else:
                self.numbers.append(int(n))
        c.close()


def test_incr_answers_are_definite_across_leader_kill():
    os.environ["RINGMQ_ROUTER_FLAGS"] = "--request-timeout 20000"
    lc = LocalCluster().up()
    shard = owners(lc, [KEY])[KEY]
    c = Client(("127.0.0.1", lc.mc_port(1)), timeout=30)
    rt.check(c.set(KEY, b"0", noreply=False), "the counter is set")
    c.close()
    loads = [Incr(lc.mc_port(r)) for r in (1, 2) for _ in range(3)]
    for l in loads:
        l.start()
    rt.wait_until(lambda: all(len(l.numbers) >= 20 for l in loads), 30,
                  "every client to increment")
    leader = lc.leader_of(shard)
    rt.check(leader is not None, "%s has a leader" % shard)
    argv = lc.kill9("n%d" % leader)
    t_kill = time.time()
    before = [len(l.numbers) for l in loads]
    rt.wait_until(lambda: all(len(l.numbers) >= b + 20
                              for l, b in zip(loads, before)), 60,
                  "every client to increment again after the kill")
    print("  killed n%d (leader of %s); increments resumed within %.1fs" %
          (leader, shard, time.time() - t_kill))
    for l in loads:
        l.stop.set()
    for l in loads:
        l.join(60)
        rt.check(not l.is_alive(), "a client finished")
    errors = [e for l in loads for e in l.errors]
    numbers = sorted(n for l in loads for n in l.numbers)
    rt.check(not errors, "no increment failed: %r" % errors[:5])
    rt.check(numbers == list(range(1, len(numbers) + 1)),
             "the answers are 1..%d, each once (first differences: %r)" %
             (len(numbers), [(i + 1, n) for i, n in enumerate(numbers)
                             if n != i + 1][:5]))
    c = Client(("127.0.0.1", lc.mc_port(2)), timeout=30)
    final = int(c.get(KEY).strip())
    c.close()
    rt.check(final == len(numbers),
             "the counter is %d after %d answered increments" %
             (final, len(numbers)))
    print("  %d increments, each answered once, counter %d" %
          (len(numbers), final))
    # the killed node catches up: every replica holds the same state,
    # request ids included
    lc.restart("n%d" % leader, argv)
    rt.wait_until(lc.converged, 90, "every shard's replicas to converge",
                  interval=0.5)
    lc.down()


if __name__ == "__main__":
    rt.run_tests([test_incr_answers_are_definite_across_leader_kill])
