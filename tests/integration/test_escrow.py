"""Escrow, against a real PostgreSQL through pgtally: a statement refused
by a per-query cap (54000) or the guard names a ticket in its HINT; the
ticket is listed (pgtallyctl ticket list) and approved (pgtallyctl ticket
approve T-... --for 2h); the user's re-run then passes with a NOTICE
naming the approval, and its ledger record carries the approval's id.
The approval covers that statement only: the same shape with other
constants, and another shape, are still refused, unless --shape-only. Its
cap is the running limit; an estimate above it is still refused. It
expires: a pgtally sharing the ledger with its clock three hours on
(PGTALLY_CLOCK_OFFSET) refuses the statement again, under the same ticket.
The refusal's alert names the approver's command.

Prices make costs exact: pricing.per_query = 0.1 makes every statement
cost (and be estimated at) 0.10 USD; the budget's per-query cap is 0.05.
"""

import datetime
import json
import re
import time

import psycopg
import pytest

from helpers import SLOW, run_pgtallyctl, run_psql
from test_budgets import ctl, set_budget, wait_loaded
from test_metering import ledger_file, show, wait_ledger

PER_QUERY = {"pricing.per_query": "0.1", "pricing.per_compute_second": "0",
             "pricing.per_gib_returned": "0"}
LOOKUP = "SELECT name FROM esc_t WHERE id = %d"
OTHER = "SELECT count(*) FROM esc_t WHERE name LIKE 'n1%'"
TICKET = re.compile(r"ask for approval with ticket (T-[0-9A-Z]{6}) "
                    r"\(pgtallyctl ticket approve (T-[0-9A-Z]{6}) --for 2h\)")


@pytest.fixture(scope="module")
def users(pg):
    names = ["esc_" + c for c in "abcdef"]
    with pg.admin() as a:
        for n in names:
            a.execute("DROP ROLE IF EXISTS %s" % n)
            a.execute("CREATE ROLE %s LOGIN IN ROLE pgtally_test_users" % n)
        a.execute("DROP TABLE IF EXISTS esc_t")
        a.execute("CREATE TABLE esc_t (id int PRIMARY KEY, name text)")
        a.execute("INSERT INTO esc_t SELECT g, 'n' || g FROM generate_series(1, 100) g")
        a.execute("GRANT SELECT ON esc_t TO PUBLIC")
    return names


def capped(pgtally, *users, **config):
    proxy = pgtally(**PER_QUERY, **config)
    for user in users:
        set_budget(proxy, "--user", user, "--period", "month", "--limit", "1000",
                   "--per-query", "0.05")
    return proxy


def refused_ticket(proxy, user, sql):
    """Run sql as user with psql; it must be refused with a ticket: return it."""
    r = run_psql(proxy.dsn(user=user), sql)
    assert r.returncode != 0, (sql, r.stdout)
    assert "exceeds the per-query cap of 0.05 USD" in r.stderr, r.stderr
    m = TICKET.search(r.stderr)
    assert m and m.group(1) == m.group(2), r.stderr
    return m.group(1)


def tickets(proxy):
    return {t["ticket"]: t for t in json.loads(ctl(proxy, "ticket", "list", "--format", "json").stdout)}


def approve(proxy, ticket, *args):
    out = ctl(proxy, "ticket", "approve", ticket, *args).stdout
    wait_loaded(proxy)
    return out


