"""Rules by statement shape in a running pgtally (pgtallyctl rule add, list,
rm): a block rule refuses every statement of its shape, whatever its
constants, before it runs (SQLSTATE 42T01, the rule's message, a HINT
naming the rule to remove), through psql and psycopg (simple and extended
protocol); other shapes and, for a user-scoped rule, other users carry on;
warn gives a WARNING; log runs the statement and records the rule in the
ledger (queries.rule_id); removing or expiring a rule lifts it within a
second or so."""

import json
import time

import psycopg
import pytest

from helpers import PASSWORDS, SLOW, run_pgtallyctl, wait_until
from pgwire import RawConn, parse_fields, query_message
from test_conversation import SYNC, bind, execute
from test_hold import parse
from test_budgets import connect, ctl, psql, wait_loaded
from test_metering import ledger, wait_ledger

SQLSTATE = "42T01"


@pytest.fixture(scope="module")
def users(pg):
    names = ["rule_a", "rule_b"]
    with pg.admin() as a:
        for n in names:
            a.execute("DROP ROLE IF EXISTS %s" % n)
            a.execute("CREATE ROLE %s LOGIN IN ROLE pgtally_test_users" % n)
        a.execute("DROP TABLE IF EXISTS rule_t")
        a.execute("CREATE TABLE rule_t (a int)")
        a.execute("GRANT ALL ON rule_t TO PUBLIC")
    return names


def fingerprint(proxy, user, sql, normalized):
    """Run sql once, and return its shape as pgtallyctl queries shows it
    (16 hex digits), read from the ledger by its normalized text."""
    r = psql(proxy, user, sql)
    assert r.returncode == 0, r
    rows = wait_ledger(proxy, 1, "\"user\" = ? AND normalized = ?", (user, normalized))
    return "%016x" % (rows[0]["fingerprint"] & 0xFFFFFFFFFFFFFFFF)


def add_rule(proxy, *args):
    p = ctl(proxy, "rule", "add", *args)
    wait_loaded(proxy)
    return int(p.stdout.split()[1].rstrip(":"))


def test_block_rule_refuses_the_shape_everywhere(pgtally, users):
    proxy = pgtally()
    fp = fingerprint(proxy, "rule_a", "SELECT count(*) FROM rule_t WHERE a = 1",
                     "SELECT count(*) FROM rule_t WHERE a = $1")
    rid = add_rule(proxy, "--fingerprint", fp, "--action", "block",
                   "--message", "full scans of rule_t are off today")
    # psql, other constants: the same shape
    r = psql(proxy, "rule_a", "SELECT count(*) FROM rule_t WHERE a = 99")
    assert r.returncode != 0
    assert "ERROR:  full scans of rule_t are off today" in r.stderr, r.stderr
    assert "HINT:  Ask your pgtally admin (pgtallyctl rule rm %d)." % rid in r.stderr, r.stderr
    # another shape carries on
    r = psql(proxy, "rule_a", "SELECT count(*) FROM rule_t")
    assert r.returncode == 0 and r.stdout.strip() == "0", r
    with connect(proxy, "rule_b") as c:
        # simple protocol
        with pytest.raises(psycopg.Error) as ei:
            c.execute("SELECT count(*) FROM rule_t WHERE a = 5", prepare=False)
        assert ei.value.sqlstate == SQLSTATE
        # extended protocol, a parameter
        with pytest.raises(psycopg.Error) as ei:
            c.execute("SELECT count(*) FROM rule_t WHERE a = %s", (7,))
        assert ei.value.sqlstate == SQLSTATE
        assert "rule rm %d" % rid in (ei.value.diag.message_hint or "")
        # a prepared statement
        with pytest.raises(psycopg.Error) as ei:
            c.execute("SELECT count(*) FROM rule_t WHERE a = %s", (8,), prepare=True)
        assert ei.value.sqlstate == SQLSTATE
        assert c.execute("SELECT 1 + 1").fetchone() == (2,)
    # a multi-statement Query holding the shape
    r = psql(proxy, "rule_a", "SELECT 1; SELECT count(*) FROM rule_t WHERE a = 3")
    assert r.returncode != 0 and SQLSTATE in r.stderr or "off today" in r.stderr, r
    # the shape behind 65 other statements of one Query
    r = psql(proxy, "rule_a", "SELECT 1; " * 65 + "SELECT count(*) FROM rule_t WHERE a = 6")
    assert r.returncode != 0 and "off today" in r.stderr, r
    # SQL-level PREPARE and DECLARE of the shape: refused where the
    # statement is named, so no EXECUTE or FETCH can run it
    with connect(proxy, "rule_a") as c:
        with pytest.raises(psycopg.Error) as ei:
            c.execute("PREPARE scan AS SELECT count(*) FROM rule_t WHERE a = 2", prepare=False)
        assert ei.value.sqlstate == SQLSTATE
        with pytest.raises(psycopg.Error) as ei:
            c.execute("EXECUTE scan", prepare=False)
        assert ei.value.sqlstate == "26000"  # never prepared
    with connect(proxy, "rule_a") as c:
        c.execute("BEGIN", prepare=False)
        with pytest.raises(psycopg.Error) as ei:
            c.execute("DECLARE cur CURSOR FOR SELECT count(*) FROM rule_t WHERE a = 2",
                      prepare=False)
        assert ei.value.sqlstate == SQLSTATE
    # list, then rm: runs again within ~1.5 s
    listed = json.loads(ctl(proxy, "rule", "list", "--format", "json").stdout)
    assert [x["id"] for x in listed] == [rid] and listed[0]["fingerprint"] == fp
    assert listed[0]["action"] == "block" and listed[0]["user"] is None
    ctl(proxy, "rule", "rm", str(rid))
    t0 = time.monotonic()
    wait_until(lambda: psql(proxy, "rule_a", "SELECT count(*) FROM rule_t WHERE a = 4")
               .returncode == 0, 3 * SLOW, what="the rule lifted")
    assert time.monotonic() - t0 < 1.5 * SLOW
    recs = ledger(proxy, "rule_id = ?", (rid,))
    assert recs and all(x["status"] == "refused" and x["sqlstate"] == SQLSTATE for x in recs), recs


