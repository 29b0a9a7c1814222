/* Unit tests of the budget tables: opening (and upgrading) a ledger, every
 * change pgtallyctl makes and the settings version it bumps, loading the
 * whole config, grant totals, and the spend of each kind of subject. They
 * run on an SQLite ledger, and again on PostgreSQL when PGTALLY_TEST_PG
 * holds a conninfo (in a schema of their own, dropped at the end). */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgtally/budget_store.h"
#include "pgtally/db.h"
#include "pgtally/ledger.h"
#include "task.h"

#define US 1000000LL
#define HOUR_US (3600 * US)
#define DAY_US (24 * HOUR_US)

static char tmpdir[64];
static const char *pg_conninfo; /* PGTALLY_TEST_PG, or NULL: SQLite only */
static char pg_schema[64];      /* the schema of the PostgreSQL run */

static const char *tmp_path(const char *name)
{
    static char buf[256];
    snprintf(buf, sizeof(buf), "%s/%s", tmpdir, name);
    return buf;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Runs sql (no parameters), which must succeed. */
static void exec(pgt_db_t *db, const char *sql)
{
    char err[512] = "";
    int rc = pgt_db_exec(db, "test", sql, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", sql, err);
    CHECK_INT(rc, 0);
}

/* Returns the integer of a one-row query, or -1. */
static int64_t query_int(pgt_db_t *db, const char *sql)
{
    int64_t v = -1;
    char err[512];
    if (pgt_db_int_query(db, "test", err, sizeof(err), &v, sql, "") != 0)
        fprintf(stderr, "%s: %s\n", sql, err);
    return v;
}

/* Where a test's ledger is: the SQLite file name, or the PostgreSQL run's
 * schema. */
static pgt_ledger_where_t where_of(const char *name)
{
    if (pg_conninfo)
        return (pgt_ledger_where_t){.ledger = pg_conninfo, .schema = pg_schema};
    return (pgt_ledger_where_t){.ledger = tmp_path(name)};
}

static pgt_db_t *open_store(const char *name)
{
    pgt_db_t *db = NULL;
    char err[256] = "";
    pgt_ledger_where_t w = where_of(name);
    int rc = pgt_budget_store_open(&w, true, &db, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "open %s: %s\n", name, err);
        exit(1); /* nothing else can be tested */
    }
    if (pg_conninfo) /* one schema for every test: each starts empty */
        exec(db, "TRUNCATE budgets, teams, team_members, budget_grants, role_members, spend, "
                 "alerts_sent");
    return db;
}

/* The settings version of the test's changes: SQLite's triggers fire per
 * row, so the count is exact; PostgreSQL's fire per statement, also for an
 * insert that did nothing, so there only whether it moved is checked. */
static int64_t want_last, got_last;

static void version_reset(pgt_db_t *db)
{
    want_last = 0;
    got_last = pgt_budget_settings_version(db);
}

static void check_version(pgt_db_t *db, int64_t want, int line)
{
    int64_t got = pgt_budget_settings_version(db);
    bool ok = pg_conninfo ? (want > want_last ? got > got_last : got == got_last) : got == want;
    if (!ok) {
        fprintf(stderr, "line %d: settings version %lld, wanted %lld\n", line, (long long)got,
                (long long)want);
        task_failures++;
    }
    want_last = want;
    got_last = got;
}
#define CHECK_VERSION(db, want) check_version(db, want, __LINE__)

/* Stores a budget and returns its id. */
static int64_t set(pgt_db_t *db, pgt_budget_subject_t type, const char *subject, pgt_period_t p,
                   int64_t limit, bool want_created)
{
    pgt_budget_t b = {.subject_type = type, .subject = (char *)subject, .period = p};
    b.limit_micro = limit;
    b.per_query_micro = -1;
    CHECK_INT(pgt_budget_warn_add(&b, 80), 0);
    int64_t id = 0;
    bool created = !want_created;
    char err[256] = "";
    int rc = pgt_budget_set(db, &b, &id, &created, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "set: %s\n", err);
    CHECK_INT(rc, 0);
    CHECK_INT(created, want_created);
    CHECK(id > 0);
    return id;
}

/* SQLite only: a missing file, and a ledger of the release before
 * budgets. */
static void test_open(void)
{
    pgt_db_t *db = NULL;
    char err[256] = "";
    /* Read-only never creates the file. */
    pgt_ledger_where_t missing = {.ledger = tmp_path("missing.db")};
    CHECK_INT(pgt_budget_store_open(&missing, false, &db, err, sizeof(err)), -1);
    CHECK(strstr(err, "No such file") != NULL);
    CHECK_INT(access(tmp_path("missing.db"), F_OK), -1);
    /* A ledger of the release before budgets: none to read, and opening it
     * for writing upgrades it in place, keeping its statements. */
    pgt_ledger_where_t old = {.ledger = tmp_path("v1.db")};
    pgt_db_opts_t o = {.ledger = old.ledger, .writable = true};
    pgt_db_t *raw = pgt_db_open(&o, err, sizeof(err));
    CHECK(raw != NULL);
    CHECK_INT(pgt_ledger_migrate(raw, 1, err, sizeof(err)), 0);
    exec(raw, "INSERT INTO queries (started_at, finished_at, \"user\", database, status, "
              "cost_micro) VALUES (1, 2, 'alice', 'shop', 'ok', 42)");
    exec(raw, "INSERT INTO budgets (subject_type, subject, period, limit_micro, created_at) "
              "VALUES ('user', 'alice', 'day', 5000000, 1)");
    pgt_db_close(raw);
    CHECK_INT(pgt_budget_store_open(&old, false, &db, err, sizeof(err)), PGT_BUDGET_NO_TABLES);
    CHECK(db == NULL);
    db = open_store("v1.db");
    CHECK_INT(query_int(db, "PRAGMA user_version"), pgt_ledger_schema_version());
    CHECK_INT(query_int(db, "SELECT cost_micro FROM queries WHERE \"user\" = 'alice'"), 42);
    CHECK_INT(pgt_budget_settings_version(db), 0);
    /* The row of migration 1 has its defaults: 'refuse' and [80,100]. */
    pgt_budget_config_t *cfg = NULL;
    CHECK_INT(pgt_budget_config_load(db, &cfg, err, sizeof(err)), 0);
    CHECK_INT(cfg->nbudgets, 1);
    CHECK_INT(cfg->budgets[0].action, PGT_BUDGET_ACTION_BLOCK);
    CHECK_INT(cfg->budgets[0].nwarn, 2);
    CHECK_INT(cfg->budgets[0].warn_pcts[1], 100);
    pgt_budget_config_free(cfg);
    pgt_budget_store_close(db);
}

static void test_budgets(void)
{
    pgt_db_t *db = open_store("budgets.db");
    version_reset(db);
    int64_t alice = set(db, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_DAY, 10 * US, true);
    CHECK_VERSION(db, 1);
    /* The same subject and period: new settings for the same budget. */
    CHECK_INT(set(db, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_DAY, 12 * US, false), alice);
    CHECK_VERSION(db, 2);
    int64_t month = set(db, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_MONTH, 100 * US, true);
    CHECK(month != alice);
    set(db, PGT_BUDGET_SUBJECT_DEFAULT, "ignored", PGT_PERIOD_DAY, 2 * US, true);
    pgt_budget_t b = {.subject_type = PGT_BUDGET_SUBJECT_TEAM, .subject = "data"};
    b.period = PGT_PERIOD_WEEK;
    b.limit_micro = 50 * US;
    b.action = PGT_BUDGET_ACTION_WARN;
    b.per_query_micro = US / 2;
    CHECK_INT(pgt_budget_warn_add(&b, 90), 0);
    CHECK_INT(pgt_budget_warn_add(&b, 50), 0);
    int64_t team_id;
    bool created;
    char err[256] = "";
    CHECK_INT(pgt_budget_set(db, &b, &team_id, &created, err, sizeof(err)), 0);

    pgt_budget_config_t *cfg = NULL;
    CHECK_INT(pgt_budget_config_load(db, &cfg, err, sizeof(err)), 0);
    CHECK_VERSION(db, 5);
    CHECK_INT(cfg->settings_version, got_last);
    CHECK_INT(cfg->nbudgets, 4);
    const pgt_budget_t *a = &cfg->budgets[0];
    CHECK_INT(a->id, alice);
    CHECK_STR(a->subject, "alice");
    CHECK_INT(a->limit_micro, 12 * US);
    CHECK_INT(a->per_query_micro, -1);
    CHECK_INT(a->action, PGT_BUDGET_ACTION_BLOCK);
    CHECK_STR(cfg->budgets[2].subject, ""); /* default has no subject */
    const pgt_budget_t *t = &cfg->budgets[3];
    CHECK_INT(t->subject_type, PGT_BUDGET_SUBJECT_TEAM);
    CHECK_INT(t->period, PGT_PERIOD_WEEK);
    CHECK_INT(t->action, PGT_BUDGET_ACTION_WARN);
    CHECK_INT(t->per_query_micro, US / 2);
    CHECK_INT(t->nwarn, 2);
    CHECK_INT(t->warn_pcts[0], 50);
    CHECK_INT(t->warn_pcts[1], 90);
    pgt_budget_config_free(cfg);
    CHECK_INT(query_int(db, "SELECT count(*) FROM budgets WHERE warn_pcts = '[50,90]' AND "
                            "action = 'warn'"),
              1);

    pgt_budget_t removed = {0};
    CHECK_INT(pgt_budget_rm(db, month, &removed, err, sizeof(err)), 0);
    CHECK_INT(removed.id, month);
    CHECK_INT(removed.period, PGT_PERIOD_MONTH);
    free(removed.subject);
    CHECK_VERSION(db, 6);
    CHECK_INT(pgt_budget_rm(db, month, NULL, err, sizeof(err)), PGT_BUDGET_NOT_FOUND);
    CHECK(strstr(err, "no budget") != NULL);
    CHECK_VERSION(db, 6);
    pgt_budget_store_close(db);
}

static void test_teams(void)
{
    pgt_db_t *db = open_store("teams.db");
    version_reset(db);
    const char *first[] = {"bob", "alice"}, *second[] = {"bob", "carol"};
    const char *gone[] = {"carol"}, *stranger[] = {"bob", "mallory"};
    bool created = false;
    size_t added = 0;
    char err[256] = "";
    CHECK_INT(pgt_budget_team_add(db, "data", first, 2, &created, &added, err, sizeof(err)), 0);
    CHECK(created);
    CHECK_INT(added, 2);
    CHECK_VERSION(db, 3); /* the team and two members */
    CHECK_INT(pgt_budget_team_add(db, "data", second, 2, &created, &added, err, sizeof(err)), 0);
    CHECK(!created);
    CHECK_INT(added, 1);
    CHECK_INT(pgt_budget_team_add(db, "ops", first, 1, &created, &added, err, sizeof(err)), 0);
    CHECK_INT(pgt_budget_team_add(db, "Ops", first, 1, &created, &added, err, sizeof(err)), 0);
    CHECK_INT(pgt_budget_team_rm(db, "data", gone, 1, err, sizeof(err)), 0);
    CHECK_VERSION(db, 9);
    /* One unknown member: nothing changes. */
    CHECK_INT(pgt_budget_team_rm(db, "data", stranger, 2, err, sizeof(err)), PGT_BUDGET_NOT_FOUND);
    CHECK(strstr(err, "mallory") != NULL);
    CHECK_VERSION(db, 9);
    CHECK_INT(pgt_budget_team_rm(db, "nope", NULL, 0, err, sizeof(err)), PGT_BUDGET_NOT_FOUND);

    pgt_budget_config_t *cfg = NULL;
    CHECK_INT(pgt_budget_config_load(db, &cfg, err, sizeof(err)), 0);
    CHECK_INT(cfg->nteams, 3);
    /* Names sort as bytes whatever the database's collation. */
    CHECK_STR(cfg->teams[0].name, "Ops");
    CHECK_STR(cfg->teams[1].name, "data");
    const pgt_budget_team_t *t = pgt_budget_team_find(cfg, "data");
    CHECK(t != NULL);
    CHECK_INT(t ? t->nmembers : 0, 2);
    CHECK_STR(t ? t->members[0] : NULL, "alice");
    CHECK_STR(t ? t->members[1] : NULL, "bob");
    CHECK_INT(pgt_budget_team_find(cfg, "ops")->nmembers, 1);
    CHECK(pgt_budget_team_find(cfg, "nope") == NULL);
    pgt_budget_config_free(cfg);

    /* The whole team, members too. */
    CHECK_INT(pgt_budget_team_rm(db, "data", NULL, 0, err, sizeof(err)), 0);
    CHECK_INT(query_int(db, "SELECT count(*) FROM team_members"), 2);
    CHECK_INT(query_int(db, "SELECT count(*) FROM teams"), 2);
    pgt_budget_store_close(db);
}

static void test_grants(void)
{
    pgt_db_t *db = open_store("grants.db");
    int64_t now = pgt_clock_us(), id, first;
    char err[256] = "";
    version_reset(db);
    CHECK_INT(pgt_budget_grant_add(db, "alice", 5 * US, now, -1, &first, err, sizeof(err)), 0);
    CHECK(first > 0);
    CHECK_VERSION(db, 1);
    CHECK_INT(pgt_budget_grant_add(db, "alice", 2 * US, now, now + HOUR_US, &id, err, sizeof(err)),
              0);
    CHECK(id > first);
    CHECK_INT(
        pgt_budget_grant_add(db, "alice", 3 * US, now - HOUR_US, now - 1, &id, err, sizeof(err)),
        0); /* over */
    CHECK_INT(
        pgt_budget_grant_add(db, "alice", 7 * US, now - 70 * DAY_US, -1, &id, err, sizeof(err)),
        0); /* long ago */
    CHECK_INT(pgt_budget_grant_add(db, "bob", 11 * US, now, -1, &id, err, sizeof(err)), 0);
    pgt_budget_config_t *cfg = NULL;
    CHECK_INT(pgt_budget_config_load(db, &cfg, err, sizeof(err)), 0);
    CHECK_INT(cfg->ngrants, 3); /* the over and the old are not loaded */
    CHECK_INT(cfg->grants[0].id, first);
    CHECK_INT(cfg->grants[0].until_us, -1);
    int64_t start, end;
    pgt_period_bounds(PGT_PERIOD_DAY, now, &start, &end);
    CHECK_INT(pgt_budget_grant_total(cfg, "alice", PGT_PERIOD_DAY, start, end, now), 7 * US);
    CHECK_INT(pgt_budget_grant_total(cfg, "bob", PGT_PERIOD_DAY, start, end, now), 11 * US);
    CHECK_INT(pgt_budget_grant_total(cfg, "carol", PGT_PERIOD_DAY, start, end, now), 0);
    /* In the next period a grant without an end no longer counts; one with
     * an end counts while it lasts. */
    CHECK_INT(pgt_budget_grant_total(cfg, "alice", PGT_PERIOD_DAY, end, end + DAY_US, now), 2 * US);
    CHECK_INT(
        pgt_budget_grant_total(cfg, "alice", PGT_PERIOD_DAY, end, end + DAY_US, now + 2 * HOUR_US),
        0);
    pgt_budget_config_free(cfg);
    pgt_budget_store_close(db);
}

/* Collects spend lines as "user=micro;" (user "-" for NULL). */
static int spend_cb(const char *user, int64_t spent, void *arg)
{
    char *out = arg;
    size_t n = strlen(out);
    snprintf(out + n, 512 - n, "%s=%lld;", user ? user : "-", (long long)spent);
    return 0;
}

/* The spend of a budget of type, subject and period on days 100 and 101. */
static const char *spend(pgt_db_t *db, pgt_budget_subject_t type, const char *subject,
                         pgt_period_t p)
{
    static char out[512];
    out[0] = '\0';
    pgt_budget_t b = {.subject_type = type, .subject = (char *)subject, .period = p};
    char err[256] = "";
    int rc = pgt_budget_spend(db, &b, pgt_local_day_start_us(100), pgt_local_day_start_us(102),
                              spend_cb, out, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "spend: %s\n", err);
    CHECK_INT(rc, 0);
    return out;
}

static void test_spend(void)
{
    pgt_db_t *db = open_store("spend.db");
    /* Days 100 and 101 count, of every instance; days 99 and 102 do not. */
    exec(db, "INSERT INTO spend (instance, day, \"user\", database, application, cost_micro, rev)"
             " VALUES "
             "(7, 100, 'alice', 'shop', 'psql', 1, 1),"
             "(8, 101, 'alice', 'dw', 'etl', 20, 1),"
             "(7, 101, 'bob', 'shop', 'etl', 300, 2),"
             "(8, 101, 'carol', 'dw', 'psql', 4000, 1),"
             "(9, 100, 'dave', 'dw', 'psql', 30000, 1),"
             "(7, 101, 'dave', 'dw', 'psql', 20000, 2),"
             "(7, 102, 'alice', 'shop', 'psql', 600000, 3),"
             "(8, 99, 'bob', 'shop', 'psql', 7000000, 1)");
    exec(db, "INSERT INTO role_members VALUES ('analysts', 'bob', 1), ('analysts', 'carol', 1)");
    const char *members[] = {"alice", "carol"};
    bool created;
    size_t added;
    char err[256];
    CHECK_INT(pgt_budget_team_add(db, "data", members, 2, &created, &added, err, sizeof(err)), 0);
    set(db, PGT_BUDGET_SUBJECT_USER, "carol", PGT_PERIOD_DAY, US, true);
    set(db, PGT_BUDGET_SUBJECT_USER, "bob", PGT_PERIOD_WEEK, US, true);

    CHECK_STR(spend(db, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_DAY), "-=21;");
    CHECK_STR(spend(db, PGT_BUDGET_SUBJECT_USER, "nobody", PGT_PERIOD_DAY), "-=0;");
    CHECK_STR(spend(db, PGT_BUDGET_SUBJECT_DATABASE, "dw", PGT_PERIOD_DAY), "-=54020;");
    CHECK_STR(spend(db, PGT_BUDGET_SUBJECT_APPLICATION, "etl", PGT_PERIOD_DAY), "-=320;");
    CHECK_STR(spend(db, PGT_BUDGET_SUBJECT_TEAM, "data", PGT_PERIOD_DAY), "-=4021;");
    CHECK_STR(spend(db, PGT_BUDGET_SUBJECT_ROLE, "analysts", PGT_PERIOD_DAY), "-=4300;");
    /* Default: each user without a user budget of the same period. carol
     * has a day budget, bob only a week budget. */
    CHECK_STR(spend(db, PGT_BUDGET_SUBJECT_DEFAULT, "", PGT_PERIOD_DAY),
              "dave=50000;bob=300;alice=21;");
    CHECK_STR(spend(db, PGT_BUDGET_SUBJECT_DEFAULT, "", PGT_PERIOD_WEEK),
              "dave=50000;carol=4000;alice=21;");
    pgt_budget_store_close(db);
}

/* Warn thresholds: ascending, without repeats, from 1 to 100. */
static void test_warn(void)
{
    pgt_budget_t b = {0};
    CHECK_INT(pgt_budget_warn_add(&b, 90), 0);
    CHECK_INT(pgt_budget_warn_add(&b, 50), 0);
    CHECK_INT(pgt_budget_warn_add(&b, 90), 0); /* a repeat is kept once */
    CHECK_INT(pgt_budget_warn_add(&b, 0), -1);
    CHECK_INT(pgt_budget_warn_add(&b, 101), -1);
    CHECK_INT(b.nwarn, 2);
    CHECK_INT(b.warn_pcts[0], 50);
    CHECK_INT(b.warn_pcts[1], 90);
}

static void test_names(void)
{
    pgt_budget_subject_t s;
    pgt_budget_action_t a;
    CHECK_INT(pgt_budget_subject_parse("application", &s), 0);
    CHECK_INT(s, PGT_BUDGET_SUBJECT_APPLICATION);
    CHECK_STR(pgt_budget_subject_name(PGT_BUDGET_SUBJECT_DEFAULT), "default");
    CHECK_INT(pgt_budget_subject_parse("group", &s), -1);
    CHECK_INT(pgt_budget_action_parse("warn", &a), 0);
    CHECK_STR(pgt_budget_action_name(a), "warn");
    CHECK_INT(pgt_budget_action_parse("refuse", &a), -1);
}

/* The tests of both backends. */
/* --max-rows and budgets without a money limit, stored and loaded. */
static void test_max_rows(void)
{
    pgt_db_t *db = open_store("rows.db");
    pgt_budget_t b = {.subject_type = PGT_BUDGET_SUBJECT_USER, .subject = "alice"};
    b.period = PGT_PERIOD_DAY;
    b.limit_micro = PGT_BUDGET_NO_LIMIT;
    b.per_query_micro = -1;
    b.max_rows = 1000000000;
    int64_t id, other;
    bool created;
    char err[256] = "";
    CHECK_INT(pgt_budget_set(db, &b, &id, &created, err, sizeof(err)), 0);
    CHECK(created);
    pgt_budget_t c = b;
    c.subject_type = PGT_BUDGET_SUBJECT_DEFAULT;
    c.subject = "";
    c.limit_micro = 3 * US;
    c.max_rows = -1;
    CHECK_INT(pgt_budget_set(db, &c, &other, &created, err, sizeof(err)), 0);
    CHECK_INT(query_int(db, "SELECT limit_micro FROM budgets WHERE subject = 'alice'"), -1);
    CHECK_INT(query_int(db, "SELECT max_rows FROM budgets WHERE subject = 'alice'"), 1000000000);
    CHECK_INT(query_int(db, "SELECT count(*) FROM budgets WHERE max_rows IS NULL"), 1);
    pgt_budget_config_t *cfg = NULL;
    CHECK_INT(pgt_budget_config_load(db, &cfg, err, sizeof(err)), 0);
    CHECK_INT(cfg->nbudgets, 2);
    CHECK_INT(cfg->budgets[0].limit_micro, PGT_BUDGET_NO_LIMIT);
    CHECK(!pgt_budget_has_limit(&cfg->budgets[0]));
    CHECK_INT(cfg->budgets[0].max_rows, 1000000000);
    CHECK_INT(cfg->budgets[1].limit_micro, 3 * US);
    CHECK(pgt_budget_has_limit(&cfg->budgets[1]));
    CHECK_INT(cfg->budgets[1].max_rows, -1);
    pgt_budget_config_free(cfg);
    /* New settings replace the row limit and give the money limit back. */
    b.limit_micro = 5 * US;
    b.max_rows = 2500000;
    CHECK_INT(pgt_budget_set(db, &b, &other, &created, err, sizeof(err)), 0);
    CHECK_INT(other, id);
    CHECK(!created);
    pgt_budget_t removed = {0};
    CHECK_INT(pgt_budget_rm(db, id, &removed, err, sizeof(err)), 0);
    CHECK_INT(removed.max_rows, 2500000);
    CHECK_INT(removed.limit_micro, 5 * US);
    free(removed.subject);
    pgt_budget_store_close(db);
}

/* A ledger of schema 7 (before max_rows), read without migrating it:
 * its budgets load with no row limit. Then opened for writing, it gains
 * the column. */
static void test_rows_before_migration(void)
{
    char err[256] = "", schema[80] = "";
    pgt_ledger_where_t w = {.ledger = tmp_path("v7.db")};
    if (pg_conninfo) {
        snprintf(schema, sizeof(schema), "%s_v7", pg_schema);
        w = (pgt_ledger_where_t){.ledger = pg_conninfo, .schema = schema};
    }
    pgt_db_opts_t o = {.ledger = w.ledger, .schema = w.schema, .writable = true};
    pgt_db_t *raw = pgt_db_open(&o, err, sizeof(err));
    CHECK(raw != NULL);
    if (!raw)
        return;
    CHECK_INT(pgt_ledger_migrate(raw, 7, err, sizeof(err)), 0);
    exec(raw, "INSERT INTO budgets (subject_type, subject, period, limit_micro, created_at) "
              "VALUES ('user', 'alice', 'day', 5000000, 1)");
    CHECK(!pgt_db_has_column(raw, "budgets", "max_rows"));
    CHECK(pgt_db_has_column(raw, "budgets", "per_query_micro"));
    pgt_db_close(raw);
    pgt_db_t *db = NULL;
    CHECK_INT(pgt_budget_store_open(&w, false, &db, err, sizeof(err)), 0);
    pgt_budget_config_t *cfg = NULL;
    int rc = db ? pgt_budget_config_load(db, &cfg, err, sizeof(err)) : -1;
    if (rc != 0)
        fprintf(stderr, "loading a schema 7 ledger: %s\n", err);
    CHECK_INT(rc, 0);
    CHECK_INT(cfg ? cfg->budgets[0].max_rows : 0, -1);
    pgt_budget_config_free(cfg);
    pgt_budget_store_close(db);
    CHECK_INT(pgt_budget_store_open(&w, true, &db, err, sizeof(err)), 0);
    CHECK(db && pgt_db_has_column(db, "budgets", "max_rows"));
    if (db && pg_conninfo) {
        char sql[128];
        snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", schema);
        exec(db, sql);
    }
    pgt_budget_store_close(db);
}

static void test_changes_and_spend(void)
{
    test_budgets();
    test_teams();
    test_grants();
    test_spend();
    test_max_rows();
    test_rows_before_migration();
}

/* The same on PostgreSQL, in a schema made for the run and dropped. */
static void test_postgresql(void)
{
    snprintf(pg_schema, sizeof(pg_schema), "pgtally_test_budget_%d", (int)getpid());
    printf("PostgreSQL run in schema %s\n", pg_schema);
    test_changes_and_spend();
    pgt_db_opts_t o = {.ledger = pg_conninfo, .schema = pg_schema};
    char err[256], sql[128];
    pgt_db_t *db = pgt_db_open(&o, err, sizeof(err));
    CHECK(db != NULL);
    snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", pg_schema);
    if (db)
        exec(db, sql);
    pgt_db_close(db);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pgtally-test-budget-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_names();
    test_warn();
    test_open();
    test_changes_and_spend();
    const char *pg = getenv("PGTALLY_TEST_PG");
    if (pg && *pg) {
        pg_conninfo = pg;
        test_postgresql();
    }
    if (!task_failures)
        nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "files kept in %s\n", tmpdir);
    TASK_DONE();
}
