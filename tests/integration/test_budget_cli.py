"""pgtallyctl budget and team: every command's output (table and JSON), every
usage error (exit 2, nothing written), grants, teams, the settings version
that tells a running pgtally about changes, and the budgets section of
`usage` with spend computed here from the rows of the ledger (which the
tests write with their sums in the spend rollup, as the writer does).

Each test gets a fresh ledger made by the real writer
(build/bench/ledger_bench). pgtallyctl runs with PGTALLY_CLOCK_OFFSET
set so that its clock reads Wednesday 2031-05-14 12:00:00 UTC, which makes
days, weeks and months fixed; statements are inserted with sqlite3 at known
times around it. The last test runs a real pgtally and PostgreSQL.
"""

import csv
import datetime
import io
import json
import sqlite3
import subprocess
import time
from calendar import timegm
from zoneinfo import ZoneInfo

import pytest

from helpers import BUILD, run_pgtallyctl, wait_until

LEDGER_BENCH = BUILD / "bench" / "ledger_bench"
US = 1_000_000
USAGE_LINE = "usage: pgtallyctl"
SETTINGS_TABLES = ("budgets", "teams", "team_members", "budget_grants", "settings_version")


def us(text):
    """Unix microseconds of a UTC time 'YYYY-MM-DD HH:MM:SS'."""
    return timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")) * US


NOW = us("2031-05-14 12:00:00")  # a Wednesday


def clock_env(now_us=NOW):
    """The environment that moves pgtallyctl's clock to now_us."""
    return {"PGTALLY_CLOCK_OFFSET": "%.6f" % (now_us / US - time.time())}


@pytest.fixture
def ledger(tmp_path):
    assert LEDGER_BENCH.exists(), "%s is not built" % LEDGER_BENCH
    path = tmp_path / "ledger.db"
    subprocess.run([str(LEDGER_BENCH), "1", str(path)], check=True, capture_output=True,
                   timeout=60)
    db = sqlite3.connect(str(path))
    for table in ("queries", "rollups", "spend"):
        db.execute("DELETE FROM %s" % table)
    db.commit()
    db.close()
    return path


def ctl(ledger, *args, rc=0, tz="UTC", now_us=NOW, config=None):
    """Runs pgtallyctl on ledger (or with -c config) and checks its exit code."""
    where = ["-c", config] if config else ["--ledger", ledger]
    p = run_pgtallyctl(where + list(args), tz=tz, env=clock_env(now_us))
    assert p.returncode == rc, (args, p.returncode, p.stdout, p.stderr)
    return p


def ctl_json(ledger, *args, **kw):
    return json.loads(ctl(ledger, *args, "--format", "json", **kw).stdout)


def snapshot(path):
    """Everything the budget commands may change."""
    db = sqlite3.connect(str(path))
    try:
        return {t: db.execute("SELECT * FROM %s ORDER BY 1, 2" % t).fetchall()
                for t in SETTINGS_TABLES}
    finally:
        db.close()


def version(path):
    db = sqlite3.connect(str(path))
    try:
        return db.execute("SELECT version FROM settings_version").fetchone()[0]
    finally:
        db.close()


def sql(path, statement, params=()):
    db = sqlite3.connect(str(path))
    try:
        rows = db.execute(statement, params).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


def local_day(t, tz):
    """The local day number (days since 1970-01-01 in tz) of UTC time t,
    as the writer computes it (pgt_local_day)."""
    d = datetime.datetime.fromtimestamp(us(t) / US, ZoneInfo(tz)).date()
    return d.toordinal() - datetime.date(1970, 1, 1).toordinal()


def insert_queries(path, rows, tz="UTC"):
    """rows: (UTC time, user, database, application, cost in micro-units),
    written as the writer of a pgtally in time zone tz would: the rows, and
    their sums in the spend rollup that budgets read."""
    db = sqlite3.connect(str(path))
    db.executemany(
        'INSERT INTO queries (started_at, finished_at, "user", database, application, status, '
        "cost_micro, instance, day) VALUES (?, ?, ?, ?, ?, 'ok', ?, 0, ?)",
        [(us(t), us(t) + 1000, user, dbname, app, cost, local_day(t, tz))
         for t, user, dbname, app, cost in rows])
    db.executemany(
        'INSERT INTO spend (instance, day, "user", database, application, cost_micro, rev) '
        "VALUES (0, ?, ?, ?, ?, ?, 0) ON CONFLICT DO UPDATE SET "
        "cost_micro = cost_micro + excluded.cost_micro",
        [(local_day(t, tz), user, dbname, app, cost) for t, user, dbname, app, cost in rows])
    db.commit()
    db.close()


def by_id(items):
    return {b["id"]: b for b in items}


# ---- budget set / list --------------------------------------------------------

