/* The worker's write path: applies a claimed batch of transactions to the
 * ledger in one SQLite transaction (group commit), so a batch is either
 * entirely recorded or not at all, and recording it twice changes nothing.
 *
 * PER ENTRY, inside BEGIN IMMEDIATE ... COMMIT
 *   1. attempts > 0: the entry was claimed before by a worker that died, so it
 *      may be recorded already; if its txid is, skip it (replayed).
 *   2. A corrupt entry (txn_entry_check) is recorded as rejected.
 *   3. The account is read (rowid, balance) and the rules are checked in C:
 *      a withdrawal may not take the balance below 0, a deposit may not take
 *      it past INT64_MAX (SQLite would silently turn an overflow into a
 *      REAL), a balance that is not an integer is never touched. If they
 *      hold, the new balance is written by rowid. The connection holds the
 *      write lock from BEGIN IMMEDIATE on, so nothing changes in between.
 *   4. The transaction row is inserted with ON CONFLICT(txid) DO NOTHING.
 *
 * GROUPED ROWS
 *   Step 4 is deferred: the rows of the whole batch are inserted after step 3
 *   of its last entry, LEDGER_RECORD_CHUNK rows per INSERT statement, in
 *   batch order (so ids still follow txids). Each INSERT statement costs a
 *   read and a write of sqlite_sequence (transactions.id is AUTOINCREMENT)
 *   and a VDBE run, so one per 32 rows instead of one per row is most of
 *   what separates this path from a naive SELECT/UPDATE/INSERT.
 *   If a chunk inserts fewer rows than it carries, some txid was recorded
 *   after all (a claim handed out again without attempts being bumped): the
 *   whole transaction is rolled back and the batch is applied again the
 *   careful way, one entry at a time, where a row that does not insert has
 *   its balance change undone and the entry counts as replayed. That never
 *   happens in normal operation; it costs one rolled-back batch when it does.
 *
 * Why not one "UPDATE ... RETURNING balance" per entry: SQLite (3.40 here)
 * runs RETURNING through an ephemeral table that it allocates and frees on
 * every execution (~64 KiB, two brk() calls each time); with it the worker
 * applied 69,000 transactions/s where SELECT + UPDATE by rowid does more than
 * twice that (tools/bench/sqlite_ceiling, README performance section).
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
#define RECORD_PARAMS 8 /* bound values per transactions row */

/* Internal result of the grouped insert: some txid was already recorded. */
#define RC_RECORDED (-1)

enum stmt_id {
    ST_BEGIN, ST_COMMIT, ST_RECORDED, ST_ACCOUNT, ST_SET_BALANCE, ST_RECORD, ST_RECORD_CHUNK,
    ST_UNDO, ST__COUNT
};

static const struct {
    const char *name; /* for error messages */
    const char *sql;  /* NULL: built by prepare_all */
} stmts[ST__COUNT] = {
    [ST_BEGIN] = { "begin", "BEGIN IMMEDIATE" },
    [ST_COMMIT] = { "commit", "COMMIT" },
    [ST_RECORDED] = { "replay check", "SELECT 1 FROM transactions WHERE txid = ?1" },
    [ST_ACCOUNT] = { "balance read", LEDGER_SQL_ACCOUNT },
    [ST_SET_BALANCE] = { "balance update", LEDGER_SQL_SET_BALANCE },
    [ST_RECORD] = { "record", NULL },
    [ST_RECORD_CHUNK] = { "record", NULL },
    [ST_UNDO] = { "undo", "UPDATE users SET balance = balance - ?1 WHERE card_number = ?2" },
};

/* What the grouped insert needs to know about an entry after step 3. */
enum row_kind {
    ROW_NONE = 0, /* nothing to record: replayed, or no usable txid */
    ROW_CARD,     /* record with its card number */
    ROW_NO_CARD,  /* corrupt card: record with card_number NULL */
};

struct ledger {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    struct txn_entry *copy; /* private copy of the batch being applied */
    uint8_t *rows;          /* enum row_kind per entry */
    uint32_t cap;           /* entries copy and rows have room for */
    char last_error[256];
};

/* First row's column 0 of a statement run by run(). */
struct row {
    int present;
    int type; /* SQLITE_INTEGER, SQLITE_NULL... */
    int64_t value;
};

