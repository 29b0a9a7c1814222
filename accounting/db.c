/* The ledger's database connection over SQLite or libpq: one way to run a
 * statement with parameters and walk its rows, so that the budget tables,
 * the report and pgtallyctl are written once for both backends. */
#include "pgtally/db.h"

#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/config.h"
#include "pgtally/names.h"

#define DEFAULT_BUSY_MS 2000
#define MAX_PARAMS 32
#define DB_FAILED INT_MIN /* the database failed, not a row callback */

PGT_NAMES_DEFINE(PGT_DB_BACKEND_MAP, pgt_db_backend_t, pgt_db_backend_name, pgt_db_backend_parse)

struct pgt_db {
    pgt_db_backend_t backend; /* which of the two below */
    sqlite3 *lite;            /* SQLite connection */
    PGconn *pg;               /* PostgreSQL connection */
    int64_t changes;          /* rows changed by the last statement */
    char error[512];          /* the last error */
};

struct pgt_db_row {
    sqlite3_stmt *st; /* SQLite: the statement, on its row */
    PGresult *res;    /* PostgreSQL: the result */
    int row;          /* PostgreSQL: the row */
};

pgt_db_backend_t pgt_db_backend_of(const char *ledger)
{
    return pgt_config_ledger_is_postgresql(ledger) ? PGT_DB_POSTGRESQL : PGT_DB_SQLITE;
}

void pgt_db_describe(const char *ledger, char *out, size_t outlen)
{
    if (pgt_db_backend_of(ledger) == PGT_DB_SQLITE) {
        snprintf(out, outlen, "%s", ledger ? ledger : "");
        return;
    }
    PQconninfoOption *opts = PQconninfoParse(ledger, NULL);
    if (!opts) {
        snprintf(out, outlen, "(a PostgreSQL conninfo that does not parse)");
        return;
    }
    static const char *const shown[] = {"host", "hostaddr", "port", "dbname", "user"};
    size_t len = 0;
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++) {
            if (strcmp(o->keyword, shown[i]) != 0 || !o->val || !o->val[0] || len >= outlen)
                continue;
            int n =
                snprintf(out + len, outlen - len, "%s%s=%s", len ? " " : "", o->keyword, o->val);
            len += n > 0 ? (size_t)n : 0;
        }
    }
    PQconninfoFree(opts);
}

pgt_db_backend_t pgt_db_backend(const pgt_db_t *db)
{
    return db->backend;
}

void *pgt_db_handle(pgt_db_t *db)
{
    return db->backend == PGT_DB_SQLITE ? (void *)db->lite : (void *)db->pg;
}

const char *pgt_db_errmsg(pgt_db_t *db)
{
    return db->error;
}

/* Copies a libpq message without its trailing newline. */
static void set_pg_error(pgt_db_t *db, const char *msg)
{
    snprintf(db->error, sizeof(db->error), "%s", msg && *msg ? msg : "unknown error");
    size_t n = strlen(db->error);
    while (n && (db->error[n - 1] == '\n' || db->error[n - 1] == ' '))
        db->error[--n] = '\0';
}

static void set_sqlite_error(pgt_db_t *db)
{
    snprintf(db->error, sizeof(db->error), "%s",
             db->lite ? sqlite3_errmsg(db->lite) : "cannot open the database");
}

/* ---- Opening ------------------------------------------------------------ */

static int open_sqlite(pgt_db_t *db, const pgt_db_opts_t *o)
{
    int flags = o->writable ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    if (o->nomutex)
        flags |= SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(o->ledger, &db->lite, flags, NULL) != SQLITE_OK) {
        set_sqlite_error(db);
        return -1;
    }
    sqlite3_busy_timeout(db->lite, o->busy_timeout_ms > 0 ? o->busy_timeout_ms : DEFAULT_BUSY_MS);
    return 0;
}

