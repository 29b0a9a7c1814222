/* Delivery of the daily report with libcurl: the Slack rendering POSTed to
 * an incoming webhook, and a multipart/alternative e-mail (text and HTML)
 * over SMTP with STARTTLS or SMTPS. See include/pgtally/deliver.h; the
 * once-only bookkeeping in reports_sent is in deliver_once.c. */
#include "pgtally/deliver.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "pgtally/names.h"
#include "pgtally/period.h"
#include "pgtally/report.h"

#define CONNECT_TIMEOUT_MS 30000L
#define TRANSFER_TIMEOUT_MS 120000L
#define BODY_MAX 1024  /* bytes of a webhook's answer kept for messages */
#define ANSWER_MAX 512 /* bytes of an SMTP server's last line kept */
#define WORD_BYTES 45  /* subject bytes per RFC 2047 encoded word: 60 base64 chars */

PGT_NAMES_DEFINE(PGT_CHANNEL_MAP, pgt_channel_t, pgt_channel_name, pgt_channel_parse)

void pgt_channel_list(int mask, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (int c = 0; c < PGT_CHANNEL_COUNT; c++)
        if (mask & (1 << c) && used < len)
            used += (size_t)snprintf(out + used, len - used, "%s%s", used ? "," : "",
                                     pgt_channel_name((pgt_channel_t)c));
    if (!used)
        snprintf(out, len, "none");
}

bool pgt_channel_configured(const pgt_config_t *cfg, pgt_channel_t c)
{
    if (c == PGT_CHANNEL_SLACK)
        return cfg->report_slack_webhook_url != NULL;
    if (c == PGT_CHANNEL_EMAIL)
        return cfg->report_smtp_url && cfg->report_mail_from && cfg->report_mail_to_count > 0;
    return false;
}

int pgt_channel_check(const pgt_config_t *cfg, pgt_channel_t c, char *err, size_t errlen)
{
    if (pgt_channel_configured(cfg, c))
        return 0;
    snprintf(err, errlen, "%s is not configured: set %s", pgt_channel_name(c),
             c == PGT_CHANNEL_SLACK ? "[report] slack_webhook_url or slack_webhook_url_file"
                                    : "[report] smtp_url, mail_from and mail_to");
    return -1;
}

/* ---- libcurl -------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int pgt_deliver_init(char *err, size_t errlen)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        snprintf(err, errlen, "libcurl: %s", curl_easy_strerror(curl_init_rc));
        return -1;
    }
    return 0;
}

/* A bounded buffer for what a server answers. */
typedef struct capped {
    char *buf;  /* NUL-terminated text */
    size_t cap; /* size of buf */
    size_t len; /* bytes in buf */
} capped_t;

/* CURLOPT_WRITEFUNCTION: keeps the first bytes of a webhook's answer. */
static size_t body_cb(char *data, size_t size, size_t n, void *arg)
{
    capped_t *c = arg;
    size_t bytes = size * n, room = c->cap - 1 - c->len;
    size_t take = bytes < room ? bytes : room;
    memcpy(c->buf + c->len, data, take);
    c->len += take;
    c->buf[c->len] = '\0';
    return bytes;
}

/* What an SMTP server last said. */
typedef struct replies {
    char last[ANSWER_MAX];  /* its last reply line */
    char error[ANSWER_MAX]; /* its last 4xx or 5xx reply line, or "" */
} replies_t;

/* CURLOPT_HEADERFUNCTION: for SMTP, libcurl hands every server reply line
 * here. The last one is kept, and the last error apart, since after a
 * failure curl still says QUIT and the server's "221 Bye" comes last. */
static size_t reply_cb(char *data, size_t size, size_t n, void *arg)
{
    replies_t *r = arg;
    size_t bytes = size * n, len = bytes;
    while (len && (data[len - 1] == '\r' || data[len - 1] == '\n'))
        len--;
    if (len >= ANSWER_MAX)
        len = ANSWER_MAX - 1;
    if (len) {
        memcpy(r->last, data, len);
        r->last[len] = '\0';
        if (data[0] == '4' || data[0] == '5')
            memcpy(r->error, r->last, len + 1);
    }
    return bytes;
}

/* CURLOPT_XFERINFOFUNCTION: ends the transfer when the stop flag is set. */
static int progress_cb(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    const atomic_bool *stop = arg;
    return atomic_load(stop) ? 1 : 0;
}

/* Options every transfer shares: time limits, the CA file, the stop flag,
 * the error buffer (CURL_ERROR_SIZE bytes). */
