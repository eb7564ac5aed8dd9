/* The naive PostgreSQL ceiling of `make bench`: how many of the benchmark's
 * random deposits and withdrawals an application written the obvious way
 * applies per second against a given PostgreSQL, with nothing of txprocd in
 * the path. It is the PostgreSQL counterpart of sqlite_ceiling's "naive"
 * variant: the number a PostgreSQL ledger backend has to be compared with.
 *
 * What it does naively, on purpose (that is the point of a reference):
 *   - one database transaction per entry, so (with synchronous_commit on)
 *     one WAL flush per entry, and five round trips per entry:
 *       BEGIN
 *       SELECT balance FROM users WHERE card_number = $1 FOR UPDATE
 *       UPDATE users SET balance = $2 WHERE card_number = $1  (if accepted)
 *       INSERT INTO transactions (...) VALUES (...)
 *       COMMIT
 *   - the decision (refuse a withdrawal that would overdraw) taken in C
 *     between the SELECT and the UPDATE, under the row lock;
 *   - no batching, no pipelining, no multi-row INSERT, no COPY. The only
 *     concession is prepared statements, which any application has.
 * Concurrency is --connections threads with one connection each, all drawing
 * from the same accounts, as a pool of application servers would.
 *
 * Entries are drawn like tools/bench/post.lua and sqlite_ceiling draw them:
 * a uniformly random demo account and a non-zero amount in [-5000, 5000].
 * Txids continue above the largest one in transactions, interleaved by
 * thread; a session advisory lock keeps two runs off the same database at
 * once, so they stay unique. A serialization failure or deadlock (40001,
 * 40P01) rolls back and retries the entry; any other error ends the program
 * with the server's message. Prints one JSON object on stdout; like
 * sqlite_ceiling's per_second, applied_per_s counts every committed entry,
 * refused withdrawals included (they are recorded too).
 *
 * Self-contained on purpose (libpq and libc only): it must keep measuring
 * the same thing while the ledger code it is compared with changes. */
#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PGC_CONNECTIONS_MAX 256
#define PGC_ACCOUNTS_MAX 100000000u  /* where the demo card numbers run out */
#define PGC_SECONDS_MAX 3600
#define PGC_AMOUNT_MAX 5000          /* as tools/bench/post.lua */
#define PGC_RETRIES_MAX 100          /* per entry; more means something is wrong */
#define PGC_SEED_BALANCE 10000000
#define PGC_CARD_MAX 32
#define PGC_SETTING_MAX 64
/* pg_try_advisory_lock key: "txpcei" in ASCII. */
#define PGC_LOCK_KEY "128060630459753"

/* The tables of txprocd's PostgreSQL ledger (without the indexes its own
 * schema code may add), created only by --seed-accounts on a database that
 * has none yet. Against a ledger made by txprocd, the run pays for whatever
 * indexes that one has, as the server does. */
#define PGC_SQL_CREATE_USERS                                                                \
    "CREATE TABLE IF NOT EXISTS users (card_number TEXT COLLATE \"C\" PRIMARY KEY, "       \
    "balance BIGINT, last_txid BIGINT, opened_at BIGINT, "                                  \
    "n_deposits BIGINT NOT NULL DEFAULT 0, n_withdrawals BIGINT NOT NULL DEFAULT 0, "       \
    "n_transfers_in BIGINT NOT NULL DEFAULT 0, n_transfers_out BIGINT NOT NULL DEFAULT 0, " \
    "n_rejected BIGINT NOT NULL DEFAULT 0, n_total BIGINT NOT NULL DEFAULT 0)"
#define PGC_SQL_CREATE_TRANSACTIONS                                                          \
    "CREATE TABLE IF NOT EXISTS transactions (id BIGSERIAL PRIMARY KEY, "                   \
    "card_number TEXT COLLATE \"C\", amount BIGINT, success INTEGER, "                      \
    "timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP, txid BIGINT UNIQUE, status TEXT, "      \
    "balance_after BIGINT, queued_at BIGINT, applied_at BIGINT, kind TEXT, "                \
    "counterparty TEXT COLLATE \"C\", counterparty_balance_after BIGINT, reason TEXT, "     \
    "original_txid BIGINT, idempotency_key TEXT, prev_txid BIGINT, "                        \
    "counterparty_prev_txid BIGINT)"

