/* The ledger's schema in both backends, its migrations, and opening a
 * ledger for reading or writing.
 *
 * Since version 5 every record carries an id unique per pgtally instance
 * run and sequence (instance, seq), so that a replay inserts it once, and
 * its local day (pgt_local_day). The writer keeps, in the transaction that
 * inserts the rows:
 * - rollups: sums per local day, instance, user, database, application,
 *   shape and status, which budgets and the report read instead of rows;
 * - spend: the same per day, instance, user, database and application,
 *   with the writer's batch number (rev) of its last change, so that other
 *   instances read what changed since they last looked;
 * - shapes: one normalized text per fingerprint, for the report;
 * - instances: every pgtally run that wrote, its name and its last rev.
 * The indexes that the report and spend no longer need are gone.
 *
 * Since version 9 every record notes the relations it read with the
 * share of its cost each carries (queries.relations, a JSON array of
 * [schema, relation, share]), and the writer keeps daily_relations: per
 * local day, instance, database, user, schema and relation, the records
 * that read it and their compute and cost split by those shares. */
#include "ledger_int.h"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <errno.h>

#include "pgtally/log.h"
#include "pgtally/period.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* The rollup tables, with the integer and real types of a backend and
 * SQLite's WITHOUT ROWID (the key is the table). */
#define ROLLUP_TABLES(INT, REAL, NOROWID)                                                          \
    "CREATE TABLE rollups ("                                                                       \
    " day " INT " NOT NULL,"                                                                       \
    " instance " INT " NOT NULL,"                                                                  \
    " \"user\" TEXT NOT NULL,"                                                                     \
    " database TEXT NOT NULL,"                                                                     \
    " application TEXT NOT NULL,"                                                                  \
    " fingerprint " INT " NOT NULL,"                                                               \
    " status TEXT NOT NULL,"                                                                       \
    " statements " INT " NOT NULL,"                                                                \
    " compute_s " REAL " NOT NULL,"                                                                \
    " rows " INT " NOT NULL,"                                                                      \
    " bytes_out " INT " NOT NULL,"                                                                 \
    " cost_micro " INT " NOT NULL,"                                                                \
    " max_cost_micro " INT " NOT NULL,"                                                            \
    " rev " INT " NOT NULL,"                                                                       \
    " PRIMARY KEY (day, instance, \"user\", database, application, fingerprint, status))" NOROWID  \
    ";"                                                                                            \
    "CREATE TABLE spend ("                                                                         \
    " instance " INT " NOT NULL,"                                                                  \
    " day " INT " NOT NULL,"                                                                       \
    " \"user\" TEXT NOT NULL,"                                                                     \
    " database TEXT NOT NULL,"                                                                     \
    " application TEXT NOT NULL,"                                                                  \
    " cost_micro " INT " NOT NULL,"                                                                \
    " rev " INT " NOT NULL,"                                                                       \
    " PRIMARY KEY (instance, day, \"user\", database, application))" NOROWID ";"                   \
    "CREATE INDEX spend_rev ON spend (instance, rev);"                                             \
    "CREATE TABLE shapes ("                                                                        \
    " fingerprint " INT " PRIMARY KEY,"                                                            \
    " normalized TEXT,"                                                                            \
    " kind TEXT,"                                                                                  \
    " first_day " INT ");"                                                                         \
    "CREATE TABLE instances ("                                                                     \
    " id " INT " PRIMARY KEY,"                                                                     \
    " name TEXT NOT NULL,"                                                                         \
    " started_at " INT " NOT NULL,"                                                                \
    " seen_at " INT " NOT NULL,"                                                                   \
    " rev " INT " NOT NULL);"

/* Migration 9: the relations of each record, and their daily rollup
 * (instance in its key, as in rollups, so that instances sharing a
 * PostgreSQL ledger never wait on each other's rows). */
