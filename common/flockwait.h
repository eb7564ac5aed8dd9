/* Taking an instance lock that a just-killed instance may still hold: when
 * a master dies, its children get SIGKILL (PR_SET_PDEATHSIG) but take a
 * moment to go, and each holds the inherited descriptor and so the lock.
 * A restart right away must wait that moment out rather than fail. */
#ifndef TXP_FLOCKWAIT_H
#define TXP_FLOCKWAIT_H

/* Waits up to timeout_ms for an exclusive flock(2) on fd. Returns 0, or -1
 * with errno (EWOULDBLOCK: still held by someone after the wait). */
int flock_wait(int fd, int timeout_ms);

/* How long the ledger and segment locks are waited for. */
#define FLOCK_WAIT_MS 5000

#endif
