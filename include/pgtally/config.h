/* pgtally's configuration: one immutable struct, filled from the INI file
 * and the command line, validated once, and swapped whole on reload. */
#ifndef PGTALLY_CONFIG_H
#define PGTALLY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgtally/log.h"

#define PGT_CLIENT_TLS_MAP(X)                                                                      \
    X(DISABLE, "disable")                                                                          \
    X(ALLOW, "allow")                                                                              \
    X(REQUIRE, "require")

typedef enum {
#define X(name, str) PGT_CLIENT_TLS_##name,
    PGT_CLIENT_TLS_MAP(X)
#undef X
} pgt_client_tls_t;

#define PGT_UPSTREAM_TLS_MAP(X)                                                                    \
    X(DISABLE, "disable")                                                                          \
    X(PREFER, "prefer")                                                                            \
    X(REQUIRE, "require")                                                                          \
    X(VERIFY_CA, "verify-ca")                                                                      \
    X(VERIFY_FULL, "verify-full")

typedef enum {
#define X(name, str) PGT_UPSTREAM_TLS_##name,
    PGT_UPSTREAM_TLS_MAP(X)
#undef X
} pgt_upstream_tls_t;

/* Largest startup packet PostgreSQL accepts (MAX_STARTUP_PACKET_LENGTH). */
#define PGT_STARTUP_PACKET_MAX 10000

typedef struct pgt_config {
    char *path;                         /* config file read, or NULL */
    char *listen_host;                  /* address to listen on */
    int listen_port;                    /* port to listen on */
    char *upstream_host;                /* the warehouse server's host */
    int upstream_port;                  /* the warehouse server's port */
    pgt_client_tls_t client_tls;        /* TLS towards clients */
    char *client_tls_cert_file;         /* PEM certificate shown to clients */
    char *client_tls_key_file;          /* PEM private key of that certificate */
    pgt_upstream_tls_t upstream_tls;    /* TLS towards the server, as libpq's sslmode */
    char *upstream_tls_ca_file;         /* CA bundle for verify-ca/verify-full */
    char *upstream_tls_cert_file;       /* optional client certificate for the server */
    char *upstream_tls_key_file;        /* key of upstream_tls_cert_file */
    int max_clients;                    /* client connections accepted at once */
    int startup_timeout_ms;             /* time allowed from connect to ReadyForQuery */
    int max_startup_packet_size;        /* bytes, at most PGT_STARTUP_PACKET_MAX */
    int64_t max_message_size;           /* largest frontend message after login, bytes */
    int shutdown_timeout_ms;            /* how long SIGTERM waits for running queries */
    pgt_log_level_t log_level;          /* lowest level logged */
    char *ledger_path;                  /* SQLite ledger file, or a PostgreSQL URI or conninfo;
                                           default pgtally.db next to the config */
    char *ledger_schema;                /* [ledger] schema of a PostgreSQL ledger, or NULL */
    char *ledger_spool;                 /* [ledger] spool file, or NULL for the default */
    char *instance;                     /* [pgtally] instance name, or NULL: host name:port */
    int ledger_on_failure_closed;       /* [ledger] on_failure: 0 open, 1 closed */
    int ledger_retention_days;          /* [ledger] retention_days (0 keeps everything) */
    char currency[8];                   /* [pricing] currency, e.g. "USD" */
    int64_t price_compute_second_micro; /* [pricing] per_compute_second, micro-units */
    int64_t price_gib_micro;            /* [pricing] per_gib_returned, micro-units */
    int64_t price_query_micro;          /* [pricing] per_query, micro-units */
    int metering;                       /* [pgtally] metering = on|off (1|0) */
    int estimate_mode;                  /* [estimate] mode: 0 off, 1 history, 2 explain */
    int estimate_cache_ttl_ms;          /* [estimate] cache_ttl */
    int estimate_format_text;           /* [estimate] format: 0 json, 1 text */
    int estimate_explain_above_ms;      /* [estimate] explain_above */
    double guard_max_rows;              /* [guard] max_estimated_rows; 0: off */
    double guard_max_join_rows;         /* [guard] max_join_rows; 0: off */
    char *timezone;                     /* IANA zone of budget periods and reports ("UTC") */
    char *admin_conninfo;               /* libpq conninfo to read role memberships, or "" */
    char *budget_contact;               /* [budget] contact, shown in refusal hints, or "" */
    int64_t budget_notice_above_micro;  /* [budget] notice_above: NOTICE above this; 0 off */
    int budget_unknown_refuse;          /* [budget] unknown_estimate: 0 run, 1 refuse */
    char **budget_exempt_users;         /* [budget] exempt_users, NULL-terminated (owned) */
    size_t budget_exempt_count;         /* names in budget_exempt_users */
    int budget_check_interval_ms;       /* [budget] check_interval, 50 to 5000 ms */
    int budget_role_refresh_ms;         /* [budget] role_refresh */
    int report_time_min;                /* [report] time: minutes after local midnight */
    int report_catch_up_days;           /* [report] catch_up_days: missed days sent at start */
    int report_retry_interval_ms;       /* [report] retry_interval: first retry, doubling */
    char *report_slack_webhook_url;     /* the webhook URL (from the key or its file), or NULL */
    char *report_slack_url_file;        /* [report] slack_webhook_url_file, or NULL */
    char *report_smtp_url;              /* [report] smtp_url: smtp:// or smtps://, or NULL */
    int report_smtp_tls_none;           /* [report] smtp_tls: 0 starttls (required), 1 none */
    char *report_smtp_user;             /* [report] smtp_user, or NULL */
    char *report_smtp_password;         /* contents of [report] smtp_password_file, or NULL */
    char *report_smtp_password_file;    /* [report] smtp_password_file, or NULL */
    char *report_mail_from;             /* [report] mail_from, or NULL */
    char **report_mail_to;              /* [report] mail_to, NULL-terminated (owned) */
    size_t report_mail_to_count;        /* addresses in report_mail_to */
    char *report_ca_file;               /* [report] ca_file, or NULL: the system's CAs */
    int report_top;                     /* [report] top: rows of each top list, 1 to 50 */
    int report_show_literals;           /* [report] show_literals: reserved (the ledger has none) */
    int64_t report_regression_min_micro; /* [report] regression_min_cost: a shape's mean cost under
                                            its newest release must be above it to be listed */
    int report_duplicate_min_runs;       /* [report] duplicate_min_runs: work done twice is a
                                            statement run more than this many times */
    int alerts_channels;                 /* [alerts] channels: bit 1 << pgt_channel_t per channel
                                            (slack 1, email 2); -1: every configured one */
    int alerts_batch_interval_ms;        /* [alerts] batch_interval: refusals and cancels of a
                                            window go out as one message */
    char *metrics_listen_host;           /* [metrics] listen host, or NULL: no endpoint */
    int metrics_listen_port;             /* [metrics] listen port (0 when off) */
    int metrics_max_label_values;        /* [metrics] max_label_values: values kept per label */
    char *admin_auth_database; /* [admin] auth_database: console logins are checked here */
    char **admin_users;        /* [admin] admin_users, NULL-terminated (owned) */
    size_t admin_users_count;  /* names in admin_users */
    char **admin_stats_users;  /* [admin] stats_users, NULL-terminated (owned) */
    size_t admin_stats_count;  /* names in admin_stats_users */
    char **set_values;         /* the text each key of pgt_config_keys() was last set
                                  to, by index, or NULL: its default (owned) */
} pgt_config_t;

