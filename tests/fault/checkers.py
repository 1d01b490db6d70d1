#!/usr/bin/python3
"""Checkers of fault-run histories (history.py), from the history alone.

register  per key, linearizability of a compare-and-set register: each key's
          operations go, as a Jepsen log, to lincheck (the C search,
          lincheck.h); fail reads/writes did nothing, info ops may have
          happened at any time after their call, or never.
queue     Jepsen's total-queue: every acknowledged (confirmed) enqueue is
          dequeued at least once (lost = 0) and nothing is dequeued that was
          never attempted (unexpected = 0); values dequeued more than once
          (duplicated, allowed: delivery is at-least-once) and values
          dequeued whose enqueue was not acknowledged (recovered) are counted.

  checkers.py --workload register|queue [--lincheck PATH] [--keep DIR] HISTORY

prints the verdict and counts; exit 0 valid, 1 invalid, 2 undecided/error.
"""
import argparse
import collections
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import history  # noqa: E402

LINCHECK_DEFAULT = os.path.join(HERE, "..", "..", "build", "tests", "fault",
                                "lincheck")
LC_MAX_OPS = 4096  # lincheck.h: longer per-key histories are not searched


def client_ops(hist):
    return [op for op in hist if op["process"] != "nemesis"]


def op_counts(hist):
    """{f: {"ok": n, "fail": n, "info": n}} over completions."""
    counts = collections.defaultdict(lambda: {"ok": 0, "fail": 0, "info": 0})
    for op in client_ops(hist):
        if op["type"] != "invoke":
            counts[op["f"]][op["type"]] += 1
    return dict(counts)


# ------------------------------------------------------------------ register

def _edn(v):
    if v is None:
        return "nil"
    if isinstance(v, list):
        return "[%s]" % " ".join(_edn(x) for x in v)
    return str(int(v))


def jepsen_log(ops):
    """A key's ops as lincheck's Jepsen log lines (line order = time)."""
    lines = []
    for op in ops:
        value = ":timed-out" if (op["type"] == "info" and op["f"] == "read") \
            else _edn(op.get("value"))
        lines.append("INFO  jepsen.util - %s\t:%s\t:%s\t%s"
                     % (op["process"], op["type"], op["f"], value))
    return "\n".join(lines) + "\n"


def check_register(hist, lincheck_bin=LINCHECK_DEFAULT, keep_dir=None):
    """{"valid": True/False/None, "keys": {key: {"valid", "ops", "file"}}}.
    A key whose history is too long to search is undecided (None)."""
    by_key = collections.OrderedDict()
    for op in client_ops(hist):
        if op["f"] in ("read", "write", "cas"):
            by_key.setdefault(op["key"], []).append(op)
    work = keep_dir or tempfile.mkdtemp(prefix="ringmq-lincheck-")
    os.makedirs(work, exist_ok=True)
    keys, files = {}, []
    for i, (key, ops) in enumerate(by_key.items()):
        n_calls = sum(1 for op in ops if op["type"] == "invoke")
        path = os.path.join(work, "key-%04d.log" % i)
        with open(path, "w") as f:
            f.write(jepsen_log(ops))
        keys[key] = {"ops": n_calls, "file": path if keep_dir else None,
                     "valid": None}
        if n_calls <= LC_MAX_OPS:
            files.append((key, path))
    if files:
        r = subprocess.run([lincheck_bin] + [p for _, p in files],
                           capture_output=True, text=True, timeout=1800)
        verdicts = {}
        for line in r.stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) >= 2:
                verdicts[parts[0]] = (parts[1], line)
        for key, path in files:
            v = verdicts.get(path)
            if v is None:
                keys[key]["error"] = r.stderr.strip()[-300:]
                continue
            keys[key]["valid"] = v[0] == "linearizable"
            if not keys[key]["valid"]:
                keys[key]["detail"] = v[1].replace(path, key)
    if not keep_dir:
        for _, path in files:
            os.unlink(path)
        for name in os.listdir(work):
            os.unlink(os.path.join(work, name))
        os.rmdir(work)
    verdicts = [k["valid"] for k in keys.values()]
    valid = False if False in verdicts else None if None in verdicts else True
    return {"valid": valid, "keys": keys}


