/* libFuzzer target for everything the frontend parses out of a request
 * before it touches the queue: the POST /transaction body validator, the
 * POST /transactions batch validator, the Content-Type check, the
 * /transaction/<txid> parser and query-string decoding. Every input goes
 * through all of them, and each result is checked against rules stated
 * independently of the code under test:
 *
 *   validate_transaction  accepted  => the entry passes txn_entry_check once
 *                                      it has a txid, the amount is non-zero
 *                                      and within +-10^15, the card is valid,
 *                                      and cJSON reads the same two fields
 *                                      from the body, each exactly once, from
 *                                      well-formed UTF-8 without NUL bytes
 *                                      and without \u0000 in a member name;
 *                         refused   => 413 iff over the size limit, else 400,
 *                                      with a non-empty message; a body that
 *                                      is a plain JSON object is never called
 *                                      "not valid JSON" or "not an object".
 *   validate_transactions accepted  => 1..VALIDATE_BATCH_MAX entries, each
 *                                      meeting the rules above and matching
 *                                      cJSON's element; "[" body "]" is a
 *                                      batch of one exactly when the body
 *                                      alone is accepted, with the same entry.
 *   validate_transfer     accepted  => a transfer entry that passes
 *                                      txn_entry_check, 0 < amount <= 10^15,
 *                                      and cJSON reads exactly the members
 *                                      from, to and amount, each once, with
 *                                      the same values; refused as above.
 *   validate_account      accepted  => an opening that passes
 *                                      txn_entry_check with 0 <= balance <=
 *                                      10^15 (0 when absent), and the body
 *                                      has card_number, maybe balance, and
 *                                      nothing else; refused as above.
 *   validate_prefer_wait  >= 0      => at most VALIDATE_WAIT_MAX and the
 *                                      value names "wait" (any case).
 *   validate_wait_param   accepted  <=> 1+ decimal digits; the value is
 *                                      the number, capped at
 *                                      VALIDATE_WAIT_MAX.
 *   validate_idempotency_key        <=> txn_key_valid.
 *   validate_content_type accepted  => the value is "application/json" (any
 *                                      case) plus optional parameters.
 *   validate_txid         accepted  <=> 1-19 digits, no leading zero, value
 *                                      <= INT64_MAX; printing it back gives
 *                                      the same text.
 *   query_param           0         => the value fits with its NUL, and its
 *                                      percent-encoding decodes back to it.
 *
 * A failed rule aborts, which libFuzzer reports as a crash with the input. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/txn.h"
#include "frontend/query.h"
#include "frontend/validate.h"

#define MAX_BODY 4096 /* the server's fixed body limit */

#define REQUIRE(cond)                                                                   \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "fuzz_validate: %s:%d: rule broken: %s\n", __FILE__,        \
                    __LINE__, #cond);                                                   \
            abort();                                                                    \
        }                                                                               \
    } while (0)

/* RFC 3629 well-formedness, written as the table of valid byte sequences
 * (RFC 3629 section 4) rather than as a decoder. */
static int utf8_well_formed(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c <= 0x7F) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
        } else if (c == 0xE0) {
            n = 2, lo = 0xA0;
        } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
            n = 2;
        } else if (c == 0xED) {
            n = 2, hi = 0x9F;
        } else if (c == 0xF0) {
            n = 3, lo = 0x90;
        } else if (c >= 0xF1 && c <= 0xF3) {
            n = 3;
        } else if (c == 0xF4) {
            n = 3, hi = 0x8F;
        } else {
            return 0;
        }
        if (len - i <= n)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += n + 1;
    }
    return 1;
}

/* cJSON tolerates what RFC 8259 does not: any control byte as whitespace,
 * raw control bytes in strings, a leading byte order mark. Bodies with those
 * are left out of the "plain JSON object" rule. */
static int has_control_or_bom(const unsigned char *s, size_t len)
{
    if (len >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF)
        return 1;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x20 && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return 1;
    return 0;
}

