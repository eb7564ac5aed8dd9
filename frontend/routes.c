/* Routing and the API handlers. Handlers run on the frontend's only thread
 * and never block for long: enqueue is one short critical section in the
 * shared ring, and lookups are single indexed reads on a read-only SQLite
 * connection. */
#include "routes.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assets.h"
#include "clock.h"
#include "log.h"
#include "prom.h"
#include "query.h"
#include "respond.h"
#include "ring.h"
#include "stats.h"
#include "validate.h"

#define GET_HEAD (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD)

typedef void (*route_fn)(struct routes_ctx *c, struct evhttp_request *req, const char *tail,
                         const char *query);

struct route {
    const char *path;  /* exact path, or a prefix when it ends with '/' */
    unsigned methods;  /* EVHTTP_REQ_* bits */
    const char *allow; /* the same methods, for the Allow header of a 405 */
    route_fn fn;
};

static void handle_post_transaction(struct routes_ctx *c, struct evhttp_request *req,
                                    const char *tail, const char *query);
static void handle_post_transactions(struct routes_ctx *c, struct evhttp_request *req,
                                     const char *tail, const char *query);
static void handle_get_transaction(struct routes_ctx *c, struct evhttp_request *req,
                                   const char *tail, const char *query);
static void handle_balance(struct routes_ctx *c, struct evhttp_request *req, const char *tail,
                           const char *query);
static void handle_metrics(struct routes_ctx *c, struct evhttp_request *req, const char *tail,
                           const char *query);
static void handle_healthz(struct routes_ctx *c, struct evhttp_request *req, const char *tail,
                           const char *query);
static void handle_index(struct routes_ctx *c, struct evhttp_request *req, const char *tail,
                         const char *query);

static const struct route routes[] = {
    { "/transaction", EVHTTP_REQ_POST, "POST", handle_post_transaction },
    { "/transactions", EVHTTP_REQ_POST, "POST", handle_post_transactions },
    { "/transaction/", GET_HEAD, "GET, HEAD", handle_get_transaction },
    { "/balance", GET_HEAD, "GET, HEAD", handle_balance },
    { "/metrics", GET_HEAD, "GET, HEAD", handle_metrics },
    { "/healthz", GET_HEAD, "GET, HEAD", handle_healthz },
    { "/", GET_HEAD, "GET, HEAD", handle_index },
    { "/index.html", GET_HEAD, "GET, HEAD", handle_index },
};

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    }
    return "?";
}

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

void routes_handle(struct evhttp_request *req, void *arg)
{
    struct routes_ctx *c = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (!path || !*path)
        path = "/";
    /* Set before the handler runs so that every answer carries it; evhttp
     * then closes the connection after the response. */
    if (c->draining)
        respond_header(req, "Connection", "close");
    const char *tail = "";
    const struct route *r = route_find(path, &tail);
    if (!r) {
        respond_error(req, c->metrics, 404, "no such path: %.200s", path);
        return;
    }
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (!(r->methods & m)) {
        respond_header(req, "Allow", r->allow);
        respond_error(req, c->metrics, 405, "method %s not allowed on %.200s", method_name(m),
                      path);
        return;
    }
    r->fn(c, req, tail, query);
}

/* Checks the Content-Type and returns the body as one contiguous run (it
 * may arrive in several chunks), or answers the error itself and returns
 * NULL. */
