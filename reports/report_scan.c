/* The daily report's scan: one pass over a slice of a day in the ledger's
 * covering index (queries_started_report), summing per (user, shape) in
 * hash tables and keeping a heap of the most expensive statements. Each
 * row goes to an aggregate SQL function instead of being stepped out one
 * by one, which halves the cost per row; slices run in parallel on worker
 * threads, each with its own read-only connection. */
#include "report_scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "pgtally/log.h"

#define ROW_FN "pgt_report_row"
#define ROW_FN_ARGS 7
#define MIN_SLOTS 1024
#define MMAP_BYTES 2147418112LL /* the most SQLite maps: index pages are not copied */
#define BUSY_TIMEOUT_MS 2000

/* ---- Interned names ------------------------------------------------------ */

/* A hash of len bytes, eight at a time (user names are short). */
static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = (uint64_t)len * 0x9e3779b97f4a7c15ull, w;
    for (; len >= 8; s += 8, len -= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
    }
    w = 0;
    memcpy(&w, s, len);
    h = (h ^ w) * 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

static uint64_t hash_pair(uint64_t fp, uint32_t uhash)
{
    uint64_t h = (fp ^ ((uint64_t)uhash * 0x9e3779b97f4a7c15ull)) * 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 31);
}

uint32_t rs_user_hash(const char *s, size_t len)
{
    return (uint32_t)(hash_bytes(s, len) >> 32);
}

/* A slot of the names table: the hash's high half, and id + 1 (0: empty). */
#define SLOT(hash, id) (((hash)&0xFFFFFFFF00000000ull) | ((uint64_t)(id) + 1))
#define SLOT_ID(slot) ((uint32_t)((slot)&0xFFFFFFFFu) - 1)

/* Doubles the names' slot table. Returns 0, or -1 when out of memory. */
static int names_grow(rs_names_t *t)
{
    size_t ns = t->nslots ? t->nslots * 2 : MIN_SLOTS;
    uint64_t *s = calloc(ns, sizeof(*s));
    if (!s)
        return -1;
    for (size_t i = 0; i < t->n; i++) {
        uint64_t h = hash_bytes(t->v[i], t->lens[i]);
        size_t k = h & (ns - 1);
        while (s[k])
            k = (k + 1) & (ns - 1);
        s[k] = SLOT(h, i);
    }
    free(t->slots);
    t->slots = s;
    t->nslots = ns;
    return 0;
}

/* Adds s as id t->n at slot k. Returns the id, or UINT32_MAX. */
static uint32_t names_add(rs_names_t *t, size_t k, uint64_t h, const char *s, size_t len)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        char **v = realloc(t->v, cap * sizeof(*v));
        if (v)
            t->v = v;
        size_t *lens = v ? realloc(t->lens, cap * sizeof(*lens)) : NULL;
        if (!lens)
            return UINT32_MAX;
        t->lens = lens;
        t->cap = cap;
    }
    char *copy = strndup(s, len);
    if (!copy)
        return UINT32_MAX;
    t->v[t->n] = copy;
    t->lens[t->n] = len;
    t->slots[k] = SLOT(h, t->n);
    return (uint32_t)t->n++;
}

uint32_t rs_names_intern(rs_names_t *t, const char *s, size_t len)
{
    if ((t->n + 1) * 2 > t->nslots && names_grow(t) != 0)
        return UINT32_MAX;
    uint64_t h = hash_bytes(s, len);
    size_t k = h & (t->nslots - 1);
    for (; t->slots[k]; k = (k + 1) & (t->nslots - 1)) {
        uint32_t id = SLOT_ID(t->slots[k]);
        if ((t->slots[k] >> 32) == (h >> 32) && t->lens[id] == len && memcmp(t->v[id], s, len) == 0)
            return id;
    }
    return names_add(t, k, h, s, len);
}

void rs_names_free(rs_names_t *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i]);
    free(t->v);
    free(t->lens);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

/* ---- Pairs --------------------------------------------------------------- */

/* Doubles the table, placing each pair by its shape and user hash.
 * Returns 0, or -1 when out of memory. */
