/* Brings a PostgreSQL ledger to the current schema before the workers
 * start, reads the totals the master needs, and seeds demo accounts.
 *
 * SCHEMA (txprocd_schema.version)
 *   The tables have the same columns as the SQLite ledger at the same
 *   version (ledger/sqlite_schema.c has their history), so one SQL audit
 *   reads either backend: users(card_number, balance, ...) and
 *   transactions(id, card_number, amount, success, timestamp, ...) are the
 *   prototype's logical columns. Types are PostgreSQL's (BIGINT balances
 *   and times, TEXT COLLATE "C" cards so that ORDER BY card_number is the
 *   byte order the rules sort by). There is no version below 2 on
 *   PostgreSQL: a new ledger is created at 2; later versions add steps to
 *   migrations[] below, each run with its version bump in one transaction
 *   under an advisory lock, so two starting masters cannot both run it.
 *   3  txprocd_nodes(node_id, next_k, reserved_at): the spans of txids each
 *      node has reserved (common/node.h, ledger_reserve_txids); PostgreSQL
 *      only, as nodes are. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/node.h"
#include "ledger/pg_conn.h"

#define PG_SETUP_TIMEOUT_MS 60000
#define SEED_CHUNK 10000u
#define SEED_PROGRESS_EVERY 100000u

static const char sql_v2[] =
    "CREATE TABLE IF NOT EXISTS users (card_number TEXT COLLATE \"C\" PRIMARY KEY, balance BIGINT);"
    "CREATE TABLE IF NOT EXISTS transactions (id BIGSERIAL PRIMARY KEY, "
    " card_number TEXT COLLATE \"C\", amount BIGINT, success INTEGER, "
    " timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP);"
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS last_txid BIGINT,"
    " ADD COLUMN IF NOT EXISTS opened_at BIGINT,"
    " ADD COLUMN IF NOT EXISTS n_deposits BIGINT NOT NULL DEFAULT 0,"
    " ADD COLUMN IF NOT EXISTS n_withdrawals BIGINT NOT NULL DEFAULT 0,"
    " ADD COLUMN IF NOT EXISTS n_transfers_in BIGINT NOT NULL DEFAULT 0,"
    " ADD COLUMN IF NOT EXISTS n_transfers_out BIGINT NOT NULL DEFAULT 0,"
    " ADD COLUMN IF NOT EXISTS n_rejected BIGINT NOT NULL DEFAULT 0,"
    " ADD COLUMN IF NOT EXISTS n_total BIGINT NOT NULL DEFAULT 0;"
    "ALTER TABLE transactions ADD COLUMN IF NOT EXISTS txid BIGINT,"
    " ADD COLUMN IF NOT EXISTS status TEXT,"
    " ADD COLUMN IF NOT EXISTS balance_after BIGINT,"
    " ADD COLUMN IF NOT EXISTS queued_at BIGINT,"
    " ADD COLUMN IF NOT EXISTS applied_at BIGINT,"
    " ADD COLUMN IF NOT EXISTS kind TEXT,"
    " ADD COLUMN IF NOT EXISTS counterparty TEXT COLLATE \"C\","
    " ADD COLUMN IF NOT EXISTS counterparty_balance_after BIGINT,"
    " ADD COLUMN IF NOT EXISTS reason TEXT,"
    " ADD COLUMN IF NOT EXISTS original_txid BIGINT,"
    " ADD COLUMN IF NOT EXISTS idempotency_key TEXT,"
    " ADD COLUMN IF NOT EXISTS prev_txid BIGINT,"
    " ADD COLUMN IF NOT EXISTS counterparty_prev_txid BIGINT;"
    "CREATE UNIQUE INDEX IF NOT EXISTS transactions_txid ON transactions(txid);"
    "CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT PRIMARY KEY NOT NULL, "
    " txid BIGINT NOT NULL, fingerprint BIGINT NOT NULL, created_at BIGINT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys(created_at)";

static const char sql_v3[] =
    "CREATE TABLE IF NOT EXISTS txprocd_nodes (node_id INTEGER PRIMARY KEY, "
    " next_k BIGINT NOT NULL, reserved_at BIGINT NOT NULL)";

static const struct {
    int version;
    const char *sql;
} migrations[] = {
    { 2, sql_v2 },
    { 3, sql_v3 },
};

/* One value of a one-row query, as text into out. */
static int query_text(struct pgc *c, const char *what, const char *sql, char *out, size_t cap)
{
    PGresult *r = pgc_exec(c, what, sql, 0, 0, NULL);
    if (r == NULL) {
        log_error("%s", c->error);
        return -1;
    }
    int ok = PQntuples(r) == 1 && PQnfields(r) >= 1;
    if (ok)
        snprintf(out, cap, "%s", PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
    else
        log_error("%s: no row", what);
    PQclear(r);
    return ok ? 0 : -1;
}

static int query_int(struct pgc *c, const char *what, const char *sql, int64_t *out)
{
    char text[64];
    if (query_text(c, what, sql, text, sizeof text) != 0)
        return -1;
    *out = strtoll(text, NULL, 10);
    return 0;
}

static struct pgc *connect_setup(const char *conninfo, const char *app)
{
    char desc[256];
    pgc_describe(conninfo, desc, sizeof desc);
    struct pgc *c = pgc_new(conninfo, app, PG_SETUP_TIMEOUT_MS);
    if (c == NULL) {
        log_error("out of memory");
        return NULL;
    }
    if (pgc_ensure(c) != 0) {
        log_error("cannot connect to the ledger %s: %s", desc, c->error);
        pgc_free(c);
        return NULL;
    }
    return c;
}

/* Creates or migrates inside one transaction; *from gets the version found. */
static int create_and_migrate(struct pgc *c, int64_t *from)
{
    int64_t has_table = 0;
    *from = 0;
    if (pgc_run(c, "schema transaction", "BEGIN") != 0)
        return -1;
    int rc = pgc_run(c, "schema lock", "SELECT pg_advisory_xact_lock(" PGC_STR(PGC_GUARD_KEY1) ", -1)");
    if (rc == 0)
        rc = pgc_run(c, "schema version table",
                  "CREATE TABLE IF NOT EXISTS txprocd_schema (version INTEGER NOT NULL)");
    if (rc == 0)
        rc = query_int(c, "schema version", "SELECT COALESCE(MAX(version), 0) FROM txprocd_schema",
                       from);
    if (rc == 0)
        rc = query_int(c, "existing tables",
                       "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = "
                       "current_schema() AND table_name IN ('users', 'transactions')", &has_table);
    if (rc == 0 && *from > LEDGER_SCHEMA_VERSION) {
        log_error("the ledger has schema version %" PRId64 ", newer than this build's %d; "
                  "refusing to touch it", *from, LEDGER_SCHEMA_VERSION);
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < sizeof migrations / sizeof migrations[0]; i++) {
        if (migrations[i].version <= *from)
            continue;
        char bump[96];
        snprintf(bump, sizeof bump, "DELETE FROM txprocd_schema; INSERT INTO txprocd_schema "
                 "VALUES (%d)", migrations[i].version);
        rc = pgc_run(c, "schema migration", migrations[i].sql);
        if (rc == 0)
            rc = pgc_run(c, "schema version", bump);
    }
    if (rc == 0)
        rc = pgc_run(c, "committing the schema", "COMMIT");
    if (rc != 0) {
        PGresult *r = pgc_exec(c, "rollback", "ROLLBACK", 0, 0, NULL);
        PQclear(r);
        return -1;
    }
    if (*from == 0 && has_table == 0)
        log_info("created ledger schema %d", LEDGER_SCHEMA_VERSION);
    else if (*from < LEDGER_SCHEMA_VERSION)
        log_info("migrated the ledger from schema %" PRId64 " to %d", *from, LEDGER_SCHEMA_VERSION);
    return 0;
}

static int read_totals(struct pgc *c, struct ledger_totals *out)
{
    char sum[64];
    if (query_int(c, "max txid", "SELECT COALESCE(MAX(txid), 0) FROM transactions",
                  &out->max_txid) != 0 ||
        query_int(c, "reserved txids",
                  "SELECT COALESCE(MAX(next_k * " PGC_STR(NODE_STRIDE) " - 1), 0) FROM txprocd_nodes",
                  &out->max_reserved) != 0 ||
        query_int(c, "transaction count", "SELECT COUNT(*) FROM transactions", &out->tx_count) != 0 ||
        query_int(c, "account count", "SELECT COUNT(*) FROM users", &out->account_count) != 0 ||
        /* numeric, not bigint: the sum of int64 balances may pass INT64_MAX */
        query_text(c, "balance sum", "SELECT COALESCE(SUM(balance::numeric), 0)::text FROM users",
                   sum, sizeof sum) != 0)
        return -1;
    out->balance_sum = strtod(sum, NULL);
    return 0;
}

/* The settings that decide what a commit means; logged so that a run's
 * durability is on record next to its figures. */
static void log_settings(struct pgc *c, const char *desc)
{
    char version[32] = "?", sync[32] = "?", fsync[16] = "?", standbys[128] = "";
    query_text(c, "server version", "SHOW server_version", version, sizeof version);
    query_text(c, "synchronous_commit", "SHOW synchronous_commit", sync, sizeof sync);
    query_text(c, "fsync", "SHOW fsync", fsync, sizeof fsync);
    query_text(c, "synchronous_standby_names", "SHOW synchronous_standby_names", standbys,
               sizeof standbys);
    log_info("ledger %s: PostgreSQL %s, synchronous_commit=%s, fsync=%s, "
             "synchronous_standby_names='%s'", desc, version, sync, fsync, standbys);
    if (strcmp(fsync, "off") == 0)
        log_warn("fsync is off on the ledger's server: a crash of that machine can lose or "
                 "corrupt committed transactions");
}

int pg_ledger_prepare(const char *conninfo, struct ledger_totals *out)
{
    char desc[256];
    pgc_describe(conninfo, desc, sizeof desc);
    struct pgc *c = connect_setup(conninfo, "txprocd-master");
    if (c == NULL)
        return -1;
    int64_t from = 0;
    int rc = create_and_migrate(c, &from);
    if (rc == 0)
        rc = read_totals(c, out);
    if (rc == 0) {
        log_settings(c, desc);
        log_info("ledger: %lld accounts, balance sum %.0f, %lld transactions, last txid %lld",
                 (long long)out->account_count, out->balance_sum, (long long)out->tx_count,
                 (long long)out->max_txid);
    }
    pgc_free(c);
    return rc;
}

int pg_ledger_seed(const char *conninfo, unsigned accounts, unsigned seed)
{
    char desc[256];
    pgc_describe(conninfo, desc, sizeof desc);
    struct pgc *c = connect_setup(conninfo, "txctl");
    if (c == NULL)
        return -1;
    int64_t from = 0, existing = 0, sum = 0, t0 = clock_mono_us();
    uint64_t state = seed;
    struct pgarr cards = { 0 }, balances = { 0 };
    int rc = create_and_migrate(c, &from);
    if (rc == 0)
        rc = pgc_run(c, "seed transaction", "BEGIN");
    if (rc == 0)
        rc = query_int(c, "account count", "SELECT COUNT(*) FROM users", &existing);
    if (rc == 0 && existing > 0) {
        log_error("%s already has %lld accounts; not seeding", desc, (long long)existing);
        rc = -1;
    }
    for (unsigned i = 0; rc == 0 && i < accounts; i += SEED_CHUNK) {
        unsigned end = accounts - i < SEED_CHUNK ? accounts : i + SEED_CHUNK;
        pgarr_begin(&cards);
        pgarr_begin(&balances);
        for (unsigned k = i; k < end; k++) {
            char card[TXN_CARD_MAX + 1];
            ledger_seed_card(k, card);
            int64_t balance = ledger_seed_balance(&state);
            sum += balance;
            pgarr_text(&cards, card, strlen(card));
            pgarr_int(&balances, balance);
        }
        const char *values[2] = { pgarr_end(&cards), pgarr_end(&balances) };
        if (values[0] == NULL || values[1] == NULL) {
            log_error("seed: out of memory");
            rc = -1;
            break;
        }
        PGresult *r = pgc_exec(c, "inserting demo accounts",
                               "INSERT INTO users(card_number, balance) "
                               "SELECT * FROM unnest($1::text[], $2::int8[])", 0, 2, values);
        if (r == NULL) {
            log_error("%s", c->error);
            rc = -1;
            break;
        }
        PQclear(r);
        if (accounts > SEED_PROGRESS_EVERY && end % SEED_PROGRESS_EVERY == 0)
            log_info("seed: %u/%u accounts", end, accounts);
    }
    if (rc == 0)
        rc = pgc_run(c, "committing the demo accounts", "COMMIT");
    else
        PQclear(pgc_exec(c, "rollback", "ROLLBACK", 0, 0, NULL));
    pgarr_free(&cards);
    pgarr_free(&balances);
    pgc_free(c);
    if (rc == 0)
        log_info("seeded %u accounts into %s in %.1f s (seed %u, balance sum %" PRId64 ")",
                 accounts, desc, (double)(clock_mono_us() - t0) / 1e6, seed, sum);
    return rc;
}
