/* The admin console's side of a session: a client that asks for the
 * virtual database "pgtally" logs in through the server (its
 * [admin] auth_database), then pgtally answers it itself. Commands that
 * read or change the ledger run on libuv's worker threads; the rest are
 * answered on the loop from what the proxy holds. See README, "Console". */
#include "session_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/budget.h"
#include "pgtally/console.h"
#include "pgtally/fingerprint.h"
#include "pgtally/db.h"
#include "pgtally/log.h"
#include "pgtally/money.h"
#include "pgtally/proxy.h"
#include "pgtally/text.h"

/* Bytes queued towards the client before the console stops answering (and
 * reading) until they are written. */
#define CONSOLE_HIGH_WATER (512 * 1024)
/* Console commands on libuv's worker pool at once, across sessions: the
 * pool (4 threads by default) also runs the meter's batches, which must
 * not wait behind slow ledger reads. */
#define CONSOLE_MAX_JOBS 2
/* Bytes of a running statement SHOW SESSIONS shows. */
#define STATEMENT_SHOWN 1000

typedef struct job job_t;

/* Prepared statements and portals of the extended protocol, each list at
 * most this long. */
#define CONSOLE_MAX_PREPARED 8

/* One prepared statement or portal: a parsed command under a name. */
typedef struct prepared {
    bool used;             /* the slot holds one */
    char name[64];         /* its name ("" for the unnamed one) */
    pgt_console_cmd_t cmd; /* what it runs */
} prepared_t;

struct pgt_console_session {
    pgt_buf_t in;                           /* client bytes not yet handled */
    bool ext_failed;                        /* an extended-protocol message failed: skip to Sync */
    prepared_t stmts[CONSOLE_MAX_PREPARED]; /* prepared statements */
    prepared_t portals[CONSOLE_MAX_PREPARED]; /* portals */
    job_t *job;                               /* the command running on a worker, or NULL */
    char server_version[64]; /* the server's server_version, told to the client as its own */
};

/* A command on a worker thread. Owned by itself: it outlives a session
 * that closes meanwhile (s is then NULL). */
struct job {
    uv_work_t req;                /* libuv's request */
    pgt_proxy_t *proxy;           /* whose pool it runs on */
    bool submitted;               /* handed to the pool (else waiting for a free worker) */
    pgt_session_t *s;             /* the session waiting for it, or NULL when gone */
    pgt_console_cmd_t cmd;        /* what to run */
    bool extended;                /* an Execute's (extended protocol) */
    char *ledger;                 /* copies of what the config said when it started */
    char *schema;                 /* ... (NULL: the default schema) */
    char *user;                   /* who runs it */
    char currency[8];             /* of amounts */
    int64_t regression_min_micro; /* [report] regression_min_cost */
    int64_t duplicate_min_runs;   /* [report] duplicate_min_runs */
    pgt_buf_t out;                /* the answer, as protocol messages */
};

static const char *const state_names[] = {
#define X(name, str) str,
    PGT_SESSION_STATE_MAP(X)
#undef X
};

/* 2: an admin user, 1: a stats user, 0: neither. */
static int role_of(const pgt_config_t *cfg, const char *user)
{
    if (pgt_config_list_has(cfg->admin_users, cfg->admin_users_count, user))
        return 2;
    return pgt_config_list_has(cfg->admin_stats_users, cfg->admin_stats_count, user) ? 1 : 0;
}

static void refuse_user(pgt_session_t *s)
{
    pgt__session_fail(s, "28000",
                      "pgtally: user \"%s\" may not open the console (database \"%s\"); list the "
                      "user in [admin] admin_users or [admin] stats_users of pgtally's config",
                      s->user, PGT_CONSOLE_DATABASE);
}

/* ---- login ---------------------------------------------------------------- */

