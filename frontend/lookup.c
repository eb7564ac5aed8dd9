/* Read-only ledger queries for the frontend. The connection is opened with
 * SQLITE_OPEN_READONLY so a bug here cannot change the system of record, and
 * the database is in WAL mode (set by the master), so these reads never block
 * the workers' commits.
 *
 * Every statement is prepared once at open; the master has migrated the file
 * to schema 2 before any frontend starts, so a missing column is a start-up
 * error, not a per-request one. Each query resets its statement before
 * returning, which ends its read transaction: later reads see later commits
 * and the WAL can be checkpointed.
 *
 * STATEMENTS (schema 2, STATEMENTS in worker/ledger.h)
 *   transactions has no index by account (it would cost the workers most of
 *   their throughput). Instead users.last_txid names an account's newest row
 *   and every row links to the row before it in the statement of each
 *   account it touched: prev_txid for card_number's (a transfer's "from"),
 *   counterparty_prev_txid for counterparty's (its "to"). A statement page
 *   is a walk down that chain, one lookup by txid (the unique index) per row
 *   listed: its cost is the page size, whatever the history or table size.
 *   Which link to follow depends on which side of the row the account is; a
 *   transfer to oneself is refused and linked once, on the card_number side,
 *   so that side is checked first. Links never change once committed and a
 *   head only moves to newer rows, so a walk spread over several read
 *   transactions still lists one consistent history.
 *   The worker decides what is linked (rows of an existing account, applied
 *   or refused) and keeps the counts (users.n_*); this file only reads. */
#include "lookup.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

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

