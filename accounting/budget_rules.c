/* The budget rules: which budgets apply to whom, and the verdict on a
 * statement from the budgets that apply, their spend and grants and the time
 * the caller passes in, with the texts the client sees. Pure: see
 * include/pgtally/budget_rules.h and docs/budgets.md. */
#include "pgtally/budget_rules.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "pgtally/text.h"
#include "pgtally/money.h"
#include "pgtally/names.h"
#include "pgtally/period.h"

PGT_NAMES_DEFINE(PGT_VERDICT_ACTION_MAP, pgt_verdict_action_t, pgt_budget_rules_action_name,
                 pgt_budget_rules_action_parse)

/* The texts of one budget in messages. */
typedef struct texts {
    char name[320];    /* "user alice/day", "default (user alice)/day" */
    char spent[32];    /* spend, "1.20 USD" */
    char limit[32];    /* limit with grants */
    char est[32];      /* the estimate (0 when unknown) */
    char standing[96]; /* "spent 1.20 USD of 10.00 USD", "spent 1.20 USD (no money limit)" */
    char reset[48];    /* when the period ends, "2026-11-28 00:00 CET" */
} texts_t;

/* snprintf for messages, which may be cut at the buffer's end. */
#define say pgt_say

static void money(const pgt_budget_policy_t *pol, int64_t micro, char *buf, size_t len)
{
    pgt_money_format_short(micro, pol->currency, buf, len);
}

/* An end of an estimate's range: two significant digits, no currency
 * ("0.2", "0.0012", "35"). */
static void range_end(int64_t micro, char *buf, size_t len)
{
    double v = (double)micro / 1e6;
    if (v >= 10)
        snprintf(buf, len, "%.0f", v);
    else if (v >= 1e-4)
        snprintf(buf, len, "%.2g", v);
    else {
        snprintf(buf, len, "%.6f", v);
        for (size_t n = strlen(buf); n > 1 && buf[n - 1] == '0' && buf[n - 2] != '.'; n--)
            buf[n - 1] = '\0';
    }
}

/* ---- which budgets apply -------------------------------------------------- */

bool pgt_budget_rules_exempt(const pgt_budget_policy_t *pol, const char *user)
{
    for (size_t i = 0; i < pol->nexempt; i++)
        if (strcmp(pol->exempt[i], user) == 0)
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

/* Whether user has a user budget that takes the place of the default
 * budget's money limit (one of period p with a money limit) or, rows,
 * of its row limit (one of any period with --max-rows). */
static bool has_user_budget(const pgt_budget_config_t *cfg, const char *user, pgt_period_t p,
                            bool rows)
{
    for (size_t i = 0; i < cfg->nbudgets; i++) {
        const pgt_budget_t *x = &cfg->budgets[i];
        if (x->subject_type != PGT_BUDGET_SUBJECT_USER || strcmp(x->subject, user) != 0)
            continue;
        if (rows ? x->max_rows > 0 : x->period == p && pgt_budget_has_limit(x))
            return true;
    }
    return false;
}

/* pgt_budget_rules_applies, or for rows pgt_budget_rules_applies_rows. */
static bool applies(const pgt_budget_config_t *cfg, const pgt_budget_t *bg, const pgt_who_t *who,
                    bool rows)
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
        return !has_user_budget(cfg, who->user, bg->period, rows);
    }
    return false;
}

bool pgt_budget_rules_applies(const pgt_budget_config_t *cfg, const pgt_budget_t *bg,
                              const pgt_who_t *who)
{
    return applies(cfg, bg, who, false);
}

bool pgt_budget_rules_applies_rows(const pgt_budget_config_t *cfg, const pgt_budget_t *bg,
                                   const pgt_who_t *who)
{
    return bg->max_rows > 0 && applies(cfg, bg, who, true);
}

int64_t pgt_budget_rules_max_rows(const pgt_budget_policy_t *pol, const pgt_who_t *who,
                                  int64_t *budget_id)
{
    int64_t best = -1;
    *budget_id = 0;
    if (!pol->cfg || pgt_budget_rules_exempt(pol, who->user))
        return -1;
    for (size_t i = 0; i < pol->cfg->nbudgets; i++) {
        const pgt_budget_t *bg = &pol->cfg->budgets[i];
        if ((best < 0 || bg->max_rows < best) && pgt_budget_rules_applies_rows(pol->cfg, bg, who)) {
            best = bg->max_rows;
            *budget_id = bg->id;
        }
    }
    return best;
}

