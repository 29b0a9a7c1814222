/* The Prometheus metrics registry. The meter's worker thread counts each
 * batch of records under one lock; the HTTP thread renders under the same
 * lock. Label values are interned per label up to a cap, so a flood of
 * distinct users or application names cannot grow memory without bound. */
#include "pgtally/metrics.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* The labels whose values are capped, each with its own table. */
#define LABEL_MAP(X)                                                                               \
    X(USER, "user")                                                                                \
    X(APPLICATION, "application")                                                                  \
    X(DATABASE, "database")                                                                        \
    X(SQLSTATE, "sqlstate")

typedef enum {
#define X(name, str) LABEL_##name,
    LABEL_MAP(X)
#undef X
        LABEL_COUNT
} label_t;

static const char *const label_names[] = {
#define X(name, str) str,
    LABEL_MAP(X)
#undef X
};

/* Where values past the cap go; index 0 of every label table. */
#define OTHER "other"
/* Bits of a label index in a series key (max_label_values < 2^17). */
#define INDEX_BITS 17

/* The values seen of one label: values[0] is "other", 1..n are kept. */
typedef struct label_set {
    char **values;   /* max + 1 entries; [0] is OTHER (not owned), the rest owned */
    size_t n;        /* values kept, besides OTHER */
    uint32_t *slots; /* open-addressed hash of indexes into values; 0: empty */
    size_t nslots;   /* a power of two, at least twice max */
} label_set_t;

/* Counters of one label combination. */
typedef struct series {
    uint64_t key;    /* the packed label indexes */
    bool used;       /* the slot holds a series */
    uint64_t count;  /* statements */
    int64_t cost_us; /* cost in micro-units of the currency */
} series_t;

/* An open-addressed map from a packed key to its counters. */
typedef struct series_map {
    series_t *slots; /* nslots entries */
    size_t nslots;   /* a power of two, or 0 before the first insert */
    size_t n;        /* series held */
} series_map_t;

/* A histogram with bucket bounds bound(k) for k = lo..hi: 2^k when pow2,
 * else k itself. counts[] are per bucket (not cumulative), the last one
 * above every bound. */
typedef struct histogram {
    int lo, hi;          /* the first and last bound's k */
    bool pow2;           /* bounds are powers of two */
    uint64_t counts[48]; /* hi - lo + 2 used */
    double sum;          /* sum of observations */
    uint64_t count;      /* observations */
} histogram_t;

struct pgt_metrics {
    uv_mutex_t mu;                   /* guards everything below but sessions */
    size_t max;                      /* values kept per label */
    char currency[8];                /* of the cost metrics */
    label_set_t labels[LABEL_COUNT]; /* interned label values */
    series_map_t statements;         /* by status, user, application, database */
    series_map_t outcomes;           /* refusals and cancels by status and sqlstate */
    histogram_t duration;            /* statement seconds */
    histogram_t cost;                /* statement cost in the currency */
    histogram_t error;               /* log2(estimate / actual cost) */
    pgt_ledger_t *ledger;            /* read at scrape time, or NULL */
    int64_t sessions;                /* live sessions (atomic) */
    pgt_budget_spend_t *budgets;     /* budgets in force, as last set */
    size_t nbudgets;                 /* entries in budgets */
};

/* ---- label values ---------------------------------------------------------- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int label_init(label_set_t *l, size_t max)
{
    l->nslots = 2;
    while (l->nslots < 2 * max)
        l->nslots <<= 1;
    l->values = calloc(max + 1, sizeof(*l->values));
    l->slots = calloc(l->nslots, sizeof(*l->slots));
    if (!l->values || !l->slots)
        return -1;
    l->values[0] = (char *)OTHER;
    return 0;
}

static void label_free(label_set_t *l)
{
    for (size_t i = 1; l->values && i <= l->n; i++)
        free(l->values[i]);
    free(l->values);
    free(l->slots);
}

/* Returns the index of s, adding it while there is room; 0 ("other") once
 * the label is full or when out of memory. */
