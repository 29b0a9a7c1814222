/* pgtallyctl repeats: work done twice. The SELECTs of one day that ran with
 * the same shape and the same constants (queries.constants, a hash: the
 * constants themselves are not in the ledger) more than --min-runs times,
 * by more than one user or application, most money spent on repeats first:
 * results a cache or a materialized view would have served. */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "pgtally/config.h"
#include "pgtally/ledger.h"
#include "pgtally/money.h"
#include "pgtally/period.h"

#define CMD "repeats"
#define LIMIT 100

static const char synopsis[] =
    "usage: pgtallyctl [-c FILE | --ledger PATH] repeats [--date YYYY-MM-DD]\n"
    "         [--min-runs N] [--format table|json|csv]\n";

static const char help[] =
    "\n"
    "Lists the SELECTs of one day that ran with the same shape and the same constants\n"
    "(the same literals and parameters, compared by hash) more than --min-runs times,\n"
    "by more than one user or application: the runs, who ran them, what they cost, and\n"
    "what every run but the cheapest cost, which a cached or materialized result would\n"
    "have saved. Most saved first, at most 100.\n"
    "\n"
    "  -d, --date DATE      the day, YYYY-MM-DD, in the config's timezone (default today)\n"
    "  -n, --min-runs N     list pairs run more than N times (default: the config's [report]\n"
    "                       duplicate_min_runs, 3)\n"
    "  -f, --format FORMAT  table (default), json or csv\n"
    "  -c, --config FILE    pgtally.ini to read the ledger path and currency from\n"
    "      --ledger PATH    the ledger: a file, or a postgresql:// URI (overrides the config)\n";

enum { OPT_MIN_RUNS = 1 };

static const ctl_opt_t opts[] = {
    CTL_DATE_OPT,        {"min-runs", 'n', true, OPT_MIN_RUNS}, CTL_FORMAT_OPT, CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

typedef struct args {
    ctl_day_args_t day; /* --date, --format, --help */
    int64_t min_runs;   /* more runs than this; 0: the config's duplicate_min_runs */
} args_t;

static int apply(ctl_env_t *env, void *args, int id, const char *v, char *what, size_t len)
{
    args_t *a = args;
    char *end;
    if (id != OPT_MIN_RUNS)
        return ctl_day_apply(env, &a->day, id, v, what, len);
    a->min_runs = strtoll(v, &end, 10);
    if (v[0] >= '0' && v[0] <= '9' && *end == '\0' && a->min_runs >= 1 && a->min_runs <= 1000000000)
        return 0;
    snprintf(what, len, "bad --min-runs '%s': expected a whole number from 1", v);
    return -1;
}

static const char *const headers[] = {"SHAPE", "RUNS",  "USERS",  "APPS",
                                      "COST",  "SAVED", "RAN IT", "STATEMENT"};
static const bool right8[] = {false, true, true, true, true, true, false, false};
static const char *const csv_headers[] = {"fingerprint",  "constants", "runs",  "users",
                                          "applications", "cost",      "saved", "currency",
                                          "who",          "normalized"};

static int row_cb(const pgt_repeat_row_t *r, void *arg)
{
    ctl_out_t *o = arg;
    char fp[24], consts[24], runs[24], users[24], apps[24], cost[PGT_MONEY_TEXT_MAX],
        saved[PGT_MONEY_TEXT_MAX];
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)r->fingerprint);
    snprintf(consts, sizeof(consts), "%016llx", (unsigned long long)r->constants);
    snprintf(runs, sizeof(runs), "%lld", (long long)r->runs);
    snprintf(users, sizeof(users), "%lld", (long long)r->users);
    snprintf(apps, sizeof(apps), "%lld", (long long)r->applications);
    o->n++;
    if (o->format == CTL_FORMAT_JSON) {
        json_t *j =
            json_pack("{sssssIsIsIsIsssIsssoso}", "fingerprint", fp, "constants", consts, "runs",
                      (json_int_t)r->runs, "users", (json_int_t)r->users, "applications",
                      (json_int_t)r->applications, "cost_micro", (json_int_t)r->cost_micro, "cost",
                      pgt_money_format(r->cost_micro, NULL, cost, sizeof(cost)), "saved_micro",
                      (json_int_t)r->repeat_micro, "saved",
                      pgt_money_format(r->repeat_micro, NULL, saved, sizeof(saved)), "who",
                      pgt_text_json(r->who), "normalized", pgt_text_json(r->normalized));
        return j && json_array_append_new(o->rows, j) == 0 ? 0 : -1;
    }
    if (o->format == CTL_FORMAT_CSV) {
        const char *cells[] = {fp,
                               consts,
                               runs,
                               users,
                               apps,
                               pgt_money_format(r->cost_micro, NULL, cost, sizeof(cost)),
                               pgt_money_format(r->repeat_micro, NULL, saved, sizeof(saved)),
                               o->env->currency,
                               r->who ? r->who : "",
                               r->normalized ? r->normalized : ""};
        ctl_csv_row(stdout, cells, sizeof(cells) / sizeof(cells[0]));
        return 0;
    }
    const char *cells[] = {
        fp,
        runs,
        users,
        apps,
        pgt_money_format_short(r->cost_micro, o->env->currency, cost, sizeof(cost)),
        pgt_money_format_short(r->repeat_micro, o->env->currency, saved, sizeof(saved)),
        r->who ? r->who : "",
        r->normalized ? r->normalized : "",
    };
    return pgt_text_table_row(o->table, cells, 60);
}

