/* Scratch SQLite files for the unit tests that need a real ledger: a
 * directory per test (SQLite puts -wal and -shm files next to the db) and
 * raw SQL that fails the test on error. */
#ifndef TXP_TEST_TMPDB_H
#define TXP_TEST_TMPDB_H

#include <sqlite3.h>

struct tmpdb {
    char dir[64];
    char path[96];
};

/* Makes /tmp/txp-<name>-XXXXXX/users.db's directory and quiets the log to
 * errors (the cases warn on purpose). */
void tmpdb_make(struct tmpdb *t, const char *name);
/* Removes the db, its -wal/-shm/-journal and the directory. */
void tmpdb_remove(struct tmpdb *t);
/* Runs sql; the test fails if it does. */
void raw_exec(sqlite3 *db, const char *sql);

#endif