static void common_opts(CURL *h, const pgt_config_t *cfg, const atomic_bool *stop, char *errbuf)
{
    errbuf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, TRANSFER_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "pgtally/" PGTALLY_VERSION);
    if (cfg->report_ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, cfg->report_ca_file);
    if (stop) {
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress_cb);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)stop);
    }
}

/* What curl says about a failed transfer: its error buffer, or the text of
 * the code. */
static const char *curl_why(CURLcode rc, const char *errbuf)
{
    if (rc == CURLE_ABORTED_BY_CALLBACK)
        return "interrupted: pgtally is stopping";
    return errbuf[0] ? errbuf : curl_easy_strerror(rc);
}

/* Whether a transfer that failed with rc before the server could answer
 * may succeed when tried again: the name did not resolve, the connection
 * failed, broke or timed out. Certificates, protocols, settings and a stop
 * are not. */
static bool curl_transient(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return true;
    default:
        return false;
    }
}

/* ---- Slack ---------------------------------------------------------------- */

/* POSTs payload (JSON) to the webhook. Returns 0 on a 2xx answer with it in
 * answer, or -1 with the status and body (or curl's error) in err and
 * whether it is worth trying again in *transient: a connection error, or
 * HTTP 5xx or 429 (Too Many Requests); any other status, such as the 404
 * of a webhook that was removed, is not. The URL is a secret and never
 * appears in answer or err. */
static int send_slack(const pgt_config_t *cfg, const char *payload, const atomic_bool *stop,
                      char *answer, size_t alen, bool *transient, char *err, size_t errlen)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (!h || !hdrs) {
        snprintf(err, errlen, "out of memory");
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(h);
        return -1;
    }
    char errbuf[CURL_ERROR_SIZE], body[BODY_MAX];
    capped_t got = {.buf = body, .cap = sizeof(body)};
    body[0] = '\0';
    common_opts(h, cfg, stop, errbuf);
    curl_easy_setopt(h, CURLOPT_URL, cfg->report_slack_webhook_url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &got);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    int ret = -1;
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "webhook: %s", curl_why(rc, errbuf));
        *transient = curl_transient(rc);
    } else if (status < 200 || status > 299) {
        snprintf(err, errlen, "webhook answered HTTP %ld: %s", status, body[0] ? body : "(empty)");
        *transient = status >= 500 || status == 429;
    } else {
        snprintf(answer, alen, "HTTP %ld: %s", status, body[0] ? body : "(empty)");
        ret = 0;
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return ret;
}

/* ---- E-mail --------------------------------------------------------------- */

/* An RFC 5322 date of unix microseconds us in local time, e.g.
 * "Fri, 27 Nov 2026 09:00:00 +0100" (English names whatever the locale). */
static void mail_date(int64_t us, char *buf, size_t len)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    localtime_r(&t, &tm);
    long off = tm.tm_gmtoff / 60;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    snprintf(buf, len, "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, sign, off / 60,
             off % 60);
}

/* A Message-ID in the sender's domain: "<date.random@domain>". */
static void message_id(const char *from, int64_t us, char *buf, size_t len)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = (uint64_t)us ^ ((uint64_t)getpid() << 32);
    const char *at = strrchr(from, '@');
    snprintf(buf, len, "<%" PRId64 ".%016" PRIx64 "@%s>", us / 1000000, r,
             at ? at + 1 : "pgtally.invalid");
}

/* The Subject header for subject: as it is when it is printable ASCII;
 * otherwise RFC 2047 encoded words (UTF-8, base64) of at most 75
 * characters, never splitting a character, folded onto continuation lines.
 * Control characters become spaces, so nothing can end the header early.
 * Returns a malloc'd "Subject: ..." or NULL when out of memory. */
static char *subject_header(const char *subject)
{
    size_t n = strlen(subject);
    char *clean = malloc(n + 1);
    char *out = malloc(n * 3 + 128);
    if (!clean || !out) {
        free(clean);
        free(out);
        return NULL;
    }
    bool ascii = true;
    for (size_t i = 0; i <= n; i++) {
        unsigned char ch = (unsigned char)subject[i];
        clean[i] = i < n && (ch < ' ' || ch == 0x7f) ? ' ' : (char)ch;
        ascii &= ch < 0x80;
    }
    char *p = out + sprintf(out, "Subject:");
    if (ascii) {
        sprintf(p, " %s", clean);
        free(clean);
        return out;
    }
    for (size_t i = 0; i < n;) {
        size_t take = n - i < WORD_BYTES ? n - i : WORD_BYTES;
        /* Back off to the start of a UTF-8 character. */
        for (int k = 0; k < 3 && i + take < n && ((unsigned char)clean[i + take] & 0xC0) == 0x80;
             k++)
            take--;
        p += sprintf(p, "%s=?UTF-8?B?", i ? "\r\n " : " ");
        p += EVP_EncodeBlock((unsigned char *)p, (const unsigned char *)clean + i, (int)take);
        p += sprintf(p, "?=");
        i += take;
    }
    free(clean);
    return out;
}

