/* The daily report: built from the ledger for one local date as a JSON
 * document (its schema is documented in docs/report.md), then rendered as
 * text, Markdown, HTML, JSON, CSV or Slack Block Kit. */
#ifndef PGTALLY_REPORT_H
#define PGTALLY_REPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "pgtally/buf.h"
#include "pgtally/config.h"
#include "pgtally/db.h"

/* What a report holds besides the ledger's data. */
typedef struct pgt_report_opts {
    int top;              /* rows per section ([report] top, default 10; 0 means 10) */
    bool show_literals;   /* [report] show_literals (default false; reserved, see docs/report.md) */
    const char *currency; /* [pricing] currency */
    const char *timezone; /* the zone's name for the document; NULL: $TZ */
    int64_t regression_min_micro; /* [report] regression_min_cost, micro-units */
    int64_t duplicate_min_runs;   /* [report] duplicate_min_runs (0 means 3) */
} pgt_report_opts_t;

/* Fills out from cfg's [report] top, show_literals, regression_min_cost
 * and duplicate_min_runs, currency and timezone. The strings stay cfg's. */
void pgt_report_opts_from_config(const pgt_config_t *cfg, pgt_report_opts_t *out);

/* Builds the report of date ("YYYY-MM-DD", a local date in the process's
 * time zone, see pgt_timezone_apply) from the ledger connection db, which
 * stays the caller's and must not be in a transaction. The day is the
 * ledger's day number of that date (pgt_local_day, cut in the time zone
 * of the pgtally that wrote the statements): its sums come from the
 * rollups, its dearest statements, work done twice (pgt_ledger_repeats)
 * and the regressions per release of its last PGT_LEDGER_REGRESSION_DAYS
 * days (pgt_ledger_regressions) from queries, all in one read
 * transaction; the budgets and their spend are read just before. Needs a
 * ledger of schema 5 or later. Blocks: call it off the event loop. Returns
 * the document (json_decref it), or NULL with the cause in err (a bad
 * date, an older ledger, or what failed reading it). */
json_t *pgt_report_build(pgt_db_t *db, const char *date, const pgt_report_opts_t *opts, char *err,
                         size_t errlen);

#define PGT_REPORT_FORMAT_MAP(X)                                                                   \
    X(TEXT, "text")                                                                                \
    X(MARKDOWN, "markdown")                                                                        \
    X(HTML, "html")                                                                                \
    X(JSON, "json")                                                                                \
    X(CSV, "csv")                                                                                  \
    X(SLACK, "slack")

typedef enum {
#define X(name, str) PGT_REPORT_FORMAT_##name,
    PGT_REPORT_FORMAT_MAP(X)
#undef X
} pgt_report_format_t;

const char *pgt_report_format_name(pgt_report_format_t f);
int pgt_report_format_parse(const char *name, pgt_report_format_t *out)
    __attribute__((warn_unused_result));

/* Renders report. section: for csv, the name of one section, or NULL for
 * every section one after another; ignored by the other formats. Returns a
 * malloc'd NUL-terminated string, or NULL with the cause in err. */
char *pgt_report_render(const json_t *report, pgt_report_format_t f, const char *section, char *err,
                        size_t errlen);

/* Writes the names of the CSV sections into buf, "statements, users, ...
 * or repeats", for messages. Returns buf. */
char *pgt_report_csv_sections(char *buf, size_t len);

/* Whether name is one of the CSV sections. */
bool pgt_report_csv_section_known(const char *name);

/* Appends s to out escaped for Slack's mrkdwn (&, < and >), so that no
 * text from the ledger or a client becomes a link or a mention. */
void pgt_slack_escape(pgt_buf_t *out, const char *s);

/* The e-mail subject: the date and the day's total, e.g.
 * "pgtally: 2026-11-26: 123.45 USD in 10234 statements". malloc'd. */
char *pgt_report_subject(const json_t *report);

#endif
