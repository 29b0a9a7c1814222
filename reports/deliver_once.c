/* Sending a day's report once per channel: reports_sent in the ledger
 * records each success and failure, and a claim with an expiry keeps a
 * second pgtally (or pgtallyctl, or a restart) sharing the ledger from
 * sending the same report at the same time. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "pgtally/deliver.h"
#include "pgtally/log.h"
#include "pgtally/names.h"
#include "pgtally/period.h"
#include "pgtally/report.h"

/* How long a claim holds: well above the longest transfer (two minutes
 * each), so that only a sender that died leaves one to expire. */
#define CLAIM_US (15 * 60 * 1000000LL)
#define LOG_TEXT_MAX 400 /* characters of an answer or error in a log line */

PGT_NAMES_DEFINE(PGT_SEND_OUTCOME_MAP, pgt_send_outcome_t, pgt_send_outcome_name,
                 pgt_send_outcome_parse)

/* What claim found. */
typedef enum {
    CLAIM_TAKEN,  /* ours now: send it */
    CLAIM_SENT,   /* delivered before */
    CLAIM_BUSY,   /* another sender holds it */
    CLAIM_FAILED, /* the ledger failed; err says why */
} claim_t;

/* Appends "fmt..." to err, separated from what is there by "; ". */
static void add_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_error(char *err, size_t errlen, const char *fmt, ...)
{
    size_t used = strnlen(err, errlen);
    if (used + 3 >= errlen)
        return;
    if (used)
        used += (size_t)snprintf(err + used, errlen - used, "; ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + used, errlen - used, fmt, ap);
    va_end(ap);
}

/* Sets the outcome of channel c to o, a failure (FAILED or CLAIMED), and
 * adds why to opts->errors and err, after the channel's name unless why
 * names it already (named). */
static void set_failed(pgt_send_opts_t *opts, pgt_channel_t c, pgt_send_outcome_t o, bool transient,
                       bool named, const char *why, char *err, size_t errlen)
{
    const char *name = named ? "" : pgt_channel_name(c), *sep = named ? "" : ": ";
    opts->outcomes[c] = o;
    opts->transient[c] = transient;
    opts->errors[c][0] = '\0';
    add_error(opts->errors[c], sizeof(opts->errors[c]), "%s%s%s", name, sep, why);
    add_error(err, errlen, "%s%s%s", name, sep, why);
}

/* Copies s for a log value in double quotes: quotes become ', control
 * characters spaces, and it is cut at LOG_TEXT_MAX characters. */
static void log_text(const char *s, char *out, size_t outlen)
{
    size_t n = 0;
    for (; *s && n + 1 < outlen && n < LOG_TEXT_MAX; s++)
        out[n++] = *s == '"' ? '\'' : ((unsigned char)*s < ' ' || *s == 0x7f) ? ' ' : *s;
    out[n] = '\0';
}

/* Whether date is YYYY-MM-DD. */
static bool date_ok(const char *date)
{
    static const char shape[] = "dddd-dd-dd";
    if (strlen(date) != sizeof(shape) - 1)
        return false;
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == 'd' ? (date[i] < '0' || date[i] > '9') : date[i] != '-')
            return false;
    return true;
}

int64_t pgt_deliver_claimant(void)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = ((uint64_t)pgt_clock_us() << 20) ^ (uint64_t)getpid();
    return (int64_t)(r >> 1) + 1;
}

/* A pgt_db_row_cb of (sent, claimed_until): reads the row of a claim. */
static int claim_row(const pgt_db_row_t *r, void *arg)
{
    int64_t *v = arg;
    v[0] = pgt_db_int(r, 0);
    v[1] = pgt_db_int(r, 1);
    return 0;
}

/* Takes (date, channel) for claimant me until now + CLAIM_US unless it was
 * sent (and not force) or another sender's claim has not expired (*until
 * says till when). The UPDATE is the claim: it checks both in its WHERE,
 * so that of two senders at the same time only one changes the row
 * (SQLite's write lock, taken by the transaction, orders them; PostgreSQL
 * rechecks the WHERE of the second once the first commits). */