static uint32_t label_index(label_set_t *l, size_t max, const char *s)
{
    size_t mask = l->nslots - 1;
    for (size_t i = hash_str(s) & mask;; i = (i + 1) & mask) {
        uint32_t v = l->slots[i];
        if (v == 0) {
            if (l->n >= max || !(l->values[l->n + 1] = strdup(s)))
                return 0;
            l->slots[i] = (uint32_t)++l->n;
            return l->slots[i];
        }
        if (strcmp(l->values[v], s) == 0)
            return v;
    }
}

/* ---- series -------------------------------------------------------------- */

static series_t *series_find(series_map_t *m, uint64_t key);

static int series_grow(series_map_t *m)
{
    series_map_t bigger = {.nslots = m->nslots ? m->nslots * 2 : 64};
    bigger.slots = calloc(bigger.nslots, sizeof(*bigger.slots));
    if (!bigger.slots)
        return -1;
    for (size_t i = 0; i < m->nslots; i++)
        if (m->slots[i].used)
            *series_find(&bigger, m->slots[i].key) = m->slots[i];
    bigger.n = m->n;
    free(m->slots);
    *m = bigger;
    return 0;
}

/* Returns the slot of key: the series, or the empty slot it would take. */
static series_t *series_find(series_map_t *m, uint64_t key)
{
    size_t mask = m->nslots - 1;
    for (size_t i = (key * 0x9E3779B97F4A7C15ULL >> 17) & mask;; i = (i + 1) & mask)
        if (!m->slots[i].used || m->slots[i].key == key)
            return &m->slots[i];
}

/* Returns the series of key, made when new, or NULL when out of memory. */
static series_t *series_get(series_map_t *m, uint64_t key)
{
    if ((m->n + 1) * 2 > m->nslots && series_grow(m) != 0)
        return NULL;
    series_t *s = series_find(m, key);
    if (!s->used) {
        *s = (series_t){.key = key, .used = true};
        m->n++;
    }
    return s;
}

static uint64_t pack(unsigned status, uint32_t a, uint32_t b, uint32_t c)
{
    return (uint64_t)status | (uint64_t)a << 3 | (uint64_t)b << (3 + INDEX_BITS) |
           (uint64_t)c << (3 + 2 * INDEX_BITS);
}

static uint32_t unpack(uint64_t key, int i)
{
    return (uint32_t)(key >> (3 + i * INDEX_BITS)) & ((1u << INDEX_BITS) - 1);
}

/* ---- histograms ------------------------------------------------------------ */

static double bound(const histogram_t *h, int k)
{
    return h->pow2 ? ldexp(1.0, k) : (double)k;
}

static void observe(histogram_t *h, double v)
{
    int b = 0;
    while (b <= h->hi - h->lo && v > bound(h, h->lo + b))
        b++;
    h->counts[b]++;
    h->sum += v;
    h->count++;
}

/* ---- the registry ---------------------------------------------------------- */

pgt_metrics_t *pgt_metrics_new(int max_label_values, const char *currency)
{
    pgt_metrics_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->max = max_label_values < 1 ? 1 : (size_t)max_label_values;
    if (m->max >= (1u << INDEX_BITS))
        m->max = (1u << INDEX_BITS) - 1;
    snprintf(m->currency, sizeof(m->currency), "%s", currency ? currency : "");
    /* Statement seconds from 61 µs to 64 s; cost from about a
     * micro-unit to 1024; estimate error from 1/1024 to 1024 times. */
    m->duration = (histogram_t){.lo = -14, .hi = 6, .pow2 = true};
    m->cost = (histogram_t){.lo = -20, .hi = 10, .pow2 = true};
    m->error = (histogram_t){.lo = -10, .hi = 10, .pow2 = false};
    bool ok = true;
    for (int i = 0; i < LABEL_COUNT; i++)
        if (label_init(&m->labels[i], m->max) != 0)
            ok = false;
    if (!ok || uv_mutex_init(&m->mu) != 0) {
        for (int i = 0; i < LABEL_COUNT; i++)
            label_free(&m->labels[i]);
        free(m);
        return NULL;
    }
    return m;
}

