/* Table tests for the HTTP input rules (frontend/validate.c): every kind of
 * bad body the API promises to refuse, and the boundaries it must accept. */
#include <string.h>

#include "unit.h"
#include "validate.h"

#define MAX_BODY 4096

struct bad_case {
    const char *body;
    int status;
    const char *message;
};

static const struct bad_case bad_cases[] = {
    { "", 400, "body is not valid JSON" },
    { "   ", 400, "body is not valid JSON" },
    { "{", 400, "body is not valid JSON" },
    { "{\"card_number\": \"1234\", \"amount\": 5", 400, "body is not valid JSON" },
    { "{\"card_number\": \"1234\", \"amount\": 5}x", 400, "body is not valid JSON" },
    { "{\"card_number\": \"1234\", \"amount\": 5} {}", 400, "body is not valid JSON" },
    { "{'card_number': '1234', 'amount': 5}", 400, "body is not valid JSON" },
    { "{\"card_number\": \"1234\", \"amount\": 5,}", 400, "body is not valid JSON" },
    { "{\"card_number\": \"1234\",\x01\"amount\": 5}", 400, "body is not valid JSON" },
    { "\xef\xbb\xbf{\"card_number\": \"1234\", \"amount\": 5}", 400, "body is not valid JSON" },
    { "[]", 400, "body must be a JSON object" },
    { "[{\"card_number\": \"1234\", \"amount\": 5}]", 400, "body must be a JSON object" },
    { "\"text\"", 400, "body must be a JSON object" },
    { "42", 400, "body must be a JSON object" },
    { "null", 400, "body must be a JSON object" },
    { "{}", 400, "card_number is required" },
    { "{\"amount\": 5}", 400, "card_number is required" },
    { "{\"Card_Number\": \"1234\", \"amount\": 5}", 400, "card_number is required" },
    { "{\"card_number\": 1234, \"amount\": 5}", 400,
      "card_number must be a string of 1-32 digits and spaces" },
    { "{\"card_number\": null, \"amount\": 5}", 400,
      "card_number must be a string of 1-32 digits and spaces" },
    { "{\"card_number\": [\"1234\"], \"amount\": 5}", 400,
      "card_number must be a string of 1-32 digits and spaces" },
    { "{\"card_number\": \"\", \"amount\": 5}", 400,
      "card_number must be a string of 1-32 digits and spaces" },
    { "{\"card_number\": \"    \", \"amount\": 5}", 400,
      "card_number must be a string of 1-32 digits and spaces" },
    { "{\"card_number\": \"1234-5678\", \"amount\": 5}", 400,
      "card_number must be a string of 1-32 digits and spaces" },
    { "{\"card_number\": \"123456789012345678901234567890123\", \"amount\": 5}", 400,
      "card_number must be a string of 1-32 digits and spaces" },
    { "{\"card_number\": \"1234\\u0000abc\", \"amount\": 5}", 400,
      "card_number must be a string of 1-32 digits and spaces" },
    { "{\"card_number\": \"12\\t34\", \"amount\": 5}", 400,
      "card_number must be a string of 1-32 digits and spaces" },
    { "{\"card_number\": \"1234\"}", 400, "amount is required" },
    { "{\"card_number\": \"1234\", \"amount\": 1.5}", 400, "amount must be an integer" },
    { "{\"card_number\": \"1234\", \"amount\": 1.0}", 400, "amount must be an integer" },
    { "{\"card_number\": \"1234\", \"amount\": \"100\"}", 400, "amount must be an integer" },
    { "{\"card_number\": \"1234\", \"amount\": true}", 400, "amount must be an integer" },
    { "{\"card_number\": \"1234\", \"amount\": false}", 400, "amount must be an integer" },
    { "{\"card_number\": \"1234\", \"amount\": null}", 400, "amount must be an integer" },
    { "{\"card_number\": \"1234\", \"amount\": [5]}", 400, "amount must be an integer" },
    { "{\"card_number\": \"1234\", \"amount\": {\"v\": 5}}", 400, "amount must be an integer" },
    { "{\"card_number\": \"1234\", \"amount\": 1e3}", 400, "amount must be an integer" },
    { "{\"card_number\": \"1234\", \"amount\": 1E3}", 400, "amount must be an integer" },
    { "{\"card_number\": \"1234\", \"amount\": 1e400}", 400, "amount must be an integer" },
    { "{\"card_number\": \"1234\", \"amount\": -0}", 400, "amount must be an integer" },
    { "{\"card_number\": \"1234\", \"amount\": 007}", 400, "amount must be an integer" },
    { "{\"card_number\": \"1234\", \"amount\": +5}", 400, "body is not valid JSON" },
    { "{\"card_number\": \"1234\", \"amount\": 0}", 400, "amount must be non-zero" },
    { "{\"card_number\": \"1234\", \"amount\": 1000000000000001}", 400,
      "amount must be between -1000000000000000 and 1000000000000000" },
    { "{\"card_number\": \"1234\", \"amount\": -1000000000000001}", 400,
      "amount must be between -1000000000000000 and 1000000000000000" },
    { "{\"card_number\": \"1234\", \"amount\": 99999999999999999999999999999}", 400,
      "amount must be between -1000000000000000 and 1000000000000000" },
    { "{\"card_number\": \"1234\", \"amount\": 5, \"amount\": 6}", 400,
      "field amount appears more than once" },
    { "{\"card_number\": \"1234\", \"card_number\": \"5678\", \"amount\": 5}", 400,
      "field card_number appears more than once" },
    { "{\"card_number\": \"1234\", \"amount\": 5, \"note\": 1, \"note\": 2}", 400,
      "field note appears more than once" },
    { "{\"card_number\": \"1234\", \"amount\": 5, \"amou\\u006et\": 6}", 400,
      "field amount appears more than once" },
};