#define RELATIONS_TABLES(INT, REAL, NOROWID)                                                       \
    "ALTER TABLE queries ADD COLUMN relations TEXT;"                                               \
    "CREATE TABLE daily_relations ("                                                               \
    " day " INT " NOT NULL,"                                                                       \
    " instance " INT " NOT NULL,"                                                                  \
    " database TEXT NOT NULL,"                                                                     \
    " \"user\" TEXT NOT NULL,"                                                                     \
    " schema_name TEXT NOT NULL," /* "": the statement did not qualify the name */                 \
    " relation TEXT NOT NULL,"                                                                     \
    " queries " INT " NOT NULL,"    /* records that read it */                                     \
    " compute_s " REAL " NOT NULL," /* their compute times their shares */                         \
    " cost_micro " INT " NOT NULL," /* their cost, split by their shares */                        \
    " PRIMARY KEY (day, instance, database, \"user\", schema_name, relation))" NOROWID ";"

/* The rules table (pgtallyctl rule), with the type of its id. */
#define RULES_TABLE(ID, INT)                                                                       \
    "CREATE TABLE rules ("                                                                         \
    " id " ID ","                                                                                  \
    " fingerprint TEXT NOT NULL," /* 16 hex digits, as pgtallyctl queries shows it */              \
    " \"user\" TEXT,"             /* NULL: any user */                                             \
    " database TEXT,"             /* NULL: any database */                                         \
    " action TEXT NOT NULL,"      /* block, warn, log */                                           \
    " message TEXT,"              /* NULL: pgtally's own */                                        \
    " until_us " INT ","          /* unix microseconds; NULL: forever */                           \
    " created_us " INT " NOT NULL,"                                                                \
    " created_by TEXT NOT NULL);"

/* Migration 7's columns of alerts_sent, with the integer type of a
 * backend, and the index of the rows not yet delivered. */
#define ALERT_COLUMNS(INT)                                                                         \
    "ALTER TABLE alerts_sent ADD COLUMN message TEXT;"                                             \
    "ALTER TABLE alerts_sent ADD COLUMN delivered_at " INT ";"                                     \
    "ALTER TABLE alerts_sent ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;"                      \
    "ALTER TABLE alerts_sent ADD COLUMN last_error TEXT;"                                          \
    "ALTER TABLE alerts_sent ADD COLUMN last_attempt_at " INT ";"                                  \
    "ALTER TABLE alerts_sent ADD COLUMN claimed_by " INT ";"                                       \
    "ALTER TABLE alerts_sent ADD COLUMN claimed_until " INT ";"                                    \
    "UPDATE alerts_sent SET delivered_at = sent_at;"                                               \
    "CREATE INDEX alerts_sent_pending ON alerts_sent (sent_at) WHERE delivered_at IS NULL;"

/* Migration 8's column of budgets, with the integer type of a backend. */
#define MAX_ROWS_COLUMN(INT) "ALTER TABLE budgets ADD COLUMN max_rows " INT ";"

/* Migration 10's column of queries, with the integer type of a backend. */
#define CONSTANTS_COLUMN(INT) "ALTER TABLE queries ADD COLUMN constants " INT ";"

/* Migration 11: approvals of tickets (pgtallyctl ticket approve, docs/escrow.md),
 * with the type of its id and of integers, and the approval each record ran
 * under. fingerprint and constants are stored as queries stores them (the
 * 64 bits as a signed integer); constants 0 approves the whole shape (a
 * constants hash is never 0). */
#define APPROVALS_TABLE(ID, INT)                                                                   \
    "CREATE TABLE approvals ("                                                                     \
    " id " ID ","                                                                                  \
    " ticket TEXT NOT NULL,"                                                                       \
    " \"user\" TEXT NOT NULL,"                                                                     \
    " database TEXT NOT NULL,"                                                                     \
    " fingerprint " INT " NOT NULL,"                                                               \
    " constants " INT ","                                                                          \
    " max_micro " INT "," /* the cap of one run under it; NULL: none */                            \
    " until_us " INT " NOT NULL,"                                                                  \
    " created_us " INT " NOT NULL,"                                                                \
    " created_by TEXT NOT NULL);"                                                                  \
    "ALTER TABLE queries ADD COLUMN approval_id " INT ";"