def test_set_creates_then_updates(ledger):
    out = ctl(ledger, "budget", "set", "--user", "alice", "--period", "day", "--limit", "12.50",
              "--warn", "80,50").stdout
    assert out.splitlines()[0] == "Budget 1 created"
    assert "user alice" in out and "12.50 USD" in out and "50%,80%" in out
    assert "block" in out and "no cap" in out
    assert "resets 2031-05-15 00:00:00 UTC" in out
    row = sql(ledger, "SELECT subject_type, subject, period, limit_micro, warn_pcts, action, "
                      "per_query_micro FROM budgets")
    assert row == [("user", "alice", "day", 12_500_000, "[50,80]", "block", None)]
    # The same subject and period: the same budget, new settings.
    out = ctl(ledger, "budget", "set", "--period", "day", "--user", "alice", "--limit",
              "20 USD", "--action", "warn", "--per-query", "0.25").stdout
    assert out.splitlines()[0] == "Budget 1 updated"
    assert "20.00 USD" in out and "0.25 USD" in out and "warn: statements still run" in out
    row = sql(ledger, "SELECT id, limit_micro, warn_pcts, action, per_query_micro FROM budgets")
    assert row == [(1, 20_000_000, "[80]", "warn", 250_000)]  # --warn back to its default


def test_every_subject_in_list(ledger):
    sql(ledger, "INSERT INTO role_members VALUES ('analysts', 'dave', 1)")
    ctl(ledger, "team", "add", "data", "alice")
    specs = [
        (["--user", "alice", "--period", "day", "--limit", "10"], "user", "alice"),
        (["--role", "analysts", "--period", "week", "--limit", "1.5"], "role", "analysts"),
        (["--team", "data", "--period", "month", "--limit", "100", "--warn", "none"], "team",
         "data"),
        (["--application", "etl job", "--period", "day", "--limit", "0.000001"], "application",
         "etl job"),
        (["--database", "dw", "--period", "week", "--limit", "3USD", "--per-query", "0.5"],
         "database", "dw"),
        (["--default", "--period", "month", "--limit", "0"], "default", ""),
    ]
    for i, (args, _, _) in enumerate(specs, start=1):
        assert ctl(ledger, "budget", "set", *args).stdout.startswith("Budget %d created" % i)
    items = ctl_json(ledger, "budget", "list")
    assert [(b["subject_type"], b["subject"]) for b in items] == [(t, s) for _, t, s in specs]
    b = by_id(items)
    assert b[1]["limit_micro"] == 10 * US and b[1]["warn_pcts"] == [80]
    assert b[1]["action"] == "block" and b[1]["per_query_micro"] is None
    assert b[1]["max_rows"] is None
    assert b[2]["period"] == "week" and b[2]["limit"] == "1.500000"
    assert b[3]["warn_pcts"] == []
    assert b[4]["limit_micro"] == 1
    assert b[5]["per_query_micro"] == 500_000 and b[5]["per_query"] == "0.500000"
    assert b[6]["limit_micro"] == 0 and b[6]["percent"] == 100  # a limit of 0 is reached
    assert b[6]["users"] == []
    for item in items:
        assert item["spent_micro"] == 0 and item["currency"] == "USD"
    assert b[1]["resets"] == "2031-05-15T00:00:00.000000+00:00"
    assert b[2]["period_start"] == "2031-05-12T00:00:00.000000+00:00"  # Monday
    assert b[3]["resets"] == "2031-06-01T00:00:00.000000+00:00"

    lines = ctl(ledger, "budget", "list").stdout.splitlines()
    assert lines[0].split() == ["ID", "SUBJECT", "PERIOD", "LIMIT", "WARN", "ACTION", "PER",
                                "QUERY", "MAX", "ROWS", "SPENT", "USED", "RESETS"]
    assert len(lines) == 1 + len(specs) + 2
    assert lines[1].split() == ["1", "user", "alice", "day", "10.00", "USD", "80%", "block", "-",
                                "-", "0.00", "USD", "0%", "2031-05-15", "00:00:00"]
    assert "application etl job" in lines[4] and "0.000001 USD" in lines[4]
    assert lines[5].split()[6:10] == ["80%", "block", "0.50", "USD"]
    assert lines[-1] == "Periods in UTC; LIMIT includes grants (+)."


