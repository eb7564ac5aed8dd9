/* Frontend process entry point: an HTTP/1.1 server on the listening socket
 * inherited from the master, validating requests and enqueuing transactions
 * into the shared ring. Reads the ledger (read-only) for lookups; never
 * writes it. */
#ifndef TXP_FRONTEND_H
#define TXP_FRONTEND_H

#include <stdint.h>

#include "common/config.h"
#include "common/shm.h"

/* Serves until SIGTERM: then stops accepting, finishes requests in flight
 * and returns 0. Returns TXP_EXIT_FATAL if it cannot set up (e.g. no DB). */
int frontend_main(const struct config *cfg, struct shm_seg *seg, int listen_fd, uint32_t slot,
                  uint32_t index);

#endif
