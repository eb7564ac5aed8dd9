/* Answers to ledger requests and the shared JSON shapes; see answer.h. */
#include "frontend/answer.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "frontend/respond.h"

static int add_id(cJSON *doc, const char *name, uint64_t id)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRIu64, id);
    return cJSON_AddStringToObject(doc, name, text) ? 0 : -1;
}

/* The members every transaction has, then the optional ones; the optional
 * ones only when they say something (a transfer's "to", a rejection's
 * reason, balances of applied rows). */
cJSON *answer_txn_json(uint64_t txid, const struct lookup_txn *t)
{
    int applied = strcmp(t->status, "applied") == 0;
    cJSON *doc = cJSON_CreateObject();
    int bad = !doc || add_id(doc, "id", txid) != 0 ||
              (t->kind[0] && !cJSON_AddStringToObject(doc, "kind", t->kind)) ||
              !cJSON_AddStringToObject(doc, "card_number", t->card) ||
              (t->counterparty[0] && !cJSON_AddStringToObject(doc, "to", t->counterparty)) ||
              respond_add_int64(doc, "amount", t->amount) != 0 ||
              !cJSON_AddStringToObject(doc, "status", t->status);
    if (!bad && t->reason[0])
        bad = !cJSON_AddStringToObject(doc, "reason", t->reason);
    if (!bad && t->original_txid)
        bad = add_id(doc, "original_id", t->original_txid) != 0;
    if (!bad && t->has_balance_after && applied)
        bad = respond_add_int64(doc, "balance_after", t->balance_after) != 0;
    if (!bad && t->has_counterparty_balance_after && applied)
        bad = respond_add_int64(doc, "to_balance_after", t->counterparty_balance_after) != 0;
    if (!bad && t->has_queued_at)
        bad = respond_add_time(doc, "queued_at", t->queued_at_us) != 0;
    if (!bad && t->has_applied_at)
        bad = respond_add_time(doc, "applied_at", t->applied_at_us) != 0;
    if (!bad && t->key[0])
        bad = !cJSON_AddStringToObject(doc, "idempotency_key", t->key);
    if (bad) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

void answer_entry_view(const struct txn_entry *e, struct lookup_txn *t)
{
    memset(t, 0, sizeof *t);
    t->amount = e->amount;
    t->has_queued_at = 1;
    t->queued_at_us = e->queued_at_us;
    snprintf(t->card, sizeof t->card, "%.*s", (int)e->card_len, e->card);
    if (e->kind == TXN_KIND_TRANSFER)
        snprintf(t->counterparty, sizeof t->counterparty, "%.*s", (int)e->card2_len, e->card2);
    snprintf(t->key, sizeof t->key, "%.*s", (int)e->key_len, e->key);
    snprintf(t->kind, sizeof t->kind, "%s", txn_kind_name(e));
    snprintf(t->status, sizeof t->status, "%s", txn_status_name(TXN_STATUS_QUEUED));
}

void answer_completion_view(const struct txn_entry *e, const struct completion *c,
                            struct lookup_txn *t)
{
    answer_entry_view(e, t);
    snprintf(t->status, sizeof t->status, "%s", txn_status_name(c->status));
    snprintf(t->reason, sizeof t->reason, "%s", txn_reason_name(c->reason));
    t->original_txid = c->original_txid;
    if (c->status == TXN_STATUS_APPLIED) {
        t->has_balance_after = 1;
        t->balance_after = c->balance_after;
        t->has_counterparty_balance_after = e->kind == TXN_KIND_TRANSFER;
        t->counterparty_balance_after = c->counterparty_balance;
    }
    t->has_applied_at = c->applied_at_us > 0;
    t->applied_at_us = c->applied_at_us;
}

cJSON *answer_account_json(const struct lookup_account *a)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *counts = cJSON_CreateObject();
    int bad = !doc || !counts || !cJSON_AddStringToObject(doc, "card_number", a->card) ||
              respond_add_int64(doc, "balance", a->balance) != 0;
    if (!bad)
        bad = a->has_created_at ? respond_add_time(doc, "created_at", a->created_at_us) != 0
                                : !cJSON_AddNullToObject(doc, "created_at");
    bad = bad || respond_add_int64(counts, "deposits", a->deposits) != 0 ||
          respond_add_int64(counts, "withdrawals", a->withdrawals) != 0 ||
          respond_add_int64(counts, "transfers_in", a->transfers_in) != 0 ||
          respond_add_int64(counts, "transfers_out", a->transfers_out) != 0 ||
          respond_add_int64(counts, "rejected", a->rejected) != 0 ||
          respond_add_int64(counts, "total", a->total) != 0;
    if (bad || !cJSON_AddItemToObject(doc, "counts", counts)) {
        cJSON_Delete(counts);
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

void answer_account_path(char *buf, size_t cap, const char *card)
{
    size_t n = (size_t)snprintf(buf, cap, "/accounts/");
    /* A valid card is digits and spaces: only the spaces need escaping. */
    for (; *card && n + 4 <= cap; card++)
        n += (size_t)snprintf(buf + n, cap - n, *card == ' ' ? "%%20" : "%c", *card);
}

const char *answer_queued_message(const struct txn_entry *e)
{
    switch (e->kind) {
    case TXN_KIND_TRANSFER: return "Transfer queued for processing";
    case TXN_KIND_OPEN: return "Account opening queued for processing";
    default: return "Transaction queued for processing";
    }
}

static void add_how_headers(struct http_req *req, const struct answer_how *how)
{
    if (how->pref_wait > 0) {
        char applied[16];
        snprintf(applied, sizeof applied, "wait=%u", (unsigned)how->pref_wait);
        respond_header(req, "Preference-Applied", applied);
    }
    if (how->replayed)
        respond_header(req, "Idempotent-Replayed", "true");
}

/* 1 if text can go between JSON quotes as it is. */
static int plain_text(const char *text)
{
    for (; *text; text++)
        if (*text < 0x20 || *text > 0x7e || *text == '"' || *text == '\\')
            return 0;
    return 1;
}

void answer_accepted(struct routes_ctx *c, struct http_req *req,
                     const struct answer_how *how, uint64_t txid, const char *status,
                     const char *message)
{
    char location[48];
    snprintf(location, sizeof location, "/transaction/%" PRIu64, txid);
    add_how_headers(req, how);
    respond_header(req, "Location", location);
    /* Printed directly: this is the hot path of POST /transaction, and
     * nothing in it needs escaping. The status of a replay comes from the
     * ledger, though, so anything else takes the general path. */
    char doc[192];
    int n = -1;
    if (plain_text(status) && plain_text(message))
        n = snprintf(doc, sizeof doc,
                     "{\"status\":\"%s\",\"id\":\"%" PRIu64 "\",\"message\":\"%s\"}",
                     status, txid, message);
    if (n > 0 && (size_t)n < sizeof doc) {
        respond_body(req, c->metrics, 202, "application/json", doc, (size_t)n);
        return;
    }
    cJSON *json = cJSON_CreateObject();
    if (json && (!cJSON_AddStringToObject(json, "status", status) ||
                 add_id(json, "id", txid) != 0 ||
                 !cJSON_AddStringToObject(json, "message", message))) {
        cJSON_Delete(json);
        json = NULL;
    }
    respond_json(req, c->metrics, 202, json);
}

/* HTTP status of a final outcome (Prefer: wait). */
static int status_code(const char *status)
{
    switch (txn_status_parse(status)) {
    case TXN_STATUS_APPLIED: return 200;
    case TXN_STATUS_INSUFFICIENT_FUNDS: return 409;
    case TXN_STATUS_UNKNOWN_ACCOUNT: return 404;
    case TXN_STATUS_REJECTED: return 422;
    default: return 202; /* queued, duplicate: not final (callers avoid it) */
    }
}

/* POST /accounts applied: 201 and the account as it is now; should the
 * read fail, the account as the opening left it. */
static void answer_account_created(struct routes_ctx *c, struct http_req *req,
                                   const struct lookup_txn *t)
{
    struct lookup_account a;
    if (lookup_account(c->db, t->card, strlen(t->card), &a) != LOOKUP_FOUND) {
        memset(&a, 0, sizeof a);
        snprintf(a.card, sizeof a.card, "%s", t->card);
        a.balance = t->balance_after;
        a.has_created_at = t->has_applied_at;
        a.created_at_us = t->applied_at_us;
        a.total = 1;
    }
    char location[16 + 3 * TXN_CARD_MAX];
    answer_account_path(location, sizeof location, t->card);
    respond_header(req, "Location", location);
    respond_json(req, c->metrics, 201, answer_account_json(&a));
}

void answer_final(struct routes_ctx *c, struct http_req *req, const struct answer_how *how,
                  uint64_t txid, const struct lookup_txn *t)
{
    add_how_headers(req, how);
    if (how->kind == ANSWER_ACCOUNT) {
        if (strcmp(t->status, "applied") == 0) {
            answer_account_created(c, req, t);
            return;
        }
        if (strcmp(t->reason, txn_reason_name(TXN_REASON_ACCOUNT_EXISTS)) == 0) {
            respond_error(req, c->metrics, 409, "account %s already exists", t->card);
            return;
        }
    }
    respond_json(req, c->metrics, status_code(t->status), answer_txn_json(txid, t));
}

void answer_from_ledger(struct routes_ctx *c, struct http_req *req, struct answer_how how,
                        uint64_t txid, const char *message)
{
    struct lookup_txn t;
    enum lookup_result r = lookup_txn(c->db, txid, &t);
    /* One level only: the first request under a key is never a duplicate. */
    if (r == LOOKUP_FOUND && strcmp(t.status, "duplicate") == 0 && t.original_txid) {
        metrics_add(c->metrics, METRIC_idempotent_replays, 1);
        how.replayed = 1;
        txid = t.original_txid;
        r = lookup_txn(c->db, txid, &t);
    }
    int code = r == LOOKUP_FOUND ? status_code(t.status) : 202;
    if (code == 202)
        answer_accepted(c, req, &how, txid, txn_status_name(TXN_STATUS_QUEUED), message);
    else
        answer_final(c, req, &how, txid, &t);
}

void answer_completion(struct routes_ctx *c, struct http_req *req, struct answer_how how,
                       const struct txn_entry *e, const struct completion *comp)
{
    const char *message = answer_queued_message(e);
    if (comp->flags & COMPLETION_LOOKUP) {
        answer_from_ledger(c, req, how, e->txid, message);
        return;
    }
    if (comp->status == TXN_STATUS_DUPLICATE) {
        metrics_add(c->metrics, METRIC_idempotent_replays, 1);
        how.replayed = 1;
        answer_from_ledger(c, req, how, comp->original_txid, message);
        return;
    }
    struct lookup_txn t;
    answer_completion_view(e, comp, &t);
    if (status_code(t.status) == 202) /* a worker never sends these; be safe */
        answer_from_ledger(c, req, how, e->txid, message);
    else
        answer_final(c, req, &how, e->txid, &t);
}

void answer_ledger_busy(struct routes_ctx *c, struct http_req *req)
{
    respond_header(req, "Retry-After", "1");
    respond_error(req, c->metrics, 503, "ledger busy, retry later");
}
