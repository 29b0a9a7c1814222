/* The ledger's writer, apart from its storage: records go through a
 * bounded queue to one writer thread, which writes them in batched
 * transactions and, while the database cannot be written, holds them in
 * memory and then in the spool file (ledger_spool.c) until it is back. */
#include "ledger_int.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "pgtally/journal.h"
#include "pgtally/log.h"
#include "pgtally/names.h"
#include "pgtally/period.h"

#define DEFAULT_QUEUE_CAPACITY 65536
#define DEFAULT_MEMORY_CAPACITY 100000
#define RETRY_INTERVAL_US 1000000LL        /* a failing database is tried every second */
#define RETENTION_INTERVAL_US 3600000000LL /* retention runs hourly */
#define RETENTION_RETRY_US 60000000LL      /* after a failed retention step */
#define RETENTION_CHUNK 5000               /* rows deleted per transaction */

/* ---- Names ------------------------------------------------------------ */

PGT_NAMES_DEFINE(PGT_QUERY_STATUS_MAP, pgt_query_status_t, pgt_query_status_name,
                 pgt_query_status_parse)
PGT_NAMES_DEFINE(PGT_LEDGER_ORDER_MAP, pgt_ledger_order_t, pgt_ledger_order_name,
                 pgt_ledger_order_parse)
PGT_NAMES_DEFINE(PGT_USAGE_BY_MAP, pgt_usage_by_t, pgt_usage_by_name, pgt_usage_by_parse)

/* ---- Records ---------------------------------------------------------- */

pgt_record_t *pgt_record_new(void)
{
    pgt_record_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->est_planner_cost = -1;
    r->est_cost_micro = -1;
    r->status = PGT_QUERY_OK;
    return r;
}

void pgt_record_free(pgt_record_t *r)
{
    if (!r)
        return;
    free(r->user);
    free(r->database);
    free(r->application);
    free(r->client_addr);
    free(r->tags_json);
    free(r->relations);
    free(r->normalized);
    free(r->kind);
    free(r->protocol);
    free(r);
}

/* ---- The record array and the queue ----------------------------------- */

/* Makes room for extra more records. Returns 0, or -1 when out of memory. */
static int recvec_reserve(recvec_t *v, size_t extra)
{
    if (v->len + extra <= v->cap)
        return 0;
    size_t cap = v->cap ? v->cap : 256;
    while (cap < v->len + extra)
        cap *= 2;
    pgt_record_t **items = realloc(v->items, cap * sizeof(*items));
    if (!items)
        return -1;
    v->items = items;
    v->cap = cap;
    return 0;
}

/* Moves every record of src to the end of dst. Returns 0, or -1 when out of
 * memory (then nothing moved). */
static int recvec_move(recvec_t *dst, recvec_t *src)
{
    if (recvec_reserve(dst, src->len) != 0)
        return -1;
    memcpy(dst->items + dst->len, src->items, src->len * sizeof(*src->items));
    dst->len += src->len;
    src->len = 0;
    return 0;
}

int ledger_recvec_push(recvec_t *v, pgt_record_t *r)
{
    if (recvec_reserve(v, 1) != 0)
        return -1;
    v->items[v->len++] = r;
    return 0;
}

int64_t ledger_next_seq(pgt_ledger_t *l)
{
    return pgt_ledger_reserve_seq(l, 1);
}

int64_t pgt_ledger_reserve_seq(pgt_ledger_t *l, int n)
{
    uv_mutex_lock(&l->mu);
    int64_t seq = l->next_seq + 1;
    l->next_seq += n > 0 ? n : 1;
    uv_mutex_unlock(&l->mu);
    return seq;
}

int64_t pgt_ledger_instance(const pgt_ledger_t *l)
{
    return l->instance;
}

void pgt_ledger_set_journal(pgt_ledger_t *l, struct pgt_journal *j)
{
    uv_mutex_lock(&l->mu);
    l->journal = j;
    uv_mutex_unlock(&l->mu);
}

const char *pgt_ledger_spool_path(const pgt_ledger_t *l)
{
    return l->spool_path;
}

