/* pgtallyctl: the admin command line of pgtally. It reads the ledger
 * through its own connection, so it runs beside a live pgtally; budget and
 * team changes are short transactions that pgtally picks up by itself.
 * Exit codes: 0 success, 1 a runtime error (missing ledger), 2 bad usage. */
#include <stdio.h>
#include <string.h>

#include "ctl.h"

static const char synopsis[] = "usage: pgtallyctl [-c FILE | --ledger PATH] COMMAND [OPTIONS]\n";

static const char help[] =
    "\n"
    "Commands:\n"
    "  queries   list metered statements, most recent (or most expensive) first\n"
    "  usage     spend per user, database, application or tag over a day, week or month,\n"
    "            and each budget's spend in its current period\n"
    "  budget    set, list or remove budgets (set, list, rm), grant extra budget (grant)\n"
    "  rule      block, warn about or log one statement shape (add, list, rm)\n"
    "  team      pgtally's groups of users for team budgets (add, rm, list)\n"
    "  ticket    requests refused by a budget, a cap or the guard, and their approval\n"
    "            for a while (list, approve)\n"
    "  repeats   work done twice: one day's SELECTs run with the same constants again and\n"
    "            again by several users or applications, and what a cache would save\n"
    "  regressions\n"
    "            shapes at least twice as dear under their newest release (the release,\n"
    "            git_sha or version tag) as under the one before, over a week\n"
    "  report    the daily report of a date: print it (text, markdown, html, json, csv,\n"
    "            slack) or send it to Slack and e-mail\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE  pgtally.ini to read the ledger path, currency and timezone from\n"
    "                     (default ./pgtally.ini when it exists)\n"
    "      --ledger PATH  the ledger: a file or a postgresql:// URI (default: the config's,\n"
    "                     or ./pgtally.db)\n"
    "  -h, --help         this help; 'pgtallyctl COMMAND --help' for a command's\n"
    "      --version      print the version\n";

static const ctl_command_t commands[] = {
    {"queries", ctl_cmd_queries}, {"usage", ctl_cmd_usage},
    {"budget", ctl_cmd_budget},   {"team", ctl_cmd_team},
    {"report", ctl_cmd_report},   {"rule", ctl_cmd_rule},
    {"repeats", ctl_cmd_repeats}, {"regressions", ctl_cmd_regressions},
    {"ticket", ctl_cmd_ticket},
};

#define OPT_VERSION 1

static const ctl_opt_t global_opts[] = {
    CTL_COMMON_OPTS,
    {"version", 0, false, OPT_VERSION},
    {NULL, 0, false, 0},
};

/* Reads the options before the command. Returns -1 to go on with the
 * command at argv[*i], or an exit code. */
static int global_options(ctl_env_t *env, int argc, char **argv, int *i)
{
    int id, rc;
    const char *v;
    char what[256];
    while ((rc = ctl_next_opt(argc, argv, i, global_opts, &id, &v, what, sizeof(what))) == 1) {
        if (id == CTL_OPT_HELP) {
            printf("%s%s", synopsis, help);
            return CTL_EXIT_OK;
        }
        if (id == OPT_VERSION) {
            printf("pgtallyctl %s\n", PGTALLY_VERSION);
            return CTL_EXIT_OK;
        }
        (void)ctl_common_opt(env, id, v);
    }
    if (rc < 0)
        return ctl_usage_error(env, NULL, synopsis, what);
    if (*i >= argc)
        return ctl_usage_error(env, NULL, synopsis, "no command given");
    return -1;
}

int main(int argc, char **argv)
{
    ctl_env_t env = {.prog = "pgtallyctl"};
    int i = 1;
    int rc = global_options(&env, argc, argv, &i);
    if (rc >= 0)
        return rc;
    const char *name = argv[i];
    for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
        if (strcmp(commands[k].name, name) == 0) {
            rc = commands[k].run(&env, argc - i, argv + i);
            ctl_env_free(&env);
            if (fflush(stdout) != 0 || ferror(stdout)) {
                perror("pgtallyctl: writing the output");
                return CTL_EXIT_ERROR;
            }
            return rc;
        }
    }
    char what[256];
    snprintf(what, sizeof(what), "unknown command '%s'", name);
    return ctl_usage_error(&env, NULL, synopsis, what);
}
