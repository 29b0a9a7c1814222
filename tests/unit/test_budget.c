/* Unit tests of the budget rules (budget_rules.c), as tables of cases: who a
 * budget applies to, thresholds and 100%, warn-only budgets, per-query caps,
 * grants and their expiry, exempt users, statements never refused, several
 * budgets at once, the running check, and periods that roll over in a DST
 * zone; with the texts the client sees. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "pgtally/budget_rules.h"
#include "pgtally/period.h"
#include "task.h"
#include "zone.h"

#define US 1000000LL /* one USD, in micro-units */
#define CENT 10000LL
#define HOUR_US (3600 * US)
#define DAY_US (24 * HOUR_US)
#define NCASES(a) (sizeof(a) / sizeof((a)[0]))

/* A Wednesday noon, UTC: the day ends 2024-05-16 00:00, the week (from
 * Monday the 13th) on the 20th, the month on June 1st. */
#define TODAY (1715731200 * US) /* utc(2024, 5, 15, 0, 0, 0) */
#define NOW (TODAY + 12 * HOUR_US)
#define RESET_DAY "2024-05-16 00:00 UTC"

/* A budget with thresholds warn[] (0-terminated). */
static pgt_budget_t mk(int64_t id, pgt_budget_subject_t type, const char *subject, pgt_period_t p,
                       int64_t limit, pgt_budget_action_t action, int64_t cap, const int *warn)
{
    pgt_budget_t b = {.id = id,
                      .subject_type = type,
                      .subject = (char *)subject,
                      .period = p,
                      .limit_micro = limit,
                      .action = action,
                      .per_query_micro = cap};
    for (; warn && *warn && b.nwarn < PGT_BUDGET_WARN_MAX; warn++)
        b.warn_pcts[b.nwarn++] = *warn;
    return b;
}

static const int WARN_50_80[] = {50, 80, 0};

/* The policy of the tests: exempt "etl", currency USD, no contact, no
 * notice unless a test sets one. */
static const char *const exempt_users[] = {"etl"};
static pgt_budget_policy_t policy(const pgt_budget_config_t *cfg)
{
    return (pgt_budget_policy_t){
        .cfg = cfg, .exempt = exempt_users, .nexempt = 1, .currency = "USD", .contact = ""};
}

static void test_action_names(void)
{
    CHECK_STR(pgt_budget_rules_action_name(PGT_VERDICT_ALLOW), "allow");
    CHECK_STR(pgt_budget_rules_action_name(PGT_VERDICT_WARN), "warn");
    CHECK_STR(pgt_budget_rules_action_name(PGT_VERDICT_REFUSE), "refuse");
    CHECK_STR(pgt_budget_rules_action_name(PGT_VERDICT_CANCEL), "cancel");
    CHECK_STR(pgt_budget_rules_action_name((pgt_verdict_action_t)42), "unknown");
    pgt_verdict_action_t a = PGT_VERDICT_ALLOW;
    CHECK_INT(pgt_budget_rules_action_parse("cancel", &a), 0);
    CHECK_INT(a, PGT_VERDICT_CANCEL);
    CHECK_INT(pgt_budget_rules_action_parse("block", &a), -1);
}

/* ---- who a budget applies to ---------------------------------------------- */

static void test_applies(void)
{
    char *growth[] = {"bob", "carol"};
    pgt_budget_team_t teams[] = {{.id = 1, .name = "growth", .members = growth, .nmembers = 2}};
    pgt_budget_role_member_t members[] = {{.role = "analysts", .user = "alice"},
                                          {.role = "analysts", .user = "dave"}};
    pgt_budget_t budgets[] = {
        mk(1, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_DAY, US, 0, -1, NULL),
        mk(2, PGT_BUDGET_SUBJECT_ROLE, "analysts", PGT_PERIOD_DAY, US, 0, -1, NULL),
        mk(3, PGT_BUDGET_SUBJECT_TEAM, "growth", PGT_PERIOD_WEEK, US, 0, -1, NULL),
        mk(4, PGT_BUDGET_SUBJECT_APPLICATION, "etl-job", PGT_PERIOD_DAY, US, 0, -1, NULL),
        mk(5, PGT_BUDGET_SUBJECT_DATABASE, "shop", PGT_PERIOD_MONTH, US, 0, -1, NULL),
        mk(6, PGT_BUDGET_SUBJECT_DEFAULT, "", PGT_PERIOD_DAY, US, 0, -1, NULL),
        mk(7, PGT_BUDGET_SUBJECT_DEFAULT, "", PGT_PERIOD_WEEK, US, 0, -1, NULL),
        mk(8, PGT_BUDGET_SUBJECT_TEAM, "nobody", PGT_PERIOD_DAY, US, 0, -1, NULL),
    };
    pgt_budget_config_t cfg = {.budgets = budgets,
                               .nbudgets = NCASES(budgets),
                               .teams = teams,
                               .nteams = 1,
                               .role_members = members,
                               .nrole_members = 2};
    static const struct {
        size_t budget;               /* index in budgets */
        const char *user, *app, *db; /* who */
        bool want;                   /* applies */
        const char *about;           /* what the case checks */
    } cases[] = {
        {0, "alice", "", "postgres", true, "the user's own budget"},
        {0, "alicia", "", "postgres", false, "another user's"},
        {1, "alice", "", "postgres", true, "a member of the role"},
        {1, "dave", "", "postgres", true, "another member"},
        {1, "bob", "", "postgres", false, "not a member"},
        {2, "carol", "", "postgres", true, "a team member"},
        {2, "alice", "", "postgres", false, "not in the team"},
        {3, "bob", "etl-job", "postgres", true, "the application"},
        {3, "bob", "etl", "postgres", false, "another application"},
        {4, "bob", "", "shop", true, "the database"},
        {4, "bob", "", "shopping", false, "another database"},
        {5, "bob", "", "postgres", true, "default: bob has no user budget"},
        {5, "alice", "", "postgres", false, "default: alice has a day budget of her own"},
        {6, "alice", "", "postgres", true, "default week: alice's own is of another period"},
        {7, "bob", "", "postgres", false, "a team that does not exist"},
    };
    for (size_t i = 0; i < NCASES(cases); i++) {
        pgt_who_t who = {
            .user = cases[i].user, .application = cases[i].app, .database = cases[i].db};
        bool got = pgt_budget_rules_applies(&cfg, &budgets[cases[i].budget], &who);
        if (got != cases[i].want)
            fprintf(stderr, "applies case %zu: %s\n", i, cases[i].about);
        CHECK_INT(got, cases[i].want);
    }
    pgt_budget_policy_t pol = policy(&cfg);
    CHECK(pgt_budget_rules_exempt(&pol, "etl"));
    CHECK(!pgt_budget_rules_exempt(&pol, "etl2"));
    CHECK(!pgt_budget_rules_exempt(&pol, ""));
}

/* ---- one budget ----------------------------------------------------------- */

/* One statement against one user budget of alice/day (limit 10 USD unless
 * said, thresholds 50 and 80) at NOW. */