def test_block_rule_stops_a_pipelined_statement(pgtally, users):
    """A statement sent behind others in one batch (psycopg's pipeline
    mode) is refused before it runs, once the statements ahead of it have
    answered: the one ahead runs and its rows arrive, the blocked one gets
    the rule's error, and what follows it in the batch is skipped, as after
    any error."""
    proxy = pgtally()
    fp = fingerprint(proxy, "rule_a", "SELECT count(*), pg_sleep(0.01) FROM rule_t WHERE a = 1",
                     "SELECT count(*), pg_sleep($1) FROM rule_t WHERE a = $2")
    rid = add_rule(proxy, "--fingerprint", fp, "--action", "block")
    with connect(proxy, "rule_b") as c:
        t0 = time.monotonic()
        with pytest.raises(psycopg.Error) as ei:
            with c.pipeline():
                first = c.execute("SELECT 41 + 1, pg_sleep(0.2)")
                c.execute("SELECT count(*), pg_sleep(%s) FROM rule_t WHERE a = %s", (5, 2))
                c.execute("SELECT 1")
        elapsed = time.monotonic() - t0
        assert ei.value.sqlstate == SQLSTATE, ei.value
        assert "rule %d" % rid in str(ei.value), ei.value
        assert elapsed < 4, elapsed  # pg_sleep(5) did not run out
        assert first.fetchone()[0] == 42
        assert c.execute("SELECT 2").fetchone() == (2,)
    recs = wait_ledger(proxy, 1, "rule_id = ?", (rid,))
    assert [x["status"] for x in recs] == ["refused"], recs


def test_block_rule_stops_a_pipelined_query(pgtally, users):
    """Simple Queries written in one go (a raw client need not wait for
    ReadyForQuery): the blocked one, third, is refused before it runs, the
    ones around it run, each answered in order."""
    proxy = pgtally()
    fp = fingerprint(proxy, "rule_a", "SELECT count(*), pg_sleep(0.01) FROM rule_t WHERE a = 1",
                     "SELECT count(*), pg_sleep($1) FROM rule_t WHERE a = $2")
    rid = add_rule(proxy, "--fingerprint", fp, "--action", "block")
    c = RawConn("127.0.0.1", proxy.port)
    try:
        c.startup("rule_b", "pgtally_test", password=PASSWORDS.get("rule_b"))
        t0 = time.monotonic()
        c.send(query_message("SELECT pg_sleep(0.2)") + query_message("SELECT 7") +
               query_message("SELECT count(*), pg_sleep(5) FROM rule_t WHERE a = 3") +
               query_message("SELECT 8"))
        answers = []
        while len([t for t, _ in answers if t == b"Z"]) < 4:
            m = c.recv_message(timeout=10)
            assert m is not None, answers
            answers.append(m)
        elapsed = time.monotonic() - t0
    finally:
        c.close()
    assert elapsed < 4, elapsed
    kinds = [t for t, _ in answers if t in (b"D", b"E", b"Z")]
    assert kinds == [b"D", b"Z", b"D", b"Z", b"E", b"Z", b"D", b"Z"], answers
    err = [parse_fields(p) for t, p in answers if t == b"E"][0]
    assert err["C"] == SQLSTATE and "rule %d" % rid in err["M"], err
    recs = wait_ledger(proxy, 1, "rule_id = ?", (rid,))
    assert [x["status"] for x in recs] == ["refused"], recs


