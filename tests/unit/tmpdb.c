/* Scratch SQLite files for unit tests; see tmpdb.h. */
#include "tests/unit/tmpdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"
#include "tests/unit/unit.h"

void tmpdb_make(struct tmpdb *t, const char *name)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/txp-%s-XXXXXX", name);
    CHECK(mkdtemp(t->dir) != NULL);
    snprintf(t->path, sizeof t->path, "%s/users.db", t->dir);
    log_set_level(LOG_LEVEL_ERROR);
}

void tmpdb_remove(struct tmpdb *t)
{
    static const char *const suffixes[] = { "", "-wal", "-shm", "-journal" };
    for (unsigned i = 0; i < 4; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s%s", t->path, suffixes[i]);
        unlink(p);
    }
    CHECK(rmdir(t->dir) == 0);
}

void raw_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        fprintf(stderr, "  %s: %s\n", sql, err ? err : "?");
    sqlite3_free(err);
    CHECK(rc == SQLITE_OK);
}
