/* Per-session metering state: prepared statements, portals, and the FIFO
 * that pairs each Query and Execute with the server's answers (protocol
 * docs, "Message Flow": Simple Query, Extended Query, Pipelining). Only the
 * loop thread touches it. */
#include "pgtally/intercept.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "pgtally/fingerprint.h"
#include "pgtally/period.h"
#include "pgtally/text.h"
#include "pgtally/wire.h"

const uint8_t pgt_intercept_capture[256] = {['Q'] = 1, ['P'] = 1, ['B'] = 1, ['E'] = 1, ['C'] = 1};

/* A named prepared statement or portal and the SQL behind it. */
typedef struct named {
    struct named *next;   /* next in the list */
    char *name;           /* statement or portal name ("" is the unnamed one) */
    pgt_text_t *text;     /* its SQL (a reference) */
    uint8_t *types;       /* statement: Parse's parameter types (count, OIDs), or NULL */
    size_t types_len;     /* their length in bytes */
    pgt_estimate_t est;   /* portal: estimate of its executions (key 0: none) */
    uint64_t params;      /* portal: a hash of its Bind's parameters (formats and values) */
    uint64_t batch;       /* portal: the batch that created it (see sent_batches) */
    bool hold;            /* portal: a cursor WITH HOLD, which outlives its transaction */
    bool gone;            /* portal: the unnamed one, dropped by the server but kept here
                             (without text) so that the next Bind reuses it */
    uint64_t syncs;       /* portal: Syncs sent before its Bind (see sent_syncs) */
    uint64_t taken_batch; /* portal: the unnamed one, taken by a Query still owed (its
                             batch; the text is kept, in case the server skips it); 0: none */
    uint64_t bind_seq;    /* portal: which Bind made it (see binds_sent); 0: its Bind
                             completed, or a cursor of SQL DECLARE */
    bool prev_portal;     /* the unnamed portal: one was there before its Bind, which a
                             skipped Bind (or one failing before it makes its portal) leaves */
    uint64_t prev_seq;    /* ... and the Bind that made that one (0: completed) */
} named_t;

/* A change to the prepared statements that the server has not accepted
 * yet: a Parse, until its ParseComplete, or an SQL PREPARE or DEALLOCATE,
 * until its CommandComplete. It takes effect when sent, so that a Bind
 * right behind it finds its statement; an error before it is accepted
 * voids it (the server rejected it, or skipped it on the way to the
 * client's Sync), and the statements it replaced come back. */
typedef struct change {
    struct change *next; /* next newer change */
    uint64_t batch;      /* the batch it was sent in (see sent_batches) */
    uint8_t confirm;     /* what accepts it: '1' ParseComplete, 'P' PREPARE, 'D' DEALLOCATE,
                            '3' CloseComplete, 'K' DECLARE CURSOR, 'L' CLOSE CURSOR,
                            'Q' any reply to a Query (which drops the unnamed statement) */
    bool portal;         /* it is about portals (else about statements) */
    bool failed;         /* its Parse failed (the unnamed statement's: the old one is gone too) */
    char *name;          /* the name it set or dropped; NULL for DEALLOCATE ALL, CLOSE ALL */
    named_t *old;        /* the statements (or portals) it replaced or dropped, to restore */
} change_t;

struct pgt_intercept {
    pgt_estimator_t *estimator; /* learns from finished statements, or NULL */
    pgt_estimate_t next_est;    /* estimate for the next Query (key 0: none) */
    pgt_meter_t *meter;         /* where finished executions go */
    pgt_attr_t *attr;           /* who this session is (a reference) */
    named_t *statements;        /* prepared statements */
    named_t *portals;           /* portals */
    pgt_exec_t *head;           /* FIFO of executions and markers, oldest first */
    pgt_exec_t *tail;           /* newest */
    uint64_t last_done_ns;      /* when the upstream last finished a statement */
    int64_t last_done_us;       /* the same, wall-clock µs */
    int64_t cur_rows;           /* DataRows of the statement being answered */
    int64_t cur_bytes;          /* bytes sent to the client for it */
    pgt_budgets_t *budgets;     /* where finished statements' cost goes, or NULL */
    pgt_query_status_t outcome; /* status of the next failure (budget refusals), or OK */
    int64_t outcome_budget;     /* and the budget behind it */
    change_t *changes;          /* changes not yet accepted, oldest first */
    change_t *changes_tail;     /* newest */
    uint64_t sent_batches;      /* Query, Sync and FunctionCall messages sent */
    uint64_t sent_syncs;        /* Sync messages sent */
    uint64_t answered_batches;  /* ReadyForQuery seen (or owed no more) */
    char batch_error[6];        /* SQLSTATE of a Parse, Bind, Describe or Close that failed since
                                   the last ReadyForQuery: the Execute behind it failed with it */
    pgt_text_t *failed_parse;   /* the SQL of the named statement whose Parse failed then */
    uint64_t dropped_before;    /* portals of the batches before this one are gone (but
                                   cursors WITH HOLD) */
    uint64_t binds_sent;        /* Binds the server answers, sent */
    uint64_t binds_answered;    /* and answered (BindComplete, an error, skipped) */
};

static int64_t wall_us(void)
{
    return pgt_clock_us();
}

pgt_intercept_t *pgt_intercept_new(pgt_meter_t *m, pgt_estimator_t *est, uint64_t session_id,
                                   int32_t backend_pid, const char *user, const char *database,
                                   const char *application, const char *client_addr)
{
    pgt_intercept_t *ic = calloc(1, sizeof(*ic));
    if (!ic)
        return NULL;
    ic->meter = m;
    ic->estimator = est;
    ic->next_est = PGT_ESTIMATE_NONE;
    ic->attr = pgt_attr_new(session_id, user, database, application, client_addr);
    if (!ic->attr) {
        free(ic);
        return NULL;
    }
    ic->attr->backend_pid = backend_pid;
    return ic;
}

/* ---- names --------------------------------------------------------------- */

static named_t **find(named_t **list, const char *name)
{
    for (named_t **pp = list; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->name, name) == 0)
            return pp;
    return NULL;
}

