/* The daily report's schedule: one thread that wakes when a report falls
 * due (or a retry does), sends the due reports through pgt_report_send_opts,
 * and sleeps again. "Now" is pgt_clock_us, so PGTALLY_CLOCK_OFFSET moves
 * the schedule in tests. See include/pgtally/scheduler.h. */
#include "pgtally/scheduler.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgtally/deliver.h"
#include "pgtally/ledger.h"
#include "pgtally/log.h"
#include "pgtally/period.h"

#define US_PER_S 1000000LL
#define MAX_SLEEP_US (60 * US_PER_S)    /* wake at least this often (clock changes) */
#define MAX_RETRY_US (3600 * US_PER_S)  /* backoff cap */
#define LEDGER_RETRY_US (10 * US_PER_S) /* when the ledger cannot be opened */
#define BUSY_TIMEOUT_MS 10000           /* SQLite: wait for the ledger writer's lock */
#define MAX_DATES 366                   /* catch_up_days is at most 365 */

/* Where one (date, channel) stands in this process. */
typedef struct slot {
    char date[11];                       /* YYYY-MM-DD */
    bool done[PGT_CHANNEL_COUNT];        /* delivered (by anyone) */
    int64_t next_us[PGT_CHANNEL_COUNT];  /* not before this (after a failure) */
    int64_t delay_us[PGT_CHANNEL_COUNT]; /* the last backoff, doubled at the next failure */
} slot_t;

struct pgt_scheduler {
    pthread_t thread;    /* the delivery thread */
    bool thread_started; /* joined at free */
    atomic_bool stop;    /* the thread must end; transfers in progress end too */

    /* Shared with the thread, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;    /* signalled on stop and on new settings */
    pgt_config_t *posted; /* new settings, for the thread */

    /* The thread's own. */
    char *path;        /* the ledger: an SQLite path, or a PostgreSQL URI or conninfo */
    char *schema;      /* its PostgreSQL schema ([ledger] schema at start), or NULL */
    char shown[512];   /* the ledger for logs, without a password */
    int64_t start_us;  /* when scheduling began: catch_up_days = 0 sends only later days */
    pgt_config_t *cfg; /* settings in force (a private copy) */
    slot_t *slots;     /* dates in the window */
    size_t nslots, slots_cap;
    char dates[MAX_DATES][11]; /* the dates due in this round */
};

/* ---- settings ------------------------------------------------------------- */

bool pgt_scheduler_wanted(const pgt_config_t *cfg)
{
    for (int c = 0; c < PGT_CHANNEL_COUNT; c++)
        if (pgt_channel_configured(cfg, (pgt_channel_t)c))
            return true;
    return false;
}

/* ---- the calendar --------------------------------------------------------- */

/* The local time hh:mm (minutes after midnight) of the day mday of
 * year/mon (rolled over as mktime does), in unix seconds. */
static time_t local_at(int year, int mon, int mday, int minutes)
{
    struct tm tm = {.tm_year = year, .tm_mon = mon, .tm_mday = mday};
    tm.tm_hour = minutes / 60;
    tm.tm_min = minutes % 60;
    tm.tm_isdst = -1;
    return mktime(&tm);
}

