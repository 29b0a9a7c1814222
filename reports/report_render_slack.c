/* The report as a Slack incoming-webhook payload in Block Kit: a header,
 * the totals, and each list packed into section blocks. Slack rejects a
 * message over its limits, so the payload keeps to them whatever the
 * ledger holds: at most 50 blocks (the last saying what was left out),
 * section texts of at most 3000 bytes (Slack counts characters, which
 * are never more) cut on UTF-8 boundaries and never inside an escape,
 * headers of at most 150. Text from the ledger is mrkdwn-escaped (&, <,
 * >) and set in code spans, with its backticks made quotes, so that it
 * can neither format, mention nor link. */
#include <stdlib.h>
#include <string.h>

#include "pgtally/report.h"
#include "report_render.h"

#define MAX_BLOCKS 50
#define MAX_TEXT 3000
#define MAX_HEADER 150
/* Widths of cut text, in columns, the ellipsis included: 200, 100 and 64
 * columns of text. */
#define QUERY_WIDTH 201     /* statement text per item */
#define TOP_QUERY_WIDTH 101 /* a user's top shape */
#define NAME_WIDTH 65       /* user, database, application, tags, subject */
#define SHAPE_USERS 3       /* users named per shape */

/* The payload being built. */
typedef struct slack {
    json_t *blocks; /* the blocks */
    bool truncated; /* a block did not fit */
    bool failed;    /* out of memory */
} slack_t;

/* Appends s escaped for mrkdwn. */
void pgt_slack_escape(pgt_buf_t *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '&')
            pgt_buf_puts(out, "&amp;");
        else if (*s == '<')
            pgt_buf_puts(out, "&lt;");
        else if (*s == '>')
            pgt_buf_puts(out, "&gt;");
        else
            pgt_buf_putc(out, *s);
    }
}

/* Appends a snippet of s as a code span: mrkdwn has no escape for a
 * backtick, so backticks become quotes. */
static void code(pgt_buf_t *out, const char *s, size_t max)
{
    pgt_buf_t t = {0};
    pgt_text_snippet(&t, s, max, "…");
    for (char *p = t.s; p && *p; p++)
        if (*p == '`')
            *p = '\'';
    pgt_buf_putc(out, '`');
    pgt_slack_escape(out, t.s && t.s[0] ? t.s : " ");
    pgt_buf_putc(out, '`');
    out->failed |= t.failed;
    pgt_buf_free(&t);
}

/* Cuts mrkdwn text to at most max bytes: on a UTF-8 boundary, outside an
 * entity such as &amp;, marked with an ellipsis, closing an open code
 * span. */
static void fit(pgt_buf_t *t, size_t max)
{
    if (t->failed || t->len <= max)
        return;
    size_t cut = max - 4; /* room for "…" (3 bytes) and a closing backtick */
    while (cut > 0 && ((unsigned char)t->s[cut] & 0xC0) == 0x80)
        cut--;
    for (size_t k = cut; k > 0 && cut - k < 6; k--) {
        if (t->s[k - 1] == ';')
            break;
        if (t->s[k - 1] == '&') {
            cut = k - 1;
            break;
        }
    }
    size_t ticks = 0;
    for (size_t i = 0; i < cut; i++)
        ticks += t->s[i] == '`';
    pgt_buf_truncate(t, cut);
    pgt_buf_puts(t, "…");
    if (ticks % 2)
        pgt_buf_putc(t, '`');
}

/* Adds a block, keeping the last place for the note on what was left out. */
static void add_block(slack_t *s, json_t *block)
{
    if (!block) {
        s->failed = true;
        return;
    }
    if (json_array_size(s->blocks) >= MAX_BLOCKS - 1) {
        s->truncated = true;
        json_decref(block);
        return;
    }
    if (json_array_append_new(s->blocks, block) != 0)
        s->failed = true;
}

static void section(slack_t *s, pgt_buf_t *text)
{
    fit(text, MAX_TEXT);
    s->failed |= text->failed;
    if (text->len)
        add_block(s, json_pack("{s:s,s:{s:s,s:s}}", "type", "section", "text", "type", "mrkdwn",
                               "text", text->s));
}