void pgt_metrics_free(pgt_metrics_t *m)
{
    if (!m)
        return;
    for (int i = 0; i < LABEL_COUNT; i++)
        label_free(&m->labels[i]);
    free(m->statements.slots);
    free(m->outcomes.slots);
    free(m->budgets);
    uv_mutex_destroy(&m->mu);
    free(m);
}

static uint32_t intern(pgt_metrics_t *m, label_t l, const char *s)
{
    return label_index(&m->labels[l], m->max, s ? s : "");
}

/* Counts one record; the lock is held. */
static void observe_record(pgt_metrics_t *m, const pgt_record_t *r)
{
    uint64_t key =
        pack((unsigned)r->status, intern(m, LABEL_USER, r->user),
             intern(m, LABEL_APPLICATION, r->application), intern(m, LABEL_DATABASE, r->database));
    series_t *s = series_get(&m->statements, key);
    if (s) {
        s->count++;
        s->cost_us += r->cost_micro;
    }
    if (r->status != PGT_QUERY_OK && r->status != PGT_QUERY_ERROR) {
        s = series_get(&m->outcomes,
                       pack((unsigned)r->status, intern(m, LABEL_SQLSTATE, r->sqlstate), 0, 0));
        if (s)
            s->count++;
    }
    if (r->status == PGT_QUERY_REFUSED)
        return; /* never ran */
    observe(&m->duration, r->compute_s);
    observe(&m->cost, (double)r->cost_micro / 1e6);
    if (r->status == PGT_QUERY_OK && r->est_cost_micro > 0 && r->cost_micro > 0)
        observe(&m->error, log2((double)r->est_cost_micro / (double)r->cost_micro));
}

void pgt_metrics_observe(pgt_metrics_t *m, pgt_record_t *const *rs, size_t n)
{
    if (!m || n == 0)
        return;
    uv_mutex_lock(&m->mu);
    for (size_t i = 0; i < n; i++)
        if (rs[i])
            observe_record(m, rs[i]);
    uv_mutex_unlock(&m->mu);
}

void pgt_metrics_sessions_add(pgt_metrics_t *m, int delta)
{
    if (m)
        __atomic_add_fetch(&m->sessions, delta, __ATOMIC_RELAXED);
}

void pgt_metrics_set_ledger(pgt_metrics_t *m, pgt_ledger_t *l)
{
    uv_mutex_lock(&m->mu);
    m->ledger = l;
    uv_mutex_unlock(&m->mu);
}

/* ---- the text exposition format ------------------------------------------- */

void pgt_metrics_escape(pgt_buf_t *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            pgt_buf_puts(out, "\\\\");
        else if (*s == '"')
            pgt_buf_puts(out, "\\\"");
        else if (*s == '\n')
            pgt_buf_puts(out, "\\n");
        else
            pgt_buf_putc(out, *s);
    }
}

