"""Statements inside transaction blocks are judged before they run: pgtally
explains them in band there too (txn_status 'T'), for the simple protocol
(a held Query) and the extended one (a held Bind). Inside a block an
EXPLAIN that fails aborts the block, so its error is the statement's: the
client gets it, exactly as direct, with the server's ReadyForQuery ('E'),
and its statement is never sent. psycopg without autocommit (the default
of most drivers) runs everything inside blocks.
"""

import struct
import time

import psycopg
import pytest
from psycopg import errors

from pgwire import RawConn, message, parse_fields, query_message
from test_budgets import PER_SECOND, set_budget
# bench_db: test_metering's fixture, a database of its own with pgbench tables
from test_metering import BENCH_DB, bench_db, ledger, run_pgbench, show  # noqa: F401

CROSS = "SELECT count(*) FROM generate_series(1,100000) a, generate_series(1,100000) b"
# psycopg sends a statement with parameters through the extended protocol
# (a ClientCursor merges them in and uses the simple one)
CROSS_PARAM = "SELECT count(*) FROM generate_series(1,%s) a, generate_series(1,%s) b"
INERROR = psycopg.pq.TransactionStatus.INERROR


def capped(pgtally, **config):
    """pgtally with a per-query cap of 0.25 for trust_user, at 1 per
    compute-second."""
    p = pgtally(**PER_SECOND, **config)
    set_budget(p, "--user", "trust_user", "--period", "day", "--limit", "100",
               "--per-query", "0.25")
    return p


def explained(r):
    return r["est_planner_cost"] is not None and r["est_planner_cost"] > 0


def replies(conn, timeout=5.0):
    """(type, fields or None) of every message up to ReadyForQuery, which
    is given as ('Z', status)."""
    got, deadline = [], time.monotonic() + timeout
    while True:
        t, payload = conn.recv_message(max(deadline - time.monotonic(), 0.05))
        if t in (b"E", b"N"):
            got.append((t.decode(), parse_fields(payload)))
        elif t == b"Z":
            got.append(("Z", payload.decode()))
            return got
        else:
            got.append((t.decode(), None))


def both(pgtally_proxy, pg, script):
    """Runs script(conn) direct and through pgtally, each on a fresh raw
    session of trust_user; returns (direct, pgtally)."""
    out = []
    for port in (pg.port, pgtally_proxy.port):
        conn = RawConn("127.0.0.1", port)
        conn.startup("trust_user", "pgtally_test")
        out.append(script(conn))
        conn.close()
    return out


# ---- (1) refused before it runs ------------------------------------------

@pytest.mark.parametrize("cursor", ["extended", "simple"])
def test_cross_join_in_a_block_is_refused_before_it_runs(pgtally, cursor):
    """psycopg without autocommit: the cross join inside the block is
    refused with 54000 before it runs (not cancelled by the running check
    with 57014); the block is then aborted, as after any failed statement, and
    ROLLBACK works."""
    p = capped(pgtally)
    factory = psycopg.ClientCursor if cursor == "simple" else psycopg.Cursor
    with psycopg.connect(p.dsn(), cursor_factory=factory) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.Error) as ei:
            c.execute(CROSS_PARAM, (100000, 100000))
        # 54000, not the running check's 57014, and the ledger's "refused"
        # at no cost below: it never ran. (Not a clock: a new backend's
        # first EXPLAIN loads its catalog caches, ~20 ms here and seconds
        # on a loaded machine.)
        assert ei.value.sqlstate == "54000", ei.value
        assert c.info.transaction_status == INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            c.execute("SELECT 2")
        c.rollback()
        assert c.execute("SELECT 3").fetchone() == (3,)
    recs = ledger(p, "normalized LIKE ?", ("%generate_series%",))
    assert len(recs) == 1 and recs[0]["protocol"] == cursor, show(recs)
    assert recs[0]["status"] == "refused" and recs[0]["sqlstate"] == "54000", show(recs)
    assert recs[0]["cost_micro"] == 0, show(recs)


