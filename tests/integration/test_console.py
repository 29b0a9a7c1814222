"""pgtally's admin console through real psql: `psql ... pgtally` on
pgtally's own port. Logins are checked by the server (against [admin]
auth_database); only [admin] admin_users and stats_users get in, stats
users run SHOW only. Every command answers with an ordinary result set;
BLOCK SHAPE refuses the shape on the normal database (42T01) until UNBLOCK
SHAPE; CANCEL SESSION cancels a running statement by the server's key;
drivers' extended protocol works without parameters; bad input gets a
clear error, never a crash."""

import socket
import struct
import threading
import time

import psycopg
import pytest

from helpers import SLOW, run_psql, wait_until
from test_budgets import psql, wait_loaded
from test_metering import wait_ledger

ADMIN, STATS, OTHER = "console_admin", "console_stats", "console_other"


@pytest.fixture(scope="module")
def users(pg):
    with pg.admin() as a:
        for n in (ADMIN, STATS, OTHER):
            a.execute("DROP ROLE IF EXISTS %s" % n)
            a.execute("CREATE ROLE %s LOGIN IN ROLE pgtally_test_users" % n)
        a.execute("DROP TABLE IF EXISTS console_t")
        a.execute("CREATE TABLE console_t (a int)")
        a.execute("GRANT ALL ON console_t TO PUBLIC")


def start(pgtally, **extra):
    cfg = {"admin.admin_users": "%s, md5_user" % ADMIN, "admin.stats_users": STATS}
    cfg.update(extra)
    return pgtally(**cfg)


def console(proxy, user, *commands, password=None, aligned=False):
    """psql on the console database; -A -t unless aligned."""
    dsn = proxy.dsn(user=user, dbname="pgtally", password=password)
    if not aligned:
        return run_psql(dsn, *commands)
    import subprocess
    from helpers import clean_env
    args = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", dsn]
    for c in commands:
        args += ["-c", c]
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=clean_env(), timeout=30 * SLOW)


def rows(r):
    assert r.returncode == 0, (r.stdout, r.stderr)
    return [line.split("|") for line in r.stdout.splitlines() if line]


def header(proxy, command):
    r = console(proxy, ADMIN, command, aligned=True)
    assert r.returncode == 0, r.stderr
    return [c.strip() for c in r.stdout.splitlines()[0].split("|")]


# ---- login ---------------------------------------------------------------

def test_non_admin_user_refused_with_28000(pgtally, users):
    proxy = start(pgtally)
    r = console(proxy, OTHER, "SHOW VERSION")
    assert r.returncode != 0
    assert "may not open the console" in r.stderr, r.stderr
    assert "admin_users" in r.stderr and "stats_users" in r.stderr, r.stderr
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(proxy.dsn(user=OTHER, dbname="pgtally"))
    assert ei.value.sqlstate == "28000" or "28000" in str(ei.value) or \
        "may not open the console" in str(ei.value)
    # the same user on a real database is relayed as always
    r = psql(proxy, OTHER, "SELECT 1")
    assert r.returncode == 0 and r.stdout.strip() == "1", r


def test_refused_before_the_password_is_relayed(pgtally, users):
    """A user outside [admin] is refused before any password goes to the
    server: psql never asks for one (no password in the environment)."""
    proxy = start(pgtally)
    r = console(proxy, "scram_user", "SHOW VERSION", password=False)
    assert r.returncode != 0
    assert "may not open the console" in r.stderr, r.stderr
    assert "password" not in r.stderr.lower().replace("[admin]", ""), r.stderr


def test_login_is_checked_by_the_server(pgtally, users):
    proxy = start(pgtally)
    r = console(proxy, "md5_user", "SHOW VERSION", password="wrong")
    assert r.returncode != 0
    assert "password authentication failed" in r.stderr, r.stderr
    r = console(proxy, "md5_user", "SHOW VERSION", password="md5_pw")
    assert r.returncode == 0, r.stderr
    assert any(row[0] == "pgtally" for row in rows(r)), r.stdout


