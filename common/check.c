/* The failure path of ASSERT (check.h): one log line naming the broken
 * invariant, then abort() so the supervisor sees a crash and recovers. */
#include "common/check.h"

#include <stdlib.h>

#include "common/log.h"

void check_failed(const char *expr, const char *file, int line, const char *func)
{
    log_error("assertion failed: %s (%s:%d, %s); aborting this process", expr, file, line, func);
    abort();
}
