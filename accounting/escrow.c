/* Ticket ids (escrow.h). Six characters of Crockford's base32 are 30 bits:
 * among a thousand live tickets two share an id about once in two
 * thousand ledgers, and tickets expire. */
#include "pgtally/escrow.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/buf.h"
#include "pgtally/period.h"
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

/* ---- Approvals and tickets in the ledger ---------------------------------- */

/* What pgt_db_run's errors begin with. */
#define DOING "approvals"

/* What a row callback returns when out of memory (not -1: see
 * budget_store.c). */
#define ROW_FAILED 2

/* Copies column i of r ("" for NULL); NULL when out of memory. */
static char *column_dup(const pgt_db_row_t *r, int i)
{
    const char *s = pgt_db_isnull(r, i) ? "" : pgt_db_text(r, i);
    return strdup(s ? s : "");
}

void pgt_approval_free(pgt_approval_t *a)
{
    free(a->user);
    free(a->database);
    free(a->created_by);
    a->user = a->database = a->created_by = NULL;
}

void pgt_approval_set_clear(pgt_approval_set_t *set)
{
    for (size_t i = 0; i < set->n; i++)
        pgt_approval_free(&set->a[i]);
    free(set->a);
    *set = (pgt_approval_set_t){0};
}

/* What approval_row fills. */
typedef struct approval_load {
    pgt_approval_set_t *set; /* the approvals read */
    size_t cap;              /* slots allocated in set->a */
} approval_load_t;

#define APPROVAL_COLUMNS                                                                           \
    "id, ticket, \"user\", database, fingerprint, constants, max_micro, until_us, created_us, "    \
    "created_by"

/* Reads a row of APPROVAL_COLUMNS into a; false when out of memory (then
 * the strings read so far are a's, to free). */
static bool approval_from_row(const pgt_db_row_t *r, pgt_approval_t *a)
{
    a->id = pgt_db_int(r, 0);
    const char *t = pgt_db_text(r, 1);
    snprintf(a->ticket, sizeof(a->ticket), "%s", t ? t : "");
    a->fingerprint = (uint64_t)pgt_db_int(r, 4);
    a->constants = pgt_db_isnull(r, 5) ? 0 : (uint64_t)pgt_db_int(r, 5);
    a->max_micro = pgt_db_isnull(r, 6) ? -1 : pgt_db_int(r, 6);
    a->until_us = pgt_db_int(r, 7);
    a->created_us = pgt_db_int(r, 8);
    a->user = column_dup(r, 2);
    a->database = column_dup(r, 3);
    a->created_by = column_dup(r, 9);
    return a->user && a->database && a->created_by;
}

static int approval_row(const pgt_db_row_t *r, void *arg)
{
    approval_load_t *l = arg;
    pgt_approval_t *a = pgt_push(&l->set->a, &l->set->n, &l->cap, sizeof(*a));
    return a && approval_from_row(r, a) ? 0 : ROW_FAILED;
}

/* Whether db has the approvals table: a ledger of a release before them,
 * opened read-only, has not. */
static bool have_approvals(pgt_db_t *db)
{
    return pgt_db_has_table(db, "approvals");
}

int pgt_approval_load(pgt_db_t *db, int64_t now_us, pgt_approval_set_t *set, char *err,
                      size_t errlen)
{
    if (!have_approvals(db))
        return 0;
    approval_load_t l = {.set = set};
    int rc = pgt_db_run(
        db, DOING, err, errlen, approval_row, &l,
        "SELECT " APPROVAL_COLUMNS " FROM approvals WHERE until_us > ?1 ORDER BY id", "i", now_us);
    if (rc == ROW_FAILED)
        snprintf(err, errlen, "%s: out of memory", DOING);
    return rc == 0 ? 0 : -1;
}

const pgt_approval_t *pgt_approval_match(const pgt_approval_set_t *set, const char *user,
                                         const char *database, uint64_t fingerprint,
                                         uint64_t constants, int64_t now_us)
{
    const pgt_approval_t *best = NULL;
    for (size_t i = 0; set && i < set->n; i++) {
        const pgt_approval_t *a = &set->a[i];
        if (a->fingerprint == fingerprint && (a->constants == 0 || a->constants == constants) &&
            now_us < a->until_us && strcmp(a->user, user) == 0 &&
            strcmp(a->database, database) == 0 && (!best || a->created_us >= best->created_us))
            best = a;
    }
    return best;
}