static claim_t claim(pgt_db_t *db, const char *date, const char *channel, bool force, int64_t me,
                     int64_t now, int64_t *until, char *err, size_t errlen)
{
    int64_t row[2] = {0, 0};
    *until = 0;
    int rc = pgt_db_begin(db, true, err, errlen);
    if (rc == 0)
        rc = pgt_db_run(db, "claiming in reports_sent", err, errlen, NULL, NULL,
                        "INSERT INTO reports_sent (report_date, channel) VALUES (?1, ?2) "
                        "ON CONFLICT (report_date, channel) DO NOTHING",
                        "tt", date, channel);
    if (rc == 0)
        rc = pgt_db_run(db, "claiming in reports_sent", err, errlen, NULL, NULL,
                        "UPDATE reports_sent SET claimed_by = ?3, claimed_until = ?4 "
                        "WHERE report_date = ?1 AND channel = ?2 "
                        "AND (sent_at IS NULL OR CAST(?5 AS INTEGER) = 1) "
                        "AND coalesce(claimed_until, 0) <= CAST(?6 AS BIGINT)",
                        "ttiiii", date, channel, me, now + CLAIM_US, (int64_t)force, now);
    bool taken = rc == 0 && pgt_db_changes(db) == 1;
    if (rc == 0 && !taken)
        rc = pgt_db_run(db, "claiming in reports_sent", err, errlen, claim_row, row,
                        "SELECT CASE WHEN sent_at IS NULL THEN 0 ELSE 1 END, "
                        "coalesce(claimed_until, 0) FROM reports_sent "
                        "WHERE report_date = ?1 AND channel = ?2",
                        "tt", date, channel);
    if (pgt_db_finish(db, rc, err, errlen) != 0)
        return CLAIM_FAILED;
    if (taken)
        return CLAIM_TAKEN;
    *until = row[1];
    /* Neither sent nor claimed: the other sender ended between the UPDATE
     * and the SELECT (PostgreSQL); it is free again, for the next round. */
    return row[0] && !force ? CLAIM_SENT : CLAIM_BUSY;
}

/* A pgt_db_row_cb of RETURNING attempts. */
static int attempts_row(const pgt_db_row_t *r, void *arg)
{
    *(int64_t *)arg = pgt_db_int(r, 0);
    return 0;
}

/* Records the end of an attempt by claimant me and releases its claim: on
 * success sent_at, otherwise last_error. Returns the attempts so far, 0
 * when the claim was no longer ours (it had expired and another sender
 * took it), or -1 with the cause in err when the ledger failed. */
static int64_t finish(pgt_db_t *db, const char *date, const char *channel, int64_t me, bool ok,
                      const char *error, int64_t now, char *err, size_t errlen)
{
    int64_t attempts = 0;
    int rc = pgt_db_run(
        db, "recording the attempt in reports_sent", err, errlen, attempts_row, &attempts,
        "UPDATE reports_sent SET attempts = attempts + 1, last_attempt_at = CAST(?4 AS BIGINT), "
        "sent_at = CASE WHEN CAST(?5 AS INTEGER) = 1 THEN CAST(?4 AS BIGINT) ELSE sent_at END, "
        "last_error = CASE WHEN CAST(?5 AS INTEGER) = 1 THEN NULL ELSE CAST(?6 AS TEXT) END, "
        "claimed_by = NULL, claimed_until = NULL "
        "WHERE report_date = ?1 AND channel = ?2 AND claimed_by = ?3 RETURNING attempts",
        "ttiiit", date, channel, me, now, (int64_t)ok, error);
    return rc == 0 ? attempts : -1;
}

/* Sends the built report (or, when build failed, records why) to claimed
 * channel c and records the attempt. Returns 0 when delivered. */
static int send_claimed(pgt_db_t *db, const pgt_config_t *cfg, const char *date, pgt_channel_t c,
                        const json_t *report, const char *build_error, pgt_send_opts_t *opts,
                        int64_t me, char *err, size_t errlen)
{
    const char *channel = pgt_channel_name(c);
    char answer[512], why[1024] = "", text[LOG_TEXT_MAX + 1], failed[512];
    bool transient = false;
    int rc = -1;
    if (report)
        rc = pgt_deliver_channel(cfg, c, report, opts->stop, answer, sizeof(answer), &transient,
                                 why, sizeof(why));
    else
        snprintf(why, sizeof(why), "building the report: %s", build_error);
    int64_t attempts = finish(db, date, channel, me, rc == 0, rc == 0 ? NULL : why, pgt_clock_us(),
                              failed, sizeof(failed));
    if (attempts < 0)
        PGT_ERROR("report_record_failed", "date=%s channel=%s delivered=%s error=\"%s\"", date,
                  channel, rc == 0 ? "yes" : "no", failed);
    else if (attempts == 0)
        PGT_WARN("report_claim_lost",
                 "date=%s channel=%s message=\"the claim expired during "
                 "the attempt and another sender took it\"",
                 date, channel);
    if (rc == 0) {
        log_text(answer, text, sizeof(text));
        PGT_INFO("report_sent", "date=%s channel=%s attempt=%" PRId64 " answer=\"%s\"", date,
                 channel, attempts, text);
        opts->outcomes[c] = PGT_SEND_SENT;
        return 0;
    }
    log_text(why, text, sizeof(text));
    PGT_WARN("report_failed", "date=%s channel=%s attempt=%" PRId64 " error=\"%s\"", date, channel,
             attempts, text);
    set_failed(opts, c, PGT_SEND_FAILED, transient, false, why, err, errlen);
    return -1;
}