/* The message headers (curl adds none of its own but MIME's): From, To,
 * Subject, Date, Message-ID, MIME-Version, and the top-level
 * multipart/alternative type (curl adds the boundary). NULL when out of
 * memory. */
static struct curl_slist *mail_headers(const pgt_config_t *cfg, const char *subject,
                                       bool alternative)
{
    char line[400], date[64], id[160];
    int64_t now = pgt_clock_us();
    mail_date(now, date, sizeof(date));
    message_id(cfg->report_mail_from, now, id, sizeof(id));
    struct curl_slist *h = NULL, *ok = NULL;
    char *subj = subject_header(subject);
    /* To: every recipient, comma-separated (addresses were checked at load). */
    size_t tolen = sizeof("To: ");
    for (size_t i = 0; i < cfg->report_mail_to_count; i++)
        tolen += strlen(cfg->report_mail_to[i]) + 2;
    char *to = malloc(tolen);
    if (to) {
        size_t used = (size_t)sprintf(to, "To: ");
        for (size_t i = 0; i < cfg->report_mail_to_count; i++)
            used += (size_t)sprintf(to + used, "%s%s", i ? ", " : "", cfg->report_mail_to[i]);
    }
    snprintf(line, sizeof(line), "From: %s", cfg->report_mail_from);
    ok = subj && to ? (h = curl_slist_append(h, line)) : NULL;
    ok = ok ? (h = curl_slist_append(h, to)) : NULL;
    ok = ok ? (h = curl_slist_append(h, subj)) : NULL;
    snprintf(line, sizeof(line), "Date: %s", date);
    ok = ok ? (h = curl_slist_append(h, line)) : NULL;
    snprintf(line, sizeof(line), "Message-ID: %s", id);
    ok = ok ? (h = curl_slist_append(h, line)) : NULL;
    ok = ok ? (h = curl_slist_append(h, "MIME-Version: 1.0")) : NULL;
    ok = ok ? (h = curl_slist_append(h, alternative ? "Content-Type: multipart/alternative"
                                                    : "Content-Type: multipart/mixed"))
            : NULL;
    free(subj);
    free(to);
    if (!ok) {
        curl_slist_free_all(h);
        return NULL;
    }
    return h;
}

/* s with every line ending as CRLF, as mail wants it: the quoted-printable
 * encoder keeps CRLF line breaks but encodes a bare LF as =0A. malloc'd,
 * NULL when out of memory. */
static char *crlf(const char *s)
{
    size_t n = strlen(s), lf = 0;
    for (size_t i = 0; i < n; i++)
        lf += s[i] == '\n';
    char *out = malloc(n + lf + 1), *p = out;
    for (size_t i = 0; out && i < n; i++) {
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
            *p++ = '\r';
        *p++ = s[i];
    }
    if (out)
        *p = '\0';
    return out;
}

/* The two alternatives, plain text first (RFC 2046: the preferred one
 * last), each quoted-printable so that long HTML lines survive SMTP; or,
 * when html is NULL, the plain text alone. */
static curl_mime *mail_body(CURL *h, const char *text, const char *html)
{
    curl_mime *mime = curl_mime_init(h);
    curl_mimepart *plain = mime ? curl_mime_addpart(mime) : NULL;
    bool plain_ok = plain && curl_mime_data(plain, text, CURL_ZERO_TERMINATED) == CURLE_OK &&
                    curl_mime_type(plain, "text/plain; charset=utf-8") == CURLE_OK &&
                    curl_mime_encoder(plain, "quoted-printable") == CURLE_OK;
    if (plain_ok && !html)
        return mime;
    curl_mimepart *rich = plain_ok ? curl_mime_addpart(mime) : NULL;
    if (!rich || curl_mime_data(rich, html, CURL_ZERO_TERMINATED) != CURLE_OK ||
        curl_mime_type(rich, "text/html; charset=utf-8") != CURLE_OK ||
        curl_mime_encoder(rich, "quoted-printable") != CURLE_OK) {
        curl_mime_free(mime);
        return NULL;
    }
    return mime;
}

