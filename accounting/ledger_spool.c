/* The ledger's spool file: records the database could not take, as JSON
 * lines appended and synced on the writer thread, then replayed into the
 * database when it is back. Nothing here knows the database is SQLite. */
#include "ledger_int.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgtally/log.h"
#include "pgtally/period.h"

/* Sets key to s as a JSON string; text that is not UTF-8 goes, losslessly,
 * to key_hex as hex digits. NULL sets nothing. Returns 0 or -1. */
static int json_set_text(json_t *o, const char *key, const char *s)
{
    if (!s)
        return 0;
    json_t *v = json_string(s);
    if (v)
        return json_object_set_new(o, key, v);
    size_t n = strlen(s);
    char *hex = malloc(2 * n + 1);
    if (!hex)
        return -1;
    for (size_t i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)s[i]);
    char hkey[64];
    snprintf(hkey, sizeof(hkey), "%s_hex", key);
    int rc = json_object_set_new(o, hkey, json_string(hex));
    free(hex);
    return rc;
}

/* Returns a copy of key's text (or of the decoded key_hex), or NULL. */
static char *json_get_text(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    if (s)
        return strdup(s);
    char hkey[64];
    snprintf(hkey, sizeof(hkey), "%s_hex", key);
    const char *hex = json_string_value(json_object_get(o, hkey));
    if (!hex)
        return NULL;
    size_t n = strlen(hex) / 2;
    char *out = malloc(n + 1);
    for (size_t i = 0; out && i < n; i++) {
        unsigned b = 0;
        if (sscanf(hex + 2 * i, "%2x", &b) != 1)
            b = '?';
        out[i] = (char)b;
    }
    if (out)
        out[n] = '\0';
    return out;
}

