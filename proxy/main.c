/* pgtally's entry point: reads the command line and the config file, then
 * runs the proxy on one libuv loop until it is told to stop. */
#include <getopt.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <unistd.h>

#include "pgtally/alerts.h"
#include "pgtally/budget.h"
#include "pgtally/config.h"
#include "pgtally/period.h"
#include "pgtally/ledger.h"
#include "pgtally/estimator.h"
#include "pgtally/meter.h"
#include "pgtally/journal.h"
#include "pgtally/log.h"
#include "pgtally/metrics.h"
#include "pgtally/metrics_http.h"
#include "pgtally/proxy.h"
#include "pgtally/scheduler.h"

#define MAX_OVERRIDES 64

/* Where the configuration comes from, kept for SIGHUP. */
typedef struct sources {
    const char *path;                  /* -c FILE, or NULL */
    int noverrides;                    /* pairs in keys/values */
    const char *keys[MAX_OVERRIDES];   /* INI names of flags given */
    const char *values[MAX_OVERRIDES]; /* their values */
} sources_t;

/* What the daemon runs beside the proxy: the daily report's delivery. */
typedef struct services {
    pgt_scheduler_t *scheduler; /* on its own thread, or NULL (no channel, no metering) */
    pgt_journal_t *journal;     /* executions not yet durable, or NULL */
    pgt_alerts_t *alerts;       /* alerts to Slack and e-mail, on their own thread, or NULL */
} services_t;

/* Starts the alerts when a channel is configured for them. Returns 0, or
 * -1 with the cause in err. */
static int start_alerts(services_t *sv, const pgt_config_t *cfg, const char *ledger, char *err,
                        size_t errlen)
{
    if (sv->alerts || !pgt_alerts_channels(cfg))
        return 0;
    sv->alerts = pgt_alerts_new(cfg, ledger, err, errlen);
    return sv->alerts ? 0 : -1;
}

/* A statement was refused or is being cancelled: the alerts count it. */
static void services_refused(pgt_proxy_t *p, const pgt_who_t *who, const pgt_verdict_t *v,
                             void *arg)
{
    (void)p;
    pgt_alerts_event(((services_t *)arg)->alerts, who, v);
}

/* Hands reloaded [report] settings to the scheduler, starting it when the
 * first channel appears (metering must be on: the report reads the ledger). */
static void services_reloaded(pgt_proxy_t *p, void *arg)
{
    services_t *sv = arg;
    char err[512];
    const char *ledger = p->cfg->ledger_path ? p->cfg->ledger_path : "pgtally.db";
    if (sv->alerts)
        pgt_alerts_configure(sv->alerts, p->cfg);
    else if (p->ledger && start_alerts(sv, p->cfg, ledger, err, sizeof(err)) != 0)
        PGT_ERROR("alerts_failed", "error=\"%s\"", err);
    if (sv->scheduler)
        pgt_scheduler_configure(sv->scheduler, p->cfg);
    else if (p->ledger && pgt_scheduler_wanted(p->cfg) &&
             !(sv->scheduler = pgt_scheduler_new(
                   p->cfg, p->cfg->ledger_path ? p->cfg->ledger_path : "pgtally.db", err,
                   sizeof(err))))
        PGT_ERROR("scheduler_failed", "error=\"%s\"", err);
}

static void services_stopping(pgt_proxy_t *p, void *arg)
{
    (void)p;
    pgt_scheduler_stop(((services_t *)arg)->scheduler);
    pgt_alerts_stop(((services_t *)arg)->alerts);
}

