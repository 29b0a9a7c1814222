/* pgtallyctl rule: add, list and remove rules by statement shape (block,
 * warn or log the statements of one fingerprint). Each change is one
 * transaction in the ledger; a running pgtally picks it up with the budgets,
 * through the settings version. */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "pgtally/budget_store.h"
#include "pgtally/rules.h"

#define CMD "rule"

static const char synopsis[] =
    "usage: pgtallyctl [-c FILE | --ledger PATH] rule add --fingerprint FP [--user U]\n"
    "         [--database D] --action block|warn|log [--message TEXT] [--until TIME]\n"
    "       pgtallyctl rule list [--format table|json|csv]\n"
    "       pgtallyctl rule rm ID\n";

static const char help[] =
    "\n"
    "A rule acts on the statements of one shape: a fingerprint as 'pgtallyctl queries'\n"
    "and the daily report show it (16 hex digits). Constants do not matter: every\n"
    "statement of that shape matches. A running pgtally applies changes within a second.\n"
    "\n"
    "add     --fingerprint FP   the shape\n"
    "        --user U           only this user's statements (default: anyone's)\n"
    "        --database D       only in this database (default: any)\n"
    "        --action ACTION    block: refused before it runs, SQLSTATE " PGT_RULE_SQLSTATE "\n"
    "                           warn: runs, and the client gets a WARNING\n"
    "                           log: runs unchanged; the ledger records the rule\n"
    "                           (queries.rule_id): a dry run of block\n"
    "        --message TEXT     what the client is told\n"
    "        --until TIME       in force until then (YYYY-MM-DD, 'YYYY-MM-DD HH:MM[:SS]',\n"
    "                           ISO 8601); default: until removed\n"
    "list    every rule, expired ones marked\n"
    "rm      removes rule ID\n";

enum { OPT_FINGERPRINT = 1, OPT_USER, OPT_DATABASE, OPT_ACTION, OPT_MESSAGE, OPT_UNTIL };

