#!/usr/bin/python3
"""Scaling a shard's replicas (docs/cluster.md#membership): a shard of three
nodes, one router, cache keys and confirmed persistent messages in it.

1. A fourth node joins: the map lists it with join: true, it starts on an
   empty data directory and waits unconfigured (no bootstrap); `ringmqctl
   member add s1 4` makes it a voter of s1, s1.mq and meta and records it
   in the cluster map the meta group holds (`ringmqctl map`: a new epoch);
   `member list` shows four voters; its replicas reach the leaders'
   digests.
2. The leader is removed (`member remove`: it hands leadership over first,
   the map drops it) and stopped; then another original member is killed
   with -9. The group (node 4 and one original) still has a majority:
   every acknowledged key and every confirmed message is read back through
   the router, and new writes are stored. The router was started with the
   three-node file and never restarted: it reaches node 4 because it
   follows the map in the meta group.
3. Refusals: adding a map member without join: true, and a shard or member
   the map lacks, are usage errors; a member whose node does not run is
   refused before any group changes; adding or removing twice succeeds.
"""
import os
import subprocess
import time

import pika
from pymemcache.client.base import Client

import amqp_tutorials as at
import ringmq_test as rt

HOST = "127.0.0.1"
ROUTER = os.path.abspath(os.path.join(rt.BUILD, "router", "ringmq-router"))
KEYS = 1500
MESSAGES = 200


