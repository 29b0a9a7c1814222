/* The report as an HTML e-mail body: one self-contained document that mail
 * clients render alike (Gmail, Outlook, Apple Mail): nested tables for
 * layout, inline CSS only, bar charts drawn as table cells of proportional
 * width, and no images, scripts, external styles or web fonts. Every string
 * from the ledger is HTML-escaped. */
#include <stdio.h>
#include <string.h>

#include "report_render.h"

/* Widths of cut text, in columns, the ellipsis included: 300, 150 and 60
 * columns of text. */
#define QUERY_WIDTH 301     /* statement text shown */
#define TOP_QUERY_WIDTH 151 /* a user's top shape */
#define CELL_WIDTH 61       /* other text cells */

#define FONT "font-family:Helvetica,Arial,sans-serif;"
#define MONO "font-family:Menlo,Consolas,'Courier New',monospace;"
#define TH                                                                                         \
    "padding:6px 8px;background-color:#f9fafb;border-bottom:1px solid #d1d5db;color:#374151;"      \
    "font-weight:bold;font-size:12px;white-space:nowrap;"
#define TD "padding:6px 8px;border-bottom:1px solid #e5e7eb;vertical-align:top;font-size:12px;"
#define NUM "text-align:right;white-space:nowrap;"
#define BAR_BLUE "#2563eb"
#define BAR_AMBER "#d97706"
#define BAR_RED "#dc2626"
#define UP_COLOR "#b91c1c"   /* spend went up */
#define DOWN_COLOR "#15803d" /* spend went down */
#define MUTED "#6b7280"

/* Appends s with &, <, >, " and ' as entities. */
static void esc(pgt_buf_t *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            pgt_buf_puts(out, "&amp;");
            break;
        case '<':
            pgt_buf_puts(out, "&lt;");
            break;
        case '>':
            pgt_buf_puts(out, "&gt;");
            break;
        case '"':
            pgt_buf_puts(out, "&quot;");
            break;
        case '\'':
            pgt_buf_puts(out, "&#39;");
            break;
        default:
            pgt_buf_putc(out, *s);
        }
    }
}

/* Appends a snippet of s (see pgt_text_snippet), escaped. */
static void esc_snip(pgt_buf_t *out, const char *s, size_t max)
{
    pgt_buf_t t = {0};
    pgt_text_snippet(&t, s, max, "…");
    esc(out, t.s ? t.s : "");
    out->failed |= t.failed;
    pgt_buf_free(&t);
}

/* A bar of pct percent of the cell's width, drawn with two table cells. */
static void bar(pgt_buf_t *out, double pct, const char *color)
{
    int w = pct <= 0 ? 0 : pct >= 100 ? 100 : (int)(pct + 0.5);
    if (pct > 0 && w == 0)
        w = 1;
    pgt_buf_puts(out,
                 "<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" "
                 "border=\"0\" style=\"width:100%;min-width:60px;margin-top:3px;\"><tr>");
    if (w > 0)
        pgt_buf_printf(out,
                       "<td width=\"%d%%\" style=\"width:%d%%;height:6px;background-color:%s;"
                       "font-size:1px;line-height:1px;\">&nbsp;</td>",
                       w, w, color);
    if (w < 100)
        pgt_buf_puts(out, "<td style=\"height:6px;background-color:#e5e7eb;font-size:1px;"
                          "line-height:1px;\">&nbsp;</td>");
    pgt_buf_puts(out, "</tr></table>");
}

/* Opens a section: its title and a data table with these headers (a
 * leading '>' right-aligns a column). */
static void table_open(pgt_buf_t *out, const char *id, const char *title, const char *const *heads,
                       size_t n)
{
    pgt_buf_printf(
        out, "<h2 style=\"" FONT "font-size:16px;margin:28px 0 8px 0;color:#111827;\">%s</h2>\n",
        title);
    pgt_buf_printf(
        out,
        "<table id=\"%s\" width=\"100%%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" "
        "style=\"width:100%%;border-collapse:collapse;" FONT "\">\n<tr>",
        id);
    for (size_t i = 0; i < n; i++) {
        bool right = heads[i][0] == '>';
        pgt_buf_printf(out, "<th style=\"" TH "text-align:%s;\">%s</th>", right ? "right" : "left",
                       heads[i] + right);
    }
    pgt_buf_puts(out, "</tr>\n");
}

