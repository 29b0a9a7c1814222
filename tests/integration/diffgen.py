"""Machinery of the differential test (test_differential.py).

- Msg and its builders: frontend messages as raw protocol bytes, each with
  a readable description;
- Gen: a seeded generator of message sequences (lists of steps, each step
  one write);
- DirectRun: runs a sequence straight against PostgreSQL, reading the
  replies with a model of the server's message flow (which message each
  reply answers, when the server flushes), and derives from them the ledger
  records pgtally must make;
- ProxiedRun: runs the same steps through pgtally and reads as many replies
  per step as the server gave the direct run;
- first_difference, render: the comparison and readable messages.

The rule for the ledger records is written down in test_differential.py's
docstring; DirectRun applies it.
"""

import random
import re
import struct
import time

from pgwire import message, parse_fields, startup_packet


class ModelError(Exception):
    """The direct server answered in a way the model did not foresee: a
    fault of this test's model, not of pgtally."""


class RunError(Exception):
    """A run could not go on (timeout, connection closed)."""


def _cstr(s):
    return s.encode() + b"\0"


# ---------------------------------------------------------------------------
# frontend messages
# ---------------------------------------------------------------------------

class Msg:
    """One frontend message: kind (its type letter, 'd' 'c' 'f' for copy),
    the raw bytes, a readable description, and what the model needs."""

    def __init__(self, kind, data, desc, stmts=None, portal=None, what=None, name=None,
                 bad=False):
        self.kind, self.data, self.desc = kind, data, desc
        self.stmts = stmts      # Query: its statements, in order
        self.portal = portal    # Bind, Execute: the portal
        self.what = what        # Describe, Close: 'S' or 'P'
        self.name = name        # Describe, Close, Parse: the name
        self.bad = bad          # CopyData: a line the server rejects

    def __repr__(self):
        return self.desc


def query(*stmts):
    sql = "; ".join(stmts)
    return Msg("Q", message(b"Q", _cstr(sql)), "Query(%r)" % sql, stmts=list(stmts))


def parse(name, sql, types=()):
    body = _cstr(name) + _cstr(sql) + struct.pack("!H", len(types))
    body += b"".join(struct.pack("!I", t) for t in types)
    desc = "Parse(%r, %r%s)" % (name, sql, ", types=%s" % list(types) if types else "")
    return Msg("P", message(b"P", body), desc, name=name)


def bind(portal, stmt, params=(), binary_params=False, binary_results=False):
    body = _cstr(portal) + _cstr(stmt)
    if binary_params and params:
        body += struct.pack("!HH", 1, 1)
    else:
        body += struct.pack("!H", 0)
    body += struct.pack("!H", len(params))
    for v in params:
        if v is None:
            body += struct.pack("!i", -1)
            continue
        if binary_params:
            raw = struct.pack("!i", int(v))
        else:
            raw = str(v).encode()
        body += struct.pack("!i", len(raw)) + raw
    body += struct.pack("!HH", 1, 1) if binary_results else struct.pack("!H", 0)
    desc = "Bind(portal=%r, stmt=%r, params=%r%s%s)" % (
        portal, stmt, list(params), ", binary params" if binary_params and params else "",
        ", binary results" if binary_results else "")
    return Msg("B", message(b"B", body), desc, portal=portal)


def describe(what, name):
    return Msg("D", message(b"D", what.encode() + _cstr(name)),
               "Describe(%s, %r)" % (what, name), what=what, name=name)


def execute(portal, max_rows=0):
    return Msg("E", message(b"E", _cstr(portal) + struct.pack("!I", max_rows)),
               "Execute(%r%s)" % (portal, ", max_rows=%d" % max_rows if max_rows else ""),
               portal=portal)


def close(what, name):
    return Msg("C", message(b"C", what.encode() + _cstr(name)),
               "Close(%s, %r)" % (what, name), what=what, name=name)


def sync():
    return Msg("S", message(b"S"), "Sync")


def flush():
    return Msg("H", message(b"H"), "Flush")


def function_call(oid, *args):
    body = struct.pack("!IHH", oid, 0, len(args))
    for a in args:
        body += struct.pack("!I", len(a)) + a.encode()
    body += struct.pack("!H", 0)
    return Msg("F", message(b"F", body), "FunctionCall(oid=%d, args=%r)" % (oid, list(args)))


def copy_data(text, bad=False):
    return Msg("d", message(b"d", text.encode()), "CopyData(%r)" % text, bad=bad)


