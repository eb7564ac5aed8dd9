/* Validation of POST /transaction bodies and of the other request inputs.
 *
 * cJSON decides whether the body is JSON and decodes the member names, but it
 * turns every number into a double and cuts strings at an escaped NUL, so it
 * cannot tell 100 from 1e2, 100.0 or -0. The money fields are therefore
 * checked on their raw text: a small scanner walks the top-level members of
 * the (already parsed, hence well-formed) object in document order, which is
 * also cJSON's child order, and records where each member's value starts and
 * ends. */
#include "validate.h"

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

/* Records the value span of each top-level member of the object in s.
 * Returns the member count, or -1 if s is not a single object. */
static int scan_members(const char *s, size_t len, struct span *spans, int max)
{
    int n = 0;
    size_t i = skip_ws(s, 0, len);
    if (i >= len || s[i] != '{')
        return -1;
    i = skip_ws(s, i + 1, len);
    if (i < len && s[i] == '}')
        return skip_ws(s, i + 1, len) == len ? 0 : -1;
    for (;;) {
        if (i >= len || s[i] != '"' || n == max)
            return -1;
        i = skip_ws(s, skip_string(s, i, len), len);
        if (i >= len || s[i] != ':')
            return -1;
        i = skip_ws(s, i + 1, len);
        size_t end = skip_value(s, i, len);
        if (end > len)
            return -1;
        spans[n++] = (struct span){ i, end };
        i = skip_ws(s, end, len);
        if (i < len && s[i] == ',') {
            i = skip_ws(s, i + 1, len);
            continue;
        }
        if (i < len && s[i] == '}')
            return skip_ws(s, i + 1, len) == len ? n : -1;
        return -1;
    }
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

static int check_amount(const char *body, const cJSON *item, struct span sp, int64_t *out,
                        struct validate_error *err)
{
    if (!cJSON_IsNumber(item))
        return fail(err, 400, "amount must be an integer");
    int rc = parse_amount(body + sp.start, sp.end - sp.start, out);
    if (rc == -1)
        return fail(err, 400, "amount must be an integer");
    if (rc == -2)
        return fail(err, 400, "amount must be between -%lld and %lld", TXN_AMOUNT_LIMIT,
                    TXN_AMOUNT_LIMIT);
    if (*out == 0)
        return fail(err, 400, "amount must be non-zero");
    return 0;
}

/* The card is taken from the raw string so that escapes (\u0000 would end
 * cJSON's copy early) can never smuggle other characters past the check;
 * a card number needs no escapes. */
static int check_card(const char *body, const cJSON *item, struct span sp, struct span *card,
                      struct validate_error *err)
{
    static const char msg[] = "card_number must be a string of 1-32 digits and spaces";
    if (!cJSON_IsString(item) || sp.end - sp.start < 2)
        return fail(err, 400, "%s", msg);
    card->start = sp.start + 1;
    card->end = sp.end - 1;
    if (txn_card_valid(body + card->start, card->end - card->start) != 0)
        return fail(err, 400, "%s", msg);
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
    if (check_card(body, card_item, card_sp, &card, err) != 0)
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

int validate_transaction(const char *body, size_t len, size_t max_body, struct txn_entry *out,
                         struct validate_error *err)
{
    if (len > max_body)
        return fail(err, 413, "request body larger than %zu bytes", max_body);
    cJSON *doc = parse_body(body, len);
    if (!doc)
        return fail(err, 400, "body is not valid JSON");
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
    if (scan_members(body, len, spans, max_members) != cJSON_GetArraySize(doc)) {
        fail(err, 400, "body is not valid JSON");
        goto out;
    }
    if (find_duplicate(doc, err) != 0)
        goto out;
    rc = check_fields(body, doc, spans, out, err);
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