/* Envelope sender and recipients, "<addr>" as SMTP wants them. */
static struct curl_slist *recipients(const pgt_config_t *cfg)
{
    struct curl_slist *r = NULL;
    char addr[300];
    for (size_t i = 0; i < cfg->report_mail_to_count; i++) {
        snprintf(addr, sizeof(addr), "<%s>", cfg->report_mail_to[i]);
        struct curl_slist *next = curl_slist_append(r, addr);
        if (!next) {
            curl_slist_free_all(r);
            return NULL;
        }
        r = next;
    }
    return r;
}

/* SMTP options: the server, TLS (STARTTLS required for smtp:// unless
 * smtp_tls = none; smtps:// is TLS from the start), AUTH, the envelope. */
static void smtp_opts(CURL *h, const pgt_config_t *cfg, struct curl_slist *rcpt, char *from,
                      size_t fromlen)
{
    curl_easy_setopt(h, CURLOPT_URL, cfg->report_smtp_url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    bool smtps = strncasecmp(cfg->report_smtp_url, "smtps://", 8) == 0;
    if (!smtps && !cfg->report_smtp_tls_none)
        curl_easy_setopt(h, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
    if (cfg->report_smtp_user) {
        curl_easy_setopt(h, CURLOPT_USERNAME, cfg->report_smtp_user);
        curl_easy_setopt(h, CURLOPT_PASSWORD, cfg->report_smtp_password);
    }
    snprintf(from, fromlen, "<%s>", cfg->report_mail_from);
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
}

/* Sends the e-mail (html NULL: plain text only). Returns 0 with the server's last line in answer,
 * or -1 with curl's error and the server's last line in err, and in *transient whether it is worth
 * trying again. A reply code decides that when the server refused something (RFC 5321
 * section 4.2.1: 4yz is a transient negative completion, 5yz a permanent one); otherwise curl's
 * error does. */
static int send_mail(const pgt_config_t *cfg, const char *subject, const char *text,
                     const char *html, const atomic_bool *stop, char *answer, size_t alen,
                     bool *transient, char *err, size_t errlen)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = h ? mail_headers(cfg, subject, html != NULL) : NULL;
    struct curl_slist *rcpt = hdrs ? recipients(cfg) : NULL;
    curl_mime *mime = rcpt ? mail_body(h, text, html) : NULL;
    int ret = -1;
    if (!mime) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    char errbuf[CURL_ERROR_SIZE], from[300];
    replies_t said = {.last = "", .error = ""};
    common_opts(h, cfg, stop, errbuf);
    smtp_opts(h, cfg, rcpt, from, sizeof(from));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_MIMEPOST, mime);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, reply_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &said);
    CURLcode rc = curl_easy_perform(h);
    const char *reply = said.error[0] ? said.error : said.last[0] ? said.last : "(none)";
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "smtp: %s; server's last answer: %s", curl_why(rc, errbuf), reply);
        *transient = rc != CURLE_ABORTED_BY_CALLBACK &&
                     (said.error[0] ? said.error[0] == '4' : curl_transient(rc));
    } else {
        snprintf(answer, alen, "%s", said.last[0] ? said.last : "(none)");
        ret = 0;
    }
done:
    curl_mime_free(mime);
    curl_slist_free_all(rcpt);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return ret;
}

/* ---- One channel ---------------------------------------------------------- */

/* Renders report as format f, or sets err. */
static char *render(const json_t *report, pgt_report_format_t f, char *err, size_t errlen)
{
    char why[256] = "";
    char *s = pgt_report_render(report, f, NULL, why, sizeof(why));
    if (!s)
        snprintf(err, errlen, "rendering %s: %s", pgt_report_format_name(f),
                 why[0] ? why : "failed");
    return s;
}

int pgt_deliver_channel(const pgt_config_t *cfg, pgt_channel_t c, const json_t *report,
                        const atomic_bool *stop, char *answer, size_t alen, bool *transient,
                        char *err, size_t errlen)
{
    answer[0] = '\0';
    *transient = false;
    if (pgt_channel_check(cfg, c, err, errlen) != 0 || pgt_deliver_init(err, errlen) != 0)
        return -1;
    int rc = -1;
    if (c == PGT_CHANNEL_SLACK) {
        char *payload = render(report, PGT_REPORT_FORMAT_SLACK, err, errlen);
        if (payload)
            rc = send_slack(cfg, payload, stop, answer, alen, transient, err, errlen);
        free(payload);
        return rc;
    }
    char *text = render(report, PGT_REPORT_FORMAT_TEXT, err, errlen);
    char *html = text ? render(report, PGT_REPORT_FORMAT_HTML, err, errlen) : NULL;
    char *subject = html ? pgt_report_subject(report) : NULL;
    char *text_crlf = subject ? crlf(text) : NULL;
    char *html_crlf = text_crlf ? crlf(html) : NULL;
    if (html && !html_crlf)
        snprintf(err, errlen, "out of memory");
    if (html_crlf)
        rc = send_mail(cfg, subject, text_crlf, html_crlf, stop, answer, alen, transient, err,
                       errlen);
    free(text);
    free(html);
    free(subject);
    free(text_crlf);
    free(html_crlf);
    return rc;
}

