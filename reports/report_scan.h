/* The daily report's reads of the ledger (internal to the report builder):
 * a day's sums per (user, shape) and per status, the totals of the days
 * before and the users' spend of the day before, all from the rollups that
 * the ledger's writer keeps per local day; the statements budgets stopped,
 * from queries through its partial index queries_day_budget; the data
 * that cost the most, from daily_relations; and the sums per user and per
 * shape, grouped here by sorting. */
#ifndef PGTALLY_REPORT_SCAN_H
#define PGTALLY_REPORT_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/db.h"
#include "pgtally/ledger.h"

#define RS_STATUS_COUNT 5   /* statuses of PGT_QUERY_STATUS_MAP */
#define RS_HISTORY_DAYS 7   /* the days before the report's, for the mean */
#define RS_NO_DAY INT32_MAX /* first_day of a ledger without statements */

/* Sums of the statements of one user and one shape in a day. */
typedef struct rs_pair {
    char *user;         /* the user (owned) */
    uint64_t fp;        /* the shape (fingerprint; 0 for statements without one) */
    int64_t statements; /* statements */
    int64_t cost;       /* summed cost, micro-units */
    int64_t max_cost;   /* the most expensive one */
    double compute_s;   /* summed compute seconds */
} rs_pair_t;

/* Totals of a day. */
typedef struct rs_totals {
    int64_t statements; /* statements */
    int64_t cost;       /* micro-units */
    double compute_s;   /* seconds */
} rs_totals_t;

/* What one user spent on the day before. */
typedef struct rs_user_cost {
    char *user;   /* the user (owned) */
    int64_t cost; /* micro-units */
} rs_user_cost_t;

/* Statements a budget refused or cancelled. */
typedef struct rs_refusal {
    int64_t budget_id; /* the budget */
    int64_t refused;   /* status refused */
    int64_t cancelled; /* status budget_cancelled */
    int64_t cost;      /* what the cancelled ones cost before they stopped */
} rs_refusal_t;

/* What the ledger holds of one local day and the days before it. */
typedef struct rs_day {
    int32_t day;                        /* the day (pgt_local_day) */
    rs_totals_t totals;                 /* the day's totals */
    int64_t by_status[RS_STATUS_COUNT]; /* its statements per status */
    rs_pair_t *pairs;                   /* its sums per (user, shape), in no order */
    size_t npairs;                      /* entries in pairs */
    size_t cap_pairs;                   /* entries allocated */
    rs_totals_t hist[RS_HISTORY_DAYS];  /* hist[k]: the day k + 1 days before */
    int32_t first_day;                  /* the ledger's first day with data, or RS_NO_DAY */
    rs_user_cost_t *prev;               /* spend per user of the day before, by name */
    size_t nprev;                       /* entries in prev */
    size_t cap_prev;                    /* entries allocated */
    rs_refusal_t *refusals;             /* per budget, in no order */
    size_t nrefusals;                   /* entries in refusals */
    size_t cap_refusals;                /* entries allocated */
} rs_day_t;

/* What one schema, or one table, cost in a day (daily_relations). */
typedef struct rs_rel {
    char *schema;     /* the schema, "" when statements did not qualify the name (owned) */
    char *relation;   /* the table (owned); NULL in the list of schemas */
    int64_t queries;  /* statements that read it (tables only) */
    int64_t cost;     /* their cost split by their shares, micro-units */
    double compute_s; /* their compute split the same way, seconds */
} rs_rel_t;

/* The day's data that cost the most. */
typedef struct rs_data {
    rs_rel_t *schemas; /* dearest first (ties by name), at most top */
    size_t nschemas;   /* entries in schemas */
    rs_rel_t *tables;  /* dearest first (ties by schema, then name), at most top */
    size_t ntables;    /* entries in tables */
    size_t cap;        /* entries allocated in the list being read */
    int64_t cost;      /* the cost of every statement that read known relations */
    double compute_s;  /* their compute */
} rs_data_t;

/* Reads the schemas and tables of day that cost the most, at most top of
 * each, into *d (zeroed by the caller; free it with rs_data_free, also
 * after a failure). A ledger older than schema 9 has none. Returns 0, or
 * -1 with the cause in err. */
int rs_data_read(pgt_db_t *db, int32_t day, int top, rs_data_t *d, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Frees what d holds (not d). */
void rs_data_free(rs_data_t *d);

/* Reads day (and the days before it) from db into *d, which the caller
 * zeroes first and frees with rs_day_free (also after a failure). Returns
 * 0, or -1 with the cause in err. */
int rs_day_read(pgt_db_t *db, int32_t day, rs_day_t *d, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Frees what d holds (not d). */
void rs_day_free(rs_day_t *d);

/* Returns what user spent on the day before d's day (0: nothing). */
int64_t rs_prev_cost(const rs_day_t *d, const char *user);

/* A user's sums over the day and their dearest shape. */
typedef struct rs_user {
    const char *user;      /* the name, held by the day's pairs */
    int64_t statements;    /* statements */
    int64_t cost;          /* micro-units */
    double compute_s;      /* seconds */
    const rs_pair_t *best; /* the shape they spent most on (ties: the lower fingerprint) */
} rs_user_t;

/* A shape's sums over the day. */
typedef struct rs_shape {
    uint64_t fp;                      /* the shape */
    int64_t statements;               /* statements */
    int64_t cost;                     /* micro-units */
    int64_t max_cost;                 /* the dearest one */
    double compute_s;                 /* seconds */
    const rs_pair_t *const *spenders; /* its users' pairs, biggest spender first (ties by name) */
    size_t users;                     /* users who ran it: entries in spenders */
} rs_shape_t;

/* The day's sums per user and per shape. */
typedef struct rs_groups {
    rs_user_t *users;           /* most expensive first (ties by name) */
    size_t nusers;              /* entries in users */
    rs_shape_t *shapes;         /* most expensive first (ties by fingerprint) */
    size_t nshapes;             /* entries in shapes */
    const rs_pair_t **by_shape; /* the pairs by shape, which spenders point into */
} rs_groups_t;

/* Sums d's pairs per user and per shape into *g (reordering d->pairs; g
 * points into them, so d outlives g). Returns 0, or -1 when out of
 * memory. Free g with rs_groups_free. */
int rs_group(rs_day_t *d, rs_groups_t *g) __attribute__((warn_unused_result));

/* Frees what g holds (not g). */
void rs_groups_free(rs_groups_t *g);

#endif
