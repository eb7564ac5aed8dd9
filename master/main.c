/* txprocd: the master process. Reads the configuration, prepares the ledger
 * schema, binds the listening socket, creates (or adopts) the shared segment
 * and hands over to the supervisor, which forks frontends and workers. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/config.h"
#include "common/flockwait.h"
#include "common/log.h"
#include "common/node.h"
#include "common/shm.h"
#include "ledger/ledger.h"
#include "master/listener.h"
#include "master/supervisor.h"

static void fill_params(const struct config *cfg, unsigned port, struct shm_params *p)
{
    memset(p, 0, sizeof *p);
    p->queue_capacity = cfg->queue_size;
    p->batch_max = cfg->batch_max;
    p->n_frontends = cfg->frontends;
    p->n_workers = cfg->workers;
    p->port = port;
    p->node_id = cfg->node_id;
    snprintf(p->listen, sizeof p->listen, "%s:%u", cfg->listen_host, port);
    /* What txctl shows: never a password. */
    ledger_describe(cfg->db_path, p->db_path, sizeof p->db_path);
}

static uint64_t reserve_txids(void *guard)
{
    return ledger_reserve_txids(guard);
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
    seg->hdr->initial_accounts_created = sum.counters[METRIC_accounts_created];
}

/* Run as an unprivileged user once the (possibly privileged) port is bound,
 * before the ledger and the segment are created, so both belong to it. */
static int drop_privileges(const char *user)
{
    if (user[0] == '\0')
        return 0;
    if (geteuid() != 0) {
        log_warn("--user %s ignored: not started as root", user);
        return 0;
    }
    struct passwd *pw = getpwnam(user);
    if (pw == NULL) {
        log_error("--user %s: no such user", user);
        return -1;
    }
    if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0) {
        log_error("--user %s: cannot switch to uid %u: %s", user, (unsigned)pw->pw_uid, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0) {
        log_error("--user %s: root privileges could be regained; refusing to run", user);
        return -1;
    }
    log_info("running as user %s (uid %u, gid %u)", user, (unsigned)pw->pw_uid, (unsigned)pw->pw_gid);
    return 0;
}

/* Each connection is a descriptor: the soft open-file limit (often 1024) is
 * raised to the hard one, as nginx's worker_rlimit_nofile would, so that
 * --max-connections rather than EMFILE is what limits a frontend. Children
 * inherit it. A limit below the cap is worth a warning, not a refusal: the
 * frontends pause accepting when they run out. */
static void raise_nofile(const struct config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        log_warn("getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            log_warn("cannot raise the open-file limit from %llu: %s", (unsigned long long)was,
                     strerror(errno));
            rl.rlim_cur = was;
        }
    }
    rlim_t want = (rlim_t)cfg->max_connections + 64; /* + the ledger, eventfds, shm, log */
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want)
        log_warn("open-file limit %llu is below --max-connections %u: a frontend will stop "
                 "accepting when it runs out (raise it with ulimit -n or LimitNOFILE=)",
                 (unsigned long long)rl.rlim_cur, cfg->max_connections);
}

int main(int argc, char **argv)
{
    struct config cfg;
    int rc = config_parse(&cfg, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : TXP_EXIT_CONFIG;
    /* The ledger's password (if the URI holds one) stays in cfg only: ps
     * and /proc/<pid>/cmdline of this process and its children show '*'s. */
    for (int i = 1; i < argc; i++)
        ledger_hide_password(argv[i]);
    log_set_role("master");
    log_set_level((enum log_level)cfg.log_level);
    log_set_format((enum log_format)cfg.log_format);
    log_set_node(cfg.node_id);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile(&cfg);

    unsigned port;
    int listen_fd = listener_open(cfg.listen_host, cfg.port, &port);
    if (listen_fd < 0)
        return TXP_EXIT_CONFIG;
    if (drop_privileges(cfg.user) != 0)
        return TXP_EXIT_CONFIG;
    /* One instance per ledger or node (ledger_guard_take says why); held
     * until exit. */
    struct ledger_guard *guard = ledger_guard_take(cfg.db_path, cfg.node_id, FLOCK_WAIT_MS);
    if (guard == NULL)
        return TXP_EXIT_CONFIG;
    struct ledger_totals totals;
    if (ledger_prepare(cfg.db_path, &totals) != 0) {
        ledger_guard_release(guard);
        return 1;
    }

    struct shm_params params;
    fill_params(&cfg, port, &params);
    struct shm_seg seg;
    enum shm_open_result how;
    /* The only instance numbers on from the ledger, above any span nodes
     * reserved (their segments may still hold queued ids); a node from a
     * span of its own. */
    struct shm_txids ids = { .floor = (uint64_t)(totals.max_txid > totals.max_reserved
                                                     ? totals.max_txid : totals.max_reserved) + 1,
                             .stride = 1 };
    if (cfg.node_id != 0)
        ids = (struct shm_txids){ .floor = 1, .stride = NODE_STRIDE, .reserve = reserve_txids,
                                  .arg = guard };
    if (shm_open_master(&seg, cfg.shm_name, &params, &ids, cfg.discard_shm, &how) != 0) {
        close(listen_fd);
        ledger_guard_release(guard);
        return TXP_EXIT_CONFIG;
    }
    if (cfg.node_id != 0 && how == SHM_ADOPTED &&
        ledger_keep_txids(guard, seg.ring->txid_base) != 0) {
        shm_close(&seg);
        close(listen_fd);
        ledger_guard_release(guard);
        return TXP_EXIT_CONFIG;
    }
    record_totals(&seg, &totals);
    char db[256];
    ledger_describe(cfg.db_path, db, sizeof db);
    char node[24] = "";
    if (cfg.node_id != 0)
        snprintf(node, sizeof node, "node %u, ", cfg.node_id);
    log_info("txprocd listening on %s:%u; %sdb %s (%lld accounts); shm %s (%s, next txid %llu); "
             "%u frontends, %u workers, queue %u, batch %u, sync %s", cfg.listen_host, port, node,
             db, (long long)totals.account_count, cfg.shm_name,
             how == SHM_ADOPTED ? "adopted" : "new", (unsigned long long)ring_next_txid(seg.ring),
             cfg.frontends, cfg.workers, cfg.queue_size, cfg.batch_max,
             cfg.sync == SYNC_FULL ? "full" : "normal");

    rc = supervisor_run(&cfg, &seg, listen_fd, guard);
    shm_close(&seg);
    ledger_guard_release(guard);
    return rc;
}