typedef struct one_case {
    pgt_budget_action_t action; /* the budget's: block or warn */
    int64_t limit;              /* its limit; 0: 10 USD, -1: zero */
    int64_t cap;                /* its per-query cap, -1: none */
    int64_t spent;              /* spent today */
    int64_t spent_start;        /* the period spent belongs to; 0: today */
    int warned;                 /* highest threshold warned */
    int64_t warned_start;       /* its period; 0: today */
    int64_t est;                /* the statement's estimate, -1: unknown */
    const char *user;           /* "alice", or "etl" (exempt) */
    bool never_refuse;          /* transaction control or a setting */
    bool failed_block;          /* in a failed transaction block */
    pgt_verdict_action_t want;  /* the verdict */
    const char *sqlstate;       /* its SQLSTATE, "" for none */
    int warn_pct;               /* the threshold that warns now */
    int pct;                    /* the budget's percent */
    const char *about;          /* what the case checks */
} one_case_t;

#define BLOCK PGT_BUDGET_ACTION_BLOCK
#define WARNS PGT_BUDGET_ACTION_WARN
#define ALLOW PGT_VERDICT_ALLOW
#define WARN PGT_VERDICT_WARN
#define REFUSE PGT_VERDICT_REFUSE
#define CANCEL PGT_VERDICT_CANCEL
#define YESTERDAY (TODAY - DAY_US)

static const one_case_t one_cases[] = {
    /* Thresholds and 100%. */
    {BLOCK, 0, -1, 0, 0, 0, 0, CENT, "alice", 0, 0, ALLOW, "", 0, 0, "nothing spent"},
    {BLOCK, 0, -1, 4 * US, 0, 0, 0, CENT, "alice", 0, 0, ALLOW, "", 0, 40, "below 50%"},
    {BLOCK, 0, -1, 5 * US, 0, 0, 0, CENT, "alice", 0, 0, WARN, "", 50, 50, "50% warns"},
    {BLOCK, 0, -1, 6 * US, 0, 50, 0, CENT, "alice", 0, 0, ALLOW, "", 0, 60, "50% warned already"},
    {BLOCK, 0, -1, 85 * US / 10, 0, 50, 0, CENT, "alice", 0, 0, WARN, "", 80, 85, "then 80%"},
    {BLOCK, 0, -1, 85 * US / 10, 0, 80, 0, CENT, "alice", 0, 0, ALLOW, "", 0, 85, "80% once"},
    {BLOCK, 0, -1, 99 * US / 10, 0, 0, 0, CENT, "alice", 0, 0, WARN, "", 80, 99,
     "a jump over 50 and 80 warns once, at 80"},
    {BLOCK, 0, -1, 10 * US, 0, 0, 0, CENT, "alice", 0, 0, REFUSE, "53400", 100, 100,
     "100% of a block budget refuses (and warns at 100)"},
    {BLOCK, 0, -1, 10 * US, 0, 80, 0, -1, "alice", 0, 0, REFUSE, "53400", 100, 100,
     "an unknown estimate is refused at 100% too"},
    {BLOCK, 0, -1, 12 * US, 0, 100, 0, CENT, "alice", 0, 0, REFUSE, "53400", 0, 120,
     "past 100%, warned: refused without a new warning"},
    {BLOCK, 0, -1, 999 * US / 100, 0, 80, 0, 5 * US, "alice", 0, 0, ALLOW, "", 0, 99,
     "below the limit, any estimate runs (no cap)"},
    {BLOCK, 1, -1, 0, 0, 0, 0, CENT, "alice", 0, 0, ALLOW, "", 0, 0,
     "a limit of 1 micro-unit, nothing spent"},
    {BLOCK, -1, -1, 0, 0, 0, 0, CENT, "alice", 0, 0, REFUSE, "53400", 0, 0,
     "a zero limit refuses even with nothing spent (pct 0)"},
    {BLOCK, -1, -1, 1, 0, 0, 0, CENT, "alice", 0, 0, REFUSE, "53400", 100, 100,
     "a zero limit with spend is 100%"},
    /* Warn-only budgets: never refused for their limit, warn at 100%. */
    {WARNS, 0, -1, 10 * US, 0, 80, 0, CENT, "alice", 0, 0, WARN, "", 100, 100,
     "a warn budget at 100% warns"},
    {WARNS, 0, -1, 30 * US, 0, 100, 0, CENT, "alice", 0, 0, ALLOW, "", 0, 300,
     "a warn budget past 100%, warned"},
    /* Per-query caps. */
    {BLOCK, 0, US, 0, 0, 0, 0, US + 1, "alice", 0, 0, REFUSE, "54000", 0, 0,
     "an estimate over the cap"},
    {BLOCK, 0, US, 0, 0, 0, 0, US, "alice", 0, 0, ALLOW, "", 0, 0, "an estimate equal to the cap"},
    {BLOCK, 0, US, 0, 0, 0, 0, -1, "alice", 0, 0, ALLOW, "", 0, 0, "an unknown estimate"},
    {BLOCK, 0, 0, 0, 0, 0, 0, 1, "alice", 0, 0, REFUSE, "54000", 0, 0, "a cap of zero"},
    {BLOCK, 0, 0, 0, 0, 0, 0, 0, "alice", 0, 0, ALLOW, "", 0, 0, "a free statement, cap zero"},
    {WARNS, 0, US, 0, 0, 0, 0, 2 * US, "alice", 0, 0, REFUSE, "54000", 0, 0,
     "the cap of a warn budget refuses too"},
    {BLOCK, 0, US, 10 * US, 0, 100, 0, 2 * US, "alice", 0, 0, REFUSE, "53400", 0, 100,
     "spent and over the cap: the limit speaks first"},
    /* Exempt users: never refused, still warned. */
    {BLOCK, 0, -1, 10 * US, 0, 0, 0, CENT, "etl", 0, 0, WARN, "", 100, 100,
     "exempt at 100%: a warning, no refusal"},
    {BLOCK, 0, US, 0, 0, 0, 0, 2 * US, "etl", 0, 0, ALLOW, "", 0, 0, "exempt over the cap"},
    /* Statements never refused. */
    {BLOCK, 0, -1, 10 * US, 0, 0, 0, CENT, "alice", 1, 0, WARN, "", 100, 100,
     "COMMIT at 100% runs, and warns"},
    {BLOCK, 0, US, 0, 0, 0, 0, 2 * US, "alice", 1, 0, ALLOW, "", 0, 0, "SET over the cap"},
    {BLOCK, 0, -1, 12 * US, 0, 100, 0, CENT, "alice", 0, 1, ALLOW, "", 0, 120,
     "in a failed block: the server refuses it"},
    {BLOCK, 0, US, 0, 0, 0, 0, 2 * US, "alice", 0, 1, ALLOW, "", 0, 0, "failed block, cap"},
    /* Spend and warnings of an earlier period count as nothing. */
    {BLOCK, 0, -1, 12 * US, YESTERDAY, 100, YESTERDAY, CENT, "alice", 0, 0, ALLOW, "", 0, 0,
     "yesterday's spend is 0 today"},
    {BLOCK, 0, -1, 6 * US, 0, 80, YESTERDAY, CENT, "alice", 0, 0, WARN, "", 50, 60,
     "yesterday's 80% warning: 50% warns again today"},
};