@pytest.mark.parametrize("tls", ["disable", "require"])
def test_scram_login_over_tls_and_plain(pgtally, users, tls):
    """SCRAM through the rewritten startup packet, with and without TLS
    on both sides; a stats user who is also an admin is an admin. (A TLS
    client logs in with channel_binding=disable, as on any pgtally session:
    docs/proxy.md, "SCRAM and channel binding".)"""
    proxy = start(pgtally, client_tls="require" if tls == "require" else "disable",
                  upstream_tls=tls,
                  **{"admin.admin_users": "scram_user", "admin.stats_users": "scram_user"})
    cb = {"channel_binding": "disable"} if tls == "require" else {}
    dsn = proxy.dsn(user="scram_user", dbname="pgtally", sslmode=tls, **cb)
    r = run_psql(dsn, "SHOW VERSION", "RELOAD")
    assert r.returncode == 0, r.stderr
    assert "configuration reloaded" in r.stdout
    r = run_psql(proxy.dsn(user="scram_user", dbname="pgtally", sslmode=tls,
                           password="nope", **cb), "SHOW VERSION")
    assert r.returncode != 0 and "password authentication failed" in r.stderr, r.stderr
    if tls == "require":
        r = run_psql(proxy.dsn(user="scram_user", dbname="pgtally", sslmode="disable"),
                     "SHOW VERSION")
        assert r.returncode != 0 and "requires TLS" in r.stderr, r.stderr


def test_auth_database_must_exist_on_the_server(pgtally, users):
    proxy = start(pgtally, **{"admin.auth_database": "no_such_db"})
    r = console(proxy, ADMIN, "SHOW VERSION")
    assert r.returncode != 0
    assert 'database "no_such_db" does not exist' in r.stderr, r.stderr


@pytest.mark.parametrize("line,key,words", [
    ("auth_database =", "admin.auth_database", ["63 bytes"]),
    ("auth_database = %s" % ("d" * 64), "admin.auth_database", ["63 bytes"]),
    ("admin_users = alice, %s" % ("u" * 64), "admin.admin_users", ["user names"]),
    ("admins = alice", "admin.admins", ["unknown key"]),
])
def test_bad_admin_config_is_refused_clearly(pgtally_bin, tmp_path, line, key, words):
    from test_config import base_lines, must_refuse, write
    path = write(tmp_path, "\n".join(base_lines() + ["[admin]", line]) + "\n")
    out = must_refuse(["-c", path], line)
    assert "%s:5" % path in out and key in out, out
    for w in words:
        assert w in out, out


# ---- commands ------------------------------------------------------------

def test_show_version_config_and_sessions(pgtally, users):
    proxy = start(pgtally, **{"report.slack_webhook_url": "https://hooks.example/secret-token"})
    r = console(proxy, ADMIN, "SHOW VERSION")
    names = [row[0] for row in rows(r)]
    assert names[:2] == ["pgtally", "server"], r.stdout
    assert header(proxy, "show version;") == ["component", "version"]

    r = console(proxy, ADMIN, "SHOW CONFIG")
    cfg = {row[0]: row for row in rows(r)}
    assert cfg["admin.admin_users"][1] == "%s, md5_user" % ADMIN
    assert cfg["admin.admin_users"][2] == "set"
    assert cfg["admin.auth_database"][1:3] == ["postgres", "default"]
    assert cfg["startup_timeout"][1:3] == ["60s", "default"]
    assert cfg["report.slack_webhook_url"][1] == "********"
    assert "secret-token" not in r.stdout
    assert header(proxy, "SHOW CONFIG") == ["key", "value", "source", "description"]

    with psycopg.connect(proxy.dsn(user=OTHER, application_name="busy_app"),
                         autocommit=True) as busy:
        done = threading.Event()

        def run():
            try:
                busy.execute("SELECT pg_sleep(1.5)")
            finally:
                done.set()

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.5)
        r = console(proxy, STATS, "SHOW SESSIONS")
        t.join()
    by_user = {row[1]: row for row in rows(r)}
    row = by_user[OTHER]
    assert row[2] == "pgtally_test" and row[3] == "busy_app", row
    assert row[5] == "query", row
    assert row[7] == "SELECT pg_sleep($1)", row  # normalized: no literal shown
    assert float(row[8]) > 0.2, row
    assert by_user[STATS][2] == "pgtally" and by_user[STATS][5] == "console", by_user[STATS]
    assert header(proxy, "SHOW SESSIONS") == [
        "id", "user", "database", "application", "client_addr", "state", "backend_pid",
        "statement", "running_seconds", "running_cost"]


