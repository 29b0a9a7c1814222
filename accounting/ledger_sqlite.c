/* The ledger's SQLite storage: the schema and its migrations, opening a
 * ledger file read-write (WAL) or read-only, and the writer's connection
 * (records inserted in transactions, retention's deletes). */
#include "ledger_int.h"

#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "pgtally/log.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- Schema ----------------------------------------------------------- */

/* The triggers that bump settings_version on every change of a table. */
#define SETTINGS_TRIGGER(table, op)                                                                \
    "CREATE TRIGGER " table "_" op "_version AFTER " op " ON " table                               \
    " BEGIN UPDATE settings_version SET version = version + 1 WHERE id = 1; END;"
#define SETTINGS_TRIGGERS(table)                                                                   \
    SETTINGS_TRIGGER(table, "INSERT")                                                              \
    SETTINGS_TRIGGER(table, "UPDATE") SETTINGS_TRIGGER(table, "DELETE")

/* migrations[i] takes the schema from version i to i + 1 (PRAGMA
 * user_version). Never edit one that has shipped: append a new one. */
static const char *const migrations[] = {
    /* 1: queries, and the tables of budgets, teams, alerts and reports. */
    "CREATE TABLE queries ("
    " id INTEGER PRIMARY KEY,"
    " started_at INTEGER NOT NULL,"  /* unix microseconds */
    " finished_at INTEGER NOT NULL," /* unix microseconds */
    " session_id INTEGER,"
    " backend_pid INTEGER,"
    " \"user\" TEXT NOT NULL,"
    " database TEXT NOT NULL,"
    " application TEXT NOT NULL DEFAULT '',"
    " client_addr TEXT,"
    " tags TEXT,"           /* JSON object */
    " fingerprint INTEGER," /* uint64 stored as int64 */
    " normalized TEXT,"
    " kind TEXT,"
    " protocol TEXT,"
    " est_planner_cost REAL," /* NULL when not explained */
    " est_cost_micro INTEGER,"
    " compute_s REAL NOT NULL DEFAULT 0,"
    " rows INTEGER NOT NULL DEFAULT 0,"
    " bytes_out INTEGER NOT NULL DEFAULT 0,"
    " cost_micro INTEGER NOT NULL DEFAULT 0,"
    " status TEXT NOT NULL,"
    " sqlstate TEXT);"
    /* (started_at, cost_micro) also serves every range on started_at
     * (migration 4 widens it). */
    "CREATE INDEX queries_started_cost ON queries (started_at, cost_micro);"
    "CREATE INDEX queries_user_started ON queries (\"user\", started_at);"
    "CREATE INDEX queries_fingerprint_started ON queries (fingerprint, started_at);"
    "CREATE TABLE budgets ("
    " id INTEGER PRIMARY KEY,"
    " subject_type TEXT NOT NULL," /* user, role, team, application, database, default */
    " subject TEXT NOT NULL,"
    " period TEXT NOT NULL," /* day, week, month */
    " limit_micro INTEGER NOT NULL,"
    " warn_pcts TEXT NOT NULL DEFAULT '[80,100]'," /* JSON array of percents */
    " action TEXT NOT NULL DEFAULT 'refuse',"
    " per_query_micro INTEGER," /* NULL: no per-statement cap */
    " created_at INTEGER NOT NULL,"
    " UNIQUE (subject_type, subject, period));"
    "CREATE TABLE teams ("
    " id INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL UNIQUE,"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE team_members ("
    " team_id INTEGER NOT NULL REFERENCES teams (id) ON DELETE CASCADE,"
    " \"user\" TEXT NOT NULL,"
    " PRIMARY KEY (team_id, \"user\"));"
    "CREATE TABLE alerts_sent ("
    " id INTEGER PRIMARY KEY,"
    " budget_id INTEGER NOT NULL,"
    " period_start INTEGER NOT NULL," /* unix microseconds */
    " threshold_pct INTEGER NOT NULL,"
    " channel TEXT NOT NULL,"
    " sent_at INTEGER NOT NULL,"
    " UNIQUE (budget_id, period_start, threshold_pct, channel));"
    "CREATE TABLE reports_sent ("
    " id INTEGER PRIMARY KEY,"
    " report_date TEXT NOT NULL," /* YYYY-MM-DD in the report's time zone */
    " channel TEXT NOT NULL,"
    " sent_at INTEGER," /* NULL until delivered */
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT,"
    " UNIQUE (report_date, channel));",
    /* 2: budgets. Grants of extra budget, PostgreSQL role memberships (read
     * by pgtally from pg_auth_members), and a settings version that every
     * change of budgets, teams or grants bumps, so that a running pgtally
     * notices pgtallyctl's changes by polling one number. The budget that
     * refused or cancelled a statement, and the pgtally instance that
     * metered it, are recorded with the statement. */
    "CREATE TABLE budget_grants ("
    " id INTEGER PRIMARY KEY,"
    " \"user\" TEXT NOT NULL,"
    " amount_micro INTEGER NOT NULL,"
    " granted_at INTEGER NOT NULL," /* unix microseconds */
    " until_us INTEGER);"           /* NULL: end of the period current when granted */
    "CREATE TABLE role_members ("
    " role TEXT NOT NULL,"
    " \"user\" TEXT NOT NULL,"
    " refreshed_at INTEGER NOT NULL," /* unix microseconds */
    " PRIMARY KEY (role, \"user\"));"
    "CREATE TABLE settings_version ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " version INTEGER NOT NULL);"
    "INSERT INTO settings_version VALUES (1, 0);"
    /* clang-format off */
    SETTINGS_TRIGGERS("budgets")
    SETTINGS_TRIGGERS("teams")
    SETTINGS_TRIGGERS("team_members")
    SETTINGS_TRIGGERS("budget_grants")
    /* clang-format on */
    "ALTER TABLE queries ADD COLUMN budget_id INTEGER;"
    "ALTER TABLE queries ADD COLUMN instance INTEGER;",
    /* 3: delivery of the daily report. A process about to send a report
     * claims its row (who, and until when), so that another process or a
     * restart sharing the ledger does not send it at the same time; a claim
     * left by a crash expires. */
    "ALTER TABLE reports_sent ADD COLUMN claimed_by INTEGER;"
    "ALTER TABLE reports_sent ADD COLUMN claimed_until INTEGER;" /* unix microseconds */
    "ALTER TABLE reports_sent ADD COLUMN last_attempt_at INTEGER;",
    /* 4: the daily report reads a whole day of statements (millions of
     * rows) from one index, in start order, without visiting the table,
     * whose rows carry the long normalized text: a day of 10 million
     * statements is half a gigabyte of index instead of several of table.
     * It replaces queries_started_cost, which is its prefix. With database
     * and application in it too, the spend of any budget over a period is
     * read from an index alone: this one, or the user index, which gains
     * cost_micro. The writer still maintains three indexes. */
    "CREATE INDEX queries_started_report ON queries (started_at, cost_micro, \"user\","
    " fingerprint, compute_s, status, budget_id, database, application);"
    "DROP INDEX queries_started_cost;"
    "CREATE INDEX queries_user_started_cost ON queries (\"user\", started_at, cost_micro);"
    "DROP INDEX queries_user_started;",
};

