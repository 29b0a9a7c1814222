"""Executions that a logged-in client could once run without a ledger
record or a budget's running check, tried as a hostile client would: a
protocol Bind of a statement prepared in SQL (PREPARE in a simple Query) or
of one pgtally never saw prepared, a FunctionCall message, a Bind of a
statement whose second Parse the server rejected, and a cursor FETCH.
Raw protocol, since drivers do not send these sequences. Each test checks
that the execution is recorded once in the ledger, that under a per-query
cap a two-second sleep is cancelled by pgtally in good time, and that the
session and pgtally stay healthy afterwards.
"""

import struct
import time

from helpers import SLOW
from pgwire import message, parse_fields, query_message
from test_hold import capped, parse, replies_until_ready
from test_metering import ledger, show

CAP_MESSAGE = "over the per-query cap of"
BUDGET = "budget user trust_user/day"
PG_SLEEP_OID = 2626  # pg_sleep(double precision)


def bind(stmt, portal=b""):
    """Bind with no parameters, all results as text."""
    return message(b"B", portal + b"\0" + stmt + b"\0" + b"\0\0" * 3)


def execute(portal=b""):
    return message(b"E", portal + b"\0" + struct.pack("!I", 0))


def sync():
    return message(b"S")


def function_call(oid, *text_args):
    """FunctionCall with text arguments and a text result."""
    body = struct.pack("!IHH", oid, 0, len(text_args))
    for a in text_args:
        body += struct.pack("!I", len(a)) + a.encode()
    return message(b"F", body + struct.pack("!H", 0))


def run(conn, data, timeout=10.0):
    """Sends data; returns (messages up to ReadyForQuery, seconds taken)."""
    t0 = time.monotonic()
    conn.send(data)
    got, deadline = [], t0 + timeout * SLOW
    while time.monotonic() < deadline:
        m = conn.recv_message(max(deadline - time.monotonic(), 0.05))
        assert m is not None, "pgtally closed the session; got %r" % got
        got.append(m)
        if m[0] == b"Z":
            break
    return got, time.monotonic() - t0


def errors_of(msgs):
    return [parse_fields(p) for t, p in msgs if t == b"E"]


def assert_cancelled_by_pgtally(msgs, took):
    errs = errors_of(msgs)
    assert len(errs) == 1, msgs
    assert errs[0]["C"] == "57014", errs
    assert CAP_MESSAGE in errs[0]["M"] and BUDGET in errs[0]["M"], errs
    assert took < 1.5 * SLOW, "cancelled after %.2f s" % took
    assert msgs[-1][0] == b"Z", msgs


def session(p):
    conn = p.raw()
    conn.startup("trust_user", "pgtally_test")
    return conn


def assert_still_healthy(p, conn):
    assert conn.query("SELECT 'alive'") == [("alive",)]
    assert p.alive()
    with p.connect(user="trust_user") as other:
        assert other.execute("SELECT 1").fetchone() == (1,)


def sleeps(recs):
    return [r for r in recs if "pg_sleep" in (r["normalized"] or "")]


def test_bind_of_a_statement_prepared_in_sql_is_metered_and_capped(pgtally):
    """PREPARE in a simple Query, then a protocol Bind of it: the portal's
    executions are queued, so the cap cancels it and the ledger records
    the SQL behind the statement."""
    p = capped(pgtally)
    conn = session(p)
    conn.query("PREPARE p AS SELECT pg_sleep(2)")
    msgs, took = run(conn, bind(b"p") + execute() + sync())
    assert_cancelled_by_pgtally(msgs, took)
    # DEALLOCATE and a new PREPARE of the name: the next Bind runs the new text.
    conn.query("DEALLOCATE p")
    conn.query("PREPARE p AS SELECT 40 + 2 AS answer")
    msgs, _ = run(conn, bind(b"p") + execute() + sync())
    assert [t for t, _ in msgs] == [b"2", b"D", b"C", b"Z"], msgs
    assert_still_healthy(p, conn)
    conn.close()
    recs = ledger(p, "\"user\" = 'trust_user' AND protocol = 'extended'")
    assert len(recs) == 2, show(recs)
    sleep, answer = recs
    assert "pg_sleep" in sleep["normalized"], show(recs)
    assert sleep["status"] == "budget_cancelled" and sleep["sqlstate"] == "57014", show(recs)
    assert sleep["budget_id"] is not None and sleep["compute_s"] >= 0.25, show(recs)
    assert "answer" in answer["normalized"] and answer["status"] == "ok", show(recs)


