/* Statements that name or hold other statements, for the fingerprint
 * module (include/pgtally/fingerprint.h): PREPARE, DEALLOCATE, DECLARE and
 * CLOSE; EXECUTE, FETCH and MOVE; and those that run a statement written
 * inside them (EXPLAIN ANALYZE, CREATE TABLE AS, COPY (query) TO). The
 * parse is libpg_query's; the bodies are found by its tokens. */
#include "pgtally/fingerprint.h"

#include <jansson.h>
#include <pg_query.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fingerprint_int.h"

/* ---- PREPARE and DEALLOCATE ----------------------------------------------- */

/* Whether s holds PREPARE, DEALLOCATE, DECLARE or CLOSE (runs false), or
 * EXECUTE, FETCH or MOVE (runs true), in any case: the cheap test in front
 * of the parser, one pass over the text. */
static bool holds_prep_word(const char *s, bool runs)
{
    for (; *s; s++) {
        if (runs) {
            char c = (char)(*s | 0x20);
            if ((c == 'e' && pgt__fp_word_eq(s, 7, "execute")) ||
                (c == 'f' && pgt__fp_word_eq(s, 5, "fetch")) ||
                (c == 'm' && pgt__fp_word_eq(s, 4, "move")))
                return true;
            continue;
        }
        switch (*s | 0x20) { /* ASCII letters in lower case; nothing else matches */
        case 'p':
            if (pgt__fp_word_eq(s, 7, "prepare"))
                return true;
            break;
        case 'd':
            if (pgt__fp_word_eq(s, 10, "deallocate") || pgt__fp_word_eq(s, 7, "declare"))
                return true;
            break;
        case 'c':
            if (pgt__fp_word_eq(s, 5, "close"))
                return true;
            break;
        default:
            break;
        }
    }
    return false;
}

/* The statement after the first word kw at depth 0 of stmt[0..len) (AS of
 * a PREPARE, whose argument types are in parentheses; FOR of a DECLARE,
 * a reserved word no cursor is named unquoted), as offsets into stmt. */
static bool prepare_body(const char *stmt, size_t len, const char *kw, size_t *off, size_t *blen)
{
    char *copy = pgt__fp_dup_nul(stmt, len);
    toks_t ts = {0};
    bool ok = copy && pgt__fp_scan_tokens(copy, len, KEEP_CODE, &ts) == 0;
    size_t i = ok ? pgt__fp_find_top(&ts, 0, kw) : 0;
    ok = ok && i + 1 < ts.n;
    if (ok) {
        *off = ts.v[i + 1].start;
        *blen = len - *off;
        pgt_fp_trim(stmt, off, blen);
    }
    free(ts.v);
    free(copy);
    return ok;
}

/* Where raw (one statement of the parse tree) is in a string of total
 * bytes. The tree leaves out a location of 0 and a length that runs to the
 * end. */
static bool raw_span(json_t *raw, size_t total, size_t *loc, size_t *len)
{
    json_int_t l = json_integer_value(json_object_get(raw, "stmt_location"));
    json_int_t n = json_integer_value(json_object_get(raw, "stmt_len"));
    if (l < 0 || (size_t)l > total || n < 0 || (size_t)n > total - (size_t)l)
        return false;
    *loc = (size_t)l;
    *len = n == 0 ? total - (size_t)l : (size_t)n;
    return true;
}

/* Reads one raw statement of the parse tree into out when it is an
 * EXECUTE, FETCH or MOVE. */
static bool run_of(json_t *raw, pgt_prep_t *out)
{
    json_t *stmt = json_object_get(raw, "stmt");
    json_t *exec = json_object_get(stmt, "ExecuteStmt");
    json_t *fetch = json_object_get(stmt, "FetchStmt");
    const char *name = json_string_value(json_object_get(exec ? exec : fetch, "name"));
    if (fetch)
        name = json_string_value(json_object_get(fetch, "portalname"));
    if (!name)
        return false;
    *out = (pgt_prep_t){.op = exec ? PGT_PREP_EXECUTE : PGT_PREP_FETCH};
    snprintf(out->name, sizeof(out->name), "%s", name);
    return true;
}