def test_list_csv_and_empty(ledger):
    assert ctl(ledger, "budget", "list").stdout.startswith("No budgets.")
    assert ctl_json(ledger, "budget", "list") == []
    ctl(ledger, "budget", "set", "--user", 'carol, "the" admin', "--period", "day", "--limit",
        "2", "--warn", "50,90")
    text = ctl(ledger, "budget", "list", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == 1
    assert rows[0]["subject"] == 'carol, "the" admin' and rows[0]["warn"] == "50,90"
    assert rows[0]["limit"] == "2.000000" and rows[0]["currency"] == "USD"
    assert rows[0]["max_rows"] == ""
    assert rows[0]["resets"] == "2031-05-15T00:00:00.000000+00:00"


def test_max_rows(ledger):
    """--max-rows as integers or e-notation, beside a money limit or alone
    (then the budget has none), in every format of budget list."""
    out = ctl(ledger, "budget", "set", "--user", "alice", "--period", "day", "--limit", "10",
              "--max-rows", "1e9").stdout
    assert "  max rows   1e9" in out.splitlines()
    out = ctl(ledger, "budget", "set", "--default", "--period", "week", "--max-rows",
              "5000000").stdout
    assert out.splitlines()[0] == "Budget 2 created"
    assert "  limit      none (spend is counted, never refused nor warned of)" in out
    assert "  max rows   5e6" in out.splitlines()
    ctl(ledger, "budget", "set", "--database", "dw", "--period", "month", "--max-rows", "2.5E10",
        "--per-query", "0.5")
    ctl(ledger, "budget", "set", "--team", "data", "--period", "day", "--limit", "3",
        "--max-rows", "1234567")
    assert sql(ledger, "SELECT id, limit_micro, warn_pcts, per_query_micro, max_rows FROM budgets "
                       "ORDER BY id") == [
        (1, 10 * US, "[80]", None, 1_000_000_000),
        (2, -1, "[]", None, 5_000_000),
        (3, -1, "[]", 500_000, 25_000_000_000),
        (4, 3 * US, "[80]", None, 1_234_567)]
    insert_queries(ledger, [("2031-05-13 09:00:00", "bob", "db", "app", 7 * US)])

    b = by_id(ctl_json(ledger, "budget", "list"))
    assert b[1]["max_rows"] == 1_000_000_000 and b[1]["limit_micro"] == 10 * US
    assert b[2]["max_rows"] == 5_000_000
    assert b[2]["limit_micro"] is None and b[2]["limit"] is None
    assert b[2]["effective_limit_micro"] is None and b[2]["effective_limit"] is None
    assert b[2]["percent"] is None and b[2]["warn_pcts"] == []
    assert b[2]["spent_micro"] == 7 * US  # spend is still counted
    assert b[2]["users"][0]["user"] == "bob" and b[2]["users"][0]["percent"] is None
    assert b[3]["max_rows"] == 25_000_000_000 and b[3]["per_query_micro"] == 500_000

    lines = ctl(ledger, "budget", "list").stdout.splitlines()
    header = lines[0]
    col = header.index("MAX ROWS")
    assert lines[1][:col + 8].split()[-1] == "1e9"
    assert lines[2].split()[:8] == ["2", "default", "(top:", "bob)", "week", "none", "-", "-"]
    assert lines[2].split()[8:13] == ["-", "5e6", "7.00", "USD", "-"]
    assert "2.5e10" in lines[3] and "0.50 USD" in lines[3]
    assert "1234567" in lines[4]

    text = ctl(ledger, "budget", "list", "--format", "csv").stdout
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(text, newline=""))}
    assert rows["1"]["max_rows"] == "1000000000" and rows["1"]["limit"] == "10.000000"
    assert rows["2"]["max_rows"] == "5000000"
    assert rows["2"]["limit"] == "" and rows["2"]["effective_limit"] == ""
    assert rows["2"]["percent"] == "" and rows["2"]["spent"] == "7.000000"
    assert rows["3"]["max_rows"] == "25000000000"

    # usage: a budget without a limit has no bar and no percent.
    section = ctl(ledger, "usage").stdout.partition("\nBudgets, current periods (UTC)\n\n")[2]
    line = [ln for ln in section.splitlines() if ln.split()[0] == "2"][0]
    assert line.split()[:7] == ["2", "default:", "bob", "week", "7.00", "USD", "none"], section
    assert "[" not in line and "%" not in line, section

    # New settings without --max-rows take the row limit away.
    ctl(ledger, "budget", "set", "--user", "alice", "--period", "day", "--limit", "10")
    assert sql(ledger, "SELECT max_rows FROM budgets WHERE id = 1") == [(None,)]


def test_amounts_in_the_configured_currency(ledger, tmp_path):
    for i, text in enumerate(("12.50", "12.50USD", "12.50 USD", "12.5")):
        ctl(ledger, "budget", "set", "--user", "u%d" % i, "--period", "day", "--limit", text)
    assert [r[0] for r in sql(ledger, "SELECT limit_micro FROM budgets")] == [12_500_000] * 4
    ini = tmp_path / "pgtally.ini"
    ini.write_text("[pgtally]\nledger = %s\n[pricing]\ncurrency = EUR\n" % ledger)
    out = ctl(ledger, "budget", "set", "--user", "eve", "--period", "day", "--limit", "3 EUR",
              config=ini).stdout
    assert "3.00 EUR" in out
    before = snapshot(ledger)
    p = ctl(ledger, "budget", "set", "--user", "eve", "--period", "day", "--limit", "3 USD",
            config=ini, rc=2)
    assert "USD" in p.stderr and "EUR" in p.stderr
    assert snapshot(ledger) == before


# ---- errors -------------------------------------------------------------------

SET = ["budget", "set"]
GOOD = ["--period", "day", "--limit", "10"]


