/* The writer's SQLite half: records inserted with a prepared statement
 * (a replayed record is ignored by its unique (instance, seq)), and the
 * rollups folded from the rows the transaction inserted, before it
 * commits; and retention's deletes. */
#include "ledger_int.h"

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

static const char insert_sql[] = "INSERT INTO queries (" LEDGER_WRITE_COLUMNS ")"
                                 " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                                 " ON CONFLICT DO NOTHING";

/* The sums of the rows this transaction inserted (id > ?1), added to the
 * rollups, spend and shapes; ?2 is the batch's rev. */
static const char fold_sql[] =
    "INSERT INTO rollups SELECT day, instance, \"user\", database, application,"
    " coalesce(fingerprint, 0), status, count(*), total(compute_s), sum(rows), sum(bytes_out),"
    " sum(cost_micro), max(cost_micro), ?2 FROM queries WHERE id > ?1"
    " GROUP BY 1, 2, 3, 4, 5, 6, 7 ON CONFLICT DO UPDATE SET"
    " statements = statements + excluded.statements, compute_s = compute_s + excluded.compute_s,"
    " rows = rows + excluded.rows, bytes_out = bytes_out + excluded.bytes_out,"
    " cost_micro = cost_micro + excluded.cost_micro,"
    " max_cost_micro = max(max_cost_micro, excluded.max_cost_micro), rev = excluded.rev;"
    "INSERT INTO spend SELECT instance, day, \"user\", database, application, sum(cost_micro), ?2"
    " FROM queries WHERE id > ?1 GROUP BY 1, 2, 3, 4, 5 ON CONFLICT DO UPDATE SET"
    " cost_micro = cost_micro + excluded.cost_micro, rev = excluded.rev;"
    "INSERT INTO shapes SELECT fingerprint, min(normalized), min(kind), min(day) FROM queries"
    " WHERE id > ?1 AND fingerprint IS NOT NULL GROUP BY fingerprint ON CONFLICT DO NOTHING";

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static void bind_opt_int(sqlite3_stmt *st, int i, int64_t v, int64_t min)
{
    if (v >= min)
        sqlite3_bind_int64(st, i, v);
    else
        sqlite3_bind_null(st, i);
}

/* Binds r to insert_sql; r must outlive the
 * step. */
static void bind_record(sqlite3_stmt *st, const pgt_record_t *r)
{
    sqlite3_bind_int64(st, 1, r->started_us);
    sqlite3_bind_int64(st, 2, r->finished_us);
    sqlite3_bind_int64(st, 3, (int64_t)r->session_id);
    sqlite3_bind_int(st, 4, r->backend_pid);
    bind_text(st, 5, r->user ? r->user : "");
    bind_text(st, 6, r->database ? r->database : "");
    bind_text(st, 7, r->application ? r->application : "");
    bind_text(st, 8, r->client_addr);
    bind_text(st, 9, r->tags_json);
    sqlite3_bind_int64(st, 10, (int64_t)r->fingerprint);
    bind_text(st, 11, r->normalized);
    bind_text(st, 12, r->kind);
    bind_text(st, 13, r->protocol);
    if (r->est_planner_cost >= 0)
        sqlite3_bind_double(st, 14, r->est_planner_cost);
    else
        sqlite3_bind_null(st, 14);
    bind_opt_int(st, 15, r->est_cost_micro, 0);
    sqlite3_bind_double(st, 16, isfinite(r->compute_s) ? r->compute_s : 0);
    sqlite3_bind_int64(st, 17, r->rows);
    sqlite3_bind_int64(st, 18, r->bytes_out);
    sqlite3_bind_int64(st, 19, r->cost_micro);
    bind_text(st, 20, pgt_query_status_name(r->status));
    size_t n = strnlen(r->sqlstate, sizeof(r->sqlstate) - 1);
    if (n)
        sqlite3_bind_text(st, 21, r->sqlstate, (int)n, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 21);
    bind_opt_int(st, 22, r->budget_id, 1);
    sqlite3_bind_int64(st, 23, r->instance);
    sqlite3_bind_int64(st, 24, r->seq);
    sqlite3_bind_int(st, 25, r->day);
}

/* Records an SQLite error of the writer connection in l->error. */
static void note_error(pgt_ledger_t *l, const char *doing)
{
    snprintf(l->error, sizeof(l->error), "%s: %s", doing, sqlite3_errmsg(pgt_db_handle(l->db)));
}