def copy_done():
    return Msg("c", message(b"c"), "CopyDone")


def copy_fail(reason):
    return Msg("f", message(b"f", _cstr(reason)), "CopyFail(%r)" % reason)


def describe_steps(steps, marks=()):
    """The steps as readable lines; marks: step indexes to flag."""
    lines = []
    for i, step in enumerate(steps):
        flag = " <%s>" % marks[i] if i in marks else ""
        lines.append("  step %d%s: %s" % (i, flag, ", ".join(m.desc for m in step)))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------

SETUP_SQL = [
    "DROP TABLE IF EXISTS diff_t",
    "CREATE TABLE diff_t (a int, b text)",
    "GRANT ALL ON diff_t TO PUBLIC",
    "ALTER TABLE diff_t SET (autovacuum_enabled = off)",
    "CREATE OR REPLACE FUNCTION diff_notice(int) RETURNS int LANGUAGE plpgsql AS "
    "$$BEGIN RAISE NOTICE 'diff_notice %', $1; RETURN $1; END$$",
]
# before each run: the same table, laid out the same way on disk (and no
# result depends on that layout: every multi-row read has an ORDER BY)
RESET_SQL = ["TRUNCATE diff_t",
             "INSERT INTO diff_t SELECT g, 'row ' || g FROM generate_series(1, 5) g"]

READS = [
    "SELECT 1",
    "SELECT 'x' AS a, 2 AS b",
    "SELECT g FROM generate_series(1, 6) g",
    "SELECT a, b FROM diff_t ORDER BY a, b",
    "SELECT count(*) FROM diff_t",
    "SELECT * FROM diff_t WHERE a = 2 ORDER BY b",
    "SELECT 1 WHERE false",
    "VALUES (1, 'one'), (2, 'two')",
    "SELECT diff_notice(7)",
    "SELECT a FROM diff_t WHERE a < 3 ORDER BY a FOR UPDATE",
]
FAILS = [
    "SELECT 1/0",
    "SELECT 10 / (a - 3) FROM diff_t ORDER BY a, b",
    "SELEC 1",
    "SELECT nope FROM diff_t",
    "SELECT * FROM diff_missing",
    "INSERT INTO diff_t VALUES ('x')",
]
WRITES = [
    "INSERT INTO diff_t VALUES (10, 'ten')",
    "UPDATE diff_t SET b = b || '!' WHERE a = 2",
    "DELETE FROM diff_t WHERE a = 5",
    "INSERT INTO diff_t SELECT g, 'g' FROM generate_series(20, 22) g",
]
TXN = ["BEGIN", "COMMIT", "ROLLBACK", "END"]
CURSOR_SQL = ["DECLARE c1 CURSOR FOR SELECT g FROM generate_series(1, 7) g",
              "FETCH 2 FROM c1", "FETCH ALL FROM c1", "MOVE 1 IN c1", "CLOSE c1",
              "FETCH 1 FROM c1"]
PREPARE_SQL = ["PREPARE sp1 AS SELECT a, b FROM diff_t WHERE a = $1 ORDER BY b",
               "PREPARE sp2 AS SELECT 'prepared' AS p",
               "EXECUTE sp1(2)", "EXECUTE sp2", "DEALLOCATE sp1", "DEALLOCATE ALL",
               "PREPARE sp2 AS SELEC"]
# for Parse: (sql, parameter types, parameter kind)
EXT_SQL = [
    ("SELECT 1", (), None),
    ("SELECT g FROM generate_series(1, 6) g", (), None),
    ("SELECT a, b FROM diff_t ORDER BY a, b", (), None),
    ("SELECT $1::int + 1", (23,), "int"),
    ("SELECT $1::int + 1", (), "int"),
    ("SELECT a, b FROM diff_t WHERE a = $1 ORDER BY b", (23,), "int"),
    ("SELECT g FROM generate_series(1, $1) g", (23,), "int"),
    ("INSERT INTO diff_t VALUES ($1, 'ext')", (23,), "int"),
    ("SELECT 10 / $1", (23,), "int"),
    ("SELECT diff_notice($1)", (23,), "int"),
    ("UPDATE diff_t SET b = 'u' WHERE a = 1", (), None),
    ("SELECT 1/0", (), None),
    ("SELEC 2", (), None),
    ("SELECT nope FROM diff_t", (), None),
    ("", (), None),
    ("BEGIN", (), None),
    ("COMMIT", (), None),
    ("SET application_name = '{app}.ext'", (), None),
]
STMT_NAMES = ["", "", "s1", "s2"]
PORTAL_NAMES = ["", "", "", "p1", "p2"]
FUNCTIONS = [(177, ("1", "2")), (177, ("2147483647", "1")), (1397, ("-5",)),
             (1397, ()), (4294967000, ("1",))]


