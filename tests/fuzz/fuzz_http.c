/* libFuzzer target for the frontend's HTTP/1.1 request reader (frontend/
 * conn.c). Each input is a byte stream a client sends on one connection;
 * the server end of a socketpair is handed to a real http_server on a real
 * event loop, and everything the server writes back is collected and
 * checked once the client has gone away.
 *
 * INPUT
 *   byte 0      the split seed: the stream is sent in 1 + (byte % 16)
 *               writes, cut at points drawn from a small PRNG seeded with
 *               it ('0' sends the whole stream at once), and the event loop
 *               runs between writes, so the reader sees a request arrive in
 *               any pieces
 *   byte 1..    the stream; then the client half-closes (FIN), reads the
 *               rest of the answers and closes
 *   The server: max_headers 1024, timeouts of an hour (no timer fires
 *   during an input), every route takes 64 body bytes, and the handler
 *   answers every request at once with 200 and the body "{}".
 *
 * RULES CHECKED
 *   (a) No connection outlives its client: once the client end is closed
 *       and the loop has run, http_server_connections() is 0, whatever
 *       state the connection was in.
 *   (b) The output is a sequence of complete responses: either exactly
 *       "HTTP/1.1 100 Continue\r\n\r\n", or "HTTP/1.1 NNN reason\r\n", well
 *       formed "Name: value" header lines with exactly one Content-Length
 *       and one Content-Type, the blank line, and exactly Content-Length
 *       body bytes. Only a 200 may come without its body (the answer to a
 *       HEAD, whose refusals do carry one), and then only when the output
 *       ends or the next response follows right after the head. Every
 *       status is 200 or a refusal (>= 400).
 *   (c) A response with status >= 400 is application/json, and its body is
 *       a JSON object with "status":"error" and a non-empty string
 *       "message".
 *   (d) A 200 is application/json with Content-Length 2 and the body "{}".
 *   (e) Nothing follows a response with "Connection: close".
 *   Leaks and memory errors in the reader are left to ASan/LSan.
 *
 * A failed rule aborts, which libFuzzer reports as a crash with the input. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/metrics.h"
#include "frontend/conn.h"
#include "frontend/respond.h"

#define MAX_PIECES 16
#define MAX_INPUT 65536          /* longer inputs (a replayed file) are skipped */
#define OUT_CAP (1u << 20)       /* far above what MAX_INPUT bytes can be answered with */
#define MIN_ROUNDS 4             /* loop iterations after each write, at least... */
#define MAX_ROUNDS 64            /* ...and more while answers keep coming */
#define SEND_STALLS 8            /* a write the server will not take: give up after */
#define BODY_LIMIT 64

#define REQUIRE(cond)                                                                  \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "fuzz_http: %s:%d: rule broken: %s\n", __FILE__, __LINE__, \
                    #cond);                                                            \
            abort();                                                                   \
        }                                                                              \
    } while (0)

static const char CONTINUE[] = "HTTP/1.1 100 Continue\r\n\r\n";

static struct event_base *base;
static struct http_server *srv;
static struct metric_block block;

struct output {
    char *buf;
    size_t len;
    int eof; /* the server closed its end (or reset it) */
};

static void handler(struct http_req *req, void *arg)
{
    (void)arg;
    respond_body(req, &block, 200, "application/json", "{}", 2);
}

static size_t body_limit(unsigned verb, const char *path, size_t path_len, void *arg)
{
    (void)verb;
    (void)path;
    (void)path_len;
    (void)arg;
    return BODY_LIMIT;
}

static void setup(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    signal(SIGPIPE, SIG_IGN); /* as in the frontend: a gone client is an EPIPE */
    base = event_base_new();
    REQUIRE(base != NULL);
    struct http_limits lim = {
        .max_headers = 1024,
        .header_timeout_s = 3600,
        .body_timeout_s = 3600,
        .idle_timeout_s = 3600,
        .max_connections = 16,
    };
    srv = http_server_new(base, -1, &lim, &block, handler, body_limit, NULL);
    REQUIRE(srv != NULL);
}

