"""Estimates: pgtally's in-band EXPLAIN, for the simple and the extended
protocol, seen from the client (nothing changes) and from the ledger (the
planner cost of each statement, with its real constants).

Most tests set estimate.explain_above = 0s so that every explainable
statement is explained, whatever its history (inside transaction blocks
too, but never in a failed one).
"""

import re

import psycopg
import pytest
from psycopg import errors

from helpers import run_psql
from test_metering import (BENCH_DB, _psycopg_pipeline, _run_unnamed_pipeline,  # noqa: F401
                           bench_db, direct_connect, ledger, run_pgbench, show)

ALWAYS = {"estimate.explain_above": "0s"}
BIG = "est_big"
NARROW = "SELECT count(*) FROM est_big WHERE a BETWEEN 1 AND 10"
WIDE = "SELECT count(*) FROM est_big WHERE a BETWEEN 1 AND 200000"
PARAM = "SELECT count(*) FROM est_big WHERE a BETWEEN %s AND %s"


@pytest.fixture(scope="module")
def big_table(pg):
    with pg.admin() as a:
        a.execute("DROP TABLE IF EXISTS %s" % BIG)
        a.execute("CREATE TABLE %s (a int, pad text)" % BIG)
        a.execute("INSERT INTO %s SELECT g, repeat('x', 50) FROM generate_series(1, 200000) g"
                  % BIG)
        a.execute("CREATE INDEX ON %s (a)" % BIG)
        a.execute("ANALYZE %s" % BIG)
        a.execute("GRANT ALL ON %s TO PUBLIC" % BIG)
    return BIG


def explained(r):
    return r["est_planner_cost"] is not None and r["est_planner_cost"] > 0


def test_both_protocols_explained_with_their_constants(pgtally, pg, big_table):
    """One shape, two ranges: the planner cost follows the constants (or
    the bound parameters) of each run, not a cached figure per shape."""
    proxy = pgtally(**ALWAYS)
    for _ in range(3):
        r = run_psql(proxy.dsn(), NARROW, WIDE)
        assert r.returncode == 0 and r.stdout.split() == ["10", "200000"], r
    with proxy.connect() as c, direct_connect(pg) as d:
        for lo, hi in [(1, 10), (1, 200000)] * 3:
            got = c.execute(PARAM, (lo, hi)).fetchone()
            assert got == d.execute(PARAM, (lo, hi)).fetchone() == (hi,)
    recs = ledger(proxy, "normalized LIKE ?", ("%est_big%",))
    assert len(recs) == 12, show(recs)
    simple = [r for r in recs if r["protocol"] == "simple"]
    extended = [r for r in recs if r["protocol"] == "extended"]
    assert len(simple) == 6 and len(extended) == 6, show(recs)
    for group in (simple, extended):
        assert all(explained(r) for r in group), [r["est_planner_cost"] for r in group]
        assert all(r["est_cost_micro"] is not None and r["est_cost_micro"] >= 0 for r in group)
        narrow = [r["est_planner_cost"] for r in group[0::2]]
        wide = [r["est_planner_cost"] for r in group[1::2]]
        # an index range of 10 rows against a scan of 200000
        assert min(wide) > 20 * max(narrow), (narrow, wide)
    # one fingerprint across both protocols and all constants
    assert len({r["fingerprint"] for r in recs}) == 1, show(recs)


def test_extended_explain_error_is_the_statements_error(pgtally, pg, big_table):
    """A statement that fails while it is planned (1/$1 folded with $1 = 0)
    fails through pgtally as it does directly; so does one whose Parse
    fails; the session goes on."""
    proxy = pgtally(**ALWAYS)
    outcomes = []
    for conn in (direct_connect(pg), proxy.connect()):
        with conn as c:
            got = []
            for sql, params in [("SELECT 1 / %s FROM est_big WHERE a = 1", (0,)),
                                ("SELECT * FROM est_no_such_table WHERE a = %s", (1,)),
                                ("SELECT a FROM est_big WHERE a = %s", (7,))]:
                try:
                    got.append(("ok", c.execute(sql, params).fetchall()))
                except psycopg.Error as e:
                    got.append((e.sqlstate, str(e).splitlines()[0]))
            got.append(c.info.transaction_status)
            outcomes.append(got)
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][0] == ("22012", "division by zero"), outcomes
    assert outcomes[1][1][0] == "42P01" and outcomes[1][2] == ("ok", [(7,)]), outcomes
    recs = ledger(proxy)
    # each statement is recorded once, a failed one with its error, whether
    # it failed at its Bind (planning) or its Parse, as a simple Query is
    assert len(recs) == 3, show(recs)
    div, missing, ok = recs
    assert div["normalized"].startswith("SELECT $") and " / $" in div["normalized"], show(recs)
    assert (div["status"], div["sqlstate"]) == ("error", "22012"), show(recs)
    assert (missing["status"], missing["sqlstate"]) == ("error", "42P01"), show(recs)
    assert (ok["normalized"], ok["status"]) == ("SELECT a FROM est_big WHERE a = $1", "ok")
    assert explained(ok), show(recs)


