/* Structured key=value logging to stderr, one event per line. */
#include "pgtally/log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

pgt_log_level_t pgt_log_min_level = PGT_LOG_INFO;

static const char *const level_names[] = {
#define X(name, str) str,
    PGT_LOG_LEVEL_MAP(X)
#undef X
};

void pgt_log_set_level(pgt_log_level_t level)
{
    pgt_log_min_level = level;
}

const char *pgt_log_level_name(pgt_log_level_t level)
{
    if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
        return "unknown";
    return level_names[level];
}

int pgt_log_level_parse(const char *s, pgt_log_level_t *out)
{
    for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (pgt_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

void pgt_log_write(pgt_log_level_t level, const char *event, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), pgt_log_level_name(level), event);
    if (n < 0 || (size_t)n >= sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    if (fmt && fmt[0]) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
        if ((size_t)n > sizeof(line) - 2)
            n = (int)sizeof(line) - 2;
    }
    line[n++] = '\n';
    /* One write per line, so lines from several processes never interleave. */
    fwrite(line, 1, (size_t)n, stderr);
    fflush(stderr);
}