/* ---- one budget ----------------------------------------------------------- */

static int percent(int64_t spent, int64_t limit)
{
    if (limit <= 0)
        return spent > 0 ? 100 : 0;
    return (int)((spent * 100) / limit);
}

/* The period, spend, limit (grants raise those of the user's own budgets
 * and of the default budget as it applies to the user) and percent of case
 * c at now. */
static void outcome_of(const pgt_budget_policy_t *pol, const pgt_who_t *who,
                       const pgt_budget_case_t *c, int64_t now, pgt_budget_outcome_t *o)
{
    const pgt_budget_t *bg = c->budget;
    memset(o, 0, sizeof(*o));
    pgt_period_bounds(bg->period, now, &o->period_start_us, &o->period_end_us);
    o->spent_micro = c->spent_start_us == o->period_start_us ? c->spent_micro : 0;
    o->limit_micro = bg->limit_micro;
    if (!pgt_budget_has_limit(bg))
        return; /* no limit: 0%, and grants raise nothing */
    if (bg->subject_type == PGT_BUDGET_SUBJECT_USER ||
        bg->subject_type == PGT_BUDGET_SUBJECT_DEFAULT)
        o->limit_micro += pgt_budget_grant_total(pol->cfg, who->user, bg->period,
                                                 o->period_start_us, o->period_end_us, now);
    o->pct = percent(o->spent_micro, o->limit_micro);
}

/* "user alice/day", "default (user alice)/day", "team growth/month". */
static void budget_name(const pgt_budget_t *bg, const pgt_who_t *who, char *buf, size_t len)
{
    if (bg->subject_type == PGT_BUDGET_SUBJECT_DEFAULT)
        say(buf, len, "default (user %s)/%s", who->user, pgt_period_name(bg->period));
    else
        say(buf, len, "%s %s/%s", pgt_budget_subject_name(bg->subject_type), bg->subject,
            pgt_period_name(bg->period));
}

static void texts_of(const pgt_budget_policy_t *pol, const pgt_who_t *who, const pgt_budget_t *bg,
                     const pgt_budget_outcome_t *o, int64_t est_micro, texts_t *t)
{
    budget_name(bg, who, t->name, sizeof(t->name));
    money(pol, o->spent_micro, t->spent, sizeof(t->spent));
    if (pgt_budget_has_limit(bg))
        money(pol, o->limit_micro, t->limit, sizeof(t->limit));
    else
        say(t->limit, sizeof(t->limit), "no limit");
    money(pol, est_micro > 0 ? est_micro : 0, t->est, sizeof(t->est));
    if (pgt_budget_has_limit(bg))
        say(t->standing, sizeof(t->standing), "spent %s of %s", t->spent, t->limit);
    else
        say(t->standing, sizeof(t->standing), "spent %s (no money limit)", t->spent);
    pgt_local_time_text(o->period_end_us, t->reset, sizeof(t->reset));
}

/* The highest threshold (100% included) that pct reaches above warned, or
 * 0. Thresholds are ascending; a jump over several warns once. */
static int crossed(const pgt_budget_t *bg, int pct, int warned)
{
    int hi = 0;
    for (int w = 0; w <= bg->nwarn; w++) {
        int t = w < bg->nwarn ? bg->warn_pcts[w] : 100;
        if (pct >= t && t > warned && t > hi)
            hi = t;
    }
    return hi;
}

/* ---- the verdict ---------------------------------------------------------- */

/* Makes *out a refusal (or cancel) of sqlstate by bg, with the hint. */
static void refusal(const pgt_budget_policy_t *pol, pgt_verdict_t *out, pgt_verdict_action_t action,
                    const char *sqlstate, const pgt_budget_t *bg)
{
    out->action = action;
    out->budget_id = bg->id;
    memcpy(out->sqlstate, sqlstate, 6);
    if (pol->contact && *pol->contact)
        say(out->hint, sizeof(out->hint),
            "See your spend with: pgtallyctl usage. To raise the budget, ask %s.", pol->contact);
    else
        say(out->hint, sizeof(out->hint),
            "See your spend with: pgtallyctl usage. To raise the budget, ask your pgtally "
            "administrator.");
}

