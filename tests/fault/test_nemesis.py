#!/usr/bin/python3
"""The nemesis's schedule on a stand-in lab (no namespaces, no root): the
faults a run names with --first-faults come first, in order; the long
pauses hold LONG_PAUSE_S and hit the leader, a router its clients use,
the standalone node; the leader-only faults wait for an election; clock-jump moves the leader's clock an hour and back;
restart-memory restarts every s1 node once with a memory limit that is
not the shard's, and stops between nodes when the run ends.

  test_nemesis.py [unittest args]
"""
import os
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lab as labmod  # noqa: E402
import nemesis  # noqa: E402

SHARD_DEFAULT_MB = 64  # node/config.c DEFAULT_MEMORY_MB: the shard's limit


class FakeProc:
    def __init__(self, name, calls, log_path):
        self.name, self.calls, self.log_path = name, calls, log_path
        self.paused = False
        open(log_path, "w").close()

    def pause(self):
        self.calls.append(("pause", self.name))
        self.paused = True

    def resume(self):
        self.calls.append(("resume", self.name))
        self.paused = False

    def kill9(self):
        self.calls.append(("kill9", self.name))

    def start(self):
        self.calls.append(("start", self.name))


class FakeHost:
    def __init__(self, i, calls, tmp):
        self.i, self.name = i, "n%d" % i
        self.node = FakeProc(self.name, calls,
                             os.path.join(tmp, self.name + ".log"))
        self.router = FakeProc("r%d" % i, calls,
                               os.path.join(tmp, "r%d.log" % i))
        self.node2 = None


class FakeLab:
    """What the nemesis asks of lab.Lab, recorded in .calls. The leader of
    every group is n2."""

    def __init__(self, tmp, standalone=True):
        self.calls = []
        self.hosts = [FakeHost(i, self.calls, tmp) for i in range(1, 6)]
        self.standalone = FakeProc("standalone", self.calls,
                                   os.path.join(tmp, "standalone.log")) \
            if standalone else None
        self.on_restart = None
        self.no_leader_for = 0     # leader_proc answers none this often
        self.warn_late_s = 0       # the flag warning comes this much later
        self.limits = {}           # node name: its s1 limit, if not 64 MB

    def group_status(self, h):
        limit = self.limits.get(h.name, 64 << 20)
        return {"s1": {"limit_maxbytes": str(limit)}}

    def leader_proc(self, group):
        if self.no_leader_for > 0:   # an election under way
            self.no_leader_for -= 1
            return None, None
        return self.hosts[1], self.hosts[1].node

    def procs(self, h):
        return [h.node]

    def set_clock(self, h, offset_s):
        self.calls.append(("set_clock", h.name, offset_s))

    def wait_clock(self, h, offset_s, proc=None, timeout=15):
        self.calls.append(("wait_clock", proc.name, offset_s))
        return 0.5

    def restart_node(self, h, set_flags, timeout=30):
        self.calls.append(("restart", h.name, dict(set_flags)))

        def warn():
            with open(h.node.log_path, "a") as f:
                f.write("warn: s1: this node's memory limit %d %s\n"
                        % (set_flags["-m"], nemesis.LOG_FLAGS_DIFFER))
        if self.warn_late_s:
            # the node answers before it applied its settings
            threading.Timer(self.warn_late_s, warn).start()
        else:
            warn()
        if self.on_restart is not None:
            self.on_restart()
        return 0.2, 1.0, True

    def __getattr__(self, name):
        # the network faults: recorded, nothing done
        def record(*a, **kw):
            self.calls.append((name,) + a)
        return record


class Recorder:
    def __init__(self):
        self.ops = []

    def nemesis(self, f, value):
        self.ops.append((f, value))


class Schedule(nemesis.Nemesis):
    """A nemesis whose sleeps are recorded, not slept: it stops after
    @n_faults faults."""

    def __init__(self, *a, n_faults, **kw):
        super().__init__(*a, log=lambda msg: None, **kw)
        self.n_faults = n_faults
        self.sleeps = []

    def _sleep(self, secs):
        self.sleeps.append(secs)
        if sum(1 for f, _ in self.rec.ops if f.startswith("start-")) >= \
                self.n_faults:
            self.stop_event.set()
        return self.stop_event.is_set()


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ringmq-nemesis-")
        self.lab = FakeLab(self.tmp)
        self.rec = Recorder()

    def run_schedule(self, n_faults, seed=5, faults=None, first=(), **kw):
        n = Schedule(self.lab, self.rec, seed, "s1",
                     faults=faults or [f for f in nemesis.FAULTS
                                       if f != "reshard"],
                     first=first, n_faults=n_faults, **kw)
        n.run()
        self.assertIsNone(n.error)
        return n

    def started(self):
        return [(f[len("start-"):], v) for f, v in self.rec.ops
                if f.startswith("start-")]


class FirstFaults(Base):
    def test_named_faults_come_first_in_order(self):
        first = ["restart-memory", "pause-router", "clock-jump"]
        self.run_schedule(5, first=first)
        kinds = [k for k, _ in self.started()]
        self.assertEqual(kinds[:3], first)
        self.assertEqual(len(kinds), 5)

    def test_a_seed_replays_the_same_schedule(self):
        first = ["pause-long", "clock-jump"]
        self.run_schedule(8, first=first)
        one, calls = self.started(), list(self.lab.calls)
        self.setUp()
        self.run_schedule(8, first=first)
        self.assertEqual(self.started(), one)
        self.assertEqual(self.lab.calls, calls)

    def test_first_faults_must_be_among_the_faults(self):
        with self.assertRaises(ValueError):
            self.run_schedule(1, faults=["kill"], first=["clock-jump"])

    def test_no_standalone_node_no_pause_standalone(self):
        self.lab = FakeLab(self.tmp, standalone=False)
        with self.assertRaises(ValueError):
            self.run_schedule(1, faults=["pause-standalone"])


