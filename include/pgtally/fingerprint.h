/* Statement shapes with libpg_query: split a simple-protocol string into
 * statements, classify each, fingerprint it, and keep its normalized text
 * (constants replaced by $n). Also finds comments, for the tags module.
 * Runs on the meter's worker thread (one batch at a time), and caches what
 * it can. */
#ifndef PGTALLY_FINGERPRINT_H
#define PGTALLY_FINGERPRINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGT_STMT_KIND_MAP(X)                                                                       \
    X(SELECT, "select")                                                                            \
    X(INSERT, "insert")                                                                            \
    X(UPDATE, "update")                                                                            \
    X(DELETE, "delete")                                                                            \
    X(MERGE, "merge")                                                                              \
    X(COPY, "copy")                                                                                \
    X(DDL, "ddl")                                                                                  \
    X(UTILITY, "utility")                                                                          \
    X(TRANSACTION, "transaction")                                                                  \
    X(EXPLAIN, "explain")                                                                          \
    X(CALL, "call")                                                                                \
    X(EMPTY, "empty")                                                                              \
    X(UNPARSED, "unparsed")

typedef enum {
#define X(name, str) PGT_STMT_##name,
    PGT_STMT_KIND_MAP(X)
#undef X
} pgt_stmt_kind_t;

/* Printable name of a kind ("select"). */
const char *pgt_stmt_kind_name(pgt_stmt_kind_t k);

/* One statement of a query string. */
typedef struct pgt_stmt {
    size_t offset;        /* byte offset of the statement in the string */
    size_t length;        /* its length in bytes (without the ';') */
    pgt_stmt_kind_t kind; /* what it does */
    bool explainable;     /* EXPLAIN accepts it (select, insert, ..., execute, declare) */
} pgt_stmt_t;

/* Splits sql (NUL-terminated) into at most max statements. Returns how
 * many were found (0 for an empty string); a string libpg_query cannot
 * split is returned as one statement of kind PGT_STMT_UNPARSED. The return
 * is at most max: a return of max means there may be more. Statements that
 * hold only comments or whitespace are left out (PostgreSQL answers them
 * with nothing), so this never returns PGT_STMT_EMPTY; offset and length
 * exclude leading and trailing whitespace. */
int pgt_fp_split(const char *sql, pgt_stmt_t *out, int max);

/* True when budgets never refuse sql[0..len) (need not be NUL-terminated):
 * every statement in it starts with a word of transaction control (BEGIN,
 * START, COMMIT, END, ROLLBACK, ABORT, SAVEPOINT, RELEASE) or of session
 * settings (SET, SHOW, RESET, DISCARD, DEALLOCATE, CLOSE, LISTEN,
 * UNLISTEN), in any case, read past whitespace and comments as PostgreSQL's
 * scanner reads them (-- to the end of the line, nested C-style comments).
 * PREPARE TRANSACTION is not one of them. Also true for text that holds no
 * statement. A single statement (no ';' but perhaps a final one) is decided
 * from its first word without libpg_query; several are split with
 * pgt_fp_split (a string it cannot parse counts as one statement), and 16
 * or more give false. Cheap enough for the event loop. */
bool pgt_fp_never_refused(const char *sql, size_t len);

/* The shape of one statement: fingerprint, kind and normalized text. */
typedef struct pgt_shape {
    uint64_t fingerprint;   /* libpg_query fingerprint; for unparsed text, a hash of it */
    pgt_stmt_kind_t kind;   /* as pgt_fp_split */
    bool explainable;       /* as pgt_fp_split */
    const char *normalized; /* constants as $n; owned by the cache, valid until the
                               next pgt_fp_shape call on the same cache */
} pgt_shape_t;

typedef struct pgt_fp_cache pgt_fp_cache_t;

/* Creates a cache of normalized texts keyed by fingerprint, holding up to
 * capacity shapes (LRU), and in front of it as many raw texts already seen
 * (texts up to 16 KB). A cache is not thread-safe: use one per thread. Also
 * tunes malloc (mallopt) once per process so libpg_query's many allocations
 * do not make glibc trim and regrow the heap. Returns NULL when out of
 * memory. */
