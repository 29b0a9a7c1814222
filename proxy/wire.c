/* The PostgreSQL v3 wire codec: framing, startup packets, ErrorResponse
 * building and field reads. Pure functions over byte
 * buffers; every read is bounds-checked. */
#include "pgtally/wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pgt_reader_init(pgt_reader_t *r, const void *data, size_t len)
{
    r->data = data;
    r->len = len;
    r->pos = 0;
}

bool pgt_reader_u8(pgt_reader_t *r, uint8_t *out)
{
    if (r->len - r->pos < 1)
        return false;
    *out = r->data[r->pos++];
    return true;
}

bool pgt_reader_u16(pgt_reader_t *r, uint16_t *out)
{
    if (r->len - r->pos < 2)
        return false;
    *out = (uint16_t)(r->data[r->pos] << 8 | r->data[r->pos + 1]);
    r->pos += 2;
    return true;
}

bool pgt_reader_skip(pgt_reader_t *r, size_t n)
{
    if (r->len - r->pos < n)
        return false;
    r->pos += n;
    return true;
}

bool pgt_reader_u32(pgt_reader_t *r, uint32_t *out)
{
    if (r->len - r->pos < 4)
        return false;
    *out = pgt_be32(r->data + r->pos);
    r->pos += 4;
    return true;
}

bool pgt_reader_cstr(pgt_reader_t *r, const char **out)
{
    const uint8_t *start = r->data + r->pos;
    const uint8_t *nul = memchr(start, 0, r->len - r->pos);
    if (!nul)
        return false;
    *out = (const char *)start;
    r->pos += (size_t)(nul - start) + 1;
    return true;
}

void pgt_framer_init(pgt_framer_t *f, int64_t max_len)
{
    memset(f, 0, sizeof(*f));
    f->max_len = max_len;
}

void pgt_framer_capture(pgt_framer_t *f, const uint8_t *types, uint32_t max)
{
    f->capture = types;
    f->capture_max = max;
}

void pgt_framer_heads(pgt_framer_t *f, bool on)
{
    f->heads = on;
}

/* Completes the current message: report it and reset for the next one. */
static void framer_finish(pgt_framer_t *f, pgt_framer_cb cb, void *arg)
{
    cb(arg, f->type, f->len, f->peek, f->peek_have);
    f->hdr_have = 0;
    f->peek_have = 0;
}

/* Reads a header from data[*i..len); returns 1 when complete, 0 when more
 * bytes are needed, PGT_WIRE_EBADLEN for a bad length. */
static int framer_header(pgt_framer_t *f, const uint8_t *data, size_t len, size_t *i)
{
    size_t n = 5u - f->hdr_have;
    if (n > len - *i)
        n = len - *i;
    memcpy(f->hdr + f->hdr_have, data + *i, n);
    f->hdr_have = (uint8_t)(f->hdr_have + n);
    *i += n;
    if (f->hdr_have < 5)
        return 0;
    f->type = f->hdr[0];
    f->len = pgt_be32(f->hdr + 1);
    if (f->len < 4 || (int64_t)f->len > f->max_len)
        return PGT_WIRE_EBADLEN;
    f->body_left = f->len - 4;
    f->peek_have = 0;
    return 1;
}

/* At a message boundary in front of a captured type: report the message
 * whole, or stop in front of it. Returns 0 to go on, a PGT_WIRE_ result to
 * return, or -100 when the message is too long to capture and streams. */