/* Reads what the server has written so far; the bytes read. */
static size_t drain(int fd, struct output *o)
{
    size_t got = 0;
    while (!o->eof) {
        REQUIRE(o->len < OUT_CAP);
        ssize_t n = recv(fd, o->buf + o->len, OUT_CAP - o->len, MSG_DONTWAIT);
        if (n > 0) {
            o->len += (size_t)n;
            got += (size_t)n;
        } else if (n == 0) {
            o->eof = 1;
        } else if (errno == EINTR) {
            continue;
        } else {
            /* EAGAIN: nothing more now; ECONNRESET: the server closed
             * with our bytes unread, what it wrote was read before. */
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                o->eof = 1;
            break;
        }
    }
    return got;
}

/* Runs the loop, reading the answers in between, until it settles. */
static void pump(int fd, struct output *o)
{
    for (int round = 0; round < MAX_ROUNDS; round++) {
        REQUIRE(event_base_loop(base, EVLOOP_NONBLOCK) != -1);
        if (drain(fd, o) == 0 && round >= MIN_ROUNDS - 1)
            break;
    }
}

static void send_piece(int fd, const uint8_t *p, size_t len, struct output *o)
{
    size_t off = 0;
    int stalls = 0;
    while (off < len) {
        ssize_t n = send(fd, p + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && ++stalls <= SEND_STALLS) {
            pump(fd, o); /* the server is not reading now; maybe after this */
            continue;
        }
        break; /* EPIPE: the server closed; or it stopped reading for good */
    }
    pump(fd, o);
}