int pgt__console_startup(pgt_session_t *s, const pgt_startup_t *st, size_t len)
{
    if (strcmp(s->database, PGT_CONSOLE_DATABASE) != 0)
        return 0;
    const pgt_config_t *cfg = s->proxy->cfg;
    /* Refused before any password goes to the server. */
    if (role_of(cfg, s->user) == 0) {
        refuse_user(s);
        return -1;
    }
    /* The same packet, for the auth database (protocol docs, StartupMessage). */
    uint8_t pkt[PGT_STARTUP_PACKET_MAX + 128];
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, pkt, sizeof(pkt));
    pgt_msgbuf_u32(&mb, 0);
    pgt_msgbuf_u32(&mb, st->code);
    for (int i = 0; i < st->nparams; i++) {
        if (strcmp(st->keys[i], "database") == 0 || strcmp(st->keys[i], "replication") == 0)
            continue;
        pgt_msgbuf_cstr(&mb, st->keys[i]);
        pgt_msgbuf_cstr(&mb, st->values[i]);
    }
    pgt_msgbuf_cstr(&mb, "database");
    pgt_msgbuf_cstr(&mb, cfg->admin_auth_database);
    pgt_msgbuf_u8(&mb, 0);
    if (!mb.failed && mb.len > PGT_STARTUP_PACKET_MAX) {
        pgt__session_fail(s, "08P01",
                          "pgtally: the startup packet is too long for the console once its "
                          "database is [admin] auth_database (at most %d bytes)",
                          PGT_STARTUP_PACKET_MAX);
        return -1;
    }
    s->console = calloc(1, sizeof(*s->console));
    size_t n;
    uint8_t *old = pgt__pend_take(&s->client, &n);
    uint8_t *pend = !mb.failed && s->console ? malloc(mb.len + n - len) : NULL;
    if (!pend) {
        free(old);
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return -1;
    }
    for (int i = 0; i < 4; i++)
        pkt[i] = (uint8_t)(mb.len >> (8 * (3 - i)));
    memcpy(pend, pkt, mb.len);
    memcpy(pend + mb.len, old + len, n - len);
    free(old);
    s->client.pend = pend;
    s->client.pend_len = s->client.pend_cap = mb.len + n - len;
    snprintf(s->console->server_version, sizeof(s->console->server_version), "15.0");
    PGT_INFO("console_login", "session=C-%llu user=%s addr=%s auth_database=%s",
             (unsigned long long)s->id, s->user, s->addr, cfg->admin_auth_database);
    return 0;
}

/* One ParameterStatus (protocol docs, "Message Formats"). */
static void param(pgt_msgbuf_t *mb, const char *name, const char *value)
{
    pgt_msgbuf_begin(mb, 'S');
    pgt_msgbuf_cstr(mb, name);
    pgt_msgbuf_cstr(mb, value);
    pgt_msgbuf_end(mb);
}

static void ready(pgt_msgbuf_t *mb)
{
    pgt_msgbuf_begin(mb, 'Z');
    pgt_msgbuf_u8(mb, 'I');
    pgt_msgbuf_end(mb);
}

static void process(pgt_session_t *s);

/* The server said ReadyForQuery: the login is good. pgtally ends that
 * backend and answers the client itself from now on. */
static void take_over(pgt_session_t *s)
{
    static const uint8_t terminate[5] = {'X', 0, 0, 0, 4};
    uv_timer_stop(&s->timer);
    pgt__conn_send(&s->server, terminate, sizeof(terminate));
    pgt__conn_close(&s->server);
    /* What counts is the name the server authenticated, under the config
     * in force now. */
    if (role_of(s->proxy->cfg, s->user) == 0) {
        refuse_user(s);
        return;
    }
    /* The user and application name come from a startup packet. */
    uint8_t buf[PGT_STARTUP_PACKET_MAX + 1024];
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, buf, sizeof(buf));
    param(&mb, "server_version", s->console->server_version);
    param(&mb, "server_encoding", "UTF8");
    param(&mb, "client_encoding", "UTF8");
    param(&mb, "DateStyle", "ISO, MDY");
    param(&mb, "integer_datetimes", "on");
    param(&mb, "standard_conforming_strings", "on");
    param(&mb, "is_superuser", "off");
    param(&mb, "session_authorization", s->user);
    param(&mb, "application_name", s->app);
    /* A key of its own, in no cancel map: there is nothing to cancel. */
    pgt_msgbuf_begin(&mb, 'K');
    pgt_msgbuf_u32(&mb, (uint32_t)s->id);
    pgt_msgbuf_u32(&mb, 0);
    pgt_msgbuf_end(&mb);
    ready(&mb);
    if (mb.failed) {
        pgt__session_fail(s, "53200", "pgtally: the console's greeting does not fit");
        return;
    }
    pgt__conn_send(&s->client, buf, mb.len);
    pgt__set_state(s, ST_CONSOLE);
    PGT_INFO("console_ready", "session=C-%llu user=%s role=%s", (unsigned long long)s->id, s->user,
             role_of(s->proxy->cfg, s->user) == 2 ? "admin" : "stats");
    size_t n;
    uint8_t *early = pgt__pend_take(&s->client, &n);
    pgt__console_input(s, early, n);
    free(early);
}

