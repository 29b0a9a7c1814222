"""pgtallyctl against a ledger file: queries and usage in every format.

The ledger is created by the real writer (build/bench/ledger_bench, one
record, then emptied) so the schema is the one pgtally writes; rows are then
inserted with Python's sqlite3 and every expected figure is computed here,
independently of the SQL pgtallyctl runs. No PostgreSQL is needed.
"""

import csv
import io
import json
import os
import sqlite3
import subprocess
import time
from calendar import timegm
from pathlib import Path

import pytest

from helpers import run_pgtallyctl

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("PGTALLY_BUILD") or REPO / "build").resolve()
CTL = BUILD / "pgtallyctl"
LEDGER_BENCH = BUILD / "bench" / "ledger_bench"

COLUMNS = ("started_at", "finished_at", "session_id", "backend_pid", "user", "database",
           "application", "client_addr", "tags", "fingerprint", "normalized", "kind",
           "protocol", "est_planner_cost", "est_cost_micro", "compute_s", "rows",
           "bytes_out", "cost_micro", "status", "sqlstate")

TRICKY_SQL = 'SELECT a, "b,c" FROM t\nWHERE x = $1 -- a "quote", a comma\n  AND y = \'é\''
LONG_SQL = "SELECT " + ", ".join("column_%d" % i for i in range(40)) + " FROM wide_table"


def us(text):
    """Unix microseconds of a UTC time 'YYYY-MM-DD HH:MM:SS'."""
    return timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")) * 1_000_000


def make_rows():
    """The dataset: fixed UTC times around May 2024, plus two recent rows."""
    spec = [
        # (UTC time, user, database, application, tags, cost_micro, compute_s, text)
        ("2024-04-28 23:59:59", "alice", "shop", "psql", {"team": "core"}, 1000, 1.0, "SELECT 1"),
        ("2024-04-29 00:00:00", "alice", "shop", "psql", {"team": "core"}, 2000, 2.0, "SELECT 2"),
        ("2024-05-01 00:00:00", "bob", "analytics", "", {"team": "growth"}, 400000, 10.5,
         TRICKY_SQL),
        ("2024-05-01 08:30:00", "alice", "shop", "etl", None, 25, 0.0004, LONG_SQL),
        ("2024-05-01 12:00:00", 'carol, "the" admin', "shop", "etl", {"team": "growth"}, 7,
         0.002, "SELECT 3"),
        ("2024-05-01 23:59:59", "bob", "analytics", "psql", {"team": 7}, 123456, 3.25,
         "SELECT 4"),
        ("2024-05-05 23:59:59", "alice", "analytics", "psql", {"team": "core"}, 9, 0.1,
         "SELECT 5"),
        ("2024-05-06 00:00:00", "bob", "shop", "psql", {"team": "core"}, 11, 0.1, "SELECT 6"),
        ("2024-05-31 23:59:59", "bob", "shop", "psql", None, 13, 0.1, "SELECT 7"),
        ("2024-06-01 00:00:00", "alice", "shop", "psql", None, 17, 0.1, "SELECT 8"),
    ]
    rows = []
    for i, (t, user, db, app, tags, cost, compute, text) in enumerate(spec):
        start = us(t)
        rows.append(dict(zip(COLUMNS, (
            start, start + 1000, i, 100 + i, user, db, app, "127.0.0.1:%d" % (5000 + i),
            json.dumps(tags) if tags is not None else None, -i - 1, text, "select", "simple",
            None, None, compute, i * 10, i * 1000, cost, "ok" if i != 4 else "error",
            None if i != 4 else "42P01"))))
    now = int(time.time() * 1_000_000)
    for i, age in ((100, 10 * 60), (101, 3 * 3600)):
        start = now - age * 1_000_000
        rows.append(dict(zip(COLUMNS, (
            start, start + 1000, i, 100 + i, "dave", "shop", "psql", "127.0.0.1:1", None, i,
            "SELECT recent", "select", "simple", 12.5, 30, 0.25, 1, 10, 30, "ok", None))))
    return rows


ROWS = make_rows()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    assert CTL.exists(), "%s is not built (PGTALLY_BUILD=%s)" % (CTL, BUILD)
    assert LEDGER_BENCH.exists(), "%s is not built" % LEDGER_BENCH
    path = tmp_path_factory.mktemp("ctl") / "ledger.db"
    subprocess.run([str(LEDGER_BENCH), "1", str(path)], check=True, capture_output=True,
                   timeout=60)
    db = sqlite3.connect(str(path))
    db.execute("DELETE FROM queries")
    db.executemany(
        "INSERT INTO queries (%s) VALUES (%s)" % (
            ", ".join('"user"' if c == "user" else c for c in COLUMNS),
            ", ".join("?" * len(COLUMNS))),
        [tuple(r[c] for c in COLUMNS) for r in ROWS])
    db.commit()
    db.close()
    return path


