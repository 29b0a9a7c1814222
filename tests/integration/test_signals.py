"""SIGTERM drains, SIGINT stops at once, SIGHUP reloads the config file."""

import os
import signal
import socket
import threading
import time

import psycopg
import pytest

from helpers import assert_healthy, wait_socket_closed, write_ini


def run_in_thread(fn):
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:
            box["error"] = e
        box["done"] = time.monotonic()
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def closed_by_peer(conn, timeout):
    """Whether pgtally closes a psycopg connection's socket within timeout."""
    dup = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        return wait_socket_closed(dup, timeout)
    finally:
        dup.close()


def test_sigterm_waits_for_in_flight_query(pgtally, pg):
    proxy = pgtally(shutdown_timeout=10)
    busy = proxy.connect(application_name="itest_term_busy")
    idle = proxy.connect(application_name="itest_term_idle")
    t, box = run_in_thread(lambda: busy.execute("SELECT pg_sleep(2)::text, 42").fetchone())
    pg.wait_backend_state(busy.info.backend_pid, "active")
    sent = time.monotonic()
    proxy.send_signal(signal.SIGTERM)

    assert closed_by_peer(idle, 1.0), "idle session not closed within 1 s of SIGTERM"
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")

    t.join(10)
    assert "error" not in box, "in-flight query failed during drain: %r" % box.get("error")
    assert box.get("result") == ("", 42), box
    rc = proxy.wait_exit(5)
    exited = time.monotonic()
    assert rc is not None, "pgtally still running 5 s after its last query finished"
    assert rc == 0, "pgtally exited with %s after SIGTERM" % rc
    assert exited - sent >= 1.0, "pgtally exited before the in-flight query finished"
    assert exited - box["done"] < 3.0
    busy.close()
    idle.close()
    pg.wait_backends_gone("itest_term_busy")
    pg.wait_backends_gone("itest_term_idle")


def test_sigterm_with_no_sessions_exits_promptly(pgtally):
    proxy = pgtally(shutdown_timeout=30)
    with proxy.connect() as c:
        assert_healthy(c)
    proxy.send_signal(signal.SIGTERM)
    rc = proxy.wait_exit(2)
    assert rc == 0, "exit code %s (None: still running 2 s after SIGTERM)" % rc


def test_sigterm_gives_up_after_shutdown_timeout(pgtally, pg):
    proxy = pgtally(shutdown_timeout=1)
    busy = proxy.connect(application_name="itest_term_timeout")
    pid = busy.info.backend_pid
    t, box = run_in_thread(lambda: busy.execute("SELECT pg_sleep(20)").fetchone())
    pg.wait_backend_state(pid, "active")
    sent = time.monotonic()
    proxy.send_signal(signal.SIGTERM)
    rc = proxy.wait_exit(5)
    took = time.monotonic() - sent
    assert rc is not None, "pgtally still running 5 s after SIGTERM with shutdown_timeout=1"
    assert rc >= 0, "pgtally died from signal %d" % -rc
    assert 0.8 <= took <= 3.0, "exited %.1f s after SIGTERM (shutdown_timeout=1)" % took
    t.join(3)
    assert isinstance(box.get("error"), psycopg.OperationalError), box
    busy.close()
    with pg.admin() as a:
        a.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_sigint_exits_at_once(pgtally, pg):
    proxy = pgtally(shutdown_timeout=30)
    busy = proxy.connect(application_name="itest_int_busy")
    idle = proxy.connect(application_name="itest_int_idle")
    pid = busy.info.backend_pid
    t, box = run_in_thread(lambda: busy.execute("SELECT pg_sleep(5)").fetchone())
    pg.wait_backend_state(pid, "active")
    sent = time.monotonic()
    proxy.send_signal(signal.SIGINT)
    rc = proxy.wait_exit(2)
    assert rc is not None, "pgtally still running 2 s after SIGINT"
    assert time.monotonic() - sent < 1.0, "SIGINT took %.1f s" % (time.monotonic() - sent)
    assert rc == 0, "exit code %s after SIGINT" % rc
    t.join(2)
    assert isinstance(box.get("error"), psycopg.OperationalError), box
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")
    busy.close()
    idle.close()
    pg.wait_backends_gone("itest_int_idle")
    with pg.admin() as a:
        a.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_sighup_reloads_config(pgtally):
    proxy = pgtally(log_level="info")
    session = proxy.connect()
    new = dict(proxy.config, log_level="debug", startup_timeout=7)
    write_ini(proxy.config_path, new)
    mark = proxy.log_mark()
    proxy.send_signal(signal.SIGHUP)
    line = proxy.wait_log(r"reload", 5, since=mark)
    assert "level=error" not in line, line
    assert proxy.alive()
    assert_healthy(session, "the session open across the reload")
    with proxy.connect() as c:
        assert_healthy(c, "a session opened after the reload")
    # and once more, back again
    write_ini(proxy.config_path, dict(new, log_level="info"))
    mark = proxy.log_mark()
    proxy.send_signal(signal.SIGHUP)
    proxy.wait_log(r"reload", 5, since=mark)
    assert_healthy(session, "the session open across two reloads")
    session.close()


BROKEN = {
    "bad_value": "[pgtally]\nlisten = {listen}\nupstream = {upstream}\nlog_level = loud\n",
    "unknown_key": "[pgtally]\nlisten = {listen}\nupstream = {upstream}\nno_such_key = 1\n",
    "not_ini": "this is not an ini file\n",
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_sighup_with_broken_config_keeps_old(pgtally, kind):
    proxy = pgtally()
    session = proxy.connect()
    proxy.config_path.write_text(BROKEN[kind].format(**proxy.config))
    mark = proxy.log_mark()
    proxy.send_signal(signal.SIGHUP)
    line = proxy.wait_log(r"level=error", 5, since=mark)
    assert proxy.alive(), "pgtally exited on a broken config reload; log:\n" + proxy.log_tail()
    assert_healthy(session, "the session open across the failed reload")
    with proxy.connect() as c:  # still listening where the old config said
        assert_healthy(c, "a session opened after the failed reload")
    assert line
    # a fixed file is picked up by the next SIGHUP
    write_ini(proxy.config_path, proxy.config)
    mark = proxy.log_mark()
    proxy.send_signal(signal.SIGHUP)
    ok = proxy.wait_log(r"reload", 5, since=mark)
    assert "level=error" not in ok, ok
    assert_healthy(session)
    session.close()


def test_sighup_without_changes_keeps_sessions(pgtally):
    proxy = pgtally()
    sessions = [proxy.connect() for _ in range(5)]
    for _ in range(3):
        mark = proxy.log_mark()
        proxy.send_signal(signal.SIGHUP)
        proxy.wait_log(r"reload", 5, since=mark)
    for s in sessions:
        assert_healthy(s)
        s.close()
