/* The unit of work that crosses process boundaries: one ledger request
 * (deposit/withdrawal, transfer or account opening) as it sits in the
 * shared-memory queue, plus the validation rules for its fields. The
 * frontend fills entries from validated JSON; the worker re-checks every
 * entry it claims (txn_entry_check) because shared memory is written by
 * processes that may have died half-way through a store. */
#ifndef TXP_TXN_H
#define TXP_TXN_H

#include <stddef.h>
#include <stdint.h>

#define TXN_CARD_MAX 32                 /* digits and spaces, 1..32 characters */
#define TXN_AMOUNT_LIMIT 1000000000000000LL /* |amount| <= 10^15 minor units */
#define TXN_KEY_MAX 64                  /* Idempotency-Key: 1..64 printable ASCII */

enum txn_kind {
    TXN_KIND_NONE = 0,
    TXN_KIND_AMOUNT = 1,   /* deposit (amount > 0) or withdrawal (amount < 0) on card */
    TXN_KIND_TRANSFER = 2, /* amount > 0 from card to card2 */
    TXN_KIND_OPEN = 3,     /* open account card with balance amount >= 0 */
};

/* Fixed 256-byte record: four cache lines, no pointers, valid in any
 * process. 'attempts' counts how often the entry was claimed by a worker
 * that did not acknowledge it; attempts > 0 means the entry may already be
 * in the ledger, so the worker must check its txid before applying it.
 * 'waiter' names the frontend holding the request open for the outcome
 * (Prefer: wait): its frontend index + 1, 0 when nobody waits. */
struct txn_entry {
    uint64_t txid;
    int64_t amount;
    int64_t queued_at_us; /* wall clock, set by the frontend */
    uint32_t attempts;
    uint8_t kind;         /* enum txn_kind */
    uint8_t card_len;
    uint8_t card2_len;    /* transfers: length of card2 */
    uint8_t key_len;      /* 0: no idempotency key */
    uint16_t waiter;
    uint8_t pad0[6];
    char card[TXN_CARD_MAX + 1];  /* NUL-terminated; transfers: "from" */
    char card2[TXN_CARD_MAX + 1]; /* transfers: "to" */
    char key[TXN_KEY_MAX + 1];    /* NUL-terminated idempotency key */
    uint8_t reserved[256 - 40 - 2 * (TXN_CARD_MAX + 1) - (TXN_KEY_MAX + 1)];
};

_Static_assert(sizeof(struct txn_entry) == 256, "txn_entry must stay 256 bytes");

/* Final (or current) state of a transaction, as stored in the ledger's
 * transactions.status column and shown by GET /transaction/<id>. */
enum txn_status {
    TXN_STATUS_QUEUED = 0,
    TXN_STATUS_APPLIED = 1,
    TXN_STATUS_INSUFFICIENT_FUNDS = 2,
    TXN_STATUS_UNKNOWN_ACCOUNT = 3,
    TXN_STATUS_REJECTED = 4,
    TXN_STATUS_DUPLICATE = 5, /* same Idempotency-Key and request as an earlier one */
};
#define TXN_STATUS_COUNT 6

/* Why a transfer, an account opening or a keyed request was rejected;
 * stored in transactions.reason. */
enum txn_reason {
    TXN_REASON_NONE = 0,
    TXN_REASON_SAME_ACCOUNT = 1,       /* transfer with from == to */
    TXN_REASON_UNKNOWN_ACCOUNT = 2,    /* transfer: from or to does not exist */
    TXN_REASON_INSUFFICIENT_FUNDS = 3, /* transfer: from has less than amount */
    TXN_REASON_OVERFLOW = 4,           /* a balance would pass INT64_MAX */
    TXN_REASON_NOT_INTEGER = 5,        /* an account balance is not an integer */
    TXN_REASON_ACCOUNT_EXISTS = 6,     /* account opening for an existing card */
    TXN_REASON_KEY_REUSED = 7,         /* Idempotency-Key used before for another request */
    TXN_REASON_CORRUPT = 8,            /* the queue entry failed txn_entry_check */
};
#define TXN_REASON_COUNT 9

/* "queued", "applied", "insufficient_funds", "unknown_account", "rejected",
 * "duplicate". */
const char *txn_status_name(enum txn_status s);
/* Inverse of txn_status_name; -1 if unknown. */
int txn_status_parse(const char *name);
/* "" for TXN_REASON_NONE, else "same_account", "unknown_account",
 * "insufficient_funds", "overflow", "not_integer", "account_exists",
 * "idempotency_key_reused", "corrupt_entry". */
const char *txn_reason_name(enum txn_reason r);
/* Ledger transactions.kind text of an applied entry: "deposit",
 * "withdrawal", "transfer" or "open". */
const char *txn_kind_name(const struct txn_entry *e);

/* 0 if card is 1..TXN_CARD_MAX digits/spaces with at least one digit, else -1. */
int txn_card_valid(const char *card, size_t len);
/* 0 if amount is non-zero and |amount| <= TXN_AMOUNT_LIMIT, else -1. */
int txn_amount_valid(int64_t amount);
/* 0 if key is 1..TXN_KEY_MAX printable ASCII characters (0x20..0x7e), else -1. */
int txn_key_valid(const char *key, size_t len);

/* Fill an entry (txid/queued_at are set by ring_enqueue). Each returns 0, or
 * -1 if a field breaks its rule (and leaves *e unspecified).
 * amount: non-zero, |amount| <= TXN_AMOUNT_LIMIT.
 * transfer: 0 < amount <= TXN_AMOUNT_LIMIT; from == to is allowed here (the
 * worker records it as rejected, same_account).
 * open: 0 <= balance <= TXN_AMOUNT_LIMIT. */
int txn_entry_make(struct txn_entry *e, const char *card, size_t card_len, int64_t amount);
int txn_entry_make_transfer(struct txn_entry *e, const char *from, size_t from_len,
                            const char *to, size_t to_len, int64_t amount);
int txn_entry_make_open(struct txn_entry *e, const char *card, size_t card_len, int64_t balance);
/* Attaches an idempotency key; 0 or -1 (invalid key). */
int txn_entry_set_key(struct txn_entry *e, const char *key, size_t len);

/* What a request asks for, reduced to 64 bits (kind, cards, amount; not the
 * key, txid, times or waiter). Two requests under one Idempotency-Key are
 * "the same request" exactly when their fingerprints are equal. Stable
 * across builds: it is stored in the ledger. */
uint64_t txn_fingerprint(const struct txn_entry *e);

/* Re-validates an entry read from shared memory: 0 if every field is sane.
 * Returns -1 and a static reason otherwise. */
int txn_entry_check(const struct txn_entry *e, const char **why);

#endif
