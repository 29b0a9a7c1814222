/* The session state machine: one client connection paired with one upstream
 * connection. Bytes are read into one shared buffer, framed by the wire
 * codec and written straight to the other side; only the startup and
 * authentication phases keep whole messages, since pgtally has to look
 * inside them. */
#include "session_int.h"

#include <arpa/inet.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgtally/estimator.h"
#include "pgtally/intercept.h"
#include "pgtally/log.h"
#include "pgtally/tls.h"
#include "pgtally/wire.h"

static const char *const state_names[] = {
#define X(name, str) str,
    PGT_SESSION_STATE_MAP(X)
#undef X
};

/* Largest message accepted from either side before login completes. */
#define PREAUTH_MAX_MESSAGE 65536

/* The loop is single-threaded and every read is consumed before the next,
 * so all connections share these buffers. */
static uint8_t read_buf[64 * 1024];
static uint8_t plain_buf[64 * 1024];

static void flush_early(pgt_session_t *s);
static void on_data(pgt_session_t *s, conn_t *c, const uint8_t *data, size_t len);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* ---- state ------------------------------------------------------------ */

static void set_state(pgt_session_t *s, state_t next)
{
    if (s->state == next)
        return;
    PGT_DEBUG("session_state", "session=C-%llu from=%s to=%s", (unsigned long long)s->id,
              state_names[s->state], state_names[next]);
    s->state = next;
    /* While connecting upstream the client has nothing to say; pgtally keeps
     * its bytes in the socket rather than in memory. */
    bool client_reads = next != ST_CONNECTING && next != ST_UPSTREAM_TLS_REQUEST &&
                        next != ST_UPSTREAM_TLS && next != ST_CLOSING;
    /* After login a hold or a long pipeline may still keep it from reading. */
    if (next == ST_IDLE || next == ST_QUERY || next == ST_COPY) {
        pgt__hold_reading(s);
        return;
    }
    s->client.want_read = client_reads;
    pgt__conn_update_reading(&s->client);
}

void pgt__set_state(pgt_session_t *s, state_t next)
{
    set_state(s, next);
}

static bool logged_in(const pgt_session_t *s)
{
    return s->state == ST_IDLE || s->state == ST_QUERY || s->state == ST_COPY;
}

/* ---- connection I/O ---------------------------------------------------- */

void pgt__conn_update_reading(conn_t *c)
{
    if (!c->open || c->close_started)
        return;
    bool want = c->want_read && !c->paused && !c->close_on_flush;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* The last close callback: the session can go. */
static void timer_close_cb(uv_handle_t *h)
{
    pgt_session_t *s = h->data;
    pgt_proxy_t *p = s->proxy;
    if (s->prev)
        s->prev->next = s->next;
    else
        p->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s->names);
    free(s->explain_msg);
    free(s->explain_out);
    free(s->plan);
    free(s->explain_err);
    pgt_buf_free(&s->explain_ps);
    free(s->verdict);
    free(s->subst);
    free(s->app_set);
    free(s->early);
    pgt__console_free(s);
    pgt_conv_free(&s->conv);
    if (s->state == ST_CLOSING)
        p->nclosing--;
    free(s);
    pgt_proxy_session_gone(p);
}

static void conn_close_cb(uv_handle_t *h)
{
    pgt_session_t *s = h->data;
    conn_t *c = h == (uv_handle_t *)&s->client.tcp ? &s->client : &s->server;
    pgt_tls_free(c->tls);
    c->tls = NULL;
    free(c->pend);
    c->pend = NULL;
    if (--s->open_conns == 0)
        uv_close((uv_handle_t *)&s->timer, timer_close_cb);
}