@pytest.mark.parametrize("args,culprit", [
    (SET + ["--user", "a", "--team", "t"] + GOOD, "--team"),
    (SET + ["--default", "--user", "a"] + GOOD, "--default"),
    (SET + ["--user", "a", "--default"] + GOOD, "--default"),
    (SET + ["--role", "r", "--application", "x"] + GOOD, "--application"),
    (SET + ["--user", "a", "--user", "b"] + GOOD, "--user"),
    (SET + ["--database", "d", "--period", "day", "--limit", "1", "--limit", "2"], "--limit"),
    (SET + GOOD, "--user"),
    (SET + ["--user", "a", "--limit", "10"], "--period"),
    (SET + ["--user", "a", "--period", "day"], "--limit is required"),
    (SET + ["--user", "a", "--period", "day", "--per-query", "1"], "--max-rows alone"),
    (SET + ["--user", "a", "--period", "year", "--limit", "1"], "--period"),
    (SET + ["--user", "a"] + GOOD + ["--bogus"], "--bogus"),
    (SET + ["--user", "a", "--period", "day", "--limit", "-1"], "negative"),
    (SET + ["--user", "a", "--period", "day", "--limit", "ten"], "'ten' is not an amount"),
    (SET + ["--user", "a", "--period", "day", "--limit", "1e3"], "not an amount"),
    (SET + ["--user", "a", "--period", "day", "--limit", "10 EUR"], "EUR"),
    (SET + ["--user", "a", "--period", "day", "--limit", "10EUR"], "EUR"),
    (SET + ["--user", "a"] + GOOD + ["--per-query", "-0.5"], "negative"),
    (SET + ["--user", "a"] + GOOD + ["--per-query", "0"], "--per-query"),
    (SET + ["--user", "a"] + GOOD + ["--warn", "0"], "--warn"),
    (SET + ["--user", "a"] + GOOD + ["--max-rows", "-5"], "bad --max-rows '-5'"),
    (SET + ["--user", "a"] + GOOD + ["--max-rows", "0"], "bad --max-rows '0'"),
    (SET + ["--user", "a"] + GOOD + ["--max-rows", "lots"], "bad --max-rows 'lots'"),
    (SET + ["--user", "a"] + GOOD + ["--max-rows", "10M"], "bad --max-rows '10M'"),
    (SET + ["--user", "a"] + GOOD + ["--max-rows", "1.5"], "whole number"),
    (SET + ["--user", "a"] + GOOD + ["--max-rows", "2e18"], "1e18"),
    (SET + ["--user", "a"] + GOOD + ["--max-rows", ""], "bad --max-rows ''"),
    (SET + ["--user", "a"] + GOOD + ["--max-rows", "1e9", "--max-rows", "1e8"], "given twice"),
    (SET + ["--user", "a", "--period", "day", "--max-rows", "1e9", "--warn", "50"],
     "--warn needs --limit"),
    (SET + ["--user", "a", "--period", "day", "--max-rows", "1e9", "--action", "warn"],
     "--action needs --limit"),
    (SET + ["--user", "a"] + GOOD + ["--warn", "50,101"], "--warn"),
    (SET + ["--user", "a"] + GOOD + ["--warn", "50;80"], "--warn"),
    (SET + ["--user", "a"] + GOOD + ["--warn", "1,2,3,4,5,6,7,8,9"], "--warn"),
    (SET + ["--user", "a"] + GOOD + ["--action", "refuse"], "--action"),
    (SET + ["--default=yes"] + GOOD, "--default"),
    (SET + ["--user", ""] + GOOD, "--user"),
    (SET + ["--user", "a\tb"] + GOOD, "--user"),
    (SET + ["--user", "a"] + GOOD + ["stray"], "stray"),
    (["budget"], "no subcommand"),
    (["budget", "frobnicate"], "frobnicate"),
    (["budget", "rm"], "ID"),
    (["budget", "rm", "one"], "one"),
    (["budget", "rm", "0"], "'0'"),
    (["budget", "rm", "1", "2"], "'2'"),
    (["budget", "list", "--format", "xml"], "--format"),
    (["budget", "grant", "--amount", "5"], "--user"),
    (["budget", "grant", "--user", "a"], "--amount"),
    (["budget", "grant", "--user", "a", "--amount", "0"], "--amount"),
    (["budget", "grant", "--user", "a", "--amount", "-5"], "negative"),
    (["budget", "grant", "--user", "a", "--amount", "5 GBP"], "GBP"),
    (["budget", "grant", "--user", "a", "--amount", "5", "--until", "tomorrow"], "--until"),
    (["budget", "grant", "--user", "a", "--amount", "5", "--until", "2031-05-14 11:00Z"],
     "future"),
    (["budget", "grant", "--user", "a", "--amount", "5", "--until", "-1h"], "future"),
    (["budget", "grant", "--user", "a", "--amount", "5", "--period", "day"], "--period"),
    (["team"], "no subcommand"),
    (["team", "add"], "NAME"),
    (["team", "add", "data"], "USER"),
    (["team", "add", "data", ""], "user"),
    (["team", "rm"], "NAME"),
    (["team", "list", "extra"], "extra"),
    (["team", "add", "data", "alice", "--format", "json"], "--format"),
])
def test_bad_arguments_exit_2_and_change_nothing(ledger, args, culprit):
    ctl(ledger, "budget", "set", "--user", "a", "--period", "day", "--limit", "10")
    ctl(ledger, "team", "add", "data", "bob")
    before = snapshot(ledger)
    p = ctl(ledger, *args, rc=2)
    assert culprit in p.stderr, p.stderr
    assert USAGE_LINE in p.stderr and "--help" in p.stderr
    assert p.stdout == ""
    assert snapshot(ledger) == before


