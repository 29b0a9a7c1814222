"""A PostgreSQL ledger shared by several pgtally processes: records written
with COPY and kept once, rollups in the writer's transaction, pgtallyctl on
either backend with the same output, one budget enforced across three
instances, a ledger that goes away and comes back, and a ledger that can
never work (a wrong password, a database that does not exist).

The ledger is a second real PostgreSQL (fixture ledger_pg), one database
per test.
"""
import json
import time

import pytest

from conftest import LedgerServer
from helpers import PgServer, SLOW, free_port, run_pgtallyctl, run_psql, wait_until
from test_metering import BENCH_DB, bench_db, server_statements, stop  # noqa: F401

PER_QUERY = {"pricing.per_query": "0.1", "pricing.per_compute_second": "0",
             "budget.notice_above": "0"}


@pytest.fixture(scope="module")
def users(pg):
    names = ["shl_a", "shl_b", "shl_c"]
    with pg.admin() as a:
        for n in names:
            a.execute("DROP ROLE IF EXISTS %s" % n)
            a.execute("CREATE ROLE %s LOGIN IN ROLE pgtally_test_users" % n)
    return names


def ctl(*args, rc=0):
    p = run_pgtallyctl(list(args))
    assert p.returncode == rc, (args, p.returncode, p.stdout, p.stderr)
    return p


def rows(ledger_pg, uri, sql, params=()):
    with ledger_pg.connect(uri) as c:
        return c.execute(sql, params).fetchall()


def test_records_and_rollups_in_postgresql(pgtally, ledger_pg, users):
    uri = ledger_pg.new_ledger()
    proxy = pgtally(ledger=uri, instance="east-1", **PER_QUERY)
    for i in range(5):
        r = run_psql(proxy.dsn(user="shl_a"), "SELECT %d" % i)
        assert r.returncode == 0, r
    r = run_psql(proxy.dsn(user="shl_b"), "SELECT 1; SELECT 2")
    assert r.returncode == 0, r
    stop(proxy)
    got = rows(ledger_pg, uri, 'SELECT "user", count(*), sum(cost_micro) FROM pgtally.queries'
               " WHERE \"user\" LIKE 'shl_%%' GROUP BY 1 ORDER BY 1")
    assert got == [("shl_a", 5, 500000), ("shl_b", 2, 200000)], got
    # the rollups hold the same sums, kept by the writer
    roll = rows(ledger_pg, uri, 'SELECT "user", sum(statements), sum(cost_micro)'
                " FROM pgtally.rollups WHERE \"user\" LIKE 'shl_%%' GROUP BY 1 ORDER BY 1")
    assert roll == got, (roll, got)
    spend = rows(ledger_pg, uri, 'SELECT "user", sum(cost_micro) FROM pgtally.spend'
                 " WHERE \"user\" LIKE 'shl_%%' GROUP BY 1 ORDER BY 1")
    assert spend == [(u, c) for u, _, c in got], spend
    # one partition per local day, and the instance by its name
    parts = rows(ledger_pg, uri, "SELECT count(*) FROM pg_inherits i JOIN pg_class p"
                 " ON p.oid = i.inhparent WHERE p.relname = 'queries'")
    assert parts[0][0] >= 1, parts
    names = rows(ledger_pg, uri, "SELECT name FROM pgtally.instances")
    assert names == [("east-1",)], names
    # a record's key is unique: a second copy cannot be inserted
    dup = rows(ledger_pg, uri, "SELECT count(*) FROM (SELECT day, instance, seq"
               " FROM pgtally.queries GROUP BY 1, 2, 3 HAVING count(*) > 1) d")
    assert dup == [(0,)], dup


def _workload(proxy):
    for user, n in (("shl_a", 3), ("shl_b", 2)):
        for i in range(n):
            r = run_psql(proxy.dsn(user=user), "SELECT %d" % i)
            assert r.returncode == 0, r


def test_pgtallyctl_same_output_on_both_backends(pgtally, ledger_pg, users, tmp_path):
    uri = ledger_pg.new_ledger()
    lite = str(tmp_path / "lite.db")
    outputs = {}
    for ledger in (lite, uri):
        proxy = pgtally(ledger=ledger, **PER_QUERY)
        _workload(proxy)
        stop(proxy)
        # compute seconds differ from run to run: everything else must not
        usage = json.loads(ctl("--ledger", ledger, "usage", "--by", "user", "--format",
                               "json").stdout)
        usage = sorted(tuple(sorted((k, v) for k, v in u.items() if "compute" not in k))
                       for u in usage["groups"] if u["group"].startswith("shl_"))
        listed = json.loads(ctl("--ledger", ledger, "queries", "--format", "json").stdout)
        mine = sorted(tuple(sorted((k, v) for k, v in q.items()
                                   if k in ("user", "database", "normalized", "kind", "status",
                                            "cost", "cost_micro", "rows", "protocol")))
                      for q in listed if q["user"].startswith("shl_"))
        outputs[ledger] = (usage, mine)
    assert outputs[lite] == outputs[uri], outputs
    assert len(outputs[uri][1]) == 5, outputs[uri]
    assert len(outputs[uri][0]) == 2, outputs[uri]


