/* Unit tests of pricing: the cost formula (rounding, saturation, odd inputs)
 * and the two money formats, as tables of cases. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "pgtally/pricing.h"
#include "task.h"

#define GIB (INT64_C(1) << 30)

static void test_cost(void)
{
    static const struct {
        int64_t per_second, per_gib, per_query; /* the price list */
        double compute_s;                       /* input */
        int64_t bytes_out;                      /* input */
        int64_t want;                           /* expected micro-units */
    } cases[] = {
        {400, 90000, 0, 0, 0, 0},
        {400, 90000, 0, 1, 0, 400},
        {400, 90000, 0, 2.5, 0, 1000},
        {400, 90000, 0, 0.001, 0, 0},   /* 0.4 rounds down */
        {400, 90000, 0, 0.00125, 0, 1}, /* 0.5 rounds away from zero */
        {400, 90000, 0, 0, GIB, 90000},
        {400, 90000, 0, 0, GIB / 2, 45000},
        {400, 90000, 0, 0, 1, 0},    /* 0.0000838 */
        {400, 90000, 0, 0, 6000, 1}, /* 0.503 */
        {400, 90000, 7, 1, GIB, 90407},
        {400, 90000, 7, 0, 0, 7},               /* per_query alone */
        {400, 90000, 0, 0.0012, 6000, 1},       /* 0.48 + 0.503 = 0.983 -> 1, not 0 + 1 */
        {1000000, 0, 0, 3600, 0, 3600000000LL}, /* 1 per second for an hour */
        {400, 90000, 0, -1, 0, 0},              /* negative compute */
        {400, 90000, 0, NAN, 0, 0},             /* NaN compute */
        {400, 90000, 0, 0, -5, 0},              /* negative bytes */
        {400, 90000, 0, 1e300, 0, INT64_MAX},   /* saturates */
        {0, INT64_MAX, 0, 0, INT64_MAX, INT64_MAX},
        {0, 0, 0, 1e9, INT64_MAX, 0}, /* a zero price list */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgt_price_t p = {cases[i].per_second, cases[i].per_gib, cases[i].per_query};
        int64_t got = pgt_pricing_cost(&p, cases[i].compute_s, cases[i].bytes_out);
        if (got != cases[i].want)
            fprintf(stderr, "cost case %zu\n", i);
        CHECK_INT(got, cases[i].want);
    }
}

static void test_from_config(void)
{
    pgt_config_t cfg = {
        .price_compute_second_micro = 1, .price_gib_micro = 2, .price_query_micro = 3};
    pgt_price_t p;
    pgt_pricing_from_config(&cfg, &p);
    CHECK_INT(p.per_compute_second_micro, 1);
    CHECK_INT(p.per_gib_micro, 2);
    CHECK_INT(p.per_query_micro, 3);
}

