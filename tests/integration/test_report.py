"""The daily report (pgtallyctl report): content, renderers and delivery by hand.

A module fixture fills one ledger through real pgtally processes and a real
PostgreSQL: twelve users run thirteen query shapes (pg_sleep of different
lengths, priced per compute second plus a flat price per statement) on
2031-05-14, some of them also on the day before (a second pgtally whose
clock PGTALLY_CLOCK_OFFSET moves back a day), one user hits a day budget and
is refused, one statement carries sqlcommenter tags. The six days before
that are inserted with sqlite3, with the rollups the ledger's writer would
keep for them. Every figure of `pgtallyctl report --format
json` is then checked against ground truth computed here from the ledger's
rows, and every renderer is checked for what its consumer needs: the JSON
schema of docs/report.md, HTML that parses without scripts or images,
CSV that round-trips, a Slack payload within Block Kit's limits even for
huge statements and many users, and Markdown and text that show the top.
"""

import csv
import io
import json
import math
import shutil
import sqlite3
import threading
import time
from calendar import timegm
from decimal import ROUND_HALF_UP, Decimal
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from helpers import SANITIZER_MARKERS, SLOW, run_pgtallyctl, write_ini
from test_metering import stop

US = 1_000_000
DAY = 86400 * US
DATE = "2031-05-14"  # a Wednesday
PREV_DATE = "2031-05-13"
USAGE = "usage: pgtallyctl"
PRICING = {"pricing.per_query": "0.01", "pricing.per_compute_second": "1",
           "pricing.per_gib_returned": "0", "budget.notice_above": "0", "estimate.mode": "off"}
USERS = ["rep_%02d" % i for i in range(12)]
REFUSED_USER = "rep_11"
# Thirteen shapes: different parse trees, each sleeping for its parameter.
SHAPES = [
    "SELECT pg_sleep(%s)",
    "SELECT pg_sleep(%s), 1 + 1",
    "SELECT pg_sleep(%s), now()",
    "SELECT pg_sleep(%s), current_user",
    "SELECT pg_sleep(%s), version()",
    "SELECT pg_sleep(%s), pi()",
    "SELECT pg_sleep(%s), upper('x')",
    "SELECT pg_sleep(%s), 2 * 3, 4",
    "SELECT pg_sleep(%s) FROM generate_series(1, 1)",
    "SELECT pg_sleep(%s) WHERE true",
    "SELECT pg_sleep(%s), lower('Y'), 'z'",
    "SELECT pg_sleep(%s), length('abc')",
    "SELECT count(*) FROM (SELECT pg_sleep(%s)) s",
]


def us(text):
    """Unix microseconds of a UTC time 'YYYY-MM-DD HH:MM:SS'."""
    return timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")) * US


D0 = us(DATE + " 00:00:00")


def clock_env(at_us):
    """The environment that moves pgtally's (or pgtallyctl's) clock to at_us."""
    return {"PGTALLY_CLOCK_OFFSET": "%.6f" % (at_us / US - time.time())}


def fp_hex(v):
    return "%016x" % (v & 0xFFFFFFFFFFFFFFFF)


def round_half_up(x):
    return int(Decimal(x).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def short_money(micro, currency="USD"):
    """pgt_pricing_format_short for amounts of at least 0.01."""
    assert micro >= 10000
    return "%s %s" % (Decimal(micro / 1e6).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP),
                      currency)


# ---------------------------------------------------------------------------
# The ledger, filled through pgtally
# ---------------------------------------------------------------------------

def day_work():
    """(user, shape, seconds) of the report day: every user, every shape,
    sleeps of 1 to 40 ms spread so that costs differ."""
    work = []
    for i in range(52):
        user = USERS[i % 11]  # REFUSED_USER runs its own statements
        shape = SHAPES[(i * 5) % len(SHAPES)]
        work.append((user, shape, 0.001 * ((i * 37) % 40 + 1)))
    return work


def prev_work():
    """The day before: eight of the users, less."""
    return [(USERS[i % 8], SHAPES[i % 4], 0.001 * (i % 7 + 1)) for i in range(16)]


def run_work(proxy, work):
    conns = {}
    try:
        for user, shape, seconds in work:
            if user not in conns:
                conns[user] = psycopg.connect(proxy.dsn(user=user), autocommit=True)
            conns[user].execute(shape, (seconds,)).fetchall()
    finally:
        for c in conns.values():
            c.close()


def wait_budgets_loaded(proxy):
    con = sqlite3.connect(proxy.config["ledger"])
    version = con.execute("SELECT version FROM settings_version").fetchone()[0]
    con.close()
    proxy.wait_log(r"event=budgets_loaded .*version=%d\b" % version, timeout=3 * SLOW)


