/* The SQLite backend's write operations (backend.h) for ledger/batch.c:
 * one BEGIN IMMEDIATE ... COMMIT per batch, the book read by primary key
 * and written back by rowid, and the batch's rows inserted
 * LEDGER_RECORD_CHUNK per INSERT statement, in batch order (so ids still
 * follow txids). Each INSERT statement costs a read and a write of
 * sqlite_sequence (transactions.id is AUTOINCREMENT) and a VDBE run, so one
 * per 32 rows instead of one per row is most of what separates this path
 * from a naive SELECT/UPDATE/INSERT.
 *
 * Why not one "UPDATE ... RETURNING balance" per entry: SQLite (3.40 here)
 * runs RETURNING through an ephemeral table that it allocates and frees on
 * every execution (~64 KiB, two brk() calls each time); with it the worker
 * applied 69,000 transactions/s where SELECT + UPDATE by rowid does more than
 * twice that (tools/bench/sqlite_ceiling, README performance section).
 *
 * ERRORS
 *   Lock, I/O and space errors are LB_RETRY (the caller rolls back and
 *   retries the same batch later); a missing table, a constraint or misuse
 *   is LB_FATAL. The connection holds the write lock from BEGIN IMMEDIATE
 *   on, so nothing changes between reading the book and writing it. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "ledger/backend.h"
#include "ledger/sqlite.h"
#include "ledger/sqlite_db.h"

#define LEDGER_BUSY_TIMEOUT_MS 5000

enum stmt_id {
    ST_BEGIN, ST_COMMIT, ST_RECORDED, ST_ACCOUNT, ST_SETTLE, ST_OPEN, ST_KEY_CLAIM,
    ST_KEY_GET, ST_PRUNE, ST_RECORD, ST_RECORD_CHUNK, ST__COUNT
};

static const struct {
    const char *name; /* for error messages */
    const char *sql;  /* NULL: built by prepare_all */
} stmts[ST__COUNT] = {
    [ST_BEGIN] = { "begin", "BEGIN IMMEDIATE" },
    [ST_COMMIT] = { "commit", "COMMIT" },
    [ST_RECORDED] = { "replay check",
                      "SELECT card_number, amount FROM transactions WHERE txid = ?1" },
    [ST_ACCOUNT] = { "balance read", LEDGER_SQL_ACCOUNT },
    [ST_SETTLE] = { "balance update", LEDGER_SQL_SETTLE },
    [ST_OPEN] = { "account opening",
                  "INSERT INTO users(card_number, balance, last_txid, opened_at, n_deposits, "
                  "n_withdrawals, n_transfers_in, n_transfers_out, n_rejected, n_total) "
                  "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)" },
    [ST_KEY_CLAIM] = { "idempotency key claim",
                       "INSERT INTO idempotency_keys(key, txid, fingerprint, created_at) "
                       "VALUES(?1, ?2, ?3, ?4) ON CONFLICT(key) DO NOTHING" },
    [ST_KEY_GET] = { "idempotency key read",
                     "SELECT txid, fingerprint FROM idempotency_keys WHERE key = ?1" },
    [ST_PRUNE] = { "idempotency key pruning",
                   "DELETE FROM idempotency_keys WHERE rowid IN (SELECT rowid FROM "
                   "idempotency_keys WHERE created_at < ?1 LIMIT ?2)" },
    [ST_RECORD] = { "record", NULL },
    [ST_RECORD_CHUNK] = { "record", NULL },
};

struct sqlite_writer {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    char *last_error; /* the ledger's */
    size_t last_error_cap;
};

static struct sqlite_writer *W(struct ledger *l)
{
    return l->impl;
}

int ledger_sql_record(char *buf, size_t cap, unsigned rows)
{
    static const char head[] = "INSERT INTO transactions(card_number, amount, success, txid, "
                               "status, balance_after, queued_at, applied_at, kind, counterparty, "
                               "counterparty_balance_after, reason, original_txid, "
                               "idempotency_key, prev_txid, counterparty_prev_txid) VALUES";
    static const char tuple[] = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    static const char tail[] = " ON CONFLICT(txid) DO NOTHING";
    if (rows == 0 || cap < sizeof head + rows * sizeof tuple + sizeof tail)
        return -1;
    char *p = buf;
    memcpy(p, head, sizeof head - 1);
    p += sizeof head - 1;
    for (unsigned i = 0; i < rows; i++) {
        if (i > 0)
            *p++ = ',';
        memcpy(p, tuple, sizeof tuple - 1);
        p += sizeof tuple - 1;
    }
    memcpy(p, tail, sizeof tail); /* with its NUL */
    return 0;
}