void ledger_mark_durable(pgt_ledger_t *l, const recvec_t *v, bool durable)
{
    uint64_t end = 0;
    for (size_t i = 0; durable && i < v->len; i++)
        if (v->items[i]->journal_end > end)
            end = v->items[i]->journal_end;
    uv_mutex_lock(&l->mu);
    l->settled += v->len;
    struct pgt_journal *j = l->journal;
    bool wake = l->sync_target && l->settled >= l->sync_target;
    uv_mutex_unlock(&l->mu);
    if (j && end)
        pgt_journal_done(j, end);
    if (wake)
        uv_cond_broadcast(&l->synced);
}

void ledger_recvec_clear(recvec_t *v)
{
    for (size_t i = 0; i < v->len; i++)
        pgt_record_free(v->items[i]);
    v->len = 0;
}

static void recvec_dispose(recvec_t *v)
{
    ledger_recvec_clear(v);
    free(v->items);
    v->items = NULL;
    v->cap = 0;
}

/* The queue between submitters and the writer: a list of fixed-size chunks,
 * so adding a record never copies the queue (a growing array would, and
 * stall the event loop for milliseconds under a burst). */
#define CHUNK_RECORDS 1024

typedef struct chunk {
    struct chunk *next;                 /* the next, newer chunk */
    size_t len;                         /* slots used */
    pgt_record_t *items[CHUNK_RECORDS]; /* records, oldest first */
} chunk_t;

/* Adds r at the end. Returns 0, or -1 when out of memory. */
static int fifo_push(fifo_t *q, pgt_record_t *r)
{
    if (!q->tail || q->tail->len == CHUNK_RECORDS) {
        chunk_t *c = malloc(sizeof(*c));
        if (!c)
            return -1;
        c->next = NULL;
        c->len = 0;
        if (q->tail)
            q->tail->next = c;
        else
            q->head = c;
        q->tail = c;
    }
    q->tail->items[q->tail->len++] = r;
    q->len++;
    return 0;
}

/* Moves every record of q to the end of v and frees the chunks. Records
 * that do not fit (out of memory) stay in q. */
static void fifo_drain(fifo_t *q, recvec_t *v)
{
    while (q->head && recvec_reserve(v, q->head->len) == 0) {
        chunk_t *c = q->head;
        memcpy(v->items + v->len, c->items, c->len * sizeof(*c->items));
        v->len += c->len;
        q->len -= c->len;
        q->head = c->next;
        free(c);
    }
    if (!q->head)
        q->tail = NULL;
}

/* ---- The writer ------------------------------------------------------- */

static int64_t mono_us(void)
{
    return (int64_t)(uv_hrtime() / 1000);
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void set_failing(pgt_ledger_t *l, int v)
{
    __atomic_store_n(&l->failing, v, __ATOMIC_RELEASE);
}

static bool is_failing(const pgt_ledger_t *l)
{
    return __atomic_load_n(&l->failing, __ATOMIC_ACQUIRE) != 0;
}

bool pgt_ledger_refusing(const pgt_ledger_t *l)
{
    return l && l->on_failure == PGT_LEDGER_CLOSED && is_failing(l);
}

/* ---- The connection, whichever backend ---------------------------------- */

int ledger_conn_open(pgt_ledger_t *l, bool *fatal)
{
    pgt_ledger_where_t w = {l->path, l->schema};
    int version;
    l->db = ledger_schema_open(&w, true, l->busy_timeout_ms, true, &version, fatal, l->error,
                               sizeof(l->error));
    if (!l->db)
        return -1;
    if (l->backend == PGT_DB_SQLITE && ledger_lite_prepare(l) != 0) {
        ledger_conn_close(l, false);
        return -1;
    }
    return 0;
}

void ledger_conn_close(pgt_ledger_t *l, bool optimize)
{
    if (l->backend == PGT_DB_SQLITE) {
        ledger_lite_close(l);
        char ignored[8];
        if (l->db && optimize &&
            pgt_db_exec(l->db, "optimizing", "PRAGMA optimize", ignored, sizeof(ignored)) != 0)
            PGT_DEBUG("ledger_optimize_failed", "error=\"%s\"", pgt_db_errmsg(l->db));
    } else {
        ledger_pg_close(l);
    }
    pgt_db_close(l->db);
    l->db = NULL;
}

int ledger_conn_begin(pgt_ledger_t *l)
{
    l->nforeign = 0;
    if (l->backend == PGT_DB_SQLITE)
        return ledger_lite_begin(l);
    return pgt_db_begin(l->db, true, l->error, sizeof(l->error));
}

/* Notes the instances other than this one whose records (replayed from
 * their journal or spool) the transaction writes. Returns 0, or -1 when
 * out of memory. */
static int note_foreign(pgt_ledger_t *l, pgt_record_t *const *recs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int64_t id = recs[i]->instance;
        size_t k = 0;
        while (k < l->nforeign && l->foreign[k] != id)
            k++;
        if (id == l->instance || k < l->nforeign)
            continue;
        int64_t *f = realloc(l->foreign, (l->nforeign + 1) * sizeof(*f));
        if (!f) {
            snprintf(l->error, sizeof(l->error), "out of memory");
            return -1;
        }
        l->foreign = f;
        l->foreign[l->nforeign++] = id;
    }
    return 0;
}

