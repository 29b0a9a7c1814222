"""Cost by schema and table against a real PostgreSQL: two schemas
(analytics, raw_data), known statements through pgtally in the simple and
the extended protocol, and every surface checked against ground truth
computed here from the ledger's own records (each record's cost_micro and
compute_s times its relations' shares, summed per schema and per table):

- each record's relations: from the plan when pgtally explained it (shares
  by the plan's costs, costliest first, the schema of each qualified name:
  EXPLAIN without VERBOSE names none, so schemas come from the text and an
  unqualified name, even one search_path resolves, keeps ""), from the
  parse tree when it did not (a statement of a multi-statement Query: even
  shares);
- the writer's daily_relations rollup;
- `pgtallyctl usage --by schema` and `--by table` (json, table, csv);
- the console's SHOW TABLES;
- the daily report's section "Data that cost the most" (json, text, csv).
"""

import csv
import io
import json

import psycopg
import pytest

from helpers import ledger_query, run_pgtallyctl, run_psql
from test_metering import ledger_file, read_ledger, wait_ledger

USER = "trust_user"
SALES_ROWS, EVENTS_ROWS, STORES = 60000, 30000, 50

# What each statement reads: normalized text -> the relations the ledger
# must note, in order (costliest first where the plan decides).
SIMPLE = "SELECT count(*) FROM analytics.sales WHERE amount > 10"
ACROSS = ("SELECT st.region, count(*) FROM raw_data.events e"
          " JOIN analytics.stores st ON st.id = e.store_id GROUP BY st.region")
EXTENDED = ("SELECT sum(x.amount) FROM analytics.sales x"
            " JOIN analytics.stores st ON st.id = x.store_id WHERE st.region = %s")
SEARCH_PATH = "SELECT count(*) FROM events WHERE payload LIKE 'a%'"
CTE = "WITH big AS (SELECT * FROM analytics.sales WHERE amount > 50) SELECT count(*) FROM big"
TWO = "SELECT count(*) FROM analytics.stores; SELECT max(id) FROM raw_data.events"
UNQUALIFIED = "SET search_path = analytics; SELECT count(*) FROM stores WHERE region <> 'x'"

STATEMENTS_RUN = 3 + 2 + 3 + 2 + 1 + 2 + 2  # records of the workload, SETs included


@pytest.fixture(scope="module")
def schemas(pg):
    with pg.admin() as a:
        a.execute("DROP SCHEMA IF EXISTS analytics CASCADE")
        a.execute("DROP SCHEMA IF EXISTS raw_data CASCADE")
        a.execute("CREATE SCHEMA analytics")
        a.execute("CREATE SCHEMA raw_data")
        a.execute("CREATE TABLE analytics.stores (id int PRIMARY KEY, region text)")
        a.execute("CREATE TABLE analytics.sales (id int, store_id int, amount numeric)")
        a.execute("CREATE TABLE raw_data.events (id int, store_id int, payload text)")
        a.execute("INSERT INTO analytics.stores SELECT g, 'r' || (g %% 5) FROM "
                  "generate_series(1, %d) g" % STORES)
        a.execute("INSERT INTO analytics.sales SELECT g, 1 + g %% %d, g %% 100 FROM "
                  "generate_series(1, %d) g" % (STORES, SALES_ROWS))
        a.execute("INSERT INTO raw_data.events SELECT g, 1 + g %% %d, md5(g::text) FROM "
                  "generate_series(1, %d) g" % (STORES, EVENTS_ROWS))
        for t in ("analytics.stores", "analytics.sales", "raw_data.events"):
            a.execute("ANALYZE " + t)
        a.execute("GRANT USAGE ON SCHEMA analytics, raw_data TO PUBLIC")
        a.execute("GRANT SELECT ON ALL TABLES IN SCHEMA analytics, raw_data TO PUBLIC")
    yield
    with pg.admin() as a:
        a.execute("DROP SCHEMA analytics CASCADE")
        a.execute("DROP SCHEMA raw_data CASCADE")


def psql_ok(proxy, *commands):
    r = run_psql(proxy.dsn(user=USER), *commands)
    assert r.returncode == 0, (commands, r.stdout, r.stderr)
    return r.stdout