bool pgt__console_server(pgt_session_t *s, uint8_t type, const uint8_t *body, size_t blen)
{
    pgt_reader_t r;
    const char *name, *value;
    switch (type) {
    case 'S':
        pgt_reader_init(&r, body, blen);
        if (pgt_reader_cstr(&r, &name) && pgt_reader_cstr(&r, &value) &&
            strcmp(name, "server_version") == 0)
            snprintf(s->console->server_version, sizeof(s->console->server_version), "%s", value);
        return true;
    case 'K': /* the server's key: that backend ends at once */
    case 'N':
        return true;
    case 'Z':
        take_over(s);
        return true;
    default:
        return false;
    }
}

/* ---- commands on the loop --------------------------------------------------- */

static void show_sessions(pgt_session_t *s, pgt_buf_t *out)
{
    pgt_console_header(out, PGT_CONSOLE_SHOW_SESSIONS);
    const pgt_proxy_t *p = s->proxy;
    for (pgt_session_t *t = p->sessions; t; t = t->next) {
        char id[24], pid[16], secs[32], cost[PGT_MONEY_TEXT_MAX];
        double seconds = 0;
        bool running = t->ic && pgt_intercept_running(t->ic, &seconds);
        /* Normalized, as the ledger keeps statements: no literal (a
         * password in ALTER ROLE, say) reaches the console. */
        const pgt_text_t *sql = t->ic ? pgt_intercept_current(t->ic) : NULL;
        size_t nlen;
        char *norm = sql ? pgt_fp_normalize(sql->data, &nlen) : NULL;
        pgt_buf_t stmt = {0};
        bool shown = norm != NULL;
        if (norm)
            pgt_text_snippet(&stmt, norm, STATEMENT_SHOWN, "...");
        free(norm);
        snprintf(id, sizeof(id), "%llu", (unsigned long long)t->id);
        snprintf(pid, sizeof(pid), "%u", t->backend_pid);
        snprintf(secs, sizeof(secs), "%.3f", seconds);
        const char *cells[] = {id,
                               t->user,
                               t->database,
                               t->app_set ? t->app_set : t->app,
                               t->addr,
                               state_names[t->state],
                               t->have_key ? pid : NULL,
                               shown && !stmt.failed ? stmt.s : NULL,
                               running ? secs : NULL,
                               running && p->budgets
                                   ? pgt_money_format(pgt_budgets_running_cost(p->budgets, seconds),
                                                      p->cfg->currency, cost, sizeof(cost))
                                   : NULL};
        bool more = pgt_console_row(out, cells, 10);
        pgt_buf_free(&stmt);
        if (!more)
            break;
    }
}

/* A value of SHOW CONFIG as it may be shown: secrets masked, a
 * PostgreSQL connection string without its password. */
static const char *shown_value(const char *key, const char *v, char *buf, size_t len)
{
    if (!v)
        return NULL;
    if (strcmp(key, "ledger") == 0 || strcmp(key, "admin_conninfo") == 0) {
        pgt_db_describe(v, buf, len);
        return buf;
    }
    bool secret = strstr(key, "webhook_url") && !strstr(key, "_file");
    secret |= strstr(key, "password") && !strstr(key, "_file");
    secret |= strstr(key, "smtp_url") && strchr(v, '@');
    return secret ? "********" : v;
}

/* A key's default as its help states it ("... (default 60s)"), or NULL. */
static const char *default_of(const pgt_config_key_t *k, char *buf, size_t len)
{
    const char *d = strstr(k->help, "(default ");
    const char *end = d ? strrchr(d, ')') : NULL;
    if (!end)
        return NULL;
    d += strlen("(default ");
    snprintf(buf, len, "%.*s", (int)(end - d), d);
    return buf;
}

