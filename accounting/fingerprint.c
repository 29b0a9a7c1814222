/* Statement shapes with libpg_query: splits a simple-protocol string into
 * statements, classifies each, fingerprints and normalizes them through two
 * bounded LRU tables, and finds comments for the tags module. All SQL
 * lexing is libpg_query's; this file only skips leading blanks to read a
 * first word. */
#include "pgtally/fingerprint.h"

#include "fingerprint_int.h"
#include "pgtally/text.h"

#include <jansson.h>
#include <malloc.h>
#include <pg_query.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Raw texts longer than this are not kept in the exact-text table. */
#define TEXT_MAX 16384
/* Bytes of raw text, and of normalized text, each table may hold. */
#define TEXT_BYTES_MAX ((size_t)16 << 20)
#define SHAPE_BYTES_MAX ((size_t)32 << 20)
/* glibc tuning: libpg_query allocates and frees in bursts, and with the
 * default dynamic thresholds glibc trims and regrows the heap thousands of
 * times while normalizing one long query (513 µs instead of 54 µs). */
#define MALLOC_TRIM_THRESHOLD (64 << 20)
#define MALLOC_MMAP_THRESHOLD (32 << 20)

#define COUNTOF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- kinds ---------------------------------------------------------------- */

static const char *const kind_names[] = {
#define X(name, str) [PGT_STMT_##name] = str,
    PGT_STMT_KIND_MAP(X)
#undef X
};

const char *pgt_stmt_kind_name(pgt_stmt_kind_t k)
{
    if ((unsigned)k >= COUNTOF(kind_names))
        return "unknown";
    return kind_names[k];
}

/* ---- bytes ---------------------------------------------------------------- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* True when w[0..n) is the lower-case ASCII keyword kw, in any case. */
bool pgt__fp_word_eq(const char *w, size_t n, const char *kw)
{
    size_t i = 0;
    for (; i < n && kw[i]; i++)
        if (lower(w[i]) != kw[i])
            return false;
    return i == n && kw[i] == '\0';
}

/* Words whose presence makes a scan worth doing (see refine_wanted). */
enum {
    HAS_INTO = 1 << 0,
    HAS_INSERT = 1 << 1,
    HAS_UPDATE = 1 << 2,
    HAS_DELETE = 1 << 3,
    HAS_MERGE = 1 << 4,
};

/* Which of those words s[0..n) holds, in any case, as whole words
 * ("deleted_at" does not hold "delete"). A prefilter only, in one pass: a
 * hit inside a string or a comment merely costs a scan. */
static unsigned words_present(const char *s, size_t n)
{
    static const struct {
        const char *word; /* lower-case */
        unsigned bit;     /* HAS_* */
    } words[] = {{"into", HAS_INTO},
                 {"insert", HAS_INSERT},
                 {"update", HAS_UPDATE},
                 {"delete", HAS_DELETE},
                 {"merge", HAS_MERGE}};
    unsigned mask = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && !pgt__fp_is_word(s[i]))
            i++;
        size_t w = i;
        while (i < n && pgt__fp_is_word(s[i]))
            i++;
        if (i - w < 4 || i - w > 6)
            continue;
        for (size_t k = 0; k < COUNTOF(words); k++)
            if (pgt__fp_word_eq(s + w, i - w, words[k].word))
                mask |= words[k].bit;
    }
    return mask;
}

