/* The ledger's business rules, run on a batch's book of accounts (rules.h).
 * Every backend applies entries through rules_apply, so an outcome never
 * depends on which database holds the ledger. */
#include "ledger/rules.h"

#include <stdlib.h>
#include <string.h>

#include "common/check.h"

void rules_book_reset(struct rules_book *b)
{
    b->n = 0;
}

void rules_book_free(struct rules_book *b)
{
    free(b->accounts);
    *b = (struct rules_book){ 0 };
}

static int add_card(struct rules_book *b, const char *card, uint8_t len)
{
    ASSERT(len > 0 && len <= TXN_CARD_MAX);
    if (b->n == b->cap) {
        uint32_t cap = b->cap ? b->cap * 2 : 256;
        struct rules_account *a = realloc(b->accounts, (size_t)cap * sizeof *a);
        if (a == NULL)
            return -1;
        b->accounts = a;
        b->cap = cap;
    }
    struct rules_account *a = &b->accounts[b->n++];
    memset(a, 0, sizeof *a);
    memcpy(a->card, card, len);
    a->card_len = len;
    return 0;
}

int rules_book_add_entry(struct rules_book *b, const struct txn_entry *e)
{
    if (add_card(b, e->card, e->card_len) != 0)
        return -1;
    if (e->kind == TXN_KIND_TRANSFER)
        return add_card(b, e->card2, e->card2_len);
    return 0;
}

static int compare_card(const char *a, uint8_t alen, const char *b, uint8_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c != 0 ? c : (int)alen - (int)blen;
}

static int compare_accounts(const void *x, const void *y)
{
    const struct rules_account *a = x, *b = y;
    return compare_card(a->card, a->card_len, b->card, b->card_len);
}

void rules_book_seal(struct rules_book *b)
{
    if (b->n == 0)
        return;
    qsort(b->accounts, b->n, sizeof *b->accounts, compare_accounts);
    uint32_t out = 1;
    for (uint32_t i = 1; i < b->n; i++)
        if (compare_accounts(&b->accounts[i], &b->accounts[out - 1]) != 0)
            b->accounts[out++] = b->accounts[i];
    b->n = out;
}

