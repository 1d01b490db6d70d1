"""Nemeses for the fault lab: faults chosen and timed by a seeded random
schedule, each recorded in the history as a nemesis op.

A cycle is: a quiet spell (QUIET_S), then one fault held for HOLD_S, then its
repair. Each fault has a plain and a leader-targeted variant: the target is
then the current leader of the workload's Raft group (the cache group "s1"
for the register workload, the queue group "s1.mq" for the queue workload,
or "s2.mq" while the reshard nemesis has moved the queue to s2; kill and
pause then hit that node process), which is where a fault does the most
harm.

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
  clock-jump          the leader's wall clock jumps an hour, +3600 s or
                      -3600 s (drawn), held, then set back: a jump each
                      way. The fault holds from when the node's wall clock
                      (its HTTP Date header) shows the jump; the repair
                      waits until it shows it no more
  pause-long          SIGSTOP of the leader for LONG_PAUSE_S (20 s)
  pause-router        SIGSTOP of a router its clients use, LONG_PAUSE_S
  pause-standalone    SIGSTOP of the standalone node (lab.py; the register
                      workload's standalone clients), LONG_PAUSE_S
  restart-memory      a rolling restart of shard s1: each node in turn
                      (order drawn) stopped (SIGTERM) and started with a
                      -m (memory limit, MB) drawn from RESTART_MEMORY_MB,
                      none the shard's (the default 64): the node logs
                      that its flag is not the shard's and keeps the
                      limit in the log (its s1 replica's status must show
                      the leader's limit, or the run is invalid: the
                      nemesis's problems). The next node only once this one
                      has applied what it had committed (up to 30 s);
                      the run checks afterwards that every group's
                      replicas agree (index and digest)
  reshard             (with a background driver, ReshardDriver, running the
                      coordinator: shard add s2 / weight s2 2 / weight s2 1
                      / shard remove s2, over and over, so arcs move
                      s1 -> s2 and back) a fault in the middle of a move:
                      kill -9 of the coordinator (run again at the repair:
                      it resumes), kill -9 or SIGSTOP of the move's source
                      or target leader (restarted / continued at the
                      repair). The other faults hit the moves too while
                      the driver runs. With the queue workload the driver
                      also moves the workload's queue between s1 and s2
                      (`ringmqctl queue move`: onto the new s2, back and
                      forth, off s2 before its removal), each queue step
                      with a fault of its own drawn from the seed: kill -9
                      of the coordinator at a stage of the move, then a
                      rerun or `queue abort` first; kill -9 of the source's
                      or target's queue-group leader at a stage.
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
          "clock-jump", "pause-long", "pause-router", "pause-standalone",
          "restart-memory", "reshard")
ALL_FAULTS = FAULTS + ("member",)
# faults that always aim at the leader of the workload's group, waiting
# up to LEADER_WAIT_S for one (then a random node, as the others do)
LEADER_ONLY = ("clock-jump", "pause-long")
LEADER_WAIT_S = 10.0
QUIET_S = (2.0, 5.0)
HOLD_S = (3.0, 10.0)
LONG_PAUSE_S = 20.0
CLOCK_JUMP_S = 3600
# -m of the restarted nodes: all unlike the shard's limit (the nodes'
# default, 64 MB, seeded into s1's log by its first leader); 1 MB is less
# than the filler keys take, so a node that used its flag would evict
RESTART_MEMORY_MB = (1, 16, 256)
LOG_FLAGS_DIFFER = "are not the shard's"

# The reshard driver's cycle: (verb, args, the arcs' direction): arcs go
# s1 -> s2 (add, heavier s2), then back (lighter s2, remove).
RESHARD_CYCLE = (("add", 1, ("s1", SPARE_SHARD)),
                 ("weight", 2, ("s1", SPARE_SHARD)),
                 ("weight", 1, (SPARE_SHARD, "s1")),
                 ("remove", 0, (SPARE_SHARD, "s1")))
# The queue workload's cycle: the same shard steps with queue steps among
# them (`ringmqctl queue move QUEUE SHARD`): the workload's queue moves onto
# the freshly added s2, back to s1 and to s2 again around the reweight, and
# off s2 before its removal ("queue-off": a shard the queue directory
# places queues on cannot start draining; now and then a `shard remove`
# that must be refused, naming the queue, comes first).
RESHARD_CYCLE_QUEUE = (("add", 1, ("s1", SPARE_SHARD)),
                       ("queue", SPARE_SHARD, ("s1", SPARE_SHARD)),
                       ("weight", 2, ("s1", SPARE_SHARD)),
                       ("queue", "s1", (SPARE_SHARD, "s1")),
                       ("queue", SPARE_SHARD, ("s1", SPARE_SHARD)),
                       ("weight", 1, (SPARE_SHARD, "s1")),
                       ("queue-off", "s1", (SPARE_SHARD, "s1")),
                       ("remove", 0, (SPARE_SHARD, "s1")))
RESHARD_VARIANTS = ("kill-coordinator", "kill-source", "kill-target",
                    "pause-source", "pause-target")
# What a queue step does to its own move, drawn per step: nothing; kill -9
# of the coordinator when it reports a stage, then a rerun finishes the
# move, or `queue abort` first (refused once the target's copy is
# complete: then the rerun finishes it; after an abort the rerun moves it
# anew); kill -9 of the node that led the source's or the target's queue
# group when the step began, at that stage (restarted 1-4 s later, drawn;
# the coordinator asks the new leader, or fails and is run again).
QUEUE_FAULTS = ("none", "kill-coordinator", "kill-coordinator-abort",
                "kill-source", "kill-target")
# The stages `queue move` reports ("queue Q: <stage> ..." lines, in order):
# after MOVE_BEGIN, MOVE_OUT, the last MOVE_IN, MOVE_IN_END, MOVE_DONE.
QUEUE_STAGES = ("moving", "frozen", "copied", "serving", "handed off")
QUEUE_GAP_S = (0.5, 2.0)


def parse_queue_fault(text):
    """"FAULT@STAGE" (run --queue-fault) as (fault, stage)."""
    fault, _, stage = text.partition("@")
    if fault not in QUEUE_FAULTS or (stage not in QUEUE_STAGES and
                                     fault != "none"):
        raise ValueError("--queue-fault: FAULT@STAGE with FAULT one of %s "
                         "and STAGE one of %s" % (", ".join(QUEUE_FAULTS),
                                                  ", ".join(QUEUE_STAGES)))
    return fault, stage or QUEUE_STAGES[0]
# Copies are paced so a move lasts seconds (the filler keys: ~1 MB), long
# enough for faults to land in the middle of one.
RESHARD_RATE = "96k"
RESHARD_GAP_S = (1.0, 4.0)


class ReshardDriver(threading.Thread):
    """Runs the coordinator (ringmqctl in the root namespace, beside the
    clients) through RESHARD_CYCLE (RESHARD_CYCLE_QUEUE with @queue, the
    queue workload's queue) until finish(): each step is run again until
    it exits 0 (a killed or failed coordinator is resumed by running the
    same command again). Between a remove and the next add the spare
    shard's nodes are stopped and a new generation started. Each step is
    recorded as start-reshard-step / stop-reshard-step nemesis ops (with
    the ring before and after), each failed or killed coordinator run as a
    reshard-retry op; a queue step's own fault as start-queue-fault /
    stop-queue-fault, a refused removal as reshard-remove-refused.
    Everything the driver decides (gaps, queue faults and their stages,
    the refused removals) is drawn from its own random.Random(seed), the
    same number of draws per step whatever happens in the run."""

    def __init__(self, lab, recorder, seed, queue=None, queue_fault=None,
                 log=print):
        super().__init__(name="reshard", daemon=True)
        self.lab, self.rec, self.log = lab, recorder, log
        self.queue = queue
        # (fault, stage) every queue step gets instead of its draw (the
        # draws are made all the same): to replay one scenario
        self.queue_fault = queue_fault
        self.cycle = RESHARD_CYCLE_QUEUE if queue else RESHARD_CYCLE
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
        self.queue_steps = []     # done: what each queue step did
        self.problems = []        # wrong answers seen by the driver
        self.ring = [("s1", 1)]   # the map's ring as the driver knows it
        self.queue_at = "s1"      # where the driver put the queue
        self.error = None
        self.log_path = os.path.join(lab.dir, "logs", "reshard.log")

    # ----------------------------------------------------------- helpers

    def _count(self, name):
        self.counts[name] = self.counts.get(name, 0) + 1

    def _cmd(self, step):
        verb, arg, _ = step
        base = ["--timeout", "2000", "--seconds", "20"]
        if verb in ("queue", "queue-off"):
            return base + ["queue", "move", self.queue, arg]
        base += ["--rate", RESHARD_RATE, "shard", verb, SPARE_SHARD]
        if verb == "add":
            return base + ["--weight", str(arg), "--members",
                           self.lab.spare_members()]
        if verb == "weight":
            return base + [str(arg)]
        return base

    def _ring_after(self, step):
        verb, arg, _ = step
        if verb in ("queue", "queue-off"):
            return self.ring
        if verb == "remove":
            return [("s1", 1)]
        return [("s1", 1), (SPARE_SHARD, arg)]

    def _run_once(self, step, args=None, on_line=None):
        """One coordinator run (`ringmqctl --cluster MAP` + the step's
        arguments, or @args): (exit status or None if the nemesis killed
        it, its output). Its output goes to the log as it comes; with
        @on_line, each line is also handed to it (it may kill the run)."""
        args = args or self._cmd(step)
        out = []
        with self.lock:
            self.killed = False
            with open(self.log_path, "ab") as f:
                f.write(("--- %s ringmqctl %s\n" % (
                    time.strftime("%H:%M:%S"), " ".join(args))).encode())
            self.proc = subprocess.Popen(
                [self.lab.ctl_bin, "--cluster", self.lab.map_path] + args,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT)
            proc = self.proc
            self.runs += 1
        with open(self.log_path, "ab") as f:
            for raw in proc.stdout:
                f.write(raw)
                f.flush()
                line = raw.decode(errors="replace").rstrip("\n")
                out.append(line)
                if on_line is not None:
                    on_line(line, proc)
        rc = proc.wait()
        proc.stdout.close()
        with self.lock:
            killed = self.killed
            self.proc = None
        with open(self.log_path, "ab") as f:
            f.write(("--- exit %d%s\n" % (rc, " (killed by the nemesis)"
                                          if killed else "")).encode())
        return (None if killed else rc), "\n".join(out)

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

    def _until_done(self, step, desc, final, deadline, first=()):
        """Run @step until it exits 0 (@first: (rc,) of a run made
        already). Each failed or killed run is a reshard-retry."""
        while True:
            if first:
                rc, first = first[0], ()
            else:
                self.release.wait()
                rc, _ = self._run_once(step)
            if rc == 0:
                return
            self.rec.nemesis("reshard-retry", {"op": desc["op"], "exit": rc})
            self._count("reshard-retry")
            if final and time.monotonic() > deadline:
                raise RuntimeError("reshard %s did not finish after the "
                                   "heal (see %s)" % (desc["op"],
                                                      self.log_path))
            if rc is not None:
                time.sleep(1.0)   # a fault in the way: try again

    def _do_step(self, step, final=False):
        """Run @step to its end (rc 0). With @final (after the heal): give
        up after a deadline instead of waiting for finish()."""
        verb, arg, (src, dst) = step
        if verb in ("queue", "queue-off"):
            op = "queue %s %s" % (self.queue, arg)
        else:
            op = "%s %s%s" % (verb, SPARE_SHARD,
                              " %d" % arg if verb != "remove" else "")
        desc = {"op": op, "from": src, "to": dst, "ring_before": self.ring,
                "ring_after": self._ring_after(step)}
        if verb == "add" and not self.lab.spare_up:
            self.lab.start_spare()
            desc["generation"] = self.lab.spare_gen
        self.step = step
        t0 = time.monotonic()
        self.rec.nemesis("start-reshard-step", desc)
        self.log("reshard: %s (%s %s -> %s)" % (
            desc["op"], "queue" if verb.startswith("queue") else "arcs",
            src, dst))
        deadline = time.monotonic() + 180
        if verb in ("queue", "queue-off"):
            self._queue_step(step, desc, final, deadline)
        else:
            self._until_done(step, desc, final, deadline)
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
        self._count("queue-move" if verb.startswith("queue")
                    else "reshard-" + verb)
        self.rec.nemesis("stop-reshard-step", desc)
        self.log("reshard: %s done" % desc["op"])

    # ------------------------------------------------------ queue steps

    def _draw_queue_fault(self, verb):
        """The queue step's own fault, its stage, how long a killed leader
        stays down, and the refused-removal probe: the same draws every
        time."""
        fault = self.rng.choice(QUEUE_FAULTS)
        stage = self.rng.choice(QUEUE_STAGES)
        down_s = self.rng.uniform(1.0, 4.0)
        probe = self.rng.random() < 0.5
        if self.queue_fault is not None:
            fault, stage = self.queue_fault
        return fault, stage, down_s, probe and verb == "queue-off"

    def _where(self):
        """(shard, gen, moving-to or None) from `queue where`, or None."""
        return self.lab.queue_where(self.queue)

    def _probe_remove(self, desc):
        """`shard remove s2` while the directory places the queue there:
        must be refused, naming it. A run that failed for another reason
        (a fault in the way) is tried again, up to 3 times."""
        for _ in range(3):
            self.release.wait()
            rc, out = self._run_once(None, args=[
                "--timeout", "2000", "--seconds", "20", "--rate",
                RESHARD_RATE, "shard", "remove", SPARE_SHARD])
            if rc == 0:
                self.problems.append(
                    "shard remove %s succeeded while the directory placed "
                    "%s there" % (SPARE_SHARD, self.queue))
                self.log("reshard: PROBLEM: %s" % self.problems[-1])
                return "ACCEPTED"
            if rc is not None and "holds" in out and self.queue in out:
                self.rec.nemesis("reshard-remove-refused",
                                 {"op": desc["op"], "exit": rc})
                self._count("reshard-remove-refused")
                return "refused"
            time.sleep(1.0)
        return "inconclusive"

    def _queue_step(self, step, desc, final, deadline):
        """Move the queue to the step's shard, with the step's own fault,
        then check where the directory says it is."""
        verb, dst, (src, _) = step
        info = {"op": desc["op"], "from": src, "to": dst}
        if final:
            fault, stage, down_s, probe = "none", None, 0, False
        else:
            fault, stage, down_s, probe = self._draw_queue_fault(verb)
        info["fault"] = fault
        if probe and self.queue_at == SPARE_SHARD:
            info["remove_probe"] = self._probe_remove(desc)
        if fault != "none":
            info["stage"] = stage
        victim = None                 # (host, proc, group) to kill
        if fault in ("kill-source", "kill-target"):
            group = (src if fault == "kill-source" else dst) + ".mq"
            h, p = self.lab.leader_proc(group)
            if p is not None:
                victim = (h, p, group)
                info.update({"group": group, "node": h.name})
            else:
                info["target"] = "none (%s has no leader)" % group
        fired = {}
        prefix = "queue %s: %s" % (self.queue, stage)

        def on_line(line, proc):
            if fault == "none" or fired or not line.startswith(prefix):
                return
            fired["at"] = line
            if fault.startswith("kill-coordinator"):
                proc.kill()
            elif victim is not None:
                h, p, _ = victim
                p.kill9()
                lab = self.lab

                def restart():
                    # not if it left meanwhile (the spare shard stopped)
                    if any(q is p for q in lab.procs(h)):
                        p.start()   # a no-op if it runs (healed)
                t = threading.Timer(down_s, restart)
                t.daemon = True
                t.start()
                info["down_s"] = round(down_s, 1)
            fdesc = dict(info)
            fdesc["line"] = line
            self.rec.nemesis("start-queue-fault", fdesc)
            self.log("reshard: queue fault %s at '%s'" % (fault, line))

        self.release.wait()
        runs0 = self.runs
        rc, out = self._run_once(step, on_line=on_line)
        if fired:
            info["fired"] = fired["at"]
            self._count("queue-" + fault)
            self.rec.nemesis("stop-queue-fault", info)
        elif fault != "none":
            info["fired"] = None  # the stage never came (e.g. a rerun)
        if fault == "kill-coordinator-abort" and fired:
            info["abort"] = self._abort(desc)
        self._until_done(step, desc, final, deadline, first=(rc,))
        info["coordinator_runs"] = self.runs - runs0
        # the directory must name the target, no move pending; a meta
        # replica that answers as leader may be behind (a partition): a
        # wrong answer counts only if it stays wrong for 30 s
        t_end = time.monotonic() + 30
        while True:
            got = self._where()
            if (got is not None and got[0] == dst and got[2] is None) or \
                    time.monotonic() > t_end:
                break
            time.sleep(1.0)
        info["where"] = list(got) if got else None
        if got is not None and (got[0] != dst or got[2] is not None):
            self.problems.append("after `queue move %s %s` exited 0, "
                                 "queue where says %s" % (self.queue, dst,
                                                          " ".join(map(
                                                              str, got))))
            self.log("reshard: PROBLEM: %s" % self.problems[-1])
        self.queue_at = dst
        self.queue_steps.append(info)

    def _abort(self, desc):
        """`queue abort` until it answers: "aborted", or "refused" (the
        copy at the target was complete, or the source had handed the
        queue off: only a rerun finishes the move)."""
        for _ in range(20):
            self.release.wait()
            rc, out = self._run_once(None, args=[
                "--timeout", "2000", "--seconds", "20", "queue", "abort",
                self.queue])
            if rc == 0:
                self._count("queue-abort")
                self.rec.nemesis("queue-abort", {"op": desc["op"],
                                                 "output": out[-300:]})
                return "aborted" if "stays on" in out else "not moving"
            if rc is not None and "finish the move" in out:
                self._count("queue-abort-refused")
                self.rec.nemesis("queue-abort-refused", {"op": desc["op"]})
                return "refused"
            time.sleep(1.0)
        return "failed"

    # -------------------------------------------------------------- loop

    def run(self):
        i = 0
        try:
            while True:
                step = self.cycle[i % len(self.cycle)]
                gap = QUEUE_GAP_S if step[0].startswith("queue") \
                    else RESHARD_GAP_S
                if self.stop_event.wait(self.rng.uniform(*gap)):
                    break
                self._do_step(step)
                i += 1
        except Exception as e:  # noqa: BLE001 - reported by the runner
            self.error = e
            self.log("reshard: error: %s" % traceback.format_exc())
        self.next_i = i

    def running_move(self):
        """The groups (from, to) of the step being run, or None: the
        shards' cache groups for key moves, their queue groups for a
        queue move."""
        with self.lock:
            if self.proc is None or self.step is None:
                return None
            src, dst = self.step[2]
            if self.step[0].startswith("queue"):
                return src + ".mq", dst + ".mq"
            return src, dst

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
                 queue=None, queue_fault=None, first=(), router_hosts=None,
                 log=print):
        """@first: fault kinds injected first, in this order, instead of
        the drawn ones (each kind is still drawn, and dropped); @router_hosts:
        the hosts whose routers have clients (pause-router picks one)."""
        super().__init__(name="nemesis", daemon=True)
        self.reshard = None
        self.lab, self.rec, self.group = lab, recorder, group
        self.rng = random.Random(seed)
        self.faults = list(faults)
        self.first = list(first)
        self.router_hosts = list(router_hosts or lab.hosts)
        self.log = log
        self.stop_event = threading.Event()
        self.counts = {}
        self.error = None
        self.removed = set()  # hosts member-removed and not yet back
        self.problems = []    # wrong answers seen by a fault (restart-memory)
        unknown = set(self.faults) - set(ALL_FAULTS)
        if unknown:
            raise ValueError("unknown faults: %s" % ", ".join(sorted(unknown)))
        if set(self.first) - set(self.faults):
            raise ValueError("first faults not among the faults: %s" %
                             ", ".join(sorted(set(self.first) -
                                              set(self.faults))))
        if "pause-standalone" in self.faults and lab.standalone is None:
            raise ValueError("pause-standalone: the lab has no standalone "
                             "node")
        if "reshard" in self.faults:
            self.reshard = ReshardDriver(lab, recorder, seed, queue=queue,
                                         queue_fault=queue_fault, log=log)

    # ---------------------------------------------------------- targets

    def _target_group(self):
        """The group whose leader the leader variants hit: the workload's,
        for the queue workload the queue group of the shard the reshard
        driver last moved the queue to."""
        if self.reshard is not None and self.reshard.queue:
            return self.reshard.queue_at + ".mq"
        return self.group

    def _pick_target(self, leader_variant, wait_s=0):
        """(host, how) — the group's leader when asked for and known."""
        h, how, _ = self._pick_target_proc(leader_variant, wait_s)
        return h, how

    def _pick_target_proc(self, leader_variant, wait_s=0):
        """(host, how, node process) — the group's leader's when asked for
        and known within @wait_s (an election may be under way; the
        spare shard's node for a group of s2), else a random host's s1
        node."""
        if leader_variant:
            deadline = time.monotonic() + wait_s
            while True:
                h, p = self.lab.leader_proc(self._target_group())
                if h is not None:
                    return h, "leader", p
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
        h = self.rng.choice(self.lab.hosts)
        return h, "random", h.node

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
        if kind == "clock-jump":
            return self._inject_clock_jump()
        if kind == "pause-router":
            h = rng.choice(self.router_hosts)
            h.router.pause()
            return {"router": "r%d" % h.i, "target": "router"}, \
                h.router.resume
        if kind == "pause-standalone":
            lab.standalone.pause()
            return {"node": "standalone", "target": "standalone"}, \
                lab.standalone.resume
        if kind == "restart-memory":
            # only the draws: run() does the restart (the fault's span)
            order = [h.name for h in lab.hosts]
            rng.shuffle(order)
            mb = [rng.choice(RESTART_MEMORY_MB) for _ in order]
            return {"order": order, "memory_mb": mb, "restarts": []}, \
                lambda: None
        if kind in ("kill", "pause", "pause-long"):
            h, how, p = self._pick_target_proc(
                leader_variant, LEADER_WAIT_S if kind in LEADER_ONLY else 0)
            lab = self.lab

            def repair():
                # not if it left meanwhile (the spare shard stopped after
                # a remove): it would run on, unknown to the lab
                if any(q is p for q in lab.procs(h)):
                    if kind == "kill":
                        p.start()
                    else:
                        p.resume()
            if kind == "kill":
                p.kill9()
            else:
                p.pause()
            return {"node": h.name + ("" if p is h.node else "-s2"),
                    "target": how}, repair
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

    def _inject_clock_jump(self):
        """The leader's host's wall clock an hour ahead or back (both its
        node processes read the same clock file), once the node shows it;
        the repair sets it back and waits until the node shows that."""
        lab = self.lab
        h, how, p = self._pick_target_proc(True, LEADER_WAIT_S)
        offset = self.rng.choice([-1, 1]) * CLOCK_JUMP_S
        lab.set_clock(h, offset)
        desc = {"node": h.name + ("" if p is h.node else "-s2"),
                "offset_s": offset, "target": how,
                "seen_after_s": lab.wait_clock(h, offset, p)}

        def repair():
            lab.set_clock(h, 0)
            desc["back_after_s"] = lab.wait_clock(h, 0, p)
        return desc, repair

    def _rolling_restart(self, desc):
        """Restart s1's nodes one by one with the drawn -m flags (@desc
        from _inject); stops early when the run ends. Each restart is
        noted in @desc: the node, its flag, how long it took to answer and
        to catch up, whether it logged that its flag is not the shard's."""
        by_name = {h.name: h for h in self.lab.hosts}
        for name, mb in zip(desc["order"], desc["memory_mb"]):
            if self.stop_event.is_set():
                desc["cut_short"] = True
                break
            h = by_name[name]
            try:
                log_start = os.path.getsize(h.node.log_path)
            except OSError:
                log_start = 0
            before = self._shard_limit()
            answered, caught_up, was_running = self.lab.restart_node(
                h, {"-m": mb})
            r = {"node": name, "memory_mb": mb, "answered_s": answered,
                 "caught_up_s": caught_up,
                 "logged_flags_differ": self._logged_since(
                     h.node.log_path, log_start, LOG_FLAGS_DIFFER),
                 "limit_bytes": self._node_limit(h),
                 "shard_limit_bytes": before}
            if not was_running:
                r["was_down"] = True   # killed by another fault meanwhile
            desc["restarts"].append(r)
            self.log("nemesis: restart-memory: %s" % r)
            if None not in (before, r["limit_bytes"]) and \
                    r["limit_bytes"] != before:
                self.problems.append(
                    "%s restarted with -m %d: its s1 replica's limit is %d "
                    "bytes, the shard's %d" % (name, mb, r["limit_bytes"],
                                               before))
                self.log("nemesis: PROBLEM: %s" % self.problems[-1])

    def _node_limit(self, h):
        """The memory limit node @h's s1 replica applies (status
        limit_maxbytes: the cache state machine's), or None."""
        st = self.lab.group_status(h).get("s1")
        return int(st["limit_maxbytes"]) if st and \
            "limit_maxbytes" in st else None

    def _shard_limit(self):
        """s1's memory limit as its leader applies it, or None."""
        h, p = self.lab.leader_proc("s1")
        return self._node_limit(h) if h is not None and p is h.node \
            else None

    @staticmethod
    def _logged_since(path, offset, text, timeout=10):
        """Whether @text is in the log at @path past @offset, waiting up to
        @timeout for it (a group may apply its settings after it answers)."""
        deadline = time.monotonic() + timeout
        while True:
            with open(path, "rb") as f:
                f.seek(offset)
                if text in f.read().decode(errors="replace"):
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

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
                if self.first:
                    kind = self.first.pop(0)
                leader_variant = self.rng.random() < 0.5 or \
                    kind in LEADER_ONLY
                hold = self.rng.uniform(*HOLD_S)
                if kind.startswith("pause-"):
                    hold = LONG_PAUSE_S
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
                if kind == "restart-memory":
                    self.log("nemesis: %s %s" % (name, desc))
                    self._rolling_restart(desc)
                else:
                    self.log("nemesis: %s %s for %.1fs" % (name, desc,
                                                           hold))
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
