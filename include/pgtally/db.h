/* One connection to the ledger's database, whichever backend holds it: an
 * SQLite file or a PostgreSQL database reached through libpq. Callers write
 * one SQL text for both (the subset both dialects share, parameters as ?1,
 * ?2, ...) and read rows through one small set of getters; the few places
 * where the dialects differ ask pgt_db_backend. */
#ifndef PGTALLY_DB_H
#define PGTALLY_DB_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGT_DB_BACKEND_MAP(X)                                                                      \
    X(SQLITE, "sqlite")                                                                            \
    X(POSTGRESQL, "postgresql")

typedef enum {
#define X(name, str) PGT_DB_##name,
    PGT_DB_BACKEND_MAP(X)
#undef X
} pgt_db_backend_t;

const char *pgt_db_backend_name(pgt_db_backend_t b);
int pgt_db_backend_parse(const char *name, pgt_db_backend_t *out)
    __attribute__((warn_unused_result));

/* Which backend a ledger setting names: a postgresql:// or postgres:// URI,
 * or a libpq key=value conninfo, is PostgreSQL; anything else is the path
 * of an SQLite file. */
pgt_db_backend_t pgt_db_backend_of(const char *ledger);

/* Writes a ledger setting as it may be logged: an SQLite path as it is, a
 * PostgreSQL one as its host, port, database and user, never its password. */
void pgt_db_describe(const char *ledger, char *out, size_t outlen);

typedef struct pgt_db pgt_db_t;

/* How to open a connection. */
typedef struct pgt_db_opts {
    const char *ledger;  /* an SQLite path, or a PostgreSQL URI or conninfo */
    const char *schema;  /* PostgreSQL: the schema of the ledger's tables (NULL: "pgtally") */
    bool writable;       /* read-write, creating the SQLite file or the PostgreSQL schema */
    int busy_timeout_ms; /* SQLite: wait for another writer's lock (0: 2000) */
    bool nomutex;        /* SQLite: the connection is used by one thread only */
} pgt_db_opts_t;

/* Opens a connection. Returns it, or NULL with the cause in err (without
 * passwords). A PostgreSQL connection works in o->schema, which a writable
 * one creates when missing. */
pgt_db_t *pgt_db_open(const pgt_db_opts_t *o, char *err, size_t errlen);

/* Closes a connection. NULL is allowed. */
void pgt_db_close(pgt_db_t *db);

pgt_db_backend_t pgt_db_backend(const pgt_db_t *db);

/* The SQLite handle (struct sqlite3 *) or the libpq one (PGconn *) beneath,
 * for the backend-specific code of the ledger. */
void *pgt_db_handle(pgt_db_t *db);

/* The last error message of the connection. */
const char *pgt_db_errmsg(pgt_db_t *db);

/* One row of a result, valid while the row callback runs. */
typedef struct pgt_db_row pgt_db_row_t;

bool pgt_db_isnull(const pgt_db_row_t *r, int col);
/* A column as an integer (0 when NULL; a PostgreSQL boolean is 0 or 1). */
int64_t pgt_db_int(const pgt_db_row_t *r, int col);
/* A column as a double (0 when NULL). */
double pgt_db_double(const pgt_db_row_t *r, int col);
/* A column as text, or NULL when NULL. */
const char *pgt_db_text(const pgt_db_row_t *r, int col);

/* Called once per row; return 0 to go on, anything else stops the walk. */
typedef int (*pgt_db_row_cb)(const pgt_db_row_t *r, void *arg);

/* Runs one statement with one parameter per character of types: 'i' an
 * int64_t, 'n' an int64_t sent as NULL when negative, 'd' a double, 't' a
 * string (NULL sends NULL). Parameters are ?1, ?2, ... in sql. Each row
 * goes to cb (NULL: rows are ignored). Returns 0, cb's non-zero value, or
 * -1 with "doing: what failed" in err. */
int pgt_db_run(pgt_db_t *db, const char *doing, char *err, size_t errlen, pgt_db_row_cb cb,
               void *arg, const char *sql, const char *types, ...)
    __attribute__((warn_unused_result));
int pgt_db_vrun(pgt_db_t *db, const char *doing, char *err, size_t errlen, pgt_db_row_cb cb,
                void *arg, const char *sql, const char *types, va_list ap)
    __attribute__((warn_unused_result));

/* Runs sql that may hold several statements and no parameters. Returns 0,
 * or -1 with "doing: what failed" in err. */
int pgt_db_exec(pgt_db_t *db, const char *doing, const char *sql, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Runs a statement of one row and one integer column into *out (left alone
 * when there is no row). Returns 0, or -1 with the cause in err. */
int pgt_db_int_query(pgt_db_t *db, const char *doing, char *err, size_t errlen, int64_t *out,
                     const char *sql, const char *types, ...) __attribute__((warn_unused_result));

/* Rows the last statement of pgt_db_run changed. */
int64_t pgt_db_changes(pgt_db_t *db);

/* Starts a transaction; write takes SQLite's write lock at once. Returns 0,
 * or -1 with the cause in err. */
int pgt_db_begin(pgt_db_t *db, bool write, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Commits when rc is 0, otherwise rolls back. Returns rc, or -1 with the
 * cause in err when the commit fails. */
int pgt_db_finish(pgt_db_t *db, int rc, char *err, size_t errlen);

/* Whether the table exists (in the schema, for PostgreSQL). */
bool pgt_db_has_table(pgt_db_t *db, const char *table);

/* Whether table has the column (a ledger opened read-only may predate a
 * migration that added it). */
bool pgt_db_has_column(pgt_db_t *db, const char *table, const char *column);

/* Rewrites ?N parameters as $N outside quotes, for PostgreSQL. Returns a
 * new string, or NULL when out of memory. Exposed for its unit test. */
char *pgt_db_pg_sql(const char *sql);

#endif