static int pairs_grow(rs_pairs_t *t)
{
    size_t ns = t->nslots ? t->nslots * 2 : MIN_SLOTS;
    rs_pair_t *v = malloc(ns * sizeof(*v));
    if (!v)
        return -1;
    for (size_t i = 0; i < ns; i++)
        v[i].user = RS_NO_USER;
    for (size_t i = 0; i < t->nslots; i++) {
        if (t->v[i].user == RS_NO_USER)
            continue;
        size_t k = hash_pair(t->v[i].fp, t->v[i].uhash) & (ns - 1);
        while (v[k].user != RS_NO_USER)
            k = (k + 1) & (ns - 1);
        v[k] = t->v[i];
    }
    free(t->v);
    t->v = v;
    t->nslots = ns;
    return 0;
}

void rs_pairs_prefetch(const rs_pairs_t *t, uint64_t fp, uint32_t uhash)
{
    if (t->nslots)
        __builtin_prefetch(&t->v[hash_pair(fp, uhash) & (t->nslots - 1)], 1);
}

rs_pair_t *rs_pairs_get(rs_pairs_t *t, rs_names_t *names, uint64_t fp, const char *user, size_t len,
                        uint32_t uhash)
{
    if (t->v && !t->nslots)
        return NULL; /* compacted */
    if ((t->n + 1) * 2 > t->nslots && pairs_grow(t) != 0)
        return NULL;
    size_t k = hash_pair(fp, uhash) & (t->nslots - 1);
    for (;; k = (k + 1) & (t->nslots - 1)) {
        rs_pair_t *p = &t->v[k];
        if (p->user == RS_NO_USER)
            break;
        if (p->fp == fp && p->uhash == uhash && names->lens[p->user] == len &&
            memcmp(names->v[p->user], user, len) == 0)
            return p;
    }
    uint32_t id = rs_names_intern(names, user, len);
    if (id == UINT32_MAX)
        return NULL;
    t->v[k] = (rs_pair_t){.fp = fp, .user = id, .uhash = uhash};
    t->n++;
    return &t->v[k];
}

void rs_pairs_compact(rs_pairs_t *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->nslots; i++)
        if (t->v[i].user != RS_NO_USER)
            t->v[n++] = t->v[i];
    t->nslots = 0;
}

void rs_pairs_free(rs_pairs_t *t)
{
    free(t->v);
    memset(t, 0, sizeof(*t));
}

/* ---- The top list -------------------------------------------------------- */

/* Whether a ranks below b: cheaper, or as dear and recorded later. */
static bool worse(const rs_top_t *a, const rs_top_t *b)
{
    if (a->cost != b->cost)
        return a->cost < b->cost;
    return a->id > b->id;
}

