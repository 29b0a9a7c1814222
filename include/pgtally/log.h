/* Structured logging: one event per line, key=value pairs, with levels.
 * Callers go through the PGT_LOG macro so arguments are only evaluated when
 * the level is enabled. */
#ifndef PGTALLY_LOG_H
#define PGTALLY_LOG_H

#include <stdarg.h>

#define PGT_LOG_LEVEL_MAP(X)                                                                       \
    X(DEBUG, "debug")                                                                              \
    X(INFO, "info")                                                                                \
    X(WARNING, "warning")                                                                          \
    X(ERROR, "error")

typedef enum {
#define X(name, str) PGT_LOG_##name,
    PGT_LOG_LEVEL_MAP(X)
#undef X
} pgt_log_level_t;

/* The lowest level that is printed; set by pgt_log_set_level. */
extern pgt_log_level_t pgt_log_min_level;

/* Sets the lowest level printed. */
void pgt_log_set_level(pgt_log_level_t level);

/* Returns the printable name of a level ("info"). */
const char *pgt_log_level_name(pgt_log_level_t level);

/* Parses a level name; returns 0 and sets *out, or -1 when unknown. */
int pgt_log_level_parse(const char *s, pgt_log_level_t *out);

/* Writes one line: "ts=... level=... event=<event> <fmt...>". fmt holds the
 * remaining key=value pairs. Prefer the PGT_LOG macro. */
void pgt_log_write(pgt_log_level_t level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define PGT_LOG(level, event, ...)                                                                 \
    do {                                                                                           \
        if ((level) >= pgt_log_min_level)                                                          \
            pgt_log_write((level), (event), __VA_ARGS__);                                          \
    } while (0)

#define PGT_DEBUG(event, ...) PGT_LOG(PGT_LOG_DEBUG, event, __VA_ARGS__)
#define PGT_INFO(event, ...) PGT_LOG(PGT_LOG_INFO, event, __VA_ARGS__)
#define PGT_WARN(event, ...) PGT_LOG(PGT_LOG_WARNING, event, __VA_ARGS__)
#define PGT_ERROR(event, ...) PGT_LOG(PGT_LOG_ERROR, event, __VA_ARGS__)

#endif
