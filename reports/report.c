/* The daily report's builder: reads one local date of the ledger (through
 * the parallel scan of report_scan.c, plus a few lookups by id and by
 * shape) and assembles the report as a JSON document, whose schema is in
 * docs/report.md. Renderers only ever see that document. */
#include "pgtally/report.h"
#include "pgtally/text.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pgtally/budget_store.h"
#include "pgtally/period.h"
#include "pgtally/pricing.h"
#include "report_scan.h"

#define REPORT_VERSION 1    /* the document's "version" */
#define HISTORY_DAYS 7      /* the days of the mean the day is compared with */
#define MAX_TOP 1000        /* the largest top list a caller may ask for */
#define SHAPE_USER_NAMES 10 /* users named per shape */
#define MAX_THREADS 4       /* worker threads at most */
#define SLICES_PER_THREAD 2 /* slices of the day per worker, for balance */
#define US_PER_S 1000000LL

/* ---- JSON helpers -------------------------------------------------------- */

/* Sets o[key] = v (stealing v); clears *ok when anything is NULL or fails. */
static void put(json_t *o, const char *key, json_t *v, bool *ok)
{
    if (!o || !v || json_object_set_new(o, key, v) != 0)
        *ok = false;
}

/* Sets key_micro (an integer) and key (the exact decimal, "12.500000"). */
static void put_money(json_t *o, const char *key, int64_t micro, bool *ok)
{
    char name[64], text[PGT_MONEY_TEXT_MAX];
    snprintf(name, sizeof(name), "%s_micro", key);
    put(o, name, json_integer(micro), ok);
    put(o, key, json_string(pgt_money_format(micro, NULL, text, sizeof(text))), ok);
}

/* Percent change from before to now, to a tenth; null when before is 0. */
static json_t *change_pct(double now, double before)
{
    if (before == 0)
        return json_null();
    return json_real(round((now - before) * 1000.0 / before) / 10.0);
}

static json_t *pct_of(double part, double whole)
{
    return json_real(whole > 0 ? round(part * 1000.0 / whole) / 10.0 : 0.0);
}

/* Writes unix microseconds as local RFC 3339 with microseconds and the
 * offset, "2031-05-13T09:12:33.000120+02:00". Returns buf. */
static char *fmt_iso(int64_t us, char *buf, size_t len)
{
    int64_t s = us / US_PER_S - (us % US_PER_S < 0);
    long micro = (long)(us - s * US_PER_S);
    time_t t = (time_t)s;
    struct tm tm;
    localtime_r(&t, &tm);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    long off = tm.tm_gmtoff, a = (off < 0 ? -off : off) % 86400;
    snprintf(buf, len, "%.20s.%06d%c%02d:%02d", date, (int)micro, off < 0 ? '-' : '+',
             (int)(a / 3600), (int)(a / 60 % 60));
    return buf;
}

/* Writes the local date holding us, "2031-05-13". Returns buf. */
static char *fmt_date(int64_t us, char *buf, size_t len)
{
    time_t t = (time_t)(us / US_PER_S - (us % US_PER_S < 0));
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d", &tm);
    return buf;
}

static json_t *jfp(uint64_t fp)
{
    char hex[24];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)fp);
    return json_string(hex);
}

/* ---- The date ------------------------------------------------------------ */

/* Parses a real calendar date "YYYY-MM-DD" and sets the local day's bounds.
 * Returns 0, or -1. */
static int day_bounds(const char *date, int64_t *from, int64_t *to)
{
    int y, m, d, used = 0;
    if (!date || strlen(date) != 10 || sscanf(date, "%4d-%2d-%2d%n", &y, &m, &d, &used) != 3 ||
        used != 10 || date[4] != '-' || date[7] != '-' || y < 1970 || m < 1 || m > 12 || d < 1)
        return -1;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[m - 1] + (m == 2 && leap))
        return -1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d, .tm_hour = 12};
    tm.tm_isdst = -1;
    time_t noon = mktime(&tm);
    if (noon == (time_t)-1)
        return -1;
    pgt_period_bounds(PGT_PERIOD_DAY, (int64_t)noon * US_PER_S, from, to);
    return 0;
}

/* ---- What the build holds ------------------------------------------------ */

/* One budget's spend up to the end of the report date. */
typedef struct spend {
    const pgt_budget_t *b; /* the budget */
    int64_t start, end;    /* its period that holds the date */
    int64_t until;         /* spend counted up to here: the end of the date */
    char **users;          /* per line: the user of a default budget, or NULL (owned) */
    int64_t *spent;        /* per line: micro-units */
    size_t n, cap;         /* lines, and entries allocated */
} spend_t;

/* Everything a build gathers before it writes the document. */
typedef struct build {
    sqlite3 *db;                      /* the caller's connection */
    const pgt_report_opts_t *opts;    /* options */
    int top;                          /* rows per list */
    int version;                      /* the ledger's schema version */
    int64_t from, to;                 /* the day */
    int64_t prev_from;                /* the day before starts here (and ends at from) */
    int64_t hist_from[HISTORY_DAYS];  /* starts of the days of the mean, latest first */
    int64_t first_us;                 /* the ledger's first statement, or INT64_MAX */
    rs_scan_t *day;                   /* slices of the day */
    size_t nday;                      /* slices */
    rs_scan_t *prev;                  /* slices of the day before */
    size_t nprev;                     /* slices */
    rs_scan_t hist[HISTORY_DAYS - 1]; /* totals of the days before that */
    pgt_budget_config_t *budgets;     /* the budgets, or NULL before schema 2 */
    spend_t *spends;                  /* one per budget */
    rs_acc_t all;                     /* the slices of the day, merged */
    rs_names_t prev_users;            /* users of the day before */
    int64_t *prev_cost;               /* their cost, by id in prev_users */
    int64_t prev_statements;          /* totals of the day before */
    int64_t prev_total;               /* micro-units */
    double prev_compute;              /* seconds */
    char err[512];                    /* why it failed */
} build_t;

