"""A minimal raw AMQP 0-9-1 client over a socket, for tests that send what
no client library will: bad headers, bad frames, methods out of order.

    c = RawConn(port).handshake()       # up to connection.open-ok
    c.send_method(1, 20, 10, shortstr(""))   # channel.open
    c.expect_method(1, 20, 11)
    c.send(b"...raw bytes...")
    code, text, cls, meth = c.expect_close()  # connection.close from the server
"""
import socket
import struct
import time

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = b"\xce"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!B", len(b)) + b


def longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!I", len(b)) + b


def table(items):
    """items: list of (name, type-char, encoded value bytes)."""
    body = b"".join(shortstr(k) + t + v for k, t, v in items)
    return struct.pack("!I", len(body)) + body


def frame(ftype, channel, payload, end=FRAME_END):
    return struct.pack("!BHI", ftype, channel, len(payload)) + payload + end


def method_frame(channel, class_id, method_id, args=b""):
    return frame(FRAME_METHOD, channel, struct.pack("!HH", class_id, method_id) + args)


def queue_declare_args(name, arguments=b"\x00\x00\x00\x00", passive=False, durable=False,
                       exclusive=False, auto_delete=False, nowait=False):
    bits = (passive << 0) | (durable << 1) | (exclusive << 2) | (auto_delete << 3) | (nowait << 4)
    return struct.pack("!H", 0) + shortstr(name) + struct.pack("!B", bits) + arguments


def basic_publish_args(exchange, routing_key, mandatory=False, immediate=False):
    return (struct.pack("!H", 0) + shortstr(exchange) + shortstr(routing_key) +
            struct.pack("!B", mandatory | (immediate << 1)))


def content_header(channel, class_id, body_size, flags=0, props=b""):
    return frame(FRAME_HEADER, channel,
                 struct.pack("!HHQH", class_id, 0, body_size, flags) + props)


class Closed(Exception):
    pass


class RawConn:
    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.frame_max = 131072

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def send_method(self, channel, class_id, method_id, args=b""):
        self.send(method_frame(channel, class_id, method_id, args))

    def _fill(self, n, timeout):
        deadline = time.time() + timeout
        while len(self.buf) < n:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no reply in %.0fs (have %r)" % (timeout, self.buf[:64]))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed("connection closed by the server (have %r)" % self.buf[:64])
            self.buf += chunk

    def read_raw(self, n, timeout=5.0):
        self._fill(n, timeout)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self, timeout=5.0):
        """(type, channel, payload); skips heartbeats."""
        while True:
            self._fill(7, timeout)
            ftype, ch, size = struct.unpack("!BHI", self.buf[:7])
            self._fill(7 + size + 1, timeout)
            payload = self.buf[7:7 + size]
            end = self.buf[7 + size:8 + size]
            self.buf = self.buf[8 + size:]
            if end != FRAME_END:
                raise AssertionError("bad frame end from the server: %r" % end)
            if ftype != FRAME_HEARTBEAT:
                return ftype, ch, payload

    def read_method(self, timeout=5.0):
        ftype, ch, payload = self.read_frame(timeout)
        if ftype != FRAME_METHOD:
            raise AssertionError("expected a method frame, got type %d" % ftype)
        cls, meth = struct.unpack("!HH", payload[:4])
        return ch, cls, meth, payload[4:]

    def expect_method(self, channel, cls, meth, timeout=5.0):
        ch, c, m, args = self.read_method(timeout)
        if (ch, c, m) == (0, 10, 50):
            raise AssertionError("expected %d.%d on channel %d, got connection.close %r" %
                                 (cls, meth, channel, parse_close(args)))
        if (ch, c, m) != (channel, cls, meth):
            raise AssertionError("expected %d.%d on channel %d, got %d.%d on %d" %
                                 (cls, meth, channel, c, m, ch))
        return args

    def handshake(self, vhost="/", user="guest", password="guest"):
        self.send(PROTOCOL_HEADER)
        self.expect_method(0, 10, 10)  # connection.start
        props = table([(b"product", b"S", longstr("ringmq-raw-test"))])
        self.send_method(0, 10, 11, props + shortstr("PLAIN") +
                         longstr(b"\x00" + user.encode() + b"\x00" + password.encode()) +
                         shortstr("en_US"))
        args = self.expect_method(0, 10, 30)  # connection.tune
        channel_max, frame_max, heartbeat = struct.unpack("!HIH", args[:8])
        self.frame_max = frame_max
        self.send_method(0, 10, 31, struct.pack("!HIH", channel_max, frame_max, 0))
        self.send_method(0, 10, 40, shortstr(vhost) + shortstr("") + b"\x00")
        self.expect_method(0, 10, 41)  # connection.open-ok
        return self

    def open_channel(self, ch=1):
        self.send_method(ch, 20, 10, shortstr(""))
        self.expect_method(ch, 20, 11)
        return self

    def expect_close(self, timeout=5.0):
        """The server's connection.close: (code, text, class, method); answers
        close-ok and checks the server then closes the socket."""
        while True:
            ch, c, m, args = self.read_method(timeout)
            if (ch, c, m) == (0, 10, 50):
                break
            if (c, m) == (20, 40):  # a channel.close first: not what we want
                raise AssertionError("got channel.close %r on %d, want connection.close" %
                                     (parse_close(args), ch))
        res = parse_close(args)
        try:
            self.send_method(0, 10, 51)
        except OSError:
            pass
        self.expect_eof(timeout)
        return res

    def expect_channel_close(self, channel, timeout=5.0):
        args = self.expect_method(channel, 20, 40, timeout)
        self.send_method(channel, 20, 41)
        return parse_close(args)

    def expect_eof(self, timeout=5.0):
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError("the server did not close the connection in %.0fs" % timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return
            except socket.timeout:
                continue
            if not chunk:
                return

    def expect_clean_eof(self, timeout=5.0):
        """Nothing but EOF follows: a reset (RST) fails, unlike expect_eof."""
        if self.buf:
            raise AssertionError("bytes after the last frame: %r" % self.buf[:64])
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError as e:
            raise AssertionError("the server reset the connection: %r" % e) from None
        if chunk:
            raise AssertionError("bytes instead of EOF: %r" % chunk[:64])


def parse_close(args):
    code = struct.unpack("!H", args[:2])[0]
    n = args[2]
    text = args[3:3 + n].decode(errors="replace")
    cls, meth = struct.unpack("!HH", args[3 + n:7 + n])
    return code, text, cls, meth


def serves(port, host="127.0.0.1"):
    """A full handshake, a channel, a queue declare and a clean close work."""
    c = RawConn(port, host).handshake().open_channel(1)
    c.send_method(1, 50, 10, queue_declare_args("", exclusive=True))
    c.expect_method(1, 50, 11)
    c.send_method(0, 10, 50, struct.pack("!H", 200) + shortstr("bye") + struct.pack("!HH", 0, 0))
    c.expect_method(0, 10, 51)  # RabbitMQ then waits for the client to close
    c.close()
    return True