int ledger_conn_insert(pgt_ledger_t *l, pgt_record_t *const *recs, size_t n)
{
    if (note_foreign(l, recs, n) != 0)
        return -1;
    if (l->backend == PGT_DB_SQLITE)
        return ledger_lite_insert(l, recs, n);
    return ledger_pg_insert(l, recs, n);
}

/* The spend of another instance's records that this transaction wrote
 * (replayed after that instance died) carries this instance's rev, which
 * means nothing to those who follow that instance: give its rows a rev
 * past its own last one, and move that, so that they read them. */
static int bump_foreign(pgt_ledger_t *l, int64_t id, int64_t now)
{
    int rc =
        pgt_db_run(l->db, "noting a replayed instance", l->error, sizeof(l->error), NULL, NULL,
                   "UPDATE instances SET rev = rev + 1, seen_at = ?2 WHERE id = ?1", "ii", id, now);
    if (rc == 0)
        rc = pgt_db_run(l->db, "noting a replayed instance", l->error, sizeof(l->error), NULL, NULL,
                        "INSERT INTO instances (id, name, started_at, seen_at, rev)"
                        " VALUES (?1, 'replayed', ?2, ?2, 1) ON CONFLICT (id) DO NOTHING",
                        "ii", id, now);
    if (rc == 0)
        rc = pgt_db_run(l->db, "noting a replayed instance", l->error, sizeof(l->error), NULL, NULL,
                        "UPDATE spend SET rev = (SELECT rev FROM instances WHERE id = ?1)"
                        " WHERE instance = ?1 AND rev = ?2",
                        "ii", id, l->rev + 1);
    return rc;
}

/* Folds what the transaction inserted into the rollups, and notes this
 * instance's new rev, before the commit. */
static int conn_fold(pgt_ledger_t *l)
{
    int rc = l->backend == PGT_DB_SQLITE ? ledger_lite_fold(l) : ledger_pg_fold(l);
    int64_t now = wall_us();
    if (rc == 0)
        rc = pgt_db_run(l->db, "noting the instance", l->error, sizeof(l->error), NULL, NULL,
                        "INSERT INTO instances (id, name, started_at, seen_at, rev)"
                        " VALUES (?1, ?2, ?3, ?3, ?4) ON CONFLICT (id) DO UPDATE SET"
                        " seen_at = excluded.seen_at, rev = excluded.rev",
                        "itii", l->instance, l->instance_name, now, l->rev + 1);
    for (size_t i = 0; rc == 0 && i < l->nforeign; i++)
        rc = bump_foreign(l, l->foreign[i], now);
    return rc;
}

int ledger_conn_end(pgt_ledger_t *l, int rc)
{
    bool folded = rc == 0;
    if (rc == 0)
        rc = conn_fold(l);
    char err[sizeof(l->error)];
    if (pgt_db_finish(l->db, rc, err, sizeof(err)) != 0 && rc == 0) {
        snprintf(l->error, sizeof(l->error), "%s", err);
        rc = -1;
    }
    /* A rev is used once even when the commit's outcome is unknown (the
     * connection broke during COMMIT): others may have seen it. */
    if (folded)
        l->rev++;
    return rc;
}