#define SCHEMA_VERSION ((int)NELEMS(migrations))

static const char insert_sql[] =
    "INSERT INTO queries (" LEDGER_RECORD_COLUMNS ", budget_id, instance)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* Binds r, written by pgtally instance, to insert_sql; r must outlive the
 * step. */
static void bind_record(sqlite3_stmt *st, const pgt_record_t *r, int64_t instance)
{
    sqlite3_bind_int64(st, 1, r->started_us);
    sqlite3_bind_int64(st, 2, r->finished_us);
    sqlite3_bind_int64(st, 3, (int64_t)r->session_id);
    sqlite3_bind_int(st, 4, r->backend_pid);
    bind_text(st, 5, r->user ? r->user : "");
    bind_text(st, 6, r->database ? r->database : "");
    bind_text(st, 7, r->application ? r->application : "");
    bind_text(st, 8, r->client_addr);
    bind_text(st, 9, r->tags_json);
    sqlite3_bind_int64(st, 10, (int64_t)r->fingerprint);
    bind_text(st, 11, r->normalized);
    bind_text(st, 12, r->kind);
    bind_text(st, 13, r->protocol);
    if (r->est_planner_cost >= 0)
        sqlite3_bind_double(st, 14, r->est_planner_cost);
    else
        sqlite3_bind_null(st, 14);
    if (r->est_cost_micro >= 0)
        sqlite3_bind_int64(st, 15, r->est_cost_micro);
    else
        sqlite3_bind_null(st, 15);
    sqlite3_bind_double(st, 16, isfinite(r->compute_s) ? r->compute_s : 0);
    sqlite3_bind_int64(st, 17, r->rows);
    sqlite3_bind_int64(st, 18, r->bytes_out);
    sqlite3_bind_int64(st, 19, r->cost_micro);
    bind_text(st, 20, pgt_query_status_name(r->status));
    size_t n = strnlen(r->sqlstate, sizeof(r->sqlstate) - 1);
    if (n)
        sqlite3_bind_text(st, 21, r->sqlstate, (int)n, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 21);
    if (r->budget_id > 0)
        sqlite3_bind_int64(st, 22, r->budget_id);
    else
        sqlite3_bind_null(st, 22);
    sqlite3_bind_int64(st, 23, instance);
}

