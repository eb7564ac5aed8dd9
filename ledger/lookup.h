/* The read-only view of the ledger that frontends (and txctl) use, on either
 * backend: one connection per process with every statement prepared once.
 * Used to answer GET /transaction/<id>, GET /balance, GET /accounts/<card>
 * [/transactions] and the Idempotency-Key check before queueing; readers
 * never write. */
#ifndef TXP_LOOKUP_H
#define TXP_LOOKUP_H

#include <stddef.h>
#include <stdint.h>

#include "common/txn.h"

struct lookup;

/* A row of the transactions table as the API shows it. */
struct lookup_txn {
    char card[TXN_CARD_MAX + 1];    /* transfers: "from" */
    int64_t amount;                 /* as stored: transfers and openings positive */
    char status[32];                /* txn_status_name() text */
    int has_balance_after;
    int64_t balance_after;
    int has_queued_at;
    int64_t queued_at_us;           /* wall clock */
    int has_applied_at;
    int64_t applied_at_us;
    char kind[16];                  /* deposit/withdrawal/transfer/open; rows without
                                     * a kind (prototype): by the sign of amount */
    char counterparty[TXN_CARD_MAX + 1];    /* transfers: "to"; "" if none */
    int has_counterparty_balance_after;
    int64_t counterparty_balance_after;
    char reason[32];                /* txn_reason_name() text; "" if none */
    uint64_t original_txid;         /* duplicates and key reuse; 0 if none */
    char key[TXN_KEY_MAX + 1];      /* Idempotency-Key; "" if none */
};

enum lookup_result {
    LOOKUP_FOUND = 1,
    LOOKUP_NOT_FOUND = 0,
    LOOKUP_ERROR = -1,       /* the database failed (busy past the timeout, unreachable,
                              * no answer in time...); logged */
};

/* An account as GET /accounts/<card> shows it: users' row, with the counts
 * the workers keep there (ledger/sqlite.h, STATEMENTS) over the rows of its
 * statement: applied ones by kind from this account's side (an opening only
 * in total), rejected = refused ones, total = all of them. */
struct lookup_account {
    char card[TXN_CARD_MAX + 1];
    int64_t balance;
    int has_created_at;             /* 0 for accounts not opened through the API */
    int64_t created_at_us;          /* wall clock (users.opened_at) */
    int64_t deposits, withdrawals, transfers_in, transfers_out, rejected, total;
};

/* One line of an account statement. */
struct lookup_stmt_row {
    uint64_t txid;
    char kind[16];                  /* deposit/withdrawal/transfer_in/transfer_out/open */
    int64_t amount;                 /* signed as it affects this account */
    char status[32];
    char reason[32];                /* "" if none */
    char counterparty[TXN_CARD_MAX + 1];    /* transfers: the other account; "" if none */
    int has_balance_after;          /* this account's balance; applied rows only */
    int64_t balance_after;
    int has_queued_at;
    int64_t queued_at_us;
    int has_applied_at;
    int64_t applied_at_us;
};

#define LOOKUP_STATEMENT_MAX 1000

/* The longest a frontend lets one read block its event loop (it also stays
 * under --http-timeout). */
#define LOOKUP_WAIT_MAX_MS 2000

/* Opens a reader. SQLite: the file read-only, with a busy timeout.
 * PostgreSQL: nothing is connected until the first read; each read waits
 * at most timeout_ms (connection included), and after a failure the
 * reader stays down (LOOKUP_ERROR at once) for a second before it tries
 * again, so an unreachable server costs one wait, not one per request.
 * NULL on failure (logged). */
struct lookup *lookup_open(const char *db, int timeout_ms);
void lookup_close(struct lookup *l);

enum lookup_result lookup_txn(struct lookup *l, uint64_t txid, struct lookup_txn *out);
enum lookup_result lookup_balance(struct lookup *l, const char *card, size_t card_len,
                                  int64_t *balance);

/* The txid and fingerprint (txn_fingerprint) recorded for an Idempotency-Key. */
enum lookup_result lookup_key(struct lookup *l, const char *key, size_t len, uint64_t *txid,
                              uint64_t *fingerprint);

enum lookup_result lookup_account(struct lookup *l, const char *card, size_t card_len,
                                  struct lookup_account *out);

/* The statement of an account, newest first (the order the workers applied
 * its rows in). before_txid 0 starts at the newest row, otherwise at the row
 * before that one in this account's statement (a row's txid is the cursor
 * for the next page). limit is capped at LOOKUP_STATEMENT_MAX; rows has room
 * for that many entries. FOUND with *n rows (maybe 0); NOT_FOUND when
 * before_txid is not in the ledger or is a row of other accounts only;
 * ERROR on a database failure. An unknown account has no rows (FOUND, 0):
 * lookup_account tells whether it exists. Costs one lookup by txid per row
 * returned, whatever the size of the history. */
enum lookup_result lookup_statement(struct lookup *l, const char *card, size_t card_len,
                                    uint64_t before_txid, uint32_t limit,
                                    struct lookup_stmt_row *rows, uint32_t *n);

#endif