/* The triggers that bump settings_version on every change of a table. */
#define SETTINGS_TRIGGER(table, op)                                                                \
    "CREATE TRIGGER " table "_" op "_version AFTER " op " ON " table                               \
    " BEGIN UPDATE settings_version SET version = version + 1 WHERE id = 1; END;"
#define SETTINGS_TRIGGERS(table)                                                                   \
    SETTINGS_TRIGGER(table, "INSERT")                                                              \
    SETTINGS_TRIGGER(table, "UPDATE") SETTINGS_TRIGGER(table, "DELETE")

/* migrations[i] takes the schema from version i to i + 1 (PRAGMA
 * user_version). Never edit one that has shipped: append a new one. */
static const char *const sqlite_migrations[] = {
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
    /* 5: rollups, record ids, and lighter rows (see the top of this file).
     * The day columns are filled by pgt_local_day, which the migration
     * registers on its connection. */
    "ALTER TABLE queries ADD COLUMN seq INTEGER;"
    "ALTER TABLE queries ADD COLUMN day INTEGER;"
    "UPDATE queries SET day = pgt_local_day(started_at);"
    "CREATE UNIQUE INDEX queries_record ON queries (instance, seq);"
    "CREATE INDEX queries_day_cost ON queries (day, cost_micro);"
    "CREATE INDEX queries_started ON queries (started_at);"
    "CREATE INDEX queries_day_budget ON queries (day, budget_id) WHERE budget_id IS NOT NULL;"
    "DROP INDEX queries_started_report;"
    "DROP INDEX queries_user_started_cost;"
    "DROP INDEX queries_fingerprint_started;" ROLLUP_TABLES(
        "INTEGER", "REAL",
        " WITHOUT ROWID") "INSERT INTO rollups SELECT day, coalesce(instance, 0), \"user\", "
                          "database, application,"
                          " coalesce(fingerprint, 0), status, count(*), total(compute_s), "
                          "sum(rows), sum(bytes_out),"
                          " sum(cost_micro), max(cost_micro), 0 FROM queries GROUP BY 1, 2, 3, 4, "
                          "5, 6, 7;"
                          "INSERT INTO spend SELECT coalesce(instance, 0), day, \"user\", "
                          "database, application,"
                          " sum(cost_micro), 0 FROM queries GROUP BY 1, 2, 3, 4, 5;"
                          "INSERT INTO shapes SELECT fingerprint, min(normalized), min(kind), "
                          "min(day) FROM queries"
                          " WHERE fingerprint IS NOT NULL GROUP BY fingerprint;",
    /* 6: rules by statement shape (pgtallyctl rule), loaded with budgets:
     * a change bumps settings_version. A statement a rule blocked, or one a
     * log rule would have blocked, carries the rule's id (rule_id). */
    RULES_TABLE("INTEGER PRIMARY KEY", "INTEGER")
    /* clang-format off */
    SETTINGS_TRIGGERS("rules")
    /* clang-format on */
    "ALTER TABLE queries ADD COLUMN rule_id INTEGER;",
    /* 7: alerts that reach people. A row of alerts_sent per (budget,
     * period, threshold) with channel "log" (or "log:user=NAME") is the
     * crossing itself, recorded by the process whose insert lands, with the
     * text sent (message); each delivery channel gets a row of its own
     * ("slack", "email:user=NAME", ...), claimed by the sender (who, until
     * when) as reports_sent's are, and delivered_at once it arrived.
     * sent_at stays the time the crossing was recorded. */
    ALERT_COLUMNS("INTEGER"),
    /* 8: a budget's limit on the estimated rows of any plan node of one
     * statement (pgtallyctl budget set --max-rows; NULL: none), for the
     * runaway-join guard. A budget may now have no money limit:
     * limit_micro is then -1 (PGT_BUDGET_NO_LIMIT). */
    MAX_ROWS_COLUMN("INTEGER"),
    /* 9: cost by schema and table (see the top of this file). */
    RELATIONS_TABLES("INTEGER", "REAL", " WITHOUT ROWID"),
    /* 10: the hash of each record's constants (pgt_fp_constants_hash; NULL:
     * unknown), for work done twice and escrow (docs/escrow.md). */
    CONSTANTS_COLUMN("INTEGER"),
    /* 11: approvals of refused statements' tickets, loaded with budgets
     * and rules (a change bumps settings_version), and the approval each
     * statement ran under (approval_id). */
    APPROVALS_TABLE("INTEGER PRIMARY KEY", "INTEGER")
    /* clang-format off */
    SETTINGS_TRIGGERS("approvals"),
    /* clang-format on */
};

