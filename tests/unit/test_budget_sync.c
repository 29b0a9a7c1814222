/* Unit tests of the ledger thread of budgets: the budgets it posts, what
 * other instances spent as it reads it from the spend rollup (everything
 * at start, then only the difference where an instance's rev moved, never
 * this instance's rows nor days of no current period), and alerts recorded
 * once. On an SQLite ledger, and on PostgreSQL when PGTALLY_TEST_PG holds a
 * conninfo (in a schema of its own, dropped at the end). */
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "pgtally/budget_store.h"
#include "pgtally/budget_sync.h"
#include "pgtally/db.h"
#include "pgtally/ledger.h"
#include "pgtally/period.h"
#include "task.h"

#define US 1000000LL
#define ME 42 /* this instance */
#define MAX_SEEN 32

/* What the loop received, summed per user and day. */
typedef struct seen {
    char user[32];      /* who */
    int64_t started_us; /* the day's start */
    int64_t micro;      /* spent */
} seen_t;

/* The loop's side of a test. */
typedef struct loop_side {
    uv_loop_t loop;          /* the loop */
    uv_async_t news;         /* the thread's news */
    uv_timer_t timer;        /* how long to wait */
    pgt_budget_sync_t *sync; /* the thread */
    int64_t nbudgets;        /* budgets of the last config posted, -1: none yet */
    seen_t seen[MAX_SEEN];   /* spend received */
    size_t nseen;            /* entries in seen */
    bool bad_row;            /* a row of a period other than -1 came */
} loop_side_t;

static char tmpdir[64];
static const char *pg_conninfo; /* PGTALLY_TEST_PG: also where role memberships are read */

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Runs sql (no parameters), which must succeed. */
static void exec(pgt_db_t *db, const char *sql, const char *types, ...)
{
    char err[512] = "";
    va_list ap;
    va_start(ap, types);
    int rc = pgt_db_vrun(db, "test", err, sizeof(err), NULL, NULL, sql, types, ap);
    va_end(ap);
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", sql, err);
    CHECK_INT(rc, 0);
}

/* Takes the thread's news: the budgets and the spend. */
static void news_cb(uv_async_t *h)
{
    loop_side_t *ls = h->data;
    pgt_budget_config_t *cfg;
    pgt_budget_row_t *rows;
    size_t n;
    pgt_budget_sync_take(ls->sync, &cfg, &rows, &n);
    if (cfg)
        ls->nbudgets = (int64_t)cfg->nbudgets;
    pgt_budget_config_free(cfg);
    for (size_t i = 0; i < n; i++) {
        if (rows[i].period != -1)
            ls->bad_row = true;
        size_t k = 0;
        while (k < ls->nseen && (strcmp(ls->seen[k].user, rows[i].user) != 0 ||
                                 ls->seen[k].started_us != rows[i].started_us))
            k++;
        if (k == ls->nseen && k < MAX_SEEN) {
            snprintf(ls->seen[k].user, sizeof(ls->seen[k].user), "%s", rows[i].user);
            ls->seen[k].started_us = rows[i].started_us;
            ls->nseen++;
        }
        if (k < MAX_SEEN)
            ls->seen[k].micro += rows[i].micro;
    }
    pgt_budget_sync_rows_free(rows, n);
}

/* Only wakes the loop. */
static void timer_cb(uv_timer_t *t)
{
    (void)t;
}

/* Returns what the loop received for user on day. */
static int64_t spent(const loop_side_t *ls, const char *user, int32_t day)
{
    for (size_t i = 0; i < ls->nseen; i++)
        if (strcmp(ls->seen[i].user, user) == 0 &&
            ls->seen[i].started_us == pgt_local_day_start_us(day))
            return ls->seen[i].micro;
    return 0;
}

/* Runs the loop until user's spend on day reaches want (or 3 s pass), then
 * 100 ms more, so that anything counted twice would show. */
static void wait_spent(loop_side_t *ls, const char *user, int32_t day, int64_t want)
{
    uint64_t end = uv_now(&ls->loop) + 3000;
    while (spent(ls, user, day) < want && uv_now(&ls->loop) < end) {
        uv_timer_start(&ls->timer, timer_cb, 10, 0);
        uv_run(&ls->loop, UV_RUN_ONCE);
    }
    uv_timer_start(&ls->timer, timer_cb, 100, 0);
    while (uv_run(&ls->loop, UV_RUN_ONCE) && uv_is_active((uv_handle_t *)&ls->timer))
        ;
}

