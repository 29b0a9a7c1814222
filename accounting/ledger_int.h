/* Internals shared by the files of the ledger, and by nothing else: its
 * state, the record array, and the calls between the backend-neutral writer
 * (ledger.c, ledger_spool.c) and its storage (ledger_sqlite.c for SQLite,
 * ledger_pg.c for PostgreSQL, ledger_schema.c for the schema of both). */
#ifndef PGTALLY_LEDGER_INT_H
#define PGTALLY_LEDGER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "pgtally/ledger.h"

#define LEDGER_BUSY_TIMEOUT_MS 2000 /* default wait for another writer's lock */

/* The columns of a record, in the order of ledger_row_to_record; the
 * writers add budget_id, instance, seq, day, rule_id and relations (which
 * readers leave out: ledgers of older schemas have no such columns). */
#define LEDGER_RECORD_COLUMNS                                                                      \
    "started_at, finished_at, session_id, backend_pid, \"user\", database, application, "          \
    "client_addr, tags, fingerprint, normalized, kind, protocol, est_planner_cost, "               \
    "est_cost_micro, compute_s, rows, bytes_out, cost_micro, status, sqlstate"
#define LEDGER_WRITE_COLUMNS                                                                       \
    LEDGER_RECORD_COLUMNS                                                                          \
    ", budget_id, instance, seq, day, rule_id, relations, constants, approval_id"

/* Relations one record's cost is split across, at most (more are left
 * out of the split; the plan and the parse tree give at most 16). */
#define LEDGER_REL_MAX 64

/* One relation's part of a record. */
typedef struct ledger_rel_part {
    const char *schema;   /* "" when the statement did not say; held by the split */
    const char *relation; /* held by the split */
    double share;         /* of the record, scaled so that the parts' sum to 1 */
    double compute_s;     /* the record's compute_s times share */
    int64_t cost_micro;   /* its part of the cost: the parts add up to the record's */
} ledger_rel_part_t;

/* A record split across its relations. */
typedef struct ledger_rel_split {
    void *doc;                               /* the parsed relations (a json_t), owned */
    size_t n;                                /* parts */
    ledger_rel_part_t parts[LEDGER_REL_MAX]; /* one per relation, in the record's order */
} ledger_rel_split_t;

/* One key's sums (ledger_relations.c). */
typedef struct ledger_rel_sum {
    uint64_t hash;      /* of the key */
    char *key;          /* the key's bytes, its strings NUL-terminated (owned); NULL: empty */
    size_t klen;        /* bytes in key */
    int64_t queries;    /* records */
    double compute_s;   /* their parts of compute */
    int64_t cost_micro; /* their parts of cost */
} ledger_rel_sum_t;

/* An open-addressing table of sums by key. */
typedef struct ledger_rel_sums {
    ledger_rel_sum_t *slots; /* nslots entries */
    size_t nslots;           /* a power of two, or 0 */
    size_t n;                /* slots used */
    bool failed;             /* out of memory: the sums are not whole */
} ledger_rel_sums_t;

/* A growable array of records, oldest first. */
typedef struct recvec {
    pgt_record_t **items; /* the records */
    size_t len;           /* records held */
    size_t cap;           /* slots allocated */
} recvec_t;

/* The queue between submitters and the writer, a list of chunks (ledger.c). */
typedef struct fifo {
    struct chunk *head; /* oldest chunk, or NULL */
    struct chunk *tail; /* newest chunk, where records are added */
    size_t len;         /* records queued */
} fifo_t;

