/* Amounts of money as text: written exactly or for people, and read from
 * what a person typed. Money is integer micro-units (1e-6) of the
 * configured currency everywhere in pgtally. */
#include "pgtally/money.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define MICRO_PER_UNIT 1000000u
#define MICRO_PER_CENT 10000u

/* Splits micro into a sign and a magnitude that also holds -INT64_MIN. */
static uint64_t magnitude(int64_t micro, const char **sign)
{
    *sign = micro < 0 ? "-" : "";
    return micro < 0 ? (uint64_t)0 - (uint64_t)micro : (uint64_t)micro;
}

/* Appends " CUR" to the number already in buf (n bytes), when given. */
static char *with_currency(char *buf, size_t len, int n, const char *currency)
{
    if (n >= 0 && (size_t)n < len && currency && currency[0])
        snprintf(buf + n, len - (size_t)n, " %s", currency);
    return buf;
}

char *pgt_money_format(int64_t micro, const char *currency, char *buf, size_t len)
{
    const char *sign;
    uint64_t m = magnitude(micro, &sign);
    int n = snprintf(buf, len, "%s%llu.%06llu", sign, (unsigned long long)(m / MICRO_PER_UNIT),
                     (unsigned long long)(m % MICRO_PER_UNIT));
    return with_currency(buf, len, n, currency);
}

/* Rounds m (below one cent) to two significant digits. */
static uint64_t two_significant(uint64_t m)
{
    uint64_t div = 1;
    while (m / div >= 100)
        div *= 10;
    return (m + div / 2) / div * div;
}

char *pgt_money_format_short(int64_t micro, const char *currency, char *buf, size_t len)
{
    const char *sign;
    uint64_t m = magnitude(micro, &sign);
    if (m > 0 && m < MICRO_PER_CENT)
        m = two_significant(m);
    int n;
    if (m == 0 || m >= MICRO_PER_CENT) {
        uint64_t cents = m / MICRO_PER_CENT + (m % MICRO_PER_CENT >= MICRO_PER_CENT / 2);
        n = snprintf(buf, len, "%s%llu.%02llu", m ? sign : "", (unsigned long long)(cents / 100),
                     (unsigned long long)(cents % 100));
    } else {
        char digits[24];
        snprintf(digits, sizeof(digits), "%06llu", (unsigned long long)m);
        size_t k = strlen(digits);
        while (k > 1 && digits[k - 1] == '0')
            digits[--k] = '\0';
        n = snprintf(buf, len, "%s0.%s", sign, digits);
    }
    return with_currency(buf, len, n, currency);
}

/* Reads the digits at *p into *v (at most max_digits of them, more fail)
 * and advances; returns how many were read, or -1. */
static int read_units(const char **p, int max_digits, uint64_t *v)
{
    int n = 0;
    for (; **p >= '0' && **p <= '9'; ++*p, n++) {
        if (n == max_digits)
            return -1;
        *v = *v * 10 + (uint64_t)(**p - '0');
    }
    return n;
}

/* Reads a fraction after the point into micro-units, rounding half up on
 * the seventh digit, and advances; returns how many digits were read. */
static int read_fraction(const char **p, uint64_t *micro)
{
    int n = 0;
    uint64_t scale = MICRO_PER_UNIT / 10;
    for (; **p >= '0' && **p <= '9'; ++*p, n++) {
        if (scale) {
            *micro += (uint64_t)(**p - '0') * scale;
            scale /= 10;
        } else if (n == 6 && **p >= '5') {
            ++*micro;
        }
    }
    return n;
}

/* Checks the currency code after an amount (p, maybe empty). */
static int check_currency(const char *text, const char *p, const char *currency, char *err,
                          size_t errlen)
{
    if (*p == ' ')
        p++;
    if (!*p)
        return 0;
    bool code = strlen(p) == 3;
    for (size_t i = 0; code && i < 3; i++)
        code = p[i] >= 'A' && p[i] <= 'Z';
    if (!code)
        snprintf(err, errlen, "'%s' is not an amount; write it as 12.50 or 12.50 %s", text,
                 currency ? currency : "USD");
    else if (!currency)
        snprintf(err, errlen, "'%s': write the amount without a currency, as 12.50", text);
    else if (strcmp(p, currency) != 0)
        snprintf(err, errlen,
                 "'%s' is in %s, but amounts here are in %s (pricing.currency); write 12.50 or "
                 "12.50 %s",
                 text, p, currency, currency);
    else
        return 0;
    return -1;
}

int pgt_money_parse(const char *text, const char *currency, int64_t *out, char *err, size_t errlen)
{
    const char *p = text;
    uint64_t units = 0, micro = 0;
    if (*p == '-') {
        snprintf(err, errlen, "'%s' is negative; amounts are 0 or more, such as 12.50", text);
        return -1;
    }
    int n = read_units(&p, 13, &units);
    if (n >= 0 && *p == '.') {
        p++;
        n += read_fraction(&p, &micro);
    }
    if (n < 0 || units > PGT_MONEY_MAX_UNITS) {
        snprintf(err, errlen, "'%s' is too large; at most %lld", text, PGT_MONEY_MAX_UNITS);
        return -1;
    }
    if (n == 0) {
        snprintf(err, errlen, "'%s' is not an amount; write it as 12.50 or 12.50 %s", text,
                 currency ? currency : "USD");
        return -1;
    }
    if (check_currency(text, p, currency, err, errlen) != 0)
        return -1;
    *out = (int64_t)(units * MICRO_PER_UNIT + micro);
    return 0;
}
