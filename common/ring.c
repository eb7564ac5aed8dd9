/* The shared-memory queue: enqueue, claim, acknowledge, requeue and the
 * EOWNERDEAD repair that makes every one of them survive the death of the
 * process running it. The design, the layout and the invariants are at the
 * top of ring.h; this file follows them to the letter. */
#include "common/ring.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/check.h"
#include "common/clock.h"
#include "common/log.h"

#define ALIGN64(x) (((x) + 63u) & ~(size_t)63u)

/* Orders the stores of a multi-step operation as written. What matters is
 * the order a dying process leaves its stores in, so a compiler barrier plus
 * the CPU's own program order at the kill point is enough; a full fence costs
 * a few cycles per claim and removes any doubt. */
#define ring_barrier() __atomic_thread_fence(__ATOMIC_SEQ_CST)

static size_t claims_off(void);
static size_t claim_entries_off(uint32_t n_slots, uint32_t batch_max, uint32_t slot);

static struct ring_claim *ring_claims(struct ring *r)
{
    return (struct ring_claim *)((char *)r + claims_off());
}

static const struct ring_claim *ring_claims_const(const struct ring *r)
{
    return (const struct ring_claim *)((const char *)r + claims_off());
}

static struct txn_entry *ring_slots(struct ring *r)
{
    return (struct txn_entry *)((char *)r + r->entries_off);
}

static struct txn_entry *claim_entries(struct ring *r, uint32_t slot)
{
    ASSERT(slot < r->n_slots);
    ASSERT(ring_claims(r)[slot].entries_off == claim_entries_off(r->n_slots, r->batch_max, slot));
    return (struct txn_entry *)((char *)r + ring_claims(r)[slot].entries_off);
}

size_t ring_bytes(uint32_t capacity, uint32_t n_slots, uint32_t batch_max)
{
    /* The slot array comes last, where a claim record past the last would start. */
    return claim_entries_off(n_slots, batch_max, n_slots) + (size_t)capacity * sizeof(struct txn_entry);
}

/* Positions a ring may hand out ids for: a strided ring its reserved
 * span, a dense one every id up to INT64_MAX. */