/* A NUL-terminated copy of s[0..n), or NULL when out of memory. */
char *pgt__fp_dup_nul(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* The longest prefix of s[0..n) of at most max bytes that does not end
 * inside a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* A 64-bit hash of s[0..n), eight bytes at a time (a MurmurHash3-like
 * step, then splitmix64's finalizer). Keys the exact-text table, whose hits
 * compare the text too, and stands in for the fingerprint of unparsable
 * text. */
static uint64_t hash64(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h ^= w * 0x87c37b91114253d5ULL;
        h = ((h << 31) | (h >> 33)) * 0x4cf5ad432745937fULL;
    }
    uint64_t tail = 0;
    memcpy(&tail, s, n);
    return pgt_mix64(h ^ tail ^ ((uint64_t)n << 56));
}

/* ---- libpg_query's scanner ------------------------------------------------ */

/* pg_query_scan returns a protobuf ScanResult (pg_query.proto: field 2,
 * repeated ScanToken {start = 1, end = 2, token = 4, keyword_kind = 5}).
 * Debian ships no protobuf-c headers, so the few fields needed are read
 * here, bounds-checked. Token numbers change between libpg_query versions;
 * keywords are therefore matched by their text, with keyword_kind telling
 * a keyword from a quoted identifier, and comments by their first bytes. */
/* A bounds-checked protobuf reader. */
typedef struct pbr {
    const uint8_t *p;   /* next byte */
    const uint8_t *end; /* one past the last byte */
} pbr_t;

static bool pb_varint(pbr_t *r, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64 && r->p < r->end; shift += 7) {
        uint8_t b = *r->p++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* Skips the value of a field of wire type wt. */
static bool pb_skip(pbr_t *r, unsigned wt)
{
    uint64_t v;
    size_t left = (size_t)(r->end - r->p);
    switch (wt) {
    case 0:
        return pb_varint(r, &v);
    case 1:
        v = 8;
        break;
    case 2:
        if (!pb_varint(r, &v))
            return false;
        left = (size_t)(r->end - r->p);
        break;
    case 5:
        v = 4;
        break;
    default:
        return false;
    }
    if (v > left)
        return false;
    r->p += v;
    return true;
}

/* Reads one ScanToken message. */
static bool pb_token(pbr_t r, tok_t *t)
{
    uint64_t start = 0, end = 0, kw = 0;
    while (r.p < r.end) {
        uint64_t key, v;
        if (!pb_varint(&r, &key))
            return false;
        if ((key & 7) != 0) {
            if (!pb_skip(&r, (unsigned)(key & 7)))
                return false;
            continue;
        }
        if (!pb_varint(&r, &v))
            return false;
        if (key >> 3 == 1)
            start = v;
        else if (key >> 3 == 2)
            end = v;
        else if (key >> 3 == 5)
            kw = v;
    }
    if (start > end || end > UINT32_MAX)
        return false;
    *t = (tok_t){.start = (uint32_t)start, .end = (uint32_t)end, .keyword = kw != 0};
    return true;
}

static bool tok_is_comment(const char *text, const tok_t *t)
{
    const char *s = text + t->start;
    return t->end - t->start >= 2 && ((s[0] == '/' && s[1] == '*') || (s[0] == '-' && s[1] == '-'));
}

/* A string constant: '...', E'...', B'...', X'...', N'...', U&'...' or a
 * dollar-quoted $tag$...$tag$ (a $ followed by a digit is a parameter). */
static bool tok_is_string(const char *text, const tok_t *t)
{
    const char *s = text + t->start;
    size_t n = t->end - t->start;
    if (n >= 2 && s[0] == '\'')
        return true;
    if (n >= 3 && s[1] == '\'' && s[0] != '\0' && strchr("eEbBxXnN", s[0]))
        return true;
    if (n >= 4 && (s[0] == 'u' || s[0] == 'U') && s[1] == '&' && s[2] == '\'')
        return true;
    return n >= 2 && s[0] == '$' && !pgt__fp_is_digit(s[1]);
}

static bool tok_is_param(const char *text, const tok_t *t)
{
    return t->end - t->start >= 2 && text[t->start] == '$' && pgt__fp_is_digit(text[t->start + 1]);
}

static bool keep_tok(keep_t keep, const char *text, const tok_t *t)
{
    bool comment = tok_is_comment(text, t);
    switch (keep) {
    case KEEP_CODE:
        return !comment;
    case KEEP_COMMENTS:
        return comment;
    case KEEP_REDACT:
        return comment || tok_is_string(text, t) || tok_is_param(text, t);
    }
    return false;
}

static int toks_push(toks_t *ts, const tok_t *t)
{
    if (ts->n == ts->cap) {
        size_t cap = ts->cap ? ts->cap * 2 : 64;
        tok_t *v = realloc(ts->v, cap * sizeof(*v));
        if (!v)
            return -1;
        ts->v = v;
        ts->cap = cap;
    }
    ts->v[ts->n++] = *t;
    return 0;
}

/* Decodes a ScanResult of a text of len bytes, keeping the tokens keep asks for. */
static int decode_scan(const PgQueryProtobuf *pb, size_t len, keep_t keep, toks_t *ts)
{
    pbr_t r = {(const uint8_t *)pb->data, (const uint8_t *)pb->data + pb->len};
    while (r.p < r.end) {
        uint64_t key, n;
        if (!pb_varint(&r, &key))
            return -1;
        if (key != ((2 << 3) | 2)) {
            if (!pb_skip(&r, (unsigned)(key & 7)))
                return -1;
            continue;
        }
        if (!pb_varint(&r, &n) || n > (uint64_t)(r.end - r.p))
            return -1;
        pbr_t sub = {r.p, r.p + n};
        r.p += n;
        tok_t t;
        if (!pb_token(sub, &t) || t.end > len)
            return -1;
        if (keep_tok(keep, ts->text, &t) && toks_push(ts, &t) != 0)
            return -1;
    }
    return 0;
}

/* Scans text (NUL-terminated, len bytes) into ts. Returns 0, or -1 when the
 * scanner fails (an unterminated literal) or memory runs out; free ts->v. */
int pgt__fp_scan_tokens(const char *text, size_t len, keep_t keep, toks_t *ts)
{
    *ts = (toks_t){.text = text};
    PgQueryScanResult res = pg_query_scan(text);
    int rc = res.error ? -1 : decode_scan(&res.pbuf, len, keep, ts);
    pg_query_free_scan_result(res);
    return rc;
}

bool pgt__fp_tok_kw(const toks_t *ts, size_t i, const char *kw)
{
    return i < ts->n && ts->v[i].keyword &&
           pgt__fp_word_eq(ts->text + ts->v[i].start, ts->v[i].end - ts->v[i].start, kw);
}

bool pgt__fp_tok_ch(const toks_t *ts, size_t i, char c)
{
    return i < ts->n && ts->v[i].end - ts->v[i].start == 1 && ts->text[ts->v[i].start] == c;
}

/* Index after the ')' that closes the '(' at i. */
size_t pgt__fp_skip_parens(const toks_t *ts, size_t i)
{
    int depth = 0;
    for (; i < ts->n; i++) {
        if (pgt__fp_tok_ch(ts, i, '('))
            depth++;
        else if (pgt__fp_tok_ch(ts, i, ')') && --depth == 0)
            return i + 1;
    }
    return ts->n;
}

/* Index of the first keyword kw at parenthesis depth 0 from i, or n. */
size_t pgt__fp_find_top(const toks_t *ts, size_t i, const char *kw)
{
    int depth = 0;
    for (; i < ts->n; i++) {
        if (pgt__fp_tok_ch(ts, i, '('))
            depth++;
        else if (pgt__fp_tok_ch(ts, i, ')'))
            depth--;
        else if (depth == 0 && pgt__fp_tok_kw(ts, i, kw))
            return i;
    }
    return ts->n;
}

/* ---- classification ------------------------------------------------------- */

/* Skips whitespace and comments (`--` to the end of the line, and nested
 * C-style comments, as scan.l reads them) to reach a statement's first or
 * second word. Everything past that goes through pg_query_scan. */
static const char *skip_blank(const char *p, const char *end)
{
    while (p < end) {
        if (is_space(*p)) {
            p++;
        } else if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
            while (p < end && *p != '\n' && *p != '\r')
                p++;
        } else if (end - p >= 2 && p[0] == '/' && p[1] == '*') {
            int depth = 0;
            while (p < end) {
                if (end - p >= 2 && p[0] == '/' && p[1] == '*') {
                    depth++;
                    p += 2;
                } else if (end - p >= 2 && p[0] == '*' && p[1] == '/') {
                    p += 2;
                    if (--depth == 0)
                        break;
                } else {
                    p++;
                }
            }
        } else {
            break;
        }
    }
    return p;
}

/* The word after *p (skipping blanks); advances *p past it. */
static size_t next_word(const char **p, const char *end, const char **word)
{
    const char *w = skip_blank(*p, end);
    size_t n = 0;
    while (w + n < end && pgt__fp_is_word(w[n]))
        n++;
    *word = w;
    *p = w + n;
    return n;
}

/* What more a first word needs before the kind is known. */
typedef enum {
    REFINE_NONE,    /* the first word decides */
    REFINE_SELECT,  /* SELECT ... INTO creates a table */
    REFINE_WITH,    /* the kind is that of the statement after the WITH clause */
    REFINE_CREATE,  /* CREATE TABLE ... AS and CREATE MATERIALIZED VIEW are explainable */
    REFINE_PREPARE, /* PREPARE TRANSACTION is a transaction command */
} refine_t;

/* The kind a statement's first word gives. ddl follows PostgreSQL's
 * log_statement = 'ddl' (GetCommandLogLevel in tcop/utility.c). */
static const struct first_word {
    const char *word;     /* lower-case keyword */
    pgt_stmt_kind_t kind; /* kind it starts */
    bool explainable;     /* EXPLAIN accepts it */
    refine_t refine;      /* more to read */
    bool control;         /* transaction control or a session setting: budgets never refuse it */
} first_words[] = {
    {"select", PGT_STMT_SELECT, true, REFINE_SELECT, false},
    {"values", PGT_STMT_SELECT, true, REFINE_NONE, false},
    {"table", PGT_STMT_SELECT, true, REFINE_NONE, false},
    {"with", PGT_STMT_SELECT, true, REFINE_WITH, false},
    {"insert", PGT_STMT_INSERT, true, REFINE_NONE, false},
    {"update", PGT_STMT_UPDATE, true, REFINE_NONE, false},
    {"delete", PGT_STMT_DELETE, true, REFINE_NONE, false},
    {"merge", PGT_STMT_MERGE, true, REFINE_NONE, false},
    {"copy", PGT_STMT_COPY, false, REFINE_NONE, false},
    {"create", PGT_STMT_DDL, false, REFINE_CREATE, false},
    {"alter", PGT_STMT_DDL, false, REFINE_NONE, false},
    {"drop", PGT_STMT_DDL, false, REFINE_NONE, false},
    {"truncate", PGT_STMT_DDL, false, REFINE_NONE, false},
    {"grant", PGT_STMT_DDL, false, REFINE_NONE, false},
    {"revoke", PGT_STMT_DDL, false, REFINE_NONE, false},
    {"comment", PGT_STMT_DDL, false, REFINE_NONE, false},
    {"security", PGT_STMT_DDL, false, REFINE_NONE, false},
    {"refresh", PGT_STMT_DDL, false, REFINE_NONE, false},
    {"cluster", PGT_STMT_DDL, false, REFINE_NONE, false},
    {"import", PGT_STMT_DDL, false, REFINE_NONE, false},
    {"reassign", PGT_STMT_DDL, false, REFINE_NONE, false},
    {"declare", PGT_STMT_UTILITY, true, REFINE_NONE, false},
    {"execute", PGT_STMT_UTILITY, true, REFINE_NONE, false},
    {"prepare", PGT_STMT_UTILITY, false, REFINE_PREPARE, false},
    {"set", PGT_STMT_UTILITY, false, REFINE_NONE, true},
    {"show", PGT_STMT_UTILITY, false, REFINE_NONE, true},
    {"reset", PGT_STMT_UTILITY, false, REFINE_NONE, true},
    {"vacuum", PGT_STMT_UTILITY, false, REFINE_NONE, false},
    {"analyze", PGT_STMT_UTILITY, false, REFINE_NONE, false},
    {"analyse", PGT_STMT_UTILITY, false, REFINE_NONE, false},
    {"reindex", PGT_STMT_UTILITY, false, REFINE_NONE, false},
    {"checkpoint", PGT_STMT_UTILITY, false, REFINE_NONE, false},
    {"listen", PGT_STMT_UTILITY, false, REFINE_NONE, true},
    {"unlisten", PGT_STMT_UTILITY, false, REFINE_NONE, true},
    {"notify", PGT_STMT_UTILITY, false, REFINE_NONE, false},
    {"discard", PGT_STMT_UTILITY, false, REFINE_NONE, true},
    {"deallocate", PGT_STMT_UTILITY, false, REFINE_NONE, true},
    {"fetch", PGT_STMT_UTILITY, false, REFINE_NONE, false},
    {"move", PGT_STMT_UTILITY, false, REFINE_NONE, false},
    {"close", PGT_STMT_UTILITY, false, REFINE_NONE, true},
    {"lock", PGT_STMT_UTILITY, false, REFINE_NONE, false},
    {"load", PGT_STMT_UTILITY, false, REFINE_NONE, false},
    {"begin", PGT_STMT_TRANSACTION, false, REFINE_NONE, true},
    {"start", PGT_STMT_TRANSACTION, false, REFINE_NONE, true},
    {"commit", PGT_STMT_TRANSACTION, false, REFINE_NONE, true},
    {"end", PGT_STMT_TRANSACTION, false, REFINE_NONE, true},
    {"rollback", PGT_STMT_TRANSACTION, false, REFINE_NONE, true},
    {"abort", PGT_STMT_TRANSACTION, false, REFINE_NONE, true},
    {"savepoint", PGT_STMT_TRANSACTION, false, REFINE_NONE, true},
    {"release", PGT_STMT_TRANSACTION, false, REFINE_NONE, true},
    {"explain", PGT_STMT_EXPLAIN, false, REFINE_NONE, false},
    {"call", PGT_STMT_CALL, false, REFINE_NONE, false},
    {"do", PGT_STMT_CALL, false, REFINE_NONE, false}, /* an anonymous code block runs like CALL */
};

/* A statement's kind and whether EXPLAIN accepts it. */
typedef struct cls {
    pgt_stmt_kind_t kind; /* what it does */
    bool explainable;     /* EXPLAIN accepts it */
} cls_t;

/* The statement that follows a WITH clause: the WITH token is at i. Walks
 * with_clause and common_table_expr as gram.y defines them: [RECURSIVE]
 * name [(cols)] AS [[NOT] MATERIALIZED] (query) [SEARCH ...] [CYCLE ...],
 * so that a CTE named like a keyword ("update") is not taken for it. */
static size_t skip_with(const toks_t *ts, size_t i)
{
    i++;
    if (pgt__fp_tok_kw(ts, i, "recursive"))
        i++;
    for (;;) {
        i++; /* the name */
        if (pgt__fp_tok_ch(ts, i, '('))
            i = pgt__fp_skip_parens(ts, i);
        if (!pgt__fp_tok_kw(ts, i, "as"))
            return ts->n;
        i++;
        if (pgt__fp_tok_kw(ts, i, "not"))
            i++;
        if (pgt__fp_tok_kw(ts, i, "materialized"))
            i++;
        if (!pgt__fp_tok_ch(ts, i, '('))
            return ts->n;
        i = pgt__fp_skip_parens(ts, i);
        /* SEARCH {BREADTH|DEPTH} FIRST BY col [, col ...] SET col */
        if (pgt__fp_tok_kw(ts, i, "search")) {
            for (i += 5; pgt__fp_tok_ch(ts, i, ','); i += 2)
                ;
            i += 2;
        }
        /* CYCLE col [, col] SET col [TO v DEFAULT v] USING col */
        if (pgt__fp_tok_kw(ts, i, "cycle"))
            i = pgt__fp_find_top(ts, i, "using") + 2;
        if (!pgt__fp_tok_ch(ts, i, ','))
            return i;
        i++;
    }
}

/* The kind of a statement from its tokens, once its first word says more is
 * needed. */
static cls_t refine_tokens(const toks_t *ts, refine_t refine, cls_t c)
{
    size_t i = 0;
    if (refine == REFINE_CREATE) {
        if (pgt__fp_find_top(ts, 0, "as") < ts->n)
            c.explainable = true;
        return c;
    }
    if (refine == REFINE_WITH) {
        i = skip_with(ts, 0);
        static const struct {
            const char *kw;       /* first keyword of the main statement */
            pgt_stmt_kind_t kind; /* the kind it gives */
        } main_kinds[] = {{"insert", PGT_STMT_INSERT},
                          {"update", PGT_STMT_UPDATE},
                          {"delete", PGT_STMT_DELETE},
                          {"merge", PGT_STMT_MERGE}};
        for (size_t k = 0; k < COUNTOF(main_kinds); k++)
            if (pgt__fp_tok_kw(ts, i, main_kinds[k].kw))
                return (cls_t){main_kinds[k].kind, true};
    }
    if (pgt__fp_tok_kw(ts, i, "select") && pgt__fp_find_top(ts, i, "into") < ts->n)
        return (cls_t){PGT_STMT_DDL, true};
    return c;
}

/* Decides whether the tokens are needed at all, from words read cheaply. */
static bool refine_wanted(refine_t refine, const char *s, size_t len, const char *after, cls_t *c)
{
    const char *end = s + len, *w;
    size_t n;
    switch (refine) {
    case REFINE_NONE:
        return false;
    case REFINE_SELECT:
        return words_present(s, len) & HAS_INTO;
    case REFINE_WITH: /* a WITH without these words is a plain query */
        return words_present(s, len) != 0;
    case REFINE_PREPARE:
        n = next_word(&after, end, &w);
        if (pgt__fp_word_eq(w, n, "transaction"))
            *c = (cls_t){PGT_STMT_TRANSACTION, false};
        return false;
    case REFINE_CREATE:
        do
            n = next_word(&after, end, &w);
        while (pgt__fp_word_eq(w, n, "global") || pgt__fp_word_eq(w, n, "local") ||
               pgt__fp_word_eq(w, n, "temp") || pgt__fp_word_eq(w, n, "temporary") ||
               pgt__fp_word_eq(w, n, "unlogged"));
        if (pgt__fp_word_eq(w, n, "materialized"))
            c->explainable = true; /* its AS query is mandatory */
        return pgt__fp_word_eq(w, n, "table");
    }
    return false;
}

/* The row of first_words for the word w[0..n), or NULL. */
static const struct first_word *find_first_word(const char *w, size_t n)
{
    for (size_t i = 0; i < COUNTOF(first_words); i++)
        if (pgt__fp_word_eq(w, n, first_words[i].word))
            return &first_words[i];
    return NULL;
}

/* Classifies one statement s[0..len) that libpg_query parsed. */
static cls_t classify(const char *s, size_t len)
{
    const char *end = s + len, *p = s, *w;
    size_t n = next_word(&p, end, &w);
    if (w == end)
        return (cls_t){PGT_STMT_EMPTY, false};
    if (n == 0 && *w == '(') /* "(SELECT ...)": only a query starts with one */
        return (cls_t){PGT_STMT_SELECT, true};
    const struct first_word *fw = find_first_word(w, n);
    if (!fw)
        return (cls_t){PGT_STMT_UTILITY, false};
    cls_t c = {fw->kind, fw->explainable};
    if (!refine_wanted(fw->refine, s, len, p, &c))
        return c;
    char *copy = pgt__fp_dup_nul(s, len);
    if (copy) {
        toks_t ts;
        if (pgt__fp_scan_tokens(copy, len, KEEP_CODE, &ts) == 0)
            c = refine_tokens(&ts, fw->refine, c);
        free(ts.v);
        free(copy);
    }
    return c;
}

/* ---- splitting ------------------------------------------------------------ */

/* Shrinks [*off, *off + *len) of sql to exclude blanks at both ends. */
static void trim(const char *sql, size_t *off, size_t *len)
{
    while (*len > 0 && is_space(sql[*off])) {
        (*off)++;
        (*len)--;
    }
    while (*len > 0 && is_space(sql[*off + *len - 1]))
        (*len)--;
}

void pgt_fp_trim(const char *sql, size_t *off, size_t *len)
{
    trim(sql, off, len);
    /* The statement is the same with or without its final ';'. */
    if (*len > 0 && sql[*off + *len - 1] == ';') {
        (*len)--;
        trim(sql, off, len);
    }
}

bool pgt_fp_single(const char *sql, size_t total, size_t *off, size_t *len)
{
    const char *semi = memchr(sql, ';', total);
    for (const char *p = semi ? semi + 1 : sql + total; p < sql + total; p++)
        if (!is_space(*p))
            return false;
    *off = 0;
    *len = total;
    pgt_fp_trim(sql, off, len);
    return *len > 0;
}

int pgt_fp_split(const char *sql, pgt_stmt_t *out, int max)
{
    if (!sql || !out || max <= 0)
        return 0;
    size_t total = strlen(sql);

    /* The parser, not the scanner: pg_query_split_with_scanner drops a
     * statement it cannot recognize ("selec 1; select 2" gives one). A
     * syntax error anywhere makes PostgreSQL reject the whole string
     * before running any of it, so one unparsed statement is the truth. */
    PgQuerySplitResult r = pg_query_split_with_parser(sql);
    int n = 0;
    if (r.error) {
        size_t off = 0, len = total;
        trim(sql, &off, &len);
        if (len > 0)
            out[n++] = (pgt_stmt_t){off, len, PGT_STMT_UNPARSED, false};
    }
    for (int i = 0; !r.error && i < r.n_stmts && n < max; i++) {
        int loc = r.stmts[i]->stmt_location, slen = r.stmts[i]->stmt_len;
        if (loc < 0 || slen < 0 || (size_t)loc > total || (size_t)slen > total - (size_t)loc)
            continue;
        size_t off = (size_t)loc, len = (size_t)slen;
        trim(sql, &off, &len);
        cls_t c = classify(sql + off, len);
        if (c.kind != PGT_STMT_EMPTY)
            out[n++] = (pgt_stmt_t){off, len, c.kind, c.explainable};
    }
    pg_query_free_split_result(r);
    return n;
}

/* ---- statements budgets never refuse ------------------------------------- */

/* Whether the first word of s[0..len) is a control word; false when the
 * text holds no word (comments only). */
static bool control_stmt(const char *s, size_t len)
{
    const char *p = s, *w;
    size_t n = next_word(&p, s + len, &w);
    const struct first_word *fw = find_first_word(w, n);
    return fw && fw->control;
}

/* Statements looked at in a string of several; one more makes the answer
 * false, as pgt_fp_split may have left some out. */
#define NEVER_REFUSED_MAX 16

bool pgt_fp_never_refused(const char *sql, size_t len)
{
    size_t off, slen;
    /* The cheap path, taken by nearly every statement: no ';' but perhaps
     * a final one, so one statement, decided by its first word. Text with
     * comments only goes on to the parser, as does unterminated text. */
    if (pgt_fp_single(sql, len, &off, &slen)) {
        const char *p = sql + off, *w;
        next_word(&p, sql + off + slen, &w);
        if (w < sql + off + slen)
            return control_stmt(sql + off, slen);
    }
    char *copy = pgt__fp_dup_nul(sql, len);
    if (!copy)
        return false;
    pgt_stmt_t st[NEVER_REFUSED_MAX];
    int n = pgt_fp_split(copy, st, NEVER_REFUSED_MAX);
    bool all = n < NEVER_REFUSED_MAX;
    for (int i = 0; all && i < n; i++)
        all = control_stmt(copy + st[i].offset, st[i].length);
    free(copy);
    return all;
}

/* ---- LRU tables ----------------------------------------------------------- */

/* One entry of a table: a normalized text by fingerprint, or a raw text by
 * its hash with what parsing it found. */
typedef struct entry {
    uint64_t key;         /* fingerprint, or hash64 of the raw text */
    struct entry *hnext;  /* next entry in the same bucket */
    struct entry *prev;   /* neighbour used more recently (or the head) */
    struct entry *next;   /* neighbour used less recently (or the head) */
    char *str;            /* normalized or raw text, NUL-terminated, owned */
    size_t len;           /* bytes in str */
    uint64_t fingerprint; /* raw texts: their fingerprint */
    pgt_stmt_kind_t kind; /* raw texts: their kind */
    bool explainable;     /* raw texts: EXPLAIN accepts them */
} entry_t;

/* A hash table whose entries also form a list from most to least recently
 * used; inserting beyond either bound drops the least recently used. */
typedef struct lru {
    entry_t **buckets; /* chains by key & mask */
    size_t mask;       /* bucket count - 1 (a power of two) */
    entry_t head;      /* list sentinel: head.next is the most recently used */
    size_t count;      /* entries held */
    size_t capacity;   /* most entries held */
    size_t bytes;      /* bytes of str held */
    size_t max_bytes;  /* most bytes of str held */
} lru_t;

static int lru_init(lru_t *l, size_t capacity, size_t max_bytes)
{
    size_t nb = 16;
    while (nb < capacity && nb < ((size_t)1 << 30))
        nb <<= 1;
    l->buckets = calloc(nb, sizeof(*l->buckets));
    if (!l->buckets)
        return -1;
    l->mask = nb - 1;
    l->head.next = l->head.prev = &l->head;
    l->count = 0;
    l->capacity = capacity;
    l->bytes = 0;
    l->max_bytes = max_bytes;
    return 0;
}

static void list_unlink(entry_t *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

static void list_push_front(lru_t *l, entry_t *e)
{
    e->prev = &l->head;
    e->next = l->head.next;
    l->head.next->prev = e;
    l->head.next = e;
}

/* The entry of key; with text, only one holding that text. Marks it used. */
static entry_t *lru_find(lru_t *l, uint64_t key, const char *text, size_t len)
{
    for (entry_t *e = l->buckets[key & l->mask]; e; e = e->hnext) {
        if (e->key != key || (text && (e->len != len || memcmp(e->str, text, len) != 0)))
            continue;
        list_unlink(e);
        list_push_front(l, e);
        return e;
    }
    return NULL;
}

static void lru_remove(lru_t *l, entry_t *e)
{
    entry_t **pp = &l->buckets[e->key & l->mask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    list_unlink(e);
    l->count--;
    l->bytes -= e->len;
    free(e->str);
    free(e);
}

/* Takes e (and its str), dropping the least recently used entries first as
 * the bounds require. Returns how many were dropped. */
static size_t lru_insert(lru_t *l, entry_t *e)
{
    size_t dropped = 0;
    while (l->count > 0 && (l->count >= l->capacity || l->bytes + e->len > l->max_bytes)) {
        lru_remove(l, l->head.prev);
        dropped++;
    }
    entry_t **b = &l->buckets[e->key & l->mask];
    e->hnext = *b;
    *b = e;
    list_push_front(l, e);
    l->count++;
    l->bytes += e->len;
    return dropped;
}

static void lru_destroy(lru_t *l)
{
    while (l->count > 0)
        lru_remove(l, l->head.prev);
    free(l->buckets);
}

/* ---- shapes --------------------------------------------------------------- */

struct pgt_fp_cache {
    lru_t shapes;         /* normalized texts by fingerprint */
    lru_t texts;          /* raw texts seen: fingerprint and kind without parsing */
    pgt_fp_stats_t stats; /* counters */
};

static pthread_once_t malloc_once = PTHREAD_ONCE_INIT;

static void tune_malloc(void)
{
    mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD);
    mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
}

pgt_fp_cache_t *pgt_fp_cache_new(size_t capacity)
{
    pthread_once(&malloc_once, tune_malloc);
    if (capacity == 0)
        capacity = 1;
    pgt_fp_cache_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (lru_init(&c->shapes, capacity, SHAPE_BYTES_MAX) != 0) {
        free(c);
        return NULL;
    }
    if (lru_init(&c->texts, capacity, TEXT_BYTES_MAX) != 0) {
        lru_destroy(&c->shapes);
        free(c);
        return NULL;
    }
    return c;
}

void pgt_fp_cache_free(pgt_fp_cache_t *c)
{
    if (!c)
        return;
    lru_destroy(&c->shapes);
    lru_destroy(&c->texts);
    free(c);
}

void pgt_fp_cache_stats(const pgt_fp_cache_t *c, pgt_fp_stats_t *out)
{
    *out = c->stats;
    out->shapes = c->shapes.count;
    out->texts = c->texts.count;
    out->bytes = c->shapes.bytes + c->texts.bytes;
}

/* What parsing a raw text found. */
typedef struct ident {
    uint64_t fingerprint; /* libpg_query's, or hash64 of unparsable text */
    cls_t cls;            /* kind and explainable */
} ident_t;

/* Fingerprints and classifies text (NUL-terminated, len bytes, hash h). */
static ident_t identify(pgt_fp_cache_t *c, const char *text, size_t len, uint64_t h)
{
    /* A NUL inside would make libpg_query read only a prefix. */
    if (!memchr(text, '\0', len)) {
        c->stats.fingerprints++;
        PgQueryFingerprintResult f = pg_query_fingerprint(text);
        bool ok = !f.error;
        uint64_t fp = f.fingerprint;
        pg_query_free_fingerprint_result(f);
        if (ok)
            return (ident_t){fp, classify(text, len)};
    }
    return (ident_t){h, {PGT_STMT_UNPARSED, false}};
}

/* Appends s[0..n) to the buffer at o. */
static size_t put(char *o, size_t at, const char *s, size_t n)
{
    memcpy(o + at, s, n);
    return at + n;
}

/* The number after the highest $n parameter among ts. */
static unsigned long next_param(const toks_t *ts)
{
    unsigned long next = 1;
    for (size_t i = 0; i < ts->n; i++) {
        if (!tok_is_param(ts->text, &ts->v[i]))
            continue;
        unsigned long v = 0;
        for (uint32_t j = ts->v[i].start + 1; j < ts->v[i].end && v < 100000000; j++)
            v = v * 10 + (unsigned long)(ts->text[j] - '0');
        if (v >= next)
            next = v + 1;
    }
    return next;
}

/* The normalized text norm (len bytes) made fit to keep: without its
 * comments (which may carry per-request values such as sqlcommenter's
 * traceparent), with the string constants libpg_query leaves in utility
 * statements (COMMENT ON ... IS '...', OPTIONS (password '...'), COPY ...
 * FROM '/path') replaced by further $n, trimmed, and cut to
 * PGT_FP_NORMALIZED_MAX. Returns a malloc'd string or NULL. */
static char *tidy_normalized(const char *norm, size_t len, size_t *out_len)
{
    toks_t ts;
    if (pgt__fp_scan_tokens(norm, len, KEEP_REDACT, &ts) != 0)
        ts.n = 0; /* libpg_query's own output: the scanner reads it */
    unsigned long next = next_param(&ts);
    char *o = malloc(len + ts.n * 12 + 1);
    size_t at = 0, from = 0;
    for (size_t i = 0; o && i < ts.n; i++) {
        const tok_t *t = &ts.v[i];
        if (t->start < from || tok_is_param(norm, t))
            continue;
        at = put(o, at, norm + from, t->start - from);
        from = t->end;
        if (tok_is_string(norm, t)) {
            at += (size_t)sprintf(o + at, "$%lu", next++);
        } else if (at == 0 || is_space(o[at - 1])) { /* a comment after a blank */
            while (from < len && is_space(norm[from]))
                from++;
        } else if (from < len && !is_space(norm[from])) { /* a comment between tokens */
            o[at++] = ' ';
        }
    }
    free(ts.v);
    if (!o)
        return NULL;
    at = put(o, at, norm + from, len - from);
    size_t off = 0;
    trim(o, &off, &at);
    memmove(o, o + off, at);
    at = utf8_cut(o, at, PGT_FP_NORMALIZED_MAX);
    o[at] = '\0';
    *out_len = at;
    return o;
}

char *pgt_fp_normalize(const char *sql, size_t *out_len)
{
    PgQueryNormalizeResult r = pg_query_normalize(sql ? sql : "");
    char *s = NULL;
    if (!r.error && r.normalized_query)
        s = tidy_normalized(r.normalized_query, strlen(r.normalized_query), out_len);
    pg_query_free_normalize_result(r);
    return s;
}

/* The text to keep for a new fingerprint: libpg_query's normalized text,
 * or the first PGT_FP_UNPARSED_KEEP bytes of what it cannot parse. */
static char *make_normalized(pgt_fp_cache_t *c, const char *text, size_t len, bool unparsed,
                             size_t *out_len)
{
    if (!unparsed) {
        c->stats.normalizes++;
        char *s = pgt_fp_normalize(text, out_len);
        if (s)
            return s;
    }
    *out_len = utf8_cut(text, len, PGT_FP_UNPARSED_KEEP);
    return pgt__fp_dup_nul(text, *out_len);
}

/* Fills out from id, finding or making the normalized text. */
static int fill_shape(pgt_fp_cache_t *c, const char *text, size_t len, const ident_t *id,
                      pgt_shape_t *out)
{
    entry_t *e = lru_find(&c->shapes, id->fingerprint, NULL, 0);
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e)
            return -1;
        e->key = id->fingerprint;
        e->str = make_normalized(c, text, len, id->cls.kind == PGT_STMT_UNPARSED, &e->len);
        if (!e->str) {
            free(e);
            return -1;
        }
        c->stats.evictions += lru_insert(&c->shapes, e);
    }
    *out = (pgt_shape_t){.fingerprint = id->fingerprint,
                         .kind = id->cls.kind,
                         .explainable = id->cls.explainable,
                         .normalized = e->str};
    return 0;
}

