/* pgtallyctl regressions: regressions per release. The shapes whose mean
 * cost under the newest release they ran under (the release, git_sha or
 * version tag of their sqlcommenter comment, or dbt's invocation_id or
 * dbt_version) is at least twice the mean under the release before, over
 * the day and the six days before it, largest ratio first
 * (pgt_ledger_regressions, which the daily report reads too). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "pgtally/config.h"
#include "pgtally/ledger.h"
#include "pgtally/money.h"
#include "pgtally/period.h"

#define CMD "regressions"
#define LIMIT 100

static const char synopsis[] =
    "usage: pgtallyctl [-c FILE | --ledger PATH] regressions [--date YYYY-MM-DD]\n"
    "         [--format table|json|csv]\n";

static const char help[] =
    "\n"
    "Lists the statement shapes whose mean cost under the newest release they ran\n"
    "under is at least twice the mean under the release before, over the day and the\n"
    "six days before it, with both releases, their means and their runs. A statement's\n"
    "release is the first of its tags release, git_sha, version (sqlcommenter), then\n"
    "invocation_id and dbt_version (dbt); releases are ordered by the first time each\n"
    "ran the shape. Only shapes whose new mean is above the config's [report]\n"
    "regression_min_cost (default 0.0001) are listed; largest ratio first, at most 100.\n"
    "\n"
    "  -d, --date DATE      the last day, YYYY-MM-DD, in the config's timezone (default today)\n"
    "  -f, --format FORMAT  table (default), json or csv\n"
    "  -c, --config FILE    pgtally.ini to read the ledger path, currency and\n"
    "                       regression_min_cost from\n"
    "      --ledger PATH    the ledger: a file, or a postgresql:// URI (overrides the config)\n";

static const ctl_opt_t opts[] = {
    CTL_DATE_OPT,
    CTL_FORMAT_OPT,
    CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

static const char *const headers[] = {"SHAPE",  "RATIO",       "RELEASE",     "MEAN",     "RUNS",
                                      "BEFORE", "MEAN BEFORE", "RUNS BEFORE", "STATEMENT"};
static const bool right9[] = {false, true, false, true, true, false, true, true, false};
static const char *const csv_headers[] = {
    "fingerprint",        "ratio",     "release",          "first_seen",
    "statements",         "mean_cost", "previous_release", "previous_statements",
    "previous_mean_cost", "currency",  "normalized"};

static json_t *row_json(const pgt_regression_row_t *r, const char *fp, const char *first)
{
    char mean[PGT_MONEY_TEXT_MAX], prev[PGT_MONEY_TEXT_MAX];
    return json_pack("{sssfsosssIsIsssosIsIss}", "fingerprint", fp, "ratio",
                     (double)llround(r->ratio * 100) / 100, "release", pgt_text_json(r->release),
                     "first_seen", first, "statements", (json_int_t)r->statements,
                     "mean_cost_micro", (json_int_t)r->mean_micro, "mean_cost",
                     pgt_money_format(r->mean_micro, NULL, mean, sizeof(mean)), "previous_release",
                     pgt_text_json(r->prev_release), "previous_statements",
                     (json_int_t)r->prev_statements, "previous_mean_cost_micro",
                     (json_int_t)r->prev_mean_micro, "previous_mean_cost",
                     pgt_money_format(r->prev_mean_micro, NULL, prev, sizeof(prev)));
}

static int row_cb(const pgt_regression_row_t *r, void *arg)
{
    ctl_out_t *o = arg;
    char fp[24], ratio[32], first[48], n[24], pn[24], mean[PGT_MONEY_TEXT_MAX],
        prev[PGT_MONEY_TEXT_MAX];
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)r->fingerprint);
    snprintf(ratio, sizeof(ratio), "%.2f", r->ratio);
    snprintf(n, sizeof(n), "%lld", (long long)r->statements);
    snprintf(pn, sizeof(pn), "%lld", (long long)r->prev_statements);
    ctl_fmt_iso(r->first_seen_us, false, first, sizeof(first));
    o->n++;
    if (o->format == CTL_FORMAT_JSON) {
        json_t *j = row_json(r, fp, first);
        if (j && json_object_set_new(j, "normalized", pgt_text_json(r->normalized)) != 0) {
            json_decref(j);
            j = NULL;
        }
        return j && json_array_append_new(o->rows, j) == 0 ? 0 : -1;
    }
    if (o->format == CTL_FORMAT_CSV) {
        const char *cells[] = {fp,
                               ratio,
                               r->release ? r->release : "",
                               first,
                               n,
                               pgt_money_format(r->mean_micro, NULL, mean, sizeof(mean)),
                               r->prev_release ? r->prev_release : "",
                               pn,
                               pgt_money_format(r->prev_mean_micro, NULL, prev, sizeof(prev)),
                               o->env->currency,
                               r->normalized ? r->normalized : ""};
        ctl_csv_row(stdout, cells, sizeof(cells) / sizeof(cells[0]));
        return 0;
    }
    strcat(ratio, "x");
    const char *cells[] = {
        fp,
        ratio,
        r->release ? r->release : "",
        pgt_money_format_short(r->mean_micro, o->env->currency, mean, sizeof(mean)),
        n,
        r->prev_release ? r->prev_release : "",
        pgt_money_format_short(r->prev_mean_micro, o->env->currency, prev, sizeof(prev)),
        pn,
        r->normalized ? r->normalized : "",
    };
    return pgt_text_table_row(o->table, cells, 60);
}

/* Prints the table of o after its title. Returns an exit code. */
static int print_table(const ctl_env_t *env, ctl_out_t *o, const char *since, const char *day,
                       int64_t min_micro)
{
    char min[PGT_MONEY_TEXT_MAX];
    printf("Regressions per release, %s to %s (%s): shapes at least twice as dear under their "
           "newest release, mean above %s\n\n",
           since, day, env->timezone, ctl_fmt_money(min_micro, env->currency, min, sizeof(min)));
    if (!o->n) {
        pgt_text_table_free(o->table);
        printf("None.\n");
        return CTL_EXIT_OK;
    }
    if (ctl_table_print(o->table, stdout) != 0)
        return CTL_EXIT_ERROR;
    printf("\nRATIO: the mean cost under RELEASE over the mean under BEFORE, the release that "
           "ran the shape before it.\n");
    return CTL_EXIT_OK;
}

