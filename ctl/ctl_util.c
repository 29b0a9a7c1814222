/* pgtallyctl's shared pieces: the config, ledger and time zone lookup,
 * option parsing, times and amounts, and writing tables, CSV and JSON. */
#include "ctl.h"

#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pgtally/budget_store.h"
#include "pgtally/config.h"
#include "pgtally/period.h"
#include "pgtally/pricing.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define US_PER_S 1000000LL
#define DAY_S 86400LL

static const char *const format_names[] = {
#define X(name, str) str,
    CTL_FORMAT_MAP(X)
#undef X
};

static int lookup(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

int ctl_format_parse(const char *s, ctl_format_t *out)
{
    int i = lookup(format_names, NELEMS(format_names), s);
    if (i < 0)
        return -1;
    *out = (ctl_format_t)i;
    return 0;
}

/* ---- Config and ledger ------------------------------------------------ */

/* Makes the config's zone (or, without a config, $TZ, else UTC) the local
 * time zone. Returns 0, or prints why and returns -1. */
static int apply_timezone(ctl_env_t *env, const pgt_config_t *cfg)
{
    const char *tz = getenv("TZ");
    if (!cfg && tz && tz[0]) {
        snprintf(env->timezone, sizeof(env->timezone), "%s", tz);
        return 0;
    }
    char err[512];
    const char *zone = cfg ? cfg->timezone : "UTC";
    if (pgt_timezone_apply(zone, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", env->prog, err);
        return -1;
    }
    snprintf(env->timezone, sizeof(env->timezone), "%s", zone);
    return 0;
}

int ctl_env_resolve(ctl_env_t *env)
{
    if (env->resolved_ledger)
        return 0;
    snprintf(env->currency, sizeof(env->currency), "USD");
    const char *config = env->config_path;
    if (!config && !env->ledger_path && access("pgtally.ini", F_OK) == 0)
        config = "pgtally.ini";
    const char *ledger = env->ledger_path;
    pgt_config_t *cfg = NULL;
    if (config) {
        char err[1024];
        cfg = pgt_config_new();
        if (!cfg || pgt_config_load_file(cfg, config, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: %s\n", env->prog, cfg ? err : "out of memory");
            pgt_config_free(cfg);
            return -1;
        }
        snprintf(env->currency, sizeof(env->currency), "%s", cfg->currency);
        if (!ledger)
            ledger = cfg->ledger_path;
    }
    int rc = apply_timezone(env, cfg);
    env->resolved_ledger = rc == 0 ? strdup(ledger ? ledger : "pgtally.db") : NULL;
    pgt_config_free(env->config);
    env->config = cfg;
    if (rc == 0 && !env->resolved_ledger) {
        fprintf(stderr, "%s: out of memory\n", env->prog);
        return -1;
    }
    env->where.ledger = env->resolved_ledger;
    env->where.schema = cfg ? cfg->ledger_schema : NULL;
    if (env->resolved_ledger)
        pgt_db_describe(env->resolved_ledger, env->shown_ledger, sizeof(env->shown_ledger));
    return rc;
}

void ctl_env_free(ctl_env_t *env)
{
    free(env->resolved_ledger);
    env->resolved_ledger = NULL;
    pgt_config_free(env->config);
    env->config = NULL;
}

int ctl_common_opt(ctl_env_t *env, int id, const char *value)
{
    if (id == CTL_OPT_CONFIG)
        env->config_path = value;
    else if (id == CTL_OPT_LEDGER)
        env->ledger_path = value;
    else
        return 0;
    return 1;
}

int ctl_format_opt(const char *value, ctl_format_t *out, char *what, size_t len)
{
    if (ctl_format_parse(value, out) == 0)
        return 0;
    snprintf(what, len, "bad --format '%s': expected table, json or csv", value);
    return -1;
}

int ctl_date_opt(const char *value, int *y, int *m, int *d, char *what, size_t len)
{
    if (ctl_parse_date(value, y, m, d) == 0)
        return 0;
    snprintf(what, len, "bad --date '%s': expected a date as YYYY-MM-DD", value);
    return -1;
}

int ctl_list_apply(ctl_env_t *env, void *args, int id, const char *value, char *what, size_t len)
{
    ctl_list_args_t *a = args;
    if (id == CTL_OPT_FORMAT)
        return ctl_format_opt(value, &a->format, what, len);
    if (id == CTL_OPT_HELP) {
        a->help = true;
        return 0;
    }
    return ctl_common_opt(env, id, value) ? 0 : -1;
}

int ctl_day_apply(ctl_env_t *env, void *args, int id, const char *value, char *what, size_t len)
{
    ctl_day_args_t *a = args;
    if (id == CTL_OPT_DATE)
        return ctl_date_opt(value, &a->y, &a->m, &a->d, what, len);
    return ctl_list_apply(env, &a->list, id, value, what, len);
}

int ctl_out_open(ctl_out_t *o, ctl_env_t *env, ctl_format_t format, size_t ncols,
                 const char *const *heads, const bool *right, const char *const *csv_heads,
                 size_t ncsv)
{
    *o = (ctl_out_t){.env = env, .format = format};
    if (format == CTL_FORMAT_TABLE)
        return (o->table = pgt_text_table_new(ncols, heads, right)) ? 0 : -1;
    if (format == CTL_FORMAT_JSON)
        return (o->rows = json_array()) ? 0 : -1;
    ctl_csv_row(stdout, csv_heads, ncsv);
    return 0;
}

int ctl_out_fail(ctl_out_t *o, const char *err)
{
    fprintf(stderr, "%s: ledger %s: %s\n", o->env->prog, o->env->shown_ledger, err);
    pgt_text_table_free(o->table);
    json_decref(o->rows);
    o->table = NULL;
    o->rows = NULL;
    return CTL_EXIT_ERROR;
}

int ctl_usage_error(const ctl_env_t *env, const char *cmd, const char *synopsis, const char *what)
{
    fprintf(stderr, "%s%s%s: %s\n%sTry '%s%s%s --help' for more.\n", env->prog, cmd ? " " : "",
            cmd ? cmd : "", what, synopsis, env->prog, cmd ? " " : "", cmd ? cmd : "");
    return CTL_EXIT_USAGE;
}

int ctl_dispatch(ctl_env_t *env, int argc, char **argv, const ctl_command_t *subs, size_t n,
                 const char *synopsis, const char *help)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    for (size_t k = 0; argc >= 2 && k < n; k++)
        if (strcmp(subs[k].name, argv[1]) == 0)
            return subs[k].run(env, argc - 1, argv + 1);
    char what[256], names[128] = "";
    for (size_t k = 0; k < n; k++)
        snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
                 k == 0       ? ""
                 : k + 1 == n ? " or "
                              : ", ",
                 subs[k].name);
    if (argc < 2)
        snprintf(what, sizeof(what), "no subcommand given; use %s", names);
    else
        snprintf(what, sizeof(what), "unknown subcommand '%s'; use %s", argv[1], names);
    return ctl_usage_error(env, argv[0], synopsis, what);
}

/* ---- Options ---------------------------------------------------------- */

static const ctl_opt_t *find_long(const ctl_opt_t *opts, const char *name, size_t len)
{
    for (; opts->name; opts++)
        if (strlen(opts->name) == len && strncmp(opts->name, name, len) == 0)
            return opts;
    return NULL;
}

static const ctl_opt_t *find_short(const ctl_opt_t *opts, char c)
{
    for (; opts->name; opts++)
        if (opts->short_name && opts->short_name == c)
            return opts;
    return NULL;
}

int ctl_next_opt(int argc, char **argv, int *i, const ctl_opt_t *opts, int *id, const char **value,
                 char *err, size_t errlen)
{
    if (*i >= argc || argv[*i][0] != '-' || argv[*i][1] == '\0')
        return 0;
    const char *arg = argv[(*i)++];
    const ctl_opt_t *o;
    const char *inline_value = NULL;
    if (arg[1] == '-') {
        const char *name = arg + 2, *eq = strchr(name, '=');
        o = find_long(opts, name, eq ? (size_t)(eq - name) : strlen(name));
        inline_value = eq ? eq + 1 : NULL;
    } else {
        o = find_short(opts, arg[1]);
        inline_value = arg[2] ? arg + 2 : NULL;
    }
    if (!o) {
        snprintf(err, errlen, "unknown option '%s'", arg);
        return -1;
    }
    if (!o->has_value && inline_value) {
        snprintf(err, errlen, "option '--%s' takes no value", o->name);
        return -1;
    }
    if (o->has_value && !inline_value) {
        if (*i >= argc) {
            snprintf(err, errlen, "option '--%s' needs a value", o->name);
            return -1;
        }
        inline_value = argv[(*i)++];
    }
    *id = o->id;
    *value = inline_value;
    return 1;
}

int ctl_parse_positive(const char *s, int64_t *out)
{
    if (!isdigit((unsigned char)s[0]))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v <= 0)
        return -1;
    *out = v;
    return 0;
}

