/* Unit tests of the ledger against real SQLite files in /tmp: schema creation
 * and migration of the prototype's users.db, seeding, every outcome of the
 * batch apply path (replays, lock contention, rollback), and a worker process
 * consuming a real shared-memory ring. */
#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/shm.h"
#include "ledger/ledger.h"
#include "ledger/sqlite.h"
#include "tests/unit/tmpdb.h"
#include "tests/unit/unit.h"
#include "worker/worker.h"

#define T_APPLIED_AT 1700000000000000LL
#define T_QUEUED_AT 1699999999000000LL

/* ---- helpers ------------------------------------------------------------ */

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_busy_timeout(db, 2000) == SQLITE_OK);
    return db;
}

/* Column 0 of the only row of sql, with an optional text parameter ?1. */
static int64_t raw_int(sqlite3 *db, const char *sql, const char *param)
{
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
    if (param != NULL)
        CHECK(sqlite3_bind_text(st, 1, param, -1, SQLITE_STATIC) == SQLITE_OK);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        fprintf(stderr, "  %s: %s\n", sql, sqlite3_errmsg(db));
    CHECK(rc == SQLITE_ROW);
    int64_t v = sqlite3_column_type(st, 0) == SQLITE_NULL ? -999 : sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int64_t balance_of(sqlite3 *db, const char *card)
{
    return raw_int(db, "SELECT balance FROM users WHERE card_number = ?1", card);
}

static int64_t count_rows(sqlite3 *db)
{
    return raw_int(db, "SELECT COUNT(*) FROM transactions", NULL);
}

static int64_t balance_sum(sqlite3 *db)
{
    return raw_int(db, "SELECT SUM(balance) FROM users", NULL);
}

static struct txn_entry entry(uint64_t txid, const char *card, int64_t amount, uint32_t attempts)
{
    struct txn_entry e;
    CHECK(txn_entry_make(&e, card, strlen(card), amount) == 0);
    e.txid = txid;
    e.queued_at_us = T_QUEUED_AT;
    e.attempts = attempts;
    return e;
}

/* A migrated ledger holding the given accounts; returns a raw connection. */
static sqlite3 *make_ledger(const struct tmpdb *t, const char *const *cards, const int64_t *balances,
                            unsigned n)
{
    struct ledger_totals tot;
    CHECK(ledger_prepare(t->path, &tot) == 0);
    sqlite3 *db = raw_open(t->path);
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_prepare_v2(db, "INSERT INTO users(card_number, balance) VALUES(?1, ?2)", -1, &st,
                             NULL) == SQLITE_OK);
    for (unsigned i = 0; i < n; i++) {
        CHECK(sqlite3_bind_text(st, 1, cards[i], -1, SQLITE_STATIC) == SQLITE_OK);
        CHECK(sqlite3_bind_int64(st, 2, balances[i]) == SQLITE_OK);
        CHECK(sqlite3_step(st) == SQLITE_DONE);
        CHECK(sqlite3_reset(st) == SQLITE_OK);
    }
    sqlite3_finalize(st);
    return db;
}

static const char *const cards3[] = { "1111 0000", "2222 0000", "3333 0000" };
static const int64_t balances3[] = { 1000, INT64_MAX - 10, 0 };
/* Without the near-overflow account, for tests that take SUM(balance). */
static const char *const cards2[] = { "1111 0000", "3333 0000" };
static const int64_t balances2[] = { 1000, 0 };

/* The prototype's own DDL, spelled out so the test does not share it with
 * the code under test. */
static void make_prototype(sqlite3 *db)
{
    raw_exec(db, "CREATE TABLE users (card_number TEXT PRIMARY KEY, balance INTEGER);"
                 "CREATE TABLE transactions (id INTEGER PRIMARY KEY AUTOINCREMENT, card_number TEXT,"
                 " amount INTEGER, success INTEGER, timestamp DATETIME DEFAULT CURRENT_TIMESTAMP)");
}

/* ---- schema ------------------------------------------------------------- */

TEST(ledger_prepare_creates_current_schema_with_mode_0600)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    umask(022);
    struct ledger_totals tot = { .max_txid = -1 };
    CHECK(ledger_prepare(t.path, &tot) == 0);
    struct stat st;
    CHECK(stat(t.path, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    CHECK_EQ_INT(tot.max_txid, 0);
    CHECK_EQ_INT(tot.account_count, 0);
    CHECK_EQ_INT(tot.tx_count, 0);

    sqlite3 *db = raw_open(t.path);
    CHECK_EQ_INT(raw_int(db, "PRAGMA user_version", NULL), LEDGER_SCHEMA_VERSION);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'transactions_txid'",
                         NULL), 1);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM pragma_table_info('transactions') WHERE name IN "
                             "('txid','status','balance_after','queued_at','applied_at')", NULL), 5);
    sqlite3_stmt *s = NULL;
    CHECK(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(s) == SQLITE_ROW);
    CHECK_STR((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    sqlite3_close(db);

    CHECK(ledger_prepare(t.path, &tot) == 0); /* a second start changes nothing */
    tmpdb_remove(&t);
}

TEST(ledger_prepare_migrates_prototype_without_loss)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = raw_open(t.path);
    make_prototype(db);
    raw_exec(db, "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999) "
                 "INSERT INTO users SELECT printf('%016d', i), i * 7 + 1 FROM n;"
                 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) "
                 "INSERT INTO transactions(card_number, amount, success, timestamp) "
                 "SELECT printf('%016d', i), i - 250, i % 2, '2024-01-01 00:00:00' FROM n");
    int64_t sum = balance_sum(db);
    sqlite3_close(db);

    struct ledger_totals tot;
    CHECK(ledger_prepare(t.path, &tot) == 0);
    CHECK_EQ_INT(tot.account_count, 10000);
    CHECK_EQ_INT(tot.balance_sum, sum);
    CHECK_EQ_INT(tot.tx_count, 500);
    CHECK_EQ_INT(tot.max_txid, 0);

    db = raw_open(t.path);
    CHECK_EQ_INT(raw_int(db, "PRAGMA user_version", NULL), LEDGER_SCHEMA_VERSION);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM users "
                             "WHERE balance = CAST(card_number AS INTEGER) * 7 + 1", NULL), 10000);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM transactions WHERE txid IS NULL AND "
                             "timestamp = '2024-01-01 00:00:00' AND amount = id - 250 AND "
                             "card_number = printf('%016d', id)", NULL), 500);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM transactions WHERE success = 1 "
                             "AND status = 'applied'", NULL), 250);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM transactions WHERE success = 0 "
                             "AND status = 'rejected'", NULL), 250);
    sqlite3_close(db);

    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    ledger_close(l);
    tmpdb_remove(&t);
}