TEST(validate_rejects_each_bad_body)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *c = &bad_cases[i];
        struct txn_entry e;
        struct validate_error err = { 0, "" };
        int rc = validate_transaction(c->body, strlen(c->body), MAX_BODY, &e, &err);
        if (rc != -1 || err.status != c->status || strcmp(err.message, c->message) != 0)
            fprintf(stderr, "  case %zu: %s\n  -> rc %d, %d \"%s\"\n", i, c->body, rc,
                    err.status, err.message);
        CHECK_EQ_INT(rc, -1);
        CHECK_EQ_INT(err.status, c->status);
        CHECK_STR(err.message, c->message);
    }
}

struct good_case {
    const char *body;
    const char *card;
    long long amount;
};

static const struct good_case good_cases[] = {
    { "{\"card_number\": \"6219 8619 0042 8640\", \"amount\": 150}", "6219 8619 0042 8640",
      150 },
    { "{\"amount\": -150, \"card_number\": \"1\"}", "1", -150 },
    { "{\"card_number\":\"1234\",\"amount\":1000000000000000}", "1234", 1000000000000000LL },
    { "{\"card_number\":\"1234\",\"amount\":-1000000000000000}", "1234", -1000000000000000LL },
    { "{\"card_number\":\"1234\",\"amount\":1}", "1234", 1 },
    { "{\"card_number\":\"1234\",\"amount\":-1}", "1234", -1 },
    { "{\"card_number\": \"12345678901234567890123456789012\", \"amount\": 5}",
      "12345678901234567890123456789012", 5 },
    { "{\"card_number\": \" 1 \", \"amount\": 5}", " 1 ", 5 },
    { " \r\n\t{ \"card_number\" : \"42\" , \"amount\" : 7 } \n", "42", 7 },
    { "{\"note\": {\"amount\": 1.5, \"x\": [1, \"}\", {\"y\": null}]}, \"card_number\": \"42\","
      " \"tags\": [\"a\\\"]\"], \"amount\": 9, \"ok\": true}",
      "42", 9 },
};

