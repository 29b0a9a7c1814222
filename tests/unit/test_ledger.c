/* Unit tests of the ledger: records reach SQLite, and nothing is lost or
 * written twice when the database fails (missing directory, read-only file,
 * another writer's lock), across a restart, or with a damaged spool. Also
 * migrations, retention, and the reader API used by pgtallyctl. */
#include <ftw.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pgtally/ledger.h"
#include "pgtally/period.h"
#include "task.h"

#define DAY_US 86400000000LL

static char tmpdir[64];

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static const char *tmp_path(const char *name)
{
    static char bufs[4][256];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof(bufs[0]), "%s/%s", tmpdir, name);
    return b;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    chmod(path, 0700);
    return remove(path);
}

static void rm_rf(const char *path)
{
    chmod(path, 0700);
    nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* A record numbered i: session_id = i makes duplicates countable. */
static pgt_record_t *make_record(uint64_t i, const char *user, int64_t started_us)
{
    pgt_record_t *r = pgt_record_new();
    r->started_us = started_us;
    r->finished_us = started_us + 1500;
    r->session_id = i;
    r->backend_pid = 4242;
    r->user = strdup(user);
    r->database = strdup(i % 2 ? "shop" : "analytics");
    r->application = strdup(i % 3 ? "psql" : "");
    r->client_addr = strdup("127.0.0.1:5000");
    r->tags_json = strdup(i % 2 ? "{\"team\":\"growth\"}" : "{\"team\":\"core\",\"n\":1}");
    r->fingerprint = 0xfedcba9876543210ull + i;
    r->normalized = strdup("SELECT * FROM t WHERE id = $1");
    r->kind = strdup("select");
    r->protocol = strdup("simple");
    r->compute_s = 0.001 * (double)(i % 100);
    r->rows = (int64_t)(i % 10);
    r->bytes_out = 100;
    r->cost_micro = (int64_t)(i % 7);
    return r;
}

static sqlite3 *db_open(const char *path)
{
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

/* Returns the integer of the first row of sql, or -1. */
static int64_t db_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
        return -1;
    }
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int64_t file_int(const char *path, const char *sql)
{
    sqlite3 *db = db_open(path);
    int64_t v = db_int(db, sql);
    sqlite3_close(db);
    return v;
}

/* Rows, and distinct record numbers among them (equal: no duplicates). */
static void check_rows(const char *path, int64_t want)
{
    CHECK_INT(file_int(path, "SELECT count(*) FROM queries"), want);
    CHECK_INT(file_int(path, "SELECT count(DISTINCT session_id) FROM queries"), want);
}

/* Polls the stats until written reaches want, for up to 10 s. */
static void wait_written(pgt_ledger_t *l, uint64_t want)
{
    pgt_ledger_stats_t s;
    for (int i = 0; i < 1000; i++) {
        pgt_ledger_stats(l, &s);
        if (s.written >= want)
            return;
        usleep(10000);
    }
    CHECK_INT(s.written, want);
}

static void wait_failing(pgt_ledger_t *l, bool want)
{
    pgt_ledger_stats_t s;
    for (int i = 0; i < 500; i++) {
        pgt_ledger_stats(l, &s);
        if (s.failing == want)
            return;
        usleep(10000);
    }
    CHECK_INT(s.failing, want);
}

static pgt_ledger_t *open_ledger(pgt_ledger_opts_t *o)
{
    char err[512] = "";
    pgt_ledger_t *l = pgt_ledger_open(o, err, sizeof(err));
    if (!l)
        fprintf(stderr, "pgt_ledger_open: %s\n", err);
    CHECK(l != NULL);
    return l;
}

static void submit_range(pgt_ledger_t *l, uint64_t from, uint64_t to, int64_t started)
{
    for (uint64_t i = from; i < to; i++)
        pgt_ledger_submit(l, make_record(i, i % 2 ? "alice" : "bob", started + (int64_t)i));
}

static void test_basic(void)
{
    const char *path = tmp_path("basic.db");
    pgt_ledger_opts_t o = {.where = {.ledger = path}};
    pgt_ledger_t *l = open_ledger(&o);
    submit_range(l, 0, 10000, now_us());
    pgt_record_t *odd = pgt_record_new();
    odd->session_id = 10000;
    odd->fingerprint = UINT64_MAX;
    odd->status = PGT_QUERY_BUDGET_CANCELLED;
    memcpy(odd->sqlstate, "57014", 6);
    pgt_ledger_submit(l, odd); /* NULL strings must not break the insert */
    CHECK(!pgt_ledger_refusing(l));
    pgt_ledger_close(l);
    check_rows(path, 10001);
    CHECK_INT(file_int(path, "PRAGMA user_version"), pgt_ledger_schema_version());
    sqlite3 *db = db_open(path);
    CHECK_INT(db_int(db, "SELECT fingerprint = -1 AND status = 'budget_cancelled' AND "
                         "sqlstate = '57014' AND \"user\" = '' AND est_planner_cost IS NULL "
                         "FROM queries WHERE session_id = 10000"),
              1);
    CHECK_INT(db_int(db, "SELECT count(*) FROM queries WHERE session_id = 7 AND "
                         "\"user\" = 'alice' AND database = 'shop' AND application = 'psql' "
                         "AND kind = 'select' AND rows = 7 AND cost_micro = 0 AND "
                         "json_extract(tags, '$.team') = 'growth' AND sqlstate IS NULL"),
              1);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
    CHECK_INT(sqlite3_step(st), SQLITE_ROW);
    CHECK_STR((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    CHECK_INT(db_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                         "('budgets','teams','team_members','alerts_sent','reports_sent')"),
              5);
    sqlite3_close(db);
}

static void test_migrations(void)
{
    /* An empty file is migrated to the current schema. */
    const char *path = tmp_path("empty.db");
    fclose(fopen(path, "w"));
    pgt_ledger_opts_t o = {.where = {.ledger = path}};
    pgt_ledger_t *l = open_ledger(&o);
    pgt_ledger_close(l);
    CHECK_INT(file_int(path, "PRAGMA user_version"), pgt_ledger_schema_version());
    CHECK_INT(file_int(path, "SELECT count(*) FROM queries"), 0);
    /* Opening again is a no-op. */
    pgt_ledger_close(open_ledger(&o));
    /* A newer schema, or a file that is not a database, is refused. */
    sqlite3 *db = db_open(path);
    sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
    sqlite3_close(db);
    char err[512] = "";
    CHECK(pgt_ledger_open(&o, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "newer") != NULL);
    CHECK(pgt_ledger_reader_open(&(pgt_ledger_where_t){path, NULL}, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "newer") != NULL);
    const char *junk = tmp_path("junk.db");
    FILE *f = fopen(junk, "w");
    fputs("this is not a database, not at all; it is long enough to have a header", f);
    fclose(f);
    o.where.ledger = junk;
    CHECK(pgt_ledger_open(&o, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "not a database") != NULL);
    CHECK(pgt_ledger_reader_open(&(pgt_ledger_where_t){tmp_path("nonexistent.db"), NULL}, err,
                                 sizeof(err)) == NULL);
    CHECK(strstr(err, "No such file") != NULL);
}

/* A ledger of the first release (schema 1) is upgraded in place when
 * pgtally opens it: its statements stay, the budget tables, the settings
 * version and its triggers, and the new columns of queries appear. */
static void test_upgrade_from_1(void)
{
    const char *path = tmp_path("v1.db");
    char err[512] = "";
    pgt_db_t *pdb =
        pgt_db_open(&(pgt_db_opts_t){.ledger = path, .writable = true}, err, sizeof(err));
    CHECK(pdb != NULL);
    CHECK_INT(pgt_ledger_migrate(pdb, 1, err, sizeof(err)), 0);
    pgt_db_close(pdb);
    sqlite3 *db = db_open(path);
    CHECK_INT(db_int(db, "PRAGMA user_version"), 1);
    CHECK_INT(db_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'budget_grants'"), 0);
    sqlite3_exec(db,
                 "INSERT INTO queries (started_at, finished_at, \"user\", database, status, "
                 "cost_micro) VALUES (1, 2, 'alice', 'shop', 'ok', 42);"
                 "INSERT INTO budgets (subject_type, subject, period, limit_micro, created_at) "
                 "VALUES ('user', 'alice', 'day', 5000000, 1);",
                 NULL, NULL, NULL);
    sqlite3_close(db);

    pgt_ledger_opts_t o = {.where = {.ledger = path}};
    pgt_ledger_t *l = open_ledger(&o);
    pgt_ledger_submit(l, make_record(7, "bob", now_us()));
    wait_written(l, 1);
    pgt_ledger_close(l);
    CHECK_INT(file_int(path, "PRAGMA user_version"), pgt_ledger_schema_version());
    CHECK_INT(file_int(path, "SELECT count(*) FROM queries"), 2);
    CHECK_INT(file_int(path, "SELECT cost_micro FROM queries WHERE \"user\" = 'alice'"), 42);
    /* The new columns exist; the old row has neither. */
    CHECK_INT(file_int(path, "SELECT count(*) FROM queries WHERE \"user\" = 'alice' AND "
                             "budget_id IS NULL AND instance IS NULL"),
              1);
    CHECK_INT(file_int(path, "SELECT count(*) FROM budgets"), 1);
    db = db_open(path);
    CHECK_INT(db_int(db, "SELECT version FROM settings_version"), 0);
    static const char *const changes[] = {
        "UPDATE budgets SET limit_micro = 1",
        "INSERT INTO teams (name, created_at) VALUES ('data', 1)",
        "INSERT INTO team_members VALUES (1, 'alice')",
        "INSERT INTO budget_grants (\"user\", amount_micro, granted_at) VALUES ('a', 1, 1)",
        "DELETE FROM budget_grants",
        "DELETE FROM team_members",
        "UPDATE teams SET name = 'ops'",
        "DELETE FROM budgets",
    };
    for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
        CHECK_INT(sqlite3_exec(db, changes[i], NULL, NULL, NULL), SQLITE_OK);
        CHECK_INT(db_int(db, "SELECT version FROM settings_version"), (int64_t)i + 1);
    }
    /* role_members is pgtally's own cache, not a setting: no bump. */
    sqlite3_exec(db, "INSERT INTO role_members VALUES ('r', 'u', 1)", NULL, NULL, NULL);
    CHECK_INT(db_int(db, "SELECT version FROM settings_version"), 8);
    sqlite3_close(db);
    /* Opening again is a no-op. */
    pgt_ledger_close(open_ledger(&o));
    CHECK_INT(file_int(path, "SELECT version FROM settings_version"), 8);
}

/* A ledger of schema 6 is upgraded to 7: the alerts it recorded (log rows)
 * count as delivered when they were recorded, and the new columns of
 * delivery (message, attempts, claims) appear, empty. */
static void test_upgrade_from_6(void)
{
    const char *path = tmp_path("v6.db");
    char err[512] = "";
    pgt_db_t *pdb =
        pgt_db_open(&(pgt_db_opts_t){.ledger = path, .writable = true}, err, sizeof(err));
    CHECK(pdb != NULL);
    CHECK_INT(pgt_ledger_migrate(pdb, 6, err, sizeof(err)), 0);
    pgt_db_close(pdb);
    sqlite3 *db = db_open(path);
    CHECK_INT(db_int(db, "PRAGMA user_version"), 6);
    CHECK_INT(sqlite3_exec(db,
                           "INSERT INTO alerts_sent (budget_id, period_start, threshold_pct, "
                           "channel, sent_at) VALUES (3, 100, 80, 'log', 12345)",
                           NULL, NULL, NULL),
              SQLITE_OK);
    sqlite3_close(db);
    pgt_ledger_opts_t o = {.where = {.ledger = path}};
    pgt_ledger_close(open_ledger(&o));
    CHECK_INT(file_int(path, "PRAGMA user_version"), pgt_ledger_schema_version());
    CHECK_INT(file_int(path, "SELECT delivered_at FROM alerts_sent WHERE budget_id = 3"), 12345);
    CHECK_INT(file_int(path, "SELECT count(*) FROM alerts_sent WHERE attempts = 0 AND "
                             "message IS NULL AND claimed_by IS NULL AND last_error IS NULL"),
              1);
    CHECK_INT(file_int(path, "SELECT count(*) FROM sqlite_master WHERE name = "
                             "'alerts_sent_pending'"),
              1);
}

/* The database's directory is missing at first: records wait in memory,
 * then in the spool; once the directory exists, they are all written once. */
static void test_missing_directory(void)
{
    const char *path = tmp_path("later/ledger.db");
    const char *spool = tmp_path("later.spool");
    pgt_ledger_opts_t o = {.where = {.ledger = path},
                           .spool_path = spool,
                           .memory_capacity = 100,
                           .on_failure = PGT_LEDGER_CLOSED};
    pgt_ledger_t *l = open_ledger(&o);
    CHECK(pgt_ledger_refusing(l));
    submit_range(l, 0, 550, now_us());
    /* Past 100 held, all that is held goes to the spool at once; what
     * arrives after that stays in memory, so at least 550 - 100 are spooled. */
    pgt_ledger_stats_t s;
    for (int i = 0; i < 500; i++) {
        pgt_ledger_stats(l, &s);
        if (s.spooled >= 450)
            break;
        usleep(10000);
    }
    CHECK(s.spooled >= 450);
    CHECK_INT(s.written, 0);
    CHECK_INT(s.pending, 550);
    CHECK(s.failing);
    CHECK_INT(mkdir(tmp_path("later"), 0700), 0);
    wait_written(l, 550);
    CHECK(!pgt_ledger_refusing(l));
    pgt_ledger_stats(l, &s);
    CHECK_INT(s.pending, 0);
    CHECK_INT(s.replayed, 550);
    submit_range(l, 550, 600, now_us());
    pgt_ledger_close(l);
    check_rows(path, 600);
    struct stat st;
    CHECK(stat(spool, &st) != 0 || st.st_size == 0);
}

/* Another connection holds the write lock longer than the busy timeout. */
static void test_locked(void)
{
    const char *path = tmp_path("locked.db");
    pgt_ledger_opts_t o = {
        .where = {.ledger = path}, .memory_capacity = 100, .busy_timeout_ms = 50};
    pgt_ledger_t *l = open_ledger(&o);
    submit_range(l, 0, 10, now_us());
    wait_written(l, 10);
    sqlite3 *other = db_open(path);
    CHECK_INT(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    submit_range(l, 10, 400, now_us());
    wait_failing(l, true);
    CHECK(!pgt_ledger_refusing(l)); /* on_failure = open */
    usleep(200000);
    submit_range(l, 400, 500, now_us());
    CHECK_INT(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    wait_written(l, 500);
    wait_failing(l, false);
    pgt_ledger_close(l);
    check_rows(path, 500);
}

/* Closed while failing: everything goes to the spool, which the next open
 * replays, skipping a damaged line and a torn last line. */
static void test_spool_across_restart(void)
{
    const char *path = tmp_path("restart/ledger.db");
    const char *spool = tmp_path("restart.spool");
    pgt_ledger_opts_t o = {.where = {.ledger = path}, .spool_path = spool};
    pgt_ledger_t *l = open_ledger(&o);
    submit_range(l, 0, 300, now_us());
    pgt_record_t *bin = make_record(300, "\xff\xfe-latin1", now_us());
    pgt_ledger_submit(l, bin);
    pgt_ledger_close(l);
    FILE *f = fopen(spool, "a");
    fputs("not json\n{\"started_us\": 12, \"session_id\"", f); /* torn by a crash */
    fclose(f);
    CHECK_INT(mkdir(tmp_path("restart"), 0700), 0);
    l = open_ledger(&o);
    wait_written(l, 301);
    submit_range(l, 1000, 1010, now_us()); /* after the torn line */
    pgt_ledger_close(l);
    check_rows(path, 311);
    CHECK_INT(file_int(path, "SELECT count(*) FROM queries WHERE \"user\" = "
                             "CAST(x'fffe2d6c6174696e31' AS TEXT)"),
              1);
}

/* A read-only file or directory (meaningless as root, who may write). */
static void test_read_only(void)
{
    if (geteuid() == 0) {
        fprintf(stderr, "test_read_only: skipped as root\n");
        return;
    }
    const char *path = tmp_path("ro.db");
    pgt_ledger_opts_t o = {.where = {.ledger = path}, .spool_path = tmp_path("ro.spool")};
    pgt_ledger_close(open_ledger(&o));
    CHECK_INT(chmod(path, 0444), 0);
    pgt_ledger_t *l = open_ledger(&o);
    submit_range(l, 0, 200, now_us());
    wait_failing(l, true);
    CHECK_INT(chmod(path, 0644), 0);
    wait_written(l, 200);
    pgt_ledger_close(l);
    check_rows(path, 200);

    CHECK_INT(mkdir(tmp_path("rodir"), 0500), 0);
    o.where.ledger = tmp_path("rodir/ledger.db");
    l = open_ledger(&o);
    submit_range(l, 0, 200, now_us());
    wait_failing(l, true);
    CHECK_INT(chmod(tmp_path("rodir"), 0700), 0);
    wait_written(l, 200);
    pgt_ledger_close(l);
    check_rows(o.where.ledger, 200);
}

static void test_overflow(void)
{
    const char *path = tmp_path("overflow.db");
    pgt_ledger_opts_t o = {.where = {.ledger = path}, .queue_capacity = 4};
    pgt_ledger_t *l = open_ledger(&o);
    submit_range(l, 0, 5000, now_us());
    pgt_ledger_stats_t s;
    pgt_ledger_stats(l, &s);
    CHECK_INT(s.submitted, 5000);
    CHECK(s.overflowed > 0);
    pgt_ledger_close(l);
    check_rows(path, 5000);
    /* Order is kept: ids follow the record numbers. */
    CHECK_INT(file_int(path, "SELECT count(*) FROM queries a JOIN queries b ON b.id = a.id + 1 "
                             "WHERE b.session_id < a.session_id"),
              0);
}

static void test_retention(void)
{
    const char *path = tmp_path("retention.db");
    pgt_ledger_opts_t o = {.where = {.ledger = path}};
    pgt_ledger_t *l = open_ledger(&o);
    submit_range(l, 0, 12000, now_us() - 100 * DAY_US); /* more than one chunk */
    submit_range(l, 20000, 20100, now_us() - 10 * DAY_US);
    pgt_ledger_close(l);
    check_rows(path, 12100);
    o.retention_days = 90;
    l = open_ledger(&o);
    for (int i = 0; i < 500 && file_int(path, "SELECT count(*) FROM queries") != 100; i++)
        usleep(10000);
    pgt_ledger_close(l);
    check_rows(path, 100);
}

/* Collects what the reader callbacks see. */
typedef struct seen {
    int n;              /* rows seen */
    int64_t cost;       /* their summed cost */
    int64_t last_start; /* started_us of the last row */
    int64_t last_cost;  /* cost of the last row */
    bool ordered;       /* every row came in the expected order */
    char first[32];     /* group or user of the first row */
} seen_t;

static int list_cb(const pgt_record_t *r, void *arg)
{
    seen_t *s = arg;
    if (s->n > 0 && r->started_us > s->last_start)
        s->ordered = false;
    if (s->n == 0)
        snprintf(s->first, sizeof(s->first), "%s", r->user);
    s->n++;
    s->cost += r->cost_micro;
    s->last_start = r->started_us;
    return 0;
}

static int cost_cb(const pgt_record_t *r, void *arg)
{
    seen_t *s = arg;
    if (s->n > 0 && r->cost_micro > s->last_cost)
        s->ordered = false;
    s->n++;
    s->last_cost = r->cost_micro;
    return s->n == 5 ? 42 : 0; /* stops early */
}

static int usage_cb(const pgt_usage_row_t *row, void *arg)
{
    seen_t *s = arg;
    if (s->n > 0 && row->cost_micro > s->last_cost)
        s->ordered = false;
    if (s->n == 0)
        snprintf(s->first, sizeof(s->first), "%s", row->group ? row->group : "(null)");
    s->n++;
    s->cost += row->cost_micro;
    s->last_cost = row->cost_micro;
    return 0;
}

static void test_reader(void)
{
    const char *path = tmp_path("reader.db");
    pgt_ledger_opts_t o = {.where = {.ledger = path}};
    pgt_ledger_t *l = open_ledger(&o);
    int64_t t0 = 1700000000000000LL;
    submit_range(l, 0, 1000, t0);
    pgt_record_t *untagged = make_record(5000, "carol", t0 + 5000);
    free(untagged->tags_json);
    untagged->tags_json = NULL;
    untagged->cost_micro = 1000;
    pgt_ledger_submit(l, untagged);
    pgt_ledger_close(l);
    char err[256];
    pgt_ledger_reader_t *rd =
        pgt_ledger_reader_open(&(pgt_ledger_where_t){path, NULL}, err, sizeof(err));
    CHECK(rd != NULL);
    if (!rd)
        return;
    seen_t s = {.ordered = true};
    pgt_ledger_filter_t f = {.since_us = INT64_MIN, .until_us = INT64_MAX, .user = "alice"};
    CHECK_INT(pgt_ledger_list(rd, &f, list_cb, &s, err, sizeof(err)), 0);
    CHECK_INT(s.n, 500);
    CHECK(s.ordered);
    f = (pgt_ledger_filter_t){.since_us = t0 + 100, .until_us = t0 + 200, .limit = 30};
    s = (seen_t){.ordered = true};
    CHECK_INT(pgt_ledger_list(rd, &f, list_cb, &s, err, sizeof(err)), 0);
    CHECK_INT(s.n, 30);
    CHECK_INT(s.last_start, t0 + 170);
    f = (pgt_ledger_filter_t){.since_us = INT64_MIN, .until_us = INT64_MAX};
    f.order = PGT_LEDGER_ORDER_COST;
    s = (seen_t){.ordered = true};
    CHECK_INT(pgt_ledger_list(rd, &f, cost_cb, &s, err, sizeof(err)), 42);
    CHECK_INT(s.n, 5);
    CHECK(s.ordered);
    s = (seen_t){.ordered = true};
    CHECK_INT(pgt_ledger_usage(rd, PGT_USAGE_BY_USER, NULL, t0, t0 + 10000, usage_cb, &s, err,
                               sizeof(err)),
              0);
    CHECK_INT(s.n, 3);
    CHECK_STR(s.first, "alice"); /* 1500 against bob's 1497 and carol's 1000 */
    CHECK(s.ordered);
    int64_t total = s.cost;
    s = (seen_t){.ordered = true};
    CHECK_INT(pgt_ledger_usage(rd, PGT_USAGE_BY_TAG, "team", t0, t0 + 10000, usage_cb, &s, err,
                               sizeof(err)),
              0);
    CHECK_INT(s.n, 3); /* growth, core, and no tag */
    CHECK_INT(s.cost, total);
    CHECK_INT(
        pgt_ledger_usage(rd, PGT_USAGE_BY_TAG, "a\"b", t0, t0 + 1, usage_cb, &s, err, sizeof(err)),
        -1);
    pgt_ledger_reader_close(rd);
}

/* ---- Cost by schema and table --------------------------------------------- */

/* A record of cost micro-units and compute seconds that read relations
 * (a JSON text, or NULL), with an explicit id so that it can be sent again. */
static pgt_record_t *rel_record(int64_t seq, const char *user, int64_t started, int64_t cost,
                                double compute, const char *relations)
{
    pgt_record_t *r = make_record((uint64_t)seq, user, started);
    free(r->database);
    r->database = strdup("warehouse");
    r->instance = 77;
    r->seq = seq;
    r->cost_micro = cost;
    r->compute_s = compute;
    r->relations = relations ? strdup(relations) : NULL;
    return r;
}

/* The records of the relations tests, submitted to l. */
static void submit_rel_records(pgt_ledger_t *l, int64_t t0)
{
    /* 800/200 by the plan's shares. */
    pgt_ledger_submit(l, rel_record(1, "alice", t0, 1000, 1.0,
                                    "[[\"analytics\",\"sales\",0.8],"
                                    "[\"analytics\",\"stores\",0.2]]"));
    /* Thirds of 7: cut at the running sum, 2 + 3 + 2. */
    pgt_ledger_submit(l, rel_record(2, "alice", t0 + 1, 7, 0.3,
                                    "[[\"analytics\",\"sales\",0.3333],"
                                    "[\"raw_data\",\"events\",0.3333],"
                                    "[\"\",\"events\",0.3333]]"));
    /* Named twice: one part. Shares of 0: evenly. */
    pgt_ledger_submit(l, rel_record(3, "bob", t0 + 2, 90, 0.9,
                                    "[[\"raw_data\",\"events\",0.5],"
                                    "[\"raw_data\",\"events\",0.5]]"));
    pgt_ledger_submit(l,
                      rel_record(4, "bob", t0 + 3, 10, 0.1, "[[\"a\",\"x\",0],[\"a\",\"y\",0]]"));
    /* No relations, damaged ones, an entry that is not one: none. */
    pgt_ledger_submit(l, rel_record(5, "bob", t0 + 4, 500, 5.0, NULL));
    pgt_ledger_submit(l, rel_record(6, "bob", t0 + 5, 500, 5.0, "not json"));
    pgt_ledger_submit(l, rel_record(7, "bob", t0 + 6, 30, 0.3, "[[\"a\"],[\"a\",\"x\",1]]"));
}

/* Reads the rows of sql as "a|b|c" lines into out. */
static void db_lines(const char *path, const char *sql, char *out, size_t len)
{
    sqlite3 *db = db_open(path);
    sqlite3_stmt *st;
    size_t used = 0;
    out[0] = '\0';
    CHECK_INT(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW && used < len) {
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            const char *v = (const char *)sqlite3_column_text(st, i);
            used += (size_t)snprintf(out + used, len - used, "%s%s", i ? "|" : "", v ? v : "");
        }
        used += (size_t)snprintf(out + used, len - used, "\n");
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static const char rel_rollup_sql[] =
    "SELECT \"user\", schema_name, relation, queries, cost_micro, round(compute_s, 6)"
    " FROM daily_relations ORDER BY 1, 2, 3";

/* What daily_relations holds after submit_rel_records. */
static const char rel_rollup[] = "alice||events|1|2|0.1\n"
                                 "alice|analytics|sales|2|802|0.9\n"
                                 "alice|analytics|stores|1|200|0.2\n"
                                 "alice|raw_data|events|1|3|0.1\n"
                                 "bob|a|x|2|35|0.35\n"
                                 "bob|a|y|1|5|0.05\n"
                                 "bob|raw_data|events|1|90|0.9\n";

/* The writer splits each record's compute and cost across its relations
 * into daily_relations, in the transaction of the rows, once: a replay
 * of the same records changes nothing. */
static void test_relations_rollup(void)
{
    const char *path = tmp_path("relations.db");
    pgt_ledger_opts_t o = {.where = {.ledger = path}};
    pgt_ledger_t *l = open_ledger(&o);
    int64_t t0 = now_us();
    submit_rel_records(l, t0);
    pgt_ledger_close(l);
    char got[2048];
    db_lines(path, "SELECT seq, relations FROM queries WHERE seq IN (1, 5) ORDER BY seq", got,
             sizeof(got));
    CHECK_STR(got, "1|[[\"analytics\",\"sales\",0.8],[\"analytics\",\"stores\",0.2]]\n5|\n");
    db_lines(path, rel_rollup_sql, got, sizeof(got));
    CHECK_STR(got, rel_rollup);
    CHECK_INT(file_int(path, "SELECT count(DISTINCT day) FROM daily_relations"), 1);
    CHECK_INT(file_int(path, "SELECT count(*) FROM daily_relations WHERE instance = 77 AND "
                             "database = 'warehouse'"),
              7);
    l = open_ledger(&o);
    submit_rel_records(l, t0);
    pgt_ledger_close(l);
    check_rows(path, 7);
    db_lines(path, rel_rollup_sql, got, sizeof(got));
    CHECK_STR(got, rel_rollup);
}

/* Records that wait in the spool keep their relations; a spool line of
 * an older release, without them, still loads. */
static void test_relations_spool(void)
{
    const char *path = tmp_path("relspool/ledger.db");
    const char *spool = tmp_path("relspool.spool");
    pgt_ledger_opts_t o = {.where = {.ledger = path}, .spool_path = spool};
    pgt_ledger_t *l = open_ledger(&o);
    int64_t t0 = now_us();
    submit_rel_records(l, t0);
    pgt_ledger_close(l);
    FILE *f = fopen(spool, "a");
    fprintf(f,
            "{\"started_us\": %lld, \"finished_us\": %lld, \"session_id\": 8, \"fingerprint\": 1,"
            " \"compute_s\": 0.5, \"cost_micro\": 9, \"status\": \"ok\", \"instance\": 77,"
            " \"seq\": 8, \"day\": 0, \"user\": \"carol\", \"database\": \"warehouse\"}\n",
            (long long)t0, (long long)t0 + 10);
    fclose(f);
    CHECK_INT(mkdir(tmp_path("relspool"), 0700), 0);
    l = open_ledger(&o);
    wait_written(l, 8);
    pgt_ledger_close(l);
    check_rows(path, 8);
    CHECK_INT(file_int(path, "SELECT count(*) FROM queries WHERE seq = 8 AND relations IS NULL "
                             "AND cost_micro = 9"),
              1);
    char got[2048];
    db_lines(path, rel_rollup_sql, got, sizeof(got));
    CHECK_STR(got, rel_rollup);
}

/* Retention prunes daily_relations with the rows. */
static void test_relations_retention(void)
{
    const char *path = tmp_path("relretention.db");
    pgt_ledger_opts_t o = {.where = {.ledger = path}};
    pgt_ledger_t *l = open_ledger(&o);
    submit_rel_records(l, now_us() - 100 * DAY_US);
    pgt_ledger_submit(l, rel_record(100, "carol", now_us(), 50, 0.5, "[[\"s\",\"t\",1]]"));
    pgt_ledger_close(l);
    CHECK_INT(file_int(path, "SELECT count(*) FROM daily_relations"), 8);
    o.retention_days = 90;
    l = open_ledger(&o);
    for (int i = 0; i < 500 && file_int(path, "SELECT count(*) FROM daily_relations") != 1; i++)
        usleep(10000);
    pgt_ledger_close(l);
    CHECK_INT(file_int(path, "SELECT count(*) FROM daily_relations WHERE \"user\" = 'carol'"), 1);
    CHECK_INT(file_int(path, "SELECT count(*) FROM daily_relations"), 1);
}

/* What a relations reader saw, as "group|schema|relation|n|cost" lines. */
typedef struct rel_seen {
    char lines[2048]; /* the rows */
    size_t used;      /* bytes in lines */
} rel_seen_t;

static int rel_cb(const pgt_usage_row_t *r, void *arg)
{
    rel_seen_t *s = arg;
    s->used += (size_t)snprintf(s->lines + s->used, sizeof(s->lines) - s->used,
                                "%s|%s|%s|%lld|%lld|%.2f\n", r->group, r->schema,
                                r->relation ? r->relation : "-", (long long)r->statements,
                                (long long)r->cost_micro, r->compute_s);
    return 0;
}

/* pgt_ledger_usage_relations splits statements as the writer does, and
 * counts a statement once per schema; pgt_ledger_tables reads the
 * rollup. */
static void test_relations_readers(void)
{
    const char *path = tmp_path("relreaders.db");
    pgt_ledger_opts_t o = {.where = {.ledger = path}};
    pgt_ledger_t *l = open_ledger(&o);
    int64_t t0 = now_us();
    submit_rel_records(l, t0);
    pgt_ledger_close(l);
    char err[256];
    pgt_ledger_reader_t *rd =
        pgt_ledger_reader_open(&(pgt_ledger_where_t){path, NULL}, err, sizeof(err));
    CHECK(rd != NULL);
    if (!rd)
        return;
    rel_seen_t s = {.used = 0};
    pgt_usage_row_t total;
    CHECK_INT(
        pgt_ledger_usage_relations(rd, false, t0, t0 + 100, rel_cb, &s, &total, err, sizeof(err)),
        0);
    CHECK_STR(s.lines, "analytics|analytics|-|2|1002|1.10\n"
                       "raw_data|raw_data|-|2|93|1.00\n"
                       "a|a|-|2|40|0.40\n"
                       "||-|1|2|0.10\n");
    CHECK_INT(total.statements, 5);
    CHECK_INT(total.cost_micro, 1137);
    s = (rel_seen_t){.used = 0};
    CHECK_INT(
        pgt_ledger_usage(rd, PGT_USAGE_BY_TABLE, NULL, t0, t0 + 100, rel_cb, &s, err, sizeof(err)),
        0);
    CHECK_STR(s.lines, "analytics.sales|analytics|sales|2|802|0.90\n"
                       "analytics.stores|analytics|stores|1|200|0.20\n"
                       "raw_data.events|raw_data|events|2|93|1.00\n"
                       "a.x|a|x|2|35|0.35\n"
                       "a.y|a|y|1|5|0.05\n"
                       "events||events|1|2|0.10\n");
    /* The time range is honoured: the first record only. */
    s = (rel_seen_t){.used = 0};
    CHECK_INT(
        pgt_ledger_usage_relations(rd, true, t0, t0 + 1, rel_cb, &s, &total, err, sizeof(err)), 0);
    CHECK_STR(s.lines, "analytics.sales|analytics|sales|1|800|0.80\n"
                       "analytics.stores|analytics|stores|1|200|0.20\n");
    CHECK_INT(total.statements, 1);
    /* The rollup gives the same tables per day, within a limit. */
    s = (rel_seen_t){.used = 0};
    int64_t from, to;
    pgt_period_bounds(PGT_PERIOD_DAY, t0, &from, &to);
    CHECK_INT(pgt_ledger_tables(rd, from, to, 3, rel_cb, &s, err, sizeof(err)), 0);
    CHECK_STR(s.lines, "analytics.sales|analytics|sales|2|802|0.90\n"
                       "analytics.stores|analytics|stores|1|200|0.20\n"
                       "raw_data.events|raw_data|events|2|93|1.00\n");
    s = (rel_seen_t){.used = 0};
    CHECK_INT(pgt_ledger_tables(rd, to, to + DAY_US, 0, rel_cb, &s, err, sizeof(err)), 0);
    CHECK_STR(s.lines, "");
    pgt_ledger_reader_close(rd);
}

static void test_names(void)
{
    pgt_query_status_t st;
    CHECK_INT(pgt_query_status_parse("budget_cancelled", &st), 0);
    CHECK_INT(st, PGT_QUERY_BUDGET_CANCELLED);
    CHECK_STR(pgt_query_status_name(PGT_QUERY_REFUSED), "refused");
    CHECK_INT(pgt_query_status_parse("nope", &st), -1);
    pgt_usage_by_t by;
    CHECK_INT(pgt_usage_by_parse("application", &by), 0);
    CHECK_INT(by, PGT_USAGE_BY_APPLICATION);
    CHECK_STR(pgt_usage_by_name(PGT_USAGE_BY_TAG), "tag");
    pgt_ledger_order_t ord;
    CHECK_INT(pgt_ledger_order_parse("cost", &ord), 0);
    CHECK_STR(pgt_ledger_order_name(ord), "cost");
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pgtally-test-ledger-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_names();
    test_basic();
    test_migrations();
    test_upgrade_from_6();
    test_upgrade_from_1();
    test_missing_directory();
    test_locked();
    test_spool_across_restart();
    test_read_only();
    test_overflow();
    test_retention();
    test_reader();
    test_relations_rollup();
    test_relations_spool();
    test_relations_retention();
    test_relations_readers();
    if (!task_failures)
        rm_rf(tmpdir);
    else
        fprintf(stderr, "files kept in %s\n", tmpdir);
    TASK_DONE();
}