static void forget(named_t **list, const char *name)
{
    named_t **pp = find(list, name);
    if (!pp)
        return;
    named_t *n = *pp;
    *pp = n->next;
    pgt_text_unref(n->text);
    free(n->types);
    free(n->name);
    free(n);
}

/* Binds name to text (taking a new reference), replacing an older one.
 * Returns the entry, or NULL when out of memory. */
static named_t *remember(named_t **list, const char *name, pgt_text_t *text)
{
    named_t **pp = find(list, name);
    named_t *n;
    if (pp) {
        n = *pp;
        pgt_text_unref(n->text);
        free(n->types);
    } else {
        n = malloc(sizeof(*n));
        if (!n || !(n->name = strdup(name))) {
            free(n);
            return NULL;
        }
        n->next = *list;
        *list = n;
    }
    n->text = pgt_text_ref(text);
    n->types = NULL;
    n->types_len = 0;
    n->est = PGT_ESTIMATE_NONE;
    n->params = 0;
    n->batch = n->bind_seq = 0;
    n->prev_portal = false;
    n->prev_seq = 0;
    n->hold = n->gone = false;
    n->taken_batch = 0;
    return n;
}

/* The unnamed portal is replaced (a simple Query runs in it) or dropped:
 * its entry stays, without text, for the next Bind. */
static void unnamed_portal_gone(pgt_intercept_t *ic)
{
    named_t **pp = find(&ic->portals, "");
    if (!pp)
        return;
    (*pp)->gone = true;
    (*pp)->taken_batch = 0;
    pgt_text_unref((*pp)->text);
    (*pp)->text = NULL;
}

/* A Query sent takes the unnamed portal, unless the server skips it
 * (after an extended-protocol error): until it is answered, the portal's
 * text stays, for an Execute of it sent behind the Query. */
static void unnamed_portal_taken(pgt_intercept_t *ic)
{
    named_t **pp = find(&ic->portals, "");
    if (!pp || ((*pp)->gone && !(*pp)->taken_batch) || !(*pp)->text) {
        unnamed_portal_gone(ic);
        return;
    }
    (*pp)->gone = true;
    (*pp)->taken_batch = ic->sent_batches + 1; /* the latest of the Queries that take it */
}

/* The Query of batch `batch` was answered (ran: skipped false) or skipped:
 * the Executes of the unnamed portal sent behind it, while it was owed,
 * learn whether their portal was there. */
static void unnamed_portal_settled(pgt_intercept_t *ic, uint64_t batch, bool skipped)
{
    named_t **pp = find(&ic->portals, "");
    if (pp && (*pp)->taken_batch && (!skipped || (*pp)->taken_batch == batch)) {
        if (skipped) { /* none of the Queries that took it ran */
            (*pp)->gone = false;
        } else {
            pgt_text_unref((*pp)->text);
            (*pp)->text = NULL;
        }
        (*pp)->taken_batch = 0;
    }
    /* A Query that ran took it from every Execute behind it; one skipped
     * leaves it to those behind no later Query. */
    for (pgt_exec_t *e = ic->head; e; e = e->next) {
        if (!e->taken_batch || (skipped && e->taken_batch != batch))
            continue;
        if (!skipped)
            e->unknown_portal = true;
        e->taken_batch = 0;
    }
}

/* The portal name as the server has it, or NULL. */
static named_t *find_portal(pgt_intercept_t *ic, const char *name)
{
    named_t **pp = find(&ic->portals, name);
    return pp && !(*pp)->gone ? *pp : NULL;
}

static void forget_all(named_t **list)
{
    while (*list)
        forget(list, (*list)->name);
}

/* ---- changes the server has yet to accept -------------------------------- */

static void free_list(named_t *n)
{
    while (n) {
        named_t *next = n->next;
        pgt_text_unref(n->text);
        free(n->types);
        free(n->name);
        free(n);
        n = next;
    }
}

/* Moves the statement name (all named ones for NULL) out of the list, to
 * the change about to set or drop it, and queues the change. Without
 * memory the statements just go. The unnamed statement's Parse is a change
 * too, so that an error is matched to the Parse it answers: the server
 * drops the old unnamed statement as that Parse begins (postgres.c,
 * exec_parse_message), so it comes back only when the Parse was skipped.
 * DEALLOCATE ALL leaves it. */
static void change_begin(pgt_intercept_t *ic, const char *name, uint8_t confirm)
{
    bool portal = (confirm == '3' && name && name[0] == 'P') || confirm == 'K' || confirm == 'L';
    if (confirm == '3') /* a Close: 'S' or 'P' and the name */
        name++;
    if (!portal && name && !name[0] && confirm == '3') {
        forget(&ic->statements, name);
        return;
    }
    change_t *c = calloc(1, sizeof(*c));
    if (c && name && !(c->name = strdup(name))) {
        free(c);
        c = NULL;
    }
    if (c)
        c->portal = portal;
    named_t **pp = portal ? &ic->portals : &ic->statements;
    while (*pp) {
        named_t *n = *pp;
        bool take = name ? strcmp(n->name, name) == 0 : n->name[0] != 0;
        if (!take) {
            pp = &n->next;
            continue;
        }
        *pp = n->next;
        n->next = NULL;
        if (c) {
            n->next = c->old;
            c->old = n;
        } else {
            free_list(n);
        }
    }
    if (!c)
        return;
    c->batch = ic->sent_batches;
    c->confirm = confirm;
    if (ic->changes_tail)
        ic->changes_tail->next = c;
    else
        ic->changes = c;
    ic->changes_tail = c;
}

static change_t *change_pop(pgt_intercept_t *ic)
{
    change_t *c = ic->changes;
    ic->changes = c->next;
    if (!ic->changes)
        ic->changes_tail = NULL;
    c->next = NULL;
    return c;
}

static void change_free(change_t *c)
{
    free_list(c->old);
    free(c->name);
    free(c);
}

/* The server accepted the oldest change of the batch it answers, if it is
 * one that what accepts. */
static void change_accepted(pgt_intercept_t *ic, uint8_t what)
{
    change_t *c = ic->changes;
    if (c && c->confirm == what && c->batch <= ic->answered_batches)
        change_free(change_pop(ic));
}

