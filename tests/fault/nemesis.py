"""Nemeses for the fault lab: faults chosen and timed by a seeded random
schedule, each recorded in the history as a nemesis op.

A cycle is: a quiet spell (QUIET_S), then one fault held for HOLD_S, then its
repair. Each fault has a plain and a leader-targeted variant: the target is
then the current leader of the workload's Raft group (the cache group "s1"
for the register workload, the queue group "s1.mq" for the queue workload),
which is where a fault does the most harm.

Faults (names as they appear in the history and the timeline; counts
append "@leader" to those that hit the leader):
  partition-one       one node cut off from all other nodes
  partition-halves    a random majority (3) / minority (2) split
  partition-bridge    two sides of 2 nodes; the 5th hears both
  partition-ring      majorities ring: each node hears itself and its two
                      ring neighbours, a majority no two nodes share
  kill                kill -9 of a node, restarted at the repair
  pause               SIGSTOP of a node, SIGCONT at the repair
  loss                nftables drop of 10-40% of packets between nodes
  delay               50-300 ms (jitter 0-50) on every packet between nodes,
                      on one node's or on every node's input (nfq_delay)
  clock               one node's wall clock moved by -60..+60 s
  member              `ringmqctl member remove` of a node from every group
                      of the shard (the leader variant removes the leader,
                      which hands leadership over first), `member add` at
                      the repair: it comes back as a spare and is promoted
                      once caught up. Asked again at the end until it is
                      a voter again. (Not in the default schedule.)

The schedule draws from random.Random(seed) only, so the sequence of fault
kinds, durations and random targets replays with the same seed; which node
is leader at a given moment is the run's own and is printed with each fault.
"""
import random
import threading
import time
import traceback

FAULTS = ("partition-one", "partition-halves", "partition-bridge",
          "partition-ring", "kill", "pause", "loss", "delay", "clock")
ALL_FAULTS = FAULTS + ("member",)
QUIET_S = (2.0, 5.0)
HOLD_S = (3.0, 10.0)


