/* Binding the shared listening socket (see listener.h for why there is one). */
#include "master/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/flockwait.h"
#include "common/log.h"

#define LISTEN_BACKLOG 4096
#define BIND_RETRY_MS 50

static int listener_bind_one(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int listener_open(const char *host, unsigned port, unsigned *bound_port)
{
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        log_error("listen %s:%u: cannot resolve host: %s", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    /* The children of a master killed a moment ago still hold the port
     * until they finish dying: a restart waits for them, as it waits for
     * the ledger and segment locks (flockwait.h), instead of failing. */
    for (int waited = 0; fd < 0; waited += BIND_RETRY_MS) {
        for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
            fd = listener_bind_one(ai);
            if (fd < 0)
                err = errno;
        }
        if (fd >= 0 || err != EADDRINUSE || port == 0 || waited >= FLOCK_WAIT_MS)
            break;
        if (waited == 0)
            log_info("listen %s:%u: address in use; waiting up to %d s for it to be released", host,
                     port, FLOCK_WAIT_MS / 1000);
        struct timespec ts = { 0, BIND_RETRY_MS * 1000000L };
        nanosleep(&ts, NULL);
    }
    freeaddrinfo(res);
    if (fd < 0) {
        log_error("listen %s:%u: %s", host, port, strerror(err));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    *bound_port = port;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            *bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            *bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}
