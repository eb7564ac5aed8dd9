/* The ledger: the database that is the system of record, behind one
 * interface with two backends. A --db value that is a PostgreSQL URI
 * (postgresql://, postgres://) or conninfo (key=value ...) selects
 * PostgreSQL; anything else is the path of a SQLite file, the embedded
 * default. Schema creation and forward migration, group-commit application
 * of claimed batches, pruning, demo seeding and the instance guard are
 * here; the read side is ledger/lookup.h. The rules that decide an outcome
 * are ledger/rules.c, shared by both backends. Only workers write (plus the
 * master's schema step at start and txctl seed/migrate). */
#ifndef TXP_LEDGER_H
#define TXP_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/txn.h"

#define LEDGER_SCHEMA_VERSION 3

enum ledger_backend { LEDGER_SQLITE = 0, LEDGER_POSTGRES = 1 };

/* Which backend a --db value names. */
enum ledger_backend ledger_backend_of(const char *db);

/* db as it may be logged or shown: a SQLite path as is; for PostgreSQL the
 * host(s), port, database and user, never a password (a URI's password and
 * a conninfo's password= are dropped, whatever else the string holds). */
void ledger_describe(const char *db, char *out, size_t cap);

/* Overwrites, in place, any password in db with '*' (same length): for the
 * process's own argv, which other local users can read in /proc. Call after
 * the value has been copied for use. */
void ledger_hide_password(char *db);

/* Totals the master reads once at start (before forking). */
struct ledger_totals {
    int64_t max_txid;      /* 0 if none recorded */
    int64_t max_reserved;  /* PostgreSQL: the last id of every span nodes reserved (0: none) */
    double balance_sum;    /* a double: the sum of int64 balances may exceed int64 */
    int64_t account_count;
    int64_t tx_count;      /* rows in transactions */
};

/* Creates the schema if it is missing (SQLite: the file too, mode 0600,
 * in WAL mode), migrates it forward to LEDGER_SCHEMA_VERSION (refusing a
 * newer one), then reads the totals. Logs the reason and returns -1 on
 * failure (unreachable server, bad credentials, a newer schema...). */
int ledger_prepare(const char *db, struct ledger_totals *out);

#define LEDGER_SEED_MAX_ACCOUNTS 100000000u
#define LEDGER_SEED_BALANCE_MIN 50000
#define LEDGER_SEED_BALANCE_MAX 10000000

/* Creates the prototype schema and n demo accounts (card numbers from
 * ledger_seed_card, balances uniform in LEDGER_SEED_BALANCE_MIN..MAX from a
 * PRNG seeded with seed, so the same seed gives the same ledger on either
 * backend). Refuses (-1) if the users table already has rows or n exceeds
 * LEDGER_SEED_MAX_ACCOUNTS. Logs progress for large n. */
int ledger_seed(const char *db, unsigned accounts, unsigned seed);

/* Card number of demo account i (i < LEDGER_SEED_MAX_ACCOUNTS):
 * "6219 8619 NNNN 8640" for i < 10,000, then "6220 AAAA BBBB 8640" with
 * AAAA = i / 10,000 and BBBB = i % 10,000. For seeding and load drivers. */
void ledger_seed_card(unsigned i, char out[TXN_CARD_MAX + 1]);

/* One instance per ledger, or one per node id: txids are dense per
 * instance (interleaved per node), so two instances acting as one would
 * hand out the same ids. SQLite: an flock on the file, inherited by every
 * child (no nodes: node must be 0). PostgreSQL: session advisory locks held
 * by a connection the master keeps (children inherit its socket, so the
 * locks live while any process of the instance does): the only instance
 * (node 0) excludes every other; node N excludes another node N and an
 * only instance (pg_conn.h). Waits up to wait_ms for an instance that is
 * dying. NULL (logged) if held or unreachable. */
struct ledger_guard;
struct ledger_guard *ledger_guard_take(const char *db, unsigned node, int wait_ms);
/* Node mode: reserves RING_STRIDED_SPAN ids for a fresh segment of the
 * guard's node, above every id the ledger holds and every span reserved
 * before (table txprocd_nodes), and returns the first one (node +
 * NODE_STRIDE * k); 0 (logged) if it cannot. */
