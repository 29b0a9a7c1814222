/* The report's renderers for text, Markdown, JSON and CSV (HTML and Slack
 * have their own files), and the pieces they all share. A renderer reads
 * only the document that pgt_report_build made, so the same report renders
 * the same way anywhere; every string from the ledger is escaped for the
 * format it lands in. */
#include "report_render.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/names.h"
#include "pgtally/pricing.h"
#include "pgtally/report.h"

#define TEXT_QUERY_CHARS 70 /* statement text in a text table */
#define TEXT_CELL_CHARS 40  /* any other text cell */
#define MD_QUERY_CHARS 120  /* statement text in a Markdown table */
#define BAR_WIDTH 10        /* characters of a text bar */

PGT_NAMES_DEFINE(PGT_REPORT_FORMAT_MAP, pgt_report_format_t, pgt_report_format_name,
                 pgt_report_format_parse)

/* ---- The buffer ---------------------------------------------------------- */

void rb_add(rbuf_t *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void rb_puts(rbuf_t *b, const char *s)
{
    rb_add(b, s, strlen(s));
}

void rb_putc(rbuf_t *b, char c)
{
    rb_add(b, &c, 1);
}

void rb_printf(rbuf_t *b, const char *fmt, ...)
{
    char small[256], *big = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        rb_add(b, small, (size_t)n);
        return;
    }
    va_start(ap, fmt);
    n = vasprintf(&big, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    rb_add(b, big, (size_t)n);
    free(big);
}

char *rb_finish(rbuf_t *b, char *err, size_t errlen)
{
    if (!b->failed && !b->s)
        rb_add(b, "", 0);
    if (b->failed) {
        snprintf(err, errlen, "out of memory");
        rb_free(b);
        return NULL;
    }
    char *s = b->s;
    b->s = NULL;
    return s;
}

void rb_free(rbuf_t *b)
{
    free(b->s);
    *b = (rbuf_t){0};
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

/* Bytes of the UTF-8 sequence starting with c (the text is valid). */
static size_t seq_len(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Whether the character at p is white space or a control character (C0,
 * DEL or C1), all of which become a space. */
static bool blank_at(const unsigned char *p)
{
    return *p <= ' ' || *p == 0x7F || (p[0] == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F);
}

void rf_snippet(rbuf_t *out, const char *s, size_t max, const char *ellipsis)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t chars = 0;
    bool space = false;
    while (*p && blank_at(p))
        p += seq_len(*p);
    while (*p) {
        if (blank_at(p)) {
            space = true;
            p += seq_len(*p);
            continue;
        }
        if (max && chars + (space ? 1 : 0) >= max) {
            rb_puts(out, ellipsis);
            return;
        }
        if (space) {
            rb_putc(out, ' ');
            chars++;
            space = false;
        }
        size_t k = seq_len(*p);
        rb_add(out, (const char *)p, k);
        p += k;
        chars++;
    }
}

void rf_tags(rbuf_t *out, const json_t *tags)
{
    const char *key;
    json_t *v;
    bool first = true;
    json_object_foreach((json_t *)tags, key, v)
    {
        rb_printf(out, "%s%s=", first ? "" : ", ", key);
        if (json_is_string(v))
            rb_puts(out, json_string_value(v));
        else {
            char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            if (t)
                rb_puts(out, t);
            free(t);
        }
        first = false;
    }
}

/* ---- Text: aligned tables for a terminal --------------------------------- */

#define MAX_COLS 12

/* A table being laid out: cells are kept until every width is known. */
typedef struct table {
    int ncols;                  /* columns */
    const char *head[MAX_COLS]; /* column names */
    bool right[MAX_COLS];       /* right-aligned (numbers) */
    size_t width[MAX_COLS];     /* widest cell, in characters */
    rbuf_t cells;               /* every cell, NUL-separated, row after row */
    size_t nrows;               /* rows added */
} table_t;

static size_t chars_of(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static void table_init(table_t *t, int ncols, const char *const *head, const bool *right)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    for (int i = 0; i < ncols; i++) {
        t->head[i] = head[i];
        t->right[i] = right[i];
        t->width[i] = chars_of(head[i]);
    }
}

/* Adds one cell of the current row, as a snippet of at most max chars. */
static void table_cell(table_t *t, int col, const char *s, size_t max)
{
    size_t at = t->cells.len;
    rf_snippet(&t->cells, s, max, "...");
    rb_add(&t->cells, "", 1);
    if (!t->cells.failed) {
        size_t w = chars_of(t->cells.s + at);
        if (w > t->width[col])
            t->width[col] = w;
    }
    if (col == t->ncols - 1)
        t->nrows++;
}

static void print_row(rbuf_t *out, const table_t *t, const char *const *cells)
{
    for (int i = 0; i < t->ncols; i++) {
        size_t pad = t->width[i] - chars_of(cells[i]);
        bool last = i + 1 == t->ncols;
        if (i)
            rb_puts(out, "  ");
        if (t->right[i])
            rb_printf(out, "%*s", (int)pad, "");
        rb_puts(out, cells[i]);
        if (!t->right[i] && !last)
            rb_printf(out, "%*s", (int)pad, "");
    }
    rb_putc(out, '\n');
}

/* Prints the table to out and frees it. */
static void table_print(rbuf_t *out, table_t *t)
{
    print_row(out, t, t->head);
    const char *p = t->cells.s;
    for (size_t r = 0; p && !t->cells.failed && r < t->nrows; r++) {
        const char *row[MAX_COLS];
        for (int i = 0; i < t->ncols; i++, p += strlen(p) + 1)
            row[i] = p;
        print_row(out, t, row);
    }
    out->failed |= t->cells.failed;
    rb_free(&t->cells);
}

/* The day's totals and how they compare, in words; shared by text and
 * Markdown (bold marks the figures in Markdown). */
static void totals_lines(rbuf_t *out, const json_t *doc, const char *bold)
{
    const json_t *t = json_object_get(doc, "totals");
    const json_t *prev = json_object_get(t, "previous_day"), *mean = json_object_get(t, "mean_7d");
    const json_t *cp = json_object_get(t, "change_vs_previous_day");
    const json_t *cm = json_object_get(t, "change_vs_mean_7d");
    char cost[RF_SHORT], n[RF_SHORT], comp[RF_SHORT], users[RF_SHORT], a[RF_SHORT], b[RF_SHORT],
        c[RF_SHORT], pc[RF_SHORT], mc[RF_SHORT];
    rb_printf(out, "Total: %s%s%s in %s statements, %s compute, %s users\n", bold,
              rf_money(doc, t, "cost", cost, sizeof(cost)), bold,
              rf_count(rj_int(t, "statements"), n, sizeof(n)),
              pgt_fmt_seconds(rj_num(t, "compute_s"), comp, sizeof(comp)),
              rf_count(rj_int(t, "users"), users, sizeof(users)));
    rb_printf(out, "vs %s (%s): cost %s, statements %s, compute %s\n", rj_str(prev, "date"),
              rf_money(doc, prev, "cost", pc, sizeof(pc)),
              rf_change(cp, "cost_pct", "n/a", a, sizeof(a)),
              rf_change(cp, "statements_pct", "n/a", b, sizeof(b)),
              rf_change(cp, "compute_pct", "n/a", c, sizeof(c)));
    rb_printf(out, "vs 7-day mean (%lld day%s, %s): cost %s, statements %s, compute %s\n",
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
        rb_printf(out, "%s%s %s", first ? "Did not complete: " : ", ",
                  rf_count(json_integer_value(v), n, sizeof(n)), key);
        first = false;
    }
    if (!first)
        rb_putc(out, '\n');
}

static const char *const text_stmt_head[] = {
    "#", "COST", "USER", "STARTED", "DURATION", "ROWS", "DATABASE", "APPLICATION", "TAGS", "QUERY"};
static const bool text_stmt_right[] = {true, true,  false, false, true,
                                       true, false, false, false, false};

static void text_statements(rbuf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "statements");
    rb_printf(out, "\nTop %zu statements by cost\n\n", json_array_size(a));
    if (!json_array_size(a)) {
        rb_puts(out, "No statements on this day.\n");
        return;
    }
    table_t t;
    table_init(&t, 10, text_stmt_head, text_stmt_right);
    size_t i;
    const json_t *s;
    json_array_foreach(a, i, s)
    {
        char rank[16], cost[RF_SHORT], clock[16], dur[RF_SHORT], rows[RF_SHORT];
        rbuf_t tags = {0};
        rf_tags(&tags, json_object_get(s, "tags"));
        snprintf(rank, sizeof(rank), "%lld", (long long)rj_int(s, "rank"));
        table_cell(&t, 0, rank, 0);
        table_cell(&t, 1, rf_money(doc, s, "cost", cost, sizeof(cost)), 0);
        table_cell(&t, 2, rj_str(s, "user"), TEXT_CELL_CHARS);
        table_cell(&t, 3, rf_clock(rj_str(s, "started_at"), clock, sizeof(clock)), 0);
        table_cell(&t, 4, pgt_fmt_seconds(rj_num(s, "duration_s"), dur, sizeof(dur)), 0);
        table_cell(&t, 5, rf_count(rj_int(s, "rows"), rows, sizeof(rows)), 0);
        table_cell(&t, 6, rj_str(s, "database"), TEXT_CELL_CHARS);
        table_cell(&t, 7, rj_str(s, "application"), TEXT_CELL_CHARS);
        table_cell(&t, 8, tags.s ? tags.s : "", TEXT_CELL_CHARS);
        table_cell(&t, 9, rj_str(s, "normalized"), TEXT_QUERY_CHARS);
        out->failed |= tags.failed;
        rb_free(&tags);
    }
    table_print(out, &t);
}

static const char *const text_user_head[] = {"#",     "USER",          "COST",      "STATEMENTS",
                                             "SHARE", "VS DAY BEFORE", "TOP SHAPE", "QUERY"};
static const bool text_user_right[] = {true, false, true, true, true, true, false, false};

static void text_users(rbuf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "users");
    if (!json_array_size(a))
        return;
    rb_printf(out, "\nTop %zu users by cost\n\n", json_array_size(a));
    table_t t;
    table_init(&t, 8, text_user_head, text_user_right);
    size_t i;
    const json_t *u;
    json_array_foreach(a, i, u)
    {
        char rank[16], cost[RF_SHORT], n[RF_SHORT], share[RF_SHORT], ch[RF_SHORT];
        const json_t *top = json_object_get(u, "top_shape");
        snprintf(rank, sizeof(rank), "%lld", (long long)rj_int(u, "rank"));
        snprintf(share, sizeof(share), "%.1f%%", rj_num(u, "share_pct"));
        table_cell(&t, 0, rank, 0);
        table_cell(&t, 1, rj_str(u, "user"), TEXT_CELL_CHARS);
        table_cell(&t, 2, rf_money(doc, u, "cost", cost, sizeof(cost)), 0);
        table_cell(&t, 3, rf_count(rj_int(u, "statements"), n, sizeof(n)), 0);
        table_cell(&t, 4, share, 0);
        table_cell(&t, 5, rf_change(u, "change_pct", "new", ch, sizeof(ch)), 0);
        table_cell(&t, 6, rj_str(top, "fingerprint"), 0);
        table_cell(&t, 7, rj_str(top, "normalized"), TEXT_QUERY_CHARS - 20);
    }
    table_print(out, &t);
}

