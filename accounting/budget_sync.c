/* The ledger thread of budget enforcement: its own connection to the
 * ledger (SQLite or PostgreSQL) polls the settings version and the spend
 * rollup of other instances, reads role memberships through libpq and
 * records alerts; the loop takes what it posts. See
 * include/pgtally/budget_sync.h and docs/budgets.md. */
#include "pgtally/budget_sync.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgtally/db.h"
#include "pgtally/log.h"
#include "pgtally/period.h"
#include "pgtally/text.h"

#define SEEN_BUCKETS 256 /* buckets of the snapshot at first; it grows */
#define ALERTS_MAX 4096  /* alerts waiting for the ledger; more are dropped (and counted) */

struct pgt_budget_sync {
    pthread_t thread; /* the ledger thread */
    uv_async_t *news; /* the loop's: there is news */

    /* Shared with the loop, under mu. */
    pthread_mutex_t mu;              /* guards what follows */
    pthread_cond_t cv;               /* wakes the thread: alerts, or stop */
    bool stop;                       /* the thread must end */
    pgt_budget_config_t *posted_cfg; /* new budgets, for the loop */
    pgt_budget_row_t *rows;          /* new spend, for the loop */
    size_t nrows;                    /* entries in rows */
    size_t rows_cap;                 /* room in rows */
    pgt_budget_alert_t *alerts;      /* alerts, for the thread */
    size_t nalerts;                  /* entries in alerts */
    size_t alerts_cap;               /* room in alerts */
    size_t alerts_dropped;           /* alerts not queued since the last write (queue full) */

    /* The thread's own (set before it starts). */
    char *ledger;             /* the ledger (copy of where.ledger) */
    char *schema;             /* its PostgreSQL schema (copy of where.schema), or NULL */
    pgt_ledger_where_t where; /* ledger and schema */
    int64_t instance;         /* this process's rows */
    char *admin_conninfo;     /* where role memberships are read, or "" */
    int role_refresh_ms;      /* how often */
    int interval_ms;          /* how often the ledger is polled */
};
/* Makes room for one more item after len in the array *items of *cap
 * items of size bytes. Returns false when out of memory. */