uint64_t ledger_reserve_txids(struct ledger_guard *g);
/* Node mode, an adopted segment numbering from base: checks that base is the
 * guard's node's and records its span as reserved (it may predate a restore
 * of the ledger, or a failover that lost the last reservation). 0, or -1
 * (logged). */
int ledger_keep_txids(struct ledger_guard *g, uint64_t base);
/* Node mode, after a fully drained exit: gives back the unused tail of the
 * span that starts at base (next: the first id not handed out), so that a
 * node restarted cleanly numbers on from where it stopped. Best effort. */
void ledger_return_txids(struct ledger_guard *g, uint64_t base, uint64_t next);
/* Called about once a second by the master. PostgreSQL: notices, without a
 * round trip, that the lock's connection went away (a server restart ends
 * the session and its lock) and takes the lock again, a try every 2 s of at
 * most 1 s each. 0 while the guard is held or being taken back; -1 if
 * another instance took it meanwhile (the caller must stop applying). */
int ledger_guard_check(struct ledger_guard *g);
void ledger_guard_release(struct ledger_guard *g);

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

struct ledger;

/* One read-write connection for a worker, with every statement prepared
 * once. SQLite: WAL, synchronous per sync, a busy timeout. PostgreSQL:
 * durability is the server's (synchronous_commit); sync is not used. The
 * schema must be current (ledger_prepare ran). NULL on failure (logged). */
struct ledger *ledger_open(const char *db, enum sync_mode sync);
void ledger_close(struct ledger *l);
/* How long a write waits for another's lock before LEDGER_RETRY (SQLite's
 * busy timeout, PostgreSQL's lock_timeout; default 5000 ms). 0 or -1. */
int ledger_set_busy_timeout(struct ledger *l, int ms);
/* The database error behind the last LEDGER_RETRY/LEDGER_FATAL, e.g.
 * "SQLITE_BUSY: database is locked (begin)" or "57P01: terminating
 * connection due to administrator command (commit)"; "" if none. */
const char *ledger_last_error(const struct ledger *l);

enum ledger_result {
    LEDGER_OK = 0,
    LEDGER_RETRY = -1, /* busy, I/O, space, lost connection, deadlock: back off, retry the batch */
    LEDGER_FATAL = -2, /* schema missing, misuse: the worker should exit fatal */
};

/* Applies n entries in ONE database transaction: every account the batch
 * names is read once (locked, on PostgreSQL, in card order), the rules run
 * in batch order in C, and each account is written back once. Entries whose
 * txid is already recorded are skipped (outcome.replayed = 1), so a batch
 * replayed after a crash is harmless; the check is made for attempts > 0
 * only, and a batch found to hold a recorded txid anyway is rolled back and
 * applied again with the check for every entry. A keyed entry whose key is
 * held by another request becomes 'duplicate' (same request) or 'rejected',
 * idempotency_key_reused. A corrupt entry is recorded as rejected. On
 * LEDGER_RETRY/LEDGER_FATAL nothing changed, with one exception handled
 * here: when the connection failed during COMMIT the batch may have landed;
 * the next call with the same batch asks the ledger first and, if it did
 * land, returns the outcomes it had decided (not replays). applied_at_us is
 * stored for every new row (and as the key's and a new account's creation
 * time). outcomes has room for n. */
enum ledger_result ledger_apply_batch(struct ledger *l, const struct txn_entry *batch, uint32_t n,
                                      int64_t applied_at_us, struct ledger_outcome *outcomes);

/* Deletes up to max idempotency keys recorded before older_than_us (wall
 * clock) in one short transaction; *deleted says how many. LEDGER_RETRY if
 * the ledger was busy (try again later). */
enum ledger_result ledger_prune_keys(struct ledger *l, int64_t older_than_us, unsigned max,
                                     unsigned *deleted);

/* Copies a SQLite ledger (txprocd's, or the prototype's users.db) into an
 * empty PostgreSQL ledger: accounts, transactions, idempotency keys; then
 * checks that account count, balance sum and row count match. Logs progress
 * on large ledgers. Refuses (-1, logged) a target that has accounts or
 * transactions. */
int ledger_migrate(const char *from_sqlite, const char *to_db);

#endif
