/* Connections and requests of the HTTP/1.1 layer; see conn.h.
 *
 * Each connection reads into one buffer that holds the request being parsed
 * contiguously, so header names, values, the path and a Content-Length body
 * are pointers into it (no allocation per request) and a chunked body is
 * moved down over its chunk framing as it arrives. Buffers of the common
 * size come from a small free list and go back to it when a connection is
 * idle with nothing buffered, so idle connections cost no buffer at all.
 *
 * http-parser is built without its strict checks in Debian: bare LF line
 * ends, obs-fold and NUL bytes in the head are refused here, by one scan of
 * each head byte before the parser sees it, so that no proxy in front of us
 * can read the head differently. */
#include "frontend/conn.h"

#include <errno.h>
#include <event2/event.h>
#include <http_parser.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/check.h"
#include "common/clock.h"
#include "common/hex.h"
#include "common/log.h"
#include "frontend/respond.h"

#define BUF_SMALL 4096        /* most requests and all idle reads fit */
#define BUF_POOL_MAX 64       /* small buffers kept for reuse */
#define MAX_HEADER_LINES 64   /* header fields per request (431 above) */
#define OUT_HEADERS 512       /* bytes of headers a handler may add */
/* One accept per wake-up: every frontend polls the shared listening socket
 * and is woken for each new connection, so the least busy one, back in
 * epoll_wait first, takes it. Accepting a burst let one frontend take most
 * of a client's connections (wrk's 64: 2:1), leaving the other half idle;
 * with one each the two frontends share the load and ingest went from
 * 30,000 to 45,000 requests/s on 2 cores. */
#define ACCEPT_BURST 1
#define ACCEPT_RETRY_MS 100   /* next try after running out of descriptors */
#define PAUSE_LOG_EVERY_S 10  /* at most one warning per kind of pause */
#define CHUNK_SLACK 4096      /* framing read ahead of a chunked body */
#define LINGER_S 2            /* reading what follows a refused request, at most */

/* The connection timers take one of four durations: libevent's common
 * timeouts keep each in a queue of its own, so arming and disarming one (a
 * few times per request) is O(1) instead of a heap operation. */
enum timer_kind { T_HEADER, T_BODY, T_IDLE, T_LINGER, T__COUNT };

enum chunk_state {
    CS_SIZE_START, CS_SIZE, CS_BWS, CS_EXT, CS_SIZE_LF, CS_DATA, CS_DATA_CR, CS_DATA_LF,
    CS_TRAILER_START, CS_TRAILER, CS_TRAILER_LF, CS_END_LF, CS_DONE,
};

enum conn_state {
    ST_IDLE,     /* between requests */
    ST_HEAD,     /* reading a request's line and headers */
    ST_BODY,     /* reading its body */
    ST_HANDLING, /* handed to the handler, not answered yet */
    ST_WRITING,  /* answered, the answer not all written */
    ST_LINGER,   /* refused and answered: discarding input until EOF, then closed */
    ST_CLOSED,   /* socket closed; freed when nothing refers to it */
};

struct hdr {
    uint32_t name, name_len;   /* offsets into the buffer while parsing */
    uint32_t value, value_len; /* value_len 0: empty */
    const char *name_p, *value_p;
};

struct http_req {
    struct conn *conn;
    unsigned verb;
    const char *method;
    const char *path;
    const char *query;
    uint32_t n_headers;
    struct hdr headers[MAX_HEADER_LINES];
    const char *body;
    size_t body_len;
    int head_only; /* HEAD: the answer has no body */
    int close;     /* close the connection after the answer */
    int http10;    /* an HTTP/1.0 client that asked for keep-alive */
    size_t out_len;
    char out[OUT_HEADERS];
};

struct conn {
    struct conn *prev, *next; /* the server's list */
    struct http_server *srv;
    int fd;
    enum conn_state state;
    int in_run;         /* conn_run is on the stack: do not free */
    int eof;            /* the client sent FIN */
    int reading;        /* the read event is added */
    int linger;         /* refused: linger before closing */
    char *buf;
    size_t cap, len;    /* buffer size, bytes in it */
    size_t pos;         /* bytes parsed */
    size_t msg_start;   /* where the current request starts */
    size_t scan;        /* head bytes checked by scan_head */
    int head_done;      /* the blank line ending the head was seen */
    uint32_t url, url_len;
    int last_was_value; /* header callbacks: a value came last */
    size_t body_off, body_len, body_limit;
    size_t cscan;       /* chunked body bytes checked by scan_chunks; SIZE_MAX: from pos */
    int cs_state;       /* enum chunk_state */
    uint64_t cs_left;   /* chunk size being read, then its data bytes still to come */
    int abort;          /* end the connection without an answer (a failed 100 Continue) */
    int chunked;        /* this request's body is chunked: from its headers, kept here
                         * because http-parser clears F_CHUNKED while it reads a
                         * Transfer-Encoding field in the trailers */
    int refused_code;   /* set by a callback that refuses the request */
    char refused_msg[160];
    char *out;          /* what writev could not send */
    size_t out_len, out_off;
    http_parser parser;
    struct event *ev_read, *ev_write, *timer;
    struct http_req req;
};

struct http_server {
    struct event_base *base;
    int listen_fd;
    struct event *ev_accept, *ev_retry;
    struct http_limits lim;
    struct metric_block *metrics;
    http_handler handler;
    http_body_limit body_limit;
    void *arg;
    struct conn *conns;
    uint32_t n_conns;
    int accept_paused;  /* the accept event is removed */
    int fd_short;       /* in an episode of EMFILE/ENFILE */
    int at_cap;         /* in an episode at max_connections */
    int64_t cap_logged_us, short_logged_us; /* last warnings */
    uint64_t caps_unlogged, shorts_unlogged; /* pauses since */
    int draining;
    int64_t short_since_us;
    char *pool[BUF_POOL_MAX];
    uint32_t n_pool;
    const struct timeval *tv[T__COUNT]; /* per enum timer_kind, from event_base_init_common_timeout */
};

static http_parser_settings settings;
static void conn_run(struct conn *c);
static void conn_close(struct conn *c);
static void accept_resume(struct http_server *s);

