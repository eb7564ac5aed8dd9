/* The one table of counters. Each row is X(name, kind, family, outcome, help):
 * the shm metric block, the /metrics JSON, the Prometheus exposition and
 * txctl all iterate this list, so adding a counter is one line here.
 *
 * kind: COUNTER only ever grows; SUM may go down (it adds signed values).
 * family/outcome: the Prometheus name (prefixed "txprocd_") and, when not
 * empty, the value of its "outcome" label; rows sharing a family form one
 * labelled metric. */
#ifndef TXP_METRICS_DEF_H
#define TXP_METRICS_DEF_H

#define TXP_METRICS(X) \
    X(http_requests,         COUNTER, "http_requests_total",    "",                   "HTTP requests answered by frontends") \
    X(http_bad_request,      COUNTER, "requests_total",         "invalid",            "requests refused as invalid (400/404/405/413/415)") \
    X(tx_accepted,           COUNTER, "requests_total",         "accepted",           "transactions accepted and queued (202)") \
    X(tx_queue_full,         COUNTER, "requests_total",         "queue_full",         "transactions refused because the queue was full (503)") \
    X(tx_applied_deposit,    COUNTER, "transactions_total",     "applied_deposit",    "deposits committed to the ledger") \
    X(tx_applied_withdrawal, COUNTER, "transactions_total",     "applied_withdrawal", "withdrawals committed to the ledger") \
    X(tx_insufficient_funds, COUNTER, "transactions_total",     "insufficient_funds", "withdrawals recorded as insufficient_funds") \
    X(tx_unknown_account,    COUNTER, "transactions_total",     "unknown_account",    "transactions recorded as unknown_account") \
    X(tx_rejected,           COUNTER, "transactions_total",     "rejected",           "transactions recorded as rejected (overflow, corrupt entry)") \
    X(tx_replayed,           COUNTER, "transactions_total",     "replayed",           "replayed entries skipped because their txid was recorded") \
    X(batches_committed,     COUNTER, "batches_committed_total", "",                  "SQLite transactions committed by workers") \
    X(db_errors,             COUNTER, "db_errors_total",        "",                   "SQLite errors that made a worker retry a batch") \
    X(entries_requeued,      COUNTER, "entries_requeued_total", "",                   "claimed entries put back after their worker died") \
    X(tx_duplicate,          COUNTER, "transactions_total",     "duplicate",          "requests recorded as duplicate of an earlier one with the same Idempotency-Key") \
    X(transfers,             COUNTER, "transfers_total",        "applied",            "transfers committed to the ledger") \
    X(transfers_rejected,    COUNTER, "transfers_total",        "rejected",           "transfers recorded as rejected (reason in the ledger)") \
    X(accounts_created,      COUNTER, "accounts_total",         "created",            "accounts opened through POST /accounts") \
    X(accounts_rejected,     COUNTER, "accounts_total",         "rejected",           "account openings recorded as rejected (account_exists)") \
    X(idempotent_replays,    COUNTER, "idempotency_total",      "replayed",           "keyed retries answered with the recorded outcome") \
    X(idempotency_conflicts, COUNTER, "idempotency_total",      "conflict",           "keyed retries refused: same key, different request (422)") \
    X(keys_pruned,           COUNTER, "idempotency_keys_pruned_total", "",            "idempotency keys deleted after --idempotency-ttl") \
    X(waits_answered,        COUNTER, "waits_total",            "answered",           "waiting requests answered with the final outcome") \
    X(waits_timed_out,       COUNTER, "waits_total",            "timed_out",          "waiting requests answered 202 when their wait elapsed") \
    X(waits_dropped,         COUNTER, "waits_total",            "dropped",            "outcomes a worker could not hand to a waiting frontend (ring full)") \
    X(balance_delta,         SUM,     "applied_amount_net",     "",                   "sum of applied amounts (minor units)") \
    X(http_timeouts,         COUNTER, "http_timeouts_total",    "",                   "connections ended by a header, body or write timeout (408 when a request was started)") \
    X(http_accept_fd_short,  COUNTER, "http_accept_pauses_total", "descriptors",      "times a frontend stopped accepting for lack of file descriptors (EMFILE/ENFILE)") \
    X(http_accept_at_cap,    COUNTER, "http_accept_pauses_total", "max_connections",  "times a frontend stopped accepting at --max-connections") \
    X(tx_enqueues,           COUNTER, "queue_enqueues_total",   "",                   "times a frontend queued entries (one lock of the queue; tx_accepted / this = entries per lock)")

enum metric_id {
#define METRIC_ENUM(name, kind, family, outcome, help) METRIC_##name,
    TXP_METRICS(METRIC_ENUM)
#undef METRIC_ENUM
    METRIC__COUNT
};

#endif
