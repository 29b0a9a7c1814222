/* pgtallyctl report: the daily report of any date, rendered to the terminal
 * or a file in any of the report's formats, or sent by hand to Slack and
 * e-mail through the same delivery (and once-only bookkeeping) as the
 * scheduled report. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "pgtally/config.h"
#include "pgtally/deliver.h"
#include "pgtally/period.h"
#include "pgtally/report.h"

#define CMD "report"
#define DATE_LEN 11            /* "YYYY-MM-DD" and the NUL */
#define TRIES_DEFAULT 3        /* --tries */
#define TRIES_MAX 20           /* the most --tries accepts */
#define RETRY_WAIT_S 2.0       /* --retry-wait: the first wait; each next one is 3 times longer */
#define RETRY_WAIT_MAX_S 600.0 /* the most --retry-wait accepts */
#define RETRY_WAIT_CAP 30      /* no wait is longer than this many times the first */

static const char synopsis[] =
    "usage: pgtallyctl [-c FILE | --ledger PATH] report [--date YYYY-MM-DD|yesterday|today]\n"
    "         [--format text|markdown|html|json|csv|slack] [--section NAME] [--output FILE]\n"
    "       pgtallyctl [-c FILE] report --send slack,email [--date DATE] [--force]\n"
    "         [--tries N] [--retry-wait S]\n";

static const char help[] =
    "\n"
    "The daily report of one local date (in the config's timezone): the most\n"
    "expensive statements, the users and the query shapes that cost the most, the\n"
    "day's totals against the day before and the 7-day mean, budgets at or above a\n"
    "warn threshold, statements budgets refused or cancelled, the shapes that got at\n"
    "least twice as dear with a new release, and work done twice (the same statement\n"
    "with the same constants run again and again). [report] top sets the length of\n"
    "the lists (default 10).\n"
    "\n"
    "  -d, --date DATE      YYYY-MM-DD, yesterday (default) or today\n"
    "  -f, --format FORMAT  text (default), markdown, html (the e-mail body), json (the\n"
    "                       document, see docs/report.md), csv, or slack (the Block Kit\n"
    "                       payload of the webhook)\n"
    "  -s, --section NAME   csv only: statements, users, shapes, totals, budgets,\n"
    "                       refusals, schemas, tables, regressions, repeats or approvals\n"
    "                       (default: every section, each after a '# NAME' line)\n"
    "  -o, --output FILE    write to FILE instead of standard output\n"
    "      --send CHANNELS  send to slack, email or both (comma-separated) as configured in\n"
    "                       the config's [report] section, and record it in the ledger\n"
    "      --force          with --send: send again a report that was sent already\n"
    "      --tries N        with --send: try each channel up to N times (default 3; 1: no\n"
    "                       retry) while it fails for a reason that may pass: no connection,\n"
    "                       a timeout, HTTP 5xx or 429, an SMTP 4xx reply. Another HTTP 4xx\n"
    "                       (a bad webhook) or an SMTP 5xx fails at once\n"
    "      --retry-wait S   with --send: seconds before the second try (default 2; decimals\n"
    "                       allowed); each next wait is 3 times longer, at most 30 times the\n"
    "                       first: 2 s, 6 s, 18 s, ... (the default 3 tries: within a minute)\n"
    "  -c, --config FILE    pgtally.ini: ledger, currency, timezone, [report] settings\n"
    "      --ledger PATH    the ledger: a file, or a postgresql:// URI (overrides the config)\n"
    "\n"
    "Exit codes: 0 done, 1 the ledger or a delivery failed (after its last try), 2 bad\n"
    "usage.\n";

enum {
    OPT_DATE = 1,
    OPT_FORMAT,
    OPT_SECTION,
    OPT_OUTPUT,
    OPT_SEND,
    OPT_FORCE,
    OPT_TRIES,
    OPT_WAIT
};

