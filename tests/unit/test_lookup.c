/* Unit tests of the frontend's read-only ledger queries against a real
 * schema-2 SQLite file: transaction details, Idempotency-Key look-ups,
 * account counts and statements (kinds and signs from each side of a
 * transfer, pagination, broken links, cost per page). Most rows are written
 * with plain SQL, so the expected answers do not depend on the worker's
 * code; one test reads what the worker itself wrote, so the two agree on
 * the statement links. */
#include <sqlite3.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "ledger/ledger.h"
#include "ledger/lookup.h"
#include "tests/unit/tmpdb.h"
#include "tests/unit/unit.h"

#define A "1111 0000"
#define B "2222 0000"
#define C "3333 0000"
#define D "4444 0000"

/* The ledger every test reads, in commit order (id), with the statement
 * links and counts a worker would have written. txids are not in id order
 * on purpose (17 first, 9 after 10, 8 late): statements follow the links.
 * Not linked, so in no statement: the prototype's rows (no txid), the
 * duplicate 18, the refused second opening 8 and the unknown account's 20.
 * Every row with a txid was queued at txid * 10 and applied at
 * txid * 10 + 1. */
#define ROW_COLUMNS                                                                       \
    "INSERT INTO transactions(card_number, amount, success, txid, status, balance_after, kind," \
    " counterparty, counterparty_balance_after, reason, original_txid, idempotency_key,"  \
    " prev_txid, counterparty_prev_txid) VALUES"
static const char ledger_rows[] =
    "INSERT INTO users(card_number, balance, last_txid, opened_at, n_deposits, n_withdrawals,"
    " n_transfers_in, n_transfers_out, n_rejected, n_total) VALUES"
    " ('" A "', 100, 16, NULL, 1, 1, 1, 1, 3, 7),"
    " ('" B "', 230, 21, NULL, 2, 0, 1, 2, 0, 5),"
    " ('" C "', 502, 21, 171, 0, 0, 1, 0, 1, 3),"
    " ('" D "', 0, NULL, NULL, 0, 0, 0, 0, 0, 0);"
    ROW_COLUMNS
    /* the prototype's (status NULL: from success) */
    " ('" A "', 100, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
    " ('" A "', -30, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
    " ('" C "', 500, 1, 17, 'applied', 500, 'open', NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
    /* schema 1 rows: no kind, the sign tells */
    " ('" A "', -20, 1, 10, 'applied', 80, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
    " ('" B "', 200, 1, 9, 'applied', 200, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
    " ('" A "', 50, 1, 11, 'applied', 130, 'deposit', NULL, NULL, NULL, NULL, 'k1', 10, NULL),"
    " ('" A "', 30, 1, 12, 'applied', 100, 'transfer', '" B "', 230, NULL, NULL, NULL, 11, 9),"
    " ('" B "', 5, 1, 13, 'applied', 225, 'transfer', '" A "', 105, NULL, NULL, NULL, 12, 12),"
    " ('" A "', -1000, 0, 14, 'insufficient_funds', NULL, 'withdrawal', NULL, NULL, NULL,"
    "  NULL, NULL, 13, NULL),"
    /* refused, with balances that must not be shown */
    " ('" A "', 999, 0, 15, 'rejected', 105, 'transfer', '" C "', 500, 'insufficient_funds',"
    "  NULL, NULL, 14, 17),"
    /* a transfer to oneself: refused, linked once */
    " ('" A "', 1, 0, 16, 'rejected', NULL, 'transfer', '" A "', NULL, 'same_account', NULL,"
    "  NULL, 15, NULL),"
    " ('" A "', 50, 0, 18, 'duplicate', NULL, 'deposit', NULL, NULL, NULL, 11, 'k1', NULL, NULL),"
    " ('" B "', 7, 1, 19, 'applied', 232, 'deposit', NULL, NULL, NULL, NULL, NULL, 13, NULL),"
    " ('" C "', 10, 0, 8, 'rejected', NULL, 'open', NULL, NULL, 'account_exists', NULL, NULL,"
    "  NULL, NULL),"
    " ('5555 0000', 3, 0, 20, 'unknown_account', NULL, 'deposit', NULL, NULL, NULL, NULL, NULL,"
    "  NULL, NULL),"
    " ('" B "', 2, 1, 21, 'applied', 230, 'transfer', '" C "', 502, NULL, NULL, NULL, 19, 15);"
    "UPDATE transactions SET queued_at = txid * 10, applied_at = txid * 10 + 1"
    " WHERE txid IS NOT NULL;"
    /* fingerprint -5: a uint64 above INT64_MAX, stored with the same bits */
    "INSERT INTO idempotency_keys VALUES ('k1', 11, -5, 1700000000000000)";

