"""What the reshard nemesis is checked against besides the history: the
filler keys and where every key ended up, asked of the lab after the heal.

filler       FILLER_KEYS keys of FILLER_BYTES written once before the run
             (so that moves have something to copy and last seconds) and
             never changed: each must read back with its value.
placement    every key known to the run (filler and register keys that
             read back present) is on exactly one shard, its owner by the
             ring of the live map (`ringmqctl map`, `ringmqctl owner`): each
             replica of each shard holds exactly as many items as the ring
             gives its shard (`ringmqctl status --format kv`); nothing is
             left behind on an old owner.
digests      the replicas of every group (cache, queue, meta) agree: equal
             digests at equal applied indexes (check_replicas(): this and
             evictions alone, for runs without the reshard nemesis).
evictions    0 on every cache replica (an eviction would make a lost key
             look legitimate).
moved keys   which register keys' owners changed while they were in use:
             for each reshard step (start-reshard-step .. stop-reshard-step in the
             history) the owners of the keys used during it under the ring
             before and after it.
"""
import os
import socket
import time

from lab import MEMCACHED_PORT, group_status

FILLER_KEYS = 4000
FILLER_BYTES = 200


def filler_value(i):
    v = b"filler-%05d-" % i
    return v + b"f" * (FILLER_BYTES - len(v))


def filler_key(i):
    return "f%05d" % i


def _mc(ip, timeout=10):
    return socket.create_connection((ip, MEMCACHED_PORT), timeout=timeout)


def _read_until(s, buf, end):
    while not buf.endswith(end):
        chunk = s.recv(1 << 16)
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


def preload_filler(ip, n=FILLER_KEYS, log=print):
    """Set the filler keys through the router at @ip, 100 per round trip,
    retrying a round that failed (the cluster is fault-free then)."""
    t0 = time.monotonic()
    i = 0
    while i < n:
        part = range(i, min(n, i + 100))
        req = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (
            filler_key(k).encode(), FILLER_BYTES, filler_value(k))
            for k in part)
        try:
            with _mc(ip) as s:
                s.sendall(req)
                buf = b""
                while buf.count(b"\r\n") < len(part):
                    chunk = s.recv(1 << 16)
                    if not chunk:
                        raise OSError("connection closed")
                    buf += chunk
            if buf.count(b"STORED\r\n") != len(part):
                raise OSError("not stored: %r" % buf[:200])
        except OSError as e:
            if time.monotonic() - t0 > 60:
                raise
            log("filler: %r: again" % e)
            time.sleep(0.5)
            continue
        i += len(part)
    log("filler: %d keys of %d bytes in %.1fs" % (n, FILLER_BYTES,
                                                   time.monotonic() - t0))


def get_many(ip, keys):
    """{key: value bytes} for the keys present, through the router at @ip."""
    got = {}
    with _mc(ip, timeout=30) as s:
        for off in range(0, len(keys), 100):
            part = keys[off:off + 100]
            s.sendall(("get %s\r\n" % " ".join(part)).encode())
            buf = b""
            while True:
                buf = _read_until(s, buf, b"\r\n")
                # parse complete items; stop at END
                pos, done = 0, False
                items = {}
                while True:
                    nl = buf.find(b"\r\n", pos)
                    if nl < 0:
                        break
                    line = buf[pos:nl]
                    if line == b"END":
                        done = True
                        break
                    f = line.split()
                    if f[:1] != [b"VALUE"]:
                        raise OSError("bad reply %r" % line[:100])
                    n = int(f[3])
                    if len(buf) < nl + 2 + n + 2:
                        break
                    items[f[1].decode()] = buf[nl + 2:nl + 2 + n]
                    pos = nl + 2 + n + 2
                if done:
                    got.update(items)
                    break
                chunk = s.recv(1 << 16)
                if not chunk:
                    raise OSError("connection closed")
                buf += chunk
    return got


def live_map(lab):
    """[(shard, weight, state, [(id, raft, rpc)])] in map order."""
    r = lab.ctl(["map"], timeout=30)
    if r.returncode != 0:
        raise RuntimeError("ringmqctl map: %s" % r.stderr.strip())
    shards = []
    for line in r.stdout.splitlines():
        f = line.split()
        if f and f[0] == "shard":
            shards.append((f[1], int(f[3]), f[4] if len(f) > 4 else "",
                           []))
        elif len(f) >= 7 and f[1] == "member":
            for s in shards:
                if s[0] == f[0]:
                    s[3].append((int(f[2]), f[4], f[6]))
    return shards


