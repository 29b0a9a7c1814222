/* Unit tests of the conversation model on byte sequences: client and
 * server messages are written as wire bytes, framed back with
 * pgt_wire_next, and told to the model; what it makes of each server
 * message is written as text and compared with what PostgreSQL does.
 *
 * Notation of the results, one word per server message:
 *   <reply>><answered type><o if pgtally's>[.][*][^<ignored ahead>][~<skipped types>]
 * "." the reply ends the message it answers, "*" it is early; a reply
 * that answers nothing is "<reply>>-". Example: "E>P.~BEQ" is an
 * ErrorResponse that ends a Parse, after which the server skips a Bind,
 * an Execute and a Query. */
#include <stdint.h>

#include "pgtally/conv.h"
#include "pgtally/wire.h"
#include "task.h"

/* Wire bytes of the messages named by types (one character each, spaces
 * ignored), each with a small body. Returns their length. */
static size_t wire(const char *types, uint8_t *out, size_t cap)
{
    size_t n = 0;
    for (const char *t = types; *t; t++) {
        if (*t == ' ')
            continue;
        static const char body[] = "x";
        if (n + 5 + sizeof(body) > cap)
            break;
        out[n] = (uint8_t)*t;
        uint32_t len = 4 + sizeof(body);
        out[n + 1] = (uint8_t)(len >> 24);
        out[n + 2] = (uint8_t)(len >> 16);
        out[n + 3] = (uint8_t)(len >> 8);
        out[n + 4] = (uint8_t)len;
        memcpy(out + n + 5, body, sizeof(body));
        n += 5 + sizeof(body);
    }
    return n;
}

/* Frames bytes back into message types, in order. */
static int frame(const uint8_t *buf, size_t len, uint8_t *types, int max)
{
    int k = 0;
    size_t off = 0;
    uint8_t type;
    size_t total;
    while (k < max && pgt_wire_next(buf + off, len - off, 1 << 20, &type, &total) == 1) {
        types[k++] = type;
        off += total;
    }
    return k;
}

/* The client (or pgtally, for ours) sends the messages types; returns the
 * pgt_conv_sent flags of the last one. */
static int send(pgt_conv_t *cv, const char *types, pgt_conv_from_t from)
{
    uint8_t buf[4096], t[512];
    int n = frame(buf, wire(types, buf, sizeof(buf)), t, 512), flags = 0;
    for (int i = 0; i < n; i++)
        flags = pgt_conv_sent(cv, t[i], from, from == PGT_CONV_OURS ? 7 : 0);
    return flags;
}

/* The SQLSTATE the next ErrorResponses carry (NULL: none known). */
static const char *next_code;

/* The server sends the messages types; returns the model's words for
 * them, space-separated, in a static buffer. */
static const char *reply(pgt_conv_t *cv, const char *types)
{
    static char out[1024];
    uint8_t buf[4096], t[512];
    int n = frame(buf, wire(types, buf, sizeof(buf)), t, 512);
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < n && o + 32 < sizeof(out); i++) {
        pgt_conv_reply_t r;
        pgt_conv_reply(cv, t[i], t[i] == 'E' ? next_code : NULL, &r);
        if (o)
            out[o++] = ' ';
        out[o++] = (char)t[i];
        out[o++] = '>';
        out[o++] = r.to.type ? (char)r.to.type : '-';
        if (r.to.type && r.to.from == PGT_CONV_OURS)
            out[o++] = 'o';
        if (r.ends)
            out[o++] = '.';
        if (r.early)
            out[o++] = '*';
        if (r.nbefore)
            out[o++] = '^'; /* ignored ahead of it: */
        for (uint32_t b = 0; b < r.nbefore && o + 2 < sizeof(out); b++)
            out[o++] = (char)r.before[b].type;
        pgt_conv_entry_t e;
        if (r.skipped)
            out[o++] = '~';
        uint32_t taken = 0;
        while (pgt_conv_take_skipped(cv, &e) && o + 2 < sizeof(out)) {
            out[o++] = (char)e.type;
            if (e.from == PGT_CONV_OURS)
                out[o++] = 'o';
            taken++;
        }
        CHECK_INT(taken, r.skipped);
        out[o] = 0;
    }
    return out;
}

