/* Unit tests of the metrics registry: counting records by status and
 * labels, the cap on label values ("other"), histogram buckets, refusals
 * and cancels by SQLSTATE, and escaping in the text exposition format. */
#include <stdlib.h>
#include <string.h>

#include "pgtally/metrics.h"
#include "task.h"

/* A record on the stack; the strings are the caller's. */
static pgt_record_t rec(const char *user, const char *app, pgt_query_status_t status,
                        double seconds, int64_t cost_micro, const char *sqlstate)
{
    pgt_record_t r = {.user = (char *)user,
                      .application = (char *)app,
                      .database = (char *)"db",
                      .status = status,
                      .compute_s = seconds,
                      .cost_micro = cost_micro,
                      .est_cost_micro = -1};
    snprintf(r.sqlstate, sizeof(r.sqlstate), "%s", sqlstate);
    return r;
}

/* Whether the rendered text holds this exact line. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

static char *render(pgt_metrics_t *m)
{
    pgt_buf_t b = {0};
    pgt_metrics_render(m, &b);
    CHECK(!b.failed);
    return pgt_buf_take(&b);
}

static void test_counts_and_cap(void)
{
    pgt_metrics_t *m = pgt_metrics_new(2, "EUR");
    pgt_record_t rs[] = {
        rec("alice", "psql", PGT_QUERY_OK, 0.001, 1500000, ""),
        rec("alice", "psql", PGT_QUERY_OK, 0.003, 250, ""),
        rec("bob", "psql", PGT_QUERY_ERROR, 0.5, 1, "42P01"),
        rec("carol", "psql", PGT_QUERY_OK, 100.0, 3, ""),
        rec("dave", "psql", PGT_QUERY_OK, 0.0, 0, ""),
        rec("alice", "psql", PGT_QUERY_REFUSED, 0, 0, "54000"),
        rec("alice", "psql", PGT_QUERY_BUDGET_CANCELLED, 1.0, 10, "57014"),
    };
    pgt_record_t *ptrs[8] = {NULL};
    for (size_t i = 0; i < 7; i++)
        ptrs[i + 1] = &rs[i];
    pgt_metrics_observe(m, ptrs, 8); /* NULL entries are skipped */
    pgt_metrics_sessions_add(m, 1);
    pgt_metrics_sessions_add(m, 1);
    pgt_metrics_sessions_add(m, -1);
    char *t = render(m);
    CHECK(has_line(t, "pgtally_statements_total{status=\"ok\",user=\"alice\",application="
                      "\"psql\",database=\"db\"} 2"));
    CHECK(has_line(t, "pgtally_statements_total{status=\"error\",user=\"bob\",application="
                      "\"psql\",database=\"db\"} 1"));
    /* carol and dave came after the cap of 2 users. */
    CHECK(has_line(t, "pgtally_statements_total{status=\"ok\",user=\"other\",application="
                      "\"psql\",database=\"db\"} 2"));
    CHECK(strstr(t, "carol") == NULL);
    CHECK(has_line(t, "pgtally_cost_total{status=\"ok\",user=\"alice\",application="
                      "\"psql\",database=\"db\"} 1.500250"));
    CHECK(has_line(t, "# HELP pgtally_cost_total Cost of the statements metered, in EUR."));
    CHECK(has_line(t, "pgtally_refusals_total{sqlstate=\"54000\"} 1"));
    CHECK(has_line(t, "pgtally_cancels_total{status=\"budget_cancelled\",sqlstate=\"57014\"} 1"));
    /* Six ran (the refusal did not): 0 and 0.001 are <= 2^-9, 100 s is
     * above every bound. */
    CHECK(has_line(t, "pgtally_statement_duration_seconds_bucket{le=\"0.001953125\"} 2"));
    CHECK(has_line(t, "pgtally_statement_duration_seconds_bucket{le=\"64\"} 5"));
    CHECK(has_line(t, "pgtally_statement_duration_seconds_bucket{le=\"+Inf\"} 6"));
    CHECK(has_line(t, "pgtally_statement_duration_seconds_count 6"));
    CHECK(has_line(t, "pgtally_statement_cost_count 6"));
    CHECK(has_line(t, "pgtally_sessions 1"));
    CHECK(strstr(t, "pgtally_ledger_queue_depth") == NULL); /* no ledger set */
    free(t);
    pgt_metrics_free(m);
}

static void test_estimate_error(void)
{
    pgt_metrics_t *m = pgt_metrics_new(10, "USD");
    pgt_record_t a = rec("u", "", PGT_QUERY_OK, 0.1, 1000, "");
    pgt_record_t b = rec("u", "", PGT_QUERY_OK, 0.1, 1000, "");
    pgt_record_t c = rec("u", "", PGT_QUERY_OK, 0.1, 1000, "");
    a.est_cost_micro = 4000; /* 4 times too high: log2 = 2 */
    b.est_cost_micro = 1000; /* exact */
    c.est_cost_micro = -1;   /* none: not observed */
    pgt_record_t *ptrs[] = {&a, &b, &c};
    pgt_metrics_observe(m, ptrs, 3);
    char *t = render(m);
    CHECK(has_line(t, "pgtally_estimate_error_log2_bucket{le=\"-1\"} 0"));
    CHECK(has_line(t, "pgtally_estimate_error_log2_bucket{le=\"0\"} 1"));
    CHECK(has_line(t, "pgtally_estimate_error_log2_bucket{le=\"2\"} 2"));
    CHECK(has_line(t, "pgtally_estimate_error_log2_count 2"));
    CHECK(has_line(t, "pgtally_estimate_error_log2_sum 2"));
    free(t);
    pgt_metrics_free(m);
}

static void test_escape(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"plain", "plain"},
        {"a\"b", "a\\\"b"},
        {"back\\slash", "back\\\\slash"},
        {"two\nlines", "two\\nlines"},
        {"", ""},
        {"tab\tstays", "tab\tstays"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgt_buf_t b = {0};
        pgt_metrics_escape(&b, cases[i].in);
        char *s = pgt_buf_take(&b);
        CHECK_STR(s, cases[i].out);
        free(s);
    }
}

int main(void)
{
    test_counts_and_cap();
    test_estimate_error();
    test_escape();
    TASK_DONE();
}
