/* The worker's write path: applies a claimed batch of transactions to the
 * ledger in one SQLite transaction (group commit), so a batch is either
 * entirely recorded or not at all, and recording it twice changes nothing.
 *
 * PER ENTRY, inside BEGIN IMMEDIATE ... COMMIT
 *   1. attempts > 0: the entry was claimed before by a worker that died, so it
 *      may be recorded already; if its txid is, skip it (replayed).
 *   2. A corrupt entry (txn_entry_check) is recorded as rejected.
 *   3. The balance changes with one guarded UPDATE: the WHERE clause admits
 *      the row only if the result stays >= 0 for a withdrawal and within
 *      int64 for a deposit (SQLite would silently turn an overflow into a
 *      REAL). No row changed: a read of the balance tells unknown account,
 *      insufficient funds and overflow apart.
 *   4. The transaction row is inserted with ON CONFLICT(txid) DO NOTHING. If
 *      nothing was inserted the txid was recorded after all (a claim handed
 *      out again without attempts being bumped): the balance change is undone
 *      in the same transaction and the entry counts as replayed.
 *
 * ERRORS
 *   Any failing step rolls the whole transaction back. Lock, I/O and space
 *   errors are LEDGER_RETRY (the caller retries the same batch later); a
 *   missing table, a constraint or misuse is LEDGER_FATAL. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ledger.h"
#include "ledger_db.h"
#include "log.h"

#define LEDGER_BUSY_TIMEOUT_MS 5000

enum stmt_id { ST_BEGIN, ST_COMMIT, ST_RECORDED, ST_CREDIT, ST_BALANCE, ST_RECORD, ST_UNDO, ST__COUNT };

static const struct {
    const char *name; /* for error messages */
    const char *sql;
} stmts[ST__COUNT] = {
    [ST_BEGIN] = { "begin", "BEGIN IMMEDIATE" },
    [ST_COMMIT] = { "commit", "COMMIT" },
    [ST_RECORDED] = { "replay check", "SELECT 1 FROM transactions WHERE txid = ?1" },
    [ST_CREDIT] = { "balance update", LEDGER_SQL_CREDIT },
    [ST_BALANCE] = { "balance read", "SELECT balance FROM users WHERE card_number = ?1" },
    [ST_RECORD] = { "record", LEDGER_SQL_RECORD },
    [ST_UNDO] = { "undo", "UPDATE users SET balance = balance - ?1 WHERE card_number = ?2" },
};

struct ledger {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    char last_error[256];
};

/* First row's column 0 of a statement run by run(). */
struct row {
    int present;
    int type; /* SQLITE_INTEGER, SQLITE_NULL... */
    int64_t value;
};

/* Saves the failure at the moment it happens: a later ROLLBACK replaces
 * sqlite3_errmsg. */
static int note_error(struct ledger *l, int rc, enum stmt_id id)
{
    snprintf(l->last_error, sizeof l->last_error, "%s: %s (%s)", ldb_code_name(rc),
             sqlite3_errmsg(l->db), stmts[id].name);
    return rc;
}

/* Steps statement id to completion (RETURNING changes are only final then),
 * keeping column 0 of the first row if row is given, and resets it for the
 * next use. Returns SQLITE_OK or the failing code. */
