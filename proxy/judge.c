/* Budgets at the session: a statement about to go upstream is judged
 * (warning, notice or refusal), a refused one is replaced by a stand-in
 * that fails upstream while the client gets the budget's error, and a
 * statement that runs past a budget is cancelled. */
#include "session_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/fingerprint.h"
#include "pgtally/log.h"
#include "pgtally/money.h"
#include "pgtally/period.h"
#include "pgtally/text.h"

/* Server messages taken whole while a statement cancelled for a budget
 * runs: ParameterStatus, as always after login, and ErrorResponse. */
static const uint8_t cancel_capture[256] = {['S'] = 1, ['E'] = 1};

/* ---- before a statement ------------------------------------------------ */

bool pgt__budgets_apply(const pgt_session_t *s)
{
    pgt_who_t who = {.user = s->user, .database = s->database, .application = s->app ? s->app : ""};
    return s->ic && pgt_budgets_apply(s->proxy->budgets, &who);
}

static pgt_who_t who_of(const pgt_session_t *s)
{
    return (pgt_who_t){
        .user = s->user, .database = s->database, .application = s->app ? s->app : ""};
}

/* Tells the daemon's alerts (the refused hook) that a statement of s was
 * refused or is being cancelled, as v says: when its error goes to the
 * client or its cancel upstream, not when it is judged (a refusal may turn
 * out void: pgt__await_check). */
void pgt__tell_refused(pgt_session_t *s, const pgt_verdict_t *v)
{
    const pgt_proxy_hooks_t *h = &s->proxy->hooks;
    pgt_who_t who = who_of(s);
    if (h->refused)
        h->refused(s->proxy, &who, v, h->arg);
}

static void send_notice(pgt_session_t *s, const char *severity, const char *sqlstate,
                        const char *text)
{
    uint8_t buf[1024];
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, buf, sizeof(buf));
    pgt_wire_notice(&mb, severity, sqlstate, text);
    if (!mb.failed)
        pgt__conn_send(&s->client, buf, mb.len);
}

/* Whether a statement of s needs judging at all: budgets apply to it, or
 * rules by shape are in force. */
bool pgt__judge_due(const pgt_session_t *s)
{
    return pgt__budgets_apply(s) || (s->ic && pgt_budgets_have_rules(s->proxy->budgets));
}

/* The refusal of a block rule: SQLSTATE PGT_RULE_SQLSTATE, the rule's
 * message or pgtally's, and a HINT naming who can lift it. */
static void rule_verdict(const pgt_rule_t *r, pgt_verdict_t *v)
{
    memset(v, 0, sizeof(*v));
    v->action = PGT_VERDICT_REFUSE;
    v->rule_id = r->id;
    memcpy(v->sqlstate, PGT_RULE_SQLSTATE, sizeof(v->sqlstate));
    if (r->message && r->message[0])
        snprintf(v->message, sizeof(v->message), "%s", r->message);
    else
        snprintf(v->message, sizeof(v->message),
                 "pgtally: statement shape %016llx is blocked by pgtally rule %lld",
                 (unsigned long long)r->fingerprint, (long long)r->id);
    snprintf(v->detail, sizeof(v->detail), "pgtally rule %lld blocks statement shape %016llx.",
             (long long)r->id, (unsigned long long)r->fingerprint);
    snprintf(v->hint, sizeof(v->hint), "Ask your pgtally admin (pgtallyctl rule rm %lld).",
             (long long)r->id);
}

/* Statements run by name in one string that are matched (the rest are
 * not). */
#define RULE_NAMED_MAX 16

/* The strictest of best and the rules matching what the EXECUTE, FETCH
 * and MOVE statements of sql[0..len) run: statements prepared and cursors
 * declared earlier, perhaps before the rule existed. */
static const pgt_rule_t *rule_of_named(pgt_session_t *s, const pgt_who_t *who, const char *sql,
                                       size_t len, const pgt_rule_t *best)
{
    pgt_prep_t runs[RULE_NAMED_MAX];
    int n = sql[len] == '\0' ? pgt_fp_runs_named(sql, runs, RULE_NAMED_MAX) : 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *types;
        size_t types_len;
        const pgt_text_t *t = runs[i].op == PGT_PREP_EXECUTE
                                  ? pgt_intercept_statement(s->ic, runs[i].name, &types, &types_len)
                                  : pgt_intercept_portal_text(s->ic, runs[i].name);
        if (t)
            best = pgt_rule_stricter(best,
                                     pgt_budgets_rule(s->proxy->budgets, who, 0, t->data, t->len));
    }
    return best;
}

