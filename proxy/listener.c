/* The proxy's outer shell: the listening socket and its client cap, the
 * signals (drain, stop, reload), configuration swaps, and the one-shot
 * connections that carry CancelRequests upstream. */
#include "pgtally/proxy.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/log.h"
#include "pgtally/session.h"
#include "pgtally/tls.h"

/* Resolves host:port once, at start-up and reload, so sessions never wait
 * on DNS. */
static int resolve(const char *host, int port, pgt_sockaddr_t *out, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    memset(out, 0, sizeof(*out));
    if (res->ai_addrlen > sizeof(*out)) {
        freeaddrinfo(res);
        snprintf(err, errlen, "cannot use address of '%s'", host);
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* What a config needs besides itself: TLS contexts and the upstream address. */
typedef struct prepared {
    SSL_CTX *client_ctx;     /* or NULL */
    SSL_CTX *upstream_ctx;   /* or NULL */
    pgt_sockaddr_t upstream; /* resolved upstream */
} prepared_t;

static int prepare(const pgt_config_t *cfg, prepared_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (resolve(cfg->upstream_host, cfg->upstream_port, &out->upstream, err, errlen) != 0)
        return -1;
    if (cfg->client_tls != PGT_CLIENT_TLS_DISABLE) {
        out->client_ctx = pgt_tls_server_ctx(cfg, err, errlen);
        if (!out->client_ctx)
            return -1;
    }
    if (cfg->upstream_tls != PGT_UPSTREAM_TLS_DISABLE) {
        out->upstream_ctx = pgt_tls_client_ctx(cfg, err, errlen);
        if (!out->upstream_ctx) {
            SSL_CTX_free(out->client_ctx);
            return -1;
        }
    }
    return 0;
}

/* Installs cfg and what was prepared for it, releasing the previous ones.
 * Live TLS sessions keep their own reference to the old contexts. */
static void install(pgt_proxy_t *p, pgt_config_t *cfg, prepared_t *prep)
{
    SSL_CTX_free(p->client_ctx);
    SSL_CTX_free(p->upstream_ctx);
    pgt_config_free(p->cfg);
    p->cfg = cfg;
    p->client_ctx = prep->client_ctx;
    p->upstream_ctx = prep->upstream_ctx;
    p->upstream_addr = prep->upstream;
    if (strchr(cfg->upstream_host, ':'))
        snprintf(p->upstream_name, sizeof(p->upstream_name), "[%s]:%d", cfg->upstream_host,
                 cfg->upstream_port);
    else
        snprintf(p->upstream_name, sizeof(p->upstream_name), "%s:%d", cfg->upstream_host,
                 cfg->upstream_port);
    pgt_log_set_level(cfg->log_level);
}

static void on_connection(uv_stream_t *server, int status)
{
    pgt_proxy_t *p = server->data;
    if (status < 0) {
        PGT_WARN("accept_failed", "error=\"%s\"", uv_strerror(status));
        return;
    }
    pgt_session_t *s = pgt_session_new(p);
    if (!s) {
        PGT_ERROR("out_of_memory", "what=session");
        return;
    }
    int rc = uv_accept(server, pgt_session_client_stream(s));
    if (rc != 0) {
        /* Out of file descriptors and the like: libuv's stream layer sheds
         * the pending connection; log and carry on. */
        PGT_WARN("accept_failed", "error=\"%s\"", uv_strerror(rc));
        pgt_session_kill(s);
        return;
    }
    if (p->draining) {
        pgt_session_refuse(s, "57P03", "pgtally is shutting down");
        return;
    }
    if (p->nclients - p->nclosing > p->cfg->max_clients) {
        PGT_WARN("too_many_clients", "max_clients=%d", p->cfg->max_clients);
        pgt_session_refuse(s, "53300", "sorry, too many clients already");
        return;
    }
    pgt_session_begin(s);
}

/* Budgets shown in the metrics: the first ones, past this many. */
#define METRICS_BUDGETS_MAX 1000

/* Hands the metrics the budgets' spend, once a second at most. */
static void publish_budgets(pgt_proxy_t *p)
{
    uint64_t now = uv_now(p->loop);
    if (!p->metrics || now < p->budgets_published_ms + 1000)
        return;
    p->budgets_published_ms = now;
    static pgt_budget_spend_t spend[METRICS_BUDGETS_MAX];
    size_t n = pgt_budgets_spend(p->budgets, spend, METRICS_BUDGETS_MAX);
    pgt_metrics_set_budgets(p->metrics, spend, n);
}

static void budget_timer_cb(uv_timer_t *t)
{
    pgt_proxy_t *p = t->data;
    pgt_budgets_running_begin(p->budgets);
    for (pgt_session_t *s = p->sessions; s; s = pgt_session_next(s))
        pgt_session_budget_add(s);
    for (pgt_session_t *s = p->sessions; s; s = pgt_session_next(s))
        pgt_session_budget_enforce(s);
    publish_budgets(p);
}

int pgt_proxy_listen(pgt_proxy_t *p, char *err, size_t errlen)
{
    pgt_sockaddr_t addr;
    if (resolve(p->cfg->listen_host, p->cfg->listen_port, &addr, err, errlen) != 0)
        return -1;
    int rc = uv_tcp_bind(&p->listener, &addr.sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&p->listener, 511, on_connection);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", p->cfg->listen_host,
                 p->cfg->listen_port, uv_strerror(rc));
        return -1;
    }
    if (p->budgets) {
        /* The running check of budgets. */
        uv_timer_init(p->loop, &p->budget_timer);
        p->budget_timer.data = p;
        p->budget_timer_open = true;
        int ms = pgt_budgets_interval_ms(p->budgets);
        uv_timer_start(&p->budget_timer, budget_timer_cb, (uint64_t)ms, (uint64_t)ms);
    }
    PGT_INFO("listening", "addr=%s:%d upstream=%s client_tls=%s upstream_tls=%s",
             p->cfg->listen_host, p->cfg->listen_port, p->upstream_name,
             pgt_client_tls_name(p->cfg->client_tls), pgt_upstream_tls_name(p->cfg->upstream_tls));
    return 0;
}

