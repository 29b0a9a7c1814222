"""A minimal PostgreSQL v3 wire-protocol client for raw-socket tests.

It speaks just enough of the protocol (startup, trust/md5/SCRAM-SHA-256
authentication, simple query, COPY FROM STDIN) to drive pgtally the way a
client would, and to send it deliberately broken input that no real client
library will produce.
"""

import base64
import hashlib
import hmac
import os
import select
import socket
import struct
import time

PROTOCOL_3_0 = 3 << 16
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102


def protocol(major, minor):
    return (major << 16) | minor


def startup_packet(params, version=PROTOCOL_3_0):
    body = struct.pack("!I", version)
    for key, value in params.items():
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def ssl_request():
    return struct.pack("!II", 8, SSL_REQUEST)


def cancel_request(pid, key):
    return struct.pack("!IIII", 16, CANCEL_REQUEST, pid, key)


def message(type_byte, payload=b""):
    return type_byte + struct.pack("!I", len(payload) + 4) + payload


def query_message(sql):
    return message(b"Q", sql.encode() + b"\0")


def copy_data(data):
    return message(b"d", data)


def terminate_message():
    return message(b"X")


def parse_fields(payload):
    """Parse an ErrorResponse / NoticeResponse body into {code: value}."""
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def describe(msgs):
    out = []
    for t, p in msgs:
        if t in (b"E", b"N"):
            out.append("%s%r" % (t.decode(), parse_fields(p)))
        else:
            out.append("%s(%d bytes)" % (t.decode("latin1"), len(p)))
    return ", ".join(out) or "(nothing)"


class ProtocolError(Exception):
    pass


class ServerError(Exception):
    def __init__(self, fields):
        self.fields = fields
        self.sqlstate = fields.get("C")
        super().__init__("%s %s: %s" % (fields.get("S"), fields.get("C"),
                                        fields.get("M")))


