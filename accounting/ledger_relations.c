/* Cost by schema and table in the ledger. A record's relations (a JSON
 * array of [schema, relation, share]) split its compute and cost across
 * what it read, by one rule (ledger_rel_split) that the writer's rollup
 * daily_relations and pgtallyctl usage --by schema|table both follow; and
 * sums by a key of NUL-separated fields, which the SQLite writer folds
 * into daily_relations and the usage reader ranks. Runs on the writer
 * thread and in readers, never on the event loop. */
#include "ledger_int.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/text.h"

/* ---- Splitting ------------------------------------------------------------ */

/* The part of s naming (schema, relation), or NULL. */
static ledger_rel_part_t *part_of(ledger_rel_split_t *s, const char *schema, const char *relation)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->parts[i].schema, schema) == 0 && strcmp(s->parts[i].relation, relation) == 0)
            return &s->parts[i];
    return NULL;
}

/* Reads one entry [schema, relation, share] into s; anything else is
 * skipped, and so are relations past LEDGER_REL_MAX. */
static void read_entry(ledger_rel_split_t *s, json_t *e, double *total)
{
    const char *schema = json_string_value(json_array_get(e, 0));
    const char *relation = json_string_value(json_array_get(e, 1));
    json_t *v = json_array_get(e, 2);
    if (!schema || !relation || !relation[0] || !json_is_number(v))
        return;
    double share = json_number_value(v);
    if (!isfinite(share) || share < 0)
        share = 0;
    ledger_rel_part_t *p = part_of(s, schema, relation);
    if (!p && s->n < LEDGER_REL_MAX) {
        p = &s->parts[s->n++];
        *p = (ledger_rel_part_t){.schema = schema, .relation = relation};
    }
    if (!p)
        return;
    p->share += share;
    *total += share;
}

int ledger_rel_split(const char *json, double compute_s, int64_t cost_micro,
                     ledger_rel_split_t *out)
{
    out->doc = NULL;
    out->n = 0;
    json_t *doc = json ? json_loads(json, 0, NULL) : NULL;
    double total = 0;
    size_t i;
    json_t *e;
    json_array_foreach(doc, i, e)
    {
        read_entry(out, e, &total);
    }
    if (out->n == 0) {
        json_decref(doc);
        return 0;
    }
    out->doc = doc;
    if (!isfinite(compute_s))
        compute_s = 0;
    /* Shares that do not sum to 1 (four decimals each) are scaled; cost
     * is cut at the running sum of shares, so its parts add up to it. */
    double cum = 0;
    int64_t prev = 0;
    for (i = 0; i < out->n; i++) {
        ledger_rel_part_t *p = &out->parts[i];
        p->share = total > 0 ? p->share / total : 1.0 / (double)out->n;
        cum += p->share;
        int64_t upto = i + 1 == out->n ? cost_micro : llround((double)cost_micro * cum);
        if (upto < prev)
            upto = prev;
        if (upto > cost_micro)
            upto = cost_micro;
        p->cost_micro = upto - prev;
        p->compute_s = compute_s * p->share;
        prev = upto;
    }
    return (int)out->n;
}

void ledger_rel_split_free(ledger_rel_split_t *s)
{
    json_decref((json_t *)s->doc);
    s->doc = NULL;
    s->n = 0;
}

/* ---- Sums by key ---------------------------------------------------------- */

void ledger_rel_sums_clear(ledger_rel_sums_t *t)
{
    for (size_t i = 0; i < t->nslots; i++)
        free(t->slots[i].key);
    if (t->slots)
        memset(t->slots, 0, t->nslots * sizeof(*t->slots));
    t->n = 0;
    t->failed = false;
}

void ledger_rel_sums_free(ledger_rel_sums_t *t)
{
    ledger_rel_sums_clear(t);
    free(t->slots);
    t->slots = NULL;
    t->nslots = 0;
}

/* Doubles the table. Returns 0, or -1 when out of memory. */
static int sums_grow(ledger_rel_sums_t *t)
{
    size_t ns = t->nslots ? t->nslots * 2 : 64;
    ledger_rel_sum_t *slots = calloc(ns, sizeof(*slots));
    if (!slots)
        return -1;
    for (size_t i = 0; i < t->nslots; i++) {
        if (!t->slots[i].key)
            continue;
        size_t k = t->slots[i].hash & (ns - 1);
        while (slots[k].key)
            k = (k + 1) & (ns - 1);
        slots[k] = t->slots[i];
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = ns;
    return 0;
}

void ledger_rel_sums_add(ledger_rel_sums_t *t, const char *key, size_t klen, int64_t queries,
                         double compute_s, int64_t cost_micro)
{
    if (t->failed || ((t->n + 1) * 2 > t->nslots && sums_grow(t) != 0)) {
        t->failed = true;
        return;
    }
    uint64_t h = pgt_fnv1a(PGT_FNV_BASIS, key, klen);
    size_t k = h & (t->nslots - 1);
    ledger_rel_sum_t *e;
    for (;; k = (k + 1) & (t->nslots - 1)) {
        e = &t->slots[k];
        if (!e->key || (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0))
            break;
    }
    if (!e->key) {
        if (!(e->key = malloc(klen))) {
            t->failed = true;
            return;
        }
        memcpy(e->key, key, klen);
        e->klen = klen;
        e->hash = h;
        t->n++;
    }
    e->queries += queries;
    e->compute_s += compute_s;
    e->cost_micro += cost_micro;
}

const char *ledger_rel_key_field(const ledger_rel_sum_t *e, size_t off, size_t *next)
{
    if (off >= e->klen)
        return "";
    const char *s = e->key + off;
    *next = off + strlen(s) + 1;
    return s;
}