struct rules_account *rules_book_find(struct rules_book *b, const char *card, uint8_t len)
{
    uint32_t lo = 0, hi = b->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = compare_card(b->accounts[mid].card, b->accounts[mid].card_len, card, len);
        if (c == 0)
            return &b->accounts[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Every account an entry names was added to the book before it was sealed:
 * a miss is a bug in the caller, not a missing account. */
static struct rules_account *must_find(struct rules_book *b, const char *card, uint8_t len)
{
    struct rules_account *a = rules_book_find(b, card, len);
    ASSERT(a != NULL);
    return a;
}

/* Makes e the newest row of a's statement with a's balance now at balance,
 * counting it as what; *prev gets the row e follows. */
static void settle(struct rules_account *a, int64_t balance, const struct txn_entry *e,
                   enum rules_count what, uint64_t *prev)
{
    ASSERT(a->found && a->integer);
    *prev = a->last_txid;
    a->balance = balance;
    a->last_txid = e->txid;
    a->counts[what]++;
    a->counts[RULES_TOTAL]++;
    a->dirty = 1;
}

static void reject(struct ledger_outcome *out, enum txn_reason why)
{
    out->status = TXN_STATUS_REJECTED;
    out->reason = why;
}

/* Deposit (amount > 0) or withdrawal (amount < 0). |amount| <=
 * TXN_AMOUNT_LIMIT, so neither negation nor subtraction overflows. A
 * refusal on an existing account still joins its statement. */
static void apply_amount(struct rules_book *b, const struct txn_entry *e, struct ledger_outcome *out)
{
    struct rules_account *a = must_find(b, e->card, e->card_len);
    if (!a->found) {
        out->status = TXN_STATUS_UNKNOWN_ACCOUNT;
        return;
    }
    if (!a->integer) {
        /* Never rewritten (it would become an integer): such a refusal
         * stays out of the statement. */
        reject(out, TXN_REASON_NOT_INTEGER);
        return;
    }
    if (e->amount < 0 && a->balance < -e->amount)
        out->status = TXN_STATUS_INSUFFICIENT_FUNDS;
    else if (e->amount > 0 && a->balance > INT64_MAX - e->amount)
        reject(out, TXN_REASON_OVERFLOW);
    else {
        out->status = TXN_STATUS_APPLIED;
        out->balance_after = a->balance + e->amount;
        settle(a, out->balance_after, e, e->amount > 0 ? RULES_DEPOSIT : RULES_WITHDRAWAL,
               &out->prev_txid);
        return;
    }
    settle(a, a->balance, e, RULES_REFUSED, &out->prev_txid);
}

/* Both balances change in this batch's transaction, or neither does. The
 * row joins the statement of each side that exists (the "from" side only
 * when both are one account). */
static void apply_transfer(struct rules_book *b, const struct txn_entry *e,
                           struct ledger_outcome *out)
{
    int same = e->card_len == e->card2_len && memcmp(e->card, e->card2, e->card_len) == 0;
    struct rules_account *from = must_find(b, e->card, e->card_len);
    struct rules_account *to = same ? NULL : must_find(b, e->card2, e->card2_len);
    if (same)
        reject(out, TXN_REASON_SAME_ACCOUNT);
    else if (!from->found || !to->found)
        reject(out, TXN_REASON_UNKNOWN_ACCOUNT);
    else if (!from->integer || !to->integer)
        reject(out, TXN_REASON_NOT_INTEGER);
    else if (from->balance < e->amount)
        reject(out, TXN_REASON_INSUFFICIENT_FUNDS);
    else if (to->balance > INT64_MAX - e->amount)
        reject(out, TXN_REASON_OVERFLOW);
    else {
        out->status = TXN_STATUS_APPLIED;
        out->balance_after = from->balance - e->amount;
        out->counterparty_balance = to->balance + e->amount;
    }
    int applied = out->status == TXN_STATUS_APPLIED;
    if (from->found && from->integer)
        settle(from, applied ? out->balance_after : from->balance, e,
               applied ? RULES_TRANSFER_OUT : RULES_REFUSED, &out->prev_txid);
    if (to != NULL && to->found && to->integer)
        settle(to, applied ? out->counterparty_balance : to->balance, e,
               applied ? RULES_TRANSFER_IN : RULES_REFUSED, &out->counterparty_prev_txid);
}

/* An opening is the first row of the new account's statement, counted in
 * its total only. */
static void apply_open(struct rules_book *b, const struct txn_entry *e, int64_t applied_at_us,
                       struct ledger_outcome *out)
{
    struct rules_account *a = must_find(b, e->card, e->card_len);
    if (a->found) {
        reject(out, TXN_REASON_ACCOUNT_EXISTS);
        return;
    }
    a->found = a->created = a->integer = a->dirty = 1;
    a->balance = e->amount;
    a->last_txid = e->txid;
    a->opened_at_us = applied_at_us;
    memset(a->counts, 0, sizeof a->counts);
    a->counts[RULES_TOTAL] = 1;
    out->status = TXN_STATUS_APPLIED;
    out->balance_after = e->amount;
}

void rules_apply(struct rules_book *b, const struct txn_entry *e, int64_t applied_at_us,
                 struct ledger_outcome *out)
{
    switch (e->kind) {
    case TXN_KIND_TRANSFER: apply_transfer(b, e, out); break;
    case TXN_KIND_OPEN: apply_open(b, e, applied_at_us, out); break;
    case TXN_KIND_AMOUNT: apply_amount(b, e, out); break;
    default: ASSERT(!"entry kind passed txn_entry_check");
    }
}