def test_ledger_commands(pgtally, users):
    proxy = start(pgtally)
    for i in range(3):
        r = psql(proxy, OTHER, "SELECT count(*) FROM console_t WHERE a = %d" % i)
        assert r.returncode == 0, r
    wait_ledger(proxy, 3, "\"user\" = ?", (OTHER,))

    r = console(proxy, STATS, "SHOW USAGE")
    usage = {row[0]: row for row in rows(r)}
    assert usage[OTHER][1] == "3", r.stdout
    for period in ("DAY", "week", "Month"):
        assert OTHER in console(proxy, STATS, "SHOW USAGE " + period).stdout
    assert header(proxy, "SHOW USAGE") == [
        "user", "statements", "compute_seconds", "rows", "bytes_out", "cost"]

    r = console(proxy, STATS, "SHOW QUERIES 2")
    q = rows(r)
    assert len(q) == 2, r.stdout
    assert q[0][2] == OTHER and q[0][11] == "SELECT count(*) FROM console_t WHERE a = $1", q
    assert header(proxy, "SHOW QUERIES")[-2:] == ["fingerprint", "query"]

    r = console(proxy, STATS, "SHOW SHAPES")
    shapes = {row[5]: row for row in rows(r)}
    shape = shapes["SELECT count(*) FROM console_t WHERE a = $1"]
    assert shape[2] == "3" and len(shape[0]) == 16, shape

    r = console(proxy, STATS, "SHOW BUDGETS")
    assert rows(r) == []
    from test_budgets import ctl
    ctl(proxy, "budget", "set", "--user", OTHER, "--period", "day", "--limit", "5.00")
    r = console(proxy, STATS, "SHOW BUDGETS")
    b = rows(r)
    assert len(b) == 1 and b[0][1] == "user" and b[0][2] == OTHER, b
    assert b[0][4] == "5.000000 USD" and b[0][7] == "block", b
    assert b[0][9] == "", b  # no --max-rows
    ctl(proxy, "budget", "set", "--database", "postgres", "--period", "week", "--max-rows", "1e9")
    b = rows(console(proxy, STATS, "SHOW BUDGETS"))
    assert len(b) == 2 and b[1][1] == "database" and b[1][9] == "1000000000", b
    assert b[1][4] == "" and b[1][6] == "", b  # no money limit: limit and used are NULL
    assert header(proxy, "SHOW BUDGETS") == [
        "id", "subject_type", "subject", "period", "limit", "spent", "used", "action",
        "per_query", "max_rows", "resets"]

    assert rows(console(proxy, STATS, "SHOW ALERTS")) == []
    assert rows(console(proxy, STATS, "SHOW RULES")) == []


