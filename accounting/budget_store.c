/* Budgets, teams, grants and role memberships in the ledger, SQLite or
 * PostgreSQL (one SQL text for both, through db.h): loaded whole for
 * pgtally, changed by pgtallyctl one transaction at a time, and the spend
 * of a budget for display, read from the daily spend rollup. */
#include "pgtally/budget_store.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/buf.h"
#include "pgtally/ledger.h"
#include "pgtally/names.h"

#define BUDGET_SCHEMA 2 /* the ledger schema that added grants and settings_version */
/* The columns budget_from_row reads: those of schema 7, then max_rows
 * (schema 8; NULL in their place on a ledger opened read-only before it). */
#define BUDGET_COLUMNS_7                                                                           \
    "id, subject_type, subject, period, limit_micro, warn_pcts, action, per_query_micro"
#define BUDGET_COLUMNS BUDGET_COLUMNS_7 ", max_rows"

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

bool pgt_budget_has_limit(const pgt_budget_t *b)
{
    return b->limit_micro >= 0;
}

/* ---- Database helpers ----------------------------------------------------- */

/* What pgt_db_run's errors begin with. */
#define DOING "budget tables"

/* What a row callback returns when it fails, with the cause already in its
 * err: not -1, after which pgt_db_run would write the connection's last
 * error over it. The callers turn it into -1. */
#define ROW_FAILED 2

/* Returns rc with ROW_FAILED as -1. */
static int row_rc(int rc)
{
    return rc == ROW_FAILED ? -1 : rc;
}

/* A row callback that stores the first column of the last row in an
 * int64_t. */
static int int_row(const pgt_db_row_t *r, void *arg)
{
    *(int64_t *)arg = pgt_db_int(r, 0);
    return 0;
}

/* Returns a copy of column i of r ("" for NULL), or NULL when out of
 * memory. */
static char *column_strdup(const pgt_db_row_t *r, int i)
{
    const char *s = pgt_db_text(r, i);
    return strdup(s ? s : "");
}

/* ---- Opening -------------------------------------------------------------- */

int pgt_budget_store_open(const pgt_ledger_where_t *w, bool writable, pgt_db_t **db, char *err,
                          size_t errlen)
{
    int version = 0;
    *db = pgt_ledger_db_open(w, writable, &version, err, errlen);
    if (!*db)
        return -1;
    if (pgt_db_backend(*db) == PGT_DB_POSTGRESQL)
        return 0; /* its schema starts at a version that has them */
    if (version < BUDGET_SCHEMA) {
        pgt_budget_store_close(*db);
        *db = NULL;
        return PGT_BUDGET_NO_TABLES;
    }
    /* team_members rows go with their team (ON DELETE CASCADE), which
     * SQLite does only when asked. Not fatal: team_rm deletes a team's
     * members itself. */
    char ignored[64];
    if (pgt_db_exec(*db, DOING, "PRAGMA foreign_keys = ON", ignored, sizeof(ignored)) != 0)
        return 0;
    return 0;
}

