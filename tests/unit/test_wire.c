/* Unit tests of the wire codec: framing across arbitrary splits, length
 * limits, startup packets (good and malformed, table-driven), and ErrorResponse
 * building and position shifting. */
#include <stdint.h>

#include "pgtally/wire.h"
#include "task.h"

typedef struct seen {
    char types[64];    /* message types in order */
    uint32_t lens[64]; /* their length fields */
    int n;             /* messages seen */
} seen_t;

static void record(void *arg, uint8_t type, uint32_t len, const uint8_t *peek, size_t plen)
{
    seen_t *s = arg;
    (void)peek;
    (void)plen;
    if (s->n < 64) {
        s->types[s->n] = (char)type;
        s->lens[s->n] = len;
    }
    s->n++;
}

static size_t put_msg(uint8_t *p, char type, const char *body, uint32_t blen)
{
    p[0] = (uint8_t)type;
    uint32_t l = blen + 4;
    p[1] = (uint8_t)(l >> 24);
    p[2] = (uint8_t)(l >> 16);
    p[3] = (uint8_t)(l >> 8);
    p[4] = (uint8_t)l;
    memcpy(p + 5, body, blen);
    return 5 + blen;
}

/* The same stream fed in every possible chunk size yields the same messages. */
static void test_framer_splits(void)
{
    uint8_t stream[256];
    size_t n = 0;
    n += put_msg(stream + n, 'Q', "select 1\0", 9);
    n += put_msg(stream + n, 'S', "", 0);
    n += put_msg(stream + n, 'D', "0123456789abcdefghijklmnopqrstuvwxyz", 36);
    for (size_t chunk = 1; chunk <= n; chunk++) {
        pgt_framer_t f;
        pgt_framer_init(&f, 1 << 20);
        seen_t s = {.n = 0};
        for (size_t off = 0; off < n; off += chunk) {
            size_t m = n - off < chunk ? n - off : chunk;
            CHECK_INT(pgt_framer_feed(&f, stream + off, m, record, &s), 0);
        }
        CHECK_INT(s.n, 3);
        CHECK(memcmp(s.types, "QSD", 3) == 0);
        CHECK_INT(s.lens[2], 40);
        CHECK(pgt_framer_at_boundary(&f));
    }
}

/* A captured type is reported whole however the stream is split; other
 * types only by their first bytes. */
static uint8_t whole_q[256];
static size_t whole_q_len;

static void record_whole(void *arg, uint8_t type, uint32_t len, const uint8_t *peek, size_t plen)
{
    if (type == 'Q') {
        memcpy(whole_q, peek, plen);
        whole_q_len = plen;
    }
    record(arg, type, len, peek, plen);
}

/* Feeds a stream in chunks as a session does: what the framer leaves
 * (PARTIAL) is fed again with the next chunk in front. */
static void feed_like_session(pgt_framer_t *f, const uint8_t *stream, size_t n, size_t chunk,
                              seen_t *s)
{
    uint8_t pend[1024];
    size_t plen = 0;
    for (size_t off = 0; off < n; off += chunk) {
        size_t m = n - off < chunk ? n - off : chunk;
        memcpy(pend + plen, stream + off, m);
        plen += m;
        int rc = pgt_framer_feed(f, pend, plen, record_whole, s);
        CHECK(rc == 0 || rc == PGT_WIRE_PARTIAL);
        size_t used = rc == PGT_WIRE_PARTIAL ? f->stopped_at : plen;
        memmove(pend, pend + used, plen - used);
        plen -= used;
    }
    CHECK_INT(plen, 0);
}