TEST(ledger_prepare_failure_leaves_schema_0)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = raw_open(t.path);
    /* No success column: the status backfill fails half-way through. */
    raw_exec(db, "CREATE TABLE users (card_number TEXT PRIMARY KEY, balance INTEGER);"
                 "CREATE TABLE transactions (id INTEGER PRIMARY KEY, card_number TEXT, amount INTEGER);"
                 "INSERT INTO transactions VALUES (1, '1', 5)");
    sqlite3_close(db);

    struct ledger_totals tot;
    CHECK(ledger_prepare(t.path, &tot) == -1);
    db = raw_open(t.path);
    CHECK_EQ_INT(raw_int(db, "PRAGMA user_version", NULL), 0);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM pragma_table_info('transactions') "
                             "WHERE name = 'txid'", NULL), 0);
    CHECK_EQ_INT(count_rows(db), 1);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(ledger_prepare_refuses_newer_schema)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = raw_open(t.path);
    make_prototype(db);
    char newer[64];
    snprintf(newer, sizeof newer, "PRAGMA user_version = %d", LEDGER_SCHEMA_VERSION + 1);
    raw_exec(db, newer);
    sqlite3_close(db);
    struct ledger_totals tot;
    CHECK(ledger_prepare(t.path, &tot) == -1);
    db = raw_open(t.path);
    CHECK_EQ_INT(raw_int(db, "PRAGMA user_version", NULL), LEDGER_SCHEMA_VERSION + 1);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(ledger_open_does_not_create_a_missing_db)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    CHECK(ledger_open(t.path, SYNC_NORMAL) == NULL);
    CHECK(access(t.path, F_OK) != 0);
    tmpdb_remove(&t);
}

TEST(ledger_open_refuses_unmigrated_db)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = raw_open(t.path);
    make_prototype(db);
    sqlite3_close(db);
    CHECK(ledger_open(t.path, SYNC_FULL) == NULL);
    tmpdb_remove(&t);
}

/* ---- seed --------------------------------------------------------------- */

TEST(ledger_seed_card_format)
{
    char card[TXN_CARD_MAX + 1];
    ledger_seed_card(0, card);
    CHECK_STR(card, "6219 8619 0000 8640");
    ledger_seed_card(9999, card);
    CHECK_STR(card, "6219 8619 9999 8640");
    ledger_seed_card(10000, card);
    CHECK_STR(card, "6220 0001 0000 8640");
    ledger_seed_card(LEDGER_SEED_MAX_ACCOUNTS - 1, card);
    CHECK_STR(card, "6220 9999 9999 8640");
}

TEST(ledger_seed_creates_accounts_and_refuses_twice)
{
    struct tmpdb t, u;
    tmpdb_make(&t, "ledger");
    tmpdb_make(&u, "ledger");
    CHECK(ledger_seed(t.path, 12000, 42) == 0);
    sqlite3 *db = raw_open(t.path);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM users", NULL), 12000);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM users WHERE card_number GLOB "
                             "'62[12][09] [0-9][0-9][0-9][0-9] [0-9][0-9][0-9][0-9] 8640'", NULL),
                 12000);
    CHECK(balance_of(db, "6219 8619 0000 8640") >= LEDGER_SEED_BALANCE_MIN);
    CHECK(balance_of(db, "6220 0001 1999 8640") >= LEDGER_SEED_BALANCE_MIN);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM users WHERE card_number = '6220 0001 2000 8640'",
                         NULL), 0);
    CHECK(raw_int(db, "SELECT MIN(balance) FROM users", NULL) >= LEDGER_SEED_BALANCE_MIN);
    CHECK(raw_int(db, "SELECT MAX(balance) FROM users", NULL) <= LEDGER_SEED_BALANCE_MAX);
    CHECK(raw_int(db, "SELECT MAX(balance) - MIN(balance) FROM users", NULL) > 9000000);
    int64_t first_1000 = raw_int(db, "SELECT SUM(balance) FROM users WHERE rowid <= 1000", NULL);
    int64_t sum = balance_sum(db);

    CHECK(ledger_seed(t.path, 5, 42) == -1);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM users", NULL), 12000);
    sqlite3_close(db);

    struct ledger_totals tot;
    CHECK(ledger_prepare(t.path, &tot) == 0);
    CHECK_EQ_INT(tot.account_count, 12000);
    CHECK_EQ_INT(tot.balance_sum, sum);

    /* Same seed, same balances; another seed, others. */
    CHECK(ledger_seed(u.path, 1000, 42) == 0);
    db = raw_open(u.path);
    CHECK_EQ_INT(balance_sum(db), first_1000);
    sqlite3_close(db);
    tmpdb_remove(&u);
    tmpdb_make(&u, "ledger");
    CHECK(ledger_seed(u.path, 1000, 43) == 0);
    db = raw_open(u.path);
    CHECK(balance_sum(db) != first_1000);
    sqlite3_close(db);

    CHECK(ledger_seed(u.path, LEDGER_SEED_MAX_ACCOUNTS + 1, 1) == -1);
    tmpdb_remove(&t);
    tmpdb_remove(&u);
}

TEST(ledger_seed_fills_an_empty_migrated_ledger)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    struct ledger_totals tot;
    CHECK(ledger_prepare(t.path, &tot) == 0); /* schema 1, WAL */
    CHECK(ledger_seed(t.path, 300, 7) == 0);
    CHECK(ledger_prepare(t.path, &tot) == 0);
    CHECK_EQ_INT(tot.account_count, 300);
    sqlite3 *db = raw_open(t.path);
    CHECK_EQ_INT(raw_int(db, "PRAGMA user_version", NULL), LEDGER_SCHEMA_VERSION);
    CHECK_EQ_INT(balance_sum(db), tot.balance_sum);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(ledger_seed_refuses_ledger_with_any_account)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    const char *card = "1234 5678";
    const int64_t balance = 77;
    sqlite3 *db = make_ledger(&t, &card, &balance, 1); /* no clash with demo card numbers */
    CHECK(ledger_seed(t.path, 10, 1) == -1);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM users", NULL), 1);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

/* ---- apply -------------------------------------------------------------- */

/* Status, success and balance_after of the row recorded for txid. */
static void check_row(sqlite3 *db, uint64_t txid, const char *status, int success,
                      int64_t balance_after)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM transactions WHERE txid = %llu AND status = ?1 AND success = %d "
             "AND COALESCE(balance_after, -999) = %lld AND queued_at = %lld AND applied_at = %lld",
             (unsigned long long)txid, success, (long long)balance_after, T_QUEUED_AT, T_APPLIED_AT);
    CHECK_EQ_INT(raw_int(db, sql, status), 1);
}