def ctl(*args, tz="UTC", check_rc=0):
    p = run_pgtallyctl(args, tz=tz)
    if check_rc is not None:
        assert p.returncode == check_rc, (args, p.returncode, p.stdout, p.stderr)
    return p


def select(since=None, until=None, user=None):
    return [r for r in ROWS
            if (since is None or r["started_at"] >= since)
            and (until is None or r["started_at"] < until)
            and (user is None or r["user"] == user)]


# ---- queries -------------------------------------------------------------

def test_queries_json_most_recent_first(ledger):
    out = json.loads(ctl("--ledger", ledger, "queries", "--format", "json", "--limit", 100).stdout)
    assert len(out) == len(ROWS)
    starts = [q["started_us"] for q in out]
    assert starts == sorted(starts, reverse=True)
    assert sum(q["cost_micro"] for q in out) == sum(r["cost_micro"] for r in ROWS)
    by_session = {q["session_id"]: q for q in out}
    tricky = by_session[2]
    assert tricky["normalized"] == TRICKY_SQL  # full text in JSON
    assert tricky["tags"] == {"team": "growth"}
    assert tricky["cost"] == "0.400000" and tricky["currency"] == "USD"
    assert tricky["started"] == "2024-05-01T00:00:00.000000+00:00"
    assert by_session[4]["status"] == "error" and by_session[4]["sqlstate"] == "42P01"
    assert by_session[0]["fingerprint"] == "ffffffffffffffff"  # uint64 kept whole
    assert by_session[100]["est_cost_micro"] == 30
    assert by_session[3]["est_cost_micro"] is None and by_session[3]["tags"] is None


def test_queries_default_limit_and_limit(ledger):
    out = json.loads(ctl("--ledger", ledger, "queries", "--format", "json", "-n", 3).stdout)
    assert [q["session_id"] for q in out] == [100, 101, 9]


def test_queries_user_and_range(ledger):
    out = json.loads(ctl("--ledger", ledger, "queries", "--format", "json", "--user", "bob",
                         "--since", "2024-05-01", "--until", "2024-05-06").stdout)
    want = select(us("2024-05-01 00:00:00"), us("2024-05-06 00:00:00"), "bob")
    assert sorted(q["session_id"] for q in out) == sorted(r["session_id"] for r in want)
    assert sum(q["cost_micro"] for q in out) == 400000 + 123456


@pytest.mark.parametrize("since,until,tz", [
    ("2024-05-01 08:30", "2024-05-01 12:00:00", "UTC"),
    ("2024-05-01T08:30:00Z", "2024-05-01T12:00:00.000Z", "PGT-5"),
    ("2024-05-01T10:30:00+02:00", "2024-05-01T14:00+0200", "UTC"),
    ("2024-05-01 10:30", "2024-05-01 14:00", "PGT-2"),  # local time, UTC+2
])
def test_queries_time_forms(ledger, since, until, tz):
    out = json.loads(ctl("--ledger", ledger, "queries", "--format", "json", "--since", since,
                         "--until", until, tz=tz).stdout)
    assert [q["session_id"] for q in out] == [3]


def test_queries_relative_since(ledger):
    out = json.loads(ctl("--ledger", ledger, "queries", "--format", "json",
                         "--since", "-1h").stdout)
    assert [q["session_id"] for q in out] == [100]
    out = json.loads(ctl("--ledger", ledger, "queries", "--format", "json",
                         "--since=-4h", "--until", "-30m").stdout)
    assert [q["session_id"] for q in out] == [101]


def test_queries_order_cost(ledger):
    out = json.loads(ctl("--ledger", ledger, "queries", "--format", "json", "--order", "cost",
                         "--limit", 4).stdout)
    assert [q["cost_micro"] for q in out] == sorted(
        (r["cost_micro"] for r in ROWS), reverse=True)[:4]


def test_queries_csv_round_trips(ledger):
    text = ctl("--ledger", ledger, "queries", "--format", "csv", "--limit", 100).stdout
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == len(ROWS)
    by_addr = {r["client_addr"]: r for r in rows}
    tricky = by_addr["127.0.0.1:5002"]
    assert tricky["normalized"] == TRICKY_SQL
    assert tricky["cost"] == "0.400000" and tricky["currency"] == "USD"
    carol = by_addr["127.0.0.1:5004"]
    assert carol["user"] == 'carol, "the" admin'
    assert carol["status"] == "error" and carol["sqlstate"] == "42P01"
    total = sum(round(float(r["cost"]) * 1e6) for r in rows)
    assert total == sum(r["cost_micro"] for r in ROWS)


