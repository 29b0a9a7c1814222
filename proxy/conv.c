/* The conversation model (include/pgtally/conv.h): a ring of the messages
 * the server owes replies to, in the order they went upstream. */
#include "pgtally/conv.h"

#include <stdlib.h>
#include <string.h>

/* Entry flags. */
#define F_SKIP 1 /* the server will not answer it: reported by pgt_conv_take_skipped */
#define F_MARK 2 /* the end of COPY data: answered by nothing, dropped when reached */
#define F_MAYBE                                                                                    \
    4            /* sent while the server may be reading COPY data: whether it reads               \
                    the message as such depends on where the COPY ends */
#define F_DATA 8 /* sent after CopyData (since the last Query or Execute) */

void pgt_conv_init(pgt_conv_t *cv)
{
    memset(cv, 0, sizeof(*cv));
    cv->next_seq = 1;
}

void pgt_conv_free(pgt_conv_t *cv)
{
    free(cv->q);
    free(cv->before);
    cv->before = NULL;
    cv->q = NULL;
    cv->cap = cv->len = cv->head = 0;
}

static pgt_conv_entry_t *at(const pgt_conv_t *cv, uint32_t i)
{
    return &cv->q[(cv->head + i) & (cv->cap - 1)];
}

static bool answered_by_ready(uint8_t type)
{
    return type == 'Q' || type == 'F' || type == 'S';
}

static bool extended(uint8_t type)
{
    return type == 'P' || type == 'B' || type == 'D' || type == 'E' || type == 'C';
}

static bool push(pgt_conv_t *cv, uint8_t type, pgt_conv_from_t from, uint8_t tag, uint8_t flags)
{
    if (cv->len == cv->cap) {
        uint32_t cap = cv->cap ? cv->cap * 2 : 16;
        pgt_conv_entry_t *q = cap > cv->cap ? malloc((size_t)cap * sizeof(*q)) : NULL;
        if (!q) {
            cv->failed = true;
            return false;
        }
        for (uint32_t i = 0; i < cv->len; i++)
            q[i] = *at(cv, i);
        free(cv->q);
        cv->q = q;
        cv->cap = cap;
        cv->head = 0;
    }
    pgt_conv_entry_t *e = &cv->q[(cv->head + cv->len) & (cv->cap - 1)];
    if (cv->data_sent)
        flags |= F_DATA;
    uint64_t lines = cv->lines_sent - cv->lines_base;
    *e = (pgt_conv_entry_t){.seq = cv->next_seq++,
                            .type = type,
                            .from = (uint8_t)from,
                            .tag = tag,
                            .flags = flags,
                            .lines = lines < UINT32_MAX ? (uint32_t)lines : UINT32_MAX};
    if (type == 'Q' || type == 'E') {
        cv->data_sent = false;
        cv->lines_base = cv->lines_sent;
    }
    cv->len++;
    if (flags & F_MARK)
        return true;
    if (answered_by_ready(type))
        cv->readies++;
    if (type == 'Q' || type == 'E')
        cv->execs++;
    if (from == PGT_CONV_OURS)
        cv->ours++;
    return true;
}

/* Whatever the server owes an entry it will now never answer. */
static void owe_nothing(pgt_conv_t *cv, const pgt_conv_entry_t *e)
{
    if (e->flags & (F_SKIP | F_MARK))
        return;
    if (answered_by_ready(e->type))
        cv->readies--;
    if (e->type == 'Q' || e->type == 'E')
        cv->execs--;
}

static void mark_skipped(pgt_conv_t *cv, pgt_conv_entry_t *e)
{
    owe_nothing(cv, e);
    e->flags |= F_SKIP;
}

static pgt_conv_entry_t pop(pgt_conv_t *cv)
{
    pgt_conv_entry_t e = *at(cv, 0);
    owe_nothing(cv, &e);
    if (e.from == PGT_CONV_OURS && !(e.flags & F_MARK))
        cv->ours--;
    cv->head = (cv->head + 1) & (cv->cap - 1);
    cv->len--;
    return e;
}