TEST(ledger_apply_batch_records_every_status)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards3, balances3, 3);
    struct txn_entry b[10] = {
        entry(1, "1111 0000", 500, 0),         /* applied, 1500 */
        entry(2, "1111 0000", -2000, 0),       /* insufficient_funds */
        entry(3, "1111 0000", -1500, 0),       /* applied, exactly 0 */
        entry(4, "9999 9999", 5, 0),           /* unknown_account */
        entry(5, "2222 0000", 100, 0),         /* would overflow: rejected */
        entry(6, "2222 0000", 10, 0),          /* applied, exactly INT64_MAX */
        entry(7, "3333 0000", -1, 0),          /* insufficient_funds on 0 */
        entry(8, "3333 0000", 5, 0),           /* corrupt kind: rejected */
        entry(9, "3333 0000", 5, 0),           /* corrupt card: rejected, card NULL */
    };
    b[7].kind = 0;
    memcpy(b[8].card, "33x3", 5);
    b[8].card_len = 4;
    struct ledger_outcome o[9];
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    CHECK_EQ_INT(ledger_apply_batch(l, b, 9, T_APPLIED_AT, o), LEDGER_OK);

    static const enum txn_status want[9] = {
        TXN_STATUS_APPLIED, TXN_STATUS_INSUFFICIENT_FUNDS, TXN_STATUS_APPLIED,
        TXN_STATUS_UNKNOWN_ACCOUNT, TXN_STATUS_REJECTED, TXN_STATUS_APPLIED,
        TXN_STATUS_INSUFFICIENT_FUNDS, TXN_STATUS_REJECTED, TXN_STATUS_REJECTED,
    };
    for (int i = 0; i < 9; i++) {
        CHECK_STR(txn_status_name(o[i].status), txn_status_name(want[i]));
        CHECK_EQ_INT(o[i].replayed, 0);
    }
    CHECK_EQ_INT(o[0].balance_after, 1500);
    CHECK_EQ_INT(o[2].balance_after, 0);
    CHECK(o[5].balance_after == INT64_MAX);

    CHECK_EQ_INT(balance_of(db, "1111 0000"), 0);
    CHECK(balance_of(db, "2222 0000") == INT64_MAX);
    CHECK_EQ_INT(balance_of(db, "3333 0000"), 0);
    CHECK_EQ_INT(raw_int(db, "SELECT typeof(balance) = 'integer' FROM users "
                             "WHERE card_number = '2222 0000'", NULL), 1);
    CHECK_EQ_INT(count_rows(db), 9);
    check_row(db, 1, "applied", 1, 1500);
    check_row(db, 2, "insufficient_funds", 0, -999);
    check_row(db, 3, "applied", 1, 0);
    check_row(db, 4, "unknown_account", 0, -999);
    check_row(db, 5, "rejected", 0, -999);
    check_row(db, 7, "insufficient_funds", 0, -999);
    check_row(db, 8, "rejected", 0, -999);
    CHECK_EQ_INT(raw_int(db, "SELECT card_number IS NULL FROM transactions WHERE txid = 9", NULL), 1);
    CHECK_EQ_INT(raw_int(db, "SELECT amount FROM transactions WHERE txid = 1", NULL), 500);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM transactions WHERE txid = 0", NULL), 0);
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

/* An entry without a usable txid cannot come out of the ring: the worker
 * must die on it (its claim is then requeued) rather than acknowledge an
 * entry it never recorded. */
TEST(ledger_entry_without_txid_aborts_the_worker)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards3, balances3, 3);
    struct txn_entry b[2] = { entry(1, "1111 0000", 500, 0), entry(2, "1111 0000", 5, 0) };
    b[1].txid = 0;
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct ledger_outcome o[2];
        struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
        ledger_apply_batch(l, b, 2, T_APPLIED_AT, o);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    CHECK_EQ_INT(count_rows(db), 0); /* nothing of the batch committed */
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(ledger_replay_with_attempts_is_noop)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards2, balances2, 2);
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    struct txn_entry b[3] = { entry(1, "1111 0000", 500, 0), entry(2, "1111 0000", -9000, 0),
                              entry(3, "3333 0000", 7, 0) };
    struct ledger_outcome o[4];
    CHECK_EQ_INT(ledger_apply_batch(l, b, 3, T_APPLIED_AT, o), LEDGER_OK);
    int64_t sum = balance_sum(db);

    /* Any balance update during the replay would now fail the batch. */
    raw_exec(db, "CREATE TRIGGER no_update BEFORE UPDATE ON users "
                 "BEGIN SELECT RAISE(ABORT, 'replay touched a balance'); END");
    for (int i = 0; i < 3; i++)
        b[i].attempts = 1;
    CHECK_EQ_INT(ledger_apply_batch(l, b, 3, T_APPLIED_AT, o), LEDGER_OK);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(o[i].replayed, 1);
    CHECK_EQ_INT(balance_sum(db), sum);
    CHECK_EQ_INT(count_rows(db), 3);

    /* A requeued batch may mix recorded and new entries. */
    raw_exec(db, "DROP TRIGGER no_update");
    struct txn_entry mixed[2] = { b[0], entry(4, "1111 0000", 25, 1) };
    CHECK_EQ_INT(ledger_apply_batch(l, mixed, 2, T_APPLIED_AT, o), LEDGER_OK);
    CHECK_EQ_INT(o[0].replayed, 1);
    CHECK_EQ_INT(o[1].replayed, 0);
    CHECK_EQ_INT(o[1].status, TXN_STATUS_APPLIED);
    CHECK_EQ_INT(o[1].balance_after, 1525);
    CHECK_EQ_INT(balance_sum(db), sum + 25);
    CHECK_EQ_INT(count_rows(db), 4);
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(ledger_txid_recorded_for_another_request_is_never_skipped)
{
    /* Two instances handing out one txid: the second request must not be
     * taken for a replay of the first (it would be acknowledged unapplied).
     * Both the attempts > 0 check and the grouped INSERT catch it. */
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards2, balances2, 2);
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    struct txn_entry first = entry(7, "1111 0000", 500, 0);
    struct ledger_outcome o[2];
    CHECK_EQ_INT(ledger_apply_batch(l, &first, 1, T_APPLIED_AT, o), LEDGER_OK);
    int64_t sum = balance_sum(db);
    for (uint32_t attempts = 0; attempts < 2; attempts++) {
        struct txn_entry other = entry(7, "3333 0000", 500, attempts);
        CHECK_EQ_INT(ledger_apply_batch(l, &other, 1, T_APPLIED_AT, o), LEDGER_FATAL);
        CHECK(strstr(ledger_last_error(l), "recorded for another request") != NULL);
        other = entry(7, "1111 0000", 501, attempts);
        CHECK_EQ_INT(ledger_apply_batch(l, &other, 1, T_APPLIED_AT, o), LEDGER_FATAL);
    }
    CHECK_EQ_INT(balance_sum(db), sum);
    CHECK_EQ_INT(count_rows(db), 1);
    /* The same request again is a replay, as before. */
    first.attempts = 1;
    CHECK_EQ_INT(ledger_apply_batch(l, &first, 1, T_APPLIED_AT, o), LEDGER_OK);
    CHECK_EQ_INT(o[0].replayed, 1);
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(ledger_recorded_txid_without_attempts_is_caught)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards3, balances3, 3);
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    struct txn_entry b[2] = { entry(1, "1111 0000", 500, 0), entry(2, "1111 0000", -300, 0) };
    struct ledger_outcome o[2];
    CHECK_EQ_INT(ledger_apply_batch(l, b, 2, T_APPLIED_AT, o), LEDGER_OK);
    CHECK_EQ_INT(balance_of(db, "1111 0000"), 1200);

    /* attempts == 0 skips the lookup; the unique txid must still catch it. */
    CHECK_EQ_INT(ledger_apply_batch(l, b, 2, T_APPLIED_AT, o), LEDGER_OK);
    CHECK_EQ_INT(o[0].replayed, 1);
    CHECK_EQ_INT(o[1].replayed, 1);
    CHECK_EQ_INT(balance_of(db, "1111 0000"), 1200);
    CHECK_EQ_INT(count_rows(db), 2);
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

/* Rows are inserted LEDGER_RECORD_CHUNK per statement; a chunk that meets a
 * recorded txid must send the whole batch down the entry-by-entry path. */
