"""Metering: every statement that goes through pgtally is recorded in the
SQLite ledger (table queries), once, with what the client saw.

Each test drives real clients (psql, pgbench, psycopg, raw protocol)
through pgtally, checks that the client sees what it would see talking to
the server directly, then stops pgtally (SIGINT flushes the ledger) and
reads the ledger with sqlite3.
"""

import json
import math
import re
import signal
import sqlite3
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import make_conninfo

from helpers import (DBNAME, LEDGER_BACKEND, PASSWORDS, PGTALLY_BIN, SLOW, clean_env,
                     free_port, is_pg_ledger, ledger_not_ready_errors, ledger_query,
                     require_binary, run_pgtallyctl, run_psql, wait_until, write_ini)
from pgwire import RawConn, message, parse_fields, query_message

GIB = 1 << 30
PGBENCH_SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
BENCH_DB = "pgtally_meter_bench"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

sqlite_only = pytest.mark.skipif(LEDGER_BACKEND == "postgresql",
                                 reason="about the SQLite ledger file")


def ledger_file(proxy):
    """The ledger: the one configured (a PostgreSQL URI under
    PGTALLY_TEST_LEDGER=postgresql), else pgtally.db next to the config."""
    configured = proxy.config.get("ledger")
    if configured and is_pg_ledger(configured):
        return configured
    return proxy.workdir / "pgtally.db"


def read_ledger(path, where="1 = 1", params=()):
    """Rows of the queries table (dicts), in the order they were written."""
    order = ("(SELECT i.started_at FROM instances i WHERE i.id = queries.instance), seq"
             if is_pg_ledger(path) else "id")
    return ledger_query(path, "SELECT * FROM queries WHERE %s ORDER BY %s" % (where, order),
                        params, dicts=True)


def stop(proxy):
    """SIGINT; pgtally writes every pending record before it exits."""
    proxy.send_signal(signal.SIGINT)
    rc = proxy.wait_exit(10 * SLOW)
    assert rc == 0, "pgtally exit code %s after SIGINT; log:\n%s" % (rc, proxy.log_tail())


def ledger(proxy, where="1 = 1", params=()):
    """Stop pgtally, then return the ledger's records."""
    stop(proxy)
    return read_ledger(ledger_file(proxy), where, params)


def wait_ledger(proxy, count, where="1 = 1", params=(), timeout=5.0):
    """While pgtally runs: wait until the ledger holds `count` matching records."""
    path = ledger_file(proxy)
    box = {}

    def check():
        if not is_pg_ledger(path) and not path.exists():
            return False
        try:
            box["rows"] = read_ledger(path, where, params)
        except ledger_not_ready_errors() as e:  # schema not there yet
            box["error"] = e
            return False
        return len(box["rows"]) >= count
    try:
        wait_until(check, timeout * SLOW, interval=0.05,
                   what="%d ledger records (%s)" % (count, where))
    except TimeoutError as e:
        raise AssertionError("%s; ledger holds:\n%s" % (e, show(box.get("rows", []))))
    return box["rows"]


def show(recs):
    keys = ("kind", "protocol", "status", "sqlstate", "rows", "bytes_out", "cost_micro",
            "user", "application", "tags", "normalized")
    return "\n".join("  " + ", ".join("%s=%r" % (k, r.get(k)) for k in keys)
                     for r in recs) or "  (no records)"


def summary(recs):
    return [(r["kind"], r["normalized"], r["status"], r["sqlstate"], r["rows"]) for r in recs]


def direct_dsn(pg, user="trust_user", dbname=DBNAME, **params):
    p = dict(host=pg.host, port=pg.port, user=user, dbname=dbname, sslmode="disable",
             gssencmode="disable", connect_timeout=10)
    if user in PASSWORDS:
        p["password"] = PASSWORDS[user]
    p.update(params)
    return make_conninfo(**p)


def direct_connect(pg, autocommit=True, **params):
    return psycopg.connect(direct_dsn(pg, **params), autocommit=autocommit)


def fresh_table(pg, name, columns="a int"):
    with pg.admin() as a:
        a.execute("DROP TABLE IF EXISTS %s" % name)
        a.execute("CREATE TABLE %s (%s)" % (name, columns))
        a.execute("GRANT ALL ON %s TO PUBLIC" % name)


def count_rows(pg, table):
    with pg.admin() as a:
        return a.execute("SELECT count(*) FROM %s" % table).fetchone()[0]


def round_half_up(x):
    """llround for non-negative x."""
    return int(math.floor(x + 0.5))


# raw extended-protocol messages -------------------------------------------

def _cstr(s):
    return s.encode() + b"\0"


def parse_msg(name, sql):
    return message(b"P", _cstr(name) + _cstr(sql) + struct.pack("!H", 0))


