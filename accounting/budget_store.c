/* Budgets, teams, grants and role memberships in the ledger's SQLite file:
 * loaded whole for pgtally, changed by pgtallyctl one transaction at a time,
 * and the spend of a budget for display. */
#include "pgtally/budget_store.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/ledger.h"
#include "pgtally/names.h"

#define BUDGET_SCHEMA 2 /* the ledger schema that added grants and settings_version */
#define BUDGET_COLUMNS                                                                             \
    "id, subject_type, subject, period, limit_micro, warn_pcts, action, per_query_micro"

PGT_NAMES_DEFINE(PGT_BUDGET_SUBJECT_MAP, pgt_budget_subject_t, pgt_budget_subject_name,
                 pgt_budget_subject_parse)
PGT_NAMES_DEFINE(PGT_BUDGET_ACTION_MAP, pgt_budget_action_t, pgt_budget_action_name,
                 pgt_budget_action_parse)

int pgt_budget_warn_add(pgt_budget_t *b, int pct)
{
    if (pct < 1 || pct > 100)
        return -1;
    int i = 0;
    while (i < b->nwarn && b->warn_pcts[i] < pct)
        i++;
    if (i < b->nwarn && b->warn_pcts[i] == pct)
        return 0;
    if (b->nwarn == PGT_BUDGET_WARN_MAX)
        return -1;
    memmove(&b->warn_pcts[i + 1], &b->warn_pcts[i], (size_t)(b->nwarn - i) * sizeof(int));
    b->warn_pcts[i] = pct;
    b->nwarn++;
    return 0;
}

/* ---- SQLite helpers ----------------------------------------------------- */

/* Prepares sql and binds one argument per character of types: 'i' an
 * int64_t, 'n' an int64_t bound as NULL when negative, 't' a string (NULL
 * binds NULL). Returns the statement, or NULL with the cause in err. */
static sqlite3_stmt *prepare(sqlite3 *db, char *err, size_t errlen, const char *sql,
                             const char *types, ...)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "budget tables: %s", sqlite3_errmsg(db));
        return NULL;
    }
    va_list ap;
    va_start(ap, types);
    for (int i = 0; types[i]; i++) {
        if (types[i] == 't') {
            const char *s = va_arg(ap, const char *);
            if (s)
                sqlite3_bind_text(st, i + 1, s, -1, SQLITE_TRANSIENT);
            else
                sqlite3_bind_null(st, i + 1);
            continue;
        }
        int64_t v = va_arg(ap, int64_t);
        if (types[i] == 'n' && v < 0)
            sqlite3_bind_null(st, i + 1);
        else
            sqlite3_bind_int64(st, i + 1, v);
    }
    va_end(ap);
    return st;
}

/* Steps st (NULL: preparing failed) to the end with the ledger's walker,
 * handing each row to row (NULL: rows are ignored), and finalizes it.
 * Returns 0, row's non-zero value, or -1 with the cause in err. */
static int run(sqlite3 *db, sqlite3_stmt *st, int (*row)(sqlite3_stmt *, void *), void *arg,
               char *err, size_t errlen)
{
    return st ? pgt_ledger_walk(db, st, row, arg, "budget tables", err, errlen) : -1;
}

/* A row callback that stores the first column of the last row in an
 * int64_t. */
static int int_row(sqlite3_stmt *st, void *arg)
{
    *(int64_t *)arg = sqlite3_column_int64(st, 0);
    return 0;
}

/* Starts a transaction; write takes the write lock at once. */
static int begin(sqlite3 *db, bool write, char *err, size_t errlen)
{
    if (sqlite3_exec(db, write ? "BEGIN IMMEDIATE" : "BEGIN", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "budget tables: %s", sqlite3_errmsg(db));
    return -1;
}

/* Commits when rc is 0, otherwise rolls back. Returns rc, or -1 with the
 * cause in err when the commit fails. */
static int finish(sqlite3 *db, int rc, char *err, size_t errlen)
{
    if (rc == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "budget tables: %s", sqlite3_errmsg(db));
        rc = -1;
    }
    if (!sqlite3_get_autocommit(db))
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static char *column_strdup(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return strdup(s ? s : "");
}

/* Returns a new zeroed slot at the end of *items (*n used, *cap allocated,
 * size bytes each), or NULL when out of memory. */
static void *push(void *items, size_t *n, size_t *cap, size_t size)
{
    void **v = items;
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        void *p = realloc(*v, c * size);
        if (!p)
            return NULL;
        *v = p;
        *cap = c;
    }
    void *slot = (char *)*v + (*n)++ * size;
    memset(slot, 0, size);
    return slot;
}

