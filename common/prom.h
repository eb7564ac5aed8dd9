/* The Prometheus text exposition (format 0.0.4) of the same shared-memory
 * read that /metrics JSON and txctl come from. */
#ifndef TXP_PROM_H
#define TXP_PROM_H

#include <stddef.h>

#include "common/shm.h"

#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Returns a malloc'd exposition and its length, or NULL on OOM. */
char *prom_render(const struct shm_seg *seg, size_t *len);

/* 1 if a client with this Accept header (may be NULL) and query string
 * (may be NULL) wants the Prometheus format rather than JSON: explicitly by
 * ?format=prometheus, or by accepting text/plain or OpenMetrics without
 * asking for JSON (what Prometheus itself sends). */
int prom_wanted(const char *accept, const char *query);

#endif