#define SCHEMA_VERSION ((int)NELEMS(sqlite_migrations))

/* The PostgreSQL schema starts at version 5, the SQLite schema of the same
 * release, in one step; later versions add a step to both lists. The
 * queries table is partitioned by local day (ledger_pg.c creates the
 * partitions and drops old ones); every change of budgets, teams or grants
 * bumps settings_version and sends NOTIFY pgtally_settings. */
#define PG_BASE_VERSION 5
static const char *const pg_migrations[] = {
    "CREATE TABLE queries ("
    " instance BIGINT NOT NULL,"
    " seq BIGINT NOT NULL,"
    " day INTEGER NOT NULL,"
    " started_at BIGINT NOT NULL,"
    " finished_at BIGINT NOT NULL,"
    " session_id BIGINT,"
    " backend_pid INTEGER,"
    " \"user\" TEXT NOT NULL,"
    " database TEXT NOT NULL,"
    " application TEXT NOT NULL DEFAULT '',"
    " client_addr TEXT,"
    " tags TEXT,"
    " fingerprint BIGINT,"
    " normalized TEXT,"
    " kind TEXT,"
    " protocol TEXT,"
    " est_planner_cost DOUBLE PRECISION,"
    " est_cost_micro BIGINT,"
    " compute_s DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " rows BIGINT NOT NULL DEFAULT 0,"
    " bytes_out BIGINT NOT NULL DEFAULT 0,"
    " cost_micro BIGINT NOT NULL DEFAULT 0,"
    " status TEXT NOT NULL,"
    " sqlstate TEXT,"
    " budget_id BIGINT,"
    " PRIMARY KEY (day, instance, seq)"
    ") PARTITION BY RANGE (day);"
    "CREATE INDEX queries_day_cost ON queries (day, cost_micro);"
    "CREATE INDEX queries_started ON queries (started_at);"
    "CREATE INDEX queries_day_budget ON queries (day, budget_id) WHERE budget_id IS NOT "
    "NULL;" ROLLUP_TABLES(
        "BIGINT", "DOUBLE PRECISION",
        "") "CREATE TABLE budgets ("
            " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            " subject_type TEXT NOT NULL,"
            " subject TEXT NOT NULL,"
            " period TEXT NOT NULL,"
            " limit_micro BIGINT NOT NULL,"
            " warn_pcts TEXT NOT NULL DEFAULT '[80,100]',"
            " action TEXT NOT NULL DEFAULT 'refuse',"
            " per_query_micro BIGINT,"
            " created_at BIGINT NOT NULL,"
            " UNIQUE (subject_type, subject, period));"
            "CREATE TABLE teams ("
            " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            " name TEXT NOT NULL UNIQUE,"
            " created_at BIGINT NOT NULL);"
            "CREATE TABLE team_members ("
            " team_id BIGINT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,"
            " \"user\" TEXT NOT NULL,"
            " PRIMARY KEY (team_id, \"user\"));"
            "CREATE TABLE alerts_sent ("
            " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            " budget_id BIGINT NOT NULL,"
            " period_start BIGINT NOT NULL,"
            " threshold_pct INTEGER NOT NULL,"
            " channel TEXT NOT NULL,"
            " sent_at BIGINT NOT NULL,"
            " UNIQUE (budget_id, period_start, threshold_pct, channel));"
            "CREATE TABLE reports_sent ("
            " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            " report_date TEXT NOT NULL,"
            " channel TEXT NOT NULL,"
            " sent_at BIGINT,"
            " attempts INTEGER NOT NULL DEFAULT 0,"
            " last_error TEXT,"
            " claimed_by BIGINT,"
            " claimed_until BIGINT,"
            " last_attempt_at BIGINT,"
            " UNIQUE (report_date, channel));"
            "CREATE TABLE budget_grants ("
            " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            " \"user\" TEXT NOT NULL,"
            " amount_micro BIGINT NOT NULL,"
            " granted_at BIGINT NOT NULL,"
            " until_us BIGINT);"
            "CREATE TABLE role_members ("
            " role TEXT NOT NULL,"
            " \"user\" TEXT NOT NULL,"
            " refreshed_at BIGINT NOT NULL,"
            " PRIMARY KEY (role, \"user\"));"
            "CREATE TABLE settings_version ("
            " id INTEGER PRIMARY KEY CHECK (id = 1),"
            " version BIGINT NOT NULL);"
            "INSERT INTO settings_version VALUES (1, 0);"
            "CREATE FUNCTION settings_changed() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN UPDATE settings_version SET version = version + 1 WHERE id = 1;"
            " PERFORM pg_notify('pgtally_settings', ''); RETURN NULL; END $$;"
            "CREATE TRIGGER budgets_version AFTER INSERT OR UPDATE OR DELETE ON budgets"
            " FOR EACH STATEMENT EXECUTE FUNCTION settings_changed();"
            "CREATE TRIGGER teams_version AFTER INSERT OR UPDATE OR DELETE ON teams"
            " FOR EACH STATEMENT EXECUTE FUNCTION settings_changed();"
            "CREATE TRIGGER team_members_version AFTER INSERT OR UPDATE OR DELETE ON team_members"
            " FOR EACH STATEMENT EXECUTE FUNCTION settings_changed();"
            "CREATE TRIGGER budget_grants_version AFTER INSERT OR UPDATE OR DELETE ON budget_grants"
            " FOR EACH STATEMENT EXECUTE FUNCTION settings_changed();"
            "CREATE FUNCTION tag_value(tags TEXT, name TEXT) RETURNS TEXT LANGUAGE plpgsql "
            "IMMUTABLE AS $$"
            " BEGIN RETURN tags::jsonb ->> name; EXCEPTION WHEN others THEN RETURN NULL; END $$;"
            "CREATE TABLE schema_version (version INTEGER NOT NULL);"
            "INSERT INTO schema_version VALUES (0);",
    /* 6: rules (see the SQLite list). */
    /* clang-format off */
    RULES_TABLE("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "BIGINT")
    "CREATE TRIGGER rules_version AFTER INSERT OR UPDATE OR DELETE ON rules"
    " FOR EACH STATEMENT EXECUTE FUNCTION settings_changed();"
    "ALTER TABLE queries ADD COLUMN rule_id BIGINT;",
    /* clang-format on */
    /* 7: alerts delivered to Slack and e-mail (see the SQLite list). */
    ALERT_COLUMNS("BIGINT"),
    /* 8: budgets' --max-rows (see the SQLite list). */
    MAX_ROWS_COLUMN("BIGINT"),
    /* 9: cost by schema and table (see the SQLite list). */
    RELATIONS_TABLES("BIGINT", "DOUBLE PRECISION", ""),
    /* 10: constants hashes (see the SQLite list). */
    CONSTANTS_COLUMN("BIGINT"),
    /* 11: approvals (see the SQLite list). */
    /* clang-format off */
    APPROVALS_TABLE("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "BIGINT")
    "CREATE TRIGGER approvals_version AFTER INSERT OR UPDATE OR DELETE ON approvals"
    " FOR EACH STATEMENT EXECUTE FUNCTION settings_changed();",
    /* clang-format on */
};

/* ---- Versions ------------------------------------------------------------ */

int pgt_ledger_schema_version(void)
{
    return SCHEMA_VERSION;
}

/* pgt_local_day for SQL: the migration to 5 fills the day columns. */
static void local_day_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    sqlite3_result_int(ctx, pgt_local_day(sqlite3_value_int64(argv[0])));
}

static int version_row(const pgt_db_row_t *r, void *arg)
{
    *(int *)arg = (int)pgt_db_int(r, 0);
    return 0;
}

int ledger_schema_version_of(pgt_db_t *db, int *v, char *err, size_t errlen)
{
    *v = 0;
    if (pgt_db_backend(db) == PGT_DB_SQLITE)
        return pgt_db_run(db, "reading the schema version", err, errlen, version_row, v,
                          "PRAGMA user_version", "");
    if (!pgt_db_has_table(db, "schema_version"))
        return 0;
    return pgt_db_run(db, "reading the schema version", err, errlen, version_row, v,
                      "SELECT version FROM schema_version", "");
}

static int write_version(pgt_db_t *db, int v, char *err, size_t errlen)
{
    char sql[64];
    if (pgt_db_backend(db) == PGT_DB_SQLITE)
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v);
    else
        snprintf(sql, sizeof(sql), "UPDATE schema_version SET version = %d", v);
    return pgt_db_exec(db, "writing the schema version", sql, err, errlen);
}