/* A numeric cell holding text (already safe). */
static void num_cell(pgt_buf_t *out, const char *text)
{
    pgt_buf_printf(out, "<td style=\"" TD NUM "\">%s</td>", text);
}

/* A text cell holding a snippet of s, escaped. */
static void text_cell(pgt_buf_t *out, const char *s)
{
    pgt_buf_puts(out, "<td style=\"" TD "\">");
    esc_snip(out, s, CELL_WIDTH);
    pgt_buf_puts(out, "</td>");
}

/* A cell with statement text in a monospace font. */
static void code_cell(pgt_buf_t *out, const char *s, size_t max)
{
    pgt_buf_puts(out,
                 "<td style=\"" TD "\"><code style=\"" MONO
                 "font-size:11px;color:#1f2937;word-wrap:break-word;overflow-wrap:break-word;\">");
    esc_snip(out, s, max);
    pgt_buf_puts(out, "</code></td>");
}

/* A money cell with a bar under the amount. */
static void money_bar_cell(pgt_buf_t *out, const json_t *doc, const json_t *o, const char *key,
                           double pct, const char *color)
{
    char money[RF_SHORT];
    pgt_buf_printf(out, "<td style=\"" TD NUM "\">%s", rf_money(doc, o, key, money, sizeof(money)));
    bar(out, pct, color);
    pgt_buf_puts(out, "</td>");
}

/* A change in percent, red when up and green when down if colored. */
static void change(pgt_buf_t *out, const json_t *o, const char *key, const char *label,
                   bool colored)
{
    char pct[RF_SHORT];
    double v = rj_num(o, key);
    const char *color = !colored || rj_null(o, key) ? MUTED : v > 0 ? UP_COLOR : DOWN_COLOR;
    pgt_buf_printf(out, "<div style=\"font-size:12px;color:%s;\">%s ", color,
                   rf_change(o, key, "n/a", pct, sizeof(pct)));
    esc(out, label);
    pgt_buf_puts(out, "</div>");
}

/* One figure of the summary: label, value and its changes. */
static void kpi(pgt_buf_t *out, const json_t *t, const char *label, const char *value,
                const char *pct_key, bool colored)
{
    const json_t *cp = json_object_get(t, "change_vs_previous_day");
    const json_t *cm = json_object_get(t, "change_vs_mean_7d");
    char vs[64];
    pgt_buf_printf(out,
                   "<td width=\"25%%\" style=\"width:25%%;padding:12px;border:1px solid #e5e7eb;"
                   "vertical-align:top;" FONT "\"><div style=\"font-size:12px;color:" MUTED
                   ";\">%s</div>"
                   "<div style=\"font-size:20px;font-weight:bold;margin:2px 0 4px 0;\">%s</div>",
                   label, value);
    if (pct_key) {
        snprintf(vs, sizeof(vs), "vs %s", rj_str(json_object_get(t, "previous_day"), "date"));
        change(out, cp, pct_key, vs, colored);
        change(out, cm, pct_key, "vs 7-day mean", colored);
    }
    pgt_buf_puts(out, "</td>");
}

static void summary(pgt_buf_t *out, const json_t *doc)
{
    const json_t *t = json_object_get(doc, "totals");
    char cost[RF_SHORT], n[RF_SHORT], comp[RF_SHORT], users[RF_SHORT];
    pgt_buf_puts(out,
                 "<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" "
                 "border=\"0\" style=\"width:100%;border-collapse:collapse;\"><tr>");
    kpi(out, t, "Total cost", rf_money(doc, t, "cost", cost, sizeof(cost)), "cost_pct", true);
    kpi(out, t, "Statements", rf_count(rj_int(t, "statements"), n, sizeof(n)), "statements_pct",
        false);
    kpi(out, t, "Compute", pgt_fmt_seconds(rj_num(t, "compute_s"), comp, sizeof(comp)),
        "compute_pct", false);
    kpi(out, t, "Users", rf_count(rj_int(t, "users"), users, sizeof(users)), NULL, false);
    pgt_buf_puts(out, "</tr></table>\n");
}

