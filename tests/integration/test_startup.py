"""The session's startup path, tried as a hostile client would: messages
sent in the same write as the StartupMessage (before the session is ready)
must be metered and judged like any Query sent after login, authentication
messages sent early must still reach the server, and what a client sends
before login must not grow pgtally's memory. Raw protocol, compared with
what the same bytes get from PostgreSQL directly.
"""

import os
import re
import struct
import threading
import time

from helpers import DBNAME, assert_healthy
from pgwire import RawConn, _Scram, message, parse_fields, query_message, startup_packet
from test_budgets import PER_SECOND, set_budget
from test_hold import rss_kb
from test_metering import ledger, show

MIB = 1 << 20
STARTUP = {"user": "trust_user", "database": DBNAME}


def read_ready(conn, count, timeout=10.0):
    """(type, payload) pairs up to the count-th ReadyForQuery."""
    got, deadline = [], time.monotonic() + timeout
    while count > 0:
        m = conn.recv_message(max(deadline - time.monotonic(), 0.01))
        assert m is not None, "closed after %r" % [t for t, _ in got]
        got.append(m)
        count -= m[0] == b"Z"
    return got


def comparable(msgs):
    """What must match between direct and pgtally: every message, but the
    BackendKeyData (the keys differ) and ParameterStatus values that name
    the session (none today) by type only."""
    return [(t, b"" if t == b"K" else p) for t, p in msgs]


def pipelined(port, sql, **params):
    """A client that sends its StartupMessage and a Query in one write."""
    conn = RawConn("127.0.0.1", port)
    conn.send(startup_packet(dict(STARTUP, **params)) + query_message(sql))
    return conn


def costless(text):
    """An error's text without the amounts, which depend on timing."""
    return re.sub(r"[0-9]+\.[0-9]+ USD", "N USD", text)


def capped(pgtally):
    p = pgtally(**PER_SECOND)
    set_budget(p, "--user", "trust_user", "--period", "day", "--limit", "100",
               "--per-query", "0.25")
    return p


def test_query_in_the_startup_write_is_relayed_as_direct_and_metered_once(pgtally, pg):
    p = pgtally()
    sql = "SELECT 40 + 2 AS pipelined_answer"
    seen = {}
    for name, port in (("direct", pg.port), ("pgtally", p.port)):
        conn = pipelined(port, sql)
        seen[name] = read_ready(conn, 2)
        assert conn.query("SELECT 1") == [("1",)], name
        conn.close()
    types = [t for t, _ in seen["pgtally"]]
    assert types[0] == b"R" and types.index(b"K") < types.index(b"Z"), types
    assert types[-4:] == [b"T", b"D", b"C", b"Z"], types
    assert comparable(seen["pgtally"]) == comparable(seen["direct"]), (
        [t for t, _ in seen["direct"]], types)
    assert p.alive()
    recs = ledger(p, "\"user\" = 'trust_user'")
    mine = [r for r in recs if "pipelined_answer" in r["normalized"]]
    assert len(mine) == 1, show(recs)
    assert mine[0]["status"] == "ok", show(recs)


def test_query_in_the_startup_write_is_cancelled_under_a_per_query_cap(pgtally, pg):
    """pg_sleep(2) under a 0.25 per-query cap at one unit per second: a Query
    sent after login is cancelled by pgtally's running check; one sent in
    the StartupMessage's write must be too, with the same error."""
    p = capped(pgtally)
    healthy = p.connect()
    after = p.raw()
    after.startup("trust_user", DBNAME)
    after.send(query_message("SELECT pg_sleep(2)"))
    want = read_ready(after, 1)
    want_err = [parse_fields(b) for t, b in want if t == b"E"]
    assert [e["C"] for e in want_err] == ["57014"], want_err
    assert "pgtally" in want_err[0]["M"] and "trust_user" in want_err[0]["M"], want_err
    after.close()

    t0 = time.monotonic()
    conn = pipelined(p.port, "SELECT pg_sleep(2)")
    got = read_ready(conn, 2)
    took = time.monotonic() - t0
    types = [t for t, _ in got]
    first_z = types.index(b"Z")
    assert types[0] == b"R" and b"K" in types[:first_z], types
    assert types[first_z + 1:] == [t for t, _ in want], (types, [t for t, _ in want])
    errs = [parse_fields(b) for t, b in got if t == b"E"]
    assert [(e["C"], costless(e["M"])) for e in errs] == [
        (e["C"], costless(e["M"])) for e in want_err], errs
    assert took < 1.8, took
    assert conn.query("SELECT 'alive'") == [("alive",)]
    conn.close()
    assert_healthy(healthy)
    healthy.close()
    assert p.alive()
    recs = ledger(p, "\"user\" = 'trust_user' AND normalized LIKE '%pg_sleep%'")
    assert [r["status"] for r in recs] == ["budget_cancelled"] * 2, show(recs)


