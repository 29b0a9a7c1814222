/* The daily report's reads of the ledger: a few GROUP BY queries over the
 * rollups of one local day and the seven before it (sums the writer keeps
 * per day, instance, user, database, application, shape and status, so
 * that a day of millions of statements is thousands of rows here), one
 * over the statements budgets stopped, the schemas and tables that cost the
 * most (from daily_relations, kept by the writer the same way), and the
 * sums per user and per shape that the report ranks, grouped by sorting.
 * The SQL is the same on SQLite and PostgreSQL. */
#include "report_scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Growing arrays ------------------------------------------------------ */

/* Makes room for one more entry of size bytes in *v (*n used, *cap
 * allocated). Returns false when out of memory. */
static bool grow(void **v, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return true;
    size_t c = *cap ? *cap * 2 : 64;
    void *p = realloc(*v, c * size);
    if (!p)
        return false;
    *v = p;
    *cap = c;
    return true;
}

/* ---- Row callbacks ------------------------------------------------------- */

/* A pgt_db_row_cb of (user, fingerprint, statements, cost, max cost,
 * compute): keeps one pair. Returns 1 when out of memory. */
static int pair_row(const pgt_db_row_t *r, void *arg)
{
    rs_day_t *d = arg;
    if (!grow((void **)&d->pairs, d->npairs, &d->cap_pairs, sizeof(*d->pairs)))
        return 1;
    const char *user = pgt_db_text(r, 0);
    rs_pair_t *p = &d->pairs[d->npairs];
    *p = (rs_pair_t){.user = strdup(user ? user : ""),
                     .fp = (uint64_t)pgt_db_int(r, 1),
                     .statements = pgt_db_int(r, 2),
                     .cost = pgt_db_int(r, 3),
                     .max_cost = pgt_db_int(r, 4),
                     .compute_s = pgt_db_double(r, 5)};
    if (!p->user)
        return 1;
    d->npairs++;
    return 0;
}

/* The status named s; an unknown name counts as an error, as the ledger's
 * reader does. */
static pgt_query_status_t status_of(const char *s)
{
    pgt_query_status_t st;
    return s && pgt_query_status_parse(s, &st) == 0 ? st : PGT_QUERY_ERROR;
}

/* A pgt_db_row_cb of (status, statements, cost, compute): the day's totals. */
static int status_row(const pgt_db_row_t *r, void *arg)
{
    rs_day_t *d = arg;
    int64_t n = pgt_db_int(r, 1);
    d->by_status[status_of(pgt_db_text(r, 0))] += n;
    d->totals.statements += n;
    d->totals.cost += pgt_db_int(r, 2);
    d->totals.compute_s += pgt_db_double(r, 3);
    return 0;
}

/* A pgt_db_row_cb of (day, statements, cost, compute): one day before. */
static int history_row(const pgt_db_row_t *r, void *arg)
{
    rs_day_t *d = arg;
    int64_t k = (int64_t)d->day - 1 - pgt_db_int(r, 0);
    if (k >= 0 && k < RS_HISTORY_DAYS)
        d->hist[k] = (rs_totals_t){pgt_db_int(r, 1), pgt_db_int(r, 2), pgt_db_double(r, 3)};
    return 0;
}

/* A pgt_db_row_cb of min(day): the first day, unless there is none. */
static int first_day_row(const pgt_db_row_t *r, void *arg)
{
    rs_day_t *d = arg;
    d->first_day = pgt_db_isnull(r, 0) ? RS_NO_DAY : (int32_t)pgt_db_int(r, 0);
    return 0;
}

/* A pgt_db_row_cb of (user, cost) of the day before. Returns 1 when out of
 * memory. */
static int prev_row(const pgt_db_row_t *r, void *arg)
{
    rs_day_t *d = arg;
    if (!grow((void **)&d->prev, d->nprev, &d->cap_prev, sizeof(*d->prev)))
        return 1;
    const char *user = pgt_db_text(r, 0);
    d->prev[d->nprev] = (rs_user_cost_t){strdup(user ? user : ""), pgt_db_int(r, 1)};
    if (!d->prev[d->nprev].user)
        return 1;
    d->nprev++;
    return 0;
}