/* ---- Opening -------------------------------------------------------------- */

int pgt_budget_store_open(const char *path, bool writable, sqlite3 **db, char *err, size_t errlen)
{
    int version = 0;
    *db = pgt_ledger_db_open(path, writable, &version, err, errlen);
    if (!*db)
        return -1;
    if (version < BUDGET_SCHEMA) {
        pgt_budget_store_close(*db);
        *db = NULL;
        return PGT_BUDGET_NO_TABLES;
    }
    /* team_members rows go with their team (ON DELETE CASCADE). */
    (void)sqlite3_exec(*db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
    return 0;
}

void pgt_budget_store_close(sqlite3 *db)
{
    sqlite3_close_v2(db);
}

/* ---- Loading -------------------------------------------------------------- */

/* Reads a JSON array of percents into b's warn thresholds, skipping what
 * is not one (a damaged row must not stop budgets). */
static void warn_from_json(pgt_budget_t *b, const char *text)
{
    json_t *a = text ? json_loads(text, 0, NULL) : NULL;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        json_int_t pct = json_is_integer(v) ? json_integer_value(v) : 0;
        if (pct < 1 || pct > 100 || pgt_budget_warn_add(b, (int)pct) != 0)
            continue; /* not a percent, or too many: skipped */
    }
    json_decref(a);
}

/* Fills b from a row of SELECT BUDGET_COLUMNS. Returns 0, or -1 with the
 * cause in err. */
static int budget_from_row(sqlite3_stmt *st, pgt_budget_t *b, char *err, size_t errlen)
{
    b->id = sqlite3_column_int64(st, 0);
    const char *type = (const char *)sqlite3_column_text(st, 1);
    const char *period = (const char *)sqlite3_column_text(st, 3);
    const char *action = (const char *)sqlite3_column_text(st, 6);
    if (pgt_budget_subject_parse(type, &b->subject_type) != 0 ||
        pgt_period_parse(period, &b->period) != 0) {
        snprintf(err, errlen, "budget %lld: unknown subject type '%s' or period '%s'",
                 (long long)b->id, type ? type : "", period ? period : "");
        return -1;
    }
    /* 'refuse' was the column's default before budgets were written. */
    if (action && strcmp(action, "refuse") == 0)
        b->action = PGT_BUDGET_ACTION_BLOCK;
    else if (pgt_budget_action_parse(action, &b->action) != 0)
        b->action = PGT_BUDGET_ACTION_BLOCK;
    b->limit_micro = sqlite3_column_int64(st, 4);
    warn_from_json(b, (const char *)sqlite3_column_text(st, 5));
    bool capped = sqlite3_column_type(st, 7) != SQLITE_NULL;
    b->per_query_micro = capped ? sqlite3_column_int64(st, 7) : -1;
    b->subject = column_strdup(st, 2);
    if (!b->subject) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* What the row callbacks of pgt_budget_config_load fill. */
typedef struct load {
    pgt_budget_config_t *cfg; /* the config being built */
    size_t cap[4];            /* slots allocated: budgets, teams, grants, role members */
    size_t member_cap;        /* slots allocated for the last team's members */
    char *err;                /* where a row callback writes what failed */
    size_t errlen;            /* its size */
} load_t;

static int budget_row(sqlite3_stmt *st, void *arg)
{
    load_t *l = arg;
    pgt_budget_t *b = push(&l->cfg->budgets, &l->cfg->nbudgets, &l->cap[0], sizeof(*b));
    if (!b) {
        snprintf(l->err, l->errlen, "out of memory");
        return -1;
    }
    return budget_from_row(st, b, l->err, l->errlen);
}

/* One row per team and member (member NULL for an empty team), by name. */
static int team_row(sqlite3_stmt *st, void *arg)
{
    load_t *l = arg;
    pgt_budget_config_t *c = l->cfg;
    int64_t id = sqlite3_column_int64(st, 0);
    pgt_budget_team_t *t = c->nteams ? &c->teams[c->nteams - 1] : NULL;
    bool ok = true;
    if (!t || t->id != id) {
        t = push(&c->teams, &c->nteams, &l->cap[1], sizeof(*t));
        ok = t && (t->name = column_strdup(st, 1));
        if (ok)
            t->id = id;
        l->member_cap = 0;
    }
    if (ok && sqlite3_column_type(st, 2) != SQLITE_NULL) {
        char **m = push(&t->members, &t->nmembers, &l->member_cap, sizeof(*m));
        ok = m && (*m = column_strdup(st, 2));
    }
    if (!ok)
        snprintf(l->err, l->errlen, "out of memory");
    return ok ? 0 : -1;
}

static int grant_row(sqlite3_stmt *st, void *arg)
{
    load_t *l = arg;
    pgt_budget_grant_t *g = push(&l->cfg->grants, &l->cfg->ngrants, &l->cap[2], sizeof(*g));
    if (!g || !(g->user = column_strdup(st, 1))) {
        snprintf(l->err, l->errlen, "out of memory");
        return -1;
    }
    g->id = sqlite3_column_int64(st, 0);
    g->amount_micro = sqlite3_column_int64(st, 2);
    g->granted_us = sqlite3_column_int64(st, 3);
    g->until_us = sqlite3_column_type(st, 4) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 4);
    return 0;
}

