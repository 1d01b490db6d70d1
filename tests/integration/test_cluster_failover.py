#!/usr/bin/python3
"""Done-when 3 of the foundation issue: three ringmq-node processes on
loopback form one group. Writes through the leader's RPC commit on all three;
kill -9 of the leader during a write load elects a new leader, every
acknowledged write is readable from it, the killed node rejoins and catches
up (by snapshot, as it is far behind), and replica digests are equal.
"""
import os
import subprocess
import time

import ringmq_test as rt


class Cluster:
    def __init__(self, n=3, extra=()):
        self.dir = rt.tmpdir("ringmq-cluster-")
        self.rpc = [rt.free_port() for _ in range(n)]
        self.raft = [rt.free_raft_port() for _ in range(n)]
        members = []
        for i in range(n):
            members += ["--member", "%d@127.0.0.1:%d@127.0.0.1:%d" %
                        (i + 1, self.raft[i], self.rpc[i])]
        self.nodes = []
        self.last_status = {}
        for i in range(n):
            args = ["--id", str(i + 1),
                    "--data-dir", os.path.join(self.dir, "n%d" % (i + 1)),
                    "--rpc", "127.0.0.1:%d" % self.rpc[i],
                    "--election-ms", "1000", "--heartbeat-ms", "100",
                    "--group", "cache"] + members + list(extra)
            self.nodes.append(rt.Node(args, os.path.join(self.dir, "n%d.log" % (i + 1)),
                                      ready_port=self.rpc[i]))

    def addr(self, i):
        return "127.0.0.1:%d" % self.rpc[i]

    def all_addrs(self):
        return ",".join(self.addr(i) for i in range(len(self.nodes)))

    def start(self):
        for n in self.nodes:
            n.start()
        return self

    def ctl(self, i, *args, timeout=60, check=True):
        out = subprocess.run([rt.CTL, "--node", self.addr(i)] + list(args),
                             capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError("ringmqctl %s on node %d: %s %s" %
                                 (args, i + 1, out.stdout, out.stderr))
        return out

    def status(self, i):
        """{field: value} of the 'cache' group on node i, None if down."""
        if not self.nodes[i].alive():
            return None
        out = self.ctl(i, "status", "--format", "kv", timeout=10, check=False)
        self.last_status[i] = (out.returncode, out.stdout, out.stderr)
        if out.returncode != 0:
            return None
        st = {}
        for tok in out.stdout.split():
            if "=" in tok:
                k, v = tok.split("=", 1)
                st[k] = v
        return st

    def wait_leader(self, timeout=30):
        try:
            return rt.wait_until(self.leader, timeout, "a leader")
        except TimeoutError:
            for i, n in enumerate(self.nodes):
                print("  node %d status: %r" % (i + 1, self.last_status.get(i)))
                print("  node %d log:\n%s" % (i + 1, n.log()[-3000:]))
            raise

    def leader(self):
        for i, n in enumerate(self.nodes):
            st = self.status(i)
            if st and st.get("state") == "leader" and st.get("ready") in ("1", "true"):
                return i
        return None

    def digests(self, live):
        """(last_applied, digest) per live node."""
        res = []
        for i in live:
            line = self.ctl(i, "digest", timeout=10).stdout.split()
            res.append((int(line[1]), line[2]))
        return res

    def wait_converged(self, live, timeout=60):
        def same():
            d = self.digests(live)
            return d if len(set(d)) == 1 else None
        return rt.wait_until(same, timeout, "replicas to converge", interval=0.2)


def acked_keys(path):
    with open(path) as f:
        return [ln.split()[0] for ln in f if ln.strip()]


def test_three_nodes_commit_everywhere():
    c = Cluster().start()
    leader = c.wait_leader()
    acked = os.path.join(c.dir, "acked0")
    out = c.ctl(leader, "load", "--count", "3000", "--prefix", "a",
                "--value-size", "100", "--acked", acked)
    print("  " + out.stdout.strip().replace("\n", "\n  "))
    rt.check(len(acked_keys(acked)) == 3000, "all 3000 writes acknowledged")
    d = c.wait_converged(range(3))
    print("  converged at %s" % (d[0],))
    out = c.ctl(leader, "verify", "--acked", acked, check=False)
    rt.check(out.returncode == 0, "leader serves every write: " + out.stdout + out.stderr)
    # Equal (last_applied, digest) on all three: the followers hold exactly
    # the leader's state, every write included.
    for n in c.nodes:
        rt.check(n.stop() == 0, "clean stop")


def test_kill_leader_during_load():
    c = Cluster(extra=["--snapshot-threshold", "256", "--snapshot-trailing", "128"]).start()
    leader = c.wait_leader()
    acked = os.path.join(c.dir, "acked")
    # A load that follows the leader across the kill: only acknowledged
    # writes are listed in the acked file.
    load = subprocess.Popen([rt.CTL, "--node", c.all_addrs(), "load",
                             "--count", "30000", "--prefix", "k", "--value-size", "64",
                             "--concurrency", "32", "--acked", acked, "--seconds", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rt._procs.append(load)
    rt.wait_until(lambda: os.path.exists(acked) and os.path.getsize(acked) > 20000,
                  30, "load under way")
    before = c.status(leader)
    t_kill = time.time()
    c.nodes[leader].kill9()
    survivors = [i for i in range(3) if i != leader]
    new_leader = c.wait_leader()
    print("  leader %d killed; node %d leads after %.2fs" %
          (leader + 1, new_leader + 1, time.time() - t_kill))
    out, _ = load.communicate(timeout=120)
    print("  load: " + out.strip().replace("\n", "\n  load: "))
    rt.check(load.returncode == 0, "load completed across the failover")
    n_acked = len(acked_keys(acked))
    rt.check(n_acked >= 30000 * 0.99, "most writes acknowledged: %d" % n_acked)
    out = c.ctl(new_leader, "verify", "--acked", acked, check=False)
    rt.check(out.returncode == 0, "every acknowledged write readable from the new leader: " + out.stdout + out.stderr)
    c.wait_converged(survivors)
    # One entry per write now, so the killed node falls further behind than
    # the leader keeps in its log (trailing 128): it must get a snapshot.
    c.ctl(new_leader, "load", "--count", "1000", "--prefix", "late",
          "--concurrency", "1", "--acked", acked + ".late")

    c.nodes[leader].start()
    d = c.wait_converged(range(3), timeout=90)
    st = c.status(leader)
    print("  rejoined node: %s; converged at %s" % (st, d[0]))
    rt.check(int(st["snapshot_index"]) > int(before["last_index"]),
             "the rejoined node caught up by an installed snapshot (%s > %s)" %
             (st["snapshot_index"], before["last_index"]))
    out = c.ctl(new_leader, "verify", "--acked", acked + ".late", check=False)
    rt.check(out.returncode == 0, "late writes readable: " + out.stdout + out.stderr)
    for n in c.nodes:
        rt.check(n.stop() == 0, "clean stop")


if __name__ == "__main__":
    rt.run_tests([test_three_nodes_commit_everywhere, test_kill_leader_during_load])
