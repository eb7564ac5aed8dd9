/* Time sources in one place: wall-clock microseconds for timestamps that are
 * stored or shown (queued_at, applied_at) and monotonic ones for intervals. */
#ifndef TXP_CLOCK_H
#define TXP_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t clock_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Formats wall-clock microseconds as ISO 8601 UTC with milliseconds
 * ("2026-11-25T11:53:31.123Z"); buf needs 25 bytes. */
void clock_format_iso(int64_t wall_us, char buf[25]);

#endif
