/* Unit tests of the report's renderers on a document built here by hand
 * (the schema of docs/report.md), not read from a ledger: a small day of
 * three statements by two users, three shapes, the totals, a budget at a
 * warn threshold and a refusal, rendered in every format and checked for
 * what a reader sees: the figures and names in their places, and each
 * format's escaping and limits. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/report.h"
#include "pgtally/text.h"
#include "task.h"

/* The statement with a comma, quotes and a line break, and the user and
 * application with characters HTML and Markdown must escape. */
#define TRICKY_SQL "SELECT a, \"b,c\" FROM t\nWHERE x = $1 -- it's a \"quote\""
#define BOB "bob <b&b>"

static const char *const DAY =
    "{\"version\": 1, \"date\": \"2031-05-14\", \"timezone\": \"Europe/Berlin\","
    " \"from\": \"2031-05-14T00:00:00.000000+02:00\", \"to\": \"2031-05-15T00:00:00.000000+02:00\","
    " \"from_us\": 1962223200000000, \"to_us\": 1962309600000000,"
    " \"generated_at\": \"2031-05-15T06:00:00.000000+02:00\", \"currency\": \"EUR\", \"top\": 10,"
    " \"show_literals\": false,"
    " \"totals\": {\"statements\": 3, \"cost_micro\": 1234560, \"cost\": \"1.234560\","
    "  \"compute_s\": 12.5, \"users\": 2, \"by_status\": {\"ok\": 1, \"error\": 1, \"cancelled\": "
    "0,"
    "  \"budget_cancelled\": 0, \"refused\": 1},"
    "  \"previous_day\": {\"date\": \"2031-05-13\", \"statements\": 2, \"cost_micro\": 1000000,"
    "   \"cost\": \"1.000000\", \"compute_s\": 10.0},"
    "  \"change_vs_previous_day\": {\"statements_pct\": 50.0, \"cost_pct\": 23.5,"
    "   \"compute_pct\": 25.0},"
    "  \"mean_7d\": {\"days\": 7, \"statements\": 2.5, \"cost_micro\": 900000, \"cost\": "
    "\"0.900000\","
    "   \"compute_s\": 9.0},"
    "  \"change_vs_mean_7d\": {\"statements_pct\": 20.0, \"cost_pct\": 37.2, \"compute_pct\": "
    "38.9}},"
    " \"statements\": ["
    "  {\"rank\": 1, \"id\": 11, \"cost_micro\": 900000, \"cost\": \"0.900000\","
    "   \"estimated_cost_micro\": null, \"started_at\": \"2031-05-14T09:12:33.000120+02:00\","
    "   \"started_us\": 1962256353000120, \"duration_s\": 4.2, \"compute_s\": 4.0,"
    "   \"user\": \"alice\", \"database\": \"shop\", \"application\": \"psql\","
    "   \"tags\": {\"team\": \"data\"}, \"fingerprint\": \"00000000000000a1\","
    "   \"normalized\": \"SELECT a, \\\"b,c\\\" FROM t\\nWHERE x = $1 -- it's a \\\"quote\\\"\","
    "   \"kind\": \"select\", \"rows\": 1200, \"bytes_out\": 5000, \"status\": \"ok\","
    "   \"sqlstate\": null},"
    "  {\"rank\": 2, \"id\": 12, \"cost_micro\": 300000, \"cost\": \"0.300000\","
    "   \"estimated_cost_micro\": 250000, \"started_at\": \"2031-05-14T10:00:00.000000+02:00\","
    "   \"started_us\": 1962259200000000, \"duration_s\": 8.0, \"compute_s\": 8.0,"
    "   \"user\": \"bob <b&b>\", \"database\": \"shop\", \"application\": \"metabase|bi\","
    "   \"tags\": null, \"fingerprint\": \"00000000000000b2\","
    "   \"normalized\": \"SELECT * FROM t WHERE a < $1 AND b > $2 & c | d\", \"kind\": \"select\","
    "   \"rows\": 0, \"bytes_out\": 0, \"status\": \"error\", \"sqlstate\": \"42P01\"},"
    "  {\"rank\": 3, \"id\": 13, \"cost_micro\": 34560, \"cost\": \"0.034560\","
    "   \"estimated_cost_micro\": null, \"started_at\": \"2031-05-14T11:30:00.000000+02:00\","
    "   \"started_us\": 1962264600000000, \"duration_s\": 0.5, \"compute_s\": 0.5,"
    "   \"user\": \"bob <b&b>\", \"database\": \"shop\", \"application\": \"\", \"tags\": null,"
    "   \"fingerprint\": \"00000000000000c3\", \"normalized\": \"SELECT 1\", \"kind\": \"select\","
    "   \"rows\": 1, \"bytes_out\": 10, \"status\": \"refused\", \"sqlstate\": \"53400\"}],"
    " \"users\": ["
    "  {\"rank\": 1, \"user\": \"alice\", \"cost_micro\": 900000, \"cost\": \"0.900000\","
    "   \"statements\": 1, \"compute_s\": 4.0, \"share_pct\": 72.9,"
    "   \"top_shape\": {\"fingerprint\": \"00000000000000a1\", \"normalized\": \"SELECT a FROM t\","
    "    \"kind\": \"select\", \"cost_micro\": 900000, \"cost\": \"0.900000\", \"statements\": 1},"
    "   \"previous_day_cost_micro\": 600000, \"previous_day_cost\": \"0.600000\","
    "   \"change_micro\": 300000, \"change\": \"0.300000\", \"change_pct\": 50.0},"
    "  {\"rank\": 2, \"user\": \"bob <b&b>\", \"cost_micro\": 334560, \"cost\": \"0.334560\","
    "   \"statements\": 2, \"compute_s\": 8.5, \"share_pct\": 27.1,"
    "   \"top_shape\": {\"fingerprint\": \"00000000000000b2\", \"normalized\": \"SELECT * FROM t\","
    "    \"kind\": \"select\", \"cost_micro\": 300000, \"cost\": \"0.300000\", \"statements\": 1},"
    "   \"previous_day_cost_micro\": 0, \"previous_day_cost\": \"0.000000\","
    "   \"change_micro\": 334560, \"change\": \"0.334560\", \"change_pct\": null}],"
    " \"shapes\": ["
    "  {\"rank\": 1, \"fingerprint\": \"00000000000000a1\", \"normalized\": \"SELECT a FROM t\","
    "   \"kind\": \"select\", \"statements\": 1, \"cost_micro\": 900000, \"cost\": \"0.900000\","
    "   \"mean_cost_micro\": 900000, \"mean_cost\": \"0.900000\", \"max_cost_micro\": 900000,"
    "   \"max_cost\": \"0.900000\", \"compute_s\": 4.0, \"share_pct\": 72.9, \"users\": 1,"
    "   \"user_names\": [\"alice\"]},"
    "  {\"rank\": 2, \"fingerprint\": \"00000000000000b2\", \"normalized\": \"SELECT * FROM t\","
    "   \"kind\": \"select\", \"statements\": 1, \"cost_micro\": 300000, \"cost\": \"0.300000\","
    "   \"mean_cost_micro\": 300000, \"mean_cost\": \"0.300000\", \"max_cost_micro\": 300000,"
    "   \"max_cost\": \"0.300000\", \"compute_s\": 8.0, \"share_pct\": 24.3, \"users\": 1,"
    "   \"user_names\": [\"bob <b&b>\"]},"
    "  {\"rank\": 3, \"fingerprint\": \"00000000000000c3\", \"normalized\": \"SELECT 1\","
    "   \"kind\": \"select\", \"statements\": 1, \"cost_micro\": 34560, \"cost\": \"0.034560\","
    "   \"mean_cost_micro\": 34560, \"mean_cost\": \"0.034560\", \"max_cost_micro\": 34560,"
    "   \"max_cost\": \"0.034560\", \"compute_s\": 0.5, \"share_pct\": 2.8, \"users\": 1,"
    "   \"user_names\": [\"bob <b&b>\"]}],"
    " \"data\": {\"cost_micro\": 900000, \"cost\": \"0.900000\", \"compute_s\": 9.0,"
    "  \"share_pct\": 72.9, \"schemas\": ["
    "  {\"rank\": 1, \"schema\": \"analytics\", \"cost_micro\": 700000, \"cost\": \"0.700000\","
    "   \"compute_s\": 7.0, \"share_pct\": 56.7},"
    "  {\"rank\": 2, \"schema\": \"\", \"cost_micro\": 200000, \"cost\": \"0.200000\","
    "   \"compute_s\": 2.0, \"share_pct\": 16.2}],"
    "  \"tables\": ["
    "  {\"rank\": 1, \"schema\": \"analytics\", \"table\": \"sales\", \"queries\": 2,"
    "   \"cost_micro\": 600000, \"cost\": \"0.600000\", \"compute_s\": 6.0, \"share_pct\": 48.6},"
    "  {\"rank\": 2, \"schema\": \"\", \"table\": \"x|<y>\", \"queries\": 1,"
    "   \"cost_micro\": 200000, \"cost\": \"0.200000\", \"compute_s\": 2.0, \"share_pct\": 16.2},"
    "  {\"rank\": 3, \"schema\": \"analytics\", \"table\": \"stores\", \"queries\": 1,"
    "   \"cost_micro\": 100000, \"cost\": \"0.100000\", \"compute_s\": 1.0, \"share_pct\": 8.1}]},"
    " \"budgets\": {\"checked\": 2, \"over_threshold\": 1, \"items\": ["
    "  {\"id\": 4, \"subject_type\": \"user\", \"subject\": \"alice\", \"user\": null,"
    "   \"period\": \"day\", \"period_start\": \"2031-05-14T00:00:00.000000+02:00\","
    "   \"period_end\": \"2031-05-15T00:00:00.000000+02:00\", \"spent_micro\": 900000,"
    "   \"spent\": \"0.900000\", \"limit_micro\": 1000000, \"limit\": \"1.000000\","
    "   \"granted_micro\": 0, \"granted\": \"0.000000\", \"percent\": 90.0,"
    "   \"warn_pcts\": [80, 100], \"threshold_pct\": 80, \"action\": \"block\"}]},"
    " \"refusals\": {\"statements\": 1, \"refused\": 1, \"budget_cancelled\": 0,"
    "  \"cost_micro\": 0, \"cost\": \"0.000000\", \"by_budget\": ["
    "  {\"budget_id\": 7, \"subject_type\": \"user\", \"subject\": \"bob <b&b>\","
    "   \"period\": \"day\", \"refused\": 1, \"budget_cancelled\": 0, \"cost_micro\": 0,"
    "   \"cost\": \"0.000000\"}]},"
    " \"regressions\": {\"days\": 7, \"since\": \"2031-05-08\", \"min_mean_cost_micro\": 100,"
    "  \"min_mean_cost\": \"0.000100\", \"items\": ["
    "  {\"rank\": 1, \"fingerprint\": \"00000000000000a1\", \"normalized\": \"SELECT a FROM t\","
    "   \"kind\": \"select\", \"release\": \"v2<b>\","
    "   \"first_seen\": \"2031-05-13T08:00:00.000000+02:00\", \"statements\": 4,"
    "   \"mean_cost_micro\": 250000, \"mean_cost\": \"0.250000\", \"previous_release\": \"v1\","
    "   \"previous_statements\": 12, \"previous_mean_cost_micro\": 50000,"
    "   \"previous_mean_cost\": \"0.050000\", \"ratio\": 5.0}]},"
    " \"repeats\": {\"min_runs\": 3, \"saved_micro\": 120000, \"saved\": \"0.120000\","
    "  \"items\": ["
    "  {\"rank\": 1, \"fingerprint\": \"00000000000000b2\", \"normalized\": \"SELECT * FROM t\","
    "   \"kind\": \"select\", \"constants\": \"00000000deadbeef\", \"runs\": 5, \"users\": 2,"
    "   \"applications\": 1, \"who\": \"alice, bob <b&b>\", \"cost_micro\": 150000,"
    "   \"cost\": \"0.150000\", \"saved_micro\": 120000, \"saved\": \"0.120000\"}]},"
    " \"approvals\": {\"approvals\": 1, \"runs\": 2, \"cost_micro\": 400000, \"cost\": "
    "\"0.400000\","
    "  \"items\": [{\"id\": 3, \"ticket\": \"T-4M4WP4\", \"user\": \"bob <b&b>\","
    "   \"database\": \"shop\", \"fingerprint\": \"00000000000000a1\", \"normalized\":"
    "   \"SELECT a FROM t\", \"kind\": \"select\", \"scope\": \"statement\","
    "   \"max_micro\": 500000, \"max\": \"0.500000\", \"approved_by\": \"ana\","
    "   \"approved_at\": \"2031-05-14T09:00:00.000000+02:00\","
    "   \"until\": \"2031-05-14T11:00:00.000000+02:00\", \"runs\": 2,"
    "   \"cost_micro\": 400000, \"cost\": \"0.400000\"}]}}";

