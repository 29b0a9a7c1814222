/* Pieces shared by pgtallyctl's commands: option parsing, times and
 * periods, and output as aligned tables, CSV and JSON. Internal to
 * pgtallyctl; not part of the daemon. */
#ifndef PGTALLY_CTL_H
#define PGTALLY_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pgtally/ledger.h"

/* Exit codes: 0 success, 1 a runtime error (missing ledger), 2 bad usage. */
#define CTL_EXIT_OK 0
#define CTL_EXIT_ERROR 1
#define CTL_EXIT_USAGE 2

#define CTL_FORMAT_MAP(X)                                                                          \
    X(TABLE, "table")                                                                              \
    X(JSON, "json")                                                                                \
    X(CSV, "csv")

typedef enum {
#define X(name, str) CTL_FORMAT_##name,
    CTL_FORMAT_MAP(X)
#undef X
} ctl_format_t;

int ctl_format_parse(const char *s, ctl_format_t *out) __attribute__((warn_unused_result));

#define CTL_PERIOD_MAP(X)                                                                          \
    X(DAY, "day")                                                                                  \
    X(WEEK, "week")                                                                                \
    X(MONTH, "month")

typedef enum {
#define X(name, str) CTL_PERIOD_##name,
    CTL_PERIOD_MAP(X)
#undef X
} ctl_period_t;

const char *ctl_period_name(ctl_period_t p);
int ctl_period_parse(const char *s, ctl_period_t *out) __attribute__((warn_unused_result));

/* What every command needs: where the ledger is and the currency. */
typedef struct ctl_env {
    const char *prog;        /* "pgtallyctl", for messages */
    const char *config_path; /* -c FILE, or NULL */
    const char *ledger_path; /* --ledger PATH, or NULL */
    char *resolved_ledger;   /* the ledger file to read (owned), set by ctl_env_resolve */
    char currency[8];        /* from the config; "USD" by default */
} ctl_env_t;

/* Loads the config (when given, or ./pgtally.ini when present) and picks
 * the ledger file. Returns 0, or prints the problem and returns -1. */
int ctl_env_resolve(ctl_env_t *env) __attribute__((warn_unused_result));

/* Resolves the ledger and opens it for reading. Returns the reader (close
 * it with pgt_ledger_reader_close), or NULL after printing why. */
pgt_ledger_reader_t *ctl_open_reader(ctl_env_t *env);
void ctl_env_free(ctl_env_t *env);

/* One option a command accepts. */
typedef struct ctl_opt {
    const char *name; /* long name, used as --name */
    char short_name;  /* -x, or 0 */
    bool has_value;   /* takes a value (--name V, --name=V, -x V) */
    int id;           /* what the command switches on */
} ctl_opt_t;

/* Reads the option at argv[*i] against opts (terminated by a NULL name).
 * Returns 1 with *id and *value set, 0 at the end or at the first argument
 * that is not an option (argv[*i]), or -1 with a message in err. */
int ctl_next_opt(int argc, char **argv, int *i, const ctl_opt_t *opts, int *id, const char **value,
                 char *err, size_t errlen) __attribute__((warn_unused_result));

/* Applies one option (its id and value) to a command's arguments; returns
 * 0, or -1 with what is wrong in what. */
typedef int (*ctl_apply_fn)(ctl_env_t *env, void *args, int id, const char *value, char *what,
                            size_t len);

/* Reads every option of argv (from argv[1]) with apply, and refuses any
 * argument left over. Returns 0, or -1 with what is wrong in what. */
int ctl_parse_opts(ctl_env_t *env, int argc, char **argv, const ctl_opt_t *opts, ctl_apply_fn apply,
                   void *args, char *what, size_t len) __attribute__((warn_unused_result));

/* Parses a time: YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS[.frac]] (also with T),
 * in local time unless followed by Z or +HH:MM/-HH:MM; or relative to now
 * as -N followed by s, m, h, d or w ("-30m"); or "now". Returns 0 with unix
 * microseconds in *out, or -1. */
