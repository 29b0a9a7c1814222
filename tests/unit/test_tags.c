/* Unit tests of statement tags: sqlcommenter comments and JSON object
 * comments (dbt's query comment), table-driven, then the bounds on size,
 * count, name length and depth. */
#include <stdint.h>

#include "pgtally/tags.h"
#include "task.h"

#define COUNTOF(a) (sizeof(a) / sizeof((a)[0]))

/* An exact-size heap copy without a NUL, so that ASan catches any read
 * past len. */
static char *heap_copy(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    memcpy(p, s, n);
    return p;
}

/* The tags of sql, read from an exact-size copy; malloc'd or NULL. */
static char *tags_of(const char *sql)
{
    size_t n = strlen(sql);
    char *text = heap_copy(sql, n);
    char *json = pgt_tags_json(text, n);
    free(text);
    return json;
}

/* A statement and the tags JSON expected from it (NULL: none). */
static const struct tag_case {
    const char *sql;  /* statement */
    const char *json; /* expected tags */
} tag_cases[] = {
    {"SELECT 1 /*controller='users',action='index'*/",
     "{\"action\":\"index\",\"controller\":\"users\"}"},
    {"SELECT 1 /*route='%2Fusers%2F%3Aid',db_driver='psycopg%3A3.1'*/",
     "{\"db_driver\":\"psycopg:3.1\",\"route\":\"/users/:id\"}"},
    {"SELECT 1 /*traceparent='00-5bd66ef5095369c7b0d1f8f4bd33716a-c532cb4098ac3dd2-01'*/",
     "{\"traceparent\":\"00-5bd66ef5095369c7b0d1f8f4bd33716a-c532cb4098ac3dd2-01\"}"},
    {"SELECT 1 /*k='it\\'s'*/", "{\"k\":\"it's\"}"},
    {"SELECT 1 /* a = 'x y' , b='%C3%A9' */", "{\"a\":\"x y\",\"b\":\"\xc3\xa9\"}"},
    {"SELECT 1 /*my%20key='v'*/", "{\"my key\":\"v\"}"},
    {"SELECT 1 /*a='50%',b='%4'*/", "{\"a\":\"50%\",\"b\":\"%4\"}"},
    {"SELECT 1 /*a='1',a='2'*/", "{\"a\":\"2\"}"},
    {"SELECT /*a='1'*/ 1", "{\"a\":\"1\"}"},
    {"/*a='1'*/ SELECT 1 /*b='2'*/", "{\"b\":\"2\"}"},
    {"SELECT 1 /*a='1'*/ /* plain */ -- x='y'", "{\"a\":\"1\"}"},
    {"SELECT 1 /*a=''*/", "{\"a\":\"\"}"},
    {"SELECT 1", NULL},
    {"SELECT 1 /* plain */", NULL},
    {"SELECT 1 -- a='1'", NULL},
    {"SELECT '/*a=''1''*/'", NULL},
    {"SELECT 1 /*a=1*/", NULL},
    {"SELECT 1 /*a='1*/", NULL},
    {"SELECT 1 /*a='1',*/", NULL},
    {"SELECT 1 /*='x'*/", NULL},
    {"SELECT 1 /*a='1' b='2'*/", NULL},
    {"SELECT 1 /*a='%FF'*/", NULL},
    {"SELECT 1 /*a='%00'*/", NULL},
    {"SELECT 'x /*a='1'*/", NULL},
    {"SELECT 1 /*a='1'", NULL},
    {"SELECT 1 /* /*a='1'*/ */", NULL}, /* the nested comment is part of the key */
    /* dbt's query comment: prepended (the default), then appended */
    {"/* {\"app\": \"dbt\", \"dbt_version\": \"1.7.4\", \"profile_name\": \"shop\", "
     "\"target_name\": \"prod\", \"node_id\": \"model.shop.orders\"} */\nselect * from orders",
     "{\"app\":\"dbt\",\"dbt_version\":\"1.7.4\",\"node_id\":\"model.shop.orders\",\"profile_"
     "name\":\"shop\",\"target_name\":\"prod\"}"},
    {"select * from orders\n/* {\"app\": \"dbt\", \"dbt_version\": \"1.7.4\", \"profile_name\": "
     "\"shop\", \"target_name\": \"prod\", \"node_id\": \"model.shop.orders\"} */",
     "{\"app\":\"dbt\",\"dbt_version\":\"1.7.4\",\"node_id\":\"model.shop.orders\",\"profile_"
     "name\":\"shop\",\"target_name\":\"prod\"}"},
    {"/*{\"app\": \"dbt\", \"dbt_version\": \"1.7.4\", \"profile_name\": \"shop\", "
     "\"target_name\": \"prod\", \"node_id\": \"model.shop.orders\"}*/ select 1",
     "{\"app\":\"dbt\",\"dbt_version\":\"1.7.4\",\"node_id\":\"model.shop.orders\",\"profile_"
     "name\":\"shop\",\"target_name\":\"prod\"}"},
    /* values: numbers and booleans as their JSON text; null and arrays skipped */
    {"/* {\"n\": 42, \"r\": 1.5, \"t\": true, \"f\": false, \"z\": null, \"l\": [1], \"s\": \"\"} "
     "*/ SELECT 1",
     "{\"f\":\"false\",\"n\":\"42\",\"r\":\"1.5\",\"s\":\"\",\"t\":\"true\"}"},
    {"/* {\"u\": \"\\u00e9\", \"q\": \"a='b'\"} */ SELECT 1",
     "{\"q\":\"a='b'\",\"u\":\"\xc3\xa9\"}"},
    {"/* {\"a\": \"1\", \"a\": \"2\"} */ SELECT 1", "{\"a\":\"2\"}"},
    {"/* {\"\": \"x\", \"a\": \"1\"} */ SELECT 1", "{\"a\":\"1\"}"},
    /* query_tag, dbt's query_tag config, is a tag like any other */
    {"/* {\"app\": \"dbt\", \"query_tag\": \"nightly_orders\"} */ SELECT 1",
     "{\"app\":\"dbt\",\"query_tag\":\"nightly_orders\"}"},
    /* nested objects flattened with dotted names, down to four levels */
    {"/* {\"app\": \"dbt\", \"dbt\": {\"node\": {\"id\": \"m\", \"n\": 2}}} */ SELECT 1",
     "{\"app\":\"dbt\",\"dbt.node.id\":\"m\",\"dbt.node.n\":\"2\"}"},
    {"/* {\"a\": {\"b\": {\"c\": {\"x\": \"4\", \"d\": {\"e\": \"5\"}}}}} */ SELECT 1",
     "{\"a.b.c.x\":\"4\"}"},
    {"/* {\"query_tag\": {\"team\": \"growth\"}} */ SELECT 1", "{\"query_tag.team\":\"growth\"}"},
    /* merged with sqlcommenter, which wins */
    {"/* {\"app\": \"dbt\", \"team\": \"a\"} */ SELECT 1 /*team='b',route='r'*/",
     "{\"app\":\"dbt\",\"route\":\"r\",\"team\":\"b\"}"},
    {"SELECT 1 /*team='b'*/ /* {\"team\": \"a\", \"x\": \"y\"} */", "{\"team\":\"b\",\"x\":\"y\"}"},
    /* the first comment when it is JSON (dbt's default place), else the last */
    {"/* {\"app\": \"dbt\"} */ SELECT /* {\"note\": \"x\"} */ 1", "{\"app\":\"dbt\"}"},
    {"/* plain */ SELECT /* {\"a\": \"1\"} */ 1 /* {\"b\": \"2\"} */", "{\"b\":\"2\"}"},
    /* malformed or not an object: no tags from it, sqlcommenter still counts */
    {"/* {\"app\": \"dbt\",} */ SELECT 1", NULL},
    {"/* {\"app\": dbt} */ SELECT 1", NULL},
    {"/* {\"app\": \"dbt\" */ SELECT 1", NULL},
    {"/* {\"app\": \"dbt\"} } */ SELECT 1", NULL},
    {"/* {\"app\": \"dbt\"} */ SELECT 1 /*team='b'*/", "{\"app\":\"dbt\",\"team\":\"b\"}"},
    {"/* {\"app\": \"dbt\",} */ SELECT 1 /*team='b'*/", "{\"team\":\"b\"}"},
    {"/* {\"app\": \"dbt\"} */ SELECT 1 /*team=b*/", "{\"app\":\"dbt\"}"},
    {"/* {\"u\": \"\\u0000\"} */ SELECT 1", NULL},
    {"/* {\"n\": 123456789012345678901234567890} */ SELECT 1", NULL},
    {"/* [\"app\", \"dbt\"] */ SELECT 1", NULL},
    {"/* {} */ SELECT 1", NULL},
    {"/* {\"z\": null} */ SELECT 1", NULL},
    {"SELECT '/* {\"a\": \"1\"} */'", NULL},
    {"-- {\"a\": \"1\"}\nSELECT 1 /* x */", NULL},
};

