"""Shared helpers for ringmq integration tests.

Tests start real ringmq-node processes on 127.0.0.1 with their own temp data
dirs and ports, drive them with real clients, and always clean up: every
process started here is killed at exit, even when a test fails.
"""
import atexit
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("RINGMQ_BUILD_DIR",
                       os.path.join(os.path.dirname(__file__), "..", "..", "build"))
NODE = os.path.abspath(os.path.join(BUILD, "node", "ringmq-node"))
CTL = os.path.abspath(os.path.join(BUILD, "tools", "ringmqctl"))

_procs = []
_dirs = []
_cleanup_hooks = []  # callables run first at exit (e.g. stopping a cluster)


def _cleanup():
    while _cleanup_hooks:
        try:
            _cleanup_hooks.pop()()
        except Exception:  # noqa: BLE001 - clean up the rest regardless
            pass
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    if os.environ.get("RINGMQ_KEEP"):
        print("kept: " + " ".join(_dirs))
        return
    for d in _dirs:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup)


def tmpdir(prefix="ringmq-it-"):
    d = tempfile.mkdtemp(prefix=prefix)
    _dirs.append(d)
    return d


_given_ports = set()
_port_locks = {}  # port -> the descriptor holding its lock


def claim_ports(ports):
    """Claim @ports for this process's life with one lock file each
    (/tmp/ringmq-test-port-P, the kernel drops the locks when it exits):
    tests run in parallel, and a port free a moment ago may be another
    test's by the time a node binds it. False, holding none of them, when
    another live process holds one."""
    fds = []
    for p in ports:
        fd = os.open("/tmp/ringmq-test-port-%d" % p, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            for f in fds:
                os.close(f)
            return False
        fds.append(fd)
    _port_locks.update(zip(ports, fds))
    return True


def release_ports(ports):
    """Give back ports claimed by claim_ports."""
    for p in ports:
        fd = _port_locks.pop(p, None)
        if fd is not None:
            os.close(fd)


def free_port():
    """A port that was free a moment ago. Chosen below the kernel's ephemeral
    range (32768+ here): raft's outgoing connections take ephemeral ports and
    could collide with a listener placed there."""
    while True:
        port = random.randrange(20000, 32000)
        if port in _given_ports:
            continue
        if not port_free(port) or not claim_ports([port]):
            continue
        _given_ports.add(port)
        return port


def claim_offset(ports, fixed=None):
    """A port offset N at which every port of @ports + N is free and
    claimed (claim_ports) for this process, for scripts/local-cluster's
    RINGMQ_PORT_OFFSET. Offsets put every port in 20000..32000, the
    integration tests' range (the unit tests' port blocks lie below, the
    kernel's ephemeral ports above). @fixed: N, N + 100, ... (10 tries)."""
    lo = 20000 - min(ports)
    hi = 32000 - max(ports)
    assert lo < hi, "ports span more than the range"
    for tries in range(10 if fixed is not None else 1000):
        off = fixed + 100 * tries if fixed is not None else \
            random.randrange(lo, hi, 10)
        shifted = [p + off for p in ports]
        # claimed first: free now is not free when the nodes bind
        if claim_ports(shifted):
            if all(port_free(p) for p in shifted):
                return off
            release_ports(shifted)
    raise AssertionError("no free port offset for %d ports" % len(ports))


def free_raft_port():
    """A raft port P with P+1 and P+2 free too: those are reserved for a
    member's queue and meta groups (docs/cluster.md)."""
    while True:
        port = free_port()
        if all(p not in _given_ports and port_free(p)
               for p in (port + 1, port + 2)):
            _given_ports.update((port + 1, port + 2))
            return port


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_port(port, timeout=20.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("port %d not listening after %.0fs" % (port, timeout))


def mc_command(port, line, timeout=5.0):
    """Send one raw text-protocol request, return the reply up to END/line."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(line)
        data = b""
        while not (data.endswith(b"END\r\n") or (data.endswith(b"\r\n") and not line.startswith((b"get", b"stats")))):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def stats(port):
    out = {}
    for ln in mc_command(port, b"stats\r\n").split(b"\r\n"):
        parts = ln.split(b" ", 2)
        if len(parts) == 3 and parts[0] == b"STAT":
            out[parts[1].decode()] = parts[2].decode()
    return out


class Node:
    """One ringmq-node process."""

    def __init__(self, args, log_path, ready_port=None, env=None):
        self.args = args
        self.log_path = log_path
        self.ready_port = ready_port
        self.env = env
        self.proc = None

    def start(self, wait=True):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([NODE] + self.args, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, env=self.env)
        log.close()
        _procs.append(self.proc)
        if wait and self.ready_port:
            wait_port(self.ready_port, proc=self.proc)
        return self

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout=20):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


_node_has_amqp = None


def node_has_amqp():
    """Whether this ringmq-node knows --amqp (asked once, from --help)."""
    global _node_has_amqp
    if _node_has_amqp is None:
        try:
            out = subprocess.run([NODE, "--help"], capture_output=True, text=True,
                                 timeout=20)
            _node_has_amqp = "--amqp" in out.stdout + out.stderr
        except OSError:
            _node_has_amqp = False
    return _node_has_amqp


def standalone(data_dir, port=None, extra=(), amqp_port=None, env=None):
    """A standalone node serving memcached on @port (default: a free one).
    @amqp_port: a port number serves AMQP on 127.0.0.1:amqp_port; 0 picks a
    free port; None or "off" pass --amqp off when the node knows the flag
    (a standalone node would otherwise take 127.0.0.1:5672, and tests run in
    parallel). The chosen port is n.amqp_port (None when AMQP is off)."""
    port = port or free_port()
    args = ["--standalone", "--data-dir", data_dir,
            "--memcached", "127.0.0.1:%d" % port]
    if amqp_port is None or amqp_port == "off":
        if node_has_amqp():
            args += ["--amqp", "off"]
        amqp_port = None
    elif amqp_port is not None:
        amqp_port = amqp_port or free_port()
        args += ["--amqp", "127.0.0.1:%d" % amqp_port]
    n = Node(args + list(extra), os.path.join(data_dir + ".log"),
             ready_port=port, env=env)
    n.port = port
    n.amqp_port = amqp_port
    return n


def standalone_amqp(prefix):
    """A started standalone node in a fresh temp dir with AMQP (and its own
    raft port) on free ports; returns the AMQP port. Raises with the
    node's log when it does not come up."""
    d = tmpdir(prefix)
    amqp_port = free_port()
    n = standalone(d + "/data", amqp_port=amqp_port,
                   extra=["--raft", "127.0.0.1:%d" % free_raft_port()])
    try:
        n.start()
        wait_port(amqp_port, timeout=20, proc=n.proc)
    except Exception as e:
        raise AssertionError("ringmq-node: %r\n%s" % (e, n.log()[-2000:])) from None
    return amqp_port


def wait_until(pred, timeout=20.0, what="condition", interval=0.05):
    """Poll pred until it returns something other than None or False (0 is a
    valid answer, e.g. the index of the first node)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v is not None and v is not False:
            return v
        time.sleep(interval)
    raise TimeoutError("timed out waiting for " + what)


def wait_ready(port, timeout=20.0):
    """Standalone: wait until the group behind the edge serves writes."""
    def ok():
        try:
            return mc_command(port, b"set __ringmq_ready 0 0 1\r\nx\r\n") == b"STORED\r\n"
        except OSError:
            return False
    wait_until(ok, timeout, "the node to accept writes")


def rss_kib(pid):
    """Resident memory of process @pid (VmRSS), KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def _keep_logs(tail_lines=30, max_files=16):
    """After a failure: print the tail of every log the test's processes
    wrote (ctest shows a failed test's output, and CI keeps nothing else)
    and copy the logs to BUILD/test-logs/<script>/."""
    logs = []
    for d in _dirs:
        for root, _, files in os.walk(d):
            logs += [os.path.join(root, f) for f in sorted(files)
                     if f.endswith(".log")]
    dest = os.path.join(BUILD, "test-logs",
                        os.path.splitext(os.path.basename(sys.argv[0]))[0])
    for i, path in enumerate(logs):
        try:
            with open(path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            continue
        if i < max_files:
            print("---- last %d lines of %s" % (tail_lines, path))
            print("\n".join(lines[-tail_lines:]))
        try:
            rel = os.path.relpath(path, os.path.dirname(os.path.dirname(path)))
            os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
            shutil.copy(path, os.path.join(dest, rel))
        except OSError:
            pass
    if logs:
        print("---- %d logs copied to %s" % (len(logs), dest))


def run_tests(tests):
    """Run test functions in order; print a pytest-style closing line."""
    passed = failed = 0
    seed = int(os.environ.get("RINGMQ_TEST_SEED", random.randrange(1 << 30)))
    random.seed(seed)
    print("seed %d" % seed)
    for t in tests:
        t0 = time.time()
        try:
            t()
        except Exception as e:  # noqa: BLE001 - report every failure
            failed += 1
            print("FAIL %s (%.1fs): %r" % (t.__name__, time.time() - t0, e))
            import traceback
            traceback.print_exc()
        else:
            passed += 1
            print("ok   %s (%.1fs)" % (t.__name__, time.time() - t0))
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    if failed:
        _keep_logs()
    _cleanup()
    sys.exit(1 if failed else 0)