def test_queries_table(ledger):
    out = ctl("--ledger", ledger, "queries", "--since", "2024-05-01", "--until", "2024-05-02",
              tz="PGT-2").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["STARTED", "USER", "DATABASE", "APPLICATION", "KIND", "COMPUTE",
                                "ROWS", "COST", "STATUS", "QUERY"]
    # The local day (UTC+2) holds three statements, most recent first.
    assert len(lines) == 1 + 3
    assert [line.split()[2] for line in lines[1:]] == ["carol,", "alice", "bob"]
    assert lines[2].startswith("2024-05-01 10:30:00  alice")  # shown in local time
    assert lines[2].endswith("...") and LONG_SQL not in out
    assert "0.000025 USD" in lines[2]
    assert "error 42P01" in lines[1]
    assert "FROM t WHERE x = $1" in lines[3]  # newlines shown as spaces
    # Columns line up: each header starts where its cells start.
    col = lines[0].index("QUERY")
    assert all(line[col - 2:col] == "  " and line[col] != " " for line in lines[1:])


def test_queries_table_empty(ledger):
    out = ctl("--ledger", ledger, "queries", "--since", "2030-01-01").stdout
    assert out == "No statements match.\n"


# ---- usage ---------------------------------------------------------------

def sums(rows, key):
    groups = {}
    for r in rows:
        g = groups.setdefault(key(r), {"statements": 0, "cost_micro": 0, "rows": 0,
                                       "bytes_out": 0, "compute_s": 0.0})
        g["statements"] += 1
        g["cost_micro"] += r["cost_micro"]
        g["rows"] += r["rows"]
        g["bytes_out"] += r["bytes_out"]
        g["compute_s"] += r["compute_s"]
    return groups


def check_usage_json(doc, want):
    got = {g["group"]: g for g in doc["groups"]}
    assert set(got) == set(want)
    for name, w in want.items():
        for k in ("statements", "cost_micro", "rows", "bytes_out"):
            assert got[name][k] == w[k], (name, k)
        assert got[name]["compute_s"] == pytest.approx(w["compute_s"])
    costs = [g["cost_micro"] for g in doc["groups"]]
    assert costs == sorted(costs, reverse=True)
    total = doc["total"]
    assert total["cost_micro"] == sum(w["cost_micro"] for w in want.values())
    assert total["statements"] == sum(w["statements"] for w in want.values())


def test_usage_day_by_user(ledger):
    doc = json.loads(ctl("--ledger", ledger, "usage", "--date", "2024-05-01",
                         "--format", "json").stdout)
    day = select(us("2024-05-01 00:00:00"), us("2024-05-02 00:00:00"))
    check_usage_json(doc, sums(day, lambda r: r["user"]))
    assert doc["by"] == "user" and doc["period"] == "day" and doc["currency"] == "USD"
    assert doc["from"] == "2024-05-01T00:00:00.000000Z"
    assert doc["to"] == "2024-05-02T00:00:00.000000Z"


def test_usage_week_starts_monday(ledger):
    for date in ("2024-04-29", "2024-05-01", "2024-05-05"):
        doc = json.loads(ctl("--ledger", ledger, "usage", "--period", "week", "--date", date,
                             "--by", "database", "--format", "json").stdout)
        week = select(us("2024-04-29 00:00:00"), us("2024-05-06 00:00:00"))
        check_usage_json(doc, sums(week, lambda r: r["database"]))
        assert doc["label"] == "2024-04-29 to 2024-05-05"


def test_usage_month_by_application(ledger):
    doc = json.loads(ctl("--ledger", ledger, "usage", "--period", "month", "--date",
                         "2024-05-17", "--by", "application", "--format", "json").stdout)
    month = select(us("2024-05-01 00:00:00"), us("2024-06-01 00:00:00"))
    check_usage_json(doc, sums(month, lambda r: r["application"]))
    assert doc["label"] == "2024-05"


def test_usage_by_tag(ledger):
    doc = json.loads(ctl("--ledger", ledger, "usage", "--period", "month", "--date",
                         "2024-05-01", "--by", "tag:team", "--format", "json").stdout)
    month = select(us("2024-05-01 00:00:00"), us("2024-06-01 00:00:00"))

    def team(r):
        tags = json.loads(r["tags"]) if r["tags"] else {}
        return str(tags["team"]) if "team" in tags else None
    check_usage_json(doc, sums(month, team))