def bind_msg(portal, stmt, params=()):
    body = _cstr(portal) + _cstr(stmt) + struct.pack("!H", 0) + struct.pack("!H", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            v = str(p).encode()
            body += struct.pack("!i", len(v)) + v
    return message(b"B", body + struct.pack("!H", 0))


def describe_msg(kind, name):
    return message(b"D", kind + _cstr(name))


def execute_msg(portal, max_rows=0):
    return message(b"E", _cstr(portal) + struct.pack("!I", max_rows))


def sync_msg():
    return message(b"S")


def read_until_ready(conn, timeout=10.0):
    """Messages up to and including ReadyForQuery."""
    msgs = []
    deadline = time.monotonic() + timeout * SLOW
    while True:
        m = conn.recv_message(max(deadline - time.monotonic(), 0.001))
        assert m is not None, "connection closed; got %r" % msgs
        msgs.append(m)
        if m[0] == b"Z":
            return msgs


def raw_login(host, port, user="trust_user", **params):
    c = RawConn(host, port, 10)
    c.startup(user, DBNAME, PASSWORDS.get(user), **params)
    return c


# ---------------------------------------------------------------------------
# 1. psql: one Query string with several statements
# ---------------------------------------------------------------------------

def test_psql_multi_statement_with_error(pgtally, pg):
    """Statements run once, in order; the failing one is recorded with its
    SQLSTATE; the one after the error never ran and is not recorded."""
    proxy = pgtally()
    fresh_table(pg, "meter_multi")
    with pg.admin() as a:
        a.execute("DROP SEQUENCE IF EXISTS meter_multi_seq")
        a.execute("CREATE SEQUENCE meter_multi_seq")
        a.execute("GRANT ALL ON meter_multi_seq TO PUBLIC")
    # the error rolls the implicit transaction back, the INSERT with it; the
    # sequence (not transactional) counts how often the INSERT ran
    sql = ("INSERT INTO meter_multi VALUES (nextval('meter_multi_seq')); "
           "SELECT * FROM meter_multi; SELECT 1/0; SELECT 2")

    def seq():
        with pg.admin() as a:
            return a.execute("SELECT last_value, is_called FROM meter_multi_seq").fetchone()

    direct = run_psql(direct_dsn(pg), sql)
    assert seq() == (1, True)
    with pg.admin() as a:
        a.execute("ALTER SEQUENCE meter_multi_seq RESTART")
    assert seq() == (1, False)

    via = run_psql(proxy.dsn(), sql)
    assert (via.returncode, via.stdout, via.stderr) == \
        (direct.returncode, direct.stdout, direct.stderr)
    assert via.returncode != 0 and "division by zero" in via.stderr, via
    assert via.stdout == "INSERT 0 1\n1\n", via
    assert seq() == (1, True), "the INSERT did not run exactly once"
    assert count_rows(pg, "meter_multi") == 0

    # the records show up while pgtally runs, within the batching delay
    wait_ledger(proxy, 3)
    recs = ledger(proxy)
    assert summary(recs) == [
        ("insert", "INSERT INTO meter_multi VALUES (nextval($1))", "ok", None, 1),
        ("select", "SELECT * FROM meter_multi", "ok", None, 1),
        ("select", "SELECT $1/$2", "error", "22012", 0),
    ], show(recs)
    assert {r["protocol"] for r in recs} == {"simple"}
    assert len({r["session_id"] for r in recs}) == 1
    assert len({r["backend_pid"] for r in recs}) == 1
    for r in recs:
        assert r["started_at"] <= r["finished_at"], r
        assert r["compute_s"] >= 0, r
        assert r["user"] == "trust_user" and r["database"] == DBNAME, r
    assert recs[0]["finished_at"] <= recs[1]["started_at"] <= recs[2]["started_at"], show(recs)
    assert recs[0]["fingerprint"] != recs[1]["fingerprint"] != recs[2]["fingerprint"]


# ---------------------------------------------------------------------------
# 2. attribution: user, database, application, client address, tags
# ---------------------------------------------------------------------------

def test_attribution_and_sqlcommenter_tags(pgtally, pg):
    # SCRAM through pgtally needs TLS on both legs with the server's own
    # certificate (docs/proxy.md); clients may still come without TLS
    proxy = pgtally(client_tls="allow", upstream_tls="require",
                    client_tls_cert_file=str(pg.cert), client_tls_key_file=str(pg.key))
    t0 = int(time.time() * 1e6)
    # scram_user over TLS, psycopg, simple protocol (no parameters) then extended
    with proxy.connect(user="scram_user", sslmode="require",
                       application_name="meter-scram") as c:
        scram_pid = c.info.backend_pid
        assert c.execute("SELECT 1 /*team='growth',dashboard='kpi%20x'*/").fetchone() == (1,)
        assert c.execute("SELECT length(%s) /*team='ext'*/", ("abc",)).fetchone() == (3,)
        assert c.execute("SELECT 'untagged'").fetchone() == ("untagged",)
    # md5_user, raw protocol: the client address is known exactly
    conn = raw_login(proxy.host, proxy.port, "md5_user", application_name="meter-md5")
    md5_addr = "127.0.0.1:%d" % conn.sock.getsockname()[1]
    md5_pid = conn.backend_pid
    rows = conn.query("SELECT 1 /*route='a'*/; SELECT 2 /* plain comment */; "
                      "/*route='c%27d',x='y'*/ SELECT 3")
    assert rows == [("1",), ("2",), ("3",)]
    conn.send(message(b"X"))
    conn.close()
    # the default database and no application_name, over TLS-less psql
    r = run_psql(proxy.dsn(user="trust_user"), "SELECT current_user")
    assert r.returncode == 0 and r.stdout.strip() == "trust_user", r
    t1 = int(time.time() * 1e6)

    recs = ledger(proxy)
    by_user = {}
    for rec in recs:
        by_user.setdefault(rec["user"], []).append(rec)
    assert set(by_user) == {"scram_user", "md5_user", "trust_user"}, show(recs)

    scram = by_user["scram_user"]
    assert [(r["normalized"], r["protocol"], r["tags"]) for r in scram] == [
        ("SELECT $1", "simple", '{"dashboard":"kpi x","team":"growth"}'),
        ("SELECT length($1)", "extended", '{"team":"ext"}'),
        ("SELECT $1", "simple", None),
    ], show(scram)
    assert json.loads(scram[0]["tags"]) == {"team": "growth", "dashboard": "kpi x"}
    for r in scram:
        assert r["application"] == "meter-scram", r
        assert r["database"] == DBNAME, r
        assert r["backend_pid"] == scram_pid, r
        assert re.fullmatch(r"127\.0\.0\.1:\d+", r["client_addr"] or ""), r

    md5 = by_user["md5_user"]
    assert [(r["normalized"], r["rows"], r["tags"]) for r in md5] == [
        ("SELECT $1", 1, '{"route":"a"}'),
        ("SELECT $1", 1, None),
        ("SELECT $1", 1, '{"route":"c\'d","x":"y"}'),
    ], show(md5)
    for r in md5:
        assert r["application"] == "meter-md5", r
        assert r["client_addr"] == md5_addr, r
        assert r["backend_pid"] == md5_pid, r
        assert r["protocol"] == "simple", r

    trust = by_user["trust_user"]
    assert [(r["normalized"], r["application"]) for r in trust] == \
        [("SELECT current_user", "psql")], show(trust)

    sessions = {u: {r["session_id"] for r in rs} for u, rs in by_user.items()}
    assert all(len(s) == 1 for s in sessions.values()), sessions
    assert len({next(iter(s)) for s in sessions.values()}) == 3, sessions
    for r in recs:
        assert t0 <= r["started_at"] <= r["finished_at"] <= t1, r


DBT_COMMENT = ('/* {"app": "dbt", "dbt_version": "1.7.4", "profile_name": "shop", '
               '"target_name": "prod", "node_id": "%s"%s} */')


def dbt_tags(node_id, **extra):
    tags = {"app": "dbt", "dbt_version": "1.7.4", "profile_name": "shop",
            "target_name": "prod", "node_id": node_id}
    tags.update(extra)
    return tags


def test_dbt_query_comment_tags(pgtally):
    proxy = pgtally()
    with proxy.connect(user="trust_user", application_name="dbt") as c:
        # dbt prepends its query comment by default ...
        assert c.execute(DBT_COMMENT % ("model.shop.orders", "") +
                         "\nselect 1 as id").fetchone() == (1,)
        # ... and appends it with query-comment append: true (extended protocol here)
        assert c.execute("select %s::int as id\n" + DBT_COMMENT % ("model.shop.customers", ""),
                         (2,)).fetchone() == (2,)
        # a custom comment with dbt's query_tag config
        assert c.execute(DBT_COMMENT % ("model.shop.orders", ', "query_tag": "nightly"') +
                         "\nselect 3").fetchone() == (3,)
        # a sqlcommenter comment as well: merged, sqlcommenter wins on a shared key
        assert c.execute(DBT_COMMENT % ("model.shop.orders", "") +
                         " select 4 /*app='ci',team='growth'*/").fetchone() == (4,)
        # a malformed JSON comment: no tags, and the client sees nothing of it
        assert c.execute('/* {"app": "dbt", "node_id": } */ select 5').fetchone() == (5,)
    recs = ledger(proxy)
    got = [(r["protocol"], json.loads(r["tags"]) if r["tags"] else None) for r in recs]
    assert got == [
        ("simple", dbt_tags("model.shop.orders")),
        ("extended", dbt_tags("model.shop.customers")),
        ("simple", dbt_tags("model.shop.orders", query_tag="nightly")),
        ("simple", dbt_tags("model.shop.orders", app="ci", team="growth")),
        ("simple", None),
    ], show(recs)

    # attribution: pgtallyctl usage by a dbt tag
    day = time.strftime("%Y-%m-%d", time.gmtime(recs[0]["started_at"] / 1e6))

    def usage(tag):
        p = run_pgtallyctl(["--ledger", ledger_file(proxy), "usage", "--by", "tag:" + tag,
                            "--date", day, "--format", "json"])
        assert p.returncode == 0, p.stderr
        return {g["group"]: g["statements"] for g in json.loads(p.stdout)["groups"]}
    assert usage("node_id") == {"model.shop.orders": 3, "model.shop.customers": 1, None: 1}
    assert usage("app") == {"dbt": 3, "ci": 1, None: 1}


# ---------------------------------------------------------------------------
# 3. pgbench: exactly the statements pgbench ran
# ---------------------------------------------------------------------------

def run_pgbench(host, port, *args, dbname=BENCH_DB, timeout=60):
    cmd = ["pgbench", "-h", host, "-p", str(port), "-U", "trust_user"] + \
        [str(a) for a in args] + [dbname]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=clean_env(PGSSLMODE="disable", PGGSSENCMODE="disable"),
                       timeout=timeout * SLOW)
    assert r.returncode == 0, "pgbench exited %d:\n%s%s" % (r.returncode, r.stdout, r.stderr)
    return r.stdout + r.stderr