TEST(ledger_recorded_txid_inside_a_grouped_insert_is_caught)
{
    enum { N = 3 * LEDGER_RECORD_CHUNK }; /* whole chunks: no single-row INSERT */
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards2, balances2, 2);
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    static struct txn_entry b[N], again[N];
    static struct ledger_outcome o[N];
    for (int i = 0; i < N; i++)
        b[i] = entry((uint64_t)i + 1, i % 2 ? "1111 0000" : "3333 0000", i % 3 ? 7 : -3, 0);
    CHECK_EQ_INT(ledger_apply_batch(l, b, N, T_APPLIED_AT, o), LEDGER_OK);
    CHECK_EQ_INT(count_rows(db), N);
    /* ids follow txids although rows were inserted in chunks */
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM transactions a JOIN transactions b "
                             "ON a.id < b.id AND a.txid > b.txid", NULL), 0);
    int64_t sum = balance_sum(db), b1 = balance_of(db, "1111 0000");

    /* The same batch again, attempts 0, with new entries in the middle of
     * the second chunk: only the new ones count. */
    for (int i = 0; i < N; i++)
        again[i] = b[i];
    again[LEDGER_RECORD_CHUNK + 3] = entry(N + 1, "1111 0000", 100, 0);
    again[LEDGER_RECORD_CHUNK + 4] = entry(N + 2, "9999 0000", 5, 0);
    CHECK_EQ_INT(ledger_apply_batch(l, again, N, T_APPLIED_AT, o), LEDGER_OK);
    for (int i = 0; i < N; i++) {
        int fresh = i == LEDGER_RECORD_CHUNK + 3 || i == LEDGER_RECORD_CHUNK + 4;
        CHECK_EQ_INT(o[i].replayed, !fresh);
    }
    CHECK_EQ_INT(o[LEDGER_RECORD_CHUNK + 3].status, TXN_STATUS_APPLIED);
    CHECK_EQ_INT(o[LEDGER_RECORD_CHUNK + 3].balance_after, b1 + 100);
    CHECK_EQ_INT(o[LEDGER_RECORD_CHUNK + 4].status, TXN_STATUS_UNKNOWN_ACCOUNT);
    CHECK_EQ_INT(balance_sum(db), sum + 100);
    CHECK_EQ_INT(count_rows(db), N + 2);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(DISTINCT txid) FROM transactions", NULL), N + 2);
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(ledger_busy_database_returns_retry_and_changes_nothing)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards3, balances3, 3);
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    CHECK(ledger_set_busy_timeout(l, 50) == 0);
    struct txn_entry b[2] = { entry(1, "1111 0000", 500, 0), entry(2, "3333 0000", 5, 0) };
    struct ledger_outcome o[2];

    raw_exec(db, "BEGIN IMMEDIATE");
    CHECK_EQ_INT(ledger_apply_batch(l, b, 2, T_APPLIED_AT, o), LEDGER_RETRY);
    CHECK(strstr(ledger_last_error(l), "SQLITE_BUSY") != NULL);
    raw_exec(db, "ROLLBACK");
    CHECK_EQ_INT(balance_of(db, "1111 0000"), 1000);
    CHECK_EQ_INT(count_rows(db), 0);

    CHECK_EQ_INT(ledger_apply_batch(l, b, 2, T_APPLIED_AT, o), LEDGER_OK);
    CHECK_EQ_INT(balance_of(db, "1111 0000"), 1500);
    CHECK_EQ_INT(count_rows(db), 2);
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(ledger_failure_mid_batch_rolls_back_every_entry)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards3, balances3, 3);
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    raw_exec(db, "CREATE TRIGGER fail3 BEFORE INSERT ON transactions WHEN NEW.txid = 3 "
                 "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    struct txn_entry b[4] = { entry(1, "1111 0000", 500, 0), entry(2, "3333 0000", 5, 0),
                              entry(3, "1111 0000", 1, 0), entry(4, "1111 0000", 1, 0) };
    struct ledger_outcome o[4];
    CHECK_EQ_INT(ledger_apply_batch(l, b, 4, T_APPLIED_AT, o), LEDGER_FATAL);
    CHECK(strstr(ledger_last_error(l), "injected failure") != NULL);
    CHECK_EQ_INT(balance_of(db, "1111 0000"), 1000);
    CHECK_EQ_INT(balance_of(db, "3333 0000"), 0);
    CHECK_EQ_INT(count_rows(db), 0);

    raw_exec(db, "DROP TRIGGER fail3"); /* the connection is usable again */
    CHECK_EQ_INT(ledger_apply_batch(l, b, 4, T_APPLIED_AT, o), LEDGER_OK);
    CHECK_EQ_INT(balance_of(db, "1111 0000"), 1502);
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(ledger_missing_table_is_fatal)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards3, balances3, 3);
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    raw_exec(db, "DROP TABLE transactions");
    struct txn_entry b[1] = { entry(1, "1111 0000", 500, 0) };
    struct ledger_outcome o[1];
    CHECK_EQ_INT(ledger_apply_batch(l, b, 1, T_APPLIED_AT, o), LEDGER_FATAL);
    CHECK(strstr(ledger_last_error(l), "SQLITE_ERROR") != NULL);
    CHECK_EQ_INT(balance_of(db, "1111 0000"), 1000);
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

/* Deterministic pseudo-random numbers for the model test. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

#define MODEL_ACCOUNTS 50
#define MODEL_BATCHES 40
#define MODEL_BATCH 100

/* Runs random batches against the ledger and against a plain array that
 * follows the rules; every outcome, every balance and the totals must agree. */
TEST(ledger_random_batches_match_model_and_conserve_money)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    char cards[MODEL_ACCOUNTS + 10][TXN_CARD_MAX + 1];
    const char *card_ptrs[MODEL_ACCOUNTS];
    int64_t model[MODEL_ACCOUNTS];
    uint64_t s = 88172645463325252ULL;
    for (int i = 0; i < MODEL_ACCOUNTS + 10; i++) {
        snprintf(cards[i], sizeof cards[i], "4000 %04d", i); /* the last 10 do not exist */
        if (i < MODEL_ACCOUNTS) {
            card_ptrs[i] = cards[i];
            model[i] = (int64_t)(rnd(&s) % 5000);
        }
    }
    sqlite3 *db = make_ledger(&t, card_ptrs, model, MODEL_ACCOUNTS);
    int64_t before = balance_sum(db), applied_sum = 0;
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);

    uint64_t txid = 1;
    for (int batch = 0; batch < MODEL_BATCHES; batch++) {
        struct txn_entry b[MODEL_BATCH];
        struct ledger_outcome o[MODEL_BATCH];
        for (int i = 0; i < MODEL_BATCH; i++) {
            int64_t amount = (int64_t)(rnd(&s) % 6000) - 3000;
            b[i] = entry(txid++, cards[rnd(&s) % (MODEL_ACCOUNTS + 10)], amount ? amount : 1, 0);
        }
        CHECK_EQ_INT(ledger_apply_batch(l, b, MODEL_BATCH, T_APPLIED_AT, o), LEDGER_OK);
        for (int i = 0; i < MODEL_BATCH; i++) {
            int a = atoi(b[i].card + 5);
            enum txn_status want = TXN_STATUS_APPLIED;
            if (a >= MODEL_ACCOUNTS)
                want = TXN_STATUS_UNKNOWN_ACCOUNT;
            else if (model[a] + b[i].amount < 0)
                want = TXN_STATUS_INSUFFICIENT_FUNDS;
            CHECK_EQ_INT(o[i].status, want);
            if (want == TXN_STATUS_APPLIED) {
                model[a] += b[i].amount;
                applied_sum += b[i].amount;
                CHECK_EQ_INT(o[i].balance_after, model[a]);
            }
        }
    }
    for (int i = 0; i < MODEL_ACCOUNTS; i++)
        CHECK_EQ_INT(balance_of(db, cards[i]), model[i]);
    CHECK_EQ_INT(balance_sum(db), before + applied_sum);
    CHECK_EQ_INT(raw_int(db, "SELECT SUM(amount) FROM transactions WHERE status = 'applied'", NULL),
                 applied_sum);
    CHECK(raw_int(db, "SELECT MIN(balance) FROM users", NULL) >= 0);
    CHECK_EQ_INT(count_rows(db), MODEL_BATCHES * MODEL_BATCH);
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