/* An error, or the end of the batch: the changes of the batch answered
 * that the server did not accept are undone, newest first. */
static void changes_void(pgt_intercept_t *ic)
{
    change_t *undo = NULL;
    while (ic->changes && ic->changes->batch <= ic->answered_batches) {
        change_t *c = change_pop(ic);
        c->next = undo;
        undo = c;
    }
    while (undo) {
        change_t *c = undo;
        undo = c->next;
        named_t **list = c->portal ? &ic->portals : &ic->statements;
        if (c->name && c->confirm != '3')
            forget(list, c->name);
        if (c->failed && c->name && !c->name[0]) {
            free_list(c->old); /* the server dropped it as the Parse began */
            c->old = NULL;
        }
        while (c->old) {
            named_t *n = c->old;
            c->old = n->next;
            forget(list, n->name);
            n->next = *list;
            *list = n;
        }
        change_free(c);
    }
}

/* ---- the FIFO ------------------------------------------------------------ */

static pgt_exec_t *push(pgt_intercept_t *ic, pgt_text_t *text, bool extended, bool marker)
{
    pgt_exec_t *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->is_marker = marker;
    e->extended = extended;
    e->est = PGT_ESTIMATE_NONE;
    if (!marker) {
        e->attr = ic->attr;
        ic->attr->refs++;
        e->text = pgt_text_ref(text);
        e->sent_ns = uv_hrtime();
        e->sent_us = wall_us();
    }
    if (ic->tail)
        ic->tail->next = e;
    else
        ic->head = e;
    ic->tail = e;
    return e;
}

static pgt_exec_t *pop(pgt_intercept_t *ic)
{
    pgt_exec_t *e = ic->head;
    if (!e)
        return NULL;
    ic->head = e->next;
    if (!ic->head)
        ic->tail = NULL;
    e->next = NULL;
    return e;
}

/* Hands a finished execution to the meter, with the relations its
 * shape's plan read (a copy of the estimator's string, no parsing here);
 * markers and executions that never ran are just freed. */
static void finish(pgt_intercept_t *ic, pgt_exec_t *e)
{
    if (e->is_marker || e->ndone == 0) {
        pgt_exec_free(e);
        return;
    }
    if (ic->estimator && e->est.key && !e->relations)
        e->relations = pgt_estimator_relations(ic->estimator, e->est.key);
    pgt_meter_add(ic->meter, e);
}

/* Records one completion of the execution at the head of the FIFO. */
static void complete(pgt_intercept_t *ic, pgt_exec_t *e, pgt_query_status_t status,
                     const char *sqlstate, int64_t tag_rows)
{
    if (e->ndone == e->done_cap) {
        int cap = e->done_cap ? e->done_cap * 2 : 1;
        pgt_done_t *d = realloc(e->done, (size_t)cap * sizeof(*d));
        if (!d)
            return;
        e->done = d;
        e->done_cap = cap;
    }
    uint64_t now = uv_hrtime();
    /* In a pipeline the upstream starts on a statement when it was sent or
     * when the one before it finished, whichever is later. */
    uint64_t start = e->sent_ns > ic->last_done_ns ? e->sent_ns : ic->last_done_ns;
    pgt_done_t *d = &e->done[e->ndone++];
    memset(d, 0, sizeof(*d));
    d->end_us = wall_us();
    d->compute_s = now > start ? (double)(now - start) / 1e9 : 0;
    /* Started when the one before ended: the same instant, not one read
     * from two clocks. */
    d->start_us = start == ic->last_done_ns && ic->last_done_us <= d->end_us
                      ? ic->last_done_us
                      : d->end_us - (int64_t)(d->compute_s * 1e6);
    d->rows = ic->cur_rows > tag_rows ? ic->cur_rows : tag_rows;
    d->bytes_out = ic->cur_bytes;
    d->status = status;
    if (sqlstate)
        memcpy(d->sqlstate, sqlstate, 6);
    ic->last_done_ns = now;
    ic->last_done_us = d->end_us;
    if (ic->estimator && e->est.key && status == PGT_QUERY_OK)
        pgt_estimator_learn(ic->estimator, &e->est, d->compute_s, d->bytes_out);
    if (status != PGT_QUERY_OK && ic->outcome != PGT_QUERY_OK) {
        d->status = ic->outcome;
        d->budget_id = ic->outcome_budget;
        ic->outcome = PGT_QUERY_OK;
    }
    if (ic->budgets && d->status != PGT_QUERY_REFUSED) {
        pgt_who_t who = {e->attr->user, e->attr->database, e->attr->application};
        pgt_budgets_spent(ic->budgets, &who,
                          pgt_budgets_cost(ic->budgets, d->compute_s, d->bytes_out));
    }
    ic->cur_rows = 0;
    ic->cur_bytes = 0;
}

/* ---- client messages ------------------------------------------------------ */

/* Reads a NUL-terminated string at *pos; returns NULL when there is none. */
static const char *cstr(const uint8_t *body, size_t len, size_t *pos)
{
    if (*pos >= len)
        return NULL;
    const uint8_t *nul = memchr(body + *pos, 0, len - *pos);
    if (!nul)
        return NULL;
    const char *s = (const char *)body + *pos;
    *pos = (size_t)(nul - body) + 1;
    return s;
}

/* PREPARE and DEALLOCATE statements followed in one Query. */
#define SQL_PREPARES_MAX 8

/* Follows the SQL PREPARE, DEALLOCATE, DECLARE and CLOSE statements of a
 * simple Query, so that a protocol Bind of a statement prepared in SQL, or
 * an Execute of a cursor, knows its text. Only a Query that holds one of
 * those words is parsed. */
