/* A reference point for `make bench`: the least a libevent evhttp + cJSON
 * server can do per request -- parse the JSON body, check that card_number
 * is a string and amount a number, answer 202 with a body like txprocd's --
 * in --procs processes sharing one listening socket, with the same
 * libevent settings as txprocd's frontends. No queue, no worker, no ledger,
 * no metrics. txprocd's ingest divided by this shows what txprocd's own
 * work costs; this divided by nginx shows what evhttp costs.
 *
 *   evhttp_floor --port N [--procs 2]      serves 127.0.0.1:N until SIGTERM */
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

static const char answer[] = "{\"status\":\"queued\",\"id\":\"123456\",\"message\":"
                             "\"Transaction queued for processing\"}";

static void reply(struct evhttp_request *req, int code, const char *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
    evhttp_send_reply(req, code, code == 202 ? "Accepted" : "Bad Request", NULL);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    cJSON *doc = cJSON_ParseWithLength(body, len);
    const cJSON *card = cJSON_GetObjectItemCaseSensitive(doc, "card_number");
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(doc, "amount");
    if (cJSON_IsString(card) && cJSON_IsNumber(amount))
        reply(req, 202, answer);
    else
        reply(req, 400, "{\"status\":\"error\",\"message\":\"bad transaction\"}");
    cJSON_Delete(doc);
}

static void on_term(evutil_socket_t sig, short events, void *arg)
{
    (void)sig;
    (void)events;
    event_base_loopbreak(arg);
}

static int serve(int fd)
{
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *base = event_base_new_with_config(ec);
    event_config_free(ec);
    struct evhttp *http = base ? evhttp_new(base) : NULL;
    struct event *term = base ? evsignal_new(base, SIGTERM, on_term, base) : NULL;
    if (!http || !term || evsignal_add(term, NULL) != 0 ||
        !evhttp_accept_socket_with_handle(http, fd)) {
        fprintf(stderr, "evhttp_floor: setup failed\n");
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
        { NULL, 0, NULL, 0 },
    };
    int port = 0, procs = 2, c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'p')
            port = atoi(optarg);
        else if (c == 'n')
            procs = atoi(optarg);
        else
            return 2;
    }
    if (port <= 0 || port > 65535 || procs < 1 || procs > 64) {
        fprintf(stderr, "usage: evhttp_floor --port N [--procs 2]\n");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4096) != 0) {
        perror("evhttp_floor: listen");
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
            _exit(serve(fd));
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