int ctl_parse_time(const char *s, int64_t now_us, int64_t *out) __attribute__((warn_unused_result));

/* Parses a calendar date YYYY-MM-DD (a real one: no February 30th).
 * Returns 0, or -1. */
int ctl_parse_date(const char *s, int *y, int *m, int *d) __attribute__((warn_unused_result));

/* The UTC range [from, to) in unix microseconds of the period holding the
 * date; weeks start on Monday. */
void ctl_period_range(ctl_period_t p, int y, int m, int d, int64_t *from_us, int64_t *to_us);

/* Parses a positive integer; returns 0, or -1. */
int ctl_parse_positive(const char *s, int64_t *out) __attribute__((warn_unused_result));

/* Formatting helpers; each returns buf. */
char *ctl_fmt_local(int64_t us, char *buf, size_t len);         /* 2024-05-01 14:03:07 */
char *ctl_fmt_iso(int64_t us, bool utc, char *buf, size_t len); /* RFC 3339, microseconds */
char *ctl_fmt_seconds(double s, char *buf, size_t len);         /* 12.3 ms, 1.52 s */
char *ctl_fmt_bytes(int64_t b, char *buf, size_t len);          /* 1.2 MiB */

/* Returns a JSON string of s, with invalid UTF-8 replaced by U+FFFD; JSON
 * null for NULL. Never returns NULL unless out of memory. */
json_t *ctl_json_text(const char *s);

/* Prints root as indented JSON and a newline to f, and releases it.
 * Returns 0, or -1. */
int ctl_json_print(json_t *root, FILE *f) __attribute__((warn_unused_result));

/* Writes one CSV record (RFC 4180 quoting, "\n" line end); NULL cells are
 * empty. */
void ctl_csv_row(FILE *f, const char *const *cells, size_t n);

/* An aligned text table for a terminal. */
typedef struct ctl_table ctl_table_t;

/* A new table with ncols columns named by headers; right[i] aligns a
 * column right (numbers). Returns NULL when out of memory. */
ctl_table_t *ctl_table_new(size_t ncols, const char *const *headers, const bool *right);

/* Adds a row of ncols cells (copied; NULL prints empty). Control
 * characters become spaces; max_width > 0 cuts a cell to that many
 * characters with "...". Returns 0, or -1 when out of memory. */
int ctl_table_add(ctl_table_t *t, const char *const *cells, size_t max_width)
    __attribute__((warn_unused_result));

/* Adds a rule line (dashes under each column) before the next row. */
void ctl_table_rule(ctl_table_t *t);

/* Prints the table and frees it. */
void ctl_table_print(ctl_table_t *t, FILE *f);
void ctl_table_free(ctl_table_t *t);

/* The commands: argv[0] is the command name. Return an exit code. */
int ctl_cmd_queries(ctl_env_t *env, int argc, char **argv);
int ctl_cmd_usage(ctl_env_t *env, int argc, char **argv);

/* Prints "prog cmd: what" and the command's synopsis to stderr; returns
 * CTL_EXIT_USAGE. */
int ctl_usage_error(const ctl_env_t *env, const char *cmd, const char *synopsis, const char *what);

/* The options every command also accepts: -c, --ledger, --help (which
 * each command answers itself). ctl_common_opt returns 1 when id was -c or
 * --ledger (and stores the value), 0 otherwise. */
#define CTL_OPT_CONFIG 1000
#define CTL_OPT_LEDGER 1001
#define CTL_OPT_HELP 1002
#define CTL_COMMON_OPTS                                                                            \
    {"config", 'c', true, CTL_OPT_CONFIG}, {"ledger", 0, true, CTL_OPT_LEDGER},                    \
    {                                                                                              \
        "help", 'h', false, CTL_OPT_HELP                                                           \
    }
int ctl_common_opt(ctl_env_t *env, int id, const char *value);

#endif
