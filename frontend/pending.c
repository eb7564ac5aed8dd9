/* One ring_enqueue per loop turn; see pending.h.
 *
 * The flush is an event at the same priority as the sockets, made active by
 * the turn's first pending entry: libevent appends it to the active queue
 * behind the reads already there, so it runs once they have all been
 * handled, in the same turn. */
#include "frontend/pending.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>

#include "common/check.h"
#include "common/log.h"
#include "common/ring.h"
#include "frontend/submit.h"
#include "frontend/waiters.h"

/* Matches the sockets' priority (the loop's default, the lower of two). */
#define PENDING_PRIORITY 1

struct pending_item {
    struct http_req *req;
    struct answer_how how;
    unsigned wait_s;
};

struct pending_batch {
    uint32_t n;
    struct pending_item item[PENDING_MAX];
    struct txn_entry entry[PENDING_MAX]; /* one array: what ring_enqueue takes */
};

/* Two batches: answering one may hand us new entries (a sent answer lets its
 * connection read its next pipelined request at once), which go to the
 * other. An answer brings at most one (a connection handles one request at a
 * time), so while one batch is answered the other gets at most as many
 * entries as it holds: it may become full, never overfull. */
struct pending {
    struct routes_ctx *ctx;
    struct event *flush;
    uint32_t cur; /* the batch taking entries */
    int flushing;
    struct pending_batch batch[2];
};

static void on_flush(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    pending_flush(arg);
}

struct pending *pending_new(struct event_base *base, struct routes_ctx *ctx)
{
    struct pending *p = calloc(1, sizeof *p);
    if (!p) {
        log_error("out of memory for the pending entries");
        return NULL;
    }
    p->ctx = ctx;
    p->flush = event_new(base, -1, 0, on_flush, p);
    if (!p->flush || event_priority_set(p->flush, PENDING_PRIORITY) != 0) {
        log_error("cannot set up the pending-entries event");
        pending_free(p);
        return NULL;
    }
    return p;
}

void pending_add(struct pending *p, struct http_req *req, const struct txn_entry *e,
                 const struct answer_how *how, unsigned wait_s)
{
    struct pending_batch *b = &p->batch[p->cur];
    /* A full batch is flushed now. Its answers may start as many pipelined
     * requests, one per connection, and fill the other batch in turn: flush
     * until there is room. Each round answers requests already buffered, so
     * it ends. Never during a flush (see struct pending). */
    while (b->n == PENDING_MAX) {
        ASSERT(!p->flushing);
        pending_flush(p);
        b = &p->batch[p->cur];
    }
    ASSERT(b->n < PENDING_MAX);
    b->item[b->n] = (struct pending_item){ .req = req, .how = *how, .wait_s = wait_s };
    b->entry[b->n] = *e;
    if (b->n++ == 0)
        event_active(p->flush, 0, 0);
}

/* Answers item i of b once its entry was queued (rc 0, txid assigned) or
 * not. */
static void answer(struct routes_ctx *c, struct pending_batch *b, uint32_t i, int rc)
{
    struct pending_item *it = &b->item[i];
    struct txn_entry *e = &b->entry[i];
    if (rc != 0) {
        submit_refuse(c, it->req, rc, 1);
        return;
    }
    if (e->waiter != 0 && waiters_add(c->waiters, it->req, e, &it->how, it->wait_s) == 0)
        return;
    it->how.pref_wait = 0; /* answered without waiting */
    answer_accepted(c, it->req, &it->how, e->txid, txn_status_name(TXN_STATUS_QUEUED),
                    answer_queued_message(e));
}

void pending_flush(struct pending *p)
{
    if (!p)
        return;
    ASSERT(!p->flushing);
    struct pending_batch *b = &p->batch[p->cur];
    uint32_t n = b->n;
    if (n == 0)
        return;
    p->cur ^= 1;
    ASSERT(p->batch[p->cur].n == 0);
    p->flushing = 1;
    struct routes_ctx *c = p->ctx;
    /* The worker sends an outcome only for entries that name a waiter, so an
     * entry names one only if its request will really be held: decided here,
     * against the room the waiter table has for this whole batch. */
    uint32_t room = waiters_room(c->waiters);
    for (uint32_t i = 0; i < n; i++) {
        int hold = b->item[i].wait_s > 0 && !c->draining && room > 0;
        room -= (uint32_t)hold;
        b->entry[i].waiter = hold ? (uint16_t)(c->index + 1) : 0;
    }
    int rc = ring_enqueue(c->seg->ring, b->entry, n);
    if (rc == 0) {
        metrics_add(c->metrics, METRIC_tx_accepted, n);
        metrics_add(c->metrics, METRIC_tx_enqueues, 1);
        for (uint32_t i = 0; i < n; i++)
            answer(c, b, i, 0);
    } else {
        /* Not all fit: each on its own, so what fits is still taken, in
         * the order the requests came. */
        for (uint32_t i = 0; i < n; i++) {
            rc = ring_enqueue(c->seg->ring, &b->entry[i], 1);
            if (rc == 0) {
                metrics_add(c->metrics, METRIC_tx_accepted, 1);
                metrics_add(c->metrics, METRIC_tx_enqueues, 1);
            }
            answer(c, b, i, rc);
        }
    }
    ASSERT(b->n == n && p->batch[p->cur].n <= n);
    b->n = 0;
    p->flushing = 0;
}

void pending_free(struct pending *p)
{
    if (!p)
        return;
    /* Answers may bring the next pipelined requests (unless the server
     * drains, when answered connections close): until none is left. */
    while (p->batch[p->cur].n > 0)
        pending_flush(p);
    if (p->flush)
        event_free(p->flush);
    free(p);
}
