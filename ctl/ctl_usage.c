/* pgtallyctl usage: spend per user, database, application or tag over a
 * day, week or month of the configured time zone, most expensive first,
 * with a total, and then each budget's spend in its current period. By
 * schema or table, the statements that read known relations, each one's
 * compute and cost split across them by their shares. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "pgtally/ledger.h"
#include "pgtally/period.h"
#include "pgtally/pricing.h"

#define CMD "usage"
#define TAG_PREFIX "tag:"
#define TAG_MAX 200

static const char synopsis[] =
    "usage: pgtallyctl [-c FILE | --ledger PATH] usage\n"
    "         [--by user|database|application|schema|table|tag:NAME]\n"
    "         [--period day|week|month] [--date YYYY-MM-DD] [--format table|json|csv]\n";

static const char help[] =
    "\n"
    "Sums statements, compute, rows, bytes and cost per group over the period that\n"
    "holds --date, most expensive first; then shows each budget's spend in its\n"
    "current period. Periods are in the config's timezone (without a config, in\n"
    "$TZ, else UTC); weeks start on Monday.\n"
    "\n"
    "  -b, --by GROUP       user (default), database, application, or tag:NAME for the\n"
    "                       value of a tag, from sqlcommenter or dbt comments (statements\n"
    "                       without it: (none)); schema or table for the data statements\n"
    "                       read (queries, compute and cost, each statement's split across\n"
    "                       its tables by their shares of its plan; a name the statement\n"
    "                       did not qualify is under (unqualified))\n"
    "  -p, --period PERIOD  day (default), week or month\n"
    "  -d, --date DATE      a day of the period, YYYY-MM-DD (default today)\n"
    "  -f, --format FORMAT  table (default, with a total line and a budgets section),\n"
    "                       json (with a total and \"budgets\") or csv (one row per group)\n"
    "  -c, --config FILE    pgtally.ini to read the ledger path and currency from\n"
    "      --ledger PATH    the ledger: a file, or a postgresql:// URI (overrides the config)\n";

enum { OPT_BY = 1, OPT_PERIOD, OPT_DATE, OPT_FORMAT };

static const ctl_opt_t opts[] = {
    {"by", 'b', true, OPT_BY},
    {"period", 'p', true, OPT_PERIOD},
    {"date", 'd', true, OPT_DATE},
    {"format", 'f', true, OPT_FORMAT},
    CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

/* The command line of `usage`, parsed. */
typedef struct args {
    pgt_usage_by_t by;   /* grouping */
    const char *tag;     /* tag name when by = tag */
    const char *by_text; /* --by as given, for titles ("tag:team") */
    pgt_period_t period; /* day, week or month */
    int y, m, d;         /* the date; y = 0: today */
    ctl_format_t format; /* output format */
    bool help;           /* --help was given */
} args_t;

static int parse_by(args_t *a, const char *v, char *what, size_t len)
{
    a->by_text = v;
    if (strncmp(v, TAG_PREFIX, strlen(TAG_PREFIX)) == 0) {
        a->by = PGT_USAGE_BY_TAG;
        a->tag = v + strlen(TAG_PREFIX);
        if (a->tag[0] && strlen(a->tag) <= TAG_MAX && !strpbrk(a->tag, "\"\\"))
            return 0;
    } else if (pgt_usage_by_parse(v, &a->by) == 0 && a->by != PGT_USAGE_BY_TAG) {
        return 0;
    }
    snprintf(what, len,
             "bad --by '%s': expected user, database, application, schema, table or tag:NAME", v);
    return -1;
}

/* Applies one option; returns 0, or -1 with what is wrong in what. */
static int apply(ctl_env_t *env, void *args, int id, const char *v, char *what, size_t len)
{
    args_t *a = args;
    switch (id) {
    case OPT_BY:
        return parse_by(a, v, what, len);
    case OPT_PERIOD:
        if (pgt_period_parse(v, &a->period) == 0)
            return 0;
        snprintf(what, len, "bad --period '%s': expected day, week or month", v);
        return -1;
    case OPT_DATE:
        return ctl_date_opt(v, &a->y, &a->m, &a->d, what, len);
    case OPT_FORMAT:
        return ctl_format_opt(v, &a->format, what, len);
    case CTL_OPT_HELP:
        a->help = true;
        return 0;
    }
    return ctl_common_opt(env, id, v) ? 0 : -1;
}

