/* Pieces shared by pgtallyctl's commands: option parsing, times, amounts,
 * and output as aligned tables, CSV and JSON (written with base's text
 * helpers, pgtally/text.h). Internal to pgtallyctl; not
 * part of the daemon. */
#ifndef PGTALLY_CTL_H
#define PGTALLY_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pgtally/ledger.h"
#include "pgtally/text.h"

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

/* --format VALUE of a listing command: 0, or -1 with what is wrong in what. */
int ctl_format_opt(const char *value, ctl_format_t *out, char *what, size_t len)
    __attribute__((warn_unused_result));

/* --date VALUE (YYYY-MM-DD): 0, or -1 with what is wrong in what. */
int ctl_date_opt(const char *value, int *y, int *m, int *d, char *what, size_t len)
    __attribute__((warn_unused_result));

/* What every command needs: where the ledger is, the currency and the
 * time zone. */
typedef struct ctl_env {
    const char *prog;          /* "pgtallyctl", for messages */
    const char *config_path;   /* -c FILE, or NULL */
    const char *ledger_path;   /* --ledger PATH or URI, or NULL */
    char *resolved_ledger;     /* the ledger file or URI (owned), set by ctl_env_resolve */
    pgt_ledger_where_t where;  /* resolved_ledger and the config's schema */
    char shown_ledger[512];    /* the ledger for messages, without a password */
    char currency[8];          /* from the config; "USD" by default */
    char timezone[128];        /* the local time zone in effect, for titles */
    struct pgt_config *config; /* the config read, or NULL without one (owned) */
} ctl_env_t;

/* Loads the config (when given, or ./pgtally.ini when present) and keeps it
 * in env->config, picks the ledger file and sets the local time zone: the
 * config's `timezone`; without a config, the TZ environment variable, else
 * UTC. Local times are read and shown in that zone from then on. Does
 * nothing the second time. Returns 0, or prints the problem and returns -1. */
int ctl_env_resolve(ctl_env_t *env) __attribute__((warn_unused_result));

/* How ctl_open_store opens the budget tables. */
typedef enum {
    CTL_STORE_READ,   /* read-only; a ledger without budget tables has none */
    CTL_STORE_CHANGE, /* read-write, on a ledger that exists */
    CTL_STORE_CREATE, /* read-write, creating the ledger when missing */
} ctl_store_mode_t;

/* Resolves the ledger and opens its budget tables. Returns 0 with the
 * connection in *db (close it with pgt_budget_store_close; NULL for
 * CTL_STORE_READ on an SQLite ledger of a release without budgets), or
 * prints why and returns -1. */
int ctl_open_store(ctl_env_t *env, ctl_store_mode_t mode, pgt_db_t **db)
    __attribute__((warn_unused_result));

/* Checks a name given on the command line (a user, role, team, ...): not
 * empty, at most PGT_BUDGET_SUBJECT_MAX bytes, no control characters.
 * Returns 0, or -1 with what is wrong in what (what names it). */
int ctl_check_name(const char *what_name, const char *name, char *what, size_t len)
    __attribute__((warn_unused_result));

/* Checks a time given as flag (--until) with ctl_parse_time, relative to
 * now. Returns 0, or -1 with what is wrong in what (what names it). */
int ctl_check_time(const char *flag, const char *v, char *what, size_t len)
    __attribute__((warn_unused_result));

/* Resolves the ledger and opens it for reading. Returns the reader (close
 * it with pgt_ledger_reader_close), or NULL after printing why. */
pgt_ledger_reader_t *ctl_open_reader(ctl_env_t *env);

/* What a reading command does with the ledger once it is open. */
typedef int (*ctl_read_fn)(ctl_env_t *env, const void *args, pgt_ledger_reader_t *rd);

/* Opens the ledger for reading (ctl_open_reader), runs run on it with
 * args, and closes it. Returns run's exit code, or CTL_EXIT_ERROR when the
 * ledger cannot be opened. */
int ctl_with_reader(ctl_env_t *env, ctl_read_fn run, const void *args);
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