def test_explain_inside_a_transaction_block_but_not_a_failed_one(pgtally, big_table):
    """Inside a transaction block pgtally explains as it does outside (an
    EXPLAIN that fails there is the statement's error, exactly as the
    server reports it, and the statement is not sent); in a failed block
    it does not (the server refuses every statement there with 25P02, at
    no cost). An error inside the block leaves it aborted exactly as the
    server does."""
    proxy = pgtally(**ALWAYS)
    with proxy.connect(autocommit=False) as c:
        assert c.execute("SELECT a FROM est_big WHERE a = %s", (3,)).fetchone() == (3,)
        with pytest.raises(errors.DivisionByZero):
            c.execute("SELECT 1 / %s", (0,))
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            c.execute("SELECT a FROM est_big WHERE a > %s", (5,))
        c.rollback()
        assert c.execute("SELECT 2").fetchone() == (2,)
        c.commit()
    recs = ledger(proxy, "normalized LIKE ?", ("%est_big%",))
    assert [(r["status"], r["sqlstate"]) for r in recs] == [("ok", None), ("error", "25P02")], \
        show(recs)
    assert explained(recs[0]), show(recs)
    assert not explained(recs[1]), show(recs)


def test_unnamed_statement_and_portal_with_every_statement_explained(pgtally, pg):
    proxy = pgtally(**ALWAYS)
    assert _run_unnamed_pipeline(proxy.host, proxy.port) == \
        _run_unnamed_pipeline(pg.host, pg.port)
    with direct_connect(pg) as c:
        direct_pl = _psycopg_pipeline(c)
    with proxy.connect() as c:
        assert _psycopg_pipeline(c) == direct_pl
    # a client that binds the unnamed statement on its own, statement by
    # statement: the extended EXPLAIN goes in between its Parse and Bind
    with proxy.connect() as c, direct_connect(pg) as d:
        for i in range(5):
            sql = "SELECT %s::int * 3 AS est_x, 'v' || %s AS est_y"
            assert c.execute(sql, (i, i)).fetchall() == d.execute(sql, (i, i)).fetchall()
            assert [col.name for col in c.execute(sql, (i, i)).description] == ["est_x", "est_y"]
    recs = ledger(proxy, "normalized LIKE ?", ("%AS est_x%",))
    assert len(recs) == 10 and all(explained(r) for r in recs), show(recs)


def test_each_statement_runs_once_with_explain(pgtally, pg, big_table):
    """pg_stat_statements: the client's statements ran once each; pgtally's
    EXPLAINs are entries of their own."""
    proxy = pgtally(**ALWAYS)
    with pg.admin() as a:
        a.execute("DROP TABLE IF EXISTS est_once")
        a.execute("CREATE TABLE est_once (a int)")
        a.execute("GRANT ALL ON est_once TO PUBLIC")
        a.execute("SELECT pg_stat_statements_reset()")
    with proxy.connect() as c:
        c.execute("INSERT INTO est_once VALUES (%s)", (1,))
        c.execute("INSERT INTO est_once SELECT a FROM est_big WHERE a <= %s", (4,))
        assert c.execute("SELECT count(*) FROM est_once WHERE a > %s", (0,)).fetchone() == (5,)
    r = run_psql(proxy.dsn(), "INSERT INTO est_once VALUES (9)")
    assert r.returncode == 0, r
    with pg.admin() as a:
        assert a.execute("SELECT count(*) FROM est_once").fetchone() == (6,)
        got = a.execute("SELECT query, calls FROM pg_stat_statements WHERE query LIKE"
                        " '%est_once%' AND userid = 'trust_user'::regrole ORDER BY query").fetchall()
    client = sorted((q, n) for q, n in got if not q.upper().startswith("EXPLAIN"))
    assert [n for _, n in client] == [1, 1, 1, 1], got
    explains = [(q, n) for q, n in got if q.upper().startswith("EXPLAIN")]
    assert len(explains) >= 2, got
    recs = ledger(proxy, "normalized LIKE ?", ("%est_once%",))
    assert len(recs) == 4 and all(explained(r) for r in recs), show(recs)


