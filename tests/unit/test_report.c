/* Unit tests of the daily report: the builder on ledgers written through
 * the ledger's writer (which keeps the rollups the report reads), by two
 * pgtally instances, and on a ledger of the first schema migrated to the
 * current one; and the renderers on hostile text: HTML, Markdown, CSV and
 * Slack escaping, Slack's limits with cuts on UTF-8 boundaries, and the
 * e-mail subject. The builder's test runs again on PostgreSQL when
 * PGTALLY_TEST_PG holds a conninfo (in a schema of its own, dropped at the
 * end). */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgtally/db.h"
#include "pgtally/ledger.h"
#include "pgtally/period.h"
#include "pgtally/report.h"
#include "task.h"

#define DAY_US 86400000000LL
#define D0 1778630400000000LL /* 2026-05-13 00:00:00 UTC */

static char tmpdir[64];
static const char *pg_conninfo; /* PGTALLY_TEST_PG while the PostgreSQL run is on, or NULL */
static char pg_schema[64];      /* the schema of the PostgreSQL run */

/* Where a new ledger goes: a file in tmpdir, or the PostgreSQL run's
 * schema (a static buffer, one at a time). */
static pgt_ledger_where_t new_ledger(void)
{
    static char path[128];
    static int n;
    snprintf(path, sizeof(path), "%s/ledger-%d.db", tmpdir, ++n);
    if (pg_conninfo)
        return (pgt_ledger_where_t){pg_conninfo, pg_schema};
    return (pgt_ledger_where_t){path, NULL};
}

/* A ledger being written: the writer of one pgtally instance. */
typedef struct writer {
    pgt_ledger_t *l;          /* the ledger */
    pgt_ledger_where_t where; /* where it is */
} writer_t;

static writer_t writer_open(pgt_ledger_where_t where, int64_t instance)
{
    char err[256] = "", spool[128];
    snprintf(spool, sizeof(spool), "%s/spool-%lld", tmpdir, (long long)instance);
    pgt_ledger_opts_t o = {.where = where, .instance = instance};
    if (pg_conninfo)
        o.spool_path = spool;
    writer_t w = {pgt_ledger_open(&o, err, sizeof(err)), where};
    if (!w.l)
        fprintf(stderr, "pgt_ledger_open: %s\n", err);
    CHECK(w.l != NULL);
    return w;
}

/* The relations the next inserts read (queries.relations), or NULL. */
static const char *relations;
/* The tags of the next inserts (queries.tags), and their constants hash. */
static const char *tags = "{\"team\":\"a|b\"}";
static uint64_t constants;

static void insert(writer_t *w, int64_t started, const char *user, int64_t fp, const char *text,
                   int64_t cost, const char *status, int64_t budget)
{
    pgt_record_t *r = pgt_record_new();
    CHECK(r != NULL);
    if (!r || !w->l)
        return;
    r->started_us = started;
    r->finished_us = started + 2000000;
    r->user = strdup(user);
    r->database = strdup("db");
    r->application = strdup("app");
    r->client_addr = strdup("127.0.0.1:5000");
    r->tags_json = tags ? strdup(tags) : NULL;
    r->constants = constants;
    r->fingerprint = (uint64_t)fp;
    r->normalized = strdup(text);
    r->kind = strdup("select");
    r->protocol = strdup("simple");
    r->compute_s = 0.5;
    r->rows = 7;
    r->cost_micro = cost;
    CHECK_INT(pgt_query_status_parse(status, &r->status), 0);
    r->budget_id = budget;
    r->relations = relations ? strdup(relations) : NULL;
    pgt_ledger_submit(w->l, r);
}

/* Writes what was submitted and closes the writer. */
static void writer_close(writer_t *w)
{
    pgt_ledger_close(w->l);
    w->l = NULL;
}

/* A read-only connection to the ledger at where, as pgtallyctl opens it. */
static pgt_db_t *reader(pgt_ledger_where_t where)
{
    char err[256] = "";
    int version = 0;
    pgt_db_t *db = pgt_ledger_db_open(&where, false, &version, err, sizeof(err));
    if (!db)
        fprintf(stderr, "pgt_ledger_db_open: %s\n", err);
    CHECK(db != NULL);
    CHECK_INT(version, pgt_ledger_schema_version());
    return db;
}

