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
  reshard             (with a background driver, ReshardDriver, running the
                      coordinator: shard add s2 / weight s2 2 / weight s2 1
                      / shard remove s2, over and over, so arcs move
                      s1 -> s2 and back) a fault in the middle of a move:
                      kill -9 of the coordinator (run again at the repair:
                      it resumes), kill -9 or SIGSTOP of the move's source
                      or target leader (restarted / continued at the
                      repair). The other faults hit the moves too while
                      the driver runs.
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
import os
import random
import signal
import subprocess
import threading
import time
import traceback

from lab import MEMCACHED_PORT, SPARE_SHARD

FAULTS = ("partition-one", "partition-halves", "partition-bridge",
          "partition-ring", "kill", "pause", "loss", "delay", "clock",
          "reshard")
ALL_FAULTS = FAULTS + ("member",)
QUIET_S = (2.0, 5.0)
HOLD_S = (3.0, 10.0)

# The reshard driver's cycle: (verb, args, the arcs' direction): arcs go
# s1 -> s2 (add, heavier s2), then back (lighter s2, remove).
RESHARD_CYCLE = (("add", 1, ("s1", SPARE_SHARD)),
                 ("weight", 2, ("s1", SPARE_SHARD)),
                 ("weight", 1, (SPARE_SHARD, "s1")),
                 ("remove", 0, (SPARE_SHARD, "s1")))
RESHARD_VARIANTS = ("kill-coordinator", "kill-source", "kill-target",
                    "pause-source", "pause-target")
# Copies are paced so a move lasts seconds (the filler keys: ~1 MB), long
# enough for faults to land in the middle of one.
RESHARD_RATE = "96k"
RESHARD_GAP_S = (1.0, 4.0)