static int run(struct ledger *l, enum stmt_id id, struct row *row)
{
    sqlite3_stmt *st = l->st[id];
    int rc;
    if (row != NULL)
        row->present = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (row != NULL && !row->present) {
            row->present = 1;
            row->type = sqlite3_column_type(st, 0);
            row->value = sqlite3_column_int64(st, 0);
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
static int bind_failed(struct ledger *l, int rc, enum stmt_id id)
{
    note_error(l, rc, id);
    sqlite3_reset(l->st[id]);
    sqlite3_clear_bindings(l->st[id]);
    return rc;
}

static int is_recorded(struct ledger *l, int64_t txid, int *recorded)
{
    struct row row;
    int rc = sqlite3_bind_int64(l->st[ST_RECORDED], 1, txid);
    if (rc != SQLITE_OK)
        return bind_failed(l, rc, ST_RECORDED);
    rc = run(l, ST_RECORDED, &row);
    *recorded = row.present;
    return rc;
}

/* Classifies an entry whose guarded UPDATE matched no row; the balance was
 * not touched. */
static int explain_refusal(struct ledger *l, const struct txn_entry *e, struct ledger_outcome *out)
{
    struct row row;
    int rc = sqlite3_bind_text(l->st[ST_BALANCE], 1, e->card, e->card_len, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return bind_failed(l, rc, ST_BALANCE);
    rc = run(l, ST_BALANCE, &row);
    if (rc != SQLITE_OK)
        return rc;
    if (!row.present)
        out->status = TXN_STATUS_UNKNOWN_ACCOUNT;
    else if (row.type == SQLITE_INTEGER && e->amount < 0 && row.value < -e->amount)
        out->status = TXN_STATUS_INSUFFICIENT_FUNDS;
    else
        out->status = TXN_STATUS_REJECTED; /* would overflow, or not an integer balance */
    return SQLITE_OK;
}

static int change_balance(struct ledger *l, const struct txn_entry *e, struct ledger_outcome *out)
{
    sqlite3_stmt *st = l->st[ST_CREDIT];
    /* |amount| <= TXN_AMOUNT_LIMIT, so neither negation nor subtraction overflows. */
    int64_t lowest = e->amount < 0 ? -e->amount : INT64_MIN;
    int64_t highest = e->amount > 0 ? INT64_MAX - e->amount : INT64_MAX;
    struct row row;
    int rc = sqlite3_bind_int64(st, 1, e->amount);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, e->card, e->card_len, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 3, lowest);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 4, highest);
    if (rc != SQLITE_OK)
        return bind_failed(l, rc, ST_CREDIT);
    rc = run(l, ST_CREDIT, &row);
    if (rc != SQLITE_OK)
        return rc;
    if (!row.present)
        return explain_refusal(l, e, out);
    out->status = TXN_STATUS_APPLIED;
    out->balance_after = row.value;
    return SQLITE_OK;
}

static int undo_balance(struct ledger *l, const struct txn_entry *e)
{
    sqlite3_stmt *st = l->st[ST_UNDO];
    int rc = sqlite3_bind_int64(st, 1, e->amount);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, e->card, e->card_len, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return bind_failed(l, rc, ST_UNDO);
    return run(l, ST_UNDO, NULL);
}

static int bind_record(sqlite3_stmt *st, const struct txn_entry *e, int card_ok,
                       const struct ledger_outcome *out, int64_t applied_at_us)
{
    int applied = out->status == TXN_STATUS_APPLIED;
    int rc = card_ok ? sqlite3_bind_text(st, 1, e->card, e->card_len, SQLITE_STATIC)
                     : sqlite3_bind_null(st, 1);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, e->amount);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 3, applied);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 4, (int64_t)e->txid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 5, txn_status_name(out->status), -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = applied ? sqlite3_bind_int64(st, 6, out->balance_after) : sqlite3_bind_null(st, 6);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 7, e->queued_at_us);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 8, applied_at_us);
    return rc;
}

/* Inserts the transaction row; if its txid is already there, reverts what
 * this entry did to the balance and marks it replayed. */
static int record(struct ledger *l, const struct txn_entry *e, int card_ok,
                  struct ledger_outcome *out, int64_t applied_at_us)
{
    int rc = bind_record(l->st[ST_RECORD], e, card_ok, out, applied_at_us);
    if (rc != SQLITE_OK)
        return bind_failed(l, rc, ST_RECORD);
    rc = run(l, ST_RECORD, NULL);
    if (rc != SQLITE_OK || sqlite3_changes(l->db) > 0)
        return rc;
    log_warn("txid %" PRIu64 " was already recorded (attempts %u); its balance change is undone",
             e->txid, e->attempts);
    out->replayed = 1;
    return out->status == TXN_STATUS_APPLIED ? undo_balance(l, e) : SQLITE_OK;
}

