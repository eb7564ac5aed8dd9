/* The worker's write path, the same for every backend: applies a claimed
 * batch in one database transaction (group commit), so a batch is either
 * entirely recorded or not at all, and recording it twice changes nothing.
 *
 * ONE PASS (backend.h names the operations)
 *   1. begin.
 *   2. recorded: entries with attempts > 0 were claimed before by a worker
 *      that died, so they may be in the ledger already; those whose txid is
 *      recorded are skipped (replayed).
 *   3. A corrupt entry (txn_entry_check) is recorded as rejected.
 *   4. claim_keys: each Idempotency-Key is inserted unless it exists. The
 *      UNIQUE key column, not a check made earlier, decides which of two
 *      copies applies, whichever frontends or workers they came through; a
 *      key held by another request makes the entry 'duplicate' (same
 *      fingerprint) or 'rejected' (another request), and nothing else
 *      happens.
 *   5. load: every account the remaining entries name, once, sorted by card
 *      (PostgreSQL locks them FOR UPDATE in that order, so two workers
 *      never deadlock on accounts).
 *   6. rules_apply decides each entry in batch order on that in-memory book
 *      (ledger/rules.c: the only place the rules are written).
 *   7. write: each changed account once (a hot account hit by 500 entries
 *      is one UPDATE), new accounts, then the transaction rows, with
 *      ON CONFLICT(txid) DO NOTHING. If fewer rows went in than were
 *      written, some txid was recorded after all (a claim handed out again
 *      without attempts being bumped): the transaction is rolled back and
 *      the batch applied again with step 2 for every entry. That never
 *      happens in normal operation; it costs one rolled-back batch when it
 *      does.
 *   8. commit.
 *
 * COMMIT WITHOUT AN ANSWER
 *   A connection that drops during COMMIT leaves the batch either committed
 *   or not. The outcomes decided are kept, and the next call with the same
 *   batch asks the ledger for its txids before anything else: all there
 *   means it committed (the kept outcomes are returned, as if the COMMIT had
 *   answered), none means it did not (applied normally); a mix cannot
 *   happen in one transaction and stops the worker. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/log.h"
#include "ledger/backend.h"

/* flags[i] */
#define ENTRY_CHECK 1u    /* ask the ledger whether its txid is recorded */
#define ENTRY_REPLAYED 2u /* it is: skip */

static int reserve(struct ledger *l, uint32_t n)
{
    if (n <= l->cap)
        return 0;
    struct txn_entry *copy = realloc(l->copy, (size_t)n * sizeof *copy);
    if (copy != NULL)
        l->copy = copy;
    uint8_t *rows = realloc(l->rows, n);
    if (rows != NULL)
        l->rows = rows;
    uint8_t *flags = realloc(l->flags, n);
    if (flags != NULL)
        l->flags = flags;
    const struct txn_entry **pick = realloc(l->pick, (size_t)n * sizeof *pick);
    if (pick != NULL)
        l->pick = pick;
    struct ledger_key_claim *claims = realloc(l->claims, (size_t)n * sizeof *claims);
    if (claims != NULL)
        l->claims = claims;
    int32_t *claim_of = realloc(l->claim_of, (size_t)n * sizeof *claim_of);
    if (claim_of != NULL)
        l->claim_of = claim_of;
    struct ledger_outcome *saved = realloc(l->saved, (size_t)n * sizeof *saved);
    if (saved != NULL)
        l->saved = saved;
    if (copy == NULL || rows == NULL || flags == NULL || pick == NULL || claims == NULL ||
        claim_of == NULL || saved == NULL)
        return -1;
    l->cap = n;
    return 0;
}

int ledger_row_is_entry(const struct txn_entry *e, const char *card, size_t card_len,
                        int64_t amount)
{
    if (amount != e->amount)
        return 0;
    return card == NULL || (card_len == e->card_len && memcmp(card, e->card, card_len) == 0);
}

/* A txid recorded for another request: two instances (or two segments) are
 * handing out the same ids. Skipping the entry as a replay would drop a
 * transaction that was accepted; the worker stops instead, the entry stays
 * queued, and the log says why. */
