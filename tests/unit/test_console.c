/* Unit tests of the console's command parser (a table of accepted and
 * refused texts) and of its result-set messages, plus the cancel packet. */
#include <stdint.h>
#include <string.h>

#include "pgtally/cancel.h"
#include "pgtally/console.h"
#include "task.h"

/* A text that parses, and what it means. */
typedef struct ok_case {
    const char *text;        /* as sent */
    pgt_console_verb_t verb; /* parsed as */
    int64_t n;               /* n, or -1 when not checked */
    const char *message;     /* BLOCK's MESSAGE, or NULL */
} ok_case_t;

static const ok_case_t oks[] = {
    {"SHOW VERSION", PGT_CONSOLE_SHOW_VERSION, -1, NULL},
    {"  show   version ;  ", PGT_CONSOLE_SHOW_VERSION, -1, NULL},
    {"Show Sessions;", PGT_CONSOLE_SHOW_SESSIONS, -1, NULL},
    {"SHOW QUERIES", PGT_CONSOLE_SHOW_QUERIES, PGT_CONSOLE_QUERIES_DEFAULT, NULL},
    {"SHOW QUERIES 7", PGT_CONSOLE_SHOW_QUERIES, 7, NULL},
    {"SHOW QUERIES 1000", PGT_CONSOLE_SHOW_QUERIES, 1000, NULL},
    {"SHOW USAGE week", PGT_CONSOLE_SHOW_USAGE, -1, NULL},
    {"SHOW TABLES", PGT_CONSOLE_SHOW_TABLES, -1, NULL},
    {"show tables Month;", PGT_CONSOLE_SHOW_TABLES, -1, NULL},
    {"-- a comment\nSHOW RULES -- and another", PGT_CONSOLE_SHOW_RULES, -1, NULL},
    {"SHOW REPEATS", PGT_CONSOLE_SHOW_REPEATS, -1, NULL},
    {"show regressions;", PGT_CONSOLE_SHOW_REGRESSIONS, -1, NULL},
    {"BLOCK SHAPE 'abc'", PGT_CONSOLE_BLOCK_SHAPE, -1, NULL},
    {"block shape '00ff00ff00ff00ff' message 'it''s off'", PGT_CONSOLE_BLOCK_SHAPE, -1, "it's off"},
    {"BLOCK SHAPE 'a' MESSAGE ''", PGT_CONSOLE_BLOCK_SHAPE, -1, ""},
    {"BLOCK SHAPE 'a' MESSAGE 'caf\xc3\xa9 ferm\xc3\xa9'", PGT_CONSOLE_BLOCK_SHAPE, -1,
     "caf\xc3\xa9 ferm\xc3\xa9"},
    {"UNBLOCK SHAPE 'a'", PGT_CONSOLE_UNBLOCK_SHAPE, -1, NULL},
    {"CANCEL SESSION 12", PGT_CONSOLE_CANCEL_SESSION, 12, NULL},
    {"reload", PGT_CONSOLE_RELOAD, -1, NULL},
    {"SHOW TICKETS", PGT_CONSOLE_SHOW_TICKETS, -1, NULL},
    {"APPROVE 'T-7KQ2MX'", PGT_CONSOLE_APPROVE_TICKET, -1, NULL},
    {"approve '7kq2mx' for '30m' max '5 USD' shape only;", PGT_CONSOLE_APPROVE_TICKET, -1, NULL},
    {"", PGT_CONSOLE_EMPTY, -1, NULL},
    {" ; ", PGT_CONSOLE_EMPTY, -1, NULL},
};

/* A text that is refused, its SQLSTATE and a piece of the message. */
typedef struct bad_case {
    const char *text;     /* as sent */
    const char *sqlstate; /* expected */
    const char *says;     /* part of the message */
} bad_case_t;

