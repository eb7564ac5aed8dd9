/* The single POSIX shared-memory segment every txprocd process maps.
 *
 * LAYOUT (offsets recorded in the header; every part 64-byte aligned)
 *
 *   struct shm_header                 magic, layout version, sizes, master
 *                                     pid, start time, the config it was
 *                                     made with, ledger totals at start
 *   struct shm_child[n_children]      supervision table, one row per child
 *                                     slot: frontends first, then workers
 *   struct metric_block[n_children+1] one block per child slot, the last one
 *                                     the master's
 *   struct shm_history                once-a-second samples (master writes)
 *   completion rings                  n_frontends x n_workers, see completion.h
 *   ring region                       see ring.h
 *
 * WHO WRITES WHAT
 *   master: header, children rows (except heartbeat/state), its metric block,
 *           history, ring recovery (requeue of dead workers' claims)
 *   child:  its own row's heartbeat_us and state, its own metric block, the
 *           ring through ring.h
 *   txctl:  nothing (maps read-only)
 *
 * LIFETIME AND RECOVERY
 *   The master holds an exclusive flock(2) on the segment's descriptor and
 *   every child inherits that descriptor: the lock is free exactly when no
 *   process of the instance is alive. A new master that finds the segment
 *   with the lock free checks magic, layout version and geometry, adopts it
 *   in place (ring_recover requeues everything claimed) and carries on with
 *   the same txid sequence and counters. A clean, fully drained shutdown
 *   unlinks the segment; anything else leaves it for the next master.
 */
#ifndef TXP_SHM_H
#define TXP_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/completion.h"
#include "common/metrics.h"
#include "common/ring.h"

#define SHM_MAGIC 0x5458505244534547ULL /* "TXPRDSEG" */
#define SHM_LAYOUT_VERSION 5
#define SHM_MAX_CHILDREN 64
#define SHM_HISTORY 100

enum child_role { ROLE_FRONTEND = 1, ROLE_WORKER = 2 };

enum child_state {
    CHILD_EMPTY = 0,    /* slot never used */
    CHILD_STARTING = 1, /* forked, not yet serving */
    CHILD_RUNNING = 2,  /* serving / consuming */
    CHILD_DRAINING = 3, /* told to stop, finishing its work */
    CHILD_EXITED = 4,   /* dead; waiting for restart back-off */
    CHILD_FAILED = 5,   /* not restarted (fatal exit or crash loop) */
};

struct shm_child {
    int32_t pid;
    int32_t role;            /* enum child_role */
    int32_t state;           /* enum child_state; child sets RUNNING/DRAINING */
    int32_t index;           /* index within its role (worker 0, worker 1...) */
    uint32_t restarts;
    int32_t last_exit;       /* >= 0 exit status, < 0 -signal, INT32_MIN never exited */
    int64_t started_at_us;   /* wall clock */
    int64_t heartbeat_us;    /* monotonic clock, child writes */
    uint8_t pad[24];
};

/* The configuration the segment was created with; what a recovering master
 * compares against before adopting a segment. */
struct shm_params {
    uint32_t queue_capacity;
    uint32_t batch_max;
    uint32_t n_frontends;
    uint32_t n_workers;
    uint32_t port;
    uint32_t node_id;     /* 0: a single node (common/node.h) */
    char listen[96];
    char db_path[512];
};

struct shm_history {
    uint64_t next;                      /* samples ever written */
    int64_t at_s[SHM_HISTORY];          /* wall clock seconds */
    double avg_balance[SHM_HISTORY];
    int64_t queue_depth[SHM_HISTORY];
    int64_t applied_total[SHM_HISTORY]; /* all final outcomes so far */
    int64_t requests_total[SHM_HISTORY];
};

