/* Unit tests of statement shapes: splitting multi-statement strings,
 * classification (table-driven), fingerprints and normalized text,
 * unparsable text, comments, and the bounded LRU cache. */
#include <jansson.h>
#include <stdint.h>

#include "pgtally/fingerprint.h"
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

static void test_kind_names(void)
{
    CHECK_STR(pgt_stmt_kind_name(PGT_STMT_SELECT), "select");
    CHECK_STR(pgt_stmt_kind_name(PGT_STMT_TRANSACTION), "transaction");
    CHECK_STR(pgt_stmt_kind_name(PGT_STMT_UNPARSED), "unparsed");
    CHECK_STR(pgt_stmt_kind_name((pgt_stmt_kind_t)999), "unknown");
}

/* One statement: its kind, and whether EXPLAIN accepts it. */
static const struct class_case {
    const char *sql;      /* the statement */
    pgt_stmt_kind_t kind; /* expected kind */
    bool explainable;     /* expected explainable */
} class_cases[] = {
    {"SELECT 1", PGT_STMT_SELECT, true},
    {"select * from t where a = 'x'", PGT_STMT_SELECT, true},
    {"  -- lead\n /* c /* nested */ */ SELECT 1", PGT_STMT_SELECT, true},
    {"(SELECT 1) UNION (SELECT 2)", PGT_STMT_SELECT, true},
    {"VALUES (1), (2)", PGT_STMT_SELECT, true},
    {"TABLE t", PGT_STMT_SELECT, true},
    {"SELECT 'into' FROM t", PGT_STMT_SELECT, true},
    {"SELECT \"into\" FROM t", PGT_STMT_SELECT, true},
    {"select /* into */ 1", PGT_STMT_SELECT, true},
    {"SELECT * FROM t WHERE a IN (SELECT b FROM u) FOR UPDATE", PGT_STMT_SELECT, true},
    {"SELECT * INTO new_t FROM t", PGT_STMT_DDL, true},
    {"WITH x AS (SELECT 1) SELECT * FROM x", PGT_STMT_SELECT, true},
    {"WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", PGT_STMT_INSERT, true},
    {"WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", PGT_STMT_SELECT, true},
    {"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) "
     "UPDATE t SET a = 1 WHERE a IN (SELECT n FROM r)",
     PGT_STMT_UPDATE, true},
    {"WITH update AS (SELECT 1 AS a) SELECT * FROM update", PGT_STMT_SELECT, true},
    {"WITH a AS MATERIALIZED (SELECT 1), b AS NOT MATERIALIZED (SELECT 2) DELETE FROM t",
     PGT_STMT_DELETE, true},
    {"WITH RECURSIVE t(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM t WHERE id < 3) "
     "SEARCH DEPTH FIRST BY id SET ord CYCLE id SET is_cycle USING path SELECT * FROM t",
     PGT_STMT_SELECT, true},
    {"WITH x AS (SELECT 1) SELECT * INTO y FROM x", PGT_STMT_DDL, true},
    {"INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2", PGT_STMT_INSERT, true},
    {"UPDATE t SET a = 1", PGT_STMT_UPDATE, true},
    {"DELETE FROM t", PGT_STMT_DELETE, true},
    {"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", PGT_STMT_MERGE, true},
    {"COPY t FROM STDIN", PGT_STMT_COPY, false},
    {"COPY (SELECT 1) TO STDOUT", PGT_STMT_COPY, false},
    {"CREATE TABLE t (a int)", PGT_STMT_DDL, false},
    {"CREATE TABLE t AS SELECT 1", PGT_STMT_DDL, true},
    {"CREATE TEMP TABLE t AS SELECT 1", PGT_STMT_DDL, true},
    {"CREATE TABLE t2 AS EXECUTE p", PGT_STMT_DDL, true},
    {"CREATE UNLOGGED TABLE IF NOT EXISTS t (a int GENERATED ALWAYS AS (1) STORED)", PGT_STMT_DDL,
     false},
    {"CREATE MATERIALIZED VIEW mv AS SELECT 1", PGT_STMT_DDL, true},
    {"CREATE VIEW v AS SELECT 1", PGT_STMT_DDL, false},
    {"CREATE FUNCTION f() RETURNS TABLE (a int) AS $$ SELECT 1 $$ LANGUAGE sql", PGT_STMT_DDL,
     false},
    {"ALTER TABLE t ADD COLUMN b int", PGT_STMT_DDL, false},
    {"DROP TABLE t", PGT_STMT_DDL, false},
    {"TRUNCATE t", PGT_STMT_DDL, false},
    {"GRANT SELECT ON t TO u", PGT_STMT_DDL, false},
    {"REVOKE ALL ON t FROM u", PGT_STMT_DDL, false},
    {"COMMENT ON TABLE t IS 'x'", PGT_STMT_DDL, false},
    {"REFRESH MATERIALIZED VIEW mv", PGT_STMT_DDL, false},
    {"SET search_path = public", PGT_STMT_UTILITY, false},
    {"SHOW work_mem", PGT_STMT_UTILITY, false},
    {"RESET ALL", PGT_STMT_UTILITY, false},
    {"VACUUM ANALYZE t", PGT_STMT_UTILITY, false},
    {"ANALYZE t", PGT_STMT_UTILITY, false},
    {"LISTEN ch", PGT_STMT_UTILITY, false},
    {"NOTIFY ch, 'x'", PGT_STMT_UTILITY, false},
    {"DISCARD ALL", PGT_STMT_UTILITY, false},
    {"PREPARE p AS SELECT $1", PGT_STMT_UTILITY, false},
    {"EXECUTE p(1)", PGT_STMT_UTILITY, true},
    {"DEALLOCATE p", PGT_STMT_UTILITY, false},
    {"DECLARE c CURSOR FOR SELECT 1", PGT_STMT_UTILITY, true},
    {"FETCH 10 FROM c", PGT_STMT_UTILITY, false},
    {"CLOSE c", PGT_STMT_UTILITY, false},
    {"LOCK TABLE t IN ACCESS EXCLUSIVE MODE", PGT_STMT_UTILITY, false},
    {"CHECKPOINT", PGT_STMT_UTILITY, false},
    {"BEGIN", PGT_STMT_TRANSACTION, false},
    {"START TRANSACTION ISOLATION LEVEL SERIALIZABLE", PGT_STMT_TRANSACTION, false},
    {"COMMIT", PGT_STMT_TRANSACTION, false},
    {"END", PGT_STMT_TRANSACTION, false},
    {"ROLLBACK", PGT_STMT_TRANSACTION, false},
    {"ABORT", PGT_STMT_TRANSACTION, false},
    {"SAVEPOINT s", PGT_STMT_TRANSACTION, false},
    {"RELEASE SAVEPOINT s", PGT_STMT_TRANSACTION, false},
    {"ROLLBACK TO SAVEPOINT s", PGT_STMT_TRANSACTION, false},
    {"PREPARE /* c */ TRANSACTION 'x'", PGT_STMT_TRANSACTION, false},
    {"COMMIT PREPARED 'x'", PGT_STMT_TRANSACTION, false},
    {"EXPLAIN SELECT 1", PGT_STMT_EXPLAIN, false},
    {"EXPLAIN (ANALYZE) DELETE FROM t", PGT_STMT_EXPLAIN, false},
    {"CALL p(1)", PGT_STMT_CALL, false},
    {"DO $$BEGIN END$$", PGT_STMT_CALL, false},
    {"selec 1", PGT_STMT_UNPARSED, false},
    {"SELECT 'unterminated", PGT_STMT_UNPARSED, false},
};

