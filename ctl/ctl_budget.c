/* pgtallyctl budget: set, list and remove budgets and grant extra budget;
 * and the budgets section of `usage`. Each change is one transaction in the
 * ledger; a running pgtally picks it up through the settings version. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "pgtally/budget_store.h"
#include "pgtally/period.h"
#include "pgtally/pricing.h"

#define CMD "budget"
#define BAR_WIDTH 10

static const char synopsis[] =
    "usage: pgtallyctl [-c FILE | --ledger PATH] budget set (--user U | --role R | --team T |\n"
    "         --application A | --database D | --default) --period day|week|month\n"
    "         (--limit AMOUNT | --max-rows N) [--warn 50,80] [--action block|warn]\n"
    "         [--per-query AMOUNT] [--max-rows N]\n"
    "       pgtallyctl budget list [--format table|json|csv]\n"
    "       pgtallyctl budget rm ID\n"
    "       pgtallyctl budget grant --user U --amount AMOUNT [--until TIME]\n";

static const char help[] =
    "\n"
    "A budget caps the spend of a subject over a day, a week (from Monday) or a month\n"
    "of the config's timezone.\n"
    "\n"
    "set     creates the budget of a subject and period, or changes it. Subjects:\n"
    "          --user U         one PostgreSQL user\n"
    "          --role R         the members of a PostgreSQL role\n"
    "          --team T         the members of a pgtally team (pgtallyctl team)\n"
    "          --application A  one application_name\n"
    "          --database D     one database\n"
    "          --default        each user without a user budget of that period\n"
    "        --limit AMOUNT     12.50 or '12.50 USD' (the configured currency)\n"
    "        --warn PCTS        warn at these percents (default 80; 'none': never)\n"
    "        --action ACTION    at 100%: block (default) refuses new statements, warn\n"
    "                           only warns\n"
    "        --per-query AMOUNT refuse single statements estimated above this\n"
    "        --max-rows N       refuse statements whose plan has a node estimated at more\n"
    "                           rows (5000000, 1e9); without --limit the budget has no\n"
    "                           money limit\n"
    "list    every budget with its spend in the current period and when it resets\n"
    "rm      removes budget ID (as shown by list)\n"
    "grant   raises the limit of a user's budgets (user and default) by --amount,\n"
    "        until --until TIME, or to the end of each budget's current period\n"
    "\n"
    "TIME is as for 'pgtallyctl queries --since'. -c/--config and --ledger pick the\n"
    "ledger as for every command; set and grant create it when missing.\n";

/* ---- Standing: a budget's spend in its current period ------------------- */

/* One line of a budget's standing: the subject, or for a default budget
 * one user. */
typedef struct line {
    char *user;            /* default budgets: the user (owned); NULL otherwise */
    int64_t spent_micro;   /* spent in the current period */
    int64_t granted_micro; /* grants that raise the limit */
    int64_t limit_micro;   /* the budget's limit plus the grants */
} line_t;

/* A budget with its lines. */
typedef struct standing {
    const pgt_budget_t *b;          /* the budget */
    const pgt_budget_config_t *cfg; /* grants */
    int64_t now_us;                 /* when */
    int64_t start_us, end_us;       /* its current period */
    line_t *lines;                  /* one, or per user for default */
    size_t n;                       /* lines */
    size_t cap;                     /* slots allocated */
} standing_t;

/* A pgt_budget_spend_cb: adds a line with its grants. Returns 0, or 1 when
 * out of memory. */
static int standing_line_cb(const char *user, int64_t spent, void *arg)
{
    standing_t *s = arg;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4;
        line_t *l = realloc(s->lines, cap * sizeof(*l));
        if (!l)
            return 1;
        s->lines = l;
        s->cap = cap;
    }
    line_t *l = &s->lines[s->n];
    const char *grantee = user                                            ? user
                          : s->b->subject_type == PGT_BUDGET_SUBJECT_USER ? s->b->subject
                                                                          : NULL;
    *l = (line_t){.user = user ? strdup(user) : NULL, .spent_micro = spent};
    if (user && !l->user)
        return 1;
    if (grantee)
        l->granted_micro = pgt_budget_grant_total(s->cfg, grantee, s->b->period, s->start_us,
                                                  s->end_us, s->now_us);
    l->limit_micro =
        pgt_budget_has_limit(s->b) ? s->b->limit_micro + l->granted_micro : PGT_BUDGET_NO_LIMIT;
    s->n++;
    return 0;
}

static void standing_free(standing_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->lines[i].user);
    free(s->lines);
}

/* Fills s for budget b at now. Returns 0, or -1 with the cause in err. */
static int standing_load(pgt_db_t *db, const pgt_budget_config_t *cfg, const pgt_budget_t *b,
                         int64_t now, standing_t *s, char *err, size_t errlen)
{
    *s = (standing_t){.b = b, .cfg = cfg, .now_us = now};
    pgt_period_bounds(b->period, now, &s->start_us, &s->end_us);
    int rc = pgt_budget_spend(db, b, s->start_us, s->end_us, standing_line_cb, s, err, errlen);
    if (rc == 0 && s->n == 0) /* a default budget nobody spent from yet */
        rc = standing_line_cb(NULL, 0, s);
    if (rc > 0)
        snprintf(err, errlen, "out of memory");
    if (rc != 0)
        standing_free(s);
    return rc == 0 ? 0 : -1;
}

