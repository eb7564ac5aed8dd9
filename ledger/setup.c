/* What the master and txctl do with a ledger before any worker runs, for
 * either backend: tell which backend a --db value names, describe it
 * without its password, prepare (create/migrate, totals), seed, and hold
 * the one-instance-per-ledger guard. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "common/check.h"
#include "common/clock.h"
#include "common/flockwait.h"
#include "common/log.h"
#include "common/node.h"
#include "ledger/backend.h"
#include "ledger/pg_conn.h"

enum ledger_backend ledger_backend_of(const char *db)
{
    if (strncmp(db, "postgresql://", 13) == 0 || strncmp(db, "postgres://", 11) == 0)
        return LEDGER_POSTGRES;
    /* A conninfo is key=value pairs; a file path has no '=' before its
     * first '/' in any sane setup, and "host=" / "dbname=" are what people
     * write. */
    const char *eq = strchr(db, '=');
    const char *slash = strchr(db, '/');
    if (eq != NULL && (slash == NULL || eq < slash)) {
        const char *p = db;
        while (isspace((unsigned char)*p))
            p++;
        const char *k = p;
        while (isalnum((unsigned char)*p) || *p == '_')
            p++;
        while (isspace((unsigned char)*p))
            p++;
        if (p > k && *p == '=')
            return LEDGER_POSTGRES;
    }
    return LEDGER_SQLITE;
}

void ledger_describe(const char *db, char *out, size_t cap)
{
    if (ledger_backend_of(db) == LEDGER_POSTGRES)
        pgc_describe(db, out, cap);
    else
        snprintf(out, cap, "%s", db);
}

/* Masks n bytes at p. */
static void mask(char *p, size_t n)
{
    memset(p, '*', n);
}

void ledger_hide_password(char *db)
{
    if (ledger_backend_of(db) != LEDGER_POSTGRES)
        return;
    /* postgresql://user:PASSWORD@host/... */
    char *scheme = strstr(db, "://");
    if (scheme != NULL) {
        char *auth = scheme + 3;
        size_t len = strcspn(auth, "/?#");
        char *at = memrchr(auth, '@', len);
        char *colon = at != NULL ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (colon != NULL)
            mask(colon + 1, (size_t)(at - colon - 1));
    }
    /* password=VALUE in a conninfo, or ?password=VALUE in a URI */
    for (char *p = db; (p = strstr(p, "password")) != NULL; p += 8) {
        if (p != db && !isspace((unsigned char)p[-1]) && p[-1] != '?' && p[-1] != '&')
            continue;
        char *v = p + 8;
        while (isspace((unsigned char)*v))
            v++;
        if (*v != '=')
            continue;
        v++;
        while (isspace((unsigned char)*v))
            v++;
        if (*v == '\'') {
            char *e = v + 1;
            while (*e != '\0' && *e != '\'')
                e += e[0] == '\\' && e[1] != '\0' ? 2 : 1;
            mask(v + 1, (size_t)(e - v - 1));
        } else {
            mask(v, strcspn(v, " \t\n&"));
        }
    }
}

int ledger_prepare(const char *db, struct ledger_totals *out)
{
    memset(out, 0, sizeof *out);
    return ledger_backend_of(db) == LEDGER_POSTGRES ? pg_ledger_prepare(db, out)
                                                    : sqlite_ledger_prepare(db, out);
}

void ledger_seed_card(unsigned i, char out[TXN_CARD_MAX + 1])
{
    if (i < 10000)
        snprintf(out, TXN_CARD_MAX + 1, "6219 8619 %04u 8640", i);
    else
        snprintf(out, TXN_CARD_MAX + 1, "6220 %04u %04u 8640", (i / 10000) % 10000, i % 10000);
}

/* splitmix64: tiny, fast, and the same sequence on every platform. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int64_t ledger_seed_balance(uint64_t *state)
{
    const uint64_t span = LEDGER_SEED_BALANCE_MAX - LEDGER_SEED_BALANCE_MIN + 1;
    return LEDGER_SEED_BALANCE_MIN + (int64_t)(splitmix64(state) % span);
}

int ledger_seed(const char *db, unsigned accounts, unsigned seed)
{
    if (accounts > LEDGER_SEED_MAX_ACCOUNTS) {
        log_error("cannot seed %u accounts: card numbers run out at %u", accounts,
                  LEDGER_SEED_MAX_ACCOUNTS);
        return -1;
    }
    return ledger_backend_of(db) == LEDGER_POSTGRES ? pg_ledger_seed(db, accounts, seed)
                                                    : sqlite_ledger_seed(db, accounts, seed);
}

struct ledger_guard {
    unsigned node;
    int fd;          /* SQLite: the flocked file */
    struct pgc *pg;  /* PostgreSQL: the connection holding the advisory lock */
    int lost;        /* the connection went away; the lock is being taken again */
    int64_t next_try_us;
};

