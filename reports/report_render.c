/* The report's renderers for text, Markdown, JSON and CSV (HTML and Slack
 * have their own files), and the pieces they all share. A renderer reads
 * only the document that pgt_report_build made, so the same report renders
 * the same way anywhere; every string from the ledger is escaped for the
 * format it lands in. */
#include "report_render.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/names.h"
#include "pgtally/pricing.h"
#include "pgtally/report.h"

/* Widths of cut cells, in columns, the ellipsis ("..." in text, "…" in
 * Markdown) included: 70, 50 and 40 columns of text in text tables, 120, 60
 * and 40 in Markdown. */
#define TEXT_QUERY_WIDTH 73     /* statement text in a text table */
#define TEXT_TOP_QUERY_WIDTH 53 /* a user's top shape in a text table */
#define TEXT_CELL_WIDTH 43      /* any other text cell in a text table */
#define MD_QUERY_WIDTH 121      /* statement text in a Markdown table */
#define MD_TOP_QUERY_WIDTH 61   /* a user's top shape in a Markdown table */
#define MD_CELL_WIDTH 41        /* any other text cell in Markdown */
#define BAR_WIDTH 10            /* characters of a text bar */

PGT_NAMES_DEFINE(PGT_REPORT_FORMAT_MAP, pgt_report_format_t, pgt_report_format_name,
                 pgt_report_format_parse)

/* ---- Output ------------------------------------------------------------- */

char *rf_finish(pgt_buf_t *b, char *err, size_t errlen)
{
    char *s = pgt_buf_take(b);
    if (!s)
        snprintf(err, errlen, "out of memory");
    return s;
}

/* ---- Reading the document ------------------------------------------------ */

const char *rj_str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

int64_t rj_int(const json_t *o, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(o, key));
}

double rj_num(const json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

const json_t *rj_arr(const json_t *o, const char *key)
{
    const json_t *a = json_object_get(o, key);
    return json_is_array(a) ? a : NULL;
}

bool rj_null(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return !v || json_is_null(v);
}

/* ---- Formatting ---------------------------------------------------------- */

char *rf_money(const json_t *doc, const json_t *o, const char *key, char *buf, size_t len)
{
    char name[64];
    snprintf(name, sizeof(name), "%s_micro", key);
    return pgt_money_format_short(rj_int(o, name), rj_str(doc, "currency"), buf, len);
}

char *rf_count(int64_t n, char *buf, size_t len)
{
    char digits[32];
    int k = snprintf(digits, sizeof(digits), "%lld", (long long)(n < 0 ? -n : n));
    size_t at = 0;
    if (n < 0 && at + 1 < len)
        buf[at++] = '-';
    for (int i = 0; i < k && at + 2 < len; i++) {
        if (i && (k - i) % 3 == 0)
            buf[at++] = ',';
        buf[at++] = digits[i];
    }
    buf[at] = '\0';
    return buf;
}

char *rf_change(const json_t *o, const char *key, const char *none_text, char *buf, size_t len)
{
    if (rj_null(o, key))
        snprintf(buf, len, "%s", none_text);
    else
        snprintf(buf, len, "%+.1f%%", rj_num(o, key));
    return buf;
}

char *rf_clock(const char *iso, char *buf, size_t len)
{
    if (strlen(iso) >= 19 && iso[10] == 'T')
        snprintf(buf, len, "%.8s", iso + 11);
    else
        snprintf(buf, len, "%s", "");
    return buf;
}

char *rf_minute(const char *iso, char *buf, size_t len)
{
    if (strlen(iso) >= 16 && iso[10] == 'T')
        snprintf(buf, len, "%.10s %.5s", iso, iso + 11);
    else
        snprintf(buf, len, "%s", "");
    return buf;
}

char *rf_approval_max(const json_t *doc, const json_t *a, char *buf, size_t len)
{
    if (rj_null(a, "max"))
        snprintf(buf, len, "none");
    else
        rf_money(doc, a, "max", buf, len);
    return buf;
}

void rf_tags(pgt_buf_t *out, const json_t *tags)
{
    const char *key;
    json_t *v;
    bool first = true;
    json_object_foreach((json_t *)tags, key, v)
    {
        pgt_buf_printf(out, "%s%s=", first ? "" : ", ", key);
        if (json_is_string(v))
            pgt_buf_puts(out, json_string_value(v));
        else {
            char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            if (t)
                pgt_buf_puts(out, t);
            free(t);
        }
        first = false;
    }
}

/* ---- Text: aligned tables for a terminal --------------------------------- */

/* Prints table t to out and frees it (a NULL t, out of memory, fails out). */
static void table_done(pgt_buf_t *out, pgt_text_table_t *t)
{
    pgt_text_table_print(t, out);
    pgt_text_table_free(t);
}

/* The day's totals and how they compare, in words; shared by text and
 * Markdown (bold marks the figures in Markdown). */
static void totals_lines(pgt_buf_t *out, const json_t *doc, const char *bold)
{
    const json_t *t = json_object_get(doc, "totals");
    const json_t *prev = json_object_get(t, "previous_day"), *mean = json_object_get(t, "mean_7d");
    const json_t *cp = json_object_get(t, "change_vs_previous_day");
    const json_t *cm = json_object_get(t, "change_vs_mean_7d");
    char cost[RF_SHORT], n[RF_SHORT], comp[RF_SHORT], users[RF_SHORT], a[RF_SHORT], b[RF_SHORT],
        c[RF_SHORT], pc[RF_SHORT], mc[RF_SHORT];
    pgt_buf_printf(out, "Total: %s%s%s in %s statements, %s compute, %s users\n", bold,
                   rf_money(doc, t, "cost", cost, sizeof(cost)), bold,
                   rf_count(rj_int(t, "statements"), n, sizeof(n)),
                   pgt_fmt_seconds(rj_num(t, "compute_s"), comp, sizeof(comp)),
                   rf_count(rj_int(t, "users"), users, sizeof(users)));
    pgt_buf_printf(out, "vs %s (%s): cost %s, statements %s, compute %s\n", rj_str(prev, "date"),
                   rf_money(doc, prev, "cost", pc, sizeof(pc)),
                   rf_change(cp, "cost_pct", "n/a", a, sizeof(a)),
                   rf_change(cp, "statements_pct", "n/a", b, sizeof(b)),
                   rf_change(cp, "compute_pct", "n/a", c, sizeof(c)));
    pgt_buf_printf(out, "vs 7-day mean (%lld day%s, %s): cost %s, statements %s, compute %s\n",
                   (long long)rj_int(mean, "days"), rj_int(mean, "days") == 1 ? "" : "s",
                   rf_money(doc, mean, "cost", mc, sizeof(mc)),
                   rf_change(cm, "cost_pct", "n/a", a, sizeof(a)),
                   rf_change(cm, "statements_pct", "n/a", b, sizeof(b)),
                   rf_change(cm, "compute_pct", "n/a", c, sizeof(c)));
    const json_t *by = json_object_get(t, "by_status");
    const char *key;
    json_t *v;
    bool first = true;
    json_object_foreach((json_t *)by, key, v)
    {
        if (json_integer_value(v) == 0 || strcmp(key, "ok") == 0)
            continue;
        pgt_buf_printf(out, "%s%s %s", first ? "Did not complete: " : ", ",
                       rf_count(json_integer_value(v), n, sizeof(n)), key);
        first = false;
    }
    if (!first)
        pgt_buf_putc(out, '\n');
}

static const char *const text_stmt_head[] = {
    "#", "COST", "USER", "STARTED", "DURATION", "ROWS", "DATABASE", "APPLICATION", "TAGS", "QUERY"};
static const bool text_stmt_right[] = {true, true,  false, false, true,
                                       true, false, false, false, false};

static void text_statements(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "statements");
    pgt_buf_printf(out, "\nTop %zu statements by cost\n\n", json_array_size(a));
    if (!json_array_size(a)) {
        pgt_buf_puts(out, "No statements on this day.\n");
        return;
    }
    pgt_text_table_t *t = pgt_text_table_new(10, text_stmt_head, text_stmt_right);
    size_t i;
    const json_t *s;
    json_array_foreach(a, i, s)
    {
        char rank[16], cost[RF_SHORT], clock[16], dur[RF_SHORT], rows[RF_SHORT];
        pgt_buf_t tags = {0};
        rf_tags(&tags, json_object_get(s, "tags"));
        snprintf(rank, sizeof(rank), "%lld", (long long)rj_int(s, "rank"));
        pgt_text_table_cell(t, rank, 0);
        pgt_text_table_cell(t, rf_money(doc, s, "cost", cost, sizeof(cost)), 0);
        pgt_text_table_cell(t, rj_str(s, "user"), TEXT_CELL_WIDTH);
        pgt_text_table_cell(t, rf_clock(rj_str(s, "started_at"), clock, sizeof(clock)), 0);
        pgt_text_table_cell(t, pgt_fmt_seconds(rj_num(s, "duration_s"), dur, sizeof(dur)), 0);
        pgt_text_table_cell(t, rf_count(rj_int(s, "rows"), rows, sizeof(rows)), 0);
        pgt_text_table_cell(t, rj_str(s, "database"), TEXT_CELL_WIDTH);
        pgt_text_table_cell(t, rj_str(s, "application"), TEXT_CELL_WIDTH);
        pgt_text_table_cell(t, tags.s ? tags.s : "", TEXT_CELL_WIDTH);
        pgt_text_table_cell(t, rj_str(s, "normalized"), TEXT_QUERY_WIDTH);
        out->failed |= tags.failed;
        pgt_buf_free(&tags);
    }
    table_done(out, t);
}

