/* Pricing: what a statement costs in integer micro-units of the configured
 * currency. Pure functions: no I/O, no allocation, safe from any thread.
 * Amounts as text (pgt_money_format, pgt_money_parse) are in money.h. */
#ifndef PGTALLY_PRICING_H
#define PGTALLY_PRICING_H

#include <stddef.h>
#include <stdint.h>

#include "pgtally/config.h"
#include "pgtally/money.h"

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

#endif