/* As ctl_parse_opts, but options and up to maxpos other arguments may come
 * in any order; the others are stored in pos (in order) and counted in
 * *npos. More than maxpos is an error. */
int ctl_parse_args(ctl_env_t *env, int argc, char **argv, const ctl_opt_t *opts, ctl_apply_fn apply,
                   void *args, const char **pos, size_t maxpos, size_t *npos, char *what,
                   size_t len) __attribute__((warn_unused_result));

/* Parses an amount of money in the configured currency ("12.50",
 * "12.50 USD"; see pgt_money_parse) given as --flag. Returns 0, or -1
 * with what is wrong in what. */
int ctl_parse_amount(const ctl_env_t *env, const char *flag, const char *text, int64_t *out,
                     char *what, size_t len) __attribute__((warn_unused_result));

/* Parses a time: YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS[.frac]] (also with T),
 * in local time unless followed by Z or +HH:MM/-HH:MM; or relative to now
 * as -N followed by s, m, h, d or w ("-30m"); or "now". Returns 0 with unix
 * microseconds in *out, or -1. */
int ctl_parse_time(const char *s, int64_t now_us, int64_t *out) __attribute__((warn_unused_result));

/* Parses a calendar date YYYY-MM-DD (a real one: no February 30th).
 * Returns 0, or -1. */
int ctl_parse_date(const char *s, int *y, int *m, int *d) __attribute__((warn_unused_result));

/* Returns unix microseconds of local noon of a date, an instant inside
 * the local day whatever its DST change. */
int64_t ctl_date_noon(int y, int m, int d);

/* The local day of a --date (y = 0: today): sets its bounds and writes
 * its date, "2024-05-01", into date. Returns date. */
char *ctl_day(int y, int m, int d, int64_t *from, int64_t *to, char *date, size_t len);

/* Parses a positive integer; returns 0, or -1. */
int ctl_parse_positive(const char *s, int64_t *out) __attribute__((warn_unused_result));

/* Formatting helpers; each returns buf. */
char *ctl_fmt_local(int64_t us, char *buf, size_t len);         /* 2024-05-01 14:03:07 */
char *ctl_fmt_iso(int64_t us, bool utc, char *buf, size_t len); /* RFC 3339, microseconds */
char *ctl_fmt_bytes(int64_t b, char *buf, size_t len);          /* 1.2 MiB */
/* An exact amount with at least 2 decimals: "12.50 USD", "0.0004 USD". */
char *ctl_fmt_money(int64_t micro, const char *currency, char *buf, size_t len);

/* Prints root as indented JSON and a newline to f, and releases it.
 * Returns 0, or -1. */
int ctl_json_print(json_t *root, FILE *f) __attribute__((warn_unused_result));

/* Writes one CSV record to f (pgt_text_csv_row: RFC 4180 quoting, and
 * outer white space quoted), ending in "\n"; NULL cells are empty. */
void ctl_csv_row(FILE *f, const char *const *cells, size_t n);

/* Prints table t (pgt_text_table_print) to f and frees it. A NULL or
 * failed table prints nothing. Returns 0, or -1 when out of memory or when
 * writing fails. */
int ctl_table_print(pgt_text_table_t *t, FILE *f) __attribute__((warn_unused_result));

/* A command (queries) or subcommand (budget set): its name and the
 * function that runs it with argv[0] = that name; it returns an exit code. */
typedef struct ctl_command {
    const char *name;                      /* as typed */
    int (*run)(ctl_env_t *, int, char **); /* returns an exit code */
} ctl_command_t;

/* Runs the subcommand of subs named by argv[1] of command argv[0]. Answers
 * --help with synopsis and help; a missing or unknown subcommand is a usage
 * error. Returns an exit code. */
int ctl_dispatch(ctl_env_t *env, int argc, char **argv, const ctl_command_t *subs, size_t n,
                 const char *synopsis, const char *help);