/* Saves the failure at the moment it happens: a later ROLLBACK replaces
 * sqlite3_errmsg. */
static int note_error(struct sqlite_writer *l, int rc, enum stmt_id id)
{
    snprintf(l->last_error, l->last_error_cap, "%s: %s (%s)", ldb_code_name(rc),
             sqlite3_errmsg(l->db), stmts[id].name);
    return rc;
}

/* The first row's first two columns of a statement run by run(). */
struct row {
    int present;
    int64_t value[2];
};

/* Steps statement id to completion, keeping columns 0-1 of the first row if
 * row is given, and resets it for the next use. Returns SQLITE_OK or the
 * failing code. */
static int run(struct sqlite_writer *l, enum stmt_id id, struct row *row)
{
    sqlite3_stmt *st = l->st[id];
    int rc;
    if (row != NULL)
        row->present = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (row != NULL && !row->present) {
            row->present = 1;
            row->value[0] = sqlite3_column_int64(st, 0);
            row->value[1] = sqlite3_column_count(st) > 1 ? sqlite3_column_int64(st, 1) : 0;
        }
    }
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    else
        note_error(l, rc, id);
    /* reset repeats the step's error code, already taken above;
     * clear_bindings cannot fail. */
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

/* Binding only fails on misuse (wrong index) or out of memory. */
static int bind_failed(struct sqlite_writer *l, int rc, enum stmt_id id)
{
    note_error(l, rc, id);
    sqlite3_reset(l->st[id]);
    sqlite3_clear_bindings(l->st[id]);
    return rc;
}

/* SQLite result code to the batch driver's. */
static enum lb_rc lb(int rc)
{
    if (rc == SQLITE_OK)
        return LB_OK;
    return ldb_transient(rc) ? LB_RETRY : LB_FATAL;
}

static enum lb_rc sq_begin(struct ledger *l)
{
    return lb(run(W(l), ST_BEGIN, NULL));
}

static enum lb_rc sq_commit(struct ledger *l)
{
    return lb(run(W(l), ST_COMMIT, NULL));
}

static int sq_rollback(struct ledger *l)
{
    return ldb_rollback(W(l)->db);
}

static enum lb_rc sq_recorded(struct ledger *l, const struct txn_entry *const *entries, uint32_t n,
                              uint8_t *found)
{
    struct sqlite_writer *w = W(l);
    sqlite3_stmt *st = w->st[ST_RECORDED];
    for (uint32_t i = 0; i < n; i++) {
        int rc = sqlite3_bind_int64(st, 1, (int64_t)entries[i]->txid);
        if (rc != SQLITE_OK)
            return lb(bind_failed(w, rc, ST_RECORDED));
        found[i] = RECORDED_NO;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const char *card = (const char *)sqlite3_column_text(st, 0);
            size_t len = (size_t)sqlite3_column_bytes(st, 0);
            found[i] = ledger_row_is_entry(entries[i], card, len, sqlite3_column_int64(st, 1))
                           ? RECORDED_SAME : RECORDED_OTHER;
            rc = SQLITE_DONE; /* txid is UNIQUE: one row at most */
        }
        if (rc != SQLITE_DONE)
            note_error(w, rc, ST_RECORDED);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            return lb(rc);
    }
    return LB_OK;
}

