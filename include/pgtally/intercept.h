/* What metering needs from a session: it watches the messages each side
 * completes, keeps the session's prepared statements and portals, matches
 * every Query and Execute with the server's answers through a FIFO, and
 * hands each finished execution to the meter. It never changes a byte. */
#ifndef PGTALLY_INTERCEPT_H
#define PGTALLY_INTERCEPT_H

#include <stddef.h>
#include <stdint.h>

#include "pgtally/budget.h"
#include "pgtally/meter.h"

typedef struct pgt_intercept pgt_intercept_t;

/* Message types whose whole body the client framer must report: Query,
 * Parse, Bind, Execute and Close. A table of 256 flags. */
extern const uint8_t pgt_intercept_capture[256];

/* Largest body captured whole; longer SQL is metered by its first bytes. */
#define PGT_INTERCEPT_MAX_SQL (1u << 20)

/* Starts watching a session that has logged in. Returns NULL when out of
 * memory (the session then runs unmetered). */
pgt_intercept_t *pgt_intercept_new(pgt_meter_t *m, pgt_estimator_t *est, uint64_t session_id,
                                   int32_t backend_pid, const char *user, const char *database,
                                   const char *application, const char *client_addr);

/* The estimate of the next Query the client sends (made by the session
 * before forwarding it); consumed by that Query. */
void pgt_intercept_set_estimate(pgt_intercept_t *ic, const pgt_estimate_t *est);

/* The approval the running statement runs under, with its cap in *cap_micro;
 * 0 when none. */
int64_t pgt_intercept_running_approval(const pgt_intercept_t *ic, int64_t *cap_micro);

/* The hash of a Bind's parameters (body[0..len) the Bind's body), as the
 * ledger's constants hash mixes it in; 0 for a Bind without parameters. */
uint64_t pgt_intercept_bind_params(const uint8_t *body, size_t len);

/* The SQL of prepared statement name ("" is the unnamed one), NULL when
 * unknown, and its parameter types as Parse sent them (Int16 count, then
 * the OIDs) in *types, which is NULL (and *types_len 0) for a statement
 * prepared in SQL or a Parse cut by the capture limit (its text is then
 * the first bytes). Valid until the next client message. */
const pgt_text_t *pgt_intercept_statement(const pgt_intercept_t *ic, const char *name,
                                          const uint8_t **types, size_t *types_len);

/* The SQL a named portal or cursor (not the unnamed one) runs, NULL when
 * unknown. Valid until the next client message. */
const pgt_text_t *pgt_intercept_portal_text(pgt_intercept_t *ic, const char *portal);

/* Whether the named portal (not the unnamed one) exists as far as the
 * meter knows: a Bind of it fails first on that (42P03). */
bool pgt_intercept_portal_exists(pgt_intercept_t *ic, const char *portal);

/* The estimate of the executions of portal, whose Bind has just been
 * passed to pgt_intercept_client. */
void pgt_intercept_set_portal_estimate(pgt_intercept_t *ic, const char *portal,
                                       const pgt_estimate_t *est);

/* The client changed application_name (the server reported it): the
 * statements sent from now on are attributed to app. */
void pgt_intercept_set_application(pgt_intercept_t *ic, const char *app);

/* Budgets the session's statements count against as they finish (NULL:
 * none). */
void pgt_intercept_set_budgets(pgt_intercept_t *ic, pgt_budgets_t *b);

/* The next statement to fail, before the next ReadyForQuery, was refused
 * or cancelled by pgtally for budget budget_id: it is recorded with status
 * (PGT_QUERY_REFUSED or PGT_QUERY_BUDGET_CANCELLED). */
void pgt_intercept_budget_outcome(pgt_intercept_t *ic, pgt_query_status_t status,
                                  int64_t budget_id);

/* Whether a statement the running check may cancel is running upstream
 * (not one that is never refused, such as SET or COMMIT); if so, for how
 * many seconds. */
bool pgt_intercept_running(const pgt_intercept_t *ic, double *seconds);

/* The SQL of the oldest statement sent and not yet answered (a reference,
 * valid until the session's next message), or NULL when none. */
const pgt_text_t *pgt_intercept_current(const pgt_intercept_t *ic);

/* A complete client message (body whole for captured types). */
void pgt_intercept_client(pgt_intercept_t *ic, uint8_t type, const uint8_t *body, size_t len);

/* Records a Query that pgtally answered itself without sending it
 * upstream (cancelled while held, refused): status and SQLSTATE as the
 * client was told. Only valid while nothing else is in flight. */
void pgt_intercept_unsent(pgt_intercept_t *ic, const uint8_t *body, size_t len,
                          pgt_query_status_t status, const char *sqlstate);

/* Records a Bind (body[0..len)) that pgtally answered itself, with the
 * Execute behind it, neither of which the server runs (refused): its
 * estimate, status and SQLSTATE as the client was told. */
void pgt_intercept_unsent_bind(pgt_intercept_t *ic, const uint8_t *body, size_t len,
                               const pgt_estimate_t *est, pgt_query_status_t status,
                               const char *sqlstate);

/* A complete server message: its length field and the first bytes of it;
 * answers is the type of the client's message it answers, as the
 * conversation model (conv.h) says, or 0 for none. */
void pgt_intercept_server(pgt_intercept_t *ic, uint8_t answers, uint8_t type, uint32_t len,
                          const uint8_t *peek, size_t plen);

/* The server skipped a client's message of type (conv.h): a Query,
 * Execute or FunctionCall that never ran, or a Sync ignored during COPY.
 * body[0..len) is the message's, when it is skipped as it goes upstream
 * (the server skips to a Sync), or NULL for one queued earlier. An Execute
 * whose batch's Parse, Bind or Describe failed is recorded once, with
 * that error: the statement the client meant to run failed. */
void pgt_intercept_skipped(pgt_intercept_t *ic, uint8_t type, const uint8_t *body, size_t len);

/* The session is ending: executions still running are recorded as failed
 * with sqlstate (e.g. "08006"), and everything is freed. */
void pgt_intercept_free(pgt_intercept_t *ic, const char *sqlstate);

#endif