int ledger_conn_delete_before(pgt_ledger_t *l, int32_t cutoff_day, int limit, int *deleted)
{
    if (l->backend == PGT_DB_SQLITE)
        return ledger_lite_delete_before(l, cutoff_day, limit, deleted);
    return ledger_pg_delete_before(l, cutoff_day, deleted);
}

/* Writes v in one transaction. Returns 0, or -1 with l->error set. */
static int write_records(pgt_ledger_t *l, const recvec_t *v)
{
    int rc = ledger_conn_begin(l);
    if (rc == 0)
        rc = ledger_conn_insert(l, v->items, v->len);
    return ledger_conn_end(l, rc);
}

/* Enters (or stays in) the failing state: the connection is dropped so the
 * next attempt reopens the file, which may have been fixed meanwhile. */
static void writer_fail(pgt_ledger_t *l)
{
    char shown[512];
    pgt_db_describe(l->path, shown, sizeof(shown));
    if (!is_failing(l))
        PGT_WARN("ledger_write_failed",
                 "error=\"%s\" ledger=\"%s\" on_failure=%s spool=\"%s\" hint=\"%s\"", l->error,
                 shown, l->on_failure == PGT_LEDGER_CLOSED ? "closed" : "open", l->spool_path,
                 l->on_failure == PGT_LEDGER_CLOSED
                     ? "statements are refused until the ledger can be written; check that it "
                       "is up, writable and not full"
                     : "records wait in memory, then in the spool, and are written once when "
                       "the ledger is back; check that it is up, writable and not full");
    ledger_conn_close(l, false);
    set_failing(l, 1);
    l->next_retry_us = mono_us() + RETRY_INTERVAL_US;
}

/* ---- The writer thread ------------------------------------------------ */

/* Records must wait: the database is down, or older records wait first. */
static bool has_backlog(const pgt_ledger_t *l)
{
    return !l->db || l->held.len > 0 || l->spool_has_data;
}

/* Copies the writer's counters into the published stats. */
static void publish_stats(pgt_ledger_t *l)
{
    uv_mutex_lock(&l->mu);
    l->stats.written = l->wstats.written;
    l->stats.spooled = l->wstats.spooled;
    l->stats.replayed = l->wstats.replayed;
    l->stats.batches = l->wstats.batches;
    l->stats.pending = l->held.len + l->spool_records;
    uv_mutex_unlock(&l->mu);
}

/* Writes the spool, then the records held in memory, in one transaction,
 * so a failure leaves both to try again and nothing is written twice.
 * Returns 0 or -1. */
static int recover(pgt_ledger_t *l)
{
    bool fatal;
    if (!l->db && ledger_conn_open(l, &fatal) != 0) {
        l->next_retry_us = mono_us() + RETRY_INTERVAL_US;
        return -1;
    }
    uint64_t from_spool = 0;
    int rc = ledger_conn_begin(l);
    if (rc == 0 && l->spool_has_data)
        rc = ledger_spool_replay(l, &from_spool);
    if (rc == 0)
        rc = ledger_conn_insert(l, l->held.items, l->held.len);
    if (ledger_conn_end(l, rc) != 0) {
        writer_fail(l);
        return -1;
    }
    if (l->spool_has_data && truncate(l->spool_path, 0) != 0 && errno != ENOENT)
        PGT_ERROR("ledger_spool_not_truncated",
                  "path=\"%s\" error=\"%s\" hint=\"remove it by hand or its records are "
                  "written twice\"",
                  l->spool_path, strerror(errno));
    uint64_t n = from_spool + l->held.len;
    ledger_mark_durable(l, &l->held, true);
    ledger_recvec_clear(&l->held);
    l->spool_has_data = false;
    l->spool_records = 0;
    l->wstats.written += n;
    l->wstats.replayed += n;
    l->wstats.batches++;
    if (is_failing(l) || n)
        PGT_INFO("ledger_recovered", "replayed=%llu from_spool=%llu", (unsigned long long)n,
                 (unsigned long long)from_spool);
    set_failing(l, 0);
    return 0;
}

/* Keeps the batch in memory behind older records; past memory_capacity,
 * everything held goes to the spool file. */
