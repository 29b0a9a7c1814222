/* The writer's PostgreSQL half: a batch goes into a temporary staging table
 * with COPY, then one statement moves it into the queries table (a replayed
 * record is skipped by its key, (day, instance, seq)) and adds what it
 * inserted to the rollups, spend and shapes; each record's parts per
 * relation go into a second staging table, and the same statement adds
 * those of the records it inserted to daily_relations. The queries table is
 * partitioned by local day: the writer creates a day's partition when it
 * first writes to it, and retention drops whole partitions. */
#include "ledger_int.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/buf.h"
#include "pgtally/text.h"

#define COPY_CHUNK 65536 /* bytes handed to libpq at a time */

static const char stage_sql[] =
    "CREATE TEMP TABLE IF NOT EXISTS pgt_stage (LIKE queries) ON COMMIT DELETE ROWS";

/* Each record's parts per relation (ledger_rel_split), by its id. */
static const char stage_rel_sql[] =
    "CREATE TEMP TABLE IF NOT EXISTS pgt_stage_rel (instance BIGINT NOT NULL, seq BIGINT NOT NULL,"
    " schema_name TEXT NOT NULL, relation TEXT NOT NULL, compute_s DOUBLE PRECISION NOT NULL,"
    " cost_micro BIGINT NOT NULL) ON COMMIT DELETE ROWS";

static const char fold_sql[] =
    "WITH ins AS (INSERT INTO queries (" LEDGER_WRITE_COLUMNS ") SELECT " LEDGER_WRITE_COLUMNS
    " FROM pgt_stage ON CONFLICT DO NOTHING RETURNING *),"
    " r AS (INSERT INTO rollups SELECT day, instance, \"user\", database, application,"
    " coalesce(fingerprint, 0), status, count(*), sum(compute_s), sum(rows), sum(bytes_out),"
    " sum(cost_micro), max(cost_micro), $1 FROM ins GROUP BY 1, 2, 3, 4, 5, 6, 7"
    " ON CONFLICT (day, instance, \"user\", database, application, fingerprint, status)"
    " DO UPDATE SET statements = rollups.statements + excluded.statements,"
    " compute_s = rollups.compute_s + excluded.compute_s, rows = rollups.rows + excluded.rows,"
    " bytes_out = rollups.bytes_out + excluded.bytes_out,"
    " cost_micro = rollups.cost_micro + excluded.cost_micro,"
    " max_cost_micro = greatest(rollups.max_cost_micro, excluded.max_cost_micro),"
    " rev = excluded.rev),"
    " s AS (INSERT INTO spend SELECT instance, day, \"user\", database, application,"
    " sum(cost_micro), $1 FROM ins GROUP BY 1, 2, 3, 4, 5"
    " ON CONFLICT (instance, day, \"user\", database, application)"
    " DO UPDATE SET cost_micro = spend.cost_micro + excluded.cost_micro, rev = excluded.rev),"
    " rel AS (INSERT INTO daily_relations SELECT ins.day, ins.instance, ins.database, ins.\"user\","
    " r.schema_name, r.relation, count(*), sum(r.compute_s), sum(r.cost_micro)"
    " FROM ins JOIN pgt_stage_rel r ON r.instance = ins.instance AND r.seq = ins.seq"
    " GROUP BY 1, 2, 3, 4, 5, 6"
    " ON CONFLICT (day, instance, database, \"user\", schema_name, relation)"
    " DO UPDATE SET queries = daily_relations.queries + excluded.queries,"
    " compute_s = daily_relations.compute_s + excluded.compute_s,"
    " cost_micro = daily_relations.cost_micro + excluded.cost_micro)"
    " INSERT INTO shapes SELECT fingerprint, min(normalized), min(kind), min(day) FROM ins"
    " WHERE fingerprint IS NOT NULL GROUP BY fingerprint ORDER BY fingerprint"
    " ON CONFLICT DO NOTHING";

static PGconn *conn(pgt_ledger_t *l)
{
    return pgt_db_handle(l->db);
}

