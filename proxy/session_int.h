/* The session's insides, shared by the files that make it up: session.c (the
 * state machine, I/O, startup, authentication and the relay), explain.c
 * (pgtally's in-band EXPLAIN) and judge.c (budgets before and while a
 * statement runs). Internal to proxy/: the API is include/pgtally/session.h.
 * The functions the three share carry the pgt__ prefix (libuv's uv__ habit):
 * extern for the linker, private to the session. */
#ifndef PGTALLY_PROXY_SESSION_INT_H
#define PGTALLY_PROXY_SESSION_INT_H

#include "pgtally/buf.h"
#include "pgtally/conv.h"
#include "pgtally/estimator.h"
#include "pgtally/intercept.h"
#include "pgtally/session.h"
#include "pgtally/tls.h"
#include "pgtally/wire.h"

#define PGT_SESSION_STATE_MAP(X)                                                                   \
    X(STARTUP, "startup")                           /* reading the client's first packet */        \
    X(CLIENT_TLS, "client_tls")                     /* TLS handshake with the client */            \
    X(CONNECTING, "connecting")                     /* connecting to the upstream */               \
    X(UPSTREAM_TLS_REQUEST, "upstream_tls_request") /* waiting for the server's S or N */          \
    X(UPSTREAM_TLS, "upstream_tls")                 /* TLS handshake with the server */            \
    X(AUTH, "auth")                                 /* relaying authentication */                  \
    X(IDLE, "idle")                                 /* logged in, no query running */              \
    X(QUERY, "query")                               /* queries sent, ReadyForQuery awaited */      \
    X(COPY, "copy")                                 /* a COPY is streaming */                      \
    X(CONSOLE, "console")                           /* logged in to pgtally's admin console */     \
    X(CLOSING, "closing")                           /* handles closing; callbacks are no-ops */

typedef enum {
#define X(name, str) ST_##name,
    PGT_SESSION_STATE_MAP(X)
#undef X
} state_t;

/* One side of a session: a TCP stream, optionally under TLS. */
typedef struct conn {
    uv_tcp_t tcp;        /* the socket; tcp.data points to this conn */
    pgt_session_t *s;    /* owning session */
    pgt_tls_t *tls;      /* TLS state, or NULL for plain bytes */
    pgt_framer_t framer; /* framing of what this side sends */
    uint8_t *pend;       /* bytes kept before login (whole messages) */
    size_t pend_len;     /* bytes in pend */
    size_t pend_cap;     /* allocated size of pend */
    size_t queued;       /* bytes handed to uv_write, not yet written */
    bool open;           /* tcp handle initialised */
    bool want_read;      /* the state machine wants bytes from this side */
    bool paused;         /* reading stopped: the other side is backed up */
    bool reading;        /* uv_read_start is in effect */
    bool close_on_flush; /* close once queued reaches zero */
    bool close_started;  /* uv_close called */
    bool write_dead;     /* a write failed: nothing more is written, what it sent is read */
} conn_t;