TEST(validate_accepts_good_bodies_and_boundaries)
{
    for (size_t i = 0; i < sizeof good_cases / sizeof good_cases[0]; i++) {
        const struct good_case *c = &good_cases[i];
        struct txn_entry e;
        struct validate_error err = { 0, "" };
        int rc = validate_transaction(c->body, strlen(c->body), MAX_BODY, &e, &err);
        if (rc != 0)
            fprintf(stderr, "  case %zu: %s\n  -> %d \"%s\"\n", i, c->body, err.status,
                    err.message);
        CHECK_EQ_INT(rc, 0);
        CHECK_STR(e.card, c->card);
        CHECK_EQ_INT(e.card_len, strlen(c->card));
        CHECK_EQ_INT(e.amount, c->amount);
        CHECK_EQ_INT(e.kind, TXN_KIND_AMOUNT);
        CHECK_EQ_INT(e.txid, 0);
    }
}

TEST(validate_body_size_limit_is_413)
{
    static char body[MAX_BODY + 2];
    const char *head = "{\"card_number\": \"1234\", \"amount\": 5, \"pad\": \"";
    memset(body, 'x', sizeof body - 1);
    memcpy(body, head, strlen(head));
    body[MAX_BODY - 2] = '"';
    body[MAX_BODY - 1] = '}';
    struct txn_entry e;
    struct validate_error err = { 0, "" };
    /* Exactly max_body bytes is still accepted... */
    CHECK_EQ_INT(validate_transaction(body, MAX_BODY, MAX_BODY, &e, &err), 0);
    /* ...one more byte is not, whatever it contains. */
    CHECK_EQ_INT(validate_transaction(body, MAX_BODY + 1, MAX_BODY, &e, &err), -1);
    CHECK_EQ_INT(err.status, 413);
    CHECK_STR(err.message, "request body larger than 4096 bytes");
}

TEST(validate_body_with_nul_byte_is_invalid_json)
{
    static const char body[] = "{\"card_number\": \"1234\", \"amount\": 5}\0garbage";
    struct txn_entry e;
    struct validate_error err = { 0, "" };
    CHECK_EQ_INT(validate_transaction(body, sizeof body - 1, MAX_BODY, &e, &err), -1);
    CHECK_EQ_INT(err.status, 400);
    CHECK_STR(err.message, "body is not valid JSON");
}

TEST(validate_body_need_not_be_nul_terminated)
{
    char body[64];
    const char *text = "{\"card_number\":\"1234\",\"amount\":12}";
    size_t n = strlen(text);
    memcpy(body, text, n);
    memset(body + n, '7', sizeof body - n); /* a missing length check reads these */
    struct txn_entry e;
    struct validate_error err = { 0, "" };
    CHECK_EQ_INT(validate_transaction(body, n, MAX_BODY, &e, &err), 0);
    CHECK_EQ_INT(e.amount, 12);
}

/* Regression: cJSON copies any byte into a string, so a body that was not
 * UTF-8 (RFC 8259 requires it) was accepted when the bad bytes sat outside
 * the two fields read. */
TEST(validate_refuses_invalid_utf8_anywhere_in_the_body)
{
    static const char *const bodies[] = {
        "{\"card_number\": \"1234\", \"amount\": 5, \"note\": \"\xff\"}",   /* stray byte */
        "{\"card_number\": \"1234\", \"amount\": 5, \"n\xc3\x28\": 1}",       /* bad continuation */
        "{\"card_number\": \"1234\", \"amount\": 5, \"note\": \"\xc0\xaf\"}", /* overlong '/' */
        "{\"card_number\": \"1234\", \"amount\": 5, \"note\": \"\xed\xa0\x80\"}", /* surrogate */
        "{\"card_number\": \"1234\", \"amount\": 5, \"note\": \"\xf4\x90\x80\x80\"}", /* > U+10FFFF */
        "{\"card_number\": \"1234\", \"amount\": 5, \"note\": \"\xe2\x82\"}",  /* truncated */
        "{\"card_number\": \"12\xff" "34\", \"amount\": 5}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        struct txn_entry e;
        struct validate_error err = { 0, "" };
        CHECK_EQ_INT(validate_transaction(bodies[i], strlen(bodies[i]), MAX_BODY, &e, &err), -1);
        CHECK_EQ_INT(err.status, 400);
        CHECK_STR(err.message, "body is not valid UTF-8");
    }
    /* Well-formed multi-byte text outside the fields is fine. */
    static const char ok[] = "{\"card_number\": \"1234\", \"amount\": 5, "
                             "\"note\": \"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}";
    struct txn_entry e;
    struct validate_error err = { 0, "" };
    CHECK_EQ_INT(validate_transaction(ok, strlen(ok), MAX_BODY, &e, &err), 0);
    CHECK_EQ_INT(e.amount, 5);
}

