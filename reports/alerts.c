/* Alerts that reach people: one thread sends budget threshold crossings
 * (read from the ledger's alerts_sent, claimed there before sending so that
 * one process sends each, and marked delivered after) and this process's
 * refusals and cancels (counted in memory per channel, one message per
 * batch window) through pgt_deliver_text. See include/pgtally/alerts.h. */
#include "pgtally/alerts.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgtally/alert_batch.h"
#include "pgtally/buf.h"
#include "pgtally/deliver.h"
#include "pgtally/ledger.h"
#include "pgtally/log.h"
#include "pgtally/period.h"

_Static_assert(PGT_CHANNEL_SLACK == 0 && PGT_CHANNEL_EMAIL == 1,
               "[alerts] channels (base/config.c) name the channels in this order");

#define US_PER_S 1000000LL
#define POLL_US (1 * US_PER_S)            /* the ledger is looked at this often */
#define CLAIM_US (15 * 60 * US_PER_S)     /* a claim holds (longer than any transfer) */
#define MAX_RETRY_US (3600 * US_PER_S)    /* backoff cap */
#define MAX_AGE_US (24 * 3600 * US_PER_S) /* older undelivered crossings are not tried */
#define FANOUT_US (3600 * US_PER_S)       /* crossings this recent get a row per channel */
#define LEDGER_RETRY_US (10 * US_PER_S)   /* after the ledger failed to open */
#define BUSY_TIMEOUT_MS 10000             /* SQLite: wait for the ledger writer's lock */
#define CROSSINGS_MAX 20                  /* crossings claimed for one message */

struct pgt_alerts {
    pthread_t thread;    /* the alert thread */
    bool thread_started; /* joined at free */
    atomic_bool stop;    /* the thread must end; transfers in progress end too */

    /* Shared with the loop, under mu. */
    pthread_mutex_t mu;                          /* guards what follows */
    pthread_cond_t cv;                           /* signalled on stop and on new settings */
    pgt_config_t *posted;                        /* new settings, for the thread */
    int live;                                    /* channels events are counted for */
    pgt_alert_batch_t bursts[PGT_CHANNEL_COUNT]; /* events not yet sent, by channel */

    /* The thread's own. */
    char *path;                                /* the ledger */
    char *schema;                              /* its PostgreSQL schema, or NULL */
    char shown[512];                           /* the ledger for logs, without a password */
    pgt_config_t *cfg;                         /* settings in force (a private copy) */
    pgt_db_t *db;                              /* the ledger connection, or NULL */
    int64_t db_retry_us;                       /* when opening it is tried again */
    int64_t me;                                /* this sender's claims */
    bool ledger_failing;                       /* reading or claiming failed last time (logged) */
    int64_t burst_next_us[PGT_CHANNEL_COUNT];  /* a failed batch is tried again then */
    int64_t burst_delay_us[PGT_CHANNEL_COUNT]; /* its last backoff */
};

/* ---- settings ------------------------------------------------------------- */

int pgt_alerts_channels(const pgt_config_t *cfg)
{
    int mask = 0;
    for (int c = 0; c < PGT_CHANNEL_COUNT; c++)
        if (pgt_channel_configured(cfg, (pgt_channel_t)c) &&
            (cfg->alerts_channels < 0 || (cfg->alerts_channels & (1 << c))))
            mask |= 1 << c;
    return mask;
}

/* ---- the ledger ------------------------------------------------------------ */

/* The rows of channel ?1 (slack, or slack:user=NAME of a default budget)
 * not yet delivered, fresh enough (sent_at >= ?3) and not claimed at ?2. */
#define PENDING                                                                                    \
    "delivered_at IS NULL AND (channel = ?1 OR channel LIKE CAST(?1 AS TEXT) || ':%') "            \
    "AND coalesce(claimed_until, 0) <= CAST(?2 AS BIGINT) AND sent_at >= CAST(?3 AS BIGINT)"

