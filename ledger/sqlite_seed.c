/* Demo and benchmark SQLite ledgers: fills an empty users table with deterministic
 * accounts in the prototype's format, fast enough for a million rows (one
 * transaction, one prepared INSERT, no fsync until the end). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "ledger/backend.h"
#include "ledger/sqlite_db.h"

#define SEED_PROGRESS_EVERY 100000u
#define SEED_CACHE_KIB 65536 /* page cache for the bulk insert only */

static int insert_accounts(sqlite3 *db, unsigned accounts, unsigned seed, int64_t *sum)
{
    sqlite3_stmt *st = NULL;
    uint64_t state = seed;
    int rc = sqlite3_prepare_v2(db, "INSERT INTO users(card_number, balance) VALUES(?1, ?2)", -1,
                                &st, NULL);
    for (unsigned i = 0; rc == SQLITE_OK && i < accounts; i++) {
        char card[TXN_CARD_MAX + 1];
        ledger_seed_card(i, card);
        int64_t balance = ledger_seed_balance(&state);
        rc = sqlite3_bind_text(st, 1, card, -1, SQLITE_TRANSIENT);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 2, balance);
        if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_DONE)
            rc = sqlite3_reset(st);
        *sum += balance;
        if (accounts > SEED_PROGRESS_EVERY && (i + 1) % SEED_PROGRESS_EVERY == 0)
            log_info("seed: %u/%u accounts", i + 1, accounts);
    }
    if (rc != SQLITE_OK)
        log_error("inserting demo accounts: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc;
}

/* The bulk insert runs with synchronous=OFF; make it durable once, here. */
static int sync_file(const char *db_path)
{
    int fd = open(db_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        log_error("fsync(%s): %s", db_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static int seed_into(sqlite3 *db, const char *db_path, unsigned accounts, unsigned seed)
{
    int64_t existing = 0, sum = 0, t0 = clock_mono_us();
    int rc = ldb_exec(db, "PRAGMA synchronous=OFF; PRAGMA cache_size=-" LDB_STR(SEED_CACHE_KIB),
                      "seed pragmas");
    if (rc == SQLITE_OK)
        rc = ldb_exec(db, "BEGIN IMMEDIATE;" LDB_SQL_CREATE_USERS ";" LDB_SQL_CREATE_TRANSACTIONS,
                      "creating the prototype tables");
    if (rc == SQLITE_OK)
        rc = ldb_query_int64(db, "SELECT COUNT(*) FROM users", &existing);
    if (rc == SQLITE_OK && existing > 0) {
        log_error("%s already has %lld accounts; not seeding", db_path, (long long)existing);
        rc = SQLITE_CONSTRAINT;
    }
    if (rc == SQLITE_OK)
        rc = insert_accounts(db, accounts, seed, &sum);
    if (rc == SQLITE_OK)
        rc = ldb_exec(db, "COMMIT", "committing the demo accounts");
    if (rc != SQLITE_OK) {
        ldb_rollback(db);
        return -1;
    }
    /* Move everything into the main file (it is in WAL mode if it was
     * prepared before) so that one fsync makes the seed durable. */
    if (ldb_enable_wal(db) != 0 ||
        ldb_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", "checkpointing the seed") != SQLITE_OK ||
        sync_file(db_path) != 0)
        return -1;
    log_info("seeded %u accounts into %s in %.1f s (seed %u, balance sum %" PRId64 ")", accounts,
             db_path, (double)(clock_mono_us() - t0) / 1e6, seed, sum);
    return 0;
}

int sqlite_ledger_seed(const char *db_path, unsigned accounts, unsigned seed)
{
    sqlite3 *db = ldb_open(db_path, 1);
    if (db == NULL)
        return -1;
    int ret = seed_into(db, db_path, accounts, seed);
    ldb_close(db);
    return ret;
}