struct pgt_session {
    pgt_proxy_t *proxy;           /* owner */
    pgt_session_t *prev, *next;   /* proxy's list of sessions */
    uint64_t id;                  /* shown in logs as C-<id> */
    state_t state;                /* where the state machine is */
    conn_t client;                /* the client side */
    conn_t server;                /* the upstream side */
    uv_timer_t timer;             /* startup timeout, then flush guard */
    int open_conns;               /* tcp handles not yet closed */
    uint32_t backend_pid;         /* server's BackendKeyData */
    uint32_t backend_key;         /* server's BackendKeyData */
    bool have_key;                /* backend key registered in the cancel map */
    bool authenticated;           /* server sent AuthenticationOk */
    bool server_fatal;            /* server sent a FATAL error */
    bool client_terminated;       /* client sent Terminate */
    bool drain;                   /* close at the next ReadyForQuery */
    pgt_upstream_tls_t up_tls;    /* upstream TLS mode at session start */
    pgt_sockaddr_t upstream_addr; /* upstream used, also for cancels */
    pgt_intercept_t *ic;          /* metering of this session, or NULL */
    uint8_t txn_status;           /* status of the last ReadyForQuery: 'I', 'T' or 'E' */
    bool explaining;              /* pgtally's EXPLAIN is upstream; client bytes wait in pend */
    uint64_t explain_sent_ns;     /* uv_hrtime() when it was sent */
    bool ext_explain;             /* ... and it is the extended-protocol one, held at a Bind */
    pgt_conv_t conv;              /* what the server owes, and to whom (conv.h) */
    uint8_t *early;               /* replies to the client held until its next Sync, Flush,
                                     Query or FunctionCall goes upstream (conv.h: early) */
    size_t early_len;             /* their length */
    size_t early_cap;             /* allocated size of early */
    uint64_t client_flushes;      /* the client's messages so far that write replies out */
    pgt_estimate_t est;           /* estimate of the statement being explained */
    uint8_t *explain_msg;         /* EXPLAIN messages to send once the framer has stopped */
    size_t explain_msg_len;       /* their length */
    bool ext_refuse;              /* the held Bind is refused: pgtally's Bind fails upstream
                                     and the client gets the budget's error instead */
    bool refusing;                /* a held Query is refused: its stand-in fails upstream and
                                     the client gets the budget's error instead */
    bool budget_cancel;           /* pgtally cancelled the running statement for a budget */
    bool copy_text;               /* a COPY FROM STDIN in text format runs: its error is
                                     taken whole, for the line it names */
    pgt_verdict_t *verdict;       /* why the held statement is refused, or NULL */
    uint8_t *subst;               /* the ErrorResponse the client gets instead, or NULL */
    size_t subst_len;             /* its length */
    bool cancel_requested;        /* the client cancelled while its Query waited */
    uint8_t awaiting;             /* AWAIT_*: a refused statement pipelined behind others
                                     waits held, behind pgtally's Flush, for their replies */
    bool refuse;                  /* the held Query is refused (ledger.on_failure = closed) */
    uint64_t discard;             /* bytes still to come of a refused Query held by its head
                                     only (too long to capture): read and dropped, never sent */
    uint8_t *explain_out;         /* EXPLAIN output gathered so far */
    pgt_plan_t *plan;             /* the last EXPLAIN's plan (allocated at the first) */
    bool plan_valid;              /* plan is the statement being judged's */
    bool explain_later;           /* the Bind plan_bind saw could be explained, not now */
    size_t explain_out_len;       /* its length */
    uint8_t *explain_err;         /* the simple EXPLAIN's ErrorResponse, or NULL */
    size_t explain_err_len;       /* its length */
    pgt_buf_t explain_ps; /* ParameterStatus messages behind that error, held for after it */
    char *names;          /* one block holding user, database and app */
    char *app_set;        /* application_name set after login, or NULL */
    const char *user;     /* startup "user", or NULL before the startup packet */
    const char *database; /* startup "database" */
    const char *app;      /* startup "application_name", or "" */
    char addr[56];        /* client address as host:port */
    struct pgt_console_session
        *console;         /* the admin console's state, or NULL (console_session.c) */
    uint8_t name_key[16]; /* random at session start: the hex of its halves ends the
                             names of pgtally's own statements (pgt__own_name) */
};

/* Bytes of a name of pgtally's own, with its NUL: "pgtally_" and 16 hex
 * digits. */
#define OWN_NAME_SIZE 25

/* Which of pgtally's own names: the statement and portal of an extended
 * EXPLAIN, or the statement (and portal) of a refused Bind's stand-in,
 * which must never exist so that the stand-in fails. */
typedef enum { OWN_EXPLAIN, OWN_REFUSED } own_name_t;

/* Bytes queued towards one side before reading from the other side stops. */
#define PGT_HIGH_WATER (512 * 1024)
/* How long a closing session waits for its last bytes to be written. */
#define PGT_FLUSH_TIMEOUT_MS 5000

/* ---- conn.c --------------------------------------------------------------- */

/* Sends protocol bytes to one side, encrypting them when it speaks TLS; a
 * failed write to the client closes the session, one to the server ends
 * writing to it (conn.c, write_failed). */
void pgt__conn_send(conn_t *c, const void *data, size_t len);

/* Writes bytes to one side as they are (no TLS). */
void pgt__conn_raw_send(conn_t *c, const uint8_t *data, size_t len);

/* Sends whatever ciphertext OpenSSL has produced for c. */
void pgt__conn_flush_tls(conn_t *c);

