/* The worker's write path: applies a claimed batch of transactions to the
 * ledger in one SQLite transaction (group commit), so a batch is either
 * entirely recorded or not at all, and recording it twice changes nothing.
 *
 * PER ENTRY, inside BEGIN IMMEDIATE ... COMMIT
 *   1. attempts > 0: the entry was claimed before by a worker that died, so it
 *      may be recorded already; if its txid is, skip it (replayed).
 *   2. A corrupt entry (txn_entry_check) is recorded as rejected.
 *   3. An Idempotency-Key is claimed by inserting it into idempotency_keys
 *      (ON CONFLICT DO NOTHING): the UNIQUE key column, not a check made
 *      earlier, decides which of two copies applies, whichever frontends
 *      they came through. A key already there makes the entry 'duplicate'
 *      (same fingerprint) or 'rejected' (another request), and nothing else
 *      happens; a key recorded under this very txid means a replay.
 *   4. The accounts are read (rowid, balance, newest statement row) and the
 *      rules are checked in
 *      C: a withdrawal or transfer may not take a balance below 0, a deposit
 *      or transfer may not take one past INT64_MAX (SQLite would silently
 *      turn an overflow into a REAL), a balance that is not an integer is
 *      never touched, a transfer needs two different existing accounts, an
 *      opening a card that does not exist. If they hold, the new balances
 *      are written by rowid (both of a transfer's, in this same SQLite
 *      transaction, so both change or neither), with the statement link and
 *      counts in the same UPDATE (see STATEMENTS in ledger.h); a refusal
 *      writes only those. The connection holds the write lock from BEGIN
 *      IMMEDIATE on, so nothing changes in between.
 *   5. The transaction row is inserted with ON CONFLICT(txid) DO NOTHING.
 *
 * GROUPED ROWS
 *   Step 5 is deferred: the rows of the whole batch are inserted after step 4
 *   of its last entry, LEDGER_RECORD_CHUNK rows per INSERT statement, in
 *   batch order (so ids still follow txids). Each INSERT statement costs a
 *   read and a write of sqlite_sequence (transactions.id is AUTOINCREMENT)
 *   and a VDBE run, so one per 32 rows instead of one per row is most of
 *   what separates this path from a naive SELECT/UPDATE/INSERT.
 *   If a chunk inserts fewer rows than it carries, some txid was recorded
 *   after all (a claim handed out again without attempts being bumped): the
 *   whole transaction is rolled back and the batch is applied again the
 *   careful way, with step 1 for every entry. That never happens in normal
 *   operation; it costs one rolled-back batch when it does.
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

#include "check.h"
#include "ledger_db.h"
#include "log.h"

#define LEDGER_BUSY_TIMEOUT_MS 5000

/* Internal result of the grouped insert: some txid was already recorded. */
#define RC_RECORDED (-1)

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
    [ST_RECORDED] = { "replay check", "SELECT 1 FROM transactions WHERE txid = ?1" },
    [ST_ACCOUNT] = { "balance read", LEDGER_SQL_ACCOUNT },
    [ST_SETTLE] = { "balance update", LEDGER_SQL_SETTLE },
    [ST_OPEN] = { "account opening",
                  "INSERT INTO users(card_number, balance, last_txid, opened_at, n_total) "
                  "VALUES(?1, ?2, ?3, ?4, 1)" },
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

