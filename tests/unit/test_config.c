/* Unit tests of configuration parsing: values, errors that name file, line
 * and key, and the cross-key checks. */
#include <stdio.h>
#include <unistd.h>

#include "pgtally/config.h"
#include "task.h"

static void test_values(void)
{
    static const struct {
        const char *key, *value;
        int ok;
    } cases[] = {
        {"listen", "127.0.0.1:6433", 1}, {"listen", "[::1]:6433", 1},
        {"listen", "localhost", 0},      {"listen", "h:0", 0},
        {"listen", "h:70000", 0},        {"client_tls", "require", 1},
        {"client_tls", "maybe", 0},      {"upstream_tls", "verify-full", 1},
        {"upstream_tls", "verify", 0},   {"max_clients", "10", 1},
        {"max_clients", "0", 0},         {"max_clients", "ten", 0},
        {"startup_timeout", "500ms", 1}, {"startup_timeout", "2m", 1},
        {"startup_timeout", "soon", 0},  {"max_message_size", "64MB", 1},
        {"max_message_size", "2GB", 0},  {"max_startup_packet_size", "10001", 0},
        {"log_level", "debug", 1},       {"log_level", "loud", 0},
        {"no_such_key", "1", 0},
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

int main(void)
{
    test_values();
    test_file_errors();
    test_checks();
    TASK_DONE();
}