/* Whether a line has a money limit (its budget has one). */
static bool line_limited(const line_t *l)
{
    return l->limit_micro >= 0;
}

/* Percent of the limit spent; a limit of 0 is reached at once, and none
 * never. */
static double line_pct(const line_t *l)
{
    if (!line_limited(l))
        return 0;
    if (l->limit_micro == 0)
        return 100;
    return (double)l->spent_micro * 100.0 / (double)l->limit_micro;
}

/* The line nearest its limit. */
static const line_t *top_line(const standing_t *s)
{
    const line_t *top = &s->lines[0];
    for (size_t i = 1; i < s->n; i++)
        if (line_pct(&s->lines[i]) > line_pct(top))
            top = &s->lines[i];
    return top;
}

/* Writes "user alice", "default" or "default: bob" (line given). */
static char *subject_text(const pgt_budget_t *b, const line_t *l, char *buf, size_t len)
{
    if (b->subject_type == PGT_BUDGET_SUBJECT_DEFAULT)
        snprintf(buf, len, "default%s%s", l && l->user ? ": " : "", l && l->user ? l->user : "");
    else
        snprintf(buf, len, "%s %s", pgt_budget_subject_name(b->subject_type), b->subject);
    return buf;
}

/* Writes "50%,80%", or "-" without thresholds. */
static char *warn_text(const pgt_budget_t *b, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "%s", b->nwarn ? "" : "-");
    for (int i = 0; i < b->nwarn && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%d%%", i ? "," : "", b->warn_pcts[i]);
    return buf;
}

/* Writes the limit of a line: "10.00 USD", "15.00 USD (+5.00)" with
 * grants, or "none". */
static char *limit_text(const ctl_env_t *env, const line_t *l, char *buf, size_t len)
{
    char limit[PGT_MONEY_TEXT_MAX], granted[PGT_MONEY_TEXT_MAX];
    if (!line_limited(l)) {
        snprintf(buf, len, "none");
        return buf;
    }
    ctl_fmt_money(l->limit_micro, env->currency, limit, sizeof(limit));
    if (l->granted_micro)
        snprintf(buf, len, "%s (+%s)", limit,
                 ctl_fmt_money(l->granted_micro, NULL, granted, sizeof(granted)));
    else
        snprintf(buf, len, "%s", limit);
    return buf;
}

/* Writes a bar of the percent spent of a line, "[#######---]" for 72%;
 * "" without a limit. */
static char *bar_text(const line_t *l, char *buf, size_t len)
{
    char bar[BAR_WIDTH + 1];
    double pct = line_pct(l);
    if (!line_limited(l)) {
        snprintf(buf, len, "%s", "");
        return buf;
    }
    int filled = pct >= 100 ? BAR_WIDTH : (int)(pct / (100.0 / BAR_WIDTH));
    for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < filled ? '#' : '-';
    bar[BAR_WIDTH] = '\0';
    snprintf(buf, len, "[%s]", bar);
    return buf;
}

/* Writes the percent spent of a line, "72%" (rounded down: 100% is
 * reached), or "-" without a limit. */
static char *pct_text(const line_t *l, char *buf, size_t len)
{
    if (line_limited(l))
        snprintf(buf, len, "%d%%", (int)line_pct(l));
    else
        snprintf(buf, len, "-");
    return buf;
}

/* Writes a budget's --max-rows ("1e9"), or "-" without one. */
static char *max_rows_text(const pgt_budget_t *b, char *buf, size_t len)
{
    if (b->max_rows >= 0)
        return pgt_rows_format(b->max_rows, buf, len);
    snprintf(buf, len, "-");
    return buf;
}

/* A money amount as JSON: micro-units, or null for none (negative). */
static json_t *micro_json(int64_t micro)
{
    return micro >= 0 ? json_integer((json_int_t)micro) : json_null();
}

/* A money amount as JSON text ("12.500000"), or null for none. */
static json_t *money_json(int64_t micro)
{
    char text[PGT_MONEY_TEXT_MAX];
    return micro >= 0 ? json_string(pgt_money_format(micro, NULL, text, sizeof(text)))
                      : json_null();
}

/* The fields of one line as JSON, shared by list and usage. */
static json_t *line_json(const ctl_env_t *env, const standing_t *s, const line_t *l)
{
    char spent[PGT_MONEY_TEXT_MAX], start[48], end[48];
    json_t *pct = line_limited(l) ? json_real(round(line_pct(l) * 10) / 10) : json_null();
    return json_pack("{sIsssIsososssosssssIss?}", "spent_micro", (json_int_t)l->spent_micro,
                     "spent", pgt_money_format(l->spent_micro, NULL, spent, sizeof(spent)),
                     "granted_micro", (json_int_t)l->granted_micro, "effective_limit_micro",
                     micro_json(l->limit_micro), "effective_limit", money_json(l->limit_micro),
                     "currency", env->currency, "percent", pct, "period_start",
                     ctl_fmt_iso(s->start_us, false, start, sizeof(start)), "resets",
                     ctl_fmt_iso(s->end_us, false, end, sizeof(end)), "resets_us",
                     (json_int_t)s->end_us, "user", l->user);
}