/* ---- worker process ----------------------------------------------------- */

struct worker_rig {
    struct tmpdb t;
    sqlite3 *db;
    struct shm_seg seg;
    char shm_name[64];
    struct config cfg;
    pid_t pid;
};

#define RIG_WORKER_SLOT 1 /* one frontend row first, then the worker */

enum rig_mode {
    RIG_PLAIN,        /* entries queued, then the worker starts */
    RIG_LOCKED,       /* worker starts, test takes the write lock, then queues */
    RIG_TERM_PENDING, /* like RIG_PLAIN, worker starts with SIGTERM blocked and pending */
};

static void rig_queue(struct worker_rig *r)
{
    struct txn_entry e[20];
    for (int i = 0; i < 20; i++) {
        const char *card = i < 10 ? "1111 0000" : i < 15 ? "3333 0000" : "5555 0000";
        e[i] = entry(0, card, i < 10 ? 10 : -1, 0); /* ring_enqueue assigns txids */
        e[i].queued_at_us = 0;
    }
    CHECK(ring_enqueue(r->seg.ring, e, 20) == 0);
}

static void rig_run_worker(struct worker_rig *r, enum rig_mode mode, pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed CHECK must not leave it running */
    if (getppid() != parent)
        _exit(1);
    if (mode == RIG_TERM_PENDING) {
        sigset_t term;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        sigprocmask(SIG_BLOCK, &term, NULL);
        raise(SIGTERM);
    }
    _exit(worker_main(&r->cfg, &r->seg, RIG_WORKER_SLOT, 0));
}

/* A ledger, a segment with one worker slot, a worker process and 20 queued
 * entries. No SQLite connection is open across fork(): SQLite's per-process
 * lock bookkeeping would be copied into the worker and block it for good. */
static void rig_start(struct worker_rig *r, enum rig_mode mode)
{
    tmpdb_make(&r->t, "ledger");
    sqlite3_close(make_ledger(&r->t, cards2, balances2, 2));
    snprintf(r->shm_name, sizeof r->shm_name, "/txp-unit-worker-%d", (int)getpid());
    struct shm_params p = { .queue_capacity = 64, .batch_max = 8, .n_frontends = 1, .n_workers = 1 };
    enum shm_open_result res;
    struct shm_txids ids = { .floor = 1, .stride = 1 };
    CHECK(shm_open_master(&r->seg, r->shm_name, &p, &ids, 1, &res) == 0);
    snprintf(r->cfg.db_path, sizeof r->cfg.db_path, "%s", r->t.path);
    r->cfg.batch_max = 8;
    r->cfg.sync = SYNC_NORMAL;
    if (mode != RIG_LOCKED)
        rig_queue(r);
    if (mode == RIG_TERM_PENDING) /* a replacement started during the drain */
        r->seg.hdr->master_state = MASTER_DRAINING_WORKERS;

    pid_t parent = getpid();
    r->pid = fork();
    CHECK(r->pid >= 0);
    if (r->pid == 0)
        rig_run_worker(r, mode, parent);
    r->db = raw_open(r->t.path);
    if (mode == RIG_LOCKED) {
        raw_exec(r->db, "BEGIN IMMEDIATE");
        rig_queue(r);
    }
}