pgt_fp_cache_t *pgt_fp_cache_new(size_t capacity);
void pgt_fp_cache_free(pgt_fp_cache_t *c);

/* Computes the shape of one statement (text[0..len), not NUL-terminated).
 * The normalized text is computed only the first time a fingerprint is
 * seen, and a text seen before is not parsed again. Comment-only text is
 * PGT_STMT_EMPTY. The normalized text has its comments removed and is cut
 * to PGT_FP_NORMALIZED_MAX bytes; for unparsable text it is only the first
 * PGT_FP_UNPARSED_KEEP bytes, as its literals may be personal data.
 * Returns 0, or -1 when out of memory. */
int pgt_fp_shape(pgt_fp_cache_t *c, const char *text, size_t len, pgt_shape_t *out);

#define PGT_FP_NORMALIZED_MAX 16384
#define PGT_FP_UNPARSED_KEEP 200

/* Counters of a cache, for tests and metrics. */
typedef struct pgt_fp_stats {
    uint64_t calls;        /* pgt_fp_shape calls */
    uint64_t text_hits;    /* calls answered from the exact-text cache, without parsing */
    uint64_t fingerprints; /* pg_query_fingerprint calls */
    uint64_t normalizes;   /* pg_query_normalize calls */
    uint64_t evictions;    /* entries dropped from either table to stay in bounds */
    size_t shapes;         /* normalized texts held (by fingerprint) */
    size_t texts;          /* raw texts held (exact-text cache) */
    size_t bytes;          /* bytes of text held by both tables */
} pgt_fp_stats_t;

/* Copies the counters of c into out. */
void pgt_fp_cache_stats(const pgt_fp_cache_t *c, pgt_fp_stats_t *out);

/* Shrinks [*off, *off + *len) of sql to exclude blanks at both ends and a
 * final ';', so that a statement has one text whether it came alone, in a
 * list, or through the extended protocol. */
void pgt_fp_trim(const char *sql, size_t *off, size_t *len);

/* True when sql[0..total) can hold only one statement: no ';' but perhaps
 * a last one followed by blanks (statements are separated by ';' and
 * nothing else). Sets the bounds of that statement without blanks and the
 * final ';', as pgt_fp_split gives them. Says nothing of
 * its syntax: pgt_fp_shape finds out whether it parses. */
bool pgt_fp_single(const char *sql, size_t total, size_t *off, size_t *len);

/* As pgt_fp_shape for a statement whose fingerprint, kind and
 * explainability are already known (found by another cache): only the
 * normalized text is looked up, and made when the fingerprint is new. */
int pgt_fp_shape_known(pgt_fp_cache_t *c, uint64_t fingerprint, pgt_stmt_kind_t kind,
                       bool explainable, const char *text, size_t len, pgt_shape_t *out);

/* Where one comment lies in a text: text[start..end), its delimiters
 * included. */
typedef struct pgt_fp_span {
    size_t start; /* byte offset of the comment's first byte */
    size_t end;   /* offset one past its last byte */
} pgt_fp_span_t;

/* Finds the comments of sql (NUL-terminated), both C-style (nested ones as
 * one comment) and -- to the end of the line, in order, as libpg_query's
 * scanner reads them (a comment-like run inside a string literal is not
 * one). Sets *out to a malloc'd array the caller frees (NULL when there are
 * none) and *n to its length. Returns 0, or -1 when the scanner fails (an
 * unterminated literal) or memory runs out; *out is then NULL. */
int pgt_fp_comments(const char *sql, pgt_fp_span_t **out, size_t *n)
    __attribute__((warn_unused_result));

/* The normalized text of sql (NUL-terminated) as the ledger keeps it:
 * constants as $n, comments removed, cut at PGT_FP_NORMALIZED_MAX bytes.
 * Returns a malloc'd string (*out_len its length), or NULL when libpg_query
 * cannot parse sql or out of memory. */
char *pgt_fp_normalize(const char *sql, size_t *out_len);

