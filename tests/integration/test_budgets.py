"""Budgets in a running pgtally, through real clients (psql, psycopg):
refusals before a statement (53400 spent, 54000 per-query cap), cancels of
running statements (57014), transaction control never refused, role, team
and default budgets, changes by pgtallyctl picked up within a second,
local-midnight rollover (with a clock offset, never a sleep until
midnight), concurrent sessions, several processes sharing one ledger,
warnings, notices and exemptions.

Prices are set so costs are exact: pricing.per_query = 0.1 makes each
statement cost 0.10 USD whatever it does (refusal tests);
pricing.per_compute_second = 1 makes a second of server time cost 1 USD
(cancel tests).
"""

import datetime
import json
import threading
import time
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import errors

from helpers import SLOW, ledger_query, run_pgtallyctl, run_psql, wait_until
from test_metering import ledger, ledger_file, show

PER_QUERY = {"pricing.per_query": "0.1", "pricing.per_compute_second": "0",
             "budget.contact": "data-platform@example.com", "budget.notice_above": "0"}
PER_SECOND = {"pricing.per_compute_second": "1", "budget.notice_above": "0"}


@pytest.fixture(scope="module")
def users(pg):
    """Login roles bud_a ... bud_z for this module, members of the group the
    test server's pg_hba.conf trusts."""
    names = ["bud_" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    with pg.admin() as a:
        for n in names:
            a.execute("DROP ROLE IF EXISTS %s" % n)
            a.execute("CREATE ROLE %s LOGIN IN ROLE pgtally_test_users" % n)
        a.execute("DROP TABLE IF EXISTS bud_t")
        a.execute("CREATE TABLE bud_t (a int)")
        a.execute("GRANT ALL ON bud_t TO PUBLIC")
    return names


def ctl(proxy, *args, rc=0):
    p = run_pgtallyctl(["-c", proxy.config_path] + list(args))
    assert p.returncode == rc, (args, p.returncode, p.stdout, p.stderr)
    return p


def wait_loaded(proxy):
    """Wait until pgtally has loaded the budgets as they are now."""
    path = proxy.config.get("ledger") or proxy.workdir / "pgtally.db"
    version = ledger_query(path, "SELECT version FROM settings_version")[0][0]
    proxy.wait_log(r"event=budgets_loaded .*version=%d\b" % version, timeout=3 * SLOW)


def set_budget(proxy, *args):
    """pgtallyctl budget set ..., then wait until pgtally has loaded it."""
    ctl(proxy, "budget", "set", *args)
    wait_loaded(proxy)


def psql(proxy, user, *sql):
    return run_psql(proxy.dsn(user=user), *sql)


def connect(proxy, user, autocommit=True):
    return psycopg.connect(proxy.dsn(user=user), autocommit=autocommit)


def budget_id(proxy, subject):
    out = ctl(proxy, "budget", "list", "--format", "json").stdout
    for b in json.loads(out):
        if b.get("subject") == subject:
            return b["id"]
    raise AssertionError("no budget for %s in %s" % (subject, out))


# ---------------------------------------------------------------------------

def test_spent_budget_refuses_with_53400_and_others_carry_on(pgtally, users):
    proxy = pgtally(**PER_QUERY)
    set_budget(proxy, "--user", "bud_a", "--period", "day", "--limit", "0.25")
    for i in range(3):  # 0.00, 0.10, 0.20 spent before each: all under 0.25
        r = psql(proxy, "bud_a", "SELECT %d" % i)
        assert r.returncode == 0, r
    r = psql(proxy, "bud_a", "SELECT 42")
    assert r.returncode != 0
    assert "ERROR:  pgtally: budget user bud_a/day is spent" in r.stderr, r.stderr
    assert "DETAIL:  Spent 0.30 USD of 0.25 USD" in r.stderr, r.stderr
    assert "The budget resets at " in r.stderr and "UTC" in r.stderr, r.stderr
    assert "HINT:  See your spend with: pgtallyctl usage. To raise the budget, ask " \
        "data-platform@example.com." in r.stderr, r.stderr
    # the SQLSTATE, through psycopg
    with connect(proxy, "bud_a") as c:
        with pytest.raises(errors.ConfigurationLimitExceeded) as ei:
            c.execute("SELECT 1")
        assert ei.value.sqlstate == "53400"
        assert "budget user bud_a/day" in str(ei.value)
        # extended protocol, a parameter: refused the same way
        with pytest.raises(errors.ConfigurationLimitExceeded):
            c.execute("SELECT %s::int", (5,))
        # the session is usable: SET and SHOW are never refused
        c.execute("SET application_name = 'still_here'")
        assert c.execute("SHOW application_name").fetchone() == ("still_here",)
    # another user, no budget: carries on
    r = psql(proxy, "bud_b", "SELECT 7")
    assert r.returncode == 0 and r.stdout.strip() == "7", r
    bid = budget_id(proxy, "bud_a")
    recs = ledger(proxy, "\"user\" = 'bud_a'")
    refused = [r for r in recs if r["status"] == "refused"]
    assert len(refused) == 3, show(recs)
    assert {(r["sqlstate"], r["budget_id"], r["cost_micro"]) for r in refused} == \
        {("53400", bid, 0)}, show(refused)
    assert [r["status"] for r in recs[:3]] == ["ok"] * 3, show(recs)


def test_per_query_cap_refuses_a_cross_join_before_it_runs(pgtally, pg, users):
    proxy = pgtally(**PER_SECOND)
    set_budget(proxy, "--user", "bud_c", "--period", "day", "--limit", "1000",
               "--per-query", "0.05")
    big = ("SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b"
           " WHERE a + b = 7")
    t0 = time.monotonic()
    r = psql(proxy, "bud_c", big)
    assert time.monotonic() - t0 < 5, "the cross join ran"
    assert r.returncode != 0
    assert "exceeds the per-query cap of 0.05 USD of budget user bud_c/day" in r.stderr, r.stderr
    with connect(proxy, "bud_c") as c:
        with pytest.raises(errors.ProgramLimitExceeded) as ei:  # 54000
            c.execute(big.replace("7", "%s"), (7,))
        assert ei.value.sqlstate == "54000"
        assert c.execute("SELECT count(*) FROM generate_series(1, %s)", (10,)).fetchone() == (10,)
    r = psql(proxy, "bud_c", "SELECT 1 + 1")
    assert r.returncode == 0 and r.stdout.strip() == "2", r
    with pg.admin() as a:  # the refused cross joins never reached the server as such
        running = a.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE"
                            " '%generate_series(1, 100000) a%' AND pid <> pg_backend_pid()"
                            " AND state = 'active'").fetchone()[0]
    assert running == 0
    recs = ledger(proxy, "\"user\" = 'bud_c'")
    assert [r["status"] for r in recs] == ["refused", "refused", "ok", "ok"], show(recs)
    assert {r["sqlstate"] for r in recs[:2]} == {"54000"}
    assert all(r["est_cost_micro"] > 50000 for r in recs[:2]), show(recs)