/* Checks sql[0..len) against the rules by shape, with the estimator's
 * fingerprint in s->est when it found one. A block rule refuses it (true,
 * with the verdict in s->verdict) where a budget could refuse it; where
 * not (see pgt__judge) it runs and is recorded as a log rule's. A warn
 * rule sends its WARNING; a log rule changes nothing the client sees.
 * The ledger records the rule with the statement (rule_id). */
static bool judge_rule(pgt_session_t *s, const pgt_who_t *who, const char *sql, size_t len,
                       bool can_refuse)
{
    s->est.rule_id = 0;
    const pgt_rule_t *r = pgt_budgets_rule(s->proxy->budgets, who, s->est.fingerprint, sql, len);
    if (pgt_budgets_have_rules(s->proxy->budgets))
        r = rule_of_named(s, who, sql, len, r);
    if (!r)
        return false;
    if (r->action == PGT_RULE_ACTION_WARN) {
        char text[PGT_RULE_MESSAGE_MAX + 96];
        if (r->message && r->message[0])
            snprintf(text, sizeof(text), "%s (pgtally rule %lld)", r->message, (long long)r->id);
        else
            snprintf(text, sizeof(text),
                     "pgtally: statement shape %016llx is flagged by pgtally "
                     "rule %lld",
                     (unsigned long long)r->fingerprint, (long long)r->id);
        send_notice(s, "WARNING", "01000", text);
        return false;
    }
    s->est.rule_id = r->id;
    bool refuse = r->action == PGT_RULE_ACTION_BLOCK && can_refuse && s->txn_status != 'E' &&
                  !pgt_fp_never_refused(sql, len);
    PGT_INFO(refuse ? "rule_blocked" : "rule_matched", "session=C-%llu user=%s rule=%lld action=%s",
             (unsigned long long)s->id, s->user, (long long)r->id, pgt_rule_action_name(r->action));
    if (!refuse || (s->verdict = malloc(sizeof(*s->verdict))) == NULL)
        return false;
    rule_verdict(r, s->verdict);
    return true;
}

/* Rows as people write them: 950000, 3.6e12. */
static void rows_text(double rows, char *out, size_t cap)
{
    if (rows < 1e6) {
        snprintf(out, cap, "%.0f", rows);
        return;
    }
    int exp10 = (int)floor(log10(rows));
    double mant = rows / pow(10, exp10);
    if (mant >= 9.95) {
        mant /= 10;
        exp10++;
    }
    if (fabs(mant - round(mant)) < 0.05)
        snprintf(out, cap, "%.0fe%d", mant, exp10);
    else
        snprintf(out, cap, "%.1fe%d", mant, exp10);
}

/* The runaway-join guard: a statement whose plan (s->plan, when this
 * statement was explained) has a join estimated at more rows than [guard]
 * max_join_rows, or any node at more than [guard] max_estimated_rows, is
 * refused before it runs, with 54000 and a message naming the tables and
 * the rows. Needs no pricing and no budget. Returns true with the verdict
 * in s->verdict. */
static bool judge_guard(pgt_session_t *s, const pgt_who_t *who, const char *sql, size_t len,
                        bool can_refuse)
{
    const pgt_config_t *cfg = s->proxy->cfg;
    const pgt_plan_t *p = s->plan;
    if (!s->plan_valid || !can_refuse || s->txn_status == 'E' || pgt_fp_never_refused(sql, len))
        return false;
    /* The node limit: [guard]'s, or a budget's --max-rows when smaller. */
    int64_t budget_id = 0;
    int64_t budget_rows = pgt_budgets_max_rows(s->proxy->budgets, who, &budget_id);
    double node_limit = cfg->guard_max_rows;
    if (budget_rows > 0 && (node_limit <= 0 || (double)budget_rows < node_limit))
        node_limit = (double)budget_rows;
    else
        budget_id = 0;
    bool join = cfg->guard_max_join_rows > 0 && p->max_join_rows > cfg->guard_max_join_rows;
    bool node = node_limit > 0 && p->max_rows > node_limit;
    if (!join && !node)
        return false;
    pgt_verdict_t *v = calloc(1, sizeof(*v));
    if (!v)
        return false;
    char rows[32], limit[32];
    v->action = PGT_VERDICT_REFUSE;
    memcpy(v->sqlstate, "54000", 6);
    if (join) {
        rows_text(p->max_join_rows, rows, sizeof(rows));
        rows_text(cfg->guard_max_join_rows, limit, sizeof(limit));
        pgt_say(v->message, sizeof(v->message),
                "pgtally: join of %s estimated at %s rows; the limit is %s", p->join_desc, rows,
                limit);
        pgt_say(v->detail, sizeof(v->detail),
                "The plan joins %s into an estimated %s rows; [guard] max_join_rows = %s refuses "
                "a join estimated at more before it runs.",
                p->join_desc, rows, limit);
    } else {
        rows_text(p->max_rows, rows, sizeof(rows));
        rows_text(node_limit, limit, sizeof(limit));
        pgt_say(v->message, sizeof(v->message),
                "pgtally: %s%s%s estimated at %s rows; the limit is %s", p->max_rows_node,
                p->max_rows_desc[0] ? " of " : "", p->max_rows_desc, rows, limit);
        if (budget_id)
            pgt_say(v->detail, sizeof(v->detail),
                    "A node of the plan is estimated at %s rows; budget %lld allows statements "
                    "with nodes of at most %s rows (pgtallyctl budget set --max-rows).",
                    rows, (long long)budget_id, limit);
        else
            pgt_say(v->detail, sizeof(v->detail),
                    "A node of the plan is estimated at %s rows; [guard] max_estimated_rows = %s "
                    "refuses a statement with a node estimated at more before it runs.",
                    rows, limit);
        v->budget_id = budget_id;
    }
    pgt_say(v->hint, sizeof(v->hint),
            "Add a join condition or a filter, or check the plan with EXPLAIN. The limit is "
            "pgtally's [guard] setting.");
    s->verdict = v;
    PGT_INFO("guard_refused", "session=C-%llu user=%s rows=%.0f join_rows=%.0f",
             (unsigned long long)s->id, s->user, p->max_rows, p->max_join_rows);
    return true;
}

