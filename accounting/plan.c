/* Reading EXPLAIN (FORMAT JSON): one walk over the plan tree
 * gives the features, the guard's row counts and the relations' shares
 * (include/pgtally/plan.h).
 *
 * Costs in the document are per loop: a nested loop's inner side and a
 * SubPlan show the cost of one execution. The walk hands each node its
 * effective cost, what it adds to the top node's total: the top node gets
 * its Total Cost, and a node's children get their Total Cost times their
 * loops, scaled down to fit when together they would exceed the node's
 * own (a rescan is often cheaper than the first scan). What the children
 * do not take is the node's own cost. Summed over the tree, own costs add
 * up to the top node's total. */
#include "pgtally/plan.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deeper nodes are counted in their ancestor's own cost: a plan this deep
 * is built by a client that wants to exhaust pgtally's stack. */
#define MAX_DEPTH 200
/* Bucket of relations past PGT_PLAN_MAX_RELS. */
#define OVERFLOW PGT_PLAN_MAX_RELS

typedef struct walk {
    pgt_plan_t *p;
    json_t *max_rows_node; /* the node with the most rows */
    json_t *max_join_node; /* the join with the most rows */
} walk_t;

static double num(json_t *node, const char *key)
{
    json_t *v = json_object_get(node, key);
    return json_is_number(v) ? json_number_value(v) : 0;
}

static const char *str(json_t *node, const char *key)
{
    const char *v = json_string_value(json_object_get(node, key));
    return v ? v : "";
}

static bool is_join(const char *type)
{
    return !strcmp(type, "Nested Loop") || !strcmp(type, "Hash Join") ||
           !strcmp(type, "Merge Join");
}

/* Nodes whose work grows with the rows they take in, not only with those
 * they give out. */
static bool takes_input(const char *type)
{
    return !strcmp(type, "Sort") || !strcmp(type, "Aggregate") || !strcmp(type, "Hash") ||
           !strcmp(type, "WindowAgg") || !strcmp(type, "Unique") || !strcmp(type, "Group");
}

