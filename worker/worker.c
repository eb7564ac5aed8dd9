/* A worker process: the only writer of transactions to the ledger. It claims
 * batches from the shared ring, commits each in one database transaction
 * (ledger/ledger.h: SQLite or PostgreSQL),
 * counts the outcomes in its metric block and only then acknowledges, so a
 * worker killed at any point leaves its claim to be requeued and replayed,
 * never lost and never applied twice.
 *
 * Ordering per batch: claim -> apply (retried until it commits) -> metrics ->
 * outcomes to waiting frontends -> ack. Metrics come before the ack because a
 * death between the two makes the batch come back as replayed entries, which
 * are not counted again; a replayed entry that someone waits for is handed
 * over again with COMPLETION_LOOKUP (its outcome is in the ledger).
 *
 * Worker 0 also prunes idempotency keys older than --idempotency-ttl, a
 * bounded DELETE between batches every PRUNE_INTERVAL_MAX_S at most. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "common/check.h"
#include "common/clock.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "ledger/ledger.h"
#include "worker/worker.h"

#define WAIT_MS 1000                        /* futex wait; also the idle heartbeat period */
#define BACKOFF_FIRST_MS 10
#define BACKOFF_MAX_MS 1000
#define ERROR_LOG_INTERVAL_US (10 * 1000000) /* one retry log line per 10 s at most */
/* Group commit. A worker that finds fewer entries queued than a full batch
 * waits this long before claiming, so that one database transaction carries
 * what arrives meanwhile instead of a handful of entries. A commit costs a
 * WAL write of every page it touched whatever the batch size, so a worker
 * that always keeps up commits tiny batches and spends two to three times
 * the CPU per transaction -- CPU the frontends need on a small machine.
 * It also spares the frontends a futex wake-up per request: a lingering
 * worker is not waiting on the futex. Costs at most this much latency
 * between 202 and commit; skipped with a full batch queued and when
 * draining. */
#define LINGER_US 5000
/* One writer at a time. SQLite lets one connection write at a time, so a
 * second worker adds no throughput, and it costs some: a connection that
 * finds the database changed by another one throws its page cache away, so
 * workers taking turns re-read every page they touch for every batch (10 %
 * more CPU per transaction draining a backlog, 50 % under ingest load,
 * measured). A worker therefore leaves the
 * queue to any lower-numbered worker that claimed a batch within the last
 * STANDBY_MS, checking every STANDBY_POLL_MS while entries are queued; it
 * takes over when that worker stops making progress (dead, stopped, stuck)
 * and when draining. Worker 0 never stands by. A batch in hand counts as
 * progress for up to STANDBY_BATCH_MS after it was claimed: one batch on a
 * busy PostgreSQL server can take longer than STANDBY_MS, and a second
 * worker cutting in then only adds lock waits; a worker stopped with a claim
 * in hand is still overtaken within STANDBY_BATCH_MS. */
#define STANDBY_MS 100
#define STANDBY_BATCH_MS 1000
#define STANDBY_POLL_MS 10

/* Idempotency key pruning: every min(this, ttl / 2) seconds (at least 1),
 * at most PRUNE_ROWS keys per DELETE, so one never holds the write lock
 * for long; a backlog is worked off PRUNE_ROWS at a time between batches. */
#define PRUNE_INTERVAL_MAX_S 60
#define PRUNE_ROWS 5000

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t retire_requested;

struct worker {
    const struct config *cfg;
    struct shm_seg *seg;
    const struct shm_header *hdr;
    struct ring *ring;
    struct shm_child *row;
    struct metric_block *metrics;
    struct ledger *ledger;
    uint32_t index;
    int draining;
    int64_t last_error_log_us;
    uint64_t errors_unlogged;
    uint64_t seen_claims[RING_MAX_SLOTS]; /* of the lower-numbered workers */
    int64_t claimed_at_us[RING_MAX_SLOTS]; /* when each of them was seen claiming */
    int64_t lower_progress_us;            /* when one of them last claimed */
    int64_t next_prune_us;                /* monotonic; 0: this worker does not prune */
    struct ledger_outcome outcomes[RING_MAX_BATCH];
};

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* SIGUSR2 from the master's rolling restart: finish the batch in hand and
 * exit, leaving the queue to the other workers and to the replacement. */
static void on_retire(int sig)
{
    (void)sig;
    retire_requested = 1;
}

/* No SA_RESTART: the signal must cut a futex wait or a back-off sleep short.
 * A SIGINT the master set to be ignored stays ignored (Ctrl-C reaches the
 * whole group, and the master decides the stopping order). SIGTERM is
 * unblocked only once the handler is in place, so a parent that keeps it
 * blocked across fork can tell a fresh worker to drain at once, without the
 * default action killing it first. */