/* Quiets libpq's notices (CREATE SCHEMA IF NOT EXISTS, ...). */
static void ignore_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static int open_pg(pgt_db_t *db, const pgt_db_opts_t *o)
{
    /* Defaults that the ledger's own settings override: an unreachable or
     * silent host must not hold the writer for minutes (TCP keepalives
     * and the user timeout end a dead connection in about 30 s). */
    const char *const keys[] = {"connect_timeout",
                                "keepalives_idle",
                                "keepalives_interval",
                                "keepalives_count",
                                "tcp_user_timeout",
                                "dbname",
                                NULL};
    const char *const vals[] = {"10", "10", "5", "3", "30000", o->ledger, NULL};
    db->pg = PQconnectdbParams(keys, vals, 1);
    if (!db->pg || PQstatus(db->pg) != CONNECTION_OK) {
        /* libpq quotes a URI that does not parse whole, password included. */
        char *perr = NULL;
        PQconninfoOption *parsed = PQconninfoParse(o->ledger, &perr);
        PQconninfoFree(parsed);
        PQfreemem(perr);
        set_pg_error(db, !parsed  ? "the PostgreSQL URI or conninfo does not parse; write it as "
                                    "postgresql://user@host:port/dbname or host=... dbname=..."
                         : db->pg ? PQerrorMessage(db->pg)
                                  : "out of memory");
        return -1;
    }
    PQsetNoticeProcessor(db->pg, ignore_notice, NULL);
    const char *schema = o->schema && *o->schema ? o->schema : "pgtally";
    char *ident = PQescapeIdentifier(db->pg, schema, strlen(schema));
    if (!ident) {
        set_pg_error(db, PQerrorMessage(db->pg));
        return -1;
    }
    char sql[600];
    snprintf(sql, sizeof(sql),
             "SET search_path TO %s; SET application_name = 'pgtally ledger';"
             " SET timezone = 'UTC'; SET statement_timeout = '60s'",
             ident);
    char check[700];
    snprintf(check, sizeof(check), "CREATE SCHEMA IF NOT EXISTS %s", ident);
    PQfreemem(ident);
    /* Creating the schema needs a right that a reader may lack: a schema
     * that exists already is fine. */
    PGresult *res = PQexecParams(db->pg, "SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, NULL,
                                 &schema, NULL, NULL, 0);
    bool exists = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    PQclear(res);
    if (!exists && !o->writable) {
        snprintf(db->error, sizeof(db->error), "schema \"%s\" does not exist", schema);
        return -1;
    }
    if (!exists) {
        res = PQexec(db->pg, check);
        bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok)
            set_pg_error(db, PQresultErrorMessage(res));
        PQclear(res);
        if (!ok)
            return -1;
    }
    res = PQexec(db->pg, sql);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        set_pg_error(db, PQresultErrorMessage(res));
    PQclear(res);
    return ok ? 0 : -1;
}

pgt_db_t *pgt_db_open(const pgt_db_opts_t *o, char *err, size_t errlen)
{
    pgt_db_t *db = calloc(1, sizeof(*db));
    if (!db) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    db->backend = pgt_db_backend_of(o->ledger);
    int rc = db->backend == PGT_DB_SQLITE ? open_sqlite(db, o) : open_pg(db, o);
    if (rc != 0) {
        snprintf(err, errlen, "%s", db->error);
        pgt_db_close(db);
        return NULL;
    }
    return db;
}

void pgt_db_close(pgt_db_t *db)
{
    if (!db)
        return;
    sqlite3_close_v2(db->lite);
    PQfinish(db->pg);
    free(db);
}

/* ---- Rows --------------------------------------------------------------- */

bool pgt_db_isnull(const pgt_db_row_t *r, int col)
{
    if (r->st)
        return sqlite3_column_type(r->st, col) == SQLITE_NULL;
    return PQgetisnull(r->res, r->row, col) != 0;
}

int64_t pgt_db_int(const pgt_db_row_t *r, int col)
{
    if (r->st)
        return sqlite3_column_int64(r->st, col);
    if (PQgetisnull(r->res, r->row, col))
        return 0;
    const char *s = PQgetvalue(r->res, r->row, col);
    if (s[0] == 't' && !s[1])
        return 1;
    if (s[0] == 'f' && !s[1])
        return 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end == '.' || *end == 'e' || *end == 'E')
        return (int64_t)llround(strtod(s, NULL)); /* numeric from sum() or avg() */
    return (int64_t)v;
}

double pgt_db_double(const pgt_db_row_t *r, int col)
{
    if (r->st)
        return sqlite3_column_double(r->st, col);
    if (PQgetisnull(r->res, r->row, col))
        return 0;
    return strtod(PQgetvalue(r->res, r->row, col), NULL);
}

const char *pgt_db_text(const pgt_db_row_t *r, int col)
{
    if (r->st)
        return (const char *)sqlite3_column_text(r->st, col);
    if (PQgetisnull(r->res, r->row, col))
        return NULL;
    return PQgetvalue(r->res, r->row, col);
}