/* -- buffers --------------------------------------------------------------- */

static char *buf_get(struct http_server *s)
{
    if (s->n_pool > 0)
        return s->pool[--s->n_pool];
    return malloc(BUF_SMALL);
}

static void buf_release(struct conn *c)
{
    struct http_server *s = c->srv;
    if (c->buf == NULL)
        return;
    if (c->cap == BUF_SMALL && s->n_pool < BUF_POOL_MAX)
        s->pool[s->n_pool++] = c->buf;
    else
        free(c->buf);
    c->buf = NULL;
    c->cap = c->len = c->pos = c->msg_start = c->scan = 0;
}

/* Makes room for at least `want` bytes in all; 0 or -1 (out of memory). The
 * buffer moves: only offsets may be kept across this call. */
static int buf_reserve(struct conn *c, size_t want)
{
    if (c->buf && c->cap >= want)
        return 0;
    size_t cap = want < BUF_SMALL ? BUF_SMALL : want;
    if (c->buf == NULL) {
        c->buf = cap == BUF_SMALL ? buf_get(c->srv) : malloc(cap);
        c->cap = c->buf ? cap : 0;
        return c->buf ? 0 : -1;
    }
    char *p = malloc(cap);
    if (p == NULL)
        return -1;
    memcpy(p, c->buf, c->len);
    size_t len = c->len, pos = c->pos, start = c->msg_start, scan = c->scan;
    buf_release(c);
    c->buf = p;
    c->cap = cap;
    c->len = len;
    c->pos = pos;
    c->msg_start = start;
    c->scan = scan;
    return 0;
}

/* Moves unparsed bytes to the front between requests. */
static void buf_compact(struct conn *c)
{
    if (c->buf == NULL)
        return;
    size_t rest = c->len - c->pos;
    if (rest == 0) {
        buf_release(c);
        return;
    }
    if (c->pos > 0)
        memmove(c->buf, c->buf + c->pos, rest);
    c->len = rest;
    c->pos = c->msg_start = c->scan = 0;
}

/* -- events ---------------------------------------------------------------- */

static void set_reading(struct conn *c, int on)
{
    if (on == c->reading || c->fd < 0)
        return;
    if ((on ? event_add(c->ev_read, NULL) : event_del(c->ev_read)) != 0)
        log_warn("http: cannot %s reading a connection", on ? "resume" : "pause");
    c->reading = on;
}

static void arm_timer(struct conn *c, enum timer_kind kind)
{
    if (evtimer_add(c->timer, c->srv->tv[kind]) != 0)
        log_warn("http: cannot arm a connection timer");
}

/* -- answering ------------------------------------------------------------- */

/* The Date header, formatted once a second. */
static const char *date_header(void)
{
    static time_t last;
    static char text[64];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(text, sizeof text, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        last = now;
    }
    return text;
}

static void on_write(evutil_socket_t fd, short events, void *arg);

/* Ends a connection whose request is answered (or cannot be). After a
 * refusal the client may still be sending (the rest of a body we would not
 * read): closing with unread input makes the kernel send a reset, which can
 * destroy our answer before the client reads it. So a refused connection
 * half-closes and discards what comes for a short while first, as nginx's
 * lingering close does; nothing is kept, so it costs no memory. */
static void answered_close(struct conn *c)
{
    if (c->linger && !c->eof && c->fd >= 0 && shutdown(c->fd, SHUT_WR) == 0) {
        c->state = ST_LINGER;
        buf_release(c);
        set_reading(c, 1);
        arm_timer(c, T_LINGER);
        return;
    }
    c->state = ST_CLOSED;
    conn_close(c);
}

/* After an answer is out: the next request (pipelined ones are still
 * answered after the client's FIN), or the close. */
static void answer_done(struct conn *c)
{
    if (c->req.close || c->srv->draining) {
        answered_close(c);
        return;
    }
    c->state = ST_IDLE;
    if (!c->in_run)
        conn_run(c);
}

void http_req_send(struct http_req *r, int code, const char *reason, const char *content_type,
                   const void *data, size_t len)
{
    struct conn *c = r->conn;
    ASSERT(c->state == ST_HANDLING);
    if (c->fd < 0) { /* the client went away while the request was held */
        answered_close(c);
        return;
    }
    if (c->srv->draining)
        r->close = 1;
    char head[256 + OUT_HEADERS];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\n%sContent-Type: %s\r\nContent-Length: %zu\r\n%s%.*s\r\n",
                     code, reason, date_header(), content_type, len,
                     r->close ? "Connection: close\r\n"
                              : (r->http10 ? "Connection: keep-alive\r\n" : ""),
                     (int)r->out_len, r->out);
    ASSERT(n > 0 && (size_t)n < sizeof head);
    struct iovec iov[2] = { { head, (size_t)n }, { (void *)data, r->head_only ? 0 : len } };
    int iovcnt = iov[1].iov_len ? 2 : 1;
    size_t total = iov[0].iov_len + iov[1].iov_len;
    ssize_t w = writev(c->fd, iov, iovcnt);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        answered_close(c); /* EPIPE, ECONNRESET: nobody to answer */
        return;
    }
    size_t done = w < 0 ? 0 : (size_t)w;
    if (done == total) {
        answer_done(c);
        return;
    }
    c->out_len = total - done;
    c->out_off = 0;
    c->out = malloc(c->out_len);
    if (c->out == NULL) {
        log_error("http: out of memory for a %zu byte answer", c->out_len);
        answered_close(c);
        return;
    }
    size_t o = 0;
    for (int i = 0; i < iovcnt; i++) {
        size_t skip = done > iov[i].iov_len ? iov[i].iov_len : done;
        done -= skip;
        memcpy(c->out + o, (char *)iov[i].iov_base + skip, iov[i].iov_len - skip);
        o += iov[i].iov_len - skip;
    }
    c->state = ST_WRITING;
    if (event_add(c->ev_write, NULL) != 0) {
        log_warn("http: cannot wait to write an answer");
        answered_close(c);
        return;
    }
    arm_timer(c, T_BODY);
}