static const char *const stmt_heads[] = {">#",        ">Cost",    "User",     "Started",
                                         ">Duration", ">Rows",    "Database", "Application",
                                         "Tags",      "Statement"};

static void statements(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "statements");
    char title[64], cell[RF_SHORT];
    snprintf(title, sizeof(title), "Top %zu statements by cost", json_array_size(a));
    table_open(out, "statements", title, stmt_heads, 10);
    double max = json_array_size(a) ? rj_num(json_array_get(a, 0), "cost_micro") : 0;
    size_t i;
    const json_t *s;
    json_array_foreach(a, i, s)
    {
        pgt_buf_t tags = {0};
        rf_tags(&tags, json_object_get(s, "tags"));
        pgt_buf_printf(out, "<tr><td style=\"" TD NUM "\">%lld</td>", (long long)rj_int(s, "rank"));
        money_bar_cell(out, doc, s, "cost", max > 0 ? rj_num(s, "cost_micro") * 100 / max : 0,
                       BAR_BLUE);
        text_cell(out, rj_str(s, "user"));
        text_cell(out, rf_clock(rj_str(s, "started_at"), cell, sizeof(cell)));
        num_cell(out, pgt_fmt_seconds(rj_num(s, "duration_s"), cell, sizeof(cell)));
        num_cell(out, rf_count(rj_int(s, "rows"), cell, sizeof(cell)));
        text_cell(out, rj_str(s, "database"));
        text_cell(out, rj_str(s, "application"));
        text_cell(out, tags.s ? tags.s : "");
        code_cell(out, rj_str(s, "normalized"), QUERY_WIDTH);
        pgt_buf_puts(out, "</tr>\n");
        out->failed |= tags.failed;
        pgt_buf_free(&tags);
    }
    if (!json_array_size(a))
        pgt_buf_puts(out, "<tr><td colspan=\"10\" style=\"" TD
                          "\">No statements on this day.</td></tr>\n");
    pgt_buf_puts(out, "</table>\n");
}

static const char *const user_heads[] = {">#",          "User",           ">Cost",
                                         ">Statements", ">vs day before", "Most expensive shape"};

static void users(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "users");
    char title[64], cell[RF_SHORT];
    if (!json_array_size(a))
        return;
    snprintf(title, sizeof(title), "Top %zu users by cost", json_array_size(a));
    table_open(out, "users", title, user_heads, 6);
    size_t i;
    const json_t *u;
    json_array_foreach(a, i, u)
    {
        const json_t *top = json_object_get(u, "top_shape");
        pgt_buf_printf(out, "<tr><td style=\"" TD NUM "\">%lld</td>", (long long)rj_int(u, "rank"));
        text_cell(out, rj_str(u, "user"));
        money_bar_cell(out, doc, u, "cost", rj_num(u, "share_pct"), BAR_BLUE);
        num_cell(out, rf_count(rj_int(u, "statements"), cell, sizeof(cell)));
        num_cell(out, rf_change(u, "change_pct", "new", cell, sizeof(cell)));
        pgt_buf_printf(
            out,
            "<td style=\"" TD "\"><div style=\"font-size:11px;color:" MUTED
            ";\">%s · %s</div><code style=\"" MONO
            "font-size:11px;color:#1f2937;word-wrap:break-word;overflow-wrap:break-word;\">",
            rj_str(top, "fingerprint"), rf_money(doc, top, "cost", cell, sizeof(cell)));
        esc_snip(out, rj_str(top, "normalized"), TOP_QUERY_WIDTH);
        pgt_buf_puts(out, "</code></td></tr>\n");
    }
    pgt_buf_puts(out, "</table>\n");
}

static const char *const shape_heads[] = {">#",   ">Total", ">Count", ">Mean",
                                          ">Max", "Users",  "Shape"};

