/* Writing and summing the per-process metric blocks: the latency histogram
 * bucketing, percentiles over the summed histogram, and the merge of the
 * per-worker recent-sample rings into one timeline. */
#include "common/metrics.h"

#include <stdlib.h>
#include <string.h>

const struct metric_info metric_table[METRIC__COUNT] = {
#define METRIC_INFO(name, kind, family, outcome, help) { #name, #kind, family, outcome, help },
    TXP_METRICS(METRIC_INFO)
#undef METRIC_INFO
};

/* Bucket b covers values whose highest set bit is e = b / SUB (bucket 0..SUB-1
 * hold 0..SUB-1 exactly) split into SUB equal parts by the next two bits. */
unsigned metrics_bucket_of(int64_t us)
{
    if (us < METRICS_HIST_SUB)
        return us < 0 ? 0 : (unsigned)us;
    uint64_t v = (uint64_t)us;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);        /* >= 2 */
    unsigned sub = (unsigned)(v >> (msb - 2)) & (METRICS_HIST_SUB - 1);
    unsigned b = (msb - 1) * METRICS_HIST_SUB + sub;
    return b < METRICS_HIST_BUCKETS ? b : METRICS_HIST_BUCKETS - 1;
}

int64_t metrics_bucket_upper(unsigned i)
{
    if (i < METRICS_HIST_SUB)
        return (int64_t)i;
    unsigned msb = i / METRICS_HIST_SUB + 1;
    unsigned sub = i % METRICS_HIST_SUB;
    uint64_t lo = ((uint64_t)(METRICS_HIST_SUB + sub)) << (msb - 2);
    return (int64_t)(lo + (1ull << (msb - 2)) - 1);
}

void metrics_record_latency(struct metric_block *b, int64_t at_us, int64_t latency_us)
{
    if (latency_us < 0)
        latency_us = 0; /* wall clock stepped back between enqueue and commit */
    uint64_t *bucket = &b->latency_hist[metrics_bucket_of(latency_us)];
    __atomic_store_n(bucket, __atomic_load_n(bucket, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&b->latency_sum_us,
                     __atomic_load_n(&b->latency_sum_us, __ATOMIC_RELAXED) + (uint64_t)latency_us,
                     __ATOMIC_RELAXED);
    uint64_t n = __atomic_load_n(&b->recent_next, __ATOMIC_RELAXED);
    b->recent[n % METRICS_RECENT] = (struct metric_sample){ at_us, latency_us };
    __atomic_store_n(&b->recent_next, n + 1, __ATOMIC_RELEASE);
}

void metrics_record_wait(struct metric_block *b, int64_t latency_us)
{
    if (latency_us < 0)
        latency_us = 0;
    uint64_t *bucket = &b->wait_hist[metrics_bucket_of(latency_us)];
    __atomic_store_n(bucket, __atomic_load_n(bucket, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&b->wait_sum_us,
                     __atomic_load_n(&b->wait_sum_us, __ATOMIC_RELAXED) + (uint64_t)latency_us,
                     __ATOMIC_RELAXED);
}

void metrics_sum(const struct metric_block *blocks, size_t n, struct metric_totals *out)
{
    memset(out, 0, sizeof *out);
    for (size_t b = 0; b < n; b++) {
        for (unsigned i = 0; i < METRIC__COUNT; i++)
            out->counters[i] += __atomic_load_n(&blocks[b].counters[i], __ATOMIC_RELAXED);
        out->latency_sum_us += __atomic_load_n(&blocks[b].latency_sum_us, __ATOMIC_RELAXED);
        for (unsigned i = 0; i < METRICS_HIST_BUCKETS; i++) {
            uint64_t c = __atomic_load_n(&blocks[b].latency_hist[i], __ATOMIC_RELAXED);
            out->latency_hist[i] += c;
            out->latency_count += c;
            c = __atomic_load_n(&blocks[b].wait_hist[i], __ATOMIC_RELAXED);
            out->wait_hist[i] += c;
            out->wait_count += c;
        }
        out->wait_sum_us += __atomic_load_n(&blocks[b].wait_sum_us, __ATOMIC_RELAXED);
    }
}

static int64_t hist_percentile(const uint64_t *hist, uint64_t count, double q)
{
    if (count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)count);
    if (rank >= count)
        rank = count - 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < METRICS_HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen > rank)
            return metrics_bucket_upper(i);
    }
    return metrics_bucket_upper(METRICS_HIST_BUCKETS - 1);
}

int64_t metrics_percentile(const struct metric_totals *t, double q)
{
    return hist_percentile(t->latency_hist, t->latency_count, q);
}

int64_t metrics_wait_percentile(const struct metric_totals *t, double q)
{
    return hist_percentile(t->wait_hist, t->wait_count, q);
}

int64_t metrics_max(const struct metric_totals *t)
{
    for (unsigned i = METRICS_HIST_BUCKETS; i-- > 0;)
        if (t->latency_hist[i] != 0)
            return metrics_bucket_upper(i);
    return 0;
}

static int sample_cmp(const void *a, const void *b)
{
    const struct metric_sample *x = a, *y = b;
    return (x->at_us > y->at_us) - (x->at_us < y->at_us);
}

size_t metrics_recent(const struct metric_block *blocks, size_t n, struct metric_sample *out,
                      size_t max)
{
    struct metric_sample *all = malloc(sizeof *all * n * METRICS_RECENT);
    if (all == NULL)
        return 0;
    size_t count = 0;
    for (size_t b = 0; b < n; b++) {
        uint64_t next = __atomic_load_n(&blocks[b].recent_next, __ATOMIC_ACQUIRE);
        uint64_t have = next < METRICS_RECENT ? next : METRICS_RECENT;
        for (uint64_t k = next - have; k < next; k++)
            all[count++] = blocks[b].recent[k % METRICS_RECENT];
    }
    qsort(all, count, sizeof *all, sample_cmp);
    size_t take = count < max ? count : max;
    memcpy(out, all + (count - take), take * sizeof *out);
    free(all);
    return take;
}