class Gen:
    """Sequences for one seed and index: Gen(seed, index, app).sequence()."""

    def __init__(self, seed, index, app):
        self.r = random.Random("%s:%s" % (seed, index))
        self.app = app
        self.stmts = {}       # statement name -> parameter kind, as believed
        self.portals = set()  # portals believed bound

    def sequence(self):
        steps = [[]]
        actions = [(self.a_query, 14), (self.a_multi, 5), (self.a_txn, 5),
                   (self.a_prepare, 4), (self.a_cursor, 4), (self.a_copy_in, 4),
                   (self.a_copy_out, 2), (self.a_ext_chain, 16), (self.a_ext_random, 10),
                   (self.a_function, 3), (self.a_junk, 3), (self.a_sync, 2),
                   (self.a_app, 2)]
        funcs = [a for a, _ in actions]
        weights = [w for _, w in actions]
        n = self.r.randint(1, 7)
        for i in range(n):
            self.r.choices(funcs, weights)[0](steps[-1])
            if i < n - 1 and self.r.random() < 0.5:
                steps.append([])
        return [s for s in steps if s]

    # -- statements ----------------------------------------------------
    def statement(self):
        kind = self.r.choices(["read", "fail", "write", "empty", "app"], [10, 3, 3, 1, 1])[0]
        if kind == "read":
            return self.r.choice(READS)
        if kind == "fail":
            return self.r.choice(FAILS)
        if kind == "write":
            return self.r.choice(WRITES)
        if kind == "empty":
            return ""
        return self.r.choice(["SET application_name = '%s.b'" % self.app,
                              "RESET application_name", "SHOW application_name"])

    def param(self, kind):
        if kind == "int":
            return self.r.choice(["1", "2", "3", "3", "0", "-1", "x"])
        return "t"

    # -- actions -------------------------------------------------------
    def a_query(self, step):
        step.append(query(self.statement()))

    def a_multi(self, step):
        n = self.r.randint(2, 3)
        stmts = [self.statement() for _ in range(n)]
        if self.r.random() < 0.3:
            stmts[self.r.randrange(n)] = self.r.choice(TXN)
        step.append(query(*[s for s in stmts if s] or ["SELECT 1"]))

    def a_txn(self, step):
        if self.r.random() < 0.3:
            step.append(query(self.r.choice(TXN), self.statement() or "SELECT 2"))
        else:
            step.append(query(self.r.choice(TXN)))

    def a_prepare(self, step):
        sql = self.r.choice(PREPARE_SQL)
        step.append(query(sql))

    def a_cursor(self, step):
        x = self.r.random()
        if x < 0.35:
            step.append(query("BEGIN", CURSOR_SQL[0]))
        elif x < 0.8:
            step.append(query(self.r.choice(CURSOR_SQL[1:])))
        else:
            # a protocol Execute of the SQL cursor
            step.append(execute("c1", self.r.choice([0, 2])))
            step.append(sync())

    def a_copy_in(self, step):
        if self.r.random() < 0.25:
            step.append(query("COPY diff_t FROM STDIN", "SELECT count(*) FROM diff_t"))
        else:
            step.append(query("COPY diff_t FROM STDIN"))
        for _ in range(self.r.randint(0, 3)):
            x = self.r.random()
            if x < 0.1:
                step.append(copy_data("zz\tbad\n", bad=True))
            elif x < 0.15:
                step.append(sync())   # ignored by the server during COPY
            elif x < 0.2:
                step.append(flush())  # ignored as well
            else:
                a = self.r.randint(30, 39)
                step.append(copy_data("%d\tcopied %d\n" % (a, a)))
        if self.r.random() < 0.8:
            step.append(copy_done())
        else:
            step.append(copy_fail("client gave up"))

    def a_copy_out(self, step):
        step.append(query(self.r.choice([
            "COPY (SELECT * FROM diff_t ORDER BY a, b) TO STDOUT",
            "COPY (SELECT g, g * 2 FROM generate_series(1, 3) g) TO STDOUT"])))

    def _parse(self, step):
        name = self.r.choice(STMT_NAMES)
        sql, types, pkind = self.r.choice(EXT_SQL)
        step.append(parse(name, sql.replace("{app}", self.app), types))
        self.stmts[name] = pkind
        return name

    def _bind(self, step, stmt=None):
        if stmt is None:
            pool = list(self.stmts) + ["sp1", "sp2", "nostmt"]
            stmt = self.r.choice(pool)
        portal = self.r.choice(PORTAL_NAMES)
        pkind = self.stmts.get(stmt, "int" if stmt == "sp1" else None)
        params = [self.param(pkind)] if pkind else []
        if self.r.random() < 0.07:
            params = [] if params else ["1"]  # the wrong number
        binary = (pkind == "int" and len(params) == 1 and self.r.random() < 0.15 and
                  params[0].lstrip("-").isdigit())
        step.append(bind(portal, stmt, params, binary_params=binary,
                         binary_results=self.r.random() < 0.1))
        self.portals.add(portal)
        return portal

    def _end_batch(self, step, p_sync=0.7, p_flush=0.1):
        x = self.r.random()
        if x < p_sync:
            step.append(sync())
        elif x < p_sync + p_flush:
            step.append(flush())

    def a_ext_chain(self, step):
        stmt = self._parse(step)
        if self.r.random() < 0.2:
            step.append(describe("S", stmt))
        portal = self._bind(step, stmt)
        if self.r.random() < 0.3:
            step.append(describe("P", portal))
        rows = self.r.choice([0, 0, 0, 1, 2, 4])
        step.append(execute(portal, rows))
        if rows and self.r.random() < 0.6:
            step.append(execute(portal, self.r.choice([0, 2])))
        if self.r.random() < 0.2:
            step.append(close(self.r.choice("SP"), self.r.choice([stmt, portal])))
        self._end_batch(step)

    def a_ext_random(self, step):
        for _ in range(self.r.randint(1, 6)):
            x = self.r.randrange(7)
            if x == 0:
                self._parse(step)
            elif x == 1:
                self._bind(step)
            elif x == 2:
                what = self.r.choice("SP")
                pool = list(self.stmts) if what == "S" else sorted(self.portals)
                step.append(describe(what, self.r.choice(pool + ["nope"])))
            elif x == 3:
                pool = sorted(self.portals) + ["nope", "c1"]
                step.append(execute(self.r.choice(pool), self.r.choice([0, 0, 1, 3])))
            elif x == 4:
                what = self.r.choice("SP")
                pool = list(self.stmts) if what == "S" else sorted(self.portals)
                step.append(close(what, self.r.choice(pool + ["nope"])))
            elif x == 5:
                step.append(flush())
            else:
                step.append(sync())
        self._end_batch(step, 0.6, 0.1)

    def a_function(self, step):
        oid, args = self.r.choice(FUNCTIONS)
        step.append(function_call(oid, *args))

    def a_junk(self, step):
        step.append(self.r.choice([
            copy_data("stray\n"), copy_done(), copy_fail("nothing to fail"),
            describe("P", "nope"), describe("S", "nope"), close("P", "nope"),
            execute("nope"), bind("", "nostmt")]))
        if self.r.random() < 0.5:
            step.append(sync())

    def a_sync(self, step):
        step.append(sync())

    def a_app(self, step):
        step.append(query(self.r.choice(["SET application_name = '%s.b'" % self.app,
                                         "RESET application_name"])))