static void test_framer_capture(void)
{
    static uint8_t capture[256] = {['Q'] = 1};
    static const char sql[] = "select 'a fairly long statement that is longer than the peek'";
    uint8_t stream[512];
    size_t n = 0;
    n += put_msg(stream + n, 'D', sql, sizeof(sql));
    n += put_msg(stream + n, 'Q', sql, sizeof(sql));
    n += put_msg(stream + n, 'S', "", 0);
    for (size_t chunk = 1; chunk <= n; chunk++) {
        pgt_framer_t f;
        pgt_framer_init(&f, 1 << 20);
        pgt_framer_capture(&f, capture, 1024);
        seen_t s = {.n = 0};
        whole_q_len = 0;
        feed_like_session(&f, stream, n, chunk, &s);
        CHECK_INT(s.n, 3);
        CHECK_INT(whole_q_len, sizeof(sql));
        CHECK(memcmp(whole_q, sql, sizeof(sql)) == 0);
    }
    /* A callback can stop right after a captured message. */
    pgt_framer_t f;
    pgt_framer_init(&f, 1 << 20);
    pgt_framer_capture(&f, capture, 1024);
    f.stop = true; /* as if set by the callback of the Q */
    seen_t s = {.n = 0};
    CHECK_INT(pgt_framer_feed(&f, stream, n, record_whole, &s), PGT_WIRE_STOPPED);
    CHECK_INT(f.stopped_at, n - 5);
    CHECK_INT(f.msg_start, 5 + sizeof(sql));
    /* Above the capture limit the message streams and only the peek is seen. */
    pgt_framer_init(&f, 1 << 20);
    pgt_framer_capture(&f, capture, 8);
    s.n = 0;
    whole_q_len = 0;
    CHECK_INT(pgt_framer_feed(&f, stream, n, record_whole, &s), 0);
    CHECK_INT(whole_q_len, PGT_FRAMER_PEEK);
}

/* With heads, a captured type above the limit is reported first by its
 * head (the first max bytes), however the stream is split, then again when
 * it ends; a callback can stop at the head, in front of the message. */
static int heads_seen;
static size_t head_len;

static void record_head(void *arg, uint8_t type, uint32_t len, const uint8_t *peek, size_t plen)
{
    pgt_framer_t *f = arg;
    if (f->head) {
        heads_seen++;
        head_len = plen;
        CHECK_INT(type, 'Q');
        CHECK(plen + 4 < len);
        CHECK(memcmp(peek, "select 'a", 9) == 0);
    }
}

static void test_framer_heads(void)
{
    static uint8_t capture[256] = {['Q'] = 1};
    static const char sql[] = "select 'a fairly long statement that is longer than the peek'";
    uint8_t stream[512];
    size_t n = 0;
    n += put_msg(stream + n, 'D', sql, sizeof(sql));
    n += put_msg(stream + n, 'Q', sql, sizeof(sql));
    n += put_msg(stream + n, 'S', "", 0);
    for (size_t chunk = 1; chunk <= n; chunk++) {
        pgt_framer_t f;
        pgt_framer_init(&f, 1 << 20);
        pgt_framer_capture(&f, capture, 16);
        pgt_framer_heads(&f, true);
        heads_seen = 0;
        uint8_t pend[512];
        size_t plen = 0;
        for (size_t off = 0; off < n; off += chunk) {
            size_t m = n - off < chunk ? n - off : chunk;
            memcpy(pend + plen, stream + off, m);
            plen += m;
            int rc = pgt_framer_feed(&f, pend, plen, record_head, &f);
            CHECK(rc == 0 || rc == PGT_WIRE_PARTIAL);
            size_t used = rc == PGT_WIRE_PARTIAL ? f.stopped_at : plen;
            memmove(pend, pend + used, plen - used);
            plen -= used;
        }
        CHECK_INT(heads_seen, 1);
        CHECK_INT(head_len, 16);
    }
    /* Stopped at the head: nothing of the Query consumed. */
    pgt_framer_t f;
    pgt_framer_init(&f, 1 << 20);
    pgt_framer_capture(&f, capture, 16);
    pgt_framer_heads(&f, true);
    f.stop = true; /* as if set by the callback of the head */
    CHECK_INT(pgt_framer_feed(&f, stream, n, record, &(seen_t){.n = 0}), PGT_WIRE_STOPPED);
    CHECK_INT(f.stopped_at, 5 + sizeof(sql));
    CHECK_INT(f.msg_start, 5 + sizeof(sql));
    CHECK(pgt_framer_at_boundary(&f));
}

