/* txctl top: a live view of a running server, refreshed every interval. */
#ifndef TXP_TOP_H
#define TXP_TOP_H

#include "common/shm.h"

/* On a terminal: redraws the screen until 'q' or Ctrl-C (or iterations, if
 * > 0). Otherwise: one plain summary line per interval. Returns an exit code. */
int top_run(const struct shm_seg *seg, int iterations, double interval_s);

#endif
