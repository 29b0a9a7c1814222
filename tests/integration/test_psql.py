"""psql (and psycopg) logging in through pgtally: TLS on both legs, every
authentication method the server uses, and startup parameters."""

import psycopg
import pytest

from helpers import assert_healthy, run_psql
from pgwire import RawConn, ServerError
from relay import TcpRelay

SSL_QUERY = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
USERS = [("scram_user", "scram_pw"), ("md5_user", "md5_pw"), ("trust_user", None)]


def psql_ok(r):
    assert r.returncode == 0, "psql failed (exit %d):\n%s%s" % (r.returncode, r.stdout, r.stderr)
    return r.stdout


def same_cert_as_server(pg):
    """pgtally presenting the server's own certificate: the deployment in
    which SCRAM channel binding (tls-server-end-point) can pass through a
    TLS-terminating proxy, since the client hashes the certificate it sees."""
    return {"client_tls_cert_file": str(pg.cert), "client_tls_key_file": str(pg.key)}


@pytest.mark.parametrize("user,password", USERS, ids=[u for u, _ in USERS])
def test_psql_tls_on_both_legs(pgtally, pg, user, password):
    """sslmode=require to pgtally, upstream_tls=require to the server, with
    psql's default settings (channel_binding=prefer)."""
    proxy = pgtally(client_tls="require", upstream_tls="require", **same_cert_as_server(pg))
    env = {"PGPASSWORD": password} if password else {}
    out = psql_ok(run_psql(proxy.dsn(user=user, password=False, sslmode="require"),
                           "SELECT current_user", SSL_QUERY, r"\conninfo", env=env))
    lines = out.splitlines()
    assert lines[0] == user
    assert lines[1] == "t", "pgtally -> server connection is not TLS: %r" % out
    assert "SSL connection" in out, "psql -> pgtally connection is not TLS: %r" % out


@pytest.mark.parametrize("user,password", USERS, ids=[u for u, _ in USERS])
def test_psql_tls_on_both_legs_own_cert(pgtally, user, password):
    """pgtally with its own certificate. SCRAM channel binding cannot work
    through it (the client binds to pgtally's certificate, the server to
    its own), so a TLS client has to log in with channel_binding=disable."""
    proxy = pgtally(client_tls="require", upstream_tls="require")
    env = {"PGPASSWORD": password} if password else {}
    dsn = proxy.dsn(user=user, password=False, sslmode="require", channel_binding="disable")
    out = psql_ok(run_psql(dsn, "SELECT current_user", SSL_QUERY, r"\conninfo", env=env))
    lines = out.splitlines()
    assert lines[0] == user
    assert lines[1] == "t", "pgtally -> server connection is not TLS: %r" % out
    assert "SSL connection" in out, "psql -> pgtally connection is not TLS: %r" % out


@pytest.mark.parametrize("user,password", USERS, ids=[u for u, _ in USERS])
def test_psql_plain(pgtally, user, password):
    proxy = pgtally(client_tls="disable", upstream_tls="disable")
    env = {"PGPASSWORD": password} if password else {}
    out = psql_ok(run_psql(proxy.dsn(user=user, password=False), "SELECT current_user",
                           SSL_QUERY, env=env))
    assert out.splitlines() == [user, "f"]


@pytest.mark.parametrize("user,password", USERS, ids=[u for u, _ in USERS])
def test_psql_plain_client_tls_server(pgtally, user, password):
    """The default deployment: clients in plain TCP, pgtally -> server over
    TLS. The server offers SCRAM-SHA-256-PLUS there, which libpq refuses to
    see on a non-TLS connection, so pgtally must withhold it."""
    proxy = pgtally(client_tls="disable", upstream_tls="require")
    env = {"PGPASSWORD": password} if password else {}
    out = psql_ok(run_psql(proxy.dsn(user=user, password=False), "SELECT current_user",
                           SSL_QUERY, env=env))
    assert out.splitlines() == [user, "t"]


def test_psql_verify_full_sees_pgtally_certificate(pgtally, proxy_cert):
    """The client's TLS peer is pgtally, with pgtally's own certificate."""
    proxy = pgtally(client_tls="require", upstream_tls="require")
    dsn = proxy.dsn(user="trust_user", sslmode="verify-full", sslrootcert=str(proxy_cert[0]))
    out = psql_ok(run_psql(dsn, "SELECT current_user", SSL_QUERY))
    assert out.splitlines() == ["trust_user", "t"]


@pytest.mark.parametrize("channel_binding", ["prefer", "require"])
def test_scram_channel_binding_passes_through(pgtally, pg, channel_binding):
    """SCRAM-SHA-256-PLUS offered by the server reaches the client unchanged;
    with pgtally showing the server's certificate the binding verifies."""
    proxy = pgtally(client_tls="require", upstream_tls="require", **same_cert_as_server(pg))
    with proxy.connect(user="scram_user", sslmode="require",
                       channel_binding=channel_binding) as c:
        assert c.execute("SELECT current_user").fetchone() == ("scram_user",)
        assert c.execute(SSL_QUERY).fetchone() == (True,)
        assert c.info.pgconn.ssl_in_use


