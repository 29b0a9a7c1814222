/* A batch of refusals and cancels, as pure functions: events are counted
 * by (action, user, budget, rule, SQLSTATE) in a fixed number of groups
 * (the rest counted, not itemised) with the first few messages as
 * examples, two batches add up, and a batch renders to the subject and
 * text of one alert. Fixed size: no allocation, whatever the storm. The
 * alert thread (alerts.h) keeps one per channel. */
#ifndef PGTALLY_ALERT_BATCH_H
#define PGTALLY_ALERT_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/budget_rules.h"
#include "pgtally/buf.h"

#define PGT_ALERT_GROUPS_MAX 32  /* groups itemised in a batch */
#define PGT_ALERT_EXAMPLES_MAX 3 /* example messages in a batch */

/* Refusals or cancels of one (action, user, budget, rule, SQLSTATE). */
typedef struct pgt_alert_group {
    pgt_verdict_action_t action; /* REFUSE or CANCEL */
    char user[64];               /* who (PostgreSQL names are at most 63 bytes) */
    int64_t budget_id;           /* the budget, or 0 */
    int64_t rule_id;             /* the rule, or 0 */
    char sqlstate[6];            /* the error the client got */
    uint64_t count;              /* how many */
} pgt_alert_group_t;

/* The refusals and cancels of one window. All zero: empty. */
typedef struct pgt_alert_batch {
    uint64_t refused;                               /* statements refused */
    uint64_t cancelled;                             /* statements cancelled */
    uint64_t unlisted;                              /* of those, in groups past the itemised */
    pgt_alert_group_t groups[PGT_ALERT_GROUPS_MAX]; /* the itemised groups */
    size_t ngroups;                                 /* entries in groups */
    char examples[PGT_ALERT_EXAMPLES_MAX][400];     /* "user (SQLSTATE): message" of the first,
                                                       and the command that approves its ticket */
    size_t nexamples;                               /* entries in examples */
    int64_t first_us;                               /* the first event, 0: empty */
    int64_t last_us;                                /* the last event */
} pgt_alert_batch_t;

/* Counts a statement of who refused or cancelled (as v->action says) at
 * now_us. */
void pgt_alert_batch_add(pgt_alert_batch_t *b, const pgt_who_t *who, const pgt_verdict_t *v,
                         int64_t now_us);

/* Adds batch src to dst (a batch that failed to go out joins the next). */
void pgt_alert_batch_merge(pgt_alert_batch_t *dst, const pgt_alert_batch_t *src);

/* The subject and text of the alert of batch b of the pgtally named
 * instance; times in the process's local time zone. */
void pgt_alert_batch_render(const pgt_alert_batch_t *b, const char *instance, pgt_buf_t *subject,
                            pgt_buf_t *text);

#endif