/* One spend row of instance, as its writer would keep it with instances. */
static void write_spend(pgt_db_t *db, int64_t instance, int32_t day, const char *user, int64_t cost,
                        int64_t rev)
{
    exec(db,
         "INSERT INTO spend (instance, day, \"user\", database, application, cost_micro, rev)"
         " VALUES (?1, ?2, ?3, 'shop', 'psql', ?4, ?5) ON CONFLICT (instance, day, \"user\","
         " database, application) DO UPDATE SET cost_micro = excluded.cost_micro, rev = "
         "excluded.rev",
         "iitii", instance, (int64_t)day, user, cost, rev);
    exec(db,
         "INSERT INTO instances (id, name, started_at, seen_at, rev) VALUES (?1, 'other', 1, 1,"
         " ?2) ON CONFLICT (id) DO UPDATE SET rev = excluded.rev",
         "ii", instance, rev);
}

/* Sets a budget, so that the thread follows other instances' spend. */
static void add_budget(pgt_db_t *db)
{
    pgt_budget_t b = {.subject_type = PGT_BUDGET_SUBJECT_USER,
                      .subject = "alice",
                      .period = PGT_PERIOD_DAY,
                      .limit_micro = 10 * US,
                      .per_query_micro = -1};
    int64_t id;
    bool created;
    char err[256];
    CHECK_INT(pgt_budget_set(db, &b, &id, &created, err, sizeof(err)), 0);
}

/* Returns the integer of a one-row query, or -1. */
static int64_t query_int(pgt_db_t *db, const char *sql)
{
    int64_t v = -1;
    char err[256];
    if (pgt_db_int_query(db, "test", err, sizeof(err), &v, sql, "") != 0)
        fprintf(stderr, "%s: %s\n", sql, err);
    return v;
}

/* Starts the loop and the thread over the ledger at w. */
static void side_start(loop_side_t *ls, const pgt_ledger_where_t *w)
{
    *ls = (loop_side_t){.nbudgets = -1};
    CHECK_INT(uv_loop_init(&ls->loop), 0);
    uv_async_init(&ls->loop, &ls->news, news_cb);
    ls->news.data = ls;
    uv_timer_init(&ls->loop, &ls->timer);
    pgt_budget_sync_opts_t o = {.where = *w,
                                .instance = ME,
                                .admin_conninfo = pg_conninfo,
                                .interval_ms = 20,
                                .role_refresh_ms = 60000,
                                .news = &ls->news};
    char err[256];
    ls->sync = pgt_budget_sync_start(&o, err, sizeof(err));
    CHECK(ls->sync != NULL);
}

/* Stops the thread (if still running) and closes the loop. */
static void side_stop(loop_side_t *ls)
{
    pgt_budget_sync_free(ls->sync);
    ls->sync = NULL;
    uv_close((uv_handle_t *)&ls->news, NULL);
    uv_close((uv_handle_t *)&ls->timer, NULL);
    uv_run(&ls->loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(&ls->loop), 0);
}

/* What other instances spent: all of it at start, then differences. */
static void test_spend(loop_side_t *ls, pgt_db_t *db, int32_t today)
{
    int32_t old = today - 60; /* in no current period */
    /* At start: all of it, but this instance's and old days'. */
    wait_spent(ls, "alice", today, 100);
    CHECK_INT(ls->nbudgets, 1);
    CHECK_INT(spent(ls, "alice", today), 100);
    CHECK_INT(spent(ls, "alice", old), 0);
    /* bob's yesterday counts when the current week or month holds it. */
    int64_t week, month, end;
    pgt_period_bounds(PGT_PERIOD_WEEK, pgt_clock_us(), &week, &end);
    pgt_period_bounds(PGT_PERIOD_MONTH, pgt_clock_us(), &month, &end);
    int32_t first = pgt_local_day(week < month ? week : month);
    CHECK_INT(spent(ls, "bob", today - 1), today - 1 >= first ? 5 : 0);

    /* Then what moved: only the difference, of old and new instances. */
    write_spend(db, 7, today, "alice", 150, 2);
    write_spend(db, 9, today, "carol", 30, 1);
    wait_spent(ls, "carol", today, 30);
    wait_spent(ls, "alice", today, 150);
    CHECK_INT(spent(ls, "alice", today), 150);
    CHECK_INT(spent(ls, "carol", today), 30);
    /* A change whose rev the instance did not publish is not read yet. */
    exec(db, "UPDATE spend SET cost_micro = 999 WHERE instance = 9", "");
    wait_spent(ls, "carol", today, 999);
    CHECK_INT(spent(ls, "carol", today), 30);
    write_spend(db, 9, today, "carol", 1030, 2);
    wait_spent(ls, "carol", today, 1030);
    CHECK_INT(spent(ls, "carol", today), 1030);
    CHECK_INT(spent(ls, "alice", today), 150);
    CHECK(!ls->bad_row);
}