static void test_framer_bad_lengths(void)
{
    static const struct {
        uint8_t hdr[5];
        int64_t max;
        int rc;
    } cases[] = {
        {{'Q', 0x80, 0, 0, 0}, 1 << 30, PGT_WIRE_EBADLEN},          /* 2^31 */
        {{'Q', 0xff, 0xff, 0xff, 0xfe}, 1 << 30, PGT_WIRE_EBADLEN}, /* negative */
        {{'Q', 0, 0, 0, 3}, 1 << 30, PGT_WIRE_EBADLEN},             /* shorter than itself */
        {{'Q', 0, 0, 1, 0}, 255, PGT_WIRE_EBADLEN},                 /* over the configured limit */
        {{'Q', 0, 0, 0, 255}, 255, 0},                              /* at the limit */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgt_framer_t f;
        pgt_framer_init(&f, cases[i].max);
        seen_t s = {.n = 0};
        CHECK_INT(pgt_framer_feed(&f, cases[i].hdr, 5, record, &s), cases[i].rc);
        CHECK_INT(s.n, 0);
    }
}

static void test_wire_next(void)
{
    uint8_t buf[64];
    size_t n = put_msg(buf, 'R', "\0\0\0\0", 4);
    uint8_t type;
    size_t total;
    CHECK_INT(pgt_wire_next(buf, n - 1, 1000, &type, &total), 0);
    CHECK_INT(pgt_wire_next(buf, n, 1000, &type, &total), 1);
    CHECK_INT(type, 'R');
    CHECK_INT(total, n);
    buf[1] = 0x80;
    CHECK_INT(pgt_wire_next(buf, n, 1000, &type, &total), PGT_WIRE_EBADLEN);
}

static size_t startup(uint8_t *p, uint32_t code, const char *params, size_t plen)
{
    uint32_t len = (uint32_t)(8 + plen);
    uint8_t hdr[8] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16),  (uint8_t)(len >> 8),
                      (uint8_t)len,         (uint8_t)(code >> 24), (uint8_t)(code >> 16),
                      (uint8_t)(code >> 8), (uint8_t)code};
    memcpy(p, hdr, 8);
    memcpy(p + 8, params, plen);
    return len;
}

