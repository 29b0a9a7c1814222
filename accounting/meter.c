/* The metering pipeline: executions finished on the loop are batched and
 * turned into priced ledger records on a libuv worker thread, one batch at
 * a time, so libpg_query never runs on the event loop and its cache needs
 * no lock. */
#include "pgtally/meter.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/fingerprint.h"
#include "pgtally/journal.h"
#include "pgtally/log.h"
#include "pgtally/metrics.h"
#include "pgtally/pricing.h"
#include "pgtally/tags.h"

/* Executions gathered before a batch is started without waiting for the
 * timer, and how long an execution may wait for its batch. */
#define BATCH_MAX 2048
#define FLUSH_MS 100
#define SPLIT_STACK 64
/* Records handed to the ledger together (one lock and one wake-up). */
#define OUT_MAX 512

/* Prices are copied into each job so reloads never race. */
typedef struct prices {
    pgt_price_t price; /* what statements cost */
    bool history;      /* estimate from history (estimate.mode is not off) */
} prices_t;

/* What one shape (database, fingerprint) cost before: moving averages of
 * its compute time and bytes, from which its next run is estimated. */
typedef struct history {
    uint64_t key;     /* fingerprint mixed with the database name; 0 = empty */
    uint32_t runs;    /* runs seen (saturating) */
    double compute_s; /* moving average of compute seconds */
    double bytes_out; /* moving average of bytes returned */
} history_t;

/* Shapes remembered; a colliding shape replaces the older one. */
#define HISTORY_SLOTS 16384
/* Weight of the newest run in the moving averages. */
#define HISTORY_ALPHA 0.2

/* What the parse tree of one shape names (pgt_fp_relations_json), read
 * once per fingerprint for the records whose estimate brought no plan's
 * relations. */
typedef struct rel_memo {
    uint64_t fingerprint; /* the shape; 0 = empty */
    char *json;           /* its relations, or NULL when it names none (owned) */
} rel_memo_t;

/* Shapes whose relations are remembered; a colliding shape replaces the
 * older one. */
#define REL_MEMO_SLOTS 4096

/* One batch on its way through the worker. */
typedef struct job {
    uv_work_t req;       /* libuv work request; req.data is the job */
    pgt_meter_t *meter;  /* owner */
    pgt_exec_t *execs;   /* the batch, linked by next */
    prices_t prices;     /* prices at submission */
    uint64_t statements; /* records made by the worker */
} job_t;

struct pgt_meter {
    uv_loop_t *loop;             /* the event loop */
    pgt_ledger_t *ledger;        /* where records go (not owned) */
    pgt_fp_cache_t *cache;       /* shapes; used by one worker job at a time */
    history_t *history;          /* HISTORY_SLOTS entries; used by one worker job at a time */
    rel_memo_t *rels;            /* REL_MEMO_SLOTS entries; used by one worker job at a time */
    prices_t prices;             /* current prices */
    pgt_exec_t *batch;           /* executions waiting for a job, newest first */
    size_t batch_n;              /* how many */
    bool job_running;            /* a job is on the worker */
    bool stopped;                /* the timer is closed */
    uv_timer_t timer;            /* bounds how long a batch waits */
    pgt_meter_stats_t stats;     /* counters */
    struct pgt_journal *journal; /* where executions are journaled, or NULL (not owned) */
    pgt_record_t *out[OUT_MAX];  /* records made, not yet handed to the ledger */
    size_t out_n;                /* how many; used by one worker job at a time */
    pgt_metrics_t *metrics;      /* counts every record made, or NULL (not owned) */
};

/* ---- shared texts and attribution ---------------------------------------- */

pgt_text_t *pgt_text_new(const char *s, size_t len)
{
    pgt_text_t *t = malloc(sizeof(*t) + len + 1);
    if (!t)
        return NULL;
    t->refs = 1;
    t->len = len;
    memcpy(t->data, s, len);
    t->data[len] = '\0';
    return t;
}

pgt_text_t *pgt_text_ref(pgt_text_t *t)
{
    if (t)
        t->refs++;
    return t;
}

void pgt_text_unref(pgt_text_t *t)
{
    if (t && --t->refs == 0)
        free(t);
}

pgt_attr_t *pgt_attr_new(uint64_t session_id, const char *user, const char *database,
                         const char *application, const char *client_addr)
{
    pgt_attr_t *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->refs = 1;
    a->session_id = session_id;
    a->user = strdup(user);
    a->database = strdup(database);
    a->application = strdup(application);
    a->client_addr = strdup(client_addr);
    if (!a->user || !a->database || !a->application || !a->client_addr) {
        a->refs = 1;
        pgt_attr_unref(a);
        return NULL;
    }
    return a;
}