def test_one_budget_across_three_instances(pgtally, ledger_pg, users):
    uri = ledger_pg.new_ledger()
    proxies = [pgtally(ledger=uri, instance="node-%d" % i, **PER_QUERY) for i in range(3)]
    ctl("--ledger", uri, "budget", "set", "--user", "shl_c", "--period", "day",
        "--limit", "0.35", "--warn", "50")
    for p in proxies:
        p.wait_log(r"event=budgets_loaded .*budgets=1\b", timeout=5 * SLOW)
    # 0.40 spent through the first two instances
    for p in proxies[:2]:
        for i in range(2):
            r = run_psql(p.dsn(user="shl_c"), "SELECT %d" % i)
            assert r.returncode == 0, r
    spent_at = time.monotonic()
    refused = {}

    def third_refuses():
        r = run_psql(proxies[2].dsn(user="shl_c"), "SELECT 99")
        refused["r"] = r
        return r.returncode != 0
    wait_until(third_refuses, 5 * SLOW, interval=0.1, what="the third instance to refuse")
    took = time.monotonic() - spent_at
    assert "budget user shl_c/day is spent" in refused["r"].stderr, refused["r"].stderr
    print("refused on the third instance %.2f s after the spend" % took)
    for p in proxies:
        stop(p)
    # each threshold alerted once across the three
    alerts = rows(ledger_pg, uri, "SELECT threshold_pct, count(*) FROM pgtally.alerts_sent"
                  " GROUP BY 1 ORDER BY 1")
    assert alerts and all(n == 1 for _, n in alerts), alerts
    assert 100 in [pct for pct, _ in alerts], alerts


@pytest.mark.timeout(150)
def test_ledger_down_20s_under_pgbench_then_back(pgtally, pg, bench_db, tmp_path):
    """The ledger PostgreSQL stops for 20 s under pgbench: pgtally keeps
    serving (on_failure = open), spools, and when the ledger is back writes
    every statement exactly once, rollups included."""
    import subprocess
    from helpers import PG_BINDIR, clean_env
    server = PgServer()
    server.start()
    try:
        ledger = LedgerServer(server)
        uri = ledger.new_ledger()
        proxy = pgtally(ledger=uri, **{"ledger.spool": str(tmp_path / "down.spool")})
        query = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
        before = sum(c for q, c in server_statements(pg, bench_db) if q == query)
        bench = subprocess.Popen(
            ["pgbench", "-h", proxy.host, "-p", str(proxy.port), "-U", "trust_user", "-n",
             "-S", "-c", "2", "-T", "26", BENCH_DB], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=clean_env(PGSSLMODE="disable"))
        time.sleep(2)
        server._as_postgres([PG_BINDIR / "pg_ctl", "-D", server.datadir, "-m", "fast", "-w",
                             "stop"])
        proxy.wait_log(r"event=ledger_write_failed", timeout=10 * SLOW)
        time.sleep(20)
        r = server._as_postgres([PG_BINDIR / "pg_ctl", "-D", server.datadir, "-l",
                                 server.logfile, "-w", "start"])
        assert r.returncode == 0, r.stderr
        out = bench.communicate(timeout=60 * SLOW)[0]
        assert bench.returncode == 0, out
        import re
        sent = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
        proxy.wait_log(r"event=ledger_recovered", timeout=20 * SLOW)
        stop(proxy)
        calls = sum(c for q, c in server_statements(pg, bench_db) if q == query) - before
        got = rows(ledger, uri, "SELECT count(*) FROM pgtally.queries WHERE normalized = %s",
                   (query,))[0][0]
        roll = rows(ledger, uri, "SELECT sum(statements) FROM pgtally.rollups r JOIN"
                    " pgtally.shapes s USING (fingerprint) WHERE s.normalized = %s",
                    (query,))[0][0]
        print("pgbench sent=%d server=%d ledger=%d rollups=%d" % (sent, calls, got, roll))
        assert sent == calls == got == roll, (sent, calls, got, roll, proxy.log_tail())
    finally:
        server.stop()


