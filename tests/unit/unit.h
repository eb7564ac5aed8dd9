/* A minimal unit-test harness in the libuv style: every TEST() registers
 * itself at load time; the runner executes each test in its own forked
 * process with a time limit, so a crash or hang fails that test only. */
#ifndef TXP_UNIT_H
#define TXP_UNIT_H

#include <stdio.h>
#include <stdlib.h>

typedef void (*unit_fn)(void);

void unit_register(const char *name, unit_fn fn, unsigned timeout_s);
void unit_fail(const char *file, int line, const char *expr, const char *detail);

/* TEST(name) { ... } defines and registers a test with a 30 s limit;
 * TEST_SLOW(name, seconds) sets another limit. */
#define TEST_SLOW(name, secs)                                                      \
    static void test_##name(void);                                                 \
    __attribute__((constructor)) static void register_##name(void)                 \
    {                                                                              \
        unit_register(#name, test_##name, secs);                                   \
    }                                                                              \
    static void test_##name(void)
#define TEST(name) TEST_SLOW(name, 30)

#define CHECK(expr)                                                                \
    do {                                                                           \
        if (!(expr))                                                               \
            unit_fail(__FILE__, __LINE__, #expr, NULL);                            \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                         \
    do {                                                                           \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);            \
        if (check_a_ != check_b_) {                                                \
            char check_msg_[96];                                                   \
            snprintf(check_msg_, sizeof check_msg_, "%lld != %lld", check_a_,      \
                     check_b_);                                                    \
            unit_fail(__FILE__, __LINE__, #a " == " #b, check_msg_);               \
        }                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                            \
    do {                                                                           \
        const char *check_a_ = (a), *check_b_ = (b);                               \
        if (check_a_ == NULL || check_b_ == NULL || strcmp(check_a_, check_b_)) {  \
            char check_msg_[256];                                                  \
            snprintf(check_msg_, sizeof check_msg_, "\"%s\" != \"%s\"",            \
                     check_a_ ? check_a_ : "(null)", check_b_ ? check_b_ : "(null)"); \
            unit_fail(__FILE__, __LINE__, #a " == " #b, check_msg_);               \
        }                                                                          \
    } while (0)

#endif
