/* Table tests for the HTTP input rules (frontend/validate.c): every kind of
 * bad body the API promises to refuse, and the boundaries it must accept. */
#include <errno.h>
#include <string.h>

#include "frontend/answer.h"
#include "frontend/query.h"
#include "frontend/validate.h"
#include "tests/unit/unit.h"

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

/* ---- POST /transfer ------------------------------------------------------ */

static const struct bad_case bad_transfers[] = {
    { "", 400, "body is not valid JSON" },
    { "[]", 400, "body must be a JSON object" },
    { "{}", 400, "from is required" },
    { "{\"to\": \"2\", \"amount\": 5}", 400, "from is required" },
    { "{\"from\": \"1\", \"amount\": 5}", 400, "to is required" },
    { "{\"from\": \"1\", \"to\": \"2\"}", 400, "amount is required" },
    { "{\"from\": 1, \"to\": \"2\", \"amount\": 5}", 400,
      "from must be a string of 1-32 digits and spaces" },
    { "{\"from\": \"1-2\", \"to\": \"2\", \"amount\": 5}", 400,
      "from must be a string of 1-32 digits and spaces" },
    { "{\"from\": \"1\", \"to\": \"\", \"amount\": 5}", 400,
      "to must be a string of 1-32 digits and spaces" },
    { "{\"from\": \"1\", \"to\": \"2\\u00003\", \"amount\": 5}", 400,
      "to must be a string of 1-32 digits and spaces" },
    { "{\"from\": \"1\", \"to\": \"123456789012345678901234567890123\", \"amount\": 5}", 400,
      "to must be a string of 1-32 digits and spaces" },
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\": 0}", 400,
      "amount must be between 1 and 1000000000000000" },
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\": -5}", 400,
      "amount must be between 1 and 1000000000000000" },
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\": 1000000000000001}", 400,
      "amount must be between 1 and 1000000000000000" },
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\": 1.5}", 400, "amount must be an integer" },
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\": 1e2}", 400, "amount must be an integer" },
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\": \"5\"}", 400, "amount must be an integer" },
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\": -0}", 400, "amount must be an integer" },
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\": 5, \"note\": \"x\"}", 400,
      "unknown field \"note\"" },
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\": 5, \"card_number\": \"1\"}", 400,
      "unknown field \"card_number\"" },
    { "{\"From\": \"1\", \"to\": \"2\", \"amount\": 5}", 400, "unknown field \"From\"" },
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\": 5, \"n\\u00e9\\n\": 1}", 400,
      "unknown field \"n???\"" }, /* two bytes of UTF-8, one newline */
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\": 5, "
      "\"abcdefghijabcdefghijabcdefghijabcdefghij\": 1}", 400,
      "unknown field \"abcdefghijabcdefghijabcdefghijab...\"" },
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\": 5, \"from\": \"3\"}", 400,
      "field from appears more than once" },
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\\u0000\": 5}", 400,
      "field names must not contain \\u0000" },
    { "{\"from\": \"1\", \"to\": \"2\", \"amount\": 5, \"x\": \"\xff\"}", 400,
      "body is not valid UTF-8" },
};

static void check_bad_table(int (*fn)(const char *, size_t, size_t, struct txn_entry *,
                                      struct validate_error *),
                            const struct bad_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct bad_case *c = &cases[i];
        struct txn_entry e;
        struct validate_error err = { 0, "" };
        int rc = fn(c->body, strlen(c->body), MAX_BODY, &e, &err);
        if (rc != -1 || err.status != c->status || strcmp(err.message, c->message) != 0)
            fprintf(stderr, "  case %zu: %s\n  -> rc %d, %d \"%s\"\n", i, c->body, rc,
                    err.status, err.message);
        CHECK_EQ_INT(rc, -1);
        CHECK_EQ_INT(err.status, c->status);
        CHECK_STR(err.message, c->message);
    }
}

TEST(validate_transfer_rejects_each_bad_body_naming_the_field)
{
    check_bad_table(validate_transfer, bad_transfers, sizeof bad_transfers / sizeof bad_transfers[0]);
}

