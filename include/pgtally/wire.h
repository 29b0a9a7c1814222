/* The PostgreSQL v3 wire protocol codec: pure functions, no I/O. It frames
 * messages from a byte stream without copying payloads, parses startup
 * packets, and reads the few fields pgtally needs. */
#ifndef PGTALLY_WIRE_H
#define PGTALLY_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/msgbuf.h"

/* Request codes sent in place of a protocol version (protocol docs,
 * "Message Formats": SSLRequest, GSSENCRequest, CancelRequest). */
#define PGT_PROTO_V3 196608u /* 3.0 */
#define PGT_CODE_CANCEL 80877102u
#define PGT_CODE_SSL 80877103u
#define PGT_CODE_GSSENC 80877104u

/* Error codes of the codec. */
#define PGT_WIRE_EBADLEN (-1) /* length field out of range */
#define PGT_WIRE_EFORMAT (-2) /* malformed body */
/* Positive results of pgt_framer_feed: where it stopped is in stopped_at. */
#define PGT_WIRE_PARTIAL 1 /* a captured message is not all here yet */
#define PGT_WIRE_STOPPED 2 /* the callback asked to stop after a message */

/* A bounds-checked reader over one message body. Getters return false and
 * leave the reader unchanged when the data runs out. */
typedef struct pgt_reader {
    const uint8_t *data; /* bytes being read (not owned) */
    size_t len;          /* number of bytes */
    size_t pos;          /* next byte to read */
} pgt_reader_t;

void pgt_reader_init(pgt_reader_t *r, const void *data, size_t len);
bool pgt_reader_u8(pgt_reader_t *r, uint8_t *out);
bool pgt_reader_u16(pgt_reader_t *r, uint16_t *out);
bool pgt_reader_u32(pgt_reader_t *r, uint32_t *out);
/* Moves past n bytes. */
bool pgt_reader_skip(pgt_reader_t *r, size_t n);
/* Returns a NUL-terminated string inside the buffer (not copied). */
bool pgt_reader_cstr(pgt_reader_t *r, const char **out);

static inline uint32_t pgt_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Streaming framer for typed messages (type byte + int32 length). It sees
 * every byte of one direction once, keeps only the 5-byte header and the
 * first bytes of each body, and reports each message when it ends. */
#define PGT_FRAMER_PEEK 32
typedef struct pgt_framer {
    uint8_t hdr[5];                /* header bytes gathered so far */
    uint8_t hdr_have;              /* how many of hdr[] are valid */
    uint8_t peek_have;             /* how many of peek[] are valid */
    uint8_t type;                  /* type byte of the current message */
    uint32_t len;                  /* length field of the current message */
    uint32_t body_left;            /* body bytes of the current message still to come */
    int64_t max_len;               /* largest length field accepted */
    uint8_t peek[PGT_FRAMER_PEEK]; /* first bytes of the current body */
    const uint8_t *capture;        /* capture[type] != 0: report whole bodies of that type */
    uint32_t capture_max;          /* largest body reported whole */
    bool heads;                    /* report the head of a captured type too long to capture */
    bool head;                     /* during the callback: the message reported is such a head */
    bool stop;                     /* set by the callback: stop after this message */
    size_t msg_start;              /* offset in the fed bytes of the message reported */
    size_t stopped_at;             /* offset where feeding stopped (PARTIAL, STOPPED) */
    bool count_lines;              /* count the newlines of CopyData bodies (set by the caller) */
    uint64_t lines;                /* newlines in the CopyData bodies fed so far */
} pgt_framer_t;

/* Called once per complete message with its type, length field, and the
 * first min(len-4, PGT_FRAMER_PEEK) bytes of its body; for captured types
 * (see pgt_framer_capture) the whole body instead, which then lies in the
 * fed bytes at msg_start + 5. The bytes are only valid during the call. A
 * callback may set f->stop after a captured message. */
typedef void (*pgt_framer_cb)(void *arg, uint8_t type, uint32_t len, const uint8_t *peek,
                              size_t peek_len);

/* Starts a framer that accepts length fields from 4 to max_len. */
void pgt_framer_init(pgt_framer_t *f, int64_t max_len);

/* Asks for whole messages of the types with types[t] != 0 (a 256-entry
 * table that must outlive the framer) whose body is at most max bytes. Such
 * a message is only reported when it is all in the bytes fed: otherwise
 * pgt_framer_feed stops in front of it with PGT_WIRE_PARTIAL, and the
 * caller feeds those bytes again with more behind them. Nothing of it has
 * then been passed on, so the caller may still hold or drop it. */
void pgt_framer_capture(pgt_framer_t *f, const uint8_t *types, uint32_t max);

/* With on, a captured message whose body is longer than the capture max is
 * first reported by its head: once its first max body bytes are in the
 * bytes fed (PGT_WIRE_PARTIAL until then), cb is called with f->head set and
 * those bytes (peek_len < len - 4). The callback may then set f->stop:
 * pgt_framer_feed returns PGT_WIRE_STOPPED with stopped_at and msg_start
 * in front of the message, nothing of it consumed, and the caller must
 * take or skip its len + 1 bytes before feeding again. Otherwise the
 * message streams and is reported again when it ends, as without heads. */