def server_statements(pg, dbid, user="trust_user"):
    """(query, calls) from pg_stat_statements for one database and user."""
    with pg.admin() as a:
        return a.execute(
            "SELECT query, calls FROM pg_stat_statements WHERE dbid = %s AND userid ="
            " (SELECT oid FROM pg_roles WHERE rolname = %s) ORDER BY query",
            (dbid, user)).fetchall()


@pytest.fixture(scope="module")
def bench_db(pg):
    """A database of its own with pgbench tables (scale 1), made directly."""
    with pg.admin("postgres") as a:
        a.execute("DROP DATABASE IF EXISTS %s" % BENCH_DB)
        a.execute("CREATE DATABASE %s OWNER trust_user" % BENCH_DB)
        oid = a.execute("SELECT oid FROM pg_database WHERE datname = %s",
                        (BENCH_DB,)).fetchone()[0]
    run_pgbench(pg.host, pg.port, "-i", "-I", "dtgp", "-s", "1", "-q")
    return oid


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_statement_count(bench_db, pgtally, pg, mode):
    n, clients = 150, 2
    proxy = pgtally()
    with pg.admin() as a:
        a.execute("SELECT pg_stat_statements_reset(0, %s, 0)", (bench_db,))
    out = run_pgbench(proxy.host, proxy.port, "-n", "-S", "-M", mode, "-t", n,
                      "-c", clients, "-j", 2)
    assert "number of transactions actually processed: %d/%d" % (n * clients, n * clients) \
        in out, out
    server = server_statements(pg, bench_db)
    # statements pgtally ran itself (EXPLAIN for estimates) are not the client's
    server_calls = sum(calls for q, calls in server if not q.upper().startswith("EXPLAIN"))
    server_selects = sum(calls for q, calls in server if q.startswith(PGBENCH_SELECT))
    assert server_selects == n * clients, server
    # the same shape, sent by psql with a constant, to learn its fingerprint
    r = run_psql(proxy.dsn(dbname=BENCH_DB),
                 "SELECT abalance FROM pgbench_accounts WHERE aid = 1 /*ref='shape'*/")
    assert r.returncode == 0, r

    recs = ledger(proxy)
    assert {r["database"] for r in recs} == {BENCH_DB}, show(recs)
    ref = [r for r in recs if r["tags"] == '{"ref":"shape"}']
    assert len(ref) == 1, show(recs)
    recs.remove(ref[0])
    sel = [r for r in recs if r["fingerprint"] == ref[0]["fingerprint"]]
    assert len(sel) == n * clients, "%d records of the SELECT shape, pgbench ran %d" % (
        len(sel), n * clients)
    assert {r["normalized"].rstrip(";") for r in sel} == {PGBENCH_SELECT}
    want = "simple" if mode == "simple" else "extended"
    assert {(r["kind"], r["protocol"], r["status"], r["rows"]) for r in sel} == \
        {("select", want, "ok", 1)}
    assert len({r["session_id"] for r in sel}) == clients
    # pgbench's own setup queries are metered too: the ledger holds every
    # statement the server counted
    others = [r for r in recs if r["fingerprint"] != ref[0]["fingerprint"]]
    assert len(recs) == server_calls, (
        "ledger has %d records, pg_stat_statements counted %d executions: %r;"
        " the ledger's others:\n%s" % (len(recs), server_calls, server, show(others)))
    assert {r["status"] for r in recs} == {"ok"}, show(recs)


# ---------------------------------------------------------------------------
# 4. psycopg
# ---------------------------------------------------------------------------

def test_psycopg_executemany(pgtally, pg):
    proxy = pgtally()
    fresh_table(pg, "meter_em", "id int, t text")
    with proxy.connect() as c:
        with c.cursor() as cur:
            cur.executemany("INSERT INTO meter_em VALUES (%s, %s)",
                            [(i, "row %d" % i) for i in range(50)])
    assert count_rows(pg, "meter_em") == 50
    recs = ledger(proxy)
    assert summary(recs) == [("insert", "INSERT INTO meter_em VALUES ($1, $2)", "ok",
                              None, 1)] * 50, show(recs)
    assert {r["protocol"] for r in recs} == {"extended"}