static void sift_down(rs_top_t *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(&h[l], &h[m]))
            m = l;
        if (r < n && worse(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        rs_top_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

bool rs_top_offer(rs_acc_t *a, const rs_top_t *s)
{
    if (a->top <= 0)
        return true;
    if (!a->tops && !(a->tops = calloc((size_t)a->top, sizeof(*a->tops))))
        return false;
    if (a->ntops < a->top) {
        /* Sift up: the worst stays at the root. */
        int i = a->ntops++;
        a->tops[i] = *s;
        while (i > 0 && worse(&a->tops[i], &a->tops[(i - 1) / 2])) {
            rs_top_t t = a->tops[i];
            a->tops[i] = a->tops[(i - 1) / 2];
            a->tops[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
    } else if (worse(&a->tops[0], s)) {
        a->tops[0] = *s;
        sift_down(a->tops, a->ntops, 0);
    }
    return true;
}

static int cmp_top(const void *x, const void *y)
{
    const rs_top_t *a = x, *b = y;
    return worse(a, b) ? 1 : worse(b, a) ? -1 : 0;
}

void rs_top_sort(rs_acc_t *a)
{
    if (a->ntops)
        qsort(a->tops, (size_t)a->ntops, sizeof(*a->tops), cmp_top);
}

void rs_acc_free(rs_acc_t *a)
{
    rs_names_free(&a->users);
    rs_pairs_free(&a->pairs);
    free(a->tops);
    free(a->refusals);
    a->tops = NULL;
    a->refusals = NULL;
    a->ntops = 0;
    a->nrefusals = a->cap_refusals = 0;
}

/* ---- The row function ---------------------------------------------------- */

/* The status named s: the first letters of the five names differ. An
 * unknown name counts as an error, as the ledger's reader does. */
static pgt_query_status_t status_of(const unsigned char *s)
{
    switch (s ? s[0] : 0) {
    case 'o':
        return PGT_QUERY_OK;
    case 'c':
        return PGT_QUERY_CANCELLED;
    case 'b':
        return PGT_QUERY_BUDGET_CANCELLED;
    case 'r':
        return PGT_QUERY_REFUSED;
    default:
        return PGT_QUERY_ERROR;
    }
}

static bool add_refusal(rs_acc_t *a, int64_t budget, pgt_query_status_t st, int64_t cost)
{
    size_t i = 0;
    while (i < a->nrefusals && a->refusals[i].budget_id != budget)
        i++;
    if (i == a->nrefusals) {
        if (a->nrefusals == a->cap_refusals) {
            size_t cap = a->cap_refusals ? a->cap_refusals * 2 : 8;
            rs_refusal_t *v = realloc(a->refusals, cap * sizeof(*v));
            if (!v)
                return false;
            a->refusals = v;
            a->cap_refusals = cap;
        }
        a->refusals[a->nrefusals++] = (rs_refusal_t){.budget_id = budget};
    }
    rs_refusal_t *r = &a->refusals[i];
    if (st == PGT_QUERY_REFUSED)
        r->refused++;
    else
        r->cancelled++;
    r->cost += cost;
    return true;
}

/* Adds one statement to the accumulator: arguments cost_micro, user,
 * fingerprint, compute_s, status, budget_id, id. Each column costs about
 * 20 ns a row to decode, so there are no more of them than needed. */
static void row_step(sqlite3_context *ctx, int argc, sqlite3_value **v)
{
    rs_acc_t *a = sqlite3_user_data(ctx);
    (void)argc;
    if (a->failed)
        return;
    /* The pair's slot first, so that it is on its way while the rest is
     * done: the table is larger than the caches. */
    const char *user = (const char *)sqlite3_value_text(v[1]);
    size_t len = (size_t)sqlite3_value_bytes(v[1]);
    user = user ? user : "";
    uint32_t uhash = rs_user_hash(user, len);
    uint64_t fp = a->shapes ? (uint64_t)sqlite3_value_int64(v[2]) : 0;
    rs_pairs_prefetch(&a->pairs, fp, uhash);
    int64_t cost = sqlite3_value_int64(v[0]);
    double compute = sqlite3_value_double(v[3]);
    pgt_query_status_t st = status_of(sqlite3_value_text(v[4]));
    a->statements++;
    a->cost += cost;
    a->compute_s += compute;
    a->by_status[st]++;
    bool budgeted = st == PGT_QUERY_REFUSED || st == PGT_QUERY_BUDGET_CANCELLED;
    if (budgeted && sqlite3_value_type(v[5]) != SQLITE_NULL &&
        !add_refusal(a, sqlite3_value_int64(v[5]), st, cost))
        a->failed = true;
    rs_top_t t = {cost, sqlite3_value_int64(v[6])};
    if (a->top > 0 && !rs_top_offer(a, &t))
        a->failed = true;
    rs_pair_t *p = rs_pairs_get(&a->pairs, &a->users, fp, user, len, uhash);
    if (!p) {
        a->failed = true;
        return;
    }
    p->statements++;
    p->cost += cost;
    p->compute_s += compute;
    if (cost > p->max_cost)
        p->max_cost = cost;
}

static void row_final(sqlite3_context *ctx)
{
    sqlite3_result_null(ctx);
}

/* ---- Scan tasks ---------------------------------------------------------- */

/* Totals of a slice with SQLite's own aggregates, the fastest way. */
static int scan_totals(sqlite3 *db, rs_scan_t *s, char *err, size_t errlen)
{
    static const char sql[] = "SELECT count(*), coalesce(sum(cost_micro), 0), total(compute_s) "
                              "FROM queries WHERE started_at >= ?1 AND started_at < ?2";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading the ledger: %s", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_int64(st, 1, s->from_us);
    sqlite3_bind_int64(st, 2, s->to_us);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        s->acc.statements = sqlite3_column_int64(st, 0);
        s->acc.cost = sqlite3_column_int64(st, 1);
        s->acc.compute_s = sqlite3_column_double(st, 2);
    } else {
        snprintf(err, errlen, "reading the ledger: %s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

int rs_scan_task(sqlite3 *db, void *arg, char *err, size_t errlen)
{
    rs_scan_t *s = arg;
    if (s->kind == RS_SCAN_TOTALS)
        return scan_totals(db, s, err, errlen);
    bool full = s->kind == RS_SCAN_FULL;
    s->acc.shapes = full;
    if (!full)
        s->acc.top = 0;
    /* Unused columns are constants, so SQLite does not decode them. */
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT " ROW_FN "(cost_micro, \"user\", %s, compute_s, status, %s, %s) "
             "FROM queries WHERE started_at >= ?1 AND started_at < ?2",
             full ? "fingerprint" : "0", full && s->version >= 2 ? "budget_id" : "NULL",
             full ? "id" : "0");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_create_function_v2(db, ROW_FN, ROW_FN_ARGS, SQLITE_UTF8, &s->acc, NULL,
                                        row_step, row_final, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, s->from_us);
        sqlite3_bind_int64(st, 2, s->to_us);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            ;
    }
    rs_pairs_compact(&s->acc.pairs);
    if (rc != SQLITE_DONE)
        snprintf(err, errlen, "reading the ledger: %s", sqlite3_errmsg(db));
    else if (s->acc.failed)
        snprintf(err, errlen, "out of memory");
    sqlite3_finalize(st);
    /* Leave the connection as it was (it may be the caller's). */
    (void)sqlite3_create_function_v2(db, ROW_FN, ROW_FN_ARGS, SQLITE_UTF8, NULL, NULL, NULL, NULL,
                                     NULL);
    return rc == SQLITE_DONE && !s->acc.failed ? 0 : -1;
}

/* ---- The pool ------------------------------------------------------------ */

/* Tasks shared by the workers. */
typedef struct pool {
    const char *path; /* the ledger file */
    rs_task_t *tasks; /* every task */
    size_t n;         /* tasks */
    size_t next;      /* the next task to take */
    uv_mutex_t mu;    /* guards next */
} pool_t;

/* Runs one task on db, logging how long it took at debug level. */
static void run_task(sqlite3 *db, rs_task_t *t)
{
    uint64_t t0 = uv_hrtime();
    t->rc = t->fn(db, t->arg, t->err, sizeof(t->err));
    PGT_DEBUG("report_task", "task=%s ms=%.1f rc=%d", t->what ? t->what : "?",
              (double)(uv_hrtime() - t0) / 1e6, t->rc);
}

/* Takes the next task, or returns NULL when none is left. */
static rs_task_t *take(pool_t *p)
{
    uv_mutex_lock(&p->mu);
    rs_task_t *t = p->next < p->n ? &p->tasks[p->next++] : NULL;
    uv_mutex_unlock(&p->mu);
    return t;
}

/* Opens a read-only connection for a worker. Returns it, or NULL with the
 * cause in err. */
static sqlite3 *worker_open(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "opening the ledger: %s", db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    char pragma[64];
    snprintf(pragma, sizeof(pragma), "PRAGMA mmap_size = %lld", MMAP_BYTES);
    (void)sqlite3_exec(db, pragma, NULL, NULL, NULL);
    return db;
}

static void worker_main(void *arg)
{
    pool_t *p = arg;
    char err[256];
    sqlite3 *db = worker_open(p->path, err, sizeof(err));
    for (rs_task_t *t; (t = take(p)) != NULL;) {
        if (!db) {
            t->rc = -1;
            snprintf(t->err, sizeof(t->err), "%s", err);
            continue;
        }
        run_task(db, t);
    }
    sqlite3_close(db);
}

/* Runs every task on db in this thread. */
static void run_inline(sqlite3 *db, rs_task_t *tasks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        run_task(db, &tasks[i]);
}

int rs_run(sqlite3 *db, rs_task_t *tasks, size_t n, int threads, char *err, size_t errlen)
{
    const char *path = sqlite3_db_filename(db, "main");
    for (size_t i = 0; i < n; i++) {
        tasks[i].rc = -1;
        snprintf(tasks[i].err, sizeof(tasks[i].err), "not run");
    }
    if (!path || !path[0] || threads <= 1 || n <= 1) {
        run_inline(db, tasks, n);
    } else {
        pool_t p = {.path = path, .tasks = tasks, .n = n};
        uv_thread_t tids[16];
        int started = 0;
        if (uv_mutex_init(&p.mu) != 0) {
            snprintf(err, errlen, "cannot make a mutex");
            return -1;
        }
        for (int i = 0; i < threads && i < 16 && (size_t)i < n; i++)
            started += uv_thread_create(&tids[started], worker_main, &p) == 0;
        if (!started) /* no thread: do the work here */
            run_inline(db, tasks, n);
        for (int i = 0; i < started; i++)
            uv_thread_join(&tids[i]);
        uv_mutex_destroy(&p.mu);
    }
    for (size_t i = 0; i < n; i++) {
        if (tasks[i].rc != 0) {
            snprintf(err, errlen, "%s", tasks[i].err);
            return -1;
        }
    }
    return 0;
}