static bool reserve(void **items, size_t *cap, size_t len, size_t size)
{
    if (len < *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *n = realloc(*items, ncap * size);
    if (!n)
        return false;
    *items = n;
    *cap = ncap;
    return true;
}

/* Returns a copy of s ("" for NULL), or NULL when out of memory. */
static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

/* ---- what other instances spent -------------------------------------------- */

/* The rev of another instance up to which its spend was read. */
typedef struct known {
    int64_t id;  /* the instance */
    int64_t rev; /* its rev when last read */
} known_t;

/* What another instance had spent on a day by one user, database and
 * application, as last read: new reads post the difference. */
typedef struct seen {
    struct seen *next;  /* hash chain */
    uint64_t hash;      /* of the key */
    int64_t instance;   /* key: the instance */
    int32_t day;        /* key: the local day */
    int64_t cost_micro; /* the day's cost when last read */
    size_t keylen;      /* bytes of key */
    char key[];         /* key: user, database and application, each ending in NUL */
} seen_t;

/* Other instances' spend, as the thread last read it. */
typedef struct follow {
    known_t *known;    /* instances read, by id */
    size_t nknown;     /* entries in known */
    size_t known_cap;  /* room in known */
    seen_t **buckets;  /* the snapshot, by hash */
    size_t nbuckets;   /* entries in buckets */
    size_t nseen;      /* entries in the snapshot */
    int32_t first_day; /* days before this one are not kept (no current period holds them) */
} follow_t;

/* Spend read in one poll, posted at once. */
typedef struct batch {
    pgt_budget_row_t *rows; /* the rows */
    size_t n;               /* entries in rows */
    size_t cap;             /* room in rows */
} batch_t;

/* What the row callbacks of the spend queries need. */
typedef struct spend_read {
    follow_t *f;    /* the snapshot */
    batch_t *batch; /* where differences go */
} spend_read_t;

/* Returns the earliest local day of a current period (a month's or a
 * week's first day). */
static int32_t earliest_day(int64_t now_us)
{
    int64_t week, month, end;
    pgt_period_bounds(PGT_PERIOD_WEEK, now_us, &week, &end);
    pgt_period_bounds(PGT_PERIOD_MONTH, now_us, &month, &end);
    return pgt_local_day(week < month ? week : month);
}

/* Writes the key of user, database and application into buf (NULs
 * between) and returns its length, or 0 when it does not fit. */
static size_t seen_key(char *buf, size_t len, const char *user, const char *db, const char *app)
{
    const char *parts[3] = {user ? user : "", db ? db : "", app ? app : ""};
    size_t n = 0;
    for (int i = 0; i < 3; i++) {
        size_t k = strlen(parts[i]) + 1;
        if (n + k > len)
            return 0;
        memcpy(buf + n, parts[i], k);
        n += k;
    }
    return n;
}

/* Returns the hash (FNV-1a) of a key of the snapshot. */
static uint64_t seen_hash(int64_t instance, int32_t day, const char *key, size_t keylen)
{
    uint64_t h = PGT_FNV_BASIS ^ (uint64_t)instance;
    h = (h ^ (uint32_t)day) * 1099511628211ull;
    return pgt_fnv1a(h, key, keylen);
}

/* Doubles the buckets of the snapshot (or makes the first ones). Returns
 * false when out of memory (the snapshot keeps its buckets). */
static bool seen_grow(follow_t *f)
{
    size_t n = f->nbuckets ? f->nbuckets * 2 : SEEN_BUCKETS;
    seen_t **b = calloc(n, sizeof(*b));
    if (!b)
        return false;
    for (size_t i = 0; i < f->nbuckets; i++) {
        while (f->buckets[i]) {
            seen_t *e = f->buckets[i];
            f->buckets[i] = e->next;
            e->next = b[e->hash % n];
            b[e->hash % n] = e;
        }
    }
    free(f->buckets);
    f->buckets = b;
    f->nbuckets = n;
    return true;
}

/* Records that instance had spent cost_micro on day by the key, and
 * returns how much more that is than last read (all of it for a new key;
 * 0 when out of memory, so as not to count it again later). */
static int64_t seen_update(follow_t *f, int64_t instance, int32_t day, const char *key,
                           size_t keylen, int64_t cost_micro)
{
    uint64_t h = seen_hash(instance, day, key, keylen);
    if ((f->nbuckets == 0 || f->nseen >= f->nbuckets * 2) && !seen_grow(f) && f->nbuckets == 0)
        return 0;
    seen_t **head = &f->buckets[h % f->nbuckets];
    for (seen_t *e = *head; e; e = e->next) {
        if (e->hash == h && e->instance == instance && e->day == day && e->keylen == keylen &&
            memcmp(e->key, key, keylen) == 0) {
            int64_t delta = cost_micro - e->cost_micro;
            e->cost_micro = cost_micro;
            return delta;
        }
    }
    seen_t *e = malloc(sizeof(*e) + keylen);
    if (!e)
        return 0;
    *e = (seen_t){.next = *head,
                  .hash = h,
                  .instance = instance,
                  .day = day,
                  .cost_micro = cost_micro,
                  .keylen = keylen};
    memcpy(e->key, key, keylen);
    *head = e;
    f->nseen++;
    return cost_micro;
}

/* Forgets the days of the snapshot before first_day. */
static void seen_prune(follow_t *f, int32_t first_day)
{
    for (size_t i = 0; i < f->nbuckets; i++) {
        seen_t **p = &f->buckets[i];
        while (*p) {
            seen_t *e = *p;
            if (e->day >= first_day) {
                p = &e->next;
                continue;
            }
            *p = e->next;
            free(e);
            f->nseen--;
        }
    }
    f->first_day = first_day;
}

/* Frees what f holds and empties it. */
static void follow_free(follow_t *f)
{
    seen_prune(f, INT32_MAX);
    free(f->buckets);
    free(f->known);
    *f = (follow_t){0};
}

/* ---- the thread ----------------------------------------------------------- */

/* Returns the entry of instance id in f->known, or NULL. */
static known_t *known_find(follow_t *f, int64_t id)
{
    size_t lo = 0, hi = f->nknown;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (f->known[mid].id == id)
            return &f->known[mid];
        if (f->known[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Records that instance id was read up to rev, keeping f->known by id.
 * When out of memory it stays unknown, and is read whole again (its
 * differences then nothing). */
static void known_set(follow_t *f, int64_t id, int64_t rev)
{
    known_t *k = known_find(f, id);
    if (k) {
        k->rev = rev;
        return;
    }
    if (!reserve((void **)&f->known, &f->known_cap, f->nknown, sizeof(*k)))
        return;
    size_t i = f->nknown;
    while (i > 0 && f->known[i - 1].id > id)
        i--;
    memmove(&f->known[i + 1], &f->known[i], (f->nknown - i) * sizeof(*k));
    f->known[i] = (known_t){.id = id, .rev = rev};
    f->nknown++;
}

/* Adds what user spent on day through database and application to the
 * batch; dropped when out of memory. */
static void batch_add(batch_t *b, const char *user, const char *database, const char *application,
                      int32_t day, int64_t micro)
{
    pgt_budget_row_t r = {.user = dup_or_empty(user),
                          .database = dup_or_empty(database),
                          .application = dup_or_empty(application),
                          .started_us = pgt_local_day_start_us(day),
                          .micro = micro,
                          .period = -1};
    if (r.user && r.database && r.application &&
        reserve((void **)&b->rows, &b->cap, b->n, sizeof(r))) {
        b->rows[b->n++] = r;
        return;
    }
    free(r.user);
    free(r.database);
    free(r.application);
}

/* Hands the rows of b to the loop (which frees them) and empties b.
 * Returns whether there were any. */
static bool post_batch(pgt_budget_sync_t *s, batch_t *b)
{
    size_t i = 0;
    pthread_mutex_lock(&s->mu);
    for (; i < b->n && reserve((void **)&s->rows, &s->rows_cap, s->nrows, sizeof(*s->rows)); i++)
        s->rows[s->nrows++] = b->rows[i];
    pthread_mutex_unlock(&s->mu);
    for (size_t k = i; k < b->n; k++) { /* out of memory: dropped */
        free(b->rows[k].user);
        free(b->rows[k].database);
        free(b->rows[k].application);
    }
    bool any = b->n > 0;
    free(b->rows);
    *b = (batch_t){0};
    return any;
}

/* A row of spend (instance, day, user, database, application, cost_micro):
 * its difference from the snapshot goes to the batch. */
static int spend_row(const pgt_db_row_t *r, void *arg)
{
    spend_read_t *sr = arg;
    int32_t day = (int32_t)pgt_db_int(r, 1);
    char key[1024];
    size_t keylen =
        seen_key(key, sizeof(key), pgt_db_text(r, 2), pgt_db_text(r, 3), pgt_db_text(r, 4));
    if (day < sr->f->first_day || keylen == 0)
        return 0; /* in no current period; or names longer than PostgreSQL's */
    int64_t delta = seen_update(sr->f, pgt_db_int(r, 0), day, key, keylen, pgt_db_int(r, 5));
    if (delta > 0)
        batch_add(sr->batch, pgt_db_text(r, 2), pgt_db_text(r, 3), pgt_db_text(r, 4), day, delta);
    return 0;
}

/* An instance whose rev moved since it was read. */
typedef struct moved {
    int64_t id;   /* the instance */
    int64_t from; /* its rev when last read; -1: never read */
    int64_t to;   /* its rev now */
} moved_t;

/* The instances whose rev moved, collected by moved_row. */
typedef struct moved_list {
    follow_t *f;    /* the revs read */
    moved_t *items; /* the instances */
    size_t n;       /* entries in items */
    size_t cap;     /* room in items */
} moved_list_t;

/* A row of instances (id, rev): kept when its rev moved. Returns 0, or 1
 * when out of memory. */
static int moved_row(const pgt_db_row_t *r, void *arg)
{
    moved_list_t *l = arg;
    moved_t m = {.id = pgt_db_int(r, 0), .from = -1, .to = pgt_db_int(r, 1)};
    const known_t *k = known_find(l->f, m.id);
    if (k)
        m.from = k->rev;
    if (m.to <= m.from)
        return 0;
    if (!reserve((void **)&l->items, &l->cap, l->n, sizeof(m)))
        return 1;
    l->items[l->n++] = m;
    return 0;
}

/* Reads the instances other than this one whose rev moved into l. */
static int read_moved(pgt_budget_sync_t *s, pgt_db_t *db, moved_list_t *l, char *err, size_t errlen)
{
    int rc = pgt_db_run(db, "reading instances", err, errlen, moved_row, l,
                        "SELECT id, rev FROM instances WHERE id <> ?1", "i", s->instance);
    if (rc > 0)
        snprintf(err, errlen, "reading instances: out of memory");
    return rc == 0 ? 0 : -1;
}

/* At start (or once budgets exist): everything other instances spent on
 * the days of the current periods. Their revs are read first: a row that
 * changes between the two reads is read again at the next poll, where its
 * difference from the snapshot is what is new. */
static int load_spend(pgt_budget_sync_t *s, pgt_db_t *db, follow_t *f, batch_t *batch, char *err,
                      size_t errlen)
{
    seen_prune(f, earliest_day(pgt_clock_us()));
    moved_list_t l = {.f = f};
    int rc = read_moved(s, db, &l, err, errlen);
    spend_read_t sr = {f, batch};
    if (rc == 0)
        rc = pgt_db_run(db, "reading spend", err, errlen, spend_row, &sr,
                        "SELECT instance, day, \"user\", database, application, cost_micro "
                        "FROM spend WHERE day >= ?1 AND instance <> ?2",
                        "ii", (int64_t)f->first_day, s->instance);
    for (size_t i = 0; rc == 0 && i < l.n; i++)
        known_set(f, l.items[i].id, l.items[i].to);
    free(l.items);
    return rc;
}

/* Each poll: what the instances whose rev moved spent since, as
 * differences from the snapshot. */
static int poll_spend(pgt_budget_sync_t *s, pgt_db_t *db, follow_t *f, batch_t *batch, char *err,
                      size_t errlen)
{
    int32_t first = earliest_day(pgt_clock_us());
    if (first > f->first_day)
        seen_prune(f, first);
    moved_list_t l = {.f = f};
    int rc = read_moved(s, db, &l, err, errlen);
    spend_read_t sr = {f, batch};
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        rc = pgt_db_run(db, "reading spend", err, errlen, spend_row, &sr,
                        "SELECT instance, day, \"user\", database, application, cost_micro "
                        "FROM spend WHERE instance = ?1 AND rev > ?2 AND day >= ?3",
                        "iii", l.items[i].id, l.items[i].from, (int64_t)f->first_day);
        if (rc == 0)
            known_set(f, l.items[i].id, l.items[i].to);
    }
    free(l.items);
    return rc;
}

/* Role memberships from the server (admin_conninfo) into role_members, in
 * one transaction: each upserted as of now, then those the server no
 * longer has deleted. */
static int store_roles(pgt_db_t *db, PGresult *res, char *err, size_t errlen)
{
    int64_t now = pgt_clock_us();
    int rc = pgt_db_begin(db, true, err, errlen);
    for (int i = 0; rc == 0 && i < PQntuples(res); i++)
        rc =
            pgt_db_run(db, "storing role memberships", err, errlen, NULL, NULL,
                       "INSERT INTO role_members (role, \"user\", refreshed_at) VALUES (?1, ?2, ?3)"
                       " ON CONFLICT (role, \"user\") DO UPDATE SET refreshed_at = "
                       "excluded.refreshed_at",
                       "tti", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), now);
    if (rc == 0)
        rc = pgt_db_run(db, "storing role memberships", err, errlen, NULL, NULL,
                        "DELETE FROM role_members WHERE refreshed_at <> ?1", "i", now);
    return pgt_db_finish(db, rc, err, errlen);
}

/* Reads role memberships from the server (admin_conninfo) into
 * role_members. Returns 0, or -1 after logging why. */
static int refresh_roles(pgt_budget_sync_t *s, pgt_db_t *db)
{
    PGconn *conn = PQconnectdb(s->admin_conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        PGT_WARN("role_refresh_failed", "error=\"%s\" hint=\"check admin_conninfo\"",
                 PQerrorMessage(conn));
        PQfinish(conn);
        return -1;
    }
    PGresult *res = PQexec(conn, "SELECT r.rolname, m.rolname FROM pg_roles r JOIN pg_roles m"
                                 " ON m.oid <> r.oid AND pg_has_role(m.oid, r.oid, 'MEMBER')"
                                 " WHERE m.rolcanlogin");
    int rc = -1;
    char err[256];
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        PGT_WARN("role_refresh_failed", "error=\"%s\"", PQresultErrorMessage(res));
    else if ((rc = store_roles(db, res, err, sizeof(err))) != 0)
        PGT_WARN("role_refresh_failed", "error=\"%s\"", err);
    PQclear(res);
    PQfinish(conn);
    return rc;
}

/* Records queued alerts; each is logged by the one process whose insert
 * lands first. */
static void write_alerts(pgt_budget_sync_t *s, pgt_db_t *db)
{
    pthread_mutex_lock(&s->mu);
    pgt_budget_alert_t *alerts = s->alerts;
    size_t n = s->nalerts, dropped = s->alerts_dropped;
    s->alerts = NULL;
    s->nalerts = s->alerts_cap = 0;
    s->alerts_dropped = 0;
    pthread_mutex_unlock(&s->mu);
    char err[256];
    if (dropped)
        PGT_WARN("budget_alerts_dropped",
                 "alerts=%zu hint=\"more than %d alerts were waiting for "
                 "the ledger; the thresholds still warn the clients\"",
                 dropped, ALERTS_MAX);
    for (size_t i = 0; i < n; i++) {
        const pgt_budget_alert_t *a = &alerts[i];
        int64_t now = pgt_clock_us();
        /* The log row is the crossing: delivered to the log when recorded;
         * the alert senders (reports/alerts.c) deliver its text further. */
        int rc = pgt_db_run(db, "recording an alert", err, sizeof(err), NULL, NULL,
                            "INSERT INTO alerts_sent (budget_id, period_start, threshold_pct,"
                            " channel, sent_at, delivered_at, message)"
                            " VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6) ON CONFLICT DO NOTHING",
                            "iiitit", a->budget_id, a->period_start, (int64_t)a->pct, a->channel,
                            now, a->text);
        if (rc == 0 && pgt_db_changes(db) == 1)
            PGT_WARN("budget_alert", "budget=%lld threshold=%d message=\"%s\"",
                     (long long)a->budget_id, a->pct, a->text);
        else if (rc != 0)
            PGT_WARN("budget_alert_failed", "budget=%lld error=\"%s\"", (long long)a->budget_id,
                     err);
    }
    free(alerts);
}

/* Loads the budgets for the loop. Returns how many there are, or -1. */
static long post_config(pgt_budget_sync_t *s, pgt_db_t *db)
{
    char err[256];
    pgt_budget_config_t *cfg = NULL;
    if (pgt_budget_config_load(db, &cfg, err, sizeof(err)) != 0) {
        PGT_WARN("budgets_load_failed", "error=\"%s\"", err);
        return -1;
    }
    long n = (long)cfg->nbudgets;
    pthread_mutex_lock(&s->mu);
    pgt_budget_config_free(s->posted_cfg);
    s->posted_cfg = cfg;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* What the thread remembers between polls. */
typedef struct poll_state {
    pgt_db_t *db;       /* the ledger, or NULL until opened */
    follow_t follow;    /* other instances' spend as last read */
    int64_t version;    /* settings_version of the budgets posted, -1: none */
    int64_t next_roles; /* when role memberships are read next */
    bool loaded;        /* the spend of the current periods was read */
    bool active;        /* a budget exists: other processes' spend is followed */
    bool open_failing;  /* opening the ledger failed last time (logged once) */
    bool poll_failing;  /* reading spend failed last time (logged once) */
    bool listening;     /* PostgreSQL: LISTEN pgtally_settings is on for db */
    int64_t next_check; /* PostgreSQL: when settings_version is read anyway */
} poll_state_t;

#define SETTINGS_CHECK_US 5000000 /* with LISTEN, settings_version is read this often anyway */

/* Whether settings may have changed since the last look. On PostgreSQL the
 * triggers of the settings tables send NOTIFY pgtally_settings, so the
 * version is read only when one arrived (or every SETTINGS_CHECK_US, in
 * case one was lost with a connection); SQLite has no such thing, and the
 * version is read at every poll. */
static bool settings_may_have_changed(poll_state_t *ps, int64_t now)
{
    if (pgt_db_backend(ps->db) != PGT_DB_POSTGRESQL)
        return true;
    PGconn *conn = pgt_db_handle(ps->db);
    if (!ps->listening) {
        char err[128];
        ps->listening =
            pgt_db_exec(ps->db, "listening", "LISTEN pgtally_settings", err, sizeof(err)) == 0;
        ps->next_check = 0;
    }
    bool notified = false;
    if (ps->listening && PQconsumeInput(conn) == 1) {
        PGnotify *n;
        while ((n = PQnotifies(conn)) != NULL) {
            notified = true;
            PQfreemem(n);
        }
    }
    if (notified || !ps->listening || now >= ps->next_check) {
        ps->next_check = now + SETTINGS_CHECK_US;
        return true;
    }
    return false;
}

/* Opens the ledger when not open yet. Returns whether it is open. */
static bool open_ledger(pgt_budget_sync_t *s, poll_state_t *ps)
{
    char err[256];
    if (ps->db)
        return true;
    if (pgt_budget_store_open(&s->where, true, &ps->db, err, sizeof(err)) != 0) {
        char shown[512]; /* never a password */
        pgt_db_describe(s->ledger, shown, sizeof(shown));
        if (!ps->open_failing)
            PGT_WARN("budgets_ledger_failed", "ledger=\"%s\" error=\"%s\"", shown, err);
        ps->open_failing = true;
        ps->db = NULL;
        return false;
    }
    ps->open_failing = false;
    return true;
}

/* Closes a PostgreSQL connection that broke, to be opened again at the
 * next poll. What was read stays: the snapshot holds across connections. */
static void drop_if_broken(poll_state_t *ps)
{
    if (ps->db && pgt_db_backend(ps->db) == PGT_DB_POSTGRESQL &&
        PQstatus((PGconn *)pgt_db_handle(ps->db)) == CONNECTION_BAD) {
        pgt_budget_store_close(ps->db);
        ps->db = NULL;
        ps->listening = false;
    }
}

/* Follows the spend of other instances: all of it the first time, then
 * what moved. Returns whether there is news for the loop. */
static bool follow_spend(pgt_budget_sync_t *s, poll_state_t *ps)
{
    char err[256];
    batch_t batch = {0};
    int rc = ps->loaded ? poll_spend(s, ps->db, &ps->follow, &batch, err, sizeof(err))
                        : load_spend(s, ps->db, &ps->follow, &batch, err, sizeof(err));
    if (rc == 0)
        ps->loaded = true;
    if (rc != 0 && !ps->poll_failing)
        PGT_WARN("budgets_spend_failed", "error=\"%s\"", err);
    ps->poll_failing = rc != 0;
    /* Even after a failure: the snapshot holds what the batch has. */
    return post_batch(s, &batch);
}

/* One poll: role memberships when due, budgets when their version moved,
 * other processes' spend, then the queued alerts. Tells the loop of news. */
static void poll_once(pgt_budget_sync_t *s, poll_state_t *ps)
{
    bool news = false;
    int64_t now = pgt_clock_us();
    if (*s->admin_conninfo && now >= ps->next_roles) {
        ps->next_roles = now + (int64_t)s->role_refresh_ms * 1000;
        if (refresh_roles(s, ps->db) == 0)
            ps->version = -1; /* memberships changed: reload */
    }
    bool check = settings_may_have_changed(ps, now) || ps->version < 0;
    int64_t v = check ? pgt_budget_settings_version(ps->db) : -1;
    long n;
    if (v >= 0 && v != ps->version && (n = post_config(s, ps->db)) >= 0) {
        /* Spend of other processes is followed from the first budget on;
         * until then none is read. */
        if (n > 0)
            ps->active = true;
        ps->version = v;
        news = true;
    }
    if (ps->active && follow_spend(s, ps))
        news = true;
    write_alerts(s, ps->db);
    drop_if_broken(ps);
    if (news)
        uv_async_send(s->news);
}

/* The thread: opens the ledger (again after a failure) and polls it every
 * interval_ms, or at once when alerts are queued, until stopped. */
static void *thread_main(void *arg)
{
    pgt_budget_sync_t *s = arg;
    pthread_setname_np(pthread_self(), "pgt-sync");
    poll_state_t ps = {.version = -1};
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        pthread_mutex_unlock(&s->mu);
        if (open_ledger(s, &ps))
            poll_once(s, &ps);
        pthread_mutex_lock(&s->mu);
        if (s->stop)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (int64_t)s->interval_ms * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        if (s->nalerts == 0)
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    if (ps.db)
        write_alerts(s, ps.db);
    pgt_budget_store_close(ps.db);
    follow_free(&ps.follow);
    return NULL;
}

/* ---- the loop's side ------------------------------------------------------ */

/* Frees s and everything it holds; the thread has ended (or never ran). */
static void sync_free_fields(pgt_budget_sync_t *s)
{
    pgt_budget_sync_rows_free(s->rows, s->nrows);
    free(s->alerts);
    pgt_budget_config_free(s->posted_cfg);
    free(s->ledger);
    free(s->schema);
    free(s->admin_conninfo);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

pgt_budget_sync_t *pgt_budget_sync_start(const pgt_budget_sync_opts_t *o, char *err, size_t errlen)
{
    pgt_budget_sync_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->news = o->news;
    s->instance = o->instance;
    s->interval_ms = o->interval_ms;
    s->role_refresh_ms = o->role_refresh_ms;
    s->ledger = dup_or_empty(o->where.ledger);
    s->schema = o->where.schema ? strdup(o->where.schema) : NULL;
    s->where = (pgt_ledger_where_t){.ledger = s->ledger, .schema = s->schema};
    s->admin_conninfo = dup_or_empty(o->admin_conninfo);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (!s->ledger || (o->where.schema && !s->schema) || !s->admin_conninfo) {
        snprintf(err, errlen, "out of memory");
        sync_free_fields(s);
        return NULL;
    }
    if (pthread_create(&s->thread, NULL, thread_main, s) != 0) {
        snprintf(err, errlen, "cannot start the budget thread");
        sync_free_fields(s);
        return NULL;
    }
    return s;
}

void pgt_budget_sync_take(pgt_budget_sync_t *s, pgt_budget_config_t **cfg, pgt_budget_row_t **rows,
                          size_t *nrows)
{
    pthread_mutex_lock(&s->mu);
    *cfg = s->posted_cfg;
    s->posted_cfg = NULL;
    *rows = s->rows;
    *nrows = s->nrows;
    s->rows = NULL;
    s->nrows = s->rows_cap = 0;
    pthread_mutex_unlock(&s->mu);
}

void pgt_budget_sync_rows_free(pgt_budget_row_t *rows, size_t n)
{
    for (size_t i = 0; rows && i < n; i++) {
        free(rows[i].user);
        free(rows[i].database);
        free(rows[i].application);
    }
    free(rows);
}

void pgt_budget_sync_alert(pgt_budget_sync_t *s, const pgt_budget_alert_t *a)
{
    pthread_mutex_lock(&s->mu);
    if (s->nalerts < ALERTS_MAX &&
        reserve((void **)&s->alerts, &s->alerts_cap, s->nalerts, sizeof(*a)))
        s->alerts[s->nalerts++] = *a;
    else
        s->alerts_dropped++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void pgt_budget_sync_free(pgt_budget_sync_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    sync_free_fields(s);
}
