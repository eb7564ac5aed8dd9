/* Validation of the request bodies (POST /transaction, /transactions,
 * /transfer, /accounts) and of the other request inputs (Content-Type,
 * Idempotency-Key, Prefer: wait and ?wait=, transaction ids).
 *
 * cJSON decides whether the body is JSON and decodes the member names, but it
 * turns every number into a double and cuts strings at an escaped NUL, so it
 * cannot tell 100 from 1e2, 100.0 or -0. The money fields are therefore
 * checked on their raw text: a small scanner walks the top-level members of
 * the (already parsed, hence well-formed) object in document order, which is
 * also cJSON's child order, and records where each member's value starts and
 * ends.
 *
 * Two things cJSON lets through are refused before they can matter: bytes
 * that are not UTF-8 (RFC 8259 requires it; cJSON copies any byte) and a
 * member name with an escaped NUL, which cJSON cuts short, so that
 * "amount\u0000x" would otherwise be read as amount.
 *
 * POST /transaction ignores members it does not know, as the prototype did;
 * the newer bodies refuse them, so that a misspelt "ammount" is an error and
 * not a transfer of a default. */
#include "frontend/validate.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Raw text of one top-level member's value: body[start, end). */
struct span {
    size_t start, end;
};

static int fail(struct validate_error *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct validate_error *err, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err->status = status;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* 1 if s[0, len) is well-formed UTF-8: no stray continuation bytes, no
 * overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const unsigned char *s, size_t len)
{
    static const uint32_t min_cp[4] = { 0, 0x80, 0x800, 0x10000 };
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t extra = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2
                     : (c & 0xF8) == 0xF0 ? 3 : 4;
        if (extra == 4 || len - i <= extra)
            return 0;
        uint32_t cp = extra == 0 ? c : c & (0x3Fu >> extra);
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if (cp < min_cp[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += extra + 1;
    }
    return 1;
}

/* 1 if the raw text of a string holds the escape \u0000. */
static int has_escaped_nul(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\\')
            continue;
        if (len - i > 5 && memcmp(s + i + 1, "u0000", 5) == 0)
            return 1;
        i++; /* the escaped character */
    }
    return 0;
}

/* JSON whitespace only (RFC 8259); cJSON also skips other control bytes,
 * which the scanner refuses so that such bodies count as invalid. */
static size_t skip_ws(const char *s, size_t i, size_t len)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* s[i] is the opening quote; returns the index just past the closing one. */
static size_t skip_string(const char *s, size_t i, size_t len)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return len + 1;
}

/* Skips one value of any kind; returns the index past it, > len if malformed. */
static size_t skip_value(const char *s, size_t i, size_t len)
{
    if (i >= len)
        return len + 1;
    if (s[i] == '"')
        return skip_string(s, i, len);
    if (s[i] == '{' || s[i] == '[') {
        size_t depth = 0;
        while (i < len) {
            if (s[i] == '"') {
                i = skip_string(s, i, len);
                continue;
            }
            if (s[i] == '{' || s[i] == '[')
                depth++;
            else if ((s[i] == '}' || s[i] == ']') && --depth == 0)
                return i + 1;
            i++;
        }
        return len + 1;
    }
    size_t start = i;
    while (i < len && !strchr(",}] \t\n\r", s[i]))
        i++;
    return i > start ? i : len + 1;
}

#define SCAN_NOT_OBJECT (-1)
#define SCAN_NUL_IN_NAME (-2)

/* Records the value span of each member of the object that starts at s[i]
 * (spans are absolute offsets into s) and sets *end past its closing brace.
 * Returns the member count, SCAN_NOT_OBJECT if s[i] does not start a
 * well-formed object, or SCAN_NUL_IN_NAME if a member name holds \u0000. */
static int scan_object(const char *s, size_t i, size_t len, struct span *spans, int max,
                       size_t *end)
{
    int n = 0;
    if (i >= len || s[i] != '{')
        return SCAN_NOT_OBJECT;
    i = skip_ws(s, i + 1, len);
    if (i < len && s[i] == '}') {
        *end = i + 1;
        return 0;
    }
    for (;;) {
        if (i >= len || s[i] != '"' || n == max)
            return SCAN_NOT_OBJECT;
        size_t name_end = skip_string(s, i, len);
        if (name_end <= len && has_escaped_nul(s + i, name_end - i))
            return SCAN_NUL_IN_NAME;
        i = skip_ws(s, name_end, len);
        if (i >= len || s[i] != ':')
            return SCAN_NOT_OBJECT;
        i = skip_ws(s, i + 1, len);
        size_t value_end = skip_value(s, i, len);
        if (value_end > len)
            return SCAN_NOT_OBJECT;
        spans[n++] = (struct span){ i, value_end };
        i = skip_ws(s, value_end, len);
        if (i < len && s[i] == ',') {
            i = skip_ws(s, i + 1, len);
            continue;
        }
        if (i < len && s[i] == '}') {
            *end = i + 1;
            return n;
        }
        return SCAN_NOT_OBJECT;
    }
}

