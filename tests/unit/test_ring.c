/* Ring queue tests: FIFO order and wrap-around, full and empty, claim /
 * acknowledge / requeue, repair after a lock holder dies mid-operation, and
 * a multi-process stress run in which consumers are killed with SIGKILL. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/ring.h"
#include "tests/unit/unit.h"

static struct ring *ring_new(uint32_t cap, uint32_t slots, uint32_t batch, uint64_t base, size_t *bytes)
{
    *bytes = ring_bytes(cap, slots, batch);
    void *mem = mmap(NULL, *bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    CHECK_EQ_INT(ring_init(mem, *bytes, cap, slots, batch, base, 1), 0);
    return mem;
}

static struct txn_entry entry(int64_t amount)
{
    struct txn_entry e;
    CHECK_EQ_INT(txn_entry_make(&e, "6219 8619 0042 8640", 19, amount), 0);
    return e;
}

static int enqueue_one(struct ring *r, int64_t amount, uint64_t *txid)
{
    struct txn_entry e = entry(amount);
    int rc = ring_enqueue(r, &e, 1);
    if (rc == 0 && txid)
        *txid = e.txid;
    return rc;
}

TEST(ring_empty_claim_returns_nothing)
{
    size_t bytes;
    struct ring *r = ring_new(8, 2, 4, 100, &bytes);
    const struct txn_entry *batch;
    CHECK_EQ_INT(ring_claim(r, 0, 4, &batch), 0);
    CHECK_EQ_INT(ring_pending(r), 0);
    CHECK_EQ_INT(ring_next_txid(r), 100);
    CHECK(ring_from(r, bytes) == r);
    CHECK(ring_from(r, bytes - 1) == NULL);
}

TEST(ring_strided_ids_interleave_and_stop_at_the_span)
{
    size_t bytes = ring_bytes(8, 1, 4);
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    /* Node 5 of stride 64, reserved block 1000: ids 64,005 + 64 k. */
    CHECK_EQ_INT(ring_init(mem, bytes, 8, 1, 4, 64005, 64), 0);
    struct ring *r = mem;
    uint64_t a = 0, b = 0;
    CHECK_EQ_INT(enqueue_one(r, 1, &a), 0);
    CHECK_EQ_INT(enqueue_one(r, 2, &b), 0);
    CHECK(a == 64005 && b == 64069);
    CHECK_EQ_INT(ring_next_txid(r), 64133);
    struct txn_entry got;
    CHECK(ring_find(r, b, &got) == RING_FOUND_QUEUED && got.amount == 2);
    CHECK(ring_find(r, a + 1, &got) == RING_NOT_FOUND); /* node 6's */
    CHECK(ring_find(r, a - 64, &got) == RING_NOT_FOUND);
    /* The last ids of the span: the ring refuses what it cannot number. */
    const struct txn_entry *batch;
    CHECK_EQ_INT(ring_claim(r, 0, 4, &batch), 2);
    ring_ack(r, 0);
    r->head = r->tail = RING_STRIDED_SPAN - 1;
    struct txn_entry two[2] = { entry(3), entry(4) };
    CHECK_EQ_INT(ring_enqueue(r, two, 2), -ENOSPC);
    CHECK_EQ_INT(enqueue_one(r, 5, &a), 0);
    CHECK(a == 64005 + (RING_STRIDED_SPAN - 1) * 64);
    CHECK_EQ_INT(enqueue_one(r, 6, NULL), -ENOSPC);
    /* Strides and bases that could overflow int64 are refused. */
    void *other = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(other != MAP_FAILED);
    CHECK_EQ_INT(ring_init(other, bytes, 8, 1, 4, 1, 65), -EINVAL);
    CHECK_EQ_INT(ring_init(other, bytes, 8, 1, 4, 0, 1), -EINVAL);
    CHECK_EQ_INT(ring_init(other, bytes, 8, 1, 4, (uint64_t)INT64_MAX - RING_STRIDED_SPAN * 32, 64),
                 -EINVAL);
    munmap(other, bytes);
    munmap(mem, bytes);
}