#define PGC_SQL_SELECT "SELECT balance FROM users WHERE card_number = $1 FOR UPDATE"
#define PGC_SQL_UPDATE "UPDATE users SET balance = $2 WHERE card_number = $1"
/* kind as the worker records it; the transfer, reason, key and statement
 * columns stay NULL for a plain deposit or withdrawal, as in sqlite_ceiling. */
#define PGC_SQL_INSERT                                                                       \
    "INSERT INTO transactions (card_number, amount, success, txid, status, balance_after, " \
    "queued_at, applied_at, kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"

struct opts {
    const char *db;
    unsigned connections;
    double seconds;        /* 0: run --count entries instead */
    uint64_t count;
    unsigned accounts;
    unsigned seed_accounts; /* 0: do not seed */
    uint64_t seed;
};

/* What every thread shares. Written by main before the start barrier, read
 * only afterwards (the barrier orders it), except claimed. */
struct run {
    const struct opts *o;
    int64_t txid_base;     /* largest txid in transactions at start */
    int64_t deadline_us;   /* --seconds: monotonic end of the run */
    pthread_barrier_t ready, go;
    atomic_uint_fast64_t claimed; /* --count: entries handed out so far */
};

struct worker {
    struct run *run;
    unsigned index;
    pthread_t thread;
    PGconn *conn;
    uint64_t rng;
    uint64_t entries, refused, retries;
    int64_t end_us;
};

/* Any thread may call it; the first one reports and ends the process, the
 * others wait for the end (a server that went away fails them all). */
_Noreturn static void die(const char *fmt, ...)
{
    static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0'; /* libpq's messages end with a newline */
    pthread_mutex_lock(&once);
    fprintf(stderr, "pg_ceiling: %s\n", msg);
    exit(1);
}

static int64_t mono_us(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        die("clock_gettime(CLOCK_MONOTONIC) failed");
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        die("clock_gettime(CLOCK_REALTIME) failed");
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Must stay the same as ledger_seed_card (ledger/ledger.h): main checks
 * that the first and the last of --accounts exist before it starts. */
static void demo_card(unsigned i, char out[PGC_CARD_MAX + 1])
{
    if (i < 10000)
        snprintf(out, PGC_CARD_MAX + 1, "6219 8619 %04u 8640", i);
    else
        snprintf(out, PGC_CARD_MAX + 1, "6220 %04u %04u 8640", (i / 10000) % 10000, i % 10000);
}

static PGconn *connect_db(const char *conninfo)
{
    /* expand_dbname: conninfo may be a URI or key=value pairs. */
    const char *keys[] = { "dbname", "application_name", NULL };
    const char *vals[] = { conninfo, "pg_ceiling", NULL };
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL)
        die("PQconnectdbParams: out of memory");
    if (PQstatus(c) != CONNECTION_OK)
        die("connecting: %s", PQerrorMessage(c));
    return c;
}

/* Ends the program unless res has status want. */
static void expect(PGconn *c, PGresult *res, ExecStatusType want, const char *what)
{
    if (res == NULL)
        die("%s: %s", what, PQerrorMessage(c));
    if (PQresultStatus(res) != want)
        die("%s: %s: %s", what, PQresStatus(PQresultStatus(res)), PQresultErrorMessage(res));
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    expect(c, res, PGRES_COMMAND_OK, sql);
    PQclear(res);
}

