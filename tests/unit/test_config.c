/* Configuration parsing: values that mean something special must reach the
 * rest of the server as given (0 for --worker-timeout means "never", not
 * "the default"), and the sync mode must be the one asked for. */
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "tests/unit/unit.h"

static int parse(struct config *cfg, const char *a, const char *b)
{
    char *argv[] = { (char *)"txprocd", (char *)a, (char *)b, NULL };
    unsetenv("TXP_WORKER_TIMEOUT");
    unsetenv("TXP_SYNC");
    return config_parse(cfg, a ? 3 : 1, argv);
}

TEST(config_worker_timeout_zero_means_never)
{
    struct config cfg;
    CHECK_EQ_INT(parse(&cfg, NULL, NULL), 0);
    CHECK_EQ_INT(cfg.child_timeout_s, 20);
    CHECK_EQ_INT(parse(&cfg, "--worker-timeout", "0"), 0);
    CHECK_EQ_INT(cfg.child_timeout_s, 0);
    CHECK_EQ_INT(parse(&cfg, "--worker-timeout", "7"), 0);
    CHECK_EQ_INT(cfg.child_timeout_s, 7);
}

TEST(config_sync_mode_is_the_one_asked_for)
{
    struct config cfg;
    CHECK_EQ_INT(parse(&cfg, NULL, NULL), 0);
    CHECK_EQ_INT(cfg.sync, SYNC_NORMAL);
    CHECK_EQ_INT(parse(&cfg, "--sync", "full"), 0);
    CHECK_EQ_INT(cfg.sync, SYNC_FULL);
}
