/* The ledger's read side for frontends and txctl, the same for every
 * backend: each backend answers single-row reads (lookup_ops in backend.h),
 * and the statement walk over them is written here once.
 *
 * STATEMENTS (STATEMENTS in ledger/sqlite.h for why they are chains)
 *   users.last_txid names an account's newest row and every row links to
 *   the row before it in the statement of each account it touched:
 *   prev_txid for card_number's (a transfer's "from"), counterparty_prev_txid
 *   for counterparty's (its "to"). A statement page is a walk down that
 *   chain, one lookup by txid (the unique index) per row listed: its cost is
 *   the page size, whatever the history or table size. Which link to follow
 *   depends on which side of the row the account is; a transfer to oneself
 *   is refused and linked once, on the card_number side, so that side is
 *   checked first. Links never change once committed and a head only moves
 *   to newer rows, so a walk spread over several read transactions still
 *   lists one consistent history. The worker decides what is linked (rows of
 *   an existing account, applied or refused) and keeps the counts
 *   (users.n_*); this side only reads. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "ledger/backend.h"

struct lookup *lookup_open(const char *db, int timeout_ms)
{
    struct lookup *l = calloc(1, sizeof *l);
    if (l == NULL) {
        log_error("lookup: out of memory");
        return NULL;
    }
    int rc = ledger_backend_of(db) == LEDGER_POSTGRES ? pg_lookup_open(l, db, timeout_ms)
                                                      : sqlite_lookup_open(l, db);
    if (rc != 0) {
        lookup_close(l);
        return NULL;
    }
    return l;
}

void lookup_close(struct lookup *l)
{
    if (l == NULL)
        return;
    if (l->ops != NULL)
        l->ops->close(l);
    free(l);
}

/* A transactions row with its statement links. */
struct chain_row {
    struct lookup_txn t;
    uint64_t prev;              /* previous row of card_number's statement */
    uint64_t counterparty_prev; /* previous row of counterparty's statement */
};

static enum lookup_result read_row(struct lookup *l, uint64_t txid, struct chain_row *out)
{
    memset(out, 0, sizeof *out);
    if (txid == 0 || txid > INT64_MAX)
        return LOOKUP_NOT_FOUND;
    return l->ops->row(l, txid, &out->t, &out->prev, &out->counterparty_prev);
}

enum lookup_result lookup_txn(struct lookup *l, uint64_t txid, struct lookup_txn *out)
{
    struct chain_row row;
    enum lookup_result r = read_row(l, txid, &row);
    if (r == LOOKUP_FOUND)
        *out = row.t;
    return r;
}

enum lookup_result lookup_balance(struct lookup *l, const char *card, size_t card_len,
                                  int64_t *balance)
{
    return l->ops->balance(l, card, card_len, balance);
}

enum lookup_result lookup_key(struct lookup *l, const char *key, size_t len, uint64_t *txid,
                              uint64_t *fingerprint)
{
    return l->ops->key(l, key, len, txid, fingerprint);
}

enum lookup_result lookup_account(struct lookup *l, const char *card, size_t card_len,
                                  struct lookup_account *out)
{
    memset(out, 0, sizeof *out);
    memcpy(out->card, card, card_len < TXN_CARD_MAX ? card_len : TXN_CARD_MAX);
    return l->ops->account(l, card, card_len, out);
}

static int same_card(const char *stored, const char *card, size_t card_len)
{
    return strlen(stored) == card_len && memcmp(stored, card, card_len) == 0;
}

/* The account's side of a row: 1 card_number (checked first: a transfer to
 * oneself is linked there only), 0 counterparty, -1 neither. */
static int side_of(const struct chain_row *r, const char *card, size_t card_len)
{
    if (same_card(r->t.card, card, card_len))
        return 1;
    if (same_card(r->t.counterparty, card, card_len))
        return 0;
    return -1;
}

/* The link to follow from r in the account's statement. */
static uint64_t next_of(const struct chain_row *r, int own)
{
    return own ? r->prev : r->counterparty_prev;
}