static void test_startup_table(void)
{
    static const struct {
        uint32_t code;
        const char *params;
        size_t plen;
        int rc;
        const char *sqlstate;
        const char *user;
        const char *db;
    } cases[] = {
        {PGT_PROTO_V3, "user\0alice\0database\0dw\0\0", 24, 0, NULL, "alice", "dw"},
        {PGT_PROTO_V3, "user\0bob\0\0", 10, 0, NULL, "bob", "bob"},
        {PGT_PROTO_V3, "user\0bob\0options\0-c x=1\0\0", 25, 0, NULL, "bob", "bob"},
        {PGT_PROTO_V3 + 2, "user\0bob\0\0", 10, 0, NULL, "bob", "bob"}, /* 3.2 is relayed */
        {PGT_PROTO_V3, "database\0dw\0\0", 13, PGT_WIRE_EFORMAT, "28000", NULL, NULL},
        {PGT_PROTO_V3, "user\0bob\0", 9, PGT_WIRE_EFORMAT, "08P01", NULL, NULL},
        {PGT_PROTO_V3, "user\0bob", 8, PGT_WIRE_EFORMAT, "08P01", NULL, NULL},
        {PGT_PROTO_V3, "user\0bob\0\0junk", 14, PGT_WIRE_EFORMAT, "08P01", NULL, NULL},
        {0x00020000, "user\0bob\0\0", 10, PGT_WIRE_EFORMAT, "0A000", NULL, NULL},
        {0x00040000, "user\0bob\0\0", 10, PGT_WIRE_EFORMAT, "0A000", NULL, NULL},
        {PGT_CODE_SSL, "", 0, 0, NULL, NULL, NULL},
        {PGT_CODE_SSL, "xxxx", 4, PGT_WIRE_EFORMAT, "08P01", NULL, NULL},
        {PGT_CODE_GSSENC, "", 0, 0, NULL, NULL, NULL},
        {PGT_CODE_CANCEL, "\0\0\0\x07\0\0\0\x09", 8, 0, NULL, NULL, NULL},
        {PGT_CODE_CANCEL, "\0\0\0\x07", 4, PGT_WIRE_EFORMAT, "08P01", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t pkt[256];
        size_t len = startup(pkt, cases[i].code, cases[i].params, cases[i].plen);
        pgt_startup_t st;
        pgt_startup_error_t err;
        int rc = pgt_wire_startup_parse(pkt, len, &st, &err);
        if (rc != cases[i].rc)
            fprintf(stderr, "case %zu\n", i);
        CHECK_INT(rc, cases[i].rc);
        if (rc != 0) {
            CHECK_STR(err.sqlstate, cases[i].sqlstate);
            continue;
        }
        CHECK_INT(st.code, cases[i].code);
        if (cases[i].user) {
            CHECK_STR(st.user, cases[i].user);
            CHECK_STR(st.database, cases[i].db);
        }
        if (cases[i].code == PGT_CODE_CANCEL) {
            CHECK_INT(st.cancel_pid, 7);
            CHECK_INT(st.cancel_key, 9);
        }
    }
    /* The length word must agree with the bytes given. */
    uint8_t pkt[64];
    size_t len = startup(pkt, PGT_PROTO_V3, "user\0a\0\0", 8);
    pgt_startup_t st;
    pgt_startup_error_t err;
    CHECK_INT(pgt_wire_startup_parse(pkt, len - 1, &st, &err), PGT_WIRE_EFORMAT);
}

static void test_sasl_strip(void)
{
    static const char body[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
    uint8_t out[128];
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, out, sizeof(out));
    CHECK_INT(pgt_wire_sasl_strip_plus((const uint8_t *)body, sizeof(body), &mb), 0);
    static const uint8_t want[] = "R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0";
    CHECK_INT(mb.len, sizeof(want));
    CHECK(memcmp(out, want, sizeof(want)) == 0);
    /* A list without its terminator is malformed. */
    pgt_msgbuf_init(&mb, out, sizeof(out));
    CHECK_INT(pgt_wire_sasl_strip_plus((const uint8_t *)"SCRAM", 5, &mb), PGT_WIRE_EFORMAT);
}

static void test_error_build(void)
{
    uint8_t out[256];
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, out, sizeof(out));
    pgt_wire_error(&mb, "FATAL", "08006", "upstream down", NULL, "start it");
    CHECK(!mb.failed);
    CHECK_INT(out[0], 'E');
    CHECK_INT(pgt_be32(out + 1), mb.len - 1);
    char sev[16];
    CHECK(pgt_wire_error_severity(out + 5, mb.len - 5, sev, sizeof(sev)));
    CHECK_STR(sev, "FATAL");
    /* Too small a buffer fails once and stays failed. */
    uint8_t tiny[8];
    pgt_msgbuf_init(&mb, tiny, sizeof(tiny));
    pgt_wire_error(&mb, "FATAL", "08006", "upstream down", NULL, NULL);
    CHECK(mb.failed);
}

/* An ErrorResponse body made of fields "Xvalue" (one string each). */
static size_t error_body(uint8_t *p, const char *const *fields, int n)
{
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(fields[i]) + 1;
        memcpy(p + o, fields[i], l);
        o += l;
    }
    p[o++] = 0;
    return o;
}

