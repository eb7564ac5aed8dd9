/* Configuration parsing: defaults, then TXP_* environment variables, then
 * command-line flags, each value range-checked with a message that names the
 * setting, so a bad deployment fails at start with exit code 2. */
#include "common/config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/node.h"
#include "common/ring.h"
#include "common/shm.h"

#define TXP_VERSION "0.1.0"

struct option_spec {
    const char *flag;
    const char *env;
    const char *arg;
    const char *help;
};

enum option_id {
    OPT_LISTEN,
    OPT_DB,
    OPT_WORKERS,
    OPT_FRONTENDS,
    OPT_QUEUE_SIZE,
    OPT_BATCH_MAX,
    OPT_SYNC,
    OPT_SHM_NAME,
    OPT_DRAIN_TIMEOUT,
    OPT_HTTP_TIMEOUT,
    OPT_HEADER_TIMEOUT,
    OPT_IDLE_TIMEOUT,
    OPT_MAX_CONNECTIONS,
    OPT_LOG_LEVEL,
    OPT_LOG_FORMAT,
    OPT_WORKER_TIMEOUT,
    OPT_IDEMPOTENCY_TTL,
    OPT_USER,
    OPT_DISCARD_SHM,
    OPT_NODE_ID,
    OPT_HELP,
    OPT_VERSION,
    OPT__COUNT
};

/* getopt_long returns OPT_* + OPT_BASE for each. */
#define OPT_BASE 256

static const struct option_spec specs[OPT__COUNT] = {
    [OPT_LISTEN] = { "listen", "TXP_LISTEN", "HOST:PORT", "address to listen on (default 127.0.0.1:8000)" },
    [OPT_DB] = { "db", "TXP_DB_PATH", "PATH", "SQLite ledger file, created if missing (default ./users.db)" },
    [OPT_WORKERS] = { "workers", "TXP_WORKERS", "N", "worker processes applying batches (default 2, max 32)" },
    [OPT_FRONTENDS] = { "frontends", "TXP_FRONTENDS", "N", "HTTP frontend processes (default 2, max 32)" },
    [OPT_QUEUE_SIZE] = { "queue-size", "TXP_QUEUE_SIZE", "N", "queue capacity in entries (default 65536)" },
    [OPT_BATCH_MAX] = { "batch-max", "TXP_BATCH_MAX", "N", "most entries per SQLite transaction (default 1024, max 4096)" },
    [OPT_SYNC] = { "sync", "TXP_SYNC", "normal|full", "SQLite synchronous mode (default normal)" },
    [OPT_SHM_NAME] = { "shm-name", "TXP_SHM_NAME", "NAME", "shared-memory segment (default /txprocd-<port>)" },
    [OPT_DRAIN_TIMEOUT] = { "drain-timeout", "TXP_DRAIN_TIMEOUT", "SECONDS", "how long SIGTERM waits for the queue to drain (default 10)" },
    [OPT_HTTP_TIMEOUT] = { "http-timeout", "TXP_HTTP_TIMEOUT", "SECONDS", "a request body must arrive, and an answer be written, within this (default 30)" },
    [OPT_HEADER_TIMEOUT] = { "header-timeout", "TXP_HEADER_TIMEOUT", "SECONDS", "from a request's first byte to the end of its headers, else 408 (default 10)" },
    [OPT_IDLE_TIMEOUT] = { "idle-timeout", "TXP_IDLE_TIMEOUT", "SECONDS", "close a keep-alive connection idle this long (default 60)" },
    [OPT_MAX_CONNECTIONS] = { "max-connections", "TXP_MAX_CONNECTIONS", "N", "open connections per frontend; above it, stop accepting until one closes (default 10000)" },
    [OPT_LOG_LEVEL] = { "log-level", "TXP_LOG_LEVEL", "LEVEL", "debug, info, warn or error (default info)" },
    [OPT_LOG_FORMAT] = { "log-format", "TXP_LOG_FORMAT", "text|json", "log lines as text, or as one JSON object per line (time, level, role, pid, node, message) (default text)" },
    [OPT_WORKER_TIMEOUT] = { "worker-timeout", "TXP_WORKER_TIMEOUT", "SECONDS", "kill and replace a child whose heartbeat is older (default 20, 0 = never)" },
    [OPT_IDEMPOTENCY_TTL] = { "idempotency-ttl", "TXP_IDEMPOTENCY_TTL", "SECONDS", "keep Idempotency-Keys at least this long, then prune them (default 86400)" },
    [OPT_USER] = { "user", "TXP_USER", "NAME", "when started as root, run as this user after binding the socket" },
    [OPT_DISCARD_SHM] = { "discard-shm", NULL, NULL, "drop an abandoned segment that cannot be adopted, or remove one that is not ours (loses what it queued)" },
    [OPT_NODE_ID] = { "node-id", "TXP_NODE_ID", "N", "this node's number, 1 to 63, when several txprocd share one PostgreSQL ledger (default: the only one)" },
    [OPT_HELP] = { "help", NULL, NULL, "show this help and exit" },
    [OPT_VERSION] = { "version", NULL, NULL, "show the version and exit" },
};
#define N_SPECS ((size_t)OPT__COUNT)