/* The same budget with [budget] unknown_estimate = refuse: an unknown
 * estimate under a per-query cap is refused (54000), except where nothing
 * is refused; known estimates are judged as with run. */
static const one_case_t unknown_cases[] = {
    {BLOCK, 0, US, 0, 0, 0, 0, -1, "alice", 0, 0, REFUSE, "54000", 0, 0,
     "an unknown estimate under a cap"},
    {BLOCK, 0, 0, 0, 0, 0, 0, -1, "alice", 0, 0, REFUSE, "54000", 0, 0,
     "an unknown estimate, cap zero"},
    {WARNS, 0, US, 0, 0, 0, 0, -1, "alice", 0, 0, REFUSE, "54000", 0, 0,
     "an unknown estimate under the cap of a warn budget"},
    {BLOCK, 0, -1, 0, 0, 0, 0, -1, "alice", 0, 0, ALLOW, "", 0, 0,
     "an unknown estimate, no cap: runs"},
    {BLOCK, 0, US, 0, 0, 0, 0, US, "alice", 0, 0, ALLOW, "", 0, 0, "a known estimate at the cap"},
    {BLOCK, 0, US, 0, 0, 0, 0, US + 1, "alice", 0, 0, REFUSE, "54000", 0, 0,
     "a known estimate over the cap"},
    {BLOCK, 0, US, 10 * US, 0, 100, 0, -1, "alice", 0, 0, REFUSE, "53400", 0, 100,
     "spent, unknown estimate, cap: the limit speaks first"},
    {BLOCK, 0, US, 0, 0, 0, 0, -1, "etl", 0, 0, ALLOW, "", 0, 0, "exempt, unknown estimate"},
    {BLOCK, 0, US, 0, 0, 0, 0, -1, "alice", 1, 0, ALLOW, "", 0, 0, "BEGIN, unknown estimate"},
    {BLOCK, 0, US, 0, 0, 0, 0, -1, "alice", 0, 1, ALLOW, "", 0, 0,
     "failed block, unknown estimate"},
    {BLOCK, 0, US, 5 * US, 0, 0, 0, -1, "alice", 1, 0, WARN, "", 50, 50,
     "SET, unknown estimate, at 50%: runs and warns"},
};

static void run_one_cases(const one_case_t *cases, size_t n, bool unknown_refuse, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        const one_case_t *c = &cases[i];
        int64_t limit = c->limit == 0 ? 10 * US : c->limit < 0 ? 0 : c->limit;
        pgt_budget_t bg = mk(7, PGT_BUDGET_SUBJECT_USER, c->user, PGT_PERIOD_DAY, limit, c->action,
                             c->cap, WARN_50_80);
        pgt_budget_config_t cfg = {.budgets = &bg, .nbudgets = 1};
        pgt_budget_policy_t pol = policy(&cfg);
        pol.unknown_refuse = unknown_refuse;
        pgt_budget_case_t bc = {.budget = &bg,
                                .spent_micro = c->spent,
                                .spent_start_us = c->spent_start ? c->spent_start : TODAY,
                                .warned_pct = c->warned,
                                .warned_start_us = c->warned_start ? c->warned_start : TODAY};
        pgt_who_t who = {.user = c->user, .application = "psql", .database = "postgres"};
        pgt_budget_stmt_t st = {.who = &who,
                                .est_micro = c->est,
                                .never_refuse = c->never_refuse,
                                .failed_block = c->failed_block,
                                .now_us = NOW};
        pgt_budget_outcome_t o;
        pgt_verdict_t v;
        pgt_verdict_action_t got = pgt_budget_rules_check(&pol, &st, &bc, 1, &o, &v);
        int fails = task_failures;
        CHECK_STR(pgt_budget_rules_action_name(got), pgt_budget_rules_action_name(c->want));
        CHECK_INT(v.action, got);
        CHECK_STR(v.sqlstate, c->sqlstate);
        CHECK_INT(v.budget_id, c->want == REFUSE ? 7 : 0);
        CHECK_INT(o.warn_pct, c->warn_pct);
        CHECK_INT(o.pct, c->pct);
        CHECK_INT(o.period_start_us, TODAY);
        CHECK_INT(o.period_end_us, TODAY + DAY_US);
        CHECK_INT(!!v.warning[0], c->warn_pct > 0);
        CHECK_INT(!!v.message[0], c->want == REFUSE);
        CHECK_STR(v.notice, ""); /* no notice_above */
        if (task_failures != fails)
            fprintf(stderr, "%s case %zu: %s\n", what, i, c->about);
    }
}

static void test_one_budget(void)
{
    run_one_cases(one_cases, NCASES(one_cases), false, "one-budget");
}

static void test_unknown_refuse(void)
{
    run_one_cases(unknown_cases, NCASES(unknown_cases), true, "unknown_estimate = refuse");
}

/* ---- the texts ------------------------------------------------------------ */

/* Judges a statement of alice estimated at est against one budget bg,
 * spent today, with pol's contact and notice. */
static pgt_verdict_action_t judge_one(const char *contact, int64_t notice_above, pgt_budget_t *bg,
                                      int64_t spent, int64_t est, pgt_verdict_t *v)
{
    pgt_budget_config_t cfg = {.budgets = bg, .nbudgets = 1};
    pgt_budget_policy_t pol = policy(&cfg);
    pol.contact = contact;
    pol.notice_above = notice_above;
    int64_t start, end;
    pgt_period_bounds(bg->period, NOW, &start, &end);
    pgt_budget_case_t bc = {.budget = bg, .spent_micro = spent, .spent_start_us = start};
    pgt_who_t who = {.user = "alice", .application = "psql", .database = "postgres"};
    pgt_budget_stmt_t st = {.who = &who, .est_micro = est, .now_us = NOW};
    pgt_budget_outcome_t o;
    return pgt_budget_rules_check(&pol, &st, &bc, 1, &o, v);
}