def test_text_format_for_extended(pgtally, big_table):
    proxy = pgtally(**ALWAYS, **{"estimate.format": "text"})
    with proxy.connect() as c:
        assert c.execute(PARAM, (1, 100)).fetchone() == (100,)
    r = run_psql(proxy.dsn(), NARROW)
    assert r.returncode == 0, r
    recs = ledger(proxy, "normalized LIKE ?", ("%est_big%",))
    assert len(recs) == 2 and all(explained(r) for r in recs), show(recs)


@pytest.mark.parametrize("mode", ["history", "off"])
def test_modes_without_explain(pgtally, pg, big_table, mode):
    proxy = pgtally(**{"estimate.mode": mode, "estimate.explain_above": "0s"})
    with proxy.connect() as c:
        for _ in range(3):
            assert c.execute(PARAM, (1, 100)).fetchone() == (100,)
    with pg.admin() as a:
        explains = a.execute("SELECT count(*) FROM pg_stat_statements"
                             " WHERE query LIKE 'EXPLAIN%%est_big%%'").fetchone()[0]
    recs = ledger(proxy, "normalized LIKE ?", ("%est_big%",))
    assert len(recs) == 3 and not any(explained(r) for r in recs), show(recs)
    if mode == "off":
        assert all(r["est_cost_micro"] is None or r["est_cost_micro"] < 0 for r in recs)
    else:
        # history: the runs after the first are estimated from the first ones
        assert recs[2]["est_cost_micro"] is not None and recs[2]["est_cost_micro"] >= 0
    del explains


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["extended", "prepared"])
def test_pgbench_with_every_statement_explained(bench_db, pgtally, pg, tmp_path, mode):
    """A pgbench script of an UPDATE and a SELECT outside transaction
    blocks, every statement explained in band: each UPDATE ran once (the
    balances grew by exactly one per transaction)."""
    proxy = pgtally(**ALWAYS)
    script = tmp_path / "upd.sql"
    script.write_text("\\set aid random(1, 100000)\n"
                      "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n"
                      "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n")

    def total():
        with pg.admin(BENCH_DB) as a:
            return a.execute("SELECT sum(abalance) FROM pgbench_accounts").fetchone()[0]

    before = total()
    out = run_pgbench(proxy.host, proxy.port, "-n", "-M", mode, "-t", 50, "-c", 2,
                      "-f", script)
    assert "number of transactions actually processed: 100/100" in out, out
    assert total() - before == 100
    recs = ledger(proxy, "kind IN ('update', 'select')")
    assert len(recs) == 200 and {r["protocol"] for r in recs} == {"extended"}, show(recs[:5])
    assert all(explained(r) for r in recs), show([r for r in recs if not explained(r)][:5])


def test_notice_carries_the_interval(pgtally, big_table):
    """The estimate's NOTICE gives the range the cost falls in 8 times in
    10, "estimated 0.42 USD (0.2–0.9)"; runs of the shape keep it around
    the estimate, and as the shape's runs teach the model, the point
    estimate comes to lie within a few times of what the runs cost."""
    proxy = pgtally(**ALWAYS, **{"pricing.per_compute_second": "100",
                                 "budget.notice_above": "0.000001"})
    pattern = re.compile(r"pgtally: estimated ([0-9.]+) USD \(([0-9.]+)–([0-9.]+)\)")
    with proxy.connect() as c:
        notices = []
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        for _ in range(4):
            c.execute(WIDE).fetchone()
        found = [pattern.search(n) for n in notices]
        found = [m for m in found if m]
        assert len(found) == 4, notices
        for m in found:
            est, lo, hi = (float(x) for x in m.groups())
            assert lo <= est <= hi and lo < hi, m.group(0)
    recs = ledger(proxy, "normalized LIKE ?", ("%est_big%",))
    last = recs[-1]
    assert last["est_cost_micro"] > 0 and last["cost_micro"] > 0, show(recs)
    ratio = last["est_cost_micro"] / last["cost_micro"]
    assert 1 / 8 < ratio < 8, show(recs)