/* Runs the steps from version v to target. */
static int run_steps(pgt_db_t *db, int v, int target, char *err, size_t errlen)
{
    if (pgt_db_backend(db) == PGT_DB_SQLITE) {
        sqlite3 *lite = pgt_db_handle(db);
        if (sqlite3_create_function(lite, "pgt_local_day", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                    NULL, local_day_fn, NULL, NULL) != SQLITE_OK) {
            snprintf(err, errlen, "migrating the schema: %s", sqlite3_errmsg(lite));
            return -1;
        }
        for (; v < target; v++)
            if (pgt_db_exec(db, "migrating the schema", sqlite_migrations[v], err, errlen) != 0)
                return -1;
        return 0;
    }
    if (v < PG_BASE_VERSION) {
        if (v != 0) {
            snprintf(err, errlen, "migrating the schema: version %d cannot be upgraded", v);
            return -1;
        }
        if (pgt_db_exec(db, "creating the schema", pg_migrations[0], err, errlen) != 0)
            return -1;
        v = PG_BASE_VERSION;
    }
    for (; v < target; v++)
        if (pgt_db_exec(db, "migrating the schema", pg_migrations[v - PG_BASE_VERSION + 1], err,
                        errlen) != 0)
            return -1;
    return 0;
}

/* Brings the schema to version target in one transaction, rechecking the
 * version under a lock since another process may migrate too (SQLite's
 * write lock; a PostgreSQL advisory lock). Sets *newer when the database
 * comes from a newer pgtally, and *from to the version found. */