/* The position of an EXPLAIN's error moved onto the client's statement:
 * a table of (position, shift, expected position or NULL when dropped). */
static void test_error_shift_position(void)
{
    static const struct {
        const char *pos, *want;
        int32_t shift;
    } cases[] = {
        {"P30", "P8", 22}, {"P23", "P1", 22}, {"P22", NULL, 22},
        {"P5", "P12", -7}, {NULL, NULL, 22},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *in[] = {"SERROR", "C42703", "Mcolumn \"nosuch\" does not exist", cases[i].pos,
                            "Fparse_relation.c"};
        uint8_t body[256], out[300];
        size_t blen = error_body(body, in, cases[i].pos ? 5 : 3);
        pgt_msgbuf_t mb;
        pgt_msgbuf_init(&mb, out, sizeof(out));
        CHECK_INT(pgt_wire_error_shift_position(&mb, 'E', body, blen, cases[i].shift), 0);
        CHECK(!mb.failed);
        CHECK_INT(out[0], 'E');
        CHECK_INT(pgt_be32(out + 1), mb.len - 1);
        const char *want[] = {"SERROR", "C42703", "Mcolumn \"nosuch\" does not exist",
                              cases[i].want ? cases[i].want : "Fparse_relation.c",
                              "Fparse_relation.c"};
        int nwant = !cases[i].pos ? 3 : cases[i].want ? 5 : 4;
        uint8_t expect[256];
        size_t elen = error_body(expect, want, nwant);
        CHECK_INT(mb.len - 5, elen);
        CHECK(memcmp(out + 5, expect, elen) == 0);
    }
    /* A body without its terminator, or a position that is not a number. */
    const char *bad[] = {"SERROR", "Pabc"};
    uint8_t body[64], out[64];
    size_t blen = error_body(body, bad, 2);
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, out, sizeof(out));
    CHECK(pgt_wire_error_shift_position(&mb, 'E', body, blen, 1) != 0);
    pgt_msgbuf_init(&mb, out, sizeof(out));
    CHECK(pgt_wire_error_shift_position(&mb, 'E', body, 7, 1) != 0);
}

/* The COPY data line an error's context names. */
static void test_error_copy_line(void)
{
    static const struct {
        const char *where; /* the W field, NULL: none */
        uint64_t line;
    } cases[] = {
        {"COPY t, line 3, column a: \"zz\"", 3},
        {"COPY t, line 12", 12},
        {"PL/pgSQL function f() line 4 at RAISE\nCOPY big_t, line 987654321: \"x\"", 987654321},
        {"SQL function \"g\" statement 1", 0},
        {"COPY t, line x", 0},
        {NULL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t body[256];
        size_t n = 0;
        n += (size_t)snprintf((char *)body + n, sizeof(body) - n, "SERROR") + 1;
        n += (size_t)snprintf((char *)body + n, sizeof(body) - n, "C22P02") + 1;
        if (cases[i].where)
            n += (size_t)snprintf((char *)body + n, sizeof(body) - n, "W%s", cases[i].where) + 1;
        body[n++] = 0;
        CHECK_INT(pgt_wire_error_copy_line(body, n), cases[i].line);
    }
    /* A field not ended inside the body is not read. */
    static const uint8_t cut[] = {'W', 'C', 'O', 'P', 'Y', ' ', 't', ','};
    CHECK_INT(pgt_wire_error_copy_line(cut, sizeof(cut)), 0);
}

int main(void)
{
    test_framer_splits();
    test_framer_bad_lengths();
    test_framer_capture();
    test_framer_heads();
    test_wire_next();
    test_startup_table();
    test_sasl_strip();
    test_error_build();
    test_error_shift_position();
    test_error_copy_line();
    TASK_DONE();
}
