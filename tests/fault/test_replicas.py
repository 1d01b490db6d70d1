#!/usr/bin/python3
"""placement.check_replicas (the after-heal check of runs without the
reshard nemesis) on made-up `ringmqctl status` answers: replicas of every
group at one index with one digest pass; a replica behind, a digest that
differs, an eviction or a replica that does not answer fail, also when
they last past the deadline; a replica that catches up in time passes.

  test_replicas.py [unittest args]
"""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import placement  # noqa: E402

RPCS = ["10.0.0.%d:7101" % i for i in range(1, 4)]
SHARDS = [("s1", 1, "", [(i + 1, "raft", rpc) for i, rpc in
                         enumerate(RPCS)])]


class FakeLab:
    ctl_bin = "ringmqctl"


class Cluster:
    """The map and each rpc's status answer, in rounds (a round begins
    with the map): @rounds[k] answers in the k-th round, the last one in
    every later round."""

    def __init__(self, rounds):
        self.rounds = rounds
        self.round = -1

    def live_map(self, lab):
        self.round += 1
        return SHARDS

    def group_status(self, ctl_bin, rpc, timeout_ms=700):
        return self.rounds[min(self.round, len(self.rounds) - 1)].get(rpc,
                                                                        {})


def replica(index, digest="d1", evictions=0, items=3):
    return {g: {"name": g, "last_applied": str(index), "digest": digest,
                "evictions": str(evictions), "items": str(items),
                "state": "follower"} for g in ("s1", "s1.mq", "meta")}


def agreeing(index=100):
    return {rpc: replica(index) for rpc in RPCS}


class CheckReplicas(unittest.TestCase):
    def setUp(self):
        self.saved = placement.group_status, placement.live_map, \
            placement.time.sleep
        placement.time.sleep = lambda s: None

    def tearDown(self):
        placement.group_status, placement.live_map, \
            placement.time.sleep = self.saved

    def check(self, *rounds, timeout=0):
        cluster = Cluster(list(rounds))
        placement.group_status = cluster.group_status
        placement.live_map = cluster.live_map
        return placement.check_replicas(FakeLab(), timeout=timeout,
                                        log=lambda msg: None)

    def test_agreeing_replicas_pass(self):
        res = self.check(agreeing())
        self.assertTrue(res["valid"], res["problems"])
        self.assertEqual(res["indexes"], {"s1": [100], "s1.mq": [100],
                                          "meta": [100]})

    def test_a_replica_behind_fails_with_its_raft_state(self):
        behind = agreeing()
        behind[RPCS[2]] = replica(90)
        res = self.check(behind)
        self.assertFalse(res["valid"])
        self.assertIn("s1: replicas at different indexes", res["problems"][0])
        self.assertEqual(sorted(res["replicas"]["s1"]), RPCS)

    def test_a_digest_that_differs_fails(self):
        other = agreeing()
        other[RPCS[1]] = replica(100, digest="d2")
        res = self.check(other)
        self.assertFalse(res["valid"])
        self.assertTrue(any("digests differ" in p for p in res["problems"]))

    def test_an_eviction_fails(self):
        ev = agreeing()
        ev[RPCS[0]] = replica(100, evictions=1)
        res = self.check(ev)
        self.assertFalse(res["valid"])
        self.assertIn("evictions", res["problems"][-1])

    def test_a_silent_replica_fails(self):
        silent = agreeing()
        del silent[RPCS[0]]
        self.assertFalse(self.check(silent)["valid"])

    def test_a_replica_that_catches_up_in_time_passes(self):
        behind = agreeing()
        behind[RPCS[2]] = replica(90)
        res = self.check(behind, behind, agreeing(), timeout=60)
        self.assertTrue(res["valid"], res["problems"])


if __name__ == "__main__":
    unittest.main()
