/* Unit tests of the daily report's calendar (pgt_schedule_due): which
 * dates are due before and after the report time, the catch-up window,
 * catch_up_days = 0, and a walk across the DST changes of Europe/Berlin in
 * which every date falls due once, in order, never before its time. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "pgtally/period.h"
#include "pgtally/scheduler.h"
#include "task.h"
#include "zone.h"

#define US 1000000LL
#define MAXD 8

/* Unix microseconds of a local time of the process's zone. */
static int64_t local(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d};
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    tm.tm_isdst = -1;
    return (int64_t)mktime(&tm) * US;
}

/* One case: at now, with the report at at_min and catch_up days, the due
 * dates joined by spaces, and when the next date falls due. */
typedef struct due_case {
    int at_min;        /* [report] time */
    int catch_up;      /* [report] catch_up_days */
    int64_t now;       /* the clock */
    int64_t start;     /* when scheduling began */
    const char *dates; /* the dates due, oldest first, space-separated */
    int64_t next_due;  /* when the next date falls due */
} due_case_t;

static void check_case(const due_case_t *c, size_t i)
{
    char dates[MAXD][11], joined[MAXD * 12] = "";
    int64_t next = 0;
    size_t n = pgt_schedule_due(c->at_min, c->catch_up, c->now, c->start, dates, MAXD, &next);
    for (size_t k = 0; k < n; k++)
        snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), "%s%s", k ? " " : "",
                 dates[k]);
    if (strcmp(joined, c->dates) != 0 || next != c->next_due)
        fprintf(stderr, "case %zu: got \"%s\" next %lld\n", i, joined, (long long)next);
    CHECK_STR(joined, c->dates);
    CHECK_INT(next, c->next_due);
}

static void test_cases(void)
{
    use_zone("Europe/Berlin");
    int64_t start = local(2026, 11, 27, 8, 59, 57);
    const due_case_t cases[] = {
        /* Before 09:00 on the 27th: the 26th is not due yet. */
        {540, 3, local(2026, 11, 27, 8, 59, 59), 0, "2026-11-23 2026-11-24 2026-11-25",
         local(2026, 11, 27, 9, 0, 0)},
        /* At 09:00: the 26th is due, the window moves. */
        {540, 3, local(2026, 11, 27, 9, 0, 0), 0, "2026-11-24 2026-11-25 2026-11-26",
         local(2026, 11, 28, 9, 0, 0)},
        {540, 1, local(2026, 11, 27, 23, 59, 59), 0, "2026-11-26", local(2026, 11, 28, 9, 0, 0)},
        /* Across a month and a year. */
        {0, 2, local(2027, 1, 1, 0, 0, 1), 0, "2026-12-30 2026-12-31", local(2027, 1, 2, 0, 0, 0)},
        {23 * 60 + 59, 1, local(2026, 3, 1, 23, 58, 0), 0, "2026-02-27",
         local(2026, 3, 1, 23, 59, 0)},
        /* catch_up_days = 0: only a date that fell due after the start. */
        {540, 0, local(2026, 11, 27, 8, 59, 58), start, "", local(2026, 11, 27, 9, 0, 0)},
        {540, 0, local(2026, 11, 27, 9, 0, 1), start, "2026-11-26", local(2026, 11, 28, 9, 0, 0)},
        {540, 0, local(2026, 11, 28, 10, 0, 0), start, "2026-11-27", local(2026, 11, 29, 9, 0, 0)},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i], i);
    /* At most max dates are written. */
    char dates[2][11];
    int64_t next;
    CHECK_INT(pgt_schedule_due(540, 30, local(2026, 11, 27, 10, 0, 0), 0, dates, 2, &next), 2);
    CHECK_STR(dates[1], "2026-11-26");
}

/* Walks the clock in steps of 10 minutes over days with a DST change:
 * with catch_up_days = 1 the due date changes exactly once a day, to the
 * next date, at the first step at or after its report time. */
static void walk(int64_t from, int64_t to, int at_min)
{
    char dates[1][11], last[11] = "";
    int64_t next = 0, expect_next = 0;
    int changes = 0;
    for (int64_t t = from; t < to; t += 600 * US) {
        CHECK_INT(pgt_schedule_due(at_min, 1, t, 0, dates, 1, &next), 1);
        if (strcmp(dates[0], last) != 0) {
            if (last[0]) {
                /* The next date, right after the time announced before. */
                CHECK(t >= expect_next && t < expect_next + 600 * US);
                time_t noon = (time_t)(expect_next / US) - 86400 / 2;
                struct tm tm;
                localtime_r(&noon, &tm);
                char want[11];
                strftime(want, sizeof(want), "%Y-%m-%d", &tm);
                if (strcmp(dates[0], want) != 0)
                    fprintf(stderr, "walk at %lld: %s, want %s\n", (long long)t, dates[0], want);
                CHECK_STR(dates[0], want);
                changes++;
            }
            memcpy(last, dates[0], sizeof(last));
        }
        CHECK(next > t && next <= t + 25 * 3600 * US);
        expect_next = next;
    }
    CHECK(changes >= 9);
}

static void test_dst(void)
{
    use_zone("Europe/Berlin");
    /* Spring forward (2026-03-29, 02:00 -> 03:00) and fall back
     * (2026-10-25, 03:00 -> 02:00), with a report time in the gap or the
     * repeated hour and one at midnight. */
    walk(local(2026, 3, 24, 0, 0, 0), local(2026, 4, 4, 0, 0, 0), 2 * 60 + 30);
    walk(local(2026, 3, 24, 0, 0, 0), local(2026, 4, 4, 0, 0, 0), 0);
    walk(local(2026, 10, 20, 0, 0, 0), local(2026, 10, 31, 0, 0, 0), 2 * 60 + 30);
    walk(local(2026, 10, 20, 0, 0, 0), local(2026, 10, 31, 0, 0, 0), 9 * 60);
}

int main(void)
{
    test_cases();
    test_dst();
    TASK_DONE();
}
