"""Delivery of the daily report from a running pgtally: a real SMTP server
on loopback (aiosmtpd, in this process) with STARTTLS or SMTPS and AUTH,
and a local HTTP(S) server standing in for the Slack webhook.

The ledger is filled through pgtally with real statements on a day D (the
clock moved there with PGTALLY_CLOCK_OFFSET); then a pgtally with delivery
configured is started with its clock on a later day, before or after
[report] time, and what the servers receive is checked: headers and both
parts of the e-mail, the Block Kit JSON, retries with backoff, each
(date, channel) once, catch-up after an outage, two processes sharing the
ledger, and a prompt stop in the middle of a send. `pgtallyctl report
--send` is driven against the same servers: it tries a channel again after
a transient failure (a connection error, HTTP 5xx, SMTP 4xx), not after a
permanent one (HTTP 404), and sends each channel once.
"""

import datetime
import email
import email.utils
import json
import re
import signal
import sqlite3
import ssl
import threading
import time
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import (SLOW, free_port, make_cert, run_pgtallyctl, run_psql, wait_until,
                     write_ini)
from test_metering import stop

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
from aiosmtpd.smtp import AuthResult  # noqa: E402

# smtps: aiosmtpd warns of AUTH without TLS, counting only STARTTLS as TLS
pytestmark = pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS:UserWarning")

UTC = datetime.timezone.utc
PRICES = {"pricing.per_query": "0.1", "pricing.per_compute_second": "0",
          "pricing.per_gib_returned": "0", "estimate.mode": "off"}
SMTP_USER, SMTP_PASSWORD = "pgtally", "mail-secret-42"
FROM = "pgtally@example.com"
TO = ["ops@example.com", "finance@example.com"]
HOOK_SECRET = "T0000/B0000/XsecretXwebhookXtoken"


# ---------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1/localhost: the SMTP and
    webhook servers show it, and pgtally trusts it through report.ca_file."""
    d = tmp_path_factory.mktemp("delivery-cert")
    crt, key = make_cert(d, "mail", "localhost")
    return crt, key


def server_context(cert):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


class Mailbox:
    """aiosmtpd handler: keeps every message received; can refuse the next
    ones with a temporary error."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []
        self.refuse = 0  # answer 451 to this many messages first
        self.auth_attempts = []

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.refuse:
                self.refuse -= 1
                return "451 4.3.0 Mailbox busy, try again later"
            self.messages.append({
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "tls": session.ssl is not None,
                "authenticated": bool(session.authenticated),
                "raw": envelope.original_content or envelope.content,
                "message": email.message_from_bytes(envelope.original_content
                                                    or envelope.content,
                                                    policy=policy.default),
            })
        return "250 2.0.0 Ok: queued as PGT42"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login == SMTP_USER.encode()
              and auth_data.password == SMTP_PASSWORD.encode())
        self.auth_attempts.append((mechanism, ok))
        # handled=False: aiosmtpd answers 235 or 535 itself
        return AuthResult(success=ok, handled=False)

    def wait(self, count, timeout=10.0):
        wait_until(lambda: len(self.messages) >= count, timeout * SLOW, interval=0.05,
                   what="%d e-mail(s); got %d" % (count, len(self.messages)))
        return self.messages


class SmtpServer:
    def __init__(self, cert, mode="starttls"):
        self.box = Mailbox()
        self.port = free_port()
        kw = {}
        if mode == "starttls":
            kw = dict(tls_context=server_context(cert), require_starttls=True,
                      authenticator=self.box.authenticate, auth_required=True)
        elif mode == "smtps":
            # aiosmtpd counts only STARTTLS as TLS for AUTH; this one is
            # TLS from the first byte
            kw = dict(ssl_context=server_context(cert), auth_require_tls=False,
                      authenticator=self.box.authenticate, auth_required=True)
        self.controller = aiosmtpd_controller.Controller(
            self.box, hostname="127.0.0.1", port=self.port, **kw)
        self.controller.start()

    def stop(self):
        self.controller.stop()


@pytest.fixture
def smtp(cert):
    """An SMTP server on loopback that requires STARTTLS and AUTH."""
    s = SmtpServer(cert)
    yield s
    s.stop()


