/* Unit tests of configuration parsing: values, errors that name file, line
 * and key, and the cross-key checks. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pgtally/config.h"
#include "task.h"

static void test_values(void)
{
    static const struct {
        const char *key, *value;
        int ok;
    } cases[] = {
        {"listen", "127.0.0.1:6433", 1},
        {"listen", "[::1]:6433", 1},
        {"listen", "localhost", 0},
        {"listen", "h:0", 0},
        {"listen", "h:70000", 0},
        {"client_tls", "require", 1},
        {"client_tls", "maybe", 0},
        {"upstream_tls", "verify-full", 1},
        {"upstream_tls", "verify", 0},
        {"max_clients", "10", 1},
        {"max_clients", "0", 0},
        {"max_clients", "ten", 0},
        {"startup_timeout", "500ms", 1},
        {"startup_timeout", "2m", 1},
        {"startup_timeout", "soon", 0},
        {"max_message_size", "64MB", 1},
        {"max_message_size", "2GB", 0},
        {"max_startup_packet_size", "10001", 0},
        {"log_level", "debug", 1},
        {"log_level", "loud", 0},
        {"no_such_key", "1", 0},
        {"timezone", "Europe/Berlin", 1},
        {"timezone", "UTC", 1},
        {"timezone", "Mars/Base", 0},
        {"timezone", "zone.tab", 0},
        {"timezone", "../etc/passwd", 0},
        {"timezone", "", 0},
        {"admin_conninfo", "host=db user=x", 1},
        {"admin_conninfo", "", 1},
        {"budget.contact", "ask #data", 1},
        {"budget.notice_above", "0", 1},
        {"budget.notice_above", "0.25", 1},
        {"budget.notice_above", "-1", 0},
        {"budget.notice_above", "cheap", 0},
        {"budget.unknown_estimate", "run", 1},
        {"budget.unknown_estimate", "refuse", 1},
        {"budget.unknown_estimate", "Refuse", 0},
        {"budget.unknown_estimate", "cancel", 0},
        {"budget.unknown_estimate", "", 0},
        {"budget.exempt_users", "a, b", 1},
        {"budget.check_interval", "50", 1},
        {"budget.check_interval", "5000", 1},
        {"budget.check_interval", "49", 0},
        {"budget.check_interval", "5001", 0},
        {"budget.check_interval", "1s", 1},
        {"budget.check_interval", "10s", 0},
        {"budget.role_refresh", "5m", 1},
        {"budget.role_refresh", "0", 0},
        {"budget.role_refresh", "often", 0},
        {"pricing.per_query", "0.001", 1},
        {"pricing.per_query", "-0.001", 0},
        {"report.top", "1", 1},
        {"report.top", "50", 1},
        {"report.top", "0", 0},
        {"report.top", "51", 0},
        {"report.top", "ten", 0},
        {"report.regression_min_cost", "0.0001", 1},
        {"report.regression_min_cost", "0", 1},
        {"report.regression_min_cost", "-0.01", 0},
        {"report.regression_min_cost", "cheap", 0},
        {"report.duplicate_min_runs", "1", 1},
        {"report.duplicate_min_runs", "1000000", 1},
        {"report.duplicate_min_runs", "0", 0},
        {"report.duplicate_min_runs", "often", 0},
        {"report.show_literals", "true", 1},
        {"report.show_literals", "off", 1},
        {"report.show_literals", "maybe", 0},
        {"admin.auth_database", "postgres", 1},
        {"admin.auth_database", "", 0},
        {"admin.auth_database", "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
         1},
        {"admin.auth_database", "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
         0},
        {"admin.admin_users", "alice, bob", 1},
        {"admin.admin_users", "", 1},
        {"admin.stats_users", "grafana", 1},
        {"admin.stats_users", "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu",
         0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pgt_config_t *cfg = pgt_config_new();
        char err[256] = "";
        int rc = pgt_config_set(cfg, cases[i].key, cases[i].value, err, sizeof(err));
        if ((rc == 0) != cases[i].ok)
            fprintf(stderr, "case %s=%s: rc=%d err=%s\n", cases[i].key, cases[i].value, rc, err);
        CHECK_INT(rc == 0, cases[i].ok);
        if (rc != 0)
            CHECK(strstr(err, cases[i].key) != NULL);
        pgt_config_free(cfg);
    }
    pgt_config_t *cfg = pgt_config_new();
    char err[256];
    CHECK_INT(pgt_config_set(cfg, "startup_timeout", "2m", err, sizeof(err)), 0);
    CHECK_INT(cfg->startup_timeout_ms, 120000);
    CHECK_INT(pgt_config_set(cfg, "max_message_size", "64MB", err, sizeof(err)), 0);
    CHECK_INT(cfg->max_message_size, 64 << 20);
    CHECK_INT(pgt_config_set(cfg, "listen", "[::1]:7000", err, sizeof(err)), 0);
    CHECK_STR(cfg->listen_host, "::1");
    CHECK_INT(cfg->listen_port, 7000);
    pgt_config_free(cfg);
}

static void test_budget_keys(void)
{
    pgt_config_t *cfg = pgt_config_new();
    char err[256];
    /* Defaults. */
    CHECK_STR(cfg->timezone, "UTC");
    CHECK_STR(cfg->admin_conninfo, "");
    CHECK_STR(cfg->budget_contact, "");
    CHECK_INT(cfg->budget_notice_above_micro, 100000);
    CHECK_INT(cfg->budget_exempt_count, 0);
    CHECK_INT(cfg->budget_check_interval_ms, 250);
    CHECK_INT(cfg->budget_role_refresh_ms, 60000);
    CHECK(!pgt_config_budget_exempt(cfg, "alice"));
    CHECK_INT(pgt_config_set(cfg, "timezone", "America/New_York", err, sizeof(err)), 0);
    CHECK_STR(cfg->timezone, "America/New_York");
    CHECK_INT(pgt_config_set(cfg, "budget.notice_above", "0.5", err, sizeof(err)), 0);
    CHECK_INT(cfg->budget_notice_above_micro, 500000);
    CHECK_INT(cfg->budget_unknown_refuse, 0);
    CHECK_INT(pgt_config_set(cfg, "budget.unknown_estimate", "refuse", err, sizeof(err)), 0);
    CHECK_INT(cfg->budget_unknown_refuse, 1);
    CHECK_INT(pgt_config_set(cfg, "budget.unknown_estimate", "never", err, sizeof(err)), -1);
    CHECK(strstr(err, "'budget.unknown_estimate'") != NULL);
    CHECK(strstr(err, "'never' is not allowed; use run or refuse") != NULL);
    CHECK_INT(pgt_config_set(cfg, "budget.unknown_estimate", "run", err, sizeof(err)), 0);
    CHECK_INT(cfg->budget_unknown_refuse, 0);
    CHECK_INT(pgt_config_set(cfg, "budget.exempt_users", " etl , ,admin,", err, sizeof(err)), 0);
    CHECK_INT(cfg->budget_exempt_count, 2);
    CHECK_STR(cfg->budget_exempt_users[0], "etl");
    CHECK_STR(cfg->budget_exempt_users[1], "admin");
    CHECK(cfg->budget_exempt_users[2] == NULL);
    CHECK(pgt_config_budget_exempt(cfg, "admin"));
    CHECK(!pgt_config_budget_exempt(cfg, "adm"));
    CHECK_STR(cfg->admin_auth_database, "postgres");
    CHECK_INT(pgt_config_set(cfg, "admin.stats_users", " grafana ,ops", err, sizeof(err)), 0);
    CHECK_INT(cfg->admin_stats_count, 2);
    CHECK(pgt_config_list_has(cfg->admin_stats_users, cfg->admin_stats_count, "ops"));
    CHECK(!pgt_config_list_has(cfg->admin_stats_users, cfg->admin_stats_count, "op"));
    CHECK(!pgt_config_list_has(cfg->admin_stats_users, cfg->admin_stats_count, NULL));
    /* The text as set is kept for the console's SHOW CONFIG. */
    const pgt_config_key_t *keys = pgt_config_keys();
    size_t k = 0;
    while (strcmp(keys[k].name, "admin.stats_users") != 0)
        k++;
    CHECK_STR(pgt_config_set_value(cfg, k), " grafana ,ops");
    /* A key left alone has no text: its default. A refused value is not kept. */
    CHECK(pgt_config_set_value(cfg, 0) == NULL);
    CHECK_INT(pgt_config_set(cfg, "admin.stats_users", "x\001y", err, sizeof(err)), -1);
    CHECK_STR(pgt_config_set_value(cfg, k), " grafana ,ops");
    CHECK_INT(cfg->admin_stats_count, 2);
    CHECK_INT(pgt_config_set(cfg, "budget.exempt_users", "", err, sizeof(err)), 0);
    CHECK_INT(cfg->budget_exempt_count, 0);
    CHECK_INT(pgt_config_set(cfg, "budget.check_interval", "1s", err, sizeof(err)), 0);
    CHECK_INT(cfg->budget_check_interval_ms, 1000);
    CHECK_INT(pgt_config_set(cfg, "budget.check_interval", "100", err, sizeof(err)), 0);
    CHECK_INT(cfg->budget_check_interval_ms, 100);
    CHECK_INT(pgt_config_set(cfg, "budget.role_refresh", "90", err, sizeof(err)), 0);
    CHECK_INT(cfg->budget_role_refresh_ms, 90000);
    /* A wrong zone says what is allowed, with an example. */
    CHECK_INT(pgt_config_set(cfg, "timezone", "Berlin", err, sizeof(err)), -1);
    CHECK(strstr(err, "key 'timezone'") && strstr(err, "Europe/Berlin"));
    CHECK_INT(pgt_config_check_timezone("Berlin", err, sizeof(err)), -1);
    CHECK(strstr(err, "unknown time zone 'Berlin'") != NULL);
    pgt_config_free(cfg);
}

