/* Bounded multi-producer, multi-consumer queue of txn_entry records living in
 * shared memory, with claim/acknowledge semantics so that no entry is lost or
 * handed out twice when any process dies at any instruction.
 *
 * LAYOUT (one contiguous region, placed by shm.c inside the segment)
 *
 *   struct ring            header: robust mutex, head/tail, intent record
 *   struct ring_claim[n]   one in-flight record per consumer slot (worker)
 *   struct txn_entry[cap]  the slots, indexed by position % cap
 *
 * head and tail are absolute positions (never wrap); tail - head is the number
 * of queued entries. An entry enqueued at position p gets txid = txid_base +
 * p * txid_stride, so a txid names its slot until the entry leaves the ring.
 * A stride above 1 (several nodes on one ledger, common/node.h) interleaves
 * the ids of the nodes; such a ring hands out at most RING_STRIDED_SPAN ids,
 * the span its node reserved in the ledger for it.
 *
 * OWNERSHIP
 *   - Every field except the wake-up hints is read and written only with the
 *     mutex held (PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST).
 *   - A queued entry lives in exactly one place: the ring between head and
 *     tail, or the claim record of one consumer slot.
 *   - Free room = cap - (tail - head) - sum(claim counts): claimed entries keep
 *     their room reserved, so a requeue always fits.
 *
 * CRASH SAFETY
 *   Enqueue writes the new slots first and publishes them with a single store
 *   of tail: dying before that store leaves the ring unchanged (the producer
 *   never answered its client, so nothing was promised).
 *   Acknowledge is a single store (claim count = 0).
 *   Claim and requeue change two places (ring head and a claim record). Before
 *   touching either, the lock holder writes an intent record {op, slot, head,
 *   n} and publishes it by storing op last. The operation is written as a
 *   redo function of the intent alone, so it can be re-run from the start any
 *   number of times with the same result. When a process dies holding the
 *   mutex, the next locker gets EOWNERDEAD, re-runs the pending intent (if
 *   any), marks the mutex consistent and carries on. A process dying during
 *   that repair simply leaves the same intent for the next locker.
 *
 * WAKE-UPS
 *   Consumers sleep on a futex word (wake_seq) with a timeout; producers bump
 *   it after publishing and wake only if some slot says it is sleeping. The
 *   futex is a hint, never a count: a consumer always rechecks the ring, and a
 *   lost wake-up costs at most one timeout, never an entry.
 */
#ifndef TXP_RING_H
#define TXP_RING_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common/txn.h"

#define RING_MAGIC 0x52494e4754585031ULL /* "RINGTXP1" */
#define RING_MAX_SLOTS 64
#define RING_MAX_BATCH 4096
#define RING_MAX_CAPACITY (1u << 22)
#define RING_MAX_STRIDE 64
#define RING_STRIDED_SPAN (1ull << 40)

enum ring_op { RING_OP_NONE = 0, RING_OP_CLAIM = 1, RING_OP_REQUEUE = 2 };

struct ring_intent {
    uint32_t op;   /* enum ring_op; stored last when set, first when cleared */
    uint32_t slot;
    uint64_t head; /* ring head before the operation */
    uint32_t n;
    uint32_t pad;
};

struct ring_claim {
    uint32_t count;       /* entries claimed and not yet acknowledged */
    uint32_t sleeping;    /* wake-up hint: this slot's consumer waits on the futex */
    uint64_t claims;      /* statistics: batches claimed through this slot */
    uint64_t entries_off; /* offset of this slot's batch_max entries from the ring */
    uint8_t pad[40];
};

struct ring {
    uint64_t magic;
    uint32_t capacity;
    uint32_t n_slots;
    uint32_t batch_max;
    uint32_t txid_stride; /* 1 (or 0, in a segment from before strides) or a node stride */
    uint64_t txid_base;
    uint64_t bytes;       /* size of the whole region, for validation */
    uint64_t entries_off; /* offset of the slot array from the ring */