static pgt_config_t *build_config(void *arg, char *err, size_t errlen)
{
    const sources_t *src = arg;
    pgt_config_t *cfg = pgt_config_new();
    if (!cfg) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (src->path && pgt_config_load_file(cfg, src->path, err, errlen) != 0)
        goto fail;
    for (int i = 0; i < src->noverrides; i++) {
        char msg[512];
        if (pgt_config_set(cfg, src->keys[i], src->values[i], msg, sizeof(msg)) != 0) {
            char flag[64];
            snprintf(flag, sizeof(flag), "%s", src->keys[i]);
            for (char *c = flag; *c; c++)
                if (*c == '_' || *c == '.')
                    *c = '-';
            snprintf(err, errlen, "command line: --%s: %s", flag, msg);
            goto fail;
        }
    }
    if (pgt_config_finish(cfg) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (pgt_config_check(cfg, err, errlen) != 0) {
        if (src->path) {
            char msg[600];
            snprintf(msg, sizeof(msg), "%s: %s", src->path, err);
            snprintf(err, errlen, "%s", msg);
        }
        goto fail;
    }
    return cfg;
fail:
    pgt_config_free(cfg);
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out,
            "pgtally %s: a PostgreSQL proxy that meters what every query costs\n\n"
            "Usage: pgtally [-c FILE] [--KEY VALUE]...\n\n"
            "  -c, --config FILE   read settings from an INI file ([pgtally] section)\n"
            "  -h, --help          show this help and exit\n"
            "  -V, --version       show the version and exit\n\n"
            "Every setting can be given as a flag, which overrides the file:\n",
            PGTALLY_VERSION);
    for (const pgt_config_key_t *k = pgt_config_keys(); k->name; k++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "%s", k->name);
        for (char *c = flag; *c; c++)
            if (*c == '_' || *c == '.')
                *c = '-';
        fprintf(out, "  --%-24s %s\n  %-26s   allowed: %s\n", flag, k->help, "", k->allowed);
    }
    fprintf(out, "\nExample: pgtally --listen 127.0.0.1:6433 --upstream 127.0.0.1:5432\n"
                 "Signals: SIGTERM drains, SIGINT stops at once, SIGHUP reloads the file.\n");
}

/* Fills src from argv. Returns -1 to exit 0 (help, version), -2 on a usage
 * error, 0 to run. */
static int parse_args(int argc, char **argv, sources_t *src)
{
    static struct option opts[MAX_OVERRIDES + 4];
    static char names[MAX_OVERRIDES][64];
    int n = 0;
    const pgt_config_key_t *keys = pgt_config_keys();
    for (int i = 0; keys[i].name && n < MAX_OVERRIDES; i++, n++) {
        snprintf(names[n], sizeof(names[n]), "%s", keys[i].name);
        for (char *c = names[n]; *c; c++)
            if (*c == '_' || *c == '.')
                *c = '-';
        opts[n] = (struct option){names[n], required_argument, NULL, 1000 + i};
    }
    opts[n++] = (struct option){"config", required_argument, NULL, 'c'};
    opts[n++] = (struct option){"help", no_argument, NULL, 'h'};
    opts[n++] = (struct option){"version", no_argument, NULL, 'V'};
    opts[n] = (struct option){NULL, 0, NULL, 0};
    int c;
    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        if (c == 'c')
            src->path = optarg;
        else if (c == 'h') {
            usage(stdout);
            return -1;
        } else if (c == 'V') {
            printf("pgtally %s\n", PGTALLY_VERSION);
            return -1;
        } else if (c >= 1000 && src->noverrides < MAX_OVERRIDES) {
            src->keys[src->noverrides] = keys[c - 1000].name;
            src->values[src->noverrides] = optarg;
            src->noverrides++;
        } else {
            fprintf(stderr, "Try 'pgtally --help' for the list of options.\n");
            return -2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pgtally: unexpected argument '%s'; try 'pgtally --help'\n", argv[optind]);
        return -2;
    }
    return 0;
}

/* Meters what an earlier process journaled and did not live to make
 * durable: its executions, with their record ids, so the ledger keeps each
 * record once. */
static void replay_cb(pgt_exec_t *e, void *arg)
{
    pgt_meter_replay(arg, e);
}

/* Opens the journal beside the spool, meters what it holds, waits until
 * those records are durable, and journals every execution from now on.
 * Returns the journal, or NULL (logged) to run without one. */
static pgt_journal_t *open_journal(pgt_meter_t *m, pgt_ledger_t *l)
{
    char path[4096], err[512];
    snprintf(path, sizeof(path), "%s.journal", pgt_ledger_spool_path(l));
    pgt_journal_t *j = pgt_journal_open(path, 0, err, sizeof(err));
    if (!j) {
        PGT_WARN("journal_unavailable",
                 "error=\"%s\" hint=\"records still in memory are lost if pgtally is killed\"",
                 err);
        return NULL;
    }
    uint64_t damaged = 0, n = pgt_journal_replay(j, replay_cb, m, &damaged);
    if (n || damaged) {
        int rc = pgt_ledger_sync(l, 30000);
        PGT_INFO("journal_replayed", "path=\"%s\" executions=%llu damaged=%llu durable=%s",
                 pgt_journal_path(j), (unsigned long long)n, (unsigned long long)damaged,
                 rc == 0 ? "yes" : "no");
        if (rc != 0) {
            /* Keep the entries for the next start rather than lose them. */
            pgt_journal_close(j);
            return NULL;
        }
    }
    pgt_journal_reset(j);
    pgt_meter_set_journal(m, j);
    pgt_ledger_set_journal(l, j);
    return j;
}