/* The same for a body that must be a single object and nothing else. */
static int scan_members(const char *s, size_t len, struct span *spans, int max)
{
    size_t end = 0;
    int n = scan_object(s, skip_ws(s, 0, len), len, spans, max, &end);
    if (n >= 0 && skip_ws(s, end, len) != len)
        return SCAN_NOT_OBJECT;
    return n;
}

/* Strict integer literal: -?[1-9][0-9]*, magnitude <= TXN_AMOUNT_LIMIT.
 * Returns 0, or -1 for "not an integer", -2 for "out of range". */
static int parse_amount(const char *s, size_t len, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (i < len && s[i] == '-') {
        neg = 1;
        i++;
    }
    if (len == 1 && s[0] == '0') {
        *out = 0; /* an integer, refused later as zero */
        return 0;
    }
    if (i == len || s[i] < '1' || s[i] > '9')
        return -1; /* also "-0" and leading zeros */
    int64_t v = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v > TXN_AMOUNT_LIMIT)
            continue; /* keep scanning: "1e999..." is a syntax error first */
        v = v * 10 + (s[i] - '0');
    }
    if (v > TXN_AMOUNT_LIMIT)
        return -2;
    *out = neg ? -v : v;
    return 0;
}

/* A strict integer member (see parse_amount) within [min, max]; messages
 * name the field. */
static int check_integer(const char *body, const cJSON *item, struct span sp, const char *name,
                         int64_t min, int64_t max, int64_t *out, struct validate_error *err)
{
    int rc = cJSON_IsNumber(item) ? parse_amount(body + sp.start, sp.end - sp.start, out) : -1;
    if (rc == -1)
        return fail(err, 400, "%s must be an integer", name);
    if (rc == -2 || *out < min || *out > max)
        return fail(err, 400, "%s must be between %lld and %lld", name, (long long)min,
                    (long long)max);
    return 0;
}

static int check_amount(const char *body, const cJSON *item, struct span sp, int64_t *out,
                        struct validate_error *err)
{
    if (check_integer(body, item, sp, "amount", -TXN_AMOUNT_LIMIT, TXN_AMOUNT_LIMIT, out,
                      err) != 0)
        return -1;
    if (*out == 0)
        return fail(err, 400, "amount must be non-zero");
    return 0;
}

/* The card is taken from the raw string so that escapes (\u0000 would end
 * cJSON's copy early) can never smuggle other characters past the check;
 * a card number needs no escapes. */
static int check_card(const char *body, const cJSON *item, struct span sp, const char *name,
                      struct span *card, struct validate_error *err)
{
    if (!cJSON_IsString(item) || sp.end - sp.start < 2)
        return fail(err, 400, "%s must be a string of 1-32 digits and spaces", name);
    card->start = sp.start + 1;
    card->end = sp.end - 1;
    if (txn_card_valid(body + card->start, card->end - card->start) != 0)
        return fail(err, 400, "%s must be a string of 1-32 digits and spaces", name);
    return 0;
}

static int find_duplicate(const cJSON *obj, struct validate_error *err)
{
    for (const cJSON *a = obj->child; a; a = a->next)
        for (const cJSON *b = a->next; b; b = b->next)
            if (strcmp(a->string, b->string) == 0)
                return fail(err, 400, "field %.64s appears more than once", a->string);
    return 0;
}

/* Picks card_number and amount out of a parsed object whose raw member
 * values are in spans (same order as obj's children). */
static int check_fields(const char *body, const cJSON *obj, const struct span *spans,
                        struct txn_entry *out, struct validate_error *err)
{
    const cJSON *card_item = NULL, *amount_item = NULL;
    struct span card_sp = { 0, 0 }, amount_sp = { 0, 0 }, card = { 0, 0 };
    int i = 0;
    for (const cJSON *c = obj->child; c; c = c->next, i++) {
        if (strcmp(c->string, "card_number") == 0) {
            card_item = c;
            card_sp = spans[i];
        } else if (strcmp(c->string, "amount") == 0) {
            amount_item = c;
            amount_sp = spans[i];
        }
    }
    if (!card_item)
        return fail(err, 400, "card_number is required");
    if (check_card(body, card_item, card_sp, "card_number", &card, err) != 0)
        return -1;
    if (!amount_item)
        return fail(err, 400, "amount is required");
    int64_t amount;
    if (check_amount(body, amount_item, amount_sp, &amount, err) != 0)
        return -1;
    if (txn_entry_make(out, body + card.start, card.end - card.start, amount) != 0)
        return fail(err, 400, "transaction fields are invalid"); /* rules above are the same */
    return 0;
}

