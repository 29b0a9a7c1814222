/* Alerts that reach people: a thread that sends, through the report's
 * delivery (deliver.h: the Slack webhook, e-mail over SMTP), each budget
 * threshold crossing once per (budget, period, threshold, channel) across
 * every pgtally sharing the ledger, and this process's refusals and
 * cancels batched: those of one [alerts] batch_interval, counted by user,
 * budget, rule and SQLSTATE with a few examples, in one message. The loop
 * only hands events over (a mutex, a copy, no I/O); a dead webhook or mail
 * server costs a logged warning and retries with backoff. See
 * docs/budgets.md. */
#ifndef PGTALLY_ALERTS_H
#define PGTALLY_ALERTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/budget_rules.h"
#include "pgtally/config.h"

typedef struct pgt_alerts pgt_alerts_t;

/* The channels alerts go to under cfg: [alerts] channels (every channel
 * [report] configures when unset), as a mask of 1 << pgt_channel_t. */
int pgt_alerts_channels(const pgt_config_t *cfg);

/* Starts the thread with the settings of cfg (copied) over the ledger at
 * ledger_path (an SQLite path, or a PostgreSQL URI or conninfo whose schema
 * is cfg's [ledger] schema). Call it after pgt_timezone_apply. Returns NULL
 * with the cause in err. */
pgt_alerts_t *pgt_alerts_new(const pgt_config_t *cfg, const char *ledger_path, char *err,
                             size_t errlen);

/* Takes new settings (SIGHUP): channels, batch interval, delivery. */
void pgt_alerts_configure(pgt_alerts_t *a, const pgt_config_t *cfg);

/* On the loop: a statement of who was refused or is being cancelled, as v
 * says. Counted in the current batch of each channel; never blocks on
 * I/O. NULL a is allowed. */
void pgt_alerts_event(pgt_alerts_t *a, const pgt_who_t *who, const pgt_verdict_t *v);

/* Asks the thread to stop and ends a transfer in progress; returns at
 * once. NULL is allowed. */
void pgt_alerts_stop(pgt_alerts_t *a);

/* Stops the thread, waits for it, logs what was left unsent and frees
 * everything. NULL is allowed. */
void pgt_alerts_free(pgt_alerts_t *a);

#endif