void pgt_attr_unref(pgt_attr_t *a)
{
    if (!a || --a->refs > 0)
        return;
    free(a->user);
    free(a->database);
    free(a->application);
    free(a->client_addr);
    free(a);
}

void pgt_exec_free(pgt_exec_t *e)
{
    if (!e)
        return;
    pgt_text_unref(e->text);
    pgt_attr_unref(e->attr);
    free(e->relations);
    free(e->done);
    free(e);
}

/* ---- the worker side ------------------------------------------------------- */

/* Counts the records made so far (one lock for the lot) and hands them to
 * the ledger, which owns them from then on. */
static void flush_out(pgt_meter_t *m)
{
    pgt_metrics_observe(m->metrics, m->out, m->out_n);
    pgt_ledger_submit_many(m->ledger, m->out, m->out_n);
    m->out_n = 0;
}

static void emit(pgt_meter_t *m, pgt_record_t *r)
{
    m->out[m->out_n++] = r;
    if (m->out_n == OUT_MAX)
        flush_out(m);
}

static int64_t price(const prices_t *p, const pgt_done_t *d)
{
    return pgt_pricing_cost(&p->price, d->compute_s, d->bytes_out);
}

/* Estimates a statement from what its shape cost before (-1 when it is
 * new), then learns from what it cost this time if it ran to the end. */
static int64_t estimate_and_learn(pgt_meter_t *m, const prices_t *p, uint64_t key,
                                  const pgt_done_t *d)
{
    history_t *h = &m->history[key % HISTORY_SLOTS];
    int64_t est = -1;
    if (h->key == key && h->runs > 0) {
        pgt_done_t avg = {.compute_s = h->compute_s, .bytes_out = (int64_t)h->bytes_out};
        est = price(p, &avg);
    }
    if (d->status != PGT_QUERY_OK)
        return est;
    if (est >= 0) {
        h->compute_s += HISTORY_ALPHA * (d->compute_s - h->compute_s);
        h->bytes_out += HISTORY_ALPHA * ((double)d->bytes_out - h->bytes_out);
        if (h->runs < UINT32_MAX)
            h->runs++;
    } else {
        *h = (history_t){
            .key = key, .runs = 1, .compute_s = d->compute_s, .bytes_out = (double)d->bytes_out};
    }
    return est;
}

/* The relations of a statement that ran (NULL for one refused, which read
 * nothing): its shape's last plan's when the loop had them, else what its
 * parse tree names, remembered per fingerprint. Returns a malloc'd string
 * or NULL. */
static char *relations_of(pgt_meter_t *m, const pgt_exec_t *e, const pgt_done_t *d,
                          const pgt_shape_t *shape, const char *text, size_t len)
{
    if (d->status == PGT_QUERY_REFUSED || e->function_call)
        return NULL;
    if (e->relations)
        return strdup(e->relations);
    if (!shape->fingerprint || shape->kind == PGT_STMT_TRANSACTION ||
        shape->kind == PGT_STMT_EMPTY || shape->kind == PGT_STMT_UNPARSED)
        return NULL;
    rel_memo_t *r = &m->rels[shape->fingerprint % REL_MEMO_SLOTS];
    if (r->fingerprint != shape->fingerprint) {
        free(r->json);
        r->json = pgt_fp_relations_json(text, len);
        r->fingerprint = shape->fingerprint;
    }
    return r->json ? strdup(r->json) : NULL;
}