static void shapes(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "shapes");
    char title[64], cell[RF_SHORT];
    if (!json_array_size(a))
        return;
    snprintf(title, sizeof(title), "Top %zu query shapes by total cost", json_array_size(a));
    table_open(out, "shapes", title, shape_heads, 7);
    size_t i, k;
    const json_t *s, *name;
    json_array_foreach(a, i, s)
    {
        pgt_buf_printf(out, "<tr><td style=\"" TD NUM "\">%lld</td>", (long long)rj_int(s, "rank"));
        money_bar_cell(out, doc, s, "cost", rj_num(s, "share_pct"), BAR_BLUE);
        num_cell(out, rf_count(rj_int(s, "statements"), cell, sizeof(cell)));
        num_cell(out, rf_money(doc, s, "mean_cost", cell, sizeof(cell)));
        num_cell(out, rf_money(doc, s, "max_cost", cell, sizeof(cell)));
        pgt_buf_printf(out, "<td style=\"" TD "\"><b>%s</b> ",
                       rf_count(rj_int(s, "users"), cell, sizeof(cell)));
        json_array_foreach(rj_arr(s, "user_names"), k, name)
        {
            pgt_buf_puts(out, k ? ", " : "");
            esc_snip(out, json_string_value(name) ? json_string_value(name) : "", CELL_WIDTH);
        }
        pgt_buf_printf(out,
                       "</td><td style=\"" TD "\"><div style=\"font-size:11px;color:" MUTED
                       ";\">%s</div>",
                       rj_str(s, "fingerprint"));
        pgt_buf_printf(
            out, "<code style=\"" MONO
                 "font-size:11px;color:#1f2937;word-wrap:break-word;overflow-wrap:break-word;\">");
        esc_snip(out, rj_str(s, "normalized"), QUERY_WIDTH);
        pgt_buf_puts(out, "</code></td></tr>\n");
    }
    pgt_buf_puts(out, "</table>\n");
}

static const char *const schema_heads[] = {">#", "Schema", ">Cost", ">Compute"};
static const char *const table_heads[] = {">#", "Table", ">Cost", ">Queries", ">Compute"};

/* One list of the data section: its name, cost with a bar of its share of
 * the day, (tables) queries, and compute. */
static void data_list(pgt_buf_t *out, const json_t *doc, const json_t *a, bool tables)
{
    char title[64], cell[RF_SHORT];
    snprintf(title, sizeof(title), "Top %zu %s by cost", json_array_size(a),
             tables ? "tables" : "schemas");
    table_open(out, tables ? "tables" : "schemas", title, tables ? table_heads : schema_heads,
               tables ? 5 : 4);
    size_t i;
    const json_t *x;
    json_array_foreach(a, i, x)
    {
        pgt_buf_t name = {0};
        rf_data_name(&name, x);
        pgt_buf_printf(out, "<tr><td style=\"" TD NUM "\">%lld</td>", (long long)rj_int(x, "rank"));
        pgt_buf_puts(out, "<td style=\"" TD "\"><code style=\"" MONO "font-size:11px;\">");
        esc_snip(out, name.s ? name.s : "", CELL_WIDTH + 40);
        pgt_buf_puts(out, "</code></td>");
        money_bar_cell(out, doc, x, "cost", rj_num(x, "share_pct"), BAR_BLUE);
        if (tables)
            num_cell(out, rf_count(rj_int(x, "queries"), cell, sizeof(cell)));
        num_cell(out, pgt_fmt_seconds(rj_num(x, "compute_s"), cell, sizeof(cell)));
        pgt_buf_puts(out, "</tr>\n");
        out->failed |= name.failed;
        pgt_buf_free(&name);
    }
    pgt_buf_puts(out, "</table>\n");
}

/* The data that cost the most, on a day whose statements read known
 * relations: a line of what they cost, then schemas and tables. */
static void data(pgt_buf_t *out, const json_t *doc)
{
    const json_t *d = json_object_get(doc, "data");
    if (!json_array_size(rj_arr(d, "tables")))
        return;
    pgt_buf_t intro = {0};
    rf_data_intro(&intro, doc, "");
    pgt_buf_puts(out, "<h2 style=\"" FONT "font-size:18px;margin:32px 0 4px 0;color:#111827;\">"
                      "Data that cost the most</h2>\n<p style=\"" FONT "font-size:12px;color:" MUTED
                      ";margin:0;\">");
    esc(out, intro.s ? intro.s : "");
    pgt_buf_puts(out, ".</p>\n");
    out->failed |= intro.failed;
    pgt_buf_free(&intro);
    data_list(out, doc, rj_arr(d, "schemas"), false);
    data_list(out, doc, rj_arr(d, "tables"), true);
}

