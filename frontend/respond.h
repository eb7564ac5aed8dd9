/* Every HTTP answer the frontend gives goes through here, so each one is
 * counted in the metric block once and every error has the same JSON shape:
 * {"status":"error","message":"..."}. */
#ifndef TXP_RESPOND_H
#define TXP_RESPOND_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "common/metrics.h"

struct http_req;

/* Sends data with the given status and Content-Type and counts the request
 * (and, for 400/404/405/408/413/415/417/431, the refusal). The data is the
 * caller's again on return. */
void respond_body(struct http_req *req, struct metric_block *m, int code,
                  const char *content_type, const void *data, size_t len);
/* Sends doc, printed unformatted, as application/json; frees doc. A NULL doc
 * (a failed allocation while building it) becomes a 500. */
void respond_json(struct http_req *req, struct metric_block *m, int code, cJSON *doc);
/* Sends {"status":"error","message":<formatted>}. */
void respond_error(struct http_req *req, struct metric_block *m, int code,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Adds a response header; a failure is logged (it only happens for values
 * with line breaks, which we never build, or out of memory). */
void respond_header(struct http_req *req, const char *name, const char *value);

/* Adds an integer member printed exactly: cJSON keeps numbers as doubles and
 * prints 10^15 as 1e+15, which is not what a client parsing amounts expects.
 * Returns 0 or -1 (out of memory). */
int respond_add_int64(cJSON *obj, const char *name, int64_t v);
/* Adds wall-clock microseconds as an ISO 8601 UTC string; 0 or -1. */
int respond_add_time(cJSON *obj, const char *name, int64_t wall_us);

#endif
