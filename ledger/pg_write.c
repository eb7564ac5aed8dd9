/* The PostgreSQL backend's write operations (backend.h): a batch is one
 * transaction with a fixed number of round trips whatever its size,
 * because every step sends the whole batch as array parameters:
 *   BEGIN
 *   [SELECT txid ... = ANY($1)]              replays, only if one may be
 *   [INSERT INTO idempotency_keys ... unnest ON CONFLICT DO NOTHING;
 *    SELECT key, txid, fingerprint ... = ANY($1)]   only if keys
 *   SELECT ... FROM users WHERE card_number = ANY($1)
 *       ORDER BY card_number FOR UPDATE       the book, locked in card order
 *   [SELECT pg_advisory_xact_lock(...);       cards without an account: a
 *    SELECT ... FOR UPDATE NOWAIT]            lock for each, then read again
 *                                             (lock_missing)
 *   UPDATE users ... FROM unnest(...)         each changed account once
 *   [INSERT INTO users ... unnest]            openings
 *   COPY transactions FROM STDIN              the rows
 *   COMMIT
 * Keys are inserted sorted too, so two workers take every lock in the same
 * order (keys, then accounts, then missing cards) and do not deadlock;
 * should one happen anyway (a hand-run transaction), 40P01 is retried like
 * any passing failure. The rules run in C between the SELECTs and the
 * UPDATE (ledger/rules.c). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "ledger/pg_conn.h"

/* Per round trip: long enough for a large batch on a busy server, short
 * enough that a silent server is noticed. */
#define PG_WORKER_TIMEOUT_MS 30000
#define PG_LOCK_TIMEOUT_MS 5000
/* Run on every connection. Generic plans: the statements are the same for
 * every batch, and the custom plans PostgreSQL makes for each one's arrays
 * hash the whole accounts table when it is small (10,000 accounts); the
 * generic ones probe the primary key, the plan a ledger of any size wants
 * (about 10 % less server time on the UPDATE and the SELECT, measured). */
#define SESSION_SQL "SET lock_timeout = %d; SET plan_cache_mode = force_generic_plan"

enum { S_RECORDED, S_CLAIM, S_KEYS, S_LOAD, S_LOCK_CARDS, S_RELOAD, S_UPDATE, S_CREATE, S_PRUNE,
       S__COUNT };

/* The transaction rows. A txid already there fails the COPY with a
 * unique violation on this index (batch.c then checks every txid). */
#define RECORD_SQL                                                                               \
    "COPY transactions(card_number, amount, success, txid, status, balance_after, queued_at, "   \
    "applied_at, kind, counterparty, counterparty_balance_after, reason, original_txid, "        \
    "idempotency_key, prev_txid, counterparty_prev_txid) FROM STDIN"
#define TXID_INDEX "transactions_txid"

/* The creation lock (pg_advisory_xact_lock on PGC_GUARD_KEY1, CREATION_KEY):
 * shared by a batch that locks its few missing cards one by one, exclusive
 * for one with more than MISSING_LOCKS_MAX, so that a batch of thousands of
 * unknown cards takes one lock rather than thousands (PostgreSQL's lock table
 * is shared and bounded). */
#define CREATION_KEY (-2)
#define MISSING_LOCKS_MAX 32

