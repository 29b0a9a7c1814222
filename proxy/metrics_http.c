/* The /metrics endpoint over libmicrohttpd. pgtally binds the socket
 * itself, so that a port in use is reported with its cause at start-up,
 * and hands it to libmicrohttpd, which runs the HTTP side on its own
 * polling thread. */
#include "pgtally/metrics_http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pgtally/buf.h"

/* What Prometheus expects of the text exposition format, version 0.0.4. */
#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct pgt_metrics_server {
    struct MHD_Daemon *daemon; /* the HTTP server and its thread */
    pgt_metrics_t *reg;        /* what /metrics shows (not owned) */
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, char *body,
                             const char *type)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    char *body = strdup(text);
    return body ? reply(c, status, body, "text/plain; charset=utf-8") : MHD_NO;
}

/* libmicrohttpd calls this once the request's headers are in; a GET has
 * no body to wait for, so it is answered at once. */
static enum MHD_Result request_cb(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **state)
{
    pgt_metrics_server_t *s = cls;
    (void)version;
    (void)upload_data;
    (void)state;
    if (*upload_size)
        return MHD_NO; /* a body nobody asked for */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics is served\n");
    if (strcmp(url, "/metrics") != 0)
        return reply_text(c, MHD_HTTP_NOT_FOUND, "not found; metrics are at /metrics\n");
    pgt_buf_t b = {0};
    pgt_metrics_render(s->reg, &b);
    char *body = pgt_buf_take(&b);
    if (!body)
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    return reply(c, MHD_HTTP_OK, body, CONTENT_TYPE);
}

/* Binds and listens on host:port. Returns the socket, or -1 with the cause
 * in err. */
static int bind_socket(const char *host, int port, int *family, char *err, size_t errlen)
{
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    *family = res->ai_family;
    freeaddrinfo(res);
    return fd;
}

pgt_metrics_server_t *pgt_metrics_server_start(const char *host, int port, pgt_metrics_t *reg,
                                               char *err, size_t errlen)
{
    pgt_metrics_server_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->reg = reg;
    int family = AF_INET;
    int fd = bind_socket(host, port, &family, err, errlen);
    if (fd < 0) {
        free(s);
        return NULL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* The daemon owns the socket from here and closes it when stopped. */
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, request_cb, s, MHD_OPTION_LISTEN_SOCKET, fd,
                                 MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT,
                                 10u, MHD_OPTION_END);
    if (!s->daemon) {
        /* Whether libmicrohttpd closed the socket is not said; pgtally
         * exits after this, so leave it rather than risk closing another. */
        snprintf(err, errlen, "cannot start the HTTP server on %s:%d", host, port);
        free(s);
        return NULL;
    }
    return s;
}

void pgt_metrics_server_stop(pgt_metrics_server_t *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->daemon);
    free(s);
}
