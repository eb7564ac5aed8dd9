/* txctl: the operator's inspector. Maps the shared segment read-only and
 * prints counters, queue and children (plain or --json), like varnishstat;
 * also seeds demo ledgers and migrates a SQLite ledger to PostgreSQL. It
 * never writes the segment. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/shm.h"
#include "common/stats.h"
#include "ledger/ledger.h"
#include "tools/txctl/top.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: txctl [--shm-name NAME] stats|children|queue [--json]\n"
            "       txctl [--shm-name NAME] top [--interval SECONDS] [--iterations N]\n"
            "       txctl seed --db PATH|URI --accounts N [--seed S]\n"
            "       txctl migrate --from users.db --to postgresql://USER@HOST:PORT/DB\n\n"
            "  stats      counters, rates, latency percentiles, queue\n"
            "  children   frontend and worker processes: pid, state, restarts, uptime\n"
            "  queue      depth, claimed, capacity, high-water mark\n"
            "  top        live view refreshed every second; q or Ctrl-C quits (plain lines on a pipe)\n"
            "  seed       create a demo ledger (card numbers 6219 8619 NNNN 8640) in a SQLite\n"
            "             file or a PostgreSQL database (URI or conninfo)\n"
            "  migrate    copy a SQLite ledger (txprocd's or the prototype's users.db) into an\n"
            "             empty PostgreSQL ledger, then check counts and balance sum match\n\n"
            "  PostgreSQL passwords come from the URI, PGPASSFILE (~/.pgpass) or PGPASSWORD;\n"
            "  txctl never prints them.\n"
            "  --shm-name NAME  segment to inspect (default $TXP_SHM_NAME or /txprocd-8000)\n"
            "  --json           machine-readable output\n");
}

static int print_json(cJSON *doc)
{
    char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (text == NULL) {
        fprintf(stderr, "txctl: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

/* Reads a number from a stats document; int64 values are stored raw. */
static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsRaw(v))
        return strtod(v->valuestring, NULL);
    return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

static void print_queue(const struct shm_seg *seg)
{
    cJSON *q = stats_queue_json(seg);
    printf("queue      depth %.0f  claimed %.0f  capacity %.0f  high-water %.0f  requeued %.0f  "
           "lock repairs %.0f  next txid %.0f\n", num(q, "depth"), num(q, "claimed"), num(q, "capacity"),
           num(q, "high_water"), num(q, "requeued"), num(q, "repairs"), num(q, "next_txid"));
    cJSON_Delete(q);
}

static void print_children(const struct shm_seg *seg)
{
    cJSON *doc = stats_children_json(seg);
    printf("%-5s %-9s %-6s %-8s %-9s %-9s %-10s %s\n", "slot", "role", "index", "pid", "state",
           "restarts", "last exit", "uptime");
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(doc, "children")) {
        const cJSON *last = cJSON_GetObjectItemCaseSensitive(c, "last_exit");
        char exitbuf[24] = "-";
        if (cJSON_IsNumber(last))
            snprintf(exitbuf, sizeof exitbuf, last->valueint < 0 ? "signal %d" : "status %d",
                     last->valueint < 0 ? -last->valueint : last->valueint);
        printf("%-5.0f %-9s %-6.0f %-8.0f %-9s %-9.0f %-10s %.1fs\n", num(c, "slot"),
               cJSON_GetObjectItemCaseSensitive(c, "role")->valuestring, num(c, "index"), num(c, "pid"),
               cJSON_GetObjectItemCaseSensitive(c, "state")->valuestring, num(c, "restarts"), exitbuf,
               num(c, "uptime_s"));
    }
    cJSON_Delete(doc);
}

static void print_stats(const struct shm_seg *seg)
{
    cJSON *doc = stats_metrics_json(seg);
    if (doc == NULL)
        return;
    char listen[4 * sizeof seg->hdr->params.listen + 1];
    shm_printable(seg->hdr->params.listen, sizeof seg->hdr->params.listen, listen, sizeof listen);
    char node[24] = "";
    if (seg->hdr->params.node_id != 0)
        snprintf(node, sizeof node, "  node %u", seg->hdr->params.node_id);
    printf("txprocd %s%s  master pid %d  up %.0fs  shm %s\n", listen, node, seg->hdr->master_pid,
           num(doc, "uptime_s"), seg->name);
    const cJSON *counters = cJSON_GetObjectItemCaseSensitive(doc, "counters");
    for (unsigned i = 0; i < METRIC__COUNT; i++)
        printf("  %-24s %14.0f  %s\n", metric_table[i].name, num(counters, metric_table[i].name),
               metric_table[i].help);
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(doc, "latency_ms");
    printf("latency ms p50 %.3f  p90 %.3f  p99 %.3f  max %.3f (enqueue to commit)\n", num(lat, "p50"),
           num(lat, "p90"), num(lat, "p99"), num(lat, "max"));
    printf("rate       %.1f outcomes/s (last 5 s)\n", num(doc, "applied_per_second"));
    cJSON_Delete(doc);
    print_queue(seg);
}

struct view_opts {
    int json;
    int iterations;
    double interval_s;
};

