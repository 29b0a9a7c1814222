"""The conversation model at work: what the client sees, and when, is what it
would see direct, however pgtally's own messages interleave with the
client's; messages the server skips leave no trace in the ledger or in the
session's state. Real psycopg where it can produce the sequence, raw
protocol where no driver does.
"""

import os
import socket
import struct
import tempfile
import time
from itertools import groupby

import psycopg

from helpers import assert_healthy
from pgwire import RawConn, message, query_message
from test_budgets import PER_SECOND, set_budget
from test_estimate import ALWAYS
from test_hold import parse, replies_until_ready
from test_metering import direct_connect, ledger, show
from test_unknown import replies

SYNC = message(b"S")
FLUSH = message(b"H")


def bind(stmt=b"", portal=b"", params=()):
    body = portal + b"\0" + stmt + b"\0" + struct.pack("!H", 0) + struct.pack("!H", len(params))
    for p in params:
        body += struct.pack("!I", len(p)) + p
    return message(b"B", body + struct.pack("!H", 0))


def execute(portal=b"", rows=0):
    return message(b"E", portal + b"\0" + struct.pack("!I", rows))


def raw(port):
    c = RawConn("127.0.0.1", port)
    c.startup("trust_user", "pgtally_test")
    return c


def quiet(conn, seconds):
    """Message types that arrive within seconds (none expected)."""
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            m = conn.recv_message(max(deadline - time.monotonic(), 0.05))
        except (TimeoutError, socket.timeout):
            break
        if m is None:
            break
        got.append(m[0])
    return got


def trace_roundtrips(conn_factory):
    """psycopg's test_executemany_trace (tests/test_pipeline.py, 3.1.7):
    two executemany in one pipeline, traced by libpq; returns the runs of
    message directions (F frontend, B backend) and the number of Syncs."""
    fd, path = tempfile.mkstemp(prefix="pgtally-trace-")
    try:
        with conn_factory() as conn:
            conn.autocommit = True
            cur = conn.cursor()
            cur.execute("CREATE TEMP TABLE trace (id int)")
            conn.pgconn.trace(fd)
            conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS |
                                        psycopg.pq.Trace.REGRESS_MODE)
            with conn.pipeline():
                cur.executemany("INSERT INTO trace (id) VALUES (%s)", [(10,), (20,)])
                cur.executemany("INSERT INTO trace (id) VALUES (%s)", [(10,), (20,)])
            conn.pgconn.untrace()
        with open(path) as f:
            items = [line.split("\t") for line in f.read().splitlines() if line]
    finally:
        os.close(fd)
        os.unlink(path)
    directions = [k for k, _ in groupby(items, key=lambda i: i[0])]
    syncs = len([i for i in items if len(i) > 2 and i[2] == "Sync"])
    return directions, syncs


def test_pipeline_trace_is_one_round_trip_as_direct(pgtally, pg):
    """pgtally explains the new INSERT at its Bind with a Flush of its own;
    the replies that Flush brings early are held until the client's Sync,
    so the client sees one round trip, as direct (psycopg's
    test_executemany_trace failed through pgtally with two)."""
    proxy = pgtally(**ALWAYS)
    direct = trace_roundtrips(lambda: direct_connect(pg))
    assert direct == (["F", "B"], 1), direct
    through = trace_roundtrips(proxy.connect)
    assert through == direct
    recs = ledger(proxy, "normalized LIKE 'INSERT INTO trace%'")
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs), show(recs)
    assert recs[0]["est_planner_cost"] is not None, show(recs)


def test_no_reply_before_the_clients_sync_while_pgtally_explains(pgtally, pg):
    """Parse, Bind and Execute of a new shape with no Sync or Flush: direct,
    the server writes nothing out; through pgtally, which explains the Bind
    with a Flush, the client also gets nothing until its Sync."""
    proxy = pgtally(**ALWAYS)
    seqs = []
    for port in (pg.port, proxy.port):
        c = raw(port)
        c.send(parse("SELECT count(*) FROM generate_series(1, $1::int)") +
               bind(params=[b"10"]) + execute())
        before = quiet(c, 0.6)
        c.send(SYNC)
        seqs.append((before, replies_until_ready(c)))
        c.close()
    assert seqs[0] == ([], [b"1", b"2", b"D", b"C", b"Z"]), seqs
    assert seqs[1] == seqs[0]
    recs = ledger(proxy, "normalized LIKE 'SELECT count(*) FROM generate_series%'")
    assert [(r["status"], r["rows"]) for r in recs] == [("ok", 1)], show(recs)
    assert recs[0]["est_planner_cost"] is not None, show(recs)