static int role_row(sqlite3_stmt *st, void *arg)
{
    load_t *l = arg;
    pgt_budget_config_t *c = l->cfg;
    pgt_budget_role_member_t *r = push(&c->role_members, &c->nrole_members, &l->cap[3], sizeof(*r));
    if (!r || !(r->role = column_strdup(st, 0)) || !(r->user = column_strdup(st, 1))) {
        snprintf(l->err, l->errlen, "out of memory");
        return -1;
    }
    r->refreshed_us = sqlite3_column_int64(st, 2);
    return 0;
}

/* Returns the start of the earliest period current at now_us: grants
 * without an end that are older count in no current period. */
static int64_t earliest_period_start(int64_t now_us)
{
    int64_t week, month, end;
    pgt_period_bounds(PGT_PERIOD_WEEK, now_us, &week, &end);
    pgt_period_bounds(PGT_PERIOD_MONTH, now_us, &month, &end);
    return week < month ? week : month;
}

/* The tables loaded whole, each into its part of the config. */
static const struct {
    const char *sql;                         /* the query */
    int (*row)(sqlite3_stmt *st, void *arg); /* takes one row into the load_t */
} whole_tables[] = {
    {"SELECT " BUDGET_COLUMNS " FROM budgets ORDER BY id", budget_row},
    {"SELECT t.id, t.name, m.\"user\" FROM teams t LEFT JOIN team_members m "
     "ON m.team_id = t.id ORDER BY t.name, t.id, m.\"user\"",
     team_row},
    {"SELECT role, \"user\", refreshed_at FROM role_members ORDER BY role, \"user\"", role_row},
};

/* Runs the queries of pgt_budget_config_load; returns 0 or -1. */
static int load_all(sqlite3 *db, load_t *l)
{
    int64_t now = pgt_clock_us();
    char *err = l->err;
    size_t len = l->errlen;
    int rc = run(db, prepare(db, err, len, "SELECT version FROM settings_version WHERE id = 1", ""),
                 int_row, &l->cfg->settings_version, err, len);
    for (size_t i = 0; rc == 0 && i < sizeof(whole_tables) / sizeof(whole_tables[0]); i++)
        rc = run(db, prepare(db, err, len, whole_tables[i].sql, ""), whole_tables[i].row, l, err,
                 len);
    if (rc == 0)
        rc = run(db,
                 prepare(db, err, len,
                         "SELECT id, \"user\", amount_micro, granted_at, until_us FROM "
                         "budget_grants WHERE until_us > ?1 OR (until_us IS NULL AND "
                         "granted_at >= ?2) ORDER BY id",
                         "ii", now, earliest_period_start(now)),
                 grant_row, l, err, len);
    return rc == 0 ? 0 : -1;
}