static int migrate(pgt_db_t *db, int target, bool *newer, int *from, char *err, size_t errlen)
{
    int v = 0;
    if (ledger_schema_version_of(db, &v, err, errlen) != 0)
        return -1;
    *from = v;
    if (v == target)
        return 0;
    if (pgt_db_begin(db, true, err, errlen) != 0)
        return -1;
    int rc = 0;
    if (pgt_db_backend(db) == PGT_DB_POSTGRESQL)
        rc = pgt_db_exec(db, "locking the schema",
                         "SELECT pg_advisory_xact_lock(hashtext(current_schema()))", err, errlen);
    if (rc == 0)
        rc = ledger_schema_version_of(db, &v, err, errlen);
    *from = v;
    if (rc == 0 && v > SCHEMA_VERSION) {
        *newer = true;
        snprintf(err, errlen, "ledger schema version %d is newer than this build's %d", v,
                 SCHEMA_VERSION);
        rc = -1;
    }
    if (rc == 0 && v < target)
        rc = run_steps(db, v, target, err, errlen);
    if (rc == 0 && v < target)
        rc = write_version(db, target, err, errlen);
    return pgt_db_finish(db, rc, err, errlen);
}

int pgt_ledger_migrate(pgt_db_t *db, int target, char *err, size_t errlen)
{
    bool newer = false;
    int from;
    if (target <= 0 || target > SCHEMA_VERSION)
        target = SCHEMA_VERSION;
    if (pgt_db_backend(db) == PGT_DB_POSTGRESQL && target < PG_BASE_VERSION)
        target = PG_BASE_VERSION;
    return migrate(db, target, &newer, &from, err, errlen);
}