def test_not_found_exits_1_and_changes_nothing(ledger):
    ctl(ledger, "budget", "set", "--user", "a", "--period", "day", "--limit", "10")
    ctl(ledger, "team", "add", "data", "alice", "bob")
    before = snapshot(ledger)
    p = ctl(ledger, "budget", "rm", "7", rc=1)
    assert "no budget with id 7" in p.stderr and "budget list" in p.stderr
    p = ctl(ledger, "team", "rm", "nope", rc=1)
    assert "no team named 'nope'" in p.stderr
    p = ctl(ledger, "team", "rm", "data", "bob", "mallory", rc=1)
    assert "'mallory' is not a member of team 'data'" in p.stderr
    assert "nothing changed" in p.stderr
    assert snapshot(ledger) == before  # bob is still in the team


def test_missing_ledger(tmp_path):
    missing = tmp_path / "nope.db"
    for args in (["budget", "list"], ["budget", "rm", "1"], ["team", "list"],
                 ["team", "rm", "data"]):
        p = ctl(missing, *args, rc=1)
        assert str(missing) in p.stderr and "No such file" in p.stderr
    assert not missing.exists()
    # Changes create the ledger.
    ctl(missing, "budget", "set", "--default", "--period", "week", "--limit", "5")
    assert version(missing) == 1
    ctl(missing, "budget", "grant", "--user", "x", "--amount", "1")
    ctl(tmp_path / "other.db", "team", "add", "t", "u")
    assert (tmp_path / "other.db").exists()


def test_bad_timezone_in_config(ledger, tmp_path):
    ini = tmp_path / "pgtally.ini"
    ini.write_text("[pgtally]\nledger = %s\ntimezone = Mars/Olympus\n" % ledger)
    p = ctl(ledger, "budget", "list", config=ini, rc=1)
    assert "%s:3" % ini in p.stderr and "timezone" in p.stderr
    assert "Europe/Berlin" in p.stderr


# ---- rm, grant ------------------------------------------------------------------

def test_rm(ledger):
    ctl(ledger, "budget", "set", "--user", "a", "--period", "day", "--limit", "10")
    ctl(ledger, "budget", "set", "--team", "t", "--period", "month", "--limit", "10")
    sql(ledger, "INSERT INTO alerts_sent (budget_id, period_start, threshold_pct, channel, "
                "sent_at) VALUES (1, 0, 80, 'log', 0)")
    out = ctl(ledger, "budget", "rm", "1").stdout
    assert out == "Budget 1 removed (user a, day)\n"
    assert [b["id"] for b in ctl_json(ledger, "budget", "list")] == [2]
    assert sql(ledger, "SELECT count(*) FROM alerts_sent") == [(0,)]
    ctl(ledger, "budget", "rm", "1", rc=1)


def test_grants_raise_the_listed_limit(ledger):
    insert_queries(ledger, [("2031-05-14 09:00:00", "alice", "dw", "psql", 6 * US),
                            ("2031-05-14 09:00:00", "bob", "dw", "psql", 3 * US)])
    ctl(ledger, "budget", "set", "--user", "alice", "--period", "day", "--limit", "10")
    ctl(ledger, "budget", "set", "--default", "--period", "day", "--limit", "4")
    out = ctl(ledger, "budget", "grant", "--user", "alice", "--amount", "5").stdout
    assert out.startswith("Grant 1: 5.00 USD more for alice, until the end of the current period")
    out = ctl(ledger, "budget", "grant", "--user", "bob", "--amount", "2.5 USD", "--until",
              "2031-05-14 13:00Z").stdout
    assert "Grant 2: 2.50 USD more for bob, until 2031-05-14 13:00:00 UTC" in out
    assert sql(ledger, 'SELECT "user", amount_micro, granted_at, until_us FROM budget_grants') == [
        ("alice", 5 * US, pytest.approx(NOW, abs=60 * US), None),
        ("bob", 2_500_000, pytest.approx(NOW, abs=60 * US), us("2031-05-14 13:00:00"))]

    b = by_id(ctl_json(ledger, "budget", "list"))
    assert b[1]["granted_micro"] == 5 * US and b[1]["effective_limit_micro"] == 15 * US
    assert b[1]["limit_micro"] == 10 * US and b[1]["percent"] == 40.0
    # The default budget covers bob (alice has her own): 3 of 4 + 2.5.
    assert b[2]["user"] == "bob" and b[2]["effective_limit_micro"] == 6_500_000
    assert [u["user"] for u in b[2]["users"]] == ["bob"]
    table = ctl(ledger, "budget", "list").stdout
    assert "15.00 USD (+5.00)" in table and "6.50 USD (+2.50)" in table
    assert "default (top: bob)" in table

    # An hour later bob's grant is over; the next day alice's too.
    b = by_id(ctl_json(ledger, "budget", "list", now_us=NOW + 3600 * US))
    assert b[1]["effective_limit_micro"] == 15 * US and b[2]["effective_limit_micro"] == 4 * US
    b = by_id(ctl_json(ledger, "budget", "list", now_us=NOW + 86400 * US))
    assert b[1]["effective_limit_micro"] == 10 * US and b[1]["spent_micro"] == 0