/* Each case through both pgt_fp_split and pgt_fp_shape, which must agree. */
static void test_classify_table(void)
{
    pgt_fp_cache_t *c = pgt_fp_cache_new(64);
    for (size_t i = 0; i < COUNTOF(class_cases); i++) {
        const struct class_case *k = &class_cases[i];
        pgt_stmt_t st[4];
        int n = pgt_fp_split(k->sql, st, 4);
        pgt_shape_t sh;
        char *text = heap_copy(k->sql, strlen(k->sql));
        int rc = pgt_fp_shape(c, text, strlen(k->sql), &sh);
        free(text);
        if (n != 1 || st[0].kind != k->kind || st[0].explainable != k->explainable || rc != 0 ||
            sh.kind != k->kind || sh.explainable != k->explainable)
            fprintf(stderr, "case %zu: %s\n", i, k->sql);
        CHECK_INT(n, 1);
        CHECK_STR(pgt_stmt_kind_name(st[0].kind), pgt_stmt_kind_name(k->kind));
        CHECK_INT(st[0].explainable, k->explainable);
        CHECK_INT(rc, 0);
        CHECK_STR(pgt_stmt_kind_name(sh.kind), pgt_stmt_kind_name(k->kind));
        CHECK_INT(sh.explainable, k->explainable);
    }
    pgt_fp_cache_free(c);
}

/* A query string and the statements it holds. */
static const struct split_case {
    const char *sql;         /* the query string */
    int n;                   /* statements expected */
    const char *stmts[4];    /* their text */
    pgt_stmt_kind_t kind[4]; /* their kinds */
} split_cases[] = {
    {"select 1; select 2", 2, {"select 1", "select 2"}, {PGT_STMT_SELECT, PGT_STMT_SELECT}},
    {"select 'a;b'; select $$c;d$$; select $t$ ; $t$",
     3,
     {"select 'a;b'", "select $$c;d$$", "select $t$ ; $t$"},
     {PGT_STMT_SELECT, PGT_STMT_SELECT, PGT_STMT_SELECT}},
    {"select 1 /* ; */ ;\n-- x;\nselect 2",
     2,
     {"select 1 /* ; */", "-- x;\nselect 2"},
     {PGT_STMT_SELECT, PGT_STMT_SELECT}},
    {"select E'x\\';y'; select \"a;b\" from t",
     2,
     {"select E'x\\';y'", "select \"a;b\" from t"},
     {PGT_STMT_SELECT, PGT_STMT_SELECT}},
    {"BEGIN; UPDATE t SET a = 1; COMMIT;",
     3,
     {"BEGIN", "UPDATE t SET a = 1", "COMMIT"},
     {PGT_STMT_TRANSACTION, PGT_STMT_UPDATE, PGT_STMT_TRANSACTION}},
    {"select 1;;; select 2 ;", 2, {"select 1", "select 2"}, {PGT_STMT_SELECT, PGT_STMT_SELECT}},
    {"CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2); select 3",
     2,
     {"CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2)", "select 3"},
     {PGT_STMT_DDL, PGT_STMT_SELECT}},
    /* A syntax error anywhere: PostgreSQL runs none of it. */
    {" selec 1; select 2 ", 1, {"selec 1; select 2"}, {PGT_STMT_UNPARSED}},
    {"select 'open; select 2", 1, {"select 'open; select 2"}, {PGT_STMT_UNPARSED}},
    {"", 0, {NULL}, {0}},
    {"   \n\t", 0, {NULL}, {0}},
    {"  /* only */ ; -- x\n", 0, {NULL}, {0}},
    {";", 0, {NULL}, {0}},
};

