"""Regressions per release and work done twice, against a real PostgreSQL
through pgtally, on the test run's ledger (SQLite, or PostgreSQL under
PGTALLY_TEST_LEDGER=postgresql).

Prices are per byte sent (1 micro-unit a byte, nothing for compute or per
statement), so that a statement's cost is what it returns and the same
statement always costs the same. Shapes run under two releases named by
sqlcommenter comments (/*release='v1'*/): one returns ten times more
under v2 (a regression), one a third more (a ratio under 2), one ten
times more but stays below [report] regression_min_cost, and one's
releases are named by git_sha before version. Every figure that the daily
report, `pgtallyctl regressions` and the console's SHOW REGRESSIONS show is
checked against means computed here from the ledger's rows. A lookup run
four times from two applications with the same constants is work done
twice; one run three times is not; its literal is nowhere in the ledger
nor in the report.
"""

import csv
import io
import json

import psycopg
import pytest

from helpers import SANITIZER_MARKERS, ledger_query, run_pgtallyctl, run_psql
from test_console import ADMIN, console, header, rows, users  # noqa: F401 (fixture)
from test_metering import ledger_file, wait_ledger
from test_report import SCHEMA, check

USER = "trust_user"
PRICES = {"pricing.per_query": "0", "pricing.per_compute_second": "0",
          "pricing.per_gib_returned": "1073.741824",  # 1 micro-unit a byte
          "estimate.mode": "off", "budget.notice_above": "0",
          "report.regression_min_cost": "0.001", "report.duplicate_min_runs": "3",
          "admin.admin_users": ADMIN}
# The shapes: each of another parse tree (an alias alone does not make
# one), {n} the length it returns, {c} its comment; found in the ledger by
# the alias in their normalized text.
REGRESSED = "SELECT repeat('r', {n}) AS regressed {c}"
FLAT = "SELECT repeat('f', {n}) AS flat, 1 AS one {c}"
CHEAP = "SELECT lower(repeat('c', {n})) AS cheap {c}"
BY_SHA = "SELECT lpad(repeat('s', {n}), {n}) AS by_sha {c}"
ONE_RELEASE = "SELECT rpad(repeat('o', {n}), {n}) AS one_release {c}"
# (text, comment, length, runs), in the order they run
WORK = [
    (REGRESSED, "/*release='v1'*/", 200, 3), (REGRESSED, "/*release='v2'*/", 2000, 2),
    (FLAT, "/*release='v1'*/", 1500, 2), (FLAT, "/*release='v2'*/", 2000, 2),
    (CHEAP, "/*release='v1'*/", 20, 2), (CHEAP, "/*release='v2'*/", 200, 2),
    (BY_SHA, "/*version='1.0'*/", 300, 2), (BY_SHA, "/*git_sha='f00d',version='1.0'*/", 1500, 1),
    (ONE_RELEASE, "/*release='v2'*/", 5000, 2),
]
SECRET = "hunter7-dup"
DUP = "SELECT upper(repeat('d', 500)) AS dup, '%s' AS secret" % SECRET
THRICE = "SELECT initcap(repeat('t', 500)) AS thrice"


@pytest.fixture(scope="module")
def proxy(pgtally_module, users):  # noqa: F811 (the console's roles)
    p = pgtally_module(**PRICES)
    for text, comment, n, runs in WORK:
        r = run_psql(p.dsn(user=USER), *[text.format(n=n, c=comment)] * runs)
        assert r.returncode == 0, r.stderr
    # Work done twice: the lookup twice from psql and twice from a dashboard
    # (four runs, two applications); the other one three times only.
    r = run_psql(p.dsn(user=USER), DUP, DUP, THRICE, THRICE)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(p.dsn(user=USER), autocommit=True, application_name="dash") as c:
        c.execute(DUP).fetchall()
        c.execute(DUP).fetchall()
        c.execute(THRICE).fetchall()
    total = sum(w[3] for w in WORK) + 7
    wait_ledger(p, total, "normalized LIKE '%%repeat%%'")
    return p


