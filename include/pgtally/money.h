/* Amounts of money as text, in integer micro-units (1e-6) of a currency:
 * written exactly ("1.234567 USD") or for people ("0.42 USD"), and read
 * from what a person typed ("12.50", "12.50 USD"). Pure functions of the
 * base library: no I/O, no allocation, safe from any thread. */
#ifndef PGTALLY_MONEY_H
#define PGTALLY_MONEY_H

#include <stddef.h>
#include <stdint.h>

/* Longest text the formatters write, including the NUL: sign, 13 integer
 * digits, point, 6 decimals, space, a currency of up to 7 characters. */
#define PGT_MONEY_TEXT_MAX 40

/* Writes micro as an exact amount with 6 decimals and the currency
 * ("1.234567 USD"; currency NULL or "" writes the number alone). Returns buf,
 * which must hold at least PGT_MONEY_TEXT_MAX bytes for any amount. */
char *pgt_money_format(int64_t micro, const char *currency, char *buf, size_t len);

/* Writes micro for people: 2 decimals from 0.01 up ("0.42 USD"), otherwise
 * two significant digits without trailing zeros ("0.0012 USD", "0.00003 USD",
 * "0.00 USD" for zero). Amounts round half away from zero. Returns buf. */
char *pgt_money_format_short(int64_t micro, const char *currency, char *buf, size_t len);

/* Largest amount pgt_money_parse accepts, in whole units. */
#define PGT_MONEY_MAX_UNITS 1000000000000LL

/* Parses an amount of money: digits with an optional decimal point
 * ("12.50", "0.0004", "3"), rounded half up to micro-units, optionally
 * followed by a currency code, with or without a space ("12.50USD",
 * "12.50 USD"). The code must equal currency; with currency NULL no code is
 * allowed. Returns 0 with the amount in *out, or -1 with what is wrong and
 * how to write it in err (err may be NULL). */
int pgt_money_parse(const char *text, const char *currency, int64_t *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
