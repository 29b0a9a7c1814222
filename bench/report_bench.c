/* Benchmark of the daily report (not a test): fills a ledger with a day of
 * statements of realistic spread (users and shapes of Zipf-like frequency,
 * log-normal costs, a few errors, refusals and budgets) plus the seven days
 * before it, then times pgt_report_build and every renderer on that day.
 * Usage: report_bench [ROWS [LEDGER [HISTORY_ROWS]]]: ROWS statements on
 * the report day (default 10000000), HISTORY_ROWS on each of the 7 days
 * before (default ROWS / 10). An existing LEDGER with the right counts is
 * reused, so runs after the first skip the filling. */
#include <math.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgtally/ledger.h"
#include "pgtally/log.h"
#include "pgtally/period.h"
#include "pgtally/pricing.h"
#include "pgtally/report.h"

#define REPORT_DATE "2026-05-13"
#define DAY0_US 1778630400000000LL /* 2026-05-13 00:00:00 UTC */
#define DAY_US 86400000000LL
#define HISTORY_DAYS 7
#define NUSERS 300
#define NSHAPES 20000
#define POOL 500 /* shapes each user runs, of Zipf-like frequency */
#define NAPPS 12
#define BATCH 200000
#define RUNS 5

/* The generator's state and the shapes and users it draws from. */
typedef struct gen {
    uint64_t rng;                    /* splitmix64 state */
    double user_cdf[NUSERS];         /* cumulative weights of users */
    double pool_cdf[POOL];           /* cumulative weights of a user's shapes */
    double shape_mu[NSHAPES];        /* log of each shape's median compute seconds */
    char *shape_text[NSHAPES];       /* normalized text of each shape */
    uint64_t shape_fp[NSHAPES];      /* fingerprint of each shape */
    const char *shape_kind[NSHAPES]; /* statement kind of each shape */
    pgt_price_t price;               /* a warehouse-like price list */
} gen_t;