void config_usage(void)
{
    printf("Usage: txprocd [OPTIONS]\n\n"
           "Bank transaction processor: HTTP frontends queue transactions in shared memory,\n"
           "workers apply them to a SQLite ledger in group commits.\n\nOptions (environment variable in brackets; flags win):\n");
    for (size_t i = 0; i < N_SPECS; i++) {
        char left[48];
        snprintf(left, sizeof left, "--%s%s%s", specs[i].flag, specs[i].arg ? " " : "",
                 specs[i].arg ? specs[i].arg : "");
        printf("  %-28s %s", left, specs[i].help);
        if (specs[i].env)
            printf(" [%s]", specs[i].env);
        printf("\n");
    }
    printf("\nSignals: SIGTERM/SIGINT drain and exit; the master restarts crashed children.\n");
}

static int parse_uint(const char *name, const char *s, unsigned min, unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *s == '-' || *end != '\0' || errno != 0 || v < min || v > max) {
        fprintf(stderr, "txprocd: --%s: '%s' is not a whole number from %u to %u\n", name, s, min, max);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

static int parse_listen(struct config *cfg, const char *s)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || (size_t)(colon - s) >= sizeof cfg->listen_host) {
        fprintf(stderr, "txprocd: --listen: '%s' is not HOST:PORT (e.g. 127.0.0.1:8000)\n", s);
        return -1;
    }
    memcpy(cfg->listen_host, s, (size_t)(colon - s));
    cfg->listen_host[colon - s] = '\0';
    return parse_uint("listen (port)", colon + 1, 0, 65535, &cfg->port);
}

static int copy_string(const char *name, char *dst, size_t len, const char *s)
{
    if (*s == '\0' || strlen(s) >= len) {
        fprintf(stderr, "txprocd: --%s: must be 1 to %zu characters\n", name, len - 1);
        return -1;
    }
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

static int apply_option(struct config *cfg, enum option_id idx, const char *v)
{
    const char *name = specs[idx].flag;
    switch (idx) {
    case OPT_LISTEN: return parse_listen(cfg, v);
    case OPT_DB: return copy_string(name, cfg->db_path, sizeof cfg->db_path, v);
    case OPT_WORKERS: return parse_uint(name, v, 1, 32, &cfg->workers);
    case OPT_FRONTENDS: return parse_uint(name, v, 1, 32, &cfg->frontends);
    case OPT_QUEUE_SIZE: return parse_uint(name, v, 2, RING_MAX_CAPACITY, &cfg->queue_size);
    case OPT_BATCH_MAX: return parse_uint(name, v, 1, RING_MAX_BATCH, &cfg->batch_max);
    case OPT_SYNC:
        if (strcmp(v, "normal") == 0 || strcmp(v, "full") == 0) {
            cfg->sync = strcmp(v, "full") == 0 ? SYNC_FULL : SYNC_NORMAL;
            return 0;
        }
        fprintf(stderr, "txprocd: --sync: '%s' is not one of normal, full\n", v);
        return -1;
    case OPT_SHM_NAME:
        if (v[0] != '/' || strchr(v + 1, '/') != NULL) {
            fprintf(stderr, "txprocd: --shm-name: '%s' must start with '/' and contain no other '/'\n", v);
            return -1;
        }
        return copy_string(name, cfg->shm_name, sizeof cfg->shm_name, v);
    case OPT_DRAIN_TIMEOUT: return parse_uint(name, v, 0, 3600, &cfg->drain_timeout_s);
    case OPT_HTTP_TIMEOUT: return parse_uint(name, v, 1, 3600, &cfg->http_timeout_s);
    case OPT_HEADER_TIMEOUT: return parse_uint(name, v, 1, 3600, &cfg->header_timeout_s);
    case OPT_IDLE_TIMEOUT: return parse_uint(name, v, 1, 86400, &cfg->idle_timeout_s);
    case OPT_MAX_CONNECTIONS: return parse_uint(name, v, 1, 1000000, &cfg->max_connections);
    case OPT_LOG_LEVEL: {
        enum log_level level;
        if (log_parse_level(v, &level) != 0) {
            fprintf(stderr, "txprocd: --log-level: '%s' is not one of debug, info, warn, error\n", v);
            return -1;
        }
        cfg->log_level = (int)level;
        return 0;
    }
    case OPT_LOG_FORMAT: {
        enum log_format format;
        if (log_parse_format(v, &format) != 0) {
            fprintf(stderr, "txprocd: --log-format: '%s' is not one of text, json\n", v);
            return -1;
        }
        cfg->log_format = (int)format;
        return 0;
    }
    case OPT_WORKER_TIMEOUT: return parse_uint(name, v, 0, 3600, &cfg->child_timeout_s);
    case OPT_IDEMPOTENCY_TTL:
        return parse_uint(name, v, 1, 10u * 365 * 86400, &cfg->idempotency_ttl_s);
    case OPT_USER: return copy_string(name, cfg->user, sizeof cfg->user, v);
    case OPT_DISCARD_SHM: cfg->discard_shm = 1; return 0;
    case OPT_NODE_ID: return parse_uint(name, v, 1, NODE_MAX, &cfg->node_id);
    case OPT_HELP:
    case OPT_VERSION:
    case OPT__COUNT:
        break;
    }
    return -1;
}

static void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->listen_host, "127.0.0.1");
    cfg->port = 8000;
    strcpy(cfg->db_path, "users.db");
    cfg->workers = 2;
    cfg->frontends = 2;
    cfg->queue_size = 65536;
    cfg->batch_max = 1024;
    cfg->idempotency_ttl_s = 86400;
    cfg->sync = SYNC_NORMAL;
    cfg->drain_timeout_s = 10;
    cfg->http_timeout_s = 30;
    cfg->header_timeout_s = 10;
    cfg->idle_timeout_s = 60;
    cfg->max_connections = 10000;
    cfg->child_timeout_s = 20;
    cfg->max_body = 4096;
    cfg->max_headers = 8192;
    cfg->log_level = LOG_LEVEL_INFO;
    cfg->log_format = LOG_FORMAT_TEXT;
}