/* 1 if a member name of an object at nesting depth `at` (1: the body's own
 * object, 2: the objects of a batch array) holds the escape \u0000, which
 * cJSON would cut short, reading "amount\u0000x" as amount. Walks the text
 * as tokens: strings, brackets, and the ':' after a name. */
static int name_has_nul(const uint8_t *s, size_t len, int at)
{
    int depth = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '{' || s[i] == '[') {
            depth++;
        } else if (s[i] == '}' || s[i] == ']') {
            depth--;
        } else if (s[i] == '"') {
            int nul = 0;
            for (i++; i < len && s[i] != '"'; i++) {
                if (s[i] == '\\') {
                    nul |= len - i > 5 && memcmp(s + i + 1, "u0000", 5) == 0;
                    i++;
                }
            }
            size_t j = i + 1;
            while (j < len && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r'))
                j++;
            if (nul && depth == at && j < len && s[j] == ':')
                return 1;
        }
    }
    return 0;
}

static cJSON *parse_copy(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    REQUIRE(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    cJSON *doc = cJSON_ParseWithOpts(text, NULL, 1);
    free(text);
    return doc;
}

static int count_members(const cJSON *obj, const char *name, const cJSON **found)
{
    int n = 0;
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (strcmp(c->string, name) == 0) {
            *found = c;
            n++;
        }
    }
    return n;
}

/* The rules every entry a validator hands out must meet. */
static void check_entry(const struct txn_entry *e)
{
    const char *why = "";
    REQUIRE(e->kind == TXN_KIND_AMOUNT);
    REQUIRE(e->txid == 0 && e->queued_at_us == 0 && e->attempts == 0);
    REQUIRE(e->amount != 0);
    REQUIRE(e->amount >= -TXN_AMOUNT_LIMIT && e->amount <= TXN_AMOUNT_LIMIT);
    REQUIRE(e->card_len >= 1 && e->card_len <= TXN_CARD_MAX);
    REQUIRE(strlen(e->card) == e->card_len);
    REQUIRE(txn_card_valid(e->card, e->card_len) == 0);
    REQUIRE(e->card2_len == 0 && e->card2[0] == '\0');
    REQUIRE(e->key_len == 0 && e->key[0] == '\0' && e->waiter == 0);
    struct txn_entry queued = *e;
    queued.txid = 1; /* what ring_enqueue adds */
    REQUIRE(txn_entry_check(&queued, &why) == 0);
}

/* The entry holds what cJSON reads from the object, each field once. */
static void check_same_fields(const cJSON *obj, const struct txn_entry *e)
{
    const cJSON *card = NULL, *amount = NULL;
    REQUIRE(cJSON_IsObject(obj));
    REQUIRE(count_members(obj, "card_number", &card) == 1);
    REQUIRE(count_members(obj, "amount", &amount) == 1);
    REQUIRE(cJSON_IsString(card) && strcmp(card->valuestring, e->card) == 0);
    /* |amount| <= 10^15 < 2^53: the double is exact. */
    REQUIRE(cJSON_IsNumber(amount) && amount->valuedouble == (double)e->amount);
}

static void check_accepted(const uint8_t *data, size_t size, const struct txn_entry *e)
{
    REQUIRE(size <= MAX_BODY);
    REQUIRE(memchr(data, '\0', size) == NULL);
    REQUIRE(utf8_well_formed(data, size));
    REQUIRE(!name_has_nul(data, size, 1));
    check_entry(e);
    cJSON *doc = parse_copy(data, size);
    REQUIRE(doc != NULL);
    check_same_fields(doc, e);
    cJSON_Delete(doc);
}