static void show_config(pgt_session_t *s, pgt_buf_t *out)
{
    pgt_console_header(out, PGT_CONSOLE_SHOW_CONFIG);
    const pgt_config_key_t *k = pgt_config_keys();
    for (size_t i = 0; k[i].name; i++) {
        char buf[512];
        const char *v = pgt_config_set_value(s->proxy->cfg, i);
        const char *shown =
            v ? shown_value(k[i].name, v, buf, sizeof(buf)) : default_of(&k[i], buf, sizeof(buf));
        const char *cells[] = {k[i].name, shown, v ? "set" : "default", k[i].help};
        if (!pgt_console_row(out, cells, 4))
            break;
    }
}

static void show_version(pgt_session_t *s, pgt_buf_t *out)
{
    pgt_console_header(out, PGT_CONSOLE_SHOW_VERSION);
    const char *pgtally[] = {"pgtally", PGTALLY_VERSION};
    const char *server[] = {"server", s->console->server_version};
    const char *uv[] = {"libuv", uv_version_string()};
    pgt_console_row(out, pgtally, 2);
    pgt_console_row(out, server, 2);
    pgt_console_row(out, uv, 2);
}

/* CANCEL SESSION n: a CancelRequest with that session's server key, as its
 * own client would send it. Returns 0, or -1 with an error in out. */
static int cancel_session(pgt_session_t *s, int64_t id, pgt_buf_t *out)
{
    pgt_session_t *t = s->proxy->sessions;
    while (t && (int64_t)t->id != id)
        t = t->next;
    char msg[200];
    if (!t || t->state == ST_CLOSING || !t->have_key) {
        snprintf(msg, sizeof(msg), "pgtally console: %s %lld",
                 t ? "nothing to cancel in session" : "no session", (long long)id);
        pgt_console_error(out, t ? "55000" : "42704", msg,
                          t ? "only a session logged in to the server can be cancelled"
                            : "SHOW SESSIONS lists the sessions");
        return -1;
    }
    uint8_t pkt[16];
    pgt_cancel_packet(pkt, t->backend_pid, t->backend_key);
    pgt_cancel_forward(s->proxy->loop, &t->upstream_addr, pkt);
    if (t->explaining)
        t->cancel_requested = true;
    PGT_INFO("console_cancel", "session=C-%llu user=%s target=C-%llu pid=%u",
             (unsigned long long)s->id, s->user, (unsigned long long)t->id, t->backend_pid);
    char sid[24], pid[16];
    snprintf(sid, sizeof(sid), "%llu", (unsigned long long)t->id);
    snprintf(pid, sizeof(pid), "%u", t->backend_pid);
    const char *cells[] = {sid, pid, "cancel request sent"};
    pgt_console_header(out, PGT_CONSOLE_CANCEL_SESSION);
    pgt_console_row(out, cells, 3);
    return 0;
}

/* RELOAD, as SIGHUP. Returns 0, or -1 with an error in out. */
static int reload(pgt_session_t *s, pgt_buf_t *out)
{
    pgt_proxy_t *p = s->proxy;
    const pgt_config_t *old = p->cfg;
    PGT_INFO("console_reload", "session=C-%llu user=%s", (unsigned long long)s->id, s->user);
    pgt_proxy_reload(p);
    if (p->cfg == old) {
        pgt_console_error(out, "F0000",
                          "pgtally console: the new configuration was refused; the "
                          "previous one stays in force",
                          "pgtally's log (event reload_failed) says what is wrong");
        return -1;
    }
    const char *cells[] = {"configuration reloaded"};
    pgt_console_header(out, PGT_CONSOLE_RELOAD);
    pgt_console_row(out, cells, 1);
    return 0;
}

/* ---- commands on a worker --------------------------------------------------- */

static void job_free(job_t *j)
{
    free(j->ledger);
    free(j->schema);
    free(j->user);
    pgt_buf_free(&j->out);
    free(j);
}

static void work_cb(uv_work_t *req)
{
    job_t *j = req->data;
    pgt_console_env_t env = {
        .where = {.ledger = j->ledger, .schema = j->schema},
        .currency = j->currency,
        .user = j->user,
        .regression_min_micro = j->regression_min_micro,
        .duplicate_min_runs = j->duplicate_min_runs,
    };
    pgt_console_run_ledger(&j->cmd, &env, &j->out);
}

static void answer(pgt_session_t *s, pgt_buf_t *out);
static void finish(pgt_session_t *s, pgt_buf_t *out, bool ext);