/* The single value of a one-row, one-column query, copied into out. */
static void query_value(PGconn *c, const char *sql, char *out, size_t size)
{
    PGresult *res = PQexec(c, sql);
    expect(c, res, PGRES_TUPLES_OK, sql);
    if (PQntuples(res) != 1 || PQnfields(res) != 1 || PQgetisnull(res, 0, 0))
        die("%s: expected one value", sql);
    snprintf(out, size, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

static int64_t parse_int64(const char *s, const char *what)
{
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0')
        die("%s: not an integer: '%s'", what, s);
    return (int64_t)v;
}

static void prepare(PGconn *c, const char *name, const char *sql, int nparams)
{
    PGresult *res = PQprepare(c, name, sql, nparams, NULL);
    expect(c, res, PGRES_COMMAND_OK, sql);
    PQclear(res);
}

/* 0: res has status want (res is kept). 1: a serialization failure or a
 * deadlock; res is cleared and the transaction rolled back, try again.
 * Anything else ends the program. */
static int outcome(PGconn *c, PGresult *res, ExecStatusType want, const char *what)
{
    if (res != NULL && PQresultStatus(res) == want)
        return 0;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)) {
        PQclear(res);
        /* A failed COMMIT has already ended the transaction. */
        if (PQtransactionStatus(c) != PQTRANS_IDLE)
            exec_ok(c, "ROLLBACK");
        return 1;
    }
    expect(c, res, want, what);
    abort(); /* not reached: expect ended the program */
}

/* One entry, the naive way. 0: committed; 1: retry. */
static int apply_once(struct worker *w, const char *card, int64_t amount, int64_t txid,
                      int *refused)
{
    PGconn *c = w->conn;
    char balance_s[24], amount_s[24], txid_s[24], now_s[24];
    PGresult *res = PQexec(c, "BEGIN");
    if (outcome(c, res, PGRES_COMMAND_OK, "BEGIN"))
        return 1;
    PQclear(res);

    const char *sel[] = { card };
    res = PQexecPrepared(c, "select", 1, sel, NULL, NULL, 0);
    if (outcome(c, res, PGRES_TUPLES_OK, PGC_SQL_SELECT))
        return 1;
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
        die("demo account '%s' missing or without a balance", card);
    int64_t balance = parse_int64(PQgetvalue(res, 0, 0), "users.balance");
    PQclear(res);

    int applied = balance + amount >= 0;
    snprintf(balance_s, sizeof balance_s, "%" PRId64, balance + amount);
    if (applied) {
        const char *upd[] = { card, balance_s };
        res = PQexecPrepared(c, "update", 2, upd, NULL, NULL, 0);
        if (outcome(c, res, PGRES_COMMAND_OK, PGC_SQL_UPDATE))
            return 1;
        if (strcmp(PQcmdTuples(res), "1") != 0)
            die("UPDATE of '%s' changed %s rows", card, PQcmdTuples(res));
        PQclear(res);
    }

    snprintf(amount_s, sizeof amount_s, "%" PRId64, amount);
    snprintf(txid_s, sizeof txid_s, "%" PRId64, txid);
    snprintf(now_s, sizeof now_s, "%" PRId64, wall_us());
    const char *ins[] = { card,     amount_s, applied ? "1" : "0",
                          txid_s,   applied ? "applied" : "insufficient_funds",
                          applied ? balance_s : NULL,
                          now_s,    now_s,    amount > 0 ? "deposit" : "withdrawal" };
    res = PQexecPrepared(c, "insert", 9, ins, NULL, NULL, 0);
    if (outcome(c, res, PGRES_COMMAND_OK, PGC_SQL_INSERT))
        return 1;
    PQclear(res);

    res = PQexec(c, "COMMIT");
    if (outcome(c, res, PGRES_COMMAND_OK, "COMMIT"))
        return 1;
    PQclear(res);
    *refused = !applied;
    return 0;
}

static void apply_entry(struct worker *w, const char *card, int64_t amount, int64_t txid)
{
    for (unsigned attempt = 0; attempt <= PGC_RETRIES_MAX; attempt++) {
        int refused = 0;
        if (apply_once(w, card, amount, txid, &refused) == 0) {
            w->entries++;
            w->refused += (uint64_t)refused;
            return;
        }
        w->retries++;
    }
    die("txid %" PRId64 ": still failing after %d retries", txid, PGC_RETRIES_MAX);
}