def test_bind_of_a_statement_pgtally_never_saw_is_metered_and_capped(pgtally):
    """A statement prepared where pgtally does not follow it (an SQL
    PREPARE sent through the extended protocol): its executions are still
    recorded, under a text that says the SQL was not seen, and capped."""
    p = capped(pgtally)
    conn = session(p)
    msgs, _ = run(conn, parse("PREPARE q AS SELECT pg_sleep(2)") + bind(b"") + execute() + sync())
    assert not errors_of(msgs), msgs
    msgs, took = run(conn, bind(b"q") + execute() + sync())
    assert_cancelled_by_pgtally(msgs, took)
    assert_still_healthy(p, conn)
    conn.close()
    recs = ledger(p, "\"user\" = 'trust_user' AND status = 'budget_cancelled'")
    assert len(recs) == 1, show(recs)
    r = recs[0]
    assert 'prepared statement "q"' in r["normalized"], show(recs)
    assert "not seen" in r["normalized"], show(recs)
    assert r["protocol"] == "extended" and r["sqlstate"] == "57014", show(recs)
    assert r["compute_s"] >= 0.25, show(recs)


def test_function_call_is_metered(pgtally):
    """A FunctionCall message (pg_sleep by its OID) is an execution:
    recorded once, timed, under the function's OID."""
    p = pgtally()
    conn = session(p)
    msgs, _ = run(conn, function_call(PG_SLEEP_OID, "0.3"))
    assert [t for t, _ in msgs] == [b"V", b"Z"], msgs
    assert_still_healthy(p, conn)
    conn.close()
    recs = ledger(p, "\"user\" = 'trust_user' AND protocol = 'function'")
    assert len(recs) == 1, show(recs)
    r = recs[0]
    assert "FunctionCall" in r["normalized"] and str(PG_SLEEP_OID) in r["normalized"], show(recs)
    assert r["kind"] == "utility" and r["status"] == "ok", show(recs)
    assert 0.25 <= r["compute_s"] < 2, show(recs)


def test_function_call_is_capped(pgtally):
    p = capped(pgtally)
    conn = session(p)
    msgs, took = run(conn, function_call(PG_SLEEP_OID, "2"))
    assert_cancelled_by_pgtally(msgs, took)
    assert_still_healthy(p, conn)
    conn.close()
    recs = ledger(p, "\"user\" = 'trust_user' AND protocol = 'function'")
    assert len(recs) == 1, show(recs)
    r = recs[0]
    assert r["status"] == "budget_cancelled" and r["sqlstate"] == "57014", show(recs)
    assert r["budget_id"] is not None and r["compute_s"] >= 0.25, show(recs)


def test_a_rejected_parse_does_not_rename_the_statement(pgtally):
    """Parse "s1" (a sleep), then Parse "s1" again with other SQL, which
    the server rejects (42P05, s1 exists): a Bind of s1 runs the sleep on
    the server, and pgtally must meter and cap the sleep, not the text
    that never became s1."""
    p = capped(pgtally)
    conn = session(p)
    msgs, _ = run(conn, parse("SELECT pg_sleep(2)", b"s1") + sync())
    assert [t for t, _ in msgs] == [b"1", b"Z"], msgs
    msgs, _ = run(conn, parse("SELECT 'never prepared' AS decoy", b"s1") + sync())
    assert [e["C"] for e in errors_of(msgs)] == ["42P05"], msgs
    msgs, took = run(conn, bind(b"s1") + execute() + sync())
    assert_cancelled_by_pgtally(msgs, took)
    assert_still_healthy(p, conn)
    conn.close()
    recs = ledger(p, "\"user\" = 'trust_user' AND protocol = 'extended'")
    assert not [r for r in recs if "decoy" in r["normalized"]], show(recs)
    sleep, = sleeps(recs)
    assert sleep["status"] == "budget_cancelled" and sleep["compute_s"] >= 0.25, show(recs)