/* Builds and submits the record of one statement text[0..len). */
static void record_statement(pgt_meter_t *m, const prices_t *p, const pgt_exec_t *e,
                             const pgt_done_t *d, const char *text, size_t len)
{
    pgt_shape_t shape;
    size_t off = 0;
    pgt_fp_trim(text, &off, &len);
    text += off;
    /* A single statement the loop already fingerprinted is not parsed again. */
    int rc = e->est.fingerprint && e->ndone == 1
                 ? pgt_fp_shape_known(m->cache, e->est.fingerprint, (pgt_stmt_kind_t)e->est.kind,
                                      e->est.explainable, text, len, &shape)
                 : pgt_fp_shape(m->cache, text, len, &shape);
    if (rc != 0)
        return;
    pgt_record_t *r = calloc(1, sizeof(*r));
    if (!r)
        return;
    int i = (int)(d - e->done);
    r->instance = e->instance;
    r->seq = e->seq ? e->seq + i : 0;
    /* The journal's entry is free once its last record is durable. */
    r->journal_end = i == e->ndone - 1 ? e->journal_end : 0;
    r->started_us = d->start_us;
    r->finished_us = d->end_us;
    r->session_id = e->attr->session_id;
    r->backend_pid = e->attr->backend_pid;
    r->user = strdup(e->attr->user);
    r->database = strdup(e->attr->database);
    r->application = strdup(e->attr->application);
    r->client_addr = strdup(e->attr->client_addr);
    r->tags_json = pgt_tags_json(text, len);
    r->relations = relations_of(m, e, d, &shape, text, len);
    r->fingerprint = shape.fingerprint;
    r->normalized = strdup(shape.normalized ? shape.normalized : "");
    r->kind = strdup(pgt_stmt_kind_name(shape.kind));
    r->protocol = strdup(e->function_call ? "function" : e->extended ? "extended" : "simple");
    /* The loop's estimate (EXPLAIN or its shape history) was made before
     * the statement ran; otherwise the worker's own history serves. */
    int64_t history = estimate_and_learn(
        m, p, pgt_estimator_shape_key(r->database ? r->database : "", shape.fingerprint), d);
    r->est_planner_cost = e->est.key ? e->est.planner_cost : -1;
    r->est_cost_micro = e->est.key && e->est.cost_micro >= 0 ? e->est.cost_micro
                        : p->history                         ? history
                                                             : -1;
    r->compute_s = d->compute_s;
    r->rows = d->rows;
    r->bytes_out = d->bytes_out;
    r->cost_micro = price(p, d);
    r->status = d->status;
    r->budget_id = d->budget_id;
    r->rule_id = e->est.rule_id;
    r->approval_id = e->est.approval_id;
    r->constants =
        shape.kind == PGT_STMT_TRANSACTION ? 0 : pgt_fp_constants_hash(text, len, e->params);
    if (d->status == PGT_QUERY_REFUSED)
        r->cost_micro = 0; /* never ran */
    memcpy(r->sqlstate, d->sqlstate, sizeof(r->sqlstate));
    emit(m, r);
}

/* A Query holds one or more statements; the server answered them in order,
 * and stopped at the first error. Pair the i-th answer with the i-th
 * statement. */
static uint64_t meter_exec(pgt_meter_t *m, const prices_t *p, const pgt_exec_t *e)
{
    const char *sql = e->text->data;
    if (e->extended) {
        for (int i = 0; i < e->ndone; i++)
            record_statement(m, p, e, &e->done[i], sql, e->text->len);
        return (uint64_t)e->ndone;
    }
    if (e->est.fingerprint && e->ndone == 1) {
        /* The loop found one statement and its fingerprint already. */
        record_statement(m, p, e, &e->done[0], sql, e->text->len);
        return 1;
    }
    pgt_stmt_t stack[SPLIT_STACK];
    pgt_stmt_t *st = stack;
    int n = pgt_fp_split(sql, st, SPLIT_STACK);
    if (n >= SPLIT_STACK && (st = malloc(sizeof(*st) * 65536)) != NULL)
        n = pgt_fp_split(sql, st, 65536);
    if (!st) {
        st = stack;
        n = SPLIT_STACK;
    }
    for (int i = 0; i < e->ndone; i++) {
        if (n == 0)
            record_statement(m, p, e, &e->done[i], sql, e->text->len);
        else {
            const pgt_stmt_t *s = &st[i < n ? i : n - 1];
            record_statement(m, p, e, &e->done[i], sql + s->offset, s->length);
        }
    }
    if (st != stack)
        free(st);
    return (uint64_t)e->ndone;
}

static void run_job(job_t *job)
{
    for (pgt_exec_t *e = job->execs; e; e = e->next)
        job->statements += meter_exec(job->meter, &job->prices, e);
    flush_out(job->meter);
}

static void work_cb(uv_work_t *req)
{
    /* libuv's pool threads are unnamed; one that runs a meter job says so,
     * once (top -H, perf, bench/compare's CPU account). */
    static __thread bool named;
    if (!named) {
        pthread_setname_np(pthread_self(), "pgt-meter");
        named = true;
    }
    run_job(req->data);
}

static void free_execs(pgt_exec_t *e)
{
    while (e) {
        pgt_exec_t *next = e->next;
        pgt_exec_free(e);
        e = next;
    }
}

/* ---- the loop side --------------------------------------------------------- */

static void start_job(pgt_meter_t *m);
static void timer_cb(uv_timer_t *t);