static const char *const text_user_head[] = {"#",     "USER",          "COST",      "STATEMENTS",
                                             "SHARE", "VS DAY BEFORE", "TOP SHAPE", "QUERY"};
static const bool text_user_right[] = {true, false, true, true, true, true, false, false};

static void text_users(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "users");
    if (!json_array_size(a))
        return;
    pgt_buf_printf(out, "\nTop %zu users by cost\n\n", json_array_size(a));
    pgt_text_table_t *t = pgt_text_table_new(8, text_user_head, text_user_right);
    size_t i;
    const json_t *u;
    json_array_foreach(a, i, u)
    {
        char rank[16], cost[RF_SHORT], n[RF_SHORT], share[RF_SHORT], ch[RF_SHORT];
        const json_t *top = json_object_get(u, "top_shape");
        snprintf(rank, sizeof(rank), "%lld", (long long)rj_int(u, "rank"));
        snprintf(share, sizeof(share), "%.1f%%", rj_num(u, "share_pct"));
        pgt_text_table_cell(t, rank, 0);
        pgt_text_table_cell(t, rj_str(u, "user"), TEXT_CELL_WIDTH);
        pgt_text_table_cell(t, rf_money(doc, u, "cost", cost, sizeof(cost)), 0);
        pgt_text_table_cell(t, rf_count(rj_int(u, "statements"), n, sizeof(n)), 0);
        pgt_text_table_cell(t, share, 0);
        pgt_text_table_cell(t, rf_change(u, "change_pct", "new", ch, sizeof(ch)), 0);
        pgt_text_table_cell(t, rj_str(top, "fingerprint"), 0);
        pgt_text_table_cell(t, rj_str(top, "normalized"), TEXT_TOP_QUERY_WIDTH);
    }
    table_done(out, t);
}

static const char *const text_shape_head[] = {"#",    "FINGERPRINT", "TOTAL", "COUNT",
                                              "MEAN", "MAX",         "USERS", "QUERY"};
static const bool text_shape_right[] = {true, false, true, true, true, true, true, false};

static void text_shapes(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "shapes");
    if (!json_array_size(a))
        return;
    pgt_buf_printf(out, "\nTop %zu query shapes by total cost\n\n", json_array_size(a));
    pgt_text_table_t *t = pgt_text_table_new(8, text_shape_head, text_shape_right);
    size_t i;
    const json_t *s;
    json_array_foreach(a, i, s)
    {
        char rank[16], total[RF_SHORT], n[RF_SHORT], mean[RF_SHORT], max[RF_SHORT], users[RF_SHORT];
        snprintf(rank, sizeof(rank), "%lld", (long long)rj_int(s, "rank"));
        pgt_text_table_cell(t, rank, 0);
        pgt_text_table_cell(t, rj_str(s, "fingerprint"), 0);
        pgt_text_table_cell(t, rf_money(doc, s, "cost", total, sizeof(total)), 0);
        pgt_text_table_cell(t, rf_count(rj_int(s, "statements"), n, sizeof(n)), 0);
        pgt_text_table_cell(t, rf_money(doc, s, "mean_cost", mean, sizeof(mean)), 0);
        pgt_text_table_cell(t, rf_money(doc, s, "max_cost", max, sizeof(max)), 0);
        pgt_text_table_cell(t, rf_count(rj_int(s, "users"), users, sizeof(users)), 0);
        pgt_text_table_cell(t, rj_str(s, "normalized"), TEXT_QUERY_WIDTH);
    }
    table_done(out, t);
}

void rf_data_name(pgt_buf_t *out, const json_t *item)
{
    const char *schema = rj_str(item, "schema");
    pgt_buf_puts(out, schema[0] ? schema : "(unqualified)");
    if (!rj_null(item, "table"))
        pgt_buf_printf(out, ".%s", rj_str(item, "table"));
}

void rf_data_intro(pgt_buf_t *out, const json_t *doc, const char *bold)
{
    const json_t *d = json_object_get(doc, "data");
    char cost[RF_SHORT], total[RF_SHORT];
    pgt_buf_printf(out, "%s%s%s of the day's %s (%.1f%%) was spent on known tables", bold,
                   rf_money(doc, d, "cost", cost, sizeof(cost)), bold,
                   rf_money(doc, json_object_get(doc, "totals"), "cost", total, sizeof(total)),
                   rj_num(d, "share_pct"));
}

char *rf_ratio(const json_t *o, const char *key, char *buf, size_t len)
{
    snprintf(buf, len, "%.2fx", rj_num(o, key));
    return buf;
}

void rf_regressions_title(pgt_buf_t *out, const json_t *doc)
{
    const json_t *r = json_object_get(doc, "regressions");
    char min[RF_SHORT];
    pgt_buf_printf(out,
                   "Regressions per release, %s to %s: shapes at least twice as dear under their "
                   "newest release, mean above %s",
                   rj_str(r, "since"), rj_str(doc, "date"),
                   rf_money(doc, r, "min_mean_cost", min, sizeof(min)));
}

void rf_repeats_title(pgt_buf_t *out, const json_t *doc)
{
    pgt_buf_printf(out,
                   "Work done twice: the same statement with the same constants run more than %lld "
                   "times by several users or applications",
                   (long long)rj_int(json_object_get(doc, "repeats"), "min_runs"));
}

void rf_repeats_note(pgt_buf_t *out, const json_t *doc, const char *bold)
{
    char saved[RF_SHORT];
    pgt_buf_printf(
        out,
        "A cached or materialized result would have saved %s%s%s: what every run but "
        "the cheapest cost.",
        bold, rf_money(doc, json_object_get(doc, "repeats"), "saved", saved, sizeof(saved)), bold);
}

static const char *const text_schema_head[] = {"#", "SCHEMA", "COST", "SHARE", "COMPUTE"};
static const bool text_schema_right[] = {true, false, true, true, true};
static const char *const text_table_head[] = {"#", "TABLE", "COST", "SHARE", "QUERIES", "COMPUTE"};
static const bool text_table_right[] = {true, false, true, true, true, true};

