/* Field rules for transactions, shared by the frontend (input validation) and
 * the worker (re-validation of entries read from shared memory). */
#include "txn.h"

#include <string.h>

int txn_card_valid(const char *card, size_t len)
{
    if (len == 0 || len > TXN_CARD_MAX)
        return -1;
    int digits = 0;
    for (size_t i = 0; i < len; i++) {
        if (card[i] >= '0' && card[i] <= '9')
            digits++;
        else if (card[i] != ' ')
            return -1;
    }
    return digits > 0 ? 0 : -1;
}

int txn_amount_valid(int64_t amount)
{
    if (amount == 0)
        return -1;
    return (amount >= -TXN_AMOUNT_LIMIT && amount <= TXN_AMOUNT_LIMIT) ? 0 : -1;
}

int txn_entry_make(struct txn_entry *e, const char *card, size_t card_len, int64_t amount)
{
    if (txn_card_valid(card, card_len) != 0 || txn_amount_valid(amount) != 0)
        return -1;
    memset(e, 0, sizeof *e);
    e->kind = TXN_KIND_AMOUNT;
    e->amount = amount;
    e->card_len = (uint8_t)card_len;
    memcpy(e->card, card, card_len);
    return 0;
}

int txn_entry_check(const struct txn_entry *e, const char **why)
{
    if (e->kind != TXN_KIND_AMOUNT) {
        *why = "unknown entry kind";
        return -1;
    }
    if (e->txid == 0) {
        *why = "missing txid";
        return -1;
    }
    if (e->card_len == 0 || e->card_len > TXN_CARD_MAX || e->card[e->card_len] != '\0' ||
        txn_card_valid(e->card, e->card_len) != 0) {
        *why = "malformed card number";
        return -1;
    }
    if (txn_amount_valid(e->amount) != 0) {
        *why = "amount out of range";
        return -1;
    }
    return 0;
}

static const char *const status_names[TXN_STATUS_COUNT] = {
    "queued", "applied", "insufficient_funds", "unknown_account", "rejected",
};

const char *txn_status_name(enum txn_status s)
{
    return ((unsigned)s < TXN_STATUS_COUNT) ? status_names[s] : "unknown";
}

int txn_status_parse(const char *name)
{
    for (int i = 0; i < TXN_STATUS_COUNT; i++)
        if (strcmp(name, status_names[i]) == 0)
            return i;
    return -1;
}