static const struct pgc_stmt stmts[S__COUNT] = {
    [S_RECORDED] = { "recorded",
                     "SELECT txid, card_number, amount FROM transactions WHERE txid = ANY($1::int8[])",
                     1 },
    [S_CLAIM] = { "claim_keys",
                  "INSERT INTO idempotency_keys(key, txid, fingerprint, created_at) "
                  "SELECT k, t, f, $4 FROM unnest($1::text[], $2::int8[], $3::int8[]) "
                  "WITH ORDINALITY AS u(k, t, f, o) ORDER BY k, o ON CONFLICT (key) DO NOTHING",
                  4 },
    [S_KEYS] = { "key_owners",
                 "SELECT key, txid, fingerprint FROM idempotency_keys WHERE key = ANY($1::text[])",
                 1 },
    /* One transaction-scoped advisory lock per missing card, in key order
     * (OFFSET 0 keeps the sort below the volatile call). */
    [S_LOCK_CARDS] = { "lock_cards",
                       "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT "
                       "hashtextextended(c, " PGC_STR(PGC_GUARD_KEY1) ") AS k "
                       "FROM unnest($1::text[]) AS c ORDER BY k OFFSET 0) AS s",
                       1 },
    [S_LOAD] = { "load_accounts",
                 "SELECT card_number, balance, last_txid FROM users "
                 "WHERE card_number = ANY($1::text[]) ORDER BY card_number FOR UPDATE",
                 1 },
    /* The cards that had no account, once their locks are held: one may
     * have been opened since by a batch that has committed. NOWAIT: a
     * batch that holds advisory locks never waits for a row lock (see
     * lock_missing()). */
    [S_RELOAD] = { "reload_accounts",
                   "SELECT card_number, balance, last_txid FROM users "
                   "WHERE card_number = ANY($1::text[]) ORDER BY card_number FOR UPDATE NOWAIT",
                   1 },
    [S_UPDATE] = { "settle_accounts",
                   "UPDATE users SET balance = u.b, last_txid = u.l, "
                   "n_deposits = n_deposits + u.d, n_withdrawals = n_withdrawals + u.w, "
                   "n_transfers_in = n_transfers_in + u.ti, "
                   "n_transfers_out = n_transfers_out + u.tx, n_rejected = n_rejected + u.r, "
                   "n_total = n_total + u.t "
                   "FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], "
                   "$6::int8[], $7::int8[], $8::int8[], $9::int8[]) "
                   "AS u(c, b, l, d, w, ti, tx, r, t) WHERE users.card_number = u.c",
                   9 },
    [S_CREATE] = { "open_accounts",
                   "INSERT INTO users(card_number, balance, last_txid, opened_at, n_deposits, "
                   "n_withdrawals, n_transfers_in, n_transfers_out, n_rejected, n_total) "
                   "SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], "
                   "$5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[])",
                   10 },
    [S_PRUNE] = { "prune_keys",
                  "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys "
                  "WHERE created_at < $1 LIMIT $2)",
                  2 },
};

#define MAX_ARRAYS 10

struct pg_writer {
    struct pgc *c;
    struct pgarr arr[MAX_ARRAYS];
    char session[96];
};

static struct pg_writer *W(struct ledger *l)
{
    return l->impl;
}

/* Copies the connection's failure into the ledger's last error. */
static enum lb_rc failed(struct ledger *l)
{
    struct pg_writer *w = W(l);
    snprintf(l->last_error, sizeof l->last_error, "%s", w->c->error);
    return pgc_classify(w->c);
}

static enum lb_rc run(struct ledger *l, int id, int nparams, const char *const *values,
                      PGresult **out)
{
    PGresult *r = pgc_exec(W(l)->c, stmts[id].name, stmts[id].name, 1, nparams, values);
    if (r == NULL)
        return failed(l);
    if (out != NULL)
        *out = r;
    else
        PQclear(r);
    return LB_OK;
}

static enum lb_rc simple(struct ledger *l, const char *sql)
{
    PGresult *r = pgc_exec(W(l)->c, sql, sql, 0, 0, NULL);
    if (r == NULL)
        return failed(l);
    PQclear(r);
    return LB_OK;
}

/* Closes arrays 0..n-1 into values; LB_RETRY if memory ran out. */
static enum lb_rc close_arrays(struct ledger *l, int n, const char **values)
{
    for (int i = 0; i < n; i++) {
        values[i] = pgarr_end(&W(l)->arr[i]);
        if (values[i] == NULL) {
            snprintf(l->last_error, sizeof l->last_error, "out of memory for array parameters");
            return LB_RETRY;
        }
    }
    return LB_OK;
}

static void begin_arrays(struct ledger *l, int n)
{
    for (int i = 0; i < n; i++)
        pgarr_begin(&W(l)->arr[i]);
}

static enum lb_rc pg_begin(struct ledger *l)
{
    struct pg_writer *w = W(l);
    if (pgc_ensure(w->c) != 0)
        return failed(l);
    return simple(l, "BEGIN");
}

