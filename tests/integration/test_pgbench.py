"""pgbench through pgtally: initialisation (COPY, VACUUM, DDL) and load in
every query mode."""

import re
import subprocess

import pytest

from helpers import SLOW, clean_env

TABLES = "pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history"


def pgbench(proxy, *args, user="trust_user", sslmode="disable", timeout=90):
    env = clean_env(PGSSLMODE=sslmode, PGGSSENCMODE="disable", PGCONNECT_TIMEOUT=10,
                    PGPASSWORD={"scram_user": "scram_pw", "md5_user": "md5_pw"}.get(user, ""))
    cmd = ["pgbench", "-h", proxy.host, "-p", str(proxy.port), "-U", user] + \
        [str(a) for a in args] + ["pgtally_test"]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=env, timeout=timeout * SLOW)
    return r


def check_run(r):
    out = r.stdout + r.stderr
    assert r.returncode == 0, "pgbench exited %d:\n%s" % (r.returncode, out)
    m = re.search(r"number of failed transactions: (\d+)", out)
    if m:
        assert m.group(1) == "0", out
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m, "no transaction count in pgbench output:\n" + out
    assert int(m.group(1)) > 0, out
    assert "error" not in r.stderr.lower(), r.stderr
    return int(m.group(1))


@pytest.fixture(scope="module")
def initialized(pgtally_module, pg):
    """pgbench -i -s 1 through pgtally (once for the module)."""
    proxy = pgtally_module()
    r = pgbench(proxy, "-i", "-s", "1", "-q")
    assert r.returncode == 0, "pgbench -i failed:\n" + r.stdout + r.stderr
    assert "done" in r.stderr, r.stderr
    with pg.admin() as c:
        assert c.execute("SELECT count(*) FROM pgbench_accounts").fetchone() == (100000,)
        assert c.execute("SELECT count(*) FROM pgbench_branches").fetchone() == (1,)
        c.execute("GRANT ALL ON %s TO PUBLIC" % TABLES)
    return proxy


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_modes(initialized, pgtally, mode):
    proxy = pgtally()
    check_run(pgbench(proxy, "-M", mode, "-c", "4", "-j", "2", "-T", "3"))


@pytest.mark.timeout(60)
def test_pgbench_prepared_tls_scram(initialized, pgtally, pg):
    """Load over TLS on both legs, SCRAM logins (pgtally shows the server's
    certificate, so libpq's default channel binding works)."""
    proxy = pgtally(client_tls="require", upstream_tls="require",
                    client_tls_cert_file=str(pg.cert), client_tls_key_file=str(pg.key))
    check_run(pgbench(proxy, "-M", "prepared", "-c", "4", "-j", "2", "-T", "3",
                      user="scram_user", sslmode="require"))


@pytest.mark.timeout(60)
def test_pgbench_connection_per_transaction(initialized, pgtally):
    """-C: a new login (md5) through pgtally for every transaction."""
    proxy = pgtally()
    n = check_run(pgbench(proxy, "-C", "-S", "-c", "4", "-j", "2", "-T", "3",
                          user="md5_user"))
    assert n >= 20, "only %d connect+transaction cycles in 3 s" % n


@pytest.mark.timeout(60)
def test_pgbench_many_clients(initialized, pgtally):
    """50 concurrent sessions through one pgtally."""
    proxy = pgtally()
    check_run(pgbench(proxy, "-S", "-M", "extended", "-c", "50", "-j", "2", "-T", "3"))