static json_t *build(pgt_db_t *db, const char *date, int top)
{
    char err[256] = "";
    pgt_report_opts_t o = {.top = top, .currency = "EUR", .timezone = "UTC"};
    json_t *r = db ? pgt_report_build(db, date, &o, err, sizeof(err)) : NULL;
    if (!r)
        fprintf(stderr, "build: %s\n", err);
    return r;
}

static const char *HOSTILE = "SELECT '<script>alert(1)</script>' | `x` & *y* _z_ <@U123> é€😀";

/* Writes the ledger of test_build, through two instances; returns where
 * it is. */
static pgt_ledger_where_t build_ledger(void)
{
    writer_t w = writer_open(new_ledger(), 1);
    /* The day: alice spends 30 on shape 1 and 5 on shape 2, bob 20 on 2.
     * Shape 1 reads sales and stores 3:1, shape 2 events and sales. */
    relations = "[[\"analytics\",\"sales\",0.75],[\"analytics\",\"stores\",0.25]]";
    insert(&w, D0 + 1000, "alice", 1, HOSTILE, 10000000, "ok", 0);
    insert(&w, D0 + 2000, "alice", 1, HOSTILE, 20000000, "ok", 0);
    relations = "[[\"\",\"events\",0.5],[\"analytics\",\"sales\",0.5]]";
    insert(&w, D0 + 4000, "bob", 2, "SELECT 2", 20000000, "ok", 0);
    relations = NULL;
    insert(&w, D0 + 5000, "bob", 2, "SELECT 2", 0, "refused", 7);
    relations = "[[\"raw\",\"x\",1]]";
    insert(&w, D0 + DAY_US, "bob", 2, "SELECT 2", 99000000, "ok", 0); /* the next day */
    relations = NULL;
    /* The day before: alice 10; two days before: 30. */
    insert(&w, D0 - 1000, "alice", 1, HOSTILE, 10000000, "ok", 0);
    insert(&w, D0 - DAY_US - 1000, "carol", 3, "SELECT 3", 30000000, "ok", 0);
    writer_close(&w);
    /* A second pgtally on the same ledger: its rollups add up with the
     * first one's. */
    w = writer_open(w.where, 2);
    insert(&w, D0 + 3000, "alice", 2, "SELECT 2", 5000000, "ok", 0);
    writer_close(&w);
    return w.where;
}

/* The totals of the day of build_ledger. */
static void check_totals(const json_t *r)
{
    json_t *t = json_object_get(r, "totals");
    CHECK_INT(json_integer_value(json_object_get(t, "statements")), 5);
    CHECK_INT(json_integer_value(json_object_get(t, "cost_micro")), 55000000);
    CHECK_STR(json_string_value(json_object_get(t, "cost")), "55.000000");
    json_t *prev = json_object_get(t, "previous_day");
    CHECK_INT(json_integer_value(json_object_get(prev, "cost_micro")), 10000000);
    CHECK_STR(json_string_value(json_object_get(prev, "date")), "2026-05-12");
    /* The ledger starts two days before: the mean is over 2 days. */
    json_t *mean = json_object_get(t, "mean_7d");
    CHECK_INT(json_integer_value(json_object_get(mean, "days")), 2);
    CHECK_INT(json_integer_value(json_object_get(mean, "cost_micro")), 20000000);
    CHECK(json_real_value(
              json_object_get(json_object_get(t, "change_vs_previous_day"), "cost_pct")) == 450.0);
}

