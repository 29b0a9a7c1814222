"""psycopg 3 features through pgtally."""

import threading
import time

import psycopg
import pytest
from psycopg import errors

from helpers import assert_healthy, wait_until
from pgwire import describe, parse_fields, query_message


@pytest.fixture
def proxy(pgtally):
    return pgtally()


def test_server_side_cursor(proxy):
    with proxy.connect(autocommit=False) as c:
        with c.cursor(name="itest_named") as cur:
            cur.itersize = 500
            cur.execute("SELECT g, md5(g::text) FROM generate_series(1, 10000) g")
            seen, batches = 0, 0
            while True:
                rows = cur.fetchmany(1000)
                if not rows:
                    break
                batches += 1
                for g, h in rows:
                    seen += 1
                    assert g == seen
                    assert len(h) == 32
            assert seen == 10000 and batches == 10
        c.commit()
        # the cursor lived on the server: it is gone after commit
        assert c.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)


def test_executemany(proxy):
    with proxy.connect() as c:
        c.execute("CREATE TEMP TABLE em (id int PRIMARY KEY, t text)")
        with c.cursor() as cur:
            cur.executemany("INSERT INTO em VALUES (%s, %s)",
                            [(i, "row %d" % i) for i in range(2000)])
        assert c.execute("SELECT count(*), sum(id) FROM em").fetchone() == (2000, 1999000)
        # returning=True: one result set per parameter set
        with c.cursor() as cur:
            cur.executemany("UPDATE em SET t = t || '!' WHERE id = %s RETURNING id, t",
                            [(i,) for i in range(5)], returning=True)
            got = []
            while True:
                got.append(cur.fetchone())
                if not cur.nextset():
                    break
            assert got == [(i, "row %d!" % i) for i in range(5)]


