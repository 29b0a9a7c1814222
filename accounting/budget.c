/* Budget enforcement: spend kept on the loop per user, application and
 * database for the current day, week and month; a thread that keeps the
 * budgets and the spend of other processes in step with the ledger. See
 * include/pgtally/budget.h and docs/budgets.md. */
#include "pgtally/budget.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgtally/budget_store.h"
#include "pgtally/log.h"
#include "pgtally/period.h"
#include "pgtally/pricing.h"

#define NPERIODS 3
#define SPEND_BUCKETS 1024
#define FIRED_MAX 4096
/* Rows read from the ledger per poll; more wait for the next one. */
#define POLL_ROWS 20000

/* What spend is kept by. */
enum { DIM_USER, DIM_APP, DIM_DB, NDIMS };

/* Spend of one user, application or database. */
typedef struct spend {
    struct spend *next;         /* hash chain */
    int dim;                    /* DIM_ */
    char *name;                 /* the user, application or database */
    int64_t start_us[NPERIODS]; /* start of the period micro[] belongs to */
    int64_t micro[NPERIODS];    /* spent in it */
    int64_t running;            /* cost so far of its statements in flight */
} spend_t;

/* Spend read from the ledger: one statement of another process, or (at
 * start) the sum of a period. */
typedef struct row {
    char *user, *database, *application; /* who */
    int64_t started_us;                  /* when it started */
    int64_t micro;                       /* what it cost */
    int period;                          /* -1: every period holding started_us; else only this */
} row_t;

/* An alert to record once per (budget, period, threshold, channel). */
typedef struct alert {
    int64_t budget_id;    /* which budget */
    int64_t period_start; /* which period */
    int pct;              /* which threshold */
    char channel[160];    /* "log", or "log:user=NAME" for a default budget */
    char text[384];       /* what to log */
} alert_t;

/* A warning already given in this process. */
typedef struct fired {
    int64_t budget_id, period_start; /* budget and period */
    int pct;                         /* threshold */
    uint64_t user_hash;              /* the user, for default budgets; else 0 */
} fired_t;

struct pgt_budgets {
    uv_loop_t *loop;     /* the event loop */
    uv_async_t async;    /* the thread has news */
    bool async_open;     /* async initialised (closed by pgt_budgets_stop) */
    pthread_t thread;    /* the ledger thread */
    bool thread_started; /* joined at free */

    /* Shared with the thread, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;                       /* the thread must end */
    pgt_budget_config_t *posted_cfg; /* new budgets, for the loop */
    row_t *rows;                     /* new spend, for the loop */
    size_t nrows, rows_cap;
    alert_t *alerts; /* alerts, for the thread */
    size_t nalerts, alerts_cap;

    /* The thread's own. */
    char *path;           /* the ledger */
    int64_t instance;     /* this process's rows */
    char *admin_conninfo; /* where role memberships are read, or "" */
    int role_refresh_ms;  /* how often */
    int interval_ms;      /* how often the ledger is polled and running costs checked */

    /* The loop's own. */
    pgt_budget_config_t *cfg;        /* budgets in force (NULL until loaded) */
    spend_t *buckets[SPEND_BUCKETS]; /* spend by (dim, name) */
    int64_t start_us[NPERIODS];      /* current periods */
    int64_t end_us[NPERIODS];
    pgt_price_t price;    /* for running costs */
    char currency[8];     /* for messages */
    char *contact;        /* [budget] contact */
    int64_t notice_above; /* [budget] notice_above */
    char **exempt;        /* [budget] exempt_users (copy) */
    size_t nexempt;
    fired_t fired[FIRED_MAX]; /* warnings given, a ring */
    size_t nfired;
};

/* ---- small helpers -------------------------------------------------------- */