/* ---- Times ------------------------------------------------------------ */

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : days[m - 1];
}

/* Reads exactly n digits at *p into *out and advances. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int k = 0; k < n; k++) {
        if (!isdigit((unsigned char)(*p)[k]))
            return false;
        v = v * 10 + ((*p)[k] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool read_date(const char **p, int *y, int *m, int *d)
{
    if (!digits(p, 4, y) || *(*p)++ != '-' || !digits(p, 2, m) || *(*p)++ != '-' ||
        !digits(p, 2, d))
        return false;
    return *y >= 1970 && *m >= 1 && *m <= 12 && *d >= 1 && *d <= days_in_month(*y, *m);
}

int ctl_parse_date(const char *s, int *y, int *m, int *d)
{
    const char *p = s;
    return read_date(&p, y, m, d) && *p == '\0' ? 0 : -1;
}

/* Reads HH:MM[:SS[.frac]] into tm and *frac_us. */
static bool read_clock(const char **p, struct tm *tm, int64_t *frac_us)
{
    int h, mi, sec = 0;
    if (!digits(p, 2, &h) || *(*p)++ != ':' || !digits(p, 2, &mi))
        return false;
    if (**p == ':' && (++*p, !digits(p, 2, &sec)))
        return false;
    if (**p == '.') {
        ++*p;
        int64_t scale = 100000;
        if (!isdigit((unsigned char)**p))
            return false;
        for (; isdigit((unsigned char)**p); ++*p, scale /= 10)
            *frac_us += (**p - '0') * scale;
    }
    tm->tm_hour = h;
    tm->tm_min = mi;
    tm->tm_sec = sec;
    return h <= 23 && mi <= 59 && sec <= 59;
}

