/* The ledger: the SQLite database that is the system of record. Schema
 * creation and additive migration of the prototype's users.db, group-commit
 * application of claimed batches, and demo seeding. Only workers write it
 * (plus the master's schema migration at start and txctl seed). */
#ifndef TXP_LEDGER_H
#define TXP_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "txn.h"

#define LEDGER_SCHEMA_VERSION 2

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
/* Totals the master reads once at start (before forking). */
struct ledger_totals {
    int64_t max_txid;      /* 0 if none recorded */
    double balance_sum;    /* a double: the sum of int64 balances may exceed int64 */
    int64_t account_count;
    int64_t tx_count;      /* rows in transactions */
};

/* Opens or creates db_path (mode 0600 when created), switches it to WAL,
 * creates the prototype tables if missing and migrates them additively to
 * LEDGER_SCHEMA_VERSION, then reads the totals. Logs the reason and returns
 * -1 on failure. */
int ledger_prepare(const char *db_path, struct ledger_totals *out);

#define LEDGER_SEED_MAX_ACCOUNTS 100000000u
#define LEDGER_SEED_BALANCE_MIN 50000
#define LEDGER_SEED_BALANCE_MAX 10000000

/* Creates the prototype schema and n demo accounts (card numbers from
 * ledger_seed_card, balances uniform in LEDGER_SEED_BALANCE_MIN..MAX from a
 * PRNG seeded with seed, so the same seed gives the same ledger). Refuses
 * (-1) if the users table already has rows or n exceeds
 * LEDGER_SEED_MAX_ACCOUNTS. Logs progress for large n. */
int ledger_seed(const char *db_path, unsigned accounts, unsigned seed);

/* Card number of demo account i (i < LEDGER_SEED_MAX_ACCOUNTS):
 * "6219 8619 NNNN 8640" for i < 10,000, then "6220 AAAA BBBB 8640" with
 * AAAA = i / 10,000 and BBBB = i % 10,000. For seeding and load drivers. */
void ledger_seed_card(unsigned i, char out[TXN_CARD_MAX + 1]);

/* What applying one entry did. */
struct ledger_outcome {
    enum txn_status status;
    enum txn_reason reason;       /* why it was rejected (TXN_REASON_NONE otherwise) */
    int64_t balance_after;        /* applied: the (from) account's new balance */
    int64_t counterparty_balance; /* applied transfer: the "to" account's new balance */
    uint64_t original_txid;       /* duplicate / key reused: the request first recorded under the key */
    uint64_t prev_txid;           /* the account's previous transaction (0: none) */
    uint64_t counterparty_prev_txid; /* transfer: the "to" account's previous one */
    int replayed;                 /* 1: txid was already recorded, nothing done */
};

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
/* Sets the balance (?1) of the account with rowid ?2, makes txid ?3 the
 * newest row of its statement and counts it (?4: 0 deposit, 1 withdrawal,
 * 2 transfer in, 3 transfer out, 4 refused). */
#define LEDGER_SQL_SETTLE                                                                 \
    "UPDATE users SET balance = ?1, last_txid = ?3, n_deposits = n_deposits + (?4 = 0), " \
    "n_withdrawals = n_withdrawals + (?4 = 1), n_transfers_in = n_transfers_in + (?4 = 2), " \
    "n_transfers_out = n_transfers_out + (?4 = 3), n_rejected = n_rejected + (?4 = 4), "  \
    "n_total = n_total + 1 WHERE rowid = ?2"
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

struct ledger;

/* One read-write connection for a worker: WAL, synchronous per sync,
 * busy_timeout, every statement prepared once. NULL on failure (logged). */
struct ledger *ledger_open(const char *db_path, enum sync_mode sync);
void ledger_close(struct ledger *l);
/* Replaces the default 5000 ms wait for another writer's lock (tests use a
 * short one). Returns 0 or -1. */
int ledger_set_busy_timeout(struct ledger *l, int ms);
/* The SQLite error behind the last LEDGER_RETRY/LEDGER_FATAL, e.g.
 * "SQLITE_BUSY: database is locked (begin)"; "" if none. */
const char *ledger_last_error(const struct ledger *l);

enum ledger_result {
    LEDGER_OK = 0,
    LEDGER_RETRY = -1, /* SQLITE_BUSY/LOCKED/IOERR/FULL...: roll back, back off, retry the batch */
    LEDGER_FATAL = -2, /* schema missing, misuse: the worker should exit fatal */
};

/* Applies n entries in ONE BEGIN IMMEDIATE ... COMMIT. Entries whose txid is
 * already recorded are skipped (outcome.replayed = 1), so a batch replayed
 * after a crash is harmless; the lookup is only made for attempts > 0, and a
 * batch found to hold a recorded txid anyway is rolled back and applied
 * again with the lookup for every entry. A keyed entry whose key is already
 * recorded becomes 'duplicate' (same request) or 'rejected',
 * idempotency_key_reused (another request). A corrupt entry is recorded as
 * rejected; one without a txid is only logged (status rejected, not
 * replayed). On LEDGER_RETRY/LEDGER_FATAL the transaction was rolled back
 * and nothing changed. applied_at_us is stored for every new row (and as
 * the key's and a new account's creation time). outcomes has room for n. */
enum ledger_result ledger_apply_batch(struct ledger *l, const struct txn_entry *batch, uint32_t n,
                                      int64_t applied_at_us, struct ledger_outcome *outcomes);

/* Deletes up to max idempotency keys recorded before older_than_us (wall
 * clock) in one short transaction; *deleted says how many. LEDGER_RETRY if
 * the ledger was busy (try again later). */
enum ledger_result ledger_prune_keys(struct ledger *l, int64_t older_than_us, unsigned max,
                                     unsigned *deleted);

#endif