static void after_work_cb(uv_work_t *req, int status);

/* Hands j to the worker pool. Returns 0, or -1. */
static int submit(pgt_proxy_t *p, job_t *j)
{
    if (uv_queue_work(p->loop, &j->req, work_cb, after_work_cb) != 0)
        return -1;
    j->submitted = true;
    p->console_jobs++;
    return 0;
}

static void after_work_cb(uv_work_t *req, int status)
{
    job_t *j = req->data;
    pgt_session_t *s = j->s;
    pgt_proxy_t *p = j->proxy;
    p->console_jobs--;
    if (s)
        s->console->job = NULL;
    /* A session closing meanwhile (it is freed later) gets nothing more. */
    if (s && s->state == ST_CONSOLE) {
        if (status != 0) {
            pgt_buf_free(&j->out);
            pgt_console_error(&j->out, "58000", "pgtally console: the command was not run", NULL);
        }
        finish(s, &j->out, j->extended);
        process(s);
    }
    job_free(j);
    /* The oldest console waiting for a worker goes next. */
    pgt_session_t *next = NULL;
    for (pgt_session_t *t = p->sessions; t; t = t->next)
        if (t->state == ST_CONSOLE && t->console->job && !t->console->job->submitted)
            next = t;
    if (next && p->console_jobs < CONSOLE_MAX_JOBS && submit(p, next->console->job) != 0) {
        job_free(next->console->job);
        next->console->job = NULL;
        pgt__session_fail(next, "53200", "pgtally: could not start the console command");
    }
}

static void start_job(pgt_session_t *s, const pgt_console_cmd_t *cmd, bool ext)
{
    const pgt_config_t *cfg = s->proxy->cfg;
    job_t *j = calloc(1, sizeof(*j));
    if (j) {
        j->req.data = j;
        j->s = s;
        j->proxy = s->proxy;
        j->cmd = *cmd;
        j->extended = ext;
        j->ledger = strdup(cfg->ledger_path ? cfg->ledger_path : "pgtally.db");
        j->schema = cfg->ledger_schema ? strdup(cfg->ledger_schema) : NULL;
        j->user = strdup(s->user);
        snprintf(j->currency, sizeof(j->currency), "%s", cfg->currency);
        j->regression_min_micro = cfg->report_regression_min_micro;
        j->duplicate_min_runs = cfg->report_duplicate_min_runs;
    }
    /* Beyond CONSOLE_MAX_JOBS, the job waits (unsubmitted) for a worker. */
    if (!j || !j->ledger || !j->user || (cfg->ledger_schema && !j->schema) ||
        (s->proxy->console_jobs < CONSOLE_MAX_JOBS && submit(s->proxy, j) != 0)) {
        if (j)
            job_free(j);
        pgt_buf_t out = {0};
        pgt_console_error(&out, "53200", "pgtally console: out of memory", NULL);
        finish(s, &out, ext);
        return;
    }
    if (!j->submitted)
        PGT_DEBUG("console_job_waits", "session=C-%llu running=%d", (unsigned long long)s->id,
                  s->proxy->console_jobs);
    s->console->job = j;
}

/* ---- messages --------------------------------------------------------------- */

/* Sends out and ReadyForQuery to the client, and empties out. */
static void answer(pgt_session_t *s, pgt_buf_t *out)
{
    pgt_console_cap(out);
    pgt_buf_add(out, "Z\0\0\0\5I", 6);
    if (out->failed) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    pgt__conn_send(&s->client, out->s, out->len);
    pgt_buf_free(out);
}

/* Runs cmd; its answer goes out now, or when its job is done. In the
 * extended protocol the answer is an Execute's (no RowDescription, no
 * ReadyForQuery). */
/* Sends the answer of an extended-protocol message; an Execute's without
 * the RowDescription that Describe sent instead. An error makes the rest
 * skipped to the Sync. finish sends an Execute's with it, a simple
 * Query's with answer(). */
static void ext_send(pgt_session_t *s, pgt_buf_t *out, bool execute)
{
    pgt_console_cap(out);
    if (out->failed) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    const uint8_t *p = (const uint8_t *)out->s;
    size_t off = execute && out->len >= 5 && p[0] == 'T' ? 1 + (size_t)pgt_be32(p + 1) : 0;
    if (out->len > 0 && p[0] == 'E')
        s->console->ext_failed = true;
    if (out->len > off)
        pgt__conn_send(&s->client, p + off, out->len - off);
    pgt_buf_free(out);
}