/* Appends bytes to c->pend: 0, or -1 out of memory. */
int pgt__pend_append(conn_t *c, const uint8_t *data, size_t len);

/* Drops the first n bytes of c->pend. */
void pgt__pend_consume(conn_t *c, size_t n);

/* Takes the bytes kept in c->pend out of c: the caller frees them; *n is
 * their length. */
uint8_t *pgt__pend_take(conn_t *c, size_t *n);

/* ---- session.c ------------------------------------------------------------ */

/* Closes a side now, whatever is still queued to it. */
void pgt__conn_close_now(conn_t *c);

/* Starts the 5 s guard (PGT_FLUSH_TIMEOUT_MS) after which a session that is
 * closing, or whose server no longer takes writes, ends. */
void pgt__session_flush_guard(pgt_session_t *s);

/* The state machine's one transition function (set_state), for the
 * session's other files. */
void pgt__set_state(pgt_session_t *s, state_t next);

/* Ends the session without a word to the client (it left, or asked to);
 * reason goes to the log. */
void pgt__session_close(pgt_session_t *s, const char *reason);

/* Closes a side once everything queued to it has been written. */
void pgt__conn_close(conn_t *c);

/* Starts or stops reading from c as c->want_read and c->paused say. */
void pgt__conn_update_reading(conn_t *c);

/* The one failure exit: a FATAL ErrorResponse with sqlstate to the client
 * (when the stream towards it can carry one), then close. */