def test_refused_then_approved_then_run(pgtally, users):
    user = users[0]
    proxy = capped(pgtally, user, users[1])
    ticket = refused_ticket(proxy, user, LOOKUP % 42)
    assert refused_ticket(proxy, user, LOOKUP % 42) == ticket  # the same request, the same ticket
    wait_ledger(proxy, 2, "status = 'refused' AND normalized LIKE '%%esc_t%%'")
    listed = tickets(proxy)
    assert set(listed) == {ticket}, listed
    t = listed[ticket]
    assert (t["user"], t["refusals"], t["sqlstate"], t["estimate_micro"]) == \
        (user, 2, "54000", 100000), t
    assert "approval" not in t, t
    out = approve(proxy, ticket, "--for", "2h")
    assert re.match(r"Approval \d+ of ticket %s: %s may run that statement in pgtally_test until "
                    r"\S+ \S+ UTC, up to 0.20 USD a run \(approved by \S+\)\n$" % (ticket, user),
                    out), out
    # The re-run passes, told why.
    r = run_psql(proxy.dsn(user=user), LOOKUP % 42)
    assert r.returncode == 0 and r.stdout.strip() == "n42", r
    assert re.search(r"NOTICE:  pgtally: runs under approval \d+ of ticket %s, granted by \S+ "
                     r"until .*; it is cancelled past 0.20 USD" % ticket, r.stderr), r.stderr
    # That statement only: other constants, another shape are refused.
    other = refused_ticket(proxy, user, LOOKUP % 43)
    assert other != ticket
    refused_ticket(proxy, user, OTHER)
    # Another user's same statement: a request of its own.
    assert refused_ticket(proxy, users[1], LOOKUP % 42) != ticket
    # The run is recorded under the approval.
    recs = wait_ledger(proxy, 6, "normalized LIKE '%%esc_t%%'")
    ran = [x for x in recs if x["status"] == "ok"]
    listed = tickets(proxy)
    aid = listed[ticket]["approval"]["id"]
    assert len(ran) == 1 and ran[0]["approval_id"] == aid and ran[0]["cost_micro"] == 100000, \
        show(recs)
    assert all(x["approval_id"] is None for x in recs if x["status"] != "ok"), show(recs)
    assert listed[ticket]["approval"]["runs"] == 1, listed[ticket]
    assert listed[ticket]["approval"]["runs_cost_micro"] == 100000, listed[ticket]
    assert "approval" not in listed[other], listed[other]
    # The day's report names the approval and what ran under it, in every format.
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    doc = json.loads(ctl(proxy, "report", "--date", today, "--format", "json").stdout)
    a = doc["approvals"]
    assert (a["approvals"], a["runs"], a["cost_micro"]) == (1, 1, 100000), a
    item = a["items"][0]
    assert (item["id"], item["ticket"], item["user"], item["scope"], item["max_micro"],
            item["runs"], item["normalized"]) == \
        (aid, ticket, user, "statement", 200000, 1, "SELECT name FROM esc_t WHERE id = $1"), item
    text = ctl(proxy, "report", "--date", today).stdout
    assert "Approvals in force: 1, 1 run under them, 0.10 USD" in text, text
    line = [x for x in text.splitlines() if x.strip().startswith(str(aid) + " ") and ticket in x]
    assert line and "statement" in line[0] and "0.20 USD" in line[0], text
    for fmt, needle in (("markdown", "## Approvals in force"), ("html", "Approvals in force: 1"),
                        ("slack", "Approvals in force: 1"), ("csv", "# approvals")):
        out = ctl(proxy, "report", "--date", today, "--format", fmt).stdout
        assert needle in out and ticket in out, (fmt, out)


def test_extended_protocol_and_shape_only(pgtally, users):
    user = users[2]
    proxy = capped(pgtally, user)
    with psycopg.connect(proxy.dsn(user=user), autocommit=True) as c:
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as ei:
            c.execute("SELECT name FROM esc_t WHERE id = %s", (7,))
        ticket = TICKET.search(ei.value.diag.message_hint).group(1)
    wait_ledger(proxy, 1, "status = 'refused' AND normalized LIKE '%%esc_t%%'")
    assert tickets(proxy)[ticket]["refusals"] == 1
    out = approve(proxy, ticket, "--for", "30m", "--shape-only")
    assert "may run statements of shape " in out, out
    notices = []
    with psycopg.connect(proxy.dsn(user=user), autocommit=True) as c:
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        for i in (7, 8, 9):  # any constants of the shape, bound
            assert c.execute("SELECT name FROM esc_t WHERE id = %s", (i,)).fetchone() == ("n%d" % i,)
        # and the same shape sent with a literal (psql's way)
        assert c.execute("SELECT name FROM esc_t WHERE id = 10").fetchone() == ("n10",)
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            c.execute(OTHER)
    assert len([n for n in notices if "runs under approval" in n]) == 4, notices


