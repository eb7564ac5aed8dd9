/* The PostgreSQL backend's read side (struct lookup_ops in backend.h) for a
 * frontend or txctl: one connection, opened at the first read and reused,
 * dropped after a failure and opened again at a later read. Reads run in
 * autocommit (each is its own snapshot), so later reads see later commits.
 * A frontend reads inside its event loop, so every read is bounded by the
 * reader's deadline and an unreachable server answers LOOKUP_ERROR (503 to
 * the client) at once for a second after a failure instead of making every
 * request wait for its own timeout. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/clock.h"
#include "common/log.h"
#include "ledger/pg_conn.h"

#define PG_READER_DOWN_US 1000000 /* after a failure, no new try for this long */

enum { R_ROW, R_BALANCE, R_KEY, R_ACCOUNT, R_HEAD, R__COUNT };

/* Rows written before the status column existed carry only 'success', and
 * rows written before the kind column only the sign of amount (a ledger
 * migrated from SQLite keeps them). */
static const struct pgc_stmt stmts[R__COUNT] = {
    [R_ROW] = { "row",
                "SELECT card_number, amount,"
                " COALESCE(status, CASE success WHEN 1 THEN 'applied' ELSE 'rejected' END),"
                " balance_after, queued_at, applied_at,"
                " COALESCE(kind, CASE WHEN amount < 0 THEN 'withdrawal' ELSE 'deposit' END),"
                " counterparty, counterparty_balance_after, reason, original_txid,"
                " idempotency_key, prev_txid, counterparty_prev_txid"
                " FROM transactions WHERE txid = $1::int8", 1 },
    [R_BALANCE] = { "balance", "SELECT balance FROM users WHERE card_number = $1", 1 },
    [R_KEY] = { "key", "SELECT txid, fingerprint FROM idempotency_keys WHERE key = $1", 1 },
    [R_ACCOUNT] = { "account",
                    "SELECT balance, opened_at, n_deposits, n_withdrawals, n_transfers_in,"
                    " n_transfers_out, n_rejected, n_total FROM users WHERE card_number = $1", 1 },
    [R_HEAD] = { "head", "SELECT last_txid FROM users WHERE card_number = $1", 1 },
};

struct pg_reader {
    struct pgc *c;
    int64_t down_until_us; /* monotonic; 0: up */
    int64_t down_since_us;
};

/* Runs one read; NULL after a failure (logged once per outage). */
static PGresult *query(struct lookup *lk, int id, const char *param, size_t len)
{
    struct pg_reader *r = lk->impl;
    int64_t now = clock_mono_us();
    if (r->down_until_us != 0 && now < r->down_until_us)
        return NULL;
    /* A text parameter must end in NUL; callers pass validated cards, keys
     * and txids, all shorter than a key. */
    char copy[TXN_KEY_MAX + 1];
    ASSERT(len < sizeof copy);
    memcpy(copy, param, len);
    copy[len] = '\0';
    const char *values[1] = { copy };
    PGresult *res = NULL;
    if (pgc_ensure(r->c) == 0)
        res = pgc_exec(r->c, stmts[id].name, stmts[id].name, 1, 1, values);
    if (res != NULL) {
        if (r->down_since_us != 0)
            log_info("lookup: ledger reachable again after %.1f s",
                     (double)(now - r->down_since_us) / 1e6);
        r->down_until_us = r->down_since_us = 0;
        return res;
    }
    if (r->down_since_us == 0) {
        log_error("lookup: %s; answering 503 until the ledger answers again", r->c->error);
        r->down_since_us = now;
    }
    if (r->c->broken)
        pgc_drop(r->c);
    r->down_until_us = clock_mono_us() + PG_READER_DOWN_US;
    return NULL;
}

static int found(PGresult *res)
{
    return PQntuples(res) > 0;
}

static void copy_text(const PGresult *res, int col, char *out, size_t cap)
{
    snprintf(out, cap, "%s", PQgetisnull(res, 0, col) ? "" : PQgetvalue(res, 0, col));
}

static int column(const PGresult *res, int col, int64_t *out)
{
    int null = 0;
    int64_t v = pgc_int(res, 0, col, &null);
    if (!null)
        *out = v;
    return !null;
}

static uint64_t column_txid(const PGresult *res, int col)
{
    int64_t v = pgc_int(res, 0, col, NULL);
    return v > 0 ? (uint64_t)v : 0;
}