static void check_refused(const uint8_t *data, size_t size, const struct validate_error *err)
{
    REQUIRE(memchr(err->message, '\0', sizeof err->message) != NULL);
    REQUIRE(err->message[0] != '\0');
    if (size > MAX_BODY) {
        REQUIRE(err->status == 413);
        return;
    }
    REQUIRE(err->status == 400);
    if (memchr(data, '\0', size) || has_control_or_bom(data, size) ||
        !utf8_well_formed(data, size))
        return;
    cJSON *doc = parse_copy(data, size);
    if (doc && cJSON_IsObject(doc)) {
        REQUIRE(strcmp(err->message, "body is not valid JSON") != 0);
        REQUIRE(strcmp(err->message, "body must be a JSON object") != 0);
    }
    cJSON_Delete(doc);
}

static int fuzz_body(const uint8_t *data, size_t size, struct txn_entry *e)
{
    struct validate_error err;
    memset(e, 0xA5, sizeof *e); /* must be fully overwritten on success */
    memset(&err, 0, sizeof err);
    int rc = validate_transaction((const char *)data, size, MAX_BODY, e, &err);
    REQUIRE(rc == 0 || rc == -1);
    if (rc == 0)
        check_accepted(data, size, e);
    else
        check_refused(data, size, &err);
    return rc;
}

static struct txn_entry batch[VALIDATE_BATCH_MAX];

/* POST /transactions: data as the whole array body. Returns the count
 * accepted, or -1. */
static int fuzz_batch(const uint8_t *data, size_t size)
{
    struct validate_error err;
    uint32_t n = UINT32_MAX;
    memset(&err, 0, sizeof err);
    memset(batch, 0xA5, sizeof batch);
    int rc = validate_transactions((const char *)data, size, MAX_BODY, batch, &n, &err);
    REQUIRE(rc == 0 || rc == -1);
    if (rc != 0) {
        REQUIRE(n == 0);
        REQUIRE(err.status == 400 || err.status == 413);
        REQUIRE(err.message[0] != '\0' && memchr(err.message, '\0', sizeof err.message));
        if (size > VALIDATE_BATCH_MAX_BODY)
            REQUIRE(err.status == 413);
        return -1;
    }
    REQUIRE(size <= VALIDATE_BATCH_MAX_BODY);
    REQUIRE(n >= 1 && n <= VALIDATE_BATCH_MAX);
    REQUIRE(memchr(data, '\0', size) == NULL);
    REQUIRE(utf8_well_formed(data, size));
    REQUIRE(!name_has_nul(data, size, 2));
    cJSON *doc = parse_copy(data, size);
    REQUIRE(doc != NULL && cJSON_IsArray(doc) && cJSON_GetArraySize(doc) == (int)n);
    uint32_t k = 0;
    for (const cJSON *item = doc->child; item; item = item->next, k++) {
        check_entry(&batch[k]);
        check_same_fields(item, &batch[k]);
    }
    cJSON_Delete(doc);
    return (int)n;
}

/* A batch of one, "[" data "]", says what the single-body validator says
 * about data (within the single body's size limit). */
static void fuzz_batch_of_one(const uint8_t *data, size_t size, int single_rc,
                              const struct txn_entry *single)
{
    uint8_t *wrapped = malloc(size + 2);
    REQUIRE(wrapped != NULL);
    wrapped[0] = '[';
    memcpy(wrapped + 1, data, size);
    wrapped[size + 1] = ']';
    int n = fuzz_batch(wrapped, size + 2);
    free(wrapped);
    if (single_rc == 0)
        REQUIRE(n == 1 && memcmp(&batch[0], single, sizeof *single) == 0);
    else if (size <= MAX_BODY)
        REQUIRE(n != 1);
}

/* The members of obj are exactly the allowed names, each at most once. */
static int only_members(const cJSON *obj, const char *const *names, int n)
{
    for (const cJSON *c = obj->child; c; c = c->next) {
        int k = 0;
        while (k < n && strcmp(c->string, names[k]) != 0)
            k++;
        if (k == n)
            return 0;
    }
    for (int k = 0; k < n; k++) {
        const cJSON *found = NULL;
        if (count_members(obj, names[k], &found) > 1)
            return 0;
    }
    return 1;
}

