/* The master's supervision loop: forks frontends and workers, restarts the
 * ones that die (with back-off and a crash-loop limit), requeues a dead
 * worker's claims, samples history once a second, and runs the graceful
 * drain on SIGTERM/SIGINT. It never applies a transaction itself. */
#ifndef TXP_SUPERVISOR_H
#define TXP_SUPERVISOR_H

#include "common/config.h"
#include "common/shm.h"
#include "ledger/ledger.h"

/* Runs until the drain completes. Returns the master's exit code: 0 after a
 * complete drain, 1 if entries were left in shared memory for the next start
 * or a role could not run at all. Takes ownership of listen_fd. guard is
 * checked once a second (ledger_guard_check): if another instance took the
 * ledger, the workers are killed at once and the server drains without
 * them. */
int supervisor_run(const struct config *cfg, struct shm_seg *seg, int listen_fd,
                   struct ledger_guard *guard);

#endif
