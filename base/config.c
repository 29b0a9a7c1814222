/* Parsing and validation of pgtally's configuration. Every key is described
 * once in the keys[] table, which drives the INI reader, the command-line
 * flags and --help, so the three never disagree. */
#include "pgtally/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgtally/money.h"

#define ZONEINFO_DIR "/usr/share/zoneinfo"
#define ZONE_NAME_MAX 128

static const char *const client_tls_names[] = {
#define X(name, str) str,
    PGT_CLIENT_TLS_MAP(X)
#undef X
        NULL};

static const char *const upstream_tls_names[] = {
#define X(name, str) str,
    PGT_UPSTREAM_TLS_MAP(X)
#undef X
        NULL};

static const char *const log_level_names[] = {
#define X(name, str) str,
    PGT_LOG_LEVEL_MAP(X)
#undef X
        NULL};

const char *pgt_client_tls_name(pgt_client_tls_t v)
{
    return client_tls_names[v];
}

const char *pgt_upstream_tls_name(pgt_upstream_tls_t v)
{
    return upstream_tls_names[v];
}

static const pgt_config_key_t keys[] = {
    {"listen", "host:port", "address clients connect to (default 127.0.0.1:6433)"},
    {"upstream", "host:port", "the PostgreSQL server pgtally fronts (default 127.0.0.1:5432)"},
    {"client_tls", "disable, allow or require", "TLS towards clients (default disable)"},
    {"client_tls_cert_file", "a PEM file path", "certificate shown to TLS clients"},
    {"client_tls_key_file", "a PEM file path", "private key of client_tls_cert_file"},
    {"upstream_tls", "disable, prefer, require, verify-ca or verify-full",
     "TLS towards the server, like libpq's sslmode (default prefer)"},
    {"upstream_tls_ca_file", "a PEM file path", "CA certificates for verify-ca/verify-full"},
    {"upstream_tls_cert_file", "a PEM file path", "client certificate presented to the server"},
    {"upstream_tls_key_file", "a PEM file path", "key of upstream_tls_cert_file"},
    {"max_clients", "an integer from 1 to 1000000", "client connections at once (default 1000)"},
    {"startup_timeout", "a duration such as 60s, 500ms or 2m",
     "time a client has to log in (default 60s)"},
    {"max_startup_packet_size", "a size from 8 to 10000 bytes",
     "largest startup packet accepted (default 10000)"},
    {"max_message_size", "a size such as 1GB, 64MB or 1048576",
     "largest message a client may send after login (default 1GB)"},
    {"shutdown_timeout", "a duration such as 30s",
     "how long SIGTERM waits for running queries (default 30s)"},
    {"log_level", "debug, info, warning or error", "lowest level logged (default info)"},
    {"metering", "on or off", "meter and record every statement (default on)"},
    {"ledger", "a file path, or a postgresql:// URI or libpq conninfo",
     "SQLite ledger file (default pgtally.db next to the config file), or a PostgreSQL database"},
    {"instance", "a name of up to 63 characters",
     "this pgtally's name in a shared ledger (default host name:port)"},
    {"ledger.schema", "a PostgreSQL schema name of up to 63 characters",
     "schema of the PostgreSQL ledger's tables (default pgtally)"},
    {"ledger.spool", "a file path",
     "where records wait while the ledger is down (default: the SQLite file + .spool, or "
     "pgtally-<instance>.spool next to the config file for PostgreSQL)"},
    {"ledger.on_failure", "open or closed",
     "while the ledger cannot be written: keep serving (open) or refuse statements (closed)"},
    {"ledger.retention_days", "an integer from 0 to 36500", "days of history kept (default 90)"},
    {"estimate.mode", "explain, history or off",
     "estimate before running: in-band EXPLAIN where it pays, history only, or none"},
    {"estimate.cache_ttl", "a duration such as 300s",
     "how long a cheap, stable shape is estimated from history before it is explained again"},
    {"estimate.format", "json or text",
     "EXPLAIN output to ask for (text for engines without JSON)"},
    {"estimate.explain_above", "a duration such as 10ms",
     "shapes whose runs take longer are explained on every run (default 10ms)"},
    {"guard.max_estimated_rows", "a number of rows such as 1e9 or 500000000 (0 turns it off)",
     "refuse, before it runs, a statement whose plan has a node estimated at more rows (default "
     "0: off)"},
    {"guard.max_join_rows", "a number of rows such as 1e9 or 500000000 (0 turns it off)",
     "refuse, before it runs, a statement whose plan has a join estimated at more rows (default "
     "0: off)"},
    {"pricing.currency", "a 3-letter code such as USD", "currency of all amounts (default USD)"},
    {"pricing.per_compute_second", "an amount such as 0.0004",
     "price of one second of upstream compute (default 0.0004)"},
    {"pricing.per_gib_returned", "an amount such as 0.09",
     "price of one GiB sent to clients (default 0.09)"},
    {"pricing.per_query", "an amount such as 0.000001", "price per statement (default 0)"},
    {"timezone", "an IANA time zone name such as Europe/Berlin, or UTC",
     "time zone of budget periods: days, weeks (from Monday), months (default UTC)"},
    {"admin_conninfo", "a libpq connection string such as 'host=db user=pgtally'",
     "connection used to read role memberships for role budgets (default none)"},
    {"budget.contact", "any text, such as 'ask #data-platform'",
     "who to ask for more budget, shown in the hint of a refusal (default none)"},
    {"budget.notice_above", "an amount such as 0.10 (0 turns it off)",
     "statements estimated to cost more get a NOTICE with the estimate (default 0.10)"},
    {"budget.unknown_estimate", "run or refuse",
     "a statement whose cost is unknown before it runs, under a budget with a per-query cap: "
     "run it under the running check (run), or refuse it with 54000 (default run)"},
    {"budget.exempt_users", "user names separated by commas",
     "users no budget applies to (default none)"},
    {"budget.check_interval", "milliseconds from 50 to 5000, such as 250 or 1s",
     "how often running statements are checked against their budgets (default 250)"},
    {"budget.role_refresh", "a duration from 1s to 24h, such as 60s or 5m",
     "how often role memberships are read again (default 60s)"},
    {"report.time", "a local time HH:MM such as 09:00",
     "when yesterday's report is delivered, in the configured timezone (default 09:00)"},
    {"report.catch_up_days", "an integer from 0 to 365",
     "after downtime, undelivered reports of up to this many days are sent at start (default 3)"},
    {"report.retry_interval", "a duration from 100ms to 1h, such as 60s",
     "delay before a failed delivery is tried again; it doubles up to 1h (default 60s)"},
    {"report.slack_webhook_url", "an https:// URL (http:// for a local relay)",
     "Slack incoming webhook the daily report is posted to (default none)"},
    {"report.slack_webhook_url_file", "a readable file holding the webhook URL",
     "the webhook URL kept out of the config (default none)"},
    {"report.smtp_url", "smtp://host:587 (STARTTLS) or smtps://host:465",
     "mail server the daily report is sent through (default none)"},
    {"report.smtp_tls", "starttls or none",
     "for smtp:// URLs: require STARTTLS, or send in clear (default starttls)"},
    {"report.smtp_user", "a user name", "SMTP AUTH user (default none: no AUTH)"},
    {"report.smtp_password_file", "a readable file holding the password",
     "SMTP AUTH password, kept out of the config"},
    {"report.mail_from", "an address such as pgtally@example.com", "sender of the report e-mail"},
    {"report.mail_to", "addresses separated by commas", "recipients of the report e-mail"},
    {"report.ca_file", "a PEM file path",
     "CA certificates the SMTP and webhook servers are checked against (default the system's)"},
    {"report.top", "an integer from 1 to 50",
     "rows in each top list of the daily report: statements, users, shapes (default 10)"},
    {"report.show_literals", "false or true (off or on)",
     "reserved: the ledger keeps only normalized text, so reports show $1 placeholders "
     "either way (default false)"},
    {"report.regression_min_cost", "an amount such as 0.0001 (0 lists every regression)",
     "regressions per release list shapes whose mean cost under the newest release is above "
     "this (default 0.0001)"},
    {"report.duplicate_min_runs", "an integer from 1 to 1000000",
     "work done twice lists statements run with the same constants more than this many times "
     "in the day (default 3)"},
    {"alerts.channels", "slack, email (separated by commas), or none",
     "where budget alerts, refusal bursts and cancels are sent, through the [report] delivery "
     "settings (default: every channel [report] configures)"},
    {"alerts.batch_interval", "a duration from 1s to 1h, such as 60s",
     "refusals and cancels within this window from the first one go out as one message "
     "(default 60s)"},
    {"metrics.listen", "host:port such as 127.0.0.1:9187, or empty",
     "address of the Prometheus /metrics endpoint (default empty: off)"},
    {"metrics.max_label_values", "an integer from 1 to 100000",
     "distinct values kept per metric label (user, application, database); the rest count as "
     "'other' (default 100)"},
    {"admin.auth_database", "a database name of up to 63 bytes",
     "database the console's logins are checked against on the server (default postgres)"},
    {"admin.admin_users", "user names separated by commas",
     "users who may open the console (database pgtally) and run every command (default none)"},
    {"admin.stats_users", "user names separated by commas",
     "users who may open the console and run its SHOW commands only (default none)"},
    {NULL, NULL, NULL},
};

