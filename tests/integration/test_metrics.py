"""The Prometheus endpoint ([metrics] listen): statements run through pgtally
show up in GET /metrics by status, user, application and database; the body
passes `promtool check metrics`; a real Prometheus server scrapes it; label
values past [metrics] max_label_values count as "other"; the endpoint keeps
answering while SIGTERM drains.
"""

import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import json
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from helpers import DBNAME, SLOW, free_port, run_pgtally, wait_until

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(body):
    """The samples of an exposition body: {(name, frozenset(labels)): value}."""
    out = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name, **labels):
    """The sample of name whose labels include these, or 0 when none."""
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    assert len(found) <= 1, "several %s samples match %s" % (name, labels)
    return found[0] if found else 0.0


def get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def scrape(port):
    status, ctype, body = get("http://127.0.0.1:%d/metrics" % port)
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return body


def start(pgtally, **extra):
    port = free_port()
    p = pgtally(**{"metrics.listen": "127.0.0.1:%d" % port}, **extra)
    return p, port


def wait_count(port, want, what, **labels):
    """Scrapes until pgtally_statements_total with labels reaches want (the
    meter prices a batch within about 100 ms)."""
    got = {}

    def reached():
        got["samples"] = parse(scrape(port))
        got["v"] = value(got["samples"], "pgtally_statements_total", **labels)
        return got["v"] >= want

    wait_until(reached, 10 * SLOW, what=what)
    assert got["v"] == want, (what, got["v"])
    return got["samples"]


def test_counts_by_status_user_and_application(pgtally):
    p, port = start(pgtally)
    with p.connect(application_name="metrics_app") as c:
        for _ in range(3):
            c.execute("SELECT 1").fetchall()
        with pytest.raises(errors.DivisionByZero):
            c.execute("SELECT 1/0")
        s = wait_count(port, 3, "three ok statements", status="ok", user="trust_user",
                       application="metrics_app", database=DBNAME)
        assert value(s, "pgtally_sessions") == 1
    s = wait_count(port, 1, "one failed statement", status="error", user="trust_user",
                   application="metrics_app", database=DBNAME)
    assert value(s, "pgtally_cost_total", status="ok", user="trust_user") >= 0
    assert ("pgtally_cost_total", frozenset({("status", "ok"), ("user", "trust_user"),
                                             ("application", "metrics_app"),
                                             ("database", DBNAME)})) in s
    # the failed statement ran too
    assert value(s, "pgtally_statement_duration_seconds_count") == 4
    assert value(s, "pgtally_statement_duration_seconds_bucket", le="+Inf") == 4
    assert value(s, "pgtally_statement_cost_count") == 4
    assert ("pgtally_ledger_queue_depth", frozenset()) in s
    assert ("pgtally_ledger_spooled_records_total", frozenset()) in s
    wait_until(lambda: value(parse(scrape(port)), "pgtally_sessions") == 0, 5 * SLOW,
               what="the sessions gauge back at 0")


def test_promtool_check_metrics_is_clean(pgtally):
    p, port = start(pgtally)
    # a label value that needs escaping: a quote, a backslash
    with p.connect(application_name='app "quoted" \\ back') as c:
        c.execute("SELECT 1").fetchall()
    wait_count(port, 1, "the statement", application='app \\"quoted\\" \\\\ back')
    body = scrape(port)
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        "promtool:\n%s%s\nbody:\n%s" % (r.stdout, r.stderr, body)


def test_other_paths_are_404(pgtally):
    p, port = start(pgtally)
    with pytest.raises(urllib.error.HTTPError) as e:
        get("http://127.0.0.1:%d/" % port)
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        get("http://127.0.0.1:%d/metrics/x" % port)
    assert e.value.code == 404


def test_label_values_past_the_cap_count_as_other(pg, pgtally):
    users = ["metrics_u%d" % i for i in range(1, 5)]
    with pg.admin() as c:
        for u in users:
            c.execute("DROP ROLE IF EXISTS %s" % u)
            c.execute("CREATE ROLE %s LOGIN IN ROLE pgtally_test_users" % u)
    p, port = start(pgtally, **{"metrics.max_label_values": 2})
    for u in users:
        with p.connect(user=u, application_name="cap") as c:
            c.execute("SELECT 1").fetchall()
        # one at a time, so the first two users are the ones kept
        wait_until(lambda: sum(v for (n, ls), v in parse(scrape(port)).items()
                               if n == "pgtally_statements_total") >= users.index(u) + 1,
                   10 * SLOW, what="the statement of %s" % u)
    s = parse(scrape(port))
    by_user = {}
    for (n, ls), v in s.items():
        if n == "pgtally_statements_total":
            u = dict(ls)["user"]
            by_user[u] = by_user.get(u, 0) + v
    assert by_user == {"metrics_u1": 1, "metrics_u2": 1, "other": 2}, by_user