/* Packs items into sections of at most MAX_TEXT bytes, a title first. */
typedef struct packer {
    slack_t *s;      /* the payload */
    pgt_buf_t cur;   /* the section being filled */
    const char *sep; /* between items: a blank line for items of several lines */
} packer_t;

static void pack(packer_t *p, pgt_buf_t *item)
{
    fit(item, MAX_TEXT);
    size_t sep = p->cur.len ? strlen(p->sep) : 0;
    if (p->cur.len && p->cur.len + sep + item->len > MAX_TEXT) {
        section(p->s, &p->cur);
        pgt_buf_free(&p->cur);
        sep = 0;
    }
    if (sep)
        pgt_buf_puts(&p->cur, p->sep);
    pgt_buf_add(&p->cur, item->s ? item->s : "", item->len);
    p->s->failed |= item->failed;
    pgt_buf_free(item);
}

static void pack_done(packer_t *p)
{
    section(p->s, &p->cur);
    pgt_buf_free(&p->cur);
}

static void add_divider(slack_t *s)
{
    add_block(s, json_pack("{s:s}", "type", "divider"));
}

/* Opens a list with a divider and a bold title; items of several lines
 * are kept apart by a blank line. */
static void list_open(packer_t *p, slack_t *s, const char *title, bool multiline)
{
    add_divider(s);
    *p = (packer_t){.s = s, .sep = "\n"};
    pgt_buf_t t = {0};
    pgt_buf_printf(&t, "*%s*", title);
    pack(p, &t);
    p->sep = multiline ? "\n\n" : "\n";
}

static void totals(slack_t *s, const json_t *doc)
{
    const json_t *t = json_object_get(doc, "totals");
    const json_t *prev = json_object_get(t, "previous_day");
    const json_t *cp = json_object_get(t, "change_vs_previous_day");
    const json_t *cm = json_object_get(t, "change_vs_mean_7d");
    char cost[RF_SHORT], n[RF_SHORT], comp[RF_SHORT], users[RF_SHORT], a[RF_SHORT], b[RF_SHORT];
    pgt_buf_t text = {0};
    pgt_buf_printf(&text, "*Total: %s* in %s statements, %s compute, %s users\n",
                   rf_money(doc, t, "cost", cost, sizeof(cost)),
                   rf_count(rj_int(t, "statements"), n, sizeof(n)),
                   pgt_fmt_seconds(rj_num(t, "compute_s"), comp, sizeof(comp)),
                   rf_count(rj_int(t, "users"), users, sizeof(users)));
    pgt_buf_printf(&text, "Cost %s vs %s (%s), %s vs the 7-day mean",
                   rf_change(cp, "cost_pct", "n/a", a, sizeof(a)), rj_str(prev, "date"),
                   rf_money(doc, prev, "cost", cost, sizeof(cost)),
                   rf_change(cm, "cost_pct", "n/a", b, sizeof(b)));
    section(s, &text);
    pgt_buf_free(&text);
}

static void statements(slack_t *s, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "statements");
    char title[64];
    packer_t p;
    if (!json_array_size(a))
        return;
    snprintf(title, sizeof(title), "Top %zu statements by cost", json_array_size(a));
    list_open(&p, s, title, true);
    size_t i;
    const json_t *x;
    json_array_foreach(a, i, x)
    {
        char cost[RF_SHORT], clock[16], dur[RF_SHORT], rows[RF_SHORT];
        pgt_buf_t it = {0}, tags = {0};
        pgt_buf_printf(&it, "*%lld.* %s · ", (long long)rj_int(x, "rank"),
                       rf_money(doc, x, "cost", cost, sizeof(cost)));
        code(&it, rj_str(x, "user"), NAME_WIDTH);
        pgt_buf_printf(&it, " · %s · %s · %s rows · ",
                       rf_clock(rj_str(x, "started_at"), clock, sizeof(clock)),
                       pgt_fmt_seconds(rj_num(x, "duration_s"), dur, sizeof(dur)),
                       rf_count(rj_int(x, "rows"), rows, sizeof(rows)));
        code(&it, rj_str(x, "database"), NAME_WIDTH);
        if (rj_str(x, "application")[0]) {
            pgt_buf_puts(&it, " · ");
            code(&it, rj_str(x, "application"), NAME_WIDTH);
        }
        rf_tags(&tags, json_object_get(x, "tags"));
        if (tags.len) {
            pgt_buf_puts(&it, " · ");
            code(&it, tags.s, NAME_WIDTH);
        }
        it.failed |= tags.failed;
        pgt_buf_free(&tags);
        pgt_buf_putc(&it, '\n');
        code(&it, rj_str(x, "normalized"), QUERY_WIDTH);
        pack(&p, &it);
    }
    pack_done(&p);
}