/* The lists of the day of build_ledger. */
static void check_lists(const json_t *r)
{
    json_t *st = json_object_get(r, "statements");
    CHECK_INT(json_array_size(st), 5);
    CHECK_INT(json_integer_value(json_object_get(json_array_get(st, 0), "cost_micro")), 20000000);
    /* Ties on cost: the earlier start first. */
    CHECK_STR(json_string_value(json_object_get(json_array_get(st, 0), "user")), "alice");
    CHECK_STR(json_string_value(json_object_get(json_array_get(st, 1), "user")), "bob");
    CHECK_STR(json_string_value(json_object_get(json_array_get(st, 0), "normalized")), HOSTILE);
    CHECK(json_integer_value(json_object_get(json_array_get(st, 0), "id")) > 0);
    json_t *u = json_object_get(r, "users");
    CHECK_INT(json_array_size(u), 2);
    json_t *alice = json_array_get(u, 0);
    CHECK_STR(json_string_value(json_object_get(alice, "user")), "alice");
    CHECK_INT(json_integer_value(json_object_get(alice, "cost_micro")), 35000000);
    CHECK_INT(json_integer_value(json_object_get(alice, "previous_day_cost_micro")), 10000000);
    CHECK_STR(
        json_string_value(json_object_get(json_object_get(alice, "top_shape"), "fingerprint")),
        "0000000000000001");
    CHECK(json_is_null(json_object_get(json_array_get(u, 1), "change_pct")));
    json_t *s = json_object_get(r, "shapes");
    CHECK_INT(json_array_size(s), 2);
    json_t *s0 = json_array_get(s, 0);
    CHECK_INT(json_integer_value(json_object_get(s0, "cost_micro")), 30000000);
    CHECK_INT(json_integer_value(json_object_get(s0, "users")), 1);
    CHECK_STR(json_string_value(json_object_get(s0, "normalized")), HOSTILE); /* from shapes */
    json_t *s1 = json_array_get(s, 1);
    CHECK_INT(json_integer_value(json_object_get(s1, "statements")), 3);
    CHECK_INT(json_integer_value(json_object_get(s1, "mean_cost_micro")), 8333333);
    CHECK_INT(json_array_size(json_object_get(s1, "user_names")), 2);
    /* The data: 22.5 + 10 on sales, 7.5 on stores, 10 on unqualified
     * events; of the day's 55, 50 (90.9%) on known tables. */
    json_t *data = json_object_get(r, "data");
    CHECK_INT(json_integer_value(json_object_get(data, "cost_micro")), 50000000);
    CHECK(json_real_value(json_object_get(data, "share_pct")) == 90.9);
    json_t *sch = json_object_get(data, "schemas"), *tab = json_object_get(data, "tables");
    CHECK_INT(json_array_size(sch), 2);
    CHECK_STR(json_string_value(json_object_get(json_array_get(sch, 0), "schema")), "analytics");
    CHECK_INT(json_integer_value(json_object_get(json_array_get(sch, 0), "cost_micro")), 40000000);
    CHECK(json_object_get(json_array_get(sch, 0), "queries") == NULL);
    CHECK_STR(json_string_value(json_object_get(json_array_get(sch, 1), "schema")), "");
    CHECK_INT(json_array_size(tab), 3);
    json_t *sales = json_array_get(tab, 0);
    CHECK_STR(json_string_value(json_object_get(sales, "table")), "sales");
    CHECK_INT(json_integer_value(json_object_get(sales, "cost_micro")), 32500000);
    CHECK_INT(json_integer_value(json_object_get(sales, "queries")), 3);
    CHECK(json_real_value(json_object_get(sales, "compute_s")) == 1.0);
    CHECK(json_real_value(json_object_get(sales, "share_pct")) == 59.1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(tab, 1), "table")), "events");
    CHECK_STR(json_string_value(json_object_get(json_array_get(tab, 2), "table")), "stores");
    CHECK_INT(json_integer_value(json_object_get(json_array_get(tab, 2), "cost_micro")), 7500000);
    json_t *ref = json_object_get(r, "refusals");
    CHECK_INT(json_integer_value(json_object_get(ref, "refused")), 1);
    CHECK_INT(json_integer_value(json_object_get(
                  json_array_get(json_object_get(ref, "by_budget"), 0), "budget_id")),
              7);
}

static void test_build(void)
{
    pgt_db_t *db = reader(build_ledger());
    json_t *r = build(db, "2026-05-13", 10);
    CHECK(r != NULL);
    check_totals(r);
    check_lists(r);
    json_decref(r);
    /* top 1 keeps one of each list. */
    r = build(db, "2026-05-13", 1);
    CHECK_INT(json_array_size(json_object_get(r, "statements")), 1);
    CHECK_INT(json_array_size(json_object_get(r, "users")), 1);
    CHECK_INT(json_array_size(json_object_get(r, "shapes")), 1);
    CHECK_INT(json_array_size(json_object_get(json_object_get(r, "data"), "tables")), 1);
    CHECK_INT(json_array_size(json_object_get(json_object_get(r, "data"), "schemas")), 1);
    json_decref(r);
    /* An empty day renders in every format. */
    r = build(db, "2026-01-01", 10);
    CHECK(r != NULL);
    for (int f = PGT_REPORT_FORMAT_TEXT; r && f <= PGT_REPORT_FORMAT_SLACK; f++) {
        char err[128];
        char *out = pgt_report_render(r, (pgt_report_format_t)f, NULL, err, sizeof(err));
        CHECK(out != NULL);
        free(out);
    }
    json_decref(r);
    char err[128];
    pgt_report_opts_t o = {.top = 10};
    CHECK(pgt_report_build(db, "2026-02-30", &o, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "2026-02-30") != NULL);
    CHECK(pgt_report_build(db, "yesterday", &o, err, sizeof(err)) == NULL);
    pgt_db_close(db);
}