static pgt_plan_family_t family(const char *type)
{
    static const struct {
        const char *type;
        pgt_plan_family_t family;
    } map[] = {
        {"Seq Scan", PGT_PLAN_F_SCAN},
        {"Bitmap Heap Scan", PGT_PLAN_F_SCAN},
        {"Bitmap Index Scan", PGT_PLAN_F_SCAN},
        {"Tid Scan", PGT_PLAN_F_SCAN},
        {"Tid Range Scan", PGT_PLAN_F_SCAN},
        {"Sample Scan", PGT_PLAN_F_SCAN},
        {"Index Scan", PGT_PLAN_F_INDEX},
        {"Index Only Scan", PGT_PLAN_F_INDEX},
        {"Nested Loop", PGT_PLAN_F_JOIN},
        {"Hash Join", PGT_PLAN_F_JOIN},
        {"Merge Join", PGT_PLAN_F_JOIN},
        {"Hash", PGT_PLAN_F_JOIN},
        {"Sort", PGT_PLAN_F_SORT},
        {"Incremental Sort", PGT_PLAN_F_SORT},
        {"Aggregate", PGT_PLAN_F_AGG},
        {"Group", PGT_PLAN_F_AGG},
        {"Unique", PGT_PLAN_F_AGG},
        {"SetOp", PGT_PLAN_F_AGG},
        {"WindowAgg", PGT_PLAN_F_WINDOW},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (!strcmp(map[i].type, type))
            return map[i].family;
    return PGT_PLAN_F_OTHER;
}

/* The index of the relation a node reads (schema and name), added when
 * new; OVERFLOW past the table's end; -1 when the node reads none. */
static int relation_of(pgt_plan_t *p, json_t *node)
{
    const char *name = json_string_value(json_object_get(node, "Relation Name"));
    if (!name)
        return -1;
    const char *schema = str(node, "Schema");
    for (int i = 0; i < p->nrels; i++)
        if (!strcmp(p->rels[i].name, name) && !strcmp(p->rels[i].schema, schema))
            return i;
    if (p->nrels == PGT_PLAN_MAX_RELS)
        return OVERFLOW;
    pgt_plan_rel_t *r = &p->rels[p->nrels];
    snprintf(r->schema, sizeof(r->schema), "%s", schema);
    snprintf(r->name, sizeof(r->name), "%s", name);
    return p->nrels++;
}

/* How many times child i of a node of type runs per run of the node: a
 * nested loop's inner side once per outer row, a SubPlan once per row. */
static double loops_of(const char *type, json_t *child, size_t i, double outer_rows, double rows)
{
    if (!strcmp(type, "Nested Loop") && i > 0)
        return outer_rows > 1 ? outer_rows : 1;
    if (!strcmp(str(child, "Parent Relationship"), "SubPlan"))
        return rows > 1 ? rows : 1;
    return 1;
}

/* Visits node, whose effective cost is eff, adding its subtree's cost by
 * relation into acc (OVERFLOW + 1 entries). */
static void visit(walk_t *w, json_t *node, double eff, double loops, double acc[OVERFLOW + 1],
                  int depth)
{
    pgt_plan_t *p = w->p;
    const char *type = str(node, "Node Type");
    double total = num(node, "Total Cost");
    double rows = num(node, "Plan Rows");
    pgt_plan_family_t fam = family(type);
    p->nodes++;
    p->rows_total += rows * loops;
    if (fam == PGT_PLAN_F_SCAN || fam == PGT_PLAN_F_INDEX)
        p->scan_rows += rows * loops;
    if (rows > p->max_rows) {
        p->max_rows = rows;
        w->max_rows_node = node;
    }
    if (is_join(type) && rows > p->max_join_rows) {
        p->max_join_rows = rows;
        w->max_join_node = node;
    }
    /* The children's effective costs, before they are fitted into eff. */
    json_t *plans = depth < MAX_DEPTH ? json_object_get(node, "Plans") : NULL;
    size_t n = json_array_size(plans);
    double scale = total > 0 ? eff / total : 0;
    double outer_rows = n > 0 ? num(json_array_get(plans, 0), "Plan Rows") : 0;
    double raw_sum = 0, in_rows = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *child = json_array_get(plans, i);
        raw_sum += num(child, "Total Cost") * loops_of(type, child, i, outer_rows, rows) * scale;
        in_rows += num(child, "Plan Rows");
    }
    if (takes_input(type))
        p->input_rows += in_rows * loops;
    double fit = raw_sum > eff && raw_sum > 0 ? eff / raw_sum : 1;
    double sub[OVERFLOW + 1] = {0};
    double taken = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *child = json_array_get(plans, i);
        double child_loops = loops_of(type, child, i, outer_rows, rows);
        double ceff = num(child, "Total Cost") * child_loops * scale * fit;
        taken += ceff;
        visit(w, child, ceff, loops * child_loops, sub, depth + 1);
    }
    double own = eff > taken ? eff - taken : 0;
    p->family_cost[fam] += own;
    /* The node's own cost goes to the relation it reads or, for joins,
     * aggregates and the like, to the relations beneath in proportion to
     * their costs. */
    int rel = relation_of(p, node);
    double below = 0;
    for (int i = 0; i <= OVERFLOW; i++)
        below += sub[i];
    if (rel >= 0)
        sub[rel] += own;
    else if (below > 0)
        for (int i = 0; i <= OVERFLOW; i++)
            sub[i] += own * sub[i] / below;
    for (int i = 0; i <= OVERFLOW; i++)
        acc[i] += sub[i];
}

/* Appends the names of the relations node's subtree reads, in plan order,
 * to out ("a × b"), at most `left` more. */
