/* ISO 8601 formatting shared by the HTTP API and txctl. */
#include "common/clock.h"

#include <stdio.h>

void clock_format_iso(int64_t wall_us, char buf[25])
{
    time_t sec = (time_t)(wall_us / 1000000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(buf, 25, "%Y-%m-%dT%H:%M:%S", &tm);
    unsigned ms = (unsigned)((wall_us / 1000) % 1000);
    if (n == 19)
        snprintf(buf + 19, 6, ".%03uZ", ms % 1000u);
}