/* The crossings (log rows) since ?2 without a row of channel ?1. */
#define UNFANNED                                                                                   \
    "FROM alerts_sent l WHERE (l.channel = 'log' OR l.channel LIKE 'log:%') "                      \
    "AND l.sent_at >= CAST(?2 AS BIGINT) AND l.message IS NOT NULL AND NOT EXISTS (SELECT 1 "      \
    "FROM alerts_sent d WHERE d.budget_id = l.budget_id AND d.period_start = l.period_start "      \
    "AND d.threshold_pct = l.threshold_pct AND d.channel = CAST(?1 AS TEXT) || substr(l.channel, " \
    "4))"

/* Opens the thread's ledger connection when not open (nor failing). */
static bool ledger_ready(pgt_alerts_t *a, int64_t now)
{
    /* A PostgreSQL connection that broke is opened again. */
    if (a->db && pgt_db_backend(a->db) == PGT_DB_POSTGRESQL &&
        PQstatus((PGconn *)pgt_db_handle(a->db)) == CONNECTION_BAD) {
        pgt_db_close(a->db);
        a->db = NULL;
    }
    if (a->db || now < a->db_retry_us)
        return a->db != NULL;
    char err[256];
    int version = 0;
    pgt_ledger_where_t where = {.ledger = a->path, .schema = a->schema};
    a->db = pgt_ledger_db_open(&where, true, &version, err, sizeof(err));
    if (!a->db) {
        PGT_WARN("alert_ledger_failed", "ledger=\"%s\" error=\"%s\"", a->shown, err);
        a->db_retry_us = now + LEDGER_RETRY_US;
        return false;
    }
    if (pgt_db_backend(a->db) == PGT_DB_SQLITE)
        sqlite3_busy_timeout(pgt_db_handle(a->db), BUSY_TIMEOUT_MS);
    return true;
}

/* Gives every recent crossing a row of channel ch, unless it has one: a
 * read first, so that SQLite's write lock is taken only when needed. */
static int fan_out(pgt_db_t *db, const char *ch, int64_t now, char *err, size_t errlen)
{
    int64_t missing = 0;
    if (pgt_db_int_query(db, "looking for new alerts", err, errlen, &missing,
                         "SELECT count(*) " UNFANNED, "ti", ch, now - FANOUT_US) != 0)
        return -1;
    if (!missing)
        return 0;
    return pgt_db_run(db, "queueing alerts", err, errlen, NULL, NULL,
                      "INSERT INTO alerts_sent (budget_id, period_start, threshold_pct, channel,"
                      " sent_at, message) SELECT l.budget_id, l.period_start, l.threshold_pct,"
                      " CAST(?1 AS TEXT) || substr(l.channel, 4), l.sent_at, l.message " UNFANNED
                      " ON CONFLICT DO NOTHING",
                      "ti", ch, now - FANOUT_US);
}

/* Crossings claimed for one message. */
typedef struct claimed {
    int64_t ids[CROSSINGS_MAX];      /* their rows */
    int64_t attempts[CROSSINGS_MAX]; /* attempts before this one */
    pgt_buf_t text;                  /* their messages, one a line */
    size_t n;                        /* how many */
    char first[384];                 /* the first message, for a subject */
} claimed_t;

/* A pgt_db_row_cb of (id, attempts, message). */
static int claimed_row(const pgt_db_row_t *r, void *arg)
{
    claimed_t *c = arg;
    if (c->n == CROSSINGS_MAX)
        return 0;
    c->ids[c->n] = pgt_db_int(r, 0);
    c->attempts[c->n] = pgt_db_int(r, 1);
    const char *m = pgt_db_text(r, 2) ? pgt_db_text(r, 2) : "";
    if (!c->n)
        snprintf(c->first, sizeof(c->first), "%s", m);
    pgt_buf_printf(&c->text, "%s\n", m);
    c->n++;
    return 0;
}

/* Claims up to CROSSINGS_MAX due rows of channel ch for a->me and reads
 * them into c. The UPDATE is the claim: its WHERE is checked again on the
 * row (PostgreSQL rechecks it after a concurrent commit; SQLite's write lock
 * orders the two), so two senders never hold the same row. */