static enum lb_rc collision(struct ledger *l, const struct txn_entry *e)
{
    log_error("txid %" PRIu64 " is recorded for another request (not a replay): is a second "
              "txprocd instance writing to this ledger? The entry stays queued.", e->txid);
    snprintf(l->last_error, sizeof l->last_error, "txid %" PRIu64 " recorded for another request",
             e->txid);
    return LB_FATAL;
}

/* Step 2 for the entries flagged ENTRY_CHECK. */
static enum lb_rc find_replays(struct ledger *l, uint32_t n)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++)
        if (l->flags[i] & ENTRY_CHECK)
            l->pick[k++] = &l->copy[i];
    if (k == 0)
        return LB_OK;
    uint8_t *found = l->rows; /* scratch until step 3 fills rows */
    memset(found, 0, k);
    enum lb_rc rc = l->ops->recorded(l, l->pick, k, found);
    if (rc != LB_OK)
        return rc;
    k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!(l->flags[i] & ENTRY_CHECK))
            continue;
        uint8_t f = found[k++];
        if (f == RECORDED_OTHER)
            return collision(l, &l->copy[i]);
        if (f == RECORDED_SAME)
            l->flags[i] |= ENTRY_REPLAYED;
    }
    return LB_OK;
}

/* Step 3: sorts entries into corrupt, replayed and valid ones. */
static void check_entries(struct ledger *l, uint32_t n, struct ledger_outcome *outcomes)
{
    for (uint32_t i = 0; i < n; i++) {
        const struct txn_entry *e = &l->copy[i];
        struct ledger_outcome *out = &outcomes[i];
        const char *why = NULL;
        *out = (struct ledger_outcome){ .status = TXN_STATUS_REJECTED };
        l->claim_of[i] = -1;
        if (l->flags[i] & ENTRY_REPLAYED) {
            out->replayed = 1;
            l->rows[i] = ROW_NONE;
        } else if (txn_entry_check(e, &why) != 0) {
            int card_ok = e->card_len > 0 && e->card_len <= TXN_CARD_MAX &&
                          txn_card_valid(e->card, e->card_len) == 0;
            log_warn("txid %" PRIu64 " recorded as rejected: %s", e->txid, why);
            out->reason = TXN_REASON_CORRUPT;
            l->rows[i] = card_ok ? ROW_CARD : ROW_NO_CARD;
        } else {
            l->rows[i] = ROW_FULL;
        }
    }
}

/* Step 4. */
static enum lb_rc claim_keys(struct ledger *l, uint32_t n, int64_t applied_at_us)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct txn_entry *e = &l->copy[i];
        if (l->rows[i] != ROW_FULL || e->key_len == 0)
            continue;
        l->claims[k] = (struct ledger_key_claim){ .key = e->key, .key_len = e->key_len,
                                                  .txid = e->txid,
                                                  .fingerprint = txn_fingerprint(e) };
        l->claim_of[i] = (int32_t)k++;
    }
    if (k == 0)
        return LB_OK;
    return l->ops->claim_keys(l, l->claims, k, applied_at_us);
}

/* An entry whose key another request holds: decided by the key alone. */
static int decided_by_key(struct ledger *l, uint32_t i, struct ledger_outcome *out)
{
    if (l->claim_of[i] < 0)
        return 0;
    const struct ledger_key_claim *c = &l->claims[l->claim_of[i]];
    if (c->owner_txid == c->txid)
        return 0;
    ASSERT(c->owner_txid != 0);
    out->original_txid = c->owner_txid;
    if (c->owner_fingerprint == c->fingerprint) {
        out->status = TXN_STATUS_DUPLICATE;
    } else {
        out->status = TXN_STATUS_REJECTED;
        out->reason = TXN_REASON_KEY_REUSED;
    }
    return 1;
}

