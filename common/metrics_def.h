/* The one table of counters. Each row is X(name, kind, help): the shm metric
 * block, the /metrics JSON, txctl and any later exporter all iterate this
 * list, so adding a counter is one line here and nothing else.
 *
 * kind: COUNTER only ever grows; SUM may go down (it adds signed values). */
#ifndef TXP_METRICS_DEF_H
#define TXP_METRICS_DEF_H

#define TXP_METRICS(X) \
    X(http_requests,          COUNTER, "HTTP requests answered by frontends") \
    X(http_bad_request,       COUNTER, "requests refused as invalid (400/404/405/413/415)") \
    X(tx_accepted,            COUNTER, "transactions accepted and queued (202)") \
    X(tx_queue_full,          COUNTER, "transactions refused because the queue was full (503)") \
    X(tx_applied_deposit,     COUNTER, "deposits committed to the ledger") \
    X(tx_applied_withdrawal,  COUNTER, "withdrawals committed to the ledger") \
    X(tx_insufficient_funds,  COUNTER, "withdrawals recorded as insufficient_funds") \
    X(tx_unknown_account,     COUNTER, "transactions recorded as unknown_account") \
    X(tx_rejected,            COUNTER, "transactions recorded as rejected (overflow, corrupt entry)") \
    X(tx_replayed,            COUNTER, "replayed entries skipped because their txid was recorded") \
    X(batches_committed,      COUNTER, "SQLite transactions committed by workers") \
    X(db_errors,              COUNTER, "SQLite errors that made a worker retry a batch") \
    X(entries_requeued,       COUNTER, "claimed entries put back after their worker died") \
    X(balance_delta,          SUM,     "sum of applied amounts (minor units)")

enum metric_id {
#define METRIC_ENUM(name, kind, help) METRIC_##name,
    TXP_METRICS(METRIC_ENUM)
#undef METRIC_ENUM
    METRIC__COUNT
};

#endif