/* ---- escrow: tickets and approvals (docs/escrow.md) --------------------- */

/* Whether a refused sql[0..len) may have a ticket. Not when it runs a
 * statement by name (EXECUTE, FETCH, MOVE): by the time it is approved the
 * name may stand for another statement. Nor several statements in one
 * Query: the ledger records each on its own, and so tickets are of one. */
static bool ticketable(const char *sql, size_t len)
{
    pgt_prep_t named[1];
    pgt_stmt_t st[2];
    size_t off, n;
    if (sql[len] != '\0')
        return true; /* the head of a Query too long to capture: judged by its first bytes */
    return pgt_fp_runs_named(sql, named, 1) == 0 &&
           (pgt_fp_single(sql, len, &off, &n) || pgt_fp_split(sql, st, 2) == 1);
}

/* A refusal by a budget, a cap or the guard (v) is lifted by an approval
 * in force of the statement's request (user, database, shape, constants:
 * those of sql[0..len), as the ledger records it, and those of the Bind
 * that runs it: src) whose cap the estimate fits: the statement then runs
 * under it (s->est carries the approval to the intercept, the running
 * check and the ledger), with a NOTICE that says so, and this returns true.
 * Otherwise v's HINT gets the request's ticket, and an approver's command.
 * Needs the shape's fingerprint: without one there is no ticket. */
static bool escrow(pgt_session_t *s, const pgt_who_t *who, const char *sql, size_t len,
                   const pgt_judged_t *src, pgt_verdict_t *v)
{
    if (!v)
        return false;
    if (src && src->text_len && src->text_len < len)
        len = src->text_len; /* the shape and constants of what the ledger records */
    uint64_t fp = s->est.fingerprint;
    pgt_shape_t shape;
    if (!fp && !s->proxy->escrow_fp)
        s->proxy->escrow_fp = pgt_fp_cache_new(256);
    if (!fp && s->proxy->escrow_fp && pgt_fp_shape(s->proxy->escrow_fp, sql, len, &shape) == 0)
        fp = shape.fingerprint;
    if (!fp || !ticketable(sql, len))
        return false;
    uint64_t params = src && src->bind ? pgt_intercept_bind_params(src->bind, src->bind_len) : 0;
    uint64_t constants = pgt_fp_constants_hash(sql, len, params);
    const pgt_approval_t *a = pgt_budgets_approval(s->proxy->budgets, who, fp, constants);
    const char *cur = s->proxy->cfg->currency;
    char cap[PGT_MONEY_TEXT_MAX], est[PGT_MONEY_TEXT_MAX], until[32];
    if (a && (a->max_micro < 0 || s->est.cost_micro <= a->max_micro)) {
        s->est.approval_id = a->id;
        s->est.approval_cap = a->max_micro;
        pgt_local_time_text(a->until_us, until, sizeof(until));
        char text[384];
        if (a->max_micro >= 0)
            pgt_say(text, sizeof(text),
                    "pgtally: runs under approval %lld of ticket %s, granted by %s until %s; it is "
                    "cancelled past %s",
                    (long long)a->id, a->ticket, a->created_by, until,
                    pgt_money_format_short(a->max_micro, cur, cap, sizeof(cap)));
        else
            pgt_say(text, sizeof(text),
                    "pgtally: runs under approval %lld of ticket %s, granted by %s until %s",
                    (long long)a->id, a->ticket, a->created_by, until);
        send_notice(s, "NOTICE", "00000", text);
        PGT_INFO("approval_used", "session=C-%llu user=%s approval=%lld ticket=%s",
                 (unsigned long long)s->id, s->user, (long long)a->id, a->ticket);
        return true;
    }
    char ticket[PGT_TICKET_LEN], over[160] = "";
    pgt_ticket_id(who->user, who->database, fp, constants, ticket);
    if (a)
        pgt_say(over, sizeof(over), " Approval %lld caps a run at %s; this one is estimated at %s.",
                (long long)a->id, pgt_money_format_short(a->max_micro, cur, cap, sizeof(cap)),
                pgt_money_format_short(s->est.cost_micro, cur, est, sizeof(est)));
    /* The ticket after the refusal's own hint, which is cut if need be. */
    char ask[sizeof(v->hint)];
    int n = snprintf(ask, sizeof(ask),
                     "pgtally: ask for approval with ticket %s (pgtallyctl ticket approve %s --for "
                     "2h).%s",
                     ticket, ticket, over);
    int room = (int)sizeof(v->hint) - 2 - (n > 0 ? n : 0);
    char old[sizeof(v->hint)];
    memcpy(old, v->hint, sizeof(old));
    pgt_say(v->hint, sizeof(v->hint), "%.*s%s%s", room > 0 ? room : 0, old, old[0] ? " " : "", ask);
    memcpy(v->ticket, ticket, sizeof(v->ticket));
    return false;
}

