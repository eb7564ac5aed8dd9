/* Worker process entry point: claims batches from the shared ring, applies
 * them to the ledger in one SQLite transaction, acknowledges, updates its
 * metric block. */
#ifndef TXP_WORKER_H
#define TXP_WORKER_H

#include <stdint.h>

#include "common/config.h"
#include "common/shm.h"

/* Runs until told to stop. slot: the child-table row (and metric block);
 * index: the ring consumer slot (0..workers-1). SIGTERM means drain: keep
 * going until the ring is empty, then exit 0. Returns the process exit code
 * (TXP_EXIT_FATAL if the ledger cannot be opened). */
int worker_main(const struct config *cfg, struct shm_seg *seg, uint32_t slot, uint32_t index);

#endif