/* A hash of the constants of one statement sql[0..len) (need not be
 * NUL-terminated), read with libpg_query's scanner (strings and numbers,
 * not comments), mixed with params, a hash of the Bind parameters that
 * run it (0 for none). Two runs of one shape with the same constants have
 * the same hash; the constants are not recoverable from it except by
 * guessing them. Text the scanner cannot read, or over 1 MiB, is hashed
 * whole. Never 0. Cheap enough for the event loop on a refusal. */
uint64_t pgt_fp_constants_hash(const char *sql, size_t len, uint64_t params);

/* What an SQL statement does to the session's prepared statements and
 * cursors (portals). */
typedef enum {
    PGT_PREP_PREPARE,        /* PREPARE name [(types)] AS statement */
    PGT_PREP_DEALLOCATE,     /* DEALLOCATE [PREPARE] name */
    PGT_PREP_DEALLOCATE_ALL, /* DEALLOCATE [PREPARE] ALL */
    PGT_PREP_DECLARE,        /* DECLARE name ... CURSOR ... FOR statement */
    PGT_PREP_CLOSE,          /* CLOSE name */
    PGT_PREP_CLOSE_ALL,      /* CLOSE ALL */
    PGT_PREP_EXECUTE,        /* EXECUTE name [(params)]: runs a prepared statement */
    PGT_PREP_FETCH,          /* FETCH or MOVE ... name: runs a cursor's statement */
} pgt_prep_op_t;

/* Longest statement name the server keeps (NAMEDATALEN - 1), plus NUL. */
#define PGT_PREP_NAME_MAX 64

/* One PREPARE, DEALLOCATE, DECLARE or CLOSE in a query string. */
typedef struct pgt_prep {
    pgt_prep_op_t op;             /* what it does */
    char name[PGT_PREP_NAME_MAX]; /* the name as the server holds it ("" for ALL) */
    size_t body_offset;           /* PREPARE, DECLARE: where the statement after AS or FOR
                                     starts in sql */
    size_t body_length;           /* and its length, without blanks and a final ';' */
    bool hold;                    /* DECLARE: WITH HOLD (the cursor outlives its transaction) */
} pgt_prep_t;

/* Finds the PREPARE, DEALLOCATE, DECLARE and CLOSE statements of sql (NUL-terminated), in
 * order, as the parser reads them: names folded or unquoted and cut as
 * PostgreSQL does. Returns how many were written to out (at most max); 0
 * when there are none or sql does not parse (the server then runs none of
 * it). A string that holds neither word returns 0 without parsing, so this
 * is cheap enough for the event loop on ordinary statements. */
int pgt_fp_prepares(const char *sql, pgt_prep_t *out, int max);

/* Finds the EXECUTE, FETCH and MOVE statements of sql (NUL-terminated), in
 * order, as pgt_fp_prepares finds the others (name set, no body). */
int pgt_fp_runs_named(const char *sql, pgt_prep_t *out, int max);

/* Finds the statements of sql (NUL-terminated) that run a statement
 * written inside them: EXPLAIN ANALYZE, CREATE TABLE or MATERIALIZED VIEW
 * ... AS (not WITH NO DATA) and COPY (query) TO; out[i] is where that
 * inner statement is in sql (kind and explainable unset). Returns how many
 * were written (at most max); 0 without parsing when sql holds none of
 * those words. */
int pgt_fp_inner(const char *sql, pgt_stmt_t *out, int max);

/* The relations (tables, views, ...) that sql[0..len) names, from
 * libpg_query's parse tree (every RangeVar: FROM, JOIN, INSERT INTO,
 * UPDATE, DELETE, COPY, CREATE ... and subqueries), as the ledger keeps
 * them (pgt_plan_relations_json): a JSON array of [schema, relation,
 * share], "" as the schema of an unqualified name (not resolved against
 * any search_path), each named once, the same share for each (four
 * decimals, the first taking what rounding leaves, so they sum to 1), in
 * the order first named, at most 16. An unqualified name that a WITH
 * clause of the statement defines is not a relation. Returns a malloc'd
 * string, or NULL when sql names no relation, does not parse, or memory
 * runs out. Parses: call it off the event loop. */
char *pgt_fp_relations_json(const char *sql, size_t len);

#endif
