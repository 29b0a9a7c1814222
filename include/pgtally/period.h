/* Budget and usage periods: a day, a week (from Monday) or a month of the
 * local time zone, which is the configured `timezone`; and the one clock
 * that budgets and periods are measured with. */
#ifndef PGTALLY_PERIOD_H
#define PGTALLY_PERIOD_H

#include <stddef.h>
#include <stdint.h>

#define PGT_PERIOD_MAP(X)                                                                          \
    X(DAY, "day")                                                                                  \
    X(WEEK, "week")                                                                                \
    X(MONTH, "month")

typedef enum {
#define X(name, str) PGT_PERIOD_##name,
    PGT_PERIOD_MAP(X)
#undef X
} pgt_period_t;

/* Returns the period's name ("day"), or "unknown" for a value out of range. */
const char *pgt_period_name(pgt_period_t p);

/* Parses a period name; returns 0 and sets *out, or -1 when unknown. */
int pgt_period_parse(const char *name, pgt_period_t *out) __attribute__((warn_unused_result));

/* Sets [*start_us, *end_us) to the period p that holds now_us, in unix
 * microseconds: from local midnight of the first day to local midnight after
 * the last one. Weeks start on Monday. The bounds come from calendar dates
 * (mktime with tm_isdst = -1), so a day across a DST change lasts 23 or 25
 * hours. Uses the process's time zone (see pgt_timezone_apply). */
void pgt_period_bounds(pgt_period_t p, int64_t now_us, int64_t *start_us, int64_t *end_us);

/* Returns the local date that holds us as a day number: days since
 * 1970-01-01 of the local calendar. Ledger rows and rollups carry it. */
int32_t pgt_local_day(int64_t us);

/* Reads a duration as people write it: a whole number and a unit, s, m,
 * h, d or w ("90s", "30m", "2h", "1d"). Returns 0 with microseconds in
 * *out, or -1. */
int pgt_duration_parse(const char *s, int64_t *out) __attribute__((warn_unused_result));

/* Writes the local time of us as people read it, to the minute, with the
 * zone: "2026-11-28 00:00 CET". */
void pgt_local_time_text(int64_t us, char *buf, size_t len);

/* Returns the unix microseconds of local midnight starting day. */
int64_t pgt_local_day_start_us(int32_t day);

/* Makes iana (an IANA zone name such as "Europe/Berlin", or "UTC") the
 * process's local time zone: checks it as pgt_config_check_timezone does,
 * then sets TZ and calls tzset(). Not thread-safe: call it before starting
 * threads. Returns 0, or -1 with what is wrong (and an example) in err. */
int pgt_timezone_apply(const char *iana, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Returns the wall-clock time in unix microseconds, shifted by the number of
 * seconds (fractional or negative) in the environment variable
 * PGTALLY_CLOCK_OFFSET, read once; tests use it to move to another period.
 * Everything that asks what time it is for budgets and periods uses this. */
int64_t pgt_clock_us(void);

#endif