TEST(ring_fifo_across_wraparound)
{
    size_t bytes;
    struct ring *r = ring_new(5, 1, 3, 1, &bytes);
    int64_t next_amount = 1, expect_amount = 1;
    uint64_t expect_txid = 1;
    for (int round = 0; round < 40; round++) {
        int k = 1 + round % 4;
        for (int i = 0; i < k; i++)
            CHECK_EQ_INT(enqueue_one(r, next_amount++, NULL), 0);
        while (ring_pending(r) > 0) {
            const struct txn_entry *batch;
            int n = ring_claim(r, 0, 3, &batch);
            CHECK(n > 0 && n <= 3);
            for (int i = 0; i < n; i++) {
                CHECK_EQ_INT(batch[i].amount, expect_amount++);
                CHECK_EQ_INT(batch[i].txid, expect_txid++);
                CHECK_EQ_INT(batch[i].attempts, 0);
                CHECK(batch[i].queued_at_us > 0);
            }
            ring_ack(r, 0);
        }
    }
    CHECK_EQ_INT(expect_amount, next_amount);
    CHECK(expect_amount > 5 * 10); /* wrapped many times */
}

TEST(ring_full_is_all_or_nothing_and_counts_claims)
{
    size_t bytes;
    struct ring *r = ring_new(4, 2, 4, 1, &bytes);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(enqueue_one(r, 10 + i, NULL), 0);
    CHECK_EQ_INT(enqueue_one(r, 99, NULL), -EAGAIN);
    const struct txn_entry *batch;
    CHECK_EQ_INT(ring_claim(r, 0, 2, &batch), 2);
    /* Claimed entries keep their room until acknowledged. */
    CHECK_EQ_INT(enqueue_one(r, 99, NULL), -EAGAIN);
    ring_ack(r, 0);
    struct txn_entry three[3] = { entry(1), entry(2), entry(3) };
    CHECK_EQ_INT(ring_enqueue(r, three, 3), -EAGAIN); /* only 2 free: none enqueued */
    CHECK_EQ_INT(ring_pending(r), 2);
    CHECK_EQ_INT(ring_enqueue(r, three, 2), 0);
    CHECK_EQ_INT(ring_pending(r), 4);
    CHECK_EQ_INT(three[1].txid, three[0].txid + 1);
    struct ring_stats st;
    ring_stats(r, &st);
    CHECK_EQ_INT(st.high_water, 4);
    CHECK_EQ_INT(st.capacity, 4);
}

TEST(ring_requeue_puts_claim_back_at_head_in_order)
{
    size_t bytes;
    struct ring *r = ring_new(8, 2, 4, 1, &bytes);
    for (int i = 1; i <= 6; i++)
        CHECK_EQ_INT(enqueue_one(r, i, NULL), 0);
    const struct txn_entry *a, *b;
    CHECK_EQ_INT(ring_claim(r, 0, 3, &a), 3); /* 1,2,3 */
    CHECK_EQ_INT(ring_claim(r, 1, 2, &b), 2); /* 4,5 */
    /* An unacknowledged claim is handed back again, not a new batch. */
    CHECK_EQ_INT(ring_claim(r, 0, 3, &a), 3);
    CHECK_EQ_INT(a[0].amount, 1);
    CHECK_EQ_INT(ring_requeue(r, 0), 3);
    CHECK_EQ_INT(ring_requeue(r, 0), 0);
    CHECK_EQ_INT(ring_pending(r), 6);
    const struct txn_entry *c;
    CHECK_EQ_INT(ring_claim(r, 0, 4, &c), 4); /* 1,2,3 requeued, then 6 */
    CHECK_EQ_INT(c[0].amount, 1);
    CHECK_EQ_INT(c[2].amount, 3);
    CHECK_EQ_INT(c[0].attempts, 1);
    CHECK_EQ_INT(c[3].amount, 6);
    CHECK_EQ_INT(c[3].attempts, 0);
    ring_ack(r, 0);
    ring_ack(r, 1);
    CHECK_EQ_INT(ring_pending(r), 0);
    struct ring_stats st;
    ring_stats(r, &st);
    CHECK_EQ_INT(st.requeued, 3);
}

