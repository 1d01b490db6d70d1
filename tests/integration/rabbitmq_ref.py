#!/usr/bin/python3
"""A private RabbitMQ for validating AMQP tests and benchmarks against the
real thing (Debian's rabbitmq-server; `scripts/deps --bench` installs it
without starting the system service).

    rmq = RabbitMQ().start()        # AMQP on 127.0.0.1:rmq.port
    rmq.restart()                   # same node name and mnesia dir
    rmq.stop()                      # also kills its private epmd

Everything lives under one temp dir: HOME (the Erlang cookie), mnesia, logs,
pid file, an empty enabled-plugins file and the config. The node listens on
127.0.0.1 only, on ports taken from ringmq_test.free_port(): AMQP, Erlang
distribution and a private epmd, so it never touches 5672/4369/25672 and two
instances can run side by side. Debian's /usr/sbin/rabbitmq-server wrapper
refuses to run as root, so this runs /usr/lib/rabbitmq/bin/rabbitmq-server
directly.

Not part of the ctest suite (RabbitMQ is not installed in CI); used by
`amqp_tutorials.py --rabbitmq` and the `--rabbitmq` flag of the AMQP tests.

    /usr/bin/python3 tests/integration/rabbitmq_ref.py   # start, print port, wait for ^C
"""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ringmq_test as rt  # noqa: E402

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def available():
    return os.path.exists(SERVER)


def _epmd_bin():
    for p in ["/usr/bin/epmd"] + sorted(glob.glob("/usr/lib/erlang/erts-*/bin/epmd")):
        if os.path.exists(p):
            return p
    return None


class RabbitMQ:
    def __init__(self, port=None, config_lines=()):
        if not available():
            raise RuntimeError("%s missing: run ./scripts/deps --bench as root" % SERVER)
        self.dir = rt.tmpdir("ringmq-rmq-")
        self.port = port or rt.free_port()
        self.dist_port = rt.free_port()
        self.epmd_port = rt.free_port()
        self.node = "rit%d@localhost" % self.port
        self.proc = None
        self.log_path = os.path.join(self.dir, "server.out")
        for d in ("home", "mnesia", "log"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        open(os.path.join(self.dir, "enabled_plugins"), "w").write("[].\n")
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write("listeners.tcp.default = 127.0.0.1:%d\n" % self.port)
            f.write("loopback_users.guest = true\n")
            f.write("log.console = false\n")
            f.write("log.file.level = info\n")
            for line in config_lines:
                f.write(line + "\n")
        rt._cleanup_hooks.append(self.stop)

    def env(self):
        d = self.dir
        e = dict(os.environ)
        e.pop("RABBITMQ_ALLOW_INPUT", None)
        e.update({
            "HOME": os.path.join(d, "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": os.path.join(d, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(d, "log"),
            "RABBITMQ_PID_FILE": os.path.join(d, "rabbit.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(d, "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": os.path.join(d, "rabbitmq"),  # + .conf
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(d, "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(d, "rabbitmq-env.conf"),
        })
        return e

    def start(self, timeout=90):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([SERVER], env=self.env(), cwd=self.dir,
                                     stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        rt._procs.append(self.proc)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("rabbitmq-server exited with %s:\n%s" %
                                   (self.proc.returncode, self.tail()))
            if self._amqp_ok():
                return self
            time.sleep(0.2)
        raise TimeoutError("rabbitmq not serving on %d after %ds:\n%s" %
                           (self.port, timeout, self.tail()))

    def _amqp_ok(self):
        """The listener answers a protocol header with connection.start."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                data = s.recv(7)
                return len(data) == 7 and data[0] == 1
        except OSError:
            return False

    def tail(self, n=4000):
        out = []
        for p in [self.log_path] + glob.glob(os.path.join(self.dir, "log", "*.log")):
            try:
                with open(p, "rb") as f:
                    out.append("== %s\n%s" % (p, f.read()[-n:].decode(errors="replace")))
            except OSError:
                pass
        return "\n".join(out)

    def _pgkill(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def shutdown(self, timeout=60):
        """Stop the broker gracefully (the wrapper script turns SIGTERM into
        `rabbitmqctl stop`); SIGKILL its process group after @timeout."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self._pgkill(signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        # beam may outlive the script for a moment: wait for the port
        rt.wait_until(lambda: rt.port_free(self.port), 30, "rabbitmq's port to close")

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self._pgkill(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self):
        self.shutdown()
        return self.start()

    def stop(self):
        try:
            self.shutdown(timeout=30)
        except Exception:  # noqa: BLE001 - still kill epmd
            self.kill9()
        epmd = _epmd_bin()
        if epmd:
            subprocess.run([epmd, "-kill"], env=self.env(), timeout=10,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    r = RabbitMQ().start()
    print("rabbitmq on 127.0.0.1:%d (dir %s); ^C stops it" % (r.port, r.dir))
    sys.stdout.flush()
    try:
        while r.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    r.stop()
    if not os.environ.get("RINGMQ_KEEP"):
        shutil.rmtree(r.dir, ignore_errors=True)
