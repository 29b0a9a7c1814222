/* The estimator: per-shape history and calibration, the decision whether
 * an in-band EXPLAIN pays for itself, and reading the planner's cost from
 * EXPLAIN output. Lives on the event loop with its own shape cache. */
#include "pgtally/estimator.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "pgtally/fingerprint.h"
#include "pgtally/pricing.h"
#include "pgtally/text.h"

/* Shapes remembered; a colliding shape replaces the older one. */
#define SLOTS 16384
/* Weight of the newest run in moving averages. */
#define ALPHA 0.2
/* Seconds per planner unit assumed before anything was learned: about what
 * a small PostgreSQL server shows for simple scans. */
#define DEFAULT_LOG_K (-11.5) /* e^-11.5 ≈ 10 µs per unit */
/* A shape varies with its constants when its runs stray this far from
 * their mean on average. */
#define VARIABLE_DEVIATION 0.5
/* A slow or variable shape is explained again only when its runs take at
 * least this many times as long as its EXPLAIN (the EXPLAIN adds <= 5%). */
#define EXPLAIN_SHARE 20.0

/* What is known about one shape. */
typedef struct shape {
    uint64_t key;          /* database and fingerprint mixed; 0 = empty slot */
    uint32_t runs;         /* runs measured (saturating) */
    uint32_t k_runs;       /* runs that calibrated log_k */
    double mean_s;         /* moving average of compute seconds */
    double dev_s;          /* moving average of |compute - mean| */
    double mean_bytes;     /* moving average of bytes returned */
    double log_k;          /* log of seconds per planner unit for this shape */
    double planner_cost;   /* planner cost from the last EXPLAIN */
    uint64_t explained_ns; /* uv_hrtime() of the last EXPLAIN */
    double explain_s;      /* moving average of the EXPLAIN's own time, or 0 */
} shape_t;

struct pgt_estimator {
    pgt_fp_cache_t *cache;       /* fingerprints of statements seen on the loop */
    shape_t *shapes;             /* SLOTS entries */
    double global_log_k;         /* log seconds per planner unit, all shapes */
    uint64_t global_runs;        /* runs that calibrated global_log_k */
    int mode;                    /* PGT_ESTIMATE_* */
    bool text_format;            /* ask for EXPLAIN's text form */
    uint64_t ttl_ns;             /* history of a cheap, stable shape stays good this long */
    double explain_above_s;      /* shapes slower than this are explained every run */
    pgt_price_t prices;          /* to turn seconds and bytes into money */
    pgt_estimator_stats_t stats; /* counters */
};

pgt_estimator_t *pgt_estimator_new(const pgt_config_t *cfg)
{
    pgt_estimator_t *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->cache = pgt_fp_cache_new(4096);
    e->shapes = calloc(SLOTS, sizeof(*e->shapes));
    if (!e->cache || !e->shapes) {
        pgt_estimator_free(e);
        return NULL;
    }
    e->global_log_k = DEFAULT_LOG_K;
    pgt_estimator_configure(e, cfg);
    return e;
}

void pgt_estimator_configure(pgt_estimator_t *e, const pgt_config_t *cfg)
{
    e->mode = cfg->estimate_mode;
    e->text_format = cfg->estimate_format_text != 0;
    e->ttl_ns = (uint64_t)cfg->estimate_cache_ttl_ms * 1000000u;
    e->explain_above_s = cfg->estimate_explain_above_ms / 1000.0;
    pgt_pricing_from_config(cfg, &e->prices);
}

void pgt_estimator_free(pgt_estimator_t *e)
{
    if (!e)
        return;
    pgt_fp_cache_free(e->cache);
    free(e->shapes);
    free(e);
}

uint64_t pgt_estimator_shape_key(const char *database, uint64_t fingerprint)
{
    uint64_t h = pgt_fnv1a(PGT_FNV_BASIS, database, strlen(database));
    uint64_t k = (h ^ fingerprint) * 0x9E3779B97F4A7C15ull;
    return k ? k : 1;
}

static shape_t *slot(pgt_estimator_t *e, uint64_t key)
{
    return &e->shapes[key % SLOTS];
}

/* A cheap, stable shape seen recently is estimated from its history; a new,
 * slow, variable or stale one is explained. */
static bool worth_explaining(const pgt_estimator_t *e, const shape_t *s, uint64_t key)
{
    if (e->mode != PGT_ESTIMATE_EXPLAIN)
        return false;
    if (s->key != key || s->runs == 0 || s->explained_ns == 0)
        return true;
    if (uv_hrtime() - s->explained_ns > e->ttl_ns)
        return true;
    /* Explaining a shape again pays only when its EXPLAIN is a small part
     * of its run. Under load both queue for the CPU: a 100 µs lookup that
     * waits 40 ms looks slow, and explaining it on every run would double
     * its round trips and deepen the queue. explain_above = 0 explains
     * always. */
    if (e->explain_above_s > 0 && s->explain_s > 0 && s->mean_s < EXPLAIN_SHARE * s->explain_s)
        return false;
    if (s->mean_s >= e->explain_above_s)
        return true;
    /* Variation only matters where it can add up to money: a 100 µs
     * lookup that sometimes takes 300 µs is still cheap. */
    return s->runs >= 3 && s->mean_s >= e->explain_above_s / 10 &&
           s->dev_s > VARIABLE_DEVIATION * s->mean_s;
}

static int64_t money(const pgt_estimator_t *e, double seconds, double bytes)
{
    return pgt_pricing_cost(&e->prices, seconds, (int64_t)bytes);
}

