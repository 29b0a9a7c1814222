/* The ledger: one row per metered statement in SQLite (WAL) or in a
 * PostgreSQL database, written by one writer thread fed by a bounded queue,
 * in batched transactions that also keep the daily rollups. The event loop
 * only enqueues and never waits on the database. If the database cannot be
 * written, records wait in memory, then in a spool file, and are replayed
 * when it is back, each exactly once (records carry an id unique per
 * instance and sequence). */
#ifndef PGTALLY_LEDGER_H
#define PGTALLY_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/db.h"

#define PGT_QUERY_STATUS_MAP(X)                                                                    \
    X(OK, "ok")                                                                                    \
    X(ERROR, "error")                                                                              \
    X(CANCELLED, "cancelled")                                                                      \
    X(BUDGET_CANCELLED, "budget_cancelled")                                                        \
    X(REFUSED, "refused")

typedef enum {
#define X(name, str) PGT_QUERY_##name,
    PGT_QUERY_STATUS_MAP(X)
#undef X
} pgt_query_status_t;

const char *pgt_query_status_name(pgt_query_status_t s);

/* Parses a status name ("ok"); returns 0 and sets *out, or -1 when unknown. */
int pgt_query_status_parse(const char *name, pgt_query_status_t *out)
    __attribute__((warn_unused_result));

/* One metered statement. Strings are owned by the record. */
typedef struct pgt_record {
    int64_t started_us;        /* unix time in microseconds the statement was sent upstream */
    int64_t finished_us;       /* unix time in microseconds it completed */
    uint64_t session_id;       /* pgtally session (C-<id>) */
    int32_t backend_pid;       /* server backend pid */
    char *user;                /* PostgreSQL user */
    char *database;            /* database */
    char *application;         /* application_name, or "" */
    char *client_addr;         /* client host:port */
    char *tags_json;           /* sqlcommenter tags as a JSON object, or NULL */
    char *relations;           /* the relations it read and the share of its cost each carries:
                                  a JSON array of [schema, relation, share], shares summing to
                                  1, costliest first ([["analytics","sales",0.8], ...]); from
                                  its plan, else from its parse tree (schema "" where the text
                                  does not qualify the name); NULL when none is known */
    uint64_t fingerprint;      /* statement shape */
    char *normalized;          /* normalized text */
    char *kind;                /* statement kind name ("select") */
    char *protocol;            /* "simple", "extended" or "function" (FunctionCall) */
    double est_planner_cost;   /* planner total cost, or -1 when not explained */
    int64_t est_cost_micro;    /* estimated cost in micro-units, or -1 */
    double compute_s;          /* seconds the upstream was busy with it */
    int64_t rows;              /* rows returned or affected */
    int64_t bytes_out;         /* bytes sent to the client for it */
    int64_t cost_micro;        /* actual cost in micro-units of the currency */
    pgt_query_status_t status; /* how it ended */
    char sqlstate[6];          /* error SQLSTATE, or "" */
    int64_t budget_id;         /* budget that refused or cancelled it, or 0 */
    int64_t rule_id;           /* rule by shape that blocked it, or (log) would have; or 0 */
    uint64_t constants;        /* pgt_fp_constants_hash of its text and Bind parameters: runs
                                  of one shape with the same constants share it; 0: unknown */
    int64_t approval_id;       /* approval it ran under (pgtallyctl ticket approve), or 0 */
    int64_t instance;          /* set by the ledger: the instance that metered it */
    int64_t seq;               /* set by the ledger: its sequence in that instance */
    int32_t day;               /* set by the ledger: pgt_local_day(started_us) */
    uint64_t journal_end;      /* the journal position made free when it is durable, or 0 */
} pgt_record_t;

/* Returns a zeroed record with the "not explained" estimates (-1) and
 * status ok, or NULL when out of memory. Free it with pgt_record_free (or
 * hand it to pgt_ledger_submit). */
pgt_record_t *pgt_record_new(void);

/* Frees a record and its strings. NULL is allowed. */
void pgt_record_free(pgt_record_t *r);

typedef enum { PGT_LEDGER_OPEN, PGT_LEDGER_CLOSED } pgt_ledger_on_failure_t;

