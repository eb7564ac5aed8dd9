/* Field rules for ledger requests, shared by the frontend (input validation)
 * and the worker (re-validation of entries read from shared memory). */
#include "common/txn.h"

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

int txn_key_valid(const char *key, size_t len)
{
    if (len == 0 || len > TXN_KEY_MAX)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (key[i] < 0x20 || key[i] > 0x7e)
            return -1;
    return 0;
}

static void set_card(char *dst, uint8_t *dst_len, const char *card, size_t len)
{
    *dst_len = (uint8_t)len;
    memcpy(dst, card, len);
    dst[len] = '\0';
}

int txn_entry_make(struct txn_entry *e, const char *card, size_t card_len, int64_t amount)
{
    if (txn_card_valid(card, card_len) != 0 || txn_amount_valid(amount) != 0)
        return -1;
    memset(e, 0, sizeof *e);
    e->kind = TXN_KIND_AMOUNT;
    e->amount = amount;
    set_card(e->card, &e->card_len, card, card_len);
    return 0;
}

int txn_entry_make_transfer(struct txn_entry *e, const char *from, size_t from_len,
                            const char *to, size_t to_len, int64_t amount)
{
    if (txn_card_valid(from, from_len) != 0 || txn_card_valid(to, to_len) != 0 || amount <= 0 ||
        amount > TXN_AMOUNT_LIMIT)
        return -1;
    memset(e, 0, sizeof *e);
    e->kind = TXN_KIND_TRANSFER;
    e->amount = amount;
    set_card(e->card, &e->card_len, from, from_len);
    set_card(e->card2, &e->card2_len, to, to_len);
    return 0;
}

int txn_entry_make_open(struct txn_entry *e, const char *card, size_t card_len, int64_t balance)
{
    if (txn_card_valid(card, card_len) != 0 || balance < 0 || balance > TXN_AMOUNT_LIMIT)
        return -1;
    memset(e, 0, sizeof *e);
    e->kind = TXN_KIND_OPEN;
    e->amount = balance;
    set_card(e->card, &e->card_len, card, card_len);
    return 0;
}

int txn_entry_set_key(struct txn_entry *e, const char *key, size_t len)
{
    if (txn_key_valid(key, len) != 0)
        return -1;
    e->key_len = (uint8_t)len;
    memcpy(e->key, key, len);
    e->key[len] = '\0';
    return 0;
}

/* FNV-1a, 64 bit: fixed by definition, so fingerprints stored in a ledger
 * stay comparable across builds and machines. */
static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t txn_fingerprint(const struct txn_entry *e)
{
    /* Fields are fed with explicit lengths and separators, and the amount
     * as little-endian bytes, so no two different requests share an input. */
    unsigned char amount[8], kind = e->kind, sep = 0xff;
    uint64_t a = (uint64_t)e->amount;
    for (int i = 0; i < 8; i++)
        amount[i] = (unsigned char)(a >> (8 * i));
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv1a(h, &kind, 1);
    h = fnv1a(h, amount, sizeof amount);
    h = fnv1a(h, e->card, e->card_len <= TXN_CARD_MAX ? e->card_len : TXN_CARD_MAX);
    h = fnv1a(h, &sep, 1);
    h = fnv1a(h, e->card2, e->card2_len <= TXN_CARD_MAX ? e->card2_len : TXN_CARD_MAX);
    return h;
}

static int card_field_ok(const char *card, uint8_t len)
{
    return len > 0 && len <= TXN_CARD_MAX && card[len] == '\0' && txn_card_valid(card, len) == 0;
}

int txn_entry_check(const struct txn_entry *e, const char **why)
{
    if (e->txid == 0) {
        *why = "missing txid";
        return -1;
    }
    if (!card_field_ok(e->card, e->card_len)) {
        *why = "malformed card number";
        return -1;
    }
    if (e->key_len > TXN_KEY_MAX || e->key[e->key_len] != '\0' ||
        (e->key_len > 0 && txn_key_valid(e->key, e->key_len) != 0)) {
        *why = "malformed idempotency key";
        return -1;
    }
    switch (e->kind) {
    case TXN_KIND_AMOUNT:
        if (txn_amount_valid(e->amount) != 0) {
            *why = "amount out of range";
            return -1;
        }
        return 0;
    case TXN_KIND_TRANSFER:
        if (!card_field_ok(e->card2, e->card2_len)) {
            *why = "malformed transfer destination";
            return -1;
        }
        if (e->amount <= 0 || e->amount > TXN_AMOUNT_LIMIT) {
            *why = "transfer amount out of range";
            return -1;
        }
        return 0;
    case TXN_KIND_OPEN:
        if (e->amount < 0 || e->amount > TXN_AMOUNT_LIMIT) {
            *why = "opening balance out of range";
            return -1;
        }
        return 0;
    default:
        *why = "unknown entry kind";
        return -1;
    }
}

static const char *const status_names[TXN_STATUS_COUNT] = {
    "queued", "applied", "insufficient_funds", "unknown_account", "rejected", "duplicate",
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

static const char *const reason_names[TXN_REASON_COUNT] = {
    "", "same_account", "unknown_account", "insufficient_funds", "overflow", "not_integer",
    "account_exists", "idempotency_key_reused", "corrupt_entry",
};

const char *txn_reason_name(enum txn_reason r)
{
    return ((unsigned)r < TXN_REASON_COUNT) ? reason_names[r] : "unknown";
}

const char *txn_kind_name(const struct txn_entry *e)
{
    switch (e->kind) {
    case TXN_KIND_TRANSFER: return "transfer";
    case TXN_KIND_OPEN: return "open";
    default: return e->amount > 0 ? "deposit" : "withdrawal";
    }
}