struct shm_header {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t header_size;
    uint64_t total_size;
    int32_t master_pid;
    int32_t master_state; /* enum master_state */
    int64_t started_at_us;
    int64_t created_at_us;
    uint32_t n_children;
    uint32_t adoptions;   /* times a new master adopted this segment */
    struct shm_params params;
    /* Ledger totals read by the master at start, so the average balance can
     * be derived from counters without SQL on the hot path. */
    double initial_balance_sum;
    int64_t initial_balance_delta; /* balance_delta counter total at that time */
    int64_t account_count;
    int64_t initial_accounts_created; /* accounts_created counter total at that time */
    uint64_t children_off, metrics_off, history_off, completions_off, ring_off, ring_bytes;
} __attribute__((aligned(64)));

/* DRAINING: frontends are stopping (new requests may still be queued).
 * DRAINING_WORKERS: every frontend is gone; workers may exit once the ring is
 * empty. A worker never exits on SIGTERM alone: a signal sent to the whole
 * process group would otherwise stop it while frontends still accept. */
enum master_state {
    MASTER_STARTING = 1,
    MASTER_RUNNING = 2,
    MASTER_DRAINING = 3,
    MASTER_DRAINING_WORKERS = 4,
    MASTER_STOPPED = 5,
};

/* A mapped segment. */
struct shm_seg {
    struct shm_header *hdr;
    struct shm_child *children;
    struct metric_block *metrics; /* n_children + 1 blocks, master's last */
    struct shm_history *history;
    struct ring *ring;
    void *completions;            /* completion_ring_at(completions, n_workers, f, w) */
    /* Per-process, not in shared memory: the eventfd of each frontend index,
     * created by the master before forking (-1 when absent). A worker writes
     * to a frontend's eventfd after publishing outcomes for it. */
    int notify_fd[SHM_MAX_CHILDREN];
    size_t size;
    int fd;
    int writable;
    char name[64];
};

/* Outcome of shm_open_master. */
enum shm_open_result {
    SHM_CREATED = 0,   /* fresh segment */
    SHM_ADOPTED = 1,   /* an abandoned segment was taken over in place */
};

/* How the master's ring numbers transactions. */
struct shm_txids {
    /* An abandoned segment is adopted only if it numbers from here on (one
     * above the largest txid of this node in the ledger); a single node's
     * fresh segment starts here. */
    uint64_t floor;
    uint32_t stride; /* 1, or the node stride */
    /* A fresh segment of a node starts at what this returns (a span of ids
     * reserved in the ledger for it; 0: could not). NULL: at floor. */
    uint64_t (*reserve)(void *arg);
    void *arg;
};

/* Master side: creates the segment, or adopts an abandoned one with the same
 * geometry and node. Fails with a logged reason (return < 0) when another
 * live instance holds it, when it has another layout version (unless discard
 * is set, which drops it), or when its geometry differs while it still holds
 * pending entries. */
int shm_open_master(struct shm_seg *seg, const char *name, const struct shm_params *params,
                    const struct shm_txids *ids, int discard, enum shm_open_result *result);
/* Read-only attach for txctl: validates magic, version and size. Returns 0,
 * or a negative code with a one-line reason in why. */
int shm_attach_readonly(struct shm_seg *seg, const char *name, char *why, size_t why_len);
/* 1 if the instance owning the segment is alive (its flock is held). */
int shm_instance_alive(const struct shm_seg *seg);
void shm_close(struct shm_seg *seg);
/* Removes the segment name (after a fully drained shutdown). */
int shm_unlink_name(const char *name);

/* Metric block of child slot i, or of the master for i == n_children. */
static inline struct metric_block *shm_metrics(struct shm_seg *seg, uint32_t i)
{
    return &seg->metrics[i];
}

/* Completion ring of frontend index f and worker index w. */
static inline struct completion_ring *shm_completions(struct shm_seg *seg, uint32_t f, uint32_t w)
{
    return completion_ring_at(seg->completions, seg->hdr->params.n_workers, f, w);
}

/* Copies a text field of the segment (at most cap bytes, which need not end
 * in NUL) into out for printing: printable ASCII as is, anything else as
 * \xHH, cut to fit outlen. What another process wrote is never printed raw. */
void shm_printable(const char *field, size_t cap, char *out, size_t outlen);

/* Default segment name for a port: "/txprocd-<port>". */
void shm_default_name(char *buf, size_t len, unsigned port);

#endif