void pgt_framer_heads(pgt_framer_t *f, bool on);

/* Feeds bytes. Calls cb for each message completed. Returns 0 when all
 * were consumed; PGT_WIRE_PARTIAL or PGT_WIRE_STOPPED with the bytes
 * consumed in f->stopped_at; or PGT_WIRE_EBADLEN as soon as a header
 * carries a length outside 4..max_len (the offending type and length stay
 * in f->type and f->len). */
int pgt_framer_feed(pgt_framer_t *f, const uint8_t *data, size_t len, pgt_framer_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* True when the stream sits between two messages. */
static inline bool pgt_framer_at_boundary(const pgt_framer_t *f)
{
    return f->hdr_have == 0 && f->body_left == 0;
}

/* Looks for one complete typed message at the start of buf. Returns 1 and
 * sets *type and *total (bytes including the type byte) when it is all
 * there, 0 when more bytes are needed, PGT_WIRE_EBADLEN for a length outside
 * 4..max_len. */
int pgt_wire_next(const uint8_t *buf, size_t len, int64_t max_len, uint8_t *type, size_t *total);

/* A parsed startup packet. Strings point into the packet. */
#define PGT_STARTUP_MAX_PARAMS 64
typedef struct pgt_startup {
    uint32_t code;                              /* protocol version or request code */
    const char *user;                           /* "user" parameter */
    const char *database;                       /* "database", or user when absent */
    const char *application_name;               /* or "" */
    uint32_t cancel_pid;                        /* CancelRequest: backend pid */
    uint32_t cancel_key;                        /* CancelRequest: secret key */
    int nparams;                                /* parameters in keys/values */
    const char *keys[PGT_STARTUP_MAX_PARAMS];   /* parameter names */
    const char *values[PGT_STARTUP_MAX_PARAMS]; /* parameter values */
} pgt_startup_t;

/* Why a startup packet was rejected; pgt_wire_startup_parse fills it. */
typedef struct pgt_startup_error {
    const char *sqlstate; /* e.g. "08P01" or "0A000" */
    char message[160];    /* what was wrong, for the client */
} pgt_startup_error_t;

/* Parses a startup-phase packet (length word included, pkt[0..len)). For
 * SSLRequest, GSSENCRequest and CancelRequest only code (and the cancel key)
 * is set. Returns 0, or PGT_WIRE_EFORMAT with err filled. */
int pgt_wire_startup_parse(const uint8_t *pkt, size_t len, pgt_startup_t *out,
                           pgt_startup_error_t *err) __attribute__((warn_unused_result));

/* Builds an ErrorResponse (severity "FATAL" or "ERROR") into mb. hint and
 * detail may be NULL. */
void pgt_wire_error(pgt_msgbuf_t *mb, const char *severity, const char *sqlstate,
                    const char *message, const char *detail, const char *hint);

/* Writes a NoticeResponse (severity WARNING, NOTICE...) to mb. */
void pgt_wire_notice(pgt_msgbuf_t *mb, const char *severity, const char *sqlstate,
                     const char *message);

/* Rewrites the body of an AuthenticationSASL message (after the int32 10)
 * without the SCRAM-SHA-256-PLUS mechanism. Writes a whole 'R' message to
 * mb. Returns 0 or PGT_WIRE_EFORMAT. */
int pgt_wire_sasl_strip_plus(const uint8_t *body, size_t len, pgt_msgbuf_t *mb)
    __attribute__((warn_unused_result));

/* Reads the severity ("FATAL", "ERROR", ...) from the start of an
 * ErrorResponse body; returns false when it is not there. */
bool pgt_wire_error_severity(const uint8_t *body, size_t len, char *out, size_t outlen);

/* Field `field` (protocol docs, "Error and Notice Message Fields") of an
 * ErrorResponse or NoticeResponse body, pointing into body; NULL when it
 * is not there. */
const char *pgt_wire_error_field(const uint8_t *body, size_t len, uint8_t field);

/* The COPY data line an ErrorResponse body names in its context ("COPY t,
 * line 3, column a: ..."), or 0 when it names none. */
uint64_t pgt_wire_error_copy_line(const uint8_t *body, size_t len);

/* The SQLSTATE (field C) of an ErrorResponse or NoticeResponse body;
 * false when there is none. */
bool pgt_wire_error_code(const uint8_t *body, size_t len, char out[6]);

/* Writes to mb the whole ErrorResponse or NoticeResponse (type) of body
 * body[0..len) with its position field (P, in characters from 1) moved
 * shift characters back, as the error of a statement that pgtally sent
 * behind a prefix of its own; a position that then falls before the first
 * character is left out. Other fields are copied unchanged. Returns 0 or
 * PGT_WIRE_EFORMAT (mb's failed flag tells of a full buffer). */
int pgt_wire_error_shift_position(pgt_msgbuf_t *mb, uint8_t type, const uint8_t *body, size_t len,
                                  int32_t shift) __attribute__((warn_unused_result));

#endif
