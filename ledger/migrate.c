/* txctl migrate: copies a SQLite ledger (txprocd's at any schema, or the
 * prototype's users.db) into an empty PostgreSQL ledger, so a bank can move
 * off one disk without losing a row or a statement link. The source is
 * brought to the current schema first (on a read-write open, as a start of
 * the server would do), then read in rowid order and written in chunks of
 * array parameters inside one PostgreSQL transaction: a failure half-way
 * leaves the target empty. Afterwards account count, balance sum and row
 * count of both sides must match, or the copy is rolled back. */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "ledger/pg_conn.h"
#include "ledger/sqlite_db.h"

#define MIGRATE_CHUNK 5000
#define MIGRATE_PROGRESS_EVERY 100000

struct copy {
    const char *what;
    const char *select;  /* from SQLite, in rowid order */
    const char *insert;  /* into PostgreSQL, from unnest of one array per column */
    const char *types;   /* one letter per column: t text, i int8, n int4 */
};

static const struct copy copies[] = {
    { "accounts",
      "SELECT card_number, balance, last_txid, opened_at, n_deposits, n_withdrawals, "
      "n_transfers_in, n_transfers_out, n_rejected, n_total FROM users ORDER BY rowid",
      "INSERT INTO users(card_number, balance, last_txid, opened_at, n_deposits, n_withdrawals, "
      "n_transfers_in, n_transfers_out, n_rejected, n_total) SELECT * FROM unnest($1::text[], "
      "$2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], "
      "$9::int8[], $10::int8[])",
      "tiiiiiiiii" },
    { "transactions",
      "SELECT id, card_number, amount, success, timestamp, txid, status, balance_after, "
      "queued_at, applied_at, kind, counterparty, counterparty_balance_after, reason, "
      "original_txid, idempotency_key, prev_txid, counterparty_prev_txid "
      "FROM transactions ORDER BY id",
      "INSERT INTO transactions(id, card_number, amount, success, timestamp, txid, status, "
      "balance_after, queued_at, applied_at, kind, counterparty, counterparty_balance_after, "
      "reason, original_txid, idempotency_key, prev_txid, counterparty_prev_txid) "
      "SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::int4[], $5::timestamp[], "
      "$6::int8[], $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::text[], $12::text[], "
      "$13::int8[], $14::text[], $15::int8[], $16::text[], $17::int8[], $18::int8[])",
      "itinsitiiittititii" },
    { "idempotency keys",
      "SELECT key, txid, fingerprint, created_at FROM idempotency_keys ORDER BY rowid",
      "INSERT INTO idempotency_keys(key, txid, fingerprint, created_at) "
      "SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[])",
      "tiii" },
};

#define MAX_COLS 18

static int flush(struct pgc *c, const struct copy *cp, struct pgarr *arr, int ncols)
{
    const char *values[MAX_COLS] = { 0 };
    for (int i = 0; i < ncols; i++) {
        values[i] = pgarr_end(&arr[i]);
        if (values[i] == NULL) {
            log_error("migrate: out of memory");
            return -1;
        }
    }
    PGresult *r = pgc_exec(c, cp->what, cp->insert, 0, ncols, values);
    if (r == NULL) {
        log_error("copying %s: %s", cp->what, c->error);
        return -1;
    }
    PQclear(r);
    for (int i = 0; i < ncols; i++)
        pgarr_begin(&arr[i]);
    return 0;
}

/* A value SQLite holds in a column PostgreSQL types strictly. A balance
 * that is not an integer cannot be carried over faithfully: refuse. */
static int put_value(struct pgarr *a, sqlite3_stmt *st, int col, char type, const char *what)
{
    int t = sqlite3_column_type(st, col);
    if (t == SQLITE_NULL) {
        pgarr_null(a);
        return 0;
    }
    if (type == 't' || type == 's') {
        const char *text = (const char *)sqlite3_column_text(st, col);
        pgarr_text(a, text ? text : "", (size_t)sqlite3_column_bytes(st, col));
        return 0;
    }
    if (t != SQLITE_INTEGER) {
        log_error("migrate: %s has a value that is not an integer in column %s (%s); fix it "
                  "in the source first", what, sqlite3_column_name(st, col),
                  (const char *)sqlite3_column_text(st, col));
        return -1;
    }
    pgarr_int(a, sqlite3_column_int64(st, col));
    return 0;
}

static int copy_table(sqlite3 *src, struct pgc *c, const struct copy *cp, int64_t total)
{
    int ncols = (int)strlen(cp->types);
    struct pgarr arr[MAX_COLS] = { { 0 } };
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(src, cp->select, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        log_error("migrate: reading %s: %s", cp->what, sqlite3_errmsg(src));
        return -1;
    }
    int ret = 0;
    int64_t n = 0, t0 = clock_mono_us();
    for (int i = 0; i < ncols; i++)
        pgarr_begin(&arr[i]);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < ncols && ret == 0; i++)
            ret = put_value(&arr[i], st, i, cp->types[i], cp->what);
        if (ret != 0)
            break;
        if (++n % MIGRATE_CHUNK == 0 && (ret = flush(c, cp, arr, ncols)) != 0)
            break;
        if (n % MIGRATE_PROGRESS_EVERY == 0)
            log_info("migrate: %s %" PRId64 "/%" PRId64 " (%.0f/s)", cp->what, n, total,
                     (double)n * 1e6 / (double)(clock_mono_us() - t0 + 1));
    }
    if (ret == 0 && rc != SQLITE_DONE) {
        log_error("migrate: reading %s: %s", cp->what, sqlite3_errmsg(src));
        ret = -1;
    }
    if (ret == 0 && n % MIGRATE_CHUNK != 0)
        ret = flush(c, cp, arr, ncols);
    sqlite3_finalize(st);
    for (int i = 0; i < ncols; i++)
        pgarr_free(&arr[i]);
    if (ret == 0)
        log_info("migrate: %" PRId64 " %s copied", n, cp->what);
    return ret;
}