static int framer_captured(pgt_framer_t *f, const uint8_t *data, size_t len, size_t *i,
                           pgt_framer_cb cb, void *arg)
{
    if (len - *i < 5) {
        f->stopped_at = *i;
        return PGT_WIRE_PARTIAL;
    }
    uint32_t mlen = pgt_be32(data + *i + 1);
    if (mlen < 4 || (int64_t)mlen > f->max_len) {
        f->type = data[*i];
        f->len = mlen;
        return PGT_WIRE_EBADLEN;
    }
    if (mlen - 4 > f->capture_max && !f->heads)
        return -100;
    if (mlen - 4 > f->capture_max) {
        /* Its head: the first capture_max body bytes, then it streams. */
        if (len - *i - 5 < f->capture_max) {
            f->stopped_at = *i;
            return PGT_WIRE_PARTIAL;
        }
        f->type = data[*i];
        f->len = mlen;
        f->msg_start = *i;
        f->head = true;
        cb(arg, f->type, mlen, data + *i + 5, f->capture_max);
        f->head = false;
        if (!f->stop)
            return -100;
        f->stop = false;
        f->stopped_at = *i;
        return PGT_WIRE_STOPPED;
    }
    if (len - *i - 1 < mlen) {
        f->stopped_at = *i;
        return PGT_WIRE_PARTIAL;
    }
    f->type = data[*i];
    f->len = mlen;
    f->msg_start = *i;
    cb(arg, f->type, mlen, data + *i + 5, mlen - 4);
    *i += (size_t)mlen + 1;
    if (f->stop) {
        f->stop = false;
        f->stopped_at = *i;
        return PGT_WIRE_STOPPED;
    }
    return 0;
}

static uint64_t count_newlines(const uint8_t *p, size_t n)
{
    uint64_t c = 0;
    for (const uint8_t *end = p + n; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
        c++;
    return c;
}

int pgt_framer_feed(pgt_framer_t *f, const uint8_t *data, size_t len, pgt_framer_cb cb, void *arg)
{
    size_t i = 0;
    while (i < len) {
        if (f->body_left == 0) {
            if (f->hdr_have == 0 && f->capture && f->capture[data[i]]) {
                int rc = framer_captured(f, data, len, &i, cb, arg);
                if (rc != -100) {
                    if (rc != 0)
                        return rc;
                    continue;
                }
            }
            int rc = framer_header(f, data, len, &i);
            if (rc <= 0)
                return rc;
            if (f->body_left == 0) {
                framer_finish(f, cb, arg);
                continue;
            }
        }
        size_t n = f->body_left;
        if (n > len - i)
            n = len - i;
        if (f->peek_have < PGT_FRAMER_PEEK) {
            size_t p = PGT_FRAMER_PEEK - f->peek_have;
            if (p > n)
                p = n;
            memcpy(f->peek + f->peek_have, data + i, p);
            f->peek_have = (uint8_t)(f->peek_have + p);
        }
        if (f->type == 'd' && f->count_lines)
            f->lines += count_newlines(data + i, n);
        f->body_left -= (uint32_t)n;
        i += n;
        if (f->body_left == 0)
            framer_finish(f, cb, arg);
    }
    return 0;
}

int pgt_wire_next(const uint8_t *buf, size_t len, int64_t max_len, uint8_t *type, size_t *total)
{
    if (len < 5)
        return 0;
    uint32_t mlen = pgt_be32(buf + 1);
    if (mlen < 4 || (int64_t)mlen > max_len)
        return PGT_WIRE_EBADLEN;
    if (len - 1 < mlen)
        return 0;
    *type = buf[0];
    *total = (size_t)mlen + 1;
    return 1;
}

static int startup_fail(pgt_startup_error_t *err, const char *sqlstate, const char *msg)
{
    err->sqlstate = sqlstate;
    snprintf(err->message, sizeof(err->message), "%s", msg);
    return PGT_WIRE_EFORMAT;
}

/* Reads the key/value list of a StartupMessage (protocol docs, "Message
 * Formats", StartupMessage): pairs of strings ended by an empty name. */
static int startup_params(pgt_reader_t *r, pgt_startup_t *out, pgt_startup_error_t *err)
{
    for (;;) {
        const char *k, *v;
        if (!pgt_reader_cstr(r, &k))
            return startup_fail(err, "08P01",
                                "invalid startup packet layout: expected terminator as last byte");
        if (k[0] == '\0')
            break;
        if (!pgt_reader_cstr(r, &v))
            return startup_fail(err, "08P01",
                                "invalid startup packet layout: expected terminator as last byte");
        if (out->nparams == PGT_STARTUP_MAX_PARAMS)
            return startup_fail(err, "08P01", "too many parameters in startup packet");
        out->keys[out->nparams] = k;
        out->values[out->nparams] = v;
        out->nparams++;
        if (strcmp(k, "user") == 0)
            out->user = v;
        else if (strcmp(k, "database") == 0)
            out->database = v;
        else if (strcmp(k, "application_name") == 0)
            out->application_name = v;
    }
    if (r->pos != r->len)
        return startup_fail(err, "08P01",
                            "invalid startup packet layout: expected terminator as last byte");
    return 0;
}

int pgt_wire_startup_parse(const uint8_t *pkt, size_t len, pgt_startup_t *out,
                           pgt_startup_error_t *err)
{
    memset(out, 0, sizeof(*out));
    out->application_name = "";
    if (len < 8 || pgt_be32(pkt) != len)
        return startup_fail(err, "08P01", "invalid length of startup packet");
    pgt_reader_t r;
    pgt_reader_init(&r, pkt + 4, len - 4);
    if (!pgt_reader_u32(&r, &out->code))
        return startup_fail(err, "08P01", "invalid length of startup packet");
    switch (out->code) {
    case PGT_CODE_SSL:
    case PGT_CODE_GSSENC:
        if (len != 8)
            return startup_fail(err, "08P01", "invalid length of encryption request packet");
        return 0;
    case PGT_CODE_CANCEL:
        if (len != 16 || !pgt_reader_u32(&r, &out->cancel_pid) ||
            !pgt_reader_u32(&r, &out->cancel_key))
            return startup_fail(err, "08P01", "invalid length of cancel request packet");
        return 0;
    default:
        break;
    }
    if ((out->code >> 16) != 3) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0", out->code >> 16,
                 out->code & 0xffff);
        return startup_fail(err, "0A000", msg);
    }
    int rc = startup_params(&r, out, err);
    if (rc != 0)
        return rc;
    if (!out->user || !out->user[0])
        return startup_fail(err, "28000", "no PostgreSQL user name specified in startup packet");
    if (!out->database || !out->database[0])
        out->database = out->user;
    return 0;
}