/* Refusals: messages, details and hints. */
static void test_texts(void)
{
    pgt_budget_t bg =
        mk(3, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_DAY, 10 * US, BLOCK, -1, WARN_50_80);
    pgt_verdict_t v;
    CHECK_INT(judge_one(NULL, 0, &bg, 10 * US, 42 * CENT, &v), REFUSE);
    CHECK_STR(v.message, "pgtally: budget user alice/day is spent");
    CHECK_STR(v.detail, "Spent 10.00 USD of 10.00 USD; this statement is estimated at 0.42 USD. "
                        "The budget resets at " RESET_DAY ".");
    CHECK_STR(v.hint, "See your spend with: pgtallyctl usage. To raise the budget, ask your "
                      "pgtally administrator.");
    CHECK_STR(v.warning, "pgtally: budget user alice/day is at 100% (10.00 USD of 10.00 USD); it "
                         "resets at " RESET_DAY);
    CHECK_INT(judge_one("finops@example.com", 0, &bg, 11 * US, -1, &v), REFUSE);
    CHECK_STR(v.detail, "Spent 11.00 USD of 10.00 USD; this statement is estimated at an unknown "
                        "cost. The budget resets at " RESET_DAY ".");
    CHECK_STR(v.hint, "See your spend with: pgtallyctl usage. To raise the budget, ask "
                      "finops@example.com.");
    /* The per-query cap. */
    bg.per_query_micro = 25 * CENT;
    CHECK_INT(judge_one("", 0, &bg, 2 * US, 42 * CENT, &v), REFUSE);
    CHECK_STR(v.sqlstate, "54000");
    CHECK_STR(v.message, "pgtally: statement estimated at 0.42 USD exceeds the per-query cap of "
                         "0.25 USD of budget user alice/day");
    CHECK_STR(v.detail, "Budget user alice/day: spent 2.00 USD of 10.00 USD; per-query cap 0.25 "
                        "USD. The budget resets at " RESET_DAY ".");
    CHECK_STR(v.warning, "");
    /* An unknown estimate under the cap runs with unknown_estimate = run. */
    CHECK_INT(judge_one("", 0, &bg, 2 * US, -1, &v), ALLOW);
}

/* The refusal of an unknown estimate (unknown_estimate = refuse). */
static void test_texts_unknown(void)
{
    pgt_budget_t bg =
        mk(3, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_DAY, 10 * US, BLOCK, 25 * CENT, NULL);
    pgt_budget_config_t cfg = {.budgets = &bg, .nbudgets = 1};
    pgt_budget_policy_t pol = policy(&cfg);
    pol.unknown_refuse = true;
    pol.contact = "finops@example.com";
    pgt_budget_case_t bc = {.budget = &bg, .spent_micro = 2 * US, .spent_start_us = TODAY};
    pgt_who_t who = {.user = "alice", .application = "psql", .database = "postgres"};
    pgt_budget_stmt_t st = {.who = &who, .est_micro = -1, .now_us = NOW};
    pgt_budget_outcome_t o;
    pgt_verdict_t v;
    CHECK_INT(pgt_budget_rules_check(&pol, &st, &bc, 1, &o, &v), REFUSE);
    CHECK_STR(v.sqlstate, "54000");
    CHECK_INT(v.budget_id, 3);
    CHECK_STR(v.message, "pgtally: the cost of this statement could not be estimated before it "
                         "ran; budget user alice/day has a per-query cap of 0.25 USD "
                         "(budget.unknown_estimate = refuse)");
    CHECK_STR(v.detail, "Budget user alice/day: spent 2.00 USD of 10.00 USD; per-query cap 0.25 "
                        "USD. A statement with no estimate (a new shape inside a transaction "
                        "block, or estimate.mode = off) is refused under a cap while [budget] "
                        "unknown_estimate = refuse.");
    CHECK_STR(v.hint, "See your spend with: pgtallyctl usage. To raise the budget, ask "
                      "finops@example.com.");
}

/* Warnings and the estimate notice. */
static void test_texts_notice(void)
{
    pgt_budget_t bg =
        mk(3, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_DAY, 10 * US, BLOCK, -1, WARN_50_80);
    pgt_verdict_t v;
    /* A warning and the notice, which names the budget. */
    CHECK_INT(judge_one("", 10 * CENT, &bg, 85 * US / 10, 42 * CENT, &v), WARN);
    CHECK_STR(v.message, "");
    CHECK_STR(v.warning, "pgtally: budget user alice/day is at 85% (8.50 USD of 10.00 USD); it "
                         "resets at " RESET_DAY);
    CHECK_STR(v.notice, "pgtally: estimated 0.42 USD; budget user alice/day at 85% (8.50 USD of "
                        "10.00 USD)");
    CHECK_INT(judge_one("", 42 * CENT, &bg, 1 * US, 42 * CENT, &v), ALLOW);
    CHECK_STR(v.notice, "pgtally: estimated 0.42 USD; budget user alice/day at 10% (1.00 USD of "
                        "10.00 USD)");
    CHECK_INT(judge_one("", 43 * CENT, &bg, 1 * US, 42 * CENT, &v), ALLOW);
    CHECK_STR(v.notice, ""); /* below notice_above */
    CHECK_INT(judge_one("", 0, &bg, 1 * US, 42 * CENT, &v), ALLOW);
    CHECK_STR(v.notice, ""); /* notice_above 0: no notices */
    CHECK_STR(v.warning, "");
    CHECK_STR(v.message, "");
    CHECK_STR(v.hint, "");
    /* A notice without a budget that applies. */
    pgt_budget_config_t none = {0};
    pgt_budget_policy_t pol = policy(&none);
    pol.notice_above = 1;
    pgt_who_t who = {.user = "alice", .application = "", .database = "postgres"};
    pgt_budget_stmt_t st = {.who = &who, .est_micro = 1234, .now_us = NOW};
    CHECK_INT(pgt_budget_rules_check(&pol, &st, NULL, 0, NULL, &v), ALLOW);
    CHECK_STR(v.notice, "pgtally: estimated 0.0012 USD");
    /* The default budget is named after the user it applies to. */
    pgt_budget_t def =
        mk(9, PGT_BUDGET_SUBJECT_DEFAULT, "", PGT_PERIOD_WEEK, 5 * US, BLOCK, -1, WARN_50_80);
    CHECK_INT(judge_one("", 0, &def, 5 * US, 0, &v), REFUSE);
    CHECK_STR(v.message, "pgtally: budget default (user alice)/week is spent");
    CHECK_STR(v.detail, "Spent 5.00 USD of 5.00 USD; this statement is estimated at 0.00 USD. The "
                        "budget resets at 2024-05-20 00:00 UTC.");
    pgt_budget_t team =
        mk(4, PGT_BUDGET_SUBJECT_TEAM, "growth", PGT_PERIOD_MONTH, 5 * US, WARNS, -1, WARN_50_80);
    CHECK_INT(judge_one("", 0, &team, 4 * US, 0, &v), WARN);
    CHECK_STR(v.warning, "pgtally: budget team growth/month is at 80% (4.00 USD of 5.00 USD); it "
                         "resets at 2024-06-01 00:00 UTC");
}

/* ---- several budgets ------------------------------------------------------ */

/* One statement of alice against three budgets: application psql/day
 * (warn-only, 10 USD), database postgres/week (block, 100 USD, capped at
 * 1 USD) and user alice/month (block, 20 USD), in this order. */
typedef struct several_case {
    int64_t app, db, user;     /* spent in each */
    int64_t est;               /* the estimate */
    pgt_verdict_action_t want; /* the verdict */
    int64_t budget_id;         /* the budget refusing, 0: none */
    const char *sqlstate;      /* its SQLSTATE */
    int warn_app, warn_db;     /* the threshold each budget warns at */
    int warn_user;             /* (0: none) */
    const char *top;           /* the budget the notice names */
    const char *about;         /* what the case checks */
} several_case_t;