class Hook:
    """A stand-in for Slack's incoming webhook: records each POST and
    answers with the next status of `statuses` (then 200)."""

    def __init__(self, cert=None):
        self.lock = threading.Lock()
        self.requests = []
        self.statuses = []
        self.delay = 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    hook.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": body, "at": time.monotonic()})
                    status = hook.statuses.pop(0) if hook.statuses else 200
                time.sleep(hook.delay)
                answer = b"ok" if status == 200 else b"internal_error: try later"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if cert:
            self.server.socket = server_context(cert).wrap_socket(self.server.socket,
                                                                  server_side=True)
            scheme = "https"
        self.url = "%s://127.0.0.1:%d/services/%s" % (scheme, self.server.server_address[1],
                                                      HOOK_SECRET)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, count, timeout=10.0):
        wait_until(lambda: len(self.requests) >= count, timeout * SLOW, interval=0.05,
                   what="%d webhook POST(s); got %d" % (count, len(self.requests)))
        return self.requests

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.stop()


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def day_d():
    """A day well away from today, so nothing else in the ledger is on it."""
    return datetime.datetime.now(UTC).date() + datetime.timedelta(days=40)


def clock_env(at):
    """PGTALLY_CLOCK_OFFSET that puts pgtally's clock at datetime `at`."""
    return {"PGTALLY_CLOCK_OFFSET": "%.3f" % (at.timestamp() - time.time())}


def at(day, hh, mm, ss=0, tz=UTC):
    return datetime.datetime.combine(day, datetime.time(hh, mm, ss), tzinfo=tz)


def fill_day(pgtally, ledger_path, day, statements=3, tz="UTC"):
    """Runs `statements` queries through a pgtally whose clock is at noon of
    day, then stops it (SIGINT writes the ledger). Each costs 0.10 USD."""
    p = pgtally(env=clock_env(at(day, 12, 0, tz=_zone(tz))), ledger=str(ledger_path),
                timezone=tz, **PRICES)
    for i in range(statements):
        r = run_psql(p.dsn(), "SELECT %d AS n" % i)
        assert r.returncode == 0, r
    stop(p)


def _zone(name):
    if name == "UTC":
        return UTC
    from zoneinfo import ZoneInfo
    return ZoneInfo(name)


def mail_keys(smtp, cert, tmp_path, **extra):
    pw = tmp_path / "smtp-password"
    pw.write_text(SMTP_PASSWORD + "\n")
    keys = {"report.smtp_url": "smtp://127.0.0.1:%d" % smtp.port,
            "report.smtp_user": SMTP_USER, "report.smtp_password_file": str(pw),
            "report.mail_from": FROM, "report.mail_to": ", ".join(TO),
            "report.ca_file": str(cert[0])}
    keys.update(extra)
    return keys


def reports_sent(ledger_path):
    con = sqlite3.connect("file:%s?mode=ro" % ledger_path, uri=True, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(
            "SELECT * FROM reports_sent ORDER BY report_date, channel")]
    finally:
        con.close()


def hook_dates(hook):
    """The report date of each POST: the date in its Block Kit header."""
    out = []
    for r in hook.requests:
        body = json.loads(r["body"])
        head = [b for b in body["blocks"] if b.get("type") == "header"]
        m = re.search(r"\d{4}-\d{2}-\d{2}", head[0]["text"]["text"] if head else "")
        out.append(m.group(0) if m else None)
    return out


def settle(seconds=1.5):
    """Long enough for a duplicate send (retries run every 0.3 s here)."""
    time.sleep(seconds * SLOW)


# ---------------------------------------------------------------------------
# e-mail
# ---------------------------------------------------------------------------

