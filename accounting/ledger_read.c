/* Reading the ledger, for pgtallyctl and the reports: statements one by
 * one and spend per group, each reader on its own connection (read-only
 * for SQLite), so it works beside a running pgtally and never blocks it. */
#include "ledger_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pgt_ledger_reader {
    pgt_db_t *db; /* the reader's connection */
    int version;  /* the ledger's schema version */
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

void pgt_ledger_reader_close(pgt_ledger_reader_t *rd)
{
    if (!rd)
        return;
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
