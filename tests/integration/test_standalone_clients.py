#!/usr/bin/python3
"""Done-when 1 of the foundation issue: real memcached clients (Debian's
python3-memcache and python3-pymemcache) against the standalone node give the
results memcached 1.6 gives.

Every scenario runs twice, once against Debian's memcached 1.6 and once
against ringmq-node --standalone, and the two transcripts must be equal. CAS
uniques differ between servers by design, so scenarios use them only through
the client (gets -> cas), and raw transcripts mask their digits.
"""
import errno
import os
import re
import socket
import subprocess
import threading
import time

import memcache  # python3-memcache
from pymemcache.client.base import Client as PymClient  # python3-pymemcache

import ringmq_test as rt


def start_memcached():
    port = rt.free_port()
    p = subprocess.Popen(["memcached", "-u", "root", "-l", "127.0.0.1", "-p",
                          str(port), "-U", "0", "-m", "64"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rt._procs.append(p)
    rt.wait_port(port, proc=p)
    return p, port


def scenario_python_memcache(port):
    c = memcache.Client(["127.0.0.1:%d" % port], cache_cas=True)
    out = []
    r = out.append
    r(c.set("a", "hello"))
    r(c.get("a"))
    r(c.add("a", "x"))
    r(c.add("b", "bee"))
    r(c.replace("b", "bee2"))
    r(c.replace("zz", "no"))
    r(c.append("a", " world"))
    r(c.prepend("a", ">> "))
    r(c.get("a"))
    r(c.append("missing", "x"))
    r(c.set("n", "10"))
    r(c.incr("n", 5))
    r(c.decr("n", 3))
    r(c.decr("n", 100))
    r(c.incr("missing"))
    r(c.set("n", str(2 ** 64 - 1)))
    r(c.incr("n", 2))
    r(c.delete("b"))
    r(c.delete("b"))
    r(c.get("b"))
    r(c.set("t", "v", time=100))
    r(c.touch("t", 1))
    r(c.touch("nope", 10))
    r(c.get_multi(["a", "n", "t", "nothere"]))
    r(c.set_multi({"m1": 1, "m2": "two", "m3": 3.5}))
    r(sorted(c.get_multi(["m1", "m2", "m3"]).items()))
    r(c.delete_multi(["m1", "m2"]))
    r(c.gets("a"))
    r(c.cas("a", "cas1"))
    r(c.get("a"))
    c.gets("a")
    c.set("a", "changed-under-us")  # a set clears the cached cas id
    r(c.cas("a", "cas2"))  # python-memcache falls back to set without a cas id
    r(c.get("a"))
    r(c.set("obj", {"x": [1, 2, 3]}))
    r(c.get("obj"))
    r(c.set("int", 42))
    r(c.get("int"))
    r(c.set("big", "x" * 500000))
    r(len(c.get("big") or ""))
    r(c.set("k" * 250, "maxkey"))
    r(c.get("k" * 250))
    r(c.set("neg", "v", time=-1))
    r(c.get("neg"))
    r(c.set("abs", "v", time=int(time.time()) - 5))
    r(c.get("abs"))
    r(c.set("short", "v", time=1))
    time.sleep(2.1)
    r(c.get("short"))
    r(c.get("t"))  # touched to 1 s above
    r(c.flush_all())
    r(c.get("a"))
    c.disconnect_all()
    return out


def scenario_pymemcache(port):
    c = PymClient(("127.0.0.1", port), default_noreply=False)
    out = []
    r = out.append
    r(c.set("p", b"1"))
    r(c.get("p"))
    r(c.add("p", b"2"))
    r(c.add("q", b"2"))
    r(c.replace("q", b"3"))
    r(c.replace("none", b"3"))
    r(c.append("q", b"4"))
    r(c.prepend("q", b"0"))
    r(c.get("q"))
    r(c.incr("p", 41))
    r(c.decr("p", 2))
    r(c.incr("nope", 1))
    r(c.set("s", b"abc", flags=7))
    try:
        c.incr("s", 1)
        r("no error")
    except Exception as e:  # noqa: BLE001 - the error text is compared
        r(type(e).__name__ + ": " + str(e))
    v, cas = c.gets("q")
    r(v)
    r(c.cas("q", b"new", cas))
    r(c.cas("q", b"again", cas))  # stale
    r(c.cas("zzz", b"x", b"1"))
    r(c.get("q"))
    r(c.delete("q"))
    r(c.delete("q", noreply=False))
    r(c.touch("p", 100))
    r(c.touch("missing", 100))
    r(sorted(c.get_many(["p", "s", "missing"]).items()))
    r(c.get_many([]))
    r(c.set_many({"x1": b"1", "x2": b"2"}))
    r(sorted(c.gets_many(["x1", "x2"]).keys()))
    r(c.set("nr", b"v", noreply=True))
    r(c.get("nr"))
    r(c.gat("p", 1000) if hasattr(c, "gat") else "nogat")
    r(c.version() is not None)
    r(c.flush_all())
    r(c.get("p"))
    r(c.set("exp", b"v", expire=1))
    time.sleep(2.1)
    r(c.get("exp"))
    c.close()
    return out


# Raw requests, each answered by both servers; cas digits are masked.
RAW = [
    b"set a 5 0 3\r\nabc\r\n",
    b"get a\r\n",
    b"gets a\r\n",
    b"get a b a\r\n",
    b"append a 0 0 2\r\nde\r\n",
    b"prepend a 0 0 1\r\nz\r\n",
    b"get a\r\n",
    b"incr a 1\r\n",
    b"set n 0 0 2\r\n10\r\n",
    b"incr n 18446744073709551615\r\n",
    b"decr n 100\r\n",
    b"incr n abc\r\n",
    b"incr n -1\r\n",
    b"decr nokey 1\r\n",
    b"touch a 10\r\n",
    b"touch nokey 10\r\n",
    b"gat 10 a\r\n",
    b"gats 10 a nokey\r\n",
    b"delete a\r\n",
    b"delete a\r\n",
    b"delete a 0\r\n",
    b"delete a 5\r\n",
    b"bogus command\r\n",
    b"set k 0 0 -1\r\n",
    b"set k 0 0 abc\r\n",
    b"set k 0 0\r\n",
    b"set k 0 0 3\r\nabcd\r\n",
    b"set " + b"x" * 251 + b" 0 0 1\r\nx\r\n",
    b"get " + b"x" * 251 + b"\r\n",
    b"cas k 0 0 1 99\r\nx\r\n",
    b"set k 0 0 1\r\nx\r\n",
    b"cas k 0 0 1 1\r\ny\r\n",
    b"set nr 0 0 1 noreply\r\nx\r\nget nr\r\n",
    b"incr n 1 noreply\r\nget n\r\n",
    b"set p1 0 0 1\r\n1\r\nset p2 0 0 1\r\n2\r\nget p1 p2\r\ndelete p1\r\nget p1 p2\r\n",
    b"verbosity 1\r\n",
    b"flush_all\r\n",
    b"get p2\r\n",
    b"flush_all 0\r\n",
    b"flush_all noreply\r\nget p2\r\n",
    b"\r\n",
    b"GET a\r\n",
]


def raw_transcript(port):
    out = []
    for req in RAW:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(req)
            s.shutdown(socket.SHUT_WR)
            data = b""
            s.settimeout(2)
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except socket.timeout:
                pass
        data = re.sub(rb"(VALUE \S+ \d+ \d+) \d+", rb"\1 <cas>", data)
        out.append((req[:60], data))
    return out


def compare(name, fn):
    mc, mport = start_memcached()
    try:
        expected = fn(mport)
    finally:
        mc.kill()
        mc.wait()
    node = rt.standalone(rt.tmpdir()).start()
    rt.wait_ready(node.port)
    rt.mc_command(node.port, b"delete __ringmq_ready\r\n")
    try:
        got = fn(node.port)
    finally:
        node.stop()
    diffs = [(i, e, g) for i, (e, g) in enumerate(zip(expected, got)) if e != g]
    for i, e, g in diffs:
        print("  %s step %d: memcached %r, ringmq %r" % (name, i, e, g))
    rt.check(len(expected) == len(got), "transcript lengths differ")
    rt.check(not diffs, "%d differences from memcached" % len(diffs))


def test_python_memcache_matches_memcached():
    compare("python-memcache", scenario_python_memcache)


def test_pymemcache_matches_memcached():
    compare("pymemcache", scenario_pymemcache)


def test_raw_protocol_matches_memcached():
    compare("raw", raw_transcript)


def test_memcached_stats_fields():
    node = rt.standalone(rt.tmpdir()).start()
    rt.wait_ready(node.port)
    st = rt.stats(node.port)
    for field in ("pid", "uptime", "time", "version", "curr_connections",
                  "total_connections", "cmd_get", "cmd_set", "get_hits",
                  "get_misses", "curr_items", "bytes", "evictions",
                  "limit_maxbytes"):
        rt.check(field in st, "stats lacks %s" % field)
    rt.check(int(st["cmd_set"]) >= 1, "cmd_set counts the readiness probe")
    rt.check(node.stop() == 0, "clean exit on SIGTERM")
    rt.check("stopped" in node.log(), "logs its stop")


def test_help_documents_flags():
    out = subprocess.run([rt.NODE, "--help"], capture_output=True, text=True,
                         timeout=10)
    rt.check(out.returncode == 0, "--help exits 0")
    for flag in ("--standalone", "--data-dir", "--memcached", "--rpc",
                 "--config", "--memory-limit", "--max-item-size"):
        rt.check(flag in out.stdout, "--help lacks %s" % flag)


def test_unusable_data_dir():
    d = rt.tmpdir()
    blocker = d + "/file"
    open(blocker, "w").close()
    out = subprocess.run([rt.NODE, "--standalone", "--data-dir", blocker + "/x",
                          "--memcached", "127.0.0.1:%d" % rt.free_port()],
                         capture_output=True, text=True, timeout=20)
    rt.check(out.returncode != 0, "fails on an unusable data dir")
    rt.check("data directory" in out.stderr, "says why: %r" % out.stderr)


def test_data_dir_lock():
    """A second node on a data directory in use fails, after waiting a few
    seconds for the lock; a node whose predecessor releases the lock within
    them starts (a restart right after kill -9: the lock goes with the
    killed process's last thread)."""
    import fcntl
    d = rt.tmpdir()
    os.makedirs(d + "/data")
    holder = open(d + "/data/LOCK", "w")
    fcntl.flock(holder, fcntl.LOCK_EX)
    t0 = time.time()
    out = subprocess.run([rt.NODE, "--standalone", "--data-dir", d + "/data",
                          "--memcached", "127.0.0.1:%d" % rt.free_port(),
                          "--amqp", "off"],
                         capture_output=True, text=True, timeout=30)
    took = time.time() - t0
    rt.check(out.returncode != 0 and "in use" in out.stderr,
             "a held lock: %d %r" % (out.returncode, out.stderr))
    rt.check(4 <= took < 15, "waited for the lock before failing: %.1fs" % took)
    node = rt.standalone(d + "/data")
    releaser = threading.Timer(1.5, holder.close)  # closing drops the lock
    releaser.start()
    node.start()
    rt.wait_ready(node.port)
    releaser.join()
    rt.check(node.stop() == 0, "the node that waited serves and stops")


def test_garbage_input():
    """Malformed input gets memcached's error or a closed connection; the
    node keeps serving and exits cleanly (under ASan: without leaks)."""
    import random
    node = rt.standalone(rt.tmpdir()).start()
    rt.wait_ready(node.port)
    cases = [
        b"set k 0 0 4294967296\r\n" + b"x" * 1000,
        b"set k 0 0 18446744073709551616\r\nx\r\n",
        b"\x80\x01\x00\x05" + b"\x00" * 20,
        b"get " + b"k " * 200000,
        b"set " + b"y" * 5000,
        b"set k 0 0 5\r\nabc",  # truncated data block, then close
        b"incr \x01\x02 1\r\n",
        b"\r\n" * 1000,
    ]
    rnd = random.Random(1234)
    cases += [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 4000)))
              for _ in range(40)]
    for data in cases:
        try:
            with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(5)
                while s.recv(65536):
                    pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        except OSError as e:
            # The node may close (reset) the connection before our
            # shutdown(): that is one of the allowed answers.
            if e.errno != errno.ENOTCONN:
                raise
    rt.check(rt.mc_command(node.port, b"set after 0 0 2\r\nok\r\n") == b"STORED\r\n",
             "still serving after garbage")
    rt.check(node.stop() == 0, "clean exit after garbage: " + node.log()[-2000:])


if __name__ == "__main__":
    rt.run_tests([test_help_documents_flags, test_unusable_data_dir,
                  test_data_dir_lock,
                  test_garbage_input,
                  test_memcached_stats_fields,
                  test_raw_protocol_matches_memcached,
                  test_python_memcache_matches_memcached,
                  test_pymemcache_matches_memcached])