static int cmd_view(const char *shm_name, const char *what, const struct view_opts *o)
{
    struct shm_seg seg;
    char why[256];
    if (shm_attach_readonly(&seg, shm_name, why, sizeof why) != 0) {
        fprintf(stderr, "txctl: %s\n", why);
        return 1;
    }
    if (!shm_instance_alive(&seg)) {
        fprintf(stderr, "txctl: segment %s is stale: its txprocd (master pid %d) is not running; the "
                "next start with this --shm-name recovers what it queued\n", shm_name, seg.hdr->master_pid);
        shm_close(&seg);
        return 1;
    }
    int rc = 0;
    int stats = strcmp(what, "stats") == 0, children = strcmp(what, "children") == 0;
    if (strcmp(what, "top") == 0)
        rc = top_run(&seg, o->iterations, o->interval_s);
    else if (o->json)
        rc = print_json(stats ? stats_metrics_json(&seg)
                        : children ? stats_children_json(&seg) : stats_queue_json(&seg));
    else if (stats)
        print_stats(&seg);
    else if (children)
        print_children(&seg);
    else
        print_queue(&seg);
    shm_close(&seg);
    return rc;
}

static int parse_count(const char *what, const char *s, unsigned long max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *s == '-' || *end != '\0' || errno != 0 || v > max) {
        fprintf(stderr, "txctl: %s: '%s' is not a whole number up to %lu\n", what, s, max);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

static int cmd_seed(int argc, char **argv)
{
    static const struct option opts[] = { { "db", required_argument, NULL, 'd' },
                                          { "accounts", required_argument, NULL, 'a' },
                                          { "seed", required_argument, NULL, 's' },
                                          { NULL, 0, NULL, 0 } };
    const char *db = NULL;
    unsigned accounts = 0, seed = 42;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'd')
            db = optarg;
        else if (c == 'a' && parse_count("--accounts", optarg, 100000000UL, &accounts) != 0)
            return 2;
        else if (c == 's' && parse_count("--seed", optarg, 0xffffffffUL, &seed) != 0)
            return 2;
        else if (c == '?')
            return 2;
    }
    if (db == NULL || accounts == 0) {
        fprintf(stderr, "txctl: seed needs --db PATH|URI and --accounts N (N >= 1)\n");
        return 2;
    }
    log_set_role("txctl");
    return ledger_seed(db, accounts, seed) == 0 ? 0 : 1;
}

static int cmd_migrate(int argc, char **argv)
{
    static const struct option opts[] = { { "from", required_argument, NULL, 'f' },
                                          { "to", required_argument, NULL, 't' },
                                          { NULL, 0, NULL, 0 } };
    const char *from = NULL, *to = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'f')
            from = optarg;
        else if (c == 't')
            to = optarg;
        else
            return 2;
    }
    if (from == NULL || to == NULL || optind != argc) {
        fprintf(stderr, "txctl: migrate needs --from SQLITE_PATH and --to POSTGRESQL_URI\n");
        return 2;
    }
    if (ledger_backend_of(from) != LEDGER_SQLITE || ledger_backend_of(to) != LEDGER_POSTGRES) {
        fprintf(stderr, "txctl: migrate copies a SQLite file (--from) into PostgreSQL (--to "
                        "postgresql://... or host=... dbname=...)\n");
        return 2;
    }
    if (access(from, R_OK) != 0) {
        fprintf(stderr, "txctl: migrate: cannot read %s: %s\n", from, strerror(errno));
        return 1;
    }
    log_set_role("txctl");
    return ledger_migrate(from, to) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    /* Copies of the arguments go to the commands; the originals, which
     * /proc shows other users, lose any ledger password. The copies live as
     * long as the process (a static, so leak checkers see them reachable). */
    static char **args;
    args = calloc((size_t)argc + 1, sizeof *args);
    if (args == NULL) {
        fprintf(stderr, "txctl: out of memory\n");
        return 1;
    }
    for (int k = 0; k < argc; k++) {
        args[k] = strdup(argv[k]);
        if (args[k] == NULL) {
            fprintf(stderr, "txctl: out of memory\n");
            return 1;
        }
        ledger_hide_password(argv[k]);
    }
    argv = args;
    const char *shm_name = getenv("TXP_SHM_NAME");
    if (shm_name == NULL || shm_name[0] == '\0')
        shm_name = "/txprocd-8000";
    int i = 1;
    struct view_opts opts = { 0, 0, 1.0 };
    const char *cmd = NULL;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--shm-name") == 0 && i + 1 < argc) {
            shm_name = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            opts.json = 1;
        } else if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
            unsigned n;
            if (parse_count("--iterations", argv[++i], 1000000UL, &n) != 0)
                return 2;
            opts.iterations = (int)n;
        } else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            char *end;
            opts.interval_s = strtod(argv[++i], &end);
            if (*end != '\0' || opts.interval_s < 0.1 || opts.interval_s > 3600) {
                fprintf(stderr, "txctl: --interval: '%s' is not a number of seconds from 0.1 to 3600\n",
                        argv[i]);
                return 2;
            }
        } else if (argv[i][0] != '-' && cmd == NULL) {
            cmd = argv[i];
            if (strcmp(cmd, "seed") == 0)
                return cmd_seed(argc - i, argv + i);
            if (strcmp(cmd, "migrate") == 0)
                return cmd_migrate(argc - i, argv + i);
        } else {
            fprintf(stderr, "txctl: unexpected argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (cmd == NULL)
        cmd = "stats";
    if (strcmp(cmd, "stats") != 0 && strcmp(cmd, "children") != 0 && strcmp(cmd, "queue") != 0 &&
        strcmp(cmd, "top") != 0) {
        fprintf(stderr, "txctl: unknown command '%s' (see --help)\n", cmd);
        return 2;
    }
    return cmd_view(shm_name, cmd, &opts);
}