def test_cross_join_in_a_block_raw_simple_protocol(pgtally):
    """The same with the raw simple protocol: the client sees the budget's
    error and ReadyForQuery 'E', then 25P02, then ROLLBACK ends it."""
    p = capped(pgtally)
    conn = p.raw()
    conn.startup("trust_user", "pgtally_test")
    conn.send(query_message("BEGIN"))
    assert replies(conn)[-1] == ("Z", "T")
    conn.send(query_message(CROSS))
    got = replies(conn)
    assert [t for t, _ in got] == ["E", "Z"], got
    assert got[0][1]["C"] == "54000" and got[1] == ("Z", "E"), got
    conn.send(query_message("SELECT 1"))
    got = replies(conn)
    assert got[0][1]["C"] == "25P02" and got[-1] == ("Z", "E"), got
    conn.send(query_message("ROLLBACK"))
    assert replies(conn)[-1] == ("Z", "I")
    conn.close()


# ---- (2) a cheap statement runs, with an estimate -------------------------

@pytest.mark.parametrize("cursor", ["extended", "simple"])
def test_cheap_statement_in_a_block_runs_with_an_estimate(pgtally, cursor):
    p = capped(pgtally)
    factory = psycopg.ClientCursor if cursor == "simple" else psycopg.Cursor
    with psycopg.connect(p.dsn(), cursor_factory=factory) as c:
        c.execute("SELECT 1")
        assert c.execute("SELECT count(*) FROM generate_series(1, %s) g", (10,)).fetchone() \
            == (10,)
        c.commit()
    recs = ledger(p, "normalized LIKE ?", ("%generate_series%",))
    assert len(recs) == 1 and recs[0]["status"] == "ok", show(recs)
    assert recs[0]["protocol"] == cursor, show(recs)
    assert explained(recs[0]), show(recs)
    assert recs[0]["est_cost_micro"] is not None and recs[0]["est_cost_micro"] >= 0, show(recs)


# ---- (3) errors at planning, simple protocol -------------------------------

PLANNING_ERRORS = [
    "SELECT * FROM txn_no_such_table",                     # 42P01, with a position
    "SELECT 1/0",                                          # 22012, folded at planning
    "SELECT nosuch FROM pg_class",                         # 42703, with a position
    "  /* lead */ SELECT 'é', nosuch FROM pg_class",       # offset and characters
    "SELECT relname FROM pg_class WHERE nosuch = 1;",      # trailing semicolon
]


@pytest.mark.parametrize("sql", PLANNING_ERRORS)
def test_planning_error_in_a_block_is_as_direct(pgtally, pg, sql):
    p = capped(pgtally)

    def script(conn):
        seen = []
        for q in ("BEGIN", sql, "SELECT 1", "ROLLBACK", "SELECT 2"):
            conn.send(query_message(q))
            seen.append(replies(conn))
        return seen

    direct, through = both(p, pg, script)
    assert through == direct, "direct:\n%r\npgtally:\n%r" % (direct, through)
    assert direct[1][-1] == ("Z", "E") and direct[2][0][1]["C"] == "25P02", direct
    recs = ledger(p, "\"user\" = 'trust_user' AND status = 'error'")
    code = direct[1][0][1]["C"]
    assert [r["sqlstate"] for r in recs] == [code, "25P02"], show(recs)


def test_planning_error_in_a_block_with_psycopg(pgtally, pg):
    """psycopg (simple protocol) sees the same exception, and the block is
    aborted afterwards."""
    p = capped(pgtally)
    for dsn in (p.dsn(), None):
        kw = {} if dsn else dict(host=pg.host, port=pg.port, user="trust_user",
                                 dbname="pgtally_test")
        with psycopg.connect(dsn or "", cursor_factory=psycopg.ClientCursor, **kw) as c:
            c.execute("SELECT 1")
            with pytest.raises(errors.UndefinedColumn) as ei:
                c.execute("SELECT nosuch FROM pg_class")
            assert ei.value.diag.statement_position == "8"
            assert c.info.transaction_status == INERROR
            c.rollback()


# ---- (4) the extended protocol inside a block -------------------------------

def parse(sql, name=b"", types=()):
    return message(b"P", name + b"\0" + sql.encode() + b"\0" +
                   struct.pack("!H", len(types)) + b"".join(struct.pack("!I", t) for t in types))


def bind(values=(), portal=b"", stmt=b""):
    body = portal + b"\0" + stmt + b"\0" + struct.pack("!H", 0) + struct.pack("!H", len(values))
    for v in values:
        body += struct.pack("!I", len(v)) + v
    return message(b"B", body + struct.pack("!H", 0))


EXECUTE = message(b"E", b"\0" + b"\0\0\0\0")
SYNC = message(b"S")