static int run(ctl_env_t *env, const void *args, pgt_ledger_reader_t *rd)
{
    const ctl_day_args_t *a = args;
    int64_t from, to;
    char day[16], since[32], min[PGT_MONEY_TEXT_MAX];
    ctl_day(a->y, a->m, a->d, &from, &to, day, sizeof(day));
    from = pgt_local_day_start_us(pgt_local_day(from) - (PGT_LEDGER_REGRESSION_DAYS - 1));
    ctl_fmt_local(from, since, sizeof(since));
    since[10] = '\0'; /* the date of "2024-05-01 00:00:00" */
    int64_t min_micro =
        env->config ? env->config->report_regression_min_micro : PGT_CONFIG_REGRESSION_MIN_MICRO;
    ctl_out_t o;
    char err[512] = "out of memory";
    if (ctl_out_open(&o, env, a->list.format, 9, headers, right9, csv_headers,
                     sizeof(csv_headers) / sizeof(csv_headers[0])) != 0 ||
        pgt_ledger_regressions(rd, from, to, min_micro, LIMIT, row_cb, &o, err, sizeof(err)) != 0)
        return ctl_out_fail(&o, err);
    if (a->list.format == CTL_FORMAT_JSON) {
        json_t *root = json_pack("{sssssIsIssssso}", "date", day, "since", since, "days",
                                 (json_int_t)PGT_LEDGER_REGRESSION_DAYS, "min_mean_cost_micro",
                                 (json_int_t)min_micro, "min_mean_cost",
                                 pgt_money_format(min_micro, NULL, min, sizeof(min)), "currency",
                                 env->currency, "regressions", o.rows);
        return ctl_json_print(root, stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
    }
    if (a->list.format == CTL_FORMAT_CSV)
        return CTL_EXIT_OK;
    return print_table(env, &o, since, day, min_micro);
}

int ctl_cmd_regressions(ctl_env_t *env, int argc, char **argv)
{
    ctl_day_args_t a = {0};
    char what[512];
    if (ctl_parse_opts(env, argc, argv, opts, ctl_day_apply, &a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD, synopsis, what);
    if (a.list.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    return ctl_with_reader(env, run, &a);
}