static void test_format(void)
{
    static const struct {
        int64_t micro;            /* amount */
        const char *currency;     /* currency, or NULL */
        const char *full, *brief; /* pgt_money_format, pgt_money_format_short */
    } cases[] = {
        {0, "USD", "0.000000 USD", "0.00 USD"},
        {1, "USD", "0.000001 USD", "0.000001 USD"},
        {30, "USD", "0.000030 USD", "0.00003 USD"},
        {99, "USD", "0.000099 USD", "0.000099 USD"},
        {123, "USD", "0.000123 USD", "0.00012 USD"},
        {125, "USD", "0.000125 USD", "0.00013 USD"},
        {1000, "USD", "0.001000 USD", "0.001 USD"},
        {1234, "USD", "0.001234 USD", "0.0012 USD"},
        {9949, "USD", "0.009949 USD", "0.0099 USD"},
        {9950, "USD", "0.009950 USD", "0.01 USD"}, /* rounds up to a cent */
        {10000, "USD", "0.010000 USD", "0.01 USD"},
        {420000, "USD", "0.420000 USD", "0.42 USD"},
        {424999, "USD", "0.424999 USD", "0.42 USD"},
        {425000, "USD", "0.425000 USD", "0.43 USD"},
        {1234567, "USD", "1.234567 USD", "1.23 USD"},
        {999995000, "EUR", "999.995000 EUR", "1000.00 EUR"},
        {-1234567, "USD", "-1.234567 USD", "-1.23 USD"},
        {-1234, "USD", "-0.001234 USD", "-0.0012 USD"},
        {1234567, NULL, "1.234567", "1.23"},
        {1234567, "", "1.234567", "1.23"},
        {INT64_MAX, "USD", "9223372036854.775807 USD", "9223372036854.78 USD"},
        {INT64_MIN, "USD", "-9223372036854.775808 USD", "-9223372036854.78 USD"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[PGT_MONEY_TEXT_MAX];
        CHECK_STR(pgt_money_format(cases[i].micro, cases[i].currency, buf, sizeof(buf)),
                  cases[i].full);
        CHECK_STR(pgt_money_format_short(cases[i].micro, cases[i].currency, buf, sizeof(buf)),
                  cases[i].brief);
    }
    /* A small buffer truncates and stays terminated. */
    char small[6];
    pgt_money_format(1234567, "USD", small, sizeof(small));
    CHECK_STR(small, "1.234");
}

static void test_parse(void)
{
    static const struct {
        const char *text;     /* what was typed */
        const char *currency; /* the configured currency, or NULL */
        int64_t want;         /* micro-units, or -1 for an error */
        const char *why;      /* a word of the error */
    } cases[] = {
        {"12.50", "USD", 12500000, NULL},
        {"12.50USD", "USD", 12500000, NULL},
        {"12.50 USD", "USD", 12500000, NULL},
        {"0", "USD", 0, NULL},
        {"3", NULL, 3000000, NULL},
        {"0.0004", NULL, 400, NULL},
        {".5", NULL, 500000, NULL},
        {"7.", NULL, 7000000, NULL},
        {"0.000001", NULL, 1, NULL},
        {"0.0000015", NULL, 2, NULL}, /* rounds half up */
        {"0.0000014999", NULL, 1, NULL},
        {"1000000000000", NULL, 1000000000000000000LL, NULL},
        {"1000000000000.5", NULL, 1000000000000500000LL, NULL},
        {"1000000000001", NULL, -1, "too large"},
        {"99999999999999999999", NULL, -1, "too large"},
        {"-1", "USD", -1, "negative"},
        {"-0.5 USD", "USD", -1, "negative"},
        {"", "USD", -1, "not an amount"},
        {".", "USD", -1, "not an amount"},
        {"ten", "USD", -1, "not an amount"},
        {"1e3", "USD", -1, "not an amount"},
        {"12,50", "USD", -1, "not an amount"},
        {"12.50 EUR", "USD", -1, "EUR"},
        {"12.50usd", "USD", -1, "not an amount"},
        {"12.50  USD", "USD", -1, "not an amount"},
        {"12.50 USD", NULL, -1, "without a currency"},
        {"+5", "USD", -1, "not an amount"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        int64_t got = -1;
        int rc = pgt_money_parse(cases[i].text, cases[i].currency, &got, err, sizeof(err));
        if ((rc == 0 ? got : -1) != cases[i].want || (rc && !strstr(err, cases[i].why)))
            fprintf(stderr, "parse case %zu '%s': rc=%d got=%lld err=%s\n", i, cases[i].text, rc,
                    (long long)got, err);
        CHECK_INT(rc == 0 ? got : -1, cases[i].want);
        if (rc != 0)
            CHECK(strstr(err, cases[i].why) != NULL);
    }
    int64_t v;
    CHECK_INT(pgt_money_parse("oops", NULL, &v, NULL, 0), -1); /* err may be NULL */
}

int main(void)
{
    test_cost();
    test_from_config();
    test_format();
    test_parse();
    TASK_DONE();
}
