/* The Prometheus metrics registry: counters and histograms of metered
 * statements, fed once per batch by the meter's worker thread, gauges read
 * at scrape time, and their rendering in the text exposition format
 * (version 0.0.4). Every function is safe to call from any thread. */
#ifndef PGTALLY_METRICS_H
#define PGTALLY_METRICS_H

#include <stddef.h>

#include "pgtally/budget.h"
#include "pgtally/buf.h"
#include "pgtally/ledger.h"

typedef struct pgt_metrics pgt_metrics_t;

/* Returns an empty registry that keeps at most max_label_values distinct
 * values per label (user, application, database, sqlstate; later ones count
 * as "other"), naming currency (such as "USD") in the cost metrics' help,
 * or NULL when out of memory. */
pgt_metrics_t *pgt_metrics_new(int max_label_values, const char *currency);

/* Frees the registry. NULL is allowed. Nothing may use it afterwards. */
void pgt_metrics_free(pgt_metrics_t *m);

/* Counts n records (NULL entries skipped) under one lock. The records stay
 * the caller's. */
void pgt_metrics_observe(pgt_metrics_t *m, pgt_record_t *const *rs, size_t n);

/* Adds delta (+1 or -1) to the live sessions gauge. */
void pgt_metrics_sessions_add(pgt_metrics_t *m, int delta);

/* Reads the ledger's queue and spool counters at each scrape from l (not
 * owned; NULL: none). Set it before the endpoint starts; l must outlive
 * every later pgt_metrics_render. */
void pgt_metrics_set_ledger(pgt_metrics_t *m, pgt_ledger_t *l);

/* Replaces the budget gauges (spend and limit of each budget in force)
 * with those of s[0..n), copied. */
void pgt_metrics_set_budgets(pgt_metrics_t *m, const pgt_budget_spend_t *s, size_t n);

/* Appends every metric to out in the text exposition format. The caller
 * checks out->failed. */
void pgt_metrics_render(pgt_metrics_t *m, pgt_buf_t *out);

/* Appends s to out as a label value of the exposition format: backslash,
 * double quote and line feed escaped. */
void pgt_metrics_escape(pgt_buf_t *out, const char *s);

#endif