/* Returns 0, or -1 with what is wrong in what. */
static int parse(ctl_env_t *env, int argc, char **argv, args_t *a, char *what, size_t len)
{
    *a = (args_t){.by = PGT_USAGE_BY_USER, .by_text = "user"};
    return ctl_parse_opts(env, argc, argv, opts, apply, a, what, len);
}

/* What the group callback needs, and the running total. */
typedef struct out {
    ctl_env_t *env;          /* currency, time zone, ledger */
    ctl_format_t format;     /* which writer */
    bool rel;                /* by schema or table: queries, compute and cost only */
    pgt_text_table_t *table; /* rows, for table */
    json_t *groups;          /* groups, for json */
    pgt_usage_row_t total;   /* sums over every group */
    int failed;              /* out of memory */
} out_t;

static const bool table_right[] = {false, true, true, true, true, true};
static const bool rel_right[] = {false, true, true, true};

/* The label of a schema or table: "(unqualified)" for the schema "". */
static const char *rel_label(const pgt_usage_row_t *r, char *buf, size_t len)
{
    const char *schema = r->schema && r->schema[0] ? r->schema : "(unqualified)";
    if (r->relation)
        snprintf(buf, len, "%s.%s", schema, r->relation);
    else
        snprintf(buf, len, "%s", schema);
    return buf;
}

static int table_row(out_t *o, const pgt_usage_row_t *r, const char *group)
{
    if (o->rel) {
        char n[24], compute[32], cost[PGT_MONEY_TEXT_MAX];
        snprintf(n, sizeof(n), "%lld", (long long)r->statements);
        const char *cells[] = {
            group,
            n,
            pgt_fmt_seconds(r->compute_s, compute, sizeof(compute)),
            pgt_money_format_short(r->cost_micro, o->env->currency, cost, sizeof(cost)),
        };
        return pgt_text_table_row(o->table, cells, 60);
    }
    char n[24], compute[32], rows[24], bytes[32], cost[PGT_MONEY_TEXT_MAX];
    snprintf(n, sizeof(n), "%lld", (long long)r->statements);
    snprintf(rows, sizeof(rows), "%lld", (long long)r->rows);
    const char *cells[] = {
        group,
        n,
        pgt_fmt_seconds(r->compute_s, compute, sizeof(compute)),
        rows,
        ctl_fmt_bytes(r->bytes_out, bytes, sizeof(bytes)),
        pgt_money_format_short(r->cost_micro, o->env->currency, cost, sizeof(cost)),
    };
    return pgt_text_table_row(o->table, cells, 40);
}

