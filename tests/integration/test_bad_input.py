"""Hostile, broken and unlucky clients and servers.

Every test opens a healthy session through the same pgtally first and
checks afterwards (survived()) that it still answers SELECT 1, that a new
session can be opened, and that pgtally is still running.
"""

import random
import socket
import struct
import threading
import time

import psycopg
import pytest

from helpers import assert_healthy, free_port, wait_socket_closed, wait_until
from pgwire import (ProtocolError, RawConn, ServerError, cancel_request, copy_data, describe,
                    parse_fields, protocol, query_message, ssl_request, startup_packet)
from relay import TcpRelay

STARTUP = {"user": "trust_user", "database": "pgtally_test"}


def survived(proxy, healthy):
    assert proxy.alive(), "pgtally exited (code %s); log:\n%s" % (proxy.proc.returncode,
                                                                  proxy.log_tail())
    assert_healthy(healthy)
    with proxy.connect() as c:
        assert_healthy(c, "a new session opened afterwards")


def errors_in(msgs):
    return [parse_fields(p) for t, p in msgs if t == b"E"]


def expect_closed(conn, timeout, what):
    """The connection must be closed within timeout; any message sent
    before that must be a FATAL ErrorResponse. Returns the error fields."""
    start = time.monotonic()
    try:
        msgs = conn.read_until_closed(timeout)
    except TimeoutError as e:
        raise AssertionError("%s: %s" % (what, e))
    except ProtocolError:
        # not framed like a backend message: just wait for the close
        conn.wait_closed(max(timeout - (time.monotonic() - start), 0.1))
        return None
    for t, p in msgs:
        assert t == b"E", "%s: unexpected reply %s" % (what, describe(msgs))
        assert parse_fields(p).get("S") == "FATAL", "%s: %s" % (what, describe(msgs))
    return errors_in(msgs)[0] if msgs else None


def logged_in(proxy, application_name, **params):
    conn = proxy.raw()
    conn.startup("trust_user", "pgtally_test", application_name=application_name, **params)
    return conn


@pytest.fixture
def proxy(pgtally):
    return pgtally()


@pytest.fixture
def healthy(proxy):
    c = proxy.connect(application_name="itest_healthy")
    yield c
    c.close()


# --------------------------------------------------------------------------
# startup phase
# --------------------------------------------------------------------------