def rows_of(proxy, alias):
    return [r for r in ledger_query(ledger_file(proxy), "SELECT * FROM queries", dicts=True)
            if " AS %s" % alias in (r["normalized"] or "")]


def release_of(row):
    tags = json.loads(row["tags"])
    return next(tags[k] for k in ("release", "git_sha", "version") if tags.get(k))


def truth(proxy, alias):
    """(fingerprint, {release: (runs, mean cost)}) from the ledger's rows."""
    recs = rows_of(proxy, alias)
    assert len({r["fingerprint"] for r in recs}) == 1, recs
    by = {}
    for r in recs:
        by.setdefault(release_of(r), []).append(r["cost_micro"])
    return "%016x" % (recs[0]["fingerprint"] & 0xFFFFFFFFFFFFFFFF), \
        {k: (len(v), sum(v) / len(v)) for k, v in by.items()}


def short_money(micro):
    """pgt_money_format_short of an amount under a cent: two significant
    digits, "0.0021"."""
    assert 0 < micro < 10000
    div = 1
    while micro // div >= 100:
        div *= 10
    m = (micro + div // 2) // div * div
    return ("0.%06d" % m).rstrip("0")


def ctl(proxy, *args, rc=0):
    p = run_pgtallyctl(["-c", proxy.config_path] + list(args))
    assert p.returncode == rc, (args, p.stdout, p.stderr)
    assert not [m for m in SANITIZER_MARKERS if m in p.stderr], p.stderr
    return p


def report(proxy, fmt, *args):
    return ctl(proxy, "report", "--date", "today", "--format", fmt, *args).stdout


@pytest.fixture(scope="module")
def doc(proxy):
    return json.loads(report(proxy, "json"))


def check_regression(item, proxy, alias, new, old):
    fp, t = truth(proxy, alias)
    (n_new, mean_new), (n_old, mean_old) = t[new], t[old]
    assert item["fingerprint"] == fp and " AS %s" % alias in item["normalized"]
    assert (item["release"], item["previous_release"]) == (new, old)
    assert (item["statements"], item["previous_statements"]) == (n_new, n_old)
    assert item["mean_cost_micro"] == round(mean_new), (item, t)
    assert item["previous_mean_cost_micro"] == round(mean_old), (item, t)
    assert item["ratio"] == pytest.approx(mean_new / mean_old, abs=0.006)


def test_the_report_matches_the_documented_schema(doc):
    assert doc["regressions"]["items"] and doc["repeats"]["items"]
    assert check(doc, SCHEMA) == []


def test_the_report_lists_the_regressions_with_their_means(proxy, doc):
    reg = doc["regressions"]
    assert reg["days"] == 7 and reg["min_mean_cost_micro"] == 1000
    items = reg["items"]
    assert [i["release"] for i in items] == ["v2", "f00d"], items
    check_regression(items[0], proxy, "regressed", "v2", "v1")
    check_regression(items[1], proxy, "by_sha", "f00d", "1.0")
    assert items[0]["ratio"] > items[1]["ratio"] > 2 and items[0]["rank"] == 1
    assert items[0]["kind"] == "select"


def test_no_regression_under_twice_nor_below_the_floor(proxy, doc):
    listed = {i["fingerprint"] for i in doc["regressions"]["items"]}
    _, flat = truth(proxy, "flat")
    assert 1 < flat["v2"][1] / flat["v1"][1] < 2  # dearer, but not twice
    _, cheap = truth(proxy, "cheap")
    assert cheap["v2"][1] / cheap["v1"][1] > 2 and cheap["v2"][1] < 1000  # below 0.001
    for alias in ("flat", "cheap", "one_release"):
        assert truth(proxy, alias)[0] not in listed, alias


def test_a_lower_floor_lists_the_cheap_shape(proxy, tmp_path):
    cfg = tmp_path / "low.ini"
    cfg.write_text(open(proxy.config_path).read().replace(
        "regression_min_cost = 0.001", "regression_min_cost = 0"))
    assert "regression_min_cost = 0\n" in cfg.read_text()
    p = run_pgtallyctl(["-c", cfg, "--ledger", ledger_file(proxy), "regressions", "--format",
                        "json"])
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [r["release"] for r in out["regressions"]].count("v2") == 2, out


def test_the_report_lists_work_done_twice_by_hash(proxy, doc):
    rep = doc["repeats"]
    assert rep["min_runs"] == 3
    assert len(rep["items"]) == 1, rep["items"]
    item = rep["items"][0]
    recs = rows_of(proxy, "dup")
    assert len(recs) == 4 and len({r["constants"] for r in recs}) == 1
    assert item["fingerprint"] == "%016x" % (recs[0]["fingerprint"] & 0xFFFFFFFFFFFFFFFF)
    assert item["constants"] == "%016x" % (recs[0]["constants"] & 0xFFFFFFFFFFFFFFFF)
    assert (item["runs"], item["users"], item["applications"]) == (4, 1, 2)
    assert item["who"] == USER
    costs = sorted(r["cost_micro"] for r in recs)
    assert item["cost_micro"] == sum(costs) and item["saved_micro"] == sum(costs[1:])
    assert rep["saved_micro"] == item["saved_micro"]
    # The statement with its literal is nowhere: in no column of any table
    # of the ledger, nor in any format of the report.
    ledger = ledger_file(proxy)
    tables = ledger_query(ledger, "SELECT table_name FROM information_schema.tables WHERE "
                          "table_schema = 'pgtally'" if str(ledger).startswith("postgresql:")
                          else "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert {"queries", "shapes", "rollups"} <= {t[0] for t in tables}, tables
    for (table,) in tables:
        rows = ledger_query(ledger, 'SELECT * FROM "%s"' % table, dicts=True)
        assert SECRET not in json.dumps(rows, default=str), table
    assert "dup" in json.dumps(recs) and SECRET not in json.dumps(recs, default=str)
    for fmt in ("json", "text", "markdown", "html", "csv", "slack"):
        assert SECRET not in report(proxy, fmt), fmt


def test_text_report_shows_both_sections(proxy, doc):
    text = report(proxy, "text")
    reg, rep = doc["regressions"]["items"][0], doc["repeats"]["items"][0]
    assert "\nRegressions per release, %s to %s: shapes at least twice as dear under their " \
           "newest release, mean above 0.001 USD\n" % (doc["regressions"]["since"],
                                                        doc["date"]) in text
    line = next(l for l in text.splitlines() if reg["fingerprint"] in l and "v2" in l)
    assert line.split()[:3] == ["1", "%.2fx" % reg["ratio"], "v2"], line
    cells = line.split()
    assert cells[3:9] == [short_money(reg["mean_cost_micro"]), "USD", "2", "v1",
                          short_money(reg["previous_mean_cost_micro"]), "USD"], line
    assert cells[9] == "3", line
    assert "\nWork done twice: the same statement with the same constants run more than 3 " \
           "times by several users or applications\n" in text
    line = next(l for l in text.splitlines() if rep["constants"] in l)
    assert line.split()[:6] == ["1", rep["fingerprint"], rep["constants"], "4", "1", "2"], line
    assert "A cached or materialized result would have saved" in text
    assert text.index("Regressions per release") < text.index("Work done twice")


def test_every_format_has_both_sections(proxy, doc):
    reg, rep = doc["regressions"]["items"][0], doc["repeats"]["items"][0]
    md = report(proxy, "markdown")
    assert "## Regressions per release" in md and "## Work done twice" in md
    assert "| 1 | %.2fx | v2 |" % reg["ratio"] in md
    html = report(proxy, "html")
    assert 'id="regressions"' in html and 'id="repeats"' in html and ">v2</td>" in html
    slack = json.loads(report(proxy, "slack"))
    texts = "\n".join(b["text"]["text"] for b in slack["blocks"] if b["type"] == "section")
    assert "*Regressions per release" in texts and "*Work done twice" in texts
    assert "`v2` mean" in texts and "A cached or materialized result" in texts
    regs = list(csv.DictReader(io.StringIO(report(proxy, "csv", "--section", "regressions"))))
    assert [(r["release"], r["previous_release"], int(r["statements"])) for r in regs] == \
        [("v2", "v1", 2), ("f00d", "1.0", 1)]
    reps = list(csv.DictReader(io.StringIO(report(proxy, "csv", "--section", "repeats"))))
    assert [(r["constants"], r["runs"], r["who"]) for r in reps] == [(rep["constants"], "4",
                                                                      USER)]


def test_a_day_without_either_renders_no_section(proxy):
    day = json.loads(ctl(proxy, "report", "--date", "2001-01-01", "--format", "json").stdout)
    assert day["regressions"]["items"] == [] and day["repeats"]["items"] == []
    text = ctl(proxy, "report", "--date", "2001-01-01").stdout
    assert "Regressions per release" not in text and "Work done twice" not in text


def test_pgtallyctl_regressions(proxy, doc):
    out = json.loads(ctl(proxy, "regressions", "--format", "json").stdout)
    assert out["days"] == 7 and out["min_mean_cost_micro"] == 1000
    assert out["date"] == doc["date"] and out["since"] == doc["regressions"]["since"]
    fields = ("fingerprint", "release", "previous_release", "statements", "previous_statements",
              "mean_cost_micro", "previous_mean_cost_micro", "ratio", "normalized")
    assert [{k: r[k] for k in fields} for r in out["regressions"]] == \
        [{k: i[k] for k in fields} for i in doc["regressions"]["items"]]
    table = ctl(proxy, "regressions").stdout
    assert table.startswith("Regressions per release, ")
    line = next(l for l in table.splitlines() if l.startswith(out["regressions"][0]["fingerprint"]))
    assert line.split()[1:3] == ["%.2fx" % out["regressions"][0]["ratio"], "v2"], line
    lines = ctl(proxy, "regressions", "--format", "csv").stdout.splitlines()
    assert lines[0].startswith("fingerprint,ratio,release,first_seen,statements,mean_cost,")
    assert len(lines) == 3 and ",v2," in lines[1] and ",f00d," in lines[2]
    old = ctl(proxy, "regressions", "--date", "2001-01-01").stdout
    assert old.endswith("\nNone.\n")
    bad = ctl(proxy, "regressions", "--date", "yesterday", rc=2)
    assert "bad --date 'yesterday'" in bad.stderr


def test_console_show_repeats_and_regressions(proxy, doc):
    assert header(proxy, "SHOW REGRESSIONS") == [
        "fingerprint", "ratio", "release", "mean_cost", "statements", "previous_release",
        "previous_mean_cost", "previous_statements", "query"]
    got = rows(console(proxy, ADMIN, "SHOW REGRESSIONS"))
    want = [[i["fingerprint"], "%.2f" % i["ratio"], i["release"], i["mean_cost"] + " USD",
             str(i["statements"]), i["previous_release"], i["previous_mean_cost"] + " USD",
             str(i["previous_statements"]), i["normalized"]]
            for i in doc["regressions"]["items"]]
    assert got == want
    assert header(proxy, "SHOW REPEATS")[:3] == ["fingerprint", "constants", "runs"]
    rep = doc["repeats"]["items"][0]
    got = rows(console(proxy, ADMIN, "SHOW REPEATS"))
    assert got == [[rep["fingerprint"], rep["constants"], "4", "1", "2", rep["cost"] + " USD",
                    rep["saved"] + " USD", USER, rep["normalized"]]]
    r = console(proxy, ADMIN, "SHOW REPEAT")
    assert r.returncode != 0 and "SHOW REPEATS; SHOW REGRESSIONS" in r.stderr, r.stderr
