"""The hash of each statement's constants in the ledger (queries.constants),
against a real PostgreSQL through pgtally: runs of one shape with the same
constants share it whatever their comments and spacing, in the simple
protocol and in the extended one (where the constants are the Bind's
parameters, before and after psycopg prepares the statement), and other
constants give another; the constants themselves are nowhere in the ledger. Then work done twice
from those hashes: `pgtallyctl repeats` lists a statement run with the same
constants from two applications, in both protocols, and not one run from
one application alone, nor one whose constants differ.
"""

import json

import psycopg
import pytest

from helpers import run_pgtallyctl, run_psql
from test_metering import wait_ledger

USER = "trust_user"
LOOKUP = "SELECT name FROM const_t WHERE id = "
PARAM = "SELECT name FROM const_t WHERE id = %s"
SECRET = "SELECT count(*) FROM const_t WHERE name = 'hunter2-secret'"


@pytest.fixture(scope="module")
def table(pg):
    with pg.admin() as a:
        a.execute("DROP TABLE IF EXISTS const_t")
        a.execute("CREATE TABLE const_t (id int PRIMARY KEY, name text)")
        a.execute("INSERT INTO const_t SELECT g, 'n' || g FROM generate_series(1, 100) g")
        a.execute("GRANT SELECT ON const_t TO PUBLIC")
    yield
    with pg.admin() as a:
        a.execute("DROP TABLE const_t")


@pytest.fixture(scope="module")
def records(pgtally_module, table):
    proxy = pgtally_module()
    simple = [LOOKUP + "42", "/* team='a' */ " + LOOKUP + "42", LOOKUP.lower() + " 42 -- x",
              LOOKUP + "43", LOOKUP + "-42", SECRET]
    r = run_psql(proxy.dsn(user=USER), *simple)
    assert r.returncode == 0, r.stderr
    # psycopg binds its parameters (extended protocol), and prepares the
    # statement from its sixth run (prepare_threshold 5): named statements.
    with psycopg.connect(proxy.dsn(user=USER), autocommit=True) as c:
        for _ in range(7):
            c.execute(PARAM, (42,)).fetchone()
        c.execute(PARAM, (43,)).fetchone()
        c.execute(PARAM, ("7",)).fetchone()  # the text 7 against the int 42: another
    # '%%': psycopg's escape for '%' (PostgreSQL ledger); to SQLite's LIKE,
    # two wildcards in a row are one.
    recs = wait_ledger(proxy, len(simple) + 9, "normalized LIKE '%%const_t%%'")
    assert len(recs) == len(simple) + 9, [x["normalized"] for x in recs]
    return recs


def test_same_constants_share_a_hash_in_the_simple_protocol(records):
    simple = [x for x in records if x["protocol"] == "simple"]
    h = [x["constants"] for x in simple]
    assert all(v is not None and v != 0 for v in h), h
    # id = 42 three ways (comment, case, spacing): one hash.
    assert h[0] == h[1] == h[2], h
    # 43, -42 and the secret: each its own.
    assert len({h[0], h[3], h[4], h[5]}) == 4, h


def test_same_parameters_share_a_hash_in_the_extended_protocol(records):
    ext = [x for x in records if x["protocol"] == "extended"]
    assert len(ext) == 9, ext
    h = [x["constants"] for x in ext]
    assert all(v is not None and v != 0 for v in h), h
    assert len(set(h[:7])) == 1, h  # unprepared and prepared runs with 42
    assert len({h[0], h[7], h[8]}) == 3, h
    # A shape's statements differ only by their constants: one fingerprint.
    assert len({x["fingerprint"] for x in ext}) == 1


def test_the_constants_are_not_in_the_ledger(records):
    secret = [x for x in records if "= $1" in (x["normalized"] or "") and "name" in
              (x["normalized"] or "") and "count" in (x["normalized"] or "")]
    assert len(secret) == 1, [x["normalized"] for x in records]
    row = secret[0]
    assert row["constants"]
    for key, value in row.items():
        assert "hunter2" not in str(value), (key, value)


@pytest.fixture(scope="module")
def repeats(pgtally_module, table):
    """One lookup run 3 times from psql (simple protocol) and 3 times from
    a dashboard (psycopg, extended protocol without parameters): the same
    constants from two applications. A lookup with a parameter runs 6 times
    from the dashboard alone, and other constants run from both once each."""
    proxy = pgtally_module(**{"pricing.per_query": "0.01"})
    r = run_psql(proxy.dsn(user=USER), *([LOOKUP + "42"] * 3 + [LOOKUP + "44"]))
    assert r.returncode == 0, r.stderr
    with psycopg.connect(proxy.dsn(user=USER), autocommit=True,
                         application_name="dashboard") as c:
        for _ in range(3):
            c.execute(LOOKUP + "42").fetchone()
        for _ in range(6):
            c.execute(PARAM, (42,)).fetchone()
        c.execute(LOOKUP + "45").fetchone()
    wait_ledger(proxy, 14, "normalized LIKE '%%const_t%%'")
    return proxy


def ctl_repeats(proxy, *args):
    p = run_pgtallyctl(["-c", proxy.config_path, "repeats"] + list(args))
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_repeats_lists_the_same_constants_from_two_applications(repeats):
    doc = json.loads(ctl_repeats(repeats, "--format", "json"))
    assert doc["min_runs"] == 3
    rows = doc["repeats"]
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["runs"] == 6 and row["users"] == 1 and row["applications"] == 2, row
    assert row["who"] == USER
    assert "= $1" in row["normalized"] and "42" not in row["normalized"]
    # Six runs at 0.01 each (and some compute): five of them were repeats.
    assert row["cost_micro"] >= 60000
    assert 50000 <= row["saved_micro"] < row["cost_micro"], row


def test_repeats_min_runs_and_formats(repeats):
    assert json.loads(ctl_repeats(repeats, "--format", "json", "--min-runs", "6"))["repeats"] == []
    table = ctl_repeats(repeats)
    assert "Work done twice" in table and "dashboard" not in table
    assert USER in table and "SAVED" in table
    csv_out = ctl_repeats(repeats, "--format", "csv").splitlines()
    assert csv_out[0].startswith("fingerprint,constants,runs,")
    assert len(csv_out) == 2 and ",6,1,2," in csv_out[1], csv_out
    p = run_pgtallyctl(["-c", repeats.config_path, "repeats", "--min-runs", "x"])
    assert p.returncode == 2 and "bad --min-runs 'x'" in p.stderr
