/* Benchmark of the daily report (not a test): fills a ledger through its
 * writer (which keeps the rollups the report reads) with a day of
 * statements of realistic spread (users and shapes of Zipf-like frequency,
 * log-normal costs, a few errors, refusals and budgets) plus the seven days
 * before it, then times pgt_report_build and every renderer on that day.
 * Usage: report_bench [ROWS [LEDGER [HISTORY_ROWS]]]: ROWS statements on
 * the report day (default 10000000), HISTORY_ROWS on each of the 7 days
 * before (default ROWS / 10); LEDGER is an SQLite path or a PostgreSQL URI.
 * An existing LEDGER with the right counts is reused, so runs after the
 * first skip the filling. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pgtally/db.h"
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
#define IN_FLIGHT 200000 /* records submitted and not yet written, at most */
#define RUNS 5
#define SPOOL_PATH "/tmp/pgtally-report-bench.spool" /* for a PostgreSQL ledger */

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

/* Sets the status columns of a statement: mostly ok, some errors,
 * cancellations, refusals and budget cancellations. */
static void set_status(gen_t *g, pgt_record_t *r)
{
    double x = uniform(g);
    if (x < 0.001) {
        r->status = PGT_QUERY_REFUSED, r->budget_id = 1 + (int64_t)(next_u64(g) % 3);
        memcpy(r->sqlstate, "53400", 6);
        r->compute_s = 0, r->cost_micro = 0;
    } else if (x < 0.0015) {
        r->status = PGT_QUERY_BUDGET_CANCELLED, r->budget_id = 1 + (int64_t)(next_u64(g) % 3);
        memcpy(r->sqlstate, "57014", 6);
    } else if (x < 0.004) {
        r->status = PGT_QUERY_CANCELLED;
        memcpy(r->sqlstate, "57014", 6);
    } else if (x < 0.015) {
        r->status = PGT_QUERY_ERROR;
        memcpy(r->sqlstate, "42P01", 6);
    }
}

/* The strings of a record: every one set, or false when out of memory. */
static bool set_strings(pgt_record_t *r, const char *user, const char *db, const char *app,
                        const char *tags, const char *text, const char *kind)
{
    r->user = strdup(user);
    r->database = strdup(db);
    r->application = strdup(app);
    r->client_addr = strdup("10.0.0.7:51234");
    r->tags_json = tags ? strdup(tags) : NULL;
    r->normalized = strdup(text);
    r->kind = strdup(kind);
    r->protocol = strdup("extended");
    return r->user && r->database && r->application && r->client_addr && (!tags || r->tags_json) &&
           r->normalized && r->kind && r->protocol;
}

/* Waits while more than IN_FLIGHT records wait in the writer's queue
 * (unless it fails: then they go to memory and the spool). */
static void throttle(pgt_ledger_t *l)
{
    for (;;) {
        pgt_ledger_stats_t st;
        pgt_ledger_stats(l, &st);
        uint64_t out = st.written + st.pending;
        if (st.failing || st.submitted <= out + IN_FLIGHT)
            return;
        usleep(10000);
    }
}

/* One statement numbered i of n on the day starting at from_us, or NULL
 * when out of memory. */
static pgt_record_t *make_record(gen_t *g, int64_t from_us, size_t i, size_t n)
{
    static const char *const dbs[] = {"warehouse", "warehouse", "staging", "analytics"};
    static const char *const teams[] = {"{\"team\":\"growth\"}", "{\"team\":\"finance\"}",
                                        "{\"team\":\"data\",\"dag\":\"daily_rollup\"}", NULL, NULL};
    char user[16], app[16];
    /* Each user runs shapes of their own (dashboards, jobs, habits); the
     * ones they run rarely are the expensive ones. */
    size_t u = draw(g, g->user_cdf, NUSERS), k = draw(g, g->pool_cdf, POOL);
    size_t s = (u * 7919 + k) % NSHAPES;
    snprintf(user, sizeof(user), "user%03zu", u);
    snprintf(app, sizeof(app), (u + s) % NAPPS ? "app%zu" : "psql", (u + s) % NAPPS);
    pgt_record_t *r = pgt_record_new();
    if (!r ||
        !set_strings(r, user, dbs[s % 4], app, teams[u % 5], g->shape_text[s], g->shape_kind[s])) {
        pgt_record_free(r);
        return NULL;
    }
    r->started_us = from_us + (int64_t)((double)i / (double)n * (double)DAY_US);
    r->compute_s = exp(g->shape_mu[s] + 5.0 * (double)k / POOL + 0.6 * normal(g));
    r->rows = (int64_t)exp(2 + 2 * normal(g));
    r->bytes_out = r->rows * 120 + 60;
    r->cost_micro = pgt_pricing_cost(&g->price, r->compute_s, r->bytes_out);
    r->est_planner_cost = r->compute_s * 1000;
    r->est_cost_micro = r->cost_micro;
    set_status(g, r);
    r->finished_us = r->started_us + (int64_t)(r->compute_s * 1e6);
    r->session_id = i / 50;
    r->backend_pid = 1000 + (int32_t)(i % 500);
    r->fingerprint = g->shape_fp[s];
    return r;
}

/* Submits n statements spread over [from_us, from_us + DAY_US), in time
 * order as the proxy would. Returns 0, or -1 when out of memory. */
static int fill_day(pgt_ledger_t *l, gen_t *g, int64_t from_us, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pgt_record_t *r = make_record(g, from_us, i, n);
        if (!r)
            return -1;
        pgt_ledger_submit(l, r);
        if (i % 10000 == 0)
            throttle(l);
    }
    return 0;
}

