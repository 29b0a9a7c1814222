/* The budget tables of the ledger: budgets, teams, grants of extra budget
 * and role memberships. pgtallyctl changes them; a running pgtally loads
 * them whole, and loads them again when the settings version (bumped by a
 * trigger on every change) moves. Also the spend of a budget, for display. */
#ifndef PGTALLY_BUDGET_STORE_H
#define PGTALLY_BUDGET_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/db.h"
#include "pgtally/escrow.h"
#include "pgtally/ledger.h"
#include "pgtally/period.h"
#include "pgtally/rules.h"

/* Whose statements a budget covers. */
#define PGT_BUDGET_SUBJECT_MAP(X)                                                                  \
    X(USER, "user")               /* one PostgreSQL user */                                        \
    X(ROLE, "role")               /* the members of a PostgreSQL role */                           \
    X(TEAM, "team")               /* the members of a pgtally team */                              \
    X(APPLICATION, "application") /* one application_name */                                       \
    X(DATABASE, "database")       /* one database */                                               \
    X(DEFAULT, "default")         /* each user without a user budget of the same period */

typedef enum {
#define X(name, str) PGT_BUDGET_SUBJECT_##name,
    PGT_BUDGET_SUBJECT_MAP(X)
#undef X
} pgt_budget_subject_t;

/* What happens at 100% of a budget. */
#define PGT_BUDGET_ACTION_MAP(X)                                                                   \
    X(BLOCK, "block") /* new statements are refused */                                             \
    X(WARN, "warn")   /* statements run, with a warning */

typedef enum {
#define X(name, str) PGT_BUDGET_ACTION_##name,
    PGT_BUDGET_ACTION_MAP(X)
#undef X
} pgt_budget_action_t;

const char *pgt_budget_subject_name(pgt_budget_subject_t s);
int pgt_budget_subject_parse(const char *name, pgt_budget_subject_t *out)
    __attribute__((warn_unused_result));
const char *pgt_budget_action_name(pgt_budget_action_t a);
int pgt_budget_action_parse(const char *name, pgt_budget_action_t *out)
    __attribute__((warn_unused_result));

#define PGT_BUDGET_WARN_MAX 8      /* warn thresholds of one budget */
#define PGT_BUDGET_SUBJECT_MAX 256 /* bytes of a subject or team name */
#define PGT_BUDGET_DEFAULT_WARN 80 /* percent, when none is given */
#define PGT_BUDGET_NOT_FOUND 1     /* return value: no such budget, team or member */
#define PGT_BUDGET_NO_TABLES 1     /* return value: the SQLite ledger predates budgets */
#define PGT_BUDGET_NO_LIMIT (-1)   /* limit_micro of a budget without a money limit */

/* One budget. */
typedef struct pgt_budget {
    int64_t id;                         /* row id; 0 for one not stored yet */
    pgt_budget_subject_t subject_type;  /* whose statements */
    char *subject;                      /* the user, role, ...; "" for default (owned) */
    pgt_period_t period;                /* day, week or month */
    int64_t limit_micro;                /* limit, micro-units of the currency; PGT_BUDGET_NO_LIMIT:
                                           none (a budget of --max-rows alone) */
    int warn_pcts[PGT_BUDGET_WARN_MAX]; /* warn thresholds in percent, ascending */
    int nwarn;                          /* thresholds in warn_pcts */
    pgt_budget_action_t action;         /* at 100%: block or warn */
    int64_t per_query_micro;            /* cap of one statement; -1: none */
    int64_t max_rows; /* largest estimated rows of any plan node of one statement; -1 (0): none */
} pgt_budget_t;

/* Adds pct to b's warn thresholds, keeping them ascending and without
 * repeats. Returns 0, or -1 when pct is not from 1 to 100 or b has
 * PGT_BUDGET_WARN_MAX thresholds already. */
int pgt_budget_warn_add(pgt_budget_t *b, int pct) __attribute__((warn_unused_result));

/* Whether b has a money limit (a budget of --max-rows alone has none: it
 * never blocks nor warns for spend). */
bool pgt_budget_has_limit(const pgt_budget_t *b);

/* A pgtally team: a named group of users. */
typedef struct pgt_budget_team {
    int64_t id;      /* row id */
    char *name;      /* team name (owned) */
    char **members;  /* user names, sorted (owned) */
    size_t nmembers; /* entries in members */
} pgt_budget_team_t;

/* Extra budget granted to a user. */
typedef struct pgt_budget_grant {
    int64_t id;           /* row id */
    char *user;           /* who (owned) */
    int64_t amount_micro; /* how much */
    int64_t granted_us;   /* when, unix microseconds */
    int64_t until_us;     /* valid until then; -1: to the end of the period holding granted_us */
} pgt_budget_grant_t;

/* One membership of a PostgreSQL role, as pgtally last read it. */
typedef struct pgt_budget_role_member {
    char *role;           /* the role (owned) */
    char *user;           /* a member (owned) */
    int64_t refreshed_us; /* when it was read, unix microseconds */
} pgt_budget_role_member_t;