/* A pgt_db_row_cb of (budget, status, statements, cost). Returns 1 when
 * out of memory. */
static int refusal_row(const pgt_db_row_t *r, void *arg)
{
    rs_day_t *d = arg;
    int64_t budget = pgt_db_int(r, 0);
    size_t i = 0;
    while (i < d->nrefusals && d->refusals[i].budget_id != budget)
        i++;
    if (i == d->nrefusals) {
        if (!grow((void **)&d->refusals, d->nrefusals, &d->cap_refusals, sizeof(*d->refusals)))
            return 1;
        d->refusals[d->nrefusals++] = (rs_refusal_t){.budget_id = budget};
    }
    rs_refusal_t *f = &d->refusals[i];
    if (status_of(pgt_db_text(r, 1)) == PGT_QUERY_REFUSED)
        f->refused += pgt_db_int(r, 2);
    else
        f->cancelled += pgt_db_int(r, 2);
    f->cost += pgt_db_int(r, 3);
    return 0;
}

/* ---- Reading ------------------------------------------------------------- */

/* One query of the day's reading: its SQL, its row callback, and its
 * parameters. */
typedef struct step {
    const char *sql;  /* the statement */
    pgt_db_row_cb cb; /* what to do with each row */
    const char *args; /* "": none; "d": ?1 is the day; "p": the day before; "w": ?1 and ?2
                         bound the week before it */
} step_t;

static const step_t steps[] = {
    {"SELECT \"user\", fingerprint, sum(statements), sum(cost_micro), max(max_cost_micro), "
     "sum(compute_s) FROM rollups WHERE day = ?1 GROUP BY \"user\", fingerprint",
     pair_row, "d"},
    {"SELECT status, sum(statements), sum(cost_micro), sum(compute_s) FROM rollups "
     "WHERE day = ?1 GROUP BY status",
     status_row, "d"},
    {"SELECT day, sum(statements), sum(cost_micro), sum(compute_s) FROM rollups "
     "WHERE day >= ?1 AND day < ?2 GROUP BY day",
     history_row, "w"},
    {"SELECT min(day) FROM rollups", first_day_row, ""},
    /* The partial index queries_day_budget holds exactly these rows. */
    {"SELECT budget_id, status, count(*), sum(cost_micro) FROM queries WHERE day = ?1 "
     "AND budget_id IS NOT NULL AND status IN ('refused', 'budget_cancelled') "
     "GROUP BY budget_id, status",
     refusal_row, "d"},
    /* The users of the day before, for rs_prev_cost. */
    {"SELECT \"user\", sum(cost_micro) FROM rollups WHERE day = ?1 GROUP BY \"user\"", prev_row,
     "p"},
};

static int cmp_user_cost(const void *x, const void *y)
{
    return strcmp(((const rs_user_cost_t *)x)->user, ((const rs_user_cost_t *)y)->user);
}

int rs_day_read(pgt_db_t *db, int32_t day, rs_day_t *d, char *err, size_t errlen)
{
    d->day = day;
    d->first_day = RS_NO_DAY;
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        const step_t *s = &steps[i];
        char a = s->args[0];
        int64_t first = a == 'w' ? (int64_t)day - RS_HISTORY_DAYS : a == 'p' ? day - 1 : day;
        int rc = pgt_db_run(db, "reading the ledger", err, errlen, s->cb, d, s->sql,
                            a == 'w' ? "ii"
                            : a      ? "i"
                                     : "",
                            first, (int64_t)day);
        if (rc > 0)
            snprintf(err, errlen, "out of memory");
        if (rc != 0)
            return -1;
    }
    if (d->nprev)
        qsort(d->prev, d->nprev, sizeof(*d->prev), cmp_user_cost);
    return 0;
}

