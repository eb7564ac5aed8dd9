/* Per-process metric blocks in shared memory. Each process owns exactly one
 * block and is its only writer, so counters need no lock and no atomic
 * read-modify-write; readers (frontend /metrics, txctl) sum all blocks.
 * Counters are never reset: a restarted child keeps adding to its slot's
 * block, so totals stay monotonic across crashes. */
#ifndef TXP_METRICS_H
#define TXP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/metrics_def.h"

/* Latency histogram: log-linear buckets over microseconds, 4 per power of
 * two (error <= 19%), covering 0 us to ~71 minutes. */
#define METRICS_HIST_SUB 4
#define METRICS_HIST_BUCKETS (33 * METRICS_HIST_SUB)
#define METRICS_RECENT 1024

struct metric_sample {
    int64_t at_us;        /* wall clock of the commit */
    int64_t latency_us;   /* enqueue to commit */
};

struct metric_block {
    int64_t counters[METRIC__COUNT];
    uint64_t latency_hist[METRICS_HIST_BUCKETS];
    uint64_t latency_sum_us; /* for the Prometheus histogram's _sum */
    /* Prefer: wait: from the worker's COMMIT to the frontend's answer
     * (frontends write it). */
    uint64_t wait_hist[METRICS_HIST_BUCKETS];
    uint64_t wait_sum_us;
    uint64_t recent_next; /* total samples ever written; next index = % METRICS_RECENT */
    struct metric_sample recent[METRICS_RECENT];
} __attribute__((aligned(64)));

struct metric_totals {
    int64_t counters[METRIC__COUNT];
    uint64_t latency_hist[METRICS_HIST_BUCKETS];
    uint64_t latency_count;
    uint64_t latency_sum_us;
    uint64_t wait_hist[METRICS_HIST_BUCKETS];
    uint64_t wait_count;
    uint64_t wait_sum_us;
};

struct metric_info {
    const char *name;
    const char *kind;    /* "COUNTER" or "SUM" */
    const char *family;  /* Prometheus name without the "txprocd_" prefix */
    const char *outcome; /* its "outcome" label value, "" for none */
    const char *help;
};
extern const struct metric_info metric_table[METRIC__COUNT];

/* Single-writer add: the owner is the only process storing to its block. */
static inline void metrics_add(struct metric_block *b, enum metric_id id, int64_t v)
{
    int64_t *p = &b->counters[id];
    /* Unsigned arithmetic: a SUM counter wraps instead of overflowing (UB). */
    uint64_t next = (uint64_t)__atomic_load_n(p, __ATOMIC_RELAXED) + (uint64_t)v;
    __atomic_store_n(p, (int64_t)next, __ATOMIC_RELAXED);
}

void metrics_record_latency(struct metric_block *b, int64_t at_us, int64_t latency_us);
/* Adds one commit-to-answer time of a waiting request. */
void metrics_record_wait(struct metric_block *b, int64_t latency_us);

unsigned metrics_bucket_of(int64_t us);
/* Upper bound (inclusive) in microseconds of bucket i. */
int64_t metrics_bucket_upper(unsigned i);

/* Sums n blocks into *out. */
void metrics_sum(const struct metric_block *blocks, size_t n, struct metric_totals *out);
/* q in [0,1]; returns the bucket upper bound holding that quantile, 0 if empty. */
int64_t metrics_percentile(const struct metric_totals *t, double q);
/* The same for the commit-to-answer histogram of waiting requests. */
int64_t metrics_wait_percentile(const struct metric_totals *t, double q);
/* Largest latency seen (upper bound of the highest non-empty bucket). */
int64_t metrics_max(const struct metric_totals *t);
/* Copies the newest (by at_us) up to max samples over all blocks, oldest
 * first. Returns how many were written. */
size_t metrics_recent(const struct metric_block *blocks, size_t n, struct metric_sample *out,
                      size_t max);

#endif
