/* pgtally's in-band EXPLAIN: while a client's Query or Bind waits in
 * client.pend, pgtally sends its own EXPLAIN of the statement (a Query, or
 * Parse/Bind/Execute/Close and a Flush), consumes the server's answer, and
 * turns the plan into the estimate the budgets judge and the meter records. */
#include "session_int.h"

#include <stdlib.h>
#include <string.h>

#include "pgtally/buf.h"
#include "pgtally/log.h"

/* ---- building the EXPLAIN ---------------------------------------------- */

/* pgtally's own names: "pgtally_" and the hex of one half of the session's
 * random key. A client that names a statement or portal pgtally_explain or
 * pgtally_refused (by Parse or SQL PREPARE, or a cursor WITH HOLD) gets no
 * hold on pgtally's: a stand-in that bound the client's statement would
 * run it instead of failing, and the EXPLAIN's Close would drop it. */
void pgt__own_name(const pgt_session_t *s, own_name_t which, char out[OWN_NAME_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *k = s->name_key + (which == OWN_EXPLAIN ? 0 : 8);
    memcpy(out, "pgtally_", 8);
    for (int i = 0; i < 8; i++) {
        out[8 + 2 * i] = hex[k[i] >> 4];
        out[9 + 2 * i] = hex[k[i] & 15];
    }
    out[OWN_NAME_SIZE - 1] = 0;
}

/* An in-band EXPLAIN is safe only when nothing else is in flight, outside
 * a transaction block or inside one that has not failed. Outside, its
 * failure leaves no trace and the client's own statement, sent right
 * after, meets the state it expects (protocol docs, "Simple Query"; a
 * Query also ends the unnamed statement, which the client's own Query does
 * anyway). Inside, a failed EXPLAIN aborts the block as the statement
 * would have at planning, so its error becomes the statement's and the
 * statement is not sent (finish_explain; the extended EXPLAIN's error is
 * the statement's in any case). In a failed block ('E') the server refuses
 * every statement (25P02) at no cost: nothing to explain. */
bool pgt__may_hold(const pgt_session_t *s)
{
    return s->ic && (s->state == ST_IDLE || s->state == ST_QUERY) && !s->explaining &&
           !s->refusing && (s->txn_status == 'I' || s->txn_status == 'T') && !s->drain;
}

/* Not behind a Sync or Query still owed its ReadyForQuery either: what
 * the server then makes of pgtally's EXPLAIN depends on how that ended (a
 * transaction block left failed, portals gone), which the client's Bind
 * would not have met the same way. */
bool pgt__may_explain(const pgt_session_t *s)
{
    return pgt__may_hold(s) && s->proxy->estimator && pgt_conv_may_extend(&s->conv) &&
           pgt_conv_readies(&s->conv) == 0;
}

bool pgt__may_hold_query(const pgt_session_t *s)
{
    return pgt__may_hold(s) && s->state == ST_IDLE && pgt_conv_may_query(&s->conv);
}

/* The EXPLAIN of a simple Query: one Query message in s->explain_msg. */
bool pgt__explain_query_msg(pgt_session_t *s, const char *sql)
{
    size_t n = strlen(sql);
    s->explain_msg = malloc(n + 6);
    if (!s->explain_msg)
        return false;
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, s->explain_msg, n + 6);
    pgt_msgbuf_begin(&mb, 'Q');
    pgt_msgbuf_cstr(&mb, sql);
    pgt_msgbuf_end(&mb);
    s->explain_msg_len = mb.len;
    return true;
}

/* The extended-protocol EXPLAIN of the statement a client's Bind binds:
 * Close of a leftover, Parse with the client's parameter types, Bind with
 * its parameter formats and values (results as text), Execute, Close of
 * both, and a Flush so the answer comes now, never a Sync: the client's
 * implicit transaction stays as the client left it. */