/* Refuses the statement when bg's block limit is reached (53400) or its
 * per-query cap is below the estimate (54000), or, with unknown_estimate =
 * refuse, when bg has a per-query cap and the estimate is unknown (54000):
 * the cap cannot be checked before it runs. */
static void refuse_if(const pgt_budget_policy_t *pol, const pgt_budget_stmt_t *st,
                      const pgt_budget_t *bg, const pgt_budget_outcome_t *o, const texts_t *t,
                      pgt_verdict_t *out)
{
    if (bg->action == PGT_BUDGET_ACTION_BLOCK && pgt_budget_has_limit(bg) &&
        o->spent_micro >= o->limit_micro) {
        refusal(pol, out, PGT_VERDICT_REFUSE, "53400", bg);
        say(out->message, sizeof(out->message), "pgtally: budget %s is spent", t->name);
        say(out->detail, sizeof(out->detail),
            "Spent %s of %s; this statement is estimated at %s. The budget resets at %s.", t->spent,
            t->limit, st->est_micro >= 0 ? t->est : "an unknown cost", t->reset);
        return;
    }
    if (bg->per_query_micro >= 0 && st->est_micro > bg->per_query_micro) {
        char cap[32];
        money(pol, bg->per_query_micro, cap, sizeof(cap));
        refusal(pol, out, PGT_VERDICT_REFUSE, "54000", bg);
        say(out->message, sizeof(out->message),
            "pgtally: statement estimated at %s exceeds the per-query cap of %s of budget %s",
            t->est, cap, t->name);
        say(out->detail, sizeof(out->detail),
            "Budget %s: %s; per-query cap %s. The budget resets at %s.", t->name, t->standing, cap,
            t->reset);
        return;
    }
    if (bg->per_query_micro >= 0 && st->est_micro < 0 && pol->unknown_refuse) {
        char cap[32];
        money(pol, bg->per_query_micro, cap, sizeof(cap));
        refusal(pol, out, PGT_VERDICT_REFUSE, "54000", bg);
        say(out->message, sizeof(out->message),
            "pgtally: the cost of this statement could not be estimated before it ran; budget %s "
            "has a per-query cap of %s (budget.unknown_estimate = refuse)",
            t->name, cap);
        say(out->detail, sizeof(out->detail),
            "Budget %s: %s; per-query cap %s. A statement with no estimate (a new "
            "shape inside a transaction block, or estimate.mode = off) is refused under a cap "
            "while [budget] unknown_estimate = refuse.",
            t->name, t->standing, cap);
    }
}

/* The estimate NOTICE, naming the budget with the highest percent (top, or
 * NULL when none applies). */
static void notice(const pgt_budget_policy_t *pol, const pgt_budget_stmt_t *st,
                   const pgt_budget_t *top, const pgt_budget_outcome_t *o, pgt_verdict_t *out)
{
    char e[112], amount[32];
    money(pol, st->est_micro, amount, sizeof(amount));
    snprintf(e, sizeof(e), "%s", amount);
    if (st->est_high_micro > st->est_low_micro && st->est_low_micro >= 0) {
        /* "0.42 USD (0.2–0.9)": the range in the same currency, two
         * significant digits; it says how far the estimate can be trusted. */
        char lo[32], hi[32];
        range_end(st->est_low_micro, lo, sizeof(lo));
        range_end(st->est_high_micro, hi, sizeof(hi));
        snprintf(e, sizeof(e), "%s (%s–%s)", amount, lo, hi);
    }
    if (!top) {
        say(out->notice, sizeof(out->notice), "pgtally: estimated %s", e);
        return;
    }
    char name[320], a[32], l[32];
    budget_name(top, st->who, name, sizeof(name));
    money(pol, o->spent_micro, a, sizeof(a));
    money(pol, o->limit_micro, l, sizeof(l));
    say(out->notice, sizeof(out->notice), "pgtally: estimated %s; budget %s at %d%% (%s of %s)", e,
        name, o->pct, a, l);
}

