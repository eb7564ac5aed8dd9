/* Turns one read of the shared segment into JSON documents: /metrics (the
 * prototype's keys, which its dashboard reads and which therefore never
 * change, plus the newer ones) and txctl's children and queue views.
 * Nothing here takes a lock or touches SQLite, so it is safe on the hot path
 * and from a read-only mapping. */
#include "common/stats.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/clock.h"

#define STATS_RECENT_MAX 1000

/* cJSON keeps numbers as doubles and prints large ones in exponent form;
 * counters and balances are int64 and must print exactly. */
static void add_int(cJSON *obj, const char *key, int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    cJSON_AddRawToObject(obj, key, buf);
}

const char *stats_role_name(int role)
{
    return role == ROLE_FRONTEND ? "frontend" : role == ROLE_WORKER ? "worker" : "unknown";
}

const char *stats_state_name(int state)
{
    static const char *const names[] = { "empty", "starting", "running", "draining", "exited", "failed" };
    return (state >= 0 && state <= CHILD_FAILED) ? names[state] : "unknown";
}

static uint32_t n_blocks(const struct shm_seg *seg)
{
    return seg->hdr->n_children + 1;
}

cJSON *stats_children_json(const struct shm_seg *seg)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(doc, "children");
    if (list == NULL) {
        cJSON_Delete(doc);
        return NULL;
    }
    int64_t now = clock_wall_us();
    for (uint32_t i = 0; i < seg->hdr->n_children; i++) {
        const struct shm_child *c = &seg->children[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(list, o);
        cJSON_AddNumberToObject(o, "slot", i);
        cJSON_AddStringToObject(o, "role", stats_role_name(c->role));
        cJSON_AddNumberToObject(o, "index", c->index);
        cJSON_AddNumberToObject(o, "pid", c->pid);
        cJSON_AddStringToObject(o, "state", stats_state_name(c->state));
        cJSON_AddNumberToObject(o, "restarts", c->restarts);
        if (c->last_exit == INT32_MIN)
            cJSON_AddNullToObject(o, "last_exit");
        else
            cJSON_AddNumberToObject(o, "last_exit", c->last_exit);
        int up = c->state == CHILD_RUNNING || c->state == CHILD_DRAINING || c->state == CHILD_STARTING;
        cJSON_AddNumberToObject(o, "uptime_s", up ? (double)(now - c->started_at_us) / 1e6 : 0.0);
    }
    return doc;
}

cJSON *stats_queue_json(const struct shm_seg *seg)
{
    struct ring_stats rs;
    ring_stats(seg->ring, &rs);
    cJSON *o = cJSON_CreateObject();
    add_int(o, "depth", (int64_t)rs.depth);
    add_int(o, "claimed", (int64_t)rs.claimed);
    add_int(o, "capacity", (int64_t)rs.capacity);
    add_int(o, "high_water", (int64_t)rs.high_water);
    add_int(o, "repairs", (int64_t)rs.repairs);
    add_int(o, "requeued", (int64_t)rs.requeued);
    add_int(o, "next_txid", (int64_t)ring_next_txid(seg->ring));
    add_int(o, "txid_stride", (int64_t)ring_txid_stride(seg->ring));
    return o;
}

/* Adds the newest up-to-100 values of one history series, oldest first. */
static void add_history(cJSON *doc, const char *key, const struct shm_history *h, int which)
{
    cJSON *arr = cJSON_AddArrayToObject(doc, key);
    uint64_t next = __atomic_load_n(&h->next, __ATOMIC_ACQUIRE);
    uint64_t have = next < SHM_HISTORY ? next : SHM_HISTORY;
    for (uint64_t k = next - have; k < next; k++) {
        unsigned i = (unsigned)(k % SHM_HISTORY);
        double v = which == 0 ? h->avg_balance[i] : (double)h->queue_depth[i];
        cJSON_AddItemToArray(arr, cJSON_CreateNumber(v));
    }
}

/* Final outcomes per second over the last (up to) five history samples. */
static double applied_rate(const struct shm_history *h)
{
    uint64_t next = __atomic_load_n(&h->next, __ATOMIC_ACQUIRE);
    if (next < 2)
        return 0.0;
    uint64_t span = next - 1 < 5 ? next - 1 : 5;
    unsigned a = (unsigned)((next - 1 - span) % SHM_HISTORY), b = (unsigned)((next - 1) % SHM_HISTORY);
    int64_t dt = h->at_s[b] - h->at_s[a];
    return dt > 0 ? (double)(h->applied_total[b] - h->applied_total[a]) / (double)dt : 0.0;
}