/* Checks the statement sql[0..len) about to go upstream (s->est holds its
 * estimate) against the rules by shape (judge_rule), then the budgets. Returns true when it is
 * refused, with the reason in s->verdict; otherwise sends the client the warning and notice the
 * verdict holds, ahead of the statement's results. A statement is refused only when the reply that
 * refuses it can be told from others: nothing else in flight (simple) or a known batch (extended);
 * otherwise it runs, and the running check stops it. */
static bool judge_stmt(pgt_session_t *s, const char *sql, size_t len, const pgt_judged_t *src,
                       bool can_refuse)
{
    pgt_budgets_t *b = s->proxy->budgets;
    pgt_who_t who = who_of(s);
    s->est.approval_id = 0;
    s->est.approval_cap = -1;
    if (judge_rule(s, &who, sql, len, can_refuse))
        return true;
    bool guarded = judge_guard(s, &who, sql, len, can_refuse);
    s->plan_valid = false;
    if (guarded && escrow(s, &who, sql, len, src, s->verdict)) {
        free(s->verdict);
        s->verdict = NULL;
        return false;
    }
    if (guarded)
        return true;
    int64_t est = s->est.cost_micro;
    bool apply = pgt_budgets_apply(b, &who);
    if (!apply && !pgt_budgets_notice_due(b, est))
        return false;
    pgt_verdict_t v;
    /* In a failed transaction block the server refuses the statement
     * anyway (25P02), at no cost. */
    const int64_t range[3] = {est, s->est.low_micro, s->est.high_micro};
    pgt_budgets_check(b, &who, range,
                      !apply || s->txn_status == 'E' || pgt_fp_never_refused(sql, len), &v);
    if (v.action == PGT_VERDICT_REFUSE && can_refuse && escrow(s, &who, sql, len, src, &v))
        return false;
    if (v.action == PGT_VERDICT_REFUSE && can_refuse && (s->verdict = malloc(sizeof(v))) != NULL) {
        *s->verdict = v;
        PGT_INFO("budget_refused", "session=C-%llu user=%s budget=%lld sqlstate=%s",
                 (unsigned long long)s->id, s->user, (long long)v.budget_id, v.sqlstate);
        return true;
    }
    if (v.warning[0])
        send_notice(s, "WARNING", "01000", v.warning);
    if (v.notice[0])
        send_notice(s, "NOTICE", "00000", v.notice);
    return false;
}

bool pgt__judge(pgt_session_t *s, const char *sql, size_t len, const pgt_judged_t *src,
                bool can_refuse)
{
    if (!s->proxy->budgets || !s->ic)
        return false;
    bool refused = judge_stmt(s, sql, len, src, can_refuse);
    /* A Query's execution takes what the judge decided (its rule, its
     * approval) with its estimate; a Bind's portal takes it from s->est. */
    if (!src || !src->bind)
        pgt_intercept_set_estimate(s->ic, &s->est);
    return refused;
}

/* A Bind longer than the capture limit (huge parameters) is judged on its
 * head, which names its portal and statement: the statement's shape
 * history gives the estimate (no EXPLAIN: that would need all of the
 * parameters), else the unknown-estimate policy applies. A refused one
 * is never held whole: its stand-in goes upstream, and the Bind itself is
 * dropped as it comes (s->discard), since the server would skip it after
 * the stand-in's error anyway (finish_ext_explain). */