class Nemesis(threading.Thread):
    def __init__(self, lab, recorder, seed, group, faults=FAULTS,
                 log=print):
        super().__init__(name="nemesis", daemon=True)
        self.lab, self.rec, self.group = lab, recorder, group
        self.rng = random.Random(seed)
        self.faults = list(faults)
        self.log = log
        self.stop_event = threading.Event()
        self.counts = {}
        self.error = None
        self.removed = set()  # hosts member-removed and not yet back
        unknown = set(self.faults) - set(ALL_FAULTS)
        if unknown:
            raise ValueError("unknown faults: %s" % ", ".join(sorted(unknown)))

    # ---------------------------------------------------------- targets

    def _pick_target(self, leader_variant):
        """(host, how) — the group's leader when asked for and known."""
        if leader_variant:
            h = self.lab.leader(self.group)
            if h is not None:
                return h, "leader"
        return self.rng.choice(self.lab.hosts), "random"

    def _pick_targets(self, leader_variant):
        """([hosts], how) for faults that hit one node or every node."""
        if self.rng.random() < 0.5:
            return self.lab.hosts, "all"
        h, how = self._pick_target(leader_variant)
        return [h], how

    def _others(self, h):
        return [o.i for o in self.lab.hosts if o is not h]

    # ----------------------------------------------------------- faults

    def _inject(self, kind, leader_variant):
        """Inject @kind; returns (description, repair callable)."""
        lab, rng = self.lab, self.rng
        ids = [h.i for h in lab.hosts]
        if kind == "partition-one":
            h, how = self._pick_target(leader_variant)
            comp = {h.i: {h.i}}
            for o in self._others(h):
                comp[o] = set(self._others(h))
            lab.partition(comp)
            return {"isolated": h.name, "target": how}, lab.heal_partition
        if kind == "partition-halves":
            order = ids[:]
            rng.shuffle(order)
            if leader_variant:
                h, _ = self._pick_target(True)
                order.remove(h.i)
                order.insert(0, h.i)  # the leader ends up in the minority
            minority, majority = set(order[:2]), set(order[2:])
            comp = {i: (minority if i in minority else majority) for i in ids}
            lab.partition(comp)
            return ({"minority": sorted(minority), "majority": sorted(majority),
                     "target": "leader" if leader_variant else "random"},
                    lab.heal_partition)
        if kind == "partition-bridge":
            order = ids[:]
            rng.shuffle(order)
            if leader_variant:
                h, _ = self._pick_target(True)
                order.remove(h.i)
                order.insert(0, h.i)  # the leader is on one side, not the bridge
            a, b, bridge = set(order[:2]), set(order[2:4]), order[4]
            comp = {i: (a | {bridge}) for i in a}
            comp.update({i: (b | {bridge}) for i in b})
            comp[bridge] = set(ids)
            lab.partition(comp)
            return ({"sides": [sorted(a), sorted(b)], "bridge": bridge,
                     "target": "leader" if leader_variant else "random"},
                    lab.heal_partition)
        if kind == "partition-ring":
            order = ids[:]
            rng.shuffle(order)
            n = len(order)
            comp = {order[k]: {order[k], order[(k - 1) % n], order[(k + 1) % n]}
                    for k in range(n)}
            lab.partition(comp)
            return {"ring": order}, lab.heal_partition
        if kind == "kill":
            h, how = self._pick_target(leader_variant)
            h.node.kill9()
            return {"node": h.name, "target": how}, h.node.start
        if kind == "pause":
            h, how = self._pick_target(leader_variant)
            h.node.pause()
            return {"node": h.name, "target": how}, h.node.resume
        if kind == "loss":
            pct = rng.randint(10, 40)
            targets, how = self._pick_targets(leader_variant)
            for h in targets:
                lab.set_loss(h, pct)

            def repair():
                for t in targets:
                    lab.set_loss(t, 0)
            return {"nodes": [t.name for t in targets], "pct": pct,
                    "target": how}, repair
        if kind == "delay":
            ms, jitter = rng.randint(50, 300), rng.randint(0, 50)
            targets, how = self._pick_targets(leader_variant)
            for h in targets:
                lab.start_delay(h, ms, jitter)

            def repair():
                for t in targets:
                    lab.stop_delay(t)
            return {"nodes": [t.name for t in targets], "ms": ms,
                    "jitter_ms": jitter, "target": how}, repair
        if kind == "clock":
            h, how = self._pick_target(leader_variant)
            offset = rng.choice([-1, 1]) * rng.randint(2, 60)
            lab.set_clock(h, offset)
            return ({"node": h.name, "offset_s": offset, "target": how},
                    lambda: lab.set_clock(h, 0))
        if kind == "member":
            h, how = self._pick_target(leader_variant)
            done = lab.member("remove", h)
            self.removed.add(h)

            def repair():
                if lab.member("add", h):
                    self.removed.discard(h)
            return {"node": h.name, "removed": done, "target": how}, repair
        raise ValueError(kind)

    # -------------------------------------------------------------- loop

    def _sleep(self, secs):
        return self.stop_event.wait(secs)

    def run(self):
        try:
            while not self._sleep(self.rng.uniform(*QUIET_S)):
                kind = self.rng.choice(self.faults)
                leader_variant = self.rng.random() < 0.5
                hold = self.rng.uniform(*HOLD_S)
                desc, repair = self._inject(kind, leader_variant)
                # "@leader" only when the fault did hit the leader (it may
                # be unknown, and a ring or an all-node fault has no target)
                name = kind + ("@leader" if desc.get("target") == "leader"
                               else "")
                self.counts[name] = self.counts.get(name, 0) + 1
                self.rec.nemesis("start-" + kind, desc)
                self.log("nemesis: %s %s for %.1fs" % (name, desc, hold))
                self._sleep(hold)
                repair()
                self.rec.nemesis("stop-" + kind, desc)
        except Exception as e:  # noqa: BLE001 - reported by the runner
            self.error = e
            self.log("nemesis: error: %s" % traceback.format_exc())

    def finish(self):
        """Stop scheduling, wait for the current fault's repair, then heal
        everything (a repair that failed must not leave a fault behind)."""
        self.stop_event.set()
        self.join(60)
        self.lab.heal_all()
        for h in sorted(self.removed, key=lambda x: x.i):
            # faults are healed: a member add must go through now
            if not self.lab.member("add", h, seconds=60):
                raise RuntimeError("%s could not be added back" % h.name)
            self.removed.discard(h)
        self.rec.nemesis("heal-all", None)
