"""Alerts that reach people: budget threshold crossings, refusal bursts and
cancels sent to a real SMTP server on loopback (aiosmtpd) and to a local
HTTP server standing in for the Slack webhook, through the report's
delivery settings.

A crossing arrives once per channel even when two pgtally processes share
the ledger (an SQLite file, or a PostgreSQL database) and both see it; a
storm of refusals is one message that states the count; a webhook that
answers 500 once gets the alert on the retry, once; a cancel of a running
statement is an alert; a dead webhook costs the statements nothing.
"""

import json
import re
import signal
import time

import psycopg
import pytest
from psycopg import errors

from helpers import (SLOW, free_port, ledger_query, run_pgtally, run_pgtallyctl, wait_until,
                     write_ini)
from test_delivery import Hook, SmtpServer, cert, mail_keys  # noqa: F401
from test_metering import ledger_file, stop

# the daily report's catch-up would post the days before to the same servers
PER_QUERY = {"report.catch_up_days": "0", "pricing.per_query": "0.1", "pricing.per_compute_second": "0",
             "pricing.per_gib_returned": "0", "budget.notice_above": "0",
             "estimate.mode": "off"}
PER_SECOND = {"report.catch_up_days": "0", "pricing.per_compute_second": "1", "budget.notice_above": "0"}


@pytest.fixture(scope="module")
def users(pg):
    names = ["alr_" + c for c in "abcdefgh"]
    with pg.admin() as a:
        for n in names:
            a.execute("DROP ROLE IF EXISTS %s" % n)
            a.execute("CREATE ROLE %s LOGIN IN ROLE pgtally_test_users" % n)
    return names


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.stop()


@pytest.fixture
def smtp(cert):  # noqa: F811
    s = SmtpServer(cert)
    yield s
    s.stop()


def ctl(ledger, *args):
    p = run_pgtallyctl(["--ledger", str(ledger)] + list(args))
    assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
    return p


def wait_loaded(proxy, ledger):
    version = ledger_query(ledger, "SELECT version FROM settings_version")[0][0]
    proxy.wait_log(r"event=budgets_loaded .*version=%d\b" % version, timeout=3 * SLOW)


def texts(hook):
    """The Slack text of every POST the webhook received."""
    return [json.loads(r["body"])["text"] for r in hook.requests]


def mail_text(m):
    return m["message"].get_body(preferencelist=("plain",)).get_content()


def run(proxy, user, sql, n=1):
    """Runs sql n times on one connection; returns the SQLSTATEs of errors."""
    states = []
    with psycopg.connect(proxy.dsn(user=user), autocommit=True) as c:
        for _ in range(n):
            try:
                c.execute(sql)
            except psycopg.Error as e:
                states.append(e.sqlstate)
    return states


def alert_rows(ledger):
    return ledger_query(ledger, "SELECT threshold_pct, channel, delivered_at IS NOT NULL,"
                        " attempts, last_error, message FROM alerts_sent"
                        " ORDER BY threshold_pct, channel")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_threshold_crossing_arrives_once_with_two_processes(pgtally, request, users, smtp,
                                                            hook, cert, tmp_path,  # noqa: F811
                                                            backend):
    ledger = (tmp_path / "shared.db" if backend == "sqlite"
              else request.getfixturevalue("ledger_pg").new_ledger())
    keys = dict(PER_QUERY, ledger=str(ledger), **mail_keys(smtp, cert, tmp_path))
    keys["report.slack_webhook_url"] = hook.url
    one = pgtally(instance="one", **keys)
    two = pgtally(instance="two", **keys)
    ctl(ledger, "budget", "set", "--user", "alr_a", "--period", "day", "--limit", "1",
        "--warn", "50")
    wait_loaded(one, ledger)
    wait_loaded(two, ledger)
    # both processes spend past 50 %, each sees the other's spend: both
    # cross the threshold
    for i in range(4):
        assert run(one, "alr_a", "SELECT 1") == []
        assert run(two, "alr_a", "SELECT 2") == []
        time.sleep(0.3)
    hook.wait(1, timeout=10)
    smtp.box.wait(1, timeout=10)
    time.sleep(3 * SLOW)  # a second copy would have come by now
    assert len(hook.requests) == 1, texts(hook)
    assert len(smtp.box.messages) == 1, [m["message"]["Subject"] for m in smtp.box.messages]
    slack, = texts(hook)
    assert "budget user alr_a/day is at " in slack and "%" in slack, slack
    m = smtp.box.messages[0]
    assert "budget user alr_a/day is at" in m["message"]["Subject"], m["message"]["Subject"]
    assert "budget user alr_a/day is at" in mail_text(m), mail_text(m)
    assert sorted(m["rcpt_tos"]) == sorted(["ops@example.com", "finance@example.com"])
    # the ledger says what went where, once
    rows = alert_rows(ledger)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == \
        [(50, "email", True, 1), (50, "log", True, 0), (50, "slack", True, 1)], rows
    sent = one.log().count("event=alert_sent") + two.log().count("event=alert_sent")
    assert sent == 2, (one.log_tail(), two.log_tail())
    stop(one)
    stop(two)


