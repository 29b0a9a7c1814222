/* Unit tests of the estimator's choice to explain: a new shape is
 * explained, a cheap stable one is not, a slow one is explained again on
 * every run only while its EXPLAIN is a small part of its run (under load
 * a cheap lookup looks slow, and so does its EXPLAIN), and explain_above =
 * 0 explains always. */
#include <math.h>
#include <stdlib.h>

#include "pgtally/estimator.h"
#include "task.h"

static const char SQL[] = "SELECT abalance FROM pgbench_accounts WHERE aid = 42";

/* Plans SQL; returns whether an EXPLAIN was asked for. When it was, it
 * answers it (planner cost 8.3, taking explain_s) and the statement runs
 * for compute_s. */
static bool run_once(pgt_estimator_t *e, double explain_s, double compute_s)
{
    pgt_estimate_t est;
    char *explain =
        pgt_estimator_plan(e, "bench", SQL, sizeof(SQL) - 1, PGT_EXPLAIN_IF_WORTH, &est);
    CHECK(est.key != 0);
    if (explain) {
        pgt_plan_t plan = {.total_cost = 8.3, .rows = 1, .width = 4};
        pgt_estimator_explained(e, &est, &plan, explain_s);
    }
    pgt_estimator_learn(e, &est, compute_s, 80);
    free(explain);
    return explain != NULL;
}

static pgt_estimator_t *estimator(int explain_above_ms)
{
    pgt_config_t *cfg = pgt_config_new();
    cfg->estimate_mode = PGT_ESTIMATE_EXPLAIN;
    cfg->estimate_explain_above_ms = explain_above_ms;
    pgt_estimator_t *e = pgt_estimator_new(cfg);
    pgt_config_free(cfg);
    return e;
}

static void test_cheap_stable_shape(void)
{
    /* Explained until its spread is measured (5 runs), then from history. */
    pgt_estimator_t *e = estimator(10);
    for (int i = 0; i < 5; i++)
        CHECK(run_once(e, 0.0001, 0.0002));
    for (int i = 0; i < 50; i++)
        CHECK(!run_once(e, 0.0001, 0.0002));
    pgt_estimator_free(e);
}

static void test_slow_shape(void)
{
    /* 2 s runs, 1 ms EXPLAINs: explained every time. */
    pgt_estimator_t *e = estimator(10);
    for (int i = 0; i < 10; i++)
        CHECK(run_once(e, 0.001, 2.0));
    pgt_estimator_free(e);
}

static void test_slow_because_queued(void)
{
    /* A lookup that waits 40 ms for the CPU, and whose EXPLAIN waits as
     * long: explained once, then estimated from history. */
    pgt_estimator_t *e = estimator(10);
    for (int i = 0; i < 5; i++)
        CHECK(run_once(e, 0.040, 0.045));
    int explained = 0;
    for (int i = 0; i < 50; i++)
        explained += run_once(e, 0.040, 0.045);
    CHECK_INT(explained, 0);
    /* Once its runs are long next to its EXPLAIN (the moving average gets
     * there in a few runs), it is explained again. */
    explained = 0;
    for (int i = 0; i < 5; i++)
        explained += run_once(e, 0.001, 2.0);
    CHECK(explained > 0);
    pgt_estimator_free(e);
}

static void test_explain_above_zero(void)
{
    pgt_estimator_t *e = estimator(0);
    for (int i = 0; i < 10; i++)
        CHECK(run_once(e, 0.040, 0.045));
    pgt_estimator_free(e);
}

/* A shape whose constants move its planner cost 1..1000x and whose time
 * follows cost^1.3 at 3 us per unit: the model, the shape's offset and its
 * slope learn it; estimates end within 25% and inside their interval. */
static void test_model_learns(void)
{
    pgt_config_t *cfg = pgt_config_new();
    cfg->estimate_mode = PGT_ESTIMATE_EXPLAIN;
    cfg->price_compute_second_micro = 1000000; /* cost = seconds */
    cfg->price_gib_micro = 0;
    pgt_estimator_t *e = pgt_estimator_new(cfg);
    pgt_config_free(cfg);
    static const char q[] = "SELECT sum(amount) FROM sales WHERE day BETWEEN 1 AND 30";
    double worst_late = 0;
    int inside = 0;
    for (int i = 0; i < 30; i++) {
        double cost = 100 * pow(10, (i * 7 % 30) / 10.0);
        double actual = 3e-6 * pow(cost, 1.3);
        pgt_estimate_t est;
        char *sql = pgt_estimator_plan(e, "db", q, sizeof(q) - 1, PGT_EXPLAIN_IF_WORTH, &est);
        CHECK(sql != NULL); /* its spread never vouches: explained every run */
        pgt_plan_t plan = {.total_cost = cost, .rows = 1, .width = 8};
        plan.family_cost[PGT_PLAN_F_SCAN] = cost;
        pgt_estimator_explained(e, &est, &plan, 0.0001);
        CHECK(est.low_micro <= est.cost_micro && est.cost_micro <= est.high_micro);
        double err = fabs(log((double)est.cost_micro / 1e6 / actual));
        if (i >= 20) {
            worst_late = err > worst_late ? err : worst_late;
            inside += est.low_micro <= actual * 1e6 && actual * 1e6 <= est.high_micro;
        }
        pgt_estimator_learn(e, &est, actual, 0);
        free(sql);
    }
    CHECK(worst_late < log(1.25));
    CHECK(inside >= 8);
    pgt_estimator_free(e);
}

/* With [guard] on, even a cheap stable shape is explained on every run. */
static void test_guard_explains_always(void)
{
    pgt_config_t *cfg = pgt_config_new();
    cfg->estimate_mode = PGT_ESTIMATE_EXPLAIN;
    cfg->guard_max_join_rows = 1e9;
    pgt_estimator_t *e = pgt_estimator_new(cfg);
    pgt_config_free(cfg);
    for (int i = 0; i < 20; i++)
        CHECK(run_once(e, 0.0001, 0.0002));
    pgt_estimator_free(e);
}

int main(void)
{
    test_model_learns();
    test_guard_explains_always();
    test_cheap_stable_shape();
    test_slow_shape();
    test_slow_because_queued();
    test_explain_above_zero();
    TASK_DONE();
}