def harness_end(steps):
    """The Sync the harness appends to a sequence that does not end with one."""
    last = steps[-1][-1] if steps and steps[-1] else None
    return [[sync()]] if last is None or last.kind != "S" else []


IDLE_CHECK = "SELECT length('pgtdiff idle check') AS idle_check"


# ---------------------------------------------------------------------------
# connections
# ---------------------------------------------------------------------------

class Wire:
    """A raw socket with message framing (like pgwire.RawConn, plus a poll)."""

    def __init__(self, host, port, timeout):
        from pgwire import RawConn
        self.c = RawConn(host, port, timeout)

    def startup(self, user, database, app, timeout):
        """Returns the messages up to ReadyForQuery."""
        self.c.send(startup_packet({"user": user, "database": database,
                                    "application_name": app}))
        out = []
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv(deadline - time.monotonic())
            if m is None:
                raise RunError("connection closed during startup: %s" % render_list(out))
            out.append(m)
            if m[0] == b"E":
                raise RunError("login failed: %s" % render(m))
            if m[0] == b"Z":
                return out

    def send(self, data):
        try:
            self.c.send(data)
        except OSError as e:
            raise RunError("send failed: %s" % e)

    def recv(self, timeout):
        """A message, None at EOF; RunError on timeout."""
        try:
            return self.c.recv_message(max(timeout, 0.001))
        except TimeoutError:
            raise RunError("timed out after %.1f s" % timeout)
        except OSError as e:
            raise RunError("receive failed: %s" % e)

    def poll(self, timeout):
        """A message if one arrives within timeout, else None (also at EOF)."""
        try:
            return self.c.recv_message(max(timeout, 0.001))
        except (TimeoutError, OSError):
            return None

    def close(self):
        try:
            self.c.try_send(message(b"X"))
        finally:
            self.c.close()