static const several_case_t several_cases[] = {
    {1 * US, 10 * US, 4 * US, CENT, ALLOW, 0, "", 0, 0, 0, "user alice/month at 20%",
     "all low: the notice names the highest percent"},
    {1 * US, 10 * US, 2 * US, CENT, ALLOW, 0, "", 0, 0, 0, "application psql/day at 10%",
     "a tie: the first in order"},
    {12 * US, 10 * US, 20 * US, CENT, REFUSE, 13, "53400", 100, 0, 100,
     "application psql/day at 120%", "the warn budget past 100% does not refuse; the user's does"},
    {12 * US, 10 * US, 20 * US, 2 * US, REFUSE, 12, "54000", 100, 0, 100,
     "application psql/day at 120%", "the first refusing budget wins: the database's cap"},
    {6 * US, 90 * US, 17 * US, CENT, WARN, 0, "", 50, 80, 80, "database postgres/week at 90%",
     "three budgets warn at once"},
};

static void test_several(void)
{
    pgt_budget_t budgets[] = {
        mk(11, PGT_BUDGET_SUBJECT_APPLICATION, "psql", PGT_PERIOD_DAY, 10 * US, WARNS, -1,
           WARN_50_80),
        mk(12, PGT_BUDGET_SUBJECT_DATABASE, "postgres", PGT_PERIOD_WEEK, 100 * US, BLOCK, US,
           WARN_50_80),
        mk(13, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_MONTH, 20 * US, BLOCK, -1, WARN_50_80),
    };
    pgt_budget_config_t cfg = {.budgets = budgets, .nbudgets = 3};
    pgt_budget_policy_t pol = policy(&cfg);
    pol.notice_above = 1;
    pgt_who_t who = {.user = "alice", .application = "psql", .database = "postgres"};
    int64_t week = utc(2024, 5, 13, 0, 0, 0), month = utc(2024, 5, 1, 0, 0, 0);
    for (size_t i = 0; i < NCASES(several_cases); i++) {
        const several_case_t *c = &several_cases[i];
        pgt_budget_case_t bc[3] = {
            {.budget = &budgets[0], .spent_micro = c->app, .spent_start_us = TODAY},
            {.budget = &budgets[1], .spent_micro = c->db, .spent_start_us = week},
            {.budget = &budgets[2], .spent_micro = c->user, .spent_start_us = month},
        };
        pgt_budget_stmt_t st = {.who = &who, .est_micro = c->est, .now_us = NOW};
        pgt_budget_outcome_t o[3];
        pgt_verdict_t v;
        int fails = task_failures;
        CHECK_INT(pgt_budget_rules_check(&pol, &st, bc, 3, o, &v), c->want);
        CHECK_INT(v.budget_id, c->budget_id);
        CHECK_STR(v.sqlstate, c->sqlstate);
        CHECK_INT(o[0].warn_pct, c->warn_app);
        CHECK_INT(o[1].warn_pct, c->warn_db);
        CHECK_INT(o[2].warn_pct, c->warn_user);
        CHECK(strstr(v.notice, c->top) != NULL);
        /* The warning is the last budget's that warns. */
        int last = -1;
        for (int k = 0; k < 3; k++)
            if (o[k].warn_pct)
                last = k;
        CHECK_STR(v.warning, last >= 0 ? o[last].warning : "");
        if (task_failures != fails)
            fprintf(stderr, "several case %zu: %s (notice: %s)\n", i, c->about, v.notice);
    }
}

/* ---- grants --------------------------------------------------------------- */

static void test_grants(void)
{
    /* id, user, amount, granted_us, until_us (-1: to the end of the period
     * holding granted_us). */
    pgt_budget_grant_t grants[] = {
        {1, "alice", 2 * US, NOW - HOUR_US, -1},          /* today */
        {2, "alice", 3 * US, YESTERDAY + HOUR_US, -1},    /* yesterday, this week */
        {3, "alice", 5 * US, NOW - 40 * DAY_US, NOW + 1}, /* dated: until just after now */
        {4, "alice", 7 * US, NOW - HOUR_US, NOW},         /* dated: ended now */
        {5, "bob", 11 * US, NOW - HOUR_US, -1},           /* another user's */
    };
    pgt_budget_t budgets[] = {
        mk(1, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_DAY, 10 * US, BLOCK, -1, NULL),
        mk(2, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_WEEK, 10 * US, BLOCK, -1, NULL),
        mk(3, PGT_BUDGET_SUBJECT_DEFAULT, "", PGT_PERIOD_DAY, 10 * US, BLOCK, -1, NULL),
        mk(4, PGT_BUDGET_SUBJECT_APPLICATION, "psql", PGT_PERIOD_DAY, 10 * US, BLOCK, -1, NULL),
        mk(5, PGT_BUDGET_SUBJECT_DATABASE, "postgres", PGT_PERIOD_DAY, 10 * US, BLOCK, -1, NULL),
    };
    pgt_budget_config_t cfg = {
        .budgets = budgets, .nbudgets = NCASES(budgets), .grants = grants, .ngrants = 5};
    pgt_budget_policy_t pol = policy(&cfg);
    static const struct {
        size_t budget;             /* index in budgets */
        const char *user;          /* who */
        int64_t spent;             /* spent in the budget's period */
        int64_t limit;             /* the limit with grants */
        pgt_verdict_action_t want; /* the verdict */
        const char *about;         /* what the case checks */
    } cases[] = {
        {0, "alice", 10 * US, 17 * US, ALLOW,
         "day: today's grant (2) and the dated one (5); not yesterday's nor the expired one"},
        {0, "alice", 17 * US, 17 * US, REFUSE, "day: grants spent too"},
        {1, "alice", 10 * US, 20 * US, ALLOW, "week: yesterday's grant counts this week"},
        {2, "bob", 12 * US, 21 * US, ALLOW, "default: bob's grant raises it"},
        {2, "carol", 10 * US, 10 * US, REFUSE, "default: carol has none"},
        {3, "alice", 10 * US, 10 * US, REFUSE, "an application budget takes no grants"},
        {4, "alice", 10 * US, 10 * US, REFUSE, "a database budget takes no grants"},
    };
    for (size_t i = 0; i < NCASES(cases); i++) {
        const pgt_budget_t *bg = &budgets[cases[i].budget];
        int64_t start, end;
        pgt_period_bounds(bg->period, NOW, &start, &end);
        pgt_budget_case_t bc = {
            .budget = bg, .spent_micro = cases[i].spent, .spent_start_us = start};
        pgt_who_t who = {.user = cases[i].user, .application = "psql", .database = "postgres"};
        pgt_budget_stmt_t st = {.who = &who, .est_micro = CENT, .now_us = NOW};
        pgt_budget_outcome_t o;
        pgt_verdict_t v;
        int fails = task_failures;
        CHECK_INT(pgt_budget_rules_check(&pol, &st, &bc, 1, &o, &v), cases[i].want);
        CHECK_INT(o.limit_micro, cases[i].limit);
        if (task_failures != fails)
            fprintf(stderr, "grant case %zu: %s\n", i, cases[i].about);
    }
}