def test_an_estimate_above_the_approvals_cap_is_still_refused(pgtally, users):
    user = users[3]
    proxy = capped(pgtally, user)
    ticket = refused_ticket(proxy, user, LOOKUP % 5)
    wait_ledger(proxy, 1, "status = 'refused' AND normalized LIKE '%%esc_t%%'")
    assert "up to 0.05 USD a run" in approve(proxy, ticket, "--for", "1h", "--max", "0.05")
    r = run_psql(proxy.dsn(user=user), LOOKUP % 5)
    assert r.returncode != 0, r.stdout
    assert re.search(r"HINT:  .*Approval \d+ caps a run at 0.05 USD; this one is estimated at "
                     r"0.10 USD", r.stderr), r.stderr


def test_the_approval_expires(pgtally, users):
    user = users[4]
    proxy = capped(pgtally, user)
    ticket = refused_ticket(proxy, user, LOOKUP % 9)
    wait_ledger(proxy, 1, "status = 'refused' AND normalized LIKE '%%esc_t%%'")
    approve(proxy, ticket, "--for", "2h")
    assert run_psql(proxy.dsn(user=user), LOOKUP % 9).returncode == 0
    # The same ledger, three hours on: the approval is over, the ticket the same.
    later = pgtally(ledger=ledger_file(proxy), env={"PGTALLY_CLOCK_OFFSET": "10800"}, **PER_QUERY)
    assert refused_ticket(later, user, LOOKUP % 9) == ticket
    listed = json.loads(run_pgtallyctl(["-c", later.config_path, "ticket", "list", "--format",
                                        "json"], env={"PGTALLY_CLOCK_OFFSET": "10800"}).stdout)
    assert [t["ticket"] for t in listed] == [ticket], listed


def test_bad_approvals_say_what_to_do(pgtally, users):
    proxy = capped(pgtally, users[5])
    r = run_pgtallyctl(["-c", proxy.config_path, "ticket", "approve", "T-ZZZZZZ", "--for", "2h"])
    assert r.returncode == 1
    assert "no ticket T-ZZZZZZ was refused in the last 24 hours; see 'pgtallyctl ticket list'" \
        in r.stderr, r.stderr
    r = run_pgtallyctl(["-c", proxy.config_path, "ticket", "approve", "T-ZZZZZZ", "--for", "9d"])
    assert r.returncode == 2 and "bad --for '9d'" in r.stderr, r.stderr
    r = run_pgtallyctl(["-c", proxy.config_path, "ticket", "approve", "T-ZZZZZZ"])
    assert r.returncode == 2 and "--for is required" in r.stderr, r.stderr
    r = run_pgtallyctl(["-c", proxy.config_path, "ticket", "list"])
    assert r.returncode == 0 and r.stdout.startswith("No tickets"), r


@pytest.fixture(scope="module")
def big(pg):
    """Two tables whose cross join is estimated at 4e8 rows."""
    with pg.admin() as a:
        for t in ("esc_big", "esc_big2"):
            a.execute("DROP TABLE IF EXISTS %s" % t)
            a.execute("CREATE TABLE %s (id int PRIMARY KEY)" % t)
            a.execute("INSERT INTO %s SELECT generate_series(1, 20000)" % t)
            a.execute("ANALYZE %s" % t)
            a.execute("GRANT SELECT ON %s TO PUBLIC" % t)


# The join node is estimated at 4e8 rows; the LIMIT makes the run instant.
CROSS = "SELECT 1 FROM esc_big f, esc_big2 g LIMIT 1"


def console(proxy, user, command):
    return run_psql(proxy.dsn(user=user, dbname="pgtally"), command)


