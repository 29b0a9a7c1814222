/* Unit tests of the text helpers and the growing buffer, as tables of
 * cases: display widths, one-line snippets and their cuts, CSV fields,
 * aligned tables, and JSON strings from text that may not be UTF-8. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "pgtally/buf.h"
#include "pgtally/text.h"
#include "task.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define FFFD "\xEF\xBF\xBD"

static void test_buf(void)
{
    pgt_buf_t b = {0};
    char *s = pgt_buf_take(&b);
    CHECK_STR(s, ""); /* never appended to: "" */
    free(s);
    pgt_buf_puts(&b, "ab");
    pgt_buf_putc(&b, 'c');
    pgt_buf_printf(&b, "%d-%s", 12, "x");
    CHECK_STR(b.s, "abc12-x");
    char big[600];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    pgt_buf_printf(&b, "[%s]", big); /* longer than printf's first try */
    CHECK_INT(b.len, 7 + 2 + 599);
    CHECK_INT(b.s[b.len - 1], ']');
    pgt_buf_truncate(&b, 3);
    pgt_buf_truncate(&b, 10); /* longer than the text: nothing */
    CHECK_STR(b.s, "abc");
    b.failed = true; /* as after a failed allocation */
    pgt_buf_puts(&b, "more");
    CHECK_INT(b.len, 3);
    CHECK(pgt_buf_take(&b) == NULL);
    CHECK(b.s == NULL && b.len == 0 && !b.failed);
}

static void test_width(void)
{
    static const struct {
        const char *s; /* text */
        size_t want;   /* columns */
    } cases[] = {
        {"", 0},
        {"abc", 3},
        {"é", 1},         /* two bytes, one column */
        {"e\xCC\x81", 1}, /* e and a combining acute */
        {"漢字", 4},      /* wide */
        {"ｱ", 1},         /* halfwidth katakana */
        {"ＡＢ", 4},      /* fullwidth Latin */
        {"한국", 4},      /* Hangul */
        {"😀x", 3},        /* an emoji */
        {"a\xE2\x80\x8B"
         "b",
         2},             /* zero width space */
        {"\xFF", 1},     /* an invalid byte shows as '?' */
        {"\xE2\x82", 2}, /* a cut sequence: two invalid bytes */
    };
    for (size_t i = 0; i < NELEMS(cases); i++) {
        if (pgt_text_width(cases[i].s) != cases[i].want)
            fprintf(stderr, "width case %zu\n", i);
        CHECK_INT(pgt_text_width(cases[i].s), cases[i].want);
    }
    CHECK_INT(pgt_text_width(NULL), 0);
}

static void test_snippet(void)
{
    static const struct {
        const char *s;        /* text */
        size_t max;           /* columns, 0: no limit */
        const char *ellipsis; /* cut mark */
        const char *want;     /* appended */
        size_t width;         /* returned */
    } cases[] = {
        {"", 0, "...", "", 0},
        {"  a \t\n b  ", 0, "...", "a b", 3}, /* white space runs, trimmed */
        {"a\r\n\v\fb", 0, "...", "a b", 3},
        {"x\x01y\x7Fz\x1B[0m", 0, "...", "x?y?z?[0m", 9}, /* controls */
        {"c1\xC2\x85!", 0, "...", "c1?!", 4},             /* C1 (NEL) */
        {"ab\xFF"
         "cd\xC3",
         0, "...", "ab?cd?", 6}, /* not UTF-8 */
        {"éü", 0, "...", "éü", 2},
        {"abcdefgh", 8, "...", "abcdefgh", 8}, /* fits exactly */
        {"abcdefghi", 8, "...", "abcde...", 8},
        {"abcdefghij", 8, "…", "abcdefg…", 8},
        {"abcd efgh", 7, "...", "abcd...", 7},
        {"abc defgh", 7, "...", "abc...", 6},     /* never cut after a space */
        {"漢字漢字漢字", 7, "...", "漢字...", 7}, /* wide: 12 columns */
        {"漢字漢字漢字", 8, "...", "漢字...", 7}, /* half a character does not fit */
        {"漢字漢字漢字", 12, "...", "漢字漢字漢字", 12},
        {"e\xCC\x81"
         "e\xCC\x81"
         "e\xCC\x81"
         "e\xCC\x81"
         "e\xCC\x81",
         4, "…",
         "e\xCC\x81"
         "e\xCC\x81"
         "e\xCC\x81"
         "…",
         4}, /* marks stay with their letter */
        {"😀😀😀", 5, "…", "😀😀…", 5},
        {"abcdef", 2, "...", "...", 3}, /* the ellipsis alone is wider */
        {"  \t ", 3, "...", "", 0},
    };
    for (size_t i = 0; i < NELEMS(cases); i++) {
        pgt_buf_t b = {0};
        pgt_buf_puts(&b, "<");
        size_t w = pgt_text_snippet(&b, cases[i].s, cases[i].max, cases[i].ellipsis);
        if (strcmp(b.s + 1, cases[i].want) != 0 || w != cases[i].width)
            fprintf(stderr, "snippet case %zu\n", i);
        CHECK_STR(b.s + 1, cases[i].want);
        CHECK_INT(w, cases[i].width);
        CHECK_INT(pgt_text_width(b.s + 1), w);
        pgt_buf_free(&b);
    }
    pgt_buf_t b = {0};
    CHECK_INT(pgt_text_snippet(&b, NULL, 5, "..."), 0);
    pgt_buf_free(&b);
}