static void test_split_table(void)
{
    for (size_t i = 0; i < COUNTOF(split_cases); i++) {
        const struct split_case *k = &split_cases[i];
        pgt_stmt_t st[8];
        int n = pgt_fp_split(k->sql, st, 8);
        if (n != k->n)
            fprintf(stderr, "case %zu: %s\n", i, k->sql);
        CHECK_INT(n, k->n);
        for (int j = 0; j < n && j < k->n; j++) {
            char buf[256];
            snprintf(buf, sizeof(buf), "%.*s", (int)st[j].length, k->sql + st[j].offset);
            CHECK_STR(buf, k->stmts[j]);
            CHECK_STR(pgt_stmt_kind_name(st[j].kind), pgt_stmt_kind_name(k->kind[j]));
        }
    }
}

static void test_split_limits(void)
{
    pgt_stmt_t st[2];
    CHECK_INT(pgt_fp_split("select 1; select 2; select 3", st, 2), 2);
    CHECK_INT(st[1].offset, 10);
    CHECK_INT(pgt_fp_split("select 1", st, 0), 0);
    CHECK_INT(pgt_fp_split(NULL, st, 2), 0);
}

/* Shapes a heap copy of sql (no NUL) and returns the normalized text. */
static const char *shape_of(pgt_fp_cache_t *c, const char *sql, pgt_shape_t *sh)
{
    char *text = heap_copy(sql, strlen(sql));
    int rc = pgt_fp_shape(c, text, strlen(sql), sh);
    free(text);
    CHECK_INT(rc, 0);
    return rc == 0 ? sh->normalized : NULL;
}

static void test_same_shape(void)
{
    pgt_fp_cache_t *c = pgt_fp_cache_new(16);
    pgt_shape_t a, b, d;
    CHECK_STR(shape_of(c, "SELECT * FROM t WHERE id = 1", &a), "SELECT * FROM t WHERE id = $1");
    shape_of(c, "SELECT * FROM t WHERE id = 2", &b);
    shape_of(c, "SELECT * FROM t WHERE id > 1", &d);
    CHECK(a.fingerprint == b.fingerprint);
    CHECK(a.fingerprint != d.fingerprint);
    CHECK_STR(b.normalized, "SELECT * FROM t WHERE id = $1");
    CHECK_STR(d.normalized, "SELECT * FROM t WHERE id > $1");
    /* Only the leading len bytes count. */
    char *text = heap_copy("SELECT 1xyz", 11);
    CHECK_INT(pgt_fp_shape(c, text, 8, &a), 0);
    CHECK_STR(a.normalized, "SELECT $1");
    free(text);
    pgt_fp_cache_free(c);
}

/* Comments leave the normalized text (sqlcommenter values change per
 * request); constants become $n. */
static void test_normalized_text(void)
{
    static const struct {
        const char *sql;  /* statement */
        const char *want; /* normalized */
    } cases[] = {
        {"SELECT a FROM t WHERE b = 'x' /*app='x',traceparent='00-1'*/",
         "SELECT a FROM t WHERE b = $1"},
        {"select /* hint */ 1", "select $1"},
        {"select/*x*/1", "select $1"},
        {"-- lead\nINSERT INTO t VALUES (1, 'two', 3.0)", "INSERT INTO t VALUES ($1, $2, $3)"},
        {"  UPDATE t SET a = 'secret' WHERE id = 7  ", "UPDATE t SET a = $1 WHERE id = $2"},
        {"  -- nothing\n", ""},
        /* String constants libpg_query leaves in utility statements. */
        {"COMMENT ON TABLE t IS 'secret'", "COMMENT ON TABLE t IS $1"},
        {"CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (password 'pw')",
         "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (password $1)"},
        {"COPY t FROM '/home/alice/x.csv'", "COPY t FROM $1"},
        {"CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql",
         "CREATE FUNCTION f() RETURNS int AS $1 LANGUAGE sql"},
        {"ALTER ROLE u PASSWORD 'hunter2'", "ALTER ROLE u PASSWORD $1"},
        {"SELECT 'a', $1, E'b' FROM t WHERE x = $5", "SELECT $6, $1, $7 FROM t WHERE x = $5"},
    };
    pgt_fp_cache_t *c = pgt_fp_cache_new(16);
    for (size_t i = 0; i < COUNTOF(cases); i++) {
        pgt_shape_t sh;
        CHECK_STR(shape_of(c, cases[i].sql, &sh), cases[i].want);
    }
    pgt_shape_t sh;
    shape_of(c, "  -- nothing\n", &sh);
    CHECK_INT(sh.kind, PGT_STMT_EMPTY);
    pgt_fp_cache_free(c);
}