/* The commands: argv[0] is the command name. Return an exit code. */
int ctl_cmd_queries(ctl_env_t *env, int argc, char **argv);
int ctl_cmd_usage(ctl_env_t *env, int argc, char **argv);
int ctl_cmd_repeats(ctl_env_t *env, int argc, char **argv);
int ctl_cmd_regressions(ctl_env_t *env, int argc, char **argv);
int ctl_cmd_budget(ctl_env_t *env, int argc, char **argv);
int ctl_cmd_team(ctl_env_t *env, int argc, char **argv);
int ctl_cmd_report(ctl_env_t *env, int argc, char **argv);
int ctl_cmd_rule(ctl_env_t *env, int argc, char **argv);
int ctl_cmd_ticket(ctl_env_t *env, int argc, char **argv);

/* Who runs pgtallyctl ($USER, else the OS account), for created_by. */
const char *ctl_os_user(void);

/* The budgets section of `usage`: every budget's spend in its current
 * period. For a table, prints it to stdout (nothing when there are no
 * budgets); for JSON, sets *json to an array (owned by the caller). Returns
 * 0, or -1 after printing why to stderr. */
int ctl_budget_section(ctl_env_t *env, bool json, json_t **out) __attribute__((warn_unused_result));

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

/* The arguments of a command whose only own option is --format. */
typedef struct ctl_list_args {
    ctl_format_t format; /* output format */
    bool help;           /* --help was given */
} ctl_list_args_t;

/* The arguments of a command of one day: --date, --format, --help. */
typedef struct ctl_day_args {
    int y, m, d;          /* the date; y = 0: today */
    ctl_list_args_t list; /* --format, --help */
} ctl_day_args_t;

/* The rows of a command in one of the formats, as they are written. */
typedef struct ctl_out {
    ctl_env_t *env;          /* currency */
    ctl_format_t format;     /* which writer */
    pgt_text_table_t *table; /* rows, for table (owned) */
    json_t *rows;            /* rows, for json (owned) */
    int64_t n;               /* rows seen */
} ctl_out_t;

/* Starts o in format: a table of ncols columns (heads, right-aligned
 * where right says), a JSON array, or CSV's header line (csv_heads)
 * printed. Returns 0, or -1 when out of memory (o holds nothing then). */
int ctl_out_open(ctl_out_t *o, ctl_env_t *env, ctl_format_t format, size_t ncols,
                 const char *const *heads, const bool *right, const char *const *csv_heads,
                 size_t ncsv) __attribute__((warn_unused_result));

/* Says that reading the ledger failed (err) and frees what o holds.
 * Returns CTL_EXIT_ERROR. */
int ctl_out_fail(ctl_out_t *o, const char *err);

#define CTL_OPT_FORMAT 1003
#define CTL_OPT_DATE 1004
#define CTL_DATE_OPT                                                                               \
    {                                                                                              \
        "date", 'd', true, CTL_OPT_DATE                                                            \
    }
#define CTL_FORMAT_OPT                                                                             \
    {                                                                                              \
        "format", 'f', true, CTL_OPT_FORMAT                                                        \
    }

/* A ctl_apply_fn for --format, --help and the common options, with args a
 * ctl_list_args_t. */
int ctl_list_apply(ctl_env_t *env, void *args, int id, const char *value, char *what, size_t len);

/* A ctl_apply_fn for --date, --format, --help and the common options, with
 * args a ctl_day_args_t. */
int ctl_day_apply(ctl_env_t *env, void *args, int id, const char *value, char *what, size_t len);

/* Reads the arguments of `pgtallyctl NOUN rm ID` (the common options and
 * one ID from NOUN's list) into *id. Returns CTL_EXIT_OK with *id set; or
 * CTL_EXIT_OK with *id 0 after printing the help (synopsis and help); or
 * CTL_EXIT_USAGE after saying what is wrong. */
int ctl_parse_rm(ctl_env_t *env, int argc, char **argv, const char *noun, const char *synopsis,
                 const char *help, int64_t *id) __attribute__((warn_unused_result));

#endif