static void family(pgt_buf_t *out, const char *name, const char *type, const char *help)
{
    pgt_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void label(pgt_buf_t *out, const char *name, const char *value, bool first)
{
    pgt_buf_printf(out, "%s%s=\"", first ? "" : ",", name);
    pgt_metrics_escape(out, value);
    pgt_buf_putc(out, '"');
}

/* Appends the labels of a statements series, without braces. */
static void statement_labels(pgt_buf_t *out, const pgt_metrics_t *m, uint64_t key)
{
    label(out, "status", pgt_query_status_name((pgt_query_status_t)(key & 7)), true);
    for (int i = 0; i < 3; i++)
        label(out, label_names[i], m->labels[i].values[unpack(key, i)], false);
}

/* Appends an amount of micro-units as a decimal number of units. */
static void micro(pgt_buf_t *out, int64_t us)
{
    uint64_t a = us < 0 ? (uint64_t)0 - (uint64_t)us : (uint64_t)us;
    pgt_buf_printf(out, "%s%llu.%06llu\n", us < 0 ? "-" : "", (unsigned long long)(a / 1000000),
                   (unsigned long long)(a % 1000000));
}

static void render_statements(pgt_metrics_t *m, pgt_buf_t *out)
{
    char help[160];
    family(out, "pgtally_statements_total", "counter",
           "Statements metered, by how they ended and who ran them.");
    for (size_t i = 0; i < m->statements.nslots; i++) {
        const series_t *s = &m->statements.slots[i];
        if (!s->used)
            continue;
        pgt_buf_puts(out, "pgtally_statements_total{");
        statement_labels(out, m, s->key);
        pgt_buf_printf(out, "} %llu\n", (unsigned long long)s->count);
    }
    snprintf(help, sizeof(help), "Cost of the statements metered, in %s.", m->currency);
    family(out, "pgtally_cost_total", "counter", help);
    for (size_t i = 0; i < m->statements.nslots; i++) {
        const series_t *s = &m->statements.slots[i];
        if (!s->used)
            continue;
        pgt_buf_puts(out, "pgtally_cost_total{");
        statement_labels(out, m, s->key);
        pgt_buf_puts(out, "} ");
        micro(out, s->cost_us);
    }
}

/* Refusals, or cancels (by status), by SQLSTATE. */
static void render_outcomes(pgt_metrics_t *m, pgt_buf_t *out, bool refusals)
{
    const char *name = refusals ? "pgtally_refusals_total" : "pgtally_cancels_total";
    family(out, name, "counter",
           refusals ? "Statements pgtally refused before they ran, by SQLSTATE."
                    : "Statements cancelled while they ran (by the client, or by pgtally for "
                      "their budget), by SQLSTATE.");
    for (size_t i = 0; i < m->outcomes.nslots; i++) {
        const series_t *s = &m->outcomes.slots[i];
        if (!s->used || ((s->key & 7) == PGT_QUERY_REFUSED) != refusals)
            continue;
        pgt_buf_printf(out, "%s{", name);
        if (!refusals)
            label(out, "status", pgt_query_status_name((pgt_query_status_t)(s->key & 7)), true);
        label(out, "sqlstate", m->labels[LABEL_SQLSTATE].values[unpack(s->key, 0)], refusals);
        pgt_buf_printf(out, "} %llu\n", (unsigned long long)s->count);
    }
}

static void render_histogram(pgt_buf_t *out, const histogram_t *h, const char *name,
                             const char *help)
{
    family(out, name, "histogram", help);
    uint64_t cum = 0;
    for (int b = 0; b <= h->hi - h->lo; b++) {
        cum += h->counts[b];
        pgt_buf_printf(out, "%s_bucket{le=\"%.17g\"} %llu\n", name, bound(h, h->lo + b),
                       (unsigned long long)cum);
    }
    pgt_buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
    pgt_buf_printf(out, "%s_sum %.17g\n%s_count %llu\n", name, h->sum, name,
                   (unsigned long long)h->count);
}

void pgt_metrics_set_budgets(pgt_metrics_t *m, const pgt_budget_spend_t *s, size_t n)
{
    if (!m)
        return;
    pgt_budget_spend_t *copy = n ? malloc(n * sizeof(*copy)) : NULL;
    if (n && !copy)
        return; /* the last ones stay */
    if (n)
        memcpy(copy, s, n * sizeof(*copy));
    uv_mutex_lock(&m->mu);
    free(m->budgets);
    m->budgets = copy;
    m->nbudgets = n;
    uv_mutex_unlock(&m->mu);
}

/* One gauge per budget: its spend (limit false) or its limit. */
static void render_budget_family(pgt_metrics_t *m, pgt_buf_t *out, bool limit)
{
    const char *name = limit ? "pgtally_budget_limit" : "pgtally_budget_spend";
    char help[200];
    snprintf(help, sizeof(help),
             limit
                 ? "Limit of each budget in force, in %s, per period (none for a budget without a "
                   "money limit)."
                 : "Spent in the current period under each budget, in %s (a default budget: "
                   "the most any one user spent).",
             m->currency);
    family(out, name, "gauge", help);
    for (size_t i = 0; i < m->nbudgets; i++) {
        const pgt_budget_spend_t *b = &m->budgets[i];
        if (limit && b->limit_micro < 0)
            continue; /* no money limit (--max-rows alone): no limit to show */
        char id[24];
        snprintf(id, sizeof(id), "%lld", (long long)b->budget_id);
        pgt_buf_printf(out, "%s{", name);
        label(out, "budget", id, true);
        label(out, "subject_type", pgt_budget_subject_name(b->subject_type), false);
        label(out, "subject", b->subject, false);
        label(out, "period", pgt_period_name(b->period), false);
        pgt_buf_printf(out, "} %.6f\n", (double)(limit ? b->limit_micro : b->spent_micro) / 1e6);
    }
}

static void render_gauges(pgt_metrics_t *m, pgt_buf_t *out)
{
    render_budget_family(m, out, false);
    render_budget_family(m, out, true);
    family(out, "pgtally_sessions", "gauge", "Client sessions open now.");
    pgt_buf_printf(out, "pgtally_sessions %lld\n",
                   (long long)__atomic_load_n(&m->sessions, __ATOMIC_RELAXED));
    family(out, "pgtally_build_info", "gauge", "The pgtally version running.");
    pgt_buf_puts(out, "pgtally_build_info{version=\"");
    pgt_metrics_escape(out, PGTALLY_VERSION);
    pgt_buf_puts(out, "\"} 1\n");
    if (!m->ledger)
        return;
    pgt_ledger_stats_t st;
    pgt_ledger_stats(m->ledger, &st);
    family(out, "pgtally_ledger_queue_depth", "gauge",
           "Records queued for the ledger's writer thread.");
    pgt_buf_printf(out, "pgtally_ledger_queue_depth %llu\n", (unsigned long long)st.queued);
    family(out, "pgtally_ledger_pending_records", "gauge",
           "Records waiting in memory or in the spool file for the ledger to come back.");
    pgt_buf_printf(out, "pgtally_ledger_pending_records %llu\n", (unsigned long long)st.pending);
    family(out, "pgtally_ledger_spooled_records_total", "counter",
           "Records written to the spool file while the ledger could not be written.");
    pgt_buf_printf(out, "pgtally_ledger_spooled_records_total %llu\n",
                   (unsigned long long)st.spooled);
    family(out, "pgtally_ledger_written_records_total", "counter",
           "Records committed to the ledger.");
    pgt_buf_printf(out, "pgtally_ledger_written_records_total %llu\n",
                   (unsigned long long)st.written);
    family(out, "pgtally_ledger_failing", "gauge", "1 while the ledger cannot be written.");
    pgt_buf_printf(out, "pgtally_ledger_failing %d\n", st.failing ? 1 : 0);
}

void pgt_metrics_render(pgt_metrics_t *m, pgt_buf_t *out)
{
    char help[160];
    uv_mutex_lock(&m->mu);
    render_statements(m, out);
    render_outcomes(m, out, true);
    render_outcomes(m, out, false);
    render_histogram(out, &m->duration, "pgtally_statement_duration_seconds",
                     "Seconds the server was busy with each statement (log2 buckets).");
    snprintf(help, sizeof(help), "Cost of each statement that ran, in %s (log2 buckets).",
             m->currency);
    render_histogram(out, &m->cost, "pgtally_statement_cost", help);
    render_histogram(out, &m->error, "pgtally_estimate_error_log2",
                     "log2 of estimated over actual cost, of statements that ran to the end "
                     "with an estimate (0: exact, 1: twice too high, -1: half).");
    render_gauges(m, out);
    uv_mutex_unlock(&m->mu);
}