def test_a_guard_refusal_approved_in_the_console(pgtally, users, big):
    admin, stats, user = users[3], users[4], users[5]
    proxy = pgtally(**{"pricing.per_compute_second": "0", "pricing.per_gib_returned": "0",
                       "pricing.per_query": "0", "guard.max_join_rows": "1e8",
                       "admin.admin_users": admin, "admin.stats_users": stats})
    r = run_psql(proxy.dsn(user=user), CROSS)
    assert r.returncode != 0 and "estimated at 4e8 rows; the limit is 1e8" in r.stderr, r.stderr
    ticket = TICKET.search(r.stderr).group(1)
    wait_ledger(proxy, 1, "status = 'refused' AND normalized LIKE '%%esc_big%%'")
    r = console(proxy, stats, "SHOW TICKETS")
    assert r.returncode == 0, r.stderr
    shown = [line.split("|") for line in r.stdout.splitlines()]
    assert [(x[0], x[1], x[4], x[8]) for x in shown] == [(ticket, user, "1", "54000")], shown
    # A stats user may look, not approve.
    r = console(proxy, stats, "APPROVE '%s'" % ticket)
    assert r.returncode != 0 and "permission denied for APPROVE" in r.stderr, r.stderr
    # Typed loosely: lower case, no T-. FOR defaults to 2h.
    r = console(proxy, admin, "APPROVE '%s' FOR '45m'" % ticket[2:].lower())
    assert r.returncode == 0, r.stderr
    row = r.stdout.strip().split("|")
    assert row[1:4] == [ticket, user, "pgtally_test"] and row[5] == "exact" and row[8] == admin, row
    wait_loaded(proxy)
    r = run_psql(proxy.dsn(user=user), CROSS)
    assert r.returncode == 0 and r.stdout.strip() == "1", r
    assert "NOTICE:  pgtally: runs under approval %s of ticket %s, granted by %s" % (
        row[0], ticket, admin) in r.stderr, r.stderr
    # Another user's cross join is still refused.
    r = run_psql(proxy.dsn(user=users[0]), CROSS)
    assert r.returncode != 0 and "estimated at 4e8 rows" in r.stderr, r.stderr
    r = console(proxy, admin, "APPROVE 'T-ZZZZZZ'")
    assert r.returncode != 0 and "no ticket T-ZZZZZZ was refused in the last 24 hours" in r.stderr
    r = console(proxy, admin, "APPROVE '%s' FOR '9d'" % ticket)
    assert r.returncode != 0 and "syntax error; usage: APPROVE 'ticket'" in r.stderr, r.stderr
    recs = wait_ledger(proxy, 3, "normalized LIKE '%%esc_big%%'")
    assert [x["approval_id"] for x in recs if x["status"] == "ok"] == [int(row[0])], show(recs)
    # Run by name, the same statement has no ticket (the name could stand
    # for another statement by the time it is approved), nor does it run.
    r = run_psql(proxy.dsn(user=user), "PREPARE big AS " + CROSS, "EXECUTE big")
    assert r.returncode != 0 and "estimated at 4e8 rows" in r.stderr, r.stderr
    assert "ticket" not in r.stderr and "runs under approval" not in r.stderr, r.stderr



def test_the_approvals_cap_is_the_running_limit(pgtally, users):
    """A spent budget refuses; under the approval the run goes on past the
    budget (whose own check would cancel it at once) and is cancelled at
    the approval's cap. pricing.per_compute_second = 1: a second costs 1 USD."""
    user = users[1]
    proxy = pgtally(**{"pricing.per_compute_second": "1", "pricing.per_query": "0",
                       "pricing.per_gib_returned": "0", "budget.notice_above": "0"})
    set_budget(proxy, "--user", user, "--period", "day", "--limit", "0.01")
    run_psql(proxy.dsn(user=user), "SELECT pg_sleep(0.2)")  # spends the budget (or is cancelled)
    sleep = "SELECT pg_sleep(3)"
    r = run_psql(proxy.dsn(user=user), sleep)
    assert r.returncode != 0 and "budget user %s/day is spent" % user in r.stderr, r.stderr
    ticket = TICKET.search(r.stderr).group(1)
    wait_ledger(proxy, 1, "status = 'refused' AND normalized LIKE '%%pg_sleep%%'")
    approve(proxy, ticket, "--for", "1h", "--max", "0.5")
    t0 = time.monotonic()
    r = run_psql(proxy.dsn(user=user), sleep)
    took = time.monotonic() - t0
    assert r.returncode != 0, r.stdout
    assert re.search(r"ERROR:  pgtally: statement cancelled: it ran past the cap of approval \d+ "
                     r"\(0.50 USD\)", r.stderr), r.stderr
    assert 0.4 < took < 2.5 * SLOW, took
    recs = wait_ledger(proxy, 1, "status = 'budget_cancelled' AND approval_id IS NOT NULL")
    assert recs[0]["sqlstate"] == "57014" and 400000 <= recs[0]["cost_micro"] < 1500000, show(recs)