static uint64_t hash_str(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* snprintf for messages, which may be cut at the buffer's end. */
static void say(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

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

static void money(const pgt_budgets_t *b, int64_t micro, char *buf, size_t len)
{
    pgt_money_format_short(micro, b->currency, buf, len);
}

/* The local time at which a period ends, e.g. "2026-11-28 00:00 CET". */
static void local_time(int64_t us, char *buf, size_t len)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M %Z", &tm);
}

/* ---- spend ---------------------------------------------------------------- */

/* Moves to the periods holding now. */
static void roll(pgt_budgets_t *b, int64_t now)
{
    for (int p = 0; p < NPERIODS; p++)
        if (now >= b->end_us[p] || now < b->start_us[p])
            pgt_period_bounds((pgt_period_t)p, now, &b->start_us[p], &b->end_us[p]);
}

static spend_t *spend_get(pgt_budgets_t *b, int dim, const char *name, bool create)
{
    uint64_t h = hash_str(1469598103934665603ull + (uint64_t)dim, name);
    spend_t **head = &b->buckets[h % SPEND_BUCKETS];
    for (spend_t *s = *head; s; s = s->next)
        if (s->dim == dim && strcmp(s->name, name) == 0)
            return s;
    if (!create)
        return NULL;
    spend_t *s = calloc(1, sizeof(*s));
    if (!s || !(s->name = strdup(name))) {
        free(s);
        return NULL;
    }
    s->dim = dim;
    s->next = *head;
    *head = s;
    return s;
}

static int64_t spend_in(const pgt_budgets_t *b, const spend_t *s, int p)
{
    return s && s->start_us[p] == b->start_us[p] ? s->micro[p] : 0;
}

/* Adds micro spent by name at started_us to the periods that hold it (only
 * to period only_p when it is not -1). */
static void spend_add(pgt_budgets_t *b, int dim, const char *name, int64_t started_us,
                      int64_t micro, int only_p)
{
    if (micro <= 0)
        return;
    spend_t *s = spend_get(b, dim, name ? name : "", true);
    if (!s)
        return;
    for (int p = 0; p < NPERIODS; p++) {
        if ((only_p >= 0 && p != only_p) || started_us < b->start_us[p] ||
            started_us >= b->end_us[p])
            continue;
        if (s->start_us[p] != b->start_us[p]) {
            s->start_us[p] = b->start_us[p];
            s->micro[p] = 0;
        }
        s->micro[p] += micro;
    }
}

static void spend_add_who(pgt_budgets_t *b, const char *user, const char *database,
                          const char *application, int64_t started_us, int64_t micro, int only_p)
{
    spend_add(b, DIM_USER, user, started_us, micro, only_p);
    spend_add(b, DIM_APP, application, started_us, micro, only_p);
    spend_add(b, DIM_DB, database, started_us, micro, only_p);
}

/* ---- which budgets apply -------------------------------------------------- */

static bool is_exempt(const pgt_budgets_t *b, const char *user)
{
    for (size_t i = 0; i < b->nexempt; i++)
        if (strcmp(b->exempt[i], user) == 0)
            return true;
    return false;
}

static bool role_has(const pgt_budget_config_t *cfg, const char *role, const char *user)
{
    for (size_t i = 0; i < cfg->nrole_members; i++)
        if (strcmp(cfg->role_members[i].role, role) == 0 &&
            strcmp(cfg->role_members[i].user, user) == 0)
            return true;
    return false;
}

static bool team_has(const pgt_budget_team_t *t, const char *user)
{
    for (size_t i = 0; t && i < t->nmembers; i++)
        if (strcmp(t->members[i], user) == 0)
            return true;
    return false;
}

static bool has_user_budget(const pgt_budget_config_t *cfg, const char *user, pgt_period_t p)
{
    for (size_t i = 0; i < cfg->nbudgets; i++)
        if (cfg->budgets[i].subject_type == PGT_BUDGET_SUBJECT_USER &&
            cfg->budgets[i].period == p && strcmp(cfg->budgets[i].subject, user) == 0)
            return true;
    return false;
}

static bool applies(const pgt_budget_config_t *cfg, const pgt_budget_t *bg, const pgt_who_t *who)
{
    switch (bg->subject_type) {
    case PGT_BUDGET_SUBJECT_USER:
        return strcmp(bg->subject, who->user) == 0;
    case PGT_BUDGET_SUBJECT_ROLE:
        return role_has(cfg, bg->subject, who->user);
    case PGT_BUDGET_SUBJECT_TEAM:
        return team_has(pgt_budget_team_find(cfg, bg->subject), who->user);
    case PGT_BUDGET_SUBJECT_APPLICATION:
        return strcmp(bg->subject, who->application) == 0;
    case PGT_BUDGET_SUBJECT_DATABASE:
        return strcmp(bg->subject, who->database) == 0;
    case PGT_BUDGET_SUBJECT_DEFAULT:
        return !has_user_budget(cfg, who->user, bg->period);
    }
    return false;
}

/* Spend (and, with running, the cost so far of statements in flight) of
 * budget bg as it applies to who. */
static int64_t budget_spent(pgt_budgets_t *b, const pgt_budget_t *bg, const pgt_who_t *who,
                            bool running)
{
    const pgt_budget_config_t *cfg = b->cfg;
    int p = (int)bg->period;
    int64_t sum = 0;
    const spend_t *s;
#define ADD(dim, name)                                                                             \
    do {                                                                                           \
        s = spend_get(b, dim, name, false);                                                        \
        sum += spend_in(b, s, p) + (running && s ? s->running : 0);                                \
    } while (0)
    switch (bg->subject_type) {
    case PGT_BUDGET_SUBJECT_USER:
    case PGT_BUDGET_SUBJECT_DEFAULT:
        ADD(DIM_USER, who->user);
        break;
    case PGT_BUDGET_SUBJECT_ROLE:
        for (size_t i = 0; i < cfg->nrole_members; i++)
            if (strcmp(cfg->role_members[i].role, bg->subject) == 0)
                ADD(DIM_USER, cfg->role_members[i].user);
        break;
    case PGT_BUDGET_SUBJECT_TEAM: {
        const pgt_budget_team_t *t = pgt_budget_team_find(cfg, bg->subject);
        for (size_t i = 0; t && i < t->nmembers; i++)
            ADD(DIM_USER, t->members[i]);
        break;
    }
    case PGT_BUDGET_SUBJECT_APPLICATION:
        ADD(DIM_APP, bg->subject);
        break;
    case PGT_BUDGET_SUBJECT_DATABASE:
        ADD(DIM_DB, bg->subject);
        break;
    }
#undef ADD
    return sum;
}

static int64_t budget_limit(const pgt_budgets_t *b, const pgt_budget_t *bg, const pgt_who_t *who,
                            int64_t now)
{
    int64_t limit = bg->limit_micro;
    int p = (int)bg->period;
    if (bg->subject_type == PGT_BUDGET_SUBJECT_USER ||
        bg->subject_type == PGT_BUDGET_SUBJECT_DEFAULT)
        limit += pgt_budget_grant_total(b->cfg, who->user, bg->period, b->start_us[p], b->end_us[p],
                                        now);
    return limit;
}

/* "user alice/day", "default budget of alice/day", "team growth/month". */
static void budget_name(const pgt_budget_t *bg, const pgt_who_t *who, char *buf, size_t len)
{
    if (bg->subject_type == PGT_BUDGET_SUBJECT_DEFAULT)
        say(buf, len, "default (user %s)/%s", who->user, pgt_period_name(bg->period));
    else
        say(buf, len, "%s %s/%s", pgt_budget_subject_name(bg->subject_type), bg->subject,
            pgt_period_name(bg->period));
}

static int percent(int64_t spent, int64_t limit)
{
    if (limit <= 0)
        return spent > 0 ? 100 : 0;
    return (int)((spent * 100) / limit);
}

/* ---- alerts --------------------------------------------------------------- */

/* Whether this warning was given already; if not, remembers it. */
static bool fire_once(pgt_budgets_t *b, const pgt_budget_t *bg, const pgt_who_t *who, int pct)
{
    fired_t f = {.budget_id = bg->id,
                 .period_start = b->start_us[bg->period],
                 .pct = pct,
                 .user_hash = bg->subject_type == PGT_BUDGET_SUBJECT_DEFAULT
                                  ? hash_str(1469598103934665603ull, who->user)
                                  : 0};
    size_t n = b->nfired < FIRED_MAX ? b->nfired : FIRED_MAX;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&b->fired[i], &f, sizeof(f)) == 0)
            return false;
    b->fired[b->nfired++ % FIRED_MAX] = f;
    return true;
}