static int run(ctl_env_t *env, const void *args, pgt_ledger_reader_t *rd)
{
    const args_t *a = args;
    int64_t from, to;
    char day[16];
    ctl_day(a->day.y, a->day.m, a->day.d, &from, &to, day, sizeof(day));
    int64_t min_runs = a->min_runs   ? a->min_runs
                       : env->config ? env->config->report_duplicate_min_runs
                                     : PGT_CONFIG_DUPLICATE_MIN_RUNS;
    ctl_out_t o;
    char err[512] = "out of memory";
    if (ctl_out_open(&o, env, a->day.list.format, 8, headers, right8, csv_headers,
                     sizeof(csv_headers) / sizeof(csv_headers[0])) != 0 ||
        pgt_ledger_repeats(rd, from, to, min_runs, LIMIT, row_cb, &o, err, sizeof(err)) != 0)
        return ctl_out_fail(&o, err);
    if (a->day.list.format == CTL_FORMAT_JSON) {
        json_t *root = json_pack("{sssIssso}", "date", day, "min_runs", (json_int_t)min_runs,
                                 "currency", env->currency, "repeats", o.rows);
        if (!root) {
            fprintf(stderr, "%s: out of memory\n", env->prog);
            return CTL_EXIT_ERROR;
        }
        return ctl_json_print(root, stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
    }
    if (a->day.list.format == CTL_FORMAT_CSV)
        return CTL_EXIT_OK;
    printf("Work done twice, %s (%s): the same statement with the same constants run more "
           "than %lld times by several users or applications\n\n",
           day, env->timezone, (long long)min_runs);
    if (!o.n) {
        pgt_text_table_free(o.table);
        printf("None.\n");
        return CTL_EXIT_OK;
    }
    if (ctl_table_print(o.table, stdout) != 0)
        return CTL_EXIT_ERROR;
    printf("\nSAVED: what every run but the cheapest cost; a cached or materialized result "
           "would have saved it.\n");
    return CTL_EXIT_OK;
}

int ctl_cmd_repeats(ctl_env_t *env, int argc, char **argv)
{
    args_t a = {0};
    char what[512];
    if (ctl_parse_opts(env, argc, argv, opts, apply, &a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD, synopsis, what);
    if (a.day.list.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    return ctl_with_reader(env, run, &a);
}
