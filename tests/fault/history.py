"""Fault-run histories: one JSON object per line, Jepsen's op-map shape, in
real-time order.

  {"process": 3, "type": "invoke", "f": "cas", "key": "r0-1", "value": [1, 4], "time": 812345}
  {"process": 3, "type": "ok", "f": "cas", "key": "r0-1", "value": [1, 4], "time": 9912345}
  {"process": "nemesis", "type": "info", "f": "start-kill", "value": {"node": "n2"}, "time": ...}

type: invoke | ok | fail | info (unknown outcome); f: read | write | cas
(register, with "key") or enqueue | dequeue | drain (queue; a drain's value
is the list of messages it took); time: nanoseconds since the recorder
started, from the monotonic clock. Nemesis events carry process "nemesis".

Recorder is shared by all client threads: each line is stamped and written
under one lock, so times and line order agree, and flushed at once, so a
crashed run keeps everything it recorded.
"""
import json
import sys
import threading
import time

TYPES = ("invoke", "ok", "fail", "info")


class HistoryError(Exception):
    pass


class Recorder:
    def __init__(self, path):
        self.f = open(path, "w")
        self.lock = threading.Lock()
        self.t0 = time.monotonic_ns()

    def _write(self, op):
        with self.lock:
            if self.f.closed:
                return  # a client finishing after the run ended
            op["time"] = time.monotonic_ns() - self.t0
            self.f.write(json.dumps(op, separators=(",", ":")) + "\n")
            self.f.flush()

    def _op(self, process, type_, f, value, key):
        op = {"process": process, "type": type_, "f": f}
        if key is not None:
            op["key"] = key
        op["value"] = value
        self._write(op)

    def invoke(self, process, f, value=None, key=None):
        self._op(process, "invoke", f, value, key)

    def complete(self, process, type_, f, value=None, key=None):
        if type_ not in TYPES[1:]:
            raise ValueError("completion type %r" % (type_,))
        self._op(process, type_, f, value, key)

    def nemesis(self, f, value):
        self._op("nemesis", "info", f, value, None)

    def close(self):
        with self.lock:
            if not self.f.closed:
                self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_history(path):
    """The ops of a history file, in order. A malformed line raises
    HistoryError naming it; a torn last line (the run was killed while
    writing) is dropped with a warning."""
    with open(path) as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    ops = []
    for n, line in enumerate(lines, 1):
        try:
            op = json.loads(line)
            if (not isinstance(op, dict) or op.get("type") not in TYPES or
                    "process" not in op or "f" not in op or
                    not isinstance(op.get("time"), int)):
                raise ValueError("not an op")
        except ValueError as e:
            if n == len(lines):
                print("history: %s: dropped torn last line %d" % (path, n),
                      file=sys.stderr)
                break
            raise HistoryError("%s:%d: %s" % (path, n, e)) from e
        ops.append(op)
    return ops
