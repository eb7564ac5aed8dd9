/* SQLite plumbing shared by the ledger's schema, seed and apply code: one way
 * to open the file, run fixed SQL and tell a passing error from a permanent
 * one. */
#include "ledger/sqlite_db.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

sqlite3 *ldb_open(const char *db_path, int create)
{
    /* Create the file ourselves: sqlite3_open_v2 would create it with 0644
     * minus umask, and balances are nobody else's business. */
    int fd = open(db_path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
    if (fd < 0) {
        log_error("open(%s): %s", db_path, strerror(errno));
        return NULL;
    }
    close(fd);

    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        log_error("sqlite3_open(%s): %s", db_path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db); /* a handle is returned even on failure */
        return NULL;
    }
    sqlite3_extended_result_codes(db, 1);
    return db;
}

void ldb_close(sqlite3 *db)
{
    if (db == NULL)
        return;
    int rc = sqlite3_close(db);
    if (rc != SQLITE_OK)
        log_error("sqlite3_close: %s (statement left unfinalized)", sqlite3_errstr(rc));
}

int ldb_exec(sqlite3 *db, const char *sql, const char *what)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        log_error("%s: %s (%s)", what, err ? err : sqlite3_errstr(rc), ldb_code_name(rc));
    sqlite3_free(err);
    return rc;
}

int ldb_query_number(sqlite3 *db, const char *sql, int64_t *as_int, double *as_real)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            if (as_int != NULL)
                *as_int = sqlite3_column_int64(st, 0);
            if (as_real != NULL)
                *as_real = sqlite3_column_double(st, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_ERROR; /* the queries used here always return a row */
        }
    }
    if (rc != SQLITE_OK)
        log_error("%s: %s", sql, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc;
}

int ldb_query_int64(sqlite3 *db, const char *sql, int64_t *out)
{
    return ldb_query_number(db, sql, out, NULL);
}

int ldb_enable_wal(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int ok = rc == SQLITE_ROW &&
             sqlite3_stricmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
    if (!ok)
        log_error("PRAGMA journal_mode=WAL: %s",
                  rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0)
                                   : sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return ok ? 0 : -1;
}

int ldb_rollback(sqlite3 *db)
{
    if (sqlite3_get_autocommit(db))
        return 0;
    ldb_exec(db, "ROLLBACK", "ROLLBACK");
    if (sqlite3_get_autocommit(db))
        return 0;
    log_error("connection still inside a transaction after ROLLBACK");
    return -1;
}

int ldb_transient(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
    case SQLITE_NOMEM:
    case SQLITE_INTERRUPT:
        return 1;
    default:
        return 0;
    }
}

const char *ldb_code_name(int rc)
{
    static const char *const names[] = {
        [SQLITE_OK] = "SQLITE_OK",           [SQLITE_ERROR] = "SQLITE_ERROR",
        [SQLITE_INTERNAL] = "SQLITE_INTERNAL", [SQLITE_PERM] = "SQLITE_PERM",
        [SQLITE_ABORT] = "SQLITE_ABORT",     [SQLITE_BUSY] = "SQLITE_BUSY",
        [SQLITE_LOCKED] = "SQLITE_LOCKED",   [SQLITE_NOMEM] = "SQLITE_NOMEM",
        [SQLITE_READONLY] = "SQLITE_READONLY", [SQLITE_INTERRUPT] = "SQLITE_INTERRUPT",
        [SQLITE_IOERR] = "SQLITE_IOERR",     [SQLITE_CORRUPT] = "SQLITE_CORRUPT",
        [SQLITE_NOTFOUND] = "SQLITE_NOTFOUND", [SQLITE_FULL] = "SQLITE_FULL",
        [SQLITE_CANTOPEN] = "SQLITE_CANTOPEN", [SQLITE_PROTOCOL] = "SQLITE_PROTOCOL",
        [SQLITE_EMPTY] = "SQLITE_EMPTY",     [SQLITE_SCHEMA] = "SQLITE_SCHEMA",
        [SQLITE_TOOBIG] = "SQLITE_TOOBIG",   [SQLITE_CONSTRAINT] = "SQLITE_CONSTRAINT",
        [SQLITE_MISMATCH] = "SQLITE_MISMATCH", [SQLITE_MISUSE] = "SQLITE_MISUSE",
        [SQLITE_NOLFS] = "SQLITE_NOLFS",     [SQLITE_AUTH] = "SQLITE_AUTH",
        [SQLITE_FORMAT] = "SQLITE_FORMAT",   [SQLITE_RANGE] = "SQLITE_RANGE",
        [SQLITE_NOTADB] = "SQLITE_NOTADB",   [SQLITE_NOTICE] = "SQLITE_NOTICE",
        [SQLITE_WARNING] = "SQLITE_WARNING", [SQLITE_ROW] = "SQLITE_ROW",
        [SQLITE_DONE] = "SQLITE_DONE",
    };
    unsigned code = (unsigned)rc & 0xff;
    if (code < sizeof names / sizeof names[0] && names[code] != NULL)
        return names[code];
    return "SQLITE_?";
}