static bool explain_bind_msgs(pgt_session_t *s, const char *sql, const uint8_t *types,
                              size_t types_len, const uint8_t *bind, size_t blen)
{
    pgt_reader_t r;
    const char *name;
    uint16_t nfmt, nparams;
    pgt_reader_init(&r, bind, blen);
    if (!pgt_reader_cstr(&r, &name) || !pgt_reader_cstr(&r, &name))
        return false;
    size_t params_start = r.pos;
    if (!pgt_reader_u16(&r, &nfmt) || !pgt_reader_skip(&r, 2u * nfmt) ||
        !pgt_reader_u16(&r, &nparams))
        return false;
    for (uint16_t i = 0; i < nparams; i++) {
        uint32_t vlen;
        if (!pgt_reader_u32(&r, &vlen) || (vlen != 0xffffffffu && !pgt_reader_skip(&r, vlen)))
            return false;
    }
    char own[OWN_NAME_SIZE];
    pgt__own_name(s, OWN_EXPLAIN, own);
    /* The SQL, the types and the parameters, plus seven headers, seven
     * names and the small fields. */
    size_t cap = strlen(sql) + types_len + (r.pos - params_start) + 7 * 5 + 7 * OWN_NAME_SIZE + 16;
    s->explain_msg = malloc(cap);
    if (!s->explain_msg)
        return false;
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, s->explain_msg, cap);
    for (int i = 0; i < 2; i++) {
        pgt_msgbuf_begin(&mb, i == 0 ? 'C' : 'P');
        if (i == 0)
            pgt_msgbuf_u8(&mb, 'S');
        pgt_msgbuf_cstr(&mb, own);
        if (i == 1) {
            pgt_msgbuf_cstr(&mb, sql);
            pgt_msgbuf_bytes(&mb, types, types_len);
        }
        pgt_msgbuf_end(&mb);
    }
    pgt_msgbuf_begin(&mb, 'B');
    pgt_msgbuf_cstr(&mb, own);
    pgt_msgbuf_cstr(&mb, own);
    pgt_msgbuf_bytes(&mb, bind + params_start, r.pos - params_start);
    pgt_msgbuf_bytes(&mb, "\0\0", 2); /* no result formats: text */
    pgt_msgbuf_end(&mb);
    pgt_msgbuf_begin(&mb, 'E');
    pgt_msgbuf_cstr(&mb, own);
    pgt_msgbuf_u32(&mb, 0);
    pgt_msgbuf_end(&mb);
    for (int i = 0; i < 2; i++) {
        pgt_msgbuf_begin(&mb, 'C');
        pgt_msgbuf_u8(&mb, i == 0 ? 'P' : 'S');
        pgt_msgbuf_cstr(&mb, own);
        pgt_msgbuf_end(&mb);
    }
    return pgt__flush_msgs(s, &mb);
}

bool pgt__flush_msgs(pgt_session_t *s, pgt_msgbuf_t *mb)
{
    pgt_msgbuf_begin(mb, 'H');
    pgt_msgbuf_end(mb);
    if (mb->failed) {
        free(s->explain_msg);
        s->explain_msg = NULL;
        return false;
    }
    s->explain_msg_len = mb->len;
    return true;
}

/* The statement a client's Bind (body[0..blen)) binds, and its parameter
 * types; NULL when unknown. */
const pgt_text_t *pgt__bind_statement(const pgt_session_t *s, const uint8_t *body, size_t blen,
                                      const uint8_t **types, size_t *types_len)
{
    size_t pos = strnlen((const char *)body, blen) + 1;
    if (pos >= blen || !memchr(body + pos, 0, blen - pos))
        return NULL;
    return pgt_intercept_statement(s->ic, (const char *)body + pos, types, types_len);
}

/* A Bind is explained when the server will answer pgtally's messages
 * sent behind what the client sent before it (pgt_conv_may_extend: no
 * skipping, no COPY that could read them as data); the conversation model
 * tells their replies from the client's. Returns true when its EXPLAIN is
 * ready to go in s->explain_msg; otherwise s->est holds what history says
 * (key 0 when nothing). */