def test_scram_channel_binding_own_cert_fails_cleanly(pgtally):
    """With its own certificate pgtally cannot let channel binding succeed;
    the client must get the server's FATAL (not a hang), and pgtally and
    other sessions are unaffected."""
    proxy = pgtally(client_tls="require", upstream_tls="require")
    healthy = proxy.connect(user="scram_user", sslmode="require", channel_binding="disable")
    with pytest.raises(psycopg.OperationalError) as ei:
        proxy.connect(user="scram_user", sslmode="require", channel_binding="prefer").close()
    assert "channel binding" in str(ei.value), str(ei.value)
    assert_healthy(healthy)
    healthy.close()


@pytest.mark.parametrize("upstream_tls", ["verify-ca", "verify-full"])
def test_upstream_tls_verified(pgtally, pg, upstream_tls):
    proxy = pgtally(upstream_tls=upstream_tls, upstream_tls_ca_file=str(pg.cert))
    with proxy.connect() as c:
        assert c.execute(SSL_QUERY).fetchone() == (True,)


def upstream_refused(proxy, what):
    """Logging in must fail with FATAL 08006; pgtally stays up."""
    with pytest.raises(psycopg.OperationalError):
        proxy.connect().close()
    conn = RawConn(proxy.host, proxy.port)
    with pytest.raises(ServerError) as ei:
        conn.startup("trust_user", "pgtally_test")
    conn.close()
    assert ei.value.fields.get("C") == "08006", "%s: %r" % (what, ei.value.fields)
    assert proxy.alive()
    return ei.value.fields


def test_upstream_tls_verify_with_wrong_ca_fails(pgtally, proxy_cert):
    """A server certificate that the CA file does not vouch for is refused."""
    proxy = pgtally(upstream_tls="verify-ca", upstream_tls_ca_file=str(proxy_cert[0]))
    upstream_refused(proxy, "verify-ca with the wrong CA")


def test_upstream_tls_verify_full_checks_host_name(pgtally, pg):
    """127.0.0.2 reaches the same server, but is not in its certificate."""
    upstream = "127.0.0.2:%d" % pg.port
    proxy = pgtally(upstream=upstream, upstream_tls="verify-ca",
                    upstream_tls_ca_file=str(pg.cert))
    with proxy.connect() as c:
        assert c.execute(SSL_QUERY).fetchone() == (True,)
    proxy = pgtally(upstream=upstream, upstream_tls="verify-full",
                    upstream_tls_ca_file=str(pg.cert))
    upstream_refused(proxy, "verify-full with a host name not in the certificate")


def test_upstream_tls_verify_full_by_dns_name(pgtally, pg):
    proxy = pgtally(upstream="localhost:%d" % pg.port, upstream_tls="verify-full",
                    upstream_tls_ca_file=str(pg.cert))
    with proxy.connect() as c:
        assert c.execute(SSL_QUERY).fetchone() == (True,)


def test_upstream_tls_prefer_and_disable(pgtally):
    proxy = pgtally(upstream_tls="prefer")
    with proxy.connect() as c:
        assert c.execute(SSL_QUERY).fetchone() == (True,)
    proxy = pgtally(upstream_tls="disable")
    with proxy.connect() as c:
        assert c.execute(SSL_QUERY).fetchone() == (False,)


def test_upstream_without_tls_support(pgtally, pg):
    """A server that answers SSLRequest with 'N': prefer falls back to
    plaintext, require and verify-* refuse instead of downgrading."""
    relay = TcpRelay(pg.host, pg.port, refuse_tls=True)
    try:
        upstream = "127.0.0.1:%d" % relay.port
        proxy = pgtally(upstream=upstream, upstream_tls="prefer")
        with proxy.connect() as c:
            assert c.execute(SSL_QUERY).fetchone() == (False,)
        for mode in ("require", "verify-ca", "verify-full"):
            proxy = pgtally(upstream=upstream, upstream_tls=mode,
                            upstream_tls_ca_file=str(pg.cert))
            upstream_refused(proxy, "upstream_tls=%s with a server without TLS" % mode)
    finally:
        relay.close()


@pytest.mark.parametrize("user", ["scram_user", "md5_user"])
def test_wrong_password_gets_server_error(pgtally, pg, user):
    proxy = pgtally(client_tls="require", upstream_tls="require", **same_cert_as_server(pg))
    r = run_psql(proxy.dsn(user=user, password=False, sslmode="require"), "SELECT 1",
                 env={"PGPASSWORD": "wrong"})
    assert r.returncode != 0
    assert 'password authentication failed for user "%s"' % user in r.stderr, r.stderr
    assert "FATAL" in r.stderr, r.stderr


