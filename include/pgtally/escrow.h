/* Escrow: a statement refused by a budget, a per-query cap or the guard
 * carries a ticket that an approver can grant (docs/escrow.md). This
 * header holds what the loop, the ledger and pgtallyctl must agree on. */
#ifndef PGTALLY_ESCROW_H
#define PGTALLY_ESCROW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "T-" and six characters of Crockford's base32, and a NUL. */
#define PGT_TICKET_LEN 9

/* The ticket of a refused request: the same user, database, shape and
 * constants hash (pgt_fp_constants_hash) give the same ticket on every
 * pgtally that shares a ledger, so a re-run refused again names the ticket
 * already asked for. Writes "T-XXXXXX" into out. */
void pgt_ticket_id(const char *user, const char *database, uint64_t fingerprint, uint64_t constants,
                   char out[PGT_TICKET_LEN]);

/* Reads a ticket as a person types it: in any case, with or without "T-",
 * with O for 0 and I or L for 1 (Crockford's reading). Writes the canonical
 * form into out. Returns false when text is not a ticket. */
bool pgt_ticket_parse(const char *text, char out[PGT_TICKET_LEN]);

#endif
