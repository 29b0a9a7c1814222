/* Writing to one side of a session: straight to the socket when it takes
 * the bytes, the rest queued with backpressure on the other side; TLS
 * encryption on the way; the bytes a side's messages are kept in (pend)
 * while pgtally must look at them whole. */
#include "session_int.h"

#include <stdlib.h>
#include <string.h>

#include "pgtally/log.h"
#include "pgtally/tls.h"

/* One uv_write request with its own copy of the bytes. */
typedef struct wreq {
    uv_write_t req; /* libuv request; req.data is the conn */
    size_t len;     /* bytes in data */
    uint8_t data[]; /* the bytes */
} wreq_t;

/* Ciphertext taken from OpenSSL (the loop is single-threaded). */
static uint8_t cipher_buf[64 * 1024];

/* Reading from the side that feeds a connection stops past PGT_HIGH_WATER
 * queued to it, and resumes at this. */
#define PGT_LOW_WATER (128 * 1024)

static conn_t *peer_of(conn_t *c)
{
    return c == &c->s->client ? &c->s->server : &c->s->client;
}

/* A write to one side failed. A client that cannot be written to ends the
 * session. A server that cannot be written to has usually just sent a FATAL
 * and closed: what it sent is still to be read, and the client is owed it as
 * a direct connection would have it, so the server is read to its end (or
 * for PGT_FLUSH_TIMEOUT_MS) and nothing more is written to it. */
static void write_failed(conn_t *c, int err)
{
    pgt_session_t *s = c->s;
    PGT_INFO("write_failed", "session=C-%llu side=%s error=\"%s\"", (unsigned long long)s->id,
             c == &s->client ? "client" : "server", uv_strerror(err));
    if (c == &s->client || !s->server.want_read) {
        pgt__session_close(s, c == &s->client ? "client_write_failed" : "server_write_failed");
        return;
    }
    s->server.write_dead = true;
    s->client.want_read = false;
    pgt__conn_update_reading(&s->client);
    pgt__session_flush_guard(s);
}

static void write_cb(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    conn_t *c = req->data;
    c->queued -= w->len;
    free(w);
    pgt_session_t *s = c->s;
    if (status < 0) {
        if (status != UV_ECANCELED && s->state != ST_CLOSING)
            write_failed(c, status);
        return;
    }
    if (c->close_on_flush && c->queued == 0) {
        pgt__conn_close_now(c);
        return;
    }
    if (s->console)
        pgt__console_wrote(s);
    conn_t *src = peer_of(c);
    if (src->paused && c->queued <= PGT_LOW_WATER) {
        src->paused = false;
        pgt__conn_update_reading(src);
    }
}

/* Writes bytes as they are: directly when the socket takes them, the rest
 * copied into a queued request. */
void pgt__conn_raw_send(conn_t *c, const uint8_t *data, size_t len)
{
    if (!c->open || c->close_started || c->write_dead || len == 0)
        return;
    size_t off = 0;
    if (c->queued == 0) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n > 0)
            off = (size_t)n;
        else if (n < 0 && n != UV_EAGAIN) {
            write_failed(c, n);
            return;
        }
    }
    if (off == len)
        return;
    size_t rest = len - off;
    wreq_t *w = malloc(sizeof(*w) + rest);
    if (!w) {
        PGT_ERROR("out_of_memory", "session=C-%llu bytes=%zu", (unsigned long long)c->s->id, rest);
        pgt__session_close(c->s, "out_of_memory");
        return;
    }
    memcpy(w->data, data + off, rest);
    w->len = rest;
    w->req.data = c;
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)rest);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0) {
        free(w);
        pgt__session_close(c->s, "write_failed");
        return;
    }
    c->queued += rest;
    /* Backpressure: stop reading from the side that feeds this one. */
    conn_t *src = peer_of(c);
    if (c->queued > PGT_HIGH_WATER && !src->paused) {
        src->paused = true;
        pgt__conn_update_reading(src);
    }
}

/* Sends whatever ciphertext OpenSSL has produced. */
void pgt__conn_flush_tls(conn_t *c)
{
    size_t n;
    while ((n = pgt_tls_take_output(c->tls, cipher_buf, sizeof(cipher_buf))) > 0)
        pgt__conn_raw_send(c, cipher_buf, n);
}

/* Sends protocol bytes to one side, encrypting them when it speaks TLS. */
void pgt__conn_send(conn_t *c, const void *data, size_t len)
{
    if (!c->tls) {
        pgt__conn_raw_send(c, data, len);
        return;
    }
    if (pgt_tls_write(c->tls, data, len) != 0) {
        PGT_WARN("tls_error", "session=C-%llu error=\"%s\"", (unsigned long long)c->s->id,
                 pgt_tls_error(c->tls));
        pgt__session_close(c->s, "tls_write_failed");
        return;
    }
    pgt__conn_flush_tls(c);
}

int pgt__pend_append(conn_t *c, const uint8_t *data, size_t len)
{
    if (c->pend_len + len > c->pend_cap) {
        size_t cap = c->pend_cap ? c->pend_cap : 512;
        while (cap < c->pend_len + len)
            cap *= 2;
        uint8_t *p = realloc(c->pend, cap);
        if (!p)
            return -1;
        c->pend = p;
        c->pend_cap = cap;
    }
    memcpy(c->pend + c->pend_len, data, len);
    c->pend_len += len;
    return 0;
}

/* Takes the kept bytes out of c (the caller frees them); *n is their length. */
uint8_t *pgt__pend_take(conn_t *c, size_t *n)
{
    uint8_t *buf = c->pend;
    *n = c->pend_len;
    c->pend = NULL;
    c->pend_len = c->pend_cap = 0;
    return buf;
}

void pgt__pend_consume(conn_t *c, size_t n)
{
    memmove(c->pend, c->pend + n, c->pend_len - n);
    c->pend_len -= n;
    if (c->pend_len == 0) {
        free(c->pend);
        c->pend = NULL;
        c->pend_cap = 0;
    }
}
