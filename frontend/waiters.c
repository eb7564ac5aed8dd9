/* The table of held requests and the completion event; see waiters.h.
 *
 * Waiters are found by txid through a chained hash table (txids are dense,
 * so a multiplicative hash spreads them evenly); each has its own libevent
 * timer, so both an outcome and a deadline cost O(1) plus the timer heap's
 * O(log n), and nothing ever scans all waiters except the shutdown drain. */
#include "frontend/waiters.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "frontend/respond.h"

#define WAITERS_BUCKET_BITS 14
#define WAITERS_BUCKETS (1u << WAITERS_BUCKET_BITS)
#define WAITERS_POP_BATCH 64
/* Outcomes answered per turn of the loop: a commit that releases thousands
 * of waiters is answered in slices, with reads and accepts between them. */
#define WAITERS_SLICE 256

struct waiter {
    struct waiter *next; /* hash chain */
    struct waiters *owner;
    struct event *timer;
    struct http_req *req;
    struct answer_how how;
    struct txn_entry entry; /* what was queued, for the answer */
};

struct waiters {
    struct routes_ctx *ctx;
    struct shm_seg *seg;
    uint32_t index;
    uint32_t n_workers;
    struct event_base *base;
    struct event *notify; /* NULL: no eventfd, so nobody may wait */
    struct event *resume; /* the next slice, after the loop has polled */
    int closed;           /* drained: no new waiters */
    uint32_t count;
    struct waiter *bucket[WAITERS_BUCKETS];
};

static uint32_t bucket_of(uint64_t txid)
{
    return (uint32_t)((txid * 0x9E3779B97F4A7C15ULL) >> (64 - WAITERS_BUCKET_BITS));
}

/* Removes and returns the waiter for txid, or NULL. */
static struct waiter *take(struct waiters *w, uint64_t txid)
{
    for (struct waiter **p = &w->bucket[bucket_of(txid)]; *p; p = &(*p)->next) {
        struct waiter *found = *p;
        if (found->entry.txid == txid) {
            *p = found->next;
            w->count--;
            return found;
        }
    }
    return NULL;
}

static void waiter_free(struct waiter *wt)
{
    event_free(wt->timer);
    free(wt);
}

/* 202 as if the request had not waited: the entry stays queued and is
 * applied in its turn. Counted with the timeouts: either way the client
 * got no outcome. */
static void answer_pending(struct waiters *w, struct waiter *wt)
{
    answer_accepted(w->ctx, wt->req, &wt->how, wt->entry.txid,
                    txn_status_name(TXN_STATUS_QUEUED), answer_queued_message(&wt->entry));
    metrics_add(w->ctx->metrics, METRIC_waits_timed_out, 1);
}

static void on_timeout(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    struct waiter *wt = arg;
    struct waiters *w = wt->owner;
    if (take(w, wt->entry.txid) != wt) {
        log_error("waiter for txid %llu missing from its table", (unsigned long long)wt->entry.txid);
        abort();
    }
    answer_pending(w, wt);
    waiter_free(wt);
}

static void complete_one(struct waiters *w, const struct completion *c)
{
    struct waiter *wt = take(w, c->txid);
    if (!wt)
        return; /* timed out already, or meant for a predecessor */
    answer_completion(w->ctx, wt->req, wt->how, &wt->entry, c);
    if (c->committed_at_us > 0) {
        int64_t us = clock_wall_us() - c->committed_at_us;
        metrics_record_wait(w->ctx->metrics, us > 0 ? us : 0);
    }
    metrics_add(w->ctx->metrics, METRIC_waits_answered, 1);
    waiter_free(wt);
}

/* Pops up to *budget records from one ring; returns 1 if the budget ran
 * out before the ring did. */
static int drain_ring(struct waiters *w, struct completion_ring *r, uint32_t *budget)
{
    struct completion batch[WAITERS_POP_BATCH];
    while (*budget > 0) {
        uint32_t want = *budget < WAITERS_POP_BATCH ? *budget : WAITERS_POP_BATCH;
        uint32_t n = completion_pop(r, batch, want);
        if (n == 0)
            return 0;
        for (uint32_t i = 0; i < n; i++)
            complete_one(w, &batch[i]);
        *budget -= n;
    }
    return 1;
}

/* One slice over every worker's ring; what is left waits for the resume
 * timer, which fires after the loop has polled its sockets once. */