def test_notes_for_changes_without_effect(ledger):
    p = ctl(ledger, "budget", "grant", "--user", "zed", "--amount", "1")
    assert "note: no user budget of zed and no default budget" in p.stderr
    p = ctl(ledger, "budget", "set", "--team", "ghosts", "--period", "day", "--limit", "1")
    assert "note: team ghosts has no members yet" in p.stderr
    ctl(ledger, "team", "add", "ghosts", "casper")
    p = ctl(ledger, "budget", "set", "--team", "ghosts", "--period", "day", "--limit", "2")
    assert p.stderr == ""
    ctl(ledger, "budget", "set", "--default", "--period", "day", "--limit", "1")
    assert ctl(ledger, "budget", "grant", "--user", "zed", "--amount", "1").stderr == ""


# ---- teams --------------------------------------------------------------------

def members(ledger):
    return {t["name"]: t["members"] for t in ctl_json(ledger, "team", "list")}


def test_team_commands(ledger):
    assert ctl(ledger, "team", "list").stdout.startswith("No teams.")
    out = ctl(ledger, "team", "add", "data", "bob", "alice").stdout
    assert out == "Team data created; 2 users added\nTeam data: alice, bob\n"
    out = ctl(ledger, "team", "add", "data", "bob", "carol").stdout
    assert out == "Team data changed; 1 user added\nTeam data: alice, bob, carol\n"
    ctl(ledger, "team", "add", "ops team", "dave")
    assert members(ledger) == {"data": ["alice", "bob", "carol"], "ops team": ["dave"]}
    lines = ctl(ledger, "team", "list").stdout.splitlines()
    assert lines[0].split() == ["TEAM", "USERS", "MEMBERS"]
    assert lines[1].split() == ["data", "3", "alice,", "bob,", "carol"]
    assert lines[2].split() == ["ops", "team", "1", "dave"]
    text = ctl(ledger, "team", "list", "--format", "csv").stdout
    assert list(csv.reader(io.StringIO(text))) == [
        ["team", "user"], ["data", "alice"], ["data", "bob"], ["data", "carol"],
        ["ops team", "dave"]]

    out = ctl(ledger, "team", "rm", "data", "carol", "alice").stdout
    assert out == "Team data: 2 users removed\nTeam data: bob\n"
    assert members(ledger)["data"] == ["bob"]
    assert ctl(ledger, "team", "rm", "data").stdout == "Team data removed\n"
    assert members(ledger) == {"ops team": ["dave"]}
    assert sql(ledger, "SELECT count(*) FROM team_members") == [(1,)]


def test_team_membership_moves_team_spend(ledger):
    insert_queries(ledger, [("2031-05-14 09:00:00", "alice", "dw", "psql", 1 * US),
                            ("2031-05-14 09:00:00", "bob", "dw", "psql", 2 * US)])
    ctl(ledger, "budget", "set", "--team", "data", "--period", "day", "--limit", "10")
    assert ctl_json(ledger, "budget", "list")[0]["spent_micro"] == 0
    ctl(ledger, "team", "add", "data", "alice")
    assert ctl_json(ledger, "budget", "list")[0]["spent_micro"] == 1 * US
    ctl(ledger, "team", "add", "data", "bob")
    assert ctl_json(ledger, "budget", "list")[0]["spent_micro"] == 3 * US
    ctl(ledger, "team", "rm", "data", "alice")
    assert ctl_json(ledger, "budget", "list")[0]["spent_micro"] == 2 * US


# ---- settings version -----------------------------------------------------------

def test_every_change_bumps_the_settings_version(ledger):
    assert version(ledger) == 0
    changes = [
        ["budget", "set", "--user", "a", "--period", "day", "--limit", "1"],
        ["budget", "set", "--user", "a", "--period", "day", "--limit", "2"],
        ["budget", "set", "--default", "--period", "week", "--limit", "3"],
        ["budget", "grant", "--user", "a", "--amount", "1"],
        ["team", "add", "t", "u1"],
        ["team", "add", "t", "u2"],
        ["team", "rm", "t", "u1"],
        ["team", "rm", "t"],
        ["budget", "rm", "2"],
    ]
    last = version(ledger)
    for args in changes:
        ctl(ledger, *args)
        now = version(ledger)
        assert now > last, args
        last = now
    # Reading, and refused changes, leave it alone.
    for args, rc in ((["budget", "list"], 0), (["team", "list"], 0), (["usage"], 0),
                     (["budget", "rm", "2"], 1), (["team", "rm", "t"], 1),
                     (["budget", "set", "--user", "a", "--period", "day"], 2)):
        ctl(ledger, *args, rc=rc)
        assert version(ledger) == last, args


# ---- usage ----------------------------------------------------------------------

