/* Reading the ledger, for pgtallyctl and the reports: statements one by
 * one and spend per group, each reader on its own read-only SQLite
 * connection, and the row walk that the settings tables share. */
#include "ledger_int.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pgt_ledger_reader {
    sqlite3 *db; /* read-only connection */
};

pgt_ledger_reader_t *pgt_ledger_reader_open(const char *path, char *err, size_t errlen)
{
    pgt_ledger_reader_t *rd = calloc(1, sizeof(*rd));
    if (!rd) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int v;
    rd->db = pgt_ledger_db_open(path, false, &v, err, errlen);
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
    sqlite3_close_v2(rd->db);
    free(rd);
}

int pgt_ledger_walk(sqlite3 *db, sqlite3_stmt *st, int (*row_cb)(sqlite3_stmt *, void *), void *arg,
                    const char *doing, char *err, size_t errlen)
{
    int rc, ret = 0;
    while (ret == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        ret = row_cb ? row_cb(st, arg) : 0;
    if (ret == 0 && rc != SQLITE_DONE) {
        snprintf(err, errlen, "%s: %s", doing, sqlite3_errmsg(db));
        ret = -1;
    }
    sqlite3_finalize(st);
    return ret;
}

/* Prepares sql on the reader's connection. Returns the statement, or NULL
 * with the cause in err. */
static sqlite3_stmt *reader_prepare(pgt_ledger_reader_t *rd, const char *sql, char *err,
                                    size_t errlen)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(rd->db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading the ledger: %s", sqlite3_errmsg(rd->db));
        return NULL;
    }
    return st;
}

/* The callback of pgt_ledger_list and its argument. */
typedef struct list_ctx {
    pgt_ledger_record_cb cb; /* the caller's callback */
    void *arg;               /* its argument */
} list_ctx_t;

static int list_row(sqlite3_stmt *st, void *arg)
{
    list_ctx_t *c = arg;
    pgt_record_t r;
    ledger_row_to_record(st, &r);
    return c->cb(&r, c->arg);
}

int pgt_ledger_list(pgt_ledger_reader_t *rd, const pgt_ledger_filter_t *f, pgt_ledger_record_cb cb,
                    void *arg, char *err, size_t errlen)
{
    /* Ordering by started_at alone lets SQLite walk an index backwards and
     * stop at the limit, without sorting the range. */
    char sql[512];
    snprintf(
        sql, sizeof(sql),
        "SELECT " LEDGER_RECORD_COLUMNS " FROM queries WHERE started_at >= ?1 AND started_at < ?2"
        "%s ORDER BY %s LIMIT ?4",
        f->user ? " AND \"user\" = ?3" : "",
        f->order == PGT_LEDGER_ORDER_COST ? "cost_micro DESC, started_at DESC" : "started_at DESC");
    sqlite3_stmt *st = reader_prepare(rd, sql, err, errlen);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, f->since_us);
    sqlite3_bind_int64(st, 2, f->until_us);
    if (f->user)
        sqlite3_bind_text(st, 3, f->user, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, f->limit > 0 ? f->limit : -1);
    list_ctx_t c = {cb, arg};
    return pgt_ledger_walk(rd->db, st, list_row, &c, "reading the ledger", err, errlen);
}

/* The callback of pgt_ledger_usage and its argument. */
typedef struct usage_ctx {
    pgt_ledger_usage_cb cb; /* the caller's callback */
    void *arg;              /* its argument */
} usage_ctx_t;

static int usage_row(sqlite3_stmt *st, void *arg)
{
    usage_ctx_t *c = arg;
    pgt_usage_row_t row = {
        .group = (const char *)sqlite3_column_text(st, 0),
        .statements = sqlite3_column_int64(st, 1),
        .compute_s = sqlite3_column_double(st, 2),
        .rows = sqlite3_column_int64(st, 3),
        .bytes_out = sqlite3_column_int64(st, 4),
        .cost_micro = sqlite3_column_int64(st, 5),
    };
    return c->cb(&row, c->arg);
}

/* Returns the SQL expression that names a statement's group. */
static const char *group_expr(pgt_usage_by_t by)
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
    /* Damaged tags must not fail the whole report. */
    return "CASE WHEN json_valid(tags) THEN CAST(json_extract(tags, ?3) AS TEXT) END";
}

int pgt_ledger_usage(pgt_ledger_reader_t *rd, pgt_usage_by_t by, const char *tag, int64_t from_us,
                     int64_t to_us, pgt_ledger_usage_cb cb, void *arg, char *err, size_t errlen)
{
    if (by == PGT_USAGE_BY_TAG && (!tag || !tag[0] || strlen(tag) > 200 || strpbrk(tag, "\"\\"))) {
        snprintf(err, errlen, "bad tag name '%s'", tag ? tag : "");
        return -1;
    }
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT %s AS g, count(*), total(compute_s), coalesce(sum(rows), 0), "
             "coalesce(sum(bytes_out), 0), "
             "sum(cost_micro) AS cost FROM queries WHERE started_at >= ?1 AND started_at < ?2 "
             "GROUP BY g ORDER BY cost DESC, g",
             group_expr(by));
    sqlite3_stmt *st = reader_prepare(rd, sql, err, errlen);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, from_us);
    sqlite3_bind_int64(st, 2, to_us);
    if (by == PGT_USAGE_BY_TAG) {
        char path[256];
        snprintf(path, sizeof(path), "$.\"%s\"", tag);
        sqlite3_bind_text(st, 3, path, -1, SQLITE_TRANSIENT);
    }
    usage_ctx_t c = {cb, arg};
    return pgt_ledger_walk(rd->db, st, usage_row, &c, "reading the ledger", err, errlen);
}