def test_block_shape_then_unblock(pgtally, users):
    proxy = start(pgtally)
    sql = "SELECT count(*) FROM console_t WHERE a = 1"
    assert psql(proxy, OTHER, sql).returncode == 0
    wait_ledger(proxy, 1, "\"user\" = ?", (OTHER,))
    shapes = rows(console(proxy, ADMIN, "SHOW SHAPES"))
    fp = [s[0] for s in shapes if s[5] == "SELECT count(*) FROM console_t WHERE a = $1"][0]

    r = console(proxy, ADMIN, "block shape '%s' message 'console_t is off limits, it''s late';" % fp)
    assert r.returncode == 0, r.stderr
    rule = rows(r)[0]
    assert rule[1] == fp and rule[4] == "block", rule
    assert rule[5] == "console_t is off limits, it's late" and rule[7] == ADMIN, rule
    wait_loaded(proxy)
    r = psql(proxy, OTHER, "SELECT count(*) FROM console_t WHERE a = 42")
    assert r.returncode != 0
    assert "ERROR:  console_t is off limits, it's late" in r.stderr, r.stderr
    with psycopg.connect(proxy.dsn(user=OTHER), autocommit=True) as c:
        with pytest.raises(psycopg.Error) as ei:
            c.execute("SELECT count(*) FROM console_t WHERE a = 7", prepare=False)
        assert ei.value.sqlstate == "42T01"
    rules = rows(console(proxy, STATS, "SHOW RULES"))
    assert [x[1] for x in rules] == [fp], rules

    r = console(proxy, ADMIN, "UNBLOCK SHAPE '%s'" % fp)
    assert r.returncode == 0 and rows(r)[0][1] == fp, r
    wait_loaded(proxy)
    r = psql(proxy, OTHER, "SELECT count(*) FROM console_t WHERE a = 42")
    assert r.returncode == 0 and r.stdout.strip() == "0", r
    r = console(proxy, ADMIN, "UNBLOCK SHAPE '%s'" % fp)
    assert r.returncode != 0 and "no block rule for shape" in r.stderr, r.stderr


def test_stats_user_can_show_but_not_change(pgtally, users):
    proxy = start(pgtally)
    assert console(proxy, STATS, "SHOW RULES").returncode == 0
    for cmd in ("BLOCK SHAPE 'abc'", "UNBLOCK SHAPE 'abc'", "CANCEL SESSION 1", "RELOAD"):
        r = console(proxy, STATS, cmd)
        assert r.returncode != 0, cmd
        assert "permission denied" in r.stderr and "stats user" in r.stderr, r.stderr
    assert rows(console(proxy, STATS, "SHOW RULES")) == []


def test_sqlstates_seen_by_a_driver(pgtally, users):
    """psycopg: 42501 for a stats user's BLOCK, 42601 for an unknown
    command, 0A000 for parameters; the session goes on."""
    proxy = start(pgtally)
    with psycopg.connect(proxy.dsn(user=STATS, dbname="pgtally"), autocommit=True) as c:
        res = c.pgconn.exec_(b"BLOCK SHAPE 'abc'")
        assert res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"42501"
        res = c.pgconn.exec_(b"SHOW POOLS")
        assert res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"42601"
        with pytest.raises(psycopg.Error) as ei:
            c.execute("SHOW QUERIES %s", (5,))  # a parameter
        assert ei.value.sqlstate == "0A000"
        assert "take no parameters" in str(ei.value)
        res = c.pgconn.exec_(b"SHOW VERSION")
        assert res.ntuples >= 2 and res.get_value(0, 0) == b"pgtally"