struct good_transfer {
    const char *body;
    const char *from, *to;
    long long amount;
};

static const struct good_transfer good_transfers[] = {
    { "{\"from\": \"6219 8619 0042 8640\", \"to\": \"1\", \"amount\": 150}",
      "6219 8619 0042 8640", "1", 150 },
    { "{\"amount\": 1, \"to\": \"22\", \"from\": \"11\"}", "11", "22", 1 },
    { "{\"from\":\"7\",\"to\":\"7\",\"amount\":1000000000000000}", "7", "7", 1000000000000000LL },
    { " {\"from\" : \"12345678901234567890123456789012\", \"to\": \" 2 \", \"amount\": 9} ",
      "12345678901234567890123456789012", " 2 ", 9 },
};

TEST(validate_transfer_accepts_good_bodies_and_boundaries)
{
    for (size_t i = 0; i < sizeof good_transfers / sizeof good_transfers[0]; i++) {
        const struct good_transfer *c = &good_transfers[i];
        struct txn_entry e;
        struct validate_error err = { 0, "" };
        int rc = validate_transfer(c->body, strlen(c->body), MAX_BODY, &e, &err);
        if (rc != 0)
            fprintf(stderr, "  case %zu: %s\n  -> %d \"%s\"\n", i, c->body, err.status,
                    err.message);
        CHECK_EQ_INT(rc, 0);
        CHECK_EQ_INT(e.kind, TXN_KIND_TRANSFER);
        CHECK_STR(e.card, c->from);
        CHECK_EQ_INT(e.card_len, strlen(c->from));
        CHECK_STR(e.card2, c->to);
        CHECK_EQ_INT(e.card2_len, strlen(c->to));
        CHECK_EQ_INT(e.amount, c->amount);
        CHECK_EQ_INT(e.key_len, 0);
        CHECK_EQ_INT(e.waiter, 0);
        CHECK_EQ_INT(e.txid, 0);
    }
}

TEST(validate_transfer_body_size_limit_is_413)
{
    static char body[MAX_BODY + 1];
    memset(body, ' ', sizeof body);
    memcpy(body, "{\"from\":\"1\",\"to\":\"2\",\"amount\":5}", 32);
    struct txn_entry e;
    struct validate_error err = { 0, "" };
    CHECK_EQ_INT(validate_transfer(body, MAX_BODY, MAX_BODY, &e, &err), 0);
    CHECK_EQ_INT(validate_transfer(body, MAX_BODY + 1, MAX_BODY, &e, &err), -1);
    CHECK_EQ_INT(err.status, 413);
}

/* ---- POST /accounts ------------------------------------------------------ */

static const struct bad_case bad_accounts[] = {
    { "{", 400, "body is not valid JSON" },
    { "\"1234\"", 400, "body must be a JSON object" },
    { "{}", 400, "card_number is required" },
    { "{\"balance\": 5}", 400, "card_number is required" },
    { "{\"card_number\": 1234}", 400, "card_number must be a string of 1-32 digits and spaces" },
    { "{\"card_number\": \"12a4\"}", 400,
      "card_number must be a string of 1-32 digits and spaces" },
    { "{\"card_number\": \"   \"}", 400,
      "card_number must be a string of 1-32 digits and spaces" },
    { "{\"card_number\": \"1\", \"balance\": -1}", 400,
      "balance must be between 0 and 1000000000000000" },
    { "{\"card_number\": \"1\", \"balance\": 1000000000000001}", 400,
      "balance must be between 0 and 1000000000000000" },
    { "{\"card_number\": \"1\", \"balance\": 99999999999999999999999}", 400,
      "balance must be between 0 and 1000000000000000" },
    { "{\"card_number\": \"1\", \"balance\": 0.5}", 400, "balance must be an integer" },
    { "{\"card_number\": \"1\", \"balance\": null}", 400, "balance must be an integer" },
    { "{\"card_number\": \"1\", \"balance\": \"5\"}", 400, "balance must be an integer" },
    { "{\"card_number\": \"1\", \"balance\": -0}", 400, "balance must be an integer" },
    { "{\"card_number\": \"1\", \"balance\": 05}", 400, "balance must be an integer" },
    { "{\"card_number\": \"1\", \"amount\": 5}", 400, "unknown field \"amount\"" },
    { "{\"card_number\": \"1\", \"balance\": 5, \"balance\": 6}", 400,
      "field balance appears more than once" },
};

