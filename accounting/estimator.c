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
/* Databases with a model of their own; more share the last one. */
#define MODELS 32
/* Weight of the newest run in moving averages. */
#define ALPHA 0.2
/* Seconds per planner unit assumed before anything was learned: about what
 * a small PostgreSQL server shows for simple scans. */
#define DEFAULT_LOG_K (-11.5) /* e^-11.5 ≈ 10 µs per unit */
/* History vouches for a shape whose runs stay within this spread of their
 * (log) mean, once at least STABLE_RUNS runs measured it (fewer agree by
 * chance when constants move the cost 100×); or whose plans
 * kept the same cost over as many EXPLAINs (its constants do not move the
 * plan: what the runs vary by, the plan cannot tell). */
#define STABLE_SPREAD 0.35
#define STABLE_PLAN_SPREAD 0.05
#define STABLE_RUNS 5
/* A slow shape is explained again only when its runs take at least this
 * many times as long as its EXPLAIN (the EXPLAIN adds <= 5%). */
#define EXPLAIN_SHARE 20.0
/* How much a shape's own runs weigh against the model (in runs), and its
 * own slope over log cost against none (in squared log cost), at most. */
#define SHAPE_PRIOR 1.5
#define SLOPE_PRIOR 4.0
#define SLOPE_MAX 1.0
/* The interval: 1.2816 standard deviations either side holds 8 in 10. */
#define INTERVAL_Z 1.2816
/* Log error assumed before anything was measured (a factor of e). */
#define DEFAULT_ERR2 1.0
/* Largest log residual a run teaches the model (a factor of 4.5). */
#define ROBUST 1.5
/* Forgetting of the model: old runs fade with a half-life of ~700. */
#define FORGET 0.999

/* What is known about one shape. */
typedef struct shape {
    uint64_t key;                   /* database and fingerprint mixed; 0 = empty slot */
    uint32_t runs;                  /* runs measured (saturating) */
    uint32_t fits;                  /* explained runs the model was checked on */
    double mean_s;                  /* moving average of compute seconds */
    double log_mean;                /* moving average of log compute seconds */
    double log_var;                 /* moving average of its squared deviation */
    double mean_bytes;              /* moving average of bytes returned */
    double resid_sum;               /* sum of r = log(actual) - model over the explained runs */
    double lc_sum;                  /* sum of their log planner costs (x[1]) */
    double lc2_sum;                 /* sum of their squares */
    double lcr_sum;                 /* sum of log cost times r */
    double err2_sum;                /* sum of squared errors of the estimates made for them */
    double plan_log_mean;           /* moving average of log planner cost */
    double plan_log_var;            /* moving average of its squared deviation */
    uint32_t plans;                 /* plans seen (saturating) */
    uint64_t explained_ns;          /* uv_hrtime() of the last EXPLAIN */
    double explain_s;               /* moving average of the EXPLAIN's own time, or 0 */
    char *relations;                /* what the last plan read (pgt_plan_relations_json), or NULL */
    char *named;                    /* what its text names (pgt_fp_relations_json), or NULL */
    bool named_read;                /* named was looked for */
    float last_x[PGT_EST_FEATURES]; /* the last plan's features (x[0] = 0: none yet) */
    int model;                      /* the model of the shape's database */
} shape_t;

/* The calibration of one database: log seconds = w . features, fitted by
 * recursive least squares from a prior (DEFAULT_LOG_K per planner unit). */
typedef struct model {
    uint64_t db;                                  /* hash of the database name; 0: free */
    double w[PGT_EST_FEATURES];                   /* weights */
    double p[PGT_EST_FEATURES][PGT_EST_FEATURES]; /* their covariance (scaled) */
    double err2;                                  /* moving average of squared log errors */
    uint64_t n;                                   /* runs learned */
} model_t;