# --------------------------------------------------------------------- queue

def check_queue(hist):
    attempts, acknowledged = set(), set()
    dequeued = collections.Counter()
    for op in client_ops(hist):
        f, t = op["f"], op["type"]
        if f == "enqueue":
            if t == "invoke":
                attempts.add(op["value"])
            elif t == "ok":
                acknowledged.add(op["value"])
        elif f == "dequeue" and t == "ok":
            dequeued[op["value"]] += 1
        elif f == "drain" and t == "ok":
            dequeued.update(op["value"])
    seen = set(dequeued)
    lost = sorted(acknowledged - seen)
    unexpected = sorted(seen - attempts)
    duplicated = {v: n for v, n in sorted(dequeued.items()) if n > 1}
    recovered = sorted(seen & (attempts - acknowledged))
    res = {"valid": not lost and not unexpected,
           "attempted": len(attempts), "acknowledged": len(acknowledged),
           "dequeued": len(seen), "lost": lost, "unexpected": unexpected,
           "duplicated": duplicated, "recovered": recovered}
    for k in ("lost", "unexpected", "duplicated", "recovered"):
        res[k + "_count"] = len(res[k])
    for k in ("attempted", "acknowledged", "dequeued"):
        res[k + "_count"] = res[k]
    return res


# ------------------------------------------------------------------ timeline

def timeline(hist, bucket_s=None):
    """One line per time bucket: ok/fail/info per op kind, and the nemesis
    events that happened in it. The bucket grows so a long run stays under
    ~120 lines."""
    if not hist:
        return ""
    end_s = hist[-1]["time"] / 1e9
    if bucket_s is None:
        bucket_s = 1.0
        while end_s / bucket_s > 120:
            bucket_s *= 2
    rows = collections.OrderedDict()
    for op in hist:
        b = int(op["time"] / 1e9 / bucket_s)
        row = rows.setdefault(b, {"ops": collections.OrderedDict(),
                                  "nemesis": []})
        if op["process"] == "nemesis":
            row["nemesis"].append(op["f"])
        elif op["type"] != "invoke":
            c = row["ops"].setdefault(op["f"], {"ok": 0, "fail": 0, "info": 0})
            c[op["type"]] += 1
    out = ["time   op ok/fail/info ...   | nemesis"]
    for b, row in rows.items():
        ops = "  ".join("%s %d/%d/%d" % (f, c["ok"], c["fail"], c["info"])
                        for f, c in sorted(row["ops"].items()))
        line = "%5gs  %s" % (b * bucket_s, ops)
        if row["nemesis"]:
            line += "  | " + " ".join(row["nemesis"])
        out.append(line)
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description="check a fault-run history")
    ap.add_argument("--workload", required=True, choices=("register", "queue"))
    ap.add_argument("--lincheck", default=LINCHECK_DEFAULT)
    ap.add_argument("--keep", help="register: keep per-key Jepsen logs here")
    ap.add_argument("history")
    a = ap.parse_args()
    try:
        hist = history.read_history(a.history)
    except (OSError, history.HistoryError) as e:
        print("checkers: %s" % e, file=sys.stderr)
        return 2
    print("counts: %s" % op_counts(hist))
    if a.workload == "queue":
        res = check_queue(hist)
        for k in ("attempted", "acknowledged", "dequeued"):
            print("%s: %d" % (k, res[k]))
        for k in ("lost", "unexpected", "duplicated", "recovered"):
            items = res[k]
            print("%s: %d %s" % (k, len(items), list(items)[:20]))
    else:
        res = check_register(hist, a.lincheck, a.keep)
        for key, r in res["keys"].items():
            if r["valid"] is not True:
                print("key %s: %s (%d ops) %s" % (
                    key, {False: "NOT linearizable", None: "undecided"}[
                        r["valid"]], r["ops"], r.get("detail", "")))
        print("keys: %d checked" % len(res["keys"]))
    print("verdict: %s" % {True: "valid", False: "INVALID",
                           None: "undecided"}[res["valid"]])
    return {True: 0, False: 1, None: 2}[res["valid"]]


if __name__ == "__main__":
    sys.exit(main())