def test_extended_protocol(pgtally, users):
    """Parse/Bind/Describe/Execute/Sync as drivers send them (psycopg with
    prepare=True, named statements, binary results refused)."""
    proxy = start(pgtally)
    assert psql(proxy, OTHER, "SELECT 1").returncode == 0
    wait_ledger(proxy, 1, "\"user\" = ?", (OTHER,))
    with psycopg.connect(proxy.dsn(user=STATS, dbname="pgtally"), autocommit=True) as c:
        cur = c.execute("SHOW VERSION", prepare=True)
        assert [d.name for d in cur.description] == ["component", "version"]
        assert cur.fetchall()[0][0] == "pgtally"
        for _ in range(3):  # a named statement, then reused
            cur = c.execute("SHOW QUERIES 5", prepare=True)
            assert [d.name for d in cur.description][-1] == "query"
            assert {r[2] for r in cur.fetchall()} == {OTHER}
        cur = c.execute("show usage week", prepare=True)  # on a worker
        assert [r[0] for r in cur.fetchall()] == [OTHER]
        with pytest.raises(psycopg.Error) as ei:
            c.execute("BLOCK SHAPE 'abc'", prepare=True)
        assert ei.value.sqlstate == "42501"
        with pytest.raises(psycopg.Error) as ei:
            c.execute("SHOW NOTHING", prepare=True)
        assert ei.value.sqlstate == "42601"
        with pytest.raises(psycopg.Error) as ei:
            c.cursor(binary=True).execute("SHOW VERSION", prepare=True)
        assert ei.value.sqlstate == "0A000"
        assert c.execute("SHOW RULES", prepare=True).fetchall() == []
    with psycopg.connect(proxy.dsn(user=ADMIN, dbname="pgtally"), autocommit=True) as c:
        cur = c.execute("BLOCK SHAPE 'abc' MESSAGE 'x'", prepare=True)
        assert cur.fetchone()[1] == "0000000000000abc"
        cur = c.execute("UNBLOCK SHAPE 'abc'", prepare=True)
        assert cur.fetchone()[1] == "0000000000000abc"


def test_unknown_command_lists_the_commands(pgtally, users):
    proxy = start(pgtally)
    r = console(proxy, ADMIN, "SHOW POOLS")
    assert r.returncode != 0
    assert 'unknown command "SHOW POOLS"' in r.stderr, r.stderr
    for c in ("SHOW USAGE [DAY|WEEK|MONTH]", "SHOW QUERIES [n]", "BLOCK SHAPE 'fingerprint'",
              "CANCEL SESSION n", "RELOAD", "SHOW ALERTS"):
        assert c in r.stderr, (c, r.stderr)
    for bad, why in (("SELECT 1", "unknown command"),
                     ("SHOW QUERIES 0", "syntax error"),
                     ("SHOW QUERIES 1001", "syntax error"),
                     ("SHOW USAGE YEAR", "syntax error"),
                     ("BLOCK SHAPE 'xyz'", "syntax error"),
                     ("BLOCK SHAPE 'abc", "unterminated quoted string"),
                     ("SHOW VERSION; SHOW CONFIG", "one command per query"),
                     ("SHOW VERSION extra", "syntax error"),
                     ("CANCEL SESSION 99999", "no session 99999")):
        r = console(proxy, ADMIN, bad)
        assert r.returncode != 0, bad
        assert why in r.stderr, (bad, r.stderr)
    # a session survives all of that
    r = console(proxy, ADMIN, "SHOW POOLS", "SHOW VERSION")
    assert r.returncode != 0
    dsn = proxy.dsn(user=ADMIN, dbname="pgtally")
    r = run_psql(dsn, "-- just a comment")
    assert r.returncode == 0, r.stderr


def test_reload(pgtally, users):
    proxy = start(pgtally)
    r = console(proxy, ADMIN, "RELOAD")
    assert r.returncode == 0 and rows(r) == [["configuration reloaded"]], r
    proxy.wait_log(r"event=reloaded", timeout=3 * SLOW)
    # a reload that drops the stats user locks it out of the console
    cfg = dict(proxy.config)
    cfg["admin.stats_users"] = None
    from helpers import write_ini
    write_ini(proxy.config_path, cfg)
    r = console(proxy, ADMIN, "RELOAD")
    assert r.returncode == 0, r.stderr
    r = console(proxy, STATS, "SHOW VERSION")
    assert r.returncode != 0 and "may not open the console" in r.stderr, r.stderr
    # a broken config is refused and the old one stays
    proxy.config_path.write_text("[admin]\nauth_database =\n")
    r = console(proxy, ADMIN, "RELOAD")
    assert r.returncode != 0 and "was refused" in r.stderr, r.stderr
    assert console(proxy, ADMIN, "SHOW VERSION").returncode == 0


