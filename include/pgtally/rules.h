/* Rules by statement shape: an administrator blocks, warns about or logs
 * the statements of one fingerprint (pgtallyctl rule), for everyone or one
 * user or database, until a time or forever. Rules live in the ledger's
 * rules table, are loaded with the budgets (a change bumps
 * settings_version) and are matched on the loop through a hash of
 * fingerprints. */
#ifndef PGTALLY_RULES_H
#define PGTALLY_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/db.h"

/* What a rule does to a statement of its shape, strictest first. */
#define PGT_RULE_ACTION_MAP(X)                                                                     \
    X(BLOCK, "block") /* refused before it runs: SQLSTATE PGT_RULE_SQLSTATE */                     \
    X(WARN, "warn")   /* runs, and the client gets a WARNING with the message */                   \
    X(LOG, "log")     /* runs unchanged; the ledger records the rule (dry run of block) */

typedef enum {
#define X(name, str) PGT_RULE_ACTION_##name,
    PGT_RULE_ACTION_MAP(X)
#undef X
} pgt_rule_action_t;

const char *pgt_rule_action_name(pgt_rule_action_t a);
int pgt_rule_action_parse(const char *name, pgt_rule_action_t *out)
    __attribute__((warn_unused_result));

/* The SQLSTATE of a statement a block rule refuses: class 42 (access rule
 * violation), in the implementation-defined subclass range (T..), apart
 * from the budget refusals (53400, 54000) and from PostgreSQL's 42501. */
#define PGT_RULE_SQLSTATE "42T01"

#define PGT_RULE_MESSAGE_MAX 512 /* bytes of a rule's message */

/* One rule. */
typedef struct pgt_rule {
    int64_t id;               /* row id */
    uint64_t fingerprint;     /* the statement shape (as pgtallyctl queries shows it, in hex) */
    char *user;               /* only this user's statements; NULL: anyone's (owned) */
    char *database;           /* only in this database; NULL: any (owned) */
    pgt_rule_action_t action; /* block, warn or log */
    char *message;            /* what the client is told; NULL: pgtally's text (owned) */
    int64_t until_us;         /* in force before then, unix microseconds; -1: forever */
    int64_t created_us;       /* when it was added */
    char *created_by;         /* who added it (the OS user of pgtallyctl) (owned) */
} pgt_rule_t;

/* The rules of one settings version, with a hash of their fingerprints. */
typedef struct pgt_rule_set {
    pgt_rule_t *rules; /* by fingerprint, then id */
    size_t n;          /* entries in rules */
    uint32_t *slots;   /* open addressing by fingerprint: 1 + index of the fingerprint's first
                          rule, 0 for an empty slot */
    size_t nslots;     /* a power of two, at least twice the fingerprints; 0 when n is 0 */
} pgt_rule_set_t;

/* Parses a fingerprint as pgtally shows it: 1 to 16 hex digits. Returns 0,
 * or -1. */
int pgt_rule_fingerprint_parse(const char *text, uint64_t *out) __attribute__((warn_unused_result));

/* Sorts set->rules and builds its hash. Returns 0, or -1 when out of
 * memory (then the set matches nothing). */
int pgt_rule_set_index(pgt_rule_set_t *set) __attribute__((warn_unused_result));

/* Frees the rules and the hash of set (not set itself). */
void pgt_rule_set_clear(pgt_rule_set_t *set);

/* Returns the rule of set that applies to a statement of shape fp sent by
 * user to database at now_us: unexpired, its user and database NULL or
 * equal; the strictest action wins (block, then warn, then log), then the
 * lowest id. NULL when none. O(1) in the number of other shapes. */
const pgt_rule_t *pgt_rule_match(const pgt_rule_set_t *set, uint64_t fp, const char *user,
                                 const char *database, int64_t now_us);

/* The stricter of two rules, either NULL: block, then warn, then log,
 * then the lower id. */
const pgt_rule_t *pgt_rule_stricter(const pgt_rule_t *a, const pgt_rule_t *b);

/* Loads every rule of the ledger into set (empty before), unindexed; a
 * ledger without the rules table has none. Returns 0, or -1 with the cause
 * in err. */
int pgt_rule_load(pgt_db_t *db, pgt_rule_set_t *set, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Stores r (its id is ignored) as a new rule. Returns 0 with the id in
 * *id, or -1 with the cause in err. */
int pgt_rule_add(pgt_db_t *db, const pgt_rule_t *r, int64_t *id, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Deletes rule id. Returns 0, 1 when there is no such rule, or -1 with the
 * cause in err. */
int pgt_rule_rm(pgt_db_t *db, int64_t id, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