static void test_long_normalized(void)
{
    size_t cap = 100000, n = 0;
    char *sql = malloc(cap);
    n += (size_t)snprintf(sql, cap, "SELECT * FROM t WHERE id IN (0");
    for (int i = 1; i < 5000; i++)
        n += (size_t)snprintf(sql + n, cap - n, ",%d", i);
    n += (size_t)snprintf(sql + n, cap - n, ")");
    pgt_fp_cache_t *c = pgt_fp_cache_new(4);
    pgt_shape_t sh;
    CHECK_INT(pgt_fp_shape(c, sql, n, &sh), 0);
    CHECK_INT(sh.kind, PGT_STMT_SELECT);
    CHECK(strlen(sh.normalized) <= PGT_FP_NORMALIZED_MAX);
    CHECK(strncmp(sh.normalized, "SELECT * FROM t WHERE id IN ($1,$2,", 35) == 0);
    free(sql);
    pgt_fp_cache_free(c);
}

static void test_unparsed(void)
{
    pgt_fp_cache_t *c = pgt_fp_cache_new(16);
    pgt_shape_t a, b, d;
    shape_of(c, "selec 'alice@example.com'", &a);
    shape_of(c, "selec 'alice@example.com'", &b);
    shape_of(c, "selec 'bob@example.com'", &d);
    CHECK_INT(a.kind, PGT_STMT_UNPARSED);
    CHECK_INT(a.explainable, false);
    CHECK(a.fingerprint == b.fingerprint);
    CHECK(a.fingerprint != d.fingerprint);
    CHECK_STR(a.normalized, "selec 'alice@example.com'");
    /* Only the first 200 bytes are kept, cut on a UTF-8 boundary. */
    char big[1000];
    memset(big, 'x', sizeof(big));
    memcpy(big, "selec ", 6);
    memcpy(big + 199, "\xc3\xa9", 2); /* é across byte 200 */
    CHECK_INT(pgt_fp_shape(c, big, sizeof(big), &a), 0);
    CHECK_INT(a.kind, PGT_STMT_UNPARSED);
    CHECK_INT(strlen(a.normalized), 199);
    /* A NUL inside the text cannot be handed to libpg_query. */
    CHECK_INT(pgt_fp_shape(c, "SELECT 1\0 2", 11, &a), 0);
    CHECK_INT(a.kind, PGT_STMT_UNPARSED);
    CHECK_INT(strlen(a.normalized), 8);
    pgt_fp_cache_free(c);
}

/* normalize runs once per fingerprint; a text seen before is not parsed. */
static void test_cache_counts(void)
{
    pgt_fp_cache_t *c = pgt_fp_cache_new(128);
    char sql[64];
    pgt_shape_t sh;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 50; i++) {
            snprintf(sql, sizeof(sql), "SELECT * FROM t WHERE id = %d", i);
            CHECK_STR(shape_of(c, sql, &sh), "SELECT * FROM t WHERE id = $1");
        }
    }
    pgt_fp_stats_t s;
    pgt_fp_cache_stats(c, &s);
    CHECK_INT(s.calls, 100);
    CHECK_INT(s.normalizes, 1);
    /* A data statement's constants do not make a new text: one parse. */
    CHECK_INT(s.fingerprints, 1);
    CHECK_INT(s.text_hits, 99);
    CHECK_INT(s.shapes, 1);
    CHECK_INT(s.texts, 1);
    /* Other statements are keyed by their exact text. */
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 10; i++) {
            snprintf(sql, sizeof(sql), "COMMENT ON TABLE t IS 'v%d'", i);
            CHECK(shape_of(c, sql, &sh) != NULL);
        }
    }
    pgt_fp_cache_stats(c, &s);
    CHECK_INT(s.fingerprints, 11);
    CHECK_INT(s.texts, 11);
    pgt_fp_cache_free(c);
}

/* Texts that differ only in constants share a key in the text table; the
 * fingerprint found through it is the one a fresh parse gives, also for
 * texts the key must tell apart (quoted names, comments, odd strings). */