GARBAGE = {
    "http": b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: itest\r\n\r\n",
    "random": random.Random(42).randbytes(300),
    "zeros": b"\0" * 64,
    "tls_client_hello": bytes.fromhex("16030100c4010000c00303") + b"\x11" * 190,
    "bad_version_valid_length": struct.pack("!II", 16, 0x12345678) + b"garbage!",
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_instead_of_startup(proxy, healthy, name):
    conn = proxy.raw()
    conn.try_send(GARBAGE[name])
    expect_closed(conn, 2, "garbage %s" % name)
    conn.close()
    survived(proxy, healthy)


@pytest.mark.parametrize("major,minor", [(2, 0), (4, 0), (1, 0), (0, 0)])
def test_unsupported_protocol_version(proxy, healthy, major, minor):
    conn = proxy.raw()
    conn.send(startup_packet(STARTUP, protocol(major, minor)))
    err = expect_closed(conn, 2, "protocol %d.%d" % (major, minor))
    assert err is not None, "protocol %d.%d: closed without an ErrorResponse" % (major, minor)
    assert err.get("C") == "0A000", err
    conn.close()
    survived(proxy, healthy)


def test_protocol_3_minor_version_is_negotiated(proxy, healthy):
    """A 3.x client newer than the server is not refused: PostgreSQL answers
    with NegotiateProtocolVersion and carries on."""
    conn = proxy.raw()
    conn.send(startup_packet(STARTUP, protocol(3, 9)))
    msgs = []
    while True:
        m = conn.recv_message(5)
        assert m is not None, "closed; got %s" % describe(msgs)
        msgs.append(m)
        assert m[0] != b"E", describe(msgs)
        if m[0] == b"Z":
            break
    assert conn.query("SELECT 41 + 1") == [("42",)]
    conn.close()
    survived(proxy, healthy)


@pytest.mark.parametrize("length", [0x80000000, 0xFFFFFFFF, 0xFFFFFFF0, 10001, 1 << 24,
                                    7, 4, 0],
                         ids=["2^31", "-1", "-16", "10001", "16M", "7", "4", "0"])
def test_bad_startup_length(proxy, pg, healthy, length):
    """PostgreSQL logs "invalid length of startup packet" and closes without
    a word (a COMMERROR, never sent to the client); pgtally does the same,
    with a log line that gives the reason. (PostgreSQL's own limit is on
    the length less its 4 bytes, so it waits for the rest of a 10001-byte
    packet: that case is pgtally's alone.)"""
    mark = proxy.log_mark()
    sides = [("pgtally", proxy.port)]
    if not 8 <= length <= 10004:
        sides.insert(0, ("direct", pg.port))
    for name, port in sides:
        conn = RawConn("127.0.0.1", port)
        conn.try_send(struct.pack("!II", length, 3 << 16))
        start = time.monotonic()
        msgs = conn.read_until_closed(2)
        assert msgs == [], "%s, startup length %d: %s" % (name, length, describe(msgs))
        assert time.monotonic() - start < 2
        conn.close()
    proxy.wait_log(r"event=startup_rejected .*length=%d .*reason=\"invalid length of startup "
                   r"packet\"" % struct.unpack("!i", struct.pack("!I", length))[0], since=mark)
    survived(proxy, healthy)


def test_max_startup_packet_size(pgtally):
    proxy = pgtally(max_startup_packet_size=1000)
    healthy = proxy.connect()
    ok = proxy.raw()  # a ~950-byte startup packet: allowed
    ok.send(startup_packet(dict(STARTUP, application_name="s" * 50,
                                options="-c search_path=" + "p" * 800)))
    ok.wait_for(b"Z", 5)
    assert ok.query("SELECT length(current_setting('search_path'))") == [("800",)]
    ok.close()
    big = proxy.raw()
    mark = proxy.log_mark()
    big.try_send(startup_packet(dict(STARTUP, options="-c search_path=" + "p" * 1200)))
    msgs = big.read_until_closed(2)
    assert msgs == [], "1.2 kB startup packet with max_startup_packet_size=1000: %s" % (
        describe(msgs))
    proxy.wait_log(r"event=startup_rejected .*allowed=8\.\.1000 .*reason=\"invalid length of "
                   r"startup packet\"", since=mark)
    big.close()
    survived(proxy, healthy)
    healthy.close()


def test_slow_startup_packet_closed_after_startup_timeout(pgtally):
    proxy = pgtally(startup_timeout=2)
    healthy = proxy.connect()
    conn = proxy.raw()
    packet = startup_packet(STARTUP)
    start = time.monotonic()
    closed_at = None
    for i in range(len(packet)):
        if not conn.try_send(packet[i:i + 1]) or wait_socket_closed(conn.sock, 1.0):
            closed_at = time.monotonic() - start
            break
        if time.monotonic() - start > 8:
            break
    assert closed_at is not None, "a client sending 1 byte/s was not closed in 8 s"
    assert 1.5 <= closed_at <= 4.0, "closed after %.1f s (startup_timeout=2)" % closed_at
    conn.close()
    # the older session is past startup: no timeout applies to it
    survived(proxy, healthy)
    healthy.close()


def test_silent_client_closed_after_startup_timeout(pgtally):
    proxy = pgtally(startup_timeout=2)
    healthy = proxy.connect()
    conns = [proxy.raw() for _ in range(3)]
    start = time.monotonic()
    conns[1].send(ssl_request())      # gets 'N' (client_tls disable), then nothing
    assert conns[1].recv_byte(2) == b"N"
    conns[2].send(startup_packet(STARTUP)[:10])   # a partial startup packet
    for c in conns:
        assert wait_socket_closed(c.sock, 5), "idle pre-login client not closed in 5 s"
    assert 1.5 <= time.monotonic() - start <= 4.5
    for c in conns:
        c.close()
    survived(proxy, healthy)
    healthy.close()


def test_stalled_authentication_closed_after_startup_timeout(pgtally):
    """startup_timeout covers the whole login: a client that never answers
    the password request is closed too."""
    proxy = pgtally(startup_timeout=2)
    healthy = proxy.connect()
    conn = proxy.raw()
    conn.send(startup_packet({"user": "md5_user", "database": "pgtally_test"}))
    t, payload = conn.wait_for(b"R", 2)
    assert struct.unpack("!I", payload[:4])[0] == 5, "expected an md5 password request"
    start = time.monotonic()
    assert wait_socket_closed(conn.sock, 5), "stalled login not closed within 5 s"
    assert time.monotonic() - start <= 3.5
    conn.close()
    survived(proxy, healthy)
    healthy.close()


def test_cancel_request_with_wrong_key(proxy, healthy):
    """A CancelRequest with the right pid but a wrong key cancels nothing."""
    pid = healthy.info.backend_pid
    result = {}

    def run():
        try:
            result["v"] = healthy.execute("SELECT pg_sleep(1), 'finished'").fetchone()[1]
        except psycopg.Error as e:
            result["v"] = e
    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    for key in (0, 1, 0xFFFFFFFF):
        conn = proxy.raw()
        conn.send(cancel_request(pid, key))
        assert wait_socket_closed(conn.sock, 2), "CancelRequest connection left open"
        conn.close()
    bogus = proxy.raw()
    bogus.send(cancel_request(1, 2))
    assert wait_socket_closed(bogus.sock, 2)
    bogus.close()
    t.join(10)
    assert result.get("v") == "finished", result
    survived(proxy, healthy)


def test_garbage_instead_of_tls_handshake(pgtally):
    proxy = pgtally(client_tls="require")
    healthy = proxy.connect(sslmode="require")
    conn = proxy.raw()
    conn.send(ssl_request())
    assert conn.recv_byte(2) == b"S"
    conn.try_send(b"this is not a TLS ClientHello\r\n" * 10)
    conn.wait_closed(3)
    conn.close()
    survived_tls(proxy, healthy)
    healthy.close()


def survived_tls(proxy, healthy):
    assert proxy.alive()
    assert_healthy(healthy)
    with proxy.connect(sslmode="require") as c:
        assert_healthy(c, "a new session opened afterwards")


def test_many_connections_that_send_nothing(proxy, healthy):
    socks = [socket.create_connection((proxy.host, proxy.port)) for _ in range(100)]
    for s in socks[::2]:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    for s in socks:
        s.close()
    survived(proxy, healthy)


# --------------------------------------------------------------------------
# after login
# --------------------------------------------------------------------------

@pytest.mark.parametrize("length", [0x80000000, 0xFFFFFFFF, 0xFFFFFFF0, 0xFFFFFFFC],
                         ids=["2^31", "-1", "-16", "-4"])
def test_bad_message_length_after_login(proxy, pg, healthy, length):
    marker = "itest_badlen_%x" % length
    conn = logged_in(proxy, marker)
    start = time.monotonic()
    conn.send(b"Q" + struct.pack("!I", length))
    try:
        msgs = conn.read_until_closed(1.0)
    except TimeoutError as e:
        raise AssertionError("length 0x%08x: %s" % (length, e))
    elapsed = time.monotonic() - start
    errs = errors_in(msgs)
    assert errs, "length 0x%08x: closed without an ErrorResponse" % length
    assert errs[0].get("C") == "08P01" and errs[0].get("S") == "FATAL", describe(msgs)
    assert elapsed < 1.0
    conn.close()
    pg.wait_backends_gone(marker)
    survived(proxy, healthy)


@pytest.mark.parametrize("length", [0, 3])
def test_too_short_message_length_after_login(proxy, pg, healthy, length):
    marker = "itest_shortlen_%d" % length
    conn = logged_in(proxy, marker)
    conn.send(b"Q" + struct.pack("!I", length) + b"SELECT 1\0")
    expect_closed(conn, 1.0, "message length %d" % length)
    conn.close()
    pg.wait_backends_gone(marker)
    survived(proxy, healthy)


def test_max_message_size(pgtally, pg):
    proxy = pgtally(max_message_size=65536)
    healthy = proxy.connect()
    # under the limit: fine
    conn = logged_in(proxy, "itest_msgsize_ok")
    assert conn.query("SELECT length('%s')" % ("y" * 60000)) == [("60000",)]
    conn.close()
    # over the limit: refused at the header, before the body arrives
    conn = logged_in(proxy, "itest_msgsize_big")
    conn.send(b"Q" + struct.pack("!I", 200000) + b"SELECT '")
    err = expect_closed(conn, 1.0, "200 kB message with max_message_size=65536")
    assert err is not None, "oversized message: closed without an ErrorResponse"
    conn.close()
    pg.wait_backends_gone("itest_msgsize_big")
    survived(proxy, healthy)
    healthy.close()


@pytest.mark.parametrize("cut", ["in_header", "in_body"])
@pytest.mark.parametrize("close", ["fin", "rst"])
def test_truncated_message_then_close(proxy, pg, healthy, cut, close):
    marker = "itest_trunc_%s_%s" % (cut, close)
    conn = logged_in(proxy, marker)
    assert pg.backend_pids(marker), "no server session for the raw client"
    if cut == "in_header":
        conn.send(b"Q\x00\x00")
    else:
        conn.send(b"Q" + struct.pack("!I", 100) + b"SELECT")
    time.sleep(0.1)
    conn.close(reset=(close == "rst"))
    pg.wait_backends_gone(marker)
    survived(proxy, healthy)


@pytest.mark.parametrize("close", ["fin", "rst"])
def test_client_disconnects_mid_copy_in(proxy, pg, healthy, close):
    marker = "itest_copy_%s" % close
    conn = logged_in(proxy, marker)
    conn.send(query_message("CREATE TEMP TABLE cp (a int, b text); COPY cp FROM STDIN"))
    conn.wait_for(b"G", 5)
    for i in range(2000):
        conn.send(copy_data(b"%d\t%s\n" % (i, b"z" * 200)))
    time.sleep(0.1)
    conn.close(reset=(close == "rst"))
    pg.wait_backends_gone(marker)
    survived(proxy, healthy)


def test_client_disconnects_mid_copy_in_psycopg(proxy, pg, healthy):
    c = proxy.connect(application_name="itest_copy_psycopg")
    c.execute("CREATE TEMP TABLE cp (a int)")
    cur = c.cursor()
    with pytest.raises(Exception):
        with cur.copy("COPY cp FROM STDIN") as copy:
            copy.write_row((1,))
            # drop the socket under psycopg's feet
            socket.socket(fileno=c.pgconn.socket).close()
            copy.write_row((2,))
    pg.wait_backends_gone("itest_copy_psycopg")
    survived(proxy, healthy)


# --------------------------------------------------------------------------
# the upstream server
# --------------------------------------------------------------------------

def check_upstream_error(proxy, upstream_port):
    with pytest.raises(psycopg.OperationalError) as ei:
        proxy.connect(connect_timeout=5).close()
    e = ei.value
    assert e.sqlstate == "08006" or "08006" in str(e) or str(upstream_port) in str(e), \
        "error does not name the upstream (port %d) nor 08006: %s" % (upstream_port, e)
    conn = proxy.raw()
    start = time.monotonic()
    with pytest.raises(ServerError) as ei:
        conn.startup("trust_user", "pgtally_test")
    assert time.monotonic() - start < 5
    f = ei.value.fields
    assert f.get("S") == "FATAL" and f.get("C") == "08006", f
    text = " ".join(f.get(k, "") for k in "MDH")
    assert "127.0.0.1:%d" % upstream_port in text or str(upstream_port) in text, \
        "the error does not name the upstream 127.0.0.1:%d: %r" % (upstream_port, f)
    conn.close()


def test_upstream_down_from_the_start(pgtally):
    dead = free_port()
    proxy = pgtally(upstream="127.0.0.1:%d" % dead)
    check_upstream_error(proxy, dead)
    check_upstream_error(proxy, dead)
    assert proxy.alive()


def test_upstream_goes_down(pgtally, pg):
    relay = TcpRelay(pg.host, pg.port)
    try:
        proxy = pgtally(upstream="127.0.0.1:%d" % relay.port)
        healthy = proxy.connect()
        relay.stop_listening()
        check_upstream_error(proxy, relay.port)
        assert proxy.alive()
        assert_healthy(healthy, "the session opened before the upstream went down")
        healthy.close()
    finally:
        relay.close()


def run_in_thread(fn):
    box = {}

    def target():
        start = time.monotonic()
        try:
            box["result"] = fn()
        except BaseException as e:
            box["error"] = e
        box["elapsed"] = time.monotonic() - start
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def test_upstream_session_terminated_mid_query(proxy, pg, healthy):
    victim = proxy.connect(application_name="itest_victim")
    pid = victim.info.backend_pid
    t, box = run_in_thread(lambda: victim.execute("SELECT pg_sleep(30)").fetchone())
    pg.wait_backend_state(pid, "active")
    with pg.admin() as a:
        assert a.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    t.join(5)
    assert not t.is_alive(), "the client was not told within 5 s"
    assert isinstance(box.get("error"), psycopg.OperationalError), box
    assert "terminating connection due to administrator command" in str(box["error"]), box
    victim.close()
    survived(proxy, healthy)


def test_upstream_connection_cut_mid_query(pgtally, pg):
    """The TCP connection to the server dies (RST) during a query."""
    relay = TcpRelay(pg.host, pg.port)
    try:
        proxy = pgtally(upstream="127.0.0.1:%d" % relay.port)
        healthy = proxy.connect()
        relay.wait_for_count(1)
        victim = proxy.connect(application_name="itest_cut")
        relay.wait_for_count(2)
        pid = victim.info.backend_pid
        t, box = run_in_thread(lambda: victim.execute("SELECT pg_sleep(20)").fetchone())
        pg.wait_backend_state(pid, "active")
        relay.abort(1)
        t.join(5)
        assert not t.is_alive(), "the client was not told within 5 s of the upstream dying"
        assert isinstance(box.get("error"), psycopg.OperationalError), box
        victim.close()
        with pg.admin() as a:
            a.execute("SELECT pg_terminate_backend(%s)", (pid,))
        survived(proxy, healthy)
        healthy.close()
    finally:
        relay.close()


# --------------------------------------------------------------------------
# limits
# --------------------------------------------------------------------------

def test_max_clients(pgtally):
    proxy = pgtally(max_clients=2)
    healthy = proxy.connect()
    second = proxy.connect()
    conn = proxy.raw()
    conn.try_send(startup_packet(STARTUP))
    err = expect_closed(conn, 2, "third client with max_clients=2")
    assert err is not None and err.get("C") == "53300", err
    conn.close()
    with pytest.raises(psycopg.OperationalError) as ei:
        proxy.connect().close()
    assert "53300" in str(ei.value) or "too many" in str(ei.value).lower() or \
        ei.value.sqlstate == "53300", str(ei.value)
    assert_healthy(healthy)
    assert_healthy(second, "the second session")
    second.close()

    def slot_free():
        try:
            proxy.connect().close()
            return True
        except psycopg.OperationalError:
            return False
    wait_until(slot_free, 3, interval=0.1, what="a freed client slot")
    survived(proxy, healthy)
    healthy.close()