const pgt_config_key_t *pgt_config_keys(void)
{
    return keys;
}

pgt_config_t *pgt_config_new(void)
{
    pgt_config_t *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return NULL;
    cfg->listen_host = strdup("127.0.0.1");
    cfg->listen_port = 6433;
    cfg->upstream_host = strdup("127.0.0.1");
    cfg->upstream_port = 5432;
    cfg->client_tls = PGT_CLIENT_TLS_DISABLE;
    cfg->upstream_tls = PGT_UPSTREAM_TLS_PREFER;
    cfg->max_clients = 1000;
    cfg->startup_timeout_ms = 60000;
    cfg->max_startup_packet_size = PGT_STARTUP_PACKET_MAX;
    cfg->max_message_size = (int64_t)1 << 30;
    cfg->shutdown_timeout_ms = 30000;
    cfg->log_level = PGT_LOG_INFO;
    cfg->metering = 1;
    cfg->estimate_mode = PGT_ESTIMATE_EXPLAIN;
    cfg->estimate_cache_ttl_ms = 300000;
    cfg->estimate_explain_above_ms = 10;
    cfg->ledger_retention_days = 90;
    snprintf(cfg->currency, sizeof(cfg->currency), "USD");
    cfg->price_compute_second_micro = 400;
    cfg->price_gib_micro = 90000;
    cfg->price_query_micro = 0;
    cfg->timezone = strdup("UTC");
    cfg->admin_conninfo = strdup("");
    cfg->budget_contact = strdup("");
    cfg->budget_notice_above_micro = 100000;
    cfg->budget_exempt_users = calloc(1, sizeof(*cfg->budget_exempt_users));
    cfg->budget_check_interval_ms = 250;
    cfg->budget_role_refresh_ms = 60000;
    cfg->report_time_min = 9 * 60;
    cfg->report_catch_up_days = 3;
    cfg->report_retry_interval_ms = 60000;
    cfg->report_top = 10;
    cfg->alerts_channels = -1;
    cfg->alerts_batch_interval_ms = 60000;
    cfg->report_show_literals = 0;
    cfg->report_regression_min_micro = PGT_CONFIG_REGRESSION_MIN_MICRO;
    cfg->report_duplicate_min_runs = PGT_CONFIG_DUPLICATE_MIN_RUNS;
    cfg->metrics_max_label_values = 100;
    cfg->admin_auth_database = strdup("postgres");
    cfg->set_values = calloc(sizeof(keys) / sizeof(keys[0]), sizeof(*cfg->set_values));
    cfg->admin_users = calloc(1, sizeof(*cfg->admin_users));
    cfg->admin_stats_users = calloc(1, sizeof(*cfg->admin_stats_users));
    cfg->report_mail_to = calloc(1, sizeof(*cfg->report_mail_to));
    if (!cfg->report_mail_to || !cfg->listen_host || !cfg->upstream_host || !cfg->timezone ||
        !cfg->admin_conninfo || !cfg->budget_contact || !cfg->budget_exempt_users ||
        !cfg->admin_auth_database || !cfg->admin_users || !cfg->admin_stats_users ||
        !cfg->set_values) {
        pgt_config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* Frees a secret after overwriting it. NULL is allowed. */
static void free_secret(char *s)
{
    if (s)
        explicit_bzero(s, strlen(s));
    free(s);
}

/* Frees a list of n names. NULL is allowed. */
static void free_list(char **list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        free(list[i]);
    free(list);
}

void pgt_config_free(pgt_config_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free(cfg->listen_host);
    free(cfg->upstream_host);
    free(cfg->client_tls_cert_file);
    free(cfg->client_tls_key_file);
    free(cfg->upstream_tls_ca_file);
    free(cfg->upstream_tls_cert_file);
    free(cfg->upstream_tls_key_file);
    free_secret(cfg->ledger_path);
    free(cfg->ledger_schema);
    free(cfg->ledger_spool);
    free(cfg->instance);
    free(cfg->timezone);
    free(cfg->admin_conninfo);
    free(cfg->budget_contact);
    free_list(cfg->budget_exempt_users, cfg->budget_exempt_count);
    free_secret(cfg->report_slack_webhook_url);
    free(cfg->report_slack_url_file);
    free(cfg->report_smtp_url);
    free(cfg->report_smtp_user);
    free_secret(cfg->report_smtp_password);
    free(cfg->report_smtp_password_file);
    free(cfg->report_mail_from);
    free_list(cfg->report_mail_to, cfg->report_mail_to_count);
    free(cfg->report_ca_file);
    free(cfg->metrics_listen_host);
    free(cfg->admin_auth_database);
    for (size_t i = 0; cfg->set_values && i < sizeof(keys) / sizeof(keys[0]); i++)
        free_secret(cfg->set_values[i]);
    free(cfg->set_values);
    free_list(cfg->admin_users, cfg->admin_users_count);
    free_list(cfg->admin_stats_users, cfg->admin_stats_count);
    free(cfg);
}

static const pgt_config_key_t *find_key(const char *name)
{
    for (const pgt_config_key_t *k = keys; k->name; k++)
        if (strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

static int set_string(char **dst, const char *value)
{
    char *s = strdup(value);
    if (!s)
        return -1;
    free(*dst);
    *dst = s;
    return 0;
}

static int parse_enum(const char *const *names, const char *value, int *out)
{
    for (int i = 0; names[i]; i++) {
        if (strcmp(names[i], value) == 0) {
            *out = i;
            return 0;
        }
    }
    return -1;
}

/* "host:port" or "[v6addr]:port". */
static int parse_hostport(const char *value, char **host, int *port)
{
    const char *colon;
    const char *hstart = value;
    size_t hlen;
    if (value[0] == '[') {
        const char *close = strchr(value, ']');
        if (!close || close[1] != ':')
            return -1;
        hstart = value + 1;
        hlen = (size_t)(close - hstart);
        colon = close + 1;
    } else {
        colon = strrchr(value, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - value);
    }
    if (hlen == 0)
        return -1;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || p < 1 || p > 65535)
        return -1;
    char *h = strndup(hstart, hlen);
    if (!h)
        return -1;
    free(*host);
    *host = h;
    *port = (int)p;
    return 0;
}

static int parse_int(const char *value, long min, long max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || *end || end == value || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

/* A duration: a number with an optional unit ms, s, min/m or h (default s).
 * Stores milliseconds. */
static int parse_duration(const char *value, int *out_ms)
{
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || v < 0)
        return -1;
    double mult = 1000;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else
        return -1;
    double ms = v * mult;
    if (ms > INT_MAX)
        return -1;
    *out_ms = (int)ms;
    return 0;
}

/* A size in bytes with an optional unit B, kB, MB or GB (1024-based, as
 * PostgreSQL's memory units). */
static int parse_size(const char *value, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno || end == value || v < 0)
        return -1;
    int64_t mult = 1;
    if (*end == '\0' || strcmp(end, "B") == 0)
        mult = 1;
    else if (strcmp(end, "kB") == 0)
        mult = 1024;
    else if (strcmp(end, "MB") == 0)
        mult = 1024 * 1024;
    else if (strcmp(end, "GB") == 0)
        mult = 1024 * 1024 * 1024;
    else
        return -1;
    if (v > max / mult)
        return -1;
    int64_t bytes = (int64_t)v * mult;
    if (bytes < min || bytes > max)
        return -1;
    *out = bytes;
    return 0;
}

/* A number of rows: a non-negative integer or decimal, e-notation allowed
 * ("1e9"), at most 1e18. */
static int parse_rows(const char *value, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || *end || !(v >= 0 && v <= 1e18))
        return -1;
    *out = v;
    return 0;
}

/* A non-negative amount of money, stored in micro-units so that sums
 * never drift; read by the pricing module, as every amount is. */
static int parse_money(const char *value, int64_t *out)
{
    return pgt_money_parse(value, NULL, out, NULL, 0);
}

static int parse_currency(const char *value, char out[8])
{
    size_t n = strlen(value);
    if (n != 3)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (value[i] < 'A' || value[i] > 'Z')
            return -1;
    memcpy(out, value, n + 1);
    return 0;
}

static const char *const on_off_names[] = {"off", "on", NULL};
static const char *const on_failure_names[] = {"open", "closed", NULL};
static const char *const estimate_mode_names[] = {"off", "history", "explain", NULL};
static const char *const estimate_format_names[] = {"json", "text", NULL};
static const char *const unknown_estimate_names[] = {"run", "refuse", NULL};

/* Keys of the metering sections; returns 1 when key is not one of them. */
static int apply_metering(pgt_config_t *cfg, const char *key, const char *value)
{
    if (strcmp(key, "metering") == 0)
        return parse_enum(on_off_names, value, &cfg->metering);
    if (strcmp(key, "ledger") == 0)
        return value[0] ? set_string(&cfg->ledger_path, value) : -1;
    if (strcmp(key, "instance") == 0)
        return value[0] && strlen(value) <= 63 ? set_string(&cfg->instance, value) : -1;
    if (strcmp(key, "ledger.schema") == 0)
        return value[0] && strlen(value) <= 63 ? set_string(&cfg->ledger_schema, value) : -1;
    if (strcmp(key, "ledger.spool") == 0)
        return value[0] ? set_string(&cfg->ledger_spool, value) : -1;
    if (strcmp(key, "ledger.on_failure") == 0)
        return parse_enum(on_failure_names, value, &cfg->ledger_on_failure_closed);
    if (strcmp(key, "ledger.retention_days") == 0)
        return parse_int(value, 0, 36500, &cfg->ledger_retention_days);
    if (strcmp(key, "estimate.mode") == 0)
        return parse_enum(estimate_mode_names, value, &cfg->estimate_mode);
    if (strcmp(key, "estimate.cache_ttl") == 0)
        return parse_duration(value, &cfg->estimate_cache_ttl_ms);
    if (strcmp(key, "estimate.format") == 0)
        return parse_enum(estimate_format_names, value, &cfg->estimate_format_text);
    if (strcmp(key, "estimate.explain_above") == 0)
        return parse_duration(value, &cfg->estimate_explain_above_ms);
    if (strcmp(key, "guard.max_estimated_rows") == 0)
        return parse_rows(value, &cfg->guard_max_rows);
    if (strcmp(key, "guard.max_join_rows") == 0)
        return parse_rows(value, &cfg->guard_max_join_rows);
    if (strcmp(key, "pricing.currency") == 0)
        return parse_currency(value, cfg->currency);
    if (strcmp(key, "pricing.per_compute_second") == 0)
        return parse_money(value, &cfg->price_compute_second_micro);
    if (strcmp(key, "pricing.per_gib_returned") == 0)
        return parse_money(value, &cfg->price_gib_micro);
    if (strcmp(key, "pricing.per_query") == 0)
        return parse_money(value, &cfg->price_query_micro);
    return 1;
}

/* Keys of [metrics]; returns 1 when key is not one of them. An empty
 * listen turns the endpoint off. */
static int apply_metrics(pgt_config_t *cfg, const char *key, const char *value)
{
    if (strcmp(key, "metrics.listen") == 0) {
        if (value[0])
            return parse_hostport(value, &cfg->metrics_listen_host, &cfg->metrics_listen_port);
        free(cfg->metrics_listen_host);
        cfg->metrics_listen_host = NULL;
        cfg->metrics_listen_port = 0;
        return 0;
    }
    if (strcmp(key, "metrics.max_label_values") == 0)
        return parse_int(value, 1, 100000, &cfg->metrics_max_label_values);
    return 1;
}

int pgt_config_check_timezone(const char *name, char *err, size_t errlen)
{
    if (strcmp(name, "UTC") == 0)
        return 0;
    /* Only a plain relative name: the file is opened below the zone dir. */
    bool ok = name[0] && name[0] != '/' && !strstr(name, "..") && strlen(name) < ZONE_NAME_MAX;
    for (const char *c = name; ok && *c; c++)
        ok = isalnum((unsigned char)*c) || strchr("/_+-", *c);
    const char *dir = getenv("TZDIR");
    if (!dir || !dir[0])
        dir = ZONEINFO_DIR;
    char path[PATH_MAX], magic[4];
    struct stat st;
    int fd = -1;
    if (ok && snprintf(path, sizeof(path), "%s/%s", dir, name) < (int)sizeof(path))
        fd = open(path, O_RDONLY | O_CLOEXEC);
    /* A compiled zone file starts with "TZif" (RFC 8536); the directory
     * also holds tables (zone.tab) and directories (Europe) that are not. */
    ok = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
         read(fd, magic, sizeof(magic)) == (ssize_t)sizeof(magic) &&
         memcmp(magic, "TZif", sizeof(magic)) == 0;
    if (fd >= 0)
        close(fd);
    if (!ok)
        snprintf(err, errlen,
                 "unknown time zone '%s': expected an IANA name with a zone file in %s, such as "
                 "Europe/Berlin, or UTC",
                 name, dir);
    return ok ? 0 : -1;
}

bool pgt_config_budget_exempt(const pgt_config_t *cfg, const char *user)
{
    return pgt_config_list_has(cfg->budget_exempt_users, cfg->budget_exempt_count, user);
}

/* Splits "alice, bob" into a NULL-terminated list of trimmed, non-empty
 * names and replaces *list and *count. Returns 0, or -2 when out of memory. */
static int set_list(char ***list, size_t *count, const char *value)
{
    size_t cap = 2, n = 0;
    for (const char *c = value; *c; c++)
        cap += *c == ',';
    char **names = calloc(cap, sizeof(*names));
    for (const char *p = value; names && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *q = p;
        while (len && isspace((unsigned char)*q))
            q++, len--;
        while (len && isspace((unsigned char)q[len - 1]))
            len--;
        if (len && !(names[n++] = strndup(q, len)))
            break;
        p = end ? end + 1 : p + strlen(p);
    }
    if (!names || (n && !names[n - 1])) {
        for (size_t i = 0; names && i < n; i++)
            free(names[i]);
        free(names);
        return -2;
    }
    for (size_t i = 0; i < *count; i++)
        free((*list)[i]);
    free(*list);
    *list = names;
    *count = n;
    return 0;
}

/* Whether name may be a PostgreSQL role or database name as given in a
 * startup packet: 1 to 63 bytes, no control characters. */
static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    for (const char *c = name; *c; c++)
        if ((unsigned char)*c < ' ' || *c == 0x7f)
            return false;
    return n > 0 && n <= 63;
}