/* The next entry to apply, or 0 when the run is over. */
static int next_entry(struct worker *w)
{
    const struct opts *o = w->run->o;
    if (o->seconds > 0)
        return mono_us() < w->run->deadline_us;
    return atomic_fetch_add(&w->run->claimed, 1) < o->count;
}

static void barrier(pthread_barrier_t *b)
{
    int rc = pthread_barrier_wait(b);
    if (rc != 0 && rc != PTHREAD_BARRIER_SERIAL_THREAD)
        die("pthread_barrier_wait failed (%d)", rc);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->run;
    w->conn = connect_db(r->o->db);
    prepare(w->conn, "select", PGC_SQL_SELECT, 1);
    prepare(w->conn, "update", PGC_SQL_UPDATE, 2);
    prepare(w->conn, "insert", PGC_SQL_INSERT, 9);
    barrier(&r->ready);
    barrier(&r->go);

    int64_t n = r->o->connections, seq = 0;
    while (next_entry(w)) {
        char card[PGC_CARD_MAX + 1];
        demo_card((unsigned)(rng_next(&w->rng) % r->o->accounts), card);
        int64_t amount = (int64_t)(rng_next(&w->rng) % (2 * PGC_AMOUNT_MAX + 1)) - PGC_AMOUNT_MAX;
        if (amount == 0)
            amount = 1;
        /* Thread k takes base + 1 + k, base + 1 + k + n, ...: disjoint. */
        apply_entry(w, card, amount, r->txid_base + 1 + (int64_t)w->index + n * seq++);
    }
    w->end_us = mono_us();
    PQfinish(w->conn);
    w->conn = NULL;
    return NULL;
}

/* Creates the tables if missing and fills an empty users with n demo
 * accounts, in one transaction. Leaves a non-empty users alone. */
static void seed(PGconn *c, unsigned n)
{
    exec_ok(c, "BEGIN");
    exec_ok(c, "SET LOCAL client_min_messages = warning"); /* not "already exists, skipping" */
    exec_ok(c, PGC_SQL_CREATE_USERS);
    exec_ok(c, PGC_SQL_CREATE_TRANSACTIONS);
    exec_ok(c, "LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE");
    char any[8];
    query_value(c, "SELECT EXISTS (SELECT 1 FROM users)", any, sizeof any);
    if (strcmp(any, "t") == 0) {
        fprintf(stderr, "pg_ceiling: users is not empty; not seeding\n");
        exec_ok(c, "COMMIT");
        return;
    }
    PGresult *res = PQexec(c, "COPY users (card_number, balance) FROM STDIN");
    expect(c, res, PGRES_COPY_IN, "COPY users");
    PQclear(res);
    for (unsigned i = 0; i < n; i++) {
        char card[PGC_CARD_MAX + 1], line[PGC_CARD_MAX + 32];
        demo_card(i, card);
        int len = snprintf(line, sizeof line, "%s\t%d\n", card, PGC_SEED_BALANCE);
        if (PQputCopyData(c, line, len) != 1)
            die("COPY users: %s", PQerrorMessage(c));
    }
    if (PQputCopyEnd(c, NULL) != 1)
        die("COPY users: %s", PQerrorMessage(c));
    res = PQgetResult(c);
    expect(c, res, PGRES_COMMAND_OK, "COPY users");
    PQclear(res);
    if ((res = PQgetResult(c)) != NULL)
        die("COPY users: unexpected extra result %s", PQresStatus(PQresultStatus(res)));
    exec_ok(c, "COMMIT");
    exec_ok(c, "ANALYZE users");
    fprintf(stderr, "pg_ceiling: seeded %u demo accounts\n", n);
}