int ledger_lite_prepare(pgt_ledger_t *l)
{
    if (sqlite3_prepare_v2(pgt_db_handle(l->db), insert_sql, -1, &l->insert, NULL) == SQLITE_OK)
        return 0;
    note_error(l, "preparing the insert");
    return -1;
}

void ledger_lite_close(pgt_ledger_t *l)
{
    sqlite3_finalize(l->insert);
    l->insert = NULL;
}

int ledger_lite_begin(pgt_ledger_t *l)
{
    if (pgt_db_begin(l->db, true, l->error, sizeof(l->error)) != 0)
        return -1;
    l->first_id = 0;
    return pgt_db_int_query(l->db, "beginning", l->error, sizeof(l->error), &l->first_id,
                            "SELECT coalesce(max(id), 0) FROM queries", "");
}

int ledger_lite_insert(pgt_ledger_t *l, pgt_record_t *const *recs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bind_record(l->insert, recs[i]);
        int rc = sqlite3_step(l->insert);
        sqlite3_reset(l->insert);
        if (rc != SQLITE_DONE) {
            note_error(l, "inserting");
            return -1;
        }
    }
    return 0;
}

/* Runs each statement of fold_sql with the transaction's first id and rev. */
int ledger_lite_fold(pgt_ledger_t *l)
{
    for (const char *sql = fold_sql; *sql;) {
        sqlite3_stmt *st = NULL;
        const char *tail = NULL;
        int rc = sqlite3_prepare_v2(pgt_db_handle(l->db), sql, -1, &st, &tail);
        if (rc == SQLITE_OK && st) {
            sqlite3_bind_int64(st, 1, l->first_id);
            sqlite3_bind_int64(st, 2, l->rev + 1);
            rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_OK) {
            note_error(l, "keeping the rollups");
            return -1;
        }
        sql = tail;
    }
    return 0;
}

int ledger_lite_delete_before(pgt_ledger_t *l, int32_t cutoff_day, int limit, int *deleted)
{
    int64_t n = 0;
    int rc = pgt_db_run(l->db, "deleting old rows", l->error, sizeof(l->error), NULL, NULL,
                        "DELETE FROM queries WHERE id IN "
                        "(SELECT id FROM queries WHERE day < ?1 LIMIT ?2)",
                        "ii", (int64_t)cutoff_day, (int64_t)limit);
    if (rc == 0)
        n = pgt_db_changes(l->db);
    if (rc == 0 && n < limit)
        rc = pgt_db_run(l->db, "deleting old rollups", l->error, sizeof(l->error), NULL, NULL,
                        "DELETE FROM rollups WHERE day < ?1", "i", (int64_t)cutoff_day);
    if (rc == 0 && n < limit)
        rc = pgt_db_run(l->db, "deleting old spend", l->error, sizeof(l->error), NULL, NULL,
                        "DELETE FROM spend WHERE day < ?1", "i", (int64_t)cutoff_day);
    *deleted = (int)n;
    return rc;
}

/* ---- Rows, for the readers ------------------------------------------------ */

void ledger_row_to_record(const pgt_db_row_t *row, pgt_record_t *r)
{
    memset(r, 0, sizeof(*r));
    r->started_us = pgt_db_int(row, 0);
    r->finished_us = pgt_db_int(row, 1);
    r->session_id = (uint64_t)pgt_db_int(row, 2);
    r->backend_pid = (int32_t)pgt_db_int(row, 3);
    r->user = (char *)pgt_db_text(row, 4);
    r->database = (char *)pgt_db_text(row, 5);
    r->application = (char *)pgt_db_text(row, 6);
    r->client_addr = (char *)pgt_db_text(row, 7);
    r->tags_json = (char *)pgt_db_text(row, 8);
    r->fingerprint = (uint64_t)pgt_db_int(row, 9);
    r->normalized = (char *)pgt_db_text(row, 10);
    r->kind = (char *)pgt_db_text(row, 11);
    r->protocol = (char *)pgt_db_text(row, 12);
    r->est_planner_cost = pgt_db_isnull(row, 13) ? -1 : pgt_db_double(row, 13);
    r->est_cost_micro = pgt_db_isnull(row, 14) ? -1 : pgt_db_int(row, 14);
    r->compute_s = pgt_db_double(row, 15);
    r->rows = pgt_db_int(row, 16);
    r->bytes_out = pgt_db_int(row, 17);
    r->cost_micro = pgt_db_int(row, 18);
    if (pgt_query_status_parse(pgt_db_text(row, 19), &r->status) != 0)
        r->status = PGT_QUERY_ERROR;
    const char *sqlstate = pgt_db_text(row, 20);
    if (sqlstate)
        snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", sqlstate);
}
