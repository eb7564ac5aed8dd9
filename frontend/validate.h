/* Input rules of the HTTP API, kept apart from libevent so that every bad
 * input can be table-tested: request bodies become a txn_entry or an HTTP
 * status with a message that names the field and the reason. */
#ifndef TXP_VALIDATE_H
#define TXP_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "common/txn.h"

#define VALIDATE_MSG_MAX 160

/* Why a request was refused: the HTTP status (400, 413, 415) and the text
 * for the JSON error body. */
struct validate_error {
    int status;
    char message[VALIDATE_MSG_MAX];
};

/* Turns a POST /transaction body into an entry ready for ring_enqueue.
 * The body need not be NUL-terminated. Bodies over max_body bytes get 413;
 * anything else wrong gets 400. Returns 0, or -1 with *err filled. */
int validate_transaction(const char *body, size_t len, size_t max_body, struct txn_entry *out,
                         struct validate_error *err);

/* POST /transactions: a JSON array of 1..VALIDATE_BATCH_MAX transaction
 * objects, each obeying the rules of validate_transaction and at most
 * max_element bytes, in a body of at most VALIDATE_BATCH_MAX_BODY bytes.
 * Fills out[0 .. *n) (out has room for VALIDATE_BATCH_MAX). The first
 * invalid element refuses the whole request, its message prefixed with
 * "element <index>: " (0-based). Returns 0, or -1 with *err filled (400 or
 * 413). */
#define VALIDATE_BATCH_MAX 1000
#define VALIDATE_BATCH_MAX_BODY (256 * 1024)
int validate_transactions(const char *body, size_t len, size_t max_element, struct txn_entry *out,
                          uint32_t *n, struct validate_error *err);

/* POST /transfer: {"from":<card>,"to":<card>,"amount":<1..10^15>} and no
 * other member; from == to is left to the worker (rejected, same_account).
 * Fills a TXN_KIND_TRANSFER entry. Same statuses and shared checks as
 * validate_transaction; messages name "from", "to" or "amount". */
int validate_transfer(const char *body, size_t len, size_t max_body, struct txn_entry *out,
                      struct validate_error *err);

/* POST /accounts: {"card_number":<card>,"balance":<0..10^15, default 0>}
 * and no other member. Fills a TXN_KIND_OPEN entry. */
int validate_account(const char *body, size_t len, size_t max_body, struct txn_entry *out,
                     struct validate_error *err);

/* The Idempotency-Key header value (NULL when absent): 0 with its length in
 * *len (0 when absent), or -1 with a 400 if it is not 1..TXN_KEY_MAX
 * printable ASCII characters. */
int validate_idempotency_key(const char *value, size_t *len, struct validate_error *err);

/* Longest wait a request may ask for, in seconds; longer asks are clamped. */
#define VALIDATE_WAIT_MAX 30

/* The seconds asked for by the first "wait" preference of a Prefer header
 * value (RFC 7240: "respond-async, wait=10"), clamped to VALIDATE_WAIT_MAX;
 * -1 when there is none or it is malformed (a preference a server does not
 * understand is ignored, not refused). value may be NULL. */
int validate_prefer_wait(const char *value);

/* The decoded value of a ?wait= query parameter: decimal seconds, clamped to
 * VALIDATE_WAIT_MAX. 0, or -1 with a 400 naming "wait". */
int validate_wait_param(const char *text, size_t len, unsigned *out, struct validate_error *err);

/* 0 if a Content-Type header value means JSON ("application/json", any case,
 * optionally followed by parameters such as "; charset=utf-8"), else -1. */
int validate_content_type(const char *value);

/* Parses the <txid> of /transaction/<txid>: a positive decimal integer
 * without sign, leading zeros or trailing characters that fits in 63 bits.
 * Returns 0 or -1. */
int validate_txid(const char *text, size_t len, uint64_t *out);

#endif
