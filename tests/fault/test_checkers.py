#!/usr/bin/python3
"""The fault-run checkers on hand-made histories (issue 5, done-when 4):
planted bugs (a lost write, a stale read, a lost message, ...) must be
reported, and correct concurrent histories accepted. Histories are written
through history.Recorder and read back, as a run does.

  test_checkers.py --lincheck PATH [unittest args]
"""
import json
import os
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import checkers  # noqa: E402
import history  # noqa: E402

LINCHECK = checkers.LINCHECK_DEFAULT


class Script:
    """Builds a history in the order the calls are made: inv() and done()
    write invoke and completion lines through a real Recorder."""

    def __init__(self, tmp):
        self.path = os.path.join(tmp, "history.jsonl")
        self.rec = history.Recorder(self.path)

    def inv(self, p, f, value=None, key="k"):
        self.rec.invoke(p, f, value, key=key)
        return self

    def done(self, p, t, f, value=None, key="k"):
        self.rec.complete(p, t, f, value, key=key)
        return self

    def op(self, p, t, f, value=None, key="k", result=None):
        """A call and its return with nothing in between."""
        self.inv(p, f, value, key)
        return self.done(p, t, f, value if result is None else result, key)

    def read(self):
        self.rec.close()
        return history.read_history(self.path)


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ringmq-checkers-")

    def tearDown(self):
        for root, dirs, files in os.walk(self.tmp, topdown=False):
            for name in files:
                os.unlink(os.path.join(root, name))
            for name in dirs:
                os.rmdir(os.path.join(root, name))
        os.rmdir(self.tmp)

    def script(self):
        return Script(self.tmp)

    def register(self, s):
        return checkers.check_register(s.read(), LINCHECK)


class RegisterChecker(Base):
    def test_concurrent_history_is_valid(self):
        s = self.script()
        s.op(0, "ok", "write", 1)
        s.inv(1, "write", 2).inv(2, "read", None)
        s.done(2, "ok", "read", 2)          # the write 2 took effect first
        s.done(1, "ok", "write", 2)
        s.op(3, "ok", "cas", [2, 3])
        s.op(4, "fail", "cas", [2, 4])      # it is 3 now
        s.op(0, "ok", "read", None, result=3)
        res = self.register(s)
        self.assertIs(res["valid"], True)
        self.assertEqual(res["keys"]["k"]["ops"], 6)

    def test_lost_write_is_reported(self):
        # write 2 was acknowledged, later reads still see 1 (an
        # acknowledged write lost, e.g. by a leader change)
        s = self.script()
        s.op(0, "ok", "write", 1)
        s.op(1, "ok", "write", 2)
        s.op(2, "ok", "read", None, result=1)
        s.op(0, "ok", "read", None, result=1)
        self.assertIs(self.register(s)["valid"], False)

    def test_stale_read_is_reported(self):
        # a read that starts after write 3 completed returns the older 2,
        # while another client already read 3: the deposed-leader anomaly
        s = self.script()
        s.op(0, "ok", "write", 2)
        s.op(1, "ok", "write", 3)
        s.op(2, "ok", "read", None, result=3)
        s.op(3, "ok", "read", None, result=2)
        res = self.register(s)
        self.assertIs(res["valid"], False)
        self.assertIn("not-linearizable", res["keys"]["k"]["detail"])

    def test_failed_cas_that_saw_its_value_is_reported(self):
        s = self.script()
        s.op(0, "ok", "write", 1)
        s.op(1, "fail", "cas", [1, 2])      # the value was 1: cannot fail
        self.assertIs(self.register(s)["valid"], False)

    def test_info_write_may_or_may_not_happen(self):
        for seen in (1, 5):
            s = self.script()
            s.op(0, "ok", "write", 1)
            s.inv(1, "write", 5).done(1, "info", "write", 5)
            s.op(2, "ok", "read", None, result=seen)
            s.op(2, "ok", "read", None, result=seen)
            self.assertIs(self.register(s)["valid"], True, seen)

    def test_info_write_cannot_explain_a_value_never_written(self):
        s = self.script()
        s.op(0, "ok", "write", 1)
        s.inv(1, "write", 5).done(1, "info", "write", 5)
        s.op(2, "ok", "read", None, result=7)
        self.assertIs(self.register(s)["valid"], False)

    def test_failed_reads_and_info_reads_constrain_nothing(self):
        s = self.script()
        s.op(0, "ok", "write", 1)
        s.op(1, "fail", "read", None, result=None)
        s.inv(2, "read").done(2, "info", "read")
        s.op(3, "ok", "read", None, result=1)
        self.assertIs(self.register(s)["valid"], True)

    def test_keys_are_independent(self):
        s = self.script()
        s.op(0, "ok", "write", 1, key="a")
        s.op(1, "ok", "write", 1, key="b")
        s.op(0, "ok", "write", 2, key="a")
        s.op(1, "ok", "read", None, key="a", result=2)
        s.op(1, "ok", "read", None, key="b", result=0)  # b never held 0
        res = self.register(s)
        self.assertIs(res["valid"], False)
        self.assertIs(res["keys"]["a"]["valid"], True)
        self.assertIs(res["keys"]["b"]["valid"], False)

    def test_too_long_a_key_history_is_undecided(self):
        s = self.script()
        for i in range(checkers.LC_MAX_OPS + 1):
            s.op(0, "ok", "write", i % 5)
        res = self.register(s)
        self.assertIsNone(res["valid"])
        self.assertIsNone(res["keys"]["k"]["valid"])

    def test_kept_logs_replay_with_lincheck(self):
        s = self.script()
        s.op(0, "ok", "write", 1)
        s.op(1, "ok", "read", None, result=2)
        keep = os.path.join(self.tmp, "keys")
        res = checkers.check_register(s.read(), LINCHECK, keep_dir=keep)
        path = res["keys"]["k"]["file"]
        with open(path) as f:
            self.assertIn(":ok\t:read\t2", f.read())


