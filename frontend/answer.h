/* The answers to ledger requests (POST /transaction, /transfer, /accounts)
 * in one place, because three paths give them: the handler itself (202
 * queued, or a replay of an Idempotency-Key), a worker's outcome for a held
 * request (Prefer: wait) and the wait elapsing. Also the JSON shapes of a
 * transaction and an account that the GET endpoints share. */
#ifndef TXP_ANSWER_H
#define TXP_ANSWER_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "common/completion.h"
#include "common/txn.h"
#include "frontend/routes.h"
#include "ledger/lookup.h"

struct http_req;

/* Which final answer a request expects. */
enum answer_kind {
    ANSWER_TXN = 0,     /* GET /transaction/<id> body; 200/409/404/422 by status */
    ANSWER_ACCOUNT = 1, /* POST /accounts: 201 + GET /accounts/<card> body, or 409 */
};

/* How to answer one request, decided when it arrives. */
struct answer_how {
    uint8_t kind;      /* enum answer_kind */
    uint8_t pref_wait; /* > 0: the client asked to wait this long; echoed in
                        * "Preference-Applied: wait=N" */
    uint8_t replayed;  /* add "Idempotent-Replayed: true" */
};

/* Body of GET /transaction/<id> for a ledger row (or a view of one built by
 * the functions below); NULL when out of memory. */
cJSON *answer_txn_json(uint64_t txid, const struct lookup_txn *t);
/* A queued entry seen as a row with status "queued". */
void answer_entry_view(const struct txn_entry *e, struct lookup_txn *t);
/* The row a worker's outcome c for entry e stands for, without reading the
 * ledger (c must not be COMPLETION_LOOKUP). */
void answer_completion_view(const struct txn_entry *e, const struct completion *c,
                            struct lookup_txn *t);

/* Body of GET /accounts/<card>; NULL when out of memory. */
cJSON *answer_account_json(const struct lookup_account *a);
/* "/accounts/<card>" with spaces as %20 into buf (room for 16 + 3 *
 * TXN_CARD_MAX bytes is always enough). */
void answer_account_path(char *buf, size_t cap, const char *card);

/* "Transaction queued for processing" or the like, by entry kind. */
const char *answer_queued_message(const struct txn_entry *e);

/* 202 {"status":<status>,"id":"<txid>","message":<message>} with
 * Location: /transaction/<txid> (and the headers how asks for). */
void answer_accepted(struct routes_ctx *c, struct http_req *req,
                     const struct answer_how *how, uint64_t txid, const char *status,
                     const char *message);
/* The final answer for a row whose status is final (not queued, not
 * duplicate). */
void answer_final(struct routes_ctx *c, struct http_req *req, const struct answer_how *how,
                  uint64_t txid, const struct lookup_txn *t);
/* The final answer for txid read from the ledger; a duplicate is answered
 * with its original, marked replayed. When the ledger cannot tell (busy,
 * not there) the answer is 202 for txid, as after an elapsed wait. */
void answer_from_ledger(struct routes_ctx *c, struct http_req *req, struct answer_how how,
                        uint64_t txid, const char *message);
/* The final answer for entry e from a worker's outcome. */
void answer_completion(struct routes_ctx *c, struct http_req *req, struct answer_how how,
                       const struct txn_entry *e, const struct completion *comp);

/* 503 with Retry-After when the read-only ledger connection fails. */
void answer_ledger_busy(struct routes_ctx *c, struct http_req *req);

#endif