static void test_csv(void)
{
    static const struct {
        const char *s;    /* field */
        const char *want; /* as written */
    } cases[] = {
        {"plain", "plain"},
        {"", ""},
        {NULL, ""},
        {"in side", "in side"},
        {"a,b", "\"a,b\""},
        {"say \"hi\"", "\"say \"\"hi\"\"\""},
        {"\"", "\"\"\"\""},
        {"a\nb", "\"a\nb\""},
        {"a\rb", "\"a\rb\""},
        {"a\r\nb", "\"a\r\nb\""},
        {" lead", "\" lead\""},
        {"trail ", "\"trail \""},
        {"\tlead", "\"\tlead\""}, /* tabs too: spreadsheets trim them */
        {"trail\t", "\"trail\t\""},
        {"in\tside", "in\tside"},
        {"é;ü", "é;ü"},
        {"漢,字", "\"漢,字\""},
        {"SELECT a, \"b\"\nFROM t", "\"SELECT a, \"\"b\"\"\nFROM t\""},
    };
    for (size_t i = 0; i < NELEMS(cases); i++) {
        pgt_buf_t b = {0};
        pgt_text_csv_field(&b, cases[i].s);
        char *got = pgt_buf_take(&b);
        if (!got || strcmp(got, cases[i].want) != 0)
            fprintf(stderr, "csv case %zu\n", i);
        CHECK_STR(got, cases[i].want);
        free(got);
    }
    const char *row[] = {"a", NULL, "b,c", ""};
    pgt_buf_t b = {0};
    pgt_text_csv_row(&b, row, 4, "\r\n");
    pgt_text_csv_row(&b, row, 1, "\n");
    CHECK_STR(b.s, "a,,\"b,c\",\r\na\n");
    pgt_buf_free(&b);
}

/* A table's rows and what it prints. */
typedef struct table_case {
    size_t ncols;           /* columns */
    const char *head[3];    /* headers */
    bool right[3];          /* right-aligned columns */
    size_t max;             /* cell width, 0: no limit */
    const char *rows[4][3]; /* cells; a row of NULL header is a rule */
    bool rule[4];           /* row i is a rule */
    size_t nrows;           /* rows */
    const char *want;       /* printed */
} table_case_t;

