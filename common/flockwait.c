/* See flockwait.h. Polls rather than blocking in flock(): a live instance
 * holds its lock for ever, and the caller must be able to give up. */
#include "common/flockwait.h"

#include <errno.h>
#include <sys/file.h>
#include <time.h>

int flock_wait(int fd, int timeout_ms)
{
    for (int waited = 0;; waited += 20) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return 0;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return -1;
        if (waited >= timeout_ms) {
            errno = EWOULDBLOCK;
            return -1;
        }
        struct timespec ts = { 0, 20 * 1000000L };
        nanosleep(&ts, NULL);
    }
}