static void finish(pgt_session_t *s, pgt_buf_t *out, bool ext)
{
    if (ext)
        ext_send(s, out, true);
    else
        answer(s, out);
}

static void run_cmd(pgt_session_t *s, const pgt_console_cmd_t *cmd, bool ext)
{
    char err[512];
    pgt_buf_t out = {0};
    int role = role_of(s->proxy->cfg, s->user);
    if (role == 0) {
        refuse_user(s);
        return;
    }
    if (cmd->verb == PGT_CONSOLE_EMPTY) {
        pgt_buf_add(&out, "I\0\0\0\4", 5);
    } else if (pgt_console_admin_only(cmd->verb) && role != 2) {
        snprintf(err, sizeof(err),
                 "pgtally console: permission denied for %s: user \"%s\" is a stats user, who may "
                 "run SHOW commands only",
                 pgt_console_syntax(cmd->verb), s->user);
        pgt_console_error(&out, "42501", err, "list the user in [admin] admin_users");
    } else if (pgt_console_reads_ledger(cmd->verb)) {
        if (pgt_console_admin_only(cmd->verb))
            PGT_INFO("console_command", "session=C-%llu user=%s command=\"%s\"",
                     (unsigned long long)s->id, s->user, pgt_console_syntax(cmd->verb));
        start_job(s, cmd, ext);
        return;
    } else {
        int rc = 0;
        if (cmd->verb == PGT_CONSOLE_SHOW_SESSIONS)
            show_sessions(s, &out);
        else if (cmd->verb == PGT_CONSOLE_SHOW_CONFIG)
            show_config(s, &out);
        else if (cmd->verb == PGT_CONSOLE_SHOW_VERSION)
            show_version(s, &out);
        else if (cmd->verb == PGT_CONSOLE_CANCEL_SESSION)
            rc = cancel_session(s, cmd->n, &out);
        else
            rc = reload(s, &out);
        if (rc == 0)
            pgt_console_complete(&out, pgt_console_tag(cmd->verb));
    }
    finish(s, &out, ext);
}

/* Parses text[0..len) into *cmd; an error goes to out. Returns 0, or -1. */
static int parse_text(const char *text, size_t len, pgt_console_cmd_t *cmd, pgt_buf_t *out)
{
    char sqlstate[6], err[1500];
    if (pgt_console_parse(text, len, cmd, sqlstate, err, sizeof(err)) == 0)
        return 0;
    pgt_console_error(out, sqlstate, err, "the console is not SQL; SHOW VERSION is a command");
    return -1;
}

static void run_query(pgt_session_t *s, const uint8_t *body, size_t blen)
{
    const char *text = (const char *)body;
    size_t len = strnlen(text, blen);
    if (len == blen) {
        pgt__session_fail(s, "08P01", "invalid Query message: its string has no terminating zero");
        return;
    }
    pgt_console_cmd_t cmd;
    pgt_buf_t out = {0};
    if (parse_text(text, len, &cmd, &out) != 0) {
        answer(s, &out);
        return;
    }
    run_cmd(s, &cmd, false);
}

/* ---- the extended protocol ---------------------------------------------------- */

/* The error of a statement ('S') or portal ('P') that does not exist. */
static void missing(pgt_buf_t *out, uint8_t kind, const char *name)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "pgtally console: %s \"%.63s\" does not exist",
             kind == 'S' ? "prepared statement" : "portal", name);
    pgt_console_error(out, kind == 'S' ? "26000" : "34000", msg, NULL);
}

/* The prepared statement or portal called name in list, or NULL. */
static prepared_t *find_prepared(prepared_t *list, const char *name)
{
    for (size_t i = 0; i < CONSOLE_MAX_PREPARED; i++)
        if (list[i].used && strcmp(list[i].name, name) == 0)
            return &list[i];
    return NULL;
}

/* Stores cmd as name in list (replacing one of that name). Returns 0, or
 * -1 with an error in out. */
