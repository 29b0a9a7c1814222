/* Unit tests of reading EXPLAIN (FORMAT JSON, VERBOSE): the top node's
 * cost and rows, own costs by family adding up to the total, the worst
 * join and the tables under it, relations' shares (a nested loop's inner
 * side counted once per outer row), and documents that are not plans or
 * are built to exhaust the stack. */
#include <math.h>
#include <stdlib.h>

#include "pgtally/plan.h"
#include "task.h"

/* SELECT s.region, sum(f.amount) FROM analytics.sales f JOIN raw_data.stores s
 * ON s.id = f.store_id GROUP BY 1, with a nested loop into an index scan of
 * analytics.dates, as PostgreSQL 15 writes it (Output lists shortened). */
static const char PLAN[] =
    "[{\"Plan\": {\"Node Type\": \"Aggregate\", \"Strategy\": \"Hashed\", \"Startup Cost\": "
    "900.0, \"Total Cost\": 1000.0, \"Plan Rows\": 5, \"Plan Width\": 40, \"Output\": [\"x\"], "
    "\"Plans\": [{\"Node Type\": \"Hash Join\", \"Parent Relationship\": \"Outer\", \"Join "
    "Type\": \"Inner\", \"Startup Cost\": 10.0, \"Total Cost\": 800.0, \"Plan Rows\": 100000, "
    "\"Plan Width\": 12, \"Plans\": [{\"Node Type\": \"Nested Loop\", \"Parent Relationship\": "
    "\"Outer\", \"Startup Cost\": 0, \"Total Cost\": 600.0, \"Plan Rows\": 100000, \"Plan Width\": "
    "8, \"Plans\": [{\"Node Type\": \"Seq Scan\", \"Parent Relationship\": \"Outer\", \"Relation "
    "Name\": \"sales\", \"Schema\": \"analytics\", \"Alias\": \"f\", \"Startup Cost\": 0, \"Total "
    "Cost\": 400.0, \"Plan Rows\": 100, \"Plan Width\": 8}, {\"Node Type\": \"Index Scan\", "
    "\"Parent Relationship\": \"Inner\", \"Relation Name\": \"dates\", \"Schema\": \"analytics\", "
    "\"Startup Cost\": 0, \"Total Cost\": 1.5, \"Plan Rows\": 1, \"Plan Width\": 4}]}, {\"Node "
    "Type\": \"Hash\", \"Parent Relationship\": \"Inner\", \"Startup Cost\": 5, \"Total Cost\": "
    "50.0, \"Plan Rows\": 2000, \"Plan Width\": 36, \"Plans\": [{\"Node Type\": \"Seq Scan\", "
    "\"Parent Relationship\": \"Outer\", \"Relation Name\": \"stores\", \"Schema\": "
    "\"raw_data\", \"Startup Cost\": 0, \"Total Cost\": 40.0, \"Plan Rows\": 2000, \"Plan "
    "Width\": 36}]}]}]}}]";

static void test_plan(void)
{
    pgt_plan_t p;
    CHECK_INT(pgt_plan_parse(PLAN, sizeof(PLAN) - 1, &p), 0);
    CHECK(p.total_cost == 1000.0 && p.rows == 5 && p.width == 40);
    CHECK_INT(p.nodes, 7);
    double sum = 0;
    for (int i = 0; i < PGT_PLAN_FAMILIES; i++)
        sum += p.family_cost[i];
    CHECK(fabs(sum - 1000.0) < 1e-6);
    /* Own costs: aggregate 200, hash join 150, nested loop 50 (its inner
     * side, 100 loops of 1.5, is fitted into the 200 it adds), hash 10. */
    CHECK(fabs(p.family_cost[PGT_PLAN_F_AGG] - 200) < 1e-6);
    CHECK(fabs(p.family_cost[PGT_PLAN_F_JOIN] - (150 + 10 + 50)) < 1e-6);
    CHECK(fabs(p.family_cost[PGT_PLAN_F_SCAN] - 440) < 1e-6);
    CHECK(fabs(p.family_cost[PGT_PLAN_F_INDEX] - 150) < 1e-6);
    CHECK(p.max_join_rows == 100000);
    CHECK_STR(p.join_desc, "sales × dates × stores");
    CHECK(p.max_rows == 100000);
    CHECK_INT(p.nrels, 3);
    CHECK_STR(p.rels[0].schema, "analytics");
    CHECK_STR(p.rels[0].name, "sales");
    CHECK_STR(p.rels[2].schema, "raw_data");
    double rels = 0;
    for (int i = 0; i < p.nrels; i++)
        rels += p.rels[i].cost;
    CHECK(fabs(rels - 1000.0) < 1e-6);
    CHECK(p.rels[0].cost > p.rels[1].cost && p.rels[1].cost > p.rels[2].cost);
    char *json = pgt_plan_relations_json(&p);
    CHECK_STR(json, "[[\"analytics\",\"sales\",0.6713],[\"analytics\",\"dates\",0.2517],"
                    "[\"raw_data\",\"stores\",0.07692]]");
    free(json);
}