/* Reads Z, +HH:MM, +HHMM or +HH (or -) into *offset_s. */
static bool read_zone(const char **p, long *offset_s)
{
    if (**p == 'Z' || **p == 'z') {
        ++*p;
        *offset_s = 0;
        return true;
    }
    int sign = **p == '-' ? -1 : 1, h, mi = 0;
    ++*p;
    if (!digits(p, 2, &h))
        return false;
    if (**p == ':')
        ++*p;
    if (isdigit((unsigned char)**p) && !digits(p, 2, &mi))
        return false;
    *offset_s = sign * (h * 3600L + mi * 60L);
    return h <= 23 && mi <= 59;
}

static int parse_absolute(const char *s, int64_t *out)
{
    struct tm tm = {0};
    int y, m, d;
    int64_t frac = 0;
    const char *p = s;
    if (!read_date(&p, &y, &m, &d))
        return -1;
    if ((*p == ' ' || *p == 'T' || *p == 't') && (++p, !read_clock(&p, &tm, &frac)))
        return -1;
    long offset = 0;
    bool zoned = *p == 'Z' || *p == 'z' || *p == '+' || *p == '-';
    if (zoned && !read_zone(&p, &offset))
        return -1;
    if (*p)
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    time_t t;
    if (zoned) {
        t = timegm(&tm) - offset;
    } else {
        tm.tm_isdst = -1;
        t = mktime(&tm);
    }
    *out = (int64_t)t * US_PER_S + frac;
    return 0;
}

static int parse_relative(const char *s, int64_t now_us, int64_t *out)
{
    int64_t ago;
    if (pgt_duration_parse(s, &ago) != 0)
        return -1;
    *out = now_us - ago;
    return 0;
}

int ctl_parse_time(const char *s, int64_t now_us, int64_t *out)
{
    if (strcmp(s, "now") == 0) {
        *out = now_us;
        return 0;
    }
    if (s[0] == '-')
        return parse_relative(s + 1, now_us, out);
    return parse_absolute(s, out);
}

int64_t ctl_date_noon(int y, int m, int d)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d, .tm_hour = 12};
    tm.tm_isdst = -1;
    return (int64_t)mktime(&tm) * US_PER_S;
}

char *ctl_day(int y, int m, int d, int64_t *from, int64_t *to, char *date, size_t len)
{
    pgt_period_bounds(PGT_PERIOD_DAY, y ? ctl_date_noon(y, m, d) : pgt_clock_us(), from, to);
    time_t t = (time_t)(*from / US_PER_S);
    struct tm tm;
    strftime(date, len, "%Y-%m-%d", localtime_r(&t, &tm));
    return date;
}