static void queue_alert(pgt_budgets_t *b, const pgt_budget_t *bg, const pgt_who_t *who, int pct,
                        const char *text)
{
    alert_t a = {.budget_id = bg->id, .period_start = b->start_us[bg->period], .pct = pct};
    if (bg->subject_type == PGT_BUDGET_SUBJECT_DEFAULT)
        say(a.channel, sizeof(a.channel), "log:user=%s", who->user);
    else
        say(a.channel, sizeof(a.channel), "log");
    say(a.text, sizeof(a.text), "%s", text);
    pthread_mutex_lock(&b->mu);
    if (reserve((void **)&b->alerts, &b->alerts_cap, b->nalerts, sizeof(a)))
        b->alerts[b->nalerts++] = a;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* ---- the loop's API ------------------------------------------------------- */

bool pgt_budgets_notice_due(const pgt_budgets_t *b, int64_t est_micro)
{
    return b && b->notice_above > 0 && est_micro >= b->notice_above;
}

bool pgt_budgets_apply(const pgt_budgets_t *b, const pgt_who_t *who)
{
    return b && b->cfg && b->cfg->nbudgets > 0 && !is_exempt(b, who->user);
}

static void refusal(pgt_budgets_t *b, pgt_verdict_t *out, const char *sqlstate,
                    const pgt_budget_t *bg)
{
    out->refuse = true;
    out->budget_id = bg->id;
    memcpy(out->sqlstate, sqlstate, 6);
    if (b->contact && *b->contact)
        say(out->hint, sizeof(out->hint),
            "See your spend with: pgtallyctl usage. To raise the budget, ask %s.", b->contact);
    else
        say(out->hint, sizeof(out->hint),
            "See your spend with: pgtallyctl usage. To raise the budget, ask your pgtally "
            "administrator.");
}

void pgt_budgets_check(pgt_budgets_t *b, const pgt_who_t *who, int64_t est_micro, bool never_refuse,
                       pgt_verdict_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!b || !b->cfg)
        return;
    int64_t now = pgt_clock_us();
    roll(b, now);
    bool exempt = is_exempt(b, who->user);
    const pgt_budget_t *top = NULL;
    int64_t top_spent = 0, top_limit = 0;
    int top_pct = -1;
    char name[320], a[32], l[32], e[32], reset[48];
    for (size_t i = 0; i < b->cfg->nbudgets; i++) {
        const pgt_budget_t *bg = &b->cfg->budgets[i];
        if (!applies(b->cfg, bg, who))
            continue;
        int64_t spent = budget_spent(b, bg, who, false);
        int64_t limit = budget_limit(b, bg, who, now);
        int pct = percent(spent, limit);
        if (pct > top_pct) {
            top = bg;
            top_pct = pct;
            top_spent = spent;
            top_limit = limit;
        }
        budget_name(bg, who, name, sizeof(name));
        money(b, spent, a, sizeof(a));
        money(b, limit, l, sizeof(l));
        money(b, est_micro > 0 ? est_micro : 0, e, sizeof(e));
        local_time(b->end_us[bg->period], reset, sizeof(reset));
        if (!out->refuse && !exempt && !never_refuse && bg->action == PGT_BUDGET_ACTION_BLOCK &&
            spent >= limit) {
            refusal(b, out, "53400", bg);
            say(out->message, sizeof(out->message), "pgtally: budget %s is spent", name);
            say(out->detail, sizeof(out->detail),
                "Spent %s of %s; this statement is estimated at %s. The budget resets at %s.", a, l,
                est_micro >= 0 ? e : "an unknown cost", reset);
        }
        if (!out->refuse && !exempt && !never_refuse && bg->per_query_micro >= 0 &&
            est_micro > bg->per_query_micro) {
            char cap[32];
            money(b, bg->per_query_micro, cap, sizeof(cap));
            refusal(b, out, "54000", bg);
            say(out->message, sizeof(out->message),
                "pgtally: statement estimated at %s exceeds the per-query cap of %s of "
                "budget %s",
                e, cap, name);
            say(out->detail, sizeof(out->detail),
                "Budget %s: spent %s of %s; per-query cap %s. The budget resets at %s.", name, a, l,
                cap, reset);
        }
        /* Thresholds crossed, 100% included: the highest new one warns. */
        int crossed = 0;
        for (int w = 0; w <= bg->nwarn; w++) {
            int t = w < bg->nwarn ? bg->warn_pcts[w] : 100;
            if (pct >= t && t > crossed && fire_once(b, bg, who, t))
                crossed = t;
        }
        if (crossed > 0) {
            say(out->warning, sizeof(out->warning),
                "pgtally: budget %s is at %d%% (%s of %s); it resets at %s", name, pct, a, l,
                reset);
            queue_alert(b, bg, who, crossed, out->warning);
        }
    }
    if (b->notice_above > 0 && est_micro >= b->notice_above) {
        money(b, est_micro, e, sizeof(e));
        if (top) {
            budget_name(top, who, name, sizeof(name));
            money(b, top_spent, a, sizeof(a));
            money(b, top_limit, l, sizeof(l));
            say(out->notice, sizeof(out->notice),
                "pgtally: estimated %s; budget %s at %d%% (%s of %s)", e, name, top_pct, a, l);
        } else {
            say(out->notice, sizeof(out->notice), "pgtally: estimated %s", e);
        }
    }
}