struct pgt_ledger {
    char *path;                         /* the SQLite file, or the PostgreSQL URI or conninfo */
    char *schema;                       /* PostgreSQL schema, or NULL */
    char *instance_name;                /* this instance's name, for people */
    pgt_db_backend_t backend;           /* where path points */
    char *spool_path;                   /* spool file, JSON lines */
    size_t queue_capacity;              /* records queued before they count as overflow */
    size_t memory_capacity;             /* records held in memory while failing */
    int retention_days;                 /* rows older than this are deleted; 0 keeps all */
    int busy_timeout_ms;                /* SQLite busy timeout */
    int64_t instance;                   /* written with each record */
    pgt_ledger_on_failure_t on_failure; /* whether to refuse while failing */
    int failing;                        /* 1 while writes fail; atomic, read lock-free */
    uv_thread_t thread;                 /* the writer thread */
    uv_mutex_t mu;                      /* guards the fields down to `stats` */
    uv_cond_t wake;                     /* signals the writer */
    fifo_t queue;                       /* records handed in; past queue_capacity they
                                           are the overflow, counted and kept */
    bool queue_full;                    /* overflow was logged in this episode */
    bool writer_idle;                   /* the writer waits on `wake` */
    bool stopping;                      /* pgt_ledger_close was called */
    pgt_ledger_stats_t stats;           /* published counters */
    int64_t next_seq;                   /* the last seq handed out */
    uint64_t settled;                   /* records made durable or lost, in submit order */
    uint64_t sync_target;               /* pgt_ledger_sync waits for settled to reach it */
    uv_cond_t synced;                   /* signals pgt_ledger_sync */
    struct pgt_journal *journal;        /* whose done mark the writer moves, or NULL */
    /* The fields below belong to the writer thread; ledger.c only tests
     * db, the backends own the rest of their part. */
    pgt_db_t *db;                  /* writer connection; NULL while it fails */
    struct sqlite3_stmt *insert;   /* SQLite: prepared insert of a record, reused */
    struct sqlite3_stmt *fold[3];  /* SQLite: prepared upserts of rollups, spend and shapes */
    struct lite_sums *sums;        /* SQLite: what this transaction inserted, summed */
    struct sqlite3_stmt *fold_rel; /* SQLite: prepared upsert of daily_relations */
    ledger_rel_sums_t rel_sums;    /* SQLite: the inserted rows' parts per daily_relations key */
    bool rel_staged;               /* PostgreSQL: the relations' staging table exists on db */
    bool staged;                   /* PostgreSQL: the staging table exists on db */
    int32_t *days;                 /* PostgreSQL: days known to have a partition */
    size_t ndays;                  /* entries in days */
    int64_t rev;                   /* batches committed by this instance */
    int64_t *foreign;              /* other instances whose records this transaction writes */
    size_t nforeign;               /* entries in foreign */
    recvec_t batch;                /* records taken from the queue */
    recvec_t held;                 /* records waiting in memory while failing, oldest first */
    bool spool_has_data;           /* the spool file holds records to replay */
    bool spool_failing;            /* the last spool write failed (logged once) */
    uint64_t spool_records;        /* records in the spool file */
    pgt_ledger_stats_t wstats;     /* written, spooled, replayed, batches, not yet published */
    int64_t next_retry_us;         /* monotonic time of the next recovery attempt */
    int64_t next_retention_us;     /* monotonic time of the next retention step */
    uint64_t retention_deleted;    /* rows deleted by the current retention pass */
    char error[512];               /* the last error, for logs and pgt_ledger_open */
};

/* ---- ledger.c ---------------------------------------------------------- */

/* Frees the records of v and keeps the array. */
void ledger_recvec_clear(recvec_t *v);

/* Adds r at the end of v. Returns 0, or -1 when out of memory. */
int ledger_recvec_push(recvec_t *v, pgt_record_t *r) __attribute__((warn_unused_result));

/* Returns a new sequence number of this instance (any thread). */
int64_t ledger_next_seq(pgt_ledger_t *l);

/* On the writer: the records of v are durable (committed or spooled), or
 * settled for good (lost, logged; durable false): wakes a pgt_ledger_sync
 * waiting for them, and moves the journal's done mark past durable ones. */
void ledger_mark_durable(pgt_ledger_t *l, const recvec_t *v, bool durable);

/* ---- ledger_spool.c: the spool file, on the writer thread -------------- */

/* Appends v to the spool file, counts its records there and frees them.
 * Returns 0, or -1 with l->error set (then v is kept). */
int ledger_spool_out(pgt_ledger_t *l, recvec_t *v) __attribute__((warn_unused_result));

/* Moves the records held in memory (l->held) to the spool file; logs a
 * failure once, and the records then stay held. */
void ledger_spool_held(pgt_ledger_t *l);

/* Inserts every record of the spool file inside the transaction of
 * ledger_conn_begin and adds their number to *count. Damaged lines are
 * skipped and logged. Returns 0, or -1 with l->error set. */
int ledger_spool_replay(pgt_ledger_t *l, uint64_t *count) __attribute__((warn_unused_result));

/* Counts the records in a spool left by an earlier run. */
void ledger_spool_scan(pgt_ledger_t *l);

/* Whether the spool file can be created or appended to; when not, appends
 * the cause to l->error. */
bool ledger_spool_writable(pgt_ledger_t *l);

/* ---- ledger_schema.c ------------------------------------------------------ */

/* Opens the ledger at w (see pgt_ledger_db_open) with SQLite's busy timeout
 * busy_ms, and nomutex for a connection of one thread. *fatal says the
 * database can never work (not a database, a newer schema). */
pgt_db_t *ledger_schema_open(const pgt_ledger_where_t *w, bool writable, int busy_ms, bool nomutex,
                             int *version, bool *fatal, char *err, size_t errlen);

/* Sets *v to the schema version of the ledger db (0 for an empty
 * database). Returns 0, or -1 with the cause in err. */