static const char *const text_shape_head[] = {"#",    "FINGERPRINT", "TOTAL", "COUNT",
                                              "MEAN", "MAX",         "USERS", "QUERY"};
static const bool text_shape_right[] = {true, false, true, true, true, true, true, false};

static void text_shapes(rbuf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "shapes");
    if (!json_array_size(a))
        return;
    rb_printf(out, "\nTop %zu query shapes by total cost\n\n", json_array_size(a));
    table_t t;
    table_init(&t, 8, text_shape_head, text_shape_right);
    size_t i;
    const json_t *s;
    json_array_foreach(a, i, s)
    {
        char rank[16], total[RF_SHORT], n[RF_SHORT], mean[RF_SHORT], max[RF_SHORT], users[RF_SHORT];
        snprintf(rank, sizeof(rank), "%lld", (long long)rj_int(s, "rank"));
        table_cell(&t, 0, rank, 0);
        table_cell(&t, 1, rj_str(s, "fingerprint"), 0);
        table_cell(&t, 2, rf_money(doc, s, "cost", total, sizeof(total)), 0);
        table_cell(&t, 3, rf_count(rj_int(s, "statements"), n, sizeof(n)), 0);
        table_cell(&t, 4, rf_money(doc, s, "mean_cost", mean, sizeof(mean)), 0);
        table_cell(&t, 5, rf_money(doc, s, "max_cost", max, sizeof(max)), 0);
        table_cell(&t, 6, rf_count(rj_int(s, "users"), users, sizeof(users)), 0);
        table_cell(&t, 7, rj_str(s, "normalized"), TEXT_QUERY_CHARS);
    }
    table_print(out, &t);
}

