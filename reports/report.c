/* The daily report's builder: reads one local date of the ledger (its
 * rollups through report_scan.c, the day's dearest statements from
 * queries, the data that cost the most from daily_relations, the budgets
 * and their spend, work done twice and the regressions per release
 * through the ledger's readers) and assembles the report as a
 * JSON document, whose schema is in docs/report.md. Renderers only ever
 * see that document. */
#include "pgtally/report.h"
#include "pgtally/text.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgtally/budget_store.h"
#include "pgtally/period.h"
#include "pgtally/pricing.h"
#include "report_scan.h"

#define REPORT_VERSION 1    /* the document's "version" */
#define MAX_TOP 1000        /* the largest top list a caller may ask for */
#define SHAPE_USER_NAMES 10 /* users named per shape */
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
    pgt_db_t *db;                  /* the caller's connection */
    const pgt_report_opts_t *opts; /* options */
    int top;                       /* rows per list */
    int64_t from, to;              /* the day */
    pgt_budget_config_t *budgets;  /* the budgets */
    spend_t *spends;               /* one per budget */
    rs_day_t day;                  /* the day and the days before, from the rollups */
    rs_groups_t sums;              /* the day's sums per user and per shape */
    rs_data_t data;                /* the day's schemas and tables that cost the most */
    pgt_ledger_reader_t *rd;       /* a reader over db, for repeats and regressions */
    char err[512];                 /* why it failed */
} build_t;

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

/* Loads the budgets and the spend of each up to the end of the date.
 * Returns 0, or -1 with the cause in b->err. */
