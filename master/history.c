/* The 1 Hz sampler behind average_balance_history and queue_size_history.
 * The average balance is derived: the ledger's balance sum read at start plus
 * the balance_delta counter workers add as they commit, over the number of
 * accounts. */
#include "master/history.h"

#include <stdlib.h>

#include "common/clock.h"

void history_sample(struct shm_seg *seg)
{
    struct metric_totals *t = malloc(sizeof *t);
    if (t == NULL)
        return;
    metrics_sum(seg->metrics, seg->hdr->n_children + 1, t);
    struct ring_stats rs;
    ring_stats(seg->ring, &rs);

    const struct shm_header *h = seg->hdr;
    int64_t delta = t->counters[METRIC_balance_delta] - h->initial_balance_delta;
    int64_t accounts = h->account_count + t->counters[METRIC_accounts_created] -
                       h->initial_accounts_created;
    double avg = accounts > 0 ? (h->initial_balance_sum + (double)delta) / (double)accounts : 0.0;
    int64_t outcomes = t->counters[METRIC_tx_applied_deposit] + t->counters[METRIC_tx_applied_withdrawal] +
                       t->counters[METRIC_tx_insufficient_funds] + t->counters[METRIC_tx_unknown_account] +
                       t->counters[METRIC_tx_rejected] + t->counters[METRIC_tx_duplicate] +
                       t->counters[METRIC_transfers] + t->counters[METRIC_transfers_rejected] +
                       t->counters[METRIC_accounts_created] + t->counters[METRIC_accounts_rejected];

    struct shm_history *hist = seg->history;
    uint64_t next = hist->next;
    unsigned i = (unsigned)(next % SHM_HISTORY);
    hist->at_s[i] = clock_wall_us() / 1000000;
    hist->avg_balance[i] = avg;
    hist->queue_depth[i] = (int64_t)(rs.depth + rs.claimed);
    hist->applied_total[i] = outcomes;
    hist->requests_total[i] = t->counters[METRIC_http_requests];
    __atomic_store_n(&hist->next, next + 1, __ATOMIC_RELEASE);
    free(t);
}
