/* libpq features driven through pgtally: pipeline mode, bulk COPY in both
 * directions, a very large row, query cancellation and LISTEN/NOTIFY.
 *
 * usage: libpq_test CONNINFO [SUBTEST...]
 *   subtests: pipeline copy bigrow cancel notify (default: all)
 * Prints one line per subtest ("ok NAME: ..." or "FAIL NAME: ...") and exits
 * 1 if any subtest failed, 2 on bad usage. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

static const char *conninfo;
static char failure[1024];

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(failure, sizeof(failure), fmt, ap);
    va_end(ap);
    return -1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static PGconn *connect_db(void)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        fail("connection failed: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* Runs a command that must succeed with the given status. */
static int exec_ok(PGconn *conn, const char *sql, ExecStatusType want)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType got = PQresultStatus(res);
    int rc = 0;
    if (got != want)
        rc = fail("%s: got %s, want %s: %s", sql, PQresStatus(got), PQresStatus(want),
                  PQerrorMessage(conn));
    PQclear(res);
    return rc;
}

/* Waits until the connection's socket is readable (and writable if asked). */
static int wait_socket(PGconn *conn, bool for_write, double timeout)
{
    int fd = PQsocket(conn);
    fd_set rfds, wfds;
    struct timeval tv = {(time_t)timeout, (suseconds_t)((timeout - (long)timeout) * 1e6)};
    FD_ZERO(&rfds);
    FD_ZERO(&wfds);
    FD_SET(fd, &rfds);
    if (for_write)
        FD_SET(fd, &wfds);
    int n = select(fd + 1, &rfds, for_write ? &wfds : NULL, NULL, &tv);
    if (n < 0 && errno != EINTR)
        return fail("select: %s", strerror(errno));
    if (n == 0)
        return fail("timed out after %.0f s waiting for the server", timeout);
    return 0;
}

/* ---- pipeline ---------------------------------------------------------- */

#define PIPELINE_QUERIES 1000

/* Reads every pending result of a pipeline in nonblocking mode. check(i, res)
 * is called for each result that is not a pipeline sync or NULL separator;
 * returns when `syncs` PGRES_PIPELINE_SYNC results have been seen. */
typedef int (*result_fn)(int index, PGresult *res, void *arg);

static int pipeline_drain(PGconn *conn, int syncs, result_fn check, void *arg)
{
    int index = 0, seen_syncs = 0;
    double deadline = now() + 60;
    for (;;) {
        if (!PQconsumeInput(conn))
            return fail("PQconsumeInput: %s", PQerrorMessage(conn));
        int nulls = 0;
        while (seen_syncs < syncs && !PQisBusy(conn)) {
            PGresult *res = PQgetResult(conn);
            if (res == NULL) { /* end of one query's results */
                if (++nulls > 1)
                    break; /* nothing queued: wait for more input */
                continue;
            }
            nulls = 0;
            if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
                seen_syncs++;
            } else if (check(index++, res, arg) < 0) {
                PQclear(res);
                return -1;
            }
            PQclear(res);
        }
        if (seen_syncs >= syncs)
            return index;
        int flush = PQflush(conn);
        if (flush < 0)
            return fail("PQflush: %s", PQerrorMessage(conn));
        if (now() > deadline)
            return fail("pipeline did not complete in 60 s (%d results, %d syncs)", index,
                        seen_syncs);
        if (wait_socket(conn, flush == 1, 30) < 0)
            return -1;
    }
}

static int check_sum(int i, PGresult *res, void *arg)
{
    (void)arg;
    if (i >= PIPELINE_QUERIES)
        return fail("more results than queries (%d)", i + 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return fail("query %d: %s: %s", i, PQresStatus(PQresultStatus(res)),
                    PQresultErrorMessage(res));
    if (PQntuples(res) != 1 || PQnfields(res) != 2)
        return fail("query %d: %d rows x %d columns", i, PQntuples(res), PQnfields(res));
    long v = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    if (v != (long)i * 2 + 1)
        return fail("query %d: result %ld, want %ld (results out of order?)", i, v,
                    (long)i * 2 + 1);
    if (PQgetlength(res, 0, 1) != i % 97)
        return fail("query %d: text length %d, want %d", i, PQgetlength(res, 0, 1), i % 97);
    return 0;
}

static int check_abort(int i, PGresult *res, void *arg)
{
    (void)arg;
    static const ExecStatusType want[] = {PGRES_TUPLES_OK, PGRES_FATAL_ERROR,
                                          PGRES_PIPELINE_ABORTED, PGRES_TUPLES_OK};
    if (i >= 4)
        return fail("more results than queries after an error");
    if (PQresultStatus(res) != want[i])
        return fail("query %d after error: got %s, want %s", i, PQresStatus(PQresultStatus(res)),
                    PQresStatus(want[i]));
    if (i == 1) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (!state || strcmp(state, "22012") != 0)
            return fail("division by zero: SQLSTATE %s, want 22012", state ? state : "(none)");
    }
    return 0;
}

