"""The command line and the INI file, as a user meets them."""

import re
import socket
import subprocess

import pytest

from helpers import REPO, assert_healthy, free_port, run_pgtally

KEYS = ["listen", "upstream", "client_tls", "client_tls_cert_file", "client_tls_key_file",
        "upstream_tls", "upstream_tls_ca_file", "max_clients", "startup_timeout",
        "max_startup_packet_size", "max_message_size", "shutdown_timeout", "log_level",
        "timezone", "admin_conninfo", "budget_contact", "budget_notice_above",
        "budget_unknown_estimate", "budget_exempt_users", "budget_check_interval", "budget_role_refresh"]


def project_version():
    m = re.search(r"version\s*:\s*'([^']+)'", (REPO / "meson.build").read_text())
    return m.group(1)


def must_refuse(args, what):
    """pgtally must exit non-zero (not start serving) with these args."""
    try:
        r = run_pgtally(args, timeout=5)
    except subprocess.TimeoutExpired:
        raise AssertionError("pgtally started and kept running despite %s" % what)
    assert r.returncode != 0, "exit code 0 despite %s; output:\n%s%s" % (what, r.stdout,
                                                                        r.stderr)
    assert r.returncode > 0, "pgtally died from signal %d on %s" % (-r.returncode, what)
    return r.stdout + r.stderr


def test_help(pgtally_bin):
    r = run_pgtally(["--help"])
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    for key in KEYS:
        assert "--" + key.replace("_", "-") in out, "--help does not mention --%s:\n%s" % (
            key.replace("_", "-"), out)
    assert "-c" in out


def test_version(pgtally_bin):
    r = run_pgtally(["--version"])
    assert r.returncode == 0, r.stderr
    assert project_version() in r.stdout + r.stderr, r.stdout + r.stderr


def write(tmp_path, text):
    path = tmp_path / "pgtally.ini"
    path.write_text(text)
    return path


def base_lines():
    return ["[pgtally]", "listen = 127.0.0.1:%d" % free_port(), "upstream = 127.0.0.1:%d"
            % free_port()]


