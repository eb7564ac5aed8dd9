/* Single-producer, single-consumer rings of outcomes for waiting requests;
 * see completion.h for why they are shaped this way. */
#include "common/completion.h"

#include "common/check.h"

size_t completion_bytes(uint32_t n_frontends, uint32_t n_workers)
{
    return (size_t)n_frontends * n_workers * sizeof(struct completion_ring);
}

struct completion_ring *completion_ring_at(void *region, uint32_t n_workers, uint32_t f,
                                           uint32_t w)
{
    return (struct completion_ring *)region + (size_t)f * n_workers + w;
}

int completion_push(struct completion_ring *r, const struct completion *c)
{
    uint64_t tail = r->tail; /* only this process writes it */
    uint64_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
    /* The reader never moves head past a tail it has read. */
    ASSERT(head <= tail && tail - head <= COMPLETION_RING_CAP);
    if (tail - head == COMPLETION_RING_CAP) {
        __atomic_store_n(&r->dropped, r->dropped + 1, __ATOMIC_RELAXED);
        return -1;
    }
    r->rec[tail % COMPLETION_RING_CAP] = *c;
    __atomic_store_n(&r->tail, tail + 1, __ATOMIC_RELEASE);
    return 0;
}

uint32_t completion_pop(struct completion_ring *r, struct completion *out, uint32_t max)
{
    uint64_t head = r->head; /* only this process writes it */
    uint64_t tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
    /* A writer never runs more than a ring ahead (push checks), and a
     * replacement reader starts at the tail (completion_discard). */
    ASSERT(head <= tail && tail - head <= COMPLETION_RING_CAP);
    uint32_t n = 0;
    while (head != tail && n < max)
        out[n++] = r->rec[head++ % COMPLETION_RING_CAP];
    __atomic_store_n(&r->head, head, __ATOMIC_RELEASE);
    return n;
}

void completion_discard(struct completion_ring *r)
{
    __atomic_store_n(&r->head, __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE), __ATOMIC_RELEASE);
}
