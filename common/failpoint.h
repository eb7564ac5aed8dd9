/* Fault injection for the tests: named points in the code where a test can
 * make a process fail on purpose, at moments no signal can hit reliably
 * (between COMMIT and the acknowledge, before a child reports ready).
 *
 * Only the test binary (build/txprocd-test, linked with failpoint.c built
 * with -DTXP_FAILPOINTS) reads the environment; in txprocd itself every
 * failpoint() returns 0 and no TXP_FAILPOINT_* variable has any effect.
 *
 * TXP_FAILPOINT_<NAME>=always fires every time; any other value names a
 * file, and the point fires once, in whichever process removes that file
 * first. */
#ifndef TXP_FAILPOINT_H
#define TXP_FAILPOINT_H

/* 1 if the failpoint NAME should fire now. */
int failpoint(const char *name);
/* Waits while the file TXP_FAILPOINT_<NAME> names exists (a test holds a
 * process back at NAME, then lets it go by removing the file). */
void failpoint_hold(const char *name);

#endif