/* Keeps text (a malloc'd copy, taken over) in the exact-text table. */
static void remember_text(pgt_fp_cache_t *c, char *text, size_t len, uint64_t h, const ident_t *id)
{
    entry_t *e = len <= TEXT_MAX ? calloc(1, sizeof(*e)) : NULL;
    if (!e) {
        free(text);
        return;
    }
    *e = (entry_t){.key = h,
                   .str = text,
                   .len = len,
                   .fingerprint = id->fingerprint,
                   .kind = id->cls.kind,
                   .explainable = id->cls.explainable};
    c->stats.evictions += lru_insert(&c->texts, e);
}

int pgt_fp_shape_known(pgt_fp_cache_t *c, uint64_t fingerprint, pgt_stmt_kind_t kind,
                       bool explainable, const char *text, size_t len, pgt_shape_t *out)
{
    if (!c || !out || !text)
        return -1;
    c->stats.calls++;
    ident_t id = {fingerprint, {kind, explainable}};
    if (lru_find(&c->shapes, fingerprint, NULL, 0))
        return fill_shape(c, text, len, &id, out);
    /* libpg_query reads a NUL-terminated copy. */
    char *copy = pgt__fp_dup_nul(text, len);
    if (!copy)
        return -1;
    int rc = fill_shape(c, copy, len, &id, out);
    free(copy);
    return rc;
}