int ledger_sql_record(char *buf, size_t cap, unsigned rows)
{
    static const char head[] = "INSERT INTO transactions(card_number, amount, success, txid, "
                               "status, balance_after, queued_at, applied_at) VALUES";
    static const char tuple[] = "(?,?,?,?,?,?,?,?)";
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
static int note_error(struct ledger *l, int rc, enum stmt_id id)
{
    snprintf(l->last_error, sizeof l->last_error, "%s: %s (%s)", ldb_code_name(rc),
             sqlite3_errmsg(l->db), stmts[id].name);
    return rc;
}

/* Steps statement id to completion, keeping column 0 of the first row if
 * row is given, and resets it for the next use. Returns SQLITE_OK or the
 * failing code. */
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

/* The account of e's card: *found, its rowid, and its balance when that is
 * an integer (*integer). */
struct account {
    int found, integer;
    int64_t rowid, balance;
};

static int read_account(struct ledger *l, const struct txn_entry *e, struct account *a)
{
    sqlite3_stmt *st = l->st[ST_ACCOUNT];
    *a = (struct account){ 0 };
    int rc = sqlite3_bind_text(st, 1, e->card, e->card_len, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return bind_failed(l, rc, ST_ACCOUNT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        a->found = 1;
        a->rowid = sqlite3_column_int64(st, 0);
        a->integer = sqlite3_column_type(st, 1) == SQLITE_INTEGER;
        a->balance = sqlite3_column_int64(st, 1);
        rc = SQLITE_DONE; /* card_number is the primary key: one row at most */
    }
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    else
        note_error(l, rc, ST_ACCOUNT);
    sqlite3_reset(st);
    return rc;
}

static int change_balance(struct ledger *l, const struct txn_entry *e, struct ledger_outcome *out)
{
    struct account a;
    int rc = read_account(l, e, &a);
    if (rc != SQLITE_OK)
        return rc;
    /* |amount| <= TXN_AMOUNT_LIMIT, so neither negation nor subtraction overflows. */
    if (!a.found)
        out->status = TXN_STATUS_UNKNOWN_ACCOUNT;
    else if (a.integer && e->amount < 0 && a.balance < -e->amount)
        out->status = TXN_STATUS_INSUFFICIENT_FUNDS;
    else if (!a.integer || (e->amount > 0 && a.balance > INT64_MAX - e->amount))
        out->status = TXN_STATUS_REJECTED; /* would overflow, or not an integer balance */
    else {
        sqlite3_stmt *st = l->st[ST_SET_BALANCE];
        int64_t after = a.balance + e->amount;
        rc = sqlite3_bind_int64(st, 1, after);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 2, a.rowid);
        if (rc != SQLITE_OK)
            return bind_failed(l, rc, ST_SET_BALANCE);
        rc = run(l, ST_SET_BALANCE, NULL);
        if (rc != SQLITE_OK)
            return rc;
        out->status = TXN_STATUS_APPLIED;
        out->balance_after = after;
    }
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

/* Binds one transactions row at parameters base+1 .. base+RECORD_PARAMS. */
static int bind_record(sqlite3_stmt *st, int base, const struct txn_entry *e, int card_ok,
                       const struct ledger_outcome *out, int64_t applied_at_us)
{
    int applied = out->status == TXN_STATUS_APPLIED;
    int rc = card_ok ? sqlite3_bind_text(st, base + 1, e->card, e->card_len, SQLITE_STATIC)
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
    return rc;
}

/* Careful path: inserts the transaction row at once; if its txid is already
 * there, reverts what this entry did to the balance and marks it replayed. */
static int record(struct ledger *l, const struct txn_entry *e, int card_ok,
                  struct ledger_outcome *out, int64_t applied_at_us)
{
    int rc = bind_record(l->st[ST_RECORD], 0, e, card_ok, out, applied_at_us);
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

/* Steps 1-3 for one entry; sets *row to what step 4 must insert. */
static int settle_entry(struct ledger *l, const struct txn_entry *e, struct ledger_outcome *out,
                        enum row_kind *row)
{
    const char *why = NULL;
    *out = (struct ledger_outcome){ .status = TXN_STATUS_REJECTED };
    *row = ROW_NONE;
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
        *row = card_ok ? ROW_CARD : ROW_NO_CARD;
        return SQLITE_OK;
    }
    *row = ROW_CARD;
    return change_balance(l, e, out);
}

/* Step 4 for the whole batch, in chunks. Returns SQLITE_OK, an SQLite error,
 * or RC_RECORDED when a chunk found a txid already recorded. */
static int record_all(struct ledger *l, uint32_t n, int64_t applied_at_us,
                      const struct ledger_outcome *outcomes)
{
    sqlite3_stmt *chunk = l->st[ST_RECORD_CHUNK];
    uint32_t left = 0, in_chunk = 0;
    for (uint32_t i = 0; i < n; i++)
        left += l->rows[i] != ROW_NONE;
    for (uint32_t i = 0; i < n; i++) {
        if (l->rows[i] == ROW_NONE)
            continue;
        int card_ok = l->rows[i] == ROW_CARD, rc;
        enum stmt_id id = in_chunk > 0 || left >= LEDGER_RECORD_CHUNK ? ST_RECORD_CHUNK : ST_RECORD;
        if (id == ST_RECORD) {
            rc = bind_record(l->st[ST_RECORD], 0, &l->copy[i], card_ok, &outcomes[i], applied_at_us);
            if (rc != SQLITE_OK)
                return bind_failed(l, rc, id);
            rc = run(l, ST_RECORD, NULL);
            if (rc == SQLITE_OK && sqlite3_changes(l->db) != 1)
                rc = RC_RECORDED;
            left--;
        } else {
            rc = bind_record(chunk, (int)(in_chunk * RECORD_PARAMS), &l->copy[i], card_ok,
                             &outcomes[i], applied_at_us);
            if (rc != SQLITE_OK)
                return bind_failed(l, rc, id);
            if (++in_chunk < LEDGER_RECORD_CHUNK)
                continue;
            rc = run(l, ST_RECORD_CHUNK, NULL);
            if (rc == SQLITE_OK && sqlite3_changes(l->db) != LEDGER_RECORD_CHUNK)
                rc = RC_RECORDED;
            left -= in_chunk;
            in_chunk = 0;
        }
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

/* One attempt at the batch in l->copy: grouped rows, or (careful) one row
 * right after each entry. Leaves the transaction open on failure. */
static int apply_pass(struct ledger *l, uint32_t n, int64_t applied_at_us,
                      struct ledger_outcome *outcomes, int careful)
{
    int rc = run(l, ST_BEGIN, NULL);
    for (uint32_t i = 0; rc == SQLITE_OK && i < n; i++) {
        enum row_kind row;
        rc = settle_entry(l, &l->copy[i], &outcomes[i], &row);
        l->rows[i] = (uint8_t)row;
        if (rc == SQLITE_OK && careful && row != ROW_NONE)
            rc = record(l, &l->copy[i], row == ROW_CARD, &outcomes[i], applied_at_us);
    }
    if (rc == SQLITE_OK && !careful)
        rc = record_all(l, n, applied_at_us, outcomes);
    if (rc == SQLITE_OK)
        rc = run(l, ST_COMMIT, NULL);
    return rc;
}

static int reserve(struct ledger *l, uint32_t n)
{
    if (n <= l->cap)
        return 0;
    struct txn_entry *copy = realloc(l->copy, (size_t)n * sizeof *copy);
    if (copy != NULL)
        l->copy = copy;
    uint8_t *rows = realloc(l->rows, n);
    if (rows != NULL)
        l->rows = rows;
    if (copy == NULL || rows == NULL)
        return -1;
    l->cap = n;
    return 0;
}

enum ledger_result ledger_apply_batch(struct ledger *l, const struct txn_entry *batch, uint32_t n,
                                      int64_t applied_at_us, struct ledger_outcome *outcomes)
{
    if (n == 0)
        return LEDGER_OK;
    l->last_error[0] = '\0';
    if (reserve(l, n) != 0) {
        snprintf(l->last_error, sizeof l->last_error, "out of memory for a batch of %u", n);
        return LEDGER_RETRY;
    }
    /* A private copy: shared memory is not re-read midway. */
    memcpy(l->copy, batch, (size_t)n * sizeof *batch);
    int rc = apply_pass(l, n, applied_at_us, outcomes, 0);
    if (rc == RC_RECORDED) {
        log_warn("a batch of %u entries holds a txid already recorded; applying it entry by entry",
                 n);
        if (ldb_rollback(l->db) != 0)
            return LEDGER_FATAL;
        rc = apply_pass(l, n, applied_at_us, outcomes, 1);
    }
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
    char one[512], chunk[128 + LEDGER_RECORD_CHUNK * 24];
    if (ledger_sql_record(one, sizeof one, 1) != 0 ||
        ledger_sql_record(chunk, sizeof chunk, LEDGER_RECORD_CHUNK) != 0) {
        log_error("ledger: INSERT statement text does not fit"); /* a bug: sizes are fixed */
        return -1;
    }
    for (int i = 0; i < ST__COUNT; i++) {
        const char *sql = i == ST_RECORD ? one : i == ST_RECORD_CHUNK ? chunk : stmts[i].sql;
        int rc = sqlite3_prepare_v3(l->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &l->st[i], NULL);
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
    free(l->copy);
    free(l->rows);
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
