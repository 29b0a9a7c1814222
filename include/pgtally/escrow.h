/* Escrow: a statement refused by a budget, a per-query cap or the guard
 * carries a ticket that an approver can grant (docs/escrow.md). This
 * header holds what the loop, the ledger and pgtallyctl must agree on. */
#ifndef PGTALLY_ESCROW_H
#define PGTALLY_ESCROW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/db.h"

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

/* How long a refused request can be approved: its ticket lists and
 * approves while a refusal of it is this recent. */
#define PGT_TICKET_TTL_US (INT64_C(24) * 3600 * 1000000)

/* The longest approval (pgtallyctl ticket approve --for). */
#define PGT_APPROVAL_MAX_US (INT64_C(7) * 24 * 3600 * 1000000)

/* One approval: for a while, a user's statements of one shape (with one
 * constants hash, or any) run where a budget, a per-query cap or the guard
 * would refuse them, each up to a cap of its own. */
typedef struct pgt_approval {
    int64_t id;                  /* row id */
    char ticket[PGT_TICKET_LEN]; /* the ticket it approved */
    char *user;                  /* whose statements (owned) */
    char *database;              /* in which database (owned) */
    uint64_t fingerprint;        /* of which shape */
    uint64_t constants;          /* with these constants only; 0: any (--shape-only) */
    int64_t max_micro;           /* the cap of one run, micro-units; -1: none */
    int64_t until_us;            /* in force before then, unix microseconds */
    int64_t created_us;          /* when it was granted */
    char *created_by;            /* who granted it (owned) */
} pgt_approval_t;

/* The approvals in force of one settings version. */
typedef struct pgt_approval_set {
    pgt_approval_t *a; /* by id */
    size_t n;          /* entries in a */
} pgt_approval_set_t;

/* Loads into set the approvals in force at now_us (a ledger of a release
 * before approvals has none). Returns 0, or -1 with the cause in err. */
int pgt_approval_load(pgt_db_t *db, int64_t now_us, pgt_approval_set_t *set, char *err,
                      size_t errlen) __attribute__((warn_unused_result));

/* Frees the approvals of set (not set itself). */
void pgt_approval_set_clear(pgt_approval_set_t *set);

/* The approval of set in force at now_us for a statement of shape
 * fingerprint with constants hash constants, sent by user to database: the
 * latest granted of those that match. NULL when none. */
const pgt_approval_t *pgt_approval_match(const pgt_approval_set_t *set, const char *user,
                                         const char *database, uint64_t fingerprint,
                                         uint64_t constants, int64_t now_us);

/* One ticket: the refusals of one request (user, database, shape,
 * constants) in the last PGT_TICKET_TTL_US, and its latest approval. */
typedef struct pgt_ticket {
    char id[PGT_TICKET_LEN]; /* T-XXXXXX */
    char *user;              /* (owned) */
    char *database;          /* (owned) */
    char *normalized;        /* the shape's text, constants as $n (owned; may be NULL) */
    uint64_t fingerprint;    /* the shape */
    uint64_t constants;      /* the constants hash */
    int64_t refusals;        /* how often it was refused */
    int64_t first_us;        /* the first refusal */
    int64_t last_us;         /* the last */
    int64_t est_micro;       /* the highest estimate refused, -1: unknown */
    int64_t budget_id;       /* the budget that refused it, 0: a cap or the guard */
    char sqlstate[6];        /* 53400 (budget) or 54000 (cap, guard) */
    int64_t approval_id;     /* its latest approval, 0: none */
    int64_t approved_until;  /* until when */
    char *approved_by;       /* by whom (owned; NULL without an approval) */
    int64_t runs;            /* statements recorded under that approval */
    int64_t runs_micro;      /* what they cost */
} pgt_ticket_t;

/* Reads the tickets refused since since_us, newest refusal first, at most
 * max. Returns 0 with a malloc'd array in *out (pgt_tickets_free), or -1
 * with the cause in err. */
int pgt_tickets_read(pgt_db_t *db, int64_t since_us, size_t max, pgt_ticket_t **out, size_t *n,
                     char *err, size_t errlen) __attribute__((warn_unused_result));
void pgt_tickets_free(pgt_ticket_t *t, size_t n);

/* An approval and what ran under it. */
typedef struct pgt_approval_use {
    pgt_approval_t a;   /* the approval */
    int64_t runs;       /* statements recorded under it in the window read */
    int64_t runs_micro; /* what they cost */
} pgt_approval_use_t;

/* Reads the approvals in force at some time of [from_us, to_us), with the
 * statements run under them then, by id, at most max. Returns 0 with a
 * malloc'd array in *out (pgt_approvals_free), or -1 with the cause in
 * err. A ledger of a release before approvals has none. */
int pgt_approvals_read(pgt_db_t *db, int64_t from_us, int64_t to_us, size_t max,
                       pgt_approval_use_t **out, size_t *n, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void pgt_approvals_free(pgt_approval_use_t *u, size_t n);

/* What an approver asks for: pgtallyctl ticket approve, APPROVE. */
typedef struct pgt_approve_req {
    const char *ticket; /* as typed (pgt_ticket_parse reads it) */
    int64_t for_us;     /* how long, at most PGT_APPROVAL_MAX_US */
    int64_t max_micro;  /* the cap of one run; -1: twice the highest estimate refused */
    bool shape_only;    /* any constants of the shape, not only the refused ones */
    const char *by;     /* who approves */
    int64_t now_us;     /* the time */
} pgt_approve_req_t;

/* Approves a ticket refused in the last PGT_TICKET_TTL_US: writes its
 * approvals row, which every pgtally of the ledger loads with its budgets.
 * Returns 0 with the approval in *out (free its strings with
 * pgt_approval_free), 1 when no such ticket was refused then (or the id
 * does not read as a ticket), or -1 with the cause in err. */
int pgt_ticket_approve(pgt_db_t *db, const pgt_approve_req_t *req, pgt_approval_t *out, char *err,
                       size_t errlen) __attribute__((warn_unused_result));

/* Frees the strings of a. */
void pgt_approval_free(pgt_approval_t *a);

#endif