static uint64_t ring_span(uint64_t base, uint32_t stride)
{
    if (stride > 1)
        return RING_STRIDED_SPAN;
    return base <= (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX - base : 0;
}

static uint32_t stride_of(const struct ring *r)
{
    return r->txid_stride == 0 ? 1 : r->txid_stride;
}

int ring_init(void *mem, size_t bytes, uint32_t capacity, uint32_t n_slots, uint32_t batch_max,
              uint64_t txid_base, uint32_t txid_stride)
{
    if (capacity == 0 || capacity > RING_MAX_CAPACITY || n_slots == 0 || n_slots > RING_MAX_SLOTS ||
        batch_max == 0 || batch_max > RING_MAX_BATCH || bytes < ring_bytes(capacity, n_slots, batch_max) ||
        txid_stride == 0 || txid_stride > RING_MAX_STRIDE || txid_base == 0 ||
        txid_base > (uint64_t)INT64_MAX - ring_span(txid_base, txid_stride) * txid_stride)
        return -EINVAL;

    struct ring *r = mem;
    memset(r, 0, sizeof *r);
    r->capacity = capacity;
    r->n_slots = n_slots;
    r->batch_max = batch_max;
    r->txid_base = txid_base;
    r->txid_stride = txid_stride;
    r->bytes = ring_bytes(capacity, n_slots, batch_max);

    struct ring_claim *claims = ring_claims(r);
    for (uint32_t i = 0; i < n_slots; i++) {
        memset(&claims[i], 0, sizeof claims[i]);
        claims[i].entries_off = claim_entries_off(n_slots, batch_max, i);
    }
    r->entries_off = claim_entries_off(n_slots, batch_max, n_slots);

    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc == 0)
        rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(&r->mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc != 0) {
        log_error("ring: cannot initialise robust shared mutex: %s", strerror(rc));
        return -rc;
    }
    __atomic_store_n(&r->magic, RING_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

static size_t claims_off(void)
{
    return ALIGN64(sizeof(struct ring));
}

/* Where slot's claimed entries must live, given the geometry. */
static size_t claim_entries_off(uint32_t n_slots, uint32_t batch_max, uint32_t slot)
{
    return claims_off() + ALIGN64(sizeof(struct ring_claim) * n_slots) +
           (size_t)slot * batch_max * sizeof(struct txn_entry);
}

static int invalid(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int invalid(char *why, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (why != NULL && len > 0)
        vsnprintf(why, len, fmt, ap);
    va_end(ap);
    return -1;
}

/* 1 if the intent record describes an operation that can have been under
 * way in this ring: the redo functions then stay inside the region. */
static int intent_valid(const struct ring *r, const struct ring_intent *in, uint64_t head,
                        uint64_t tail, uint32_t count)
{
    if (in->slot >= r->n_slots || in->n == 0 || in->n > r->batch_max)
        return 0;
    if (in->op == RING_OP_CLAIM) /* head moves from in->head to in->head + n */
        return in->head <= tail && in->n <= tail - in->head &&
               (head == in->head || head == in->head + in->n) && (count == 0 || count == in->n);
    if (in->op == RING_OP_REQUEUE) /* head moves from in->head back to in->head - n */
        return in->head >= in->n && in->head <= tail && tail - (in->head - in->n) <= r->capacity &&
               (head == in->head || head == in->head - in->n) && (count == 0 || count == in->n);
    return 0;
}

int ring_validate(const struct ring *r, size_t bytes, int layout_only, char *why, size_t len)
{
    if (bytes < sizeof *r || r->magic != RING_MAGIC)
        return invalid(why, len, "queue header has a bad magic number");
    if (r->capacity == 0 || r->capacity > RING_MAX_CAPACITY || r->n_slots == 0 ||
        r->n_slots > RING_MAX_SLOTS || r->batch_max == 0 || r->batch_max > RING_MAX_BATCH)
        return invalid(why, len, "queue geometry out of range (capacity %u, %u slots, batch %u)",
                       r->capacity, r->n_slots, r->batch_max);
    size_t want = ring_bytes(r->capacity, r->n_slots, r->batch_max);
    if (r->bytes != want || bytes < want)
        return invalid(why, len, "queue needs %zu bytes, has %zu (header says %llu)", want, bytes,
                       (unsigned long long)r->bytes);
    if (r->entries_off != claim_entries_off(r->n_slots, r->batch_max, r->n_slots))
        return invalid(why, len, "queue slot array at offset %llu, not where the geometry puts it",
                       (unsigned long long)r->entries_off);
    const struct ring_claim *claims = ring_claims_const(r);
    for (uint32_t i = 0; i < r->n_slots; i++)
        if (claims[i].entries_off != claim_entries_off(r->n_slots, r->batch_max, i))
            return invalid(why, len, "claim record %u points at offset %llu, outside its place", i,
                           (unsigned long long)claims[i].entries_off);
    if (layout_only)
        return 0;

    /* Positions and counts: exact only while no process uses the ring. */
    uint64_t head = r->head, tail = r->tail, claimed = 0;
    uint32_t stride = stride_of(r);
    if (stride > RING_MAX_STRIDE || r->txid_base == 0 || r->txid_base > INT64_MAX ||
        r->txid_base > (uint64_t)INT64_MAX - ring_span(r->txid_base, stride) * stride)
        return invalid(why, len, "txid base %llu or stride %u out of range",
                       (unsigned long long)r->txid_base, stride);
    if (head > tail || tail - head > r->capacity || tail > ring_span(r->txid_base, stride))
        return invalid(why, len, "queue positions out of range (head %llu, tail %llu)",
                       (unsigned long long)head, (unsigned long long)tail);
    for (uint32_t i = 0; i < r->n_slots; i++) {
        if (claims[i].count > r->batch_max)
            return invalid(why, len, "claim record %u holds %u entries (batch %u)", i,
                           claims[i].count, r->batch_max);
        claimed += claims[i].count;
    }
    const struct ring_intent *in = &r->intent;
    if (in->op != RING_OP_NONE) {
        uint32_t count = in->slot < r->n_slots ? claims[in->slot].count : 0;
        if (!intent_valid(r, in, head, tail, count))
            return invalid(why, len, "interrupted queue operation %u (slot %u, head %llu, %u entries) "
                           "does not fit the queue", in->op, in->slot,
                           (unsigned long long)in->head, in->n);
    } else if (tail - head + claimed > r->capacity) {
        return invalid(why, len, "queue holds %llu queued and %llu claimed entries, capacity %u",
                       (unsigned long long)(tail - head), (unsigned long long)claimed, r->capacity);
    }
    return 0;
}

struct ring *ring_from(void *mem, size_t bytes)
{
    return ring_validate(mem, bytes, 0, NULL, 0) == 0 ? mem : NULL;
}

/* --- redo functions: each depends only on the intent record and on state
 * the operation does not modify, so running it twice equals running it once. */

static void redo_claim(struct ring *r)
{
    const struct ring_intent *in = &r->intent;
    struct txn_entry *dst = claim_entries(r, in->slot);
    struct txn_entry *slots = ring_slots(r);
    for (uint32_t i = 0; i < in->n; i++)
        dst[i] = slots[(in->head + i) % r->capacity];
    ring_barrier();
    ring_claims(r)[in->slot].count = in->n;
    __atomic_store_n(&r->head, in->head + in->n, __ATOMIC_RELAXED);
    ring_barrier();
}

static void redo_requeue(struct ring *r)
{
    const struct ring_intent *in = &r->intent;
    const struct txn_entry *src = claim_entries(r, in->slot);
    struct txn_entry *slots = ring_slots(r);
    uint64_t new_head = in->head - in->n;
    for (uint32_t i = 0; i < in->n; i++) {
        struct txn_entry *dst = &slots[(new_head + i) % r->capacity];
        *dst = src[i];
        dst->attempts = src[i].attempts + 1;
    }
    ring_barrier();
    __atomic_store_n(&r->head, new_head, __ATOMIC_RELAXED);
    ring_claims(r)[in->slot].count = 0;
    ring_barrier();
}

static void intent_run(struct ring *r, uint32_t op, uint32_t slot, uint64_t head, uint32_t n)
{
    r->intent.slot = slot;
    r->intent.head = head;
    r->intent.n = n;
    ring_barrier();
    __atomic_store_n(&r->intent.op, op, __ATOMIC_SEQ_CST);
    ring_barrier();
    if (op == RING_OP_CLAIM)
        redo_claim(r);
    else
        redo_requeue(r);
    __atomic_store_n(&r->intent.op, RING_OP_NONE, __ATOMIC_SEQ_CST);
}

/* Called with the mutex held after EOWNERDEAD: finish what the dead holder
 * started. Enqueue and ack need nothing (single publishing store). */
static void ring_repair(struct ring *r)
{
    uint32_t op = __atomic_load_n(&r->intent.op, __ATOMIC_SEQ_CST);
    if (op != RING_OP_NONE) {
        uint32_t count = r->intent.slot < r->n_slots ? ring_claims(r)[r->intent.slot].count : 0;
        /* Our own processes wrote the intent; one that does not fit means
         * memory corruption, and a redo from it would write out of place. */
        ASSERT(intent_valid(r, &r->intent, r->head, r->tail, count));
    }
    if (op == RING_OP_CLAIM) {
        redo_claim(r);
    } else if (op == RING_OP_REQUEUE) {
        redo_requeue(r);
        r->requeued += r->intent.n; /* ring_find looks past home slots only once this is set */
    }
    __atomic_store_n(&r->intent.op, RING_OP_NONE, __ATOMIC_SEQ_CST);
    r->repairs++;
}

static void ring_lock(struct ring *r)
{
    int rc = pthread_mutex_lock(&r->mutex);
    if (rc == EOWNERDEAD) {
        log_warn("ring: previous lock holder died; repairing (pending op %u)", r->intent.op);
        ring_repair(r);
        rc = pthread_mutex_consistent(&r->mutex);
    }
    if (rc != 0) {
        /* ENOTRECOVERABLE cannot happen: every EOWNERDEAD is made consistent. */
        log_error("ring: mutex lock failed: %s", strerror(rc));
        abort();
    }
}

static void ring_unlock(struct ring *r)
{
    int rc = pthread_mutex_unlock(&r->mutex);
    if (rc != 0) {
        log_error("ring: mutex unlock failed: %s", strerror(rc));
        abort();
    }
}

static uint64_t claimed_locked(struct ring *r)
{
    uint64_t sum = 0;
    const struct ring_claim *claims = ring_claims(r);
    for (uint32_t i = 0; i < r->n_slots; i++)
        sum += claims[i].count;
    return sum;
}

static long futex(uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

static void ring_notify(struct ring *r, uint32_t n)
{
    __atomic_add_fetch(&r->wake_seq, 1, __ATOMIC_SEQ_CST);
    const struct ring_claim *claims = ring_claims(r);
    for (uint32_t i = 0; i < r->n_slots; i++) {
        if (__atomic_load_n(&claims[i].sleeping, __ATOMIC_SEQ_CST)) {
            futex(&r->wake_seq, FUTEX_WAKE, n == 1 ? 1 : INT_MAX, NULL);
            return;
        }
    }
}

int ring_enqueue(struct ring *r, struct txn_entry *entries, uint32_t n)
{
    if (n == 0)
        return 0;
    int64_t now = clock_wall_us();
    ring_lock(r);
    uint64_t used = r->tail - r->head + claimed_locked(r);
    ASSERT(r->head <= r->tail && used <= r->capacity);
    if (n > r->capacity || used + n > r->capacity) {
        ring_unlock(r);
        return -EAGAIN;
    }
    uint32_t stride = stride_of(r);
    if (n > ring_span(r->txid_base, stride) - r->tail) {
        ring_unlock(r);
        return -ENOSPC; /* the ids reserved for this ring are used up */
    }
    struct txn_entry *slots = ring_slots(r);
    for (uint32_t i = 0; i < n; i++) {
        entries[i].txid = r->txid_base + (r->tail + i) * stride;
        if (entries[i].queued_at_us == 0)
            entries[i].queued_at_us = now;
        slots[(r->tail + i) % r->capacity] = entries[i];
    }
    ring_barrier();
    uint64_t tail = r->tail + n;
    __atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE); /* the publishing store */
    if (tail - r->head > r->high_water)
        r->high_water = tail - r->head;
    ring_unlock(r);
    ring_notify(r, n);
    return 0;
}

int ring_claim(struct ring *r, uint32_t slot, uint32_t max, const struct txn_entry **batch)
{
    if (slot >= r->n_slots)
        return -EINVAL;
    ring_lock(r);
    struct ring_claim *c = &ring_claims(r)[slot];
    uint32_t n = c->count;
    ASSERT(n <= r->batch_max && r->head <= r->tail && r->tail - r->head <= r->capacity);
    if (n == 0) {
        uint64_t depth = r->tail - r->head;
        uint32_t limit = max < r->batch_max ? max : r->batch_max;
        n = depth < limit ? (uint32_t)depth : limit;
        if (n > 0) {
            intent_run(r, RING_OP_CLAIM, slot, r->head, n);
            c->claims++;
        }
    }
    ring_unlock(r);
    *batch = claim_entries(r, slot);
    return (int)n;
}

void ring_ack(struct ring *r, uint32_t slot)
{
    if (slot >= r->n_slots)
        return;
    ring_lock(r);
    ring_claims(r)[slot].count = 0;
    ring_unlock(r);
}

static uint32_t requeue_locked(struct ring *r, uint32_t slot)
{
    struct ring_claim *c = &ring_claims(r)[slot];
    uint32_t n = c->count;
    ASSERT(n <= r->batch_max); /* dropping the claim instead would lose entries silently */
    if (n > 0) {
        intent_run(r, RING_OP_REQUEUE, slot, r->head, n);
        r->requeued += n;
    }
    c->sleeping = 0;
    return n;
}

uint32_t ring_requeue(struct ring *r, uint32_t slot)
{
    if (slot >= r->n_slots)
        return 0;
    ring_lock(r);
    uint32_t n = requeue_locked(r, slot);
    ring_unlock(r);
    if (n > 0)
        ring_notify(r, n);
    return n;
}

uint64_t ring_recover(struct ring *r)
{
    uint64_t n = 0;
    ring_lock(r);
    for (uint32_t i = 0; i < r->n_slots; i++)
        n += requeue_locked(r, i);
    ring_unlock(r);
    return n;
}

static int ring_nonempty(const struct ring *r)
{
    return __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) != __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
}

void ring_wait(struct ring *r, uint32_t slot, int timeout_ms)
{
    if (slot >= r->n_slots)
        return;
    uint32_t seq = __atomic_load_n(&r->wake_seq, __ATOMIC_SEQ_CST);
    if (ring_nonempty(r))
        return;
    struct ring_claim *c = &ring_claims(r)[slot];
    __atomic_store_n(&c->sleeping, 1, __ATOMIC_SEQ_CST);
    if (!ring_nonempty(r)) {
        struct timespec ts = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L };
        /* EAGAIN (seq moved), EINTR (signal) and ETIMEDOUT all mean: recheck. */
        futex(&r->wake_seq, FUTEX_WAIT, seq, &ts);
    }
    __atomic_store_n(&c->sleeping, 0, __ATOMIC_SEQ_CST);
}

void ring_wake_all(struct ring *r)
{
    __atomic_add_fetch(&r->wake_seq, 1, __ATOMIC_SEQ_CST);
    futex(&r->wake_seq, FUTEX_WAKE, INT_MAX, NULL);
}

void ring_stats(const struct ring *r, struct ring_stats *out)
{
    memset(out, 0, sizeof *out);
    uint64_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
    uint64_t tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
    const struct ring_claim *claims = ring_claims_const(r);
    for (uint32_t i = 0; i < r->n_slots; i++)
        out->claimed += __atomic_load_n(&claims[i].count, __ATOMIC_RELAXED);
    out->head = head;
    out->tail = tail;
    out->depth = tail >= head ? tail - head : 0;
    out->capacity = r->capacity;
    out->high_water = __atomic_load_n(&r->high_water, __ATOMIC_RELAXED);
    out->repairs = __atomic_load_n(&r->repairs, __ATOMIC_RELAXED);
    out->requeued = __atomic_load_n(&r->requeued, __ATOMIC_RELAXED);
    out->txid_base = r->txid_base;
}

uint64_t ring_pending(struct ring *r)
{
    ring_lock(r);
    uint64_t n = r->tail - r->head + claimed_locked(r);
    ring_unlock(r);
    return n;
}

uint64_t ring_next_txid(const struct ring *r)
{
    return r->txid_base + __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) * stride_of(r);
}