def test_refusal_storm_is_one_message_with_the_count(pgtally, users, smtp, hook, cert,  # noqa
                                                     tmp_path):
    keys = dict(PER_QUERY, **mail_keys(smtp, cert, tmp_path))
    keys.update({"report.slack_webhook_url": hook.url, "alerts.batch_interval": "4s"})
    proxy = pgtally(**keys)
    ledger = ledger_file(proxy)
    ctl(ledger, "budget", "set", "--user", "alr_b", "--period", "day", "--limit", "0.1")
    wait_loaded(proxy, ledger)
    assert run(proxy, "alr_b", "SELECT 1") == []
    t0 = time.monotonic()
    states = run(proxy, "alr_b", "SELECT 2", n=200)
    took = time.monotonic() - t0
    assert states == ["53400"] * 200, states[:5]
    print("200 refusals in %.2f s" % took)

    def bursts():
        return [t for t in texts(hook) if "refused" in t]
    wait_until(lambda: bursts(), 10 * SLOW, what="the batch of refusals")
    time.sleep(5 * SLOW)  # another window: nothing more was refused
    burst, = bursts()
    assert "pgtally: 200 statements refused, 0 cancelled" in burst, burst
    assert "200 refused user=alr_b budget=" in burst and "sqlstate=53400" in burst, burst
    assert "Examples:" in burst and "alr_b (53400): pgtally: budget user alr_b/day is spent" \
        in burst, burst
    # and the command that approves the refused request (docs/escrow.md)
    assert re.search(r"\. To approve: pgtallyctl ticket approve T-[0-9A-Z]{6} --for 2h", burst), burst
    # the threshold crossing (100 %) came on its own
    assert any("is at 100%" in t for t in texts(hook)), texts(hook)
    assert len(hook.requests) == 2, texts(hook)
    mails = [m for m in smtp.box.wait(2) if "refused" in m["message"]["Subject"]]
    assert len(mails) == 1, [m["message"]["Subject"] for m in smtp.box.messages]
    assert "refused 200 statements" in mail_text(mails[0]), mail_text(mails[0])
    stop(proxy)


def test_webhook_failing_once_gets_the_alert_once(pgtally, users, hook):
    hook.statuses = [500]
    proxy = pgtally(**dict(PER_QUERY, **{"report.slack_webhook_url": hook.url,
                                         "report.retry_interval": "1s"}))
    ledger = ledger_file(proxy)
    ctl(ledger, "budget", "set", "--user", "alr_c", "--period", "day", "--limit", "1",
        "--warn", "20")
    wait_loaded(proxy, ledger)
    assert run(proxy, "alr_c", "SELECT 1", n=3) == []
    hook.wait(2, timeout=10)
    time.sleep(3 * SLOW)
    assert len(hook.requests) == 2, texts(hook)
    first, second = texts(hook)
    assert first == second and "alr_c/day is at 20%" in first, (first, second)
    proxy.wait_log(r"event=alert_failed kind=budget channel=slack .*transient=yes"
                   r" .*webhook answered HTTP 500")
    (pct, channel, delivered, attempts, last_error, _), = \
        [r for r in alert_rows(ledger) if r[1] == "slack"]
    assert (pct, delivered, attempts, last_error) == (20, True, 2, None)
    stop(proxy)


def test_cancel_of_a_running_statement_is_an_alert(pgtally, users, hook):
    proxy = pgtally(**dict(PER_SECOND, **{"report.slack_webhook_url": hook.url,
                                          "alerts.batch_interval": "1s"}))
    ledger = ledger_file(proxy)
    ctl(ledger, "budget", "set", "--user", "alr_d", "--period", "day", "--limit", "0.5")
    wait_loaded(proxy, ledger)
    with psycopg.connect(proxy.dsn(user="alr_d"), autocommit=True) as c:
        with pytest.raises(errors.QueryCanceled):
            c.execute("SELECT pg_sleep(10)")
    wait_until(lambda: any("cancelled" in t and "57014" in t for t in texts(hook)),
               10 * SLOW, what="the cancel's alert")
    burst, = [t for t in texts(hook) if "57014" in t]
    assert "0 statements refused, 1 cancelled" in burst, burst
    assert "1 cancelled user=alr_d budget=" in burst, burst
    stop(proxy)