static void describe(json_t *node, char *out, size_t cap, int *left, int depth)
{
    const char *name = json_string_value(json_object_get(node, "Relation Name"));
    if (name && *left > 0) {
        size_t len = strlen(out);
        int w = snprintf(out + len, cap - len, "%s%s", len ? " × " : "", name);
        if (w < 0 || (size_t)w >= cap - len) {
            /* Truncated: end on a whole name and say so. */
            out[len] = '\0';
            snprintf(out + len, cap - len, "%s", len ? " × …" : "…");
            *left = 0;
            return;
        }
        (*left)--;
    }
    json_t *plans = depth < MAX_DEPTH ? json_object_get(node, "Plans") : NULL;
    for (size_t i = 0; i < json_array_size(plans) && *left > 0; i++)
        describe(json_array_get(plans, i), out, cap, left, depth + 1);
}

static void describe_node(json_t *node, char *out, size_t cap)
{
    out[0] = '\0';
    int left = 8;
    if (node)
        describe(node, out, cap, &left, 0);
}

static int by_cost_desc(const void *a, const void *b)
{
    double x = ((const pgt_plan_rel_t *)a)->cost, y = ((const pgt_plan_rel_t *)b)->cost;
    return x < y ? 1 : x > y ? -1 : 0;
}

int pgt_plan_parse(const char *output, size_t len, pgt_plan_t *out)
{
    memset(out, 0, sizeof(*out));
    json_error_t jerr;
    json_t *doc = json_loadb(output, len, 0, &jerr);
    json_t *top = json_object_get(json_array_get(doc, 0), "Plan");
    if (!json_is_object(top) || !json_is_number(json_object_get(top, "Total Cost"))) {
        json_decref(doc);
        return -1;
    }
    walk_t w = {.p = out};
    out->total_cost = num(top, "Total Cost");
    out->rows = num(top, "Plan Rows");
    out->width = num(top, "Plan Width");
    double acc[OVERFLOW + 1] = {0};
    visit(&w, top, out->total_cost, 1, acc, 0);
    for (int i = 0; i < out->nrels; i++)
        out->rels[i].cost = acc[i];
    qsort(out->rels, (size_t)out->nrels, sizeof(out->rels[0]), by_cost_desc);
    if (w.max_rows_node)
        snprintf(out->max_rows_node, sizeof(out->max_rows_node), "%s",
                 str(w.max_rows_node, "Node Type"));
    describe_node(w.max_rows_node, out->max_rows_desc, sizeof(out->max_rows_desc));
    describe_node(w.max_join_node, out->join_desc, sizeof(out->join_desc));
    json_decref(doc);
    return 0;
}

char *pgt_plan_relations_json(const pgt_plan_t *p)
{
    if (p->nrels == 0)
        return NULL;
    double sum = 0;
    for (int i = 0; i < p->nrels; i++)
        sum += p->rels[i].cost;
    json_t *arr = json_array();
    for (int i = 0; arr && i < p->nrels; i++) {
        double share = sum > 0 ? p->rels[i].cost / sum : 1.0 / p->nrels;
        json_t *e = json_pack("[ssf]", p->rels[i].schema, p->rels[i].name, share);
        if (!e || json_array_append_new(arr, e) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    /* Four significant digits: a share is for splitting money, not for physics. */
    char *s = arr ? json_dumps(arr, JSON_COMPACT | JSON_REAL_PRECISION(4)) : NULL;
    json_decref(arr);
    return s;
}

void pgt_plan_qualify(pgt_plan_t *p, const char *tree)
{
    json_t *arr = tree ? json_loads(tree, 0, NULL) : NULL;
    for (int i = 0; arr && i < p->nrels; i++) {
        pgt_plan_rel_t *r = &p->rels[i];
        if (r->schema[0])
            continue;
        const char *found = NULL;
        bool unique = true;
        size_t k;
        json_t *e;
        json_array_foreach(arr, k, e)
        {
            const char *schema = json_string_value(json_array_get(e, 0));
            const char *name = json_string_value(json_array_get(e, 1));
            if (!schema || !schema[0] || !name || strcmp(name, r->name) != 0)
                continue;
            unique = unique && (!found || !strcmp(found, schema));
            found = schema;
        }
        if (found && unique)
            snprintf(r->schema, sizeof(r->schema), "%s", found);
    }
    json_decref(arr);
}