void pgt__conn_close_now(conn_t *c)
{
    if (!c->open || c->close_started)
        return;
    c->close_started = true;
    c->tcp.data = c->s;
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

/* Closes a side once everything queued to it has been written. */
void pgt__conn_close(conn_t *c)
{
    if (!c->open || c->close_started)
        return;
    c->want_read = false;
    c->close_on_flush = true;
    pgt__conn_update_reading(c);
    if (c->queued == 0)
        pgt__conn_close_now(c);
}

/* ---- closing ------------------------------------------------------------ */

void pgt__session_close(pgt_session_t *s, const char *reason)
{
    if (s->state == ST_CLOSING)
        return;
    PGT_INFO("session_end", "session=C-%llu user=%s db=%s app=\"%s\" addr=%s state=%s reason=%s",
             (unsigned long long)s->id, s->user ? s->user : "-", s->database ? s->database : "-",
             s->app ? s->app : "", s->addr, state_names[s->state], reason);
    set_state(s, ST_CLOSING);
    s->proxy->nclosing++; /* its client slot is free for a new client at once */
    if (s->ic) {
        pgt_intercept_free(s->ic, "08006");
        s->ic = NULL;
    }
    if (s->have_key) {
        pgt_cancel_map_del(s->proxy->cancel_map, s->backend_pid, s->backend_key, s);
        s->have_key = false;
    }
    pgt__conn_close(&s->server);
    pgt__conn_close(&s->client);
    if (!s->client.close_started || !s->server.close_started)
        pgt__session_flush_guard(s);
}

/* Asks the server to end the backend cleanly with Terminate, when the
 * stream towards it sits between messages. */
static void send_terminate(pgt_session_t *s)
{
    static const uint8_t terminate[5] = {'X', 0, 0, 0, 4};
    if (s->server.open && s->authenticated && !s->client_terminated &&
        pgt_framer_at_boundary(&s->client.framer))
        pgt__conn_send(&s->server, terminate, sizeof(terminate));
}

/* The one failure exit: a FATAL ErrorResponse to the client (when the
 * stream towards it can carry one), then close. */
void pgt__session_fail(pgt_session_t *s, const char *sqlstate, const char *fmt, ...)
{
    if (s->state == ST_CLOSING)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    PGT_INFO("session_error", "session=C-%llu sqlstate=%s message=\"%s\"",
             (unsigned long long)s->id, sqlstate, msg);
    bool can_speak = s->state != ST_CLIENT_TLS && pgt_framer_at_boundary(&s->server.framer) &&
                     (!s->client.tls || pgt_tls_ready(s->client.tls));
    if (can_speak) {
        uint8_t buf[1024];
        pgt_msgbuf_t mb;
        pgt_msgbuf_init(&mb, buf, sizeof(buf));
        pgt_wire_error(&mb, "FATAL", sqlstate, msg, NULL, NULL);
        if (!mb.failed)
            pgt__conn_send(&s->client, buf, mb.len);
    }
    send_terminate(s);
    pgt__session_close(s, sqlstate);
}

static void timer_cb(uv_timer_t *t)
{
    pgt_session_t *s = t->data;
    if (s->state == ST_CLOSING) {
        pgt__conn_close_now(&s->client);
        pgt__conn_close_now(&s->server);
        return;
    }
    if (s->server.write_dead) {
        pgt__session_fail(s, "08006",
                          "pgtally: lost connection to upstream server %s: writing to it failed",
                          s->proxy->upstream_name);
        return;
    }
    pgt__session_fail(s, "08P01",
                      "pgtally: the client did not log in within %d ms (startup_timeout)",
                      s->proxy->cfg->startup_timeout_ms);
}

void pgt__session_flush_guard(pgt_session_t *s)
{
    uv_timer_stop(&s->timer);
    uv_timer_start(&s->timer, timer_cb, PGT_FLUSH_TIMEOUT_MS, 0);
}

/* ---- upstream connection --------------------------------------------------- */

static void send_startup_packet(pgt_session_t *s)
{
    /* The startup packet was kept as the first bytes of the client's pend;
     * whatever the client sent after it follows, in order. */
    uint32_t len = pgt_be32(s->client.pend);
    pgt__conn_send(&s->server, s->client.pend, len);
    pgt__pend_consume(&s->client, len);
    set_state(s, ST_AUTH);
    if (s->client.pend_len > 0) {
        size_t n = s->client.pend_len;
        uint8_t *rest = s->client.pend;
        s->client.pend = NULL;
        s->client.pend_len = s->client.pend_cap = 0;
        on_data(s, &s->client, rest, n);
        free(rest);
    }
}

static void connect_cb(uv_connect_t *req, int status)
{
    pgt_session_t *s = req->data;
    free(req);
    if (s->state == ST_CLOSING)
        return;
    if (status < 0) {
        PGT_WARN("upstream_connect_failed", "session=C-%llu upstream=%s error=\"%s\"",
                 (unsigned long long)s->id, s->proxy->upstream_name, uv_strerror(status));
        pgt__session_fail(s, "08006", "pgtally: could not connect to upstream server %s: %s",
                          s->proxy->upstream_name, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&s->server.tcp, 1);
    s->server.want_read = true;
    pgt__conn_update_reading(&s->server);
    if (s->up_tls != PGT_UPSTREAM_TLS_DISABLE && s->proxy->upstream_ctx) {
        static const uint8_t sslrequest[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
        pgt__conn_raw_send(&s->server, sslrequest, sizeof(sslrequest));
        set_state(s, ST_UPSTREAM_TLS_REQUEST);
        return;
    }
    send_startup_packet(s);
}

static void connect_upstream(pgt_session_t *s)
{
    pgt_proxy_t *p = s->proxy;
    set_state(s, ST_CONNECTING);
    s->upstream_addr = p->upstream_addr;
    s->up_tls = p->cfg->upstream_tls;
    uv_connect_t *req = malloc(sizeof(*req));
    if (!req || uv_tcp_init(p->loop, &s->server.tcp) != 0) {
        free(req);
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    s->server.open = true;
    s->server.tcp.data = &s->server;
    s->open_conns++;
    req->data = s;
    int rc = uv_tcp_connect(req, &s->server.tcp, &s->upstream_addr.sa, connect_cb);
    if (rc != 0) {
        free(req);
        pgt__session_fail(s, "08006", "pgtally: could not connect to upstream server %s: %s",
                          p->upstream_name, uv_strerror(rc));
    }
}

/* The server's one-byte answer to pgtally's SSLRequest (protocol docs,
 * "Message Flow", SSL Session Encryption). */
static void upstream_tls_answer(pgt_session_t *s, const uint8_t *data, size_t len)
{
    pgt_proxy_t *p = s->proxy;
    if (data[0] == 'S') {
        /* Bytes after 'S' and before the handshake could only have been
         * injected by a man in the middle (CVE-2021-23222). */
        if (len > 1) {
            pgt__session_fail(s, "08006", "pgtally: upstream %s sent unencrypted data after 'S'",
                              p->upstream_name);
            return;
        }
        const char *host = s->up_tls == PGT_UPSTREAM_TLS_VERIFY_FULL ? p->cfg->upstream_host : NULL;
        s->server.tls = pgt_tls_new(p->upstream_ctx, false, host);
        if (!s->server.tls) {
            pgt__session_fail(s, "53200", "pgtally: out of memory");
            return;
        }
        set_state(s, ST_UPSTREAM_TLS);
        if (pgt_tls_handshake(s->server.tls) == PGT_TLS_ERROR) {
            pgt__session_fail(s, "08006", "pgtally: TLS with upstream %s failed: %s",
                              p->upstream_name, pgt_tls_error(s->server.tls));
            return;
        }
        pgt__conn_flush_tls(&s->server);
        return;
    }
    if (data[0] == 'N' && len == 1 && s->up_tls == PGT_UPSTREAM_TLS_PREFER) {
        send_startup_packet(s);
        return;
    }
    if (data[0] == 'N' && len == 1) {
        pgt__session_fail(s, "08006",
                          "pgtally: upstream %s does not accept TLS, but upstream_tls = %s; set "
                          "upstream_tls = prefer or enable ssl on the server",
                          p->upstream_name, pgt_upstream_tls_name(s->up_tls));
        return;
    }
    pgt__session_fail(s, "08006", "pgtally: upstream %s answered the TLS request with an error",
                      p->upstream_name);
}

/* ---- authentication relay ---------------------------------------------- */

/* Server messages taken whole after login: ParameterStatus (judge.c's
 * cancel_capture adds ErrorResponse while a statement cancelled for a
 * budget runs). */
static const uint8_t server_capture[256] = {['S'] = 1};

static void enter_idle(pgt_session_t *s)
{
    uv_timer_stop(&s->timer);
    set_state(s, ST_IDLE);
    /* From now on the client may send messages up to max_message_size. */
    s->client.framer.max_len = s->proxy->cfg->max_message_size;
    s->client.framer.count_lines = true; /* settles Syncs sent during COPY (conv.h) */
    if (s->proxy->meter) {
        const char *app = s->app ? s->app : "";
        s->ic = pgt_intercept_new(s->proxy->meter, s->proxy->estimator, s->id,
                                  (int32_t)s->backend_pid, s->user, s->database, app, s->addr);
        if (s->ic)
            pgt_framer_capture(&s->client.framer, pgt_intercept_capture, PGT_INTERCEPT_MAX_SQL);
        /* A Query too long to capture is judged on its head (judge.c). */
        if (s->ic)
            pgt_framer_heads(&s->client.framer, true);
        if (s->ic)
            pgt_intercept_set_budgets(s->ic, s->proxy->budgets);
        /* ParameterStatus whole: SET application_name moves attribution. */
        if (s->ic)
            pgt_framer_capture(&s->server.framer, server_capture, 4096);
    }
    PGT_INFO("session_ready", "session=C-%llu user=%s db=%s app=\"%s\" addr=%s pid=%u",
             (unsigned long long)s->id, s->user, s->database, s->app, s->addr, s->backend_pid);
}

/* Client bytes while authentication is relayed (protocol docs, "Message
 * Flow", Start-up). Until AuthenticationOk the client's authentication
 * messages (PasswordMessage and the SASL and GSS responses, all of type 'p')
 * go to the server as they come. Anything else is a statement sent before
 * the session is ready, which the intercept does not exist yet to meter or
 * judge: it waits in client.pend, with everything behind it, until
 * ReadyForQuery (auth_data then feeds it through pgt__pass_client). Past
 * PREAUTH_MAX_MESSAGE bytes kept, pgtally stops reading from the client
 * until then (backpressure). */
static void auth_client(pgt_session_t *s, const uint8_t *data, size_t len)
{
    conn_t *c = &s->client;
    if (pgt__pend_append(c, data, len) != 0) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    size_t off = 0;
    while (!s->authenticated && s->state == ST_AUTH && c->pend_len - off >= 5 &&
           c->pend[off] == 'p') {
        uint8_t type;
        size_t total;
        int rc =
            pgt_wire_next(c->pend + off, c->pend_len - off, PREAUTH_MAX_MESSAGE, &type, &total);
        if (rc < 0) {
            pgt__session_fail(s, "08P01",
                              "invalid message length %d for message type 'p' (limit %d)",
                              (int32_t)pgt_be32(c->pend + off + 1), PREAUTH_MAX_MESSAGE);
            return;
        }
        if (rc == 0)
            break;
        pgt__conn_send(&s->server, c->pend + off, total);
        off += total;
    }
    if (s->state != ST_AUTH)
        return;
    if (off > 0)
        pgt__pend_consume(c, off);
    c->want_read = c->pend_len <= PREAUTH_MAX_MESSAGE;
    pgt__conn_update_reading(c);
}

/* The server asks for an authentication response (cleartext or MD5
 * password, SASL, SASL continue), and the client sent a statement instead:
 * it goes to the server now, in order, as it would direct. The server reads
 * it as the response and refuses the login (auth.c: "expected password
 * response"); it never runs there. */
static void auth_request(pgt_session_t *s, uint32_t code)
{
    conn_t *c = &s->client;
    uint8_t type;
    size_t total;
    if ((code != 3 && code != 5 && code != 10 && code != 11) || c->pend_len < 5 ||
        c->pend[0] == 'p')
        return;
    if (pgt_wire_next(c->pend, c->pend_len, s->proxy->cfg->max_message_size, &type, &total) != 1)
        return;
    pgt__conn_send(&s->server, c->pend, total);
    pgt__pend_consume(c, total);
}

static void auth_message(pgt_session_t *s, uint8_t type, const uint8_t *msg, size_t total)
{
    const uint8_t *body = msg + 5;
    size_t blen = total - 5;
    if (s->console && s->authenticated && pgt__console_server(s, type, body, blen))
        return;
    if (type == 'R' && blen >= 4 && !s->authenticated)
        auth_request(s, pgt_be32(body));
    /* AuthenticationSASL: a client without TLS must not see
     * SCRAM-SHA-256-PLUS, which libpq then refuses as "offered over a non-SSL
     * connection"; it answers with the "n" flag, which the server accepts. A
     * TLS client gets the list unchanged: withheld, it would send the "y"
     * flag, which a TLS server rejects as a downgrade. See docs/proxy.md,
     * "SCRAM and channel binding". */
    if (type == 'R' && blen >= 4 && pgt_be32(body) == 10 && !s->client.tls) {
        uint8_t buf[1024];
        pgt_msgbuf_t mb;
        pgt_msgbuf_init(&mb, buf, sizeof(buf));
        if (pgt_wire_sasl_strip_plus(body + 4, blen - 4, &mb) != 0) {
            pgt__session_fail(s, "08P01", "pgtally: malformed AuthenticationSASL from upstream");
            return;
        }
        pgt__conn_send(&s->client, buf, mb.len);
        return;
    }
    if (type == 'R' && blen >= 4 && pgt_be32(body) == 0)
        s->authenticated = true;
    if (type == 'Z' && blen >= 1)
        s->txn_status = body[0];
    if (type == 'K' && blen >= 8 && !s->have_key) {
        s->backend_pid = pgt_be32(body);
        s->backend_key = pgt_be32(body + 4);
        if (pgt_cancel_map_put(s->proxy->cancel_map, s->backend_pid, s->backend_key, s) == 0)
            s->have_key = true;
    }
    if (type == 'E') {
        char sev[16];
        if (pgt_wire_error_severity(body, blen, sev, sizeof(sev)) && strcmp(sev, "FATAL") == 0)
            s->server_fatal = true;
    }
    pgt__conn_send(&s->client, msg, total);
}

/* Server bytes taken whole message by whole message (login, pgtally's
 * EXPLAIN) while still(s) holds: a message split across reads waits in
 * server.pend; once still(s) no longer holds, the bytes after the last
 * message go through on_data like any others. */
void pgt__server_whole(pgt_session_t *s, const uint8_t *data, size_t len, int64_t max,
                       still_fn still, whole_fn fn)
{
    conn_t *c = &s->server;
    if (pgt__pend_append(c, data, len) != 0) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    size_t off = 0;
    while (still(s) && s->state != ST_CLOSING) {
        uint8_t type;
        size_t total;
        int rc = pgt_wire_next(c->pend + off, c->pend_len - off, max, &type, &total);
        if (rc == 0)
            break;
        if (rc < 0) {
            pgt__session_fail(s, "08P01", "pgtally: invalid message from upstream %s (state %s)",
                              s->proxy->upstream_name, state_names[s->state]);
            return;
        }
        const uint8_t *msg = c->pend + off;
        off += total;
        fn(s, type, msg, total);
    }
    if (s->state == ST_CLOSING)
        return;
    if (still(s)) {
        pgt__pend_consume(c, off);
        return;
    }
    size_t n;
    uint8_t *buf = pgt__pend_take(c, &n);
    if (n > off)
        on_data(s, c, buf + off, n - off);
    free(buf);
}

static bool in_auth(const pgt_session_t *s)
{
    return s->state == ST_AUTH;
}

static void auth_whole(pgt_session_t *s, uint8_t type, const uint8_t *msg, size_t total)
{
    auth_message(s, type, msg, total);
    if (type == 'Z' && s->state == ST_AUTH)
        enter_idle(s);
}

/* Server bytes before the first ReadyForQuery. */
static void auth_data(pgt_session_t *s, const uint8_t *data, size_t len)
{
    pgt__server_whole(s, data, len, PREAUTH_MAX_MESSAGE, in_auth, auth_whole);
    /* Logged in: what the client sent before ReadyForQuery now goes the way
     * of every message after login, metered and judged. */
    if (logged_in(s) && !s->explaining && !s->refusing && s->client.pend_len > 0) {
        size_t n;
        uint8_t *held = pgt__pend_take(&s->client, &n);
        pgt__pass_client(s, held, n);
        free(held);
    }
}

/* ---- query traffic ------------------------------------------------------ */

/* Book-keeping for a client message that goes upstream now. */
void pgt__client_account(pgt_session_t *s, uint8_t type, const uint8_t *body, size_t blen)
{
    pgt_conv_lines(&s->conv, s->client.framer.lines);
    int cf = pgt_conv_sent(&s->conv, type, PGT_CONV_CLIENT, 0);
    if (s->conv.failed) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    if (cf & PGT_CONV_FLUSHES) {
        s->client_flushes++;
        flush_early(s);
    }
    /* A message the server will skip runs nothing and changes nothing. */
    if (s->ic && (cf & PGT_CONV_SKIPPED))
        pgt_intercept_skipped(s->ic, type, body, blen);
    else if (s->ic)
        pgt_intercept_client(s->ic, type, body, blen);
    if (type == 'X')
        s->client_terminated = true;
    if (pgt_conv_readies(&s->conv) > 0 && s->state == ST_IDLE)
        set_state(s, ST_QUERY);
    if (pgt_conv_owed(&s->conv) >= PGT_CONV_MAX)
        pgt__hold_reading(s);
}

static void client_msg_cb(void *arg, uint8_t type, uint32_t len, const uint8_t *peek, size_t plen)
{
    pgt_session_t *s = arg;
    if (s->client.framer.head) {
        pgt__judge_head(s, type, peek, plen);
        return;
    }
    /* Only a Query or Bind that could be explained or judged is looked at
     * on the loop; the others (pipelined, unmetered) are estimated from
     * history by the meter's worker, off the loop. The ledger refuses only
     * outside transaction blocks, so nobody is stuck in an open one. */
    if (type == 'Q' && pgt__may_hold_query(s) && s->txn_status == 'I' && s->proxy->ledger &&
        pgt_ledger_refusing(s->proxy->ledger)) {
        s->refuse = true;
        s->client.framer.stop = true;
        return;
    }
    /* A well-formed Query body is NUL-terminated in place. */
    bool whole_query = type == 'Q' && plen > 0 && peek[plen - 1] == 0;
    bool explain = type == 'Q' && pgt__may_hold_query(s) && s->proxy->estimator;
    /* A Query too long to capture was judged on its head. */
    if (type == 'Q' && s->ic && plen + 4 == len &&
        (explain || pgt__judge_due(s) || pgt__guard_on(s))) {
        s->est = PGT_ESTIMATE_NONE;
        s->plan_valid = false;
        char *sql = NULL;
        if (whole_query && s->proxy->estimator)
            sql = pgt_estimator_plan(s->proxy->estimator, s->database, (const char *)peek, plen - 1,
                                     explain ? pgt__explain_level(s) : PGT_EXPLAIN_NEVER, &s->est);
        bool held = sql && pgt__explain_query_msg(s, sql);
        free(sql);
        if (held) {
            s->client.framer.stop = true;
            return;
        }
        if (!explain && whole_query && s->est.explainable && pgt__guard_hold(s, AWAIT_PLAN_QUERY))
            return;
        pgt_intercept_set_estimate(s->ic, &s->est);
        bool now = pgt_conv_may_query(&s->conv), later = !now && pgt__may_await(s);
        if (whole_query && pgt__judge(s, (const char *)peek, plen - 1, NULL, now || later)) {
            s->awaiting = later ? AWAIT_QUERY : AWAIT_NONE;
            s->client.framer.stop = true;
            return;
        }
    }
    if (type == 'B' && s->ic && plen + 4 == len) {
        if (pgt__plan_bind(s, peek, plen)) {
            s->ext_explain = true;
            s->client.framer.stop = true;
            return;
        }
        if (s->explain_later && pgt__guard_hold(s, AWAIT_PLAN_BIND))
            return;
        if (pgt__judge_bind(s, peek, plen, true)) {
            s->client.framer.stop = true;
            return;
        }
    }
    pgt__client_account(s, type, peek, plen);
    /* s->est is this Bind's only when plan_bind ran (it was whole). */
    if (type == 'B' && (s->est.key || s->est.rule_id || s->est.approval_id) && plen + 4 == len)
        pgt_intercept_set_portal_estimate(s->ic, (const char *)peek, &s->est);
}

/* A COPY FROM STDIN begins (CopyInResponse body[0..len)). In text format
 * (not CSV: a quoted field may hold newlines) the ErrorResponse that may
 * end it is taken whole, for the data line it names (conv.h,
 * pgt_conv_error_line). */
static void copy_in_begins(pgt_session_t *s, const uint8_t *body, size_t len)
{
    static const uint8_t copy_capture[256] = {['S'] = 1, ['E'] = 1};
    const pgt_text_t *t = s->ic ? pgt_intercept_current(s->ic) : NULL;
    s->copy_text = len > 0 && body[0] == 0 && t && !strcasestr(t->data, "csv");
    if (s->copy_text && !s->budget_cancel)
        pgt_framer_capture(&s->server.framer, copy_capture, 65536);
}

/* Book-keeping for a server message for the client (the conversation
 * model's *r): metering, the session's state, and what pgtally watches
 * for. Returns true when the client gets s->subst in its place (the
 * statement pgtally cancelled for a budget). The skipped messages of *r
 * are the caller's to take. */
static bool server_account(pgt_session_t *s, uint8_t type, uint32_t len, const uint8_t *peek,
                           size_t plen, const pgt_conv_reply_t *r)
{
    char sev[16];
    bool replace = false;
    if (s->ic)
        pgt_intercept_server(s->ic, r->to.from == PGT_CONV_CLIENT ? r->to.type : 0, type, len, peek,
                             plen);
    switch (type) {
    case 'Z': /* ReadyForQuery */
        if (plen > 0)
            s->txn_status = peek[0];
        break;
    case 'G': /* CopyInResponse */
        copy_in_begins(s, peek, plen);
        set_state(s, ST_COPY);
        break;
    case 'H': /* CopyOutResponse */
    case 'W': /* CopyBothResponse */
        set_state(s, ST_COPY);
        break;
    case 'E': /* ErrorResponse */
        if (pgt_wire_error_severity(peek, plen, sev, sizeof(sev)) && strcmp(sev, "FATAL") == 0)
            s->server_fatal = true;
        /* The statement pgtally cancelled for a budget: the client gets the
         * budget's error instead. */
        if (s->budget_cancel && s->subst && plen + 4 == len &&
            pgt_wire_error_code(peek, plen, sev) && strcmp(sev, "57014") == 0)
            replace = true;
        break;
    default:
        break;
    }
    /* Idle once no ReadyForQuery is owed: at one, or when the server
     * skips the Query that owed it. */
    if ((type == 'Z' || r->skipped) && logged_in(s)) {
        if (pgt_conv_readies(&s->conv) == 0 && (s->state != ST_COPY || type == 'Z'))
            set_state(s, ST_IDLE);
        else if (s->state == ST_COPY && type == 'Z')
            set_state(s, ST_QUERY);
    }
    /* The server reports application_name when a client sets it. */
    if (type == 'S' && s->ic && plen + 4 == len && plen > 17 &&
        memcmp(peek, "application_name", 17) == 0 && peek[plen - 1] == 0) {
        char *app = strdup((const char *)peek + 17);
        if (app) {
            free(s->app_set);
            s->app_set = app;
            s->app = app;
            pgt_intercept_set_application(s->ic, app);
        }
    }
    if (type == 'Z' && s->copy_text) {
        s->copy_text = false;
        pgt_framer_capture(&s->server.framer, server_capture, 4096);
    }
    if (type == 'Z' && s->budget_cancel) {
        s->budget_cancel = false;
        pgt_framer_capture(&s->server.framer, server_capture, 4096);
        free(s->subst);
        s->subst = NULL;
    }
    if (!s->client.want_read && logged_in(s) && pgt_conv_owed(&s->conv) < PGT_CONV_MAX / 4)
        pgt__hold_reading(s);
    return replace;
}

bool pgt__take_skipped(pgt_session_t *s)
{
    pgt_conv_entry_t e;
    bool ours = false;
    while (pgt_conv_take_skipped(&s->conv, &e)) {
        if (e.from == PGT_CONV_OURS)
            ours = true;
        else if (s->ic)
            pgt_intercept_skipped(s->ic, e.type, NULL, 0);
    }
    return ours;
}

void pgt__conv_reply(pgt_session_t *s, uint8_t type, const uint8_t *body, size_t blen,
                     pgt_conv_reply_t *r)
{
    char code[6];
    bool coded = type == 'E' && pgt_wire_error_code(body, blen, code);
    if (coded && s->copy_text && s->conv.copying)
        pgt_conv_error_line(&s->conv, pgt_wire_error_copy_line(body, blen));
    pgt_conv_reply(&s->conv, type, coded ? code : NULL, r);
    for (uint32_t i = 0; i < r->nbefore; i++)
        if (r->before[i].from == PGT_CONV_CLIENT && s->ic)
            pgt_intercept_skipped(s->ic, r->before[i].type, NULL, 0);
}

static void server_msg_cb(void *arg, uint8_t type, uint32_t len, const uint8_t *peek, size_t plen)
{
    pgt_session_t *s = arg;
    pgt_conv_reply_t r;
    pgt__conv_reply(s, type, peek, plen, &r);
    if (server_account(s, type, len, peek, plen, &r) && plen + 4 == len)
        s->server.framer.stop = true;
    pgt__take_skipped(s);
}

/* Largest amount of early replies held for the client: the server itself
 * writes its output out when 8 kB of it are waiting (pqcomm.c,
 * PqSendBufferSize), so past this the client would have had them. */
#define EARLY_MAX (64 * 1024)

static void flush_early(pgt_session_t *s)
{
    if (s->early_len == 0)
        return;
    size_t n = s->early_len;
    s->early_len = 0;
    pgt__conn_send(&s->client, s->early, n);
}

static void hold_early(pgt_session_t *s, const uint8_t *msg, size_t total)
{
    if (s->early_len + total > EARLY_MAX) {
        flush_early(s);
        pgt__conn_send(&s->client, msg, total);
        return;
    }
    if (s->early_len + total > s->early_cap) {
        size_t cap = s->early_cap ? s->early_cap : 1024;
        while (cap < s->early_len + total)
            cap *= 2;
        uint8_t *p = realloc(s->early, cap);
        if (!p) {
            pgt__session_fail(s, "53200", "pgtally: out of memory");
            return;
        }
        s->early = p;
        s->early_cap = cap;
    }
    memcpy(s->early + s->early_len, msg, total);
    s->early_len += total;
}

void pgt__deliver(pgt_session_t *s, const uint8_t *msg, size_t total, const pgt_conv_reply_t *r)
{
    uint8_t type = msg[0];
    size_t plen = total - 5 < PGT_INTERCEPT_MAX_SQL ? total - 5 : PGT_INTERCEPT_MAX_SQL;
    if (server_account(s, type, (uint32_t)(total - 1), msg + 5, plen, r) && s->subst) {
        msg = s->subst;
        total = s->subst_len;
    }
    if (s->state == ST_CLOSING)
        return;
    /* What comes behind early replies (notices, notifications) waits with
     * them, in order. */
    if (r->early || (s->early_len > 0 && (type == 'N' || type == 'A' || type == 'S')))
        hold_early(s, msg, total);
    else {
        flush_early(s);
        pgt__conn_send(&s->client, msg, total);
    }
    if (msg == s->subst) {
        free(s->subst);
        s->subst = NULL;
    }
}

void pgt__send_ours(pgt_session_t *s, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    uint8_t type;
    size_t total;
    while (pgt_wire_next(buf + off, len - off, INT32_MAX, &type, &total) == 1) {
        pgt_conv_sent(&s->conv, type, PGT_CONV_OURS, 0);
        off += total;
    }
    if (s->conv.failed) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    pgt__conn_send(&s->server, buf, len);
}

/* Frames client bytes and forwards what may go. A captured message that
 * is not all here waits in client.pend; a Query to be explained first waits
 * there too, with everything behind it. */
static void feed_client(pgt_session_t *s, const uint8_t *data, size_t len)
{
    pgt_framer_t *f = &s->client.framer;
    int rc = pgt_framer_feed(f, data, len, client_msg_cb, s);
    if (rc < 0) {
        pgt__session_fail(
            s, "08P01", "invalid message length %d for message type '%c' (limit %lld)",
            (int32_t)f->len, f->type >= 32 && f->type < 127 ? f->type : '?', (long long)f->max_len);
        return;
    }
    size_t upto = rc == 0 ? len : rc == PGT_WIRE_STOPPED ? f->msg_start : f->stopped_at;
    pgt__conn_send(&s->server, data, upto);
    if (rc == 0 || s->state == ST_CLOSING)
        return;
    if (pgt__pend_append(&s->client, data + upto, len - upto) != 0) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    if (rc == PGT_WIRE_STOPPED && s->refuse)
        pgt__refuse_held(s);
    else if (rc == PGT_WIRE_STOPPED && s->awaiting)
        pgt__await_start(s);
    else if (rc == PGT_WIRE_STOPPED && s->verdict && !s->ext_explain)
        pgt__refuse_query(s);
    else if (rc == PGT_WIRE_STOPPED)
        pgt__start_explain(s);
}

void pgt__hold_reading(pgt_session_t *s)
{
    conn_t *c = &s->client;
    if (s->state == ST_CLOSING)
        return;
    /* Also while the server owes too many messages: a client that
     * pipelines without reading replies is slowed, not remembered. */
    c->want_read =
        !(s->explaining && c->pend_len > PGT_HIGH_WATER) && pgt_conv_owed(&s->conv) < PGT_CONV_MAX;
    pgt__conn_update_reading(c);
}

/* Client bytes after the startup packet. */
void pgt__pass_client(pgt_session_t *s, const uint8_t *data, size_t len)
{
    conn_t *c = &s->client;
    if (s->discard > 0) {
        size_t n = s->discard < len ? (size_t)s->discard : len;
        s->discard -= n;
        data += n;
        len -= n;
        if (len == 0)
            return;
    }
    if (!s->explaining && c->pend_len == 0) {
        feed_client(s, data, len);
        return;
    }
    if (pgt__pend_append(c, data, len) != 0) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    if (s->explaining) {
        pgt__hold_reading(s);
        return;
    }
    size_t n;
    uint8_t *buf = pgt__pend_take(c, &n);
    feed_client(s, buf, n);
    free(buf);
}

/* Server bytes framed, metered and forwarded. While a statement cancelled
 * for a budget runs, ErrorResponses are taken whole (a partial one waits
 * in server.pend) so that its cancel error can be replaced. */
void pgt__relay_server(pgt_session_t *s, const uint8_t *data, size_t len)
{
    pgt_framer_t *f = &s->server.framer;
    for (;;) {
        int rc = pgt_framer_feed(f, data, len, server_msg_cb, s);
        if (rc < 0) {
            pgt__session_fail(s, "08006", "pgtally: invalid message from upstream %s",
                              s->proxy->upstream_name);
            return;
        }
        size_t upto = rc == 0 ? len : rc == PGT_WIRE_STOPPED ? f->msg_start : f->stopped_at;
        flush_early(s);
        pgt__conn_send(&s->client, data, upto);
        if (rc == 0)
            return;
        if (rc == PGT_WIRE_PARTIAL) {
            if (pgt__pend_append(&s->server, data + upto, len - upto) != 0)
                pgt__session_fail(s, "53200", "pgtally: out of memory");
            return;
        }
        if (s->subst)
            pgt__conn_send(&s->client, s->subst, s->subst_len);
        free(s->subst);
        s->subst = NULL;
        data += f->stopped_at;
        len -= f->stopped_at;
    }
}

/* Server bytes after login. */
static void pass_server(pgt_session_t *s, const uint8_t *data, size_t len)
{
    conn_t *c = &s->server;
    if (c->pend_len == 0) {
        pgt__relay_server(s, data, len);
    } else if (pgt__pend_append(c, data, len) != 0) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    } else {
        size_t n;
        uint8_t *buf = pgt__pend_take(c, &n);
        pgt__relay_server(s, buf, n);
        free(buf);
    }
    if (s->drain && s->state == ST_IDLE)
        pgt__session_fail(s, "57P01", "terminating connection because pgtally is shutting down");
}

/* ---- startup ------------------------------------------------------------ */

static void begin_client_tls(pgt_session_t *s)
{
    s->client.tls = pgt_tls_new(s->proxy->client_ctx, true, NULL);
    if (!s->client.tls) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    set_state(s, ST_CLIENT_TLS);
}

/* Keeps who the client is, for logs and metering. */
static int set_names(pgt_session_t *s, const pgt_startup_t *st)
{
    size_t ul = strlen(st->user) + 1, dl = strlen(st->database) + 1;
    size_t al = strlen(st->application_name) + 1;
    s->names = malloc(ul + dl + al);
    if (!s->names)
        return -1;
    memcpy(s->names, st->user, ul);
    memcpy(s->names + ul, st->database, dl);
    memcpy(s->names + ul + dl, st->application_name, al);
    s->user = s->names;
    s->database = s->names + ul;
    s->app = s->names + ul + dl;
    return 0;
}

/* Handles one whole startup-phase packet at the start of client.pend. */
static void startup_packet(pgt_session_t *s, size_t len)
{
    pgt_proxy_t *p = s->proxy;
    pgt_startup_t st;
    pgt_startup_error_t err;
    if (pgt_wire_startup_parse(s->client.pend, len, &st, &err) != 0) {
        pgt__session_fail(s, err.sqlstate, "%s", err.message);
        return;
    }
    switch (st.code) {
    case PGT_CODE_SSL: {
        /* Nothing may follow an SSLRequest before the answer; bytes that do
         * were not protected by TLS (CVE-2021-23214). */
        if (s->client.pend_len != len || s->client.tls) {
            pgt__session_fail(s, "08P01", "received unencrypted data after SSL request");
            return;
        }
        pgt__pend_consume(&s->client, len);
        bool offer = p->client_ctx && p->cfg->client_tls != PGT_CLIENT_TLS_DISABLE;
        pgt__conn_raw_send(&s->client, (const uint8_t *)(offer ? "S" : "N"), 1);
        if (offer)
            begin_client_tls(s);
        return;
    }
    case PGT_CODE_GSSENC:
        /* pgtally does not terminate GSSAPI encryption; libpq then falls
         * back to TLS or plain. */
        pgt__pend_consume(&s->client, len);
        pgt__conn_raw_send(&s->client, (const uint8_t *)"N", 1);
        return;
    case PGT_CODE_CANCEL: {
        pgt_session_t *target = pgt_cancel_map_get(p->cancel_map, st.cancel_pid, st.cancel_key);
        if (target)
            pgt_cancel_forward(p->loop, &target->upstream_addr, s->client.pend);
        /* A cancel that arrives while pgtally's EXPLAIN runs stops the
         * EXPLAIN; the client's Query, still held, is then not sent. */
        if (target && target->explaining)
            target->cancel_requested = true;
        PGT_INFO("cancel_request", "session=C-%llu pid=%u result=%s", (unsigned long long)s->id,
                 st.cancel_pid, target ? "forwarded" : "unknown_key");
        pgt__session_close(s, "cancel_request");
        return;
    }
    default:
        break;
    }
    if (p->cfg->client_tls == PGT_CLIENT_TLS_REQUIRE && !s->client.tls) {
        pgt__session_fail(
            s, "28000",
            "pgtally requires TLS (client_tls = require); connect with sslmode=require");
        return;
    }
    if (set_names(s, &st) != 0) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    PGT_INFO("session_start", "session=C-%llu user=%s db=%s app=\"%s\" addr=%s tls=%s",
             (unsigned long long)s->id, s->user, s->database, s->app, s->addr,
             s->client.tls ? pgt_tls_version(s->client.tls) : "off");
    if (p->draining) {
        pgt__session_fail(s, "57P03", "pgtally is shutting down");
        return;
    }
    if (pgt__console_startup(s, &st, len) != 0)
        return;
    /* The packet stays in pend until it can be sent upstream unchanged. */
    pgt_framer_init(&s->client.framer, PREAUTH_MAX_MESSAGE);
    connect_upstream(s);
}

static void startup_data(pgt_session_t *s, const uint8_t *data, size_t len)
{
    conn_t *c = &s->client;
    if (pgt__pend_append(c, data, len) != 0) {
        pgt__session_fail(s, "53200", "pgtally: out of memory");
        return;
    }
    while (s->state == ST_STARTUP && c->pend_len >= 4) {
        uint32_t plen = pgt_be32(c->pend);
        /* Reject a bad length as soon as it is read, as PostgreSQL does:
         * it logs "invalid length of startup packet" (a COMMERROR, which
         * never reaches the client) and closes without a word. */
        if (plen < 8 || plen > (uint32_t)s->proxy->cfg->max_startup_packet_size) {
            PGT_INFO("startup_rejected",
                     "session=C-%llu addr=%s length=%d allowed=8..%d reason=\"invalid length of "
                     "startup packet\"",
                     (unsigned long long)s->id, s->addr, (int32_t)plen,
                     s->proxy->cfg->max_startup_packet_size);
            pgt__session_close(s, "invalid_startup_length");
            return;
        }
        if (c->pend_len < plen)
            return;
        startup_packet(s, plen);
    }
}

/* ---- dispatch ------------------------------------------------------------ */

static void on_data(pgt_session_t *s, conn_t *c, const uint8_t *data, size_t len)
{
    bool from_client = c == &s->client;
    switch (s->state) {
    case ST_STARTUP:
        if (from_client)
            startup_data(s, data, len);
        break;
    case ST_UPSTREAM_TLS_REQUEST:
        if (!from_client)
            upstream_tls_answer(s, data, len);
        break;
    case ST_AUTH:
        if (from_client)
            auth_client(s, data, len);
        else
            auth_data(s, data, len);
        break;
    case ST_IDLE:
    case ST_QUERY:
    case ST_COPY:
        if (from_client)
            pgt__pass_client(s, data, len);
        else if (s->explaining || s->refusing)
            pgt__explain_data(s, data, len);
        else
            pass_server(s, data, len);
        break;
    case ST_CONSOLE:
        if (from_client)
            pgt__console_input(s, data, len);
        break;
    case ST_CONNECTING:
    case ST_UPSTREAM_TLS:
    case ST_CLIENT_TLS:
        /* A client that talks before login is relayed keeps its bytes in
         * order behind the startup packet. */
        if (from_client && pgt__pend_append(c, data, len) != 0)
            pgt__session_fail(s, "53200", "pgtally: out of memory");
        else if (!from_client)
            pgt__session_fail(s, "08006", "pgtally: unexpected data from upstream %s",
                              s->proxy->upstream_name);
        break;
    case ST_CLOSING:
        break;
    }
}

static void tls_ready(pgt_session_t *s, conn_t *c)
{
    PGT_DEBUG("tls_ready", "session=C-%llu side=%s version=%s", (unsigned long long)s->id,
              c == &s->client ? "client" : "server", pgt_tls_version(c->tls));
    if (c == &s->client)
        set_state(s, ST_STARTUP);
    else
        send_startup_packet(s);
}

/* Runs received ciphertext through OpenSSL and hands on the plaintext. */
static void tls_input(pgt_session_t *s, conn_t *c, const uint8_t *data, size_t len)
{
    if (pgt_tls_feed(c->tls, data, len) != 0) {
        pgt__session_close(s, "tls_error");
        return;
    }
    if (!pgt_tls_ready(c->tls)) {
        int rc = pgt_tls_handshake(c->tls);
        pgt__conn_flush_tls(c);
        if (rc == PGT_TLS_ERROR) {
            PGT_WARN("tls_handshake_failed", "session=C-%llu side=%s error=\"%s\"",
                     (unsigned long long)s->id, c == &s->client ? "client" : "server",
                     pgt_tls_error(c->tls));
            if (c == &s->server)
                pgt__session_fail(s, "08006", "pgtally: TLS with upstream %s failed: %s",
                                  s->proxy->upstream_name, pgt_tls_error(c->tls));
            else
                pgt__session_close(s, "client_tls_failed");
            return;
        }
        if (rc == PGT_TLS_AGAIN)
            return;
        tls_ready(s, c);
    }
    while (s->state != ST_CLOSING) {
        int n = pgt_tls_read(c->tls, plain_buf, sizeof(plain_buf));
        if (n == PGT_TLS_AGAIN)
            break;
        if (n < 0) {
            pgt__session_close(s, c == &s->client ? "client_tls_closed" : "server_tls_closed");
            return;
        }
        on_data(s, c, plain_buf, (size_t)n);
    }
    if (c->tls && s->state != ST_CLOSING)
        pgt__conn_flush_tls(c);
}

static void on_eof(pgt_session_t *s, conn_t *c, ssize_t err)
{
    if (c == &s->client) {
        send_terminate(s);
        pgt__session_close(s, err == UV_EOF ? "client_closed" : "client_error");
        return;
    }
    /* The server went away. Its own FATAL, if any, has been passed on. */
    if (s->server_fatal || s->client_terminated) {
        pgt__session_close(s, "server_closed");
        return;
    }
    pgt__session_fail(s, "08006", "pgtally: lost connection to upstream server %s: %s",
                      s->proxy->upstream_name,
                      err == UV_EOF ? "server closed the connection" : uv_strerror((int)err));
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = (char *)read_buf;
    buf->len = sizeof(read_buf);
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = st->data;
    pgt_session_t *s = c->s;
    if (nread == 0 || s->state == ST_CLOSING)
        return;
    if (nread < 0) {
        on_eof(s, c, nread);
        return;
    }
    if (c->tls)
        tls_input(s, c, (const uint8_t *)buf->base, (size_t)nread);
    else
        on_data(s, c, (const uint8_t *)buf->base, (size_t)nread);
}

/* ---- public API ------------------------------------------------------------ */

pgt_session_t *pgt_session_new(pgt_proxy_t *p)
{
    pgt_session_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    /* The names of pgtally's own statements (pgt__own_name): without
     * random bytes, no session, rather than names a client could guess. */
    if (RAND_bytes(s->name_key, (int)sizeof(s->name_key)) != 1) {
        free(s);
        return NULL;
    }
    s->proxy = p;
    s->id = ++p->next_session_id;
    pgt_conv_init(&s->conv);
    s->state = ST_STARTUP;
    s->client.s = s;
    s->server.s = s;
    uv_tcp_init(p->loop, &s->client.tcp);
    s->client.tcp.data = &s->client;
    s->client.open = true;
    uv_timer_init(p->loop, &s->timer);
    s->timer.data = s;
    s->open_conns = 1;
    pgt_framer_init(&s->client.framer, PREAUTH_MAX_MESSAGE);
    pgt_framer_init(&s->server.framer, INT32_MAX);
    s->next = p->sessions;
    if (p->sessions)
        p->sessions->prev = s;
    p->sessions = s;
    p->nclients++;
    pgt_metrics_sessions_add(p->metrics, 1);
    return s;
}

uv_stream_t *pgt_session_client_stream(pgt_session_t *s)
{
    return (uv_stream_t *)&s->client.tcp;
}

static void describe_peer(pgt_session_t *s)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&s->client.tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, host, sizeof(host));
            port = ntohs(a->sin6_port);
        } else if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, host, sizeof(host));
            port = ntohs(a->sin_port);
        }
    }
    snprintf(s->addr, sizeof(s->addr), "%s:%d", host, port);
}