/* Reads one raw statement of the parse tree into out; false when it is
 * neither a PREPARE nor a DEALLOCATE. */
static bool prep_of(const char *sql, size_t total, json_t *raw, pgt_prep_t *out)
{
    json_t *stmt = json_object_get(raw, "stmt");
    json_t *prep = json_object_get(stmt, "PrepareStmt");
    json_t *dealloc = json_object_get(stmt, "DeallocateStmt");
    json_t *declare = json_object_get(stmt, "DeclareCursorStmt");
    json_t *close = json_object_get(stmt, "ClosePortalStmt");
    const char *name;
    if (prep || dealloc) {
        name = json_string_value(json_object_get(prep ? prep : dealloc, "name"));
        *out = (pgt_prep_t){.op = prep   ? PGT_PREP_PREPARE
                                  : name ? PGT_PREP_DEALLOCATE
                                         : PGT_PREP_DEALLOCATE_ALL};
    } else if (declare || close) {
        name = json_string_value(json_object_get(declare ? declare : close, "portalname"));
        *out = (pgt_prep_t){.op = declare ? PGT_PREP_DECLARE
                                  : name  ? PGT_PREP_CLOSE
                                          : PGT_PREP_CLOSE_ALL};
    } else {
        return false;
    }
    if (name)
        snprintf(out->name, sizeof(out->name), "%s", name);
    /* CURSOR_OPT_HOLD (parsenodes.h) */
    out->hold = declare && (json_integer_value(json_object_get(declare, "options")) & 0x0020);
    if (!prep && !declare)
        return true;
    size_t loc, len, off, blen;
    if (!name || !raw_span(raw, total, &loc, &len) ||
        !prepare_body(sql + loc, len, prep ? "as" : "for", &off, &blen))
        return false;
    out->body_offset = loc + off;
    out->body_length = blen;
    return true;
}

static int prep_scan(const char *sql, pgt_prep_t *out, int max, bool runs)
{
    if (!sql || !out || max <= 0 || !holds_prep_word(sql, runs))
        return 0;
    PgQueryParseResult r = pg_query_parse(sql);
    json_t *tree = r.error || !r.parse_tree ? NULL : json_loads(r.parse_tree, 0, NULL);
    pg_query_free_parse_result(r);
    json_t *stmts = json_object_get(tree, "stmts");
    size_t total = strlen(sql), i;
    json_t *raw;
    int n = 0;
    json_array_foreach(stmts, i, raw)
    {
        if (n < max && (runs ? run_of(raw, &out[n]) : prep_of(sql, total, raw, &out[n])))
            n++;
    }
    json_decref(tree);
    return n;
}

int pgt_fp_prepares(const char *sql, pgt_prep_t *out, int max)
{
    return prep_scan(sql, out, max, false);
}

int pgt_fp_runs_named(const char *sql, pgt_prep_t *out, int max)
{
    return prep_scan(sql, out, max, true);
}

/* ---- statements run inside others ----------------------------------------- */

/* Whether an EXPLAIN's options make it run its statement: ANALYZE, with
 * no value or one defGetBoolean reads as true. */
static bool explain_runs(json_t *explain)
{
    json_t *o;
    size_t i;
    json_array_foreach(json_object_get(explain, "options"), i, o)
    {
        json_t *d = json_object_get(o, "DefElem");
        const char *name = json_string_value(json_object_get(d, "defname"));
        if (!name || strcmp(name, "analyze") != 0)
            continue;
        json_t *arg = json_object_get(d, "arg");
        const char *sval =
            json_string_value(json_object_get(json_object_get(arg, "String"), "sval"));
        json_t *ival = json_object_get(arg, "Integer");
        if (!arg)
            return true;
        if (ival)
            return json_integer_value(json_object_get(ival, "ival")) != 0;
        return !sval || !(strcasecmp(sval, "false") == 0 || strcasecmp(sval, "off") == 0);
    }
    return false;
}