static void users(slack_t *s, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "users");
    char title[64];
    packer_t p;
    if (!json_array_size(a))
        return;
    snprintf(title, sizeof(title), "Top %zu users by cost", json_array_size(a));
    list_open(&p, s, title, true);
    size_t i;
    const json_t *u;
    json_array_foreach(a, i, u)
    {
        char cost[RF_SHORT], n[RF_SHORT], ch[RF_SHORT], top_cost[RF_SHORT];
        const json_t *top = json_object_get(u, "top_shape");
        pgt_buf_t it = {0};
        pgt_buf_printf(&it, "*%lld.* ", (long long)rj_int(u, "rank"));
        code(&it, rj_str(u, "user"), NAME_WIDTH);
        pgt_buf_printf(&it, " %s (%.1f%%) · %s statements · %s vs day before\n   top shape (%s): ",
                       rf_money(doc, u, "cost", cost, sizeof(cost)), rj_num(u, "share_pct"),
                       rf_count(rj_int(u, "statements"), n, sizeof(n)),
                       rf_change(u, "change_pct", "new", ch, sizeof(ch)),
                       rf_money(doc, top, "cost", top_cost, sizeof(top_cost)));
        code(&it, rj_str(top, "normalized"), TOP_QUERY_WIDTH);
        pack(&p, &it);
    }
    pack_done(&p);
}

static void shapes(slack_t *s, const json_t *doc)
{
    const json_t *a = rj_arr(doc, "shapes");
    char title[64];
    packer_t p;
    if (!json_array_size(a))
        return;
    snprintf(title, sizeof(title), "Top %zu query shapes by total cost", json_array_size(a));
    list_open(&p, s, title, true);
    size_t i, k;
    const json_t *x, *name;
    json_array_foreach(a, i, x)
    {
        char cost[RF_SHORT], n[RF_SHORT], mean[RF_SHORT], max[RF_SHORT], users[RF_SHORT];
        pgt_buf_t it = {0};
        pgt_buf_printf(&it, "*%lld.* %s · %s runs · mean %s · max %s · %s users ",
                       (long long)rj_int(x, "rank"), rf_money(doc, x, "cost", cost, sizeof(cost)),
                       rf_count(rj_int(x, "statements"), n, sizeof(n)),
                       rf_money(doc, x, "mean_cost", mean, sizeof(mean)),
                       rf_money(doc, x, "max_cost", max, sizeof(max)),
                       rf_count(rj_int(x, "users"), users, sizeof(users)));
        json_array_foreach(rj_arr(x, "user_names"), k, name)
        {
            if (k == SHAPE_USERS) {
                pgt_buf_puts(&it, " …");
                break;
            }
            pgt_buf_puts(&it, k ? " " : "");
            code(&it, json_string_value(name) ? json_string_value(name) : "", NAME_WIDTH);
        }
        pgt_buf_putc(&it, '\n');
        code(&it, rj_str(x, "normalized"), QUERY_WIDTH);
        pack(&p, &it);
    }
    pack_done(&p);
}

