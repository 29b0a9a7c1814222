/* The proxy as a whole: the listener, the current configuration and TLS
 * contexts, the live sessions, the cancel map, and signal handling. One
 * instance runs on one libuv loop. */
#ifndef PGTALLY_PROXY_H
#define PGTALLY_PROXY_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include <openssl/ssl.h>

#include "pgtally/cancel.h"
#include "pgtally/config.h"
#include "pgtally/budget.h"
#include "pgtally/estimator.h"
#include "pgtally/fingerprint.h"
#include "pgtally/ledger.h"
#include "pgtally/meter.h"
#include "pgtally/metrics.h"

typedef struct pgt_session pgt_session_t;

/* An IPv4 or IPv6 socket address. */
typedef union pgt_sockaddr {
    struct sockaddr sa;      /* generic view */
    struct sockaddr_in in;   /* IPv4 */
    struct sockaddr_in6 in6; /* IPv6 */
} pgt_sockaddr_t;

/* Builds a fresh config: defaults, then the file (when path is not NULL),
 * then the command-line overrides (pairs key, value), then the cross-key
 * checks. Returns NULL with a message in err. */
typedef pgt_config_t *(*pgt_config_builder_fn)(void *arg, char *err, size_t errlen);

typedef struct pgt_proxy pgt_proxy_t;

/* What the daemon runs beside the proxy (the daily report's scheduler),
 * told of the proxy's life without the proxy knowing what it is. */
typedef struct pgt_proxy_hooks {
    void (*reloaded)(pgt_proxy_t *p, void *arg); /* a new configuration took effect, or NULL */
    void (*stopping)(pgt_proxy_t *p, void *arg); /* the proxy closes its handles, or NULL */
    /* a statement of who was refused (v->action REFUSE: a budget or a rule)
     * or is being cancelled (CANCEL), on the loop; or NULL. It must not block. */
    void (*refused)(pgt_proxy_t *p, const pgt_who_t *who, const pgt_verdict_t *v, void *arg);
    void *arg; /* argument of both */
} pgt_proxy_hooks_t;

struct pgt_proxy {
    uv_loop_t *loop;               /* the one event loop */
    pgt_config_t *cfg;             /* current configuration (owned) */
    SSL_CTX *client_ctx;           /* TLS towards clients, or NULL */
    SSL_CTX *upstream_ctx;         /* TLS towards the server, or NULL */
    pgt_sockaddr_t upstream_addr;  /* resolved upstream address */
    char upstream_name[280];       /* "host:port", for messages */
    pgt_config_builder_fn rebuild; /* makes a new config on SIGHUP */
    void *rebuild_arg;             /* argument of rebuild */
    uv_tcp_t listener;             /* listening socket */
    uv_signal_t sig_term;          /* SIGTERM: drain */
    uv_signal_t sig_int;           /* SIGINT: close at once */
    uv_signal_t sig_hup;           /* SIGHUP: reload */
    uv_timer_t shutdown_timer;     /* bounds the drain */
    pgt_cancel_map_t *cancel_map;  /* BackendKeyData -> session */
    pgt_estimator_t *estimator;    /* estimates before execution, or NULL */
    pgt_fp_cache_t *escrow_fp;     /* shapes of refused statements without an estimate's
                                      (judge.c, made when first needed; loop only) */
    pgt_ledger_t *ledger;          /* the ledger, or NULL when metering is off */
    pgt_meter_t *meter;            /* metering pipeline, or NULL when metering is off */
    pgt_budgets_t *budgets;        /* budget enforcement, or NULL when metering is off */
    uv_timer_t budget_timer;       /* checks running statements against budgets */
    uint64_t budgets_published_ms; /* when the metrics last got the budgets' spend */
    bool budget_timer_open;        /* budget_timer initialised */
    pgt_proxy_hooks_t hooks;       /* the daemon's services beside the proxy */
    pgt_metrics_t *metrics;        /* the Prometheus registry, or NULL (not owned) */
    pgt_session_t *sessions;       /* all live sessions, linked */
    int nclients;                  /* live sessions */
    int nclosing;                  /* of them, those closing (not counted against max_clients) */
    uint64_t next_session_id;      /* id of the next session */
    int console_jobs;              /* console commands on the worker pool (console_session.c) */
    bool draining;                 /* SIGTERM received */
    bool stopping;                 /* handles are being closed */
    int exit_code;                 /* what main returns */
};

/* Prepares the proxy with a built config (ownership passes to the proxy):
 * TLS contexts, upstream address, signal handlers; not yet listening.
 * Returns 0, or -1 with a message in err. */
int pgt_proxy_init(pgt_proxy_t *p, uv_loop_t *loop, pgt_config_t *cfg,
                   pgt_config_builder_fn rebuild, void *rebuild_arg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Starts accepting clients on the configured address. Returns 0, or -1
 * with a message in err (the caller then stops the proxy). */
int pgt_proxy_listen(pgt_proxy_t *p, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Releases what pgt_proxy_init allocated, after the loop has stopped. */
void pgt_proxy_cleanup(pgt_proxy_t *p);

/* Starts draining: stop accepting, close idle sessions, let running queries
 * finish for up to shutdown_timeout, then stop. */
void pgt_proxy_drain(pgt_proxy_t *p);

/* Closes every session and handle at once. */
void pgt_proxy_stop(pgt_proxy_t *p);

/* Re-reads the configuration; on error keeps the old one and logs why. */
void pgt_proxy_reload(pgt_proxy_t *p);

/* Forwards a 16-byte CancelRequest packet to the upstream at addr on a new
 * connection, and forgets it. */
void pgt_cancel_forward(uv_loop_t *loop, const pgt_sockaddr_t *addr, const uint8_t packet[16]);

/* Called by a session when it has been freed. */
void pgt_proxy_session_gone(pgt_proxy_t *p);

#endif