def owners(lab, keys, ring, members=None, tag="ring"):
    """{key: shard} by the ring of [(name, weight)] (members only make the
    map file valid: the ring depends on names and weights)."""
    if not keys:
        return {}
    path = os.path.join(lab.dir, "owner-%s.yaml" % tag)
    lines = ["epoch: 1", "shards:"]
    for k, (name, weight) in enumerate(ring):
        lines += ["  - name: %s" % name, "    weight: %d" % weight,
                  "    members:"]
        ms = (members or {}).get(name) or [
            (100 * (k + 1) + h.i, "%s:%d" % (h.ip, 7300 + 10 * k),
             "%s:%d" % (h.ip, 7400 + k)) for h in lab.hosts]
        lines += ["      - {id: %d, raft: %s, rpc: %s}" % m for m in ms]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    r = lab.ctl(["owner", "-"], input="\n".join(keys) + "\n", cluster=path)
    out = dict(line.split() for line in r.stdout.splitlines() if line.strip())
    if set(out) != set(keys):
        raise RuntimeError("ringmqctl owner: %s" % r.stderr.strip())
    return out


def _replicas(shards):
    """[(group, rpc address)] of every replica of every group of the map:
    a shard's cache and queue groups on its members, meta on s1's."""
    out = []
    for name, _, _, members in shards:
        for _, _, rpc in members:
            out += [(name, rpc), (name + ".mq", rpc)]
    for _, _, rpc in shards[0][3]:
        out.append(("meta", rpc))
    return out


REPLICA_FIELDS = ("node_id", "state", "term", "leader_id", "last_index",
                  "last_stored", "commit_index", "last_applied",
                  "snapshot_index", "progress")


def _replica_states(group, shards, status):
    """{rpc: "field=value ..."} of each replica of @group: where its raft
    stands (a leader's progress is its view of the others:
    ID:MODE:NEXT:MATCH)."""
    out = {}
    for g, rpc in _replicas(shards):
        if g != group:
            continue
        st = status.get(rpc, {}).get(group)
        out[rpc] = "no answer" if st is None else " ".join(
            "%s=%s" % (f, st.get(f, "?")) for f in REPLICA_FIELDS)
    return out


def _replica_round(lab, shards, first_seen):
    """One look at every replica of every group of @shards: (status by
    rpc, {group: {rpc: (applied index, digest)}}, {cache group: {rpc:
    items}}, evictions, [problems]): a replica that does not answer,
    replicas of a group at different indexes (their raft state noted in
    @first_seen the first time) or at one index with different digests,
    evictions."""
    status = {}
    for group, rpc in _replicas(shards):
        # once per node, again if it did not name this group
        if group not in status.get(rpc, {}):
            status[rpc] = group_status(lab.ctl_bin, rpc, 2000)
    items, digests, evictions, bad = {}, {}, 0, []
    for group, rpc in _replicas(shards):
        g = status[rpc].get(group)
        if g is None:
            bad.append("%s at %s: no answer" % (group, rpc))
            continue
        digests.setdefault(group, {})[rpc] = (int(g["last_applied"]),
                                              g["digest"])
        if not group.endswith(".mq") and group != "meta":
            items.setdefault(group, {})[rpc] = int(g["items"])
            evictions += int(g.get("evictions", 0))
    for group, reps in digests.items():
        if len({a for a, _ in reps.values()}) != 1:
            bad.append("%s: replicas at different indexes %s"
                       % (group, sorted(reps.values())))
            lagging = _replica_states(group, shards, status)
            for rpc, line in lagging.items():
                first_seen.setdefault((group, rpc), line)
        elif len({d for _, d in reps.values()}) != 1:
            bad.append("%s: digests differ at index %d: %s" % (
                group, next(iter(reps.values()))[0], reps))
    if evictions:
        bad.append("%d evictions" % evictions)
    return status, digests, items, evictions, bad


def _lagging_report(shards, status, first_seen, bad, log):
    """The raft state of every replica of a group whose replicas
    disagree, at the first look that saw it and at the last (was
    anything moving?)."""
    out = {}
    for group in sorted({g for g, _ in first_seen}):
        if not any(p.startswith(group + ":") for p in bad):
            continue
        last = _replica_states(group, shards, status)
        out[group] = {
            rpc: {"first": first_seen.get((group, rpc)),
                  "last": last.get(rpc)}
            for rpc in sorted(set(last) | {r for g, r in first_seen
                                           if g == group})}
        for rpc, st in sorted(out[group].items()):
            log("placement: %s at %s: first %s; last %s"
                % (group, rpc, st["first"], st["last"]))
    return out