void pgt_budget_store_close(pgt_db_t *db)
{
    pgt_db_close(db);
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
static int budget_from_row(const pgt_db_row_t *r, pgt_budget_t *b, char *err, size_t errlen)
{
    b->id = pgt_db_int(r, 0);
    const char *type = pgt_db_text(r, 1);
    const char *period = pgt_db_text(r, 3);
    const char *action = pgt_db_text(r, 6);
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
    b->limit_micro = pgt_db_int(r, 4);
    if (b->limit_micro < 0)
        b->limit_micro = PGT_BUDGET_NO_LIMIT;
    warn_from_json(b, pgt_db_text(r, 5));
    b->per_query_micro = pgt_db_isnull(r, 7) ? -1 : pgt_db_int(r, 7);
    b->max_rows = pgt_db_isnull(r, 8) || pgt_db_int(r, 8) <= 0 ? -1 : pgt_db_int(r, 8);
    b->subject = column_strdup(r, 2);
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

/* Takes one row of budgets into the config. Returns 0, or ROW_FAILED. */
static int budget_row(const pgt_db_row_t *r, void *arg)
{
    load_t *l = arg;
    pgt_budget_t *b = pgt_push(&l->cfg->budgets, &l->cfg->nbudgets, &l->cap[0], sizeof(*b));
    if (!b) {
        snprintf(l->err, l->errlen, "out of memory");
        return ROW_FAILED;
    }
    return budget_from_row(r, b, l->err, l->errlen) == 0 ? 0 : ROW_FAILED;
}

/* Takes one row per team and member (member NULL for an empty team), by
 * name. Returns 0, or ROW_FAILED. */
static int team_row(const pgt_db_row_t *r, void *arg)
{
    load_t *l = arg;
    pgt_budget_config_t *c = l->cfg;
    int64_t id = pgt_db_int(r, 0);
    pgt_budget_team_t *t = c->nteams ? &c->teams[c->nteams - 1] : NULL;
    bool ok = true;
    if (!t || t->id != id) {
        t = pgt_push(&c->teams, &c->nteams, &l->cap[1], sizeof(*t));
        ok = t && (t->name = column_strdup(r, 1));
        if (ok)
            t->id = id;
        l->member_cap = 0;
    }
    if (ok && !pgt_db_isnull(r, 2)) {
        char **m = pgt_push(&t->members, &t->nmembers, &l->member_cap, sizeof(*m));
        ok = m && (*m = column_strdup(r, 2));
    }
    if (!ok)
        snprintf(l->err, l->errlen, "out of memory");
    return ok ? 0 : ROW_FAILED;
}

/* Takes one row of budget_grants into the config. Returns 0, or
 * ROW_FAILED. */
static int grant_row(const pgt_db_row_t *r, void *arg)
{
    load_t *l = arg;
    pgt_budget_grant_t *g = pgt_push(&l->cfg->grants, &l->cfg->ngrants, &l->cap[2], sizeof(*g));
    if (!g || !(g->user = column_strdup(r, 1))) {
        snprintf(l->err, l->errlen, "out of memory");
        return ROW_FAILED;
    }
    g->id = pgt_db_int(r, 0);
    g->amount_micro = pgt_db_int(r, 2);
    g->granted_us = pgt_db_int(r, 3);
    g->until_us = pgt_db_isnull(r, 4) ? -1 : pgt_db_int(r, 4);
    return 0;
}

/* Takes one row of role_members into the config. Returns 0, or
 * ROW_FAILED. */
static int role_row(const pgt_db_row_t *r, void *arg)
{
    load_t *l = arg;
    pgt_budget_config_t *c = l->cfg;
    pgt_budget_role_member_t *m =
        pgt_push(&c->role_members, &c->nrole_members, &l->cap[3], sizeof(*m));
    if (!m || !(m->role = column_strdup(r, 0)) || !(m->user = column_strdup(r, 1))) {
        snprintf(l->err, l->errlen, "out of memory");
        return ROW_FAILED;
    }
    m->refreshed_us = pgt_db_int(r, 2);
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

/* The tables loaded whole, each into its part of the config. The rows of
 * one team come together (ordered by its id); sort_names orders names. */
static const struct {
    const char *sql;                              /* the query */
    int (*row)(const pgt_db_row_t *r, void *arg); /* takes one row into the load_t */
} whole_tables[] = {
    {"SELECT t.id, t.name, m.\"user\" FROM teams t LEFT JOIN team_members m "
     "ON m.team_id = t.id ORDER BY t.id",
     team_row},
    {"SELECT role, \"user\", refreshed_at FROM role_members", role_row},
};

/* Runs the queries of pgt_budget_config_load; returns 0 or -1. */
static int load_all(pgt_db_t *db, load_t *l)
{
    int64_t now = pgt_clock_us();
    char *err = l->err;
    size_t len = l->errlen;
    int rc = pgt_db_int_query(db, DOING, err, len, &l->cfg->settings_version,
                              "SELECT version FROM settings_version WHERE id = 1", "");
    if (rc == 0)
        rc = pgt_db_run(db, DOING, err, len, budget_row, l,
                        pgt_db_has_column(db, "budgets", "max_rows")
                            ? "SELECT " BUDGET_COLUMNS " FROM budgets ORDER BY id"
                            : "SELECT " BUDGET_COLUMNS_7 ", NULL FROM budgets ORDER BY id",
                        "");
    for (size_t i = 0; rc == 0 && i < sizeof(whole_tables) / sizeof(whole_tables[0]); i++)
        rc = pgt_db_run(db, DOING, err, len, whole_tables[i].row, l, whole_tables[i].sql, "");
    if (rc == 0)
        rc = pgt_db_run(db, DOING, err, len, grant_row, l,
                        "SELECT id, \"user\", amount_micro, granted_at, until_us FROM "
                        "budget_grants WHERE until_us > ?1 OR (until_us IS NULL AND "
                        "granted_at >= ?2) ORDER BY id",
                        "ii", now, earliest_period_start(now));
    if (rc == 0)
        rc = pgt_rule_load(db, &l->cfg->rules, err, len);
    if (rc == 0)
        rc = pgt_approval_load(db, now, &l->cfg->approvals, err, len);
    return rc == 0 ? 0 : -1;
}

/* Starts the read transaction of pgt_budget_config_load. PostgreSQL's is
 * REPEATABLE READ, so that every statement sees the same snapshot (as in
 * SQLite), not each one its own. */
static int begin_read(pgt_db_t *db, char *err, size_t errlen)
{
    if (pgt_db_begin(db, false, err, errlen) != 0)
        return -1;
    if (pgt_db_backend(db) == PGT_DB_SQLITE ||
        pgt_db_exec(db, DOING, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", err, errlen) == 0)
        return 0;
    return pgt_db_finish(db, -1, err, errlen);
}

/* Orders strings as bytes, for qsort. */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Orders teams by name, as bytes, for qsort. */
static int cmp_team(const void *a, const void *b)
{
    return strcmp(((const pgt_budget_team_t *)a)->name, ((const pgt_budget_team_t *)b)->name);
}

/* Orders role memberships by role, then user, as bytes, for qsort. */
static int cmp_role(const void *a, const void *b)
{
    const pgt_budget_role_member_t *x = a, *y = b;
    int c = strcmp(x->role, y->role);
    return c ? c : strcmp(x->user, y->user);
}

/* Sorts the names of cfg as bytes, whatever the collation of the database
 * that ordered them: the same order from both backends. */
static void sort_names(pgt_budget_config_t *cfg)
{
    if (cfg->nteams)
        qsort(cfg->teams, cfg->nteams, sizeof(*cfg->teams), cmp_team);
    for (size_t i = 0; i < cfg->nteams; i++)
        if (cfg->teams[i].nmembers)
            qsort(cfg->teams[i].members, cfg->teams[i].nmembers, sizeof(char *), cmp_str);
    if (cfg->nrole_members)
        qsort(cfg->role_members, cfg->nrole_members, sizeof(*cfg->role_members), cmp_role);
}

int pgt_budget_config_load(pgt_db_t *db, pgt_budget_config_t **out, char *err, size_t errlen)
{
    load_t l = {.cfg = calloc(1, sizeof(*l.cfg)), .err = err, .errlen = errlen};
    if (!l.cfg) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* One read transaction: every table as of the same settings version. */
    int rc = begin_read(db, err, errlen);
    if (rc == 0)
        rc = pgt_db_finish(db, load_all(db, &l), err, errlen);
    if (rc != 0) {
        pgt_budget_config_free(l.cfg);
        return -1;
    }
    sort_names(l.cfg);
    if (pgt_rule_set_index(&l.cfg->rules) != 0) {
        snprintf(err, errlen, "out of memory");
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
    pgt_rule_set_clear(&cfg->rules);
    pgt_approval_set_clear(&cfg->approvals);
    free(cfg);
}

int64_t pgt_budget_settings_version(pgt_db_t *db)
{
    char err[256];
    int64_t v = -1;
    if (pgt_db_int_query(db, DOING, err, sizeof(err), &v,
                         "SELECT version FROM settings_version WHERE id = 1", "") != 0)
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

/* The limit_micro column of b: its limit, or -1 for none. */
static int64_t limit_of(const pgt_budget_t *b)
{
    return pgt_budget_has_limit(b) ? b->limit_micro : PGT_BUDGET_NO_LIMIT;
}

/* Updates budget id with b's settings. */
static int update_budget(pgt_db_t *db, int64_t id, const pgt_budget_t *b, const char *warn,
                         char *err, size_t errlen)
{
    return pgt_db_run(db, DOING, err, errlen, NULL, NULL,
                      "UPDATE budgets SET limit_micro = ?2, warn_pcts = ?3, action = ?4, "
                      "per_query_micro = ?5, max_rows = ?6 WHERE id = ?1",
                      "iittnn", id, limit_of(b), warn, pgt_budget_action_name(b->action),
                      b->per_query_micro, b->max_rows);
}

/* Inserts b unless a budget of its subject and period exists (then *id is
 * that one's, updated), in the transaction of pgt_budget_set. The insert
 * comes first: two processes setting the same new budget at once in
 * PostgreSQL, whose transactions do not lock the table, then both land. */
static int set_locked(pgt_db_t *db, const pgt_budget_t *b, int64_t *id, bool *created, char *err,
                      size_t errlen)
{
    const char *type = pgt_budget_subject_name(b->subject_type);
    const char *subject = b->subject_type == PGT_BUDGET_SUBJECT_DEFAULT ? "" : b->subject;
    const char *period = pgt_period_name(b->period);
    char warn[128];
    warn_json(b, warn, sizeof(warn));
    *id = 0;
    int rc = pgt_db_run(db, DOING, err, errlen, int_row, id,
                        "INSERT INTO budgets (subject_type, subject, period, limit_micro, "
                        "warn_pcts, action, per_query_micro, max_rows, created_at) VALUES "
                        "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING RETURNING id",
                        "tttittnni", type, subject, period, limit_of(b), warn,
                        pgt_budget_action_name(b->action), b->per_query_micro, b->max_rows,
                        pgt_clock_us());
    *created = rc == 0 && *id != 0;
    if (rc != 0 || *created)
        return rc;
    rc = pgt_db_int_query(db, DOING, err, errlen, id,
                          "SELECT id FROM budgets WHERE subject_type = ?1 AND subject = ?2 AND "
                          "period = ?3",
                          "ttt", type, subject, period);
    if (rc == 0 && *id == 0) {
        snprintf(err, errlen, "%s: the budget neither inserted nor found", DOING);
        rc = -1;
    }
    return rc == 0 ? update_budget(db, *id, b, warn, err, errlen) : rc;
}

int pgt_budget_set(pgt_db_t *db, const pgt_budget_t *b, int64_t *id, bool *created, char *err,
                   size_t errlen)
{
    int rc = pgt_db_begin(db, true, err, errlen);
    if (rc == 0)
        rc = pgt_db_finish(db, set_locked(db, b, id, created, err, errlen), err, errlen);
    return rc;
}

/* Where copy_row puts a budget. */
typedef struct copy_ctx {
    pgt_budget_t *b; /* the copy */
    char *err;       /* what failed */
    size_t errlen;   /* its size */
} copy_ctx_t;

/* Copies a row of SELECT BUDGET_COLUMNS into the copy_ctx_t. Returns 0, or
 * ROW_FAILED. */
static int copy_row(const pgt_db_row_t *r, void *arg)
{
    copy_ctx_t *c = arg;
    return budget_from_row(r, c->b, c->err, c->errlen) == 0 ? 0 : ROW_FAILED;
}

/* Deletes budget id and its alerts, in the transaction of pgt_budget_rm. */
static int rm_locked(pgt_db_t *db, int64_t id, pgt_budget_t *removed, char *err, size_t errlen)
{
    pgt_budget_t b = {0};
    copy_ctx_t c = {&b, err, errlen};
    int rc = row_rc(pgt_db_run(db, DOING, err, errlen, copy_row, &c,
                               "SELECT " BUDGET_COLUMNS " FROM budgets WHERE id = ?1", "i", id));
    if (rc == 0 && b.id == 0) {
        snprintf(err, errlen, "no budget with id %lld", (long long)id);
        rc = PGT_BUDGET_NOT_FOUND;
    }
    if (rc == 0)
        rc = pgt_db_run(db, DOING, err, errlen, NULL, NULL, "DELETE FROM budgets WHERE id = ?1",
                        "i", id);
    if (rc == 0)
        rc = pgt_db_run(db, DOING, err, errlen, NULL, NULL,
                        "DELETE FROM alerts_sent WHERE budget_id = ?1", "i", id);
    if (rc == 0 && removed)
        *removed = b;
    else
        free(b.subject);
    return rc;
}

int pgt_budget_rm(pgt_db_t *db, int64_t id, pgt_budget_t *removed, char *err, size_t errlen)
{
    int rc = pgt_db_begin(db, true, err, errlen);
    if (rc == 0)
        rc = pgt_db_finish(db, rm_locked(db, id, removed, err, errlen), err, errlen);
    return rc;
}

int pgt_budget_grant_add(pgt_db_t *db, const char *user, int64_t amount_micro, int64_t granted_us,
                         int64_t until_us, int64_t *id, char *err, size_t errlen)
{
    *id = 0;
    return pgt_db_run(db, DOING, err, errlen, int_row, id,
                      "INSERT INTO budget_grants (\"user\", amount_micro, granted_at, until_us) "
                      "VALUES (?1, ?2, ?3, ?4) RETURNING id",
                      "tiin", user, amount_micro, granted_us, until_us);
}

/* Sets *id to the id of team name, or 0 when there is none. */
static int team_id(pgt_db_t *db, const char *name, int64_t *id, char *err, size_t errlen)
{
    *id = 0;
    return pgt_db_int_query(db, DOING, err, errlen, id, "SELECT id FROM teams WHERE name = ?1", "t",
                            name);
}

/* Adds users to team, creating it, in the transaction of
 * pgt_budget_team_add. */
static int team_add_locked(pgt_db_t *db, const char *team, const char *const *users, size_t n,
                           bool *created, size_t *added, char *err, size_t errlen)
{
    int64_t id = 0;
    int rc = pgt_db_run(db, DOING, err, errlen, int_row, &id,
                        "INSERT INTO teams (name, created_at) VALUES (?1, ?2) "
                        "ON CONFLICT DO NOTHING RETURNING id",
                        "ti", team, pgt_clock_us());
    *created = rc == 0 && id != 0;
    if (rc == 0 && id == 0)
        rc = team_id(db, team, &id, err, errlen);
    *added = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = pgt_db_run(db, DOING, err, errlen, NULL, NULL,
                        "INSERT INTO team_members (team_id, \"user\") VALUES (?1, ?2) "
                        "ON CONFLICT DO NOTHING",
                        "it", id, users[i]);
        *added += rc == 0 ? (size_t)pgt_db_changes(db) : 0;
    }
    return rc;
}

int pgt_budget_team_add(pgt_db_t *db, const char *team, const char *const *users, size_t n,
                        bool *created, size_t *added, char *err, size_t errlen)
{
    int rc = pgt_db_begin(db, true, err, errlen);
    if (rc == 0)
        rc = pgt_db_finish(db, team_add_locked(db, team, users, n, created, added, err, errlen),
                           err, errlen);
    return rc;
}

/* Removes users from team, or the team, in the transaction of
 * pgt_budget_team_rm. */
static int team_rm_locked(pgt_db_t *db, const char *team, const char *const *users, size_t n,
                          char *err, size_t errlen)
{
    int64_t id;
    int rc = team_id(db, team, &id, err, errlen);
    if (rc == 0 && id == 0) {
        snprintf(err, errlen, "no team named '%s'", team);
        return PGT_BUDGET_NOT_FOUND;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = pgt_db_run(db, DOING, err, errlen, NULL, NULL,
                        "DELETE FROM team_members WHERE team_id = ?1 AND \"user\" = ?2", "it", id,
                        users[i]);
        if (rc == 0 && pgt_db_changes(db) == 0) {
            snprintf(err, errlen, "'%s' is not a member of team '%s'", users[i], team);
            return PGT_BUDGET_NOT_FOUND;
        }
    }
    if (rc == 0 && n == 0)
        rc = pgt_db_run(db, DOING, err, errlen, NULL, NULL,
                        "DELETE FROM team_members WHERE team_id = ?1", "i", id);
    if (rc == 0 && n == 0)
        rc = pgt_db_run(db, DOING, err, errlen, NULL, NULL, "DELETE FROM teams WHERE id = ?1", "i",
                        id);
    return rc;
}

int pgt_budget_team_rm(pgt_db_t *db, const char *team, const char *const *users, size_t n,
                       char *err, size_t errlen)
{
    int rc = pgt_db_begin(db, true, err, errlen);
    if (rc == 0)
        rc = pgt_db_finish(db, team_rm_locked(db, team, users, n, err, errlen), err, errlen);
    return rc;
}

/* ---- Spend ---------------------------------------------------------------- */

/* Returns the condition on spend that selects the rows of a subject: ?3 is
 * the subject, or for a default budget its period. */
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
           "AND period = ?3)";
}

/* The callback of pgt_budget_spend and its argument. */
typedef struct spend_ctx {
    pgt_budget_spend_cb cb; /* the caller's callback */
    void *arg;              /* its argument */
} spend_ctx_t;

/* Hands one line of spend to the caller's callback. */
static int spend_row(const pgt_db_row_t *r, void *arg)
{
    spend_ctx_t *c = arg;
    return c->cb(pgt_db_text(r, 0), pgt_db_int(r, 1), c->arg);
}

int pgt_budget_spend(pgt_db_t *db, const pgt_budget_t *b, int64_t from_us, int64_t to_us,
                     pgt_budget_spend_cb cb, void *arg, char *err, size_t errlen)
{
    bool per_user = b->subject_type == PGT_BUDGET_SUBJECT_DEFAULT;
    char sql[512];
    /* Every parameter appears in the text: PostgreSQL cannot type one that
     * does not. The sum of a PostgreSQL bigint is a numeric, which
     * pgt_db_int reads. */
    snprintf(sql, sizeof(sql),
             "SELECT %s, coalesce(sum(cost_micro), 0) AS spent FROM spend "
             "WHERE day >= ?1 AND day < ?2 AND %s%s",
             per_user ? "\"user\"" : "NULL", subject_filter(b->subject_type),
             per_user ? " GROUP BY \"user\" ORDER BY spent DESC, \"user\"" : "");
    spend_ctx_t c = {cb, arg};
    return pgt_db_run(db, DOING, err, errlen, spend_row, &c, sql, "iit",
                      (int64_t)pgt_local_day(from_us), (int64_t)pgt_local_day(to_us),
                      per_user ? pgt_period_name(b->period) : b->subject);
}