void pgt_budgets_spent(pgt_budgets_t *b, const pgt_who_t *who, int64_t cost_micro)
{
    if (!b)
        return;
    int64_t now = pgt_clock_us();
    roll(b, now);
    spend_add_who(b, who->user, who->database, who->application, now, cost_micro, -1);
}

void pgt_budgets_running_begin(pgt_budgets_t *b)
{
    roll(b, pgt_clock_us());
    for (size_t i = 0; i < SPEND_BUCKETS; i++)
        for (spend_t *s = b->buckets[i]; s; s = s->next)
            s->running = 0;
}

void pgt_budgets_running_add(pgt_budgets_t *b, const pgt_who_t *who, int64_t running_micro)
{
    const char *names[NDIMS] = {who->user, who->application, who->database};
    for (int d = 0; d < NDIMS; d++) {
        spend_t *s = spend_get(b, d, names[d], true);
        if (s)
            s->running += running_micro;
    }
}

bool pgt_budgets_running_check(pgt_budgets_t *b, const pgt_who_t *who, int64_t running_micro,
                               pgt_verdict_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!pgt_budgets_apply(b, who))
        return false;
    int64_t now = pgt_clock_us();
    char name[320], a[32], l[32], r[32];
    money(b, running_micro, r, sizeof(r));
    for (size_t i = 0; i < b->cfg->nbudgets; i++) {
        const pgt_budget_t *bg = &b->cfg->budgets[i];
        if (!applies(b->cfg, bg, who))
            continue;
        budget_name(bg, who, name, sizeof(name));
        int64_t limit = budget_limit(b, bg, who, now);
        int64_t spent = budget_spent(b, bg, who, true);
        money(b, spent, a, sizeof(a));
        money(b, limit, l, sizeof(l));
        if (bg->action == PGT_BUDGET_ACTION_BLOCK && spent > limit) {
            refusal(b, out, "57014", bg);
            say(out->message, sizeof(out->message),
                "pgtally: canceling statement: budget %s is spent", name);
            say(out->detail, sizeof(out->detail),
                "Spent %s of %s, counting %s for this statement so far.", a, l, r);
            return true;
        }
        if (bg->per_query_micro >= 0 && running_micro > bg->per_query_micro) {
            char cap[32];
            money(b, bg->per_query_micro, cap, sizeof(cap));
            refusal(b, out, "57014", bg);
            say(out->message, sizeof(out->message),
                "pgtally: canceling statement: it has cost %s, over the per-query cap of "
                "%s of budget %s",
                r, cap, name);
            say(out->detail, sizeof(out->detail), "Budget %s: spent %s of %s.", name, a, l);
            return true;
        }
    }
    return false;
}