static void test_simple_query(void)
{
    pgt_conv_t cv;
    pgt_conv_init(&cv);
    CHECK(pgt_conv_may_query(&cv));
    CHECK_INT(send(&cv, "Q", PGT_CONV_CLIENT), PGT_CONV_OWED | PGT_CONV_FLUSHES);
    CHECK_INT(pgt_conv_readies(&cv), 1);
    CHECK(!pgt_conv_may_query(&cv));
    CHECK_STR(reply(&cv, "TDDCNZ"), "T>Q D>Q D>Q C>Q N>Q Z>Q.");
    CHECK_INT(pgt_conv_readies(&cv), 0);
    CHECK(pgt_conv_may_query(&cv));
    /* An error within a Query ends nothing: ReadyForQuery does. */
    send(&cv, "QQ", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "CEZ IZ"), "C>Q E>Q Z>Q. I>Q Z>Q.");
    /* A notification answers nothing; nothing owed, nothing answered. */
    CHECK_STR(reply(&cv, "A S N"), "A>- S>- N>-");
    pgt_conv_free(&cv);
}

static void test_extended(void)
{
    pgt_conv_t cv;
    pgt_conv_init(&cv);
    send(&cv, "PBDES", PGT_CONV_CLIENT);
    CHECK(!pgt_conv_may_extend(&cv)); /* an Execute is owed */
    CHECK_STR(reply(&cv, "12TDDCZ"), "1>P. 2>B. T>D. D>E D>E C>E. Z>S.");
    /* Describe of a statement: ParameterDescription, then NoData. */
    send(&cv, "PDS", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "1tnZ"), "1>P. t>D n>D. Z>S.");
    /* A row limit: PortalSuspended ends each Execute. */
    send(&cv, "PBEECS", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "12DsDC3Z"), "1>P. 2>B. D>E s>E. D>E C>E. 3>C. Z>S.");
    /* An error at the Sync's commit (a deferred constraint): the Sync
     * still gets its ReadyForQuery and nothing is skipped. */
    send(&cv, "PBES", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "12CEZ"), "1>P. 2>B. C>E. E>S Z>S.");
    CHECK_INT(pgt_conv_owed(&cv), 0);
    pgt_conv_free(&cv);
}

/* An error in the extended protocol skips to the next Sync, Queries and
 * FunctionCalls included: they get no ReadyForQuery. */
static void test_error_skips(void)
{
    pgt_conv_t cv;
    pgt_conv_init(&cv);
    send(&cv, "PBEQFBES", PGT_CONV_CLIENT);
    CHECK_INT(pgt_conv_readies(&cv), 3);
    CHECK_STR(reply(&cv, "E"), "E>P.~BEQFBE");
    CHECK_INT(pgt_conv_readies(&cv), 1);
    CHECK_STR(reply(&cv, "Z"), "Z>S.");
    CHECK_INT(pgt_conv_readies(&cv), 0);
    /* No Sync sent yet: what the client sends until it is skipped too. */
    send(&cv, "PQ", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "E"), "E>P.~Q");
    CHECK_INT(pgt_conv_readies(&cv), 0);
    CHECK(cv.ignoring);
    CHECK(!pgt_conv_may_query(&cv) && !pgt_conv_may_extend(&cv));
    CHECK_INT(send(&cv, "B", PGT_CONV_CLIENT), PGT_CONV_SKIPPED);
    CHECK_INT(send(&cv, "Q", PGT_CONV_CLIENT), PGT_CONV_SKIPPED);
    CHECK_INT(send(&cv, "H", PGT_CONV_CLIENT), 0);
    CHECK_INT(send(&cv, "S", PGT_CONV_CLIENT), PGT_CONV_OWED | PGT_CONV_FLUSHES);
    CHECK_STR(reply(&cv, "Z"), "Z>S.");
    CHECK(pgt_conv_may_query(&cv));
    /* An error of an Execute skips the rest of its batch only. */
    send(&cv, "BESBES", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "2EZ2CZ"), "2>B. E>E. Z>S. 2>B. C>E. Z>S.");
    pgt_conv_free(&cv);
}