static const ctl_opt_t opts[] = {
    {"date", 'd', true, OPT_DATE},
    {"format", 'f', true, OPT_FORMAT},
    {"section", 's', true, OPT_SECTION},
    {"output", 'o', true, OPT_OUTPUT},
    {"send", 0, true, OPT_SEND},
    {"force", 0, false, OPT_FORCE},
    {"tries", 0, true, OPT_TRIES},
    {"retry-wait", 0, true, OPT_WAIT},
    CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

/* The command line of `report`, parsed. */
typedef struct args {
    const char *date;                          /* YYYY-MM-DD, "yesterday" or "today" */
    pgt_report_format_t format;                /* output format */
    bool format_given;                         /* --format was given */
    const char *section;                       /* --section, or NULL */
    const char *output;                        /* --output, or NULL for stdout */
    pgt_channel_t channels[PGT_CHANNEL_COUNT]; /* --send, without repeats */
    size_t nchannels;                          /* channels in --send; 0 without it */
    bool force;                                /* --force */
    int tries;                                 /* --tries: tries per channel, at least 1 */
    double retry_wait_s;                       /* --retry-wait: seconds before the second try */
    bool retry_given;                          /* --tries or --retry-wait was given */
    bool help;                                 /* --help was given */
} args_t;

/* Parses "slack,email". Returns 0, or -1 with what is wrong in what. */
static int parse_send(args_t *a, const char *v, char *what, size_t len)
{
    char *copy = strdup(v), *save = NULL;
    int rc = copy ? 0 : -1;
    a->nchannels = 0;
    for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; rc == 0 && t;
         t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        for (size_t n = strlen(t); n && t[n - 1] == ' '; n--)
            t[n - 1] = '\0';
        pgt_channel_t c;
        if (pgt_channel_parse(t, &c) != 0) {
            rc = -1;
            break;
        }
        bool seen = false;
        for (size_t i = 0; i < a->nchannels; i++)
            seen |= a->channels[i] == c;
        if (!seen)
            a->channels[a->nchannels++] = c;
    }
    free(copy);
    if (rc != 0 || a->nchannels == 0) {
        snprintf(what, len, "bad --send '%s': expected slack, email or slack,email", v);
        return -1;
    }
    return 0;
}

/* Parses --tries N. Returns 0, or -1 with what is wrong in what. */
static int parse_tries(args_t *a, const char *v, char *what, size_t len)
{
    int64_t n = 0;
    if (ctl_parse_positive(v, &n) == 0 && n <= TRIES_MAX) {
        a->tries = (int)n;
        return 0;
    }
    snprintf(what, len, "bad --tries '%s': expected a whole number from 1 to %d", v, TRIES_MAX);
    return -1;
}

/* Parses --retry-wait SECONDS. Returns 0, or -1 with what is wrong in what. */
static int parse_wait(args_t *a, const char *v, char *what, size_t len)
{
    char *end = NULL;
    errno = 0;
    double s = strtod(v, &end);
    if (v[0] >= '0' && v[0] <= '9' && !errno && end != v && !*end && s <= RETRY_WAIT_MAX_S) {
        a->retry_wait_s = s;
        return 0;
    }
    snprintf(what, len, "bad --retry-wait '%s': expected seconds from 0 to %.0f, such as 2 or 0.5",
             v, RETRY_WAIT_MAX_S);
    return -1;
}

static int check_date(const char *v, char *what, size_t len)
{
    int y, m, d;
    if (strcmp(v, "yesterday") == 0 || strcmp(v, "today") == 0 ||
        ctl_parse_date(v, &y, &m, &d) == 0)
        return 0;
    snprintf(what, len, "bad --date '%s': expected YYYY-MM-DD, yesterday or today", v);
    return -1;
}