static void hold_batch(pgt_ledger_t *l)
{
    if (recvec_move(&l->held, &l->batch) != 0) {
        /* Out of memory: straight to the spool, or lost as a last resort. */
        if (ledger_spool_out(l, &l->batch) != 0) {
            PGT_ERROR("ledger_records_lost", "count=%zu error=\"%s\"", l->batch.len, l->error);
            ledger_mark_durable(l, &l->batch, false);
            ledger_recvec_clear(&l->batch);
        }
    }
    if (l->held.len > l->memory_capacity)
        ledger_spool_held(l);
}

/* Gives the batch's new records their local day, once: a record replayed
 * from the spool keeps the day it was given. */
static void stamp_days(pgt_ledger_t *l)
{
    int64_t from = 0, to = 0;
    int32_t day = 0;
    for (size_t i = 0; i < l->batch.len; i++) {
        pgt_record_t *r = l->batch.items[i];
        if (r->started_us < from || r->started_us >= to) {
            day = pgt_local_day(r->started_us);
            from = pgt_local_day_start_us(day);
            to = pgt_local_day_start_us(day + 1);
        }
        r->day = day;
    }
}

static void handle_batch(pgt_ledger_t *l)
{
    if (!l->batch.len)
        return;
    stamp_days(l);
    if (!has_backlog(l)) {
        if (write_records(l, &l->batch) == 0) {
            l->wstats.written += l->batch.len;
            l->wstats.batches++;
            ledger_mark_durable(l, &l->batch, true);
            ledger_recvec_clear(&l->batch);
            return;
        }
        writer_fail(l);
    }
    hold_batch(l);
}

/* Deletes one chunk of rows older than the retention period. */
static void retention_step(pgt_ledger_t *l)
{
    int deleted = 0;
    int32_t cutoff_day = pgt_local_day(wall_us()) - l->retention_days;
    int rc = ledger_conn_delete_before(l, cutoff_day, RETENTION_CHUNK, &deleted);
    int64_t now = mono_us();
    if (rc != 0) {
        PGT_WARN("ledger_retention_failed", "error=\"%s\"", l->error);
        l->next_retention_us = now + RETENTION_RETRY_US;
        return;
    }
    l->retention_deleted += (uint64_t)deleted;
    if (l->backend == PGT_DB_SQLITE && deleted >= RETENTION_CHUNK)
        return; /* more to delete: the next loop turn goes on */
    if (l->retention_deleted)
        PGT_INFO("ledger_retention", "deleted=%llu retention_days=%d",
                 (unsigned long long)l->retention_deleted, l->retention_days);
    l->retention_deleted = 0;
    l->next_retention_us = now + RETENTION_INTERVAL_US;
}

/* When the writer must wake up without new records (monotonic µs). */
static int64_t next_due(const pgt_ledger_t *l)
{
    if (has_backlog(l))
        return l->next_retry_us;
    if (l->retention_days > 0)
        return l->next_retention_us;
    return INT64_MAX;
}

static void run_due_work(pgt_ledger_t *l)
{
    if (mono_us() < next_due(l))
        return;
    if (has_backlog(l))
        (void)recover(l);
    else if (l->retention_days > 0)
        retention_step(l);
}

/* Waits for records or due work, then takes everything queued into
 * l->batch. Returns whether the ledger is closing. */
static bool take_batch(pgt_ledger_t *l)
{
    uv_mutex_lock(&l->mu);
    while (!l->queue.len && !l->stopping) {
        int64_t wait = next_due(l) - mono_us();
        if (wait <= 0)
            break;
        if (wait > RETENTION_INTERVAL_US)
            wait = RETENTION_INTERVAL_US;
        l->writer_idle = true;
        (void)uv_cond_timedwait(&l->wake, &l->mu, (uint64_t)wait * 1000);
        l->writer_idle = false;
    }
    /* Take the chunks under the lock; copy them out after. */
    fifo_t q = l->queue;
    /* One warning per episode of overload, not per batch. */
    if (q.len < l->queue_capacity)
        l->queue_full = false;
    l->queue = (fifo_t){0};
    bool stopping = l->stopping;
    uv_mutex_unlock(&l->mu);
    fifo_drain(&q, &l->batch);
    if (q.len) {
        /* Out of memory for the batch: give the rest back, in front. */
        uv_mutex_lock(&l->mu);
        q.tail->next = l->queue.head;
        l->queue.head = q.head;
        if (!l->queue.tail)
            l->queue.tail = q.tail;
        l->queue.len += q.len;
        uv_mutex_unlock(&l->mu);
    }
    return stopping;
}