static void on_write(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    struct conn *c = arg;
    ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (w <= 0) {
        conn_close(c);
        return;
    }
    c->out_off += (size_t)w;
    if (c->out_off < c->out_len)
        return;
    free(c->out);
    c->out = NULL;
    event_del(c->ev_write);
    evtimer_del(c->timer);
    answer_done(c);
}

int http_req_add_header(struct http_req *r, const char *name, const char *value)
{
    if (strcasecmp(name, "Connection") == 0 && strcasecmp(value, "close") == 0) {
        r->close = 1;
        return 0;
    }
    if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
        return -1;
    size_t room = sizeof r->out - r->out_len;
    int n = snprintf(r->out + r->out_len, room, "%s: %s\r\n", name, value);
    if (n < 0 || (size_t)n >= room)
        return -1;
    r->out_len += (size_t)n;
    return 0;
}

/* Answers a request the layer refuses, and closes after it. */
static void refuse(struct conn *c, int code, const char *message)
{
    c->state = ST_HANDLING;
    c->linger = 1;
    c->req.close = 1;
    c->req.head_only = 0;
    c->req.out_len = 0;
    set_reading(c, 0);
    respond_error(&c->req, c->srv->metrics, code, "%s", message);
}

/* -- the request ------------------------------------------------------------ */

unsigned http_req_verb(const struct http_req *r) { return r->verb; }
const char *http_req_method(const struct http_req *r) { return r->method; }
const char *http_req_path(const struct http_req *r) { return r->path; }
const char *http_req_query(const struct http_req *r) { return r->query; }
uint32_t http_req_header_count(const struct http_req *r) { return r->n_headers; }

const char *http_req_header_name(const struct http_req *r, uint32_t i)
{
    ASSERT(i < r->n_headers);
    return r->headers[i].name_p;
}

const char *http_req_header_value(const struct http_req *r, uint32_t i)
{
    ASSERT(i < r->n_headers);
    return r->headers[i].value_p;
}

const char *http_req_header(const struct http_req *r, const char *name)
{
    for (uint32_t i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->headers[i].name_p, name) == 0)
            return r->headers[i].value_p;
    return NULL;
}

const char *http_req_body(const struct http_req *r, size_t *len)
{
    *len = r->body_len;
    return r->body_len ? r->body : "";
}

static unsigned verb_of(unsigned method)
{
    switch (method) {
    case HTTP_GET: return VERB_GET;
    case HTTP_HEAD: return VERB_HEAD;
    case HTTP_POST: return VERB_POST;
    case HTTP_PUT: return VERB_PUT;
    case HTTP_DELETE: return VERB_DELETE;
    case HTTP_PATCH: return VERB_PATCH;
    case HTTP_OPTIONS: return VERB_OPTIONS;
    default: return VERB_OTHER;
    }
}

struct target {
    size_t path, path_len;   /* path_len 0: no path ("/") */
    size_t query, query_len;
    int has_query;
};

/* The path and query of the request target, as offsets into it; -1 if it
 * is malformed. An absolute-form target ("http://host/path") has both too. */
static int split_target(const char *url, size_t len, struct target *t)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (len == 0 || http_parser_parse_url(url, len, 0, &u) != 0)
        return -1;
    *t = (struct target){ 0 };
    if (u.field_set & (1 << UF_PATH)) {
        t->path = u.field_data[UF_PATH].off;
        t->path_len = u.field_data[UF_PATH].len;
    }
    if (u.field_set & (1 << UF_QUERY)) {
        t->has_query = 1;
        t->query = u.field_data[UF_QUERY].off;
        t->query_len = u.field_data[UF_QUERY].len;
    }
    return 0;
}

static void trim_value(const char *buf, struct hdr *h)
{
    while (h->value_len > 0 &&
           (buf[h->value + h->value_len - 1] == ' ' || buf[h->value + h->value_len - 1] == '\t'))
        h->value_len--;
}

/* Turns the parsed offsets into NUL-terminated strings in the buffer: every
 * byte overwritten (the ':' after a name, the CR after a value, the space or
 * '?' after the target) has been parsed already. */
static int finish_request(struct conn *c)
{
    struct http_req *r = &c->req;
    char *b = c->buf;
    struct target t;
    if (split_target(b + c->url, c->url_len, &t) != 0)
        return -1;
    for (uint32_t i = 0; i < r->n_headers; i++) {
        struct hdr *h = &r->headers[i];
        h->name_p = b + h->name;
        b[h->name + h->name_len] = '\0';
        if (h->value_len > 0) {
            h->value_p = b + h->value;
            b[h->value + h->value_len] = '\0';
        } else {
            h->value_p = "";
        }
    }
    char *url = b + c->url;
    url[c->url_len] = '\0';
    if (t.has_query) {
        url[t.query + t.query_len] = '\0';
        r->query = url + t.query;
    } else {
        r->query = NULL;
    }
    if (t.path_len > 0) {
        url[t.path + t.path_len] = '\0';
        r->path = url + t.path;
    } else {
        r->path = "/";
    }
    r->body = c->body_len ? b + c->body_off : "";
    r->body_len = c->body_len;
    return 0;
}

/* -- parser callbacks ------------------------------------------------------- */

static int refuse_in_callback(struct conn *c, int code, const char *fmt, const char *arg)
{
    c->refused_code = code;
    snprintf(c->refused_msg, sizeof c->refused_msg, fmt, arg);
    return -1;
}

/* The route's body limit passed: from Content-Length, a chunk's size or
 * the data so far. */