def test_running_statement_cancelled_past_the_budget(pgtally, users):
    proxy = pgtally(**PER_SECOND)
    set_budget(proxy, "--user", "bud_d", "--period", "day", "--limit", "0.5")
    with connect(proxy, "bud_d") as c:
        t0 = time.monotonic()
        with pytest.raises(errors.QueryCanceled) as ei:
            c.execute("SELECT pg_sleep(10)")
        took = time.monotonic() - t0
        assert ei.value.sqlstate == "57014"
        assert "pgtally: canceling statement: budget user bud_d/day is spent" in str(ei.value)
        assert 0.4 < took < 3 * SLOW, took
        # the session is usable: with a top-up the next statement runs
        ctl(proxy, "budget", "grant", "--user", "bud_d", "--amount", "5")
        wait_loaded(proxy)
        assert c.execute("SELECT 'alive'").fetchone() == ("alive",)
    recs = ledger(proxy, "\"user\" = 'bud_d'")
    assert [r["status"] for r in recs] == ["budget_cancelled", "ok"], show(recs)
    assert recs[0]["sqlstate"] == "57014" and recs[0]["budget_id"] is not None
    assert 0.45 <= recs[0]["cost_micro"] / 1e6 <= 0.5 + 0.25 + 0.3 * SLOW, show(recs)


def test_open_transaction_can_commit_or_roll_back(pgtally, pg, users):
    proxy = pgtally(**PER_QUERY)
    set_budget(proxy, "--user", "bud_e", "--period", "day", "--limit", "0.35")
    with connect(proxy, "bud_e", autocommit=False) as c:
        c.execute("INSERT INTO bud_t VALUES (%s)", (1,))   # BEGIN 0.1, INSERT 0.2
        c.execute("INSERT INTO bud_t VALUES (%s)", (2,))   # 0.3
        c.execute("INSERT INTO bud_t VALUES (%s)", (3,))   # 0.4: spent now
        c.commit()                                         # COMMIT is never refused
    with pg.admin() as a:
        assert a.execute("SELECT count(*) FROM bud_t WHERE a IN (1, 2, 3)").fetchone() == (3,)
    with connect(proxy, "bud_e", autocommit=False) as c:
        with pytest.raises(errors.ConfigurationLimitExceeded):
            c.execute("INSERT INTO bud_t VALUES (%s)", (4,))
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            c.execute("SELECT 1")
        c.rollback()
    r = psql(proxy, "bud_e", "BEGIN", "ROLLBACK")
    assert r.returncode == 0, r