/* Alerts recorded once; role memberships replaced by the server's. */
static void test_alerts_and_roles(loop_side_t *ls, pgt_db_t *db)
{
    /* An alert queued twice (or by two processes) is recorded once. */
    pgt_budget_alert_t a = {.budget_id = 1, .period_start = 5, .pct = 80};
    snprintf(a.channel, sizeof(a.channel), "log");
    snprintf(a.text, sizeof(a.text), "at 80%%");
    pgt_budget_sync_alert(ls->sync, &a);
    pgt_budget_sync_alert(ls->sync, &a);
    pgt_budget_sync_free(ls->sync); /* writes what is queued */
    ls->sync = NULL;
    CHECK_INT(query_int(db, "SELECT count(*) FROM alerts_sent WHERE threshold_pct = 80"), 1);
    /* Role memberships, read from the server (a superuser is a member of
     * every role), replace those of the last read. */
    if (pg_conninfo) {
        CHECK_INT(query_int(db, "SELECT count(*) FROM role_members WHERE role = 'gone'"), 0);
        CHECK(query_int(db, "SELECT count(*) FROM role_members") > 0);
    }
}

/* The thread over a ledger where other instances spent, from start to
 * stop. */
static void test_follow(const pgt_ledger_where_t *w, pgt_db_t *db)
{
    int32_t today = pgt_local_day(pgt_clock_us());
    add_budget(db);
    write_spend(db, 7, today, "alice", 100, 1);
    write_spend(db, 7, today - 1, "bob", 5, 1);
    write_spend(db, 7, today - 60, "alice", 1000000, 1);
    write_spend(db, ME, today, "alice", 7000, 3); /* this instance: never read */
    exec(db, "INSERT INTO role_members VALUES ('gone', 'nobody', 1)", "");
    loop_side_t ls;
    side_start(&ls, w);
    test_spend(&ls, db, today);
    test_alerts_and_roles(&ls, db);
    side_stop(&ls);
}

/* Opens the ledger at w, runs the test on it and closes it. */
static void run_on(const pgt_ledger_where_t *w)
{
    pgt_db_t *db = NULL;
    char err[256];
    if (pgt_budget_store_open(w, true, &db, err, sizeof(err)) != 0) {
        fprintf(stderr, "open: %s\n", err);
        exit(1);
    }
    test_follow(w, db);
    pgt_budget_store_close(db);
}

/* The same on PostgreSQL, in a schema made for the run and dropped. */
static void test_postgresql(const char *conninfo)
{
    char schema[64], sql[128], err[256];
    snprintf(schema, sizeof(schema), "pgtally_test_sync_%d", (int)getpid());
    printf("PostgreSQL run in schema %s\n", schema);
    pgt_ledger_where_t w = {.ledger = conninfo, .schema = schema};
    run_on(&w);
    pgt_db_opts_t o = {.ledger = conninfo, .schema = schema};
    pgt_db_t *db = pgt_db_open(&o, err, sizeof(err));
    CHECK(db != NULL);
    snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", schema);
    if (db)
        CHECK_INT(pgt_db_exec(db, "test", sql, err, sizeof(err)), 0);
    pgt_db_close(db);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pgtally-test-sync-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    char path[128];
    snprintf(path, sizeof(path), "%s/sync.db", tmpdir);
    pgt_ledger_where_t w = {.ledger = path};
    run_on(&w);
    const char *pg = getenv("PGTALLY_TEST_PG");
    if (pg && *pg) {
        pg_conninfo = pg;
        snprintf(path, sizeof(path), "%s/roles.db", tmpdir); /* again, with role memberships */
        run_on(&w);
        test_postgresql(pg);
    }
    if (!task_failures)
        nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "files kept in %s\n", tmpdir);
    TASK_DONE();
}