/* Where a ledger is: an SQLite file, or a PostgreSQL database and schema. */
typedef struct pgt_ledger_where {
    const char *ledger; /* an SQLite path, or a postgresql:// URI or libpq conninfo */
    const char *schema; /* PostgreSQL: the schema of its tables (NULL: "pgtally") */
} pgt_ledger_where_t;

typedef struct pgt_ledger_opts {
    pgt_ledger_where_t where; /* the ledger */
    const char *spool_path;   /* spool file; NULL means the SQLite path + ".spool" (required
                                 for PostgreSQL) */
    size_t queue_capacity;    /* records queued before more count as overflow (0: 65536) */
    size_t memory_capacity;   /* records held in memory while failing (0 means 100000) */
    int retention_days;       /* delete rows older than this many days; 0 keeps all */
    pgt_ledger_on_failure_t on_failure; /* whether queries run while the ledger fails */
    int busy_timeout_ms;                /* wait for another writer's lock (0 means 2000) */
    int64_t instance;          /* this pgtally process run, written with each record (budgets tell
                                  their own records from other processes' by it); 0: one made from
                                  the time and the process id */
    const char *instance_name; /* the name of this instance, for people (NULL: "") */
} pgt_ledger_opts_t;

typedef struct pgt_ledger pgt_ledger_t;

/* Opens (creating and migrating) the ledger and starts the writer thread.
 * A database that fails for a reason that may pass (permissions, a lock, a
 * missing directory) opens in the failing state, spooling, as long as the
 * spool file can be written. Returns NULL with the cause in err (without the
 * path) when the file is not a database, has a newer schema, or neither it
 * nor the spool can be written. */
pgt_ledger_t *pgt_ledger_open(const pgt_ledger_opts_t *opts, char *err, size_t errlen);

/* Hands a record to the writer; never blocks on disk. Takes ownership. A
 * record without a seq gets the next one of this instance. */
void pgt_ledger_submit(pgt_ledger_t *l, pgt_record_t *r);

/* Hands n records to the writer at once (one lock, one wake-up), in order;
 * NULL entries are skipped. Takes ownership of each. */
void pgt_ledger_submit_many(pgt_ledger_t *l, pgt_record_t **rs, size_t n);

/* The instance id records of this process carry. */
int64_t pgt_ledger_instance(const pgt_ledger_t *l);

/* Reserves n record seqs of this instance (any thread); returns the first. */
int64_t pgt_ledger_reserve_seq(pgt_ledger_t *l, int n);

struct pgt_journal;

/* Tells the writer to move j's done mark as records become durable. */
void pgt_ledger_set_journal(pgt_ledger_t *l, struct pgt_journal *j);

/* The spool file. */
const char *pgt_ledger_spool_path(const pgt_ledger_t *l);

/* Waits up to timeout_ms until every record submitted so far is durable:
 * committed, or written to the spool file. Returns 0, or -1 on timeout. */
int pgt_ledger_sync(pgt_ledger_t *l, int timeout_ms);

/* True while the ledger cannot write and on_failure = closed: the proxy
 * should refuse new statements. */
bool pgt_ledger_refusing(const pgt_ledger_t *l);

/* Counters for logs and benchmarks. */
typedef struct pgt_ledger_stats {
    uint64_t submitted;  /* records handed in */
    uint64_t written;    /* records committed to SQLite */
    uint64_t spooled;    /* records written to the spool file */
    uint64_t batches;    /* transactions committed */
    uint64_t overflowed; /* records that found the queue full (kept, not dropped) */
    uint64_t replayed;   /* records written late, from memory or the spool */
    uint64_t pending;    /* records waiting in memory or in the spool right now */
    uint64_t queued;     /* records in the queue to the writer right now */
    bool failing;        /* last write failed */
} pgt_ledger_stats_t;
void pgt_ledger_stats(pgt_ledger_t *l, pgt_ledger_stats_t *out);

/* Writes everything queued (and spooled, if the database is back), stops
 * the thread and closes. */
void pgt_ledger_close(pgt_ledger_t *l);

/* Direct connections, for the settings tables (budgets, teams, grants)
 * that pgtallyctl changes and a running pgtally reads, and for the report. */