def test_role_budget_applies_to_its_members(pgtally, pg, users):
    with pg.admin() as a:
        a.execute("DROP ROLE IF EXISTS bud_analysts")
        a.execute("CREATE ROLE bud_analysts NOLOGIN")
        a.execute("GRANT bud_analysts TO bud_f")
    admin = "host=%s port=%d user=postgres dbname=postgres" % (pg.base, pg.port)
    proxy = pgtally(admin_conninfo=admin, **PER_QUERY)
    set_budget(proxy, "--role", "bud_analysts", "--period", "week", "--limit", "0.15")
    assert psql(proxy, "bud_f", "SELECT 1").returncode == 0
    assert psql(proxy, "bud_f", "SELECT 2").returncode == 0
    r = psql(proxy, "bud_f", "SELECT 3")
    assert "pgtally: budget role bud_analysts/week is spent" in r.stderr, r
    # not a member: not concerned
    assert psql(proxy, "bud_g", "SELECT 4").returncode == 0


def test_team_budget_applies_to_its_users(pgtally, users):
    proxy = pgtally(**PER_QUERY)
    ctl(proxy, "team", "add", "bud_growth", "bud_h", "bud_i")
    wait_loaded(proxy)
    set_budget(proxy, "--team", "bud_growth", "--period", "month", "--limit", "0.25")
    assert psql(proxy, "bud_h", "SELECT 1").returncode == 0
    assert psql(proxy, "bud_h", "SELECT 2").returncode == 0
    assert psql(proxy, "bud_i", "SELECT 3").returncode == 0   # 0.2 before: runs
    for user in ("bud_h", "bud_i"):
        r = psql(proxy, user, "SELECT 4")
        assert "pgtally: budget team bud_growth/month is spent" in r.stderr, r
    assert psql(proxy, "bud_j", "SELECT 5").returncode == 0


def test_pgtallyctl_changes_apply_within_a_second(pgtally, users):
    proxy = pgtally(**PER_QUERY)
    assert psql(proxy, "bud_k", "SELECT 1").returncode == 0       # 0.10 spent
    with connect(proxy, "bud_k") as c:
        t0 = time.monotonic()
        ctl(proxy, "budget", "set", "--user", "bud_k", "--period", "day", "--limit", "0.05")

        def refused():
            try:
                c.execute("SELECT 1")
                return False
            except errors.ConfigurationLimitExceeded:
                return True
        wait_until(refused, 1.0 * SLOW, interval=0.05, what="the new budget to apply")
        assert time.monotonic() - t0 < 1.0 * SLOW + 0.5
        ctl(proxy, "budget", "rm", str(budget_id(proxy, "bud_k")))
        t0 = time.monotonic()
        wait_until(lambda: not refused(), 1.0 * SLOW, interval=0.05,
                   what="the removed budget to stop applying")


def test_rollover_at_local_midnight(pgtally, users):
    """pgtally's clock is set 3 s before midnight in Europe/Berlin: the day's
    spend refuses, then the next day starts afresh."""
    zone = ZoneInfo("Europe/Berlin")
    now = datetime.datetime.now(zone)
    midnight = datetime.datetime.combine(now.date() + datetime.timedelta(days=1),
                                         datetime.time(0), tzinfo=zone)
    offset = (midnight - now).total_seconds() - 3.0
    proxy = pgtally(env={"PGTALLY_CLOCK_OFFSET": "%.3f" % offset}, timezone="Europe/Berlin",
                    **PER_QUERY)
    set_budget(proxy, "--user", "bud_l", "--period", "day", "--limit", "0.15")
    t0 = time.monotonic()
    assert psql(proxy, "bud_l", "SELECT 1").returncode == 0
    assert psql(proxy, "bud_l", "SELECT 2").returncode == 0
    r = psql(proxy, "bud_l", "SELECT 3")
    assert "budget user bud_l/day is spent" in r.stderr, r
    assert "resets at %s 00:00 CE" % midnight.date().isoformat() in r.stderr, r.stderr
    assert time.monotonic() - t0 < 2.5, "too slow to test before the simulated midnight"
    time.sleep(max(0.0, 3.3 - (time.monotonic() - t0)))
    r = psql(proxy, "bud_l", "SELECT 4")
    assert r.returncode == 0 and r.stdout.strip() == "4", r