static void answer_slice(struct waiters *w)
{
    uint32_t budget = WAITERS_SLICE;
    int more = 0;
    for (uint32_t k = 0; k < w->n_workers; k++)
        more |= drain_ring(w, shm_completions(w->seg, w->index, k), &budget);
    struct timeval now = { 0, 0 };
    if (more && evtimer_add(w->resume, &now) != 0) {
        log_warn("cannot schedule the next slice of answers; answering on");
        event_active(w->notify, EV_READ, 0);
    }
}

static void on_resume(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    answer_slice(arg);
}

/* The counter is read before the rings are drained: an outcome published
 * after our last look at a ring comes with a write that wakes us again. */
static void on_notify(evutil_socket_t fd, short events, void *arg)
{
    (void)events;
    struct waiters *w = arg;
    uint64_t count;
    if (read(fd, &count, sizeof count) < 0 && errno != EAGAIN && errno != EINTR)
        log_warn("read(eventfd): %s", strerror(errno));
    answer_slice(w);
}

struct waiters *waiters_new(struct event_base *base, struct routes_ctx *ctx, struct shm_seg *seg,
                            uint32_t index)
{
    struct waiters *w = calloc(1, sizeof *w);
    if (!w) {
        log_error("out of memory for the waiter table");
        return NULL;
    }
    w->ctx = ctx;
    w->seg = seg;
    w->index = index;
    w->base = base;
    uint32_t n_frontends = seg->hdr->params.n_frontends;
    int fd = index < SHM_MAX_CHILDREN ? seg->notify_fd[index] : -1;
    if (fd < 0 || !seg->completions || index >= n_frontends) {
        log_warn("no completion channel for frontend %u: requests will not wait", index);
        return w;
    }
    w->n_workers = seg->hdr->params.n_workers;
    for (uint32_t k = 0; k < w->n_workers; k++)
        completion_discard(shm_completions(seg, index, k));
    w->notify = event_new(base, fd, EV_READ | EV_PERSIST, on_notify, w);
    w->resume = evtimer_new(base, on_resume, w);
    /* The wake-up ahead of the sockets (http.c: new_base), the later slices
     * with them: libevent runs only the highest busy priority per loop turn,
     * so slices at the top would starve reads until all were answered. A
     * base with one priority refuses, and then they simply share it. */
    if (w->notify && w->resume) {
        (void)event_priority_set(w->notify, 0);
        (void)event_priority_set(w->resume, 1);
    }
    if (!w->notify || !w->resume || event_add(w->notify, NULL) != 0) {
        log_warn("cannot watch the completion eventfd: requests will not wait");
        if (w->notify)
            event_free(w->notify);
        if (w->resume)
            event_free(w->resume);
        w->notify = NULL;
        w->resume = NULL;
    }
    return w;
}

uint32_t waiters_room(const struct waiters *w)
{
    if (!w || !w->notify || w->closed || w->count >= WAITERS_MAX)
        return 0;
    return WAITERS_MAX - w->count;
}

int waiters_add(struct waiters *w, struct http_req *req, const struct txn_entry *e,
                const struct answer_how *how, unsigned wait_s)
{
    if (!waiters_room(w))
        return -1;
    struct waiter *wt = malloc(sizeof *wt);
    if (!wt) {
        log_error("out of memory for a waiter");
        return -1;
    }
    *wt = (struct waiter){ .owner = w, .req = req, .how = *how, .entry = *e };
    struct timeval tv = { (time_t)wait_s, 0 };
    wt->timer = evtimer_new(w->base, on_timeout, wt);
    if (!wt->timer || evtimer_add(wt->timer, &tv) != 0) {
        log_error("cannot arm a wait timer");
        if (wt->timer)
            event_free(wt->timer);
        free(wt);
        return -1;
    }
    uint32_t b = bucket_of(e->txid);
    wt->next = w->bucket[b];
    w->bucket[b] = wt;
    w->count++;
    return 0;
}

void waiters_drain(struct waiters *w)
{
    if (!w)
        return;
    w->closed = 1;
    if (w->notify)
        event_del(w->notify);
    if (w->resume)
        event_del(w->resume);
    for (uint32_t b = 0; b < WAITERS_BUCKETS && w->count > 0; b++) {
        while (w->bucket[b]) {
            struct waiter *wt = w->bucket[b];
            w->bucket[b] = wt->next;
            w->count--;
            /* The server is stopping: the client should reconnect elsewhere. */
            respond_header(wt->req, "Connection", "close");
            answer_pending(w, wt);
            waiter_free(wt);
        }
    }
}

void waiters_free(struct waiters *w)
{
    if (!w)
        return;
    waiters_drain(w);
    if (w->notify)
        event_free(w->notify);
    if (w->resume)
        event_free(w->resume);
    free(w);
}
