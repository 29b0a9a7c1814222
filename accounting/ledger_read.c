/* Reading the ledger, for pgtallyctl and the reports: statements one by
 * one and spend per group (per schema and table too), each reader on its
 * own connection (read-only for SQLite), so it works beside a running
 * pgtally and never blocks it. */
#include "ledger_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/period.h"

struct pgt_ledger_reader {
    pgt_db_t *db;  /* the reader's connection */
    int version;   /* the ledger's schema version */
    bool borrowed; /* db is the caller's (pgt_ledger_reader_borrow) */
};

pgt_ledger_reader_t *pgt_ledger_reader_open(const pgt_ledger_where_t *w, char *err, size_t errlen)
{
    pgt_ledger_reader_t *rd = calloc(1, sizeof(*rd));
    if (!rd) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rd->db = pgt_ledger_db_open(w, false, &rd->version, err, errlen);
    if (!rd->db) {
        free(rd);
        return NULL;
    }
    return rd;
}

pgt_ledger_reader_t *pgt_ledger_reader_borrow(pgt_db_t *db, char *err, size_t errlen)
{
    pgt_ledger_reader_t *rd = calloc(1, sizeof(*rd));
    if (!rd) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    *rd = (pgt_ledger_reader_t){.db = db, .borrowed = true};
    if (ledger_schema_version_of(db, &rd->version, err, errlen) != 0) {
        free(rd);
        return NULL;
    }
    return rd;
}

void pgt_ledger_reader_close(pgt_ledger_reader_t *rd)
{
    if (!rd)
        return;
    if (!rd->borrowed)
        pgt_db_close(rd->db);
    free(rd);
}

/* The callback of pgt_ledger_list and its argument. */
typedef struct list_ctx {
    pgt_ledger_record_cb cb; /* the caller's callback */
    void *arg;               /* its argument */
} list_ctx_t;

static int list_row(const pgt_db_row_t *row, void *arg)
{
    list_ctx_t *c = arg;
    pgt_record_t r;
    ledger_row_to_record(row, &r);
    return c->cb(&r, c->arg);
}

int pgt_ledger_list(pgt_ledger_reader_t *rd, const pgt_ledger_filter_t *f, pgt_ledger_record_cb cb,
                    void *arg, char *err, size_t errlen)
{
    /* Ordering by started_at alone lets the database walk its index
     * backwards and stop at the limit, without sorting the range. */
    char sql[512];
    snprintf(
        sql, sizeof(sql),
        "SELECT " LEDGER_RECORD_COLUMNS " FROM queries WHERE started_at >= ?1 AND started_at < ?2"
        " AND (CAST(?3 AS TEXT) IS NULL OR \"user\" = ?3) ORDER BY %s LIMIT ?4",
        f->order == PGT_LEDGER_ORDER_COST ? "cost_micro DESC, started_at DESC" : "started_at DESC");
    list_ctx_t c = {cb, arg};
    return pgt_db_run(rd->db, "reading the ledger", err, errlen, list_row, &c, sql, "iiti",
                      f->since_us, f->until_us, f->user, f->limit > 0 ? f->limit : INT64_MAX);
}

/* The callback of pgt_ledger_usage and its argument. */
typedef struct usage_ctx {
    pgt_ledger_usage_cb cb; /* the caller's callback */
    void *arg;              /* its argument */
} usage_ctx_t;

static int usage_row(const pgt_db_row_t *r, void *arg)
{
    usage_ctx_t *c = arg;
    pgt_usage_row_t row = {
        .group = pgt_db_text(r, 0),
        .statements = pgt_db_int(r, 1),
        .compute_s = pgt_db_double(r, 2),
        .rows = pgt_db_int(r, 3),
        .bytes_out = pgt_db_int(r, 4),
        .cost_micro = pgt_db_int(r, 5),
    };
    return c->cb(&row, c->arg);
}

/* Returns the SQL expression that names a statement's group; a tag's name
 * is ?3. Damaged tags must not fail the whole report. */
