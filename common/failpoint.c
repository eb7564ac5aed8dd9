/* See failpoint.h. Built twice: without TXP_FAILPOINTS for txprocd, where
 * nothing here looks at the environment, and with it for txprocd-test. */
#include "common/failpoint.h"

#ifdef TXP_FAILPOINTS
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

/* The value of TXP_FAILPOINT_<name>, or NULL. */
static const char *failpoint_value(const char *name)
{
    char var[64];
    snprintf(var, sizeof var, "TXP_FAILPOINT_%s", name);
    return getenv(var);
}

int failpoint(const char *name)
{
    const char *value = failpoint_value(name);
    if (value == NULL || value[0] == '\0')
        return 0;
    if (strcmp(value, "always") != 0 && unlink(value) != 0)
        return 0;
    log_warn("failpoint %s fires", name);
    return 1;
}

void failpoint_hold(const char *name)
{
    const char *path = failpoint_value(name);
    if (path == NULL || access(path, F_OK) != 0)
        return;
    log_warn("failpoint %s: held while %s exists", name, path);
    while (access(path, F_OK) == 0) {
        struct timespec ts = { 0, 10 * 1000000L };
        nanosleep(&ts, NULL);
    }
}
#else
int failpoint(const char *name)
{
    (void)name;
    return 0;
}

void failpoint_hold(const char *name)
{
    (void)name;
}
#endif