static const bad_case_t bads[] = {
    {"SHOW POOLS", "42601", "unknown command \"SHOW POOLS\"; commands: SHOW USAGE"},
    {"APPROVE", "42601", "usage: APPROVE 'ticket'"},
    {"APPROVE 'T-7KQ2M'", "42601", "the ticket as the refusal's HINT"},
    {"APPROVE T7KQ2MX", "42601", "usage: APPROVE 'ticket'"},
    {"APPROVE 'T-7KQ2MX' FOR '8d'", "42601", "FOR at most '7d'"},
    {"APPROVE 'T-7KQ2MX' FOR '2h' FOR '1h'", "42601", "syntax error"},
    {"APPROVE 'T-7KQ2MX' SHAPE", "42601", "syntax error"},
    {"APPROVE 'T-7KQ2MX' MAX 5", "42601", "syntax error"},
    {"SELECT 1", "42601", "unknown command"},
    {"SHOW", "42601", "unknown command"},
    {"SHOW QUERIES 0", "42601", "usage: SHOW QUERIES [n]"},
    {"SHOW QUERIES 1001", "42601", "usage: SHOW QUERIES [n]"},
    {"SHOW QUERIES 99999999999999999999", "42601", "syntax error"},
    {"SHOW QUERIES 999999999999999999999999999999999", "42601", "too long"},
    {"SHOW QUERIES x", "42601", "syntax error"},
    {"SHOW USAGE YEAR", "42601", "syntax error"},
    {"SHOW TABLES YEAR", "42601", "usage: SHOW TABLES [DAY|WEEK|MONTH]"},
    {"SHOW TABLES DAY 3", "42601", "usage: SHOW TABLES [DAY|WEEK|MONTH]"},
    {"SHOW POOLS", "42601", "SHOW SHAPES; SHOW TABLES [DAY|WEEK|MONTH]; SHOW SESSIONS"},
    {"SHOW VERSION 1", "42601", "syntax error"},
    {"SHOW POOLS", "42601",
     "SHOW ALERTS; SHOW REPEATS; SHOW REGRESSIONS; SHOW TICKETS; SHOW CONFIG"},
    {"SHOW REPEATS 3", "42601", "usage: SHOW REPEATS"},
    {"SHOW REGRESSIONS DAY", "42601", "usage: SHOW REGRESSIONS"},
    {"BLOCK SHAPE abc", "42601", "syntax error"},
    {"BLOCK SHAPE 'xyz'", "42601", "16 hex digits"},
    {"BLOCK SHAPE '00000000000000000'", "42601", "16 hex digits"},
    {"BLOCK SHAPE 'a' MESSAGE", "42601", "syntax error"},
    {"BLOCK SHAPE 'a' MESSAGE 'x' MESSAGE 'y'", "42601", "syntax error"},
    {"UNBLOCK SHAPE 'a' MESSAGE 'x'", "42601", "syntax error"},
    {"CANCEL SESSION", "42601", "syntax error"},
    {"CANCEL SESSION 0", "42601", "syntax error"},
    {"CANCEL 3", "42601", "syntax error"},
    {"BLOCK SHAPE 'abc", "42601", "unterminated quoted string"},
    {"SHOW VERSION; SHOW CONFIG", "0A000", "one command per query"},
    {"SHOW \"VERSION\"", "42601", "unexpected character '\"'"},
    {"SHOW A A A A A A A A A", "42601", "too many words"},
    {"SHOW QUERIES $1", "42601", "commands take no parameters ($1)"},
    {"BLOCK SHAPE 'a' MESSAGE 'line\nbreak'", "42601", "without control characters"},
    {"BLOCK SHAPE 'a' MESSAGE '\xff\xfe'", "42601", "must be UTF-8"},
};

static void check_long_inputs(void)
{
    pgt_console_cmd_t cmd;
    char state[6], err[2000];
    static char text[4096];
    /* A message of exactly the longest allowed length, and one more. */
    int n =
        snprintf(text, sizeof(text), "BLOCK SHAPE 'a' MESSAGE '%0*d'", PGT_RULE_MESSAGE_MAX - 1, 0);
    CHECK_INT(pgt_console_parse(text, (size_t)n, &cmd, state, err, sizeof(err)), 0);
    CHECK_INT(strlen(cmd.message), PGT_RULE_MESSAGE_MAX - 1);
    n = snprintf(text, sizeof(text), "BLOCK SHAPE 'a' MESSAGE '%0*d'", PGT_RULE_MESSAGE_MAX, 0);
    CHECK_INT(pgt_console_parse(text, (size_t)n, &cmd, state, err, sizeof(err)), -1);
    CHECK(strstr(err, "quoted string too long") != NULL);
    /* A word longer than any keyword. */
    memset(text, 'A', 100);
    CHECK_INT(pgt_console_parse(text, 100, &cmd, state, err, sizeof(err)), -1);
    /* Only the given length is read: the rest of the buffer is not. */
    CHECK_INT(pgt_console_parse("RELOADXYZ", 6, &cmd, state, err, sizeof(err)), 0);
    CHECK_INT(cmd.verb, PGT_CONSOLE_RELOAD);
    /* A NUL inside a string is refused, not cut. */
    CHECK_INT(pgt_console_parse("BLOCK SHAPE 'a\0b'", 17, &cmd, state, err, sizeof(err)), -1);
}