/* Where the statement inside stmt[0..len) starts and ends (the tokens
 * [from, to) of ts), for one of kind: 'E' after EXPLAIN's options, 'A'
 * after CREATE ... AS (without a final WITH DATA), 'C' inside COPY's
 * parentheses. */
static bool inner_tokens(const toks_t *ts, char kind, size_t *from, size_t *to)
{
    size_t i = 1, end = ts->n;
    if (kind == 'E') {
        if (pgt__fp_tok_ch(ts, i, '('))
            i = pgt__fp_skip_parens(ts, i);
        else
            while (pgt__fp_tok_kw(ts, i, "analyze") || pgt__fp_tok_kw(ts, i, "analyse") ||
                   pgt__fp_tok_kw(ts, i, "verbose"))
                i++;
    } else if (kind == 'A') {
        i = pgt__fp_find_top(ts, 0, "as") + 1;
        if (end >= i + 2 && pgt__fp_tok_kw(ts, end - 2, "with") &&
            pgt__fp_tok_kw(ts, end - 1, "data"))
            end -= 2;
    } else {
        if (!pgt__fp_tok_ch(ts, i, '('))
            return false;
        end = pgt__fp_skip_parens(ts, i) - 1;
        i++;
    }
    if (i >= end || end > ts->n)
        return false;
    *from = i;
    *to = end;
    return true;
}

/* The statement that raw (one of the parse tree's) runs inside it, as
 * offsets into sql[0..total). */
static bool inner_of(const char *sql, size_t total, json_t *raw, pgt_stmt_t *out)
{
    json_t *stmt = json_object_get(raw, "stmt");
    json_t *explain = json_object_get(stmt, "ExplainStmt");
    json_t *ctas = json_object_get(stmt, "CreateTableAsStmt");
    json_t *copy = json_object_get(stmt, "CopyStmt");
    char kind = explain && explain_runs(explain) ? 'E'
                : ctas && !json_is_true(json_object_get(json_object_get(ctas, "into"), "skipData"))
                    ? 'A'
                : copy && json_object_get(copy, "query") ? 'C'
                                                         : 0;
    if (!kind)
        return false;
    size_t loc, len;
    if (!raw_span(raw, total, &loc, &len))
        return false;
    char *text = pgt__fp_dup_nul(sql + loc, len);
    toks_t ts = {0};
    size_t from, to;
    bool ok = text && pgt__fp_scan_tokens(text, len, KEEP_CODE, &ts) == 0 &&
              inner_tokens(&ts, kind, &from, &to);
    if (ok) {
        out->offset = loc + ts.v[from].start;
        out->length = ts.v[to - 1].end - ts.v[from].start;
    }
    free(ts.v);
    free(text);
    return ok;
}

static bool holds_inner_word(const char *s)
{
    for (; *s; s++) {
        char c = (char)(*s | 0x20);
        if ((c == 'e' && pgt__fp_word_eq(s, 7, "explain")) ||
            (c == 'c' && pgt__fp_word_eq(s, 6, "create")) ||
            (c == 'c' && pgt__fp_word_eq(s, 4, "copy")))
            return true;
    }
    return false;
}

int pgt_fp_inner(const char *sql, pgt_stmt_t *out, int max)
{
    if (!sql || !out || max <= 0 || !holds_inner_word(sql))
        return 0;
    PgQueryParseResult r = pg_query_parse(sql);
    json_t *tree = r.error || !r.parse_tree ? NULL : json_loads(r.parse_tree, 0, NULL);
    pg_query_free_parse_result(r);
    size_t total = strlen(sql), i;
    json_t *raw;
    int n = 0;
    json_array_foreach(json_object_get(tree, "stmts"), i, raw)
    {
        if (n < max && inner_of(sql, total, raw, &out[n]))
            n++;
    }
    json_decref(tree);
    return n;
}