/* One list of the data section: schemas, or tables (with queries). */
static void text_data_list(pgt_buf_t *out, const json_t *doc, const json_t *a, bool tables)
{
    pgt_text_table_t *t = tables ? pgt_text_table_new(6, text_table_head, text_table_right)
                                 : pgt_text_table_new(5, text_schema_head, text_schema_right);
    size_t i;
    const json_t *x;
    json_array_foreach(a, i, x)
    {
        char rank[16], cost[RF_SHORT], share[RF_SHORT], n[RF_SHORT], comp[RF_SHORT];
        pgt_buf_t name = {0};
        rf_data_name(&name, x);
        snprintf(rank, sizeof(rank), "%lld", (long long)rj_int(x, "rank"));
        snprintf(share, sizeof(share), "%.1f%%", rj_num(x, "share_pct"));
        pgt_text_table_cell(t, rank, 0);
        pgt_text_table_cell(t, name.s ? name.s : "", TEXT_CELL_WIDTH + 40);
        pgt_text_table_cell(t, rf_money(doc, x, "cost", cost, sizeof(cost)), 0);
        pgt_text_table_cell(t, share, 0);
        if (tables)
            pgt_text_table_cell(t, rf_count(rj_int(x, "queries"), n, sizeof(n)), 0);
        pgt_text_table_cell(t, pgt_fmt_seconds(rj_num(x, "compute_s"), comp, sizeof(comp)), 0);
        out->failed |= name.failed;
        pgt_buf_free(&name);
    }
    table_done(out, t);
}

/* The data that cost the most: schemas, then tables; nothing on a day
 * whose statements read no known relation. */
static void text_data(pgt_buf_t *out, const json_t *doc)
{
    const json_t *d = json_object_get(doc, "data");
    const json_t *schemas = rj_arr(d, "schemas"), *tables = rj_arr(d, "tables");
    if (!json_array_size(tables))
        return;
    pgt_buf_puts(out, "\nData that cost the most\n\n");
    rf_data_intro(out, doc, "");
    pgt_buf_puts(out, "\n\n");
    text_data_list(out, doc, schemas, false);
    pgt_buf_putc(out, '\n');
    text_data_list(out, doc, tables, true);
}

void rf_subject_text(pgt_buf_t *out, const json_t *b)
{
    if (rj_null(b, "subject_type"))
        pgt_buf_puts(out, "(removed)");
    else if (strcmp(rj_str(b, "subject_type"), "default") == 0)
        pgt_buf_printf(out, "default%s%s", rj_null(b, "user") ? "" : ": ", rj_str(b, "user"));
    else
        pgt_buf_printf(out, "%s %s", rj_str(b, "subject_type"), rj_str(b, "subject"));
}

/* "[#####-----]" for a percent. */
static char *text_bar(double pct, char *buf, size_t len)
{
    int filled = pct >= 100 ? BAR_WIDTH : pct <= 0 ? 0 : (int)(pct / (100.0 / BAR_WIDTH));
    size_t at = 0;
    buf[at++] = '[';
    for (int i = 0; i < BAR_WIDTH && at + 2 < len; i++)
        buf[at++] = i < filled ? '#' : '-';
    buf[at++] = ']';
    buf[at] = '\0';
    return buf;
}

static const char *const text_budget_head[] = {"ID",    "SUBJECT", "PERIOD", "SPENT",
                                               "LIMIT", "USED",    "",       "ACTION"};
static const bool text_budget_right[] = {true, false, false, true, true, false, true, false};

static void text_budgets(pgt_buf_t *out, const json_t *doc)
{
    const json_t *bs = json_object_get(doc, "budgets");
    const json_t *a = rj_arr(bs, "items");
    if (!json_array_size(a))
        return;
    pgt_buf_printf(
        out, "\nBudgets at or above a warn threshold (%lld of %lld, spend to the end of %s)\n\n",
        (long long)rj_int(bs, "over_threshold"), (long long)rj_int(bs, "checked"),
        rj_str(doc, "date"));
    pgt_text_table_t *t = pgt_text_table_new(8, text_budget_head, text_budget_right);
    size_t i;
    const json_t *b;
    json_array_foreach(a, i, b)
    {
        char id[24], spent[RF_SHORT], limit[RF_SHORT], bar[16], pct[16];
        pgt_buf_t subject = {0};
        rf_subject_text(&subject, b);
        snprintf(id, sizeof(id), "%lld", (long long)rj_int(b, "id"));
        snprintf(pct, sizeof(pct), "%d%%", (int)rj_num(b, "percent"));
        pgt_text_table_cell(t, id, 0);
        pgt_text_table_cell(t, subject.s ? subject.s : "", TEXT_CELL_WIDTH);
        pgt_text_table_cell(t, rj_str(b, "period"), 0);
        pgt_text_table_cell(t, rf_money(doc, b, "spent", spent, sizeof(spent)), 0);
        pgt_text_table_cell(t, rf_money(doc, b, "limit", limit, sizeof(limit)), 0);
        pgt_text_table_cell(t, text_bar(rj_num(b, "percent"), bar, sizeof(bar)), 0);
        pgt_text_table_cell(t, pct, 0);
        pgt_text_table_cell(t, rj_str(b, "action"), 0);
        out->failed |= subject.failed;
        pgt_buf_free(&subject);
    }
    table_done(out, t);
}

static const char *const text_refusal_head[] = {"BUDGET",  "SUBJECT",   "PERIOD",
                                                "REFUSED", "CANCELLED", "COST"};
static const bool text_refusal_right[] = {true, false, false, true, true, true};

static void text_refusals(pgt_buf_t *out, const json_t *doc)
{
    const json_t *r = json_object_get(doc, "refusals");
    if (!rj_int(r, "statements"))
        return;
    char n[RF_SHORT], a[RF_SHORT], b[RF_SHORT];
    pgt_buf_printf(out, "\nStopped by budgets: %s statements (%s refused, %s cancelled)\n\n",
                   rf_count(rj_int(r, "statements"), n, sizeof(n)),
                   rf_count(rj_int(r, "refused"), a, sizeof(a)),
                   rf_count(rj_int(r, "budget_cancelled"), b, sizeof(b)));
    pgt_text_table_t *t = pgt_text_table_new(6, text_refusal_head, text_refusal_right);
    size_t i;
    const json_t *x;
    json_array_foreach(rj_arr(r, "by_budget"), i, x)
    {
        char id[24], cost[RF_SHORT];
        pgt_buf_t subject = {0};
        rf_subject_text(&subject, x);
        snprintf(id, sizeof(id), "%lld", (long long)rj_int(x, "budget_id"));
        pgt_text_table_cell(t, id, 0);
        pgt_text_table_cell(t, subject.s ? subject.s : "", TEXT_CELL_WIDTH);
        pgt_text_table_cell(t, rj_str(x, "period"), 0);
        pgt_text_table_cell(t, rf_count(rj_int(x, "refused"), a, sizeof(a)), 0);
        pgt_text_table_cell(t, rf_count(rj_int(x, "budget_cancelled"), b, sizeof(b)), 0);
        pgt_text_table_cell(t, rf_money(doc, x, "cost", cost, sizeof(cost)), 0);
        out->failed |= subject.failed;
        pgt_buf_free(&subject);
    }
    table_done(out, t);
}

static const char *const text_regression_head[] = {
    "#",      "RATIO",       "RELEASE",     "MEAN",        "RUNS",
    "BEFORE", "MEAN BEFORE", "RUNS BEFORE", "FINGERPRINT", "QUERY"};
static const bool text_regression_right[] = {true,  true, false, true,  true,
                                             false, true, true,  false, false};