/* After the head was answered or taken: the ends of COPY data reached are
 * dropped, and the skipped entries now at the head are counted. */
static void settle(pgt_conv_t *cv)
{
    if (cv->skipping == 0 && (cv->len == 0 || !(at(cv, 0)->flags & (F_SKIP | F_MARK))))
        return; /* the usual case: nothing to drop or count */
    while (cv->len > 0 && (at(cv, 0)->flags & F_MARK))
        pop(cv);
    cv->skipping = 0;
    for (uint32_t i = 0; i < cv->len; i++) {
        uint8_t f = at(cv, i)->flags;
        if (!(f & (F_SKIP | F_MARK)))
            break;
        if (f & F_SKIP)
            cv->skipping++;
    }
}

bool pgt_conv_take_skipped(pgt_conv_t *cv, pgt_conv_entry_t *out)
{
    if (cv->skipping == 0)
        return false;
    while (at(cv, 0)->flags & F_MARK)
        pop(cv);
    *out = pop(cv);
    cv->skipping--;
    return true;
}

int pgt_conv_sent(pgt_conv_t *cv, uint8_t type, pgt_conv_from_t from, uint8_t tag)
{
    bool client = from == PGT_CONV_CLIENT;
    if (type == 'd')
        cv->data_sent = true;
    if (cv->copy_in) {
        /* The server reads COPY data (copyfromparse.c, CopyGetData): it
         * ignores Sync and Flush, and any message but CopyData, CopyDone
         * and CopyFail ends the COPY with an error, taken as data; unless
         * the COPY has already failed on its data, and the server reads
         * the message as usual. Which it was, the COPY's end tells
         * (copy_ends), or the reply (pgt_conv_reply). */
        if (type == 'd' || type == 'H' || type == 'X')
            return 0;
        if (type == 'c' || type == 'f') {
            cv->copy_in = false;
            push(cv, 'c', from, tag, F_MARK);
            return 0;
        }
        if (type != 'S')
            cv->copy_in = false;
        if (!push(cv, type, from, tag, F_MAYBE))
            return 0;
        if (type == 'S' || type == 'Q' || type == 'F')
            cv->client_flushed = cv->next_seq - 1;
        return PGT_CONV_OWED;
    }
    if (cv->ignoring) {
        /* Skipping to the next Sync (postgres.c, ignore_till_sync). */
        if (type != 'S')
            return type == 'H' || type == 'X' || type == 'd' || type == 'c' || type == 'f'
                       ? 0
                       : PGT_CONV_SKIPPED;
        cv->ignoring = false;
    }
    int flags = 0;
    switch (type) {
    case 'H': /* Flush */
        if (client) {
            cv->client_flushed = cv->next_seq - 1;
            return PGT_CONV_FLUSHES;
        }
        cv->ours_flushed = cv->next_seq;
        return 0;
    case 'c': /* CopyDone, CopyFail: mark where COPY data would end */
    case 'f':
        if (cv->len > 0)
            push(cv, 'c', from, tag, F_MARK);
        return 0;
    case 'S': /* Sync */
        cv->batch_open = false;
        /* fall through */
    case 'Q': /* Query */
    case 'F': /* FunctionCall */
        if (!push(cv, type, from, tag, 0))
            return 0;
        if (client) {
            cv->client_flushed = cv->next_seq - 1;
            flags = PGT_CONV_FLUSHES;
        } else {
            cv->ours_flushed = cv->next_seq;
        }
        return flags | PGT_CONV_OWED;
    case 'P':
    case 'B':
    case 'D':
    case 'E':
    case 'C':
        cv->batch_open = true;
        return push(cv, type, from, tag, 0) ? PGT_CONV_OWED : 0;
    default: /* CopyData outside COPY, Terminate, and what the server rejects */
        return 0;
    }
}

/* Whether a server message of type is the last reply to a message of
 * type owed. */