static void judge_bind_head(pgt_session_t *s, const uint8_t *head, size_t hlen)
{
    s->est = PGT_ESTIMATE_NONE;
    s->plan_valid = false;
    const uint8_t *types;
    size_t types_len;
    const pgt_text_t *t = pgt__bind_statement(s, head, hlen, &types, &types_len);
    if (t && s->proxy->estimator)
        free(pgt_estimator_plan(s->proxy->estimator, s->database, t->data, t->len,
                                PGT_EXPLAIN_NEVER, &s->est));
    if (pgt__judge_bind(s, head, hlen, false))
        s->client.framer.stop = true;
}

/* A Query longer than the capture limit (PGT_INTERCEPT_MAX_SQL) is judged
 * on what is known before any of it goes upstream: its head, the first
 * PGT_INTERCEPT_MAX_SQL bytes, gives its kind (pgt_fp_never_refused reads
 * the first word), and history the estimate of its shape, which pgtally
 * knows by its first PGT_FRAMER_PEEK bytes (all the intercept sees of a
 * Query that streams); else the estimate is unknown (-1). It is refused
 * under the same conditions as a whole Query, but it is never held whole:
 * the framer stops in front of it with only the head in client.pend,
 * the stand-in goes upstream, and the rest of its body is read and
 * dropped as it comes (s->discard), so memory stays at one head however
 * long the Query. */
void pgt__judge_head(pgt_session_t *s, uint8_t type, const uint8_t *head, size_t hlen)
{
    if (type == 'B' && s->ic) {
        judge_bind_head(s, head, hlen);
        return;
    }
    if (type != 'Q' || !s->ic)
        return;
    if (pgt__may_hold_query(s) && s->txn_status == 'I' && s->proxy->ledger &&
        pgt_ledger_refusing(s->proxy->ledger)) {
        s->refuse = true;
        s->client.framer.stop = true;
        return;
    }
    s->est = PGT_ESTIMATE_NONE;
    s->plan_valid = false;
    if (s->proxy->estimator) {
        char first[PGT_FRAMER_PEEK + 1];
        size_t n = hlen < PGT_FRAMER_PEEK ? hlen : PGT_FRAMER_PEEK;
        memcpy(first, head, n);
        first[n] = 0;
        free(pgt_estimator_plan(s->proxy->estimator, s->database, first, n, PGT_EXPLAIN_NEVER,
                                &s->est));
    }
    pgt_intercept_set_estimate(s->ic, &s->est);
    pgt_judged_t src = {.text_len = PGT_FRAMER_PEEK}; /* recorded by its first bytes */
    if (pgt__judge(s, (const char *)head, hlen, &src, pgt_conv_may_query(&s->conv)))
        s->client.framer.stop = true;
}

/* The held Query at the start of client.pend: returns the bytes of it held
 * there (its whole length, or its head only, when the rest is then to be
 * dropped as it comes: s->discard), with *body and *blen the text it is
 * recorded by: all of it, or the first bytes of one too long to capture, as
 * the intercept records one that streams. */
static size_t held_query(pgt_session_t *s, const uint8_t **body, size_t *blen)
{
    conn_t *c = &s->client;
    size_t qlen = (size_t)pgt_be32(c->pend + 1) + 1;
    *body = c->pend + 5;
    *blen = qlen - 5;
    if (c->pend_len < qlen) {
        s->discard = qlen - c->pend_len;
        qlen = c->pend_len;
        *blen = PGT_FRAMER_PEEK;
    }
    return qlen;
}

/* ---- refusals ---------------------------------------------------------- */

/* The ErrorResponse of a verdict, kept in s->subst: it replaces the
 * server's answer to the statement pgtally sent in the refused one's
 * place. */
bool pgt__set_subst(pgt_session_t *s, const pgt_verdict_t *v)
{
    uint8_t buf[2048];
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, buf, sizeof(buf));
    pgt_wire_error(&mb, "ERROR", v->sqlstate, v->message, v->detail[0] ? v->detail : NULL,
                   v->hint[0] ? v->hint : NULL);
    free(s->subst);
    s->subst = mb.failed ? NULL : malloc(mb.len);
    if (!s->subst)
        return false;
    memcpy(s->subst, buf, mb.len);
    s->subst_len = mb.len;
    return true;
}

/* pgtally's stand-in for a refused Bind: a Bind of a statement that does
 * not exist, which fails, and a Flush. The statement (and the portal) is
 * the session's OWN_REFUSED name, which nothing ever creates and no client
 * can know: a statement of the client's by that name would bind and run. */
