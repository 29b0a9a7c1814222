/* The ledger on SQLite: a writer thread drains a bounded queue into a
 * WAL-mode database in batched transactions. While the database cannot be
 * written, records wait in memory and then in a JSON-lines spool file, and
 * are replayed when it is back. Readers open their own read-only connection. */
#include "pgtally/ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "pgtally/log.h"
#include "pgtally/names.h"

#define DEFAULT_QUEUE_CAPACITY 65536
#define DEFAULT_MEMORY_CAPACITY 100000
#define DEFAULT_BUSY_TIMEOUT_MS 2000
#define RETRY_INTERVAL_US 1000000LL        /* a failing database is tried every second */
#define RETENTION_INTERVAL_US 3600000000LL /* retention runs hourly */
#define RETENTION_RETRY_US 60000000LL      /* after a failed retention step */
#define RETENTION_CHUNK 5000               /* rows deleted per transaction */
#define DAY_US 86400000000LL
#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- Names ------------------------------------------------------------ */

PGT_NAMES_DEFINE(PGT_QUERY_STATUS_MAP, pgt_query_status_t, pgt_query_status_name,
                 pgt_query_status_parse)
PGT_NAMES_DEFINE(PGT_LEDGER_ORDER_MAP, pgt_ledger_order_t, pgt_ledger_order_name,
                 pgt_ledger_order_parse)
PGT_NAMES_DEFINE(PGT_USAGE_BY_MAP, pgt_usage_by_t, pgt_usage_by_name, pgt_usage_by_parse)

/* ---- Records ---------------------------------------------------------- */

pgt_record_t *pgt_record_new(void)
{
    pgt_record_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->est_planner_cost = -1;
    r->est_cost_micro = -1;
    r->status = PGT_QUERY_OK;
    return r;
}

void pgt_record_free(pgt_record_t *r)
{
    if (!r)
        return;
    free(r->user);
    free(r->database);
    free(r->application);
    free(r->client_addr);
    free(r->tags_json);
    free(r->normalized);
    free(r->kind);
    free(r->protocol);
    free(r);
}

/* A growable array of records, oldest first. */
typedef struct recvec {
    pgt_record_t **items; /* the records */
    size_t len;           /* records held */
    size_t cap;           /* slots allocated */
} recvec_t;

/* Makes room for extra more records. Returns 0, or -1 when out of memory. */
static int recvec_reserve(recvec_t *v, size_t extra)
{
    if (v->len + extra <= v->cap)
        return 0;
    size_t cap = v->cap ? v->cap : 256;
    while (cap < v->len + extra)
        cap *= 2;
    pgt_record_t **items = realloc(v->items, cap * sizeof(*items));
    if (!items)
        return -1;
    v->items = items;
    v->cap = cap;
    return 0;
}

/* Moves every record of src to the end of dst. Returns 0, or -1 when out of
 * memory (then nothing moved). */
static int recvec_move(recvec_t *dst, recvec_t *src)
{
    if (recvec_reserve(dst, src->len) != 0)
        return -1;
    memcpy(dst->items + dst->len, src->items, src->len * sizeof(*src->items));
    dst->len += src->len;
    src->len = 0;
    return 0;
}

/* Frees the records and keeps the array. */
static void recvec_clear(recvec_t *v)
{
    for (size_t i = 0; i < v->len; i++)
        pgt_record_free(v->items[i]);
    v->len = 0;
}

static void recvec_dispose(recvec_t *v)
{
    recvec_clear(v);
    free(v->items);
    v->items = NULL;
    v->cap = 0;
}

/* The queue between submitters and the writer: a list of fixed-size chunks,
 * so adding a record never copies the queue (a growing array would, and
 * stall the event loop for milliseconds under a burst). */
#define CHUNK_RECORDS 1024

typedef struct chunk {
    struct chunk *next;                 /* the next, newer chunk */
    size_t len;                         /* slots used */
    pgt_record_t *items[CHUNK_RECORDS]; /* records, oldest first */
} chunk_t;

typedef struct fifo {
    chunk_t *head; /* oldest chunk, or NULL */
    chunk_t *tail; /* newest chunk, where records are added */
    size_t len;    /* records queued */
} fifo_t;

/* Adds r at the end. Returns 0, or -1 when out of memory. */
static int fifo_push(fifo_t *q, pgt_record_t *r)
{
    if (!q->tail || q->tail->len == CHUNK_RECORDS) {
        chunk_t *c = malloc(sizeof(*c));
        if (!c)
            return -1;
        c->next = NULL;
        c->len = 0;
        if (q->tail)
            q->tail->next = c;
        else
            q->head = c;
        q->tail = c;
    }
    q->tail->items[q->tail->len++] = r;
    q->len++;
    return 0;
}

/* Moves every record of q to the end of v and frees the chunks. Records
 * that do not fit (out of memory) stay in q. */