bool pgt__plan_bind(pgt_session_t *s, const uint8_t *body, size_t blen)
{
    s->est = PGT_ESTIMATE_NONE;
    s->plan_valid = false;
    s->explain_later = false;
    bool explain = pgt__may_explain(s);
    if (!explain && !(s->proxy->estimator && (pgt__judge_due(s) || pgt__guard_on(s))))
        return false;
    const uint8_t *types;
    size_t types_len;
    const pgt_text_t *t = pgt__bind_statement(s, body, blen, &types, &types_len);
    if (!t)
        return false;
    /* A statement prepared in SQL has no parameter types to Parse the
     * EXPLAIN with: it is estimated from history, and judged on that. */
    explain = explain && types;
    /* A Bind of a named portal that exists fails on that (42P03) before
     * its parameters are read; pgtally's EXPLAIN, on a portal of its own,
     * would fail otherwise. */
    bool later = !explain && types && !pgt_intercept_portal_exists(s->ic, (const char *)body);
    if (explain && pgt_intercept_portal_exists(s->ic, (const char *)body))
        explain = false;
    char *sql = pgt_estimator_plan(s->proxy->estimator, s->database, t->data, t->len,
                                   explain ? pgt__explain_level(s) : PGT_EXPLAIN_NEVER, &s->est);
    s->explain_later = later && s->est.explainable;
    if (!sql)
        return false;
    bool ok = explain_bind_msgs(s, sql, types, types_len, body, blen);
    free(sql);
    return ok;
}

/* ---- holding the client's message -------------------------------------- */

/* The held Query (qlen bytes at the start of client.pend) has been dealt
 * with: what the client sent after it goes on as usual. */
void pgt__release_held(pgt_session_t *s, size_t qlen)
{
    conn_t *c = &s->client;
    pgt__hold_reading(s);
    size_t n;
    uint8_t *buf = pgt__pend_take(c, &n);
    if (n > qlen && s->state != ST_CLOSING)
        pgt__pass_client(s, buf + qlen, n - qlen);
    free(buf);
}

/* Sends pgtally's EXPLAIN (or the stand-in of a refused Bind) ahead of
 * the client's Query or Bind, which waits at the start of client.pend. */
void pgt__start_explain(pgt_session_t *s)
{
    s->explaining = true;
    s->explain_sent_ns = uv_hrtime();
    uint8_t *msg = s->explain_msg;
    s->explain_msg = NULL;
    pgt__send_ours(s, msg, s->explain_msg_len);
    free(msg);
}

/* Answers a held Query with an ERROR and ReadyForQuery, as the server
 * would have (no transaction block was open). */
void pgt__answer_error(pgt_session_t *s, const char *sqlstate, const char *message,
                       const char *hint)
{
    uint8_t buf[1024];
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, buf, sizeof(buf));
    pgt_wire_error(&mb, "ERROR", sqlstate, message, NULL, hint);
    pgt_msgbuf_begin(&mb, 'Z');
    pgt_msgbuf_u8(&mb, 'I');
    pgt_msgbuf_end(&mb);
    if (!mb.failed)
        pgt__conn_send(&s->client, buf, mb.len);
}

/* ---- the answer -------------------------------------------------------- */

/* Turns the EXPLAIN's output (none when failed) into the estimate, and
 * keeps the plan for the guard (s->plan, s->plan_valid). */
static void take_explain(pgt_session_t *s, bool failed)
{
    s->plan_valid = false;
    if (s->explain_out && !failed && (s->plan || (s->plan = malloc(sizeof(*s->plan))) != NULL))
        s->plan_valid =
            pgt_estimator_parse((const char *)s->explain_out, s->explain_out_len, s->plan) == 0;
    free(s->explain_out);
    s->explain_out = NULL;
    s->explain_out_len = 0;
    s->explaining = false;
    double took_s = (double)(uv_hrtime() - s->explain_sent_ns) / 1e9;
    pgt_estimator_explained(s->proxy->estimator, &s->est, s->plan_valid ? s->plan : NULL, took_s);
    PGT_DEBUG("explained", "session=C-%llu planner_cost=%.2f estimate_micro=%lld",
              (unsigned long long)s->id, s->est.planner_cost, (long long)s->est.cost_micro);
}

/* The EXPLAIN's ErrorResponse err[0..*len) with its position (counted in
 * pgtally's EXPLAIN text) moved onto the client's statement. Returns the
 * new message (*len its length), which the caller frees, or NULL when it
 * cannot be rewritten: the caller then uses err as it is. */