static char *column_text(sqlite3_stmt *st, int i)
{
    return (char *)sqlite3_column_text(st, i);
}

void ledger_row_to_record(sqlite3_stmt *st, pgt_record_t *r)
{
    memset(r, 0, sizeof(*r));
    r->started_us = sqlite3_column_int64(st, 0);
    r->finished_us = sqlite3_column_int64(st, 1);
    r->session_id = (uint64_t)sqlite3_column_int64(st, 2);
    r->backend_pid = sqlite3_column_int(st, 3);
    r->user = column_text(st, 4);
    r->database = column_text(st, 5);
    r->application = column_text(st, 6);
    r->client_addr = column_text(st, 7);
    r->tags_json = column_text(st, 8);
    r->fingerprint = (uint64_t)sqlite3_column_int64(st, 9);
    r->normalized = column_text(st, 10);
    r->kind = column_text(st, 11);
    r->protocol = column_text(st, 12);
    bool explained = sqlite3_column_type(st, 13) != SQLITE_NULL;
    r->est_planner_cost = explained ? sqlite3_column_double(st, 13) : -1;
    bool estimated = sqlite3_column_type(st, 14) != SQLITE_NULL;
    r->est_cost_micro = estimated ? sqlite3_column_int64(st, 14) : -1;
    r->compute_s = sqlite3_column_double(st, 15);
    r->rows = sqlite3_column_int64(st, 16);
    r->bytes_out = sqlite3_column_int64(st, 17);
    r->cost_micro = sqlite3_column_int64(st, 18);
    if (pgt_query_status_parse(column_text(st, 19), &r->status) != 0)
        r->status = PGT_QUERY_ERROR;
    const char *sqlstate = column_text(st, 20);
    if (sqlstate)
        snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", sqlstate);
}