static json_t *day(void)
{
    json_error_t e;
    json_t *doc = json_loads(DAY, 0, &e);
    if (!doc)
        fprintf(stderr, "the document: %s at %d:%d\n", e.text, e.line, e.column);
    CHECK(doc != NULL);
    return doc;
}

static char *render(const json_t *doc, pgt_report_format_t f, const char *section)
{
    char err[256] = "";
    char *s = pgt_report_render(doc, f, section, err, sizeof(err));
    if (!s)
        fprintf(stderr, "render %s: %s\n", pgt_report_format_name(f), err);
    CHECK(s != NULL);
    return s;
}

/* Returns a copy of the first line of s that contains needle, or NULL. */
static char *line_with(const char *s, const char *needle)
{
    const char *hit = s ? strstr(s, needle) : NULL;
    if (!hit)
        return NULL;
    const char *start = hit, *end = strchr(hit, '\n');
    while (start > s && start[-1] != '\n')
        start--;
    return strndup(start, end ? (size_t)(end - start) : strlen(start));
}

#define CHECK_HAS(s, needle)                                                                       \
    do {                                                                                           \
        const char *h_ = (s);                                                                      \
        if (!h_ || !strstr(h_, (needle))) {                                                        \
            fprintf(stderr, "%s:%d: missing \"%s\"\n", __FILE__, __LINE__, (needle));              \
            task_failures++;                                                                       \
        }                                                                                          \
    } while (0)