/* One schema or table, or their total (with_group false: no names). */
static json_t *rel_json(const pgt_usage_row_t *r, bool with_group)
{
    char cost[PGT_MONEY_TEXT_MAX], label[300];
    json_t *o = json_pack("{sIsfsIss}", "queries", (json_int_t)r->statements, "compute_s",
                          r->compute_s, "cost_micro", (json_int_t)r->cost_micro, "cost",
                          pgt_money_format(r->cost_micro, NULL, cost, sizeof(cost)));
    if (o && with_group &&
        (json_object_set_new(o, "group", pgt_text_json(rel_label(r, label, sizeof(label)))) ||
         json_object_set_new(o, "schema", pgt_text_json(r->schema)) ||
         (r->relation && json_object_set_new(o, "table", pgt_text_json(r->relation))))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* One group, or the total (with_group false: no "group" member). */
static json_t *group_json(const pgt_usage_row_t *r, bool with_group, bool rel)
{
    char cost[PGT_MONEY_TEXT_MAX];
    if (rel)
        return rel_json(r, with_group);
    json_t *o = json_object();
    if (o && with_group && json_object_set_new(o, "group", pgt_text_json(r->group)) != 0) {
        json_decref(o);
        return NULL;
    }
    json_t *sums = json_pack("{sIsfsIsIsIss}", "statements", (json_int_t)r->statements, "compute_s",
                             r->compute_s, "rows", (json_int_t)r->rows, "bytes_out",
                             (json_int_t)r->bytes_out, "cost_micro", (json_int_t)r->cost_micro,
                             "cost", pgt_money_format(r->cost_micro, NULL, cost, sizeof(cost)));
    int rc = o && sums ? json_object_update(o, sums) : -1;
    json_decref(sums);
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static const char *const csv_headers[] = {"group",     "statements", "compute_s", "rows",
                                          "bytes_out", "cost",       "currency"};

static const char *const csv_rel_headers[] = {"group",     "schema", "table",   "queries",
                                              "compute_s", "cost",   "currency"};

static void csv_row(const out_t *o, const pgt_usage_row_t *r)
{
    if (o->rel) {
        char n[24], compute[32], cost[PGT_MONEY_TEXT_MAX], label[300];
        snprintf(n, sizeof(n), "%lld", (long long)r->statements);
        snprintf(compute, sizeof(compute), "%.6f", r->compute_s);
        const char *cells[] = {rel_label(r, label, sizeof(label)),
                               r->schema,
                               r->relation,
                               n,
                               compute,
                               pgt_money_format(r->cost_micro, NULL, cost, sizeof(cost)),
                               o->env->currency};
        ctl_csv_row(stdout, cells, sizeof(cells) / sizeof(cells[0]));
        return;
    }
    char n[24], compute[32], rows[24], bytes[24], cost[PGT_MONEY_TEXT_MAX];
    snprintf(n, sizeof(n), "%lld", (long long)r->statements);
    snprintf(compute, sizeof(compute), "%.6f", r->compute_s);
    snprintf(rows, sizeof(rows), "%lld", (long long)r->rows);
    snprintf(bytes, sizeof(bytes), "%lld", (long long)r->bytes_out);
    const char *cells[] = {
        r->group,        n,
        compute,         rows,
        bytes,           pgt_money_format(r->cost_micro, NULL, cost, sizeof(cost)),
        o->env->currency};
    ctl_csv_row(stdout, cells, sizeof(cells) / sizeof(cells[0]));
}

static int group_cb(const pgt_usage_row_t *r, void *arg)
{
    out_t *o = arg;
    char label[300];
    /* By schema or table, the reader gives the total itself: a statement
     * that read two tables is in two groups. */
    if (!o->rel) {
        o->total.statements += r->statements;
        o->total.compute_s += r->compute_s;
        o->total.rows += r->rows;
        o->total.bytes_out += r->bytes_out;
        o->total.cost_micro += r->cost_micro;
    }
    if (o->format == CTL_FORMAT_CSV) {
        csv_row(o, r);
    } else if (o->format == CTL_FORMAT_JSON) {
        json_t *j = group_json(r, true, o->rel);
        if (!j || json_array_append_new(o->groups, j) != 0)
            o->failed = 1;
    } else if (table_row(o, r,
                         o->rel     ? rel_label(r, label, sizeof(label))
                         : r->group ? r->group
                                    : "(none)") != 0) {
        o->failed = 1;
    }
    return o->failed;
}

/* Writes "2024-05-01", "2024-04-29 to 2024-05-05" or "2024-05" for the
 * local period [from_us, to_us). */
static void period_label(pgt_period_t p, int64_t from_us, int64_t to_us, char *buf, size_t len)
{
    time_t from = (time_t)(from_us / 1000000), last = (time_t)(to_us / 1000000) - 1;
    struct tm a, b;
    localtime_r(&from, &a);
    localtime_r(&last, &b);
    char x[16], y[16];
    strftime(x, sizeof(x), p == PGT_PERIOD_MONTH ? "%Y-%m" : "%Y-%m-%d", &a);
    strftime(y, sizeof(y), "%Y-%m-%d", &b);
    snprintf(buf, len, "%s%s%s", x, p == PGT_PERIOD_WEEK ? " to " : "",
             p == PGT_PERIOD_WEEK ? y : "");
}

/* Prints the JSON document: the period, the groups and the total. */
static int print_json(out_t *o, const args_t *a, const char *label, int64_t from, int64_t to)
{
    char f[48], t[48];
    json_t *budgets = NULL;
    if (ctl_budget_section(o->env, true, &budgets) != 0) {
        json_decref(o->groups);
        o->groups = NULL;
        return CTL_EXIT_ERROR;
    }
    const struct {
        const char *key; /* member name */
        json_t *value;   /* its value (NULL when out of memory) */
    } m[] = {
        {"by", pgt_text_json(a->by_text)},
        {"period", json_string(pgt_period_name(a->period))},
        {"label", json_string(label)},
        {"from", json_string(ctl_fmt_iso(from, true, f, sizeof(f)))},
        {"to", json_string(ctl_fmt_iso(to, true, t, sizeof(t)))},
        {"timezone", pgt_text_json(o->env->timezone)},
        {"currency", json_string(o->env->currency)},
        {"groups", o->groups},
        {"total", group_json(&o->total, false, o->rel)},
        {"budgets", budgets},
    };
    o->groups = NULL; /* now owned by the document */
    json_t *root = json_object();
    bool ok = root != NULL;
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        ok = json_object_set_new(root, m[i].key, m[i].value) == 0 && ok;
    if (!ok) {
        json_decref(root);
        fprintf(stderr, "%s: out of memory\n", o->env->prog);
        return CTL_EXIT_ERROR;
    }
    return ctl_json_print(root, stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
}

/* Prints the collected output. Returns an exit code. */
static int finish(out_t *o, const args_t *a, int64_t from, int64_t to)
{
    char label[64];
    period_label(a->period, from, to, label, sizeof(label));
    if (o->format == CTL_FORMAT_JSON)
        return print_json(o, a, label, from, to);
    if (o->format != CTL_FORMAT_TABLE)
        return CTL_EXIT_OK;
    printf("Usage by %s, %s %s (%s)\n\n", a->by_text, pgt_period_name(a->period), label,
           o->env->timezone);
    if (!o->total.statements) {
        pgt_text_table_free(o->table);
        printf(o->rel ? "No statements that read known tables in this period.\n"
                      : "No statements in this period.\n");
    } else {
        pgt_text_table_rule(o->table);
        if (table_row(o, &o->total, "TOTAL") != 0) {
            pgt_text_table_free(o->table);
            return CTL_EXIT_ERROR;
        }
        if (ctl_table_print(o->table, stdout) != 0)
            return CTL_EXIT_ERROR;
    }
    return ctl_budget_section(o->env, false, NULL) == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
}

static int run(ctl_env_t *env, const void *args, pgt_ledger_reader_t *rd)
{
    const args_t *a = args;
    /* The period holding local noon of --date, or now. */
    int64_t from, to, at = a->y ? ctl_date_noon(a->y, a->m, a->d) : pgt_clock_us();
    pgt_period_bounds(a->period, at, &from, &to);
    bool rel = a->by == PGT_USAGE_BY_SCHEMA || a->by == PGT_USAGE_BY_TABLE;
    out_t o = {.env = env, .format = a->format, .rel = rel};
    char group_header[TAG_MAX + 8];
    snprintf(group_header, sizeof(group_header), "%s", a->by_text);
    for (char *p = group_header; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
    const char *headers[] = {group_header, "STATEMENTS", "COMPUTE", "ROWS", "BYTES", "COST"};
    const char *rel_headers[] = {group_header, "QUERIES", "COMPUTE", "COST"};
    if (a->format == CTL_FORMAT_TABLE)
        o.table = rel ? pgt_text_table_new(4, rel_headers, rel_right)
                      : pgt_text_table_new(6, headers, table_right);
    else if (a->format == CTL_FORMAT_JSON)
        o.groups = json_array();
    else if (rel)
        ctl_csv_row(stdout, csv_rel_headers, sizeof(csv_rel_headers) / sizeof(csv_rel_headers[0]));
    else
        ctl_csv_row(stdout, csv_headers, sizeof(csv_headers) / sizeof(csv_headers[0]));
    char err[512] = "out of memory";
    int rc = -1;
    if (a->format == CTL_FORMAT_CSV || o.table || o.groups)
        rc = rel ? pgt_ledger_usage_relations(rd, a->by == PGT_USAGE_BY_TABLE, from, to, group_cb,
                                              &o, &o.total, err, sizeof(err))
                 : pgt_ledger_usage(rd, a->by, a->tag, from, to, group_cb, &o, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger,
                o.failed ? "out of memory" : err);
        pgt_text_table_free(o.table);
        json_decref(o.groups);
        return CTL_EXIT_ERROR;
    }
    return finish(&o, a, from, to);
}

int ctl_cmd_usage(ctl_env_t *env, int argc, char **argv)
{
    args_t a;
    char what[512];
    if (parse(env, argc, argv, &a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD, synopsis, what);
    if (a.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    return ctl_with_reader(env, run, &a);
}