static int pg_number(struct pgc *c, const char *sql, char *out, size_t cap)
{
    PGresult *r = pgc_exec(c, sql, sql, 0, 0, NULL);
    if (r == NULL || PQntuples(r) != 1) {
        log_error("migrate: %s", r == NULL ? c->error : "no row");
        PQclear(r);
        return -1;
    }
    snprintf(out, cap, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

static int sqlite_number(sqlite3 *db, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        snprintf(out, cap, "%s", sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0) : "0");
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK)
        log_error("migrate: %s: %s", sql, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Both sides hold the same ledger: counts and the exact balance sum. */
static int verify(sqlite3 *src, struct pgc *c)
{
    static const struct {
        const char *what, *sqlite, *pg;
    } checks[] = {
        { "accounts", "SELECT COUNT(*) FROM users", "SELECT COUNT(*) FROM users" },
        /* Exact in both: SQLite's SUM is int64 (an overflow fails the query,
         * it does not round); PostgreSQL's numeric. */
        { "balance sum", "SELECT COALESCE(SUM(balance), 0) FROM users",
          "SELECT COALESCE(SUM(balance::numeric), 0)::text FROM users" },
        { "transactions", "SELECT COUNT(*) FROM transactions", "SELECT COUNT(*) FROM transactions" },
        { "idempotency keys", "SELECT COUNT(*) FROM idempotency_keys",
          "SELECT COUNT(*) FROM idempotency_keys" },
        { "last txid", "SELECT COALESCE(MAX(txid), 0) FROM transactions",
          "SELECT COALESCE(MAX(txid), 0) FROM transactions" },
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        char a[64], b[64];
        if (sqlite_number(src, checks[i].sqlite, a, sizeof a) != 0 ||
            pg_number(c, checks[i].pg, b, sizeof b) != 0)
            return -1;
        if (strcmp(a, b) != 0) {
            log_error("migrate: %s differ after the copy: %s in the source, %s in the target; "
                      "rolled back", checks[i].what, a, b);
            return -1;
        }
        log_info("migrate: %s match: %s", checks[i].what, a);
    }
    return 0;
}

int ledger_migrate(const char *from, const char *to)
{
    if (ledger_backend_of(from) != LEDGER_SQLITE || ledger_backend_of(to) != LEDGER_POSTGRES) {
        log_error("migrate copies a SQLite ledger (--from PATH) into PostgreSQL (--to URI)");
        return -1;
    }
    struct ledger_totals src_totals, dst_totals;
    /* The source is migrated to the current schema in place (additive; the
     * prototype keeps working on it), so one SELECT per table reads it. */
    if (sqlite_ledger_prepare(from, &src_totals) != 0 || pg_ledger_prepare(to, &dst_totals) != 0)
        return -1;
    if (dst_totals.account_count > 0 || dst_totals.tx_count > 0) {
        char desc[256];
        pgc_describe(to, desc, sizeof desc);
        log_error("migrate: %s is not empty (%" PRId64 " accounts, %" PRId64 " transactions); "
                  "refusing to copy into it", desc, dst_totals.account_count, dst_totals.tx_count);
        return -1;
    }
    sqlite3 *src = ldb_open(from, 0);
    if (src == NULL)
        return -1;
    struct pgc *c = pgc_new(to, "txctl", 600000);
    int ret = -1;
    if (c == NULL) {
        log_error("migrate: out of memory");
        goto out;
    }
    if (pgc_ensure(c) != 0) {
        log_error("migrate: %s", c->error);
        goto out;
    }
    int64_t t0 = clock_mono_us();
    /* A read transaction on the source: one consistent snapshot. */
    if (ldb_exec(src, "BEGIN", "reading the source") != SQLITE_OK || pgc_run(c, "BEGIN", "BEGIN") != 0)
        goto out;
    int64_t totals[] = { src_totals.account_count, src_totals.tx_count, -1 };
    ret = 0;
    for (size_t i = 0; ret == 0 && i < sizeof copies / sizeof copies[0]; i++)
        ret = copy_table(src, c, &copies[i], totals[i]);
    /* ids were copied: the sequence continues after them. */
    if (ret == 0)
        ret = pgc_run(c, "continuing the id sequence",
                      "SELECT setval(pg_get_serial_sequence('transactions', 'id'), "
                      "GREATEST((SELECT COALESCE(MAX(id), 0) FROM transactions), 1))");
    if (ret == 0)
        ret = verify(src, c);
    if (ret == 0)
        ret = pgc_run(c, "COMMIT", "COMMIT");
    else
        PQclear(pgc_exec(c, "rollback", "ROLLBACK", 0, 0, NULL));
    ldb_rollback(src);
    if (ret == 0)
        log_info("migrate: done in %.1f s", (double)(clock_mono_us() - t0) / 1e6);
out:
    pgc_free(c);
    ldb_close(src);
    return ret;
}