@pytest.fixture(scope="module")
def workload(pgtally_module, schemas):
    """One pgtally that explains every statement it can (explain_above 0),
    with compute priced high enough that milliseconds are whole
    micro-units, the known statements run through it, and its records."""
    proxy = pgtally_module(**{"estimate.explain_above": "0s",
                              "pricing.per_compute_second": "100",
                              "admin.stats_users": USER})
    for _ in range(3):
        psql_ok(proxy, SIMPLE)
    for _ in range(2):
        psql_ok(proxy, ACROSS)
    with psycopg.connect(proxy.dsn(user=USER), autocommit=True) as c:
        for region in ("r1", "r2", "r3"):
            c.execute(EXTENDED, (region,)).fetchone()
    psql_ok(proxy, "SET search_path = raw_data", SEARCH_PATH)
    psql_ok(proxy, CTE)
    psql_ok(proxy, TWO)
    psql_ok(proxy, UNQUALIFIED)
    recs = wait_ledger(proxy, STATEMENTS_RUN)
    assert len(recs) == STATEMENTS_RUN, [r["normalized"] for r in recs]
    return proxy, recs


def rels(r):
    return json.loads(r["relations"]) if r["relations"] else None


def names(r):
    return [(s, t) for s, t, _ in rels(r) or []]


def by_text(recs, prefix):
    got = [r for r in recs if (r["normalized"] or "").startswith(prefix)]
    assert got, "no record of %r among %r" % (prefix, [r["normalized"] for r in recs])
    return got


# ---- ground truth from the records ------------------------------------------

def truth(recs, by_table):
    """Per schema (or (schema, table)): the statements that read it, and
    the sums of their cost and compute times their shares; parts counts
    the pieces summed, each exact to within one micro-unit."""
    out = {}
    for r in recs:
        rs = rels(r)
        if not rs:
            continue
        total = sum(share for _, _, share in rs)
        seen = set()
        for schema, table, share in rs:
            key = (schema, table) if by_table else schema
            g = out.setdefault(key, {"queries": 0, "cost": 0.0, "compute": 0.0, "parts": 0})
            if key not in seen:
                g["queries"] += 1
                seen.add(key)
            g["cost"] += r["cost_micro"] * share / total
            g["compute"] += r["compute_s"] * share / total
            g["parts"] += 1
    return out


def check_sums(got, want, what):
    """got: key -> (queries, cost_micro, compute_s), against truth."""
    assert set(got) == set(want), (what, sorted(got), sorted(want))
    for key, (queries, cost, compute) in got.items():
        w = want[key]
        assert queries == w["queries"], (what, key, queries, w)
        assert abs(cost - w["cost"]) <= w["parts"], (what, key, cost, w)
        assert abs(compute - w["compute"]) <= 1e-6 * w["parts"] + 1e-9, (what, key, compute, w)


def ranked(costs):
    return all(a >= b for a, b in zip(costs, costs[1:]))


# ---- the records --------------------------------------------------------------

def test_explained_records_note_the_plans_relations(workload):
    _, recs = workload
    explained = [r for r in recs if r["est_planner_cost"] is not None]
    assert len(explained) >= 3 + 2 + 3 + 1 + 1, [(r["normalized"], r["est_planner_cost"])
                                                  for r in recs]
    for r in explained:
        rs = rels(r)
        assert rs, "explained without relations: %r" % r["normalized"]
        # shares sum to 1, costliest first; a qualified name keeps its schema
        if not r["normalized"].startswith("SELECT count(*) FROM events"):
            assert all(schema for schema, _, _ in rs), rs
        assert abs(sum(s for _, _, s in rs) - 1) < 0.001, rs
        assert ranked([s for _, _, s in rs]), rs
    for r in by_text(recs, "SELECT count(*) FROM analytics.sales"):
        assert names(r) == [("analytics", "sales")] and r["protocol"] == "simple", r
    # across schemas: scanning 30000 events costs more than 50 stores
    for r in by_text(recs, "SELECT st.region"):
        assert names(r) == [("raw_data", "events"), ("analytics", "stores")], rels(r)
    ext = by_text(recs, "SELECT sum(x.amount)")
    assert len(ext) == 3 and all(r["protocol"] == "extended" for r in ext), ext
    for r in ext:
        assert r["est_planner_cost"] is not None
        assert names(r) == [("analytics", "sales"), ("analytics", "stores")], rels(r)
    # an unqualified name that search_path resolves: explained, but neither
    # the plan (not VERBOSE) nor the text names its schema
    for r in by_text(recs, "SELECT count(*) FROM events"):
        assert r["est_planner_cost"] is not None and names(r) == [("", "events")], r
    # a WITH query is not a relation
    for r in by_text(recs, "WITH big AS"):
        assert names(r) == [("analytics", "sales")], rels(r)