/* On close: one last attempt at the database, then the spool. */
static void shutdown_flush(pgt_ledger_t *l)
{
    if (has_backlog(l))
        (void)recover(l);
    if (l->held.len)
        ledger_spool_held(l);
    if (l->held.len) {
        PGT_ERROR("ledger_records_lost", "count=%zu error=\"%s\"", l->held.len, l->error);
        ledger_mark_durable(l, &l->held, false);
        ledger_recvec_clear(&l->held);
    }
    publish_stats(l);
    ledger_conn_close(l, true);
}

/* Whether a pgt_ledger_sync waits for records. */
static bool sync_waiting(pgt_ledger_t *l)
{
    uv_mutex_lock(&l->mu);
    bool waiting = l->sync_target && l->settled < l->sync_target;
    uv_mutex_unlock(&l->mu);
    return waiting;
}

static void writer_main(void *arg)
{
    pgt_ledger_t *l = arg;
    /* Named for top -H, perf and bench/compare's CPU account. */
    pthread_setname_np(pthread_self(), "pgt-ledger");
    for (;;) {
        bool stopping = take_batch(l);
        bool had_records = l->batch.len > 0;
        handle_batch(l);
        /* Records held in memory are not durable: a sync spools them. */
        if (l->held.len && sync_waiting(l))
            ledger_spool_held(l);
        if (stopping && !had_records)
            break;
        if (!stopping)
            run_due_work(l);
        publish_stats(l);
    }
    shutdown_flush(l);
}

/* ---- Opening and closing ---------------------------------------------- */

static void ledger_free(pgt_ledger_t *l)
{
    fifo_drain(&l->queue, &l->batch);
    recvec_dispose(&l->batch);
    recvec_dispose(&l->held);
    uv_cond_destroy(&l->wake);
    uv_cond_destroy(&l->synced);
    uv_mutex_destroy(&l->mu);
    free(l->path);
    free(l->schema);
    free(l->instance_name);
    free(l->foreign);
    free(l->spool_path);
    free(l);
}

static pgt_ledger_t *ledger_alloc(const pgt_ledger_opts_t *o)
{
    pgt_ledger_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    if (uv_mutex_init(&l->mu) != 0) {
        free(l);
        return NULL;
    }
    if (uv_cond_init(&l->wake) != 0) {
        uv_mutex_destroy(&l->mu);
        free(l);
        return NULL;
    }
    if (uv_cond_init(&l->synced) != 0) {
        uv_cond_destroy(&l->wake);
        uv_mutex_destroy(&l->mu);
        free(l);
        return NULL;
    }
    l->path = strdup(o->where.ledger);
    l->backend = pgt_db_backend_of(o->where.ledger);
    l->schema = o->where.schema ? strdup(o->where.schema) : NULL;
    l->instance_name = strdup(o->instance_name ? o->instance_name : "");
    if (o->spool_path)
        l->spool_path = strdup(o->spool_path);
    else if (l->path && l->backend == PGT_DB_SQLITE &&
             asprintf(&l->spool_path, "%s.spool", o->where.ledger) < 0)
        l->spool_path = NULL;
    if (!l->path || !l->spool_path || !l->instance_name || (o->where.schema && !l->schema)) {
        ledger_free(l);
        return NULL;
    }
    l->queue_capacity = o->queue_capacity ? o->queue_capacity : DEFAULT_QUEUE_CAPACITY;
    l->memory_capacity = o->memory_capacity ? o->memory_capacity : DEFAULT_MEMORY_CAPACITY;
    l->retention_days = o->retention_days > 0 ? o->retention_days : 0;
    l->busy_timeout_ms = o->busy_timeout_ms > 0 ? o->busy_timeout_ms : LEDGER_BUSY_TIMEOUT_MS;
    /* Record ids are unique per instance run: without one given, make one
     * from the time and the process. */
    l->instance = o->instance ? o->instance
                              : (int64_t)((((uint64_t)wall_us() << 20) ^ (uint64_t)getpid()) >> 1);
    l->on_failure = o->on_failure;
    return l;
}

