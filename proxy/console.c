/* The admin console without its I/O: a strict, bounded parser of the
 * console's commands, result sets written as protocol messages, and the
 * commands that read or change the ledger through the same library calls
 * as pgtallyctl (ledger.h, budget_store.h, rules.h). */
#include "pgtally/console.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "pgtally/budget_store.h"
#include "pgtally/money.h"
#include "pgtally/text.h"

/* ---- the commands --------------------------------------------------------- */

typedef struct verb_info {
    const char *syntax; /* as typed */
    bool ledger;        /* runs on a worker */
    bool admin;         /* admin users only */
} verb_info_t;

static const verb_info_t verbs[] = {
#define X(name, syntax, ledger, admin) {syntax, ledger, admin},
    PGT_CONSOLE_CMD_MAP(X)
#undef X
};

#define NVERBS (sizeof(verbs) / sizeof(verbs[0]))

const char *pgt_console_syntax(pgt_console_verb_t v)
{
    return v < NVERBS ? verbs[v].syntax : "";
}

const char *pgt_console_tag(pgt_console_verb_t v)
{
    switch (v) {
    case PGT_CONSOLE_BLOCK_SHAPE:
        return "BLOCK";
    case PGT_CONSOLE_UNBLOCK_SHAPE:
        return "UNBLOCK";
    case PGT_CONSOLE_APPROVE_TICKET:
        return "APPROVE";
    case PGT_CONSOLE_CANCEL_SESSION:
        return "CANCEL";
    case PGT_CONSOLE_RELOAD:
        return "RELOAD";
    default:
        return "SHOW";
    }
}

bool pgt_console_reads_ledger(pgt_console_verb_t v)
{
    return v < NVERBS && verbs[v].ledger;
}

bool pgt_console_admin_only(pgt_console_verb_t v)
{
    return v < NVERBS && verbs[v].admin;
}

/* ---- the columns of each command's answer ---- */

static const char *const usage_cols[] = {"user", "statements", "compute_seconds",
                                         "rows", "bytes_out",  "cost"};
static const char *const budget_cols[] = {"id",        "subject_type", "subject", "period",
                                          "limit",     "spent",        "used",    "action",
                                          "per_query", "max_rows",     "resets"};
static const char *const query_cols[] = {"started",     "session", "user",        "database",
                                         "application", "status",  "sqlstate",    "seconds",
                                         "rows",        "cost",    "fingerprint", "query"};
static const char *const shape_cols[] = {"fingerprint",     "kind", "statements",
                                         "compute_seconds", "cost", "query"};
static const char *const table_cols[] = {"schema", "table", "queries", "compute_seconds", "cost"};
static const char *const session_cols[] = {
    "id",    "user",        "database",  "application",     "client_addr",
    "state", "backend_pid", "statement", "running_seconds", "running_cost"};
static const char *const rule_cols[] = {"id",     "fingerprint", "user",  "database",
                                        "action", "message",     "until", "created_by"};
static const char *const alert_cols[] = {"id",         "budget_id", "period_start", "threshold_pct",
                                         "channel",    "sent_at",   "delivered_at", "attempts",
                                         "last_error", "message"};
static const char *const ticket_cols[] = {
    "ticket",       "user",           "database",  "fingerprint", "refusals",
    "last_refused", "estimate",       "budget_id", "sqlstate",    "approval_id",
    "approved_by",  "approved_until", "runs",      "runs_cost",   "query"};
static const char *const approval_cols[] = {
    "id", "ticket", "user", "database", "fingerprint", "constants", "max", "until", "created_by"};
static const char *const repeat_cols[] = {
    "fingerprint", "constants", "runs", "users", "applications", "cost", "saved", "who", "query"};
static const char *const regression_cols[] = {"fingerprint",
                                              "ratio",
                                              "release",
                                              "mean_cost",
                                              "statements",
                                              "previous_release",
                                              "previous_mean_cost",
                                              "previous_statements",
                                              "query"};
static const char *const config_cols[] = {"key", "value", "source", "description"};
static const char *const version_cols[] = {"component", "version"};
static const char *const cancel_cols[] = {"id", "backend_pid", "result"};
static const char *const reload_cols[] = {"result"};

#define COLS(a)                                                                                    \
    {                                                                                              \
        a, sizeof(a) / sizeof(a[0])                                                                \
    }
static const struct {
    const char *const *names; /* the columns */
    size_t n;                 /* how many */
} columns[] = {
    COLS(usage_cols),   COLS(budget_cols),     COLS(query_cols),  COLS(shape_cols),
    COLS(table_cols),   COLS(session_cols),    COLS(rule_cols),   COLS(alert_cols),
    COLS(repeat_cols),  COLS(regression_cols), COLS(ticket_cols), COLS(config_cols),
    COLS(version_cols), COLS(rule_cols),       COLS(rule_cols),   COLS(approval_cols),
    COLS(cancel_cols),  COLS(reload_cols),
};
#undef COLS

_Static_assert(sizeof(columns) / sizeof(columns[0]) == NVERBS, "one set of columns per verb");

void pgt_console_header(pgt_buf_t *b, pgt_console_verb_t v)
{
    if (v < NVERBS)
        pgt_console_columns(b, columns[v].names, columns[v].n);
}

/* ---- the tokenizer -------------------------------------------------------- */

#define MAX_TOKENS 8
#define MAX_WORD 32

typedef enum { TOK_WORD, TOK_INT, TOK_STRING } tok_kind_t;