int64_t pgt_budgets_cost(const pgt_budgets_t *b, double seconds, int64_t bytes)
{
    return pgt_pricing_cost(&b->price, seconds, bytes);
}

int64_t pgt_budgets_running_cost(const pgt_budgets_t *b, double seconds)
{
    pgt_price_t compute = {.per_compute_second_micro = b->price.per_compute_second_micro};
    return pgt_pricing_cost(&compute, seconds, 0);
}

int pgt_budgets_interval_ms(const pgt_budgets_t *b)
{
    return b->interval_ms;
}

/* News from the thread: budgets and other processes' spend. */
static void async_cb(uv_async_t *h)
{
    pgt_budgets_t *b = h->data;
    pthread_mutex_lock(&b->mu);
    pgt_budget_config_t *cfg = b->posted_cfg;
    b->posted_cfg = NULL;
    row_t *rows = b->rows;
    size_t n = b->nrows;
    b->rows = NULL;
    b->nrows = b->rows_cap = 0;
    pthread_mutex_unlock(&b->mu);
    if (cfg) {
        pgt_budget_config_free(b->cfg);
        b->cfg = cfg;
        PGT_INFO("budgets_loaded", "budgets=%zu teams=%zu grants=%zu role_members=%zu version=%lld",
                 cfg->nbudgets, cfg->nteams, cfg->ngrants, cfg->nrole_members,
                 (long long)cfg->settings_version);
    }
    roll(b, pgt_clock_us());
    for (size_t i = 0; i < n; i++) {
        row_t *r = &rows[i];
        spend_add_who(b, r->user, r->database, r->application, r->started_us, r->micro, r->period);
        free(r->user);
        free(r->database);
        free(r->application);
    }
    free(rows);
}