/* Claims channel c of date for me. Returns true when it is ours to send;
 * otherwise sets its outcome (and err for a failure). */
static bool take(pgt_db_t *db, const pgt_config_t *cfg, const char *date, pgt_channel_t c,
                 pgt_send_opts_t *opts, int64_t me, char *err, size_t errlen)
{
    const char *channel = pgt_channel_name(c);
    char why[512];
    int64_t until = 0;
    if (pgt_channel_check(cfg, c, why, sizeof(why)) != 0) {
        set_failed(opts, c, PGT_SEND_FAILED, false, true, why, err, errlen);
        return false;
    }
    switch (claim(db, date, channel, opts->force, me, pgt_clock_us(), &until, why, sizeof(why))) {
    case CLAIM_TAKEN:
        return true;
    case CLAIM_SENT:
        PGT_DEBUG("report_already_sent", "date=%s channel=%s", date, channel);
        opts->outcomes[c] = PGT_SEND_ALREADY;
        return false;
    case CLAIM_BUSY:
        PGT_INFO("report_claimed_elsewhere", "date=%s channel=%s claimed_for_s=%" PRId64, date,
                 channel, (until - pgt_clock_us()) / 1000000);
        set_failed(opts, c, PGT_SEND_CLAIMED, false, false, "another process is sending it now",
                   err, errlen);
        return false;
    case CLAIM_FAILED:
        break;
    }
    PGT_WARN("report_failed", "date=%s channel=%s error=\"%s\"", date, channel, why);
    set_failed(opts, c, PGT_SEND_FAILED, false, false, why, err, errlen);
    return false;
}

/* The channels to send to: those given, or every configured one. Returns
 * how many, or 0 with err set. */
static size_t channel_list(const pgt_config_t *cfg, const pgt_channel_t *channels, size_t n,
                           pgt_channel_t *out, char *err, size_t errlen)
{
    size_t k = 0;
    if (channels) {
        for (size_t i = 0; i < n && k < PGT_CHANNEL_COUNT; i++) {
            bool dup = false;
            for (size_t j = 0; j < k; j++)
                dup |= out[j] == channels[i];
            if (!dup && (unsigned)channels[i] < PGT_CHANNEL_COUNT)
                out[k++] = channels[i];
        }
    } else {
        for (int c = 0; c < PGT_CHANNEL_COUNT; c++)
            if (pgt_channel_configured(cfg, (pgt_channel_t)c))
                out[k++] = (pgt_channel_t)c;
    }
    if (!k)
        snprintf(err, errlen,
                 "no channel to send to: configure [report] slack_webhook_url or "
                 "smtp_url, mail_from and mail_to");
    return k;
}

int pgt_report_send_opts(pgt_db_t *db, const pgt_config_t *cfg, const char *date,
                         const pgt_channel_t *channels, size_t nchannels, pgt_send_opts_t *opts,
                         char *err, size_t errlen)
{
    pgt_channel_t list[PGT_CHANNEL_COUNT], mine[PGT_CHANNEL_COUNT];
    size_t nmine = 0;
    err[0] = '\0';
    for (int c = 0; c < PGT_CHANNEL_COUNT; c++) {
        opts->outcomes[c] = PGT_SEND_NONE;
        opts->transient[c] = false;
        opts->errors[c][0] = '\0';
    }
    if (!date_ok(date)) {
        snprintf(err, errlen, "date '%s': use YYYY-MM-DD", date);
        return -1;
    }
    size_t n = channel_list(cfg, channels, nchannels, list, err, errlen);
    if (!n)
        return -1;
    int64_t me = pgt_deliver_claimant();
    for (size_t i = 0; i < n; i++)
        if (take(db, cfg, date, list[i], opts, me, err, errlen))
            mine[nmine++] = list[i];
    if (nmine) {
        pgt_report_opts_t ropts;
        pgt_report_opts_from_config(cfg, &ropts);
        char why[512] = "";
        json_t *report = pgt_report_build(db, date, &ropts, why, sizeof(why));
        for (size_t i = 0; i < nmine; i++)
            (void)send_claimed(db, cfg, date, mine[i], report, why, opts, me, err, errlen);
        json_decref(report);
    }
    for (size_t i = 0; i < n; i++)
        if (opts->outcomes[list[i]] != PGT_SEND_SENT && opts->outcomes[list[i]] != PGT_SEND_ALREADY)
            return -1;
    return 0;
}

int pgt_report_send(pgt_db_t *db, const pgt_config_t *cfg, const char *date,
                    const pgt_channel_t *channels, size_t nchannels, bool force, char *err,
                    size_t errlen)
{
    pgt_send_opts_t opts = {.force = force};
    return pgt_report_send_opts(db, cfg, date, channels, nchannels, &opts, err, errlen);
}