/* Regressions per release; nothing when there is none. */
static void text_regressions(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(json_object_get(doc, "regressions"), "items");
    if (!json_array_size(a))
        return;
    pgt_buf_putc(out, '\n');
    rf_regressions_title(out, doc);
    pgt_buf_puts(out, "\n\n");
    pgt_text_table_t *t = pgt_text_table_new(10, text_regression_head, text_regression_right);
    size_t i;
    const json_t *x;
    json_array_foreach(a, i, x)
    {
        char rank[16], ratio[RF_SHORT], mean[RF_SHORT], n[RF_SHORT], pmean[RF_SHORT], pn[RF_SHORT];
        snprintf(rank, sizeof(rank), "%lld", (long long)rj_int(x, "rank"));
        pgt_text_table_cell(t, rank, 0);
        pgt_text_table_cell(t, rf_ratio(x, "ratio", ratio, sizeof(ratio)), 0);
        pgt_text_table_cell(t, rj_str(x, "release"), TEXT_CELL_WIDTH);
        pgt_text_table_cell(t, rf_money(doc, x, "mean_cost", mean, sizeof(mean)), 0);
        pgt_text_table_cell(t, rf_count(rj_int(x, "statements"), n, sizeof(n)), 0);
        pgt_text_table_cell(t, rj_str(x, "previous_release"), TEXT_CELL_WIDTH);
        pgt_text_table_cell(t, rf_money(doc, x, "previous_mean_cost", pmean, sizeof(pmean)), 0);
        pgt_text_table_cell(t, rf_count(rj_int(x, "previous_statements"), pn, sizeof(pn)), 0);
        pgt_text_table_cell(t, rj_str(x, "fingerprint"), 0);
        pgt_text_table_cell(t, rj_str(x, "normalized"), TEXT_QUERY_WIDTH);
    }
    table_done(out, t);
}

static const char *const text_repeat_head[] = {
    "#", "FINGERPRINT", "CONSTANTS", "RUNS", "USERS", "APPS", "COST", "SAVED", "RAN IT", "QUERY"};
static const bool text_repeat_right[] = {true, false, false, true,  true,
                                         true, true,  true,  false, false};

/* Work done twice; nothing when there is none. */
static void text_repeats(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(json_object_get(doc, "repeats"), "items");
    if (!json_array_size(a))
        return;
    pgt_buf_putc(out, '\n');
    rf_repeats_title(out, doc);
    pgt_buf_puts(out, "\n\n");
    pgt_text_table_t *t = pgt_text_table_new(10, text_repeat_head, text_repeat_right);
    size_t i;
    const json_t *x;
    json_array_foreach(a, i, x)
    {
        char rank[16], runs[RF_SHORT], users[RF_SHORT], apps[RF_SHORT], cost[RF_SHORT],
            saved[RF_SHORT];
        snprintf(rank, sizeof(rank), "%lld", (long long)rj_int(x, "rank"));
        pgt_text_table_cell(t, rank, 0);
        pgt_text_table_cell(t, rj_str(x, "fingerprint"), 0);
        pgt_text_table_cell(t, rj_str(x, "constants"), 0);
        pgt_text_table_cell(t, rf_count(rj_int(x, "runs"), runs, sizeof(runs)), 0);
        pgt_text_table_cell(t, rf_count(rj_int(x, "users"), users, sizeof(users)), 0);
        pgt_text_table_cell(t, rf_count(rj_int(x, "applications"), apps, sizeof(apps)), 0);
        pgt_text_table_cell(t, rf_money(doc, x, "cost", cost, sizeof(cost)), 0);
        pgt_text_table_cell(t, rf_money(doc, x, "saved", saved, sizeof(saved)), 0);
        pgt_text_table_cell(t, rj_str(x, "who"), TEXT_CELL_WIDTH);
        pgt_text_table_cell(t, rj_str(x, "normalized"), TEXT_QUERY_WIDTH);
    }
    table_done(out, t);
    pgt_buf_putc(out, '\n');
    rf_repeats_note(out, doc, "");
    pgt_buf_putc(out, '\n');
}

static const char *const text_approval_head[] = {"ID", "TICKET", "USER", "SCOPE", "CAP",
                                                 "BY", "UNTIL",  "RUNS", "COST",  "STATEMENT"};
static const bool text_approval_right[] = {true,  false, false, false, true,
                                           false, false, true,  true,  false};

static void text_approvals(pgt_buf_t *out, const json_t *doc)
{
    const json_t *r = json_object_get(doc, "approvals");
    if (!rj_int(r, "approvals"))
        return;
    char n[RF_SHORT], runs[RF_SHORT], cost[RF_SHORT];
    pgt_buf_printf(out, "\nApprovals in force: %s, %s run%s under them, %s\n\n",
                   rf_count(rj_int(r, "approvals"), n, sizeof(n)),
                   rf_count(rj_int(r, "runs"), runs, sizeof(runs)),
                   rj_int(r, "runs") == 1 ? "" : "s", rf_money(doc, r, "cost", cost, sizeof(cost)));
    pgt_text_table_t *t = pgt_text_table_new(10, text_approval_head, text_approval_right);
    size_t i;
    const json_t *x;
    json_array_foreach(rj_arr(r, "items"), i, x)
    {
        char id[24], cap[RF_SHORT], until[32];
        snprintf(id, sizeof(id), "%lld", (long long)rj_int(x, "id"));
        pgt_text_table_cell(t, id, 0);
        pgt_text_table_cell(t, rj_str(x, "ticket"), 0);
        pgt_text_table_cell(t, rj_str(x, "user"), TEXT_CELL_WIDTH);
        pgt_text_table_cell(t, rj_str(x, "scope"), 0);
        pgt_text_table_cell(t, rf_approval_max(doc, x, cap, sizeof(cap)), 0);
        pgt_text_table_cell(t, rj_str(x, "approved_by"), TEXT_CELL_WIDTH);
        pgt_text_table_cell(t, rf_minute(rj_str(x, "until"), until, sizeof(until)), 0);
        pgt_text_table_cell(t, rf_count(rj_int(x, "runs"), runs, sizeof(runs)), 0);
        pgt_text_table_cell(t, rf_money(doc, x, "cost", cost, sizeof(cost)), 0);
        pgt_text_table_cell(t, rj_str(x, "normalized"), TEXT_QUERY_WIDTH);
    }
    table_done(out, t);
}

static char *render_text(const json_t *doc, char *err, size_t errlen)
{
    pgt_buf_t out = {0};
    pgt_buf_printf(&out, "pgtally daily report for %s (%s)\n\n", rj_str(doc, "date"),
                   rj_str(doc, "timezone"));
    totals_lines(&out, doc, "");
    text_statements(&out, doc);
    text_users(&out, doc);
    text_shapes(&out, doc);
    text_data(&out, doc);
    text_budgets(&out, doc);
    text_refusals(&out, doc);
    text_regressions(&out, doc);
    text_repeats(&out, doc);
    text_approvals(&out, doc);
    return rf_finish(&out, err, errlen);
}

/* ---- Markdown ------------------------------------------------------------ */

/* Appends plain text for a table cell: Markdown's punctuation escaped with
 * a backslash, < and & as entities, so that no text from the ledger makes
 * a link, an emphasis, a tag or a new cell. */
static void md_text(pgt_buf_t *out, const char *s, size_t max)
{
    pgt_buf_t snip = {0};
    pgt_text_snippet(&snip, s, max, "…");
    for (const char *p = snip.s ? snip.s : ""; *p; p++) {
        if (*p == '<')
            pgt_buf_puts(out, "&lt;");
        else if (*p == '&')
            pgt_buf_puts(out, "&amp;");
        else {
            if (strchr("\\`*_[]|~", *p))
                pgt_buf_putc(out, '\\');
            pgt_buf_putc(out, *p);
        }
    }
    out->failed |= snip.failed;
    pgt_buf_free(&snip);
}

/* Appends s as a code span in a table cell: fenced by one backtick more
 * than its longest run of them, pipes escaped (GFM reads \| as a pipe even
 * in code spans). */