/* ---- Opening --------------------------------------------------------------- */

/* Sets the pragmas of a read-write SQLite connection: WAL (persistent in
 * the file) and synchronous=NORMAL (durable at each checkpoint, safe in
 * WAL). */
static int rw_pragmas(pgt_db_t *db, char *err, size_t errlen)
{
    if (sqlite3_db_readonly(pgt_db_handle(db), "main") == 1) {
        snprintf(err, errlen, "opening: the ledger file is read-only");
        return -1;
    }
    return pgt_db_exec(db, "setting WAL mode", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
                       err, errlen);
}

/* Checks that an SQLite ledger to be read exists as a regular file. */
static int check_file(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "not a regular file");
        return -1;
    }
    return 0;
}

/* Whether a PostgreSQL ledger that failed to connect with err will never
 * work as configured: a conninfo that does not parse, or a server that
 * answered with a refusal (a wrong password, no such database or role)
 * rather than being down, starting or full. */
static bool pg_never_works(const char *ledger, const char *err)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(ledger, &perr);
    PQconninfoFree(opts);
    PQfreemem(perr);
    if (!opts)
        return true;
    static const char *const passing[] = {
        "starting up",       "shutting down", "too many", "recovery", "remaining connection slots",
        "not yet accepting", "not accepting"};
    if (!strstr(err, "FATAL:"))
        return false;
    for (size_t i = 0; i < NELEMS(passing); i++)
        if (strstr(err, passing[i]))
            return false;
    return true;
}

pgt_db_t *ledger_schema_open(const pgt_ledger_where_t *w, bool writable, int busy_ms, bool nomutex,
                             int *version, bool *fatal, char *err, size_t errlen)
{
    bool lite = pgt_db_backend_of(w->ledger) == PGT_DB_SQLITE;
    *fatal = false;
    if (lite && !writable && check_file(w->ledger, err, errlen) != 0)
        return NULL;
    pgt_db_opts_t o = {.ledger = w->ledger,
                       .schema = w->schema,
                       .writable = writable,
                       .busy_timeout_ms = busy_ms,
                       .nomutex = nomutex};
    pgt_db_t *db = pgt_db_open(&o, err, errlen);
    if (!db) {
        *fatal = !lite && pg_never_works(w->ledger, err);
        return NULL;
    }
    int v = 0, rc = 0;
    bool newer = false;
    if (writable && lite)
        rc = rw_pragmas(db, err, errlen);
    if (rc == 0 && writable)
        rc = migrate(db, SCHEMA_VERSION, &newer, &v, err, errlen);
    if (rc == 0 && writable && v != SCHEMA_VERSION)
        PGT_INFO("ledger_migrated", "from=%d to=%d", v, SCHEMA_VERSION);
    if (rc == 0) {
        rc = ledger_schema_version_of(db, &v, err, errlen);
        if (rc == 0 && v == 0) {
            snprintf(err, errlen, "not a pgtally ledger (no schema)");
            rc = -1;
        } else if (rc == 0 && v > SCHEMA_VERSION) {
            snprintf(err, errlen, "schema version %d is newer than this build's %d", v,
                     SCHEMA_VERSION);
            newer = true;
            rc = -1;
        }
    }
    if (rc != 0) {
        if (lite) {
            int code = sqlite3_errcode(pgt_db_handle(db));
            *fatal = newer || code == SQLITE_NOTADB || code == SQLITE_CORRUPT;
        } else {
            *fatal = newer;
        }
        pgt_db_close(db);
        return NULL;
    }
    *version = v;
    return db;
}

pgt_db_t *pgt_ledger_db_open(const pgt_ledger_where_t *w, bool writable, int *version, char *err,
                             size_t errlen)
{
    bool fatal;
    return ledger_schema_open(w, writable, LEDGER_BUSY_TIMEOUT_MS, false, version, &fatal, err,
                              errlen);
}
