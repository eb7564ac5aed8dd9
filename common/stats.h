/* One read of the shared segment turned into the numbers people look at:
 * the /metrics JSON (prototype keys first) and txctl's views both come from
 * here, so they can never disagree. */
#ifndef TXP_STATS_H
#define TXP_STATS_H

#include <cjson/cJSON.h>

#include "common/shm.h"

/* The full /metrics document. Caller frees with cJSON_Delete. NULL on OOM. */
cJSON *stats_metrics_json(const struct shm_seg *seg);
/* {"children":[{slot, role, index, pid, state, restarts, last_exit, uptime_s}]} */
cJSON *stats_children_json(const struct shm_seg *seg);
/* {"depth","claimed","capacity","high_water","repairs","requeued","next_txid"} */
cJSON *stats_queue_json(const struct shm_seg *seg);

const char *stats_role_name(int role);
const char *stats_state_name(int state);

#endif