def test_user_scoped_rule_and_expiry(pgtally, users):
    proxy = pgtally()
    fp = fingerprint(proxy, "rule_a", "SELECT a FROM rule_t WHERE a > 10",
                     "SELECT a FROM rule_t WHERE a > $1")
    add_rule(proxy, "--fingerprint", fp, "--user", "rule_a", "--action", "block")
    r = psql(proxy, "rule_a", "SELECT a FROM rule_t WHERE a > 20")
    assert r.returncode != 0 and "is blocked by pgtally rule" in r.stderr, r
    r = psql(proxy, "rule_b", "SELECT a FROM rule_t WHERE a > 20")
    assert r.returncode == 0, r
    # a rule already expired blocks nothing; one a second ahead stops blocking
    fp2 = fingerprint(proxy, "rule_b", "SELECT a, a FROM rule_t", "SELECT a, a FROM rule_t")
    ctl(proxy, "rule", "add", "--fingerprint", fp2, "--action", "block", "--until", "-1m")
    wait_loaded(proxy)
    assert psql(proxy, "rule_b", "SELECT a, a FROM rule_t").returncode == 0
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    add_rule(proxy, "--fingerprint", fp2, "--action", "block", "--until", until)
    assert psql(proxy, "rule_b", "SELECT a, a FROM rule_t").returncode != 0, \
        (until, fp2, ctl(proxy, "rule", "list").stdout, time.time())
    wait_until(lambda: psql(proxy, "rule_b", "SELECT a, a FROM rule_t").returncode == 0,
               4 * SLOW, what="the rule expired")


def test_warn_and_log_rules_let_it_run(pgtally, users):
    proxy = pgtally()
    fp = fingerprint(proxy, "rule_a", "SELECT a + 1 FROM rule_t", "SELECT a + $1 FROM rule_t")
    add_rule(proxy, "--fingerprint", fp, "--action", "warn", "--message", "slow shape")
    r = psql(proxy, "rule_a", "SELECT a + 2 FROM rule_t")
    assert r.returncode == 0 and "WARNING:  slow shape" in r.stderr, r
    fp2 = fingerprint(proxy, "rule_b", "SELECT a * 3 FROM rule_t", "SELECT a * $1 FROM rule_t")
    rid = add_rule(proxy, "--fingerprint", fp2, "--action", "log")
    with connect(proxy, "rule_b") as c:
        notices = []
        c.add_notice_handler(notices.append)
        assert c.execute("SELECT a * 4 FROM rule_t").fetchall() == []
        assert c.execute("SELECT a * %s FROM rule_t", (5,)).fetchall() == []
        assert notices == []
    recs = ledger(proxy, "rule_id = ?", (rid,))
    assert len(recs) == 2 and all(x["status"] == "ok" for x in recs), recs


def test_bad_input(pgtally, users):
    proxy = pgtally(wait=False)
    for args, what in [(["--action", "block"], "--fingerprint is required"),
                       (["--fingerprint", "xyz", "--action", "block"], "bad --fingerprint"),
                       (["--fingerprint", "ab", "--action", "deny"], "bad --action"),
                       (["--fingerprint", "ab"], "--action is required"),
                       (["--fingerprint", "ab", "--action", "log", "--until", "soon"],
                        "bad --until")]:
        p = run_pgtallyctl(["-c", proxy.config_path, "rule", "add"] + args)
        assert p.returncode == 2 and what in p.stderr, (args, p.stderr)
    p = run_pgtallyctl(["-c", proxy.config_path, "rule", "rm", "999"])
    assert p.returncode == 1 and "no rule with id 999" in p.stderr, p.stderr