/* Checks that the column headed head starts (right: ends) where cell
 * does in the line holding row (text tables). */
static void check_column(const char *text, const char *header_line_has, const char *head,
                         const char *row, const char *cell, bool right)
{
    char *h = line_with(text, header_line_has), *r = line_with(text, row);
    const char *hh = h ? strstr(h, head) : NULL, *rc = r ? strstr(r, cell) : NULL;
    CHECK(hh && rc);
    if (hh && rc && right)
        CHECK_INT(hh + strlen(head) - h, rc + strlen(cell) - r);
    else if (hh && rc)
        CHECK_INT(hh - h, rc - r);
    free(h);
    free(r);
}

static void test_text(const json_t *doc)
{
    char *t = render(doc, PGT_REPORT_FORMAT_TEXT, NULL);
    CHECK(t && strncmp(t, "pgtally daily report for 2031-05-14 (Europe/Berlin)\n\n", 52) == 0);
    CHECK_HAS(t, "\nTotal: 1.23 EUR in 3 statements, 12.50 s compute, 2 users\n");
    CHECK_HAS(t, "\nvs 2031-05-13 (1.00 EUR): cost +23.5%, statements +50.0%, compute +25.0%\n");
    CHECK_HAS(t, "\nvs 7-day mean (7 days, 0.90 EUR): cost +37.2%, statements +20.0%, "
                 "compute +38.9%\n");
    CHECK_HAS(t, "\nDid not complete: 1 error, 1 refused\n");
    CHECK_HAS(t, "\nApprovals in force: 1, 2 runs under them, 0.40 EUR\n\n");
    char *ap = line_with(t, "T-4M4WP4");
    CHECK_HAS(ap,
              "3  T-4M4WP4  bob <b&b>  statement  0.50 EUR  ana  2031-05-14 11:00     2  0.40 EUR  "
              "SELECT a FROM t");
    free(ap);
    /* The statements: one line each, the line break of the text a space. */
    CHECK_HAS(t, "\nTop 3 statements by cost\n\n");
    char *row = line_with(t, "1  0.90 EUR  alice");
    CHECK_HAS(row, "  09:12:33    4.20 s  1,200  shop      psql         team=data  ");
    CHECK_HAS(row, "  SELECT a, \"b,c\" FROM t WHERE x = $1 -- it's a \"quote\"");
    free(row);
    row = line_with(t, "2  0.30 EUR  bob <b&b>  10:00:00");
    CHECK_HAS(row, "metabase|bi             SELECT * FROM t WHERE a < $1 AND b > $2 & c | d");
    free(row);
    check_column(t, "DURATION", "QUERY", "3  0.03 EUR", "SELECT 1", false);
    check_column(t, "DURATION", "USER", "3  0.03 EUR", "bob <b&b>", false);
    check_column(t, "DURATION", "ROWS", "1  0.90 EUR", "1,200", true);
    check_column(t, "DURATION", "COST", "3  0.03 EUR", "0.03 EUR", true);
    /* Users, shapes, the budget at its threshold, the refusal. */
    row = line_with(t, "2  bob <b&b>  0.33 EUR");
    CHECK_HAS(row, "  2  27.1%            new  00000000000000b2  SELECT * FROM t");
    free(row);
    CHECK_HAS(
        t, "\n1  00000000000000a1  0.90 EUR      1  0.90 EUR  0.90 EUR      1  SELECT a FROM t\n");
    CHECK_HAS(t,
              "\nBudgets at or above a warn threshold (1 of 2, spend to the end of 2031-05-14)\n");
    CHECK_HAS(t, "\n 4  user alice  day     0.90 EUR  1.00 EUR  [#########-]  90%  block\n");
    CHECK_HAS(t, "\nStopped by budgets: 1 statements (1 refused, 0 cancelled)\n");
    CHECK_HAS(t, "\n     7  user bob <b&b>  day           1          0  0.00 EUR\n");
    /* The data that cost the most, after the shapes: schemas, then tables. */
    CHECK_HAS(t, "\nData that cost the most\n\n0.90 EUR of the day's 1.23 EUR (72.9%) was spent "
                 "on known tables\n\n#  SCHEMA             COST  SHARE  COMPUTE\n"
                 "1  analytics      0.70 EUR  56.7%   7.00 s\n"
                 "2  (unqualified)  0.20 EUR  16.2%   2.00 s\n\n");
    CHECK_HAS(t, "\n1  analytics.sales      0.60 EUR  48.6%        2   6.00 s\n"
                 "2  (unqualified).x|<y>  0.20 EUR  16.2%        1   2.00 s\n");
    CHECK(t && strstr(t, "Top 3 query shapes") < strstr(t, "Data that cost the most") &&
          strstr(t, "Data that cost the most") < strstr(t, "Budgets at or above"));
    /* Regressions per release, then work done twice, last. */
    CHECK_HAS(t, "\nRegressions per release, 2031-05-08 to 2031-05-14: shapes at least twice as "
                 "dear under their newest release, mean above 0.0001 EUR\n\n");
    row = line_with(t, "1  5.00x  v2<b>");
    CHECK_HAS(row, "  0.25 EUR     4  v1         0.05 EUR           12  00000000000000a1  "
                   "SELECT a FROM t");
    free(row);
    CHECK_HAS(t, "\nWork done twice: the same statement with the same constants run more than 3 "
                 "times by several users or applications\n\n");
    row = line_with(t, "1  00000000000000b2  00000000deadbeef");
    CHECK_HAS(row, "     5      2     1  0.15 EUR  0.12 EUR  alice, bob <b&b>  SELECT * FROM t");
    free(row);
    CHECK_HAS(t, "\nA cached or materialized result would have saved 0.12 EUR: what every run but "
                 "the cheapest cost.\n");
    CHECK(t && strstr(t, "Stopped by budgets") < strstr(t, "Regressions per release") &&
          strstr(t, "Regressions per release") < strstr(t, "Work done twice"));
    /* A day whose statements read no known table has no such section; a
     * day without regressions or repeats, none of those. */
    json_t *bare = json_deep_copy(doc);
    json_object_del(bare, "data");
    json_array_clear(json_object_get(json_object_get(bare, "regressions"), "items"));
    json_array_clear(json_object_get(json_object_get(bare, "repeats"), "items"));
    char *b = render(bare, PGT_REPORT_FORMAT_TEXT, NULL);
    CHECK(b && !strstr(b, "Data that cost"));
    CHECK(b && !strstr(b, "Regressions per release") && !strstr(b, "Work done twice"));
    free(b);
    json_decref(bare);
    free(t);
}