/* Steps 5 and 6. */
static enum lb_rc decide(struct ledger *l, uint32_t n, int64_t applied_at_us,
                         struct ledger_outcome *outcomes)
{
    rules_book_reset(&l->book);
    for (uint32_t i = 0; i < n; i++) {
        if (l->rows[i] != ROW_FULL || decided_by_key(l, i, &outcomes[i]))
            continue;
        if (rules_book_add_entry(&l->book, &l->copy[i]) != 0) {
            snprintf(l->last_error, sizeof l->last_error, "out of memory for a batch of %u", n);
            return LB_RETRY;
        }
    }
    rules_book_seal(&l->book);
    if (l->book.n > 0) {
        enum lb_rc rc = l->ops->load(l, &l->book);
        if (rc != LB_OK)
            return rc;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (l->rows[i] != ROW_FULL || outcomes[i].original_txid != 0)
            continue;
        rules_apply(&l->book, &l->copy[i], applied_at_us, &outcomes[i]);
    }
    return LB_OK;
}

/* One attempt at the batch in l->copy; careful checks every txid first.
 * Leaves the transaction open on failure. */
static enum lb_rc apply_pass(struct ledger *l, uint32_t n, int64_t applied_at_us,
                             struct ledger_outcome *outcomes, int careful)
{
    for (uint32_t i = 0; i < n; i++) {
        /* The ring hands out txid_base + position, checked against
         * INT64_MAX when a segment is made or adopted: anything else is
         * corruption, and skipping the entry would acknowledge money that
         * was never recorded. */
        ASSERT(l->copy[i].txid != 0 && l->copy[i].txid <= INT64_MAX);
        l->flags[i] = careful || l->copy[i].attempts > 0 ? ENTRY_CHECK : 0;
    }
    enum lb_rc rc = l->ops->begin(l);
    if (rc == LB_OK)
        rc = find_replays(l, n);
    if (rc == LB_OK) {
        check_entries(l, n, outcomes);
        rc = claim_keys(l, n, applied_at_us);
    }
    if (rc == LB_OK)
        rc = decide(l, n, applied_at_us, outcomes);
    if (rc == LB_OK)
        rc = l->ops->write(l, &l->book, l->copy, l->rows, outcomes, n, applied_at_us);
    if (rc == LB_OK)
        rc = l->ops->commit(l);
    return rc;
}

/* Ends a failed attempt. */
static enum ledger_result fail(struct ledger *l, enum lb_rc rc)
{
    /* A connection that cannot get out of its transaction is no use. */
    if (l->ops->rollback(l) != 0)
        return LEDGER_FATAL;
    return rc == LB_FATAL ? LEDGER_FATAL : LEDGER_RETRY;
}

/* After a COMMIT that went unanswered: did the batch land? Returns LB_OK
 * with *landed set, or the failure of the lookup. */
static enum lb_rc settle_unknown(struct ledger *l, uint32_t n, int *landed)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++)
        if (l->rows[i] != ROW_NONE)
            l->pick[k++] = &l->copy[i];
    *landed = 0;
    if (k == 0)
        return LB_OK; /* nothing was to be written: either way the same */
    uint8_t *found = malloc(k);
    if (found == NULL) {
        snprintf(l->last_error, sizeof l->last_error, "out of memory checking a batch");
        return LB_RETRY;
    }
    memset(found, 0, k);
    enum lb_rc rc = l->ops->begin(l);
    if (rc == LB_OK)
        rc = l->ops->recorded(l, l->pick, k, found);
    if (rc == LB_OK)
        rc = l->ops->commit(l); /* a read-only transaction: ends it */
    uint32_t there = 0, other = k;
    for (uint32_t i = 0; i < k; i++) {
        there += found[i] == RECORDED_SAME;
        if (found[i] == RECORDED_OTHER && other == k)
            other = i;
    }
    free(found);
    if (rc != LB_OK)
        return rc;
    if (other < k)
        return collision(l, l->pick[other]);
    if (there != 0 && there != k) {
        log_error("a batch whose COMMIT went unanswered is half in the ledger (%u of %u rows)",
                  there, k);
        snprintf(l->last_error, sizeof l->last_error, "batch half committed (%u of %u rows)",
                 there, k);
        return LB_FATAL;
    }
    *landed = there == k;
    return LB_OK;
}

