/* Read-only ledger queries for the frontend. The connection is opened with
 * SQLITE_OPEN_READONLY so a bug here cannot change the system of record, and
 * the database is in WAL mode (set by the master), so these reads never block
 * the workers' commits. */
#include "lookup.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define LOOKUP_BUSY_TIMEOUT_MS 2000

/* Rows written before the status column existed carry only 'success'. */
static const char sql_txn[] =
    "SELECT card_number, amount,"
    " COALESCE(status, CASE success WHEN 1 THEN 'applied' ELSE 'rejected' END),"
    " balance_after, queued_at, applied_at"
    " FROM transactions WHERE txid = ?1";
static const char sql_balance[] = "SELECT balance FROM users WHERE card_number = ?1";

struct lookup {
    sqlite3 *db;
    sqlite3_stmt *txn;
    sqlite3_stmt *balance;
};

static int prepare(struct lookup *l, const char *sql, sqlite3_stmt **stmt)
{
    int rc = sqlite3_prepare_v3(l->db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL);
    if (rc != SQLITE_OK) {
        log_error("lookup: prepare \"%s\": %s", sql, sqlite3_errmsg(l->db));
        return -1;
    }
    return 0;
}

struct lookup *lookup_open(const char *db_path)
{
    struct lookup *l = calloc(1, sizeof *l);
    if (!l) {
        log_error("lookup: out of memory");
        return NULL;
    }
    int rc = sqlite3_open_v2(db_path, &l->db, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        log_error("lookup: open %s read-only: %s", db_path,
                  l->db ? sqlite3_errmsg(l->db) : sqlite3_errstr(rc));
        lookup_close(l);
        return NULL;
    }
    sqlite3_busy_timeout(l->db, LOOKUP_BUSY_TIMEOUT_MS);
    /* Preparing checks that the schema is there now, not at the first request. */
    if (prepare(l, sql_txn, &l->txn) != 0 || prepare(l, sql_balance, &l->balance) != 0) {
        lookup_close(l);
        return NULL;
    }
    return l;
}

void lookup_close(struct lookup *l)
{
    if (!l)
        return;
    sqlite3_finalize(l->txn);
    sqlite3_finalize(l->balance);
    if (sqlite3_close(l->db) != SQLITE_OK)
        log_warn("lookup: close: %s", sqlite3_errmsg(l->db));
    free(l);
}

/* Steps a bound statement once; resets it whatever happens so the read
 * transaction it holds ends and later reads see new commits. */
static enum lookup_result step_one(struct lookup *l, sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        return LOOKUP_FOUND;
    if (rc == SQLITE_DONE)
        return LOOKUP_NOT_FOUND;
    log_error("lookup: %s", sqlite3_errmsg(l->db));
    return LOOKUP_ERROR;
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

enum lookup_result lookup_txn(struct lookup *l, uint64_t txid, struct lookup_txn *out)
{
    sqlite3_stmt *s = l->txn;
    if (sqlite3_bind_int64(s, 1, (sqlite3_int64)txid) != SQLITE_OK) {
        log_error("lookup: bind txid: %s", sqlite3_errmsg(l->db));
        return LOOKUP_ERROR;
    }
    enum lookup_result r = step_one(l, s);
    if (r == LOOKUP_FOUND) {
        memset(out, 0, sizeof *out);
        copy_text(s, 0, out->card, sizeof out->card);
        out->amount = sqlite3_column_int64(s, 1);
        copy_text(s, 2, out->status, sizeof out->status);
        out->has_balance_after = column_int64(s, 3, &out->balance_after);
        out->has_queued_at = column_int64(s, 4, &out->queued_at_us);
        out->has_applied_at = column_int64(s, 5, &out->applied_at_us);
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return r;
}

enum lookup_result lookup_balance(struct lookup *l, const char *card, size_t card_len,
                                  int64_t *balance)
{
    sqlite3_stmt *s = l->balance;
    if (sqlite3_bind_text(s, 1, card, (int)card_len, SQLITE_TRANSIENT) != SQLITE_OK) {
        log_error("lookup: bind card: %s", sqlite3_errmsg(l->db));
        return LOOKUP_ERROR;
    }
    enum lookup_result r = step_one(l, s);
    if (r == LOOKUP_FOUND)
        *balance = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return r;
}