static void check_messages(void)
{
    pgt_buf_t b = {0};
    const char *const cols[] = {"a", "b"};
    const char *const cells[] = {"x", NULL};
    pgt_console_columns(&b, cols, 2);
    CHECK(pgt_console_row(&b, cells, 2));
    pgt_console_complete(&b, "SHOW");
    CHECK(!b.failed);
    /* RowDescription: 'T', length, 2 fields of name + 18 bytes. */
    const uint8_t *p = (const uint8_t *)b.s;
    CHECK_INT(p[0], 'T');
    uint32_t tlen = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    CHECK_INT(tlen, 4 + 2 + 2 * (2 + 18));
    /* DataRow: 2 columns, "x" then NULL (-1). */
    const uint8_t *d = p + 1 + tlen;
    CHECK_INT(d[0], 'D');
    static const uint8_t row[] = {'D', 0, 0, 0, 15, 0, 2, 0, 0, 0, 1, 'x', 0xff, 0xff, 0xff, 0xff};
    CHECK(memcmp(d, row, sizeof(row)) == 0);
    static const uint8_t done[] = {'C', 0, 0, 0, 9, 'S', 'H', 'O', 'W', 0};
    CHECK(memcmp(d + sizeof(row), done, sizeof(done)) == 0);
    CHECK_INT(b.len, 1 + tlen + sizeof(row) + sizeof(done));
    CHECK(!pgt_console_cap(&b));
    pgt_buf_free(&b);
    /* Past the cap, the answer becomes an error. */
    static char big[65536];
    memset(big, 'y', sizeof(big) - 1);
    const char *const one[] = {big};
    while (pgt_console_row(&b, one, 1))
        ;
    CHECK(b.len > PGT_CONSOLE_MAX_RESULT);
    CHECK(pgt_console_cap(&b));
    CHECK_INT(b.s[0], 'E');
    CHECK(memmem(b.s, b.len, "54000", 5) != NULL);
    pgt_buf_free(&b);
}

/* Random texts made of the parser's own pieces and random bytes: it must
 * answer every one (0 or -1 with a SQLSTATE), within bounds (run under
 * ASan in CI). */
static void check_random(void)
{
    static const char *const pieces[] = {
        "SHOW ", "BLOCK ", "SHAPE ", "'",       "''",    "MESSAGE ",        "1",   "99 ", ";",
        "--",    "\n",     " ",      "QUERIES", "USAGE", "CANCEL SESSION ", "\xc3"};
    uint64_t x = 88172645463325252ull;
    static char text[2048];
    for (int round = 0; round < 200000; round++) {
        size_t len = 0;
        int parts = (int)(x % 12);
        for (int i = 0; i < parts; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            const char *p = pieces[x % (sizeof(pieces) / sizeof(pieces[0]))];
            size_t n = strlen(p);
            if (x % 5 == 0) {
                p = (const char *)&x;
                n = 8;
            }
            if (len + n < sizeof(text)) {
                memcpy(text + len, p, n);
                len += n;
            }
        }
        pgt_console_cmd_t cmd;
        char state[6] = "", err[2000];
        int rc = pgt_console_parse(text, len, &cmd, state, err, sizeof(err));
        CHECK(rc == 0 || rc == -1);
        if (rc != 0)
            CHECK(strcmp(state, "42601") == 0 || strcmp(state, "0A000") == 0);
        else
            CHECK(cmd.verb <= PGT_CONSOLE_EMPTY && strlen(cmd.message) < PGT_RULE_MESSAGE_MAX);
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    }
}