static void note_error(pgt_ledger_t *l, const char *doing, const PGresult *res)
{
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (!msg || !*msg)
        msg = PQerrorMessage(conn(l));
    snprintf(l->error, sizeof(l->error), "%s: %s", doing, msg);
    size_t n = strlen(l->error);
    while (n && l->error[n - 1] == '\n')
        l->error[--n] = '\0';
}

void ledger_pg_close(pgt_ledger_t *l)
{
    l->staged = false;
    l->rel_staged = false;
    free(l->days);
    l->days = NULL;
    l->ndays = 0;
}

/* ---- Partitions ----------------------------------------------------------- */

static bool day_known(const pgt_ledger_t *l, int32_t day)
{
    for (size_t i = 0; i < l->ndays; i++)
        if (l->days[i] == day)
            return true;
    return false;
}

/* Creates the partition of day unless it exists, under a lock that other
 * instances creating it too take as well. Returns 0, or -1 with l->error. */
static int ensure_partition(pgt_ledger_t *l, int32_t day)
{
    if (day_known(l, day))
        return 0;
    int32_t *days = realloc(l->days, (l->ndays + 1) * sizeof(*days));
    if (!days) {
        snprintf(l->error, sizeof(l->error), "out of memory");
        return -1;
    }
    l->days = days;
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.partitions'));"
             " DO $$ BEGIN EXECUTE format('CREATE TABLE IF NOT EXISTS %%I PARTITION OF queries"
             " FOR VALUES FROM (%%s) TO (%%s)', 'queries_' || to_char(DATE '1970-01-01' + %d,"
             " 'YYYYMMDD'), %d, %d); END $$",
             (int)day, (int)day, (int)day + 1);
    if (pgt_db_exec(l->db, "creating a partition", sql, l->error, sizeof(l->error)) != 0)
        return -1;
    l->days[l->ndays++] = day;
    return 0;
}

/* ---- COPY ----------------------------------------------------------------- */

/* Appends s as a field of COPY's text format: NULL as \N, and backslash,
 * tab, newline and carriage return escaped. A byte that is not UTF-8 (a
 * client in LATIN1, say) becomes U+FFFD: the ledger database would refuse
 * the whole batch for it, again at every retry. */
static void copy_text(pgt_buf_t *b, const char *s)
{
    if (!s) {
        pgt_buf_add(b, "\\N", 2);
        return;
    }
    for (const char *p = s; *p; p++) {
        size_t n = pgt_utf8_len((const unsigned char *)p);
        if (n == 0) {
            pgt_buf_add(b, "\xEF\xBF\xBD", 3);
            continue;
        }
        if (n > 1) {
            pgt_buf_add(b, p, n);
            p += n - 1;
            continue;
        }
        const char *esc = *p == '\\'   ? "\\\\"
                          : *p == '\t' ? "\\t"
                          : *p == '\n' ? "\\n"
                          : *p == '\r' ? "\\r"
                                       : NULL;
        if (esc)
            pgt_buf_add(b, esc, 2);
        else
            pgt_buf_add(b, p, 1);
    }
}

static void copy_int(pgt_buf_t *b, int64_t v, bool null)
{
    if (null) {
        pgt_buf_add(b, "\\N", 2);
        return;
    }
    char num[24];
    int n = snprintf(num, sizeof(num), "%lld", (long long)v);
    pgt_buf_add(b, num, (size_t)n);
}

static void copy_double(pgt_buf_t *b, double v, bool null)
{
    if (null) {
        pgt_buf_add(b, "\\N", 2);
        return;
    }
    char num[32];
    int n = snprintf(num, sizeof(num), "%.17g", isfinite(v) ? v : 0);
    pgt_buf_add(b, num, (size_t)n);
}