/* Everything budgets need, as of one settings version. */
typedef struct pgt_budget_config {
    int64_t settings_version;               /* settings_version when loaded */
    pgt_budget_t *budgets;                  /* by id */
    size_t nbudgets;                        /* entries in budgets */
    pgt_budget_team_t *teams;               /* by name */
    size_t nteams;                          /* entries in teams */
    pgt_budget_grant_t *grants;             /* grants that may be active now, by id */
    size_t ngrants;                         /* entries in grants */
    pgt_budget_role_member_t *role_members; /* by role, then user */
    size_t nrole_members;                   /* entries in role_members */
    pgt_rule_set_t rules;                   /* rules by statement shape (pgtallyctl rule) */
    pgt_approval_set_t approvals;           /* approvals in force (pgtallyctl ticket approve) */
} pgt_budget_config_t;

/* Opens the ledger at w for the budget tables (see pgt_ledger_db_open).
 * writable: read-write, creating and migrating the SQLite file or the
 * PostgreSQL schema. Otherwise read-only. Returns 0 with the connection in
 * *db (close it with pgt_budget_store_close); PGT_BUDGET_NO_TABLES
 * (read-only, on an SQLite ledger of a release without budgets: there are
 * none; a PostgreSQL ledger always has the tables); or -1 with the cause in
 * err. */
int pgt_budget_store_open(const pgt_ledger_where_t *w, bool writable, pgt_db_t **db, char *err,
                          size_t errlen) __attribute__((warn_unused_result));

/* Closes a connection of pgt_budget_store_open. NULL is allowed. */
void pgt_budget_store_close(pgt_db_t *db);

/* Loads budgets, teams, grants that may be active at pgt_clock_us(), role
 * memberships and rules (indexed), in one read transaction. Returns 0 with a new config in *out
 * (free it with pgt_budget_config_free), or -1 with the cause in err. */
int pgt_budget_config_load(pgt_db_t *db, pgt_budget_config_t **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Frees a config. NULL is allowed. */
void pgt_budget_config_free(pgt_budget_config_t *cfg);

/* Returns the settings version (cheap: one row), or -1 on an error. */
int64_t pgt_budget_settings_version(pgt_db_t *db);

/* Returns the sum of user's grants that are active at now_us for a budget of
 * period p whose current period is [period_start_us, period_end_us): a grant
 * without an end counts in the period that holds its granted_us, one with an
 * end while now_us < until_us. Grants raise the limit of the user's user
 * budgets and of the default budget as it applies to that user. */
int64_t pgt_budget_grant_total(const pgt_budget_config_t *cfg, const char *user, pgt_period_t p,
                               int64_t period_start_us, int64_t period_end_us, int64_t now_us);

/* Returns the team called name in cfg, or NULL. */
const pgt_budget_team_t *pgt_budget_team_find(const pgt_budget_config_t *cfg, const char *name);

/* ---- Changes (pgtallyctl). Each is one transaction. ---- */

/* Stores b (its id is ignored): a new budget, or new settings for the one
 * with the same subject and period. Returns 0 with the id in *id and
 * whether it was new in *created, or -1 with the cause in err. */
int pgt_budget_set(pgt_db_t *db, const pgt_budget_t *b, int64_t *id, bool *created, char *err,
                   size_t errlen) __attribute__((warn_unused_result));

/* Deletes budget id, copying it first to *removed when removed is not NULL
 * (free its subject). Returns 0, PGT_BUDGET_NOT_FOUND, or -1 with the cause
 * in err. */
int pgt_budget_rm(pgt_db_t *db, int64_t id, pgt_budget_t *removed, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Grants user amount_micro more at granted_us, valid until until_us (-1: to
 * the end of the current period of each budget). Returns 0 with the grant's
 * id in *id, or -1 with the cause in err. */
int pgt_budget_grant_add(pgt_db_t *db, const char *user, int64_t amount_micro, int64_t granted_us,
                         int64_t until_us, int64_t *id, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Adds users to team, creating the team when missing. Sets *created when
 * the team is new and *added to how many users were not members yet.
 * Returns 0, or -1 with the cause in err. */
int pgt_budget_team_add(pgt_db_t *db, const char *team, const char *const *users, size_t n,
                        bool *created, size_t *added, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Removes users from team, or the whole team when n is 0. Returns 0,
 * PGT_BUDGET_NOT_FOUND when the team, or one of the users in it, does not
 * exist (then nothing changes, and err names it), or -1 with the cause in
 * err. */
int pgt_budget_team_rm(pgt_db_t *db, const char *team, const char *const *users, size_t n,
                       char *err, size_t errlen) __attribute__((warn_unused_result));

/* ---- Spend, for display (pgtallyctl budget list, usage). ---- */

/* Called once per line of a budget's spend: user is the user a default
 * budget applies to (NULL for other subjects). Return 0 to go on. */
typedef int (*pgt_budget_spend_cb)(const char *user, int64_t spent_micro, void *arg);

/* Sums the spend of b's subject over every instance on the local days d
 * with pgt_local_day(from_us) <= d < pgt_local_day(to_us) (from_us and
 * to_us are period bounds, at local midnight): one line, or for a default
 * budget one line per user without a user budget of b's period who spent
 * anything (most first, ties by name). Returns 0, the callback's non-zero
 * value, or -1 with the cause in err (a callback should not return -1:
 * err would then hold the connection's last error). */
int pgt_budget_spend(pgt_db_t *db, const pgt_budget_t *b, int64_t from_us, int64_t to_us,
                     pgt_budget_spend_cb cb, void *arg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
