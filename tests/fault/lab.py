"""The fault lab: a ringmq cluster on five hosts made of network namespaces.

    root namespace: bridge <tag>br, 10.77.K.1 (the clients and the nemesis)
        |-- veth --> netns <tag>n1, 10.77.K.11: ringmq-node 1, router r1
        |-- veth --> netns <tag>n2, 10.77.K.12: ringmq-node 2, router r2
        ...                                     (one shard "s1" of 5 members)

Every host runs the same binaries with the same kind of cluster map as
scripts/local-cluster, on the same ports, each on its own address. Clients
run in the root namespace and reach the routers over the bridge; the
nemeses act inside the host namespaces:

  - partitions: an nftables set of source addresses dropped on input
    (table inet rqfault); the client address is never blocked;
  - packet loss: an nftables `numgen random` drop in the same table;
  - delay: an iptables NFQUEUE rule handing packets from peers to
    tests/fault/nfq_delay, which releases them N ms later (no netem here);
  - clock skew: every node runs under libfaketime with a timestamp file that
    is rewritten to move only that process's wall clock;
  - kill -9 / restart and SIGSTOP / SIGCONT of a node or router process;
  - a restart of a node with other flags (restart_node).

With standalone=True the lab also runs one standalone node (`ringmq-node
--standalone`, a single-member group of its own, no cluster, no router) in
the first host's namespace, serving memcached on STANDALONE_MC_PORT.

Ownership: a Lab owns its namespaces, bridge, processes and work directory
files; down() releases everything and is safe to call twice, after a
partial up(), and from a signal handler's cleanup path. cleanup_stale()
removes what a killed run left behind (names start with "rqf").
Errors: setup failures raise LabError with the failing command's output.
"""
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from email.utils import parsedate_to_datetime

N_HOSTS = 5
RAFT_PORT = 7210
RPC_PORT = 7101
# The spare shard (the reshard nemesis): a second node process on every
# host, members of shard SPARE_SHARD, which `ringmqctl shard add` brings
# into the map and `shard remove` takes out again. Each time it is added it
# is a new generation: new ids, empty data directories, the same ports.
SPARE_SHARD = "s2"
SPARE_RAFT_PORT = 7220
SPARE_RPC_PORT = 7102
SPARE_HTTP_PORT = 9202
MEMCACHED_PORT = 11211
STANDALONE_MC_PORT = 11311
AMQP_PORT = 5672
ROUTER_HTTP_PORT = 9101
NODE_HTTP_PORT = 9201
DELAY_QUEUE = 7
AMQP_USER = ("jepsen", "jepsen")  # clients are not on loopback: no guest
FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1")


class LabError(Exception):
    pass


def sh(args, check=True, timeout=20, input=None):
    """Run a command; raise LabError with its output when it fails."""
    try:
        r = subprocess.run(args, capture_output=True, text=True,
                           timeout=timeout, input=input)
    except subprocess.TimeoutExpired as e:
        raise LabError("timed out: %s" % " ".join(args)) from e
    if check and r.returncode != 0:
        raise LabError("%s: exit %d: %s" % (" ".join(args), r.returncode,
                                            (r.stderr or r.stdout).strip()))
    return r


# Who made each namespace and bridge: OWNERS/<name> holds the pid of the
# process that made it. The machine is shared (other people's labs and
# ctest runs use the same prefixes at the same time): cleanup_stale()
# removes only what a process that is gone made.
OWNERS = "/run/ringmq-lab/owners"


def claim(name):
    """Record that this process made namespace or bridge @name."""
    os.makedirs(OWNERS, exist_ok=True)
    with open(os.path.join(OWNERS, name), "w") as f:
        f.write("%d\n" % os.getpid())


def unclaim(name):
    try:
        os.unlink(os.path.join(OWNERS, name))
    except OSError:
        pass


