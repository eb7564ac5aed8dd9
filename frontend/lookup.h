/* The frontend's read-only view of the ledger: one SQLite connection opened
 * read-only at start, with every statement prepared once. Used to answer
 * GET /transaction/<id> and GET /balance; the frontend never writes. */
#ifndef TXP_LOOKUP_H
#define TXP_LOOKUP_H

#include <stddef.h>
#include <stdint.h>

#include "txn.h"

struct lookup;

/* A row of the transactions table as the API shows it. */
struct lookup_txn {
    char card[TXN_CARD_MAX + 1];
    int64_t amount;
    char status[32];         /* txn_status_name() text */
    int has_balance_after;
    int64_t balance_after;
    int has_queued_at;
    int64_t queued_at_us;    /* wall clock */
    int has_applied_at;
    int64_t applied_at_us;
};

enum lookup_result {
    LOOKUP_FOUND = 1,
    LOOKUP_NOT_FOUND = 0,
    LOOKUP_ERROR = -1,       /* SQLite failed (busy past the timeout...); logged */
};

/* Opens db_path read-only with a busy timeout. NULL on failure (logged). */
struct lookup *lookup_open(const char *db_path);
void lookup_close(struct lookup *l);

enum lookup_result lookup_txn(struct lookup *l, uint64_t txid, struct lookup_txn *out);
enum lookup_result lookup_balance(struct lookup *l, const char *card, size_t card_len,
                                  int64_t *balance);

#endif