/* A migrated ledger holding ledger_rows and a lookup on it. The raw
 * connection stays open for tests that write more. */
static struct lookup *make_lookup(struct tmpdb *t, sqlite3 **raw)
{
    tmpdb_make(t, "lookup");
    struct ledger_totals tot;
    CHECK(ledger_prepare(t->path, &tot) == 0);
    CHECK(sqlite3_open(t->path, raw) == SQLITE_OK);
    CHECK(sqlite3_busy_timeout(*raw, 2000) == SQLITE_OK);
    raw_exec(*raw, ledger_rows);
    struct lookup *l = lookup_open(t->path, 2000);
    CHECK(l != NULL);
    return l;
}

static void finish(struct tmpdb *t, struct lookup *l, sqlite3 *raw)
{
    lookup_close(l);
    CHECK(sqlite3_close(raw) == SQLITE_OK);
    tmpdb_remove(t);
}

/* ---- transactions and keys --------------------------------------------- */

TEST(lookup_txn_reads_schema_2_columns)
{
    struct tmpdb t;
    sqlite3 *raw;
    struct lookup *l = make_lookup(&t, &raw);
    struct lookup_txn x;

    CHECK_EQ_INT(lookup_txn(l, 12, &x), LOOKUP_FOUND);
    CHECK_STR(x.card, A);
    CHECK_STR(x.kind, "transfer");
    CHECK_EQ_INT(x.amount, 30);
    CHECK_STR(x.status, "applied");
    CHECK_STR(x.counterparty, B);
    CHECK(x.has_balance_after);
    CHECK_EQ_INT(x.balance_after, 100);
    CHECK(x.has_counterparty_balance_after);
    CHECK_EQ_INT(x.counterparty_balance_after, 230);
    CHECK_STR(x.reason, "");
    CHECK_EQ_INT(x.original_txid, 0);
    CHECK_STR(x.key, "");

    CHECK_EQ_INT(lookup_txn(l, 18, &x), LOOKUP_FOUND);
    CHECK_STR(x.status, "duplicate");
    CHECK_STR(x.kind, "deposit");
    CHECK_EQ_INT(x.original_txid, 11);
    CHECK_STR(x.key, "k1");
    CHECK(!x.has_balance_after);
    CHECK(!x.has_counterparty_balance_after);
    CHECK_STR(x.counterparty, "");

    CHECK_EQ_INT(lookup_txn(l, 15, &x), LOOKUP_FOUND);
    CHECK_STR(x.reason, "insufficient_funds");
    CHECK_STR(x.status, "rejected");

    CHECK_EQ_INT(lookup_txn(l, 17, &x), LOOKUP_FOUND);
    CHECK_STR(x.kind, "open");
    CHECK_EQ_INT(lookup_txn(l, 999, &x), LOOKUP_NOT_FOUND);
    finish(&t, l, raw);
}

TEST(lookup_txn_derives_kind_of_rows_without_one_from_the_sign)
{
    struct tmpdb t;
    sqlite3 *raw;
    struct lookup *l = make_lookup(&t, &raw);
    struct lookup_txn x;
    CHECK_EQ_INT(lookup_txn(l, 10, &x), LOOKUP_FOUND);
    CHECK_STR(x.kind, "withdrawal");
    CHECK_EQ_INT(x.amount, -20);
    CHECK_EQ_INT(lookup_txn(l, 9, &x), LOOKUP_FOUND);
    CHECK_STR(x.kind, "deposit");
    CHECK_STR(x.counterparty, "");
    CHECK_STR(x.reason, "");
    finish(&t, l, raw);
}

TEST(lookup_key_returns_txid_and_fingerprint_bits)
{
    struct tmpdb t;
    sqlite3 *raw;
    struct lookup *l = make_lookup(&t, &raw);
    uint64_t txid = 0, fp = 0;
    /* the length is honoured: the key need not be NUL-terminated */
    CHECK_EQ_INT(lookup_key(l, "k1xyz", 2, &txid, &fp), LOOKUP_FOUND);
    CHECK_EQ_INT(txid, 11);
    CHECK(fp == UINT64_MAX - 4);
    CHECK_EQ_INT(lookup_key(l, "k1xyz", 3, &txid, &fp), LOOKUP_NOT_FOUND);
    CHECK_EQ_INT(lookup_key(l, "k2", 2, &txid, &fp), LOOKUP_NOT_FOUND);
    finish(&t, l, raw);
}

/* ---- accounts ----------------------------------------------------------- */

struct counts {
    const char *card;
    int64_t balance, deposits, withdrawals, transfers_in, transfers_out, rejected, total;
};

