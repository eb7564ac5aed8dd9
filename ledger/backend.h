/* What a ledger backend (SQLite, PostgreSQL) implements, and the state the
 * backend-neutral code keeps for a connection. Private to ledger/: the rest
 * of the server sees only ledger.h and lookup.h.
 *
 * A backend moves rows; it decides nothing. ledger/batch.c drives a batch
 * through the write operations below in this order, inside one database
 * transaction, and ledger/rules.c decides every outcome in between:
 *   begin -> recorded (replays) -> claim_keys -> load (the book) ->
 *   [rules] -> write -> commit
 * Each returns an enum lb_rc; on anything but LB_OK the caller calls
 * rollback and the database is as before the batch (or, for LB_UNKNOWN
 * from commit, in one of the two states, which the next attempt finds out). */
#ifndef TXP_LEDGER_BACKEND_H
#define TXP_LEDGER_BACKEND_H

#include <stdint.h>

#include "common/txn.h"
#include "ledger/ledger.h"
#include "ledger/lookup.h"
#include "ledger/rules.h"

enum lb_rc {
    LB_OK = 0,
    LB_RETRY,    /* busy, I/O, lost connection, deadlock...: retry the batch later */
    LB_FATAL,    /* schema missing, misuse, a constraint we did not expect */
    LB_RECORDED, /* write: a row's txid was recorded already (a replay nobody flagged) */
    LB_UNKNOWN,  /* commit: the connection failed before the outcome arrived */
};

/* What the grouped insert records for an entry. */
enum row_kind {
    ROW_NONE = 0, /* nothing: replayed */
    ROW_FULL,     /* a valid entry: every field */
    ROW_CARD,     /* corrupt entry with a usable card: card and amount only */
    ROW_NO_CARD,  /* corrupt card: card_number NULL */
};

enum { RECORDED_NO = 0, RECORDED_SAME = 1, RECORDED_OTHER = 2 };

/* Whether a recorded row (card NULL allowed: a corrupt entry's) is e's. */
int ledger_row_is_entry(const struct txn_entry *e, const char *card, size_t card_len,
                        int64_t amount);

/* An Idempotency-Key to claim for a batch entry. The backend inserts
 * (key, txid, fingerprint, now) unless the key exists, in batch order, and
 * reports who holds the key afterwards: this entry (owner_txid == txid) or
 * an earlier request, committed or earlier in this batch. */
struct ledger_key_claim {
    const char *key;
    uint8_t key_len;
    uint64_t txid, fingerprint;
    uint64_t owner_txid, owner_fingerprint;
};

struct ledger;

struct ledger_ops {
    const char *name;
    enum lb_rc (*begin)(struct ledger *l);
    /* For each entry, whether its txid has a transactions row: found[i] =
     * RECORDED_SAME when that row is this request (same amount, and same
     * card unless the row has none), RECORDED_OTHER when it is another
     * request's: not a replay but two instances handing out one txid. */
    enum lb_rc (*recorded)(struct ledger *l, const struct txn_entry *const *entries, uint32_t n,
                           uint8_t *found);
    enum lb_rc (*claim_keys)(struct ledger *l, struct ledger_key_claim *c, uint32_t n,
                             int64_t now_us);
    /* Fills found/integer/rowid/balance/last_txid of every account of the
     * sealed book (and locks them until commit where the database can). */
    enum lb_rc (*load)(struct ledger *l, struct rules_book *b);
    /* Writes back every dirty account (created ones inserted), then the
     * rows[i] != ROW_NONE transaction rows in batch order; LB_RECORDED if
     * one of those txids was already there. */
    enum lb_rc (*write)(struct ledger *l, const struct rules_book *b, const struct txn_entry *batch,
                        const uint8_t *rows, const struct ledger_outcome *out, uint32_t n,
                        int64_t applied_at_us);
    enum lb_rc (*commit)(struct ledger *l);
    /* Ends any open transaction. 0, or -1 when the connection is unusable
     * and could not be made usable again (the caller gives up). */
    int (*rollback)(struct ledger *l);
    enum lb_rc (*prune)(struct ledger *l, int64_t older_than_us, unsigned max, unsigned *deleted);
    int (*set_lock_timeout)(struct ledger *l, int ms);
    void (*close)(struct ledger *l);
};

/* A worker's connection. batch.c owns everything but impl. */
struct ledger {
    const struct ledger_ops *ops;
    void *impl;
    struct txn_entry *copy;          /* private copy of the batch being applied */
    uint8_t *rows;                   /* enum row_kind per entry */
    uint8_t *flags;                  /* per entry: ENTRY_* (batch.c) */
    const struct txn_entry **pick;   /* scratch for recorded() */
    struct ledger_key_claim *claims; /* scratch for claim_keys() */
    int32_t *claim_of;               /* per entry: its claim's index, -1 none */
    struct ledger_outcome *saved;    /* outcomes of a batch whose COMMIT went unanswered */
    uint32_t cap;
    struct rules_book book;
    /* A COMMIT whose outcome is unknown: the batch (first txid, size) the
     * next call must check against the ledger before applying anything. */
    int unknown;
    uint64_t unknown_first_txid;
    uint32_t unknown_n;
    char last_error[256];
};

/* Readers: one connection per frontend (or txctl). */
struct lookup_ops {
    /* The transactions row of txid with its two statement links. */
    enum lookup_result (*row)(struct lookup *l, uint64_t txid, struct lookup_txn *out,
                              uint64_t *prev, uint64_t *counterparty_prev);
    enum lookup_result (*balance)(struct lookup *l, const char *card, size_t len, int64_t *balance);
    enum lookup_result (*key)(struct lookup *l, const char *key, size_t len, uint64_t *txid,
                              uint64_t *fingerprint);
    enum lookup_result (*account)(struct lookup *l, const char *card, size_t len,
                                  struct lookup_account *out);
    /* users.last_txid: *head 0 when the account has no row (or does not exist). */
    enum lookup_result (*head)(struct lookup *l, const char *card, size_t len, uint64_t *head);
    void (*close)(struct lookup *l);
};

struct lookup {
    const struct lookup_ops *ops;
    void *impl;
};

/* The SQLite backend (ledger/sqlite_*.c). */
extern const struct ledger_ops sqlite_ledger_ops;
int sqlite_ledger_open(struct ledger *l, const char *path, enum sync_mode sync);
int sqlite_lookup_open(struct lookup *l, const char *path);
int sqlite_ledger_prepare(const char *path, struct ledger_totals *out);
int sqlite_ledger_seed(const char *path, unsigned accounts, unsigned seed);

/* The PostgreSQL backend (ledger/pg_*.c). */
extern const struct ledger_ops pg_ledger_ops;
int pg_ledger_open(struct ledger *l, const char *conninfo);
int pg_lookup_open(struct lookup *l, const char *conninfo, int timeout_ms);
int pg_ledger_prepare(const char *conninfo, struct ledger_totals *out);
int pg_ledger_seed(const char *conninfo, unsigned accounts, unsigned seed);

/* splitmix64-based demo balances shared by both seeders (setup.c). */
int64_t ledger_seed_balance(uint64_t *state);

#endif
