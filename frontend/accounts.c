/* Account handlers; see accounts.h. The card in a path is URL-decoded like
 * a query value ('+' and %20 are spaces) and checked like a body field. */
#include "frontend/accounts.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "frontend/answer.h"
#include "frontend/query.h"
#include "frontend/respond.h"
#include "frontend/submit.h"
#include "frontend/validate.h"
#include "ledger/lookup.h"

void accounts_post(struct routes_ctx *c, struct http_req *req, const char *tail,
                   const char *query)
{
    (void)tail;
    submit_post(c, req, query, validate_account, ANSWER_ACCOUNT);
}

static void get_account(struct routes_ctx *c, struct http_req *req, const char *card,
                        size_t len)
{
    struct lookup_account a;
    enum lookup_result r = lookup_account(c->db, card, len, &a);
    if (r == LOOKUP_FOUND)
        respond_json(req, c->metrics, 200, answer_account_json(&a));
    else if (r == LOOKUP_NOT_FOUND)
        respond_error(req, c->metrics, 404, "no account with card_number %s", card);
    else
        answer_ledger_busy(c, req);
}

/* ?limit= and ?before= of a statement page. Returns 0, or -1 after
 * answering 400. */
static int page_params(struct routes_ctx *c, struct http_req *req, const char *query,
                       uint32_t *limit, uint64_t *before)
{
    char text[32];
    size_t len = 0;
    uint64_t v = 0;
    int rc = query_param(query, "limit", text, sizeof text, &len);
    *limit = ACCOUNTS_DEFAULT_LIMIT;
    if (rc != -ENOENT) {
        if (rc != 0 || validate_txid(text, len, &v) != 0 || v > LOOKUP_STATEMENT_MAX) {
            respond_error(req, c->metrics, 400, "limit must be an integer between 1 and %d",
                          LOOKUP_STATEMENT_MAX);
            return -1;
        }
        *limit = (uint32_t)v;
    }
    rc = query_param(query, "before", text, sizeof text, &len);
    *before = 0;
    if (rc != -ENOENT) {
        if (rc != 0 || validate_txid(text, len, before) != 0) {
            respond_error(req, c->metrics, 400, "before must be a positive integer transaction id");
            return -1;
        }
    }
    return 0;
}

static cJSON *stmt_row_json(const struct lookup_stmt_row *row)
{
    char id[24];
    snprintf(id, sizeof id, "%" PRIu64, row->txid);
    cJSON *item = cJSON_CreateObject();
    int bad = !item || !cJSON_AddStringToObject(item, "id", id) ||
              !cJSON_AddStringToObject(item, "kind", row->kind) ||
              respond_add_int64(item, "amount", row->amount) != 0 ||
              !cJSON_AddStringToObject(item, "status", row->status) ||
              (row->reason[0] && !cJSON_AddStringToObject(item, "reason", row->reason)) ||
              (row->counterparty[0] &&
               !cJSON_AddStringToObject(item, "counterparty", row->counterparty));
    if (!bad && row->has_balance_after && strcmp(row->status, "applied") == 0)
        bad = respond_add_int64(item, "balance_after", row->balance_after) != 0;
    if (!bad && row->has_queued_at)
        bad = respond_add_time(item, "queued_at", row->queued_at_us) != 0;
    if (!bad && row->has_applied_at)
        bad = respond_add_time(item, "applied_at", row->applied_at_us) != 0;
    if (bad) {
        cJSON_Delete(item);
        return NULL;
    }
    return item;
}

/* {"card_number", "transactions": [...], "next": <link to the next page> or
 * null}. */
static cJSON *statement_json(const char *card, const struct lookup_stmt_row *rows, uint32_t n,
                             uint32_t limit, int more)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *list = cJSON_CreateArray();
    int bad = !doc || !list || !cJSON_AddStringToObject(doc, "card_number", card) ||
              !cJSON_AddItemToObject(doc, "transactions", list);
    if (!doc || bad)
        cJSON_Delete(list); /* not owned by doc yet */
    for (uint32_t i = 0; !bad && i < n; i++) {
        cJSON *item = stmt_row_json(&rows[i]);
        bad = !item || !cJSON_AddItemToArray(list, item);
    }
    if (!bad && more && n > 0) {
        char path[16 + 3 * TXN_CARD_MAX], next[sizeof path + 64];
        answer_account_path(path, sizeof path, card);
        snprintf(next, sizeof next, "%s/transactions?limit=%" PRIu32 "&before=%" PRIu64, path,
                 limit, rows[n - 1].txid);
        bad = !cJSON_AddStringToObject(doc, "next", next);
    } else if (!bad) {
        bad = !cJSON_AddNullToObject(doc, "next");
    }
    if (bad) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

/* One page plus one row tells whether another page exists; a full page of
 * the largest size links on without knowing (the next page may be empty). */
static struct lookup_stmt_row stmt_rows[LOOKUP_STATEMENT_MAX];

static void get_statement(struct routes_ctx *c, struct http_req *req, const char *card,
                          size_t len, const char *query)
{
    uint32_t limit, n = 0;
    uint64_t before;
    if (page_params(c, req, query, &limit, &before) != 0)
        return;
    int64_t balance;
    enum lookup_result r = lookup_balance(c->db, card, len, &balance);
    if (r == LOOKUP_NOT_FOUND) {
        respond_error(req, c->metrics, 404, "no account with card_number %s", card);
        return;
    }
    uint32_t ask = limit < LOOKUP_STATEMENT_MAX ? limit + 1 : limit;
    if (r == LOOKUP_FOUND)
        r = lookup_statement(c->db, card, len, before, ask, stmt_rows, &n);
    if (r == LOOKUP_NOT_FOUND) {
        /* before is a cursor: a transaction of this account's statement
         * (the next link uses its last row). */
        respond_error(req, c->metrics, 400,
                      "before: transaction %" PRIu64 " is not in the statement of %s", before, card);
        return;
    }
    if (r != LOOKUP_FOUND) {
        answer_ledger_busy(c, req);
        return;
    }
    int more = n > limit || (n == limit && ask == limit);
    if (n > limit)
        n = limit;
    respond_json(req, c->metrics, 200, statement_json(card, stmt_rows, n, limit, more));
}

void accounts_get(struct routes_ctx *c, struct http_req *req, const char *tail,
                  const char *query)
{
    const char *slash = strchr(tail, '/');
    size_t enc_len = slash ? (size_t)(slash - tail) : strlen(tail);
    if (slash && strcmp(slash + 1, "transactions") != 0) {
        respond_error(req, c->metrics, 404, "no such path: /accounts/%.200s", tail);
        return;
    }
    char card[TXN_CARD_MAX + 1];
    long len = query_decode(tail, enc_len, card, sizeof card);
    if (len < 0 || txn_card_valid(card, (size_t)len) != 0) {
        respond_error(req, c->metrics, 400,
                      "card_number must be a string of 1-32 digits and spaces");
        return;
    }
    if (slash)
        get_statement(c, req, card, (size_t)len, query);
    else
        get_account(c, req, card, (size_t)len);
}