typedef struct token {
    tok_kind_t kind;                 /* what it is */
    char text[PGT_RULE_MESSAGE_MAX]; /* a word (upper case) or a string's value */
    int64_t n;                       /* an integer's value */
} token_t;

typedef struct lexer {
    const char *p, *end; /* what is left */
    char *err;           /* where problems go */
    size_t errlen;       /* its size */
} lexer_t;

/* Skips blanks and -- comments. */
static void skip_blank(lexer_t *lx)
{
    while (lx->p < lx->end) {
        if (isspace((unsigned char)*lx->p))
            lx->p++;
        else if (lx->end - lx->p >= 2 && lx->p[0] == '-' && lx->p[1] == '-')
            while (lx->p < lx->end && *lx->p != '\n')
                lx->p++;
        else
            break;
    }
}

/* A single-quoted string, '' standing for one quote. */
static int lex_string(lexer_t *lx, token_t *t)
{
    size_t n = 0;
    lx->p++;
    for (;;) {
        if (lx->p >= lx->end) {
            snprintf(lx->err, lx->errlen, "unterminated quoted string");
            return -1;
        }
        char c = *lx->p++;
        if (c == '\'' && lx->p < lx->end && *lx->p == '\'')
            lx->p++;
        else if (c == '\'')
            break;
        if (c == '\0' || n + 1 >= sizeof(t->text)) {
            snprintf(lx->err, lx->errlen, "quoted string too long: at most %d bytes",
                     PGT_RULE_MESSAGE_MAX - 1);
            return -1;
        }
        t->text[n++] = c;
    }
    t->text[n] = '\0';
    t->kind = TOK_STRING;
    /* What a string may hold ends up in rules and in clients' errors:
     * UTF-8 (the console's client_encoding), no control characters. */
    for (const unsigned char *c = (const unsigned char *)t->text; *c;) {
        size_t k = pgt_utf8_len(c);
        if (k == 0 || *c < ' ' || *c == 0x7f) {
            snprintf(lx->err, lx->errlen,
                     "quoted strings must be UTF-8 without control characters");
            return -1;
        }
        c += k;
    }
    return 0;
}

/* One token at lx->p (blanks skipped). Returns 1, 0 at the end or at a
 * ';', or -1 with err set. */
static int lex_next(lexer_t *lx, token_t *t)
{
    skip_blank(lx);
    if (lx->p >= lx->end || *lx->p == ';')
        return 0;
    unsigned char c = (unsigned char)*lx->p;
    if (c == '\'')
        return lex_string(lx, t) == 0 ? 1 : -1;
    size_t n = 0;
    bool digits = isdigit(c), word = isalpha(c) || c == '_';
    while (lx->p < lx->end &&
           (digits ? isdigit((unsigned char)*lx->p)
                   : word && (isalnum((unsigned char)*lx->p) || *lx->p == '_'))) {
        if (n + 1 >= MAX_WORD) {
            snprintf(lx->err, lx->errlen, "word or number too long");
            return -1;
        }
        t->text[n++] = (char)toupper((unsigned char)*lx->p++);
    }
    if (n == 0 && c == '$') {
        snprintf(lx->err, lx->errlen, "commands take no parameters ($1): write the value itself");
        return -1;
    }
    if (n == 0) {
        snprintf(lx->err, lx->errlen, "unexpected character '%c'", isprint(c) ? c : '?');
        return -1;
    }
    t->text[n] = '\0';
    t->kind = digits ? TOK_INT : TOK_WORD;
    t->n = digits && n <= 15 ? strtoll(t->text, NULL, 10) : -1;
    return 1;
}

/* Splits text into at most MAX_TOKENS tokens; only blanks and comments may
 * follow a ';'. Returns the number of tokens, or -1 with err set. */
static int tokenize(const char *text, size_t len, token_t *toks, char *err, size_t errlen)
{
    lexer_t lx = {text, text + len, err, errlen};
    int n = 0, rc;
    while ((rc = lex_next(&lx, &toks[n < MAX_TOKENS ? n : MAX_TOKENS - 1])) == 1) {
        if (++n > MAX_TOKENS) {
            snprintf(err, errlen, "too many words for a console command");
            return -1;
        }
    }
    if (rc < 0)
        return -1;
    if (lx.p < lx.end) { /* at a ';' */
        lx.p++;
        skip_blank(&lx);
        if (lx.p < lx.end) {
            snprintf(err, errlen,
                     "one command per query: the console does not run several "
                     "statements at once");
            return -2;
        }
    }
    return n;
}

/* ---- the grammar ---------------------------------------------------------- */

static bool is_word(const token_t *t, const char *w)
{
    return t->kind == TOK_WORD && strcmp(t->text, w) == 0;
}

/* The list of commands, for messages. */
static void list_commands(char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < NVERBS && used < len; i++)
        used += (size_t)snprintf(out + used, len - used, "%s%s", i ? "; " : "", verbs[i].syntax);
}

/* The words after SHOW, in the order of the SHOW verbs. */
static const char *const show_words[] = {"USAGE",    "BUDGETS", "QUERIES", "SHAPES",  "TABLES",
                                         "SESSIONS", "RULES",   "ALERTS",  "REPEATS", "REGRESSIONS",
                                         "TICKETS",  "CONFIG",  "VERSION"};

_Static_assert(PGT_CONSOLE_SHOW_USAGE + sizeof(show_words) / sizeof(show_words[0]) - 1 ==
                   PGT_CONSOLE_SHOW_VERSION,
               "one word per SHOW verb");

/* The arguments of SHOW USAGE, SHOW TABLES and SHOW QUERIES. Returns 0,
 * or -1. */