class ReshardDriver(threading.Thread):
    """Runs the coordinator (ringmqctl in the root namespace, beside the
    clients) through RESHARD_CYCLE until finish(): each step is run again
    until it exits 0 (a killed or failed coordinator is resumed by running
    the same command again). Between a remove and the next add the spare
    shard's nodes are stopped and a new generation started. Each step is
    recorded as start-reshard-step / stop-reshard-step nemesis ops (with the ring
    before and after), each failed or killed coordinator run as a
    reshard-retry op."""

    def __init__(self, lab, recorder, seed, log=print):
        super().__init__(name="reshard", daemon=True)
        self.lab, self.rec, self.log = lab, recorder, log
        self.rng = random.Random(seed * 7919 + 1)
        self.stop_event = threading.Event()   # no new steps
        self.release = threading.Event()      # not held by a fault
        self.release.set()
        self.lock = threading.Lock()
        self.proc = None
        self.step = None          # (verb, arg, (from, to)) being run
        self.killed = False       # the nemesis killed the current run
        self.counts = {}
        self.runs = 0
        self.steps = []           # done: {"op", "ring", "t0", "t1"}
        self.ring = [("s1", 1)]   # the map's ring as the driver knows it
        self.error = None
        self.log_path = os.path.join(lab.dir, "logs", "reshard.log")

    # ----------------------------------------------------------- helpers

    def _cmd(self, step):
        verb, arg, _ = step
        base = ["--timeout", "2000", "--seconds", "20", "--rate",
                RESHARD_RATE, "shard", verb, SPARE_SHARD]
        if verb == "add":
            return base + ["--weight", str(arg), "--members",
                           self.lab.spare_members()]
        if verb == "weight":
            return base + [str(arg)]
        return base

    def _ring_after(self, step):
        verb, arg, _ = step
        if verb == "remove":
            return [("s1", 1)]
        return [("s1", 1), (SPARE_SHARD, arg)]

    def _run_once(self, step):
        """One coordinator run: its exit status (None if killed by us)."""
        with self.lock:
            self.killed = False
            with open(self.log_path, "ab") as f:
                f.write(("--- %s ringmqctl %s\n" % (
                    time.strftime("%H:%M:%S"),
                    " ".join(self._cmd(step)))).encode())
                f.flush()
                self.proc = subprocess.Popen(
                    [self.lab.ctl_bin, "--cluster", self.lab.map_path] +
                    self._cmd(step), stdin=subprocess.DEVNULL, stdout=f,
                    stderr=subprocess.STDOUT)
            self.runs += 1
        rc = self.proc.wait()
        with self.lock:
            killed = self.killed
            self.proc = None
        with open(self.log_path, "ab") as f:
            f.write(("--- exit %d%s\n" % (rc, " (killed by the nemesis)"
                                          if killed else "")).encode())
        return None if killed else rc

    def _follow(self, deadline):
        """Until every router serves the map's epoch (memcached stats
        router_epoch), as scripts/local-cluster remove-shard waits before
        stopping the shard's nodes."""
        import socket
        r = self.lab.ctl(["map"], timeout=30)
        epoch = None
        for line in r.stdout.splitlines():
            if line.startswith("epoch "):
                epoch = int(line.split()[1])
        if epoch is None:
            return False
        for h in self.lab.hosts:
            while True:
                got = 0
                try:
                    with socket.create_connection((h.ip, MEMCACHED_PORT),
                                                  timeout=2) \
                            as s:
                        s.sendall(b"stats\r\n")
                        data = b""
                        while not data.endswith(b"END\r\n"):
                            chunk = s.recv(65536)
                            if not chunk:
                                break
                            data += chunk
                    for line in data.decode(errors="replace").split("\r\n"):
                        f = line.split()
                        if len(f) == 3 and f[1] == "router_epoch":
                            got = int(f[2])
                except (OSError, ValueError):
                    pass
                if got >= epoch:
                    break
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.2)
        return True

    def _do_step(self, step, final=False):
        """Run @step to its end (rc 0). With @final (after the heal): give
        up after a deadline instead of waiting for finish()."""
        verb, arg, (src, dst) = step
        desc = {"op": "%s %s%s" % (verb, SPARE_SHARD,
                                   " %d" % arg if verb != "remove" else ""),
                "from": src, "to": dst, "ring_before": self.ring,
                "ring_after": self._ring_after(step)}
        if verb == "add" and not self.lab.spare_up:
            self.lab.start_spare()
            desc["generation"] = self.lab.spare_gen
        self.step = step
        t0 = time.monotonic()
        self.rec.nemesis("start-reshard-step", desc)
        self.log("reshard: %s (arcs %s -> %s)" % (desc["op"], src, dst))
        deadline = time.monotonic() + 180
        while True:
            self.release.wait()
            rc = self._run_once(step)
            if rc == 0:
                break
            self.rec.nemesis("reshard-retry", {"op": desc["op"], "exit": rc})
            self.counts["reshard-retry"] = \
                self.counts.get("reshard-retry", 0) + 1
            if final and time.monotonic() > deadline:
                raise RuntimeError("reshard %s did not finish after the "
                                   "heal (see %s)" % (desc["op"],
                                                      self.log_path))
            if rc is not None:
                time.sleep(1.0)   # a fault in the way: try again
        self.ring = desc["ring_after"]
        if verb == "remove":
            # the routers stop sending to s2 before its nodes stop
            if not self._follow(time.monotonic() + 60):
                self.log("reshard: routers do not follow the map yet")
            time.sleep(0.5)
            self.lab.stop_spare()
        self.steps.append({"op": desc["op"], "ring": self.ring,
                           "ring_before": desc["ring_before"],
                           "t0": t0, "t1": time.monotonic()})
        self.step = None
        name = "reshard-" + verb
        self.counts[name] = self.counts.get(name, 0) + 1
        self.rec.nemesis("stop-reshard-step", desc)
        self.log("reshard: %s done" % desc["op"])

    # -------------------------------------------------------------- loop

    def run(self):
        i = 0
        try:
            while not self.stop_event.wait(self.rng.uniform(*RESHARD_GAP_S)):
                self._do_step(RESHARD_CYCLE[i % len(RESHARD_CYCLE)])
                i += 1
        except Exception as e:  # noqa: BLE001 - reported by the runner
            self.error = e
            self.log("reshard: error: %s" % traceback.format_exc())
        self.next_i = i

    def running_move(self):
        """(from, to) of the step being run, or None."""
        with self.lock:
            if self.proc is None or self.step is None:
                return None
            return self.step[2]

    def kill_coordinator(self):
        """kill -9 of the running coordinator; held until release()."""
        with self.lock:
            if self.proc is None:
                return False
            self.release.clear()
            self.killed = True
            self.proc.send_signal(signal.SIGKILL)
            return True

    def finish(self):
        """After the heal: the step that was running is run to its end
        (the coordinator resumes the plan), nothing new is started."""
        self.stop_event.set()
        self.release.set()
        self.join(240)
        if self.is_alive():
            raise RuntimeError("reshard driver does not finish")
        if self.step is not None:
            # the step broke off with an error: run it to its end
            self._do_step(self.step, final=True)
        r = self.lab.ctl(["plan", "status"], timeout=60)
        if not r.stdout.startswith("no plan"):
            raise RuntimeError("a plan remains after the heal: %s"
                               % r.stdout.strip())


