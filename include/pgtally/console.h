/* pgtally's admin console, the parts without I/O: the parser of its
 * commands (not SQL: keywords, integers and single-quoted strings), the
 * builder of the result sets it answers with, and the commands that read
 * or change the ledger, which run on a worker thread. The session side
 * (login, messages, dispatch) is proxy/console_session.c. */
#ifndef PGTALLY_CONSOLE_H
#define PGTALLY_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/buf.h"
#include "pgtally/escrow.h"
#include "pgtally/ledger.h"
#include "pgtally/period.h"
#include "pgtally/rules.h"

/* The virtual database that opens the console. */
#define PGT_CONSOLE_DATABASE "pgtally"

/* Largest message a console client may send, and largest answer built. */
#define PGT_CONSOLE_MAX_MESSAGE 65536
#define PGT_CONSOLE_MAX_RESULT (16 * 1024 * 1024)
/* Rows of SHOW QUERIES by default, and at most. */
#define PGT_CONSOLE_QUERIES_DEFAULT 20
#define PGT_CONSOLE_QUERIES_MAX 1000
/* Rows of SHOW SHAPES, SHOW TABLES, SHOW REPEATS and SHOW REGRESSIONS at
 * most. */
#define PGT_CONSOLE_LIST_MAX 1000

/* The commands: verb, syntax, whether it reads the ledger (runs on a
 * worker), whether it needs an admin user (a stats user may not). */
#define PGT_CONSOLE_CMD_MAP(X)                                                                     \
    X(SHOW_USAGE, "SHOW USAGE [DAY|WEEK|MONTH]", true, false)                                      \
    X(SHOW_BUDGETS, "SHOW BUDGETS", true, false)                                                   \
    X(SHOW_QUERIES, "SHOW QUERIES [n]", true, false)                                               \
    X(SHOW_SHAPES, "SHOW SHAPES", true, false)                                                     \
    X(SHOW_TABLES, "SHOW TABLES [DAY|WEEK|MONTH]", true, false)                                    \
    X(SHOW_SESSIONS, "SHOW SESSIONS", false, false)                                                \
    X(SHOW_RULES, "SHOW RULES", true, false)                                                       \
    X(SHOW_ALERTS, "SHOW ALERTS", true, false)                                                     \
    X(SHOW_REPEATS, "SHOW REPEATS", true, false)                                                   \
    X(SHOW_REGRESSIONS, "SHOW REGRESSIONS", true, false)                                           \
    X(SHOW_TICKETS, "SHOW TICKETS", true, false)                                                   \
    X(SHOW_CONFIG, "SHOW CONFIG", false, false)                                                    \
    X(SHOW_VERSION, "SHOW VERSION", false, false)                                                  \
    X(BLOCK_SHAPE, "BLOCK SHAPE 'fingerprint' [MESSAGE 'text']", true, true)                       \
    X(UNBLOCK_SHAPE, "UNBLOCK SHAPE 'fingerprint'", true, true)                                    \
    X(APPROVE_TICKET, "APPROVE 'ticket' [FOR 'duration'] [MAX 'amount'] [SHAPE ONLY]", true, true) \
    X(CANCEL_SESSION, "CANCEL SESSION n", false, true)                                             \
    X(RELOAD, "RELOAD", false, true)

typedef enum {
#define X(name, syntax, ledger, admin) PGT_CONSOLE_##name,
    PGT_CONSOLE_CMD_MAP(X)
#undef X
        PGT_CONSOLE_EMPTY, /* nothing but blanks, comments or a ';' */
} pgt_console_verb_t;

/* One parsed command. */
typedef struct pgt_console_cmd {
    pgt_console_verb_t verb;            /* which */
    pgt_period_t period;                /* SHOW USAGE, SHOW TABLES: the period (default day) */
    int64_t n;                          /* SHOW QUERIES: rows; CANCEL SESSION: the session */
    uint64_t fingerprint;               /* BLOCK/UNBLOCK SHAPE: the shape */
    bool has_message;                   /* BLOCK SHAPE: MESSAGE given */
    char message[PGT_RULE_MESSAGE_MAX]; /* ... and its text; APPROVE: MAX's amount, or "" */
    char ticket[PGT_TICKET_LEN];        /* APPROVE: the ticket */
    int64_t for_us;                     /* APPROVE: FOR (default 2 hours) */
    bool shape_only;                    /* APPROVE: SHAPE ONLY */
} pgt_console_cmd_t;

/* Parses the text of a Query, text[0..len). Returns 0 with *out set, or -1
 * with the SQLSTATE in sqlstate (42601 or 0A000) and what is wrong (naming
 * the commands) in err. */
int pgt_console_parse(const char *text, size_t len, pgt_console_cmd_t *out, char sqlstate[6],
                      char *err, size_t errlen) __attribute__((warn_unused_result));

/* The syntax of a verb, its command tag ("SHOW", "BLOCK", ...), whether it
 * reads the ledger, whether only admin users may run it. */
const char *pgt_console_syntax(pgt_console_verb_t v);
const char *pgt_console_tag(pgt_console_verb_t v);
bool pgt_console_reads_ledger(pgt_console_verb_t v);
bool pgt_console_admin_only(pgt_console_verb_t v);

/* ---- Result sets, written as protocol messages into a pgt_buf_t ---- */

/* RowDescription of n text columns. */
void pgt_console_columns(pgt_buf_t *b, const char *const *names, size_t n);
/* RowDescription of the columns of v's answer (README, "Console"). */
void pgt_console_header(pgt_buf_t *b, pgt_console_verb_t v);
/* DataRow of n cells (NULL: SQL NULL). Returns false once b is over
 * PGT_CONSOLE_MAX_RESULT bytes (or failed): stop adding rows. */
bool pgt_console_row(pgt_buf_t *b, const char *const *cells, size_t n);
/* CommandComplete with tag ("SHOW", "BLOCK", ...). */
void pgt_console_complete(pgt_buf_t *b, const char *tag);
/* ErrorResponse of severity ERROR (hint may be NULL). */
void pgt_console_error(pgt_buf_t *b, const char *sqlstate, const char *message, const char *hint);
/* The answer is too large (or out of memory): b is emptied and holds an
 * ErrorResponse instead. Call after building when b->failed or b->len is
 * over the cap; returns whether it did. */
bool pgt_console_cap(pgt_buf_t *b);

/* ---- Commands on the ledger (run on a worker thread) ---- */

/* What a ledger command needs besides the command. */
typedef struct pgt_console_env {
    pgt_ledger_where_t where;     /* the ledger */
    const char *currency;         /* of amounts */
    const char *user;             /* who runs it (created_by of a rule) */
    int64_t regression_min_micro; /* SHOW REGRESSIONS: [report] regression_min_cost */
    int64_t duplicate_min_runs;   /* SHOW REPEATS: [report] duplicate_min_runs */
} pgt_console_env_t;

/* Runs cmd (pgt_console_reads_ledger) against the ledger and appends its
 * answer (a result set and CommandComplete, or an ErrorResponse) to out.
 * Blocks on the ledger: never call it on the loop. */
void pgt_console_run_ledger(const pgt_console_cmd_t *cmd, const pgt_console_env_t *env,
                            pgt_buf_t *out);

#endif