static void fifo_drain(fifo_t *q, recvec_t *v)
{
    while (q->head && recvec_reserve(v, q->head->len) == 0) {
        chunk_t *c = q->head;
        memcpy(v->items + v->len, c->items, c->len * sizeof(*c->items));
        v->len += c->len;
        q->len -= c->len;
        q->head = c->next;
        free(c);
    }
    if (!q->head)
        q->tail = NULL;
}

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

/* The columns of a record, in the order of bind_record and row_to_record. */
#define RECORD_COLUMNS                                                                             \
    "started_at, finished_at, session_id, backend_pid, \"user\", database, application, "          \
    "client_addr, tags, fingerprint, normalized, kind, protocol, est_planner_cost, "               \
    "est_cost_micro, compute_s, rows, bytes_out, cost_micro, status, sqlstate"

static const char insert_sql[] = "INSERT INTO queries (" RECORD_COLUMNS ", budget_id, instance)"
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

/* Points r at the current row of a SELECT RECORD_COLUMNS; the strings stay
 * owned by SQLite until the next step. */
static void row_to_record(sqlite3_stmt *st, pgt_record_t *r)
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
        sqlite3_busy_timeout(db, DEFAULT_BUSY_TIMEOUT_MS);
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
    if (open_rw(path, DEFAULT_BUSY_TIMEOUT_MS, 0, &db, &newer, &from, err, errlen) != SQLITE_OK)
        return NULL;
    *version = SCHEMA_VERSION;
    return db;
}

/* ---- The writer ------------------------------------------------------- */

struct pgt_ledger {
    char *path;                         /* SQLite file */
    char *spool_path;                   /* spool file, JSON lines */
    size_t queue_capacity;              /* records queued before they count as overflow */
    size_t memory_capacity;             /* records held in memory while failing */
    int retention_days;                 /* rows older than this are deleted; 0 keeps all */
    int busy_timeout_ms;                /* SQLite busy timeout */
    int64_t instance;                   /* written with each record */
    pgt_ledger_on_failure_t on_failure; /* whether to refuse while failing */
    int failing;                        /* 1 while writes fail; atomic, read lock-free */
    uv_thread_t thread;                 /* the writer thread */
    uv_mutex_t mu;                      /* guards the fields down to `stats` */
    uv_cond_t wake;                     /* signals the writer */
    fifo_t queue;                       /* records handed in; past queue_capacity they
                                           are the overflow, counted and kept */
    bool queue_full;                    /* overflow was logged in this episode */
    bool writer_idle;                   /* the writer waits on `wake` */
    bool stopping;                      /* pgt_ledger_close was called */
    pgt_ledger_stats_t stats;           /* published counters */
    /* The fields below belong to the writer thread. */
    sqlite3 *db;                /* writer connection; NULL while it fails */
    sqlite3_stmt *insert;       /* prepared insert_sql, reused */
    recvec_t batch;             /* records taken from the queue */
    recvec_t held;              /* records waiting in memory while failing, oldest first */
    bool spool_has_data;        /* the spool file holds records to replay */
    bool spool_failing;         /* the last spool write failed (logged once) */
    uint64_t spool_records;     /* records in the spool file */
    pgt_ledger_stats_t wstats;  /* written, spooled, replayed, batches, not yet published */
    int64_t next_retry_us;      /* monotonic time of the next recovery attempt */
    int64_t next_retention_us;  /* monotonic time of the next retention step */
    uint64_t retention_deleted; /* rows deleted by the current retention pass */
    char error[512];            /* the last error, for logs and pgt_ledger_open */
};

