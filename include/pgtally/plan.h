/* What a plan says: one pass over EXPLAIN (FORMAT JSON) output gives the
 * planner's cost and rows, the features the estimator's model calibrates
 * on, the largest row counts the runaway-join guard judges, and the
 * relations the statement reads with the share of the plan's cost each
 * one carries (cost by schema and table).
 *
 * Not VERBOSE, though only VERBOSE names each relation's schema: its Output
 * lists print constants the planner folded, and SELECT repeat('x', 1 << 26)
 * would make a 64 MiB plan. Schemas come from the statement's parse tree
 * instead (pgt_plan_qualify). */
#ifndef PGTALLY_PLAN_H
#define PGTALLY_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Relations remembered per plan; a plan touching more keeps the costliest. */
#define PGT_PLAN_MAX_RELS 16
/* Longest schema or relation name kept (PostgreSQL's NAMEDATALEN - 1). */
#define PGT_PLAN_NAME_MAX 63
/* The tables of the worst join, as "fact × fact" (truncated with "…"). */
#define PGT_PLAN_JOIN_DESC 160

/* Node families whose share of the plan's cost the model weighs. */
typedef enum {
    PGT_PLAN_F_SCAN,   /* sequential and bitmap heap scans */
    PGT_PLAN_F_INDEX,  /* index and index-only scans */
    PGT_PLAN_F_JOIN,   /* hash, merge and nested-loop joins (their own cost) */
    PGT_PLAN_F_SORT,   /* sorts, incremental sorts */
    PGT_PLAN_F_AGG,    /* aggregates, group, unique, set operations */
    PGT_PLAN_F_WINDOW, /* window functions */
    PGT_PLAN_F_OTHER,  /* the rest (result, limit, materialize, CTE scans, ...) */
    PGT_PLAN_FAMILIES
} pgt_plan_family_t;

/* One relation a plan reads and the share of the plan's cost it carries. */
typedef struct pgt_plan_rel {
    char schema[PGT_PLAN_NAME_MAX + 1]; /* "" when neither the plan nor the statement says */
    char name[PGT_PLAN_NAME_MAX + 1];
    double cost; /* the cost of the plan's scans of it, loops counted */
} pgt_plan_rel_t;

typedef struct pgt_plan {
    double total_cost;                      /* the top node's total cost */
    double rows;                            /* the top node's estimated rows */
    double width;                           /* the top node's estimated row width, bytes */
    double family_cost[PGT_PLAN_FAMILIES];  /* the nodes' own costs by family, loops counted */
    int nodes;                              /* plan nodes */
    double rows_total;                      /* estimated rows of all nodes, loops counted */
    double scan_rows;                       /* those of scans and index scans */
    double input_rows;                      /* rows into sorts, aggregates, hashes, windows */
    double max_rows;                        /* the largest estimated rows of any node */
    char max_rows_node[32];                 /* its node type ("Seq Scan") */
    char max_rows_desc[PGT_PLAN_JOIN_DESC]; /* the relations under it */
    double max_join_rows;                   /* the largest estimated rows of a join, or 0 */
    char join_desc[PGT_PLAN_JOIN_DESC];     /* the relations under that join, "a × b" */
    pgt_plan_rel_t rels[PGT_PLAN_MAX_RELS]; /* relations read, costliest first */
    int nrels;                              /* entries in rels */
} pgt_plan_t;

/* Reads EXPLAIN (FORMAT JSON) output[0..len) into *out. Returns 0, or -1
 * when it is not a plan document (out is then zeroed). */
int pgt_plan_parse(const char *output, size_t len, pgt_plan_t *out)
    __attribute__((warn_unused_result));

/* Gives each relation of p without a schema the one the statement's
 * parse tree names it with, when it names it with exactly one: tree is
 * pgt_fp_relations_json's array ([schema, relation, share], schema ""
 * when unqualified), or NULL. */
void pgt_plan_qualify(pgt_plan_t *p, const char *tree);

/* The relations of p as the ledger keeps them: a JSON array of
 * [schema, relation, share] with shares [0, 1] summing to 1, costliest
 * first ("[[\"analytics\",\"sales\",0.8],[\"analytics\",\"stores\",0.2]]"),
 * malloc'd; NULL when p reads no relation or out of memory. A plan whose
 * scans all cost 0 splits evenly. */
char *pgt_plan_relations_json(const pgt_plan_t *p);

#endif
