/* Brings any SQLite ledger (users.db) up to the current schema before the workers start: a
 * missing file gets the prototype tables, a prototype file is migrated in
 * place without losing a row, and the totals the master needs are read once.
 *
 * SCHEMA HISTORY (PRAGMA user_version)
 *   0  the prototype: users(card_number, balance) and
 *      transactions(id, card_number, amount, success, timestamp)
 *   1  transactions gains txid (unique), status, balance_after, queued_at and
 *      applied_at (wall-clock microseconds); old rows keep txid NULL and get
 *      status 'applied' (success = 1) or 'rejected'
 *   2  transfers, account openings, idempotency keys and statements:
 *      transactions gains kind ('deposit', 'withdrawal', 'transfer', 'open';
 *      NULL on older rows, where the sign of amount tells), counterparty and
 *      counterparty_balance_after (a transfer's "to" account), reason (why a
 *      request was rejected), original_txid (a duplicate's first request),
 *      idempotency_key, prev_txid and counterparty_prev_txid; users gains
 *      last_txid, opened_at and the n_* counts (statements, see STATEMENTS
 *      in ledger/sqlite.h), so an INSERT INTO users must now name its columns; the
 *      idempotency_keys table
 *   3  nothing in a SQLite file: the version of the PostgreSQL ledger that
 *      added the nodes' txid reservations (nodes need PostgreSQL); the
 *      number is shared so that one version names one set of columns
 *
 * Migrations only add: the prototype keeps working on a migrated file. Each
 * runs with the version bump in one transaction, so a crash mid-way leaves
 * the previous version and the next start simply runs it again. */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "ledger/backend.h"
#include "ledger/sqlite.h"
#include "ledger/sqlite_db.h"

/* The prepare step may meet a previous instance's last writes or a txctl
 * reading; give them time rather than fail the start. */
#define PREPARE_BUSY_TIMEOUT_MS 10000

struct column {
    const char *name;
    const char *ddl;
};

static const struct column v1_columns[] = {
    { "txid", "ALTER TABLE transactions ADD COLUMN txid INTEGER" },
    { "status", "ALTER TABLE transactions ADD COLUMN status TEXT" },
    { "balance_after", "ALTER TABLE transactions ADD COLUMN balance_after INTEGER" },
    { "queued_at", "ALTER TABLE transactions ADD COLUMN queued_at INTEGER" },
    { "applied_at", "ALTER TABLE transactions ADD COLUMN applied_at INTEGER" },
};

/* Sets *exists to whether table has the named column. */
static int column_exists(sqlite3 *db, const char *table, const char *name, int *exists)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        db, "SELECT COUNT(*) FROM pragma_table_info(?2) WHERE name = ?1", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, table, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        *exists = sqlite3_column_int(st, 0) > 0;
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK)
        log_error("looking up column %s.%s: %s", table, name, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc;
}

/* Old rows have no status; derive it from the prototype's success flag, with
 * the names the rest of the system uses. */
static int backfill_status(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "UPDATE transactions SET status = "
                                "CASE success WHEN 1 THEN ?1 ELSE ?2 END WHERE status IS NULL",
                                -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 1, txn_status_name(TXN_STATUS_APPLIED), -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, txn_status_name(TXN_STATUS_REJECTED), -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_DONE)
        rc = SQLITE_OK;
    if (rc != SQLITE_OK)
        log_error("setting status of existing transactions: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc;
}

/* Version 0 -> 1. Columns are added only if missing, so a file someone
 * half-upgraded by hand still migrates. */