@pytest.mark.parametrize("user", ["scram_user", "md5_user"])
def test_wrong_password_sqlstate_28P01(pgtally, user):
    """The server's ErrorResponse reaches the client unchanged (raw protocol,
    so the SQLSTATE can be read)."""
    proxy = pgtally()
    healthy = proxy.connect()
    conn = RawConn(proxy.host, proxy.port)
    with pytest.raises(ServerError) as ei:
        conn.startup(user, "pgtally_test", password="wrong")
    f = ei.value.fields
    assert f.get("C") == "28P01", f
    assert f.get("S") == "FATAL", f
    assert f.get("M") == 'password authentication failed for user "%s"' % user, f
    conn.close()
    # and the right password through the same raw client works
    good = RawConn(proxy.host, proxy.port)
    good.startup(user, "pgtally_test", password=user.split("_")[0] + "_pw")
    assert good.query("SELECT current_user") == [(user,)]
    good.close()
    assert_healthy(healthy)
    healthy.close()


def test_unknown_role_gets_server_error(pgtally):
    proxy = pgtally()
    conn = RawConn(proxy.host, proxy.port)
    with pytest.raises(ServerError) as ei:
        conn.startup("no_such_user", "pgtally_test")
    # 28000: "no pg_hba.conf entry for host ..." from the server itself
    assert ei.value.sqlstate == "28000", ei.value.fields
    assert "pg_hba.conf" in ei.value.fields.get("M", ""), ei.value.fields


def test_client_tls_require_rejects_plaintext(pgtally):
    proxy = pgtally(client_tls="require")
    healthy = proxy.connect(sslmode="require")
    r = run_psql(proxy.dsn(sslmode="disable"), "SELECT 1")
    assert r.returncode != 0, r.stdout
    err = r.stderr.lower()
    assert "fatal" in err and ("ssl" in err or "tls" in err), \
        "psql's error does not say TLS is required: %r" % r.stderr
    # the same through the raw protocol: an ErrorResponse, then close
    conn = RawConn(proxy.host, proxy.port)
    with pytest.raises(ServerError) as ei:
        conn.startup("trust_user", "pgtally_test")
    assert ei.value.fields.get("S") == "FATAL", ei.value.fields
    msg = ei.value.fields.get("M", "").lower()
    assert "ssl" in msg or "tls" in msg, ei.value.fields
    conn.read_until_closed(2)
    assert_healthy(healthy)
    healthy.close()


def test_client_tls_allow_accepts_both(pgtally):
    proxy = pgtally(client_tls="allow")
    with proxy.connect(sslmode="require") as c:
        assert c.info.pgconn.ssl_in_use
        assert_healthy(c)
    with proxy.connect(sslmode="disable") as c:
        assert not c.info.pgconn.ssl_in_use
        assert_healthy(c)


def test_client_tls_disable_refuses_ssl(pgtally):
    proxy = pgtally(client_tls="disable")
    with proxy.connect(sslmode="prefer") as c:
        assert not c.info.pgconn.ssl_in_use
        assert_healthy(c)
    with pytest.raises(psycopg.OperationalError):
        proxy.connect(sslmode="require").close()


def test_startup_parameters_reach_server_psql(pgtally):
    proxy = pgtally()
    dsn = proxy.dsn(options="-c search_path=foo", application_name="itest_psql_app")
    out = psql_ok(run_psql(
        dsn, "SHOW search_path",
        "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        "SHOW client_encoding", env={"PGCLIENTENCODING": "LATIN1"}))
    assert out.splitlines() == ["foo", "itest_psql_app", "LATIN1"]


def test_startup_parameters_reach_server_psycopg(pgtally):
    proxy = pgtally()
    with proxy.connect(options="-c search_path=foo", application_name="itest_app",
                       client_encoding="LATIN1") as c:
        assert c.execute("SHOW search_path").fetchone() == ("foo",)
        assert c.execute("SELECT application_name FROM pg_stat_activity"
                         " WHERE pid = pg_backend_pid()").fetchone() == ("itest_app",)
        # ParameterStatus from the server is relayed
        assert c.info.parameter_status("client_encoding") == "LATIN1"
        assert c.info.parameter_status("application_name") == "itest_app"
        assert c.info.server_version >= 150000
        assert c.info.encoding in ("iso8859-1", "latin1", "latin-1")
        # text is converted by the server, not mangled on the way
        assert c.execute("SELECT 'é', length('é'), octet_length(convert_to('é', 'UTF8'))"
                         ).fetchone() == ("é", 1, 2)
        # a later SET client_encoding comes back as ParameterStatus too
        c.execute("SET client_encoding = 'UTF8'")
        assert c.info.parameter_status("client_encoding") == "UTF8"
        assert c.execute("SELECT 'ü'").fetchone() == ("ü",)


def test_trust_login_and_backend_pid(pgtally):
    proxy = pgtally()
    with proxy.connect(user="trust_user") as c:
        assert c.execute("SELECT current_user").fetchone() == ("trust_user",)
        # the client got the server's real BackendKeyData
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == c.info.backend_pid