/* Pipes in a Markdown line that are not escaped: the cell borders. */
static int borders(const char *line, size_t len)
{
    int n = 0;
    for (size_t i = 0; i < len; i++)
        n += line[i] == '|' && (i == 0 || line[i - 1] != '\\');
    return n;
}

/* Checks that each row of each Markdown table has its header's cells. */
static void check_md_tables(const char *md)
{
    int want = 0;
    for (const char *p = md; p && *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (*p != '|')
            want = 0;
        else if (!want)
            want = borders(p, len);
        else if (borders(p, len) != want)
            fprintf(stderr, "markdown row: %.*s\n", (int)len, p);
        CHECK(*p != '|' || borders(p, len) == want);
        p = end ? end + 1 : NULL;
    }
}

static void test_markdown(const json_t *doc)
{
    char *md = render(doc, PGT_REPORT_FORMAT_MARKDOWN, NULL);
    CHECK(md && strncmp(md, "# pgtally daily report: 2031-05-14 (Europe/Berlin)\n", 51) == 0);
    CHECK_HAS(md, "Total: **1.23 EUR** in 3 statements, 12.50 s compute, 2 users  \n");
    check_md_tables(md);
    CHECK_HAS(md, "\n| 1 | 0.90 EUR | alice | 09:12:33 | 4.20 s | 1,200 | shop | psql | team=data "
                  "| `SELECT a, \"b,c\" FROM t WHERE x = $1 -- it's a \"quote\"` |\n");
    /* Names escaped (no tag, no new cell); the pipe in code escaped too. */
    CHECK_HAS(md, "\n| 2 | 0.30 EUR | bob &lt;b&amp;b> | 10:00:00 | 8.00 s | 0 | shop | "
                  "metabase\\|bi |  | `SELECT * FROM t WHERE a < $1 AND b > $2 & c \\| d` |\n");
    CHECK_HAS(md, "\n| 2 | bob &lt;b&amp;b> | 0.33 EUR | 2 | 27.1% | new | `SELECT * FROM t` |\n");
    CHECK_HAS(md, "\n| 4 | user alice | day | 0.90 EUR | 1.00 EUR | 90.0% | block |\n");
    CHECK_HAS(md, "\n1 statements: 1 refused, 0 cancelled.\n");
    CHECK_HAS(md, "\n| 7 | user bob &lt;b&amp;b> | 1 | 0 | 0.00 EUR |\n");
    CHECK_HAS(md, "\n## Approvals in force\n\n1, 2 runs under them, 0.40 EUR.\n");
    CHECK_HAS(md, "\n| 3 | T-4M4WP4 | bob &lt;b&amp;b> | statement | 0.50 EUR | ana | 2031-05-14 "
                  "11:00 | 2 | 0.40 EUR | `SELECT a FROM t` |\n");
    CHECK_HAS(md, "\n## Data that cost the most\n\n**0.90 EUR** of the day's 1.23 EUR (72.9%) was "
                  "spent on known tables.\n\n| # | Schema | Cost | Share | Compute |\n");
    CHECK_HAS(md, "\n| 2 | (unqualified).x\\|&lt;y> | 0.20 EUR | 16.2% | 1 | 2.00 s |\n");
    CHECK_HAS(md, "\n## Regressions per release, 2031-05-08 to 2031-05-14: shapes at least twice "
                  "as dear under their newest release, mean above 0.0001 EUR\n\n");
    CHECK_HAS(md, "\n| 1 | 5.00x | v2&lt;b> | 0.25 EUR | 4 | v1 | 0.05 EUR | 12 | "
                  "`SELECT a FROM t` |\n");
    CHECK_HAS(md, "\n| 1 | 5 | 2 | 1 | 0.15 EUR | 0.12 EUR | alice, bob &lt;b&amp;b> | "
                  "`SELECT * FROM t` |\n");
    CHECK_HAS(md, "\nA cached or materialized result would have saved **0.12 EUR**: what every "
                  "run but the cheapest cost.\n");
    free(md);
}