/* cJSON wants a NUL-terminated buffer and would stop at an embedded NUL, so
 * the body is copied and NUL bytes are refused outright. */
static cJSON *parse_body(const char *body, size_t len)
{
    if (memchr(body, '\0', len))
        return NULL;
    char *copy = malloc(len + 1);
    if (!copy)
        return NULL;
    memcpy(copy, body, len);
    copy[len] = '\0';
    cJSON *doc = cJSON_ParseWithLengthOpts(copy, len + 1, NULL, 1);
    free(copy);
    return doc;
}

/* The checks every body gets before its shape is looked at: size (413),
 * UTF-8, then JSON. Returns the parsed document, or NULL with err set. */
static cJSON *parse_checked(const char *body, size_t len, size_t limit, struct validate_error *err)
{
    if (len > limit) {
        fail(err, 413, "request body larger than %zu bytes", limit);
        return NULL;
    }
    if (!utf8_valid((const unsigned char *)body, len)) {
        fail(err, 400, "body is not valid UTF-8");
        return NULL;
    }
    cJSON *doc = parse_body(body, len);
    if (!doc)
        fail(err, 400, "body is not valid JSON");
    return doc;
}

/* Checks the fields of a parsed object whose raw member values are in
 * spans (same order as obj's children) and fills the entry. */
typedef int (*fields_fn)(const char *body, const cJSON *obj, const struct span *spans,
                         struct txn_entry *out, struct validate_error *err);

/* A body that must be one JSON object: the shared checks (size, UTF-8,
 * JSON, raw scan, duplicate names), then the fields through check. */
static int validate_object(const char *body, size_t len, size_t max_body, fields_fn check,
                           struct txn_entry *out, struct validate_error *err)
{
    cJSON *doc = parse_checked(body, len, max_body, err);
    if (!doc)
        return -1;
    int rc = -1;
    struct span *spans = NULL;
    if (!cJSON_IsObject(doc)) {
        fail(err, 400, "body must be a JSON object");
        goto out;
    }
    /* Every member takes at least 4 bytes (`"":0`), which bounds the count. */
    int max_members = (int)(len / 4 + 1);
    spans = calloc((size_t)max_members, sizeof *spans);
    if (!spans) {
        fail(err, 500, "out of memory");
        goto out;
    }
    int members = scan_members(body, len, spans, max_members);
    if (members == SCAN_NUL_IN_NAME) {
        fail(err, 400, "field names must not contain \\u0000");
        goto out;
    }
    if (members != cJSON_GetArraySize(doc)) {
        fail(err, 400, "body is not valid JSON");
        goto out;
    }
    if (find_duplicate(doc, err) != 0)
        goto out;
    rc = check(body, doc, spans, out, err);
out:
    free(spans);
    cJSON_Delete(doc);
    return rc;
}

int validate_transaction(const char *body, size_t len, size_t max_body, struct txn_entry *out,
                         struct validate_error *err)
{
    return validate_object(body, len, max_body, check_fields, out, err);
}

/* The members of a body with a fixed set of fields. */
#define PICK_MAX 4
struct picked {
    const cJSON *item[PICK_MAX]; /* NULL when absent */
    struct span sp[PICK_MAX];
};

/* Finds names[0, n) among obj's members; any other member is refused, named
 * in the message with everything but printable ASCII shown as '?' (the
 * message becomes part of a JSON answer and must stay valid UTF-8). */
static int pick_fields(const cJSON *obj, const struct span *spans, const char *const *names,
                       int n, struct picked *p, struct validate_error *err)
{
    memset(p, 0, sizeof *p);
    int i = 0;
    for (const cJSON *c = obj->child; c; c = c->next, i++) {
        int k = 0;
        while (k < n && strcmp(c->string, names[k]) != 0)
            k++;
        if (k < n) {
            p->item[k] = c;
            p->sp[k] = spans[i];
            continue;
        }
        char shown[40];
        size_t j = 0;
        for (const char *s = c->string; *s && j < 32; s++)
            shown[j++] = (*s >= 0x20 && *s <= 0x7e) ? *s : '?';
        shown[j] = '\0';
        return fail(err, 400, "unknown field \"%s%s\"", shown, strlen(c->string) > 32 ? "..." : "");
    }
    return 0;
}

