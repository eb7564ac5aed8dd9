/* libFuzzer target for the queue entry and the ring that carries it between
 * processes. The input is a script run against a small ring in malloc'd
 * memory and, alongside, against a plain model of what the ring promises
 * (ring.h). After every step the two must agree.
 *
 * INPUT
 *   byte 0..3   capacity 1..16, consumer slots 1..4, batch_max 1..8, txid base
 *               (its low bit also picks the txid stride: 1, or 64 as on a node)
 *   then ops    one byte each, op = b & 7, arg = b >> 3 (some read more bytes):
 *     0, 1  enqueue 1..5 made-up entries (all or nothing)
 *     2     claim for a slot (the next byte gives max); slot may be invalid
 *     3     acknowledge a slot
 *     4     requeue a slot (its consumer "died")
 *     5     recover (a new supervisor adopting the ring)
 *     6     a thread takes the lock and exits holding it in the middle of an
 *           enqueue, claim or requeue; the next locker must repair (the
 *           first MAX_DEATHS of these only; later ones do nothing)
 *     7     the next 128 bytes are an arbitrary txn_entry: txn_entry_check
 *           must agree with the field rules; a valid one is enqueued and must
 *           come back from a claim byte for byte (txid and queued_at aside)
 *
 * RULES CHECKED
 *   - FIFO: a claim returns the oldest queued entries, in order; a requeue
 *     puts a claim back in front, in order, attempts + 1.
 *   - Conservation: ring_pending and ring_stats equal the model's queued +
 *     claimed counts; enqueue fails (-EAGAIN) exactly when there is no room.
 *   - Nothing handed out twice: a txid is claimed by one slot at a time and
 *     never again once acknowledged; txids step by the stride from the
 *     base, unique; ids between two steps are never found.
 *   - ring_find finds exactly the live entries, with their contents.
 *   - Every entry that comes out of the ring passes txn_entry_check.
 *
 * The "dies holding the lock" step replays the stores of ring.c's claim and
 * requeue in their order and stops after a chosen one, which is what a
 * process killed there leaves behind; it is the white-box part of this file
 * and must follow ring.c if that order changes. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/ring.h"
#include "common/txn.h"

#define MAX_CAP 16
#define MAX_SLOTS 4
#define MAX_BATCH 8
#define MAX_DEATHS 4 /* lock holders that die, per input */

#define REQUIRE(cond)                                                                   \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "fuzz_entry: %s:%d: rule broken: %s\n", __FILE__, __LINE__, \
                    #cond);                                                             \
            abort();                                                                    \
        }                                                                               \
    } while (0)

enum life { LIFE_QUEUED = 1, LIFE_CLAIMED = 2, LIFE_ACKED = 3 };

struct model {
    struct ring *r;
    size_t bytes;
    uint32_t cap, n_slots, batch_max;
    uint64_t base;
    uint32_t stride;
    uint64_t enqueued;                    /* entries ever enqueued = ring tail */
    struct txn_entry queue[MAX_CAP];      /* queue[0] is the head */
    uint32_t depth;
    struct txn_entry claim[MAX_SLOTS][MAX_BATCH];
    uint32_t claimed[MAX_SLOTS];
    uint8_t *life;                        /* enum life by txid - base */
    size_t life_cap;
    uint64_t repairs;
    uint32_t deaths;
    int64_t next_amount;
};

struct script {
    const uint8_t *p, *end;
};

static int next_byte(struct script *s, uint8_t *b)
{
    if (s->p == s->end)
        return 0;
    *b = *s->p++;
    return 1;
}

static uint32_t pending(const struct model *m)
{
    uint32_t n = m->depth;
    for (uint32_t i = 0; i < m->n_slots; i++)
        n += m->claimed[i];
    return n;
}


static uint8_t *life(struct model *m, uint64_t txid)
{
    REQUIRE(txid >= m->base && (txid - m->base) % m->stride == 0 &&
            (txid - m->base) / m->stride < m->enqueued);
    return &m->life[(txid - m->base) / m->stride];
}

static int same_entry(const struct txn_entry *a, const struct txn_entry *b)
{
    return memcmp(a, b, sizeof *a) == 0; /* 256 bytes, no padding */
}