class QueueChecker(Base):
    def queue(self, s):
        return checkers.check_queue(s.read())

    def test_valid_with_duplicates_and_recovered(self):
        s = self.script()
        for v in (1, 2, 3):
            s.op(0, "ok", "enqueue", v, key=None)
        s.inv(0, "enqueue", 4, key=None).done(0, "info", "enqueue", 4,
                                               key=None)
        s.op(1, "ok", "dequeue", None, key=None, result=1)
        s.op(1, "ok", "dequeue", None, key=None, result=1)   # redelivery
        s.op(1, "ok", "dequeue", None, key=None, result=4)   # maybe-enqueued
        s.op(2, "ok", "drain", None, key=None, result=[2, 3])
        res = self.queue(s)
        self.assertTrue(res["valid"])
        self.assertEqual(res["lost"], [])
        self.assertEqual(res["duplicated"], {1: 2})
        self.assertEqual(res["recovered"], [4])
        self.assertEqual(res["acknowledged"], 3)

    def test_lost_message_is_reported(self):
        s = self.script()
        for v in (1, 2, 3):
            s.op(0, "ok", "enqueue", v, key=None)
        s.op(1, "ok", "dequeue", None, key=None, result=1)
        s.op(2, "ok", "drain", None, key=None, result=[3])
        res = self.queue(s)
        self.assertFalse(res["valid"])
        self.assertEqual(res["lost"], [2])

    def test_unconfirmed_message_not_delivered_is_not_lost(self):
        s = self.script()
        s.op(0, "ok", "enqueue", 1, key=None)
        s.inv(0, "enqueue", 2, key=None).done(0, "info", "enqueue", 2,
                                               key=None)
        s.op(0, "fail", "enqueue", 3, key=None)
        s.op(2, "ok", "drain", None, key=None, result=[1])
        self.assertTrue(self.queue(s)["valid"])

    def test_unexpected_message_is_reported(self):
        s = self.script()
        s.op(0, "ok", "enqueue", 1, key=None)
        s.op(2, "ok", "drain", None, key=None, result=[1, 99])
        res = self.queue(s)
        self.assertFalse(res["valid"])
        self.assertEqual(res["unexpected"], [99])


class FakeLab:
    """What placement.check_queues asks of a lab, answered from tables."""

    class Host:
        def __init__(self, i):
            self.ip, self.name = "10.0.0.%d" % i, "n%d" % i

    def __init__(self, where, find, items, router_ready):
        self.hosts = [self.Host(i) for i in range(1, 4)]
        self.ctl_bin = "ringmqctl"
        self.where, self.find = where, find
        self.items = items              # {(group, rpc): ready messages}
        self.router_ready = router_ready  # {host ip: count}

    def queue_where(self, q):
        return self.where

    def queue_find(self, q):
        return self.find


