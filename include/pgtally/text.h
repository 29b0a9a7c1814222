/* Small text helpers shared by the report and pgtallyctl, so that both
 * write CSV, aligned tables and JSON strings by the same rules: UTF-8,
 * durations, one-line snippets, CSV fields, aligned tables and JSON text. */
#ifndef PGTALLY_TEXT_H
#define PGTALLY_TEXT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/buf.h"

/* Returns the length of the valid UTF-8 sequence at p (1 to 4), or 0.
 * p must have 4 readable bytes or a NUL before the sequence ends. */
size_t pgt_utf8_len(const unsigned char *p);

/* The FNV-1a hash: start from PGT_FNV_BASIS and add bytes with
 * pgt_fnv1a(h, p, n), which returns the new hash. For the in-memory tables
 * of a few modules; a hash that is kept (the constants hash, ticket ids)
 * finishes it with pgt_mix64, so that every input bit reaches every output
 * bit. Both are fixed: a hash kept by one version is the same in the next. */
#define PGT_FNV_BASIS 1469598103934665603ull
uint64_t pgt_fnv1a(uint64_t h, const void *p, size_t n);

/* splitmix64's finalizer. */
uint64_t pgt_mix64(uint64_t x);

/* A duration for people: "0.250 ms", "12.3 ms", "1.52 s", "3m05s",
 * "2h10m". Returns buf. */
char *pgt_fmt_seconds(double s, char *buf, size_t len);

/* A count of rows as people write it: digits with an optional fraction
 * and exponent ("5000000", "1e9", "2.5E6", "1e+9"), whose value is a
 * whole number from 0 to PGT_ROWS_MAX. Nothing else: no sign, no spaces,
 * no suffix. Returns 0 with the value in *out, or -1. */
#define PGT_ROWS_MAX 1000000000000000000ll /* 1e18 */
int pgt_rows_parse(const char *s, int64_t *out) __attribute__((warn_unused_result));

/* Writes rows the shortest way that reads back exactly with
 * pgt_rows_parse: "1e9" or "2.5e9" from a million up when three
 * significant digits hold it, else the digits ("500000", "1234567").
 * Returns buf. */
char *pgt_rows_format(int64_t rows, char *buf, size_t len);

/* Returns the columns s takes on a terminal: East Asian wide and
 * fullwidth characters (CJK, Hangul, kana, the emoji blocks) count two,
 * combining marks and zero-width characters none, others one; an invalid
 * byte counts one (it is shown as '?'). NULL is 0 wide. */
size_t pgt_text_width(const char *s);

/* Appends s as one line of text, the rule of every table cell and report
 * snippet: runs of white space (space, \t, \n, \v, \f, \r) become one
 * space, leading and trailing ones are dropped; other control characters
 * (C0, DEL, C1) and bytes that are not valid UTF-8 become '?'. When
 * max > 0 and the line is wider than max columns, it is cut on a character
 * boundary (never after a space) so that the kept text and ellipsis are
 * at most max wide (only the ellipsis when it alone is wider). NULL is "".
 * Returns the width appended. */
size_t pgt_text_snippet(pgt_buf_t *out, const char *s, size_t max, const char *ellipsis);

/* Appends one CSV field, RFC 4180: quoted, with quotes doubled, when it
 * holds a comma, a double quote, CR or LF, and also when it begins or ends
 * with white space (space, \t, \v, \f), which spreadsheets would otherwise
 * trim. Other bytes are kept as they are. NULL is an empty field. */
void pgt_text_csv_field(pgt_buf_t *out, const char *s);

/* Appends n fields separated by commas (see pgt_text_csv_field), then eol
 * ("\r\n" as RFC 4180 says, or "\n"). */
void pgt_text_csv_row(pgt_buf_t *out, const char *const *cells, size_t n, const char *eol);

/* An aligned text table for a terminal: columns two spaces apart, each as
 * wide as its widest cell in display columns (pgt_text_width), left or
 * right aligned, the last left-aligned column not padded. Cells go through
 * pgt_text_snippet, cut with "...". Out of memory is sticky: adds do
 * nothing and printing fails the output buffer. */
typedef struct pgt_text_table pgt_text_table_t;

/* A new table of ncols columns named by headers (cleaned as cells are);
 * right[i] aligns column i right (numbers); right may be NULL. Returns
 * NULL when out of memory. */
pgt_text_table_t *pgt_text_table_new(size_t ncols, const char *const *headers, const bool *right);

/* Adds the next cell, row after row (ncols cells a row): s (NULL is
 * empty) as one line at most max columns wide (0: no limit). t may be
 * NULL (a failed pgt_text_table_new): then nothing happens. */
void pgt_text_table_cell(pgt_text_table_t *t, const char *s, size_t max);

/* Adds a row of ncols cells, each at most max wide. Returns 0, or -1 once
 * the table has failed (t NULL or out of memory, now or before). */
int pgt_text_table_row(pgt_text_table_t *t, const char *const *cells, size_t max)
    __attribute__((warn_unused_result));

/* Adds a rule: dashes as wide as each column. Call between rows. */
void pgt_text_table_rule(pgt_text_table_t *t);

/* Appends the header and the rows to out, each line ending in "\n"; a
 * last row left short prints empty cells. A failed (or NULL) table fails
 * out. The table is left as it was. */
void pgt_text_table_print(const pgt_text_table_t *t, pgt_buf_t *out);

/* Frees the table; NULL does nothing. */
void pgt_text_table_free(pgt_text_table_t *t);

/* Returns a new JSON string of s with each byte that is not part of valid
 * UTF-8 replaced by U+FFFD (jansson takes only valid UTF-8), or JSON null
 * for NULL. The caller owns the reference. Returns NULL only when out of
 * memory. */
json_t *pgt_text_json(const char *s);

/* snprintf into buf[0..len) where truncating a message for people is
 * fine (it always ends in a NUL). */
void pgt_say(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