# ---------------------------------------------------------------------------
# the direct run and its model of the server
# ---------------------------------------------------------------------------

def tag_rows(tag):
    nums = re.findall(rb"\d+", tag)
    return int(nums[-1]) if nums else 0


def sqlstate_of(payload):
    return parse_fields(payload).get("C")


class Record:
    def __init__(self, protocol, status, sqlstate, rows, owner, note="", explained=None):
        self.protocol, self.status, self.sqlstate, self.rows = protocol, status, sqlstate, rows
        self.owner, self.note, self.explained = owner, note, explained

    def key(self):
        return (self.protocol, self.status, self.sqlstate, self.rows)


class _QueryCtx:
    def __init__(self, msg):
        self.msg, self.i, self.rows, self.ran = msg, 0, 0, False


class DirectRun:
    """Runs steps against the server, reading replies as the model says the
    server sends them. After run(): replies [(type, payload)], owner (the
    index in msgs of the message each reply answers), counts (replies read
    after each step), records (the ledger records expected), early (for the
    last generated step's unflushed messages, how many replies the server
    must have sent before the harness's Sync; None when there were none)."""

    def __init__(self, wire, timeout):
        self.w, self.timeout = wire, timeout
        self.msgs, self.replies, self.owner, self.counts, self.records = [], [], [], [], []
        self.next = 0           # first message whose replies are not read yet
        self.skipping = False   # the server skips to the next Sync
        self.err = None         # (sqlstate, msg index) of a skip not yet owned by an Execute
        self.copy = None        # the Query whose COPY FROM STDIN is running
        self.portals = set()
        self.cursors = set()
        self.batch_binds = set()
        self.txn = "I"
        self.tail = None        # (first, end) message indexes left unflushed by the last step
        self.events = set()     # what happened on the server, for the failure report
        self.ever_bound = set()  # portals named by a Bind message so far

    # -- driving -------------------------------------------------------
    def step(self, msgs):
        self.msgs.extend(msgs)
        self.w.send(b"".join(m.data for m in msgs))
        before = len(self.replies)
        while self.next < len(self.msgs) and self._readable(self.next):
            self._process(self.next)
            self.next += 1
        self.counts.append(len(self.replies) - before)

    def run(self, gen_steps):
        """The generated steps, the harness's Sync, a ROLLBACK if a block is
        open, and the idle check. Returns all steps sent."""
        steps = list(gen_steps)
        for s in gen_steps:
            self.step(s)
        if self.next < len(self.msgs):
            self.tail = (self.next, len(self.msgs))
        for s in harness_end(gen_steps):
            steps.append(s)
            self.step(s)
        if self.next != len(self.msgs) or self.copy is not None:
            raise ModelError("messages left unanswered after the final Sync")
        if self.txn != "I":
            steps.append([query("ROLLBACK")])
            self.step(steps[-1])
        steps.append([query(IDLE_CHECK)])
        self.step(steps[-1])
        self.records[-1].explained = True
        return steps

    def early_replies(self):
        """How many replies to the unflushed tail the server sent at once
        (those up to its last ErrorResponse or NoticeResponse, which the
        server flushes as it sends them)."""
        if self.tail is None:
            return None
        first, end = self.tail
        owned = [t for (t, _), o in zip(self.replies, self.owner) if first <= o < end]
        last = max([i for i, t in enumerate(owned) if t in (b"E", b"N")], default=-1)
        return last + 1

    # -- the model -----------------------------------------------------
    def _readable(self, j):
        """Are the replies to message j sure to be flushed by now?"""
        rest = self.msgs[j:]
        if self.copy is not None:
            return any(m.kind in "cf" or (m.kind == "d" and m.bad) or m.kind not in "dSH"
                       for m in rest)
        if self.skipping:
            return True
        return any(m.kind in "SQFH" for m in rest)

    def _read(self, j):
        m = self.w.recv(self.timeout)
        if m is None:
            raise RunError("the server closed the connection")
        self.replies.append(m)
        self.owner.append(j)
        return m

    def _read_main(self, j):
        """The next reply that is not a notice or ParameterStatus."""
        while True:
            t, p = self._read(j)
            if t not in (b"N", b"S", b"A"):
                return t, p

    def _unexpected(self, j, t, p, wanted):
        raise ModelError("reply %s to message %d %s; expected %s"
                         % (render((t, p)), j, self.msgs[j].desc, wanted))

    def _record(self, protocol, t, p, rows, j, note=""):
        if t == b"E":
            st = sqlstate_of(p)
            status = "cancelled" if st == "57014" else "error"
        else:
            st, status = None, "ok"
        self.records.append(Record(protocol, status, st, rows, j, note))

    def _ext_error(self, j, p, own=False):
        self.events.add("error to %s" % self.msgs[j].kind)
        self.skipping = True
        self.err = None if own else (sqlstate_of(p), j)

    def _clear_portals(self):
        self.portals.clear()
        self.cursors.clear()

    def _process(self, j):
        m = self.msgs[j]
        k = m.kind
        if self.copy is not None:
            if k in "SH":
                self.events.add("%s ignored during COPY" % m.desc)
            if k == "d" and not m.bad or k in "SH":
                return  # data, or a Sync/Flush the server ignores during COPY
            ctx, self.copy = self.copy, None
            self._query_continue(ctx, j)
            return
        if self.skipping:
            if k in "QF":
                self.events.add("%s skipped after an extended-protocol error"
                                % ("Query" if k == "Q" else "FunctionCall"))
            if k == "B":
                self.batch_binds.add(m.portal)
                self.ever_bound.add(m.portal)
            elif k == "E" and self.err is not None and (
                    m.portal in self.portals or m.portal in self.batch_binds):
                st, src = self.err
                self.records.append(Record("extended", "error", st, 0, j,
                                           "skipped; takes the error of message %d" % src))
                self.err = None
            elif k == "S":
                self.skipping, self.err = False, None
                self._sync(j)
            return
        if k == "Q":
            self._query_continue(_QueryCtx(m), j)
        elif k == "F":
            while True:
                t, p = self._read_main(j)
                if t in (b"V", b"E"):
                    self._record("function", t, p, 0, j)
                elif t == b"Z":
                    self._ready(p)
                    return
                else:
                    self._unexpected(j, t, p, "V, E or Z")
        elif k == "S":
            self._sync(j)
        elif k == "H" or k in "dcf":
            return  # no reply: Flush, or copy messages outside COPY (ignored)
        elif k == "P":
            t, p = self._read_main(j)
            if t == b"E":
                self._ext_error(j, p)
            elif t != b"1":
                self._unexpected(j, t, p, "1 or E")
        elif k == "B":
            self.batch_binds.add(m.portal)
            self.ever_bound.add(m.portal)
            t, p = self._read_main(j)
            if t == b"2":
                self.portals.add(m.portal)
            elif t == b"E":
                self._ext_error(j, p)
            else:
                self._unexpected(j, t, p, "2 or E")
        elif k == "D":
            t, p = self._read_main(j)
            if t == b"E":
                self._ext_error(j, p)
                return
            if m.what == "S":
                if t != b"t":
                    self._unexpected(j, t, p, "t or E")
                t, p = self._read_main(j)
            if t not in (b"T", b"n"):
                self._unexpected(j, t, p, "T or n")
        elif k == "C":
            t, p = self._read_main(j)
            if t == b"3":
                if m.what == "P":
                    self.portals.discard(m.name)
                    self.cursors.discard(m.name)
                    self.batch_binds.discard(m.name)  # closed: no longer the batch's
            elif t == b"E":
                self._ext_error(j, p)
            else:
                self._unexpected(j, t, p, "3 or E")
        elif k == "E":
            if m.portal in self.cursors:
                self.events.add("protocol Execute of an SQL cursor")
            elif m.portal not in self.ever_bound:
                self.events.add("Execute of a portal no Bind named")
            rows = 0
            while True:
                t, p = self._read_main(j)
                if t == b"D":
                    rows += 1
                elif t in (b"C", b"s", b"I"):
                    n = tag_rows(p) if t == b"C" else 0
                    self._record("extended", t, p, max(rows, n), j)
                    if t == b"C" and p.rstrip(b"\0") in (b"COMMIT", b"ROLLBACK"):
                        self._clear_portals()
                    return
                elif t == b"E":
                    if sqlstate_of(p) != "34000":
                        self._record("extended", t, p, rows, j)
                    else:
                        self.events.add("Execute of a portal that does not exist")
                    self._ext_error(j, p, own=True)
                    return
                else:
                    self._unexpected(j, t, p, "D, C, s, I or E")
        else:
            raise ModelError("no model for message %s" % m.desc)

    def _sync(self, j):
        t, p = self._read_main(j)
        if t != b"Z":
            self._unexpected(j, t, p, "Z")
        self._ready(p)

    def _ready(self, p):
        """ReadyForQuery, to a Sync, a Query or a FunctionCall: a Bind
        before it failed or was skipped only behind a Sync (the error skips
        any Query), so the Binds of the batch are those after it."""
        self.txn = p[:1].decode()
        self.batch_binds.clear()
        if self.txn == "I":
            self._clear_portals()

    def _query_continue(self, ctx, j):
        """Replies to a Query (or the rest of it, after its COPY data)."""
        while True:
            t, p = self._read(j)
            if t in (b"T", b"D", b"C", b"G", b"H") and not ctx.ran:
                ctx.ran = True
                self.portals.discard("")  # the Query's own unnamed portal replaced it
                self.batch_binds.discard("")  # so no Bind of this batch names it now
            if t == b"D":
                ctx.rows += 1
            elif t in (b"C", b"I", b"E"):
                n = tag_rows(p) if t == b"C" else 0
                self._record("simple", t, p, max(ctx.rows, n), j)
                if t == b"C":
                    self._tag_effects(p.rstrip(b"\0").decode(),
                                      ctx.msg.stmts[ctx.i] if ctx.i < len(ctx.msg.stmts) else "")
                ctx.i += 1
                ctx.rows = 0
            elif t == b"G":
                self.copy = ctx
                return
            elif t == b"Z":
                self._ready(p)
                return
            elif t not in (b"T", b"H", b"N", b"S", b"A", b"d", b"c"):
                self._unexpected(j, t, p, "a Query's replies")

    def _tag_effects(self, tag, stmt):
        if tag == "DECLARE CURSOR":
            m = re.match(r"\s*DECLARE\s+(\w+)", stmt, re.I)
            if m:
                self.portals.add(m.group(1))
                self.cursors.add(m.group(1))
        elif tag.startswith("CLOSE CURSOR"):
            m = re.match(r"\s*CLOSE\s+(\w+)", stmt, re.I)
            names = self.cursors if not m or m.group(1).upper() == "ALL" else {m.group(1)}
            for n in list(names):
                self.portals.discard(n)
                self.cursors.discard(n)
        elif tag in ("COMMIT", "ROLLBACK"):
            self._clear_portals()