class QueuePlacement(unittest.TestCase):
    """placement.check_queues (after the heal: each queue at exactly one
    shard, the directory's) on planted wrong answers."""

    SHARDS = [("s1", 1, "serving", [(1, "r1", "a1"), (2, "r2", "a2")]),
              ("s2", 1, "serving", [(11, "r11", "b1"), (12, "r12", "b2")])]

    def check(self, **kw):
        import placement
        good = dict(
            where=("s2", 5, None),
            find={"s1": ("moved-away", {}),
                  "s2": ("holds", {"gen": 5, "ready": 3, "consumers": 0})},
            items={("s1.mq", "a1"): 0, ("s1.mq", "a2"): 0,
                   ("s2.mq", "b1"): 3, ("s2.mq", "b2"): 3},
            router_ready={h: 3 for h in ("10.0.0.1", "10.0.0.2",
                                         "10.0.0.3")})
        good.update(kw)
        lab = FakeLab(**good)
        saved = (placement.live_map, placement.group_status,
                 placement._router_ready)
        placement.live_map = lambda lab_: self.SHARDS
        placement.group_status = lambda ctl, rpc, t: {
            g: {"items": str(n)} for (g, r), n in lab.items.items()
            if r == rpc}
        placement._router_ready = lambda ip, q: lab.router_ready[ip]
        try:
            return placement.check_queues(lab, ["q"], timeout=0,
                                          log=lambda m: None)
        finally:
            (placement.live_map, placement.group_status,
             placement._router_ready) = saved

    def test_one_holder_the_directory_s_is_valid(self):
        res = self.check()
        self.assertTrue(res["valid"], res["problems"])

    def test_a_second_copy_is_reported(self):
        res = self.check(find={
            "s1": ("holds", {"gen": 4, "ready": 0, "consumers": 2}),
            "s2": ("holds", {"gen": 5, "ready": 3, "consumers": 0})})
        self.assertFalse(res["valid"])
        self.assertIn("held by ['s1', 's2']", " ".join(res["problems"]))

    def test_messages_on_another_shard_s_replica_are_reported(self):
        items = {("s1.mq", "a1"): 0, ("s1.mq", "a2"): 2,
                 ("s2.mq", "b1"): 3, ("s2.mq", "b2"): 3}
        res = self.check(items=items)
        self.assertFalse(res["valid"])
        self.assertIn("s1.mq at a2: 2 ready", " ".join(res["problems"]))

    def test_a_move_left_pending_is_reported(self):
        res = self.check(where=("s2", 5, "s1"))
        self.assertFalse(res["valid"])
        res = self.check(find={
            "s1": ("moving", {}),
            "s2": ("holds", {"gen": 5, "ready": 3, "consumers": 0})})
        self.assertFalse(res["valid"])

    def test_another_gen_or_a_silent_shard_is_reported(self):
        res = self.check(find={
            "s1": ("none", {}),
            "s2": ("holds", {"gen": 4, "ready": 3, "consumers": 0})})
        self.assertFalse(res["valid"])
        self.assertFalse(self.check(find=None)["valid"])

    def test_a_router_that_answers_otherwise_is_reported(self):
        res = self.check(router_ready={"10.0.0.1": 3, "10.0.0.2": 0,
                                       "10.0.0.3": 3})
        self.assertFalse(res["valid"])


class HistoryFile(Base):
    def test_torn_last_line_is_dropped(self):
        s = self.script()
        s.op(0, "ok", "write", 1)
        s.rec.close()
        with open(s.path, "a") as f:
            f.write('{"process": 0, "type": "inv')
        self.assertEqual(len(history.read_history(s.path)), 2)

    def test_malformed_line_is_an_error_naming_it(self):
        path = os.path.join(self.tmp, "h.jsonl")
        with open(path, "w") as f:
            f.write('{"process":0,"type":"invoke","f":"read","time":1}\n'
                    'garbage\n'
                    '{"process":0,"type":"ok","f":"read","time":2}\n')
        with self.assertRaisesRegex(history.HistoryError, "h.jsonl:2"):
            history.read_history(path)

    def test_nemesis_lines_are_ignored_by_checkers(self):
        s = self.script()
        s.rec.nemesis("start-partition", {"isolated": "n1"})
        s.op(0, "ok", "write", 1)
        s.rec.nemesis("stop-partition", None)
        s.op(1, "ok", "read", None, result=1)
        hist = s.read()
        self.assertEqual(hist[0]["process"], "nemesis")
        self.assertIs(checkers.check_register(hist, LINCHECK)["valid"], True)
        self.assertNotIn("start-partition", checkers.op_counts(hist))
        self.assertIn("start-partition", checkers.timeline(hist))

    def test_lines_are_in_time_order_under_threads(self):
        s = self.script()

        def client(p):
            for i in range(200):
                s.op(p, "ok", "write", i, key="k%d" % p)

        threads = [threading.Thread(target=client, args=(p,))
                   for p in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        hist = s.read()
        self.assertEqual(len(hist), 8 * 200 * 2)
        times = [op["time"] for op in hist]
        self.assertEqual(times, sorted(times))
        with open(s.path) as f:
            first = json.loads(f.readline())
        self.assertEqual(set(first), {"process", "type", "f", "key", "value",
                                      "time"})


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--lincheck":
        LINCHECK = sys.argv[2]
        del sys.argv[1:3]
    unittest.main(verbosity=2)