/* Returns the schema version this build writes. */
int pgt_ledger_schema_version(void);

/* Brings db's schema up to version target (0: this build's) in one
 * transaction; another process may migrate the same ledger at the same
 * time. Returns 0, or -1 with the cause in err (also when the schema is
 * newer than this build's). Tests pass an older target to make an SQLite
 * ledger of an earlier release. */
int pgt_ledger_migrate(pgt_db_t *db, int target, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Opens the ledger at w. writable: read-write, creating the SQLite file or
 * the PostgreSQL schema and migrating it to this build's schema. Otherwise
 * for reading only a pgtally ledger no newer than this build (never
 * created). Sets *version to its schema version. Returns the connection,
 * which the caller closes with pgt_db_close, or NULL with the cause
 * (without the path) in err. */
pgt_db_t *pgt_ledger_db_open(const pgt_ledger_where_t *w, bool writable, int *version, char *err,
                             size_t errlen);

/* Reading the ledger (pgtallyctl, reports). A reader has its own read-only
 * connection, so it works beside a running pgtally and never blocks it. */
typedef struct pgt_ledger_reader pgt_ledger_reader_t;

/* Opens the ledger at w for reading. Returns NULL with the cause in err
 * (without the path) when it is missing, is not a pgtally ledger, or has a
 * newer schema than this build. */
pgt_ledger_reader_t *pgt_ledger_reader_open(const pgt_ledger_where_t *w, char *err, size_t errlen);

/* A reader over db, a connection from pgt_ledger_db_open that stays the
 * caller's: pgt_ledger_reader_close leaves it open. For the report, which
 * reads every section in one transaction of its own connection. Returns
 * NULL with the cause in err. */
pgt_ledger_reader_t *pgt_ledger_reader_borrow(pgt_db_t *db, char *err, size_t errlen);

/* Closes a reader. NULL is allowed. */
void pgt_ledger_reader_close(pgt_ledger_reader_t *rd);

#define PGT_LEDGER_ORDER_MAP(X)                                                                    \
    X(TIME, "time")                                                                                \
    X(COST, "cost")

typedef enum {
#define X(name, str) PGT_LEDGER_ORDER_##name,
    PGT_LEDGER_ORDER_MAP(X)
#undef X
} pgt_ledger_order_t;

const char *pgt_ledger_order_name(pgt_ledger_order_t o);
int pgt_ledger_order_parse(const char *name, pgt_ledger_order_t *out)
    __attribute__((warn_unused_result));

/* Which statements pgt_ledger_list returns. */
typedef struct pgt_ledger_filter {
    const char *user;         /* only this user, or NULL for all */
    int64_t since_us;         /* started_at >= since_us (INT64_MIN: no bound) */
    int64_t until_us;         /* started_at < until_us (INT64_MAX: no bound) */
    int64_t limit;            /* at most this many rows; 0 means no limit */
    pgt_ledger_order_t order; /* most recent first, or most expensive first */
} pgt_ledger_filter_t;

/* Called once per row. The record and its strings belong to the reader and
 * are valid until the callback returns. Return 0 to go on; anything else
 * stops the walk and is returned by the caller. */
typedef int (*pgt_ledger_record_cb)(const pgt_record_t *r, void *arg);

/* Walks the statements matching f. Returns 0, the callback's non-zero
 * value, or -1 with a message in err. */
int pgt_ledger_list(pgt_ledger_reader_t *rd, const pgt_ledger_filter_t *f, pgt_ledger_record_cb cb,
                    void *arg, char *err, size_t errlen) __attribute__((warn_unused_result));

#define PGT_USAGE_BY_MAP(X)                                                                        \
    X(USER, "user")                                                                                \
    X(DATABASE, "database")                                                                        \
    X(APPLICATION, "application")                                                                  \
    X(TAG, "tag")                                                                                  \
    X(SCHEMA, "schema")                                                                            \
    X(TABLE, "table")

typedef enum {
#define X(name, str) PGT_USAGE_BY_##name,
    PGT_USAGE_BY_MAP(X)
#undef X
} pgt_usage_by_t;

const char *pgt_usage_by_name(pgt_usage_by_t by);
int pgt_usage_by_parse(const char *name, pgt_usage_by_t *out) __attribute__((warn_unused_result));

/* Spend of one group over a time range. */
typedef struct pgt_usage_row {
    const char *group;    /* the user, database, application or tag value (NULL: no such
                             tag); by schema or table, the schema or "schema.relation" (the
                             relation alone when the schema is "") */
    int64_t statements;   /* statements metered; by schema or table, those that read it */
    double compute_s;     /* upstream compute seconds (by schema or table, their shares) */
    int64_t rows;         /* rows returned or affected (0 by schema or table) */
    int64_t bytes_out;    /* bytes sent to clients (0 by schema or table) */
    int64_t cost_micro;   /* cost in micro-units of the currency (their shares) */
    const char *schema;   /* by schema or table: the schema ("": not qualified), else NULL */
    const char *relation; /* by table: the relation, else NULL */
} pgt_usage_row_t;

/* Called once per group, most expensive first (ties by group name). The
 * row is valid until the callback returns; return as pgt_ledger_record_cb. */
typedef int (*pgt_ledger_usage_cb)(const pgt_usage_row_t *row, void *arg);

/* Sums statements with from_us <= started_at < to_us per group. by TAG
 * groups by the value of tag name in each statement's tags; by SCHEMA and
 * TABLE as pgt_ledger_usage_relations. Returns 0, the callback's non-zero
 * value, or -1 with a message in err. */
int pgt_ledger_usage(pgt_ledger_reader_t *rd, pgt_usage_by_t by, const char *tag, int64_t from_us,
                     int64_t to_us, pgt_ledger_usage_cb cb, void *arg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Sums the statements with from_us <= started_at < to_us that read known
 * relations (queries.relations) per schema (by_table false) or per table,
 * each statement's compute and cost split by its relations' shares as the
 * writer splits them into daily_relations, and a statement counted once
 * per group it read. Most expensive first (ties by schema, then relation).
 * When total is not NULL it gets the sums over those statements, each
 * once (group and schema NULL). A ledger older than schema 9 has none.
 * Returns 0, the callback's non-zero value, or -1 with a message in err. */
int pgt_ledger_usage_relations(pgt_ledger_reader_t *rd, bool by_table, int64_t from_us,
                               int64_t to_us, pgt_ledger_usage_cb cb, void *arg,
                               pgt_usage_row_t *total, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The tables of the local days from pgt_local_day(from_us) to
 * pgt_local_day(to_us - 1), from the daily_relations rollup, most
 * expensive first (ties by schema, then relation), at most limit (0: all):
 * rows as pgt_ledger_usage_relations by table gives them. A ledger older
 * than schema 9 has none. Returns as pgt_ledger_usage. */
int pgt_ledger_tables(pgt_ledger_reader_t *rd, int64_t from_us, int64_t to_us, int64_t limit,
                      pgt_ledger_usage_cb cb, void *arg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Spend of one statement shape over a time range. */
typedef struct pgt_shape_row {
    uint64_t fingerprint;   /* the shape */
    int64_t statements;     /* statements metered */
    double compute_s;       /* upstream compute seconds */
    int64_t cost_micro;     /* cost in micro-units of the currency */
    const char *kind;       /* statement kind ("select"), or NULL */
    const char *normalized; /* normalized text of one of them, or NULL */
} pgt_shape_row_t;

typedef int (*pgt_ledger_shape_cb)(const pgt_shape_row_t *row, void *arg);

/* One (shape, constants) pair run again and again: work done twice. */
typedef struct pgt_repeat_row {
    uint64_t fingerprint;   /* the shape */
    uint64_t constants;     /* the hash of its constants (queries.constants) */
    int64_t runs;           /* how often it ran */
    int64_t users;          /* by how many users */
    int64_t applications;   /* from how many applications */
    int64_t cost_micro;     /* what all the runs cost */
    int64_t repeat_micro;   /* what the runs but the cheapest cost: a cached or
                               materialized result would have saved it */
    const char *who;        /* the users, sorted, separated by ", " */
    const char *normalized; /* the shape's normalized text, or NULL */
} pgt_repeat_row_t;

typedef int (*pgt_ledger_repeat_cb)(const pgt_repeat_row_t *row, void *arg);

/* The SELECTs with from_us <= started_at < to_us that ran to the end with
 * the same shape and constants more than min_runs times, by more than one
 * user or application, most money on repeats first, at most limit (0:
 * all). A ledger older than schema 10 has none. Reads the statements, not
 * a rollup. Returns 0, the callback's non-zero value, or -1 with a
 * message in err. */
int pgt_ledger_repeats(pgt_ledger_reader_t *rd, int64_t from_us, int64_t to_us, int64_t min_runs,
                       int64_t limit, pgt_ledger_repeat_cb cb, void *arg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The local days the regressions per release compare over: the day of
 * the report and the days before it. */
#define PGT_LEDGER_REGRESSION_DAYS 7

/* The tags that name a statement's release, the first present wins:
 * sqlcommenter's release, git_sha and version, then dbt's invocation_id
 * (each dbt run) and dbt_version. */
#define PGT_LEDGER_RELEASE_TAGS "release", "git_sha", "version", "invocation_id", "dbt_version"

/* One shape that got dearer under its newest release: a regression. */
typedef struct pgt_regression_row {
    uint64_t fingerprint;     /* the shape */
    const char *release;      /* the newest release it ran under (by first seen) */
    int64_t first_seen_us;    /* its first statement under that release */
    int64_t statements;       /* its statements under it */
    int64_t mean_micro;       /* their mean cost, rounded to a micro-unit */
    const char *prev_release; /* the release it ran under before that */
    int64_t prev_statements;  /* its statements under that one */
    int64_t prev_mean_micro;  /* their mean cost */
    double ratio;             /* the exact means' ratio, new over previous (>= 2) */
    const char *normalized;   /* the shape's normalized text, or NULL */
} pgt_regression_row_t;

typedef int (*pgt_ledger_regression_cb)(const pgt_regression_row_t *row, void *arg);

/* The shapes whose mean cost under the newest release they ran under is
 * at least twice the mean under the release before (releases in the
 * order they first ran the shape) and above min_mean_micro, over the
 * statements that ran to the end on the local days from
 * pgt_local_day(from_us) to pgt_local_day(to_us - 1) and carry a release
 * tag (PGT_LEDGER_RELEASE_TAGS). A shape whose previous release cost
 * nothing has no ratio and is left out. Largest ratio first (ties by
 * fingerprint), at most limit (0: all). Reads the statements, not a
 * rollup. Returns as pgt_ledger_repeats. */
int pgt_ledger_regressions(pgt_ledger_reader_t *rd, int64_t from_us, int64_t to_us,
                           int64_t min_mean_micro, int64_t limit, pgt_ledger_regression_cb cb,
                           void *arg, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Sums statements with from_us <= started_at < to_us per shape, most
 * expensive first, at most limit shapes. Returns 0, the callback's
 * non-zero value, or -1 with a message in err. */
int pgt_ledger_shapes(pgt_ledger_reader_t *rd, int64_t from_us, int64_t to_us, int64_t limit,
                      pgt_ledger_shape_cb cb, void *arg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* One budget alert sent (the alerts_sent table). */
typedef struct pgt_alert_row {
    int64_t id;              /* row id */
    int64_t budget_id;       /* the budget */
    int64_t period_start_us; /* the budget period it was for */
    int threshold_pct;       /* the threshold crossed, percent */
    const char *channel;     /* where it went ("log", "slack", "email:user=NAME", ...) */
    int64_t sent_us;         /* when the crossing was recorded */
    int64_t delivered_us;    /* when it arrived; -1: not yet */
    int64_t attempts;        /* delivery attempts so far */
    const char *last_error;  /* why the last attempt failed, or NULL */
    const char *message;     /* the text sent (the "log" row's), or NULL */
} pgt_alert_row_t;

typedef int (*pgt_ledger_alert_cb)(const pgt_alert_row_t *row, void *arg);

/* Walks the most recent limit alerts sent, newest first; a ledger without
 * the table has none. Returns 0, the callback's non-zero value, or -1 with
 * a message in err. */
int pgt_ledger_alerts(pgt_ledger_reader_t *rd, int64_t limit, pgt_ledger_alert_cb cb, void *arg,
                      char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
