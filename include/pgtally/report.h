/* The daily report: built from the ledger for one local date as a JSON
 * document (its schema is documented in docs/report.md), then rendered as
 * text, Markdown, HTML, JSON, CSV or Slack Block Kit. */
#ifndef PGTALLY_REPORT_H
#define PGTALLY_REPORT_H

#include <jansson.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

#include "pgtally/config.h"

/* What a report holds besides the ledger's data. */
typedef struct pgt_report_opts {
    int top;              /* rows per section ([report] top, default 10; 0 means 10) */
    bool show_literals;   /* [report] show_literals (default false; reserved, see docs/report.md) */
    const char *currency; /* [pricing] currency */
    const char *timezone; /* the zone's name for the document; NULL: $TZ */
    int threads;          /* worker threads reading the ledger; 0: one per CPU, at most 4 */
} pgt_report_opts_t;

/* Fills out from cfg's [report] top and show_literals, currency and
 * timezone (threads 0). The strings stay cfg's. */
void pgt_report_opts_from_config(const pgt_config_t *cfg, pgt_report_opts_t *out);

/* Builds the report of date ("YYYY-MM-DD", a local date in the process's
 * time zone, see pgt_timezone_apply) from the ledger connection db, which
 * stays the caller's. The day is read in parallel by worker threads with
 * their own read-only connections to db's file (db alone when it has no
 * file); each has its own snapshot, so statements written meanwhile may
 * count in one section and not another. Blocks: call it off the event
 * loop. Returns the document (json_decref it), or NULL with the cause in
 * err (a bad date, or what failed reading the ledger). */
json_t *pgt_report_build(sqlite3 *db, const char *date, const pgt_report_opts_t *opts, char *err,
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

/* The e-mail subject: the date and the day's total, e.g.
 * "pgtally: 2026-11-26: 123.45 USD in 10234 statements". malloc'd. */
char *pgt_report_subject(const json_t *report);

#endif
