/* Reference points for `make bench`: the least an HTTP server can do per
 * request -- parse the JSON body, check that card_number is a string and
 * amount a number, answer 202 with a body like txprocd's -- in --procs
 * processes sharing one listening socket, with the same libevent settings
 * as txprocd's frontends. No queue, no worker, no ledger. --layer evhttp
 * serves with libevent's evhttp (what txprocd used to run on), --layer conn
 * with txprocd's own HTTP layer (frontend/conn.c). txprocd's ingest divided
 * by the conn floor shows what txprocd's own work costs; a floor divided by
 * nginx shows what its HTTP layer costs.
 *
 *   http_floor --port N [--procs 2] [--layer evhttp|conn]
 *                                          serves 127.0.0.1:N until SIGTERM */
#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/metrics.h"
#include "frontend/conn.h"
#include "frontend/respond.h"

static const char answer[] = "{\"status\":\"queued\",\"id\":\"123456\",\"message\":"
                             "\"Transaction queued for processing\"}";

static void reply(struct evhttp_request *req, int code, const char *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
    evhttp_send_reply(req, code, code == 202 ? "Accepted" : "Bad Request", NULL);
}

static const char bad[] = "{\"status\":\"error\",\"message\":\"bad transaction\"}";

static int valid(const char *body, size_t len)
{
    cJSON *doc = cJSON_ParseWithLength(body, len);
    const cJSON *card = cJSON_GetObjectItemCaseSensitive(doc, "card_number");
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(doc, "amount");
    int ok = cJSON_IsString(card) && cJSON_IsNumber(amount);
    cJSON_Delete(doc);
    return ok;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    if (valid(body, len))
        reply(req, 202, answer);
    else
        reply(req, 400, bad);
}

/* The same on txprocd's layer. */
static struct metric_block conn_metrics;

static void on_conn_request(struct http_req *req, void *arg)
{
    (void)arg;
    size_t len;
    const char *body = http_req_body(req, &len);
    if (valid(body, len))
        respond_body(req, &conn_metrics, 202, "application/json", answer, sizeof answer - 1);
    else
        respond_body(req, &conn_metrics, 400, "application/json", bad, sizeof bad - 1);
}

static size_t conn_body_limit(unsigned verb, const char *path, size_t path_len, void *arg)
{
    (void)verb;
    (void)path;
    (void)path_len;
    (void)arg;
    return 4096;
}

static void on_term(evutil_socket_t sig, short events, void *arg)
{
    (void)sig;
    (void)events;
    event_base_loopbreak(arg);
}

static struct event_base *new_base(void)
{
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *base = event_base_new_with_config(ec);
    event_config_free(ec);
    return base;
}

static int serve_conn(int fd)
{
    struct event_base *base = new_base();
    struct http_limits lim = { .max_headers = 8192, .header_timeout_s = 10, .body_timeout_s = 30,
                               .idle_timeout_s = 60, .max_connections = 10000 };
    struct http_server *http = base ? http_server_new(base, fd, &lim, &conn_metrics,
                                                      on_conn_request, conn_body_limit, NULL)
                                    : NULL;
    struct event *term = base ? evsignal_new(base, SIGTERM, on_term, base) : NULL;
    if (!http || !term || evsignal_add(term, NULL) != 0) {
        fprintf(stderr, "http_floor: setup failed\n");
        return 1;
    }
    event_base_dispatch(base);
    event_free(term);
    http_server_free(http);
    event_base_free(base);
    return 0;
}

static int serve(int fd)
{
    struct event_base *base = new_base();
    struct evhttp *http = base ? evhttp_new(base) : NULL;
    struct event *term = base ? evsignal_new(base, SIGTERM, on_term, base) : NULL;
    if (!http || !term || evsignal_add(term, NULL) != 0 ||
        !evhttp_accept_socket_with_handle(http, fd)) {
        fprintf(stderr, "http_floor: setup failed\n");
        return 1;
    }
    evhttp_set_gencb(http, on_request, NULL);
    event_base_dispatch(base);
    event_free(term);
    evhttp_free(http);
    event_base_free(base);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "port", required_argument, NULL, 'p' }, { "procs", required_argument, NULL, 'n' },
        { "layer", required_argument, NULL, 'l' }, { NULL, 0, NULL, 0 },
    };
    int port = 0, procs = 2, c, conn = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'p')
            port = atoi(optarg);
        else if (c == 'n')
            procs = atoi(optarg);
        else if (c == 'l' && (strcmp(optarg, "conn") == 0 || strcmp(optarg, "evhttp") == 0))
            conn = strcmp(optarg, "conn") == 0;
        else
            return 2;
    }
    if (port <= 0 || port > 65535 || procs < 1 || procs > 64) {
        fprintf(stderr, "usage: http_floor --port N [--procs 2] [--layer evhttp|conn]\n");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4096) != 0) {
        perror("http_floor: listen");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, NULL); /* until each child has its handler */
    pid_t pids[64];
    for (int i = 0; i < procs; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            sigprocmask(SIG_UNBLOCK, &term, NULL);
            _exit(conn ? serve_conn(fd) : serve(fd));
        }
    }
    int sig;
    sigwait(&term, &sig);
    for (int i = 0; i < procs; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    while (wait(NULL) > 0)
        ;
    return 0;
}