/* Runs sql (no rows expected); returns the SQLite result code. */
static int exec_sql(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static void rollback_if_open(sqlite3 *db)
{
    if (!sqlite3_get_autocommit(db))
        (void)exec_sql(db, "ROLLBACK");
}

static int user_version(sqlite3 *db, int *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Brings the schema to version target in one transaction, rechecking the
 * version under the write lock since another process may migrate too. Sets
 * *newer when the file comes from a newer pgtally, and *from to the version
 * found. */
static int migrate(sqlite3 *db, int target, bool *newer, int *from, char *err, size_t errlen)
{
    int v = 0;
    int rc = user_version(db, &v);
    *from = v;
    if (rc == SQLITE_OK && v == target)
        return SQLITE_OK;
    if (rc == SQLITE_OK)
        rc = exec_sql(db, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK)
        rc = user_version(db, &v);
    *from = v;
    if (rc == SQLITE_OK && v > SCHEMA_VERSION) {
        *newer = true;
        snprintf(err, errlen, "ledger schema version %d is newer than this build's %d", v,
                 SCHEMA_VERSION);
        rollback_if_open(db);
        return SQLITE_ERROR;
    }
    for (; rc == SQLITE_OK && v < target; v++)
        rc = exec_sql(db, migrations[v]);
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v);
    if (rc == SQLITE_OK)
        rc = exec_sql(db, sql);
    if (rc == SQLITE_OK)
        rc = exec_sql(db, "COMMIT");
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "migrating the schema: %s", sqlite3_errmsg(db));
        rollback_if_open(db);
    }
    return rc;
}

int pgt_ledger_schema_version(void)
{
    return SCHEMA_VERSION;
}

int pgt_ledger_migrate(sqlite3 *db, int target, char *err, size_t errlen)
{
    bool newer = false;
    int from;
    if (target <= 0 || target > SCHEMA_VERSION)
        target = SCHEMA_VERSION;
    return migrate(db, target, &newer, &from, err, errlen) == SQLITE_OK ? 0 : -1;
}

/* Writes what failed, with the message of db's last error, to err. */
static void sqlite_failed(sqlite3 *db, const char *doing, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: %s", doing, db ? sqlite3_errmsg(db) : "cannot open the database");
}

/* Sets the pragmas of a read-write connection: the busy timeout, WAL
 * (persistent in the file) and synchronous=NORMAL (durable at each
 * checkpoint, safe in WAL). Returns an SQLite code with the cause in err. */
static int rw_pragmas(sqlite3 *db, int busy_ms, char *err, size_t errlen)
{
    sqlite3_busy_timeout(db, busy_ms);
    if (sqlite3_db_readonly(db, "main") == 1) {
        snprintf(err, errlen, "opening: the ledger file is read-only");
        return SQLITE_READONLY;
    }
    int rc = exec_sql(db, "PRAGMA journal_mode=WAL");
    if (rc == SQLITE_OK)
        rc = exec_sql(db, "PRAGMA synchronous=NORMAL");
    if (rc != SQLITE_OK)
        sqlite_failed(db, "setting WAL mode", err, errlen);
    return rc;
}

/* Opens path read-write, creating it, sets the pragmas and migrates it to
 * SCHEMA_VERSION. Returns an SQLite code with the cause in err; *newer and
 * *from as migrate. */
static int open_rw(const char *path, int busy_ms, int flags, sqlite3 **out, bool *newer, int *from,
                   char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    if (rc != SQLITE_OK)
        sqlite_failed(db, "opening", err, errlen);
    if (rc == SQLITE_OK)
        rc = rw_pragmas(db, busy_ms, err, errlen);
    if (rc == SQLITE_OK)
        rc = migrate(db, SCHEMA_VERSION, newer, from, err, errlen);
    if (rc != SQLITE_OK) {
        sqlite3_close_v2(db);
        return rc;
    }
    *out = db;
    return SQLITE_OK;
}

/* Opens path read-only after checking that it is a pgtally ledger this
 * build can read; sets *version. Returns the connection, or NULL with the
 * cause in err. */
