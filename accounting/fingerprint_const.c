/* A hash of a statement's constants, for the ledger's "work done twice"
 * and for escrow tickets: two runs of one shape with the same constants
 * (and the same Bind parameters) have the same hash, and the constants
 * themselves are never kept. Constants are read with libpg_query's scanner,
 * so a constant-like run inside a comment or an identifier is not one. */
#include "pgtally/fingerprint.h"

#include <stdlib.h>
#include <string.h>

#include "fingerprint_int.h"
#include "pgtally/text.h"

/* Texts longer than this are hashed whole (no scan): a bulk INSERT of
 * megabytes repeats only when its text does. */
#define SCAN_MAX (1u << 20)

/* A constant token: a string ('...', E'...', B'...', X'...', N'...',
 * U&'...', $tag$...$tag$) or a number (1, 1.5, .5, 1e3, 0x1F). */
static bool is_constant(const char *s, size_t n, bool keyword)
{
    if (keyword || n == 0)
        return false;
    if (pgt__fp_is_digit(s[0]) || (n >= 2 && s[0] == '.' && pgt__fp_is_digit(s[1])))
        return true;
    if (s[0] == '\'')
        return true;
    if (n >= 3 && s[1] == '\'' && strchr("eEbBxXnN", s[0]))
        return true;
    if (n >= 4 && (s[0] == 'u' || s[0] == 'U') && s[1] == '&' && s[2] == '\'')
        return true;
    return n >= 2 && s[0] == '$' && !pgt__fp_is_digit(s[1]);
}

/* Whether sql[0..len) cannot hold a constant token, as a look at its bytes
 * tells without the scanner: no quote, no '$' but before a parameter's
 * digits, and no digit that does not continue a word or a parameter (a
 * number token starts with a digit or ".digit" after something else). A
 * text that fails the look may still have none; the scanner decides. The
 * statements of a driver's prepared point lookup pass it: their constants
 * are all in the Bind. */
static bool surely_no_constants(const char *sql, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)sql[i];
        if (c == '\'')
            return false;
        if (c == '$' && (i + 1 >= len || !pgt__fp_is_digit(sql[i + 1])))
            return false;
        if (pgt__fp_is_digit((char)c) && (i == 0 || !pgt__fp_is_word(sql[i - 1])))
            return false;
    }
    return true;
}

uint64_t pgt_fp_constants_hash(const char *sql, size_t len, uint64_t params)
{
    uint64_t h = pgt_fnv1a(PGT_FNV_BASIS, &params, sizeof(params));
    if (len <= SCAN_MAX && surely_no_constants(sql, len)) {
        h = pgt_mix64(h); /* what the scan below gives without a constant */
        return h ? h : 1;
    }
    char *text = len <= SCAN_MAX ? pgt__fp_dup_nul(sql, len) : NULL;
    toks_t ts;
    if (!text || pgt__fp_scan_tokens(text, len, KEEP_CODE, &ts) != 0) {
        /* Unscannable or huge: the text itself stands for its constants. */
        free(text);
        h = pgt_mix64(pgt_fnv1a(h, sql, len));
        return h ? h : 1;
    }
    for (size_t i = 0; i < ts.n; i++) {
        const tok_t *t = &ts.v[i];
        size_t n = t->end - t->start;
        if (!is_constant(text + t->start, n, t->keyword))
            continue;
        /* A minus just before a number is part of it (-5 and 5 share a
         * fingerprint). Each constant is closed by its length, so that
         * ('ab', 'c') and ('a', 'bc') differ. */
        if (i > 0 && pgt__fp_tok_ch(&ts, i - 1, '-'))
            h = pgt_fnv1a(h, "-", 1);
        h = pgt_fnv1a(h, text + t->start, n);
        uint64_t nn = n;
        h = pgt_fnv1a(h, &nn, sizeof(nn));
    }
    free(ts.v);
    free(text);
    h = pgt_mix64(h);
    return h ? h : 1;
}
