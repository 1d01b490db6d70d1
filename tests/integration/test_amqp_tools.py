#!/usr/bin/python3
"""AMQP clients other than pika against the standalone node: Debian's
amqp-tools (amqp-declare-queue, amqp-publish, amqp-consume -c, amqp-get;
rabbitmq-c 0.11 underneath) and amqp_c_client.c, a rabbitmq-c program that
publishes N persistent messages with publisher confirms and consumes them
with manual acks (built by CMake when librabbitmq-dev is there, else
compiled here with cc).

Every outcome below is what RabbitMQ 3.10 gives: `--rabbitmq` runs the same
tests against a private RabbitMQ (rabbitmq_ref.py).
"""
import os
import subprocess
import sys
import time

import ringmq_test as rt

RABBITMQ = "--rabbitmq" in sys.argv
HERE = os.path.dirname(os.path.abspath(__file__))
target = {"port": None}


def url():
    return "amqp://guest:guest@127.0.0.1:%d" % target["port"]


def tool(*args, stdin=None, timeout=20):
    p = subprocess.run(list(args), input=stdin, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def uniq(prefix):
    return "%s-%d-%d" % (prefix, os.getpid(), int(time.time() * 1000) % 1000000)


def gated(t):
    def g():
        if target["port"] is None:
            raise AssertionError("skipped: no server (see test_setup)")
        t()
    g.__name__ = t.__name__
    return g


def test_setup():
    if RABBITMQ:
        import rabbitmq_ref
        target["port"] = rabbitmq_ref.RabbitMQ().start().port
        return
    amqp_port = rt.standalone_amqp("ringmq-amqptools-")
    target["port"] = amqp_port


def test_declare_queue():
    q = uniq("tools-decl")
    rc, out, err = tool("amqp-declare-queue", "-u", url(), "-q", q, "-d")
    rt.check(rc == 0 and out == (q + "\n").encode(), "declare: %d %r %s" % (rc, out, err))
    rc, out, err = tool("amqp-declare-queue", "-u", url(), "-q", q, "-d")  # idempotent
    rt.check(rc == 0 and out == (q + "\n").encode(), "redeclare: %d %r %s" % (rc, out, err))
    rc, out, err = tool("amqp-declare-queue", "-u", url(), "-q", q)  # not durable: 406
    rt.check(rc != 0 and "406" in err, "redeclare non-durable: %d %r %s" % (rc, out, err))
    rc, out, err = tool("amqp-declare-queue", "-u", url(), "-q", "")
    rt.check(rc == 0 and out.startswith(b"amq.gen-") and out.endswith(b"\n"),
             "server-named: %d %r %s" % (rc, out, err))
    rc, out, err = tool("amqp-delete-queue", "-u", url(), "-q", q)
    rt.check(rc == 0, "delete: %d %r %s" % (rc, out, err))


def test_publish_get():
    q = uniq("tools-get")
    tool("amqp-declare-queue", "-u", url(), "-q", q)
    rc, out, err = tool("amqp-publish", "-u", url(), "-r", q, "-b", "hello", "-p",
                        "-C", "text/plain", "-H", "k: v")
    rt.check(rc == 0, "publish: %d %s" % (rc, err))
    rc, out, err = tool("amqp-get", "-u", url(), "-q", q)
    rt.check(rc == 0 and out == b"hello", "get: %d %r %s" % (rc, out, err))
    rc, out, err = tool("amqp-get", "-u", url(), "-q", q)
    rt.check(rc == 2 and out == b"", "get from an empty queue: %d %r %s" % (rc, out, err))
    rc, out, err = tool("amqp-get", "-u", url(), "-q", uniq("tools-missing"))
    rt.check(rc == 1 and "server channel error 404" in err and "NOT_FOUND - no queue" in err,
             "get from a missing queue: %d %r %s" % (rc, out, err))
    tool("amqp-delete-queue", "-u", url(), "-q", q)


def test_publish_lines_consume_count():
    q = uniq("tools-consume")
    tool("amqp-declare-queue", "-u", url(), "-q", q, "-d")
    lines = b"".join(b"line %d\n" % i for i in range(5))
    rc, out, err = tool("amqp-publish", "-u", url(), "-r", q, "-l", "-p", stdin=lines)
    rt.check(rc == 0, "publish -l: %d %s" % (rc, err))
    # one message per line; amqp-consume runs `cat` per message with its body
    rc, out, err = tool("amqp-consume", "-u", url(), "-q", q, "-c", "3", "cat")
    rt.check(rc == 0 and out == b"line 0\nline 1\nline 2\n",
             "consume -c 3: %d %r %s" % (rc, out, err))
    rc, out, err = tool("amqp-consume", "-u", url(), "-q", q, "-c", "2", "-p", "1", "cat")
    rt.check(rc == 0 and out == b"line 3\nline 4\n", "consume -c 2 -p 1: %d %r %s" % (rc, out, err))
    rc, out, err = tool("amqp-get", "-u", url(), "-q", q)
    rt.check(rc == 2, "consumed messages were not acked: %d %r" % (rc, out))
    tool("amqp-delete-queue", "-u", url(), "-q", q)


def test_consume_exchange_binding():
    """amqp-consume -e -r: a server-named exclusive queue bound to amq.direct."""
    key = uniq("tools-key")
    p = subprocess.Popen(["amqp-consume", "-u", url(), "-e", "amq.direct", "-r", key,
                          "-c", "1", "cat"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rt._procs.append(p)
    deadline = time.time() + 15
    while p.poll() is None and time.time() < deadline:  # until its binding exists
        tool("amqp-publish", "-u", url(), "-e", "amq.direct", "-r", key, "-b", "routed")
        time.sleep(0.3)
    if p.poll() is None:
        p.kill()
    out, err = p.communicate(timeout=10)
    rt.check(p.returncode == 0 and out == b"routed",
             "consume -e amq.direct: %s %r %r" % (p.returncode, out, err))


def c_client():
    built = os.path.join(rt.BUILD, "tests", "integration", "amqp_c_client")
    if os.path.exists(built):
        return built
    exe = os.path.join(rt.tmpdir("ringmq-cclient-"), "amqp_c_client")
    p = subprocess.run(["cc", "-Wall", "-Wextra", "-Werror", "-O1", "-o", exe,
                        os.path.join(HERE, "amqp_c_client.c"), "-lrabbitmq"],
                       capture_output=True, text=True, timeout=120)
    rt.check(p.returncode == 0, "cc amqp_c_client.c: %s" % p.stderr)
    return exe


def test_c_client_confirms_and_acks():
    exe = c_client()
    for n in (1, 500):
        rc, out, err = tool(exe, "127.0.0.1", str(target["port"]), uniq("cclient"), str(n),
                            timeout=60)
        rt.check(rc == 0 and out == b"ok %d\n" % n, "amqp_c_client N=%d: %d %r %s" %
                 (n, rc, out, err))


if __name__ == "__main__":
    rt.run_tests([test_setup] + [gated(t) for t in (
        test_declare_queue, test_publish_get, test_publish_lines_consume_count,
        test_consume_exchange_binding, test_c_client_confirms_and_acks)])
