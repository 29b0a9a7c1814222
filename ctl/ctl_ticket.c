/* pgtallyctl ticket: the requests refused by a budget, a per-query cap or
 * the guard (list), and their approval (approve): a time-boxed grant for
 * that user and that shape, or that exact statement, with a cap of one
 * run. A running pgtally picks an approval up with the budgets, through
 * the settings version (docs/escrow.md). */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "pgtally/budget_store.h"
#include "pgtally/escrow.h"
#include "pgtally/period.h"

#define CMD "ticket"

static const char synopsis[] =
    "usage: pgtallyctl [-c FILE | --ledger PATH] ticket list [--format table|json|csv]\n"
    "       pgtallyctl ticket approve TICKET --for DURATION [--max AMOUNT] [--shape-only]\n";

static const char help[] =
    "\n"
    "A statement refused by a budget, a per-query cap or the guard names a ticket in\n"
    "its HINT (T- and six characters). The same user, database, shape and constants\n"
    "always give the same ticket. A ticket can be approved for 24 hours after its\n"
    "last refusal.\n"
    "\n"
    "list      the tickets refused in the last 24 hours, latest first, with their\n"
    "          approval and what ran under it\n"
    "approve   lets the ticket's user run that statement again\n"
    "  --for DURATION  how long: 30m, 2h, 1d (at most 7d)\n"
    "  --max AMOUNT    the most one run may cost (\"5\", \"5 USD\"); it is cancelled past\n"
    "                  it. Default: twice the estimate that was refused\n"
    "  --shape-only    any constants of the statement's shape, not only those refused\n"
    "A running pgtally applies an approval within a second. The user gets a NOTICE\n"
    "naming the approval when a statement runs under it.\n";

/* ---- ticket list ---------------------------------------------------------- */

static const ctl_opt_t list_opts[] = {
    CTL_FORMAT_OPT,
    CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

static const char *const headers[] = {"TICKET",   "USER",       "DATABASE", "REFUSED",  "LAST",
                                      "ESTIMATE", "REFUSED BY", "APPROVAL", "STATEMENT"};
static const char *const csv_headers[] = {
    "ticket",       "user",           "database",  "fingerprint", "refusals",
    "last_refused", "estimate",       "budget_id", "sqlstate",    "approval_id",
    "approved_by",  "approved_until", "runs",      "runs_cost",   "normalized"};
#define NCSV (sizeof(csv_headers) / sizeof(csv_headers[0]))

/* What refused it: "budget 3", "a cap" or "the guard". */
static void refused_by(const pgt_ticket_t *t, char *buf, size_t len)
{
    if (t->budget_id)
        snprintf(buf, len, "budget %lld", (long long)t->budget_id);
    else
        snprintf(buf, len, "%s", strcmp(t->sqlstate, "54000") == 0 ? "cap or guard" : "budget");
}

/* The approval of t as the table shows it: "-", or "3 by ana until ...,
 * 2 runs, 0.02 USD". */
static void approval_text(const ctl_env_t *env, const pgt_ticket_t *t, int64_t now, char *buf,
                          size_t len)
{
    char until[40], money[40];
    if (!t->approval_id) {
        snprintf(buf, len, "-");
        return;
    }
    snprintf(buf, len, "%lld by %s until %s%s, %lld run%s, %s", (long long)t->approval_id,
             t->approved_by, ctl_fmt_local(t->approved_until, until, sizeof(until)),
             t->approved_until <= now ? " (expired)" : "", (long long)t->runs,
             t->runs == 1 ? "" : "s",
             ctl_fmt_money(t->runs_micro, env->currency, money, sizeof(money)));
}

static json_t *ticket_json(const ctl_env_t *env, const pgt_ticket_t *t, const char *fp)
{
    char last[40], until[40];
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:s, s:I, s:I, s:s, s:s, s:s?}", "ticket", t->id, "user",
        t->user, "database", t->database, "fingerprint", fp, "refusals", (json_int_t)t->refusals,
        "last_refused", ctl_fmt_iso(t->last_us, false, last, sizeof(last)), "estimate_micro",
        (json_int_t)t->est_micro, "budget_id", (json_int_t)t->budget_id, "sqlstate", t->sqlstate,
        "currency", env->currency, "normalized", t->normalized[0] ? t->normalized : NULL);
    if (o && t->approval_id)
        json_object_set_new(o, "approval",
                            json_pack("{s:I, s:s, s:s, s:I, s:I}", "id", (json_int_t)t->approval_id,
                                      "by", t->approved_by, "until",
                                      ctl_fmt_iso(t->approved_until, false, until, sizeof(until)),
                                      "runs", (json_int_t)t->runs, "runs_cost_micro",
                                      (json_int_t)t->runs_micro));
    return o;
}