/* How often a lost guard is taken again, and how long one try may hold up
 * the master's loop. */
#define GUARD_RETRY_US 2000000
#define GUARD_TRY_MS 1000

static struct ledger_guard *guard_file(const char *path, int wait_ms)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_error("open(%s): %s", path, strerror(errno));
        return NULL;
    }
    if (flock_wait(fd, wait_ms) != 0) {
        if (errno == EWOULDBLOCK)
            log_error("ledger %s is in use by another txprocd instance (still after %d s); one "
                      "instance per ledger", path, wait_ms / 1000);
        else
            log_error("flock(%s): %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    struct ledger_guard *g = calloc(1, sizeof *g);
    if (g == NULL) {
        log_error("ledger guard: out of memory");
        close(fd);
        return NULL;
    }
    g->fd = fd;
    return g;
}

struct ledger_guard *ledger_guard_take(const char *db, unsigned node, int wait_ms)
{
    if (ledger_backend_of(db) == LEDGER_SQLITE) {
        if (node != 0) {
            log_error("--node-id needs a PostgreSQL ledger: several nodes share one database "
                      "server, and a SQLite file lives on one machine");
            return NULL;
        }
        return guard_file(db, wait_ms);
    }
    struct pgc *pg = pgc_guard(db, node, wait_ms);
    if (pg == NULL)
        return NULL;
    struct ledger_guard *g = calloc(1, sizeof *g);
    if (g == NULL) {
        log_error("ledger guard: out of memory");
        pgc_free(pg);
        return NULL;
    }
    g->fd = -1;
    g->pg = pg;
    g->node = node;
    return g;
}

uint64_t ledger_reserve_txids(struct ledger_guard *g)
{
    ASSERT(g->pg != NULL && g->node >= 1 && g->node <= NODE_MAX);
    char node[16], span[24], now[24];
    snprintf(node, sizeof node, "%u", g->node);
    snprintf(span, sizeof span, "%llu", (unsigned long long)RING_STRIDED_SPAN);
    snprintf(now, sizeof now, "%lld", (long long)clock_wall_us());
    const char *values[3] = { node, span, now };
    /* k such that every id node + STRIDE * k of the span lies above every
     * id in the ledger and every span reserved before for this node. One
     * statement, under the node's lock: two starts of one node cannot run
     * it at once. */
    PGresult *r = pgc_exec(g->pg, "txid reservation",
                           "WITH m AS (SELECT COALESCE(MAX(txid), 0) / " PGC_STR(NODE_STRIDE)
                           " + 1 AS k FROM transactions) "
                           "INSERT INTO txprocd_nodes AS n (node_id, next_k, reserved_at) "
                           "SELECT $1::int, m.k + $2::int8, $3::int8 FROM m "
                           "ON CONFLICT (node_id) DO UPDATE SET next_k = GREATEST(n.next_k, "
                           "EXCLUDED.next_k - $2::int8) + $2::int8, reserved_at = $3::int8 "
                           "RETURNING next_k - $2::int8",
                           0, 3, values);
    if (r == NULL) {
        log_error("cannot reserve transaction ids for node %u: %s", g->node, g->pg->error);
        return 0;
    }
    int64_t k = PQntuples(r) == 1 ? pgc_int(r, 0, 0, NULL) : 0;
    PQclear(r);
    uint64_t top = (uint64_t)INT64_MAX / NODE_STRIDE - RING_STRIDED_SPAN;
    if (k <= 0 || (uint64_t)k > top) {
        log_error("node %u: no transaction ids left to reserve (block %lld)", g->node, (long long)k);
        return 0;
    }
    uint64_t base = (uint64_t)k * NODE_STRIDE + g->node;
    log_info("node %u: reserved transaction ids %llu to %llu (every %uth)", g->node,
             (unsigned long long)base,
             (unsigned long long)(base + (RING_STRIDED_SPAN - 1) * NODE_STRIDE), NODE_STRIDE);
    return base;
}

/* The k of the span a node segment numbering from base started at. */
static int span_start(const struct ledger_guard *g, uint64_t base, uint64_t *k)
{
    if (base < g->node || (base - g->node) % NODE_STRIDE != 0)
        return -1;
    *k = (base - g->node) / NODE_STRIDE;
    return *k >= 1 && *k <= (uint64_t)INT64_MAX / NODE_STRIDE - RING_STRIDED_SPAN ? 0 : -1;
}

int ledger_keep_txids(struct ledger_guard *g, uint64_t base)
{
    ASSERT(g->pg != NULL && g->node >= 1 && g->node <= NODE_MAX);
    uint64_t k;
    if (span_start(g, base, &k) != 0) {
        log_error("the segment numbers from txid %llu, which is not node %u's",
                  (unsigned long long)base, g->node);
        return -1;
    }
    char node[16], end[24], now[24];
    snprintf(node, sizeof node, "%u", g->node);
    snprintf(end, sizeof end, "%llu", (unsigned long long)(k + RING_STRIDED_SPAN));
    snprintf(now, sizeof now, "%lld", (long long)clock_wall_us());
    const char *values[3] = { node, end, now };
    PGresult *r = pgc_exec(g->pg, "txid span",
                           "INSERT INTO txprocd_nodes AS n (node_id, next_k, reserved_at) "
                           "VALUES ($1::int, $2::int8, $3::int8) ON CONFLICT (node_id) DO UPDATE "
                           "SET next_k = GREATEST(n.next_k, EXCLUDED.next_k)", 0, 3, values);
    if (r == NULL) {
        log_error("cannot record node %u's transaction ids: %s", g->node, g->pg->error);
        return -1;
    }
    PQclear(r);
    return 0;
}

void ledger_return_txids(struct ledger_guard *g, uint64_t base, uint64_t next)
{
    ASSERT(g->pg != NULL && g->node >= 1 && g->node <= NODE_MAX);
    uint64_t k;
    if (span_start(g, base, &k) != 0 || next < base || (next - base) % NODE_STRIDE != 0)
        return;
    uint64_t used = (next - base) / NODE_STRIDE;
    char node[16], end[24], first_free[24];
    snprintf(node, sizeof node, "%u", g->node);
    snprintf(end, sizeof end, "%llu", (unsigned long long)(k + RING_STRIDED_SPAN));
    snprintf(first_free, sizeof first_free, "%llu", (unsigned long long)(k + used));
    const char *values[3] = { node, end, first_free };
    /* Only if this span is still the node's last: nothing was reserved after. */
    PGresult *r = pgc_exec(g->pg, "txid span",
                           "UPDATE txprocd_nodes SET next_k = $3::int8 "
                           "WHERE node_id = $1::int AND next_k = $2::int8", 0, 3, values);
    if (r == NULL) {
        log_warn("could not give back node %u's unused transaction ids (%s); the next start "
                 "numbers above them", g->node, g->pg->error);
        return;
    }
    if (strcmp(PQcmdTuples(r), "1") == 0)
        log_info("node %u: gave back the unused transaction ids from %llu", g->node,
                 (unsigned long long)next);
    PQclear(r);
}

int ledger_guard_check(struct ledger_guard *g)
{
    if (g == NULL || g->pg == NULL)
        return 0; /* an flock cannot be lost */
    if (!g->lost) {
        if (pgc_alive(g->pg))
            return 0;
        g->lost = 1;
        g->next_try_us = 0;
        log_warn("lost the connection holding the ledger's instance lock; taking it again");
        pgc_drop(g->pg);
    }
    int64_t now = clock_mono_us();
    if (now < g->next_try_us)
        return 0;
    g->next_try_us = now + GUARD_RETRY_US;
    int keep = g->pg->timeout_ms;
    g->pg->timeout_ms = GUARD_TRY_MS;
    int got = pgc_take_guard(g->pg, g->node);
    g->pg->timeout_ms = keep;
    if (got < 0) {
        pgc_drop(g->pg);
        return 0; /* the server is away: nobody else can take it either */
    }
    if (got != 1) {
        log_error("another txprocd instance took the ledger's instance lock while this one had "
                  "lost its connection; stopping this one's workers (queued entries stay in shm)");
        return -1;
    }
    g->lost = 0;
    log_info("ledger instance lock taken again");
    return 0;
}

void ledger_guard_release(struct ledger_guard *g)
{
    if (g == NULL)
        return;
    if (g->fd >= 0)
        close(g->fd);
    pgc_free(g->pg);
    free(g);
}