static int add_columns(sqlite3 *db, const char *table, const struct column *cols, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int exists = 0;
        int rc = column_exists(db, table, cols[i].name, &exists);
        if (rc == SQLITE_OK && !exists)
            rc = ldb_exec(db, cols[i].ddl, "adding a column");
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static int migrate_to_v1(sqlite3 *db)
{
    int rc = add_columns(db, "transactions", v1_columns, sizeof v1_columns / sizeof v1_columns[0]);
    if (rc == SQLITE_OK)
        rc = backfill_status(db);
    if (rc == SQLITE_OK)
        rc = ldb_exec(db, "CREATE UNIQUE INDEX IF NOT EXISTS transactions_txid ON transactions(txid)",
                      "creating index transactions_txid");
    return rc;
}

static const struct column v2_columns[] = {
    { "kind", "ALTER TABLE transactions ADD COLUMN kind TEXT" },
    { "counterparty", "ALTER TABLE transactions ADD COLUMN counterparty TEXT" },
    { "counterparty_balance_after",
      "ALTER TABLE transactions ADD COLUMN counterparty_balance_after INTEGER" },
    { "reason", "ALTER TABLE transactions ADD COLUMN reason TEXT" },
    { "original_txid", "ALTER TABLE transactions ADD COLUMN original_txid INTEGER" },
    { "idempotency_key", "ALTER TABLE transactions ADD COLUMN idempotency_key TEXT" },
    { "prev_txid", "ALTER TABLE transactions ADD COLUMN prev_txid INTEGER" },
    { "counterparty_prev_txid", "ALTER TABLE transactions ADD COLUMN counterparty_prev_txid INTEGER" },
};

static const struct column v2_user_columns[] = {
    { "last_txid", "ALTER TABLE users ADD COLUMN last_txid INTEGER" },
    { "opened_at", "ALTER TABLE users ADD COLUMN opened_at INTEGER" },
    { "n_deposits", "ALTER TABLE users ADD COLUMN n_deposits INTEGER NOT NULL DEFAULT 0" },
    { "n_withdrawals", "ALTER TABLE users ADD COLUMN n_withdrawals INTEGER NOT NULL DEFAULT 0" },
    { "n_transfers_in", "ALTER TABLE users ADD COLUMN n_transfers_in INTEGER NOT NULL DEFAULT 0" },
    { "n_transfers_out", "ALTER TABLE users ADD COLUMN n_transfers_out INTEGER NOT NULL DEFAULT 0" },
    { "n_rejected", "ALTER TABLE users ADD COLUMN n_rejected INTEGER NOT NULL DEFAULT 0" },
    { "n_total", "ALTER TABLE users ADD COLUMN n_total INTEGER NOT NULL DEFAULT 0" },
};

/* Links the rows schema 1 recorded (txid set, one account each) into
 * per-account chains and counts them on users, so statements and counts
 * include them. Prototype rows (txid NULL) stay out: they have no id to
 * show. */
#define SQL_V2_BACKFILL                                                                   \
    "UPDATE transactions SET prev_txid = p.prev FROM (SELECT id, LAG(txid) OVER "         \
    "(PARTITION BY card_number ORDER BY id) AS prev FROM transactions WHERE txid IS NOT NULL " \
    "AND card_number IN (SELECT card_number FROM users)) AS p "                         \
    "WHERE transactions.id = p.id AND p.prev IS NOT NULL;"                               \
    "UPDATE users SET last_txid = g.last_txid, n_deposits = g.deposits, "                \
    "n_withdrawals = g.withdrawals, n_rejected = g.refused, n_total = g.total "           \
    "FROM (SELECT t.card_number, last.txid AS last_txid, t.deposits, t.withdrawals, "     \
    "t.refused, t.total FROM (SELECT card_number, MAX(id) AS last_id, "                  \
    "SUM(status = 'applied' AND amount > 0) AS deposits, "                               \
    "SUM(status = 'applied' AND amount < 0) AS withdrawals, "                            \
    "SUM(status <> 'applied') AS refused, COUNT(*) AS total FROM transactions "           \
    "WHERE txid IS NOT NULL GROUP BY card_number) AS t "                                 \
    "JOIN transactions last ON last.id = t.last_id) AS g "                               \
    "WHERE users.card_number = g.card_number"

/* Version 1 -> 2. The backfill reads every existing row, which takes a
 * while on a large ledger: say so first. */
static int migrate_to_v2(sqlite3 *db)
{
    int rc = add_columns(db, "transactions", v2_columns, sizeof v2_columns / sizeof v2_columns[0]);
    if (rc == SQLITE_OK)
        rc = add_columns(db, "users", v2_user_columns,
                         sizeof v2_user_columns / sizeof v2_user_columns[0]);
    if (rc == SQLITE_OK)
        rc = ldb_exec(db, LEDGER_SQL_V2_TABLES, "creating the schema 2 tables");
    if (rc == SQLITE_OK) {
        log_info("schema 2: linking existing transactions into per-account statements");
        rc = ldb_exec(db, SQL_V2_BACKFILL, "linking existing transactions");
    }
    return rc;
}

/* Creates what is missing and migrates, all inside one write transaction. */
static int create_and_migrate(sqlite3 *db, const char *db_path)
{
    int64_t tables = 0, version = 0;
    int rc = ldb_exec(db, "BEGIN IMMEDIATE", "starting the schema transaction");
    if (rc == SQLITE_OK)
        rc = ldb_query_int64(db,
                             "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' "
                             "AND name IN ('users', 'transactions')",
                             &tables);
    if (rc == SQLITE_OK)
        rc = ldb_exec(db, LDB_SQL_CREATE_USERS ";" LDB_SQL_CREATE_TRANSACTIONS,
                      "creating the prototype tables");
    if (rc == SQLITE_OK)
        rc = ldb_query_int64(db, "PRAGMA user_version", &version);
    if (rc == SQLITE_OK && version > LEDGER_SCHEMA_VERSION) {
        log_error("%s has schema version %lld, newer than this build's %d; refusing to touch it",
                  db_path, (long long)version, LEDGER_SCHEMA_VERSION);
        rc = SQLITE_ERROR;
    }
    if (rc == SQLITE_OK && version < 1)
        rc = migrate_to_v1(db);
    if (rc == SQLITE_OK && version < 2)
        rc = migrate_to_v2(db);
    if (rc == SQLITE_OK && version < LEDGER_SCHEMA_VERSION)
        rc = ldb_exec(db, "PRAGMA user_version = " LDB_STR(LEDGER_SCHEMA_VERSION),
                      "setting user_version");
    if (rc == SQLITE_OK)
        rc = ldb_exec(db, "COMMIT", "committing the schema");
    if (rc != SQLITE_OK) {
        ldb_rollback(db);
        return -1;
    }
    if (tables == 0)
        log_info("created ledger schema %d in %s", LEDGER_SCHEMA_VERSION, db_path);
    else if (version < LEDGER_SCHEMA_VERSION)
        log_info("migrated %s from schema %lld to %d", db_path, (long long)version,
                 LEDGER_SCHEMA_VERSION);
    return 0;
}

static int read_totals(sqlite3 *db, const char *db_path, struct ledger_totals *out)
{
    int64_t odd = 0;
    int rc = ldb_query_int64(db, "SELECT COALESCE(MAX(txid), 0) FROM transactions", &out->max_txid);
    if (rc == SQLITE_OK)
        rc = ldb_query_int64(db, "SELECT COUNT(*) FROM transactions", &out->tx_count);
    if (rc == SQLITE_OK)
        rc = ldb_query_int64(db, "SELECT COUNT(*) FROM users", &out->account_count);
    /* TOTAL, unlike SUM, cannot fail with "integer overflow": the sum only
     * feeds the average-balance chart, where a double is what is shown. */
    if (rc == SQLITE_OK)
        rc = ldb_query_number(db, "SELECT TOTAL(balance) FROM users", NULL, &out->balance_sum);
    if (rc == SQLITE_OK)
        rc = ldb_query_int64(db, "SELECT COUNT(*) FROM users WHERE typeof(balance) <> 'integer'",
                             &odd);
    if (rc != SQLITE_OK)
        return -1;
    if (odd > 0)
        log_warn("%s: %lld accounts have a balance that is not an integer; transactions on them "
                 "will be rejected", db_path, (long long)odd);
    log_info("ledger: %lld accounts, balance sum %.0f, %lld transactions, last txid %lld",
             (long long)out->account_count, out->balance_sum,
             (long long)out->tx_count, (long long)out->max_txid);
    return 0;
}

int sqlite_ledger_prepare(const char *db_path, struct ledger_totals *out)
{
    sqlite3 *db = ldb_open(db_path, 1);
    if (db == NULL)
        return -1;
    int rc = sqlite3_busy_timeout(db, PREPARE_BUSY_TIMEOUT_MS);
    if (rc != SQLITE_OK)
        log_error("sqlite3_busy_timeout: %s", sqlite3_errstr(rc));
    int ret = -1;
    if (rc == SQLITE_OK && ldb_enable_wal(db) == 0 && create_and_migrate(db, db_path) == 0 &&
        read_totals(db, db_path, out) == 0)
        ret = 0;
    ldb_close(db);
    return ret;
}
