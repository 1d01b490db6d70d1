#!/usr/bin/python3
"""The cluster issue's done-when 1-3, on a local cluster (scripts/local-cluster:
2 shards of 3 nodes, weights 1 and 2, 2 routers):

1. python-memcached with both routers as a weighted server list and pymemcache
   against one router store and read back 100,000 keys each; every key is on
   the shard the ring says; the shards hold keys in proportion to weights.
2. kill -9 of a shard leader during a write load: after an election the load
   goes on through the same routers, every acknowledged write is readable,
   the restarted node catches up and replica digests match.
3. kill -9 of a router: clients of the other router see nothing; the
   restarted router serves at once.
"""
import os
import random
import re
import signal
import subprocess
import threading
import time

import memcache
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError

import ringmq_test as rt

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(TOP, "scripts", "local-cluster")


def process_gone(pid):
    """True once every thread of @pid has exited. The main thread turns
    zombie first; the process's files, and so a node's data directory lock,
    are released only when its last thread (libuv's threadpool) is gone: a
    restart before that finds the directory in use."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        threads = os.listdir("/proc/%d/task" % pid)
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z" and len(threads) <= 1


class LocalCluster:
    def __init__(self):
        self.dir = rt.tmpdir("ringmq-lc-")
        # Shift every port (nodes' RPC, raft, HTTP; routers' memcached,
        # AMQP, HTTP) so the suite never needs the default ones.
        self.off = rt.claim_offset(
            list(range(7101, 7107)) +
            [7200 + 10 * i + k for i in range(1, 7) for k in range(3)] +
            list(range(9201, 9207)) +
            [11211, 11212, 5672, 5673, 9101, 9102])
        self.env = dict(os.environ, RINGMQ_PORT_OFFSET=str(self.off),
                        RINGMQ_BUILD_DIR=rt.BUILD)
        self.map = os.path.join(self.dir, "cluster.yaml")

    def mc_port(self, r):
        return 11210 + r + self.off

    def up(self):
        out = subprocess.run([SCRIPT, "up", self.dir], env=self.env,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError("local-cluster up failed: " + out.stdout + out.stderr)
        rt._cleanup_hooks.append(self.down)
        return self

    def down(self):
        subprocess.run([SCRIPT, "down", self.dir], env=self.env,
                       capture_output=True, timeout=60)

    def pids(self):
        res = {}
        with open(os.path.join(self.dir, "pids")) as f:
            for line in f:
                name, pid = line.split()
                res[name] = int(pid)
        return res

    def kill9(self, name):
        pid = self.pids()[name]
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
        os.kill(pid, signal.SIGKILL)
        rt.wait_until(lambda: process_gone(pid), 10, "the kill")
        return argv

    def restart(self, name, argv):
        log = open(os.path.join(self.dir, "logs", name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        rt._procs.append(p)
        with open(os.path.join(self.dir, "pids"), "a") as f:
            f.write("%s %d\n" % (name, p.pid))
        return p

    def ctl(self, *args, stdin=None, check=True, timeout=60):
        out = subprocess.run([rt.CTL, "--cluster", self.map] + list(args),
                             input=stdin, capture_output=True, text=True,
                             timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError("ringmqctl %s: %s %s" % (args, out.stdout, out.stderr))
        return out.stdout

    def replicas(self):
        """[(shard, node, state, leader, applied, digest)] from ringmqctl."""
        out = self.ctl("--timeout", "2000", "cluster", check=False)
        rows = []
        for line in out.splitlines()[2:]:
            f = line.split()
            if len(f) >= 10:
                rows.append((f[0], int(f[2]), f[4], int(f[5]), int(f[7]), f[9]))
            elif len(f) >= 5:
                rows.append((f[0], int(f[2]), f[4], 0, 0, ""))
        return rows

    def wait_nodes_ready(self):
        """Every node's /readyz says it serves (its groups have leaders)."""
        for node in range(1, 7):
            rt.wait_until(lambda: http_get(9200 + node + self.off,
                                           "/readyz")[0] == 200,
                          30, "node %d /readyz" % node)

    def leader_of(self, shard):
        for s, node, state, _, _, _ in self.replicas():
            if s == shard and state == "leader":
                return node
        return None

    def converged(self):
        rows = self.replicas()
        by = {}
        for s, node, state, _, applied, digest in rows:
            if state not in ("leader", "follower"):
                return False
            by.setdefault(s, set()).add((applied, digest))
        return len(by) == 2 and all(len(v) == 1 for v in by.values())

    def items(self, node_rpc_port, shard):
        out = subprocess.run([rt.CTL, "--node", "127.0.0.1:%d" % node_rpc_port,
                              "--group", shard, "status", "--format", "kv"],
                             capture_output=True, text=True, timeout=20).stdout
        kv = dict(t.split("=", 1) for t in out.split() if "=" in t)
        return int(kv["items"])


