/* Requests held open until their outcome arrives (Prefer: wait, POST
 * /accounts): a bounded table of waiters keyed by txid, one timer each for
 * the wait, and the event on this frontend's eventfd through which workers
 * say that its completion rings hold outcomes (completion.h).
 *
 * Every waiter is answered exactly once: by its outcome, by its timer (202),
 * or by waiters_drain (202). libevent never frees a request we have not
 * answered, even when its client went away (the request is detached from
 * its connection and freed by the answer), so an unanswered waiter would
 * leak and a doubly answered one would be a use after free. */
#ifndef TXP_WAITERS_H
#define TXP_WAITERS_H

#include <stdint.h>

#include "common/shm.h"
#include "common/txn.h"
#include "frontend/answer.h"
#include "frontend/routes.h"

#define WAITERS_MAX 65536 /* held requests per frontend; beyond it, 202 at once */

struct event_base;
struct http_req;
struct waiters;

/* Sets up the table for frontend index (forgetting outcomes left in its
 * rings by a predecessor) and watches its eventfd. NULL when out of memory
 * (logged). Without an eventfd the table exists but takes no waiters. */
struct waiters *waiters_new(struct event_base *base, struct routes_ctx *ctx, struct shm_seg *seg,
                            uint32_t index);
/* How many more requests may wait now (0: none). */
uint32_t waiters_room(const struct waiters *w);
/* Holds req for the outcome of the just-queued entry e (e->waiter set,
 * e->txid assigned) for wait_s seconds. Returns 0, or -1 (logged) when it
 * cannot: the caller then answers the request itself. */
int waiters_add(struct waiters *w, struct http_req *req, const struct txn_entry *e,
                const struct answer_how *how, unsigned wait_s);
/* Answers every waiter 202 now (shutdown) and takes no new ones. */
void waiters_drain(struct waiters *w);
/* Drains, then frees the table; NULL is fine. */
void waiters_free(struct waiters *w);

#endif