void rf_subject_text(rbuf_t *out, const json_t *b)
{
    if (rj_null(b, "subject_type"))
        rb_puts(out, "(removed)");
    else if (strcmp(rj_str(b, "subject_type"), "default") == 0)
        rb_printf(out, "default%s%s", rj_null(b, "user") ? "" : ": ", rj_str(b, "user"));
    else
        rb_printf(out, "%s %s", rj_str(b, "subject_type"), rj_str(b, "subject"));
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

static void text_budgets(rbuf_t *out, const json_t *doc)
{
    const json_t *bs = json_object_get(doc, "budgets");
    const json_t *a = rj_arr(bs, "items");
    if (!json_array_size(a))
        return;
    rb_printf(out,
              "\nBudgets at or above a warn threshold (%lld of %lld, spend to the end of %s)\n\n",
              (long long)rj_int(bs, "over_threshold"), (long long)rj_int(bs, "checked"),
              rj_str(doc, "date"));
    table_t t;
    table_init(&t, 8, text_budget_head, text_budget_right);
    size_t i;
    const json_t *b;
    json_array_foreach(a, i, b)
    {
        char id[24], spent[RF_SHORT], limit[RF_SHORT], bar[16], pct[16];
        rbuf_t subject = {0};
        rf_subject_text(&subject, b);
        snprintf(id, sizeof(id), "%lld", (long long)rj_int(b, "id"));
        snprintf(pct, sizeof(pct), "%d%%", (int)rj_num(b, "percent"));
        table_cell(&t, 0, id, 0);
        table_cell(&t, 1, subject.s ? subject.s : "", TEXT_CELL_CHARS);
        table_cell(&t, 2, rj_str(b, "period"), 0);
        table_cell(&t, 3, rf_money(doc, b, "spent", spent, sizeof(spent)), 0);
        table_cell(&t, 4, rf_money(doc, b, "limit", limit, sizeof(limit)), 0);
        table_cell(&t, 5, text_bar(rj_num(b, "percent"), bar, sizeof(bar)), 0);
        table_cell(&t, 6, pct, 0);
        table_cell(&t, 7, rj_str(b, "action"), 0);
        out->failed |= subject.failed;
        rb_free(&subject);
    }
    table_print(out, &t);
}

static const char *const text_refusal_head[] = {"BUDGET",  "SUBJECT",   "PERIOD",
                                                "REFUSED", "CANCELLED", "COST"};
static const bool text_refusal_right[] = {true, false, false, true, true, true};

static void text_refusals(rbuf_t *out, const json_t *doc)
{
    const json_t *r = json_object_get(doc, "refusals");
    if (!rj_int(r, "statements"))
        return;
    char n[RF_SHORT], a[RF_SHORT], b[RF_SHORT];
    rb_printf(out, "\nStopped by budgets: %s statements (%s refused, %s cancelled)\n\n",
              rf_count(rj_int(r, "statements"), n, sizeof(n)),
              rf_count(rj_int(r, "refused"), a, sizeof(a)),
              rf_count(rj_int(r, "budget_cancelled"), b, sizeof(b)));
    table_t t;
    table_init(&t, 6, text_refusal_head, text_refusal_right);
    size_t i;
    const json_t *x;
    json_array_foreach(rj_arr(r, "by_budget"), i, x)
    {
        char id[24], cost[RF_SHORT];
        rbuf_t subject = {0};
        rf_subject_text(&subject, x);
        snprintf(id, sizeof(id), "%lld", (long long)rj_int(x, "budget_id"));
        table_cell(&t, 0, id, 0);
        table_cell(&t, 1, subject.s ? subject.s : "", TEXT_CELL_CHARS);
        table_cell(&t, 2, rj_str(x, "period"), 0);
        table_cell(&t, 3, rf_count(rj_int(x, "refused"), a, sizeof(a)), 0);
        table_cell(&t, 4, rf_count(rj_int(x, "budget_cancelled"), b, sizeof(b)), 0);
        table_cell(&t, 5, rf_money(doc, x, "cost", cost, sizeof(cost)), 0);
        out->failed |= subject.failed;
        rb_free(&subject);
    }
    table_print(out, &t);
}

static char *render_text(const json_t *doc, char *err, size_t errlen)
{
    rbuf_t out = {0};
    rb_printf(&out, "pgtally daily report for %s (%s)\n\n", rj_str(doc, "date"),
              rj_str(doc, "timezone"));
    totals_lines(&out, doc, "");
    text_statements(&out, doc);
    text_users(&out, doc);
    text_shapes(&out, doc);
    text_budgets(&out, doc);
    text_refusals(&out, doc);
    return rb_finish(&out, err, errlen);
}

/* ---- Markdown ------------------------------------------------------------ */

/* Appends plain text for a table cell: Markdown's punctuation escaped with
 * a backslash, < and & as entities, so that no text from the ledger makes
 * a link, an emphasis, a tag or a new cell. */
static void md_text(rbuf_t *out, const char *s, size_t max)
{
    rbuf_t snip = {0};
    rf_snippet(&snip, s, max, "…");
    for (const char *p = snip.s ? snip.s : ""; *p; p++) {
        if (*p == '<')
            rb_puts(out, "&lt;");
        else if (*p == '&')
            rb_puts(out, "&amp;");
        else {
            if (strchr("\\`*_[]|~", *p))
                rb_putc(out, '\\');
            rb_putc(out, *p);
        }
    }
    out->failed |= snip.failed;
    rb_free(&snip);
}

/* Appends s as a code span in a table cell: fenced by one backtick more
 * than its longest run of them, pipes escaped (GFM reads \| as a pipe even
 * in code spans). */
static void md_code(rbuf_t *out, const char *s, size_t max)
{
    rbuf_t snip = {0};
    rf_snippet(&snip, s, max, "…");
    const char *t = snip.s ? snip.s : "";
    size_t run = 0, longest = 0;
    for (const char *p = t; *p; p++) {
        run = *p == '`' ? run + 1 : 0;
        longest = run > longest ? run : longest;
    }
    bool pad = t[0] == '`' || (t[0] && t[strlen(t) - 1] == '`');
    for (size_t i = 0; i <= longest; i++)
        rb_putc(out, '`');
    if (pad)
        rb_putc(out, ' ');
    for (const char *p = t; *p; p++) {
        if (*p == '|')
            rb_putc(out, '\\');
        rb_putc(out, *p);
    }
    if (pad)
        rb_putc(out, ' ');
    for (size_t i = 0; i <= longest; i++)
        rb_putc(out, '`');
    out->failed |= snip.failed;
    rb_free(&snip);
}

static void md_statements(rbuf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "statements");
    rb_printf(out, "\n## Top %zu statements by cost\n\n", json_array_size(a));
    if (!json_array_size(a)) {
        rb_puts(out, "No statements on this day.\n");
        return;
    }
    rb_puts(out, "| # | Cost | User | Started | Duration | Rows | Database | Application | Tags | "
                 "Statement |\n|--:|--:|---|---|--:|--:|---|---|---|---|\n");
    size_t i;
    const json_t *s;
    json_array_foreach(a, i, s)
    {
        char cost[RF_SHORT], clock[16], dur[RF_SHORT], rows[RF_SHORT];
        rbuf_t tags = {0};
        rf_tags(&tags, json_object_get(s, "tags"));
        rb_printf(out, "| %lld | %s | ", (long long)rj_int(s, "rank"),
                  rf_money(doc, s, "cost", cost, sizeof(cost)));
        md_text(out, rj_str(s, "user"), TEXT_CELL_CHARS);
        rb_printf(out, " | %s | %s | %s | ",
                  rf_clock(rj_str(s, "started_at"), clock, sizeof(clock)),
                  pgt_fmt_seconds(rj_num(s, "duration_s"), dur, sizeof(dur)),
                  rf_count(rj_int(s, "rows"), rows, sizeof(rows)));
        md_text(out, rj_str(s, "database"), TEXT_CELL_CHARS);
        rb_puts(out, " | ");
        md_text(out, rj_str(s, "application"), TEXT_CELL_CHARS);
        rb_puts(out, " | ");
        md_text(out, tags.s ? tags.s : "", TEXT_CELL_CHARS);
        rb_puts(out, " | ");
        md_code(out, rj_str(s, "normalized"), MD_QUERY_CHARS);
        rb_puts(out, " |\n");
        out->failed |= tags.failed;
        rb_free(&tags);
    }
}