def owner_alive(name):
    """True if a running process claimed @name (a pid reused since keeps
    a stale name: left alone, never a live lab removed)."""
    try:
        with open(os.path.join(OWNERS, name)) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return False   # made before owners were recorded, or by nobody
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(prefix="rqf"):
    """Remove namespaces and bridges a killed run left behind, and the
    processes still running inside those namespaces: those named @prefix*
    whose maker (claim()) is no longer running; another run's, alive,
    are left alone."""
    r = sh(["ip", "netns", "list"], check=False)
    for line in r.stdout.splitlines():
        ns = line.split()[0] if line.split() else ""
        if ns.startswith(prefix) and owner_alive(ns):
            print("lab: %s belongs to a running process: left alone" % ns,
                  file=sys.stderr)
        elif ns.startswith(prefix):
            pids = sh(["ip", "netns", "pids", ns], check=False).stdout.split()
            for p in pids:
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh(["ip", "netns", "del", ns], check=False)
            shutil.rmtree("/etc/netns/%s" % ns, ignore_errors=True)
            unclaim(ns)
    r = sh(["ip", "-o", "link", "show", "type", "bridge"], check=False)
    for line in r.stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(prefix) and not owner_alive(name):
            sh(["ip", "link", "del", name], check=False)
            unclaim(name)


def free_net_index(seed):
    """A net_index for Lab whose /24 (10.77.K.0) no interface uses yet, tried
    from @seed on: labs that run at the same time (ctest -j2) must not share
    a subnet."""
    used = sh(["ip", "-o", "-4", "addr"], check=False).stdout
    for k in range(200):
        idx = (seed + k) % 200 + 20
        if " 10.77.%d." % idx not in used:
            return idx
    raise LabError("no free 10.77.x.0/24")


def scenario_dirs(name):
    """For a scenario script run as `NAME BUILD_DIR [OUT_DIR]` as root:
    (build dir, a fresh out dir), or None after saying why (not root)."""
    if os.geteuid() != 0:
        print("%s: needs root" % name, file=sys.stderr)
        return None
    build = os.path.abspath(sys.argv[1])
    out = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(
        prefix="ringmq-%s-" % name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    return build, out


def bridge_up(name, ip_cidr):
    """A bridge in the root namespace with an address (the clients' side)."""
    claim(name)
    sh(["ip", "link", "add", name, "type", "bridge"])
    sh(["ip", "addr", "add", ip_cidr, "dev", name])
    sh(["ip", "link", "set", name, "up"])


def host_up(ns, veth, bridge, ip_cidr):
    """A network namespace @ns joined to @bridge by a veth pair (root end
    @veth, namespace end eth0 with @ip_cidr), loopback up."""
    claim(ns)
    sh(["ip", "netns", "add", ns])
    sh(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0",
        "netns", ns])
    sh(["ip", "link", "set", veth, "master", bridge])
    sh(["ip", "link", "set", veth, "up"])
    x = ["ip", "netns", "exec", ns]
    sh(x + ["ip", "addr", "add", ip_cidr, "dev", "eth0"])
    sh(x + ["ip", "link", "set", "eth0", "up"])
    sh(x + ["ip", "link", "set", "lo", "up"])


def group_status(ctl_bin, rpc_addr, timeout_ms=700):
    """{group name: {field: value}} as `ringmqctl status --format kv` prints
    it for the node at @rpc_addr, or {} when it does not answer."""
    try:
        r = sh([ctl_bin, "--node", rpc_addr, "--timeout", str(timeout_ms),
                "status", "--format", "kv"], check=False, timeout=5)
    except LabError:
        return {}
    out = {}
    for line in r.stdout.splitlines():
        kv = dict(t.split("=", 1) for t in line.split() if "=" in t)
        if "name" in kv:
            out[kv["name"]] = kv
    return out


def replace_flags(args, set_flags):
    """@args with each flag of @set_flags ({flag: value}) given that value:
    its earlier occurrences (flag and value) dropped, the new one last."""
    args = list(args)
    for flag, value in set_flags.items():
        while flag in args:
            k = args.index(flag)
            del args[k:k + 2]
        args += [flag, str(value)]
    return args


def faketime_lib():
    for p in FAKETIME_LIBS:
        if os.path.exists(p):
            return p
    return None


