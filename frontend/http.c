/* The frontend process: sets up the HTTP layer (conn.c) on the listening
 * socket inherited from the master, reports liveness in its row of the children
 * table, and on SIGTERM drains (stop accepting, finish, close) before
 * returning to the master's fork wrapper. Request handling is in routes.c. */
#include "frontend/frontend.h"

#include <event2/event.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "frontend/conn.h"
#include "frontend/pending.h"
#include "frontend/routes.h"
#include "frontend/waiters.h"
#include "ledger/lookup.h"

#define HTTP_DRAIN_GRACE_S 1

struct server {
    struct event_base *base;
    struct http_server *http;
    struct event *sigterm, *sigint, *heartbeat;
    struct shm_child *me;
    struct routes_ctx routes;
};

static void set_state(struct server *s, enum child_state state)
{
    __atomic_store_n(&s->me->state, (int32_t)state, __ATOMIC_RELEASE);
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
    http_server_drain(s->http);
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

/* epoll with a change list: the changes an fd gets within one loop
 * iteration reach the kernel as one epoll_ctl. libevent's caveat applies to
 * fds whose file is shared with other processes: only the listening socket
 * here, see close_listener in conn.c. */
static struct event_base *new_base(void)
{
    struct event_config *ec = event_config_new();
    if (ec == NULL)
        return NULL;
    struct event_base *base = NULL;
    if (event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST) == 0)
        base = event_base_new_with_config(ec);
    event_config_free(ec);
    /* Two priorities: outcomes for waiting requests (waiters.c) before
     * sockets, so a commit's answers do not queue behind a loop turn's worth
     * of reads; they come in slices, so reads still get their turn. */
    if (base && event_base_priority_init(base, 2) != 0) {
        event_base_free(base);
        return NULL;
    }
    return base;
}

static int setup_http(struct server *s, const struct config *cfg, int listen_fd)
{
    struct http_limits lim = {
        .max_headers = cfg->max_headers,
        .header_timeout_s = cfg->header_timeout_s,
        .body_timeout_s = cfg->http_timeout_s,
        .idle_timeout_s = cfg->idle_timeout_s,
        .max_connections = cfg->max_connections,
    };
    s->http = http_server_new(s->base, listen_fd, &lim, s->routes.metrics, routes_handle,
                              routes_body_limit, &s->routes);
    return s->http ? 0 : -1;
}

static void server_free(struct server *s)
{
    /* Before the connections go: every pending and held request is
     * answered (pending ones may become held, so they go first). */
    pending_free(s->routes.pending);
    s->routes.pending = NULL;
    waiters_free(s->routes.waiters);
    http_server_free(s->http); /* closes connections and the listener */
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
    s.routes.pending = pending_new(s.base, &s.routes);
    if (!s.routes.waiters || !s.routes.pending || setup_signals(&s) != 0 || setup_http(&s, cfg, listen_fd) != 0) {
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