def test_email_over_starttls_with_auth(pgtally, smtp, cert, tmp_path):
    """Yesterday's report (D, 3 statements, 0.30 USD) is mailed at start
    after report.time: STARTTLS, AUTH, From/To/Subject/Date/Message-ID/
    MIME-Version, multipart/alternative with text/plain and text/html."""
    d = day_d()
    ledger = tmp_path / "ledger.db"
    fill_day(pgtally, ledger, d)
    now = at(d + datetime.timedelta(days=1), 10, 0)
    p = pgtally(env=clock_env(now), ledger=str(ledger), **PRICES,
                **mail_keys(smtp, cert, tmp_path, **{"report.catch_up_days": "1"}))
    msgs = smtp.box.wait(1)
    settle()
    assert len(smtp.box.messages) == 1, [m["message"]["Subject"] for m in smtp.box.messages]
    m = msgs[0]
    assert m["tls"] and m["authenticated"], m
    assert smtp.box.auth_attempts and all(ok for _, ok in smtp.box.auth_attempts)
    assert m["mail_from"] == FROM and sorted(m["rcpt_tos"]) == sorted(TO)
    msg = m["message"]
    assert msg["From"] == FROM
    assert [a for _, a in email.utils.getaddresses([msg["To"]])] == TO
    subject = str(msg["Subject"])
    assert d.isoformat() in subject and "0.30" in subject and "USD" in subject, subject
    sent = email.utils.parsedate_to_datetime(msg["Date"])
    assert abs((sent - now).total_seconds()) < 120, (msg["Date"], now)
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith("@example.com>")
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [x.get_content_type() for x in parts] == ["text/plain", "text/html"]
    text, html = parts[0].get_content(), parts[1].get_content()
    assert d.isoformat() in text and "0.30" in text, text
    assert d.isoformat() in html and "<" in html and "0.30" in html, html[:500]
    # every line of the raw message fits SMTP's limit
    assert max(len(line) for line in m["raw"].split(b"\r\n")) <= 998
    line = p.wait_log(r"event=report_sent date=%s channel=email attempt=1 " % d)
    assert 'answer="250 2.0.0 Ok: queued as PGT42"' in line, line
    assert SMTP_PASSWORD not in p.log()
    row, = [r for r in reports_sent(ledger) if r["report_date"] == d.isoformat()]
    assert row["channel"] == "email" and row["sent_at"] and row["attempts"] == 1
    assert row["last_error"] is None and row["claimed_until"] is None


def test_email_over_smtps(pgtally, cert, tmp_path):
    """smtps:// is TLS from the first byte."""
    server = SmtpServer(cert, mode="smtps")
    try:
        d = day_d()
        now = at(d + datetime.timedelta(days=1), 10, 0)
        keys = mail_keys(server, cert, tmp_path, **{"report.catch_up_days": "1"})
        keys["report.smtp_url"] = "smtps://127.0.0.1:%d" % server.port
        p = pgtally(env=clock_env(now), **keys)
        m, = server.box.wait(1)
        # the server speaks nothing but TLS (aiosmtpd's session.ssl only
        # tells STARTTLS)
        assert m["authenticated"]
        assert d.isoformat() in str(m["message"]["Subject"])
        p.wait_log(r"event=report_sent date=%s channel=email attempt=1" % d)
    finally:
        server.stop()


def test_starttls_is_required(pgtally, cert, tmp_path):
    """A server that offers no STARTTLS gets nothing (smtp_tls = starttls is
    the default); the failure is logged and recorded, and retried."""
    server = SmtpServer(cert, mode="plain")
    try:
        d = day_d()
        keys = mail_keys(server, cert, tmp_path, **{"report.catch_up_days": "1",
                                                    "report.retry_interval": "300ms"})
        del keys["report.smtp_user"], keys["report.smtp_password_file"]
        ledger = tmp_path / "ledger.db"
        p = pgtally(env=clock_env(at(d + datetime.timedelta(days=1), 10, 0)),
                    ledger=str(ledger), **keys)
        line = p.wait_log(r"event=report_failed date=%s channel=email attempt=1 " % d)
        assert "STARTTLS" in line or "TLS" in line, line
        p.wait_log(r"event=report_retry date=%s channel=email" % d)
        p.wait_log(r"event=report_failed date=%s channel=email attempt=2 " % d)
        assert server.box.messages == []
        stop(p)
        row, = reports_sent(ledger)
        assert row["sent_at"] is None and row["attempts"] >= 2 and "TLS" in row["last_error"]
    finally:
        server.stop()


