/* Budget enforcement on the loop: the bookkeeping. Spend kept per user,
 * application and database for the current day, week and month, running
 * costs, and the thresholds already warned; from them the input of the
 * rules (budget_rules.c), whose verdict it records and whose alerts it
 * queues to the ledger thread (budget_sync.c). See include/pgtally/budget.h
 * and docs/budgets.md. */
#include "pgtally/budget.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/budget_rules.h"
#include "pgtally/budget_store.h"
#include "pgtally/budget_sync.h"
#include "pgtally/fingerprint.h"
#include "pgtally/log.h"
#include "pgtally/period.h"
#include "pgtally/pricing.h"
#include "pgtally/text.h"

/* Day, week and month. */
#define NPERIODS (PGT_PERIOD_MONTH + 1)
#define SPEND_BUCKETS 1024
#define WARNED_MAX 4096

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

/* The highest threshold warned of one budget (of a default budget: for one
 * user) in one period. */
typedef struct warned {
    int64_t budget_id;    /* which budget */
    uint64_t user_hash;   /* the user, for default budgets; else 0 */
    int64_t period_start; /* the period pct belongs to */
    int pct;              /* the threshold */
} warned_t;

struct pgt_budgets {
    uv_async_t async;        /* the thread has news */
    bool async_open;         /* async initialised (closed by pgt_budgets_stop) */
    pgt_budget_sync_t *sync; /* the ledger thread, or NULL */
    int interval_ms;         /* how often running costs are checked */

    pgt_budget_config_t *cfg;        /* budgets in force (NULL until loaded) */
    pgt_budget_case_t *cases;        /* room for cfg->nbudgets cases, for the rules */
    pgt_budget_outcome_t *outcomes;  /* and their outcomes */
    spend_t *buckets[SPEND_BUCKETS]; /* spend by (dim, name) */
    int64_t start_us[NPERIODS];      /* current periods */
    int64_t end_us[NPERIODS];        /* their ends */
    pgt_price_t price;               /* for running costs */
    char currency[8];                /* for messages */
    char *contact;                   /* [budget] contact */
    int64_t notice_above;            /* [budget] notice_above */
    bool unknown_refuse;             /* [budget] unknown_estimate = refuse */
    char **exempt;                   /* [budget] exempt_users (copy) */
    size_t nexempt;                  /* entries in exempt */
    warned_t warned[WARNED_MAX];     /* thresholds warned, a ring */
    size_t nwarned;                  /* entries ever added to warned */
    pgt_fp_cache_t *rule_fps;        /* shapes of strings the estimator did not fingerprint
                                        (several statements, estimates off), made for rules */
};

/* ---- small helpers -------------------------------------------------------- */