static enum lb_rc sq_claim_keys(struct ledger *l, struct ledger_key_claim *c, uint32_t n,
                                int64_t now_us)
{
    struct sqlite_writer *w = W(l);
    for (uint32_t i = 0; i < n; i++) {
        sqlite3_stmt *st = w->st[ST_KEY_CLAIM];
        int rc = sqlite3_bind_text(st, 1, c[i].key, c[i].key_len, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 2, (int64_t)c[i].txid);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 3, (int64_t)c[i].fingerprint);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 4, now_us);
        if (rc != SQLITE_OK)
            return lb(bind_failed(w, rc, ST_KEY_CLAIM));
        rc = run(w, ST_KEY_CLAIM, NULL);
        if (rc != SQLITE_OK)
            return lb(rc);
        if (sqlite3_changes(w->db) == 1) {
            c[i].owner_txid = c[i].txid;
            c[i].owner_fingerprint = c[i].fingerprint;
            continue;
        }
        struct row first;
        rc = sqlite3_bind_text(w->st[ST_KEY_GET], 1, c[i].key, c[i].key_len, SQLITE_STATIC);
        if (rc != SQLITE_OK)
            return lb(bind_failed(w, rc, ST_KEY_GET));
        rc = run(w, ST_KEY_GET, &first);
        if (rc != SQLITE_OK)
            return lb(rc);
        if (!first.present) { /* inserted nothing, yet not there: a bug, not a state */
            snprintf(w->last_error, w->last_error_cap, "idempotency key neither new nor recorded");
            return LB_FATAL;
        }
        c[i].owner_txid = (uint64_t)first.value[0];
        c[i].owner_fingerprint = (uint64_t)first.value[1];
    }
    return LB_OK;
}

static enum lb_rc sq_load(struct ledger *l, struct rules_book *b)
{
    struct sqlite_writer *w = W(l);
    sqlite3_stmt *st = w->st[ST_ACCOUNT];
    for (uint32_t i = 0; i < b->n; i++) {
        struct rules_account *a = &b->accounts[i];
        int rc = sqlite3_bind_text(st, 1, a->card, a->card_len, SQLITE_STATIC);
        if (rc != SQLITE_OK)
            return lb(bind_failed(w, rc, ST_ACCOUNT));
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            a->found = 1;
            a->rowid = sqlite3_column_int64(st, 0);
            a->integer = sqlite3_column_type(st, 1) == SQLITE_INTEGER;
            a->balance = sqlite3_column_int64(st, 1);
            a->last_txid = (uint64_t)sqlite3_column_int64(st, 2); /* NULL reads as 0 */
            rc = SQLITE_DONE; /* card_number is the primary key: one row at most */
        }
        if (rc != SQLITE_DONE)
            note_error(w, rc, ST_ACCOUNT);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            return lb(rc);
    }
    return LB_OK;
}

/* One dirty account: an UPDATE by rowid, or the INSERT of an opening. */
static int write_account(struct sqlite_writer *w, const struct rules_account *a)
{
    enum stmt_id id = a->created ? ST_OPEN : ST_SETTLE;
    sqlite3_stmt *st = w->st[id];
    int p = 1, rc = SQLITE_OK;
    if (a->created)
        rc = sqlite3_bind_text(st, p++, a->card, a->card_len, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, p++, a->balance);
    if (rc == SQLITE_OK)
        rc = a->last_txid != 0 ? sqlite3_bind_int64(st, p++, (int64_t)a->last_txid)
                               : sqlite3_bind_null(st, p++);
    if (rc == SQLITE_OK && a->created)
        rc = sqlite3_bind_int64(st, p++, a->opened_at_us);
    static const enum rules_count order[] = { RULES_DEPOSIT, RULES_WITHDRAWAL,
                                              RULES_TRANSFER_IN, RULES_TRANSFER_OUT,
                                              RULES_REFUSED, RULES_TOTAL };
    for (size_t k = 0; rc == SQLITE_OK && k < sizeof order / sizeof order[0]; k++)
        rc = sqlite3_bind_int64(st, p++, a->counts[order[k]]);
    if (rc == SQLITE_OK && !a->created)
        rc = sqlite3_bind_int64(st, p++, a->rowid);
    if (rc != SQLITE_OK)
        return bind_failed(w, rc, id);
    return run(w, id, NULL);
}