/* Statements on the day starting at from_us, or -1. */
static int64_t count_day(pgt_db_t *db, int64_t from_us)
{
    int64_t n = -1;
    char err[256];
    if (pgt_db_int_query(db, "counting", err, sizeof(err), &n,
                         "SELECT coalesce(sum(statements), 0) FROM rollups WHERE day = ?1", "i",
                         (int64_t)pgt_local_day(from_us)) != 0)
        return -1;
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
    "INSERT INTO teams (id, name, created_at) VALUES (1, 'data', 0) ON CONFLICT DO NOTHING;"
    "INSERT INTO team_members VALUES (1, 'user002'), (1, 'user003') ON CONFLICT DO NOTHING;";

/* The statements of every day, deleted before filling again. */
static const char empty_sql[] = "DELETE FROM queries; DELETE FROM rollups; DELETE FROM spend;"
                                " DELETE FROM shapes";

/* Whether the ledger already holds rows statements on the report day and
 * history on each day before. */
static bool filled(pgt_db_t *db, size_t rows, size_t history)
{
    if (count_day(db, DAY0_US) != (int64_t)rows)
        return false;
    for (int d = 1; d <= HISTORY_DAYS; d++)
        if (count_day(db, DAY0_US - d * DAY_US) != (int64_t)history)
            return false;
    return true;
}

/* Fills the ledger at w through its writer. Returns 0, or -1. */
static int fill(const pgt_ledger_where_t *w, size_t rows, size_t history)
{
    char err[512];
    gen_t *g = malloc(sizeof(*g));
    if (!g || gen_init(g) != 0) {
        fprintf(stderr, "report_bench: out of memory\n");
        free(g);
        return -1;
    }
    pgt_ledger_opts_t o = {.where = *w,
                           .instance = (int64_t)time(NULL),
                           .instance_name = "report_bench",
                           .queue_capacity = 2 * IN_FLIGHT};
    if (pgt_db_backend_of(w->ledger) == PGT_DB_POSTGRESQL)
        o.spool_path = SPOOL_PATH;
    pgt_ledger_t *l = pgt_ledger_open(&o, err, sizeof(err));
    int rc = l ? 0 : -1;
    if (!l)
        fprintf(stderr, "report_bench: opening the writer: %s\n", err);
    for (int d = HISTORY_DAYS; rc == 0 && d >= 1; d--)
        rc = fill_day(l, g, DAY0_US - d * DAY_US, history);
    if (rc == 0)
        rc = fill_day(l, g, DAY0_US, rows);
    pgt_ledger_close(l);
    gen_free(g);
    free(g);
    return rc;
}

/* Makes sure the ledger at w holds the bench's data. Returns 0, or -1. */
static int prepare_ledger(const pgt_ledger_where_t *w, size_t rows, size_t history)
{
    char err[512];
    int version;
    pgt_db_t *db = pgt_ledger_db_open(w, true, &version, err, sizeof(err));
    if (!db) {
        fprintf(stderr, "report_bench: %s: %s\n", w->ledger, err);
        return -1;
    }
    int rc = 0;
    if (!filled(db, rows, history)) {
        printf("filling %s: %zu statements on %s, %zu on each of the %d days before\n", w->ledger,
               rows, REPORT_DATE, history, HISTORY_DAYS);
        fflush(stdout);
        rc = pgt_db_exec(db, "emptying", empty_sql, err, sizeof(err));
        if (rc == 0)
            rc = fill(w, rows, history);
        if (rc == 0 && !filled(db, rows, history)) {
            snprintf(err, sizeof(err), "the writer did not write every statement");
            rc = -1;
        }
        if (rc == 0)
            rc = pgt_db_exec(db, "setting budgets", budgets_sql, err, sizeof(err));
        if (rc == 0 && pgt_db_backend(db) == PGT_DB_SQLITE)
            rc = pgt_db_exec(db, "checkpointing", "PRAGMA wal_checkpoint(TRUNCATE)", err,
                             sizeof(err));
        if (rc == 0)
            rc = pgt_db_exec(db, "analyzing", "ANALYZE", err, sizeof(err));
        if (rc != 0)
            fprintf(stderr, "report_bench: filling: %s\n", err);
    }
    pgt_db_close(db);
    return rc;
}

/* Puts the bench's budgets in the ledger, or takes them out. Returns 0, or
 * -1. */
static int set_budgets(const pgt_ledger_where_t *w, bool on)
{
    char err[512];
    int version;
    pgt_db_t *db = pgt_ledger_db_open(w, true, &version, err, sizeof(err));
    int rc = db ? pgt_db_exec(db, "setting budgets", on ? budgets_sql : "DELETE FROM budgets", err,
                              sizeof(err))
                : -1;
    if (rc != 0)
        fprintf(stderr, "report_bench: budgets: %s\n", err);
    pgt_db_close(db);
    return rc;
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
static int time_report(const pgt_ledger_where_t *w, const char *label, bool render)
{
    char err[512];
    int version;
    pgt_db_t *db = pgt_ledger_db_open(w, false, &version, err, sizeof(err));
    if (!db) {
        fprintf(stderr, "report_bench: %s: %s\n", w->ledger, err);
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
            pgt_db_close(db);
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
    pgt_db_close(db);
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
        pgt_log_set_level(PGT_LOG_DEBUG); /* the writer's batches */
    pgt_ledger_where_t w = {.ledger = path};
    double t0 = now_s();
    if (prepare_ledger(&w, rows, history) != 0)
        return 1;
    printf("ledger ready       %.1f s\n", now_s() - t0);
    if (set_budgets(&w, true) != 0 || time_report(&w, "with its 4 budgets:", true) != 0)
        return 1;
    /* The same without budgets, then put them back. */
    int rc = set_budgets(&w, false) == 0 ? time_report(&w, "without budgets:", false) : -1;
    return set_budgets(&w, true) == 0 && rc == 0 ? 0 : 1;
}