def owners(lc, keys):
    out = lc.ctl("owner", "-", stdin="\n".join(keys) + "\n")
    return dict(line.split() for line in out.splitlines())


def test_100k_keys_both_clients_weighted():
    lc = LocalCluster().up()
    p1, p2 = lc.mc_port(1), lc.mc_port(2)
    n = 100000
    # python-memcached, both routers, weighted as its users write it
    mc = memcache.Client([("127.0.0.1:%d" % p1, 1), ("127.0.0.1:%d" % p2, 2)])
    keys_a = ["pm:%06d" % i for i in range(n)]
    for off in range(0, n, 1000):
        failed = mc.set_multi({k: "v-" + k for k in keys_a[off:off + 1000]})
        rt.check(not failed, "python-memcached set_multi failed keys: %r" % failed[:5])
    got = {}
    for off in range(0, n, 1000):
        got.update(mc.get_multi(keys_a[off:off + 1000]))
    rt.check(len(got) == n and all(got[k] == "v-" + k for k in keys_a),
             "python-memcached reads back all %d keys (%d)" % (n, len(got)))
    mc.disconnect_all()
    # pymemcache against either router
    keys_b = ["py:%06d" % i for i in range(n)]
    for r, port in ((1, p1), (2, p2)):
        c = Client(("127.0.0.1", port), timeout=10)
        part = keys_b[r - 1::2]
        for off in range(0, len(part), 1000):
            failed = c.set_many({k: k.encode() for k in part[off:off + 1000]}, noreply=False)
            rt.check(not failed, "pymemcache set_many failed: %r" % failed[:5])
        c.close()
    for port in (p1, p2):  # both routers read every key
        c = Client(("127.0.0.1", port), timeout=10)
        got = {}
        for off in range(0, n, 1000):
            got.update(c.get_many(keys_b[off:off + 1000]))
        rt.check(len(got) == n and all(got[k] == k.encode() for k in keys_b),
                 "pymemcache via :%d reads back all %d keys (%d)" % (port, n, len(got)))
        c.close()

    # every key on the shard the ring says: per-shard counts equal the ring's
    own = owners(lc, keys_a + keys_b)
    want = {"s1": 0, "s2": 0}
    for k in keys_a + keys_b:
        want[own[k]] += 1
    have = {"s1": lc.items(7101 + lc.off, "s1"), "s2": lc.items(7104 + lc.off, "s2")}
    print("  ring says %r, shards hold %r" % (want, have))
    rt.check(have == want, "shards hold exactly the keys the ring gives them")
    share = want["s1"] / (2.0 * n)
    rt.check(abs(share - 1 / 3.0) < 0.03, "weight-1 shard holds ~1/3: %.4f" % share)
    # and a sample read straight from the shards: present on the owner only
    for k in random.sample(keys_b, 20):
        for shard, port in (("s1", 7101), ("s2", 7104)):
            out = subprocess.run([rt.CTL, "--node", ",".join("127.0.0.1:%d" % (port + i + lc.off) for i in range(3)),
                                  "--group", shard, "get", k], capture_output=True, text=True, timeout=20)
            rt.check((out.returncode == 0) == (own[k] == shard),
                     "%s on %s: rc %d, owner %s" % (k, shard, out.returncode, own[k]))
    lc.down()


