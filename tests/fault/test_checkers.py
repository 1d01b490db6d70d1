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