static void md_users(rbuf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "users");
    if (!json_array_size(a))
        return;
    rb_printf(out, "\n## Top %zu users by cost\n\n", json_array_size(a));
    rb_puts(out, "| # | User | Cost | Statements | Share | vs day before | Top shape |\n"
                 "|--:|---|--:|--:|--:|--:|---|\n");
    size_t i;
    const json_t *u;
    json_array_foreach(a, i, u)
    {
        char cost[RF_SHORT], n[RF_SHORT], ch[RF_SHORT];
        rb_printf(out, "| %lld | ", (long long)rj_int(u, "rank"));
        md_text(out, rj_str(u, "user"), TEXT_CELL_CHARS);
        rb_printf(out, " | %s | %s | %.1f%% | %s | ", rf_money(doc, u, "cost", cost, sizeof(cost)),
                  rf_count(rj_int(u, "statements"), n, sizeof(n)), rj_num(u, "share_pct"),
                  rf_change(u, "change_pct", "new", ch, sizeof(ch)));
        md_code(out, rj_str(json_object_get(u, "top_shape"), "normalized"), MD_QUERY_CHARS / 2);
        rb_puts(out, " |\n");
    }
}

static void md_shapes(rbuf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "shapes");
    if (!json_array_size(a))
        return;
    rb_printf(out, "\n## Top %zu query shapes by total cost\n\n", json_array_size(a));
    rb_puts(out, "| # | Total | Count | Mean | Max | Users | Shape |\n"
                 "|--:|--:|--:|--:|--:|--:|---|\n");
    size_t i;
    const json_t *s;
    json_array_foreach(a, i, s)
    {
        char total[RF_SHORT], n[RF_SHORT], mean[RF_SHORT], max[RF_SHORT], users[RF_SHORT];
        rb_printf(out, "| %lld | %s | %s | %s | %s | %s | ", (long long)rj_int(s, "rank"),
                  rf_money(doc, s, "cost", total, sizeof(total)),
                  rf_count(rj_int(s, "statements"), n, sizeof(n)),
                  rf_money(doc, s, "mean_cost", mean, sizeof(mean)),
                  rf_money(doc, s, "max_cost", max, sizeof(max)),
                  rf_count(rj_int(s, "users"), users, sizeof(users)));
        md_code(out, rj_str(s, "normalized"), MD_QUERY_CHARS);
        rb_puts(out, " |\n");
    }
}