/* A card field as txn.h wants it: 1..TXN_CARD_MAX digits/spaces, at least
 * one digit, NUL right after. */
static int card_rules_hold(const char *card, unsigned len)
{
    if (len < 1 || len > TXN_CARD_MAX || card[len] != '\0')
        return 0;
    int digits = 0;
    for (unsigned i = 0; i < len; i++) {
        if (card[i] >= '0' && card[i] <= '9')
            digits++;
        else if (card[i] != ' ')
            return 0;
    }
    return digits > 0;
}

/* The field rules of txn.h, restated. */
static int entry_rules_hold(const struct txn_entry *e)
{
    if (e->txid == 0 || !card_rules_hold(e->card, e->card_len))
        return 0;
    if (e->key_len > TXN_KEY_MAX || e->key[e->key_len] != '\0')
        return 0;
    for (unsigned i = 0; i < e->key_len; i++)
        if (e->key[i] < 0x20 || e->key[i] > 0x7e)
            return 0;
    switch (e->kind) {
    case TXN_KIND_AMOUNT:
        return e->amount != 0 && e->amount >= -TXN_AMOUNT_LIMIT && e->amount <= TXN_AMOUNT_LIMIT;
    case TXN_KIND_TRANSFER:
        return card_rules_hold(e->card2, e->card2_len) && e->amount > 0 &&
               e->amount <= TXN_AMOUNT_LIMIT;
    case TXN_KIND_OPEN:
        return e->amount >= 0 && e->amount <= TXN_AMOUNT_LIMIT;
    default:
        return 0;
    }
}

static void require_checks_out(const struct txn_entry *e)
{
    const char *why = NULL;
    REQUIRE(txn_entry_check(e, &why) == 0);
}

static void check_all(struct model *m)
{
    struct ring *r = m->r;
    REQUIRE(ring_pending(r) == pending(m));
    struct ring_stats st;
    ring_stats(r, &st);
    REQUIRE(st.depth == m->depth);
    REQUIRE(st.claimed == pending(m) - m->depth);
    REQUIRE(st.tail == m->enqueued && st.tail - st.head == m->depth);
    REQUIRE(st.capacity == m->cap && st.txid_base == m->base);
    REQUIRE(st.repairs == m->repairs);
    REQUIRE(ring_next_txid(r) == m->base + m->enqueued * m->stride);
    REQUIRE(ring_txid_stride(r) == m->stride);
    REQUIRE(ring_from(r, m->bytes) == r);

    struct txn_entry got;
    for (uint32_t i = 0; i < m->depth; i++) {
        REQUIRE(ring_find(r, m->queue[i].txid, &got) == RING_FOUND_QUEUED);
        REQUIRE(same_entry(&got, &m->queue[i]));
    }
    for (uint32_t s = 0; s < m->n_slots; s++) {
        for (uint32_t i = 0; i < m->claimed[s]; i++) {
            REQUIRE(ring_find(r, m->claim[s][i].txid, &got) == RING_FOUND_CLAIMED);
            REQUIRE(same_entry(&got, &m->claim[s][i]));
        }
    }
    /* Recently acknowledged and never issued ids are not found. */
    uint64_t from = m->enqueued > 2 * MAX_CAP ? m->enqueued - 2 * MAX_CAP : 0;
    for (uint64_t k = from; k < m->enqueued; k++)
        if (m->life[k] == LIFE_ACKED)
            REQUIRE(ring_find(r, m->base + k * m->stride, &got) == RING_NOT_FOUND);
    REQUIRE(ring_find(r, m->base + m->enqueued * m->stride, &got) == RING_NOT_FOUND);
    REQUIRE(ring_find(r, m->base - 1, &got) == RING_NOT_FOUND);
    if (m->stride > 1 && m->depth > 0) /* between two ids of this ring: another node's */
        REQUIRE(ring_find(r, m->queue[0].txid + 1, &got) == RING_NOT_FOUND);
}