static int claim(pgt_alerts_t *a, const char *ch, int64_t now, claimed_t *c, char *err,
                 size_t errlen)
{
    int64_t due = 0;
    int rc = pgt_db_int_query(a->db, "looking for alerts to send", err, errlen, &due,
                              "SELECT count(*) FROM alerts_sent WHERE " PENDING, "tii", ch, now,
                              now - MAX_AGE_US);
    if (rc != 0 || !due)
        return rc;
    rc =
        pgt_db_run(a->db, "claiming alerts", err, errlen, NULL, NULL,
                   "UPDATE alerts_sent SET claimed_by = ?4, claimed_until = ?5 WHERE " PENDING
                   " AND id IN (SELECT id FROM alerts_sent WHERE " PENDING " ORDER BY id LIMIT 20)",
                   "tiiii", ch, now, now - MAX_AGE_US, a->me, now + CLAIM_US);
    if (rc == 0 && pgt_db_changes(a->db) > 0)
        rc = pgt_db_run(
            a->db, "reading claimed alerts", err, errlen, claimed_row, c,
            "SELECT id, attempts, message FROM alerts_sent WHERE claimed_by = ?1 "
            "AND delivered_at IS NULL AND (channel = ?2 OR channel LIKE CAST(?2 AS TEXT) || ':%') "
            "ORDER BY id",
            "it", a->me, ch);
    return rc;
}

/* Records the attempt at the claimed rows: delivered, or when to try again
 * (the claim stays until then, doubling from [report] retry_interval). */
static void finish(pgt_alerts_t *a, const claimed_t *c, bool ok, const char *why, int64_t now)
{
    char err[256];
    for (size_t i = 0; i < c->n; i++) {
        int64_t d = (int64_t)a->cfg->report_retry_interval_ms * 1000;
        for (int64_t k = 0; k < c->attempts[i] && d < MAX_RETRY_US; k++)
            d *= 2;
        d = d < MAX_RETRY_US ? d : MAX_RETRY_US;
        if (pgt_db_run(a->db, "recording an alert's delivery", err, sizeof(err), NULL, NULL,
                       "UPDATE alerts_sent SET attempts = attempts + 1, last_attempt_at = ?3,"
                       " delivered_at = CASE WHEN CAST(?4 AS INTEGER) = 1 THEN CAST(?3 AS BIGINT)"
                       " END, last_error = CAST(?5 AS TEXT), claimed_by = NULL,"
                       " claimed_until = CASE WHEN CAST(?4 AS INTEGER) = 1 THEN NULL"
                       " ELSE CAST(?6 AS BIGINT) END WHERE id = ?1 AND claimed_by = ?2",
                       "iiiiti", c->ids[i], a->me, now, (int64_t)ok, ok ? NULL : why, now + d) != 0)
            PGT_ERROR("alert_record_failed", "delivered=%s error=\"%s\"", ok ? "yes" : "no", err);
    }
}

/* Sends the crossings due on channel c, in one message. */
static void send_crossings(pgt_alerts_t *a, pgt_channel_t ch, int64_t now)
{
    const char *name = pgt_channel_name(ch);
    char err[512], answer[512], why[1024];
    claimed_t c = {.n = 0};
    if (fan_out(a->db, name, now, err, sizeof(err)) != 0 ||
        claim(a, name, now, &c, err, sizeof(err)) != 0) {
        if (!a->ledger_failing) /* once, not every second */
            PGT_WARN("alert_ledger_failed", "channel=%s error=\"%s\"", name, err);
        a->ledger_failing = true;
        pgt_buf_free(&c.text);
        return;
    }
    a->ledger_failing = false;
    if (!c.n) {
        pgt_buf_free(&c.text);
        return;
    }
    pgt_buf_t subject = {0};
    if (c.n == 1)
        pgt_buf_puts(&subject, c.first);
    else
        pgt_buf_printf(&subject, "pgtally: %zu budget alerts", c.n);
    pgt_buf_printf(&c.text, "\n(sent by pgtally %s)\n", a->cfg->instance ? a->cfg->instance : "");
    bool transient = false;
    int rc = -1;
    if (subject.failed || c.text.failed)
        snprintf(why, sizeof(why), "out of memory");
    else
        rc = pgt_deliver_text(a->cfg, ch, subject.s, c.text.s, &a->stop, answer, sizeof(answer),
                              &transient, why, sizeof(why));
    finish(a, &c, rc == 0, why, pgt_clock_us());
    if (rc == 0)
        PGT_INFO("alert_sent", "kind=budget channel=%s alerts=%zu answer=\"%s\"", name, c.n,
                 answer);
    else
        PGT_WARN("alert_failed", "kind=budget channel=%s alerts=%zu transient=%s error=\"%s\"",
                 name, c.n, transient ? "yes" : "no", why);
    pgt_buf_free(&subject);
    pgt_buf_free(&c.text);
}