static void test_html(const json_t *doc)
{
    json_t *d = json_deep_copy(doc);
    json_t *third = json_array_get(json_object_get(d, "statements"), 2);
    json_object_set_new(third, "normalized", json_string("</code><script>alert(1)</script>"));
    char *h = render(d, PGT_REPORT_FORMAT_HTML, NULL);
    CHECK(h && strncmp(h, "<!DOCTYPE html>", 15) == 0);
    CHECK(h && !strstr(h, "<script") && !strstr(h, "<b&b>") && !strstr(h, "bob <"));
    CHECK_HAS(h, "&lt;/code&gt;&lt;script&gt;alert(1)&lt;/script&gt;");
    CHECK_HAS(h, ">bob &lt;b&amp;b&gt;</td>");
    CHECK_HAS(h, ">metabase|bi</td>");
    CHECK_HAS(h, "SELECT * FROM t WHERE a &lt; $1 AND b &gt; $2 &amp; c | d</code>");
    CHECK_HAS(h, "SELECT a, &quot;b,c&quot; FROM t WHERE x = $1 -- it&#39;s a &quot;quote&quot;");
    const char *ids[] = {"statements", "users",  "shapes",      "budgets", "refusals",
                         "schemas",    "tables", "regressions", "repeats", "approvals"};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char id[32];
        snprintf(id, sizeof(id), "id=\"%s\"", ids[i]);
        CHECK_HAS(h, id);
    }
    CHECK_HAS(h, "1.23 EUR");
    CHECK_HAS(h, ">user alice</td>");
    CHECK_HAS(h, ">Data that cost the most</h2>");
    CHECK_HAS(h, "0.90 EUR of the day&#39;s 1.23 EUR (72.9%) was spent on known tables.");
    CHECK_HAS(h, ">(unqualified).x|&lt;y&gt;</code>");
    CHECK_HAS(h, ">Regressions per release, 2031-05-08 to 2031-05-14: shapes at least twice as "
                 "dear under their newest release, mean above 0.0001 EUR</h2>");
    CHECK_HAS(h, ">5.00x</td>");
    CHECK_HAS(h, ">v2&lt;b&gt;</td>");
    CHECK_HAS(h, ">alice, bob &lt;b&amp;b&gt;</td>");
    CHECK_HAS(h, "A cached or materialized result would have saved 0.12 EUR: what every run but "
                 "the cheapest cost.</p>");
    CHECK_HAS(h, "Approvals in force: 1, 2 runs under them, 0.40 EUR");
    CHECK_HAS(h, ">2031-05-14 11:00</td>");
    free(h);
    json_decref(d);
}

