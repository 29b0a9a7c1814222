"""pgtally's own statement and portal names, tried as a hostile client
would. pgtally injects extended-protocol messages into a session: the
in-band EXPLAIN of a Bind (its own statement and portal) and the stand-in of
a refused Bind (a Bind of a statement that must not exist, so that it fails
and its error is replaced by the budget's). A client that takes those names
must neither defuse a refusal (the stand-in would bind the client's
statement and succeed) nor lose its own statements and portals to
pgtally's Close and Bind; and no message the client receives may name one
of pgtally's statements. Raw protocol, since no driver picks such names.
"""

import struct
import time

from helpers import DBNAME, assert_healthy
from pgwire import RawConn, message, parse_fields, query_message
from test_budgets import PER_QUERY, set_budget

ALWAYS = {"estimate.explain_above": "0s"}
TABLE = "names_t"


def parse(sql, name=b""):
    return message(b"P", name + b"\0" + sql.encode() + b"\0" + struct.pack("!H", 0))


def bind(portal=b"", stmt=b"", params=()):
    body = portal + b"\0" + stmt + b"\0" + struct.pack("!H", 0)
    body += struct.pack("!H", len(params))
    for v in params:
        body += struct.pack("!I", len(v)) + v
    return message(b"B", body + struct.pack("!H", 0))


def execute(portal=b""):
    return message(b"E", portal + b"\0" + struct.pack("!I", 0))


SYNC = message(b"S")


def until_ready(conn, timeout=10.0):
    """The messages (type, payload) the client receives up to ReadyForQuery."""
    got, deadline = [], time.monotonic() + timeout
    while True:
        m = conn.recv_message(max(deadline - time.monotonic(), 0.05))
        assert m is not None, "connection closed after %r" % got
        got.append(m)
        if m[0] == b"Z":
            return got


def texts(msgs):
    """The fields of every ErrorResponse and NoticeResponse."""
    return [parse_fields(p) for t, p in msgs if t in (b"E", b"N")]


def assert_no_pgtally_name(msgs):
    """No error or notice names a statement or portal of pgtally's: they all
    start with pgtally_, and the client's own never fail in these tests."""
    for f in texts(msgs):
        assert not any("pgtally_" in v for v in f.values()), f


def sqlstates(msgs):
    return [parse_fields(p).get("C") for t, p in msgs if t == b"E"]


def shape(msgs):
    """What a reply sequence says, comparable between direct and pgtally:
    types, rows, command tags and error codes and messages."""
    out = []
    for t, p in msgs:
        if t in (b"D", b"C"):
            out.append((t, p))
        elif t == b"E":
            f = parse_fields(p)
            out.append((t, f.get("C"), f.get("M")))
        elif t != b"N":
            out.append((t,))
    return out


def fresh_table(pg):
    with pg.admin() as a:
        a.execute("DROP TABLE IF EXISTS %s" % TABLE)
        a.execute("CREATE TABLE %s (a int)" % TABLE)
        a.execute("GRANT ALL ON %s TO PUBLIC" % TABLE)


def rows_in_table(pg):
    with pg.admin() as a:
        return a.execute("SELECT count(*) FROM %s" % TABLE).fetchone()[0]


def login(conn):
    conn.startup("trust_user", DBNAME)
    return conn


# ---- (a) a client's statement named as the refusal's stand-in ------------