static void test_function_call(void)
{
    pgt_conv_t cv;
    pgt_conv_init(&cv);
    CHECK_INT(send(&cv, "F", PGT_CONV_CLIENT), PGT_CONV_OWED | PGT_CONV_FLUSHES);
    CHECK_STR(reply(&cv, "VZ"), "V>F Z>F.");
    send(&cv, "F", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "EZ"), "E>F Z>F.");
    pgt_conv_free(&cv);
}

/* pgtally's own messages between the client's: their replies are told
 * apart, the client's replies that its Flush brings are early, and an
 * error ahead of them skips them. */
static void test_ours(void)
{
    pgt_conv_t cv;
    pgt_conv_init(&cv);
    send(&cv, "PB", PGT_CONV_CLIENT);
    CHECK(pgt_conv_may_extend(&cv));
    send(&cv, "CPBECCH", PGT_CONV_OURS);
    CHECK_INT(pgt_conv_ours(&cv), 6);
    CHECK_STR(reply(&cv, "12"), "1>P.* 2>B.*");
    CHECK_STR(reply(&cv, "3 1 2 D C 3 3"), "3>Co. 1>Po. 2>Bo. D>Eo C>Eo. 3>Co. 3>Co.");
    CHECK_INT(pgt_conv_ours(&cv), 0);
    /* The client's held Bind and Sync follow; its Sync writes out what was
     * held for it. */
    CHECK_INT(send(&cv, "B", PGT_CONV_CLIENT), PGT_CONV_OWED);
    CHECK_INT(send(&cv, "S", PGT_CONV_CLIENT), PGT_CONV_OWED | PGT_CONV_FLUSHES);
    CHECK_STR(reply(&cv, "2Z"), "2>B. Z>S.");
    /* A reply the client flushed itself is not early. */
    send(&cv, "PH", PGT_CONV_CLIENT);
    send(&cv, "BH", PGT_CONV_OURS);
    CHECK_STR(reply(&cv, "1"), "1>P.");
    CHECK_STR(reply(&cv, "E"), "E>Bo.");
    CHECK(cv.ignoring);
    send(&cv, "S", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "Z"), "Z>S.");
    /* The client's Parse fails ahead of pgtally's EXPLAIN: the server
     * skips it; an error is written out at once, so it is never early. */
    send(&cv, "P", PGT_CONV_CLIENT);
    send(&cv, "PBEH", PGT_CONV_OURS);
    CHECK_STR(reply(&cv, "E"), "E>P.~PoBoEo");
    CHECK_INT(pgt_conv_ours(&cv), 0);
    /* pgtally's Query: answered up to its ReadyForQuery. */
    send(&cv, "S", PGT_CONV_CLIENT);
    reply(&cv, "Z");
    CHECK(pgt_conv_may_query(&cv));
    send(&cv, "Q", PGT_CONV_OURS);
    CHECK_STR(reply(&cv, "TDCZ"), "T>Qo D>Qo C>Qo Z>Qo.");
    pgt_conv_free(&cv);
}

static void test_batch_open(void)
{
    pgt_conv_t cv;
    pgt_conv_init(&cv);
    send(&cv, "PBEH", PGT_CONV_CLIENT);
    reply(&cv, "12C");
    /* Nothing owed, but the implicit transaction of the batch is open: a
     * Query of pgtally's would end it. */
    CHECK_INT(pgt_conv_owed(&cv), 0);
    CHECK(!pgt_conv_may_query(&cv));
    CHECK(pgt_conv_may_extend(&cv));
    send(&cv, "S", PGT_CONV_CLIENT);
    reply(&cv, "Z");
    CHECK(pgt_conv_may_query(&cv));
    pgt_conv_free(&cv);
}