static int show_args(pgt_console_cmd_t *out, const token_t *t, int n)
{
    if (out->verb == PGT_CONSOLE_SHOW_USAGE || out->verb == PGT_CONSOLE_SHOW_TABLES) {
        out->period = PGT_PERIOD_DAY;
        if (n == 0)
            return 0;
        char lower[MAX_WORD];
        for (size_t i = 0; i < sizeof(lower); i++)
            lower[i] = (char)tolower((unsigned char)t[0].text[i]);
        lower[sizeof(lower) - 1] = '\0';
        return n == 1 && t[0].kind == TOK_WORD && pgt_period_parse(lower, &out->period) == 0 ? 0
                                                                                             : -1;
    }
    if (out->verb == PGT_CONSOLE_SHOW_QUERIES) {
        out->n = PGT_CONSOLE_QUERIES_DEFAULT;
        if (n == 1 && (t[0].kind != TOK_INT || t[0].n < 1 || t[0].n > PGT_CONSOLE_QUERIES_MAX))
            return -1;
        if (n == 1)
            out->n = t[0].n;
        return n <= 1 ? 0 : -1;
    }
    return n == 0 ? 0 : -1;
}

/* The words after APPROVE: 'ticket' [FOR 'duration'] [MAX 'amount'] [SHAPE
 * ONLY], the options in any order. Returns 0, or -1. */
static int approve_args(pgt_console_cmd_t *out, const token_t *t, int n)
{
    if (n < 1 || t[0].kind != TOK_STRING || !pgt_ticket_parse(t[0].text, out->ticket))
        return -1;
    out->for_us = INT64_C(2) * 3600 * 1000000;
    bool seen_for = false, seen_max = false;
    for (int i = 1; i < n; i += 2) {
        if (i + 1 >= n)
            return -1;
        if (is_word(&t[i], "FOR") && !seen_for && t[i + 1].kind == TOK_STRING) {
            seen_for = true;
            if (pgt_duration_parse(t[i + 1].text, &out->for_us) != 0 || out->for_us <= 0 ||
                out->for_us > PGT_APPROVAL_MAX_US)
                return -1;
        } else if (is_word(&t[i], "MAX") && !seen_max && t[i + 1].kind == TOK_STRING) {
            seen_max = true;
            snprintf(out->message, sizeof(out->message), "%s", t[i + 1].text);
        } else if (is_word(&t[i], "SHAPE") && !out->shape_only && is_word(&t[i + 1], "ONLY")) {
            out->shape_only = true;
        } else {
            return -1;
        }
    }
    return 0;
}

/* The words after the verb's first word: 0, or -1. */
static int parse_rest(pgt_console_cmd_t *out, const token_t *t, int n)
{
    switch (out->verb) {
    case PGT_CONSOLE_BLOCK_SHAPE:
    case PGT_CONSOLE_UNBLOCK_SHAPE:
        if (n < 2 || !is_word(&t[0], "SHAPE") || t[1].kind != TOK_STRING ||
            pgt_rule_fingerprint_parse(t[1].text, &out->fingerprint) != 0)
            return -1;
        if (out->verb == PGT_CONSOLE_UNBLOCK_SHAPE || n == 2)
            return n == 2 ? 0 : -1;
        if (n != 4 || !is_word(&t[2], "MESSAGE") || t[3].kind != TOK_STRING)
            return -1;
        out->has_message = true;
        snprintf(out->message, sizeof(out->message), "%s", t[3].text);
        return 0;
    case PGT_CONSOLE_CANCEL_SESSION:
        if (n != 2 || !is_word(&t[0], "SESSION") || t[1].kind != TOK_INT || t[1].n < 1)
            return -1;
        out->n = t[1].n;
        return 0;
    case PGT_CONSOLE_RELOAD:
        return n == 0 ? 0 : -1;
    case PGT_CONSOLE_APPROVE_TICKET:
        return approve_args(out, t, n);
    default:
        return show_args(out, t, n);
    }
}

int pgt_console_parse(const char *text, size_t len, pgt_console_cmd_t *out, char sqlstate[6],
                      char *err, size_t errlen)
{
    token_t toks[MAX_TOKENS];
    memset(out, 0, sizeof(*out));
    snprintf(sqlstate, 6, "42601");
    char what[200];
    int n = tokenize(text, len, toks, what, sizeof(what));
    if (n == -2)
        snprintf(sqlstate, 6, "0A000");
    if (n < 0) {
        snprintf(err, errlen, "pgtally console: %s", what);
        return -1;
    }
    if (n == 0) {
        out->verb = PGT_CONSOLE_EMPTY;
        return 0;
    }
    int first = 1;
    out->verb = NVERBS;
    if (is_word(&toks[0], "SHOW") && n >= 2) {
        for (size_t i = 0; i < sizeof(show_words) / sizeof(show_words[0]); i++)
            if (is_word(&toks[1], show_words[i]))
                out->verb = (pgt_console_verb_t)(PGT_CONSOLE_SHOW_USAGE + i);
        first = 2;
    } else if (is_word(&toks[0], "BLOCK"))
        out->verb = PGT_CONSOLE_BLOCK_SHAPE;
    else if (is_word(&toks[0], "UNBLOCK"))
        out->verb = PGT_CONSOLE_UNBLOCK_SHAPE;
    else if (is_word(&toks[0], "CANCEL"))
        out->verb = PGT_CONSOLE_CANCEL_SESSION;
    else if (is_word(&toks[0], "RELOAD"))
        out->verb = PGT_CONSOLE_RELOAD;
    else if (is_word(&toks[0], "APPROVE"))
        out->verb = PGT_CONSOLE_APPROVE_TICKET;
    char list[1024];
    if (out->verb == NVERBS) {
        list_commands(list, sizeof(list));
        snprintf(err, errlen, "pgtally console: unknown command \"%.40s%s%.40s\"; commands: %s",
                 toks[0].text, n > 1 ? " " : "", n > 1 ? toks[1].text : "", list);
        return -1;
    }
    if (parse_rest(out, toks + first, n - first) != 0) {
        snprintf(err, errlen, "pgtally console: syntax error; usage: %s%s", verbs[out->verb].syntax,
                 out->verb == PGT_CONSOLE_SHOW_QUERIES ? " (n from 1 to 1000)"
                 : out->verb == PGT_CONSOLE_BLOCK_SHAPE || out->verb == PGT_CONSOLE_UNBLOCK_SHAPE
                     ? " (the fingerprint as up to 16 hex digits, as SHOW SHAPES shows it)"
                 : out->verb == PGT_CONSOLE_APPROVE_TICKET
                     ? " (the ticket as the refusal's HINT or SHOW TICKETS shows it, T-XXXXXX; "
                       "FOR at most '7d')"
                     : "");
        return -1;
    }
    return 0;
}