void rs_day_free(rs_day_t *d)
{
    for (size_t i = 0; i < d->npairs; i++)
        free(d->pairs[i].user);
    for (size_t i = 0; i < d->nprev; i++)
        free(d->prev[i].user);
    free(d->pairs);
    free(d->prev);
    free(d->refusals);
    memset(d, 0, sizeof(*d));
}

int64_t rs_prev_cost(const rs_day_t *d, const char *user)
{
    rs_user_cost_t key = {.user = (char *)user};
    const rs_user_cost_t *hit =
        d->nprev ? bsearch(&key, d->prev, d->nprev, sizeof(*d->prev), cmp_user_cost) : NULL;
    return hit ? hit->cost : 0;
}

/* ---- The data that cost the most ------------------------------------------ */

/* The list a row of rs_data_read goes to. */
typedef struct data_ctx {
    rs_data_t *d; /* the data */
    bool tables;  /* reading tables, not schemas */
} data_ctx_t;

/* A pgt_db_row_cb of (schema, relation, queries, cost, compute). Returns 1
 * when out of memory. */
static int data_row(const pgt_db_row_t *r, void *arg)
{
    data_ctx_t *c = arg;
    rs_rel_t **v = c->tables ? &c->d->tables : &c->d->schemas;
    size_t *n = c->tables ? &c->d->ntables : &c->d->nschemas;
    if (!grow((void **)v, *n, &c->d->cap, sizeof(**v)))
        return 1;
    const char *schema = pgt_db_text(r, 0), *relation = pgt_db_text(r, 1);
    rs_rel_t *x = &(*v)[*n];
    *x = (rs_rel_t){.schema = strdup(schema ? schema : ""),
                    .relation = c->tables ? strdup(relation ? relation : "") : NULL,
                    .queries = pgt_db_int(r, 2),
                    .cost = pgt_db_int(r, 3),
                    .compute_s = pgt_db_double(r, 4)};
    if (!x->schema || (c->tables && !x->relation)) {
        free(x->schema);
        free(x->relation);
        return 1;
    }
    (*n)++;
    return 0;
}

/* A pgt_db_row_cb of (cost, compute): the day's sums over known relations. */
static int data_total_row(const pgt_db_row_t *r, void *arg)
{
    rs_data_t *d = arg;
    d->cost = pgt_db_int(r, 0);
    d->compute_s = pgt_db_double(r, 1);
    return 0;
}

int rs_data_read(pgt_db_t *db, int32_t day, int top, rs_data_t *d, char *err, size_t errlen)
{
    if (!pgt_db_has_table(db, "daily_relations"))
        return 0;
    data_ctx_t schemas = {d, false}, tables = {d, true};
    int rc = pgt_db_run(db, "reading the ledger", err, errlen, data_total_row, d,
                        "SELECT coalesce(sum(cost_micro), 0), coalesce(sum(compute_s), 0)"
                        " FROM daily_relations WHERE day = ?1",
                        "i", (int64_t)day);
    if (rc == 0)
        rc = pgt_db_run(db, "reading the ledger", err, errlen, data_row, &schemas,
                        "SELECT schema_name, NULL, sum(queries), sum(cost_micro) AS cost,"
                        " sum(compute_s) FROM daily_relations WHERE day = ?1"
                        " GROUP BY schema_name ORDER BY cost DESC, schema_name LIMIT ?2",
                        "ii", (int64_t)day, (int64_t)top);
    d->cap = 0;
    if (rc == 0)
        rc = pgt_db_run(db, "reading the ledger", err, errlen, data_row, &tables,
                        "SELECT schema_name, relation, sum(queries), sum(cost_micro) AS cost,"
                        " sum(compute_s) FROM daily_relations WHERE day = ?1"
                        " GROUP BY schema_name, relation ORDER BY cost DESC, schema_name, relation"
                        " LIMIT ?2",
                        "ii", (int64_t)day, (int64_t)top);
    if (rc > 0)
        snprintf(err, errlen, "out of memory");
    return rc == 0 ? 0 : -1;
}

