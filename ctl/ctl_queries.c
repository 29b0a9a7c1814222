/* pgtallyctl queries: the metered statements, most recent (or most
 * expensive) first, as a table, JSON or CSV. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "pgtally/ledger.h"
#include "pgtally/period.h"
#include "pgtally/pricing.h"

#define CMD "queries"
#define DEFAULT_LIMIT 50
#define QUERY_WIDTH 60 /* characters of statement text shown in a table */

static const char synopsis[] =
    "usage: pgtallyctl [-c FILE | --ledger PATH] queries [--user USER] [--since TIME]\n"
    "         [--until TIME] [--limit N] [--order time|cost] [--format table|json|csv]\n";

static const char help[] =
    "\n"
    "Lists metered statements, most recent first.\n"
    "\n"
    "  -u, --user USER      only statements of this PostgreSQL user\n"
    "      --since TIME     started at or after TIME\n"
    "      --until TIME     started before TIME\n"
    "  -n, --limit N        at most N statements (default 50)\n"
    "      --order ORDER    time (most recent first, default) or cost (most expensive first)\n"
    "  -f, --format FORMAT  table (default), json or csv; json and csv hold the full text\n"
    "  -c, --config FILE    pgtally.ini to read the ledger path and currency from\n"
    "      --ledger PATH    the ledger: a file, or a postgresql:// URI (overrides the config)\n"
    "\n"
    "TIME is YYYY-MM-DD, 'YYYY-MM-DD HH:MM[:SS]' (local time unless followed by Z or\n"
    "+HH:MM), ISO 8601 such as 2024-05-01T09:30:00Z, or relative to now: -30m, -1h, -2d.\n";

enum { OPT_USER = 1, OPT_SINCE, OPT_UNTIL, OPT_LIMIT, OPT_ORDER, OPT_FORMAT };