/* Regression: cJSON ends a member name at an escaped NUL, so a member named
 * "amount\u0000x" was read as amount, unlike any other JSON reader. */
TEST(validate_refuses_nul_escape_in_a_field_name)
{
    static const char *const bodies[] = {
        "{\"card_number\": \"1234\", \"amount\\u0000x\": 5}",
        "{\"card_number\\u0000\": \"1234\", \"amount\": 5}",
        "{\"card_number\": \"1234\", \"amount\": 5, \"\\u0000\": 1}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        struct txn_entry e;
        struct validate_error err = { 0, "" };
        CHECK_EQ_INT(validate_transaction(bodies[i], strlen(bodies[i]), MAX_BODY, &e, &err), -1);
        CHECK_EQ_INT(err.status, 400);
        CHECK_STR(err.message, "field names must not contain \\u0000");
    }
    /* An escaped backslash followed by "u0000" is not a NUL. */
    static const char ok[] = "{\"card_number\": \"1234\", \"amount\": 5, \"a\\\\u0000\": 1}";
    struct txn_entry e;
    struct validate_error err = { 0, "" };
    CHECK_EQ_INT(validate_transaction(ok, strlen(ok), MAX_BODY, &e, &err), 0);
}

TEST(validate_content_type_accepts_json_with_parameters)
{
    CHECK_EQ_INT(validate_content_type("application/json"), 0);
    CHECK_EQ_INT(validate_content_type("Application/JSON"), 0);
    CHECK_EQ_INT(validate_content_type("application/json; charset=utf-8"), 0);
    CHECK_EQ_INT(validate_content_type("application/json;charset=UTF-8"), 0);
    CHECK_EQ_INT(validate_content_type(" application/json ; charset=utf-8"), 0);
    CHECK_EQ_INT(validate_content_type(NULL), -1);
    CHECK_EQ_INT(validate_content_type(""), -1);
    CHECK_EQ_INT(validate_content_type("text/plain"), -1);
    CHECK_EQ_INT(validate_content_type("application/jsonx"), -1);
    CHECK_EQ_INT(validate_content_type("application/json-patch+json"), -1);
    CHECK_EQ_INT(validate_content_type("application/x-www-form-urlencoded"), -1);
}

TEST(validate_txid_is_positive_decimal)
{
    uint64_t id = 0;
    CHECK_EQ_INT(validate_txid("1", 1, &id), 0);
    CHECK_EQ_INT(id, 1);
    CHECK_EQ_INT(validate_txid("9223372036854775807", 19, &id), 0);
    CHECK(id == 9223372036854775807ULL);
    CHECK_EQ_INT(validate_txid("9223372036854775808", 19, &id), -1);
    CHECK_EQ_INT(validate_txid("99999999999999999999", 20, &id), -1);
    CHECK_EQ_INT(validate_txid("", 0, &id), -1);
    CHECK_EQ_INT(validate_txid("0", 1, &id), -1);
    CHECK_EQ_INT(validate_txid("007", 3, &id), -1);
    CHECK_EQ_INT(validate_txid("-5", 2, &id), -1);
    CHECK_EQ_INT(validate_txid("+5", 2, &id), -1);
    CHECK_EQ_INT(validate_txid("12a", 3, &id), -1);
    CHECK_EQ_INT(validate_txid("12/3", 4, &id), -1);
    CHECK_EQ_INT(validate_txid("1 ", 2, &id), -1);
}

