/* The sd_notify datagram protocol: AF_UNIX SOCK_DGRAM to the path in
 * $NOTIFY_SOCKET ('@' prefix = abstract namespace). */
#include "master/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"

int notify_send(const char *message)
{
    static int warned;
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0')
        return 0;
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    size_t len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof addr.sun_path) {
        if (!warned++)
            log_warn("NOTIFY_SOCKET '%s' is not a usable socket path; not notifying", path);
        return -1;
    }
    memcpy(addr.sun_path, path, len);
    if (path[0] == '@')
        addr.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    ssize_t sent = sendto(fd, message, strlen(message), MSG_NOSIGNAL, (struct sockaddr *)&addr, alen);
    int saved = errno;
    close(fd);
    if (sent < 0) {
        if (!warned++)
            log_warn("sd_notify to %s failed: %s", path, strerror(saved));
        return -1;
    }
    return 0;
}

void notify_status(const char *fmt, ...)
{
    char msg[256] = "STATUS=";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + 7, sizeof msg - 7, fmt, ap);
    va_end(ap);
    notify_send(msg);
}

long long notify_watchdog_usec(void)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    if (usec == NULL || (pid != NULL && atol(pid) != (long)getpid()))
        return 0;
    char *end;
    long long v = strtoll(usec, &end, 10);
    return (*end == '\0' && v > 0) ? v : 0;
}
