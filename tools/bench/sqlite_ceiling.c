/* The storage ceiling of `make bench`: how many of the benchmark's random
 * transactions one SQLite connection can apply per second on this machine
 * when nothing else runs -- no HTTP, no queue, no second process. A worker
 * can at best come close to it, so bench reports apply / ceiling.
 *
 * The database is made by the server's own code (ledger_seed, then
 * ledger_prepare: the same tables, columns and indexes as a live ledger) and
 * opened with the same PRAGMAs as a worker (LEDGER_PRAGMAS). The timed loop
 * uses nothing of txprocd: plain sqlite3_* calls on prepared statements, one
 * BEGIN IMMEDIATE ... COMMIT per --batch transactions.
 *
 *   --variant naive   SELECT the balance, decide in C, UPDATE it, INSERT the
 *                     transaction row: what an application written the
 *                     obvious way does (3 statements per transaction).
 *                     `make bench` divides the apply rate by this one.
 *   --variant worker  the worker's statements (ledger/sqlite.h): SELECT
 *                     rowid and balance, UPDATE by rowid, and the rows of
 *                     the batch inserted LEDGER_RECORD_CHUNK per INSERT.
 *
 * Transactions are drawn like tools/bench/post.lua draws them: a uniformly
 * random demo account and a non-zero amount in [-5000, 5000].
 * Prints one JSON object on stdout. */
#include <getopt.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "ledger/ledger.h"
#include "ledger/sqlite.h"

#define CEILING_AMOUNT_MAX 5000

struct opts {
    const char *db;
    unsigned accounts;
    unsigned batch;
    double seconds;
    int worker_variant;
    enum sync_mode sync;
    uint64_t seed;
};

struct stmts {
    sqlite3_stmt *begin, *commit, *select, *update, *account, *settle, *insert, *chunk;
};

/* A transactions row waiting for the worker variant's grouped INSERT. */
struct pending {
    char card[TXN_CARD_MAX + 1];
    int64_t amount, balance_after, txid, prev_txid;
    int applied;
};

static void die(sqlite3 *db, const char *what)
{
    fprintf(stderr, "sqlite_ceiling: %s: %s\n", what, db ? sqlite3_errmsg(db) : "failed");
    exit(1);
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
        die(db, sql);
    return st;
}

static void step_done(sqlite3 *db, sqlite3_stmt *st)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    if (rc != SQLITE_DONE)
        die(db, sqlite3_sql(st));
    sqlite3_reset(st);
}

static void bind_row(sqlite3_stmt *st, int base, const struct pending *p, int64_t now)
{
    sqlite3_bind_text(st, base + 1, p->card, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, base + 2, p->amount);
    sqlite3_bind_int(st, base + 3, p->applied);
    sqlite3_bind_int64(st, base + 4, p->txid);
    sqlite3_bind_text(st, base + 5, p->applied ? "applied" : "insufficient_funds", -1,
                      SQLITE_STATIC);
    if (p->applied)
        sqlite3_bind_int64(st, base + 6, p->balance_after);
    else
        sqlite3_bind_null(st, base + 6);
    sqlite3_bind_int64(st, base + 7, now);
    sqlite3_bind_int64(st, base + 8, now);
    /* kind, as the worker records it; the other schema-2 columns stay NULL
     * for a plain deposit or withdrawal without a key, as in the worker. */
    sqlite3_bind_text(st, base + 9, p->amount > 0 ? "deposit" : "withdrawal", -1, SQLITE_STATIC);
    if (p->prev_txid != 0)
        sqlite3_bind_int64(st, base + 15, p->prev_txid);
    else
        sqlite3_bind_null(st, base + 15);
}

/* SELECT, decide, UPDATE, INSERT. */
static void apply_naive(sqlite3 *db, struct stmts *s, const struct pending *t, int64_t now)
{
    sqlite3_bind_text(s->select, 1, t->card, -1, SQLITE_STATIC);
    if (sqlite3_step(s->select) != SQLITE_ROW)
        die(db, "demo account missing");
    int64_t balance = sqlite3_column_int64(s->select, 0);
    sqlite3_reset(s->select);
    struct pending p = *t;
    p.applied = balance + t->amount >= 0;
    p.balance_after = balance + t->amount;
    if (p.applied) {
        sqlite3_bind_int64(s->update, 1, p.balance_after);
        sqlite3_bind_text(s->update, 2, t->card, -1, SQLITE_STATIC);
        step_done(db, s->update);
    }
    bind_row(s->insert, 0, &p, now);
    step_done(db, s->insert);
}

