/* Periods in local time (day, week from Monday, month), the process's time
 * zone, and the clock of budgets with its test offset. */
#include "pgtally/period.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgtally/config.h"
#include "pgtally/names.h"

#define US_PER_S 1000000LL
#define GAP_STEP_S 900 /* DST gaps are whole quarter hours */

PGT_NAMES_DEFINE(PGT_PERIOD_MAP, pgt_period_t, pgt_period_name, pgt_period_parse)

/* Compares two local dates; returns <0, 0 or >0. */
static int date_cmp(const struct tm *a, const struct tm *b)
{
    if (a->tm_year != b->tm_year)
        return a->tm_year - b->tm_year;
    if (a->tm_mon != b->tm_mon)
        return a->tm_mon - b->tm_mon;
    return a->tm_mday - b->tm_mday;
}

/* Returns the first second of the local day year-month-mday (fields as in
 * struct tm; an out-of-range mday or mon rolls over, as mktime does). */
static time_t local_midnight(int year, int mon, int mday)
{
    /* Noon always exists, so it normalizes the date whatever the zone. */
    struct tm day = {.tm_year = year, .tm_mon = mon, .tm_mday = mday, .tm_hour = 12};
    day.tm_isdst = -1;
    (void)mktime(&day);
    struct tm tm = {.tm_year = day.tm_year, .tm_mon = day.tm_mon, .tm_mday = day.tm_mday};
    tm.tm_isdst = -1;
    time_t t = mktime(&tm);
    /* Where midnight does not exist (clocks jumped from 00:00 to 01:00, as
     * in Sao Paulo until 2019), mktime may answer with a time of the day
     * before; the day then starts at its first existing quarter hour. */
    struct tm got;
    for (int i = 0; i < 8 && localtime_r(&t, &got) && date_cmp(&got, &day) < 0; i++)
        t += GAP_STEP_S - (t % GAP_STEP_S + GAP_STEP_S) % GAP_STEP_S;
    return t;
}

void pgt_period_bounds(pgt_period_t p, int64_t now_us, int64_t *start_us, int64_t *end_us)
{
    int64_t s = now_us / US_PER_S - (now_us % US_PER_S < 0);
    time_t now = (time_t)s;
    struct tm tm;
    localtime_r(&now, &tm);
    int first = tm.tm_mday, days = 1, months = 0;
    if (p == PGT_PERIOD_WEEK) {
        first = tm.tm_mday - (tm.tm_wday + 6) % 7; /* back to Monday */
        days = 7;
    } else if (p == PGT_PERIOD_MONTH) {
        first = 1;
        days = 0;
        months = 1;
    }
    *start_us = (int64_t)local_midnight(tm.tm_year, tm.tm_mon, first) * US_PER_S;
    *end_us = (int64_t)local_midnight(tm.tm_year, tm.tm_mon + months, first + days) * US_PER_S;
}

/* Days from 1970-01-01 to the date y-m-d of the proleptic Gregorian
 * calendar (m from 1), after Howard Hinnant's days_from_civil. */
static int32_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (int32_t)(era * 146097 + (int64_t)doe - 719468);
}

int32_t pgt_local_day(int64_t us)
{
    int64_t s = us / US_PER_S - (us % US_PER_S < 0);
    time_t t = (time_t)s;
    struct tm tm;
    localtime_r(&t, &tm);
    return days_from_civil((int64_t)tm.tm_year + 1900, (unsigned)tm.tm_mon + 1,
                           (unsigned)tm.tm_mday);
}

int64_t pgt_local_day_start_us(int32_t day)
{
    /* 1970-01-01 plus day days, at local midnight: mktime normalises the
     * day of the month. */
    return (int64_t)local_midnight(70, 0, 1 + day) * US_PER_S;
}

int pgt_timezone_apply(const char *iana, char *err, size_t errlen)
{
    if (pgt_config_check_timezone(iana, err, errlen) != 0)
        return -1;
    if (setenv("TZ", iana, 1) != 0) {
        snprintf(err, errlen, "setting TZ: out of memory");
        return -1;
    }
    tzset();
    return 0;
}

static int64_t clock_offset_us;
static pthread_once_t clock_once = PTHREAD_ONCE_INIT;

static void read_clock_offset(void)
{
    const char *v = getenv("PGTALLY_CLOCK_OFFSET");
    if (!v || !v[0])
        return;
    char *end;
    double s = strtod(v, &end);
    if (*end == '\0' && isfinite(s) && fabs(s) < 1e12)
        clock_offset_us = (int64_t)llround(s * (double)US_PER_S);
}

int64_t pgt_clock_us(void)
{
    pthread_once(&clock_once, read_clock_offset);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * US_PER_S + ts.tv_nsec / 1000 + clock_offset_us;
}

void pgt_local_time_text(int64_t us, char *buf, size_t len)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M %Z", &tm);
}

int pgt_duration_parse(const char *s, int64_t *out)
{
    static const struct {
        char unit;
        int64_t us;
    } units[] = {{'s', INT64_C(1000000)},
                 {'m', INT64_C(60000000)},
                 {'h', INT64_C(3600000000)},
                 {'d', INT64_C(86400000000)},
                 {'w', INT64_C(604800000000)}};
    if (!s || s[0] < '0' || s[0] > '9')
        return -1;
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (*end == units[i].unit && end[1] == '\0' && errno == 0 &&
            n <= INT64_MAX / 4 / units[i].us) {
            *out = n * units[i].us;
            return 0;
        }
    return -1;
}