/* COPY: Sync and Flush are ignored while the server reads data; any
 * other message ends the COPY with an error. What was sent during a COPY
 * is settled when it ends: done (all of it was data), failed by a message
 * that is not data (08P01: the Syncs before it ignored, it taken as data),
 * or failed on its data (what came after the bad line read as usual). */
static void test_copy(void)
{
    pgt_conv_t cv;
    pgt_conv_init(&cv);
    /* libpq's COPY through the extended protocol: its first Sync goes
     * with the Execute and is ignored; a second follows CopyDone. */
    send(&cv, "PBES", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "12G"), "1>P. 2>B. G>E");
    CHECK(cv.copy_in);
    CHECK_INT(send(&cv, "ddH", PGT_CONV_CLIENT), 0);
    send(&cv, "cS", PGT_CONV_CLIENT);
    CHECK(!cv.copy_in);
    CHECK_STR(reply(&cv, "CZ"), "C>E.~S Z>S.");
    CHECK_INT(pgt_conv_owed(&cv), 0);
    CHECK_INT(pgt_conv_readies(&cv), 0);
    /* Simple COPY FROM STDIN, data sent before CopyInResponse came. */
    send(&cv, "Qddc", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "GCZ"), "G>Q C>Q Z>Q.");
    CHECK_INT(pgt_conv_owed(&cv), 0);
    /* COPY TO STDOUT. */
    send(&cv, "Q", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "HddcCZ"), "H>Q d>Q d>Q c>Q C>Q Z>Q.");
    /* A Parse where data should be: taken as data, the COPY fails with
     * 08P01. */
    next_code = "08P01";
    send(&cv, "Q", PGT_CONV_CLIENT);
    reply(&cv, "G");
    CHECK_INT(send(&cv, "P", PGT_CONV_CLIENT), PGT_CONV_OWED);
    CHECK(!cv.copy_in);
    send(&cv, "Q", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "EZ CZ"), "E>Q Z>Q.~P C>Q Z>Q.");
    /* ... and sent before CopyInResponse came. */
    send(&cv, "QPQ", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "G"), "G>Q");
    CHECK_STR(reply(&cv, "EZ"), "E>Q Z>Q.~P");
    CHECK_STR(reply(&cv, "CZ"), "C>Q Z>Q.");
    /* Bad data in an extended COPY: the Sync sent with the Execute, before
     * any data, was ignored; the error skips to the Sync after the data. */
    next_code = "22P02";
    send(&cv, "PBES", PGT_CONV_CLIENT);
    reply(&cv, "12G");
    send(&cv, "ddcS", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "E"), "E>E.~S");
    CHECK_STR(reply(&cv, "Z"), "Z>S.");
    CHECK_INT(pgt_conv_owed(&cv), 0);
    /* Bad data in a simple COPY, a Sync and a Query sent behind the data:
     * read as usual after the failing line (the Sync is answered). */
    send(&cv, "Qdd", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "G"), "G>Q");
    send(&cv, "ScQ", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "EZ Z CZ"), "E>Q Z>Q. Z>S. C>Q Z>Q.");
    CHECK_INT(pgt_conv_owed(&cv), 0);
    /* ... or ignored, when the line that fails comes after it: the reply
     * that answers what follows tells. */
    send(&cv, "QdSdcQ", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "GEZ"), "G>Q E>Q Z>Q.");
    CHECK_STR(reply(&cv, "CZ"), "C>Q^S Z>Q.");
    CHECK_INT(pgt_conv_owed(&cv), 0);
    CHECK_INT(pgt_conv_readies(&cv), 0);
    /* Ended by CopyFail (57014): the Syncs sent during it were data. */
    next_code = "57014";
    send(&cv, "QdSfQ", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "GEZ"), "G>Q E>Q Z>Q.~S");
    CHECK_STR(reply(&cv, "CZ"), "C>Q Z>Q.");
    next_code = NULL;
    CHECK_INT(pgt_conv_owed(&cv), 0);
    pgt_conv_free(&cv);
}