/* The worker's way: SELECT rowid and balance, decide, UPDATE by rowid; the
 * row waits in *t for the grouped INSERT. */
static void settle_like_worker(sqlite3 *db, struct stmts *s, struct pending *t)
{
    sqlite3_bind_text(s->account, 1, t->card, -1, SQLITE_STATIC);
    if (sqlite3_step(s->account) != SQLITE_ROW)
        die(db, "demo account missing");
    int64_t rowid = sqlite3_column_int64(s->account, 0);
    int64_t balance = sqlite3_column_int64(s->account, 1);
    t->prev_txid = sqlite3_column_int64(s->account, 2);
    sqlite3_reset(s->account);
    t->applied = balance + t->amount >= 0;
    t->balance_after = balance + t->amount;
    /* Balance, statement link and counts in one UPDATE, as the worker does
     * (once per account and batch: here once per transaction, the worst
     * case of a batch whose accounts are all different); a refusal rewrites
     * the old balance. */
    sqlite3_bind_int64(s->settle, 1, t->applied ? t->balance_after : balance);
    sqlite3_bind_int64(s->settle, 2, t->txid);
    sqlite3_bind_int(s->settle, 3, t->applied && t->amount > 0);
    sqlite3_bind_int(s->settle, 4, t->applied && t->amount < 0);
    sqlite3_bind_int(s->settle, 5, 0);
    sqlite3_bind_int(s->settle, 6, 0);
    sqlite3_bind_int(s->settle, 7, !t->applied);
    sqlite3_bind_int(s->settle, 8, 1);
    sqlite3_bind_int64(s->settle, 9, rowid);
    step_done(db, s->settle);
}

static void record_like_worker(sqlite3 *db, struct stmts *s, const struct pending *rows,
                               unsigned n, int64_t now)
{
    unsigned i = 0;
    for (; i + LEDGER_RECORD_CHUNK <= n; i += LEDGER_RECORD_CHUNK) {
        for (unsigned k = 0; k < LEDGER_RECORD_CHUNK; k++)
            bind_row(s->chunk, (int)k * LEDGER_RECORD_PARAMS, &rows[i + k], now);
        step_done(db, s->chunk);
    }
    for (; i < n; i++) {
        bind_row(s->insert, 0, &rows[i], now);
        step_done(db, s->insert);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: sqlite_ceiling --db PATH [--accounts N] [--batch N] [--seconds S]\n"
                    "                      [--variant naive|worker] [--sync normal|full] [--seed S]\n"
                    "PATH must not exist; it is created, seeded and left behind.\n");
    exit(2);
}

static void parse(struct opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "db", required_argument, NULL, 'd' },      { "accounts", required_argument, NULL, 'a' },
        { "batch", required_argument, NULL, 'b' },   { "seconds", required_argument, NULL, 's' },
        { "variant", required_argument, NULL, 'v' }, { "sync", required_argument, NULL, 'y' },
        { "seed", required_argument, NULL, 'r' },    { NULL, 0, NULL, 0 },
    };
    *o = (struct opts){ .accounts = 10000, .batch = 256, .seconds = 5, .seed = 1 };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': o->db = optarg; break;
        case 'a': o->accounts = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'b': o->batch = (unsigned)strtoul(optarg, NULL, 10); break;
        case 's': o->seconds = strtod(optarg, NULL); break;
        case 'r': o->seed = strtoull(optarg, NULL, 10); break;
        case 'v':
            if (strcmp(optarg, "naive") != 0 && strcmp(optarg, "worker") != 0)
                usage();
            o->worker_variant = strcmp(optarg, "worker") == 0;
            break;
        case 'y':
            if (strcmp(optarg, "normal") != 0 && strcmp(optarg, "full") != 0)
                usage();
            o->sync = strcmp(optarg, "full") == 0 ? SYNC_FULL : SYNC_NORMAL;
            break;
        default: usage();
        }
    }
    if (!o->db || o->accounts == 0 || o->accounts > LEDGER_SEED_MAX_ACCOUNTS || o->batch == 0 ||
        o->batch > 65536 || o->seconds <= 0 || o->seconds > 600)
        usage();
}

