/* Unit tests of the journal: executions written and read back whole (also
 * across the ring's end), the done mark freeing space, a full ring refusing
 * instead of overwriting, a second process getting a file of its own, and
 * a reopened file keeping exactly what was not done. */
#include "pgtally/journal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "task.h"

static char dir[] = "/tmp/pgtally-journal-XXXXXX";

static const char *tmp_path(const char *name)
{
    static char buf[256];
    snprintf(buf, sizeof(buf), "%s/%s", dir, name);
    return buf;
}

/* An execution of text with n completions costing 1..n. */
static pgt_exec_t *make_exec(const char *text, int n, int64_t seq)
{
    pgt_exec_t *e = calloc(1, sizeof(*e));
    e->attr = pgt_attr_new(42, "alice", "warehouse", "psql", "127.0.0.1:5000");
    e->attr->backend_pid = 777;
    e->text = pgt_text_new(text, strlen(text));
    e->done = calloc((size_t)n, sizeof(pgt_done_t));
    e->ndone = e->done_cap = n;
    for (int i = 0; i < n; i++) {
        e->done[i].rows = i + 1;
        e->done[i].status = PGT_QUERY_OK;
        snprintf(e->done[i].sqlstate, sizeof(e->done[i].sqlstate), "%s", i ? "22012" : "");
    }
    e->extended = n == 1;
    e->instance = 9;
    e->seq = seq;
    e->sent_us = 1000 + seq;
    e->est.key = 5;
    e->est.planner_cost = 1.5;
    return e;
}

/* What replay hands back, kept for checks. */
typedef struct seen {
    pgt_exec_t *e[64]; /* executions, in order */
    int n;             /* how many */
} seen_t;

static void keep_cb(pgt_exec_t *e, void *arg)
{
    seen_t *s = arg;
    if (s->n < 64)
        s->e[s->n++] = e;
    else
        pgt_exec_free(e);
}

static void seen_free(seen_t *s)
{
    for (int i = 0; i < s->n; i++)
        pgt_exec_free(s->e[i]);
    s->n = 0;
}

static void test_roundtrip_and_wrap(void)
{
    char err[256];
    const char *path = tmp_path("a.journal");
    pgt_journal_t *j = pgt_journal_open(path, 6144, err, sizeof(err));
    CHECK(j != NULL);
    if (!j)
        return;
    uint64_t ends[40];
    /* ~220 bytes each: 40 of them go round a 6 KiB ring once, as entries
     * become done behind them. */
    for (int i = 0; i < 40; i++) {
        pgt_exec_t *e = make_exec("SELECT count(*) FROM orders WHERE id = $1", 1 + i % 3, 1 + i);
        ends[i] = pgt_journal_append(j, e);
        CHECK(ends[i] != 0);
        pgt_exec_free(e);
        if (i >= 10)
            pgt_journal_done(j, ends[i - 10]);
    }
    pgt_journal_close(j);
    /* A new process finds the 10 not done, whole, in order. */
    j = pgt_journal_open(path, 6144, err, sizeof(err));
    CHECK(j != NULL);
    if (!j)
        return;
    seen_t s = {0};
    uint64_t damaged = 9;
    CHECK_INT(pgt_journal_replay(j, keep_cb, &s, &damaged), 10);
    CHECK_INT(damaged, 0);
    CHECK_INT(s.n, 10);
    for (int k = 0; k < s.n; k++) {
        int i = 30 + k;
        pgt_exec_t *e = s.e[k];
        CHECK_INT(e->seq, 1 + i);
        CHECK_INT(e->instance, 9);
        CHECK_INT(e->ndone, 1 + i % 3);
        CHECK_INT(e->done[e->ndone - 1].rows, e->ndone);
        CHECK_STR(e->text->data, "SELECT count(*) FROM orders WHERE id = $1");
        CHECK_STR(e->attr->user, "alice");
        CHECK_STR(e->attr->client_addr, "127.0.0.1:5000");
        CHECK_INT(e->attr->backend_pid, 777);
        CHECK_INT(e->attr->session_id, 42);
        CHECK_INT(e->sent_us, 1001 + i);
        CHECK(e->extended == (e->ndone == 1));
        CHECK(e->est.planner_cost == 1.5);
    }
    seen_free(&s);
    pgt_journal_reset(j);
    CHECK_INT(pgt_journal_replay(j, keep_cb, &s, &damaged), 0);
    pgt_journal_close(j);
}

static void test_full_ring_refuses(void)
{
    char err[256];
    pgt_journal_t *j = pgt_journal_open(tmp_path("full.journal"), 1024, err, sizeof(err));
    CHECK(j != NULL);
    if (!j)
        return;
    char big[700];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    pgt_exec_t *e = make_exec(big, 1, 1);
    uint64_t first = pgt_journal_append(j, e);
    CHECK(first != 0);
    /* The second does not fit until the first is done. */
    CHECK_INT(pgt_journal_append(j, e), 0);
    pgt_journal_stats_t st;
    pgt_journal_stats(j, &st);
    CHECK_INT(st.full, 1);
    pgt_journal_done(j, first);
    CHECK(pgt_journal_append(j, e) != 0);
    /* A done mark beyond what was written is ignored. */
    pgt_journal_done(j, UINT64_MAX);
    pgt_journal_stats(j, &st);
    CHECK(st.pending > 0);
    pgt_exec_free(e);
    pgt_journal_close(j);
}

static void test_second_process_gets_its_own_file(void)
{
    char err[256];
    const char *path = tmp_path("shared.journal");
    pgt_journal_t *a = pgt_journal_open(path, 4096, err, sizeof(err));
    pgt_journal_t *b = pgt_journal_open(path, 4096, err, sizeof(err));
    CHECK(a != NULL && b != NULL);
    if (a && b) {
        CHECK_STR(pgt_journal_path(a), path);
        char want[300];
        snprintf(want, sizeof(want), "%s.2", path);
        CHECK_STR(pgt_journal_path(b), want);
    }
    pgt_journal_close(a);
    pgt_journal_close(b);
}

static void test_damaged_header_is_reset(void)
{
    char err[256];
    const char *path = tmp_path("junk.journal");
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 4096 + 4096; i++)
        fputc(0xAB, f);
    fclose(f);
    pgt_journal_t *j = pgt_journal_open(path, 4096, err, sizeof(err));
    CHECK(j != NULL);
    seen_t s = {0};
    uint64_t damaged;
    if (j)
        CHECK_INT(pgt_journal_replay(j, keep_cb, &s, &damaged), 0);
    pgt_journal_close(j);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    test_roundtrip_and_wrap();
    test_full_ring_refuses();
    test_second_process_gets_its_own_file();
    test_damaged_header_is_reset();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    TASK_DONE();
}