static int install_signals(void)
{
    struct sigaction stop = { .sa_handler = on_stop }, ignore = { .sa_handler = SIG_IGN }, old;
    struct sigaction retire = { .sa_handler = on_retire };
    sigset_t term;
    sigemptyset(&stop.sa_mask);
    sigemptyset(&ignore.sa_mask);
    sigemptyset(&retire.sa_mask);
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGUSR2);
    if (sigaction(SIGTERM, &stop, NULL) != 0 || sigaction(SIGPIPE, &ignore, NULL) != 0 ||
        sigaction(SIGUSR2, &retire, NULL) != 0 ||
        sigaction(SIGINT, NULL, &old) != 0 ||
        (old.sa_handler != SIG_IGN && sigaction(SIGINT, &stop, NULL) != 0) ||
        sigprocmask(SIG_UNBLOCK, &term, NULL) != 0) {
        log_error("sigaction: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void heartbeat(struct worker *w)
{
    __atomic_store_n(&w->row->heartbeat_us, clock_mono_us(), __ATOMIC_RELAXED);
    if (stop_requested && !w->draining) {
        w->draining = 1;
        __atomic_store_n(&w->row->state, CHILD_DRAINING, __ATOMIC_RELAXED);
        log_info("worker %u draining: applying what is left in the queue", w->index);
    }
}

static void sleep_us(long us)
{
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000L };
    nanosleep(&ts, NULL); /* EINTR: wake early, the loop checks the flags */
}

/* See STANDBY_MS. 1 if a lower-numbered worker is applying. */
static int standing_by(struct worker *w)
{
    if (w->index == 0 || w->draining || retire_requested)
        return 0;
    int64_t now = clock_mono_us();
    int busy = 0;
    for (uint32_t k = 0; k < w->index && k < RING_MAX_SLOTS; k++) {
        uint64_t claims = ring_slot_claims(w->ring, k);
        if (claims != w->seen_claims[k]) {
            w->seen_claims[k] = claims;
            w->claimed_at_us[k] = now;
            w->lower_progress_us = now;
        }
        if (w->claimed_at_us[k] != 0 && ring_slot_busy(w->ring, k) &&
            now - w->claimed_at_us[k] < STANDBY_BATCH_MS * 1000)
            busy = 1;
    }
    return busy || (w->lower_progress_us != 0 && now - w->lower_progress_us < STANDBY_MS * 1000);
}

/* Before a claim, with depth entries queued: 1 if the loop should go round
 * again instead (standing by), after waiting as LINGER_US says. */
static int hold_back(struct worker *w, uint64_t depth, uint32_t max)
{
    if (depth == 0)
        return 0;
    if (standing_by(w)) {
        /* A single enqueue wakes one sleeper, which may be this worker
         * while the one it defers to sleeps on: wake that one, or the
         * entry waits until this worker's standby runs out (100 ms). */
        ring_wake_all(w->ring);
        sleep_us(STANDBY_POLL_MS * 1000L);
        return 1;
    }
    if (depth < max && !w->draining && !retire_requested)
        sleep_us(LINGER_US);
    return 0;
}

/* Sleeps ms milliseconds or until a signal arrives. */
static void backoff_sleep(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL); /* EINTR: a shorter wait is fine, the loop heartbeats and retries */
}

static void log_retry(struct worker *w, uint32_t n, int delay_ms)
{
    int64_t now = clock_mono_us();
    if (w->last_error_log_us != 0 && now - w->last_error_log_us < ERROR_LOG_INTERVAL_US) {
        w->errors_unlogged++;
        return;
    }
    char unlogged[64] = "";
    if (w->errors_unlogged > 0)
        snprintf(unlogged, sizeof unlogged, " (%llu more errors since the last report)",
                 (unsigned long long)w->errors_unlogged);
    log_warn("%s on batch of %u entries, retry in %d ms%s", ledger_last_error(w->ledger), n,
             delay_ms, unlogged);
    w->last_error_log_us = now;
    w->errors_unlogged = 0;
}

/* Applies the claimed batch until it commits: the entries stay claimed while
 * the database refuses, so nothing is dropped. Returns 0, or -1 when the
 * ledger can never take it (the master then requeues the claim). */