static void md_budgets(rbuf_t *out, const json_t *doc)
{
    const json_t *a = rj_arr(json_object_get(doc, "budgets"), "items");
    if (!json_array_size(a))
        return;
    rb_puts(out, "\n## Budgets at or above a warn threshold\n\n| Budget | Subject | Period | Spent "
                 "| Limit | Used | Action |\n|--:|---|---|--:|--:|--:|---|\n");
    size_t i;
    const json_t *b;
    json_array_foreach(a, i, b)
    {
        char spent[RF_SHORT], limit[RF_SHORT];
        rbuf_t subject = {0};
        rf_subject_text(&subject, b);
        rb_printf(out, "| %lld | ", (long long)rj_int(b, "id"));
        md_text(out, subject.s ? subject.s : "", TEXT_CELL_CHARS);
        rb_printf(out, " | %s | %s | %s | %.1f%% | %s |\n", rj_str(b, "period"),
                  rf_money(doc, b, "spent", spent, sizeof(spent)),
                  rf_money(doc, b, "limit", limit, sizeof(limit)), rj_num(b, "percent"),
                  rj_str(b, "action"));
        out->failed |= subject.failed;
        rb_free(&subject);
    }
}

static void md_refusals(rbuf_t *out, const json_t *doc)
{
    const json_t *r = json_object_get(doc, "refusals");
    if (!rj_int(r, "statements"))
        return;
    char n[RF_SHORT], a[RF_SHORT], c[RF_SHORT];
    rb_printf(out, "\n## Stopped by budgets\n\n%s statements: %s refused, %s cancelled.\n\n",
              rf_count(rj_int(r, "statements"), n, sizeof(n)),
              rf_count(rj_int(r, "refused"), a, sizeof(a)),
              rf_count(rj_int(r, "budget_cancelled"), c, sizeof(c)));
    rb_puts(out, "| Budget | Subject | Refused | Cancelled | Cost |\n|--:|---|--:|--:|--:|\n");
    size_t i;
    const json_t *x;
    json_array_foreach(rj_arr(r, "by_budget"), i, x)
    {
        char cost[RF_SHORT];
        rbuf_t subject = {0};
        rf_subject_text(&subject, x);
        rb_printf(out, "| %lld | ", (long long)rj_int(x, "budget_id"));
        md_text(out, subject.s ? subject.s : "", TEXT_CELL_CHARS);
        rb_printf(out, " | %s | %s | %s |\n", rf_count(rj_int(x, "refused"), a, sizeof(a)),
                  rf_count(rj_int(x, "budget_cancelled"), c, sizeof(c)),
                  rf_money(doc, x, "cost", cost, sizeof(cost)));
        out->failed |= subject.failed;
        rb_free(&subject);
    }
}