static int refuse_too_large(struct conn *c)
{
    snprintf(c->refused_msg, sizeof c->refused_msg, "request body larger than %zu bytes",
             c->body_limit);
    c->refused_code = 413;
    return -1;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    size_t off = (size_t)(at - c->buf);
    for (size_t i = 0; i < len; i++) /* non-strict http-parser lets a tab through */
        if ((unsigned char)at[i] <= ' ' || at[i] == 0x7f)
            return refuse_in_callback(c, 400, "%s", "white space or a control byte in the request target");
    if (c->url_len == 0)
        c->url = (uint32_t)off;
    else if (off != (size_t)c->url + c->url_len)
        return refuse_in_callback(c, 400, "%s", "malformed request target");
    c->url_len += (uint32_t)len;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct http_req *r = &c->req;
    if (c->state == ST_BODY)
        return 0; /* a chunked body's trailer fields: not kept */
    /* "Content-Length : 5": non-strict http-parser takes it as the length; a
     * proxy may not. RFC 9112 5.1: 400. */
    if (memchr(at, ' ', len) || memchr(at, '\t', len))
        return refuse_in_callback(c, 400, "%s", "white space in a header field name");
    size_t off = (size_t)(at - c->buf);
    if (r->n_headers == 0 || c->last_was_value) {
        if (r->n_headers == MAX_HEADER_LINES)
            return refuse_in_callback(c, 431, "more than %s header fields", "64");
        r->headers[r->n_headers++] = (struct hdr){ .name = (uint32_t)off };
        c->last_was_value = 0;
    }
    struct hdr *h = &r->headers[r->n_headers - 1];
    if (off != (size_t)h->name + h->name_len)
        return refuse_in_callback(c, 400, "%s", "malformed header field");
    h->name_len += (uint32_t)len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct http_req *r = &c->req;
    if (c->state == ST_BODY)
        return 0;
    if (r->n_headers == 0)
        return refuse_in_callback(c, 400, "%s", "header value without a name");
    struct hdr *h = &r->headers[r->n_headers - 1];
    size_t off = (size_t)(at - c->buf);
    if (!c->last_was_value) {
        h->value = (uint32_t)off;
        h->value_len = 0;
        c->last_was_value = 1;
    } else if (off != (size_t)h->value + h->value_len) {
        return refuse_in_callback(c, 400, "%s", "folded header line (obs-fold)");
    }
    h->value_len += (uint32_t)len;
    return 0;
}

static int name_is(const struct conn *c, const struct hdr *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && strncasecmp(c->buf + h->name, name, n) == 0;
}

static int value_is(const struct conn *c, const struct hdr *h, const char *value)
{
    size_t n = strlen(value);
    return h->value_len == n && strncasecmp(c->buf + h->value, value, n) == 0;
}

/* RFC 9112 section 6.3: a request whose body length is ambiguous is a 400
 * followed by a close; so is any transfer coding but a single "chunked". */
static int on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    struct http_req *r = &c->req;
    int lengths = 0, encodings = 0, bad_encoding = 0, expect = 0, bad_expect = 0, hosts = 0;
    /* The request line exactly: METHOD SP target SP "HTTP/1.x" (non-strict
     * http-parser also takes "HXYZ/1.1" and two spaces). */
    if (p->http_major != 1) /* before the line check: HTTP/0.9 has no version to compare */
        return refuse_in_callback(c, 400, "%s", "unsupported HTTP version (1.0 and 1.1 are)");
    const char *method = http_method_str((enum http_method)p->method);
    size_t mlen = strlen(method);
    if (c->url + c->url_len + 8 > c->scan || c->url != c->msg_start + mlen + 1 ||
        memcmp(c->buf + c->msg_start, method, mlen) != 0 ||
        c->buf[c->msg_start + mlen] != ' ' ||
        memcmp(c->buf + c->url + c->url_len, " HTTP/1.", 8) != 0)
        return refuse_in_callback(c, 400, "%s", "malformed request line");
    for (uint32_t i = 0; i < r->n_headers; i++) {
        struct hdr *h = &r->headers[i];
        trim_value(c->buf, h);
        if (name_is(c, h, "Host")) {
            hosts++;
        } else if (name_is(c, h, "Content-Length")) {
            lengths++;
        } else if (name_is(c, h, "Transfer-Encoding")) {
            encodings++;
            bad_encoding |= !value_is(c, h, "chunked");
        } else if (name_is(c, h, "Expect")) {
            expect = 1;
            bad_expect |= !value_is(c, h, "100-continue");
        }
    }
    if (lengths > 1)
        return refuse_in_callback(c, 400, "%s", "more than one Content-Length header");
    if (encodings > 1 || bad_encoding)
        return refuse_in_callback(c, 400, "%s", "Transfer-Encoding must be chunked, once");
    if (lengths && encodings)
        return refuse_in_callback(c, 400, "%s", "Content-Length together with Transfer-Encoding");
    if (encodings && p->http_minor == 0) /* RFC 9112 6.1: faulty framing */
        return refuse_in_callback(c, 400, "%s", "Transfer-Encoding in an HTTP/1.0 request");
    if (hosts > 1 || (hosts == 0 && p->http_minor >= 1)) /* RFC 9112 3.2 */
        return refuse_in_callback(c, 400, "%s", "an HTTP/1.1 request needs exactly one Host header");
    if (bad_expect)
        return refuse_in_callback(c, 417, "%s", "Expect: only 100-continue is supported");
    struct target t;
    if (split_target(c->buf + c->url, c->url_len, &t) != 0)
        return refuse_in_callback(c, 400, "%s", "malformed request target");
    const char *path = t.path_len ? c->buf + c->url + t.path : "/";
    c->body_limit = c->srv->body_limit(verb_of(p->method), path, t.path_len ? t.path_len : 1,
                                       c->srv->arg);
    int chunked = c->chunked = (p->flags & F_CHUNKED) != 0;
    if (!chunked && p->content_length != ULLONG_MAX && p->content_length > c->body_limit) {
        return refuse_too_large(c);
    }
    c->head_done = 1;
    c->state = ST_BODY;
    c->body_off = c->body_len = 0;
    c->cscan = SIZE_MAX;
    c->cs_state = CS_SIZE_START;
    c->cs_left = 0;
    int has_body = chunked || (p->content_length != ULLONG_MAX && p->content_length > 0);
    if (has_body) {
        arm_timer(c, T_BODY);
        if (expect && p->http_major == 1 && p->http_minor >= 1) {
            /* Sent at once on a socket with nothing else pending (one
             * request at a time). If it does not all fit, the stream is no
             * longer whole: end the connection without an answer. */
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (write(c->fd, cont, sizeof cont - 1) != (ssize_t)(sizeof cont - 1)) {
                c->abort = 1;
                return -1;
            }
        }
    }
    return 0;
}