static void test_json(const json_t *doc)
{
    char *s = render(doc, PGT_REPORT_FORMAT_JSON, NULL);
    json_t *back = s ? json_loads(s, 0, NULL) : NULL;
    CHECK(back && json_equal(back, (json_t *)doc)); /* the document itself */
    CHECK(s && s[strlen(s) - 1] == '\n');
    json_decref(back);
    free(s);
}

/* The CSV sections as a reader gets them (records end in CRLF). */
static const struct {
    const char *name; /* section */
    const char *want; /* whole, or the start of it */
    bool whole;       /* want is the whole section */
} csv_cases[] = {
    {"statements",
     "rank,cost,currency,user,database,application,started_at,duration_s,compute_s,rows,"
     "bytes_out,status,sqlstate,tags,kind,fingerprint,normalized\r\n"
     "1,0.900000,EUR,alice,shop,psql,2031-05-14T09:12:33.000120+02:00,4.200000,4.000000,1200,"
     "5000,ok,,\"{\"\"team\"\":\"\"data\"\"}\",select,00000000000000a1,"
     "\"SELECT a, \"\"b,c\"\" FROM t\nWHERE x = $1 -- it's a \"\"quote\"\"\"\r\n"
     "2,0.300000,EUR,bob <b&b>,shop,metabase|bi,2031-05-14T10:00:00.000000+02:00,8.000000,"
     "8.000000,0,0,error,42P01,,select,00000000000000b2,"
     "SELECT * FROM t WHERE a < $1 AND b > $2 & c | d\r\n"
     "3,0.034560,EUR,bob <b&b>,shop,,2031-05-14T11:30:00.000000+02:00,0.500000,0.500000,1,10,"
     "refused,53400,,select,00000000000000c3,SELECT 1\r\n",
     true},
    {"users",
     "rank,user,cost,currency,statements,compute_s,share_pct,previous_day_cost,change,"
     "change_pct,top_shape_fingerprint,top_shape_cost,top_shape_statements,"
     "top_shape_normalized\r\n"
     "1,alice,0.900000,EUR,1,4.000000,72.900000,0.600000,0.300000,50.000000,00000000000000a1,"
     "0.900000,1,SELECT a FROM t\r\n"
     "2,bob <b&b>,0.334560,EUR,2,8.500000,27.100000,0.000000,0.334560,,00000000000000b2,"
     "0.300000,1,SELECT * FROM t\r\n",
     true},
    {"shapes",
     "rank,fingerprint,statements,cost,mean_cost,max_cost,currency,compute_s,share_pct,users,"
     "user_names,kind,normalized\r\n"
     "1,00000000000000a1,1,0.900000,0.900000,0.900000,EUR,4.000000,72.900000,1,alice,select,"
     "SELECT a FROM t\r\n",
     false},
    {"totals",
     "date,timezone,statements,cost,currency,compute_s,users,previous_day,"
     "previous_day_statements,previous_day_cost,previous_day_compute_s,statements_change_pct,"
     "cost_change_pct,compute_change_pct,mean_7d_days,mean_7d_statements,mean_7d_cost,"
     "mean_7d_compute_s,statements_vs_mean_pct,cost_vs_mean_pct,compute_vs_mean_pct\r\n"
     "2031-05-14,Europe/Berlin,3,1.234560,EUR,12.500000,2,2031-05-13,2,1.000000,10.000000,"
     "50.000000,23.500000,25.000000,7,2.500000,0.900000,9.000000,20.000000,37.200000,"
     "38.900000\r\n",
     true},
    {"budgets",
     "id,subject_type,subject,user,period,period_start,period_end,spent,limit,granted,currency,"
     "percent,threshold_pct,action\r\n"
     "4,user,alice,,day,2031-05-14T00:00:00.000000+02:00,2031-05-15T00:00:00.000000+02:00,"
     "0.900000,1.000000,0.000000,EUR,90.000000,80,block\r\n",
     true},
    {"refusals",
     "budget_id,subject_type,subject,period,refused,budget_cancelled,cost,currency\r\n"
     "7,user,bob <b&b>,day,1,0,0.000000,EUR\r\n",
     true},
    {"schemas",
     "rank,schema,cost,currency,share_pct,compute_s\r\n"
     "1,analytics,0.700000,EUR,56.700000,7.000000\r\n"
     "2,,0.200000,EUR,16.200000,2.000000\r\n",
     true},
    {"tables",
     "rank,schema,table,queries,cost,currency,share_pct,compute_s\r\n"
     "1,analytics,sales,2,0.600000,EUR,48.600000,6.000000\r\n"
     "2,,x|<y>,1,0.200000,EUR,16.200000,2.000000\r\n"
     "3,analytics,stores,1,0.100000,EUR,8.100000,1.000000\r\n",
     true},
    {"regressions",
     "rank,fingerprint,ratio,release,first_seen,statements,mean_cost,previous_release,"
     "previous_statements,previous_mean_cost,currency,kind,normalized\r\n"
     "1,00000000000000a1,5.000000,v2<b>,2031-05-13T08:00:00.000000+02:00,4,0.250000,v1,12,"
     "0.050000,EUR,select,SELECT a FROM t\r\n",
     true},
    {"repeats",
     "rank,fingerprint,constants,runs,users,applications,cost,saved,currency,who,kind,"
     "normalized\r\n"
     "1,00000000000000b2,00000000deadbeef,5,2,1,0.150000,0.120000,EUR,\"alice, bob <b&b>\","
     "select,SELECT * FROM t\r\n",
     true},
    {"approvals",
     "id,ticket,user,database,fingerprint,scope,max,approved_by,approved_at,until,runs,cost,"
     "currency,normalized\r\n"
     "3,T-4M4WP4,bob <b&b>,shop,00000000000000a1,statement,0.500000,ana,"
     "2031-05-14T09:00:00.000000+02:00,2031-05-14T11:00:00.000000+02:00,2,0.400000,EUR,"
     "SELECT a FROM t\r\n",
     true},
};

