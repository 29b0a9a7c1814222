/* The writer's SQLite half: records inserted with a prepared statement
 * (a replayed record is ignored by its unique (instance, seq)) and summed
 * per rollup key in memory as they go in, the sums added to the rollups,
 * spend and shapes before the transaction commits, and each record's
 * parts per relation to daily_relations; and retention's deletes. Summing
 * in C costs a tenth of reading the new rows back. */
#include "ledger_int.h"

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/text.h"

static const char insert_sql[] =
    "INSERT INTO queries (" LEDGER_WRITE_COLUMNS ")"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT DO NOTHING";

/* The upserts that add a transaction's sums to the rollups, spend and
 * shapes, one row of sums at a time. */
static const char *const fold_sql[3] = {
    ("INSERT INTO rollups VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
     " ON CONFLICT DO UPDATE SET statements = statements + excluded.statements,"
     " compute_s = compute_s + excluded.compute_s, rows = rows + excluded.rows,"
     " bytes_out = bytes_out + excluded.bytes_out, cost_micro = cost_micro + excluded.cost_micro,"
     " max_cost_micro = max(max_cost_micro, excluded.max_cost_micro), rev = excluded.rev"),
    ("INSERT INTO spend VALUES (?2, ?1, ?3, ?4, ?5, ?12, ?14) ON CONFLICT DO UPDATE SET"
     " cost_micro = cost_micro + excluded.cost_micro, rev = excluded.rev"),
    "INSERT INTO shapes VALUES (?6, ?15, ?16, ?1) ON CONFLICT DO NOTHING",
};

/* The upsert that adds one key's sums to daily_relations. */
static const char fold_rel_sql[] =
    "INSERT INTO daily_relations VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    " ON CONFLICT DO UPDATE SET queries = queries + excluded.queries,"
    " compute_s = compute_s + excluded.compute_s, cost_micro = cost_micro + excluded.cost_micro";

/* ---- Sums of a transaction ----------------------------------------------- */

/* The sums of one rollup key over the rows a transaction inserted. */
typedef struct sum {
    uint64_t hash;             /* of the key; 0: an empty slot */
    int32_t day;               /* key: local day */
    int64_t instance;          /* key */
    char *user;                /* key (owned) */
    char *database;            /* key (owned) */
    char *application;         /* key (owned) */
    uint64_t fingerprint;      /* key */
    pgt_query_status_t status; /* key */
    int64_t statements;        /* rows */
    double compute_s;          /* sums */
    int64_t rows;              /* of rows returned or affected */
    int64_t bytes_out;         /* of bytes sent */
    int64_t cost_micro;        /* of cost */
    int64_t max_cost_micro;    /* the most one row cost */
    char *normalized;          /* the first row's text, for shapes (owned) */
    char *kind;                /* its kind (owned) */
} sum_t;

/* An open-addressing table of sums. */
struct lite_sums {
    sum_t *slots;  /* nslots entries */
    size_t nslots; /* a power of two */
    size_t n;      /* slots used */
    bool failed;   /* out of memory: the transaction must not commit */
};

/* Adds a string and its NUL to the hash, so that keys of several strings
 * cannot run into each other. */
static uint64_t mix_str(uint64_t h, const char *s)
{
    return pgt_fnv1a(h, s ? s : "", s ? strlen(s) + 1 : 1);
}

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

static uint64_t key_hash(const pgt_record_t *r)
{
    uint64_t h = PGT_FNV_BASIS;
    h = pgt_fnv1a(h, &r->day, sizeof(r->day));
    h = pgt_fnv1a(h, &r->instance, sizeof(r->instance));
    h = pgt_fnv1a(h, &r->fingerprint, sizeof(r->fingerprint));
    h = pgt_fnv1a(h, &r->status, sizeof(r->status));
    h = mix_str(mix_str(mix_str(h, r->user), r->database), r->application);
    return h ? h : 1;
}

static bool key_equal(const sum_t *e, uint64_t h, const pgt_record_t *r)
{
    return e->hash == h && e->day == r->day && e->instance == r->instance &&
           e->fingerprint == r->fingerprint && e->status == r->status &&
           strcmp(e->user, or_empty(r->user)) == 0 &&
           strcmp(e->database, or_empty(r->database)) == 0 &&
           strcmp(e->application, or_empty(r->application)) == 0;
}

static void sum_free_strings(sum_t *e)
{
    free(e->user);
    free(e->database);
    free(e->application);
    free(e->normalized);
    free(e->kind);
}

/* Empties the table, keeping its slots. */
static void sums_clear(struct lite_sums *t)
{
    for (size_t i = 0; t && i < t->nslots; i++)
        if (t->slots[i].hash)
            sum_free_strings(&t->slots[i]);
    if (t && t->slots)
        memset(t->slots, 0, t->nslots * sizeof(*t->slots));
    if (t) {
        t->n = 0;
        t->failed = false;
    }
}