int pgt_budget_config_load(sqlite3 *db, pgt_budget_config_t **out, char *err, size_t errlen)
{
    load_t l = {.cfg = calloc(1, sizeof(*l.cfg)), .err = err, .errlen = errlen};
    if (!l.cfg) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* One read transaction: every table as of the same settings version. */
    int rc = begin(db, false, err, errlen);
    if (rc == 0)
        rc = finish(db, load_all(db, &l), err, errlen);
    if (rc != 0) {
        pgt_budget_config_free(l.cfg);
        return -1;
    }
    *out = l.cfg;
    return 0;
}

void pgt_budget_config_free(pgt_budget_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->nbudgets; i++)
        free(cfg->budgets[i].subject);
    for (size_t i = 0; i < cfg->nteams; i++) {
        for (size_t k = 0; k < cfg->teams[i].nmembers; k++)
            free(cfg->teams[i].members[k]);
        free(cfg->teams[i].members);
        free(cfg->teams[i].name);
    }
    for (size_t i = 0; i < cfg->ngrants; i++)
        free(cfg->grants[i].user);
    for (size_t i = 0; i < cfg->nrole_members; i++) {
        free(cfg->role_members[i].role);
        free(cfg->role_members[i].user);
    }
    free(cfg->budgets);
    free(cfg->teams);
    free(cfg->grants);
    free(cfg->role_members);
    free(cfg);
}

int64_t pgt_budget_settings_version(sqlite3 *db)
{
    char err[256];
    int64_t v = -1;
    if (run(db,
            prepare(db, err, sizeof(err), "SELECT version FROM settings_version WHERE id = 1", ""),
            int_row, &v, err, sizeof(err)) != 0)
        return -1;
    return v;
}

int64_t pgt_budget_grant_total(const pgt_budget_config_t *cfg, const char *user, pgt_period_t p,
                               int64_t period_start_us, int64_t period_end_us, int64_t now_us)
{
    (void)p; /* the bounds say all: a grant's period is the budget's */
    int64_t total = 0;
    for (size_t i = 0; user && i < cfg->ngrants; i++) {
        const pgt_budget_grant_t *g = &cfg->grants[i];
        bool active = g->until_us < 0
                          ? g->granted_us >= period_start_us && g->granted_us < period_end_us
                          : now_us < g->until_us;
        if (active && strcmp(g->user, user) == 0)
            total += g->amount_micro;
    }
    return total;
}

const pgt_budget_team_t *pgt_budget_team_find(const pgt_budget_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nteams; i++)
        if (strcmp(cfg->teams[i].name, name) == 0)
            return &cfg->teams[i];
    return NULL;
}

/* ---- Changes -------------------------------------------------------------- */

/* Writes b's warn thresholds as a JSON array ("[50,80]") to buf. */
static char *warn_json(const pgt_budget_t *b, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < b->nwarn && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%d", i ? "," : "", b->warn_pcts[i]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
    return buf;
}

static int set_locked(sqlite3 *db, const pgt_budget_t *b, int64_t *id, bool *created, char *err,
                      size_t errlen)
{
    const char *type = pgt_budget_subject_name(b->subject_type);
    const char *subject = b->subject_type == PGT_BUDGET_SUBJECT_DEFAULT ? "" : b->subject;
    const char *period = pgt_period_name(b->period);
    char warn[128];
    warn_json(b, warn, sizeof(warn));
    *id = 0;
    int rc = run(db,
                 prepare(db, err, errlen,
                         "SELECT id FROM budgets WHERE subject_type = ?1 AND subject = ?2 AND "
                         "period = ?3",
                         "ttt", type, subject, period),
                 int_row, id, err, errlen);
    if (rc != 0)
        return rc;
    *created = *id == 0;
    if (*created) {
        rc = run(db,
                 prepare(db, err, errlen,
                         "INSERT INTO budgets (subject_type, subject, period, limit_micro, "
                         "warn_pcts, action, per_query_micro, created_at) VALUES "
                         "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                         "tttittni", type, subject, period, b->limit_micro, warn,
                         pgt_budget_action_name(b->action), b->per_query_micro, pgt_clock_us()),
                 NULL, NULL, err, errlen);
        *id = sqlite3_last_insert_rowid(db);
        return rc;
    }
    return run(db,
               prepare(db, err, errlen,
                       "UPDATE budgets SET limit_micro = ?2, warn_pcts = ?3, action = ?4, "
                       "per_query_micro = ?5 WHERE id = ?1",
                       "iittn", *id, b->limit_micro, warn, pgt_budget_action_name(b->action),
                       b->per_query_micro),
               NULL, NULL, err, errlen);
}