static const char *group_expr(pgt_usage_by_t by, pgt_db_backend_t backend)
{
    switch (by) {
    case PGT_USAGE_BY_USER:
        return "\"user\"";
    case PGT_USAGE_BY_DATABASE:
        return "database";
    case PGT_USAGE_BY_APPLICATION:
        return "application";
    case PGT_USAGE_BY_TAG:
    case PGT_USAGE_BY_SCHEMA:
    case PGT_USAGE_BY_TABLE:
        break;
    }
    if (backend == PGT_DB_POSTGRESQL)
        return "tag_value(tags, ?3)";
    return "CASE WHEN json_valid(tags) THEN CAST(json_extract(tags, ?3) AS TEXT) END";
}

int pgt_ledger_usage(pgt_ledger_reader_t *rd, pgt_usage_by_t by, const char *tag, int64_t from_us,
                     int64_t to_us, pgt_ledger_usage_cb cb, void *arg, char *err, size_t errlen)
{
    if (by == PGT_USAGE_BY_TAG && (!tag || !tag[0] || strlen(tag) > 200 || strpbrk(tag, "\"\\"))) {
        snprintf(err, errlen, "bad tag name '%s'", tag ? tag : "");
        return -1;
    }
    if (by == PGT_USAGE_BY_SCHEMA || by == PGT_USAGE_BY_TABLE)
        return pgt_ledger_usage_relations(rd, by == PGT_USAGE_BY_TABLE, from_us, to_us, cb, arg,
                                          NULL, err, errlen);
    pgt_db_backend_t backend = pgt_db_backend(rd->db);
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT %s AS g, count(*), coalesce(sum(compute_s), 0), coalesce(sum(rows), 0),"
             " coalesce(sum(bytes_out), 0), sum(cost_micro) AS cost FROM queries"
             " WHERE started_at >= ?1 AND started_at < ?2 GROUP BY 1 ORDER BY cost DESC, g",
             group_expr(by, backend));
    char path[256] = "";
    if (by == PGT_USAGE_BY_TAG)
        snprintf(path, sizeof(path), backend == PGT_DB_SQLITE ? "$.\"%s\"" : "%s", tag);
    usage_ctx_t c = {cb, arg};
    if (by != PGT_USAGE_BY_TAG)
        return pgt_db_run(rd->db, "reading the ledger", err, errlen, usage_row, &c, sql, "ii",
                          from_us, to_us);
    return pgt_db_run(rd->db, "reading the ledger", err, errlen, usage_row, &c, sql, "iit", from_us,
                      to_us, path);
}

/* ---- By schema and table ----------------------------------------------- */

/* The schema version that has queries.relations and daily_relations. */
#define RELATIONS_VERSION 9

/* The sums of pgt_ledger_usage_relations as they are gathered. */
typedef struct rel_walk {
    bool by_table;          /* groups are tables, not schemas */
    ledger_rel_sums_t sums; /* by schema\0 or schema\0relation\0 */
    pgt_usage_row_t total;  /* over the statements, each once */
} rel_walk_t;

/* Adds one statement (relations, compute_s, cost_micro) to the sums: its
 * parts, or for schemas the parts of each schema together. */
static int rel_row(const pgt_db_row_t *r, void *arg)
{
    rel_walk_t *w = arg;
    ledger_rel_split_t s;
    double compute = pgt_db_double(r, 1);
    int64_t cost = pgt_db_int(r, 2);
    if (ledger_rel_split(pgt_db_text(r, 0), compute, cost, &s) > 0) {
        w->total.statements++;
        w->total.compute_s += isfinite(compute) ? compute : 0;
        w->total.cost_micro += cost;
    }
    for (size_t i = 0; i < s.n; i++) {
        const ledger_rel_part_t *p = &s.parts[i];
        double c = p->compute_s;
        int64_t m = p->cost_micro;
        bool seen = false;
        for (size_t j = 0; !w->by_table && j < s.n; j++) {
            if (j == i || strcmp(s.parts[j].schema, p->schema) != 0)
                continue;
            seen = seen || j < i;
            c += s.parts[j].compute_s;
            m += s.parts[j].cost_micro;
        }
        if (seen)
            continue;
        size_t ls = strlen(p->schema) + 1, lr = strlen(p->relation) + 1;
        char key[2 * 256];
        if (ls + lr > sizeof(key))
            continue; /* no name the server keeps is that long */
        memcpy(key, p->schema, ls);
        memcpy(key + ls, p->relation, lr);
        ledger_rel_sums_add(&w->sums, key, w->by_table ? ls + lr : ls, 1, c, m);
    }
    ledger_rel_split_free(&s);
    return w->sums.failed ? 1 : 0;
}

