/* The conversation between client, pgtally and server: one ordered account
 * of what the server owes and to whom. Every message that goes upstream,
 * the client's and pgtally's own (its EXPLAIN, a refusal's stand-in), is
 * told to the model as it is sent; every message the server sends is
 * classified by it: which message it answers, whether it is the last
 * answer to it, and whether the client would have seen it yet. The model
 * follows PostgreSQL's rules (protocol docs, "Message Flow"; postgres.c):
 *
 * - a Query, FunctionCall and Sync are answered up to ReadyForQuery; a
 *   Parse, Bind, Close and Describe by one reply (Describe of a statement:
 *   ParameterDescription, then RowDescription or NoData), an Execute up to
 *   CommandComplete, EmptyQueryResponse or PortalSuspended; an
 *   ErrorResponse ends any of them except a Query, FunctionCall or Sync;
 * - after an error in the extended protocol (Parse, Bind, Describe,
 *   Execute, Close) the server skips every message up to the next Sync,
 *   Queries and FunctionCalls included: they are answered by nothing;
 * - while the server reads COPY data it ignores Sync and Flush, and any
 *   other message ends the COPY with an error (and is lost); a message sent
 *   behind a COPY that fails on its data may be read as usual instead,
 *   which only the COPY's end and the replies tell;
 * - Flush, CopyData, CopyDone and CopyFail outside a COPY, and Terminate,
 *   are answered by nothing.
 *
 * The server writes its replies out at a Sync, Flush, Query or
 * FunctionCall, and at an ErrorResponse. A reply to a client's message
 * that arrives because of a Flush or Query pgtally sent, before any the
 * client sent after that message, is early: direct, the client would not
 * have it yet. An ErrorResponse never is.
 *
 * Pure: no I/O, no clock; only the loop thread touches one. */
#ifndef PGTALLY_CONV_H
#define PGTALLY_CONV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Who sent a message upstream. */
typedef enum { PGT_CONV_CLIENT = 0, PGT_CONV_OURS = 1 } pgt_conv_from_t;

/* A message the server owes replies to. */
typedef struct {
    uint64_t seq;   /* order sent, from 1 */
    uint8_t type;   /* frontend message type: Q P B D E C S F, or c (the end of COPY data) */
    uint8_t from;   /* pgt_conv_from_t */
    uint8_t tag;    /* the sender's own mark (pgtally's: what its message is for) */
    uint8_t flags;  /* internal */
    uint32_t lines; /* internal: COPY data lines sent before it, since the last Query or Execute */
} pgt_conv_entry_t;

/* What a server message is. */
typedef struct {
    pgt_conv_entry_t to;            /* the message it answers; to.type 0: none (nothing owed, or a
                                       NotificationResponse, which answers nothing) */
    bool ends;                      /* it is the last reply to that message */
    bool early;                     /* a reply to the client's message that the client would not
                                       have yet (see above): hold it until the client's next Sync,
                                       Flush, Query or FunctionCall goes upstream */
    uint32_t skipped;               /* messages behind it that the server skips or never answers:
                                       take each with pgt_conv_take_skipped before the next reply */
    const pgt_conv_entry_t *before; /* messages ahead of it that the server ignored (Syncs
                                       sent during a COPY that failed on its data), to be
                                       dealt with before the reply; nbefore of them */
    uint32_t nbefore;
} pgt_conv_reply_t;

/* What pgt_conv_sent says of a message. */
enum {
    PGT_CONV_OWED = 1,    /* the server owes it replies */
    PGT_CONV_SKIPPED = 2, /* the server will skip it (after an error, to the next Sync) */
    PGT_CONV_FLUSHES = 4, /* a client's message that makes the server write its replies
                             out: early replies held for the client may go now */
};