def test_served_while_sigterm_drains(pgtally):
    p, port = start(pgtally, shutdown_timeout="20s")
    c = p.connect()
    t = threading.Thread(target=lambda: c.execute("SELECT pg_sleep(2)").fetchall())
    t.start()
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    p.wait_log(r"draining", timeout=5 * SLOW)
    body = scrape(port)  # the proxy is draining: its listener is closed
    assert value(parse(body), "pgtally_sessions") == 1
    t.join(10 * SLOW)
    c.close()
    assert p.wait_exit(10 * SLOW) == 0


def test_port_in_use_is_a_startup_error(pg):
    with tempfile.TemporaryDirectory() as d:
        import socket
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        try:
            r = run_pgtally(["--listen", "127.0.0.1:%d" % free_port(),
                             "--upstream", "%s:%d" % (pg.host, pg.port),
                             "--ledger", str(Path(d) / "l.db"),
                             "--metrics-listen", "127.0.0.1:%d" % busy.getsockname()[1]],
                            timeout=10)
        finally:
            busy.close()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "metrics.listen" in r.stderr and "in use" in r.stderr, r.stderr


@pytest.mark.parametrize("key,bad", [("--metrics-listen", "nowhere"),
                                     ("--metrics-max-label-values", "0")])
def test_bad_values_name_the_key(pgtally_bin, key, bad):
    r = run_pgtally([key, bad], timeout=5)
    assert r.returncode == 1
    assert key.lstrip("-") in r.stderr and bad in r.stderr, r.stderr


@pytest.mark.timeout(90)
def test_prometheus_scrapes_pgtally(pgtally, tmp_path):
    p, port = start(pgtally)
    with p.connect(application_name="scraped") as c:
        c.execute("SELECT 1").fetchall()
    wait_count(port, 1, "the statement", application="scraped")
    web = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                   "scrape_configs:\n  - job_name: pgtally\n    static_configs:\n"
                   "      - targets: ['127.0.0.1:%d']\n" % port)
    log = open(tmp_path / "prometheus.log", "w")
    prom = subprocess.Popen([PROMETHEUS, "--config.file=%s" % cfg,
                             "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
                             "--web.listen-address=127.0.0.1:%d" % web],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        query = urllib.parse.urlencode({"query": 'pgtally_statements_total{application="scraped"}'})
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (web, query)
        found = {}

        def answered():
            assert prom.poll() is None, "prometheus exited: %s" % (
                (tmp_path / "prometheus.log").read_text()[-3000:])
            try:
                _, _, body = get(url, timeout=2)
            except (urllib.error.URLError, ConnectionError, OSError):
                return False
            r = json.loads(body)
            found["r"] = r
            return r.get("status") == "success" and r["data"]["result"]

        wait_until(answered, 30 * SLOW, interval=0.5, what="Prometheus to have scraped pgtally")
        result = found["r"]["data"]["result"]
        assert len(result) == 1, result
        metric = result[0]["metric"]
        assert metric["__name__"] == "pgtally_statements_total"
        assert metric["user"] == "trust_user" and metric["status"] == "ok", metric
        assert metric["job"] == "pgtally"
        assert float(result[0]["value"][1]) == 1
    finally:
        prom.terminate()
        try:
            prom.wait(15)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
        log.close()
        shutil.rmtree(tmp_path / "tsdb", ignore_errors=True)


def test_budget_spend_and_limit_per_budget(pgtally):
    """Each budget in force shows its limit and what its subject spent in
    the current period, in the currency, within a second or so."""
    from test_budgets import PER_SECOND, set_budget
    p, port = start(pgtally, **PER_SECOND)
    set_budget(p, "--user", "trust_user", "--period", "day", "--limit", "50")
    set_budget(p, "--application", "nobody_uses_this", "--period", "month", "--limit", "7.5")
    set_budget(p, "--database", "no_money", "--period", "week", "--max-rows", "1e9")
    with p.connect() as c:
        c.execute("SELECT pg_sleep(0.3)").fetchall()
    got = {}

    def spent():
        got["s"] = parse(scrape(port))
        return value(got["s"], "pgtally_budget_spend", subject="trust_user") >= 0.3

    wait_until(spent, 10 * SLOW, what="the user's spend in the gauge")
    s = got["s"]
    assert value(s, "pgtally_budget_spend", subject="trust_user", subject_type="user",
                 period="day") < 5, s
    assert value(s, "pgtally_budget_limit", subject="trust_user", period="day") == 50
    assert value(s, "pgtally_budget_limit", subject="nobody_uses_this",
                 subject_type="application", period="month") == 7.5
    assert ("pgtally_budget_spend", frozenset({
        ("budget", "2"), ("subject_type", "application"), ("subject", "nobody_uses_this"),
        ("period", "month")})) in s, s
    assert value(s, "pgtally_budget_spend", subject="nobody_uses_this") == 0
    # A budget of --max-rows alone has spend but no money limit to show.
    assert value(s, "pgtally_budget_spend", subject="no_money", subject_type="database") == 0
    assert not [k for k in s if k[0] == "pgtally_budget_limit" and ("subject", "no_money") in k[1]]