int ctl_parse_amount(const ctl_env_t *env, const char *flag, const char *text, int64_t *out,
                     char *what, size_t len)
{
    char err[256];
    if (pgt_money_parse(text, env->currency, out, err, sizeof(err)) == 0)
        return 0;
    snprintf(what, len, "bad %s: %s", flag, err);
    return -1;
}

/* ---- Formatting ------------------------------------------------------- */

/* Splits unix microseconds into seconds and the microseconds within. */
static time_t split_us(int64_t us, long *micro)
{
    int64_t s = us / US_PER_S, r = us % US_PER_S;
    if (r < 0) {
        s--;
        r += US_PER_S;
    }
    *micro = (long)r;
    return (time_t)s;
}

char *ctl_fmt_local(int64_t us, char *buf, size_t len)
{
    long micro;
    time_t t = split_us(us, &micro);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

char *ctl_fmt_iso(int64_t us, bool utc, char *buf, size_t len)
{
    long micro;
    time_t t = split_us(us, &micro);
    struct tm tm;
    if (utc)
        gmtime_r(&t, &tm);
    else
        localtime_r(&t, &tm);
    char date[32], zone[8] = "Z";
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    if (!utc) {
        long off = tm.tm_gmtoff, a = (off < 0 ? -off : off) % 86400;
        snprintf(zone, sizeof(zone), "%c%02d:%02d", off < 0 ? '-' : '+', (int)(a / 3600),
                 (int)(a / 60 % 60));
    }
    snprintf(buf, len, "%s.%06ld%s", date, micro, zone);
    return buf;
}

char *ctl_fmt_bytes(int64_t b, char *buf, size_t len)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    if (b < 1024) {
        snprintf(buf, len, "%lld B", (long long)b);
        return buf;
    }
    double v = (double)b;
    size_t u = 0;
    for (v /= 1024; v >= 1024 && u + 1 < NELEMS(units); v /= 1024)
        u++;
    snprintf(buf, len, "%.1f %s", v, units[u]);
    return buf;
}

char *ctl_fmt_money(int64_t micro, const char *currency, char *buf, size_t len)
{
    char exact[PGT_MONEY_TEXT_MAX];
    pgt_money_format(micro, NULL, exact, sizeof(exact));
    /* Drop trailing zeros down to cents: 12.500000 -> 12.50. */
    size_t n = strlen(exact);
    while (n > 0 && exact[n - 1] == '0' && n - (size_t)(strchr(exact, '.') - exact) > 3)
        exact[--n] = '\0';
    snprintf(buf, len, "%s%s%s", exact, currency && currency[0] ? " " : "",
             currency ? currency : "");
    return buf;
}

/* ---- Output ---------------------------------------------------------- */

int ctl_json_print(json_t *root, FILE *f)
{
    int rc = root ? json_dumpf(root, f, JSON_INDENT(2) | JSON_REAL_PRECISION(12)) : -1;
    json_decref(root);
    if (rc == 0 && fputc('\n', f) == EOF)
        rc = -1;
    return rc;
}

/* Writes b to f and frees it. Returns 0, or -1 when b failed or writing
 * fails. */
static int write_buf(pgt_buf_t *b, FILE *f)
{
    int rc = b->failed || (b->len && fwrite(b->s, 1, b->len, f) != b->len) ? -1 : 0;
    pgt_buf_free(b);
    return rc;
}

void ctl_csv_row(FILE *f, const char *const *cells, size_t n)
{
    pgt_buf_t b = {0};
    pgt_text_csv_row(&b, cells, n, "\n");
    (void)write_buf(&b, f);
}

int ctl_table_print(pgt_text_table_t *t, FILE *f)
{
    pgt_buf_t b = {0};
    pgt_text_table_print(t, &b);
    pgt_text_table_free(t);
    return write_buf(&b, f);
}

int ctl_with_reader(ctl_env_t *env, ctl_read_fn run, const void *args)
{
    pgt_ledger_reader_t *rd = ctl_open_reader(env);
    if (!rd)
        return CTL_EXIT_ERROR;
    int rc = run(env, args, rd);
    pgt_ledger_reader_close(rd);
    return rc;
}

pgt_ledger_reader_t *ctl_open_reader(ctl_env_t *env)
{
    if (ctl_env_resolve(env) != 0)
        return NULL;
    char err[512];
    pgt_ledger_reader_t *rd = pgt_ledger_reader_open(&env->where, err, sizeof(err));
    if (!rd)
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
    return rd;
}

