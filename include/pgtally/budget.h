/* Budget enforcement in a running pgtally. The event loop keeps, per user,
 * application and database, what was spent in the current day, week and
 * month; checks each statement against the budgets that apply to who sends
 * it before it runs; and, on a timer, adds the running cost of statements
 * in flight so that one past a limit is cancelled. A thread keeps the
 * budgets in step with the ledger: it reloads them when pgtallyctl changes
 * them, adds what other pgtally processes sharing the ledger spent, reads
 * role memberships from the server, and records alerts (budget_sync.h).
 * What a statement gets is decided by the rules of budget_rules.h, which
 * also define pgt_who_t and pgt_verdict_t. */
#ifndef PGTALLY_BUDGET_H
#define PGTALLY_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "pgtally/budget_rules.h"
#include "pgtally/config.h"
#include "pgtally/escrow.h"
#include "pgtally/ledger.h"

typedef struct pgt_budgets pgt_budgets_t;

/* Starts enforcement with the [budget] settings of cfg over the ledger at
 * where (its strings are copied); instance tells this process's ledger
 * rows from those of other processes sharing the ledger. Returns NULL with
 * the cause in err. */
pgt_budgets_t *pgt_budgets_new(uv_loop_t *loop, const pgt_config_t *cfg,
                               const pgt_ledger_where_t *where, int64_t instance, char *err,
                               size_t errlen);

/* Takes new settings (SIGHUP): prices, contact, notice_above, exemptions. */
void pgt_budgets_configure(pgt_budgets_t *b, const pgt_config_t *cfg);

/* Whether any budget exists and who is not exempt: when false, statements
 * of who need no check at all. */
bool pgt_budgets_apply(const pgt_budgets_t *b, const pgt_who_t *who);

/* Whether a statement estimated at est_micro gets the estimate NOTICE
 * ([budget] notice_above), budgets or not. */
bool pgt_budgets_notice_due(const pgt_budgets_t *b, int64_t est_micro);

/* Before a statement of who estimated at est[0] (-1: unknown), with the
 * interval [est[1], est[2]] it holds 8 times in 10 (shown when est[2] >
 * est[1]) runs. never_refuse: transaction control and settings (COMMIT,
 * ROLLBACK, SET, SHOW...), which are never refused so nobody is stuck in a
 * transaction. */
void pgt_budgets_check(pgt_budgets_t *b, const pgt_who_t *who, const int64_t est[3],
                       bool never_refuse, pgt_verdict_t *out);

/* The runaway-join guard's limit for a statement of who: the smallest
 * --max-rows (largest estimated rows of any plan node) of the budgets that
 * apply to who (pgt_budget_rules_max_rows), with that budget's id in
 * *budget_id; -1 (and 0) when none, before budgets are loaded, or when
 * who is exempt. Cheap enough for every statement: no allocation, no
 * ledger access, one pass over the budgets in force. */
int64_t pgt_budgets_max_rows(const pgt_budgets_t *b, const pgt_who_t *who, int64_t *budget_id);

/* Whether any rule by statement shape is in force (pgtallyctl rule). */
bool pgt_budgets_have_rules(const pgt_budgets_t *b);

/* Whether approvals of tickets are in force (docs/escrow.md). */
bool pgt_budgets_have_approvals(const pgt_budgets_t *b);

/* The approval in force for who's statement of shape fingerprint with
 * constants hash constants (pgtallyctl ticket approve), or NULL. */
const pgt_approval_t *pgt_budgets_approval(const pgt_budgets_t *b, const pgt_who_t *who,
                                           uint64_t fingerprint, uint64_t constants);

/* The rule that applies to a statement of who (see pgt_rule_match): of
 * shape fp when fp is not 0 (the estimator's fingerprint, so the loop
 * parses nothing again); else of the strictest of the statements of
 * sql[0..len) (NUL-terminated), which are fingerprinted here. NULL when
 * none, or without rules. The rule is borrowed until the budgets take a
 * new config. */
const pgt_rule_t *pgt_budgets_rule(pgt_budgets_t *b, const pgt_who_t *who, uint64_t fp,
                                   const char *sql, size_t len);

/* A statement of who finished and cost cost_micro. */
void pgt_budgets_spent(pgt_budgets_t *b, const pgt_who_t *who, int64_t cost_micro);

/* The running cost of statements in flight, on each check: first every
 * running statement is added with pgt_budgets_running_add, then each is
 * judged with pgt_budgets_running_check (true: cancel it, out says why). */
void pgt_budgets_running_begin(pgt_budgets_t *b);
void pgt_budgets_running_add(pgt_budgets_t *b, const pgt_who_t *who, int64_t running_micro);
bool pgt_budgets_running_check(pgt_budgets_t *b, const pgt_who_t *who, int64_t running_micro,
                               pgt_verdict_t *out);

/* What a statement costs that kept the upstream busy for seconds and sent
 * bytes to the client. */
int64_t pgt_budgets_cost(const pgt_budgets_t *b, double seconds, int64_t bytes);

/* The cost so far of a statement running for seconds: its compute only
 * (the per-statement price counts when it finishes). */
int64_t pgt_budgets_running_cost(const pgt_budgets_t *b, double seconds);

/* A budget in force and what its subject has spent in its current period
 * (finished statements). */
typedef struct pgt_budget_spend {
    int64_t budget_id;                 /* the budget */
    pgt_budget_subject_t subject_type; /* whose statements */
    char subject[64];                  /* the user, role, ... ("" for default), cut */
    pgt_period_t period;               /* day, week or month */
    int64_t limit_micro;               /* its limit; PGT_BUDGET_NO_LIMIT: none */
    int64_t spent_micro; /* spent so far; of a default budget, the most any one user spent */
} pgt_budget_spend_t;

/* The budgets in force with their spend, at most max of them into out.
 * Returns how many were written. */
size_t pgt_budgets_spend(pgt_budgets_t *b, pgt_budget_spend_t *out, size_t max);

/* Milliseconds between running checks ([budget] check_interval). */
int pgt_budgets_interval_ms(const pgt_budgets_t *b);

/* Closes the loop handle; call it before the loop ends. */
void pgt_budgets_stop(pgt_budgets_t *b);

/* After the loop has ended: stops the thread (its last alerts are
 * written) and frees everything. */
void pgt_budgets_free(pgt_budgets_t *b);

#endif