/* An ErrorResponse or NoticeResponse: the same fields. */
static void wire_report(pgt_msgbuf_t *mb, uint8_t type, const char *severity, const char *sqlstate,
                        const char *message, const char *detail, const char *hint)
{
    pgt_msgbuf_begin(mb, type);
    pgt_msgbuf_u8(mb, 'S');
    pgt_msgbuf_cstr(mb, severity);
    pgt_msgbuf_u8(mb, 'V');
    pgt_msgbuf_cstr(mb, severity);
    pgt_msgbuf_u8(mb, 'C');
    pgt_msgbuf_cstr(mb, sqlstate);
    pgt_msgbuf_u8(mb, 'M');
    pgt_msgbuf_cstr(mb, message);
    if (detail) {
        pgt_msgbuf_u8(mb, 'D');
        pgt_msgbuf_cstr(mb, detail);
    }
    if (hint) {
        pgt_msgbuf_u8(mb, 'H');
        pgt_msgbuf_cstr(mb, hint);
    }
    pgt_msgbuf_u8(mb, 0);
    pgt_msgbuf_end(mb);
}

void pgt_wire_error(pgt_msgbuf_t *mb, const char *severity, const char *sqlstate,
                    const char *message, const char *detail, const char *hint)
{
    wire_report(mb, 'E', severity, sqlstate, message, detail, hint);
}

void pgt_wire_notice(pgt_msgbuf_t *mb, const char *severity, const char *sqlstate,
                     const char *message)
{
    wire_report(mb, 'N', severity, sqlstate, message, NULL, NULL);
}