void rs_data_free(rs_data_t *d)
{
    for (size_t i = 0; i < d->nschemas; i++)
        free(d->schemas[i].schema);
    for (size_t i = 0; i < d->ntables; i++) {
        free(d->tables[i].schema);
        free(d->tables[i].relation);
    }
    free(d->schemas);
    free(d->tables);
    memset(d, 0, sizeof(*d));
}

/* ---- Grouping ------------------------------------------------------------ */

static int cmp_pair_user(const void *x, const void *y)
{
    return strcmp(((const rs_pair_t *)x)->user, ((const rs_pair_t *)y)->user);
}

/* Orders pairs by shape, then biggest spender first, then by name. */
static int cmp_pair_shape(const void *x, const void *y)
{
    const rs_pair_t *a = *(const rs_pair_t *const *)x, *b = *(const rs_pair_t *const *)y;
    if (a->fp != b->fp)
        return a->fp < b->fp ? -1 : 1;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    return strcmp(a->user, b->user);
}

static int cmp_user(const void *x, const void *y)
{
    const rs_user_t *a = x, *b = y;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    return strcmp(a->user, b->user);
}

static int cmp_shape(const void *x, const void *y)
{
    const rs_shape_t *a = x, *b = y;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    return a->fp < b->fp ? -1 : a->fp > b->fp;
}

/* Sums the pairs, sorted by user, per user into g->users. */
static void group_users(const rs_day_t *d, rs_groups_t *g)
{
    for (size_t i = 0; i < d->npairs; i++) {
        const rs_pair_t *p = &d->pairs[i];
        rs_user_t *u = g->nusers ? &g->users[g->nusers - 1] : NULL;
        if (!u || strcmp(u->user, p->user) != 0) {
            u = &g->users[g->nusers++];
            *u = (rs_user_t){.user = p->user, .best = p};
        }
        u->statements += p->statements;
        u->cost += p->cost;
        u->compute_s += p->compute_s;
        if (p->cost > u->best->cost || (p->cost == u->best->cost && p->fp < u->best->fp))
            u->best = p;
    }
    qsort(g->users, g->nusers, sizeof(*g->users), cmp_user);
}

/* Sums the pairs, in g->by_shape order, per shape into g->shapes. */
static void group_shapes(const rs_day_t *d, rs_groups_t *g)
{
    for (size_t i = 0; i < d->npairs; i++) {
        const rs_pair_t *p = g->by_shape[i];
        rs_shape_t *s = g->nshapes ? &g->shapes[g->nshapes - 1] : NULL;
        if (!s || s->fp != p->fp) {
            s = &g->shapes[g->nshapes++];
            *s = (rs_shape_t){.fp = p->fp, .spenders = &g->by_shape[i]};
        }
        s->statements += p->statements;
        s->cost += p->cost;
        s->compute_s += p->compute_s;
        s->max_cost = p->max_cost > s->max_cost ? p->max_cost : s->max_cost;
        s->users++;
    }
    qsort(g->shapes, g->nshapes, sizeof(*g->shapes), cmp_shape);
}

int rs_group(rs_day_t *d, rs_groups_t *g)
{
    size_t n = d->npairs ? d->npairs : 1;
    memset(g, 0, sizeof(*g));
    g->users = calloc(n, sizeof(*g->users));
    g->shapes = calloc(n, sizeof(*g->shapes));
    g->by_shape = calloc(n, sizeof(*g->by_shape));
    if (!g->users || !g->shapes || !g->by_shape) {
        rs_groups_free(g);
        return -1;
    }
    if (d->npairs)
        qsort(d->pairs, d->npairs, sizeof(*d->pairs), cmp_pair_user);
    for (size_t i = 0; i < d->npairs; i++)
        g->by_shape[i] = &d->pairs[i];
    if (d->npairs)
        qsort(g->by_shape, d->npairs, sizeof(*g->by_shape), cmp_pair_shape);
    group_users(d, g);
    group_shapes(d, g);
    return 0;
}

void rs_groups_free(rs_groups_t *g)
{
    free(g->users);
    free(g->shapes);
    free(g->by_shape);
    memset(g, 0, sizeof(*g));
}