/* Appends r as one line of LEDGER_WRITE_COLUMNS. */
static void copy_record(pgt_buf_t *b, const pgt_record_t *r)
{
    char sqlstate[6];
    snprintf(sqlstate, sizeof(sqlstate), "%s", r->sqlstate);
#define SEP pgt_buf_add(b, "\t", 1)
    copy_int(b, r->started_us, false), SEP;
    copy_int(b, r->finished_us, false), SEP;
    copy_int(b, (int64_t)r->session_id, false), SEP;
    copy_int(b, r->backend_pid, false), SEP;
    copy_text(b, r->user ? r->user : ""), SEP;
    copy_text(b, r->database ? r->database : ""), SEP;
    copy_text(b, r->application ? r->application : ""), SEP;
    copy_text(b, r->client_addr), SEP;
    copy_text(b, r->tags_json), SEP;
    copy_int(b, (int64_t)r->fingerprint, false), SEP;
    copy_text(b, r->normalized), SEP;
    copy_text(b, r->kind), SEP;
    copy_text(b, r->protocol), SEP;
    copy_double(b, r->est_planner_cost, r->est_planner_cost < 0), SEP;
    copy_int(b, r->est_cost_micro, r->est_cost_micro < 0), SEP;
    copy_double(b, r->compute_s, false), SEP;
    copy_int(b, r->rows, false), SEP;
    copy_int(b, r->bytes_out, false), SEP;
    copy_int(b, r->cost_micro, false), SEP;
    copy_text(b, pgt_query_status_name(r->status)), SEP;
    copy_text(b, sqlstate[0] ? sqlstate : NULL), SEP;
    copy_int(b, r->budget_id, r->budget_id <= 0), SEP;
    copy_int(b, r->instance, false), SEP;
    copy_int(b, r->seq, false), SEP;
    copy_int(b, r->day, false), SEP;
    copy_int(b, r->rule_id, r->rule_id <= 0), SEP;
    copy_text(b, r->relations), SEP;
    copy_int(b, (int64_t)r->constants, r->constants == 0), SEP;
    copy_int(b, r->approval_id, r->approval_id <= 0);
#undef SEP
    pgt_buf_add(b, "\n", 1);
}

/* Appends r's parts per relation as lines of pgt_stage_rel. */
static void copy_parts(pgt_buf_t *b, const pgt_record_t *r)
{
    ledger_rel_split_t s;
    if (!r->relations)
        return;
    ledger_rel_split(r->relations, r->compute_s, r->cost_micro, &s);
    for (size_t i = 0; i < s.n; i++) {
        const ledger_rel_part_t *p = &s.parts[i];
        copy_int(b, r->instance, false), pgt_buf_add(b, "\t", 1);
        copy_int(b, r->seq, false), pgt_buf_add(b, "\t", 1);
        copy_text(b, p->schema), pgt_buf_add(b, "\t", 1);
        copy_text(b, p->relation), pgt_buf_add(b, "\t", 1);
        copy_double(b, p->compute_s, false), pgt_buf_add(b, "\t", 1);
        copy_int(b, p->cost_micro, false);
        pgt_buf_add(b, "\n", 1);
    }
    ledger_rel_split_free(&s);
}

/* Sends the lines in b with one COPY of sql. Returns 0, or -1 with
 * l->error. */
static int copy_out(pgt_ledger_t *l, const char *sql, const pgt_buf_t *b)
{
    PGresult *res = PQexec(conn(l), sql);
    bool ok = PQresultStatus(res) == PGRES_COPY_IN;
    if (!ok)
        note_error(l, "copying", res);
    PQclear(res);
    if (!ok)
        return -1;
    for (size_t off = 0; ok && off < b->len; off += COPY_CHUNK) {
        size_t n = b->len - off < COPY_CHUNK ? b->len - off : COPY_CHUNK;
        ok = PQputCopyData(conn(l), b->s + off, (int)n) == 1;
    }
    if (PQputCopyEnd(conn(l), ok ? NULL : "pgtally could not send the batch") != 1)
        ok = false;
    while ((res = PQgetResult(conn(l))) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK && ok) {
            note_error(l, "copying", res);
            ok = false;
        }
        PQclear(res);
    }
    if (!ok && !l->error[0])
        note_error(l, "copying", NULL);
    return ok ? 0 : -1;
}