/* ---- refusals and cancels ------------------------------------------------- */

/* Sends channel ch's batch when its window has passed; a failed one joins
 * the next window's, with backoff. */
static void send_burst(pgt_alerts_t *a, pgt_channel_t ch, int64_t now)
{
    pgt_alert_batch_t b;
    pthread_mutex_lock(&a->mu);
    pgt_alert_batch_t *live = &a->bursts[ch];
    bool due = live->first_us &&
               now >= live->first_us + (int64_t)a->cfg->alerts_batch_interval_ms * 1000 &&
               now >= a->burst_next_us[ch];
    if (due) {
        b = *live;
        memset(live, 0, sizeof(*live));
    }
    pthread_mutex_unlock(&a->mu);
    if (!due)
        return;
    pgt_buf_t subject = {0}, text = {0};
    pgt_alert_batch_render(&b, a->cfg->instance ? a->cfg->instance : "", &subject, &text);
    char answer[512], why[1024] = "out of memory";
    bool transient = false;
    int rc = subject.failed || text.failed
                 ? -1
                 : pgt_deliver_text(a->cfg, ch, subject.s, text.s, &a->stop, answer, sizeof(answer),
                                    &transient, why, sizeof(why));
    const char *name = pgt_channel_name(ch);
    if (rc == 0) {
        a->burst_delay_us[ch] = 0;
        PGT_INFO("alert_sent",
                 "kind=refusals channel=%s refused=%" PRIu64 " cancelled=%" PRIu64 " answer=\"%s\"",
                 name, b.refused, b.cancelled, answer);
    } else {
        int64_t d = a->burst_delay_us[ch] ? a->burst_delay_us[ch] * 2
                                          : (int64_t)a->cfg->report_retry_interval_ms * 1000;
        a->burst_delay_us[ch] = d < MAX_RETRY_US ? d : MAX_RETRY_US;
        a->burst_next_us[ch] = pgt_clock_us() + a->burst_delay_us[ch];
        PGT_WARN("alert_failed",
                 "kind=refusals channel=%s refused=%" PRIu64 " cancelled=%" PRIu64
                 " transient=%s retry_in_s=%.1f error=\"%s\"",
                 name, b.refused, b.cancelled, transient ? "yes" : "no",
                 (double)a->burst_delay_us[ch] / US_PER_S, why);
        pthread_mutex_lock(&a->mu);
        pgt_alert_batch_merge(&a->bursts[ch], &b);
        pthread_mutex_unlock(&a->mu);
    }
    pgt_buf_free(&subject);
    pgt_buf_free(&text);
}

void pgt_alerts_event(pgt_alerts_t *a, const pgt_who_t *who, const pgt_verdict_t *v)
{
    if (!a)
        return;
    int64_t now = pgt_clock_us();
    pthread_mutex_lock(&a->mu);
    for (int c = 0; c < PGT_CHANNEL_COUNT; c++)
        if (a->live & (1 << c))
            pgt_alert_batch_add(&a->bursts[c], who, v, now);
    pthread_mutex_unlock(&a->mu);
}

/* ---- the thread ----------------------------------------------------------- */

/* Takes settings posted by the loop, if any. Call with mu held. */
static void take_posted(pgt_alerts_t *a)
{
    if (!a->posted)
        return;
    pgt_config_free(a->cfg);
    a->cfg = a->posted;
    a->posted = NULL;
}

/* One round: crossings from the ledger, then the batches that are due.
 * Returns when to wake next. */
