/* Statement tags: reads a statement's sqlcommenter comment and its JSON
 * object comment (dbt's query comment) into one flat JSON object of
 * strings. The comments are found by libpg_query's scanner
 * (pgt_fp_comments); this file only reads their bodies. */
#include "pgtally/tags.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/fingerprint.h"

/* A comment body longer than this, or that gives more tags, is ignored:
 * the ledger keeps tags with every record. */
#define TAG_COMMENT_MAX 8192
#define TAG_PAIRS_MAX 64
/* Levels of JSON objects read (the comment's own is the first); deeper
 * objects are skipped. */
#define TAG_DEPTH_MAX 4
/* A flattened JSON name longer than this is skipped; pgtallyctl usage
 * --by tag:NAME takes names up to 200 bytes. */
#define TAG_NAME_MAX 200

/* ---- bytes ---------------------------------------------------------------- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* ---- sqlcommenter --------------------------------------------------------- */

static int hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes a sqlcommenter key or value s[0..n): the writer URL-encoded it,
 * then escaped meta characters (') with a backslash, so this undoes the
 * backslashes, then the %XX escapes. A '%' not followed by two hex digits
 * stays as it is. Returns a malloc'd string, or NULL when it would hold a
 * NUL or memory runs out. */
static char *tag_decode(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        o[m++] = s[i] == '\\' && i + 1 < n ? s[++i] : s[i];
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        int hi = i + 2 < m ? hex(o[i + 1]) : -1;
        int lo = i + 2 < m ? hex(o[i + 2]) : -1;
        if (o[i] == '%' && hi >= 0 && lo >= 0) {
            o[k++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            o[k++] = o[i];
        }
    }
    o[k] = '\0';
    if (memchr(o, '\0', k)) {
        free(o);
        return NULL;
    }
    return o;
}

/* A cursor over the text of one comment. */
typedef struct cur {
    const char *p;   /* next byte */
    const char *end; /* one past the last */
} cur_t;

static void cur_blank(cur_t *c)
{
    while (c->p < c->end && is_space(*c->p))
        c->p++;
}

static bool cur_take(cur_t *c, char ch)
{
    cur_blank(c);
    if (c->p == c->end || *c->p != ch)
        return false;
    c->p++;
    return true;
}

/* Reads key='value' into obj. Returns false when malformed. */
static bool tag_pair(cur_t *c, json_t *obj)
{
    cur_blank(c);
    const char *k = c->p;
    while (c->p < c->end && *c->p != '=' && *c->p != ',' && *c->p != '\'' && !is_space(*c->p))
        c->p++;
    size_t klen = (size_t)(c->p - k);
    if (klen == 0 || !cur_take(c, '=') || !cur_take(c, '\''))
        return false;
    const char *v = c->p;
    while (c->p < c->end && *c->p != '\'')
        c->p += *c->p == '\\' && c->end - c->p >= 2 ? 2 : 1;
    if (c->p == c->end)
        return false;
    size_t vlen = (size_t)(c->p - v);
    c->p++;
    char *key = tag_decode(k, klen), *val = tag_decode(v, vlen);
    /* json_string refuses invalid UTF-8; json_object_set_new takes js even
     * when it fails (on a key that is not UTF-8). */
    json_t *js = key && val ? json_string(val) : NULL;
    bool ok = js && json_object_set_new(obj, key, js) == 0;
    free(key);
    free(val);
    return ok;
}

/* The pairs of sqlcommenter comment body s[0..n) as a JSON object, or NULL
 * when it is malformed. */
static json_t *sqlcommenter_tags(const char *s, size_t n)
{
    if (n > TAG_COMMENT_MAX)
        return NULL;
    json_t *obj = json_object();
    if (!obj)
        return NULL;
    cur_t c = {s, s + n};
    bool ok = true;
    for (int pairs = 0; ok; pairs++) {
        ok = pairs < TAG_PAIRS_MAX && tag_pair(&c, obj);
        cur_blank(&c);
        if (c.p == c.end)
            break;
        ok = ok && cur_take(&c, ',');
    }
    if (!ok) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* ---- JSON comments (dbt) -------------------------------------------------- */

/* The text a string, number or boolean is kept as, malloc'd, or NULL when
 * memory runs out. */
static char *leaf_text(const json_t *v)
{
    if (json_is_string(v))
        return strdup(json_string_value(v));
    if (json_is_number(v) || json_is_boolean(v))
        return json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    return NULL;
}

/* A flattening in progress. */
typedef struct flat {
    json_t *out;                 /* the tags so far */
    int count;                   /* how many were set */
    char name[TAG_NAME_MAX + 1]; /* the dotted name of the object being read */
} flat_t;

/* Adds the members of obj, at depth (1 for the comment's own object) under
 * f->name[0..at), to f->out. Returns false when there are too many tags or
 * memory runs out. */
static bool flatten(flat_t *f, json_t *obj, int depth, size_t at)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        size_t klen = strlen(key);
        size_t end = at + (at ? 1 : 0) + klen;
        if (klen == 0 || end > TAG_NAME_MAX)
            continue;
        if (at)
            f->name[at] = '.';
        memcpy(f->name + end - klen, key, klen);
        f->name[end] = '\0';
        if (json_is_object(v)) {
            if (depth < TAG_DEPTH_MAX && !flatten(f, v, depth + 1, end))
                return false;
            continue;
        }
        if (json_is_null(v) || json_is_array(v))
            continue;
        if (++f->count > TAG_PAIRS_MAX)
            return false;
        char *text = leaf_text(v);
        json_t *js = text ? json_string(text) : NULL;
        free(text);
        /* json_object_set_new takes js even when it fails. */
        if (!js || json_object_set_new(f->out, f->name, js) != 0)
            return false;
    }
    return true;
}