/* Enqueues n entries (copies kept to check what the ring did to them). */
static void enqueue(struct model *m, struct txn_entry *batch, uint32_t n)
{
    struct txn_entry orig[5];
    REQUIRE(n >= 1 && n <= 5);
    memcpy(orig, batch, n * sizeof *batch);
    int rc = ring_enqueue(m->r, batch, n);
    if (pending(m) + n > m->cap) {
        REQUIRE(rc == -EAGAIN);
        REQUIRE(memcmp(orig, batch, n * sizeof *batch) == 0); /* all or nothing */
        return;
    }
    REQUIRE(rc == 0);
    REQUIRE(m->enqueued + n <= m->life_cap);
    for (uint32_t i = 0; i < n; i++) {
        REQUIRE(batch[i].txid == m->base + (m->enqueued + i) * m->stride);
        if (orig[i].queued_at_us == 0)
            REQUIRE(batch[i].queued_at_us > 0);
        else
            REQUIRE(batch[i].queued_at_us == orig[i].queued_at_us);
        orig[i].txid = batch[i].txid;
        orig[i].queued_at_us = batch[i].queued_at_us;
        REQUIRE(same_entry(&orig[i], &batch[i]));
        m->queue[m->depth++] = batch[i];
        m->life[m->enqueued + i] = LIFE_QUEUED;
    }
    m->enqueued += n;
}

static void op_enqueue(struct model *m, uint8_t arg)
{
    static const char *const cards[] = { "1", "6219 8619 0042 8640",
                                         "12345678901234567890123456789012", " 0 " };
    struct txn_entry batch[5];
    uint32_t n = 1 + arg % 5;
    for (uint32_t i = 0; i < n; i++) {
        int64_t k = ++m->next_amount;
        int64_t amount = (arg & 8) && i == 0 ? TXN_AMOUNT_LIMIT : k;
        const char *card = cards[(arg + i) % 4];
        REQUIRE(txn_entry_make(&batch[i], card, strlen(card), (k & 1) ? -amount : amount) == 0);
        if (arg & 16)
            batch[i].queued_at_us = 1000 + k; /* already stamped: kept */
    }
    enqueue(m, batch, n);
}

/* Moves n entries from the model's head to slot's claim. */
static void model_claim(struct model *m, uint32_t slot, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *l = life(m, m->queue[i].txid);
        REQUIRE(*l == LIFE_QUEUED); /* never handed out twice */
        *l = LIFE_CLAIMED;
        m->claim[slot][i] = m->queue[i];
    }
    memmove(m->queue, m->queue + n, (m->depth - n) * sizeof m->queue[0]);
    m->depth -= n;
    m->claimed[slot] = n;
}

static void model_requeue(struct model *m, uint32_t slot)
{
    uint32_t n = m->claimed[slot];
    REQUIRE(m->depth + n <= m->cap);
    memmove(m->queue + n, m->queue, m->depth * sizeof m->queue[0]);
    for (uint32_t i = 0; i < n; i++) {
        m->queue[i] = m->claim[slot][i];
        m->queue[i].attempts++;
        *life(m, m->queue[i].txid) = LIFE_QUEUED;
    }
    m->depth += n;
    m->claimed[slot] = 0;
}

static void op_claim(struct model *m, uint32_t slot, uint32_t max)
{
    const struct txn_entry *batch = NULL;
    int rc = ring_claim(m->r, slot, max, &batch);
    if (slot >= m->n_slots) {
        REQUIRE(rc == -EINVAL);
        return;
    }
    if (m->claimed[slot] == 0) {
        uint32_t want = m->depth;
        if (want > max)
            want = max;
        if (want > m->batch_max)
            want = m->batch_max;
        REQUIRE(rc == (int)want);
        model_claim(m, slot, want);
    }
    /* A slot that still holds a claim gets the same claim back. */
    REQUIRE(rc == (int)m->claimed[slot]);
    for (uint32_t i = 0; i < m->claimed[slot]; i++) {
        REQUIRE(same_entry(&batch[i], &m->claim[slot][i]));
        require_checks_out(&batch[i]);
    }
}