static void md_code(pgt_buf_t *out, const char *s, size_t max)
{
    pgt_buf_t snip = {0};
    pgt_text_snippet(&snip, s, max, "…");
    const char *t = snip.s ? snip.s : "";
    size_t run = 0, longest = 0;
    for (const char *p = t; *p; p++) {
        run = *p == '`' ? run + 1 : 0;
        longest = run > longest ? run : longest;
    }
    bool pad = t[0] == '`' || (t[0] && t[strlen(t) - 1] == '`');
    for (size_t i = 0; i <= longest; i++)
        pgt_buf_putc(out, '`');
    if (pad)
        pgt_buf_putc(out, ' ');
    for (const char *p = t; *p; p++) {
        if (*p == '|')
            pgt_buf_putc(out, '\\');
        pgt_buf_putc(out, *p);
    }
    if (pad)
        pgt_buf_putc(out, ' ');
    for (size_t i = 0; i <= longest; i++)
        pgt_buf_putc(out, '`');
    out->failed |= snip.failed;
    pgt_buf_free(&snip);
}

static void md_statements(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "statements");
    pgt_buf_printf(out, "\n## Top %zu statements by cost\n\n", json_array_size(a));
    if (!json_array_size(a)) {
        pgt_buf_puts(out, "No statements on this day.\n");
        return;
    }
    pgt_buf_puts(out,
                 "| # | Cost | User | Started | Duration | Rows | Database | Application | Tags | "
                 "Statement |\n|--:|--:|---|---|--:|--:|---|---|---|---|\n");
    size_t i;
    const json_t *s;
    json_array_foreach(a, i, s)
    {
        char cost[RF_SHORT], clock[16], dur[RF_SHORT], rows[RF_SHORT];
        pgt_buf_t tags = {0};
        rf_tags(&tags, json_object_get(s, "tags"));
        pgt_buf_printf(out, "| %lld | %s | ", (long long)rj_int(s, "rank"),
                       rf_money(doc, s, "cost", cost, sizeof(cost)));
        md_text(out, rj_str(s, "user"), MD_CELL_WIDTH);
        pgt_buf_printf(out, " | %s | %s | %s | ",
                       rf_clock(rj_str(s, "started_at"), clock, sizeof(clock)),
                       pgt_fmt_seconds(rj_num(s, "duration_s"), dur, sizeof(dur)),
                       rf_count(rj_int(s, "rows"), rows, sizeof(rows)));
        md_text(out, rj_str(s, "database"), MD_CELL_WIDTH);
        pgt_buf_puts(out, " | ");
        md_text(out, rj_str(s, "application"), MD_CELL_WIDTH);
        pgt_buf_puts(out, " | ");
        md_text(out, tags.s ? tags.s : "", MD_CELL_WIDTH);
        pgt_buf_puts(out, " | ");
        md_code(out, rj_str(s, "normalized"), MD_QUERY_WIDTH);
        pgt_buf_puts(out, " |\n");
        out->failed |= tags.failed;
        pgt_buf_free(&tags);
    }
}

static void md_users(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "users");
    if (!json_array_size(a))
        return;
    pgt_buf_printf(out, "\n## Top %zu users by cost\n\n", json_array_size(a));
    pgt_buf_puts(out, "| # | User | Cost | Statements | Share | vs day before | Top shape |\n"
                      "|--:|---|--:|--:|--:|--:|---|\n");
    size_t i;
    const json_t *u;
    json_array_foreach(a, i, u)
    {
        char cost[RF_SHORT], n[RF_SHORT], ch[RF_SHORT];
        pgt_buf_printf(out, "| %lld | ", (long long)rj_int(u, "rank"));
        md_text(out, rj_str(u, "user"), MD_CELL_WIDTH);
        pgt_buf_printf(out, " | %s | %s | %.1f%% | %s | ",
                       rf_money(doc, u, "cost", cost, sizeof(cost)),
                       rf_count(rj_int(u, "statements"), n, sizeof(n)), rj_num(u, "share_pct"),
                       rf_change(u, "change_pct", "new", ch, sizeof(ch)));
        md_code(out, rj_str(json_object_get(u, "top_shape"), "normalized"), MD_TOP_QUERY_WIDTH);
        pgt_buf_puts(out, " |\n");
    }
}

static void md_shapes(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "shapes");
    if (!json_array_size(a))
        return;
    pgt_buf_printf(out, "\n## Top %zu query shapes by total cost\n\n", json_array_size(a));
    pgt_buf_puts(out, "| # | Total | Count | Mean | Max | Users | Shape |\n"
                      "|--:|--:|--:|--:|--:|--:|---|\n");
    size_t i;
    const json_t *s;
    json_array_foreach(a, i, s)
    {
        char total[RF_SHORT], n[RF_SHORT], mean[RF_SHORT], max[RF_SHORT], users[RF_SHORT];
        pgt_buf_printf(out, "| %lld | %s | %s | %s | %s | %s | ", (long long)rj_int(s, "rank"),
                       rf_money(doc, s, "cost", total, sizeof(total)),
                       rf_count(rj_int(s, "statements"), n, sizeof(n)),
                       rf_money(doc, s, "mean_cost", mean, sizeof(mean)),
                       rf_money(doc, s, "max_cost", max, sizeof(max)),
                       rf_count(rj_int(s, "users"), users, sizeof(users)));
        md_code(out, rj_str(s, "normalized"), MD_QUERY_WIDTH);
        pgt_buf_puts(out, " |\n");
    }
}

static void md_data_list(pgt_buf_t *out, const json_t *doc, const json_t *a, bool tables)
{
    pgt_buf_puts(out, tables ? "| # | Table | Cost | Share | Queries | Compute |\n"
                               "|--:|---|--:|--:|--:|--:|\n"
                             : "| # | Schema | Cost | Share | Compute |\n|--:|---|--:|--:|--:|\n");
    size_t i;
    const json_t *x;
    json_array_foreach(a, i, x)
    {
        char cost[RF_SHORT], n[RF_SHORT], comp[RF_SHORT];
        pgt_buf_t name = {0};
        rf_data_name(&name, x);
        pgt_buf_printf(out, "| %lld | ", (long long)rj_int(x, "rank"));
        md_text(out, name.s ? name.s : "", MD_CELL_WIDTH + 40);
        pgt_buf_printf(out, " | %s | %.1f%% | ", rf_money(doc, x, "cost", cost, sizeof(cost)),
                       rj_num(x, "share_pct"));
        if (tables)
            pgt_buf_printf(out, "%s | ", rf_count(rj_int(x, "queries"), n, sizeof(n)));
        pgt_buf_printf(out, "%s |\n", pgt_fmt_seconds(rj_num(x, "compute_s"), comp, sizeof(comp)));
        out->failed |= name.failed;
        pgt_buf_free(&name);
    }
}

static void md_data(pgt_buf_t *out, const json_t *doc)
{
    const json_t *d = json_object_get(doc, "data");
    if (!json_array_size(rj_arr(d, "tables")))
        return;
    pgt_buf_puts(out, "\n## Data that cost the most\n\n");
    rf_data_intro(out, doc, "**");
    pgt_buf_puts(out, ".\n\n");
    md_data_list(out, doc, rj_arr(d, "schemas"), false);
    pgt_buf_putc(out, '\n');
    md_data_list(out, doc, rj_arr(d, "tables"), true);
}

static void md_budgets(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(json_object_get(doc, "budgets"), "items");
    if (!json_array_size(a))
        return;
    pgt_buf_puts(out,
                 "\n## Budgets at or above a warn threshold\n\n| Budget | Subject | Period | Spent "
                 "| Limit | Used | Action |\n|--:|---|---|--:|--:|--:|---|\n");
    size_t i;
    const json_t *b;
    json_array_foreach(a, i, b)
    {
        char spent[RF_SHORT], limit[RF_SHORT];
        pgt_buf_t subject = {0};
        rf_subject_text(&subject, b);
        pgt_buf_printf(out, "| %lld | ", (long long)rj_int(b, "id"));
        md_text(out, subject.s ? subject.s : "", MD_CELL_WIDTH);
        pgt_buf_printf(out, " | %s | %s | %s | %.1f%% | %s |\n", rj_str(b, "period"),
                       rf_money(doc, b, "spent", spent, sizeof(spent)),
                       rf_money(doc, b, "limit", limit, sizeof(limit)), rj_num(b, "percent"),
                       rj_str(b, "action"));
        out->failed |= subject.failed;
        pgt_buf_free(&subject);
    }
}

