/* The daily report's scan (internal to the report builder): sums a day of
 * statements per (user, shape) and keeps the most expensive ones, reading
 * the ledger's covering index queries_started_report, in slices run in
 * parallel on worker threads with their own read-only connections. */
#ifndef PGTALLY_REPORT_SCAN_H
#define PGTALLY_REPORT_SCAN_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/ledger.h"

#define RS_STATUS_COUNT 5 /* statuses of PGT_QUERY_STATUS_MAP */

/* Interned strings: each distinct string gets a small id, in order of
 * first sight. */
typedef struct rs_names {
    char **v;        /* the strings, by id (owned) */
    size_t *lens;    /* their lengths, by id */
    size_t n;        /* strings held */
    size_t cap;      /* entries allocated in v and lens */
    uint64_t *slots; /* open addressing: the hash's high half and id + 1, or 0 */
    size_t nslots;   /* a power of two, at least twice n */
} rs_names_t;

/* Sums of the statements of one user and one shape. */
typedef struct rs_pair {
    uint64_t fp;        /* shape (fingerprint); 0 when the scan ignores shapes */
    uint32_t user;      /* user id in the scan's names */
    uint32_t uhash;     /* rs_user_hash of the user's name */
    int64_t statements; /* statements */
    int64_t cost;       /* summed cost, micro-units */
    int64_t max_cost;   /* the most expensive one */
    double compute_s;   /* summed compute seconds */
} rs_pair_t;

/* Pairs keyed by (fp, user): while being filled, an open-addressing table
 * holding the pairs themselves (one cache miss a row); once compacted, the
 * pairs alone, v[0..n). */
typedef struct rs_pairs {
    rs_pair_t *v;  /* the table (user RS_NO_USER: empty slot), or n pairs once compacted */
    size_t n;      /* pairs held */
    size_t nslots; /* entries of the table, a power of two; 0 once compacted */
} rs_pairs_t;

#define RS_NO_USER UINT32_MAX

/* One statement in the running top list. */
typedef struct rs_top {
    int64_t cost; /* cost, micro-units */
    int64_t id;   /* row id in queries */
} rs_top_t;

/* Statements a budget refused or cancelled. */
typedef struct rs_refusal {
    int64_t budget_id; /* the budget */
    int64_t refused;   /* status refused */
    int64_t cancelled; /* status budget_cancelled */
    int64_t cost;      /* what the cancelled ones cost before they stopped */
} rs_refusal_t;

/* What one scan collects. */
typedef struct rs_acc {
    int top;                            /* statements kept in tops (0: none) */
    bool shapes;                        /* sum per (user, shape); else per user */
    int64_t statements;                 /* statements seen */
    int64_t cost;                       /* their cost, micro-units */
    double compute_s;                   /* their compute seconds */
    int64_t by_status[RS_STATUS_COUNT]; /* statements per status */
    rs_names_t users;                   /* the users seen */
    rs_pairs_t pairs;                   /* sums per (shape, user) */
    rs_top_t *tops;                     /* a heap of the most expensive, worst first */
    int ntops;                          /* statements in tops */
    rs_refusal_t *refusals;             /* per budget */
    size_t nrefusals;                   /* entries in refusals */
    size_t cap_refusals;                /* entries allocated */
    bool failed;                        /* out of memory */
} rs_acc_t;

/* Frees what an accumulator holds (not the struct). */
void rs_acc_free(rs_acc_t *a);

/* Interns s (len bytes) in names; returns its id, or UINT32_MAX when out of
 * memory. */
uint32_t rs_names_intern(rs_names_t *names, const char *s, size_t len);
void rs_names_free(rs_names_t *names);

/* A hash of a user name of len bytes. */
uint32_t rs_user_hash(const char *s, size_t len);

/* Returns the pair of shape fp and the user named user (len bytes, hash
 * uhash from rs_user_hash) in t, adding a zeroed one and interning the name
 * in names; NULL when out of memory or t is compacted. A row costs one
 * lookup in t, whose slots carry the user's hash, and a comparison with the
 * name in names: names itself is searched only for a new pair. The pointer
 * is valid until the next call. */
rs_pair_t *rs_pairs_get(rs_pairs_t *t, rs_names_t *names, uint64_t fp, const char *user, size_t len,
                        uint32_t uhash);

/* Starts fetching the slot of the pair (fp, uhash) into the cache. */
void rs_pairs_prefetch(const rs_pairs_t *t, uint64_t fp, uint32_t uhash);

/* Packs the pairs into v[0..n) (in no particular order) and ends lookups. */
void rs_pairs_compact(rs_pairs_t *t);
void rs_pairs_free(rs_pairs_t *t);

/* Offers a statement to the top list of a (a heap of a->top entries). */
bool rs_top_offer(rs_acc_t *a, const rs_top_t *s);

/* Sorts a's top list, most expensive first (ties: the lower row id, that
 * is the one recorded first), leaving it no longer a heap. */
void rs_top_sort(rs_acc_t *a);

/* What a scan task does. */
typedef enum {
    RS_SCAN_FULL,   /* every sum, shapes, the top list and refusals */
    RS_SCAN_USERS,  /* totals and sums per user */
    RS_SCAN_TOTALS, /* totals only */
} rs_scan_kind_t;

/* One unit of work for the pool: run on a worker's connection. Returns 0,
 * or -1 with the cause in err. */
typedef int (*rs_task_fn)(sqlite3 *db, void *arg, char *err, size_t errlen);

typedef struct rs_task {
    rs_task_fn fn;    /* what to do */
    void *arg;        /* its argument */
    const char *what; /* what it is, for the debug log ("day", "budget") */
    int rc;           /* its result */
    char err[256];    /* why it failed */
} rs_task_t;

/* A scan of [from_us, to_us): the argument of rs_scan_task. */
typedef struct rs_scan {
    rs_scan_kind_t kind; /* what to collect */
    int64_t from_us;     /* first start included */
    int64_t to_us;       /* first start excluded */
    int version;         /* the ledger's schema version (budget_id from 2) */
    rs_acc_t acc;        /* what it found; acc.top set by the caller */
} rs_scan_t;

/* An rs_task_fn that runs the rs_scan_t in arg. */
int rs_scan_task(sqlite3 *db, void *arg, char *err, size_t errlen);

/* Runs tasks on up to `threads` worker threads, each with its own
 * read-only connection to db's file (db itself, one task after another,
 * when db has no file, such as an in-memory database). Returns 0 when
 * every task returned 0, or -1 with the first failure in err. */
int rs_run(sqlite3 *db, rs_task_t *tasks, size_t n, int threads, char *err, size_t errlen);

#endif