static const ctl_opt_t add_opts[] = {
    {"fingerprint", 0, true, OPT_FINGERPRINT},
    {"user", 'u', true, OPT_USER},
    {"database", 'd', true, OPT_DATABASE},
    {"action", 0, true, OPT_ACTION},
    {"message", 'm', true, OPT_MESSAGE},
    {"until", 0, true, OPT_UNTIL},
    CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

/* The command line of `rule add`. */
typedef struct add_args {
    pgt_rule_t r;      /* the rule (strings borrowed from argv) */
    bool have_fp;      /* --fingerprint given */
    bool have_action;  /* --action given */
    const char *until; /* --until, read once the time zone is set */
    unsigned seen;     /* options given, to refuse repeats */
    bool help;         /* --help */
} add_args_t;

static const char *opt_name(int id)
{
    for (const ctl_opt_t *o = add_opts; o->name; o++)
        if (o->id == id)
            return o->name;
    return "?";
}

static int add_apply(ctl_env_t *env, void *args, int id, const char *v, char *what, size_t len)
{
    add_args_t *a = args;
    if (id < 32 && (a->seen & (1u << id))) {
        snprintf(what, len, "--%s given twice", opt_name(id));
        return -1;
    }
    a->seen |= id < 32 ? 1u << id : 0;
    switch (id) {
    case OPT_FINGERPRINT:
        a->have_fp = pgt_rule_fingerprint_parse(v, &a->r.fingerprint) == 0;
        if (!a->have_fp)
            snprintf(what, len,
                     "bad --fingerprint '%s': expected up to 16 hex digits, as the FINGERPRINT "
                     "column of 'pgtallyctl queries' shows",
                     v);
        return a->have_fp ? 0 : -1;
    case OPT_USER:
        a->r.user = (char *)v;
        return ctl_check_name("--user", v, what, len);
    case OPT_DATABASE:
        a->r.database = (char *)v;
        return ctl_check_name("--database", v, what, len);
    case OPT_ACTION:
        a->have_action = pgt_rule_action_parse(v, &a->r.action) == 0;
        if (!a->have_action)
            snprintf(what, len, "bad --action '%s': expected block, warn or log", v);
        return a->have_action ? 0 : -1;
    case OPT_MESSAGE:
        a->r.message = (char *)v;
        if (strlen(v) < PGT_RULE_MESSAGE_MAX)
            return 0;
        snprintf(what, len, "--message is too long: at most %d bytes", PGT_RULE_MESSAGE_MAX - 1);
        return -1;
    case OPT_UNTIL:
        a->until = v;
        return ctl_check_time("--until", v, what, len);
    case CTL_OPT_HELP:
        a->help = true;
        return 0;
    }
    return ctl_common_opt(env, id, v) ? 0 : -1;
}

static int cmd_add(ctl_env_t *env, int argc, char **argv)
{
    add_args_t a = {.r.until_us = -1};
    char what[512], err[512];
    if (ctl_parse_opts(env, argc, argv, add_opts, add_apply, &a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD " add", synopsis, what);
    if (a.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    if (!a.have_fp || !a.have_action)
        return ctl_usage_error(env, CMD " add", synopsis,
                               !a.have_fp ? "--fingerprint is required: the shape, as "
                                            "'pgtallyctl queries' shows it"
                                          : "--action is required: block, warn or log");
    if (ctl_env_resolve(env) != 0)
        return CTL_EXIT_ERROR;
    int64_t now = pgt_clock_us();
    if (a.until && ctl_parse_time(a.until, now, &a.r.until_us) != 0)
        return ctl_usage_error(env, CMD " add", synopsis, "bad --until");
    a.r.created_us = now;
    a.r.created_by = (char *)ctl_os_user();
    pgt_db_t *db;
    if (ctl_open_store(env, CTL_STORE_CREATE, &db) != 0)
        return CTL_EXIT_ERROR;
    int64_t id;
    int rc = pgt_rule_add(db, &a.r, &id, err, sizeof(err));
    pgt_budget_store_close(db);
    if (rc != 0) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
        return CTL_EXIT_ERROR;
    }
    char when[32];
    printf("Rule %lld: %s statements of shape %016llx", (long long)id,
           pgt_rule_action_name(a.r.action), (unsigned long long)a.r.fingerprint);
    printf(" by %s in %s", a.r.user ? a.r.user : "any user",
           a.r.database ? a.r.database : "any database");
    if (a.r.until_us >= 0)
        printf(", until %s %s", ctl_fmt_local(a.r.until_us, when, sizeof(when)), env->timezone);
    if (a.r.until_us >= 0 && a.r.until_us <= now)
        printf(" (already expired)");
    printf("\n");
    return CTL_EXIT_OK;
}

/* ---- rule list ------------------------------------------------------------ */

static const ctl_opt_t list_opts[] = {
    CTL_FORMAT_OPT,
    CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

static const char *const headers[] = {"ID",     "FINGERPRINT", "USER",       "DATABASE",
                                      "ACTION", "UNTIL",       "CREATED BY", "MESSAGE"};
static const char *const csv_headers[] = {"id",    "fingerprint", "user",    "database", "action",
                                          "until", "created_by",  "message", "expired"};

/* Loads every rule of the ledger into set. Returns 0, or -1 after saying
 * why. */
static int load_rules(ctl_env_t *env, pgt_rule_set_t *set)
{
    pgt_db_t *db;
    char err[512];
    if (ctl_open_store(env, CTL_STORE_READ, &db) != 0)
        return -1;
    if (!db)
        return 0; /* a ledger of a release before rules */
    int rc = pgt_rule_load(db, set, err, sizeof(err));
    pgt_budget_store_close(db);
    if (rc != 0)
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
    return rc;
}

static json_t *rule_json(const pgt_rule_t *r, const char *fp, const char *until, bool expired)
{
    return json_pack("{s:I, s:s, s:s?, s:s?, s:s, s:s?, s:s?, s:s, s:b}", "id", (json_int_t)r->id,
                     "fingerprint", fp, "user", r->user, "database", r->database, "action",
                     pgt_rule_action_name(r->action), "until", until, "message", r->message,
                     "created_by", r->created_by ? r->created_by : "", "expired", expired);
}

static int print_rules(const pgt_rule_set_t *set, ctl_format_t format)
{
    int64_t now = pgt_clock_us();
    pgt_text_table_t *t = format == CTL_FORMAT_TABLE ? pgt_text_table_new(8, headers, NULL) : NULL;
    json_t *arr = format == CTL_FORMAT_JSON ? json_array() : NULL;
    if (format == CTL_FORMAT_CSV)
        ctl_csv_row(stdout, csv_headers, 9);
    for (size_t i = 0; i < set->n; i++) {
        const pgt_rule_t *r = &set->rules[i];
        char id[24], fp[17], until[64] = "-", iso[40];
        bool expired = r->until_us >= 0 && r->until_us <= now;
        snprintf(id, sizeof(id), "%lld", (long long)r->id);
        snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)r->fingerprint);
        if (r->until_us >= 0) {
            ctl_fmt_local(r->until_us, until, sizeof(until));
            if (expired)
                strcat(until, " (expired)");
            ctl_fmt_iso(r->until_us, false, iso, sizeof(iso));
        }
        const char *cells[] = {id,
                               fp,
                               r->user ? r->user : "*",
                               r->database ? r->database : "*",
                               pgt_rule_action_name(r->action),
                               until,
                               r->created_by ? r->created_by : "",
                               r->message ? r->message : ""};
        if (t && pgt_text_table_row(t, cells, 60) != 0)
            break;
        if (arr)
            json_array_append_new(arr, rule_json(r, fp, r->until_us >= 0 ? iso : NULL, expired));
        if (format == CTL_FORMAT_CSV) {
            const char *row[] = {id,          fp,         r->user,
                                 r->database, cells[4],   r->until_us >= 0 ? iso : NULL,
                                 cells[6],    r->message, expired ? "true" : "false"};
            ctl_csv_row(stdout, row, 9);
        }
    }
    if (arr)
        return ctl_json_print(arr, stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
    if (t && set->n == 0) {
        pgt_text_table_free(t);
        printf("No rules.\n");
        return CTL_EXIT_OK;
    }
    if (t)
        return ctl_table_print(t, stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
    return CTL_EXIT_OK;
}

static int cmd_list(ctl_env_t *env, int argc, char **argv)
{
    ctl_list_args_t a = {.format = CTL_FORMAT_TABLE};
    char what[512];
    if (ctl_parse_opts(env, argc, argv, list_opts, ctl_list_apply, &a, what, sizeof(what)) != 0)
        return ctl_usage_error(env, CMD " list", synopsis, what);
    if (a.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    if (ctl_env_resolve(env) != 0)
        return CTL_EXIT_ERROR;
    pgt_rule_set_t set = {0};
    if (load_rules(env, &set) != 0) {
        pgt_rule_set_clear(&set);
        return CTL_EXIT_ERROR;
    }
    int rc = print_rules(&set, a.format);
    pgt_rule_set_clear(&set);
    return rc;
}

/* ---- rule rm -------------------------------------------------------------- */

static int cmd_rm(ctl_env_t *env, int argc, char **argv)
{
    int64_t id;
    char err[512];
    int usage = ctl_parse_rm(env, argc, argv, "rule", synopsis, help, &id);
    if (usage != CTL_EXIT_OK || id == 0)
        return usage;
    pgt_db_t *db;
    if (ctl_open_store(env, CTL_STORE_CHANGE, &db) != 0)
        return CTL_EXIT_ERROR;
    int rc = pgt_rule_rm(db, id, err, sizeof(err));
    pgt_budget_store_close(db);
    if (rc == 1) {
        fprintf(stderr, "%s rule rm: no rule with id %lld; see 'pgtallyctl rule list'\n", env->prog,
                (long long)id);
        return CTL_EXIT_ERROR;
    }
    if (rc != 0) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
        return CTL_EXIT_ERROR;
    }
    printf("Rule %lld removed\n", (long long)id);
    return CTL_EXIT_OK;
}

/* ---- Dispatch ------------------------------------------------------------- */

static const ctl_command_t subcommands[] = {
    {"add", cmd_add},
    {"list", cmd_list},
    {"rm", cmd_rm},
};

int ctl_cmd_rule(ctl_env_t *env, int argc, char **argv)
{
    return ctl_dispatch(env, argc, argv, subcommands, sizeof(subcommands) / sizeof(subcommands[0]),
                        synopsis, help);
}