static const table_case_t table_cases[] = {
    {3,
     {"#", "NAME", "COST"},
     {true, false, true},
     0,
     {{"1", "alice", "0.10"}, {"10", "bo", "12.00"}},
     {false},
     2,
     " #  NAME    COST\n"
     " 1  alice   0.10\n"
     "10  bo     12.00\n"},
    /* The last column, left-aligned, is not padded. */
    {2,
     {"A", "B"},
     {false, false},
     0,
     {{"x", "longer"}, {"yy", "z"}},
     {false},
     2,
     "A   B\n"
     "x   longer\n"
     "yy  z\n"},
    /* Widths in columns, not bytes or characters. */
    {2,
     {"USER", "N"},
     {false, true},
     0,
     {{"漢字", "1"}, {"e\xCC\x81mile", "22"}, {"bob", "3"}},
     {false},
     3,
     "USER    N\n"
     "漢字    1\n"
     "e\xCC\x81mile  22\n"
     "bob     3\n"},
    /* Cut at the table's maximum, on a character boundary. */
    {2,
     {"Q", "N"},
     {false, true},
     8,
     {{"abcdefghijk", "1"}, {"漢字漢字漢字", "2"}},
     {false},
     2,
     "Q         N\n"
     "abcde...  1\n"
     "漢字...   2\n"},
    /* A rule before a total. */
    {2,
     {"K", "V"},
     {false, true},
     0,
     {{"a", "1"}, {NULL}, {"TOTAL", "10"}},
     {false, true, false},
     3,
     "K       V\n"
     "a       1\n"
     "-----  --\n"
     "TOTAL  10\n"},
    /* NULL cells are empty; white space and controls as in a snippet. */
    {3,
     {"A", "B", "C"},
     {false, false, false},
     0,
     {{NULL, " a\tb\nc ", "x\x01"}},
     {false},
     1,
     "A  B      C\n"
     "   a b c  x?\n"},
    /* No rows: the header alone. */
    {2, {"ONE", "TWO"}, {true, false}, 0, {{NULL}}, {false}, 0, "ONE  TWO\n"},
};

static void test_table(void)
{
    for (size_t i = 0; i < NELEMS(table_cases); i++) {
        const table_case_t *c = &table_cases[i];
        pgt_text_table_t *t = pgt_text_table_new(c->ncols, c->head, c->right);
        CHECK(t != NULL);
        for (size_t r = 0; r < c->nrows; r++) {
            if (c->rule[r])
                pgt_text_table_rule(t);
            else
                CHECK_INT(pgt_text_table_row(t, c->rows[r], c->max), 0);
        }
        pgt_buf_t b = {0};
        pgt_text_table_print(t, &b);
        pgt_text_table_print(t, &b); /* printing leaves the table as it was */
        pgt_buf_t want = {0};
        pgt_buf_printf(&want, "%s%s", c->want, c->want);
        if (!b.s || strcmp(b.s, want.s) != 0)
            fprintf(stderr, "table case %zu:\n%s", i, b.s ? b.s : "(null)\n");
        CHECK_STR(b.s, want.s);
        pgt_buf_free(&want);
        pgt_buf_free(&b);
        pgt_text_table_free(t);
    }
}

static void test_table_cells(void)
{
    /* Cell by cell, each with its own maximum; a short last row. */
    static const char *const head[] = {"#", "TEXT"};
    static const bool right[] = {true, false};
    pgt_text_table_t *t = pgt_text_table_new(2, head, right);
    pgt_text_table_cell(t, "1", 0);
    pgt_text_table_cell(t, "a long statement", 9);
    pgt_text_table_cell(t, "22", 0);
    pgt_buf_t b = {0};
    pgt_text_table_print(t, &b);
    CHECK_STR(b.s, " #  TEXT\n"
                   " 1  a long...\n"
                   "22  \n");
    pgt_buf_free(&b);
    pgt_text_table_free(t);
    /* A table that could not be made fails its output. */
    const char *cells[] = {"x"};
    pgt_text_table_cell(NULL, "x", 0);
    pgt_text_table_rule(NULL);
    CHECK_INT(pgt_text_table_row(NULL, cells, 0), -1);
    pgt_text_table_print(NULL, &b);
    CHECK(b.failed);
    pgt_buf_free(&b);
    pgt_text_table_free(NULL);
}

