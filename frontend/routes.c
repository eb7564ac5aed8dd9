/* Routing and the API handlers (the account ones are in accounts.c, the
 * path from a valid ledger request to its answer in submit.c). Handlers run
 * on the frontend's only thread and never block for long: enqueue is one
 * short critical section in the shared ring, lookups are single indexed
 * reads on a read-only SQLite connection, and a request that waits for its
 * outcome is parked in the waiter table (waiters.c), not blocked on. */
#include "frontend/routes.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/node.h"
#include "common/prom.h"
#include "common/ring.h"
#include "common/stats.h"
#include "frontend/accounts.h"
#include "frontend/answer.h"
#include "frontend/assets.h"
#include "frontend/conn.h"
#include "frontend/query.h"
#include "frontend/respond.h"
#include "frontend/submit.h"
#include "frontend/validate.h"

#define GET_HEAD (VERB_GET | VERB_HEAD)

typedef void (*route_fn)(struct routes_ctx *c, struct http_req *req, const char *tail,
                         const char *query);

struct route {
    const char *path;  /* exact path, or a prefix when it ends with '/' */
    unsigned methods;  /* VERB_* bits */
    const char *allow; /* the same methods, for the Allow header of a 405 */
    route_fn fn;
};

static void handle_post_transaction(struct routes_ctx *c, struct http_req *req,
                                    const char *tail, const char *query);
static void handle_post_transactions(struct routes_ctx *c, struct http_req *req,
                                     const char *tail, const char *query);
static void handle_post_transfer(struct routes_ctx *c, struct http_req *req,
                                 const char *tail, const char *query);
static void handle_get_transaction(struct routes_ctx *c, struct http_req *req,
                                   const char *tail, const char *query);
static void handle_balance(struct routes_ctx *c, struct http_req *req, const char *tail,
                           const char *query);
static void handle_metrics(struct routes_ctx *c, struct http_req *req, const char *tail,
                           const char *query);
static void handle_healthz(struct routes_ctx *c, struct http_req *req, const char *tail,
                           const char *query);
static void handle_index(struct routes_ctx *c, struct http_req *req, const char *tail,
                         const char *query);

static const struct route routes[] = {
    { "/transaction", VERB_POST, "POST", handle_post_transaction },
    { "/transactions", VERB_POST, "POST", handle_post_transactions },
    { "/transaction/", GET_HEAD, "GET, HEAD", handle_get_transaction },
    { "/transfer", VERB_POST, "POST", handle_post_transfer },
    { "/accounts", VERB_POST, "POST", accounts_post },
    { "/accounts/", GET_HEAD, "GET, HEAD", accounts_get },
    { "/balance", GET_HEAD, "GET, HEAD", handle_balance },
    { "/metrics", GET_HEAD, "GET, HEAD", handle_metrics },
    { "/healthz", GET_HEAD, "GET, HEAD", handle_healthz },
    { "/", GET_HEAD, "GET, HEAD", handle_index },
    { "/index.html", GET_HEAD, "GET, HEAD", handle_index },
};

/* Returns the route for path and sets *tail to what follows a prefix route. */
static const struct route *route_find(const char *path, const char **tail)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *r = &routes[i];
        size_t n = strlen(r->path);
        int prefix = n > 1 && r->path[n - 1] == '/';
        if (prefix ? strncmp(path, r->path, n) == 0 : strcmp(path, r->path) == 0) {
            *tail = path + n;
            return r;
        }
    }
    return NULL;
}

size_t routes_body_limit(unsigned verb, const char *path, size_t path_len, void *arg)
{
    const struct routes_ctx *c = arg;
    static const char batch[] = "/transactions";
    if (verb == VERB_POST && path_len == sizeof batch - 1 && memcmp(path, batch, path_len) == 0)
        return VALIDATE_BATCH_MAX_BODY;
    return c->cfg->max_body;
}

void routes_handle(struct http_req *req, void *arg)
{
    struct routes_ctx *c = arg;
    const char *path = http_req_path(req);
    const char *query = http_req_query(req);
    /* Set before the handler runs so that every answer carries it; the
     * connection is closed after the response. */
    if (c->draining)
        respond_header(req, "Connection", "close");
    const char *tail = "";
    const struct route *r = route_find(path, &tail);
    if (!r) {
        respond_error(req, c->metrics, 404, "no such path: %.200s", path);
        return;
    }
    if (!(r->methods & http_req_verb(req))) {
        respond_header(req, "Allow", r->allow);
        respond_error(req, c->metrics, 405, "method %s not allowed on %.200s",
                      http_req_method(req), path);
        return;
    }
    r->fn(c, req, tail, query);
}

static void handle_post_transaction(struct routes_ctx *c, struct http_req *req,
                                    const char *tail, const char *query)
{
    (void)tail;
    submit_post(c, req, query, validate_transaction, ANSWER_TXN);
}

static void handle_post_transfer(struct routes_ctx *c, struct http_req *req,
                                 const char *tail, const char *query)
{
    (void)tail;
    submit_post(c, req, query, validate_transfer, ANSWER_TXN);
}

/* The frontend runs one request at a time, so one buffer of each serves
 * every batch: 128 KiB of entries and the id list of the answer. */
static struct txn_entry batch_entries[VALIDATE_BATCH_MAX];
#define ID_TEXT_MAX 24 /* ,"<up to 20 digits>" */
static char batch_answer[16 + VALIDATE_BATCH_MAX * ID_TEXT_MAX];

/* POST /transactions: an array of up to VALIDATE_BATCH_MAX transactions,
 * queued all or none, answered with their ids in order. */