/* ---- the running check ---------------------------------------------------- */

static void test_running(void)
{
    pgt_budget_t budgets[] = {
        mk(21, PGT_BUDGET_SUBJECT_APPLICATION, "psql", PGT_PERIOD_DAY, 10 * US, WARNS, -1, NULL),
        mk(22, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_DAY, 10 * US, BLOCK, 25 * CENT, NULL),
        mk(23, PGT_BUDGET_SUBJECT_DATABASE, "postgres", PGT_PERIOD_DAY, 10 * US, BLOCK, -1, NULL),
    };
    pgt_budget_config_t cfg = {.budgets = budgets, .nbudgets = 3};
    pgt_budget_policy_t pol = policy(&cfg);
    static const struct {
        const char *user;    /* who */
        int64_t spent;       /* spent today by each subject */
        int64_t spent_start; /* its period; 0: today */
        int64_t running_all; /* the running cost of all the subject's statements */
        int64_t running;     /* this statement's */
        bool cancel;         /* the verdict */
        int64_t budget_id;   /* the budget cancelling */
        const char *message; /* its message */
        const char *about;   /* what the case checks */
    } cases[] = {
        {"alice", 8 * US, 0, 1 * US, 10 * CENT, false, 0, "", "under the limit"},
        {"alice", 9 * US, 0, 1 * US, 10 * CENT, false, 0, "", "spent plus running equal: runs"},
        {"alice", 9 * US, 0, 1 * US + 1, 10 * CENT, true, 22,
         "pgtally: canceling statement: budget user alice/day is spent",
         "spent plus running over the limit (the warn budget first does not cancel)"},
        {"alice", 8 * US, 0, 1 * US, 25 * CENT, false, 0, "", "at the per-query cap"},
        {"alice", 8 * US, 0, 1 * US, 25 * CENT + 1, true, 22,
         "pgtally: canceling statement: it has cost 0.25 USD, over the per-query cap of 0.25 USD "
         "of budget user alice/day",
         "over the per-query cap"},
        {"alice", 12 * US, YESTERDAY, 1 * US, 10 * CENT, false, 0, "",
         "yesterday's spend does not count"},
        {"etl", 20 * US, 0, 1 * US, 30 * CENT, false, 0, "", "exempt: never cancelled"},
    };
    for (size_t i = 0; i < NCASES(cases); i++) {
        pgt_budget_case_t bc[3];
        for (int k = 0; k < 3; k++)
            bc[k] = (pgt_budget_case_t){.budget = &budgets[k],
                                        .spent_micro = cases[i].spent,
                                        .spent_start_us =
                                            cases[i].spent_start ? cases[i].spent_start : TODAY,
                                        .running_micro = cases[i].running_all};
        pgt_who_t who = {.user = cases[i].user, .application = "psql", .database = "postgres"};
        pgt_verdict_t v;
        int fails = task_failures;
        pgt_verdict_action_t got =
            pgt_budget_rules_running(&pol, &who, cases[i].running, NOW, bc, 3, &v);
        CHECK_INT(got, cases[i].cancel ? CANCEL : ALLOW);
        CHECK_STR(v.sqlstate, cases[i].cancel ? "57014" : "");
        CHECK_INT(v.budget_id, cases[i].budget_id);
        CHECK_STR(v.message, cases[i].message);
        if (task_failures != fails)
            fprintf(stderr, "running case %zu: %s\n", i, cases[i].about);
    }
}

/* The texts of a cancel. */
static void test_running_texts(void)
{
    pgt_budget_t bg =
        mk(22, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_DAY, 10 * US, BLOCK, 25 * CENT, NULL);
    pgt_budget_config_t cfg = {.budgets = &bg, .nbudgets = 1};
    pgt_budget_policy_t pol = policy(&cfg);
    pgt_budget_case_t bc = {
        .budget = &bg, .spent_micro = 10 * US, .spent_start_us = TODAY, .running_micro = 50 * CENT};
    pgt_who_t who = {.user = "alice", .application = "psql", .database = "postgres"};
    pgt_verdict_t v;
    CHECK_INT(pgt_budget_rules_running(&pol, &who, 20 * CENT, NOW, &bc, 1, &v), CANCEL);
    CHECK_STR(v.detail,
              "Spent 10.50 USD of 10.00 USD, counting 0.20 USD for this statement so far.");
    CHECK_STR(v.hint, "See your spend with: pgtallyctl usage. To raise the budget, ask your "
                      "pgtally administrator.");
    bc.spent_micro = 2 * US;
    CHECK_INT(pgt_budget_rules_running(&pol, &who, 30 * CENT, NOW, &bc, 1, &v), CANCEL);
    CHECK_STR(v.detail, "Budget user alice/day: spent 2.50 USD of 10.00 USD.");
    CHECK_INT(pgt_budget_rules_running(&pol, &who, 30 * CENT, NOW, NULL, 0, &v), ALLOW);
}

/* ---- row limits (--max-rows) and budgets without a money limit ----------- */

/* A budget with a row limit (rows, -1: none) and a money limit (limit,
 * PGT_BUDGET_NO_LIMIT: none). */
static pgt_budget_t mk_rows(int64_t id, pgt_budget_subject_t type, const char *subject,
                            pgt_period_t p, int64_t limit, int64_t rows)
{
    pgt_budget_t b = mk(id, type, subject, p, limit, BLOCK, -1, limit < 0 ? NULL : WARN_50_80);
    b.max_rows = rows;
    return b;
}

/* Which row limit applies to whom: the smallest of the budgets that
 * apply, the default's giving way only to a user budget with a row limit
 * of its own (of any period), its money only to one with money. */