struct pgt_estimator {
    pgt_fp_cache_t *cache;       /* fingerprints of statements seen on the loop */
    shape_t *shapes;             /* SLOTS entries */
    model_t models[MODELS];      /* by database */
    int mode;                    /* PGT_ESTIMATE_* */
    bool text_format;            /* ask for EXPLAIN's text form */
    bool guard;                  /* [guard] is on: every statement that can be is explained */
    uint64_t ttl_ns;             /* history of a cheap, stable shape stays good this long */
    double explain_above_s;      /* shapes slower than this are explained every run */
    pgt_price_t prices;          /* to turn seconds and bytes into money */
    pgt_estimator_stats_t stats; /* counters */
};

static void model_reset(model_t *m, uint64_t db)
{
    /* The prior: log seconds = DEFAULT_LOG_K + log(planner cost), with the
     * slope known better than the offset and the rest near 0. */
    static const double prior_var[PGT_EST_FEATURES] = {4,   0.05, 0.1, 0.1, 0.1, 0.1,
                                                       0.1, 0.1,  0.1, 0.1, 0.1, 0.1};
    memset(m, 0, sizeof(*m));
    m->db = db;
    m->w[0] = DEFAULT_LOG_K;
    m->w[1] = 1;
    for (int i = 0; i < PGT_EST_FEATURES; i++)
        m->p[i][i] = prior_var[i];
    m->err2 = DEFAULT_ERR2;
}

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
    for (int i = 0; i < MODELS; i++)
        model_reset(&e->models[i], 0);
    pgt_estimator_configure(e, cfg);
    return e;
}

void pgt_estimator_configure(pgt_estimator_t *e, const pgt_config_t *cfg)
{
    e->mode = cfg->estimate_mode;
    e->text_format = cfg->estimate_format_text != 0;
    e->guard = cfg->guard_max_rows > 0 || cfg->guard_max_join_rows > 0;
    e->ttl_ns = (uint64_t)cfg->estimate_cache_ttl_ms * 1000000u;
    e->explain_above_s = cfg->estimate_explain_above_ms / 1000.0;
    pgt_pricing_from_config(cfg, &e->prices);
}

void pgt_estimator_free(pgt_estimator_t *e)
{
    if (!e)
        return;
    pgt_fp_cache_free(e->cache);
    for (size_t i = 0; e->shapes && i < SLOTS; i++) {
        free(e->shapes[i].relations);
        free(e->shapes[i].named);
    }
    free(e->shapes);
    free(e);
}

uint64_t pgt_estimator_shape_key(const char *database, uint64_t fingerprint)
{
    uint64_t h = pgt_fnv1a(PGT_FNV_BASIS, database, strlen(database));
    uint64_t k = (h ^ fingerprint) * 0x9E3779B97F4A7C15ull;
    return k ? k : 1;
}

/* The model of database: its own, or a free one it takes, or the last. */
static int model_of(pgt_estimator_t *e, const char *database)
{
    uint64_t h = pgt_fnv1a(PGT_FNV_BASIS, database, strlen(database)) | 1;
    for (int i = 0; i < MODELS; i++) {
        if (e->models[i].db == h)
            return i;
        if (e->models[i].db == 0) {
            e->models[i].db = h;
            return i;
        }
    }
    return MODELS - 1;
}

static shape_t *slot(pgt_estimator_t *e, uint64_t key)
{
    return &e->shapes[key % SLOTS];
}

static const shape_t *slot_c(const pgt_estimator_t *e, uint64_t key)
{
    return &e->shapes[key % SLOTS];
}

/* The slot of key, emptied for it when another shape held it. */
static shape_t *claim(pgt_estimator_t *e, uint64_t key)
{
    shape_t *s = slot(e, key);
    if (s->key != key) {
        free(s->relations);
        free(s->named);
        *s = (shape_t){.key = key};
    }
    return s;
}

/* Whether the history of s tells what its next run costs: its runs, or its
 * plans, have been measured to stay put. */
static bool history_vouches(const shape_t *s)
{
    return (s->runs >= STABLE_RUNS && s->log_var <= STABLE_SPREAD * STABLE_SPREAD) ||
           (s->plans >= STABLE_RUNS && s->plan_log_var <= STABLE_PLAN_SPREAD * STABLE_PLAN_SPREAD);
}

/* A shape whose history vouches for its next run and that was explained
 * recently is estimated from that history; any other is explained. */
