"""Shared machinery for pgtally's integration tests.

PgServer runs a throw-away PostgreSQL 15 cluster; Pgtally runs the proxy
binary under test against it. Both only ever use free loopback ports.
"""

import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("PGTALLY_BUILD") or REPO / "build").resolve()
PGTALLY_BIN = BUILD / "pgtally"
PGTALLYCTL_BIN = BUILD / "pgtallyctl"
PG_BINDIR = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))

# Sanitizer builds run slower; stretch the generous (not the behavioural)
# time limits by this factor.
SLOW = float(os.environ.get("PGTALLY_TEST_SLOWDOWN")
             or (3 if "asan" in BUILD.name or "san" in BUILD.name else 1))

PASSWORDS = {"scram_user": "scram_pw", "md5_user": "md5_pw"}
DBNAME = "pgtally_test"

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "SUMMARY: UndefinedBehaviorSanitizer",
)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra):
    """The environment for client programs: no stray PG* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def make_cert(directory, name, cn, owner=None):
    """A self-signed certificate + key made with the openssl command."""
    crt = Path(directory) / (name + ".crt")
    key = Path(directory) / (name + ".key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-sha256", "-nodes",
         "-days", "3", "-subj", "/CN=" + cn,
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True)
    os.chmod(key, 0o600)
    if owner is not None:
        os.chown(key, owner.pw_uid, owner.pw_gid)
        os.chown(crt, owner.pw_uid, owner.pw_gid)
    return crt, key


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def assert_healthy(conn, what="the healthy session"):
    """SELECT 1 on a session that must not have been disturbed."""
    try:
        row = conn.execute("SELECT 1").fetchone()
    except psycopg.Error as e:
        raise AssertionError("%s no longer works: %s: %s"
                             % (what, type(e).__name__, e)) from e
    assert row == (1,), "%s returned %r for SELECT 1" % (what, row)


# ---------------------------------------------------------------------------
# The ledger, whichever backend holds it
# ---------------------------------------------------------------------------

# PGTALLY_TEST_LEDGER=postgresql runs every pgtally a test starts without a
# ledger of its own on a fresh database of a second PostgreSQL (fixture
# ledger_pg); tests about the SQLite file itself are skipped then.
LEDGER_BACKEND = os.environ.get("PGTALLY_TEST_LEDGER", "sqlite")


def is_pg_ledger(ledger):
    return str(ledger).startswith("postgresql://")


def ledger_query(ledger, sql, params=(), dicts=False):
    """Rows of sql on a ledger: an SQLite path or a PostgreSQL URI (whose
    tables are in schema pgtally). Parameters are written ? in sql."""
    if is_pg_ledger(ledger):
        from psycopg.rows import dict_row
        with psycopg.connect(str(ledger), autocommit=True, connect_timeout=10,
                             options="-c search_path=pgtally",
                             row_factory=dict_row if dicts else None) as c:
            return [dict(r) if dicts else r
                    for r in c.execute(sql.replace("?", "%s"), params).fetchall()]
    import sqlite3
    assert Path(ledger).exists(), "no ledger file at %s" % ledger
    con = sqlite3.connect("file:%s?mode=ro" % ledger, uri=True, timeout=5)
    try:
        if dicts:
            con.row_factory = sqlite3.Row
        return [dict(r) if dicts else r for r in con.execute(sql, params).fetchall()]
    finally:
        con.close()


def ledger_not_ready_errors():
    """What reading a ledger raises before pgtally has made its schema."""
    import sqlite3
    return (sqlite3.OperationalError, psycopg.errors.UndefinedTable,
            psycopg.errors.InvalidSchemaName)


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

class PgServer:
    """A private PostgreSQL 15 cluster on a free loopback port."""

    def __init__(self):
        self.owner = pwd.getpwnam("postgres")
        self.base = Path(tempfile.mkdtemp(prefix="pgtally-it-pg-"))
        os.chown(self.base, self.owner.pw_uid, self.owner.pw_gid)
        os.chmod(self.base, 0o700)
        self.datadir = self.base / "data"
        self.logfile = self.base / "server.log"
        self.host = "127.0.0.1"
        self.port = None
        self.running = False

    def _as_postgres(self, args, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--"] + [str(a) for a in args],
                              capture_output=True, text=True, env=clean_env(), **kw)

    def start(self):
        r = self._as_postgres([PG_BINDIR / "initdb", "-D", self.datadir, "-U", "postgres",
                               "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        if r.returncode != 0:
            raise RuntimeError("initdb failed:\n" + r.stdout + r.stderr)
        self.cert, self.key = make_cert(self.base, "server", "127.0.0.1", self.owner)
        (self.datadir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres   127.0.0.1/32 trust\n"
            "host all trust_user 127.0.0.1/32 trust\n"
            "host all md5_user   127.0.0.1/32 md5\n"
            # users made by tests (budgets): members of this group role
            "host all +pgtally_test_users 127.0.0.1/32 trust\n"
            "host all scram_user 127.0.0.1/32 scram-sha-256\n"
            # a second loopback address, not in the certificate, for verify-full
            "host all trust_user 127.0.0.2/32 trust\n")
        for attempt in range(5):
            self.port = free_port()
            with open(self.datadir / "postgresql.conf", "a") as f:
                f.write(f"""