/* Opens the ledger and starts the meter. Returns 0, or -1 after logging
 * why (the ledger path cannot be opened, say). */
static int start_metering(pgt_proxy_t *p, pgt_ledger_t **out)
{
    char err[1024];
    /* Budget periods, record days and rollups are in the configured zone;
     * set it before any thread starts. */
    if (pgt_timezone_apply(p->cfg->timezone ? p->cfg->timezone : "UTC", err, sizeof(err)) != 0) {
        fprintf(stderr, "pgtally: timezone: %s\n", err);
        return -1;
    }
    pgt_ledger_opts_t opts = {
        .where = {p->cfg->ledger_path ? p->cfg->ledger_path : "pgtally.db", p->cfg->ledger_schema},
        .spool_path = p->cfg->ledger_spool,
        .queue_capacity = 65536,
        .memory_capacity = 100000,
        .retention_days = p->cfg->ledger_retention_days,
        .on_failure = p->cfg->ledger_on_failure_closed ? PGT_LEDGER_CLOSED : PGT_LEDGER_OPEN,
        /* Tells this process's records from those of others sharing the
         * ledger (their spend counts towards the same budgets). */
        .instance = (int64_t)((((uint64_t)pgt_clock_us() << 20) ^ (uint64_t)getpid()) >> 1),
        .instance_name = p->cfg->instance,
    };
    char shown[512];
    pgt_db_describe(opts.where.ledger, shown, sizeof(shown));
    pgt_ledger_t *l = pgt_ledger_open(&opts, err, sizeof(err));
    if (!l) {
        fprintf(stderr, "pgtally: ledger %s: %s\n", shown, err);
        PGT_ERROR("ledger_open_failed", "ledger=\"%s\" error=\"%s\"", shown, err);
        return -1;
    }
    p->meter = pgt_meter_new(p->loop, l, p->cfg);
    if (p->cfg->estimate_mode != PGT_ESTIMATE_OFF)
        p->estimator = pgt_estimator_new(p->cfg);
    if (!p->meter || (p->cfg->estimate_mode != PGT_ESTIMATE_OFF && !p->estimator)) {
        pgt_meter_free(p->meter);
        p->meter = NULL;
        pgt_ledger_close(l);
        return -1;
    }
    services_t *sv = p->hooks.arg;
    sv->journal = open_journal(p->meter, l);
    p->budgets = pgt_budgets_new(p->loop, p->cfg, &opts.where, opts.instance, err, sizeof(err));
    if (!p->budgets) {
        fprintf(stderr, "pgtally: budgets: %s\n", err);
        PGT_ERROR("budgets_failed", "error=\"%s\"", err);
        pgt_meter_free(p->meter);
        p->meter = NULL;
        pgt_ledger_close(l);
        return -1;
    }
    /* The daily report's delivery, on its own thread, once the time zone
     * is set (the thread reads local dates). */
    if (pgt_scheduler_wanted(p->cfg) &&
        !(sv->scheduler = pgt_scheduler_new(p->cfg, opts.where.ledger, err, sizeof(err)))) {
        fprintf(stderr, "pgtally: report delivery: %s\n", err);
        PGT_ERROR("scheduler_failed", "error=\"%s\"", err);
        pgt_meter_free(p->meter);
        p->meter = NULL;
        pgt_ledger_close(l);
        return -1;
    }
    /* Alerts to Slack and e-mail, on their own thread. */
    if (start_alerts(sv, p->cfg, opts.where.ledger, err, sizeof(err)) != 0) {
        fprintf(stderr, "pgtally: alerts: %s\n", err);
        PGT_ERROR("alerts_failed", "error=\"%s\"", err);
        pgt_meter_free(p->meter);
        p->meter = NULL;
        pgt_ledger_close(l);
        return -1;
    }
    PGT_INFO("metering", "ledger=\"%s\" currency=%s timezone=%s", shown, p->cfg->currency,
             p->cfg->timezone ? p->cfg->timezone : "UTC");
    p->ledger = l;
    *out = l;
    return 0;
}