def _pipeline_with_error(conn):
    """Five statements in one pipeline (one Sync); the third fails."""
    with pytest.raises(errors.DivisionByZero):
        with conn.pipeline():
            conn.execute("INSERT INTO meter_pl VALUES (%s)", (1,))
            conn.execute("INSERT INTO meter_pl VALUES (%s)", (2,))
            conn.execute("SELECT 1/%s", (0,))
            conn.execute("INSERT INTO meter_pl VALUES (%s)", (3,))
            conn.execute("INSERT INTO meter_pl VALUES (%s)", (4,))
    # the pipeline was one implicit transaction: nothing is left
    return conn.execute("SELECT count(*) FROM meter_pl").fetchone()[0]


def test_psycopg_pipeline_error_skips_to_sync(pgtally, pg):
    proxy = pgtally()
    fresh_table(pg, "meter_pl")
    with direct_connect(pg) as c:
        direct = _pipeline_with_error(c)
    fresh_table(pg, "meter_pl")
    with proxy.connect() as c:
        assert _pipeline_with_error(c) == direct
        assert c.execute("SELECT 'after'").fetchone() == ("after",)
    recs = ledger(proxy)
    assert summary(recs) == [
        ("insert", "INSERT INTO meter_pl VALUES ($1)", "ok", None, 1),
        ("insert", "INSERT INTO meter_pl VALUES ($1)", "ok", None, 1),
        ("select", "SELECT $2/$1", "error", "22012", 0),
        ("select", "SELECT count(*) FROM meter_pl", "ok", None, 1),
        ("select", "SELECT $1", "ok", None, 1),
    ], show(recs)
    assert [r["protocol"] for r in recs[:3]] == ["extended"] * 3


def test_psycopg_server_side_cursor(pgtally):
    """One record per FETCH, each with the rows it returned."""
    proxy = pgtally()
    with proxy.connect(autocommit=False) as c:
        with c.cursor(name="meter_named") as cur:
            cur.execute("SELECT g FROM generate_series(1, 100) g")
            sizes = []
            while True:
                rows = cur.fetchmany(30)
                sizes.append(len(rows))
                if not rows:
                    break
        c.commit()
    assert sizes == [30, 30, 30, 10, 0]
    recs = ledger(proxy)
    fetches = [r for r in recs if r["normalized"].upper().startswith("FETCH")]
    assert [r["rows"] for r in fetches] == sizes, show(recs)
    assert all(r["status"] == "ok" for r in recs), show(recs)
    declares = [r for r in recs if "DECLARE" in r["normalized"].upper()]
    assert len(declares) == 1, show(recs)


def test_portal_suspended_one_record_per_execute(pgtally):
    """Execute with a row limit: one record per Execute."""
    proxy = pgtally()
    conn = raw_login(proxy.host, proxy.port)
    conn.send(parse_msg("", "SELECT g FROM generate_series(1, 10) g") + bind_msg("", "") +
              execute_msg("", 4) + execute_msg("", 4) + execute_msg("", 4) + sync_msg())
    msgs = read_until_ready(conn)
    types = b"".join(t for t, _ in msgs)
    assert types == b"12" + b"D" * 4 + b"s" + b"D" * 4 + b"s" + b"D" * 2 + b"CZ", types
    conn.close()
    recs = ledger(proxy)
    assert [(r["normalized"], r["rows"], r["status"], r["protocol"]) for r in recs] == [
        ("SELECT g FROM generate_series($1, $2) g", 4, "ok", "extended"),
        ("SELECT g FROM generate_series($1, $2) g", 4, "ok", "extended"),
        ("SELECT g FROM generate_series($1, $2) g", 2, "ok", "extended"),
    ], show(recs)


def test_psycopg_copy(pgtally, pg):
    proxy = pgtally()
    fresh_table(pg, "meter_cp", "id int, t text")
    with proxy.connect() as c:
        with c.cursor() as cur:
            with cur.copy("COPY meter_cp FROM STDIN") as cp:
                for i in range(1000):
                    cp.write_row((i, "text %d" % i))
            assert cur.rowcount == 1000
            got = 0
            with cur.copy("COPY meter_cp TO STDOUT") as cp:
                for _ in cp:
                    got += 1
            assert cur.rowcount == 1000
    assert got > 0
    recs = ledger(proxy)
    assert [(r["kind"], r["status"], r["rows"]) for r in recs] == \
        [("copy", "ok", 1000), ("copy", "ok", 1000)], show(recs)
    assert "FROM STDIN" in recs[0]["normalized"].upper(), show(recs)
    assert "TO STDOUT" in recs[1]["normalized"].upper(), show(recs)
    # COPY TO sends the table's text to the client: ~ 1000 lines of "i\ttext i\n"
    text_size = sum(len("%d\ttext %d\n" % (i, i)) for i in range(1000))
    assert text_size < recs[1]["bytes_out"] < text_size + 1000 * 5 + 200, show(recs)
    assert recs[0]["bytes_out"] < 200, show(recs)


def test_cancel_records_cancelled(pgtally):
    proxy = pgtally()
    with proxy.connect() as c:
        timer = threading.Timer(0.5, c.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(errors.QueryCanceled):
            c.execute("SELECT pg_sleep(20)")
        elapsed = time.monotonic() - started
        timer.join()
        assert elapsed < 10
        assert c.execute("SELECT 42").fetchone() == (42,)
    recs = ledger(proxy)
    assert [(r["normalized"], r["status"], r["sqlstate"]) for r in recs] == [
        ("SELECT pg_sleep($1)", "cancelled", "57014"),
        ("SELECT $1", "ok", None),
    ], show(recs)
    assert 0.3 <= recs[0]["compute_s"] <= elapsed + 0.5, show(recs)


def _cancel_while_locked(pg, dsn_or_conn_factory, sql):
    """Run sql while another session holds an ACCESS EXCLUSIVE lock on
    meter_lock; cancel it once it waits for the lock. Returns (error class
    name or None, seconds from cancel to the client's answer)."""
    box = {}
    locker = pg.admin()
    locker.autocommit = False
    locker.execute("LOCK TABLE meter_lock IN ACCESS EXCLUSIVE MODE")
    conn = dsn_or_conn_factory()
    pid = conn.info.backend_pid

    def run():
        try:
            conn.execute(sql).fetchall()
            box["error"] = None
        except psycopg.Error as e:
            box["error"] = type(e).__name__
        box["answered"] = time.monotonic()
    t = threading.Thread(target=run, daemon=True)
    try:
        t.start()

        def waiting():
            with pg.admin() as a:
                return a.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                 (pid,)).fetchone() == ("Lock",)
        wait_until(waiting, 5 * SLOW, interval=0.02, what="the statement to wait for the lock")
        cancelled = time.monotonic()
        conn.cancel()
        t.join(3 * SLOW)
        if t.is_alive():
            return "still waiting %.0f s after the cancel" % (3 * SLOW), None
        return box["error"], box["answered"] - cancelled
    finally:
        locker.rollback()
        locker.close()
        t.join(10)
        conn.close()


