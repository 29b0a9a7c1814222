/* Unit tests of periods: day, week and month bounds in UTC and in zones
 * with DST changes (at 02:00 in Berlin, at midnight in Sao Paulo), weeks
 * from Monday, month and year ends; time zone names; the test clock. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pgtally/period.h"
#include "task.h"
#include "zone.h"

#define US 1000000LL
#define HOUR_US (3600 * US)

/* One case: the period of p holding now is [start, end). */
typedef struct bounds_case {
    const char *zone;  /* time zone */
    pgt_period_t p;    /* period */
    int64_t now;       /* an instant in it */
    int64_t start;     /* its first microsecond */
    int64_t end;       /* the first microsecond after it */
    const char *about; /* what the case checks */
} bounds_case_t;

static void test_bounds(void)
{
    const bounds_case_t cases[] = {
        {"UTC", PGT_PERIOD_DAY, utc(2024, 5, 1, 12, 34, 56), utc(2024, 5, 1, 0, 0, 0),
         utc(2024, 5, 2, 0, 0, 0), "a UTC day"},
        {"UTC", PGT_PERIOD_DAY, utc(2024, 5, 1, 0, 0, 0), utc(2024, 5, 1, 0, 0, 0),
         utc(2024, 5, 2, 0, 0, 0), "midnight opens its day"},
        {"UTC", PGT_PERIOD_DAY, utc(2024, 5, 2, 0, 0, 0) - 1, utc(2024, 5, 1, 0, 0, 0),
         utc(2024, 5, 2, 0, 0, 0), "the last microsecond of a day"},
        {"UTC", PGT_PERIOD_WEEK, utc(2024, 5, 1, 9, 0, 0), utc(2024, 4, 29, 0, 0, 0),
         utc(2024, 5, 6, 0, 0, 0), "a Wednesday's week starts on Monday"},
        {"UTC", PGT_PERIOD_WEEK, utc(2024, 5, 5, 23, 59, 59), utc(2024, 4, 29, 0, 0, 0),
         utc(2024, 5, 6, 0, 0, 0), "Sunday ends the week"},
        {"UTC", PGT_PERIOD_WEEK, utc(2024, 5, 6, 0, 0, 0), utc(2024, 5, 6, 0, 0, 0),
         utc(2024, 5, 13, 0, 0, 0), "Monday opens the next"},
        {"UTC", PGT_PERIOD_WEEK, utc(2025, 1, 1, 8, 0, 0), utc(2024, 12, 30, 0, 0, 0),
         utc(2025, 1, 6, 0, 0, 0), "a week across the new year"},
        {"UTC", PGT_PERIOD_MONTH, utc(2024, 1, 31, 23, 59, 59), utc(2024, 1, 1, 0, 0, 0),
         utc(2024, 2, 1, 0, 0, 0), "January 31st"},
        {"UTC", PGT_PERIOD_MONTH, utc(2024, 2, 29, 12, 0, 0), utc(2024, 2, 1, 0, 0, 0),
         utc(2024, 3, 1, 0, 0, 0), "a leap February"},
        {"UTC", PGT_PERIOD_MONTH, utc(2023, 2, 28, 12, 0, 0), utc(2023, 2, 1, 0, 0, 0),
         utc(2023, 3, 1, 0, 0, 0), "a common February"},
        {"UTC", PGT_PERIOD_MONTH, utc(2024, 12, 31, 23, 59, 59), utc(2024, 12, 1, 0, 0, 0),
         utc(2025, 1, 1, 0, 0, 0), "December ends the year"},
        /* Berlin: CET (+1) to CEST (+2) on 2024-03-31 at 02:00, back on
         * 2024-10-27 at 03:00. */
        {"Europe/Berlin", PGT_PERIOD_DAY, utc(2024, 5, 1, 22, 30, 0), utc(2024, 5, 1, 22, 0, 0),
         utc(2024, 5, 2, 22, 0, 0), "a summer day in Berlin (already the 2nd)"},
        {"Europe/Berlin", PGT_PERIOD_DAY, utc(2024, 3, 31, 10, 0, 0), utc(2024, 3, 30, 23, 0, 0),
         utc(2024, 3, 31, 22, 0, 0), "the 23-hour day of spring"},
        {"Europe/Berlin", PGT_PERIOD_DAY, utc(2024, 10, 27, 10, 0, 0), utc(2024, 10, 26, 22, 0, 0),
         utc(2024, 10, 27, 23, 0, 0), "the 25-hour day of autumn"},
        {"Europe/Berlin", PGT_PERIOD_DAY, utc(2024, 10, 27, 0, 30, 0), utc(2024, 10, 26, 22, 0, 0),
         utc(2024, 10, 27, 23, 0, 0), "the repeated hour of autumn (first 02:30)"},
        {"Europe/Berlin", PGT_PERIOD_DAY, utc(2024, 10, 27, 1, 30, 0), utc(2024, 10, 26, 22, 0, 0),
         utc(2024, 10, 27, 23, 0, 0), "the repeated hour of autumn (second 02:30)"},
        {"Europe/Berlin", PGT_PERIOD_WEEK, utc(2024, 3, 31, 12, 0, 0), utc(2024, 3, 24, 23, 0, 0),
         utc(2024, 3, 31, 22, 0, 0), "a week that ends in summer time"},
        {"Europe/Berlin", PGT_PERIOD_WEEK, utc(2024, 3, 31, 22, 0, 0), utc(2024, 3, 31, 22, 0, 0),
         utc(2024, 4, 7, 22, 0, 0), "the first summer week"},
        {"Europe/Berlin", PGT_PERIOD_MONTH, utc(2024, 3, 15, 0, 0, 0), utc(2024, 2, 29, 23, 0, 0),
         utc(2024, 3, 31, 22, 0, 0), "March across the change"},
        {"Europe/Berlin", PGT_PERIOD_MONTH, utc(2024, 4, 30, 22, 0, 0), utc(2024, 4, 30, 22, 0, 0),
         utc(2024, 5, 31, 22, 0, 0), "May starts at 22:00 UTC"},
        {"Europe/Berlin", PGT_PERIOD_MONTH, utc(2024, 12, 31, 23, 0, 0),
         utc(2024, 12, 31, 23, 0, 0), utc(2025, 1, 31, 23, 0, 0), "the new year in Berlin"},
        /* Sao Paulo 2018: clocks jumped from 00:00 (-03) to 01:00 (-02) on
         * 2018-11-04, so that day starts at 01:00. */
        {"America/Sao_Paulo", PGT_PERIOD_DAY, utc(2018, 11, 4, 12, 0, 0), utc(2018, 11, 4, 3, 0, 0),
         utc(2018, 11, 5, 2, 0, 0), "a day without its midnight"},
        {"America/Sao_Paulo", PGT_PERIOD_DAY, utc(2018, 11, 4, 2, 59, 59),
         utc(2018, 11, 3, 3, 0, 0), utc(2018, 11, 4, 3, 0, 0), "the day before it"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const bounds_case_t *c = &cases[i];
        use_zone(c->zone);
        int64_t start = 0, end = 0;
        pgt_period_bounds(c->p, c->now, &start, &end);
        if (start != c->start || end != c->end)
            fprintf(stderr, "case %zu (%s, %s): %s\n", i, c->zone, pgt_period_name(c->p), c->about);
        CHECK_INT(start, c->start);
        CHECK_INT(end, c->end);
    }
    /* Every day of a DST year, in Berlin, is 23, 24 or 25 hours, and each
     * starts where the one before ends. */
    use_zone("Europe/Berlin");
    int64_t t = utc(2024, 1, 1, 12, 0, 0), prev_end = 0, odd = 0;
    for (int d = 0; d < 366; d++, t += 24 * HOUR_US) {
        int64_t start, end;
        pgt_period_bounds(PGT_PERIOD_DAY, t, &start, &end);
        int64_t len = end - start;
        CHECK(len == 23 * HOUR_US || len == 24 * HOUR_US || len == 25 * HOUR_US);
        odd += len != 24 * HOUR_US;
        if (prev_end)
            CHECK_INT(start, prev_end);
        prev_end = end;
    }
    CHECK_INT(odd, 2);
}

static void test_names(void)
{
    pgt_period_t p;
    CHECK_INT(pgt_period_parse("week", &p), 0);
    CHECK_INT(p, PGT_PERIOD_WEEK);
    CHECK_STR(pgt_period_name(PGT_PERIOD_MONTH), "month");
    CHECK_INT(pgt_period_parse("year", &p), -1);
    CHECK_INT(pgt_period_parse("Day", &p), -1);
    CHECK_STR(pgt_period_name((pgt_period_t)42), "unknown");
}

static void test_timezones(void)
{
    static const char *const bad[] = {
        "Mars/Olympus_Mons",
        "../../etc/passwd",
        "/usr/share/zoneinfo/UTC",
        "zone.tab",
        "Europe",
        "",
        "PGT-2",
        "Europe/Berlin ",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        CHECK_INT(pgt_timezone_apply(bad[i], err, sizeof(err)), -1);
        if (!strstr(err, "Europe/Berlin"))
            fprintf(stderr, "zone '%s': %s\n", bad[i], err);
        CHECK(strstr(err, "Europe/Berlin") != NULL); /* an example of the right form */
    }
    use_zone("Asia/Kolkata");
    CHECK_STR(getenv("TZ"), "Asia/Kolkata");
    int64_t start, end;
    pgt_period_bounds(PGT_PERIOD_DAY, utc(2024, 5, 1, 12, 0, 0), &start, &end);
    CHECK_INT(start, utc(2024, 4, 30, 18, 30, 0)); /* +05:30 */
    use_zone("UTC");
}

static void test_clock(void)
{
    /* The offset is read once, at the first call. */
    setenv("PGTALLY_CLOCK_OFFSET", "-86400.5", 1);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t real = (int64_t)ts.tv_sec * US + ts.tv_nsec / 1000;
    int64_t shifted = pgt_clock_us();
    int64_t diff = real - 86400 * US - US / 2 - shifted;
    CHECK(diff > -2 * US && diff < 2 * US);
    setenv("PGTALLY_CLOCK_OFFSET", "0", 1);
    diff = real - 86400 * US - US / 2 - pgt_clock_us();
    CHECK(diff > -2 * US && diff < 2 * US);
}

static void test_durations(void)
{
    int64_t us = 0;
    CHECK_INT(pgt_duration_parse("90s", &us), 0);
    CHECK_INT(us, 90 * US);
    CHECK_INT(pgt_duration_parse("30m", &us), 0);
    CHECK_INT(us, 1800 * US);
    CHECK_INT(pgt_duration_parse("2h", &us), 0);
    CHECK_INT(us, 7200 * US);
    CHECK_INT(pgt_duration_parse("1d", &us), 0);
    CHECK_INT(us, 86400 * US);
    CHECK_INT(pgt_duration_parse("2w", &us), 0);
    CHECK_INT(us, 14 * 86400 * US);
    static const char *const bad[] = {"",
                                      "h",
                                      "2",
                                      "2x",
                                      "2hh",
                                      "-2h",
                                      " 2h",
                                      "2 h",
                                      "99999999999999999999w",
                                      "9223372036854775807s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_INT(pgt_duration_parse(bad[i], &us), -1);
    char buf[40];
    pgt_local_time_text(utc(2026, 11, 28, 0, 0, 0), buf, sizeof(buf));
    CHECK_STR(buf, "2026-11-28 00:00 UTC");
}

int main(void)
{
    test_durations();
    test_names();
    test_bounds();
    test_timezones();
    test_clock();
    TASK_DONE();
}
