/* Estimates what a statement will cost before it runs. For each shape
 * (database, fingerprint) it keeps what past runs cost and how many seconds
 * one planner cost unit took; it decides whether an in-band EXPLAIN is
 * worth its round trip (new, expensive, variable or stale shapes) or the
 * history suffices (cheap, stable shapes such as OLTP point lookups), and
 * turns planner costs into money. Runs on the event loop. */
#ifndef PGTALLY_ESTIMATOR_H
#define PGTALLY_ESTIMATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/config.h"
#include "pgtally/plan.h"

/* Features of a plan the model weighs (estimator.c, features()). */
#define PGT_EST_FEATURES 12

/* What is known about one statement before it runs. */
typedef struct pgt_estimate {
    uint64_t key;              /* shape key (database, fingerprint); 0 when unknown */
    double planner_cost;       /* planner total cost, or -1 when not explained */
    int64_t cost_micro;        /* estimated cost in micro-units, or -1 when none */
    int64_t low_micro;         /* the interval that holds the cost 8 times in 10: */
    int64_t high_micro;        /* [low, high], both -1 when cost_micro is */
    float x[PGT_EST_FEATURES]; /* the plan's features when explained (x[0] = 1), else x[0] = 0 */
    uint64_t fingerprint;      /* the statement's fingerprint when the loop found it, or 0 */
    int kind;                  /* its pgt_stmt_kind_t then */
    int model;                 /* the estimator's model of its database */
    int64_t rule_id;           /* the rule by shape that blocks it or, for a log rule, would
                                  have (recorded in the ledger); 0: none (judge.c sets it) */
    int64_t approval_id;       /* the approval it runs under, or 0 (judge.c sets it) */
    int64_t approval_cap;      /* that approval's cap of one run, micro-units; -1: none */
    bool explainable;          /* whether EXPLAIN takes it */
    int32_t explain_shift;     /* when pgt_estimator_plan returned an EXPLAIN: the characters
                                  its text has ahead of the statement less those the client's
                                  text has, so that position P of the EXPLAIN's error is
                                  P - explain_shift in the client's statement */
} pgt_estimate_t;

/* The estimate of a statement nothing is known about. */
#define PGT_ESTIMATE_NONE                                                                          \
    ((pgt_estimate_t){.planner_cost = -1, .cost_micro = -1, .low_micro = -1, .high_micro = -1})

typedef struct pgt_estimator pgt_estimator_t;

/* The key of a shape: the database name mixed with the fingerprint (never 0). */
uint64_t pgt_estimator_shape_key(const char *database, uint64_t fingerprint);

/* Creates an estimator with the [estimate] and [pricing] settings of cfg.
 * Returns NULL when out of memory. */
pgt_estimator_t *pgt_estimator_new(const pgt_config_t *cfg);

/* Takes new settings (SIGHUP). */
void pgt_estimator_configure(pgt_estimator_t *e, const pgt_config_t *cfg);

void pgt_estimator_free(pgt_estimator_t *e);

/* How pgt_estimator_plan may explain: never, when one EXPLAIN is worth
 * its round trip, or always (the guard judges every plan). */
enum { PGT_EXPLAIN_NEVER = 0, PGT_EXPLAIN_IF_WORTH = 1, PGT_EXPLAIN_ALWAYS = 2 };

/* Looks at the SQL of a simple Query (sql[0..len), NUL-terminated) sent to
 * database. When explain allows it (PGT_EXPLAIN_*), returns a malloc'd
 * EXPLAIN statement to send (the caller frees it) with out->key set;
 * otherwise returns NULL with out filled from history (cost_micro -1 when
 * nothing is known). Strings of several statements and statements EXPLAIN
 * does not take are never explained. */
char *pgt_estimator_plan(pgt_estimator_t *e, const char *database, const char *sql, size_t len,
                         int explain, pgt_estimate_t *out);

/* Reads EXPLAIN output into *plan: the JSON document of FORMAT JSON, or
 * (estimate.format = text) a first line holding "cost=0.00..123.45",
 * which gives the total cost only. Returns 0, or -1 when there is no plan. */
int pgt_estimator_parse(const char *output, size_t len, pgt_plan_t *plan);

/* Completes out after an EXPLAIN answered plan (NULL if it failed),
 * whose relations it gives the schemas the statement names them with
 * (pgt_plan_qualify); explain_s is how long the EXPLAIN took, sent to
 * answered. */
void pgt_estimator_explained(pgt_estimator_t *e, pgt_estimate_t *out, pgt_plan_t *plan,
                             double explain_s);

/* The relations the shape of key reads, as the ledger keeps them
 * (pgt_plan_relations_json): from its last plan, or, never explained,
 * those its text names; malloc'd, NULL when none is known. */
char *pgt_estimator_relations(const pgt_estimator_t *e, uint64_t key);

/* Learns from a finished statement: its compute seconds and bytes, and,
 * when it was explained, how its plan's features predicted them. */
void pgt_estimator_learn(pgt_estimator_t *e, const pgt_estimate_t *est, double compute_s,
                         int64_t bytes_out);

/* Counters, for logs and benchmarks. */
typedef struct pgt_estimator_stats {
    uint64_t planned;   /* statements looked at */
    uint64_t explained; /* EXPLAINs asked for */
    uint64_t cached;    /* estimated from history without EXPLAIN */
} pgt_estimator_stats_t;
void pgt_estimator_stats(const pgt_estimator_t *e, pgt_estimator_stats_t *out);

#endif