/* ---- the thread ----------------------------------------------------------- */

static void post_row(pgt_budgets_t *b, sqlite3_stmt *st, int64_t started_us, int period)
{
    row_t r = {.user = dup_or_empty((const char *)sqlite3_column_text(st, 0)),
               .database = dup_or_empty((const char *)sqlite3_column_text(st, 1)),
               .application = dup_or_empty((const char *)sqlite3_column_text(st, 2)),
               .micro = sqlite3_column_int64(st, 3),
               .started_us = started_us,
               .period = period};
    pthread_mutex_lock(&b->mu);
    if (r.user && r.database && r.application &&
        reserve((void **)&b->rows, &b->rows_cap, b->nrows, sizeof(r))) {
        b->rows[b->nrows++] = r;
        r.user = r.database = r.application = NULL;
    }
    pthread_mutex_unlock(&b->mu);
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
static int load_sums(pgt_budgets_t *b, sqlite3 *db, int64_t *max)
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
        sqlite3_bind_int64(st, 3, b->instance);
        while (sqlite3_step(st) == SQLITE_ROW)
            post_row(b, st, start, p);
    }
    sqlite3_finalize(st);
    return 0;
}

/* Statements other processes recorded since row *last_id. */
static int poll_rows(pgt_budgets_t *b, sqlite3 *db, sqlite3_stmt *st, int64_t *last_id)
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
    sqlite3_bind_int64(st, 3, b->instance);
    int rc, n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        post_row(b, st, sqlite3_column_int64(st, 4), -1);
        n++;
    }
    if (rc != SQLITE_DONE)
        return -1;
    *last_id = upto;
    return n;
}