/* Applies one entry (a private copy: shared memory is not re-read midway). */
static int apply_entry(struct ledger *l, const struct txn_entry *e, int64_t applied_at_us,
                       struct ledger_outcome *out)
{
    const char *why = NULL;
    *out = (struct ledger_outcome){ .status = TXN_STATUS_REJECTED };
    if (e->txid == 0 || e->txid > INT64_MAX) {
        log_warn("skipping an entry with unusable txid %" PRIu64, e->txid);
        return SQLITE_OK;
    }
    if (e->attempts > 0) {
        int recorded = 0;
        int rc = is_recorded(l, (int64_t)e->txid, &recorded);
        if (rc != SQLITE_OK || recorded) {
            out->replayed = recorded;
            return rc;
        }
    }
    if (txn_entry_check(e, &why) != 0) {
        int card_ok = e->card_len > 0 && e->card_len <= TXN_CARD_MAX &&
                      txn_card_valid(e->card, e->card_len) == 0;
        log_warn("txid %" PRIu64 " recorded as rejected: %s", e->txid, why);
        return record(l, e, card_ok, out, applied_at_us);
    }
    int rc = change_balance(l, e, out);
    if (rc == SQLITE_OK)
        rc = record(l, e, 1, out, applied_at_us);
    return rc;
}

enum ledger_result ledger_apply_batch(struct ledger *l, const struct txn_entry *batch, uint32_t n,
                                      int64_t applied_at_us, struct ledger_outcome *outcomes)
{
    if (n == 0)
        return LEDGER_OK;
    l->last_error[0] = '\0';
    int rc = run(l, ST_BEGIN, NULL);
    for (uint32_t i = 0; rc == SQLITE_OK && i < n; i++) {
        struct txn_entry e = batch[i];
        rc = apply_entry(l, &e, applied_at_us, &outcomes[i]);
    }
    if (rc == SQLITE_OK)
        rc = run(l, ST_COMMIT, NULL);
    if (rc == SQLITE_OK)
        return LEDGER_OK;
    /* A connection that cannot get out of its transaction is no use. */
    if (ldb_rollback(l->db) != 0)
        return LEDGER_FATAL;
    return ldb_transient(rc) ? LEDGER_RETRY : LEDGER_FATAL;
}

/* Per-connection settings; the schema must already be current
 * (ledger_prepare runs before any worker starts). */
static int configure(struct ledger *l, const char *db_path, enum sync_mode sync)
{
    int64_t version = -1;
    if (ledger_set_busy_timeout(l, LEDGER_BUSY_TIMEOUT_MS) != 0 || ldb_enable_wal(l->db) != 0)
        return -1;
    if (ldb_exec(l->db, sync == SYNC_FULL ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                 "PRAGMA synchronous") != SQLITE_OK ||
        ldb_exec(l->db, LEDGER_PRAGMAS, "worker PRAGMAs") != SQLITE_OK ||
        ldb_query_int64(l->db, "PRAGMA user_version", &version) != SQLITE_OK)
        return -1;
    if (version != LEDGER_SCHEMA_VERSION) {
        log_error("%s has schema version %lld, this build needs %d", db_path, (long long)version,
                  LEDGER_SCHEMA_VERSION);
        return -1;
    }
    return 0;
}

static int prepare_all(struct ledger *l)
{
    for (int i = 0; i < ST__COUNT; i++) {
        int rc = sqlite3_prepare_v3(l->db, stmts[i].sql, -1, SQLITE_PREPARE_PERSISTENT, &l->st[i],
                                    NULL);
        if (rc != SQLITE_OK) {
            log_error("preparing the %s statement: %s", stmts[i].name, sqlite3_errmsg(l->db));
            return -1;
        }
    }
    return 0;
}

struct ledger *ledger_open(const char *db_path, enum sync_mode sync)
{
    struct ledger *l = calloc(1, sizeof *l);
    if (l == NULL) {
        log_error("ledger_open: out of memory");
        return NULL;
    }
    l->db = ldb_open(db_path, 0);
    if (l->db == NULL || configure(l, db_path, sync) != 0 || prepare_all(l) != 0) {
        ledger_close(l);
        return NULL;
    }
    return l;
}

void ledger_close(struct ledger *l)
{
    if (l == NULL)
        return;
    /* finalize returns the statement's last error, already handled. */
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(l->st[i]);
    ldb_close(l->db);
    free(l);
}

int ledger_set_busy_timeout(struct ledger *l, int ms)
{
    int rc = sqlite3_busy_timeout(l->db, ms);
    if (rc != SQLITE_OK) {
        log_error("sqlite3_busy_timeout: %s", sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}

const char *ledger_last_error(const struct ledger *l)
{
    return l->last_error;
}