TEST(validate_account_rejects_each_bad_body_naming_the_field)
{
    check_bad_table(validate_account, bad_accounts, sizeof bad_accounts / sizeof bad_accounts[0]);
}

TEST(validate_account_balance_defaults_to_zero)
{
    static const struct {
        const char *body, *card;
        long long balance;
    } good[] = {
        { "{\"card_number\": \"4000 1234\"}", "4000 1234", 0 },
        { "{\"card_number\": \"1\", \"balance\": 0}", "1", 0 },
        { "{\"balance\": 1000000000000000, \"card_number\": \"2\"}", "2", 1000000000000000LL },
        { "{\"card_number\": \"3\", \"balance\": 77}", "3", 77 },
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct txn_entry e;
        struct validate_error err = { 0, "" };
        int rc = validate_account(good[i].body, strlen(good[i].body), MAX_BODY, &e, &err);
        if (rc != 0)
            fprintf(stderr, "  case %zu -> %d \"%s\"\n", i, err.status, err.message);
        CHECK_EQ_INT(rc, 0);
        CHECK_EQ_INT(e.kind, TXN_KIND_OPEN);
        CHECK_STR(e.card, good[i].card);
        CHECK_EQ_INT(e.amount, good[i].balance);
        CHECK_EQ_INT(e.card2_len, 0);
    }
}

/* POST /transaction keeps accepting members it does not know (the
 * prototype did); only the new endpoints refuse them. */
TEST(validate_transaction_still_ignores_unknown_fields)
{
    static const char body[] = "{\"card_number\": \"1\", \"amount\": 5, \"from\": \"2\"}";
    struct txn_entry e;
    struct validate_error err = { 0, "" };
    CHECK_EQ_INT(validate_transaction(body, strlen(body), MAX_BODY, &e, &err), 0);
    CHECK_EQ_INT(e.kind, TXN_KIND_AMOUNT);
    CHECK_EQ_INT(e.card2_len, 0);
}

/* ---- Idempotency-Key and wait -------------------------------------------- */