int pgt_wire_sasl_strip_plus(const uint8_t *body, size_t len, pgt_msgbuf_t *mb)
{
    pgt_reader_t r;
    pgt_reader_init(&r, body, len);
    pgt_msgbuf_begin(mb, 'R');
    pgt_msgbuf_u32(mb, 10);
    for (;;) {
        const char *mech;
        if (!pgt_reader_cstr(&r, &mech))
            return PGT_WIRE_EFORMAT;
        if (mech[0] == '\0')
            break;
        if (strcmp(mech, "SCRAM-SHA-256-PLUS") != 0)
            pgt_msgbuf_cstr(mb, mech);
    }
    pgt_msgbuf_u8(mb, 0);
    pgt_msgbuf_end(mb);
    return mb->failed ? PGT_WIRE_EFORMAT : 0;
}

bool pgt_wire_error_severity(const uint8_t *body, size_t len, char *out, size_t outlen)
{
    pgt_reader_t r;
    pgt_reader_init(&r, body, len);
    uint8_t field;
    const char *value;
    if (!pgt_reader_u8(&r, &field) || field != 'S' || !pgt_reader_cstr(&r, &value))
        return false;
    snprintf(out, outlen, "%s", value);
    return true;
}

int pgt_wire_error_shift_position(pgt_msgbuf_t *mb, uint8_t type, const uint8_t *body, size_t len,
                                  int32_t shift)
{
    pgt_reader_t r;
    pgt_reader_init(&r, body, len);
    pgt_msgbuf_begin(mb, type);
    uint8_t field;
    const char *value;
    while (pgt_reader_u8(&r, &field)) {
        if (field == 0) {
            pgt_msgbuf_u8(mb, 0);
            pgt_msgbuf_end(mb);
            return r.pos == len ? 0 : PGT_WIRE_EFORMAT;
        }
        if (!pgt_reader_cstr(&r, &value))
            break;
        if (field == 'P') {
            char *end;
            long pos = strtol(value, &end, 10);
            if (end == value || *end != 0 || pos < 1 || pos > INT32_MAX)
                return PGT_WIRE_EFORMAT;
            pos -= shift;
            if (pos < 1)
                continue;
            char num[16];
            snprintf(num, sizeof(num), "%ld", pos);
            value = num;
            pgt_msgbuf_u8(mb, field);
            pgt_msgbuf_cstr(mb, value);
            continue;
        }
        pgt_msgbuf_u8(mb, field);
        pgt_msgbuf_cstr(mb, value);
    }
    return PGT_WIRE_EFORMAT;
}

const char *pgt_wire_error_field(const uint8_t *body, size_t len, uint8_t field)
{
    pgt_reader_t r;
    pgt_reader_init(&r, body, len);
    uint8_t f;
    const char *value;
    while (pgt_reader_u8(&r, &f) && f != 0 && pgt_reader_cstr(&r, &value))
        if (f == field)
            return value;
    return NULL;
}

bool pgt_wire_error_code(const uint8_t *body, size_t len, char out[6])
{
    const char *value = pgt_wire_error_field(body, len, 'C');
    if (!value || strlen(value) != 5)
        return false;
    memcpy(out, value, 6);
    return true;
}

uint64_t pgt_wire_error_copy_line(const uint8_t *body, size_t len)
{
    /* CopyFromErrorCallback (copyfrom.c): "COPY %s, line %llu[, column
     * %s: ...]", one line of the context, maybe under others (a trigger's). */
    static const char line[] = ", line ";
    for (const char *w = pgt_wire_error_field(body, len, 'W'); w && *w;) {
        const char *comma = strncmp(w, "COPY ", 5) == 0 ? strstr(w, line) : NULL;
        const char *eol = strchr(w, '\n');
        if (comma && (!eol || comma < eol)) {
            char *end;
            unsigned long long n = strtoull(comma + sizeof(line) - 1, &end, 10);
            return end > comma + sizeof(line) - 1 &&
                           (*end == ',' || *end == ':' || *end == '\0' || *end == '\n')
                       ? (uint64_t)n
                       : 0;
        }
        w = eol ? eol + 1 : NULL;
    }
    return 0;
}