/* The subject of a budget: "user alice", "default: bob", "(removed)". */
static void subject_cell(pgt_buf_t *out, const json_t *b)
{
    pgt_buf_t t = {0};
    rf_subject_text(&t, b);
    text_cell(out, t.s ? t.s : "");
    out->failed |= t.failed;
    pgt_buf_free(&t);
}

static const char *const budget_heads[] = {">Budget", "Subject", "Period", ">Spent",
                                           ">Limit",  "Used",    "Action"};

static void budgets(pgt_buf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(json_object_get(doc, "budgets"), "items");
    char cell[RF_SHORT];
    if (!json_array_size(a))
        return;
    table_open(out, "budgets", "Budgets at or above a warn threshold", budget_heads, 7);
    size_t i;
    const json_t *b;
    json_array_foreach(a, i, b)
    {
        double pct = rj_num(b, "percent");
        const char *color = pct >= 100 ? BAR_RED : BAR_AMBER;
        pgt_buf_printf(out, "<tr><td style=\"" TD NUM "\">%lld</td>", (long long)rj_int(b, "id"));
        subject_cell(out, b);
        text_cell(out, rj_str(b, "period"));
        num_cell(out, rf_money(doc, b, "spent", cell, sizeof(cell)));
        num_cell(out, rf_money(doc, b, "limit", cell, sizeof(cell)));
        pgt_buf_printf(out,
                       "<td style=\"" TD "min-width:90px;\"><span style=\"color:%s;font-weight:"
                       "bold;\">%.1f%%</span>",
                       color, pct);
        bar(out, pct, color);
        pgt_buf_puts(out, "</td>");
        text_cell(out, rj_str(b, "action"));
        pgt_buf_puts(out, "</tr>\n");
    }
    pgt_buf_puts(out, "</table>\n");
}

static const char *const refusal_heads[] = {">Budget",  "Subject",    "Period",
                                            ">Refused", ">Cancelled", ">Cost"};

static void refusals(pgt_buf_t *out, const json_t *doc)
{
    const json_t *r = json_object_get(doc, "refusals");
    char cell[RF_SHORT], title[96], n[RF_SHORT];
    if (!rj_int(r, "statements"))
        return;
    snprintf(title, sizeof(title), "Stopped by budgets: %s statements",
             rf_count(rj_int(r, "statements"), n, sizeof(n)));
    table_open(out, "refusals", title, refusal_heads, 6);
    size_t i;
    const json_t *x;
    json_array_foreach(rj_arr(r, "by_budget"), i, x)
    {
        pgt_buf_printf(out, "<tr><td style=\"" TD NUM "\">%lld</td>",
                       (long long)rj_int(x, "budget_id"));
        subject_cell(out, x);
        text_cell(out, rj_str(x, "period"));
        num_cell(out, rf_count(rj_int(x, "refused"), cell, sizeof(cell)));
        num_cell(out, rf_count(rj_int(x, "budget_cancelled"), cell, sizeof(cell)));
        num_cell(out, rf_money(doc, x, "cost", cell, sizeof(cell)));
        pgt_buf_puts(out, "</tr>\n");
    }
    pgt_buf_puts(out, "</table>\n");
}

static const char *const regression_heads[] = {
    ">#", ">Ratio", "Release", ">Mean", ">Runs", "Before", ">Mean before", ">Runs before", "Shape"};

/* A cell of a shape: its fingerprint above its text. */
static void shape_cell(pgt_buf_t *out, const json_t *x)
{
    pgt_buf_printf(out,
                   "<td style=\"" TD "\"><div style=\"font-size:11px;color:" MUTED ";\">%s</div>",
                   rj_str(x, "fingerprint"));
    pgt_buf_puts(out,
                 "<code style=\"" MONO
                 "font-size:11px;color:#1f2937;word-wrap:break-word;overflow-wrap:break-word;\">");
    esc_snip(out, rj_str(x, "normalized"), QUERY_WIDTH);
    pgt_buf_puts(out, "</code></td>");
}

