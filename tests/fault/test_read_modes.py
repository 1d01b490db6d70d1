#!/usr/bin/python3
"""What each read mode permits (docs/consistency.md), shown in the fault lab
with one targeted fault, and judged by the register checker.

The scenario, run once per mode on a fresh lab:
  1. write 1 to key k (through router A, on a host other than the leader's);
  2. SIGSTOP the cache group's leader L and cut L's host (L and its router
     R_L) off from the other hosts; wait until they elect a new leader;
  3. write 2 through router A: acknowledged by the new leader;
  4. a client reads k through R_L, which can reach only L; 0.5 s later L is
     resumed (still cut off).
A leader that wakes up from a pause does not know it was deposed until its
next timer tick; it reads its socket first. In `leader` mode it answers the
read from its state: 1, although write 2 finished before the read began (a
stale read; the checker reports the history not linearizable). In
`linearizable` mode the read must commit through the log, which L cannot do
without a majority: the read fails, and the history is linearizable.

The stale read depends on timing (a request waiting in L's socket when it
wakes), so leader mode gets up to 3 tries and must show it at least once;
linearizable mode must never show it. Needs root (network namespaces).

  test_read_modes.py BUILD_DIR [OUT_DIR]
"""
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import checkers  # noqa: E402
import history  # noqa: E402
import lab as labmod  # noqa: E402
from workloads import McConn, McError  # noqa: E402

KEY = "k"


def write(rec, ip, value, deadline_s=20):
    """Write until acknowledged (a failed attempt is recorded as info)."""
    deadline = time.monotonic() + deadline_s
    process = 0
    while time.monotonic() < deadline:
        rec.invoke(process, "write", value, key=KEY)
        try:
            c = McConn(ip, labmod.MEMCACHED_PORT, 8)
            reply = c.store("set", KEY, value)
            c.close()
            if reply == "STORED":
                rec.complete(process, "ok", "write", value, key=KEY)
                return
            raise McError(reply)
        except (OSError, McError):
            rec.complete(process, "info", "write", value, key=KEY)
            process += 10
            time.sleep(0.5)
    raise AssertionError("write %d never acknowledged" % value)


def scenario(build, out, mode, attempt):
    """One run; returns (value the read through the deposed leader saw or
    None, checker verdict)."""
    work = os.path.join(out, "%s-%d" % (mode, attempt))
    os.makedirs(work)
    pid = os.getpid()
    lab = labmod.Lab(build, work,
                     net_index=labmod.free_net_index(pid + attempt),
                     tag="rq%s%x%d" % (mode[1], pid % 0xff, attempt),
                     node_flags=["--read-mode", mode], faketime=False)
    rec = history.Recorder(os.path.join(work, "history.jsonl"))
    try:
        lab.up()
        leader = None
        for _ in range(50):
            leader = lab.leader("s1")
            if leader:
                break
            time.sleep(0.2)
        assert leader is not None, "no leader"
        others = [h for h in lab.hosts if h is not leader]
        write(rec, others[0].ip, 1)

        leader.node.pause()
        lab.partition({h.i: ({h.i} if h is leader else
                             {o.i for o in others}) for h in lab.hosts})
        rec.nemesis("start-pause+isolate", {"node": leader.name})
        deadline = time.monotonic() + 20
        while lab.leader("s1") is None:
            assert time.monotonic() < deadline, "no new leader"
            time.sleep(0.2)
        write(rec, others[0].ip, 2)

        seen = {}

        def read():
            rec.invoke(1, "read", None, key=KEY)
            try:
                c = McConn(leader.ip, labmod.MEMCACHED_PORT, 10)
                v, _ = c.get(KEY)
                c.close()
                seen["value"] = v
                rec.complete(1, "ok", "read", v, key=KEY)
            except (OSError, McError) as e:
                seen["error"] = repr(e)
                rec.complete(1, "fail", "read", None, key=KEY)

        t = threading.Thread(target=read)
        t.start()
        # inside the router's first attempt at L (1 s), so the read waits
        # in L's socket when L wakes
        time.sleep(0.5)
        leader.node.resume()
        rec.nemesis("resume", {"node": leader.name})
        t.join(15)
        lab.heal_partition()
        rec.nemesis("heal", None)
        lab.wait_healthy(60)
        rec.invoke(2, "read", None, key=KEY)
        c = McConn(others[1].ip, labmod.MEMCACHED_PORT, 8)
        final, _ = c.get(KEY)
        c.close()
        rec.complete(2, "ok", "read", final, key=KEY)
    finally:
        lab.down()
        rec.close()
    res = checkers.check_register(
        history.read_history(os.path.join(work, "history.jsonl")),
        os.path.join(build, "tests", "fault", "lincheck"))
    print("%s mode, try %d: read through the deposed leader: %s; final read "
          "%s; checker: %s" % (mode, attempt, seen, final,
                               "linearizable" if res["valid"] else
                               "NOT linearizable"), flush=True)
    assert final == 2, "acknowledged write 2 lost: final read %r" % (final,)
    return seen.get("value"), res["valid"]


def main():
    dirs = labmod.scenario_dirs("read-modes")
    if dirs is None:
        return 1
    build, out = dirs
    value, valid = scenario(build, out, "linearizable", 1)
    assert value != 1 and valid, "linearizable mode served a stale read"
    for attempt in (1, 2, 3):
        value, valid = scenario(build, out, "leader", attempt)
        if value == 1:
            assert valid is False, "the checker missed the stale read"
            print("ok: leader mode permits a stale read, linearizable mode "
                  "does not")
            return 0
    print("leader mode showed no stale read in 3 tries", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