/* Waits up to ms for the ring to hold no queued or claimed entry. */
static int rig_wait_empty(struct worker_rig *r, int ms)
{
    for (int waited = 0; waited < ms; waited += 10) {
        if (ring_pending(r->seg.ring) == 0)
            return 1;
        struct timespec ts = { 0, 10 * 1000000L };
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Waits up to ms for the worker to exit; 1 if it exited 0. */
static int rig_exited_cleanly(struct worker_rig *r, int ms)
{
    for (int waited = 0; waited < ms; waited += 10) {
        int status = 0;
        pid_t got = waitpid(r->pid, &status, WNOHANG);
        if (got == r->pid)
            return WIFEXITED(status) && WEXITSTATUS(status) == 0;
        struct timespec ts = { 0, 10 * 1000000L };
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void rig_cleanup(struct worker_rig *r)
{
    sqlite3_close(r->db);
    shm_close(&r->seg);
    shm_unlink_name(r->shm_name);
    tmpdb_remove(&r->t);
}

/* Like the master once every frontend is gone: SIGTERM must make the worker
 * drain and exit 0. */
static void rig_stop(struct worker_rig *r)
{
    __atomic_store_n(&r->seg.hdr->master_state, MASTER_DRAINING_WORKERS, __ATOMIC_SEQ_CST);
    CHECK(kill(r->pid, SIGTERM) == 0);
    CHECK(rig_exited_cleanly(r, 5000));
    CHECK_EQ_INT(r->seg.children[RIG_WORKER_SLOT].state, CHILD_DRAINING);
    rig_cleanup(r);
}

/* What the 20 entries of rig_start must have produced. */
static void rig_check_applied(struct worker_rig *r)
{
    const struct metric_block *m = shm_metrics(&r->seg, RIG_WORKER_SLOT);
    CHECK_EQ_INT(balance_of(r->db, "1111 0000"), 1100);
    CHECK_EQ_INT(count_rows(r->db), 20);
    CHECK_EQ_INT(m->counters[METRIC_tx_applied_deposit], 10);
    CHECK_EQ_INT(m->counters[METRIC_tx_insufficient_funds], 5);
    CHECK_EQ_INT(m->counters[METRIC_tx_unknown_account], 5);
    CHECK_EQ_INT(m->counters[METRIC_balance_delta], 100);
    CHECK(m->counters[METRIC_batches_committed] >= 3); /* batch_max 8 */
    CHECK_EQ_INT(m->recent_next, 20);                 /* one latency sample each */
}

TEST(ledger_worker_applies_queue_and_drains_on_sigterm)
{
    struct worker_rig r = { 0 };
    rig_start(&r, RIG_PLAIN);
    CHECK(rig_wait_empty(&r, 5000));
    rig_check_applied(&r);
    CHECK_EQ_INT(r.seg.children[RIG_WORKER_SLOT].state, CHILD_RUNNING);
    CHECK(r.seg.children[RIG_WORKER_SLOT].heartbeat_us > 0);
    CHECK_EQ_INT(shm_metrics(&r.seg, RIG_WORKER_SLOT)->counters[METRIC_db_errors], 0);
    rig_stop(&r);
}

/* The worker waits 5 s for a lock before it counts an error, so this test
 * holds the database for a little longer than that. */
TEST_SLOW(ledger_worker_keeps_batch_claimed_while_database_is_locked, 30)
{
    struct worker_rig r = { 0 };
    rig_start(&r, RIG_LOCKED);
    const struct metric_block *m = shm_metrics(&r.seg, RIG_WORKER_SLOT);
    for (int waited = 0; m->counters[METRIC_db_errors] == 0 && waited < 8000; waited += 20) {
        struct timespec ts = { 0, 20 * 1000000L };
        nanosleep(&ts, NULL);
    }
    CHECK(m->counters[METRIC_db_errors] >= 1);
    CHECK_EQ_INT(ring_pending(r.seg.ring), 20); /* claimed, not dropped */
    CHECK_EQ_INT(m->counters[METRIC_batches_committed], 0);
    raw_exec(r.db, "ROLLBACK");
    CHECK(rig_wait_empty(&r, 5000));
    rig_check_applied(&r);
    rig_stop(&r);
}

/* A worker the master starts during a drain gets its SIGTERM before it has
 * a handler; it must still apply everything and exit 0. */
TEST(ledger_worker_started_with_pending_sigterm_drains_and_exits)
{
    struct worker_rig r = { 0 };
    rig_start(&r, RIG_TERM_PENDING);
    CHECK(rig_exited_cleanly(&r, 5000));
    CHECK_EQ_INT(ring_pending(r.seg.ring), 0);
    rig_check_applied(&r);
    rig_cleanup(&r);
}

/* A SIGTERM that reaches the worker before the master has stopped the
 * frontends (a signal to the whole process group, e.g. from `timeout`) must
 * not end it: entries queued afterwards still get applied. */
TEST(ledger_worker_sigterm_before_frontends_stop_keeps_applying)
{
    struct worker_rig r = { 0 };
    rig_start(&r, RIG_PLAIN);
    CHECK(rig_wait_empty(&r, 5000));
    r.seg.hdr->master_state = MASTER_DRAINING; /* frontends still stopping */
    CHECK(kill(r.pid, SIGTERM) == 0);
    struct timespec ts = { 0, 200 * 1000000L };
    nanosleep(&ts, NULL);
    CHECK_EQ_INT(waitpid(r.pid, NULL, WNOHANG), 0); /* still running */
    struct txn_entry e;
    CHECK_EQ_INT(txn_entry_make(&e, "1111 0000", 9, 7), 0);
    CHECK_EQ_INT(ring_enqueue(r.seg.ring, &e, 1), 0);
    CHECK(rig_wait_empty(&r, 5000));
    CHECK_EQ_INT(balance_of(r.db, "1111 0000"), 1107);
    rig_stop(&r);
}

/* ---- transfers, account openings, idempotency keys ---------------------- */

static struct txn_entry transfer(uint64_t txid, const char *from, const char *to, int64_t amount)
{
    struct txn_entry e;
    CHECK(txn_entry_make_transfer(&e, from, strlen(from), to, strlen(to), amount) == 0);
    e.txid = txid;
    e.queued_at_us = T_QUEUED_AT;
    return e;
}

static struct txn_entry keyed(struct txn_entry e, const char *key)
{
    CHECK(txn_entry_set_key(&e, key, strlen(key)) == 0);
    return e;
}

/* The recorded reason of txid, "" when NULL. */
static int reason_is(sqlite3 *db, uint64_t txid, const char *reason)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT COALESCE(reason, '') = ?1 FROM transactions WHERE txid = %llu",
             (unsigned long long)txid);
    return raw_int(db, sql, reason) == 1;
}

TEST(ledger_transfer_moves_both_balances_or_records_why_not)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards3, balances3, 3); /* 1000, INT64_MAX - 10, 0 */
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    struct txn_entry b[7] = {
        transfer(1, "1111 0000", "3333 0000", 300),  /* applied: 700 / 300 */
        transfer(2, "1111 0000", "1111 0000", 1),    /* same_account */
        transfer(3, "1111 0000", "9999 0000", 1),    /* unknown to */
        transfer(4, "9999 0000", "1111 0000", 1),    /* unknown from */
        transfer(5, "3333 0000", "1111 0000", 301),  /* insufficient_funds */
        transfer(6, "1111 0000", "2222 0000", 11),   /* overflow on the "to" side */
        transfer(7, "3333 0000", "1111 0000", 300),  /* applied: exactly 0 left */
    };
    struct ledger_outcome o[7];
    CHECK_EQ_INT(ledger_apply_batch(l, b, 7, T_APPLIED_AT, o), LEDGER_OK);
    static const enum txn_reason why[7] = {
        TXN_REASON_NONE, TXN_REASON_SAME_ACCOUNT, TXN_REASON_UNKNOWN_ACCOUNT,
        TXN_REASON_UNKNOWN_ACCOUNT, TXN_REASON_INSUFFICIENT_FUNDS, TXN_REASON_OVERFLOW,
        TXN_REASON_NONE,
    };
    for (int i = 0; i < 7; i++) {
        CHECK_EQ_INT(o[i].status, why[i] == TXN_REASON_NONE ? TXN_STATUS_APPLIED : TXN_STATUS_REJECTED);
        CHECK_EQ_INT(o[i].reason, why[i]);
        CHECK(reason_is(db, (uint64_t)i + 1, txn_reason_name(why[i])));
    }
    CHECK_EQ_INT(o[0].balance_after, 700);
    CHECK_EQ_INT(o[0].counterparty_balance, 300);
    CHECK_EQ_INT(o[6].balance_after, 0);
    CHECK_EQ_INT(o[6].counterparty_balance, 1000);
    CHECK_EQ_INT(balance_of(db, "1111 0000"), 1000);
    CHECK(balance_of(db, "2222 0000") == INT64_MAX - 10);
    CHECK_EQ_INT(balance_of(db, "3333 0000"), 0);
    /* One row per transfer, from the "from" side, the "to" side beside it. */
    CHECK_EQ_INT(count_rows(db), 7);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM transactions WHERE txid = 1 AND kind = 'transfer' "
                             "AND card_number = '1111 0000' AND counterparty = '3333 0000' AND "
                             "amount = 300 AND balance_after = 700 AND "
                             "counterparty_balance_after = 300 AND success = 1", NULL), 1);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM transactions WHERE status = 'rejected' AND "
                             "balance_after IS NULL AND counterparty_balance_after IS NULL", NULL), 5);
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(ledger_open_creates_an_account_once)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards2, balances2, 2);
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    struct txn_entry b[4];
    CHECK(txn_entry_make_open(&b[0], "5555 0000", 9, 700) == 0);
    CHECK(txn_entry_make_open(&b[1], "5555 0000", 9, 1) == 0);   /* exists by now */
    CHECK(txn_entry_make_open(&b[2], "1111 0000", 9, 0) == 0);   /* existed before */
    CHECK(txn_entry_make_open(&b[3], "6666 0000", 9, 0) == 0);   /* empty account */
    for (int i = 0; i < 4; i++) {
        b[i].txid = (uint64_t)i + 1;
        b[i].queued_at_us = T_QUEUED_AT;
    }
    struct ledger_outcome o[4];
    CHECK_EQ_INT(ledger_apply_batch(l, b, 4, T_APPLIED_AT, o), LEDGER_OK);
    CHECK_EQ_INT(o[0].status, TXN_STATUS_APPLIED);
    CHECK_EQ_INT(o[0].balance_after, 700);
    CHECK_EQ_INT(o[1].reason, TXN_REASON_ACCOUNT_EXISTS);
    CHECK_EQ_INT(o[2].reason, TXN_REASON_ACCOUNT_EXISTS);
    CHECK_EQ_INT(o[3].status, TXN_STATUS_APPLIED);
    CHECK_EQ_INT(balance_of(db, "5555 0000"), 700);
    CHECK_EQ_INT(balance_of(db, "6666 0000"), 0);
    CHECK_EQ_INT(balance_of(db, "1111 0000"), 1000);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM users", NULL), 4);
    /* The opening balance is money coming in: the invariant counts it. */
    CHECK_EQ_INT(balance_sum(db), 1000 + 700);
    CHECK_EQ_INT(raw_int(db, "SELECT SUM(amount) FROM transactions WHERE status = 'applied' "
                             "AND COALESCE(kind, '') <> 'transfer'", NULL), 700);
    CHECK_EQ_INT(raw_int(db, "SELECT applied_at FROM transactions WHERE kind = 'open' AND "
                             "status = 'applied' AND card_number = ?1", "5555 0000"), T_APPLIED_AT);
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(ledger_idempotency_key_applies_once_across_batches)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards2, balances2, 2);
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    /* First batch: the original and a copy racing it in the same batch, a
     * reuse with another amount, and a keyed withdrawal that fails. */
    struct txn_entry b[4] = {
        keyed(entry(1, "1111 0000", 100, 0), "k-1"),
        keyed(entry(2, "1111 0000", 100, 0), "k-1"),
        keyed(entry(3, "1111 0000", 101, 0), "k-1"),
        keyed(entry(4, "3333 0000", -5, 0), "k-2"),
    };
    struct ledger_outcome o[4];
    CHECK_EQ_INT(ledger_apply_batch(l, b, 4, T_APPLIED_AT, o), LEDGER_OK);
    CHECK_EQ_INT(o[0].status, TXN_STATUS_APPLIED);
    CHECK_EQ_INT(o[1].status, TXN_STATUS_DUPLICATE);
    CHECK_EQ_INT(o[1].original_txid, 1);
    CHECK_EQ_INT(o[2].status, TXN_STATUS_REJECTED);
    CHECK_EQ_INT(o[2].reason, TXN_REASON_KEY_REUSED);
    CHECK_EQ_INT(o[2].original_txid, 1);
    CHECK_EQ_INT(o[3].status, TXN_STATUS_INSUFFICIENT_FUNDS);
    CHECK_EQ_INT(balance_of(db, "1111 0000"), 1100);

    /* Later copies, and a copy replayed after a crash (attempts > 0). */
    struct txn_entry later[3] = {
        keyed(entry(5, "1111 0000", 100, 0), "k-1"),
        keyed(entry(6, "3333 0000", -5, 0), "k-2"),
        b[0],
    };
    later[2].attempts = 1;
    CHECK_EQ_INT(ledger_apply_batch(l, later, 3, T_APPLIED_AT, o), LEDGER_OK);
    CHECK_EQ_INT(o[0].status, TXN_STATUS_DUPLICATE);
    CHECK_EQ_INT(o[0].original_txid, 1);
    CHECK_EQ_INT(o[1].status, TXN_STATUS_DUPLICATE); /* the original outcome was a refusal */
    CHECK_EQ_INT(o[1].original_txid, 4);
    CHECK_EQ_INT(o[2].replayed, 1);
    CHECK_EQ_INT(balance_of(db, "1111 0000"), 1100);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM idempotency_keys", NULL), 2);
    CHECK_EQ_INT(raw_int(db, "SELECT txid FROM idempotency_keys WHERE key = ?1", "k-1"), 1);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM transactions WHERE status = 'duplicate' AND "
                             "original_txid IS NOT NULL AND balance_after IS NULL", NULL), 3);
    CHECK(reason_is(db, 3, "idempotency_key_reused"));
    CHECK_EQ_INT(count_rows(db), 6);
    /* A fingerprint covers what is asked, not the key or the txid. */
    CHECK(txn_fingerprint(&b[0]) == txn_fingerprint(&later[0]));
    CHECK(txn_fingerprint(&b[0]) != txn_fingerprint(&b[2]));
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(ledger_prune_keys_deletes_only_old_keys_in_bounded_steps)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards2, balances2, 2);
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    struct txn_entry b[3] = {
        keyed(entry(1, "1111 0000", 1, 0), "old-1"),
        keyed(entry(2, "1111 0000", 1, 0), "old-2"),
        keyed(entry(3, "1111 0000", 1, 0), "new"),
    };
    struct ledger_outcome o[3];
    CHECK_EQ_INT(ledger_apply_batch(l, b, 2, T_APPLIED_AT, o), LEDGER_OK);
    CHECK_EQ_INT(ledger_apply_batch(l, b + 2, 1, T_APPLIED_AT + 10, o), LEDGER_OK);
    unsigned deleted = 99;
    CHECK_EQ_INT(ledger_prune_keys(l, T_APPLIED_AT + 5, 1, &deleted), LEDGER_OK);
    CHECK_EQ_INT(deleted, 1);
    CHECK_EQ_INT(ledger_prune_keys(l, T_APPLIED_AT + 5, 10, &deleted), LEDGER_OK);
    CHECK_EQ_INT(deleted, 1);
    CHECK_EQ_INT(ledger_prune_keys(l, T_APPLIED_AT + 5, 10, &deleted), LEDGER_OK);
    CHECK_EQ_INT(deleted, 0);
    CHECK_EQ_INT(raw_int(db, "SELECT COUNT(*) FROM idempotency_keys WHERE key = ?1", "new"), 1);
    /* A pruned key is free again: the same key now applies anew. */
    struct txn_entry again = keyed(entry(4, "1111 0000", 50, 0), "old-1");
    CHECK_EQ_INT(ledger_apply_batch(l, &again, 1, T_APPLIED_AT + 20, o), LEDGER_OK);
    CHECK_EQ_INT(o[0].status, TXN_STATUS_APPLIED);
    CHECK_EQ_INT(balance_of(db, "1111 0000"), 1053);
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(txn_entry_check_covers_every_kind)
{
    struct txn_entry e;
    const char *why = NULL;
    CHECK(txn_entry_make_transfer(&e, "1", 1, "2", 1, 0) != 0);
    CHECK(txn_entry_make_transfer(&e, "1", 1, "2", 1, -5) != 0);
    CHECK(txn_entry_make_transfer(&e, "1", 1, "x", 1, 5) != 0);
    CHECK(txn_entry_make_open(&e, "1", 1, -1) != 0);
    CHECK(txn_entry_make_open(&e, "1", 1, TXN_AMOUNT_LIMIT + 1) != 0);
    CHECK(txn_entry_make_open(&e, "1", 1, 0) == 0);
    e.txid = 1;
    CHECK(txn_entry_check(&e, &why) == 0);
    CHECK(txn_entry_make_transfer(&e, "1", 1, "2", 1, 5) == 0);
    e.txid = 1;
    CHECK(txn_entry_check(&e, &why) == 0);
    e.card2[1] = 'x'; /* no NUL where card2_len says */
    CHECK(txn_entry_check(&e, &why) != 0);
    CHECK(txn_entry_make(&e, "1", 1, 5) == 0);
    e.txid = 1;
    CHECK(txn_entry_set_key(&e, "", 0) != 0);
    CHECK(txn_entry_set_key(&e, "a\nb", 3) != 0);
    char long_key[TXN_KEY_MAX + 2];
    memset(long_key, 'k', sizeof long_key);
    CHECK(txn_entry_set_key(&e, long_key, TXN_KEY_MAX + 1) != 0);
    CHECK(txn_entry_set_key(&e, long_key, TXN_KEY_MAX) == 0);
    CHECK(txn_entry_check(&e, &why) == 0);
    e.key[3] = '\x01';
    CHECK(txn_entry_check(&e, &why) != 0);
    CHECK_STR(why, "malformed idempotency key");
}