int ledger_pg_insert(pgt_ledger_t *l, pgt_record_t *const *recs, size_t n)
{
    if (!n)
        return 0;
    if (!l->staged && pgt_db_exec(l->db, "creating the staging table", stage_sql, l->error,
                                  sizeof(l->error)) != 0)
        return -1;
    l->staged = true;
    for (size_t i = 0; i < n; i++)
        if (ensure_partition(l, recs[i]->day) != 0)
            return -1;
    if (!l->rel_staged && pgt_db_exec(l->db, "creating the staging table", stage_rel_sql, l->error,
                                      sizeof(l->error)) != 0)
        return -1;
    l->rel_staged = true;
    pgt_buf_t b = {0}, parts = {0};
    for (size_t i = 0; i < n; i++) {
        copy_record(&b, recs[i]);
        copy_parts(&parts, recs[i]);
    }
    int rc = -1;
    l->error[0] = '\0';
    if (b.failed || parts.failed)
        snprintf(l->error, sizeof(l->error), "out of memory");
    else
        rc = copy_out(l, "COPY pgt_stage (" LEDGER_WRITE_COLUMNS ") FROM STDIN", &b);
    if (rc == 0 && parts.len)
        rc = copy_out(l, "COPY pgt_stage_rel FROM STDIN", &parts);
    pgt_buf_free(&b);
    pgt_buf_free(&parts);
    return rc;
}

int ledger_pg_fold(pgt_ledger_t *l)
{
    if (!l->staged)
        return 0;
    return pgt_db_run(l->db, "keeping the rollups", l->error, sizeof(l->error), NULL, NULL,
                      fold_sql, "i", l->rev + 1);
}

/* ---- Retention ------------------------------------------------------------ */

/* The walk over old partitions: the writer, and the partitions dropped. */
typedef struct drop_ctx {
    pgt_ledger_t *l; /* the writer */
    int dropped;     /* partitions dropped */
} drop_ctx_t;

/* Drops the partition the row names. */
static int drop_row(const pgt_db_row_t *r, void *arg)
{
    drop_ctx_t *c = arg;
    const char *name = pgt_db_text(r, 0);
    char *ident = PQescapeIdentifier(conn(c->l), name, strlen(name));
    if (!ident) {
        note_error(c->l, "dropping a partition", NULL);
        return -1;
    }
    /* Detaching concurrently never holds the writers of other instances
     * behind an exclusive lock on queries; then the table goes alone. */
    char sql[600];
    snprintf(sql, sizeof(sql), "ALTER TABLE queries DETACH PARTITION %s CONCURRENTLY", ident);
    if (pgt_db_exec(c->l->db, "detaching a partition", sql, c->l->error, sizeof(c->l->error)) !=
        0) {
        PQfreemem(ident);
        return -1;
    }
    snprintf(sql, sizeof(sql), "DROP TABLE %s", ident);
    PQfreemem(ident);
    if (pgt_db_exec(c->l->db, "dropping a partition", sql, c->l->error, sizeof(c->l->error)) != 0)
        return -1;
    c->dropped++;
    return 0;
}

int ledger_pg_delete_before(pgt_ledger_t *l, int32_t cutoff_day, int *deleted)
{
    static const char old_sql[] =
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent"
        " WHERE p.relname = 'queries' AND p.relnamespace = current_schema()::regnamespace"
        " AND c.relname < 'queries_' || to_char(DATE '1970-01-01' + CAST(?1 AS INTEGER),"
        " 'YYYYMMDD') ORDER BY 1";
    drop_ctx_t c = {.l = l};
    int rc = pgt_db_run(l->db, "finding old partitions", l->error, sizeof(l->error), drop_row, &c,
                        old_sql, "i", (int64_t)cutoff_day);
    if (rc == 0)
        rc = pgt_db_run(l->db, "deleting old rollups", l->error, sizeof(l->error), NULL, NULL,
                        "DELETE FROM rollups WHERE day < ?1", "i", (int64_t)cutoff_day);
    if (rc == 0)
        rc = pgt_db_run(l->db, "deleting old spend", l->error, sizeof(l->error), NULL, NULL,
                        "DELETE FROM spend WHERE day < ?1", "i", (int64_t)cutoff_day);
    if (rc == 0)
        rc = pgt_db_run(l->db, "deleting old relations", l->error, sizeof(l->error), NULL, NULL,
                        "DELETE FROM daily_relations WHERE day < ?1", "i", (int64_t)cutoff_day);
    /* A dropped partition is no longer known to exist. */
    ledger_pg_close(l);
    *deleted = c.dropped;
    return rc == 0 ? 0 : -1;
}
