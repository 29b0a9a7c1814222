/* A message builder with a sticky failure flag: once a write does not fit,
 * later writes do nothing and the caller checks `failed` once before
 * sending (as PgBouncer's PktBuf). */
#ifndef PGTALLY_MSGBUF_H
#define PGTALLY_MSGBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pgt_msgbuf {
    uint8_t *data;    /* storage (not owned) */
    size_t cap;       /* bytes of storage */
    size_t len;       /* bytes written */
    size_t msg_start; /* offset of the open message's type byte */
    bool failed;      /* a write did not fit; the contents are unusable */
} pgt_msgbuf_t;

/* Uses storage[0..cap) as the buffer. */
void pgt_msgbuf_init(pgt_msgbuf_t *mb, void *storage, size_t cap);
/* Opens a typed message; its length is filled in by pgt_msgbuf_end. */
void pgt_msgbuf_begin(pgt_msgbuf_t *mb, uint8_t type);
void pgt_msgbuf_u8(pgt_msgbuf_t *mb, uint8_t v);
void pgt_msgbuf_u32(pgt_msgbuf_t *mb, uint32_t v);
void pgt_msgbuf_bytes(pgt_msgbuf_t *mb, const void *p, size_t n);
/* Writes a string and its terminating NUL. */
void pgt_msgbuf_cstr(pgt_msgbuf_t *mb, const char *s);
/* Closes the message opened by pgt_msgbuf_begin, writing its length. */
void pgt_msgbuf_end(pgt_msgbuf_t *mb);

#endif