static int cmp_sum(const void *x, const void *y)
{
    const ledger_rel_sum_t *a = *(const ledger_rel_sum_t *const *)x;
    const ledger_rel_sum_t *b = *(const ledger_rel_sum_t *const *)y;
    if (a->cost_micro != b->cost_micro)
        return a->cost_micro > b->cost_micro ? -1 : 1;
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = memcmp(a->key, b->key, n);
    return c ? c : (a->klen > b->klen) - (a->klen < b->klen);
}

/* The label of a table: "schema.relation", or the relation alone. */
static const char *table_label(const char *schema, const char *relation, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s%s", schema, schema[0] ? "." : "", relation);
    return buf;
}

/* Calls cb with w's sums, most expensive first. */
static int rel_emit(rel_walk_t *w, pgt_ledger_usage_cb cb, void *arg, char *err, size_t errlen)
{
    ledger_rel_sum_t **v = calloc(w->sums.n ? w->sums.n : 1, sizeof(*v));
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < w->sums.nslots; i++)
        if (w->sums.slots[i].key)
            v[n++] = &w->sums.slots[i];
    if (n)
        qsort(v, n, sizeof(*v), cmp_sum);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        size_t off = 0;
        const char *schema = ledger_rel_key_field(v[i], 0, &off);
        const char *relation = w->by_table ? ledger_rel_key_field(v[i], off, &off) : NULL;
        char label[2 * 256 + 2];
        pgt_usage_row_t row = {
            .group = relation ? table_label(schema, relation, label, sizeof(label)) : schema,
            .statements = v[i]->queries,
            .compute_s = v[i]->compute_s,
            .cost_micro = v[i]->cost_micro,
            .schema = schema,
            .relation = relation,
        };
        rc = cb(&row, arg);
    }
    free(v);
    return rc;
}

int pgt_ledger_usage_relations(pgt_ledger_reader_t *rd, bool by_table, int64_t from_us,
                               int64_t to_us, pgt_ledger_usage_cb cb, void *arg,
                               pgt_usage_row_t *total, char *err, size_t errlen)
{
    rel_walk_t w = {.by_table = by_table};
    int rc = 0;
    if (rd->version >= RELATIONS_VERSION)
        rc = pgt_db_run(rd->db, "reading the ledger", err, errlen, rel_row, &w,
                        "SELECT relations, compute_s, cost_micro FROM queries"
                        " WHERE started_at >= ?1 AND started_at < ?2 AND relations IS NOT NULL",
                        "ii", from_us, to_us);
    if (rc > 0) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    if (total)
        *total = w.total;
    if (rc == 0)
        rc = rel_emit(&w, cb, arg, err, errlen);
    ledger_rel_sums_free(&w.sums);
    return rc;
}

/* The callback of pgt_ledger_tables and its argument. */
typedef struct tables_ctx {
    pgt_ledger_usage_cb cb; /* the caller's callback */
    void *arg;              /* its argument */
} tables_ctx_t;

static int table_row(const pgt_db_row_t *r, void *arg)
{
    tables_ctx_t *c = arg;
    const char *schema = pgt_db_text(r, 0), *relation = pgt_db_text(r, 1);
    char label[2 * 256 + 2];
    schema = schema ? schema : "";
    relation = relation ? relation : "";
    pgt_usage_row_t row = {
        .group = table_label(schema, relation, label, sizeof(label)),
        .statements = pgt_db_int(r, 2),
        .compute_s = pgt_db_double(r, 3),
        .cost_micro = pgt_db_int(r, 4),
        .schema = schema,
        .relation = relation,
    };
    return c->cb(&row, c->arg);
}