static void test_csv(const json_t *doc)
{
    pgt_buf_t all = {0};
    for (size_t i = 0; i < sizeof(csv_cases) / sizeof(csv_cases[0]); i++) {
        char *s = render(doc, PGT_REPORT_FORMAT_CSV, csv_cases[i].name);
        size_t n = strlen(csv_cases[i].want);
        bool ok = s && (csv_cases[i].whole ? strcmp(s, csv_cases[i].want) == 0
                                           : strncmp(s, csv_cases[i].want, n) == 0);
        if (!ok)
            fprintf(stderr, "csv section %s:\n%s\n", csv_cases[i].name, s ? s : "(null)");
        CHECK(ok);
        pgt_buf_printf(&all, "# %s\r\n%s", csv_cases[i].name, s ? s : "");
        free(s);
    }
    /* Without a section: every one, in order, after its "# name" line. */
    char *s = render(doc, PGT_REPORT_FORMAT_CSV, NULL);
    CHECK_STR(s, all.s);
    free(s);
    pgt_buf_free(&all);
    char err[256] = "";
    CHECK(pgt_report_render(doc, PGT_REPORT_FORMAT_CSV, "nope", err, sizeof(err)) == NULL);
    CHECK_HAS(err, "unknown section 'nope': use statements, users, shapes, totals, budgets, "
                   "refusals, schemas, tables, regressions, repeats or approvals");
}

/* The Slack payload: its blocks within Block Kit's limits; returns the
 * mrkdwn of every section, one after another (the caller frees it). */
static char *check_slack(const char *payload, size_t *nblocks)
{
    json_t *p = payload ? json_loads(payload, 0, NULL) : NULL;
    const json_t *blocks = json_object_get(p, "blocks");
    CHECK(json_is_array(blocks));
    *nblocks = json_array_size(blocks);
    CHECK(*nblocks <= 50);
    pgt_buf_t texts = {0};
    size_t i;
    const json_t *b;
    json_array_foreach(blocks, i, b)
    {
        const char *type = json_string_value(json_object_get(b, "type"));
        const char *text = json_string_value(json_object_get(json_object_get(b, "text"), "text"));
        if (type && strcmp(type, "header") == 0)
            CHECK(text && strlen(text) <= 150);
        if (type && strcmp(type, "section") == 0) {
            CHECK(text && strlen(text) <= 3000);
            pgt_buf_printf(&texts, "%s\n", text ? text : "");
        }
    }
    json_decref(p);
    return pgt_buf_take(&texts);
}