/* The data that cost the most: schemas, then tables, one line each. */
static void data(slack_t *s, const json_t *doc)
{
    const json_t *d = json_object_get(doc, "data");
    packer_t p;
    if (!json_array_size(rj_arr(d, "tables")))
        return;
    list_open(&p, s, "Data that cost the most", false);
    pgt_buf_t intro = {0};
    rf_data_intro(&intro, doc, "*");
    pack(&p, &intro);
    for (int tables = 0; tables < 2; tables++) {
        pgt_buf_t head = {0};
        pgt_buf_puts(&head, tables ? "_Tables_" : "_Schemas_");
        pack(&p, &head);
        size_t i;
        const json_t *x;
        json_array_foreach(rj_arr(d, tables ? "tables" : "schemas"), i, x)
        {
            char cost[RF_SHORT], n[RF_SHORT], comp[RF_SHORT];
            pgt_buf_t it = {0}, name = {0};
            rf_data_name(&name, x);
            pgt_buf_printf(&it, "%lld. ", (long long)rj_int(x, "rank"));
            code(&it, name.s ? name.s : "", NAME_WIDTH);
            pgt_buf_printf(&it, " %s (%.1f%%)", rf_money(doc, x, "cost", cost, sizeof(cost)),
                           rj_num(x, "share_pct"));
            if (tables)
                pgt_buf_printf(&it, " · %s queries", rf_count(rj_int(x, "queries"), n, sizeof(n)));
            pgt_buf_printf(&it, " · %s compute",
                           pgt_fmt_seconds(rj_num(x, "compute_s"), comp, sizeof(comp)));
            it.failed |= name.failed;
            pgt_buf_free(&name);
            pack(&p, &it);
        }
    }
    pack_done(&p);
}

/* Appends the subject of a budget as code: "user alice". */
static void subject(pgt_buf_t *out, const json_t *b)
{
    pgt_buf_t t = {0};
    rf_subject_text(&t, b);
    code(out, t.s ? t.s : "", NAME_WIDTH);
    out->failed |= t.failed;
    pgt_buf_free(&t);
}

static void budgets(slack_t *s, const json_t *doc)
{
    const json_t *a = rj_arr(json_object_get(doc, "budgets"), "items");
    packer_t p;
    if (!json_array_size(a))
        return;
    list_open(&p, s, "Budgets at or above a warn threshold", false);
    size_t i;
    const json_t *b;
    json_array_foreach(a, i, b)
    {
        char spent[RF_SHORT], limit[RF_SHORT];
        pgt_buf_t it = {0};
        pgt_buf_printf(&it, "• #%lld ", (long long)rj_int(b, "id"));
        subject(&it, b);
        pgt_buf_printf(&it, " (%s): %s of %s, *%.1f%%* (%s)", rj_str(b, "period"),
                       rf_money(doc, b, "spent", spent, sizeof(spent)),
                       rf_money(doc, b, "limit", limit, sizeof(limit)), rj_num(b, "percent"),
                       rj_str(b, "action"));
        pack(&p, &it);
    }
    pack_done(&p);
}

static void refusals(slack_t *s, const json_t *doc)
{
    const json_t *r = json_object_get(doc, "refusals");
    char title[128], n[RF_SHORT], a[RF_SHORT], c[RF_SHORT];
    packer_t p;
    if (!rj_int(r, "statements"))
        return;
    snprintf(title, sizeof(title), "Stopped by budgets: %s statements (%s refused, %s cancelled)",
             rf_count(rj_int(r, "statements"), n, sizeof(n)),
             rf_count(rj_int(r, "refused"), a, sizeof(a)),
             rf_count(rj_int(r, "budget_cancelled"), c, sizeof(c)));
    list_open(&p, s, title, false);
    size_t i;
    const json_t *x;
    json_array_foreach(rj_arr(r, "by_budget"), i, x)
    {
        pgt_buf_t it = {0};
        pgt_buf_printf(&it, "• #%lld ", (long long)rj_int(x, "budget_id"));
        subject(&it, x);
        pgt_buf_printf(&it, ": %s refused, %s cancelled",
                       rf_count(rj_int(x, "refused"), a, sizeof(a)),
                       rf_count(rj_int(x, "budget_cancelled"), c, sizeof(c)));
        pack(&p, &it);
    }
    pack_done(&p);
}

/* One item of a list of the report's sections: appended to it. */
typedef void (*item_fn)(pgt_buf_t *it, const json_t *doc, const json_t *x);

