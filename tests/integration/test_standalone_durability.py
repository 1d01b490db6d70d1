#!/usr/bin/python3
"""Done-when 2 of the foundation issue: whatever the standalone node
acknowledged (STORED, DELETED, a number from incr) survives kill -9 and a
restart, including when a snapshot was taken before the kill.

Writers run concurrently (so group commit packs them into shared entries) and
record each acknowledgement; the node is killed while they write; after the
restart every acknowledged effect must be visible. Writes in flight at the
kill may or may not have happened, so each key is written once with a value
of its own, and only acknowledged outcomes are checked.
"""
import threading
import time

from pymemcache.client.base import Client

import ringmq_test as rt


class Writer(threading.Thread):
    def __init__(self, port, wid, stop):
        super().__init__(daemon=True)
        self.port, self.wid, self.stop = port, wid, stop
        self.stored = {}     # key -> value, acknowledged STORED
        self.deleted = set()  # keys acknowledged DELETED
        self.counter = None   # last acknowledged incr result
        self.in_flight = None  # key of the op cut off by the kill: unknown
        self.errors = 0

    def run(self):
        c = Client(("127.0.0.1", self.port), connect_timeout=2, timeout=5)
        i = 0
        try:
            c.set("ctr-%d" % self.wid, b"0")
            self.counter = 0
            while not self.stop.is_set():
                key = "w%d-k%d" % (self.wid, i)
                val = ("v-%d-%d-" % (self.wid, i)).encode() + b"x" * (i % 300)
                self.in_flight = key
                if c.set(key, val, noreply=False):
                    self.stored[key] = val
                if i % 7 == 3:
                    victim = "w%d-k%d" % (self.wid, i - 3)
                    self.in_flight = victim
                    if c.delete(victim, noreply=False):
                        self.deleted.add(victim)
                        self.stored.pop(victim, None)
                self.in_flight = None  # an unanswered incr only adds 1
                n = c.incr("ctr-%d" % self.wid, 1, noreply=False)
                if n is not None:
                    self.counter = int(n)
                i += 1
        except Exception:  # noqa: BLE001 - the kill ends the writer
            self.errors += 1


def run_kill_restart(extra, min_keys, want_snapshot):
    d = rt.tmpdir()
    node = rt.standalone(d, extra=extra).start()
    rt.wait_ready(node.port)
    stop = threading.Event()
    writers = [Writer(node.port, w, stop) for w in range(8)]
    for w in writers:
        w.start()
    rt.wait_until(lambda: sum(len(w.stored) for w in writers) >= min_keys,
                  60, "%d acknowledged writes" % min_keys)
    st = rt.stats(node.port)
    if want_snapshot:
        rt.wait_until(lambda: int(rt.stats(node.port)["ringmq_snapshots_taken"]) > 0,
                      30, "a snapshot")
    node.kill9()  # while the writers are still writing
    stop.set()
    for w in writers:
        w.join(10)
    batches = int(st["ringmq_batches"])
    cmds = int(st["ringmq_batched_cmds"])
    print("  before kill: %d commands in %d entries" % (cmds, batches))

    node.start()
    rt.wait_ready(node.port, timeout=60)
    c = Client(("127.0.0.1", node.port), timeout=10)
    after = rt.stats(node.port)
    if want_snapshot:
        rt.check(int(after["ringmq_snapshot_index"]) > 0,
                 "restart restored a snapshot: %r" % after["ringmq_snapshot_index"])
    lost = []
    checked = 0
    for w in writers:
        keys = list(w.stored)
        for off in range(0, len(keys), 100):
            chunk = keys[off:off + 100]
            got = c.get_many(chunk)
            for k in chunk:
                if k == w.in_flight:
                    continue  # a delete of it was cut off: either is right
                checked += 1
                if got.get(k) != w.stored[k]:
                    lost.append(k)
        for k in w.deleted:
            if c.get(k) is not None:
                lost.append("deleted " + k)
        n = c.get("ctr-%d" % w.wid)
        if w.counter is not None and (n is None or int(n) < w.counter):
            lost.append("counter %d: acked %s, now %r" % (w.wid, w.counter, n))
    rt.check(not lost, "%d acknowledged effects lost, e.g. %r" % (len(lost), lost[:5]))
    print("  %d acknowledged keys intact after kill -9" % checked)
    rt.check(node.stop() == 0, "clean stop")
    return cmds, batches


def test_kill9_restart_from_log():
    cmds, batches = run_kill_restart([], 2000, False)
    rt.check(cmds > batches, "group commit packed %d commands into %d entries" % (cmds, batches))


def test_kill9_restart_after_snapshot():
    run_kill_restart(["--snapshot-threshold", "64", "--snapshot-trailing", "16"],
                     3000, True)


def test_sigterm_restart_keeps_everything():
    d = rt.tmpdir()
    node = rt.standalone(d).start()
    rt.wait_ready(node.port)
    c = Client(("127.0.0.1", node.port))
    for i in range(500):
        c.set("s%d" % i, str(i).encode(), expire=0 if i % 2 else 3600, noreply=False)
    c.close()
    rt.check(node.stop() == 0, "clean stop")
    node.start()
    rt.wait_ready(node.port)
    c = Client(("127.0.0.1", node.port))
    got = c.get_many(["s%d" % i for i in range(500)])
    rt.check(len(got) == 500 and all(got["s%d" % i] == str(i).encode() for i in range(500)),
             "all 500 keys back after restart")
    node.stop()


if __name__ == "__main__":
    rt.run_tests([test_sigterm_restart_keeps_everything,
                  test_kill9_restart_from_log,
                  test_kill9_restart_after_snapshot])