/* Applies one option; returns 0, or -1 with what is wrong in what. */
static int apply(ctl_env_t *env, void *args, int id, const char *v, char *what, size_t len)
{
    args_t *a = args;
    switch (id) {
    case OPT_DATE:
        a->date = v;
        return check_date(v, what, len);
    case OPT_FORMAT:
        a->format_given = true;
        if (pgt_report_format_parse(v, &a->format) == 0)
            return 0;
        snprintf(what, len, "bad --format '%s': expected text, markdown, html, json, csv or slack",
                 v);
        return -1;
    case OPT_SECTION:
        a->section = v;
        if (pgt_report_csv_section_known(v))
            return 0;
        char names[256];
        snprintf(what, len, "bad --section '%s': expected %s", v,
                 pgt_report_csv_sections(names, sizeof(names)));
        return -1;
    case OPT_OUTPUT:
        a->output = v;
        if (v[0])
            return 0;
        snprintf(what, len, "bad --output '': expected a file name");
        return -1;
    case OPT_SEND:
        return parse_send(a, v, what, len);
    case OPT_FORCE:
        a->force = true;
        return 0;
    case OPT_TRIES:
        a->retry_given = true;
        return parse_tries(a, v, what, len);
    case OPT_WAIT:
        a->retry_given = true;
        return parse_wait(a, v, what, len);
    case CTL_OPT_HELP:
        a->help = true;
        return 0;
    }
    return ctl_common_opt(env, id, v) ? 0 : -1;
}

/* Parses and checks the combination of options. Returns 0, or -1 with
 * what is wrong in what. */
static int parse(ctl_env_t *env, int argc, char **argv, args_t *a, char *what, size_t len)
{
    *a = (args_t){.date = "yesterday",
                  .format = PGT_REPORT_FORMAT_TEXT,
                  .tries = TRIES_DEFAULT,
                  .retry_wait_s = RETRY_WAIT_S};
    if (ctl_parse_opts(env, argc, argv, opts, apply, a, what, len) != 0)
        return -1;
    if (a->section && a->format != PGT_REPORT_FORMAT_CSV)
        snprintf(what, len, "--section applies to --format csv only");
    else if (a->force && !a->nchannels)
        snprintf(what, len, "--force applies to --send only");
    else if (a->retry_given && !a->nchannels)
        snprintf(what, len, "--tries and --retry-wait apply to --send only");
    else if (a->nchannels && (a->format_given || a->section || a->output))
        snprintf(what, len,
                 "--send delivers the report; --format, --section and --output only "
                 "apply when printing it");
    else
        return 0;
    return -1;
}

/* Writes the local date of now plus days_ahead to buf. */
static void relative_date(int days_ahead, char *buf, size_t len)
{
    time_t now = (time_t)(pgt_clock_us() / 1000000);
    struct tm tm;
    localtime_r(&now, &tm);
    tm.tm_mday += days_ahead;
    tm.tm_hour = 12; /* noon: the day is the same whatever the DST change */
    tm.tm_min = tm.tm_sec = 0;
    tm.tm_isdst = -1;
    time_t t = mktime(&tm);
    localtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d", &tm);
}

static void resolve_date(const args_t *a, char *buf, size_t len)
{
    if (strcmp(a->date, "yesterday") == 0)
        relative_date(-1, buf, len);
    else if (strcmp(a->date, "today") == 0)
        relative_date(0, buf, len);
    else
        snprintf(buf, len, "%s", a->date);
}

/* Writes text to --output (or stdout). Returns an exit code. */
static int write_out(const ctl_env_t *env, const args_t *a, const char *text)
{
    FILE *f = a->output ? fopen(a->output, "w") : stdout;
    if (!f) {
        fprintf(stderr, "%s report: %s: %s\n", env->prog, a->output, strerror(errno));
        return CTL_EXIT_ERROR;
    }
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n;
    if (a->output)
        ok = fclose(f) == 0 && ok;
    if (!ok) {
        fprintf(stderr, "%s report: writing %s: %s\n", env->prog, a->output ? a->output : "stdout",
                strerror(errno));
        return CTL_EXIT_ERROR;
    }
    return CTL_EXIT_OK;
}