/* Fails early, with a hint, if the accounts the run draws from are absent. */
static void check_accounts(PGconn *c, unsigned accounts)
{
    char exists[8], first[PGC_CARD_MAX + 1], last[PGC_CARD_MAX + 1];
    query_value(c,
                "SELECT to_regclass('users') IS NOT NULL "
                "AND to_regclass('transactions') IS NOT NULL",
                exists, sizeof exists);
    if (strcmp(exists, "t") != 0)
        die("no users or transactions table; create them with --seed-accounts");
    demo_card(0, first);
    demo_card(accounts - 1, last);
    const char *params[] = { first, last };
    PGresult *res = PQexecParams(c, "SELECT count(*) FROM users WHERE card_number IN ($1, $2)", 2,
                                 NULL, params, NULL, NULL, 0);
    expect(c, res, PGRES_TUPLES_OK, "checking the demo accounts");
    int64_t found = parse_int64(PQgetvalue(res, 0, 0), "count");
    PQclear(res);
    if (found != (accounts == 1 ? 1 : 2))
        die("users lacks demo account '%s' or '%s' (--accounts %u); seed them with "
            "--seed-accounts on an empty database",
            first, last, accounts);
}

/* A SHOW value, as a JSON string body (PostgreSQL setting values need no
 * escaping beyond quotes and backslashes, which are replaced). */
static void show(PGconn *c, const char *name, char out[PGC_SETTING_MAX])
{
    char sql[96];
    snprintf(sql, sizeof sql, "SHOW %s", name);
    query_value(c, sql, out, PGC_SETTING_MAX);
    for (char *p = out; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            *p = '?';
}

_Noreturn static void usage(FILE *f, int code)
{
    fprintf(f,
            "usage: pg_ceiling --db CONNINFO [--connections N] [--seconds S | --count M]\n"
            "                  [--accounts A] [--seed-accounts A] [--seed R]\n"
            "Applies random deposits and withdrawals to a PostgreSQL ledger the naive way\n"
            "(one BEGIN/SELECT FOR UPDATE/UPDATE/INSERT/COMMIT per entry) and prints the\n"
            "rate as one JSON line.\n"
            "  --db CONNINFO       libpq connection string or URI (postgresql://...)\n"
            "  --connections N     threads, one connection each (default 4, max %d)\n"
            "  --seconds S         run for S seconds (default 5)\n"
            "  --count M           apply M entries instead, then stop\n"
            "  --accounts A        draw from the first A demo accounts (default 10000, or\n"
            "                      --seed-accounts if given)\n"
            "  --seed-accounts A   if users is empty: create the tables if missing and\n"
            "                      insert A demo accounts (balance %d each)\n"
            "  --seed R            random seed (default 1); thread k uses R + k\n",
            PGC_CONNECTIONS_MAX, PGC_SEED_BALANCE);
    exit(code);
}

static uint64_t parse_count(const char *s, uint64_t max)
{
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end != '\0' || s[0] == '-' || v > max)
        usage(stderr, 2);
    return (uint64_t)v;
}

static void parse(struct opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "db", required_argument, NULL, 'd' },
        { "connections", required_argument, NULL, 'c' },
        { "seconds", required_argument, NULL, 's' },
        { "count", required_argument, NULL, 'n' },
        { "accounts", required_argument, NULL, 'a' },
        { "seed-accounts", required_argument, NULL, 'A' },
        { "seed", required_argument, NULL, 'r' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    *o = (struct opts){ .connections = 4, .seed = 1 };
    int c, seconds_given = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': o->db = optarg; break;
        case 'c': o->connections = (unsigned)parse_count(optarg, PGC_CONNECTIONS_MAX); break;
        case 's': {
            char *end = NULL;
            o->seconds = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(o->seconds > 0 && o->seconds <= PGC_SECONDS_MAX))
                usage(stderr, 2);
            seconds_given = 1;
            break;
        }
        case 'n': o->count = parse_count(optarg, UINT64_MAX / 2); break;
        case 'a': o->accounts = (unsigned)parse_count(optarg, PGC_ACCOUNTS_MAX); break;
        case 'A': o->seed_accounts = (unsigned)parse_count(optarg, PGC_ACCOUNTS_MAX); break;
        case 'r': o->seed = parse_count(optarg, UINT64_MAX); break;
        case 'h': usage(stdout, 0); break;
        default: usage(stderr, 2);
        }
    }
    if (optind != argc || !o->db || !*o->db || o->connections == 0 ||
        (seconds_given && o->count > 0))
        usage(stderr, 2);
    if (!seconds_given && o->count == 0)
        o->seconds = 5;
    if (o->accounts == 0)
        o->accounts = o->seed_accounts ? o->seed_accounts : 10000;
}