pgt_verdict_action_t pgt_budget_rules_check(const pgt_budget_policy_t *pol,
                                            const pgt_budget_stmt_t *st,
                                            const pgt_budget_case_t *cases, size_t n,
                                            pgt_budget_outcome_t *outcomes, pgt_verdict_t *out)
{
    memset(out, 0, sizeof(*out));
    bool may_refuse =
        !st->never_refuse && !st->failed_block && !pgt_budget_rules_exempt(pol, st->who->user);
    size_t top = n;
    int top_pct = -1;
    bool warns = false;
    for (size_t i = 0; i < n; i++) {
        const pgt_budget_case_t *c = &cases[i];
        pgt_budget_outcome_t *o = &outcomes[i];
        outcome_of(pol, st->who, c, st->now_us, o);
        if (pgt_budget_has_limit(c->budget) && o->pct > top_pct) {
            top = i;
            top_pct = o->pct;
        }
        texts_t t;
        texts_of(pol, st->who, c->budget, o, st->est_micro, &t);
        if (may_refuse && out->action != PGT_VERDICT_REFUSE)
            refuse_if(pol, st, c->budget, o, &t, out);
        int warned = c->warned_start_us == o->period_start_us ? c->warned_pct : 0;
        o->warn_pct = pgt_budget_has_limit(c->budget) ? crossed(c->budget, o->pct, warned) : 0;
        if (o->warn_pct > 0) {
            say(o->warning, sizeof(o->warning),
                "pgtally: budget %s is at %d%% (%s of %s); it resets at %s", t.name, o->pct,
                t.spent, t.limit, t.reset);
            say(out->warning, sizeof(out->warning), "%s", o->warning);
            warns = true;
        }
    }
    if (pol->notice_above > 0 && st->est_micro >= pol->notice_above)
        notice(pol, st, top < n ? cases[top].budget : NULL, top < n ? &outcomes[top] : NULL, out);
    if (out->action != PGT_VERDICT_REFUSE && warns)
        out->action = PGT_VERDICT_WARN;
    return out->action;
}

pgt_verdict_action_t pgt_budget_rules_running(const pgt_budget_policy_t *pol, const pgt_who_t *who,
                                              int64_t running_micro, int64_t now_us,
                                              const pgt_budget_case_t *cases, size_t n,
                                              pgt_verdict_t *out)
{
    memset(out, 0, sizeof(*out));
    if (pgt_budget_rules_exempt(pol, who->user))
        return out->action;
    char name[320], a[32], l[32], r[32], cap[32];
    money(pol, running_micro, r, sizeof(r));
    for (size_t i = 0; i < n; i++) {
        const pgt_budget_t *bg = cases[i].budget;
        pgt_budget_outcome_t o;
        outcome_of(pol, who, &cases[i], now_us, &o);
        int64_t spent = o.spent_micro + cases[i].running_micro;
        budget_name(bg, who, name, sizeof(name));
        money(pol, spent, a, sizeof(a));
        money(pol, o.limit_micro, l, sizeof(l));
        if (bg->action == PGT_BUDGET_ACTION_BLOCK && pgt_budget_has_limit(bg) &&
            spent > o.limit_micro) {
            refusal(pol, out, PGT_VERDICT_CANCEL, "57014", bg);
            say(out->message, sizeof(out->message),
                "pgtally: canceling statement: budget %s is spent", name);
            say(out->detail, sizeof(out->detail),
                "Spent %s of %s, counting %s for this statement so far.", a, l, r);
            return out->action;
        }
        if (bg->per_query_micro >= 0 && running_micro > bg->per_query_micro) {
            money(pol, bg->per_query_micro, cap, sizeof(cap));
            refusal(pol, out, PGT_VERDICT_CANCEL, "57014", bg);
            say(out->message, sizeof(out->message),
                "pgtally: canceling statement: it has cost %s, over the per-query cap of %s of "
                "budget %s",
                r, cap, name);
            if (pgt_budget_has_limit(bg))
                say(out->detail, sizeof(out->detail), "Budget %s: spent %s of %s.", name, a, l);
            else
                say(out->detail, sizeof(out->detail), "Budget %s: spent %s (no money limit).", name,
                    a);
            return out->action;
        }
    }
    return out->action;
}
