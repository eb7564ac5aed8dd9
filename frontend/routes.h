/* The request router and the handlers of the HTTP API:
 * one evhttp generic callback that matches the path, checks the method and
 * hands the request to its handler. */
#ifndef TXP_ROUTES_H
#define TXP_ROUTES_H

#include <stdint.h>

#include "common/config.h"
#include "common/metrics.h"
#include "common/shm.h"
#include "ledger/lookup.h"

struct evhttp_request;
struct waiters;

/* What the handlers need; owned by the server (http.c). */
struct routes_ctx {
    const struct config *cfg;
    struct shm_seg *seg;
    struct metric_block *metrics; /* this frontend's block; we are its only writer */
    struct lookup *db;
    struct waiters *waiters;      /* requests held for their outcome */
    uint32_t index;               /* frontend index: entry.waiter = index + 1 */
    int draining;                 /* set on SIGTERM: answer, then close */
};

/* evhttp generic callback; arg is a struct routes_ctx. */
void routes_handle(struct evhttp_request *req, void *arg);

#endif