static void ticket_csv(const ctl_env_t *env, const pgt_ticket_t *t, const char *fp)
{
    char refusals[24], last[40], est[40], budget[24], aid[24], until[40], runs[24], cost[40];
    snprintf(refusals, sizeof(refusals), "%lld", (long long)t->refusals);
    snprintf(budget, sizeof(budget), "%lld", (long long)t->budget_id);
    snprintf(aid, sizeof(aid), "%lld", (long long)t->approval_id);
    snprintf(runs, sizeof(runs), "%lld", (long long)t->runs);
    const char *row[] = {
        t->id,
        t->user,
        t->database,
        fp,
        refusals,
        ctl_fmt_iso(t->last_us, false, last, sizeof(last)),
        t->est_micro >= 0 ? ctl_fmt_money(t->est_micro, env->currency, est, sizeof(est)) : NULL,
        t->budget_id ? budget : NULL,
        t->sqlstate,
        t->approval_id ? aid : NULL,
        t->approval_id ? t->approved_by : NULL,
        t->approval_id ? ctl_fmt_iso(t->approved_until, false, until, sizeof(until)) : NULL,
        t->approval_id ? runs : NULL,
        t->approval_id ? ctl_fmt_money(t->runs_micro, env->currency, cost, sizeof(cost)) : NULL,
        t->normalized};
    ctl_csv_row(stdout, row, NCSV);
}

static int print_tickets(const ctl_env_t *env, const pgt_ticket_t *tk, size_t n,
                         ctl_format_t format)
{
    int64_t now = pgt_clock_us();
    pgt_text_table_t *t = format == CTL_FORMAT_TABLE ? pgt_text_table_new(9, headers, NULL) : NULL;
    json_t *arr = format == CTL_FORMAT_JSON ? json_array() : NULL;
    if (format == CTL_FORMAT_CSV)
        ctl_csv_row(stdout, csv_headers, NCSV);
    for (size_t i = 0; i < n; i++) {
        char fp[17], refusals[24], last[40], est[40] = "-", by[40], approval[200];
        snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)tk[i].fingerprint);
        if (arr)
            json_array_append_new(arr, ticket_json(env, &tk[i], fp));
        if (format == CTL_FORMAT_CSV)
            ticket_csv(env, &tk[i], fp);
        if (!t)
            continue;
        snprintf(refusals, sizeof(refusals), "%lld", (long long)tk[i].refusals);
        if (tk[i].est_micro >= 0)
            ctl_fmt_money(tk[i].est_micro, env->currency, est, sizeof(est));
        refused_by(&tk[i], by, sizeof(by));
        approval_text(env, &tk[i], now, approval, sizeof(approval));
        const char *cells[] = {tk[i].id,
                               tk[i].user,
                               tk[i].database,
                               refusals,
                               ctl_fmt_local(tk[i].last_us, last, sizeof(last)),
                               est,
                               by,
                               approval,
                               tk[i].normalized};
        if (pgt_text_table_row(t, cells, 60) != 0)
            break;
    }
    if (arr)
        return ctl_json_print(arr, stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
    if (t && n == 0) {
        pgt_text_table_free(t);
        printf("No tickets: nothing was refused by a budget, a cap or the guard in the last 24 "
               "hours.\n");
        return CTL_EXIT_OK;
    }
    return t && ctl_table_print(t, stdout) != 0 ? CTL_EXIT_ERROR : CTL_EXIT_OK;
}