/* The list of section key, titled by one of the shared title writers, an
 * item per element of its items, and the line note writes after them
 * (NULL: none); nothing when there are no items. */
static void items_list(slack_t *s, const json_t *doc, const char *key,
                       void (*title)(pgt_buf_t *, const json_t *), item_fn item,
                       void (*note)(pgt_buf_t *, const json_t *, const char *))
{
    const json_t *x, *a = rj_arr(json_object_get(doc, key), "items");
    if (!json_array_size(a))
        return;
    packer_t p;
    pgt_buf_t t = {0}, e = {0};
    title(&t, doc);
    pgt_slack_escape(&e, t.s ? t.s : "");
    list_open(&p, s, e.s ? e.s : "", true);
    s->failed |= t.failed || e.failed;
    pgt_buf_free(&t);
    pgt_buf_free(&e);
    size_t i;
    json_array_foreach(a, i, x)
    {
        pgt_buf_t it = {0};
        item(&it, doc, x);
        pack(&p, &it);
    }
    if (note) {
        pgt_buf_t it = {0};
        note(&it, doc, "*");
        pack(&p, &it);
    }
    pack_done(&p);
}

/* A regression: the ratio, both releases with their means and runs. */
static void regression_item(pgt_buf_t *it, const json_t *doc, const json_t *x)
{
    char ratio[RF_SHORT], mean[RF_SHORT], n[RF_SHORT], pmean[RF_SHORT], pn[RF_SHORT];
    pgt_buf_printf(it, "*%lld.* *%s* · ", (long long)rj_int(x, "rank"),
                   rf_ratio(x, "ratio", ratio, sizeof(ratio)));
    code(it, rj_str(x, "release"), NAME_WIDTH);
    pgt_buf_printf(it, " mean %s (%s runs) vs ", rf_money(doc, x, "mean_cost", mean, sizeof(mean)),
                   rf_count(rj_int(x, "statements"), n, sizeof(n)));
    code(it, rj_str(x, "previous_release"), NAME_WIDTH);
    pgt_buf_printf(it, " mean %s (%s runs)\n",
                   rf_money(doc, x, "previous_mean_cost", pmean, sizeof(pmean)),
                   rf_count(rj_int(x, "previous_statements"), pn, sizeof(pn)));
    code(it, rj_str(x, "normalized"), QUERY_WIDTH);
}

/* Work done twice: runs, cost, what a cache would save, who ran it. */
static void repeat_item(pgt_buf_t *it, const json_t *doc, const json_t *x)
{
    char runs[RF_SHORT], cost[RF_SHORT], saved[RF_SHORT];
    pgt_buf_printf(it, "*%lld.* %s runs · %s · saved *%s* · ", (long long)rj_int(x, "rank"),
                   rf_count(rj_int(x, "runs"), runs, sizeof(runs)),
                   rf_money(doc, x, "cost", cost, sizeof(cost)),
                   rf_money(doc, x, "saved", saved, sizeof(saved)));
    code(it, rj_str(x, "who"), NAME_WIDTH);
    pgt_buf_putc(it, '\n');
    code(it, rj_str(x, "normalized"), QUERY_WIDTH);
}

