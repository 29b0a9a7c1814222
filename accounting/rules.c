/* Rules by statement shape: their table in the ledger (one SQL text for
 * SQLite and PostgreSQL, through db.h), and the hash of fingerprints the
 * loop matches statements against. See include/pgtally/rules.h. */
#include "pgtally/rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/names.h"

PGT_NAMES_DEFINE(PGT_RULE_ACTION_MAP, pgt_rule_action_t, pgt_rule_action_name,
                 pgt_rule_action_parse)

/* What pgt_db_run's errors begin with. */
#define DOING "rules"

/* What a row callback returns when out of memory (not -1: see
 * budget_store.c). */
#define ROW_FAILED 2

int pgt_rule_fingerprint_parse(const char *text, uint64_t *out)
{
    size_t n = strlen(text);
    if (n == 0 || n > 16)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

/* ---- The hash ------------------------------------------------------------- */

/* Orders rules by fingerprint, then id, for qsort. */
static int cmp_rule(const void *a, const void *b)
{
    const pgt_rule_t *x = a, *y = b;
    if (x->fingerprint != y->fingerprint)
        return x->fingerprint < y->fingerprint ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The first slot to look in for fingerprint fp (fingerprints are hashes
 * already; the multiply spreads those of unparsed text too). */
static size_t home(uint64_t fp, size_t nslots)
{
    return (size_t)((fp * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & (nslots - 1);
}

int pgt_rule_set_index(pgt_rule_set_t *set)
{
    free(set->slots);
    set->slots = NULL;
    set->nslots = 0;
    if (set->n == 0)
        return 0;
    qsort(set->rules, set->n, sizeof(*set->rules), cmp_rule);
    size_t nslots = 8;
    while (nslots < 2 * set->n)
        nslots *= 2;
    uint32_t *slots = calloc(nslots, sizeof(*slots));
    if (!slots)
        return -1;
    for (size_t i = 0; i < set->n; i++) {
        if (i > 0 && set->rules[i].fingerprint == set->rules[i - 1].fingerprint)
            continue;
        size_t k = home(set->rules[i].fingerprint, nslots);
        while (slots[k])
            k = (k + 1) & (nslots - 1);
        slots[k] = (uint32_t)(i + 1);
    }
    set->slots = slots;
    set->nslots = nslots;
    return 0;
}

void pgt_rule_set_clear(pgt_rule_set_t *set)
{
    for (size_t i = 0; i < set->n; i++) {
        free(set->rules[i].user);
        free(set->rules[i].database);
        free(set->rules[i].message);
        free(set->rules[i].created_by);
    }
    free(set->rules);
    free(set->slots);
    *set = (pgt_rule_set_t){0};
}

static bool applies(const pgt_rule_t *r, const char *user, const char *database, int64_t now_us)
{
    return (r->until_us < 0 || now_us < r->until_us) &&
           (!r->user || (user && strcmp(r->user, user) == 0)) &&
           (!r->database || (database && strcmp(r->database, database) == 0));
}

const pgt_rule_t *pgt_rule_match(const pgt_rule_set_t *set, uint64_t fp, const char *user,
                                 const char *database, int64_t now_us)
{
    if (!set || set->nslots == 0)
        return NULL;
    size_t k = home(fp, set->nslots);
    while (set->slots[k] && set->rules[set->slots[k] - 1].fingerprint != fp)
        k = (k + 1) & (set->nslots - 1);
    if (!set->slots[k])
        return NULL;
    const pgt_rule_t *best = NULL;
    for (size_t i = set->slots[k] - 1; i < set->n && set->rules[i].fingerprint == fp; i++) {
        const pgt_rule_t *r = &set->rules[i];
        if (applies(r, user, database, now_us) && (!best || r->action < best->action))
            best = r;
    }
    return best;
}

/* ---- The table ------------------------------------------------------------ */

/* What rule_row fills. */
typedef struct load {
    pgt_rule_set_t *set; /* the rules read */
    size_t cap;          /* slots allocated in set->rules */
} load_t;

/* Copies column i of r, or NULL for NULL; *ok turns false when out of
 * memory. */
static char *opt_strdup(const pgt_db_row_t *r, int i, bool *ok)
{
    const char *s = pgt_db_isnull(r, i) ? NULL : pgt_db_text(r, i);
    char *c = s ? strdup(s) : NULL;
    if (s && !c)
        *ok = false;
    return c;
}

/* Takes one row of rules into the set; a row whose fingerprint or action
 * does not parse is skipped (a damaged row must not stop the others).
 * Returns 0, or ROW_FAILED when out of memory. */
static int rule_row(const pgt_db_row_t *r, void *arg)
{
    load_t *l = arg;
    pgt_rule_t x = {.id = pgt_db_int(r, 0)};
    const char *fp = pgt_db_text(r, 1), *action = pgt_db_text(r, 4);
    if (!fp || !action || pgt_rule_fingerprint_parse(fp, &x.fingerprint) != 0 ||
        pgt_rule_action_parse(action, &x.action) != 0)
        return 0;
    if (l->set->n == l->cap) {
        size_t c = l->cap ? l->cap * 2 : 8;
        pgt_rule_t *p = realloc(l->set->rules, c * sizeof(*p));
        if (!p)
            return ROW_FAILED;
        l->set->rules = p;
        l->cap = c;
    }
    bool ok = true;
    x.user = opt_strdup(r, 2, &ok);
    x.database = opt_strdup(r, 3, &ok);
    x.message = opt_strdup(r, 5, &ok);
    x.until_us = pgt_db_isnull(r, 6) ? -1 : pgt_db_int(r, 6);
    x.created_us = pgt_db_int(r, 7);
    x.created_by = opt_strdup(r, 8, &ok);
    l->set->rules[l->set->n++] = x; /* freed with the set, even when not ok */
    return ok ? 0 : ROW_FAILED;
}

int pgt_rule_load(pgt_db_t *db, pgt_rule_set_t *set, char *err, size_t errlen)
{
    if (pgt_db_backend(db) == PGT_DB_SQLITE && !pgt_db_has_table(db, "rules"))
        return 0; /* a ledger of a release before rules */
    load_t l = {.set = set};
    int rc = pgt_db_run(db, DOING, err, errlen, rule_row, &l,
                        "SELECT id, fingerprint, \"user\", database, action, message, until_us, "
                        "created_us, created_by FROM rules ORDER BY id",
                        "");
    if (rc == ROW_FAILED)
        snprintf(err, errlen, "%s: out of memory", DOING);
    return rc == 0 ? 0 : -1;
}

int pgt_rule_add(pgt_db_t *db, const pgt_rule_t *r, int64_t *id, char *err, size_t errlen)
{
    char fp[17];
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)r->fingerprint);
    *id = 0;
    int rc = pgt_db_int_query(db, DOING, err, errlen, id,
                              "INSERT INTO rules (fingerprint, \"user\", database, action, "
                              "message, until_us, created_us, created_by) VALUES "
                              "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
                              "tttttnit", fp, r->user, r->database, pgt_rule_action_name(r->action),
                              r->message, r->until_us, r->created_us,
                              r->created_by ? r->created_by : "");
    if (rc == 0 && *id == 0) {
        snprintf(err, errlen, "%s: the rule was not inserted", DOING);
        rc = -1;
    }
    return rc;
}

int pgt_rule_rm(pgt_db_t *db, int64_t id, char *err, size_t errlen)
{
    int64_t gone = 0;
    int rc = pgt_db_int_query(db, DOING, err, errlen, &gone,
                              "DELETE FROM rules WHERE id = ?1 RETURNING id", "i", id);
    if (rc != 0)
        return -1;
    return gone == id ? 0 : 1;
}

const pgt_rule_t *pgt_rule_stricter(const pgt_rule_t *a, const pgt_rule_t *b)
{
    if (!a || !b)
        return a ? a : b;
    if (a->action != b->action)
        return a->action < b->action ? a : b;
    return a->id <= b->id ? a : b;
}