static sqlite3 *open_like_a_worker(const struct opts *o)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(o->db, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
        die(db, "open");
    char *err = NULL;
    const char *sync = o->sync == SYNC_FULL ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL";
    if (sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, &err) != SQLITE_OK ||
        sqlite3_exec(db, sync, NULL, NULL, &err) != SQLITE_OK ||
        sqlite3_exec(db, LEDGER_PRAGMAS, NULL, NULL, &err) != SQLITE_OK)
        die(db, err ? err : "pragmas");
    return db;
}

int main(int argc, char **argv)
{
    struct opts o;
    parse(&o, argc, argv);
    if (access(o.db, F_OK) == 0) {
        fprintf(stderr, "sqlite_ceiling: %s exists; give a fresh path\n", o.db);
        return 2;
    }
    log_set_level(LOG_LEVEL_WARN);
    struct ledger_totals totals;
    if (ledger_seed(o.db, o.accounts, 42) != 0 || ledger_prepare(o.db, &totals) != 0)
        return 1;

    sqlite3 *db = open_like_a_worker(&o);
    char one[1024], chunk[1024 + LEDGER_RECORD_CHUNK * 40];
    if (ledger_sql_record(one, sizeof one, 1) != 0 ||
        ledger_sql_record(chunk, sizeof chunk, LEDGER_RECORD_CHUNK) != 0)
        die(NULL, "INSERT text");
    struct stmts s = {
        .begin = prep(db, "BEGIN IMMEDIATE"),
        .commit = prep(db, "COMMIT"),
        .select = prep(db, "SELECT balance FROM users WHERE card_number = ?1"),
        .update = prep(db, "UPDATE users SET balance = ?1 WHERE card_number = ?2"),
        .account = prep(db, LEDGER_SQL_ACCOUNT),
        .settle = prep(db, LEDGER_SQL_SETTLE),
        .insert = prep(db, one),
        .chunk = prep(db, chunk),
    };
    struct pending *rows = calloc(o.batch, sizeof *rows);
    if (rows == NULL)
        die(NULL, "out of memory");

    uint64_t rng = o.seed, done = 0, batches = 0;
    int64_t txid = totals.max_txid;
    int64_t t0 = clock_mono_us(), limit = t0 + (int64_t)(o.seconds * 1e6), t1 = t0;
    while (t1 < limit) {
        int64_t now = clock_wall_us();
        step_done(db, s.begin);
        for (unsigned i = 0; i < o.batch; i++) {
            struct pending *t = &rows[i];
            ledger_seed_card((unsigned)(rng_next(&rng) % o.accounts), t->card);
            t->amount = (int64_t)(rng_next(&rng) % (2 * CEILING_AMOUNT_MAX + 1)) -
                        CEILING_AMOUNT_MAX;
            if (t->amount == 0)
                t->amount = 1;
            t->txid = ++txid;
            if (o.worker_variant)
                settle_like_worker(db, &s, t);
            else
                apply_naive(db, &s, t, now);
        }
        if (o.worker_variant)
            record_like_worker(db, &s, rows, o.batch, now);
        step_done(db, s.commit);
        done += o.batch;
        batches++;
        t1 = clock_mono_us();
    }
    double secs = (double)(t1 - t0) / 1e6;
    printf("{\"variant\":\"%s\",\"batch\":%u,\"accounts\":%u,\"sync\":\"%s\",\"transactions\":%" PRIu64
           ",\"batches\":%" PRIu64 ",\"seconds\":%.3f,\"per_second\":%.0f}\n",
           o.worker_variant ? "worker" : "naive", o.batch, o.accounts,
           o.sync == SYNC_FULL ? "full" : "normal", done, batches, secs, (double)done / secs);

    sqlite3_stmt *all[] = { s.begin,   s.commit,      s.select, s.update,
                            s.account, s.settle,   s.insert, s.chunk };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(all[i]);
    sqlite3_close(db);
    free(rows);
    return 0;
}