bool pgt__refuse_bind_msgs(pgt_session_t *s)
{
    char own[OWN_NAME_SIZE];
    pgt__own_name(s, OWN_REFUSED, own);
    size_t cap = 2 * 5 + 2 * OWN_NAME_SIZE + 6;
    s->explain_msg = malloc(cap);
    if (!s->explain_msg)
        return false;
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, s->explain_msg, cap);
    pgt_msgbuf_begin(&mb, 'B');
    pgt_msgbuf_cstr(&mb, own);
    pgt_msgbuf_cstr(&mb, own);
    pgt_msgbuf_bytes(&mb, "\0\0\0\0\0\0", 6); /* no formats, parameters or results */
    pgt_msgbuf_end(&mb);
    if (!pgt__flush_msgs(s, &mb))
        return false;
    s->ext_explain = true;
    s->ext_refuse = true;
    return true;
}

/* Checks a Bind's statement (s->est from plan_bind) against the budgets.
 * A refused one is held, and refuse_bind_msgs's stand-in goes upstream;
 * one pipelined behind Executes waits for them first (pgt__await_start). */
bool pgt__judge_bind(pgt_session_t *s, const uint8_t *body, size_t blen, bool whole)
{
    s->est.rule_id = 0;
    if (!pgt__judge_due(s) && !pgt_budgets_notice_due(s->proxy->budgets, s->est.cost_micro))
        return false;
    const uint8_t *types;
    size_t types_len;
    const pgt_text_t *t = pgt__bind_statement(s, body, blen, &types, &types_len);
    bool now = pgt__may_hold(s) && pgt_conv_may_extend(&s->conv);
    bool later = !now && whole && pgt__may_await(s);
    pgt_judged_t src = {.bind = body, .bind_len = blen};
    if (!t || !pgt__judge(s, t->data, t->len, &src, now || later))
        return false;
    if (later) {
        s->awaiting = AWAIT_BIND;
        return true;
    }
    if (pgt__refuse_bind_msgs(s))
        return true;
    free(s->verdict);
    s->verdict = NULL;
    return false;
}

/* Refuses the Query at the start of client.pend while the ledger cannot
 * record it (ledger.on_failure = closed), then goes on with what follows. */
void pgt__refuse_held(pgt_session_t *s)
{
    s->refuse = false;
    const uint8_t *body;
    size_t blen, qlen = held_query(s, &body, &blen);
    pgt__answer_error(s, "58030",
                      "pgtally: statements are refused while the ledger cannot be written "
                      "(ledger.on_failure = closed)",
                      "Ask the pgtally operator to check the disk holding the ledger; pgtally logs "
                      "ledger_write_failed with the cause.");
    pgt_intercept_unsent(s->ic, body, blen, PGT_QUERY_REFUSED, "58030");
    pgt__release_held(s, qlen);
}

/* Sends a Query that makes the server raise the verdict's error (the
 * server's log then names the budget). */
static bool send_raise(pgt_session_t *s, const pgt_verdict_t *v)
{
    char lit[600];
    size_t n = 0;
    lit[n++] = '\'';
    for (const char *c = v->message; *c && n < sizeof(lit) - 3; c++) {
        if (*c == '$')
            continue; /* cannot end the dollar quote */
        if (*c == '\'')
            lit[n++] = '\'';
        lit[n++] = *c;
    }
    lit[n++] = '\'';
    lit[n] = 0;
    char sql[800];
    snprintf(sql, sizeof(sql),
             "DO $pgtally$BEGIN RAISE EXCEPTION USING ERRCODE = '%s', MESSAGE = %s; END$pgtally$",
             v->sqlstate, lit);
    uint8_t buf[900];
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, buf, sizeof(buf));
    pgt_msgbuf_begin(&mb, 'Q');
    pgt_msgbuf_cstr(&mb, sql);
    pgt_msgbuf_end(&mb);
    if (mb.failed)
        return false;
    pgt__conn_send(&s->server, buf, mb.len);
    return true;
}

/* Refuses the held Query for a budget. A stand-in that fails goes
 * upstream in its place, so the server ends it as it ends any failed
 * statement (a transaction block is left aborted) and answers
 * ReadyForQuery; the client gets the budget's ErrorResponse instead of the
 * stand-in's. The ledger records the client's statement as refused. */