static enum lookup_result pr_row(struct lookup *lk, uint64_t txid, struct lookup_txn *t,
                                 uint64_t *prev, uint64_t *counterparty_prev)
{
    char id[24];
    int n = snprintf(id, sizeof id, "%" PRIu64, txid);
    PGresult *res = query(lk, R_ROW, id, (size_t)n);
    if (res == NULL)
        return LOOKUP_ERROR;
    enum lookup_result r = found(res) ? LOOKUP_FOUND : LOOKUP_NOT_FOUND;
    if (r == LOOKUP_FOUND) {
        memset(t, 0, sizeof *t);
        copy_text(res, 0, t->card, sizeof t->card);
        t->amount = pgc_int(res, 0, 1, NULL);
        copy_text(res, 2, t->status, sizeof t->status);
        t->has_balance_after = column(res, 3, &t->balance_after);
        t->has_queued_at = column(res, 4, &t->queued_at_us);
        t->has_applied_at = column(res, 5, &t->applied_at_us);
        copy_text(res, 6, t->kind, sizeof t->kind);
        copy_text(res, 7, t->counterparty, sizeof t->counterparty);
        t->has_counterparty_balance_after = column(res, 8, &t->counterparty_balance_after);
        copy_text(res, 9, t->reason, sizeof t->reason);
        t->original_txid = column_txid(res, 10);
        copy_text(res, 11, t->key, sizeof t->key);
        *prev = column_txid(res, 12);
        *counterparty_prev = column_txid(res, 13);
    }
    PQclear(res);
    return r;
}

static enum lookup_result pr_balance(struct lookup *lk, const char *card, size_t len,
                                     int64_t *balance)
{
    PGresult *res = query(lk, R_BALANCE, card, len);
    if (res == NULL)
        return LOOKUP_ERROR;
    enum lookup_result r = found(res) ? LOOKUP_FOUND : LOOKUP_NOT_FOUND;
    if (r == LOOKUP_FOUND)
        *balance = pgc_int(res, 0, 0, NULL);
    PQclear(res);
    return r;
}

static enum lookup_result pr_key(struct lookup *lk, const char *key, size_t len, uint64_t *txid,
                                 uint64_t *fingerprint)
{
    PGresult *res = query(lk, R_KEY, key, len);
    if (res == NULL)
        return LOOKUP_ERROR;
    enum lookup_result r = found(res) ? LOOKUP_FOUND : LOOKUP_NOT_FOUND;
    if (r == LOOKUP_FOUND) {
        *txid = (uint64_t)pgc_int(res, 0, 0, NULL);
        *fingerprint = (uint64_t)pgc_int(res, 0, 1, NULL);
    }
    PQclear(res);
    return r;
}

static enum lookup_result pr_account(struct lookup *lk, const char *card, size_t len,
                                     struct lookup_account *out)
{
    PGresult *res = query(lk, R_ACCOUNT, card, len);
    if (res == NULL)
        return LOOKUP_ERROR;
    enum lookup_result r = found(res) ? LOOKUP_FOUND : LOOKUP_NOT_FOUND;
    if (r == LOOKUP_FOUND) {
        out->balance = pgc_int(res, 0, 0, NULL);
        out->has_created_at = column(res, 1, &out->created_at_us);
        out->deposits = pgc_int(res, 0, 2, NULL);
        out->withdrawals = pgc_int(res, 0, 3, NULL);
        out->transfers_in = pgc_int(res, 0, 4, NULL);
        out->transfers_out = pgc_int(res, 0, 5, NULL);
        out->rejected = pgc_int(res, 0, 6, NULL);
        out->total = pgc_int(res, 0, 7, NULL);
    }
    PQclear(res);
    return r;
}

static enum lookup_result pr_head(struct lookup *lk, const char *card, size_t len, uint64_t *head)
{
    *head = 0;
    PGresult *res = query(lk, R_HEAD, card, len);
    if (res == NULL)
        return LOOKUP_ERROR;
    enum lookup_result r = found(res) ? LOOKUP_FOUND : LOOKUP_NOT_FOUND;
    if (r == LOOKUP_FOUND)
        *head = column_txid(res, 0);
    PQclear(res);
    return r;
}

static void pr_close(struct lookup *lk)
{
    struct pg_reader *r = lk->impl;
    if (r == NULL)
        return;
    pgc_free(r->c);
    free(r);
    lk->impl = NULL;
}

static const struct lookup_ops pg_lookup_ops = {
    .row = pr_row,
    .balance = pr_balance,
    .key = pr_key,
    .account = pr_account,
    .head = pr_head,
    .close = pr_close,
};

int pg_lookup_open(struct lookup *lk, const char *conninfo, int timeout_ms)
{
    struct pg_reader *r = calloc(1, sizeof *r);
    if (r == NULL || (r->c = pgc_new(conninfo, "txprocd-reader", timeout_ms)) == NULL) {
        free(r);
        log_error("lookup: out of memory");
        return -1;
    }
    r->c->stmts = stmts;
    r->c->n_stmts = R__COUNT;
    /* A reader never writes, whatever a bug may try. */
    r->c->session_sql = "SET default_transaction_read_only = on";
    lk->ops = &pg_lookup_ops;
    lk->impl = r;
    return 0;
}