EXTENDED_ERRORS = [
    ("SELECT 1/0", ()),                                       # 22012 at Bind
    ("SELECT 10 / $1::int", (b"0",)),                         # 22012 with the value
    ("SELECT $1::int + 1", (b"abc",)),                        # 22P02 binding the value
    ("SELECT nosuch FROM pg_class", ()),                      # 42703 at Parse
]


@pytest.mark.parametrize("sql,values", EXTENDED_ERRORS)
def test_extended_error_in_a_block_is_as_direct(pgtally, pg, sql, values):
    p = capped(pgtally)

    def script(conn):
        conn.send(query_message("BEGIN"))
        seen = [replies(conn)]
        types = (23,) * len(values) if "$1::int +" not in sql else (25,)
        conn.send(parse(sql, types=types) + bind(values) + EXECUTE + SYNC)
        seen.append(replies(conn))
        conn.send(parse("SELECT 1") + bind() + EXECUTE + SYNC)
        seen.append(replies(conn))
        conn.send(query_message("ROLLBACK"))
        seen.append(replies(conn))
        return seen

    direct, through = both(p, pg, script)
    assert through == direct, "direct:\n%r\npgtally:\n%r" % (direct, through)
    assert direct[1][-1] == ("Z", "E"), direct


def test_extended_cheap_statement_in_a_block_is_explained(pgtally):
    p = capped(pgtally)
    conn = p.raw()
    conn.startup("trust_user", "pgtally_test")
    conn.send(query_message("BEGIN"))
    replies(conn)
    # not generate_series, whose fingerprint libpg_query would take for the
    # cross join's (identical FROM items are counted once)
    conn.send(parse("SELECT count(*) FROM pg_class WHERE relpages > $1::int", types=(23,)) +
              bind((b"10",)) + EXECUTE + SYNC)
    got = replies(conn)
    assert [t for t, _ in got] == ["1", "2", "D", "C", "Z"] and got[-1] == ("Z", "T"), got
    conn.send(parse(CROSS) + bind() + EXECUTE + SYNC)
    got = replies(conn)
    assert [t for t, _ in got] == ["1", "E", "Z"] and got[1][1]["C"] == "54000", got
    assert got[-1] == ("Z", "E"), got
    conn.send(query_message("ROLLBACK"))
    assert replies(conn)[-1] == ("Z", "I")
    conn.close()
    recs = ledger(p, "normalized LIKE ? OR normalized LIKE ?", ("%generate_series%", "%relpages%"))
    assert [r["status"] for r in recs] == ["ok", "refused"], show(recs)
    assert explained(recs[0]), show(recs)


# ---- (5) pgbench TPC-B with metering ----------------------------------------

@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["simple", "extended"])
def test_pgbench_tpcb_in_blocks_keeps_balances(bench_db, pgtally, pg, mode):  # noqa: F811
    """pgbench's TPC-B runs each transaction in BEGIN ... END; with metering
    and a per-query cap every statement is judged (explained or estimated
    from history), runs once, and the balances add up."""
    p = capped(pgtally)

    def sums():
        with pg.admin(BENCH_DB) as a:
            return a.execute(
                "SELECT (SELECT sum(abalance) FROM pgbench_accounts),"
                " (SELECT sum(tbalance) FROM pgbench_tellers),"
                " (SELECT sum(bbalance) FROM pgbench_branches),"
                " (SELECT coalesce(sum(delta), 0) FROM pgbench_history),"
                " (SELECT count(*) FROM pgbench_history)").fetchone()

    before = sums()
    out = run_pgbench(p.host, p.port, "-n", "-M", mode, "-t", 50, "-c", 2)
    assert "number of transactions actually processed: 100/100" in out, out
    after = sums()
    delta = after[3] - before[3]
    assert after[4] - before[4] == 100, (before, after)
    assert [after[i] - before[i] for i in range(3)] == [delta] * 3, (before, after)
    recs = [r for r in ledger(p, "kind IN ('update', 'select', 'insert')")
            if "count(" not in r["normalized"]]  # pgbench's own look at the scale
    assert len(recs) == 500 and {r["status"] for r in recs} == {"ok"}, show(recs[:5])
    # history vouches for the hot path: most statements are not explained
    # (103 of 500 were seen under ASan, where two clients' contended
    # UPDATEs make compute times less stable)
    assert sum(explained(r) for r in recs) < 150, sum(explained(r) for r in recs)