TEST(lookup_account_reads_balance_and_counts)
{
    /* the workers' counts on users, each column to its field */
    static const struct counts want[] = {
        { A, 100, 1, 1, 1, 1, 3, 7 },
        { B, 230, 2, 0, 1, 2, 0, 5 },
        { C, 502, 0, 0, 1, 0, 1, 3 },
        { D, 0, 0, 0, 0, 0, 0, 0 },
    };
    struct tmpdb t;
    sqlite3 *raw;
    struct lookup *l = make_lookup(&t, &raw);
    for (unsigned i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct counts *w = &want[i];
        struct lookup_account a;
        memset(&a, 0x55, sizeof a);
        CHECK_EQ_INT(lookup_account(l, w->card, strlen(w->card), &a), LOOKUP_FOUND);
        CHECK_STR(a.card, w->card);
        CHECK_EQ_INT(a.balance, w->balance);
        CHECK_EQ_INT(a.deposits, w->deposits);
        CHECK_EQ_INT(a.withdrawals, w->withdrawals);
        CHECK_EQ_INT(a.transfers_in, w->transfers_in);
        CHECK_EQ_INT(a.transfers_out, w->transfers_out);
        CHECK_EQ_INT(a.rejected, w->rejected);
        CHECK_EQ_INT(a.total, w->total);
    }
    finish(&t, l, raw);
}

TEST(lookup_account_created_at_and_unknown_card)
{
    struct tmpdb t;
    sqlite3 *raw;
    struct lookup *l = make_lookup(&t, &raw);
    struct lookup_account a;
    /* not opened through the API: no creation time */
    CHECK_EQ_INT(lookup_account(l, A, strlen(A), &a), LOOKUP_FOUND);
    CHECK(!a.has_created_at);
    CHECK_EQ_INT(lookup_account(l, C, strlen(C), &a), LOOKUP_FOUND);
    CHECK(a.has_created_at);
    CHECK_EQ_INT(a.created_at_us, 171);
    CHECK_EQ_INT(lookup_account(l, "5555", 4, &a), LOOKUP_NOT_FOUND);
    /* a prefix of a known card is another card */
    CHECK_EQ_INT(lookup_account(l, A, 4, &a), LOOKUP_NOT_FOUND);
    finish(&t, l, raw);
}

/* ---- statements --------------------------------------------------------- */

struct want_row {
    uint64_t txid;
    const char *kind;
    int64_t amount;
    const char *status, *reason, *counterparty;
    int has_balance_after;
    int64_t balance_after;
};

static void check_rows(const struct lookup_stmt_row *got, uint32_t n, const struct want_row *want,
                       uint32_t n_want)
{
    CHECK_EQ_INT(n, n_want);
    for (uint32_t i = 0; i < n; i++) {
        const struct lookup_stmt_row *g = &got[i];
        const struct want_row *w = &want[i];
        CHECK_EQ_INT(g->txid, w->txid);
        CHECK_STR(g->kind, w->kind);
        CHECK_EQ_INT(g->amount, w->amount);
        CHECK_STR(g->status, w->status);
        CHECK_STR(g->reason, w->reason);
        CHECK_STR(g->counterparty, w->counterparty);
        CHECK_EQ_INT(g->has_balance_after, w->has_balance_after);
        CHECK_EQ_INT(g->balance_after, w->balance_after);
        CHECK(g->has_queued_at && g->has_applied_at);
        CHECK_EQ_INT(g->queued_at_us, (int64_t)g->txid * 10);
        CHECK_EQ_INT(g->applied_at_us, (int64_t)g->txid * 10 + 1);
    }
}

/* A's statement, newest first. */
static const struct want_row statement_a[] = {
    { 16, "transfer_out", -1, "rejected", "same_account", A, 0, 0 },
    { 15, "transfer_out", -999, "rejected", "insufficient_funds", C, 0, 0 },
    { 14, "withdrawal", -1000, "insufficient_funds", "", "", 0, 0 },
    { 13, "transfer_in", 5, "applied", "", B, 1, 105 },
    { 12, "transfer_out", -30, "applied", "", B, 1, 100 },
    { 11, "deposit", 50, "applied", "", "", 1, 130 },
    { 10, "withdrawal", -20, "applied", "", "", 1, 80 },
};
#define N_STATEMENT_A (uint32_t)(sizeof statement_a / sizeof statement_a[0])

static const struct want_row statement_b[] = {
    { 21, "transfer_out", -2, "applied", "", C, 1, 230 },
    { 19, "deposit", 7, "applied", "", "", 1, 232 },
    { 13, "transfer_out", -5, "applied", "", A, 1, 225 },
    { 12, "transfer_in", 30, "applied", "", A, 1, 230 },
    { 9, "deposit", 200, "applied", "", "", 1, 200 },
};

