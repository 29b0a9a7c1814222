/* The ledger thread of budget enforcement: its own SQLite connection polls
 * the settings version and other processes' rows, reads role memberships
 * through libpq and records alerts; the loop takes what it posts. See
 * include/pgtally/budget_sync.h and docs/budgets.md. */
#include "pgtally/budget_sync.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgtally/log.h"
#include "pgtally/period.h"

/* Rows read from the ledger per poll; more wait for the next one. */
#define POLL_ROWS 20000
/* Day, week and month. */
#define NPERIODS (PGT_PERIOD_MONTH + 1)

struct pgt_budget_sync {
    pthread_t thread; /* the ledger thread */
    uv_async_t *news; /* the loop's: there is news */

    /* Shared with the loop, under mu. */
    pthread_mutex_t mu;              /* guards what follows */
    pthread_cond_t cv;               /* wakes the thread: alerts, or stop */
    bool stop;                       /* the thread must end */
    pgt_budget_config_t *posted_cfg; /* new budgets, for the loop */
    pgt_budget_row_t *rows;          /* new spend, for the loop */
    size_t nrows;                    /* entries in rows */
    size_t rows_cap;                 /* room in rows */
    pgt_budget_alert_t *alerts;      /* alerts, for the thread */
    size_t nalerts;                  /* entries in alerts */
    size_t alerts_cap;               /* room in alerts */

    /* The thread's own (set before it starts). */
    char *path;           /* the ledger */
    int64_t instance;     /* this process's rows */
    char *admin_conninfo; /* where role memberships are read, or "" */
    int role_refresh_ms;  /* how often */
    int interval_ms;      /* how often the ledger is polled */
};

/* Makes room for one more item after len in the array *items of *cap
 * items of size bytes. Returns false when out of memory. */