static int query_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_type(st, 0) == SQLITE_NULL ? INT64_MAX : sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

static int worker_threads(const pgt_report_opts_t *o)
{
    long n = o->threads > 0 ? o->threads : sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

/* Splits [from, to) into n scans of kind. Returns them, or NULL. */
static rs_scan_t *slices(rs_scan_kind_t kind, int64_t from, int64_t to, size_t n, int top,
                         int version)
{
    rs_scan_t *s = calloc(n, sizeof(*s));
    for (size_t i = 0; s && i < n; i++) {
        s[i].kind = kind;
        s[i].from_us = from + (int64_t)((double)(to - from) * (double)i / (double)n);
        s[i].to_us =
            i + 1 == n ? to : from + (int64_t)((double)(to - from) * (double)(i + 1) / (double)n);
        s[i].version = version;
        s[i].acc.top = top;
    }
    return s;
}

/* ---- Budgets ------------------------------------------------------------- */

/* A pgt_budget_spend_cb: keeps one line. */
static int spend_line(const char *user, int64_t spent, void *arg)
{
    spend_t *s = arg;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4;
        char **u = realloc(s->users, cap * sizeof(*u));
        if (u)
            s->users = u;
        int64_t *v = u ? realloc(s->spent, cap * sizeof(*v)) : NULL;
        if (!v)
            return 1;
        s->spent = v;
        s->cap = cap;
    }
    s->users[s->n] = user ? strdup(user) : NULL;
    if (user && !s->users[s->n])
        return 1;
    s->spent[s->n++] = spent;
    return 0;
}

/* An rs_task_fn: the spend of one budget. */
static int spend_task(sqlite3 *db, void *arg, char *err, size_t errlen)
{
    spend_t *s = arg;
    int rc = pgt_budget_spend(db, s->b, s->start, s->until, spend_line, s, err, errlen);
    if (rc > 0)
        snprintf(err, errlen, "out of memory");
    return rc == 0 ? 0 : -1;
}

static void spends_free(build_t *b)
{
    for (size_t i = 0; b->spends && i < b->budgets->nbudgets; i++) {
        for (size_t k = 0; k < b->spends[i].n; k++)
            free(b->spends[i].users[k]);
        free(b->spends[i].users);
        free(b->spends[i].spent);
    }
    free(b->spends);
}