/* Keys of [admin] (the console); returns 1 when key is not one of them. */
static int apply_admin(pgt_config_t *cfg, const char *key, const char *value)
{
    char ***list = NULL;
    size_t *count = NULL;
    if (strcmp(key, "admin.auth_database") == 0)
        return name_ok(value) ? set_string(&cfg->admin_auth_database, value) : -1;
    if (strcmp(key, "admin.admin_users") == 0) {
        list = &cfg->admin_users;
        count = &cfg->admin_users_count;
    } else if (strcmp(key, "admin.stats_users") == 0) {
        list = &cfg->admin_stats_users;
        count = &cfg->admin_stats_count;
    } else
        return 1;
    char **names = NULL;
    size_t n = 0;
    int rc = set_list(&names, &n, value);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (!name_ok(names[i]))
            rc = -1;
    if (rc != 0) {
        free_list(names, n);
        return rc;
    }
    free_list(*list, *count);
    *list = names;
    *count = n;
    return 0;
}

bool pgt_config_list_has(char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; name && i < n; i++)
        if (strcmp(list[i], name) == 0)
            return true;
    return false;
}

/* Keys of budgets ([budget], timezone, admin_conninfo); returns 1 when key
 * is not one of them. */
static int apply_budget(pgt_config_t *cfg, const char *key, const char *value)
{
    int ms = 0;
    if (strcmp(key, "timezone") == 0)
        return pgt_config_check_timezone(value, NULL, 0) == 0 ? set_string(&cfg->timezone, value)
                                                              : -1;
    if (strcmp(key, "admin_conninfo") == 0)
        return set_string(&cfg->admin_conninfo, value);
    if (strcmp(key, "budget.contact") == 0)
        return set_string(&cfg->budget_contact, value);
    if (strcmp(key, "budget.notice_above") == 0)
        return parse_money(value, &cfg->budget_notice_above_micro);
    if (strcmp(key, "budget.unknown_estimate") == 0)
        return parse_enum(unknown_estimate_names, value, &cfg->budget_unknown_refuse);
    if (strcmp(key, "budget.exempt_users") == 0)
        return set_list(&cfg->budget_exempt_users, &cfg->budget_exempt_count, value);
    if (strcmp(key, "budget.check_interval") == 0) {
        /* A bare number is milliseconds here, as the key's unit. */
        bool bare = value[0] && strspn(value, "0123456789") == strlen(value);
        int rc = bare ? parse_int(value, 0, INT_MAX, &ms) : parse_duration(value, &ms);
        if (rc != 0 || ms < 50 || ms > 5000)
            return -1;
        cfg->budget_check_interval_ms = ms;
        return 0;
    }
    if (strcmp(key, "budget.role_refresh") == 0) {
        if (parse_duration(value, &ms) != 0 || ms < 1000 || ms > 86400000)
            return -1;
        cfg->budget_role_refresh_ms = ms;
        return 0;
    }
    return 1;
}