static bool reserve(void **items, size_t *cap, size_t len, size_t size)
{
    if (len < *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *n = realloc(*items, ncap * size);
    if (!n)
        return false;
    *items = n;
    *cap = ncap;
    return true;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

/* ---- the thread ----------------------------------------------------------- */

static void post_row(pgt_budget_sync_t *s, sqlite3_stmt *st, int64_t started_us, int period)
{
    pgt_budget_row_t r = {.user = dup_or_empty((const char *)sqlite3_column_text(st, 0)),
                          .database = dup_or_empty((const char *)sqlite3_column_text(st, 1)),
                          .application = dup_or_empty((const char *)sqlite3_column_text(st, 2)),
                          .micro = sqlite3_column_int64(st, 3),
                          .started_us = started_us,
                          .period = period};
    pthread_mutex_lock(&s->mu);
    if (r.user && r.database && r.application &&
        reserve((void **)&s->rows, &s->rows_cap, s->nrows, sizeof(r))) {
        s->rows[s->nrows++] = r;
        r.user = r.database = r.application = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    free(r.user);
    free(r.database);
    free(r.application);
}

/* The id of the newest row of queries (0 when none), or -1 on an error. */
static int64_t max_id(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int64_t id = -1;
    if (sqlite3_prepare_v2(db, "SELECT coalesce(max(id), 0) FROM queries", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return id;
}

/* At start: what every other process (and earlier runs) spent in each
 * current period, up to row max_id. */
static int load_sums(pgt_budget_sync_t *s, sqlite3 *db, int64_t *max)
{
    sqlite3_stmt *st = NULL;
    if ((*max = max_id(db)) < 0)
        return -1;
    const char *sql = "SELECT \"user\", database, application, sum(cost_micro) FROM queries"
                      " WHERE started_at >= ?1 AND id <= ?2 AND (instance IS NULL OR instance <> "
                      "?3) GROUP BY 1, 2, 3";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    int64_t now = pgt_clock_us();
    for (int p = 0; p < NPERIODS; p++) {
        int64_t start, end;
        pgt_period_bounds((pgt_period_t)p, now, &start, &end);
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, start);
        sqlite3_bind_int64(st, 2, *max);
        sqlite3_bind_int64(st, 3, s->instance);
        while (sqlite3_step(st) == SQLITE_ROW)
            post_row(s, st, start, p);
    }
    sqlite3_finalize(st);
    return 0;
}

/* Statements other processes recorded since row *last_id. */
static int poll_rows(pgt_budget_sync_t *s, sqlite3 *db, sqlite3_stmt *st, int64_t *last_id)
{
    /* Up to the newest row now, at most POLL_ROWS: this process's own rows
     * in the range are read once and passed over, never read again. */
    int64_t upto = max_id(db);
    if (upto < 0)
        return -1;
    if (upto > *last_id + POLL_ROWS)
        upto = *last_id + POLL_ROWS;
    if (upto <= *last_id)
        return 0;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, *last_id);
    sqlite3_bind_int64(st, 2, upto);
    sqlite3_bind_int64(st, 3, s->instance);
    int rc, n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        post_row(s, st, sqlite3_column_int64(st, 4), -1);
        n++;
    }
    if (rc != SQLITE_DONE)
        return -1;
    *last_id = upto;
    return n;
}

/* Role memberships from the server (admin_conninfo) into role_members. */
static int refresh_roles(pgt_budget_sync_t *s, sqlite3 *db)
{
    PGconn *conn = PQconnectdb(s->admin_conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        PGT_WARN("role_refresh_failed", "error=\"%s\" hint=\"check admin_conninfo\"",
                 PQerrorMessage(conn));
        PQfinish(conn);
        return -1;
    }
    PGresult *res = PQexec(conn, "SELECT r.rolname, m.rolname FROM pg_roles r JOIN pg_roles m"
                                 " ON m.oid <> r.oid AND pg_has_role(m.oid, r.oid, 'MEMBER')"
                                 " WHERE m.rolcanlogin");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        PGT_WARN("role_refresh_failed", "error=\"%s\"", PQresultErrorMessage(res));
        PQclear(res);
        PQfinish(conn);
        return -1;
    }
    int64_t now = pgt_clock_us();
    sqlite3_stmt *ins = NULL;
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE; DELETE FROM role_members", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO role_members VALUES (?1, ?2, ?3)", -1,
                                &ins, NULL);
    for (int i = 0; rc == SQLITE_OK && i < PQntuples(res); i++) {
        sqlite3_reset(ins);
        sqlite3_bind_text(ins, 1, PQgetvalue(res, i, 0), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 2, PQgetvalue(res, i, 1), -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 3, now);
        if (sqlite3_step(ins) != SQLITE_DONE)
            rc = SQLITE_ERROR;
    }
    sqlite3_finalize(ins);
    sqlite3_exec(db, rc == SQLITE_OK ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL);
    PQclear(res);
    PQfinish(conn);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Records queued alerts; each is logged by the one process that records
 * it first. */
static void write_alerts(pgt_budget_sync_t *s, sqlite3 *db)
{
    pthread_mutex_lock(&s->mu);
    pgt_budget_alert_t *alerts = s->alerts;
    size_t n = s->nalerts;
    s->alerts = NULL;
    s->nalerts = s->alerts_cap = 0;
    pthread_mutex_unlock(&s->mu);
    sqlite3_stmt *st = NULL;
    if (n > 0 && sqlite3_prepare_v2(db,
                                    "INSERT OR IGNORE INTO alerts_sent (budget_id, period_start,"
                                    " threshold_pct, channel, sent_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                                    -1, &st, NULL) == SQLITE_OK) {
        for (size_t i = 0; i < n; i++) {
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, alerts[i].budget_id);
            sqlite3_bind_int64(st, 2, alerts[i].period_start);
            sqlite3_bind_int(st, 3, alerts[i].pct);
            sqlite3_bind_text(st, 4, alerts[i].channel, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 5, pgt_clock_us());
            if (sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(db) == 1)
                PGT_WARN("budget_alert", "budget=%lld threshold=%d message=\"%s\"",
                         (long long)alerts[i].budget_id, alerts[i].pct, alerts[i].text);
        }
    }
    sqlite3_finalize(st);
    free(alerts);
}

/* Loads the budgets for the loop. Returns how many there are, or -1. */
static long post_config(pgt_budget_sync_t *s, sqlite3 *db)
{
    char err[256];
    pgt_budget_config_t *cfg = NULL;
    if (pgt_budget_config_load(db, &cfg, err, sizeof(err)) != 0) {
        PGT_WARN("budgets_load_failed", "error=\"%s\"", err);
        return -1;
    }
    long n = (long)cfg->nbudgets;
    pthread_mutex_lock(&s->mu);
    pgt_budget_config_free(s->posted_cfg);
    s->posted_cfg = cfg;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* What the thread remembers between polls. */
typedef struct poll_state {
    sqlite3 *db;        /* the ledger, or NULL until opened */
    sqlite3_stmt *poll; /* other processes' rows since an id */
    int64_t version;    /* settings_version of the budgets posted, -1: none */
    int64_t last_id;    /* the last row read */
    int64_t next_roles; /* when role memberships are read next */
    bool loaded;        /* the sums of the current periods were read */
    bool active;        /* a budget exists: other processes' spend is followed */
} poll_state_t;

/* Opens the ledger and prepares the poll, when not done yet. Returns
 * whether both are ready. */
static bool open_ledger(pgt_budget_sync_t *s, poll_state_t *ps)
{
    char err[256];
    if (!ps->db && pgt_budget_store_open(s->path, true, &ps->db, err, sizeof(err)) != 0) {
        PGT_WARN("budgets_ledger_failed", "ledger=%s error=\"%s\"", s->path, err);
        ps->db = NULL;
    }
    if (ps->db && !ps->poll &&
        sqlite3_prepare_v2(ps->db,
                           "SELECT \"user\", database, application, cost_micro, started_at "
                           "FROM queries WHERE id > ?1 AND id <= ?2 AND (instance IS NULL OR "
                           "instance <> ?3)",
                           -1, &ps->poll, NULL) != SQLITE_OK) {
        PGT_WARN("budgets_ledger_failed", "error=\"%s\"", sqlite3_errmsg(ps->db));
        ps->poll = NULL;
    }
    return ps->db && ps->poll;
}

/* One poll: role memberships when due, budgets when their version moved,
 * other processes' spend, then the queued alerts. Tells the loop of news. */
static void poll_once(pgt_budget_sync_t *s, poll_state_t *ps)
{
    bool news = false;
    int64_t now = pgt_clock_us();
    if (*s->admin_conninfo && now >= ps->next_roles) {
        ps->next_roles = now + (int64_t)s->role_refresh_ms * 1000;
        if (refresh_roles(s, ps->db) == 0)
            ps->version = -1; /* memberships changed: reload */
    }
    int64_t v = pgt_budget_settings_version(ps->db);
    if (v != ps->version) {
        /* Spend of other processes is followed from the first budget on;
         * until then no row is read. */
        if (post_config(s, ps->db) > 0)
            ps->active = true;
        ps->version = v;
        news = true;
    }
    if (ps->active && !ps->loaded) {
        ps->loaded = load_sums(s, ps->db, &ps->last_id) == 0;
        news = true;
    } else if (ps->loaded && poll_rows(s, ps->db, ps->poll, &ps->last_id) > 0) {
        news = true;
    }
    write_alerts(s, ps->db);
    if (news)
        uv_async_send(s->news);
}

static void *thread_main(void *arg)
{
    pgt_budget_sync_t *s = arg;
    poll_state_t ps = {.version = -1};
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        pthread_mutex_unlock(&s->mu);
        if (open_ledger(s, &ps))
            poll_once(s, &ps);
        pthread_mutex_lock(&s->mu);
        if (s->stop)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (int64_t)s->interval_ms * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        if (s->nalerts == 0)
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    if (ps.db)
        write_alerts(s, ps.db);
    sqlite3_finalize(ps.poll);
    pgt_budget_store_close(ps.db);
    return NULL;
}

/* ---- the loop's side ------------------------------------------------------ */

static void sync_free_fields(pgt_budget_sync_t *s)
{
    pgt_budget_sync_rows_free(s->rows, s->nrows);
    free(s->alerts);
    pgt_budget_config_free(s->posted_cfg);
    free(s->path);
    free(s->admin_conninfo);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

pgt_budget_sync_t *pgt_budget_sync_start(const pgt_budget_sync_opts_t *o, char *err, size_t errlen)
{
    pgt_budget_sync_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->news = o->news;
    s->instance = o->instance;
    s->interval_ms = o->interval_ms;
    s->role_refresh_ms = o->role_refresh_ms;
    s->path = strdup(o->ledger_path);
    s->admin_conninfo = dup_or_empty(o->admin_conninfo);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (!s->path || !s->admin_conninfo) {
        snprintf(err, errlen, "out of memory");
        sync_free_fields(s);
        return NULL;
    }
    if (pthread_create(&s->thread, NULL, thread_main, s) != 0) {
        snprintf(err, errlen, "cannot start the budget thread");
        sync_free_fields(s);
        return NULL;
    }
    return s;
}

void pgt_budget_sync_take(pgt_budget_sync_t *s, pgt_budget_config_t **cfg, pgt_budget_row_t **rows,
                          size_t *nrows)
{
    pthread_mutex_lock(&s->mu);
    *cfg = s->posted_cfg;
    s->posted_cfg = NULL;
    *rows = s->rows;
    *nrows = s->nrows;
    s->rows = NULL;
    s->nrows = s->rows_cap = 0;
    pthread_mutex_unlock(&s->mu);
}

void pgt_budget_sync_rows_free(pgt_budget_row_t *rows, size_t n)
{
    for (size_t i = 0; rows && i < n; i++) {
        free(rows[i].user);
        free(rows[i].database);
        free(rows[i].application);
    }
    free(rows);
}

void pgt_budget_sync_alert(pgt_budget_sync_t *s, const pgt_budget_alert_t *a)
{
    pthread_mutex_lock(&s->mu);
    if (reserve((void **)&s->alerts, &s->alerts_cap, s->nalerts, sizeof(*a)))
        s->alerts[s->nalerts++] = *a;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void pgt_budget_sync_free(pgt_budget_sync_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    sync_free_fields(s);
}
