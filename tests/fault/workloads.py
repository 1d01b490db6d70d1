"""Fault-test workloads: client threads that record what they saw.

Each client is bound to one router (client i to host i mod 5) and records
every operation as invoke then ok / fail / info in the history (Recorder).
As in Jepsen, a client whose operation ended in info (unknown outcome) goes
on as a new process (process + number of clients) on a new connection, so a
late reply to the old operation can never be taken for a new one's.

register  memcached protocol over plain sockets: read (get), write (set) and
          cas [old new] (gets, then cas with the unique when the value is
          old) on a few integer registers. Keys rotate every KEY_WINDOW_S so
          that each key's history stays small enough to check exhaustively.
standalone  (beside register, with the pause-standalone fault) the same
          register clients against one standalone node (lab.py) instead of
          the routers, on keys of their own (STANDALONE_PREFIX): a single
          node paused for 20 s must make its clients time out cleanly and
          lose no acknowledged write.
queue     AMQP with pika: publishers with confirms (persistent messages to a
          durable queue), consumers with manual acks and prefetch; after the
          faults heal, drain() takes everything left as one "drain" op.

Outcomes. register: STORED / a value -> ok; a cas whose gets saw another
value -> fail (an observation); SERVER_ERROR, a timeout or a dropped
connection -> info for writes and cas, fail for reads (a read changes
nothing, so its unknown outcome constrains nothing). queue: a publish that
was confirmed -> ok; returned as unroutable -> fail; nacked, timed out or
cut off -> info (the router nacks after its own retries, when the message
may still have been stored); each delivery -> an invoke/ok dequeue pair.
"""
import itertools
import random
import socket
import threading
import time

import pika
import pika.exceptions as pex

from lab import AMQP_PORT, AMQP_USER, MEMCACHED_PORT

KEY_WINDOW_S = 10.0
KEYS_PER_WINDOW = 3
MC_TIMEOUT_S = 8.0      # above the router's 5 s request budget
QUEUE = "jepsen.queue"
KEY_PREFIX = "r"
STANDALONE_PREFIX = "sa"
# the standalone clients' process numbers start here, apart from the
# cluster clients' (index + k * clients: ~10 unknown outcomes per run get
# nowhere near), below lincheck's limit (1024); a process number means
# something only within one key's history anyway
STANDALONE_PROCESS_BASE = 500


class ClientBase(threading.Thread):
    def __init__(self, rec, index, n_clients, host_ip, seed, stop):
        super().__init__(name="client-%d" % index, daemon=True)
        self.rec, self.n_clients, self.ip = rec, n_clients, host_ip
        self.process = index
        self.rng = random.Random(seed * 1000 + index)
        self.stop = stop
        self.error = None

    def crashed(self):
        self.process += self.n_clients


# ----------------------------------------------------------------- register

class McError(Exception):
    pass


class McConn:
    """One memcached text-protocol connection with a deadline per call."""

    def __init__(self, ip, port, timeout):
        self.s = socket.create_connection((ip, port), timeout=timeout)
        self.s.settimeout(timeout)
        self.buf = b""

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise McError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _data(self, n):
        while len(self.buf) < n + 2:
            chunk = self.s.recv(65536)
            if not chunk:
                raise McError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def get(self, key, with_cas=False):
        """(value or None, cas unique or None)."""
        self.s.sendall(("%s %s\r\n" % ("gets" if with_cas else "get",
                                       key)).encode())
        value = unique = None
        while True:
            line = self._line()
            if line == b"END":
                return value, unique
            parts = line.split()
            if parts[:1] != [b"VALUE"] or len(parts) < 4:
                raise McError(line.decode(errors="replace"))
            value = int(self._data(int(parts[3])))
            if with_cas:
                unique = int(parts[4])

    def store(self, cmd, key, value, unique=None):
        data = str(value).encode()
        extra = " %d" % unique if unique is not None else ""
        self.s.sendall(("%s %s 0 0 %d%s\r\n" % (cmd, key, len(data), extra))
                       .encode() + data + b"\r\n")
        return self._line().decode(errors="replace")