static void sql_prepares(pgt_intercept_t *ic, const pgt_text_t *t)
{
    pgt_prep_t preps[SQL_PREPARES_MAX];
    int n = pgt_fp_prepares(t->data, preps, SQL_PREPARES_MAX);
    for (int i = 0; i < n; i++) {
        const pgt_prep_t *p = &preps[i];
        if (p->op == PGT_PREP_CLOSE_ALL) {
            forget(&ic->portals, ""); /* the Query's statements take it in any case */
            change_begin(ic, NULL, 'L');
            continue;
        }
        if (p->op == PGT_PREP_CLOSE || p->op == PGT_PREP_DECLARE) {
            /* A cursor is a portal: an Execute of it runs its query. Like
             * a PREPARE, it is a change the server may refuse (an error
             * ahead of it in the Query, a failed block): its tag accepts
             * it. */
            change_begin(ic, p->name, p->op == PGT_PREP_DECLARE ? 'K' : 'L');
            pgt_text_t *body = p->op == PGT_PREP_DECLARE
                                   ? pgt_text_new(t->data + p->body_offset, p->body_length)
                                   : NULL;
            named_t *n = body ? remember(&ic->portals, p->name, body) : NULL;
            if (n) {
                n->batch = ic->sent_batches;
                n->hold = p->hold;
            }
            pgt_text_unref(body);
            continue;
        }
        bool all = p->op == PGT_PREP_DEALLOCATE_ALL;
        change_begin(ic, all ? NULL : p->name, p->op == PGT_PREP_PREPARE ? 'P' : 'D');
        if (all)
            continue;
        pgt_text_t *body = p->op == PGT_PREP_PREPARE
                               ? pgt_text_new(t->data + p->body_offset, p->body_length)
                               : NULL;
        if (body)
            remember(&ic->statements, p->name, body);
        pgt_text_unref(body);
    }
}

/* A Query; sent is false for one pgtally answered itself (it never ran, so
 * its PREPAREs are not followed). */
static void client_query(pgt_intercept_t *ic, const uint8_t *body, size_t len, bool sent)
{
    size_t n = len > 0 && body[len - 1] == 0 ? len - 1 : len;
    pgt_text_t *t = pgt_text_new((const char *)body, n);
    if (!t)
        return;
    if (sent) {
        /* The server drops the unnamed statement as a Query begins
         * (exec_simple_query), unless it skips the Query. */
        if (find(&ic->statements, ""))
            change_begin(ic, "", 'Q');
        sql_prepares(ic, t);
        unnamed_portal_taken(ic); /* the Query's statements take the unnamed portal */
    }
    pgt_exec_t *e = push(ic, t, false, false);
    pgt_text_unref(t);
    if (e)
        e->est = ic->next_est;
    ic->next_est = PGT_ESTIMATE_NONE;
}

/* Records the execution just pushed (the tail) as one the server never
 * ran, wherever the FIFO stands: it is taken out of the FIFO, and the
 * timing of the statements ahead of it is left as it was. */
static void record_unsent(pgt_intercept_t *ic, pgt_query_status_t status, const char *sqlstate)
{
    pgt_exec_t *e = ic->tail;
    if (ic->head == e) {
        ic->head = ic->tail = NULL;
    } else {
        pgt_exec_t *p = ic->head;
        while (p->next != e)
            p = p->next;
        p->next = NULL;
        ic->tail = p;
    }
    uint64_t done_ns = ic->last_done_ns;
    int64_t done_us = ic->last_done_us, rows = ic->cur_rows, bytes = ic->cur_bytes;
    ic->cur_rows = ic->cur_bytes = 0;
    ic->last_done_ns = e->sent_ns;
    ic->last_done_us = e->sent_us;
    complete(ic, e, status, sqlstate, 0);
    ic->last_done_ns = done_ns;
    ic->last_done_us = done_us;
    ic->cur_rows = rows;
    ic->cur_bytes = bytes;
    finish(ic, e);
}

void pgt_intercept_unsent(pgt_intercept_t *ic, const uint8_t *body, size_t len,
                          pgt_query_status_t status, const char *sqlstate)
{
    pgt_exec_t *last = ic->tail;
    client_query(ic, body, len, false);
    if (ic->tail != last)
        record_unsent(ic, status, sqlstate);
}

void pgt_intercept_set_application(pgt_intercept_t *ic, const char *app)
{
    pgt_attr_t *old = ic->attr;
    pgt_attr_t *a = pgt_attr_new(old->session_id, old->user, old->database, app, old->client_addr);
    if (!a)
        return;
    a->backend_pid = old->backend_pid;
    ic->attr = a;
    pgt_attr_unref(old);
}

void pgt_intercept_set_budgets(pgt_intercept_t *ic, pgt_budgets_t *b)
{
    ic->budgets = b;
}

void pgt_intercept_budget_outcome(pgt_intercept_t *ic, pgt_query_status_t status, int64_t budget_id)
{
    ic->outcome = status;
    ic->outcome_budget = budget_id;
}

bool pgt_intercept_running(const pgt_intercept_t *ic, double *seconds)
{
    const pgt_exec_t *e = ic->head;
    if (!e || e->is_marker)
        return false;
    /* Transaction control and settings are never refused, nor cancelled:
     * nobody is to be stuck in an open transaction. */
    if (e->text && pgt_fp_never_refused(e->text->data, e->text->len))
        return false;
    uint64_t now = uv_hrtime();
    uint64_t start = e->sent_ns > ic->last_done_ns ? e->sent_ns : ic->last_done_ns;
    *seconds = now > start ? (double)(now - start) / 1e9 : 0;
    return true;
}

const pgt_text_t *pgt_intercept_current(const pgt_intercept_t *ic)
{
    const pgt_exec_t *e = ic->head;
    return e && !e->is_marker ? e->text : NULL;
}

void pgt_intercept_set_estimate(pgt_intercept_t *ic, const pgt_estimate_t *est)
{
    ic->next_est = *est;
}

int64_t pgt_intercept_running_approval(const pgt_intercept_t *ic, int64_t *cap_micro)
{
    const pgt_exec_t *e = ic->head;
    if (!e || e->is_marker || !e->est.approval_id)
        return 0;
    *cap_micro = e->est.approval_cap;
    return e->est.approval_id;
}

