/* From a validated entry to an answer; see submit.h. */
#include "frontend/submit.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "common/check.h"
#include "common/log.h"
#include "common/ring.h"
#include "frontend/conn.h"
#include "frontend/pending.h"
#include "frontend/query.h"
#include "frontend/respond.h"
#include "frontend/validate.h"

const char *submit_json_body(struct routes_ctx *c, struct http_req *req, size_t *len)
{
    const char *ctype = http_req_header(req, "Content-Type");
    if (validate_content_type(ctype) != 0) {
        respond_error(req, c->metrics, 415, "Content-Type must be application/json");
        return NULL;
    }
    return http_req_body(req, len);
}

void submit_refuse(struct routes_ctx *c, struct http_req *req, int rc, uint32_t n)
{
    ASSERT(rc < 0);
    if (rc == -EAGAIN) {
        metrics_add(c->metrics, METRIC_tx_queue_full, n);
        respond_header(req, "Retry-After", "1");
        respond_error(req, c->metrics, 503, "queue full, retry later");
        return;
    }
    if (rc == -ENOSPC) {
        /* A node's segment numbers from a span of 2^40 reserved ids. */
        log_error("this node's reserved transaction ids are used up: restart it (a fresh segment "
                  "reserves a new span once the queue has drained)");
        respond_error(req, c->metrics, 503, "this node cannot number more transactions; "
                      "send them to another node");
        return;
    }
    log_error("ring_enqueue: %s", strerror(-rc));
    respond_error(req, c->metrics, 500, "could not queue the transaction");
}

int submit_enqueue(struct routes_ctx *c, struct http_req *req, struct txn_entry *e,
                   uint32_t n)
{
    int rc = ring_enqueue(c->seg->ring, e, n);
    if (rc == 0) {
        metrics_add(c->metrics, METRIC_tx_accepted, n);
        metrics_add(c->metrics, METRIC_tx_enqueues, 1);
        return 0;
    }
    submit_refuse(c, req, rc, n);
    return -1;
}

/* Reads the Idempotency-Key (into e) and the wait (?wait=N first, else the
 * first Prefer header with a wait preference) in one pass over the headers.
 * *wait_s is -1 when no wait was asked for. Returns 0, or -1 after
 * answering 400. Two Idempotency-Key headers are refused: a proxy might
 * honour the other one. */
static int read_asked(struct routes_ctx *c, struct http_req *req, const char *query,
                      struct txn_entry *e, int *wait_s)
{
    const char *key = NULL;
    int keys = 0, prefer = -1;
    for (uint32_t i = 0, n = http_req_header_count(req); i < n; i++) {
        const char *name = http_req_header_name(req, i);
        if (strcasecmp(name, "Idempotency-Key") == 0) {
            key = http_req_header_value(req, i);
            keys++;
        } else if (prefer < 0 && strcasecmp(name, "Prefer") == 0) {
            prefer = validate_prefer_wait(http_req_header_value(req, i));
        }
    }
    struct validate_error err;
    size_t key_len = 0;
    if (keys > 1) {
        respond_error(req, c->metrics, 400, "Idempotency-Key must be given once");
        return -1;
    }
    if (validate_idempotency_key(key, &key_len, &err) != 0) {
        respond_error(req, c->metrics, err.status, "%s", err.message);
        return -1;
    }
    if (key_len > 0 && txn_entry_set_key(e, key, key_len) != 0) {
        respond_error(req, c->metrics, 400, "Idempotency-Key is invalid"); /* checked above */
        return -1;
    }
    char text[64];
    size_t len = 0;
    int rc = query_param(query, "wait", text, sizeof text, &len);
    *wait_s = prefer;
    if (rc == -ENOENT)
        return 0;
    unsigned v = 0;
    if (rc != 0)
        len = 0; /* a malformed escape or a huge value: refused like garbage */
    if (validate_wait_param(text, len, &v, &err) != 0) {
        respond_error(req, c->metrics, err.status, "%s", err.message);
        return -1;
    }
    *wait_s = (int)v;
    return 0;
}

/* Idempotency-Key seen before: the original's outcome (final, if the client
 * waits for one) or 422 for another request under the same key. Returns 1
 * when req was answered, 0 when the key is new. */
static int replay(struct routes_ctx *c, struct http_req *req, const struct txn_entry *e,
                  struct answer_how how, int want_final)
{
    uint64_t txid = 0, fingerprint = 0;
    enum lookup_result r = lookup_key(c->db, e->key, e->key_len, &txid, &fingerprint);
    if (r == LOOKUP_NOT_FOUND)
        return 0;
    if (r != LOOKUP_FOUND) {
        answer_ledger_busy(c, req);
        return 1;
    }
    if (fingerprint != txn_fingerprint(e)) {
        metrics_add(c->metrics, METRIC_idempotency_conflicts, 1);
        respond_error(req, c->metrics, 422, "Idempotency-Key reused with a different request");
        return 1;
    }
    metrics_add(c->metrics, METRIC_idempotent_replays, 1);
    how.replayed = 1;
    static const char message[] = "Request already recorded under this Idempotency-Key";
    if (want_final) {
        answer_from_ledger(c, req, how, txid, message);
        return 1;
    }
    struct lookup_txn t;
    r = lookup_txn(c->db, txid, &t);
    if (r == LOOKUP_ERROR) {
        answer_ledger_busy(c, req);
        return 1;
    }
    answer_accepted(c, req, &how, txid, r == LOOKUP_FOUND ? t.status : "queued", message);
    return 1;
}

/* POST /accounts: an existing card is refused before anything is queued
 * (the worker still refuses the race, account_exists). Returns 1 if req was
 * answered. */
static int account_exists(struct routes_ctx *c, struct http_req *req,
                          const struct txn_entry *e)
{
    int64_t balance;
    enum lookup_result r = lookup_balance(c->db, e->card, e->card_len, &balance);
    if (r == LOOKUP_NOT_FOUND)
        return 0;
    if (r == LOOKUP_FOUND)
        respond_error(req, c->metrics, 409, "account %s already exists", e->card);
    else
        answer_ledger_busy(c, req);
    return 1;
}

void submit_entry(struct routes_ctx *c, struct http_req *req, const char *query,
                  struct txn_entry *e, enum answer_kind kind)
{
    int asked;
    if (read_asked(c, req, query, e, &asked) != 0)
        return;
    unsigned wait_s = asked >= 0 ? (unsigned)asked
                                 : kind == ANSWER_ACCOUNT ? SUBMIT_ACCOUNT_WAIT_S : 0;
    struct answer_how how = { .kind = (uint8_t)kind,
                              .pref_wait = (uint8_t)(asked > 0 ? asked : 0) };
    if (e->key_len > 0 && replay(c, req, e, how, wait_s > 0 || kind == ANSWER_ACCOUNT))
        return;
    if (kind == ANSWER_ACCOUNT && account_exists(c, req, e))
        return;
    /* Queued with the rest of this loop turn's entries, then answered
     * (pending.h); held for the outcome only if the client asked to wait. */
    pending_add(c->pending, req, e, &how, c->draining ? 0 : wait_s);
}

void submit_post(struct routes_ctx *c, struct http_req *req, const char *query,
                 submit_validator validate, enum answer_kind kind)
{
    size_t len;
    const char *body = submit_json_body(c, req, &len);
    if (!body)
        return;
    struct txn_entry e;
    struct validate_error err;
    if (validate(body, len, c->cfg->max_body, &e, &err) != 0) {
        respond_error(req, c->metrics, err.status, "%s", err.message);
        return;
    }
    submit_entry(c, req, query, &e, kind);
}
