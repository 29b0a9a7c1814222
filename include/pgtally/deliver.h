/* Delivery of the daily report with libcurl: a Slack incoming webhook and
 * e-mail over SMTP (STARTTLS or SMTPS), each (date, channel) sent once
 * across restarts and processes, recorded in the ledger's reports_sent. */
#ifndef PGTALLY_DELIVER_H
#define PGTALLY_DELIVER_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/config.h"
#include "pgtally/db.h"

#define PGT_CHANNEL_MAP(X)                                                                         \
    X(SLACK, "slack")                                                                              \
    X(EMAIL, "email")

typedef enum {
#define X(name, str) PGT_CHANNEL_##name,
    PGT_CHANNEL_MAP(X)
#undef X
} pgt_channel_t;

/* Number of channels: outcome arrays are indexed by pgt_channel_t. */
#define PGT_CHANNEL_COUNT (0 PGT_CHANNEL_MAP(PGT_CHANNEL_COUNT_ONE))
#define PGT_CHANNEL_COUNT_ONE(name, str) +1

const char *pgt_channel_name(pgt_channel_t c);
int pgt_channel_parse(const char *name, pgt_channel_t *out) __attribute__((warn_unused_result));

/* The names of the channels of mask (bit 1 << pgt_channel_t), such as
 * "slack,email", or "none", into out. */
void pgt_channel_list(int mask, char *out, size_t len);

/* Whether cfg configures channel c (a webhook URL, or an SMTP URL with a
 * sender and recipients). */
bool pgt_channel_configured(const pgt_config_t *cfg, pgt_channel_t c);

/* Returns 0 when cfg configures channel c, or -1 with the keys to set in
 * err. */
int pgt_channel_check(const pgt_config_t *cfg, pgt_channel_t c, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Sends report to channel c now, blocking (no bookkeeping). Returns 0, or
 * -1 with what failed, including the server's answer, in err. */
int pgt_deliver(const pgt_config_t *cfg, pgt_channel_t c, const json_t *report, char *err,
                size_t errlen);

/* Initialises libcurl once per process (pgt_deliver and the functions
 * below call it; call it early, before threads, where that matters).
 * Returns 0, or -1 with the cause in err. */
int pgt_deliver_init(char *err, size_t errlen) __attribute__((warn_unused_result));

/* pgt_deliver, also giving the server's answer on success (the webhook's
 * "HTTP 200: ok", the SMTP server's last line) in answer; a transfer ends
 * early when *stop turns true (stop may be NULL). On failure *transient
 * says whether the same delivery may succeed a little later: true for
 * connection errors and timeouts, HTTP 5xx and 429, and SMTP 4xx replies;
 * false for the rest (another HTTP 4xx such as a bad webhook, an SMTP 5xx,
 * TLS or settings problems, a stop). */
int pgt_deliver_channel(const pgt_config_t *cfg, pgt_channel_t c, const json_t *report,
                        const atomic_bool *stop, char *answer, size_t alen, bool *transient,
                        char *err, size_t errlen) __attribute__((warn_unused_result));

/* Sends subject and text (an alert) to channel c now, blocking: to Slack as
 * the webhook's text (the subject in bold, mrkdwn-escaped), by e-mail as
 * plain text. answer, *transient and the result as pgt_deliver_channel. */
int pgt_deliver_text(const pgt_config_t *cfg, pgt_channel_t c, const char *subject,
                     const char *text, const atomic_bool *stop, char *answer, size_t alen,
                     bool *transient, char *err, size_t errlen) __attribute__((warn_unused_result));

/* A private copy of what delivery, the report and the alerts read from cfg
 * ([report], [alerts], [pricing] currency, timezone, instance), for a
 * thread, since the loop frees its config on reload. NULL when out of
 * memory. Free it with pgt_config_free. */
pgt_config_t *pgt_deliver_config_copy(const pgt_config_t *src);

/* A random id for one sender's claims in reports_sent or alerts_sent: the
 * claims it makes and releases carry it. Never 0. */
int64_t pgt_deliver_claimant(void);

/* Builds the report of date and sends it to each channel of channels
 * (NULL: every configured one) that has not had it yet, recording each
 * success in reports_sent of db, and each failure (attempts, last_error).
 * force: send again even if sent. Returns 0 when every channel has it, or
 * -1 with the failures in err. */
int pgt_report_send(pgt_db_t *db, const pgt_config_t *cfg, const char *date,
                    const pgt_channel_t *channels, size_t nchannels, bool force, char *err,
                    size_t errlen);

/* What became of one channel in pgt_report_send_opts. */
#define PGT_SEND_OUTCOME_MAP(X)                                                                    \
    X(NONE, "none")       /* not asked for */                                                      \
    X(SENT, "sent")       /* delivered now */                                                      \
    X(ALREADY, "already") /* reports_sent says it was delivered before */                          \
    X(CLAIMED, "claimed") /* another process is delivering it right now */                         \
    X(FAILED, "failed")

typedef enum {
#define X(name, str) PGT_SEND_##name,
    PGT_SEND_OUTCOME_MAP(X)
#undef X
} pgt_send_outcome_t;

const char *pgt_send_outcome_name(pgt_send_outcome_t o);
int pgt_send_outcome_parse(const char *name, pgt_send_outcome_t *out)
    __attribute__((warn_unused_result));

#define PGT_SEND_ERROR_MAX 512 /* bytes of a channel's error kept in pgt_send_opts_t */

/* How pgt_report_send_opts sends, and what became of each channel. */
typedef struct pgt_send_opts {
    bool force;              /* send even if reports_sent says it was sent */
    const atomic_bool *stop; /* when it turns true (shutdown), transfers end early; or NULL */
    pgt_send_outcome_t outcomes[PGT_CHANNEL_COUNT]; /* filled in, by channel */
    bool transient[PGT_CHANNEL_COUNT]; /* filled in: FAILED, and trying again may succeed */
    char errors[PGT_CHANNEL_COUNT][PGT_SEND_ERROR_MAX]; /* filled in: "slack: why" of a failure */
} pgt_send_opts_t;

/* pgt_report_send with options: opts->outcomes says, per channel, what
 * happened, opts->errors why a channel failed (its part of err), and opts->transient whether
 * that failure was transient (see pgt_deliver_channel), so that a caller
 * may try those channels again; a failure to build the report or to use
 * the ledger is not. A channel that another process has claimed (it is
 * sending the same report now) counts as a failure in the result. */
int pgt_report_send_opts(pgt_db_t *db, const pgt_config_t *cfg, const char *date,
                         const pgt_channel_t *channels, size_t nchannels, pgt_send_opts_t *opts,
                         char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