/* The history estimate: what the shape's runs cost on average. */
static void from_history(const pgt_estimator_t *e, const shape_t *s, pgt_estimate_t *out)
{
    if (s->key != out->key || s->runs == 0)
        return;
    out->cost_micro = money(e, s->mean_s, s->mean_bytes);
}

static char *explain_text(const pgt_estimator_t *e, const char *sql, size_t len)
{
    const char *prefix = e->text_format ? "EXPLAIN " : "EXPLAIN (FORMAT JSON) ";
    size_t plen = strlen(prefix);
    char *q = malloc(plen + len + 1);
    if (!q)
        return NULL;
    memcpy(q, prefix, plen);
    memcpy(q + plen, sql, len);
    q[plen + len] = '\0';
    return q;
}

char *pgt_estimator_plan(pgt_estimator_t *e, const char *database, const char *sql, size_t len,
                         bool may_explain, pgt_estimate_t *out)
{
    *out = (pgt_estimate_t){.key = 0, .planner_cost = -1, .cost_micro = -1};
    if (e->mode == PGT_ESTIMATE_OFF || len == 0 || sql[len] != '\0')
        return NULL;
    e->stats.planned++;
    /* Only single statements are explained; most strings are one, which a
     * look for ';' tells without parsing. */
    pgt_stmt_t st[2];
    if (pgt_fp_single(sql, len, &st[0].offset, &st[0].length))
        ;
    else if (pgt_fp_split(sql, st, 2) != 1)
        return NULL;
    pgt_shape_t shape;
    if (pgt_fp_shape(e->cache, sql + st[0].offset, st[0].length, &shape) != 0)
        return NULL;
    out->key = pgt_estimator_shape_key(database, shape.fingerprint);
    out->fingerprint = shape.fingerprint;
    out->kind = (int)shape.kind;
    out->explainable = shape.explainable;
    shape_t *s = slot(e, out->key);
    if (!may_explain || !shape.explainable || !worth_explaining(e, s, out->key)) {
        from_history(e, s, out);
        e->stats.cached++;
        return NULL;
    }
    e->stats.explained++;
    /* An error position counts characters (UTF-8 here), the prefix's and
     * those the client's text has before the statement. */
    int32_t lead = 0;
    for (size_t i = 0; i < st[0].offset; i++)
        lead += ((uint8_t)sql[i] & 0xc0) != 0x80;
    out->explain_shift =
        (int32_t)strlen(e->text_format ? "EXPLAIN " : "EXPLAIN (FORMAT JSON) ") - lead;
    return explain_text(e, sql + st[0].offset, st[0].length);
}

double pgt_estimator_parse(const char *output, size_t len)
{
    json_error_t jerr;
    json_t *doc = json_loadb(output, len, 0, &jerr);
    if (doc) {
        json_t *plan = json_object_get(json_array_get(doc, 0), "Plan");
        json_t *cost = json_object_get(plan, "Total Cost");
        double v = json_is_number(cost) ? json_number_value(cost) : -1;
        json_decref(doc);
        return v;
    }
    /* The text form: "Seq Scan on t  (cost=0.00..35.50 rows=2550 width=4)". */
    char line[512];
    size_t n = len < sizeof(line) - 1 ? len : sizeof(line) - 1;
    memcpy(line, output, n);
    line[n] = '\0';
    const char *c = strstr(line, "cost=");
    const char *dots = c ? strstr(c, "..") : NULL;
    return dots ? strtod(dots + 2, NULL) : -1;
}

void pgt_estimator_explained(pgt_estimator_t *e, pgt_estimate_t *out, double planner_cost,
                             double explain_s)
{
    shape_t *s = slot(e, out->key);
    if (s->key != out->key)
        *s = (shape_t){.key = out->key};
    s->explained_ns = uv_hrtime();
    if (explain_s > 0)
        s->explain_s =
            s->explain_s > 0 ? s->explain_s + ALPHA * (explain_s - s->explain_s) : explain_s;
    if (planner_cost < 0) {
        from_history(e, s, out);
        return;
    }
    s->planner_cost = planner_cost;
    out->planner_cost = planner_cost;
    double log_k = s->k_runs > 0 ? s->log_k : e->global_log_k;
    double seconds = planner_cost * exp(log_k);
    out->cost_micro = money(e, seconds, s->runs > 0 ? s->mean_bytes : 0);
}

void pgt_estimator_learn(pgt_estimator_t *e, const pgt_estimate_t *est, double compute_s,
                         int64_t bytes_out)
{
    if (!est->key)
        return;
    shape_t *s = slot(e, est->key);
    if (s->key != est->key)
        *s = (shape_t){.key = est->key};
    if (s->runs == 0) {
        s->mean_s = compute_s;
        s->mean_bytes = (double)bytes_out;
    } else {
        s->dev_s += ALPHA * (fabs(compute_s - s->mean_s) - s->dev_s);
        s->mean_s += ALPHA * (compute_s - s->mean_s);
        s->mean_bytes += ALPHA * ((double)bytes_out - s->mean_bytes);
    }
    if (s->runs < UINT32_MAX)
        s->runs++;
    if (est->planner_cost <= 0 || compute_s <= 0)
        return;
    /* Calibrate in log space: one outlier moves the factor by a bounded
     * ratio instead of dragging an average. */
    double log_k = log(compute_s / est->planner_cost);
    s->log_k = s->k_runs == 0 ? log_k : s->log_k + ALPHA * (log_k - s->log_k);
    if (s->k_runs < UINT32_MAX)
        s->k_runs++;
    e->global_log_k =
        e->global_runs == 0 ? log_k : e->global_log_k + 0.05 * (log_k - e->global_log_k);
    e->global_runs++;
}

void pgt_estimator_stats(const pgt_estimator_t *e, pgt_estimator_stats_t *out)
{
    *out = e->stats;
}