static void handle_post_transactions(struct routes_ctx *c, struct http_req *req,
                                     const char *tail, const char *query)
{
    (void)tail;
    (void)query;
    size_t len;
    const char *body = submit_json_body(c, req, &len);
    if (!body)
        return;
    uint32_t n = 0;
    struct validate_error err;
    if (validate_transactions(body, len, c->cfg->max_body, batch_entries, &n, &err) != 0) {
        respond_error(req, c->metrics, err.status, "%s", err.message);
        return;
    }
    if (submit_enqueue(c, req, batch_entries, n) != 0)
        return;
    /* n <= VALIDATE_BATCH_MAX ids of at most ID_TEXT_MAX bytes each: it fits. */
    size_t used = (size_t)snprintf(batch_answer, sizeof batch_answer, "{\"ids\":[");
    for (uint32_t i = 0; i < n && used < sizeof batch_answer - ID_TEXT_MAX; i++)
        used += (size_t)snprintf(batch_answer + used, ID_TEXT_MAX, "%s\"%" PRIu64 "\"", i ? "," : "",
                                 batch_entries[i].txid);
    used += (size_t)snprintf(batch_answer + used, sizeof batch_answer - used, "]}");
    respond_body(req, c->metrics, 202, "application/json", batch_answer, used);
}

/* Ledger first, then the ring, then the ledger again: an entry can leave the
 * ring and commit between the first two reads, but it is always in one of
 * the two places, so the third read closes the gap. */
static void handle_get_transaction(struct routes_ctx *c, struct http_req *req,
                                   const char *tail, const char *query)
{
    (void)query;
    uint64_t txid;
    if (validate_txid(tail, strlen(tail), &txid) != 0) {
        respond_error(req, c->metrics, 400, "transaction id must be a positive decimal integer");
        return;
    }
    struct lookup_txn t;
    enum lookup_result r = lookup_txn(c->db, txid, &t);
    if (r == LOOKUP_NOT_FOUND) {
        struct txn_entry e;
        if (ring_find(c->seg->ring, txid, &e) != RING_NOT_FOUND) {
            answer_entry_view(&e, &t);
            respond_json(req, c->metrics, 200, answer_txn_json(txid, &t));
            return;
        }
        r = lookup_txn(c->db, txid, &t);
    }
    unsigned owner = node_of_txid(txid, c->cfg->node_id);
    if (r == LOOKUP_FOUND)
        respond_json(req, c->metrics, 200, answer_txn_json(txid, &t));
    else if (r == LOOKUP_NOT_FOUND && owner != 0 && owner != c->cfg->node_id)
        /* Numbered by another node: it may still be queued there. */
        respond_error(req, c->metrics, 404, "no transaction with id %" PRIu64 " in the ledger "
                      "yet; it was numbered by node %u, which may still hold it queued (ask "
                      "that node, or again later)", txid, owner);
    else if (r == LOOKUP_NOT_FOUND)
        respond_error(req, c->metrics, 404, "no transaction with id %" PRIu64, txid);
    else
        answer_ledger_busy(c, req);
}

static void handle_balance(struct routes_ctx *c, struct http_req *req, const char *tail,
                           const char *query)
{
    (void)tail;
    char card[TXN_CARD_MAX + 1];
    size_t len = 0;
    int rc = query_param(query, "card_number", card, sizeof card, &len);
    if (rc == -ENOENT) {
        respond_error(req, c->metrics, 400, "card_number is required");
        return;
    }
    if (rc != 0 || txn_card_valid(card, len) != 0) {
        respond_error(req, c->metrics, 400,
                      "card_number must be a string of 1-32 digits and spaces");
        return;
    }
    int64_t balance;
    enum lookup_result r = lookup_balance(c->db, card, len, &balance);
    if (r == LOOKUP_NOT_FOUND) {
        respond_error(req, c->metrics, 404, "no account with card_number %s", card);
        return;
    }
    if (r != LOOKUP_FOUND) {
        answer_ledger_busy(c, req);
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    if (doc && (!cJSON_AddStringToObject(doc, "card_number", card) ||
                respond_add_int64(doc, "balance", balance) != 0)) {
        cJSON_Delete(doc);
        doc = NULL;
    }
    respond_json(req, c->metrics, 200, doc);
}

/* JSON for the prototype's dashboard and browsers; the Prometheus text
 * format for scrapers (they accept text/plain or OpenMetrics) or when asked
 * with ?format=prometheus. */
static void handle_metrics(struct routes_ctx *c, struct http_req *req, const char *tail,
                           const char *query)
{
    (void)tail;
    const char *accept = http_req_header(req, "Accept");
    if (!prom_wanted(accept, query)) {
        respond_json(req, c->metrics, 200, stats_metrics_json(c->seg));
        return;
    }
    size_t len;
    char *text = prom_render(c->seg, &len);
    if (text == NULL) {
        respond_error(req, c->metrics, 500, "out of memory rendering metrics");
        return;
    }
    respond_body(req, c->metrics, 200, PROM_CONTENT_TYPE, text, len);
    free(text);
}

static void handle_healthz(struct routes_ctx *c, struct http_req *req, const char *tail,
                           const char *query)
{
    (void)tail;
    (void)query;
    if (c->draining) {
        respond_error(req, c->metrics, 503, "shutting down");
        return;
    }
    static const char ok[] = "{\"status\":\"ok\"}";
    respond_body(req, c->metrics, 200, "application/json", ok, sizeof ok - 1);
}

static void handle_index(struct routes_ctx *c, struct http_req *req, const char *tail,
                         const char *query)
{
    (void)tail;
    (void)query;
    for (const struct asset *a = assets; a->name; a++) {
        if (strcmp(a->name, "index.html") == 0) {
            respond_body(req, c->metrics, 200, "text/html; charset=utf-8", a->data, a->size);
            return;
        }
    }
    respond_error(req, c->metrics, 404, "no dashboard compiled in");
}