/* A report of the hostile statement, rendered as f. */
static char *render_hostile(pgt_report_format_t f, const char *section)
{
    writer_t w = writer_open(new_ledger(), 1);
    insert(&w, D0 + 1000, "eve|<b>", 1, HOSTILE, 1234567, "ok", 0);
    writer_close(&w);
    pgt_db_t *db = reader(w.where);
    json_t *r = build(db, "2026-05-13", 10);
    char err[128];
    char *out = r ? pgt_report_render(r, f, section, err, sizeof(err)) : NULL;
    json_decref(r);
    pgt_db_close(db);
    return out;
}

static void test_escaping(void)
{
    char *html = render_hostile(PGT_REPORT_FORMAT_HTML, NULL);
    CHECK(html && !strstr(html, "<script") && !strstr(html, "|<b>"));
    CHECK(html && strstr(html, "&lt;script&gt;alert(1)&lt;/script&gt;"));
    CHECK(html && strstr(html, "eve|&lt;b&gt;"));
    CHECK(html && !strstr(html, "<img") && !strstr(html, "<link") && !strstr(html, "<style"));
    free(html);
    char *md = render_hostile(PGT_REPORT_FORMAT_MARKDOWN, NULL);
    CHECK(md && strstr(md, "eve\\|&lt;b>"));
    CHECK(md && strstr(md, "``SELECT '<script>alert(1)</script>' \\| `x` & *y* _z_"));
    free(md);
    char *csv = render_hostile(PGT_REPORT_FORMAT_CSV, "statements");
    CHECK(csv && strstr(csv, "\"{\"\"team\"\":\"\"a|b\"\"}\""));
    CHECK(csv && strstr(csv, ",1.234567,EUR,eve|<b>,"));
    CHECK(csv && !strstr(csv, "# statements"));
    free(csv);
    char *all = render_hostile(PGT_REPORT_FORMAT_CSV, NULL);
    CHECK(all && strncmp(all, "# statements\r\n", 14) == 0 && strstr(all, "\r\n# refusals\r\n"));
    free(all);
    char *slack = render_hostile(PGT_REPORT_FORMAT_SLACK, NULL);
    json_t *p = slack ? json_loads(slack, 0, NULL) : NULL;
    CHECK(p != NULL);
    CHECK(slack && !strstr(slack, "<script") && !strstr(slack, "<@U123>"));
    CHECK(slack && strstr(slack, "&lt;@U123&gt;"));
    CHECK(slack && strstr(slack, "`eve|&lt;b&gt;`"));
    json_decref(p);
    free(slack);
    char *text = render_hostile(PGT_REPORT_FORMAT_TEXT, NULL);
    CHECK(text && strstr(text, "1.23 EUR") && strstr(text, "eve|<b>"));
    free(text);
}

/* Every text of a Slack payload: at most 3000 bytes, entities whole. */
static void check_texts(const json_t *v, int *count)
{
    const char *key;
    json_t *x;
    size_t i;
    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, key, x)
        {
            if (strcmp(key, "text") == 0 && json_is_string(x)) {
                const char *s = json_string_value(x);
                CHECK(strlen(s) <= 3000);
                for (const char *a = strchr(s, '&'); a; a = strchr(a + 1, '&'))
                    CHECK(strncmp(a, "&amp;", 5) == 0 || strncmp(a, "&lt;", 4) == 0 ||
                          strncmp(a, "&gt;", 4) == 0);
                (*count)++;
            }
            check_texts(x, count);
        }
    } else if (json_is_array(v)) {
        json_array_foreach((json_t *)v, i, x) check_texts(x, count);
    }
}