/* ---- result sets ---------------------------------------------------------- */

/* Appends a big-endian integer of n bytes. */
static void put_be(pgt_buf_t *b, uint32_t v, int n)
{
    uint8_t x[4];
    for (int i = 0; i < n; i++)
        x[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    pgt_buf_add(b, x, (size_t)n);
}

/* Starts a message of type; returns where its length goes. */
static size_t msg_begin(pgt_buf_t *b, char type)
{
    pgt_buf_putc(b, type);
    size_t at = b->len;
    put_be(b, 0, 4);
    return at;
}

static void msg_end(pgt_buf_t *b, size_t at)
{
    if (b->failed || !b->s)
        return;
    uint32_t len = (uint32_t)(b->len - at);
    for (int i = 0; i < 4; i++)
        b->s[at + (size_t)i] = (char)(len >> (8 * (3 - i)));
}

static void put_cstr(pgt_buf_t *b, const char *s)
{
    pgt_buf_add(b, s, strlen(s) + 1);
}

void pgt_console_columns(pgt_buf_t *b, const char *const *names, size_t n)
{
    size_t at = msg_begin(b, 'T');
    put_be(b, (uint32_t)n, 2);
    for (size_t i = 0; i < n; i++) {
        put_cstr(b, names[i]);
        put_be(b, 0, 4);            /* table OID */
        put_be(b, 0, 2);            /* column number */
        put_be(b, 25, 4);           /* type: text */
        put_be(b, (uint32_t)-1, 2); /* variable length */
        put_be(b, (uint32_t)-1, 4); /* no type modifier */
        put_be(b, 0, 2);            /* text format */
    }
    msg_end(b, at);
}

bool pgt_console_row(pgt_buf_t *b, const char *const *cells, size_t n)
{
    if (b->failed || b->len > PGT_CONSOLE_MAX_RESULT)
        return false;
    size_t at = msg_begin(b, 'D');
    put_be(b, (uint32_t)n, 2);
    for (size_t i = 0; i < n; i++) {
        size_t len = cells[i] ? strlen(cells[i]) : 0;
        put_be(b, cells[i] ? (uint32_t)len : (uint32_t)-1, 4);
        pgt_buf_add(b, cells[i], len);
    }
    msg_end(b, at);
    return !b->failed && b->len <= PGT_CONSOLE_MAX_RESULT;
}

void pgt_console_complete(pgt_buf_t *b, const char *tag)
{
    size_t at = msg_begin(b, 'C');
    put_cstr(b, tag);
    msg_end(b, at);
}

void pgt_console_error(pgt_buf_t *b, const char *sqlstate, const char *message, const char *hint)
{
    size_t at = msg_begin(b, 'E');
    pgt_buf_putc(b, 'S');
    put_cstr(b, "ERROR");
    pgt_buf_putc(b, 'V');
    put_cstr(b, "ERROR");
    pgt_buf_putc(b, 'C');
    put_cstr(b, sqlstate);
    pgt_buf_putc(b, 'M');
    put_cstr(b, message);
    if (hint) {
        pgt_buf_putc(b, 'H');
        put_cstr(b, hint);
    }
    pgt_buf_putc(b, '\0');
    msg_end(b, at);
}

bool pgt_console_cap(pgt_buf_t *b)
{
    if (!b->failed && b->len <= PGT_CONSOLE_MAX_RESULT)
        return false;
    bool oom = b->failed;
    pgt_buf_free(b);
    char msg[160];
    snprintf(msg, sizeof(msg), "pgtally console: %s",
             oom ? "out of memory" : "the answer is larger than 16 MiB");
    pgt_console_error(b, oom ? "53200" : "54000", msg,
                      oom ? NULL : "ask for fewer rows, e.g. SHOW QUERIES 100");
    return true;
}

/* ---- formatting ----------------------------------------------------------- */

static char *fmt_time(int64_t us, char *buf, size_t len)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S%z", &tm);
    return buf;
}

static char *fmt_int(int64_t v, char *buf, size_t len)
{
    snprintf(buf, len, "%lld", (long long)v);
    return buf;
}

/* ---- the ledger commands -------------------------------------------------- */