TEST(lookup_statement_lists_both_sides_of_transfers_newest_first)
{
    struct tmpdb t;
    sqlite3 *raw;
    struct lookup *l = make_lookup(&t, &raw);
    struct lookup_stmt_row rows[LOOKUP_STATEMENT_MAX];
    uint32_t n = 99;
    CHECK_EQ_INT(lookup_statement(l, A, strlen(A), 0, 50, rows, &n), LOOKUP_FOUND);
    check_rows(rows, n, statement_a, N_STATEMENT_A);

    CHECK_EQ_INT(lookup_statement(l, B, strlen(B), 0, 50, rows, &n), LOOKUP_FOUND);
    check_rows(rows, n, statement_b, 5);

    static const struct want_row statement_c[] = {
        { 21, "transfer_in", 2, "applied", "", B, 1, 502 },
        { 15, "transfer_in", 999, "rejected", "insufficient_funds", A, 0, 0 },
        { 17, "open", 500, "applied", "", "", 1, 500 },
    };
    CHECK_EQ_INT(lookup_statement(l, C, strlen(C), 0, 50, rows, &n), LOOKUP_FOUND);
    check_rows(rows, n, statement_c, 3);

    /* an account without rows, and one that does not exist */
    n = 99;
    CHECK_EQ_INT(lookup_statement(l, D, strlen(D), 0, 50, rows, &n), LOOKUP_FOUND);
    CHECK_EQ_INT(n, 0);
    n = 99;
    CHECK_EQ_INT(lookup_statement(l, "5555 0000", 9, 0, 50, rows, &n), LOOKUP_FOUND);
    CHECK_EQ_INT(n, 0);
    finish(&t, l, raw);
}

TEST(lookup_statement_pages_with_before)
{
    struct tmpdb t;
    sqlite3 *raw;
    struct lookup *l = make_lookup(&t, &raw);
    struct lookup_stmt_row rows[3];
    uint32_t n = 0, seen = 0;
    uint64_t before = 0;
    for (int page = 0; page < 5; page++) {
        CHECK_EQ_INT(lookup_statement(l, A, strlen(A), before, 3, rows, &n), LOOKUP_FOUND);
        CHECK(seen + n <= N_STATEMENT_A);
        check_rows(rows, n, statement_a + seen, n);
        seen += n;
        if (n < 3)
            break;
        before = rows[n - 1].txid;
    }
    CHECK_EQ_INT(seen, N_STATEMENT_A);
    /* past the oldest row: an empty page */
    CHECK_EQ_INT(lookup_statement(l, A, strlen(A), 10, 3, rows, &n), LOOKUP_FOUND);
    CHECK_EQ_INT(n, 0);
    /* a transfer is a position in both statements, each on its own side */
    CHECK_EQ_INT(lookup_statement(l, A, strlen(A), 13, 3, rows, &n), LOOKUP_FOUND);
    check_rows(rows, n, statement_a + 4, 3);
    CHECK_EQ_INT(lookup_statement(l, B, strlen(B), 13, 3, rows, &n), LOOKUP_FOUND);
    check_rows(rows, n, statement_b + 3, 2);
    /* limit 0 asks for nothing */
    n = 99;
    CHECK_EQ_INT(lookup_statement(l, A, strlen(A), 0, 0, rows, &n), LOOKUP_FOUND);
    CHECK_EQ_INT(n, 0);
    finish(&t, l, raw);
}

TEST(lookup_statement_before_outside_the_statement_is_not_found)
{
    struct tmpdb t;
    sqlite3 *raw;
    struct lookup *l = make_lookup(&t, &raw);
    struct lookup_stmt_row rows[4];
    uint32_t n = 99;
    CHECK_EQ_INT(lookup_statement(l, A, strlen(A), 999, 4, rows, &n), LOOKUP_NOT_FOUND);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(lookup_statement(l, A, strlen(A), UINT64_MAX, 4, rows, &n), LOOKUP_NOT_FOUND);
    /* B's deposit, C's opening: rows of other accounts */
    CHECK_EQ_INT(lookup_statement(l, A, strlen(A), 19, 4, rows, &n), LOOKUP_NOT_FOUND);
    CHECK_EQ_INT(lookup_statement(l, A, strlen(A), 17, 4, rows, &n), LOOKUP_NOT_FOUND);
    CHECK_EQ_INT(lookup_statement(l, "5555", 4, 0, 4, rows, &n), LOOKUP_FOUND);
    CHECK_EQ_INT(n, 0);
    finish(&t, l, raw);
}