/* The tags of JSON comment body s[0..n) as a flat JSON object, or NULL
 * when it is not a JSON object, gives too many tags, or memory runs out. */
static json_t *json_comment_tags(const char *s, size_t n)
{
    if (n > TAG_COMMENT_MAX)
        return NULL;
    json_t *doc = json_loadb(s, n, 0, NULL);
    flat_t f = {.out = json_is_object(doc) ? json_object() : NULL};
    bool ok = f.out && flatten(&f, doc, 1, 0);
    json_decref(doc);
    if (!ok) {
        json_decref(f.out);
        return NULL;
    }
    return f.out;
}

/* ---- which comments ------------------------------------------------------- */

/* True when text[sp] is a C-style comment; sets its body (between the
 * slash-star and the star-slash). */
static bool c_body(const char *text, const pgt_fp_span_t *sp, const char **body, size_t *n)
{
    const char *s = text + sp->start;
    size_t len = sp->end - sp->start;
    if (len < 4 || s[0] != '/' || s[1] != '*' || s[len - 2] != '*' || s[len - 1] != '/')
        return false;
    *body = s + 2;
    *n = len - 4;
    return true;
}

/* True when body[0..n) is, blanks aside, {...}. */
static bool json_shaped(const char *body, size_t n)
{
    while (n > 0 && is_space(body[0]))
        body++, n--;
    while (n > 0 && is_space(body[n - 1]))
        n--;
    return n >= 2 && body[0] == '{' && body[n - 1] == '}';
}

/* The bodies of the two tag comments of a text. */
typedef struct picked {
    const char *sqlc; /* the sqlcommenter comment, or NULL */
    size_t sqlc_n;    /* its length */
    const char *json; /* the JSON comment, or NULL */
    size_t json_n;    /* its length */
} picked_t;

/* Picks the sqlcommenter comment (the last holding an '=' that is not a
 * JSON object) and the JSON comment (the first comment when it is one, as
 * dbt prepends by default, else the last one, as with dbt's append). */
static picked_t pick(const char *text, const pgt_fp_span_t *v, size_t n)
{
    picked_t p = {0};
    bool first = true;       /* v[i] is the first C-style comment */
    bool json_first = false; /* p.json is the first comment */
    for (size_t i = 0; i < n; i++) {
        const char *body;
        size_t bn;
        if (!c_body(text, &v[i], &body, &bn))
            continue;
        if (json_shaped(body, bn)) {
            if (!json_first) {
                p.json = body;
                p.json_n = bn;
                json_first = first;
            }
        } else if (memchr(body, '=', bn)) {
            p.sqlc = body;
            p.sqlc_n = bn;
        }
        first = false;
    }
    return p;
}

/* ---- the tags of a statement ---------------------------------------------- */

/* The merged tags of the comments p picked, or NULL when there are none. */
static json_t *merged(const picked_t *p)
{
    json_t *tags = p->json ? json_comment_tags(p->json, p->json_n) : NULL;
    json_t *sqlc = p->sqlc ? sqlcommenter_tags(p->sqlc, p->sqlc_n) : NULL;
    if (!tags)
        return sqlc;
    /* sqlcommenter wins: it is what the application said of this statement. */
    if (sqlc && json_object_update(tags, sqlc) != 0) {
        json_decref(tags);
        tags = NULL;
    }
    json_decref(sqlc);
    return tags;
}

char *pgt_tags_json(const char *text, size_t len)
{
    /* Most statements carry no comment: skip the scan for them. */
    if (!text || len < 4 || !memmem(text, len, "*/", 2) ||
        (!memchr(text, '=', len) && !memchr(text, '{', len)))
        return NULL;
    char *copy = malloc(len + 1);
    if (!copy)
        return NULL;
    memcpy(copy, text, len);
    copy[len] = '\0';
    pgt_fp_span_t *v;
    size_t n;
    char *out = NULL;
    if (pgt_fp_comments(copy, &v, &n) == 0) {
        picked_t p = pick(copy, v, n);
        json_t *tags = merged(&p);
        if (json_object_size(tags) > 0)
            out = json_dumps(tags, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(tags);
        free(v);
    }
    free(copy);
    return out;
}