/* What the grouped insert needs to know about an entry after step 4. */
enum row_kind {
    ROW_NONE = 0, /* nothing to record: replayed, or no usable txid */
    ROW_FULL,     /* a valid entry: record every field */
    ROW_CARD,     /* corrupt entry with a usable card: record card and amount only */
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
static int note_error(struct ledger *l, int rc, enum stmt_id id)
{
    snprintf(l->last_error, sizeof l->last_error, "%s: %s (%s)", ldb_code_name(rc),
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
static int run(struct ledger *l, enum stmt_id id, struct row *row)
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

/* An account as the rules see it: *found, its rowid, its balance when that
 * is an integer (*integer), and the newest transaction of its statement
 * (0: none yet). */
struct account {
    int found, integer;
    int64_t rowid, balance;
    uint64_t last_txid;
};

static int read_account(struct ledger *l, const char *card, uint8_t card_len, struct account *a)
{
    sqlite3_stmt *st = l->st[ST_ACCOUNT];
    *a = (struct account){ 0 };
    int rc = sqlite3_bind_text(st, 1, card, card_len, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return bind_failed(l, rc, ST_ACCOUNT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        a->found = 1;
        a->rowid = sqlite3_column_int64(st, 0);
        a->integer = sqlite3_column_type(st, 1) == SQLITE_INTEGER;
        a->balance = sqlite3_column_int64(st, 1);
        a->last_txid = (uint64_t)sqlite3_column_int64(st, 2); /* NULL reads as 0 */
        rc = SQLITE_DONE; /* card_number is the primary key: one row at most */
    }
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    else
        note_error(l, rc, ST_ACCOUNT);
    sqlite3_reset(st);
    return rc;
}

/* What a statement row counts as in users.n_* (?4 of LEDGER_SQL_SETTLE). */
enum settle_count {
    COUNT_DEPOSIT = 0, COUNT_WITHDRAWAL = 1, COUNT_TRANSFER_IN = 2, COUNT_TRANSFER_OUT = 3,
    COUNT_REFUSED = 4,
};

/* Writes the account's balance (unchanged for a refusal), makes e the
 * newest row of its statement and counts it; *prev gets the row e follows. */
static int settle(struct ledger *l, const struct account *a, int64_t balance,
                  const struct txn_entry *e, enum settle_count what, uint64_t *prev)
{
    sqlite3_stmt *st = l->st[ST_SETTLE];
    int rc = sqlite3_bind_int64(st, 1, balance);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, a->rowid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 3, (int64_t)e->txid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 4, (int)what);
    if (rc != SQLITE_OK)
        return bind_failed(l, rc, ST_SETTLE);
    *prev = a->last_txid;
    return run(l, ST_SETTLE, NULL);
}

static void reject(struct ledger_outcome *out, enum txn_reason why)
{
    out->status = TXN_STATUS_REJECTED;
    out->reason = why;
}

/* Deposit (amount > 0) or withdrawal (amount < 0). |amount| <=
 * TXN_AMOUNT_LIMIT, so neither negation nor subtraction overflows. A
 * refusal on an existing account still joins its statement. */
static int apply_amount(struct ledger *l, const struct txn_entry *e, struct ledger_outcome *out)
{
    struct account a;
    int rc = read_account(l, e->card, e->card_len, &a);
    if (rc != SQLITE_OK)
        return rc;
    if (!a.found) {
        out->status = TXN_STATUS_UNKNOWN_ACCOUNT;
        return SQLITE_OK;
    }
    if (!a.integer)
        reject(out, TXN_REASON_NOT_INTEGER);
    else if (e->amount < 0 && a.balance < -e->amount)
        out->status = TXN_STATUS_INSUFFICIENT_FUNDS;
    else if (e->amount > 0 && a.balance > INT64_MAX - e->amount)
        reject(out, TXN_REASON_OVERFLOW);
    else {
        out->status = TXN_STATUS_APPLIED;
        out->balance_after = a.balance + e->amount;
        return settle(l, &a, out->balance_after, e,
                      e->amount > 0 ? COUNT_DEPOSIT : COUNT_WITHDRAWAL, &out->prev_txid);
    }
    /* A balance that is not an integer is never rewritten (it would become
     * one); such a refusal stays out of the statement. */
    if (!a.integer)
        return SQLITE_OK;
    return settle(l, &a, a.balance, e, COUNT_REFUSED, &out->prev_txid);
}

/* Both balances change in this SQLite transaction, or neither does. The
 * row joins the statement of each side that exists. */
static int apply_transfer(struct ledger *l, const struct txn_entry *e, struct ledger_outcome *out)
{
    int same = e->card_len == e->card2_len && memcmp(e->card, e->card2, e->card_len) == 0;
    struct account from, to = { 0 };
    int rc = read_account(l, e->card, e->card_len, &from);
    if (rc == SQLITE_OK && !same)
        rc = read_account(l, e->card2, e->card2_len, &to);
    if (rc != SQLITE_OK)
        return rc;
    if (same)
        reject(out, TXN_REASON_SAME_ACCOUNT);
    else if (!from.found || !to.found)
        reject(out, TXN_REASON_UNKNOWN_ACCOUNT);
    else if (!from.integer || !to.integer)
        reject(out, TXN_REASON_NOT_INTEGER);
    else if (from.balance < e->amount)
        reject(out, TXN_REASON_INSUFFICIENT_FUNDS);
    else if (to.balance > INT64_MAX - e->amount)
        reject(out, TXN_REASON_OVERFLOW);
    else {
        out->status = TXN_STATUS_APPLIED;
        out->balance_after = from.balance - e->amount;
        out->counterparty_balance = to.balance + e->amount;
    }
    int applied = out->status == TXN_STATUS_APPLIED;
    if (from.found && from.integer)
        rc = settle(l, &from, applied ? from.balance - e->amount : from.balance, e,
                    applied ? COUNT_TRANSFER_OUT : COUNT_REFUSED, &out->prev_txid);
    if (rc == SQLITE_OK && to.found && to.integer)
        rc = settle(l, &to, applied ? to.balance + e->amount : to.balance, e,
                    applied ? COUNT_TRANSFER_IN : COUNT_REFUSED, &out->counterparty_prev_txid);
    return rc;
}

static int apply_open(struct ledger *l, const struct txn_entry *e, int64_t applied_at_us,
                      struct ledger_outcome *out)
{
    struct account a;
    int rc = read_account(l, e->card, e->card_len, &a);
    if (rc != SQLITE_OK)
        return rc;
    if (a.found) {
        reject(out, TXN_REASON_ACCOUNT_EXISTS);
        return SQLITE_OK;
    }
    sqlite3_stmt *st = l->st[ST_OPEN];
    rc = sqlite3_bind_text(st, 1, e->card, e->card_len, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, e->amount);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 3, (int64_t)e->txid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 4, applied_at_us);
    if (rc != SQLITE_OK)
        return bind_failed(l, rc, ST_OPEN);
    rc = run(l, ST_OPEN, NULL);
    if (rc != SQLITE_OK)
        return rc;
    out->status = TXN_STATUS_APPLIED;
    out->balance_after = e->amount;
    return SQLITE_OK;
}

/* Step 3. Sets *own when the key is recorded under e's own txid (a replay
 * that the txid check did not catch: cannot happen while the key row and
 * the transaction row commit together, but costs nothing to honour). */
static int claim_key(struct ledger *l, const struct txn_entry *e, int64_t applied_at_us,
                     struct ledger_outcome *out, int *own)
{
    sqlite3_stmt *st = l->st[ST_KEY_CLAIM];
    uint64_t fingerprint = txn_fingerprint(e);
    *own = 0;
    int rc = sqlite3_bind_text(st, 1, e->key, e->key_len, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, (int64_t)e->txid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 3, (int64_t)fingerprint);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 4, applied_at_us);
    if (rc != SQLITE_OK)
        return bind_failed(l, rc, ST_KEY_CLAIM);
    rc = run(l, ST_KEY_CLAIM, NULL);
    if (rc != SQLITE_OK || sqlite3_changes(l->db) == 1)
        return rc; /* the key is ours: apply the entry */
    struct row first;
    rc = sqlite3_bind_text(l->st[ST_KEY_GET], 1, e->key, e->key_len, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return bind_failed(l, rc, ST_KEY_GET);
    rc = run(l, ST_KEY_GET, &first);
    if (rc != SQLITE_OK)
        return rc;
    if (!first.present) { /* inserted nothing, yet not there: a bug, not a state */
        snprintf(l->last_error, sizeof l->last_error, "idempotency key neither new nor recorded");
        return SQLITE_INTERNAL;
    }
    if ((uint64_t)first.value[0] == e->txid) {
        *own = 1;
        return SQLITE_OK;
    }
    out->original_txid = (uint64_t)first.value[0];
    if ((uint64_t)first.value[1] == fingerprint)
        out->status = TXN_STATUS_DUPLICATE;
    else
        reject(out, TXN_REASON_KEY_REUSED);
    return SQLITE_OK;
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

/* Steps 1-4 for one entry; sets *row to what step 5 must insert. */
static int settle_entry(struct ledger *l, const struct txn_entry *e, int64_t applied_at_us,
                        int careful, struct ledger_outcome *out, enum row_kind *row)
{
    const char *why = NULL;
    *out = (struct ledger_outcome){ .status = TXN_STATUS_REJECTED };
    *row = ROW_NONE;
    /* The ring hands out txid_base + position, checked against INT64_MAX
     * when a segment is made or adopted: anything else is corruption, and
     * skipping the entry would acknowledge money that was never recorded. */
    ASSERT(e->txid != 0 && e->txid <= INT64_MAX);
    if (e->attempts > 0 || careful) {
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
        out->reason = TXN_REASON_CORRUPT;
        *row = card_ok ? ROW_CARD : ROW_NO_CARD;
        return SQLITE_OK;
    }
    *row = ROW_FULL;
    if (e->key_len > 0) {
        int own = 0;
        int rc = claim_key(l, e, applied_at_us, out, &own);
        if (rc != SQLITE_OK || own || out->original_txid != 0) {
            if (own) {
                out->replayed = 1;
                *row = ROW_NONE;
            }
            return rc;
        }
    }
    switch (e->kind) {
    case TXN_KIND_TRANSFER: return apply_transfer(l, e, out);
    case TXN_KIND_OPEN: return apply_open(l, e, applied_at_us, out);
    default: return apply_amount(l, e, out);
    }
}

/* Step 5 for the whole batch, in chunks. Returns SQLITE_OK, an SQLite error,
 * or RC_RECORDED when a chunk found a txid already recorded. */
static int record_all(struct ledger *l, uint32_t n, int64_t applied_at_us,
                      const struct ledger_outcome *outcomes)
{
    uint32_t left = 0, in_chunk = 0;
    for (uint32_t i = 0; i < n; i++)
        left += l->rows[i] != ROW_NONE;
    for (uint32_t i = 0; i < n; i++) {
        if (l->rows[i] == ROW_NONE)
            continue;
        enum row_kind row = (enum row_kind)l->rows[i];
        enum stmt_id id = in_chunk > 0 || left >= LEDGER_RECORD_CHUNK ? ST_RECORD_CHUNK : ST_RECORD;
        int rc = bind_record(l->st[id], (int)(in_chunk * LEDGER_RECORD_PARAMS), &l->copy[i], row,
                             &outcomes[i], applied_at_us);
        if (rc != SQLITE_OK)
            return bind_failed(l, rc, id);
        unsigned rows = 1;
        if (id == ST_RECORD_CHUNK) {
            if (++in_chunk < LEDGER_RECORD_CHUNK)
                continue;
            rows = in_chunk;
            in_chunk = 0;
        }
        rc = run(l, id, NULL);
        if (rc == SQLITE_OK && sqlite3_changes(l->db) != (int)rows)
            rc = RC_RECORDED;
        left -= rows;
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

/* One attempt at the batch in l->copy; careful checks every txid first.
 * Leaves the transaction open on failure. */
static int apply_pass(struct ledger *l, uint32_t n, int64_t applied_at_us,
                      struct ledger_outcome *outcomes, int careful)
{
    int rc = run(l, ST_BEGIN, NULL);
    for (uint32_t i = 0; rc == SQLITE_OK && i < n; i++) {
        enum row_kind row;
        rc = settle_entry(l, &l->copy[i], applied_at_us, careful, &outcomes[i], &row);
        l->rows[i] = (uint8_t)row;
    }
    if (rc == SQLITE_OK)
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

/* Ends a failed attempt: LEDGER_RETRY for lock, I/O and space errors. */
static enum ledger_result fail(struct ledger *l, int rc)
{
    /* A connection that cannot get out of its transaction is no use. */
    if (ldb_rollback(l->db) != 0)
        return LEDGER_FATAL;
    return ldb_transient(rc) ? LEDGER_RETRY : LEDGER_FATAL;
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
        log_warn("a batch of %u entries holds a txid already recorded; applying it again with "
                 "a replay check for every entry", n);
        if (ldb_rollback(l->db) != 0)
            return LEDGER_FATAL;
        rc = apply_pass(l, n, applied_at_us, outcomes, 1);
        if (rc == RC_RECORDED) { /* every txid was checked under the write lock */
            snprintf(l->last_error, sizeof l->last_error,
                     "a txid checked as new was already recorded");
            rc = SQLITE_INTERNAL;
        }
    }
    return rc == SQLITE_OK ? LEDGER_OK : fail(l, rc);
}

enum ledger_result ledger_prune_keys(struct ledger *l, int64_t older_than_us, unsigned max,
                                     unsigned *deleted)
{
    sqlite3_stmt *st = l->st[ST_PRUNE];
    *deleted = 0;
    l->last_error[0] = '\0';
    int rc = sqlite3_bind_int64(st, 1, older_than_us);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, max);
    if (rc != SQLITE_OK) {
        bind_failed(l, rc, ST_PRUNE);
        return LEDGER_FATAL;
    }
    rc = run(l, ST_PRUNE, NULL); /* one statement in autocommit: its own transaction */
    if (rc != SQLITE_OK)
        return ldb_transient(rc) ? LEDGER_RETRY : LEDGER_FATAL;
    *deleted = (unsigned)sqlite3_changes(l->db);
    return LEDGER_OK;
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
    char one[1024], chunk[1024 + LEDGER_RECORD_CHUNK * 40];
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
