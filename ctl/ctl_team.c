/* pgtallyctl team: pgtally's own groups of users, which team budgets
 * cover. Add users (creating the team), remove some or the whole team, and
 * list them. */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "pgtally/budget_store.h"

#define CMD "team"
#define MAX_USERS 1000 /* users in one command */

static const char synopsis[] = "usage: pgtallyctl [-c FILE | --ledger PATH] team add NAME USER...\n"
                               "       pgtallyctl team rm NAME [USER...]\n"
                               "       pgtallyctl team list [--format table|json|csv]\n";

static const char help[] =
    "\n"
    "A team is a named group of PostgreSQL users; 'pgtallyctl budget set --team NAME'\n"
    "gives it a budget that their statements share.\n"
    "\n"
    "add   adds the users to the team, creating it when it is new\n"
    "rm    removes the users from the team, or without users the whole team\n"
    "list  the teams and their members\n";

static const ctl_opt_t opts[] = {
    CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

static const ctl_opt_t list_opts[] = {
    CTL_FORMAT_OPT,
    CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

/* The command line of a team subcommand. */
typedef struct args {
    ctl_list_args_t list;           /* --format (list), --help */
    const char *pos[MAX_USERS + 1]; /* NAME, then the users */
    size_t npos;                    /* arguments in pos */
} args_t;

/* Parses a subcommand's arguments and checks the names: at least min of
 * them. Returns -1 to go on, or an exit code (help, a usage error). */
static int parse(ctl_env_t *env, int argc, char **argv, const ctl_opt_t *o, size_t min,
                 const char *missing, args_t *a)
{
    char cmd[32], what[512];
    snprintf(cmd, sizeof(cmd), CMD " %s", argv[0]);
    *a = (args_t){.list = {.format = CTL_FORMAT_TABLE}};
    size_t max = o == opts ? MAX_USERS + 1 : 0;
    if (ctl_parse_args(env, argc, argv, o, ctl_list_apply, &a->list, a->pos, max, &a->npos, what,
                       sizeof(what)) != 0)
        return ctl_usage_error(env, cmd, synopsis, what);
    if (a->list.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    if (a->npos < min)
        return ctl_usage_error(env, cmd, synopsis, missing);
    for (size_t i = 0; i < a->npos; i++)
        if (ctl_check_name(i ? "user" : "team name", a->pos[i], what, sizeof(what)) != 0)
            return ctl_usage_error(env, cmd, synopsis, what);
    return -1;
}

/* Prints "Team NAME: alice, bob" from the ledger as it is now. */
static void print_members(pgt_db_t *db, const char *name, const char *prefix)
{
    pgt_budget_config_t *cfg = NULL;
    char err[256];
    if (pgt_budget_config_load(db, &cfg, err, sizeof(err)) != 0)
        return;
    const pgt_budget_team_t *t = pgt_budget_team_find(cfg, name);
    printf("%sTeam %s: ", prefix, name);
    for (size_t i = 0; t && i < t->nmembers; i++)
        printf("%s%s", i ? ", " : "", t->members[i]);
    printf("%s\n", t && t->nmembers ? "" : "(no members)");
    pgt_budget_config_free(cfg);
}

static int cmd_add(ctl_env_t *env, int argc, char **argv)
{
    args_t a;
    int rc = parse(env, argc, argv, opts, 2, "give the team's NAME and at least one USER", &a);
    if (rc >= 0)
        return rc;
    pgt_db_t *db;
    if (ctl_open_store(env, CTL_STORE_CREATE, &db) != 0)
        return CTL_EXIT_ERROR;
    bool created = false;
    size_t added = 0;
    char err[512];
    rc = pgt_budget_team_add(db, a.pos[0], a.pos + 1, a.npos - 1, &created, &added, err,
                             sizeof(err));
    if (rc == 0) {
        printf("Team %s %s; %zu user%s added\n", a.pos[0], created ? "created" : "changed", added,
               added == 1 ? "" : "s");
        print_members(db, a.pos[0], "");
    } else {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
    }
    pgt_budget_store_close(db);
    return rc == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
}

static int cmd_rm(ctl_env_t *env, int argc, char **argv)
{
    args_t a;
    int rc = parse(env, argc, argv, opts, 1, "which team? give its NAME (and users to remove)", &a);
    if (rc >= 0)
        return rc;
    pgt_db_t *db;
    if (ctl_open_store(env, CTL_STORE_CHANGE, &db) != 0)
        return CTL_EXIT_ERROR;
    char err[512];
    rc = pgt_budget_team_rm(db, a.pos[0], a.pos + 1, a.npos - 1, err, sizeof(err));
    if (rc == PGT_BUDGET_NOT_FOUND) {
        fprintf(stderr, "%s team rm: %s; nothing changed (see 'pgtallyctl team list')\n", env->prog,
                err);
    } else if (rc != 0) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
    } else if (a.npos == 1) {
        printf("Team %s removed\n", a.pos[0]);
    } else {
        printf("Team %s: %zu user%s removed\n", a.pos[0], a.npos - 1, a.npos == 2 ? "" : "s");
        print_members(db, a.pos[0], "");
    }
    pgt_budget_store_close(db);
    return rc == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
}

/* Adds a team's row: name, member count and "alice, bob". Returns 0, or -1
 * when out of memory. */
static int team_row(pgt_text_table_t *t, const pgt_budget_team_t *team)
{
    size_t len = 1;
    for (size_t k = 0; k < team->nmembers; k++)
        len += strlen(team->members[k]) + 2;
    char *members = malloc(len), count[24];
    if (!members)
        return -1;
    members[0] = '\0';
    for (size_t k = 0, at = 0; k < team->nmembers; k++)
        at += (size_t)snprintf(members + at, len - at, "%s%s", k ? ", " : "", team->members[k]);
    snprintf(count, sizeof(count), "%zu", team->nmembers);
    const char *cells[] = {team->name, count, members};
    int rc = pgt_text_table_row(t, cells, 0);
    free(members);
    return rc;
}

/* Prints the teams as JSON: [{"name": ..., "members": [...]}]. Returns an
 * exit code. */
static int teams_json(const pgt_budget_team_t *teams, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_t *members = json_array();
        for (size_t k = 0; members && k < teams[i].nmembers; k++)
            json_array_append_new(members, pgt_text_json(teams[i].members[k]));
        json_t *o = json_pack("{soso}", "name", pgt_text_json(teams[i].name), "members", members);
        if (json_array_append_new(a, o) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return ctl_json_print(a, stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
}

/* Prints the teams in the chosen format (CSV: one row per member). Returns
 * an exit code. */
static int print_teams(const pgt_budget_config_t *cfg, ctl_format_t format)
{
    static const char *const headers[] = {"TEAM", "USERS", "MEMBERS"};
    static const char *const csv_headers[] = {"team", "user"};
    static const bool right[] = {false, true, false};
    const pgt_budget_team_t *teams = cfg ? cfg->teams : NULL;
    size_t n = cfg ? cfg->nteams : 0;
    if (format == CTL_FORMAT_JSON)
        return teams_json(teams, n);
    if (format == CTL_FORMAT_CSV) {
        ctl_csv_row(stdout, csv_headers, 2);
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < teams[i].nmembers || k == 0; k++) {
                const char *cells[] = {teams[i].name, teams[i].nmembers ? teams[i].members[k] : ""};
                ctl_csv_row(stdout, cells, 2);
            }
        return CTL_EXIT_OK;
    }
    if (n == 0) {
        printf("No teams. Make one with: pgtallyctl team add NAME USER...\n");
        return CTL_EXIT_OK;
    }
    pgt_text_table_t *t = pgt_text_table_new(3, headers, right);
    int rc = t ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = team_row(t, &teams[i]);
    if (rc != 0) {
        pgt_text_table_free(t);
        return CTL_EXIT_ERROR;
    }
    return ctl_table_print(t, stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
}

static int cmd_list(ctl_env_t *env, int argc, char **argv)
{
    args_t a;
    int rc = parse(env, argc, argv, list_opts, 0, NULL, &a);
    if (rc >= 0)
        return rc;
    pgt_db_t *db;
    if (ctl_open_store(env, CTL_STORE_READ, &db) != 0)
        return CTL_EXIT_ERROR;
    pgt_budget_config_t *cfg = NULL;
    char err[512];
    if (db && pgt_budget_config_load(db, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
        pgt_budget_store_close(db);
        return CTL_EXIT_ERROR;
    }
    rc = print_teams(cfg, a.list.format);
    pgt_budget_config_free(cfg);
    pgt_budget_store_close(db);
    return rc;
}

static const ctl_command_t subcommands[] = {
    {"add", cmd_add},
    {"rm", cmd_rm},
    {"list", cmd_list},
};

int ctl_cmd_team(ctl_env_t *env, int argc, char **argv)
{
    return ctl_dispatch(env, argc, argv, subcommands, sizeof(subcommands) / sizeof(subcommands[0]),
                        synopsis, help);
}