class LongPauses(Base):
    def one(self, kind, **kw):
        n = self.run_schedule(1, faults=[kind], **kw)
        self.assertEqual(n.sleeps[1], nemesis.LONG_PAUSE_S)
        return self.lab.calls

    def test_pause_long_stops_the_leader_for_20_s(self):
        self.assertEqual(self.one("pause-long"),
                         [("pause", "n2"), ("resume", "n2")])
        self.assertEqual(self.rec.ops[0][1]["target"], "leader")

    def test_pause_router_stops_a_router_with_clients(self):
        calls = self.one("pause-router",
                         router_hosts=[self.lab.hosts[3]])
        self.assertEqual(calls, [("pause", "r4"), ("resume", "r4")])

    def test_pause_standalone_stops_the_standalone_node(self):
        self.assertEqual(self.one("pause-standalone"),
                         [("pause", "standalone"), ("resume", "standalone")])


class LeaderOnly(Base):
    def test_waits_for_a_leader_being_elected(self):
        for kind in nemesis.LEADER_ONLY:
            self.setUp()
            self.lab.no_leader_for = 2
            self.run_schedule(1, faults=[kind])
            self.assertEqual(self.rec.ops[0][1]["target"], "leader")
            self.assertEqual(self.rec.ops[0][1]["node"], "n2")


class ClockJump(Base):
    def test_the_leader_jumps_an_hour_and_back(self):
        offsets = set()
        for seed in range(1, 9):
            self.setUp()
            self.run_schedule(1, seed=seed, faults=["clock-jump"])
            calls = self.lab.calls
            self.assertEqual(len(calls), 4)
            (f0, n0, off), (w0, p0, o0), (f1, n1, back), (w1, p1, o1) = calls
            self.assertEqual((f0, n0, f1, n1, back),
                             ("set_clock", "n2", "set_clock", "n2", 0))
            # the leader's own process is asked for its clock
            self.assertEqual((w0, p0, o0, w1, p1, o1),
                             ("wait_clock", "n2", off, "wait_clock", "n2", 0))
            self.assertEqual(abs(off), nemesis.CLOCK_JUMP_S)
            offsets.add(off)
            value = self.rec.ops[-1][1]
            self.assertEqual(value["seen_after_s"], 0.5)
            self.assertEqual(value["back_after_s"], 0.5)
        self.assertEqual(offsets, {3600, -3600}, "both signs drawn")


class RestartMemory(Base):
    def test_each_s1_node_once_with_a_limit_not_the_shards(self):
        n = self.run_schedule(1, faults=["restart-memory"])
        restarts = [c for c in self.lab.calls if c[0] == "restart"]
        self.assertEqual(sorted(c[1] for c in restarts),
                         ["n1", "n2", "n3", "n4", "n5"])
        for _, _, flags in restarts:
            self.assertIn(flags["-m"], nemesis.RESTART_MEMORY_MB)
            self.assertNotEqual(flags["-m"], SHARD_DEFAULT_MB)
        stop = self.rec.ops[-1]
        self.assertEqual(stop[0], "stop-restart-memory")
        self.assertEqual([r["node"] for r in stop[1]["restarts"]],
                         [c[1] for c in restarts])
        self.assertTrue(all(r["logged_flags_differ"]
                            for r in stop[1]["restarts"]))
        self.assertNotIn("cut_short", stop[1])
        self.assertTrue(all(r["limit_bytes"] == 64 << 20
                            for r in stop[1]["restarts"]))
        self.assertEqual(n.problems, [])

    def test_a_node_that_applies_its_own_flag_is_a_problem(self):
        self.lab.limits["n4"] = 1 << 20
        n = self.run_schedule(1, faults=["restart-memory"])
        self.assertEqual(len(n.problems), 1, n.problems)
        self.assertIn("n4 restarted with -m", n.problems[0])
        r = [r for r in self.rec.ops[-1][1]["restarts"] if r["node"] == "n4"]
        self.assertEqual((r[0]["limit_bytes"], r[0]["shard_limit_bytes"]),
                         (1 << 20, 64 << 20))

    def test_a_warning_logged_after_the_node_answers_counts(self):
        self.lab.warn_late_s = 0.3
        self.run_schedule(1, faults=["restart-memory"])
        stop = self.rec.ops[-1][1]
        self.assertTrue(all(r["logged_flags_differ"]
                            for r in stop["restarts"]), stop)

    def test_the_end_of_the_run_stops_it_between_nodes(self):
        n = None

        def end_after_two():
            if sum(1 for c in self.lab.calls if c[0] == "restart") == 2:
                n.stop_event.set()
        self.lab.on_restart = end_after_two
        n = Schedule(self.lab, self.rec, 5, "s1", faults=["restart-memory"],
                     n_faults=1)
        t = threading.Thread(target=n.run)
        t.start()
        t.join(10)
        self.assertFalse(t.is_alive())
        stop = self.rec.ops[-1][1]
        self.assertEqual(len(stop["restarts"]), 2)
        self.assertTrue(stop["cut_short"])


class ReplaceFlags(unittest.TestCase):
    def test_a_flag_given_again_takes_the_new_value(self):
        self.assertEqual(labmod.replace_flags(
            ["node", "-m", "1", "--id", "2", "-m", "16"], {"-m": 256}),
            ["node", "--id", "2", "-m", "256"])
        self.assertEqual(labmod.replace_flags(["node"], {"-m": 1}),
                         ["node", "-m", "1"])


if __name__ == "__main__":
    unittest.main()
