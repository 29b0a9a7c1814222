/* Pieces shared by the report's renderers (internal): readers of the
 * report document and the formatting of amounts, counts, changes, clock
 * times and tags. Output goes into base's pgt_buf_t, and ledger text is
 * made one line with pgt_text_snippet (pgtally/text.h). Every renderer is
 * pure: the document in, a string out. */
#ifndef PGTALLY_REPORT_RENDER_H
#define PGTALLY_REPORT_RENDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/text.h"

/* Returns the text of b (the caller frees it), or NULL with "out of
 * memory" in err after a failure (then the buffer is freed). */
char *rf_finish(pgt_buf_t *b, char *err, size_t errlen);

/* Members of the document: a string ("" when missing or null), an integer
 * (0), a number (0), an array (NULL) and whether a member is null or
 * missing. */
const char *rj_str(const json_t *o, const char *key);
int64_t rj_int(const json_t *o, const char *key);
double rj_num(const json_t *o, const char *key);
const json_t *rj_arr(const json_t *o, const char *key);
bool rj_null(const json_t *o, const char *key);

/* Sizes of the formatting buffers below. */
#define RF_SHORT 48

/* "1.23 USD" from o[key + "_micro"] in the document's currency. */
char *rf_money(const json_t *doc, const json_t *o, const char *key, char *buf, size_t len);

/* "10,000,000". */
char *rf_count(int64_t n, char *buf, size_t len);

/* A change in percent: "+12.3%", "-4.0%", or none_text when null. */
char *rf_change(const json_t *o, const char *key, const char *none_text, char *buf, size_t len);

/* "09:12:33" from an RFC 3339 time; "" when it is not one. */
char *rf_clock(const char *iso, char *buf, size_t len);

/* The local date and time to the minute of an RFC 3339 time, "2026-12-03
 * 15:04" ("" when iso is not one). Returns buf. */
char *rf_minute(const char *iso, char *buf, size_t len);

/* An approval's cap (its "max"), or "none". Returns buf. */
char *rf_approval_max(const json_t *doc, const json_t *a, char *buf, size_t len);

/* Appends the tags object as "key=value, key=value" (nothing for null). */
void rf_tags(pgt_buf_t *out, const json_t *tags);

/* The renderers. Each returns a malloc'd string, or NULL with the cause in
 * err. */
char *pgt_report_render_html(const json_t *doc, char *err, size_t errlen);
char *pgt_report_render_slack(const json_t *doc, char *err, size_t errlen);

/* A budget's subject in plain text: "user alice", "default: bob",
 * "(removed)". */
void rf_subject_text(pgt_buf_t *out, const json_t *b);

/* The name of an item of data.schemas or data.tables in plain text:
 * "analytics", "analytics.sales", "(unqualified)" for the schema "". */
void rf_data_name(pgt_buf_t *out, const json_t *item);

/* The line under the title of the data section: "1.23 USD of the day's
 * 1.67 USD (73.7%) was spent on known tables", the first figure in bold. */
void rf_data_intro(pgt_buf_t *out, const json_t *doc, const char *bold);

/* A ratio of means: "2.50x". */
char *rf_ratio(const json_t *o, const char *key, char *buf, size_t len);

/* The title of the regressions section: "Regressions per release,
 * 2031-05-08 to 2031-05-14: shapes at least twice as dear under their
 * newest release, mean above 0.0001 USD". */
void rf_regressions_title(pgt_buf_t *out, const json_t *doc);

/* The title of the repeats section: "Work done twice: the same statement
 * with the same constants run more than 3 times by several users or
 * applications". */
void rf_repeats_title(pgt_buf_t *out, const json_t *doc);

/* The line under work done twice: "A cached or materialized result would
 * have saved 1.23 USD: what every run but the cheapest cost.", the
 * amount in bold. */
void rf_repeats_note(pgt_buf_t *out, const json_t *doc, const char *bold);

#endif