/* POST /transfer: from, to, amount; nothing else. */
static int check_transfer_fields(const char *body, const cJSON *obj, const struct span *spans,
                                 struct txn_entry *out, struct validate_error *err)
{
    static const char *const names[] = { "from", "to", "amount" };
    struct picked p;
    struct span cards[2] = { { 0, 0 }, { 0, 0 } };
    if (pick_fields(obj, spans, names, 3, &p, err) != 0)
        return -1;
    for (int k = 0; k < 2; k++) {
        if (!p.item[k])
            return fail(err, 400, "%s is required", names[k]);
        if (check_card(body, p.item[k], p.sp[k], names[k], &cards[k], err) != 0)
            return -1;
    }
    if (!p.item[2])
        return fail(err, 400, "amount is required");
    int64_t amount;
    if (check_integer(body, p.item[2], p.sp[2], "amount", 1, TXN_AMOUNT_LIMIT, &amount, err) != 0)
        return -1;
    if (txn_entry_make_transfer(out, body + cards[0].start, cards[0].end - cards[0].start,
                                body + cards[1].start, cards[1].end - cards[1].start, amount) != 0)
        return fail(err, 400, "transfer fields are invalid"); /* rules above are the same */
    return 0;
}

int validate_transfer(const char *body, size_t len, size_t max_body, struct txn_entry *out,
                      struct validate_error *err)
{
    return validate_object(body, len, max_body, check_transfer_fields, out, err);
}

/* POST /accounts: card_number and an optional opening balance. */
static int check_account_fields(const char *body, const cJSON *obj, const struct span *spans,
                                struct txn_entry *out, struct validate_error *err)
{
    static const char *const names[] = { "card_number", "balance" };
    struct picked p;
    struct span card = { 0, 0 };
    if (pick_fields(obj, spans, names, 2, &p, err) != 0)
        return -1;
    if (!p.item[0])
        return fail(err, 400, "card_number is required");
    if (check_card(body, p.item[0], p.sp[0], "card_number", &card, err) != 0)
        return -1;
    int64_t balance = 0;
    if (p.item[1] &&
        check_integer(body, p.item[1], p.sp[1], "balance", 0, TXN_AMOUNT_LIMIT, &balance, err) != 0)
        return -1;
    if (txn_entry_make_open(out, body + card.start, card.end - card.start, balance) != 0)
        return fail(err, 400, "account fields are invalid"); /* rules above are the same */
    return 0;
}

int validate_account(const char *body, size_t len, size_t max_body, struct txn_entry *out,
                     struct validate_error *err)
{
    return validate_object(body, len, max_body, check_account_fields, out, err);
}

/* Checks element k of a batch: an object whose span starts at body[*pos];
 * moves *pos past it. Messages name the element. */
static int check_element(const char *body, size_t len, size_t *pos, const cJSON *item, int k,
                         size_t max_element, struct span *spans, int max_members,
                         struct txn_entry *out, struct validate_error *err)
{
    struct validate_error why;
    if (!cJSON_IsObject(item))
        return fail(err, 400, "element %d: must be a JSON object", k);
    size_t end = 0;
    int members = scan_object(body, *pos, len, spans, max_members, &end);
    if (members == SCAN_NUL_IN_NAME)
        return fail(err, 400, "element %d: field names must not contain \\u0000", k);
    if (members != cJSON_GetArraySize(item))
        return fail(err, 400, "body is not valid JSON");
    /* The same bound as a single POST /transaction body, which also bounds
     * the quadratic duplicate check per element. */
    if (end - *pos > max_element)
        return fail(err, 413, "element %d: larger than %zu bytes", k, max_element);
    if (find_duplicate(item, &why) != 0 || check_fields(body, item, spans, out, &why) != 0)
        return fail(err, why.status, "element %d: %s", k, why.message);
    *pos = end;
    return 0;
}