def test_query_and_terminate_in_the_startup_write(pgtally, pg):
    """StartupMessage, Query and Terminate in one write, then nothing: the
    Query is answered and the session ends, as direct."""
    p = pgtally()
    seen = {}
    for name, port in (("direct", pg.port), ("pgtally", p.port)):
        conn = RawConn("127.0.0.1", port)
        conn.send(startup_packet(STARTUP) + query_message("SELECT 'bye' AS pipelined_bye") +
                  message(b"X"))
        seen[name] = [t for t, _ in conn.read_until_closed(5)]
        conn.close()
    assert seen["pgtally"] == seen["direct"], seen
    assert seen["pgtally"][-4:] == [b"T", b"D", b"C", b"Z"], seen
    recs = ledger(p, "normalized LIKE '%pipelined_bye%'")
    assert len(recs) == 1, show(recs)


def scram_login(port, then=b""):
    """scram_user's SASLInitialResponse in the StartupMessage's write (the
    client-first message needs nothing from the server), then the final
    message with `then` in the same write. Returns (conn, messages)."""
    conn = RawConn("127.0.0.1", port)
    scram = _Scram(b"scram_pw")
    first = scram.client_first()
    conn.send(startup_packet({"user": "scram_user", "database": DBNAME}) +
              message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
    msgs = []
    while True:
        m = conn.recv_message(5)
        assert m is not None, "closed after %r" % msgs
        msgs.append(m[0])
        t, payload = m
        assert t != b"E", parse_fields(payload)
        if t == b"R" and struct.unpack("!I", payload[:4])[0] == 11:
            conn.send(message(b"p", scram.client_final(payload[4:])) + then)
        if t == b"R" and struct.unpack("!I", payload[:4])[0] == 12:
            scram.verify_server(payload[4:])
            return conn, msgs


def test_early_sasl_messages_reach_the_server_and_the_statement_behind_is_metered(pgtally, pg):
    """Authentication messages sent ahead of the server's request still go
    to the server during authentication; a Query in the same write as the
    last of them waits for the login and is metered."""
    p = pgtally()
    seen = {}
    for name, port in (("direct", pg.port), ("pgtally", p.port)):
        conn, msgs = scram_login(port, query_message("SELECT 'scram' AS pipelined_scram"))
        rest = read_ready(conn, 2)
        seen[name] = msgs + [t for t, _ in rest]
        # not "SELECT 1": a shape ignores column aliases, and would share
        # the pipelined statement's normalized text
        assert conn.query("SELECT 1 FROM pg_class LIMIT 1") == [("1",)], name
        conn.close()
    assert seen["pgtally"] == seen["direct"], seen
    recs = ledger(p, "normalized LIKE '%pipelined_scram%'")
    assert len(recs) == 1 and recs[0]["user"] == "scram_user", show(recs)


def test_fifty_megabytes_after_the_startup_message_meet_backpressure(pgtally):
    """A client writes a 50 MB Query right behind its StartupMessage:
    pgtally must not keep it while the session logs in, and streams it
    upstream afterwards (past the intercept's 1 MB a Query is not kept
    whole); it is answered once the session is ready. Under ASan, freed
    blocks wait in a quarantine that would count as RSS here; a small one
    keeps the figure what the release build uses."""
    asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    p = pgtally(env={"ASAN_OPTIONS": asan + ":quarantine_size_mb=1"})
    healthy = p.connect()
    before = rss_kb(p.proc.pid)
    big = query_message("SELECT 1 AS big -- " + "x" * (50 * MIB))
    conn = RawConn("127.0.0.1", p.port)
    peak = [before]
    done = threading.Event()

    def sampler():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(p.proc.pid))
            time.sleep(0.02)

    def writer():
        conn.sock.settimeout(None)
        try:
            conn.sock.sendall(startup_packet(STARTUP) + big)
        except OSError:
            pass

    threads = [threading.Thread(target=f, daemon=True) for f in (sampler, writer)]
    for t in threads:
        t.start()
    try:
        got = read_ready(conn, 2, timeout=60)
    finally:
        done.set()
    types = [t for t, _ in got]
    assert types[-4:] == [b"T", b"D", b"C", b"Z"], types
    assert peak[0] - before < 16 * 1024, "RSS grew by %d KB" % (peak[0] - before)
    assert conn.query("SELECT 'alive'") == [("alive",)]
    conn.close()
    assert_healthy(healthy)
    healthy.close()
    assert p.alive()


def test_query_instead_of_a_password_gets_what_the_server_says(pgtally, pg):
    """md5_user sends a Query in its StartupMessage's write: the server asks
    for a password and reads the Query instead, and refuses the login. Through
    pgtally the same, and the Query never runs."""
    p = pgtally()
    seen = {}
    for name, port in (("direct", pg.port), ("pgtally", p.port)):
        conn = RawConn("127.0.0.1", port)
        conn.send(startup_packet({"user": "md5_user", "database": DBNAME}) +
                  query_message("SELECT 'unauthenticated' AS pipelined_md5"))
        msgs = conn.read_until_closed(5)
        seen[name] = [(t, parse_fields(b).get("C") if t == b"E" else None) for t, b in msgs]
        conn.close()
    assert seen["pgtally"] == seen["direct"], seen
    assert seen["pgtally"][-1] == (b"E", "08P01"), seen
    assert p.alive()
    assert ledger(p, "normalized LIKE '%pipelined_md5%'") == []