/* Statements are chains: users.last_txid -> row -> prev_txid (or
 * counterparty_prev_txid on the "to" side of a transfer). */
static int64_t prev_of(sqlite3 *db, uint64_t txid, int counterparty_side)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT %s FROM transactions WHERE txid = %llu",
             counterparty_side ? "counterparty_prev_txid" : "prev_txid", (unsigned long long)txid);
    return raw_int(db, sql, NULL);
}

TEST(ledger_statement_chain_links_every_row_of_an_account_in_apply_order)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = make_ledger(&t, cards2, balances2, 2); /* 1111: 1000, 3333: 0 */
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    struct txn_entry b[7] = {
        entry(1, "1111 0000", 100, 0),                   /* 1111: deposit */
        transfer(2, "1111 0000", "3333 0000", 600),      /* out / in */
        entry(3, "3333 0000", -700, 0),                  /* 3333: refused */
        entry(4, "9999 0000", 5, 0),                     /* unknown: in no chain */
        keyed(entry(5, "1111 0000", -1, 0), "k"),        /* 1111: withdrawal */
        keyed(entry(6, "1111 0000", -1, 0), "k"),        /* duplicate: in no chain */
        transfer(7, "3333 0000", "3333 0000", 1),        /* same_account: refused, once */
    };
    struct ledger_outcome o[7];
    CHECK_EQ_INT(ledger_apply_batch(l, b, 4, T_APPLIED_AT, o), LEDGER_OK);
    CHECK_EQ_INT(ledger_apply_batch(l, b + 4, 3, T_APPLIED_AT, o), LEDGER_OK);
    /* 1111: 5 -> 2 -> 1 */
    CHECK_EQ_INT(raw_int(db, "SELECT last_txid FROM users WHERE card_number = ?1", "1111 0000"), 5);
    CHECK_EQ_INT(prev_of(db, 5, 0), 2);
    CHECK_EQ_INT(prev_of(db, 2, 0), 1);
    CHECK_EQ_INT(prev_of(db, 1, 0), -999);
    /* 3333: 7 -> 3 -> 2 (the "to" side of 2) */
    CHECK_EQ_INT(raw_int(db, "SELECT last_txid FROM users WHERE card_number = ?1", "3333 0000"), 7);
    CHECK_EQ_INT(prev_of(db, 7, 0), 3);
    CHECK_EQ_INT(prev_of(db, 7, 1), -999);
    CHECK_EQ_INT(prev_of(db, 3, 0), 2);
    CHECK_EQ_INT(prev_of(db, 2, 1), -999);
    CHECK_EQ_INT(prev_of(db, 4, 0), -999);
    CHECK_EQ_INT(prev_of(db, 6, 0), -999);
    CHECK_EQ_INT(raw_int(db, "SELECT n_deposits * 10000 + n_withdrawals * 1000 + n_transfers_out * 100 "
                             "+ n_rejected * 10 + n_total FROM users WHERE card_number = ?1",
                         "1111 0000"), 11103);
    CHECK_EQ_INT(raw_int(db, "SELECT n_transfers_in * 100 + n_rejected * 10 + n_total FROM users "
                             "WHERE card_number = ?1", "3333 0000"), 123);
    CHECK_EQ_INT(balance_of(db, "1111 0000"), 499);
    CHECK_EQ_INT(balance_of(db, "3333 0000"), 600);
    ledger_close(l);
    sqlite3_close(db);
    tmpdb_remove(&t);
}