static int64_t run_round(pgt_alerts_t *a)
{
    int64_t now = pgt_clock_us();
    int mask = pgt_alerts_channels(a->cfg);
    bool ready = mask && ledger_ready(a, now);
    for (int c = 0; c < PGT_CHANNEL_COUNT && !atomic_load(&a->stop); c++) {
        if (!(mask & (1 << c)))
            continue;
        if (ready)
            send_crossings(a, (pgt_channel_t)c, now);
        send_burst(a, (pgt_channel_t)c, pgt_clock_us());
    }
    return now + POLL_US;
}

static void *thread_main(void *arg)
{
    pgt_alerts_t *a = arg;
    pthread_setname_np(pthread_self(), "pgt-alerts");
    pthread_mutex_lock(&a->mu);
    while (!atomic_load(&a->stop)) {
        take_posted(a);
        pthread_mutex_unlock(&a->mu);
        int64_t wake = run_round(a);
        pthread_mutex_lock(&a->mu);
        int64_t d = wake - pgt_clock_us();
        if (atomic_load(&a->stop) || a->posted || d <= 0)
            continue;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + d * 1000;
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&a->cv, &a->mu, &ts);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- life cycle ----------------------------------------------------------- */

pgt_alerts_t *pgt_alerts_new(const pgt_config_t *cfg, const char *ledger_path, char *err,
                             size_t errlen)
{
    if (pgt_deliver_init(err, errlen) != 0)
        return NULL;
    pgt_alerts_t *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&a->stop, false);
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cv, &attr);
    pthread_condattr_destroy(&attr);
    a->path = strdup(ledger_path);
    a->schema = cfg->ledger_schema ? strdup(cfg->ledger_schema) : NULL;
    pgt_db_describe(ledger_path, a->shown, sizeof(a->shown));
    a->cfg = pgt_deliver_config_copy(cfg);
    a->me = pgt_deliver_claimant();
    a->live = pgt_alerts_channels(cfg);
    if (!a->path || !a->cfg || (cfg->ledger_schema && !a->schema)) {
        snprintf(err, errlen, "out of memory");
        pgt_alerts_free(a);
        return NULL;
    }
    if (pthread_create(&a->thread, NULL, thread_main, a) != 0) {
        snprintf(err, errlen, "cannot start the alert thread");
        pgt_alerts_free(a);
        return NULL;
    }
    a->thread_started = true;
    char names[64];
    pgt_channel_list(a->live, names, sizeof(names));
    PGT_INFO("alerts_started", "channels=%s batch_interval_ms=%d", names,
             cfg->alerts_batch_interval_ms);
    return a;
}

void pgt_alerts_configure(pgt_alerts_t *a, const pgt_config_t *cfg)
{
    pgt_config_t *copy = pgt_deliver_config_copy(cfg);
    if (!copy) {
        PGT_ERROR("out_of_memory", "what=alert_settings");
        return;
    }
    char names[64];
    pgt_channel_list(pgt_alerts_channels(cfg), names, sizeof(names));
    PGT_INFO("alerts_configured", "channels=%s batch_interval_ms=%d", names,
             cfg->alerts_batch_interval_ms);
    pthread_mutex_lock(&a->mu);
    pgt_config_free(a->posted);
    a->posted = copy;
    a->live = pgt_alerts_channels(cfg);
    for (int c = 0; c < PGT_CHANNEL_COUNT; c++)
        if (!(a->live & (1 << c)))
            memset(&a->bursts[c], 0, sizeof(a->bursts[c]));
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

void pgt_alerts_stop(pgt_alerts_t *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    atomic_store(&a->stop, true);
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

void pgt_alerts_free(pgt_alerts_t *a)
{
    if (!a)
        return;
    pgt_alerts_stop(a);
    if (a->thread_started)
        pthread_join(a->thread, NULL);
    for (int c = 0; c < PGT_CHANNEL_COUNT; c++)
        if (a->bursts[c].first_us)
            PGT_WARN("alerts_unsent",
                     "channel=%s refused=%" PRIu64 " cancelled=%" PRIu64
                     " message=\"pgtally stopped before the batch window ended\"",
                     pgt_channel_name((pgt_channel_t)c), a->bursts[c].refused,
                     a->bursts[c].cancelled);
    pgt_db_close(a->db);
    pgt_config_free(a->posted);
    pgt_config_free(a->cfg);
    free(a->path);
    free(a->schema);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
}
