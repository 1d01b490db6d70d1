#!/usr/bin/python3
"""Resharding while serving (docs/cluster.md, "Adding, removing and
reweighting shards"), on a local cluster (scripts/local-cluster: shards s1
weight 1 and s2 weight 2 of 3 nodes each, 2 routers), with a verifying
memcached load through both routers all along:

1. `local-cluster add-shard s3 1`: three new nodes, `ringmqctl shard add`;
   s3 then holds its share of the keys (1/4, within 20%).
2. `ringmqctl shard weight s2 1` started slowly (--rate), killed with -9
   in the middle of a move, `plan status` shows the plan, and the same
   command run again resumes and finishes it.
3. `local-cluster remove-shard s3`: its keys go back to s1 and s2, its
   nodes stop. (s1 and s2 cannot leave: s1 hosts the meta group, and both
   hold the queues of the first map; test_refusals checks both refusals.)

Then every acknowledged write reads back its last acknowledged value through
both routers, deleted keys stay deleted, writes whose outcome the client
did not learn read back as the old or the new value, and every replica of
every shard holds exactly the keys the final ring gives it (no leftovers on
the old owners). Client errors are counted and reported.

An AMQP load runs through both routers all along too: QUEUES durable queues,
one publisher per router (pika, confirm_delivery, persistent messages with
unique bodies, mandatory) and one consumer per router on every queue
(manual acks). After the moves the publishers stop and the consumers drain:
every confirmed message was consumed (redeliveries allowed, a duplicate
must be marked redelivered), nothing else was (a body names its queue; one
whose publish failed may or may not come), the queues are empty. Queues
stay where the queue ring (the first map's shards, s1:1 s2:2) puts them:
the queue names are picked (`ringmqctl owner` on the first map and on the
map with s3) so that two thirds of them are ones the key ring would give
s3 once it joined. Where each queue is, is observed before the load and
after the drain: PROBE confirmed messages in the queue show up as ready
messages (status items of "<shard>.mq", on every replica) of exactly one
shard, the queue ring's. While s3 is in the map its queue group holds no
ready message. A queue placed elsewhere during the moves would likely show
in the load as well (messages missing their consumers, or gone with s3).

Once both loads stopped and the queues are deleted, the cluster is idle
(issue 16's done-when): from 10 s after the last client left, no process of
it (six nodes, two routers) writes a byte to disk over IDLE_WINDOW seconds
(write_bytes of /proc/PID/io). Every queue group's leader used to write an
entry a second for each router's AMQP tick (EXPIRE), even with nothing to
expire.
"""
import os
import random
import signal
import subprocess
import threading
import time

import pika
from pymemcache.client.base import Client

import amqp_tutorials as at
import ringmq_test as rt

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(TOP, "scripts", "local-cluster")
STATIC = 10000      # keys written once before the moves, never changed
THREADS = 4         # load threads, two per router, each with its own keys
KEYS_PER_THREAD = 2500
VALUE = 100         # bytes
HOST = "127.0.0.1"
QUEUES = 6          # durable queues of the AMQP load
PREFETCH = 20       # per consumer channel
PROBE = 7           # messages a placement probe puts in a queue