/* Binds one transactions row at parameters base+1 .. base+LEDGER_RECORD_PARAMS. */
static int bind_record(sqlite3_stmt *st, int base, const struct txn_entry *e, enum row_kind row,
                       const struct ledger_outcome *out, int64_t applied_at_us)
{
    int applied = out->status == TXN_STATUS_APPLIED, full = row == ROW_FULL;
    int transfer = full && e->kind == TXN_KIND_TRANSFER;
    int rc = row != ROW_NO_CARD ? sqlite3_bind_text(st, base + 1, e->card, e->card_len, SQLITE_STATIC)
                                : sqlite3_bind_null(st, base + 1);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, base + 2, e->amount);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, base + 3, applied);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, base + 4, (int64_t)e->txid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, base + 5, txn_status_name(out->status), -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = applied ? sqlite3_bind_int64(st, base + 6, out->balance_after)
                     : sqlite3_bind_null(st, base + 6);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, base + 7, e->queued_at_us);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, base + 8, applied_at_us);
    if (rc == SQLITE_OK)
        rc = full ? sqlite3_bind_text(st, base + 9, txn_kind_name(e), -1, SQLITE_STATIC)
                  : sqlite3_bind_null(st, base + 9);
    if (rc == SQLITE_OK)
        rc = transfer ? sqlite3_bind_text(st, base + 10, e->card2, e->card2_len, SQLITE_STATIC)
                      : sqlite3_bind_null(st, base + 10);
    if (rc == SQLITE_OK)
        rc = transfer && applied ? sqlite3_bind_int64(st, base + 11, out->counterparty_balance)
                                 : sqlite3_bind_null(st, base + 11);
    if (rc == SQLITE_OK)
        rc = out->reason != TXN_REASON_NONE
                 ? sqlite3_bind_text(st, base + 12, txn_reason_name(out->reason), -1, SQLITE_STATIC)
                 : sqlite3_bind_null(st, base + 12);
    if (rc == SQLITE_OK)
        rc = out->original_txid != 0 ? sqlite3_bind_int64(st, base + 13, (int64_t)out->original_txid)
                                     : sqlite3_bind_null(st, base + 13);
    if (rc == SQLITE_OK)
        rc = full && e->key_len > 0
                 ? sqlite3_bind_text(st, base + 14, e->key, e->key_len, SQLITE_STATIC)
                 : sqlite3_bind_null(st, base + 14);
    if (rc == SQLITE_OK)
        rc = out->prev_txid != 0 ? sqlite3_bind_int64(st, base + 15, (int64_t)out->prev_txid)
                                 : sqlite3_bind_null(st, base + 15);
    if (rc == SQLITE_OK)
        rc = out->counterparty_prev_txid != 0
                 ? sqlite3_bind_int64(st, base + 16, (int64_t)out->counterparty_prev_txid)
                 : sqlite3_bind_null(st, base + 16);
    return rc;
}

/* The rows in chunks. Returns SQLITE_OK, an SQLite error, or -1 when a
 * chunk found a txid already recorded. */