static void test_json(void)
{
    static const struct {
        const char *s;    /* text */
        const char *want; /* the string's value */
    } cases[] = {
        {"", ""},
        {"plain", "plain"},
        {"é 漢字 😀", "é 漢字 😀"},
        {"a\xFF"
         "b",
         "a" FFFD "b"},
        {"\xC0\xAF", FFFD FFFD},                   /* overlong '/' */
        {"\xED\xA0\x80", FFFD FFFD FFFD},          /* a surrogate */
        {"x\xE2\x82", "x" FFFD FFFD},              /* cut short */
        {"\xF4\x90\x80\x80", FFFD FFFD FFFD FFFD}, /* above U+10FFFF */
        {"\x80"
         "ok\xC3\xA9",
         FFFD "ok\xC3\xA9"}, /* a stray continuation byte */
    };
    for (size_t i = 0; i < NELEMS(cases); i++) {
        json_t *v = pgt_text_json(cases[i].s);
        CHECK(json_is_string(v));
        if (!json_is_string(v) || strcmp(json_string_value(v), cases[i].want) != 0)
            fprintf(stderr, "json case %zu\n", i);
        CHECK_STR(json_string_value(v), cases[i].want);
        json_decref(v);
    }
    json_t *v = pgt_text_json(NULL);
    CHECK(json_is_null(v));
    json_decref(v);
}

/* Row counts: what pgt_rows_parse takes and refuses, and how
 * pgt_rows_format writes them back. */
static void test_rows(void)
{
    static const struct {
        const char *in;  /* as written */
        int rc;          /* 0 or -1 */
        int64_t rows;    /* the value, when rc is 0 */
        const char *out; /* pgt_rows_format of it */
    } cases[] = {
        {"5000000", 0, 5000000, "5e6"},
        {"1e9", 0, 1000000000, "1e9"},
        {"1E9", 0, 1000000000, "1e9"},
        {"1e+9", 0, 1000000000, "1e9"},
        {"2.5e6", 0, 2500000, "2.5e6"},
        {"1.25e10", 0, 12500000000, "1.25e10"},
        {"0.5e3", 0, 500, "500"},
        {"0.05e3", 0, 50, "50"},
        {"007", 0, 7, "7"},
        {"1234567", 0, 1234567, "1234567"},
        {"999999", 0, 999999, "999999"},
        {"1.0", 0, 1, "1"},
        {"0", 0, 0, "0"},
        {"1e18", 0, 1000000000000000000, "1e18"},
        {"1000000000000000000", 0, 1000000000000000000, "1e18"},
        {"1.000000000000000001e18", -1, 0, NULL}, /* past 1e18 */
        {"2e18", -1, 0, NULL},
        {"9999999999999999999", -1, 0, NULL},
        {"1e1000000", -1, 0, NULL},
        {"1.5", -1, 0, NULL}, /* not whole */
        {"1e-3", -1, 0, NULL},
        {"-5", -1, 0, NULL},
        {"+5", -1, 0, NULL},
        {"", -1, 0, NULL},
        {" 5", -1, 0, NULL},
        {"5 ", -1, 0, NULL},
        {"10M", -1, 0, NULL},
        {"1e", -1, 0, NULL},
        {"1.", -1, 0, NULL},
        {".5e1", -1, 0, NULL},
        {"0x10", -1, 0, NULL},
        {"inf", -1, 0, NULL},
        {"nan", -1, 0, NULL},
        {"lots", -1, 0, NULL},
        {"1,000", -1, 0, NULL},
        {"00000000000000000000000000000000000000000000000001", 0, 1, "1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t v = -42;
        int rc = pgt_rows_parse(cases[i].in, &v);
        CHECK_INT(rc, cases[i].rc);
        if (rc != cases[i].rc)
            fprintf(stderr, "  rows case '%s'\n", cases[i].in);
        if (rc != 0 || cases[i].rc != 0)
            continue;
        CHECK_INT(v, cases[i].rows);
        char buf[32];
        CHECK_STR(pgt_rows_format(v, buf, sizeof(buf)), cases[i].out);
        int64_t back = -1;
        CHECK_INT(pgt_rows_parse(buf, &back), 0);
        CHECK_INT(back, v);
    }
}

int main(void)
{
    test_buf();
    test_width();
    test_snippet();
    test_csv();
    test_table();
    test_table_cells();
    test_json();
    test_rows();
    TASK_DONE();
}