static int64_t mono_us(void)
{
    return (int64_t)(uv_hrtime() / 1000);
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void set_failing(pgt_ledger_t *l, int v)
{
    __atomic_store_n(&l->failing, v, __ATOMIC_RELEASE);
}

static bool is_failing(const pgt_ledger_t *l)
{
    return __atomic_load_n(&l->failing, __ATOMIC_ACQUIRE) != 0;
}

bool pgt_ledger_refusing(const pgt_ledger_t *l)
{
    return l && l->on_failure == PGT_LEDGER_CLOSED && is_failing(l);
}

/* Records an SQLite error of the writer connection (or of db) in l->error. */
static void note_sqlite_error(pgt_ledger_t *l, sqlite3 *db, const char *doing)
{
    sqlite_failed(db, doing, l->error, sizeof(l->error));
}

/* Closes the writer connection; optimize refreshes the planner's
 * statistics, as SQLite advises before closing (not after a failure, when
 * it would wait on the same lock again). */
static void ledger_conn_close(pgt_ledger_t *l, bool optimize)
{
    sqlite3_finalize(l->insert);
    l->insert = NULL;
    if (l->db && optimize)
        (void)exec_sql(l->db, "PRAGMA optimize");
    sqlite3_close_v2(l->db);
    l->db = NULL;
}

/* Opens, migrates and prepares the writer connection. Returns 0, or -1
 * with l->error set; *fatal says the file can never work (not a database,
 * newer schema). */
static int ledger_conn_open(pgt_ledger_t *l, bool *fatal)
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

/* Inserts n records with the prepared statement, inside the transaction
 * of ledger_conn_begin. Returns 0, or -1 with l->error set. */
static int ledger_conn_insert(pgt_ledger_t *l, pgt_record_t *const *recs, size_t n)
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

/* Begins a write transaction on the writer connection. Returns 0, or -1
 * with l->error set. */
static int ledger_conn_begin(pgt_ledger_t *l)
{
    if (exec_sql(l->db, "BEGIN IMMEDIATE") == SQLITE_OK)
        return 0;
    note_sqlite_error(l, l->db, "beginning");
    return -1;
}

/* Ends the transaction of ledger_conn_begin: commits it when rc, the
 * result of the work done in it, is 0; otherwise, or when the commit
 * fails, rolls it back. Returns 0, or -1 with l->error set. */
static int ledger_conn_end(pgt_ledger_t *l, int rc)
{
    if (rc == 0 && exec_sql(l->db, "COMMIT") != SQLITE_OK) {
        note_sqlite_error(l, l->db, "committing");
        rc = -1;
    }
    if (rc != 0)
        rollback_if_open(l->db);
    return rc;
}

/* Deletes at most limit rows that started before cutoff_us, in a
 * transaction of their own, and sets *deleted. Returns 0, or -1 with
 * SQLite's message in l->error. */
static int ledger_conn_delete_before(pgt_ledger_t *l, int64_t cutoff_us, int limit, int *deleted)
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

/* Writes v in one transaction. Returns 0, or -1 with l->error set. */
static int write_records(pgt_ledger_t *l, const recvec_t *v)
{
    int rc = ledger_conn_begin(l);
    if (rc == 0)
        rc = ledger_conn_insert(l, v->items, v->len);
    return ledger_conn_end(l, rc);
}

/* Enters (or stays in) the failing state: the connection is dropped so the
 * next attempt reopens the file, which may have been fixed meanwhile. */
static void writer_fail(pgt_ledger_t *l)
{
    if (!is_failing(l))
        PGT_WARN("ledger_write_failed", "error=\"%s\" path=\"%s\" on_failure=%s", l->error, l->path,
                 l->on_failure == PGT_LEDGER_CLOSED ? "closed" : "open");
    ledger_conn_close(l, false);
    set_failing(l, 1);
    l->next_retry_us = mono_us() + RETRY_INTERVAL_US;
}

/* ---- The spool -------------------------------------------------------- */

/* Sets key to s as a JSON string; text that is not UTF-8 goes, losslessly,
 * to key_hex as hex digits. NULL sets nothing. Returns 0 or -1. */
static int json_set_text(json_t *o, const char *key, const char *s)
{
    if (!s)
        return 0;
    json_t *v = json_string(s);
    if (v)
        return json_object_set_new(o, key, v);
    size_t n = strlen(s);
    char *hex = malloc(2 * n + 1);
    if (!hex)
        return -1;
    for (size_t i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)s[i]);
    char hkey[64];
    snprintf(hkey, sizeof(hkey), "%s_hex", key);
    int rc = json_object_set_new(o, hkey, json_string(hex));
    free(hex);
    return rc;
}

/* Returns a copy of key's text (or of the decoded key_hex), or NULL. */
static char *json_get_text(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    if (s)
        return strdup(s);
    char hkey[64];
    snprintf(hkey, sizeof(hkey), "%s_hex", key);
    const char *hex = json_string_value(json_object_get(o, hkey));
    if (!hex)
        return NULL;
    size_t n = strlen(hex) / 2;
    char *out = malloc(n + 1);
    for (size_t i = 0; out && i < n; i++) {
        unsigned b = 0;
        if (sscanf(hex + 2 * i, "%2x", &b) != 1)
            b = '?';
        out[i] = (char)b;
    }
    if (out)
        out[n] = '\0';
    return out;
}