class Cluster:
    def __init__(self):
        self.dir = rt.tmpdir("ringmq-reshard-")
        # RINGMQ_PORT_OFFSET=N: N, N+100, ... (a cluster just stopped
        # leaves its ports in TIME_WAIT); else a random free offset
        fixed = os.environ.get("RINGMQ_PORT_OFFSET")
        # every port of nodes 1-9 and both routers free, and claimed
        self.off = rt.claim_offset(
            [7100 + i for i in range(1, 10)] +
            [7200 + 10 * i + k for i in range(1, 10) for k in range(3)] +
            [9200 + i for i in range(1, 10)] +
            [11211, 11212, 5672, 5673, 9101, 9102],
            int(fixed) if fixed else None)
        self.env = dict(os.environ, RINGMQ_PORT_OFFSET=str(self.off),
                        RINGMQ_BUILD_DIR=rt.BUILD)
        self.map = os.path.join(self.dir, "cluster.yaml")

    def script(self, *args, timeout=120):
        t0 = time.time()
        out = subprocess.run([SCRIPT] + list(args), env=self.env,
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise AssertionError("local-cluster %s: %s %s" %
                                 (args, out.stdout, out.stderr))
        return out.stdout, time.time() - t0

    def write_bytes(self):
        """{name: write_bytes of /proc/PID/io} of every process of the
        cluster still running (a restarted one is listed again, later)."""
        pids = {}
        with open(os.path.join(self.dir, "pids")) as f:
            for line in f:
                name, pid = line.split()
                pids[name] = int(pid)
        res = {}
        for name, pid in pids.items():
            try:
                with open("/proc/%d/io" % pid) as f:
                    io = dict(line.split(": ")
                              for line in f.read().splitlines())
            except (FileNotFoundError, ProcessLookupError):
                continue  # stopped (s3's nodes)
            res[name] = int(io["write_bytes"])
        return res

    def up(self):
        self.script("up", self.dir)
        rt._cleanup_hooks.append(self.down)
        return self

    def down(self):
        subprocess.run([SCRIPT, "down", self.dir], env=self.env,
                       capture_output=True, timeout=60)

    def ctl(self, *args, stdin=None, check=True, timeout=60, cluster=None):
        out = subprocess.run([rt.CTL, "--cluster", cluster or self.map] + list(args),
                             input=stdin, capture_output=True, text=True,
                             timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError("ringmqctl %s: rc %d %s %s" %
                                 (args, out.returncode, out.stdout, out.stderr))
        return out.stdout

    def mc_port(self, r):
        return 11210 + r + self.off

    def amqp_port(self, r):
        return 5671 + r + self.off

    def node_member(self, nid):
        """(id, raft, rpc) of node @nid as scripts/local-cluster gives it."""
        return (nid, "127.0.0.1:%d" % (7200 + 10 * nid + self.off),
                "127.0.0.1:%d" % (7100 + nid + self.off))

    def live_map(self):
        """{shard: (weight, [(id, raft, rpc)])} in map order, from the meta
        group."""
        shards = {}
        for line in self.ctl("map").splitlines():
            f = line.split()
            if f[0] == "shard":
                shards[f[1]] = (int(f[3]), [])
            elif len(f) >= 7 and f[1] == "member" and f[0] in shards:
                shards[f[0]][1].append((int(f[2]), f[4], f[6]))
        return shards

    def owners(self, keys, shards):
        """The owner of each key by the ring of @shards (a live map)."""
        path = os.path.join(self.dir, "live.yaml")
        lines = ["epoch: 1", "shards:"]
        for name, (weight, members) in shards.items():
            lines += ["  - name: %s" % name, "    weight: %d" % weight,
                      "    members:"]
            lines += ["      - {id: %d, raft: %s, rpc: %s}" % m for m in members]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        out = self.ctl("owner", "-", stdin="\n".join(keys) + "\n", cluster=path)
        return dict(line.split() for line in out.splitlines())

    def items(self, rpc, shard):
        out = subprocess.run([rt.CTL, "--node", rpc, "--group", shard, "status",
                              "--format", "kv"], capture_output=True, text=True,
                             timeout=20).stdout
        kv = dict(t.split("=", 1) for t in out.split() if "=" in t)
        return int(kv["items"]) if "items" in kv else None


class Load(threading.Thread):
    """Sets, deletes and checking gets of its own keys through one router.
    model[key]: the value last acknowledged (None: deleted); a key whose
    last operation failed (outcome unknown) is in maybe[key] with the set
    of values it may read back, until an acknowledged write settles it."""

    def __init__(self, port, n):
        super().__init__(daemon=True)
        self.port, self.n = port, n
        self.keys = ["w%d:%05d" % (n, i) for i in range(KEYS_PER_THREAD)]
        self.model = {}
        self.maybe = {}
        self.stop = threading.Event()
        self.ops = self.errors = 0
        self.error_kinds = {}
        self.error_times = []
        self.error_log = []
        self.bad_reads = []
        self.rng = random.Random(n)

    def client(self):
        return Client(("127.0.0.1", self.port), timeout=10, connect_timeout=5)

    def preload(self):
        c = self.client()
        for off in range(0, len(self.keys), 500):
            batch = {k: self.value(k, 0) for k in self.keys[off:off + 500]}
            rt.check(not c.set_many(batch, noreply=False), "preload")
            self.model.update(batch)
        c.close()

    def value(self, key, version):
        v = ("%s/%d/" % (key, version)).encode()
        return v + b"x" * (VALUE - len(v))

    def allowed(self, key):
        return self.maybe.get(key, {self.model.get(key)})

    def run(self):
        c = self.client()
        version = 0
        while not self.stop.is_set():
            key = self.rng.choice(self.keys)
            r = self.rng.random()
            self.ops += 1
            try:
                if r < 0.6:
                    version += 1
                    v = self.value(key, version)
                    before = self.allowed(key)
                    self.maybe[key] = before | {v}  # until acknowledged
                    rt.check(c.set(key, v, noreply=False), "set stored")
                    self.model[key] = v
                    self.maybe.pop(key)
                elif r < 0.75:
                    before = self.allowed(key)
                    self.maybe[key] = before | {None}
                    c.delete(key, noreply=False)
                    self.model[key] = None
                    self.maybe.pop(key)
                else:
                    got = c.get(key)
                    if got not in self.allowed(key):
                        self.bad_reads.append((key, got, self.allowed(key)))
            except Exception as e:  # noqa: BLE001 - counted; outcome unknown
                self.errors += 1
                kind = "%s: %s" % (type(e).__name__, str(e)[:60])
                self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
                self.error_times.append(time.time())
                self.error_log.append((time.time(), key, r < 0.6 and "set" or
                                       r < 0.75 and "delete" or "get", kind))
                c.close()
                time.sleep(0.05)
                c = self.client()
        c.close()


def persistent():
    return pika.BasicProperties(delivery_mode=2)


def amqp_connect(port):
    return pika.BlockingConnection(at.params(HOST, port, heartbeat=30))


class Errors:
    """Client errors of one AMQP client thread, by kind, with times."""

    def __init__(self):
        self.count = 0
        self.kinds = {}
        self.log = []  # (time, what, kind)

    def add(self, what, e):
        self.count += 1
        kind = "%s: %s" % (type(e).__name__, str(e)[:80])
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        self.log.append((time.time(), what, kind))


class AmqpPublisher(threading.Thread):
    """Persistent messages with unique bodies "<name>:<queue>:<seq>" to the
    queues in turn, through one router, on a confirm channel (pika's
    basic_publish returns once the broker confirmed, mandatory: an
    unroutable message raises). confirmed: bodies the broker confirmed;
    unknown: bodies whose publish raised (the outcome is not known: they
    may be consumed or not)."""

    def __init__(self, port, name, queues):
        super().__init__(daemon=True)
        self.port, self.name, self.queues = port, name, queues
        self.confirmed = set()
        self.unknown = set()
        self.errors = Errors()
        self.stop = threading.Event()

    def run(self):
        conn = ch = None
        seq = 0
        while not self.stop.is_set():
            q = self.queues[seq % len(self.queues)]
            body = ("%s:%s:%06d" % (self.name, q, seq)).encode()
            seq += 1
            try:
                if conn is None:
                    conn = amqp_connect(self.port)
                    ch = conn.channel()
                    ch.confirm_delivery()
                ch.basic_publish("", q, body, properties=persistent(),
                                 mandatory=True)
                self.confirmed.add(body)
            except Exception as e:  # noqa: BLE001 - counted; outcome unknown
                self.unknown.add(body)
                self.errors.add("publish %s" % body.decode(), e)
                try:
                    if conn is not None and conn.is_open:
                        conn.close()
                except Exception:  # noqa: BLE001 - it is gone anyway
                    pass
                conn = None
                time.sleep(0.1)
        if conn is not None and conn.is_open:
            conn.close()


class AmqpConsumer(threading.Thread):
    """One channel through one router consuming every queue, manual acks
    (each message acked as it arrives). got: (queue consumed from, body,
    redelivered) in order of arrival."""

    def __init__(self, port, name, queues):
        super().__init__(daemon=True)
        self.port, self.name, self.queues = port, name, queues
        self.got = []
        self.errors = Errors()
        self.stop = threading.Event()
        self.tags = {}

    def on_message(self, ch, method, props, body):
        self.got.append((self.tags.get(method.consumer_tag), body,
                         method.redelivered))
        ch.basic_ack(method.delivery_tag)

    def run(self):
        while not self.stop.is_set():
            conn = None
            try:
                conn = amqp_connect(self.port)
                ch = conn.channel()
                ch.basic_qos(prefetch_count=PREFETCH)
                self.tags = {}
                for q in self.queues:
                    self.tags[ch.basic_consume(q, self.on_message)] = q
                while not self.stop.is_set():
                    conn.process_data_events(time_limit=0.2)
                conn.close()
            except Exception as e:  # noqa: BLE001 - counted; reconnects
                self.errors.add("consume", e)
                try:
                    if conn is not None and conn.is_open:
                        conn.close()
                except Exception:  # noqa: BLE001 - it is gone anyway
                    pass
                time.sleep(0.1)


def pick_queues(cl):
    """QUEUES queue names, with the shard each one's ring key has on the
    queue ring (the first map: s1:1 s2:2, which routers place queues by)
    and on the key ring once s3 joined (s1:1 s2:2 s3:1): two thirds of the
    names are ones the key ring would give s3 (a router placing queues by
    the key ring would send them there, and s3 leaves), the rest stay on
    the queue ring's shard either way."""
    first = cl.live_map()
    with_s3 = dict(first)
    with_s3["s3"] = (1, [cl.node_member(n) for n in (7, 8, 9)])
    names = ["rq%03d" % i for i in range(300)]
    qring = cl.owners(names, first)
    kring = cl.owners(names, with_s3)
    moved = [n for n in names if kring[n] == "s3"]
    stay = {s: [n for n in names if kring[n] == qring[n] == s] for s in first}
    want_moved = QUEUES * 2 // 3
    # the moved ones from both queue-ring shards, alternately
    by = {s: [n for n in moved if qring[n] == s] for s in first}
    picked = []
    while len(picked) < want_moved:
        for s in first:
            if by[s] and len(picked) < want_moved:
                picked.append(by[s].pop(0))
    while len(picked) < QUEUES:
        for s in first:
            if stay[s] and len(picked) < QUEUES:
                picked.append(stay[s].pop(0))
    return picked, {n: qring[n] for n in picked}, {n: kring[n] for n in picked}


def mq_ready(cl, shards):
    """{shard: [ready messages of its queue group on each replica]}: the
    items of `ringmqctl --node RPC --group <shard>.mq status --format kv`."""
    return {s: [cl.items(rpc, s + ".mq") for _, _, rpc in m]
            for s, (_, m) in shards.items()}


def queue_shards(cl, port, queues):
    """{queue: shard} as observed: each queue (empty, no consumer) gets
    PROBE confirmed persistent messages through the router at @port; they
    must show up as ready messages of exactly one shard's queue group, on
    every replica of it, and nowhere else; then the queue is purged."""
    shards = cl.live_map()
    placed = {}
    conn = amqp_connect(port)
    ch = conn.channel()
    ch.confirm_delivery()
    last = [None]

    def holder():
        r = last[0] = mq_ready(cl, shards)
        full = [s for s, v in r.items() if all(x == PROBE for x in v)]
        empty = [s for s, v in r.items() if all(x == 0 for x in v)]
        return full[0] if len(full) == 1 and len(empty) == len(r) - 1 else None

    def all_empty():
        r = last[0] = mq_ready(cl, shards)
        return all(x == 0 for v in r.values() for x in v)
    try:
        rt.wait_until(all_empty, 20, "queue groups empty", interval=0.2)
        for q in queues:
            for i in range(PROBE):
                ch.basic_publish("", q, b"probe %d" % i, properties=persistent(),
                                 mandatory=True)
            placed[q] = rt.wait_until(holder, 20, "probe of %s" % q, interval=0.1)
            ch.queue_purge(q)
            rt.wait_until(all_empty, 20, "%s purged" % q, interval=0.1)
    except TimeoutError as e:
        raise AssertionError("%s: ready messages per shard replica: %r" %
                             (e, last[0])) from None
    finally:
        if conn.is_open:
            conn.close()
    return placed


def print_errors(what, errs, phases):
    kinds = {}
    for e in errs:
        for k, n in e.kinds.items():
            kinds[k] = kinds.get(k, 0) + n
    for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print("    %5d x %s" % (n, k))
    log = sorted(x for e in errs for x in e.log)
    for t, op, kind in log[:20]:
        print("    %s.%03d %s %s: %s" % (time.strftime("%H:%M:%S", time.gmtime(t)),
                                      int(t * 1000) % 1000, what, op, kind))
    times = [t for t, _, _ in log]
    for i, (name, t0) in enumerate(phases):
        t1 = phases[i + 1][1] if i + 1 < len(phases) else float("inf")
        n = sum(1 for t in times if t0 <= t < t1)
        if n:
            print("    %5d %s errors during %s" % (n, what, name))


def amqp_drain(cl, queues, publishers, consumers, phases):
    """Stop the publishers, let the consumers drain the queues, stop them;
    print and check what came out against what went in."""
    for p in publishers:
        p.stop.set()
    for p in publishers:
        p.join(30)
    confirmed = set().union(*(p.confirmed for p in publishers))
    unknown = set().union(*(p.unknown for p in publishers))

    def consumed():
        return {b for c in consumers for _, b, _ in list(c.got)}
    t0 = time.time()
    try:
        rt.wait_until(lambda: confirmed <= consumed(), 30,
                      "every confirmed message consumed", interval=0.2)
    except TimeoutError:
        pass  # reported below
    drain_s = time.time() - t0
    time.sleep(1)  # what may still come: redeliveries, unknown outcomes
    for c in consumers:
        c.stop.set()
    for c in consumers:
        c.join(30)
    got = [g for c in consumers for g in c.got]
    seen = {}
    unexpected, not_flagged = [], []
    for q, body, redelivered in got:
        seen[body] = seen.get(body, 0) + 1
        if body not in confirmed and body not in unknown or \
                body.split(b":")[1].decode() != q:
            unexpected.append((q, body))
        elif seen[body] > 1 and not redelivered:
            not_flagged.append((q, body))
    missing = sorted(confirmed - set(seen))
    redelivered = sum(1 for _, _, r in got if r)
    conn = amqp_connect(cl.amqp_port(2))
    ch = conn.channel()
    left = {}
    for q in queues:
        ok = ch.queue_declare(q, durable=True, passive=True).method
        left[q] = (ok.message_count, ok.consumer_count)
    conn.close()
    errs = [t.errors for t in publishers + consumers]
    print("  amqp: %d published (%d confirmed, %d with unknown outcome), "
          "%d deliveries (%d redelivered), %d unknown ones consumed, "
          "drained in %.1fs; %d missing, %d unexpected, %d duplicates not "
          "marked redelivered; %d client errors" % (
              len(confirmed) + len(unknown), len(confirmed), len(unknown),
              len(got), redelivered, len(unknown & set(seen)), drain_s,
              len(missing), len(unexpected), len(not_flagged),
              sum(e.count for e in errs)))
    for p in publishers:
        print("    %s: %d confirmed, %d errors" % (p.name, len(p.confirmed),
                                                   p.errors.count))
    for c in consumers:
        print("    %s: %d deliveries, %d errors" % (c.name, len(c.got),
                                                    c.errors.count))
    print_errors("amqp", errs, phases)
    rt.check(not missing, "confirmed messages not consumed: %d, e.g. %r" %
             (len(missing), missing[:5]))
    rt.check(not unexpected, "unexpected messages: %r" % unexpected[:5])
    rt.check(not not_flagged, "delivered twice, not marked redelivered: %r" %
             not_flagged[:5])
    rt.check(all(v == (0, 0) for v in left.values()),
             "queues empty, no consumers after the drain: %r" % left)
    rt.check(len(confirmed) > 100, "the AMQP load went on: %d" % len(confirmed))
    return sum(e.count for e in errs)


def verify(cl, loads, static):
    """Every key through both routers: (wrong, missing) lists."""
    wrong = []
    present = set()
    expect = dict(static)
    maybe = {}
    for ld in loads:
        expect.update(ld.model)
        maybe.update(ld.maybe)
    keys = list(expect)
    for r in (1, 2):
        c = Client(("127.0.0.1", cl.mc_port(r)), timeout=10)
        for off in range(0, len(keys), 500):
            part = keys[off:off + 500]
            got = c.get_many(part)
            for k in part:
                ok = maybe.get(k, {expect[k]})
                if got.get(k) not in ok:
                    wrong.append((r, k, got.get(k), ok))
                if got.get(k) is not None:
                    present.add(k)
        c.close()
    return wrong, present


def shard_counts(cl, present):
    """{shard: (ring's count, [items of each replica])} for the live map."""
    shards = cl.live_map()
    own = cl.owners(sorted(present), shards)
    want = {s: 0 for s in shards}
    for k in present:
        want[own[k]] += 1
    res = {}
    for s, (_, members) in shards.items():
        res[s] = (want[s], [cl.items(rpc, s) for _, _, rpc in members])
    return res


def test_add_reweight_remove_under_load():
    t_start = time.time()
    cl = Cluster().up()
    static = {"p:%05d" % i: ("static-%05d-" % i).encode().ljust(VALUE, b"s")
              for i in range(STATIC)}
    c = Client(("127.0.0.1", cl.mc_port(1)), timeout=10)
    items = list(static.items())
    for off in range(0, len(items), 500):
        rt.check(not c.set_many(dict(items[off:off + 500]), noreply=False),
                 "static preload")
    c.close()
    loads = [Load(cl.mc_port(1 + n % 2), n) for n in range(THREADS)]
    for ld in loads:
        ld.preload()

    # the AMQP load: durable queues, where they are before anything moves
    for r in (1, 2):
        at.wait_amqp_ready(HOST, cl.amqp_port(r), timeout=30)
    queues, qring, kring = pick_queues(cl)
    conn = amqp_connect(cl.amqp_port(1))
    ch = conn.channel()
    for q in queues:
        ch.queue_declare(q, durable=True)
    conn.close()
    before = queue_shards(cl, cl.amqp_port(1), queues)
    print("  queues (queue ring / key ring with s3 / observed): %s" % " ".join(
        "%s:%s/%s/%s" % (q, qring[q], kring[q], before[q]) for q in queues))
    rt.check(before == qring, "queues placed by the queue ring: %r vs %r" %
             (before, qring))
    consumers = [AmqpConsumer(cl.amqp_port(r), "c%d" % r, queues) for r in (1, 2)]
    publishers = [AmqpPublisher(cl.amqp_port(r), "p%d" % r, queues) for r in (1, 2)]
    for t in consumers + publishers:
        t.start()
    for ld in loads:
        ld.start()
    time.sleep(1)

    phases = [("preload", time.time())]
    # 1. a new shard
    phases.append(("add-shard", time.time()))
    out, secs = cl.script("add-shard", cl.dir, "s3", "1")
    print("  add-shard s3 in %.1fs:\n    %s" % (secs, out.strip().replace("\n", "\n    ")))
    rt.check("plan" in out and "done" in out, "shard add ran a plan")
    total = sum(cl.items(rpc, s) for s, (_, m) in cl.live_map().items()
                for _, _, rpc in m[:1])
    s3 = cl.items(cl.live_map()["s3"][1][0][2], "s3")
    share = s3 / float(total)
    print("  s3 holds %d of %d keys: %.3f (ring share 0.25)" % (s3, total, share))
    rt.check(abs(share - 0.25) <= 0.25 * 0.2, "s3 holds its share within 20%%: %.3f" % share)

    # 2. a reweight, its coordinator killed mid-move and run again
    phases.append(("weight (killed)", time.time()))
    ops0 = sum(ld.ops for ld in loads)
    p = subprocess.Popen([rt.CTL, "--cluster", cl.map, "--rate", "48k", "shard",
                          "weight", "s2", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    rt._procs.append(p)
    time.sleep(3)
    killed = p.poll() is None
    if killed:
        p.send_signal(signal.SIGKILL)
    first = p.communicate(timeout=30)[0]
    status = cl.ctl("plan", "status")
    print("  shard weight s2 1 (48 KiB/s) %s after 3s:\n    %s\n  plan status:\n    %s" %
          ("killed" if killed else "finished", first.strip().replace("\n", "\n    "),
           status.strip().replace("\n", "\n    ")))
    rt.check(not killed or status.startswith("plan "), "plan status shows the running plan")
    phases.append(("weight (rerun)", time.time()))
    out = cl.ctl("shard", "weight", "s2", "1", timeout=120)
    print("  run again:\n    %s" % out.strip().replace("\n", "\n    "))
    rt.check("done" in out or "nothing to do" in out, "the rerun finished the plan")
    rt.check(cl.live_map()["s2"][0] == 1, "s2 has weight 1")

    # no queue group but the queue ring's has messages: s3's is empty
    s3_mq = mq_ready(cl, {"s3": cl.live_map()["s3"]})
    print("  ready messages in s3.mq on its replicas: %r" % s3_mq["s3"])
    rt.check(s3_mq["s3"] == [0, 0, 0], "s3's queue group holds nothing")

    # 3. a shard leaves
    phases.append(("remove-shard", time.time()))
    out, secs = cl.script("remove-shard", cl.dir, "s3")
    print("  remove-shard s3 in %.1fs:\n    %s" % (secs, out.strip().replace("\n", "\n    ")))
    rt.check("s3" not in cl.live_map(), "s3 left the map")
    phases.append(("after", time.time()))
    time.sleep(1)
    for ld in loads:
        ld.stop.set()
    for ld in loads:
        ld.join(30)
    amqp_drain(cl, queues, publishers, consumers, phases)
    after = queue_shards(cl, cl.amqp_port(2), queues)
    print("  queues after the moves (observed): %s" % " ".join(
        "%s:%s" % (q, after[q]) for q in queues))
    ops = sum(ld.ops for ld in loads)
    errors = sum(ld.errors for ld in loads)
    bad_reads = [b for ld in loads for b in ld.bad_reads]
    print("  memcached load: %d ops (%d during the reweight onwards), %d client errors, "
          "%d reads of an unexpected value" % (ops, ops - ops0, errors, len(bad_reads)))
    kinds = {}
    for ld in loads:
        for k, n in ld.error_kinds.items():
            kinds[k] = kinds.get(k, 0) + n
    for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print("    %5d x %s" % (n, k))
    times = sorted(t for ld in loads for t in ld.error_times)
    for t, key, op, kind in sorted(e for ld in loads for e in ld.error_log)[:20]:
        print("    %s.%03d %s %s: %s" % (time.strftime("%H:%M:%S", time.gmtime(t)),
                                      int(t * 1000) % 1000, op, key, kind))
    for i, (name, t0) in enumerate(phases):
        t1 = phases[i + 1][1] if i + 1 < len(phases) else float("inf")
        n = sum(1 for t in times if t0 <= t < t1)
        if n:
            print("    %5d errors during %s" % (n, name))
    for r in (1, 2):
        st = rt.stats(cl.mc_port(r))
        print("    router r%d: %s" % (r, " ".join(
            "%s=%s" % (k[len("shard:"):], v) for k, v in sorted(st.items())
            if k.startswith("shard:") and k.rsplit(":", 1)[1] in
            ("wrong_owner", "moving", "retries") and v != "0")))
    rt.check(not bad_reads, "reads during the moves: %r" % bad_reads[:5])
    rt.check(ops - ops0 > 100, "the load went on during the moves")
    rt.check(after == before, "queues stayed on their shards: before %r, after %r" %
             (before, after))
    conn = amqp_connect(cl.amqp_port(1))
    ch = conn.channel()
    for q in queues:
        ch.queue_delete(q)
    conn.close()

    wrong, present = verify(cl, loads, static)
    deleted = sum(1 for ld in loads for k, v in ld.model.items()
                  if v is None and k not in ld.maybe)
    print("  verify: %d keys present, %d deleted, %d wrong" %
          (len(present), deleted, len(wrong)))
    rt.check(not wrong, "acknowledged values: %r" % wrong[:5])
    rt.check(all(k in present for k in static), "static keys all present")

    def counts_match():
        counts = shard_counts(cl, present)
        return counts if all(all(n == want for n in have)
                             for want, have in counts.values()) else None
    try:
        counts = rt.wait_until(counts_match, 30, "replicas to hold exactly their keys",
                               interval=1)
    except TimeoutError:
        raise AssertionError("shard items vs ring: %r" % shard_counts(cl, present))
    print("  every replica holds exactly the ring's keys: %r" %
          {s: want for s, (want, _) in counts.items()})
    rt.check(time.time() - t_start < 180, "within 3 minutes")
    check_idle_writes_nothing(cl, time.time())
    cl.down()


IDLE_AFTER = 10  # seconds after the last client left (issue 16)
IDLE_WINDOW = 3


def check_idle_writes_nothing(cl, clients_left):
    before = cl.write_bytes()
    nodes = [n for n in before if n.startswith("n")]
    # the loads' log entries were counted: the filesystem accounts writes
    # (on tmpfs nothing would be, and this check could not fail)
    rt.check(len(nodes) == 6 and all(before[n] > 0 for n in nodes),
             "every node's write_bytes counts its log: %r" % before)
    time.sleep(max(0.0, clients_left + IDLE_AFTER - time.time()))
    start = cl.write_bytes()
    time.sleep(IDLE_WINDOW)
    end = cl.write_bytes()
    wrote = {n: end[n] - start[n] for n in end
             if n in start and end[n] != start[n]}
    print("  idle from %ds after the clients left, for %ds: %s" %
          (IDLE_AFTER, IDLE_WINDOW, "nothing written" if not wrote else
           " ".join("%s=%d" % kv for kv in sorted(wrote.items()))))
    rt.check(not wrote, "an idle cluster writes nothing to disk: %r bytes" %
             wrote)


def test_refusals():
    cl = Cluster().up()
    out = subprocess.run([rt.CTL, "--cluster", cl.map, "shard", "remove", "s1"],
                         capture_output=True, text=True, timeout=60)
    rt.check(out.returncode == 64 and "meta" in out.stderr,
             "removing the meta shard is refused: %r" % out.stderr)
    out = subprocess.run([rt.CTL, "--cluster", cl.map, "shard", "remove", "s2"],
                         capture_output=True, text=True, timeout=60)
    rt.check(out.returncode == 64 and "queues" in out.stderr,
             "removing a shard holding queues is refused: %r" % out.stderr)
    out = subprocess.run([rt.CTL, "--cluster", cl.map, "shard", "add", "s9"],
                         capture_output=True, text=True, timeout=60)
    rt.check(out.returncode == 64 and "--members" in out.stderr,
             "shard add without members: %r" % out.stderr)
    rt.check("nothing to do" in cl.ctl("shard", "weight", "s2", "2"),
             "same weight: nothing to do")
    rt.check(cl.ctl("plan", "status").startswith("no plan"), "no plan")
    cl.down()


if __name__ == "__main__":
    rt.run_tests([test_refusals, test_add_reweight_remove_under_load])