TEST(ring_find_queued_claimed_and_requeued)
{
    size_t bytes;
    struct ring *r = ring_new(8, 2, 4, 500, &bytes);
    uint64_t ids[4];
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(enqueue_one(r, 7 + i, &ids[i]), 0);
    struct txn_entry out;
    CHECK_EQ_INT(ring_find(r, ids[3], &out), RING_FOUND_QUEUED);
    CHECK_EQ_INT(out.amount, 10);
    const struct txn_entry *batch;
    CHECK_EQ_INT(ring_claim(r, 1, 2, &batch), 2);
    CHECK_EQ_INT(ring_find(r, ids[1], &out), RING_FOUND_CLAIMED);
    CHECK_EQ_INT(out.amount, 8);
    CHECK_EQ_INT(ring_claim(r, 0, 1, &batch), 1); /* ids[2] */
    CHECK_EQ_INT(ring_requeue(r, 1), 2);           /* ids[0], ids[1] now before ids[3] */
    CHECK_EQ_INT(ring_find(r, ids[0], &out), RING_FOUND_QUEUED);
    CHECK_EQ_INT(out.attempts, 1);
    CHECK_EQ_INT(ring_find(r, 499, &out), RING_NOT_FOUND);
    CHECK_EQ_INT(ring_find(r, ids[3] + 1, &out), RING_NOT_FOUND);
    ring_ack(r, 0);
    CHECK_EQ_INT(ring_find(r, ids[2], &out), RING_NOT_FOUND);
}

/* A child takes the mutex, leaves a half-done operation and dies. */
static void die_holding_lock(struct ring *r, uint32_t op, uint32_t slot, uint32_t n)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        pthread_mutex_lock(&r->mutex);
        if (op != RING_OP_NONE) {
            r->intent.slot = slot;
            r->intent.head = r->head;
            r->intent.n = n;
            __atomic_store_n(&r->intent.op, op, __ATOMIC_SEQ_CST);
        }
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
}

TEST(ring_repairs_claim_interrupted_by_death)
{
    size_t bytes;
    struct ring *r = ring_new(8, 2, 4, 1, &bytes);
    for (int i = 1; i <= 5; i++)
        CHECK_EQ_INT(enqueue_one(r, i, NULL), 0);
    die_holding_lock(r, RING_OP_CLAIM, 1, 3); /* claim recorded, nothing moved */
    CHECK_EQ_INT(ring_pending(r), 5);          /* lock usable again */
    struct ring_stats st;
    ring_stats(r, &st);
    CHECK_EQ_INT(st.repairs, 1);
    CHECK_EQ_INT(st.claimed, 3); /* the claim was completed, not duplicated */
    CHECK_EQ_INT(st.depth, 2);
    const struct txn_entry *batch;
    CHECK_EQ_INT(ring_claim(r, 1, 4, &batch), 3);
    CHECK_EQ_INT(batch[0].amount, 1);
    CHECK_EQ_INT(batch[2].amount, 3);
    CHECK_EQ_INT(ring_requeue(r, 1), 3);
    CHECK_EQ_INT(ring_pending(r), 5);
}

TEST(ring_repairs_requeue_interrupted_by_death)
{
    size_t bytes;
    struct ring *r = ring_new(8, 2, 4, 1, &bytes);
    for (int i = 1; i <= 5; i++)
        CHECK_EQ_INT(enqueue_one(r, i, NULL), 0);
    const struct txn_entry *batch;
    CHECK_EQ_INT(ring_claim(r, 0, 2, &batch), 2);
    die_holding_lock(r, RING_OP_REQUEUE, 0, 2);
    struct ring_stats st;
    CHECK_EQ_INT(ring_pending(r), 5);
    ring_stats(r, &st);
    CHECK_EQ_INT(st.claimed, 0);
    CHECK_EQ_INT(st.depth, 5);
    CHECK_EQ_INT(ring_claim(r, 1, 4, &batch), 4);
    CHECK_EQ_INT(batch[0].amount, 1);
    CHECK_EQ_INT(batch[0].attempts, 1);
    CHECK_EQ_INT(batch[2].amount, 3);
    CHECK_EQ_INT(batch[2].attempts, 0);
}

/* Regression: a requeue finished by the EOWNERDEAD repair did not count
 * itself in 'requeued', so ring_find, which looks past an entry's home slot
 * only when something was requeued, lost the displaced entries. */
TEST(ring_find_sees_entries_requeued_by_a_repair)
{
    size_t bytes;
    struct ring *r = ring_new(8, 2, 4, 1, &bytes);
    uint64_t ids[5];
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(enqueue_one(r, 1 + i, &ids[i]), 0);
    const struct txn_entry *batch;
    CHECK_EQ_INT(ring_claim(r, 0, 2, &batch), 2); /* ids[0], ids[1] */
    CHECK_EQ_INT(ring_claim(r, 1, 2, &batch), 2); /* ids[2], ids[3] */
    /* Slot 0's entries go back into the slots of ids[2] and ids[3]. */
    die_holding_lock(r, RING_OP_REQUEUE, 0, 2);
    struct txn_entry out;
    CHECK_EQ_INT(ring_find(r, ids[0], &out), RING_FOUND_QUEUED);
    CHECK_EQ_INT(out.amount, 1);
    CHECK_EQ_INT(out.attempts, 1);
    CHECK_EQ_INT(ring_find(r, ids[1], &out), RING_FOUND_QUEUED);
    CHECK_EQ_INT(out.amount, 2);
    CHECK_EQ_INT(ring_find(r, ids[2], &out), RING_FOUND_CLAIMED);
    struct ring_stats st;
    ring_stats(r, &st);
    CHECK_EQ_INT(st.repairs, 1);
    CHECK_EQ_INT(st.requeued, 2);
}

