#!/usr/bin/python3
"""Closing an AMQP connection never resets it, on raw sockets against the
standalone node (the routers run the same edge code).

A client may still be sending when the close handshake ends (amqp091-go's
TestConcurrentClose: heartbeats and channel frames of other goroutines
racing Close()). The server must then read and drop that input and close
only after the client's EOF: a socket closed with unread input makes the
kernel send RST, and the client gets "connection reset by peer" instead of
a clean end.

Each case sends, in one write, its close frame followed by more than the
server reads at once (so some of it is surely unread when the server is
done), then wants the close-ok (the client then ends its side, as a client
closing does) or connection.close, and a clean EOF. Runs ROUNDS times:
before the fix every round was reset.

`--rabbitmq` runs the same cases against a private RabbitMQ
(rabbitmq_ref.py). RabbitMQ 3.10.8 differs in every case (RABBITMQ_DIFFERS:
there the cases want the reset): it stops reading at the close handshake,
so when it closes the socket (at once after its own close's close-ok, after
the client's FIN for a client close) what followed is unread and the client
is reset. Without frames after the close it ends cleanly, which is what
clients usually see; ringmq drains, so they always do.
"""
import socket
import struct
import sys

import amqp_raw as R
import ringmq_test as rt

RABBITMQ = "--rabbitmq" in sys.argv
ROUNDS = 20
TAIL = R.frame(R.FRAME_HEARTBEAT, 0, b"") * 12000  # 96 KB
CHANNEL_TAIL = R.method_frame(1, 60, 10, struct.pack("!IHB", 0, 1, 0)) * 4000  # basic.qos

target = {"port": None}


def clean_end(c, half_close=False):
    """A clean EOF from ringmq; from RabbitMQ, the reset it answers with.
    @half_close: the client ends its side first, as a closing client does."""
    def end():
        if half_close:
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError as e:  # ENOTCONN: reset already
                raise AssertionError("the server reset the connection: %r" % e) from None
        c.expect_clean_eof(10)
    if not RABBITMQ:
        end()
        return
    try:
        end()
    except AssertionError as e:
        if "reset" in str(e):
            return
        raise
    raise AssertionError("RabbitMQ ended cleanly (it used to reset here)")


def client_close_round(port, tail):
    c = R.RawConn(port).handshake().open_channel(1)
    try:
        c.send(R.method_frame(0, 10, 50, struct.pack("!H", 200) + R.shortstr("bye") +
                              struct.pack("!HH", 0, 0)) + tail)
        c.expect_method(0, 10, 51)  # close-ok
        clean_end(c, half_close=True)  # RabbitMQ waits for the client's end
    finally:
        c.close()


def server_close_round(port, tail):
    c = R.RawConn(port).handshake().open_channel(1)
    try:
        c.send_method(1, 20, 10, R.shortstr(""))  # channel.open again: 504
        while True:
            ch, cls, meth, _ = c.read_method(5)
            if (ch, cls, meth) == (0, 10, 50):
                break
        c.send(R.method_frame(0, 10, 51) + tail)  # close-ok and more
        clean_end(c)
    finally:
        c.close()


def test_setup():
    if RABBITMQ:
        import rabbitmq_ref
        target["port"] = rabbitmq_ref.RabbitMQ().start().port
        return
    amqp_port = rt.standalone_amqp("ringmq-amqpclose-")
    rt.check(R.serves(amqp_port), "the node does not serve AMQP")
    target["port"] = amqp_port


def gated(f, tail, name):
    def t():
        if target["port"] is None:
            raise AssertionError("skipped: no server (see test_setup)")
        for i in range(ROUNDS):
            try:
                f(target["port"], tail)
            except AssertionError as e:
                raise AssertionError("round %d: %s" % (i, e)) from None
    t.__name__ = name
    return t


if __name__ == "__main__":
    rt.run_tests([test_setup,
                  gated(client_close_round, TAIL, "test_client_close_then_heartbeats"),
                  gated(client_close_round, CHANNEL_TAIL, "test_client_close_then_channel_frames"),
                  gated(server_close_round, TAIL, "test_server_close_then_heartbeats")])
