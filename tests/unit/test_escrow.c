/* Unit tests of what escrow agrees on: the constants hash of a statement
 * (same shape and constants give one hash; a different constant, a Bind
 * parameter or a minus sign gives another; comments and blanks do not
 * count) and ticket ids (stable, distinct, read back as people type them). */
#include <ctype.h>
#include <stdint.h>

#include "pgtally/escrow.h"
#include "pgtally/fingerprint.h"
#include "task.h"

/* The hash of sql, read from an exact-size copy without a NUL, so that
 * ASan catches any read past its end. */
static uint64_t hash_of(const char *sql, uint64_t params)
{
    size_t n = strlen(sql);
    char *text = malloc(n ? n : 1);
    memcpy(text, sql, n);
    uint64_t h = pgt_fp_constants_hash(text, n, params);
    free(text);
    return h;
}

/* Pairs that must hash alike. */
static const char *const same[][2] = {
    {"SELECT * FROM t WHERE id = 42", "select *   from t where id=42"},
    {"SELECT * FROM t WHERE id = 42 /* team='a' */",
     "/* team='b' */ SELECT * FROM t WHERE id = 42"},
    {"SELECT * FROM t WHERE id = 42 -- 7", "SELECT * FROM t WHERE id = 42 -- 8"},
    {"SELECT 'x' FROM \"1\"", "SELECT 'x' FROM \"2\""}, /* an identifier is no constant */
    {"SELECT $1", "SELECT $2"},                         /* parameters come from Bind */
};

/* Pairs that must not. */
static const char *const differ[][2] = {
    {"SELECT * FROM t WHERE id = 42", "SELECT * FROM t WHERE id = 43"},
    {"SELECT * FROM t WHERE id = 5", "SELECT * FROM t WHERE id = -5"},
    {"SELECT 'ab', 'c'", "SELECT 'a', 'bc'"},
    {"SELECT 'a' /* 'b' */", "SELECT 'b' /* 'a' */"},
    {"SELECT $$a$$", "SELECT $$b$$"},
    {"SELECT 1.5", "SELECT 15"},
    {"SELECT x'1f'", "SELECT x'1e'"},
};

static void test_constants_hash(void)
{
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
        CHECK_INT(hash_of(same[i][0], 0) == hash_of(same[i][1], 0), 1);
    for (size_t i = 0; i < sizeof(differ) / sizeof(differ[0]); i++)
        CHECK_INT(hash_of(differ[i][0], 0) != hash_of(differ[i][1], 0), 1);
    /* Bind parameters count. */
    CHECK(hash_of("SELECT $1", 7) != hash_of("SELECT $1", 8));
    CHECK(hash_of("SELECT $1", 7) == hash_of("SELECT $1", 7));
    /* Text the byte look passes (no constant can be in it) hashes as the
     * scanner would: the same statement with a comment that sends it to the
     * scanner (a quote, a number) gives the same hash. */
    static const char *const quick[][2] = {
        {"SELECT abalance FROM pgbench_accounts WHERE aid = $1",
         "SELECT abalance FROM pgbench_accounts WHERE aid = $1 -- it's 42"},
        {"SELECT a1, \"b 2\" FROM t3 WHERE x = $12",
         "SELECT a1, \"b 2\" FROM t3 WHERE x = $12 /* 5 */"},
        {"SELECT caf\xc3\xa9"
         "1 FROM t",
         "SELECT caf\xc3\xa9"
         "1 FROM t -- '"},
        {"", "-- 1"},
    };
    for (size_t i = 0; i < sizeof(quick) / sizeof(quick[0]); i++)
        CHECK_INT(hash_of(quick[i][0], 9) == hash_of(quick[i][1], 9), 1);
    /* and what it must leave to the scanner has constants */
    CHECK(hash_of("SELECT t.5", 0) != hash_of("SELECT t.6", 0));
    CHECK(hash_of("SELECT 1e3", 0) != hash_of("SELECT 1e4", 0));
    CHECK(hash_of("SELECT $a$x$a$", 0) != hash_of("SELECT $a$y$a$", 0));
    /* Unscannable text is hashed whole, and never 0. */
    CHECK(hash_of("SELECT 'unterminated", 0) != 0);
    CHECK(hash_of("SELECT 'unterminated", 0) != hash_of("SELECT 'unterminatee", 0));
    CHECK(hash_of("", 0) != 0);
    /* Text over the scan limit is hashed whole too. */
    size_t big = (1u << 20) + 10;
    char *text = malloc(big);
    memset(text, ' ', big);
    memcpy(text, "SELECT 1", 8);
    uint64_t h1 = pgt_fp_constants_hash(text, big, 0);
    text[big - 1] = '2';
    CHECK(h1 != pgt_fp_constants_hash(text, big, 0));
    free(text);
}

static void test_ticket_id(void)
{
    char a[PGT_TICKET_LEN], b[PGT_TICKET_LEN], c[PGT_TICKET_LEN];
    pgt_ticket_id("alice", "shop", 0x1234, 99, a);
    pgt_ticket_id("alice", "shop", 0x1234, 99, b);
    CHECK_STR(a, b);
    CHECK_INT(strlen(a), PGT_TICKET_LEN - 1);
    CHECK_INT(strncmp(a, "T-", 2), 0);
    pgt_ticket_id("alice", "shop", 0x1234, 100, b);
    CHECK(strcmp(a, b) != 0);
    pgt_ticket_id("bob", "shop", 0x1234, 99, b);
    CHECK(strcmp(a, b) != 0);
    pgt_ticket_id("alic", "eshop", 0x1234, 99, b);
    CHECK(strcmp(a, b) != 0);
    /* Among 20,000 requests, ids rarely collide (30 bits: ~0.2 expected). */
    enum { N = 20000 };
    static char ids[N][PGT_TICKET_LEN];
    for (int i = 0; i < N; i++)
        pgt_ticket_id("u", "d", (uint64_t)i, 1, ids[i]);
    int dups = 0;
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            dups += strcmp(ids[i], ids[j]) == 0;
    CHECK(dups <= 3);
    /* Read back as typed. */
    CHECK(pgt_ticket_parse(a, c));
    CHECK_STR(c, a);
    char lower[PGT_TICKET_LEN];
    for (int i = 0; i < PGT_TICKET_LEN; i++)
        lower[i] = (char)tolower((unsigned char)a[i]);
    CHECK(pgt_ticket_parse(lower, c));
    CHECK_STR(c, a);
    CHECK(pgt_ticket_parse(a + 2, c));
    CHECK_STR(c, a);
    CHECK(pgt_ticket_parse("t-o1il00", c));
    CHECK_STR(c, "T-011100");
    CHECK(!pgt_ticket_parse("T-7KQ2", c));    /* too short */
    CHECK(!pgt_ticket_parse("T-7KQ2MUU", c)); /* too long */
    CHECK(!pgt_ticket_parse("T-7KQ2M!", c));  /* not base32 */
    CHECK(!pgt_ticket_parse("T-7KQ2MU", c));  /* U is not in Crockford's alphabet */
    CHECK(!pgt_ticket_parse("", c));
}

int main(void)
{
    test_constants_hash();
    test_ticket_id();
    TASK_DONE();
}
