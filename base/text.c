/* Small text helpers shared by the report and pgtallyctl: UTF-8, durations,
 * the one-line rule of cells and snippets with display widths, CSV fields,
 * aligned tables, and JSON strings from text that may not be UTF-8. */
#include "pgtally/text.h"

#include <locale.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

size_t pgt_utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t n = c >= 0xC2 && c <= 0xDF   ? 2
               : c >= 0xE0 && c <= 0xEF ? 3
               : c >= 0xF0 && c <= 0xF4 ? 4
                                        : 0;
    if (!n)
        return 0;
    /* The second byte's range excludes overlong forms and surrogates. */
    unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    unsigned hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if ((p[k] & 0xC0) != 0x80)
            return 0;
    return n;
}

uint64_t pgt_fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

uint64_t pgt_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

char *pgt_fmt_seconds(double s, char *buf, size_t len)
{
    if (s < 0.001)
        snprintf(buf, len, "%.3f ms", s * 1e3);
    else if (s < 1)
        snprintf(buf, len, "%.1f ms", s * 1e3);
    else if (s < 100)
        snprintf(buf, len, "%.2f s", s);
    else if (s < 3600)
        snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, len, "%ldh%02dm", (long)(s / 3600), (int)((long)(s / 60) % 60));
    return buf;
}

/* ---- Row counts ------------------------------------------------------------ */

/* Reads the digits at *p, keeping those after leading zeros (none kept
 * yet) in d[0..*nd). Returns how many digits were read, or -1 when more
 * than cap are significant (then the value is past PGT_ROWS_MAX or not
 * whole, whatever its exponent within reason). */
static long take_digits(const char **p, char *d, size_t *nd, size_t cap)
{
    long n = 0;
    for (; **p >= '0' && **p <= '9'; (*p)++, n++) {
        if (*nd == 0 && **p == '0')
            continue;
        if (*nd == cap)
            return -1;
        d[(*nd)++] = **p;
    }
    return n;
}

int pgt_rows_parse(const char *s, int64_t *out)
{
    char d[40];
    size_t nd = 0;
    long frac = 0, exp = 0;
    const char *p = s;
    if (take_digits(&p, d, &nd, sizeof(d)) <= 0)
        return -1;
    if (*p == '.') {
        p++;
        if ((frac = take_digits(&p, d, &nd, sizeof(d))) <= 0)
            return -1;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+')
            p++;
        if (*p < '0' || *p > '9')
            return -1;
        for (; *p >= '0' && *p <= '9'; p++)
            exp = exp < 1000 ? exp * 10 + (*p - '0') : exp;
    }
    if (*p != '\0')
        return -1;
    /* The value is D * 10^scale, D the significant digits. */
    long scale = exp - frac;
    while (nd > 0 && d[nd - 1] == '0') {
        nd--;
        scale++;
    }
    if (nd == 0) {
        *out = 0;
        return 0;
    }
    /* Not whole, or past 1e18 (the one value of 19 digits allowed). */
    if (scale < 0 || (long)nd + scale > 19 || ((long)nd + scale == 19 && (nd > 1 || d[0] != '1')))
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < nd; i++)
        v = v * 10 + (d[i] - '0');
    for (long i = 0; i < scale; i++)
        v *= 10;
    if (v > PGT_ROWS_MAX)
        return -1;
    *out = v;
    return 0;
}

char *pgt_rows_format(int64_t rows, char *buf, size_t len)
{
    int64_t m = rows;
    int zeros = 0;
    while (m >= 10 && m % 10 == 0) {
        m /= 10;
        zeros++;
    }
    if (rows < 1000000 || m >= 1000) {
        snprintf(buf, len, "%lld", (long long)rows);
        return buf;
    }
    char d[4];
    int nd = snprintf(d, sizeof(d), "%lld", (long long)m);
    int exp10 = zeros + nd - 1;
    if (nd == 1)
        snprintf(buf, len, "%se%d", d, exp10);
    else
        snprintf(buf, len, "%c.%se%d", d[0], d + 1, exp10);
    return buf;
}

/* ---- Display width -------------------------------------------------------- */

/* The C.UTF-8 locale, made once: wcwidth() answers from the C library's
 * own Unicode tables (East Asian wide and fullwidth characters take two
 * columns, combining marks none) only under a UTF-8 LC_CTYPE, and the
 * process's locale is left as it is. */