static void client_parse(pgt_intercept_t *ic, const uint8_t *body, size_t len)
{
    size_t pos = 0;
    const char *name = cstr(body, len, &pos);
    size_t qstart = pos;
    const char *sql = cstr(body, len, &pos);
    if (!name)
        return;
    /* SQL longer than the capture limit arrives cut: meter what there is. */
    size_t qlen = sql ? strlen(sql) : len - qstart;
    pgt_text_t *t = pgt_text_new((const char *)body + qstart, qlen);
    if (!t)
        return;
    change_begin(ic, name, '1');
    named_t *n = remember(&ic->statements, name, t);
    pgt_text_unref(t);
    /* The parameter types, kept for an EXPLAIN of the statement. */
    if (n && sql && pos + 2 <= len && (n->types = malloc(len - pos)) != NULL) {
        memcpy(n->types, body + pos, len - pos);
        n->types_len = len - pos;
    }
}

const pgt_text_t *pgt_intercept_statement(const pgt_intercept_t *ic, const char *name,
                                          const uint8_t **types, size_t *types_len)
{
    named_t *const *pp = find((named_t **)&ic->statements, name);
    if (!pp)
        return NULL;
    *types = (*pp)->types;
    *types_len = (*pp)->types ? (*pp)->types_len : 0;
    return (*pp)->text;
}

const pgt_text_t *pgt_intercept_portal_text(pgt_intercept_t *ic, const char *portal)
{
    named_t *n = portal[0] ? find_portal(ic, portal) : NULL;
    return n ? n->text : NULL;
}

bool pgt_intercept_portal_exists(pgt_intercept_t *ic, const char *portal)
{
    return portal[0] && find_portal(ic, portal);
}

void pgt_intercept_set_portal_estimate(pgt_intercept_t *ic, const char *portal,
                                       const pgt_estimate_t *est)
{
    named_t *n = find_portal(ic, portal);
    if (n)
        n->est = *est;
}