/* The report options: the config's, or the defaults with the currency
 * and time zone in effect. */
static void report_opts(const ctl_env_t *env, pgt_report_opts_t *o)
{
    if (env->config) {
        pgt_report_opts_from_config(env->config, o);
        return;
    }
    *o = (pgt_report_opts_t){.top = 10,
                             .currency = env->currency,
                             .timezone = env->timezone,
                             .regression_min_micro = PGT_CONFIG_REGRESSION_MIN_MICRO,
                             .duplicate_min_runs = PGT_CONFIG_DUPLICATE_MIN_RUNS};
}

/* Builds and prints the report of date. Returns an exit code. */
static int print_report(ctl_env_t *env, const args_t *a, const char *date)
{
    char err[512];
    int version;
    pgt_db_t *db = pgt_ledger_db_open(&env->where, false, &version, err, sizeof(err));
    if (!db) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
        return CTL_EXIT_ERROR;
    }
    pgt_report_opts_t o;
    report_opts(env, &o);
    json_t *report = pgt_report_build(db, date, &o, err, sizeof(err));
    pgt_db_close(db);
    char *text = report ? pgt_report_render(report, a->format, a->section, err, sizeof(err)) : NULL;
    json_decref(report);
    if (!text) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
        return CTL_EXIT_ERROR;
    }
    int rc = write_out(env, a, text);
    free(text);
    return rc;
}

/* What the tries of `report --send` came to. */
typedef struct sent {
    pgt_send_opts_t last;         /* each channel's outcome and error the last time it was tried */
    int tries[PGT_CHANNEL_COUNT]; /* how many times each channel was tried */
    char err[1024];               /* the last try's error, for when no channel says why */
} sent_t;

/* Prints what became of each channel. */
static void print_outcomes(const args_t *a, const char *date, const sent_t *st)
{
    for (size_t i = 0; i < a->nchannels; i++) {
        pgt_channel_t c = a->channels[i];
        pgt_send_outcome_t o = st->last.outcomes[c];
        char tries[32] = "";
        if (st->tries[c] > 1)
            snprintf(tries, sizeof(tries), " (after %d tries)", st->tries[c]);
        printf("report %s: %s: %s%s%s\n", date, pgt_channel_name(c), pgt_send_outcome_name(o),
               o == PGT_SEND_ALREADY   ? " (sent before; --force sends it again)"
               : o == PGT_SEND_CLAIMED ? " (another process is sending it now)"
                                       : "",
               tries);
    }
}

/* Prints why the channels that do not have the report failed, or st->err
 * when none says. */
static void print_failures(const ctl_env_t *env, const args_t *a, const sent_t *st)
{
    bool any = false;
    fprintf(stderr, "%s report: ", env->prog);
    for (size_t i = 0; i < a->nchannels; i++) {
        const char *why = st->last.errors[a->channels[i]];
        if (why[0])
            fprintf(stderr, "%s%s", any ? "; " : "", why);
        any |= why[0] != '\0';
    }
    fprintf(stderr, "%s\n", any ? "" : st->err[0] ? st->err : "sending failed");
}

/* The seconds to wait after try number done (1 for the first) of a
 * channel: --retry-wait, 3 times longer after each further try, at most
 * RETRY_WAIT_CAP times --retry-wait. */
static double retry_wait(const args_t *a, int done)
{
    double w = a->retry_wait_s, cap = a->retry_wait_s * RETRY_WAIT_CAP;
    for (int i = 1; i < done && w < cap; i++)
        w *= 3;
    return w < cap ? w : cap;
}

/* Sleeps for s seconds, also when a signal that does not end the process
 * arrives meanwhile. */