/* What the row callbacks need. */
typedef struct run_ctx {
    const pgt_console_env_t *env; /* the command's environment */
    pgt_buf_t *out;               /* the answer */
} run_ctx_t;

static int usage_cb(const pgt_usage_row_t *r, void *arg)
{
    run_ctx_t *c = arg;
    char st[24], cs[32], rows[24], bytes[24], cost[PGT_MONEY_TEXT_MAX];
    snprintf(cs, sizeof(cs), "%.3f", r->compute_s);
    const char *cells[] = {r->group,
                           fmt_int(r->statements, st, sizeof(st)),
                           cs,
                           fmt_int(r->rows, rows, sizeof(rows)),
                           fmt_int(r->bytes_out, bytes, sizeof(bytes)),
                           pgt_money_format(r->cost_micro, c->env->currency, cost, sizeof(cost))};
    return pgt_console_row(c->out, cells, 6) ? 0 : 1;
}

static int query_cb(const pgt_record_t *r, void *arg)
{
    run_ctx_t *c = arg;
    char when[40], sid[24], cost[PGT_MONEY_TEXT_MAX], dur[32], fp[17], rows[24];
    snprintf(sid, sizeof(sid), "%llu", (unsigned long long)r->session_id);
    snprintf(dur, sizeof(dur), "%.3f", (double)(r->finished_us - r->started_us) / 1e6);
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)r->fingerprint);
    const char *cells[] = {fmt_time(r->started_us, when, sizeof(when)),
                           sid,
                           r->user,
                           r->database,
                           r->application,
                           pgt_query_status_name(r->status),
                           r->sqlstate[0] ? r->sqlstate : NULL,
                           dur,
                           fmt_int(r->rows, rows, sizeof(rows)),
                           pgt_money_format(r->cost_micro, c->env->currency, cost, sizeof(cost)),
                           fp,
                           r->normalized};
    return pgt_console_row(c->out, cells, 12) ? 0 : 1;
}

static int shape_cb(const pgt_shape_row_t *r, void *arg)
{
    run_ctx_t *c = arg;
    char fp[17], st[24], cs[32], cost[PGT_MONEY_TEXT_MAX];
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)r->fingerprint);
    snprintf(cs, sizeof(cs), "%.3f", r->compute_s);
    const char *cells[] = {fp,
                           r->kind,
                           fmt_int(r->statements, st, sizeof(st)),
                           cs,
                           pgt_money_format(r->cost_micro, c->env->currency, cost, sizeof(cost)),
                           r->normalized};
    return pgt_console_row(c->out, cells, 6) ? 0 : 1;
}

static int table_cb(const pgt_usage_row_t *r, void *arg)
{
    run_ctx_t *c = arg;
    char n[24], cs[32], cost[PGT_MONEY_TEXT_MAX];
    snprintf(cs, sizeof(cs), "%.3f", r->compute_s);
    const char *cells[] = {r->schema && r->schema[0] ? r->schema : "(unqualified)", r->relation,
                           fmt_int(r->statements, n, sizeof(n)), cs,
                           pgt_money_format(r->cost_micro, c->env->currency, cost, sizeof(cost))};
    return pgt_console_row(c->out, cells, 5) ? 0 : 1;
}

static int alert_cb(const pgt_alert_row_t *r, void *arg)
{
    run_ctx_t *c = arg;
    char id[24], bid[24], pct[16], period[40], sent[40], delivered[40], attempts[24];
    snprintf(pct, sizeof(pct), "%d", r->threshold_pct);
    const char *cells[] = {
        fmt_int(r->id, id, sizeof(id)),
        fmt_int(r->budget_id, bid, sizeof(bid)),
        fmt_time(r->period_start_us, period, sizeof(period)),
        pct,
        r->channel,
        fmt_time(r->sent_us, sent, sizeof(sent)),
        r->delivered_us >= 0 ? fmt_time(r->delivered_us, delivered, sizeof(delivered)) : NULL,
        fmt_int(r->attempts, attempts, sizeof(attempts)),
        r->last_error,
        r->message};
    return pgt_console_row(c->out, cells, 10) ? 0 : 1;
}

static int repeat_cb(const pgt_repeat_row_t *r, void *arg)
{
    run_ctx_t *c = arg;
    char fp[17], consts[17], runs[24], users[24], apps[24], cost[PGT_MONEY_TEXT_MAX],
        saved[PGT_MONEY_TEXT_MAX];
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)r->fingerprint);
    snprintf(consts, sizeof(consts), "%016llx", (unsigned long long)r->constants);
    const char *cells[] = {
        fp,
        consts,
        fmt_int(r->runs, runs, sizeof(runs)),
        fmt_int(r->users, users, sizeof(users)),
        fmt_int(r->applications, apps, sizeof(apps)),
        pgt_money_format(r->cost_micro, c->env->currency, cost, sizeof(cost)),
        pgt_money_format(r->repeat_micro, c->env->currency, saved, sizeof(saved)),
        r->who,
        r->normalized};
    return pgt_console_row(c->out, cells, 9) ? 0 : 1;
}

static int regression_cb(const pgt_regression_row_t *r, void *arg)
{
    run_ctx_t *c = arg;
    char fp[17], ratio[32], n[24], pn[24], mean[PGT_MONEY_TEXT_MAX], prev[PGT_MONEY_TEXT_MAX];
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)r->fingerprint);
    snprintf(ratio, sizeof(ratio), "%.2f", r->ratio);
    const char *cells[] = {
        fp,
        ratio,
        r->release,
        pgt_money_format(r->mean_micro, c->env->currency, mean, sizeof(mean)),
        fmt_int(r->statements, n, sizeof(n)),
        r->prev_release,
        pgt_money_format(r->prev_mean_micro, c->env->currency, prev, sizeof(prev)),
        fmt_int(r->prev_statements, pn, sizeof(pn)),
        r->normalized};
    return pgt_console_row(c->out, cells, 9) ? 0 : 1;
}

