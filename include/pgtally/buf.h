/* A growing text buffer with a sticky failure flag: once an allocation
 * fails, later appends do nothing and the owner checks `failed` once at the
 * end (as proxy/msgbuf.c does for a fixed buffer). The renderers write
 * into one; pgtallyctl fills one and writes it to its FILE. */
#ifndef PGTALLY_BUF_H
#define PGTALLY_BUF_H

#include <stdbool.h>
#include <stddef.h>

/* A growing string; {0} is an empty buffer. */
typedef struct pgt_buf {
    char *s;     /* the text (owned), NUL-terminated; NULL before the first append */
    size_t len;  /* bytes of text */
    size_t cap;  /* bytes allocated */
    bool failed; /* an allocation failed: the text is unusable */
} pgt_buf_t;

/* Append n bytes, a string, one character, or printf-formatted text. Each
 * does nothing once the buffer has failed, and sets `failed` when out of
 * memory. */
void pgt_buf_add(pgt_buf_t *b, const void *p, size_t n);
void pgt_buf_puts(pgt_buf_t *b, const char *s);
void pgt_buf_putc(pgt_buf_t *b, char c);
void pgt_buf_printf(pgt_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Drops the text after its first len bytes (nothing when len >= b->len). */
void pgt_buf_truncate(pgt_buf_t *b, size_t len);

/* Returns the text, "" for a buffer never appended to, and hands it to the
 * caller (who frees it); the buffer is empty again. Returns NULL when the
 * buffer has failed or the "" cannot be allocated; then the buffer is freed. */
char *pgt_buf_take(pgt_buf_t *b);

/* Frees the text; the buffer is empty again ({0}). */
void pgt_buf_free(pgt_buf_t *b);

/* Returns a new zeroed slot at the end of the array *items points to (*n
 * used, *cap allocated, size bytes each), growing it by doubling; NULL when
 * out of memory (the array is left as it was). */
void *pgt_push(void *items, size_t *n, size_t *cap, size_t size);

#endif