def test_smtp_error_carries_the_server_answer(pgtally, smtp, cert, tmp_path):
    """A wrong password: the log and reports_sent say what the server said
    (535); nothing is delivered."""
    d = day_d()
    ledger = tmp_path / "ledger.db"
    keys = mail_keys(smtp, cert, tmp_path, **{"report.catch_up_days": "1"})
    bad = tmp_path / "wrong-password"
    bad.write_text("not-the-password")
    keys["report.smtp_password_file"] = str(bad)
    p = pgtally(env=clock_env(at(d + datetime.timedelta(days=1), 10, 0)), ledger=str(ledger),
                **keys)
    line = p.wait_log(r"event=report_failed date=%s channel=email attempt=1 " % d)
    assert "535" in line, line
    stop(p)
    row, = reports_sent(ledger)
    assert row["sent_at"] is None and "535" in row["last_error"], row
    assert smtp.box.messages == []


def test_temporary_smtp_refusal_is_retried_once_delivered(pgtally, smtp, cert, tmp_path):
    """451 to the first message: retried after retry_interval, delivered once."""
    smtp.box.refuse = 1
    d = day_d()
    ledger = tmp_path / "ledger.db"
    p = pgtally(env=clock_env(at(d + datetime.timedelta(days=1), 10, 0)), ledger=str(ledger),
                **mail_keys(smtp, cert, tmp_path, **{"report.catch_up_days": "1",
                                                      "report.retry_interval": "300ms"}))
    smtp.box.wait(1)
    line = p.wait_log(r"event=report_failed date=%s channel=email attempt=1 " % d)
    assert "451" in line, line
    p.wait_log(r"event=report_sent date=%s channel=email attempt=2 " % d)
    settle()
    assert len(smtp.box.messages) == 1


# ---------------------------------------------------------------------------
# Slack
# ---------------------------------------------------------------------------

def test_slack_webhook_gets_block_kit_over_https(pgtally, cert, tmp_path):
    """The slack rendering is POSTed as application/json over HTTPS (the
    test CA through report.ca_file); the webhook URL, a secret read from a
    file, never reaches the log."""
    h = Hook(cert)
    try:
        d = day_d()
        ledger = tmp_path / "ledger.db"
        fill_day(pgtally, ledger, d)
        url_file = tmp_path / "slack-url"
        url_file.write_text("\n  %s  \n" % h.url)
        p = pgtally(env=clock_env(at(d + datetime.timedelta(days=1), 10, 0)),
                    ledger=str(ledger), **PRICES,
                    **{"report.slack_webhook_url_file": str(url_file),
                       "report.ca_file": str(cert[0]), "report.catch_up_days": "1"})
        req, = h.wait(1)
        assert req["path"] == "/services/" + HOOK_SECRET
        assert req["headers"]["Content-Type"] == "application/json"
        body = json.loads(req["body"])
        assert isinstance(body.get("blocks"), list) and body["blocks"], body
        assert all(isinstance(b, dict) and "type" in b for b in body["blocks"]), body
        text = json.dumps(body)
        assert d.isoformat() in text and "0.30" in text, text[:800]
        line = p.wait_log(r"event=report_sent date=%s channel=slack attempt=1 " % d)
        assert 'answer="HTTP 200: ok"' in line, line
        settle()
        assert len(h.requests) == 1
        assert HOOK_SECRET not in p.log()
    finally:
        h.stop()


def test_webhook_500_then_200_is_retried_and_delivered_once(pgtally, hook, tmp_path):
    hook.statuses = [500]
    d = day_d()
    ledger = tmp_path / "ledger.db"
    p = pgtally(env=clock_env(at(d + datetime.timedelta(days=1), 10, 0)), ledger=str(ledger),
                **{"report.slack_webhook_url": hook.url, "report.catch_up_days": "1",
                   "report.retry_interval": "300ms"})
    reqs = hook.wait(2)
    line = p.wait_log(r"event=report_failed date=%s channel=slack attempt=1 " % d)
    assert 'error="webhook answered HTTP 500: internal_error: try later"' in line, line
    p.wait_log(r"event=report_retry date=%s channel=slack in_s=0.3" % d)
    p.wait_log(r"event=report_sent date=%s channel=slack attempt=2 " % d)
    assert reqs[1]["at"] - reqs[0]["at"] >= 0.25
    settle()
    assert len(hook.requests) == 2, "delivered more than once"
    assert hook.requests[0]["body"] == hook.requests[1]["body"]
    stop(p)
    row, = reports_sent(ledger)
    assert (row["channel"], row["attempts"], row["last_error"]) == ("slack", 2, None)
    assert row["sent_at"] is not None