/* ---- POST /transactions: arrays of transaction objects ------------------ */

static struct txn_entry batch_out[VALIDATE_BATCH_MAX];

struct bad_batch {
    const char *body;
    int status;
    const char *message;
};

static const struct bad_batch bad_batches[] = {
    { "", 400, "body is not valid JSON" },
    { "[", 400, "body is not valid JSON" },
    { "[{\"card_number\": \"1234\", \"amount\": 5},]", 400, "body is not valid JSON" },
    { "[{\"card_number\": \"1234\", \"amount\": 5}] x", 400, "body is not valid JSON" },
    { "[{\"card_number\": \"1234\",\x01\"amount\": 5}]", 400, "body is not valid JSON" },
    { "[{\"card_number\": \"1234\", \"amount\": 5}\x01]", 400, "body is not valid JSON" },
    { "{\"card_number\": \"1234\", \"amount\": 5}", 400,
      "body must be a JSON array of transaction objects" },
    { "\"[]\"", 400, "body must be a JSON array of transaction objects" },
    { "[]", 400, "body must hold at least one transaction" },
    { " [ ] ", 400, "body must hold at least one transaction" },
    { "[1]", 400, "element 0: must be a JSON object" },
    { "[{\"card_number\": \"1234\", \"amount\": 5}, null]", 400, "element 1: must be a JSON object" },
    { "[{\"card_number\": \"1234\", \"amount\": 5}, [{\"card_number\": \"1234\", \"amount\": 5}]]",
      400, "element 1: must be a JSON object" },
    { "[{\"card_number\": \"1234\", \"amount\": 5}, {\"card_number\": \"1234\", \"amount\": 1.5},"
      " {\"card_number\": \"1234\", \"amount\": \"x\"}]",
      400, "element 1: amount must be an integer" },
    { "[{\"card_number\": \"1234\", \"amount\": 5}, {\"card_number\": \"1234\", \"amount\": 6},"
      " {\"card_number\": \"1234\", \"amount\": 7}, {\"amount\": 8}]",
      400, "element 3: card_number is required" },
    { "[{\"card_number\": \"12-34\", \"amount\": 5}]", 400,
      "element 0: card_number must be a string of 1-32 digits and spaces" },
    { "[{\"card_number\": \"1234\", \"amount\": 0}]", 400, "element 0: amount must be non-zero" },
    { "[{\"card_number\": \"1234\", \"amount\": 5, \"amount\": 6}]", 400,
      "element 0: field amount appears more than once" },
    { "[{\"card_number\": \"1234\", \"amount\\u0000\": 5}]", 400,
      "element 0: field names must not contain \\u0000" },
    { "[{\"card_number\": \"1234\", \"amount\": 5, \"note\": \"\xff\"}]", 400,
      "body is not valid UTF-8" },
};

TEST(validate_batch_rejects_each_bad_body_naming_the_element)
{
    for (size_t i = 0; i < sizeof bad_batches / sizeof bad_batches[0]; i++) {
        const struct bad_batch *c = &bad_batches[i];
        struct validate_error err = { 0, "" };
        uint32_t n = 99;
        int rc = validate_transactions(c->body, strlen(c->body), MAX_BODY, batch_out, &n, &err);
        if (rc != -1 || err.status != c->status || strcmp(err.message, c->message) != 0)
            fprintf(stderr, "  case %zu: %s\n  -> rc %d, %d \"%s\"\n", i, c->body, rc,
                    err.status, err.message);
        CHECK_EQ_INT(rc, -1);
        CHECK_EQ_INT(n, 0);
        CHECK_EQ_INT(err.status, c->status);
        CHECK_STR(err.message, c->message);
    }
}

