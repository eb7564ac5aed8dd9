/* The SQLite backend's read side (struct lookup_ops in backend.h): one
 * connection opened with SQLITE_OPEN_READONLY so a bug here cannot change the
 * system of record. The database is in WAL mode (set by the master), so these
 * reads never block the workers' commits.
 *
 * Every statement is prepared once at open; the master has migrated the file
 * to the current schema before any frontend starts, so a missing column is a
 * start-up error, not a per-request one. Each query resets its statement
 * before returning, which ends its read transaction: later reads see later
 * commits and the WAL can be checkpointed. The statement walk over these
 * reads is backend-neutral (ledger/read.c). */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "ledger/backend.h"

#define LOOKUP_BUSY_TIMEOUT_MS 2000

/* Rows written before the status column existed carry only 'success', and
 * rows written before the kind column only the sign of amount. */
static const char sql_txn[] =
    "SELECT card_number, amount,"
    " COALESCE(status, CASE success WHEN 1 THEN 'applied' ELSE 'rejected' END),"
    " balance_after, queued_at, applied_at,"
    " COALESCE(kind, CASE WHEN amount < 0 THEN 'withdrawal' ELSE 'deposit' END),"
    " counterparty, counterparty_balance_after, reason, original_txid, idempotency_key,"
    " prev_txid, counterparty_prev_txid"
    " FROM transactions WHERE txid = ?1";
static const char sql_balance[] = "SELECT balance FROM users WHERE card_number = ?1";
static const char sql_key[] = "SELECT txid, fingerprint FROM idempotency_keys WHERE key = ?1";
static const char sql_account[] =
    "SELECT balance, opened_at, n_deposits, n_withdrawals, n_transfers_in, n_transfers_out,"
    " n_rejected, n_total FROM users WHERE card_number = ?1";
static const char sql_head[] = "SELECT last_txid FROM users WHERE card_number = ?1";

struct sqlite_reader {
    sqlite3 *db;
    sqlite3_stmt *txn;
    sqlite3_stmt *balance;
    sqlite3_stmt *key;
    sqlite3_stmt *account;
    sqlite3_stmt *head;
};

static int prepare(struct sqlite_reader *l, const char *sql, sqlite3_stmt **stmt)
{
    int rc = sqlite3_prepare_v3(l->db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL);
    if (rc != SQLITE_OK) {
        log_error("lookup: prepare \"%s\": %s", sql, sqlite3_errmsg(l->db));
        return -1;
    }
    return 0;
}

/* Steps a bound statement once. The caller then calls done() whatever
 * happened, so the read transaction it holds ends. */
static enum lookup_result step_one(struct sqlite_reader *l, sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        return LOOKUP_FOUND;
    if (rc == SQLITE_DONE)
        return LOOKUP_NOT_FOUND;
    log_error("lookup: %s", sqlite3_errmsg(l->db));
    return LOOKUP_ERROR;
}

static void done(sqlite3_stmt *stmt)
{
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
}

static int bind_text(struct sqlite_reader *l, sqlite3_stmt *s, const char *text, size_t len,
                     const char *what)
{
    if (len > INT32_MAX || sqlite3_bind_text(s, 1, text, (int)len, SQLITE_TRANSIENT) != SQLITE_OK) {
        log_error("lookup: bind %s: %s", what, sqlite3_errmsg(l->db));
        return -1;
    }
    return 0;
}

static void copy_text(sqlite3_stmt *stmt, int col, char *out, size_t cap)
{
    const unsigned char *text = sqlite3_column_text(stmt, col);
    snprintf(out, cap, "%s", text ? (const char *)text : "");
}

static int column_int64(sqlite3_stmt *stmt, int col, int64_t *out)
{
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
        return 0;
    *out = sqlite3_column_int64(stmt, col);
    return 1;
}

/* A txid column: 0 for NULL (no such row) and for values no txid can have. */
static uint64_t column_txid(sqlite3_stmt *stmt, int col)
{
    int64_t v = 0;
    return column_int64(stmt, col, &v) && v > 0 ? (uint64_t)v : 0;
}

static struct sqlite_reader *R(struct lookup *l)
{
    return l->impl;
}

static enum lookup_result sq_row(struct lookup *lk, uint64_t txid, struct lookup_txn *t,
                                 uint64_t *prev, uint64_t *counterparty_prev)
{
    struct sqlite_reader *l = R(lk);
    sqlite3_stmt *s = l->txn;
    if (txid > INT64_MAX)
        return LOOKUP_NOT_FOUND;
    if (sqlite3_bind_int64(s, 1, (sqlite3_int64)txid) != SQLITE_OK) {
        log_error("lookup: bind txid: %s", sqlite3_errmsg(l->db));
        return LOOKUP_ERROR;
    }
    enum lookup_result r = step_one(l, s);
    if (r == LOOKUP_FOUND) {
        memset(t, 0, sizeof *t);
        copy_text(s, 0, t->card, sizeof t->card);
        t->amount = sqlite3_column_int64(s, 1);
        copy_text(s, 2, t->status, sizeof t->status);
        t->has_balance_after = column_int64(s, 3, &t->balance_after);
        t->has_queued_at = column_int64(s, 4, &t->queued_at_us);
        t->has_applied_at = column_int64(s, 5, &t->applied_at_us);
        copy_text(s, 6, t->kind, sizeof t->kind);
        copy_text(s, 7, t->counterparty, sizeof t->counterparty);
        t->has_counterparty_balance_after = column_int64(s, 8, &t->counterparty_balance_after);
        copy_text(s, 9, t->reason, sizeof t->reason);
        t->original_txid = column_txid(s, 10);
        copy_text(s, 11, t->key, sizeof t->key);
        *prev = column_txid(s, 12);
        *counterparty_prev = column_txid(s, 13);
    }
    done(s);
    return r;
}