int pgt_budget_set(sqlite3 *db, const pgt_budget_t *b, int64_t *id, bool *created, char *err,
                   size_t errlen)
{
    int rc = begin(db, true, err, errlen);
    if (rc == 0)
        rc = finish(db, set_locked(db, b, id, created, err, errlen), err, errlen);
    return rc;
}

/* Where copy_row puts a budget. */
typedef struct copy_ctx {
    pgt_budget_t *b; /* the copy */
    char *err;       /* what failed */
    size_t errlen;   /* its size */
} copy_ctx_t;

static int copy_row(sqlite3_stmt *st, void *arg)
{
    copy_ctx_t *c = arg;
    return budget_from_row(st, c->b, c->err, c->errlen);
}

static int rm_locked(sqlite3 *db, int64_t id, pgt_budget_t *removed, char *err, size_t errlen)
{
    pgt_budget_t b = {0};
    copy_ctx_t c = {&b, err, errlen};
    int rc = run(
        db,
        prepare(db, err, errlen, "SELECT " BUDGET_COLUMNS " FROM budgets WHERE id = ?1", "i", id),
        copy_row, &c, err, errlen);
    if (rc == 0 && b.id == 0) {
        snprintf(err, errlen, "no budget with id %lld", (long long)id);
        rc = PGT_BUDGET_NOT_FOUND;
    }
    if (rc == 0)
        rc = run(db, prepare(db, err, errlen, "DELETE FROM budgets WHERE id = ?1", "i", id), NULL,
                 NULL, err, errlen);
    if (rc == 0)
        rc = run(db,
                 prepare(db, err, errlen, "DELETE FROM alerts_sent WHERE budget_id = ?1", "i", id),
                 NULL, NULL, err, errlen);
    if (rc == 0 && removed)
        *removed = b;
    else
        free(b.subject);
    return rc;
}

int pgt_budget_rm(sqlite3 *db, int64_t id, pgt_budget_t *removed, char *err, size_t errlen)
{
    int rc = begin(db, true, err, errlen);
    if (rc == 0)
        rc = finish(db, rm_locked(db, id, removed, err, errlen), err, errlen);
    return rc;
}

int pgt_budget_grant_add(sqlite3 *db, const char *user, int64_t amount_micro, int64_t granted_us,
                         int64_t until_us, int64_t *id, char *err, size_t errlen)
{
    int rc = run(db,
                 prepare(db, err, errlen,
                         "INSERT INTO budget_grants (\"user\", amount_micro, granted_at, until_us) "
                         "VALUES (?1, ?2, ?3, ?4)",
                         "tiin", user, amount_micro, granted_us, until_us),
                 NULL, NULL, err, errlen);
    *id = rc == 0 ? sqlite3_last_insert_rowid(db) : 0;
    return rc;
}

/* Sets *id to the id of team name, or 0 when there is none. */
static int team_id(sqlite3 *db, const char *name, int64_t *id, char *err, size_t errlen)
{
    *id = 0;
    return run(db, prepare(db, err, errlen, "SELECT id FROM teams WHERE name = ?1", "t", name),
               int_row, id, err, errlen);
}

static int team_add_locked(sqlite3 *db, const char *team, const char *const *users, size_t n,
                           bool *created, size_t *added, char *err, size_t errlen)
{
    int64_t id;
    int rc = team_id(db, team, &id, err, errlen);
    *created = rc == 0 && id == 0;
    if (*created) {
        rc = run(db,
                 prepare(db, err, errlen, "INSERT INTO teams (name, created_at) VALUES (?1, ?2)",
                         "ti", team, pgt_clock_us()),
                 NULL, NULL, err, errlen);
        id = sqlite3_last_insert_rowid(db);
    }
    *added = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = run(db,
                 prepare(db, err, errlen,
                         "INSERT OR IGNORE INTO team_members (team_id, \"user\") VALUES (?1, ?2)",
                         "it", id, users[i]),
                 NULL, NULL, err, errlen);
        *added += rc == 0 ? (size_t)sqlite3_changes(db) : 0;
    }
    return rc;
}