@pytest.mark.timeout(60)
def test_concurrent_sessions_share_the_budget(pgtally, users):
    """Four sessions of one user run 10 s sleeps against a 1 USD budget at
    1 USD per second: all are cancelled once together they pass it, so
    the overspend is at most one check interval of their running cost."""
    proxy = pgtally(**PER_SECOND)
    set_budget(proxy, "--user", "bud_m", "--period", "day", "--limit", "1")
    errs = []

    def run():
        try:
            with connect(proxy, "bud_m") as c:
                c.execute("SELECT pg_sleep(10)")
            errs.append(None)
        except psycopg.Error as e:
            errs.append(e.sqlstate)
    threads = [threading.Thread(target=run) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert time.monotonic() - t0 < 5 * SLOW
    assert errs == ["57014"] * 4, errs
    recs = ledger(proxy, "\"user\" = 'bud_m'")
    total = sum(r["cost_micro"] for r in recs) / 1e6
    interval = 0.25
    # what they had run when the check saw the limit crossed, plus one
    # check interval for each of the four, plus the cancel's round trip
    assert 1.0 <= total <= 1.0 + 4 * (interval + 0.15 * SLOW), (total, show(recs))
    assert {r["status"] for r in recs} == {"budget_cancelled"}


def test_processes_sharing_a_ledger_see_each_others_spend(pgtally, tmp_path, users):
    shared = tmp_path / "shared.db"
    one = pgtally(ledger=shared, **PER_QUERY)
    two = pgtally(ledger=shared, **PER_QUERY)
    set_budget(one, "--user", "bud_n", "--period", "day", "--limit", "0.25")
    wait_loaded(two)
    for i in range(3):
        assert psql(one, "bud_n", "SELECT %d" % i).returncode == 0
    t0 = time.monotonic()

    def refused_by_two():
        return "budget user bud_n/day is spent" in psql(two, "bud_n", "SELECT 9").stderr
    wait_until(refused_by_two, 1.5 * SLOW, interval=0.1, what="the other process's spend")
    assert time.monotonic() - t0 < 1.5 * SLOW


def test_warning_at_thresholds_and_one_alert(pgtally, users):
    proxy = pgtally(**PER_QUERY)
    set_budget(proxy, "--user", "bud_o", "--period", "day", "--limit", "1", "--warn", "20,50")
    notices = []
    with connect(proxy, "bud_o") as c:
        c.add_notice_handler(lambda d: notices.append((d.severity, d.message_primary)))
        for i in range(7):
            c.execute("SELECT %s::int" % i)
    warnings = [m for s, m in notices if s == "WARNING"]
    # spent 0.2 before the third statement, 0.5 before the sixth
    assert len(warnings) == 2, notices
    assert warnings[0].startswith("pgtally: budget user bud_o/day is at 20% (0.20 USD of 1.00"), \
        warnings
    assert warnings[1].startswith("pgtally: budget user bud_o/day is at 50%"), warnings
    proxy.wait_log("event=budget_alert", timeout=3 * SLOW)
    ledger(proxy, "1 = 0")
    alerts = ledger_query(ledger_file(proxy),
                          "SELECT threshold_pct, channel FROM alerts_sent ORDER BY 1")
    assert alerts == [(20, "log"), (50, "log")], alerts


def test_estimate_notice_before_results(pgtally, users):
    proxy = pgtally(**{"pricing.per_compute_second": "1000", "budget.notice_above": "0.000001"})
    r = psql(proxy, "bud_p", "SELECT count(*) FROM generate_series(1, 1000)")
    assert r.returncode == 0 and r.stdout.strip() == "1000", r
    assert "NOTICE:  pgtally: estimated " in r.stderr, r.stderr


def test_exempt_users_are_metered_never_refused(pgtally, users):
    proxy = pgtally(**{"budget.exempt_users": "bud_q, bud_etl"}, **PER_QUERY)
    set_budget(proxy, "--user", "bud_q", "--period", "day", "--limit", "0.05")
    for i in range(3):
        assert psql(proxy, "bud_q", "SELECT %d" % i).returncode == 0
    recs = ledger(proxy, "\"user\" = 'bud_q'")
    assert len(recs) == 3 and {r["status"] for r in recs} == {"ok"}, show(recs)


def test_default_budget_for_users_without_their_own(pgtally, users):
    proxy = pgtally(**PER_QUERY)
    set_budget(proxy, "--default", "--period", "day", "--limit", "0.15")
    set_budget(proxy, "--user", "bud_s", "--period", "day", "--limit", "10")
    for user in ("bud_r", "bud_t"):   # each has a default budget of its own
        assert psql(proxy, user, "SELECT 1").returncode == 0
        assert psql(proxy, user, "SELECT 2").returncode == 0
        r = psql(proxy, user, "SELECT 3")
        assert "budget default (user %s)/day is spent" % user in r.stderr, r
    for i in range(4):   # bud_s has its own budget: the default does not apply
        assert psql(proxy, "bud_s", "SELECT %d" % i).returncode == 0


def test_budget_of_rows_alone_never_refuses_for_money(pgtally, users):
    """A budget with --max-rows and no --limit never refuses nor warns for
    spend, and does not take the default budget's money limit away."""
    proxy = pgtally(**PER_QUERY)
    set_budget(proxy, "--user", "bud_w", "--period", "day", "--max-rows", "1e12")
    for i in range(4):   # 0.40 USD spent: no limit, no warning
        r = psql(proxy, "bud_w", "SELECT %d" % i)
        assert r.returncode == 0 and "WARNING" not in r.stderr, r
    assert "budget user bud_w/day" not in r.stderr, r.stderr  # not the notice's budget
    set_budget(proxy, "--default", "--period", "day", "--limit", "0.15")
    r = psql(proxy, "bud_w", "SELECT 5")
    assert "budget default (user bud_w)/day is spent" in r.stderr, r
    assert {rec["status"] for rec in ledger(proxy, "\"user\" = 'bud_w'")} == {"ok", "refused"}


def test_application_budget_follows_set_application_name(pgtally, users):
    """SET application_name after login moves attribution and the
    application's budget with it, as the server reports the change."""
    proxy = pgtally(**PER_QUERY)
    set_budget(proxy, "--application", "bud_dashboard", "--period", "day", "--limit", "0.15")
    with connect(proxy, "bud_u") as c:
        assert c.execute("SELECT 1").fetchone() == (1,)          # app "": no budget
        c.execute("SET application_name = 'bud_dashboard'")      # 0.10 ... not the app's yet
        assert c.execute("SELECT 2").fetchone() == (2,)          # app spent 0.10
        assert c.execute("SELECT 3").fetchone() == (3,)          # 0.10 < 0.15: runs
        with pytest.raises(errors.ConfigurationLimitExceeded) as ei:
            c.execute("SELECT 4")
        assert "budget application bud_dashboard/day is spent" in str(ei.value)
        c.execute("SET application_name = 'other'")
        assert c.execute("SELECT 5").fetchone() == (5,)
    recs = ledger(proxy, "\"user\" = 'bud_u'")
    assert [(r["application"], r["status"]) for r in recs] == [
        ("", "ok"), ("", "ok"), ("bud_dashboard", "ok"), ("bud_dashboard", "ok"),
        ("bud_dashboard", "refused"), ("bud_dashboard", "ok"), ("other", "ok")], show(recs)


def test_nested_comment_hides_a_set_from_the_never_refused_check(pgtally, users):
    """PostgreSQL nests C-style comments: in /* /* */ SET */ SELECT the SET is
    inside the comment, so over a spent budget the statement is a SELECT,
    refused; a SET behind a nested comment is still never refused."""
    proxy = pgtally(**PER_QUERY)
    set_budget(proxy, "--user", "bud_v", "--period", "day", "--limit", "0.05")
    assert psql(proxy, "bud_v", "SELECT 1").returncode == 0        # 0.10 spent
    r = psql(proxy, "bud_v", "/* /* */ SET */ SELECT 2")
    assert "ERROR:  pgtally: budget user bud_v/day is spent" in r.stderr, r
    r = psql(proxy, "bud_v", "/* /* SELECT */ */ SET work_mem = '8MB'")
    assert r.returncode == 0, r
    with connect(proxy, "bud_v") as c:   # the extended protocol: the same
        with pytest.raises(errors.ConfigurationLimitExceeded):
            c.execute("/* /* */ SET */ SELECT %s::int", (3,))
        c.execute("/* /* SELECT */ */ SET application_name = 'bud_v_app'")
    recs = ledger(proxy, "\"user\" = 'bud_v'")
    assert [r["status"] for r in recs if r["status"] == "refused"] == ["refused"] * 2, show(recs)