class Nemesis(threading.Thread):
    def __init__(self, lab, recorder, seed, group, faults=FAULTS,
                 log=print):
        super().__init__(name="nemesis", daemon=True)
        self.reshard = None
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
        if "reshard" in self.faults:
            self.reshard = ReshardDriver(lab, recorder, seed, log=log)

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
        if kind == "reshard":
            return self._inject_reshard()
        if kind == "member":
            h, how = self._pick_target(leader_variant)
            done = lab.member("remove", h)
            self.removed.add(h)

            def repair():
                if lab.member("add", h):
                    self.removed.discard(h)
            return {"node": h.name, "removed": done, "target": how}, repair
        raise ValueError(kind)

    def _inject_reshard(self):
        """A fault in the middle of a move: waits (up to 8 s) for the
        driver to be running a step."""
        variant = self.rng.choice(RESHARD_VARIANTS)
        move = None
        deadline = time.monotonic() + 8
        while move is None and time.monotonic() < deadline and \
                not self.stop_event.is_set():
            move = self.reshard.running_move()
            if move is None:
                time.sleep(0.2)
        desc = {"variant": variant, "move": list(move) if move else None}
        if move is None:
            desc["target"] = "none (no move running)"
            return desc, lambda: None
        if variant == "kill-coordinator":
            if not self.reshard.kill_coordinator():
                desc["target"] = "none (the coordinator had ended)"
                return desc, lambda: None
            desc["target"] = "coordinator"
            return desc, self.reshard.release.set
        group = move[0] if variant.endswith("source") else move[1]
        h, p = self.lab.leader_proc(group)
        if p is None:
            desc["target"] = "none (%s has no leader)" % group
            return desc, lambda: None
        desc.update({"group": group, "node": h.name, "target": "leader"})
        lab = self.lab

        def repair():
            # not if the process left meanwhile (the spare shard stopped
            # after a remove): it would run on, unknown to the lab
            if any(q is p for q in lab.procs(h)):
                if variant.startswith("kill"):
                    p.start()
                else:
                    p.resume()
        if variant.startswith("kill"):
            p.kill9()
        else:
            p.pause()
        return desc, repair

    # -------------------------------------------------------------- loop

    def start(self):
        super().start()
        if self.reshard is not None:
            self.reshard.start()

    def all_counts(self):
        c = dict(self.counts)
        if self.reshard is not None:
            c.update(self.reshard.counts)
        return c

    def _sleep(self, secs):
        return self.stop_event.wait(secs)

    def run(self):
        try:
            # reshard faults need a move running and are drawn more often
            # (a quarter of the time) so that short runs see them too
            choices = self.faults + (["reshard"] * 2
                                     if "reshard" in self.faults and
                                     len(self.faults) > 1 else [])
            while not self._sleep(self.rng.uniform(*QUIET_S)):
                kind = self.rng.choice(choices)
                leader_variant = self.rng.random() < 0.5
                hold = self.rng.uniform(*HOLD_S)
                desc, repair = self._inject(kind, leader_variant)
                # "@leader" only when the fault did hit the leader (it may
                # be unknown, and a ring or an all-node fault has no target)
                name = kind + ("@leader" if desc.get("target") == "leader"
                               else "")
                if kind == "reshard":
                    name = "reshard-%s%s" % (desc["variant"], "" if
                                             desc["move"] else " (idle)")
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
        if self.reshard is not None:
            self.reshard.stop_event.set()  # no new step while we heal
        self.lab.heal_all()
        for h in sorted(self.removed, key=lambda x: x.i):
            # faults are healed: a member add must go through now
            if not self.lab.member("add", h, seconds=60):
                raise RuntimeError("%s could not be added back" % h.name)
            self.removed.discard(h)
        self.rec.nemesis("heal-all", None)
        if self.reshard is not None:
            # the coordinator runs (or is run again) to the plan's end
            self.reshard.finish()
            self.rec.nemesis("reshard-finished",
                             {"ring": self.reshard.ring,
                              "steps": len(self.reshard.steps)})