def test_ledger_that_can_never_work_fails_at_start(pgtally_bin, ledger_pg, tmp_path, pg):
    import subprocess
    port = ledger_pg.server.port
    for uri, want in (
            ("postgresql://postgres@127.0.0.1:%d/no_such_db" % port, "does not exist"),
            ("postgresql://md5_user:wrong-secret@127.0.0.1:%d/postgres" % port,
             "password authentication failed")):
        ini = tmp_path / "bad.ini"
        ini.write_text("[pgtally]\nlisten = 127.0.0.1:%d\nupstream = 127.0.0.1:%d\n"
                       "ledger = %s\n" % (free_port(), pg.port, uri))
        p = subprocess.run([str(pgtally_bin), "-c", str(ini)], capture_output=True, text=True,
                           timeout=30 * SLOW)
        out = p.stdout + p.stderr
        assert p.returncode != 0, out
        assert want in out, out
        assert "wrong-secret" not in out, out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_under_pgbench_loses_and_doubles_nothing(pgtally, ledger_pg, pg, bench_db,
                                                         backend, tmp_path):
    """kill -9 under pgbench, then a restart: every statement whose result
    reached pgbench is in the ledger (the journal keeps those still in
    memory), and none twice (the server's own count bounds it)."""
    import signal
    import subprocess
    from helpers import clean_env
    ledger = ledger_pg.new_ledger() if backend == "postgresql" else str(tmp_path / "k9.db")
    spool = str(tmp_path / "k9.spool")
    conf = dict(ledger=ledger, instance="k9", **{"ledger.spool": spool})
    query = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"

    def server_calls():
        return sum(c for q, c in server_statements(pg, bench_db) if q == query)
    before = server_calls()
    proxy = pgtally(**conf)
    bench = subprocess.Popen(
        ["pgbench", "-h", proxy.host, "-p", str(proxy.port), "-U", "trust_user", "-n", "-S",
         "-c", "4", "-T", "30", BENCH_DB], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=clean_env(PGSSLMODE="disable"))
    time.sleep(3 * SLOW)
    proxy.proc.send_signal(signal.SIGKILL)
    proxy.proc.wait(10)
    proxy.signalled = True
    out = bench.communicate(timeout=60)[0]
    import re
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m, out
    done = int(m.group(1))
    assert done > 500, out
    again = pgtally(**conf)
    again.wait_log(r"event=journal_replayed", timeout=10 * SLOW)
    stop(again)
    if backend == "postgresql":
        got = rows(ledger_pg, ledger, "SELECT count(*) FROM pgtally.queries"
                   " WHERE normalized = %s", (query,))[0][0]
    else:
        import sqlite3
        con = sqlite3.connect(ledger)
        got = con.execute("SELECT count(*) FROM queries WHERE normalized = ?",
                          (query,)).fetchone()[0]
        con.close()
    calls = server_calls() - before
    print("pgbench done=%d ledger=%d server=%d" % (done, got, calls))
    assert done <= got <= calls, (done, got, calls, again.log_tail())


def test_retention_drops_old_day_partitions(pgtally, ledger_pg, users):
    """retention_days on a PostgreSQL ledger drops whole day partitions (and
    the rollups of those days), never today's."""
    uri = ledger_pg.new_ledger()
    proxy = pgtally(ledger=uri, **PER_QUERY)
    assert run_psql(proxy.dsn(user="shl_a"), "SELECT 1").returncode == 0
    stop(proxy)
    old_day = 18262  # 2020-01-01
    with ledger_pg.connect(uri) as c:
        c.execute("CREATE TABLE pgtally.queries_20200101 PARTITION OF pgtally.queries"
                  " FOR VALUES FROM (%d) TO (%d)" % (old_day, old_day + 1))
        c.execute("INSERT INTO pgtally.queries (instance, seq, day, started_at, finished_at,"
                  " \"user\", database, status) VALUES (1, 1, %d, 1577836800000000,"
                  " 1577836800000001, 'shl_a', 'd', 'ok')" % old_day)
        c.execute("INSERT INTO pgtally.rollups VALUES (%d, 1, 'shl_a', 'd', '', 0, 'ok',"
                  " 1, 0, 0, 0, 0, 0, 0)" % old_day)
    proxy = pgtally(ledger=uri, **dict(PER_QUERY, **{"ledger.retention_days": "30"}))
    proxy.wait_log(r"event=ledger_retention ", timeout=10 * SLOW)
    stop(proxy)
    parts = [r[0] for r in rows(ledger_pg, uri, "SELECT c.relname FROM pg_inherits i"
                                " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p"
                                " ON p.oid = i.inhparent WHERE p.relname = 'queries'")]
    assert "queries_20200101" not in parts and parts, parts
    assert rows(ledger_pg, uri, "SELECT count(*) FROM pgtally.rollups WHERE day = %s",
                (old_day,)) == [(0,)]
    got = rows(ledger_pg, uri, "SELECT count(*) FROM pgtally.queries")
    assert got == [(1,)], got


def test_latin1_client_does_not_block_a_postgresql_ledger(pgtally, ledger_pg, users):
    """A client in LATIN1 sends bytes that are not UTF-8; the ledger
    database would refuse the batch (and every retry) for them: they are
    recorded as U+FFFD, and the statements after them too."""
    import psycopg
    uri = ledger_pg.new_ledger()
    proxy = pgtally(ledger=uri, **PER_QUERY)
    with psycopg.connect(proxy.dsn(user="shl_a"), autocommit=True,
                         options="-c client_encoding=LATIN1") as c:
        assert c.execute('SELECT 1 AS "caf\u00e9"').fetchone() == (1,)
    assert run_psql(proxy.dsn(user="shl_a"), "SELECT count(*) FROM pg_class").returncode == 0
    stop(proxy)
    assert "ledger_write_failed" not in proxy.log(), proxy.log_tail()
    texts = [r[0] for r in rows(ledger_pg, uri, "SELECT normalized FROM pgtally.queries"
                                " WHERE \"user\" = 'shl_a' ORDER BY seq")]
    assert texts == ['SELECT $1 AS "caf\ufffd"', "SELECT count(*) FROM pg_class"], texts