# (UTC time, user, database, application, cost): "today" is Wednesday
# 2031-05-14; its week started on Monday the 12th.
ROWS = [
    ("2031-05-14 08:00:00", "alice", "shop", "psql", 5_000_000),
    ("2031-05-14 11:00:00", "alice", "dw", "etl", 2_200_000),
    ("2031-05-14 09:00:00", "carol", "dw", "psql", 1_000_000),
    ("2031-05-14 07:00:00", "dave", "dw", "psql", 300_000),
    ("2031-05-13 10:00:00", "alice", "shop", "etl", 3_000_000),
    ("2031-05-12 00:00:00", "carol", "shop", "psql", 500_000),
    ("2031-05-11 23:59:59", "carol", "shop", "psql", 100_000_000),
    ("2031-05-01 00:00:00", "bob", "shop", "etl", 4_000_000),
    ("2031-04-30 23:59:59", "bob", "shop", "etl", 50_000_000),
    ("2031-06-01 00:00:00", "alice", "shop", "psql", 9_000_000),  # next month
]
BOUNDS = {"day": ("2031-05-14 00:00:00", "2031-05-15 00:00:00"),
          "week": ("2031-05-12 00:00:00", "2031-05-19 00:00:00"),
          "month": ("2031-05-01 00:00:00", "2031-06-01 00:00:00")}


def spent(period, match):
    lo, hi = (us(t) for t in BOUNDS[period])
    return sum(cost for t, user, dbname, app, cost in ROWS
               if lo <= us(t) < hi and match(user, dbname, app))


@pytest.fixture
def busy_ledger(ledger):
    insert_queries(ledger, ROWS)
    sql(ledger, "INSERT INTO role_members VALUES ('analysts', 'dave', 1), ('analysts', 'bob', 1)")
    ctl(ledger, "team", "add", "data", "alice", "carol")
    for args in (["--user", "alice", "--period", "day", "--limit", "10"],
                 ["--team", "data", "--period", "week", "--limit", "20"],
                 ["--application", "etl", "--period", "month", "--limit", "50"],
                 ["--database", "dw", "--period", "day", "--limit", "5"],
                 ["--role", "analysts", "--period", "day", "--limit", "1"],
                 ["--default", "--period", "month", "--limit", "200"],
                 ["--user", "bob", "--period", "month", "--limit", "10"]):
        ctl(ledger, "budget", "set", *args)
    return ledger


def expected_lines():
    """(id, subject, user, period, spent, limit) in the order usage lists them."""
    team = ("alice", "carol")
    default_users = ("alice", "carol", "dave")  # bob has a month budget of his own
    default = sorted(((u, spent("month", lambda user, d, a, u=u: user == u))
                      for u in default_users), key=lambda x: -x[1])
    return ([(1, "alice", None, "day", spent("day", lambda u, d, a: u == "alice"), 10),
             (2, "data", None, "week", spent("week", lambda u, d, a: u in team), 20),
             (3, "etl", None, "month", spent("month", lambda u, d, a: a == "etl"), 50),
             (4, "dw", None, "day", spent("day", lambda u, d, a: d == "dw"), 5),
             (5, "analysts", None, "day", spent("day", lambda u, d, a: u in ("dave", "bob")), 1)]
            + [(6, "", user, "month", cost, 200) for user, cost in default]
            + [(7, "bob", None, "month", spent("month", lambda u, d, a: u == "bob"), 10)])


