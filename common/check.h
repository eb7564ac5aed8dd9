/* Always-on assertions for the invariants the code relies on (ring
 * positions, claim counts, outcome codes, the supervisor's states). They
 * stay in release builds: an impossible state in a process that moves money
 * must stop that process, not be logged and skipped. A failed assertion
 * logs where and what, then aborts; in a child that means the master reaps
 * it, requeues its claim and starts a replacement, so the failure costs one
 * process, never an accepted transaction. */
#ifndef TXP_CHECK_H
#define TXP_CHECK_H

void check_failed(const char *expr, const char *file, int line, const char *func)
    __attribute__((noreturn, cold));

#define ASSERT(expr) ((expr) ? (void)0 : check_failed(#expr, __FILE__, __LINE__, __func__))

#endif