    pthread_mutex_t mutex;
    uint64_t head;
    uint64_t tail;
    uint64_t high_water;  /* largest tail - head seen */
    uint64_t repairs;     /* EOWNERDEAD recoveries performed */
    uint64_t requeued;    /* entries put back after a consumer died */
    struct ring_intent intent;

    uint32_t wake_seq __attribute__((aligned(64))); /* futex word */
};

/* Bytes needed for a ring with these dimensions. */
size_t ring_bytes(uint32_t capacity, uint32_t n_slots, uint32_t batch_max);
/* Initialises a ring in zeroed shared memory. Returns 0 or -errno. */
int ring_init(void *mem, size_t bytes, uint32_t capacity, uint32_t n_slots, uint32_t batch_max,
              uint64_t txid_base, uint32_t txid_stride);
/* Checks a region against its own geometry before anything in it is used:
 * magic, sizes, the offset of the slot array and of every claim record and,
 * unless layout_only, the positions, claim counts and any interrupted
 * operation's intent record (exact only while no process uses the ring:
 * a new master adopting it; a live ring's positions move). Returns 0, or -1
 * with a one-line reason in why. */
int ring_validate(const struct ring *r, size_t bytes, int layout_only, char *why, size_t len);
/* ring_validate in full; returns the ring or NULL. */
struct ring *ring_from(void *mem, size_t bytes);

/* Appends n entries, all or nothing; assigns each a txid and the current
 * wall-clock queued_at if it has none. Returns 0, or -EAGAIN when there is no
 * room for all n (a normal condition: the caller answers 503). */
int ring_enqueue(struct ring *r, struct txn_entry *entries, uint32_t n);

/* Moves up to max entries from the head into slot's claim record and returns
 * how many (0 if the ring is empty). If the slot still holds an unacknowledged
 * claim, returns that claim again instead. *batch points into shared memory
 * and stays valid until ring_ack. */
int ring_claim(struct ring *r, uint32_t slot, uint32_t max, const struct txn_entry **batch);
/* Drops slot's claim after its entries are durably applied. */
void ring_ack(struct ring *r, uint32_t slot);
/* Puts slot's unacknowledged claim back at the head (in order, attempts + 1).
 * For the supervisor after the slot's consumer died. Returns entries moved. */
uint32_t ring_requeue(struct ring *r, uint32_t slot);

/* For a new supervisor adopting the ring of a dead instance: repairs any
 * interrupted operation and requeues every claim. Returns entries requeued. */
uint64_t ring_recover(struct ring *r);

/* Blocks up to timeout_ms until the ring may be non-empty. Returns at once if
 * it already is. Interrupted by signals (returns early). */
void ring_wait(struct ring *r, uint32_t slot, int timeout_ms);
/* Wakes every sleeping consumer (used at shutdown). */
void ring_wake_all(struct ring *r);

/* Lock-free snapshot for statistics (may be slightly stale). */
struct ring_stats {
    uint64_t depth, claimed, capacity, high_water, repairs, requeued, head, tail, txid_base;
};
void ring_stats(const struct ring *r, struct ring_stats *out);
/* Exact count of queued + claimed entries (takes the lock). */
uint64_t ring_pending(struct ring *r);

enum ring_find_result { RING_NOT_FOUND = 0, RING_FOUND_QUEUED = 1, RING_FOUND_CLAIMED = 2 };
/* Looks a txid up among queued and claimed entries; copies it to *out. */
enum ring_find_result ring_find(struct ring *r, uint64_t txid, struct txn_entry *out);
/* The txid the next enqueued entry will get. */
uint64_t ring_next_txid(const struct ring *r);
/* The step between two consecutive txids of this ring (1 on a single node). */
uint32_t ring_txid_stride(const struct ring *r);
/* Batches slot has claimed so far: a statistic, read without the lock, by
 * which a worker sees whether another one is making progress. */
uint64_t ring_slot_claims(const struct ring *r, uint32_t slot);
/* 1 if slot holds a claim it has not acknowledged yet (read without the
 * lock, like ring_slot_claims). */
int ring_slot_busy(const struct ring *r, uint32_t slot);

#endif