def test_cancel_while_waiting_for_a_lock(pgtally, pg):
    """A cancel reaches the client's statement whatever pgtally does before
    sending it: the client gets 57014 at once, as it does directly."""
    proxy = pgtally()
    fresh_table(pg, "meter_lock")
    direct = _cancel_while_locked(pg, lambda: direct_connect(pg),
                                  "SELECT a FROM meter_lock WHERE a > 3 ORDER BY a")
    assert direct[0] == "QueryCanceled", direct
    with proxy.connect() as c:  # a shape pgtally has seen, and others
        c.execute("SELECT * FROM meter_lock WHERE a > 3").fetchall()
        c.execute("SELECT * FROM meter_lock WHERE a > 4").fetchall()
    for sql in ("SELECT * FROM meter_lock WHERE a > 5",
                "SELECT a FROM meter_lock WHERE a > 3 ORDER BY a"):
        got = _cancel_while_locked(pg, proxy.connect, sql)
        assert got[0] == "QueryCanceled" and got[1] < 2, (sql, got)
    recs = ledger(proxy)
    assert [(r["status"], r["sqlstate"]) for r in recs[2:]] == \
        [("cancelled", "57014")] * 2, show(recs)


def test_notices_as_direct(pgtally, pg):
    """The client gets the notices of its statements once, as directly
    (an IMMUTABLE function is run by the planner)."""
    proxy = pgtally()
    with pg.admin() as a:
        a.execute("CREATE OR REPLACE FUNCTION meter_noisy(int) RETURNS int IMMUTABLE"
                  " LANGUAGE plpgsql AS $$BEGIN RAISE NOTICE 'noisy %', $1; RETURN $1; END$$")
    got = []
    for connect in (lambda: direct_connect(pg), proxy.connect):
        notes = []
        with connect() as c:
            c.add_notice_handler(lambda d: notes.append(d.message_primary))
            assert c.execute("SELECT meter_noisy(7)").fetchone() == (7,)
            assert c.execute("SELECT meter_noisy(8) FROM generate_series(1, 2)").fetchall() \
                == [(8,), (8,)]
        got.append(notes)
    assert got[1] == got[0] == ["noisy 7", "noisy 8"], got
    recs = ledger(proxy)
    assert len(recs) == 2, show(recs)


def _error_in_transaction(conn):
    """BEGIN; INSERT; error; the next statement gets 25P02; ROLLBACK."""
    seen = []
    conn.execute("INSERT INTO meter_tx VALUES (1)")
    for sql in ("SELECT 1/0", "SELECT 1"):
        try:
            conn.execute(sql)
            seen.append(None)
        except psycopg.Error as e:
            seen.append(e.sqlstate)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    conn.rollback()
    seen.append(conn.execute("SELECT count(*) FROM meter_tx").fetchone()[0])
    conn.rollback()
    return seen


def test_error_in_transaction_aborts_it_as_direct(pgtally, pg):
    proxy = pgtally()
    fresh_table(pg, "meter_tx")
    with direct_connect(pg, autocommit=False) as c:
        direct = _error_in_transaction(c)
    with proxy.connect(autocommit=False) as c:
        via = _error_in_transaction(c)
    assert via == direct == ["22012", "25P02", 0]
    recs = ledger(proxy)
    assert [(r["kind"], r["status"], r["sqlstate"]) for r in recs] == [
        ("transaction", "ok", None),     # BEGIN
        ("insert", "ok", None),
        ("select", "error", "22012"),
        ("select", "error", "25P02"),
        ("transaction", "ok", None),     # ROLLBACK
        ("transaction", "ok", None),     # BEGIN
        ("select", "ok", None),
        ("transaction", "ok", None),     # ROLLBACK
    ], show(recs)


# The unnamed statement and portal are the client's: a proxy that used them
# (to explain a statement, say) would change what the client gets back.
UNNAMED_PIPELINE = [
    parse_msg("", "SELECT $1::int * 2 AS x"),
    describe_msg(b"S", ""),
    bind_msg("", "", [21]),
    describe_msg(b"P", ""),
    execute_msg(""),
    bind_msg("", "", [5]),            # the unnamed statement again
    execute_msg(""),
    parse_msg("named_s", "SELECT $1::text || 'y' AS t"),
    bind_msg("", "named_s", ["a"]),
    execute_msg(""),
    describe_msg(b"S", ""),           # still SELECT $1::int * 2
    sync_msg(),
    bind_msg("", "", [100]),          # the unnamed statement outlives Sync
    execute_msg("", 1),
    execute_msg(""),                  # the rest of the unnamed portal
    bind_msg("p1", "named_s", ["b"]),
    execute_msg("p1"),
    sync_msg(),
]


def _run_unnamed_pipeline(host, port):
    conn = raw_login(host, port)
    conn.send(b"".join(UNNAMED_PIPELINE))
    got = read_until_ready(conn) + read_until_ready(conn)
    conn.send(message(b"X"))
    conn.close()
    return got


def _psycopg_pipeline(conn):
    out = []
    with conn.pipeline():
        curs = []
        for i in range(5):
            cur = conn.cursor()
            cur.execute("SELECT %s::int + " + str(i) + " AS v" + str(i), (i * 10,))
            curs.append(cur)
        cur = conn.cursor()
        cur.execute("SELECT g, %s::text FROM generate_series(1, 3) g", ("z",))
        curs.append(cur)
        for cur in curs:
            rows = cur.fetchall()
            out.append(([d.name for d in cur.description], rows))
    return out


def test_unnamed_statement_and_portal_not_clobbered(pgtally, pg):
    proxy = pgtally()
    direct = _run_unnamed_pipeline(pg.host, pg.port)
    via = _run_unnamed_pipeline(proxy.host, proxy.port)
    assert via == direct
    assert b"".join(t for t, _ in via).count(b"E") == 0, via
    with direct_connect(pg) as c:
        direct_pl = _psycopg_pipeline(c)
    with proxy.connect() as c:
        via_pl = _psycopg_pipeline(c)
    assert via_pl == direct_pl
    assert via_pl[0] == (["v0"], [(0,)]) and via_pl[4] == (["v4"], [(44,)])
    recs = ledger(proxy)
    # raw: 3 + 3 executions; psycopg: 6
    assert [r["rows"] for r in recs[:6]] == [1, 1, 1, 1, 0, 1], show(recs)
    assert [r["normalized"] for r in recs[:6]] == [
        "SELECT $1::int * $2 AS x", "SELECT $1::int * $2 AS x", "SELECT $1::text || $2 AS t",
        "SELECT $1::int * $2 AS x", "SELECT $1::int * $2 AS x", "SELECT $1::text || $2 AS t",
    ], show(recs)
    assert len(recs) == 12, show(recs)
    assert [r["rows"] for r in recs[6:]] == [1, 1, 1, 1, 1, 3], show(recs)
    assert {r["protocol"] for r in recs} == {"extended"}, show(recs)
    assert {r["status"] for r in recs} == {"ok"}, show(recs)