static int apply_until_committed(struct worker *w, const struct txn_entry *batch, uint32_t n,
                                 int64_t *applied_at_us)
{
    int delay_ms = BACKOFF_FIRST_MS;
    for (unsigned retries = 0;; retries++) {
        *applied_at_us = clock_wall_us();
        enum ledger_result r = ledger_apply_batch(w->ledger, batch, n, *applied_at_us, w->outcomes);
        if (r == LEDGER_OK) {
            if (retries > 0)
                log_info("batch of %u entries committed after %u retries", n, retries);
            return 0;
        }
        if (r == LEDGER_FATAL) {
            log_error("cannot apply batch of %u entries, stopping: %s", n,
                      ledger_last_error(w->ledger));
            return -1;
        }
        metrics_add(w->metrics, METRIC_db_errors, 1);
        log_retry(w, n, delay_ms);
        backoff_sleep(delay_ms);
        heartbeat(w);
        delay_ms = delay_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay_ms * 2;
    }
}

static enum metric_id outcome_metric(const struct ledger_outcome *o, const struct txn_entry *e)
{
    if (o->replayed)
        return METRIC_tx_replayed;
    if (o->status == TXN_STATUS_DUPLICATE)
        return METRIC_tx_duplicate;
    int applied = o->status == TXN_STATUS_APPLIED;
    switch (o->reason == TXN_REASON_CORRUPT ? TXN_KIND_NONE : e->kind) {
    case TXN_KIND_TRANSFER:
        return applied ? METRIC_transfers : METRIC_transfers_rejected;
    case TXN_KIND_OPEN:
        return applied ? METRIC_accounts_created : METRIC_accounts_rejected;
    default:
        break;
    }
    switch (o->status) {
    case TXN_STATUS_APPLIED:
        return e->amount > 0 ? METRIC_tx_applied_deposit : METRIC_tx_applied_withdrawal;
    case TXN_STATUS_INSUFFICIENT_FUNDS:
        return METRIC_tx_insufficient_funds;
    case TXN_STATUS_UNKNOWN_ACCOUNT:
        return METRIC_tx_unknown_account;
    default:
        return METRIC_tx_rejected;
    }
}

static void count_outcomes(struct worker *w, const struct txn_entry *batch, uint32_t n,
                           int64_t applied_at_us)
{
    for (uint32_t i = 0; i < n; i++) {
        const struct ledger_outcome *o = &w->outcomes[i];
        metrics_add(w->metrics, outcome_metric(o, &batch[i]), 1);
        if (o->replayed)
            continue;
        /* Money entering or leaving the ledger; a transfer only moves it. */
        if (o->status == TXN_STATUS_APPLIED && batch[i].kind != TXN_KIND_TRANSFER)
            metrics_add(w->metrics, METRIC_balance_delta, batch[i].amount);
        if (batch[i].queued_at_us > 0) /* a corrupt entry may have none */
            metrics_record_latency(w->metrics, applied_at_us, applied_at_us - batch[i].queued_at_us);
    }
    metrics_add(w->metrics, METRIC_batches_committed, 1);
}

/* Hands the outcome of every waited-for entry to its frontend: a record in
 * the (frontend, this worker) completion ring, then one eventfd write per
 * frontend. Never blocks: a full ring drops the record (the request then
 * times out with 202) and a failed write is only counted. */
static void publish_outcomes(struct worker *w, const struct txn_entry *batch, uint32_t n,
                             int64_t applied_at_us, int64_t committed_at_us)
{
    uint32_t n_frontends = w->hdr->params.n_frontends;
    uint64_t notify = 0; /* bit f: frontend f has new records */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t f = batch[i].waiter;
        if (f == 0 || f > n_frontends || f > 64)
            continue;
        f--;
        const struct ledger_outcome *o = &w->outcomes[i];
        struct completion c = {
            .txid = batch[i].txid,
            .balance_after = o->balance_after,
            .counterparty_balance = o->counterparty_balance,
            .original_txid = o->original_txid,
            .applied_at_us = applied_at_us,
            .committed_at_us = committed_at_us,
            .status = (uint8_t)o->status,
            .reason = (uint8_t)o->reason,
            .flags = o->replayed ? COMPLETION_LOOKUP : 0,
        };
        if (completion_push(shm_completions(w->seg, f, w->index), &c) != 0) {
            metrics_add(w->metrics, METRIC_waits_dropped, 1);
            continue;
        }
        notify |= 1ull << f;
    }
    for (uint32_t f = 0; notify != 0; f++, notify >>= 1) {
        uint64_t one = 1;
        if ((notify & 1) && w->seg->notify_fd[f] >= 0 &&
            write(w->seg->notify_fd[f], &one, sizeof one) != (ssize_t)sizeof one && errno != EAGAIN)
            log_warn("waking frontend %u: %s", f, strerror(errno));
    }
}

static int64_t prune_interval_us(const struct config *cfg)
{
    unsigned s = cfg->idempotency_ttl_s / 2;
    if (s > PRUNE_INTERVAL_MAX_S)
        s = PRUNE_INTERVAL_MAX_S;
    return (int64_t)(s > 0 ? s : 1) * 1000000;
}