# ---------------------------------------------------------------------------
# the proxied run
# ---------------------------------------------------------------------------

def is_pgtally_notice(m):
    """A NoticeResponse pgtally adds itself (estimates, budget warnings)."""
    if m[0] != b"N":
        return False
    return parse_fields(m[1]).get("M", "").startswith("pgtally")


class ProxiedRun:
    """The same steps through pgtally, reading after each step as many
    replies as the server gave the direct run (pgtally's own notices
    aside). After run(): replies, added (pgtally's notices), early (replies
    that came for the last generated step's unflushed tail before the
    harness's Sync), error (why the run stopped early, or None)."""

    def __init__(self, wire, timeout, window):
        self.w, self.timeout, self.window = wire, timeout, window
        self.replies, self.added, self.early, self.error = [], [], None, None
        self.step_of = []  # step index during whose reading each reply came

    def _take(self, m, k):
        if is_pgtally_notice(m):
            self.added.append((len(self.replies), m))
            return False
        self.replies.append(m)
        self.step_of.append(k)
        return True

    def run(self, steps, direct, n_gen):
        target = 0
        try:
            for k, step in enumerate(steps):
                self.w.send(b"".join(m.data for m in step))
                target += direct.counts[k]
                deadline = time.monotonic() + self.timeout
                while len(self.replies) < target:
                    m = self.w.recv(deadline - time.monotonic())
                    if m is None:
                        raise RunError("pgtally closed the connection")
                    self._take(m, k)
                if k == n_gen - 1 and direct.tail is not None:
                    # replies to the unflushed tail that come before the Sync
                    before = len(self.replies)
                    while True:
                        m = self.w.poll(self.window)
                        if m is None:
                            break
                        self._take(m, k)
                    self.early = len(self.replies) - before
            while True:  # anything more is a difference too
                m = self.w.poll(0.02)
                if m is None:
                    break
                self._take(m, len(steps))
        except RunError as e:
            self.error = "%s (after %d replies, %d expected)" % (
                e, len(self.replies), sum(direct.counts))