/* Flags win over the environment, so a setting given on the command line
 * is not read from the environment at all (a stale bad TXP_* value must not
 * stop a start that overrides it). */
int config_parse(struct config *cfg, int argc, char **argv)
{
    config_defaults(cfg);

    struct option longopts[N_SPECS + 1];
    for (size_t i = 0; i < N_SPECS; i++)
        longopts[i] = (struct option){ specs[i].flag, specs[i].arg ? required_argument : no_argument,
                                       NULL, (int)i + OPT_BASE };
    longopts[N_SPECS] = (struct option){ NULL, 0, NULL, 0 };

    const char *flag_value[N_SPECS] = { 0 };
    int flag_set[N_SPECS] = { 0 };
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == 'h' || c == OPT_BASE + OPT_HELP) {
            config_usage();
            return 1;
        }
        if (c == OPT_BASE + OPT_VERSION) {
            printf("txprocd %s\n", TXP_VERSION);
            return 1;
        }
        if (c < OPT_BASE || (size_t)(c - OPT_BASE) >= N_SPECS) {
            const char *bad = argv[optind - 1];
            if (c == '?' && optopt >= OPT_BASE)
                fprintf(stderr, "txprocd: option '%s' needs a value (see --help)\n", bad);
            else
                fprintf(stderr, "txprocd: unknown option '%s' (see --help)\n", bad);
            return -1;
        }
        flag_set[c - OPT_BASE] = 1;
        flag_value[c - OPT_BASE] = optarg;
    }
    if (optind < argc) {
        fprintf(stderr, "txprocd: unexpected argument '%s' (see --help)\n", argv[optind]);
        return -1;
    }

    for (size_t i = 0; i < N_SPECS; i++) {
        const char *v = specs[i].env && !flag_set[i] ? getenv(specs[i].env) : NULL;
        if (v != NULL && apply_option(cfg, (enum option_id)i, v) != 0) {
            fprintf(stderr, "txprocd: (from environment variable %s)\n", specs[i].env);
            return -1;
        }
    }
    for (size_t i = 0; i < N_SPECS; i++)
        if (flag_set[i] && apply_option(cfg, (enum option_id)i, flag_value[i]) != 0)
            return -1;

    if (cfg->batch_max > cfg->queue_size) {
        if (flag_set[OPT_BATCH_MAX] || getenv("TXP_BATCH_MAX") != NULL) {
            fprintf(stderr, "txprocd: --batch-max (%u) cannot exceed --queue-size (%u)\n",
                    cfg->batch_max, cfg->queue_size);
            return -1;
        }
        cfg->batch_max = cfg->queue_size; /* the default adapts to a small queue */
    }
    if (cfg->shm_name[0] == '\0')
        shm_default_name(cfg->shm_name, sizeof cfg->shm_name, cfg->port);
    return 0;
}