int main(void)
{
    for (size_t i = 0; i < sizeof(oks) / sizeof(oks[0]); i++) {
        pgt_console_cmd_t cmd;
        char state[6], err[2000] = "";
        int rc = pgt_console_parse(oks[i].text, strlen(oks[i].text), &cmd, state, err, sizeof(err));
        if (rc != 0)
            fprintf(stderr, "case %zu (%s): %s\n", i, oks[i].text, err);
        CHECK_INT(rc, 0);
        CHECK_INT(cmd.verb, oks[i].verb);
        if (oks[i].n >= 0)
            CHECK_INT(cmd.n, oks[i].n);
        CHECK_INT(cmd.has_message, oks[i].message != NULL);
        if (oks[i].message)
            CHECK_STR(cmd.message, oks[i].message);
    }
    /* What APPROVE reads. */
    pgt_console_cmd_t ap;
    char st[6], e[2000];
    const char *text = "approve '7kq2mo' for '30m' max '5 USD' shape only";
    CHECK_INT(pgt_console_parse(text, strlen(text), &ap, st, e, sizeof(e)), 0);
    CHECK_STR(ap.ticket, "T-7KQ2M0");
    CHECK_INT(ap.for_us, INT64_C(1800000000));
    CHECK_STR(ap.message, "5 USD");
    CHECK(ap.shape_only);
    text = "APPROVE 'T-7KQ2MX'";
    CHECK_INT(pgt_console_parse(text, strlen(text), &ap, st, e, sizeof(e)), 0);
    CHECK_INT(ap.for_us, INT64_C(7200000000));
    CHECK_STR(ap.message, "");
    CHECK(!ap.shape_only);
    for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
        pgt_console_cmd_t cmd;
        char state[6], err[2000] = "";
        CHECK_INT(
            pgt_console_parse(bads[i].text, strlen(bads[i].text), &cmd, state, err, sizeof(err)),
            -1);
        CHECK_STR(state, bads[i].sqlstate);
        if (!strstr(err, bads[i].says))
            fprintf(stderr, "case %zu (%s): %s\n", i, bads[i].text, err);
        CHECK(strstr(err, bads[i].says) != NULL);
    }
    pgt_console_cmd_t cmd;
    char state[6], err[2000];
    CHECK_INT(pgt_console_parse("BLOCK SHAPE '00ff'", 18, &cmd, state, err, sizeof(err)), 0);
    CHECK(cmd.fingerprint == 0xff);
    CHECK_INT(pgt_console_parse("SHOW USAGE MONTH", 16, &cmd, state, err, sizeof(err)), 0);
    CHECK_INT(cmd.period, PGT_PERIOD_MONTH);
    CHECK_INT(pgt_console_parse("SHOW TABLES week", 16, &cmd, state, err, sizeof(err)), 0);
    CHECK_INT(cmd.period, PGT_PERIOD_WEEK);
    CHECK_INT(pgt_console_parse("SHOW TABLES", 11, &cmd, state, err, sizeof(err)), 0);
    CHECK_INT(cmd.period, PGT_PERIOD_DAY);
    CHECK(pgt_console_reads_ledger(PGT_CONSOLE_SHOW_TABLES));
    CHECK(!pgt_console_admin_only(PGT_CONSOLE_SHOW_TABLES));
    CHECK(pgt_console_admin_only(PGT_CONSOLE_RELOAD));
    CHECK(!pgt_console_admin_only(PGT_CONSOLE_SHOW_CONFIG));
    CHECK(pgt_console_reads_ledger(PGT_CONSOLE_BLOCK_SHAPE));
    CHECK(!pgt_console_reads_ledger(PGT_CONSOLE_SHOW_SESSIONS));
    check_long_inputs();
    check_messages();
    check_random();
    uint8_t pkt[16];
    pgt_cancel_packet(pkt, 0x01020304, 0xa0b0c0d0);
    static const uint8_t want[16] = {0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e,
                                     1, 2, 3, 4,  0xa0, 0xb0, 0xc0, 0xd0};
    CHECK(memcmp(pkt, want, 16) == 0);
    TASK_DONE();
}