static void check_refused_status(size_t size, const struct validate_error *err)
{
    REQUIRE(err->message[0] != '\0' && memchr(err->message, '\0', sizeof err->message));
    REQUIRE(err->status == (size > MAX_BODY ? 413 : 400));
}

/* Common checks of an accepted single-object body; returns its parse. */
static cJSON *accepted_object(const uint8_t *data, size_t size, const struct txn_entry *e,
                              const char *const *names, int n)
{
    const char *why = "";
    REQUIRE(size <= MAX_BODY);
    REQUIRE(memchr(data, '\0', size) == NULL);
    REQUIRE(utf8_well_formed(data, size));
    REQUIRE(!name_has_nul(data, size, 1));
    REQUIRE(e->txid == 0 && e->queued_at_us == 0 && e->attempts == 0);
    REQUIRE(e->key_len == 0 && e->waiter == 0);
    struct txn_entry queued = *e;
    queued.txid = 1;
    REQUIRE(txn_entry_check(&queued, &why) == 0);
    cJSON *doc = parse_copy(data, size);
    REQUIRE(doc != NULL && cJSON_IsObject(doc));
    REQUIRE(only_members(doc, names, n));
    return doc;
}

static void fuzz_transfer(const uint8_t *data, size_t size)
{
    static const char *const names[] = { "from", "to", "amount" };
    struct txn_entry e;
    struct validate_error err;
    memset(&e, 0xA5, sizeof e);
    memset(&err, 0, sizeof err);
    int rc = validate_transfer((const char *)data, size, MAX_BODY, &e, &err);
    REQUIRE(rc == 0 || rc == -1);
    if (rc != 0) {
        check_refused_status(size, &err);
        return;
    }
    REQUIRE(e.kind == TXN_KIND_TRANSFER);
    REQUIRE(e.amount > 0 && e.amount <= TXN_AMOUNT_LIMIT);
    cJSON *doc = accepted_object(data, size, &e, names, 3);
    const cJSON *from = cJSON_GetObjectItemCaseSensitive(doc, "from");
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(doc, "to");
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(doc, "amount");
    REQUIRE(cJSON_IsString(from) && strcmp(from->valuestring, e.card) == 0);
    REQUIRE(cJSON_IsString(to) && strcmp(to->valuestring, e.card2) == 0);
    REQUIRE(cJSON_IsNumber(amount) && amount->valuedouble == (double)e.amount);
    cJSON_Delete(doc);
}

static void fuzz_account(const uint8_t *data, size_t size)
{
    static const char *const names[] = { "card_number", "balance" };
    struct txn_entry e;
    struct validate_error err;
    memset(&e, 0xA5, sizeof e);
    memset(&err, 0, sizeof err);
    int rc = validate_account((const char *)data, size, MAX_BODY, &e, &err);
    REQUIRE(rc == 0 || rc == -1);
    if (rc != 0) {
        check_refused_status(size, &err);
        return;
    }
    REQUIRE(e.kind == TXN_KIND_OPEN);
    REQUIRE(e.amount >= 0 && e.amount <= TXN_AMOUNT_LIMIT);
    REQUIRE(e.card2_len == 0);
    cJSON *doc = accepted_object(data, size, &e, names, 2);
    const cJSON *card = cJSON_GetObjectItemCaseSensitive(doc, "card_number");
    const cJSON *balance = cJSON_GetObjectItemCaseSensitive(doc, "balance");
    REQUIRE(cJSON_IsString(card) && strcmp(card->valuestring, e.card) == 0);
    if (balance)
        REQUIRE(cJSON_IsNumber(balance) && balance->valuedouble == (double)e.amount);
    else
        REQUIRE(e.amount == 0);
    cJSON_Delete(doc);
}

