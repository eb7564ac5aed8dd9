/* txprocd: the master process. Reads the configuration, prepares the ledger
 * schema, binds the listening socket, creates (or adopts) the shared segment
 * and hands over to the supervisor, which forks frontends and workers. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "ledger.h"
#include "listener.h"
#include "log.h"
#include "shm.h"
#include "supervisor.h"

static void fill_params(const struct config *cfg, unsigned port, struct shm_params *p)
{
    memset(p, 0, sizeof *p);
    p->queue_capacity = cfg->queue_size;
    p->batch_max = cfg->batch_max;
    p->n_frontends = cfg->frontends;
    p->n_workers = cfg->workers;
    p->port = port;
    snprintf(p->listen, sizeof p->listen, "%s:%u", cfg->listen_host, port);
    snprintf(p->db_path, sizeof p->db_path, "%s", cfg->db_path);
}

/* Ledger totals feed the derived average balance; the balance_delta counter
 * may already hold commits that the ledger sum includes (adopted segment). */
static void record_totals(struct shm_seg *seg, const struct ledger_totals *t)
{
    struct metric_totals sum;
    metrics_sum(seg->metrics, seg->hdr->n_children + 1, &sum);
    seg->hdr->initial_balance_sum = t->balance_sum;
    seg->hdr->initial_balance_delta = sum.counters[METRIC_balance_delta];
    seg->hdr->account_count = t->account_count;
}

int main(int argc, char **argv)
{
    struct config cfg;
    int rc = config_parse(&cfg, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : TXP_EXIT_CONFIG;
    log_set_role("master");
    log_set_level((enum log_level)cfg.log_level);
    signal(SIGPIPE, SIG_IGN);

    struct ledger_totals totals;
    if (ledger_prepare(cfg.db_path, &totals) != 0)
        return 1;
    unsigned port;
    int listen_fd = listener_open(cfg.listen_host, cfg.port, &port);
    if (listen_fd < 0)
        return TXP_EXIT_CONFIG;

    struct shm_params params;
    fill_params(&cfg, port, &params);
    struct shm_seg seg;
    enum shm_open_result how;
    if (shm_open_master(&seg, cfg.shm_name, &params, (uint64_t)totals.max_txid + 1, cfg.discard_shm,
                        &how) != 0) {
        close(listen_fd);
        return TXP_EXIT_CONFIG;
    }
    record_totals(&seg, &totals);
    log_info("txprocd listening on %s:%u; db %s (%lld accounts); shm %s (%s); %u frontends, "
             "%u workers, queue %u, batch %u, sync %s", cfg.listen_host, port, cfg.db_path,
             (long long)totals.account_count, cfg.shm_name, how == SHM_ADOPTED ? "adopted" : "new",
             cfg.frontends, cfg.workers, cfg.queue_size, cfg.batch_max,
             cfg.sync == SYNC_FULL ? "full" : "normal");

    rc = supervisor_run(&cfg, &seg, listen_fd);
    shm_close(&seg);
    return rc;
}
