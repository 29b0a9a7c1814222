/* Micro-benchmark of statement shapes: µs per call of libpg_query's
 * fingerprint and normalize, and of pgt_fp_split, pgt_fp_shape (cold, new
 * text of a known shape, identical text) and pgt_tags_json, on a pgbench
 * statement and a 40-line analytical query. Usage: fp_bench [iterations]. */
#include <pg_query.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgtally/fingerprint.h"
#include "pgtally/tags.h"

static const char pgbench_sql[] =
    "UPDATE pgbench_accounts SET abalance = abalance + -4129 WHERE aid = 52139";

static const char analytic_sql[] =
    "WITH recent AS (\n"
    "  SELECT o.customer_id, o.order_id, o.created_at, o.total_amount\n"
    "  FROM orders o\n"
    "  WHERE o.created_at >= DATE '2024-01-01' AND o.status IN ('paid', 'shipped', 'done')\n"
    "), per_customer AS (\n"
    "  SELECT r.customer_id, count(*) AS n_orders, sum(r.total_amount) AS revenue,\n"
    "         avg(r.total_amount) AS avg_order, max(r.created_at) AS last_order\n"
    "  FROM recent r\n"
    "  GROUP BY r.customer_id\n"
    "  HAVING count(*) > 3\n"
    "), ranked AS (\n"
    "  SELECT pc.*, c.region, c.segment,\n"
    "         rank() OVER (PARTITION BY c.region ORDER BY pc.revenue DESC) AS region_rank,\n"
    "         percent_rank() OVER (ORDER BY pc.avg_order) AS avg_pct\n"
    "  FROM per_customer pc\n"
    "  JOIN customers c ON c.id = pc.customer_id\n"
    "  WHERE c.country = 'DE' AND c.deleted_at IS NULL\n"
    ")\n"
    "SELECT r.region, r.segment,\n"
    "       count(*) AS customers,\n"
    "       sum(r.revenue) AS revenue,\n"
    "       round(avg(r.avg_order)::numeric, 2) AS avg_order,\n"
    "       max(r.last_order) AS last_order,\n"
    "       sum(CASE WHEN r.region_rank <= 10 THEN r.revenue ELSE 0 END) AS top10_revenue,\n"
    "       coalesce(sum(p.amount), 0) AS refunds\n"
    "FROM ranked r\n"
    "LEFT JOIN LATERAL (\n"
    "  SELECT sum(rf.amount) AS amount\n"
    "  FROM refunds rf\n"
    "  WHERE rf.customer_id = r.customer_id\n"
    "    AND rf.created_at BETWEEN now() - interval '90 days' AND now()\n"
    ") p ON true\n"
    "WHERE r.avg_pct > 0.5\n"
    "  AND r.segment NOT IN ('internal', 'test')\n"
    "GROUP BY ROLLUP (r.region, r.segment)\n"
    "HAVING sum(r.revenue) > 10000\n"
    "ORDER BY revenue DESC NULLS LAST, r.region\n"
    "LIMIT 100 OFFSET 0 /*controller='reports',action='regions'*/";

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* The i-th variant of sql: its last digit run replaced, so the text is new
 * but the fingerprint is not. Returns the length written into buf. */
static size_t variant(const char *sql, int i, char *buf, size_t cap)
{
    const char *d = strstr(sql, "10000");
    if (!d)
        d = strstr(sql, "52139");
    size_t head = (size_t)(d - sql);
    return (size_t)snprintf(buf, cap, "%.*s%d%s", (int)head, sql, 10000 + i, d + 5);
}

/* One line of output: name, query, µs per call. */
static void report(const char *what, const char *query, double t0, int n)
{
    printf("%-28s %-9s %9.2f us\n", what, query, (now_us() - t0) / n);
}

/* Times the raw libpg_query calls and the module's functions on sql. */
static void bench_query(const char *name, const char *sql, int n)
{
    size_t len = strlen(sql);
    pgt_shape_t sh;
    double t0 = now_us();
    for (int i = 0; i < n; i++)
        pg_query_free_fingerprint_result(pg_query_fingerprint(sql));
    report("pg_query_fingerprint", name, t0, n);
    t0 = now_us();
    for (int i = 0; i < n; i++)
        pg_query_free_normalize_result(pg_query_normalize(sql));
    report("pg_query_normalize", name, t0, n);
    pgt_stmt_t st[8];
    t0 = now_us();
    for (int i = 0; i < n; i++)
        if (pgt_fp_split(sql, st, 8) != 1)
            abort();
    report("pgt_fp_split", name, t0, n);
    /* Cold: a fresh cache each time, so fingerprint, classify and normalize. */
    t0 = now_us();
    for (int i = 0; i < n; i++) {
        pgt_fp_cache_t *c = pgt_fp_cache_new(16);
        if (!c || pgt_fp_shape(c, sql, len, &sh) != 0)
            abort();
        pgt_fp_cache_free(c);
    }
    report("shape cold", name, t0, n);
    /* New texts of a known shape (other constants): fingerprint and classify. */
    char *vars = malloc((size_t)n * 4096);
    size_t *vlen = malloc((size_t)n * sizeof(*vlen));
    pgt_fp_cache_t *c = pgt_fp_cache_new(4096);
    if (!vars || !vlen || !c || pgt_fp_shape(c, sql, len, &sh) != 0)
        abort();
    for (int i = 0; i < n; i++)
        vlen[i] = variant(sql, i + 1, vars + (size_t)i * 4096, 4096);
    t0 = now_us();
    for (int i = 0; i < n; i++)
        if (pgt_fp_shape(c, vars + (size_t)i * 4096, vlen[i], &sh) != 0)
            abort();
    report("shape new text, known fp", name, t0, n);
    /* The identical text again: the exact-text cache. */
    t0 = now_us();
    for (int i = 0; i < n; i++)
        if (pgt_fp_shape(c, sql, len, &sh) != 0)
            abort();
    report("shape identical text", name, t0, n);
    t0 = now_us();
    for (int i = 0; i < n; i++)
        free(pgt_tags_json(sql, len));
    report("pgt_tags_json", name, t0, n);
    pgt_fp_cache_free(c);
    free(vars);
    free(vlen);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 200;
    if (n <= 0)
        n = 200;
    /* The first cache tunes malloc for the whole process. */
    pgt_fp_cache_free(pgt_fp_cache_new(1));
    bench_query("pgbench", pgbench_sql, n);
    bench_query("analytic", analytic_sql, n);
    return 0;
}