def refusal_survives(pgtally, pg, take_name, explain, bind_it=True):
    """The client takes the stand-in's statement name (take_name sends the
    messages), the budget is then spent, and an extended-protocol INSERT
    must still be refused with 53400 and not run."""
    fresh_table(pg)
    cfg = dict(PER_QUERY)
    if explain:
        cfg.update(ALWAYS)
    p = pgtally(**cfg)
    set_budget(p, "--user", "trust_user", "--period", "day", "--limit", "100")
    conn = login(p.raw())
    seen = []
    conn.send(take_name)
    seen += until_ready(conn)
    assert sqlstates(seen) == [], shape(seen)
    set_budget(p, "--user", "trust_user", "--period", "day", "--limit", "0")
    for sql in ("INSERT INTO %s VALUES (1)" % TABLE, "SELECT 1"):
        conn.send(parse(sql) + bind() + execute() + SYNC)
        got = until_ready(conn)
        seen += got
        assert sqlstates(got) == ["53400"], shape(got)
        assert [t for t, _ in got] == [b"1", b"E", b"Z"], shape(got)
    if bind_it:
        # the client's statement, bound under a portal of its own, is refused too
        conn.send(bind(b"mine", b"pgtally_refused") + execute(b"mine") + SYNC)
        got = until_ready(conn)
        seen += got
        assert sqlstates(got) == ["53400"], shape(got)
    assert rows_in_table(pg) == 0
    # the session is healthy: settings are never refused
    conn.send(query_message("SET application_name = 'n'"))
    seen += until_ready(conn)
    conn.send(query_message("SHOW application_name"))
    got = until_ready(conn)
    seen += got
    assert [m for m in got if m[0] == b"D"] == [(b"D", b"\0\x01\0\0\0\x01n")], shape(got)
    # the client's own statement survived: once the budget allows, it runs
    set_budget(p, "--user", "trust_user", "--period", "day", "--limit", "100")
    conn.send(bind(b"", b"pgtally_refused") + execute() + SYNC)
    got = until_ready(conn)
    seen += got
    assert [m for m in got if m[0] == b"D"] == [(b"D", b"\0\x01\0\0\0\x011")], shape(got)
    assert_no_pgtally_name(seen)
    conn.close()
    assert_healthy(p.connect())
    assert p.alive()


def test_a_statement_named_pgtally_refused_does_not_defuse_a_refusal(pgtally, pg):
    refusal_survives(pgtally, pg, parse("SELECT 1", b"pgtally_refused") + SYNC, explain=False)


def test_a_statement_named_pgtally_refused_does_not_defuse_an_explained_refusal(pgtally, pg):
    refusal_survives(pgtally, pg, parse("SELECT 1", b"pgtally_refused") + SYNC, explain=True)


def test_sql_prepare_pgtally_refused_does_not_defuse_a_refusal(pgtally, pg):
    refusal_survives(pgtally, pg, query_message("PREPARE pgtally_refused AS SELECT 1"),
                     explain=False, bind_it=False)


def test_bind_of_a_sql_prepared_statement_over_a_spent_budget_is_refused(pgtally, pg):
    fresh_table(pg)
    p = pgtally(**PER_QUERY)
    set_budget(p, "--user", "trust_user", "--period", "day", "--limit", "100")
    conn = login(p.raw())
    conn.send(query_message("PREPARE ins AS INSERT INTO %s VALUES (1)" % TABLE))
    until_ready(conn)
    set_budget(p, "--user", "trust_user", "--period", "day", "--limit", "0")
    conn.send(bind(b"", b"ins") + execute() + SYNC)
    got = until_ready(conn)
    conn.close()
    assert sqlstates(got) == ["53400"] and rows_in_table(pg) == 0, shape(got)


# ---- (b) a client's statement and portal named as the EXPLAIN's ----------

def direct_and_pgtally(pgtally, pg, setup, batch):
    """The replies to setup, then to batch, direct and through a pgtally
    that explains every statement."""
    p = pgtally(**ALWAYS)
    out = {}
    for name in ("direct", "pgtally"):
        conn = login(p.raw() if name == "pgtally" else RawConn("127.0.0.1", pg.port))
        got = []
        for msgs in (setup, batch):
            if msgs:
                conn.send(msgs)
                got.append(until_ready(conn))
        conn.send(query_message("SELECT 1"))
        got.append(until_ready(conn))
        out[name] = got
        conn.close()
    assert p.alive()
    return p, out


def assert_as_direct(out):
    direct = [shape(g) for g in out["direct"]]
    assert [shape(g) for g in out["pgtally"]] == direct, (direct, out["pgtally"])
    assert sqlstates(sum(out["direct"], [])) == [], direct
    for g in out["pgtally"]:
        assert_no_pgtally_name(g)


EXPLAINED = "SELECT count(*) FROM generate_series(1, 10)"


