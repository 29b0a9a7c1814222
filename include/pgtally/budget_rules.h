/* The budget rules as pure functions: which budgets apply to whom, and what
 * a statement gets (allow, warn, refuse, cancel) from the budgets that apply,
 * their spend, grants and the time, which the caller passes in. No clock, no
 * globals, no allocation, no logging: the loop's bookkeeping (budget.c)
 * builds the input and records what the verdict says fired. */
#ifndef PGTALLY_BUDGET_RULES_H
#define PGTALLY_BUDGET_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/budget_store.h"

/* Who sends a statement: what budgets match on. */
typedef struct pgt_who {
    const char *user;        /* PostgreSQL user */
    const char *database;    /* database */
    const char *application; /* application_name, or "" */
} pgt_who_t;

/* What a verdict does to a statement. */
#define PGT_VERDICT_ACTION_MAP(X)                                                                  \
    X(ALLOW, "allow")   /* it runs; a notice may go with it */                                     \
    X(WARN, "warn")     /* it runs, with a warning: a threshold was crossed */                     \
    X(REFUSE, "refuse") /* it does not run: 53400 (budget spent) or 54000 (per-query cap) */       \
    X(CANCEL, "cancel") /* the running statement is cancelled: 57014 */

typedef enum {
#define X(name, str) PGT_VERDICT_##name,
    PGT_VERDICT_ACTION_MAP(X)
#undef X
} pgt_verdict_action_t;

/* Returns the action's name ("refuse"), or "unknown" for a value out of
 * range. */
const char *pgt_budget_rules_action_name(pgt_verdict_action_t a);

/* Parses an action's name; returns 0 and sets *out, or -1 when unknown. */
int pgt_budget_rules_action_parse(const char *name, pgt_verdict_action_t *out)
    __attribute__((warn_unused_result));

/* What pgtally tells the client about one statement. Strings are empty
 * when there is nothing to say. */
typedef struct pgt_verdict {
    pgt_verdict_action_t action; /* what happens to the statement */
    int64_t budget_id;           /* the budget that refuses or cancels it, or 0 */
    int64_t rule_id;             /* the rule by shape that refuses it, or 0 */
    char sqlstate[6];            /* 53400 (budget spent), 54000 (per-query cap), 57014 (cancel) */
    char message[256];           /* the ErrorResponse's message */
    char detail[384];            /* its DETAIL */
    char hint[256];              /* its HINT */
    char ticket[PGT_TICKET_LEN]; /* the request's ticket (docs/escrow.md), or "" */
    char warning[384];           /* a WARNING to send before the statement's results */
    char notice[384];            /* a NOTICE to send before the statement's results */
} pgt_verdict_t;

/* The settings the rules read besides the budgets. All borrowed. */
typedef struct pgt_budget_policy {
    const pgt_budget_config_t *cfg; /* budgets, teams, grants, role members */
    const char *const *exempt;      /* [budget] exempt_users */
    size_t nexempt;                 /* entries in exempt */
    const char *currency;           /* for amounts in messages ("USD") */
    const char *contact;            /* [budget] contact, or "" / NULL */
    int64_t notice_above;           /* [budget] notice_above; 0: no estimate notice */
    bool unknown_refuse;            /* [budget] unknown_estimate = refuse: a statement with no
                                       estimate is refused (54000) by a per-query cap */
} pgt_budget_policy_t;

/* One budget that applies, with what the loop knows of it. Spend and
 * warnings are tagged with the period they belong to: one of an earlier
 * period counts as nothing. */
typedef struct pgt_budget_case {
    const pgt_budget_t *budget; /* the budget (borrowed from the policy's cfg) */
    int64_t spent_micro;        /* spent by its subject in the period below */
    int64_t spent_start_us;     /* start of the period spent_micro belongs to */
    int64_t running_micro;      /* cost so far of its subject's statements in flight */
    int warned_pct;             /* highest threshold already warned, 0: none */
    int64_t warned_start_us;    /* start of the period warned_pct belongs to */
} pgt_budget_case_t;