static void test_constants_share_a_text(void)
{
    static const char *const texts[] = {
        "SELECT * FROM t WHERE a = 1 AND b = 'x'",
        "SELECT * FROM t WHERE a = 22 AND b = 'it''s'",
        "SELECT * FROM t WHERE a = 3.5e10 AND b = ''",
        "select * from t where a = -7 and b = 'y' -- it's a comment 5",
        "SELECT * FROM t WHERE a = 1 AND b = 'x' /* it's 'quoted' */",
        "SELECT * FROM \"t1\" WHERE a = 1",
        "SELECT * FROM \"t2\" WHERE a = 1",
        "SELECT * FROM \"t\"\"3\" WHERE a = 1",
        "SELECT * FROM t1 WHERE a = 1",
        "SELECT * FROM t2 WHERE a = 1",
        "SELECT * FROM t WHERE a = $1 AND b = 5",
        "SELECT * FROM t WHERE a = $2 AND b = 6",
        "SELECT E'\\n', 1",
        "SELECT $$x$$, 1",
        "SELECT $q$x$q$, 2",
        "UPDATE t SET a = a + 1 WHERE id = 9",
        "UPDATE t SET a = a + 2 WHERE id = 10",
        "WITH x AS (SELECT 1) SELECT * FROM x LIMIT 5",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        "INSERT INTO t VALUES (1, 'a')",
        "SELECT 1 /* a /* nested */ comment */",
        "DELETE FROM t WHERE a IN (1, 2, 3)",
    };
    pgt_fp_cache_t *shared = pgt_fp_cache_new(64);
    for (size_t i = 0; i < COUNTOF(texts); i++) {
        pgt_fp_cache_t *fresh = pgt_fp_cache_new(4);
        pgt_shape_t a, b;
        shape_of(shared, texts[i], &a);
        shape_of(fresh, texts[i], &b);
        if (a.fingerprint != b.fingerprint || a.kind != b.kind)
            fprintf(stderr, "text %zu: %s\n", i, texts[i]);
        CHECK(a.fingerprint == b.fingerprint);
        CHECK_INT(a.kind, b.kind);
        pgt_fp_cache_free(fresh);
    }
    pgt_fp_stats_t s;
    pgt_fp_cache_stats(shared, &s);
    CHECK(s.text_hits >= 2); /* texts 1 and 16 */
    pgt_fp_cache_free(shared);
}

/* A small cache stays within its bounds and still answers correctly. */
static void test_lru_eviction(void)
{
    pgt_fp_cache_t *c = pgt_fp_cache_new(4);
    char sql[64], want[64];
    pgt_shape_t sh;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 20; i++) {
            snprintf(sql, sizeof(sql), "SELECT a FROM t_%c WHERE id = %d", 'a' + i, round);
            snprintf(want, sizeof(want), "SELECT a FROM t_%c WHERE id = $1", 'a' + i);
            CHECK_STR(shape_of(c, sql, &sh), want);
            pgt_fp_stats_t s;
            pgt_fp_cache_stats(c, &s);
            CHECK(s.shapes <= 4);
            CHECK(s.texts <= 4);
        }
    }
    /* The most recent entries survive: t_t is answered from the cache.
     * (Table names differ by letters: libpg_query's fingerprint ignores
     * runs of digits in relation names, so t10 and t11 are one shape.) */
    pgt_fp_stats_t before, after;
    pgt_fp_cache_stats(c, &before);
    CHECK_STR(shape_of(c, "SELECT a FROM t_t WHERE id = 2", &sh),
              "SELECT a FROM t_t WHERE id = $1");
    pgt_fp_cache_stats(c, &after);
    CHECK_INT(after.text_hits, before.text_hits + 1);
    CHECK_INT(after.normalizes, before.normalizes);
    CHECK(after.evictions > 0);
    CHECK_INT(after.normalizes, 60);
    pgt_fp_cache_free(c);
}

/* A text and the comments the scanner finds in it, as "start-end" pairs. */
static const struct comment_case {
    const char *sql;   /* the text */
    const char *spans; /* expected spans, space-separated */
} comment_cases[] = {
    {"SELECT 1", ""},
    {"/* a */ SELECT 1 -- b", "0-7 17-21"},
    {"SELECT '/* no */' /* /* nested */ */", "18-36"},
    {"SELECT 1 /* a */ /* b */", "9-16 17-24"},
};

static void test_comments_table(void)
{
    for (size_t i = 0; i < COUNTOF(comment_cases); i++) {
        pgt_fp_span_t *v;
        size_t n;
        CHECK_INT(pgt_fp_comments(comment_cases[i].sql, &v, &n), 0);
        char got[128] = "";
        for (size_t k = 0; k < n; k++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%zu-%zu", k ? " " : "",
                     v[k].start, v[k].end);
        CHECK_STR(got, comment_cases[i].spans);
        free(v);
    }
    pgt_fp_span_t *v;
    size_t n;
    CHECK_INT(pgt_fp_comments("SELECT 'unterminated /* a */", &v, &n), -1);
    CHECK(v == NULL && n == 0);
}