class Load(threading.Thread):
    """A client writing distinct keys through one router, recording acks."""

    def __init__(self, port, name):
        super().__init__(daemon=True)
        self.port, self.name = port, name
        self.stop = threading.Event()
        self.acked = {}
        self.errors = 0
        self.ack_times = []

    def run(self):
        c = Client(("127.0.0.1", self.port), timeout=10, connect_timeout=5)
        i = 0
        while not self.stop.is_set():
            k = "%s:%07d" % (self.name, i)
            v = ("val-" + k).encode()
            try:
                if c.set(k, v, noreply=False):
                    self.acked[k] = v
                    self.ack_times.append(time.time())
            except Exception:  # noqa: BLE001 - SERVER_ERROR during failover
                self.errors += 1
                c.close()
                time.sleep(0.05)  # a dead router refuses at once: don't spin
                c = Client(("127.0.0.1", self.port), timeout=10, connect_timeout=5)
            i += 1
        c.close()


def test_kill_shard_leader_and_router():
    lc = LocalCluster().up()
    loads = [Load(lc.mc_port(r), "w%d%d" % (r, j)) for r in (1, 2) for j in range(3)]
    for l in loads:
        l.start()
    time.sleep(2)
    # --- kill -9 the leader of the heavier shard
    leader = lc.leader_of("s2")
    rt.check(leader is not None, "s2 has a leader")
    name = "n%d" % leader
    argv = lc.kill9(name)
    t_kill = time.time()
    rt.wait_until(lambda: all(any(t > t_kill + 0.5 for t in l.ack_times[-5:]) for l in loads),
                  30, "writes acknowledged again after the leader was killed")
    pause = min(max(t for t in l.ack_times if t > t_kill) for l in loads) - t_kill
    print("  killed %s; every client acked writes again within %.1fs" % (name, pause))
    time.sleep(1)
    lc.restart(name, argv)
    # --- kill -9 router r1 while r2's clients go on
    r2_errors = sum(l.errors for l in loads if l.name.startswith("w2"))
    r1_argv = lc.kill9("r1")
    time.sleep(2)
    r2_after = sum(l.errors for l in loads if l.name.startswith("w2"))
    rt.check(r2_after == r2_errors, "clients of r2 saw nothing while r1 was down (%d errors)" % (r2_after - r2_errors))
    t0 = time.time()
    lc.restart("r1", r1_argv)
    rt.wait_port(lc.mc_port(1), 10)
    c = Client(("127.0.0.1", lc.mc_port(1)), timeout=5)
    rt.check(c.set("after-restart", b"1", noreply=False), "restarted router serves")
    print("  restarted r1 served a write %.2fs after start" % (time.time() - t0))
    c.close()
    time.sleep(1)
    for l in loads:
        l.stop.set()
    for l in loads:
        l.join(30)
    acked = {}
    for l in loads:
        acked.update(l.acked)
    print("  %d writes acknowledged; client errors: %d via r1 (killed), %d via r2" %
          (len(acked), sum(l.errors for l in loads if l.name.startswith("w1")),
           sum(l.errors for l in loads if l.name.startswith("w2"))))
    rt.wait_until(lc.converged, 90, "every shard's replicas to converge", interval=0.5)
    c = Client(("127.0.0.1", lc.mc_port(2)), timeout=10)
    keys = list(acked)
    lost = []
    for off in range(0, len(keys), 500):
        got = c.get_many(keys[off:off + 500])
        lost += [k for k in keys[off:off + 500] if got.get(k) != acked[k]]
    c.close()
    rt.check(not lost, "%d acknowledged writes lost, e.g. %r" % (len(lost), lost[:5]))
    lc.down()


def set_ok(c, key, value):
    """A pymemcache set that says False for a SERVER_ERROR."""
    try:
        return c.set(key, value, noreply=False)
    except MemcacheServerError:
        return False