/* One row of a table of the report's sections, its cells after the rank. */
typedef void (*row_fn)(pgt_buf_t *out, const json_t *doc, const json_t *x);

/* The table of section id: titled by one of the shared title writers, a
 * row per element of its items, and the line note writes under it (NULL:
 * none); nothing when there are no items. */
static void items_table(pgt_buf_t *out, const json_t *doc, const char *id,
                        void (*title)(pgt_buf_t *, const json_t *), const char *const *heads,
                        size_t n, row_fn row,
                        void (*note)(pgt_buf_t *, const json_t *, const char *))
{
    const json_t *x, *a = rj_arr(json_object_get(doc, id), "items");
    if (!json_array_size(a))
        return;
    pgt_buf_t t = {0}, e = {0};
    title(&t, doc);
    esc(&e, t.s ? t.s : "");
    table_open(out, id, e.s ? e.s : "", heads, n);
    size_t i;
    json_array_foreach(a, i, x)
    {
        pgt_buf_printf(out, "<tr><td style=\"" TD NUM "\">%lld</td>", (long long)rj_int(x, "rank"));
        row(out, doc, x);
        pgt_buf_puts(out, "</tr>\n");
    }
    pgt_buf_puts(out, "</table>\n");
    if (note) {
        pgt_buf_t line = {0};
        note(&line, doc, "");
        pgt_buf_puts(out, "<p style=\"" FONT "font-size:12px;color:" MUTED ";margin:6px 0 0 0;\">");
        esc(out, line.s ? line.s : "");
        pgt_buf_puts(out, "</p>\n");
        out->failed |= line.failed;
        pgt_buf_free(&line);
    }
    out->failed |= t.failed || e.failed;
    pgt_buf_free(&t);
    pgt_buf_free(&e);
}

/* A regression: the ratio, both releases with their means and runs. */
static void regression_row(pgt_buf_t *out, const json_t *doc, const json_t *x)
{
    char cell[RF_SHORT];
    pgt_buf_printf(out, "<td style=\"" TD NUM "color:" UP_COLOR ";font-weight:bold;\">%s</td>",
                   rf_ratio(x, "ratio", cell, sizeof(cell)));
    text_cell(out, rj_str(x, "release"));
    num_cell(out, rf_money(doc, x, "mean_cost", cell, sizeof(cell)));
    num_cell(out, rf_count(rj_int(x, "statements"), cell, sizeof(cell)));
    text_cell(out, rj_str(x, "previous_release"));
    num_cell(out, rf_money(doc, x, "previous_mean_cost", cell, sizeof(cell)));
    num_cell(out, rf_count(rj_int(x, "previous_statements"), cell, sizeof(cell)));
    shape_cell(out, x);
}

static const char *const repeat_heads[] = {">#",    ">Runs",  ">Users", ">Apps",
                                           ">Cost", ">Saved", "Ran it", "Shape"};

/* Work done twice: runs, users, applications, cost, saved, who ran it. */
static void repeat_row(pgt_buf_t *out, const json_t *doc, const json_t *x)
{
    char cell[RF_SHORT];
    num_cell(out, rf_count(rj_int(x, "runs"), cell, sizeof(cell)));
    num_cell(out, rf_count(rj_int(x, "users"), cell, sizeof(cell)));
    num_cell(out, rf_count(rj_int(x, "applications"), cell, sizeof(cell)));
    num_cell(out, rf_money(doc, x, "cost", cell, sizeof(cell)));
    num_cell(out, rf_money(doc, x, "saved", cell, sizeof(cell)));
    text_cell(out, rj_str(x, "who"));
    shape_cell(out, x);
}

static const char *const approval_heads[] = {">ID", "Ticket", "User",  "Scope", ">Cap",
                                             "By",  "Until",  ">Runs", ">Cost", "Statement"};