/* ---- Tickets ---------------------------------------------------------------- */

/* What ticket_row fills. */
typedef struct ticket_read {
    pgt_ticket_t *t; /* the tickets read */
    size_t n;        /* entries used */
    size_t cap;      /* slots allocated */
} ticket_read_t;

/* The refusals of one request that a ticket can approve: by a budget
 * (53400) or a cap or the guard (54000), not by a rule (an admin decided
 * those by shape: pgtallyctl rule rm lifts them). */
#define TICKET_ROWS                                                                                \
    "SELECT \"user\", database, fingerprint, coalesce(constants, 0), count(*), min(started_at),"   \
    " max(started_at), coalesce(max(est_cost_micro), -1), coalesce(max(budget_id), 0),"            \
    " max(sqlstate), max(normalized) FROM queries WHERE day >= ?1 AND started_at >= ?2"            \
    " AND status = 'refused' AND rule_id IS NULL AND sqlstate IN ('53400', '54000')"               \
    " AND fingerprint IS NOT NULL GROUP BY \"user\", database, fingerprint, coalesce(constants, "  \
    "0)"                                                                                           \
    " ORDER BY max(started_at) DESC LIMIT ?3"

static int ticket_row(const pgt_db_row_t *r, void *arg)
{
    ticket_read_t *l = arg;
    pgt_ticket_t *t = pgt_push(&l->t, &l->n, &l->cap, sizeof(*t));
    if (!t)
        return ROW_FAILED;
    t->user = column_dup(r, 0);
    t->database = column_dup(r, 1);
    t->normalized = column_dup(r, 10);
    if (!t->user || !t->database || !t->normalized)
        return ROW_FAILED;
    t->fingerprint = (uint64_t)pgt_db_int(r, 2);
    t->constants = (uint64_t)pgt_db_int(r, 3);
    t->refusals = pgt_db_int(r, 4);
    t->first_us = pgt_db_int(r, 5);
    t->last_us = pgt_db_int(r, 6);
    t->est_micro = pgt_db_int(r, 7);
    t->budget_id = pgt_db_int(r, 8);
    const char *st = pgt_db_text(r, 9);
    snprintf(t->sqlstate, sizeof(t->sqlstate), "%s", st ? st : "");
    pgt_ticket_id(t->user, t->database, t->fingerprint, t->constants, t->id);
    return 0;
}

/* What use_row fills. */
typedef struct use_read {
    pgt_approval_use_t *u; /* the approvals read */
    size_t n;              /* entries used */
    size_t cap;            /* slots allocated */
} use_read_t;

/* Takes a row of APPROVAL_COLUMNS, then its runs and their cost. */
static int use_row(const pgt_db_row_t *r, void *arg)
{
    use_read_t *l = arg;
    pgt_approval_use_t *u = pgt_push(&l->u, &l->n, &l->cap, sizeof(*u));
    if (!u || !approval_from_row(r, &u->a))
        return ROW_FAILED;
    u->runs = pgt_db_int(r, 10);
    u->runs_micro = pgt_db_int(r, 11);
    return 0;
}

void pgt_approvals_free(pgt_approval_use_t *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pgt_approval_free(&u[i].a);
    free(u);
}

int pgt_approvals_read(pgt_db_t *db, int64_t from_us, int64_t to_us, size_t max,
                       pgt_approval_use_t **out, size_t *n, char *err, size_t errlen)
{
    use_read_t l = {0};
    int rc = 0;
    if (have_approvals(db))
        rc = pgt_db_run(db, DOING, err, errlen, use_row, &l,
                        "SELECT " APPROVAL_COLUMNS ", (SELECT count(*) FROM queries q WHERE"
                        " q.approval_id = a.id AND q.started_at >= ?1 AND q.started_at < ?2),"
                        " (SELECT coalesce(sum(q.cost_micro), 0) FROM queries q WHERE"
                        " q.approval_id = a.id AND q.started_at >= ?1 AND q.started_at < ?2)"
                        " FROM approvals a WHERE a.created_us < ?2 AND a.until_us > ?1"
                        " ORDER BY a.id LIMIT ?3",
                        "iii", from_us, to_us, (int64_t)max);
    if (rc == ROW_FAILED)
        snprintf(err, errlen, "%s: out of memory", DOING);
    if (rc != 0) {
        pgt_approvals_free(l.u, l.n);
        return -1;
    }
    *out = l.u;
    *n = l.n;
    return 0;
}