/* Doubles the table. Returns 0, or -1 when out of memory. */
static int sums_grow(struct lite_sums *t)
{
    size_t ns = t->nslots ? t->nslots * 2 : 256;
    sum_t *slots = calloc(ns, sizeof(*slots));
    if (!slots)
        return -1;
    for (size_t i = 0; i < t->nslots; i++) {
        if (!t->slots[i].hash)
            continue;
        size_t k = t->slots[i].hash & (ns - 1);
        while (slots[k].hash)
            k = (k + 1) & (ns - 1);
        slots[k] = t->slots[i];
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = ns;
    return 0;
}

/* Starts the sums of r's key at slot e. Returns 0, or -1 when out of memory. */
static int sum_start(sum_t *e, uint64_t h, const pgt_record_t *r)
{
    *e = (sum_t){.hash = h,
                 .day = r->day,
                 .instance = r->instance,
                 .fingerprint = r->fingerprint,
                 .status = r->status,
                 .user = strdup(or_empty(r->user)),
                 .database = strdup(or_empty(r->database)),
                 .application = strdup(or_empty(r->application)),
                 .normalized = r->normalized ? strdup(r->normalized) : NULL,
                 .kind = r->kind ? strdup(r->kind) : NULL};
    bool ok = e->user && e->database && e->application && (e->normalized || !r->normalized) &&
              (e->kind || !r->kind);
    return ok ? 0 : -1;
}

/* Adds an inserted record to the sums of its key. */
static void sums_add(struct lite_sums *t, const pgt_record_t *r)
{
    if (t->failed || ((t->n + 1) * 2 > t->nslots && sums_grow(t) != 0)) {
        t->failed = true;
        return;
    }
    uint64_t h = key_hash(r);
    size_t k = h & (t->nslots - 1);
    while (t->slots[k].hash && !key_equal(&t->slots[k], h, r))
        k = (k + 1) & (t->nslots - 1);
    sum_t *e = &t->slots[k];
    if (!e->hash) {
        t->n++;
        if (sum_start(e, h, r) != 0)
            t->failed = true;
    }
    double compute = isfinite(r->compute_s) ? r->compute_s : 0;
    e->statements++;
    e->compute_s += compute;
    e->rows += r->rows;
    e->bytes_out += r->bytes_out;
    e->cost_micro += r->cost_micro;
    if (r->cost_micro > e->max_cost_micro)
        e->max_cost_micro = r->cost_micro;
}

/* Binds the sums of e, at batch number rev, to an upsert of fold_sql. */
static void bind_sum(sqlite3_stmt *st, const sum_t *e, int64_t rev)
{
    sqlite3_bind_int(st, 1, e->day);
    sqlite3_bind_int64(st, 2, e->instance);
    sqlite3_bind_text(st, 3, e->user, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, e->database, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, e->application, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (int64_t)e->fingerprint);
    sqlite3_bind_text(st, 7, pgt_query_status_name(e->status), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, e->statements);
    sqlite3_bind_double(st, 9, e->compute_s);
    sqlite3_bind_int64(st, 10, e->rows);
    sqlite3_bind_int64(st, 11, e->bytes_out);
    sqlite3_bind_int64(st, 12, e->cost_micro);
    sqlite3_bind_int64(st, 13, e->max_cost_micro);
    sqlite3_bind_int64(st, 14, rev);
    if (e->normalized)
        sqlite3_bind_text(st, 15, e->normalized, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 15);
    if (e->kind)
        sqlite3_bind_text(st, 16, e->kind, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 16);
}

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
    bind_opt_int(st, 26, r->rule_id, 1);
    bind_text(st, 27, r->relations);
    if (r->constants)
        sqlite3_bind_int64(st, 28, (int64_t)r->constants);
    else
        sqlite3_bind_null(st, 28);
    bind_opt_int(st, 29, r->approval_id, 1);
}

/* Records an SQLite error of the writer connection in l->error. */
static void note_error(pgt_ledger_t *l, const char *doing)
{
    snprintf(l->error, sizeof(l->error), "%s: %s", doing, sqlite3_errmsg(pgt_db_handle(l->db)));
}

int ledger_lite_prepare(pgt_ledger_t *l)
{
    sqlite3 *db = pgt_db_handle(l->db);
    if (!l->sums && !(l->sums = calloc(1, sizeof(*l->sums)))) {
        snprintf(l->error, sizeof(l->error), "out of memory");
        return -1;
    }
    bool ok = sqlite3_prepare_v2(db, insert_sql, -1, &l->insert, NULL) == SQLITE_OK;
    for (int i = 0; ok && i < 3; i++)
        ok = sqlite3_prepare_v2(db, fold_sql[i], -1, &l->fold[i], NULL) == SQLITE_OK;
    ok = ok && sqlite3_prepare_v2(db, fold_rel_sql, -1, &l->fold_rel, NULL) == SQLITE_OK;
    if (!ok)
        note_error(l, "preparing the insert");
    return ok ? 0 : -1;
}