/* A statement about to run. */
typedef struct pgt_budget_stmt {
    const pgt_who_t *who;   /* who sends it */
    int64_t est_micro;      /* its estimate, -1: unknown */
    int64_t est_low_micro;  /* the estimate's interval [low, high]: shown in the NOTICE */
    int64_t est_high_micro; /* when high > low */
    bool never_refuse;      /* transaction control or a setting (COMMIT, SET...) */
    bool failed_block;      /* sent in a failed transaction block (the server refuses it) */
    int64_t now_us;         /* the time, unix microseconds */
} pgt_budget_stmt_t;

/* What the rules found for one case. */
typedef struct pgt_budget_outcome {
    int64_t period_start_us; /* the budget's current period [start, end) at now */
    int64_t period_end_us;   /* when it resets */
    int64_t spent_micro;     /* spend counted: 0 when the case's is of another period */
    int64_t limit_micro;     /* limit plus the grants active now */
    int pct;                 /* spent as a percent of the limit */
    int warn_pct;            /* the threshold that warns now (100 included), 0: none */
    char warning[384];       /* its warning text, when warn_pct > 0 */
} pgt_budget_outcome_t;

/* Whether user is in the policy's exempt_users: never refused nor
 * cancelled (warnings and notices are still given). */
bool pgt_budget_rules_exempt(const pgt_budget_policy_t *pol, const char *user);

/* Whether budget bg of cfg applies to who: a user budget to that user, a
 * role budget to the role's members, a team budget to the team's, an
 * application or database budget to its statements, the default budget to
 * each user without a user budget of the same period. */
bool pgt_budget_rules_applies(const pgt_budget_config_t *cfg, const pgt_budget_t *bg,
                              const pgt_who_t *who);

/* Whether bg's row limit (--max-rows) applies to who: bg has one, and it
 * applies as pgt_budget_rules_applies says, except that the default
 * budget's row limit gives way only to a user budget of who that has a
 * row limit of its own (of any period: a row limit is per statement),
 * and its money limit only to a user budget of the same period that has
 * a money limit. */
bool pgt_budget_rules_applies_rows(const pgt_budget_config_t *cfg, const pgt_budget_t *bg,
                                   const pgt_who_t *who);

/* The smallest row limit (--max-rows) of the budgets of pol->cfg whose
 * row limit applies to who, with that budget's id in *budget_id (the
 * first by id on a tie); -1 with *budget_id 0 when none does, when there
 * is no config, or when who's user is exempt. No allocation. */
int64_t pgt_budget_rules_max_rows(const pgt_budget_policy_t *pol, const pgt_who_t *who,
                                  int64_t *budget_id);

/* A budget without a money limit (pgt_budget_has_limit) is at 0% in what
 * follows: it never refuses, cancels nor warns for spend, and is never the
 * notice's budget; its per-query cap still refuses and cancels. */

/* Judges statement st against cases[0..n), the budgets that apply to
 * st->who in config order. Fills outcomes[0..n) (caller's storage) and *out:
 * REFUSE when the first budget, in order, whose block limit is reached
 * (53400) or whose per-query cap is below a known estimate (54000) refuses
 * it, or, with pol->unknown_refuse, whose per-query cap meets an unknown
 * estimate (54000), unless st may not be refused or the user is exempt;
 * else WARN when a
 * budget crossed a threshold above the one warned already in its period
 * (the highest crossed warns, and out->warning is the last such budget's);
 * else ALLOW. The notice (estimate at or above notice_above) names the
 * budget with the highest percent. Returns out->action. */
pgt_verdict_action_t pgt_budget_rules_check(const pgt_budget_policy_t *pol,
                                            const pgt_budget_stmt_t *st,
                                            const pgt_budget_case_t *cases, size_t n,
                                            pgt_budget_outcome_t *outcomes, pgt_verdict_t *out);

/* Judges a statement of who that has cost running_micro so far, at now_us,
 * against cases[0..n) (their running_micro counts every statement in flight
 * of the subject, this one included). Returns CANCEL (57014, with *out
 * saying why) for the first budget in order whose spend plus running costs
 * passes its block limit, or whose per-query cap running_micro passes;
 * else ALLOW. Exempt users are never cancelled. */
pgt_verdict_action_t pgt_budget_rules_running(const pgt_budget_policy_t *pol, const pgt_who_t *who,
                                              int64_t running_micro, int64_t now_us,
                                              const pgt_budget_case_t *cases, size_t n,
                                              pgt_verdict_t *out);

#endif