/* SHOW REPEATS (today) and SHOW REGRESSIONS (today and the days before),
 * as pgtallyctl repeats and regressions show them. */
static int run_waste(const pgt_console_cmd_t *cmd, pgt_ledger_reader_t *rd, run_ctx_t *c, char *err,
                     size_t errlen)
{
    int64_t from, to;
    pgt_period_bounds(PGT_PERIOD_DAY, pgt_clock_us(), &from, &to);
    pgt_console_header(c->out, cmd->verb);
    if (cmd->verb == PGT_CONSOLE_SHOW_REPEATS)
        return pgt_ledger_repeats(rd, from, to, c->env->duplicate_min_runs, PGT_CONSOLE_LIST_MAX,
                                  repeat_cb, c, err, errlen);
    from = pgt_local_day_start_us(pgt_local_day(from) - (PGT_LEDGER_REGRESSION_DAYS - 1));
    return pgt_ledger_regressions(rd, from, to, c->env->regression_min_micro, PGT_CONSOLE_LIST_MAX,
                                  regression_cb, c, err, errlen);
}

/* SHOW USAGE, QUERIES, SHAPES, TABLES, ALERTS, REPEATS and REGRESSIONS:
 * through a ledger reader. */
static int run_reader(const pgt_console_cmd_t *cmd, run_ctx_t *c, char *err, size_t errlen)
{
    pgt_ledger_reader_t *rd = pgt_ledger_reader_open(&c->env->where, err, errlen);
    if (!rd)
        return -1;
    int64_t now = pgt_clock_us(), from, to;
    int rc = 0;
    switch (cmd->verb) {
    case PGT_CONSOLE_SHOW_USAGE:
        pgt_period_bounds(cmd->period, now, &from, &to);
        pgt_console_header(c->out, cmd->verb);
        rc = pgt_ledger_usage(rd, PGT_USAGE_BY_USER, NULL, from, to, usage_cb, c, err, errlen);
        break;
    case PGT_CONSOLE_SHOW_QUERIES: {
        pgt_ledger_filter_t f = {.since_us = INT64_MIN, .until_us = INT64_MAX, .limit = cmd->n};
        pgt_console_header(c->out, cmd->verb);
        rc = pgt_ledger_list(rd, &f, query_cb, c, err, errlen);
        break;
    }
    case PGT_CONSOLE_SHOW_SHAPES:
        pgt_period_bounds(PGT_PERIOD_MONTH, now, &from, &to);
        pgt_console_header(c->out, cmd->verb);
        rc = pgt_ledger_shapes(rd, from, to, PGT_CONSOLE_LIST_MAX, shape_cb, c, err, errlen);
        break;
    case PGT_CONSOLE_SHOW_TABLES:
        /* The local days of the period, from the daily_relations rollup. */
        pgt_period_bounds(cmd->period, now, &from, &to);
        pgt_console_header(c->out, cmd->verb);
        rc = pgt_ledger_tables(rd, from, to, PGT_CONSOLE_LIST_MAX, table_cb, c, err, errlen);
        break;
    case PGT_CONSOLE_SHOW_REPEATS:
    case PGT_CONSOLE_SHOW_REGRESSIONS:
        rc = run_waste(cmd, rd, c, err, errlen);
        break;
    default:
        pgt_console_header(c->out, cmd->verb);
        rc = pgt_ledger_alerts(rd, 1000, alert_cb, c, err, errlen);
        break;
    }
    pgt_ledger_reader_close(rd);
    return rc < 0 ? -1 : 0;
}

/* One budget's lines of spend in its current period. */
typedef struct budget_ctx {
    run_ctx_t *c;          /* where rows go */
    const pgt_budget_t *b; /* the budget */
    int64_t resets_us;     /* end of the current period */
} budget_ctx_t;

static int spend_cb(const char *user, int64_t spent, void *arg)
{
    budget_ctx_t *bc = arg;
    const pgt_budget_t *b = bc->b;
    const char *cur = bc->c->env->currency;
    char id[24], limit[PGT_MONEY_TEXT_MAX], sp[PGT_MONEY_TEXT_MAX], cap[PGT_MONEY_TEXT_MAX];
    char used[16], rows[24], resets[40];
    bool limited = pgt_budget_has_limit(b);
    snprintf(used, sizeof(used), "%.1f%%",
             b->limit_micro > 0 ? 100.0 * (double)spent / (double)b->limit_micro : 0.0);
    const char *cells[] = {
        fmt_int(b->id, id, sizeof(id)),
        pgt_budget_subject_name(b->subject_type),
        b->subject_type == PGT_BUDGET_SUBJECT_DEFAULT ? user : b->subject,
        pgt_period_name(b->period),
        limited ? pgt_money_format(b->limit_micro, cur, limit, sizeof(limit)) : NULL,
        pgt_money_format(spent, cur, sp, sizeof(sp)),
        limited ? used : NULL,
        pgt_budget_action_name(b->action),
        b->per_query_micro >= 0 ? pgt_money_format(b->per_query_micro, cur, cap, sizeof(cap))
                                : NULL,
        b->max_rows > 0 ? fmt_int(b->max_rows, rows, sizeof(rows)) : NULL,
        fmt_time(bc->resets_us, resets, sizeof(resets))};
    return pgt_console_row(bc->c->out, cells, 11) ? 0 : 1;
}