static const char *write_file(const char *text)
{
    static char path[] = "/tmp/pgtally-test-config-XXXXXX";
    strcpy(path, "/tmp/pgtally-test-config-XXXXXX");
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_file_errors(void)
{
    static const struct {
        const char *text;
        const char *want; /* substring of the error, or NULL for success */
    } cases[] = {
        {"[pgtally]\nlisten = 127.0.0.1:7000\nlog_level = debug\n", NULL},
        {"; comment\n[pgtally]\nlisten = 127.0.0.1:7000\nclient_tls = sometimes\n",
         ":4: key 'client_tls': 'sometimes' is not allowed; use disable, allow or require"},
        {"[pgtally]\nlisten_port = 1\n", ":2: unknown key 'listen_port'"},
        {"[proxy]\nlisten = 127.0.0.1:1\n", ":2: section [proxy]"},
        {"[pgtally]\nthis is not ini\n", ":2: syntax error"},
        {"[pgtally]\nlisten = 127.0.0.1:7000\n[budget]\ncontact = ask #data\nnotice_above = 1\n",
         NULL},
        {"[pgtally]\ntimezone = Mars/Base\n",
         ":2: key 'timezone': 'Mars/Base' is not allowed; use an IANA time zone name such as "
         "Europe/Berlin, or UTC"},
        {"[budget]\nnotice_above = lots\n", ":2: key 'budget.notice_above': 'lots'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *path = write_file(cases[i].text);
        pgt_config_t *cfg = pgt_config_new();
        char err[512] = "";
        int rc = pgt_config_load_file(cfg, path, err, sizeof(err));
        if (!cases[i].want) {
            CHECK_INT(rc, 0);
            CHECK_INT(cfg->listen_port, 7000);
        } else {
            CHECK_INT(rc, -1);
            if (!strstr(err, cases[i].want) || !strstr(err, path))
                fprintf(stderr, "case %zu: got \"%s\", want \"%s\"\n", i, err, cases[i].want);
            CHECK(strstr(err, cases[i].want) != NULL);
            CHECK(strstr(err, path) != NULL);
        }
        pgt_config_free(cfg);
        unlink(path);
    }
}

static void test_checks(void)
{
    pgt_config_t *cfg = pgt_config_new();
    char err[256];
    CHECK_INT(pgt_config_check(cfg, err, sizeof(err)), 0);
    CHECK_INT(pgt_config_set(cfg, "client_tls", "require", err, sizeof(err)), 0);
    CHECK_INT(pgt_config_check(cfg, err, sizeof(err)), -1);
    CHECK(strstr(err, "client_tls_cert_file") != NULL);
    CHECK_INT(pgt_config_set(cfg, "upstream_tls", "verify-full", err, sizeof(err)), 0);
    CHECK_INT(pgt_config_set(cfg, "client_tls", "disable", err, sizeof(err)), 0);
    CHECK_INT(pgt_config_check(cfg, err, sizeof(err)), -1);
    CHECK(strstr(err, "upstream_tls_ca_file") != NULL);
    pgt_config_free(cfg);
}

/* Sets key to value in cfg, expecting rc; on failure the error must hold
 * want (when not NULL). */
static void set_expect(pgt_config_t *cfg, const char *key, const char *value, int rc,
                       const char *want)
{
    char err[512] = "";
    int got = pgt_config_set(cfg, key, value, err, sizeof(err));
    if (got != rc || (want && !strstr(err, want)))
        fprintf(stderr, "%s=%s: rc=%d err=\"%s\", want rc=%d \"%s\"\n", key, value, got, err, rc,
                want ? want : "");
    CHECK_INT(got, rc);
    if (want)
        CHECK(strstr(err, want) != NULL);
}

static void test_report_keys(void)
{
    pgt_config_t *cfg = pgt_config_new();
    char err[512];
    /* Defaults: 09:00, three days of catch-up, a minute before a retry. */
    CHECK_INT(cfg->report_time_min, 540);
    CHECK_INT(cfg->report_catch_up_days, 3);
    CHECK_INT(cfg->report_retry_interval_ms, 60000);
    CHECK(cfg->report_slack_webhook_url == NULL && cfg->report_smtp_url == NULL);
    set_expect(cfg, "report.time", "7:05", 0, NULL);
    CHECK_INT(cfg->report_time_min, 7 * 60 + 5);
    set_expect(cfg, "report.time", "23:59", 0, NULL);
    set_expect(cfg, "report.time", "24:00", -1, "HH:MM");
    set_expect(cfg, "report.time", "9:5", -1, "HH:MM");
    set_expect(cfg, "report.time", "noon", -1, "HH:MM");
    set_expect(cfg, "report.catch_up_days", "0", 0, NULL);
    set_expect(cfg, "report.catch_up_days", "366", -1, NULL);
    set_expect(cfg, "report.retry_interval", "500ms", 0, NULL);
    CHECK_INT(cfg->report_retry_interval_ms, 500);
    set_expect(cfg, "report.retry_interval", "2h", -1, NULL);
    /* A webhook URL is a secret: a bad one is not echoed. */
    set_expect(cfg, "report.slack_webhook_url", "ftp://hooks/T0/SECRET", -1, "https://");
    CHECK_INT(pgt_config_set(cfg, "report.slack_webhook_url", "ftp://x/SECRET", err, sizeof(err)),
              -1);
    CHECK(strstr(err, "SECRET") == NULL);
    set_expect(cfg, "report.slack_webhook_url", "https://hooks.slack.com/services/T/B/x", 0, NULL);
    /* ...or read from a file, trimmed; not both. */
    const char *path = write_file("  https://hooks.slack.com/services/T/B/fromfile \n");
    set_expect(cfg, "report.slack_webhook_url_file", path, -1, "exclude each other");
    pgt_config_free(cfg);
    cfg = pgt_config_new();
    set_expect(cfg, "report.slack_webhook_url_file", path, 0, NULL);
    CHECK_STR(cfg->report_slack_webhook_url, "https://hooks.slack.com/services/T/B/fromfile");
    unlink(path);
    set_expect(cfg, "report.slack_webhook_url_file", path, -1, "cannot read");
    path = write_file("\n \n");
    set_expect(cfg, "report.slack_webhook_url_file", path, -1, "is empty");
    unlink(path);
    /* Mail. */
    set_expect(cfg, "report.smtp_url", "http://mail:25", -1, "smtp://host:587");
    set_expect(cfg, "report.smtp_url", "smtp://mail.example.com:587", 0, NULL);
    CHECK_INT(pgt_config_check(cfg, err, sizeof(err)), -1);
    CHECK(strstr(err, "report.mail_from") != NULL);
    set_expect(cfg, "report.mail_from", "Pgtally <p@example.com>", -1, "bare address");
    set_expect(cfg, "report.mail_from", "pgtally@example.com", 0, NULL);
    set_expect(cfg, "report.mail_to", "a@example.com, b", -1, "'b' is not an address");
    set_expect(cfg, "report.mail_to", "a@example.com\r\nBcc: x@evil", -1, NULL);
    set_expect(cfg, "report.mail_to", " a@example.com, b@example.com ", 0, NULL);
    CHECK_INT(cfg->report_mail_to_count, 2);
    CHECK_STR(cfg->report_mail_to[1], "b@example.com");
    CHECK_INT(pgt_config_check(cfg, err, sizeof(err)), 0);
    set_expect(cfg, "report.smtp_user", "bob", 0, NULL);
    CHECK_INT(pgt_config_check(cfg, err, sizeof(err)), -1);
    CHECK(strstr(err, "smtp_password_file") != NULL);
    path = write_file("s3cret\n");
    set_expect(cfg, "report.smtp_password_file", path, 0, NULL);
    unlink(path);
    CHECK_STR(cfg->report_smtp_password, "s3cret");
    CHECK_INT(pgt_config_check(cfg, err, sizeof(err)), 0);
    set_expect(cfg, "report.smtp_tls", "none", 0, NULL);
    CHECK_INT(pgt_config_check(cfg, err, sizeof(err)), -1);
    CHECK(strstr(err, "in clear") != NULL);
    set_expect(cfg, "report.smtp_tls", "maybe", -1, "starttls or none");
    set_expect(cfg, "report.ca_file", "/nonexistent/ca.pem", -1, "cannot read");
    pgt_config_free(cfg);
    /* Recipients without a server. */
    cfg = pgt_config_new();
    set_expect(cfg, "report.mail_to", "a@example.com", 0, NULL);
    CHECK_INT(pgt_config_check(cfg, err, sizeof(err)), -1);
    CHECK(strstr(err, "report.smtp_url") != NULL);
    pgt_config_free(cfg);
}

int main(void)
{
    test_values();
    test_budget_keys();
    test_file_errors();
    test_checks();
    test_report_keys();
    TASK_DONE();
}
