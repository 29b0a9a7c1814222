/* The ledger thread of budget enforcement: off the loop, it keeps the budgets
 * and the spend of other pgtally processes sharing the ledger (SQLite or
 * PostgreSQL) in step with it (settings_version; the daily spend rollup of
 * other instances, read where their rev moved; role memberships read from
 * the server through libpq) and records the alerts the loop queues, each
 * logged by the one process whose INSERT ... ON CONFLICT DO NOTHING lands. */
#ifndef PGTALLY_BUDGET_SYNC_H
#define PGTALLY_BUDGET_SYNC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "pgtally/budget_store.h"
#include "pgtally/ledger.h"

typedef struct pgt_budget_sync pgt_budget_sync_t;

/* Spend read from the ledger: what other processes spent on one local day
 * by one user, database and application since it was last read (at start:
 * all of it). */
typedef struct pgt_budget_row {
    char *user;         /* who (owned) */
    char *database;     /* database (owned) */
    char *application;  /* application_name (owned) */
    int64_t started_us; /* local midnight starting the day (pgt_local_day_start_us) */
    int64_t micro;      /* what was spent */
    int period;         /* -1: every period holding started_us; else only this pgt_period_t */
} pgt_budget_row_t;

/* An alert to record once per (budget, period, threshold, channel). */
typedef struct pgt_budget_alert {
    int64_t budget_id;    /* which budget */
    int64_t period_start; /* which period, unix microseconds */
    int pct;              /* which threshold */
    char channel[160];    /* "log", or "log:user=NAME" for a default budget */
    char text[384];       /* what to log and send */
} pgt_budget_alert_t;

/* How to start the thread. Strings are copied. */
typedef struct pgt_budget_sync_opts {
    pgt_ledger_where_t where;   /* the ledger */
    int64_t instance;           /* this process's ledger rows, which are not read back */
    const char *admin_conninfo; /* where role memberships are read; "" or NULL: nowhere */
    int interval_ms;            /* how often the ledger is polled */
    int role_refresh_ms;        /* how often role memberships are read */
    uv_async_t *news;           /* sent (from the thread) when budgets or spend are waiting */
} pgt_budget_sync_opts_t;

/* Starts the thread. news must stay initialised until pgt_budget_sync_free.
 * Returns NULL with the cause in err. */
pgt_budget_sync_t *pgt_budget_sync_start(const pgt_budget_sync_opts_t *o, char *err, size_t errlen);

/* On the loop, after news: takes the budgets loaded since the last take
 * (*cfg, NULL when none; the caller frees it with pgt_budget_config_free)
 * and the spend read since (*rows[0..*nrows), free them with
 * pgt_budget_sync_rows_free). */
void pgt_budget_sync_take(pgt_budget_sync_t *s, pgt_budget_config_t **cfg, pgt_budget_row_t **rows,
                          size_t *nrows);

/* Frees rows[0..n) of pgt_budget_sync_take. NULL is allowed. */
void pgt_budget_sync_rows_free(pgt_budget_row_t *rows, size_t n);

/* Queues a copy of alert a for the thread, which records it soon (its text
 * goes to alerts_sent.message, which the alert senders deliver). Dropped,
 * and counted in a log line, when out of memory or when 4096 wait. */
void pgt_budget_sync_alert(pgt_budget_sync_t *s, const pgt_budget_alert_t *a);

/* Stops the thread (it records the alerts still queued first), and frees
 * everything, untaken news included. NULL is allowed. */
void pgt_budget_sync_free(pgt_budget_sync_t *s);

#endif