static enum lb_rc pg_recorded(struct ledger *l, const struct txn_entry *const *entries, uint32_t n,
                              uint8_t *found)
{
    begin_arrays(l, 1);
    for (uint32_t i = 0; i < n; i++)
        pgarr_int(&W(l)->arr[0], (int64_t)entries[i]->txid);
    const char *values[1];
    PGresult *r = NULL;
    enum lb_rc rc = close_arrays(l, 1, values);
    if (rc == LB_OK)
        rc = run(l, S_RECORDED, 1, values, &r);
    if (rc != LB_OK)
        return rc;
    /* n is at most a batch: a quadratic match is cheaper than a hash here,
     * and this only runs for replays. */
    for (int row = 0; row < PQntuples(r); row++) {
        uint64_t txid = (uint64_t)pgc_int(r, row, 0, NULL);
        const char *card = PQgetisnull(r, row, 1) ? NULL : PQgetvalue(r, row, 1);
        size_t len = (size_t)PQgetlength(r, row, 1);
        int64_t amount = pgc_int(r, row, 2, NULL);
        for (uint32_t i = 0; i < n; i++)
            if (entries[i]->txid == txid)
                found[i] = ledger_row_is_entry(entries[i], card, len, amount) ? RECORDED_SAME
                                                                               : RECORDED_OTHER;
    }
    PQclear(r);
    return LB_OK;
}

static enum lb_rc pg_claim_keys(struct ledger *l, struct ledger_key_claim *c, uint32_t n,
                                int64_t now_us)
{
    struct pg_writer *w = W(l);
    begin_arrays(l, 3);
    for (uint32_t i = 0; i < n; i++) {
        pgarr_text(&w->arr[0], c[i].key, c[i].key_len);
        pgarr_int(&w->arr[1], (int64_t)c[i].txid);
        /* Stored as the int64 with the same bits, as on SQLite. */
        pgarr_int(&w->arr[2], (int64_t)c[i].fingerprint);
        c[i].owner_txid = 0;
    }
    char now[24];
    snprintf(now, sizeof now, "%" PRId64, now_us);
    const char *values[4];
    enum lb_rc rc = close_arrays(l, 3, values);
    values[3] = now;
    if (rc == LB_OK)
        rc = run(l, S_CLAIM, 4, values, NULL);
    PGresult *r = NULL;
    if (rc == LB_OK)
        rc = run(l, S_KEYS, 1, values, &r); /* array 0 is still the keys */
    if (rc != LB_OK)
        return rc;
    for (int row = 0; row < PQntuples(r); row++) {
        const char *key = PQgetvalue(r, row, 0);
        size_t len = (size_t)PQgetlength(r, row, 0);
        uint64_t txid = (uint64_t)pgc_int(r, row, 1, NULL);
        uint64_t fp = (uint64_t)pgc_int(r, row, 2, NULL);
        for (uint32_t i = 0; i < n; i++) {
            if (c[i].key_len == len && memcmp(c[i].key, key, len) == 0) {
                c[i].owner_txid = txid;
                c[i].owner_fingerprint = fp;
            }
        }
    }
    PQclear(r);
    for (uint32_t i = 0; i < n; i++) {
        if (c[i].owner_txid == 0) { /* inserted or there, yet not found: a bug, not a state */
            snprintf(l->last_error, sizeof l->last_error,
                     "idempotency key neither new nor recorded");
            return LB_FATAL;
        }
    }
    return LB_OK;
}

/* Marks the accounts of rows r found in the book. */
static void take_rows(struct rules_book *b, PGresult *r)
{
    for (int row = 0; row < PQntuples(r); row++) {
        int len = PQgetlength(r, row, 0);
        struct rules_account *a =
            len > 0 && len <= TXN_CARD_MAX
                ? rules_book_find(b, PQgetvalue(r, row, 0), (uint8_t)len) : NULL;
        ASSERT(a != NULL && !a->found); /* we asked for exactly these cards, each once */
        int null = 0;
        a->found = 1;
        a->balance = pgc_int(r, row, 1, &null);
        a->integer = !null; /* a NULL balance is refused like SQLite's non-integer ones */
        a->last_txid = (uint64_t)pgc_int(r, row, 2, NULL);
    }
}

/* FOR UPDATE locks rows, and a card without an account has none: a batch
 * that opens a card and one that deposits to it could each miss the other,
 * and the ledger's row order (ids) would show the opening before a deposit
 * refused as unknown_account (the reference model caught it). So the cards
 * that had no account when the accounts were loaded are locked by key:
 * every batch that names such a card, opening it or not, takes the same
 * lock, and the later one's rows come after the earlier one's. Then they
 * are read again (FOR UPDATE NOWAIT): one opened by a batch that committed
 * meanwhile is found and locked now.
 *
 * Why no deadlock: a batch takes row locks (in card order), then advisory
 * locks (the creation lock, then card keys in key order), then never waits
 * again -- the re-read does not wait, and no other batch can be creating a
 * card whose key it holds. Waits on advisory locks therefore only point at
 * batches in that phase or past it, in one order. A re-read that finds a
 * new row locked by another batch fails with 55P03, retried like any lock
 * timeout; that takes an opening racing with a third batch. */