static int test_pipeline(PGconn *conn, char *info, size_t infolen)
{
    if (PQsetnonblocking(conn, 1) != 0 || PQenterPipelineMode(conn) != 1)
        return fail("cannot enter pipeline mode: %s", PQerrorMessage(conn));
    const Oid types[1] = {23 /* int4 */};
    for (int i = 0; i < PIPELINE_QUERIES; i++) {
        char num[16];
        snprintf(num, sizeof(num), "%d", i);
        const char *values[1] = {num};
        if (!PQsendQueryParams(conn, "SELECT $1 * 2 + 1, repeat('p', $1 % 97)", 1, types, values,
                               NULL, NULL, 0))
            return fail("PQsendQueryParams %d: %s", i, PQerrorMessage(conn));
    }
    if (!PQpipelineSync(conn))
        return fail("PQpipelineSync: %s", PQerrorMessage(conn));
    int n = pipeline_drain(conn, 1, check_sum, NULL);
    if (n < 0)
        return -1;
    if (n != PIPELINE_QUERIES)
        return fail("%d results for %d queries", n, PIPELINE_QUERIES);

    /* An error in the middle aborts the rest of that pipeline segment only. */
    if (!PQsendQueryParams(conn, "SELECT 1", 0, NULL, NULL, NULL, NULL, 0) ||
        !PQsendQueryParams(conn, "SELECT 1/0", 0, NULL, NULL, NULL, NULL, 0) ||
        !PQsendQueryParams(conn, "SELECT 2", 0, NULL, NULL, NULL, NULL, 0) ||
        !PQpipelineSync(conn) ||
        !PQsendQueryParams(conn, "SELECT 3", 0, NULL, NULL, NULL, NULL, 0) || !PQpipelineSync(conn))
        return fail("queueing: %s", PQerrorMessage(conn));
    n = pipeline_drain(conn, 2, check_abort, NULL);
    if (n < 0)
        return -1;
    if (n != 4)
        return fail("%d results after an error, want 4", n);
    if (PQexitPipelineMode(conn) != 1)
        return fail("PQexitPipelineMode: %s", PQerrorMessage(conn));
    if (PQsetnonblocking(conn, 0) != 0)
        return fail("PQsetnonblocking: %s", PQerrorMessage(conn));
    if (exec_ok(conn, "SELECT 1", PGRES_TUPLES_OK) < 0)
        return -1;
    snprintf(info, infolen, "%d queries in one pipeline, then an aborted segment",
             PIPELINE_QUERIES);
    return 0;
}

/* ---- COPY ------------------------------------------------------------- */

#define COPY_BYTES (100LL * 1024 * 1024)

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* Line hashes are summed, so the check does not depend on row order. */
typedef struct {
    char *line;
    size_t len, cap;
    uint64_t sum;
    long long rows, bytes;
} line_acc_t;

static void acc_feed(line_acc_t *a, const char *p, size_t n)
{
    a->bytes += (long long)n;
    for (size_t i = 0; i < n; i++) {
        if (a->len == a->cap) {
            a->cap = a->cap ? a->cap * 2 : 4096;
            a->line = realloc(a->line, a->cap);
            if (!a->line) {
                fprintf(stderr, "out of memory\n");
                exit(3);
            }
        }
        a->line[a->len++] = p[i];
        if (p[i] == '\n') {
            a->sum += fnv1a(a->line, a->len);
            a->rows++;
            a->len = 0;
        }
    }
}