static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Sends the report of date to the channels of a; those whose failure was
 * transient are tried again after retry_wait, up to a->tries times each,
 * and each retry is said on stderr. Channels sent stay sent: reports_sent
 * keeps a retry from sending them again. Fills in st; returns 0 when every
 * channel has the report. */
static int send_tries(const ctl_env_t *env, pgt_db_t *db, const pgt_config_t *cfg, const args_t *a,
                      const char *date, sent_t *st)
{
    pgt_channel_t todo[PGT_CHANNEL_COUNT];
    size_t ntodo = a->nchannels;
    memcpy(todo, a->channels, ntodo * sizeof(todo[0]));
    memset(st, 0, sizeof(*st));
    for (int t = 1;; t++) {
        pgt_send_opts_t so = {.force = a->force};
        int rc = pgt_report_send_opts(db, cfg, date, todo, ntodo, &so, st->err, sizeof(st->err));
        size_t again = 0;
        for (size_t i = 0; i < ntodo; i++) {
            pgt_channel_t c = todo[i];
            st->last.outcomes[c] = so.outcomes[c];
            st->last.transient[c] = so.transient[c];
            memcpy(st->last.errors[c], so.errors[c], sizeof(so.errors[c]));
            st->tries[c] = t;
            if (so.outcomes[c] == PGT_SEND_FAILED && so.transient[c])
                todo[again++] = c;
        }
        bool failed = rc != 0;
        for (int c = 0; c < PGT_CHANNEL_COUNT; c++)
            failed |=
                st->last.outcomes[c] == PGT_SEND_FAILED || st->last.outcomes[c] == PGT_SEND_CLAIMED;
        if (!again || t >= a->tries)
            return failed ? -1 : 0;
        double wait = retry_wait(a, t);
        for (size_t i = 0; i < again; i++)
            fprintf(stderr, "%s report %s: %s; retrying in %g s (try %d of %d)\n", env->prog, date,
                    st->last.errors[todo[i]], wait, t + 1, a->tries);
        sleep_s(wait);
        ntodo = again;
    }
}

/* Sends the report of date to the channels asked for. Returns an exit code. */
static int send_report(ctl_env_t *env, const args_t *a, const char *date)
{
    char err[1024];
    int version;
    const pgt_ledger_where_t *where = &env->where;
    /* Sending writes to the ledger, which must exist: an SQLite file is
     * not created for it. */
    if (pgt_db_backend_of(where->ledger) == PGT_DB_SQLITE && access(where->ledger, F_OK) != 0) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, strerror(errno));
        return CTL_EXIT_ERROR;
    }
    pgt_config_t *defaults = env->config ? NULL : pgt_config_new();
    const pgt_config_t *cfg = env->config ? env->config : defaults;
    pgt_db_t *db = cfg ? pgt_ledger_db_open(where, true, &version, err, sizeof(err)) : NULL;
    if (!db) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger,
                cfg ? err : "out of memory");
        pgt_config_free(defaults);
        return CTL_EXIT_ERROR;
    }
    sent_t *st = malloc(sizeof(*st));
    int rc = st ? send_tries(env, db, cfg, a, date, st) : -1;
    pgt_db_close(db);
    pgt_config_free(defaults);
    if (!st) {
        fprintf(stderr, "%s report: out of memory\n", env->prog);
        return CTL_EXIT_ERROR;
    }
    print_outcomes(a, date, st);
    if (rc != 0)
        print_failures(env, a, st);
    free(st);
    return rc != 0 ? CTL_EXIT_ERROR : CTL_EXIT_OK;
}

int ctl_cmd_report(ctl_env_t *env, int argc, char **argv)
{
    args_t a;
    char what[512], date[DATE_LEN];
    if (parse(env, argc, argv, &a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD, synopsis, what);
    if (a.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    if (ctl_env_resolve(env) != 0)
        return CTL_EXIT_ERROR;
    resolve_date(&a, date, sizeof(date));
    return a.nchannels ? send_report(env, &a, date) : print_report(env, &a, date);
}