/* A query string and whether budgets never refuse it. */
static const struct never_case {
    const char *sql; /* the query string */
    bool never;      /* expected pgt_fp_never_refused */
} never_cases[] = {
    {"BEGIN", true},
    {"begin isolation level serializable", true},
    {"START TRANSACTION", true},
    {"Commit", true},
    {"END", true},
    {"ROLLBACK TO SAVEPOINT a", true},
    {"abort", true},
    {"SAVEPOINT a", true},
    {"RELEASE SAVEPOINT a", true},
    {"SET work_mem = '64MB'", true},
    {"set local statement_timeout = 0;", true},
    {"SHOW ALL", true},
    {"RESET ALL", true},
    {"DISCARD ALL", true},
    {"DEALLOCATE ALL", true},
    {"CLOSE c", true},
    {"LISTEN ch", true},
    {"UNLISTEN *", true},
    {"COMMIT PREPARED 'x'", true},
    {"SELECT 1", false},
    {"select 1;", false},
    {"INSERT INTO t VALUES (1)", false},
    {"PREPARE TRANSACTION 'x'", false},
    {"PREPARE p AS SELECT 1", false},
    {"NOTIFY ch", false},
    {"(SELECT 1)", false},
    {"setx = 1", false},
    {"set1", false},
    /* Comments before the first word, as scan.l reads them. */
    {"-- SELECT\nSET a = 1", true},
    {"-- SET\nSELECT 1", false},
    {"/* SELECT */ SET a = 1", true},
    {"/* SET */ SELECT 1", false},
    {"/* /* */ SET */ SELECT 1", false}, /* nested: the SET is inside the comment */
    {"/* /* SELECT */ */ SET a = 1", true},
    {"  \t\r\n BEGIN", true},
    /* Several statements: all must be free. */
    {"BEGIN; SET a = 1; COMMIT", true},
    {"SET a = 1; SELECT 1", false},
    {"SELECT 1; SET a = 1", false},
    {"SET a = ';'; SHOW a", true},
    {"SET a = 1; /* ; */ SHOW a;", true},
    {"SET a = 1; PREPARE TRANSACTION 'x'", false},
    {"BEGIN; SELEC 1", true}, /* unparsed: one statement, judged by its first word */
    {"SELEC 1; BEGIN", false},
    /* No statement at all: nothing to refuse. */
    {"", true},
    {"  ", true},
    {";", true},
    {"/* only a comment */", true},
    {"-- only a comment", true},
    {"/* unterminated SET", false},
};

static void test_never_refused_table(void)
{
    for (size_t i = 0; i < COUNTOF(never_cases); i++) {
        size_t n = strlen(never_cases[i].sql);
        char *text = heap_copy(never_cases[i].sql, n);
        bool got = pgt_fp_never_refused(text, n);
        free(text);
        if (got != never_cases[i].never) {
            fprintf(stderr, "case %zu: \"%s\" gave %d\n", i, never_cases[i].sql, got);
            CHECK(got == never_cases[i].never);
        }
    }
}

/* Up to 15 free statements are looked at; 16 or more give false. */
static void test_never_refused_limit(void)
{
    char sql[512] = "";
    for (int i = 0; i < 15; i++)
        strcat(sql, "SET a = 1; ");
    CHECK(pgt_fp_never_refused(sql, strlen(sql)));
    strcat(sql, "SHOW a");
    CHECK(!pgt_fp_never_refused(sql, strlen(sql)));
}

/* PREPARE and DEALLOCATE statements of a query string, as the parser reads
 * them: name (folded, unquoted), and for PREPARE the text after AS. */
static const struct prep_case {
    const char *sql;
    int n;            /* statements found */
    int op;           /* the first one's op */
    const char *name; /* its name */
    const char *body; /* PREPARE: its statement, or NULL */
} prep_cases[] = {
    {"PREPARE p AS SELECT pg_sleep(2)", 1, PGT_PREP_PREPARE, "p", "SELECT pg_sleep(2)"},
    {"prepare P(int, text) as select $1, $2 ;", 1, PGT_PREP_PREPARE, "p", "select $1, $2"},
    {"PREPARE \"My As\" AS SELECT 'as' AS as_", 1, PGT_PREP_PREPARE, "My As", "SELECT 'as' AS as_"},
    {"/* as */ PREPARE q -- as\n AS\n\tSELECT 1", 1, PGT_PREP_PREPARE, "q", "SELECT 1"},
    {"SELECT 1; PREPARE b AS SELECT 2; SELECT 3", 1, PGT_PREP_PREPARE, "b", "SELECT 2"},
    {"DEALLOCATE p", 1, PGT_PREP_DEALLOCATE, "p", NULL},
    {"deallocate prepare \"P\"", 1, PGT_PREP_DEALLOCATE, "P", NULL},
    {"DEALLOCATE ALL", 1, PGT_PREP_DEALLOCATE_ALL, "", NULL},
    {"DEALLOCATE a; PREPARE a AS SELECT 1", 2, PGT_PREP_DEALLOCATE, "a", NULL},
    {"PREPARE TRANSACTION 'x'", 0, 0, NULL, NULL},
    {"SELECT 'prepare p as select 1'", 0, 0, NULL, NULL},
    {"PREPARE p AS SELEC 1", 0, 0, NULL, NULL},
    {"EXECUTE p", 0, 0, NULL, NULL},
    {"", 0, 0, NULL, NULL},
    /* Cursors are portals: DECLARE gives the query an Execute of it runs. */
    {"DECLARE c CURSOR FOR SELECT pg_sleep(2)", 1, PGT_PREP_DECLARE, "c", "SELECT pg_sleep(2)"},
    {"declare \"My Cur\" binary no scroll cursor with hold for select 1 ;", 1, PGT_PREP_DECLARE,
     "My Cur", "select 1"},
    {"DECLARE c CURSOR FOR SELECT 'for' FROM t", 1, PGT_PREP_DECLARE, "c", "SELECT 'for' FROM t"},
    {"CLOSE c", 1, PGT_PREP_CLOSE, "c", NULL},
    {"CLOSE ALL", 1, PGT_PREP_CLOSE_ALL, "", NULL},
    {"SELECT close_price FROM quotes", 0, 0, NULL, NULL},
};