static const ctl_opt_t opts[] = {
    {"user", 'u', true, OPT_USER},
    {"since", 0, true, OPT_SINCE},
    {"until", 0, true, OPT_UNTIL},
    {"limit", 'n', true, OPT_LIMIT},
    {"order", 0, true, OPT_ORDER},
    {"format", 'f', true, OPT_FORMAT},
    CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

/* The command line of `queries`, parsed. */
typedef struct args {
    pgt_ledger_filter_t filter; /* which statements */
    const char *since;          /* --since as given, or NULL */
    const char *until;          /* --until as given, or NULL */
    ctl_format_t format;        /* output format */
    bool help;                  /* --help was given */
} args_t;

/* Applies one option; returns 0, or -1 with what is wrong in what. */
static int apply(ctl_env_t *env, void *args, int id, const char *v, char *what, size_t len)
{
    args_t *a = args;
    int64_t t;
    switch (id) {
    case OPT_USER:
        a->filter.user = v;
        return 0;
    case OPT_SINCE:
    case OPT_UNTIL:
        /* Checked now; read again once the config's time zone is set. */
        *(id == OPT_SINCE ? &a->since : &a->until) = v;
        if (ctl_parse_time(v, pgt_clock_us(), &t) == 0)
            return 0;
        snprintf(what, len,
                 "bad --%s '%s': expected YYYY-MM-DD, 'YYYY-MM-DD HH:MM[:SS]', "
                 "ISO 8601 or -30m, -1h, -2d",
                 id == OPT_SINCE ? "since" : "until", v);
        return -1;
    case OPT_LIMIT:
        if (ctl_parse_positive(v, &a->filter.limit) == 0)
            return 0;
        snprintf(what, len, "bad --limit '%s': expected a positive integer", v);
        return -1;
    case OPT_ORDER:
        if (pgt_ledger_order_parse(v, &a->filter.order) == 0)
            return 0;
        snprintf(what, len, "bad --order '%s': expected time or cost", v);
        return -1;
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
    *a = (args_t){.filter = {.since_us = INT64_MIN, .until_us = INT64_MAX, .limit = DEFAULT_LIMIT}};
    return ctl_parse_opts(env, argc, argv, opts, apply, a, what, len);
}

/* What the row callbacks need. */
typedef struct out {
    const ctl_env_t *env;    /* currency */
    ctl_format_t format;     /* which writer */
    pgt_text_table_t *table; /* table rows, for table */
    json_t *array;           /* statements, for json */
    int64_t count;           /* rows written */
    int failed;              /* out of memory */
} out_t;

static const char *const table_headers[] = {"STARTED", "USER", "DATABASE", "APPLICATION", "KIND",
                                            "COMPUTE", "ROWS", "COST",     "STATUS",      "QUERY"};
static const bool table_right[] = {false, false, false, false, false,
                                   true,  true,  true,  false, false};

static int table_row(out_t *o, const pgt_record_t *r)
{
    char started[32], compute[32], rows[24], cost[PGT_MONEY_TEXT_MAX], status[40];
    snprintf(rows, sizeof(rows), "%lld", (long long)r->rows);
    snprintf(status, sizeof(status), "%s%s%s", pgt_query_status_name(r->status),
             r->sqlstate[0] ? " " : "", r->sqlstate);
    const char *cells[] = {
        ctl_fmt_local(r->started_us, started, sizeof(started)),
        r->user,
        r->database,
        r->application,
        r->kind,
        pgt_fmt_seconds(r->compute_s, compute, sizeof(compute)),
        rows,
        pgt_money_format_short(r->cost_micro, o->env->currency, cost, sizeof(cost)),
        status,
        r->normalized,
    };
    return pgt_text_table_row(o->table, cells, QUERY_WIDTH);
}

/* An integer, or null when v < 0 (not estimated). */
static json_t *int_or_null(int64_t v)
{
    return v < 0 ? json_null() : json_integer(v);
}

/* The tags as a JSON object; text that does not parse stays a string. */
static json_t *tags_json(const char *tags)
{
    json_t *t = tags ? json_loads(tags, 0, NULL) : NULL;
    return t ? t : pgt_text_json(tags);
}

static json_t *record_json(const ctl_env_t *env, const pgt_record_t *r)
{
    char started[48], fp[24], cost[PGT_MONEY_TEXT_MAX];
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)r->fingerprint);
    const struct {
        const char *key; /* member name */
        json_t *value;   /* its value (NULL when out of memory) */
    } m[] = {
        {"started", pgt_text_json(ctl_fmt_iso(r->started_us, false, started, sizeof(started)))},
        {"started_us", json_integer(r->started_us)},
        {"finished_us", json_integer(r->finished_us)},
        {"session_id", json_integer((json_int_t)r->session_id)},
        {"backend_pid", json_integer(r->backend_pid)},
        {"user", pgt_text_json(r->user)},
        {"database", pgt_text_json(r->database)},
        {"application", pgt_text_json(r->application)},
        {"client_addr", pgt_text_json(r->client_addr)},
        {"tags", tags_json(r->tags_json)},
        {"fingerprint", json_string(fp)},
        {"kind", pgt_text_json(r->kind)},
        {"protocol", pgt_text_json(r->protocol)},
        {"est_planner_cost",
         r->est_planner_cost < 0 ? json_null() : json_real(r->est_planner_cost)},
        {"est_cost_micro", int_or_null(r->est_cost_micro)},
        {"compute_s", json_real(r->compute_s)},
        {"rows", json_integer(r->rows)},
        {"bytes_out", json_integer(r->bytes_out)},
        {"cost_micro", json_integer(r->cost_micro)},
        {"cost", json_string(pgt_money_format(r->cost_micro, NULL, cost, sizeof(cost)))},
        {"currency", json_string(env->currency)},
        {"status", json_string(pgt_query_status_name(r->status))},
        {"sqlstate", r->sqlstate[0] ? pgt_text_json(r->sqlstate) : json_null()},
        {"normalized", pgt_text_json(r->normalized)},
    };
    json_t *o = json_object();
    bool ok = o != NULL;
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        ok = json_object_set_new(o, m[i].key, m[i].value) == 0 && ok;
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static const char *const csv_headers[] = {"started",     "user",      "database",    "application",
                                          "client_addr", "kind",      "protocol",    "compute_s",
                                          "rows",        "bytes_out", "cost",        "currency",
                                          "status",      "sqlstate",  "fingerprint", "normalized"};

static void csv_row(const out_t *o, const pgt_record_t *r)
{
    char started[48], compute[32], rows[24], bytes[24], cost[PGT_MONEY_TEXT_MAX], fp[24];
    snprintf(compute, sizeof(compute), "%.6f", r->compute_s);
    snprintf(rows, sizeof(rows), "%lld", (long long)r->rows);
    snprintf(bytes, sizeof(bytes), "%lld", (long long)r->bytes_out);
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)r->fingerprint);
    const char *cells[] = {
        ctl_fmt_iso(r->started_us, false, started, sizeof(started)),
        r->user,
        r->database,
        r->application,
        r->client_addr,
        r->kind,
        r->protocol,
        compute,
        rows,
        bytes,
        pgt_money_format(r->cost_micro, NULL, cost, sizeof(cost)),
        o->env->currency,
        pgt_query_status_name(r->status),
        r->sqlstate,
        fp,
        r->normalized,
    };
    ctl_csv_row(stdout, cells, sizeof(cells) / sizeof(cells[0]));
}