static int budgets_load(build_t *b)
{
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
        int rc = pgt_budget_spend(b->db, s->b, s->start, s->until, spend_line, s, b->err,
                                  sizeof(b->err));
        if (rc > 0)
            snprintf(b->err, sizeof(b->err), "out of memory");
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- Lookups ------------------------------------------------------------- */

/* A pgt_db_row_cb of (normalized, kind): sets them in the object arg. */
static int shape_row(const pgt_db_row_t *r, void *arg)
{
    bool ok = true;
    put(arg, "normalized", pgt_text_json(pgt_db_text(r, 0)), &ok);
    put(arg, "kind", pgt_text_json(pgt_db_text(r, 1)), &ok);
    return ok ? 0 : 1;
}

/* Sets the shape's fingerprint, normalized text and kind (from the shapes
 * table; null when it has no row) in o. */
static void put_shape(build_t *b, json_t *o, uint64_t fp, bool *ok)
{
    put(o, "fingerprint", jfp(fp), ok);
    if (!o || !*ok)
        return;
    int rc =
        pgt_db_run(b->db, "reading the ledger", b->err, sizeof(b->err), shape_row, o,
                   "SELECT normalized, kind FROM shapes WHERE fingerprint = ?1", "i", (int64_t)fp);
    if (rc != 0)
        *ok = false;
    if (!json_object_get(o, "normalized"))
        put(o, "normalized", json_null(), ok);
    if (!json_object_get(o, "kind"))
        put(o, "kind", json_null(), ok);
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
    "kind, compute_s, rows, bytes_out, cost_micro, status, sqlstate, est_cost_micro, instance, "   \
    "seq"

/* One of the day's dearest statements, before they are ranked. */
typedef struct top_item {
    int64_t cost;     /* cost, micro-units */
    int64_t started;  /* start, unix microseconds */
    int64_t instance; /* the pgtally instance that metered it */
    int64_t seq;      /* its sequence in that instance */
    json_t *o;        /* its members, without the rank (owned) */
} top_item_t;

/* The statements read so far. */
typedef struct top_list {
    top_item_t *v; /* the statements */
    size_t n;      /* entries in v */
    size_t cap;    /* entries allocated */
} top_list_t;

/* Fills o from a row of SELECT STATEMENT_COLUMNS. */
static void statement_json(const pgt_db_row_t *r, json_t *o, bool *ok)
{
    char iso[48];
    int64_t started = pgt_db_int(r, 0), finished = pgt_db_int(r, 1);
    const char *text[] = {"user", "database", "application"};
    put(o, "id", json_integer(pgt_db_int(r, 17)), ok);
    put(o, "started_at", json_string(fmt_iso(started, iso, sizeof(iso))), ok);
    put(o, "started_us", json_integer(started), ok);
    put(o, "duration_s", json_real((double)(finished - started) / 1e6), ok);
    for (int i = 0; i < 3; i++)
        put(o, text[i], pgt_text_json(pgt_db_text(r, 2 + i)), ok);
    put(o, "tags", tags_json(pgt_db_text(r, 5)), ok);
    put(o, "fingerprint", jfp((uint64_t)pgt_db_int(r, 6)), ok);
    put(o, "normalized", pgt_text_json(pgt_db_text(r, 7)), ok);
    put(o, "kind", pgt_text_json(pgt_db_text(r, 8)), ok);
    put(o, "compute_s", json_real(pgt_db_double(r, 9)), ok);
    put(o, "rows", json_integer(pgt_db_int(r, 10)), ok);
    put(o, "bytes_out", json_integer(pgt_db_int(r, 11)), ok);
    put_money(o, "cost", pgt_db_int(r, 12), ok);
    put(o, "status", pgt_text_json(pgt_db_text(r, 13)), ok);
    put(o, "sqlstate", pgt_text_json(pgt_db_text(r, 14)), ok);
    put(o, "estimated_cost_micro",
        pgt_db_isnull(r, 15) ? json_null() : json_integer(pgt_db_int(r, 15)), ok);
}

/* A pgt_db_row_cb: keeps one statement. Returns 1 when out of memory. */
static int top_row(const pgt_db_row_t *r, void *arg)
{
    top_list_t *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        top_item_t *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return 1;
        l->v = v;
        l->cap = cap;
    }
    bool ok = true;
    json_t *o = json_object();
    statement_json(r, o, &ok);
    if (!ok) {
        json_decref(o);
        return 1;
    }
    l->v[l->n++] =
        (top_item_t){pgt_db_int(r, 12), pgt_db_int(r, 0), pgt_db_int(r, 16), pgt_db_int(r, 17), o};
    return 0;
}

/* Dearest first; ties: the earlier start, then by instance and sequence. */
static int cmp_top(const void *x, const void *y)
{
    const top_item_t *a = x, *b = y;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    if (a->started != b->started)
        return a->started < b->started ? -1 : 1;
    if (a->instance != b->instance)
        return a->instance < b->instance ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* ---- Sections ------------------------------------------------------------ */

/* The most expensive statements of the day, read from the index
 * queries_day_cost. */
static json_t *statements_section(build_t *b, bool *ok)
{
    json_t *a = json_array();
    top_list_t l = {0};
    int rc = pgt_db_run(b->db, "reading the ledger", b->err, sizeof(b->err), top_row, &l,
                        "SELECT " STATEMENT_COLUMNS " FROM queries WHERE day = ?1 "
                        "ORDER BY cost_micro DESC LIMIT ?2",
                        "ii", (int64_t)b->day.day, (int64_t)b->top);
    if (rc > 0)
        snprintf(b->err, sizeof(b->err), "out of memory");
    if (rc != 0)
        *ok = false;
    if (l.n)
        qsort(l.v, l.n, sizeof(*l.v), cmp_top);
    for (size_t i = 0; i < l.n; i++) {
        json_t *o = json_object();
        put(o, "rank", json_integer((json_int_t)i + 1), ok);
        if (!o || json_object_update(o, l.v[i].o) != 0 || json_array_append_new(a, o) != 0)
            *ok = false;
        json_decref(l.v[i].o);
    }
    free(l.v);
    return a;
}

/* One user of the users section. */
static json_t *user_item(build_t *b, const rs_user_t *s, int rank, bool *ok)
{
    json_t *o = json_object();
    put(o, "rank", json_integer(rank), ok);
    put(o, "user", pgt_text_json(s->user), ok);
    put_money(o, "cost", s->cost, ok);
    put(o, "statements", json_integer(s->statements), ok);
    put(o, "compute_s", json_real(s->compute_s), ok);
    put(o, "share_pct", pct_of((double)s->cost, (double)b->day.totals.cost), ok);
    json_t *top = json_object();
    put_shape(b, top, s->best->fp, ok);
    put_money(top, "cost", s->best->cost, ok);
    put(top, "statements", json_integer(s->best->statements), ok);
    put(o, "top_shape", top, ok);
    /* The day before: 0 when they ran nothing then. */
    int64_t prev = rs_prev_cost(&b->day, s->user);
    put_money(o, "previous_day_cost", prev, ok);
    put_money(o, "change", s->cost - prev, ok);
    put(o, "change_pct", change_pct((double)s->cost, (double)prev), ok);
    return o;
}

static json_t *users_section(build_t *b, bool *ok)
{
    json_t *a = json_array();
    for (size_t i = 0; *ok && i < b->sums.nusers && i < (size_t)b->top; i++)
        if (json_array_append_new(a, user_item(b, &b->sums.users[i], (int)i + 1, ok)) != 0)
            *ok = false;
    return a;
}

static json_t *shape_item(build_t *b, const rs_shape_t *s, int rank, bool *ok)
{
    json_t *o = json_object(), *names = json_array();
    put(o, "rank", json_integer(rank), ok);
    put_shape(b, o, s->fp, ok);
    put(o, "statements", json_integer(s->statements), ok);
    put_money(o, "cost", s->cost, ok);
    put_money(o, "mean_cost",
              s->statements ? (int64_t)llround((double)s->cost / (double)s->statements) : 0, ok);
    put_money(o, "max_cost", s->max_cost, ok);
    put(o, "compute_s", json_real(s->compute_s), ok);
    put(o, "share_pct", pct_of((double)s->cost, (double)b->day.totals.cost), ok);
    put(o, "users", json_integer((json_int_t)s->users), ok);
    for (size_t i = 0; i < s->users && i < SHAPE_USER_NAMES; i++)
        if (json_array_append_new(names, pgt_text_json(s->spenders[i]->user)) != 0)
            *ok = false;
    put(o, "user_names", names, ok);
    return o;
}

static json_t *shapes_section(build_t *b, bool *ok)
{
    json_t *a = json_array();
    for (size_t i = 0; *ok && i < b->sums.nshapes && i < (size_t)b->top; i++)
        if (json_array_append_new(a, shape_item(b, &b->sums.shapes[i], (int)i + 1, ok)) != 0)
            *ok = false;
    return a;
}

/* One schema (rel->relation NULL) or table of the data section. */
static json_t *data_item(const build_t *b, const rs_rel_t *rel, int rank, bool *ok)
{
    json_t *o = json_object();
    put(o, "rank", json_integer(rank), ok);
    put(o, "schema", pgt_text_json(rel->schema), ok);
    if (rel->relation) {
        put(o, "table", pgt_text_json(rel->relation), ok);
        put(o, "queries", json_integer(rel->queries), ok);
    }
    put_money(o, "cost", rel->cost, ok);
    put(o, "compute_s", json_real(rel->compute_s), ok);
    put(o, "share_pct", pct_of((double)rel->cost, (double)b->day.totals.cost), ok);
    return o;
}

/* The data that cost the most: the statements' cost split across the
 * relations they read, per schema and per table. */
static json_t *data_section(build_t *b, bool *ok)
{
    json_t *o = json_object(), *schemas = json_array(), *tables = json_array();
    put_money(o, "cost", b->data.cost, ok);
    put(o, "compute_s", json_real(b->data.compute_s), ok);
    put(o, "share_pct", pct_of((double)b->data.cost, (double)b->day.totals.cost), ok);
    for (size_t i = 0; *ok && i < b->data.nschemas; i++)
        if (json_array_append_new(schemas, data_item(b, &b->data.schemas[i], (int)i + 1, ok)))
            *ok = false;
    for (size_t i = 0; *ok && i < b->data.ntables; i++)
        if (json_array_append_new(tables, data_item(b, &b->data.tables[i], (int)i + 1, ok)))
            *ok = false;
    put(o, "schemas", schemas, ok);
    put(o, "tables", tables, ok);
    return o;
}

/* Totals of a day: statements, cost, compute. */
static json_t *sums_json(const rs_totals_t *t, bool *ok)
{
    json_t *o = json_object();
    put(o, "statements", json_integer(t->statements), ok);
    put_money(o, "cost", t->cost, ok);
    put(o, "compute_s", json_real(t->compute_s), ok);
    return o;
}

static json_t *changes_json(const build_t *b, double statements, double cost, double compute)
{
    const rs_totals_t *t = &b->day.totals;
    return json_pack("{s:o,s:o,s:o}", "statements_pct",
                     change_pct((double)t->statements, statements), "cost_pct",
                     change_pct((double)t->cost, cost), "compute_pct",
                     change_pct(t->compute_s, compute));
}

/* The mean of the days before that the ledger covers (those from its
 * first day on), with how many there were. */
static json_t *mean_json(const build_t *b, bool *ok, double *st, double *cost, double *comp)
{
    int days = 0;
    double s = 0, c = 0, t = 0;
    for (int d = 0; d < RS_HISTORY_DAYS; d++) {
        if (b->day.day - 1 - d < b->day.first_day)
            continue;
        days++;
        s += (double)b->day.hist[d].statements;
        c += (double)b->day.hist[d].cost;
        t += b->day.hist[d].compute_s;
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
    const rs_totals_t *prev = &b->day.hist[0];
    json_t *o = sums_json(&b->day.totals, ok);
    put(o, "users", json_integer((json_int_t)b->sums.nusers), ok);
    json_t *by = json_object();
    for (int i = 0; i < RS_STATUS_COUNT; i++)
        put(by, pgt_query_status_name((pgt_query_status_t)i), json_integer(b->day.by_status[i]),
            ok);
    put(o, "by_status", by, ok);
    json_t *p = sums_json(prev, ok);
    put(p, "date",
        json_string(fmt_date(pgt_local_day_start_us(b->day.day - 1), date, sizeof(date))), ok);
    put(o, "previous_day", p, ok);
    put(o, "change_vs_previous_day",
        changes_json(b, (double)prev->statements, (double)prev->cost, prev->compute_s), ok);
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
        if (!pgt_budget_has_limit(s->b))
            continue; /* no money limit: never near it */
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

static json_t *refusal_item(const build_t *b, const rs_refusal_t *r, bool *ok)
{
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
    return item;
}

static json_t *refusals_section(build_t *b, bool *ok)
{
    json_t *o = json_object(), *by = json_array();
    int64_t cost = 0;
    if (b->day.nrefusals)
        qsort(b->day.refusals, b->day.nrefusals, sizeof(*b->day.refusals), cmp_refusal);
    for (size_t i = 0; i < b->day.nrefusals; i++) {
        cost += b->day.refusals[i].cost;
        if (json_array_append_new(by, refusal_item(b, &b->day.refusals[i], ok)) != 0)
            *ok = false;
    }
    int64_t refused = b->day.by_status[PGT_QUERY_REFUSED];
    int64_t cancelled = b->day.by_status[PGT_QUERY_BUDGET_CANCELLED];
    put(o, "statements", json_integer(refused + cancelled), ok);
    put(o, "refused", json_integer(refused), ok);
    put(o, "budget_cancelled", json_integer(cancelled), ok);
    put_money(o, "cost", cost, ok);
    put(o, "by_budget", by, ok);
    return o;
}

/* What the rows of a reader's list are added to. */
typedef struct list_ctx {
    build_t *b;    /* the build */
    json_t *items; /* the list */
    int64_t total; /* a sum over the rows: money saved */
    bool ok;       /* cleared when anything failed */
} list_ctx_t;

/* Appends item o to the list with its rank. Returns 0, or 1 to stop. */
static int list_add(list_ctx_t *c, json_t *o)
{
    put(o, "rank", json_integer((json_int_t)json_array_size(c->items) + 1), &c->ok);
    if (!c->ok || json_array_append_new(c->items, o) != 0) {
        c->ok = false;
        return 1;
    }
    return 0;
}

/* A pgt_ledger_repeat_cb: one (shape, constants) pair of work done twice. */
static int repeat_item(const pgt_repeat_row_t *r, void *arg)
{
    list_ctx_t *c = arg;
    char hex[24];
    json_t *o = json_object();
    put_shape(c->b, o, r->fingerprint, &c->ok);
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)r->constants);
    put(o, "constants", json_string(hex), &c->ok);
    put(o, "runs", json_integer(r->runs), &c->ok);
    put(o, "users", json_integer(r->users), &c->ok);
    put(o, "applications", json_integer(r->applications), &c->ok);
    put(o, "who", pgt_text_json(r->who), &c->ok);
    put_money(o, "cost", r->cost_micro, &c->ok);
    put_money(o, "saved", r->repeat_micro, &c->ok);
    c->total += r->repeat_micro;
    return list_add(c, o);
}

/* A pgt_ledger_regression_cb: one shape that got dearer with a release. */
static int regression_item(const pgt_regression_row_t *r, void *arg)
{
    list_ctx_t *c = arg;
    char iso[48];
    json_t *o = json_object();
    put_shape(c->b, o, r->fingerprint, &c->ok);
    put(o, "release", pgt_text_json(r->release), &c->ok);
    put(o, "first_seen", json_string(fmt_iso(r->first_seen_us, iso, sizeof(iso))), &c->ok);
    put(o, "statements", json_integer(r->statements), &c->ok);
    put_money(o, "mean_cost", r->mean_micro, &c->ok);
    put(o, "previous_release", pgt_text_json(r->prev_release), &c->ok);
    put(o, "previous_statements", json_integer(r->prev_statements), &c->ok);
    put_money(o, "previous_mean_cost", r->prev_mean_micro, &c->ok);
    put(o, "ratio", json_real(round(r->ratio * 100.0) / 100.0), &c->ok);
    return list_add(c, o);
}

/* Ends a reader's list: its items and their total in o. */
static void list_done(build_t *b, list_ctx_t *c, int rc, json_t *o, const char *total, bool *ok)
{
    if (rc > 0 && !b->err[0])
        snprintf(b->err, sizeof(b->err), "out of memory");
    if (rc != 0 || !c->ok)
        *ok = false;
    if (total)
        put_money(o, total, c->total, ok);
    put(o, "items", c->items, ok);
}

/* Work done twice: the day's SELECTs run with the same constants more
 * than duplicate_min_runs times by several users or applications. */
static json_t *repeats_section(build_t *b, bool *ok)
{
    json_t *o = json_object();
    list_ctx_t c = {b, json_array(), 0, true};
    int64_t min_runs = b->opts->duplicate_min_runs > 0 ? b->opts->duplicate_min_runs
                                                       : PGT_CONFIG_DUPLICATE_MIN_RUNS;
    put(o, "min_runs", json_integer(min_runs), ok);
    int rc = pgt_ledger_repeats(b->rd, b->from, b->to, min_runs, b->top, repeat_item, &c, b->err,
                                sizeof(b->err));
    list_done(b, &c, rc, o, "saved", ok);
    return o;
}

/* Regressions per release over the report's day and the days before. */
static json_t *regressions_section(build_t *b, bool *ok)
{
    json_t *o = json_object();
    list_ctx_t c = {b, json_array(), 0, true};
    int64_t from = pgt_local_day_start_us(b->day.day - (PGT_LEDGER_REGRESSION_DAYS - 1));
    char date[16];
    put(o, "days", json_integer(PGT_LEDGER_REGRESSION_DAYS), ok);
    put(o, "since", json_string(fmt_date(from, date, sizeof(date))), ok);
    put_money(o, "min_mean_cost", b->opts->regression_min_micro, ok);
    int rc = pgt_ledger_regressions(b->rd, from, b->to, b->opts->regression_min_micro, b->top,
                                    regression_item, &c, b->err, sizeof(b->err));
    list_done(b, &c, rc, o, NULL, ok);
    return o;
}

/* ---- Approvals (docs/escrow.md) ------------------------------------------- */

/* Approvals listed at most. */
#define MAX_APPROVALS 100

static json_t *approval_item(build_t *b, const pgt_approval_use_t *u, bool *ok)
{
    char iso[48];
    json_t *item = json_object();
    put(item, "id", json_integer(u->a.id), ok);
    put(item, "ticket", json_string(u->a.ticket), ok);
    put(item, "user", pgt_text_json(u->a.user), ok);
    put(item, "database", pgt_text_json(u->a.database), ok);
    put_shape(b, item, u->a.fingerprint, ok);
    put(item, "scope", json_string(u->a.constants ? "statement" : "shape"), ok);
    if (u->a.max_micro >= 0)
        put_money(item, "max", u->a.max_micro, ok);
    else {
        put(item, "max_micro", json_null(), ok);
        put(item, "max", json_null(), ok);
    }
    put(item, "approved_by", pgt_text_json(u->a.created_by), ok);
    put(item, "approved_at", json_string(fmt_iso(u->a.created_us, iso, sizeof(iso))), ok);
    put(item, "until", json_string(fmt_iso(u->a.until_us, iso, sizeof(iso))), ok);
    put(item, "runs", json_integer(u->runs), ok);
    put_money(item, "cost", u->runs_micro, ok);
    return item;
}

/* The approvals in force during the day and what ran under them then:
 * who let what past a budget, a cap or the guard. */
static json_t *approvals_section(build_t *b, bool *ok)
{
    pgt_approval_use_t *u = NULL;
    size_t n = 0;
    json_t *o = json_object(), *items = json_array();
    if (pgt_approvals_read(b->db, b->from, b->to, MAX_APPROVALS, &u, &n, b->err, sizeof(b->err)) !=
        0) {
        *ok = false;
        n = 0;
    }
    int64_t runs = 0, cost = 0;
    for (size_t i = 0; i < n; i++) {
        runs += u[i].runs;
        cost += u[i].runs_micro;
        if (json_array_append_new(items, approval_item(b, &u[i], ok)) != 0)
            *ok = false;
    }
    pgt_approvals_free(u, n);
    put(o, "approvals", json_integer((json_int_t)n), ok);
    put(o, "runs", json_integer(runs), ok);
    put_money(o, "cost", cost, ok);
    put(o, "items", items, ok);
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
    put(doc, "data", data_section(b, &ok), &ok);
    put(doc, "budgets", budgets_section(b, &ok), &ok);
    put(doc, "refusals", refusals_section(b, &ok), &ok);
    put(doc, "regressions", regressions_section(b, &ok), &ok);
    put(doc, "repeats", repeats_section(b, &ok), &ok);
    put(doc, "approvals", approvals_section(b, &ok), &ok);
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
    spends_free(b);
    pgt_budget_config_free(b->budgets);
    rs_groups_free(&b->sums);
    rs_day_free(&b->day);
    rs_data_free(&b->data);
    pgt_ledger_reader_close(b->rd);
}

/* Reads the day and assembles the document in one read transaction, so
 * that every section sees the same statements (a PostgreSQL transaction
 * is REPEATABLE READ for that). Returns the document, or NULL with the
 * cause in b->err. */
static json_t *read_and_assemble(build_t *b, int32_t day)
{
    const char *begin = pgt_db_backend(b->db) == PGT_DB_POSTGRESQL
                            ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
                            : "BEGIN";
    if (pgt_db_exec(b->db, "starting to read the ledger", begin, b->err, sizeof(b->err)) != 0)
        return NULL;
    json_t *doc = NULL;
    int rc = (b->rd = pgt_ledger_reader_borrow(b->db, b->err, sizeof(b->err))) ? 0 : -1;
    if (rc == 0)
        rc = rs_day_read(b->db, day, &b->day, b->err, sizeof(b->err));
    if (rc == 0)
        rc = rs_data_read(b->db, day, b->top, &b->data, b->err, sizeof(b->err));
    if (rc == 0 && rs_group(&b->day, &b->sums) != 0) {
        snprintf(b->err, sizeof(b->err), "out of memory");
        rc = -1;
    }
    if (rc == 0 && !(doc = assemble(b)))
        rc = -1;
    char err[256];
    if (pgt_db_finish(b->db, rc, err, sizeof(err)) != 0 && rc == 0) {
        snprintf(b->err, sizeof(b->err), "%s", err);
        json_decref(doc);
        doc = NULL;
    }
    return doc;
}

json_t *pgt_report_build(pgt_db_t *db, const char *date, const pgt_report_opts_t *opts, char *err,
                         size_t errlen)
{
    build_t b = {.db = db, .opts = opts};
    b.top = opts->top <= 0 ? 10 : opts->top > MAX_TOP ? MAX_TOP : opts->top;
    if (day_bounds(date, &b.from, &b.to) != 0) {
        snprintf(err, errlen, "bad date '%s': expected a date as YYYY-MM-DD", date ? date : "");
        return NULL;
    }
    if (!pgt_db_has_table(db, "rollups")) {
        snprintf(err, errlen,
                 "reading the ledger: its schema is older than version 5 (no rollups); let "
                 "this release of pgtally open it once to migrate it");
        return NULL;
    }
    json_t *doc = NULL;
    if (budgets_load(&b) == 0)
        doc = read_and_assemble(&b, pgt_local_day(b.from));
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
        .regression_min_micro = cfg->report_regression_min_micro,
        .duplicate_min_runs = cfg->report_duplicate_min_runs,
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