static void test_tags_table(void)
{
    for (size_t i = 0; i < COUNTOF(tag_cases); i++) {
        char *json = tags_of(tag_cases[i].sql);
        if (tag_cases[i].json) {
            CHECK_STR(json, tag_cases[i].json);
        } else if (json) {
            fprintf(stderr, "case %zu: %s gave %s\n", i, tag_cases[i].sql, json);
            CHECK(json == NULL);
        }
        free(json);
    }
    CHECK(pgt_tags_json(NULL, 0) == NULL);
}

/* Appends to b (room for cap bytes) as printf does; the tests size it. */
#define APPEND(b, cap, ...) snprintf((b) + strlen(b), (cap)-strlen(b), __VA_ARGS__)

/* Appends n bytes ch to the string s (which has room for them). */
static void fill(char *s, char ch, size_t n)
{
    size_t at = strlen(s);
    memset(s + at, ch, n);
    s[at + n] = '\0';
}

/* A statement whose JSON comment has n keys k0..k<n-1>, each "v", then
 * suffix. Malloc'd. */
static char *many_keys(int n, const char *suffix)
{
    size_t cap = 64 + (size_t)n * 16 + strlen(suffix);
    char *s = calloc(1, cap);
    APPEND(s, cap, "/* {");
    for (int i = 0; i < n; i++)
        APPEND(s, cap, "%s\"k%d\": \"v\"", i ? ", " : "", i);
    APPEND(s, cap, "} */ SELECT 1%s", suffix);
    return s;
}