/* Loads the budgets and sets up their spend tasks. Returns 0, or -1. */
static int budgets_load(build_t *b)
{
    if (b->version < 2)
        return 0; /* a ledger of a release without budgets */
    if (pgt_budget_config_load(b->db, &b->budgets, b->err, sizeof(b->err)) != 0)
        return -1;
    size_t n = b->budgets->nbudgets;
    if (n && !(b->spends = calloc(n, sizeof(*b->spends)))) {
        snprintf(b->err, sizeof(b->err), "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        spend_t *s = &b->spends[i];
        s->b = &b->budgets->budgets[i];
        pgt_period_bounds(s->b->period, b->to - 1, &s->start, &s->end);
        s->until = b->to;
    }
    return 0;
}

/* ---- Scanning ------------------------------------------------------------ */

/* Sets up and runs every scan and budget task. Returns 0, or -1. */
static int scan_all(build_t *b)
{
    int threads = worker_threads(b->opts);
    b->nday = (size_t)threads * SLICES_PER_THREAD;
    b->nprev = (size_t)threads;
    b->day = slices(RS_SCAN_FULL, b->from, b->to, b->nday, b->top, b->version);
    b->prev = slices(RS_SCAN_USERS, b->prev_from, b->from, b->nprev, 0, b->version);
    for (int d = 1; d < HISTORY_DAYS; d++)
        b->hist[d - 1] = (rs_scan_t){.kind = RS_SCAN_TOTALS,
                                     .from_us = b->hist_from[d],
                                     .to_us = b->hist_from[d - 1],
                                     .version = b->version};
    size_t nb = b->budgets ? b->budgets->nbudgets : 0;
    size_t n = b->nday + b->nprev + (HISTORY_DAYS - 1) + nb, k = 0;
    rs_task_t *tasks = calloc(n, sizeof(*tasks));
    if (!tasks || !b->day || !b->prev) {
        free(tasks);
        snprintf(b->err, sizeof(b->err), "out of memory");
        return -1;
    }
    /* The largest first, so that the workers end together. */
    for (size_t i = 0; i < b->nday; i++)
        tasks[k++] = (rs_task_t){.fn = rs_scan_task, .arg = &b->day[i], .what = "day"};
    for (size_t i = 0; i < b->nprev; i++)
        tasks[k++] = (rs_task_t){.fn = rs_scan_task, .arg = &b->prev[i], .what = "day_before"};
    for (size_t i = 0; i < nb; i++)
        tasks[k++] = (rs_task_t){.fn = spend_task, .arg = &b->spends[i], .what = "budget"};
    for (int d = 0; d < HISTORY_DAYS - 1; d++)
        tasks[k++] = (rs_task_t){.fn = rs_scan_task, .arg = &b->hist[d], .what = "history"};
    int rc = rs_run(b->db, tasks, n, threads, b->err, sizeof(b->err));
    free(tasks);
    return rc;
}

/* Adds the slice src to the merged dst. Returns 0, or -1 when out of
 * memory. */
static int merge(rs_acc_t *dst, const rs_acc_t *src)
{
    dst->statements += src->statements;
    dst->cost += src->cost;
    dst->compute_s += src->compute_s;
    for (int i = 0; i < RS_STATUS_COUNT; i++)
        dst->by_status[i] += src->by_status[i];
    for (size_t i = 0; i < src->pairs.n; i++) {
        const rs_pair_t *p = &src->pairs.v[i];
        rs_pair_t *q = rs_pairs_get(&dst->pairs, &dst->users, p->fp, src->users.v[p->user],
                                    src->users.lens[p->user], p->uhash);
        if (!q)
            return -1;
        q->statements += p->statements;
        q->cost += p->cost;
        q->compute_s += p->compute_s;
        if (p->max_cost > q->max_cost)
            q->max_cost = p->max_cost;
    }
    for (int i = 0; i < src->ntops; i++)
        if (!rs_top_offer(dst, &src->tops[i]))
            return -1;
    for (size_t i = 0; i < src->nrefusals; i++) {
        const rs_refusal_t *r = &src->refusals[i];
        size_t k = 0;
        while (k < dst->nrefusals && dst->refusals[k].budget_id != r->budget_id)
            k++;
        if (k == dst->nrefusals) {
            rs_refusal_t *v = realloc(dst->refusals, (k + 1) * sizeof(*v));
            if (!v)
                return -1;
            dst->refusals = v;
            v[k] = (rs_refusal_t){.budget_id = r->budget_id};
            dst->nrefusals = dst->cap_refusals = k + 1;
        }
        dst->refusals[k].refused += r->refused;
        dst->refusals[k].cancelled += r->cancelled;
        dst->refusals[k].cost += r->cost;
    }
    return 0;
}

/* Merges the slices of the day into b->all and those of the day before
 * into prev_users/prev_cost. Returns 0, or -1. */
static int merge_all(build_t *b)
{
    b->all.top = b->top;
    for (size_t i = 0; i < b->nday; i++)
        if (merge(&b->all, &b->day[i].acc) != 0)
            goto oom;
    rs_pairs_compact(&b->all.pairs);
    rs_top_sort(&b->all);
    for (size_t i = 0; i < b->nprev; i++) {
        const rs_acc_t *a = &b->prev[i].acc;
        b->prev_statements += a->statements;
        b->prev_total += a->cost;
        b->prev_compute += a->compute_s;
        for (size_t k = 0; k < a->pairs.n; k++) {
            uint32_t id = a->pairs.v[k].user;
            size_t before = b->prev_users.n;
            uint32_t u = rs_names_intern(&b->prev_users, a->users.v[id], a->users.lens[id]);
            if (u == UINT32_MAX)
                goto oom;
            if (b->prev_users.n > before) {
                int64_t *c = realloc(b->prev_cost, b->prev_users.n * sizeof(*c));
                if (!c)
                    goto oom;
                b->prev_cost = c;
                c[u] = 0;
            }
            b->prev_cost[u] += a->pairs.v[k].cost;
        }
    }
    return 0;
oom:
    snprintf(b->err, sizeof(b->err), "out of memory");
    return -1;
}

/* ---- Lookups ------------------------------------------------------------- */

/* The normalized text and kind of a shape, from one of its statements of
 * the day. Returns a new object {normalized, kind}, or NULL. */
static json_t *shape_text(build_t *b, uint64_t fp, bool *ok)
{
    static const char sql[] = "SELECT normalized, kind FROM queries WHERE fingerprint = ?1 "
                              "AND started_at >= ?2 AND started_at < ?3 LIMIT 1";
    sqlite3_stmt *st;
    json_t *o = json_object();
    if (sqlite3_prepare_v2(b->db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(b->err, sizeof(b->err), "reading the ledger: %s", sqlite3_errmsg(b->db));
        *ok = false;
        return o;
    }
    sqlite3_bind_int64(st, 1, (int64_t)fp);
    sqlite3_bind_int64(st, 2, b->from);
    sqlite3_bind_int64(st, 3, b->to);
    bool row = sqlite3_step(st) == SQLITE_ROW;
    put(o, "normalized", pgt_text_json(row ? (const char *)sqlite3_column_text(st, 0) : NULL), ok);
    put(o, "kind", pgt_text_json(row ? (const char *)sqlite3_column_text(st, 1) : NULL), ok);
    sqlite3_finalize(st);
    return o;
}

/* Sets the shape's fingerprint, normalized text and kind in o. */
static void put_shape(build_t *b, json_t *o, uint64_t fp, bool *ok)
{
    put(o, "fingerprint", jfp(fp), ok);
    json_t *t = shape_text(b, fp, ok);
    if (!t || !o || json_object_update(o, t) != 0)
        *ok = false;
    json_decref(t);
}

/* The tags column: the object it holds, or null. */
static json_t *tags_json(const char *text)
{
    json_t *t = text ? json_loads(text, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (t && !json_is_object(t)) {
        json_decref(t);
        t = NULL;
    }
    return t ? t : json_null();
}

#define STATEMENT_COLUMNS                                                                          \
    "started_at, finished_at, \"user\", database, application, tags, fingerprint, normalized, "    \
    "kind, compute_s, rows, bytes_out, cost_micro, status, sqlstate, est_cost_micro"

/* Fills o from the current row of a SELECT STATEMENT_COLUMNS. */
static void statement_row(sqlite3_stmt *st, json_t *o, bool *ok)
{
    char iso[48];
    int64_t started = sqlite3_column_int64(st, 0), finished = sqlite3_column_int64(st, 1);
    const char *text[] = {"user", "database", "application"};
    put(o, "started_at", json_string(fmt_iso(started, iso, sizeof(iso))), ok);
    put(o, "started_us", json_integer(started), ok);
    put(o, "duration_s", json_real((double)(finished - started) / 1e6), ok);
    for (int i = 0; i < 3; i++)
        put(o, text[i], pgt_text_json((const char *)sqlite3_column_text(st, 2 + i)), ok);
    put(o, "tags", tags_json((const char *)sqlite3_column_text(st, 5)), ok);
    put(o, "fingerprint", jfp((uint64_t)sqlite3_column_int64(st, 6)), ok);
    put(o, "normalized", pgt_text_json((const char *)sqlite3_column_text(st, 7)), ok);
    put(o, "kind", pgt_text_json((const char *)sqlite3_column_text(st, 8)), ok);
    put(o, "compute_s", json_real(sqlite3_column_double(st, 9)), ok);
    put(o, "rows", json_integer(sqlite3_column_int64(st, 10)), ok);
    put(o, "bytes_out", json_integer(sqlite3_column_int64(st, 11)), ok);
    put_money(o, "cost", sqlite3_column_int64(st, 12), ok);
    put(o, "status", pgt_text_json((const char *)sqlite3_column_text(st, 13)), ok);
    put(o, "sqlstate", pgt_text_json((const char *)sqlite3_column_text(st, 14)), ok);
    bool estimated = sqlite3_column_type(st, 15) != SQLITE_NULL;
    put(o, "estimated_cost_micro",
        estimated ? json_integer(sqlite3_column_int64(st, 15)) : json_null(), ok);
}

/* ---- Sections ------------------------------------------------------------ */

/* The most expensive statements of the day. */
static json_t *statements_section(build_t *b, bool *ok)
{
    json_t *a = json_array();
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(b->db, "SELECT " STATEMENT_COLUMNS " FROM queries WHERE id = ?1", -1,
                           &st, NULL) != SQLITE_OK) {
        snprintf(b->err, sizeof(b->err), "reading the ledger: %s", sqlite3_errmsg(b->db));
        *ok = false;
    }
    for (int i = 0; st && *ok && i < b->all.ntops; i++) {
        json_t *o = json_object();
        put(o, "rank", json_integer(i + 1), ok);
        put(o, "id", json_integer(b->all.tops[i].id), ok);
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, b->all.tops[i].id);
        if (sqlite3_step(st) == SQLITE_ROW) {
            statement_row(st, o, ok);
        } else { /* removed since the scan (retention): what the scan saw */
            put_money(o, "cost", b->all.tops[i].cost, ok);
        }
        if (!o || json_array_append_new(a, o) != 0)
            *ok = false;
    }
    sqlite3_finalize(st);
    return a;
}

/* A user's sums over the day and their dearest shape. */
typedef struct user_sum {
    uint32_t id;        /* in all.users */
    int64_t statements; /* statements */
    int64_t cost;       /* micro-units */
    double compute_s;   /* seconds */
    size_t best;        /* index in all.pairs of the shape they spent most on */
} user_sum_t;

static int cmp_user(const void *x, const void *y, void *names)
{
    const user_sum_t *a = x, *b = y;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    const rs_names_t *n = names;
    return strcmp(n->v[a->id], n->v[b->id]);
}

/* Sums the day's pairs per user, most expensive first. Returns the array
 * (all.users.n entries), or NULL. */
static user_sum_t *user_sums(const rs_acc_t *all)
{
    user_sum_t *u = calloc(all->users.n ? all->users.n : 1, sizeof(*u));
    if (!u)
        return NULL;
    for (size_t i = 0; i < all->users.n; i++)
        u[i] = (user_sum_t){.id = (uint32_t)i, .best = SIZE_MAX};
    for (size_t i = 0; i < all->pairs.n; i++) {
        const rs_pair_t *p = &all->pairs.v[i];
        user_sum_t *s = &u[p->user];
        s->statements += p->statements;
        s->cost += p->cost;
        s->compute_s += p->compute_s;
        const rs_pair_t *best = s->best == SIZE_MAX ? NULL : &all->pairs.v[s->best];
        if (!best || p->cost > best->cost || (p->cost == best->cost && p->fp < best->fp))
            s->best = i;
    }
    qsort_r(u, all->users.n, sizeof(*u), cmp_user, (void *)&all->users);
    return u;
}

/* One user of the users section. */
static json_t *user_item(build_t *b, const user_sum_t *s, int rank, bool *ok)
{
    const char *name = b->all.users.v[s->id];
    json_t *o = json_object();
    put(o, "rank", json_integer(rank), ok);
    put(o, "user", pgt_text_json(name), ok);
    put_money(o, "cost", s->cost, ok);
    put(o, "statements", json_integer(s->statements), ok);
    put(o, "compute_s", json_real(s->compute_s), ok);
    put(o, "share_pct", pct_of((double)s->cost, (double)b->all.cost), ok);
    const rs_pair_t *p = &b->all.pairs.v[s->best];
    json_t *top = json_object();
    put_shape(b, top, p->fp, ok);
    put_money(top, "cost", p->cost, ok);
    put(top, "statements", json_integer(p->statements), ok);
    put(o, "top_shape", top, ok);
    /* The day before: 0 when they ran nothing then. */
    size_t before = b->prev_users.n;
    uint32_t u = before ? rs_names_intern(&b->prev_users, name, strlen(name)) : UINT32_MAX;
    int64_t prev = u != UINT32_MAX && u < before ? b->prev_cost[u] : 0;
    put_money(o, "previous_day_cost", prev, ok);
    put_money(o, "change", s->cost - prev, ok);
    put(o, "change_pct", change_pct((double)s->cost, (double)prev), ok);
    return o;
}

static json_t *users_section(build_t *b, bool *ok)
{
    json_t *a = json_array();
    user_sum_t *u = user_sums(&b->all);
    if (!u)
        *ok = false;
    for (size_t i = 0; u && *ok && i < b->all.users.n && i < (size_t)b->top; i++)
        if (json_array_append_new(a, user_item(b, &u[i], (int)i + 1, ok)) != 0)
            *ok = false;
    free(u);
    return a;
}

/* A shape's sums over the day. */
typedef struct shape_sum {
    uint64_t fp;        /* the shape */
    int64_t statements; /* statements */
    int64_t cost;       /* micro-units */
    int64_t max_cost;   /* the dearest one */
    double compute_s;   /* seconds */
    int64_t users;      /* users who ran it */
    int rank;           /* 1-based rank once sorted; 0: not listed */
} shape_sum_t;

static int cmp_shape(const void *x, const void *y)
{
    const shape_sum_t *a = x, *b = y;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    return a->fp < b->fp ? -1 : a->fp > b->fp;
}

/* One user's spend on a listed shape, for naming the users of shapes. */
typedef struct shape_user {
    int rank;      /* the shape's rank */
    int64_t cost;  /* the user's spend on it */
    uint32_t user; /* in all.users */
} shape_user_t;

static int cmp_shape_user(const void *x, const void *y, void *names)
{
    const shape_user_t *a = x, *b = y;
    if (a->rank != b->rank)
        return a->rank - b->rank;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    const rs_names_t *n = names;
    return strcmp(n->v[a->user], n->v[b->user]);
}

/* An open-addressing map from fingerprint to an index. */
typedef struct fp_index {
    uint64_t *keys; /* fingerprints */
    size_t *vals;   /* index + 1, or 0 for an empty slot */
    size_t nslots;  /* a power of two */
} fp_index_t;

static int fp_index_init(fp_index_t *m, size_t n)
{
    m->nslots = 16;
    while (m->nslots < 2 * n)
        m->nslots *= 2;
    m->keys = calloc(m->nslots, sizeof(*m->keys));
    m->vals = calloc(m->nslots, sizeof(*m->vals));
    return m->keys && m->vals ? 0 : -1;
}

/* Returns the slot of fp: vals[slot] is 0 when fp is not in the map. */
static size_t fp_index_slot(const fp_index_t *m, uint64_t fp)
{
    size_t k = (size_t)((fp * 0x9e3779b97f4a7c15ull) >> 17) & (m->nslots - 1);
    while (m->vals[k] && m->keys[k] != fp)
        k = (k + 1) & (m->nslots - 1);
    return k;
}

static void fp_index_free(fp_index_t *m)
{
    free(m->keys);
    free(m->vals);
}

/* Sums the pairs per shape into *out (most expensive first, *n entries)
 * and lists the users of the top shapes in *su (by rank, then spend; *nsu
 * entries). Returns 0, or -1 when out of memory. */
static int shape_sums(build_t *b, shape_sum_t **out, size_t *n, shape_user_t **su, size_t *nsu)
{
    const rs_pairs_t *pairs = &b->all.pairs;
    fp_index_t idx = {0};
    shape_sum_t *v = calloc(pairs->n ? pairs->n : 1, sizeof(*v));
    *su = calloc(pairs->n ? pairs->n : 1, sizeof(**su));
    size_t k = 0, m = 0;
    if (!v || !*su || fp_index_init(&idx, pairs->n) != 0)
        goto oom;
    for (size_t i = 0; i < pairs->n; i++) {
        const rs_pair_t *p = &pairs->v[i];
        size_t slot = fp_index_slot(&idx, p->fp);
        if (!idx.vals[slot]) {
            idx.keys[slot] = p->fp;
            idx.vals[slot] = ++k;
            v[k - 1].fp = p->fp;
        }
        shape_sum_t *s = &v[idx.vals[slot] - 1];
        s->statements += p->statements;
        s->cost += p->cost;
        s->compute_s += p->compute_s;
        s->max_cost = p->max_cost > s->max_cost ? p->max_cost : s->max_cost;
        s->users++;
    }
    qsort(v, k, sizeof(*v), cmp_shape);
    size_t listed = k < (size_t)b->top ? k : (size_t)b->top;
    for (size_t i = 0; i < k; i++) /* the index now points at the sorted entry */
        idx.vals[fp_index_slot(&idx, v[i].fp)] = i + 1;
    for (size_t i = 0; i < listed; i++)
        v[i].rank = (int)i + 1;
    for (size_t i = 0; i < pairs->n; i++) {
        const rs_pair_t *p = &pairs->v[i];
        size_t at = idx.vals[fp_index_slot(&idx, p->fp)] - 1;
        if (at < listed)
            (*su)[m++] = (shape_user_t){v[at].rank, p->cost, p->user};
    }
    qsort_r(*su, m, sizeof(**su), cmp_shape_user, &b->all.users);
    fp_index_free(&idx);
    *out = v, *n = k, *nsu = m;
    return 0;
oom:
    fp_index_free(&idx);
    free(v);
    free(*su);
    *su = NULL;
    snprintf(b->err, sizeof(b->err), "out of memory");
    return -1;
}

static json_t *shape_item(build_t *b, const shape_sum_t *s, const shape_user_t *su, size_t nsu,
                          bool *ok)
{
    json_t *o = json_object(), *names = json_array();
    put(o, "rank", json_integer(s->rank), ok);
    put_shape(b, o, s->fp, ok);
    put(o, "statements", json_integer(s->statements), ok);
    put_money(o, "cost", s->cost, ok);
    put_money(o, "mean_cost",
              s->statements ? (int64_t)llround((double)s->cost / (double)s->statements) : 0, ok);
    put_money(o, "max_cost", s->max_cost, ok);
    put(o, "compute_s", json_real(s->compute_s), ok);
    put(o, "share_pct", pct_of((double)s->cost, (double)b->all.cost), ok);
    put(o, "users", json_integer(s->users), ok);
    for (size_t i = 0; i < nsu && json_array_size(names) < SHAPE_USER_NAMES; i++)
        if (su[i].rank == s->rank &&
            json_array_append_new(names, pgt_text_json(b->all.users.v[su[i].user])) != 0)
            *ok = false;
    put(o, "user_names", names, ok);
    return o;
}

static json_t *shapes_section(build_t *b, bool *ok)
{
    json_t *a = json_array();
    shape_sum_t *v = NULL;
    shape_user_t *su = NULL;
    size_t n = 0, nsu = 0;
    if (shape_sums(b, &v, &n, &su, &nsu) != 0)
        *ok = false;
    for (size_t i = 0; *ok && i < n && v[i].rank; i++)
        if (json_array_append_new(a, shape_item(b, &v[i], su, nsu, ok)) != 0)
            *ok = false;
    free(v);
    free(su);
    return a;
}

/* Totals of a day: statements, cost, compute. */
static json_t *sums_json(int64_t statements, int64_t cost, double compute, bool *ok)
{
    json_t *o = json_object();
    put(o, "statements", json_integer(statements), ok);
    put_money(o, "cost", cost, ok);
    put(o, "compute_s", json_real(compute), ok);
    return o;
}

static json_t *changes_json(const build_t *b, double statements, double cost, double compute)
{
    return json_pack("{s:o,s:o,s:o}", "statements_pct",
                     change_pct((double)b->all.statements, statements), "cost_pct",
                     change_pct((double)b->all.cost, cost), "compute_pct",
                     change_pct(b->all.compute_s, compute));
}

/* The mean of the days before that the ledger covers (those that end
 * after its first statement), with how many there were. */
static json_t *mean_json(const build_t *b, bool *ok, double *st, double *cost, double *comp)
{
    int days = 0;
    double s = 0, c = 0, t = 0;
    for (int d = 0; d < HISTORY_DAYS; d++) {
        int64_t end = d == 0 ? b->from : b->hist_from[d - 1];
        if (end <= b->first_us)
            continue;
        days++;
        s += d == 0 ? (double)b->prev_statements : (double)b->hist[d - 1].acc.statements;
        c += d == 0 ? (double)b->prev_total : (double)b->hist[d - 1].acc.cost;
        t += d == 0 ? b->prev_compute : b->hist[d - 1].acc.compute_s;
    }
    *st = days ? s / days : 0, *cost = days ? c / days : 0, *comp = days ? t / days : 0;
    json_t *o = json_object();
    put(o, "days", json_integer(days), ok);
    put(o, "statements", json_real(*st), ok);
    put_money(o, "cost", llround(*cost), ok);
    put(o, "compute_s", json_real(*comp), ok);
    return o;
}

static json_t *totals_section(build_t *b, bool *ok)
{
    char date[16];
    json_t *o = sums_json(b->all.statements, b->all.cost, b->all.compute_s, ok);
    put(o, "users", json_integer((json_int_t)b->all.users.n), ok);
    json_t *by = json_object();
    for (int i = 0; i < RS_STATUS_COUNT; i++)
        put(by, pgt_query_status_name((pgt_query_status_t)i), json_integer(b->all.by_status[i]),
            ok);
    put(o, "by_status", by, ok);
    json_t *prev = sums_json(b->prev_statements, b->prev_total, b->prev_compute, ok);
    put(prev, "date", json_string(fmt_date(b->prev_from, date, sizeof(date))), ok);
    put(o, "previous_day", prev, ok);
    put(o, "change_vs_previous_day",
        changes_json(b, (double)b->prev_statements, (double)b->prev_total, b->prev_compute), ok);
    double s, c, t;
    put(o, "mean_7d", mean_json(b, ok, &s, &c, &t), ok);
    /* Without days to compare with, the mean is 0 and the changes null. */
    put(o, "change_vs_mean_7d", changes_json(b, s, c, t), ok);
    return o;
}

/* One line of a budget at or above its lowest warn threshold. */
typedef struct budget_line {
    const spend_t *s; /* the budget and its spend */
    size_t line;      /* which line of s */
    int64_t granted;  /* grants that raise the limit of the line */
    int64_t limit;    /* the limit with them */
    double pct;       /* percent of it spent */
} budget_line_t;

static int cmp_line(const void *x, const void *y)
{
    const budget_line_t *a = x, *b = y;
    if (a->pct != b->pct)
        return a->pct > b->pct ? -1 : 1;
    if (a->s->b->id != b->s->b->id)
        return a->s->b->id < b->s->b->id ? -1 : 1;
    const char *u = a->s->users[a->line], *v = b->s->users[b->line];
    return strcmp(u ? u : "", v ? v : "");
}

/* The highest threshold reached: one of the warn percents, or 100. */
static int threshold_reached(const pgt_budget_t *b, double pct)
{
    int t = 0;
    for (int i = 0; i < b->nwarn; i++)
        if (b->warn_pcts[i] <= pct)
            t = b->warn_pcts[i];
    return pct >= 100 ? 100 : t;
}

static json_t *budget_item(const budget_line_t *l, bool *ok)
{
    const pgt_budget_t *b = l->s->b;
    char iso[48];
    json_t *o = json_object(), *warn = json_array();
    put(o, "id", json_integer(b->id), ok);
    put(o, "subject_type", json_string(pgt_budget_subject_name(b->subject_type)), ok);
    put(o, "subject", pgt_text_json(b->subject), ok);
    put(o, "user", pgt_text_json(l->s->users[l->line]), ok);
    put(o, "period", json_string(pgt_period_name(b->period)), ok);
    put(o, "period_start", json_string(fmt_iso(l->s->start, iso, sizeof(iso))), ok);
    put(o, "period_end", json_string(fmt_iso(l->s->end, iso, sizeof(iso))), ok);
    put_money(o, "spent", l->s->spent[l->line], ok);
    put_money(o, "limit", l->limit, ok);
    put_money(o, "granted", l->granted, ok);
    put(o, "percent", json_real(round(l->pct * 10) / 10), ok);
    for (int i = 0; i < b->nwarn; i++)
        if (json_array_append_new(warn, json_integer(b->warn_pcts[i])) != 0)
            *ok = false;
    put(o, "warn_pcts", warn, ok);
    put(o, "threshold_pct", json_integer(threshold_reached(b, l->pct)), ok);
    put(o, "action", json_string(pgt_budget_action_name(b->action)), ok);
    return o;
}

/* Collects the lines at or above their budget's lowest threshold (100
 * without thresholds). Returns them (*n entries), or NULL with *n = 0. */
static budget_line_t *budget_lines(const build_t *b, size_t *n)
{
    size_t total = 0;
    *n = 0;
    for (size_t i = 0; b->budgets && i < b->budgets->nbudgets; i++)
        total += b->spends[i].n;
    budget_line_t *v = calloc(total ? total : 1, sizeof(*v));
    for (size_t i = 0; v && b->budgets && i < b->budgets->nbudgets; i++) {
        const spend_t *s = &b->spends[i];
        int lowest = s->b->nwarn ? s->b->warn_pcts[0] : 100;
        for (size_t k = 0; k < s->n; k++) {
            const char *grantee = s->users[k]                                     ? s->users[k]
                                  : s->b->subject_type == PGT_BUDGET_SUBJECT_USER ? s->b->subject
                                                                                  : NULL;
            int64_t granted = grantee ? pgt_budget_grant_total(b->budgets, grantee, s->b->period,
                                                               s->start, s->end, s->until - 1)
                                      : 0;
            int64_t limit = s->b->limit_micro + granted;
            double pct = limit > 0 ? (double)s->spent[k] * 100.0 / (double)limit : 100.0;
            if (pct >= lowest)
                v[(*n)++] = (budget_line_t){s, k, granted, limit, pct};
        }
    }
    if (v)
        qsort(v, *n, sizeof(*v), cmp_line);
    return v;
}

static json_t *budgets_section(const build_t *b, bool *ok)
{
    size_t n;
    budget_line_t *v = budget_lines(b, &n);
    json_t *o = json_object(), *items = json_array();
    if (!v)
        *ok = false;
    for (size_t i = 0; v && i < n && i < (size_t)b->top; i++)
        if (json_array_append_new(items, budget_item(&v[i], ok)) != 0)
            *ok = false;
    put(o, "checked", json_integer(b->budgets ? (json_int_t)b->budgets->nbudgets : 0), ok);
    put(o, "over_threshold", json_integer((json_int_t)n), ok);
    put(o, "items", items, ok);
    free(v);
    return o;
}

static int cmp_refusal(const void *x, const void *y)
{
    const rs_refusal_t *a = x, *b = y;
    int64_t na = a->refused + a->cancelled, nb = b->refused + b->cancelled;
    if (na != nb)
        return na > nb ? -1 : 1;
    return a->budget_id < b->budget_id ? -1 : a->budget_id > b->budget_id;
}

/* The budget with id, or NULL when it was removed since. */
static const pgt_budget_t *budget_by_id(const build_t *b, int64_t id)
{
    for (size_t i = 0; b->budgets && i < b->budgets->nbudgets; i++)
        if (b->budgets->budgets[i].id == id)
            return &b->budgets->budgets[i];
    return NULL;
}

static json_t *refusals_section(build_t *b, bool *ok)
{
    json_t *o = json_object(), *by = json_array();
    int64_t cost = 0;
    if (b->all.nrefusals)
        qsort(b->all.refusals, b->all.nrefusals, sizeof(*b->all.refusals), cmp_refusal);
    for (size_t i = 0; i < b->all.nrefusals; i++) {
        const rs_refusal_t *r = &b->all.refusals[i];
        const pgt_budget_t *bg = budget_by_id(b, r->budget_id);
        json_t *item = json_object();
        put(item, "budget_id", json_integer(r->budget_id), ok);
        put(item, "subject_type",
            bg ? json_string(pgt_budget_subject_name(bg->subject_type)) : json_null(), ok);
        put(item, "subject", bg ? pgt_text_json(bg->subject) : json_null(), ok);
        put(item, "period", bg ? json_string(pgt_period_name(bg->period)) : json_null(), ok);
        put(item, "refused", json_integer(r->refused), ok);
        put(item, "budget_cancelled", json_integer(r->cancelled), ok);
        put_money(item, "cost", r->cost, ok);
        cost += r->cost;
        if (json_array_append_new(by, item) != 0)
            *ok = false;
    }
    int64_t refused = b->all.by_status[PGT_QUERY_REFUSED];
    int64_t cancelled = b->all.by_status[PGT_QUERY_BUDGET_CANCELLED];
    put(o, "statements", json_integer(refused + cancelled), ok);
    put(o, "refused", json_integer(refused), ok);
    put(o, "budget_cancelled", json_integer(cancelled), ok);
    put_money(o, "cost", cost, ok);
    put(o, "by_budget", by, ok);
    return o;
}

/* ---- The document -------------------------------------------------------- */

static const char *zone_name(const pgt_report_opts_t *o)
{
    const char *tz = o->timezone && o->timezone[0] ? o->timezone : getenv("TZ");
    return tz && tz[0] ? tz : "localtime";
}

static json_t *assemble(build_t *b)
{
    bool ok = true;
    char iso[48], date[16];
    json_t *doc = json_object();
    put(doc, "version", json_integer(REPORT_VERSION), &ok);
    put(doc, "date", json_string(fmt_date(b->from, date, sizeof(date))), &ok);
    put(doc, "timezone", pgt_text_json(zone_name(b->opts)), &ok);
    put(doc, "from", json_string(fmt_iso(b->from, iso, sizeof(iso))), &ok);
    put(doc, "to", json_string(fmt_iso(b->to, iso, sizeof(iso))), &ok);
    put(doc, "from_us", json_integer(b->from), &ok);
    put(doc, "to_us", json_integer(b->to), &ok);
    put(doc, "generated_at", json_string(fmt_iso(pgt_clock_us(), iso, sizeof(iso))), &ok);
    put(doc, "currency", pgt_text_json(b->opts->currency ? b->opts->currency : ""), &ok);
    put(doc, "top", json_integer(b->top), &ok);
    put(doc, "show_literals", json_boolean(b->opts->show_literals), &ok);
    put(doc, "totals", totals_section(b, &ok), &ok);
    put(doc, "statements", statements_section(b, &ok), &ok);
    put(doc, "users", users_section(b, &ok), &ok);
    put(doc, "shapes", shapes_section(b, &ok), &ok);
    put(doc, "budgets", budgets_section(b, &ok), &ok);
    put(doc, "refusals", refusals_section(b, &ok), &ok);
    if (!ok) {
        if (!b->err[0])
            snprintf(b->err, sizeof(b->err), "out of memory");
        json_decref(doc);
        return NULL;
    }
    return doc;
}

static void build_free(build_t *b)
{
    for (size_t i = 0; b->day && i < b->nday; i++)
        rs_acc_free(&b->day[i].acc);
    for (size_t i = 0; b->prev && i < b->nprev; i++)
        rs_acc_free(&b->prev[i].acc);
    free(b->day);
    free(b->prev);
    spends_free(b);
    pgt_budget_config_free(b->budgets);
    rs_acc_free(&b->all);
    rs_names_free(&b->prev_users);
    free(b->prev_cost);
}

/* Sets the day before and the days of the mean. */
static void history_bounds(build_t *b)
{
    int64_t start, end = b->from;
    for (int d = 0; d < HISTORY_DAYS; d++) {
        pgt_period_bounds(PGT_PERIOD_DAY, end - 1, &start, &end);
        b->hist_from[d] = start;
        end = start;
    }
    b->prev_from = b->hist_from[0];
}

json_t *pgt_report_build(sqlite3 *db, const char *date, const pgt_report_opts_t *opts, char *err,
                         size_t errlen)
{
    build_t b = {.db = db, .opts = opts, .first_us = INT64_MAX};
    int64_t version = 0;
    b.top = opts->top <= 0 ? 10 : opts->top > MAX_TOP ? MAX_TOP : opts->top;
    if (day_bounds(date, &b.from, &b.to) != 0) {
        snprintf(err, errlen, "bad date '%s': expected a date as YYYY-MM-DD", date ? date : "");
        return NULL;
    }
    history_bounds(&b);
    if (query_int(db, "PRAGMA user_version", &version) != 0 ||
        query_int(db, "SELECT min(started_at) FROM queries", &b.first_us) != 0) {
        snprintf(err, errlen, "reading the ledger: %s", sqlite3_errmsg(db));
        return NULL;
    }
    b.version = (int)version;
    json_t *doc = NULL;
    if (budgets_load(&b) == 0 && scan_all(&b) == 0 && merge_all(&b) == 0)
        doc = assemble(&b);
    if (!doc)
        snprintf(err, errlen, "%s", b.err[0] ? b.err : "out of memory");
    build_free(&b);
    return doc;
}

void pgt_report_opts_from_config(const pgt_config_t *cfg, pgt_report_opts_t *out)
{
    *out = (pgt_report_opts_t){
        .top = cfg->report_top,
        .show_literals = cfg->report_show_literals != 0,
        .currency = cfg->currency,
        .timezone = cfg->timezone,
    };
}

char *pgt_report_subject(const json_t *report)
{
    const json_t *totals = json_object_get(report, "totals");
    const char *currency = json_string_value(json_object_get(report, "currency"));
    const char *date = json_string_value(json_object_get(report, "date"));
    char money[PGT_MONEY_TEXT_MAX], *s = NULL;
    pgt_money_format_short(json_integer_value(json_object_get(totals, "cost_micro")), currency,
                           money, sizeof(money));
    long long n = json_integer_value(json_object_get(totals, "statements"));
    if (asprintf(&s, "pgtally: %s: %s in %lld statement%s", date ? date : "?", money, n,
                 n == 1 ? "" : "s") < 0)
        return NULL;
    return s;
}
