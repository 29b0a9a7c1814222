/* Time helpers of the unit tests that move through local periods: a UTC
 * time in unix microseconds, and switching the process's time zone. */
#ifndef PGTALLY_TEST_ZONE_H
#define PGTALLY_TEST_ZONE_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "pgtally/period.h"
#include "task.h"

/* Unix microseconds of a UTC time. */
static inline int64_t utc(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d};
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (int64_t)timegm(&tm) * 1000000;
}

/* Makes zone the process's local time zone; a failure counts as one. */
static inline void use_zone(const char *zone)
{
    char err[256] = "";
    int rc = pgt_timezone_apply(zone, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "zone %s: %s\n", zone, err);
    CHECK_INT(rc, 0);
}

#endif