/* Gathers the body at body_off: in place for Content-Length, moved down
 * over the chunk framing for chunked (every byte moved over was parsed). */
static int on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->body_len + len > c->body_limit) {
        return refuse_too_large(c);
    }
    size_t off = (size_t)(at - c->buf);
    if (c->body_len == 0)
        c->body_off = off;
    else if (off != c->body_off + c->body_len)
        memmove(c->buf + c->body_off + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

/* A chunk's size is known before its data: refuse as soon as the total
 * would pass the limit, without reading the chunk. */
static int on_chunk_header(http_parser *p)
{
    struct conn *c = p->data;
    if (p->content_length > c->body_limit - c->body_len) {
        return refuse_too_large(c);
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_parser_pause(p, 1);
    return 0;
}

static void settings_init(void)
{
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_chunk_header = on_chunk_header;
    settings.on_message_complete = on_message_complete;
}

/* -- reading and parsing ---------------------------------------------------- */

/* Checks the head bytes not checked yet, up to the blank line: no NUL, every
 * LF after a CR, no line starting with white space (obs-fold). 0, or -1
 * with the refusal set. */
static int scan_head(struct conn *c)
{
    const char *b = c->buf;
    size_t i = c->scan;
    for (; i < c->len; i++) {
        char ch = b[i];
        if (ch == '\0')
            return refuse_in_callback(c, 400, "%s", "NUL byte in the request head");
        if (ch == '\r') {
            if (i + 1 == c->len)
                break; /* the byte after it decides: wait for it */
            if (b[i + 1] != '\n')
                return refuse_in_callback(c, 400, "%s", "bare CR in the request head");
            continue;
        }
        if (ch == '\n') {
            if (i == c->msg_start || b[i - 1] != '\r')
                return refuse_in_callback(c, 400, "%s", "bare LF in the request head (CRLF required)");
            if (i >= c->msg_start + 3 && b[i - 2] == '\n') { /* CRLF CRLF */
                c->head_done = 1;
                i++;
                break;
            }
        } else if ((ch == ' ' || ch == '\t') && i > c->msg_start && b[i - 1] == '\n') {
            return refuse_in_callback(c, 400, "%s", "folded header line (obs-fold)");
        }
    }
    c->scan = i;
    return 0;
}

/* What the parser refused at byte `at`, in words that name the header where
 * there is one: the client should learn which of its fields was wrong. */
static void parse_error(const struct conn *c, enum http_errno e, size_t at, char *why, size_t len)
{
    if (e == HPE_UNEXPECTED_CONTENT_LENGTH) {
        snprintf(why, len, "ambiguous body length: a second Content-Length, or one with "
                 "Transfer-Encoding");
        return;
    }
    if (e == HPE_INVALID_CONTENT_LENGTH) {
        snprintf(why, len, "Content-Length must be a non-negative whole number");
        return;
    }
    if (e == HPE_INVALID_HEADER_TOKEN || e == HPE_LF_EXPECTED) {
        size_t line = at; /* the start of the line the bad byte is on */
        while (line > c->msg_start && c->buf[line - 1] != '\n')
            line--;
        const char *colon = memchr(c->buf + line, ':', at - line);
        if (colon) {
            int n = (int)(colon - (c->buf + line));
            snprintf(why, len, "header %.*s: invalid character in its value", n > 64 ? 64 : n,
                     c->buf + line);
        } else {
            snprintf(why, len, "malformed header field name");
        }
        return;
    }
    snprintf(why, len, "malformed request (%s)", http_errno_description(e));
}

/* Non-strict http-parser is as lax in chunk framing as in the head (any two
 * bytes after a chunk's data, a bare CR or LF ending a size line, control
 * bytes in an extension). This checks the framing of a chunked body ahead of
 * the parser, strictly (RFC 9112 7.1), so that no proxy can read the body's
 * end elsewhere; it leaves the sizes and the data to the parser. */
static int scan_chunks(struct conn *c)
{
    static const char bad[] = "malformed chunked body";
    const char *b = c->buf;
    size_t i = c->cscan;
    while (i < c->len && c->cs_state != CS_DONE) {
        char ch = b[i];
        switch (c->cs_state) {
        case CS_SIZE_START:
            if (hex_digit(ch) < 0)
                return refuse_in_callback(c, 400, "%s", bad);
            c->cs_left = 0;
            c->cs_state = CS_SIZE;
            continue; /* the digit again, as CS_SIZE */
        case CS_SIZE:
            if (hex_digit(ch) >= 0) {
                if (c->cs_left >> 56) /* past any limit; the parser refuses it too */
                    return refuse_in_callback(c, 413, "%s", "chunk size too large");
                c->cs_left = (c->cs_left << 4) | (uint64_t)hex_digit(ch);
            } else if (ch == ';') {
                c->cs_state = CS_EXT;
            } else if (ch == '\r') {
                c->cs_state = CS_SIZE_LF;
            } else if (ch == ' ' || ch == '\t') {
                c->cs_state = CS_BWS; /* RFC 9112 7.1.1: chunk-ext = *( BWS ";" ... ) */
            } else {
                return refuse_in_callback(c, 400, "%s", bad);
            }
            break;
        case CS_BWS:
            if (ch == ';')
                c->cs_state = CS_EXT;
            else if (ch != ' ' && ch != '\t')
                return refuse_in_callback(c, 400, "%s", bad);
            break;
        case CS_EXT:
            if (ch == '\r')
                c->cs_state = CS_SIZE_LF;
            else if (((unsigned char)ch < 0x20 && ch != '\t') || ch == 0x7f)
                return refuse_in_callback(c, 400, "%s", bad);
            break;
        case CS_SIZE_LF:
            if (ch != '\n')
                return refuse_in_callback(c, 400, "%s", bad);
            c->cs_state = c->cs_left ? CS_DATA : CS_TRAILER_START;
            break;
        case CS_DATA: {
            size_t take = c->len - i;
            if (take > c->cs_left)
                take = (size_t)c->cs_left;
            c->cs_left -= take;
            i += take;
            if (c->cs_left == 0)
                c->cs_state = CS_DATA_CR;
            continue;
        }
        case CS_DATA_CR:
        case CS_TRAILER_LF:
        case CS_END_LF:
        case CS_DATA_LF:
            if (ch != (c->cs_state == CS_DATA_CR ? '\r' : '\n'))
                return refuse_in_callback(c, 400, "%s", bad);
            c->cs_state = c->cs_state == CS_DATA_CR   ? CS_DATA_LF
                          : c->cs_state == CS_DATA_LF ? CS_SIZE_START
                          : c->cs_state == CS_END_LF  ? CS_DONE
                                                      : CS_TRAILER_START;
            break;
        case CS_TRAILER_START:
        case CS_TRAILER:
            if (ch == '\r')
                c->cs_state = c->cs_state == CS_TRAILER_START ? CS_END_LF : CS_TRAILER_LF;
            else if (ch == '\n' || ch == '\0' || (c->cs_state == CS_TRAILER_START &&
                                                  (ch == ' ' || ch == '\t')))
                return refuse_in_callback(c, 400, "%s", bad);
            else
                c->cs_state = CS_TRAILER;
            break;
        case CS_DONE:
            break;
        }
        i++;
    }
    c->cscan = i;
    return 0;
}

static void start_request(struct conn *c)
{
    struct http_req *r = &c->req;
    r->n_headers = 0;
    r->out_len = 0;
    r->close = r->head_only = r->http10 = 0;
    c->msg_start = c->scan = c->pos;
    c->head_done = 0;
    c->url = c->url_len = 0;
    c->last_was_value = 0;
    c->body_off = c->body_len = 0;
    c->refused_code = 0;
    c->abort = 0;
    c->chunked = 0;
    c->state = ST_HEAD;
    arm_timer(c, T_HEADER);
}

static void dispatch(struct conn *c)
{
    http_parser *p = &c->parser;
    struct http_req *r = &c->req;
    if (finish_request(c) != 0) {
        refuse(c, 400, "malformed request target");
        return;
    }
    evtimer_del(c->timer);
    r->verb = verb_of(p->method);
    r->method = http_method_str((enum http_method)p->method);
    r->head_only = p->method == HTTP_HEAD;
    int keep = http_should_keep_alive(p) && !p->upgrade && !c->srv->draining;
    r->close = !keep;
    r->http10 = keep && p->http_major == 1 && p->http_minor == 0;
    c->state = ST_HANDLING;
    c->srv->handler(r, c->srv->arg);
}

/* Feeds the parser the checked bytes in [pos, end); 1 when it is worth
 * going round again (a request was dispatched, or the head ended and its
 * body follows), 0 to wait for input or when the request was refused. */
static int feed_parser(struct conn *c, size_t end)
{
    http_parser *p = &c->parser;
    size_t avail = end - c->pos;
    size_t n = http_parser_execute(p, &settings, c->buf + c->pos, avail);
    c->pos += n;
    enum http_errno e = HTTP_PARSER_ERRNO(p);
    if (c->abort) {
        c->state = ST_CLOSED;
        return 0;
    }
    if (c->refused_code) {
        refuse(c, c->refused_code, c->refused_msg);
        return 0;
    }
    if (e == HPE_PAUSED) {
        http_parser_pause(p, 0);
        dispatch(c);
        return 1;
    }
    if (e != HPE_OK || n != avail) {
        char why[160];
        parse_error(c, e, c->pos, why, sizeof why);
        refuse(c, 400, why);
        return 0;
    }
    return c->state == ST_BODY && c->pos < c->len;
}

/* Parses what is buffered and hands complete requests over, one at a time:
 * head bytes only once scan_head has checked them, chunked body bytes once
 * scan_chunks has. */
static void conn_run(struct conn *c)
{
    c->in_run++;
    while (c->state == ST_IDLE || c->state == ST_HEAD || c->state == ST_BODY) {
        if (c->state == ST_IDLE) {
            buf_compact(c);
            for (;;) { /* RFC 9112 2.2: empty lines (CRLF) before a request */
                if (c->pos + 1 < c->len && c->buf[c->pos] == '\r' && c->buf[c->pos + 1] == '\n')
                    c->pos += 2;
                else if (c->pos < c->len && c->buf[c->pos] == '\n')
                    c->pos++;
                else
                    break;
            }
            int lone_cr = c->pos + 1 == c->len && c->buf[c->pos] == '\r'; /* its LF to come */
            if (c->buf == NULL || c->pos == c->len || lone_cr) {
                if (c->buf && c->pos == c->len)
                    buf_release(c);
                if (c->eof) {
                    c->state = ST_CLOSED;
                    break;
                }
                arm_timer(c, T_IDLE);
                set_reading(c, 1);
                break;
            }
            start_request(c);
        }
        size_t end = c->len;
        if (c->state == ST_HEAD && !c->head_done) {
            if (scan_head(c) != 0) {
                refuse(c, c->refused_code, c->refused_msg);
                break;
            }
            size_t head = (c->head_done ? c->scan : c->len) - c->msg_start;
            if (head > c->srv->lim.max_headers) {
                refuse(c, 431, "request line and headers are over the size limit");
                break;
            }
            end = c->scan;
        } else if (c->state == ST_BODY && c->chunked) {
            if (c->cscan == SIZE_MAX)
                c->cscan = c->pos;
            if (scan_chunks(c) != 0) {
                refuse(c, c->refused_code, c->refused_msg);
                break;
            }
            end = c->cscan;
        }
        if (end > c->pos && feed_parser(c, end))
            continue;
        if (c->state != ST_HEAD && c->state != ST_BODY)
            break; /* dispatched and held, refused, or closed */
        if (c->state == ST_BODY && c->chunked && c->body_len > 0 && c->pos == c->len) {
            /* All read was parsed, and parsed framing is dead weight: the
             * next read lands right after the body gathered so far. */
            ASSERT(c->body_off + c->body_len <= c->pos && c->cscan == c->pos);
            c->len = c->pos = c->cscan = c->body_off + c->body_len;
        }
        if (c->eof) /* a request cut short: nothing to answer */
            c->state = ST_CLOSED;
        else /* reading may have been paused while an answer was written */
            set_reading(c, 1);
        break;
    }
    c->in_run--;
    if (c->state == ST_CLOSED && c->in_run == 0)
        conn_close(c);
}

/* How much buffer the current state may use. */
static size_t buffer_wanted(const struct conn *c)
{
    size_t head = c->srv->lim.max_headers + 2; /* +2: the blank line's CRLF */
    switch (c->state) {
    case ST_IDLE:
    case ST_HEAD: return c->msg_start + head + 1;
    case ST_BODY:
        if (c->chunked) /* the head, the body so far, one read of framing */
            return (c->body_len ? c->body_off : c->pos) + c->body_limit + CHUNK_SLACK;
        return c->pos + (size_t)c->parser.content_length;
    default: return c->cap; /* handling or writing: no growth, pipelined bytes wait */
    }
}

static void on_read(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    struct conn *c = arg;
    if (c->state == ST_LINGER) {
        char sink[4096];
        ssize_t n = read(c->fd, sink, sizeof sink);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            conn_close(c);
        return;
    }
    if (c->buf == NULL || c->len == c->cap) {
        size_t want = c->len + BUF_SMALL;
        size_t limit = buffer_wanted(c);
        if (want > limit)
            want = limit > c->len ? limit : c->len;
        if (want <= c->len) {
            set_reading(c, 0); /* full while a request is handled: resume after its answer */
            return;
        }
        if (buf_reserve(c, want) != 0) {
            log_error("http: out of memory for a connection buffer");
            conn_close(c);
            return;
        }
    }
    ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_close(c);
        return;
    }
    if (n == 0) {
        c->eof = 1;
        set_reading(c, 0);
        /* A request being handled is still answered (a client may half-close). */
        if (c->state != ST_HANDLING && c->state != ST_WRITING)
            conn_close(c);
        return;
    }
    c->len += (size_t)n;
    if (c->state == ST_IDLE || c->state == ST_HEAD || c->state == ST_BODY)
        conn_run(c);
}

static void on_timer(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    struct conn *c = arg;
    struct http_limits *lim = &c->srv->lim;
    char why[96];
    switch (c->state) {
    case ST_HEAD:
        metrics_add(c->srv->metrics, METRIC_http_timeouts, 1);
        snprintf(why, sizeof why, "request headers not received within %u s", lim->header_timeout_s);
        refuse(c, 408, why);
        return;
    case ST_BODY:
        metrics_add(c->srv->metrics, METRIC_http_timeouts, 1);
        snprintf(why, sizeof why, "request body not received within %u s", lim->body_timeout_s);
        refuse(c, 408, why);
        return;
    case ST_WRITING:
        metrics_add(c->srv->metrics, METRIC_http_timeouts, 1);
        conn_close(c);
        return;
    case ST_IDLE:
    case ST_LINGER:
        conn_close(c);
        return;
    case ST_HANDLING:
    case ST_CLOSED:
        return;
    }
}

/* -- connections ------------------------------------------------------------ */

static void conn_free(struct conn *c)
{
    struct http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->ev_read);
    event_free(c->ev_write);
    event_free(c->timer);
    buf_release(c);
    free(c->out);
    free(c);
    ASSERT(s->n_conns > 0);
    s->n_conns--;
    accept_resume(s);
}