/* Role memberships from the server (admin_conninfo) into role_members. */
static int refresh_roles(pgt_budgets_t *b, sqlite3 *db)
{
    PGconn *conn = PQconnectdb(b->admin_conninfo);
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
static void write_alerts(pgt_budgets_t *b, sqlite3 *db)
{
    pthread_mutex_lock(&b->mu);
    alert_t *alerts = b->alerts;
    size_t n = b->nalerts;
    b->alerts = NULL;
    b->nalerts = b->alerts_cap = 0;
    pthread_mutex_unlock(&b->mu);
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
static long post_config(pgt_budgets_t *b, sqlite3 *db)
{
    char err[256];
    pgt_budget_config_t *cfg = NULL;
    if (pgt_budget_config_load(db, &cfg, err, sizeof(err)) != 0) {
        PGT_WARN("budgets_load_failed", "error=\"%s\"", err);
        return -1;
    }
    long n = (long)cfg->nbudgets;
    pthread_mutex_lock(&b->mu);
    pgt_budget_config_free(b->posted_cfg);
    b->posted_cfg = cfg;
    pthread_mutex_unlock(&b->mu);
    return n;
}

static void *thread_main(void *arg)
{
    pgt_budgets_t *b = arg;
    sqlite3 *db = NULL;
    sqlite3_stmt *poll = NULL;
    int64_t version = -1, last_id = 0, next_roles = 0;
    bool loaded = false, active = false;
    char err[256];
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        pthread_mutex_unlock(&b->mu);
        if (!db && pgt_budget_store_open(b->path, true, &db, err, sizeof(err)) != 0) {
            PGT_WARN("budgets_ledger_failed", "ledger=%s error=\"%s\"", b->path, err);
            db = NULL;
        }
        if (db && !poll &&
            sqlite3_prepare_v2(db,
                               "SELECT \"user\", database, application, cost_micro, started_at "
                               "FROM queries WHERE id > ?1 AND id <= ?2 AND (instance IS NULL OR "
                               "instance <> ?3)",
                               -1, &poll, NULL) != SQLITE_OK) {
            PGT_WARN("budgets_ledger_failed", "error=\"%s\"", sqlite3_errmsg(db));
            poll = NULL;
        }
        if (db && poll) {
            bool news = false;
            int64_t now = pgt_clock_us();
            if (*b->admin_conninfo && now >= next_roles) {
                next_roles = now + (int64_t)b->role_refresh_ms * 1000;
                if (refresh_roles(b, db) == 0)
                    version = -1; /* memberships changed: reload */
            }
            int64_t v = pgt_budget_settings_version(db);
            if (v != version) {
                /* Spend of other processes is followed from the first
                 * budget on; until then no row is read. */
                if (post_config(b, db) > 0)
                    active = true;
                version = v;
                news = true;
            }
            if (active && !loaded) {
                loaded = load_sums(b, db, &last_id) == 0;
                news = true;
            } else if (loaded && poll_rows(b, db, poll, &last_id) > 0) {
                news = true;
            }
            write_alerts(b, db);
            if (news)
                uv_async_send(&b->async);
        }
        pthread_mutex_lock(&b->mu);
        if (b->stop)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (int64_t)b->interval_ms * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        if (b->nalerts == 0)
            pthread_cond_timedwait(&b->cv, &b->mu, &ts);
    }
    pthread_mutex_unlock(&b->mu);
    if (db)
        write_alerts(b, db);
    sqlite3_finalize(poll);
    pgt_budget_store_close(db);
    return NULL;
}

/* ---- life cycle ----------------------------------------------------------- */

static void free_exempt(pgt_budgets_t *b)
{
    for (size_t i = 0; i < b->nexempt; i++)
        free(b->exempt[i]);
    free(b->exempt);
    b->exempt = NULL;
    b->nexempt = 0;
}

void pgt_budgets_configure(pgt_budgets_t *b, const pgt_config_t *cfg)
{
    pgt_pricing_from_config(cfg, &b->price);
    snprintf(b->currency, sizeof(b->currency), "%s", cfg->currency);
    free(b->contact);
    b->contact = dup_or_empty(cfg->budget_contact);
    b->notice_above = cfg->budget_notice_above_micro;
    free_exempt(b);
    b->exempt = calloc(cfg->budget_exempt_count + 1, sizeof(*b->exempt));
    for (size_t i = 0; b->exempt && i < cfg->budget_exempt_count; i++)
        if ((b->exempt[b->nexempt] = strdup(cfg->budget_exempt_users[i])) != NULL)
            b->nexempt++;
}

static void free_on_close(uv_handle_t *h)
{
    pgt_budgets_free(h->data);
}

pgt_budgets_t *pgt_budgets_new(uv_loop_t *loop, const pgt_config_t *cfg, const char *ledger_path,
                               int64_t instance, char *err, size_t errlen)
{
    pgt_budgets_t *b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->loop = loop;
    b->instance = instance;
    b->interval_ms = cfg->budget_check_interval_ms > 0 ? cfg->budget_check_interval_ms : 250;
    b->role_refresh_ms = cfg->budget_role_refresh_ms > 0 ? cfg->budget_role_refresh_ms : 60000;
    b->path = strdup(ledger_path);
    b->admin_conninfo = dup_or_empty(cfg->admin_conninfo);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    pgt_budgets_configure(b, cfg);
    roll(b, pgt_clock_us());
    if (!b->path || !b->admin_conninfo) {
        snprintf(err, errlen, "out of memory");
        pgt_budgets_free(b);
        return NULL;
    }
    uv_async_init(loop, &b->async, async_cb);
    b->async.data = b;
    b->async_open = true;
    if (pthread_create(&b->thread, NULL, thread_main, b) != 0) {
        snprintf(err, errlen, "cannot start the budget thread");
        uv_close((uv_handle_t *)&b->async, free_on_close);
        return NULL;
    }
    b->thread_started = true;
    return b;
}

void pgt_budgets_stop(pgt_budgets_t *b)
{
    if (b && b->async_open && !uv_is_closing((uv_handle_t *)&b->async))
        uv_close((uv_handle_t *)&b->async, NULL);
}

void pgt_budgets_free(pgt_budgets_t *b)
{
    if (!b)
        return;
    if (b->thread_started) {
        pthread_mutex_lock(&b->mu);
        b->stop = true;
        pthread_cond_signal(&b->cv);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->thread, NULL);
    }
    for (size_t i = 0; i < b->nrows; i++) {
        free(b->rows[i].user);
        free(b->rows[i].database);
        free(b->rows[i].application);
    }
    free(b->rows);
    free(b->alerts);
    pgt_budget_config_free(b->posted_cfg);
    pgt_budget_config_free(b->cfg);
    for (size_t i = 0; i < SPEND_BUCKETS; i++) {
        while (b->buckets[i]) {
            spend_t *s = b->buckets[i];
            b->buckets[i] = s->next;
            free(s->name);
            free(s);
        }
    }
    free_exempt(b);
    free(b->contact);
    free(b->path);
    free(b->admin_conninfo);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}