class RegisterClient(ClientBase):
    """@port, @prefix: where it connects (a router by default) and how its
    keys start; @process_base: its first process number is
    process_base + index."""

    def __init__(self, *a, t0, port=MEMCACHED_PORT, prefix=KEY_PREFIX,
                 process_base=0, **kw):
        super().__init__(*a, **kw)
        self.t0 = t0
        self.port, self.prefix = port, prefix
        self.process += process_base
        self.conn = None

    def _key(self):
        window = int((time.monotonic() - self.t0) / KEY_WINDOW_S)
        return "%s%d-%d" % (self.prefix, window,
                            self.rng.randrange(KEYS_PER_WINDOW))

    def _connect(self):
        if self.conn is None:
            self.conn = McConn(self.ip, self.port, MC_TIMEOUT_S)
        return self.conn

    def _drop(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _cas(self, c, key, old, new):
        """'ok', 'fail' or 'info' for cas [old new]."""
        for _ in range(3):
            value, unique = c.get(key, with_cas=True)
            if value != old:
                return "fail"  # observed a value other than old
            if unique is None:
                return "fail"
            reply = c.store("cas", key, new, unique)
            if reply == "STORED":
                return "ok"
            if reply in ("EXISTS", "NOT_FOUND"):
                continue  # changed since gets, nothing done: look again
            if reply.startswith("SERVER_ERROR"):
                return "info"
            raise McError(reply)
        return "info"  # kept losing the race; it did not happen, but say less

    def one_op(self):
        key = self._key()
        r = self.rng.random()
        if r < 0.5:
            f, value = "read", None
        elif r < 0.75:
            f, value = "write", self.rng.randrange(5)
        else:
            f, value = "cas", [self.rng.randrange(5), self.rng.randrange(5)]
        self.rec.invoke(self.process, f, value, key=key)
        try:
            c = self._connect()
            if f == "read":
                v, _ = c.get(key)
                self.rec.complete(self.process, "ok", f, v, key=key)
            elif f == "write":
                reply = c.store("set", key, value)
                if reply == "STORED":
                    self.rec.complete(self.process, "ok", f, value, key=key)
                elif reply.startswith("SERVER_ERROR"):
                    raise McError(reply)
                else:
                    raise McError("unexpected reply " + reply)
            else:
                outcome = self._cas(c, key, value[0], value[1])
                if outcome == "info":
                    raise McError("cas unknown")
                self.rec.complete(self.process, outcome, f, value, key=key)
        except (OSError, McError, ValueError) as e:
            self._drop()
            if f == "read":
                self.rec.complete(self.process, "fail", f, None, key=key)
            else:
                self.rec.complete(self.process, "info", f, value, key=key)
                self.crashed()
            if isinstance(e, OSError):
                time.sleep(0.1)  # the router may be restarting

    def run(self):
        try:
            while not self.stop.is_set():
                self.one_op()
                time.sleep(self.rng.uniform(0.02, 0.06))  # ~100 ops/s in all
        except Exception as e:  # noqa: BLE001 - reported by the runner
            self.error = e
        finally:
            self._drop()


# -------------------------------------------------------------------- queue

def amqp_params(ip):
    # Heartbeats find a connection that is stuck; the router answers every
    # publish (confirm or nack after its own retries) within ~10 s.
    return pika.ConnectionParameters(
        host=ip, port=AMQP_PORT, credentials=pika.PlainCredentials(*AMQP_USER),
        connection_attempts=1, retry_delay=0,
        socket_timeout=5, stack_timeout=15, blocked_connection_timeout=30,
        heartbeat=10)


def declare_queue(ip):
    c = pika.BlockingConnection(amqp_params(ip))
    try:
        c.channel().queue_declare(QUEUE, durable=True)
    finally:
        c.close()


class AmqpClient(ClientBase):
    """A pika client that reconnects after an error until told to stop."""

    new_process_on_error = True

    def run(self):
        try:
            while not self.stop.is_set():
                try:
                    self._session()
                except (pex.AMQPError, OSError):  # noqa: PERF203
                    if self.new_process_on_error:
                        self.crashed()
                    time.sleep(0.2)
        except Exception as e:  # noqa: BLE001 - reported by the runner
            self.error = e

    @staticmethod
    def _close(c):
        try:
            c.close()
        except Exception:  # noqa: BLE001 - already broken
            pass


class Publisher(AmqpClient):
    # the operation cut off was recorded as info, which moved on already
    new_process_on_error = False
    counter = itertools.count(1)
    counter_lock = threading.Lock()

    def next_value(self):
        with Publisher.counter_lock:
            return next(Publisher.counter)

    def _session(self):
        c = pika.BlockingConnection(amqp_params(self.ip))
        try:
            ch = c.channel()
            ch.confirm_delivery()
            while not self.stop.is_set():
                v = self.next_value()
                self.rec.invoke(self.process, "enqueue", v)
                try:
                    ch.basic_publish("", QUEUE, str(v).encode(),
                                     properties=pika.BasicProperties(
                                         delivery_mode=2), mandatory=True)
                except pex.UnroutableError:
                    self.rec.complete(self.process, "fail", "enqueue", v)
                    continue
                except pex.NackError:
                    self.rec.complete(self.process, "info", "enqueue", v)
                    self.crashed()
                    continue
                except BaseException:
                    self.rec.complete(self.process, "info", "enqueue", v)
                    self.crashed()
                    raise
                self.rec.complete(self.process, "ok", "enqueue", v)
                time.sleep(self.rng.uniform(0, 0.01))
        finally:
            self._close(c)


class Consumer(AmqpClient):
    def _session(self):
        c = pika.BlockingConnection(amqp_params(self.ip))
        try:
            ch = c.channel()
            ch.basic_qos(prefetch_count=10)

            def on_msg(chx, m, props, body):
                v = int(body)
                self.rec.invoke(self.process, "dequeue", None)
                self.rec.complete(self.process, "ok", "dequeue", v)
                chx.basic_ack(m.delivery_tag)

            ch.basic_consume(QUEUE, on_msg)
            while not self.stop.is_set():
                c.process_data_events(time_limit=0.2)
        finally:
            self._close(c)


def drain(rec, process, ips, idle_s=5.0, timeout_s=120.0, log=print):
    """After the faults healed: consume everything left in the queue, through
    the routers in turn until one works, as one drain op. Done when the queue
    reports no ready message and nothing arrived for @idle_s."""
    rec.invoke(process, "drain", None)
    got = []
    deadline = time.monotonic() + timeout_s
    for attempt in itertools.count():
        if time.monotonic() > deadline:
            rec.complete(process, "info", "drain", got)
            return False
        ip = ips[attempt % len(ips)]
        try:
            c = pika.BlockingConnection(amqp_params(ip))
            ch = c.channel()
            ch.basic_qos(prefetch_count=100)
            last = [time.monotonic()]

            def on_msg(chx, m, props, body):
                got.append(int(body))
                last[0] = time.monotonic()
                chx.basic_ack(m.delivery_tag)

            ch.basic_consume(QUEUE, on_msg)
            while time.monotonic() < deadline:
                c.process_data_events(time_limit=0.5)
                if time.monotonic() - last[0] >= idle_s:
                    ready = ch.queue_declare(QUEUE, durable=True,
                                             passive=True).method.message_count
                    if ready == 0:
                        c.close()
                        rec.complete(process, "ok", "drain", got)
                        return True
            c.close()
        except (pex.AMQPError, OSError) as e:
            log("drain: %s: %r" % (ip, e))
            time.sleep(1.0)
