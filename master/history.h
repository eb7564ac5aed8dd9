/* Once-a-second samples for the dashboard series (queue depth, average
 * balance, throughput), taken by the master from counters alone so that
 * nothing on the write path ever waits for them. */
#ifndef TXP_HISTORY_H
#define TXP_HISTORY_H

#include "common/shm.h"

/* Records the current queue depth, average balance and totals. */
void history_sample(struct shm_seg *seg);

#endif
