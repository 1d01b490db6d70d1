#!/usr/bin/python3
"""The docker-compose topology without a container engine (issue 6,
done-when 2): the processes the image would start, with the image's start
command (docker/entrypoint.sh), the compose cluster map and the compose
host names, each "container" a network namespace with its own UTS host
name and its own /etc/hosts (ip netns exec mounts /etc/netns/NS/hosts):

    node1 node2 node3   (one shard, map docker/cluster.yaml by name)
    router1 router2     (memcached 11211, AMQP 5672, users file)

Checked through the routers with real clients: memcached set/get/delete
(python3-memcache) and an AMQP publish with confirm, get and ack (pika).
Then node2 is killed and comes back on a new IP address under the same
name with its data directory (a container re-created with its volume): it
rejoins its groups and catches up, and the routers go on serving.

Then the scaling procedure of docs/deploy.md with docker-compose.node4.yml:
node4 starts with docker/cluster-node4.yaml (join: true; node4 named by a
100-byte DNS name) on an empty volume, the routers are re-created with that map, `ringmqctl member add s1
4` (run in router1's container) makes it a voter of s1, s1.mq and meta;
node1 is removed (`member remove s1 1`) and stopped and node3 is killed:
node2 and node4 are a majority of {2, 3, 4}, and the smoke checks pass.

Needs root. Cleans up on exit, and removes what a killed run left behind
(namespaces named rqc*) before it starts.
  test_compose_topology.py BUILD_DIR
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "fault"))

from lab import (bridge_up, cleanup_stale, group_status, host_up,  # noqa: E402
                 sh)

NAMES = ["node1", "node2", "node3", "node4", "router1", "router2"]
# node4 joins under a name longer than a DNS label (63), as a pod's
# "<pod>.<service>.<namespace>.svc.cluster.local" can be
LONG_NODE4 = ("node4.ringmq-compose-scaling-check.a-namespace-with-a-long-name"
              ".svc.cluster.local")


class Topology:
    def __init__(self, build, work):
        self.build = os.path.abspath(build)
        self.work = work
        pid = os.getpid()
        self.tag = "rqc%x" % (pid % 0xfff)
        self.net = "10.78.%d" % (pid % 200 + 20)
        self.bridge = self.tag + "br"
        self.ips = {n: "%s.%d" % (self.net, 11 + i) for i, n in enumerate(NAMES)}
        self.procs = {}
        self.made = []
        self.map = os.path.join(TOP, "docker", "cluster.yaml")

    def ns(self, name):
        return "%s%s" % (self.tag, name[0] + name[-1])  # n1..n3, r1, r2

    def up_network(self):
        self.made.append(("link", self.bridge))
        bridge_up(self.bridge, self.net + ".1/24")
        for n in NAMES:
            self.made.append(("ns", self.ns(n)))
            host_up(self.ns(n), self.ns(n) + "v", self.bridge,
                    self.ips[n] + "/24")
        self.write_hosts()

    def write_hosts(self):
        """Compose's DNS: every service name resolves in every container
        (node4 also under LONG_NODE4)."""
        text = "127.0.0.1 localhost\n" + "".join(
            "%s %s%s\n" % (ip, n, " " + LONG_NODE4 if n == "node4" else "")
            for n, ip in self.ips.items())
        for n in NAMES:
            d = "/etc/netns/%s" % self.ns(n)
            os.makedirs(d, exist_ok=True)
            with open(d + "/hosts", "w") as f:
                f.write(text)

    def start(self, n):
        """`docker run` of the image's entrypoint with the compose
        service's environment and host name."""
        role = "router" if n.startswith("router") else "node"
        env = dict(os.environ)
        env.update({
            "PATH": ":".join([os.path.join(self.build, "node"),
                              os.path.join(self.build, "router"),
                              os.path.join(self.build, "tools"),
                              os.path.join(TOP, "docker"), env["PATH"]]),
            "RINGMQ_CLUSTER": self.map,
            "RINGMQ_DATA_DIR": os.path.join(self.work, "data", n),
        })
        if role == "router":
            env["RINGMQ_AMQP_USERS"] = os.path.join(TOP, "docker", "amqp-users")
        log = open(os.path.join(self.work, n + ".log"), "ab")
        self.procs[n] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(n), "unshare", "--uts", "sh", "-c",
             'hostname "$0" && exec entrypoint.sh "$1"', n, role],
            env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)
        log.close()

    def kill9(self, n):
        p = self.procs.pop(n)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop(self, n):
        p = self.procs.pop(n)
        p.send_signal(signal.SIGTERM)
        p.wait(20)

    def ctl(self, n, *args):
        """`docker compose exec n ringmqctl ...`"""
        return sh(["ip", "netns", "exec", self.ns(n),
                   os.path.join(self.build, "tools", "ringmqctl")] +
                  list(args), timeout=180)

    def healthy(self, n):
        try:
            with urllib.request.urlopen("http://%s:9100/healthz" % self.ips[n],
                                        timeout=1) as r:
                return r.status == 200
        except Exception:  # noqa: BLE001 - not yet
            return False

    def wait(self, what, pred, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.3)
        raise AssertionError("timed out waiting for %s (logs in %s)"
                             % (what, self.work))

    def down(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for kind, name in reversed(self.made):
            if kind == "ns":
                sh(["ip", "netns", "del", name], check=False)
                shutil.rmtree("/etc/netns/%s" % name, ignore_errors=True)
            else:
                sh(["ip", "link", "del", name], check=False)


def smoke(t, router, key):
    import memcache
    import pika

    mc = memcache.Client(["%s:11211" % t.ips[router]], socket_timeout=5)
    assert mc.set(key, "v-" + key), "memcached set through %s" % router
    assert mc.get(key) == "v-" + key, "memcached get through %s" % router
    mc.disconnect_all()
    params = pika.ConnectionParameters(
        host=t.ips[router], port=5672,
        credentials=pika.PlainCredentials("ringmq", "ringmq"),
        connection_attempts=1, socket_timeout=5, stack_timeout=15,
        blocked_connection_timeout=15)
    c = pika.BlockingConnection(params)
    ch = c.channel()
    ch.confirm_delivery()
    ch.queue_declare("smoke", durable=True)
    ch.basic_publish("", "smoke", key.encode(),
                     properties=pika.BasicProperties(delivery_mode=2))
    m, _, body = ch.basic_get("smoke")
    assert m is not None and body == key.encode(), "AMQP get through %s" % router
    ch.basic_ack(m.delivery_tag)
    c.close()


def main():
    if os.geteuid() != 0:
        print("test_compose_topology: needs root", file=sys.stderr)
        return 1
    cleanup_stale("rqc")  # a run killed by a ctest timeout
    work = tempfile.mkdtemp(prefix="ringmq-compose-")
    t = Topology(sys.argv[1], work)
    ok = False
    try:
        t.up_network()
        # any start order: routers first, then the nodes in reverse
        for n in ["router2", "router1", "node3", "node2", "node1"]:
            t.start(n)
        t.wait("routers healthy", lambda: t.healthy("router1") and
               t.healthy("router2"), 90)
        smoke(t, "router1", "a")
        smoke(t, "router2", "b")
        print("ok: memcached and AMQP through both routers", flush=True)

        # node2's container is re-created: new IP, same name, same volume
        t.kill9("node2")
        x = ["ip", "netns", "exec", t.ns("node2")]
        sh(x + ["ip", "addr", "del", t.ips["node2"] + "/24", "dev", "eth0"])
        t.ips["node2"] = t.net + ".99"
        sh(x + ["ip", "addr", "add", t.ips["node2"] + "/24", "dev", "eth0"])
        t.write_hosts()
        smoke(t, "router1", "c")  # a majority serves meanwhile
        t.start("node2")

        def caught_up():
            st = group_status(os.path.join(t.build, "tools", "ringmqctl"),
                              "%s:7101" % t.ips["node2"], 1000)
            return (len(st) == 3 and
                    all(g.get("state") in ("follower", "leader") and
                        g.get("leader_id", "0") != "0" for g in st.values()))

        t.wait("node2 back in its groups", caught_up, 60)
        smoke(t, "router2", "d")
        print("ok: node2 rejoined under its name from a new address",
              flush=True)

        # docs/deploy.md: scaling shard s1 with docker-compose.node4.yml's
        # map, node4 named by LONG_NODE4
        with open(os.path.join(TOP, "docker", "cluster-node4.yaml")) as f:
            text = f.read().replace('"node4:', '"%s:' % LONG_NODE4)
        assert LONG_NODE4 in text and len(LONG_NODE4) > 63
        t.map = os.path.join(work, "cluster-node4.yaml")
        with open(t.map, "w") as f:
            f.write(text)
        t.start("node4")
        for r in ("router1", "router2"):  # re-created with the new map
            t.stop(r)
            t.start(r)
        t.wait("routers healthy", lambda: t.healthy("router1") and
               t.healthy("router2"), 90)
        # member add asks node4 first: wait until it serves RPC (its
        # groups start before its listener, longer on a loaded machine)
        t.wait("node4 answering", lambda: len(group_status(
            os.path.join(t.build, "tools", "ringmqctl"),
            "%s:7101" % t.ips["node4"], 1000)) == 3, 60)
        out = t.ctl("router1", "--cluster", t.map, "member", "add", "s1", "4")
        assert out.stdout.split("\n")[:3] == [
            "s1: member 4 is a voter", "s1.mq: member 4 is a voter",
            "meta: member 4 is a voter"], out.stdout
        out = t.ctl("router1", "--cluster", t.map, "member", "remove", "s1",
                    "1")
        assert "s1: member 1 removed" in out.stdout, out.stdout
        t.stop("node1")
        t.kill9("node3")
        smoke(t, "router1", "e")
        smoke(t, "router2", "f")
        print("ok: node4 joined; nodes 2 and 4 serve without 1 and 3",
              flush=True)
        ok = True
    finally:
        t.down()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("logs kept in %s" % work, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
