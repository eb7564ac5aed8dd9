/* The unit of work that crosses process boundaries: one transaction as it sits
 * in the shared-memory queue, plus the validation rules for its fields. The
 * frontend fills entries from validated JSON; the worker re-checks every
 * entry it claims (txn_entry_check) because shared memory is written by
 * processes that may have died half-way through a store. */
#ifndef TXP_TXN_H
#define TXP_TXN_H

#include <stddef.h>
#include <stdint.h>

#define TXN_CARD_MAX 32                 /* digits and spaces, 1..32 characters */
#define TXN_AMOUNT_LIMIT 1000000000000000LL /* |amount| <= 10^15 minor units */

enum txn_kind {
    TXN_KIND_NONE = 0,
    TXN_KIND_AMOUNT = 1, /* deposit (amount > 0) or withdrawal (amount < 0) */
};

/* Fixed 128-byte record: two cache lines, no pointers, valid in any process.
 * 'attempts' counts how often the entry was claimed by a worker that did not
 * acknowledge it; attempts > 0 means the entry may already be in the ledger,
 * so the worker must check its txid before applying it. */
struct txn_entry {
    uint64_t txid;
    int64_t amount;
    int64_t queued_at_us; /* wall clock, set by the frontend */
    uint32_t attempts;
    uint8_t kind;         /* enum txn_kind */
    uint8_t card_len;
    uint8_t reserved_len; /* room for a second card (transfers) */
    uint8_t reserved_flags;
    char card[TXN_CARD_MAX + 1];        /* NUL-terminated */
    char reserved_card[TXN_CARD_MAX + 1];
    uint8_t reserved[128 - 32 - 2 * (TXN_CARD_MAX + 1)];
};

_Static_assert(sizeof(struct txn_entry) == 128, "txn_entry must stay 128 bytes");

/* Final (or current) state of a transaction, as stored in the ledger's
 * transactions.status column and shown by GET /transaction/<id>. */
enum txn_status {
    TXN_STATUS_QUEUED = 0,
    TXN_STATUS_APPLIED = 1,
    TXN_STATUS_INSUFFICIENT_FUNDS = 2,
    TXN_STATUS_UNKNOWN_ACCOUNT = 3,
    TXN_STATUS_REJECTED = 4,
};
#define TXN_STATUS_COUNT 5

/* "queued", "applied", "insufficient_funds", "unknown_account", "rejected". */
const char *txn_status_name(enum txn_status s);
/* Inverse of txn_status_name; -1 if unknown. */
int txn_status_parse(const char *name);

/* 0 if card is 1..TXN_CARD_MAX digits/spaces with at least one digit, else -1. */
int txn_card_valid(const char *card, size_t len);
/* 0 if amount is non-zero and |amount| <= TXN_AMOUNT_LIMIT, else -1. */
int txn_amount_valid(int64_t amount);
/* Fills an entry for an amount transaction (txid/queued_at are set later). */
int txn_entry_make(struct txn_entry *e, const char *card, size_t card_len, int64_t amount);
/* Re-validates an entry read from shared memory: 0 if every field is sane.
 * Returns -1 and a static reason otherwise. */
int txn_entry_check(const struct txn_entry *e, const char **why);

#endif
