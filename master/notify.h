/* systemd readiness notification (sd_notify protocol) without libsystemd:
 * one datagram to $NOTIFY_SOCKET per state change. A no-op when the variable
 * is unset, so the same binary runs under systemd, Docker or a terminal. */
#ifndef TXP_NOTIFY_H
#define TXP_NOTIFY_H

/* Sends e.g. "READY=1" or "STATUS=...". Returns 0, or -1 (logged once). */
int notify_send(const char *message);
/* The watchdog interval systemd asked for ($WATCHDOG_USEC, when
 * $WATCHDOG_PID is unset or ours), or 0 when there is none. */
long long notify_watchdog_usec(void);

/* printf-style STATUS= line. */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
