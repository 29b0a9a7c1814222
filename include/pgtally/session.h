/* One client session: a client connection paired with one upstream
 * connection (session mode), driven by an explicit state machine from the
 * startup packet through TLS and authentication relay to query traffic. */
#ifndef PGTALLY_SESSION_H
#define PGTALLY_SESSION_H

#include "pgtally/proxy.h"

/* Creates a session whose client handle is initialised on p->loop and ready
 * for uv_accept. Returns NULL when out of memory or when OpenSSL has no
 * random bytes for the names of pgtally's own statements. */
pgt_session_t *pgt_session_new(pgt_proxy_t *p);

/* Returns the client handle to accept into. */
uv_stream_t *pgt_session_client_stream(pgt_session_t *s);

/* Starts the session after uv_accept succeeded. */
void pgt_session_begin(pgt_session_t *s);

/* Refuses a client at once with a FATAL error (e.g. too many clients). */
void pgt_session_refuse(pgt_session_t *s, const char *sqlstate, const char *message);

/* Closes the session when it has no query running (SIGTERM). */
void pgt_session_drain(pgt_session_t *s);

/* Closes the session now (SIGINT, drain timeout). */
void pgt_session_kill(pgt_session_t *s);

/* Next session in the proxy's list. */
pgt_session_t *pgt_session_next(pgt_session_t *s);

/* The running check of budgets, in two passes over all sessions: first
 * each adds the cost so far of its running statement, then each whose
 * statement runs past a budget has it cancelled (SQLSTATE 57014 with a
 * message naming the budget). */
void pgt_session_budget_add(pgt_session_t *s);
void pgt_session_budget_enforce(pgt_session_t *s);

#endif