static char *render_markdown(const json_t *doc, char *err, size_t errlen)
{
    rbuf_t out = {0};
    rb_printf(&out, "# pgtally daily report: %s (", rj_str(doc, "date"));
    md_text(&out, rj_str(doc, "timezone"), 0);
    rb_puts(&out, ")\n\n");
    rbuf_t totals = {0};
    totals_lines(&totals, doc, "**");
    /* One paragraph, lines kept apart by Markdown's hard line break. */
    for (const char *p = totals.s ? totals.s : ""; *p; p++) {
        if (*p == '\n' && p[1])
            rb_puts(&out, "  ");
        rb_putc(&out, *p);
    }
    out.failed |= totals.failed;
    rb_free(&totals);
    md_statements(&out, doc);
    md_users(&out, doc);
    md_shapes(&out, doc);
    md_budgets(&out, doc);
    md_refusals(&out, doc);
    return rb_finish(&out, err, errlen);
}

/* ---- JSON ---------------------------------------------------------------- */

static char *render_json(const json_t *doc, char *err, size_t errlen)
{
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    rbuf_t out = {0};
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rb_puts(&out, s);
    rb_putc(&out, '\n');
    free(s);
    return rb_finish(&out, err, errlen);
}

/* ---- CSV ----------------------------------------------------------------- */