static void test_prepares_table(void)
{
    for (size_t i = 0; i < sizeof(prep_cases) / sizeof(prep_cases[0]); i++) {
        const struct prep_case *k = &prep_cases[i];
        pgt_prep_t out[4];
        int n = pgt_fp_prepares(k->sql, out, 4);
        CHECK_INT(n, k->n);
        if (n == 0)
            continue;
        CHECK_INT(out[0].op, k->op);
        CHECK_STR(out[0].name, k->name);
        if (k->body) {
            char body[128];
            snprintf(body, sizeof(body), "%.*s", (int)out[0].body_length,
                     k->sql + out[0].body_offset);
            CHECK_STR(body, k->body);
        }
    }
    /* The second of two, and a name cut to 63 bytes as the server cuts it. */
    pgt_prep_t out[2];
    CHECK_INT(pgt_fp_prepares("DEALLOCATE a; PREPARE a AS SELECT 1", out, 2), 2);
    CHECK_INT(out[1].op, PGT_PREP_PREPARE);
    CHECK_STR(out[1].name, "a");
    CHECK_INT(pgt_fp_prepares("DEALLOCATE a; DEALLOCATE b", out, 1), 1);
    char sql[200], name[80];
    memset(name, 'n', 70);
    name[70] = 0;
    snprintf(sql, sizeof(sql), "PREPARE %s AS SELECT 1", name);
    CHECK_INT(pgt_fp_prepares(sql, out, 1), 1);
    CHECK_INT(strlen(out[0].name), 63);
    CHECK_INT(pgt_fp_prepares(NULL, out, 1), 0);
    /* A cursor WITH HOLD outlives its transaction. */
    CHECK_INT(pgt_fp_prepares("DECLARE h CURSOR WITH HOLD FOR SELECT 1", out, 1), 1);
    CHECK(out[0].hold);
    CHECK_INT(pgt_fp_prepares("DECLARE w CURSOR WITHOUT HOLD FOR SELECT 1", out, 1), 1);
    CHECK(!out[0].hold);
    /* What runs by name, apart: EXECUTE, FETCH and MOVE, not the others. */
    CHECK_INT(pgt_fp_prepares("EXECUTE a(1)", out, 2), 0);
    CHECK_INT(pgt_fp_runs_named("PREPARE a AS SELECT 1; EXECUTE \"A\"(1)", out, 2), 1);
    CHECK_INT(out[0].op, PGT_PREP_EXECUTE);
    CHECK_STR(out[0].name, "A");
    CHECK_INT(pgt_fp_runs_named("FETCH 5 FROM c; MOVE LAST IN d", out, 2), 2);
    CHECK_INT(out[0].op, PGT_PREP_FETCH);
    CHECK_STR(out[1].name, "d");
    CHECK_INT(pgt_fp_runs_named("SELECT 'execute' AS moved", out, 2), 0);
}