/* A link to a row that is not there, or to a row of other accounts, ends
 * the page at the rows found so far (and is logged) instead of failing it
 * or wandering into another statement; a row linked to itself ends it too. */
TEST(lookup_statement_stops_at_a_broken_link)
{
    struct tmpdb t;
    sqlite3 *raw;
    struct lookup *l = make_lookup(&t, &raw);
    raw_exec(raw, "INSERT INTO users(card_number, balance, last_txid) VALUES"
                  " ('6666 0000', 3, 31), ('7777 0000', 3, 33), ('7878 0000', 3, 34);"
                  ROW_COLUMNS
                  " ('6666 0000', 1, 1, 31, 'applied', 3, 'deposit', NULL, NULL, NULL, NULL, NULL,"
                  "  30, NULL),"
                  " ('7777 0000', 1, 1, 33, 'applied', 3, 'deposit', NULL, NULL, NULL, NULL, NULL,"
                  "  19, NULL),"
                  " ('7878 0000', 1, 1, 34, 'applied', 3, 'deposit', NULL, NULL, NULL, NULL, NULL,"
                  "  34, NULL)");
    struct lookup_stmt_row rows[4];
    uint32_t n = 0;
    CHECK_EQ_INT(lookup_statement(l, "6666 0000", 9, 0, 4, rows, &n), LOOKUP_FOUND);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(rows[0].txid, 31);
    CHECK_EQ_INT(lookup_statement(l, "7777 0000", 9, 0, 4, rows, &n), LOOKUP_FOUND);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(rows[0].txid, 33);
    CHECK_EQ_INT(lookup_statement(l, "7878 0000", 9, 0, 4, rows, &n), LOOKUP_FOUND);
    CHECK_EQ_INT(n, 1);
    finish(&t, l, raw);
}

/* A reset after each query ends its read transaction: a later commit is seen
 * at once, and the writer is not kept from checkpointing. */
TEST(lookup_sees_commits_made_after_earlier_reads)
{
    struct tmpdb t;
    sqlite3 *raw;
    struct lookup *l = make_lookup(&t, &raw);
    struct lookup_stmt_row rows[2];
    struct lookup_account a;
    uint32_t n = 0;
    CHECK_EQ_INT(lookup_statement(l, D, strlen(D), 0, 2, rows, &n), LOOKUP_FOUND);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(lookup_account(l, D, strlen(D), &a), LOOKUP_FOUND);
    raw_exec(raw, ROW_COLUMNS
                  " ('" B "', 2, 1, 22, 'applied', 228, 'transfer', '" D "', 2, NULL, NULL, NULL,"
                  "  21, NULL);"
                  "UPDATE transactions SET queued_at = 220, applied_at = 221 WHERE txid = 22;"
                  "UPDATE users SET balance = 2, last_txid = 22, n_transfers_in = 1, n_total = 1"
                  " WHERE card_number = '" D "'");
    CHECK_EQ_INT(lookup_statement(l, D, strlen(D), 0, 2, rows, &n), LOOKUP_FOUND);
    static const struct want_row want[] = { { 22, "transfer_in", 2, "applied", "", B, 1, 2 } };
    check_rows(rows, n, want, 1);
    CHECK_EQ_INT(lookup_account(l, D, strlen(D), &a), LOOKUP_FOUND);
    CHECK_EQ_INT(a.balance, 2);
    CHECK_EQ_INT(a.transfers_in, 1);
    CHECK_EQ_INT(a.total, 1);
    int log_frames = -1, ckpt = -1;
    CHECK(sqlite3_wal_checkpoint_v2(raw, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log_frames, &ckpt) ==
          SQLITE_OK);
    finish(&t, l, raw);
}

/* Links every row touching card (from either side) to the one before it, by
 * id, and points users.last_txid at the newest: what the workers do as they
 * go, done at once for a generated history. */
static void link_history(sqlite3 *raw, const char *card)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "WITH h AS (SELECT id, card_number = '%1$s' AS own,"
             "  LAG(txid) OVER (ORDER BY id) AS prev FROM transactions"
             "  WHERE txid IS NOT NULL AND (card_number = '%1$s' OR counterparty = '%1$s'))"
             " UPDATE transactions SET"
             "  prev_txid = CASE WHEN h.own THEN h.prev ELSE prev_txid END,"
             "  counterparty_prev_txid ="
             "   CASE WHEN h.own THEN counterparty_prev_txid ELSE h.prev END"
             " FROM h WHERE transactions.id = h.id;"
             "UPDATE users SET last_txid = (SELECT txid FROM transactions WHERE txid IS NOT NULL"
             "  AND (card_number = '%1$s' OR counterparty = '%1$s') ORDER BY id DESC LIMIT 1)"
             " WHERE card_number = '%1$s'",
             card);
    raw_exec(raw, sql);
}

