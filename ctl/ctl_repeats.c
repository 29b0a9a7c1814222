/* pgtallyctl repeats: work done twice. The SELECTs of one day that ran with
 * the same shape and the same constants (queries.constants, a hash: the
 * constants themselves are not in the ledger) more than --min-runs times,
 * by more than one user or application, most money spent on repeats first:
 * results a cache or a materialized view would have served. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "pgtally/ledger.h"
#include "pgtally/money.h"
#include "pgtally/period.h"

#define CMD "repeats"
#define MIN_RUNS_DEFAULT 3
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
    "  -n, --min-runs N     list pairs run more than N times (default 3)\n"
    "  -f, --format FORMAT  table (default), json or csv\n"
    "  -c, --config FILE    pgtally.ini to read the ledger path and currency from\n"
    "      --ledger PATH    the ledger: a file, or a postgresql:// URI (overrides the config)\n";

enum { OPT_DATE = 1, OPT_MIN_RUNS, OPT_FORMAT };

static const ctl_opt_t opts[] = {
    {"date", 'd', true, OPT_DATE},
    {"min-runs", 'n', true, OPT_MIN_RUNS},
    {"format", 'f', true, OPT_FORMAT},
    CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

typedef struct args {
    int y, m, d;         /* the date; y = 0: today */
    int64_t min_runs;    /* more runs than this */
    ctl_format_t format; /* output format */
    bool help;           /* --help was given */
} args_t;

static int apply(ctl_env_t *env, void *args, int id, const char *v, char *what, size_t len)
{
    args_t *a = args;
    char *end;
    switch (id) {
    case OPT_DATE:
        return ctl_date_opt(v, &a->y, &a->m, &a->d, what, len);
    case OPT_MIN_RUNS:
        a->min_runs = strtoll(v, &end, 10);
        if (v[0] >= '0' && v[0] <= '9' && *end == '\0' && a->min_runs >= 1 &&
            a->min_runs <= 1000000000)
            return 0;
        snprintf(what, len, "bad --min-runs '%s': expected a whole number from 1", v);
        return -1;
    case OPT_FORMAT:
        return ctl_format_opt(v, &a->format, what, len);
    case CTL_OPT_HELP:
        a->help = true;
        return 0;
    }
    return ctl_common_opt(env, id, v) ? 0 : -1;
}

/* What the row callback writes to. */
typedef struct out {
    ctl_env_t *env;          /* currency */
    ctl_format_t format;     /* which writer */
    pgt_text_table_t *table; /* rows, for table */
    json_t *rows;            /* rows, for json */
    int64_t n;               /* rows seen */
} out_t;

static const char *const headers[] = {"SHAPE", "RUNS",  "USERS",  "APPS",
                                      "COST",  "SAVED", "RAN IT", "STATEMENT"};
static const bool right8[] = {false, true, true, true, true, true, false, false};
static const char *const csv_headers[] = {"fingerprint",  "constants", "runs",  "users",
                                          "applications", "cost",      "saved", "currency",
                                          "who",          "normalized"};

static int row_cb(const pgt_repeat_row_t *r, void *arg)
{
    out_t *o = arg;
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
    int64_t from, to, at = a->y ? ctl_date_noon(a->y, a->m, a->d) : pgt_clock_us();
    pgt_period_bounds(PGT_PERIOD_DAY, at, &from, &to);
    out_t o = {.env = env, .format = a->format};
    if (a->format == CTL_FORMAT_TABLE)
        o.table = pgt_text_table_new(8, headers, right8);
    else if (a->format == CTL_FORMAT_JSON)
        o.rows = json_array();
    else
        ctl_csv_row(stdout, csv_headers, sizeof(csv_headers) / sizeof(csv_headers[0]));
    char err[512] = "out of memory";
    int rc = -1;
    if (a->format == CTL_FORMAT_CSV || o.table || o.rows)
        rc = pgt_ledger_repeats(rd, from, to, a->min_runs, LIMIT, row_cb, &o, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
        pgt_text_table_free(o.table);
        json_decref(o.rows);
        return CTL_EXIT_ERROR;
    }
    char day[16];
    time_t t = (time_t)(from / 1000000);
    struct tm tm;
    strftime(day, sizeof(day), "%Y-%m-%d", localtime_r(&t, &tm));
    if (a->format == CTL_FORMAT_JSON) {
        json_t *root = json_pack("{sssIssso}", "date", day, "min_runs", (json_int_t)a->min_runs,
                                 "currency", env->currency, "repeats", o.rows);
        if (!root) {
            fprintf(stderr, "%s: out of memory\n", env->prog);
            return CTL_EXIT_ERROR;
        }
        return ctl_json_print(root, stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
    }
    if (a->format == CTL_FORMAT_CSV)
        return CTL_EXIT_OK;
    printf("Work done twice, %s (%s): the same statement with the same constants run more "
           "than %lld times by several users or applications\n\n",
           day, env->timezone, (long long)a->min_runs);
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
    args_t a = {.min_runs = MIN_RUNS_DEFAULT};
    char what[512];
    if (ctl_parse_opts(env, argc, argv, opts, apply, &a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD, synopsis, what);
    if (a.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    return ctl_with_reader(env, run, &a);
}