enum ledger_result ledger_apply_batch(struct ledger *l, const struct txn_entry *batch, uint32_t n,
                                      int64_t applied_at_us, struct ledger_outcome *outcomes)
{
    if (n == 0)
        return LEDGER_OK;
    l->last_error[0] = '\0';
    if (reserve(l, n) != 0) {
        snprintf(l->last_error, sizeof l->last_error, "out of memory for a batch of %u", n);
        return LEDGER_RETRY;
    }
    if (l->unknown) {
        /* The worker retries the batch it holds until it commits; anything
         * else here means the claim was lost, which the ring forbids. */
        ASSERT(l->unknown_first_txid == batch[0].txid && l->unknown_n == n);
        int landed = 0;
        enum lb_rc rc = settle_unknown(l, n, &landed);
        if (rc != LB_OK)
            return fail(l, rc);
        l->unknown = 0;
        if (landed) {
            log_info("the batch of %u entries from txid %" PRIu64 " was committed before the "
                     "connection failed; not applying it again", n, batch[0].txid);
            memcpy(outcomes, l->saved, (size_t)n * sizeof *outcomes);
            return LEDGER_OK;
        }
        log_info("the batch of %u entries from txid %" PRIu64 " was not committed; applying it",
                 n, batch[0].txid);
    }
    /* A private copy: shared memory is not re-read midway. */
    memcpy(l->copy, batch, (size_t)n * sizeof *batch);
    enum lb_rc rc = apply_pass(l, n, applied_at_us, outcomes, 0);
    if (rc == LB_RECORDED) {
        log_warn("a batch of %u entries holds a txid already recorded; applying it again with "
                 "a replay check for every entry", n);
        if (l->ops->rollback(l) != 0)
            return LEDGER_FATAL;
        rc = apply_pass(l, n, applied_at_us, outcomes, 1);
        if (rc == LB_RECORDED) { /* every txid was checked inside the transaction */
            snprintf(l->last_error, sizeof l->last_error,
                     "a txid checked as new was already recorded");
            rc = LB_FATAL;
        }
    }
    if (rc == LB_UNKNOWN) {
        l->unknown = 1;
        l->unknown_first_txid = batch[0].txid;
        l->unknown_n = n;
        memcpy(l->saved, outcomes, (size_t)n * sizeof *outcomes);
    }
    return rc == LB_OK ? LEDGER_OK : fail(l, rc);
}

enum ledger_result ledger_prune_keys(struct ledger *l, int64_t older_than_us, unsigned max,
                                     unsigned *deleted)
{
    *deleted = 0;
    l->last_error[0] = '\0';
    enum lb_rc rc = l->ops->prune(l, older_than_us, max, deleted);
    if (rc == LB_OK)
        return LEDGER_OK;
    return rc == LB_FATAL ? LEDGER_FATAL : LEDGER_RETRY;
}

struct ledger *ledger_open(const char *db, enum sync_mode sync)
{
    struct ledger *l = calloc(1, sizeof *l);
    if (l == NULL) {
        log_error("ledger_open: out of memory");
        return NULL;
    }
    int rc = ledger_backend_of(db) == LEDGER_POSTGRES ? pg_ledger_open(l, db)
                                                      : sqlite_ledger_open(l, db, sync);
    if (rc != 0) {
        ledger_close(l);
        return NULL;
    }
    return l;
}

void ledger_close(struct ledger *l)
{
    if (l == NULL)
        return;
    if (l->ops != NULL)
        l->ops->close(l);
    rules_book_free(&l->book);
    free(l->copy);
    free(l->rows);
    free(l->flags);
    free(l->pick);
    free(l->claims);
    free(l->claim_of);
    free(l->saved);
    free(l);
}

int ledger_set_busy_timeout(struct ledger *l, int ms)
{
    return l->ops->set_lock_timeout(l, ms);
}

const char *ledger_last_error(const struct ledger *l)
{
    return l->last_error;
}
