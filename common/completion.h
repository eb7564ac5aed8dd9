/* Outcomes travelling back from workers to the frontends that hold a request
 * open for them (Prefer: wait, POST /accounts). One single-producer,
 * single-consumer ring per (frontend, worker) pair lives in the shared
 * segment; after a batch commits, the worker appends the outcome of every
 * entry that names a waiter and writes once to that frontend's eventfd
 * (created by the master before forking, inherited by every child). The
 * frontend's event loop reads the eventfd, drains its rings and answers.
 *
 * WHY SPSC PER PAIR: every ring has exactly one writer process (the worker
 * of that slot; a replacement continues where the dead one stopped) and one
 * reader (the frontend of that slot), so a process dying mid-operation can
 * only lose the record it was writing, never wedge the ring: a record is
 * published by a single release store of 'tail' after it is complete.
 *
 * NOTHING DEPENDS ON DELIVERY. An outcome lost (ring full, writer died
 * between COMMIT and publishing, frontend replaced) only means the waiting
 * request times out with 202; the transaction is in the ledger either way
 * and GET /transaction/<id> shows it. The worker never blocks on a ring. */
#ifndef TXP_COMPLETION_H
#define TXP_COMPLETION_H

#include <stddef.h>
#include <stdint.h>

#define COMPLETION_RING_CAP 4096 /* records per (frontend, worker) pair; power of two */

/* COMPLETION_LOOKUP: the worker found the entry already recorded (a replay
 * after a crash) and does not know its outcome; the frontend reads it from
 * the ledger. */
enum completion_flags { COMPLETION_LOOKUP = 1 };

struct completion {
    uint64_t txid;
    int64_t balance_after;         /* applied: the (from) account's new balance */
    int64_t counterparty_balance;  /* applied transfer: the "to" account's new balance */
    uint64_t original_txid;        /* duplicate / key reused: the first request's id */
    int64_t applied_at_us;         /* wall clock stored in the ledger row */
    int64_t committed_at_us;       /* wall clock right after COMMIT */
    uint8_t status;                /* enum txn_status */
    uint8_t reason;                /* enum txn_reason */
    uint8_t flags;                 /* enum completion_flags */
    uint8_t pad[13];
};
_Static_assert(sizeof(struct completion) == 64, "completion must stay 64 bytes");

struct completion_ring {
    uint64_t tail __attribute__((aligned(64))); /* writer: records published */
    uint64_t head __attribute__((aligned(64))); /* reader: records consumed */
    uint64_t dropped;                           /* writer: records lost to a full ring */
    struct completion rec[COMPLETION_RING_CAP] __attribute__((aligned(64)));
};

/* Bytes for the rings of n_frontends x n_workers pairs. */
size_t completion_bytes(uint32_t n_frontends, uint32_t n_workers);
/* Ring of (frontend f, worker w) in a region of n_workers columns. */
struct completion_ring *completion_ring_at(void *region, uint32_t n_workers, uint32_t f,
                                           uint32_t w);

/* Worker side: appends one record; 0, or -1 when the ring is full (the
 * record is dropped and counted). */
int completion_push(struct completion_ring *r, const struct completion *c);
/* Frontend side: copies up to max published records into out and consumes
 * them; returns how many. */
uint32_t completion_pop(struct completion_ring *r, struct completion *out, uint32_t max);
/* Frontend side, at start: forgets records meant for a previous process in
 * this slot (nobody waits for them any more). */
void completion_discard(struct completion_ring *r);

#endif