static void op_ack(struct model *m, uint32_t slot)
{
    ring_ack(m->r, slot);
    if (slot >= m->n_slots)
        return;
    for (uint32_t i = 0; i < m->claimed[slot]; i++)
        *life(m, m->claim[slot][i].txid) = LIFE_ACKED;
    m->claimed[slot] = 0;
}

static void op_requeue(struct model *m, uint32_t slot)
{
    uint32_t n = ring_requeue(m->r, slot);
    if (slot >= m->n_slots) {
        REQUIRE(n == 0);
        return;
    }
    REQUIRE(n == m->claimed[slot]);
    model_requeue(m, slot);
}

static void op_recover(struct model *m)
{
    uint64_t n = ring_recover(m->r);
    REQUIRE(n == pending(m) - m->depth);
    for (uint32_t s = 0; s < m->n_slots; s++)
        model_requeue(m, s);
}

/* --- a lock holder that dies part-way ------------------------------------ */

#define ALIGN64(x) (((x) + 63u) & ~(size_t)63u)

struct death {
    struct ring *r;
    uint32_t op;     /* RING_OP_NONE: an enqueue that never published */
    uint32_t slot, n;
    uint32_t stores; /* how many of the operation's stores happen */
};

static struct ring_claim *claims_of(struct ring *r)
{
    return (struct ring_claim *)((char *)r + ALIGN64(sizeof(struct ring)));
}

static struct txn_entry *slots_of(struct ring *r)
{
    return (struct txn_entry *)((char *)r + r->entries_off);
}

/* Counts down the stores a dying holder still gets to make. */
static int take(uint32_t *left)
{
    if (*left == 0)
        return 0;
    (*left)--;
    return 1;
}

/* The stores of redo_claim / redo_requeue in ring.c, in order: the entry
 * copies, then the two state fields. */
static void *die_holding_lock(void *arg)
{
    struct death *d = arg;
    struct ring *r = d->r;
    REQUIRE(pthread_mutex_lock(&r->mutex) == 0);
    struct ring_claim *c = &claims_of(r)[d->slot];
    struct txn_entry *batch = (struct txn_entry *)((char *)r + c->entries_off);
    struct txn_entry *slots = slots_of(r);
    uint32_t left = d->stores;
    if (d->op == RING_OP_NONE) {
        /* Enqueue writes slots past the tail, then would publish the tail. */
        for (uint32_t i = 0; i < d->n; i++)
            memset(&slots[(r->tail + i) % r->capacity], 0xEE, sizeof(struct txn_entry));
        return NULL;
    }
    uint64_t head = r->head;
    r->intent.slot = d->slot;
    r->intent.head = head;
    r->intent.n = d->n;
    __atomic_store_n(&r->intent.op, d->op, __ATOMIC_SEQ_CST);
    if (d->op == RING_OP_CLAIM) {
        for (uint32_t i = 0; i < d->n && take(&left); i++)
            batch[i] = slots[(head + i) % r->capacity];
        if (take(&left))
            c->count = d->n;
        if (take(&left))
            r->head = head + d->n;
    } else {
        for (uint32_t i = 0; i < d->n && take(&left); i++) {
            struct txn_entry *dst = &slots[(head - d->n + i) % r->capacity];
            *dst = batch[i];
            dst->attempts = batch[i].attempts + 1;
        }
        if (take(&left))
            r->head = head - d->n;
        if (take(&left))
            c->count = 0;
    }
    return NULL; /* exits holding the robust mutex */
}

static void op_die(struct model *m, uint8_t arg, struct script *s)
{
    uint8_t b1 = 0, b2 = 0;
    next_byte(s, &b1);
    next_byte(s, &b2);
    /* A thread costs more than every other step together: cap them. */
    if (m->deaths == MAX_DEATHS)
        return;
    m->deaths++;
    struct death d = { .r = m->r, .op = RING_OP_NONE, .slot = b1 % m->n_slots };
    switch (arg % 3) {
    case 1:
        if (m->claimed[d.slot] == 0 && m->depth > 0) {
            d.op = RING_OP_CLAIM;
            d.n = 1 + b2 % m->batch_max;
            if (d.n > m->depth)
                d.n = m->depth;
        }
        break;
    case 2:
        if (m->claimed[d.slot] > 0) {
            d.op = RING_OP_REQUEUE;
            d.n = m->claimed[d.slot];
        }
        break;
    }
    if (d.op == RING_OP_NONE) {
        uint32_t room = m->cap - pending(m);
        d.n = b2 % 6 < room ? b2 % 6 : room;
    } else {
        d.stores = (uint32_t)(arg / 3) % (d.n + 3);
    }
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, die_holding_lock, &d) == 0);
    REQUIRE(pthread_join(t, NULL) == 0);
    /* The next locker repairs: the operation happens once, whole. */
    (void)ring_pending(m->r);
    m->repairs++;
    if (d.op == RING_OP_CLAIM)
        model_claim(m, d.slot, d.n);
    else if (d.op == RING_OP_REQUEUE)
        model_requeue(m, d.slot);
}