def test_backoff_doubles(pgtally, hook, tmp_path):
    """Failures are retried after 0.3 s, 0.6 s, 1.2 s..."""
    hook.statuses = [500, 500, 500]
    d = day_d()
    p = pgtally(env=clock_env(at(d + datetime.timedelta(days=1), 10, 0)),
                **{"report.slack_webhook_url": hook.url, "report.catch_up_days": "1",
                   "report.retry_interval": "300ms"})
    reqs = hook.wait(4, timeout=15)
    gaps = [b["at"] - a["at"] for a, b in zip(reqs, reqs[1:])]
    assert 0.25 <= gaps[0] < 0.6 * SLOW + 0.3, gaps
    assert gaps[1] >= 0.55 and gaps[2] >= 1.15, gaps
    for wait_s in ("0.3", "0.6", "1.2"):
        p.wait_log(r"event=report_retry date=%s channel=slack in_s=%s" % (d, wait_s))
    p.wait_log(r"event=report_sent date=%s channel=slack attempt=4 " % d)


# ---------------------------------------------------------------------------
# the schedule
# ---------------------------------------------------------------------------

def test_sent_at_report_time_once(pgtally, hook, smtp, cert, tmp_path):
    """pgtally starts 3 s before report.time (09:30 in Europe/Berlin): nothing
    is sent before it; at 09:30 yesterday's report goes to both channels,
    once."""
    zone = "Europe/Berlin"
    d = day_d()
    ledger = tmp_path / "ledger.db"
    fill_day(pgtally, ledger, d, tz=zone)
    start = at(d + datetime.timedelta(days=1), 9, 30, tz=_zone(zone)) - \
        datetime.timedelta(seconds=3)
    t0 = time.monotonic()
    p = pgtally(env=clock_env(start), ledger=str(ledger), timezone=zone, **PRICES,
                **mail_keys(smtp, cert, tmp_path, **{
                    "report.time": "09:30", "report.catch_up_days": "0",
                    "report.slack_webhook_url": hook.url}))
    p.wait_log(r"event=report_schedule time=09:30 catch_up_days=0 .*channels=slack,email")
    time.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))
    assert hook.requests == [] and smtp.box.messages == [], "sent before report.time"
    hook.wait(1, timeout=5)
    smtp.box.wait(1, timeout=5)
    elapsed = time.monotonic() - t0
    assert 2.5 <= elapsed < 6 * SLOW, elapsed
    assert hook_dates(hook) == [d.isoformat()]
    assert d.isoformat() in str(smtp.box.messages[0]["message"]["Subject"])
    settle(2)
    assert len(hook.requests) == 1 and len(smtp.box.messages) == 1
    stop(p)
    assert {(r["report_date"], r["channel"], r["attempts"]) for r in reports_sent(ledger)} == \
        {(d.isoformat(), "slack", 1), (d.isoformat(), "email", 1)}


def test_catch_up_after_an_outage(pgtally, hook, tmp_path):
    """Run 1 (D+1 10:00) sends D-2, D-1 and D (catch_up_days = 3); after an
    outage, run 2 (D+4 10:00) sends the three days missed, D+1..D+3, and
    not D again; run 3 at the same time sends nothing."""
    d = day_d()
    ledger = tmp_path / "ledger.db"
    fill_day(pgtally, ledger, d)
    keys = {"report.slack_webhook_url": hook.url, "report.catch_up_days": "3"}
    days = [(d + datetime.timedelta(days=k)).isoformat() for k in range(-2, 4)]
    p = pgtally(env=clock_env(at(d + datetime.timedelta(days=1), 10, 0)), ledger=str(ledger),
                **keys)
    hook.wait(3)
    settle()
    assert hook_dates(hook) == days[:3]
    stop(p)
    p = pgtally(env=clock_env(at(d + datetime.timedelta(days=4), 10, 0)), ledger=str(ledger),
                **keys)
    hook.wait(6)
    settle()
    assert hook_dates(hook) == days, "each day once, oldest first"
    assert "0.30" in hook.requests[2]["body"].decode()
    stop(p)
    p = pgtally(env=clock_env(at(d + datetime.timedelta(days=4), 10, 0, 5)),
                ledger=str(ledger), **keys)
    p.wait_log(r"event=report_schedule ")
    settle()
    assert len(hook.requests) == 6
    rows = reports_sent(ledger)
    assert [r["report_date"] for r in rows] == days
    assert all(r["sent_at"] and r["attempts"] == 1 for r in rows), rows