static bool worth_explaining(const pgt_estimator_t *e, const shape_t *s, uint64_t key)
{
    if (e->mode != PGT_ESTIMATE_EXPLAIN)
        return false;
    /* The guard judges the plan of every statement: history cannot vouch
     * for the rows of a join whose constants changed. */
    if (e->guard || s->key != key || s->runs == 0 || s->explained_ns == 0)
        return true;
    if (uv_hrtime() - s->explained_ns > e->ttl_ns || !history_vouches(s))
        return true;
    /* Explaining a stable shape again pays only when its EXPLAIN is a
     * small part of its run. Under load both queue for the CPU: a 100 µs
     * lookup that waits 40 ms looks slow, and explaining it on every run
     * would double its round trips and deepen the queue. explain_above = 0
     * explains always. */
    if (e->explain_above_s > 0 && s->explain_s > 0 && s->mean_s < EXPLAIN_SHARE * s->explain_s)
        return false;
    return s->mean_s >= e->explain_above_s;
}

static int64_t money(const pgt_estimator_t *e, double seconds, double bytes)
{
    return pgt_pricing_cost(&e->prices, seconds, (int64_t)bytes);
}

/* Sets out's cost and interval: seconds give or take a factor of
 * exp(INTERVAL_Z * sd), and bytes. */
static void priced(const pgt_estimator_t *e, pgt_estimate_t *out, double seconds, double sd,
                   double bytes)
{
    double f = exp(INTERVAL_Z * sd);
    out->cost_micro = money(e, seconds, bytes);
    out->low_micro = money(e, seconds / f, bytes);
    out->high_micro = money(e, seconds * f, bytes);
}

static double shape_offset(const shape_t *s, double lc);
static double shape_sd(const shape_t *s, const model_t *m);
static double dot(const double *w, const float *x);

/* The history estimate: the model on the shape's last plan, which history
 * vouches did not move, or, never explained, what its runs cost on
 * average. */