def test_unexplained_records_note_the_parse_trees_relations(workload):
    """The statements of a multi-statement Query are not explained: their
    relations come from their text, each in full (one relation), and an
    unqualified name keeps the schema ""."""
    _, recs = workload
    stores = by_text(recs, "SELECT count(*) FROM analytics.stores")
    events = by_text(recs, "SELECT max(id) FROM raw_data.events")
    assert len(stores) == len(events) == 1
    for r, want in ((stores[0], [["analytics", "stores", 1.0]]),
                    (events[0], [["raw_data", "events", 1.0]])):
        assert r["est_planner_cost"] is None and rels(r) == want, r
    (unq,) = by_text(recs, "SELECT count(*) FROM stores")
    assert unq["est_planner_cost"] is None and rels(unq) == [["", "stores", 1.0]], unq
    for r in by_text(recs, "SET search_path"):
        assert r["relations"] is None, r


# ---- the rollup -------------------------------------------------------------

def test_daily_relations_rollup(workload):
    proxy, recs = workload
    rows = {}
    for schema, table, queries, cost, compute in ledger_query(
            ledger_file(proxy), "SELECT schema_name, relation, sum(queries), sum(cost_micro),"
            " sum(compute_s) FROM daily_relations GROUP BY 1, 2"):
        rows[(schema, table)] = (int(queries), int(cost), float(compute))
    check_sums(rows, truth(recs, True), "daily_relations")
    # a record's parts add up to its cost, to the micro-unit
    total = sum(c for _, c, _ in rows.values())
    assert total == sum(r["cost_micro"] for r in recs if rels(r)), total
    assert sum(r["cost_micro"] for r in recs) > 1000  # the prices make the test mean something


# ---- pgtallyctl usage ----------------------------------------------------------

def ctl(proxy, *args):
    p = run_pgtallyctl(["-c", proxy.config_path] + list(args))
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


@pytest.mark.parametrize("by", ["schema", "table"])
def test_usage_by_schema_and_table(workload, by):
    proxy, recs = workload
    doc = json.loads(ctl(proxy, "usage", "--by", by, "--format", "json"))
    assert doc["by"] == by
    groups = doc["groups"]
    got = {}
    for g in groups:
        key = (g["schema"], g["table"]) if by == "table" else g["schema"]
        got[key] = (g["queries"], g["cost_micro"], g["compute_s"])
        schema = g["schema"] or "(unqualified)"
        assert g["group"] == (schema + "." + g["table"] if by == "table" else schema), g
    check_sums(got, truth(recs, by == "table"), "usage --by " + by)
    assert ranked([g["cost_micro"] for g in groups]), groups
    with_rels = [r for r in recs if rels(r)]
    assert doc["total"]["queries"] == len(with_rels), doc["total"]
    assert doc["total"]["cost_micro"] == sum(r["cost_micro"] for r in with_rels)

    table = ctl(proxy, "usage", "--by", by)
    lines = table.splitlines()
    assert lines[0].startswith("Usage by %s, day " % by), table
    head = lines[2].split()
    assert head == [by.upper(), "QUERIES", "COMPUTE", "COST"], table
    body = [line.split()[0] for line in lines[3:] if line and not line.startswith("-")]
    assert body[:len(groups)] == [g["group"] for g in groups], table
    assert "(unqualified)" + (".stores" if by == "table" else "") in body, table

    rows = list(csv.DictReader(io.StringIO(ctl(proxy, "usage", "--by", by, "--format", "csv"))))
    assert [r["group"] for r in rows] == [g["group"] for g in groups]
    assert [int(r["queries"]) for r in rows] == [g["queries"] for g in groups]
    assert all(r["currency"] == "USD" for r in rows)