def test_cancel_session(pgtally, users):
    proxy = start(pgtally)
    box = {}
    with psycopg.connect(proxy.dsn(user=OTHER, application_name="sleeper"),
                         autocommit=True) as busy:
        def run():
            t0 = time.monotonic()
            try:
                busy.execute("SELECT pg_sleep(30)")
            except psycopg.Error as e:
                box["error"] = e
            box["took"] = time.monotonic() - t0

        t = threading.Thread(target=run)
        t.start()

        def sleeper():
            for row in rows(console(proxy, ADMIN, "SHOW SESSIONS")):
                if row[3] == "sleeper" and row[5] == "query":
                    return row
        row = wait_until(sleeper, 10 * SLOW, interval=0.2, what="the sleeping session")
        r = console(proxy, ADMIN, "CANCEL SESSION %s" % row[0])
        assert r.returncode == 0, r.stderr
        assert rows(r)[0] == [row[0], row[6], "cancel request sent"], r.stdout
        t.join(20)
        assert not t.is_alive()
        assert box["error"].sqlstate == "57014", box
        assert box["took"] < 15, box
        assert busy.execute("SELECT 2").fetchone() == (2,)
    # a console session has nothing to cancel
    mine = [x for x in rows(console(proxy, ADMIN, "SHOW SESSIONS")) if x[5] == "console"]
    r = console(proxy, ADMIN, "CANCEL SESSION %s" % mine[0][0])
    assert r.returncode != 0 and "no session" in r.stderr, r.stderr


# ---- garbage -------------------------------------------------------------

def startup(user, dbname):
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", dbname)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def logged_in(proxy, user):
    s = socket.create_connection((proxy.host, proxy.port), timeout=10 * SLOW)
    s.sendall(startup(user, "pgtally"))
    buf = b""
    while not buf.endswith(b"Z\0\0\0\x05I"):
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
    return s, buf


def read_all(s, timeout=5.0):
    s.settimeout(timeout * SLOW)
    buf = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except socket.timeout:
        pass
    return buf


def test_long_application_name(pgtally, users):
    proxy = start(pgtally)
    app = "a" * 9000
    r = run_psql(proxy.dsn(user=ADMIN, dbname="pgtally", application_name=app), "SHOW SESSIONS")
    assert r.returncode == 0, r.stderr
    assert app in r.stdout


def test_garbage_input(pgtally, users):
    proxy = start(pgtally)
    s, hello = logged_in(proxy, ADMIN)
    assert b"server_version\0" in hello and b"client_encoding\0UTF8\0" in hello
    # a huge Query is refused as soon as its length is read
    s.sendall(b"Q" + struct.pack("!I", 200 * 1024 * 1024) + b"SHOW ")
    out = read_all(s)
    assert b"54000" in out and b"the console takes messages of 4 to 65536 bytes" in out, out
    s.close()
    # an unknown message type
    s, _ = logged_in(proxy, ADMIN)
    s.sendall(b"?" + struct.pack("!I", 4))
    out = read_all(s)
    assert b"08P01" in out and b"unexpected message type" in out, out
    s.close()
    # a Parse cut short
    s, _ = logged_in(proxy, ADMIN)
    s.sendall(b"P" + struct.pack("!I", 7) + b"ab\0")
    out = read_all(s)
    assert b"08P01" in out and b"malformed message of type 'P'" in out, out
    s.close()
    # Execute of a portal that does not exist, then Sync: an error, then ready
    s, _ = logged_in(proxy, ADMIN)
    s.sendall(b"E" + struct.pack("!I", 12) + b"nop\0" + struct.pack("!I", 0) +
              b"E" + struct.pack("!I", 12) + b"nop\0" + struct.pack("!I", 0) +
              b"S\0\0\0\4")
    out = read_all(s, timeout=1.0)
    assert out.count(b"34000") == 1 and out.endswith(b"Z\0\0\0\x05I"), out
    s.close()
    # a Query without its terminating zero
    s, _ = logged_in(proxy, ADMIN)
    s.sendall(b"Q" + struct.pack("!I", 8) + b"SHOW")
    out = read_all(s)
    assert b"08P01" in out, out
    s.close()
    # a long string and many words, then a client that vanishes mid-work
    s, _ = logged_in(proxy, ADMIN)
    q = b"BLOCK SHAPE 'abc' MESSAGE '" + b"x" * 5000 + b"'\0"
    s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
    q = b"SHOW " + b"A " * 100 + b"\0"
    s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
    q = b"SHOW QUERIES 1000\0"
    s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
    s.close()
    # a client that never reads its answers
    s, _ = logged_in(proxy, ADMIN)
    q = b"SHOW CONFIG\0"
    s.sendall((b"Q" + struct.pack("!I", len(q) + 4) + q) * 2000)
    time.sleep(1)
    s.close()
    # pgtally is fine
    assert proxy.alive()
    r = console(proxy, ADMIN, "SHOW VERSION")
    assert r.returncode == 0, r.stderr