static int keep_prepared(prepared_t *list, const char *name, const pgt_console_cmd_t *cmd,
                         pgt_buf_t *out)
{
    prepared_t *p = find_prepared(list, name);
    for (size_t i = 0; !p && i < CONSOLE_MAX_PREPARED; i++)
        if (!list[i].used)
            p = &list[i];
    if (!p || strlen(name) >= sizeof(p->name)) {
        pgt_console_error(out, "53400",
                          "pgtally console: at most 8 prepared statements and 8 portals, with "
                          "names of at most 63 bytes",
                          "close some, or use the unnamed statement");
        return -1;
    }
    p->used = true;
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->cmd = *cmd;
    return 0;
}

/* Parse (protocol docs, "Message Formats"): a command without parameters. */
static int ext_parse(struct pgt_console_session *con, pgt_reader_t *r, pgt_buf_t *out)
{
    const char *name, *text;
    uint16_t nparams;
    if (!pgt_reader_cstr(r, &name) || !pgt_reader_cstr(r, &text) || !pgt_reader_u16(r, &nparams))
        return -2;
    pgt_console_cmd_t cmd;
    if (nparams > 0) {
        pgt_console_error(out, "0A000", "pgtally console: commands take no parameters",
                          "write the values into the command");
        return -1;
    }
    if (parse_text(text, strlen(text), &cmd, out) != 0 ||
        keep_prepared(con->stmts, name, &cmd, out) != 0)
        return -1;
    pgt_buf_add(out, "1\0\0\0\4", 5);
    return 0;
}

/* Bind: no parameters, results as text. */
static int ext_bind(struct pgt_console_session *con, pgt_reader_t *r, pgt_buf_t *out)
{
    const char *portal, *name;
    uint16_t nfmt, nparams, nres, fmt;
    if (!pgt_reader_cstr(r, &portal) || !pgt_reader_cstr(r, &name) || !pgt_reader_u16(r, &nfmt) ||
        !pgt_reader_skip(r, 2u * nfmt) || !pgt_reader_u16(r, &nparams) || !pgt_reader_u16(r, &nres))
        return -2;
    bool binary = false;
    for (uint16_t i = 0; i < nres; i++) {
        if (!pgt_reader_u16(r, &fmt))
            return -2;
        binary |= fmt != 0;
    }
    const prepared_t *st = find_prepared(con->stmts, name);
    if (!st) {
        missing(out, 'S', name);
        return -1;
    }
    if (nparams > 0 || binary) {
        pgt_console_error(out, "0A000",
                          "pgtally console: commands take no parameters and answer in text only",
                          NULL);
        return -1;
    }
    if (keep_prepared(con->portals, portal, &st->cmd, out) != 0)
        return -1;
    pgt_buf_add(out, "2\0\0\0\4", 5);
    return 0;
}

/* Describe (type 'D': a statement's ParameterDescription and row, or a
 * portal's row) or Close (type 'C'; closing one that does not exist is not
 * an error) of 'S' (a statement) or 'P' (a portal) and a name. */
static int ext_target(struct pgt_console_session *con, uint8_t type, pgt_reader_t *r,
                      pgt_buf_t *out)
{
    uint8_t kind;
    const char *name;
    if (!pgt_reader_u8(r, &kind) || !pgt_reader_cstr(r, &name) || (kind != 'S' && kind != 'P'))
        return -2;
    prepared_t *p = find_prepared(kind == 'S' ? con->stmts : con->portals, name);
    if (type == 'C') {
        if (p)
            p->used = false;
        pgt_buf_add(out, "3\0\0\0\4", 5);
        return 0;
    }
    if (!p) {
        missing(out, kind, name);
        return -1;
    }
    if (kind == 'S')
        pgt_buf_add(out, "t\0\0\0\6\0\0", 7);
    if (p->cmd.verb == PGT_CONSOLE_EMPTY)
        pgt_buf_add(out, "n\0\0\0\4", 5);
    else
        pgt_console_header(out, p->cmd.verb);
    return 0;
}

/* The extended protocol (protocol docs, "Extended Query"). After an error,
 * messages are skipped up to the Sync, which is answered with
 * ReadyForQuery. Execute runs the portal's command: all its rows (a row
 * limit is not honoured: answers are small and bounded). */