/* A budget's settings as JSON. */
static json_t *budget_json(const pgt_budget_t *b)
{
    json_t *warn = json_array();
    for (int i = 0; warn && i < b->nwarn; i++)
        json_array_append_new(warn, json_integer(b->warn_pcts[i]));
    int64_t limit = pgt_budget_has_limit(b) ? b->limit_micro : -1;
    return json_pack(
        "{sIsssssssosososssososo}", "id", (json_int_t)b->id, "subject_type",
        pgt_budget_subject_name(b->subject_type), "subject", b->subject, "period",
        pgt_period_name(b->period), "limit_micro", micro_json(limit), "limit", money_json(limit),
        "warn_pcts", warn, "action", pgt_budget_action_name(b->action), "per_query_micro",
        micro_json(b->per_query_micro), "per_query", money_json(b->per_query_micro), "max_rows",
        b->max_rows >= 0 ? json_integer((json_int_t)b->max_rows) : json_null());
}

/* ---- Loading every budget with its standing ----------------------------- */

/* Every budget of a ledger, with its standing now. */
typedef struct board {
    pgt_db_t *db;             /* the ledger; NULL when it predates budgets */
    pgt_budget_config_t *cfg; /* budgets, teams, grants */
    standing_t *st;           /* one per budget */
    size_t n;                 /* standings loaded */
} board_t;

static void board_free(board_t *bd)
{
    for (size_t i = 0; i < bd->n; i++)
        standing_free(&bd->st[i]);
    free(bd->st);
    pgt_budget_config_free(bd->cfg);
    pgt_budget_store_close(bd->db);
}

/* Opens the ledger read-only and loads every budget's standing. Returns 0
 * (with no budgets for a ledger without budget tables), or prints why and
 * returns -1. */
static int board_load(ctl_env_t *env, board_t *bd)
{
    *bd = (board_t){0};
    if (ctl_open_store(env, CTL_STORE_READ, &bd->db) != 0)
        return -1;
    if (!bd->db)
        return 0;
    char err[512];
    int64_t now = pgt_clock_us();
    int rc = pgt_budget_config_load(bd->db, &bd->cfg, err, sizeof(err));
    if (rc == 0 && bd->cfg->nbudgets && !(bd->st = calloc(bd->cfg->nbudgets, sizeof(*bd->st)))) {
        snprintf(err, sizeof(err), "out of memory");
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < bd->cfg->nbudgets; i++) {
        rc =
            standing_load(bd->db, bd->cfg, &bd->cfg->budgets[i], now, &bd->st[i], err, sizeof(err));
        bd->n += rc == 0;
    }
    if (rc != 0) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
        board_free(bd);
        return -1;
    }
    return 0;
}

/* ---- The usage section ---------------------------------------------------- */

/* The bar and its percent are two columns so that both line up. */
static const char *const section_headers[] = {"ID",    "SUBJECT", "PERIOD", "SPENT",
                                              "LIMIT", "USED",    "",       "RESETS"};
static const bool section_right[] = {true, false, false, true, true, false, true, false};

static int section_row(const ctl_env_t *env, pgt_text_table_t *t, const standing_t *s,
                       const line_t *l)
{
    char id[24], subject[PGT_BUDGET_SUBJECT_MAX + 16], spent[PGT_MONEY_TEXT_MAX];
    char limit[2 * PGT_MONEY_TEXT_MAX], bar[32], pct[16], resets[32];
    snprintf(id, sizeof(id), "%lld", (long long)s->b->id);
    const char *cells[] = {
        id,
        subject_text(s->b, l, subject, sizeof(subject)),
        pgt_period_name(s->b->period),
        ctl_fmt_money(l->spent_micro, env->currency, spent, sizeof(spent)),
        limit_text(env, l, limit, sizeof(limit)),
        bar_text(l, bar, sizeof(bar)),
        pct_text(l, pct, sizeof(pct)),
        ctl_fmt_local(s->end_us, resets, sizeof(resets)),
    };
    return pgt_text_table_row(t, cells, 60);
}

static json_t *section_json(const ctl_env_t *env, const board_t *bd)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < bd->n; i++) {
        const standing_t *s = &bd->st[i];
        for (size_t k = 0; k < s->n; k++) {
            json_t *o = line_json(env, s, &s->lines[k]);
            json_t *head = json_pack("{sIssssss}", "id", (json_int_t)s->b->id, "subject_type",
                                     pgt_budget_subject_name(s->b->subject_type), "subject",
                                     s->b->subject, "period", pgt_period_name(s->b->period));
            int rc = o && head ? json_object_update(o, head) : -1;
            json_decref(head);
            if (rc != 0)
                json_decref(o);
            if (rc != 0 || json_array_append_new(a, o) != 0) {
                json_decref(a);
                return NULL;
            }
        }
    }
    return a;
}