def test_rule_block_by_a_user_named_like_a_mention_is_escaped(pgtally, pg, users, hook):
    """A block rule's refusals are alerts too (rule id, 42T01); a user named
    "<!channel>" cannot make the Slack message ping a channel."""
    evil = "alr_<!channel>"
    with pg.admin() as a:
        a.execute('DROP ROLE IF EXISTS "%s"' % evil)
        a.execute('CREATE ROLE "%s" LOGIN IN ROLE pgtally_test_users' % evil)
    proxy = pgtally(**dict(PER_QUERY, **{"report.slack_webhook_url": hook.url,
                                         "alerts.batch_interval": "1s"}))
    ledger = ledger_file(proxy)
    assert run(proxy, evil, "SELECT 41 + 1") == []
    wait_until(lambda: ledger_query(ledger, "SELECT fingerprint FROM queries"), 5 * SLOW,
               what="the statement in the ledger")
    fp = ledger_query(ledger, "SELECT fingerprint FROM queries")[0][0]
    out = ctl(ledger, "rule", "add", "--fingerprint", "%016x" % (fp & 0xFFFFFFFFFFFFFFFF),
              "--action", "block", "--message", "no <!here> sums today").stdout
    rid = int(out.split()[1].rstrip(":"))
    wait_loaded(proxy, ledger)
    assert run(proxy, evil, "SELECT 1 + 2", n=3) == ["42T01"] * 3
    wait_until(lambda: hook.requests, 10 * SLOW, what="the batch of refusals")
    burst, = texts(hook)
    assert "3 refused user=alr_&lt;!channel&gt; rule=%d sqlstate=42T01" % rid in burst, burst
    assert "no &lt;!here&gt; sums today" in burst, burst
    assert "<!" not in burst, burst
    stop(proxy)


def test_refusals_of_many_users_stay_bounded_and_counted(pgtally, pg, hook):
    """40 users refused in one window: 32 groups are itemised, the rest
    counted, and the total is exact."""
    names = ["alr_many_%02d" % i for i in range(40)]
    with pg.admin() as a:
        for n in names:
            a.execute("DROP ROLE IF EXISTS %s" % n)
            a.execute("CREATE ROLE %s LOGIN IN ROLE pgtally_test_users" % n)
    proxy = pgtally(**dict(PER_QUERY, **{"report.slack_webhook_url": hook.url,
                                         "alerts.batch_interval": "5s",
                                         "budget.unknown_estimate": "refuse"}))
    ledger = ledger_file(proxy)
    ctl(ledger, "budget", "set", "--default", "--period", "day", "--limit", "100",
        "--per-query", "1")
    wait_loaded(proxy, ledger)
    for n in names:
        assert run(proxy, n, "SELECT 1", n=2) == ["54000"] * 2
    wait_until(lambda: hook.requests, 15 * SLOW, what="the batch of refusals")
    burst, = texts(hook)
    assert "pgtally: 80 statements refused, 0 cancelled" in burst, burst
    assert burst.count(" refused user=alr_many_") == 32, burst
    assert "16 more in other groups, not itemised (more than 32 groups)" in burst, burst
    stop(proxy)