def _two_senders_send_once(pgtally, hook, ledger):
    """Two pgtally processes on one ledger, both due to send the same report
    to a slow webhook: one sends, the other sees the claim. Returns the
    report's date."""
    hook.delay = 1.0
    d = day_d()
    start = at(d + datetime.timedelta(days=1), 9, 0) - datetime.timedelta(seconds=2)
    keys = {"report.slack_webhook_url": hook.url, "report.catch_up_days": "0",
            "report.retry_interval": "300ms", "ledger": ledger}
    a = pgtally(env=clock_env(start), **keys)
    b = pgtally(env=clock_env(start), **keys)
    hook.wait(1, timeout=6)
    settle(3)
    assert len(hook.requests) == 1, "sent by both processes"
    logs = a.log() + b.log()
    assert logs.count("event=report_sent ") == 1, logs
    assert "event=report_claimed_elsewhere date=%s channel=slack" % d in logs, logs
    stop(a)
    stop(b)
    return d


def test_two_processes_sharing_the_ledger_send_once(pgtally, hook, tmp_path):
    """Two pgtally processes, one ledger, the same report time: one sends,
    the other finds the claim (the webhook answers slowly) and then the
    record, and sends nothing."""
    ledger = tmp_path / "ledger.db"
    _two_senders_send_once(pgtally, hook, str(ledger))
    row, = reports_sent(ledger)
    assert row["attempts"] == 1 and row["sent_at"] is not None


def test_two_processes_sharing_a_postgresql_ledger_send_once(pgtally, hook, ledger_pg):
    """The same with a PostgreSQL ledger, where the claim is an UPDATE whose
    WHERE the second sender's rechecks once the first one commits."""
    uri = ledger_pg.new_ledger()
    d = _two_senders_send_once(pgtally, hook, uri)
    with ledger_pg.connect(uri) as c:
        rows = c.execute("SELECT report_date, attempts, sent_at IS NOT NULL, claimed_until "
                         "FROM pgtally.reports_sent").fetchall()
    assert rows == [(d.isoformat(), 1, True, None)]


def test_sigterm_during_a_send_stops_promptly_and_releases_the_claim(pgtally, hook, tmp_path):
    """The webhook hangs; SIGTERM ends pgtally within a couple of seconds,
    the attempt is recorded as interrupted, and a restart sends at once."""
    hook.delay = 30.0
    d = day_d()
    ledger = tmp_path / "ledger.db"
    keys = {"report.slack_webhook_url": hook.url, "report.catch_up_days": "1",
            "ledger": str(ledger)}
    now = at(d + datetime.timedelta(days=1), 10, 0)
    p = pgtally(env=clock_env(now), **keys)
    hook.wait(1)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    assert p.wait_exit(10 * SLOW) == 0, p.log_tail()
    assert time.monotonic() - t0 < 3 * SLOW
    assert "interrupted" in p.wait_log(r"event=report_failed date=%s channel=slack" % d)
    row, = reports_sent(ledger)
    assert row["sent_at"] is None and row["claimed_until"] is None, row
    hook.delay = 0.0
    p = pgtally(env=clock_env(now), **keys)
    hook.wait(2)
    p.wait_log(r"event=report_sent date=%s channel=slack attempt=2 " % d)


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------