static locale_t utf8_locale;
static pthread_once_t utf8_once = PTHREAD_ONCE_INIT;

static void utf8_locale_init(void)
{
    utf8_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

/* Columns of the valid sequence of k bytes at p: wcwidth() of its code
 * point, 1 for one that has none (unassigned, or no UTF-8 locale). */
static size_t char_width(const unsigned char *p, size_t k)
{
    if (k == 1)
        return 1;
    uint32_t c = p[0] & (0x7F >> k);
    for (size_t i = 1; i < k; i++)
        c = c << 6 | (p[i] & 0x3F);
    pthread_once(&utf8_once, utf8_locale_init);
    if (!utf8_locale)
        return 1;
    locale_t old = uselocale(utf8_locale);
    int w = wcwidth((wchar_t)c);
    uselocale(old);
    return w < 0 ? 1 : (size_t)w;
}

size_t pgt_text_width(const char *s)
{
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p;) {
        size_t k = pgt_utf8_len(p);
        w += k ? char_width(p, k) : 1;
        p += k ? k : 1;
    }
    return w;
}

/* ---- One line of text ----------------------------------------------------- */

static bool is_white(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Whether the valid sequence of k bytes at p is a control character (C0,
 * DEL or C1). */
static bool is_control(const unsigned char *p, size_t k)
{
    return (k == 1 && (*p < 0x20 || *p == 0x7F)) || (k == 2 && p[0] == 0xC2 && p[1] <= 0x9F);
}

size_t pgt_text_snippet(pgt_buf_t *out, const char *s, size_t max, const char *ellipsis)
{
    size_t ew = pgt_text_width(ellipsis), room = max > ew ? max - ew : 0;
    size_t width = 0, cut_len = out->len, cut_width = 0;
    bool begun = false, space = false;
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p;) {
        if (is_white(*p)) {
            space = begun;
            p++;
            continue;
        }
        size_t k = pgt_utf8_len(p);
        bool shown = k && !is_control(p, k);
        if (space) {
            pgt_buf_putc(out, ' ');
            width++;
            space = false;
        }
        pgt_buf_add(out, shown ? (const char *)p : "?", shown ? k : 1);
        width += shown ? char_width(p, k) : 1;
        begun = true;
        if (width <= room) {
            cut_len = out->len;
            cut_width = width;
        }
        p += k ? k : 1;
    }
    if (!max || width <= max)
        return width;
    pgt_buf_truncate(out, cut_len);
    pgt_buf_puts(out, ellipsis);
    return cut_width + ew;
}

/* ---- CSV ------------------------------------------------------------------ */

void pgt_text_csv_field(pgt_buf_t *out, const char *s)
{
    s = s ? s : "";
    size_t n = strlen(s);
    bool quote = strpbrk(s, ",\"\r\n") ||
                 (n && (is_white((unsigned char)s[0]) || is_white((unsigned char)s[n - 1])));
    if (!quote) {
        pgt_buf_add(out, s, n);
        return;
    }
    pgt_buf_putc(out, '"');
    for (; *s; s++) {
        if (*s == '"')
            pgt_buf_putc(out, '"');
        pgt_buf_putc(out, *s);
    }
    pgt_buf_putc(out, '"');
}

void pgt_text_csv_row(pgt_buf_t *out, const char *const *cells, size_t n, const char *eol)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            pgt_buf_putc(out, ',');
        pgt_text_csv_field(out, cells[i]);
    }
    pgt_buf_puts(out, eol);
}

/* ---- Aligned tables ------------------------------------------------------- */

#define RULE SIZE_MAX /* the offset of a rule's cells */

struct pgt_text_table {
    size_t ncols;   /* columns */
    bool *right;    /* right-aligned columns */
    size_t *width;  /* widest cell of each column, in display columns */
    pgt_buf_t text; /* every cell cleaned and NUL-terminated, headers first */
    size_t *cell;   /* offset in text of each cell, row after row; RULE in a rule */
    size_t ncells;  /* cells added, the headers included */
    size_t cap;     /* offsets allocated */
    bool failed;    /* out of memory */
};