def check_replicas(lab, timeout=60, log=print):
    """The digest and eviction part of check() alone (runs without the
    reshard nemesis, which have no filler keys to place): every group's
    replicas at one applied index with one digest, no eviction, asked
    again each second for up to @timeout (replicas catch up after the
    heal). {"valid": bool, "digests", "evictions", "problems",
    "replicas"}."""
    deadline = time.monotonic() + timeout
    first_seen = {}
    while True:
        shards = live_map(lab)
        status, digests, _, evictions, bad = _replica_round(lab, shards,
                                                            first_seen)
        if not bad or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    res = {"valid": not bad, "evictions": evictions, "problems": bad,
           "digests": {g: sorted(set(d for _, d in r.values()))
                       for g, r in digests.items()},
           "indexes": {g: sorted(set(a for a, _ in r.values()))
                       for g, r in digests.items()}}
    res["replicas"] = _lagging_report(shards, status, first_seen, bad, log)
    log("replicas: %s; evictions %d; %s" % (
        " ".join("%s@%s" % (g, ",".join(map(str, res["indexes"][g])))
                 for g in sorted(res["indexes"])), evictions,
        "agree" if not bad else "DISAGREE: %s" % bad[:5]))
    return res


def check(lab, register_keys, timeout=60, log=print):
    """The placement checks after the heal; {"valid": bool, ...}."""
    res = {"valid": False}
    ip = lab.hosts[0].ip
    fkeys = [filler_key(i) for i in range(FILLER_KEYS)]
    got = get_many(ip, fkeys)
    wrong = [k for k in fkeys if got.get(k) != filler_value(int(k[1:]))]
    res["filler_wrong"] = wrong[:20]
    res["filler_wrong_count"] = len(wrong)
    present = [k for k in fkeys if k in got]
    regs = sorted(register_keys)
    rgot = get_many(ip, regs) if regs else {}
    present += [k for k in regs if k in rgot]
    res["keys_present"] = len(present)
    deadline = time.monotonic() + timeout
    first_seen = {}  # (group, rpc) -> its state when first seen behind
    while True:
        shards = live_map(lab)
        ring = [(s[0], s[1]) for s in shards]
        members = {s[0]: s[3] for s in shards}
        own = owners(lab, present, ring, members, tag="final")
        want = {s[0]: 0 for s in shards}
        for k in present:
            want[own[k]] += 1
        status, digests, items, evictions, bad = _replica_round(
            lab, shards, first_seen)
        for group, reps in items.items():
            for rpc, n in reps.items():
                if n != want[group]:
                    bad.append("%s at %s: %d items, the ring gives it %d"
                               % (group, rpc, n, want[group]))
        if not bad or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    res.update({"map": [[s[0], s[1], s[2], [m[0] for m in s[3]]]
                        for s in shards],
                "owned": want, "items": items, "evictions": evictions,
                "digests": {g: sorted(set(d for _, d in r.values()))
                            for g, r in digests.items()},
                "problems": bad})
    res["valid"] = not bad and not wrong
    res["replicas"] = _lagging_report(shards, status, first_seen, bad, log)
    log("placement: map %s; keys %d (filler %d, wrong %d); owned %s; "
        "replicas %s; evictions %d; %s" % (
            " ".join("%s:%d" % (s[0], s[1]) for s in shards), len(present),
            FILLER_KEYS, len(wrong), want,
            "agree" if not bad else "DISAGREE", evictions,
            "ok" if res["valid"] else "problems: %s" % bad[:5]))
    return res


def moved_keys(lab, hist, steps):
    """The register keys whose owner changed during a reshard step while
    they were in use: {"moved": [...], "controls": [...]}.
    @steps: the history's reshard step pairs as
    (t0, t1, ring_before, ring_after) in ns."""
    span = {}
    for op in hist:
        if op["process"] != "nemesis" and op.get("key"):
            a, b = span.get(op["key"], (op["time"], op["time"]))
            span[op["key"]] = (min(a, op["time"]), max(b, op["time"]))
    keys = sorted(span)
    moved = set()
    cache = {}
    for n, (t0, t1, before, after) in enumerate(steps):
        used = [k for k in keys if span[k][0] <= t1 and span[k][1] >= t0]
        if not used:
            continue
        for ring in (before, after):
            tr = tuple(map(tuple, ring))
            if tr not in cache:
                cache[tr] = owners(lab, keys, ring, tag="step%d" % n)
        ob, oa = cache[tuple(map(tuple, before))], \
            cache[tuple(map(tuple, after))]
        moved.update(k for k in used if ob[k] != oa[k])
    return {"moved": sorted(moved),
            "controls": [k for k in keys if k not in moved]}