static uint8_t *shifted_error(const pgt_session_t *s, const uint8_t *err, size_t *len)
{
    size_t cap = *len + 16; /* the position may gain digits */
    uint8_t *out = *len >= 5 ? malloc(cap) : NULL;
    if (!out)
        return NULL;
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, out, cap);
    if (pgt_wire_error_shift_position(&mb, err[0], err + 5, *len - 5, s->est.explain_shift) != 0 ||
        mb.failed) {
        free(out);
        return NULL;
    }
    *len = mb.len;
    return out;
}

/* A ParameterStatus the server sends behind the simple EXPLAIN's error
 * (the failed block undoing a SET, such as application_name) follows that
 * error, as it follows the Query's own error direct: it is held until the
 * error goes to the client, or until the EXPLAIN is over. */
static void hold_parameter_status(pgt_session_t *s, const uint8_t *msg, size_t total)
{
    pgt_buf_add(&s->explain_ps, msg, total);
    if (s->explain_ps.failed)
        pgt__session_fail(s, "53200", "pgtally: out of memory");
}

static void release_parameter_status(pgt_session_t *s, const pgt_conv_reply_t *r)
{
    pgt_buf_t held = s->explain_ps;
    s->explain_ps = (pgt_buf_t){0};
    for (size_t off = 0; !held.failed && off + 5 <= held.len && s->state != ST_CLOSING;) {
        const uint8_t *msg = (const uint8_t *)held.s + off;
        size_t total = (size_t)pgt_be32(msg + 1) + 1;
        pgt__deliver(s, msg, total, r);
        off += total;
    }
    pgt_buf_free(&held);
}

/* Inside a transaction block the EXPLAIN failed, and its failure aborted
 * the block: the client's Query would now meet 25P02, so it is not sent.
 * Its error is the EXPLAIN's, with the position moved onto the client's
 * text, then the server's ReadyForQuery z[0..zlen) ('E'), exactly as if
 * the Query had failed at planning. Both go through the relay, so the
 * intercept records the Query as failed with the server's SQLSTATE. */
static void explain_failed_in_block(pgt_session_t *s, const uint8_t *z, size_t zlen)
{
    conn_t *c = &s->client;
    size_t qlen = (size_t)pgt_be32(c->pend + 1) + 1;
    uint8_t *err = s->explain_err;
    size_t elen = s->explain_err_len;
    s->explain_err = NULL;
    /* A cancel that reached the server stopped the EXPLAIN: that 57014 is
     * the statement's error, as direct. */
    s->cancel_requested = false;
    uint8_t *shifted = shifted_error(s, err, &elen);
    /* The Query is told to the meter, never to the conversation model: the
     * server never has it, and these two answer it. */
    if (s->ic)
        pgt_intercept_client(s->ic, 'Q', c->pend + 5, qlen - 5);
    pgt_conv_reply_t r = {.to = {.type = 'Q', .from = PGT_CONV_CLIENT}};
    pgt__deliver(s, shifted ? shifted : err, elen, &r);
    release_parameter_status(s, &r);
    r.ends = true;
    if (s->state != ST_CLOSING)
        pgt__deliver(s, z, zlen, &r);
    free(shifted);
    free(err);
    pgt__release_held(s, qlen);
}

/* The EXPLAIN has answered (z[0..zlen) is its ReadyForQuery): the client's
 * Query goes upstream, then whatever the client sent after it. Outside a
 * transaction block an EXPLAIN that failed left no trace, and the Query
 * goes and fails on its own; inside one, its error is the Query's. */
static void finish_explain(pgt_session_t *s, const uint8_t *z, size_t zlen)
{
    bool in_block = s->txn_status == 'T'; /* as before the EXPLAIN */
    take_explain(s, s->explain_err != NULL || !z);
    pgt_intercept_set_estimate(s->ic, &s->est);
    if (s->explain_err && in_block && z) {
        explain_failed_in_block(s, z, zlen);
        return;
    }
    free(s->explain_err);
    s->explain_err = NULL;
    pgt_conv_reply_t ps = {.to = {.type = 'Q', .from = PGT_CONV_CLIENT}};
    release_parameter_status(s, &ps);
    if (s->state == ST_CLOSING)
        return;
    conn_t *c = &s->client;
    size_t qlen = (size_t)pgt_be32(c->pend + 1) + 1;
    /* Inside a block a cancel that found the EXPLAIN over is lost, as one
     * that reaches the server between two statements is direct: answering
     * for the server would tell the client the block is gone. */
    if (s->cancel_requested && in_block)
        s->cancel_requested = false;
    if (s->cancel_requested) {
        s->cancel_requested = false;
        pgt__answer_error(s, "57014", "canceling statement due to user request", NULL);
        pgt_intercept_unsent(s->ic, c->pend + 5, qlen - 5, PGT_QUERY_CANCELLED, "57014");
    } else if (pgt__judge(s, (const char *)c->pend + 5, qlen - 6, NULL, true)) {
        pgt__refuse_query(s);
        return;
    } else {
        pgt__client_account(s, 'Q', c->pend + 5, qlen - 5);
        pgt__conn_send(&s->server, c->pend, qlen);
    }
    pgt__release_held(s, qlen);
}