def test_a_parse_skipped_after_an_error_does_not_rename_the_statement(pgtally):
    """In one batch, a failing Parse and then a Parse of s1 that the server
    skips (it skips to the Sync after an error): s1 keeps its old SQL."""
    p = capped(pgtally)
    conn = session(p)
    run(conn, parse("SELECT pg_sleep(2)", b"s1") + sync())
    msgs, _ = run(conn, parse("SELEC 1", b"s2") + parse("SELECT 'skipped' AS decoy", b"s1") +
                  sync())
    assert [e["C"] for e in errors_of(msgs)] == ["42601"], msgs
    msgs, took = run(conn, bind(b"s1") + execute() + sync())
    assert_cancelled_by_pgtally(msgs, took)
    assert_still_healthy(p, conn)
    conn.close()
    recs = ledger(p, "\"user\" = 'trust_user' AND protocol = 'extended'")
    assert not [r for r in recs if "decoy" in r["normalized"]], show(recs)
    sleep, = sleeps(recs)
    assert sleep["status"] == "budget_cancelled", show(recs)


def test_cursor_fetch_is_metered_and_capped(pgtally):
    """DECLARE c CURSOR FOR SELECT pg_sleep(2); FETCH runs the sleep: the
    FETCH is recorded and cancelled by the cap."""
    p = capped(pgtally)
    conn = session(p)
    conn.query("BEGIN")
    conn.query("DECLARE c CURSOR FOR SELECT pg_sleep(2)")
    msgs, took = run(conn, query_message("FETCH ALL FROM c"))
    assert_cancelled_by_pgtally(msgs, took)
    conn.query("ROLLBACK")
    assert_still_healthy(p, conn)
    conn.close()
    recs = ledger(p, "\"user\" = 'trust_user'")
    fetch = [r for r in recs if r["normalized"].upper().startswith("FETCH")]
    assert len(fetch) == 1, show(recs)
    assert fetch[0]["status"] == "budget_cancelled" and fetch[0]["protocol"] == "simple", show(recs)
    assert fetch[0]["compute_s"] >= 0.25, show(recs)


def test_protocol_execute_of_a_declared_cursor_is_metered_and_capped(pgtally):
    """DECLARE c CURSOR FOR SELECT pg_sleep(2), then a protocol Execute of
    the portal c, which no Bind created: pgtally follows DECLARE with the
    parser, so the execution is recorded under the cursor's query, and
    cancelled by the cap. An Execute of a portal it never saw at all is
    recorded under a text that says so."""
    p = capped(pgtally)
    conn = session(p)
    conn.query("BEGIN")
    conn.query("DECLARE c CURSOR FOR SELECT pg_sleep(2)")
    msgs, took = run(conn, execute(b"c") + sync())
    assert_cancelled_by_pgtally(msgs, took)
    conn.query("ROLLBACK")
    conn.query("BEGIN")
    conn.query("DECLARE \"d\" CURSOR FOR SELECT 1")
    conn.query("CLOSE d")
    msgs, _ = run(conn, execute(b"d") + sync())   # 34000: no such portal, nothing ran
    assert [parse_fields(p)["C"] for t, p in msgs if t == b"E"] == ["34000"], msgs
    conn.query("ROLLBACK")
    assert_still_healthy(p, conn)
    conn.close()
    recs = ledger(p, "\"user\" = 'trust_user'")
    ex = [r for r in recs if r["protocol"] == "extended"]
    assert [(r["normalized"], r["status"]) for r in ex] == [
        ("SELECT pg_sleep($1)", "budget_cancelled")], show(recs)
    assert ex[0]["compute_s"] >= 0.25, show(recs)


def test_portal_suspended_by_a_row_limit_is_metered_each_time(pgtally):
    """An Execute with a row limit leaves the portal suspended; each Execute
    of it is an execution of its own, recorded and under the running
    check."""
    p = capped(pgtally)
    conn = session(p)
    conn.query("BEGIN")
    limited = message(b"E", b"\0" + struct.pack("!I", 2))
    msgs, _ = run(conn, parse("SELECT g FROM generate_series(1, 5) g") + bind(b"") +
                  limited + limited + limited + sync())
    assert [t for t, _ in msgs] == [b"1", b"2", b"D", b"D", b"s", b"D", b"D", b"s", b"D",
                                    b"C", b"Z"], msgs
    conn.query("COMMIT")
    conn.close()
    recs = ledger(p, "\"user\" = 'trust_user' AND protocol = 'extended'")
    assert [(r["status"], r["rows"]) for r in recs] == [("ok", 2), ("ok", 2), ("ok", 1)], \
        show(recs)
