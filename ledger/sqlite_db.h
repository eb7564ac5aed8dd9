/* SQLite plumbing shared by the SQLite backend's parts (sqlite_schema.c:
 * create and migrate, sqlite_seed.c: demo accounts, sqlite_write.c: batch
 * apply), so that opening a
 * file, running fixed SQL and classifying errors happen the same way in each.
 * Private to ledger/: nothing outside the ledger includes this. */
#ifndef TXP_LEDGER_DB_H
#define TXP_LEDGER_DB_H

#include <sqlite3.h>
#include <stdint.h>

#define LDB_STR_(x) #x
#define LDB_STR(x) LDB_STR_(x)

/* The prototype's tables, exactly as it created them (schema version 0). */
#define LDB_SQL_CREATE_USERS                                                      \
    "CREATE TABLE IF NOT EXISTS users (card_number TEXT PRIMARY KEY, balance INTEGER)"
#define LDB_SQL_CREATE_TRANSACTIONS                                               \
    "CREATE TABLE IF NOT EXISTS transactions (id INTEGER PRIMARY KEY AUTOINCREMENT, " \
    "card_number TEXT, amount INTEGER, success INTEGER, "                          \
    "timestamp DATETIME DEFAULT CURRENT_TIMESTAMP)"

/* Opens db_path read-write. With create, a missing file is created with mode
 * 0600 (SQLite gives the -wal and -shm files the same mode as the database);
 * without, a missing file is an error. Returns the handle or NULL after
 * logging why. */
sqlite3 *ldb_open(const char *db_path, int create);

/* Closes db; a failure (unfinalized statements) is a bug and is logged. */
void ldb_close(sqlite3 *db);

/* Runs fixed SQL (one or more statements, no parameters). Returns the SQLite
 * result code; logs "<what>: <error>" on failure. */
int ldb_exec(sqlite3 *db, const char *sql, const char *what);

/* Runs a one-row, one-column query and stores column 0 as an integer (0 for
 * NULL). Returns the SQLite result code; logs on failure. */
int ldb_query_int64(sqlite3 *db, const char *sql, int64_t *out);
/* The same, storing column 0 as an integer and/or a double (either may be NULL). */
int ldb_query_number(sqlite3 *db, const char *sql, int64_t *as_int, double *as_real);

/* Switches the database to WAL. Returns 0, or -1 (logged) if SQLite refused
 * or kept another journal mode. */
int ldb_enable_wal(sqlite3 *db);

/* Rolls back an open transaction if there is one (after a failed step or
 * commit SQLite may already have done it). Returns 0 when the connection is
 * back in autocommit mode, -1 (logged) if it is not. */
int ldb_rollback(sqlite3 *db);

/* 1 for errors that leave the database intact and may pass on a later try:
 * BUSY, LOCKED, IOERR, FULL, READONLY, CANTOPEN, PROTOCOL, NOMEM, INTERRUPT. */
int ldb_transient(int rc);

/* "SQLITE_BUSY", "SQLITE_IOERR"... for the primary code of rc. */
const char *ldb_code_name(int rc);

#endif