/* Worker 0, between batches: deletes keys older than the TTL. A full
 * DELETE means more may be waiting, so the next one comes at once. */
static void maybe_prune(struct worker *w)
{
    int64_t now = clock_mono_us();
    if (w->next_prune_us == 0 || now < w->next_prune_us)
        return;
    int64_t cutoff = clock_wall_us() - (int64_t)w->cfg->idempotency_ttl_s * 1000000;
    unsigned deleted = 0;
    enum ledger_result r = ledger_prune_keys(w->ledger, cutoff, PRUNE_ROWS, &deleted);
    if (r != LEDGER_OK)
        log_warn("pruning idempotency keys: %s; trying again later", ledger_last_error(w->ledger));
    if (deleted > 0) {
        metrics_add(w->metrics, METRIC_keys_pruned, deleted);
        log_debug("pruned %u idempotency keys older than %u s", deleted, w->cfg->idempotency_ttl_s);
    }
    w->next_prune_us = deleted == PRUNE_ROWS ? now : now + prune_interval_us(w->cfg);
}

/* Test hook for the one window no signal can hit on purpose: dying after
 * COMMIT and before the acknowledge (failpoint.h; a no-op in txprocd). */
static void failpoint_after_commit(void)
{
    if (failpoint("AFTER_COMMIT")) {
        log_warn("failpoint: exiting between COMMIT and acknowledge");
        _exit(1);
    }
}

/* The master says so once every frontend has exited: from then on nothing
 * new is queued and an empty ring stays empty. */
static int frontends_gone(const struct worker *w)
{
    int state = __atomic_load_n(&w->hdr->master_state, __ATOMIC_SEQ_CST);
    return state == MASTER_DRAINING_WORKERS || state == MASTER_STOPPED;
}

/* Claims, applies and acknowledges until, after a stop request, the ring is
 * empty and no frontend can add to it. Returns the process exit code. */
static int run(struct worker *w)
{
    uint32_t max = w->cfg->batch_max == 0 || w->cfg->batch_max > RING_MAX_BATCH ? RING_MAX_BATCH
                                                                                : w->cfg->batch_max;
    for (;;) {
        heartbeat(w);
        maybe_prune(w);
        if (retire_requested) {
            log_info("worker %u retiring for a rolling restart", w->index);
            return 0;
        }
        struct ring_stats st;
        ring_stats(w->ring, &st);
        if (hold_back(w, st.depth, max))
            continue;
        const struct txn_entry *batch = NULL;
        int n = ring_claim(w->ring, w->index, max, &batch);
        ASSERT(n >= 0 && n <= RING_MAX_BATCH); /* the size of w->outcomes */
        /* Test hook: an assertion failing while a batch is claimed. */
        ASSERT(n == 0 || !failpoint("ASSERT_WITH_CLAIM"));
        if (n == 0) {
            if (w->draining && frontends_gone(w))
                return 0;
            ring_wait(w->ring, w->index, WAIT_MS);
            continue;
        }
        int64_t applied_at_us;
        if (apply_until_committed(w, batch, (uint32_t)n, &applied_at_us) != 0)
            return TXP_EXIT_FATAL;
        int64_t committed_at_us = clock_wall_us();
        failpoint_after_commit();
        count_outcomes(w, batch, (uint32_t)n, applied_at_us);
        publish_outcomes(w, batch, (uint32_t)n, applied_at_us, committed_at_us);
        ring_ack(w->ring, w->index);
    }
}

int worker_main(const struct config *cfg, struct shm_seg *seg, uint32_t slot, uint32_t index)
{
    static struct worker w; /* the outcome array is too big for the stack */
    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    w.seg = seg;
    w.hdr = seg->hdr;
    w.ring = seg->ring;
    w.row = &seg->children[slot];
    w.metrics = shm_metrics(seg, slot);
    w.index = index;
    if (index == 0)
        w.next_prune_us = clock_mono_us() + prune_interval_us(cfg);
    if (install_signals() != 0)
        return TXP_EXIT_FATAL;
    w.ledger = ledger_open(cfg->db_path, cfg->sync);
    if (w.ledger == NULL)
        return TXP_EXIT_FATAL;
    __atomic_store_n(&w.row->state, CHILD_RUNNING, __ATOMIC_RELAXED);
    char db[256];
    ledger_describe(cfg->db_path, db, sizeof db);
    log_info("worker %u ready, db %s, batch_max %u", index, db, cfg->batch_max);
    int rc = run(&w);
    ledger_close(w.ledger);
    if (rc == 0)
        log_info("worker %u drained, exiting", index);
    return rc;
}