uint32_t ring_txid_stride(const struct ring *r)
{
    return stride_of(r);
}

/* The position txid was handed out at, if this ring handed it out. */
static int position_of(const struct ring *r, uint64_t txid, uint64_t *pos)
{
    uint32_t stride = stride_of(r);
    if (txid < r->txid_base || (txid - r->txid_base) % stride != 0)
        return 0;
    *pos = (txid - r->txid_base) / stride;
    return *pos < r->tail;
}

uint64_t ring_slot_claims(const struct ring *r, uint32_t slot)
{
    if (slot >= r->n_slots)
        return 0;
    return __atomic_load_n(&ring_claims_const(r)[slot].claims, __ATOMIC_RELAXED);
}

int ring_slot_busy(const struct ring *r, uint32_t slot)
{
    if (slot >= r->n_slots)
        return 0;
    return __atomic_load_n(&ring_claims_const(r)[slot].count, __ATOMIC_RELAXED) != 0;
}

enum ring_find_result ring_find(struct ring *r, uint64_t txid, struct txn_entry *out)
{
    enum ring_find_result found = RING_NOT_FOUND;
    ring_lock(r);
    struct txn_entry *slots = ring_slots(r);
    uint64_t pos = 0;
    int ours = position_of(r, txid, &pos);
    if (ours) {
        if (pos >= r->head && slots[pos % r->capacity].txid == txid) {
            *out = slots[pos % r->capacity];
            found = RING_FOUND_QUEUED;
        }
    }
    for (uint32_t s = 0; found == RING_NOT_FOUND && s < r->n_slots; s++) {
        const struct txn_entry *batch = claim_entries(r, s);
        ASSERT(ring_claims(r)[s].count <= r->batch_max);
        for (uint32_t i = 0; i < ring_claims(r)[s].count; i++) {
            if (batch[i].txid == txid) {
                *out = batch[i];
                found = RING_FOUND_CLAIMED;
                break;
            }
        }
    }
    /* A requeued entry sits away from its home slot: scan the queue. Callers
     * ask only after the ledger did not have the id, so this runs for
     * requeued entries and for ids committed a moment ago; it is bounded by
     * the queue depth. (Not gated on the requeued counter: a holder dying
     * between a requeue and that counter would hide the entries.) */
    if (found == RING_NOT_FOUND && ours) {
        for (uint64_t p = r->head; p < r->tail; p++) {
            if (slots[p % r->capacity].txid == txid) {
                *out = slots[p % r->capacity];
                found = RING_FOUND_QUEUED;
                break;
            }
        }
    }
    ring_unlock(r);
    return found;
}