static void extended(pgt_session_t *s, uint8_t type, const uint8_t *body, size_t blen)
{
    struct pgt_console_session *con = s->console;
    pgt_buf_t out = {0};
    if (type == 'S') {
        con->ext_failed = false;
        answer(s, &out);
        return;
    }
    if (con->ext_failed || type == 'H')
        return;
    pgt_reader_t r;
    pgt_reader_init(&r, body, blen);
    int rc = -2;
    if (type == 'P')
        rc = ext_parse(con, &r, &out);
    else if (type == 'B')
        rc = ext_bind(con, &r, &out);
    else if (type == 'D' || type == 'C')
        rc = ext_target(con, type, &r, &out);
    else if (type == 'E') {
        const char *portal;
        uint32_t maxrows;
        if (pgt_reader_cstr(&r, &portal) && pgt_reader_u32(&r, &maxrows)) {
            const prepared_t *p = find_prepared(con->portals, portal);
            if (p) {
                pgt_console_cmd_t cmd = p->cmd;
                run_cmd(s, &cmd, true);
                return;
            }
            missing(&out, 'P', portal);
            rc = -1;
        }
    }
    if (rc == -2) {
        pgt__session_fail(s, "08P01", "pgtally console: malformed message of type '%c'", type);
        pgt_buf_free(&out);
        return;
    }
    ext_send(s, &out, false);
}

static void on_message(pgt_session_t *s, uint8_t type, const uint8_t *body, size_t blen)
{
    switch (type) {
    case 'Q':
        run_query(s, body, blen);
        return;
    case 'X':
        s->client_terminated = true;
        pgt__session_close(s, "client_terminated");
        return;
    case 'P':
    case 'B':
    case 'D':
    case 'E':
    case 'C':
    case 'H':
    case 'S':
        extended(s, type, body, blen);
        return;
    case 'F': {
        pgt_buf_t out = {0};
        pgt_console_error(&out, "0A000", "pgtally console: function calls are not supported", NULL);
        answer(s, &out);
        return;
    }
    case 'd': /* CopyData, CopyDone, CopyFail outside a COPY: ignored */
    case 'c':
    case 'f':
        return;
    default:
        pgt__session_fail(s, "08P01", "pgtally console: unexpected message type 0x%02x", type);
    }
}

/* Handles the whole messages in the console's input while nothing runs and
 * the client keeps up with the answers; reads more only then. */
static void process(pgt_session_t *s)
{
    struct pgt_console_session *con = s->console;
    const uint8_t *in = (const uint8_t *)con->in.s;
    size_t off = 0;
    while (in && s->state == ST_CONSOLE && !con->job && s->client.queued <= CONSOLE_HIGH_WATER) {
        uint8_t type;
        size_t total;
        int rc = pgt_wire_next(in + off, con->in.len - off, PGT_CONSOLE_MAX_MESSAGE, &type, &total);
        if (rc < 0) {
            pgt__session_fail(s, "54000",
                              "pgtally console: invalid message length %u; the console takes "
                              "messages of 4 to %d bytes",
                              pgt_be32(in + off + 1), PGT_CONSOLE_MAX_MESSAGE);
            return;
        }
        if (rc == 0)
            break;
        const uint8_t *msg = in + off;
        off += total;
        on_message(s, type, msg + 5, total - 5);
    }
    if (s->state != ST_CONSOLE)
        return;
    if (off > 0) {
        memmove(con->in.s, con->in.s + off, con->in.len - off);
        pgt_buf_truncate(&con->in, con->in.len - off);
    }
    s->client.want_read = !con->job && s->client.queued <= CONSOLE_HIGH_WATER &&
                          con->in.len <= PGT_CONSOLE_MAX_MESSAGE;
    pgt__conn_update_reading(&s->client);
}

void pgt__console_input(pgt_session_t *s, const uint8_t *data, size_t len)
{
    pgt_buf_t *in = &s->console->in;
    if (len > 0)
        pgt_buf_add(in, data, len);
    if (in->failed) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    process(s);
}

void pgt__console_wrote(pgt_session_t *s)
{
    if (s->state == ST_CONSOLE && s->client.queued <= CONSOLE_HIGH_WATER / 4)
        process(s);
}

void pgt__console_free(pgt_session_t *s)
{
    struct pgt_console_session *con = s->console;
    if (!con)
        return;
    if (con->job && con->job->submitted)
        con->job->s = NULL;
    else if (con->job)
        job_free(con->job);
    pgt_buf_free(&con->in);
    free(con);
    s->console = NULL;
}