/* Returns the record as a JSON object, or NULL when out of memory. */
static json_t *record_to_json(const pgt_record_t *r)
{
    double est = isfinite(r->est_planner_cost) ? r->est_planner_cost : -1;
    double compute_s = isfinite(r->compute_s) ? r->compute_s : 0;
    json_t *o = json_pack("{sIsIsIsisIsfsIsfsIsIsIsssI}", "started_us", (json_int_t)r->started_us,
                          "finished_us", (json_int_t)r->finished_us, "session_id",
                          (json_int_t)r->session_id, "backend_pid", (int)r->backend_pid,
                          "fingerprint", (json_int_t)r->fingerprint, "est_planner_cost", est,
                          "est_cost_micro", (json_int_t)r->est_cost_micro, "compute_s", compute_s,
                          "rows", (json_int_t)r->rows, "bytes_out", (json_int_t)r->bytes_out,
                          "cost_micro", (json_int_t)r->cost_micro, "status",
                          pgt_query_status_name(r->status), "budget_id", (json_int_t)r->budget_id);
    if (!o)
        return NULL;
    char sqlstate[sizeof(r->sqlstate)];
    snprintf(sqlstate, sizeof(sqlstate), "%.*s", (int)sizeof(r->sqlstate) - 1, r->sqlstate);
    if (json_set_text(o, "user", r->user) || json_set_text(o, "database", r->database) ||
        json_set_text(o, "application", r->application) ||
        json_set_text(o, "client_addr", r->client_addr) || json_set_text(o, "tags", r->tags_json) ||
        json_set_text(o, "normalized", r->normalized) || json_set_text(o, "kind", r->kind) ||
        json_set_text(o, "protocol", r->protocol) || json_set_text(o, "sqlstate", sqlstate)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int64_t json_get_i64(json_t *o, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

/* Returns a new record from a spool line's object, or NULL when it lacks
 * the start time (a damaged line) or memory runs out. */
static pgt_record_t *record_from_json(json_t *o)
{
    if (!json_is_integer(json_object_get(o, "started_us")))
        return NULL;
    pgt_record_t *r = pgt_record_new();
    if (!r)
        return NULL;
    r->started_us = json_get_i64(o, "started_us", 0);
    r->finished_us = json_get_i64(o, "finished_us", r->started_us);
    r->session_id = (uint64_t)json_get_i64(o, "session_id", 0);
    r->backend_pid = (int32_t)json_get_i64(o, "backend_pid", 0);
    r->fingerprint = (uint64_t)json_get_i64(o, "fingerprint", 0);
    json_t *pc = json_object_get(o, "est_planner_cost");
    r->est_planner_cost = json_is_number(pc) ? json_number_value(pc) : -1;
    r->est_cost_micro = json_get_i64(o, "est_cost_micro", -1);
    r->compute_s = json_number_value(json_object_get(o, "compute_s"));
    r->rows = json_get_i64(o, "rows", 0);
    r->bytes_out = json_get_i64(o, "bytes_out", 0);
    r->cost_micro = json_get_i64(o, "cost_micro", 0);
    r->budget_id = json_get_i64(o, "budget_id", 0);
    if (pgt_query_status_parse(json_string_value(json_object_get(o, "status")), &r->status) != 0)
        r->status = PGT_QUERY_ERROR;
    const char *sqlstate = json_string_value(json_object_get(o, "sqlstate"));
    snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", sqlstate ? sqlstate : "");
    r->user = json_get_text(o, "user");
    r->database = json_get_text(o, "database");
    r->application = json_get_text(o, "application");
    r->client_addr = json_get_text(o, "client_addr");
    r->tags_json = json_get_text(o, "tags");
    r->normalized = json_get_text(o, "normalized");
    r->kind = json_get_text(o, "kind");
    r->protocol = json_get_text(o, "protocol");
    return r;
}

/* Sets l->error to what failed on the spool file, with errno's text. */
static void note_spool_error(pgt_ledger_t *l, const char *doing)
{
    snprintf(l->error, sizeof(l->error), "%s %s: %s", doing, l->spool_path, strerror(errno));
}

/* Writes v's records as JSON lines to f. Returns 0 or -1. */
static int spool_write_lines(FILE *f, const recvec_t *v)
{
    for (size_t i = 0; i < v->len; i++) {
        json_t *o = record_to_json(v->items[i]);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        int rc = line && fputs(line, f) >= 0 && fputc('\n', f) != EOF ? 0 : -1;
        free(line);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* Appends v to the spool file and syncs it. On failure the file is cut back
 * to its old size, so a record is either in the spool or still in v.
 * Returns 0, or -1 with l->error set. */
static int spool_append(pgt_ledger_t *l, const recvec_t *v)
{
    int fd = open(l->spool_path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    struct stat st;
    FILE *f = NULL;
    if (fd < 0 || fstat(fd, &st) != 0 || !(f = fdopen(fd, "a"))) {
        note_spool_error(l, "spool");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    /* A crash may have left a partial last line: end it, so the next
     * record starts on a line of its own. */
    char last = '\n';
    if (st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1)
        last = '\n';
    int rc = last == '\n' ? 0 : (fputc('\n', f) == EOF ? -1 : 0);
    if (rc == 0)
        rc = spool_write_lines(f, v);
    if (rc == 0 && (fflush(f) != 0 || fsync(fd) != 0))
        rc = -1;
    if (rc != 0) {
        note_spool_error(l, "spool");
        (void)fflush(f);
        if (ftruncate(fd, st.st_size) != 0)
            PGT_ERROR("ledger_spool_truncate_failed", "path=\"%s\"", l->spool_path);
    }
    if (fclose(f) != 0 && rc == 0) {
        note_spool_error(l, "spool");
        rc = -1;
    }
    return rc;
}

/* Appends v to the spool file, counts its records there and frees them.
 * Returns 0, or -1 with l->error set (then v is kept). */
static int spool_out(pgt_ledger_t *l, recvec_t *v)
{
    if (spool_append(l, v) != 0)
        return -1;
    l->wstats.spooled += v->len;
    l->spool_records += v->len;
    l->spool_has_data = true;
    recvec_clear(v);
    return 0;
}

/* Moves the records held in memory to the spool file. */
static void spool_held(pgt_ledger_t *l)
{
    size_t n = l->held.len;
    if (spool_out(l, &l->held) != 0) {
        if (!l->spool_failing)
            PGT_WARN("ledger_spool_failed", "error=\"%s\" in_memory=%zu", l->error, n);
        l->spool_failing = true;
        return;
    }
    if (l->spool_failing)
        PGT_INFO("ledger_spool_recovered", "path=\"%s\"", l->spool_path);
    l->spool_failing = false;
    PGT_INFO("ledger_spooled", "records=%zu path=\"%s\"", n, l->spool_path);
}

/* Inserts every record of the spool file inside the caller's transaction
 * and adds their number to *count. Damaged lines are skipped and logged.
 * Returns 0, or -1 with l->error set. */
static int spool_replay(pgt_ledger_t *l, uint64_t *count)
{
    FILE *f = fopen(l->spool_path, "re");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        note_spool_error(l, "spool");
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, bad = 0;
    ssize_t len;
    int rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) > 0) {
        if (line[0] == '\n')
            continue;
        json_t *o = json_loadb(line, (size_t)len, 0, NULL);
        pgt_record_t *r = o ? record_from_json(o) : NULL;
        json_decref(o);
        if (!r) {
            bad++;
            continue;
        }
        rc = ledger_conn_insert(l, &r, 1);
        pgt_record_free(r);
        *count += rc == 0;
    }
    if (rc == 0 && ferror(f)) {
        note_spool_error(l, "reading spool");
        rc = -1;
    }
    free(line);
    fclose(f);
    if (bad)
        PGT_WARN("ledger_spool_bad_lines", "path=\"%s\" skipped=%zu", l->spool_path, bad);
    return rc;
}

/* Counts the records in a spool left by an earlier run. */
static void spool_scan(pgt_ledger_t *l)
{
    FILE *f = fopen(l->spool_path, "re");
    if (!f)
        return;
    int c, prev = '\n';
    while ((c = getc(f)) != EOF) {
        if (c == '\n' && prev != '\n')
            l->spool_records++;
        prev = c;
    }
    l->spool_records += prev != '\n';
    fclose(f);
    l->spool_has_data = l->spool_records > 0;
    if (l->spool_has_data)
        PGT_INFO("ledger_spool_found", "path=\"%s\" lines=%llu", l->spool_path,
                 (unsigned long long)l->spool_records);
}

/* Whether the spool file can be created or appended to. */
static bool spool_writable(pgt_ledger_t *l)
{
    bool existed = access(l->spool_path, F_OK) == 0;
    int fd = open(l->spool_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(l->error + strlen(l->error), sizeof(l->error) - strlen(l->error), "; spool %s: %s",
                 l->spool_path, strerror(errno));
        return false;
    }
    close(fd);
    if (!existed)
        unlink(l->spool_path);
    return true;
}

/* ---- The writer thread ------------------------------------------------ */

/* Records must wait: the database is down, or older records wait first. */
static bool has_backlog(const pgt_ledger_t *l)
{
    return !l->db || l->held.len > 0 || l->spool_has_data;
}

/* Copies the writer's counters into the published stats. */
static void publish_stats(pgt_ledger_t *l)
{
    uv_mutex_lock(&l->mu);
    l->stats.written = l->wstats.written;
    l->stats.spooled = l->wstats.spooled;
    l->stats.replayed = l->wstats.replayed;
    l->stats.batches = l->wstats.batches;
    l->stats.pending = l->held.len + l->spool_records;
    uv_mutex_unlock(&l->mu);
}

/* Writes the spool, then the records held in memory, in one transaction,
 * so a failure leaves both to try again and nothing is written twice.
 * Returns 0 or -1. */
static int recover(pgt_ledger_t *l)
{
    bool fatal;
    if (!l->db && ledger_conn_open(l, &fatal) != 0) {
        l->next_retry_us = mono_us() + RETRY_INTERVAL_US;
        return -1;
    }
    uint64_t from_spool = 0;
    int rc = ledger_conn_begin(l);
    if (rc == 0 && l->spool_has_data)
        rc = spool_replay(l, &from_spool);
    if (rc == 0)
        rc = ledger_conn_insert(l, l->held.items, l->held.len);
    if (ledger_conn_end(l, rc) != 0) {
        writer_fail(l);
        return -1;
    }
    if (l->spool_has_data && truncate(l->spool_path, 0) != 0 && errno != ENOENT)
        PGT_ERROR("ledger_spool_not_truncated",
                  "path=\"%s\" error=\"%s\" hint=\"remove it by hand or its records are "
                  "written twice\"",
                  l->spool_path, strerror(errno));
    uint64_t n = from_spool + l->held.len;
    recvec_clear(&l->held);
    l->spool_has_data = false;
    l->spool_records = 0;
    l->wstats.written += n;
    l->wstats.replayed += n;
    l->wstats.batches++;
    if (is_failing(l) || n)
        PGT_INFO("ledger_recovered", "replayed=%llu from_spool=%llu", (unsigned long long)n,
                 (unsigned long long)from_spool);
    set_failing(l, 0);
    return 0;
}

/* Keeps the batch in memory behind older records; past memory_capacity,
 * everything held goes to the spool file. */
static void hold_batch(pgt_ledger_t *l)
{
    if (recvec_move(&l->held, &l->batch) != 0) {
        /* Out of memory: straight to the spool, or lost as a last resort. */
        if (spool_out(l, &l->batch) != 0) {
            PGT_ERROR("ledger_records_lost", "count=%zu error=\"%s\"", l->batch.len, l->error);
            recvec_clear(&l->batch);
        }
    }
    if (l->held.len > l->memory_capacity)
        spool_held(l);
}

static void handle_batch(pgt_ledger_t *l)
{
    if (!l->batch.len)
        return;
    if (!has_backlog(l)) {
        if (write_records(l, &l->batch) == 0) {
            l->wstats.written += l->batch.len;
            l->wstats.batches++;
            recvec_clear(&l->batch);
            return;
        }
        writer_fail(l);
    }
    hold_batch(l);
}

/* Deletes one chunk of rows older than the retention period. */
static void retention_step(pgt_ledger_t *l)
{
    int deleted = 0;
    int64_t cutoff_us = wall_us() - (int64_t)l->retention_days * DAY_US;
    int rc = ledger_conn_delete_before(l, cutoff_us, RETENTION_CHUNK, &deleted);
    int64_t now = mono_us();
    if (rc != 0) {
        PGT_WARN("ledger_retention_failed", "error=\"%s\"", l->error);
        l->next_retention_us = now + RETENTION_RETRY_US;
        return;
    }
    l->retention_deleted += (uint64_t)deleted;
    if (deleted >= RETENTION_CHUNK)
        return; /* more to delete: the next loop turn goes on */
    if (l->retention_deleted)
        PGT_INFO("ledger_retention", "deleted=%llu retention_days=%d",
                 (unsigned long long)l->retention_deleted, l->retention_days);
    l->retention_deleted = 0;
    l->next_retention_us = now + RETENTION_INTERVAL_US;
}

/* When the writer must wake up without new records (monotonic µs). */
static int64_t next_due(const pgt_ledger_t *l)
{
    if (has_backlog(l))
        return l->next_retry_us;
    if (l->retention_days > 0)
        return l->next_retention_us;
    return INT64_MAX;
}

static void run_due_work(pgt_ledger_t *l)
{
    if (mono_us() < next_due(l))
        return;
    if (has_backlog(l))
        (void)recover(l);
    else if (l->retention_days > 0)
        retention_step(l);
}

/* Waits for records or due work, then takes everything queued into
 * l->batch. Returns whether the ledger is closing. */
static bool take_batch(pgt_ledger_t *l)
{
    uv_mutex_lock(&l->mu);
    while (!l->queue.len && !l->stopping) {
        int64_t wait = next_due(l) - mono_us();
        if (wait <= 0)
            break;
        if (wait > RETENTION_INTERVAL_US)
            wait = RETENTION_INTERVAL_US;
        l->writer_idle = true;
        (void)uv_cond_timedwait(&l->wake, &l->mu, (uint64_t)wait * 1000);
        l->writer_idle = false;
    }
    /* Take the chunks under the lock; copy them out after. */
    fifo_t q = l->queue;
    /* One warning per episode of overload, not per batch. */
    if (q.len < l->queue_capacity)
        l->queue_full = false;
    l->queue = (fifo_t){0};
    bool stopping = l->stopping;
    uv_mutex_unlock(&l->mu);
    fifo_drain(&q, &l->batch);
    if (q.len) {
        /* Out of memory for the batch: give the rest back, in front. */
        uv_mutex_lock(&l->mu);
        q.tail->next = l->queue.head;
        l->queue.head = q.head;
        if (!l->queue.tail)
            l->queue.tail = q.tail;
        l->queue.len += q.len;
        uv_mutex_unlock(&l->mu);
    }
    return stopping;
}

/* On close: one last attempt at the database, then the spool. */
static void shutdown_flush(pgt_ledger_t *l)
{
    if (has_backlog(l))
        (void)recover(l);
    if (l->held.len)
        spool_held(l);
    if (l->held.len) {
        PGT_ERROR("ledger_records_lost", "count=%zu error=\"%s\"", l->held.len, l->error);
        recvec_clear(&l->held);
    }
    publish_stats(l);
    ledger_conn_close(l, true);
}

static void writer_main(void *arg)
{
    pgt_ledger_t *l = arg;
    for (;;) {
        bool stopping = take_batch(l);
        bool had_records = l->batch.len > 0;
        handle_batch(l);
        if (stopping && !had_records)
            break;
        if (!stopping)
            run_due_work(l);
        publish_stats(l);
    }
    shutdown_flush(l);
}

/* ---- Opening and closing ---------------------------------------------- */

static void ledger_free(pgt_ledger_t *l)
{
    fifo_drain(&l->queue, &l->batch);
    recvec_dispose(&l->batch);
    recvec_dispose(&l->held);
    uv_cond_destroy(&l->wake);
    uv_mutex_destroy(&l->mu);
    free(l->path);
    free(l->spool_path);
    free(l);
}

static pgt_ledger_t *ledger_alloc(const pgt_ledger_opts_t *o)
{
    pgt_ledger_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    if (uv_mutex_init(&l->mu) != 0) {
        free(l);
        return NULL;
    }
    if (uv_cond_init(&l->wake) != 0) {
        uv_mutex_destroy(&l->mu);
        free(l);
        return NULL;
    }
    l->path = strdup(o->path);
    if (o->spool_path)
        l->spool_path = strdup(o->spool_path);
    else if (l->path && asprintf(&l->spool_path, "%s.spool", o->path) < 0)
        l->spool_path = NULL;
    if (!l->path || !l->spool_path) {
        ledger_free(l);
        return NULL;
    }
    l->queue_capacity = o->queue_capacity ? o->queue_capacity : DEFAULT_QUEUE_CAPACITY;
    l->memory_capacity = o->memory_capacity ? o->memory_capacity : DEFAULT_MEMORY_CAPACITY;
    l->retention_days = o->retention_days > 0 ? o->retention_days : 0;
    l->busy_timeout_ms = o->busy_timeout_ms > 0 ? o->busy_timeout_ms : DEFAULT_BUSY_TIMEOUT_MS;
    l->instance = o->instance;
    l->on_failure = o->on_failure;
    return l;
}

pgt_ledger_t *pgt_ledger_open(const pgt_ledger_opts_t *opts, char *err, size_t errlen)
{
    if (!opts || !opts->path || !opts->path[0]) {
        snprintf(err, errlen, "no ledger file given");
        return NULL;
    }
    pgt_ledger_t *l = ledger_alloc(opts);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    bool fatal = false;
    if (ledger_conn_open(l, &fatal) != 0) {
        /* A file that may come back (permissions, a lock, a full disk) is
         * retried while records spool; one that never will is an error. */
        if (fatal || !spool_writable(l)) {
            snprintf(err, errlen, "%s", l->error);
            ledger_free(l);
            return NULL;
        }
        writer_fail(l);
    }
    spool_scan(l);
    if (uv_thread_create(&l->thread, writer_main, l) != 0) {
        snprintf(err, errlen, "cannot start the writer thread");
        ledger_conn_close(l, false);
        ledger_free(l);
        return NULL;
    }
    return l;
}

void pgt_ledger_submit(pgt_ledger_t *l, pgt_record_t *r)
{
    if (!r)
        return;
    uv_mutex_lock(&l->mu);
    l->stats.submitted++;
    bool full = l->queue.len >= l->queue_capacity;
    bool log_full = full && !l->queue_full;
    l->stats.overflowed += full;
    l->queue_full |= full;
    int rc = fifo_push(&l->queue, r);
    bool wake = l->writer_idle;
    uv_mutex_unlock(&l->mu);
    if (wake)
        uv_cond_signal(&l->wake);
    if (log_full)
        PGT_WARN("ledger_queue_full", "capacity=%zu hint=\"records are kept in memory\"",
                 l->queue_capacity);
    if (rc != 0) {
        PGT_ERROR("ledger_records_lost", "count=1 error=\"out of memory\"");
        pgt_record_free(r);
    }
}

void pgt_ledger_stats(pgt_ledger_t *l, pgt_ledger_stats_t *out)
{
    uv_mutex_lock(&l->mu);
    *out = l->stats;
    uv_mutex_unlock(&l->mu);
    out->failing = is_failing(l);
}

void pgt_ledger_close(pgt_ledger_t *l)
{
    if (!l)
        return;
    uv_mutex_lock(&l->mu);
    l->stopping = true;
    uv_mutex_unlock(&l->mu);
    uv_cond_signal(&l->wake);
    uv_thread_join(&l->thread);
    ledger_free(l);
}

/* ---- Readers ---------------------------------------------------------- */

struct pgt_ledger_reader {
    sqlite3 *db; /* read-only connection */
};

pgt_ledger_reader_t *pgt_ledger_reader_open(const char *path, char *err, size_t errlen)
{
    pgt_ledger_reader_t *rd = calloc(1, sizeof(*rd));
    if (!rd) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int v;
    rd->db = open_ro(path, &v, err, errlen);
    if (!rd->db) {
        free(rd);
        return NULL;
    }
    return rd;
}

void pgt_ledger_reader_close(pgt_ledger_reader_t *rd)
{
    if (!rd)
        return;
    sqlite3_close_v2(rd->db);
    free(rd);
}

int pgt_ledger_walk(sqlite3 *db, sqlite3_stmt *st, int (*row_cb)(sqlite3_stmt *, void *), void *arg,
                    const char *doing, char *err, size_t errlen)
{
    int rc, ret = 0;
    while (ret == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        ret = row_cb ? row_cb(st, arg) : 0;
    if (ret == 0 && rc != SQLITE_DONE) {
        snprintf(err, errlen, "%s: %s", doing, sqlite3_errmsg(db));
        ret = -1;
    }
    sqlite3_finalize(st);
    return ret;
}

/* Prepares sql on the reader's connection. Returns the statement, or NULL
 * with the cause in err. */
static sqlite3_stmt *reader_prepare(pgt_ledger_reader_t *rd, const char *sql, char *err,
                                    size_t errlen)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(rd->db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading the ledger: %s", sqlite3_errmsg(rd->db));
        return NULL;
    }
    return st;
}

/* The callback of pgt_ledger_list and its argument. */
typedef struct list_ctx {
    pgt_ledger_record_cb cb; /* the caller's callback */
    void *arg;               /* its argument */
} list_ctx_t;

static int list_row(sqlite3_stmt *st, void *arg)
{
    list_ctx_t *c = arg;
    pgt_record_t r;
    row_to_record(st, &r);
    return c->cb(&r, c->arg);
}

int pgt_ledger_list(pgt_ledger_reader_t *rd, const pgt_ledger_filter_t *f, pgt_ledger_record_cb cb,
                    void *arg, char *err, size_t errlen)
{
    /* Ordering by started_at alone lets SQLite walk an index backwards and
     * stop at the limit, without sorting the range. */
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT " RECORD_COLUMNS " FROM queries WHERE started_at >= ?1 AND started_at < ?2"
             "%s ORDER BY %s LIMIT ?4",
             f->user ? " AND \"user\" = ?3" : "",
             f->order == PGT_LEDGER_ORDER_COST ? "cost_micro DESC, started_at DESC"
                                               : "started_at DESC");
    sqlite3_stmt *st = reader_prepare(rd, sql, err, errlen);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, f->since_us);
    sqlite3_bind_int64(st, 2, f->until_us);
    if (f->user)
        sqlite3_bind_text(st, 3, f->user, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, f->limit > 0 ? f->limit : -1);
    list_ctx_t c = {cb, arg};
    return pgt_ledger_walk(rd->db, st, list_row, &c, "reading the ledger", err, errlen);
}

/* The callback of pgt_ledger_usage and its argument. */
typedef struct usage_ctx {
    pgt_ledger_usage_cb cb; /* the caller's callback */
    void *arg;              /* its argument */
} usage_ctx_t;

static int usage_row(sqlite3_stmt *st, void *arg)
{
    usage_ctx_t *c = arg;
    pgt_usage_row_t row = {
        .group = column_text(st, 0),
        .statements = sqlite3_column_int64(st, 1),
        .compute_s = sqlite3_column_double(st, 2),
        .rows = sqlite3_column_int64(st, 3),
        .bytes_out = sqlite3_column_int64(st, 4),
        .cost_micro = sqlite3_column_int64(st, 5),
    };
    return c->cb(&row, c->arg);
}

/* Returns the SQL expression that names a statement's group. */
static const char *group_expr(pgt_usage_by_t by)
{
    switch (by) {
    case PGT_USAGE_BY_USER:
        return "\"user\"";
    case PGT_USAGE_BY_DATABASE:
        return "database";
    case PGT_USAGE_BY_APPLICATION:
        return "application";
    case PGT_USAGE_BY_TAG:
        break;
    }
    /* Damaged tags must not fail the whole report. */
    return "CASE WHEN json_valid(tags) THEN CAST(json_extract(tags, ?3) AS TEXT) END";
}

int pgt_ledger_usage(pgt_ledger_reader_t *rd, pgt_usage_by_t by, const char *tag, int64_t from_us,
                     int64_t to_us, pgt_ledger_usage_cb cb, void *arg, char *err, size_t errlen)
{
    if (by == PGT_USAGE_BY_TAG && (!tag || !tag[0] || strlen(tag) > 200 || strpbrk(tag, "\"\\"))) {
        snprintf(err, errlen, "bad tag name '%s'", tag ? tag : "");
        return -1;
    }
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT %s AS g, count(*), total(compute_s), coalesce(sum(rows), 0), "
             "coalesce(sum(bytes_out), 0), "
             "sum(cost_micro) AS cost FROM queries WHERE started_at >= ?1 AND started_at < ?2 "
             "GROUP BY g ORDER BY cost DESC, g",
             group_expr(by));
    sqlite3_stmt *st = reader_prepare(rd, sql, err, errlen);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, from_us);
    sqlite3_bind_int64(st, 2, to_us);
    if (by == PGT_USAGE_BY_TAG) {
        char path[256];
        snprintf(path, sizeof(path), "$.\"%s\"", tag);
        sqlite3_bind_text(st, 3, path, -1, SQLITE_TRANSIENT);
    }
    usage_ctx_t c = {cb, arg};
    return pgt_ledger_walk(rd->db, st, usage_row, &c, "reading the ledger", err, errlen);
}
