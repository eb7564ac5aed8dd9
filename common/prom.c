/* Prometheus exposition: counters from the one metric table (rows sharing a
 * family become one metric with an "outcome" label), queue gauges, children
 * per role and state, restarts, and the enqueue-to-commit and
 * commit-to-answer (Prefer: wait) histograms with bucket bounds at the shm
 * histograms' own power-of-two edges, so every cumulative count is exact. */
#include "common/prom.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/stats.h"

struct out {
    char *buf;
    size_t len, cap;
    int failed;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2 && !o->failed; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
        } else if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        } else {
            size_t cap = (o->cap + (size_t)n + 1) * 2;
            char *grown = realloc(o->buf, cap);
            if (grown == NULL)
                o->failed = 1;
            o->buf = grown ? grown : o->buf;
            o->cap = grown ? cap : o->cap;
        }
    }
}

/* HELP text of the labelled families: one line for all their outcomes. A
 * family not listed here takes its first member's help. */
static const struct {
    const char *family, *help;
} family_help[] = {
    { "requests_total", "transaction requests by what the frontend answered" },
    { "transactions_total", "queued transactions by their final outcome in the ledger" },
    { "transfers_total", "transfers by their outcome in the ledger" },
    { "accounts_total", "account openings by their outcome in the ledger" },
    { "idempotency_total", "retries with a known Idempotency-Key by how they were answered" },
    { "waits_total", "requests held open by Prefer: wait, by how the wait ended" },
};

static const char *help_of(unsigned first)
{
    const struct metric_info *m = &metric_table[first];
    for (unsigned i = 0; i < sizeof family_help / sizeof family_help[0]; i++)
        if (strcmp(family_help[i].family, m->family) == 0)
            return family_help[i].help;
    return m->help;
}

/* The exposition format wants one HELP/TYPE per family and the family's
 * samples together, but the table is in the order counters were added, so
 * one family's rows need not be adjacent (transactions_total gained
 * "duplicate" after other families): each family is written whole at its
 * first row. */
static void put_counters(struct out *o, const struct metric_totals *t)
{
    for (unsigned i = 0; i < METRIC__COUNT; i++) {
        const char *family = metric_table[i].family;
        unsigned earlier = 0;
        while (earlier < i && strcmp(metric_table[earlier].family, family) != 0)
            earlier++;
        if (earlier < i)
            continue;
        put(o, "# HELP txprocd_%s %s\n", family, help_of(i));
        put(o, "# TYPE txprocd_%s %s\n", family,
            strcmp(metric_table[i].kind, "COUNTER") == 0 ? "counter" : "gauge");
        for (unsigned j = i; j < METRIC__COUNT; j++) {
            const struct metric_info *m = &metric_table[j];
            if (strcmp(m->family, family) != 0)
                continue;
            if (m->outcome[0])
                put(o, "txprocd_%s{outcome=\"%s\"} %lld\n", family, m->outcome,
                    (long long)t->counters[j]);
            else
                put(o, "txprocd_%s %lld\n", family, (long long)t->counters[j]);
        }
    }
}

/* A histogram in seconds from one of the shm histograms (microsecond
 * buckets). Bounds are written only at each power of two, the last bucket of
 * every octave, where a shm bucket ends exactly: every cumulative count is
 * exact, at a quarter of the resolution. */