static void test_slack_limits(void)
{
    writer_t w = writer_open(new_ledger(), 1);
    /* 60 users with statements of 20 kB of entities and 4-byte characters. */
    char *huge = malloc(20001);
    for (int i = 0; i < 20000; i += 4)
        memcpy(huge + i, i % 8 ? "&<>`" : "😀", 4);
    huge[20000] = '\0';
    for (int u = 0; u < 60; u++) {
        char user[64];
        snprintf(user, sizeof(user), "user_%02d_&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&", u);
        insert(&w, D0 + u, user, u + 1, huge, 1000000 + u, "ok", 0);
        insert(&w, D0 + 100 + u, user, u + 1, huge, 0, "refused", u + 1);
    }
    writer_close(&w);
    pgt_db_t *db = reader(w.where);
    json_t *r = build(db, "2026-05-13", 50);
    char err[128];
    char *slack = r ? pgt_report_render(r, PGT_REPORT_FORMAT_SLACK, NULL, err, sizeof(err)) : NULL;
    json_t *p = slack ? json_loads(slack, 0, NULL) : NULL;
    CHECK(p != NULL);
    json_t *blocks = json_object_get(p, "blocks");
    CHECK(json_array_size(blocks) <= 50);
    CHECK(json_array_size(blocks) >= 10);
    int texts = 0;
    check_texts(p, &texts);
    CHECK(texts > 10);
    json_decref(p);
    free(slack);
    json_decref(r);
    free(huge);
    pgt_db_close(db);
}

static void test_names_and_subject(void)
{
    pgt_report_format_t f;
    CHECK(pgt_report_format_parse("slack", &f) == 0 && f == PGT_REPORT_FORMAT_SLACK);
    CHECK_STR(pgt_report_format_name(PGT_REPORT_FORMAT_MARKDOWN), "markdown");
    CHECK(pgt_report_format_parse("pdf", &f) != 0);
    json_t *r =
        json_pack("{s:s,s:s,s:{s:I,s:I}}", "date", "2026-11-26", "currency", "USD", "totals",
                  "cost_micro", (json_int_t)123450000, "statements", (json_int_t)10234);
    char *subject = pgt_report_subject(r);
    CHECK_STR(subject, "pgtally: 2026-11-26: 123.45 USD in 10234 statements");
    free(subject);
    json_decref(r);
}

/* A ledger of the first schema: no budget columns in queries, no day, no
 * rollups. The report refuses it until it is migrated; the migration to
 * schema 5 fills the rollups from the rows, and then the report builds. */
static void test_old_schema(void)
{
    char err[256];
    pgt_db_opts_t o = {.ledger = ":memory:", .writable = true};
    pgt_db_t *db = pgt_db_open(&o, err, sizeof(err));
    CHECK(db != NULL);
    if (!db)
        return;
    CHECK(pgt_ledger_migrate(db, 1, err, sizeof(err)) == 0);
    CHECK(pgt_db_exec(db, "inserting",
                      "INSERT INTO queries (started_at, finished_at, \"user\", database, "
                      "fingerprint, normalized, cost_micro, status) VALUES (1778630400000001, "
                      "1778630400000002, 'old', 'db', 5, 'SELECT 1', 42, 'refused')",
                      err, sizeof(err)) == 0);
    pgt_report_opts_t ro = {.top = 10, .currency = "EUR"};
    CHECK(pgt_report_build(db, "2026-05-13", &ro, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "older than version 5") != NULL);
    CHECK(pgt_ledger_migrate(db, 0, err, sizeof(err)) == 0);
    json_t *r = build(db, "2026-05-13", 10);
    CHECK(r != NULL);
    json_t *t = json_object_get(r, "totals");
    CHECK_INT(json_integer_value(json_object_get(t, "cost_micro")), 42);
    CHECK_INT(json_integer_value(json_object_get(json_object_get(t, "by_status"), "refused")), 1);
    CHECK_INT(json_integer_value(json_object_get(json_object_get(r, "budgets"), "checked")), 0);
    CHECK_INT(json_integer_value(json_object_get(json_object_get(r, "refusals"), "refused")), 1);
    CHECK_INT(json_array_size(json_object_get(json_object_get(r, "refusals"), "by_budget")), 0);
    json_t *shape = json_array_get(json_object_get(r, "shapes"), 0);
    CHECK_STR(json_string_value(json_object_get(shape, "normalized")), "SELECT 1");
    CHECK_INT(json_array_size(json_object_get(r, "statements")), 1);
    /* Before schema 9 no data, and no section. */
    json_t *data = json_object_get(r, "data");
    CHECK_INT(json_array_size(json_object_get(data, "tables")), 0);
    CHECK_INT(json_integer_value(json_object_get(data, "cost_micro")), 0);
    json_decref(r);
    pgt_db_close(db);
}