/* Makes room for one more offset; false (and failed) when out of memory. */
static bool grow(pgt_text_table_t *t)
{
    if (t->ncells < t->cap)
        return true;
    size_t cap = t->cap ? t->cap * 2 : 64;
    size_t *cell = realloc(t->cell, cap * sizeof(*cell));
    if (!cell) {
        t->failed = true;
        return false;
    }
    t->cell = cell;
    t->cap = cap;
    return true;
}

pgt_text_table_t *pgt_text_table_new(size_t ncols, const char *const *headers, const bool *right)
{
    pgt_text_table_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ncols = ncols;
    t->right = calloc(ncols ? ncols : 1, sizeof(*t->right));
    t->width = calloc(ncols ? ncols : 1, sizeof(*t->width));
    if (!t->right || !t->width) {
        pgt_text_table_free(t);
        return NULL;
    }
    for (size_t i = 0; i < ncols; i++) {
        t->right[i] = right && right[i];
        pgt_text_table_cell(t, headers[i], 0);
    }
    if (t->failed) {
        pgt_text_table_free(t);
        return NULL;
    }
    return t;
}

void pgt_text_table_cell(pgt_text_table_t *t, const char *s, size_t max)
{
    if (!t || t->failed || !t->ncols || !grow(t))
        return;
    size_t at = t->text.len, col = t->ncells % t->ncols;
    size_t w = pgt_text_snippet(&t->text, s, max, "...");
    pgt_buf_putc(&t->text, '\0');
    t->failed = t->text.failed;
    t->cell[t->ncells++] = at;
    if (w > t->width[col])
        t->width[col] = w;
}

int pgt_text_table_row(pgt_text_table_t *t, const char *const *cells, size_t max)
{
    for (size_t i = 0; t && i < t->ncols; i++)
        pgt_text_table_cell(t, cells[i], max);
    return t && !t->failed ? 0 : -1;
}

void pgt_text_table_rule(pgt_text_table_t *t)
{
    for (size_t i = 0; t && i < t->ncols && grow(t); i++)
        t->cell[t->ncells++] = RULE;
}

/* Appends row r: a cell's text, or dashes for a rule, padded to its column. */
static void print_row(const pgt_text_table_t *t, size_t r, pgt_buf_t *out)
{
    for (size_t i = 0; i < t->ncols; i++) {
        size_t k = r * t->ncols + i;
        bool rule = k < t->ncells && t->cell[k] == RULE;
        const char *s = k < t->ncells && !rule ? t->text.s + t->cell[k] : "";
        size_t w = rule ? t->width[i] : pgt_text_width(s), pad = t->width[i] - w;
        if (i)
            pgt_buf_puts(out, "  ");
        if (t->right[i])
            pgt_buf_printf(out, "%*s", (int)pad, "");
        for (size_t d = 0; rule && d < w; d++)
            pgt_buf_putc(out, '-');
        pgt_buf_puts(out, s);
        if (!t->right[i] && i + 1 < t->ncols)
            pgt_buf_printf(out, "%*s", (int)pad, "");
    }
    pgt_buf_putc(out, '\n');
}

void pgt_text_table_print(const pgt_text_table_t *t, pgt_buf_t *out)
{
    if (!t || t->failed) {
        out->failed = true;
        return;
    }
    size_t rows = t->ncols ? (t->ncells + t->ncols - 1) / t->ncols : 0;
    for (size_t r = 0; r < rows; r++)
        print_row(t, r, out);
}

void pgt_text_table_free(pgt_text_table_t *t)
{
    if (!t)
        return;
    pgt_buf_free(&t->text);
    free(t->cell);
    free(t->right);
    free(t->width);
    free(t);
}

/* ---- JSON ----------------------------------------------------------------- */

json_t *pgt_text_json(const char *s)
{
    if (!s)
        return json_null();
    json_t *v = json_string(s);
    if (v)
        return v;
    /* Not UTF-8 (or out of memory): each stray byte becomes U+FFFD. */
    pgt_buf_t clean = {0};
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t k = pgt_utf8_len(p);
        pgt_buf_add(&clean, k ? (const char *)p : "\xEF\xBF\xBD", k ? k : 3);
        p += k ? k : 1;
    }
    v = clean.failed ? NULL : json_string(clean.s ? clean.s : "");
    pgt_buf_free(&clean);
    return v;
}

void pgt_say(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}
