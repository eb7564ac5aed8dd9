/* Entries validated during one turn of the frontend's event loop, queued
 * together at the end of the turn with one ring_enqueue (one lock of the
 * shared ring instead of one per request).
 *
 * Why: under load one turn hands the frontend tens of requests (one per
 * ready connection). Queueing each on its own took the ring's process-shared
 * mutex once per request; with two frontends and a worker on two cores the
 * lock was contended often enough that about one request in five paid a
 * futex system call, and a frontend preempted while holding it stalled the
 * others for a time slice. A request is still answered in the turn that read
 * it: its 202 (or its hold for Prefer: wait) is sent by the flush, which
 * runs after the turn's reads. Nothing is accepted before it is in the ring,
 * so a frontend killed with entries pending has promised nothing. */
#ifndef TXP_PENDING_H
#define TXP_PENDING_H

#include "common/txn.h"
#include "frontend/answer.h"
#include "frontend/routes.h"

/* Entries held per turn; a fuller turn flushes early. */
#define PENDING_MAX 128

struct event_base;
struct http_req;
struct pending;

/* NULL when out of memory (logged). */
struct pending *pending_new(struct event_base *base, struct routes_ctx *ctx);
/* Takes req, its validated entry e (Idempotency-Key checked, not yet queued)
 * and how it is to be answered; wait_s > 0 holds it for its outcome if the
 * waiter table has room when it is queued. req is answered by the flush. */
void pending_add(struct pending *p, struct http_req *req, const struct txn_entry *e,
                 const struct answer_how *how, unsigned wait_s);
/* Queues and answers what is pending now (the end of a turn, shutdown). */
void pending_flush(struct pending *p);
/* Flushes, then frees; NULL is fine. */
void pending_free(struct pending *p);

#endif