/* Every statement row of a long history, page after page, newest first,
 * each row once. */
TEST_SLOW(lookup_statement_pages_a_long_history_in_order, 120)
{
    struct tmpdb t;
    sqlite3 *raw;
    struct lookup *l = make_lookup(&t, &raw);
    /* D: deposits, transfers from B, transfers from D to itself (refused
     * in real life, linked once, on the card_number side) */
    raw_exec(raw, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)"
                  " INSERT INTO transactions(card_number, amount, success, txid, status,"
                  " balance_after, queued_at, applied_at, kind, counterparty,"
                  " counterparty_balance_after)"
                  " SELECT CASE WHEN i % 3 = 0 THEN '" B "' ELSE '" D "' END, i, 1, 1000 + i,"
                  " 'applied', i, (1000 + i) * 10, (1000 + i) * 10 + 1,"
                  " CASE WHEN i % 3 = 1 THEN 'deposit' ELSE 'transfer' END,"
                  " CASE WHEN i % 3 = 1 THEN NULL ELSE '" D "' END, 7 FROM n");
    link_history(raw, D);
    static struct lookup_stmt_row rows[LOOKUP_STATEMENT_MAX];
    uint64_t before = 0, expect = 21000;
    uint32_t n = 0, total = 0;
    do {
        /* asking for more than the maximum gets the maximum */
        CHECK_EQ_INT(lookup_statement(l, D, strlen(D), before, LOOKUP_STATEMENT_MAX + 1, rows, &n),
                     LOOKUP_FOUND);
        for (uint32_t i = 0; i < n; i++) {
            CHECK_EQ_INT(rows[i].txid, expect);
            CHECK_STR(rows[i].kind, expect % 3 == 2   ? "deposit"
                                    : expect % 3 == 1 ? "transfer_in"
                                                      : "transfer_out");
            expect--;
        }
        total += n;
        if (n > 0)
            before = rows[n - 1].txid;
    } while (n == LOOKUP_STATEMENT_MAX);
    CHECK_EQ_INT(total, 20000);
    finish(&t, l, raw);
}

/* Bytes this process has read from files so far (Linux: rchar counts every
 * read(2)/pread(2), served from the page cache or not, which is how SQLite's
 * unix VFS reads the database and the WAL). */
static int64_t bytes_read(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    CHECK(f != NULL);
    long long v = -1;
    char line[128];
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "rchar: %lld", &v) == 1)
            break;
    fclose(f);
    CHECK(v >= 0);
    return v;
}

#define HOT "9999 0000"
#define COLD "8888 0000"
#define PAGE_READ_MAX (256 * 1024)

/* A statement page reads the rows it lists, whatever the size of the table
 * or of the account's history: 100,000 rows (~10 MB), 30,000 of them
 * touching HOT (20,000 its own, 10,000 transfers to it, interleaved with
 * everyone else's), 24 of the oldest touching COLD. A scan of the table, or
 * of the account's rows to sort them, reads megabytes. Measured on a fresh
 * connection, so nothing is in SQLite's cache yet. */
