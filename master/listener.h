/* The one listening socket, bound by the master and inherited by every
 * frontend, so a crashed frontend never drops connections waiting in the
 * accept queue (unlike SO_REUSEPORT, whose per-socket queue dies with it). */
#ifndef TXP_LISTENER_H
#define TXP_LISTENER_H

/* Binds host:port (port 0 picks a free one; *bound_port tells which) and
 * listens, non-blocking. Returns the fd or -1 with the reason logged. */
int listener_open(const char *host, unsigned port, unsigned *bound_port);

#endif
