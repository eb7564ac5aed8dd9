/* Server configuration: defaults, TXP_* environment variables, then command
 * line flags (flags win). Parsed once by the master; children inherit the
 * struct across fork. */
#ifndef TXP_CONFIG_H
#define TXP_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* Exit code of a child that must not be restarted (cannot open the DB...). */
#define TXP_EXIT_FATAL 78
/* Exit code for bad configuration / refused start. */
#define TXP_EXIT_CONFIG 2

enum sync_mode { SYNC_NORMAL = 0, SYNC_FULL = 1 };

struct config {
    char listen_host[64];
    unsigned port;
    char db_path[512];
    char shm_name[64];
    unsigned workers;
    unsigned frontends;
    unsigned queue_size;
    unsigned batch_max;
    enum sync_mode sync;
    unsigned drain_timeout_s;
    unsigned http_timeout_s;   /* a body or an answer must move within this */
    unsigned header_timeout_s; /* first byte of a request to the end of its headers */
    unsigned idle_timeout_s;   /* idle keep-alive connections are closed */
    unsigned max_connections;  /* per frontend */
    unsigned child_timeout_s;  /* a child silent this long is killed (0: never) */
    unsigned idempotency_ttl_s; /* keys are kept at least this long */
    char user[64];             /* drop root privileges to this user after binding */
    unsigned max_body;         /* bytes; larger bodies get 413 */
    unsigned max_headers;      /* bytes of request headers */
    int discard_shm;           /* drop an incompatible abandoned segment */
    unsigned node_id;          /* 1..NODE_MAX when several nodes share the ledger; 0: the only one */
    int log_level;             /* enum log_level */
    int log_format;            /* enum log_format */
};

/* Fills cfg from defaults, then environment, then argv. Returns 0 to run,
 * 1 if --help/--version was printed (exit 0), or -1 after printing a clear
 * message to stderr (exit TXP_EXIT_CONFIG). */
int config_parse(struct config *cfg, int argc, char **argv);
void config_usage(void);

#endif