def test_bad_delivery_settings_stop_start_up(pgtally, tmp_path):
    cases = [
        ({"report.slack_webhook_url_file": str(tmp_path / "missing")},
         "key 'report.slack_webhook_url_file': cannot read '%s'" % (tmp_path / "missing")),
        ({"report.slack_webhook_url": "ftp://hooks.example.com/SECRETPATH"},
         "key 'report.slack_webhook_url': the value is not an https:// URL"),
        ({"report.smtp_url": "http://mail.example.com"},
         "key 'report.smtp_url': 'http://mail.example.com' is not allowed; use smtp://"),
        ({"report.smtp_url": "smtp://mail.example.com:587"},
         "report.smtp_url needs report.mail_from and report.mail_to"),
        ({"report.time": "9h"}, "key 'report.time': '9h' is not allowed; use a local time HH:MM"),
    ]
    for keys, want in cases:
        p = pgtally(wait=False, **keys)
        assert p.wait_exit(10 * SLOW) == 1, (keys, p.log())
        p.signalled = True
        assert want in p.log(), (keys, want, p.log())
        assert "SECRETPATH" not in p.log()


def test_sighup_adds_a_channel(pgtally, hook, tmp_path):
    """A pgtally started without channels begins delivering when SIGHUP
    brings a webhook into the config."""
    d = day_d()
    p = pgtally(env=clock_env(at(d + datetime.timedelta(days=1), 10, 0)),
                **{"report.catch_up_days": "1"})
    assert "event=report_schedule" not in p.log()
    p.config["report.slack_webhook_url"] = hook.url
    write_ini(p.config_path, p.config)
    mark = p.log_mark()
    p.send_signal(signal.SIGHUP)
    p.wait_log(r"event=report_schedule .*channels=slack", since=mark)
    hook.wait(1)
    assert hook_dates(hook) == [d.isoformat()]
    p.wait_log(r"event=report_sent date=%s channel=slack attempt=1 " % d, since=mark)


# ---------------------------------------------------------------------------
# pgtallyctl report --send: tries again after a transient failure
# ---------------------------------------------------------------------------

def ctl_send(pgtally, tmp_path, channels, keys, *args):
    """Fills a ledger on day D, then runs `pgtallyctl -c CFG report --date D
    --send channels args` with keys in CFG. Returns (D, ledger, the
    CompletedProcess)."""
    d = day_d()
    ledger = tmp_path / "ledger.db"
    fill_day(pgtally, ledger, d, statements=1)
    cfg = tmp_path / "ctl.ini"
    write_ini(cfg, dict(keys, ledger=str(ledger)))
    p = run_pgtallyctl(["-c", cfg, "report", "--date", d.isoformat(), "--send", channels]
                       + list(args))
    return d, ledger, p


def retries_said(p):
    """The retry lines pgtallyctl wrote to stderr."""
    return [line for line in p.stderr.splitlines() if "; retrying in " in line]


def test_ctl_send_tries_again_after_a_500_and_sends_once(pgtally, hook, tmp_path):
    hook.statuses = [500]
    d, ledger, p = ctl_send(pgtally, tmp_path, "slack", {"report.slack_webhook_url": hook.url},
                            "--retry-wait", "0.3")
    assert p.returncode == 0, p
    assert retries_said(p) == [
        "pgtallyctl report %s: slack: webhook answered HTTP 500: internal_error: try later; "
        "retrying in 0.3 s (try 2 of 3)" % d], p.stderr
    assert "report %s: slack: sent (after 2 tries)" % d in p.stdout, p.stdout
    assert len(hook.requests) == 2
    assert hook.requests[1]["at"] - hook.requests[0]["at"] >= 0.25
    row, = reports_sent(ledger)
    assert (row["channel"], row["attempts"], row["last_error"]) == ("slack", 2, None)
    assert row["sent_at"] is not None and row["claimed_until"] is None
    # sent once: another run finds it in reports_sent
    again = run_pgtallyctl(["-c", tmp_path / "ctl.ini", "report", "--date", d.isoformat(),
                            "--send", "slack"])
    assert again.returncode == 0 and "slack: already" in again.stdout, again
    assert len(hook.requests) == 2