class Proc:
    """A ringmq process inside a host namespace, restartable with the same
    arguments; its log file is appended across restarts."""

    start_lock = threading.Lock()

    def __init__(self, ns, args, log_path, env=None):
        self.ns, self.args, self.log_path, self.env = ns, args, log_path, env
        self.retired = False
        self.p = None
        self.paused = False

    def start(self):
        """Start it unless it runs or was retired: the nemesis's repairs
        and the reshard driver's may both restart a process they killed,
        late (after the spare shard's nodes were stopped for good)."""
        with Proc.start_lock:
            if self.alive() or self.retired:
                return
            self._start()

    def retire(self):
        """Stop it for good: no later start() brings it back."""
        with Proc.start_lock:
            self.retired = True
        self.stop(timeout=5)

    def _start(self):
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.update(self.env or {})
        # `ip netns exec` execs the command after setns: the pid is ours
        self.p = subprocess.Popen(["ip", "netns", "exec", self.ns] + self.args,
                                  stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, env=env)
        log.close()
        self.paused = False

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            try:
                self.p.send_signal(sig)
            except ProcessLookupError:
                pass

    def kill9(self):
        if self.alive():
            self.signal(signal.SIGCONT)
            self.p.kill()
            self.p.wait()
        self.paused = False

    def pause(self):
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.signal(signal.SIGCONT)
        self.paused = False

    def stop(self, timeout=10):
        if not self.alive():
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


class Host:
    def __init__(self, lab, i):
        self.i = i                       # 1-based
        self.name = "n%d" % i
        self.ns = "%sn%d" % (lab.tag, i)
        self.veth = "%sv%d" % (lab.tag, i)
        self.ip = "%s.%d" % (lab.net, 10 + i)
        self.node = None
        self.router = None
        self.node2 = None                # the spare shard's node, if running
        self.clock_file = os.path.join(lab.dir, "clock-%s" % self.name)
        self.blocked = set()             # peer addresses dropped on input
        self.loss_pct = 0
        self.delay = None                # Proc of nfq_delay while delayed
        self.clock_offset_s = 0