static void test_tag_bounds(void)
{
    /* 64 tags are kept, 65 make the comment ignored; sqlcommenter still counts */
    char *s = many_keys(64, "");
    char *json = tags_of(s);
    CHECK(json && strstr(json, "\"k63\":\"v\""));
    free(json);
    free(s);
    s = many_keys(65, "");
    CHECK(tags_of(s) == NULL);
    free(s);
    s = many_keys(65, " /*team='b'*/");
    json = tags_of(s);
    CHECK_STR(json, "{\"team\":\"b\"}");
    free(json);
    free(s);

    /* a comment over 8 KB is ignored, one just under is read */
    size_t cap = 200000;
    s = calloc(1, cap);
    APPEND(s, cap, "/* {\"big\": \"");
    fill(s, 'x', 8192 - 16);
    APPEND(s, cap, "\"} */ SELECT 1");
    json = tags_of(s);
    CHECK(json && strlen(json) > 8000);
    free(json);
    s[0] = '\0';
    APPEND(s, cap, "/* {\"big\": \"");
    fill(s, 'x', 150000);
    APPEND(s, cap, "\"} */ SELECT 1 /*team='b'*/");
    json = tags_of(s);
    CHECK_STR(json, "{\"team\":\"b\"}");
    free(json);

    /* deep nesting within the size cap: parsed, nothing deeper than four levels */
    s[0] = '\0';
    APPEND(s, cap, "/* {\"top\": \"1\"");
    for (int i = 0; i < 300; i++)
        APPEND(s, cap, ", \"a\": {\"x\": \"%d\"", i);
    for (int i = 0; i < 300; i++)
        APPEND(s, cap, "}");
    APPEND(s, cap, "} */ SELECT 1");
    json = tags_of(s);
    CHECK_STR(json, "{\"a.a.a.x\":\"2\",\"a.a.x\":\"1\",\"a.x\":\"0\",\"top\":\"1\"}");
    free(json);

    /* a name over 200 bytes is skipped, one of 200 kept */
    s[0] = '\0';
    APPEND(s, cap, "/* {\"ok\": \"1\", \"");
    fill(s, 'n', 201);
    APPEND(s, cap, "\": \"2\", \"p\": {\"");
    fill(s, 'm', 198);
    APPEND(s, cap, "\": \"3\"}} */ SELECT 1");
    json = tags_of(s);
    CHECK(json && strstr(json, "\"ok\":\"1\"") && !strstr(json, "nnn") && strstr(json, "\"p.mmm"));
    free(json);
    free(s);
}

int main(void)
{
    test_tags_table();
    test_tag_bounds();
    TASK_DONE();
}