/* Closes the socket at once (the descriptor is what a flood exhausts); the
 * memory goes when no held request or running parse refers to it. */
static void conn_close(struct conn *c)
{
    if (c->fd >= 0) {
        event_del(c->ev_read);
        event_del(c->ev_write);
        evtimer_del(c->timer);
        close(c->fd);
        c->fd = -1;
    }
    if (c->state == ST_HANDLING)
        return; /* freed once answered */
    c->state = ST_CLOSED;
    if (c->in_run)
        return;
    conn_free(c);
}

static struct conn *conn_new(struct http_server *s, int fd)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->srv = s;
    c->fd = fd;
    c->req.conn = c;
    c->ev_read = event_new(s->base, fd, EV_READ | EV_PERSIST, on_read, c);
    c->ev_write = event_new(s->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
    c->timer = evtimer_new(s->base, on_timer, c);
    if (!c->ev_read || !c->ev_write || !c->timer) {
        if (c->ev_read)
            event_free(c->ev_read);
        if (c->ev_write)
            event_free(c->ev_write);
        if (c->timer)
            event_free(c->timer);
        free(c);
        return NULL;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    c->state = ST_IDLE;
    set_reading(c, 1);
    arm_timer(c, T_HEADER); /* a new connection owes a request soon */
    return c;
}

/* -- accepting -------------------------------------------------------------- */

static void accept_pause(struct http_server *s)
{
    if (s->accept_paused)
        return;
    if (event_del(s->ev_accept) != 0)
        log_warn("http: cannot stop accepting");
    s->accept_paused = 1;
}

static void accept_resume(struct http_server *s)
{
    if (!s->accept_paused || s->draining || s->listen_fd < 0 || s->fd_short ||
        s->n_conns >= s->lim.max_connections)
        return;
    s->at_cap = 0;
    if (event_add(s->ev_accept, NULL) != 0) {
        log_warn("http: cannot resume accepting");
        return;
    }
    s->accept_paused = 0;
}

/* A server kept at a limit pauses and resumes with every connection that
 * closes: warn once per PAUSE_LOG_EVERY_S, and let the metric count them all. */
static int pause_log_due(int64_t *last_us)
{
    int64_t now = clock_mono_us();
    if (*last_us != 0 && now - *last_us < (int64_t)PAUSE_LOG_EVERY_S * 1000000)
        return 0;
    *last_us = now;
    return 1;
}

/* Out of descriptors: stop until one frees (here, or in another process;
 * the retry timer covers that) instead of spinning on the readable socket. */
static void descriptors_short(struct http_server *s, int err)
{
    if (!s->fd_short) {
        s->fd_short = 1;
        s->short_since_us = clock_mono_us();
        metrics_add(s->metrics, METRIC_http_accept_fd_short, 1);
        s->shorts_unlogged++;
        if (pause_log_due(&s->short_logged_us)) {
            log_warn("accept: %s with %u connections open; not accepting until a descriptor "
                     "frees (%llu such pauses since the last warning)",
                     strerror(err), s->n_conns, (unsigned long long)s->shorts_unlogged);
            s->shorts_unlogged = 0;
        }
    }
    accept_pause(s);
    struct timeval tv = { 0, ACCEPT_RETRY_MS * 1000 };
    if (evtimer_add(s->ev_retry, &tv) != 0)
        log_warn("http: cannot arm the accept retry");
}

static void short_over(struct http_server *s)
{
    if (!s->fd_short)
        return;
    log_debug("accepting again after %.1f s short of descriptors",
              (double)(clock_mono_us() - s->short_since_us) / 1e6);
    s->fd_short = 0;
}

static void on_accept(evutil_socket_t lfd, short events, void *arg);

static void on_retry(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    struct http_server *s = arg;
    if (s->draining || s->listen_fd < 0)
        return;
    on_accept(s->listen_fd, EV_READ, s);
}

static void on_accept(evutil_socket_t lfd, short events, void *arg)
{
    (void)events;
    struct http_server *s = arg;
    for (int i = 0; i < ACCEPT_BURST; i++) {
        if (s->n_conns >= s->lim.max_connections) {
            if (!s->at_cap) {
                s->at_cap = 1;
                metrics_add(s->metrics, METRIC_http_accept_at_cap, 1);
                s->caps_unlogged++;
                if (pause_log_due(&s->cap_logged_us)) {
                    log_warn("%u connections open (--max-connections): not accepting until one "
                             "closes (%llu such pauses since the last warning)",
                             s->n_conns, (unsigned long long)s->caps_unlogged);
                    s->caps_unlogged = 0;
                }
            }
            accept_pause(s);
            return;
        }
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EINTR || err == ECONNABORTED || err == EPROTO)
                continue;
            if (err == EAGAIN || err == EWOULDBLOCK) {
                break;
            }
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                descriptors_short(s, err);
                return;
            }
            log_error("accept: %s", strerror(err));
            descriptors_short(s, err); /* unknown: back off the same way */
            return;
        }
        short_over(s);
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
            log_debug("TCP_NODELAY: %s", strerror(errno));
        if (conn_new(s, fd) == NULL) {
            log_error("http: out of memory for a connection");
            close(fd);
            return;
        }
    }
    short_over(s); /* EAGAIN: nobody waiting, and descriptors may be back */
    accept_resume(s);
}