typedef struct pgt_conv {
    pgt_conv_entry_t *q;      /* ring of owed messages, oldest at head */
    uint32_t cap;             /* its size, a power of two */
    uint32_t head;            /* index of the oldest */
    uint32_t len;             /* entries in it */
    uint32_t skipping;        /* entries at the head to take with pgt_conv_take_skipped */
    uint32_t readies;         /* ReadyForQuery messages owed */
    uint32_t ours;            /* pgtally's entries in the ring */
    uint32_t execs;           /* Query and Execute entries in the ring (either may start a COPY) */
    uint64_t next_seq;        /* seq of the next message */
    uint64_t client_flushed;  /* the client's messages up to this seq are written out */
    uint64_t ours_flushed;    /* pgtally's Flush or Query wrote out those before this seq */
    bool ignoring;            /* the server skips messages until a Sync not yet sent */
    bool copy_in;             /* the server reads COPY data (CopyInResponse came, and no
                                 CopyDone or CopyFail has been sent since) */
    bool copying;             /* the head entry's COPY has begun and not ended */
    bool data_sent;           /* CopyData sent since the last Query or Execute */
    pgt_conv_entry_t *before; /* room for pgt_conv_reply_t.before */
    uint32_t before_cap;      /* its size */
    uint64_t lines_sent;      /* newlines in the CopyData sent so far (pgt_conv_lines) */
    uint64_t lines_base;      /* lines_sent at the last Query or Execute */
    uint64_t error_line;      /* the COPY data line the next ErrorResponse names, 0: none
                                 (pgt_conv_error_line) */
    bool batch_open;          /* extended-protocol messages since the last Sync */
    bool failed;              /* out of memory: the account is lost */
} pgt_conv_t;

/* Most messages owed at once; past it the caller stops reading the client. */
#define PGT_CONV_MAX (1u << 16)

void pgt_conv_init(pgt_conv_t *cv);
void pgt_conv_free(pgt_conv_t *cv);

/* A message of type from `from` goes upstream (tag: the sender's mark,
 * kept in its entry). Returns PGT_CONV_* flags; on out of memory sets
 * cv->failed. */
int pgt_conv_sent(pgt_conv_t *cv, uint8_t type, pgt_conv_from_t from, uint8_t tag);

/* Before pgt_conv_sent: the newlines in all the CopyData sent so far
 * (the framer counts them). A Sync sent during a COPY that fails on its
 * data is then settled by the failing line's number (pgt_conv_error_line):
 * the server read it as usual if the line came before it, and ignored it
 * if after. */
static inline void pgt_conv_lines(pgt_conv_t *cv, uint64_t lines)
{
    cv->lines_sent = lines;
}

/* Before pgt_conv_reply of an ErrorResponse that ends a COPY FROM STDIN in
 * text format: the data line it names (pgt_wire_error_copy_line); 0 when
 * unknown (CSV, binary, another message), and the Syncs sent during the
 * COPY are told by their replies, as far as they can be. */
static inline void pgt_conv_error_line(pgt_conv_t *cv, uint64_t line)
{
    cv->error_line = line;
}

/* A server message of type arrived (sqlstate: an ErrorResponse's code, or
 * NULL): what it is, in *r. */
void pgt_conv_reply(pgt_conv_t *cv, uint8_t type, const char *sqlstate, pgt_conv_reply_t *r);

/* Takes the next message the server skipped (after a reply with
 * r.skipped > 0). Returns false when there is none. */
bool pgt_conv_take_skipped(pgt_conv_t *cv, pgt_conv_entry_t *out);

/* ReadyForQuery messages the server owes. */
static inline uint32_t pgt_conv_readies(const pgt_conv_t *cv)
{
    return cv->readies;
}

/* pgtally's own messages still owed replies. */
static inline uint32_t pgt_conv_ours(const pgt_conv_t *cv)
{
    return cv->ours;
}

/* Messages owed replies. */
static inline uint32_t pgt_conv_owed(const pgt_conv_t *cv)
{
    return cv->len;
}

/* Whether the server will answer something owed for certain: not only
 * messages it skips and Syncs sent during a COPY, which it may ignore. */
bool pgt_conv_will_answer(const pgt_conv_t *cv);

/* Whether a simple Query of pgtally's may go upstream now and be answered
 * on its own: nothing owed, no extended-protocol batch open (its implicit
 * transaction would end with pgtally's Query), no skipping, no COPY. */
bool pgt_conv_may_query(const pgt_conv_t *cv);

/* Whether extended-protocol messages of pgtally's may go upstream now and
 * be answered: the server is neither skipping to a Sync nor reading COPY
 * data, and no Query or Execute is owed (either may start a COPY, which
 * would read pgtally's messages as its data and fail). */
bool pgt_conv_may_extend(const pgt_conv_t *cv);

#endif
