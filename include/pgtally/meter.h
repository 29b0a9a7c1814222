/* The metering pipeline between sessions and the ledger. Sessions hand
 * over finished executions (the raw SQL and what the server answered); the
 * meter batches them and, on a libuv worker thread, splits and fingerprints
 * the SQL with libpg_query, prices each statement and submits ledger
 * records. Parsing thus never runs on the event loop. */
#ifndef PGTALLY_METER_H
#define PGTALLY_METER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "pgtally/config.h"
#include "pgtally/estimator.h"
#include "pgtally/ledger.h"

/* Reference-counted text, shared by a session's prepared statements,
 * portals and the executions that use them. Only touched on the loop. */
typedef struct pgt_text {
    int refs;    /* holders */
    size_t len;  /* bytes before the terminating NUL */
    char data[]; /* the text, NUL-terminated */
} pgt_text_t;

/* Returns a new text with one reference, or NULL when out of memory. */
pgt_text_t *pgt_text_new(const char *s, size_t len);
pgt_text_t *pgt_text_ref(pgt_text_t *t);
void pgt_text_unref(pgt_text_t *t);

/* Who ran a statement; shared by all executions of a session. */
typedef struct pgt_attr {
    int refs;            /* holders (the session and pending executions) */
    uint64_t session_id; /* pgtally session id */
    int32_t backend_pid; /* server backend pid */
    char *user;          /* PostgreSQL user */
    char *database;      /* database */
    char *application;   /* application_name */
    char *client_addr;   /* client host:port */
} pgt_attr_t;

pgt_attr_t *pgt_attr_new(uint64_t session_id, const char *user, const char *database,
                         const char *application, const char *client_addr);
void pgt_attr_unref(pgt_attr_t *a);

/* What the server said about one statement. */
typedef struct pgt_done {
    int64_t start_us;          /* wall-clock µs the upstream started on it */
    int64_t end_us;            /* wall-clock µs it completed */
    double compute_s;          /* seconds the upstream was busy with it */
    int64_t rows;              /* rows returned or affected */
    int64_t bytes_out;         /* bytes sent to the client for it */
    pgt_query_status_t status; /* ok, error, cancelled */
    char sqlstate[6];          /* SQLSTATE of an error, or "" */
    int64_t budget_id;         /* budget that refused or cancelled it, or 0 */
} pgt_done_t;

/* One Query message (several statements maybe), one Execute or one
 * FunctionCall. */
typedef struct pgt_exec {
    struct pgt_exec *next; /* next in a session FIFO or a meter batch */
    pgt_attr_t *attr;      /* who ran it (a reference) */
    pgt_text_t *text;      /* the SQL (a reference) */
    bool extended;         /* from Execute (one statement) rather than Query */
    bool function_call;    /* from FunctionCall (text names the function's OID) */
    bool is_marker;        /* a Sync placeholder, not a statement */
    bool failed;           /* the server answered it with an error */
    bool unknown_portal;   /* an Execute of a portal pgtally knows no Bind or DECLARE of */
    int64_t portal_batch;  /* an Execute's: the batch that made its portal, -1 for a cursor
                              WITH HOLD (which no transaction's end drops) */
    uint64_t bind_seq;     /* an Execute's: the Bind of an earlier batch that its portal waits
                              on (0: none); UINT64_MAX once that Bind failed or was skipped,
                              and the portal does not exist */
    bool prev_portal;      /* an Execute of the unnamed portal: the one before that Bind may
                              still be there (a skipped Bind leaves it) */
    uint64_t prev_seq;     /* ... and the Bind that made it (0: completed) */
    uint64_t taken_batch;  /* an Execute of the unnamed portal sent while a Query that takes
                              it was owed: that Query's batch (0: none); the portal is there
                              for it only if the server skips that Query */
    pgt_estimate_t est;    /* estimate made on the loop (est.key 0: none) */
    uint64_t params;       /* an Execute's: a hash of its portal's Bind parameters (0: none) */
    char *relations;       /* what its shape's last plan read (pgt_estimator_relations), set
                              when it is handed to the meter; NULL: the meter reads its parse
                              tree (owned) */
    uint64_t sent_ns;      /* uv_hrtime() when it was forwarded */
    int64_t sent_us;       /* wall-clock µs when it was forwarded */
    int ndone;             /* completions in done[] */
    int done_cap;          /* room in done[] */
    pgt_done_t *done;      /* completions, in statement order */
    int64_t instance;      /* set by the meter: the instance its records are ledger ids of */
    int64_t seq;           /* set by the meter: the seq of its first record (the i-th: + i) */
    uint64_t journal_end;  /* set by the meter: its journal position, or 0 */
} pgt_exec_t;

typedef struct pgt_meter pgt_meter_t;

/* Starts a meter on loop that feeds ledger (not owned). Prices come from
 * cfg. Returns NULL when out of memory. */
pgt_meter_t *pgt_meter_new(uv_loop_t *loop, pgt_ledger_t *ledger, const pgt_config_t *cfg);

/* Takes new prices (SIGHUP). */
void pgt_meter_set_prices(pgt_meter_t *m, const pgt_config_t *cfg);

/* Hands over a finished execution (ownership passes to the meter). It gets
 * its record ids and goes into the journal, if there is one, before this
 * returns: before the client sees its result. */
void pgt_meter_add(pgt_meter_t *m, pgt_exec_t *e);

struct pgt_journal;
struct pgt_metrics;

/* Counts every record made from now on in metrics (not owned; NULL: none),
 * on the worker thread, once per batch. Set it before executions are added;
 * metrics must outlive the meter. */
void pgt_meter_set_metrics(pgt_meter_t *m, struct pgt_metrics *metrics);

/* Journals every execution added from now on to j (not owned; NULL: none). */
void pgt_meter_set_journal(pgt_meter_t *m, struct pgt_journal *j);

/* Meters e, an execution of an earlier process read back from its journal
 * with its record ids, now and on this thread, and frees it. */
void pgt_meter_replay(pgt_meter_t *m, pgt_exec_t *e);

/* Frees an execution and drops its references. */
void pgt_exec_free(pgt_exec_t *e);

/* Stops the meter's timer so the loop can end; pending work still runs. */
void pgt_meter_stop(pgt_meter_t *m);

/* After the loop has ended: meters what is left, on this thread, and frees
 * the meter. The ledger stays open. */
void pgt_meter_free(pgt_meter_t *m);

/* Counters, for logs and benchmarks. */
typedef struct pgt_meter_stats {
    uint64_t execs;      /* executions handed over */
    uint64_t statements; /* ledger records made */
    uint64_t batches;    /* worker jobs run */
} pgt_meter_stats_t;
void pgt_meter_stats(const pgt_meter_t *m, pgt_meter_stats_t *out);

#endif