/* Statement words after which every number and string is a constant
 * (an A_Const, which fingerprints leave out): data statements. */
static bool masks_constants(const char *text, size_t len)
{
    static const char *const words[] = {"select", "insert", "update", "delete", "with", "values"};
    size_t i = 0;
    while (i < len && is_space(text[i]))
        i++;
    size_t n = 0;
    while (i + n < len && pgt__fp_is_word(text[i + n]))
        n++;
    for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++)
        if (n == strlen(words[w]) && pgt__fp_word_eq(text + i, n, words[w]))
            return true;
    return false;
}

/* The key of a data statement in the text table: its text with each
 * number and string constant replaced by a marker byte, so that the
 * constants of a point lookup (WHERE aid = 12345) do not make every run
 * a new text that must be parsed. Statements with the same key have the
 * same fingerprint, which leaves constants out. Writes the key to
 * out[0..cap) and returns its length, or 0 when the text is not a data
 * statement or holds what the scan does not follow exactly (dollar quotes,
 * E'' strings, backslashes in strings, nested comments), or does not fit. */
static size_t constants_masked(const char *text, size_t len, char *out, size_t cap)
{
    if (!masks_constants(text, len))
        return 0;
    size_t o = 0, i = 0;
#define EMIT(ch)                                                                                   \
    do {                                                                                           \
        if (o == cap)                                                                              \
            return 0;                                                                              \
        out[o++] = (ch);                                                                           \
    } while (0)
    while (i < len) {
        char ch = text[i];
        bool after_word = i > 0 && pgt__fp_is_word(text[i - 1]);
        if (ch == '\'') {
            if (after_word || (i > 0 && text[i - 1] == '&'))
                return 0; /* E'...', B'...', X'...', U&'...' */
            for (i++;; i++) {
                if (i >= len || text[i] == '\\')
                    return 0;
                if (text[i] == '\'' && i + 1 < len && text[i + 1] == '\'')
                    i++;
                else if (text[i] == '\'')
                    break;
            }
            i++;
            EMIT('\x02');
        } else if (ch == '"') {
            EMIT(text[i++]);
            for (;;) {
                if (i >= len)
                    return 0;
                bool doubled = text[i] == '"' && i + 1 < len && text[i + 1] == '"';
                bool end = text[i] == '"' && !doubled;
                EMIT(text[i++]);
                if (doubled)
                    EMIT(text[i++]);
                if (end)
                    break;
            }
        } else if (ch == '$') {
            if (after_word) {
                EMIT(text[i++]);
                continue;
            }
            if (i + 1 >= len || text[i + 1] < '0' || text[i + 1] > '9')
                return 0; /* a dollar quote */
            EMIT(text[i++]);
            while (i < len && text[i] >= '0' && text[i] <= '9')
                EMIT(text[i++]);
        } else if (ch == '-' && i + 1 < len && text[i + 1] == '-') {
            while (i < len && text[i] != '\n')
                EMIT(text[i++]);
        } else if (ch == '/' && i + 1 < len && text[i + 1] == '*') {
            const char *end = memmem(text + i + 2, len - i - 2, "*/", 2);
            if (!end || memmem(text + i + 2, (size_t)(end - text) - i - 2, "/*", 2))
                return 0;
            while (text + i < end + 2)
                EMIT(text[i++]);
        } else if (ch >= '0' && ch <= '9' && !after_word) {
            while (i < len && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.'))
                i++;
            EMIT('\x01');
        } else {
            EMIT(text[i++]);
        }
    }
#undef EMIT
    return o;
}

int pgt_fp_shape(pgt_fp_cache_t *c, const char *text, size_t len, pgt_shape_t *out)
{
    if (!c || !out || (!text && len > 0))
        return -1;
    if (!text)
        text = "";
    c->stats.calls++;
    char masked[2048];
    size_t klen = constants_masked(text, len, masked, sizeof(masked));
    const char *key = klen ? masked : text;
    if (!klen)
        klen = len;
    uint64_t h = hash64(key, klen);
    entry_t *t = lru_find(&c->texts, h, key, klen);
    if (t) {
        c->stats.text_hits++;
        ident_t id = {t->fingerprint, {t->kind, t->explainable}};
        return fill_shape(c, text, len, &id, out);
    }
    char *copy = pgt__fp_dup_nul(text, len);
    char *kept = key == text ? copy : pgt__fp_dup_nul(key, klen);
    if (!copy || !kept) {
        free(copy);
        if (kept != copy)
            free(kept);
        return -1;
    }
    ident_t id = identify(c, copy, len, h);
    int rc = fill_shape(c, copy, len, &id, out);
    if (kept != copy)
        free(copy);
    remember_text(c, kept, klen, h, &id);
    return rc;
}

/* ---- comments ------------------------------------------------------------ */

int pgt_fp_comments(const char *sql, pgt_fp_span_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t len = strlen(sql);
    toks_t ts;
    if (pgt__fp_scan_tokens(sql, len, KEEP_COMMENTS, &ts) != 0) {
        free(ts.v);
        return -1;
    }
    pgt_fp_span_t *v = ts.n ? malloc(ts.n * sizeof(*v)) : NULL;
    if (ts.n && !v) {
        free(ts.v);
        return -1;
    }
    for (size_t i = 0; i < ts.n; i++)
        v[i] = (pgt_fp_span_t){ts.v[i].start, ts.v[i].end};
    free(ts.v);
    *out = v;
    *n = ts.n;
    return 0;
}