static void put_histogram(struct out *o, const char *name, const char *help, const uint64_t *hist,
                          uint64_t count, uint64_t sum_us)
{
    put(o, "# HELP txprocd_%s %s\n# TYPE txprocd_%s histogram\n", name, help, name);
    uint64_t cumulative = 0;
    for (unsigned i = 0; i < METRICS_HIST_BUCKETS; i++) {
        cumulative += hist[i];
        if (i % METRICS_HIST_SUB == METRICS_HIST_SUB - 1 && i < METRICS_HIST_BUCKETS - 1)
            put(o, "txprocd_%s_bucket{le=\"%.6f\"} %llu\n", name,
                (double)(metrics_bucket_upper(i) + 1) / 1e6, (unsigned long long)cumulative);
    }
    put(o, "txprocd_%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)count);
    put(o, "txprocd_%s_sum %.6f\n", name, (double)sum_us / 1e6);
    put(o, "txprocd_%s_count %llu\n", name, (unsigned long long)count);
}

static void put_latency(struct out *o, const struct metric_totals *t)
{
    put_histogram(o, "commit_latency_seconds", "time from enqueue to ledger commit",
                  t->latency_hist, t->latency_count, t->latency_sum_us);
    put_histogram(o, "wait_notify_seconds",
                  "time from ledger commit to the answer of a request waiting for it",
                  t->wait_hist, t->wait_count, t->wait_sum_us);
}

static void put_queue(struct out *o, const struct shm_seg *seg)
{
    struct ring_stats rs;
    ring_stats(seg->ring, &rs);
    put(o, "# HELP txprocd_queue_depth entries queued and not yet claimed by a worker\n"
           "# TYPE txprocd_queue_depth gauge\ntxprocd_queue_depth %llu\n"
           "# HELP txprocd_queue_claimed entries claimed by workers, not yet committed\n"
           "# TYPE txprocd_queue_claimed gauge\ntxprocd_queue_claimed %llu\n"
           "# HELP txprocd_queue_capacity queue size in entries\n"
           "# TYPE txprocd_queue_capacity gauge\ntxprocd_queue_capacity %llu\n"
           "# HELP txprocd_queue_high_water largest queue depth seen\n"
           "# TYPE txprocd_queue_high_water gauge\ntxprocd_queue_high_water %llu\n"
           "# HELP txprocd_queue_lock_repairs_total queue locks recovered from a dead holder\n"
           "# TYPE txprocd_queue_lock_repairs_total counter\ntxprocd_queue_lock_repairs_total %llu\n",
        (unsigned long long)rs.depth, (unsigned long long)rs.claimed, (unsigned long long)rs.capacity,
        (unsigned long long)rs.high_water, (unsigned long long)rs.repairs);
}

static void put_children(struct out *o, const struct shm_seg *seg)
{
    static const int roles[] = { ROLE_FRONTEND, ROLE_WORKER };
    put(o, "# HELP txprocd_children child processes by role and state\n"
           "# TYPE txprocd_children gauge\n");
    for (unsigned r = 0; r < 2; r++)
        for (int st = CHILD_STARTING; st <= CHILD_FAILED; st++) {
            unsigned n = 0;
            for (uint32_t i = 0; i < seg->hdr->n_children; i++)
                n += seg->children[i].role == roles[r] && seg->children[i].state == st;
            put(o, "txprocd_children{role=\"%s\",state=\"%s\"} %u\n", stats_role_name(roles[r]),
                stats_state_name(st), n);
        }
    put(o, "# HELP txprocd_child_restarts_total restarts of child processes by role\n"
           "# TYPE txprocd_child_restarts_total counter\n");
    for (unsigned r = 0; r < 2; r++) {
        unsigned long long n = 0;
        for (uint32_t i = 0; i < seg->hdr->n_children; i++)
            if (seg->children[i].role == roles[r])
                n += seg->children[i].restarts;
        put(o, "txprocd_child_restarts_total{role=\"%s\"} %llu\n", stats_role_name(roles[r]), n);
    }
    put(o, "# HELP txprocd_uptime_seconds time since the master started\n"
           "# TYPE txprocd_uptime_seconds gauge\ntxprocd_uptime_seconds %.3f\n",
        (double)(clock_wall_us() - seg->hdr->started_at_us) / 1e6);
    /* An info metric, so a query can join any series of this target with
     * its node (0: the ledger's only instance). */
    put(o, "# HELP txprocd_node_info the node this instance is (--node-id; 0: the only one)\n"
           "# TYPE txprocd_node_info gauge\ntxprocd_node_info{node=\"%u\"} 1\n",
        seg->hdr->params.node_id);
}

char *prom_render(const struct shm_seg *seg, size_t *len)
{
    struct metric_totals *t = malloc(sizeof *t);
    struct out o = { .buf = malloc(16384), .cap = 16384 };
    if (t == NULL || o.buf == NULL) {
        free(t);
        free(o.buf);
        return NULL;
    }
    o.buf[0] = '\0';
    metrics_sum(seg->metrics, seg->hdr->n_children + 1, t);
    put_counters(&o, t);
    put_latency(&o, t);
    put_queue(&o, seg);
    put_children(&o, seg);
    free(t);
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    *len = o.len;
    return o.buf;
}

int prom_wanted(const char *accept, const char *query)
{
    if (query != NULL && strstr(query, "format=prometheus") != NULL)
        return 1;
    if (query != NULL && strstr(query, "format=json") != NULL)
        return 0;
    if (accept == NULL || strstr(accept, "application/json") != NULL)
        return 0;
    return strstr(accept, "text/plain") != NULL || strstr(accept, "application/openmetrics-text") != NULL;
}