class Lab:
    def __init__(self, build, workdir, net_index=77, tag="rqf",
                 node_flags=(), router_flags=(), faketime=True, log=print):
        self.build = os.path.abspath(build)
        self.dir = os.path.abspath(workdir)
        self.tag = tag
        self.net = "10.%d.%d" % (net_index // 256 + 77, net_index % 256)
        self.bridge = tag + "br"
        self.client_ip = self.net + ".1"
        self.node_flags = list(node_flags)
        self.router_flags = list(router_flags)
        self.log = log
        self.faketime = faketime_lib() if faketime else None
        if faketime and self.faketime is None:
            raise LabError("libfaketime missing (Debian package faketime)")
        self.hosts = [Host(self, i) for i in range(1, N_HOSTS + 1)]
        self.map_path = os.path.join(self.dir, "cluster.yaml")
        self.node_bin = os.path.join(self.build, "node", "ringmq-node")
        self.router_bin = os.path.join(self.build, "router", "ringmq-router")
        self.ctl_bin = os.path.join(self.build, "tools", "ringmqctl")
        self.nfq_bin = os.path.join(self.build, "tests", "fault", "nfq_delay")
        self._made_bridge = False
        self._made_ns = []
        self.node_env = {}               # per host name: the nodes' env
        self.spare_gen = 0               # generations of the spare shard
        self.spare_up = False            # its nodes are meant to run
        self.standalone = None           # Proc of the standalone node

    def procs(self, h):
        """The node processes on host @h: its s1 node, the spare's if any."""
        return [p for p in (h.node, h.node2) if p is not None]

    # ------------------------------------------------------------- network

    def _net_up(self):
        # Labs of one ctest run start side by side: whoever takes a /24
        # takes it under this lock, and a lab never shares one (its status
        # queries and faults would reach the other lab's hosts).
        with open("/run/ringmq-lab-net.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = sh(["ip", "-o", "-4", "addr"], check=False).stdout
            if " %s." % self.net in used:
                raise LabError("%s.0/24 is in use (another lab?): pick "
                               "another net_index (free_net_index)" % self.net)
            self._made_bridge = True
            bridge_up(self.bridge, self.client_ip + "/24")
        for h in self.hosts:
            self._made_ns.append(h.ns)
            host_up(h.ns, h.veth, self.bridge, h.ip + "/24")
            self._apply_filter(h)

    def _apply_filter(self, h):
        """Replace the host's nftables table in one transaction: partitions
        (blocked sources) and packet loss from peers."""
        rules = []
        if h.blocked:
            rules.append("ip saddr { %s } drop" % ", ".join(sorted(h.blocked)))
        if h.loss_pct > 0:
            rules.append("ip saddr %s.0/24 ip saddr != %s numgen random mod 100 "
                         "< %d drop" % (self.net, self.client_ip, h.loss_pct))
        text = ("table inet rqfault\ndelete table inet rqfault\n"
                "table inet rqfault {\n chain input {\n"
                "  type filter hook input priority 0; policy accept;\n%s\n }\n}\n"
                % "\n".join("  " + r for r in rules))
        sh(["ip", "netns", "exec", h.ns, "nft", "-f", "-"], input=text)

    # ----------------------------------------------------------- processes

    def _write_map(self, path=None, joining=None, spare=False):
        """The lab's cluster map at @path (default the nodes' map). With
        @joining: that host listed last with join: true, for ringmqctl
        member add (the nodes keep their own map: join matters only to a
        replica with an empty data directory)."""
        order = [h for h in self.hosts if h is not joining]
        if joining is not None:
            order.append(joining)
        lines = ["# written by tests/fault/lab.py", "epoch: 1", "shards:",
                 "  - name: s1", "    weight: 1", "    members:"]
        for h in order:
            lines.append("      - {id: %d, raft: %s:%d, rpc: %s:%d%s}"
                         % (h.i, h.ip, RAFT_PORT, h.ip, RPC_PORT,
                            ", join: true" if h is joining else ""))
        if spare:
            ids = self.spare_ids()
            lines += ["  - name: %s" % SPARE_SHARD, "    weight: 1",
                      "    members:"]
            for h in self.hosts:
                lines.append("      - {id: %d, raft: %s:%d, rpc: %s:%d}"
                             % (ids[h.i], h.ip, SPARE_RAFT_PORT, h.ip,
                                SPARE_RPC_PORT))
        lines.append("routers:")
        for h in self.hosts:
            lines.append("  - {name: r%d, memcached: %s:%d, amqp: %s:%d, "
                         "http: %s:%d}" % (h.i, h.ip, MEMCACHED_PORT, h.ip,
                                           AMQP_PORT, h.ip, ROUTER_HTTP_PORT))
        path = path or self.map_path
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def _make_procs(self):
        for d in ("data", "logs"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        users = os.path.join(self.dir, "amqp-users")
        with open(users, "w") as f:
            f.write("%s:%s\n" % AMQP_USER)
        for h in self.hosts:
            env = {}
            if self.faketime:
                with open(h.clock_file, "w") as f:
                    f.write("+0\n")
                # Only the wall clock moves (real skew); raft's timers run on
                # the monotonic clock. The file is read again every second.
                env = {"LD_PRELOAD": self.faketime,
                       "FAKETIME_TIMESTAMP_FILE": h.clock_file,
                       "FAKETIME_CACHE_DURATION": "1",
                       "DONT_FAKE_MONOTONIC": "1"}
            self.node_env[h.name] = env
            h.node = Proc(h.ns, [self.node_bin, "--cluster", self.map_path,
                                 "--id", str(h.i), "--data-dir",
                                 os.path.join(self.dir, "data", h.name),
                                 "--http", "%s:%d" % (h.ip, NODE_HTTP_PORT)]
                          + self.node_flags,
                          os.path.join(self.dir, "logs", h.name + ".log"), env)
            h.router = Proc(h.ns, [self.router_bin, "--cluster", self.map_path,
                                   "--name", "r%d" % h.i, "--amqp-users",
                                   users] + self.router_flags,
                            os.path.join(self.dir, "logs", "r%d.log" % h.i))

    def up(self, timeout=60, standalone=False):
        for b in (self.node_bin, self.router_bin, self.ctl_bin):
            if not os.access(b, os.X_OK):
                raise LabError("%s missing: run scripts/build" % b)
        os.makedirs(self.dir, exist_ok=True)
        self._net_up()
        self._write_map()
        self._make_procs()
        for h in self.hosts:
            h.node.start()
        for h in self.hosts:
            h.router.start()
        if standalone:
            self._start_standalone(timeout)
        self.wait_healthy(timeout)

    def _start_standalone(self, timeout):
        """The standalone node on the first host; returns once it answers
        memcached."""
        h = self.hosts[0]
        self.standalone = Proc(
            h.ns, [self.node_bin, "--standalone", "--data-dir",
                   os.path.join(self.dir, "data", "standalone"),
                   "--memcached", "%s:%d" % (h.ip, STANDALONE_MC_PORT),
                   "--amqp", "off"] + self.node_flags,
            os.path.join(self.dir, "logs", "standalone.log"))
        self.standalone.start()
        deadline = time.monotonic() + timeout
        while not self._mc_answers(h.ip, STANDALONE_MC_PORT):
            if time.monotonic() > deadline or not self.standalone.alive():
                raise LabError("standalone node not up (%s)"
                               % self.standalone.log_path)
            time.sleep(0.2)

    @staticmethod
    def _mc_answers(ip, port):
        try:
            with socket.create_connection((ip, port), timeout=1) as s:
                s.sendall(b"version\r\n")
                return s.recv(100).startswith(b"VERSION")
        except OSError:
            return False

    def down(self):
        for h in self.hosts:
            if h.delay is not None:
                h.delay.stop(timeout=3)
                h.delay = None
            for p in (h.router, h.node2, h.node):
                if p is not None:
                    try:
                        p.stop(timeout=5)
                    except OSError:
                        pass
        if self.standalone is not None:
            try:
                self.standalone.stop(timeout=5)
            except OSError:
                pass
        for ns in self._made_ns:
            sh(["ip", "netns", "del", ns], check=False)
            unclaim(ns)
        self._made_ns = []
        # A namespace goes away asynchronously, and with it our veth ends:
        # wait, so that a lab with the same names can start right after.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                sh(["ip", "link", "show", h.veth], check=False).returncode == 0
                for h in self.hosts):
            time.sleep(0.1)
        if self._made_bridge:
            sh(["ip", "link", "del", self.bridge], check=False)
            unclaim(self.bridge)
            self._made_bridge = False

    # ------------------------------------------------------------ queries

    def router_healthy(self, h, timeout=1.0):
        try:
            with urllib.request.urlopen("http://%s:%d/healthz"
                                        % (h.ip, ROUTER_HTTP_PORT),
                                        timeout=timeout) as r:
                return r.status == 200
        except Exception:  # noqa: BLE001 - any failure means not healthy
            return False

    def wait_healthy(self, timeout=60, hosts=None):
        hosts = hosts or self.hosts
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.router_healthy(h) for h in hosts):
                return True
            time.sleep(0.3)
        raise LabError("cluster not healthy after %ds (logs in %s/logs)"
                       % (timeout, self.dir))

    def group_status(self, h):
        return group_status(self.ctl_bin, "%s:%d" % (h.ip, RPC_PORT))

    def rpc_addr(self, h, proc):
        return "%s:%d" % (h.ip, SPARE_RPC_PORT if proc is h.node2 and
                          proc is not None else RPC_PORT)

    def leader_proc(self, group):
        """(host, node process) of the ready leader of @group, or (None,
        None). Both nodes of each host are asked (the spare shard's too).
        A paused or unreachable node does not answer and is not chosen."""
        for h in self.hosts:
            for p in self.procs(h):
                if not p.alive() or p.paused:
                    continue
                st = group_status(self.ctl_bin, self.rpc_addr(h, p)).get(group)
                if st and st.get("state") == "leader" and \
                        st.get("ready") == "true":
                    return h, p
        return None, None

    def leader(self, group):
        """The host whose node is the ready leader of @group, or None."""
        return self.leader_proc(group)[0]

    def ctl(self, args, timeout=60, input=None, cluster=None):
        """ringmqctl --cluster <the lab's map or @cluster> ARGS (the map
        file says where meta is: `map`, `shard`, `plan` get the map from
        the meta group; `owner` uses the file's ring)."""
        return sh([self.ctl_bin, "--cluster", cluster or self.map_path] +
                  list(args), check=False, timeout=timeout, input=input)

    def queue_where(self, queue):
        """(shard, gen, moving-to or None) from `ringmqctl queue where`
        (the meta group's directory), or None when it did not answer."""
        r = self.ctl(["--timeout", "2000", "--seconds", "20", "queue",
                      "where", queue], timeout=40)
        f = r.stdout.split()
        if r.returncode != 0 or len(f) < 3 or f[1] != "shard":
            return None
        gen = int(f[4]) if len(f) > 4 and f[3] == "gen" else None
        moving = f[6] if len(f) > 6 and f[5] == "moving-to" else None
        return f[2], gen, moving

    def queue_find(self, queue):
        """{shard: (state, {field: int})} from `ringmqctl queue find`: what
        each shard of the live map answers about @queue (state "holds",
        "moving", "moved-away", "none"; fields gen, ready, consumers for
        "holds"), or None when a shard did not answer."""
        r = self.ctl(["--timeout", "2000", "--seconds", "20", "queue",
                      "find", queue], timeout=60)
        if r.returncode != 0:
            return None
        out = {}
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) < 2:
                continue
            fields = {}
            for k in range(2, len(f) - 1, 2):
                try:
                    fields[f[k]] = int(f[k + 1])
                except ValueError:
                    pass
            out[f[0]] = (f[1], fields)
        return out

    # ------------------------------------------------------ spare shard

    def spare_ids(self, gen=None):
        gen = self.spare_gen if gen is None else gen
        return {h.i: 10 * gen + h.i for h in self.hosts}

    def spare_members(self):
        """--members for `shard add`: ID@RAFT@RPC of each spare node."""
        ids = self.spare_ids()
        return ",".join("%d@%s:%d@%s:%d" % (ids[h.i], h.ip, SPARE_RAFT_PORT,
                                            h.ip, SPARE_RPC_PORT)
                        for h in self.hosts)

    def start_spare(self, timeout=30):
        """A new generation of the spare shard's nodes, one per host, from
        a map that lists it after s1 (as scripts/local-cluster add-shard
        does): new ids, empty data directories. Returns once each answers
        its status RPC."""
        if self.spare_up:
            return
        self.spare_gen += 1
        ids = self.spare_ids()
        path = os.path.join(self.dir, "cluster-%s-g%d.yaml"
                            % (SPARE_SHARD, self.spare_gen))
        self._write_map(path, spare=True)
        for h in self.hosts:
            name = "%s-g%d-%s" % (SPARE_SHARD, self.spare_gen, h.name)
            h.node2 = Proc(h.ns, [self.node_bin, "--cluster", path, "--id",
                                  str(ids[h.i]), "--data-dir",
                                  os.path.join(self.dir, "data", name),
                                  "--http", "%s:%d" % (h.ip, SPARE_HTTP_PORT)]
                           + self.node_flags,
                           os.path.join(self.dir, "logs", name + ".log"),
                           self.node_env.get(h.name))
            h.node2.start()
        self.spare_up = True
        deadline = time.monotonic() + timeout
        for h in self.hosts:
            while not group_status(self.ctl_bin,
                                   "%s:%d" % (h.ip, SPARE_RPC_PORT)):
                if time.monotonic() > deadline:
                    raise LabError("spare node on %s not up after %ds"
                                   % (h.name, timeout))
                time.sleep(0.2)

    def stop_spare(self):
        """Stop the spare shard's nodes (after it left the map); their
        data directories go with the run's."""
        for h in self.hosts:
            if h.node2 is not None:
                h.node2.retire()
                h.node2 = None
        self.spare_up = False

    # ------------------------------------------------------------ faults

    def partition(self, components):
        """@components: for each host, the set of host indexes it can hear
        (itself included). Hosts not mentioned hear everyone."""
        for h in self.hosts:
            hear = components.get(h.i)
            h.blocked = set() if hear is None else {
                o.ip for o in self.hosts if o.i not in hear}
            self._apply_filter(h)

    def heal_partition(self):
        self.partition({})

    def set_loss(self, h, pct):
        h.loss_pct = pct
        self._apply_filter(h)

    def start_delay(self, h, delay_ms, jitter_ms=0):
        if h.delay is not None:
            return
        if not os.access(self.nfq_bin, os.X_OK):
            raise LabError("%s missing (libnetfilter-queue-dev)" % self.nfq_bin)
        h.delay = Proc(h.ns, [self.nfq_bin, "--queue", str(DELAY_QUEUE),
                              "--delay-ms", str(delay_ms), "--jitter-ms",
                              str(jitter_ms)],
                       os.path.join(self.dir, "logs", "delay-%s.log" % h.name))
        h.delay.start()
        time.sleep(0.2)  # bound to its queue before packets go there
        ipt = ["ip", "netns", "exec", h.ns, "iptables", "-A", "INPUT", "-s"]
        sh(ipt + [self.client_ip, "-j", "ACCEPT"])  # clients are not delayed
        sh(ipt + [self.net + ".0/24", "-j", "NFQUEUE", "--queue-num",
                  str(DELAY_QUEUE), "--queue-bypass"])

    def stop_delay(self, h):
        if h.delay is None:
            return
        sh(["ip", "netns", "exec", h.ns, "iptables", "-F", "INPUT"],
           check=False)
        h.delay.stop(timeout=3)
        h.delay = None

    def set_clock(self, h, offset_s):
        """Move node @h's wall clock by @offset_s (libfaketime rereads the
        file within a second)."""
        if not self.faketime:
            raise LabError("clock skew needs libfaketime")
        h.clock_offset_s = offset_s
        tmp = h.clock_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%+ds\n" % offset_s)
        os.replace(tmp, h.clock_file)

    def node_clock_offset(self, h, proc=None):
        """How far the wall clock of host @h's node @proc (default its s1
        node) is from ours, in whole seconds, from the Date header of its
        /healthz answer (libfaketime fakes time() too), or None when it
        does not answer."""
        port = SPARE_HTTP_PORT if proc is not None and proc is h.node2 \
            else NODE_HTTP_PORT
        try:
            with urllib.request.urlopen("http://%s:%d/healthz"
                                        % (h.ip, port), timeout=2) as r:
                date = r.headers.get("Date")
        except Exception:  # noqa: BLE001 - any failure: no answer
            return None
        if not date:
            return None
        return round(parsedate_to_datetime(date).timestamp() - time.time())

    def wait_clock(self, h, offset_s, proc=None, timeout=15):
        """Seconds until host @h's node @proc (default its s1 node) shows
        @offset_s on its wall clock (within 3 s: libfaketime rereads its
        file only every second or two, and at once on the first clock call
        after that), or None when it did not within @timeout."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            got = self.node_clock_offset(h, proc)
            if got is not None and abs(got - offset_s) < 3:
                return round(time.monotonic() - t0, 1)
            time.sleep(0.2)
        return None

    def restart_node(self, h, set_flags, timeout=30):
        """Stop node @h's s1 node process (SIGTERM), start it again with
        @set_flags ({flag: value}: each replaces that flag's earlier value
        in its arguments), and wait until each of its groups has applied
        at least what it had committed when it stopped (a node that did
        not answer then, killed by another fault or slow, at least until
        it answers for s1). Returns (seconds from its start until it
        answered, until it caught up or None, whether it was running)."""
        p = h.node
        rpc = self.rpc_addr(h, p)
        was_running = p.alive()
        before = {g: int(st.get("commit_index", 0)) for g, st in
                  group_status(self.ctl_bin, rpc).items()} or {"s1": 0}
        p.stop(timeout=10)
        p.args = replace_flags(p.args, set_flags)
        t0 = time.monotonic()
        p.start()
        answered = None
        while time.monotonic() - t0 < timeout:
            st = group_status(self.ctl_bin, rpc)
            if st and answered is None:
                answered = round(time.monotonic() - t0, 1)
            if st and all(g in st and int(st[g].get("last_applied", 0)) >= c
                          for g, c in before.items()):
                return answered, round(time.monotonic() - t0, 1), \
                    was_running
            time.sleep(0.2)
        return answered, None, was_running

    # ------------------------------------------------------- membership

    def member(self, op, h, seconds=20):
        """`ringmqctl member add|remove s1 <h>` from the clients' side, for
        every group of the shard. True when it finished, False otherwise
        (a fault in the way, or --seconds passed)."""
        cmap = self._write_map(
            os.path.join(self.dir, "cluster-join-%d.yaml" % h.i), joining=h)
        r = sh([self.ctl_bin, "--cluster", cmap, "--timeout",
                "2000", "--seconds", str(seconds), "member", op, "s1",
                str(h.i)], check=False, timeout=seconds + 30)
        return r.returncode == 0

    def heal_all(self):
        """Undo every fault: network, clocks, pauses, dead processes."""
        for h in self.hosts:
            self.stop_delay(h)
            h.loss_pct = 0
            h.blocked = set()
            self._apply_filter(h)
            if self.faketime and h.clock_offset_s != 0:
                self.set_clock(h, 0)
            for p in self.procs(h):
                if p.paused:
                    p.resume()
                if not p.alive():
                    p.start()
            if h.router.paused:
                h.router.resume()
            if not h.router.alive():
                h.router.start()
        # no fault kills the standalone node: dead, it is reported (run),
        # not started again
        if self.standalone is not None and self.standalone.paused:
            self.standalone.resume()

    def describe(self):
        return {"hosts": [{"name": h.name, "ip": h.ip} for h in self.hosts],
                "map": self.map_path}


if __name__ == "__main__":
    if sys.argv[1:] == ["--cleanup"]:
        cleanup_stale()
    else:
        print(json.dumps({"usage": "lab.py --cleanup"}))