/* Runs test_build on PostgreSQL, in a new schema dropped at the end. */
/* One insert of test_regressions: a statement of shape fp under tags. */
static void tagged(writer_t *w, int64_t at, int64_t fp, const char *t, int64_t cost,
                   const char *status)
{
    tags = t;
    insert(w, at, "dana", fp, "SELECT r", cost, status, 0);
    tags = "{\"team\":\"a|b\"}";
}

/* A pgt_ledger_regression_cb: the rows as "fp release/n/mean < previous/n/mean ratio;". */
static int regression_text(const pgt_regression_row_t *r, void *arg)
{
    pgt_buf_printf(arg, "%llx %s/%lld/%lld < %s/%lld/%lld %.2f;",
                   (unsigned long long)r->fingerprint, r->release, (long long)r->statements,
                   (long long)r->mean_micro, r->prev_release, (long long)r->prev_statements,
                   (long long)r->prev_mean_micro, r->ratio);
    return 0;
}

/* The regressions of the 7 days up to 2026-05-13 above min, as text. */
static char *regressions(pgt_ledger_where_t where, int64_t min)
{
    char err[256] = "";
    pgt_buf_t out = {0};
    pgt_ledger_reader_t *rd = pgt_ledger_reader_open(&where, err, sizeof(err));
    CHECK(rd != NULL);
    int rc = rd ? pgt_ledger_regressions(rd, D0 - 6 * DAY_US, D0 + DAY_US, min, 0, regression_text,
                                         &out, err, sizeof(err))
                : -1;
    if (rc != 0)
        fprintf(stderr, "pgt_ledger_regressions: %s\n", err);
    CHECK_INT(rc, 0);
    pgt_ledger_reader_close(rd);
    pgt_buf_puts(&out, "");
    return pgt_buf_take(&out);
}

/* Regressions per release: which tag names the release, the order of
 * releases, the window, the floor and the ratio of 2; damaged tags and
 * statements that did not run to the end are left out. Then the report's
 * sections, and work done twice from the constants hashes. */