/* Appends one field, quoted as RFC 4180 says when it holds a comma, a
 * quote, a line break or outer blanks (quotes doubled). */
static void csv_field(rbuf_t *out, const char *s, bool first)
{
    size_t n = strlen(s);
    bool quote = strpbrk(s, ",\"\r\n") || (n && (s[0] == ' ' || s[n - 1] == ' '));
    if (!first)
        rb_putc(out, ',');
    if (!quote) {
        rb_add(out, s, n);
        return;
    }
    rb_putc(out, '"');
    for (; *s; s++) {
        if (*s == '"')
            rb_putc(out, '"');
        rb_putc(out, *s);
    }
    rb_putc(out, '"');
}

/* One CSV column: its header and where its value comes from. */
typedef struct csv_col {
    const char *name; /* header */
    const char *path; /* member, "a.b" for a nested one */
    char kind;        /* 's' string, 'i' integer, 'n' number, 'm' money (path + "_micro"),
                         'c' the currency, 'j' JSON text, 'l' a list joined with spaces */
} csv_col_t;

/* Appends the value of column c of item o. */
static void csv_value(rbuf_t *out, const json_t *doc, const json_t *o, const csv_col_t *c,
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
        rbuf_t t = {0};
        size_t i;
        const json_t *x;
        if (c->kind == 'j' && v && !json_is_null(v)) {
            char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            rb_puts(&t, s ? s : "");
            free(s);
        }
        json_array_foreach(c->kind == 'l' ? v : NULL, i, x)
        {
            rb_printf(&t, "%s%s", i ? " " : "", json_string_value(x) ? json_string_value(x) : "");
        }
        csv_field(out, t.s ? t.s : "", first);
        out->failed |= t.failed;
        rb_free(&t);
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
};