/* ---- [report]: the daily report's schedule and delivery ------------------ */

static const char *const smtp_tls_names[] = {"starttls", "none", NULL};
static const char *const bool_names[] = {"false", "true", "off", "on", NULL};

/* "HH:MM" (or "H:MM"), a local time of day; stores minutes after midnight. */
static int parse_clock(const char *value, int *out)
{
    int h = 0, m = 0, used = 0;
    if (sscanf(value, "%2d:%2d%n", &h, &m, &used) != 2 || value[used] || !isdigit(value[0]) ||
        strlen(strchr(value, ':') + 1) != 2 || h < 0 || h > 23 || m < 0 || m > 59)
        return -1;
    *out = h * 60 + m;
    return 0;
}

/* Whether value is "scheme://host..." for one of schemes, without blanks or
 * control characters. */
static bool url_ok(const char *value, const char *const *schemes)
{
    for (const char *c = value; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return false;
    for (size_t i = 0; schemes[i]; i++) {
        size_t n = strlen(schemes[i]);
        if (strncasecmp(value, schemes[i], n) == 0 && value[n] && value[n] != '/' &&
            value[n] != ':')
            return true;
    }
    return false;
}

/* Whether a is a bare mail address, local@domain: nothing that could
 * break out of a header or an SMTP command (blanks, CR, LF, <>, commas). */
static bool address_ok(const char *a)
{
    const char *at = strrchr(a, '@');
    if (!at || at == a || !at[1] || strlen(a) > 254)
        return false;
    for (const char *c = a; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f || strchr("<>,;\"()[]\\", *c))
            return false;
    return true;
}

/* Reads the secret in path: the file's contents without surrounding white
 * space, on one line. Sets *dst (freeing the old one), or returns -1 with
 * why in err (the secret itself is never quoted). */
static int read_secret(const char *path, char **dst, char *err, size_t errlen)
{
    char buf[4097];
    FILE *f = path[0] ? fopen(path, "r") : NULL;
    if (!f) {
        snprintf(err, errlen, "cannot read '%s': %s; create it or make it readable by pgtally",
                 path, path[0] ? strerror(errno) : "empty path");
        return -1;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    bool bad = ferror(f) || !feof(f);
    fclose(f);
    buf[n] = '\0';
    char *s = buf, *end = buf + n;
    while (s < end && isspace((unsigned char)*s))
        s++;
    while (end > s && isspace((unsigned char)end[-1]))
        end--;
    *end = '\0';
    bool multi = false;
    for (const char *c = s; *c; c++)
        multi |= (unsigned char)*c < ' ' || *c == 0x7f;
    char *copy = !bad && *s && !multi ? strdup(s) : NULL;
    explicit_bzero(buf, sizeof(buf));
    if (!copy) {
        snprintf(err, errlen, "'%s' %s", path,
                 bad     ? "cannot be read whole (larger than 4 kB?)"
                 : multi ? "holds more than one line; put the secret alone on one line"
                 : *s    ? "out of memory"
                         : "is empty; put the secret in it");
        return -1;
    }
    if (*dst) {
        explicit_bzero(*dst, strlen(*dst));
        free(*dst);
    }
    *dst = copy;
    return 0;
}

static const char *const webhook_schemes[] = {"https://", "http://", NULL};
static const char *const smtp_schemes[] = {"smtp://", "smtps://", NULL};

/* The Slack webhook, inline or from a file (one of the two). */
static int apply_webhook(pgt_config_t *cfg, const char *k, const char *value, char *why,
                         size_t whylen)
{
    bool from_file = strcmp(k, "slack_webhook_url_file") == 0;
    if (from_file ? cfg->report_slack_webhook_url && !cfg->report_slack_url_file
                  : cfg->report_slack_url_file != NULL) {
        snprintf(why, whylen,
                 "report.slack_webhook_url and report.slack_webhook_url_file "
                 "exclude each other; keep one");
        return -1;
    }
    char *url = NULL;
    if (from_file) {
        if (read_secret(value, &url, why, whylen) != 0)
            return -1;
    } else if (!(url = strdup(value))) {
        return -2;
    }
    if (!url_ok(url, webhook_schemes)) {
        snprintf(why, whylen, "%s is not an https:// URL; use the incoming webhook URL Slack gives",
                 from_file ? "the file's contents" : "the value");
        free_secret(url);
        return -1;
    }
    if (from_file && set_string(&cfg->report_slack_url_file, value) != 0) {
        free_secret(url);
        return -2;
    }
    free_secret(cfg->report_slack_webhook_url);
    cfg->report_slack_webhook_url = url;
    return 0;
}

/* Mail keys: server, TLS, AUTH, sender and recipients. */
static int apply_mail(pgt_config_t *cfg, const char *k, const char *value, char *why, size_t whylen)
{
    if (strcmp(k, "smtp_url") == 0) {
        if (url_ok(value, smtp_schemes))
            return set_string(&cfg->report_smtp_url, value);
        snprintf(why, whylen,
                 "'%s' is not allowed; use smtp://host:587 (STARTTLS) or "
                 "smtps://host:465",
                 value);
        return -1;
    }
    if (strcmp(k, "smtp_tls") == 0)
        return parse_enum(smtp_tls_names, value, &cfg->report_smtp_tls_none);
    if (strcmp(k, "smtp_user") == 0)
        return value[0] ? set_string(&cfg->report_smtp_user, value) : -1;
    if (strcmp(k, "smtp_password_file") == 0) {
        if (read_secret(value, &cfg->report_smtp_password, why, whylen) != 0)
            return -1;
        return set_string(&cfg->report_smtp_password_file, value);
    }
    if (strcmp(k, "mail_from") == 0) {
        if (address_ok(value))
            return set_string(&cfg->report_mail_from, value);
        snprintf(why, whylen,
                 "'%s' is not allowed; use a bare address such as "
                 "pgtally@example.com",
                 value);
        return -1;
    }
    if (strcmp(k, "mail_to") == 0) {
        char **list = NULL;
        size_t n = 0;
        if (set_list(&list, &n, value) != 0)
            return -2;
        int rc = n ? 0 : -1;
        for (size_t i = 0; i < n; i++) {
            if (rc == 0 && !address_ok(list[i])) {
                snprintf(why, whylen,
                         "'%s' is not an address; use addresses such as "
                         "a@example.com, b@example.com",
                         list[i]);
                rc = -1;
            }
        }
        if (rc == 0)
            rc = set_list(&cfg->report_mail_to, &cfg->report_mail_to_count, value);
        for (size_t i = 0; i < n; i++)
            free(list[i]);
        free(list);
        return rc;
    }
    return 1;
}

/* Keys of [report] that concern delivery. Returns 1 when key is not one
 * of them, 0 when set, -2 when out of memory, or -1 for a bad value, with
 * why in why when the generic message would not say enough. */
static int apply_report(pgt_config_t *cfg, const char *key, const char *value, char *why,
                        size_t whylen)
{
    if (strncmp(key, "report.", 7) != 0)
        return 1;
    const char *k = key + 7;
    int ms = 0;
    if (strcmp(k, "time") == 0)
        return parse_clock(value, &cfg->report_time_min);
    if (strcmp(k, "catch_up_days") == 0)
        return parse_int(value, 0, 365, &cfg->report_catch_up_days);
    if (strcmp(k, "top") == 0)
        return parse_int(value, 1, 50, &cfg->report_top);
    if (strcmp(k, "regression_min_cost") == 0)
        return parse_money(value, &cfg->report_regression_min_micro);
    if (strcmp(k, "duplicate_min_runs") == 0)
        return parse_int(value, 1, 1000000, &cfg->report_duplicate_min_runs);
    if (strcmp(k, "show_literals") == 0) {
        int iv = 0;
        if (parse_enum(bool_names, value, &iv) != 0)
            return -1;
        cfg->report_show_literals = iv % 2;
        return 0;
    }
    if (strcmp(k, "retry_interval") == 0) {
        if (parse_duration(value, &ms) != 0 || ms < 100 || ms > 3600000)
            return -1;
        cfg->report_retry_interval_ms = ms;
        return 0;
    }
    if (strcmp(k, "slack_webhook_url") == 0 || strcmp(k, "slack_webhook_url_file") == 0)
        return apply_webhook(cfg, k, value, why, whylen);
    if (strcmp(k, "ca_file") == 0) {
        if (value[0] && access(value, R_OK) == 0)
            return set_string(&cfg->report_ca_file, value);
        snprintf(why, whylen, "cannot read '%s': %s; give a readable PEM file", value,
                 value[0] ? strerror(errno) : "empty path");
        return -1;
    }
    return apply_mail(cfg, k, value, why, whylen);
}

/* [alerts] channels, in the order of pgt_channel_t (include/pgtally/deliver.h). */
static const char *const alert_channel_names[] = {"slack", "email", NULL};

/* Keys of [alerts]; returns 1 when key is not one of them. */
static int apply_alerts(pgt_config_t *cfg, const char *key, const char *value)
{
    int ms = 0;
    if (strcmp(key, "alerts.batch_interval") == 0) {
        if (parse_duration(value, &ms) != 0 || ms < 1000 || ms > 3600000)
            return -1;
        cfg->alerts_batch_interval_ms = ms;
        return 0;
    }
    if (strcmp(key, "alerts.channels") != 0)
        return 1;
    char **list = NULL;
    size_t n = 0;
    if (set_list(&list, &n, value) != 0)
        return -2;
    int mask = 0, rc = n ? 0 : -1;
    for (size_t i = 0; i < n; i++) {
        int c = 0;
        if (strcmp(list[i], "none") == 0 && n == 1)
            mask = 0;
        else if (parse_enum(alert_channel_names, list[i], &c) == 0)
            mask |= 1 << c;
        else
            rc = -1;
        free(list[i]);
    }
    free(list);
    if (rc == 0)
        cfg->alerts_channels = mask;
    return rc;
}

/* Cross-key rules of [alerts]: a channel named must be configured. */
static int check_alerts(const pgt_config_t *cfg, char *err, size_t errlen)
{
    if (cfg->alerts_channels < 0)
        return 0;
    if ((cfg->alerts_channels & 1) && !cfg->report_slack_webhook_url) {
        snprintf(err, errlen,
                 "alerts.channels names slack, but no webhook is configured: set "
                 "report.slack_webhook_url or report.slack_webhook_url_file");
        return -1;
    }
    if ((cfg->alerts_channels & 2) && !cfg->report_smtp_url) {
        snprintf(err, errlen,
                 "alerts.channels names email, but no mail server is configured: set "
                 "report.smtp_url, mail_from and mail_to");
        return -1;
    }
    return 0;
}

/* Cross-key rules of [report]. Returns 0, or -1 with a message in err. */
static int check_report(const pgt_config_t *cfg, char *err, size_t errlen)
{
    bool mail = cfg->report_mail_from || cfg->report_mail_to_count || cfg->report_smtp_user;
    if (cfg->report_smtp_url && (!cfg->report_mail_from || !cfg->report_mail_to_count)) {
        snprintf(err, errlen,
                 "report.smtp_url needs report.mail_from and report.mail_to "
                 "(the sender and the recipients)");
        return -1;
    }
    if (!cfg->report_smtp_url && mail) {
        snprintf(err, errlen,
                 "report.mail_from, mail_to and smtp_user need report.smtp_url "
                 "(smtp://host:587 or smtps://host:465)");
        return -1;
    }
    if (!cfg->report_smtp_user != !cfg->report_smtp_password) {
        snprintf(err, errlen, "report.smtp_user and report.smtp_password_file go together");
        return -1;
    }
    bool smtps = cfg->report_smtp_url && strncasecmp(cfg->report_smtp_url, "smtps://", 8) == 0;
    if (cfg->report_smtp_tls_none && smtps) {
        snprintf(err, errlen,
                 "report.smtp_tls = none contradicts smtps:// (TLS from the first "
                 "byte); use smtp://host:25 or drop smtp_tls");
        return -1;
    }
    if (cfg->report_smtp_tls_none && cfg->report_smtp_user) {
        snprintf(err, errlen,
                 "report.smtp_tls = none would send the SMTP password in clear; "
                 "use STARTTLS (smtp_tls = starttls) or smtps://");
        return -1;
    }
    return 0;
}

/* Applies one key; returns 0, -1 for a bad value, -2 when out of memory. */
static int apply(pgt_config_t *cfg, const char *key, const char *value)
{
    int iv = 0;
    int64_t sv = 0;
    int rc = apply_metering(cfg, key, value);
    if (rc == 1)
        rc = apply_budget(cfg, key, value);
    if (rc == 1)
        rc = apply_metrics(cfg, key, value);
    if (rc == 1)
        rc = apply_alerts(cfg, key, value);
    if (rc == 1)
        rc = apply_admin(cfg, key, value);
    if (rc != 1)
        return rc;
    rc = -1;
    if (strcmp(key, "listen") == 0)
        rc = parse_hostport(value, &cfg->listen_host, &cfg->listen_port);
    else if (strcmp(key, "upstream") == 0)
        rc = parse_hostport(value, &cfg->upstream_host, &cfg->upstream_port);
    else if (strcmp(key, "client_tls") == 0) {
        if ((rc = parse_enum(client_tls_names, value, &iv)) == 0)
            cfg->client_tls = (pgt_client_tls_t)iv;
    } else if (strcmp(key, "upstream_tls") == 0) {
        if ((rc = parse_enum(upstream_tls_names, value, &iv)) == 0)
            cfg->upstream_tls = (pgt_upstream_tls_t)iv;
    } else if (strcmp(key, "log_level") == 0) {
        if ((rc = parse_enum(log_level_names, value, &iv)) == 0)
            cfg->log_level = (pgt_log_level_t)iv;
    } else if (strcmp(key, "client_tls_cert_file") == 0)
        rc = value[0] ? set_string(&cfg->client_tls_cert_file, value) : -1;
    else if (strcmp(key, "client_tls_key_file") == 0)
        rc = value[0] ? set_string(&cfg->client_tls_key_file, value) : -1;
    else if (strcmp(key, "upstream_tls_ca_file") == 0)
        rc = value[0] ? set_string(&cfg->upstream_tls_ca_file, value) : -1;
    else if (strcmp(key, "upstream_tls_cert_file") == 0)
        rc = value[0] ? set_string(&cfg->upstream_tls_cert_file, value) : -1;
    else if (strcmp(key, "upstream_tls_key_file") == 0)
        rc = value[0] ? set_string(&cfg->upstream_tls_key_file, value) : -1;
    else if (strcmp(key, "max_clients") == 0)
        rc = parse_int(value, 1, 1000000, &cfg->max_clients);
    else if (strcmp(key, "startup_timeout") == 0) {
        if ((rc = parse_duration(value, &iv)) == 0 && iv < 1)
            rc = -1;
        if (rc == 0)
            cfg->startup_timeout_ms = iv;
    } else if (strcmp(key, "shutdown_timeout") == 0)
        rc = parse_duration(value, &cfg->shutdown_timeout_ms);
    else if (strcmp(key, "max_startup_packet_size") == 0) {
        if ((rc = parse_size(value, 8, PGT_STARTUP_PACKET_MAX, &sv)) == 0)
            cfg->max_startup_packet_size = (int)sv;
    } else if (strcmp(key, "max_message_size") == 0) {
        if ((rc = parse_size(value, 1024, (int64_t)1 << 30, &sv)) == 0)
            cfg->max_message_size = sv;
    }
    return rc;
}

int pgt_config_set(pgt_config_t *cfg, const char *key, const char *value, char *err, size_t errlen)
{
    const pgt_config_key_t *k = find_key(key);
    if (!k) {
        snprintf(err, errlen, "unknown key '%s'; see pgtally --help or the sample pgtally.ini",
                 key);
        return -1;
    }
    char why[400] = "";
    int rc = apply_report(cfg, key, value, why, sizeof(why));
    if (rc == 1)
        rc = apply(cfg, key, value);
    if (rc != 0) {
        if (why[0])
            snprintf(err, errlen, "key '%s': %s", key, why);
        else
            snprintf(err, errlen, "key '%s': '%s' is not allowed; use %s", key, value, k->allowed);
        return -1;
    }
    char *copy = strdup(value);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    free_secret(cfg->set_values[k - keys]);
    cfg->set_values[k - keys] = copy;
    return 0;
}

const char *pgt_config_set_value(const pgt_config_t *cfg, size_t i)
{
    return i < sizeof(keys) / sizeof(keys[0]) ? cfg->set_values[i] : NULL;
}

/* State shared with the inih callback: the first error wins. */
typedef struct {
    pgt_config_t *cfg; /* config being filled */
    char msg[512];     /* first error, without the file:line prefix */
} load_ctx_t;

static int ini_cb(void *user, const char *section, const char *name, const char *value)
{
    load_ctx_t *ctx = user;
    if (ctx->msg[0])
        return 0;
    char full[128];
    if (strcmp(section, "pgtally") == 0) {
        snprintf(full, sizeof(full), "%s", name);
    } else if (strcmp(section, "ledger") == 0 || strcmp(section, "pricing") == 0 ||
               strcmp(section, "estimate") == 0 || strcmp(section, "budget") == 0 ||
               strcmp(section, "report") == 0 || strcmp(section, "metrics") == 0 ||
               strcmp(section, "alerts") == 0 || strcmp(section, "admin") == 0 ||
               strcmp(section, "guard") == 0) {
        snprintf(full, sizeof(full), "%s.%s", section, name);
    } else {
        snprintf(ctx->msg, sizeof(ctx->msg),
                 "section [%s], key '%s': unknown section; use [pgtally], [ledger], [pricing], "
                 "[estimate], [guard], [budget], [report], [alerts], [metrics] or [admin]",
                 section, name);
        return 0;
    }
    if (pgt_config_set(ctx->cfg, full, value, ctx->msg, sizeof(ctx->msg)) != 0)
        return 0;
    return 1;
}

bool pgt_config_ledger_is_postgresql(const char *ledger)
{
    if (!ledger)
        return false;
    if (strncmp(ledger, "postgresql://", 13) == 0 || strncmp(ledger, "postgres://", 11) == 0)
        return true;
    /* A conninfo is key=value pairs: a word of lower-case letters, then '='
     * (host=/tmp/sock is one; a path has a '/' or '.' before any '='). */
    const char *eq = strchr(ledger, '=');
    return eq && eq > ledger &&
           strspn(ledger, "abcdefghijklmnopqrstuvwxyz_ ") == (size_t)(eq - ledger);
}

/* Returns a new string of the file name `name` in the folder of the file
 * path, or NULL when out of memory. */
static char *beside(const char *path, const char *name)
{
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path) + 1 : 0;
    char *out = NULL;
    return asprintf(&out, "%.*s%s", dirlen, path, name) < 0 ? NULL : out;
}

/* Sets the ledger's default (pgtally.db beside the file). */
static int config_defaults(pgt_config_t *cfg, const char *path)
{
    if (!cfg->ledger_path && !(cfg->ledger_path = beside(path, "pgtally.db")))
        return -1;
    return 0;
}

int pgt_config_finish(pgt_config_t *cfg)
{
    if (!cfg->instance) {
        char host[256] = "localhost";
        if (gethostname(host, sizeof(host)) != 0)
            snprintf(host, sizeof(host), "localhost");
        host[sizeof(host) - 1] = '\0';
        if (asprintf(&cfg->instance, "%.50s:%d", host, cfg->listen_port) < 0) {
            cfg->instance = NULL;
            return -1;
        }
    }
    if (!cfg->ledger_spool && pgt_config_ledger_is_postgresql(cfg->ledger_path)) {
        char name[128];
        snprintf(name, sizeof(name), "pgtally-%s.spool", cfg->instance);
        for (char *c = name; *c; c++)
            if (!isalnum((unsigned char)*c) && *c != '.' && *c != '-')
                *c = '_';
        if (!(cfg->ledger_spool = beside(cfg->path ? cfg->path : "", name)))
            return -1;
    }
    return 0;
}

int pgt_config_load_file(pgt_config_t *cfg, const char *path, char *err, size_t errlen)
{
    load_ctx_t ctx = {.cfg = cfg, .msg = ""};
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open config file: %s", path, strerror(errno));
        return -1;
    }
    int line = ini_parse_file(f, ini_cb, &ctx);
    fclose(f);
    if (line != 0) {
        if (ctx.msg[0])
            snprintf(err, errlen, "%s:%d: %s", path, line, ctx.msg);
        else
            snprintf(err, errlen, "%s:%d: syntax error; expected 'key = value' or '[section]'",
                     path, line);
        return -1;
    }
    if (set_string(&cfg->path, path) != 0)
        return -1;
    return config_defaults(cfg, path);
}