struct http_server *http_server_new(struct event_base *base, int listen_fd,
                                    const struct http_limits *limits, struct metric_block *m,
                                    http_handler handler, http_body_limit body_limit, void *arg)
{
    ASSERT(limits->max_connections > 0 && limits->max_headers > 0);
    settings_init();
    struct http_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        log_error("out of memory for the HTTP server");
        return NULL;
    }
    *s = (struct http_server){ .base = base, .listen_fd = listen_fd, .lim = *limits,
                               .metrics = m, .handler = handler, .body_limit = body_limit,
                               .arg = arg };
    const unsigned seconds[T__COUNT] = { limits->header_timeout_s, limits->body_timeout_s,
                                  limits->idle_timeout_s, LINGER_S };
    for (int k = 0; k < T__COUNT; k++) {
        struct timeval tv = { (time_t)seconds[k], 0 };
        s->tv[k] = event_base_init_common_timeout(base, &tv);
        if (s->tv[k] == NULL) {
            log_error("cannot set up the connection timeouts");
            http_server_free(s);
            return NULL;
        }
    }
    s->ev_retry = evtimer_new(base, on_retry, s);
    if (listen_fd < 0) {
        s->accept_paused = 1; /* for good: nothing to accept on */
        return s->ev_retry ? s : (http_server_free(s), NULL);
    }
    s->ev_accept = event_new(base, listen_fd, EV_READ | EV_PERSIST, on_accept, s);
    if (!s->ev_accept || !s->ev_retry || event_add(s->ev_accept, NULL) != 0) {
        log_error("cannot accept on the inherited socket (fd %d)", listen_fd);
        http_server_free(s);
        return NULL;
    }
    return s;
}

