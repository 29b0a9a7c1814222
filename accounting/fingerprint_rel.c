/* The relations a statement names, read from libpg_query's parse tree, for
 * the ledger's cost by schema and table when no plan says better (a shape
 * never explained, a statement EXPLAIN does not take). The tree knows names,
 * not costs, so every relation gets the same share. */
#include "pgtally/fingerprint.h"

#include <jansson.h>
#include <pg_query.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fingerprint_int.h"

/* Relations kept per statement, as a plan keeps (PGT_PLAN_MAX_RELS), and
 * names gathered to find them (WITH queries among them). */
#define RELS_MAX 16
#define NAMES_MAX 64
/* CTE names remembered per statement; more are not told from tables. */
#define CTES_MAX 64
/* Levels of the parse tree walked (jansson itself stops at 2048). */
#define DEPTH_MAX 2048

/* One relation named, as the tree spells it (folded unless quoted). */
typedef struct rel {
    const char *schema; /* "" when unqualified; held by the tree */
    const char *name;   /* held by the tree */
    json_int_t at;      /* where it is first named in the text */
} rel_t;

/* What the walk finds. */
typedef struct found {
    rel_t names[NAMES_MAX];     /* relations or WITH queries, each once */
    int nnames;                 /* entries in names */
    const char *ctes[CTES_MAX]; /* names of WITH queries (held by the tree) */
    int nctes;                  /* entries in ctes */
} found_t;

static void add_name(found_t *f, const char *schema, const char *name, json_int_t at)
{
    for (int i = 0; i < f->nnames; i++)
        if (strcmp(f->names[i].schema, schema) == 0 && strcmp(f->names[i].name, name) == 0) {
            if (at < f->names[i].at)
                f->names[i].at = at;
            return;
        }
    if (f->nnames < NAMES_MAX)
        f->names[f->nnames++] = (rel_t){schema, name, at};
}

/* In the order of the text (the tree prints a WITH clause last). */
static int by_place(const void *a, const void *b)
{
    json_int_t x = ((const rel_t *)a)->at, y = ((const rel_t *)b)->at;
    return x < y ? -1 : x > y;
}

/* Walks the tree. A RangeVar is printed with its node name where a field
 * holds any node ({"RangeVar": {...}}) and without it where the field can
 * only be one (InsertStmt.relation), so it is known by its relname, which
 * no other node of a raw parse tree has. */
static void walk(json_t *v, found_t *f, int depth)
{
    if (depth > DEPTH_MAX)
        return;
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            walk(x, f, depth + 1);
        }
        return;
    }
    if (!json_is_object(v))
        return;
    const char *name = json_string_value(json_object_get(v, "relname"));
    if (name) {
        const char *schema = json_string_value(json_object_get(v, "schemaname"));
        add_name(f, schema ? schema : "", name, json_integer_value(json_object_get(v, "location")));
    }
    const char *cte = json_string_value(json_object_get(v, "ctename"));
    if (cte && f->nctes < CTES_MAX)
        f->ctes[f->nctes++] = cte;
    const char *key;
    json_t *x;
    json_object_foreach(v, key, x)
    {
        if (json_is_object(x) || json_is_array(x))
            walk(x, f, depth + 1);
    }
}

static bool is_cte(const found_t *f, const char *name)
{
    for (int i = 0; i < f->nctes; i++)
        if (strcmp(f->ctes[i], name) == 0)
            return true;
    return false;
}

/* The JSON of rels: even shares of four decimals, the first one taking
 * what rounding leaves so that they sum to 1. */
static char *rels_json(const rel_t *rels, int n)
{
    double each = (double)(long long)(10000.0 / n + 0.5) / 10000;
    double first = (double)(long long)((1.0 - each * (n - 1)) * 10000 + 0.5) / 10000;
    json_t *arr = json_array();
    for (int i = 0; arr && i < n; i++) {
        json_t *e = json_pack("[ssf]", rels[i].schema, rels[i].name, i == 0 ? first : each);
        if (!e || json_array_append_new(arr, e) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    /* Six significant digits print 0.3334 as such, not 0.33339999999999997. */
    char *s = arr ? json_dumps(arr, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    json_decref(arr);
    return s;
}

char *pgt_fp_relations_json(const char *sql, size_t len)
{
    char *copy = sql ? pgt__fp_dup_nul(sql, len) : NULL;
    if (!copy)
        return NULL;
    PgQueryParseResult r = pg_query_parse(copy);
    free(copy);
    json_t *tree = r.error || !r.parse_tree ? NULL : json_loads(r.parse_tree, 0, NULL);
    pg_query_free_parse_result(r);
    if (!tree)
        return NULL;
    found_t f = {.nnames = 0};
    walk(json_object_get(tree, "stmts"), &f, 0);
    qsort(f.names, (size_t)f.nnames, sizeof(f.names[0]), by_place);
    /* An unqualified name that a WITH clause defines is that query, not a
     * table (wherever it is used: the tree does not say in which scope). */
    rel_t rels[RELS_MAX];
    int n = 0;
    for (int i = 0; i < f.nnames && n < RELS_MAX; i++)
        if (f.names[i].schema[0] || !is_cte(&f, f.names[i].name))
            rels[n++] = f.names[i];
    char *out = n ? rels_json(rels, n) : NULL;
    json_decref(tree);
    return out;
}