TEST(validate_batch_accepts_arrays_in_order)
{
    static const char body[] =
        " \r\n[ {\"card_number\": \"6219 8619 0042 8640\", \"amount\": -150} ,"
        "{\"amount\": 7, \"card_number\": \"1\", \"note\": {\"amount\": 1.5, \"x\": [\"]\", {}]}},"
        "{\"card_number\":\"42\",\"amount\":1000000000000000}\n] ";
    struct validate_error err = { 0, "" };
    uint32_t n = 0;
    CHECK_EQ_INT(validate_transactions(body, strlen(body), MAX_BODY, batch_out, &n, &err), 0);
    CHECK_EQ_INT(n, 3);
    CHECK_STR(batch_out[0].card, "6219 8619 0042 8640");
    CHECK_EQ_INT(batch_out[0].amount, -150);
    CHECK_STR(batch_out[1].card, "1");
    CHECK_EQ_INT(batch_out[1].amount, 7);
    CHECK_STR(batch_out[2].card, "42");
    CHECK(batch_out[2].amount == 1000000000000000LL);
    for (uint32_t i = 0; i < n; i++) {
        CHECK_EQ_INT(batch_out[i].kind, TXN_KIND_AMOUNT);
        CHECK_EQ_INT(batch_out[i].txid, 0);
    }
}

/* Builds "[{...},{...}...]" with count elements into a malloc'd string. */
static char *batch_body(unsigned count, size_t *len)
{
    static const char item[] = "{\"card_number\": \"6219 8619 0042 8640\", \"amount\": 12}";
    char *s = malloc(2 + count * sizeof item);
    CHECK(s != NULL);
    size_t used = 0;
    s[used++] = '[';
    for (unsigned i = 0; i < count; i++) {
        if (i > 0)
            s[used++] = ',';
        memcpy(s + used, item, sizeof item - 1);
        used += sizeof item - 1;
    }
    s[used++] = ']';
    *len = used;
    return s;
}

TEST(validate_batch_limits_count_body_and_element_size)
{
    struct validate_error err = { 0, "" };
    uint32_t n = 0;
    size_t len;
    char *body = batch_body(VALIDATE_BATCH_MAX, &len);
    CHECK_EQ_INT(validate_transactions(body, len, MAX_BODY, batch_out, &n, &err), 0);
    CHECK_EQ_INT(n, VALIDATE_BATCH_MAX);
    CHECK_EQ_INT(batch_out[VALIDATE_BATCH_MAX - 1].amount, 12);
    free(body);

    body = batch_body(VALIDATE_BATCH_MAX + 1, &len);
    CHECK_EQ_INT(validate_transactions(body, len, MAX_BODY, batch_out, &n, &err), -1);
    CHECK_EQ_INT(err.status, 413);
    CHECK_STR(err.message, "at most 1000 transactions per request, got 1001");
    free(body);

    /* A body over the limit is refused before it is parsed. */
    size_t big = VALIDATE_BATCH_MAX_BODY + 1;
    body = malloc(big);
    CHECK(body != NULL);
    memset(body, ' ', big);
    body[0] = '[';
    body[big - 1] = ']';
    CHECK_EQ_INT(validate_transactions(body, big, MAX_BODY, batch_out, &n, &err), -1);
    CHECK_EQ_INT(err.status, 413);
    CHECK_STR(err.message, "request body larger than 262144 bytes");
    free(body);

    /* One element may not be larger than a single POST /transaction body. */
    char element[MAX_BODY + 256];
    int k = snprintf(element, sizeof element, "[{\"card_number\": \"1\", \"amount\": 1}, "
                                              "{\"card_number\": \"1\", \"amount\": 1, \"pad\": \"");
    memset(element + k, 'x', MAX_BODY);
    memcpy(element + k + MAX_BODY, "\"}]", 4);
    CHECK_EQ_INT(validate_transactions(element, strlen(element), MAX_BODY, batch_out, &n, &err), -1);
    CHECK_EQ_INT(err.status, 413);
    CHECK_STR(err.message, "element 1: larger than 4096 bytes");
}