static enum lb_rc lock_missing(struct ledger *l, struct rules_book *b)
{
    struct pg_writer *w = W(l);
    uint32_t missing = 0;
    pgarr_begin(&w->arr[1]);
    for (uint32_t i = 0; i < b->n; i++) {
        if (b->accounts[i].found)
            continue;
        missing++;
        pgarr_text(&w->arr[1], b->accounts[i].card, b->accounts[i].card_len);
    }
    if (missing == 0)
        return LB_OK;
    const char *cards[1] = { pgarr_end(&w->arr[1]) };
    if (cards[0] == NULL) {
        snprintf(l->last_error, sizeof l->last_error, "out of memory for array parameters");
        return LB_RETRY;
    }
    enum lb_rc rc;
    if (missing > MISSING_LOCKS_MAX) {
        rc = simple(l, "SELECT pg_advisory_xact_lock(" PGC_STR(PGC_GUARD_KEY1) ", "
                       PGC_STR(CREATION_KEY) ")");
    } else {
        rc = simple(l, "SELECT pg_advisory_xact_lock_shared(" PGC_STR(PGC_GUARD_KEY1) ", "
                       PGC_STR(CREATION_KEY) ")");
        if (rc == LB_OK)
            rc = run(l, S_LOCK_CARDS, 1, cards, NULL);
    }
    PGresult *r = NULL;
    if (rc == LB_OK)
        rc = run(l, S_RELOAD, 1, cards, &r);
    if (rc != LB_OK)
        return rc;
    take_rows(b, r);
    PQclear(r);
    return LB_OK;
}

static enum lb_rc pg_load(struct ledger *l, struct rules_book *b)
{
    begin_arrays(l, 1);
    for (uint32_t i = 0; i < b->n; i++)
        pgarr_text(&W(l)->arr[0], b->accounts[i].card, b->accounts[i].card_len);
    const char *values[1];
    PGresult *r = NULL;
    enum lb_rc rc = close_arrays(l, 1, values);
    if (rc == LB_OK)
        rc = run(l, S_LOAD, 1, values, &r);
    if (rc != LB_OK)
        return rc;
    take_rows(b, r);
    PQclear(r);
    return lock_missing(l, b);
}

static void put_opt(struct pgarr *a, int present, int64_t v)
{
    if (present)
        pgarr_int(a, v);
    else
        pgarr_null(a);
}

static enum lb_rc write_accounts(struct ledger *l, const struct rules_book *b)
{
    struct pg_writer *w = W(l);
    for (int pass = 0; pass < 2; pass++) {
        int creating = pass == 1;
        begin_arrays(l, 10);
        uint32_t k = 0;
        for (uint32_t i = 0; i < b->n; i++) {
            const struct rules_account *a = &b->accounts[i];
            if (!a->dirty || a->created != creating)
                continue;
            k++;
            int j = 0;
            pgarr_text(&w->arr[j++], a->card, a->card_len);
            pgarr_int(&w->arr[j++], a->balance);
            put_opt(&w->arr[j++], a->last_txid != 0, (int64_t)a->last_txid);
            if (creating)
                pgarr_int(&w->arr[j++], a->opened_at_us);
            pgarr_int(&w->arr[j++], a->counts[RULES_DEPOSIT]);
            pgarr_int(&w->arr[j++], a->counts[RULES_WITHDRAWAL]);
            pgarr_int(&w->arr[j++], a->counts[RULES_TRANSFER_IN]);
            pgarr_int(&w->arr[j++], a->counts[RULES_TRANSFER_OUT]);
            pgarr_int(&w->arr[j++], a->counts[RULES_REFUSED]);
            pgarr_int(&w->arr[j++], a->counts[RULES_TOTAL]);
        }
        if (k == 0)
            continue;
        int nparams = creating ? 10 : 9;
        const char *values[10];
        PGresult *r = NULL;
        enum lb_rc rc = close_arrays(l, nparams, values);
        if (rc == LB_OK)
            rc = run(l, creating ? S_CREATE : S_UPDATE, nparams, values, &r);
        if (rc != LB_OK)
            return rc;
        uint32_t done = (uint32_t)strtoul(PQcmdTuples(r), NULL, 10);
        PQclear(r);
        /* Every account was read and locked in this transaction. */
        ASSERT(done == k);
    }
    return LB_OK;
}