/* A Sync sent during a simple COPY FROM STDIN whose data fails: the line
 * the error names settles it (pgt_conv_lines, pgt_conv_error_line), also
 * where its reply alone could not (the next message is a Sync too). */
static void test_copy_lines(void)
{
    pgt_conv_t cv;
    pgt_conv_init(&cv);
    next_code = "22P02";
    /* Line 2 fails, after the Sync sent behind line 1: the Sync was
     * ignored, and the ReadyForQuery that comes later is the next Sync's. */
    send(&cv, "Qd", PGT_CONV_CLIENT);
    pgt_conv_lines(&cv, 1);
    send(&cv, "Sd", PGT_CONV_CLIENT);
    pgt_conv_lines(&cv, 2);
    send(&cv, "c", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "G"), "G>Q");
    pgt_conv_error_line(&cv, 2);
    CHECK_STR(reply(&cv, "EZ"), "E>Q Z>Q.~S");
    send(&cv, "S", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "Z"), "Z>S.");
    CHECK_INT(pgt_conv_owed(&cv), 0);
    /* Line 1 fails, before the Sync (sent after line 1): the server read
     * the Sync as usual; the first ReadyForQuery after the Query's is its. */
    send(&cv, "Qd", PGT_CONV_CLIENT);
    pgt_conv_lines(&cv, 3);
    send(&cv, "Sdc", PGT_CONV_CLIENT);
    pgt_conv_lines(&cv, 4);
    send(&cv, "S", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "G"), "G>Q");
    pgt_conv_error_line(&cv, 1);
    CHECK_STR(reply(&cv, "EZ Z Z"), "E>Q Z>Q. Z>S. Z>S.");
    CHECK_INT(pgt_conv_owed(&cv), 0);
    CHECK_INT(pgt_conv_readies(&cv), 0);
    next_code = NULL;
    pgt_conv_free(&cv);
}

/* A ReadyForQuery nobody is owed (the account out of step with the
 * server) answers nothing and ends the wait for it. */
static void test_out_of_step(void)
{
    pgt_conv_t cv;
    pgt_conv_init(&cv);
    send(&cv, "PBQ", PGT_CONV_CLIENT);
    CHECK_STR(reply(&cv, "Z"), "Z>-~PBQ");
    CHECK_INT(pgt_conv_owed(&cv), 0);
    CHECK_STR(reply(&cv, "Z"), "Z>-");
    /* Skipped entries left untaken are dropped at the next reply. */
    send(&cv, "PBS", PGT_CONV_CLIENT);
    pgt_conv_reply_t r;
    pgt_conv_reply(&cv, 'E', NULL, &r);
    CHECK_INT(r.skipped, 1);
    CHECK_STR(reply(&cv, "Z"), "Z>S.");
    pgt_conv_free(&cv);
}

/* The ring grows: a long pipeline is answered in order. */
static void test_long_pipeline(void)
{
    pgt_conv_t cv;
    pgt_conv_init(&cv);
    int n = 5000;
    for (int i = 0; i < n; i++)
        send(&cv, i % 2 ? "E" : "B", PGT_CONV_CLIENT);
    send(&cv, "S", PGT_CONV_CLIENT);
    CHECK_INT(pgt_conv_owed(&cv), n + 1);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        pgt_conv_reply_t r;
        pgt_conv_reply(&cv, i % 2 ? 'C' : '2', NULL, &r);
        bad += !r.ends || r.to.type != (i % 2 ? 'E' : 'B') || r.to.seq != (uint64_t)i + 1;
    }
    CHECK_INT(bad, 0);
    CHECK_STR(reply(&cv, "Z"), "Z>S.");
    CHECK(!cv.failed);
    pgt_conv_free(&cv);
}

int main(void)
{
    test_simple_query();
    test_extended();
    test_error_skips();
    test_function_call();
    test_ours();
    test_batch_open();
    test_copy();
    test_copy_lines();
    test_out_of_step();
    test_long_pipeline();
    TASK_DONE();
}