def test_usage_by_schema_counts_a_statement_once(workload):
    """A statement that read sales and stores is one query of analytics,
    and one of each table."""
    proxy, recs = workload
    doc = json.loads(ctl(proxy, "usage", "--by", "schema", "--format", "json"))
    analytics = [g for g in doc["groups"] if g["schema"] == "analytics"][0]
    readers = [r for r in recs if any(s == "analytics" for s, _ in names(r))]
    assert analytics["queries"] == len(readers), (analytics, len(readers))


def test_usage_by_bad_group(workload):
    proxy, _ = workload
    p = run_pgtallyctl(["-c", proxy.config_path, "usage", "--by", "column"])
    assert p.returncode == 2
    assert "expected user, database, application, schema, table or tag:NAME" in p.stderr


# ---- the console ----------------------------------------------------------------

def test_show_tables(workload):
    proxy, recs = workload
    want = truth(recs, True)
    for period in ("", " DAY", " week", " MONTH"):
        r = run_psql(proxy.dsn(user=USER, dbname="pgtally"), "SHOW TABLES" + period)
        assert r.returncode == 0, r.stderr
        got, costs = {}, []
        for line in r.stdout.splitlines():
            schema, table, queries, compute, cost = line.split("|")
            amount, currency = cost.split(" ")
            assert currency == "USD"
            micro = round(float(amount) * 1e6)
            costs.append(micro)
            key = ("" if schema == "(unqualified)" else schema, table)
            got[key] = (int(queries), micro, float(compute))
        # compute is shown to the millisecond
        assert all(abs(c - want[k]["compute"]) <= 0.0005 + 1e-9
                   for k, (_, _, c) in got.items() if k in want), got
        check_sums({k: (q, c, want[k]["compute"] if k in want else c)
                    for k, (q, c, _) in got.items()}, want, "SHOW TABLES" + period)
        assert ranked(costs), r.stdout
    r = run_psql(proxy.dsn(user=USER, dbname="pgtally"), "SHOW TABLES YEAR")
    assert r.returncode != 0 and "SHOW TABLES [DAY|WEEK|MONTH]" in r.stderr, r.stderr


# ---- the daily report -----------------------------------------------------------

def test_report_section(workload):
    proxy, recs = workload
    doc = json.loads(ctl(proxy, "report", "--date", "today", "--format", "json"))
    data = doc["data"]
    day_cost = doc["totals"]["cost_micro"]
    assert day_cost == sum(r["cost_micro"] for r in read_ledger(ledger_file(proxy)))
    for key, by_table in (("tables", True), ("schemas", False)):
        want = truth(recs, by_table)
        items = data[key]
        assert [x["rank"] for x in items] == list(range(1, len(items) + 1))
        assert ranked([x["cost_micro"] for x in items])
        got = {}
        for x in items:
            k = (x["schema"], x["table"]) if by_table else x["schema"]
            w = want[k]
            assert abs(x["cost_micro"] - w["cost"]) <= w["parts"], (x, w)
            assert abs(x["compute_s"] - w["compute"]) <= 1e-6 * w["parts"], (x, w)
            assert x["share_pct"] == round(x["cost_micro"] * 100.0 / day_cost, 1), x
            if by_table:
                assert x["queries"] == w["queries"], (x, w)
            got[k] = x
        assert set(got) == set(want), (sorted(got), sorted(want))
    with_rels = sum(r["cost_micro"] for r in recs if rels(r))
    assert data["cost_micro"] == with_rels
    text = ctl(proxy, "report", "--date", "today")
    assert "\nData that cost the most\n" in text, text
    top = data["tables"][0]
    assert "%s.%s" % (top["schema"] or "(unqualified)", top["table"]) in text
    assert "(unqualified).stores" in text and "(unqualified)  " in text, text
    rows = list(csv.DictReader(io.StringIO(ctl(proxy, "report", "--date", "today", "--format",
                                                "csv", "--section", "tables"), newline="")))
    assert [(r["schema"], r["table"], int(r["queries"])) for r in rows] == \
        [(x["schema"], x["table"], x["queries"]) for x in data["tables"]]
    for fmt, marker in (("markdown", "## Data that cost the most"),
                        ("html", ">Data that cost the most</h2>"),
                        ("slack", "*Data that cost the most*")):
        assert marker in ctl(proxy, "report", "--date", "today", "--format", fmt), fmt

