#!/usr/bin/python3
"""A wall clock that jumps must not freeze or hurry expiry (docs/internals.md,
"Determinism"): a standalone node under libfaketime (Debian package
faketime; only the wall clock moves, as real skew does) stores items with a
5 s TTL before, during and after its wall clock is an hour ahead for a
second or two (as long as libfaketime takes to see its file again). The item stored before is still there 3 s later (a
stamp an hour ahead would have expired it at once), and all three are gone
about 5 s after they were stored (a stamp an hour ahead kept by every
replica as the newest time would have kept them for an hour)."""
import os
import time

from pymemcache.client.base import Client

import ringmq_test as rt

LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1")
TTL = 5


def set_clock(path, port, offset_s):
    """Move the node's wall clock by @offset_s, and wait until it has
    (libfaketime reads the file again only every second or two): its
    memcached `stats` time is then within a few seconds of that."""
    with open(path + ".tmp", "w") as f:
        f.write("%+ds\n" % offset_s)
    os.replace(path + ".tmp", path)
    rt.wait_until(lambda: abs(int(rt.stats(port)["time"]) - time.time() -
                              offset_s) < 3,
                  timeout=10, what="the node's clock at %+d s" % offset_s)


def test_ttl_through_a_jump_ahead_and_back():
    lib = next((p for p in LIBS if os.path.exists(p)), None)
    rt.check(lib is not None, "libfaketime installed (scripts/deps --test)")
    d = rt.tmpdir("ringmq-clock-")
    clock = os.path.join(d, "clock")
    with open(clock, "w") as f:
        f.write("+0\n")
    env = dict(os.environ, LD_PRELOAD=lib, FAKETIME_TIMESTAMP_FILE=clock,
               FAKETIME_CACHE_DURATION="1", DONT_FAKE_MONOTONIC="1")
    # an ASan build wants its runtime first; libfaketime only wraps clock
    # calls, so the order does not matter here
    env["ASAN_OPTIONS"] = ":".join(
        o for o in (os.environ.get("ASAN_OPTIONS"),
                    "verify_asan_link_order=0") if o)
    n = rt.standalone(os.path.join(d, "data"), env=env).start()
    rt.wait_ready(n.port)
    c = Client(("127.0.0.1", n.port), timeout=5)
    stored = {}
    for key, offset in (("before", None), ("during", 3600), ("after", 0)):
        if offset is not None:
            set_clock(clock, n.port, offset)
        rt.check(c.set(key, b"v", expire=TTL, noreply=False),
                 "%s: STORED" % key)
        stored[key] = time.monotonic()
    rt.check(time.monotonic() - stored["before"] < TTL - 0.5,
             "the jump took %.1f s: too slow to tell" %
             (time.monotonic() - stored["before"]))
    rt.check(c.get("before") == b"v",
             "stored before the jump, still there %.1f s later" %
             (time.monotonic() - stored["before"]))
    # gone within the TTL plus the stamp clock's slew (1/8) and a margin
    deadline = stored["after"] + TTL * 9 / 8 + 1.5
    while time.monotonic() < deadline:
        time.sleep(0.2)
    for key in stored:
        rt.check(c.get(key) is None, "%s: expired %.1f s after it was "
                 "stored" % (key, time.monotonic() - stored[key]))
    c.close()
    n.stop()


if __name__ == "__main__":
    rt.run_tests([test_ttl_through_a_jump_ahead_and_back])