int pgt_ledger_tables(pgt_ledger_reader_t *rd, int64_t from_us, int64_t to_us, int64_t limit,
                      pgt_ledger_usage_cb cb, void *arg, char *err, size_t errlen)
{
    if (rd->version < RELATIONS_VERSION || to_us <= from_us)
        return 0;
    tables_ctx_t c = {cb, arg};
    return pgt_db_run(rd->db, "reading the ledger", err, errlen, table_row, &c,
                      "SELECT schema_name, relation, sum(queries), sum(compute_s),"
                      " sum(cost_micro) AS cost FROM daily_relations"
                      " WHERE day >= ?1 AND day <= ?2 GROUP BY schema_name, relation"
                      " ORDER BY cost DESC, schema_name, relation LIMIT ?3",
                      "iii", (int64_t)pgt_local_day(from_us), (int64_t)pgt_local_day(to_us - 1),
                      limit > 0 ? limit : INT64_MAX);
}

/* The callback of pgt_ledger_shapes and its argument. */
typedef struct shape_ctx {
    pgt_ledger_shape_cb cb; /* the caller's callback */
    void *arg;              /* its argument */
} shape_ctx_t;

static int shape_row(const pgt_db_row_t *r, void *arg)
{
    shape_ctx_t *c = arg;
    pgt_shape_row_t row = {
        .fingerprint = (uint64_t)pgt_db_int(r, 0),
        .statements = pgt_db_int(r, 1),
        .compute_s = pgt_db_double(r, 2),
        .cost_micro = pgt_db_int(r, 3),
        .kind = pgt_db_text(r, 4),
        .normalized = pgt_db_text(r, 5),
    };
    return c->cb(&row, c->arg);
}

int pgt_ledger_shapes(pgt_ledger_reader_t *rd, int64_t from_us, int64_t to_us, int64_t limit,
                      pgt_ledger_shape_cb cb, void *arg, char *err, size_t errlen)
{
    static const char sql[] =
        "SELECT fingerprint, count(*), coalesce(sum(compute_s), 0), sum(cost_micro) AS cost,"
        " min(kind), min(normalized) FROM queries WHERE started_at >= ?1 AND started_at < ?2"
        " AND fingerprint IS NOT NULL GROUP BY fingerprint ORDER BY cost DESC, fingerprint"
        " LIMIT ?3";
    shape_ctx_t c = {cb, arg};
    return pgt_db_run(rd->db, "reading the ledger", err, errlen, shape_row, &c, sql, "iii", from_us,
                      to_us, limit);
}

/* The callback of pgt_ledger_alerts and its argument. */
typedef struct alert_ctx {
    pgt_ledger_alert_cb cb; /* the caller's callback */
    void *arg;              /* its argument */
} alert_ctx_t;

static int alert_row(const pgt_db_row_t *r, void *arg)
{
    alert_ctx_t *c = arg;
    pgt_alert_row_t row = {
        .id = pgt_db_int(r, 0),
        .budget_id = pgt_db_int(r, 1),
        .period_start_us = pgt_db_int(r, 2),
        .threshold_pct = (int)pgt_db_int(r, 3),
        .channel = pgt_db_text(r, 4),
        .sent_us = pgt_db_int(r, 5),
        .delivered_us = pgt_db_isnull(r, 6) ? -1 : pgt_db_int(r, 6),
        .attempts = pgt_db_int(r, 7),
        .last_error = pgt_db_text(r, 8),
        .message = pgt_db_text(r, 9),
    };
    return c->cb(&row, c->arg);
}

int pgt_ledger_alerts(pgt_ledger_reader_t *rd, int64_t limit, pgt_ledger_alert_cb cb, void *arg,
                      char *err, size_t errlen)
{
    if (!pgt_db_has_table(rd->db, "alerts_sent"))
        return 0;
    /* Migration 7 added the delivery columns. */
    const char *sql =
        rd->version >= 7
            ? "SELECT id, budget_id, period_start, threshold_pct, channel, sent_at, delivered_at,"
              " attempts, last_error, message FROM alerts_sent ORDER BY sent_at DESC, id DESC"
              " LIMIT ?1"
            : "SELECT id, budget_id, period_start, threshold_pct, channel, sent_at, sent_at, 0,"
              " NULL, NULL FROM alerts_sent ORDER BY sent_at DESC, id DESC LIMIT ?1";
    alert_ctx_t c = {cb, arg};
    return pgt_db_run(rd->db, "reading the ledger", err, errlen, alert_row, &c, sql, "i", limit);
}