class RawConn:
    """A raw socket to pgtally with message framing helpers."""

    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.backend_pid = None
        self.backend_key = None
        self.parameters = {}

    # -- low level -----------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def try_send(self, data):
        """Send, returning False instead of raising if the peer is gone."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self, deadline):
        """Read more bytes into buf; return False on EOF. Raise on timeout."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from pgtally in time")
        r, _, _ = select.select([self.sock], [], [], remaining)
        if not r:
            raise TimeoutError("no data from pgtally in time")
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def recv_byte(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.buf:
            if not self._fill(deadline):
                return None
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def recv_message(self, timeout=5.0):
        """Return (type, payload), or None if the connection closed.

        A connection closed in the middle of a message also returns None.
        """
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 5:
                (length,) = struct.unpack("!I", self.buf[1:5])
                if length < 4 or length > (1 << 30):
                    raise ProtocolError("bad length %d from pgtally" % length)
                if len(self.buf) >= 1 + length:
                    t = self.buf[:1]
                    payload = self.buf[5:1 + length]
                    self.buf = self.buf[1 + length:]
                    return t, payload
            if not self._fill(deadline):
                return None

    def read_until_closed(self, timeout=5.0):
        """Read messages until EOF; return them. TimeoutError if still open."""
        deadline = time.monotonic() + timeout
        msgs = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                m = self.recv_message(max(remaining, 0.001))
            except TimeoutError:
                raise TimeoutError("pgtally kept the connection open for %.1f s;"
                                   " received: %s" % (timeout, describe(msgs)))
            if m is None:
                return msgs
            msgs.append(m)

    def wait_closed(self, timeout=5.0):
        """Like read_until_closed, but tolerant of a non-framed byte stream."""
        deadline = time.monotonic() + timeout
        while True:
            if not self._fill(deadline):
                return
            if len(self.buf) > 1 << 20:
                self.buf = b""

    def close(self, reset=False):
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
        self.sock.close()

    # -- protocol level ------------------------------------------------
    def startup(self, user, database, password=None, timeout=10.0, **params):
        """Run the startup phase up to ReadyForQuery. Raise ServerError."""
        p = {"user": user, "database": database}
        p.update(params)
        self.send(startup_packet(p))
        deadline = time.monotonic() + timeout
        scram = None
        while True:
            m = self.recv_message(max(deadline - time.monotonic(), 0.001))
            if m is None:
                raise ProtocolError("connection closed during startup")
            t, payload = m
            if t == b"E":
                raise ServerError(parse_fields(payload))
            if t == b"R":
                (code,) = struct.unpack("!I", payload[:4])
                if code == 0:
                    continue
                if code == 3:  # cleartext
                    self.send(message(b"p", _pw(password) + b"\0"))
                elif code == 5:  # md5
                    salt = payload[4:8]
                    inner = hashlib.md5(_pw(password) + user.encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + salt).hexdigest()
                    self.send(message(b"p", b"md5" + outer.encode() + b"\0"))
                elif code == 10:  # SASL
                    mechs = [x.decode() for x in payload[4:].split(b"\0") if x]
                    if "SCRAM-SHA-256" not in mechs:
                        raise ProtocolError("no SCRAM-SHA-256 in %r" % mechs)
                    scram = _Scram(_pw(password))
                    first = scram.client_first()
                    self.send(message(b"p", b"SCRAM-SHA-256\0" +
                                      struct.pack("!I", len(first)) + first))
                elif code == 11:  # SASL continue
                    self.send(message(b"p", scram.client_final(payload[4:])))
                elif code == 12:  # SASL final
                    scram.verify_server(payload[4:])
                else:
                    raise ProtocolError("unsupported auth request %d" % code)
            elif t == b"K":
                self.backend_pid, self.backend_key = struct.unpack("!II", payload)
            elif t == b"S":
                k, v, _ = payload.split(b"\0", 2)
                self.parameters[k.decode()] = v.decode()
            elif t == b"Z":
                return
            elif t == b"N":
                continue
            elif t == b"v":  # NegotiateProtocolVersion
                continue
            else:
                raise ProtocolError("unexpected %r during startup" % t)

    def query(self, sql, timeout=10.0):
        """Simple query; return list of rows (tuples of str/None)."""
        self.send(query_message(sql))
        rows, error = [], None
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv_message(max(deadline - time.monotonic(), 0.001))
            if m is None:
                raise ProtocolError("connection closed during query")
            t, payload = m
            if t == b"D":
                rows.append(_data_row(payload))
            elif t == b"E":
                error = ServerError(parse_fields(payload))
            elif t == b"Z":
                if error:
                    raise error
                return rows

    def wait_for(self, type_byte, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv_message(max(deadline - time.monotonic(), 0.001))
            if m is None:
                raise ProtocolError("connection closed waiting for %r" % type_byte)
            if m[0] == b"E" and type_byte != b"E":
                raise ServerError(parse_fields(m[1]))
            if m[0] == type_byte:
                return m


def _pw(password):
    if password is None:
        raise ProtocolError("server asked for a password and none was given")
    return password.encode()


def _data_row(payload):
    (n,) = struct.unpack("!H", payload[:2])
    pos, row = 2, []
    for _ in range(n):
        (ln,) = struct.unpack("!i", payload[pos:pos + 4])
        pos += 4
        if ln < 0:
            row.append(None)
        else:
            row.append(payload[pos:pos + ln].decode())
            pos += ln
    return tuple(row)


class _Scram:
    """Client side of SCRAM-SHA-256 without channel binding (RFC 5802/7677)."""

    def __init__(self, password):
        self.password = password
        self.nonce = base64.b64encode(os.urandom(18)).decode()

    def client_first(self):
        self.first_bare = "n=,r=" + self.nonce
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first):
        server_first = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise ProtocolError("server nonce does not extend client nonce")
        salted = hashlib.pbkdf2_hmac("sha256", self.password,
                                     base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = "c=" + base64.b64encode(b"n,,").decode() + ",r=" + attrs["r"]
        auth_message = ",".join([self.first_bare, server_first, without_proof])
        sig = hmac.new(stored_key, auth_message.encode(), "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self.expected_server_sig = hmac.new(server_key, auth_message.encode(),
                                            "sha256").digest()
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()

    def verify_server(self, server_final):
        attrs = dict(kv.split("=", 1) for kv in server_final.decode().split(","))
        if base64.b64decode(attrs["v"]) != self.expected_server_sig:
            raise ProtocolError("bad SCRAM server signature")