void ledger_lite_close(pgt_ledger_t *l)
{
    sqlite3_finalize(l->insert);
    l->insert = NULL;
    for (int i = 0; i < 3; i++) {
        sqlite3_finalize(l->fold[i]);
        l->fold[i] = NULL;
    }
    sqlite3_finalize(l->fold_rel);
    l->fold_rel = NULL;
    ledger_rel_sums_free(&l->rel_sums);
    sums_clear(l->sums);
    if (l->sums)
        free(l->sums->slots);
    free(l->sums);
    l->sums = NULL;
}

int ledger_lite_begin(pgt_ledger_t *l)
{
    sums_clear(l->sums);
    ledger_rel_sums_clear(&l->rel_sums);
    return pgt_db_begin(l->db, true, l->error, sizeof(l->error));
}

/* Adds an inserted record's parts to the sums per daily_relations key:
 * day and instance (their bytes), then database, user, schema and
 * relation, each ending with a NUL. */
static void rels_add(ledger_rel_sums_t *t, const pgt_record_t *r)
{
    ledger_rel_split_t s;
    if (!r->relations)
        return;
    if (ledger_rel_split(r->relations, r->compute_s, r->cost_micro, &s) == 0) {
        ledger_rel_split_free(&s);
        return;
    }
    const char *db = or_empty(r->database), *user = or_empty(r->user);
    size_t fixed = sizeof(r->day) + sizeof(r->instance) + strlen(db) + strlen(user) + 2;
    for (size_t i = 0; i < s.n; i++) {
        const ledger_rel_part_t *p = &s.parts[i];
        size_t ls = strlen(p->schema), lr = strlen(p->relation);
        char *key = malloc(fixed + ls + lr + 2);
        if (!key) {
            t->failed = true;
            break;
        }
        char *k = key;
        memcpy(k, &r->day, sizeof(r->day));
        k += sizeof(r->day);
        memcpy(k, &r->instance, sizeof(r->instance));
        k += sizeof(r->instance);
        const char *fields[] = {db, user, p->schema, p->relation};
        for (int f = 0; f < 4; f++) {
            size_t n = strlen(fields[f]) + 1;
            memcpy(k, fields[f], n);
            k += n;
        }
        ledger_rel_sums_add(t, key, (size_t)(k - key), 1, p->compute_s, p->cost_micro);
        free(key);
    }
    ledger_rel_split_free(&s);
}

/* Adds the sums of the records this transaction inserted to
 * daily_relations. */
static int fold_relations(pgt_ledger_t *l)
{
    ledger_rel_sums_t *t = &l->rel_sums;
    if (t->failed) {
        snprintf(l->error, sizeof(l->error), "keeping daily_relations: out of memory");
        return -1;
    }
    sqlite3_stmt *st = l->fold_rel;
    for (size_t i = 0; i < t->nslots; i++) {
        const ledger_rel_sum_t *e = &t->slots[i];
        if (!e->key)
            continue;
        int32_t day;
        int64_t instance;
        memcpy(&day, e->key, sizeof(day));
        memcpy(&instance, e->key + sizeof(day), sizeof(instance));
        size_t off = sizeof(day) + sizeof(instance);
        sqlite3_bind_int(st, 1, day);
        sqlite3_bind_int64(st, 2, instance);
        for (int f = 0; f < 4; f++)
            sqlite3_bind_text(st, 3 + f, ledger_rel_key_field(e, off, &off), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, e->queries);
        sqlite3_bind_double(st, 8, e->compute_s);
        sqlite3_bind_int64(st, 9, e->cost_micro);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            note_error(l, "keeping daily_relations");
            return -1;
        }
    }
    ledger_rel_sums_clear(t);
    return 0;
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
        /* A record already there (a replay) changes nothing. */
        if (sqlite3_changes(pgt_db_handle(l->db)) > 0) {
            sums_add(l->sums, recs[i]);
            rels_add(&l->rel_sums, recs[i]);
        }
    }
    return 0;
}

/* Adds the sums of the rows this transaction inserted to the rollups,
 * spend and shapes, as batch rev + 1. */
int ledger_lite_fold(pgt_ledger_t *l)
{
    struct lite_sums *t = l->sums;
    if (t->failed) {
        snprintf(l->error, sizeof(l->error), "keeping the rollups: out of memory");
        return -1;
    }
    for (size_t i = 0; i < t->nslots; i++) {
        const sum_t *e = &t->slots[i];
        if (!e->hash)
            continue;
        for (int k = 0; k < 3; k++) {
            if (k == 2 && (!e->fingerprint || !e->normalized))
                continue;
            bind_sum(l->fold[k], e, l->rev + 1);
            int rc = sqlite3_step(l->fold[k]);
            sqlite3_reset(l->fold[k]);
            if (rc != SQLITE_DONE) {
                note_error(l, "keeping the rollups");
                return -1;
            }
        }
    }
    sums_clear(t);
    return fold_relations(l);
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
    if (rc == 0 && n < limit)
        rc = pgt_db_run(l->db, "deleting old relations", l->error, sizeof(l->error), NULL, NULL,
                        "DELETE FROM daily_relations WHERE day < ?1", "i", (int64_t)cutoff_day);
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