int pgt_budget_team_add(sqlite3 *db, const char *team, const char *const *users, size_t n,
                        bool *created, size_t *added, char *err, size_t errlen)
{
    int rc = begin(db, true, err, errlen);
    if (rc == 0)
        rc = finish(db, team_add_locked(db, team, users, n, created, added, err, errlen), err,
                    errlen);
    return rc;
}

static int team_rm_locked(sqlite3 *db, const char *team, const char *const *users, size_t n,
                          char *err, size_t errlen)
{
    int64_t id;
    int rc = team_id(db, team, &id, err, errlen);
    if (rc == 0 && id == 0) {
        snprintf(err, errlen, "no team named '%s'", team);
        return PGT_BUDGET_NOT_FOUND;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = run(db,
                 prepare(db, err, errlen,
                         "DELETE FROM team_members WHERE team_id = ?1 AND \"user\" = ?2", "it", id,
                         users[i]),
                 NULL, NULL, err, errlen);
        if (rc == 0 && sqlite3_changes(db) == 0) {
            snprintf(err, errlen, "'%s' is not a member of team '%s'", users[i], team);
            return PGT_BUDGET_NOT_FOUND;
        }
    }
    if (rc == 0 && n == 0)
        rc = run(db,
                 prepare(db, err, errlen, "DELETE FROM team_members WHERE team_id = ?1", "i", id),
                 NULL, NULL, err, errlen);
    if (rc == 0 && n == 0)
        rc = run(db, prepare(db, err, errlen, "DELETE FROM teams WHERE id = ?1", "i", id), NULL,
                 NULL, err, errlen);
    return rc;
}

int pgt_budget_team_rm(sqlite3 *db, const char *team, const char *const *users, size_t n, char *err,
                       size_t errlen)
{
    int rc = begin(db, true, err, errlen);
    if (rc == 0)
        rc = finish(db, team_rm_locked(db, team, users, n, err, errlen), err, errlen);
    return rc;
}

/* ---- Spend ---------------------------------------------------------------- */

/* Returns the condition on queries that selects the statements of a
 * subject: ?3 is the subject, ?4 the budget's period. */
static const char *subject_filter(pgt_budget_subject_t t)
{
    switch (t) {
    case PGT_BUDGET_SUBJECT_USER:
        return "\"user\" = ?3";
    case PGT_BUDGET_SUBJECT_APPLICATION:
        return "application = ?3";
    case PGT_BUDGET_SUBJECT_DATABASE:
        return "database = ?3";
    case PGT_BUDGET_SUBJECT_TEAM:
        return "\"user\" IN (SELECT m.\"user\" FROM team_members m JOIN teams t "
               "ON t.id = m.team_id WHERE t.name = ?3)";
    case PGT_BUDGET_SUBJECT_ROLE:
        return "\"user\" IN (SELECT \"user\" FROM role_members WHERE role = ?3)";
    case PGT_BUDGET_SUBJECT_DEFAULT:
        break;
    }
    return "\"user\" NOT IN (SELECT subject FROM budgets WHERE subject_type = 'user' "
           "AND period = ?4)";
}

/* The callback of pgt_budget_spend and its argument. */
typedef struct spend_ctx {
    pgt_budget_spend_cb cb; /* the caller's callback */
    void *arg;              /* its argument */
} spend_ctx_t;

static int spend_row(sqlite3_stmt *st, void *arg)
{
    spend_ctx_t *c = arg;
    return c->cb((const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1), c->arg);
}

int pgt_budget_spend(sqlite3 *db, const pgt_budget_t *b, int64_t from_us, int64_t to_us,
                     pgt_budget_spend_cb cb, void *arg, char *err, size_t errlen)
{
    bool per_user = b->subject_type == PGT_BUDGET_SUBJECT_DEFAULT;
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT %s, coalesce(sum(cost_micro), 0) AS spent FROM queries "
             "WHERE started_at >= ?1 AND started_at < ?2 AND %s%s",
             per_user ? "\"user\"" : "NULL", subject_filter(b->subject_type),
             per_user ? " GROUP BY \"user\" ORDER BY spent DESC, \"user\"" : "");
    spend_ctx_t c = {cb, arg};
    return run(db,
               prepare(db, err, errlen, sql, "iitt", from_us, to_us, b->subject,
                       pgt_period_name(b->period)),
               spend_row, &c, err, errlen);
}
