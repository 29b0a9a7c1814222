/* A batch of refusals and cancels: counting, adding up, rendering. Pure;
 * see include/pgtally/alert_batch.h. */
#include "pgtally/alert_batch.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Adds count events of g's kind to b's groups (or to unlisted when full). */
static void burst_group(pgt_alert_batch_t *b, const pgt_alert_group_t *g, uint64_t count)
{
    for (size_t i = 0; i < b->ngroups; i++) {
        pgt_alert_group_t *h = &b->groups[i];
        if (h->action == g->action && h->budget_id == g->budget_id && h->rule_id == g->rule_id &&
            strcmp(h->user, g->user) == 0 && strcmp(h->sqlstate, g->sqlstate) == 0) {
            h->count += count;
            return;
        }
    }
    if (b->ngroups == PGT_ALERT_GROUPS_MAX) {
        b->unlisted += count;
        return;
    }
    b->groups[b->ngroups] = *g;
    b->groups[b->ngroups++].count = count;
}

/* Adds example to b when there is room. */
static void burst_example(pgt_alert_batch_t *b, const char *example)
{
    if (b->nexamples < PGT_ALERT_EXAMPLES_MAX)
        snprintf(b->examples[b->nexamples++], sizeof(b->examples[0]), "%s", example);
}

/* Widens the window of b to hold [first, last]. */
static void burst_time(pgt_alert_batch_t *b, int64_t first, int64_t last)
{
    if (!b->first_us || first < b->first_us)
        b->first_us = first;
    if (last > b->last_us)
        b->last_us = last;
}

void pgt_alert_batch_merge(pgt_alert_batch_t *dst, const pgt_alert_batch_t *src)
{
    if (!src->first_us)
        return;
    dst->refused += src->refused;
    dst->cancelled += src->cancelled;
    dst->unlisted += src->unlisted;
    for (size_t i = 0; i < src->ngroups; i++)
        burst_group(dst, &src->groups[i], src->groups[i].count);
    for (size_t i = 0; i < src->nexamples; i++)
        burst_example(dst, src->examples[i]);
    burst_time(dst, src->first_us, src->last_us);
}

/* Local time of unix microseconds us as HH:MM:SS. */
static void clock_of(int64_t us, char out[16])
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(out, 16, "%H:%M:%S", &tm);
}

void pgt_alert_batch_render(const pgt_alert_batch_t *b, const char *instance, pgt_buf_t *subject,
                            pgt_buf_t *text)
{
    char from[16], to[16];
    clock_of(b->first_us, from);
    clock_of(b->last_us, to);
    pgt_buf_printf(subject, "pgtally: %" PRIu64 " statement%s refused, %" PRIu64 " cancelled",
                   b->refused, b->refused == 1 ? "" : "s", b->cancelled);
    pgt_buf_printf(text,
                   "pgtally %s refused %" PRIu64 " statement%s and cancelled %" PRIu64
                   " between %s and %s.\n\nBy user, budget, rule and SQLSTATE:\n",
                   instance, b->refused, b->refused == 1 ? "" : "s", b->cancelled, from, to);
    for (size_t i = 0; i < b->ngroups; i++) {
        const pgt_alert_group_t *g = &b->groups[i];
        pgt_buf_printf(text, "  %8" PRIu64 " %s user=%s", g->count,
                       g->action == PGT_VERDICT_CANCEL ? "cancelled" : "refused", g->user);
        if (g->budget_id)
            pgt_buf_printf(text, " budget=%" PRId64, g->budget_id);
        if (g->rule_id)
            pgt_buf_printf(text, " rule=%" PRId64, g->rule_id);
        pgt_buf_printf(text, " sqlstate=%s\n", g->sqlstate);
    }
    if (b->unlisted)
        pgt_buf_printf(text,
                       "  %8" PRIu64 " more in other groups, not itemised (more than %d groups)\n",
                       b->unlisted, PGT_ALERT_GROUPS_MAX);
    if (b->nexamples)
        pgt_buf_puts(text, "\nExamples:\n");
    for (size_t i = 0; i < b->nexamples; i++)
        pgt_buf_printf(text, "  %s\n", b->examples[i]);
}

void pgt_alert_batch_add(pgt_alert_batch_t *b, const pgt_who_t *who, const pgt_verdict_t *v,
                         int64_t now_us)
{
    pgt_alert_group_t g = {.action = v->action == PGT_VERDICT_CANCEL ? PGT_VERDICT_CANCEL
                                                                     : PGT_VERDICT_REFUSE,
                           .budget_id = v->budget_id,
                           .rule_id = v->rule_id};
    snprintf(g.user, sizeof(g.user), "%s", who->user ? who->user : "");
    memcpy(g.sqlstate, v->sqlstate, sizeof(g.sqlstate));
    g.sqlstate[5] = '\0';
    if (g.action == PGT_VERDICT_CANCEL)
        b->cancelled++;
    else
        b->refused++;
    burst_group(b, &g, 1);
    char example[sizeof(b->examples[0])];
    if (v->ticket[0]) /* the approver's command (docs/escrow.md) */
        snprintf(example, sizeof(example),
                 "%s (%s): %s. To approve: pgtallyctl ticket approve %s --for 2h", g.user,
                 g.sqlstate, v->message, v->ticket);
    else
        snprintf(example, sizeof(example), "%s (%s): %s", g.user, g.sqlstate, v->message);
    burst_example(b, example);
    burst_time(b, now_us, now_us);
}