TEST(ring_lock_holder_death_without_intent_changes_nothing)
{
    size_t bytes;
    struct ring *r = ring_new(8, 1, 4, 1, &bytes);
    CHECK_EQ_INT(enqueue_one(r, 1, NULL), 0);
    die_holding_lock(r, RING_OP_NONE, 0, 0); /* e.g. died mid-enqueue before tail */
    CHECK_EQ_INT(enqueue_one(r, 2, NULL), 0);
    CHECK_EQ_INT(ring_pending(r), 2);
    die_holding_lock(r, RING_OP_NONE, 0, 0);
    uint64_t recovered = ring_recover(r);
    CHECK_EQ_INT(recovered, 0);
    struct ring_stats st;
    ring_stats(r, &st);
    CHECK_EQ_INT(st.repairs, 2);
}

TEST(ring_recover_requeues_every_claim)
{
    size_t bytes;
    struct ring *r = ring_new(16, 3, 4, 1, &bytes);
    for (int i = 1; i <= 10; i++)
        CHECK_EQ_INT(enqueue_one(r, i, NULL), 0);
    const struct txn_entry *batch;
    CHECK_EQ_INT(ring_claim(r, 0, 4, &batch), 4);
    CHECK_EQ_INT(ring_claim(r, 2, 3, &batch), 3);
    CHECK_EQ_INT(ring_recover(r), 7);
    struct ring_stats st;
    ring_stats(r, &st);
    CHECK_EQ_INT(st.claimed, 0);
    CHECK_EQ_INT(st.depth, 10);
}

TEST(ring_wait_wakes_on_enqueue)
{
    size_t bytes;
    struct ring *r = ring_new(8, 1, 4, 1, &bytes);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int64_t start = clock_mono_us();
        while (ring_pending(r) == 0 && clock_mono_us() - start < 20000000)
            ring_wait(r, 0, 20000);
        _exit(ring_pending(r) == 1 ? 0 : 3);
    }
    struct timespec ts = { 0, 100 * 1000000L };
    nanosleep(&ts, NULL);
    int64_t start = clock_mono_us();
    CHECK_EQ_INT(enqueue_one(r, 5, NULL), 0);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* A missed wake-up would cost the full 20 s wait. */
    CHECK(clock_mono_us() - start < 10000000);
}

/* --- multi-process stress ------------------------------------------------ */

#define STRESS_ENTRIES 1000000u
#define STRESS_PRODUCERS 4u
#define STRESS_CONSUMERS 4u
#define STRESS_KILLS 3u
#define STRESS_BASE 1000u

struct stress_shared {
    uint32_t producers_done;
    uint32_t freeze_slot;          /* slot + 1: that consumer stops mid-batch */
    uint32_t frozen_slot;          /* slot + 1: it has stopped, holding a claim */
    uint32_t duplicate_deliveries; /* an entry with attempts == 0 delivered twice */
    uint64_t applied;
    uint8_t seen[STRESS_ENTRIES];
};

/* Plays the ledger: applies an entry once; an entry that was requeued may
 * have been applied already (its consumer died before acknowledging), which
 * the ledger detects by txid exactly like this. */
static void stress_apply(struct stress_shared *sh, const struct txn_entry *e)
{
    uint64_t i = e->txid - STRESS_BASE;
    if (i >= STRESS_ENTRIES) {
        __atomic_add_fetch(&sh->duplicate_deliveries, 1, __ATOMIC_RELAXED);
        return;
    }
    uint8_t before = __atomic_fetch_add(&sh->seen[i], 1, __ATOMIC_RELAXED);
    if (before == 0) {
        __atomic_add_fetch(&sh->applied, 1, __ATOMIC_RELAXED);
    } else if (e->attempts == 0) {
        __atomic_add_fetch(&sh->duplicate_deliveries, 1, __ATOMIC_RELAXED);
    } else {
        __atomic_sub_fetch(&sh->seen[i], 1, __ATOMIC_RELAXED); /* replay: no-op */
    }
}