int ledger_schema_version_of(pgt_db_t *db, int *v, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* ---- ledger_sqlite.c: the writer's connection -------------------------- */

/* Opens, migrates and prepares the writer connection (l->db). Returns 0,
 * or -1 with l->error set; *fatal says the ledger can never work (not a
 * database, newer schema). */
int ledger_conn_open(pgt_ledger_t *l, bool *fatal) __attribute__((warn_unused_result));

/* Closes the writer connection; optimize refreshes the planner's
 * statistics, as SQLite advises before closing (not after a failure, when
 * it would wait on the same lock again). */
void ledger_conn_close(pgt_ledger_t *l, bool optimize);

/* Begins a write transaction on the writer connection. Returns 0, or -1
 * with l->error set. */
int ledger_conn_begin(pgt_ledger_t *l) __attribute__((warn_unused_result));

/* Inserts n records, inside the transaction of ledger_conn_begin; the
 * records stay the caller's. Returns 0, or -1 with l->error set. */
int ledger_conn_insert(pgt_ledger_t *l, pgt_record_t *const *recs, size_t n)
    __attribute__((warn_unused_result));

/* Ends the transaction of ledger_conn_begin: commits it when rc, the
 * result of the work done in it, is 0; otherwise, or when the commit
 * fails, rolls it back. Returns 0, or -1 with l->error set. */
int ledger_conn_end(pgt_ledger_t *l, int rc) __attribute__((warn_unused_result));

/* Deletes at most limit rows (SQLite) or the partitions (PostgreSQL) of
 * days before cutoff_day, with their rollups, and sets *deleted to the rows
 * or partitions gone. Returns 0, or -1 with the cause in l->error. */
int ledger_conn_delete_before(pgt_ledger_t *l, int32_t cutoff_day, int limit, int *deleted)
    __attribute__((warn_unused_result));

/* ---- ledger_sqlite.c, ledger_pg.c: each backend's half of the above ---- */

int ledger_lite_prepare(pgt_ledger_t *l) __attribute__((warn_unused_result));
void ledger_lite_close(pgt_ledger_t *l);
int ledger_lite_begin(pgt_ledger_t *l) __attribute__((warn_unused_result));
int ledger_lite_insert(pgt_ledger_t *l, pgt_record_t *const *recs, size_t n)
    __attribute__((warn_unused_result));
int ledger_lite_fold(pgt_ledger_t *l) __attribute__((warn_unused_result));
int ledger_lite_delete_before(pgt_ledger_t *l, int32_t cutoff_day, int limit, int *deleted)
    __attribute__((warn_unused_result));

void ledger_pg_close(pgt_ledger_t *l);
int ledger_pg_insert(pgt_ledger_t *l, pgt_record_t *const *recs, size_t n)
    __attribute__((warn_unused_result));
int ledger_pg_fold(pgt_ledger_t *l) __attribute__((warn_unused_result));
int ledger_pg_delete_before(pgt_ledger_t *l, int32_t cutoff_day, int *deleted)
    __attribute__((warn_unused_result));

/* ---- ledger_relations.c ----------------------------------------------------- */

/* Splits a record of compute_s and cost_micro across the relations of
 * json (a record's relations, or NULL): each part gets its share of the
 * compute, and of the cost cut at the running sum of the shares so that
 * the parts add up to cost_micro exactly. Shares are scaled to sum to 1
 * (evenly when they are all 0); a relation named twice is one part;
 * entries that are not [string, string, number] are skipped. Returns the
 * number of parts (0: none, or json does not parse). Free out with
 * ledger_rel_split_free (also after 0). */
int ledger_rel_split(const char *json, double compute_s, int64_t cost_micro,
                     ledger_rel_split_t *out);
void ledger_rel_split_free(ledger_rel_split_t *s);

/* Adds queries, compute_s and cost_micro to the sums of key[0..klen),
 * whose strings each end with a NUL. Out of memory sets t->failed. */
void ledger_rel_sums_add(ledger_rel_sums_t *t, const char *key, size_t klen, int64_t queries,
                         double compute_s, int64_t cost_micro);

/* Empties t, keeping its slots; ledger_rel_sums_free also frees them. */
void ledger_rel_sums_clear(ledger_rel_sums_t *t);
void ledger_rel_sums_free(ledger_rel_sums_t *t);

/* The string of e's key at offset off ("" past the end); *next is set to
 * the offset after it. */
const char *ledger_rel_key_field(const ledger_rel_sum_t *e, size_t off, size_t *next);

/* ---- Rows, for the readers ------------------------------------------------ */

/* Points r at a row of a SELECT LEDGER_RECORD_COLUMNS; the strings stay
 * the row's. */
void ledger_row_to_record(const pgt_db_row_t *row, pgt_record_t *r);

#endif
