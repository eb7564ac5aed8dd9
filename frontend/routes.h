/* The request router and the handlers of the HTTP API: one callback of the
 * HTTP layer (conn.h) that matches the path, checks the method and hands the
 * request to its handler. */
#ifndef TXP_ROUTES_H
#define TXP_ROUTES_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/metrics.h"
#include "common/shm.h"
#include "ledger/lookup.h"

struct http_req;
struct pending;
struct waiters;

/* What the handlers need; owned by the server (http.c). */
struct routes_ctx {
    const struct config *cfg;
    struct shm_seg *seg;
    struct metric_block *metrics; /* this frontend's block; we are its only writer */
    struct lookup *db;
    struct waiters *waiters;      /* requests held for their outcome */
    struct pending *pending;      /* entries to queue at the end of this loop turn */
    uint32_t index;               /* frontend index: entry.waiter = index + 1 */
    int draining;                 /* set on SIGTERM: answer, then close */
};

/* The HTTP layer's handler (http_handler); arg is a struct routes_ctx. */
void routes_handle(struct http_req *req, void *arg);
/* The HTTP layer's body limit (http_body_limit): POST /transactions takes
 * VALIDATE_BATCH_MAX_BODY, everything else --max-body. */
size_t routes_body_limit(unsigned verb, const char *path, size_t path_len, void *arg);

#endif