TEST_SLOW(lookup_statement_page_reads_only_its_rows, 120)
{
    struct tmpdb t;
    sqlite3 *raw;
    struct lookup *l = make_lookup(&t, &raw);
    raw_exec(raw, "INSERT INTO users(card_number, balance) VALUES ('" HOT "', 0), ('" COLD "', 0);"
                  "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)"
                  " INSERT INTO transactions(card_number, amount, success, txid, status,"
                  " balance_after, queued_at, applied_at, kind, counterparty,"
                  " counterparty_balance_after)"
                  " SELECT CASE WHEN i % 5 = 0 THEN '" HOT "'"
                  "  WHEN i <= 30 AND i % 10 <> 1 THEN '" COLD "'"
                  "  ELSE printf('%04d 0000', i % 997) END,"
                  " i, 1, 1000 + i, 'applied', i, i, i,"
                  " CASE WHEN i % 10 = 1 THEN 'transfer' ELSE 'deposit' END,"
                  " CASE WHEN i % 10 = 1 THEN CASE WHEN i <= 30 THEN '" COLD "' ELSE '" HOT "' END"
                  " END, i FROM n");
    link_history(raw, HOT);
    link_history(raw, COLD);
    int log_frames = -1, ckpt = -1;
    CHECK(sqlite3_wal_checkpoint_v2(raw, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log_frames, &ckpt) ==
          SQLITE_OK);
    lookup_close(l);
    l = lookup_open(t.path, 2000);
    CHECK(l != NULL);

    static struct lookup_stmt_row rows[50];
    uint32_t n = 0;
    int64_t before = bytes_read();
    CHECK_EQ_INT(lookup_statement(l, HOT, strlen(HOT), 0, 50, rows, &n), LOOKUP_FOUND);
    int64_t newest = bytes_read() - before;
    CHECK_EQ_INT(n, 50);
    CHECK_EQ_INT(rows[0].txid, 101000);
    CHECK_STR(rows[0].kind, "deposit");
    /* three of every ten: i = 100000, 99995, 99991, 99990, ... */
    CHECK_STR(rows[2].kind, "transfer_in");
    CHECK_EQ_INT(rows[49].txid, 1000 + 99835);

    /* a page from the middle of the history */
    before = bytes_read();
    CHECK_EQ_INT(lookup_statement(l, HOT, strlen(HOT), 51000, 50, rows, &n), LOOKUP_FOUND);
    int64_t middle = bytes_read() - before;
    CHECK_EQ_INT(n, 50);
    CHECK_EQ_INT(rows[0].txid, 50995);

    /* an account whose few rows are the oldest */
    before = bytes_read();
    CHECK_EQ_INT(lookup_statement(l, COLD, strlen(COLD), 0, 50, rows, &n), LOOKUP_FOUND);
    int64_t cold = bytes_read() - before;
    CHECK_EQ_INT(n, 24);
    CHECK_EQ_INT(rows[0].txid, 1029);
    CHECK_EQ_INT(rows[23].txid, 1001);
    CHECK_STR(rows[23].kind, "transfer_in");

    if (newest > PAGE_READ_MAX || middle > PAGE_READ_MAX || cold > PAGE_READ_MAX)
        fprintf(stderr, "  pages read %lld, %lld and %lld bytes\n", (long long)newest,
                (long long)middle, (long long)cold);
    CHECK(newest <= PAGE_READ_MAX);
    CHECK(middle <= PAGE_READ_MAX);
    CHECK(cold <= PAGE_READ_MAX);
    finish(&t, l, raw);
}

/* ---- what the worker writes --------------------------------------------- */

struct want_line {
    uint64_t txid;
    const char *kind;
    int64_t amount;
    const char *status, *counterparty;
    int has_balance_after;
    int64_t balance_after;
};

static void check_lines(struct lookup *l, const char *card, const struct want_line *want,
                        uint32_t n_want)
{
    struct lookup_stmt_row rows[16];
    uint32_t n = 0;
    CHECK_EQ_INT(lookup_statement(l, card, strlen(card), 0, 16, rows, &n), LOOKUP_FOUND);
    CHECK_EQ_INT(n, n_want);
    for (uint32_t i = 0; i < n; i++) {
        CHECK_EQ_INT(rows[i].txid, want[i].txid);
        CHECK_STR(rows[i].kind, want[i].kind);
        CHECK_EQ_INT(rows[i].amount, want[i].amount);
        CHECK_STR(rows[i].status, want[i].status);
        CHECK_STR(rows[i].counterparty, want[i].counterparty);
        CHECK_EQ_INT(rows[i].has_balance_after, want[i].has_balance_after);
        if (want[i].has_balance_after)
            CHECK_EQ_INT(rows[i].balance_after, want[i].balance_after);
    }
}

#define P "7000 0000"
#define Z "7999 0000"
#define APPLIED_AT 1700000000000000LL