def http_get(port, path):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_epoch_checks_health_and_stats():
    lc = LocalCluster().up()
    key = next(k for k in ("k%d" % i for i in range(100)) if owners(lc, [k])[k] == "s2")
    c = Client(("127.0.0.1", lc.mc_port(1)), timeout=5)
    rt.check(c.set(key, b"v", noreply=False), "set through a router")
    # another epoch: the epoch is a hint (it also moves when members change),
    # the node serves the keys its shard owns
    with open(lc.map) as f:
        bumped = f.read().replace("epoch: 1", "epoch: 2")
    other = os.path.join(lc.dir, "epoch2.yaml")
    with open(other, "w") as f:
        f.write(bumped)
    out = subprocess.run([rt.CTL, "--cluster", other, "get", key],
                         capture_output=True, text=True, timeout=20)
    rt.check(out.returncode == 0 and "v" in out.stdout,
             "another epoch, an owned key: served: %r %r" % (out.stdout, out.stderr))
    # a key the shard does not own
    s1 = ",".join("127.0.0.1:%d" % (7101 + i + lc.off) for i in range(3))
    out = subprocess.run([rt.CTL, "--node", s1, "--group", "s1", "--epoch", "1",
                          "set", key, "x"], capture_output=True, text=True, timeout=20)
    rt.check(out.returncode != 0 and "not owned" in out.stderr,
             "s1 refuses a key of s2: %r" % out.stderr)
    # health and metrics, routers and nodes
    for port in (9101 + lc.off, 9102 + lc.off):
        status, body = http_get(port, "/healthz")
        rt.check(status == 200, "router /healthz: %d %s" % (status, body))
        status, body = http_get(port, "/metrics")
        rt.check(status == 200 and 'ringmq_router_requests_total{shard="s2"' in body,
                 "router /metrics")
    for node in range(1, 7):
        status, body = http_get(9200 + node + lc.off, "/healthz")
        rt.check(status == 200, "node %d /healthz: %d %s" % (node, status, body))
        status, body = http_get(9200 + node + lc.off, "/healthz?live")
        rt.check(status == 200 and body == "live\n",
                 "node %d /healthz?live: %d %s" % (node, status, body))
    status, body = http_get(9201 + lc.off, "/metrics")
    rt.check('ringmq_cache_items{group="s1"}' in body, "node /metrics")
    rt.check('ringmq_group_queued_commands{group="s1"} 0' in body and
             'ringmq_group_queued_bytes{group="s1"} 0' in body,
             "node /metrics shows the group's queue (admission control)")
    held = re.search(r'ringmq_group_log_memory_bytes\{group="s1"\} (\d+)', body)
    rt.check(held is not None and int(held.group(1)) > 0 and
             'ringmq_group_log_memory_entries{group="s1"}' in body,
             "node /metrics shows the Raft log held in memory")
    # router stats aggregate the shards
    st = rt.stats(lc.mc_port(2))
    for f in ("curr_items", "evictions", "limit_maxbytes", "shard:s1:curr_items",
              "shard:s2:leader_id", "shard:s2:retries", "router_epoch"):
        rt.check(f in st, "router stats lack %s" % f)
    # a shard without a majority: /healthz says so
    lc.kill9("n1")
    lc.kill9("n2")
    status, body = rt.wait_until(
        lambda: (lambda r: r if r[0] == 503 else None)(http_get(9101 + lc.off, "/healthz")),
        20, "router /healthz to report the dead shard")
    rt.check("s1" in body, "names the shard: %r" % body)
    # not ready, but alive: a liveness probe must not restart it
    status, body = http_get(9101 + lc.off, "/healthz?live")
    rt.check(status == 200 and body == "live\n",
             "router /healthz?live with a dead shard: %d %s" % (status, body))
    rt.wait_until(lambda: http_get(9203 + lc.off, "/healthz")[0] == 503, 20,
                  "node 3 without a majority to say it is not ready")
    status, body = http_get(9203 + lc.off, "/healthz?live")
    rt.check(status == 200, "node 3 /healthz?live: %d %s" % (status, body))
    lc.down()


if __name__ == "__main__":
    rt.run_tests([test_epoch_checks_health_and_stats,
                  test_100k_keys_both_clients_weighted,
                  test_kill_shard_leader_and_router])
