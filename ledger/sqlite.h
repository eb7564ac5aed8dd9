/* SQL of the SQLite backend that something outside ledger/ must share:
 * tools/bench/sqlite_ceiling runs the worker's statements to measure the
 * storage ceiling the worker runs under. */
#ifndef TXP_LEDGER_SQLITE_H
#define TXP_LEDGER_SQLITE_H

#include <stddef.h>

/* Schema 2's new table (IF NOT EXISTS: safe to run again).
 * idempotency_keys.key is the UNIQUE constraint that makes a key apply at
 * most once, whichever frontends its copies arrived on. */
#define LEDGER_SQL_V2_TABLES                                                            \
    "CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT PRIMARY KEY NOT NULL, "      \
    "txid INTEGER NOT NULL, fingerprint INTEGER NOT NULL, created_at INTEGER NOT NULL);" \
    "CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys(created_at)"

/* STATEMENTS
 * users.last_txid names the newest transaction that touched an account, and
 * each transactions row links to the previous row of its account
 * (prev_txid) and, for a transfer, of its counterparty
 * (counterparty_prev_txid): a statement is a walk down that chain, one
 * lookup by txid per row. users also keeps running counts (n_*) and
 * opened_at. All of it is written by the UPDATE that sets the balance, on
 * the row it touches anyway. The obvious alternatives cost far more per
 * transaction (sqlite_ceiling, 10,000 accounts, batch 1024):
 *   index on transactions(card_number)   ~77,000/s  (inserts land at random
 *       places in an index that grows with the table, so the pages a
 *       commit dirties grow with it)
 *   separate account_heads table         ~155,000/s (a second random write)
 *   columns on users, as here            ~280,000/s
 * against ~355,000/s without statements (same runs). The price: users has
 * more than the prototype's two columns, so an INSERT INTO users must
 * name them. */
/* Settings every worker connection applies after journal_mode=WAL and
 * synchronous (tools/bench/sqlite_ceiling uses the same string, so the
 * storage ceiling it measures is the one a worker runs under). Empty on
 * purpose: cache_size up to 64 MiB, mmap_size, temp_store=MEMORY and
 * wal_autocheckpoint=10000 changed the ceiling by less than run-to-run noise
 * with 10,000 accounts and by at most 9 % with 1,000,000, for more resident
 * memory per worker (README, Performance). */
#define LEDGER_PRAGMAS ""

/* The worker's statements for one transaction, shared with the ceiling
 * benchmark: read the account, write its new balance and statement link by
 * rowid, and insert the transaction row (ledger_sql_record). */
#define LEDGER_SQL_ACCOUNT "SELECT rowid, balance, last_txid FROM users WHERE card_number = ?1"
/* Writes an account back once per batch: balance ?1, newest statement row
 * ?2, and adds ?3..?8 to its counts (deposits, withdrawals, transfers in,
 * transfers out, refused, total); ?9 is its rowid. */
#define LEDGER_SQL_SETTLE                                                               \
    "UPDATE users SET balance = ?1, last_txid = ?2, n_deposits = n_deposits + ?3, "     \
    "n_withdrawals = n_withdrawals + ?4, n_transfers_in = n_transfers_in + ?5, "        \
    "n_transfers_out = n_transfers_out + ?6, n_rejected = n_rejected + ?7, "           \
    "n_total = n_total + ?8 WHERE rowid = ?9"
/* Rows per INSERT statement when a batch's rows are recorded together. */
#define LEDGER_RECORD_CHUNK 32
/* Bound values per transactions row in ledger_sql_record's INSERT. */
#define LEDGER_RECORD_PARAMS 16

/* Writes the text of an INSERT of rows transactions rows
 * (LEDGER_RECORD_PARAMS parameters each: card_number, amount, success,
 * txid, status, balance_after, queued_at, applied_at, kind, counterparty,
 * counterparty_balance_after, reason, original_txid, idempotency_key,
 * prev_txid, counterparty_prev_txid;
 * ON CONFLICT(txid) DO NOTHING) into buf. Returns 0, or -1 if cap is too
 * small. */
int ledger_sql_record(char *buf, size_t cap, unsigned rows);

#endif