int ctl_budget_section(ctl_env_t *env, bool json, json_t **out)
{
    board_t bd;
    if (board_load(env, &bd) != 0)
        return -1;
    int rc = 0;
    if (json) {
        *out = section_json(env, &bd);
        rc = *out ? 0 : -1;
    } else if (bd.n) {
        pgt_text_table_t *t = pgt_text_table_new(8, section_headers, section_right);
        for (size_t i = 0; t && rc == 0 && i < bd.n; i++)
            for (size_t k = 0; rc == 0 && k < bd.st[i].n; k++)
                rc = section_row(env, t, &bd.st[i], &bd.st[i].lines[k]);
        if (t && rc == 0) {
            printf("\nBudgets, current periods (%s)\n\n", env->timezone);
            rc = ctl_table_print(t, stdout);
        } else {
            pgt_text_table_free(t);
            rc = -1;
        }
    }
    if (rc != 0)
        fprintf(stderr, "%s: out of memory\n", env->prog);
    board_free(&bd);
    return rc;
}

/* ---- budget list ---------------------------------------------------------- */

static const ctl_opt_t list_opts[] = {
    CTL_FORMAT_OPT,
    CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

static const char *const list_headers[] = {"ID",    "SUBJECT", "PERIOD",    "LIMIT",
                                           "WARN",  "ACTION",  "PER QUERY", "MAX ROWS",
                                           "SPENT", "USED",    "RESETS"};
static const bool list_right[] = {true, false, false, true, false, false,
                                  true, true,  true,  true, false};

static int list_table_row(const ctl_env_t *env, pgt_text_table_t *t, const standing_t *s)
{
    const pgt_budget_t *b = s->b;
    const line_t *top = top_line(s);
    char id[24], subject[PGT_BUDGET_SUBJECT_MAX + 24], limit[2 * PGT_MONEY_TEXT_MAX], warn[64];
    char cap[PGT_MONEY_TEXT_MAX], rows[32], spent[PGT_MONEY_TEXT_MAX], used[16], resets[32];
    snprintf(id, sizeof(id), "%lld", (long long)b->id);
    subject_text(b, NULL, subject, sizeof(subject));
    if (top->user) /* default: the user nearest the limit */
        snprintf(subject + strlen(subject), sizeof(subject) - strlen(subject), " (top: %s)",
                 top->user);
    const char *cells[] = {
        id,
        subject,
        pgt_period_name(b->period),
        limit_text(env, top, limit, sizeof(limit)),
        warn_text(b, warn, sizeof(warn)),
        pgt_budget_action_name(b->action),
        b->per_query_micro >= 0 ? ctl_fmt_money(b->per_query_micro, env->currency, cap, sizeof(cap))
                                : "-",
        max_rows_text(b, rows, sizeof(rows)),
        ctl_fmt_money(top->spent_micro, env->currency, spent, sizeof(spent)),
        pct_text(top, used, sizeof(used)),
        ctl_fmt_local(s->end_us, resets, sizeof(resets)),
    };
    return pgt_text_table_row(t, cells, 60);
}

/* One budget of `budget list --format json`: its settings, the standing of
 * the line nearest its limit, and for default budgets every user's. */
static json_t *list_json_item(const ctl_env_t *env, const standing_t *s)
{
    json_t *o = budget_json(s->b), *top = line_json(env, s, top_line(s));
    int rc = o && top ? json_object_update(o, top) : -1;
    json_decref(top);
    json_t *users = s->b->subject_type == PGT_BUDGET_SUBJECT_DEFAULT ? json_array() : NULL;
    for (size_t k = 0; rc == 0 && users && k < s->n; k++)
        if (s->lines[k].user)
            rc = json_array_append_new(users, line_json(env, s, &s->lines[k]));
    if (rc == 0 && users) {
        rc = json_object_set_new(o, "users", users);
        users = NULL;
    }
    json_decref(users);
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static const char *const list_csv_headers[] = {
    "id",     "subject_type", "subject",  "period", "limit",   "granted", "effective_limit", "warn",
    "action", "per_query",    "max_rows", "spent",  "percent", "resets",  "currency"};

static void list_csv_row(const ctl_env_t *env, const standing_t *s)
{
    const pgt_budget_t *b = s->b;
    const line_t *top = top_line(s);
    char id[24], limit[PGT_MONEY_TEXT_MAX], granted[PGT_MONEY_TEXT_MAX], eff[PGT_MONEY_TEXT_MAX];
    char warn[64] = "", cap[PGT_MONEY_TEXT_MAX] = "", spent[PGT_MONEY_TEXT_MAX], pct[32] = "";
    char resets[48], rows[32] = "";
    snprintf(id, sizeof(id), "%lld", (long long)b->id);
    for (int i = 0; i < b->nwarn; i++)
        snprintf(warn + strlen(warn), sizeof(warn) - strlen(warn), "%s%d", i ? "," : "",
                 b->warn_pcts[i]);
    if (b->per_query_micro >= 0)
        pgt_money_format(b->per_query_micro, NULL, cap, sizeof(cap));
    if (b->max_rows >= 0)
        snprintf(rows, sizeof(rows), "%lld", (long long)b->max_rows);
    if (line_limited(top))
        snprintf(pct, sizeof(pct), "%.1f", line_pct(top));
    const char *cells[] = {
        id,
        pgt_budget_subject_name(b->subject_type),
        top->user ? top->user : b->subject,
        pgt_period_name(b->period),
        line_limited(top) ? pgt_money_format(b->limit_micro, NULL, limit, sizeof(limit)) : "",
        pgt_money_format(top->granted_micro, NULL, granted, sizeof(granted)),
        line_limited(top) ? pgt_money_format(top->limit_micro, NULL, eff, sizeof(eff)) : "",
        warn,
        pgt_budget_action_name(b->action),
        cap,
        rows,
        pgt_money_format(top->spent_micro, NULL, spent, sizeof(spent)),
        pct,
        ctl_fmt_iso(s->end_us, false, resets, sizeof(resets)),
        env->currency,
    };
    ctl_csv_row(stdout, cells, sizeof(cells) / sizeof(cells[0]));
}

/* Prints the board in the chosen format. Returns an exit code. */
static int list_print(const ctl_env_t *env, const board_t *bd, ctl_format_t format)
{
    if (format == CTL_FORMAT_CSV) {
        ctl_csv_row(stdout, list_csv_headers, sizeof(list_csv_headers) / sizeof(char *));
        for (size_t i = 0; i < bd->n; i++)
            list_csv_row(env, &bd->st[i]);
        return CTL_EXIT_OK;
    }
    if (format == CTL_FORMAT_JSON) {
        json_t *a = json_array();
        for (size_t i = 0; a && i < bd->n; i++)
            if (json_array_append_new(a, list_json_item(env, &bd->st[i])) != 0) {
                json_decref(a);
                a = NULL;
            }
        return ctl_json_print(a, stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
    }
    if (bd->n == 0) {
        printf("No budgets. Set one with: pgtallyctl budget set --user NAME --period day "
               "--limit 10\n");
        return CTL_EXIT_OK;
    }
    pgt_text_table_t *t = pgt_text_table_new(11, list_headers, list_right);
    int rc = t ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < bd->n; i++)
        rc = list_table_row(env, t, &bd->st[i]);
    if (rc != 0) {
        pgt_text_table_free(t);
        return CTL_EXIT_ERROR;
    }
    if (ctl_table_print(t, stdout) != 0)
        return CTL_EXIT_ERROR;
    printf("\nPeriods in %s; LIMIT includes grants (+).\n", env->timezone);
    return CTL_EXIT_OK;
}

static int cmd_list(ctl_env_t *env, int argc, char **argv)
{
    ctl_list_args_t a = {.format = CTL_FORMAT_TABLE};
    char what[512];
    if (ctl_parse_opts(env, argc, argv, list_opts, ctl_list_apply, &a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD " list", synopsis, what);
    if (a.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    board_t bd;
    if (board_load(env, &bd) != 0)
        return CTL_EXIT_ERROR;
    int rc = list_print(env, &bd, a.format);
    board_free(&bd);
    return rc;
}

/* ---- budget set ----------------------------------------------------------- */

enum {
    OPT_USER = 1,
    OPT_ROLE,
    OPT_TEAM,
    OPT_APPLICATION,
    OPT_DATABASE,
    OPT_DEFAULT,
    OPT_PERIOD,
    OPT_LIMIT,
    OPT_WARN,
    OPT_ACTION,
    OPT_PER_QUERY,
    OPT_MAX_ROWS,
    OPT_AMOUNT,
    OPT_UNTIL,
};

/* The subject options, in the order of PGT_BUDGET_SUBJECT_MAP. */
static const ctl_opt_t set_opts[] = {
    {"user", 'u', true, OPT_USER},
    {"role", 0, true, OPT_ROLE},
    {"team", 0, true, OPT_TEAM},
    {"application", 0, true, OPT_APPLICATION},
    {"database", 0, true, OPT_DATABASE},
    {"default", 0, false, OPT_DEFAULT},
    {"period", 'p', true, OPT_PERIOD},
    {"limit", 0, true, OPT_LIMIT},
    {"warn", 0, true, OPT_WARN},
    {"action", 0, true, OPT_ACTION},
    {"per-query", 0, true, OPT_PER_QUERY},
    {"max-rows", 0, true, OPT_MAX_ROWS},
    CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

static const ctl_opt_t grant_opts[] = {
    {"user", 'u', true, OPT_USER}, {"amount", 0, true, OPT_AMOUNT},
    {"until", 0, true, OPT_UNTIL}, CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

/* The command line of `budget set` and `budget grant`. */
typedef struct set_args {
    pgt_budget_t b;          /* the budget (amounts filled after the config is read) */
    const char *subject_opt; /* the subject option given, or NULL */
    const char *limit;       /* --limit (and grant's --amount) as given */
    const char *per_query;   /* --per-query as given, or NULL */
    const char *max_rows;    /* --max-rows as given, or NULL */
    const char *until;       /* grant's --until as given, or NULL */
    unsigned seen;           /* options given, a bit per id */
    bool have_period;        /* --period was given */
    bool help;               /* --help was given */
} set_args_t;

/* Returns the long name of option id in opts. */
static const char *opt_name(const ctl_opt_t *opts, int id)
{
    for (; opts->name; opts++)
        if (opts->id == id)
            return opts->name;
    return "?";
}

/* Reads --warn: "50,80", or "none". */
static int parse_warn(pgt_budget_t *b, const char *v, char *what, size_t len)
{
    b->nwarn = 0;
    if (strcmp(v, "none") == 0)
        return 0;
    for (const char *p = v; *p;) {
        char *end;
        long pct = strtol(p, &end, 10);
        bool ok = end != p && (*end == ',' || *end == '\0') && *p >= '0' && *p <= '9';
        if (!ok || pgt_budget_warn_add(b, pct >= 1 && pct <= 100 ? (int)pct : -1) != 0) {
            snprintf(what, len,
                     "bad --warn '%s': expected up to %d percents from 1 to 100 separated by "
                     "commas, such as 50,80, or none",
                     v, PGT_BUDGET_WARN_MAX);
            return -1;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* Takes a subject option; refuses a second one. */
static int take_subject(set_args_t *a, int id, const char *v, char *what, size_t len)
{
    const char *name = opt_name(set_opts, id);
    if (a->subject_opt) {
        snprintf(what, len, "--%s and --%s cannot be combined: a budget has one subject",
                 a->subject_opt, name);
        return -1;
    }
    char flag[32];
    snprintf(flag, sizeof(flag), "--%s", name);
    a->subject_opt = name;
    a->b.subject_type = (pgt_budget_subject_t)(id - OPT_USER);
    a->b.subject = (char *)(v ? v : "");
    return v ? ctl_check_name(flag, v, what, len) : 0;
}

static int set_apply(ctl_env_t *env, void *args, int id, const char *v, char *what, size_t len)
{
    set_args_t *a = args;
    if (id < 32 && (a->seen & (1u << id))) {
        snprintf(what, len, "--%s given twice", opt_name(set_opts, id));
        return -1;
    }
    a->seen |= id < 32 ? 1u << id : 0;
    switch (id) {
    case OPT_USER:
    case OPT_ROLE:
    case OPT_TEAM:
    case OPT_APPLICATION:
    case OPT_DATABASE:
    case OPT_DEFAULT:
        return take_subject(a, id, v, what, len);
    case OPT_PERIOD:
        a->have_period = true;
        if (pgt_period_parse(v, &a->b.period) == 0)
            return 0;
        snprintf(what, len, "bad --period '%s': expected day, week or month", v);
        return -1;
    case OPT_LIMIT:
        a->limit = v;
        return 0;
    case OPT_WARN:
        return parse_warn(&a->b, v, what, len);
    case OPT_ACTION:
        if (pgt_budget_action_parse(v, &a->b.action) == 0)
            return 0;
        snprintf(what, len, "bad --action '%s': expected block or warn", v);
        return -1;
    case OPT_PER_QUERY:
        a->per_query = v;
        return 0;
    case OPT_MAX_ROWS:
        a->max_rows = v;
        if (pgt_rows_parse(v, &a->b.max_rows) == 0 && a->b.max_rows > 0)
            return 0;
        snprintf(what, len,
                 "bad --max-rows '%s': expected a whole number of rows from 1 to 1e18, such as "
                 "5000000 or 1e9 (leave it out for none)",
                 v);
        return -1;
    case CTL_OPT_HELP:
        a->help = true;
        return 0;
    }
    return ctl_common_opt(env, id, v) ? 0 : -1;
}

/* Says on stderr when a change has no effect yet: a team budget for a team
 * without members, or a grant (b NULL) for a user that no budget covers. */
static void note_no_effect(const ctl_env_t *env, pgt_db_t *db, const pgt_budget_t *b,
                           const char *grantee)
{
    pgt_budget_config_t *cfg = NULL;
    char err[256];
    if (pgt_budget_config_load(db, &cfg, err, sizeof(err)) != 0)
        return;
    if (b && b->subject_type == PGT_BUDGET_SUBJECT_TEAM) {
        const pgt_budget_team_t *t = pgt_budget_team_find(cfg, b->subject);
        if (!t || t->nmembers == 0)
            fprintf(stderr,
                    "%s: note: team %s has no members yet; add them with 'pgtallyctl team add "
                    "%s USER...'\n",
                    env->prog, b->subject, b->subject);
    }
    bool covered = false;
    for (size_t i = 0; grantee && i < cfg->nbudgets; i++) {
        const pgt_budget_t *x = &cfg->budgets[i];
        covered |=
            pgt_budget_has_limit(x) &&
            (x->subject_type == PGT_BUDGET_SUBJECT_DEFAULT ||
             (x->subject_type == PGT_BUDGET_SUBJECT_USER && strcmp(x->subject, grantee) == 0));
    }
    if (grantee && !covered)
        fprintf(stderr,
                "%s: note: no user budget of %s and no default budget: the grant raises no limit "
                "until one is set\n",
                env->prog, grantee);
    pgt_budget_config_free(cfg);
}

/* Checks what set needs and reads its amounts (in the configured
 * currency, so after ctl_env_resolve). Returns 0, or -1 with what. */
static int set_finish(const ctl_env_t *env, set_args_t *a, char *what, size_t len)
{
    a->b.limit_micro = PGT_BUDGET_NO_LIMIT;
    if (!a->limit)
        a->b.nwarn = 0; /* nothing to warn of */
    if (a->limit && ctl_parse_amount(env, "--limit", a->limit, &a->b.limit_micro, what, len) != 0)
        return -1;
    if (!a->per_query)
        return 0;
    if (ctl_parse_amount(env, "--per-query", a->per_query, &a->b.per_query_micro, what, len) != 0)
        return -1;
    if (a->b.per_query_micro > 0)
        return 0;
    snprintf(what, len, "bad --per-query '%s': a cap must be more than 0 (leave it out for none)",
             a->per_query);
    return -1;
}

/* Checks that the required options are there. Returns 0, or -1 with what. */
static int set_required(const set_args_t *a, char *what, size_t len)
{
    if (!a->subject_opt)
        snprintf(what, len,
                 "which budget? give one of --user, --role, --team, --application, --database "
                 "or --default");
    else if (!a->have_period)
        snprintf(what, len, "--period is required: day, week or month");
    else if (!a->limit && !a->max_rows)
        snprintf(what, len,
                 "--limit is required, such as --limit 12.50 (or --max-rows alone, for a budget "
                 "of plan rows without a money limit)");
    else if (!a->limit && (a->seen & ((1u << OPT_WARN) | (1u << OPT_ACTION))))
        snprintf(what, len,
                 "--%s needs --limit: a budget of --max-rows alone has no money limit to warn of "
                 "or block at",
                 a->seen & (1u << OPT_WARN) ? "warn" : "action");
    else
        return 0;
    return -1;
}

/* Prints what set stored. */
static void set_report(const ctl_env_t *env, const pgt_budget_t *b, bool created)
{
    char subject[PGT_BUDGET_SUBJECT_MAX + 16], limit[PGT_MONEY_TEXT_MAX], warn[64];
    char cap[PGT_MONEY_TEXT_MAX], rows[32], resets[32];
    int64_t start, end;
    pgt_period_bounds(b->period, pgt_clock_us(), &start, &end);
    printf("Budget %lld %s\n", (long long)b->id, created ? "created" : "updated");
    printf("  subject    %s%s\n", subject_text(b, NULL, subject, sizeof(subject)),
           b->subject_type == PGT_BUDGET_SUBJECT_DEFAULT
               ? " (each user without a user budget of this period)"
               : "");
    printf("  period     %s (this one resets %s %s)\n", pgt_period_name(b->period),
           ctl_fmt_local(end, resets, sizeof(resets)), env->timezone);
    printf("  limit      %s\n",
           pgt_budget_has_limit(b)
               ? ctl_fmt_money(b->limit_micro, env->currency, limit, sizeof(limit))
               : "none (spend is counted, never refused nor warned of)");
    printf("  warn at    %s\n", warn_text(b, warn, sizeof(warn)));
    printf("  at 100%%    %s\n", b->action == PGT_BUDGET_ACTION_BLOCK
                                     ? "block: new statements are refused"
                                     : "warn: statements still run");
    printf("  per query  %s\n",
           b->per_query_micro >= 0
               ? ctl_fmt_money(b->per_query_micro, env->currency, cap, sizeof(cap))
               : "no cap");
    printf("  max rows   %s\n",
           b->max_rows >= 0 ? pgt_rows_format(b->max_rows, rows, sizeof(rows)) : "no limit");
}

static int cmd_set(ctl_env_t *env, int argc, char **argv)
{
    set_args_t a = {.b = {.per_query_micro = -1, .max_rows = -1}};
    if (pgt_budget_warn_add(&a.b, PGT_BUDGET_DEFAULT_WARN) != 0)
        return CTL_EXIT_ERROR;
    char what[512], err[512];
    if (ctl_parse_opts(env, argc, argv, set_opts, set_apply, &a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD " set", synopsis, what);
    if (a.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    if (set_required(&a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD " set", synopsis, what);
    if (ctl_env_resolve(env) != 0)
        return CTL_EXIT_ERROR;
    if (set_finish(env, &a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD " set", synopsis, what);
    pgt_db_t *db;
    if (ctl_open_store(env, CTL_STORE_CREATE, &db) != 0)
        return CTL_EXIT_ERROR;
    bool created = false;
    int rc = pgt_budget_set(db, &a.b, &a.b.id, &created, err, sizeof(err));
    if (rc == 0) {
        set_report(env, &a.b, created);
        fflush(stdout);
        note_no_effect(env, db, &a.b, NULL);
    } else {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
    }
    pgt_budget_store_close(db);
    return rc == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
}

/* ---- budget rm ------------------------------------------------------------ */

static int cmd_rm(ctl_env_t *env, int argc, char **argv)
{
    int64_t id;
    char err[512];
    int usage = ctl_parse_rm(env, argc, argv, "budget", synopsis, help, &id);
    if (usage != CTL_EXIT_OK || id == 0)
        return usage;
    pgt_db_t *db;
    if (ctl_open_store(env, CTL_STORE_CHANGE, &db) != 0)
        return CTL_EXIT_ERROR;
    pgt_budget_t b = {0};
    int rc = pgt_budget_rm(db, id, &b, err, sizeof(err));
    pgt_budget_store_close(db);
    if (rc == PGT_BUDGET_NOT_FOUND) {
        fprintf(stderr, "%s budget rm: %s; see 'pgtallyctl budget list'\n", env->prog, err);
        return CTL_EXIT_ERROR;
    }
    if (rc != 0) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
        return CTL_EXIT_ERROR;
    }
    char subject[PGT_BUDGET_SUBJECT_MAX + 16];
    printf("Budget %lld removed (%s, %s)\n", (long long)id,
           subject_text(&b, NULL, subject, sizeof(subject)), pgt_period_name(b.period));
    free(b.subject);
    return CTL_EXIT_OK;
}

/* ---- budget grant --------------------------------------------------------- */

static int grant_apply(ctl_env_t *env, void *args, int id, const char *v, char *what, size_t len)
{
    set_args_t *a = args;
    if (id < 32 && (a->seen & (1u << id))) {
        snprintf(what, len, "--%s given twice", opt_name(grant_opts, id));
        return -1;
    }
    a->seen |= id < 32 ? 1u << id : 0;
    switch (id) {
    case OPT_USER:
        a->b.subject = (char *)v;
        return ctl_check_name("--user", v, what, len);
    case OPT_AMOUNT:
        a->limit = v;
        return 0;
    case OPT_UNTIL:
        /* Checked now; read again once the config's time zone is set. */
        a->until = v;
        return ctl_check_time("--until", v, what, len);
    case CTL_OPT_HELP:
        a->help = true;
        return 0;
    }
    return ctl_common_opt(env, id, v) ? 0 : -1;
}

/* Reads --amount and --until after the config. Returns 0, or -1 with what. */
static int grant_finish(const ctl_env_t *env, set_args_t *a, int64_t now, int64_t *until,
                        char *what, size_t len)
{
    if (ctl_parse_amount(env, "--amount", a->limit, &a->b.limit_micro, what, len) != 0)
        return -1;
    if (a->b.limit_micro == 0) {
        snprintf(what, len, "bad --amount '%s': a grant must be more than 0", a->limit);
        return -1;
    }
    *until = -1;
    if (!a->until)
        return 0;
    if (ctl_parse_time(a->until, now, until) != 0 || *until <= now) {
        snprintf(what, len, "bad --until '%s': it must be in the future", a->until);
        return -1;
    }
    return 0;
}

/* Prints what grant stored. */
static void grant_report(const ctl_env_t *env, int64_t id, const char *user, int64_t amount_micro,
                         int64_t until)
{
    char amount[PGT_MONEY_TEXT_MAX], when[32];
    printf("Grant %lld: %s more for %s, ", (long long)id,
           ctl_fmt_money(amount_micro, env->currency, amount, sizeof(amount)), user);
    if (until >= 0)
        printf("until %s %s\n", ctl_fmt_local(until, when, sizeof(when)), env->timezone);
    else
        printf("until the end of the current period of each of its budgets\n");
    fflush(stdout);
}

static int cmd_grant(ctl_env_t *env, int argc, char **argv)
{
    set_args_t a = {0};
    char what[512], err[512];
    if (ctl_parse_opts(env, argc, argv, grant_opts, grant_apply, &a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD " grant", synopsis, what);
    if (a.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    if (!a.b.subject || !a.limit)
        return ctl_usage_error(env, CMD " grant", synopsis,
                               !a.b.subject ? "--user is required: who gets the grant"
                                            : "--amount is required, such as --amount 5");
    if (ctl_env_resolve(env) != 0)
        return CTL_EXIT_ERROR;
    int64_t now = pgt_clock_us(), until, id;
    if (grant_finish(env, &a, now, &until, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD " grant", synopsis, what);
    pgt_db_t *db;
    if (ctl_open_store(env, CTL_STORE_CREATE, &db) != 0)
        return CTL_EXIT_ERROR;
    int rc =
        pgt_budget_grant_add(db, a.b.subject, a.b.limit_micro, now, until, &id, err, sizeof(err));
    if (rc == 0) {
        grant_report(env, id, a.b.subject, a.b.limit_micro, until);
        note_no_effect(env, db, NULL, a.b.subject);
    } else {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
    }
    pgt_budget_store_close(db);
    return rc == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
}

/* ---- Dispatch ------------------------------------------------------------- */

static const ctl_command_t subcommands[] = {
    {"set", cmd_set},
    {"list", cmd_list},
    {"rm", cmd_rm},
    {"grant", cmd_grant},
};

int ctl_cmd_budget(ctl_env_t *env, int argc, char **argv)
{
    return ctl_dispatch(env, argc, argv, subcommands, sizeof(subcommands) / sizeof(subcommands[0]),
                        synopsis, help);
}