/* Gives each ticket its latest approval of u (by id). Returns 0, or -1
 * when out of memory. */
static int attach_approvals(pgt_ticket_t *t, size_t nt, const pgt_approval_use_t *u, size_t nu)
{
    for (size_t k = 0; k < nu; k++)
        for (size_t i = 0; i < nt; i++) {
            if (strcmp(t[i].id, u[k].a.ticket) != 0 || u[k].a.id < t[i].approval_id)
                continue;
            char *by = strdup(u[k].a.created_by);
            if (!by)
                return -1;
            free(t[i].approved_by);
            t[i].approved_by = by;
            t[i].approval_id = u[k].a.id;
            t[i].approved_until = u[k].a.until_us;
            t[i].runs = u[k].runs;
            t[i].runs_micro = u[k].runs_micro;
        }
    return 0;
}

void pgt_tickets_free(pgt_ticket_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(t[i].user);
        free(t[i].database);
        free(t[i].normalized);
        free(t[i].approved_by);
    }
    free(t);
}

int pgt_tickets_read(pgt_db_t *db, int64_t since_us, size_t max, pgt_ticket_t **out, size_t *n,
                     char *err, size_t errlen)
{
    ticket_read_t l = {0};
    int rc = pgt_db_run(db, DOING, err, errlen, ticket_row, &l, TICKET_ROWS, "iii",
                        (int64_t)pgt_local_day(since_us), since_us, (int64_t)max);
    pgt_approval_use_t *u = NULL;
    size_t nu = 0;
    /* The approvals that can be a recent ticket's, and their runs since. */
    if (rc == 0 && l.n)
        rc = pgt_approvals_read(db, since_us - PGT_APPROVAL_MAX_US, INT64_MAX, 100000, &u, &nu, err,
                                errlen);
    if (rc == 0 && attach_approvals(l.t, l.n, u, nu) != 0)
        rc = ROW_FAILED;
    pgt_approvals_free(u, nu);
    if (rc == ROW_FAILED)
        snprintf(err, errlen, "%s: out of memory", DOING);
    if (rc != 0) {
        pgt_tickets_free(l.t, l.n);
        return -1;
    }
    *out = l.t;
    *n = l.n;
    return 0;
}

int pgt_ticket_approve(pgt_db_t *db, const pgt_approve_req_t *req, pgt_approval_t *out, char *err,
                       size_t errlen)
{
    memset(out, 0, sizeof(*out));
    char id[PGT_TICKET_LEN];
    if (!pgt_ticket_parse(req->ticket, id))
        return 1;
    pgt_ticket_t *t;
    size_t n;
    if (pgt_tickets_read(db, req->now_us - PGT_TICKET_TTL_US, 100000, &t, &n, err, errlen) != 0)
        return -1;
    const pgt_ticket_t *hit = NULL;
    for (size_t i = 0; i < n && !hit; i++)
        if (strcmp(t[i].id, id) == 0)
            hit = &t[i];
    int rc = hit ? 0 : 1;
    if (hit) {
        snprintf(out->ticket, sizeof(out->ticket), "%s", id);
        out->fingerprint = hit->fingerprint;
        out->constants = req->shape_only ? 0 : hit->constants;
        out->max_micro = req->max_micro >= 0  ? req->max_micro
                         : hit->est_micro > 0 ? 2 * hit->est_micro
                                              : -1;
        out->until_us = req->now_us + req->for_us;
        out->created_us = req->now_us;
        out->user = strdup(hit->user);
        out->database = strdup(hit->database);
        out->created_by = strdup(req->by);
        if (!out->user || !out->database || !out->created_by) {
            snprintf(err, errlen, "%s: out of memory", DOING);
            rc = -1;
        }
    }
    pgt_tickets_free(t, n);
    if (rc == 0)
        rc = pgt_db_int_query(db, DOING, err, errlen, &out->id,
                              "INSERT INTO approvals (ticket, \"user\", database, fingerprint, "
                              "constants, max_micro, until_us, created_us, created_by) VALUES "
                              "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
                              "tttiiniit", out->ticket, out->user, out->database,
                              (int64_t)out->fingerprint, (int64_t)out->constants, out->max_micro,
                              out->until_us, out->created_us, out->created_by);
    if (rc != 0)
        pgt_approval_free(out);
    return rc;
}