int validate_transactions(const char *body, size_t len, size_t max_element, struct txn_entry *out,
                          uint32_t *n, struct validate_error *err)
{
    *n = 0;
    cJSON *doc = parse_checked(body, len, VALIDATE_BATCH_MAX_BODY, err);
    if (!doc)
        return -1;
    int rc = -1, count = cJSON_GetArraySize(doc);
    struct span *spans = NULL;
    if (!cJSON_IsArray(doc)) {
        fail(err, 400, "body must be a JSON array of transaction objects");
        goto out;
    }
    if (count == 0) {
        fail(err, 400, "body must hold at least one transaction");
        goto out;
    }
    if (count > VALIDATE_BATCH_MAX) {
        fail(err, 413, "at most %d transactions per request, got %d", VALIDATE_BATCH_MAX, count);
        goto out;
    }
    int max_members = (int)(len / 4 + 1);
    spans = calloc((size_t)max_members, sizeof *spans);
    if (!spans) {
        fail(err, 500, "out of memory");
        goto out;
    }
    /* cJSON accepted the array, so the scanner meets '[', the elements
     * separated by ',' and ']'; anything else is a byte cJSON tolerates and
     * RFC 8259 does not (a control character as whitespace). */
    size_t pos = skip_ws(body, 0, len);
    int k = 0;
    for (const cJSON *item = doc->child; item; item = item->next, k++) {
        char expect = k == 0 ? '[' : ',';
        if (pos >= len || body[pos] != expect) {
            fail(err, 400, "body is not valid JSON");
            goto out;
        }
        pos = skip_ws(body, pos + 1, len);
        if (check_element(body, len, &pos, item, k, max_element, spans, max_members, &out[k],
                          err) != 0)
            goto out;
        pos = skip_ws(body, pos, len);
    }
    if (pos >= len || body[pos] != ']' || skip_ws(body, pos + 1, len) != len) {
        fail(err, 400, "body is not valid JSON");
        goto out;
    }
    *n = (uint32_t)count;
    rc = 0;
out:
    free(spans);
    cJSON_Delete(doc);
    return rc;
}

int validate_content_type(const char *value)
{
    static const char json[] = "application/json";
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (strncasecmp(value, json, sizeof json - 1) != 0)
        return -1;
    value += sizeof json - 1;
    while (*value == ' ' || *value == '\t')
        value++;
    return (*value == '\0' || *value == ';') ? 0 : -1;
}

int validate_txid(const char *text, size_t len, uint64_t *out)
{
    if (len == 0 || len > 19 || text[0] < '1' || text[0] > '9')
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(text[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return -1;
    *out = v;
    return 0;
}

int validate_idempotency_key(const char *value, size_t *len, struct validate_error *err)
{
    *len = 0;
    if (!value)
        return 0;
    size_t n = strlen(value);
    if (txn_key_valid(value, n) != 0)
        return fail(err, 400, "Idempotency-Key must be 1-64 printable ASCII characters");
    *len = n;
    return 0;
}

/* Seconds from 1+ decimal digits (leading zeros allowed), clamped to
 * VALIDATE_WAIT_MAX; -1 for anything else. */
static int wait_seconds(const char *s, size_t len)
{
    if (len == 0)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v <= VALIDATE_WAIT_MAX)
            v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v > VALIDATE_WAIT_MAX ? VALIDATE_WAIT_MAX : (int)v;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Length of the list element starting at s: up to the next ',' or ';' that
 * is not inside a quoted string. */
static size_t element_len(const char *s)
{
    size_t i = 0;
    int quoted = 0;
    for (; s[i]; i++) {
        if (quoted && s[i] == '\\' && s[i + 1])
            i++;
        else if (s[i] == '"')
            quoted = !quoted;
        else if (!quoted && (s[i] == ',' || s[i] == ';'))
            break;
    }
    return i;
}

/* Prefer (RFC 7240): preferences separated by ',' each with parameters
 * after ';'. Both separators are treated alike since "wait" is only ever a
 * preference of its own here; a value may be a token or a quoted string.
 * Only the first "wait" counts (RFC 7240 section 2). */
int validate_prefer_wait(const char *value)
{
    if (!value)
        return -1;
    for (const char *p = value; *p;) {
        size_t n = element_len(p);
        size_t i = 0;
        while (i < n && is_ows(p[i]))
            i++;
        size_t name = i;
        while (i < n && p[i] != '=' && !is_ows(p[i]))
            i++;
        if (i - name == 4 && strncasecmp(p + name, "wait", 4) == 0) {
            while (i < n && is_ows(p[i]))
                i++;
            if (i == n || p[i] != '=')
                return -1;
            i++;
            while (i < n && is_ows(p[i]))
                i++;
            size_t end = n;
            while (end > i && is_ows(p[end - 1]))
                end--;
            if (end - i >= 2 && p[i] == '"' && p[end - 1] == '"') {
                i++;
                end--;
            }
            return wait_seconds(p + i, end - i);
        }
        p += n;
        if (*p)
            p++;
    }
    return -1;
}

int validate_wait_param(const char *text, size_t len, unsigned *out, struct validate_error *err)
{
    int v = wait_seconds(text, len);
    if (v < 0)
        return fail(err, 400, "wait must be a whole number of seconds (0-%d)", VALIDATE_WAIT_MAX);
    *out = (unsigned)v;
    return 0;
}
