/* The growing text buffer with a sticky failure flag (see pgtally/buf.h). */
#include "pgtally/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIRST_CAP 1024 /* bytes of the first allocation */

void pgt_buf_add(pgt_buf_t *b, const void *p, size_t n)
{
    if (b->failed)
        return;
    if (n >= SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : FIRST_CAP;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->failed = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    if (n)
        memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void pgt_buf_puts(pgt_buf_t *b, const char *s)
{
    pgt_buf_add(b, s, strlen(s));
}

void pgt_buf_putc(pgt_buf_t *b, char c)
{
    pgt_buf_add(b, &c, 1);
}

void pgt_buf_printf(pgt_buf_t *b, const char *fmt, ...)
{
    char small[256], *big = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        pgt_buf_add(b, small, (size_t)n);
        return;
    }
    va_start(ap, fmt);
    n = vasprintf(&big, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    pgt_buf_add(b, big, (size_t)n);
    free(big);
}

void pgt_buf_truncate(pgt_buf_t *b, size_t len)
{
    if (b->failed || len >= b->len)
        return;
    b->len = len;
    b->s[len] = '\0';
}

char *pgt_buf_take(pgt_buf_t *b)
{
    if (!b->failed && !b->s)
        pgt_buf_add(b, "", 0);
    if (b->failed) {
        pgt_buf_free(b);
        return NULL;
    }
    char *s = b->s;
    *b = (pgt_buf_t){0};
    return s;
}

void pgt_buf_free(pgt_buf_t *b)
{
    free(b->s);
    *b = (pgt_buf_t){0};
}

void *pgt_push(void *items, size_t *n, size_t *cap, size_t size)
{
    void **v = items;
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        void *p = realloc(*v, c * size);
        if (!p)
            return NULL;
        *v = p;
        *cap = c;
    }
    void *slot = (char *)*v + (*n)++ * size;
    memset(slot, 0, size);
    return slot;
}