static void md_refusals(pgt_buf_t *out, const json_t *doc)
{
    const json_t *r = json_object_get(doc, "refusals");
    if (!rj_int(r, "statements"))
        return;
    char n[RF_SHORT], a[RF_SHORT], c[RF_SHORT];
    pgt_buf_printf(out, "\n## Stopped by budgets\n\n%s statements: %s refused, %s cancelled.\n\n",
                   rf_count(rj_int(r, "statements"), n, sizeof(n)),
                   rf_count(rj_int(r, "refused"), a, sizeof(a)),
                   rf_count(rj_int(r, "budget_cancelled"), c, sizeof(c)));
    pgt_buf_puts(out, "| Budget | Subject | Refused | Cancelled | Cost |\n|--:|---|--:|--:|--:|\n");
    size_t i;
    const json_t *x;
    json_array_foreach(rj_arr(r, "by_budget"), i, x)
    {
        char cost[RF_SHORT];
        pgt_buf_t subject = {0};
        rf_subject_text(&subject, x);
        pgt_buf_printf(out, "| %lld | ", (long long)rj_int(x, "budget_id"));
        md_text(out, subject.s ? subject.s : "", MD_CELL_WIDTH);
        pgt_buf_printf(out, " | %s | %s | %s |\n", rf_count(rj_int(x, "refused"), a, sizeof(a)),
                       rf_count(rj_int(x, "budget_cancelled"), c, sizeof(c)),
                       rf_money(doc, x, "cost", cost, sizeof(cost)));
        out->failed |= subject.failed;
        pgt_buf_free(&subject);
    }
}

static void md_regressions(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(json_object_get(doc, "regressions"), "items");
    if (!json_array_size(a))
        return;
    pgt_buf_t title = {0};
    rf_regressions_title(&title, doc);
    pgt_buf_puts(out, "\n## ");
    md_text(out, title.s ? title.s : "", 0);
    out->failed |= title.failed;
    pgt_buf_free(&title);
    pgt_buf_puts(out,
                 "\n\n| # | Ratio | Release | Mean | Runs | Before | Mean before | Runs before "
                 "| Shape |\n|--:|--:|---|--:|--:|---|--:|--:|---|\n");
    size_t i;
    const json_t *x;
    json_array_foreach(a, i, x)
    {
        char ratio[RF_SHORT], mean[RF_SHORT], n[RF_SHORT], pmean[RF_SHORT], pn[RF_SHORT];
        pgt_buf_printf(out, "| %lld | %s | ", (long long)rj_int(x, "rank"),
                       rf_ratio(x, "ratio", ratio, sizeof(ratio)));
        md_text(out, rj_str(x, "release"), MD_CELL_WIDTH);
        pgt_buf_printf(out, " | %s | %s | ", rf_money(doc, x, "mean_cost", mean, sizeof(mean)),
                       rf_count(rj_int(x, "statements"), n, sizeof(n)));
        md_text(out, rj_str(x, "previous_release"), MD_CELL_WIDTH);
        pgt_buf_printf(out, " | %s | %s | ",
                       rf_money(doc, x, "previous_mean_cost", pmean, sizeof(pmean)),
                       rf_count(rj_int(x, "previous_statements"), pn, sizeof(pn)));
        md_code(out, rj_str(x, "normalized"), MD_QUERY_WIDTH);
        pgt_buf_puts(out, " |\n");
    }
}

static void md_repeats(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(json_object_get(doc, "repeats"), "items");
    if (!json_array_size(a))
        return;
    pgt_buf_t title = {0};
    rf_repeats_title(&title, doc);
    pgt_buf_puts(out, "\n## ");
    md_text(out, title.s ? title.s : "", 0);
    out->failed |= title.failed;
    pgt_buf_free(&title);
    pgt_buf_puts(out, "\n\n| # | Runs | Users | Apps | Cost | Saved | Ran it | Shape |\n"
                      "|--:|--:|--:|--:|--:|--:|---|---|\n");
    size_t i;
    const json_t *x;
    json_array_foreach(a, i, x)
    {
        char runs[RF_SHORT], users[RF_SHORT], apps[RF_SHORT], cost[RF_SHORT], saved[RF_SHORT];
        pgt_buf_printf(out, "| %lld | %s | %s | %s | %s | %s | ", (long long)rj_int(x, "rank"),
                       rf_count(rj_int(x, "runs"), runs, sizeof(runs)),
                       rf_count(rj_int(x, "users"), users, sizeof(users)),
                       rf_count(rj_int(x, "applications"), apps, sizeof(apps)),
                       rf_money(doc, x, "cost", cost, sizeof(cost)),
                       rf_money(doc, x, "saved", saved, sizeof(saved)));
        md_text(out, rj_str(x, "who"), MD_CELL_WIDTH);
        pgt_buf_puts(out, " | ");
        md_code(out, rj_str(x, "normalized"), MD_QUERY_WIDTH);
        pgt_buf_puts(out, " |\n");
    }
    pgt_buf_putc(out, '\n');
    rf_repeats_note(out, doc, "**");
    pgt_buf_putc(out, '\n');
}

static void md_approvals(pgt_buf_t *out, const json_t *doc)
{
    const json_t *r = json_object_get(doc, "approvals");
    if (!rj_int(r, "approvals"))
        return;
    char n[RF_SHORT], runs[RF_SHORT], cost[RF_SHORT];
    pgt_buf_printf(out, "\n## Approvals in force\n\n%s, %s run%s under them, %s.\n\n",
                   rf_count(rj_int(r, "approvals"), n, sizeof(n)),
                   rf_count(rj_int(r, "runs"), runs, sizeof(runs)),
                   rj_int(r, "runs") == 1 ? "" : "s", rf_money(doc, r, "cost", cost, sizeof(cost)));
    pgt_buf_puts(out, "| ID | Ticket | User | Scope | Cap | By | Until | Runs | Cost | Statement "
                      "|\n|--:|---|---|---|--:|---|---|--:|--:|---|\n");
    size_t i;
    const json_t *x;
    json_array_foreach(rj_arr(r, "items"), i, x)
    {
        char cap[RF_SHORT], until[32];
        pgt_buf_printf(out, "| %lld | %s | ", (long long)rj_int(x, "id"), rj_str(x, "ticket"));
        md_text(out, rj_str(x, "user"), MD_CELL_WIDTH);
        pgt_buf_printf(out, " | %s | %s | ", rj_str(x, "scope"),
                       rf_approval_max(doc, x, cap, sizeof(cap)));
        md_text(out, rj_str(x, "approved_by"), MD_CELL_WIDTH);
        pgt_buf_printf(out, " | %s | %s | %s | ",
                       rf_minute(rj_str(x, "until"), until, sizeof(until)),
                       rf_count(rj_int(x, "runs"), runs, sizeof(runs)),
                       rf_money(doc, x, "cost", cost, sizeof(cost)));
        md_code(out, rj_str(x, "normalized"), MD_QUERY_WIDTH);
        pgt_buf_puts(out, " |\n");
    }
}