def test_copy_in_and_out(proxy):
    rows = [(i, "text %d \t with tab" % i, None if i % 7 == 0 else i * 1.5)
            for i in range(50000)]
    with proxy.connect() as c:
        c.execute("CREATE TEMP TABLE cp (id int, t text, f float8)")
        with c.cursor() as cur:
            with cur.copy("COPY cp FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
            assert cur.rowcount == 50000
            got = []
            with cur.copy("COPY cp TO STDOUT") as copy:
                copy.set_types(["int4", "text", "float8"])
                for r in copy.rows():
                    got.append(r)
        assert sorted(got) == rows
        # binary COPY too
        with c.cursor() as cur:
            with cur.copy("COPY (SELECT id, t FROM cp ORDER BY id LIMIT 3) TO STDOUT"
                          " (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "text"])
                assert list(copy.rows()) == [(i, "text %d \t with tab" % i) for i in range(3)]
        # an error raised by the client inside COPY FROM aborts it cleanly
        # (psycopg sends CopyFail; the server answers with 57014)
        with pytest.raises((ZeroDivisionError, errors.QueryCanceled)) as ei:
            with c.cursor() as cur:
                with cur.copy("COPY cp FROM STDIN") as copy:
                    copy.write_row((1, "x", 1.0))
                    1 / 0
        assert "ZeroDivisionError" in str(ei.value) or ei.type is ZeroDivisionError
        assert c.execute("SELECT count(*) FROM cp").fetchone() == (50000,)


def test_pipeline_mode(proxy):
    with proxy.connect() as c:
        c.execute("CREATE TEMP TABLE pl (id int)")
        with c.pipeline():
            curs = [c.execute("INSERT INTO pl VALUES (%s) RETURNING id", (i,))
                    for i in range(300)]
            last = c.execute("SELECT count(*) FROM pl")
        assert [cur.fetchone()[0] for cur in curs] == list(range(300))
        assert last.fetchone() == (300,)
        # an error inside a pipeline surfaces and the connection stays usable
        with pytest.raises(errors.DivisionByZero):
            with c.pipeline():
                c.execute("SELECT 1")
                c.execute("SELECT 1/0")
                c.execute("SELECT 2")
        assert_healthy(c, "the connection after a failed pipeline")


def test_listen_notify_sender_pid(proxy):
    with proxy.connect() as listener, proxy.connect() as sender:
        got = []
        listener.add_notify_handler(got.append)
        listener.execute("LISTEN itest_chan")
        sender_pid = sender.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert sender_pid == sender.info.backend_pid, \
            "BackendKeyData pid %d is not the server's pid %d" % (sender.info.backend_pid,
                                                                   sender_pid)
        sender.execute("NOTIFY itest_chan, 'payload 1'")
        sender.execute("SELECT pg_notify('itest_chan', 'payload 2')")

        def received():
            listener.execute("SELECT 1")  # lets psycopg read pending notifications
            return len(got) >= 2
        wait_until(received, 5, interval=0.1, what="two notifications")
        assert [(n.channel, n.payload, n.pid) for n in got] == [
            ("itest_chan", "payload 1", sender.info.backend_pid),
            ("itest_chan", "payload 2", sender.info.backend_pid)]


def test_notifies_generator(proxy):
    """Notifications arriving while the client is idle, read with notifies()."""
    with proxy.connect() as listener, proxy.connect() as sender:
        listener.execute("LISTEN itest_gen")
        t = threading.Timer(0.3, lambda: sender.execute("NOTIFY itest_gen, 'idle'"))
        t.start()
        try:
            for n in listener.notifies():
                assert (n.channel, n.payload, n.pid) == ("itest_gen", "idle",
                                                         sender.info.backend_pid)
                break
        finally:
            t.join()


def test_terminate_own_backend(proxy):
    healthy = proxy.connect()
    c = proxy.connect()
    with pytest.raises(psycopg.OperationalError) as ei:
        c.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    e = ei.value
    # psycopg 3.1 reports the server's FATAL without a SQLSTATE when the
    # connection closes right after it; the server's text must be there.
    assert (isinstance(e, errors.AdminShutdown) or e.sqlstate == "57P01"
            or "terminating connection due to administrator command" in str(e)), \
        "%s (sqlstate %s): %s" % (type(e).__name__, e.sqlstate, e)
    assert c.closed or c.broken
    c.close()
    with proxy.connect() as again:
        assert_healthy(again, "a new connection")
    assert_healthy(healthy)
    healthy.close()


def test_terminate_own_backend_raw_sqlstate(proxy):
    """The server's FATAL 57P01 reaches the client before the close."""
    healthy = proxy.connect()
    conn = proxy.raw()
    conn.startup("trust_user", "pgtally_test")
    conn.send(query_message("SELECT pg_terminate_backend(pg_backend_pid())"))
    msgs = conn.read_until_closed(5)
    errs = [parse_fields(p) for t, p in msgs if t == b"E"]
    assert errs and errs[0].get("C") == "57P01" and errs[0].get("S") == "FATAL", describe(msgs)
    assert_healthy(healthy)
    healthy.close()


def test_statement_timeout_from_options(proxy):
    with proxy.connect(options="-c statement_timeout=100") as c:
        assert c.execute("SHOW statement_timeout").fetchone() == ("100ms",)
        start = time.monotonic()
        with pytest.raises(errors.QueryCanceled) as ei:
            c.execute("SELECT pg_sleep(1)")
        assert ei.value.sqlstate == "57014"
        assert time.monotonic() - start < 0.9
        assert_healthy(c, "the connection after the timeout")


def test_cancel_from_another_thread(proxy):
    healthy = proxy.connect()
    with proxy.connect() as c:
        timer = threading.Timer(0.5, c.cancel)
        start = time.monotonic()
        timer.start()
        try:
            with pytest.raises(errors.QueryCanceled) as ei:
                c.execute("SELECT pg_sleep(30)")
        finally:
            timer.join()
        elapsed = time.monotonic() - start
        assert ei.value.sqlstate == "57014"
        assert elapsed < 3, "cancel took %.1f s" % elapsed
        assert_healthy(c, "the cancelled connection")
    assert_healthy(healthy)
    healthy.close()


def test_cancel_only_hits_its_own_session(proxy):
    """A cancel for one session leaves a concurrent query on another alone."""
    with proxy.connect() as a, proxy.connect() as b:
        result = {}

        def run_b():
            try:
                result["b"] = b.execute("SELECT pg_sleep(1.5), 'b done'").fetchone()[1]
            except Exception as e:  # reported below
                result["b"] = e
        tb = threading.Thread(target=run_b)
        tb.start()
        timer = threading.Timer(0.5, a.cancel)
        timer.start()
        try:
            with pytest.raises(errors.QueryCanceled):
                a.execute("SELECT pg_sleep(30)")
        finally:
            timer.join()
            tb.join(10)
        assert result.get("b") == "b done", result


def test_transaction_state_and_prepared_statements(proxy):
    with proxy.connect(autocommit=False) as c:
        c.execute("CREATE TEMP TABLE tx (v int)")
        c.execute("INSERT INTO tx VALUES (1)")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        c.rollback()
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with pytest.raises(errors.UndefinedTable):
            c.execute("SELECT * FROM tx")
        c.rollback()
        # server-side prepared statements (psycopg prepares after 5 executions)
        c.prepare_threshold = 0
        for i in range(10):
            assert c.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
        assert c.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] >= 1
        c.commit()


def test_large_values_binary(proxy):
    data = bytes(range(256)) * 40000  # ~10 MB
    with proxy.connect() as c:
        got = c.execute("SELECT %b::bytea, length(%b::bytea)", (data, data),
                        binary=True).fetchone()
        assert got == (data, len(data))


def test_server_session_ends_with_client(proxy, pg):
    """Closing the client (Terminate) ends the server session too: pgtally
    does not leak upstream connections."""
    conns = [proxy.connect(application_name="itest_close_%d" % i) for i in range(5)]
    for c in conns:
        assert_healthy(c)
    for c in conns:
        c.close()
    for i in range(5):
        pg.wait_backends_gone("itest_close_%d" % i)