static void after_work_cb(uv_work_t *req, int status)
{
    job_t *job = req->data;
    pgt_meter_t *m = job->meter;
    (void)status;
    m->stats.statements += job->statements;
    m->stats.batches++;
    free_execs(job->execs);
    free(job);
    m->job_running = false;
    /* What came in meanwhile waits for its own batch (a full one, or the
     * timer), rather than following at once as a small one: each batch is
     * a ledger transaction. */
    if (m->batch_n >= BATCH_MAX)
        start_job(m);
    else if (m->batch_n > 0 && !m->stopped && !uv_is_active((uv_handle_t *)&m->timer))
        uv_timer_start(&m->timer, timer_cb, FLUSH_MS, 0);
}

/* Takes the batch, oldest first. */
static pgt_exec_t *take_batch(pgt_meter_t *m)
{
    pgt_exec_t *rev = NULL, *e = m->batch;
    while (e) {
        pgt_exec_t *next = e->next;
        e->next = rev;
        rev = e;
        e = next;
    }
    m->batch = NULL;
    m->batch_n = 0;
    return rev;
}

static void start_job(pgt_meter_t *m)
{
    if (m->job_running || m->batch_n == 0)
        return;
    job_t *job = calloc(1, sizeof(*job));
    if (!job)
        return; /* retried at the next flush */
    job->meter = m;
    job->prices = m->prices;
    job->execs = take_batch(m);
    job->req.data = job;
    m->job_running = true;
    if (uv_queue_work(m->loop, &job->req, work_cb, after_work_cb) != 0) {
        /* Meter on the loop rather than lose the records. */
        run_job(job);
        after_work_cb(&job->req, 0);
    }
}

static void timer_cb(uv_timer_t *t)
{
    start_job(t->data);
}

void pgt_meter_set_metrics(pgt_meter_t *m, struct pgt_metrics *metrics)
{
    m->metrics = metrics;
}

void pgt_meter_set_journal(pgt_meter_t *m, struct pgt_journal *j)
{
    m->journal = j;
}

void pgt_meter_replay(pgt_meter_t *m, pgt_exec_t *e)
{
    m->stats.execs++;
    m->stats.statements += meter_exec(m, &m->prices, e);
    flush_out(m);
    pgt_exec_free(e);
}

void pgt_meter_add(pgt_meter_t *m, pgt_exec_t *e)
{
    if (e->ndone > 0 && !e->seq) {
        e->instance = pgt_ledger_instance(m->ledger);
        e->seq = pgt_ledger_reserve_seq(m->ledger, e->ndone);
    }
    if (m->journal)
        e->journal_end = pgt_journal_append(m->journal, e);
    e->next = m->batch;
    m->batch = e;
    m->batch_n++;
    m->stats.execs++;
    if (m->batch_n >= BATCH_MAX)
        start_job(m);
    else if (!m->stopped && !uv_is_active((uv_handle_t *)&m->timer))
        uv_timer_start(&m->timer, timer_cb, FLUSH_MS, 0);
}

pgt_meter_t *pgt_meter_new(uv_loop_t *loop, pgt_ledger_t *ledger, const pgt_config_t *cfg)
{
    pgt_meter_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->cache = pgt_fp_cache_new(4096);
    m->history = calloc(HISTORY_SLOTS, sizeof(*m->history));
    m->rels = calloc(REL_MEMO_SLOTS, sizeof(*m->rels));
    if (!m->cache || !m->history || !m->rels) {
        pgt_fp_cache_free(m->cache);
        free(m->history);
        free(m->rels);
        free(m);
        return NULL;
    }
    m->loop = loop;
    m->ledger = ledger;
    pgt_meter_set_prices(m, cfg);
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    return m;
}

void pgt_meter_set_prices(pgt_meter_t *m, const pgt_config_t *cfg)
{
    pgt_pricing_from_config(cfg, &m->prices.price);
    m->prices.history = cfg->estimate_mode != PGT_ESTIMATE_OFF;
}

void pgt_meter_stop(pgt_meter_t *m)
{
    if (m->stopped)
        return;
    m->stopped = true;
    uv_close((uv_handle_t *)&m->timer, NULL);
}

void pgt_meter_free(pgt_meter_t *m)
{
    if (!m)
        return;
    job_t job = {.meter = m, .prices = m->prices, .execs = take_batch(m)};
    run_job(&job);
    m->stats.statements += job.statements;
    free_execs(job.execs);
    PGT_INFO("meter_stopped", "executions=%llu statements=%llu batches=%llu",
             (unsigned long long)m->stats.execs, (unsigned long long)m->stats.statements,
             (unsigned long long)m->stats.batches);
    pgt_fp_cache_free(m->cache);
    free(m->history);
    for (size_t i = 0; i < REL_MEMO_SLOTS; i++)
        free(m->rels[i].json);
    free(m->rels);
    free(m);
}

void pgt_meter_stats(const pgt_meter_t *m, pgt_meter_stats_t *out)
{
    *out = m->stats;
}