static char *render_markdown(const json_t *doc, char *err, size_t errlen)
{
    pgt_buf_t out = {0};
    pgt_buf_printf(&out, "# pgtally daily report: %s (", rj_str(doc, "date"));
    md_text(&out, rj_str(doc, "timezone"), 0);
    pgt_buf_puts(&out, ")\n\n");
    pgt_buf_t totals = {0};
    totals_lines(&totals, doc, "**");
    /* One paragraph, lines kept apart by Markdown's hard line break. */
    for (const char *p = totals.s ? totals.s : ""; *p; p++) {
        if (*p == '\n' && p[1])
            pgt_buf_puts(&out, "  ");
        pgt_buf_putc(&out, *p);
    }
    out.failed |= totals.failed;
    pgt_buf_free(&totals);
    md_statements(&out, doc);
    md_users(&out, doc);
    md_shapes(&out, doc);
    md_data(&out, doc);
    md_budgets(&out, doc);
    md_refusals(&out, doc);
    md_regressions(&out, doc);
    md_repeats(&out, doc);
    md_approvals(&out, doc);
    return rf_finish(&out, err, errlen);
}

/* ---- JSON ---------------------------------------------------------------- */

static char *render_json(const json_t *doc, char *err, size_t errlen)
{
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    pgt_buf_t out = {0};
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pgt_buf_puts(&out, s);
    pgt_buf_putc(&out, '\n');
    free(s);
    return rf_finish(&out, err, errlen);
}

/* ---- CSV ----------------------------------------------------------------- */

/* Appends a comma unless first, then one field (see pgt_text_csv_field). */
static void csv_field(pgt_buf_t *out, const char *s, bool first)
{
    if (!first)
        pgt_buf_putc(out, ',');
    pgt_text_csv_field(out, s);
}

/* One CSV column: its header and where its value comes from. */
typedef struct csv_col {
    const char *name; /* header */
    const char *path; /* member, "a.b" for a nested one */
    char kind;        /* 's' string, 'i' integer, 'n' number, 'm' money (path + "_micro"),
                         'c' the currency, 'j' JSON text, 'l' a list joined with spaces */
} csv_col_t;

/* Appends the value of column c of item o. */
static void csv_value(pgt_buf_t *out, const json_t *doc, const json_t *o, const csv_col_t *c,
                      bool first)
{
    char key[64], buf[PGT_MONEY_TEXT_MAX + 16];
    const char *dot = strchr(c->path, '.');
    if (dot) { /* one level of nesting is all the sections need */
        snprintf(key, sizeof(key), "%.*s", (int)(dot - c->path), c->path);
        o = json_object_get(o, key);
    }
    const char *name = dot ? dot + 1 : c->path;
    snprintf(key, sizeof(key), c->kind == 'm' ? "%s_micro" : "%s", name);
    const json_t *v = json_object_get(o, key);
    buf[0] = '\0';
    if (c->kind == 'c') {
        csv_field(out, rj_str(doc, "currency"), first);
        return;
    }
    if (c->kind == 'j' || c->kind == 'l') {
        pgt_buf_t t = {0};
        size_t i;
        const json_t *x;
        if (c->kind == 'j' && v && !json_is_null(v)) {
            char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            pgt_buf_puts(&t, s ? s : "");
            free(s);
        }
        json_array_foreach(c->kind == 'l' ? v : NULL, i, x)
        {
            pgt_buf_printf(&t, "%s%s", i ? " " : "",
                           json_string_value(x) ? json_string_value(x) : "");
        }
        csv_field(out, t.s ? t.s : "", first);
        out->failed |= t.failed;
        pgt_buf_free(&t);
        return;
    }
    if (json_is_string(v))
        csv_field(out, json_string_value(v), first);
    else {
        if (c->kind == 'm' && json_is_integer(v))
            pgt_money_format(json_integer_value(v), NULL, buf, sizeof(buf));
        else if (json_is_integer(v))
            snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
        else if (json_is_real(v))
            snprintf(buf, sizeof(buf), "%.6f", json_real_value(v));
        else if (json_is_boolean(v))
            snprintf(buf, sizeof(buf), "%s", json_is_true(v) ? "true" : "false");
        csv_field(out, buf, first);
    }
}

static const csv_col_t csv_statements[] = {
    {"rank", "rank", 'i'},
    {"cost", "cost", 'm'},
    {"currency", "", 'c'},
    {"user", "user", 's'},
    {"database", "database", 's'},
    {"application", "application", 's'},
    {"started_at", "started_at", 's'},
    {"duration_s", "duration_s", 'n'},
    {"compute_s", "compute_s", 'n'},
    {"rows", "rows", 'i'},
    {"bytes_out", "bytes_out", 'i'},
    {"status", "status", 's'},
    {"sqlstate", "sqlstate", 's'},
    {"tags", "tags", 'j'},
    {"kind", "kind", 's'},
    {"fingerprint", "fingerprint", 's'},
    {"normalized", "normalized", 's'},
    {NULL, NULL, 0},
};

static const csv_col_t csv_users[] = {
    {"rank", "rank", 'i'},
    {"user", "user", 's'},
    {"cost", "cost", 'm'},
    {"currency", "", 'c'},
    {"statements", "statements", 'i'},
    {"compute_s", "compute_s", 'n'},
    {"share_pct", "share_pct", 'n'},
    {"previous_day_cost", "previous_day_cost", 'm'},
    {"change", "change", 'm'},
    {"change_pct", "change_pct", 'n'},
    {"top_shape_fingerprint", "top_shape.fingerprint", 's'},
    {"top_shape_cost", "top_shape.cost", 'm'},
    {"top_shape_statements", "top_shape.statements", 'i'},
    {"top_shape_normalized", "top_shape.normalized", 's'},
    {NULL, NULL, 0},
};

static const csv_col_t csv_shapes[] = {
    {"rank", "rank", 'i'},
    {"fingerprint", "fingerprint", 's'},
    {"statements", "statements", 'i'},
    {"cost", "cost", 'm'},
    {"mean_cost", "mean_cost", 'm'},
    {"max_cost", "max_cost", 'm'},
    {"currency", "", 'c'},
    {"compute_s", "compute_s", 'n'},
    {"share_pct", "share_pct", 'n'},
    {"users", "users", 'i'},
    {"user_names", "user_names", 'l'},
    {"kind", "kind", 's'},
    {"normalized", "normalized", 's'},
    {NULL, NULL, 0},
};

static const csv_col_t csv_totals[] = {
    {"date", "date", 's'},
    {"timezone", "timezone", 's'},
    {"statements", "totals.statements", 'i'},
    {"cost", "totals.cost", 'm'},
    {"currency", "", 'c'},
    {"compute_s", "totals.compute_s", 'n'},
    {"users", "totals.users", 'i'},
    {"previous_day", "previous_day.date", 's'},
    {"previous_day_statements", "previous_day.statements", 'i'},
    {"previous_day_cost", "previous_day.cost", 'm'},
    {"previous_day_compute_s", "previous_day.compute_s", 'n'},
    {"statements_change_pct", "change_vs_previous_day.statements_pct", 'n'},
    {"cost_change_pct", "change_vs_previous_day.cost_pct", 'n'},
    {"compute_change_pct", "change_vs_previous_day.compute_pct", 'n'},
    {"mean_7d_days", "mean_7d.days", 'i'},
    {"mean_7d_statements", "mean_7d.statements", 'n'},
    {"mean_7d_cost", "mean_7d.cost", 'm'},
    {"mean_7d_compute_s", "mean_7d.compute_s", 'n'},
    {"statements_vs_mean_pct", "change_vs_mean_7d.statements_pct", 'n'},
    {"cost_vs_mean_pct", "change_vs_mean_7d.cost_pct", 'n'},
    {"compute_vs_mean_pct", "change_vs_mean_7d.compute_pct", 'n'},
    {NULL, NULL, 0},
};

static const csv_col_t csv_schemas[] = {
    {"rank", "rank", 'i'}, {"schema", "schema", 's'},       {"cost", "cost", 'm'},
    {"currency", "", 'c'}, {"share_pct", "share_pct", 'n'}, {"compute_s", "compute_s", 'n'},
    {NULL, NULL, 0},
};