/* ---- Work done twice ------------------------------------------------------ */

/* The schema version that has queries.constants. */
#define CONSTANTS_VERSION 10

/* The callback of pgt_ledger_repeats and its argument. */
typedef struct repeat_ctx {
    pgt_ledger_repeat_cb cb; /* the caller's callback */
    void *arg;               /* its argument */
} repeat_ctx_t;

static int repeat_row(const pgt_db_row_t *r, void *arg)
{
    repeat_ctx_t *c = arg;
    pgt_repeat_row_t row = {
        .fingerprint = (uint64_t)pgt_db_int(r, 0),
        .constants = (uint64_t)pgt_db_int(r, 1),
        .runs = pgt_db_int(r, 2),
        .users = pgt_db_int(r, 3),
        .applications = pgt_db_int(r, 4),
        .cost_micro = pgt_db_int(r, 5),
        .repeat_micro = pgt_db_int(r, 6),
        .who = pgt_db_text(r, 7),
        .normalized = pgt_db_text(r, 8),
    };
    return c->cb(&row, c->arg);
}

int pgt_ledger_repeats(pgt_ledger_reader_t *rd, int64_t from_us, int64_t to_us, int64_t min_runs,
                       int64_t limit, pgt_ledger_repeat_cb cb, void *arg, char *err, size_t errlen)
{
    if (rd->version < CONSTANTS_VERSION || to_us <= from_us)
        return 0;
    bool pg = pgt_db_backend(rd->db) == PGT_DB_POSTGRESQL;
    char sql[1024];
    /* Statements that ran and finished (not refused, not failed); the
     * repeats are every run but the cheapest, which one cached result
     * would still have cost. */
    snprintf(sql, sizeof(sql),
             "SELECT q.fingerprint, q.constants, count(*) AS runs, count(DISTINCT q.\"user\"),"
             " count(DISTINCT q.application), sum(q.cost_micro),"
             " sum(q.cost_micro) - min(q.cost_micro) AS repeats, %s,"
             " (SELECT s.normalized FROM shapes s WHERE s.fingerprint = q.fingerprint)"
             " FROM queries q WHERE q.started_at >= ?1 AND q.started_at < ?2"
             " AND q.constants IS NOT NULL AND q.status = 'ok' AND q.kind = 'select'"
             " GROUP BY q.fingerprint, q.constants HAVING count(*) > ?3"
             " AND (count(DISTINCT q.\"user\") > 1 OR count(DISTINCT q.application) > 1)"
             " ORDER BY repeats DESC, runs DESC, q.fingerprint, q.constants LIMIT ?4",
             pg ? "string_agg(DISTINCT q.\"user\", ', ' ORDER BY q.\"user\")"
                : "(SELECT group_concat(u, ', ') FROM (SELECT DISTINCT q2.\"user\" AS u FROM "
                  "queries q2 WHERE q2.fingerprint = q.fingerprint AND q2.constants = q.constants"
                  " AND q2.started_at >= ?1 AND q2.started_at < ?2 AND q2.status = 'ok'"
                  " ORDER BY u))");
    repeat_ctx_t c = {cb, arg};
    return pgt_db_run(rd->db, "reading the ledger", err, errlen, repeat_row, &c, sql, "iiii",
                      from_us, to_us, min_runs, limit > 0 ? limit : INT64_MAX);
}

/* ---- Regressions per release ---------------------------------------------- */

/* The schema version that has queries.day. */
#define DAY_VERSION 5

static const char *const release_tags[] = {PGT_LEDGER_RELEASE_TAGS};

/* Writes the SQL expression of a statement's release into buf: the first
 * release tag present and not empty. Damaged tags give NULL. */
static void release_expr(pgt_db_backend_t backend, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(
        buf, len, "%s",
        backend == PGT_DB_SQLITE ? "CASE WHEN json_valid(tags) THEN coalesce(" : "coalesce(");
    for (size_t i = 0; i < sizeof(release_tags) / sizeof(release_tags[0]) && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n,
                              backend == PGT_DB_SQLITE
                                  ? "%snullif(CAST(json_extract(tags, '$.\"%s\"') AS TEXT), '')"
                                  : "%snullif(tag_value(tags, '%s'), '')",
                              i ? ", " : "", release_tags[i]);
    if (n < len)
        snprintf(buf + n, len - n, "%s", backend == PGT_DB_SQLITE ? ") END" : ")");
}

