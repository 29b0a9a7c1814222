/* Micro-benchmark of the ledger: one thread submits N records (default
 * 500000) as the event loop would, and the writer thread stores them with
 * their rollups. Prints the sustained rate to the ledger (an SQLite file, or
 * a PostgreSQL URI) and the time each pgt_ledger_submit call takes on the
 * calling thread. Usage: ledger_bench [N] [ledger-path-or-URI] [USERS]:
 * USERS users (default 4) times 200 shapes make the rollup keys a batch
 * touches. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pgtally/ledger.h"

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static unsigned nusers = 4; /* distinct users */

/* A record shaped like a pgbench point lookup. */
static pgt_record_t *make_record(uint64_t i)
{
    pgt_record_t *r = pgt_record_new();
    if (!r)
        abort();
    r->started_us = wall_us();
    r->finished_us = r->started_us + 180;
    r->session_id = i / 100;
    r->backend_pid = 1000 + (int32_t)(i % 64);
    char user[32];
    snprintf(user, sizeof(user), "user%u", (unsigned)((i / 7) % nusers));
    r->user = strdup(user);
    r->database = strdup("pgbench");
    r->application = strdup("pgbench");
    r->client_addr = strdup("127.0.0.1:54321");
    r->tags_json = strdup("{\"team\":\"bench\"}");
    /* 200 shapes: about a day's worth of distinct rollup rows per batch. */
    r->fingerprint = 0x9e3779b97f4a7c15ull * (i % 200 + 1);
    r->normalized = strdup("SELECT abalance FROM pgbench_accounts WHERE aid = $1");
    r->kind = strdup("select");
    r->protocol = strdup("extended");
    r->compute_s = 0.00018;
    r->rows = 1;
    r->bytes_out = 80;
    r->cost_micro = 1;
    return r;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Prints the rate and the latency distribution (sorts lat). */
static void report(uint32_t *lat, size_t n, const pgt_ledger_stats_t *s, int64_t t0,
                   int64_t t_submitted, int64_t t_written, int64_t in_submit)
{
    qsort(lat, n, sizeof(*lat), cmp_u32);
    double secs = (double)(t_written - t0) / 1e9;
    printf("records            %zu\n", n);
    printf("written            %llu in %llu batches (overflowed %llu)\n",
           (unsigned long long)s->written, (unsigned long long)s->batches,
           (unsigned long long)s->overflowed);
    printf("submit loop        %.3f s (including building the records)\n",
           (double)(t_submitted - t0) / 1e9);
    printf("all written after  %.3f s\n", secs);
    printf("records/s          %.0f\n", (double)n / secs);
    size_t slow = 0;
    while (slow < n && lat[n - 1 - slow] > 100000)
        slow++;
    printf("submit latency     mean %.3f us, p50 %.3f us, p99 %.3f us, p99.9 %.3f us, "
           "max %.1f us\n",
           (double)in_submit / (double)n / 1e3, lat[n / 2] / 1e3, lat[n * 99 / 100] / 1e3,
           lat[n * 999 / 1000] / 1e3, lat[n - 1] / 1e3);
    printf("submits > 100 us   %zu\n", slow);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 500000;
    char path[400];
    snprintf(path, sizeof(path), "%s", argc > 2 ? argv[2] : "/tmp/pgtally-ledger-bench.db");
    bool lite = pgt_db_backend_of(path) == PGT_DB_SQLITE;
    if (argc > 3 && (nusers = (unsigned)strtoul(argv[3], NULL, 10)) == 0)
        nusers = 1;
    if (n == 0) {
        fprintf(stderr, "usage: ledger_bench [N > 0] [ledger-path]\n");
        return 2;
    }
    uint32_t *lat = malloc(n * sizeof(*lat));
    char err[512];
    pgt_ledger_opts_t opts = {.where = {.ledger = path},
                              .spool_path = "/tmp/pgtally-ledger-bench.spool",
                              .instance = wall_us()};
    pgt_ledger_t *l = lat ? pgt_ledger_open(&opts, err, sizeof(err)) : NULL;
    if (!l) {
        char shown[512];
        pgt_db_describe(path, shown, sizeof(shown));
        fprintf(stderr, "ledger_bench: %s: %s\n", shown, lat ? err : "out of memory");
        return 1;
    }
    int64_t t0 = now_ns(), in_submit = 0;
    for (size_t i = 0; i < n; i++) {
        pgt_record_t *r = make_record(i);
        int64_t a = now_ns();
        pgt_ledger_submit(l, r);
        int64_t d = now_ns() - a;
        in_submit += d;
        lat[i] = (uint32_t)(d > UINT32_MAX ? UINT32_MAX : d);
    }
    int64_t t_submitted = now_ns();
    pgt_ledger_stats_t s;
    do {
        usleep(1000);
        pgt_ledger_stats(l, &s);
    } while (s.written < n && !s.failing);
    int64_t t_written = now_ns();
    pgt_ledger_close(l);
    report(lat, n, &s, t0, t_submitted, t_written, in_submit);
    free(lat);
    if (argc <= 2 && lite) {
        unlink(path);
        snprintf(err, sizeof(err), "%s-wal", path);
        unlink(err);
        snprintf(err, sizeof(err), "%s-shm", path);
        unlink(err);
    }
    return s.written == n ? 0 : 1;
}