def test_usage_csv(ledger):
    text = ctl("--ledger", ledger, "usage", "--period", "month", "--date", "2024-05-01",
               "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    month = select(us("2024-05-01 00:00:00"), us("2024-06-01 00:00:00"))
    want = sums(month, lambda r: r["user"])
    assert {r["group"] for r in rows} == set(want)
    for r in rows:
        assert int(r["statements"]) == want[r["group"]]["statements"]
        assert round(float(r["cost"]) * 1e6) == want[r["group"]]["cost_micro"]
        assert r["currency"] == "USD"


def test_usage_table_has_total(ledger):
    out = ctl("--ledger", ledger, "usage", "--date", "2024-05-01").stdout
    lines = out.splitlines()
    assert lines[0] == "Usage by user, day 2024-05-01 (UTC)"
    assert lines[2].split() == ["USER", "STATEMENTS", "COMPUTE", "ROWS", "BYTES", "COST"]
    assert lines[3].startswith("bob ")  # most expensive first
    assert set(lines[-2].replace(" ", "")) == {"-"}
    assert lines[-1].split()[:2] == ["TOTAL", "4"]
    assert lines[-1].endswith("0.52 USD")  # 523488 micro
    widths = {len(line) for line in lines[2:]}
    assert len(widths) == 1  # right-aligned cost column: every line equally long


def test_usage_empty_period(ledger):
    out = ctl("--ledger", ledger, "usage", "--date", "2001-01-01").stdout
    assert "No statements in this period." in out
    doc = json.loads(ctl("--ledger", ledger, "usage", "--date", "2001-01-01",
                         "--format", "json").stdout)
    assert doc["groups"] == [] and doc["total"]["cost_micro"] == 0


def test_currency_and_ledger_from_config(ledger, tmp_path):
    ini = tmp_path / "pgtally.ini"
    ini.write_text("[pgtally]\nledger = %s\npricing.currency = EUR\n" % ledger)
    out = ctl("-c", ini, "usage", "--date", "2024-05-01").stdout
    assert out.splitlines()[-1].endswith("0.52 EUR")
    doc = json.loads(ctl("queries", "-c", ini, "--format", "json", "-n", 1).stdout)
    assert doc[0]["currency"] == "EUR"
    # The current directory's pgtally.ini is the default config.
    p = subprocess.run([str(CTL), "queries", "-n", "1"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and "EUR" in p.stdout


# ---- errors ----------------------------------------------------------------

@pytest.mark.parametrize("args,culprit", [
    (["frobnicate"], "frobnicate"),
    ([], "no command"),
    (["--bogus", "queries"], "--bogus"),
    (["queries", "--bogus"], "--bogus"),
    (["queries", "stray"], "stray"),
    (["queries", "--limit", "0"], "--limit"),
    (["queries", "--limit", "-5"], "--limit"),
    (["queries", "--limit", "ten"], "--limit"),
    (["queries", "--limit", "1.5"], "--limit"),
    (["queries", "--limit"], "--limit"),
    (["queries", "--since", "2024-02-30"], "--since"),
    (["queries", "--until", "yesterday"], "--until"),
    (["queries", "--since", "2024-05-01 25:00"], "--since"),
    (["queries", "--since", "-5y"], "--since"),
    (["queries", "--order", "size"], "--order"),
    (["queries", "--format", "xml"], "--format"),
    (["queries", "--help=yes"], "--help"),
    (["usage", "--by", "team"], "--by"),
    (["usage", "--by", "tag:"], "--by"),
    (["usage", "--by", 'tag:a"b'], "--by"),
    (["usage", "--period", "year"], "--period"),
    (["usage", "--date", "2024-5-1"], "--date"),
    (["usage", "--date", "2024-05-01 10:00"], "--date"),
    (["usage", "--format", "yaml"], "--format"),
])
def test_bad_arguments_exit_2(ledger, args, culprit):
    p = ctl("--ledger", ledger, *args, check_rc=2)
    assert culprit in p.stderr
    assert "usage: pgtallyctl" in p.stderr
    assert p.stdout == ""


def test_missing_ledger_exits_1(tmp_path):
    missing = tmp_path / "nope.db"
    for cmd in ("queries", "usage"):
        p = ctl("--ledger", missing, cmd, check_rc=1)
        assert str(missing) in p.stderr and "No such file" in p.stderr
    assert not missing.exists()  # a reader never creates the file
    p = ctl("-c", tmp_path / "nope.ini", "queries", check_rc=1)
    assert "nope.ini" in p.stderr


def test_not_a_ledger_exits_1(tmp_path):
    other = tmp_path / "other.db"
    sqlite3.connect(str(other)).execute("CREATE TABLE t (x)").connection.close()
    p = ctl("--ledger", other, "queries", check_rc=1)
    assert "not a pgtally ledger" in p.stderr


def test_help():
    for args in (["--help"], ["queries", "--help"], ["usage", "-h"]):
        p = ctl(*args)
        assert p.stdout.startswith("usage: pgtallyctl")
    assert "--order" in ctl("queries", "--help").stdout
    assert "tag:NAME" in ctl("usage", "--help").stdout
    assert ctl("--version").stdout.startswith("pgtallyctl ")