def _router_ready(ip, queue):
    """The ready count a passive queue.declare through the router at @ip
    answers (the router routes it to the shard the directory names)."""
    import pika
    import workloads
    c = pika.BlockingConnection(workloads.amqp_params(ip))
    try:
        return c.channel().queue_declare(queue, durable=True,
                                         passive=True).method.message_count
    finally:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - already broken
            pass


def check_queues(lab, queues, timeout=60, log=print):
    """After the heal, before the drain (so that the queues still hold
    messages), with the clients stopped: each queue is at exactly one
    shard, the one the directory names (`ringmqctl queue where`, no move
    pending):
      - `ringmqctl queue find`: that shard holds it with the directory's
        gen; every other shard of the map holds nothing of it (none, or
        the tombstone of a move away), none has it frozen or half
        imported;
      - every replica of every "<shard>.mq" group holds as many ready
        messages as the queues the directory places on that shard (the
        workload's queues are the only queues): the other shards' groups
        hold none, on any replica;
      - a passive declare through each router answers with that count.
    Asked again each second until it holds or @timeout passes (replicas
    and returns of the stopped consumers' deliveries settle)."""
    res = {"valid": False}
    deadline = time.monotonic() + timeout
    while True:
        bad = []
        shards = live_map(lab)
        names = [s[0] for s in shards]
        ready_at = {n: 0 for n in names}
        where, found = {}, {}
        for q in queues:
            w = lab.queue_where(q)
            f = lab.queue_find(q)
            where[q], found[q] = w, f
            if w is None or f is None:
                bad.append("%s: queue where/find did not answer" % q)
                continue
            shard, gen, moving = w
            if moving is not None:
                bad.append("%s: still moving to %s" % (q, moving))
            if shard not in names:
                bad.append("%s: the directory names %s, not in the map"
                           % (q, shard))
                continue
            holders = sorted(n for n, (st, _) in f.items() if st == "holds")
            if holders != [shard]:
                bad.append("%s: held by %s, the directory names %s"
                           % (q, holders, shard))
            for n, (st, fields) in sorted(f.items()):
                if n != shard and st not in ("none", "moved-away"):
                    bad.append("%s: %s answers %s" % (q, n, st))
                if n == shard and st == "holds":
                    if gen is not None and fields.get("gen") != gen:
                        bad.append("%s: %s holds gen %s, the directory "
                                   "says %s" % (q, n, fields.get("gen"),
                                                gen))
                    ready_at[n] += fields.get("ready", 0)
        for group, rpc in _replicas(shards):
            if not group.endswith(".mq"):
                continue
            g = group_status(lab.ctl_bin, rpc, 2000).get(group)
            if g is None:
                bad.append("%s at %s: no answer" % (group, rpc))
            elif int(g["items"]) != ready_at[group[:-3]]:
                bad.append("%s at %s: %s ready messages, the directory's "
                           "queues there hold %d" % (
                               group, rpc, g["items"], ready_at[group[:-3]]))
        for q in queues:
            w = where.get(q)
            if w is None or w[0] not in ready_at:
                continue
            for h in lab.hosts:
                try:
                    n = _router_ready(h.ip, q)
                except Exception as e:  # noqa: BLE001 - reported
                    bad.append("%s: passive declare through %s: %r"
                               % (q, h.name, e))
                    continue
                want = (found.get(q) or {}).get(w[0], ("", {}))[1].get(
                    "ready")
                if n != want:
                    bad.append("%s: router %s answers %d ready, %s holds %s"
                               % (q, h.name, n, w[0], want))
        if not bad or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    res.update({"where": {q: list(w) if w else None
                          for q, w in where.items()},
                "found": {q: {n: [st, fl] for n, (st, fl) in f.items()}
                          if f else None for q, f in found.items()},
                "ready": ready_at, "problems": bad})
    res["valid"] = not bad
    log("queue placement: %s; %s" % (
        ", ".join("%s at %s" % (q, w[0] if w else "?")
                  for q, w in where.items()),
        "ok" if not bad else "problems: %s" % bad[:5]))
    return res