static void fuzz_waits(const uint8_t *data, size_t size, const char *text)
{
    int v = validate_prefer_wait(text);
    REQUIRE(v >= -1 && v <= VALIDATE_WAIT_MAX);
    if (v >= 0)
        REQUIRE(strcasestr(text, "wait") != NULL);

    unsigned w = 99;
    struct validate_error err;
    memset(&err, 0, sizeof err);
    int rc = validate_wait_param((const char *)data, size, &w, &err);
    int digits = size > 0;
    unsigned long long want = 0;
    for (size_t i = 0; digits && i < size; i++) {
        digits = data[i] >= '0' && data[i] <= '9';
        if (want <= VALIDATE_WAIT_MAX)
            want = want * 10 + (unsigned)(data[i] - '0');
    }
    REQUIRE(rc == (digits ? 0 : -1));
    if (rc == 0)
        REQUIRE(w == (want > VALIDATE_WAIT_MAX ? VALIDATE_WAIT_MAX : want));
    else
        REQUIRE(err.status == 400 && strstr(err.message, "wait") != NULL);

    size_t len = 99;
    rc = validate_idempotency_key(text, &len, &err);
    int valid = txn_key_valid(text, strlen(text)) == 0;
    REQUIRE(rc == (valid ? 0 : -1));
    REQUIRE(rc != 0 || len == strlen(text));
}

static void fuzz_content_type(const char *text)
{
    if (validate_content_type(text) != 0)
        return;
    static const char json[] = "application/json";
    const char *p = text + strspn(text, " \t");
    REQUIRE(strncasecmp(p, json, sizeof json - 1) == 0);
    p += sizeof json - 1;
    p += strspn(p, " \t");
    REQUIRE(*p == '\0' || *p == ';');
}

static void fuzz_txid(const uint8_t *data, size_t size)
{
    uint64_t v = 0;
    int rc = validate_txid((const char *)data, size, &v);
    int digits = size >= 1 && size <= 19 && data[0] != '0';
    for (size_t i = 0; digits && i < size; i++)
        digits = data[i] >= '0' && data[i] <= '9';
    if (!digits) {
        REQUIRE(rc == -1);
        return;
    }
    /* 1..19 digits: strtoull cannot overflow. */
    char text[20];
    memcpy(text, data, size);
    text[size] = '\0';
    unsigned long long want = strtoull(text, NULL, 10);
    REQUIRE(rc == (want <= INT64_MAX ? 0 : -1));
    if (rc == 0) {
        char back[24];
        snprintf(back, sizeof back, "%" PRIu64, v);
        REQUIRE(v == want && strcmp(back, text) == 0);
    }
}

static void fuzz_query(const char *query, size_t cap)
{
    char out[64], again[64], encoded[3 * 64 + 16];
    size_t len = 0, len2 = 0;
    memset(out, 0x5A, sizeof out);
    int rc = query_param(query, "card_number", out, cap, &len);
    REQUIRE(rc == 0 || rc == -ENOENT || rc == -EINVAL || rc == -E2BIG);
    if (rc != 0)
        return;
    REQUIRE(len < cap && out[len] == '\0');
    REQUIRE(len <= strlen(query));
    int n = snprintf(encoded, sizeof encoded, "x=1&card_number=");
    for (size_t i = 0; i < len; i++)
        n += snprintf(encoded + n, sizeof encoded - (size_t)n, "%%%02X", (unsigned char)out[i]);
    REQUIRE(query_param(encoded, "card_number", again, cap, &len2) == 0);
    REQUIRE(len2 == len && memcmp(again, out, len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct txn_entry single;
    int single_rc = fuzz_body(data, size, &single);
    fuzz_batch(data, size);
    fuzz_batch_of_one(data, size, single_rc, &single);
    fuzz_transfer(data, size);
    fuzz_account(data, size);
    fuzz_txid(data, size);

    /* Header values and query strings are NUL-terminated C strings. */
    char *text = malloc(size + 1);
    REQUIRE(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    fuzz_content_type(text);
    fuzz_waits(data, size, text);
    fuzz_query(text, TXN_CARD_MAX + 1); /* what GET /balance passes */
    fuzz_query(text, 4);
    free(text);
    return 0;
}
