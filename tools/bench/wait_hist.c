/* The raw commit-to-answer histogram of waiting requests (Prefer: wait), for
 * the wait stage of `make bench`. /metrics only reports the upper bound of
 * the bucket holding each percentile, and a bucket spans a quarter of an
 * octave (4,096-5,119 us around the 5 ms target), so the bench reads every
 * bucket, subtracts a snapshot taken after the connections were opened and
 * interpolates within the bucket, as Prometheus' histogram_quantile does.
 *
 *   wait_hist --shm-name NAME    prints one JSON object on stdout:
 *     {"count": N, "sum_us": S, "buckets": [[lo_us, hi_us, count], ...]}
 *   (non-empty buckets only, lo and hi inclusive). Read-only, like txctl. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/metrics.h"
#include "common/shm.h"

int main(int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "--shm-name") != 0) {
        fprintf(stderr, "usage: wait_hist --shm-name NAME\n");
        return 2;
    }
    struct shm_seg seg;
    char why[256];
    if (shm_attach_readonly(&seg, argv[2], why, sizeof why) != 0) {
        fprintf(stderr, "wait_hist: %s\n", why);
        return 1;
    }
    /* Large (two histograms): not on the stack. */
    struct metric_totals *t = malloc(sizeof *t);
    if (t == NULL) {
        fprintf(stderr, "wait_hist: out of memory\n");
        shm_close(&seg);
        return 1;
    }
    metrics_sum(seg.metrics, seg.hdr->n_children + 1, t);
    printf("{\"count\": %" PRIu64 ", \"sum_us\": %" PRIu64 ", \"buckets\": [", t->wait_count, t->wait_sum_us);
    const char *sep = "";
    for (unsigned i = 0; i < METRICS_HIST_BUCKETS; i++) {
        if (t->wait_hist[i] == 0)
            continue;
        int64_t lo = i == 0 ? 0 : metrics_bucket_upper(i - 1) + 1;
        printf("%s[%" PRId64 ", %" PRId64 ", %" PRIu64 "]", sep, lo, metrics_bucket_upper(i), t->wait_hist[i]);
        sep = ", ";
    }
    printf("]}\n");
    free(t);
    shm_close(&seg);
    return 0;
}