/* Statements run inside others: where the inner one is, or none. */
static void test_inner_table(void)
{
    static const struct {
        const char *sql;
        const char *inner; /* NULL: none */
    } cases[] = {
        {"EXPLAIN ANALYZE SELECT a FROM t WHERE b = 1", "SELECT a FROM t WHERE b = 1"},
        {"explain analyse verbose select 1;", "select 1"},
        {"EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t", "DELETE FROM t"},
        {"EXPLAIN (analyze on, costs off) SELECT 1", "SELECT 1"},
        {"EXPLAIN (ANALYZE false) SELECT 1", NULL},
        {"EXPLAIN (ANALYZE 0) SELECT 1", NULL},
        {"EXPLAIN SELECT 1", NULL},
        {"CREATE TABLE x (a) AS SELECT a FROM t /* c */", "SELECT a FROM t"},
        {"CREATE TEMP TABLE x AS WITH w AS (SELECT 1) SELECT * FROM w WITH DATA",
         "WITH w AS (SELECT 1) SELECT * FROM w"},
        {"CREATE TABLE x AS SELECT 1 WITH NO DATA", NULL},
        {"CREATE MATERIALIZED VIEW v AS SELECT count(*) FROM t", "SELECT count(*) FROM t"},
        {"COPY (SELECT a FROM t) TO STDOUT WITH (FORMAT csv)", "SELECT a FROM t"},
        {"COPY t TO STDOUT", NULL},
        {"SELECT created_at FROM copy_log", NULL},
        {"EXPLAIN ANALYZE", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgt_stmt_t out[2];
        int n = pgt_fp_inner(cases[i].sql, out, 2);
        CHECK_INT(n, cases[i].inner ? 1 : 0);
        if (n == 1 && cases[i].inner) {
            char got[128];
            snprintf(got, sizeof(got), "%.*s", (int)out[0].length, cases[i].sql + out[0].offset);
            CHECK_STR(got, cases[i].inner);
        }
    }
    /* The second statement of two. */
    pgt_stmt_t out[2];
    CHECK_INT(pgt_fp_inner("SELECT 1; COPY (SELECT 2) TO STDOUT", out, 2), 1);
    CHECK_INT(out[0].offset, 16);
    CHECK_INT(pgt_fp_inner(NULL, out, 2), 0);
}

/* The relations a statement names, as the ledger keeps them. */
static void test_relations_table(void)
{
    static const struct {
        const char *sql;       /* the statement */
        const char *relations; /* pgt_fp_relations_json, or NULL */
    } cases[] = {
        {"SELECT * FROM analytics.sales", "[[\"analytics\", \"sales\", 1.0]]"},
        {"SELECT * FROM sales", "[[\"\", \"sales\", 1.0]]"},
        {"SELECT s.id FROM analytics.sales s JOIN raw_data.events e ON e.id = s.id",
         "[[\"analytics\", \"sales\", 0.5], [\"raw_data\", \"events\", 0.5]]"},
        /* Each relation once, however often it is named. */
        {"SELECT * FROM a.t x JOIN a.t y ON true WHERE x.id IN (SELECT id FROM a.t)",
         "[[\"a\", \"t\", 1.0]]"},
        /* Even shares of four decimals, the first taking the rest. */
        {"SELECT 1 FROM a, b, c", "[[\"\", \"a\", 0.3334], [\"\", \"b\", 0.3333], "
                                  "[\"\", \"c\", 0.3333]]"},
        /* A WITH query is not a relation; what it reads is. */
        {"WITH x AS (SELECT * FROM analytics.sales) SELECT * FROM x JOIN analytics.stores s ON "
         "true",
         "[[\"analytics\", \"sales\", 0.5], [\"analytics\", \"stores\", 0.5]]"},
        {"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
         "SELECT * FROM r",
         NULL},
        /* ... but a qualified name of the same spelling is a table. */
        {"WITH t AS (SELECT 1) SELECT * FROM t, public.t", "[[\"public\", \"t\", 1.0]]"},
        /* Written relations count too, with what the statement reads. */
        {"INSERT INTO raw_data.events SELECT * FROM analytics.sales",
         "[[\"raw_data\", \"events\", 0.5], [\"analytics\", \"sales\", 0.5]]"},
        {"UPDATE t SET a = 1 FROM u WHERE t.id = u.id", "[[\"\", \"t\", 0.5], [\"\", \"u\", 0.5]]"},
        {"DELETE FROM archive.old WHERE id = 1", "[[\"archive\", \"old\", 1.0]]"},
        {"COPY adhoc.x TO STDOUT", "[[\"adhoc\", \"x\", 1.0]]"},
        /* Quoted names keep their case; unquoted ones are folded. */
        {"SELECT * FROM \"Raw\".\"Events\", Analytics.Sales",
         "[[\"Raw\", \"Events\", 0.5], [\"analytics\", \"sales\", 0.5]]"},
        /* A database name in front is not the schema's. */
        {"SELECT * FROM db.s.t", "[[\"s\", \"t\", 1.0]]"},
        {"SELECT 1", NULL},
        {"SELECT * FROM generate_series(1, 3)", NULL},
        {"BEGIN", NULL},
        {"SELEC nonsense FROM", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i].sql);
        char *copy = heap_copy(cases[i].sql, len);
        char *got = pgt_fp_relations_json(copy, len);
        /* Compare as jansson prints the expected text, so that the test
         * says nothing of white space. */
        if (!cases[i].relations) {
            CHECK(got == NULL);
        } else {
            CHECK(got != NULL);
            char *want = NULL;
            json_t *j = json_loads(cases[i].relations, 0, NULL);
            want = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
            json_decref(j);
            CHECK_STR(got, want);
            free(want);
        }
        free(got);
        free(copy);
    }
    /* Past 16 relations, the first 16 named are kept. */
    char sql[512] = "SELECT 1 FROM t0";
    for (int i = 1; i < 20; i++)
        snprintf(sql + strlen(sql), sizeof(sql) - strlen(sql), ", t%d", i);
    char *got = pgt_fp_relations_json(sql, strlen(sql));
    json_t *j = got ? json_loads(got, 0, NULL) : NULL;
    CHECK_INT(json_array_size(j), 16);
    double sum = 0;
    for (size_t i = 0; i < json_array_size(j); i++)
        sum += json_number_value(json_array_get(json_array_get(j, i), 2));
    CHECK(sum > 0.99995 && sum < 1.00005);
    CHECK_STR(json_string_value(json_array_get(json_array_get(j, 15), 1)), "t15");
    json_decref(j);
    free(got);
    CHECK(pgt_fp_relations_json(NULL, 0) == NULL);
}

int main(void)
{
    test_kind_names();
    test_classify_table();
    test_split_table();
    test_split_limits();
    test_same_shape();
    test_normalized_text();
    test_long_normalized();
    test_unparsed();
    test_cache_counts();
    test_constants_share_a_text();
    test_lru_eviction();
    test_comments_table();
    test_never_refused_table();
    test_never_refused_limit();
    test_prepares_table();
    test_inner_table();
    test_relations_table();
    TASK_DONE();
}