/* Returns the record as a JSON object, or NULL when out of memory. */
static json_t *record_to_json(const pgt_record_t *r)
{
    double est = isfinite(r->est_planner_cost) ? r->est_planner_cost : -1;
    double compute_s = isfinite(r->compute_s) ? r->compute_s : 0;
    json_t *o = json_pack(
        "{sIsIsIsisIsIsfsIsfsIsIsIsssIsIsIsisIsI}", "started_us", (json_int_t)r->started_us,
        "finished_us", (json_int_t)r->finished_us, "session_id", (json_int_t)r->session_id,
        "backend_pid", (int)r->backend_pid, "fingerprint", (json_int_t)r->fingerprint, "constants",
        (json_int_t)r->constants, "est_planner_cost", est, "est_cost_micro",
        (json_int_t)r->est_cost_micro, "compute_s", compute_s, "rows", (json_int_t)r->rows,
        "bytes_out", (json_int_t)r->bytes_out, "cost_micro", (json_int_t)r->cost_micro, "status",
        pgt_query_status_name(r->status), "budget_id", (json_int_t)r->budget_id, "instance",
        (json_int_t)r->instance, "seq", (json_int_t)r->seq, "day", (int)r->day, "rule_id",
        (json_int_t)r->rule_id, "approval_id", (json_int_t)r->approval_id);
    if (!o)
        return NULL;
    char sqlstate[sizeof(r->sqlstate)];
    snprintf(sqlstate, sizeof(sqlstate), "%.*s", (int)sizeof(r->sqlstate) - 1, r->sqlstate);
    if (json_set_text(o, "user", r->user) || json_set_text(o, "database", r->database) ||
        json_set_text(o, "application", r->application) ||
        json_set_text(o, "client_addr", r->client_addr) || json_set_text(o, "tags", r->tags_json) ||
        json_set_text(o, "normalized", r->normalized) || json_set_text(o, "kind", r->kind) ||
        json_set_text(o, "protocol", r->protocol) || json_set_text(o, "sqlstate", sqlstate) ||
        json_set_text(o, "relations", r->relations)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int64_t json_get_i64(json_t *o, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

/* Returns a new record from a spool line's object, or NULL when it lacks
 * the start time (a damaged line) or memory runs out. */
static pgt_record_t *record_from_json(json_t *o)
{
    if (!json_is_integer(json_object_get(o, "started_us")))
        return NULL;
    pgt_record_t *r = pgt_record_new();
    if (!r)
        return NULL;
    r->started_us = json_get_i64(o, "started_us", 0);
    r->finished_us = json_get_i64(o, "finished_us", r->started_us);
    r->session_id = (uint64_t)json_get_i64(o, "session_id", 0);
    r->backend_pid = (int32_t)json_get_i64(o, "backend_pid", 0);
    r->fingerprint = (uint64_t)json_get_i64(o, "fingerprint", 0);
    r->constants = (uint64_t)json_get_i64(o, "constants", 0); /* before schema 10: unknown */
    json_t *pc = json_object_get(o, "est_planner_cost");
    r->est_planner_cost = json_is_number(pc) ? json_number_value(pc) : -1;
    r->est_cost_micro = json_get_i64(o, "est_cost_micro", -1);
    r->compute_s = json_number_value(json_object_get(o, "compute_s"));
    r->rows = json_get_i64(o, "rows", 0);
    r->bytes_out = json_get_i64(o, "bytes_out", 0);
    r->cost_micro = json_get_i64(o, "cost_micro", 0);
    r->budget_id = json_get_i64(o, "budget_id", 0);
    r->rule_id = json_get_i64(o, "rule_id", 0);
    r->approval_id = json_get_i64(o, "approval_id", 0);
    r->instance = json_get_i64(o, "instance", 0);
    r->seq = json_get_i64(o, "seq", 0);
    r->day = (int32_t)json_get_i64(o, "day", 0);
    if (pgt_query_status_parse(json_string_value(json_object_get(o, "status")), &r->status) != 0)
        r->status = PGT_QUERY_ERROR;
    const char *sqlstate = json_string_value(json_object_get(o, "sqlstate"));
    snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", sqlstate ? sqlstate : "");
    r->user = json_get_text(o, "user");
    r->database = json_get_text(o, "database");
    r->application = json_get_text(o, "application");
    r->client_addr = json_get_text(o, "client_addr");
    r->tags_json = json_get_text(o, "tags");
    r->normalized = json_get_text(o, "normalized");
    r->kind = json_get_text(o, "kind");
    r->protocol = json_get_text(o, "protocol");
    /* Spools of releases before schema 9 have no relations: NULL. */
    r->relations = json_get_text(o, "relations");
    return r;
}

/* Sets l->error to what failed on the spool file, with errno's text. */
static void note_spool_error(pgt_ledger_t *l, const char *doing)
{
    snprintf(l->error, sizeof(l->error), "%s %s: %s", doing, l->spool_path, strerror(errno));
}

/* Writes v's records as JSON lines to f. Returns 0 or -1. */
static int spool_write_lines(FILE *f, const recvec_t *v)
{
    for (size_t i = 0; i < v->len; i++) {
        json_t *o = record_to_json(v->items[i]);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        int rc = line && fputs(line, f) >= 0 && fputc('\n', f) != EOF ? 0 : -1;
        free(line);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* Appends v to the spool file and syncs it. On failure the file is cut back
 * to its old size, so a record is either in the spool or still in v.
 * Returns 0, or -1 with l->error set. */
static int spool_append(pgt_ledger_t *l, const recvec_t *v)
{
    int fd = open(l->spool_path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    struct stat st;
    FILE *f = NULL;
    if (fd < 0 || fstat(fd, &st) != 0 || !(f = fdopen(fd, "a"))) {
        note_spool_error(l, "spool");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    /* A crash may have left a partial last line: end it, so the next
     * record starts on a line of its own. */
    char last = '\n';
    if (st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1)
        last = '\n';
    int rc = last == '\n' ? 0 : (fputc('\n', f) == EOF ? -1 : 0);
    if (rc == 0)
        rc = spool_write_lines(f, v);
    if (rc == 0 && (fflush(f) != 0 || fsync(fd) != 0))
        rc = -1;
    if (rc != 0) {
        note_spool_error(l, "spool");
        (void)fflush(f);
        if (ftruncate(fd, st.st_size) != 0)
            PGT_ERROR("ledger_spool_truncate_failed", "path=\"%s\"", l->spool_path);
    }
    if (fclose(f) != 0 && rc == 0) {
        note_spool_error(l, "spool");
        rc = -1;
    }
    return rc;
}

int ledger_spool_out(pgt_ledger_t *l, recvec_t *v)
{
    if (spool_append(l, v) != 0)
        return -1;
    l->wstats.spooled += v->len;
    l->spool_records += v->len;
    l->spool_has_data = true;
    ledger_mark_durable(l, v, true);
    ledger_recvec_clear(v);
    return 0;
}

void ledger_spool_held(pgt_ledger_t *l)
{
    size_t n = l->held.len;
    if (ledger_spool_out(l, &l->held) != 0) {
        if (!l->spool_failing)
            PGT_WARN("ledger_spool_failed", "error=\"%s\" in_memory=%zu", l->error, n);
        l->spool_failing = true;
        return;
    }
    if (l->spool_failing)
        PGT_INFO("ledger_spool_recovered", "path=\"%s\"", l->spool_path);
    l->spool_failing = false;
    PGT_INFO("ledger_spooled", "records=%zu path=\"%s\"", n, l->spool_path);
}

#define REPLAY_BATCH 1024 /* records inserted at a time */

/* Inserts the records of v and frees them. A record of a spool written
 * before records had ids gets one now. */
static int replay_some(pgt_ledger_t *l, recvec_t *v, uint64_t *count)
{
    for (size_t i = 0; i < v->len; i++) {
        pgt_record_t *r = v->items[i];
        if (r->seq <= 0) {
            r->instance = l->instance;
            r->seq = ledger_next_seq(l);
        }
        if (r->day == 0)
            r->day = pgt_local_day(r->started_us);
    }
    int rc = ledger_conn_insert(l, v->items, v->len);
    if (rc == 0)
        *count += v->len;
    ledger_recvec_clear(v);
    return rc;
}

int ledger_spool_replay(pgt_ledger_t *l, uint64_t *count)
{
    FILE *f = fopen(l->spool_path, "re");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        note_spool_error(l, "spool");
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, bad = 0;
    ssize_t len;
    int rc = 0;
    recvec_t v = {0};
    while (rc == 0 && (len = getline(&line, &cap, f)) > 0) {
        if (line[0] == '\n')
            continue;
        json_t *o = json_loadb(line, (size_t)len, 0, NULL);
        pgt_record_t *r = o ? record_from_json(o) : NULL;
        json_decref(o);
        if (!r) {
            bad++;
            continue;
        }
        if (ledger_recvec_push(&v, r) != 0) {
            pgt_record_free(r);
            snprintf(l->error, sizeof(l->error), "replaying the spool: out of memory");
            rc = -1;
        }
        if (rc == 0 && v.len == REPLAY_BATCH)
            rc = replay_some(l, &v, count);
    }
    if (rc == 0 && v.len)
        rc = replay_some(l, &v, count);
    ledger_recvec_clear(&v);
    free(v.items);
    if (rc == 0 && ferror(f)) {
        note_spool_error(l, "reading spool");
        rc = -1;
    }
    free(line);
    fclose(f);
    if (bad)
        PGT_WARN("ledger_spool_bad_lines", "path=\"%s\" skipped=%zu", l->spool_path, bad);
    return rc;
}

void ledger_spool_scan(pgt_ledger_t *l)
{
    FILE *f = fopen(l->spool_path, "re");
    if (!f)
        return;
    int c, prev = '\n';
    while ((c = getc(f)) != EOF) {
        if (c == '\n' && prev != '\n')
            l->spool_records++;
        prev = c;
    }
    l->spool_records += prev != '\n';
    fclose(f);
    l->spool_has_data = l->spool_records > 0;
    if (l->spool_has_data)
        PGT_INFO("ledger_spool_found", "path=\"%s\" lines=%llu", l->spool_path,
                 (unsigned long long)l->spool_records);
}

bool ledger_spool_writable(pgt_ledger_t *l)
{
    bool existed = access(l->spool_path, F_OK) == 0;
    int fd = open(l->spool_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(l->error + strlen(l->error), sizeof(l->error) - strlen(l->error), "; spool %s: %s",
                 l->spool_path, strerror(errno));
        return false;
    }
    close(fd);
    if (!existed)
        unlink(l->spool_path);
    return true;
}