static void approvals(slack_t *s, const json_t *doc)
{
    const json_t *r = json_object_get(doc, "approvals");
    char title[128], n[RF_SHORT], runs[RF_SHORT], cost[RF_SHORT], cap[RF_SHORT], until[32];
    packer_t p;
    if (!rj_int(r, "approvals"))
        return;
    snprintf(title, sizeof(title), "Approvals in force: %s, %s run%s under them, %s",
             rf_count(rj_int(r, "approvals"), n, sizeof(n)),
             rf_count(rj_int(r, "runs"), runs, sizeof(runs)), rj_int(r, "runs") == 1 ? "" : "s",
             rf_money(doc, r, "cost", cost, sizeof(cost)));
    list_open(&p, s, title, false);
    size_t i;
    const json_t *x;
    json_array_foreach(rj_arr(r, "items"), i, x)
    {
        pgt_buf_t it = {0};
        pgt_buf_printf(&it, "• #%lld %s for ", (long long)rj_int(x, "id"), rj_str(x, "ticket"));
        code(&it, rj_str(x, "user"), NAME_WIDTH);
        pgt_buf_puts(&it, " by ");
        code(&it, rj_str(x, "approved_by"), NAME_WIDTH);
        pgt_buf_printf(&it, " (%s, cap %s, until %s): %s runs, %s", rj_str(x, "scope"),
                       rf_approval_max(doc, x, cap, sizeof(cap)),
                       rf_minute(rj_str(x, "until"), until, sizeof(until)),
                       rf_count(rj_int(x, "runs"), runs, sizeof(runs)),
                       rf_money(doc, x, "cost", cost, sizeof(cost)));
        pack(&p, &it);
    }
    pack_done(&p);
}

/* The header block and the line under it. */
static void heading(slack_t *s, const json_t *doc)
{
    pgt_buf_t h = {0}, ctx = {0};
    pgt_buf_printf(&h, "pgtally daily report: %s", rj_str(doc, "date"));
    if (h.len > MAX_HEADER) /* plain_text: cut on a UTF-8 boundary */
        for (h.len = MAX_HEADER; h.len && ((unsigned char)h.s[h.len] & 0xC0) == 0x80; h.len--)
            ;
    if (h.s)
        h.s[h.len] = '\0';
    add_block(s, json_pack("{s:s,s:{s:s,s:s,s:b}}", "type", "header", "text", "type", "plain_text",
                           "text", h.s ? h.s : "", "emoji", 0));
    pgt_buf_puts(&ctx, "Time zone ");
    code(&ctx, rj_str(doc, "timezone"), NAME_WIDTH);
    pgt_buf_puts(&ctx, ", amounts in ");
    code(&ctx, rj_str(doc, "currency"), NAME_WIDTH);
    pgt_buf_puts(&ctx, ", statements normalized ($1 for constants)");
    fit(&ctx, MAX_TEXT);
    s->failed |= h.failed || ctx.failed;
    add_block(s, json_pack("{s:s,s:[{s:s,s:s}]}", "type", "context", "elements", "type", "mrkdwn",
                           "text", ctx.s ? ctx.s : ""));
    pgt_buf_free(&h);
    pgt_buf_free(&ctx);
}

char *pgt_report_render_slack(const json_t *doc, char *err, size_t errlen)
{
    slack_t s = {.blocks = json_array()};
    heading(&s, doc);
    totals(&s, doc);
    statements(&s, doc);
    users(&s, doc);
    shapes(&s, doc);
    data(&s, doc);
    budgets(&s, doc);
    refusals(&s, doc);
    items_list(&s, doc, "regressions", rf_regressions_title, regression_item, NULL);
    items_list(&s, doc, "repeats", rf_repeats_title, repeat_item, rf_repeats_note);
    approvals(&s, doc);
    if (s.truncated &&
        json_array_append_new(s.blocks, json_pack("{s:s,s:[{s:s,s:s}]}", "type", "context",
                                                  "elements", "type", "mrkdwn", "text",
                                                  "Slack holds 50 blocks: the rest of this "
                                                  "report is in pgtallyctl report.")) != 0)
        s.failed = true;
    /* The fallback text of notifications: the e-mail subject, escaped. */
    char *subject = pgt_report_subject(doc);
    pgt_buf_t fallback = {0};
    pgt_slack_escape(&fallback, subject ? subject : "pgtally daily report");
    fit(&fallback, MAX_TEXT);
    free(subject);
    json_t *payload = s.failed || fallback.failed ? NULL : json_object();
    if (payload && (json_object_set_new(payload, "text", json_string(fallback.s)) != 0 ||
                    json_object_set(payload, "blocks", s.blocks) != 0)) {
        json_decref(payload);
        payload = NULL;
    }
    json_decref(s.blocks);
    pgt_buf_free(&fallback);
    char *out = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
    json_decref(payload);
    if (!out)
        snprintf(err, errlen, "out of memory");
    return out;
}