static void add_counts(cJSON *doc, const struct metric_totals *t)
{
    const int64_t *c = t->counters;
    cJSON *counts = cJSON_AddObjectToObject(doc, "transaction_counts");
    add_int(counts, "deposits", c[METRIC_tx_applied_deposit]);
    add_int(counts, "withdrawals", c[METRIC_tx_applied_withdrawal]);
    add_int(counts, "insufficient_funds", c[METRIC_tx_insufficient_funds]);
    add_int(counts, "error", c[METRIC_http_bad_request] + c[METRIC_tx_unknown_account] +
                                 c[METRIC_tx_rejected]);
    add_int(counts, "queue_full", c[METRIC_tx_queue_full]);
    add_int(doc, "total_requests", c[METRIC_http_requests]);

    cJSON *all = cJSON_AddObjectToObject(doc, "counters");
    for (unsigned i = 0; i < METRIC__COUNT; i++)
        add_int(all, metric_table[i].name, c[i]);
}

static void add_latency(cJSON *doc, const struct shm_seg *seg, const struct metric_totals *t)
{
    cJSON *lat = cJSON_AddObjectToObject(doc, "latency_ms");
    cJSON_AddNumberToObject(lat, "p50", (double)metrics_percentile(t, 0.50) / 1e3);
    cJSON_AddNumberToObject(lat, "p90", (double)metrics_percentile(t, 0.90) / 1e3);
    cJSON_AddNumberToObject(lat, "p99", (double)metrics_percentile(t, 0.99) / 1e3);
    cJSON_AddNumberToObject(lat, "max", (double)metrics_max(t) / 1e3);

    struct metric_sample *recent = malloc(sizeof *recent * STATS_RECENT_MAX);
    cJSON *times = cJSON_AddArrayToObject(doc, "transaction_times");
    if (recent == NULL)
        return;
    size_t n = metrics_recent(seg->metrics, n_blocks(seg), recent, STATS_RECENT_MAX);
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(times, cJSON_CreateNumber((double)recent[i].latency_us / 1e6));
    free(recent);
}

/* Requests held open with Prefer: wait, from the worker's commit to the
 * frontend's answer. The top quantile of the histogram is its highest
 * non-empty bucket, the same "max" as latency_ms's. */
static void add_wait(cJSON *doc, const struct metric_totals *t)
{
    cJSON *wait = cJSON_AddObjectToObject(doc, "wait_ms");
    cJSON_AddNumberToObject(wait, "p50", (double)metrics_wait_percentile(t, 0.50) / 1e3);
    cJSON_AddNumberToObject(wait, "p90", (double)metrics_wait_percentile(t, 0.90) / 1e3);
    cJSON_AddNumberToObject(wait, "p99", (double)metrics_wait_percentile(t, 0.99) / 1e3);
    cJSON_AddNumberToObject(wait, "max", (double)metrics_wait_percentile(t, 1.0) / 1e3);
    add_int(wait, "count", (int64_t)t->wait_count);
}

cJSON *stats_metrics_json(const struct shm_seg *seg)
{
    struct metric_totals *t = malloc(sizeof *t);
    cJSON *doc = cJSON_CreateObject();
    if (t == NULL || doc == NULL) {
        free(t);
        cJSON_Delete(doc);
        return NULL;
    }
    metrics_sum(seg->metrics, n_blocks(seg), t);
    struct ring_stats rs;
    ring_stats(seg->ring, &rs);

    add_counts(doc, t);
    add_history(doc, "average_balance_history", seg->history, 0);
    add_latency(doc, seg, t);
    add_wait(doc, t);
    add_history(doc, "queue_size_history", seg->history, 1);
    add_int(doc, "current_queue_size", (int64_t)(rs.depth + rs.claimed));
    cJSON_AddNumberToObject(doc, "applied_per_second", applied_rate(seg->history));
    add_int(doc, "queue_capacity", (int64_t)rs.capacity);
    cJSON_AddNumberToObject(doc, "uptime_s", (double)(clock_wall_us() - seg->hdr->started_at_us) / 1e6);
    cJSON_AddNumberToObject(doc, "master_pid", seg->hdr->master_pid);
    /* 0: the ledger's only instance; 1..NODE_MAX: one of several nodes. */
    cJSON_AddNumberToObject(doc, "node", seg->hdr->params.node_id);

    cJSON *children = stats_children_json(seg);
    if (children != NULL) {
        cJSON_AddItemToObject(doc, "children", cJSON_DetachItemFromObject(children, "children"));
        cJSON_Delete(children);
    }
    cJSON_AddItemToObject(doc, "queue", stats_queue_json(seg));
    free(t);
    return doc;
}