int main(int argc, char **argv)
{
    struct opts o;
    parse(&o, argc, argv);
    if (!PQisthreadsafe())
        die("this libpq is not thread-safe");

    PGconn *c = connect_db(o.db);
    /* Held by this connection until the end: a second run against the same
     * database would reuse the same txids. */
    char locked[8];
    query_value(c, "SELECT pg_try_advisory_lock(" PGC_LOCK_KEY ")", locked, sizeof locked);
    if (strcmp(locked, "t") != 0)
        die("another pg_ceiling is running against this database");
    if (o.seed_accounts > 0)
        seed(c, o.seed_accounts);
    check_accounts(c, o.accounts);

    char commit_mode[PGC_SETTING_MAX], fsync_mode[PGC_SETTING_MAX], buffers[PGC_SETTING_MAX],
        version[PGC_SETTING_MAX], base[32];
    show(c, "synchronous_commit", commit_mode);
    show(c, "fsync", fsync_mode);
    show(c, "shared_buffers", buffers);
    show(c, "server_version", version);
    query_value(c, "SELECT COALESCE(MAX(txid), 0) FROM transactions", base, sizeof base);

    struct run run = { .o = &o, .txid_base = parse_int64(base, "MAX(txid)") };
    atomic_init(&run.claimed, 0);
    if (pthread_barrier_init(&run.ready, NULL, o.connections + 1) != 0 ||
        pthread_barrier_init(&run.go, NULL, o.connections + 1) != 0)
        die("pthread_barrier_init failed");
    struct worker *w = calloc(o.connections, sizeof *w);
    if (w == NULL)
        die("out of memory");
    for (unsigned i = 0; i < o.connections; i++) {
        w[i] = (struct worker){ .run = &run, .index = i, .rng = o.seed + i };
        if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0)
            die("pthread_create failed");
    }
    barrier(&run.ready); /* every connection open, every statement prepared */
    int64_t t0 = mono_us();
    run.deadline_us = t0 + (int64_t)(o.seconds * 1e6);
    barrier(&run.go);

    uint64_t entries = 0, refused = 0, retries = 0;
    int64_t t1 = t0;
    for (unsigned i = 0; i < o.connections; i++) {
        if (pthread_join(w[i].thread, NULL) != 0)
            die("pthread_join failed");
        entries += w[i].entries;
        refused += w[i].refused;
        retries += w[i].retries;
        if (w[i].end_us > t1)
            t1 = w[i].end_us;
    }
    double secs = (double)(t1 - t0) / 1e6;
    printf("{\"applied_per_s\": %.0f, \"entries\": %" PRIu64 ", \"seconds\": %.3f, "
           "\"connections\": %u, \"accounts\": %u, \"refused\": %" PRIu64 ", \"retries\": %" PRIu64
           ", \"synchronous_commit\": \"%s\", \"fsync\": \"%s\", \"shared_buffers\": \"%s\", "
           "\"server_version\": \"%s\"}\n",
           secs > 0 ? (double)entries / secs : 0.0, entries, secs, o.connections, o.accounts,
           refused, retries, commit_mode, fsync_mode, buffers, version);
    if (fflush(stdout) != 0)
        die("writing the result failed");

    pthread_barrier_destroy(&run.ready);
    pthread_barrier_destroy(&run.go);
    free(w);
    PQfinish(c); /* releases the advisory lock */
    return 0;
}