static uint64_t next_u64(gen_t *g)
{
    uint64_t z = (g->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A uniform double in [0, 1). */
static double uniform(gen_t *g)
{
    return (double)(next_u64(g) >> 11) * 0x1.0p-53;
}

/* A standard normal deviate (Box-Muller). */
static double normal(gen_t *g)
{
    double u = uniform(g), v = uniform(g);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(2 * M_PI * v);
}

/* Draws an index from cumulative weights cdf[0..n) by binary search. */
static size_t draw(gen_t *g, const double *cdf, size_t n)
{
    double x = uniform(g) * cdf[n - 1];
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cdf[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Fills cdf with Zipf weights 1 / (k + 1)^s. */
static void zipf(double *cdf, size_t n, double s)
{
    double acc = 0;
    for (size_t k = 0; k < n; k++)
        cdf[k] = acc += 1.0 / pow((double)(k + 1), s);
}

static const char *const kinds[] = {"select", "select", "select", "insert", "update", "delete"};

/* Makes the shapes: frequent ones are cheap point lookups, rare ones
 * expensive scans, and their texts are between 60 and 600 characters. */
static int gen_init(gen_t *g)
{
    memset(g, 0, sizeof(*g));
    g->rng = 42;
    zipf(g->user_cdf, NUSERS, 1.1);
    zipf(g->pool_cdf, POOL, 1.05);
    g->price = (pgt_price_t){.per_compute_second_micro = 20000, .per_gib_micro = 90000};
    for (size_t k = 0; k < NSHAPES; k++) {
        g->shape_fp[k] = next_u64(g) & 0x7fffffffffffffffull;
        g->shape_mu[k] = -6.5 + 1.5 * normal(g);
        g->shape_kind[k] = kinds[k % 6];
        size_t pad = (size_t)(uniform(g) * 540);
        char *t = malloc(700);
        if (!t)
            return -1;
        int n = snprintf(t, 700,
                         "SELECT t.c%zu, sum(t.v%zu) FROM s%zu.table_%zu t JOIN dim_%zu d ON "
                         "d.id = t.d_id WHERE t.day BETWEEN $1 AND $2",
                         k % 7, k % 5, k % 13, k, k % 31);
        for (size_t i = 0; i < pad / 20 && n < 660; i++)
            n += snprintf(t + n, 700 - (size_t)n, " AND t.f%zu = $%zu", i, i + 3);
        snprintf(t + n, 700 - (size_t)n, " GROUP BY 1 ORDER BY 2 DESC LIMIT %s", "$100");
        g->shape_text[k] = t;
    }
    return 0;
}

static void gen_free(gen_t *g)
{
    for (size_t k = 0; k < NSHAPES; k++)
        free(g->shape_text[k]);
}

static const char insert_sql[] =
    "INSERT INTO queries (started_at, finished_at, session_id, backend_pid, \"user\", database, "
    "application, client_addr, tags, fingerprint, normalized, kind, protocol, est_planner_cost, "
    "est_cost_micro, compute_s, rows, bytes_out, cost_micro, status, sqlstate, budget_id, "
    "instance) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,1)";

/* Binds the status columns of a statement: mostly ok, some errors,
 * cancellations, refusals and budget cancellations. */
static void bind_status(gen_t *g, sqlite3_stmt *st, double *compute, int64_t *cost)
{
    double x = uniform(g);
    const char *status = "ok", *sqlstate = NULL;
    int64_t budget = 0;
    if (x < 0.001) {
        status = "refused", sqlstate = "53400", budget = 1 + (int64_t)(next_u64(g) % 3);
        *compute = 0, *cost = 0;
    } else if (x < 0.0015) {
        status = "budget_cancelled", sqlstate = "57014", budget = 1 + (int64_t)(next_u64(g) % 3);
    } else if (x < 0.004) {
        status = "cancelled", sqlstate = "57014";
    } else if (x < 0.015) {
        status = "error", sqlstate = "42P01";
    }
    sqlite3_bind_text(st, 20, status, -1, SQLITE_STATIC);
    if (sqlstate)
        sqlite3_bind_text(st, 21, sqlstate, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 21);
    if (budget)
        sqlite3_bind_int64(st, 22, budget);
    else
        sqlite3_bind_null(st, 22);
}

/* Inserts n statements spread over [from_us, from_us + DAY_US), in time
 * order as the writer would. Returns 0, or -1. */
static int fill_day(sqlite3 *db, gen_t *g, int64_t from_us, size_t n)
{
    static const char *const dbs[] = {"warehouse", "warehouse", "staging", "analytics"};
    static const char *const teams[] = {"{\"team\":\"growth\"}", "{\"team\":\"finance\"}",
                                        "{\"team\":\"data\",\"dag\":\"daily_rollup\"}", NULL, NULL};
    char users[NUSERS][16], apps[NAPPS][16];
    for (size_t i = 0; i < NUSERS; i++)
        snprintf(users[i], sizeof(users[i]), "user%03zu", i);
    for (size_t i = 0; i < NAPPS; i++)
        snprintf(apps[i], sizeof(apps[i]), i ? "app%zu" : "psql", i);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, insert_sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc = SQLITE_OK;
    for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
        if (i % BATCH == 0)
            rc = sqlite3_exec(db, i ? "COMMIT; BEGIN" : "BEGIN", NULL, NULL, NULL);
        /* Each user runs shapes of their own (dashboards, jobs, habits);
         * the ones they run rarely are the expensive ones. */
        size_t u = draw(g, g->user_cdf, NUSERS), r = draw(g, g->pool_cdf, POOL);
        size_t s = (u * 7919 + r) % NSHAPES;
        int64_t start = from_us + (int64_t)((double)i / (double)n * (double)DAY_US);
        double compute = exp(g->shape_mu[s] + 5.0 * (double)r / POOL + 0.6 * normal(g));
        int64_t rows = (int64_t)exp(2 + 2 * normal(g));
        int64_t bytes = rows * 120 + 60;
        int64_t cost = pgt_pricing_cost(&g->price, compute, bytes);
        bind_status(g, st, &compute, &cost);
        sqlite3_bind_int64(st, 1, start);
        sqlite3_bind_int64(st, 2, start + (int64_t)(compute * 1e6));
        sqlite3_bind_int64(st, 3, (int64_t)(i / 50));
        sqlite3_bind_int(st, 4, 1000 + (int)(i % 500));
        sqlite3_bind_text(st, 5, users[u], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, dbs[s % 4], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, apps[(u + s) % NAPPS], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 8, "10.0.0.7:51234", -1, SQLITE_STATIC);
        if (teams[u % 5])
            sqlite3_bind_text(st, 9, teams[u % 5], -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 9);
        sqlite3_bind_int64(st, 10, (int64_t)g->shape_fp[s]);
        sqlite3_bind_text(st, 11, g->shape_text[s], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 12, g->shape_kind[s], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 13, "extended", -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 14, compute * 1000);
        sqlite3_bind_int64(st, 15, cost);
        sqlite3_bind_double(st, 16, compute);
        sqlite3_bind_int64(st, 17, rows);
        sqlite3_bind_int64(st, 18, bytes);
        sqlite3_bind_int64(st, 19, cost);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = SQLITE_ERROR;
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Statements on the day starting at from_us, or -1. */
static int64_t count_day(sqlite3 *db, int64_t from_us)
{
    sqlite3_stmt *st;
    int64_t n = -1;
    if (sqlite3_prepare_v2(db,
                           "SELECT count(*) FROM queries WHERE started_at >= ?1 AND "
                           "started_at < ?2",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, from_us);
    sqlite3_bind_int64(st, 2, from_us + DAY_US);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static const char budgets_sql[] =
    "DELETE FROM budgets;"
    "INSERT INTO budgets (id, subject_type, subject, period, limit_micro, warn_pcts, action, "
    "created_at) VALUES"
    " (1, 'user', 'user000', 'day', 50000000, '[50,80]', 'block', 0),"
    " (2, 'team', 'data', 'week', 900000000, '[80]', 'warn', 0),"
    " (3, 'default', '', 'month', 200000000, '[80]', 'block', 0),"
    " (4, 'database', 'staging', 'day', 1000000000000, '[80]', 'block', 0);"
    "INSERT OR IGNORE INTO teams (id, name, created_at) VALUES (1, 'data', 0);"
    "INSERT OR IGNORE INTO team_members VALUES (1, 'user002'), (1, 'user003');";

/* Makes sure the ledger at path holds the bench's data. Returns 0, or -1. */
static int prepare_ledger(const char *path, size_t rows, size_t history)
{
    char err[512];
    int version;
    sqlite3 *db = pgt_ledger_db_open(path, true, &version, err, sizeof(err));
    if (!db) {
        fprintf(stderr, "report_bench: %s: %s\n", path, err);
        return -1;
    }
    int rc = 0;
    bool fresh = count_day(db, DAY0_US) != (int64_t)rows;
    for (int d = 1; !fresh && d <= HISTORY_DAYS; d++)
        fresh = count_day(db, DAY0_US - d * DAY_US) != (int64_t)history;
    if (fresh) {
        gen_t *g = malloc(sizeof(*g));
        printf("filling %s: %zu statements on %s, %zu on each of the %d days before\n", path, rows,
               REPORT_DATE, history, HISTORY_DAYS);
        fflush(stdout);
        rc = g && gen_init(g) == 0 ? 0 : -1;
        (void)sqlite3_exec(db, "PRAGMA synchronous=OFF; PRAGMA cache_size=-2000000", NULL, NULL,
                           NULL);
        if (rc == 0)
            rc = sqlite3_exec(db, "DELETE FROM queries", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
        for (int d = HISTORY_DAYS; rc == 0 && d >= 1; d--)
            rc = fill_day(db, g, DAY0_US - d * DAY_US, history);
        if (rc == 0)
            rc = fill_day(db, g, DAY0_US, rows);
        if (rc == 0)
            rc = sqlite3_exec(db, budgets_sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
        if (rc == 0)
            rc = sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE); ANALYZE", NULL, NULL, NULL) ==
                         SQLITE_OK
                     ? 0
                     : -1;
        if (rc != 0)
            fprintf(stderr, "report_bench: filling: %s\n", sqlite3_errmsg(db));
        if (g)
            gen_free(g);
        free(g);
    }
    sqlite3_close(db);
    return rc;
}

/* Puts the bench's budgets in the ledger, or takes them out. Returns 0, or
 * -1. */
static int set_budgets(const char *path, bool on)
{
    char err[512];
    int version;
    sqlite3 *db = pgt_ledger_db_open(path, true, &version, err, sizeof(err));
    int rc = db ? sqlite3_exec(db, on ? budgets_sql : "DELETE FROM budgets", NULL, NULL, NULL)
                : SQLITE_ERROR;
    if (rc != SQLITE_OK)
        fprintf(stderr, "report_bench: budgets: %s\n", db ? sqlite3_errmsg(db) : err);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Times RUNS builds and, when render, the renderers of the last one.
 * Returns 0, or -1. */
static int time_report(const char *path, const char *label, bool render)
{
    char err[512];
    int version;
    sqlite3 *db = pgt_ledger_db_open(path, false, &version, err, sizeof(err));
    if (!db) {
        fprintf(stderr, "report_bench: %s: %s\n", path, err);
        return -1;
    }
    pgt_report_opts_t opts = {.top = 10, .currency = "USD"};
    double t[RUNS];
    json_t *report = NULL;
    for (int i = 0; i < RUNS; i++) {
        json_decref(report);
        double t0 = now_s();
        report = pgt_report_build(db, REPORT_DATE, &opts, err, sizeof(err));
        t[i] = now_s() - t0;
        if (!report) {
            fprintf(stderr, "report_bench: building: %s\n", err);
            sqlite3_close(db);
            return -1;
        }
    }
    qsort(t, RUNS, sizeof(*t), cmp_double);
    printf("build, %-26s median %.3f s (best %.3f s, worst %.3f s of %d)\n", label, t[RUNS / 2],
           t[0], t[RUNS - 1], RUNS);
    json_t *totals = json_object_get(report, "totals");
    printf("statements         %lld\n",
           (long long)json_integer_value(json_object_get(totals, "statements")));
    int rc = 0;
    for (int f = PGT_REPORT_FORMAT_TEXT; render && f <= PGT_REPORT_FORMAT_SLACK; f++) {
        double t0 = now_s();
        char *out = pgt_report_render(report, (pgt_report_format_t)f, NULL, err, sizeof(err));
        double dt = now_s() - t0;
        if (!out) {
            fprintf(stderr, "report_bench: rendering: %s\n", err);
            rc = -1;
            break;
        }
        printf("render %-10s  %.2f ms, %zu bytes\n", pgt_report_format_name((pgt_report_format_t)f),
               dt * 1e3, strlen(out));
        free(out);
    }
    json_decref(report);
    sqlite3_close(db);
    return rc;
}

int main(int argc, char **argv)
{
    size_t rows = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000000;
    const char *path = argc > 2 ? argv[2] : "/tmp/pgtally-report-bench.db";
    size_t history = argc > 3 ? strtoul(argv[3], NULL, 10) : rows / 10;
    char err[256];
    if (rows == 0) {
        fprintf(stderr, "usage: report_bench [ROWS > 0 [LEDGER [HISTORY_ROWS]]]\n");
        return 2;
    }
    if (pgt_timezone_apply("UTC", err, sizeof(err)) != 0) {
        fprintf(stderr, "report_bench: %s\n", err);
        return 1;
    }
    if (getenv("REPORT_BENCH_DEBUG"))
        pgt_log_set_level(PGT_LOG_DEBUG); /* each task's time */
    double t0 = now_s();
    if (prepare_ledger(path, rows, history) != 0)
        return 1;
    printf("ledger ready       %.1f s\n", now_s() - t0);
    if (set_budgets(path, true) != 0 || time_report(path, "with its 4 budgets:", true) != 0)
        return 1;
    /* The same without budgets, then put them back. */
    int rc = set_budgets(path, false) == 0 ? time_report(path, "without budgets:", false) : -1;
    return set_budgets(path, true) == 0 && rc == 0 ? 0 : 1;
}
