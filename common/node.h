/* Several txprocd nodes on one PostgreSQL ledger: what a node id means.
 *
 * A node is a whole txprocd (master, ring, frontends, workers) started with
 * --node-id N. Its ring numbers transactions N + NODE_STRIDE * k, so the ids
 * of two nodes never meet, and each fresh segment takes its k from a span
 * reserved in the ledger (ledger_reserve_txids), so ids are never reused,
 * not even after a segment is discarded or the node moves to another
 * machine. Without --node-id (node 0) a txprocd is the ledger's only
 * instance and numbers densely, as it always has. */
#ifndef TXP_NODE_H
#define TXP_NODE_H

#include <stdint.h>

#include "common/ring.h"

#define NODE_MAX 63u
#define NODE_STRIDE RING_MAX_STRIDE

/* The node that handed txid out, or 0 if the id was not numbered by a node. */
static inline unsigned node_of_txid(uint64_t txid, unsigned my_node)
{
    return my_node == 0 ? 0u : (unsigned)(txid % NODE_STRIDE);
}

#endif