int ctl_parse_args(ctl_env_t *env, int argc, char **argv, const ctl_opt_t *opts, ctl_apply_fn apply,
                   void *args, const char **pos, size_t maxpos, size_t *npos, char *what,
                   size_t len)
{
    int i = 1, id, rc;
    const char *v;
    *npos = 0;
    for (;;) {
        while ((rc = ctl_next_opt(argc, argv, &i, opts, &id, &v, what, len)) == 1)
            if (apply(env, args, id, v, what, len) != 0)
                return -1;
        if (rc < 0)
            return -1;
        if (i >= argc)
            return 0;
        if (*npos == maxpos) {
            snprintf(what, len, "unexpected argument '%s'", argv[i]);
            return -1;
        }
        pos[(*npos)++] = argv[i++];
    }
}

int ctl_parse_opts(ctl_env_t *env, int argc, char **argv, const ctl_opt_t *opts, ctl_apply_fn apply,
                   void *args, char *what, size_t len)
{
    size_t npos;
    return ctl_parse_args(env, argc, argv, opts, apply, args, NULL, 0, &npos, what, len);
}

int ctl_open_store(ctl_env_t *env, ctl_store_mode_t mode, pgt_db_t **db)
{
    *db = NULL;
    if (ctl_env_resolve(env) != 0)
        return -1;
    char err[512];
    /* A PostgreSQL ledger to change gets its schema when missing, as from
     * the first pgtally: only the database must exist. */
    if (pgt_db_backend_of(env->where.ledger) == PGT_DB_SQLITE && mode == CTL_STORE_CHANGE &&
        access(env->where.ledger, F_OK) != 0) {
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, strerror(errno));
        return -1;
    }
    int rc = pgt_budget_store_open(&env->where, mode != CTL_STORE_READ, db, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "%s: ledger %s: %s\n", env->prog, env->shown_ledger, err);
    return rc < 0 ? -1 : 0;
}

int ctl_check_name(const char *what_name, const char *name, char *what, size_t len)
{
    bool ok = name[0] && strlen(name) <= PGT_BUDGET_SUBJECT_MAX;
    for (const unsigned char *p = (const unsigned char *)name; ok && *p; p++)
        ok = *p >= 0x20 && *p != 0x7F;
    if (!ok)
        snprintf(what, len,
                 "bad %s '%s': expected a name of 1 to %d characters without control characters",
                 what_name, name, PGT_BUDGET_SUBJECT_MAX);
    return ok ? 0 : -1;
}

static const ctl_opt_t common_opts[] = {
    CTL_COMMON_OPTS,
    {NULL, 0, false, 0},
};

int ctl_parse_rm(ctl_env_t *env, int argc, char **argv, const char *noun, const char *synopsis,
                 const char *help, int64_t *id)
{
    const char *pos[1];
    size_t npos;
    ctl_list_args_t a = {0};
    char cmd[64], what[512];
    snprintf(cmd, sizeof(cmd), "%s rm", noun);
    *id = 0;
    if (ctl_parse_args(env, argc, argv, common_opts, ctl_list_apply, &a, pos, 1, &npos, what,
                       sizeof(what)) != 0)
        return ctl_usage_error(env, cmd, synopsis, what);
    if (a.help) {
        printf("%s%s", synopsis, help);
        return CTL_EXIT_OK;
    }
    if (npos == 0) {
        snprintf(what, sizeof(what), "which %s? give its ID, as 'pgtallyctl %s list' shows", noun,
                 noun);
        return ctl_usage_error(env, cmd, synopsis, what);
    }
    if (ctl_parse_positive(pos[0], id) != 0) {
        *id = 0;
        snprintf(what, sizeof(what),
                 "bad %s ID '%s': expected a number from the ID column of 'pgtallyctl %s list'",
                 noun, pos[0], noun);
        return ctl_usage_error(env, cmd, synopsis, what);
    }
    return CTL_EXIT_OK;
}

int ctl_check_time(const char *flag, const char *v, char *what, size_t len)
{
    int64_t t;
    if (ctl_parse_time(v, pgt_clock_us(), &t) == 0)
        return 0;
    snprintf(what, len, "bad %s '%s': expected YYYY-MM-DD, 'YYYY-MM-DD HH:MM[:SS]' or ISO 8601",
             flag, v);
    return -1;
}

const char *ctl_os_user(void)
{
    const char *u = getenv("USER");
    if (u && u[0])
        return u;
    struct passwd *pw = getpwuid(getuid());
    return pw ? pw->pw_name : "unknown";
}