static int test_copy(PGconn *conn, char *info, size_t infolen)
{
    if (exec_ok(conn, "CREATE TEMP TABLE copy_t (id int, payload text)", PGRES_COMMAND_OK) < 0)
        return -1;
    PGresult *res = PQexec(conn, "COPY copy_t FROM STDIN");
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        fail("COPY FROM STDIN: %s", PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }
    PQclear(res);

    line_acc_t sent = {0};
    char *chunk = malloc(256 * 1024);
    if (!chunk)
        return fail("out of memory");
    size_t used = 0;
    uint32_t rnd = 12345;
    long long id = 0;
    while (sent.bytes < COPY_BYTES) {
        /* rows of 200..1800 bytes of pseudo-random letters */
        char row[2048];
        rnd = rnd * 1103515245u + 12345u;
        int len = 200 + (int)((rnd >> 8) % 1600);
        int n = snprintf(row, sizeof(row), "%lld\t", ++id);
        for (int i = 0; i < len; i++) {
            rnd = rnd * 1103515245u + 12345u;
            row[n++] = (char)('a' + (rnd >> 16) % 26);
        }
        row[n++] = '\n';
        acc_feed(&sent, row, (size_t)n);
        if (used + (size_t)n > 256 * 1024) {
            if (PQputCopyData(conn, chunk, (int)used) != 1) {
                free(chunk);
                return fail("PQputCopyData: %s", PQerrorMessage(conn));
            }
            used = 0;
        }
        memcpy(chunk + used, row, (size_t)n);
        used += (size_t)n;
    }
    if (used && PQputCopyData(conn, chunk, (int)used) != 1) {
        free(chunk);
        return fail("PQputCopyData: %s", PQerrorMessage(conn));
    }
    free(chunk);
    free(sent.line);
    if (PQputCopyEnd(conn, NULL) != 1)
        return fail("PQputCopyEnd: %s", PQerrorMessage(conn));
    res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fail("COPY FROM STDIN ended with %s: %s", PQresStatus(PQresultStatus(res)),
             PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }
    long long copied = strtoll(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
    if (copied != sent.rows)
        return fail("COPY FROM STDIN reported %lld rows, sent %lld", copied, sent.rows);

    res = PQexec(conn, "COPY copy_t TO STDOUT");
    if (PQresultStatus(res) != PGRES_COPY_OUT) {
        fail("COPY TO STDOUT: %s", PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }
    PQclear(res);
    line_acc_t got = {0};
    char *buf;
    int n;
    while ((n = PQgetCopyData(conn, &buf, 0)) > 0) {
        acc_feed(&got, buf, (size_t)n);
        PQfreemem(buf);
    }
    free(got.line);
    if (n != -1)
        return fail("PQgetCopyData: %s", PQerrorMessage(conn));
    res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fail("COPY TO STDOUT ended with %s: %s", PQresStatus(PQresultStatus(res)),
             PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }
    PQclear(res);
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
    if (got.rows != sent.rows || got.bytes != sent.bytes)
        return fail("COPY TO STDOUT returned %lld rows / %lld bytes, sent %lld rows / %lld bytes",
                    got.rows, got.bytes, sent.rows, sent.bytes);
    if (got.sum != sent.sum)
        return fail("COPY TO STDOUT returned different row contents than were sent");
    if (exec_ok(conn, "DROP TABLE copy_t", PGRES_COMMAND_OK) < 0)
        return -1;
    snprintf(info, infolen, "%lld rows, %lld bytes in and out", sent.rows, sent.bytes);
    return 0;
}

/* ---- one very large row ----------------------------------------------- */

#define BIG_ROW (64 * 1024 * 1024)

static int test_bigrow(PGconn *conn, char *info, size_t infolen)
{
    PGresult *res = PQexec(conn, "SELECT repeat('x', 64*1024*1024), 'after'");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail("SELECT repeat: %s: %s", PQresStatus(PQresultStatus(res)), PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }
    int len = PQgetlength(res, 0, 0);
    const char *v = PQgetvalue(res, 0, 0);
    int bad = -1;
    for (int i = 0; i < len; i++)
        if (v[i] != 'x') {
            bad = i;
            break;
        }
    int ok = len == BIG_ROW && bad < 0 && strcmp(PQgetvalue(res, 0, 1), "after") == 0;
    PQclear(res);
    if (!ok)
        return fail("got %d bytes (want %d), first wrong byte at %d", len, BIG_ROW, bad);
    if (exec_ok(conn, "SELECT 1", PGRES_TUPLES_OK) < 0)
        return -1;
    snprintf(info, infolen, "one %d-byte value", len);
    return 0;
}

/* ---- cancel ----------------------------------------------------------- */

static int test_cancel(PGconn *conn, char *info, size_t infolen)
{
    if (!PQsendQuery(conn, "SELECT pg_sleep(60)"))
        return fail("PQsendQuery: %s", PQerrorMessage(conn));
    usleep(300 * 1000); /* let the query start on the server */
    PGcancel *cancel = PQgetCancel(conn);
    if (!cancel)
        return fail("PQgetCancel returned NULL");
    char errbuf[256] = "";
    double start = now();
    int sent = PQcancel(cancel, errbuf, sizeof(errbuf));
    PQfreeCancel(cancel);
    if (!sent)
        return fail("PQcancel: %s", errbuf);
    PGresult *res;
    const char *state = NULL;
    ExecStatusType status = PGRES_EMPTY_QUERY;
    char sqlstate[8] = "";
    /* wait with a bound, so a lost cancel fails instead of taking 60 s */
    while (PQisBusy(conn)) {
        if (now() - start > 10)
            return fail("query still running 10 s after PQcancel");
        if (wait_socket(conn, false, 10) < 0)
            return -1;
        if (!PQconsumeInput(conn))
            return fail("PQconsumeInput: %s", PQerrorMessage(conn));
    }
    double elapsed = now() - start;
    while ((res = PQgetResult(conn)) != NULL) {
        status = PQresultStatus(res);
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state)
            snprintf(sqlstate, sizeof(sqlstate), "%s", state);
        PQclear(res);
    }
    if (status != PGRES_FATAL_ERROR || strcmp(sqlstate, "57014") != 0)
        return fail("cancelled query ended with %s, SQLSTATE %s (want 57014)", PQresStatus(status),
                    sqlstate[0] ? sqlstate : "(none)");
    if (elapsed > 2.0)
        return fail("cancel took %.2f s (limit 2 s)", elapsed);
    if (exec_ok(conn, "SELECT 1", PGRES_TUPLES_OK) < 0)
        return -1;
    snprintf(info, infolen, "query cancelled with 57014 after %.3f s", elapsed);
    return 0;
}

/* ---- LISTEN / NOTIFY -------------------------------------------------- */

static int test_notify(PGconn *listener, char *info, size_t infolen)
{
    PGconn *sender = connect_db();
    if (!sender)
        return -1;
    int rc = -1;
    if (exec_ok(listener, "LISTEN libpq_test_chan", PGRES_COMMAND_OK) < 0)
        goto out;
    PGresult *res = PQexec(sender, "SELECT pg_backend_pid()");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail("pg_backend_pid(): %s", PQerrorMessage(sender));
        PQclear(res);
        goto out;
    }
    int sender_pid = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (sender_pid != PQbackendPID(sender)) {
        fail("sender: pg_backend_pid() = %d but PQbackendPID = %d (BackendKeyData not the "
             "server's)",
             sender_pid, PQbackendPID(sender));
        goto out;
    }
    if (exec_ok(sender, "NOTIFY libpq_test_chan, 'hello through pgtally'", PGRES_COMMAND_OK) < 0)
        goto out;
    PGnotify *note = NULL;
    double deadline = now() + 5;
    while (!(note = PQnotifies(listener))) {
        if (now() > deadline) {
            fail("no notification within 5 s");
            goto out;
        }
        if (wait_socket(listener, false, 5) < 0)
            goto out;
        if (!PQconsumeInput(listener)) {
            fail("PQconsumeInput: %s", PQerrorMessage(listener));
            goto out;
        }
    }
    if (strcmp(note->relname, "libpq_test_chan") != 0 ||
        strcmp(note->extra, "hello through pgtally") != 0)
        fail("notification %s / %s", note->relname, note->extra);
    else if (note->be_pid != PQbackendPID(sender))
        fail("notification be_pid %d != sender's PQbackendPID %d", note->be_pid,
             PQbackendPID(sender));
    else {
        snprintf(info, infolen, "notification from pid %d", note->be_pid);
        rc = 0;
    }
    PQfreemem(note);
out:
    PQfinish(sender);
    return rc;
}

