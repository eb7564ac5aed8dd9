/* The frontend process: sets up the evhttp server on the listening socket
 * inherited from the master, reports liveness in its row of the children
 * table, and on SIGTERM drains (stop accepting, finish, close) before
 * returning to the master's fork wrapper. Request handling is in routes.c. */
#include "frontend/frontend.h"

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/keyvalq_struct.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/clock.h"
#include "common/log.h"
#include "frontend/respond.h"
#include "frontend/routes.h"
#include "frontend/waiters.h"
#include "ledger/lookup.h"

/* Bodies up to this much over cfg->max_body still reach routes.c and get a
 * JSON 413; beyond that evhttp refuses them itself (an HTML 413, connection
 * closed) without reading them, so a huge Content-Length costs nothing. */
#define HTTP_BODY_SLACK (1024 * 1024)
#define HTTP_DRAIN_GRACE_S 1

struct server {
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *sigterm, *sigint, *heartbeat;
    struct shm_child *me;
    struct routes_ctx routes;
};

static void set_state(struct server *s, enum child_state state)
{
    __atomic_store_n(&s->me->state, (int32_t)state, __ATOMIC_RELEASE);
}

/* Closes only this process's copy of the listening socket; the copies held
 * by the master and the other frontends are theirs to close. Runs one loop
 * iteration after the listener was disabled (begin_drain): with the epoll
 * change list (new_base) an event_del reaches the kernel only at the next
 * dispatch, and closing an fd whose file is open in other processes does
 * not remove it from our epoll set, so the close must come after. */
static void close_listener(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    struct server *s = arg;
    if (s->bound) {
        evhttp_del_accept_socket(s->http, s->bound);
        s->bound = NULL;
    }
}

static void begin_drain(struct server *s, const char *why)
{
    if (s->routes.draining)
        return;
    log_info("draining (%s)", why);
    s->routes.draining = 1;
    set_state(s, CHILD_DRAINING);
    /* Held requests get their 202 now rather than at the end of their wait:
     * the grace period below is shorter than most waits. */
    waiters_drain(s->routes.waiters);
    if (s->bound) {
        struct evconnlistener *l = evhttp_bound_socket_get_listener(s->bound);
        struct timeval now = { 0, 0 };
        if (l == NULL || evconnlistener_disable(l) != 0 ||
            event_base_once(s->base, -1, EV_TIMEOUT, close_listener, s, &now) != 0) {
            log_warn("cannot defer closing the listener; closing it now");
            close_listener(-1, 0, s);
        }
    }
    struct timeval grace = { HTTP_DRAIN_GRACE_S, 0 };
    if (event_base_loopexit(s->base, &grace) != 0) {
        log_error("event_base_loopexit failed; stopping now");
        event_base_loopbreak(s->base);
    }
}

static void on_signal(evutil_socket_t sig, short events, void *arg)
{
    (void)events;
    begin_drain(arg, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_heartbeat(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    struct server *s = arg;
    __atomic_store_n(&s->me->heartbeat_us, clock_mono_us(), __ATOMIC_RELAXED);
}

/* SIGINT stays ignored when the parent ignores it: under the master, Ctrl-C
 * reaches the whole process group and only the master decides how to stop
 * (it sends SIGTERM). */
static int sigint_ignored(void)
{
    struct sigaction old;
    return sigaction(SIGINT, NULL, &old) == 0 && old.sa_handler == SIG_IGN;
}

/* Signals arrive through the event loop. The mask is cleared in case the
 * master forked with signals blocked; SIGPIPE is ignored so a client that
 * goes away costs an EPIPE on write, not the process. */
static int setup_signals(struct server *s)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGPIPE);
    if (sigprocmask(SIG_UNBLOCK, &set, NULL) != 0 || signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        log_error("signal setup: %s", strerror(errno));
        return -1;
    }
    s->sigterm = evsignal_new(s->base, SIGTERM, on_signal, s);
    if (!s->sigterm || evsignal_add(s->sigterm, NULL) != 0) {
        log_error("cannot install the SIGTERM event");
        return -1;
    }
    if (!sigint_ignored()) {
        s->sigint = evsignal_new(s->base, SIGINT, on_signal, s);
        if (!s->sigint || evsignal_add(s->sigint, NULL) != 0) {
            log_error("cannot install the SIGINT event");
            return -1;
        }
    }
    s->heartbeat = event_new(s->base, -1, EV_PERSIST, on_heartbeat, s);
    struct timeval second = { 1, 0 };
    if (!s->heartbeat || evtimer_add(s->heartbeat, &second) != 0) {
        log_error("cannot install the heartbeat timer");
        return -1;
    }
    return 0;
}

/* Why a request's body framing is ambiguous, or NULL. evhttp takes the
 * first of several Content-Length headers and reads any Transfer-Encoding
 * but "chunked" as none, so another parser on the path (a proxy) could see
 * a different body, and the bytes evhttp left over would be parsed here as
 * a request of their own. RFC 9112 section 6.3 makes both a 400 followed by
 * closing the connection. */