def pipelined_behind(port, ahead):
    """Message types the client gets for: the statements ahead (extended
    protocol, no Sync), a statement of the blocked shape, and a Sync."""
    c = RawConn("127.0.0.1", port)
    try:
        c.startup("rule_b", "pgtally_test")
        batch = b"".join(parse(sql) + bind() + execute() for sql in ahead)
        batch += parse("SELECT count(*), pg_sleep(0.01) FROM rule_t WHERE a = 4") + bind()
        c.send(batch + execute() + SYNC)
        got = []
        for then in (b"", query_message("SELECT 1")):
            if got[-1:] == [b"closed"] or not c.try_send(then):
                break
            while True:
                m = c.recv_message(timeout=10)
                got.append(m[0] if m else b"closed")
                if got[-1] in (b"Z", b"closed"):
                    break
        return got
    finally:
        c.close()


@pytest.mark.parametrize("ahead", [["SELECT 1/0"], ["SELECT 1", "COPY rule_t FROM STDIN"]],
                         ids=["failed", "copy"])
def test_pipelined_refusal_void_when_ahead_fails_or_copies(pgtally, pg, users, ahead):
    """Where the statement ahead fails (the server skips the blocked one) or
    begins a COPY (the blocked one's Bind ends it), the blocked statement
    goes as it came, and the client sees what it sees direct."""
    proxy = pgtally()
    fp = fingerprint(proxy, "rule_a", "SELECT count(*), pg_sleep(0.01) FROM rule_t WHERE a = 1",
                     "SELECT count(*), pg_sleep($1) FROM rule_t WHERE a = $2")
    add_rule(proxy, "--fingerprint", fp, "--action", "block")
    direct = pipelined_behind(pg.port, ahead)
    through = pipelined_behind(proxy.port, ahead)
    assert through == direct, (through, direct)
    assert b"E" in direct, direct


@pytest.mark.parametrize("wrapped", [
    "EXPLAIN ANALYZE SELECT count(*) FROM rule_t WHERE a = 5",
    "EXPLAIN (ANALYZE, COSTS OFF) SELECT count(*) FROM rule_t WHERE a = 5",
    "CREATE TEMP TABLE rule_copy AS SELECT count(*) FROM rule_t WHERE a = 5",
    "COPY (SELECT count(*) FROM rule_t WHERE a = 5) TO STDOUT",
    "EXPLAIN ANALYZE CREATE TEMP TABLE rule_copy AS SELECT count(*) FROM rule_t WHERE a = 5",
], ids=["explain_analyze", "explain_options", "create_table_as", "copy_to", "nested"])
def test_block_rule_sees_the_statement_inside(pgtally, users, wrapped):
    """A statement that runs another written inside it is blocked when the
    inner one is; a plain EXPLAIN, which runs nothing, is not."""
    proxy = pgtally()
    fp = fingerprint(proxy, "rule_a", "SELECT count(*) FROM rule_t WHERE a = 1",
                     "SELECT count(*) FROM rule_t WHERE a = $1")
    rid = add_rule(proxy, "--fingerprint", fp, "--action", "block")
    r = psql(proxy, "rule_b", wrapped)
    assert r.returncode != 0 and "rule %d" % rid in r.stderr, r
    r = psql(proxy, "rule_b", "EXPLAIN SELECT count(*) FROM rule_t WHERE a = 5")
    assert r.returncode == 0, r


def test_block_rule_stops_what_was_prepared_before_it(pgtally, users):
    """A statement prepared in SQL, or a cursor declared, before the rule
    existed: the EXECUTE, FETCH or MOVE that runs it is refused."""
    proxy = pgtally()
    fp = fingerprint(proxy, "rule_a", "SELECT count(*) FROM rule_t WHERE a = 1",
                     "SELECT count(*) FROM rule_t WHERE a = $1")
    with connect(proxy, "rule_b") as c:
        c.execute("PREPARE early AS SELECT count(*) FROM rule_t WHERE a = 6")
        c.execute("BEGIN")
        c.execute("DECLARE cur SCROLL CURSOR FOR SELECT count(*) FROM rule_t WHERE a = 7")
        rid = add_rule(proxy, "--fingerprint", fp, "--action", "block")
        for sql in ("FETCH 1 FROM cur", "MOVE cur"):
            c.execute("SAVEPOINT s")
            with pytest.raises(psycopg.Error) as ei:
                c.execute(sql)
            assert ei.value.sqlstate == SQLSTATE and "rule %d" % rid in str(ei.value), sql
            c.execute("ROLLBACK TO SAVEPOINT s")
        c.execute("COMMIT")
        with pytest.raises(psycopg.Error) as ei:
            c.execute("EXECUTE early")
        assert ei.value.sqlstate == SQLSTATE, ei.value
        # another prepared statement runs
        c.execute("PREPARE other AS SELECT 5")
        assert c.execute("EXECUTE other").fetchone() == (5,)