# pgtally integration tests
port = {self.port}
listen_addresses = '127.0.0.1,127.0.0.2'
unix_socket_directories = '{self.base}'
max_connections = 300
ssl = on
ssl_cert_file = '{self.cert}'
ssl_key_file = '{self.key}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = '4GB'
log_connections = on
log_disconnections = on
log_line_prefix = '%m [%p] %u@%d/%a '
shared_preload_libraries = 'pg_stat_statements'
""")
            r = self._as_postgres([PG_BINDIR / "pg_ctl", "-D", self.datadir, "-l",
                                   self.logfile, "-w", "-t", "60", "start"])
            if r.returncode == 0:
                self.running = True
                break
            log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
            if "Address already in use" not in log:
                raise RuntimeError("pg_ctl start failed:\n%s%s\n%s" % (r.stdout, r.stderr, log))
        else:
            raise RuntimeError("could not find a free port for PostgreSQL")
        self._setup_roles()

    def _setup_roles(self):
        with self.admin("postgres") as c:
            c.execute("CREATE ROLE scram_user LOGIN CREATEDB PASSWORD 'scram_pw'")
            c.execute("SET password_encryption = 'md5'")
            c.execute("CREATE ROLE md5_user LOGIN CREATEDB PASSWORD 'md5_pw'")
            c.execute("RESET password_encryption")
            c.execute("CREATE ROLE trust_user LOGIN CREATEDB")
            c.execute("CREATE ROLE pgtally_test_users NOLOGIN")
            c.execute("CREATE DATABASE " + DBNAME)
            stored = dict(c.execute(
                "SELECT rolname, left(rolpassword, 14) FROM pg_authid"
                " WHERE rolname IN ('scram_user', 'md5_user')").fetchall())
            assert stored["scram_user"] == "SCRAM-SHA-256$", stored
            assert stored["md5_user"].startswith("md5"), stored
        with self.admin() as c:
            c.execute("GRANT ALL ON SCHEMA public TO PUBLIC")
            c.execute("CREATE SCHEMA foo")
            c.execute("GRANT ALL ON SCHEMA foo TO PUBLIC")
            # the server's own count of executions, to check that going
            # through pgtally runs every statement exactly once
            c.execute("CREATE EXTENSION pg_stat_statements")

    def stop(self):
        if self.running:
            self._as_postgres([PG_BINDIR / "pg_ctl", "-D", self.datadir, "-m", "immediate",
                               "-w", "stop"])
            self.running = False
        shutil.rmtree(self.base, ignore_errors=True)

    def admin(self, dbname=DBNAME):
        """A superuser connection over the Unix socket, bypassing pgtally."""
        return psycopg.connect(host=str(self.base), port=self.port, user="postgres",
                               dbname=dbname, autocommit=True, connect_timeout=10)

    def backend_pids(self, application_name):
        with self.admin() as c:
            return [r[0] for r in c.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (application_name,))]

    def wait_backends_gone(self, application_name, timeout=5.0):
        """Wait until no server session with that application_name is left."""
        try:
            wait_until(lambda: not self.backend_pids(application_name), timeout,
                       interval=0.1)
        except TimeoutError:
            raise AssertionError(
                "server session(s) %r for application_name=%r still exist %.0f s "
                "after the client went away" % (self.backend_pids(application_name),
                                                 application_name, timeout))

    def wait_backend_state(self, pid, state, timeout=5.0):
        def check():
            with self.admin() as c:
                row = c.execute("SELECT state FROM pg_stat_activity WHERE pid = %s",
                                (pid,)).fetchone()
            return row is not None and row[0] == state
        wait_until(check, timeout, interval=0.05,
                   what="backend %d to be %s" % (pid, state))

    def log_tail(self, n=40):
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# ---------------------------------------------------------------------------
# pgtally
# ---------------------------------------------------------------------------

class PgtallyFailed(Exception):
    pass


def require_binary():
    if not PGTALLY_BIN.exists():
        raise PgtallyFailed(
            "pgtally binary not found at %s: build it (meson setup build && "
            "ninja -C build) or point PGTALLY_BUILD at a build directory" % PGTALLY_BIN)


def write_ini(path, config):
    """Write config as an INI file. Plain keys go in [pgtally]; a key
    "section.name" (e.g. "pricing.per_query") is written as name under
    [section]. A value of None is left out."""
    sections = {"pgtally": []}
    for key, value in config.items():
        if value is None:
            continue
        section, dot, name = key.partition(".")
        if not dot:
            section, name = "pgtally", key
        sections.setdefault(section, []).append("%s = %s" % (name, value))
    lines = []
    for section, entries in sections.items():
        lines.append("[%s]" % section)
        lines += entries
    Path(path).write_text("\n".join(lines) + "\n")


class Pgtally:
    """One running pgtally process, configured through an INI file."""

    def __init__(self, workdir, config, extra_args=(), as_flags=False, env=None):
        self.as_flags = as_flags  # pass the config as flags, without a file
        self.env = dict(env or {})  # added to pgtally's environment
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = dict(config)
        self.config_path = self.workdir / "pgtally.ini"
        self.log_path = self.workdir / "pgtally.log"
        self.extra_args = list(extra_args)
        host, _, port = self.config["listen"].rpartition(":")
        self.host, self.port = host, int(port)
        self.proc = None
        self.signalled = False  # the test itself asked pgtally to exit

    # -- process -------------------------------------------------------
    def start(self, wait=True, timeout=10.0):
        require_binary()
        write_ini(self.config_path, self.config)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        env.update(self.env)
        self.logfile = open(self.log_path, "wb")
        if self.as_flags:
            args = []
            for key, value in self.config.items():
                if value is not None:
                    args += ["--" + key.replace("_", "-").replace(".", "-"), str(value)]
        else:
            args = ["-c", str(self.config_path)]
        self.proc = subprocess.Popen(
            [str(PGTALLY_BIN)] + args + self.extra_args,
            stdin=subprocess.DEVNULL, stdout=self.logfile, stderr=subprocess.STDOUT,
            env=env, cwd=self.workdir)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=10.0):
        quiet = str(self.config.get("log_level", "")).lower() in ("warning", "error")
        deadline = time.monotonic() + timeout * SLOW
        while True:
            if self.proc.poll() is not None:
                raise PgtallyFailed("pgtally exited with code %s before listening; log:\n%s"
                                    % (self.proc.returncode, self.log()))
            if "event=listening" in self.log():
                return
            if quiet and self._port_open():
                return
            if time.monotonic() > deadline:
                raise PgtallyFailed("pgtally did not log event=listening within %.0f s;"
                                    " log:\n%s" % (timeout * SLOW, self.log()))
            time.sleep(0.02)

    def _port_open(self):
        try:
            socket.create_connection((self.host, self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            self.signalled = True
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def shutdown(self):
        """Stop pgtally (SIGINT) and return a list of problems found."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            if self.wait_exit(10 * SLOW) is None:
                self.proc.kill()
                self.proc.wait()
                problems.append("pgtally did not exit within %.0f s of SIGINT" % (10 * SLOW))
        elif not self.signalled:
            problems.append("pgtally exited on its own during the test (exit code %s)"
                            % self.proc.returncode)
        rc = self.proc.returncode
        if rc is not None and rc < 0 and -rc not in (signal.SIGINT, signal.SIGTERM,
                                                     signal.SIGKILL):
            problems.append("pgtally was killed by signal %s" % signal.Signals(-rc).name)
        self.logfile.close()
        log = self.log()
        for marker in SANITIZER_MARKERS:
            if marker in log:
                problems.append("sanitizer report (%r) in pgtally's output" % marker)
                break
        if problems:
            problems.append("pgtally log (%s):\n%s" % (self.log_path, self.log_tail(200)))
        return problems

    # -- log -----------------------------------------------------------
    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])

    def log_mark(self):
        return len(self.log())

    def wait_log(self, pattern, timeout=5.0, since=0):
        """Wait for a log line matching regex `pattern` after offset `since`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log()[since:].splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError("no pgtally log line matching /%s/ within %.1f s;"
                                     " log:\n%s" % (pattern, timeout, self.log_tail()))
            time.sleep(0.05)

    # -- clients -------------------------------------------------------
    def dsn(self, user="trust_user", password=None, dbname=DBNAME, sslmode="disable",
            **params):
        # password=None: the user's known password; password=False: none in
        # the conninfo (so that PGPASSWORD is used)
        if password is None:
            password = PASSWORDS.get(user)
        p = dict(host=self.host, port=self.port, user=user, dbname=dbname,
                 sslmode=sslmode, gssencmode="disable", connect_timeout=10)
        if password is not None and password is not False:
            p["password"] = password
        p.update(params)
        return make_conninfo(**p)

    def connect(self, autocommit=True, **params):
        return psycopg.connect(self.dsn(**params), autocommit=autocommit)

    def raw(self, timeout=5.0):
        from pgwire import RawConn
        return RawConn(self.host, self.port, timeout)


def make_pgtally_config(pg, proxy_cert, config):
    cfg = {"listen": "127.0.0.1:%d" % free_port(),
           "upstream": "%s:%d" % (pg.host, pg.port)}
    cfg.update(config)
    if cfg.get("client_tls") not in (None, "disable"):
        cfg.setdefault("client_tls_cert_file", str(proxy_cert[0]))
        cfg.setdefault("client_tls_key_file", str(proxy_cert[1]))
    return cfg


def run_pgtally(args, timeout=10.0, cwd=None):
    """Run the pgtally binary to completion (for CLI/config tests)."""
    require_binary()
    return subprocess.run([str(PGTALLY_BIN)] + [str(a) for a in args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout * SLOW, cwd=cwd)


def run_pgtallyctl(args, tz="UTC", env=None, cwd=None, timeout=60.0):
    """Run pgtallyctl to completion with TZ=tz and the extra variables in
    env; return the CompletedProcess (text)."""
    assert PGTALLYCTL_BIN.exists(), "%s is not built (PGTALLY_BUILD=%s)" % (PGTALLYCTL_BIN, BUILD)
    full_env = dict(os.environ, TZ=tz)
    full_env.update(env or {})
    return subprocess.run([str(PGTALLYCTL_BIN)] + [str(a) for a in args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout * SLOW)


def run_psql(dsn, *commands, env=None, timeout=30.0):
    """psql -X -A -t with each command given as -c; return CompletedProcess."""
    args = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn]
    for c in commands:
        args += ["-c", c]
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=clean_env(**(env or {})), timeout=timeout * SLOW)


def wait_socket_closed(sock, timeout):
    """True if the peer closes `sock` (EOF or reset) within timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        r, _, _ = select.select([sock], [], [], remaining)
        if r:
            try:
                if not sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    return True
            except BlockingIOError:
                continue
            except OSError:
                return True
            # data is pending (e.g. an ErrorResponse): consume it and go on
            try:
                sock.recv(65536)
            except OSError:
                return True
