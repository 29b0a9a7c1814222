"""Fixtures for pgtally's integration tests.

pg       (session)  a private PostgreSQL 15 with SCRAM, md5 and trust users
pgtally  (function) factory: pgtally(**ini_keys) starts the proxy against pg
"""

import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

import helpers
from helpers import (PgServer, Pgtally, PgtallyFailed, SLOW, make_cert,
                     make_pgtally_config)

DEFAULT_TEST_TIMEOUT = 120


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "timeout(seconds): time limit for the test body (default %d s)"
        % DEFAULT_TEST_TIMEOUT)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """A per-test time limit, so a hung proxy fails a test, not the run."""
    marker = item.get_closest_marker("timeout")
    limit = (marker.args[0] if marker else DEFAULT_TEST_TIMEOUT) * SLOW

    def on_alarm(signum, frame):
        raise TimeoutError("test exceeded its %.0f s time limit" % limit)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _started_server(what):
    """A started PgServer; on failure, an error with the server's log."""
    server = PgServer()
    try:
        server.start()
    except Exception:
        log = server.log_tail(80)
        server.stop()
        raise RuntimeError("could not start %s; server log:\n%s" % (what, log))
    return server


@pytest.fixture(scope="session")
def pg():
    server = _started_server("PostgreSQL")
    yield server
    server.stop()


class LedgerServer:
    """A second PostgreSQL that serves as a shared ledger: each call of
    new_ledger() makes a database of its own and returns its URI."""

    def __init__(self, server):
        self.server = server
        self.count = 0

    def new_ledger(self):
        self.count += 1
        name = "ledger_%d" % self.count
        with self.server.admin("postgres") as c:
            c.execute("CREATE DATABASE " + name)
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.server.port, name)

    def connect(self, uri):
        import psycopg
        return psycopg.connect(uri, autocommit=True, connect_timeout=10)


@pytest.fixture(scope="session")
def ledger_pg():
    server = _started_server("the ledger PostgreSQL")
    yield LedgerServer(server)
    server.stop()


@pytest.fixture(scope="session")
def proxy_cert():
    """A self-signed certificate + key for pgtally's client-facing TLS."""
    d = Path(tempfile.mkdtemp(prefix="pgtally-it-cert-"))
    crt, key = make_cert(d, "pgtally", "localhost")
    yield crt, key
    shutil.rmtree(d, ignore_errors=True)


class _Launcher:
    def __init__(self, pg, proxy_cert, workdir, request=None):
        self.pg, self.proxy_cert, self.workdir = pg, proxy_cert, Path(workdir)
        self.instances = []
        self.request = request

    def __call__(self, extra_args=(), wait=True, as_flags=False, env=None, **config):
        if helpers.LEDGER_BACKEND == "postgresql" and "ledger" not in config and \
                config.get("metering") != "off" and self.request is not None:
            config["ledger"] = self.request.getfixturevalue("ledger_pg").new_ledger()
        for attempt in range(3):
            cfg = make_pgtally_config(self.pg, self.proxy_cert, config)
            p = Pgtally(self.workdir / ("pgtally%d" % len(self.instances)), cfg, extra_args,
                        as_flags, env)
            self.instances.append(p)
            try:
                p.start(wait=wait)
                return p
            except PgtallyFailed as e:
                # the free port was taken by someone else meanwhile: try another
                if "listen" not in config and attempt < 2 and "in use" in p.log().lower():
                    p.signalled = True
                    continue
                p.signalled = True  # reported here, not again at teardown
                pytest.fail(str(e), pytrace=False)

    def shutdown_all(self):
        problems = []
        for p in self.instances:
            problems += p.shutdown()
            # shown with the test's report when the test fails
            sys.stdout.write("---- pgtally log %s ----\n%s\n" % (p.log_path, p.log_tail(40)))
        return problems


@pytest.fixture
def pgtally(pg, proxy_cert, tmp_path, request):
    """Factory: pgtally(**ini_keys) -> running helpers.Pgtally.

    Keys are written to an INI file ([pgtally] section; a key such as
    "pricing.per_query" goes in [pricing] as per_query) on top of
    listen=127.0.0.1:<free port> and upstream=<the test PostgreSQL>; a key
    set to None is left out. extra_args= adds command-line flags,
    wait=False skips waiting for event=listening. Every instance gets
    SIGINT at teardown, which fails if it crashed, hung or printed a
    sanitizer report. as_flags=True passes the keys as --flags instead of
    a file.
    """
    launcher = _Launcher(pg, proxy_cert, tmp_path, request)
    yield launcher
    problems = launcher.shutdown_all()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def pgtally_module(pg, proxy_cert, tmp_path_factory, request):
    """Like pgtally, but instances live for the whole test module."""
    launcher = _Launcher(pg, proxy_cert, tmp_path_factory.mktemp("pgtally-mod"), request)
    yield launcher
    problems = launcher.shutdown_all()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def pgtally_bin():
    try:
        helpers.require_binary()
    except PgtallyFailed as e:
        pytest.fail(str(e), pytrace=False)
    return helpers.PGTALLY_BIN