/* The local date mday of year/mon (rolled over) as YYYY-MM-DD. */
static void local_date(int year, int mon, int mday, char out[11])
{
    time_t noon = local_at(year, mon, mday, 12 * 60);
    struct tm tm;
    localtime_r(&noon, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

size_t pgt_schedule_due(int at_min, int catch_up_days, int64_t now_us, int64_t start_us,
                        char (*dates)[11], size_t max, int64_t *next_due_us)
{
    time_t now = (time_t)(now_us / US_PER_S);
    struct tm tm;
    localtime_r(&now, &tm);
    time_t today_due = local_at(tm.tm_year, tm.tm_mon, tm.tm_mday, at_min);
    int back = now >= today_due ? 1 : 2; /* days from today to the latest due date */
    *next_due_us =
        (int64_t)(back == 1 ? local_at(tm.tm_year, tm.tm_mon, tm.tm_mday + 1, at_min) : today_due) *
        US_PER_S;
    int window = catch_up_days > 0 ? catch_up_days : 1;
    if ((size_t)window > max)
        window = (int)max;
    size_t n = 0;
    for (int i = window - 1; i >= 0; i--) {
        int mday = tm.tm_mday - back - i;
        time_t due = local_at(tm.tm_year, tm.tm_mon, mday + 1, at_min);
        if (catch_up_days == 0 && (int64_t)due * US_PER_S < start_us)
            continue;
        local_date(tm.tm_year, tm.tm_mon, mday, dates[n++]);
    }
    return n;
}

/* ---- state per date ------------------------------------------------------- */

/* Says so when a date leaves the window with a channel that failed. */
static void abandon(const pgt_scheduler_t *s, const slot_t *sl)
{
    for (int c = 0; c < PGT_CHANNEL_COUNT; c++)
        if (!sl->done[c] && sl->delay_us[c] && pgt_channel_configured(s->cfg, (pgt_channel_t)c))
            PGT_WARN("report_abandoned",
                     "date=%s channel=%s message=\"older than catch_up_days; send it with "
                     "pgtallyctl report --date %s --send %s\"",
                     sl->date, pgt_channel_name((pgt_channel_t)c), sl->date,
                     pgt_channel_name((pgt_channel_t)c));
}

/* Keeps only the slots of dates (n of them), adding the missing ones.
 * Returns -1 when out of memory. */
static int slots_sync(pgt_scheduler_t *s, char dates[][11], size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < s->nslots; i++) {
        bool keep = false;
        for (size_t j = 0; j < n && !keep; j++)
            keep = strcmp(s->slots[i].date, dates[j]) == 0;
        if (keep)
            s->slots[k++] = s->slots[i];
        else
            abandon(s, &s->slots[i]);
    }
    s->nslots = k;
    if (n > s->slots_cap) {
        slot_t *grown = realloc(s->slots, n * sizeof(*grown));
        if (!grown)
            return -1;
        s->slots = grown;
        s->slots_cap = n;
    }
    for (size_t j = 0; j < n; j++) {
        bool have = false;
        for (size_t i = 0; i < s->nslots && !have; i++)
            have = strcmp(s->slots[i].date, dates[j]) == 0;
        if (!have) {
            memset(&s->slots[s->nslots], 0, sizeof(s->slots[0]));
            memcpy(s->slots[s->nslots++].date, dates[j], 11);
        }
    }
    return 0;
}

static slot_t *slot_of(pgt_scheduler_t *s, const char *date)
{
    for (size_t i = 0; i < s->nslots; i++)
        if (strcmp(s->slots[i].date, date) == 0)
            return &s->slots[i];
    return NULL;
}

/* After an attempt at (sl, c) that ended with outcome o at now: done, or
 * when to try again. */
static void note_outcome(const pgt_scheduler_t *s, slot_t *sl, int c, pgt_send_outcome_t o,
                         int64_t now)
{
    int64_t first = (int64_t)s->cfg->report_retry_interval_ms * 1000;
    if (o == PGT_SEND_SENT || o == PGT_SEND_ALREADY) {
        sl->done[c] = true;
    } else if (o == PGT_SEND_CLAIMED) {
        /* Another process is sending it: look again later, without backoff. */
        sl->next_us[c] = now + first;
    } else {
        int64_t d = sl->delay_us[c] ? sl->delay_us[c] * 2 : first;
        sl->delay_us[c] = d < MAX_RETRY_US ? d : MAX_RETRY_US;
        sl->next_us[c] = now + sl->delay_us[c];
        PGT_INFO("report_retry", "date=%s channel=%s in_s=%.1f", sl->date,
                 pgt_channel_name((pgt_channel_t)c), (double)sl->delay_us[c] / US_PER_S);
    }
}

/* Opens the thread's ledger connection, or logs why not. */
static pgt_db_t *open_ledger(const pgt_scheduler_t *s)
{
    char err[256];
    int version = 0;
    pgt_ledger_where_t where = {.ledger = s->path, .schema = s->schema};
    pgt_db_t *db = pgt_ledger_db_open(&where, true, &version, err, sizeof(err));
    if (!db)
        PGT_WARN("report_ledger_failed", "ledger=\"%s\" error=\"%s\"", s->shown, err);
    else if (pgt_db_backend(db) == PGT_DB_SQLITE)
        sqlite3_busy_timeout(pgt_db_handle(db), BUSY_TIMEOUT_MS);
    return db;
}

/* The ledger connection of a round, opened when first needed. */
typedef struct round_db {
    pgt_db_t *db; /* the connection, or NULL */
    bool failed;  /* opening it failed in this round: do not try again */
} round_db_t;

/* Sends date's report to the channels of slot sl that are due at now,
 * over r's connection. Returns when the slot next needs attention
 * (INT64_MAX: never). */
static int64_t run_slot(pgt_scheduler_t *s, round_db_t *r, slot_t *sl, int64_t now)
{
    pgt_channel_t chans[PGT_CHANNEL_COUNT];
    size_t n = 0;
    int64_t wake = INT64_MAX;
    for (int c = 0; c < PGT_CHANNEL_COUNT; c++) {
        if (sl->done[c] || !pgt_channel_configured(s->cfg, (pgt_channel_t)c))
            continue;
        if (sl->next_us[c] <= now)
            chans[n++] = (pgt_channel_t)c;
        else if (sl->next_us[c] < wake)
            wake = sl->next_us[c];
    }
    if (!n)
        return wake;
    if (!r->db && (r->failed || !(r->db = open_ledger(s)))) {
        r->failed = true;
        return now + LEDGER_RETRY_US;
    }
    pgt_send_opts_t opts = {.stop = &s->stop};
    char err[2048];
    /* Each channel's outcome says what to do next; the log has the details. */
    if (pgt_report_send_opts(r->db, s->cfg, sl->date, chans, n, &opts, err, sizeof(err)) != 0)
        PGT_DEBUG("report_round", "date=%s error=\"%s\"", sl->date, err);
    int64_t after = pgt_clock_us();
    for (size_t i = 0; i < n; i++) {
        note_outcome(s, sl, chans[i], opts.outcomes[chans[i]], after);
        if (!sl->done[chans[i]] && sl->next_us[chans[i]] < wake)
            wake = sl->next_us[chans[i]];
    }
    return wake;
}

/* One round: sends whatever is due now, over a ledger connection opened
 * for the round when something is due (so that a PostgreSQL connection
 * lost meanwhile is not reused). Returns when to wake next. */
static int64_t run_due(pgt_scheduler_t *s)
{
    int64_t now = pgt_clock_us(), next_due = 0;
    size_t n = pgt_schedule_due(s->cfg->report_time_min, s->cfg->report_catch_up_days, now,
                                s->start_us, s->dates, MAX_DATES, &next_due);
    if (slots_sync(s, s->dates, n) != 0)
        return now + LEDGER_RETRY_US;
    int64_t wake = next_due;
    round_db_t r = {0};
    for (size_t i = 0; i < n && !atomic_load(&s->stop); i++) {
        slot_t *sl = slot_of(s, s->dates[i]);
        int64_t w = sl ? run_slot(s, &r, sl, now) : INT64_MAX;
        if (w < wake)
            wake = w;
    }
    pgt_db_close(r.db);
    return wake;
}

/* ---- the thread ----------------------------------------------------------- */

/* Takes settings posted by the loop, if any. Call with mu held. */
static void take_posted(pgt_scheduler_t *s)
{
    if (!s->posted)
        return;
    pgt_config_free(s->cfg);
    s->cfg = s->posted;
    s->posted = NULL;
}

static void log_schedule(const pgt_scheduler_t *s)
{
    char chans[64];
    int mask = 0;
    for (int c = 0; c < PGT_CHANNEL_COUNT; c++)
        if (pgt_channel_configured(s->cfg, (pgt_channel_t)c))
            mask |= 1 << c;
    pgt_channel_list(mask, chans, sizeof(chans));
    PGT_INFO("report_schedule", "time=%02d:%02d catch_up_days=%d retry_interval_ms=%d channels=%s",
             s->cfg->report_time_min / 60, s->cfg->report_time_min % 60,
             s->cfg->report_catch_up_days, s->cfg->report_retry_interval_ms, chans);
}

/* Sleeps until wake_us (on pgt_clock_us's scale, at most MAX_SLEEP_US),
 * a stop, or new settings. Call with mu held. */
static void sleep_until(pgt_scheduler_t *s, int64_t wake_us)
{
    int64_t d = wake_us - pgt_clock_us();
    if (d <= 0 || s->posted)
        return;
    if (d > MAX_SLEEP_US)
        d = MAX_SLEEP_US;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + d * 1000;
    ts.tv_sec += (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

static void *thread_main(void *arg)
{
    pgt_scheduler_t *s = arg;
    pthread_setname_np(pthread_self(), "pgt-report");
    log_schedule(s);
    pthread_mutex_lock(&s->mu);
    while (!atomic_load(&s->stop)) {
        bool fresh = s->posted != NULL;
        take_posted(s);
        pthread_mutex_unlock(&s->mu);
        if (fresh)
            log_schedule(s);
        int64_t wake = run_due(s);
        pthread_mutex_lock(&s->mu);
        if (!atomic_load(&s->stop))
            sleep_until(s, wake);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- life cycle ----------------------------------------------------------- */

pgt_scheduler_t *pgt_scheduler_new(const pgt_config_t *cfg, const char *ledger_path, char *err,
                                   size_t errlen)
{
    if (pgt_deliver_init(err, errlen) != 0)
        return NULL;
    pgt_scheduler_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&s->stop, false);
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &attr);
    pthread_condattr_destroy(&attr);
    s->path = strdup(ledger_path);
    s->schema = cfg->ledger_schema ? strdup(cfg->ledger_schema) : NULL;
    pgt_db_describe(ledger_path, s->shown, sizeof(s->shown));
    s->cfg = pgt_deliver_config_copy(cfg);
    s->start_us = pgt_clock_us();
    if (!s->path || !s->cfg || (cfg->ledger_schema && !s->schema)) {
        snprintf(err, errlen, "out of memory");
        pgt_scheduler_free(s);
        return NULL;
    }
    if (pthread_create(&s->thread, NULL, thread_main, s) != 0) {
        snprintf(err, errlen, "cannot start the report thread");
        pgt_scheduler_free(s);
        return NULL;
    }
    s->thread_started = true;
    return s;
}

void pgt_scheduler_configure(pgt_scheduler_t *s, const pgt_config_t *cfg)
{
    pgt_config_t *copy = pgt_deliver_config_copy(cfg);
    if (!copy) {
        PGT_ERROR("out_of_memory", "what=report_settings");
        return;
    }
    pthread_mutex_lock(&s->mu);
    pgt_config_free(s->posted);
    s->posted = copy;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void pgt_scheduler_stop(pgt_scheduler_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stop, true);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void pgt_scheduler_free(pgt_scheduler_t *s)
{
    if (!s)
        return;
    pgt_scheduler_stop(s);
    if (s->thread_started)
        pthread_join(s->thread, NULL);
    pgt_config_free(s->posted);
    pgt_config_free(s->cfg);
    free(s->slots);
    free(s->path);
    free(s->schema);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