static void op_record(struct model *m, struct script *s)
{
    struct txn_entry e;
    memset(&e, 0, sizeof e);
    size_t n = (size_t)(s->end - s->p) < sizeof e ? (size_t)(s->end - s->p) : sizeof e;
    memcpy(&e, s->p, n);
    s->p += n;
    const char *why = NULL;
    int rc = txn_entry_check(&e, &why);
    REQUIRE(rc == 0 || rc == -1);
    REQUIRE(rc == (entry_rules_hold(&e) ? 0 : -1));
    if (rc != 0) {
        REQUIRE(why != NULL && why[0] != '\0');
        return;
    }
    enqueue(m, &e, 1); /* must come back unchanged but for txid/queued_at */
}

static void run(struct model *m, struct script *s)
{
    uint8_t b, max;
    while (next_byte(s, &b)) {
        uint8_t arg = b >> 3;
        uint32_t slot = arg % (m->n_slots + 1); /* n_slots is an invalid slot */
        switch (b & 7) {
        case 0:
        case 1:
            op_enqueue(m, arg);
            break;
        case 2:
            max = 0;
            next_byte(s, &max);
            op_claim(m, slot, max % (MAX_BATCH + 2));
            break;
        case 3:
            op_ack(m, slot);
            break;
        case 4:
            op_requeue(m, slot);
            break;
        case 5:
            op_recover(m);
            break;
        case 6:
            op_die(m, arg, s);
            break;
        case 7:
            op_record(m, s);
            break;
        }
        check_all(m);
    }
}

/* Every issued txid is in exactly one state, and the live ones are exactly
 * those the model holds: no id was issued twice. */
static void check_ids(struct model *m)
{
    uint64_t queued = 0, claimed = 0;
    for (uint64_t k = 0; k < m->enqueued; k++) {
        REQUIRE(m->life[k] >= LIFE_QUEUED && m->life[k] <= LIFE_ACKED);
        queued += m->life[k] == LIFE_QUEUED;
        claimed += m->life[k] == LIFE_CLAIMED;
    }
    REQUIRE(queued == m->depth);
    REQUIRE(claimed == pending(m) - m->depth);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LEVEL_ERROR); /* repairs log a warning each */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    struct model m;
    memset(&m, 0, sizeof m);
    m.cap = 1 + data[0] % MAX_CAP;
    m.n_slots = 1 + data[1] % MAX_SLOTS;
    m.batch_max = 1 + data[2] % MAX_BATCH;
    m.base = data[3] < 128 ? 1 + data[3] : (UINT64_C(1) << 62) + data[3];
    m.stride = data[3] & 1 ? RING_MAX_STRIDE : 1;
    m.bytes = ring_bytes(m.cap, m.n_slots, m.batch_max);
    m.life_cap = 5 * size + 8;
    m.life = calloc(m.life_cap, 1);
    void *mem = calloc(1, m.bytes);
    REQUIRE(mem != NULL && m.life != NULL);
    REQUIRE(ring_init(mem, m.bytes, m.cap, m.n_slots, m.batch_max, m.base, m.stride) == 0);
    m.r = mem;
    check_all(&m);

    struct script s = { data + 4, data + size };
    run(&m, &s);
    check_ids(&m);

    pthread_mutex_destroy(&m.r->mutex);
    free(mem);
    free(m.life);
    return 0;
}
