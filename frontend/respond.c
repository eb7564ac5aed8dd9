/* HTTP answers: status line, headers, body, and the request counters. */
#include "frontend/respond.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "frontend/conn.h"

static const char *reason_phrase(int code)
{
    switch (code) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default:  return "Unknown";
    }
}

static int is_refusal(int code)
{
    return code == 400 || code == 404 || code == 405 || code == 408 || code == 413 ||
           code == 415 || code == 417 || code == 431;
}

void respond_header(struct http_req *req, const char *name, const char *value)
{
    if (http_req_add_header(req, name, value) != 0)
        log_warn("http: cannot add header %s", name);
}

void respond_body(struct http_req *req, struct metric_block *m, int code,
                  const char *content_type, const void *data, size_t len)
{
    metrics_add(m, METRIC_http_requests, 1);
    if (is_refusal(code))
        metrics_add(m, METRIC_http_bad_request, 1);
    http_req_send(req, code, reason_phrase(code), content_type, data, len);
}

void respond_json(struct http_req *req, struct metric_block *m, int code, cJSON *doc)
{
    char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (!text) {
        static const char oom[] = "{\"status\":\"error\",\"message\":\"out of memory\"}";
        log_error("http: out of memory building a JSON response");
        respond_body(req, m, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    respond_body(req, m, code, "application/json", text, strlen(text));
    free(text);
}

void respond_error(struct http_req *req, struct metric_block *m, int code,
                   const char *fmt, ...)
{
    char message[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    /* Messages may quote what the client sent (a path, a field name) and
     * vsnprintf may cut a multi-byte character: keep printable ASCII only,
     * so the body is always valid JSON and a log or terminal shows it safely. */
    for (char *p = message; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
    cJSON *doc = cJSON_CreateObject();
    if (doc && (!cJSON_AddStringToObject(doc, "status", "error") ||
                !cJSON_AddStringToObject(doc, "message", message))) {
        cJSON_Delete(doc);
        doc = NULL;
    }
    respond_json(req, m, code, doc);
}

int respond_add_int64(cJSON *obj, const char *name, int64_t v)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, v);
    return cJSON_AddRawToObject(obj, name, text) ? 0 : -1;
}

int respond_add_time(cJSON *obj, const char *name, int64_t wall_us)
{
    char iso[25];
    clock_format_iso(wall_us, iso);
    return cJSON_AddStringToObject(obj, name, iso) ? 0 : -1;
}
