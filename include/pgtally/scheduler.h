/* The daily report's schedule in a running pgtally: a thread that, at
 * [report] time (local time of the configured timezone), sends yesterday's
 * report to every configured channel; after downtime sends the days missed
 * (up to [report] catch_up_days) at start; and retries a failed delivery
 * after [report] retry_interval, doubling up to an hour. Each (date,
 * channel) is sent once, through pgt_report_send_opts and reports_sent.
 * The thread opens its own ledger connection for each round that has a
 * report due, and never touches the loop. */
#ifndef PGTALLY_SCHEDULER_H
#define PGTALLY_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/config.h"

typedef struct pgt_scheduler pgt_scheduler_t;

/* Whether cfg configures any delivery channel, i.e. whether there is
 * anything to schedule. */
bool pgt_scheduler_wanted(const pgt_config_t *cfg);

/* Starts the thread with the [report] settings of cfg (copied) over the
 * ledger at ledger_path (an SQLite path, or a PostgreSQL URI or conninfo
 * whose schema is cfg's [ledger] schema). Call it after pgt_timezone_apply. Returns NULL with
 * the cause in err. */
pgt_scheduler_t *pgt_scheduler_new(const pgt_config_t *cfg, const char *ledger_path, char *err,
                                   size_t errlen);

/* Takes new settings (SIGHUP): time, channels, retry interval. */
void pgt_scheduler_configure(pgt_scheduler_t *s, const pgt_config_t *cfg);

/* Asks the thread to stop and ends a transfer in progress; returns at
 * once, so the loop may call it. NULL is allowed. */
void pgt_scheduler_stop(pgt_scheduler_t *s);

/* Stops the thread, waits for it (a send in progress is recorded as
 * interrupted, its claim released) and frees everything. NULL is allowed. */
void pgt_scheduler_free(pgt_scheduler_t *s);

/* The calendar of the schedule, in the process's time zone: the dates
 * (YYYY-MM-DD, oldest first) whose reports are due at now_us when [report]
 * time is at_min minutes after local midnight. The latest is yesterday once
 * today's report time has passed (else the day before); catch_up_days dates
 * in all, or with catch_up_days = 0 the latest only if it fell due at or
 * after start_us. Writes at most max dates, sets *next_due_us to when the
 * next date falls due, and returns how many it wrote. */
size_t pgt_schedule_due(int at_min, int catch_up_days, int64_t now_us, int64_t start_us,
                        char (*dates)[11], size_t max, int64_t *next_due_us);

#endif