static uint64_t hash_str(uint64_t h, const char *s)
{
    return pgt_fnv1a(h, s, strlen(s));
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

/* The settings the rules read, borrowed from b. */
static pgt_budget_policy_t policy_of(const pgt_budgets_t *b)
{
    return (pgt_budget_policy_t){.cfg = b->cfg,
                                 .exempt = (const char *const *)b->exempt,
                                 .nexempt = b->nexempt,
                                 .currency = b->currency,
                                 .contact = b->contact,
                                 .notice_above = b->notice_above,
                                 .unknown_refuse = b->unknown_refuse};
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

/* Into c: the spend in the current period of budget bg as it applies to
 * who, and the cost so far of its subject's statements in flight. */
static void budget_spent(pgt_budgets_t *b, const pgt_budget_t *bg, const pgt_who_t *who,
                         pgt_budget_case_t *c)
{
    const pgt_budget_config_t *cfg = b->cfg;
    int p = (int)bg->period;
    const spend_t *s;
#define ADD(dim, name)                                                                             \
    do {                                                                                           \
        s = spend_get(b, dim, name, false);                                                        \
        c->spent_micro += spend_in(b, s, p);                                                       \
        c->running_micro += s ? s->running : 0;                                                    \
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
    c->spent_start_us = b->start_us[p];
}

/* ---- thresholds warned ---------------------------------------------------- */

/* Whom the memory of bg is kept for: the user for a default budget (which
 * applies to each user on its own), else nobody (0). */
static uint64_t warned_user(const pgt_budget_t *bg, const pgt_who_t *who)
{
    return bg->subject_type == PGT_BUDGET_SUBJECT_DEFAULT
               ? hash_str(1469598103934665603ull, who->user)
               : 0;
}

/* The memory of budget bg as it applies to who, or NULL. */
static warned_t *warned_find(pgt_budgets_t *b, const pgt_budget_t *bg, const pgt_who_t *who)
{
    uint64_t user_hash = warned_user(bg, who);
    size_t n = b->nwarned < WARNED_MAX ? b->nwarned : WARNED_MAX;
    for (size_t i = 0; i < n; i++)
        if (b->warned[i].budget_id == bg->id && b->warned[i].user_hash == user_hash)
            return &b->warned[i];
    return NULL;
}

/* Remembers that bg, as it applies to who, warned at pct in the period
 * starting at period_start. */
static void warned_set(pgt_budgets_t *b, const pgt_budget_t *bg, const pgt_who_t *who,
                       int64_t period_start, int pct)
{
    warned_t *w = warned_find(b, bg, who);
    if (!w) {
        w = &b->warned[b->nwarned++ % WARNED_MAX];
        w->budget_id = bg->id;
        w->user_hash = warned_user(bg, who);
    }
    w->period_start = period_start;
    w->pct = pct;
}

static void queue_alert(pgt_budgets_t *b, const pgt_budget_t *bg, const pgt_who_t *who,
                        const pgt_budget_outcome_t *o)
{
    if (!b->sync)
        return;
    pgt_budget_alert_t a = {
        .budget_id = bg->id, .period_start = o->period_start_us, .pct = o->warn_pct};
    if (bg->subject_type == PGT_BUDGET_SUBJECT_DEFAULT)
        snprintf(a.channel, sizeof(a.channel), "log:user=%s", who->user);
    else
        snprintf(a.channel, sizeof(a.channel), "log");
    snprintf(a.text, sizeof(a.text), "%s", o->warning);
    pgt_budget_sync_alert(b->sync, &a);
}

/* ---- the loop's API ------------------------------------------------------- */

/* The budgets of b->cfg that apply to who, in order, with their spend,
 * running costs and thresholds warned, into b->cases. Returns how many. */
static size_t cases_for(pgt_budgets_t *b, const pgt_who_t *who)
{
    size_t n = 0;
    for (size_t i = 0; i < b->cfg->nbudgets; i++) {
        const pgt_budget_t *bg = &b->cfg->budgets[i];
        if (!pgt_budget_rules_applies(b->cfg, bg, who))
            continue;
        pgt_budget_case_t *c = &b->cases[n++];
        *c = (pgt_budget_case_t){.budget = bg};
        budget_spent(b, bg, who, c);
        const warned_t *w = warned_find(b, bg, who);
        if (w) {
            c->warned_pct = w->pct;
            c->warned_start_us = w->period_start;
        }
    }
    return n;
}

/* The most any one user has spent in period p. */
static int64_t most_by_one_user(const pgt_budgets_t *b, int p)
{
    int64_t most = 0;
    for (size_t i = 0; i < SPEND_BUCKETS; i++)
        for (const spend_t *s = b->buckets[i]; s; s = s->next)
            if (s->dim == DIM_USER && spend_in(b, s, p) > most)
                most = spend_in(b, s, p);
    return most;
}

size_t pgt_budgets_spend(pgt_budgets_t *b, pgt_budget_spend_t *out, size_t max)
{
    if (!b || !b->cfg)
        return 0;
    roll(b, pgt_clock_us());
    size_t n = 0;
    for (size_t i = 0; i < b->cfg->nbudgets && n < max; i++) {
        const pgt_budget_t *bg = &b->cfg->budgets[i];
        pgt_budget_spend_t *o = &out[n++];
        *o = (pgt_budget_spend_t){.budget_id = bg->id,
                                  .subject_type = bg->subject_type,
                                  .period = bg->period,
                                  .limit_micro = bg->limit_micro};
        snprintf(o->subject, sizeof(o->subject), "%s", bg->subject ? bg->subject : "");
        if (bg->subject_type == PGT_BUDGET_SUBJECT_DEFAULT) {
            o->spent_micro = most_by_one_user(b, (int)bg->period);
            continue;
        }
        pgt_who_t who = {.user = o->subject, .application = "", .database = ""};
        pgt_budget_case_t c = {.budget = bg};
        budget_spent(b, bg, &who, &c);
        o->spent_micro = c.spent_micro;
    }
    return n;
}

bool pgt_budgets_notice_due(const pgt_budgets_t *b, int64_t est_micro)
{
    return b && b->notice_above > 0 && est_micro >= b->notice_above;
}

int64_t pgt_budgets_max_rows(const pgt_budgets_t *b, const pgt_who_t *who, int64_t *budget_id)
{
    *budget_id = 0;
    if (!b || !b->cfg)
        return -1;
    pgt_budget_policy_t pol = policy_of(b);
    return pgt_budget_rules_max_rows(&pol, who, budget_id);
}

bool pgt_budgets_apply(const pgt_budgets_t *b, const pgt_who_t *who)
{
    if (!b || !b->cfg || b->cfg->nbudgets == 0)
        return false;
    pgt_budget_policy_t pol = policy_of(b);
    return !pgt_budget_rules_exempt(&pol, who->user);
}

void pgt_budgets_check(pgt_budgets_t *b, const pgt_who_t *who, const int64_t est[3],
                       bool never_refuse, pgt_verdict_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!b || !b->cfg)
        return;
    pgt_budget_stmt_t st = {.who = who,
                            .est_micro = est[0],
                            .est_low_micro = est[1],
                            .est_high_micro = est[2],
                            .never_refuse = never_refuse,
                            .now_us = pgt_clock_us()};
    roll(b, st.now_us);
    size_t n = cases_for(b, who);
    pgt_budget_policy_t pol = policy_of(b);
    pgt_budget_rules_check(&pol, &st, b->cases, n, b->outcomes, out);
    for (size_t i = 0; i < n; i++) {
        const pgt_budget_outcome_t *o = &b->outcomes[i];
        if (o->warn_pct > 0) {
            warned_set(b, b->cases[i].budget, who, o->period_start_us, o->warn_pct);
            queue_alert(b, b->cases[i].budget, who, o);
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
    size_t n = cases_for(b, who);
    pgt_budget_policy_t pol = policy_of(b);
    return pgt_budget_rules_running(&pol, who, running_micro, pgt_clock_us(), b->cases, n, out) ==
           PGT_VERDICT_CANCEL;
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

/* Puts cfg in force, with room for its cases. Returns false (cfg freed,
 * the budgets in force kept) when out of memory. */
static bool use_config(pgt_budgets_t *b, pgt_budget_config_t *cfg)
{
    size_t n = cfg->nbudgets ? cfg->nbudgets : 1;
    pgt_budget_case_t *cases = calloc(n, sizeof(*cases));
    pgt_budget_outcome_t *outcomes = calloc(n, sizeof(*outcomes));
    if (!cases || !outcomes) {
        PGT_WARN("budgets_load_failed", "error=\"out of memory\"");
        free(cases);
        free(outcomes);
        pgt_budget_config_free(cfg);
        return false;
    }
    free(b->cases);
    free(b->outcomes);
    pgt_budget_config_free(b->cfg);
    b->cases = cases;
    b->outcomes = outcomes;
    b->cfg = cfg;
    PGT_INFO("budgets_loaded", "budgets=%zu teams=%zu grants=%zu role_members=%zu version=%lld",
             cfg->nbudgets, cfg->nteams, cfg->ngrants, cfg->nrole_members,
             (long long)cfg->settings_version);
    return true;
}

/* News from the thread: budgets and other processes' spend. */
static void async_cb(uv_async_t *h)
{
    pgt_budgets_t *b = h->data;
    pgt_budget_config_t *cfg;
    pgt_budget_row_t *rows;
    size_t n;
    pgt_budget_sync_take(b->sync, &cfg, &rows, &n);
    if (cfg)
        use_config(b, cfg);
    roll(b, pgt_clock_us());
    for (size_t i = 0; i < n; i++) {
        pgt_budget_row_t *r = &rows[i];
        spend_add_who(b, r->user, r->database, r->application, r->started_us, r->micro, r->period);
    }
    pgt_budget_sync_rows_free(rows, n);
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
    b->unknown_refuse = cfg->budget_unknown_refuse != 0;
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

pgt_budgets_t *pgt_budgets_new(uv_loop_t *loop, const pgt_config_t *cfg,
                               const pgt_ledger_where_t *where, int64_t instance, char *err,
                               size_t errlen)
{
    pgt_budgets_t *b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->interval_ms = cfg->budget_check_interval_ms > 0 ? cfg->budget_check_interval_ms : 250;
    pgt_budgets_configure(b, cfg);
    roll(b, pgt_clock_us());
    uv_async_init(loop, &b->async, async_cb);
    b->async.data = b;
    b->async_open = true;
    pgt_budget_sync_opts_t o = {
        .where = *where,
        .instance = instance,
        .admin_conninfo = cfg->admin_conninfo,
        .interval_ms = b->interval_ms,
        .role_refresh_ms = cfg->budget_role_refresh_ms > 0 ? cfg->budget_role_refresh_ms : 60000,
        .news = &b->async,
    };
    if ((b->sync = pgt_budget_sync_start(&o, err, errlen)) == NULL) {
        uv_close((uv_handle_t *)&b->async, free_on_close);
        return NULL;
    }
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
    pgt_budget_sync_free(b->sync);
    pgt_budget_config_free(b->cfg);
    free(b->cases);
    free(b->outcomes);
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
    pgt_fp_cache_free(b->rule_fps);
    free(b);
}

/* ---- rules by shape -------------------------------------------------------- */

const pgt_approval_t *pgt_budgets_approval(const pgt_budgets_t *b, const pgt_who_t *who,
                                           uint64_t fingerprint, uint64_t constants)
{
    if (!b || !b->cfg || b->cfg->approvals.n == 0)
        return NULL;
    return pgt_approval_match(&b->cfg->approvals, who->user, who->database, fingerprint, constants,
                              pgt_clock_us());
}

bool pgt_budgets_have_approvals(const pgt_budgets_t *b)
{
    return b && b->cfg && b->cfg->approvals.n > 0;
}

bool pgt_budgets_have_rules(const pgt_budgets_t *b)
{
    return b && b->cfg && b->cfg->rules.n > 0;
}

/* Statements of one string split at a time (every one is matched). */
#define RULE_STATEMENTS_MAX 64

/* The strictest rule matching the shape of sql[off, off + len). */
static const pgt_rule_t *rule_of_part(pgt_budgets_t *b, const pgt_who_t *who, const char *sql,
                                      size_t off, size_t len, int64_t now, const pgt_rule_t *best)
{
    pgt_shape_t shape;
    if (pgt_fp_shape(b->rule_fps, sql + off, len, &shape) != 0)
        return best;
    return pgt_rule_stricter(
        best, pgt_rule_match(&b->cfg->rules, shape.fingerprint, who->user, who->database, now));
}

/* The strictest rule matching a statement that a PREPARE ... AS or a
 * DECLARE ... FOR of sql holds: an EXECUTE or FETCH runs it later under
 * its own name, so it is judged where it is named. nstatements: how many
 * statements sql holds (at least as many as such statements). */
static const pgt_rule_t *rule_of_prepares(pgt_budgets_t *b, const pgt_who_t *who, const char *sql,
                                          int nstatements, int64_t now, const pgt_rule_t *best)
{
    pgt_prep_t *preps = malloc((size_t)(nstatements > 0 ? nstatements : 1) * sizeof(*preps));
    int n = preps ? pgt_fp_prepares(sql, preps, nstatements > 0 ? nstatements : 1) : 0;
    for (int i = 0; i < n; i++)
        if (preps[i].op == PGT_PREP_PREPARE || preps[i].op == PGT_PREP_DECLARE)
            best = rule_of_part(b, who, sql, preps[i].body_offset, preps[i].body_length, now, best);
    free(preps);
    return best;
}

/* How deep statements inside statements are followed (EXPLAIN ANALYZE
 * CREATE TABLE ... AS SELECT ...). */
#define RULE_INNER_DEPTH 3

/* The strictest rule matching a statement that one of sql runs inside it
 * (pgt_fp_inner: EXPLAIN ANALYZE, CREATE TABLE AS, COPY (query) TO), or
 * one inside that. nstatements: how many statements sql holds. */
static const pgt_rule_t *rule_of_inner(pgt_budgets_t *b, const pgt_who_t *who, const char *sql,
                                       int nstatements, int64_t now, const pgt_rule_t *best,
                                       int depth)
{
    int max = nstatements > 0 ? nstatements : 1;
    pgt_stmt_t *in = malloc((size_t)max * sizeof(*in));
    int n = in ? pgt_fp_inner(sql, in, max) : 0;
    for (int i = 0; i < n; i++) {
        best = rule_of_part(b, who, sql, in[i].offset, in[i].length, now, best);
        char *inner = depth < RULE_INNER_DEPTH ? strndup(sql + in[i].offset, in[i].length) : NULL;
        if (inner)
            best = rule_of_inner(b, who, inner, 1, now, best, depth + 1);
        free(inner);
    }
    free(in);
    return best;
}

const pgt_rule_t *pgt_budgets_rule(pgt_budgets_t *b, const pgt_who_t *who, uint64_t fp,
                                   const char *sql, size_t len)
{
    if (!pgt_budgets_have_rules(b))
        return NULL;
    int64_t now = pgt_clock_us();
    const pgt_rule_t *best =
        fp ? pgt_rule_match(&b->cfg->rules, fp, who->user, who->database, now) : NULL;
    if (!sql || len == 0 || sql[len] != '\0')
        return best;
    if (!b->rule_fps && !(b->rule_fps = pgt_fp_cache_new(1024)))
        return best;
    if (fp) { /* one statement, which the estimator fingerprinted */
        best = rule_of_prepares(b, who, sql, 1, now, best);
        return rule_of_inner(b, who, sql, 1, now, best, 1);
    }
    /* Every statement of the string, RULE_STATEMENTS_MAX at a time. */
    pgt_stmt_t st[RULE_STATEMENTS_MAX];
    int total = 0;
    for (size_t off = 0;;) {
        int n = pgt_fp_split(sql + off, st, RULE_STATEMENTS_MAX);
        for (int i = 0; i < n; i++)
            best = rule_of_part(b, who, sql, off + st[i].offset, st[i].length, now, best);
        total += n;
        if (n < RULE_STATEMENTS_MAX)
            break;
        off += st[n - 1].offset + st[n - 1].length;
    }
    best = rule_of_prepares(b, who, sql, total, now, best);
    return rule_of_inner(b, who, sql, total, now, best, 1);
}