TEST(validate_idempotency_key_is_1_to_64_printable_ascii)
{
    static const struct {
        const char *value;
        int rc;
        size_t len;
    } cases[] = {
        { NULL, 0, 0 },
        { "a", 0, 1 },
        { "order-42 / retry #1 ~!", 0, 22 },
        { " ", 0, 1 },
        { "1234567890123456789012345678901234567890123456789012345678901234", 0, 64 },
        { "12345678901234567890123456789012345678901234567890123456789012345", -1, 0 },
        { "", -1, 0 },
        { "tab\there", -1, 0 },
        { "del\x7f", -1, 0 },
        { "caf\xc3\xa9", -1, 0 },
        { "line\nbreak", -1, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct validate_error err = { 0, "" };
        size_t len = 99;
        int rc = validate_idempotency_key(cases[i].value, &len, &err);
        if (rc != cases[i].rc)
            fprintf(stderr, "  case %zu: rc %d\n", i, rc);
        CHECK_EQ_INT(rc, cases[i].rc);
        if (rc == 0) {
            CHECK_EQ_INT(len, cases[i].len);
        } else {
            CHECK_EQ_INT(err.status, 400);
            CHECK_STR(err.message, "Idempotency-Key must be 1-64 printable ASCII characters");
        }
    }
}

TEST(validate_prefer_wait_finds_the_wait_preference)
{
    static const struct {
        const char *value;
        int wait;
    } cases[] = {
        { NULL, -1 },
        { "", -1 },
        { "wait=5", 5 },
        { "WAIT=7", 7 },
        { "wait=0", 0 },
        { "wait=30", 30 },
        { "wait=31", 30 },
        { "wait=3600", 30 },
        { "wait=99999999999999999999999", 30 },
        { "wait=007", 7 },
        { " wait = 4 ", 4 },
        { "wait=\"6\"", 6 },
        { "respond-async, wait=10", 10 },
        { "respond-async; wait=11", 11 },
        { "handling=lenient;wait=12,respond-async", 12 },
        { "return=minimal, wait=3, wait=9", 3 },
        { "foo=\"a, wait=8\", wait=2", 2 },
        { "foo=\"a\\\" wait=8\"; wait=1", 1 },
        { "waiting=5", -1 },
        { "xwait=5", -1 },
        { "respond-async", -1 },
        { "wait", -1 },
        { "wait=", -1 },
        { "wait=abc", -1 },
        { "wait=-3", -1 },
        { "wait=1.5", -1 },
        { "wait=5s", -1 },
        { "wait=\"\"", -1 },
        { "wait=abc, wait=5", -1 }, /* only the first instance counts */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = validate_prefer_wait(cases[i].value);
        if (got != cases[i].wait)
            fprintf(stderr, "  case %zu: \"%s\" -> %d\n", i,
                    cases[i].value ? cases[i].value : "(null)", got);
        CHECK_EQ_INT(got, cases[i].wait);
    }
}

TEST(validate_wait_param_is_whole_seconds_clamped_to_30)
{
    static const struct {
        const char *text;
        int wait; /* -1: refused */
    } cases[] = {
        { "0", 0 }, { "1", 1 }, { "30", 30 }, { "31", 30 }, { "0005", 5 },
        { "123456789012345678901234567890", 30 },
        { "", -1 }, { "-1", -1 }, { "+1", -1 }, { "1.5", -1 }, { "5s", -1 }, { "abc", -1 },
        { " 5", -1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct validate_error err = { 0, "" };
        unsigned v = 99;
        int rc = validate_wait_param(cases[i].text, strlen(cases[i].text), &v, &err);
        if (rc != (cases[i].wait < 0 ? -1 : 0) || (rc == 0 && (int)v != cases[i].wait))
            fprintf(stderr, "  case %zu: \"%s\" -> rc %d, %u\n", i, cases[i].text, rc, v);
        if (cases[i].wait < 0) {
            CHECK_EQ_INT(rc, -1);
            CHECK_EQ_INT(err.status, 400);
            CHECK_STR(err.message, "wait must be a whole number of seconds (0-30)");
        } else {
            CHECK_EQ_INT(rc, 0);
            CHECK_EQ_INT(v, cases[i].wait);
        }
    }
    /* The length is honoured: "5" followed by bytes that are not part of it. */
    unsigned v = 0;
    struct validate_error err = { 0, "" };
    CHECK_EQ_INT(validate_wait_param("5\0" "7", 1, &v, &err), 0);
    CHECK_EQ_INT(v, 5);
    CHECK_EQ_INT(validate_wait_param("5\0" "7", 3, &v, &err), -1);
}

/* ---- the card in /accounts/<card> ------------------------------------------ */

TEST(validate_account_path_card_round_trips)
{
    char path[16 + 3 * TXN_CARD_MAX], card[TXN_CARD_MAX + 1];
    answer_account_path(path, sizeof path, "6219 8619 0042 8640");
    CHECK_STR(path, "/accounts/6219%208619%200042%208640");
    long n = query_decode(path + 10, strlen(path + 10), card, sizeof card);
    CHECK_EQ_INT(n, 19);
    CHECK_STR(card, "6219 8619 0042 8640");
    /* Longest card, all spaces but one digit: the buffer is large enough. */
    answer_account_path(path, sizeof path, "                               1");
    CHECK_EQ_INT(strlen(path), 10 + 31 * 3 + 1);
    CHECK_EQ_INT(query_decode("12+34", 5, card, sizeof card), 5);
    CHECK_STR(card, "12 34");
    CHECK_EQ_INT(query_decode("12%2", 4, card, sizeof card), -EINVAL);
    CHECK_EQ_INT(query_decode("123456789012345678901234567890123", 33, card, sizeof card),
                 -E2BIG);
}