static const csv_col_t csv_tables[] = {
    {"rank", "rank", 'i'},           {"schema", "schema", 's'},       {"table", "table", 's'},
    {"queries", "queries", 'i'},     {"cost", "cost", 'm'},           {"currency", "", 'c'},
    {"share_pct", "share_pct", 'n'}, {"compute_s", "compute_s", 'n'}, {NULL, NULL, 0},
};

static const csv_col_t csv_budgets[] = {
    {"id", "id", 'i'},
    {"subject_type", "subject_type", 's'},
    {"subject", "subject", 's'},
    {"user", "user", 's'},
    {"period", "period", 's'},
    {"period_start", "period_start", 's'},
    {"period_end", "period_end", 's'},
    {"spent", "spent", 'm'},
    {"limit", "limit", 'm'},
    {"granted", "granted", 'm'},
    {"currency", "", 'c'},
    {"percent", "percent", 'n'},
    {"threshold_pct", "threshold_pct", 'i'},
    {"action", "action", 's'},
    {NULL, NULL, 0},
};

static const csv_col_t csv_refusals[] = {
    {"budget_id", "budget_id", 'i'},
    {"subject_type", "subject_type", 's'},
    {"subject", "subject", 's'},
    {"period", "period", 's'},
    {"refused", "refused", 'i'},
    {"budget_cancelled", "budget_cancelled", 'i'},
    {"cost", "cost", 'm'},
    {"currency", "", 'c'},
    {NULL, NULL, 0},
};

static const csv_col_t csv_regressions[] = {
    {"rank", "rank", 'i'},
    {"fingerprint", "fingerprint", 's'},
    {"ratio", "ratio", 'n'},
    {"release", "release", 's'},
    {"first_seen", "first_seen", 's'},
    {"statements", "statements", 'i'},
    {"mean_cost", "mean_cost", 'm'},
    {"previous_release", "previous_release", 's'},
    {"previous_statements", "previous_statements", 'i'},
    {"previous_mean_cost", "previous_mean_cost", 'm'},
    {"currency", "", 'c'},
    {"kind", "kind", 's'},
    {"normalized", "normalized", 's'},
    {NULL, NULL, 0},
};

static const csv_col_t csv_repeats[] = {
    {"rank", "rank", 'i'},
    {"fingerprint", "fingerprint", 's'},
    {"constants", "constants", 's'},
    {"runs", "runs", 'i'},
    {"users", "users", 'i'},
    {"applications", "applications", 'i'},
    {"cost", "cost", 'm'},
    {"saved", "saved", 'm'},
    {"currency", "", 'c'},
    {"who", "who", 's'},
    {"kind", "kind", 's'},
    {"normalized", "normalized", 's'},
    {NULL, NULL, 0},
};

static const csv_col_t csv_approvals[] = {
    {"id", "id", 'i'},
    {"ticket", "ticket", 's'},
    {"user", "user", 's'},
    {"database", "database", 's'},
    {"fingerprint", "fingerprint", 's'},
    {"scope", "scope", 's'},
    {"max", "max", 'm'},
    {"approved_by", "approved_by", 's'},
    {"approved_at", "approved_at", 's'},
    {"until", "until", 's'},
    {"runs", "runs", 'i'},
    {"cost", "cost", 'm'},
    {"currency", "", 'c'},
    {"normalized", "normalized", 's'},
    {NULL, NULL, 0},
};

/* The CSV sections: name, columns, and where their rows are. */
typedef struct csv_section {
    const char *name;      /* as --section takes it */
    const csv_col_t *cols; /* columns */
    const char *array;     /* the array of rows; NULL: one row (totals) */
    const char *parent;    /* the object holding array, or NULL for the document */
} csv_section_t;

static const csv_section_t csv_sections[] = {
    {"statements", csv_statements, "statements", NULL},
    {"users", csv_users, "users", NULL},
    {"shapes", csv_shapes, "shapes", NULL},
    {"totals", csv_totals, NULL, NULL},
    {"budgets", csv_budgets, "items", "budgets"},
    {"refusals", csv_refusals, "by_budget", "refusals"},
    {"schemas", csv_schemas, "schemas", "data"},
    {"tables", csv_tables, "tables", "data"},
    {"regressions", csv_regressions, "items", "regressions"},
    {"repeats", csv_repeats, "items", "repeats"},
    {"approvals", csv_approvals, "items", "approvals"},
};

#define NSECTIONS (sizeof(csv_sections) / sizeof(csv_sections[0]))

static void csv_row(pgt_buf_t *out, const json_t *doc, const json_t *o, const csv_col_t *cols)
{
    for (const csv_col_t *c = cols; c->name; c++)
        csv_value(out, doc, o, c, c == cols);
    pgt_buf_puts(out, "\r\n");
}

static void csv_section(pgt_buf_t *out, const json_t *doc, const csv_section_t *s)
{
    for (const csv_col_t *c = s->cols; c->name; c++)
        csv_field(out, c->name, c == s->cols);
    pgt_buf_puts(out, "\r\n");
    if (!s->array) {
        /* totals: the document with its totals' members one level up. */
        json_t *row = json_copy((json_t *)doc);
        if (!row || json_object_update(row, json_object_get(doc, "totals")) != 0)
            out->failed = true;
        else
            csv_row(out, doc, row, s->cols);
        json_decref(row);
        return;
    }
    const json_t *parent = s->parent ? json_object_get(doc, s->parent) : doc;
    size_t i;
    const json_t *o;
    json_array_foreach(rj_arr(parent, s->array), i, o)
    {
        csv_row(out, doc, o, s->cols);
    }
}

char *pgt_report_csv_sections(char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < NSECTIONS && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%s",
                              i == 0              ? ""
                              : i + 1 < NSECTIONS ? ", "
                                                  : " or ",
                              csv_sections[i].name);
    return buf;
}

bool pgt_report_csv_section_known(const char *name)
{
    for (size_t i = 0; i < NSECTIONS; i++)
        if (strcmp(name, csv_sections[i].name) == 0)
            return true;
    return false;
}

static char *render_csv(const json_t *doc, const char *section, char *err, size_t errlen)
{
    pgt_buf_t out = {0};
    bool found = false;
    for (size_t i = 0; i < NSECTIONS; i++) {
        if (section && strcmp(section, csv_sections[i].name) != 0)
            continue;
        if (!section)
            pgt_buf_printf(&out, "# %s\r\n", csv_sections[i].name);
        csv_section(&out, doc, &csv_sections[i]);
        found = true;
    }
    if (!found) {
        char names[256];
        pgt_report_csv_sections(names, sizeof(names));
        snprintf(err, errlen, "unknown section '%s': use %s", section, names);
        pgt_buf_free(&out);
        return NULL;
    }
    return rf_finish(&out, err, errlen);
}

/* ---- Dispatch ------------------------------------------------------------ */

char *pgt_report_render(const json_t *report, pgt_report_format_t f, const char *section, char *err,
                        size_t errlen)
{
    if (!json_is_object(report)) {
        snprintf(err, errlen, "no report to render");
        return NULL;
    }
    switch (f) {
    case PGT_REPORT_FORMAT_TEXT:
        return render_text(report, err, errlen);
    case PGT_REPORT_FORMAT_MARKDOWN:
        return render_markdown(report, err, errlen);
    case PGT_REPORT_FORMAT_HTML:
        return pgt_report_render_html(report, err, errlen);
    case PGT_REPORT_FORMAT_JSON:
        return render_json(report, err, errlen);
    case PGT_REPORT_FORMAT_CSV:
        return render_csv(report, section, err, errlen);
    case PGT_REPORT_FORMAT_SLACK:
        return pgt_report_render_slack(report, err, errlen);
    }
    snprintf(err, errlen, "unknown format %d", (int)f);
    return NULL;
}