/* r as the statement of the account on side own shows it. */
static void to_stmt_row(const struct chain_row *r, uint64_t txid, int own,
                        struct lookup_stmt_row *row)
{
    const struct lookup_txn *t = &r->t;
    int transfer = strcmp(t->kind, "transfer") == 0;
    int applied = strcmp(t->status, "applied") == 0;
    memset(row, 0, sizeof *row);
    row->txid = txid;
    if (!own) {
        snprintf(row->kind, sizeof row->kind, "transfer_in");
        row->amount = t->amount;
        snprintf(row->counterparty, sizeof row->counterparty, "%s", t->card);
        row->has_balance_after = applied && t->has_counterparty_balance_after;
        row->balance_after = t->counterparty_balance_after;
    } else {
        snprintf(row->kind, sizeof row->kind, "%s", transfer ? "transfer_out" : t->kind);
        /* |amount| <= TXN_AMOUNT_LIMIT: the negation cannot overflow */
        row->amount = transfer ? -t->amount : t->amount;
        snprintf(row->counterparty, sizeof row->counterparty, "%s", t->counterparty);
        row->has_balance_after = applied && t->has_balance_after;
        row->balance_after = t->balance_after;
    }
    if (!row->has_balance_after)
        row->balance_after = 0;
    snprintf(row->status, sizeof row->status, "%s", t->status);
    snprintf(row->reason, sizeof row->reason, "%s", t->reason);
    row->has_queued_at = t->has_queued_at;
    row->queued_at_us = t->queued_at_us;
    row->has_applied_at = t->has_applied_at;
    row->applied_at_us = t->applied_at_us;
}

/* Where a page starts: the account's newest row, or the row before
 * before_txid in its statement. *start is 0 when there is nothing to list. */
static enum lookup_result page_start(struct lookup *l, const char *card, size_t card_len,
                                     uint64_t before_txid, uint64_t *start)
{
    *start = 0;
    if (before_txid == 0) {
        enum lookup_result r = l->ops->head(l, card, card_len, start);
        /* an unknown account has no rows: the caller checks existence */
        return r == LOOKUP_ERROR ? LOOKUP_ERROR : LOOKUP_FOUND;
    }
    struct chain_row row;
    enum lookup_result r = read_row(l, before_txid, &row);
    if (r != LOOKUP_FOUND)
        return r;
    int own = side_of(&row, card, card_len);
    if (own < 0)
        return LOOKUP_NOT_FOUND; /* another account's row: not a position here */
    *start = next_of(&row, own);
    return LOOKUP_FOUND;
}

enum lookup_result lookup_statement(struct lookup *l, const char *card, size_t card_len,
                                    uint64_t before_txid, uint32_t limit,
                                    struct lookup_stmt_row *rows, uint32_t *n)
{
    *n = 0;
    if (limit > LOOKUP_STATEMENT_MAX)
        limit = LOOKUP_STATEMENT_MAX;
    uint64_t txid = 0;
    enum lookup_result r = page_start(l, card, card_len, before_txid, &txid);
    if (r != LOOKUP_FOUND)
        return r;
    while (txid != 0 && *n < limit) {
        struct chain_row row;
        r = read_row(l, txid, &row);
        if (r == LOOKUP_ERROR) {
            *n = 0;
            return LOOKUP_ERROR;
        }
        int own = r == LOOKUP_FOUND ? side_of(&row, card, card_len) : -1;
        if (own < 0) {
            /* The workers write both ends of every link in one transaction:
             * a dangling one is damage to report, not a reason to fail the
             * rows already found. */
            log_error("lookup: statement of %.*s: txid %" PRIu64 " is %s", (int)card_len, card,
                      txid, r == LOOKUP_FOUND ? "another account's row" : "not in the ledger");
            break;
        }
        to_stmt_row(&row, txid, own, &rows[(*n)++]);
        uint64_t next = next_of(&row, own);
        if (next == txid) {
            log_error("lookup: statement of %.*s: txid %" PRIu64 " links to itself",
                      (int)card_len, card, txid);
            break;
        }
        txid = next;
    }
    return LOOKUP_FOUND;
}
