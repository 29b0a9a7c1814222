/* Pricing: what a statement costs in integer micro-units of the configured
 * currency, and how amounts are read and written for people. Pure
 * functions: no I/O, no allocation, safe from any thread. Part of the core
 * library, since the configuration reads amounts with it. */
#ifndef PGTALLY_PRICING_H
#define PGTALLY_PRICING_H

#include <stddef.h>
#include <stdint.h>

#include "pgtally/config.h"

/* One price list; all amounts in micro-units (1e-6) of the currency. */
typedef struct pgt_price {
    int64_t per_compute_second_micro; /* one second of upstream compute */
    int64_t per_gib_micro;            /* one GiB (2^30 bytes) sent to the client */
    int64_t per_query_micro;          /* flat price of every statement */
} pgt_price_t;

/* Copies the [pricing] keys of a config into a price list. */
void pgt_pricing_from_config(const pgt_config_t *cfg, pgt_price_t *out);

/* Returns round(compute_s * per_compute_second + bytes_out / 2^30 *
 * per_gib) + per_query, in micro-units, halves away from zero. Negative or
 * NaN compute_s and negative bytes_out count as 0; the result saturates at
 * INT64_MAX instead of overflowing. */
int64_t pgt_pricing_cost(const pgt_price_t *p, double compute_s, int64_t bytes_out);

/* Longest text the formatters write, including the NUL: sign, 13 integer
 * digits, point, 6 decimals, space, a currency of up to 7 characters. */
#define PGT_MONEY_TEXT_MAX 40

/* Writes micro as an exact amount with 6 decimals and the currency
 * ("1.234567 USD"; currency NULL or "" writes the number alone). Returns buf,
 * which must hold at least PGT_MONEY_TEXT_MAX bytes for any amount. */
char *pgt_pricing_format(int64_t micro, const char *currency, char *buf, size_t len);

/* Writes micro for people: 2 decimals from 0.01 up ("0.42 USD"), otherwise
 * two significant digits without trailing zeros ("0.0012 USD", "0.00003 USD",
 * "0.00 USD" for zero). Amounts round half away from zero. Returns buf. */
char *pgt_pricing_format_short(int64_t micro, const char *currency, char *buf, size_t len);

/* Largest amount pgt_pricing_parse accepts, in whole units. */
#define PGT_MONEY_MAX_UNITS 1000000000000LL

/* Parses an amount of money: digits with an optional decimal point
 * ("12.50", "0.0004", "3"), rounded half up to micro-units, optionally
 * followed by a currency code, with or without a space ("12.50USD",
 * "12.50 USD"). The code must equal currency; with currency NULL no code is
 * allowed. Returns 0 with the amount in *out, or -1 with what is wrong and
 * how to write it in err (err may be NULL). */
int pgt_pricing_parse(const char *text, const char *currency, int64_t *out, char *err,
                      size_t errlen) __attribute__((warn_unused_result));

#endif