/* ---- Statements --------------------------------------------------------- */

char *pgt_db_pg_sql(const char *sql)
{
    char *out = strdup(sql);
    if (!out)
        return NULL;
    char quote = 0;
    for (char *p = out; *p; p++) {
        if (quote) {
            if (*p == quote)
                quote = 0;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (*p == '?' && p[1] >= '0' && p[1] <= '9') {
            *p = '$';
        }
    }
    return out;
}

/* One parameter, as SQLite binds it or as the text libpq sends. */
typedef struct param {
    char type;     /* 'i', 'd', 't', or 0 for NULL */
    int64_t i;     /* 'i' */
    double d;      /* 'd' */
    const char *t; /* 't' */
    char buf[32];  /* the text of a number, for PostgreSQL */
} param_t;

/* Reads the arguments of types into ps. Returns the count, or -1 when there
 * are too many. */
static int read_params(const char *types, va_list ap, param_t *ps)
{
    int n = 0;
    for (; types[n]; n++) {
        if (n == MAX_PARAMS)
            return -1;
        param_t *p = &ps[n];
        p->type = types[n];
        if (types[n] == 't') {
            p->t = va_arg(ap, const char *);
            if (!p->t)
                p->type = 0;
        } else if (types[n] == 'd') {
            p->d = va_arg(ap, double);
            if (!isfinite(p->d))
                p->d = 0;
        } else {
            p->i = va_arg(ap, int64_t);
            p->type = types[n] == 'n' && p->i < 0 ? 0 : 'i';
        }
    }
    return n;
}

static int run_sqlite(pgt_db_t *db, pgt_db_row_cb cb, void *arg, const char *sql, param_t *ps,
                      int n)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db->lite, sql, -1, &st, NULL) != SQLITE_OK) {
        set_sqlite_error(db);
        return DB_FAILED;
    }
    for (int i = 0; i < n; i++) {
        if (ps[i].type == 'i')
            sqlite3_bind_int64(st, i + 1, ps[i].i);
        else if (ps[i].type == 'd')
            sqlite3_bind_double(st, i + 1, ps[i].d);
        else if (ps[i].type == 't')
            sqlite3_bind_text(st, i + 1, ps[i].t, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, i + 1);
    }
    pgt_db_row_t row = {.st = st};
    int rc, stop = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (cb && (stop = cb(&row, arg)) != 0)
            break;
    if (!stop && rc != SQLITE_DONE)
        set_sqlite_error(db);
    db->changes = sqlite3_changes(db->lite);
    sqlite3_finalize(st);
    if (stop)
        return stop;
    return rc == SQLITE_DONE ? 0 : DB_FAILED;
}

static void note_pg_result(pgt_db_t *db, PGresult *res)
{
    set_pg_error(db, res ? PQresultErrorMessage(res) : PQerrorMessage(db->pg));
}

static int run_pg(pgt_db_t *db, pgt_db_row_cb cb, void *arg, const char *sql, param_t *ps, int n)
{
    const char *values[MAX_PARAMS];
    for (int i = 0; i < n; i++) {
        if (ps[i].type == 'i')
            snprintf(ps[i].buf, sizeof(ps[i].buf), "%lld", (long long)ps[i].i);
        else if (ps[i].type == 'd')
            snprintf(ps[i].buf, sizeof(ps[i].buf), "%.17g", ps[i].d);
        values[i] = ps[i].type == 't' ? ps[i].t : ps[i].type ? ps[i].buf : NULL;
    }
    char *text = pgt_db_pg_sql(sql);
    if (!text) {
        snprintf(db->error, sizeof(db->error), "out of memory");
        return DB_FAILED;
    }
    PGresult *res = PQexecParams(db->pg, text, n, NULL, values, NULL, NULL, 0);
    free(text);
    ExecStatusType s = PQresultStatus(res);
    if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
        note_pg_result(db, res);
        PQclear(res);
        return DB_FAILED;
    }
    db->changes = strtoll(PQcmdTuples(res), NULL, 10);
    pgt_db_row_t row = {.res = res};
    int stop = 0;
    for (int i = 0; cb && i < PQntuples(res) && !stop; i++) {
        row.row = i;
        stop = cb(&row, arg);
    }
    PQclear(res);
    return stop;
}