struct lookup {
    sqlite3 *db;
    sqlite3_stmt *txn;
    sqlite3_stmt *balance;
    sqlite3_stmt *key;
    sqlite3_stmt *account;
    sqlite3_stmt *head;
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
    if (prepare(l, sql_txn, &l->txn) != 0 || prepare(l, sql_balance, &l->balance) != 0 ||
        prepare(l, sql_key, &l->key) != 0 || prepare(l, sql_account, &l->account) != 0 ||
        prepare(l, sql_head, &l->head) != 0) {
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
    sqlite3_finalize(l->key);
    sqlite3_finalize(l->account);
    sqlite3_finalize(l->head);
    if (sqlite3_close(l->db) != SQLITE_OK)
        log_warn("lookup: close: %s", sqlite3_errmsg(l->db));
    free(l);
}

/* Steps a bound statement once. The caller then calls done() whatever
 * happened, so the read transaction it holds ends. */
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

static void done(sqlite3_stmt *stmt)
{
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
}

static int bind_text(struct lookup *l, sqlite3_stmt *s, const char *text, size_t len,
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

/* A transactions row with its statement links. */
struct chain_row {
    struct lookup_txn t;
    uint64_t prev;              /* previous row of card_number's statement */
    uint64_t counterparty_prev; /* previous row of counterparty's statement */
};

static enum lookup_result read_row(struct lookup *l, uint64_t txid, struct chain_row *out)
{
    sqlite3_stmt *s = l->txn;
    if (txid > INT64_MAX)
        return LOOKUP_NOT_FOUND;
    if (sqlite3_bind_int64(s, 1, (sqlite3_int64)txid) != SQLITE_OK) {
        log_error("lookup: bind txid: %s", sqlite3_errmsg(l->db));
        return LOOKUP_ERROR;
    }
    enum lookup_result r = step_one(l, s);
    if (r == LOOKUP_FOUND) {
        struct lookup_txn *t = &out->t;
        memset(out, 0, sizeof *out);
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
        out->prev = column_txid(s, 12);
        out->counterparty_prev = column_txid(s, 13);
    }
    done(s);
    return r;
}

enum lookup_result lookup_txn(struct lookup *l, uint64_t txid, struct lookup_txn *out)
{
    struct chain_row row;
    enum lookup_result r = read_row(l, txid, &row);
    if (r == LOOKUP_FOUND)
        *out = row.t;
    return r;
}

enum lookup_result lookup_balance(struct lookup *l, const char *card, size_t card_len,
                                  int64_t *balance)
{
    sqlite3_stmt *s = l->balance;
    if (bind_text(l, s, card, card_len, "card") != 0)
        return LOOKUP_ERROR;
    enum lookup_result r = step_one(l, s);
    if (r == LOOKUP_FOUND)
        *balance = sqlite3_column_int64(s, 0);
    done(s);
    return r;
}

enum lookup_result lookup_key(struct lookup *l, const char *key, size_t len, uint64_t *txid,
                              uint64_t *fingerprint)
{
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

enum lookup_result lookup_account(struct lookup *l, const char *card, size_t card_len,
                                  struct lookup_account *out)
{
    sqlite3_stmt *s = l->account;
    if (bind_text(l, s, card, card_len, "card") != 0)
        return LOOKUP_ERROR;
    enum lookup_result r = step_one(l, s);
    if (r == LOOKUP_FOUND) {
        memset(out, 0, sizeof *out);
        memcpy(out->card, card, card_len < TXN_CARD_MAX ? card_len : TXN_CARD_MAX);
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

static int same_card(const char *stored, const char *card, size_t card_len)
{
    return strlen(stored) == card_len && memcmp(stored, card, card_len) == 0;
}

/* The account's side of a row: 1 card_number (checked first: a transfer to
 * oneself is linked there only), 0 counterparty, -1 neither. */
static int side_of(const struct chain_row *r, const char *card, size_t card_len)
{
    if (same_card(r->t.card, card, card_len))
        return 1;
    if (same_card(r->t.counterparty, card, card_len))
        return 0;
    return -1;
}

/* The link to follow from r in the account's statement. */
static uint64_t next_of(const struct chain_row *r, int own)
{
    return own ? r->prev : r->counterparty_prev;
}

/* r as the statement of the account on side own shows it. */
static void to_stmt_row(const struct chain_row *r, uint64_t txid, int own,
                        struct lookup_stmt_row *row)
{
    const struct lookup_txn *t = &r->t;
    int transfer = strcmp(t->kind, "transfer") == 0;
    int applied = strcmp(t->status, "applied") == 0;
    memset(row, 0, sizeof *row);
    row->txid = txid;
    if (!own) {
        snprintf(row->kind, sizeof row->kind, "transfer_in");
        row->amount = t->amount;
        snprintf(row->counterparty, sizeof row->counterparty, "%s", t->card);
        row->has_balance_after = applied && t->has_counterparty_balance_after;
        row->balance_after = t->counterparty_balance_after;
    } else {
        snprintf(row->kind, sizeof row->kind, "%s", transfer ? "transfer_out" : t->kind);
        /* |amount| <= TXN_AMOUNT_LIMIT: the negation cannot overflow */
        row->amount = transfer ? -t->amount : t->amount;
        snprintf(row->counterparty, sizeof row->counterparty, "%s", t->counterparty);
        row->has_balance_after = applied && t->has_balance_after;
        row->balance_after = t->balance_after;
    }
    if (!row->has_balance_after)
        row->balance_after = 0;
    snprintf(row->status, sizeof row->status, "%s", t->status);
    snprintf(row->reason, sizeof row->reason, "%s", t->reason);
    row->has_queued_at = t->has_queued_at;
    row->queued_at_us = t->queued_at_us;
    row->has_applied_at = t->has_applied_at;
    row->applied_at_us = t->applied_at_us;
}

/* Where a page starts: the account's newest row, or the row before
 * before_txid in its statement. *start is 0 when there is nothing to list. */
static enum lookup_result page_start(struct lookup *l, const char *card, size_t card_len,
                                     uint64_t before_txid, uint64_t *start)
{
    *start = 0;
    if (before_txid == 0) {
        sqlite3_stmt *s = l->head;
        if (bind_text(l, s, card, card_len, "card") != 0)
            return LOOKUP_ERROR;
        enum lookup_result r = step_one(l, s);
        if (r == LOOKUP_FOUND)
            *start = column_txid(s, 0);
        done(s);
        /* an unknown account has no rows: the caller checks existence */
        return r == LOOKUP_ERROR ? LOOKUP_ERROR : LOOKUP_FOUND;
    }
    struct chain_row row;
    enum lookup_result r = read_row(l, before_txid, &row);
    if (r != LOOKUP_FOUND)
        return r;
    int own = side_of(&row, card, card_len);
    if (own < 0)
        return LOOKUP_NOT_FOUND; /* another account's row: not a position here */
    *start = next_of(&row, own);
    return LOOKUP_FOUND;
}

enum lookup_result lookup_statement(struct lookup *l, const char *card, size_t card_len,
                                    uint64_t before_txid, uint32_t limit,
                                    struct lookup_stmt_row *rows, uint32_t *n)
{
    *n = 0;
    if (limit > LOOKUP_STATEMENT_MAX)
        limit = LOOKUP_STATEMENT_MAX;
    uint64_t txid = 0;
    enum lookup_result r = page_start(l, card, card_len, before_txid, &txid);
    if (r != LOOKUP_FOUND)
        return r;
    while (txid != 0 && *n < limit) {
        struct chain_row row;
        r = read_row(l, txid, &row);
        if (r == LOOKUP_ERROR) {
            *n = 0;
            return LOOKUP_ERROR;
        }
        int own = r == LOOKUP_FOUND ? side_of(&row, card, card_len) : -1;
        if (own < 0) {
            /* The workers write both ends of every link in one transaction:
             * a dangling one is damage to report, not a reason to fail the
             * rows already found. */
            log_error("lookup: statement of %.*s: txid %" PRIu64 " is %s", (int)card_len, card,
                      txid, r == LOOKUP_FOUND ? "another account's row" : "not in the ledger");
            break;
        }
        to_stmt_row(&row, txid, own, &rows[(*n)++]);
        uint64_t next = next_of(&row, own);
        if (next == txid) {
            log_error("lookup: statement of %.*s: txid %" PRIu64 " links to itself",
                      (int)card_len, card, txid);
            break;
        }
        txid = next;
    }
    return LOOKUP_FOUND;
}