/* A tiny xorshift, so the cuts depend on the input alone. */
static uint32_t next_rand(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

/* -- the output rules ------------------------------------------------------ */

static int starts_with(const char *p, size_t n, const char *s)
{
    size_t k = strlen(s);
    return n >= k && memcmp(p, s, k) == 0;
}

static int is_token_char(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-';
}

static void check_error_body(const char *body, size_t len)
{
    cJSON *doc = cJSON_ParseWithLength(body, len);
    REQUIRE(doc != NULL);
    REQUIRE(cJSON_IsObject(doc));
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(doc, "status");
    const cJSON *message = cJSON_GetObjectItemCaseSensitive(doc, "message");
    REQUIRE(cJSON_IsString(status) && strcmp(status->valuestring, "error") == 0);
    REQUIRE(cJSON_IsString(message) && message->valuestring[0] != '\0');
    cJSON_Delete(doc);
}

/* One response at out[0..n); returns its length. *close_after is set when
 * it carries "Connection: close". */
static size_t check_response(const char *out, size_t n, int *close_after)
{
    if (starts_with(out, n, CONTINUE))
        return sizeof CONTINUE - 1;
    /* Status line. */
    REQUIRE(starts_with(out, n, "HTTP/1.1 "));
    REQUIRE(n >= 14);
    for (int i = 9; i < 12; i++)
        REQUIRE(out[i] >= '0' && out[i] <= '9');
    REQUIRE(out[12] == ' ');
    int code = (out[9] - '0') * 100 + (out[10] - '0') * 10 + (out[11] - '0');
    REQUIRE(code == 200 || (code >= 400 && code <= 599));
    const char *end = memmem(out, n, "\r\n\r\n", 4);
    REQUIRE(end != NULL); /* the head is complete */
    size_t head_len = (size_t)(end - out) + 4;
    const char *line = memchr(out, '\r', head_len);
    REQUIRE(line > out + 13); /* a reason phrase */
    REQUIRE(line[1] == '\n');
    line += 2;

    /* Header lines: Name: value CRLF, up to the blank line. */
    int n_length = 0, n_type = 0, json = 0;
    size_t length = 0;
    *close_after = 0;
    while (line < end + 2) {
        const char *eol = memchr(line, '\r', (size_t)(end + 2 - line));
        REQUIRE(eol != NULL && eol[1] == '\n');
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        REQUIRE(colon != NULL && colon > line && colon[1] == ' ');
        for (const char *p = line; p < colon; p++)
            REQUIRE(is_token_char(*p));
        for (const char *p = colon + 2; p < eol; p++)
            REQUIRE(*p != '\n' && *p != '\0');
        size_t name_len = (size_t)(colon - line);
        const char *value = colon + 2;
        size_t value_len = (size_t)(eol - value);
        if (name_len == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
            n_length++;
            REQUIRE(value_len > 0 && value_len <= 9);
            length = 0;
            for (size_t i = 0; i < value_len; i++) {
                REQUIRE(value[i] >= '0' && value[i] <= '9');
                length = length * 10 + (size_t)(value[i] - '0');
            }
        } else if (name_len == 12 && strncasecmp(line, "Content-Type", 12) == 0) {
            n_type++;
            json = value_len == 16 && memcmp(value, "application/json", 16) == 0;
        } else if (name_len == 10 && strncasecmp(line, "Connection", 10) == 0) {
            if (value_len == 5 && strncasecmp(value, "close", 5) == 0)
                *close_after = 1;
        }
        line = eol + 2;
    }
    REQUIRE(n_length == 1);
    REQUIRE(n_type == 1);
    REQUIRE(json); /* every answer, the handler's and the refusals, is JSON */

    const char *body = out + head_len;
    size_t rest = n - head_len;
    if (code == 200) {
        REQUIRE(length == 2);
        if (rest >= 2 && memcmp(body, "{}", 2) == 0)
            return head_len + 2;
        /* The answer to a HEAD: no body, so the output ends here or the
         * next response starts right away. */
        REQUIRE(rest == 0 || starts_with(body, rest, "HTTP/1.1 "));
        return head_len;
    }
    REQUIRE(rest >= length); /* a refusal always carries its body */
    check_error_body(body, length);
    return head_len + length;
}

static void check_output(const char *out, size_t n)
{
    size_t i = 0;
    while (i < n) {
        int close_after = 0;
        i += check_response(out + i, n - i, &close_after);
        if (close_after)
            REQUIRE(i == n); /* nothing after Connection: close */
    }
}

/* -- the input ------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *outbuf;
    if (base == NULL) {
        setup();
        outbuf = malloc(OUT_CAP);
        REQUIRE(outbuf != NULL);
    }
    if (size < 1 || size > MAX_INPUT)
        return 0;
    uint32_t seed = data[0];
    const uint8_t *stream = data + 1;
    size_t len = size - 1;

    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    REQUIRE(http_server_adopt(srv, sv[0]) == 0); /* sv[0] is the server's now */
    int fd = sv[1];
    struct output o = { outbuf, 0, 0 };

    /* Cut points: sorted, equal ones give empty pieces (skipped). */
    size_t pieces = 1 + seed % MAX_PIECES;
    size_t cut[MAX_PIECES + 1];
    uint32_t state = 0x9e3779b9u ^ (seed * 0x01000193u) ^ (uint32_t)len;
    cut[0] = 0;
    for (size_t k = 1; k < pieces; k++)
        cut[k] = len ? next_rand(&state) % (len + 1) : 0;
    qsort(cut + 1, pieces - 1, sizeof cut[0], cmp_size);
    cut[pieces] = len;
    for (size_t k = 0; k < pieces; k++)
        if (cut[k + 1] > cut[k])
            send_piece(fd, stream + cut[k], cut[k + 1] - cut[k], &o);

    /* FIN, the rest of the answers, then gone. */
    shutdown(fd, SHUT_WR);
    pump(fd, &o);
    close(fd);
    for (int round = 0; round < MIN_ROUNDS; round++)
        REQUIRE(event_base_loop(base, EVLOOP_NONBLOCK) != -1);
    REQUIRE(http_server_connections(srv) == 0); /* (a) */

    check_output(o.buf, o.len);
    return 0;
}