static const char *framing_error(struct evhttp_request *req)
{
    const struct evkeyvalq *headers = evhttp_request_get_input_headers(req);
    int lengths = 0, encodings = 0;
    const char *encoding = NULL;
    for (const struct evkeyval *h = headers->tqh_first; h; h = h->next.tqe_next) {
        if (strcasecmp(h->key, "Content-Length") == 0) {
            lengths++;
        } else if (strcasecmp(h->key, "Transfer-Encoding") == 0) {
            encodings++;
            encoding = h->value;
        }
    }
    if (lengths > 1)
        return "more than one Content-Length header";
    if (encodings > 1 || (encoding && strcasecmp(encoding, "chunked") != 0))
        return "Transfer-Encoding must be chunked, once";
    return NULL;
}

/* Every request passes here before routing. */
static void on_request(struct evhttp_request *req, void *arg)
{
    struct routes_ctx *c = arg;
    const char *why = framing_error(req);
    if (why) {
        /* evhttp closes the connection after an answer that says so. */
        respond_header(req, "Connection", "close");
        respond_error(req, c->metrics, 400, "%s", why);
        return;
    }
    routes_handle(req, arg);
}

/* epoll with a change list: the changes an fd gets within one loop
 * iteration reach the kernel as one epoll_ctl, where evhttp otherwise makes
 * four per request (read off, write on, write off, read on) -- about a tenth
 * of a frontend's CPU per request (README, Performance). libevent's caveat
 * applies to fds whose file is shared with other processes: only the
 * listening socket here, see close_listener. */
static struct event_base *new_base(void)
{
    struct event_config *ec = event_config_new();
    if (ec == NULL)
        return NULL;
    struct event_base *base = NULL;
    if (event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST) == 0)
        base = event_base_new_with_config(ec);
    event_config_free(ec);
    return base;
}

static int setup_http(struct server *s, const struct config *cfg, int listen_fd)
{
    s->http = evhttp_new(s->base);
    if (!s->http) {
        log_error("evhttp_new failed");
        return -1;
    }
    evhttp_set_max_headers_size(s->http, (ev_ssize_t)cfg->max_headers);
    evhttp_set_max_body_size(s->http, (ev_ssize_t)cfg->max_body + HTTP_BODY_SLACK);
    evhttp_set_timeout(s->http, (int)cfg->http_timeout_s);
    /* Everything we can name in a 405; evhttp answers the rest itself. */
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(s->http, on_request, &s->routes);
    s->bound = evhttp_accept_socket_with_handle(s->http, listen_fd);
    if (!s->bound) {
        log_error("cannot accept on the inherited socket (fd %d)", listen_fd);
        return -1;
    }
    return 0;
}

static void server_free(struct server *s)
{
    /* Before evhttp_free: every held request must be answered (and so
     * freed) while its connection still exists. */
    waiters_free(s->routes.waiters);
    if (s->http)
        evhttp_free(s->http); /* also closes connections and the listener */
    if (s->sigterm)
        event_free(s->sigterm);
    if (s->sigint)
        event_free(s->sigint);
    if (s->heartbeat)
        event_free(s->heartbeat);
    if (s->base)
        event_base_free(s->base);
    lookup_close(s->routes.db);
}

int frontend_main(const struct config *cfg, struct shm_seg *seg, int listen_fd, uint32_t slot,
                  uint32_t index)
{
    char role[32];
    snprintf(role, sizeof role, "frontend-%u", index);
    log_set_role(role);

    struct server s = {
        .me = &seg->children[slot],
        .routes = { .cfg = cfg, .seg = seg, .metrics = shm_metrics(seg, slot), .index = index },
    };
    /* A read blocks this loop: bound it well below --http-timeout. */
    int read_ms = cfg->http_timeout_s * 1000 < LOOKUP_WAIT_MAX_MS ? (int)cfg->http_timeout_s * 1000
                                                                   : LOOKUP_WAIT_MAX_MS;
    s.routes.db = lookup_open(cfg->db_path, read_ms);
    if (!s.routes.db)
        return TXP_EXIT_FATAL;
    s.base = new_base();
    if (!s.base) {
        log_error("event_base_new failed");
        server_free(&s);
        return TXP_EXIT_FATAL;
    }
    s.routes.waiters = waiters_new(s.base, &s.routes, seg, index);
    if (!s.routes.waiters || setup_signals(&s) != 0 || setup_http(&s, cfg, listen_fd) != 0) {
        server_free(&s);
        return TXP_EXIT_FATAL;
    }
    __atomic_store_n(&s.me->heartbeat_us, clock_mono_us(), __ATOMIC_RELAXED);
    set_state(&s, CHILD_RUNNING);
    log_info("serving on fd %d", listen_fd);

    int rc = event_base_dispatch(s.base);
    if (rc < 0)
        log_error("event loop failed");
    server_free(&s);
    log_info("stopped");
    return rc < 0 ? TXP_EXIT_FATAL : 0;
}