/* Requests of every kind applied by ledger_apply_batch, then read back. */
TEST(lookup_reads_statements_the_worker_wrote)
{
    struct tmpdb t;
    tmpdb_make(&t, "lookup");
    struct ledger_totals tot;
    CHECK(ledger_prepare(t.path, &tot) == 0);
    sqlite3 *raw;
    CHECK(sqlite3_open(t.path, &raw) == SQLITE_OK);
    raw_exec(raw, "INSERT INTO users(card_number, balance) VALUES ('" P "', 10)");
    CHECK(sqlite3_close(raw) == SQLITE_OK);

    struct txn_entry e[13];
    CHECK(txn_entry_make_open(&e[0], A, strlen(A), 100) == 0);
    CHECK(txn_entry_make_open(&e[1], B, strlen(B), 0) == 0);
    CHECK(txn_entry_make(&e[2], A, strlen(A), 50) == 0);
    CHECK(txn_entry_make_transfer(&e[3], A, strlen(A), B, strlen(B), 30) == 0);
    CHECK(txn_entry_make_transfer(&e[4], B, strlen(B), A, strlen(A), 5) == 0);
    CHECK(txn_entry_make_transfer(&e[5], A, strlen(A), A, strlen(A), 1) == 0);
    CHECK(txn_entry_make(&e[6], A, strlen(A), -1000) == 0);
    CHECK(txn_entry_make_transfer(&e[7], A, strlen(A), Z, strlen(Z), 1) == 0);
    CHECK(txn_entry_make(&e[8], Z, strlen(Z), 5) == 0);
    CHECK(txn_entry_make_open(&e[9], A, strlen(A), 7) == 0);
    CHECK(txn_entry_make(&e[10], A, strlen(A), 10) == 0);
    CHECK(txn_entry_set_key(&e[10], "k", 1) == 0);
    e[11] = e[10];
    CHECK(txn_entry_make(&e[12], P, strlen(P), -1) == 0);
    for (unsigned i = 0; i < 13; i++) {
        e[i].txid = i + 1;
        e[i].queued_at_us = APPLIED_AT - 1000;
    }
    struct ledger *w = ledger_open(t.path, SYNC_NORMAL);
    CHECK(w != NULL);
    struct ledger_outcome out[13];
    CHECK_EQ_INT(ledger_apply_batch(w, e, 13, APPLIED_AT, out), LEDGER_OK);
    ledger_close(w);

    struct lookup *l = lookup_open(t.path, 2000);
    CHECK(l != NULL);
    /* not listed: 9 (unknown account), 10 (A exists), 12 (duplicate) */
    static const struct want_line a[] = {
        { 11, "deposit", 10, "applied", "", 1, 135 },
        { 8, "transfer_out", -1, "rejected", Z, 0, 0 },
        { 7, "withdrawal", -1000, "insufficient_funds", "", 0, 0 },
        { 6, "transfer_out", -1, "rejected", A, 0, 0 },
        { 5, "transfer_in", 5, "applied", B, 1, 125 },
        { 4, "transfer_out", -30, "applied", B, 1, 120 },
        { 3, "deposit", 50, "applied", "", 1, 150 },
        { 1, "open", 100, "applied", "", 1, 100 },
    };
    check_lines(l, A, a, 8);
    static const struct want_line b[] = {
        { 5, "transfer_out", -5, "applied", A, 1, 25 },
        { 4, "transfer_in", 30, "applied", A, 1, 30 },
        { 2, "open", 0, "applied", "", 1, 0 },
    };
    check_lines(l, B, b, 3);
    static const struct want_line p[] = { { 13, "withdrawal", -1, "applied", "", 1, 9 } };
    check_lines(l, P, p, 1);

    static const struct counts want[] = {
        { A, 135, 2, 0, 1, 1, 3, 8 },
        { B, 25, 0, 0, 1, 1, 0, 3 },
        { P, 9, 0, 1, 0, 0, 0, 1 },
    };
    for (unsigned i = 0; i < 3; i++) {
        struct lookup_account acc;
        CHECK_EQ_INT(lookup_account(l, want[i].card, strlen(want[i].card), &acc), LOOKUP_FOUND);
        CHECK_EQ_INT(acc.balance, want[i].balance);
        CHECK_EQ_INT(acc.deposits, want[i].deposits);
        CHECK_EQ_INT(acc.withdrawals, want[i].withdrawals);
        CHECK_EQ_INT(acc.transfers_in, want[i].transfers_in);
        CHECK_EQ_INT(acc.transfers_out, want[i].transfers_out);
        CHECK_EQ_INT(acc.rejected, want[i].rejected);
        CHECK_EQ_INT(acc.total, want[i].total);
        /* opened through the API (A, B) or there before (P) */
        CHECK_EQ_INT(acc.has_created_at, i < 2);
        if (i < 2)
            CHECK_EQ_INT(acc.created_at_us, APPLIED_AT);
    }

    struct lookup_txn x;
    CHECK_EQ_INT(lookup_txn(l, 12, &x), LOOKUP_FOUND);
    CHECK_STR(x.status, "duplicate");
    CHECK_EQ_INT(x.original_txid, 11);
    CHECK_STR(x.key, "k");
    uint64_t txid = 0, fp = 0;
    CHECK_EQ_INT(lookup_key(l, "k", 1, &txid, &fp), LOOKUP_FOUND);
    CHECK_EQ_INT(txid, 11);
    CHECK(fp == txn_fingerprint(&e[10]));
    CHECK_EQ_INT(lookup_txn(l, 6, &x), LOOKUP_FOUND);
    CHECK_STR(x.reason, "same_account");
    CHECK_EQ_INT(lookup_txn(l, 9, &x), LOOKUP_FOUND);
    CHECK_STR(x.status, "unknown_account");
    lookup_close(l);
    tmpdb_remove(&t);
}