static void signal_cb(uv_signal_t *h, int signum)
{
    pgt_proxy_t *p = h->data;
    if (signum == SIGHUP)
        pgt_proxy_reload(p);
    else if (signum == SIGTERM)
        pgt_proxy_drain(p);
    else
        pgt_proxy_stop(p);
}

int pgt_proxy_init(pgt_proxy_t *p, uv_loop_t *loop, pgt_config_t *cfg,
                   pgt_config_builder_fn rebuild, void *rebuild_arg, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    p->loop = loop;
    p->rebuild = rebuild;
    p->rebuild_arg = rebuild_arg;
    prepared_t prep;
    if (prepare(cfg, &prep, err, errlen) != 0) {
        pgt_config_free(cfg);
        return -1;
    }
    install(p, cfg, &prep);
    p->cancel_map = pgt_cancel_map_new();
    if (!p->cancel_map) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    uv_tcp_init(loop, &p->listener);
    p->listener.data = p;
    uv_signal_t *sigs[] = {&p->sig_term, &p->sig_int, &p->sig_hup};
    int nums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(loop, sigs[i]);
        sigs[i]->data = p;
        uv_signal_start(sigs[i], signal_cb, nums[i]);
    }
    uv_timer_init(loop, &p->shutdown_timer);
    p->shutdown_timer.data = p;
    return 0;
}

void pgt_proxy_cleanup(pgt_proxy_t *p)
{
    SSL_CTX_free(p->client_ctx);
    SSL_CTX_free(p->upstream_ctx);
    pgt_cancel_map_free(p->cancel_map);
    pgt_config_free(p->cfg);
    p->client_ctx = p->upstream_ctx = NULL;
    p->cancel_map = NULL;
    p->cfg = NULL;
}

/* Closes the proxy's own handles once no session is left, so the loop
 * ends. */
static void maybe_finish(pgt_proxy_t *p)
{
    if (!p->stopping || p->sessions)
        return;
    uv_handle_t *hs[] = {(uv_handle_t *)&p->listener, (uv_handle_t *)&p->sig_term,
                         (uv_handle_t *)&p->sig_int, (uv_handle_t *)&p->sig_hup,
                         (uv_handle_t *)&p->shutdown_timer};
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
        if (!uv_is_closing(hs[i]))
            uv_close(hs[i], NULL);
    if (p->meter)
        pgt_meter_stop(p->meter);
    if (p->budget_timer_open && !uv_is_closing((uv_handle_t *)&p->budget_timer))
        uv_close((uv_handle_t *)&p->budget_timer, NULL);
    pgt_budgets_stop(p->budgets);
    if (p->hooks.stopping)
        p->hooks.stopping(p, p->hooks.arg);
}

void pgt_proxy_session_gone(pgt_proxy_t *p)
{
    p->nclients--;
    pgt_metrics_sessions_add(p->metrics, -1);
    maybe_finish(p);
}

static void stop_listening(pgt_proxy_t *p)
{
    if (!uv_is_closing((uv_handle_t *)&p->listener))
        uv_close((uv_handle_t *)&p->listener, NULL);
}

static void shutdown_timer_cb(uv_timer_t *t)
{
    pgt_proxy_t *p = t->data;
    PGT_WARN("shutdown_timeout", "sessions=%d", p->nclients);
    pgt_proxy_stop(p);
}