/* Bytes of s, at most max, that do not end inside a UTF-8 sequence. */
static size_t utf8_prefix(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    if (s[n] == 0)
        return n;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

/* The portal of a Bind, kept with its batch until the server drops it at
 * the end of the transaction (portals_dropped); one whose Bind failed or
 * was skipped goes then too, and until then counts as named in its batch. */
static void portal_made(pgt_intercept_t *ic, named_t *n, bool answered)
{
    if (!n)
        return;
    n->batch = ic->sent_batches;
    n->syncs = ic->sent_syncs;
    n->bind_seq = answered ? ++ic->binds_sent : UINT64_MAX;
}

/* The server answered (ok: BindComplete) or skipped the oldest Bind not
 * yet answered: its portal exists now, or it never will. A Bind of the
 * unnamed portal that was skipped, or failed before making its portal
 * (kept: 26000, 08P01, 25P02), left the one before it. */
static void bind_answered(pgt_intercept_t *ic, bool ok, bool kept)
{
    uint64_t seq = ++ic->binds_answered;
    for (named_t *n = ic->portals; n; n = n->next)
        if (n->bind_seq == seq) {
            n->bind_seq = ok ? 0 : UINT64_MAX;
            break;
        }
    /* An Execute sent in a later batch than the Bind runs no portal, or
     * the unnamed one that was there before. */
    for (pgt_exec_t *e = ok ? NULL : ic->head; e; e = e->next) {
        if (e->prev_portal && e->prev_seq == seq)
            e->prev_portal = false;
        if (e->bind_seq == seq)
            e->bind_seq = kept && e->prev_portal ? 0 : UINT64_MAX;
    }
}

/* Whether the server still has an unnamed portal, as far as pgtally can
 * tell, for a Bind about to replace it; *seq: the Bind that made it. */
static bool unnamed_portal_there(pgt_intercept_t *ic, uint64_t *seq)
{
    named_t **pp = find(&ic->portals, "");
    if (!pp || (*pp)->gone || !(*pp)->text || (*pp)->bind_seq == UINT64_MAX ||
        (*pp)->batch < ic->dropped_before)
        return false;
    *seq = (*pp)->bind_seq;
    return true;
}

/* A hash of a Bind's parameters, p[0..n) being what follows its names:
 * their formats and values, as far as the capture holds them; 0 for a
 * Bind of none, so that a statement without parameters hashes alike in
 * both protocols. The results' formats are not the statement's. */
static uint64_t params_hash(const uint8_t *p, size_t n)
{
    if (n < 2)
        return 0;
    size_t pos = 2 + 2 * (size_t)(p[0] << 8 | p[1]); /* the format codes */
    if (pos + 2 > n)
        return pgt_fnv1a(PGT_FNV_BASIS, p, n);
    size_t count = (size_t)(p[pos] << 8 | p[pos + 1]);
    if (count == 0)
        return 0;
    pos += 2;
    for (size_t i = 0; i < count && pos + 4 <= n; i++) {
        int32_t vlen = (int32_t)((uint32_t)p[pos] << 24 | (uint32_t)p[pos + 1] << 16 |
                                 (uint32_t)p[pos + 2] << 8 | p[pos + 3]);
        pos += 4 + (vlen > 0 ? (size_t)vlen : 0);
    }
    return pgt_fnv1a(PGT_FNV_BASIS, p, pos < n ? pos : n);
}

uint64_t pgt_intercept_bind_params(const uint8_t *body, size_t len)
{
    size_t pos = 0;
    if (!cstr(body, len, &pos) || !cstr(body, len, &pos))
        return 0;
    return params_hash(body + pos, len - pos);
}

/* A Bind the server answers or (failed_text) skips after an error, when
 * the portal takes the text of the statement whose Parse failed. */
static void bind_portal(pgt_intercept_t *ic, const uint8_t *body, size_t len, bool failed_text,
                        bool answered)
{
    size_t pos = 0;
    const char *portal = cstr(body, len, &pos);
    const char *stmt = cstr(body, len, &pos);
    if (!portal || !stmt)
        return;
    uint64_t prev_seq = 0;
    bool prev = !portal[0] && unnamed_portal_there(ic, &prev_seq);
    named_t **pp = find(&ic->statements, stmt);
    if (pp) {
        named_t *made = remember(&ic->portals, portal, (*pp)->text);
        if (made) {
            made->params = params_hash(body + pos, len - pos);
            made->prev_portal = prev;
            made->prev_seq = prev_seq;
        }
        portal_made(ic, made, answered);
        return;
    }
    if (failed_text && ic->failed_parse) { /* the statement that failed */
        portal_made(ic, remember(&ic->portals, portal, ic->failed_parse), false);
        return;
    }
    /* A statement whose SQL pgtally did not see (prepared where it does
     * not follow, or cut): its executions are metered all the same, under
     * a text that says so, and the running check applies to them. */
    char text[160];
    int n = snprintf(text, sizeof(text), "EXECUTE of prepared statement \"%.*s\" (text not seen)",
                     (int)utf8_prefix(stmt, 63), stmt);
    pgt_text_t *t = n > 0 ? pgt_text_new(text, (size_t)n < sizeof(text) ? (size_t)n : 0) : NULL;
    named_t *made = t ? remember(&ic->portals, portal, t) : NULL;
    if (!made)
        forget(&ic->portals, portal);
    portal_made(ic, made, answered);
    pgt_text_unref(t);
}

static void client_bind(pgt_intercept_t *ic, const uint8_t *body, size_t len)
{
    bind_portal(ic, body, len, false, true);
}

/* Whether the portal an Execute (body[0..len)) runs is one pgtally knows. */
static bool portal_known(pgt_intercept_t *ic, const uint8_t *body, size_t len)
{
    size_t pos = 0;
    const char *portal = cstr(body, len, &pos);
    return portal && find_portal(ic, portal);
}

/* The server ended the transaction of the batches up to the one answered
 * (ReadyForQuery 'I'; a failed block keeps them until it is rolled back):
 * their portals are gone, but for cursors WITH HOLD. */
static void portals_dropped(pgt_intercept_t *ic, bool all)
{
    if (all)
        ic->dropped_before = ic->answered_batches + 1;
    for (named_t **pp = &ic->portals; *pp;) {
        named_t *n = *pp;
        /* Not all: only the portals whose Bind failed or was skipped. */
        bool failed = n->bind_seq == UINT64_MAX;
        if (n->hold || n->gone || n->batch > ic->answered_batches || (!all && !failed)) {
            pp = &n->next;
            continue;
        }
        if (!n->name[0]) { /* nearly every statement's: kept for the next Bind */
            unnamed_portal_gone(ic);
            pp = &n->next;
            continue;
        }
        *pp = n->next;
        n->next = NULL;
        free_list(n);
    }
}

static void client_execute(pgt_intercept_t *ic, const uint8_t *body, size_t len)
{
    size_t pos = 0;
    const char *portal = cstr(body, len, &pos);
    if (!portal)
        return;
    named_t *known = find_portal(ic, portal);
    named_t **unnamed = portal[0] ? NULL : find(&ic->portals, "");
    uint64_t taken = 0;
    /* Taken by a Query still owed, which the server may still skip. */
    if (!known && unnamed && (*unnamed)->taken_batch && (*unnamed)->text) {
        known = *unnamed;
        taken = known->taken_batch;
    }
    /* Closed by a Close the server has yet to answer, which it may still
     * skip: the portal as it was. */
    for (change_t *c = ic->changes; !known && c; c = c->next)
        for (named_t *o = c->portal ? c->old : NULL; o && !known; o = o->next)
            if (strcmp(o->name, portal) == 0 && !o->gone)
                known = o;
    if (known) {
        pgt_exec_t *e = push(ic, known->text, true, false);
        if (e) {
            e->est = known->est;
            e->params = known->params;
            e->portal_batch = known->hold ? -1 : (int64_t)known->batch;
            /* Bound before a Sync, and not answered yet (or failed):
             * whether the portal exists, that Bind tells. Behind the same
             * Sync, a failed Bind is the statement that failed, whose
             * error the skipped Execute records (Queries between them
             * were skipped too). */
            if (known->batch < ic->sent_batches && known->syncs < ic->sent_syncs) {
                e->bind_seq = known->bind_seq;
                e->prev_portal = known->prev_portal;
                e->prev_seq = known->prev_seq;
            }
            e->taken_batch = taken;
        }
        return;
    }
    /* A portal pgtally did not see bound (a cursor of SQL DECLARE, or a
     * Bind it could not read): metered all the same, under a text that
     * says so, and under the running check. */
    char text[160];
    int n = snprintf(text, sizeof(text), "EXECUTE of portal \"%.*s\" (text not seen)",
                     (int)utf8_prefix(portal, 63), portal);
    pgt_text_t *t = n > 0 ? pgt_text_new(text, (size_t)n < sizeof(text) ? (size_t)n : 0) : NULL;
    pgt_exec_t *e = t ? push(ic, t, true, false) : NULL;
    if (e)
        e->unknown_portal = true;
    pgt_text_unref(t);
}

void pgt_intercept_unsent_bind(pgt_intercept_t *ic, const uint8_t *body, size_t len,
                               const pgt_estimate_t *est, pgt_query_status_t status,
                               const char *sqlstate)
{
    size_t pos = 0;
    const char *portal = cstr(body, len, &pos);
    if (!portal || !cstr(body, len, &pos))
        return;
    bind_portal(ic, body, len, false, false);
    named_t *n = find_portal(ic, portal);
    pgt_exec_t *e = n ? push(ic, n->text, true, false) : NULL;
    if (e)
        e->params = n->params; /* before forget frees n */
    forget(&ic->portals, portal);
    if (!e)
        return;
    e->est = *est;
    record_unsent(ic, status, sqlstate);
}

/* A FunctionCall (protocol docs, "Function Call") runs a function by its
 * OID, the first field of the body: an execution like any other, metered
 * (kind utility, under a text that names the OID) and under the running
 * check. It is answered with FunctionCallResponse or ErrorResponse, then
 * ReadyForQuery, as a Query is. */
static void client_function(pgt_intercept_t *ic, const uint8_t *body, size_t len)
{
    uint32_t oid = len >= 4 ? pgt_be32(body) : 0;
    char text[32];
    int n = snprintf(text, sizeof(text), "FunctionCall oid %u", (unsigned)oid);
    pgt_text_t *t = pgt_text_new(text, (size_t)n);
    pgt_exec_t *e = t ? push(ic, t, false, false) : NULL;
    pgt_text_unref(t);
    if (!e)
        return;
    e->function_call = true;
    /* Its shape is known without the parser: one per function. */
    e->est.fingerprint = UINT64_C(0x4643000000000000) | oid;
    e->est.kind = PGT_STMT_UTILITY;
}

/* A Close takes effect when sent, so that a Bind behind it does not find
 * what it closed; the server may still skip it (after an error ahead), so
 * it waits for its CloseComplete as a change (change_begin). */
static void client_close(pgt_intercept_t *ic, const uint8_t *body, size_t len)
{
    size_t pos = 1;
    if (len == 0 || (body[0] != 'S' && body[0] != 'P') || !cstr(body, len, &pos))
        return;
    change_begin(ic, (const char *)body, '3');
}

void pgt_intercept_client(pgt_intercept_t *ic, uint8_t type, const uint8_t *body, size_t len)
{
    switch (type) {
    case 'Q':
        client_query(ic, body, len, true);
        break;
    case 'P':
        client_parse(ic, body, len);
        break;
    case 'B':
        client_bind(ic, body, len);
        break;
    case 'E':
        client_execute(ic, body, len);
        break;
    case 'C':
        client_close(ic, body, len);
        break;
    case 'F':
        client_function(ic, body, len);
        break;
    case 'S': /* Sync */
        push(ic, NULL, false, true);
        ic->sent_syncs++;
        break;
    default:
        break;
    }
    if (type == 'Q' || type == 'S' || type == 'F')
        ic->sent_batches++;
}

/* ---- server messages ------------------------------------------------------ */

/* Rows in a CommandComplete tag: the last number ("INSERT 0 5", "UPDATE 3",
 * "SELECT 10", "COPY 7"). */
static int64_t tag_rows(const uint8_t *peek, size_t plen)
{
    int64_t rows = 0;
    bool in_number = false;
    for (size_t i = 0; i < plen && peek[i]; i++) {
        if (peek[i] >= '0' && peek[i] <= '9') {
            rows = (in_number ? rows * 10 : 0) + (peek[i] - '0');
            in_number = true;
        } else {
            in_number = false;
        }
    }
    return rows;
}

/* The SQLSTATE field of an ErrorResponse, from its first bytes. */
static void error_sqlstate(const uint8_t *peek, size_t plen, char out[6])
{
    if (!pgt_wire_error_code(peek, plen, out))
        memcpy(out, "XX000", 6);
}

/* An ErrorResponse answering a message of type answers: a Query,
 * Execute or FunctionCall fails (an Execute ends with it; one of a portal
 * that does not exist, 34000, ran nothing); a Parse, Bind, Describe,
 * Close or Sync that fails ran nothing itself. Changes the server did
 * not accept are undone either way. */
/* The SQL of the statement whose Parse failed: the one the oldest Parse
 * not yet accepted set, before the failure voids it (an unnamed one is then
 * forgotten with the one it replaced, which the server no longer has
 * either: a Bind of it is not explained with SQL the server refused). NULL
 * when none. */
static pgt_text_t *failed_parse_text(pgt_intercept_t *ic)
{
    for (change_t *c = ic->changes; c; c = c->next) {
        if (c->confirm != '1' || !c->name)
            continue;
        c->failed = true;
        named_t **pp = find(&ic->statements, c->name);
        return pp ? pgt_text_ref((*pp)->text) : NULL;
    }
    /* No change queued (out of memory): the unnamed statement's, if any. */
    named_t **pp = find(&ic->statements, "");
    pgt_text_t *t = pp ? pgt_text_ref((*pp)->text) : NULL;
    forget(&ic->statements, "");
    return t;
}

static void server_error(pgt_intercept_t *ic, uint8_t answers, const uint8_t *peek, size_t plen)
{
    char sqlstate[6];
    error_sqlstate(peek, plen, sqlstate);
    if ((answers == 'P' || answers == 'B' || answers == 'D' || answers == 'C') &&
        !ic->batch_error[0]) {
        memcpy(ic->batch_error, sqlstate, 6);
        pgt_text_unref(ic->failed_parse);
        ic->failed_parse = answers == 'P' ? failed_parse_text(ic) : NULL;
    }
    changes_void(ic);
    if (answers == 'B')
        bind_answered(ic, false,
                      !strcmp(sqlstate, "26000") || !strcmp(sqlstate, "08P01") ||
                          !strcmp(sqlstate, "25P02"));
    pgt_exec_t *e = ic->head;
    if (!e || e->is_marker || (answers != 'Q' && answers != 'E' && answers != 'F'))
        return;
    /* An Execute of a portal that does not exist ran nothing. */
    if (answers == 'E' && e->ndone == 0 && strcmp(sqlstate, "34000") == 0) {
        pgt_exec_free(pop(ic));
        return;
    }
    pgt_query_status_t st = strcmp(sqlstate, "57014") == 0 ? PGT_QUERY_CANCELLED : PGT_QUERY_ERROR;
    complete(ic, e, st, sqlstate, 0);
    e->failed = true;
    if (answers == 'E')
        finish(ic, pop(ic));
}

static void server_done(pgt_intercept_t *ic, uint8_t answers, const uint8_t *peek, size_t plen,
                        bool is_tag)
{
    pgt_exec_t *e = ic->head;
    if (!e || e->is_marker || (answers != 'Q' && answers != 'E' && answers != 'F'))
        return;
    /* An SQL PREPARE or DEALLOCATE of a simple Query took effect. */
    if (is_tag && answers == 'Q') {
        if (plen >= 8 && memcmp(peek, "PREPARE", 8) == 0)
            change_accepted(ic, 'P');
        else if (plen >= 10 && memcmp(peek, "DEALLOCATE", 10) == 0)
            change_accepted(ic, 'D');
        else if (plen >= 15 && memcmp(peek, "DECLARE CURSOR", 15) == 0)
            change_accepted(ic, 'K');
        else if (plen >= 12 && memcmp(peek, "CLOSE CURSOR", 12) == 0)
            change_accepted(ic, 'L');
    }
    complete(ic, e, PGT_QUERY_OK, NULL, is_tag ? tag_rows(peek, plen) : 0);
    if (answers == 'E')
        finish(ic, pop(ic));
}

/* ReadyForQuery ends the Query or FunctionCall it answers, or the Sync
 * (its marker, with anything left before it). */
static void server_ready(pgt_intercept_t *ic, uint8_t answers, uint8_t status)
{
    /* A failed block ('E') keeps its portals until it is rolled back; a
     * portal whose Bind failed goes with its batch in any case. */
    portals_dropped(ic, status == 'I');
    ic->cur_rows = 0;
    ic->cur_bytes = 0;
    ic->outcome = PGT_QUERY_OK;
    ic->batch_error[0] = 0;
    pgt_text_unref(ic->failed_parse);
    ic->failed_parse = NULL;
    changes_void(ic);
    ic->answered_batches++;
    if (answers == 'Q')
        unnamed_portal_settled(ic, ic->answered_batches, false);
    if (answers != 'Q' && answers != 'F' && answers != 'S')
        return;
    while (ic->head) {
        pgt_exec_t *e = pop(ic);
        bool last = answers == 'S' ? e->is_marker : !e->extended;
        finish(ic, e);
        if (last)
            break;
    }
}

/* The Execute at the head, which the server skipped: it never ran, but
 * when the Parse, Bind or Describe of its batch failed it is the
 * statement that failed, recorded once with that error (as a simple Query
 * that fails at parsing or planning is). */
static void skipped_execute(pgt_intercept_t *ic)
{
    pgt_exec_t *e = ic->head;
    if (!e || e->is_marker)
        return;
    /* Its portal must still exist: the transaction that made it may have
     * ended since the Execute was sent. */
    bool exists = !e->unknown_portal && !e->taken_batch && e->bind_seq != UINT64_MAX &&
                  (e->portal_batch < 0 || (uint64_t)e->portal_batch >= ic->dropped_before);
    if (ic->batch_error[0] && e->ndone == 0 && exists) {
        bool cancelled = strcmp(ic->batch_error, "57014") == 0;
        ic->cur_rows = ic->cur_bytes = 0;
        complete(ic, e, cancelled ? PGT_QUERY_CANCELLED : PGT_QUERY_ERROR, ic->batch_error, 0);
        ic->batch_error[0] = 0;
    }
    finish(ic, pop(ic));
}

void pgt_intercept_skipped(pgt_intercept_t *ic, uint8_t type, const uint8_t *body, size_t len)
{
    pgt_exec_t *e = ic->head;
    /* Skipped as it went upstream: the Bind's portal is still named, for
     * the Execute behind it; the Execute is queued to be taken at once. */
    if (body && type == 'B')
        bind_portal(ic, body, len, true, false);
    if (body && type == 'E' && ic->batch_error[0] && portal_known(ic, body, len)) {
        pgt_exec_t *last = ic->tail;
        client_execute(ic, body, len);
        if (ic->tail != last)
            record_unsent(
                ic, strcmp(ic->batch_error, "57014") == 0 ? PGT_QUERY_CANCELLED : PGT_QUERY_ERROR,
                ic->batch_error);
        ic->batch_error[0] = 0;
        return;
    }
    if (body)
        return;
    switch (type) {
    case 'Q':
    case 'F':
        ic->answered_batches++;
        if (type == 'Q')
            unnamed_portal_settled(ic, ic->answered_batches, true);
        if (e && !e->is_marker)
            finish(ic, pop(ic));
        break;
    case 'E':
        skipped_execute(ic);
        break;
    case 'B':
        bind_answered(ic, false, true);
        break;

    case 'S':                   /* a Sync the server ignored while it read COPY data */
        ic->answered_batches++; /* owed no more: later batches keep their numbers */
        for (pgt_exec_t **pp = &ic->head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
            if (!(*pp)->is_marker)
                continue;
            pgt_exec_t *m = *pp;
            *pp = m->next;
            if (ic->tail == m)
                ic->tail = prev;
            pgt_exec_free(m);
            break;
        }
        break;
    default:
        break;
    }
}

void pgt_intercept_server(pgt_intercept_t *ic, uint8_t answers, uint8_t type, uint32_t len,
                          const uint8_t *peek, size_t plen)
{
    /* Bytes count towards the statement being answered; what arrives
     * between statements (ParseComplete of a Sync round, ParameterStatus
     * after SET's CommandComplete) is nobody's. */
    if (ic->head && !ic->head->is_marker && type != 'A' && type != 'Z')
        ic->cur_bytes += (int64_t)len + 1;
    if (answers == 'Q')
        change_accepted(ic, 'Q');
    switch (type) {
    case 'D': /* DataRow */
        ic->cur_rows++;
        break;
    case '1': /* ParseComplete */
        change_accepted(ic, '1');
        break;
    case '3': /* CloseComplete */
        change_accepted(ic, '3');
        break;
    case '2': /* BindComplete */
        bind_answered(ic, true, true);
        break;

    case 'C': /* CommandComplete */
        server_done(ic, answers, peek, plen, true);
        break;
    case 'I': /* EmptyQueryResponse */
    case 's': /* PortalSuspended */
    case 'V': /* FunctionCallResponse */
        server_done(ic, answers, peek, plen, false);
        break;
    case 'E': /* ErrorResponse */
        server_error(ic, answers, peek, plen);
        break;
    case 'Z': /* ReadyForQuery */
        server_ready(ic, answers, plen > 0 ? peek[0] : 'I');
        break;
    default:
        break;
    }
}

void pgt_intercept_free(pgt_intercept_t *ic, const char *sqlstate)
{
    if (!ic)
        return;
    pgt_exec_t *e;
    bool first = true;
    while ((e = pop(ic)) != NULL) {
        /* Only the oldest execution can have been running when the session
         * ended: it is recorded as failed. What was queued behind it never
         * ran. */
        if (first && !e->is_marker && !e->failed && sqlstate)
            complete(ic, e, PGT_QUERY_ERROR, sqlstate, 0);
        first = false;
        finish(ic, e);
    }
    while (ic->changes)
        change_free(change_pop(ic));
    pgt_text_unref(ic->failed_parse);
    forget_all(&ic->statements);
    forget_all(&ic->portals);
    pgt_attr_unref(ic->attr);
    free(ic);
}
