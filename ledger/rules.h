/* The business rules of the ledger, written once for every backend: what a
 * deposit, withdrawal, transfer or account opening does to the accounts it
 * names, and when it is refused (insufficient funds, unknown account,
 * overflow, same account, account exists, a balance that is not an
 * integer). They run in C on a book: an in-memory copy of the accounts a
 * batch touches, read (and, on PostgreSQL, locked) by the backend before
 * the first entry and written back once per account after the last. The
 * backends only move rows in and out; no rule is restated in SQL. */
#ifndef TXP_LEDGER_RULES_H
#define TXP_LEDGER_RULES_H

#include <stdint.h>

#include "common/txn.h"
#include "ledger/ledger.h"

/* What a statement row counts as on the account's running counts (users.n_*). */
enum rules_count {
    RULES_DEPOSIT = 0, RULES_WITHDRAWAL, RULES_TRANSFER_IN, RULES_TRANSFER_OUT, RULES_REFUSED,
    RULES_TOTAL, RULES_COUNT__
};

/* One account of a book. The backend fills found, integer, rowid, balance
 * and last_txid when it loads the book; the rules update balance, last_txid
 * and the count deltas, and set dirty when something must be written. */
struct rules_account {
    char card[TXN_CARD_MAX + 1];
    uint8_t card_len;
    uint8_t found;    /* in the ledger before this batch (or opened in it) */
    uint8_t created;  /* opened by this batch: to be inserted, not updated */
    uint8_t integer;  /* the stored balance is an integer (SQLite may hold a REAL) */
    uint8_t dirty;    /* changed by this batch */
    int64_t rowid;    /* backend's row handle (SQLite rowid); unused by the rules */
    int64_t balance;
    uint64_t last_txid;  /* newest row of the account's statement (0: none) */
    int64_t opened_at_us; /* created accounts only */
    int64_t counts[RULES_COUNT__]; /* added to users.n_* (created: the whole value) */
};

/* The accounts of one batch, sorted by card (bytes, then length) so that a
 * backend that locks rows locks them in one global order. */
struct rules_book {
    struct rules_account *accounts;
    uint32_t n, cap;
};

/* Empties the book (keeps its memory). */
void rules_book_reset(struct rules_book *b);
/* Frees its memory. */
void rules_book_free(struct rules_book *b);
/* Adds the accounts e names (once each). 0, or -1 out of memory. */
int rules_book_add_entry(struct rules_book *b, const struct txn_entry *e);
/* Sorts and removes duplicates; call once after the last add and before
 * the backend loads the book. */
void rules_book_seal(struct rules_book *b);
/* The account with this card, NULL if the book does not hold it. */
struct rules_account *rules_book_find(struct rules_book *b, const char *card, uint8_t len);

/* Decides e (a checked, non-replayed entry whose key, if any, is its own)
 * against the book and updates the book: balances, statement links and
 * counts. out->status, reason, balance_after, counterparty_balance,
 * prev_txid and counterparty_prev_txid are set. */
void rules_apply(struct rules_book *b, const struct txn_entry *e, int64_t applied_at_us,
                 struct ledger_outcome *out);

#endif