#define NSECTIONS (sizeof(csv_sections) / sizeof(csv_sections[0]))

static void csv_row(rbuf_t *out, const json_t *doc, const json_t *o, const csv_col_t *cols)
{
    for (const csv_col_t *c = cols; c->name; c++)
        csv_value(out, doc, o, c, c == cols);
    rb_puts(out, "\r\n");
}

static void csv_section(rbuf_t *out, const json_t *doc, const csv_section_t *s)
{
    for (const csv_col_t *c = s->cols; c->name; c++)
        csv_field(out, c->name, c == s->cols);
    rb_puts(out, "\r\n");
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

static char *render_csv(const json_t *doc, const char *section, char *err, size_t errlen)
{
    rbuf_t out = {0};
    bool found = false;
    for (size_t i = 0; i < NSECTIONS; i++) {
        if (section && strcmp(section, csv_sections[i].name) != 0)
            continue;
        if (!section)
            rb_printf(&out, "# %s\r\n", csv_sections[i].name);
        csv_section(&out, doc, &csv_sections[i]);
        found = true;
    }
    if (!found) {
        snprintf(err, errlen,
                 "unknown section '%s': use statements, users, shapes, totals, budgets or refusals",
                 section);
        rb_free(&out);
        return NULL;
    }
    return rb_finish(&out, err, errlen);
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