/* Keeps the text of the first DataRow of the EXPLAIN: one column holding
 * the JSON plan or the top plan line. */
static void explain_row(pgt_session_t *s, const uint8_t *body, size_t blen)
{
    pgt_reader_t r;
    pgt_reader_init(&r, body, blen);
    uint8_t hi, lo;
    uint32_t vlen;
    if (s->explain_out || !pgt_reader_u8(&r, &hi) || !pgt_reader_u8(&r, &lo) ||
        !pgt_reader_u32(&r, &vlen) || vlen > blen - r.pos)
        return;
    s->explain_out = malloc(vlen + 1);
    if (!s->explain_out)
        return;
    memcpy(s->explain_out, body + r.pos, vlen);
    s->explain_out[vlen] = 0;
    s->explain_out_len = vlen;
}

/* Keeps the simple EXPLAIN's ErrorResponse msg[0..total), which becomes
 * the client's statement's inside a transaction block. Out of memory, the
 * statement then goes upstream and meets the aborted block (25P02). */
static void keep_explain_error(pgt_session_t *s, const uint8_t *msg, size_t total)
{
    if (s->explain_err)
        return;
    s->explain_err = malloc(total);
    if (!s->explain_err)
        return;
    memcpy(s->explain_err, msg, total);
    s->explain_err_len = total;
}

static bool in_explain(const pgt_session_t *s)
{
    return s->explaining || s->refusing;
}

/* The EXPLAIN's error err[0..*len) as the client's statement would have
 * had it. The server may name the statement it failed to bind ("bind
 * message supplies 2 parameters, but prepared statement ... requires 1",
 * 08P01) or the portal it was binding (CONTEXT: portal "..." parameter $1
 * = '...'), and pgtally's name must never reach the client (it would let
 * the client take it): each becomes what the server would have said of
 * the client's Bind (body[0..blen)): its portal ("unnamed portal" for the
 * unnamed one, as PostgreSQL words it) or its statement. Returns false
 * when out of memory; otherwise *copy is NULL when nothing was named, or
 * the rewritten message (*len its length), which the caller frees. */
static bool as_clients_error(const pgt_session_t *s, const uint8_t *err, size_t *len,
                             const uint8_t *body, size_t blen, uint8_t **copy)
{
    char own[OWN_NAME_SIZE];
    pgt__own_name(s, OWN_EXPLAIN, own);
    const size_t on = OWN_NAME_SIZE - 1;
    static const char pq[] = "portal \"";
    const size_t pqn = sizeof(pq) - 1;
    size_t plen = strnlen((const char *)body, blen);
    const char *portal = plen < blen ? (const char *)body : "";
    const char *stmt = "";
    if (plen < blen && memchr(body + plen + 1, 0, blen - plen - 1))
        stmt = (const char *)body + plen + 1;
    const uint8_t *end = err + *len, *from = err + 5, *p;
    *copy = NULL;
    if (!memmem(from, (size_t)(end - from), own, on))
        return true;
    pgt_buf_t b = {0};
    pgt_buf_add(&b, err, 5);
    while ((p = memmem(from, (size_t)(end - from), own, on))) {
        bool is_portal = (size_t)(p - from) >= pqn && memcmp(p - pqn, pq, pqn) == 0 &&
                         p + on < end && p[on] == '"';
        pgt_buf_add(&b, from, (size_t)(p - from) - (is_portal ? pqn : 0));
        from = p + on;
        if (!is_portal) {
            pgt_buf_puts(&b, stmt);
            continue;
        }
        from++; /* the closing quote */
        if (portal[0])
            pgt_buf_printf(&b, "portal \"%s\"", portal);
        else
            pgt_buf_puts(&b, "unnamed portal");
    }
    pgt_buf_add(&b, from, (size_t)(end - from));
    if (b.failed || b.len - 1 > INT32_MAX) {
        pgt_buf_free(&b);
        return false;
    }
    size_t n = b.len;
    uint8_t *out = (uint8_t *)pgt_buf_take(&b);
    if (!out)
        return false;
    uint32_t mlen = (uint32_t)(n - 1);
    out[1] = (uint8_t)(mlen >> 24);
    out[2] = (uint8_t)(mlen >> 16);
    out[3] = (uint8_t)(mlen >> 8);
    out[4] = (uint8_t)mlen;
    *copy = out;
    *len = n;
    return true;
}