static bool is_last(uint8_t owed, uint8_t type)
{
    switch (owed) {
    case 'P':
        return type == '1' || type == 'E';
    case 'B':
        return type == '2' || type == 'E';
    case 'C':
        return type == '3' || type == 'E';
    case 'D':
        return type == 'T' || type == 'n' || type == 'E';
    case 'E':
        return type == 'C' || type == 'I' || type == 's' || type == 'E';
    default: /* Q, F, S */
        return type == 'Z';
    }
}

/* The server began reading COPY data for the head entry: the Syncs sent
 * behind it before the end of the data, and the first other message, may
 * have been read as data (F_MAYBE). */
static void copy_begins(pgt_conv_t *cv)
{
    cv->copying = true;
    for (uint32_t i = 1; i < cv->len; i++) {
        pgt_conv_entry_t *e = at(cv, i);
        if (e->flags & F_SKIP)
            continue;
        if (e->flags & F_MARK)
            return;
        e->flags |= F_MAYBE;
        if (e->type != 'S')
            return;
    }
    cv->copy_in = true;
}

/* The COPY of the head entry ended (CommandComplete, or an ErrorResponse
 * with sqlstate): what was sent during it is settled as far as that says.
 * Done, or failed by a CopyFail (57014), the server read all of it as data
 * up to the client's CopyDone or CopyFail: Syncs ignored. Failed by a
 * message that is not COPY data (08P01), the Syncs before that message
 * were ignored and the message itself taken as data. Failed on its data,
 * the messages after the failing line were read as usual: other messages
 * than Syncs are answered, a Sync sent before any CopyData was ignored,
 * and one sent after some tells by its reply. */
static void copy_ends(pgt_conv_t *cv, uint8_t type, const char *sqlstate)
{
    uint64_t line = type == 'E' ? cv->error_line : 0;
    cv->copying = false;
    cv->copy_in = false;
    bool all = type == 'C' || (sqlstate && strcmp(sqlstate, "57014") == 0);
    bool culprit = sqlstate && strcmp(sqlstate, "08P01") == 0;
    for (uint32_t i = 1; i < cv->len; i++) {
        pgt_conv_entry_t *e = at(cv, i);
        if (!(e->flags & F_MAYBE))
            return;
        if (all || culprit) {
            e->flags &= (uint8_t)~F_MAYBE;
            mark_skipped(cv, e);
        } else if (e->type != 'S') {
            e->flags &= (uint8_t)~F_MAYBE;
        } else if (!(e->flags & F_DATA) || (line > 0 && e->lines < UINT32_MAX && line > e->lines)) {
            /* a Sync before any data, or before the failing line, was read
             * during the COPY */
            e->flags &= (uint8_t)~F_MAYBE;
            mark_skipped(cv, e);
        } else if (line > 0 && e->lines < UINT32_MAX) {
            /* a Sync after the failing line: read as usual */
            e->flags &= (uint8_t)~F_MAYBE;
        }
    }
}

/* A reply arrives and the head is a Sync that may have been read as COPY
 * data: a ReadyForQuery is its; anything else answers what follows, and
 * the Sync was ignored. The ignored ones are kept in cv->before, for the
 * caller to take before it deals with the reply. */
static bool add_before(pgt_conv_t *cv, pgt_conv_reply_t *r, pgt_conv_entry_t e)
{
    if (r->nbefore == cv->before_cap) {
        uint32_t cap = cv->before_cap ? cv->before_cap * 2 : 4;
        pgt_conv_entry_t *b = realloc(cv->before, cap * sizeof(*b));
        if (!b) {
            cv->failed = true;
            return false;
        }
        cv->before = b;
        cv->before_cap = cap;
    }
    cv->before[r->nbefore++] = e;
    r->before = cv->before;
    return true;
}