static sqlite3 *open_ro(const char *path, int *version, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "not a regular file");
        return NULL;
    }
    sqlite3 *db = NULL;
    int v = 0;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, LEDGER_BUSY_TIMEOUT_MS);
        rc = user_version(db, &v);
    }
    if (rc != SQLITE_OK)
        snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : "out of memory");
    else if (v == 0)
        snprintf(err, errlen, "not a pgtally ledger (no schema)");
    else if (v > SCHEMA_VERSION)
        snprintf(err, errlen, "schema version %d is newer than this build's %d", v, SCHEMA_VERSION);
    if (rc != SQLITE_OK || v == 0 || v > SCHEMA_VERSION) {
        sqlite3_close_v2(db);
        return NULL;
    }
    *version = v;
    return db;
}

sqlite3 *pgt_ledger_db_open(const char *path, bool writable, int *version, char *err, size_t errlen)
{
    if (!writable)
        return open_ro(path, version, err, errlen);
    sqlite3 *db = NULL;
    bool newer = false;
    int from;
    if (open_rw(path, LEDGER_BUSY_TIMEOUT_MS, 0, &db, &newer, &from, err, errlen) != SQLITE_OK)
        return NULL;
    *version = SCHEMA_VERSION;
    return db;
}

/* ---- The writer's connection ------------------------------------------ */

/* Records an SQLite error of the writer connection (or of db) in l->error. */
static void note_sqlite_error(pgt_ledger_t *l, sqlite3 *db, const char *doing)
{
    sqlite_failed(db, doing, l->error, sizeof(l->error));
}

void ledger_conn_close(pgt_ledger_t *l, bool optimize)
{
    sqlite3_finalize(l->insert);
    l->insert = NULL;
    if (l->db && optimize)
        (void)exec_sql(l->db, "PRAGMA optimize");
    sqlite3_close_v2(l->db);
    l->db = NULL;
}

int ledger_conn_open(pgt_ledger_t *l, bool *fatal)
{
    sqlite3 *db = NULL;
    bool newer = false;
    int from = SCHEMA_VERSION;
    int rc = open_rw(l->path, l->busy_timeout_ms, SQLITE_OPEN_NOMUTEX, &db, &newer, &from, l->error,
                     sizeof(l->error));
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(db, insert_sql, -1, &l->insert, NULL);
        if (rc != SQLITE_OK)
            note_sqlite_error(l, db, "preparing the insert");
    }
    *fatal = newer || rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT;
    if (rc != SQLITE_OK) {
        sqlite3_close_v2(db);
        return -1;
    }
    if (from != SCHEMA_VERSION)
        PGT_INFO("ledger_migrated", "from=%d to=%d", from, SCHEMA_VERSION);
    l->db = db;
    return 0;
}

int ledger_conn_insert(pgt_ledger_t *l, pgt_record_t *const *recs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bind_record(l->insert, recs[i], l->instance);
        int rc = sqlite3_step(l->insert);
        sqlite3_reset(l->insert);
        if (rc != SQLITE_DONE) {
            note_sqlite_error(l, l->db, "inserting");
            return -1;
        }
    }
    return 0;
}

int ledger_conn_begin(pgt_ledger_t *l)
{
    if (exec_sql(l->db, "BEGIN IMMEDIATE") == SQLITE_OK)
        return 0;
    note_sqlite_error(l, l->db, "beginning");
    return -1;
}

int ledger_conn_end(pgt_ledger_t *l, int rc)
{
    if (rc == 0 && exec_sql(l->db, "COMMIT") != SQLITE_OK) {
        note_sqlite_error(l, l->db, "committing");
        rc = -1;
    }
    if (rc != 0)
        rollback_if_open(l->db);
    return rc;
}

int ledger_conn_delete_before(pgt_ledger_t *l, int64_t cutoff_us, int limit, int *deleted)
{
    static const char sql[] = "DELETE FROM queries WHERE id IN "
                              "(SELECT id FROM queries WHERE started_at < ?1 LIMIT ?2)";
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(l->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, cutoff_us);
        sqlite3_bind_int(st, 2, limit);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(l->error, sizeof(l->error), "%s", sqlite3_errmsg(l->db));
        return -1;
    }
    *deleted = sqlite3_changes(l->db);
    return 0;
}