int pgt_config_check(const pgt_config_t *cfg, char *err, size_t errlen)
{
    if (cfg->client_tls != PGT_CLIENT_TLS_DISABLE &&
        (!cfg->client_tls_cert_file || !cfg->client_tls_key_file)) {
        snprintf(err, errlen,
                 "client_tls = %s needs client_tls_cert_file and client_tls_key_file; "
                 "set both or use client_tls = disable",
                 pgt_client_tls_name(cfg->client_tls));
        return -1;
    }
    if ((cfg->upstream_tls == PGT_UPSTREAM_TLS_VERIFY_CA ||
         cfg->upstream_tls == PGT_UPSTREAM_TLS_VERIFY_FULL) &&
        !cfg->upstream_tls_ca_file) {
        snprintf(err, errlen, "upstream_tls = %s needs upstream_tls_ca_file (a PEM CA bundle)",
                 pgt_upstream_tls_name(cfg->upstream_tls));
        return -1;
    }
    if (!cfg->upstream_tls_cert_file != !cfg->upstream_tls_key_file) {
        snprintf(err, errlen, "upstream_tls_cert_file and upstream_tls_key_file go together");
        return -1;
    }
    if (check_report(cfg, err, errlen) != 0)
        return -1;
    return check_alerts(cfg, err, errlen);
}