static void stress_consumer(struct ring *r, struct stress_shared *sh, uint32_t slot)
{
    for (;;) {
        const struct txn_entry *batch;
        int n = ring_claim(r, slot, 64, &batch);
        if (n > 0) {
            for (int i = 0; i < n / 2; i++)
                stress_apply(sh, &batch[i]);
            /* Dies here when told to: half its batch applied, none acked. */
            if (__atomic_load_n(&sh->freeze_slot, __ATOMIC_ACQUIRE) == slot + 1) {
                __atomic_store_n(&sh->frozen_slot, slot + 1, __ATOMIC_RELEASE);
                for (;;)
                    pause();
            }
            for (int i = n / 2; i < n; i++)
                stress_apply(sh, &batch[i]);
            ring_ack(r, slot);
        } else if (__atomic_load_n(&sh->producers_done, __ATOMIC_ACQUIRE)) {
            _exit(0);
        } else {
            ring_wait(r, slot, 50);
        }
    }
}

static void stress_producer(struct ring *r, uint32_t id)
{
    uint32_t per = STRESS_ENTRIES / STRESS_PRODUCERS, sent = 0;
    struct txn_entry batch[16];
    while (sent < per) {
        uint32_t k = 1 + (sent + id) % 16;
        if (k > per - sent)
            k = per - sent;
        for (uint32_t i = 0; i < k; i++)
            batch[i] = entry((int64_t)id + 1);
        if (ring_enqueue(r, batch, k) == 0)
            sent += k;
        else
            sched_yield();
    }
    _exit(0);
}

static pid_t spawn_consumer(struct ring *r, struct stress_shared *sh, uint32_t slot)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        stress_consumer(r, sh, slot);
    return pid;
}