def test_same_shape_whatever_the_protocol(pgtally, pg):
    """A statement sent with a trailing ';' as a simple Query, as the first
    of several in a Query, and as a Parse (pgbench does these) has one
    fingerprint and one normalized text, even when each is the first of its
    shape that pgtally sees."""
    fresh_table(pg, "meter_shape")
    got = []
    for how in ("simple", "multi", "extended"):
        proxy = pgtally()
        conn = raw_login(proxy.host, proxy.port)
        if how == "extended":
            conn.send(parse_msg("", "SELECT a FROM meter_shape WHERE a = $1;") +
                      bind_msg("", "", [5]) + execute_msg("") + sync_msg())
        elif how == "multi":
            conn.send(query_message("SELECT a FROM meter_shape WHERE a = 5; SELECT 1;"))
        else:
            conn.send(query_message("SELECT a FROM meter_shape WHERE a = 5;"))
        assert [t for t, _ in read_until_ready(conn)][-2:] == [b"C", b"Z"]
        conn.close()
        recs = ledger(proxy)
        assert len(recs) == (2 if how == "multi" else 1), show(recs)
        got.append((how, recs[0]["fingerprint"], recs[0]["normalized"]))
    assert len({fp for _, fp, _ in got}) == 1, got
    assert len({text for _, _, text in got}) == 1, got


def wait_sleeping(pg, pid):
    def check():
        with pg.admin() as a:
            return a.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s",
                             (pid,)).fetchone() == ("PgSleep",)
    wait_until(check, 5 * SLOW, interval=0.02, what="backend %d in pg_sleep" % pid)


def test_terminated_backend_recorded_once(pgtally, pg):
    """A statement ended by the server (FATAL 57P01) is one record, with the
    server's SQLSTATE; the statement before it in the Query is ok."""
    proxy = pgtally()
    conn = raw_login(proxy.host, proxy.port)
    conn.send(query_message("SELECT 1; SELECT pg_sleep(20)"))
    wait_sleeping(pg, conn.backend_pid)
    with pg.admin() as a:
        a.execute("SELECT pg_terminate_backend(%s)", (conn.backend_pid,))
    msgs = conn.read_until_closed(5 * SLOW)
    conn.close()
    assert msgs[-1][0] == b"E" and parse_fields(msgs[-1][1])["C"] == "57P01", msgs
    recs = ledger(proxy)
    assert [(r["normalized"], r["status"], r["sqlstate"]) for r in recs] == [
        ("SELECT $1", "ok", None),
        ("SELECT pg_sleep($1)", "error", "57P01"),
    ], show(recs)


def test_client_gone_mid_statement(pgtally, pg):
    """The client disconnects while its statement runs: one failed record."""
    proxy = pgtally()
    conn = raw_login(proxy.host, proxy.port)
    conn.send(query_message("SELECT pg_sleep(5)"))
    wait_sleeping(pg, conn.backend_pid)
    conn.close()
    recs = wait_ledger(proxy, 1)
    recs = ledger(proxy)
    assert [(r["normalized"], r["status"], r["sqlstate"]) for r in recs] == [
        ("SELECT pg_sleep($1)", "error", "08006")], show(recs)
    with pg.admin() as a:
        a.execute("SELECT pg_terminate_backend(%s)", (conn.backend_pid,))


def test_large_statements_metered_once(pgtally, pg):
    """Statements beyond the capture limit (1 MiB) still run once and are
    metered once each, by their first bytes."""
    proxy = pgtally()
    fresh_table(pg, "meter_big", "t text")
    big = "x" * (2 << 20)
    with proxy.connect() as c:
        c.execute("INSERT INTO meter_big VALUES ('%s'); SELECT 1" % big)
        c.execute("INSERT INTO meter_big VALUES (%s)", (big,))
        assert c.execute("SELECT length(t) FROM meter_big").fetchall() == [(2 << 20,)] * 2
    recs = ledger(proxy)
    assert len(recs) == 4, show(recs)
    assert [(r["status"], r["rows"]) for r in recs] == [("ok", 1)] * 3 + [("ok", 2)], show(recs)
    assert recs[2]["normalized"] == "INSERT INTO meter_big VALUES ($1)", show(recs)
    assert all(len(r["normalized"]) < 20000 for r in recs)


# ---------------------------------------------------------------------------
# 5. pg_stat_statements: each statement ran exactly once on the server
# ---------------------------------------------------------------------------

def test_pg_stat_statements_once(pgtally, pg):
    """The server executed each statement sent through pgtally exactly once."""
    proxy = pgtally()
    mark = "meter_pgss_" + uuid.uuid4().hex[:12]
    # one table per statement: a statement's query id depends on the
    # relations it reads, not on column aliases or constants
    tables = [mark + "_" + c for c in "abcdefg"]
    for t in tables:
        fresh_table(pg, t)
    a, b, c_, d, e, f, g = tables
    r = run_psql(proxy.dsn(), "SELECT count(*) FROM %s" % a)
    assert r.returncode == 0 and r.stdout.strip() == "0", r
    r = run_psql(proxy.dsn(), "SELECT count(*) FROM %s; INSERT INTO %s VALUES (7)" % (b, c_))
    assert r.returncode == 0, r
    with proxy.connect() as c:
        assert c.execute("SELECT count(*) FROM %s WHERE a = %%s" % d, (1,)).fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM %s WHERE a = %%s" % e, (2,),
                         prepare=True).fetchone() == (0,)
        with c.transaction():
            c.execute("INSERT INTO %s VALUES (%%s)" % f, (3,))
        with c.cursor() as cur:
            cur.executemany("INSERT INTO %s VALUES (%%s)" % g, [(1,), (2,), (3,)])
    assert count_rows(pg, c_) == 1 and count_rows(pg, f) == 1 and count_rows(pg, g) == 3
    with pg.admin() as adm:
        got = adm.execute(
            "SELECT query, calls FROM pg_stat_statements"
            " WHERE userid = (SELECT oid FROM pg_roles WHERE rolname = 'trust_user')"
            " AND query LIKE %s ORDER BY query", ("%" + mark + "%",)).fetchall()
    # pgtally's own EXPLAINs (estimates) are other entries: they do not run
    # the statement; every statement of the client ran exactly as often as sent
    client = [(q, n) for q, n in got if not q.upper().startswith("EXPLAIN")]
    calls = sorted((q.split(mark)[1][:2], n) for q, n in client)
    assert calls == [("_a", 1), ("_b", 1), ("_c", 1), ("_d", 1), ("_e", 1), ("_f", 1),
                     ("_g", 3)], got

    recs = ledger(proxy, "normalized LIKE ?", ("%" + mark + "%",))
    assert sorted(r["normalized"].split(mark)[1][:2] for r in recs) == \
        ["_a", "_b", "_c", "_d", "_e", "_f", "_g", "_g", "_g"], show(recs)
    assert all(r["status"] == "ok" for r in recs), show(recs)