void pgt_proxy_drain(pgt_proxy_t *p)
{
    if (p->draining || p->stopping)
        return;
    p->draining = true;
    p->stopping = true;
    PGT_INFO("draining", "sessions=%d shutdown_timeout_ms=%d", p->nclients,
             p->cfg->shutdown_timeout_ms);
    stop_listening(p);
    uv_timer_start(&p->shutdown_timer, shutdown_timer_cb, (uint64_t)p->cfg->shutdown_timeout_ms, 0);
    pgt_session_t *s = p->sessions;
    while (s) {
        pgt_session_t *next = pgt_session_next(s);
        pgt_session_drain(s);
        s = next;
    }
    maybe_finish(p);
}

void pgt_proxy_stop(pgt_proxy_t *p)
{
    PGT_INFO("stopping", "sessions=%d", p->nclients);
    p->draining = true;
    p->stopping = true;
    stop_listening(p);
    pgt_session_t *s = p->sessions;
    while (s) {
        pgt_session_t *next = pgt_session_next(s);
        pgt_session_kill(s);
        s = next;
    }
    maybe_finish(p);
}

void pgt_proxy_reload(pgt_proxy_t *p)
{
    char err[1024];
    pgt_config_t *cfg = p->rebuild(p->rebuild_arg, err, sizeof(err));
    prepared_t prep;
    if (!cfg || prepare(cfg, &prep, err, sizeof(err)) != 0) {
        pgt_config_free(cfg);
        PGT_ERROR("reload_failed", "error=\"%s\" action=\"kept the previous configuration\"", err);
        return;
    }
    if (strcmp(cfg->listen_host, p->cfg->listen_host) != 0 ||
        cfg->listen_port != p->cfg->listen_port)
        PGT_WARN("reload_listen_unchanged",
                 "message=\"listen changes take effect after a restart\" listen=%s:%d",
                 p->cfg->listen_host, p->cfg->listen_port);
    if ((cfg->metering != 0) != (p->meter != NULL) ||
        (cfg->ledger_path && p->cfg->ledger_path && strcmp(cfg->ledger_path, p->cfg->ledger_path)))
        PGT_WARN("reload_metering_unchanged",
                 "message=\"metering and ledger changes take effect after a restart\"");
    install(p, cfg, &prep);
    if (p->meter)
        pgt_meter_set_prices(p->meter, cfg);
    if (p->budgets)
        pgt_budgets_configure(p->budgets, cfg);
    if (p->estimator)
        pgt_estimator_configure(p->estimator, cfg);
    if (p->hooks.reloaded)
        p->hooks.reloaded(p, p->hooks.arg);
    PGT_INFO("reloaded", "path=%s upstream=%s log_level=%s", cfg->path ? cfg->path : "-",
             p->upstream_name, pgt_log_level_name(cfg->log_level));
}

/* ---- cancel forwarding ---------------------------------------------------- */

/* A one-shot connection that carries a CancelRequest to the server. */
typedef struct cancel_conn {
    uv_tcp_t tcp;         /* connection to the upstream */
    uv_connect_t connect; /* its connect request */
    uv_write_t write;     /* the write of packet */
    uint8_t packet[16];   /* the CancelRequest, as the client sent it */
} cancel_conn_t;

static void cancel_close_cb(uv_handle_t *h)
{
    free(h->data);
}

static void cancel_write_cb(uv_write_t *req, int status)
{
    cancel_conn_t *cc = req->data;
    if (status < 0)
        PGT_WARN("cancel_failed", "error=\"%s\"", uv_strerror(status));
    /* The server acts on the packet and closes; pgtally need not wait. */
    uv_close((uv_handle_t *)&cc->tcp, cancel_close_cb);
}

static void cancel_connect_cb(uv_connect_t *req, int status)
{
    cancel_conn_t *cc = req->data;
    if (status < 0) {
        PGT_WARN("cancel_failed", "error=\"%s\"", uv_strerror(status));
        uv_close((uv_handle_t *)&cc->tcp, cancel_close_cb);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)cc->packet, sizeof(cc->packet));
    cc->write.data = cc;
    if (uv_write(&cc->write, (uv_stream_t *)&cc->tcp, &b, 1, cancel_write_cb) != 0)
        uv_close((uv_handle_t *)&cc->tcp, cancel_close_cb);
}

void pgt_cancel_forward(uv_loop_t *loop, const pgt_sockaddr_t *addr, const uint8_t packet[16])
{
    cancel_conn_t *cc = calloc(1, sizeof(*cc));
    if (!cc)
        return;
    memcpy(cc->packet, packet, sizeof(cc->packet));
    uv_tcp_init(loop, &cc->tcp);
    cc->tcp.data = cc;
    cc->connect.data = cc;
    if (uv_tcp_connect(&cc->connect, &cc->tcp, &addr->sa, cancel_connect_cb) != 0)
        uv_close((uv_handle_t *)&cc->tcp, cancel_close_cb);
}