/* The extended EXPLAIN is over: answered, failed with the ErrorResponse
 * err (the server now skips to the client's Sync), or void (a client
 * message ahead of it failed, so none of it ran). The held Bind goes
 * upstream with its estimate, then what the client sent after it; the
 * EXPLAIN's error reaches the client as the error of its statement, which
 * would have failed the same way. */
static void finish_ext_explain(pgt_session_t *s, const uint8_t *err, size_t err_len)
{
    conn_t *c = &s->client;
    size_t blen = (size_t)pgt_be32(c->pend + 1) + 1;
    uint8_t *copy = NULL;
    bool refused = s->ext_refuse;
    /* A refused Bind too long to capture was held by its head only
     * (judge.c, judge_bind_head): what is here of it is dropped, and the
     * rest as it comes; the server would skip it anyway. */
    size_t head = 0;
    if (blen - 5 > PGT_INTERCEPT_MAX_SQL)
        head = c->pend_len < blen ? c->pend_len : blen;
    if (refused) {
        /* The stand-in failed (or a message ahead of it did, and the
         * client's Bind is skipped as it would have been): the server
         * skips to the client's Sync. The refused statement is recorded
         * now, since the server runs nothing of it. */
        s->explaining = false;
        if (err && s->verdict && pgt__set_subst(s, s->verdict)) {
            pgt_intercept_budget_outcome(s->ic, PGT_QUERY_REFUSED, s->verdict->budget_id);
            pgt__tell_refused(s, s->verdict);
            pgt_intercept_unsent_bind(s->ic, c->pend + 5, (head ? head : blen) - 5, &s->est,
                                      PGT_QUERY_REFUSED, s->verdict->sqlstate);
            err = copy = s->subst;
            err_len = s->subst_len;
            s->subst = NULL;
        } else {
            err = NULL;
        }
        free(s->verdict);
        s->verdict = NULL;
    } else {
        take_explain(s, err != NULL);
        if (err && !as_clients_error(s, err, &err_len, c->pend + 5, blen - 5, &copy)) {
            pgt__session_fail(s, "53200", "pgtally: out of memory");
            return;
        }
        if (copy)
            err = copy;
        size_t shifted_len = err_len;
        uint8_t *shifted = err ? shifted_error(s, err, &shifted_len) : NULL;
        if (shifted) {
            free(copy);
            err = copy = shifted;
            err_len = shifted_len;
        }
        const uint8_t *types;
        size_t types_len;
        const pgt_text_t *t =
            err ? NULL : pgt__bind_statement(s, c->pend + 5, blen - 5, &types, &types_len);
        pgt_judged_t src = {.bind = c->pend + 5, .bind_len = blen - 5};
        if (t && pgt__judge(s, t->data, t->len, &src, true)) {
            /* The estimate is over a cap: the stand-in goes now. */
            if (pgt__refuse_bind_msgs(s)) {
                pgt__start_explain(s);
                return;
            }
            free(s->verdict);
            s->verdict = NULL;
        }
    }
    s->ext_explain = false;
    s->ext_refuse = false;
    /* A cancel reached the server too: it stops the EXPLAIN, whose error
     * the client then gets, or finds nothing to stop, as when direct. */
    s->cancel_requested = false;
    /* After the EXPLAIN's error the server skips the Bind (and what
     * follows, to the client's Sync), as it would have skipped after the
     * Bind's own error; the error reaches the client in the Bind's place,
     * at once, as the server writes an error out. */
    if (head) {
        s->discard = blen - head;
        blen = head;
    } else {
        pgt__client_account(s, 'B', c->pend + 5, blen - 5);
        pgt_intercept_set_portal_estimate(s->ic, (const char *)c->pend + 5, &s->est);
        pgt__conn_send(&s->server, c->pend, blen);
    }
    if (err) {
        /* Told to the meter as the error of the client's Bind: the
         * Execute behind it is recorded as failed with it. */
        pgt_conv_reply_t r = {.to = {.type = 'B', .from = PGT_CONV_CLIENT}};
        if (refused)
            r.to.type = 0; /* recorded as refused already */
        pgt__deliver(s, err, err_len, &r);
    }
    free(copy);
    pgt__release_held(s, blen);
}