static void maybe_syncs(pgt_conv_t *cv, uint8_t type, pgt_conv_reply_t *r)
{
    while (cv->len > 0 && (at(cv, 0)->flags & F_MAYBE)) {
        pgt_conv_entry_t *x = at(cv, 0);
        x->flags &= (uint8_t)~F_MAYBE;
        if (x->type != 'S' || type == 'Z' || type == 'N' || type == 'S')
            return;
        mark_skipped(cv, x);
        if (!add_before(cv, r, pop(cv)))
            return;
        settle(cv);
        pgt_conv_entry_t e;
        while (pgt_conv_take_skipped(cv, &e))
            if (!add_before(cv, r, e))
                return;
    }
}

/* An error in the extended protocol: the server skips to the next Sync. */
static void skip_to_sync(pgt_conv_t *cv)
{
    for (uint32_t i = 0; i < cv->len; i++) {
        pgt_conv_entry_t *e = at(cv, i);
        if (e->flags & (F_SKIP | F_MARK))
            continue;
        if (e->type == 'S')
            return;
        mark_skipped(cv, e);
    }
    cv->ignoring = true;
}

void pgt_conv_reply(pgt_conv_t *cv, uint8_t type, const char *sqlstate, pgt_conv_reply_t *r)
{
    memset(r, 0, sizeof(*r));
    pgt_conv_entry_t e;
    while (pgt_conv_take_skipped(cv, &e)) /* left untaken by the caller */
        ;
    settle(cv);
    if (type == 'A' || cv->len == 0)
        return; /* a notification, or nothing owed */
    if (at(cv, 0)->flags & F_MAYBE) {
        maybe_syncs(cv, type, r);
        if (cv->len == 0)
            return;
    }
    pgt_conv_entry_t *x = at(cv, 0);
    r->to = *x;
    r->to.flags = 0;
    /* The server writes an ErrorResponse out at once (and all before it):
     * never early. */
    r->early = x->from == PGT_CONV_CLIENT && x->seq > cv->client_flushed &&
               x->seq < cv->ours_flushed && type != 'E';
    if (type == 'N' || type == 'S')
        return; /* a notice or parameter change, within the answer */
    if (type == 'Z' && !answered_by_ready(x->type)) {
        /* A ReadyForQuery where none is owed first: the account is out of
         * step with the server. Everything up to the first message that a
         * ReadyForQuery answers is taken as skipped, and this one as
         * answering nothing, so no wait outlives it. */
        memset(&r->to, 0, sizeof(r->to));
        r->early = false;
        for (uint32_t i = 0; i < cv->len; i++) {
            pgt_conv_entry_t *y = at(cv, i);
            bool last = answered_by_ready(y->type) && !(y->flags & (F_SKIP | F_MARK));
            if (!(y->flags & F_MARK))
                mark_skipped(cv, y);
            if (last)
                break;
        }
        settle(cv);
        r->skipped = cv->skipping;
        return;
    }
    if ((type == 'G' || type == 'W') && (x->type == 'Q' || x->type == 'E'))
        copy_begins(cv);
    else if ((type == 'E' || type == 'C') && cv->copying)
        copy_ends(cv, type, sqlstate); /* the COPY is over */
    cv->error_line = 0;
    r->ends = is_last(x->type, type);
    if (!r->ends)
        return;
    pop(cv);
    if (type == 'E' && extended(r->to.type))
        skip_to_sync(cv);
    settle(cv);
    r->skipped = cv->skipping;
}

bool pgt_conv_may_query(const pgt_conv_t *cv)
{
    return cv->len == 0 && !cv->batch_open && !cv->ignoring && !cv->copy_in && !cv->failed;
}

bool pgt_conv_may_extend(const pgt_conv_t *cv)
{
    return !cv->ignoring && !cv->copy_in && cv->execs == 0 && !cv->failed;
}

bool pgt_conv_will_answer(const pgt_conv_t *cv)
{
    for (uint32_t i = 0; i < cv->len; i++)
        if (!(at(cv, i)->flags & (F_SKIP | F_MARK | F_MAYBE)))
            return true;
    return false;
}