def test_ctl_send_gives_up_after_three_tries(pgtally, hook, tmp_path):
    """Always 500: three tries, 0.2 s and then 0.6 s apart, then exit 1."""
    hook.statuses = [500] * 10
    d, ledger, p = ctl_send(pgtally, tmp_path, "slack", {"report.slack_webhook_url": hook.url},
                            "--retry-wait", "0.2")
    assert p.returncode == 1, p
    assert len(hook.requests) == 3
    said = retries_said(p)
    assert len(said) == 2, p.stderr
    assert said[0].endswith("retrying in 0.2 s (try 2 of 3)") and "HTTP 500" in said[0], said
    assert said[1].endswith("retrying in 0.6 s (try 3 of 3)"), said
    gaps = [b["at"] - a["at"] for a, b in zip(hook.requests, hook.requests[1:])]
    assert gaps[0] >= 0.15 and gaps[1] >= 0.55, gaps
    assert "report %s: slack: failed (after 3 tries)" % d in p.stdout, p.stdout
    assert "pgtallyctl report: slack: webhook answered HTTP 500" in p.stderr, p.stderr
    row, = reports_sent(ledger)
    assert row["attempts"] == 3 and row["sent_at"] is None and "500" in row["last_error"]
    assert row["claimed_until"] is None


@pytest.mark.parametrize("status, args", [(404, []), (500, ["--tries", "1"])])
def test_ctl_send_tries_once(pgtally, hook, tmp_path, status, args):
    """A 404 (the webhook is gone) is not tried again; nor anything with
    --tries 1."""
    hook.statuses = [status] * 3
    d, ledger, p = ctl_send(pgtally, tmp_path, "slack", {"report.slack_webhook_url": hook.url},
                            "--retry-wait", "0.1", *args)
    assert p.returncode == 1, p
    assert len(hook.requests) == 1
    assert retries_said(p) == [], p.stderr
    assert "pgtallyctl report: slack: webhook answered HTTP %d" % status in p.stderr, p.stderr
    assert "report %s: slack: failed\n" % d in p.stdout, p.stdout
    row, = reports_sent(ledger)
    assert row["attempts"] == 1 and row["sent_at"] is None


def test_ctl_send_tries_again_when_the_webhook_is_unreachable(pgtally, tmp_path):
    url = "http://127.0.0.1:%d/services/x" % free_port()
    d, ledger, p = ctl_send(pgtally, tmp_path, "slack", {"report.slack_webhook_url": url},
                            "--tries", "2", "--retry-wait", "0")
    assert p.returncode == 1, p
    said = retries_said(p)
    assert len(said) == 1 and said[0].endswith("retrying in 0 s (try 2 of 2)"), p.stderr
    assert "slack: webhook: " in said[0], said
    row, = reports_sent(ledger)
    assert row["attempts"] == 2 and row["sent_at"] is None


def test_ctl_send_tries_again_only_the_channel_that_failed(pgtally, hook, smtp, cert, tmp_path):
    """SMTP answers 451 to the first message: the e-mail is tried again and
    delivered; the webhook, sent at the first try, is not sent again."""
    smtp.box.refuse = 1
    keys = dict(mail_keys(smtp, cert, tmp_path), **{"report.slack_webhook_url": hook.url})
    d, ledger, p = ctl_send(pgtally, tmp_path, "slack,email", keys, "--retry-wait", "0.2")
    assert p.returncode == 0, p
    said = retries_said(p)
    assert len(said) == 1 and said[0].startswith("pgtallyctl report %s: email: smtp: " % d), said
    assert "451" in said[0] and said[0].endswith("retrying in 0.2 s (try 2 of 3)"), said
    assert "report %s: slack: sent\n" % d in p.stdout, p.stdout
    assert "report %s: email: sent (after 2 tries)" % d in p.stdout, p.stdout
    assert len(hook.requests) == 1 and len(smtp.box.messages) == 1
    rows = {r["channel"]: r for r in reports_sent(ledger)}
    assert rows["slack"]["attempts"] == 1 and rows["email"]["attempts"] == 2
    assert all(r["sent_at"] is not None for r in rows.values())


@pytest.mark.parametrize("args", [
    ["--send", "slack", "--tries", "0"],
    ["--send", "slack", "--tries", "many"],
    ["--send", "slack", "--tries", "21"],
    ["--send", "slack", "--retry-wait", "-1"],
    ["--send", "slack", "--retry-wait", "soon"],
    ["--tries", "2"],
    ["--retry-wait", "1"],
])
def test_ctl_send_bad_retry_options_are_usage_errors(tmp_path, args):
    p = run_pgtallyctl(["--ledger", tmp_path / "none.db", "report"] + args)
    assert p.returncode == 2 and "usage: pgtallyctl" in p.stderr and p.stdout == "", p
