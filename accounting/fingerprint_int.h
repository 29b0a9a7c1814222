/* What the files of the fingerprint module share (fingerprint.c,
 * fingerprint_named.c): libpg_query's tokens and the helpers that read
 * them. Not an API: nothing outside the module includes it. */
#ifndef PGTALLY_FINGERPRINT_INT_H
#define PGTALLY_FINGERPRINT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A decimal digit. */
static inline bool pgt__fp_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Characters of an unquoted word (PostgreSQL's ident_cont, scan.l). */
static inline bool pgt__fp_is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || pgt__fp_is_digit(c) || c == '_' ||
           c == '$' || (unsigned char)c >= 0x80;
}

typedef struct tok {
    uint32_t start; /* byte offset of the token in the scanned text */
    uint32_t end;   /* offset one past its last byte */
    bool keyword;   /* keyword_kind is not NO_KEYWORD */
} tok_t;

/* Which tokens pgt__fp_scan_tokens keeps. */
typedef enum {
    KEEP_CODE,     /* all but comments */
    KEEP_COMMENTS, /* comments only */
    KEEP_REDACT,   /* comments, string constants and $n parameters */
} keep_t;

/* The tokens of one text. */
typedef struct toks {
    const char *text; /* the scanned text (NUL-terminated) */
    tok_t *v;         /* tokens, malloc'd */
    size_t n;         /* how many */
    size_t cap;       /* room in v */
} toks_t;

/* Whether w[0..n) is the keyword kw (lower case), in any case. */
bool pgt__fp_word_eq(const char *w, size_t n, const char *kw);

/* A NUL-terminated copy of s[0..n), or NULL when out of memory. */
char *pgt__fp_dup_nul(const char *s, size_t n);

/* The tokens of text[0..len) (NUL-terminated) that keep selects, into
 * *ts (ts->v malloc'd). Returns 0, or -1 when libpg_query cannot scan it. */
int pgt__fp_scan_tokens(const char *text, size_t len, keep_t keep, toks_t *ts);

/* Whether token i is the keyword kw, or the one character c. */
bool pgt__fp_tok_kw(const toks_t *ts, size_t i, const char *kw);
bool pgt__fp_tok_ch(const toks_t *ts, size_t i, char c);

/* Index after the ')' that closes the '(' at i. */
size_t pgt__fp_skip_parens(const toks_t *ts, size_t i);

/* Index of the first keyword kw from i outside parentheses, or ts->n. */
size_t pgt__fp_find_top(const toks_t *ts, size_t i, const char *kw);

#endif