# ---------------------------------------------------------------------------
# 6. pricing
# ---------------------------------------------------------------------------

def _some_statements(proxy):
    with proxy.connect() as c:
        c.execute("SELECT 1").fetchone()
        c.execute("SELECT %s::text", ("x",)).fetchone()
        with pytest.raises(errors.DivisionByZero):
            c.execute("SELECT 1/0")
    r = run_psql(proxy.dsn(), "SELECT 1; SELECT 2")
    assert r.returncode == 0, r


def test_pricing_per_query(pgtally):
    proxy = pgtally(extra_args=["--pricing-per-query", "0.01",
                                "--pricing-per-compute-second", "0"])
    _some_statements(proxy)
    recs = ledger(proxy)
    assert len(recs) == 5, show(recs)
    for r in recs:
        # the default 0.09 per GiB adds less than half a micro-unit here
        assert r["bytes_out"] < 5000, r
        assert r["cost_micro"] == 10000, show(recs)


def test_pricing_per_gib_returned(pgtally):
    """A 10 MB result at 1 per GiB costs exactly bytes_out / 2^30."""
    proxy = pgtally(extra_args=["--pricing-per-gib-returned", "1",
                                "--pricing-per-compute-second", "0"])
    conn = raw_login(proxy.host, proxy.port)
    conn.send(query_message("SELECT repeat('x', 1000) FROM generate_series(1, 10000)"))
    msgs = read_until_ready(conn)
    conn.close()
    received = sum(5 + len(p) for t, p in msgs if t != b"Z")
    assert sum(1 for t, _ in msgs if t == b"D") == 10000
    recs = ledger(proxy)
    assert len(recs) == 1, show(recs)
    r = recs[0]
    assert r["rows"] == 10000, r
    assert r["bytes_out"] == received, "bytes_out %d, the client received %d" % (
        r["bytes_out"], received)
    assert 10_000_000 < r["bytes_out"] < 10_300_000, r
    assert r["cost_micro"] == round_half_up(r["bytes_out"] * 1_000_000 / GIB), r
    assert 9_000 < r["cost_micro"] < 10_000, r


def test_pricing_defaults(pgtally):
    """Default prices: 0.0004 per compute second, 0.09 per GiB, 0 per query."""
    proxy = pgtally()
    with proxy.connect() as c:
        c.execute("SELECT pg_sleep(0.3)").fetchone()
        c.execute("SELECT repeat('y', 1000) FROM generate_series(1, 5000)").fetchall()
    recs = ledger(proxy)
    assert len(recs) == 2, show(recs)
    for r in recs:
        want = r["compute_s"] * 400 + r["bytes_out"] * 90000 / GIB
        assert abs(r["cost_micro"] - want) <= 0.5 + 1e-6, (want, r)
    assert recs[0]["compute_s"] >= 0.29 and recs[0]["cost_micro"] >= 116, recs[0]


def test_compute_of_a_multi_statement_query(pgtally):
    """The statements of one Query share its compute time: the server sends
    their answers together, so only the total is certain."""
    proxy = pgtally()
    conn = raw_login(proxy.host, proxy.port)
    started = time.monotonic()
    conn.send(query_message("SELECT 1; SELECT pg_sleep(0.3); SELECT 2"))
    read_until_ready(conn)
    elapsed = time.monotonic() - started
    conn.close()
    recs = ledger(proxy)
    assert len(recs) == 3, show(recs)
    total = sum(r["compute_s"] for r in recs)
    assert 0.3 <= total <= elapsed + 0.01, (total, elapsed, show(recs))
    assert recs[0]["started_at"] <= recs[2]["finished_at"]
    assert recs[2]["finished_at"] - recs[0]["started_at"] >= 300000, show(recs)


def test_pricing_section_in_config_file(pgtally):
    """[pricing] in the INI file, as documented in include/pgtally/config.h."""
    proxy = pgtally(**{"pricing.per_query": "0.01", "pricing.per_compute_second": "0",
                       "pricing.per_gib_returned": "0"})
    with proxy.connect() as c:
        c.execute("SELECT 1").fetchone()
    recs = ledger(proxy)
    assert [r["cost_micro"] for r in recs] == [10000], show(recs)


# ---------------------------------------------------------------------------
# 7, 8. metering off; the ledger path
# ---------------------------------------------------------------------------

@sqlite_only
def test_metering_off(pgtally):
    proxy = pgtally(metering="off")
    with proxy.connect() as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    r = run_psql(proxy.dsn(), "SELECT 1; SELECT 2")
    assert r.returncode == 0, r
    stop(proxy)
    path = ledger_file(proxy)
    if path.exists():
        with sqlite3.connect(str(path)) as con:
            tables = [t for (t,) in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            if "queries" in tables:
                assert con.execute("SELECT count(*) FROM queries").fetchone() == (0,)
    assert "event=metering" not in proxy.log(), proxy.log_tail()


@sqlite_only
def test_default_ledger_next_to_config_file(pg, tmp_path):
    """Without ledger =, the ledger is pgtally.db beside the config file,
    not in the working directory."""
    confdir, cwd = tmp_path / "etc", tmp_path / "run"
    confdir.mkdir()
    cwd.mkdir()
    port = free_port()
    write_ini(confdir / "pgtally.ini", {"listen": "127.0.0.1:%d" % port,
                                         "upstream": "%s:%d" % (pg.host, pg.port)})
    require_binary()
    with open(cwd / "pgtally.log", "wb") as log:
        proc = subprocess.Popen([str(PGTALLY_BIN), "-c", str(confdir / "pgtally.ini")],
                                cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "event=listening" in (cwd / "pgtally.log").read_text()
                   or proc.poll() is not None, 10 * SLOW, what="pgtally to listen")
        assert proc.poll() is None, (cwd / "pgtally.log").read_text()
        with psycopg.connect(host="127.0.0.1", port=port, user="trust_user", dbname=DBNAME,
                             sslmode="disable", autocommit=True) as c:
            c.execute("SELECT 1").fetchone()
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10 * SLOW)
    assert rc == 0, (cwd / "pgtally.log").read_text()
    assert not (cwd / "pgtally.db").exists()
    assert len(read_ledger(confdir / "pgtally.db")) == 1