def refused_work(proxy):
    """REFUSED_USER has a day budget of 0.005: the first statement runs,
    then statements are refused (53400). Returns how many were refused."""
    p = run_pgtallyctl(["-c", proxy.config_path, "budget", "set", "--user", REFUSED_USER,
                        "--period", "day", "--limit", "0.005", "--warn", "50"])
    assert p.returncode == 0, p
    wait_budgets_loaded(proxy)
    refused = 0
    with psycopg.connect(proxy.dsn(user=REFUSED_USER), autocommit=True) as c:
        c.execute("SELECT pg_sleep(%s)", (0.002,))
        for _ in range(3):
            try:
                c.execute("SELECT pg_sleep(%s), 'again'", (0.001,))
            except psycopg.errors.ConfigurationLimitExceeded:
                refused += 1
    return refused


TEST_INSTANCE = 99  # the instance of the statements the tests insert themselves

COLUMNS = ("started_at", "finished_at", "user", "database", "application", "tags", "fingerprint",
           "normalized", "kind", "compute_s", "rows", "bytes_out", "cost_micro", "status",
           "budget_id")


def insert_statements(path, rows):
    """Inserts statements (dicts of queries columns) as the ledger's writer
    of instance TEST_INSTANCE would: with their seq and their day (UTC, the
    tests' zone), then the rollups, spend and shapes that go with them (as
    the migration to schema 5 makes them from rows)."""
    db = sqlite3.connect(str(path))
    first = db.execute("SELECT coalesce(max(seq), 0) FROM queries WHERE instance = ?",
                       (TEST_INSTANCE,)).fetchone()[0]
    db.executemany(
        "INSERT INTO queries (%s, instance, seq, day) VALUES (%s, ?, ?, ?)" % (
            ", ".join('"%s"' % c for c in COLUMNS), ", ".join("?" * len(COLUMNS))),
        [tuple(r.get(c) for c in COLUMNS) + (TEST_INSTANCE, first + i + 1, r["started_at"] // DAY)
         for i, r in enumerate(rows)])
    db.execute("DELETE FROM rollups WHERE instance = ?", (TEST_INSTANCE,))
    db.execute("DELETE FROM spend WHERE instance = ?", (TEST_INSTANCE,))
    db.execute(
        'INSERT INTO rollups SELECT day, instance, "user", database, application, '
        "coalesce(fingerprint, 0), status, count(*), total(compute_s), sum(rows), "
        "sum(bytes_out), sum(cost_micro), max(cost_micro), 0 FROM queries WHERE instance = ? "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7", (TEST_INSTANCE,))
    db.execute(
        'INSERT INTO spend SELECT instance, day, "user", database, application, '
        "sum(cost_micro), 0 FROM queries WHERE instance = ? GROUP BY 1, 2, 3, 4, 5",
        (TEST_INSTANCE,))
    db.execute(
        "INSERT OR IGNORE INTO shapes SELECT fingerprint, min(normalized), min(kind), min(day) "
        "FROM queries WHERE instance = ? AND fingerprint IS NOT NULL GROUP BY fingerprint",
        (TEST_INSTANCE,))
    db.commit()
    db.close()


def insert_history(path):
    """Six days before the day before: 5 statements a day, costs 1..6 USD."""
    rows = []
    for d in range(2, 8):
        start = D0 - d * DAY + 10 * 3600 * US
        for k in range(5):
            rows.append(dict(zip(COLUMNS, (
                start + k * US, start + k * US + 1000, "hist_user", "pgtally_test", "", None,
                0x1234, "SELECT $1", "select", 0.5, 1, 100, d * 200000, "ok", None))))
    insert_statements(path, rows)


@pytest.fixture(scope="module")
def filled(pg, pgtally_module, tmp_path_factory):
    """A ledger filled through pgtally; returns (ledger path, config path)."""
    with pg.admin() as a:
        for n in USERS:
            a.execute("DROP ROLE IF EXISTS %s" % n)
            a.execute("CREATE ROLE %s LOGIN IN ROLE pgtally_test_users" % n)
    path = tmp_path_factory.mktemp("report") / "ledger.db"
    cfg = dict(PRICING, ledger=str(path))
    prev = pgtally_module(env=clock_env(D0 - DAY + 12 * 3600 * US), **cfg)
    run_work(prev, prev_work())
    stop(prev)
    day = pgtally_module(env=clock_env(D0 + 12 * 3600 * US), **cfg)
    run_work(day, day_work())
    with psycopg.connect(day.dsn(user=USERS[0]), autocommit=True) as c:
        c.execute("SELECT pg_sleep(%s) /*team='growth',dag='daily%%7Crollup'*/", (0.080,))
    refused = refused_work(day)
    assert refused >= 1
    stop(day)
    insert_history(path)
    return path, day.config_path


def ledger_rows(path, since, until):
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(
            "SELECT * FROM queries WHERE started_at >= ? AND started_at < ? ORDER BY id",
            (since, until))]
    finally:
        con.close()


def ctl(args, rc=0, tz="UTC", env=None):
    p = run_pgtallyctl([str(a) for a in args], tz=tz, env=env)
    assert p.returncode == rc, (args, p.returncode, p.stdout, p.stderr)
    assert not [m for m in SANITIZER_MARKERS if m in p.stderr], p.stderr
    return p


def report(filled, *args, **kw):
    path, _ = filled
    return ctl(["--ledger", path, "report", "--date", DATE] + list(args), **kw).stdout


def report_json(filled, *args):
    return json.loads(report(filled, "--format", "json", *args))


@pytest.fixture(scope="module")
def doc(filled):
    return report_json(filled)


@pytest.fixture(scope="module")
def truth(filled):
    path, _ = filled
    rows = ledger_rows(path, D0, D0 + DAY)
    prev = ledger_rows(path, D0 - DAY, D0)
    everything = ledger_rows(path, 0, 2**62)
    return rows, prev, everything


# ---------------------------------------------------------------------------
# The document against the ledger
# ---------------------------------------------------------------------------

def test_fixture_has_what_the_report_needs(truth):
    rows, prev, _ = truth
    assert len({r["user"] for r in rows}) >= 12
    assert len({r["fingerprint"] for r in rows}) > 10
    assert len(rows) > 10 and prev
    assert any(r["status"] == "refused" and r["budget_id"] for r in rows)
    assert any(r["tags"] for r in rows)


def test_totals_previous_day_and_mean(doc, truth):
    rows, prev, everything = truth
    t = doc["totals"]
    assert doc["date"] == DATE and doc["timezone"] == "UTC" and doc["currency"] == "USD"
    assert doc["from"] == DATE + "T00:00:00.000000+00:00"
    assert doc["from_us"] == D0 and doc["to_us"] == D0 + DAY
    assert t["statements"] == len(rows)
    assert t["cost_micro"] == sum(r["cost_micro"] for r in rows)
    assert math.isclose(t["compute_s"], sum(r["compute_s"] for r in rows), rel_tol=1e-9)
    assert t["users"] == len({r["user"] for r in rows})
    for status in ("ok", "error", "cancelled", "budget_cancelled", "refused"):
        assert t["by_status"][status] == sum(r["status"] == status for r in rows)
    p = t["previous_day"]
    assert p["date"] == PREV_DATE and p["statements"] == len(prev)
    assert p["cost_micro"] == sum(r["cost_micro"] for r in prev)
    before = p["cost_micro"]
    assert t["change_vs_previous_day"]["cost_pct"] == pytest.approx(
        (t["cost_micro"] - before) * 100 / before, abs=0.051)
    # the mean of the 7 days before: the ledger covers all of them
    first = min(r["started_at"] for r in everything)
    days = [(D0 - (d + 1) * DAY, D0 - d * DAY) for d in range(7)]
    covered = [(a, b) for a, b in days if b > first]
    cost = sum(r["cost_micro"] for r in everything
               for a, b in covered if a <= r["started_at"] < b)
    n = sum(1 for r in everything for a, b in covered if a <= r["started_at"] < b)
    m = t["mean_7d"]
    assert m["days"] == len(covered) == 7
    assert m["cost_micro"] == round_half_up(Decimal(cost) / len(covered))
    assert m["statements"] == pytest.approx(n / len(covered))
    assert t["change_vs_mean_7d"]["cost_pct"] == pytest.approx(
        (t["cost_micro"] - cost / 7) * 100 / (cost / 7), abs=0.051)


def test_top_statements(doc, truth):
    rows, _, _ = truth
    want = sorted(rows, key=lambda r: (-r["cost_micro"], r["started_at"]))[:10]
    got = doc["statements"]
    assert [s["id"] for s in got] == [r["seq"] for r in want]
    for s, r in zip(got, want):
        assert s["cost_micro"] == r["cost_micro"] and s["user"] == r["user"]
        assert s["normalized"] == r["normalized"] and s["fingerprint"] == fp_hex(r["fingerprint"])
        assert s["started_us"] == r["started_at"]
        assert s["duration_s"] == pytest.approx((r["finished_at"] - r["started_at"]) / US)
        assert s["rows"] == r["rows"] and s["database"] == r["database"]
        assert s["tags"] == (json.loads(r["tags"]) if r["tags"] else None)
    assert got[0]["tags"] == {"team": "growth", "dag": "daily|rollup"}  # the dearest: 80 ms, twice the longest other sleep


def test_top_users_with_their_shape_and_the_day_before(doc, truth):
    rows, prev, _ = truth
    sums, pairs = {}, {}
    for r in rows:
        s = sums.setdefault(r["user"], [0, 0])
        s[0] += r["cost_micro"]
        s[1] += 1
        k = (r["user"], r["fingerprint"] & 0xFFFFFFFFFFFFFFFF)
        pairs[k] = pairs.get(k, 0) + r["cost_micro"]
    before = {}
    for r in prev:
        before[r["user"]] = before.get(r["user"], 0) + r["cost_micro"]
    want = sorted(sums.items(), key=lambda kv: (-kv[1][0], kv[0]))[:10]
    got = doc["users"]
    assert [u["user"] for u in got] == [name for name, _ in want]
    for u, (name, (cost, n)) in zip(got, want):
        assert u["cost_micro"] == cost and u["statements"] == n
        mine = sorted(((c, fp) for (who, fp), c in pairs.items() if who == name),
                      key=lambda x: (-x[0], x[1]))
        assert u["top_shape"]["fingerprint"] == "%016x" % mine[0][1]
        assert u["top_shape"]["cost_micro"] == mine[0][0]
        assert u["previous_day_cost_micro"] == before.get(name, 0)
        assert u["change_micro"] == cost - before.get(name, 0)
        if before.get(name):
            assert u["change_pct"] == pytest.approx(
                (cost - before[name]) * 100 / before[name], abs=0.051)
        else:
            assert u["change_pct"] is None
    assert any(u["change_pct"] is None for u in got)  # users new that day
    assert any(u["change_pct"] is not None for u in got)


def test_top_shapes(doc, truth):
    rows, _, _ = truth
    shapes = {}
    for r in rows:
        s = shapes.setdefault(r["fingerprint"] & 0xFFFFFFFFFFFFFFFF,
                              {"n": 0, "cost": 0, "max": 0, "users": set()})
        s["n"] += 1
        s["cost"] += r["cost_micro"]
        s["max"] = max(s["max"], r["cost_micro"])
        s["users"].add(r["user"])
    want = sorted(shapes.items(), key=lambda kv: (-kv[1]["cost"], kv[0]))[:10]
    got = doc["shapes"]
    assert len(got) == 10
    assert [s["fingerprint"] for s in got] == ["%016x" % fp for fp, _ in want]
    for s, (fp, w) in zip(got, want):
        assert s["statements"] == w["n"] and s["cost_micro"] == w["cost"]
        assert s["max_cost_micro"] == w["max"]
        assert s["mean_cost_micro"] == (2 * w["cost"] + w["n"]) // (2 * w["n"])
        assert s["users"] == len(w["users"])
        assert set(s["user_names"]) <= w["users"] and len(s["user_names"]) == min(10, s["users"])
        assert s["normalized"].startswith("SELECT")


def test_budgets_and_refusals(doc, truth):
    rows, _, _ = truth
    mine = [r for r in rows if r["user"] == REFUSED_USER]
    refused = [r for r in mine if r["status"] == "refused"]
    b = doc["budgets"]
    assert b["checked"] == 1 and b["over_threshold"] == 1
    item = b["items"][0]
    assert (item["subject_type"], item["subject"], item["period"]) == ("user", REFUSED_USER, "day")
    assert item["spent_micro"] == sum(r["cost_micro"] for r in mine)
    assert item["limit_micro"] == 5000 and item["percent"] >= 100
    assert item["threshold_pct"] == 100 and item["warn_pcts"] == [50]
    assert item["period_start"] == DATE + "T00:00:00.000000+00:00"
    r = doc["refusals"]
    assert r["refused"] == len([x for x in rows if x["status"] == "refused"]) == len(refused)
    assert r["by_budget"] == [{
        "budget_id": item["id"], "subject_type": "user", "subject": REFUSED_USER,
        "period": "day", "refused": len(refused), "budget_cancelled": 0,
        "cost_micro": 0, "cost": "0.000000"}]


# ---------------------------------------------------------------------------
# The schema of docs/report.md
# ---------------------------------------------------------------------------

INT, NUM, STR, BOOL = "int", "num", "str", "bool"
MONEY = {"": INT}  # marker: key_micro (int) and key (exact decimal string)


def money(key):
    return {key + "_micro": INT, key: STR}


def obj(*parts, **fields):
    out = dict(fields)
    for p in parts:
        out.update(p)
    return out


SUMS = obj(money("cost"), statements=INT, compute_s=NUM)
CHANGES = {"statements_pct": (NUM, None), "cost_pct": (NUM, None), "compute_pct": (NUM, None)}
SHAPE_TEXT = {"fingerprint": STR, "normalized": (STR, None), "kind": (STR, None)}
SCHEMA = {
    "version": INT, "date": STR, "timezone": STR, "from": STR, "to": STR, "from_us": INT,
    "to_us": INT, "generated_at": STR, "currency": STR, "top": INT, "show_literals": BOOL,
    "totals": obj(SUMS, users=INT, by_status={k: INT for k in (
        "ok", "error", "cancelled", "budget_cancelled", "refused")},
        previous_day=obj(SUMS, date=STR), change_vs_previous_day=CHANGES,
        mean_7d=obj(money("cost"), days=INT, statements=NUM, compute_s=NUM),
        change_vs_mean_7d=CHANGES),
    "statements": [obj(money("cost"), rank=INT, id=INT, started_at=STR, started_us=INT,
                       duration_s=NUM, user=STR, database=STR, application=STR,
                       tags=(dict, None), fingerprint=STR, normalized=(STR, None),
                       kind=(STR, None), compute_s=NUM, rows=INT, bytes_out=INT, status=STR,
                       sqlstate=(STR, None), estimated_cost_micro=(INT, None))],
    "users": [obj(money("cost"), money("previous_day_cost"), money("change"), rank=INT,
                  user=STR, statements=INT, compute_s=NUM, share_pct=NUM,
                  change_pct=(NUM, None),
                  top_shape=obj(SHAPE_TEXT, money("cost"), statements=INT))],
    "shapes": [obj(SHAPE_TEXT, money("cost"), money("mean_cost"), money("max_cost"), rank=INT,
                   statements=INT, compute_s=NUM, share_pct=NUM, users=INT,
                   user_names=[STR])],
    "budgets": {"checked": INT, "over_threshold": INT, "items": [obj(
        money("spent"), money("limit"), money("granted"), id=INT, subject_type=STR,
        subject=STR, user=(STR, None), period=STR, period_start=STR, period_end=STR,
        percent=NUM, warn_pcts=[INT], threshold_pct=INT, action=STR)]},
    "data": obj(money("cost"), compute_s=NUM, share_pct=NUM,
                schemas=[obj(money("cost"), rank=INT, schema=STR, compute_s=NUM, share_pct=NUM)],
                tables=[obj(money("cost"), rank=INT, schema=STR, table=STR, queries=INT,
                            compute_s=NUM, share_pct=NUM)]),
    "refusals": obj(money("cost"), statements=INT, refused=INT, budget_cancelled=INT,
                    by_budget=[obj(money("cost"), budget_id=INT, subject_type=(STR, None),
                                   subject=(STR, None), period=(STR, None), refused=INT,
                                   budget_cancelled=INT)]),
    "regressions": obj(money("min_mean_cost"), days=INT, since=STR, items=[obj(
        SHAPE_TEXT, money("mean_cost"), money("previous_mean_cost"), rank=INT, release=STR,
        first_seen=STR, statements=INT, previous_release=STR, previous_statements=INT,
        ratio=NUM)]),
    "repeats": obj(money("saved"), min_runs=INT, items=[obj(
        SHAPE_TEXT, money("cost"), money("saved"), rank=INT, constants=STR, runs=INT, users=INT,
        applications=INT, who=STR)]),
    "approvals": obj(money("cost"), approvals=INT, runs=INT,
                     items=[obj(SHAPE_TEXT, money("cost"), id=INT, ticket=STR, user=STR,
                                database=STR, scope=STR, max_micro=(INT, None),
                                max=(STR, None), approved_by=STR, approved_at=STR, until=STR,
                                runs=INT)]),
}


def check(value, spec, where="$"):
    """Checks value against spec; returns a list of problems."""
    kinds = spec if isinstance(spec, tuple) else (spec,)
    if value is None:
        return [] if None in kinds else ["%s: null" % where]
    for k in kinds:
        if k is None:
            continue
        if k == INT and isinstance(value, int) and not isinstance(value, bool):
            return []
        if k == NUM and isinstance(value, (int, float)) and not isinstance(value, bool):
            return []
        if k == STR and isinstance(value, str):
            return []
        if k == BOOL and isinstance(value, bool):
            return []
        if k is dict and isinstance(value, dict):
            return []
        if isinstance(k, list) and isinstance(value, list):
            return [p for i, v in enumerate(value) for p in check(v, k[0], "%s[%d]" % (where, i))]
        if isinstance(k, dict) and isinstance(value, dict):
            problems = ["%s.%s: missing" % (where, key) for key in k if key not in value]
            problems += ["%s.%s: not documented" % (where, key) for key in value if key not in k]
            for key, sub in k.items():
                if key in value:
                    problems += check(value[key], sub, where + "." + key)
            return problems
    return ["%s: %r is not %r" % (where, value, spec)]


def test_json_matches_the_documented_schema(doc):
    assert check(doc, SCHEMA) == []
    assert doc["version"] == 1 and doc["top"] == 10 and doc["show_literals"] is False
    for key in ("statements", "users", "shapes"):
        assert [x["rank"] for x in doc[key]] == list(range(1, len(doc[key]) + 1))


def test_schema_doc_names_every_field():
    """docs/report.md documents each field the checker knows."""
    from helpers import REPO
    text = (REPO / "docs" / "report.md").read_text()

    def names(spec):
        if isinstance(spec, list):
            yield from names(spec[0])
        elif isinstance(spec, dict):
            for k, v in spec.items():
                yield k
                yield from names(v)
    missing = sorted({n for n in names(SCHEMA) if "`%s`" % n not in text})
    assert missing == []


# ---------------------------------------------------------------------------
# Renderers
# ---------------------------------------------------------------------------

class Html(HTMLParser):
    """Collects tags, attributes and the text of table rows by table id."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.rows = [], [], {}
        self.table, self.cells, self.depth = None, None, 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        a = dict(attrs)
        if tag == "table":
            self.depth += 1
            if "id" in a:
                self.table, self.depth = a["id"], 1
                self.rows[self.table] = []
        if tag == "tr" and self.table and self.depth == 1:
            self.cells = []

    def handle_endtag(self, tag):
        if tag == "table" and self.table:
            self.depth -= 1
            if self.depth == 0:
                self.table = None
        if tag == "tr" and self.table and self.depth == 1 and self.cells is not None:
            self.rows[self.table].append(" ".join(self.cells))
            self.cells = None

    def handle_data(self, data):
        if self.cells is not None and data.strip():
            self.cells.append(data.strip())


def test_html_is_a_self_contained_mail_body(filled, doc):
    html = report(filled, "--format", "html")
    p = Html()
    p.feed(html)
    p.close()
    assert html.startswith("<!DOCTYPE html>")
    forbidden = {"script", "img", "link", "style", "iframe", "object", "embed", "svg", "form"}
    assert not forbidden & set(p.tags)
    assert not [a for a, v in p.attrs if a in ("src", "href") or a.startswith("on")]
    assert "url(" not in html and "http" not in html.replace(
        "http-equiv", "")  # nothing to fetch
    # the ten statements, with their users, costs and text
    rows = p.rows["statements"][1:]  # after the header
    assert len(rows) == 10
    for row, s in zip(rows, doc["statements"]):
        assert row.startswith("%d " % s["rank"]) and s["user"] in row
        assert short_money(s["cost_micro"]) in row
        assert "SELECT pg_sleep($1)" in row or "pg_sleep" in row
    assert len(p.rows["users"]) == 11 and len(p.rows["shapes"]) == 11
    assert REFUSED_USER in " ".join(p.rows["refusals"]) and p.rows["budgets"]
    # bars: cells of proportional width
    assert 'width="100%"' in html and "background-color:#2563eb" in html


def test_csv_round_trips(filled, doc):
    for section, key in (("statements", None), ("users", None), ("shapes", None)):
        text = report(filled, "--format", "csv", "--section", section)
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        assert len(rows) == len(doc[section])
        for row, item in zip(rows, doc[section]):
            assert int(row["rank"]) == item["rank"]
            assert row["cost"] == item["cost"] and row["currency"] == "USD"
    stmts = list(csv.DictReader(io.StringIO(report(filled, "--format", "csv", "--section",
                                                   "statements"), newline="")))
    assert [r["normalized"] for r in stmts] == [s["normalized"] for s in doc["statements"]]
    assert json.loads(stmts[0]["tags"]) == doc["statements"][0]["tags"]
    totals = list(csv.DictReader(io.StringIO(report(filled, "--format", "csv", "--section",
                                                    "totals"), newline="")))
    assert len(totals) == 1 and int(totals[0]["statements"]) == doc["totals"]["statements"]
    assert totals[0]["previous_day"] == PREV_DATE
    # every section, each after a "# name" line
    sections, current = {}, None
    for row in csv.reader(io.StringIO(report(filled, "--format", "csv"), newline="")):
        if len(row) == 1 and row[0].startswith("# "):
            current = row[0][2:]
            sections[current] = []
        else:
            sections[current].append(row)
    assert list(sections) == ["statements", "users", "shapes", "totals", "budgets", "refusals",
                              "schemas", "tables", "regressions", "repeats", "approvals"]
    assert len(sections["statements"]) == 11 and len(sections["budgets"]) == 2
    assert sections["refusals"][1][2] == REFUSED_USER


def test_text_and_markdown_show_the_top(filled, doc):
    top = doc["statements"][0]
    text = report(filled)
    assert text.startswith("pgtally daily report for %s (UTC)" % DATE)
    line = next(l for l in text.splitlines() if l.lstrip().startswith("1  "))
    assert short_money(top["cost_micro"]) in line and top["user"] in line
    assert "Top 10 users by cost" in text and "Top 10 query shapes by total cost" in text
    assert "Stopped by budgets" in text and "[##########]" in text
    md = report(filled, "--format", "markdown")
    assert md.startswith("# pgtally daily report: %s" % DATE)
    table = [l for l in md.split("## Top 10 statements by cost")[1].split("##")[0].splitlines()
             if l.startswith("| ")]
    assert len(table) == 11  # header and ten rows
    assert "daily\\|rollup" in table[1]  # a pipe in a tag does not make a cell


def slack_texts(value):
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "text" and isinstance(v, str):
                yield v
            else:
                yield from slack_texts(v)
    elif isinstance(value, list):
        for v in value:
            yield from slack_texts(v)


def check_slack(payload):
    blocks = payload["blocks"]
    assert 1 <= len(blocks) <= 50
    assert blocks[0]["type"] == "header" and len(blocks[0]["text"]["text"]) <= 150
    for b in blocks:
        assert b["type"] in ("header", "section", "divider", "context")
        if b["type"] == "section":
            assert b["text"]["type"] == "mrkdwn" and 0 < len(b["text"]["text"]) <= 3000
    for t in slack_texts(payload):
        assert len(t) <= 3000 and len(t.encode()) <= 3000
        assert "<" not in t and ">" not in t  # no links, mentions or raw markup
        for i in range(len(t)):
            if t[i] == "&":
                assert t[i:].startswith(("&amp;", "&lt;", "&gt;")), t[i:i + 10]


def test_slack_payload(filled, doc):
    payload = json.loads(report(filled, "--format", "slack"))
    check_slack(payload)
    text = "\n".join(slack_texts(payload))
    assert "Top 10 statements by cost" in text and doc["statements"][0]["user"] in text
    assert payload["text"].startswith("pgtally: %s: " % DATE)


def test_slack_within_limits_for_huge_statements_and_many_users(tmp_path):
    """60 users, statements of 100 kB with characters to escape and 4-byte
    characters, [report] top = 50: still at most 50 blocks of at most 3000."""
    path = tmp_path / "ledger.db"
    ctl(["--ledger", path, "budget", "set", "--user", "x", "--period", "day", "--limit", "1"])
    huge = ("SELECT '&<>`*_~|😀é' || " * 5000)[:100000]
    insert_statements(path, [dict(
        started_at=D0 + i * US, finished_at=D0 + i * US + 5,
        user="user_%02d_%s" % (i % 60, "&<>" * 30), database="db<&>", application="app" * 30, tags=json.dumps({"team": "<&>" * 100}),
        fingerprint=i % 70, normalized=huge + str(i), kind="select", compute_s=0, rows=0,
        bytes_out=0, cost_micro=1000000 + i, status="refused" if i % 3 == 0 else "ok",
        budget_id=(i % 40) + 1) for i in range(600)])
    cfg = tmp_path / "pgtally.ini"
    write_ini(cfg, {"ledger": str(path), "report.top": "50"})
    out = ctl(["-c", cfg, "report", "--date", DATE, "--format", "slack"]).stdout
    payload = json.loads(out)
    check_slack(payload)
    assert len(payload["blocks"]) >= 10
    d = json.loads(ctl(["-c", cfg, "report", "--date", DATE, "--format", "json"]).stdout)
    assert len(d["statements"]) == len(d["users"]) == len(d["shapes"]) == 50
    assert len(d["refusals"]["by_budget"]) == 40 and d["top"] == 50


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------

def test_yesterday_is_the_default(filled):
    path, _ = filled
    out = ctl(["--ledger", path, "report"], env=clock_env(D0 + DAY + 9 * 3600 * US)).stdout
    assert out.startswith("pgtally daily report for %s (UTC)" % DATE)
    today = ctl(["--ledger", path, "report", "--date", "today", "--format", "json"],
                env=clock_env(D0 + 15 * 3600 * US)).stdout
    assert json.loads(today)["date"] == DATE


def test_time_zone_cuts_the_date_not_the_days(filled, truth):
    """In Asia/Kolkata (+05:30) the date starts at 18:30 UTC the day before,
    but its statements are those the ledger's writer (in UTC) dated so: the
    day of a statement is fixed when it is written."""
    path, config = filled
    _, _, everything = truth
    cfg = config.parent / "kolkata.ini"
    write_ini(cfg, {"ledger": str(path), "timezone": "Asia/Kolkata"})
    d = json.loads(ctl(["-c", cfg, "report", "--date", DATE, "--format", "json"]).stdout)
    start = D0 - (5 * 3600 + 1800) * US
    assert d["from"] == DATE + "T00:00:00.000000+05:30" and d["from_us"] == start
    assert d["timezone"] == "Asia/Kolkata"
    assert d["totals"]["statements"] == sum(r["day"] == D0 // DAY for r in everything)
    assert d["totals"]["statements"] == sum(D0 <= r["started_at"] < D0 + DAY for r in everything)


def test_output_file(filled, tmp_path):
    path, _ = filled
    out = tmp_path / "r.html"
    p = ctl(["--ledger", path, "report", "--date", DATE, "--format", "html", "--output", out])
    assert p.stdout == "" and out.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("args", [
    ["--date", "2031-02-30"],
    ["--date", "tomorrow"],
    ["--format", "pdf"],
    ["--section", "users"],
    ["--format", "csv", "--section", "nope"],
    ["--force"],
    ["--send", "pigeon"],
    ["--send", "slack", "--format", "html"],
    ["--output", ""],
    ["extra"],
])
def test_bad_arguments_are_usage_errors(filled, args):
    path, _ = filled
    p = ctl(["--ledger", path, "report"] + args, rc=2)
    assert USAGE in p.stderr and p.stdout == ""


def test_missing_ledger_is_an_error(tmp_path):
    p = ctl(["--ledger", tmp_path / "none.db", "report", "--date", DATE], rc=1)
    assert "none.db" in p.stderr


class Hook:
    """A local Slack webhook that records what it is sent."""

    def __init__(self):
        self.bodies = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                hook.bodies.append(self.rfile.read(n))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/services/T0/B0/x" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_send_to_slack_once_then_force(filled, tmp_path):
    path, _ = filled
    copy = tmp_path / "ledger.db"
    shutil.copy(path, copy)
    hook = Hook()
    try:
        cfg = tmp_path / "pgtally.ini"
        write_ini(cfg, {"ledger": str(copy), "report.slack_webhook_url": hook.url})
        base = ["-c", cfg, "report", "--date", DATE, "--send", "slack"]
        assert "report %s: slack: sent" % DATE in ctl(base).stdout
        assert len(hook.bodies) == 1
        check_slack(json.loads(hook.bodies[0]))
        again = ctl(base).stdout
        assert "slack: already" in again and len(hook.bodies) == 1
        assert "slack: sent" in ctl(base + ["--force"]).stdout and len(hook.bodies) == 2
        # e-mail is not configured: a runtime error that says so
        p = ctl(["-c", cfg, "report", "--date", DATE, "--send", "email"], rc=1)
        assert "smtp" in p.stderr.lower() or "mail" in p.stderr.lower()
    finally:
        hook.stop()


def _comparable(doc):
    """What two ledgers of the same statements must agree on: every sum and
    ranking priced per statement (compute time, start times and ids differ
    from one run to the next)."""
    return {
        "totals": {k: doc["totals"][k] for k in ("statements", "cost_micro", "users", "by_status")},
        "users": [(u["user"], u["cost_micro"], u["statements"], u["top_shape"]["fingerprint"],
                   u["top_shape"]["normalized"]) for u in doc["users"]],
        "shapes": [(s["fingerprint"], s["normalized"], s["statements"], s["cost_micro"],
                    s["max_cost_micro"], s["users"], s["user_names"]) for s in doc["shapes"]],
        "statements": [(s["cost_micro"], s["status"]) for s in doc["statements"]],
        "budgets": doc["budgets"], "refusals": doc["refusals"],
    }


def test_same_report_on_postgresql_and_sent_once(filled, pgtally, ledger_pg, tmp_path):
    """The same statements in an SQLite and a PostgreSQL ledger make the same
    report; sending it records the claim in PostgreSQL's reports_sent, once."""
    uri = ledger_pg.new_ledger()
    lite = tmp_path / "lite.db"
    prices = dict(PRICING, **{"pricing.per_compute_second": "0"})
    docs = []
    for ledger in (str(lite), uri):
        proxy = pgtally(env=clock_env(D0 + 12 * 3600 * US), ledger=ledger, **prices)
        run_work(proxy, day_work()[:20])
        stop(proxy)
        docs.append(json.loads(ctl(["--ledger", ledger, "report", "--date", DATE, "--format",
                                    "json"]).stdout))
    assert docs[0]["totals"]["statements"] == 20
    assert _comparable(docs[0]) == _comparable(docs[1])
    hook = Hook()
    try:
        cfg = tmp_path / "pgtally.ini"
        write_ini(cfg, {"ledger": uri, "report.slack_webhook_url": hook.url})
        base = ["-c", cfg, "report", "--date", DATE, "--send", "slack"]
        assert "report %s: slack: sent" % DATE in ctl(base).stdout
        assert "slack: already" in ctl(base).stdout and len(hook.bodies) == 1
        assert "slack: sent" in ctl(base + ["--force"]).stdout and len(hook.bodies) == 2
    finally:
        hook.stop()
    with ledger_pg.connect(uri) as c:
        row = c.execute("SELECT report_date, channel, attempts, sent_at IS NOT NULL, "
                        "claimed_until FROM pgtally.reports_sent").fetchall()
    assert row == [(DATE, "slack", 2, True, None)]