static void test_max_rows(void)
{
    char *growth[] = {"bob", "carol"};
    pgt_budget_team_t teams[] = {{.id = 1, .name = "growth", .members = growth, .nmembers = 2}};
    pgt_budget_role_member_t members[] = {{.role = "analysts", .user = "alice"},
                                          {.role = "analysts", .user = "dave"}};
    const int64_t NONE = PGT_BUDGET_NO_LIMIT;
    pgt_budget_t budgets[] = {
        mk_rows(1, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_DAY, US, 1000000000),
        mk_rows(2, PGT_BUDGET_SUBJECT_ROLE, "analysts", PGT_PERIOD_DAY, NONE, 500000000),
        mk_rows(3, PGT_BUDGET_SUBJECT_TEAM, "growth", PGT_PERIOD_WEEK, US, -1),
        mk_rows(4, PGT_BUDGET_SUBJECT_APPLICATION, "loader", PGT_PERIOD_DAY, NONE, 1000000),
        mk_rows(5, PGT_BUDGET_SUBJECT_DATABASE, "dw", PGT_PERIOD_MONTH, NONE, 2000000000),
        mk_rows(6, PGT_BUDGET_SUBJECT_DEFAULT, "", PGT_PERIOD_DAY, 2 * US, 100000000),
        mk_rows(7, PGT_BUDGET_SUBJECT_USER, "carol", PGT_PERIOD_DAY, 5 * US, -1),
        mk_rows(8, PGT_BUDGET_SUBJECT_USER, "erin", PGT_PERIOD_MONTH, NONE, 1000000000000),
        mk_rows(9, PGT_BUDGET_SUBJECT_DATABASE, "tie", PGT_PERIOD_DAY, NONE, 100000000),
        mk_rows(10, PGT_BUDGET_SUBJECT_USER, "frank", PGT_PERIOD_WEEK, NONE, 0),
    };
    pgt_budget_config_t cfg = {.budgets = budgets,
                               .nbudgets = NCASES(budgets),
                               .teams = teams,
                               .nteams = 1,
                               .role_members = members,
                               .nrole_members = 2};
    pgt_budget_policy_t pol = policy(&cfg);
    static const struct {
        const char *user, *app, *db; /* who */
        int64_t rows;                /* the smallest row limit */
        int64_t id;                  /* of that budget */
        bool default_money;          /* whether the default's money limit applies */
        const char *about;           /* what the case checks */
    } cases[] = {
        {"alice", "psql", "postgres", 500000000, 2, false,
         "her own 1e9 and her role's 5e8: the role's; her own rows replace the default's"},
        {"alice", "loader", "dw", 1000000, 4, false, "the application's 1e6 is smaller still"},
        {"bob", "psql", "postgres", 100000000, 6, true,
         "a team budget without rows: the default's 1e8"},
        {"bob", "psql", "dw", 100000000, 6, true, "the database's 2e9 is larger"},
        {"carol", "psql", "postgres", 100000000, 6, false,
         "her own day budget of money only: the default's rows still apply, its money not"},
        {"erin", "psql", "postgres", 1000000000000, 8, true,
         "her own month budget of rows only: it replaces the default's rows, not its money"},
        {"erin", "psql", "tie", 100000000, 9, true, "the database's 1e8 is smaller"},
        {"zoe", "psql", "tie", 100000000, 6, true, "a tie: the first budget by id"},
        {"frank", "psql", "postgres", 100000000, 6, true,
         "a row limit of 0 is none: the default's apply"},
        {"etl", "loader", "dw", -1, 0, true, "exempt: no row limit"},
    };
    for (size_t i = 0; i < NCASES(cases); i++) {
        pgt_who_t who = {
            .user = cases[i].user, .application = cases[i].app, .database = cases[i].db};
        int fails = task_failures;
        int64_t id = -7;
        CHECK_INT(pgt_budget_rules_max_rows(&pol, &who, &id), cases[i].rows);
        CHECK_INT(id, cases[i].id);
        CHECK_INT(pgt_budget_rules_applies(&cfg, &budgets[5], &who), cases[i].default_money);
        if (task_failures != fails)
            fprintf(stderr, "max-rows case %zu: %s\n", i, cases[i].about);
    }
    /* No budgets, or no config, is no row limit. */
    pgt_who_t alice = {.user = "alice", .application = "psql", .database = "postgres"};
    pgt_budget_config_t empty = {0};
    pgt_budget_policy_t none = policy(&empty);
    int64_t id = -7;
    CHECK_INT(pgt_budget_rules_max_rows(&none, &alice, &id), -1);
    CHECK_INT(id, 0);
    none.cfg = NULL;
    CHECK_INT(pgt_budget_rules_max_rows(&none, &alice, &id), -1);
    CHECK(!pgt_budget_rules_applies_rows(&cfg, &budgets[2], &alice)); /* no rows */
}

/* A budget without a money limit never refuses, warns nor cancels for
 * spend; its per-query cap still does, and the notice names another. */
static void test_no_limit(void)
{
    pgt_budget_t bg =
        mk_rows(4, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_DAY, PGT_BUDGET_NO_LIMIT, 1000);
    CHECK(!pgt_budget_has_limit(&bg));
    pgt_verdict_t v;
    CHECK_INT(judge_one("", 0, &bg, 1000 * US, 42 * CENT, &v), ALLOW);
    CHECK_STR(v.warning, "");
    CHECK_STR(v.message, "");
    CHECK_INT(judge_one("", 10 * CENT, &bg, 1000 * US, 42 * CENT, &v), ALLOW);
    CHECK_STR(v.notice, "pgtally: estimated 0.42 USD");
    bg.per_query_micro = 25 * CENT;
    CHECK_INT(judge_one("", 0, &bg, 2 * US, 42 * CENT, &v), REFUSE);
    CHECK_STR(v.sqlstate, "54000");
    CHECK_STR(v.detail, "Budget user alice/day: spent 2.00 USD (no money limit); per-query cap "
                        "0.25 USD. The budget resets at " RESET_DAY ".");

    /* Beside a budget with a limit, the notice names that one. */
    pgt_budget_t two[] = {
        bg, mk(5, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_WEEK, 10 * US, BLOCK, -1, NULL)};
    two[0].per_query_micro = -1;
    pgt_budget_config_t cfg = {.budgets = two, .nbudgets = 2};
    pgt_budget_policy_t pol = policy(&cfg);
    pol.notice_above = 10 * CENT;
    pgt_budget_case_t bc[2] = {
        {.budget = &two[0], .spent_micro = 900 * US, .spent_start_us = TODAY},
        {.budget = &two[1], .spent_micro = US, .spent_start_us = TODAY - 2 * DAY_US}};
    pgt_who_t who = {.user = "alice", .application = "psql", .database = "postgres"};
    pgt_budget_stmt_t st = {.who = &who, .est_micro = 42 * CENT, .now_us = NOW};
    pgt_budget_outcome_t o[2];
    CHECK_INT(pgt_budget_rules_check(&pol, &st, bc, 2, o, &v), ALLOW);
    CHECK_STR(v.notice, "pgtally: estimated 0.42 USD; budget user alice/week at 10% (1.00 USD of "
                        "10.00 USD)");
    CHECK_INT(o[0].pct, 0);
    CHECK_INT(o[0].warn_pct, 0);

    /* The running check: spend never cancels; the per-query cap does. */
    two[0].per_query_micro = 25 * CENT;
    bc[0].running_micro = 50 * US;
    CHECK_INT(pgt_budget_rules_running(&pol, &who, 10 * CENT, NOW, bc, 1, &v), ALLOW);
    CHECK_INT(pgt_budget_rules_running(&pol, &who, 30 * CENT, NOW, bc, 1, &v), CANCEL);
    CHECK_STR(v.detail, "Budget user alice/day: spent 950.00 USD (no money limit).");
}

/* ---- periods in a DST zone ------------------------------------------------ */

/* Berlin 2024: CET (+1) to CEST (+2) on Sunday March 31st at 02:00, back on
 * Sunday October 27th at 03:00. */