static int row_cb(const pgt_record_t *r, void *arg)
{
    out_t *o = arg;
    o->count++;
    if (o->format == CTL_FORMAT_CSV) {
        csv_row(o, r);
    } else if (o->format == CTL_FORMAT_JSON) {
        json_t *j = record_json(o->env, r);
        if (!j || json_array_append_new(o->array, j) != 0)
            o->failed = 1;
    } else if (table_row(o, r) != 0) {
        o->failed = 1;
    }
    return o->failed;
}

/* Walks the ledger into the chosen writer. Returns an exit code. */
static int run(ctl_env_t *env, const void *args, pgt_ledger_reader_t *rd)
{
    const args_t *a = args;
    out_t o = {.env = env, .format = a->format};
    if (a->format == CTL_FORMAT_TABLE)
        o.table = pgt_text_table_new(10, table_headers, table_right);
    else if (a->format == CTL_FORMAT_JSON)
        o.array = json_array();
    else
        ctl_csv_row(stdout, csv_headers, sizeof(csv_headers) / sizeof(csv_headers[0]));
    char err[512] = "out of memory";
    int rc = (a->format == CTL_FORMAT_CSV || o.table || o.array)
                 ? pgt_ledger_list(rd, &a->filter, row_cb, &o, err, sizeof(err))
                 : -1;
    if (rc != 0) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger,
                o.failed ? "out of memory" : err);
        pgt_text_table_free(o.table);
        json_decref(o.array);
        return CTL_EXIT_ERROR;
    }
    if (o.table && o.count == 0) {
        pgt_text_table_free(o.table);
        printf("No statements match.\n");
    } else if (o.table && ctl_table_print(o.table, stdout) != 0) {
        return CTL_EXIT_ERROR;
    } else if (o.array && ctl_json_print(o.array, stdout) != 0) {
        return CTL_EXIT_ERROR;
    }
    return CTL_EXIT_OK;
}

int ctl_cmd_queries(ctl_env_t *env, int argc, char **argv)
{
    args_t a;
    char what[512];
    if (parse(env, argc, argv, &a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD, synopsis, what);
    if (a.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    if (ctl_env_resolve(env) != 0)
        return CTL_EXIT_ERROR;
    int64_t now = pgt_clock_us();
    if ((a.since && ctl_parse_time(a.since, now, &a.filter.since_us) != 0) ||
        (a.until && ctl_parse_time(a.until, now, &a.filter.until_us) != 0))
        return ctl_usage_error(env, CMD, synopsis, "bad --since or --until in this time zone");
    return ctl_with_reader(env, run, &a);
}