def test_client_statement_named_pgtally_explain_bound_after_an_explained_one(pgtally, pg):
    """The client's pgtally_explain is bound after pgtally explains another
    statement in the same batch: pgtally's Close must not have closed it."""
    p, out = direct_and_pgtally(
        pgtally, pg, None,
        parse("SELECT 42", b"pgtally_explain") + parse(EXPLAINED) + bind() + execute() +
        bind(b"pgtally_explain", b"pgtally_explain") + execute(b"pgtally_explain") + SYNC)
    assert_as_direct(out)
    assert (b"D", b"\0\x01\0\0\0\x0242") in out["pgtally"][0], out["pgtally"]


def test_client_statement_named_pgtally_explain_is_itself_explained(pgtally, pg):
    """The client's Bind of its pgtally_explain is explained: the EXPLAIN
    must not replace or close the client's statement."""
    p, out = direct_and_pgtally(
        pgtally, pg, parse("SELECT 42", b"pgtally_explain") + SYNC,
        bind(b"pgtally_explain", b"pgtally_explain") + execute(b"pgtally_explain") +
        bind(b"", b"pgtally_explain") + execute() + SYNC)
    assert_as_direct(out)
    assert out["pgtally"][1].count((b"D", b"\0\x01\0\0\0\x0242")) == 2, out["pgtally"]


def test_sql_prepare_pgtally_explain_survives_an_explained_statement(pgtally, pg):
    p, out = direct_and_pgtally(
        pgtally, pg, query_message("PREPARE pgtally_explain AS SELECT 42"),
        parse(EXPLAINED) + bind() + execute() + bind(b"", b"pgtally_explain") + execute() + SYNC)
    assert_as_direct(out)


def test_client_cursor_named_pgtally_explain_does_not_break_explains(pgtally, pg):
    """A cursor WITH HOLD outlives its transaction; named as pgtally's
    portal, it made the EXPLAIN's Bind fail, and the client's statement with
    it."""
    p, out = direct_and_pgtally(
        pgtally, pg, query_message("DECLARE pgtally_explain CURSOR WITH HOLD FOR SELECT 42"),
        parse(EXPLAINED) + bind() + execute() + SYNC)
    assert_as_direct(out)


# ---- (c) nothing the client sees names pgtally's statements --------------

def test_explain_errors_name_the_clients_statement_not_pgtallys(pgtally, pg):
    """A Bind with more parameters than its statement takes fails in the
    EXPLAIN's Bind, whose error becomes the statement's: it must name the
    client's statement, as the server would have."""
    p, out = direct_and_pgtally(
        pgtally, pg, parse("SELECT $1::int", b"two") + SYNC,
        parse("SELECT $1::int") + bind(params=(b"1", b"2")) + execute() + SYNC)
    direct = [shape(g) for g in out["direct"]]
    assert [shape(g) for g in out["pgtally"]] == direct, (direct, out["pgtally"])
    assert sqlstates(out["direct"][1]) == ["08P01"], direct
    for g in out["pgtally"]:
        assert_no_pgtally_name(g)
    # the same through a named statement
    p, out = direct_and_pgtally(
        pgtally, pg, parse("SELECT $1::int", b"two") + SYNC,
        bind(b"", b"two", params=(b"1", b"2")) + execute() + SYNC)
    direct = [shape(g) for g in out["direct"]]
    assert [shape(g) for g in out["pgtally"]] == direct, (direct, out["pgtally"])
    assert 'prepared statement "two"' in direct[1][0][2], direct


def test_sessions_use_names_of_their_own(pgtally, pg):
    """The session stays healthy across explained statements and refusals,
    and pgtally's names never show in the server's list of statements."""
    p = pgtally(**ALWAYS)
    conn = login(p.raw())
    seen = []
    for i in range(5):
        conn.send(parse("SELECT %d + $1::int" % i) + bind(params=(b"1",)) + execute() + SYNC)
        got = until_ready(conn)
        seen += got
        assert (b"D", b"\0\x01\0\0\0\x01" + str(i + 1).encode()) in got, shape(got)
    conn.send(query_message("SELECT name FROM pg_prepared_statements"))
    got = until_ready(conn)
    seen += got
    assert [m for m in got if m[0] == b"D"] == [], shape(got)
    assert_no_pgtally_name(seen)
    conn.close()
    assert p.alive()