def test_unknown_key(pgtally_bin, tmp_path):
    lines = base_lines() + ["log_level = info", "max_clinets = 5"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    out = must_refuse(["-c", path], "an unknown key")
    assert "%s:5" % path in out, "message does not name %s:5:\n%s" % (path, out)
    assert "max_clinets" in out, out


BAD_VALUES = [
    ("client_tls", "sometimes", ["disable", "allow", "require"]),
    ("upstream_tls", "maybe", ["disable", "prefer", "require", "verify-ca", "verify-full"]),
    ("log_level", "loud", ["debug", "info", "warning", "error"]),
    ("max_clients", "lots", []),
    ("startup_timeout", "soon", []),
    ("max_startup_packet_size", "20000", []),
    ("max_message_size", "big", []),
    ("shutdown_timeout", "1.5x", []),
    ("timezone", "Mars/Olympus_Mons", ["IANA", "Europe/Berlin", "UTC"]),
    ("timezone", "CEST", ["IANA", "Europe/Berlin"]),
    ("budget.notice_above", "-0.10", ["0.10"]),
    ("budget.notice_above", "ten cents", ["0.10"]),
    ("budget.unknown_estimate", "maybe", ["run", "refuse"]),
    ("pricing.per_query", "0.01 USD", []),
    ("budget.check_interval", "10", ["50", "5000"]),
    ("budget.role_refresh", "0s", []),
    ("report.regression_min_cost", "-0.01", ["0.0001"]),
    ("report.regression_min_cost", "cheap", ["0.0001"]),
    ("report.duplicate_min_runs", "0", ["1", "1000000"]),
    ("report.duplicate_min_runs", "often", ["1", "1000000"]),
]


@pytest.mark.parametrize("key,value,allowed", BAD_VALUES,
                         ids=["%s=%s" % (k, v) for k, v, _ in BAD_VALUES])
def test_bad_value(pgtally_bin, tmp_path, key, value, allowed):
    section, dot, name = key.partition(".")
    line = "%s = %s" % (name, value) if dot else "%s = %s" % (key, value)
    lines = base_lines() + (["[%s]" % section] if dot else ["; no section"]) + ["; a comment",
                                                                               line]
    path = write(tmp_path, "\n".join(lines) + "\n")
    out = must_refuse(["-c", path], "%s = %s" % (key, value))
    assert "%s:6" % path in out, "message does not name %s:6:\n%s" % (path, out)
    assert key in out, out
    for word in allowed:
        assert word in out, "message does not list allowed value %r:\n%s" % (word, out)


@pytest.mark.parametrize("flag,value", [("--timezone", "Europe/Atlantis"),
                                        ("--budget-notice-above", "-1"),
                                        ("--budget-check-interval", "9000")])
def test_bad_budget_flag(pgtally_bin, flag, value):
    out = must_refuse(["--listen", "127.0.0.1:%d" % free_port(), "--upstream", "127.0.0.1:5",
                       flag, value], "%s %s" % (flag, value))
    assert flag in out and value in out, out


def test_budget_keys_accepted(pgtally):
    proxy = pgtally(**{"timezone": "Europe/Berlin", "admin_conninfo": "",
                       "budget.contact": "ask #data-platform", "budget.notice_above": "0.5",
                       "budget.unknown_estimate": "refuse", "budget.exempt_users": "etl, admin", "budget.check_interval": "100",
                       "budget.role_refresh": "5m"})
    with proxy.connect() as c:
        assert_healthy(c)


def test_bad_listen_address(pgtally_bin, tmp_path):
    path = write(tmp_path, "[pgtally]\nupstream = 127.0.0.1:5\nlisten = no-port-here\n")
    out = must_refuse(["-c", path], "listen without a port")
    assert "%s:3" % path in out and "listen" in out, out


def test_unknown_section(pgtally_bin, tmp_path):
    path = write(tmp_path, "\n".join(base_lines()) + "\n[pgbouncer]\nlisten_port = 6432\n")
    out = must_refuse(["-c", path], "an unknown section")
    assert str(path) in out, out


def test_missing_config_file(pgtally_bin, tmp_path):
    path = tmp_path / "does-not-exist.ini"
    out = must_refuse(["-c", path], "a missing config file")
    assert str(path) in out, out


def test_unknown_flag(pgtally_bin):
    out = must_refuse(["--listen", "127.0.0.1:%d" % free_port(), "--upstream",
                       "127.0.0.1:5", "--no-such-flag", "1"], "an unknown flag")
    assert "no-such-flag" in out, out


def test_bad_flag_value(pgtally_bin):
    out = must_refuse(["--listen", "127.0.0.1:%d" % free_port(), "--upstream",
                       "127.0.0.1:5", "--client-tls", "sometimes"], "--client-tls sometimes")
    assert "client" in out and "tls" in out, out
    for word in ("disable", "allow", "require"):
        assert word in out, out


def test_client_tls_without_certificate(pgtally_bin, tmp_path):
    path = write(tmp_path, "\n".join(base_lines() + ["client_tls = require"]) + "\n")
    out = must_refuse(["-c", path], "client_tls=require without a certificate")
    assert "client_tls" in out or "cert" in out, out


def test_flags_override_file(pgtally, pg):
    file_port, flag_port = free_port(), free_port()
    dead = free_port()
    proxy = pgtally(wait=False, listen="127.0.0.1:%d" % file_port,
                    upstream="127.0.0.1:%d" % dead, log_level="error",
                    extra_args=["--listen", "127.0.0.1:%d" % flag_port,
                                "--upstream", "127.0.0.1:%d" % pg.port,
                                "--log-level", "info"])
    proxy.port = flag_port
    proxy.wait_ready()
    assert "addr=127.0.0.1:%d" % flag_port in proxy.wait_log(r"event=listening", 1)
    with proxy.connect() as c:  # --upstream took effect: the real server answers
        assert_healthy(c)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", file_port), timeout=1).close()


def test_flags_only(pgtally):
    proxy = pgtally(as_flags=True, max_clients=3, startup_timeout=5)
    with proxy.connect() as c:
        assert_healthy(c)


LOG_LINE = re.compile(r"^ts=\S+ level=(debug|info|warning|error) event=[a-z0-9_.]+( \S+=.*)?$")


def test_log_format(pgtally):
    """stderr carries one event per line, ts=... level=... event=... key=value."""
    proxy = pgtally(log_level="debug")
    with proxy.connect(application_name="itest log format") as c:
        assert_healthy(c)
    bad = proxy.raw()
    bad.try_send(b"GET / HTTP/1.0\r\n\r\n")
    bad.wait_closed(2)
    bad.close()
    lines = proxy.log().splitlines()
    assert lines, "pgtally logged nothing at log_level=debug"
    for line in lines:
        assert LOG_LINE.match(line), "log line not in key=value form: %r" % line


def test_log_level_warning_hides_info(pgtally):
    proxy = pgtally(log_level="warning")
    with proxy.connect() as c:
        assert_healthy(c)
    log = proxy.log()
    assert "level=info" not in log and "level=debug" not in log, log