static void test_rollover(void)
{
    use_zone("Europe/Berlin");
    const struct {
        pgt_period_t p;      /* the budget's period */
        int64_t now;         /* when the statement comes */
        int64_t spent_start; /* the period its spend (5 of 10 USD) belongs to */
        int64_t start, end;  /* the period at now */
        int pct;             /* the percent at now */
        const char *reset;   /* the reset time in the warning */
        const char *about;   /* what the case checks */
    } cases[] = {
        {PGT_PERIOD_DAY, utc(2024, 3, 31, 10, 0, 0), utc(2024, 3, 30, 23, 0, 0),
         utc(2024, 3, 30, 23, 0, 0), utc(2024, 3, 31, 22, 0, 0), 50, "2024-04-01 00:00 CEST",
         "the 23-hour day of spring"},
        {PGT_PERIOD_DAY, utc(2024, 3, 31, 22, 0, 0), utc(2024, 3, 30, 23, 0, 0),
         utc(2024, 3, 31, 22, 0, 0), utc(2024, 4, 1, 22, 0, 0), 0, "2024-04-02 00:00 CEST",
         "midnight after it: yesterday's spend is 0"},
        {PGT_PERIOD_DAY, utc(2024, 3, 31, 21, 59, 59), utc(2024, 3, 30, 23, 0, 0),
         utc(2024, 3, 30, 23, 0, 0), utc(2024, 3, 31, 22, 0, 0), 50, "2024-04-01 00:00 CEST",
         "one second before: still counted"},
        {PGT_PERIOD_DAY, utc(2024, 10, 27, 12, 0, 0), utc(2024, 10, 26, 22, 0, 0),
         utc(2024, 10, 26, 22, 0, 0), utc(2024, 10, 27, 23, 0, 0), 50, "2024-10-28 00:00 CET",
         "the 25-hour day of autumn"},
        {PGT_PERIOD_WEEK, utc(2024, 3, 31, 12, 0, 0), utc(2024, 3, 24, 23, 0, 0),
         utc(2024, 3, 24, 23, 0, 0), utc(2024, 3, 31, 22, 0, 0), 50, "2024-04-01 00:00 CEST",
         "Sunday ends the week that started Monday in winter time"},
        {PGT_PERIOD_WEEK, utc(2024, 3, 31, 22, 30, 0), utc(2024, 3, 24, 23, 0, 0),
         utc(2024, 3, 31, 22, 0, 0), utc(2024, 4, 7, 22, 0, 0), 0, "2024-04-08 00:00 CEST",
         "Monday 00:30 opens a new week"},
        {PGT_PERIOD_MONTH, utc(2024, 3, 31, 21, 59, 59), utc(2024, 2, 29, 23, 0, 0),
         utc(2024, 2, 29, 23, 0, 0), utc(2024, 3, 31, 22, 0, 0), 50, "2024-04-01 00:00 CEST",
         "the last second of March"},
        {PGT_PERIOD_MONTH, utc(2024, 3, 31, 22, 0, 0), utc(2024, 2, 29, 23, 0, 0),
         utc(2024, 3, 31, 22, 0, 0), utc(2024, 4, 30, 22, 0, 0), 0, "2024-05-01 00:00 CEST",
         "April: March's spend is 0"},
    };
    for (size_t i = 0; i < NCASES(cases); i++) {
        pgt_budget_t bg =
            mk(31, PGT_BUDGET_SUBJECT_USER, "alice", cases[i].p, 10 * US, BLOCK, -1, WARN_50_80);
        pgt_budget_config_t cfg = {.budgets = &bg, .nbudgets = 1};
        pgt_budget_policy_t pol = policy(&cfg);
        pgt_budget_case_t bc = {
            .budget = &bg, .spent_micro = 5 * US, .spent_start_us = cases[i].spent_start};
        pgt_who_t who = {.user = "alice", .application = "psql", .database = "postgres"};
        pgt_budget_stmt_t st = {.who = &who, .est_micro = CENT, .now_us = cases[i].now};
        pgt_budget_outcome_t o;
        pgt_verdict_t v;
        int fails = task_failures;
        pgt_budget_rules_check(&pol, &st, &bc, 1, &o, &v);
        CHECK_INT(o.period_start_us, cases[i].start);
        CHECK_INT(o.period_end_us, cases[i].end);
        CHECK_INT(o.pct, cases[i].pct);
        /* At 100% the refusal names the reset time. */
        bc.spent_micro = 10 * US;
        bc.spent_start_us = cases[i].start;
        CHECK_INT(pgt_budget_rules_check(&pol, &st, &bc, 1, &o, &v), REFUSE);
        CHECK(strstr(v.detail, cases[i].reset) != NULL);
        CHECK(strstr(v.warning, cases[i].reset) != NULL);
        if (task_failures != fails)
            fprintf(stderr, "rollover case %zu: %s (%s)\n", i, cases[i].about, v.detail);
    }
    use_zone("UTC");
}

/* A grant without an end, given at 23:30 yesterday in Berlin, is gone at
 * 00:30 today. */
static void test_rollover_grant(void)
{
    use_zone("Europe/Berlin");
    int64_t now = utc(2024, 5, 1, 22, 30, 0); /* 00:30 CEST on May 2nd */
    pgt_budget_grant_t g = {.id = 1,
                            .user = "alice",
                            .amount_micro = US,
                            .granted_us = utc(2024, 5, 1, 21, 30, 0),
                            .until_us = -1};
    pgt_budget_t bg =
        mk(32, PGT_BUDGET_SUBJECT_USER, "alice", PGT_PERIOD_DAY, 10 * US, BLOCK, -1, NULL);
    pgt_budget_config_t cfg = {.budgets = &bg, .nbudgets = 1, .grants = &g, .ngrants = 1};
    pgt_budget_policy_t pol = policy(&cfg);
    pgt_budget_case_t bc = {.budget = &bg, .spent_start_us = utc(2024, 5, 1, 22, 0, 0)};
    pgt_who_t who = {.user = "alice", .application = "psql", .database = "postgres"};
    pgt_budget_stmt_t st = {.who = &who, .est_micro = CENT, .now_us = now};
    pgt_budget_outcome_t o;
    pgt_verdict_t v;
    pgt_budget_rules_check(&pol, &st, &bc, 1, &o, &v);
    CHECK_INT(o.limit_micro, 10 * US);
    st.now_us = now - HOUR_US; /* 23:30 on the 1st */
    pgt_budget_rules_check(&pol, &st, &bc, 1, &o, &v);
    CHECK_INT(o.limit_micro, 11 * US);
    use_zone("UTC");
}

int main(void)
{
    use_zone("UTC");
    test_action_names();
    test_applies();
    test_one_budget();
    test_unknown_refuse();
    test_texts();
    test_texts_unknown();
    test_texts_notice();
    test_several();
    test_grants();
    test_running();
    test_running_texts();
    test_max_rows();
    test_no_limit();
    test_rollover();
    test_rollover_grant();
    TASK_DONE();
}