static bool rule_row(pgt_buf_t *out, const pgt_rule_t *r)
{
    char id[24], fp[17], until[40];
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)r->fingerprint);
    const char *cells[] = {fmt_int(r->id, id, sizeof(id)),
                           fp,
                           r->user,
                           r->database,
                           pgt_rule_action_name(r->action),
                           r->message,
                           r->until_us >= 0 ? fmt_time(r->until_us, until, sizeof(until)) : NULL,
                           r->created_by};
    return pgt_console_row(out, cells, 8);
}

/* SHOW BUDGETS and SHOW RULES: through the budget tables. */
static int run_store(const pgt_console_cmd_t *cmd, pgt_db_t *db, run_ctx_t *c, char *err,
                     size_t errlen)
{
    pgt_budget_config_t *cfg = NULL;
    if (db && pgt_budget_config_load(db, &cfg, err, errlen) != 0)
        return -1;
    int rc = 0;
    if (cmd->verb == PGT_CONSOLE_SHOW_RULES) {
        pgt_console_header(c->out, cmd->verb);
        for (size_t i = 0; cfg && i < cfg->rules.n; i++)
            if (!rule_row(c->out, &cfg->rules.rules[i]))
                break;
    } else {
        pgt_console_header(c->out, cmd->verb);
        int64_t now = pgt_clock_us();
        for (size_t i = 0; cfg && rc == 0 && i < cfg->nbudgets; i++) {
            int64_t from, to;
            pgt_period_bounds(cfg->budgets[i].period, now, &from, &to);
            budget_ctx_t bc = {c, &cfg->budgets[i], to};
            rc = pgt_budget_spend(db, &cfg->budgets[i], from, to, spend_cb, &bc, err, errlen);
        }
    }
    pgt_budget_config_free(cfg);
    return rc < 0 ? -1 : 0;
}

/* BLOCK SHAPE: a block rule for everyone, as `pgtallyctl rule add
 * --fingerprint FP --action block [--message TEXT]`. */
static int run_block(const pgt_console_cmd_t *cmd, pgt_db_t *db, run_ctx_t *c, char *err,
                     size_t errlen)
{
    pgt_rule_t r = {
        .fingerprint = cmd->fingerprint,
        .action = PGT_RULE_ACTION_BLOCK,
        .message = cmd->has_message ? (char *)cmd->message : NULL,
        .until_us = -1,
        .created_us = pgt_clock_us(),
        .created_by = (char *)c->env->user,
    };
    if (pgt_rule_add(db, &r, &r.id, err, errlen) != 0)
        return -1;
    pgt_console_header(c->out, cmd->verb);
    rule_row(c->out, &r);
    return 0;
}

/* UNBLOCK SHAPE: removes every block rule of the shape. Returns 0, 1 when
 * there is none, or -1. */
static int run_unblock(const pgt_console_cmd_t *cmd, pgt_db_t *db, run_ctx_t *c, char *err,
                       size_t errlen)
{
    pgt_rule_set_t set = {0};
    int rc = pgt_rule_load(db, &set, err, errlen);
    size_t removed = 0;
    for (size_t i = 0; rc == 0 && i < set.n; i++) {
        const pgt_rule_t *r = &set.rules[i];
        if (r->fingerprint != cmd->fingerprint || r->action != PGT_RULE_ACTION_BLOCK)
            continue;
        int rm = pgt_rule_rm(db, r->id, err, errlen);
        if (rm < 0)
            rc = -1;
        if (rm != 0)
            continue;
        if (removed++ == 0)
            pgt_console_header(c->out, cmd->verb);
        rule_row(c->out, r);
    }
    pgt_rule_set_clear(&set);
    return rc == 0 && removed == 0 ? 1 : rc;
}

/* SHOW TICKETS: the requests refused in the last PGT_TICKET_TTL_US. */
static int run_tickets(pgt_db_t *db, run_ctx_t *c, char *err, size_t errlen)
{
    pgt_ticket_t *tk = NULL;
    size_t n = 0;
    if (db && pgt_tickets_read(db, pgt_clock_us() - PGT_TICKET_TTL_US, PGT_CONSOLE_LIST_MAX, &tk,
                               &n, err, errlen) != 0)
        return -1;
    const char *cur = c->env->currency;
    pgt_console_header(c->out, PGT_CONSOLE_SHOW_TICKETS);
    for (size_t i = 0; i < n; i++) {
        const pgt_ticket_t *t = &tk[i];
        bool ap = t->approval_id != 0;
        char fp[17], refusals[24], last[40], est[PGT_MONEY_TEXT_MAX], bid[24], aid[24], until[40],
            runs[24], cost[PGT_MONEY_TEXT_MAX];
        snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)t->fingerprint);
        const char *cells[] = {
            t->id,
            t->user,
            t->database,
            fp,
            fmt_int(t->refusals, refusals, sizeof(refusals)),
            fmt_time(t->last_us, last, sizeof(last)),
            t->est_micro >= 0 ? pgt_money_format(t->est_micro, cur, est, sizeof(est)) : NULL,
            t->budget_id ? fmt_int(t->budget_id, bid, sizeof(bid)) : NULL,
            t->sqlstate,
            ap ? fmt_int(t->approval_id, aid, sizeof(aid)) : NULL,
            ap ? t->approved_by : NULL,
            ap ? fmt_time(t->approved_until, until, sizeof(until)) : NULL,
            ap ? fmt_int(t->runs, runs, sizeof(runs)) : NULL,
            ap ? pgt_money_format(t->runs_micro, cur, cost, sizeof(cost)) : NULL,
            t->normalized};
        if (!pgt_console_row(c->out, cells, 15))
            break;
    }
    pgt_tickets_free(tk, n);
    return 0;
}