static int cmd_list(ctl_env_t *env, int argc, char **argv)
{
    ctl_list_args_t a = {.format = CTL_FORMAT_TABLE};
    char what[512], err[512];
    if (ctl_parse_opts(env, argc, argv, list_opts, ctl_list_apply, &a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD " list", synopsis, what);
    if (a.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    pgt_db_t *db;
    if (ctl_open_store(env, CTL_STORE_READ, &db) != 0)
        return CTL_EXIT_ERROR;
    pgt_ticket_t *tk = NULL;
    size_t n = 0;
    int rc = db ? pgt_tickets_read(db, pgt_clock_us() - PGT_TICKET_TTL_US, 1000, &tk, &n, err,
                                   sizeof(err))
                : 0;
    pgt_budget_store_close(db);
    if (rc != 0) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
        return CTL_EXIT_ERROR;
    }
    rc = print_tickets(env, tk, n, a.format);
    pgt_tickets_free(tk, n);
    return rc;
}

/* ---- ticket approve ------------------------------------------------------- */

enum { OPT_FOR = 1, OPT_MAX, OPT_SHAPE_ONLY };

static const ctl_opt_t approve_opts[] = {
    {"for", 0, true, OPT_FOR}, {"max", 0, true, OPT_MAX}, {"shape-only", 0, false, OPT_SHAPE_ONLY},
    CTL_COMMON_OPTS,           {NULL, 0, false, 0},
};

/* The command line of `ticket approve`. */
typedef struct approve_args {
    pgt_approve_req_t req; /* the request (strings borrowed from argv) */
    const char *max;       /* --max, read once the currency is known */
    bool help;             /* --help */
} approve_args_t;

static int approve_apply(ctl_env_t *env, void *args, int id, const char *v, char *what, size_t len)
{
    approve_args_t *a = args;
    switch (id) {
    case OPT_FOR:
        if (pgt_duration_parse(v, &a->req.for_us) == 0 && a->req.for_us > 0 &&
            a->req.for_us <= PGT_APPROVAL_MAX_US)
            return 0;
        snprintf(what, len,
                 "bad --for '%s': expected a duration of at most 7 days such as 30m, 2h or 1d", v);
        return -1;
    case OPT_MAX:
        a->max = v;
        return 0;
    case OPT_SHAPE_ONLY:
        a->req.shape_only = true;
        return 0;
    case CTL_OPT_HELP:
        a->help = true;
        return 0;
    }
    return ctl_common_opt(env, id, v) ? 0 : -1;
}

/* Prints what approval a lets run. */
static void print_approval(const ctl_env_t *env, const pgt_approval_t *a)
{
    char until[40], cap[40];
    printf("Approval %lld of ticket %s: %s may run ", (long long)a->id, a->ticket, a->user);
    if (a->constants)
        printf("that statement");
    else
        printf("statements of shape %016llx", (unsigned long long)a->fingerprint);
    printf(" in %s until %s %s", a->database, ctl_fmt_local(a->until_us, until, sizeof(until)),
           env->timezone);
    if (a->max_micro >= 0)
        printf(", up to %s a run", ctl_fmt_money(a->max_micro, env->currency, cap, sizeof(cap)));
    printf(" (approved by %s)\n", a->created_by);
}

static int cmd_approve(ctl_env_t *env, int argc, char **argv)
{
    approve_args_t a = {.req.max_micro = -1};
    const char *pos[1];
    size_t npos = 0;
    char what[512], err[512];
    if (ctl_parse_args(env, argc, argv, approve_opts, approve_apply, &a, pos, 1, &npos, what,
                       sizeof(what)) != 0)
        return ctl_usage_error(env, CMD " approve", synopsis, what);
    if (a.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    if (npos != 1 || a.req.for_us == 0)
        return ctl_usage_error(env, CMD " approve", synopsis,
                               npos != 1 ? "the ticket is required: T-XXXXXX, as the refusal's "
                                           "HINT or 'pgtallyctl ticket list' shows it"
                                         : "--for is required: how long the approval lasts, "
                                           "such as 2h");
    if (ctl_env_resolve(env) != 0)
        return CTL_EXIT_ERROR;
    if (a.max && ctl_parse_amount(env, "--max", a.max, &a.req.max_micro, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD " approve", synopsis, what);
    a.req.ticket = pos[0];
    a.req.by = ctl_os_user();
    a.req.now_us = pgt_clock_us();
    pgt_db_t *db;
    if (ctl_open_store(env, CTL_STORE_CHANGE, &db) != 0)
        return CTL_EXIT_ERROR;
    pgt_approval_t ap;
    int rc = pgt_ticket_approve(db, &a.req, &ap, err, sizeof(err));
    pgt_budget_store_close(db);
    if (rc == 1) {
        fprintf(stderr,
                "%s ticket approve: no ticket %s was refused in the last 24 hours; see "
                "'pgtallyctl ticket list'\n",
                env->prog, pos[0]);
        return CTL_EXIT_ERROR;
    }
    if (rc != 0) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
        return CTL_EXIT_ERROR;
    }
    print_approval(env, &ap);
    pgt_approval_free(&ap);
    return CTL_EXIT_OK;
}

/* ---- Dispatch ------------------------------------------------------------- */

static const ctl_command_t subcommands[] = {
    {"list", cmd_list},
    {"approve", cmd_approve},
};

int ctl_cmd_ticket(ctl_env_t *env, int argc, char **argv)
{
    return ctl_dispatch(env, argc, argv, subcommands, sizeof(subcommands) / sizeof(subcommands[0]),
                        synopsis, help);
}