static void from_history(const pgt_estimator_t *e, const shape_t *s, pgt_estimate_t *out)
{
    if (s->key != out->key || s->runs == 0)
        return;
    if (s->last_x[0] != 0) {
        const model_t *m = &e->models[s->model];
        double seconds = exp(dot(m->w, s->last_x) + shape_offset(s, s->last_x[1]));
        priced(e, out, seconds, shape_sd(s, m), s->mean_bytes);
        return;
    }
    double sd = s->runs >= 2 ? sqrt(s->log_var) : sqrt(DEFAULT_ERR2);
    priced(e, out, s->mean_s, sd, s->mean_bytes);
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
                         int explain, pgt_estimate_t *out)
{
    *out = PGT_ESTIMATE_NONE;
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
    out->model = model_of(e, database);
    /* COPY (query) TO and EXPLAIN ANALYZE run a query EXPLAIN takes: its
     * plan is theirs. */
    pgt_stmt_t inner;
    if (!shape.explainable && pgt_fp_inner(sql, &inner, 1) == 1) {
        st[0] = inner;
        out->explainable = shape.explainable = true;
    }
    shape_t *s = claim(e, out->key);
    /* The relations its text names, once per shape: the schemas a plan
     * does not give, and the relations of a shape never explained. */
    if (!s->named_read) {
        s->named_read = true;
        s->named = pgt_fp_relations_json(sql + st[0].offset, st[0].length);
    }
    bool go = explain == PGT_EXPLAIN_ALWAYS     ? e->mode == PGT_ESTIMATE_EXPLAIN
              : explain == PGT_EXPLAIN_IF_WORTH ? worth_explaining(e, s, out->key)
                                                : false;
    if (!go || !shape.explainable) {
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
    char *q = explain_text(e, sql + st[0].offset, st[0].length);
    out->explain_shift = q ? (int32_t)(strlen(q) - st[0].length) - lead : 0;
    return q;
}

int pgt_estimator_parse(const char *output, size_t len, pgt_plan_t *plan)
{
    if (pgt_plan_parse(output, len, plan) == 0)
        return 0;
    /* The text form: "Seq Scan on t  (cost=0.00..35.50 rows=2550 width=4)". */
    char line[512];
    size_t n = len < sizeof(line) - 1 ? len : sizeof(line) - 1;
    memcpy(line, output, n);
    line[n] = '\0';
    const char *c = strstr(line, "cost=");
    const char *dots = c ? strstr(c, "..") : NULL;
    if (!dots)
        return -1;
    plan->total_cost = strtod(dots + 2, NULL);
    const char *rows = strstr(dots, "rows=");
    plan->rows = rows ? strtod(rows + 5, NULL) : 0;
    return plan->total_cost >= 0 ? 0 : -1;
}

/* What the model reads of a plan: x[0] = 1, log cost, log rows, the
 * shares of the cost that scans, index scans, joins, sorts, aggregates
 * and window functions take, and the log rows that flow: through every
 * node, out of scans, into sorts, aggregates, hashes and windows (the
 * planner prices cached pages as if read from disk; rows are CPU work). */
static void features(const pgt_plan_t *p, float x[PGT_EST_FEATURES])
{
    double t = p->total_cost > 0 ? p->total_cost : 0;
    x[0] = 1;
    x[1] = (float)log1p(t);
    x[2] = (float)log1p(p->rows > 0 ? p->rows : 0);
    static const pgt_plan_family_t fam[] = {PGT_PLAN_F_SCAN, PGT_PLAN_F_INDEX, PGT_PLAN_F_JOIN,
                                            PGT_PLAN_F_SORT, PGT_PLAN_F_AGG,   PGT_PLAN_F_WINDOW};
    for (int i = 0; i < 6; i++)
        x[3 + i] = t > 0 ? (float)(p->family_cost[fam[i]] / t) : 0;
    x[9] = (float)log1p(p->rows_total);
    x[10] = (float)log1p(p->scan_rows);
    x[11] = (float)log1p(p->input_rows);
}

static double dot(const double *w, const float *x)
{
    double v = 0;
    for (int i = 0; i < PGT_EST_FEATURES; i++)
        v += w[i] * x[i];
    return v;
}

/* The shape's own correction to the model at log planner cost lc: the
 * mean of its residuals, shrunk towards 0 by SHAPE_PRIOR runs' worth of
 * the model, and, from two runs on, the slope of its residuals over log
 * cost (shrunk by SLOPE_PRIOR, at most SLOPE_MAX): within one shape the
 * time often grows faster or slower with the planner's cost than across
 * shapes (a bitmap scan the planner prices by pages that are cached). */
static double shape_offset(const shape_t *s, double lc)
{
    if (s->fits == 0)
        return 0;
    double n = s->fits;
    double off = s->resid_sum / (n + SHAPE_PRIOR);
    if (s->fits < 2)
        return off;
    double lm = s->lc_sum / n;
    double sxx = s->lc2_sum - n * lm * lm;
    double sxy = s->lcr_sum - lm * s->resid_sum;
    double g = sxy / ((sxx > 0 ? sxx : 0) + SLOPE_PRIOR);
    g = g > SLOPE_MAX ? SLOPE_MAX : g < -SLOPE_MAX ? -SLOPE_MAX : g;
    return off + g * (lc - lm);
}

/* The spread of the shape's log errors: its own measured ones with the
 * model's as a prior of one run. */
static double shape_sd(const shape_t *s, const model_t *m)
{
    return sqrt((s->err2_sum + SHAPE_PRIOR * m->err2) / (s->fits + SHAPE_PRIOR));
}

void pgt_estimator_explained(pgt_estimator_t *e, pgt_estimate_t *out, pgt_plan_t *plan,
                             double explain_s)
{
    shape_t *s = claim(e, out->key);
    s->explained_ns = uv_hrtime();
    if (explain_s > 0)
        s->explain_s =
            s->explain_s > 0 ? s->explain_s + ALPHA * (explain_s - s->explain_s) : explain_s;
    if (!plan || plan->total_cost < 0) {
        from_history(e, s, out);
        return;
    }
    pgt_plan_qualify(plan, s->named);
    char *rels = pgt_plan_relations_json(plan);
    if (rels) {
        free(s->relations);
        s->relations = rels;
    }
    double lc = log1p(plan->total_cost);
    if (s->plans == 0) {
        s->plan_log_mean = lc;
    } else {
        double d = lc - s->plan_log_mean;
        s->plan_log_var += ALPHA * (d * d - s->plan_log_var);
        s->plan_log_mean += ALPHA * d;
    }
    if (s->plans < UINT32_MAX)
        s->plans++;
    out->planner_cost = plan->total_cost;
    features(plan, out->x);
    const model_t *m = &e->models[out->model];
    double seconds = exp(dot(m->w, out->x) + shape_offset(s, out->x[1]));
    /* Bytes: the plan's rows of its width, plus each DataRow's header. */
    double bytes = plan->rows * (plan->width + 11);
    priced(e, out, seconds, shape_sd(s, m), bytes);
    memcpy(s->last_x, out->x, sizeof(s->last_x));
    s->model = out->model;
}

char *pgt_estimator_relations(const pgt_estimator_t *e, uint64_t key)
{
    const shape_t *s = slot_c(e, key);
    if (s->key != key)
        return NULL;
    const char *r = s->relations ? s->relations : s->named;
    return r ? strdup(r) : NULL;
}

/* One step of recursive least squares: m learns that x gave y. */
static void model_learn(model_t *m, const float *x, double y)
{
    double px[PGT_EST_FEATURES];
    double denom = FORGET;
    for (int i = 0; i < PGT_EST_FEATURES; i++) {
        px[i] = 0;
        for (int j = 0; j < PGT_EST_FEATURES; j++)
            px[i] += m->p[i][j] * x[j];
        denom += x[i] * px[i];
    }
    double err = y - dot(m->w, x);
    for (int i = 0; i < PGT_EST_FEATURES; i++)
        m->w[i] += px[i] / denom * err;
    for (int i = 0; i < PGT_EST_FEATURES; i++)
        for (int j = 0; j < PGT_EST_FEATURES; j++)
            m->p[i][j] = (m->p[i][j] - px[i] * px[j] / denom) / FORGET;
    m->n++;
}

void pgt_estimator_learn(pgt_estimator_t *e, const pgt_estimate_t *est, double compute_s,
                         int64_t bytes_out)
{
    if (!est->key)
        return;
    shape_t *s = claim(e, est->key);
    double lt = log(compute_s > 1e-6 ? compute_s : 1e-6);
    if (s->runs == 0) {
        s->mean_s = compute_s;
        s->mean_bytes = (double)bytes_out;
        s->log_mean = lt;
    } else {
        double d = lt - s->log_mean;
        s->log_var += ALPHA * (d * d - s->log_var);
        s->log_mean += ALPHA * d;
        s->mean_s += ALPHA * (compute_s - s->mean_s);
        s->mean_bytes += ALPHA * ((double)bytes_out - s->mean_bytes);
    }
    if (s->runs < UINT32_MAX)
        s->runs++;
    if (est->x[0] == 0 || compute_s <= 0 || est->model < 0 || est->model >= MODELS)
        return;
    model_t *m = &e->models[est->model];
    /* The error of the estimate that was made, then the residual the
     * shape keeps, then the model, fitted to what the shape's offset does
     * not explain. */
    double base = dot(m->w, est->x);
    double lc = est->x[1];
    double offset = shape_offset(s, lc);
    double err = lt - (base + offset);
    s->err2_sum += err * err;
    m->err2 += 0.05 * (err * err - m->err2);
    /* Robustly: a run further than ROBUST from the model moves it as if
     * it were at ROBUST (a Huber loss, in effect). */
    double t = lt - offset - base;
    model_learn(m, est->x, base + (t > ROBUST ? ROBUST : t < -ROBUST ? -ROBUST : t));
    double r = lt - base;
    s->resid_sum += r;
    s->lc_sum += lc;
    s->lc2_sum += lc * lc;
    s->lcr_sum += lc * r;
    if (s->fits < UINT32_MAX)
        s->fits++;
}

void pgt_estimator_stats(const pgt_estimator_t *e, pgt_estimator_stats_t *out)
{
    *out = e->stats;
}