TEST(ledger_migration_links_schema_1_rows_into_statements)
{
    struct tmpdb t;
    tmpdb_make(&t, "ledger");
    sqlite3 *db = raw_open(t.path);
    make_prototype(db);
    /* A schema 1 ledger, as the previous release left it. */
    raw_exec(db, "ALTER TABLE transactions ADD COLUMN txid INTEGER;"
                 "ALTER TABLE transactions ADD COLUMN status TEXT;"
                 "ALTER TABLE transactions ADD COLUMN balance_after INTEGER;"
                 "ALTER TABLE transactions ADD COLUMN queued_at INTEGER;"
                 "ALTER TABLE transactions ADD COLUMN applied_at INTEGER;"
                 "CREATE UNIQUE INDEX transactions_txid ON transactions(txid);"
                 "PRAGMA user_version = 1;"
                 "INSERT INTO users VALUES ('1111', 10), ('2222', 20);"
                 "INSERT INTO transactions(card_number, amount, success, txid, status) VALUES "
                 "('1111', 5, 1, NULL, 'applied'), ('1111', 5, 1, 11, 'applied'), "
                 "('2222', -50, 0, 12, 'insufficient_funds'), ('1111', -3, 1, 13, 'applied'), "
                 "('9999', 1, 0, 14, 'unknown_account')");
    sqlite3_close(db);
    struct ledger_totals tot;
    CHECK(ledger_prepare(t.path, &tot) == 0);
    db = raw_open(t.path);
    CHECK_EQ_INT(raw_int(db, "SELECT last_txid FROM users WHERE card_number = ?1", "1111"), 13);
    CHECK_EQ_INT(prev_of(db, 13, 0), 11);
    CHECK_EQ_INT(prev_of(db, 11, 0), -999);
    CHECK_EQ_INT(raw_int(db, "SELECT n_deposits * 100 + n_withdrawals * 10 + n_total FROM users "
                             "WHERE card_number = ?1", "1111"), 112);
    CHECK_EQ_INT(raw_int(db, "SELECT n_rejected * 10 + n_total FROM users WHERE card_number = ?1",
                         "2222"), 11);
    sqlite3_close(db);
    /* A worker carries the chain on from there. */
    struct ledger *l = ledger_open(t.path, SYNC_NORMAL);
    CHECK(l != NULL);
    struct txn_entry e = entry(15, "1111", 1, 0);
    struct ledger_outcome o;
    CHECK_EQ_INT(ledger_apply_batch(l, &e, 1, T_APPLIED_AT, &o), LEDGER_OK);
    CHECK_EQ_INT(o.prev_txid, 13);
    ledger_close(l);
    tmpdb_remove(&t);
}