@sqlite_only
def test_ledger_key_and_flag(pgtally, tmp_path):
    """ledger = PATH in the file; --ledger PATH on the command line wins."""
    in_file = tmp_path / "from_file.db"
    proxy = pgtally(ledger=str(in_file))
    with proxy.connect() as c:
        c.execute("SELECT 1").fetchone()
    stop(proxy)
    assert len(read_ledger(in_file)) == 1
    assert not ledger_file(proxy).exists()

    from_flag = tmp_path / "from_flag.db"
    proxy = pgtally(ledger=str(tmp_path / "unused.db"), extra_args=["--ledger", str(from_flag)])
    with proxy.connect() as c:
        c.execute("SELECT 1").fetchone()
        c.execute("SELECT 2").fetchone()
    stop(proxy)
    assert len(read_ledger(from_flag)) == 2
    assert not (tmp_path / "unused.db").exists()


@sqlite_only
def test_ledger_path_that_cannot_be_opened(pgtally, tmp_path):
    bad = tmp_path / "no" / "such" / "dir" / "ledger.db"
    proxy = pgtally(ledger=str(bad), wait=False)
    rc = proxy.wait_exit(10 * SLOW)
    proxy.signalled = True  # its exit is the point of the test
    assert rc is not None, "pgtally still running with ledger %s; log:\n%s" % (
        bad, proxy.log_tail())
    assert rc != 0, "exit code 0 with ledger %s; log:\n%s" % (bad, proxy.log())
    assert str(bad) in proxy.log(), proxy.log()
    assert not bad.parent.exists()


# ---------------------------------------------------------------------------
# 9. rows and bytes
# ---------------------------------------------------------------------------

def test_rows_and_bytes(pgtally, pg):
    proxy = pgtally()
    fresh_table(pg, "meter_rb")
    conn = raw_login(proxy.host, proxy.port)
    sizes = {}
    for n in (1000, 2000):
        conn.send(query_message("SELECT g, 'abcdefghij' FROM generate_series(1, %d) g" % n))
        msgs = read_until_ready(conn)
        assert sum(1 for t, _ in msgs if t == b"D") == n
        sizes[n] = sum(5 + len(p) for t, p in msgs if t != b"Z")
    conn.send(query_message("UPDATE meter_rb SET a = a WHERE false"))
    read_until_ready(conn)
    conn.close()
    with proxy.connect() as c:
        assert len(c.execute("SELECT g FROM generate_series(1, %s) g", (1000,)).fetchall()) \
            == 1000
    recs = ledger(proxy)
    assert [(r["kind"], r["rows"]) for r in recs] == \
        [("select", 1000), ("select", 2000), ("update", 0), ("select", 1000)], show(recs)
    assert recs[0]["bytes_out"] == sizes[1000], (recs[0], sizes)
    assert recs[1]["bytes_out"] == sizes[2000], (recs[1], sizes)
    assert 1.9 < recs[1]["bytes_out"] / recs[0]["bytes_out"] < 2.1
    assert 0 < recs[2]["bytes_out"] < 100, recs[2]
    assert recs[3]["bytes_out"] > 1000 * 11, recs[3]


def test_bytes_between_statements_not_charged_to_the_next(pgtally):
    """bytes_out is what was sent for the statement: not the answer to a
    Parse/Describe/Sync before it, nor a ParameterStatus after the SET
    before it."""
    proxy = pgtally()
    conn = raw_login(proxy.host, proxy.port)

    def size_of(msgs):
        return sum(5 + len(p) for t, p in msgs if t != b"Z")

    conn.send(parse_msg("s", "SELECT 1 AS a, 2 AS b") + describe_msg(b"S", "s") + sync_msg())
    assert [t for t, _ in read_until_ready(conn)] == [b"1", b"t", b"T", b"Z"]
    conn.send(query_message("SELECT 3"))
    first = size_of(read_until_ready(conn))
    conn.send(query_message("SET application_name = 'meter-renamed'"))
    assert [t for t, _ in read_until_ready(conn)] == [b"C", b"S", b"Z"]
    conn.send(query_message("SELECT 4"))
    second = size_of(read_until_ready(conn))
    conn.close()
    recs = ledger(proxy)
    assert [r["normalized"] for r in recs] == \
        ["SELECT $1", "SET application_name = $1", "SELECT $1"], show(recs)
    assert (recs[0]["bytes_out"], recs[2]["bytes_out"]) == (first, second), (
        "bytes_out %d and %d; the client received %d and %d for these statements"
        % (recs[0]["bytes_out"], recs[2]["bytes_out"], first, second))


@sqlite_only
def test_ledger_on_failure_closed_refuses_then_recovers(pgtally):
    """With ledger.on_failure = closed, statements are refused (SQLSTATE
    58030, a message naming the setting) while the ledger cannot be written,
    and run again once it can; every statement, refused ones included, ends
    up in the ledger once, nothing lost. (Refusal covers simple-protocol
    statements outside transaction blocks: ClientCursor sends those.)"""
    import sqlite3
    import threading
    proxy = pgtally(**{"ledger.on_failure": "closed"})
    with proxy.connect(autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    wait_ledger(proxy, 1)
    # Another process holds the write lock past the ledger's busy timeout.
    locker = sqlite3.connect(str(ledger_file(proxy)), isolation_level=None, timeout=10)
    locker.execute("BEGIN EXCLUSIVE")
    release = threading.Event()
    refused = None
    try:
        with proxy.connect(autocommit=True) as conn:
            c = psycopg.ClientCursor(conn)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    c.execute("SELECT 2").fetchone()
                except psycopg.Error as e:
                    refused = e
                    break
                time.sleep(0.3)
            assert refused is not None, "no statement was refused while the ledger was locked"
            assert refused.sqlstate == "58030", refused
            assert "ledger.on_failure = closed" in str(refused)
            locker.execute("ROLLBACK")
            release.set()
            deadline = time.monotonic() + 15
            while True:
                try:
                    assert c.execute("SELECT 3").fetchone() == (3,)
                    break
                except psycopg.Error:
                    assert time.monotonic() < deadline, "still refused after the lock was gone"
                    time.sleep(0.3)
    finally:
        if not release.is_set():
            locker.execute("ROLLBACK")
        locker.close()
    recs = ledger(proxy)
    statuses = [(r["status"], r["sqlstate"]) for r in recs]
    assert ("refused", "58030") in statuses, show(recs)
    assert statuses[-1] == ("ok", None), show(recs)
    assert statuses.count(("ok", None)) >= 2, show(recs)