static int record_all(struct sqlite_writer *w, const struct txn_entry *batch, const uint8_t *rows,
                      const struct ledger_outcome *outcomes, uint32_t n, int64_t applied_at_us)
{
    uint32_t left = 0, in_chunk = 0;
    for (uint32_t i = 0; i < n; i++)
        left += rows[i] != ROW_NONE;
    for (uint32_t i = 0; i < n; i++) {
        if (rows[i] == ROW_NONE)
            continue;
        enum stmt_id id = in_chunk > 0 || left >= LEDGER_RECORD_CHUNK ? ST_RECORD_CHUNK : ST_RECORD;
        int rc = bind_record(w->st[id], (int)(in_chunk * LEDGER_RECORD_PARAMS), &batch[i],
                             (enum row_kind)rows[i], &outcomes[i], applied_at_us);
        if (rc != SQLITE_OK)
            return bind_failed(w, rc, id);
        unsigned nrows = 1;
        if (id == ST_RECORD_CHUNK) {
            if (++in_chunk < LEDGER_RECORD_CHUNK)
                continue;
            nrows = in_chunk;
            in_chunk = 0;
        }
        rc = run(w, id, NULL);
        if (rc == SQLITE_OK && sqlite3_changes(w->db) != (int)nrows)
            return -1;
        left -= nrows;
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static enum lb_rc sq_write(struct ledger *l, const struct rules_book *b,
                           const struct txn_entry *batch, const uint8_t *rows,
                           const struct ledger_outcome *out, uint32_t n, int64_t applied_at_us)
{
    struct sqlite_writer *w = W(l);
    for (uint32_t i = 0; i < b->n; i++) {
        if (!b->accounts[i].dirty)
            continue;
        int rc = write_account(w, &b->accounts[i]);
        if (rc != SQLITE_OK)
            return lb(rc);
    }
    int rc = record_all(w, batch, rows, out, n, applied_at_us);
    return rc == -1 ? LB_RECORDED : lb(rc);
}

static enum lb_rc sq_prune(struct ledger *l, int64_t older_than_us, unsigned max,
                           unsigned *deleted)
{
    struct sqlite_writer *w = W(l);
    sqlite3_stmt *st = w->st[ST_PRUNE];
    int rc = sqlite3_bind_int64(st, 1, older_than_us);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, max);
    if (rc != SQLITE_OK) {
        bind_failed(w, rc, ST_PRUNE);
        return LB_FATAL;
    }
    rc = run(w, ST_PRUNE, NULL); /* one statement in autocommit: its own transaction */
    if (rc != SQLITE_OK)
        return lb(rc);
    *deleted = (unsigned)sqlite3_changes(w->db);
    return LB_OK;
}

static int sq_set_lock_timeout(struct ledger *l, int ms)
{
    int rc = sqlite3_busy_timeout(W(l)->db, ms);
    if (rc != SQLITE_OK) {
        log_error("sqlite3_busy_timeout: %s", sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}

static void sq_close(struct ledger *l)
{
    struct sqlite_writer *w = W(l);
    if (w == NULL)
        return;
    /* finalize returns the statement's last error, already handled. */
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(w->st[i]);
    ldb_close(w->db);
    free(w);
    l->impl = NULL;
}

const struct ledger_ops sqlite_ledger_ops = {
    .name = "sqlite",
    .begin = sq_begin,
    .recorded = sq_recorded,
    .claim_keys = sq_claim_keys,
    .load = sq_load,
    .write = sq_write,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .prune = sq_prune,
    .set_lock_timeout = sq_set_lock_timeout,
    .close = sq_close,
};

/* Per-connection settings; the schema must already be current
 * (ledger_prepare runs before any worker starts). */
static int configure(struct ledger *l, const char *db_path, enum sync_mode sync)
{
    int64_t version = -1;
    if (ledger_set_busy_timeout(l, LEDGER_BUSY_TIMEOUT_MS) != 0 || ldb_enable_wal(W(l)->db) != 0)
        return -1;
    if (ldb_exec(W(l)->db, sync == SYNC_FULL ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                 "PRAGMA synchronous") != SQLITE_OK ||
        ldb_exec(W(l)->db, LEDGER_PRAGMAS, "worker PRAGMAs") != SQLITE_OK ||
        ldb_query_int64(W(l)->db, "PRAGMA user_version", &version) != SQLITE_OK)
        return -1;
    if (version != LEDGER_SCHEMA_VERSION) {
        log_error("%s has schema version %lld, this build needs %d", db_path, (long long)version,
                  LEDGER_SCHEMA_VERSION);
        return -1;
    }
    return 0;
}

static int prepare_all(struct sqlite_writer *w)
{
    char one[1024], chunk[1024 + LEDGER_RECORD_CHUNK * 40];
    if (ledger_sql_record(one, sizeof one, 1) != 0 ||
        ledger_sql_record(chunk, sizeof chunk, LEDGER_RECORD_CHUNK) != 0) {
        log_error("ledger: INSERT statement text does not fit"); /* a bug: sizes are fixed */
        return -1;
    }
    for (int i = 0; i < ST__COUNT; i++) {
        const char *sql = i == ST_RECORD ? one : i == ST_RECORD_CHUNK ? chunk : stmts[i].sql;
        int rc = sqlite3_prepare_v3(w->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &w->st[i], NULL);
        if (rc != SQLITE_OK) {
            log_error("preparing the %s statement: %s", stmts[i].name, sqlite3_errmsg(w->db));
            return -1;
        }
    }
    return 0;
}

int sqlite_ledger_open(struct ledger *l, const char *db_path, enum sync_mode sync)
{
    struct sqlite_writer *w = calloc(1, sizeof *w);
    if (w == NULL) {
        log_error("ledger_open: out of memory");
        return -1;
    }
    w->last_error = l->last_error;
    w->last_error_cap = sizeof l->last_error;
    l->ops = &sqlite_ledger_ops;
    l->impl = w;
    w->db = ldb_open(db_path, 0);
    if (w->db == NULL || configure(l, db_path, sync) != 0 || prepare_all(w) != 0)
        return -1;
    return 0;
}