static void copy_opt(struct pgarr *a, int present, int64_t v)
{
    if (present)
        pgcopy_int(a, v);
    else
        pgcopy_null(a);
}

static void copy_name(struct pgarr *a, const char *name)
{
    if (name != NULL)
        pgcopy_text(a, name, strlen(name));
    else
        pgcopy_null(a);
}

/* One COPY row per entry that leaves a row, in RECORD_SQL's column order. */
static enum lb_rc write_rows(struct ledger *l, const struct txn_entry *batch, const uint8_t *rows,
                             const struct ledger_outcome *outs, uint32_t n, int64_t applied_at_us)
{
    struct pgarr *a = &W(l)->arr[0];
    pgarr_begin(a);
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (rows[i] == ROW_NONE)
            continue;
        k++;
        const struct txn_entry *e = &batch[i];
        const struct ledger_outcome *o = &outs[i];
        int applied = o->status == TXN_STATUS_APPLIED, full = rows[i] == ROW_FULL;
        int transfer = full && e->kind == TXN_KIND_TRANSFER;
        if (rows[i] != ROW_NO_CARD)
            pgcopy_text(a, e->card, e->card_len);
        else
            pgcopy_null(a);
        pgcopy_int(a, e->amount);
        pgcopy_int(a, applied);
        pgcopy_int(a, (int64_t)e->txid);
        copy_name(a, txn_status_name(o->status));
        copy_opt(a, applied, o->balance_after);
        pgcopy_int(a, e->queued_at_us);
        pgcopy_int(a, applied_at_us);
        copy_name(a, full ? txn_kind_name(e) : NULL);
        if (transfer)
            pgcopy_text(a, e->card2, e->card2_len);
        else
            pgcopy_null(a);
        copy_opt(a, transfer && applied, o->counterparty_balance);
        copy_name(a, o->reason != TXN_REASON_NONE ? txn_reason_name(o->reason) : NULL);
        copy_opt(a, o->original_txid != 0, (int64_t)o->original_txid);
        if (full && e->key_len > 0)
            pgcopy_text(a, e->key, e->key_len);
        else
            pgcopy_null(a);
        copy_opt(a, o->prev_txid != 0, (int64_t)o->prev_txid);
        copy_opt(a, o->counterparty_prev_txid != 0, (int64_t)o->counterparty_prev_txid);
        pgcopy_row(a);
    }
    if (k == 0)
        return LB_OK;
    size_t len = 0;
    const char *data = pgcopy_data(a, &len);
    if (data == NULL) {
        snprintf(l->last_error, sizeof l->last_error, "out of memory for the transaction rows");
        return LB_RETRY;
    }
    struct pgc *c = W(l)->c;
    PGresult *r = pgc_copy(c, "record", RECORD_SQL, data, len);
    if (r == NULL) {
        if (strcmp(c->sqlstate, "23505") == 0 && strcmp(c->constraint, TXID_INDEX) == 0) {
            snprintf(l->last_error, sizeof l->last_error, "%s", c->error);
            return LB_RECORDED;
        }
        return failed(l);
    }
    uint32_t done = (uint32_t)strtoul(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    ASSERT(done == k); /* COPY takes every row or fails */
    return LB_OK;
}

static enum lb_rc pg_write(struct ledger *l, const struct rules_book *b,
                           const struct txn_entry *batch, const uint8_t *rows,
                           const struct ledger_outcome *out, uint32_t n, int64_t applied_at_us)
{
    enum lb_rc rc = write_accounts(l, b);
    if (rc == LB_OK)
        rc = write_rows(l, batch, rows, out, n, applied_at_us);
    return rc;
}

/* Test hooks for the two halves of an unanswered COMMIT: the connection
 * lost before the server has it (nothing landed) or after it committed
 * (the answer is lost). */
static enum lb_rc lose_connection(struct ledger *l, const char *when)
{
    pgc_drop(W(l)->c);
    snprintf(l->last_error, sizeof l->last_error, "connection lost %s COMMIT (failpoint)", when);
    return LB_UNKNOWN;
}