static void test_regressions(void)
{
    writer_t w = writer_open(new_ledger(), 3);
    int64_t day = D0 + 3600000000LL;
    tagged(&w, day - 2 * DAY_US, 0x101, "{\"release\":\"a\"}", 100, "ok");
    tagged(&w, day - 2 * DAY_US + 1, 0x101, "{\"release\":\"a\"}", 100, "ok");
    tagged(&w, day, 0x101, "{\"release\":\"b\"}", 300, "ok");
    tagged(&w, day + 1, 0x101, "{\"release\":\"b\"}", 90000, "error");
    tagged(&w, day + 2, 0x101, "{", 90000, "ok");
    /* An empty release falls through to git_sha; dbt's invocation_id
     * comes before dbt_version. */
    tagged(&w, day - DAY_US, 0x102, "{\"release\":\"\",\"git_sha\":\"g1\"}", 100, "ok");
    tagged(&w, day, 0x102, "{\"release\":\"\",\"git_sha\":\"g2\"}", 500, "ok");
    tagged(&w, day - DAY_US, 0x103, "{\"invocation_id\":\"i1\",\"dbt_version\":\"1.7\"}", 100,
           "ok");
    tagged(&w, day, 0x103, "{\"invocation_id\":\"i2\",\"dbt_version\":\"1.7\"}", 1000, "ok");
    /* A release before the 7 days does not count; one that cost nothing
     * has no ratio. */
    tagged(&w, day - 8 * DAY_US, 0x104, "{\"release\":\"old\"}", 10, "ok");
    tagged(&w, day, 0x104, "{\"release\":\"new\"}", 100, "ok");
    tagged(&w, day - DAY_US, 0x105, "{\"release\":\"z1\"}", 0, "ok");
    tagged(&w, day, 0x105, "{\"release\":\"z2\"}", 100, "ok");
    /* Twice exactly is a regression; the order is by first seen, not by name. */
    tagged(&w, day - DAY_US, 0x107, "{\"version\":\"q\"}", 100, "ok");
    tagged(&w, day, 0x107, "{\"version\":\"p\"}", 200, "ok");
    /* Work done twice: one lookup four times by two users. */
    constants = 0xc0ffee;
    for (int i = 0; i < 4; i++)
        insert(&w, day + 10 + i, i % 2 ? "erin" : "dana", 0x108, "SELECT $1", 1000 + i, "ok", 0);
    constants = 0;
    writer_close(&w);
    char *t = regressions(w.where, 150);
    CHECK_STR(t, "103 i2/1/1000 < i1/1/100 10.00;102 g2/1/500 < g1/1/100 5.00;"
                 "101 b/1/300 < a/2/100 3.00;107 p/1/200 < q/1/100 2.00;");
    free(t);
    /* Above the floor, strictly. */
    t = regressions(w.where, 200);
    CHECK_STR(t, "103 i2/1/1000 < i1/1/100 10.00;102 g2/1/500 < g1/1/100 5.00;"
                 "101 b/1/300 < a/2/100 3.00;");
    free(t);
    /* The report: both sections, top 2 of the regressions. */
    pgt_db_t *db = reader(w.where);
    char err[256] = "";
    pgt_report_opts_t o = {.top = 2,
                           .currency = "EUR",
                           .timezone = "UTC",
                           .regression_min_micro = 150,
                           .duplicate_min_runs = 3};
    json_t *r = db ? pgt_report_build(db, "2026-05-13", &o, err, sizeof(err)) : NULL;
    CHECK(r != NULL);
    json_t *reg = json_object_get(r, "regressions"), *items = json_object_get(reg, "items");
    CHECK_STR(json_string_value(json_object_get(reg, "since")), "2026-05-07");
    CHECK_INT(json_array_size(items), 2);
    json_t *first = json_array_get(items, 0);
    CHECK_STR(json_string_value(json_object_get(first, "release")), "i2");
    CHECK_STR(json_string_value(json_object_get(first, "previous_mean_cost")), "0.000100");
    CHECK(json_real_value(json_object_get(first, "ratio")) == 10.0);
    json_t *rep = json_array_get(json_object_get(json_object_get(r, "repeats"), "items"), 0);
    CHECK_STR(json_string_value(json_object_get(rep, "constants")), "0000000000c0ffee");
    CHECK_INT(json_integer_value(json_object_get(rep, "runs")), 4);
    CHECK_STR(json_string_value(json_object_get(rep, "who")), "dana, erin");
    CHECK_INT(json_integer_value(json_object_get(rep, "saved_micro")), 1001 + 1002 + 1003);
    json_decref(r);
    pgt_db_close(db);
}

static void test_postgresql(const char *conninfo)
{
    char err[256] = "";
    snprintf(pg_schema, sizeof(pg_schema), "pgtally_test_report_%d", (int)getpid());
    pg_conninfo = conninfo;
    test_build();
    test_regressions();
    pg_conninfo = NULL;
    pgt_db_opts_t o = {.ledger = conninfo, .schema = pg_schema, .writable = true};
    pgt_db_t *db = pgt_db_open(&o, err, sizeof(err));
    char sql[128];
    snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", pg_schema);
    CHECK(db && pgt_db_exec(db, "dropping the schema", sql, err, sizeof(err)) == 0);
    if (err[0])
        fprintf(stderr, "%s\n", err);
    pgt_db_close(db);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int main(void)
{
    char err[128];
    if (pgt_timezone_apply("UTC", err, sizeof(err)) != 0)
        return 1;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pgtally-test-report-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_build();
    test_escaping();
    test_slack_limits();
    test_names_and_subject();
    test_old_schema();
    test_regressions();
    const char *pg = getenv("PGTALLY_TEST_PG");
    if (pg && *pg)
        test_postgresql(pg);
    if (!task_failures)
        nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "files kept in %s\n", tmpdir);
    TASK_DONE();
}
