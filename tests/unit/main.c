/* Unit-test runner: forks one child per registered test, enforces its time
 * limit, and prints one line per test and a closing "N passed, N failed".
 * A test's stderr (logs, check failures) is shown only when it fails, or
 * always with UNIT_VERBOSE=1. Arguments filter tests by substring:
 * `unit_tests ring` runs the ring tests. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/unit.h"

#define UNIT_MAX_TESTS 512

struct unit_test {
    const char *name;
    unit_fn fn;
    unsigned timeout_s;
};

static struct unit_test tests[UNIT_MAX_TESTS];
static unsigned n_tests;

void unit_register(const char *name, unit_fn fn, unsigned timeout_s)
{
    if (n_tests == UNIT_MAX_TESTS) {
        fprintf(stderr, "unit: too many tests (raise UNIT_MAX_TESTS)\n");
        exit(2);
    }
    tests[n_tests++] = (struct unit_test){ name, fn, timeout_s };
}

void unit_fail(const char *file, int line, const char *expr, const char *detail)
{
    fprintf(stderr, "  %s:%d: CHECK(%s) failed%s%s\n", file, line, expr, detail ? ": " : "",
            detail ? detail : "");
    fflush(stderr);
    _exit(1);
}

static int wanted(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]))
            return 1;
    return 0;
}

/* Copies what the test wrote to its captured stderr onto ours. */
static void replay_output(FILE *captured)
{
    char buf[4096];
    size_t n;
    rewind(captured);
    while ((n = fread(buf, 1, sizeof buf, captured)) > 0)
        fwrite(buf, 1, n, stderr);
}

static int run_one(const struct unit_test *t, int verbose)
{
    fflush(stdout);
    fflush(stderr);
    FILE *captured = verbose ? NULL : tmpfile();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    if (pid == 0) {
        if (captured != NULL)
            dup2(fileno(captured), STDERR_FILENO);
        alarm(t->timeout_s);
        t->fn();
        _exit(0);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        /* EINTR only: keep waiting for this test */
    }
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && captured != NULL)
        replay_output(captured);
    if (captured != NULL)
        fclose(captured);
    if (WIFSIGNALED(status))
        fprintf(stderr, "  killed by signal %d%s\n", WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (time limit)" : "");
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    unsigned passed = 0, failed = 0;
    const char *v = getenv("UNIT_VERBOSE");
    int verbose = v != NULL && strcmp(v, "0") != 0;
    for (unsigned i = 0; i < n_tests; i++) {
        if (!wanted(tests[i].name, argc, argv))
            continue;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int rc = run_one(&tests[i], verbose);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
        printf("%s %-50s %8.1f ms\n", rc == 0 ? "ok  " : "FAIL", tests[i].name, ms);
        if (rc == 0)
            passed++;
        else
            failed++;
    }
    printf("%u passed, %u failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