static enum lookup_result sq_balance(struct lookup *lk, const char *card, size_t card_len,
                                     int64_t *balance)
{
    struct sqlite_reader *l = R(lk);
    sqlite3_stmt *s = l->balance;
    if (bind_text(l, s, card, card_len, "card") != 0)
        return LOOKUP_ERROR;
    enum lookup_result r = step_one(l, s);
    if (r == LOOKUP_FOUND)
        *balance = sqlite3_column_int64(s, 0);
    done(s);
    return r;
}

static enum lookup_result sq_key(struct lookup *lk, const char *key, size_t len, uint64_t *txid,
                                 uint64_t *fingerprint)
{
    struct sqlite_reader *l = R(lk);
    sqlite3_stmt *s = l->key;
    if (bind_text(l, s, key, len, "idempotency key") != 0)
        return LOOKUP_ERROR;
    enum lookup_result r = step_one(l, s);
    if (r == LOOKUP_FOUND) {
        *txid = (uint64_t)sqlite3_column_int64(s, 0);
        /* Stored as the int64 with the same bits (SQLite has no uint64). */
        *fingerprint = (uint64_t)sqlite3_column_int64(s, 1);
    }
    done(s);
    return r;
}

static enum lookup_result sq_account(struct lookup *lk, const char *card, size_t card_len,
                                     struct lookup_account *out)
{
    struct sqlite_reader *l = R(lk);
    sqlite3_stmt *s = l->account;
    if (bind_text(l, s, card, card_len, "card") != 0)
        return LOOKUP_ERROR;
    enum lookup_result r = step_one(l, s);
    if (r == LOOKUP_FOUND) {
        out->balance = sqlite3_column_int64(s, 0);
        out->has_created_at = column_int64(s, 1, &out->created_at_us);
        out->deposits = sqlite3_column_int64(s, 2);
        out->withdrawals = sqlite3_column_int64(s, 3);
        out->transfers_in = sqlite3_column_int64(s, 4);
        out->transfers_out = sqlite3_column_int64(s, 5);
        out->rejected = sqlite3_column_int64(s, 6);
        out->total = sqlite3_column_int64(s, 7);
    }
    done(s);
    return r;
}

static enum lookup_result sq_head(struct lookup *lk, const char *card, size_t card_len,
                                  uint64_t *head)
{
    struct sqlite_reader *l = R(lk);
    sqlite3_stmt *s = l->head;
    *head = 0;
    if (bind_text(l, s, card, card_len, "card") != 0)
        return LOOKUP_ERROR;
    enum lookup_result r = step_one(l, s);
    if (r == LOOKUP_FOUND)
        *head = column_txid(s, 0);
    done(s);
    return r;
}

static void sq_close(struct lookup *lk)
{
    struct sqlite_reader *l = R(lk);
    if (l == NULL)
        return;
    sqlite3_finalize(l->txn);
    sqlite3_finalize(l->balance);
    sqlite3_finalize(l->key);
    sqlite3_finalize(l->account);
    sqlite3_finalize(l->head);
    if (sqlite3_close(l->db) != SQLITE_OK)
        log_warn("lookup: close: %s", sqlite3_errmsg(l->db));
    free(l);
    lk->impl = NULL;
}

static const struct lookup_ops sqlite_lookup_ops = {
    .row = sq_row,
    .balance = sq_balance,
    .key = sq_key,
    .account = sq_account,
    .head = sq_head,
    .close = sq_close,
};

int sqlite_lookup_open(struct lookup *lk, const char *db_path)
{
    struct sqlite_reader *l = calloc(1, sizeof *l);
    if (!l) {
        log_error("lookup: out of memory");
        return -1;
    }
    lk->ops = &sqlite_lookup_ops;
    lk->impl = l;
    int rc = sqlite3_open_v2(db_path, &l->db, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        log_error("lookup: open %s read-only: %s", db_path,
                  l->db ? sqlite3_errmsg(l->db) : sqlite3_errstr(rc));
        return -1;
    }
    sqlite3_busy_timeout(l->db, LOOKUP_BUSY_TIMEOUT_MS);
    /* Preparing checks that the schema is there now, not at the first request. */
    if (prepare(l, sql_txn, &l->txn) != 0 || prepare(l, sql_balance, &l->balance) != 0 ||
        prepare(l, sql_key, &l->key) != 0 || prepare(l, sql_account, &l->account) != 0 ||
        prepare(l, sql_head, &l->head) != 0)
        return -1;
    return 0;
}