# ---------------------------------------------------------------------------
# comparing and rendering
# ---------------------------------------------------------------------------

def normal(m):
    """What is compared of a message: BackendKeyData differs by nature."""
    t, p = m
    return (t, b"") if t == b"K" else (t, p)


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if normal(x) != normal(y):
            return i
    if len(a) != len(b):
        return min(len(a), len(b))
    return None


def render(m):
    t, p = m
    try:
        return _render(t, p)
    except Exception:  # a malformed body: show it raw
        return "%s %r" % (t.decode("latin1"), p)


def _render(t, p):
    c = t.decode("latin1")
    if t in (b"E", b"N"):
        f = parse_fields(p)
        keys = [k for k in "SCMDHPpWqsc" if k in f and k not in "V"]
        name = "ErrorResponse" if t == b"E" else "NoticeResponse"
        return "%s(%s)" % (name, ", ".join("%s=%r" % (k, f[k]) for k in keys))
    if t == b"C":
        return "CommandComplete(%r)" % p.rstrip(b"\0").decode()
    if t == b"D":
        (n,) = struct.unpack("!H", p[:2])
        pos, vals = 2, []
        for _ in range(n):
            (ln,) = struct.unpack("!i", p[pos:pos + 4])
            pos += 4
            if ln < 0:
                vals.append(None)
            else:
                vals.append(p[pos:pos + ln].decode("utf-8", "replace"))
                pos += ln
        return "DataRow(%r)" % vals
    if t == b"T":
        (n,) = struct.unpack("!H", p[:2])
        pos, cols = 2, []
        for _ in range(n):
            end = p.index(b"\0", pos)
            name = p[pos:end].decode()
            tbl, att, typ, size, mod, fmt = struct.unpack("!IhIhiH", p[end + 1:end + 19])
            pos = end + 19
            cols.append("%s:%d%s%s" % (name, typ, "@%d.%d" % (tbl, att) if tbl else "",
                                       " bin" if fmt else ""))
        return "RowDescription(%s)" % ", ".join(cols)
    if t == b"t":
        (n,) = struct.unpack("!H", p[:2])
        return "ParameterDescription(%s)" % list(struct.unpack("!%dI" % n, p[2:2 + 4 * n]))
    if t == b"S":
        k, v, _ = p.split(b"\0", 2)
        return "ParameterStatus(%s=%r)" % (k.decode(), v.decode())
    if t == b"Z":
        return "ReadyForQuery(%s)" % p.decode()
    if t == b"K":
        return "BackendKeyData"
    if t == b"R":
        return "Authentication(%d)" % struct.unpack("!I", p[:4])
    if t == b"V":
        (ln,) = struct.unpack("!i", p[:4])
        return "FunctionCallResponse(%r)" % (None if ln < 0 else p[4:4 + ln].decode())
    if t in (b"G", b"H"):
        return "%s(format %d, %d columns)" % (
            "CopyInResponse" if t == b"G" else "CopyOutResponse", p[0],
            struct.unpack("!H", p[1:3])[0])
    if t == b"d":
        return "CopyData(%r)" % p.decode("utf-8", "replace")
    names = {b"1": "ParseComplete", b"2": "BindComplete", b"3": "CloseComplete",
             b"n": "NoData", b"s": "PortalSuspended", b"I": "EmptyQueryResponse",
             b"c": "CopyDone", b"A": "NotificationResponse"}
    return names.get(t, c) + ("" if not p or t in names else " %r" % p)


def render_list(msgs):
    return ", ".join(render(m) for m in msgs) or "(nothing)"