/* The callback of pgt_ledger_regressions and its argument. */
typedef struct regression_ctx {
    pgt_ledger_regression_cb cb; /* the caller's callback */
    void *arg;                   /* its argument */
} regression_ctx_t;

/* A row of (fingerprint, release, statements, cost, previous release,
 * statements, cost, first seen, normalized). */
static int regression_row(const pgt_db_row_t *r, void *arg)
{
    regression_ctx_t *c = arg;
    int64_t n = pgt_db_int(r, 2), prev_n = pgt_db_int(r, 5);
    double mean = (double)pgt_db_int(r, 3) / (double)n;
    double prev_mean = (double)pgt_db_int(r, 6) / (double)prev_n;
    pgt_regression_row_t row = {
        .fingerprint = (uint64_t)pgt_db_int(r, 0),
        .release = pgt_db_text(r, 1),
        .statements = n,
        .mean_micro = llround(mean),
        .prev_release = pgt_db_text(r, 4),
        .prev_statements = prev_n,
        .prev_mean_micro = llround(prev_mean),
        .ratio = mean / prev_mean,
        .first_seen_us = pgt_db_int(r, 7),
        .normalized = pgt_db_text(r, 8),
    };
    return c->cb(&row, c->arg);
}

int pgt_ledger_regressions(pgt_ledger_reader_t *rd, int64_t from_us, int64_t to_us,
                           int64_t min_mean_micro, int64_t limit, pgt_ledger_regression_cb cb,
                           void *arg, char *err, size_t errlen)
{
    if (rd->version < DAY_VERSION || to_us <= from_us)
        return 0;
    char rel[1024], sql[2560];
    release_expr(pgt_db_backend(rd->db), rel, sizeof(rel));
    /* Per shape and release: the statements that ran to the end, and when
     * the first of them started; per shape, its releases newest first. The
     * day bounds prune the PostgreSQL partitions and walk SQLite's
     * queries_day_cost index. Means are compared as products of the sums
     * and counts, in floating point (SQLite) or numeric (PostgreSQL), so
     * that nothing overflows. */
    snprintf(sql, sizeof(sql),
             "WITH r AS (SELECT fingerprint AS fp, %s AS rel, started_at, cost_micro FROM queries"
             " WHERE day >= ?1 AND day <= ?2 AND tags IS NOT NULL AND fingerprint IS NOT NULL"
             " AND status = 'ok'),"
             " g AS (SELECT fp, rel, min(started_at) AS first_seen, count(*) AS n,"
             " sum(cost_micro) AS cost FROM r WHERE rel IS NOT NULL GROUP BY fp, rel),"
             " o AS (SELECT fp, rel, first_seen, n, cost, row_number() OVER (PARTITION BY fp"
             " ORDER BY first_seen DESC, rel DESC) AS k FROM g)"
             " SELECT a.fp, a.rel, a.n, a.cost, b.rel, b.n, b.cost, a.first_seen,"
             " (SELECT s.normalized FROM shapes s WHERE s.fingerprint = a.fp)"
             " FROM o a JOIN o b ON b.fp = a.fp AND b.k = 2"
             " WHERE a.k = 1 AND b.cost > 0 AND 1.0 * a.cost > 1.0 * ?3 * a.n"
             " AND 1.0 * a.cost * b.n >= 2.0 * b.cost * a.n"
             " ORDER BY (1.0 * a.cost * b.n) / (1.0 * b.cost * a.n) DESC, a.fp LIMIT ?4",
             rel);
    regression_ctx_t c = {cb, arg};
    return pgt_db_run(rd->db, "reading the ledger", err, errlen, regression_row, &c, sql, "iiii",
                      (int64_t)pgt_local_day(from_us), (int64_t)pgt_local_day(to_us - 1),
                      min_mean_micro, limit > 0 ? limit : INT64_MAX);
}