static void test_not_plans(void)
{
    pgt_plan_t p;
    CHECK_INT(pgt_plan_parse("", 0, &p), -1);
    CHECK_INT(pgt_plan_parse("[{}]", 4, &p), -1);
    CHECK_INT(pgt_plan_parse("{\"Plan\": 1}", 11, &p), -1);
    const char *text = "Seq Scan on t  (cost=0.00..35.50 rows=2550 width=4)";
    CHECK_INT(pgt_plan_parse(text, strlen(text), &p), -1);
    CHECK(p.total_cost == 0 && p.nrels == 0);
    const char *none = "[{\"Plan\": {\"Node Type\": \"Result\", \"Total Cost\": 0.01}}]";
    CHECK_INT(pgt_plan_parse(none, strlen(none), &p), 0);
    CHECK(pgt_plan_relations_json(&p) == NULL);
}

/* 1,000 nested nodes and 40 relations: the walk stops deepening at its
 * limit and keeps the first PGT_PLAN_MAX_RELS relations. */
static void test_hostile(void)
{
    size_t cap = 1 << 20, n = 0;
    char *doc = malloc(cap);
    n += (size_t)snprintf(doc + n, cap - n, "[{\"Plan\": ");
    for (int i = 0; i < 1000; i++)
        n += (size_t)snprintf(doc + n, cap - n,
                              "{\"Node Type\": \"Nested Loop\", \"Total Cost\": %d, \"Plan Rows\": "
                              "%d, \"Relation Name\": \"t%d\", \"Plans\": [",
                              2000 - i, i + 1, i % 40);
    n += (size_t)snprintf(doc + n, cap - n, "{\"Node Type\": \"Result\", \"Total Cost\": 1}");
    for (int i = 0; i < 1000; i++)
        n += (size_t)snprintf(doc + n, cap - n, "]}");
    n += (size_t)snprintf(doc + n, cap - n, "}]");
    pgt_plan_t p;
    CHECK_INT(pgt_plan_parse(doc, n, &p), 0);
    CHECK_INT(p.nrels, PGT_PLAN_MAX_RELS);
    CHECK(p.nodes > 100 && p.nodes < 1000);
    CHECK(strstr(p.join_desc, "…") != NULL || strlen(p.join_desc) < PGT_PLAN_JOIN_DESC);
    free(doc);
}

/* A plan without schemas takes them from the parse tree where it names
 * a relation with exactly one. */
static void test_qualify(void)
{
    const char *doc = "[{\"Plan\": {\"Node Type\": \"Hash Join\", \"Total Cost\": 30, \"Plans\": ["
                      "{\"Node Type\": \"Seq Scan\", \"Relation Name\": \"sales\", \"Total Cost\": "
                      "20}, {\"Node Type\": \"Seq Scan\", \"Relation Name\": \"stores\", \"Total "
                      "Cost\": 5}]}}]";
    pgt_plan_t p;
    CHECK_INT(pgt_plan_parse(doc, strlen(doc), &p), 0);
    CHECK_INT(p.nrels, 2);
    pgt_plan_qualify(&p, "[[\"analytics\",\"sales\",0.5],[\"\",\"stores\",0.5]]");
    CHECK_STR(p.rels[0].schema, "analytics");
    CHECK_STR(p.rels[1].schema, "");
    pgt_plan_qualify(&p, NULL);
    pgt_plan_qualify(&p, "not json");
    CHECK_STR(p.rels[0].schema, "analytics");
}

int main(void)
{
    test_plan();
    test_qualify();
    test_not_plans();
    test_hostile();
    TASK_DONE();
}