/* A message answering pgtally's own extended EXPLAIN or Bind stand-in
 * (r from the conversation model): rows are kept, an error or the last
 * reply ends it. */
static void ours_ext_whole(pgt_session_t *s, uint8_t type, const uint8_t *msg, size_t total,
                           const pgt_conv_reply_t *r)
{
    if (type == 'D' && !s->ext_refuse)
        explain_row(s, msg + 5, total - 5);
    else if (type == 'E')
        finish_ext_explain(s, msg, total);
    else if (r->ends && pgt_conv_ours(&s->conv) == 0)
        finish_ext_explain(s, NULL, 0);
}

/* A message answering pgtally's own simple EXPLAIN. */
static void ours_query_whole(pgt_session_t *s, uint8_t type, const uint8_t *msg, size_t total)
{
    if (type == 'D')
        explain_row(s, msg + 5, total - 5);
    else if (type == 'E')
        keep_explain_error(s, msg, total);
    else if (type == 'Z')
        finish_explain(s, msg, total);
}

/* The server skipped messages (r.skipped): the client's are told to the
 * meter; pgtally's end its hold when none of them is left, with nothing
 * learnt (a client's message ahead failed, so none of them ran). */
static void take_skipped(pgt_session_t *s)
{
    bool ours = pgt__take_skipped(s);
    if (!ours || !s->explaining || pgt_conv_ours(&s->conv) > 0)
        return;
    if (s->ext_explain)
        finish_ext_explain(s, NULL, 0);
    else
        finish_explain(s, NULL, 0);
}

/* One whole server message while pgtally's own messages are upstream or
 * a refused Query's stand-in runs: the conversation model says whose it
 * is. pgtally's answers, notices included (planning may run functions
 * that raise them), are consumed; the client's go on, early ones held. */
static void explain_whole(pgt_session_t *s, uint8_t type, const uint8_t *msg, size_t total)
{
    pgt_conv_reply_t r;
    pgt__conv_reply(s, type, msg + 5, total - 5, &r);
    if (r.to.type && r.to.from == PGT_CONV_OURS && type != 'S') {
        /* The skipped are taken first: after an error of pgtally's they
         * are its own, which the error ends in any case. */
        pgt__take_skipped(s);
        if (s->ext_explain)
            ours_ext_whole(s, type, msg, total, &r);
        else
            ours_query_whole(s, type, msg, total);
        return;
    }
    if (type == 'S' && s->explaining && !s->ext_explain && s->explain_err) {
        hold_parameter_status(s, msg, total);
        return;
    }
    if (s->refusing && type == 'E' && r.to.type) {
        /* The stand-in's error: the client gets the budget's instead. */
        s->refusing = false;
        uint8_t *err = s->subst;
        s->subst = NULL;
        if (err)
            pgt__deliver(s, err, s->subst_len, &r);
        free(err);
    } else {
        pgt__deliver(s, msg, total, &r);
    }
    if (s->state != ST_CLOSING)
        take_skipped(s);
    if (s->awaiting)
        pgt__await_check(s);
}

void pgt__explain_data(pgt_session_t *s, const uint8_t *data, size_t len)
{
    pgt__server_whole(s, data, len, 64 << 20, in_explain, explain_whole);
}
