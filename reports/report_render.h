/* Pieces shared by the report's renderers (internal): a growable output
 * buffer with a sticky failure flag, readers of the report document, and
 * the formatting of amounts, counts, durations and statement text. Every
 * renderer is pure: the document in, a string out. */
#ifndef PGTALLY_REPORT_RENDER_H
#define PGTALLY_REPORT_RENDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/text.h"

/* A growing string. After an allocation fails, appends do nothing and
 * rb_finish reports it once. */
typedef struct rbuf {
    char *s;     /* the text, NUL-terminated while not failed */
    size_t len;  /* bytes of text */
    size_t cap;  /* bytes allocated */
    bool failed; /* out of memory */
} rbuf_t;

void rb_add(rbuf_t *b, const char *s, size_t n);
void rb_puts(rbuf_t *b, const char *s);
void rb_putc(rbuf_t *b, char c);
void rb_printf(rbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Returns the text (the caller frees it), or NULL with "out of memory" in
 * err after a failure (then the buffer is freed). */
char *rb_finish(rbuf_t *b, char *err, size_t errlen);
void rb_free(rbuf_t *b);

/* Members of the document: a string ("" when missing or null), an integer
 * (0), a number (0), an array (NULL) and whether a member is null or
 * missing. */
const char *rj_str(const json_t *o, const char *key);
int64_t rj_int(const json_t *o, const char *key);
double rj_num(const json_t *o, const char *key);
const json_t *rj_arr(const json_t *o, const char *key);
bool rj_null(const json_t *o, const char *key);

/* Sizes of the formatting buffers below. */
#define RF_SHORT 48

/* "1.23 USD" from o[key + "_micro"] in the document's currency. */
char *rf_money(const json_t *doc, const json_t *o, const char *key, char *buf, size_t len);

/* "10,000,000". */
char *rf_count(int64_t n, char *buf, size_t len);

/* A change in percent: "+12.3%", "-4.0%", or none_text when null. */
char *rf_change(const json_t *o, const char *key, const char *none_text, char *buf, size_t len);

/* "09:12:33" from an RFC 3339 time; "" when it is not one. */
char *rf_clock(const char *iso, char *buf, size_t len);

/* Appends s with every run of white space and control characters made one
 * space, trimmed, and cut to at most max characters (0: no limit), the cut
 * marked with ellipsis. s is valid UTF-8 (it comes from the document). */
void rf_snippet(rbuf_t *out, const char *s, size_t max, const char *ellipsis);

/* Appends the tags object as "key=value, key=value" (nothing for null). */
void rf_tags(rbuf_t *out, const json_t *tags);

/* The renderers. Each returns a malloc'd string, or NULL with the cause in
 * err. */
char *pgt_report_render_html(const json_t *doc, char *err, size_t errlen);
char *pgt_report_render_slack(const json_t *doc, char *err, size_t errlen);

/* A budget's subject in plain text: "user alice", "default: bob",
 * "(removed)". */
void rf_subject_text(rbuf_t *out, const json_t *b);

#endif