/* ---- main ------------------------------------------------------------- */

typedef struct {
    const char *name;
    int (*fn)(PGconn *conn, char *info, size_t infolen);
} subtest_t;

static const subtest_t subtests[] = {
    {"pipeline", test_pipeline}, {"copy", test_copy},     {"bigrow", test_bigrow},
    {"cancel", test_cancel},     {"notify", test_notify},
};
#define NSUBTESTS (sizeof(subtests) / sizeof(subtests[0]))

static int run(const subtest_t *t)
{
    char info[512] = "";
    failure[0] = '\0';
    double start = now();
    PGconn *conn = connect_db();
    int rc = conn ? t->fn(conn, info, sizeof(info)) : -1;
    if (conn)
        PQfinish(conn);
    if (rc < 0)
        printf("FAIL %s: %s\n", t->name, failure);
    else
        printf("ok %s: %s (%.2f s)\n", t->name, info, now() - start);
    fflush(stdout);
    return rc < 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CONNINFO [SUBTEST...]\nsubtests:", argv[0]);
        for (size_t i = 0; i < NSUBTESTS; i++)
            fprintf(stderr, " %s", subtests[i].name);
        fprintf(stderr, "\n");
        return 2;
    }
    conninfo = argv[1];
    int failed = 0;
    if (argc == 2) {
        for (size_t i = 0; i < NSUBTESTS; i++)
            failed += run(&subtests[i]);
    } else {
        for (int a = 2; a < argc; a++) {
            size_t i;
            for (i = 0; i < NSUBTESTS; i++)
                if (strcmp(argv[a], subtests[i].name) == 0)
                    break;
            if (i == NSUBTESTS) {
                fprintf(stderr, "unknown subtest %s\n", argv[a]);
                return 2;
            }
            failed += run(&subtests[i]);
        }
    }
    if (failed)
        printf("%d subtest(s) failed\n", failed);
    return failed ? 1 : 0;
}
