/* Pricing: the cost of a statement from its compute time and the bytes it
 * returned. Money is integer micro-units of the configured currency so sums
 * never drift; amounts as text are base/money.c. */
#include "pgtally/pricing.h"

#include <math.h>

void pgt_pricing_from_config(const pgt_config_t *cfg, pgt_price_t *out)
{
    out->per_compute_second_micro = cfg->price_compute_second_micro;
    out->per_gib_micro = cfg->price_gib_micro;
    out->per_query_micro = cfg->price_query_micro;
}

int64_t pgt_pricing_cost(const pgt_price_t *p, double compute_s, int64_t bytes_out)
{
    if (!(compute_s > 0)) /* also catches NaN */
        compute_s = 0;
    if (bytes_out < 0)
        bytes_out = 0;
    /* Dividing by 2^30 is exact in binary floating point. */
    double v = compute_s * (double)p->per_compute_second_micro +
               ldexp((double)bytes_out, -30) * (double)p->per_gib_micro;
    v = round(v) + (double)p->per_query_micro;
    /* 2^63 is exactly representable; anything at or above it saturates. */
    if (!(v < 9223372036854775808.0))
        return INT64_MAX;
    if (v < -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)v;
}
