/* Delivery of the daily report with libcurl: a Slack incoming webhook and
 * e-mail over SMTP (STARTTLS or SMTPS), each (date, channel) sent once
 * across restarts and processes, recorded in the ledger's reports_sent. */
#ifndef PGTALLY_DELIVER_H
#define PGTALLY_DELIVER_H

#include <jansson.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

#include "pgtally/config.h"

#define PGT_CHANNEL_MAP(X)                                                                         \
    X(SLACK, "slack")                                                                              \
    X(EMAIL, "email")

typedef enum {
#define X(name, str) PGT_CHANNEL_##name,
    PGT_CHANNEL_MAP(X)
#undef X
} pgt_channel_t;

const char *pgt_channel_name(pgt_channel_t c);
int pgt_channel_parse(const char *name, pgt_channel_t *out) __attribute__((warn_unused_result));

/* Whether cfg configures channel c (a webhook URL, or an SMTP URL with a
 * sender and recipients). */
bool pgt_channel_configured(const pgt_config_t *cfg, pgt_channel_t c);

/* Sends report to channel c now, blocking (no bookkeeping). Returns 0, or
 * -1 with what failed, including the server's answer, in err. */
int pgt_deliver(const pgt_config_t *cfg, pgt_channel_t c, const json_t *report, char *err,
                size_t errlen);

/* Builds the report of date and sends it to each channel of channels
 * (NULL: every configured one) that has not had it yet, recording each
 * success in reports_sent of db, and each failure (attempts, last_error).
 * force: send again even if sent. Returns 0 when every channel has it, or
 * -1 with the failures in err. */
int pgt_report_send(sqlite3 *db, const pgt_config_t *cfg, const char *date,
                    const pgt_channel_t *channels, size_t nchannels, bool force, char *err,
                    size_t errlen);

#endif
