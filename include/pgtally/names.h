/* Printable names of the enums made from an X-macro list X(NAME, "text"):
 * one macro defines both the name and the parse function of such an enum,
 * so the text of each value is written once, in the list. */
#ifndef PGTALLY_NAMES_H
#define PGTALLY_NAMES_H

#include <stddef.h>
#include <string.h>

/* Returns the index of s in names[0..n), or -1 (also for s NULL). */
static inline int pgt_names_index(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++)
        if (strcmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

#define PGT_NAMES_TEXT_(name, str) str,

/* Defines `const char *name_fn(type v)`, which returns the text of v
 * ("unknown" for a value out of range), and `int parse_fn(const char *s,
 * type *out)`, which sets *out and returns 0, or returns -1 when s is not a
 * name, for the enum type generated from MAP. */
#define PGT_NAMES_DEFINE(MAP, type, name_fn, parse_fn)                                             \
    static const char *const name_fn##_texts[] = {MAP(PGT_NAMES_TEXT_)};                           \
    const char *name_fn(type v)                                                                    \
    {                                                                                              \
        size_t n = sizeof(name_fn##_texts) / sizeof(name_fn##_texts[0]);                           \
        return (size_t)v < n ? name_fn##_texts[v] : "unknown";                                     \
    }                                                                                              \
    int parse_fn(const char *s, type *out)                                                         \
    {                                                                                              \
        size_t n = sizeof(name_fn##_texts) / sizeof(name_fn##_texts[0]);                           \
        int i = pgt_names_index(name_fn##_texts, n, s);                                            \
        if (i < 0)                                                                                 \
            return -1;                                                                             \
        *out = (type)i;                                                                            \
        return 0;                                                                                  \
    }

#endif
