/* Taking in a ledger request (POST /transaction, /transfer, /accounts) once
 * its body is valid: the Idempotency-Key check and replay, the wait
 * preference, queueing, and then either the 202 or holding the request for
 * its outcome. One path for the three endpoints, so they cannot drift. */
#ifndef TXP_SUBMIT_H
#define TXP_SUBMIT_H

#include <stddef.h>
#include <stdint.h>

#include "common/txn.h"
#include "frontend/answer.h"
#include "frontend/routes.h"
#include "frontend/validate.h"

struct http_req;

/* How long POST /accounts waits when the client did not say. */
#define SUBMIT_ACCOUNT_WAIT_S 10

/* Checks the Content-Type and returns the body as one contiguous run (it
 * may arrive in several chunks), or answers the error itself and returns
 * NULL. */
const char *submit_json_body(struct routes_ctx *c, struct http_req *req, size_t *len);

/* Answers req for a failed ring_enqueue (rc < 0) of n entries: 503 when
 * the queue is full (a normal overload answer) or this node's ids are used
 * up, else 500. */
void submit_refuse(struct routes_ctx *c, struct http_req *req, int rc, uint32_t n);

/* Queues n entries, all or none. On failure answers 503 (no room for all
 * of them: a normal overload answer) or 500 itself and returns -1. */
int submit_enqueue(struct routes_ctx *c, struct http_req *req, struct txn_entry *e,
                   uint32_t n);

/* Everything after validation for one entry: answers req in every case
 * (now, at the end of this loop turn once queued (pending.h), or later
 * through the waiter table). kind says which final answer
 * the endpoint gives; ANSWER_ACCOUNT also refuses an existing card (409)
 * and waits SUBMIT_ACCOUNT_WAIT_S unless told otherwise. */
void submit_entry(struct routes_ctx *c, struct http_req *req, const char *query,
                  struct txn_entry *e, enum answer_kind kind);

/* The body of a single-entry POST: one of validate_transaction,
 * validate_transfer, validate_account. */
typedef int (*submit_validator)(const char *body, size_t len, size_t max_body,
                                struct txn_entry *out, struct validate_error *err);

/* A whole single-entry POST: the JSON body, validation (400/413/415 with the
 * validator's message), then submit_entry. */
void submit_post(struct routes_ctx *c, struct http_req *req, const char *query,
                 submit_validator validate, enum answer_kind kind);

#endif