static void approvals(pgt_buf_t *out, const json_t *doc)
{
    const json_t *r = json_object_get(doc, "approvals");
    char cell[RF_SHORT], title[128], n[RF_SHORT], runs[RF_SHORT];
    if (!rj_int(r, "approvals"))
        return;
    snprintf(title, sizeof(title), "Approvals in force: %s, %s run%s under them, %s",
             rf_count(rj_int(r, "approvals"), n, sizeof(n)),
             rf_count(rj_int(r, "runs"), runs, sizeof(runs)), rj_int(r, "runs") == 1 ? "" : "s",
             rf_money(doc, r, "cost", cell, sizeof(cell)));
    table_open(out, "approvals", title, approval_heads, 10);
    size_t i;
    const json_t *x;
    json_array_foreach(rj_arr(r, "items"), i, x)
    {
        pgt_buf_printf(out, "<tr><td style=\"" TD NUM "\">%lld</td>", (long long)rj_int(x, "id"));
        text_cell(out, rj_str(x, "ticket"));
        text_cell(out, rj_str(x, "user"));
        text_cell(out, rj_str(x, "scope"));
        num_cell(out, rf_approval_max(doc, x, cell, sizeof(cell)));
        text_cell(out, rj_str(x, "approved_by"));
        text_cell(out, rf_minute(rj_str(x, "until"), cell, sizeof(cell)));
        num_cell(out, rf_count(rj_int(x, "runs"), cell, sizeof(cell)));
        num_cell(out, rf_money(doc, x, "cost", cell, sizeof(cell)));
        text_cell(out, rj_str(x, "normalized"));
        pgt_buf_puts(out, "</tr>\n");
    }
    pgt_buf_puts(out, "</table>\n");
}

char *pgt_report_render_html(const json_t *doc, char *err, size_t errlen)
{
    pgt_buf_t out = {0};
    pgt_buf_puts(&out, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                       "<title>pgtally daily report ");
    esc(&out, rj_str(doc, "date"));
    pgt_buf_puts(
        &out, "</title>\n</head>\n<body style=\"margin:0;padding:0;background-color:#f3f4f6;\">\n"
              "<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" "
              "border=\"0\" style=\"width:100%;background-color:#f3f4f6;\"><tr><td "
              "align=\"center\" style=\"padding:24px 12px;\">\n<table role=\"presentation\" "
              "width=\"960\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"width:"
              "100%;max-width:960px;background-color:#ffffff;border:1px solid #d1d5db;\"><tr>"
              "<td style=\"padding:20px 24px;" FONT "color:#111827;font-size:13px;"
              "line-height:1.4;text-align:left;\">\n");
    pgt_buf_puts(&out, "<h1 style=\"" FONT
                       "font-size:22px;margin:0 0 4px 0;\">pgtally daily report</h1>\n"
                       "<p style=\"margin:0 0 16px 0;color:" MUTED ";\">");
    esc(&out, rj_str(doc, "date"));
    pgt_buf_puts(&out, " · ");
    esc(&out, rj_str(doc, "timezone"));
    pgt_buf_puts(&out, "</p>\n");
    summary(&out, doc);
    statements(&out, doc);
    users(&out, doc);
    shapes(&out, doc);
    data(&out, doc);
    budgets(&out, doc);
    refusals(&out, doc);
    items_table(&out, doc, "regressions", rf_regressions_title, regression_heads, 9, regression_row,
                NULL);
    items_table(&out, doc, "repeats", rf_repeats_title, repeat_heads, 8, repeat_row,
                rf_repeats_note);
    approvals(&out, doc);
    pgt_buf_puts(&out,
                 "<p style=\"margin:24px 0 0 0;font-size:11px;color:" MUTED ";\">Amounts in ");
    esc(&out, rj_str(doc, "currency"));
    pgt_buf_puts(&out, ". Statements are shown normalized: constants are replaced by $1, $2, …. "
                       "Generated by pgtally at ");
    esc(&out, rj_str(doc, "generated_at"));
    pgt_buf_puts(&out, ".</p>\n</td></tr></table>\n</td></tr></table>\n</body>\n</html>\n");
    return rf_finish(&out, err, errlen);
}