void pgt__session_fail(pgt_session_t *s, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Book-keeping (metering, replies owed, state) for a client message of
 * type with body[0..blen) that goes upstream now. */
void pgt__client_account(pgt_session_t *s, uint8_t type, const uint8_t *body, size_t blen);

/* Client bytes after the startup packet: framed and forwarded, or kept in
 * client.pend while something is held. */
void pgt__pass_client(pgt_session_t *s, const uint8_t *data, size_t len);

/* Backpressure while pgtally holds a client's messages (its EXPLAIN or a
 * refusal's stand-in is upstream): what the client sends meanwhile waits in
 * client.pend, and past the high-water mark pgtally stops reading from the
 * client until the hold ends. Call it when client.pend grows during a hold
 * and when the hold ends. */
void pgt__hold_reading(pgt_session_t *s);

/* Server bytes framed, metered and forwarded to the client. */
void pgt__relay_server(pgt_session_t *s, const uint8_t *data, size_t len);

/* One whole message msg[0..total) for the client, as the conversation
 * model classified it in *r: metered, then sent, or held while early. */
void pgt__deliver(pgt_session_t *s, const uint8_t *msg, size_t total, const pgt_conv_reply_t *r);

/* Classifies a server message of type with body[0..blen) (conv.h); the
 * messages the server ignored ahead of it are told to the meter first. */
void pgt__conv_reply(pgt_session_t *s, uint8_t type, const uint8_t *body, size_t blen,
                     pgt_conv_reply_t *r);

/* Takes the messages the server skipped behind the last reply: the
 * client's are told to the meter. Returns whether any was pgtally's. */
bool pgt__take_skipped(pgt_session_t *s);

/* Sends pgtally's own messages buf[0..len) upstream, each told to the
 * conversation model as pgtally's. */
void pgt__send_ours(pgt_session_t *s, const uint8_t *buf, size_t len);

/* What server_whole does with one whole server message msg[0..total). */
typedef void (*whole_fn)(pgt_session_t *s, uint8_t type, const uint8_t *msg, size_t total);
/* Whether server_whole goes on taking messages whole. */
typedef bool (*still_fn)(const pgt_session_t *s);

/* Server bytes taken whole message by whole message (up to max bytes each),
 * each given to fn, while still(s) holds; the rest goes on as usual. */
void pgt__server_whole(pgt_session_t *s, const uint8_t *data, size_t len, int64_t max,
                       still_fn still, whole_fn fn);

/* ---- judge.c (besides what is declared below) ------------------------------ */

/* A client message reported by its head (the framer's f->head: a Query or
 * Parse longer than the capture limit, of which only the first
 * PGT_INTERCEPT_MAX_SQL bytes are known). A Query is judged on them; one
 * to refuse makes the framer stop in front of it. */
void pgt__judge_head(pgt_session_t *s, uint8_t type, const uint8_t *head, size_t hlen);

/* ---- explain.c ------------------------------------------------------------ */

/* Writes to out pgtally's own name which of session s: "pgtally_" and 16
 * hex digits of random bytes drawn when the session started, different for
 * OWN_EXPLAIN and OWN_REFUSED, so that no client can know, take or derive
 * one from the other. */
void pgt__own_name(const pgt_session_t *s, own_name_t which, char out[OWN_NAME_SIZE]);

/* Whether a Query may be held at the loop (nothing in flight, no failed
 * transaction block, metering on, not draining). */
bool pgt__may_hold(const pgt_session_t *s);

/* Whether a held Query may be explained first (may_hold and an estimator). */
bool pgt__may_explain(const pgt_session_t *s);

/* Whether a simple Query may be held (for its EXPLAIN, or refused through
 * a stand-in): pgt__may_hold, and no extended-protocol message since the
 * last Sync. After one the server may be skipping to that Sync after an
 * error (protocol docs, "Extended Query": messages are discarded until
 * Sync), and would discard pgtally's EXPLAIN or stand-in with the rest. */
bool pgt__may_hold_query(const pgt_session_t *s);

/* Ends the messages pgtally injects, built in mb over s->explain_msg, with
 * a Flush (never a Sync: the client's implicit transaction stays as it
 * left it). Returns true with s->explain_msg_len set, or false (the buffer
 * was too small) with s->explain_msg freed. */
bool pgt__flush_msgs(pgt_session_t *s, pgt_msgbuf_t *mb);

/* Builds in s->explain_msg the Query message of the EXPLAIN sql. Returns
 * false when out of memory. */
bool pgt__explain_query_msg(pgt_session_t *s, const char *sql);

/* Plans the extended EXPLAIN of a client's Bind body[0..blen). Returns true
 * when its messages are ready in s->explain_msg; s->est holds the estimate
 * either way (key 0 when none). */
bool pgt__plan_bind(pgt_session_t *s, const uint8_t *body, size_t blen);

/* The statement a client's Bind body[0..blen) binds (owned by the
 * intercept), with its parameter types; NULL when unknown. */
const pgt_text_t *pgt__bind_statement(const pgt_session_t *s, const uint8_t *body, size_t blen,
                                      const uint8_t **types, size_t *types_len);

/* Sends s->explain_msg (and frees it) ahead of the held Query or Bind at
 * the start of client.pend. */
void pgt__start_explain(pgt_session_t *s);

/* Server bytes while pgtally's EXPLAIN or a refused Query's stand-in is
 * upstream (s->explaining or s->refusing). */
void pgt__explain_data(pgt_session_t *s, const uint8_t *data, size_t len);

/* The held message (qlen bytes at the start of client.pend) has been dealt
 * with: what the client sent after it goes on as usual. */
void pgt__release_held(pgt_session_t *s, size_t qlen);

/* Answers a held Query with an ERROR (sqlstate, message, hint or NULL) and
 * ReadyForQuery, as the server would have outside a transaction block. */
void pgt__answer_error(pgt_session_t *s, const char *sqlstate, const char *message,
                       const char *hint);

/* ---- judge.c -------------------------------------------------------------- */

/* Whether budgets apply to the session's user, database and application. */
bool pgt__budgets_apply(const pgt_session_t *s);
/* Whether a statement of s needs judging: budgets apply, or rules by shape
 * are in force (judge.c). */
bool pgt__judge_due(const pgt_session_t *s);

/* Where a judged statement's text came from, as its ticket needs to know
 * (docs/escrow.md): the Bind that runs it, or the first bytes of a Query
 * too long to capture. */
typedef struct pgt_judged {
    const uint8_t *bind; /* the body of the Bind that runs it, or NULL */
    size_t bind_len;     /* its length */
    size_t text_len;     /* bytes of the text the ledger records it by; 0: all */
} pgt_judged_t;

/* Checks the statement sql[0..len) (estimate in s->est; from where src
 * says, NULL: a whole Query) against the budgets. Returns true when it is
 * refused (can_refuse), with the reason in s->verdict (owned by s);
 * otherwise sends the verdict's warning and notice. */
bool pgt__judge(pgt_session_t *s, const char *sql, size_t len, const pgt_judged_t *src,
                bool can_refuse);

/* Checks a client's Bind body[0..blen) (whole, or its head only) against
 * the budgets. Returns true when it is refused: s->verdict is set and the
 * stand-in is in s->explain_msg, or (a whole Bind pipelined behind
 * Executes) s->awaiting is AWAIT_BIND. */
bool pgt__judge_bind(pgt_session_t *s, const uint8_t *body, size_t blen, bool whole);

/* Keeps in s->subst the ErrorResponse of verdict v. Returns false when out
 * of memory. */
bool pgt__set_subst(pgt_session_t *s, const pgt_verdict_t *v);

/* Builds in s->explain_msg the stand-in of a refused Bind and marks the
 * session as holding it. Returns false when out of memory. */
bool pgt__refuse_bind_msgs(pgt_session_t *s);

/* Refuses the held Query while the ledger cannot record it
 * (ledger.on_failure = closed). */
void pgt__refuse_held(pgt_session_t *s);

/* Tells the alerts that a statement of s was refused, or is being
 * cancelled, for verdict v. */
void pgt__tell_refused(pgt_session_t *s, const pgt_verdict_t *v);

/* Refuses the held Query for the budget in s->verdict (which it takes). */
void pgt__refuse_query(pgt_session_t *s);

/* What a refused statement pipelined behind others waits for
 * (s->awaiting): to be refused (AWAIT_QUERY, AWAIT_BIND), or, under the
 * guard, to be explained once nothing is ahead of it (AWAIT_PLAN_QUERY,
 * AWAIT_PLAN_BIND). */
enum {
    AWAIT_NONE = 0,
    AWAIT_QUERY = 'Q',
    AWAIT_BIND = 'B',
    AWAIT_PLAN_QUERY = 'q',
    AWAIT_PLAN_BIND = 'b'
};

/* Holds the statement s->est describes, which cannot be explained now
 * (something is ahead of it), until it can be (s->awaiting = what): the
 * guard judges every plan, and only an EXPLAIN gives one. Returns false
 * when it is not held. */
bool pgt__guard_hold(pgt_session_t *s, uint8_t what);

/* Whether the runaway-join guard is on for s: [guard] limits or a budget
 * of its user's with --max-rows, and estimate.mode = explain. */
bool pgt__guard_on(const pgt_session_t *s);

/* How the statements of s may be explained: always under the guard, else
 * when it pays (PGT_EXPLAIN_*). */
int pgt__explain_level(const pgt_session_t *s);

/* Whether a statement judged now could be refused once what is ahead of
 * it is answered: the server neither skips nor reads COPY data. */
bool pgt__may_await(const pgt_session_t *s);

/* Sends pgtally's Flush ahead of the held statement s->awaiting names, so
 * that the server writes out the replies ahead of it. */
void pgt__await_start(pgt_session_t *s);

/* After a reply to the client while s->awaiting: once nothing ahead of the
 * held statement is owed, it is refused as one sent alone would be; when
 * it can no longer be (a message ahead failed, or began a COPY), it goes
 * upstream as it came, and the server treats it as it would have direct. */
void pgt__await_check(pgt_session_t *s);

/* ---- console_session.c: the admin console (database pgtally) ---------------- */

/* Called with the parsed startup packet st (len bytes at the start of
 * client.pend). For the console's database, checks the user against
 * [admin] and rewrites the packet for [admin] auth_database, so that the
 * server checks the login. Returns 0 (go on and connect upstream), or -1
 * when the session has failed. */
int pgt__console_startup(pgt_session_t *s, const pgt_startup_t *st, size_t len)
    __attribute__((warn_unused_result));

/* A server message after AuthenticationOk of a console login. Returns true
 * when the console took it (ParameterStatus, BackendKeyData, notices and
 * ReadyForQuery, at which it takes over from the server); false for the
 * rest (an ErrorResponse), which goes on as usual. */
bool pgt__console_server(pgt_session_t *s, uint8_t type, const uint8_t *body, size_t blen);

/* Client bytes in ST_CONSOLE. */
void pgt__console_input(pgt_session_t *s, const uint8_t *data, size_t len);

/* Bytes were written to the console's client: it may go on. */
void pgt__console_wrote(pgt_session_t *s);

/* Frees the console's state; work still running on a worker is orphaned. */
void pgt__console_free(pgt_session_t *s);

#endif
