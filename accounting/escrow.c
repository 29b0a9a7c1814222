/* Ticket ids (escrow.h). Six characters of Crockford's base32 are 30 bits:
 * among a thousand live tickets two share an id about once in two
 * thousand ledgers, and tickets expire. */
#include "pgtally/escrow.h"

#include <ctype.h>
#include <string.h>

#include "pgtally/text.h"

#define DIGITS 6
static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

void pgt_ticket_id(const char *user, const char *database, uint64_t fingerprint, uint64_t constants,
                   char out[PGT_TICKET_LEN])
{
    /* The names with their NULs, so that ("ab", "c") and ("a", "bc")
     * differ. */
    uint64_t h = pgt_fnv1a(PGT_FNV_BASIS, user, strlen(user) + 1);
    h = pgt_fnv1a(h, database, strlen(database) + 1);
    h = pgt_fnv1a(h, &fingerprint, sizeof(fingerprint));
    h = pgt_mix64(pgt_fnv1a(h, &constants, sizeof(constants)));
    out[0] = 'T';
    out[1] = '-';
    for (int i = 0; i < DIGITS; i++)
        out[2 + i] = alphabet[(h >> (5 * i)) & 31];
    out[2 + DIGITS] = '\0';
}

/* The value of one typed character, or -1. */
static int digit_of(char c)
{
    c = (char)toupper((unsigned char)c);
    if (c == 'O')
        return 0;
    if (c == 'I' || c == 'L')
        return 1;
    const char *p = c ? strchr(alphabet, c) : NULL;
    return p ? (int)(p - alphabet) : -1;
}

bool pgt_ticket_parse(const char *text, char out[PGT_TICKET_LEN])
{
    if ((text[0] == 'T' || text[0] == 't') && text[1] == '-')
        text += 2;
    if (strlen(text) != DIGITS)
        return false;
    out[0] = 'T';
    out[1] = '-';
    for (int i = 0; i < DIGITS; i++) {
        int d = digit_of(text[i]);
        if (d < 0)
            return false;
        out[2 + i] = alphabet[d];
    }
    out[2 + DIGITS] = '\0';
    return true;
}