def test_usage_json_has_budget_spend(busy_ledger):
    doc = ctl_json(busy_ledger, "usage")
    assert doc["label"] == "2031-05-14" and doc["timezone"] == "UTC"
    assert doc["total"]["cost_micro"] == spent("day", lambda u, d, a: True)
    got = [(b["id"], b["subject"], b["user"], b["period"], b["spent_micro"],
            b["effective_limit_micro"] // US) for b in doc["budgets"]]
    assert got == expected_lines()
    for b, (_, _, _, _, cost, limit) in zip(doc["budgets"], expected_lines()):
        assert b["percent"] == pytest.approx(cost * 100 / (limit * US), abs=0.051)  # rounded
    first = doc["budgets"][0]
    assert first["spent_micro"] == 7_200_000 and first["percent"] == 72.0
    assert first["resets"] == "2031-05-15T00:00:00.000000+00:00"
    assert first["period_start"] == "2031-05-14T00:00:00.000000+00:00"


def test_usage_table_has_budget_bars(busy_ledger):
    out = ctl(busy_ledger, "usage").stdout
    usage, _, section = out.partition("\nBudgets, current periods (UTC)\n\n")
    assert usage.splitlines()[0] == "Usage by user, day 2031-05-14 (UTC)"
    assert usage.splitlines()[-1].split()[:2] == ["TOTAL", "4"]
    lines = section.splitlines()
    assert lines[0].split() == ["ID", "SUBJECT", "PERIOD", "SPENT", "LIMIT", "USED", "RESETS"]
    assert len(lines) == 1 + len(expected_lines())
    assert lines[1].split() == ["1", "user", "alice", "day", "7.20", "USD", "10.00", "USD",
                                "[#######---]", "72%", "2031-05-15", "00:00:00"]
    assert "team data" in lines[2] and "11.70 USD" in lines[2] and "[#####-----]  58%" in lines[2]
    assert "default: carol" in lines[6] and "101.50 USD" in lines[6] and "50%" in lines[6]
    assert "user bob" in lines[9] and "[####------]  40%" in lines[9]
    # The bars and percents line up.
    assert len({line.index("[") for line in lines[1:]}) == 1
    assert len({line.index("%") for line in lines[1:]}) == 1


def test_usage_over_the_limit_and_without_budgets(ledger):
    assert "Budgets" not in ctl(ledger, "usage").stdout
    assert ctl_json(ledger, "usage")["budgets"] == []
    insert_queries(ledger, [("2031-05-14 09:00:00", "eve", "dw", "psql", 13 * US)])
    ctl(ledger, "budget", "set", "--user", "eve", "--period", "day", "--limit", "10")
    out = ctl(ledger, "usage").stdout
    assert "No statements" not in out
    assert "[##########]  130%" in out


def test_periods_follow_the_configured_timezone(ledger, tmp_path):
    ini = tmp_path / "pgtally.ini"
    ini.write_text("[pgtally]\nledger = %s\ntimezone = Europe/Berlin\n" % ledger)
    # 23:30 UTC on the 13th is already the 14th in Berlin (CEST, +02:00).
    insert_queries(ledger, [("2031-05-13 21:59:59", "alice", "dw", "psql", 1 * US),
                            ("2031-05-13 22:00:00", "alice", "dw", "psql", 2 * US),
                            ("2031-05-14 21:59:59", "alice", "dw", "psql", 4 * US),
                            ("2031-05-14 22:00:00", "alice", "dw", "psql", 8 * US)],
                   tz="Europe/Berlin")
    out = ctl(ledger, "budget", "set", "--user", "alice", "--period", "day", "--limit", "10",
              config=ini, tz="UTC").stdout
    assert "resets 2031-05-15 00:00:00 Europe/Berlin" in out
    b = ctl_json(ledger, "budget", "list", config=ini)[0]
    assert b["spent_micro"] == 6 * US
    assert b["period_start"] == "2031-05-14T00:00:00.000000+02:00"
    assert b["resets"] == "2031-05-15T00:00:00.000000+02:00"
    doc = ctl_json(ledger, "usage", config=ini)
    assert doc["timezone"] == "Europe/Berlin" and doc["total"]["cost_micro"] == 6 * US
    assert doc["from"] == "2031-05-13T22:00:00.000000Z"
    # --date is a Berlin date too; the config wins over $TZ.
    doc = ctl_json(ledger, "usage", "--date", "2031-05-13", config=ini, tz="America/New_York")
    assert doc["total"]["cost_micro"] == 1 * US
    assert "Usage by user, day 2031-05-14 (Europe/Berlin)" in ctl(ledger, "usage",
                                                                 config=ini).stdout
    # A grant until a local time: 18:00 in Berlin is 16:00 UTC.
    ctl(ledger, "budget", "grant", "--user", "alice", "--amount", "1", "--until",
        "2031-05-14 18:00", config=ini)
    assert sql(ledger, "SELECT until_us FROM budget_grants") == [(us("2031-05-14 16:00:00"),)]


def test_help():
    for args in (["budget", "--help"], ["budget", "set", "--help"], ["budget", "list", "-h"],
                 ["team", "--help"], ["team", "add", "--help"]):
        p = run_pgtallyctl(args)
        assert p.returncode == 0 and p.stdout.startswith("usage: pgtallyctl"), args
    assert "--per-query" in run_pgtallyctl(["budget", "--help"]).stdout
    top = run_pgtallyctl(["--help"]).stdout
    assert "budget" in top and "team" in top


# ---- with a running pgtally ---------------------------------------------------

@pytest.mark.timeout(60)
def test_budgets_beside_a_running_pgtally(pgtally):
    """Budget changes go into the ledger pgtally writes, while it runs, and
    the listed spend is what pgtally metered."""
    proxy = pgtally(**{"pricing.per_query": "0.01"})
    path = proxy.workdir / "pgtally.db"
    with proxy.connect() as c:
        user = c.execute("SELECT current_user").fetchone()[0]
        for i in range(5):
            c.execute("SELECT %s", (i,))
    wait_until(lambda: path.exists() and sql(path, 'SELECT count(*) FROM queries WHERE '
                                                  '"user" = ?', (user,))[0][0] >= 5,
               10, what="5 statements in the ledger")
    p = run_pgtallyctl(["-c", proxy.config_path, "budget", "set", "--user", user, "--period",
                        "day", "--limit", "1000"])
    assert p.returncode == 0, p.stderr
    assert version(path) == 1
    p = run_pgtallyctl(["-c", proxy.config_path, "budget", "list", "--format", "json"])
    assert p.returncode == 0, p.stderr
    b = json.loads(p.stdout)[0]
    total = sql(path, 'SELECT sum(cost_micro) FROM queries WHERE "user" = ? AND started_at >= ? '
                      "AND started_at < ?", (user, us(b["period_start"][:19].replace("T", " ")),
                                             b["resets_us"]))[0][0]
    assert b["spent_micro"] == total and total >= 5 * 10_000
    with proxy.connect() as c:  # pgtally still serves, and still meters
        assert c.execute("SELECT 1").fetchone() == (1,)
    wait_until(lambda: sql(path, 'SELECT count(*) FROM queries WHERE "user" = ?',
                           (user,))[0][0] >= 6, 10, what="the 6th statement in the ledger")