int pgt_deliver(const pgt_config_t *cfg, pgt_channel_t c, const json_t *report, char *err,
                size_t errlen)
{
    char answer[ANSWER_MAX];
    bool transient;
    return pgt_deliver_channel(cfg, c, report, NULL, answer, sizeof(answer), &transient, err,
                               errlen);
}

int pgt_deliver_text(const pgt_config_t *cfg, pgt_channel_t c, const char *subject,
                     const char *text, const atomic_bool *stop, char *answer, size_t alen,
                     bool *transient, char *err, size_t errlen)
{
    answer[0] = '\0';
    *transient = false;
    if (pgt_channel_check(cfg, c, err, errlen) != 0 || pgt_deliver_init(err, errlen) != 0)
        return -1;
    int rc = -1;
    if (c == PGT_CHANNEL_SLACK) {
        /* Slack's text: the subject in bold, then the body, mrkdwn-escaped. */
        pgt_buf_t b = {0};
        pgt_buf_putc(&b, '*');
        pgt_slack_escape(&b, subject);
        pgt_buf_puts(&b, "*\n");
        pgt_slack_escape(&b, text);
        json_t *payload = b.failed ? NULL : json_pack("{s:s}", "text", b.s ? b.s : "");
        char *body = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
        if (body)
            rc = send_slack(cfg, body, stop, answer, alen, transient, err, errlen);
        else
            snprintf(err, errlen, "out of memory (or text that is not UTF-8)");
        free(body);
        json_decref(payload);
        pgt_buf_free(&b);
        return rc;
    }
    char *text_crlf = crlf(text);
    if (text_crlf)
        rc = send_mail(cfg, subject, text_crlf, NULL, stop, answer, alen, transient, err, errlen);
    else
        snprintf(err, errlen, "out of memory");
    free(text_crlf);
    return rc;
}

/* ---- Settings -------------------------------------------------------------- */

static int copy_string(char **dst, const char *src)
{
    if (!src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

pgt_config_t *pgt_deliver_config_copy(const pgt_config_t *src)
{
    pgt_config_t *c = pgt_config_new();
    if (!c)
        return NULL;
    memcpy(c->currency, src->currency, sizeof(c->currency));
    free(c->timezone);
    c->timezone = NULL;
    c->report_top = src->report_top;
    c->report_show_literals = src->report_show_literals;
    c->report_regression_min_micro = src->report_regression_min_micro;
    c->report_duplicate_min_runs = src->report_duplicate_min_runs;
    c->report_time_min = src->report_time_min;
    c->report_catch_up_days = src->report_catch_up_days;
    c->report_retry_interval_ms = src->report_retry_interval_ms;
    c->report_smtp_tls_none = src->report_smtp_tls_none;
    c->alerts_channels = src->alerts_channels;
    c->alerts_batch_interval_ms = src->alerts_batch_interval_ms;
    int rc = copy_string(&c->timezone, src->timezone);
    rc |= copy_string(&c->instance, src->instance);
    rc |= copy_string(&c->report_slack_webhook_url, src->report_slack_webhook_url);
    rc |= copy_string(&c->report_smtp_url, src->report_smtp_url);
    rc |= copy_string(&c->report_smtp_user, src->report_smtp_user);
    rc |= copy_string(&c->report_smtp_password, src->report_smtp_password);
    rc |= copy_string(&c->report_mail_from, src->report_mail_from);
    rc |= copy_string(&c->report_ca_file, src->report_ca_file);
    char **to = calloc(src->report_mail_to_count + 1, sizeof(*to));
    for (size_t i = 0; to && i < src->report_mail_to_count; i++)
        rc |= copy_string(&to[i], src->report_mail_to[i]);
    if (to) {
        free(c->report_mail_to);
        c->report_mail_to = to;
        c->report_mail_to_count = src->report_mail_to_count;
    }
    if (rc != 0 || !to) {
        pgt_config_free(c);
        return NULL;
    }
    return c;
}
