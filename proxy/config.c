/* Parsing and validation of pgtally's configuration. Every key is described
 * once in the keys[] table, which drives the INI reader, the command-line
 * flags and --help, so the three never disagree. */
#include "pgtally/config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (!cfg->listen_host || !cfg->upstream_host) {
        pgt_config_free(cfg);
        return NULL;
    }
    return cfg;
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

/* Applies one key; returns 0, -1 for a bad value, -2 when out of memory. */
static int apply(pgt_config_t *cfg, const char *key, const char *value)
{
    int iv = 0;
    int64_t sv = 0;
    int rc = -1;
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
    if (apply(cfg, key, value) != 0) {
        snprintf(err, errlen, "key '%s': '%s' is not allowed; use %s", key, value, k->allowed);
        return -1;
    }
    return 0;
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
    if (strcmp(section, "pgtally") != 0) {
        snprintf(ctx->msg, sizeof(ctx->msg),
                 "section [%s], key '%s': unknown section; pgtally's keys go in [pgtally]", section,
                 name);
        return 0;
    }
    if (pgt_config_set(ctx->cfg, name, value, ctx->msg, sizeof(ctx->msg)) != 0)
        return 0;
    return 1;
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
    return set_string(&cfg->path, path) == 0 ? 0 : -1;
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
    return 0;
}