/* The defaults of [report] regression_min_cost (0.0001 of the currency: a
 * quarter of a second of compute at the default prices) and
 * duplicate_min_runs, for callers without a config. */
#define PGT_CONFIG_REGRESSION_MIN_MICRO 100
#define PGT_CONFIG_DUPLICATE_MIN_RUNS 3

/* Values of estimate_mode. */
#define PGT_ESTIMATE_OFF 0
#define PGT_ESTIMATE_HISTORY 1
#define PGT_ESTIMATE_EXPLAIN 2

/* One configurable key, for --help and for the command-line flags. */
typedef struct pgt_config_key {
    const char *name;    /* INI key, e.g. "client_tls"; the flag is --client-tls */
    const char *allowed; /* what values are allowed, for messages and --help */
    const char *help;    /* one line of help */
} pgt_config_key_t;

/* Returns the table of keys, terminated by an entry with name NULL. */
const pgt_config_key_t *pgt_config_keys(void);

/* Returns a new config holding the defaults; the caller frees it with
 * pgt_config_free. Returns NULL when out of memory. */
pgt_config_t *pgt_config_new(void);

/* Frees a config and its strings. NULL is allowed. */
void pgt_config_free(pgt_config_t *cfg);

/* Sets one key from its text value. Returns 0, or -1 with a message in err
 * saying what is wrong and what is allowed. */
int pgt_config_set(pgt_config_t *cfg, const char *key, const char *value, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Reads an INI file into cfg. Returns 0, or -1 with "file:line: key 'k': ..."
 * in err. Sections other than [pgtally] and unknown keys are errors. */
int pgt_config_load_file(pgt_config_t *cfg, const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Checks rules that span keys (a TLS mode that needs a certificate, ...).
 * Returns 0, or -1 with a message in err. */
int pgt_config_check(const pgt_config_t *cfg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Checks that name is a time zone this system knows: "UTC", or an IANA
 * name with a compiled zone file under $TZDIR or /usr/share/zoneinfo.
 * Returns 0, or -1 with what is wrong and an example in err. */
int pgt_config_check_timezone(const char *name, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Returns true when user is one of [budget] exempt_users. */
bool pgt_config_budget_exempt(const pgt_config_t *cfg, const char *user);

/* The text key i of pgt_config_keys() was last set to (file or command
 * line), or NULL when it has its default. Owned by cfg. */
const char *pgt_config_set_value(const pgt_config_t *cfg, size_t i);

/* Returns true when name is one of the n names of list (a list of the
 * config, such as admin_users). */
bool pgt_config_list_has(char *const *list, size_t n, const char *name);

/* Printable names of the enums. */
const char *pgt_client_tls_name(pgt_client_tls_t v);
const char *pgt_upstream_tls_name(pgt_upstream_tls_t v);

/* Fills in the defaults that depend on other keys, once the file and the
 * command line are read: the instance name (host name:port) and the spool
 * of a PostgreSQL ledger (pgtally-<instance>.spool beside the config file,
 * or in the working directory without one, with the name's unsafe
 * characters as '_'). Returns 0, or -1 when out of memory. */
int pgt_config_finish(pgt_config_t *cfg) __attribute__((warn_unused_result));

/* Whether a ledger setting names a PostgreSQL database: a postgresql:// or
 * postgres:// URI, or a libpq key=value conninfo. Anything else is the path
 * of an SQLite file. */
bool pgt_config_ledger_is_postgresql(const char *ledger);

#endif
