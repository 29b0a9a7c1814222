/* The ledger: one row per metered statement in SQLite (WAL), written by
 * one writer thread fed by a bounded queue, in batched transactions. The
 * event loop only enqueues and never waits on disk. If the database cannot
 * be written, records wait in memory, then in a spool file, and are
 * replayed when it is back. The API leaves room for a PostgreSQL backend. */
#ifndef PGTALLY_LEDGER_H
#define PGTALLY_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGT_QUERY_STATUS_MAP(X)                                                                    \
    X(OK, "ok")                                                                                    \
    X(ERROR, "error")                                                                              \
    X(CANCELLED, "cancelled")                                                                      \
    X(BUDGET_CANCELLED, "budget_cancelled")                                                        \
    X(REFUSED, "refused")

typedef enum {
#define X(name, str) PGT_QUERY_##name,
    PGT_QUERY_STATUS_MAP(X)
#undef X
} pgt_query_status_t;

const char *pgt_query_status_name(pgt_query_status_t s);

/* One metered statement. Strings are owned by the record. */
typedef struct pgt_record {
    int64_t started_us;      /* unix time in microseconds the statement was sent upstream */
    int64_t finished_us;     /* unix time in microseconds it completed */
    uint64_t session_id;     /* pgtally session (C-<id>) */
    int32_t backend_pid;     /* server backend pid */
    char *user;              /* PostgreSQL user */
    char *database;          /* database */
    char *application;       /* application_name, or "" */
    char *client_addr;       /* client host:port */
    char *tags_json;         /* sqlcommenter tags as a JSON object, or NULL */
    uint64_t fingerprint;    /* statement shape */
    char *normalized;        /* normalized text */
    char *kind;              /* statement kind name ("select") */
    char *protocol;          /* "simple" or "extended" */
    double est_planner_cost; /* planner total cost, or -1 when not explained */
    int64_t est_cost_micro;  /* estimated cost in micro-units, or -1 */
    double compute_s;        /* seconds the upstream was busy with it */
    int64_t rows;            /* rows returned or affected */
    int64_t bytes_out;       /* bytes sent to the client for it */
    int64_t cost_micro;      /* actual cost in micro-units of the currency */
    pgt_query_status_t status;
    char sqlstate[6];        /* error SQLSTATE, or "" */
} pgt_record_t;

/* Frees a record and its strings. NULL is allowed. */
void pgt_record_free(pgt_record_t *r);

typedef enum { PGT_LEDGER_OPEN, PGT_LEDGER_CLOSED } pgt_ledger_on_failure_t;

typedef struct pgt_ledger_opts {
    const char *path;               /* SQLite file */
    const char *spool_path;         /* spool file; NULL means path + ".spool" */
    size_t queue_capacity;          /* records queued before spilling (default 65536) */
    size_t memory_capacity;         /* records kept in memory while failing before spooling */
    int retention_days;             /* delete rows older than this (default 90; 0 keeps all) */
    pgt_ledger_on_failure_t on_failure; /* whether queries run while the ledger fails */
} pgt_ledger_opts_t;

typedef struct pgt_ledger pgt_ledger_t;

/* Opens (creating and migrating) the ledger and starts the writer thread.
 * Returns NULL with a message in err. */
pgt_ledger_t *pgt_ledger_open(const pgt_ledger_opts_t *opts, char *err, size_t errlen);

/* Hands a record to the writer; never blocks on disk. Takes ownership. */
void pgt_ledger_submit(pgt_ledger_t *l, pgt_record_t *r);

/* True while the ledger cannot write and on_failure = closed: the proxy
 * should refuse new statements. */
bool pgt_ledger_refusing(const pgt_ledger_t *l);

/* Counters for logs and benchmarks. */
typedef struct pgt_ledger_stats {
    uint64_t submitted;  /* records handed in */
    uint64_t written;    /* records committed to SQLite */
    uint64_t spooled;    /* records written to the spool file */
    uint64_t batches;    /* transactions committed */
    bool failing;        /* last write failed */
} pgt_ledger_stats_t;
void pgt_ledger_stats(pgt_ledger_t *l, pgt_ledger_stats_t *out);

/* Writes everything queued (and spooled, if the database is back), stops
 * the thread and closes. */
void pgt_ledger_close(pgt_ledger_t *l);

#endif
