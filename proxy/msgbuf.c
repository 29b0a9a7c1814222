/* Message builder with a sticky failure flag. */
#include "pgtally/msgbuf.h"

#include <string.h>

void pgt_msgbuf_init(pgt_msgbuf_t *mb, void *storage, size_t cap)
{
    mb->data = storage;
    mb->cap = cap;
    mb->len = 0;
    mb->msg_start = 0;
    mb->failed = false;
}

void pgt_msgbuf_bytes(pgt_msgbuf_t *mb, const void *p, size_t n)
{
    if (mb->failed)
        return;
    if (n > mb->cap - mb->len) {
        mb->failed = true;
        return;
    }
    memcpy(mb->data + mb->len, p, n);
    mb->len += n;
}

void pgt_msgbuf_u8(pgt_msgbuf_t *mb, uint8_t v)
{
    pgt_msgbuf_bytes(mb, &v, 1);
}

void pgt_msgbuf_u32(pgt_msgbuf_t *mb, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    pgt_msgbuf_bytes(mb, b, 4);
}

void pgt_msgbuf_cstr(pgt_msgbuf_t *mb, const char *s)
{
    pgt_msgbuf_bytes(mb, s, strlen(s) + 1);
}

void pgt_msgbuf_begin(pgt_msgbuf_t *mb, uint8_t type)
{
    mb->msg_start = mb->len;
    pgt_msgbuf_u8(mb, type);
    pgt_msgbuf_u32(mb, 0);
}

void pgt_msgbuf_end(pgt_msgbuf_t *mb)
{
    if (mb->failed)
        return;
    uint32_t n = (uint32_t)(mb->len - mb->msg_start - 1);
    uint8_t *p = mb->data + mb->msg_start + 1;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
}
