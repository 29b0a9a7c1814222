/* The Prometheus endpoint: an HTTP server (libmicrohttpd, on its own
 * thread) that answers GET /metrics with the registry in the text
 * exposition format, and 404 on any other path. It never touches the event
 * loop, so it keeps answering while the proxy drains. */
#ifndef PGTALLY_METRICS_HTTP_H
#define PGTALLY_METRICS_HTTP_H

#include <stddef.h>

#include "pgtally/metrics.h"

typedef struct pgt_metrics_server pgt_metrics_server_t;

/* Binds host:port and starts serving reg (not owned; it must outlive the
 * server). Returns the server, or NULL with the cause in err (an address
 * that does not resolve, one in use, out of memory). */
pgt_metrics_server_t *pgt_metrics_server_start(const char *host, int port, pgt_metrics_t *reg,
                                               char *err, size_t errlen);

/* Stops serving, waits for the server's thread, closes the socket and frees
 * the server. NULL is allowed. */
void pgt_metrics_server_stop(pgt_metrics_server_t *s);

#endif