static void test_slack(const json_t *doc)
{
    char *s = render(doc, PGT_REPORT_FORMAT_SLACK, NULL);
    size_t n;
    char *text = check_slack(s, &n);
    CHECK_INT(n, 21); /* header, context, totals, and nine lists after dividers */
    CHECK_HAS(s, "\"text\":\"pgtally: 2031-05-14: 1.23 EUR in 3 statements\"");
    CHECK_HAS(text, "*Total: 1.23 EUR* in 3 statements, 12.50 s compute, 2 users\n");
    CHECK_HAS(text, "*Top 3 statements by cost*\n\n*1.* 0.90 EUR · `alice` · 09:12:33 · 4.20 s · "
                    "1,200 rows · `shop` · `psql` · `team=data`\n`SELECT a, \"b,c\" FROM t WHERE "
                    "x = $1 -- it's a \"quote\"`\n");
    CHECK_HAS(text, "· `bob &lt;b&amp;b&gt;` · 10:00:00 ·");
    CHECK_HAS(text, "`SELECT * FROM t WHERE a &lt; $1 AND b &gt; $2 &amp; c | d`");
    CHECK_HAS(text, "• #4 `user alice` (day): 0.90 EUR of 1.00 EUR, *90.0%* (block)");
    CHECK_HAS(text, "• #7 `user bob &lt;b&amp;b&gt;`: 1 refused, 0 cancelled");
    CHECK_HAS(text, "*Approvals in force: 1, 2 runs under them, 0.40 EUR*");
    CHECK_HAS(text, "• #3 T-4M4WP4 for `bob &lt;b&amp;b&gt;` by `ana` (statement, cap 0.50 EUR, "
                    "until 2031-05-14 11:00): 2 runs, 0.40 EUR");
    CHECK_HAS(text, "*Data that cost the most*\n*0.90 EUR* of the day's 1.23 EUR (72.9%) was "
                    "spent on known tables\n_Schemas_\n1. `analytics` 0.70 EUR (56.7%) · 7.00 s "
                    "compute\n2. `(unqualified)` 0.20 EUR (16.2%)");
    CHECK_HAS(text, "_Tables_\n1. `analytics.sales` 0.60 EUR (48.6%) · 2 queries · 6.00 s "
                    "compute\n2. `(unqualified).x|&lt;y&gt;` 0.20 EUR");
    CHECK_HAS(text, "*Regressions per release, 2031-05-08 to 2031-05-14: shapes at least twice "
                    "as dear under their newest release, mean above 0.0001 EUR*\n\n*1.* *5.00x* · "
                    "`v2&lt;b&gt;` mean 0.25 EUR (4 runs) vs `v1` mean 0.05 EUR (12 runs)\n"
                    "`SELECT a FROM t`");
    CHECK_HAS(text, "*1.* 5 runs · 0.15 EUR · saved *0.12 EUR* · `alice, bob &lt;b&amp;b&gt;`\n"
                    "`SELECT * FROM t`\n\nA cached or materialized result would have saved "
                    "*0.12 EUR*: what every run but the cheapest cost.");
    CHECK(text && !strchr(text, '<') && !strchr(text, '>'));
    free(text);
    free(s);
}

/* Width of a code span's text once mrkdwn's entities are read back. */
static size_t span_width(const char *start, size_t len)
{
    pgt_buf_t t = {0};
    for (size_t i = 0; i < len; i++) {
        const char *ent[] = {"&amp;", "&lt;", "&gt;"}, *ch = "&<>";
        size_t k = 0;
        while (k < 3 && strncmp(start + i, ent[k], strlen(ent[k])) != 0)
            k++;
        pgt_buf_putc(&t, k < 3 ? ch[k] : start[i]);
        i += k < 3 ? strlen(ent[k]) - 1 : 0;
    }
    size_t w = pgt_text_width(t.s);
    pgt_buf_free(&t);
    return w;
}

static void test_slack_long(const json_t *doc)
{
    /* 400 statements of 20 kB with characters to escape and 4-byte ones:
     * more sections than Slack takes blocks. */
    json_t *d = json_deep_copy(doc);
    json_t *list = json_array(), *one = json_array_get(json_object_get(doc, "statements"), 0);
    pgt_buf_t huge = {0};
    while (huge.len < 20000)
        pgt_buf_puts(&huge, "SELECT '&<>`*_~|😀é' || ");
    for (int i = 0; i < 400; i++) {
        json_t *x = json_deep_copy(one);
        json_object_set_new(x, "rank", json_integer(i + 1));
        json_object_set_new(x, "normalized", json_string(huge.s));
        json_array_append_new(list, x);
    }
    json_object_set_new(d, "statements", list);
    char *s = render(d, PGT_REPORT_FORMAT_SLACK, NULL);
    size_t n;
    char *text = check_slack(s, &n);
    CHECK_INT(n, 50);
    CHECK_HAS(s, "Slack holds 50 blocks: the rest of this report is in pgtallyctl report.");
    /* Each statement's span is cut to 200 columns and "…"; no backtick,
     * no broken entity inside. */
    int spans = 0;
    for (const char *p = text; p && (p = strstr(p, "\n`SELECT '")); spans++) {
        const char *end = strchr(p + 2, '`');
        CHECK(end != NULL);
        if (!end)
            break;
        size_t len = (size_t)(end - (p + 2));
        CHECK(len >= 3 && strncmp(end - 3, "…", 3) == 0);
        CHECK(span_width(p + 2, len) <= 201);
        CHECK(span_width(p + 2, len) >= 195);
        for (const char *q = p + 2; q < end; q++)
            CHECK(*q != '&' || !strncmp(q, "&amp;", 5) || !strncmp(q, "&lt;", 4) ||
                  !strncmp(q, "&gt;", 4));
        p = end;
    }
    CHECK(spans >= 20);
    free(text);
    free(s);
    pgt_buf_free(&huge);
    json_decref(d);
}

int main(void)
{
    json_t *doc = day();
    test_text(doc);
    test_markdown(doc);
    test_html(doc);
    test_json(doc);
    test_csv(doc);
    test_slack(doc);
    test_slack_long(doc);
    json_decref(doc);
    TASK_DONE();
}