def test_an_expired_claim_is_sent_by_another_process_a_live_one_is_not(pgtally, hook, tmp_path):
    """Rows of a sender that died: its expired claim is taken over and the
    alert delivered; a claim still live (a sender busy with it) is left."""
    import sqlite3
    ledger = tmp_path / "claims.db"
    proxy = pgtally(ledger=str(ledger),
                    **dict(PER_QUERY, **{"report.slack_webhook_url": hook.url}))
    wait_until(lambda: ledger.exists() and ledger_query(
        ledger, "SELECT 1 FROM sqlite_master WHERE name = 'alerts_sent_pending'"),
        5 * SLOW, what="the ledger's schema")
    now = int(time.time() * 1e6)
    con = sqlite3.connect(str(ledger), timeout=10)
    with con:
        for budget, until in ((7, now - 1), (8, now + 600 * 10**6)):
            text = "pgtally: budget user dead%d/day is at 80%%" % budget
            con.execute("INSERT INTO alerts_sent (budget_id, period_start, threshold_pct,"
                        " channel, sent_at, delivered_at, message) VALUES (?, 0, 80, 'log',"
                        " ?, ?, ?)", (budget, now, now, text))
            con.execute("INSERT INTO alerts_sent (budget_id, period_start, threshold_pct,"
                        " channel, sent_at, message, attempts, claimed_by, claimed_until)"
                        " VALUES (?, 0, 80, 'slack', ?, ?, 1, 4242, ?)",
                        (budget, now, text, until))
    con.close()
    hook.wait(1, timeout=10)
    time.sleep(2 * SLOW)
    sent, = texts(hook)
    assert sent.startswith("*pgtally: budget user dead7/day is at 80%*") and "dead8" not in sent, \
        sent
    got = ledger_query(ledger, "SELECT budget_id, delivered_at IS NOT NULL, attempts,"
                       " claimed_by FROM alerts_sent WHERE channel = 'slack' ORDER BY 1")
    assert got == [(7, 1, 2, None), (8, 0, 1, 4242)], got
    stop(proxy)


def test_dead_webhook_costs_the_statements_nothing(pgtally, users):
    dead = "http://127.0.0.1:%d/services/nobody" % free_port()
    proxy = pgtally(**dict(PER_QUERY, **{"report.slack_webhook_url": dead,
                                         "alerts.batch_interval": "1s"}))
    ledger = ledger_file(proxy)
    ctl(ledger, "budget", "set", "--user", "alr_e", "--period", "day", "--limit", "0.1")
    wait_loaded(proxy, ledger)
    t0 = time.monotonic()
    states = run(proxy, "alr_e", "SELECT 1", n=100)
    assert states == ["53400"] * 99, states[:3]
    assert time.monotonic() - t0 < 10 * SLOW
    proxy.wait_log(r"event=alert_failed kind=refusals channel=slack refused=99 .*transient=yes",
                   timeout=10 * SLOW)
    # still serving, and the next batch holds both windows' refusals
    assert run(proxy, "alr_e", "SELECT 1") == ["53400"]
    stop(proxy)


def reload(proxy, pattern, **keys):
    proxy.config.update(keys)
    write_ini(proxy.config_path, proxy.config)
    mark = proxy.log_mark()
    proxy.send_signal(signal.SIGHUP)
    proxy.wait_log(pattern, since=mark, timeout=5 * SLOW)


def test_sighup_starts_and_stops_the_alerts(pgtally, users, hook):
    proxy = pgtally(**dict(PER_QUERY, **{"alerts.batch_interval": "1s"}))
    ledger = ledger_file(proxy)
    assert "event=alerts_started" not in proxy.log()
    ctl(ledger, "budget", "set", "--user", "alr_f", "--period", "day", "--limit", "0.1",
        "--warn", "none")
    wait_loaded(proxy, ledger)
    assert run(proxy, "alr_f", "SELECT 1", n=3) == ["53400"] * 2
    # a webhook appears: alerts start; the refusals before are not counted,
    # the crossing of 100 % (within the hour) is sent
    reload(proxy, r"event=alerts_started channels=slack",
           **{"report.slack_webhook_url": hook.url})
    assert run(proxy, "alr_f", "SELECT 1", n=5) == ["53400"] * 5
    hook.wait(2, timeout=10)
    assert [t for t in texts(hook) if "pgtally: 5 statements refused, 0 cancelled" in t], \
        texts(hook)
    assert [t for t in texts(hook) if "alr_f/day is at 100%" in t], texts(hook)
    # channels = none: nothing more goes out
    reload(proxy, r"event=alerts_configured channels=none", **{"alerts.channels": "none"})
    assert run(proxy, "alr_f", "SELECT 1", n=5) == ["53400"] * 5
    time.sleep(3 * SLOW)
    assert len(hook.requests) == 2, texts(hook)
    stop(proxy)


def test_alert_channel_without_its_settings_is_a_config_error(tmp_path):
    r = run_pgtally(["--alerts-channels", "email", "--ledger", str(tmp_path / "x.db")])
    assert r.returncode == 1, r
    assert "alerts.channels names email, but no mail server is configured" in r.stderr, r.stderr
    r = run_pgtally(["--alerts-channels", "pager", "--ledger", str(tmp_path / "x.db")])
    assert r.returncode == 1 and "slack, email (separated by commas), or none" in r.stderr, \
        r.stderr