void pgt__refuse_query(pgt_session_t *s)
{
    pgt_verdict_t *v = s->verdict;
    s->verdict = NULL;
    const uint8_t *body;
    size_t blen, qlen = held_query(s, &body, &blen);
    if (!pgt__set_subst(s, v)) {
        free(v);
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    pgt__client_account(s, 'Q', body, blen);
    pgt_intercept_budget_outcome(s->ic, PGT_QUERY_REFUSED, v->budget_id);
    pgt__tell_refused(s, v);
    bool sent = send_raise(s, v);
    free(v);
    if (!sent) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    s->refusing = true;
    pgt__release_held(s, qlen);
}

/* ---- a refusal pipelined behind other statements ----------------------- */

/* A statement sent behind others not yet answered cannot be refused in
 * place: a Query's stand-in error would be taken for theirs, and a Bind's
 * stand-in would end a COPY one of them may begin. Nor may it go, and be
 * stopped once it runs: the server writes nothing out before the client's
 * Sync, so pgtally could not tell when. It waits held instead, with what
 * the client sent after it, behind a Flush of pgtally's that makes the
 * server write out the replies ahead of it; those reach the client early,
 * held until the client would have had them (conv.h). Once none is owed
 * it is refused as if sent alone. */

/* Whether the server reads the next message as a statement: it neither
 * skips to a Sync nor reads COPY data. */
static bool conv_reads(const pgt_conv_t *cv)
{
    return !cv->ignoring && !cv->copy_in && !cv->failed;
}

bool pgt__may_await(const pgt_session_t *s)
{
    /* The server must still answer something: that answer ends the wait. */
    return pgt__may_hold(s) && conv_reads(&s->conv) && pgt_conv_will_answer(&s->conv);
}

void pgt__await_start(pgt_session_t *s)
{
    static const uint8_t flush[5] = {'H', 0, 0, 0, 4};
    s->explaining = true;
    pgt__send_ours(s, flush, sizeof(flush));
}

/* The held message (mlen bytes at the start of client.pend) goes upstream,
 * told to the intercept with its estimate. */
static void send_held(pgt_session_t *s, size_t mlen)
{
    conn_t *c = &s->client;
    if (c->pend[0] == 'Q')
        pgt_intercept_set_estimate(s->ic, &s->est);
    pgt__client_account(s, c->pend[0], c->pend + 5, mlen - 5);
    if (c->pend[0] == 'B')
        pgt_intercept_set_portal_estimate(s->ic, (const char *)c->pend + 5, &s->est);
    pgt__conn_send(&s->server, c->pend, mlen);
    pgt__release_held(s, mlen);
}

/* The held statement goes upstream as it came, the server treating it as
 * it would have direct: what is ahead of it failed (it is skipped), began
 * a COPY (it ends the COPY), or left the transaction block failed. */
static void await_pass(pgt_session_t *s)
{
    conn_t *c = &s->client;
    size_t mlen = (size_t)pgt_be32(c->pend + 1) + 1;
    PGT_INFO("refusal_void", "session=C-%llu reason=\"%s\"", (unsigned long long)s->id,
             s->conv.copy_in ? "a COPY ahead of it began" : "a statement ahead of it failed");
    free(s->verdict);
    s->verdict = NULL;
    s->explaining = false;
    send_held(s, mlen);
}

bool pgt__guard_on(const pgt_session_t *s)
{
    const pgt_config_t *cfg = s->proxy->cfg;
    if (!s->proxy->estimator || cfg->estimate_mode != PGT_ESTIMATE_EXPLAIN)
        return false;
    if (cfg->guard_max_rows > 0 || cfg->guard_max_join_rows > 0)
        return true;
    pgt_who_t who = who_of(s);
    int64_t id;
    return pgt_budgets_max_rows(s->proxy->budgets, &who, &id) > 0;
}

int pgt__explain_level(const pgt_session_t *s)
{
    return pgt__guard_on(s) ? PGT_EXPLAIN_ALWAYS : PGT_EXPLAIN_IF_WORTH;
}

bool pgt__guard_hold(pgt_session_t *s, uint8_t what)
{
    if (!pgt__guard_on(s) || !s->est.key || !pgt__may_await(s))
        return false;
    s->awaiting = what;
    s->client.framer.stop = true;
    return true;
}

/* Nothing is ahead of a statement that waited to be explained: it is, as
 * if it had come alone, or it goes as it came when it cannot be. */
static void await_plan(pgt_session_t *s, uint8_t what)
{
    conn_t *c = &s->client;
    size_t mlen = (size_t)pgt_be32(c->pend + 1) + 1;
    s->explaining = false;
    pgt__take_skipped(s); /* what the server skipped is settled now */
    if (what == AWAIT_PLAN_BIND) {
        if (pgt__plan_bind(s, c->pend + 5, mlen - 5)) {
            s->ext_explain = true;
            pgt__start_explain(s);
            return;
        }
    } else if (pgt__may_hold_query(s) && c->pend[mlen - 1] == 0) {
        s->est = PGT_ESTIMATE_NONE;
        s->plan_valid = false;
        char *sql = pgt_estimator_plan(s->proxy->estimator, s->database, (const char *)c->pend + 5,
                                       mlen - 6, PGT_EXPLAIN_ALWAYS, &s->est);
        bool held = sql && pgt__explain_query_msg(s, sql);
        free(sql);
        if (held) {
            pgt__start_explain(s);
            return;
        }
    }
    send_held(s, mlen);
}

void pgt__await_check(pgt_session_t *s)
{
    const pgt_conv_t *cv = &s->conv;
    uint8_t what = s->awaiting;
    bool reads = conv_reads(cv) && s->txn_status != 'E';
    bool ready = what == AWAIT_BIND                                    ? cv->execs == 0
                 : what == AWAIT_PLAN_QUERY || what == AWAIT_PLAN_BIND ? !pgt_conv_will_answer(cv)
                                                                       : cv->len == 0;
    if ((reads && !ready) || s->state == ST_CLOSING)
        return;
    s->awaiting = AWAIT_NONE;
    s->cancel_requested = false;
    if (what == AWAIT_PLAN_QUERY || what == AWAIT_PLAN_BIND) {
        await_plan(s, what);
    } else if (!reads || (what == AWAIT_QUERY && !pgt_conv_may_query(cv))) {
        await_pass(s);
    } else if (what == AWAIT_QUERY) {
        s->explaining = false;
        pgt__refuse_query(s);
    } else if (pgt__refuse_bind_msgs(s)) {
        pgt__start_explain(s);
    } else {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
    }
}

/* ---- while a statement runs -------------------------------------------- */

/* The cost so far of the statement the session runs, or -1 when none
 * runs or neither budgets nor an approval (*approval, with its cap in
 * *cap) apply to it. */
static int64_t running_cost(const pgt_session_t *s, int64_t *approval, int64_t *cap)
{
    double seconds;
    *approval = 0;
    /* A refused statement's stand-in is not the statement running. */
    if (!s->ic || s->state == ST_CLOSING || s->refusing || s->subst ||
        !pgt_intercept_running(s->ic, &seconds))
        return -1;
    *approval = pgt_intercept_running_approval(s->ic, cap);
    if (!*approval && !pgt__budgets_apply(s))
        return -1;
    return pgt_budgets_running_cost(s->proxy->budgets, seconds);
}

/* The cancel of a statement that ran past the cap of the approval it runs
 * under: true with the verdict in *v when cost is past cap. */
static bool approval_past(const pgt_session_t *s, int64_t approval, int64_t cap, int64_t cost,
                          pgt_verdict_t *v)
{
    if (cap < 0 || cost <= cap)
        return false;
    char money[PGT_MONEY_TEXT_MAX];
    memset(v, 0, sizeof(*v));
    v->action = PGT_VERDICT_CANCEL;
    memcpy(v->sqlstate, "57014", 6);
    pgt_say(v->message, sizeof(v->message),
            "pgtally: statement cancelled: it ran past the cap of approval %lld (%s)",
            (long long)approval,
            pgt_money_format_short(cap, s->proxy->cfg->currency, money, sizeof(money)));
    pgt_say(v->hint, sizeof(v->hint),
            "Ask the approver for a higher cap (pgtallyctl ticket approve --max).");
    return true;
}

void pgt_session_budget_add(pgt_session_t *s)
{
    int64_t approval, cap;
    int64_t cost = running_cost(s, &approval, &cap);
    if (cost >= 0 && pgt__budgets_apply(s)) {
        pgt_who_t who = who_of(s);
        pgt_budgets_running_add(s->proxy->budgets, &who, cost);
    }
}

void pgt_session_budget_enforce(pgt_session_t *s)
{
    int64_t approval, cap;
    int64_t cost = running_cost(s, &approval, &cap);
    if (cost < 0 || s->budget_cancel || !s->have_key)
        return;
    pgt_who_t who = who_of(s);
    pgt_verdict_t v;
    /* Under an approval its cap is the running limit, not the budgets. */
    bool past = approval ? approval_past(s, approval, cap, cost, &v)
                         : pgt_budgets_running_check(s->proxy->budgets, &who, cost, &v);
    if (!past || !pgt__set_subst(s, &v))
        return;
    s->budget_cancel = true;
    pgt_intercept_budget_outcome(s->ic, PGT_QUERY_BUDGET_CANCELLED, v.budget_id);
    pgt_framer_capture(&s->server.framer, cancel_capture, 65536);
    uint8_t pkt[16];
    pgt_cancel_packet(pkt, s->backend_pid, s->backend_key);
    pgt_cancel_forward(s->proxy->loop, &s->upstream_addr, pkt);
    pgt__tell_refused(s, &v);
    PGT_INFO("budget_cancel", "session=C-%llu user=%s budget=%lld running_micro=%lld",
             (unsigned long long)s->id, s->user, (long long)v.budget_id, (long long)cost);
}