def test_failed_parse_ahead_of_a_query_in_one_batch_keeps_the_ledger_in_step(pgtally, pg):
    """A Parse that fails with a Query behind it before the Sync: the server
    skips the Query (it never runs, no record), and the statements after
    the Sync are recorded as themselves (the metering queue stayed one step
    out for the rest of the session)."""
    proxy = pgtally()
    seqs = []
    for port in (pg.port, proxy.port):
        c = raw(port)
        c.send(parse("SELEC broken") + query_message("SELECT 'skipped'") + SYNC)
        got = replies_until_ready(c)
        c.send(query_message("SELECT 'after one'"))
        got += replies_until_ready(c)
        c.send(parse("SELECT 'after two'") + bind() + execute() + SYNC)
        got += replies_until_ready(c)
        seqs.append(got)
        c.close()
    assert seqs[0] == [b"E", b"Z", b"T", b"D", b"C", b"Z", b"1", b"2", b"D", b"C", b"Z"], seqs
    assert seqs[1] == seqs[0]
    recs = ledger(proxy, "application = ''")
    assert [(r["normalized"], r["protocol"], r["status"]) for r in recs] == [
        ("SELECT $1", "simple", "ok"), ("SELECT $1", "extended", "ok")], show(recs)


def test_query_skipped_after_an_error_lets_the_session_go_idle(pgtally, pg):
    """A Query the server skips after an extended-protocol error owes no
    ReadyForQuery: the session is idle again after the Sync, so the next
    costly statement is judged before it runs (refused, 54000), not merely
    cancelled while it runs."""
    proxy = pgtally(**PER_SECOND)
    set_budget(proxy, "--user", "trust_user", "--period", "day", "--limit", "100",
               "--per-query", "0.25")
    c = raw(proxy.port)
    c.send(parse("SELEC broken") + query_message("SELECT pg_sleep(3)") + FLUSH)
    assert replies_until_ready(c, timeout=1.0) == [b"E"]
    c.send(SYNC)
    assert replies_until_ready(c) == [b"Z"]
    t0 = time.monotonic()
    c.send(query_message("SELECT count(*) FROM generate_series(1, 100000) a, "
                         "generate_series(1, 100000) b"))
    got = replies(c)
    assert time.monotonic() - t0 < 2, "the cross join ran"
    err = [body for t, body in got if t == b"E"]
    assert err and b"C54000" in err[0], got
    c.close()
    recs = ledger(proxy, "\"user\" = 'trust_user'")
    assert [r["status"] for r in recs] == ["refused"], show(recs)
    assert not any("pg_sleep" in r["normalized"] for r in recs), show(recs)


def test_error_ahead_of_pgtallys_explain_ends_the_hold(pgtally, pg):
    """A Bind pgtally explains, behind a client's Parse that fails in the
    same batch: the server skips pgtally's EXPLAIN, and the hold ends with
    it; the client's error comes at once, as direct (the server writes an
    error out), and the failed statement is recorded once."""
    proxy = pgtally(**ALWAYS)
    seqs = []
    for port in (pg.port, proxy.port):
        c = raw(port)
        # the unnamed statement pgtally saw parsed exists, but the Parse
        # of the named one fails first
        c.send(parse("SELECT 1/0 FROM nowhere", b"s1") + bind(b"s1") + execute())
        before = quiet(c, 0.5)
        c.send(SYNC)
        got = replies_until_ready(c)
        c.send(query_message("SELECT 'healthy'"))
        got += replies_until_ready(c)
        seqs.append((before, got))
        c.close()
    assert seqs[0] == ([b"E"], [b"Z", b"T", b"D", b"C", b"Z"]), seqs
    assert seqs[1] == seqs[0]
    with proxy.connect() as c:
        assert_healthy(c, "a new session")
    recs = ledger(proxy, "application = ''")
    assert [(r["normalized"], r["status"], r["sqlstate"]) for r in recs] == [
        ("SELECT $1/$2 FROM nowhere", "error", "42P01"), ("SELECT $1", "ok", None),
        ("SELECT $1", "ok", None)], show(recs)


def test_explains_bind_error_names_the_clients_portal(pgtally, pg):
    """A parameter that fails its input function fails pgtally's EXPLAIN at
    its Bind; the client gets the error its own Bind would have had, word
    for word: the CONTEXT names its portal ("unnamed portal" for the unnamed
    one), never pgtally's."""
    proxy = pgtally(**ALWAYS)
    for portal in (b"", b"p1"):
        bodies = []
        for port in (pg.port, proxy.port):
            c = raw(port)
            typed = message(b"P", b"\0SELECT $1 + 1 FROM generate_series(1, 3)\0" +
                            struct.pack("!HI", 1, 23))
            c.send(typed + bind(portal=portal, params=[b"abc"]) + execute(portal) + SYNC)
            bodies.append(replies(c, timeout=5))
            c.close()
        assert bodies[1] == bodies[0], bodies
        err = dict((f[:1], f[1:]) for f in bodies[0][1][1].split(b"\0") if f)
        want = b"unnamed portal" if not portal else b'portal "p1"'
        assert err[b"W"].startswith(want + b" parameter $1"), err