int pgt_db_vrun(pgt_db_t *db, const char *doing, char *err, size_t errlen, pgt_db_row_cb cb,
                void *arg, const char *sql, const char *types, va_list ap)
{
    param_t ps[MAX_PARAMS];
    int n = read_params(types ? types : "", ap, ps);
    int rc;
    if (n < 0) {
        snprintf(db->error, sizeof(db->error), "too many parameters");
        rc = DB_FAILED;
    } else if (db->backend == PGT_DB_SQLITE) {
        rc = run_sqlite(db, cb, arg, sql, ps, n);
    } else {
        rc = run_pg(db, cb, arg, sql, ps, n);
    }
    /* A callback's own -1 keeps the message the callback wrote. */
    if (rc == DB_FAILED) {
        snprintf(err, errlen, "%s: %s", doing, db->error);
        rc = -1;
    }
    return rc;
}

int pgt_db_run(pgt_db_t *db, const char *doing, char *err, size_t errlen, pgt_db_row_cb cb,
               void *arg, const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    int rc = pgt_db_vrun(db, doing, err, errlen, cb, arg, sql, types, ap);
    va_end(ap);
    return rc;
}

static int int_row(const pgt_db_row_t *r, void *arg)
{
    *(int64_t *)arg = pgt_db_int(r, 0);
    return 0;
}

int pgt_db_int_query(pgt_db_t *db, const char *doing, char *err, size_t errlen, int64_t *out,
                     const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    int rc = pgt_db_vrun(db, doing, err, errlen, int_row, out, sql, types, ap);
    va_end(ap);
    return rc;
}

int pgt_db_exec(pgt_db_t *db, const char *doing, const char *sql, char *err, size_t errlen)
{
    bool ok;
    if (db->backend == PGT_DB_SQLITE) {
        ok = sqlite3_exec(db->lite, sql, NULL, NULL, NULL) == SQLITE_OK;
        if (!ok)
            set_sqlite_error(db);
    } else {
        PGresult *res = PQexec(db->pg, sql);
        ExecStatusType s = PQresultStatus(res);
        ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
        if (!ok)
            note_pg_result(db, res);
        PQclear(res);
    }
    if (!ok)
        snprintf(err, errlen, "%s: %s", doing, db->error);
    return ok ? 0 : -1;
}

int64_t pgt_db_changes(pgt_db_t *db)
{
    return db->changes;
}

/* ---- Transactions ------------------------------------------------------- */

static bool in_transaction(pgt_db_t *db)
{
    if (db->backend == PGT_DB_SQLITE)
        return !sqlite3_get_autocommit(db->lite);
    return PQtransactionStatus(db->pg) != PQTRANS_IDLE;
}

int pgt_db_begin(pgt_db_t *db, bool write, char *err, size_t errlen)
{
    const char *sql = write && db->backend == PGT_DB_SQLITE ? "BEGIN IMMEDIATE" : "BEGIN";
    return pgt_db_exec(db, "beginning a transaction", sql, err, errlen);
}

int pgt_db_finish(pgt_db_t *db, int rc, char *err, size_t errlen)
{
    if (rc == 0 && pgt_db_exec(db, "committing", "COMMIT", err, errlen) != 0)
        rc = -1;
    if (in_transaction(db)) {
        char ignored[64];
        if (pgt_db_exec(db, "rolling back", "ROLLBACK", ignored, sizeof(ignored)) != 0)
            rc = rc ? rc : -1;
    }
    return rc;
}

bool pgt_db_has_table(pgt_db_t *db, const char *table)
{
    int64_t n = 0;
    char err[64];
    const char *sql = db->backend == PGT_DB_SQLITE
                          ? "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1"
                          : "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
                            " AND tablename = ?1";
    return pgt_db_int_query(db, "", err, sizeof(err), &n, sql, "t", table) == 0 && n > 0;
}

bool pgt_db_has_column(pgt_db_t *db, const char *table, const char *column)
{
    int64_t n = 0;
    char err[64];
    const char *sql = db->backend == PGT_DB_SQLITE
                          ? "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2"
                          : "SELECT count(*) FROM information_schema.columns WHERE"
                            " table_schema = current_schema() AND table_name = ?1"
                            " AND column_name = ?2";
    return pgt_db_int_query(db, "", err, sizeof(err), &n, sql, "tt", table, column) == 0 && n > 0;
}