/* Starts the Prometheus endpoint when [metrics] listen is set: the
 * registry, fed by the meter and the sessions, and its HTTP server on its
 * own thread. Returns 0, or -1 after saying why (the port is in use, say). */
static int start_metrics(pgt_proxy_t *p, pgt_metrics_t **reg, pgt_metrics_server_t **srv)
{
    const pgt_config_t *cfg = p->cfg;
    char err[512];
    if (!cfg->metrics_listen_host)
        return 0;
    *reg = pgt_metrics_new(cfg->metrics_max_label_values, cfg->currency);
    if (!*reg) {
        snprintf(err, sizeof(err), "out of memory");
        goto fail;
    }
    if (p->ledger)
        pgt_metrics_set_ledger(*reg, p->ledger);
    *srv = pgt_metrics_server_start(cfg->metrics_listen_host, cfg->metrics_listen_port, *reg, err,
                                    sizeof(err));
    if (!*srv)
        goto fail;
    if (p->meter)
        pgt_meter_set_metrics(p->meter, *reg);
    p->metrics = *reg;
    PGT_INFO("metrics_listening", "address=%s:%d max_label_values=%d", cfg->metrics_listen_host,
             cfg->metrics_listen_port, cfg->metrics_max_label_values);
    return 0;
fail:
    fprintf(stderr, "pgtally: metrics.listen: %s\n", err);
    PGT_ERROR("startup_failed", "key=metrics.listen error=\"%s\"", err);
    return -1;
}

int main(int argc, char **argv)
{
    sources_t src = {0};
    int rc = parse_args(argc, argv, &src);
    if (rc == -1)
        return 0;
    if (rc == -2)
        return 2;
    char err[1024];
    pgt_config_t *cfg = build_config(&src, err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "pgtally: configuration error: %s\n", err);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    pgt_proxy_t proxy;
    if (pgt_proxy_init(&proxy, &loop, cfg, build_config, &src, err, sizeof(err)) != 0) {
        fprintf(stderr, "pgtally: %s\n", err);
        PGT_ERROR("startup_failed", "error=\"%s\"", err);
        uv_run(&loop, UV_RUN_DEFAULT);
        pgt_proxy_cleanup(&proxy);
        uv_loop_close(&loop);
        return 1;
    }
    services_t services = {0};
    proxy.hooks = (pgt_proxy_hooks_t){.reloaded = services_reloaded,
                                      .stopping = services_stopping,
                                      .refused = services_refused,
                                      .arg = &services};
    /* The ledger opens before the port does: a client never meets a
     * pgtally that is about to exit. */
    pgt_ledger_t *ledger = NULL;
    pgt_metrics_t *metrics = NULL;
    pgt_metrics_server_t *metrics_server = NULL;
    if (proxy.cfg->metering && start_metering(&proxy, &ledger) != 0) {
        pgt_proxy_stop(&proxy);
        proxy.exit_code = 1;
    } else if (start_metrics(&proxy, &metrics, &metrics_server) != 0) {
        pgt_proxy_stop(&proxy);
        proxy.exit_code = 1;
    } else if (pgt_proxy_listen(&proxy, err, sizeof(err)) != 0) {
        fprintf(stderr, "pgtally: %s\n", err);
        PGT_ERROR("startup_failed", "error=\"%s\"", err);
        pgt_proxy_stop(&proxy);
        proxy.exit_code = 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    /* The endpoint served through the drain; it stops before the ledger
     * it reads closes. */
    pgt_metrics_server_stop(metrics_server);
    pgt_scheduler_free(services.scheduler);
    pgt_alerts_free(services.alerts);
    pgt_budgets_free(proxy.budgets);
    pgt_meter_free(proxy.meter);
    pgt_estimator_free(proxy.estimator);
    pgt_fp_cache_free(proxy.escrow_fp);
    if (ledger)
        pgt_ledger_close(ledger);
    /* The journal keeps only what did not become durable, for the next
     * start. */
    pgt_journal_close(services.journal);
    PGT_INFO("stopped", "exit_code=%d", proxy.exit_code);
    pgt_proxy_cleanup(&proxy);
    pgt_metrics_free(metrics);
    int closed = uv_loop_close(&loop);
    if (closed != 0)
        PGT_WARN("loop_not_empty", "error=\"%s\"", uv_strerror(closed));
    return proxy.exit_code;
}