/* APPROVE 'ticket': as `pgtallyctl ticket approve`. Returns 0; 1 when no
 * such ticket was refused lately; 2 when MAX is not an amount; or -1. */
static int run_approve(const pgt_console_cmd_t *cmd, pgt_db_t *db, run_ctx_t *c, char *err,
                       size_t errlen)
{
    pgt_approve_req_t req = {.ticket = cmd->ticket,
                             .for_us = cmd->for_us,
                             .max_micro = -1,
                             .shape_only = cmd->shape_only,
                             .by = c->env->user,
                             .now_us = pgt_clock_us()};
    if (cmd->message[0] &&
        pgt_money_parse(cmd->message, c->env->currency, &req.max_micro, err, errlen) != 0)
        return 2;
    pgt_approval_t a;
    int rc = pgt_ticket_approve(db, &req, &a, err, errlen);
    if (rc != 0)
        return rc;
    const char *cur = c->env->currency;
    char id[24], fp[17], cs[24], max[PGT_MONEY_TEXT_MAX], until[40];
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)a.fingerprint);
    snprintf(cs, sizeof(cs), "%s", a.constants ? "exact" : "any");
    const char *cells[] = {fmt_int(a.id, id, sizeof(id)),
                           a.ticket,
                           a.user,
                           a.database,
                           fp,
                           cs,
                           a.max_micro >= 0 ? pgt_money_format(a.max_micro, cur, max, sizeof(max))
                                            : NULL,
                           fmt_time(a.until_us, until, sizeof(until)),
                           a.created_by};
    pgt_console_header(c->out, cmd->verb);
    pgt_console_row(c->out, cells, 9);
    pgt_approval_free(&a);
    return 0;
}

/* The commands that change or read the budget tables. */
static int run_db(const pgt_console_cmd_t *cmd, run_ctx_t *c, char *err, size_t errlen)
{
    bool write = cmd->verb == PGT_CONSOLE_BLOCK_SHAPE || cmd->verb == PGT_CONSOLE_UNBLOCK_SHAPE ||
                 cmd->verb == PGT_CONSOLE_APPROVE_TICKET;
    pgt_db_t *db = NULL;
    int rc = pgt_budget_store_open(&c->env->where, write, &db, err, errlen);
    if (rc < 0)
        return -1;
    if (cmd->verb == PGT_CONSOLE_BLOCK_SHAPE)
        rc = run_block(cmd, db, c, err, errlen);
    else if (cmd->verb == PGT_CONSOLE_UNBLOCK_SHAPE)
        rc = run_unblock(cmd, db, c, err, errlen);
    else if (cmd->verb == PGT_CONSOLE_APPROVE_TICKET)
        rc = run_approve(cmd, db, c, err, errlen);
    else if (cmd->verb == PGT_CONSOLE_SHOW_TICKETS)
        rc = run_tickets(db, c, err, errlen);
    else
        rc = run_store(cmd, db, c, err, errlen);
    pgt_budget_store_close(db);
    return rc;
}

void pgt_console_run_ledger(const pgt_console_cmd_t *cmd, const pgt_console_env_t *env,
                            pgt_buf_t *out)
{
    char err[512] = "";
    run_ctx_t c = {env, out};
    bool reader = cmd->verb == PGT_CONSOLE_SHOW_USAGE || cmd->verb == PGT_CONSOLE_SHOW_QUERIES ||
                  cmd->verb == PGT_CONSOLE_SHOW_SHAPES || cmd->verb == PGT_CONSOLE_SHOW_TABLES ||
                  cmd->verb == PGT_CONSOLE_SHOW_ALERTS || cmd->verb == PGT_CONSOLE_SHOW_REPEATS ||
                  cmd->verb == PGT_CONSOLE_SHOW_REGRESSIONS;
    int rc = reader ? run_reader(cmd, &c, err, sizeof(err)) : run_db(cmd, &c, err, sizeof(err));
    if (rc == 0) {
        if (!pgt_console_cap(out))
            pgt_console_complete(out, pgt_console_tag(cmd->verb));
        return;
    }
    pgt_buf_free(out);
    char msg[700], fp[17];
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)cmd->fingerprint);
    if (rc == 1 && cmd->verb == PGT_CONSOLE_APPROVE_TICKET) {
        snprintf(msg, sizeof(msg), "pgtally console: no ticket %s was refused in the last 24 hours",
                 cmd->ticket);
        pgt_console_error(out, "42704", msg, "SHOW TICKETS lists the tickets");
        return;
    }
    if (rc == 2) {
        snprintf(msg, sizeof(msg), "pgtally console: bad MAX '%s': %s", cmd->message, err);
        pgt_console_error(out, "22023", msg, "MAX takes an amount such as '5' or '5 USD'");
        return;
    }
    if (rc == 1) {
        snprintf(msg, sizeof(msg), "pgtally console: no block rule for shape %s", fp);
        pgt_console_error(out, "42704", msg, "SHOW RULES lists the rules");
        return;
    }
    snprintf(msg, sizeof(msg), "pgtally console: the ledger failed: %s", err);
    pgt_console_error(out, "58000", msg, NULL);
}