def test_console_is_not_metered(pgtally, users):
    proxy = start(pgtally)
    assert psql(proxy, OTHER, "SELECT 1").returncode == 0
    for _ in range(3):
        assert console(proxy, ADMIN, "SHOW VERSION").returncode == 0
    assert console(proxy, ADMIN, "SHOW QUERIES").returncode == 0
    wait_ledger(proxy, 1, "\"user\" = ?", (OTHER,))
    r = console(proxy, ADMIN, "SHOW QUERIES 100")
    assert {row[2] for row in rows(r)} == {OTHER}, r.stdout


def test_many_consoles_at_once(pgtally, users):
    """More consoles than the worker slots kept for them: every one gets
    its answer (they wait their turn), and the proxy serves meanwhile."""
    proxy = start(pgtally)
    assert psql(proxy, OTHER, "SELECT 1").returncode == 0
    wait_ledger(proxy, 1, "\"user\" = ?", (OTHER,))
    results = []

    def run():
        results.append(console(proxy, STATS, "SHOW QUERIES 5", "SHOW SHAPES", "SHOW RULES",
                               "SHOW USAGE"))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    r = psql(proxy, OTHER, "SELECT 2")
    for t in threads:
        t.join(60)
    assert r.returncode == 0 and r.stdout.strip() == "2", r
    assert len(results) == 8
    for r in results:
        assert r.returncode == 0, r.stderr
        assert OTHER in r.stdout, r.stdout


def test_sigterm_ends_a_console(pgtally, users):
    import signal
    proxy = start(pgtally)
    s, _ = logged_in(proxy, ADMIN)
    proxy.signalled = True
    proxy.send_signal(signal.SIGTERM)
    out = read_all(s)
    assert b"57P01" in out and b"shutting down" in out, out
    assert proxy.wait_exit(10 * SLOW) == 0


def test_show_alerts_after_a_crossing(pgtally, users):
    """A budget threshold crossed: the ledger's alerts_sent row (channel
    log: no channel is configured) is what SHOW ALERTS shows."""
    from test_budgets import ctl
    proxy = start(pgtally, **{"pricing.per_query": "0.1", "pricing.per_compute_second": "0",
                              "pricing.per_gib_returned": "0", "budget.notice_above": "0",
                              "estimate.mode": "off", "report.catch_up_days": "0"})
    ctl(proxy, "budget", "set", "--user", OTHER, "--period", "day", "--limit", "1",
        "--warn", "50")
    wait_loaded(proxy)
    for i in range(7):
        assert psql(proxy, OTHER, "SELECT %d" % i).returncode == 0

    def alerts():
        return rows(console(proxy, STATS, "SHOW ALERTS"))
    got = wait_until(alerts, 10 * SLOW, interval=0.3, what="an alert row")
    a = got[0]
    assert a[3] == "50" and a[4] == "log", a
    assert OTHER in (a[9] or ""), a
    assert header(proxy, "SHOW ALERTS") == [
        "id", "budget_id", "period_start", "threshold_pct", "channel", "sent_at",
        "delivered_at", "attempts", "last_error", "message"]