TEST_SLOW(ring_stress_multiprocess_exactly_once_with_kills, 240)
{
    size_t bytes;
    struct ring *r = ring_new(4096, STRESS_CONSUMERS + STRESS_KILLS, 64, STRESS_BASE, &bytes);
    struct stress_shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED);
    pid_t consumers[STRESS_CONSUMERS], producers[STRESS_PRODUCERS];
    uint32_t consumer_slot[STRESS_CONSUMERS];
    for (uint32_t i = 0; i < STRESS_CONSUMERS; i++) {
        consumer_slot[i] = i;
        consumers[i] = spawn_consumer(r, sh, i);
    }
    for (uint32_t i = 0; i < STRESS_PRODUCERS; i++) {
        producers[i] = fork();
        CHECK(producers[i] >= 0);
        if (producers[i] == 0)
            stress_producer(r, i);
    }
    /* At a few points of progress, stop a consumer in the middle of a batch
     * (half applied, nothing acknowledged) and kill it; requeue its claim as
     * the master does and start a replacement on a fresh slot, so only the
     * requeue can bring the unapplied half back. */
    uint32_t kills = 0, requeued = 0, next_slot = STRESS_CONSUMERS;
    while (kills < STRESS_KILLS) {
        uint64_t done = __atomic_load_n(&sh->applied, __ATOMIC_RELAXED);
        if (done >= (uint64_t)STRESS_ENTRIES * (kills + 1) / (STRESS_KILLS + 1)) {
            uint32_t victim = kills % STRESS_CONSUMERS;
            uint32_t victim_slot = consumer_slot[victim];
            __atomic_store_n(&sh->freeze_slot, victim_slot + 1, __ATOMIC_RELEASE);
            int64_t start = clock_mono_us();
            while (__atomic_load_n(&sh->frozen_slot, __ATOMIC_ACQUIRE) != victim_slot + 1)
                CHECK(clock_mono_us() - start < 30000000);
            kill(consumers[victim], SIGKILL);
            CHECK(waitpid(consumers[victim], NULL, 0) == consumers[victim]);
            uint32_t back = ring_requeue(r, victim_slot);
            CHECK(back > 0);
            requeued += back;
            __atomic_store_n(&sh->freeze_slot, 0, __ATOMIC_RELEASE);
            __atomic_store_n(&sh->frozen_slot, 0, __ATOMIC_RELEASE);
            consumer_slot[victim] = next_slot;
            consumers[victim] = spawn_consumer(r, sh, next_slot++);
            kills++;
        }
        struct timespec ts = { 0, 2 * 1000000L };
        nanosleep(&ts, NULL);
    }
    for (uint32_t i = 0; i < STRESS_PRODUCERS; i++) {
        int status;
        CHECK(waitpid(producers[i], &status, 0) == producers[i]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    __atomic_store_n(&sh->producers_done, 1, __ATOMIC_RELEASE);
    ring_wake_all(r);
    for (uint32_t i = 0; i < STRESS_CONSUMERS; i++) {
        int status;
        CHECK(waitpid(consumers[i], &status, 0) == consumers[i]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    CHECK_EQ_INT(kills, STRESS_KILLS);
    CHECK_EQ_INT(sh->duplicate_deliveries, 0);
    CHECK_EQ_INT(ring_pending(r), 0);
    CHECK_EQ_INT(sh->applied, STRESS_ENTRIES);
    for (uint32_t i = 0; i < STRESS_ENTRIES; i++)
        if (sh->seen[i] != 1)
            CHECK_EQ_INT(sh->seen[i], 1);
    fprintf(stderr, "  stress: %u entries, %u consumer kills, %u entries requeued\n", STRESS_ENTRIES,
            kills, requeued);
}

/* A segment left by someone else, or corrupted, must be refused before any
 * offset, count or intent in it is used (a claim record pointing outside
 * the segment crashed the adopting master; a planted intent is a write at a
 * chosen address). */
TEST(ring_validate_refuses_what_does_not_fit_the_geometry)
{
    size_t bytes;
    struct ring *r = ring_new(16, 2, 4, 1, &bytes);
    for (int i = 1; i <= 6; i++)
        CHECK_EQ_INT(enqueue_one(r, i, NULL), 0);
    const struct txn_entry *batch;
    CHECK_EQ_INT(ring_claim(r, 1, 4, &batch), 4);
    char why[200];
    CHECK_EQ_INT(ring_validate(r, bytes, 0, why, sizeof why), 0);

    struct ring saved = *r;
    struct ring_claim *claims = (struct ring_claim *)((char *)r + ((sizeof(struct ring) + 63) & ~63ul));
    struct ring_claim claim1 = claims[1];

    claims[1].entries_off = (uint64_t)1 << 40;
    CHECK_EQ_INT(ring_validate(r, bytes, 1, why, sizeof why), -1);
    CHECK(strstr(why, "claim record 1") != NULL);
    CHECK(ring_from(r, bytes) == NULL);
    claims[1] = claim1;

    claims[1].count = 5; /* more than batch_max */
    CHECK_EQ_INT(ring_validate(r, bytes, 0, why, sizeof why), -1);
    CHECK_EQ_INT(ring_validate(r, bytes, 1, why, sizeof why), 0); /* positions not judged live */
    claims[1] = claim1;

    r->n_slots = 0x7fffffff;
    CHECK_EQ_INT(ring_validate(r, bytes, 1, why, sizeof why), -1);
    *r = saved;
    r->entries_off += 64;
    CHECK_EQ_INT(ring_validate(r, bytes, 1, why, sizeof why), -1);
    *r = saved;
    r->head = r->tail + 1;
    CHECK_EQ_INT(ring_validate(r, bytes, 0, why, sizeof why), -1);
    *r = saved;
    r->tail = r->head + 17;
    CHECK_EQ_INT(ring_validate(r, bytes, 0, why, sizeof why), -1);
    *r = saved;

    /* Intents: a slot out of range, a count over the batch, a requeue
     * below position 0, a claim past the tail. */
    const struct ring_intent bad[] = {
        { RING_OP_CLAIM, 7, 4, 1, 0 },
        { RING_OP_REQUEUE, 0, 4, 9, 0 },
        { RING_OP_REQUEUE, 1, 4, 4, 0 } /* head 4 - 4 is fine... */,
        { RING_OP_CLAIM, 0, 5, 4, 0 },
        { 9, 0, 4, 1, 0 },
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        r->intent = bad[k];
        int rc = ring_validate(r, bytes, 0, why, sizeof why);
        if (k == 2) {
            CHECK_EQ_INT(rc, 0); /* ...and matches the state: a requeue about to run */
            continue;
        }
        CHECK_EQ_INT(rc, -1);
        CHECK(strstr(why, "interrupted queue operation") != NULL);
    }
    r->intent = saved.intent;
    r->intent.op = RING_OP_NONE;
    CHECK_EQ_INT(ring_validate(r, bytes, 0, why, sizeof why), 0);
}