class Shard:
    def __init__(self, n=4):
        self.dir = rt.tmpdir("ringmq-member-")
        self.raft = [rt.free_raft_port() for _ in range(n)]
        self.rpc = [rt.free_port() for _ in range(n)]
        self.mc = rt.free_port()
        self.amqp = rt.free_port()
        self.http = rt.free_port()
        self.nodes = {}
        self.router = None

    def write_map(self, name, ids, join=()):
        lines = ["epoch: 1", "shards:", "  - name: s1", "    weight: 1",
                 "    members:"]
        for i in ids:
            lines.append("      - {id: %d, raft: %s:%d, rpc: %s:%d%s}" % (
                i, HOST, self.raft[i - 1], HOST, self.rpc[i - 1],
                ", join: true" if i in join else ""))
        lines += ["routers:",
                  "  - {name: r1, memcached: %s:%d, amqp: %s:%d, http: %s:%d}"
                  % (HOST, self.mc, HOST, self.amqp, HOST, self.http)]
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start_node(self, i, cmap, extra=(), wait=True):
        args = ["--cluster", cmap, "--id", str(i),
                "--data-dir", os.path.join(self.dir, "n%d" % i),
                "--election-ms", "1000", "--heartbeat-ms", "100"] + list(extra)
        n = rt.Node(args, os.path.join(self.dir, "n%d.log" % i),
                    ready_port=self.rpc[i - 1])
        self.nodes[i] = n.start(wait=wait)
        return n

    def start_router(self, cmap):
        if self.router is not None and self.router.poll() is None:
            self.router.terminate()
            self.router.wait(20)
        log = open(os.path.join(self.dir, "r1.log"), "ab")
        self.router = subprocess.Popen([ROUTER, "--cluster", cmap, "--name", "r1"],
                                       stdout=log, stderr=log,
                                       stdin=subprocess.DEVNULL)
        log.close()
        rt._procs.append(self.router)
        rt.wait_port(self.mc, proc=self.router)
        at.wait_amqp_ready(HOST, self.amqp, timeout=60)

    def ctl(self, cmap, *args, check=True, timeout=120):
        out = subprocess.run([rt.CTL, "--cluster", cmap] + list(args),
                             capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError("ringmqctl %s: %d %s %s" %
                                 (args, out.returncode, out.stdout, out.stderr))
        return out

    def status(self, i):
        """{group: {field: value}} of node i, {} if it does not answer."""
        out = subprocess.run([rt.CTL, "--node", "%s:%d" % (HOST, self.rpc[i - 1]),
                              "status", "--format", "kv"],
                             capture_output=True, text=True, timeout=10)
        groups = {}
        for line in out.stdout.splitlines():
            kv = dict(f.split("=", 1) for f in line.split())
            groups[kv["name"]] = kv
        return groups

    def leader(self, group="s1"):
        for i, n in self.nodes.items():
            if n.alive() and self.status(i).get(group, {}).get("state") == "leader":
                return i
        return None


def live_epoch(s, cmap):
    """The epoch of the map the meta group holds."""
    first = s.ctl(cmap, "map").stdout.splitlines()[0].split()
    rt.check(first[0] == "epoch", first)
    return int(first[1])


def members(text):
    """member list output -> {group: {id: role}}."""
    res = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        res.setdefault(f[0], {})[int(f[1])] = f[2]
    return res


def wait_digests_equal(s, ids, groups=("s1", "s1.mq", "meta")):
    def same():
        st = {i: s.status(i) for i in ids}
        for g in groups:
            vals = {(st[i].get(g, {}).get("last_applied"),
                     st[i].get(g, {}).get("digest")) for i in ids}
            if len(vals) != 1 or None in next(iter(vals)):
                return False
        # ringmqctl asks for real digests (a poll without them gets 0s)
        return all(st[i]["s1"]["digest"] != "0" * 16 for i in ids)
    rt.wait_until(same, 60, "equal replica digests on %s" % (ids,), interval=0.5)


def test_scale_out_and_in():
    s = Shard()
    map3 = s.write_map("map3.yaml", [1, 2, 3])
    map4 = s.write_map("map4.yaml", [1, 2, 3, 4], join=[4])
    for i in (1, 2, 3):
        s.start_node(i, map3)
    rt.wait_until(lambda: s.leader("s1") and s.leader("s1.mq") and
                  s.leader("meta"), 60, "leaders")
    s.start_router(map3)

    mc = Client((HOST, s.mc), timeout=10)
    for k in range(KEYS):
        rt.check(mc.set("k%d" % k, b"v%d" % k), "set k%d" % k)
    conn = pika.BlockingConnection(at.params(HOST, s.amqp))
    ch = conn.channel()
    ch.queue_declare("scale", durable=True)
    ch.confirm_delivery()
    for m in range(MESSAGES):
        ch.basic_publish("", "scale", b"m%d" % m,
                         pika.BasicProperties(delivery_mode=2), mandatory=True)
    conn.close()

    # 1. node 4 joins
    s.start_node(4, map4)
    time.sleep(1.5)  # an unconfigured replica must not elect itself
    st4 = s.status(4)
    rt.check(st4["s1"]["state"] == "follower" and st4["s1"]["leader_id"] == "0",
             "node 4 before being added: %s" % st4["s1"])
    rt.check("waiting for a leader to add" in s.nodes[4].log(),
             "node 4 says it waits to be added")
    epoch0 = live_epoch(s, map3)
    out = s.ctl(map4, "member", "add", "s1", "4")
    rt.check(out.stdout.split("\n")[:3] == ["s1: member 4 is a voter",
                                            "s1.mq: member 4 is a voter",
                                            "meta: member 4 is a voter"],
             "member add output: %r" % out.stdout)
    listed = members(s.ctl(map4, "member", "list", "s1").stdout)
    for g in ("s1", "s1.mq", "meta"):
        rt.check(listed.get(g) == {1: "voter", 2: "voter", 3: "voter", 4: "voter"},
                 "members of %s: %s" % (g, listed.get(g)))
    wait_digests_equal(s, [1, 2, 3, 4])
    live = s.ctl(map3, "map").stdout
    rt.check(live_epoch(s, map3) == epoch0 + 2 and
             "s1         member 4 " in live and "meta       member 4 " in live,
             "the live map has member 4 in s1 and meta: %s" % live)
    again = s.ctl(map4, "member", "add", "s1", "4")  # idempotent
    rt.check("s1: member 4 is a voter" in again.stdout, again.stdout)
    rt.check(live_epoch(s, map3) == epoch0 + 2, "adding again changes no map")

    # 2. the leader leaves, another original dies: node 4 carries the quorum
    gone = s.leader("s1")
    out = s.ctl(map4, "member", "remove", "s1", str(gone))
    rt.check(out.returncode == 0 and "s1: member %d removed" % gone in out.stdout,
             out.stdout + out.stderr)
    listed = members(s.ctl(map4, "member", "list", "s1").stdout)
    for g in ("s1", "s1.mq", "meta"):
        rt.check(sorted(listed.get(g, {})) == sorted({1, 2, 3, 4} - {gone}),
                 "members of %s after removing %d: %s" % (g, gone, listed.get(g)))
    s.nodes[gone].stop()
    rest = sorted({1, 2, 3, 4} - {gone})
    map_after = s.write_map("map-after.yaml", rest, join=[4])
    live = s.ctl(map_after, "map").stdout
    rt.check("member %d " % gone not in live, "the live map dropped %d: %s"
             % (gone, live))
    want = "cluster map epoch %d" % live_epoch(s, map_after)
    rt.wait_until(lambda: want in open(os.path.join(s.dir, "r1.log")).read(),
                  30, "the router follows the map without a restart")
    victim = [i for i in rest if i != 4][0]
    s.nodes[victim].kill9()
    survivors = [i for i in rest if i != victim]
    rt.wait_until(lambda: s.leader("s1") in survivors and
                  s.leader("s1.mq") in survivors and s.leader("meta") in survivors,
                  60, "leaders among %s" % survivors)

    mc = Client((HOST, s.mc), timeout=10)
    missing = [k for k in range(KEYS)
               if mc.get("k%d" % k) != b"v%d" % k]
    rt.check(not missing, "keys lost: %s" % missing[:10])
    rt.check(mc.set("after", b"1") and mc.get("after") == b"1", "a new write")
    conn = pika.BlockingConnection(at.params(HOST, s.amqp))
    ch = conn.channel()
    got = set()
    while len(got) < MESSAGES:
        m, _, body = ch.basic_get("scale", auto_ack=True)
        if m is None:
            break
        got.add(body)
    conn.close()
    rt.check(got == {b"m%d" % m for m in range(MESSAGES)},
             "messages: %d of %d" % (len(got), MESSAGES))

    # 3. refusals and idempotence
    bad = s.ctl(map3, "member", "add", "s1", "4", check=False)
    rt.check(bad.returncode == 64 and "no member 4" in bad.stderr, bad.stderr)
    nojoin = s.write_map("nojoin.yaml", [1, 2, 3, 4])
    bad = s.ctl(nojoin, "member", "add", "s1", "4", check=False)
    rt.check(bad.returncode == 64 and "join: true" in bad.stderr, bad.stderr)
    bad = s.ctl(map4, "member", "add", "s9", "4", check=False)
    rt.check(bad.returncode == 64 and "no shard" in bad.stderr, bad.stderr)
    # a member whose node is not running is refused before the group
    # changes (raft would keep it as a spare)
    s.raft.append(rt.free_raft_port())
    s.rpc.append(rt.free_port())
    map5 = s.write_map("map5.yaml", rest + [5], join=[4, 5])
    bad = s.ctl(map5, "member", "add", "s1", "5", check=False)
    rt.check(bad.returncode == 2 and "does not answer" in bad.stderr,
             bad.stderr)
    listed = members(s.ctl(map5, "member", "list", "s1").stdout)
    rt.check(sorted(listed["s1"]) == rest, "members after the refusal: %s"
             % listed)
    out = s.ctl(map_after, "member", "remove", "s1", str(gone), "--seconds", "60")
    rt.check("s1: member %d removed" % gone in out.stdout, out.stdout)


if __name__ == "__main__":
    rt.run_tests([test_scale_out_and_in])