static enum lb_rc pg_commit(struct ledger *l)
{
    struct pg_writer *w = W(l);
    if (failpoint("PG_LOST_BEFORE_COMMIT"))
        return lose_connection(l, "before");
    PGresult *r = pgc_exec(w->c, "commit", "COMMIT", 0, 0, NULL);
    if (r != NULL && failpoint("PG_LOST_AFTER_COMMIT")) {
        PQclear(r);
        return lose_connection(l, "after");
    }
    if (r != NULL) {
        /* COMMIT of a failed transaction answers ROLLBACK, not an error. */
        int rolled_back = strcmp(PQcmdStatus(r), "ROLLBACK") == 0;
        PQclear(r);
        if (!rolled_back)
            return LB_OK;
        snprintf(l->last_error, sizeof l->last_error, "COMMIT rolled back (commit)");
        return LB_RETRY;
    }
    enum lb_rc rc = failed(l);
    /* An error answer means the transaction was rolled back; no answer at
     * all means nobody knows. */
    return w->c->broken ? LB_UNKNOWN : rc;
}

static int pg_rollback(struct ledger *l)
{
    struct pg_writer *w = W(l);
    if (w->c->conn == NULL || w->c->broken) {
        pgc_drop(w->c); /* reconnected by the next begin */
        return 0;
    }
    PGresult *r = pgc_exec(w->c, "rollback", "ROLLBACK", 0, 0, NULL);
    if (r == NULL)
        pgc_drop(w->c);
    PQclear(r);
    return 0;
}

static enum lb_rc pg_prune(struct ledger *l, int64_t older_than_us, unsigned max,
                           unsigned *deleted)
{
    struct pg_writer *w = W(l);
    if (pgc_ensure(w->c) != 0)
        return failed(l);
    char older[24], limit[16];
    snprintf(older, sizeof older, "%" PRId64, older_than_us);
    snprintf(limit, sizeof limit, "%u", max);
    const char *values[2] = { older, limit };
    PGresult *r = NULL;
    enum lb_rc rc = run(l, S_PRUNE, 2, values, &r); /* autocommit: its own transaction */
    if (rc != LB_OK)
        return rc;
    *deleted = (unsigned)strtoul(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return LB_OK;
}

static int pg_set_lock_timeout(struct ledger *l, int ms)
{
    struct pg_writer *w = W(l);
    snprintf(w->session, sizeof w->session, SESSION_SQL, ms);
    if (w->c->conn == NULL || w->c->broken)
        return 0; /* applied at the next connection */
    return simple(l, w->session) == LB_OK ? 0 : -1;
}

static void pg_close(struct ledger *l)
{
    struct pg_writer *w = W(l);
    if (w == NULL)
        return;
    pgc_free(w->c);
    for (int i = 0; i < MAX_ARRAYS; i++)
        pgarr_free(&w->arr[i]);
    free(w);
    l->impl = NULL;
}

const struct ledger_ops pg_ledger_ops = {
    .name = "postgresql",
    .begin = pg_begin,
    .recorded = pg_recorded,
    .claim_keys = pg_claim_keys,
    .load = pg_load,
    .write = pg_write,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .prune = pg_prune,
    .set_lock_timeout = pg_set_lock_timeout,
    .close = pg_close,
};

int pg_ledger_open(struct ledger *l, const char *conninfo)
{
    struct pg_writer *w = calloc(1, sizeof *w);
    if (w == NULL || (w->c = pgc_new(conninfo, "txprocd-worker", PG_WORKER_TIMEOUT_MS)) == NULL) {
        free(w);
        log_error("ledger_open: out of memory");
        return -1;
    }
    l->ops = &pg_ledger_ops;
    l->impl = w;
    snprintf(w->session, sizeof w->session, SESSION_SQL, PG_LOCK_TIMEOUT_MS);
    w->c->stmts = stmts;
    w->c->n_stmts = S__COUNT;
    w->c->session_sql = w->session;
    /* A server that is down now (restarting, failing over) is waited for by
     * the batch loop, which retries with back-off; failing here would make
     * the worker die before it is ready, which the master counts toward
     * its crash loop. A server that refuses our schema is another matter. */
    if (pgc_ensure(w->c) != 0) {
        if (pgc_classify(w->c) == LB_FATAL) {
            log_error("ledger: %s", w->c->error);
            return -1;
        }
        log_warn("ledger not reachable yet (%s); will keep trying", w->c->error);
    }
    return 0;
}