/* Closes only this process's copy of the listening socket; the copies held
 * by the master and the other frontends are theirs to close. Runs one loop
 * iteration after the accept event was removed: with the epoll change list
 * an event_del reaches the kernel only at the next dispatch, and closing an
 * fd whose file is open in other processes does not remove it from our
 * epoll set, so the close must come after. */
static void close_listener(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    struct http_server *s = arg;
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        s->listen_fd = -1;
    }
}

void http_server_drain(struct http_server *s)
{
    if (s->draining)
        return;
    s->draining = 1;
    accept_pause(s);
    evtimer_del(s->ev_retry);
    struct timeval now = { 0, 0 };
    if (event_base_once(s->base, -1, EV_TIMEOUT, close_listener, s, &now) != 0) {
        log_warn("cannot defer closing the listener; closing it now");
        close_listener(-1, 0, s);
    }
    /* Idle keep-alive connections stay for the grace period: a client may
     * be sending on one right now, and its request is answered (with
     * Connection: close) rather than lost to a reset. */
}

void http_server_free(struct http_server *s)
{
    if (s == NULL)
        return;
    while (s->conns) {
        struct conn *c = s->conns;
        conn_close(c);
        if (s->conns == c) /* held: nobody will answer it now */
            conn_free(c);
    }
    if (s->ev_accept)
        event_free(s->ev_accept);
    if (s->ev_retry)
        event_free(s->ev_retry);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    while (s->n_pool > 0)
        free(s->pool[--s->n_pool]);
    free(s);
}

uint32_t http_server_connections(const struct http_server *s)
{
    return s->n_conns;
}

int http_server_adopt(struct http_server *s, int fd)
{
    return conn_new(s, fd) ? 0 : -1;
}