void pgt_session_begin(pgt_session_t *s)
{
    describe_peer(s);
    uv_tcp_nodelay(&s->client.tcp, 1);
    uv_timer_start(&s->timer, timer_cb, (uint64_t)s->proxy->cfg->startup_timeout_ms, 0);
    s->client.want_read = true;
    pgt__conn_update_reading(&s->client);
}

void pgt_session_refuse(pgt_session_t *s, const char *sqlstate, const char *message)
{
    describe_peer(s);
    pgt__session_fail(s, sqlstate, "%s", message);
}

void pgt_session_drain(pgt_session_t *s)
{
    switch (s->state) {
    case ST_CLOSING:
        return;
    case ST_CONSOLE:
    case ST_IDLE:
        if (!s->explaining && s->client.pend_len == 0) {
            pgt__session_fail(s, "57P01",
                              "terminating connection because pgtally is shutting down");
            return;
        }
        s->drain = true;
        return;
    case ST_QUERY:
    case ST_COPY:
        s->drain = true;
        return;
    default:
        pgt__session_fail(s, "57P03", "pgtally is shutting down");
        return;
    }
}

void pgt_session_kill(pgt_session_t *s)
{
    if (s->state == ST_CLOSING) {
        pgt__conn_close_now(&s->client);
        pgt__conn_close_now(&s->server);
        return;
    }
    pgt__session_fail(s, "57P01", "terminating connection because pgtally is shutting down");
    pgt__conn_close_now(&s->client);
    pgt__conn_close_now(&s->server);
}

pgt_session_t *pgt_session_next(pgt_session_t *s)
{
    return s->next;
}