pgt_ledger_t *pgt_ledger_open(const pgt_ledger_opts_t *opts, char *err, size_t errlen)
{
    if (!opts || !opts->where.ledger || !opts->where.ledger[0]) {
        snprintf(err, errlen, "no ledger given");
        return NULL;
    }
    if (pgt_db_backend_of(opts->where.ledger) == PGT_DB_POSTGRESQL && !opts->spool_path) {
        snprintf(err, errlen, "a PostgreSQL ledger needs a spool file");
        return NULL;
    }
    pgt_ledger_t *l = ledger_alloc(opts);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    bool fatal = false;
    if (ledger_conn_open(l, &fatal) != 0) {
        /* A file that may come back (permissions, a lock, a full disk) is
         * retried while records spool; one that never will is an error. */
        if (fatal || !ledger_spool_writable(l)) {
            snprintf(err, errlen, "%s", l->error);
            ledger_free(l);
            return NULL;
        }
        writer_fail(l);
    }
    ledger_spool_scan(l);
    if (uv_thread_create(&l->thread, writer_main, l) != 0) {
        snprintf(err, errlen, "cannot start the writer thread");
        ledger_conn_close(l, false);
        ledger_free(l);
        return NULL;
    }
    return l;
}

void pgt_ledger_submit_many(pgt_ledger_t *l, pgt_record_t **rs, size_t n)
{
    size_t lost = 0;
    uv_mutex_lock(&l->mu);
    bool full = false;
    for (size_t i = 0; i < n; i++) {
        pgt_record_t *r = rs[i];
        if (!r)
            continue;
        l->stats.submitted++;
        if (r->seq <= 0) {
            r->instance = l->instance;
            r->seq = ++l->next_seq;
        }
        bool over = l->queue.len >= l->queue_capacity;
        l->stats.overflowed += over;
        full |= over;
        if (fifo_push(&l->queue, r) != 0) {
            pgt_record_free(r);
            lost++;
        }
    }
    bool log_full = full && !l->queue_full;
    l->queue_full |= full;
    /* One wake-up for the whole batch: the writer then commits it in one
     * transaction rather than a transaction for its first record. */
    bool wake = l->writer_idle;
    uv_mutex_unlock(&l->mu);
    if (wake)
        uv_cond_signal(&l->wake);
    if (log_full)
        PGT_WARN("ledger_queue_full", "capacity=%zu hint=\"records are kept in memory\"",
                 l->queue_capacity);
    if (lost)
        PGT_ERROR("ledger_records_lost", "count=%zu error=\"out of memory\"", lost);
}

void pgt_ledger_submit(pgt_ledger_t *l, pgt_record_t *r)
{
    pgt_ledger_submit_many(l, &r, 1);
}

int pgt_ledger_sync(pgt_ledger_t *l, int timeout_ms)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
    uv_mutex_lock(&l->mu);
    l->sync_target = l->stats.submitted;
    bool wake = l->writer_idle;
    int rc = 0;
    if (wake)
        uv_cond_signal(&l->wake);
    while (l->settled < l->sync_target && rc == 0) {
        uint64_t now = uv_hrtime();
        if (now >= deadline) {
            rc = -1;
            break;
        }
        /* The writer wakes at least every retry interval while it fails. */
        (void)uv_cond_timedwait(&l->synced, &l->mu, deadline - now);
    }
    l->sync_target = 0;
    uv_mutex_unlock(&l->mu);
    return rc;
}

void pgt_ledger_stats(pgt_ledger_t *l, pgt_ledger_stats_t *out)
{
    uv_mutex_lock(&l->mu);
    *out = l->stats;
    out->queued = l->queue.len;
    uv_mutex_unlock(&l->mu);
    out->failing = is_failing(l);
}

void pgt_ledger_close(pgt_ledger_t *l)
{
    if (!l)
        return;
    uv_mutex_lock(&l->mu);
    l->stopping = true;
    uv_mutex_unlock(&l->mu);
    uv_cond_signal(&l->wake);
    uv_thread_join(&l->thread);
    ledger_free(l);
}
