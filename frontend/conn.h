/* The frontend's HTTP/1.1 layer: accepts connections on the listening socket
 * shared with the other frontends, reads requests with node.js's http-parser
 * into one buffer per connection, refuses what is malformed, ambiguous, too
 * large or too slow with the project's JSON errors, hands each complete
 * request to one handler, and writes each answer with one writev, in request
 * order. It replaces libevent's evhttp, which answered malformed requests
 * with HTML, read a whole oversized body before refusing it, had no header
 * deadline or connection cap, and spun on EMFILE.
 *
 * A request object lives inside its connection and stays valid until it is
 * answered, even if the client goes away meanwhile (a held request is then
 * answered into nothing and the connection freed). One request per
 * connection is handled at a time; pipelined requests wait in the buffer. */
#ifndef TXP_CONN_H
#define TXP_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "common/metrics.h"

struct event_base;
struct http_req;
struct http_server;

/* Methods as a bitmask, so a route can name the set it allows. */
enum http_verb {
    VERB_GET = 1u << 0,
    VERB_HEAD = 1u << 1,
    VERB_POST = 1u << 2,
    VERB_PUT = 1u << 3,
    VERB_DELETE = 1u << 4,
    VERB_PATCH = 1u << 5,
    VERB_OPTIONS = 1u << 6,
    VERB_OTHER = 1u << 7,
};

struct http_limits {
    size_t max_headers;         /* bytes of request line and headers (431 above) */
    unsigned header_timeout_s;  /* first byte of a request to the end of its headers (408) */
    unsigned body_timeout_s;    /* end of the headers to the end of the body (408); also writes */
    unsigned idle_timeout_s;    /* an idle keep-alive connection is closed */
    unsigned max_connections;   /* open connections; above it this frontend stops accepting */
};

/* A complete request; answer it with http_req_send (now or later). */
typedef void (*http_handler)(struct http_req *req, void *arg);
/* The most body bytes the route for this method and path takes (413 above,
 * refused from Content-Length or the chunked total so far, unread). */
typedef size_t (*http_body_limit)(unsigned verb, const char *path, size_t path_len, void *arg);

/* Starts accepting on listen_fd (non-blocking, shared with other processes;
 * -1: none, connections come through http_server_adopt). NULL on failure
 * (logged). */
struct http_server *http_server_new(struct event_base *base, int listen_fd,
                                    const struct http_limits *limits, struct metric_block *m,
                                    http_handler handler, http_body_limit body_limit, void *arg);
/* Stops accepting (the listening socket is closed one loop iteration later,
 * see the comment in conn.c) and makes every connection close after its
 * next answer. Idle keep-alive connections stay open until
 * http_server_free: a request a client is sending on one right now is
 * answered (with Connection: close) rather than lost to a reset. */
void http_server_drain(struct http_server *s);
/* Closes every connection; requests still held are dropped unanswered (the
 * caller answers its held requests before). */
void http_server_free(struct http_server *s);
/* Open connections. */
uint32_t http_server_connections(const struct http_server *s);
/* Serves an already connected non-blocking socket (the fuzzer's socketpair);
 * 0, or -1 (out of memory; fd is not closed). */
int http_server_adopt(struct http_server *s, int fd);

/* -- the request ------------------------------------------------------- */

unsigned http_req_verb(const struct http_req *r);
const char *http_req_method(const struct http_req *r);
/* The path as sent ("/" when the target had none), never NULL. */
const char *http_req_path(const struct http_req *r);
/* The query string after '?', or NULL. */
const char *http_req_query(const struct http_req *r);
/* The first header with this name (case-insensitive), or NULL. */
const char *http_req_header(const struct http_req *r, const char *name);
uint32_t http_req_header_count(const struct http_req *r);
const char *http_req_header_name(const struct http_req *r, uint32_t i);
const char *http_req_header_value(const struct http_req *r, uint32_t i);
/* The body (de-chunked, contiguous, not NUL-terminated); "" when empty. */
const char *http_req_body(const struct http_req *r, size_t *len);

/* Adds a response header for the coming answer; "Connection: close" closes
 * the connection after it. -1 when it does not fit or has a line break. */
int http_req_add_header(struct http_req *r, const char *name, const char *value);
/* Answers r: status line, Content-Type, Content-Length, the added headers and
 * data (left out for HEAD). The data is copied if the socket cannot take it
 * all at once. r must not be used afterwards. */
void http_req_send(struct http_req *r, int code, const char *reason, const char *content_type,
                   const void *data, size_t len);

#endif