static const char *json_body(struct routes_ctx *c, struct evhttp_request *req, size_t *len)
{
    const char *ctype =
        evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    if (validate_content_type(ctype) != 0) {
        respond_error(req, c->metrics, 415, "Content-Type must be application/json");
        return NULL;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    *len = evbuffer_get_length(in);
    const char *body = *len ? (const char *)evbuffer_pullup(in, -1) : "";
    if (!body)
        respond_error(req, c->metrics, 500, "out of memory");
    return body;
}

/* Queues n entries, all or none. On failure answers 503 (no room for all
 * of them: a normal overload answer) or 500 itself and returns -1. */
static int enqueue(struct routes_ctx *c, struct evhttp_request *req, struct txn_entry *e,
                   uint32_t n)
{
    int rc = ring_enqueue(c->seg->ring, e, n);
    if (rc == 0) {
        metrics_add(c->metrics, METRIC_tx_accepted, n);
        return 0;
    }
    if (rc == -EAGAIN) {
        metrics_add(c->metrics, METRIC_tx_queue_full, n);
        respond_header(req, "Retry-After", "1");
        respond_error(req, c->metrics, 503, "queue full, retry later");
        return -1;
    }
    log_error("ring_enqueue: %s", strerror(-rc));
    respond_error(req, c->metrics, 500, "could not queue the transaction");
    return -1;
}

static void handle_post_transaction(struct routes_ctx *c, struct evhttp_request *req,
                                    const char *tail, const char *query)
{
    (void)tail;
    (void)query;
    size_t len;
    const char *body = json_body(c, req, &len);
    if (!body)
        return;
    struct txn_entry e;
    struct validate_error err;
    if (validate_transaction(body, len, c->cfg->max_body, &e, &err) != 0) {
        respond_error(req, c->metrics, err.status, "%s", err.message);
        return;
    }
    if (enqueue(c, req, &e, 1) != 0)
        return;
    /* Printed directly: this is the hot path, and nothing in it needs
     * escaping (the id is digits). */
    char doc[128], location[48];
    int n = snprintf(doc, sizeof doc,
                     "{\"status\":\"queued\",\"id\":\"%" PRIu64
                     "\",\"message\":\"Transaction queued for processing\"}",
                     e.txid);
    snprintf(location, sizeof location, "/transaction/%" PRIu64, e.txid);
    respond_header(req, "Location", location);
    respond_body(req, c->metrics, 202, "application/json", doc, (size_t)n);
}

/* The frontend runs one request at a time, so one buffer of each serves
 * every batch: 128 KiB of entries and the id list of the answer. */
static struct txn_entry batch_entries[VALIDATE_BATCH_MAX];
#define ID_TEXT_MAX 24 /* ,"<up to 20 digits>" */
static char batch_answer[16 + VALIDATE_BATCH_MAX * ID_TEXT_MAX];

/* POST /transactions: an array of up to VALIDATE_BATCH_MAX transactions,
 * queued all or none, answered with their ids in order. */
static void handle_post_transactions(struct routes_ctx *c, struct evhttp_request *req,
                                     const char *tail, const char *query)
{
    (void)tail;
    (void)query;
    size_t len;
    const char *body = json_body(c, req, &len);
    if (!body)
        return;
    uint32_t n = 0;
    struct validate_error err;
    if (validate_transactions(body, len, c->cfg->max_body, batch_entries, &n, &err) != 0) {
        respond_error(req, c->metrics, err.status, "%s", err.message);
        return;
    }
    if (enqueue(c, req, batch_entries, n) != 0)
        return;
    /* n <= VALIDATE_BATCH_MAX ids of at most ID_TEXT_MAX bytes each: it fits. */
    size_t used = (size_t)snprintf(batch_answer, sizeof batch_answer, "{\"ids\":[");
    for (uint32_t i = 0; i < n && used < sizeof batch_answer - ID_TEXT_MAX; i++)
        used += (size_t)snprintf(batch_answer + used, ID_TEXT_MAX, "%s\"%" PRIu64 "\"", i ? "," : "",
                                 batch_entries[i].txid);
    used += (size_t)snprintf(batch_answer + used, sizeof batch_answer - used, "]}");
    respond_body(req, c->metrics, 202, "application/json", batch_answer, used);
}

static int add_time(cJSON *doc, const char *name, int64_t wall_us)
{
    char iso[25];
    clock_format_iso(wall_us, iso);
    return cJSON_AddStringToObject(doc, name, iso) ? 0 : -1;
}

/* The body of GET /transaction/<id> for a row of the ledger. */
static cJSON *txn_row_json(uint64_t txid, const struct lookup_txn *t)
{
    char id[24];
    snprintf(id, sizeof id, "%" PRIu64, txid);
    cJSON *doc = cJSON_CreateObject();
    int bad = !doc || !cJSON_AddStringToObject(doc, "id", id) ||
              !cJSON_AddStringToObject(doc, "card_number", t->card) ||
              respond_add_int64(doc, "amount", t->amount) != 0 ||
              !cJSON_AddStringToObject(doc, "status", t->status);
    if (!bad && t->has_balance_after && strcmp(t->status, "applied") == 0)
        bad = respond_add_int64(doc, "balance_after", t->balance_after) != 0;
    if (!bad && t->has_queued_at)
        bad = add_time(doc, "queued_at", t->queued_at_us) != 0;
    if (!bad && t->has_applied_at)
        bad = add_time(doc, "applied_at", t->applied_at_us) != 0;
    if (bad) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

/* The body of GET /transaction/<id> for an entry still in the ring. */
static cJSON *txn_queued_json(const struct txn_entry *e)
{
    struct lookup_txn t = { .amount = e->amount, .has_queued_at = 1,
                            .queued_at_us = e->queued_at_us };
    snprintf(t.card, sizeof t.card, "%.*s", (int)e->card_len, e->card);
    snprintf(t.status, sizeof t.status, "%s", txn_status_name(TXN_STATUS_QUEUED));
    return txn_row_json(e->txid, &t);
}

static void respond_ledger_busy(struct routes_ctx *c, struct evhttp_request *req)
{
    respond_header(req, "Retry-After", "1");
    respond_error(req, c->metrics, 503, "ledger busy, retry later");
}

/* Ledger first, then the ring, then the ledger again: an entry can leave the
 * ring and commit between the first two reads, but it is always in one of
 * the two places, so the third read closes the gap. */
static void handle_get_transaction(struct routes_ctx *c, struct evhttp_request *req,
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
            respond_json(req, c->metrics, 200, txn_queued_json(&e));
            return;
        }
        r = lookup_txn(c->db, txid, &t);
    }
    if (r == LOOKUP_FOUND)
        respond_json(req, c->metrics, 200, txn_row_json(txid, &t));
    else if (r == LOOKUP_NOT_FOUND)
        respond_error(req, c->metrics, 404, "no transaction with id %" PRIu64, txid);
    else
        respond_ledger_busy(c, req);
}

static void handle_balance(struct routes_ctx *c, struct evhttp_request *req, const char *tail,
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
        respond_ledger_busy(c, req);
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
static void handle_metrics(struct routes_ctx *c, struct evhttp_request *req, const char *tail,
                           const char *query)
{
    (void)tail;
    const char *accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
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

static void handle_healthz(struct routes_ctx *c, struct evhttp_request *req, const char *tail,
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

static void handle_index(struct routes_ctx *c, struct evhttp_request *req, const char *tail,
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
