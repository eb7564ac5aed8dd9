/* Unit tests of the ledger's business rules (ledger/rules.c) on an
 * in-memory book, with no database: the same code decides outcomes on
 * SQLite and PostgreSQL, so these cases hold for both. Also the parts of the
 * PostgreSQL plumbing that need no server: telling a conninfo from a path,
 * describing it without its password, masking the password in argv, and
 * quoting array parameters. */
#include <string.h>

#include "common/txn.h"
#include "ledger/backend.h"
#include "ledger/pg_conn.h"
#include "ledger/rules.h"
#include "tests/unit/unit.h"

#define T_AT 1700000000000000LL

static struct txn_entry amount(uint64_t txid, const char *card, int64_t a)
{
    struct txn_entry e;
    CHECK(txn_entry_make(&e, card, strlen(card), a) == 0);
    e.txid = txid;
    return e;
}

static struct txn_entry transfer(uint64_t txid, const char *from, const char *to, int64_t a)
{
    struct txn_entry e;
    CHECK(txn_entry_make_transfer(&e, from, strlen(from), to, strlen(to), a) == 0);
    e.txid = txid;
    return e;
}

static struct txn_entry open_account(uint64_t txid, const char *card, int64_t balance)
{
    struct txn_entry e;
    CHECK(txn_entry_make_open(&e, card, strlen(card), balance) == 0);
    e.txid = txid;
    return e;
}

/* A sealed book of the batch's accounts; existing ones get the balances
 * given (a negative "balance" of -1 leaves the account missing). */
static void book_for(struct rules_book *b, const struct txn_entry *batch, unsigned n,
                     const char *const *cards, const int64_t *balances, unsigned k)
{
    rules_book_reset(b);
    for (unsigned i = 0; i < n; i++)
        CHECK(rules_book_add_entry(b, &batch[i]) == 0);
    rules_book_seal(b);
    for (unsigned i = 0; i < k; i++) {
        struct rules_account *a = rules_book_find(b, cards[i], (uint8_t)strlen(cards[i]));
        CHECK(a != NULL);
        a->found = 1;
        a->integer = 1;
        a->balance = balances[i];
        a->last_txid = 100;
    }
}

static void apply_all(struct rules_book *b, const struct txn_entry *batch, unsigned n,
                      struct ledger_outcome *out)
{
    for (unsigned i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        rules_apply(b, &batch[i], T_AT, &out[i]);
    }
}

TEST(rules_book_holds_each_card_once_in_byte_order)
{
    struct rules_book b = { 0 };
    struct txn_entry batch[] = { amount(1, "22", 5), transfer(2, "2", "22", 1), amount(3, "1", 1),
                                 transfer(4, "1", "2", 1) };
    rules_book_reset(&b);
    for (unsigned i = 0; i < 4; i++)
        CHECK(rules_book_add_entry(&b, &batch[i]) == 0);
    rules_book_seal(&b);
    CHECK_EQ_INT(b.n, 3);
    CHECK(strcmp(b.accounts[0].card, "1") == 0);
    CHECK(strcmp(b.accounts[1].card, "2") == 0);
    CHECK(strcmp(b.accounts[2].card, "22") == 0);
    CHECK(rules_book_find(&b, "3", 1) == NULL);
    rules_book_free(&b);
}

TEST(rules_hot_account_decides_against_the_running_balance)
{
    /* Six withdrawals of 25 from 100 in one batch: four apply, two are
     * refused, in batch order; the account is written once with all of it. */
    struct rules_book b = { 0 };
    struct txn_entry batch[6];
    for (unsigned i = 0; i < 6; i++)
        batch[i] = amount(200 + i, "7", -25);
    const char *cards[] = { "7" };
    int64_t bal[] = { 100 };
    book_for(&b, batch, 6, cards, bal, 1);
    struct ledger_outcome out[6];
    apply_all(&b, batch, 6, out);
    for (unsigned i = 0; i < 6; i++)
        CHECK_EQ_INT(out[i].status, i < 4 ? TXN_STATUS_APPLIED : TXN_STATUS_INSUFFICIENT_FUNDS);
    CHECK_EQ_INT(out[3].balance_after, 0);
    CHECK_EQ_INT(out[0].prev_txid, 100);
    CHECK_EQ_INT(out[5].prev_txid, 204); /* refusals join the statement too */
    const struct rules_account *a = &b.accounts[0];
    CHECK(a->dirty && !a->created);
    CHECK_EQ_INT(a->balance, 0);
    CHECK_EQ_INT(a->last_txid, 205);
    CHECK_EQ_INT(a->counts[RULES_WITHDRAWAL], 4);
    CHECK_EQ_INT(a->counts[RULES_REFUSED], 2);
    CHECK_EQ_INT(a->counts[RULES_TOTAL], 6);
    rules_book_free(&b);
}

TEST(rules_overflow_unknown_and_not_integer_are_refused)
{
    struct rules_book b = { 0 };
    struct txn_entry batch[] = { amount(1, "1", 11), amount(2, "9", 5), amount(3, "3", 1) };
    const char *cards[] = { "1", "3" };
    int64_t bal[] = { INT64_MAX - 10, 0 };
    book_for(&b, batch, 3, cards, bal, 2);
    rules_book_find(&b, "3", 1)->integer = 0;
    struct ledger_outcome out[3];
    apply_all(&b, batch, 3, out);
    CHECK_EQ_INT(out[0].status, TXN_STATUS_REJECTED);
    CHECK_EQ_INT(out[0].reason, TXN_REASON_OVERFLOW);
    CHECK_EQ_INT(rules_book_find(&b, "1", 1)->balance, INT64_MAX - 10);
    CHECK_EQ_INT(out[1].status, TXN_STATUS_UNKNOWN_ACCOUNT);
    CHECK(!rules_book_find(&b, "9", 1)->dirty);
    CHECK_EQ_INT(out[2].reason, TXN_REASON_NOT_INTEGER);
    CHECK(!rules_book_find(&b, "3", 1)->dirty); /* never rewritten */
    rules_book_free(&b);
}

TEST(rules_transfer_moves_both_or_neither)
{
    struct rules_book b = { 0 };
    struct txn_entry batch[] = { transfer(1, "1", "2", 30), transfer(2, "1", "2", 80),
                                 transfer(3, "1", "1", 5), transfer(4, "1", "8", 5),
                                 transfer(5, "2", "1", 1) };
    const char *cards[] = { "1", "2" };
    int64_t bal[] = { 100, INT64_MAX - 40 };
    book_for(&b, batch, 5, cards, bal, 2);
    struct ledger_outcome out[5];
    apply_all(&b, batch, 5, out);
    CHECK_EQ_INT(out[0].status, TXN_STATUS_APPLIED);
    CHECK_EQ_INT(out[0].balance_after, 70);
    CHECK_EQ_INT(out[0].counterparty_balance, INT64_MAX - 10);
    CHECK_EQ_INT(out[1].reason, TXN_REASON_INSUFFICIENT_FUNDS);
    CHECK_EQ_INT(out[2].reason, TXN_REASON_SAME_ACCOUNT);
    CHECK_EQ_INT(out[3].reason, TXN_REASON_UNKNOWN_ACCOUNT);
    CHECK_EQ_INT(out[4].status, TXN_STATUS_APPLIED);
    const struct rules_account *one = rules_book_find(&b, "1", 1), *two = rules_book_find(&b, "2", 1);
    CHECK_EQ_INT(one->balance, 71);
    CHECK_EQ_INT(two->balance, INT64_MAX - 11);
    CHECK_EQ_INT(one->counts[RULES_TRANSFER_OUT], 1);
    CHECK_EQ_INT(one->counts[RULES_TRANSFER_IN], 1);
    CHECK_EQ_INT(one->counts[RULES_REFUSED], 3); /* insufficient, same account, unknown "to" */
    CHECK_EQ_INT(two->counts[RULES_REFUSED], 1); /* the insufficient one joins both sides */
    CHECK_EQ_INT(out[4].prev_txid, 2);           /* "2"'s previous row: the refused transfer */
    CHECK_EQ_INT(out[4].counterparty_prev_txid, 4);
    rules_book_free(&b);
}

TEST(rules_opening_then_deposit_in_one_batch_is_one_insert)
{
    struct rules_book b = { 0 };
    struct txn_entry batch[] = { amount(1, "5", 10), open_account(2, "5", 7), amount(3, "5", 10),
                                 open_account(4, "5", 1) };
    book_for(&b, batch, 4, NULL, NULL, 0);
    struct ledger_outcome out[4];
    apply_all(&b, batch, 4, out);
    CHECK_EQ_INT(out[0].status, TXN_STATUS_UNKNOWN_ACCOUNT); /* not open yet */
    CHECK_EQ_INT(out[1].status, TXN_STATUS_APPLIED);
    CHECK_EQ_INT(out[2].status, TXN_STATUS_APPLIED);
    CHECK_EQ_INT(out[2].balance_after, 17);
    CHECK_EQ_INT(out[2].prev_txid, 2);
    CHECK_EQ_INT(out[3].reason, TXN_REASON_ACCOUNT_EXISTS);
    const struct rules_account *a = &b.accounts[0];
    CHECK(a->created && a->dirty);
    CHECK_EQ_INT(a->opened_at_us, T_AT);
    CHECK_EQ_INT(a->counts[RULES_DEPOSIT], 1);
    CHECK_EQ_INT(a->counts[RULES_TOTAL], 2);
    CHECK_EQ_INT(a->last_txid, 3);
    rules_book_free(&b);
}

TEST(ledger_backend_is_told_by_the_db_value)
{
    CHECK_EQ_INT(ledger_backend_of("users.db"), LEDGER_SQLITE);
    CHECK_EQ_INT(ledger_backend_of("/var/lib/txprocd/users.db"), LEDGER_SQLITE);
    CHECK_EQ_INT(ledger_backend_of("./a=b/users.db"), LEDGER_SQLITE);
    CHECK_EQ_INT(ledger_backend_of("postgresql://txp@127.0.0.1/ledger"), LEDGER_POSTGRES);
    CHECK_EQ_INT(ledger_backend_of("postgres://h/db"), LEDGER_POSTGRES);
    CHECK_EQ_INT(ledger_backend_of("host=pg1,pg2 dbname=ledger"), LEDGER_POSTGRES);
    CHECK_EQ_INT(ledger_backend_of(" dbname = ledger"), LEDGER_POSTGRES);
}

TEST(ledger_description_and_argv_never_show_a_password)
{
    char out[256];
    ledger_describe("postgresql://txp:hunter2@db.example:6432/ledger?sslmode=require", out,
                    sizeof out);
    CHECK(strstr(out, "hunter2") == NULL);
    CHECK(strstr(out, "host=db.example") != NULL && strstr(out, "port=6432") != NULL);
    CHECK(strstr(out, "sslmode=require") != NULL && strstr(out, "dbname=ledger") != NULL);
    ledger_describe("host=a password='x y' dbname=d", out, sizeof out);
    CHECK(strstr(out, "x y") == NULL && strstr(out, "dbname=d") != NULL);

    char uri[] = "postgresql://txp:hunter2@h/db?password=again&sslmode=require";
    ledger_hide_password(uri);
    CHECK(strcmp(uri, "postgresql://txp:*******@h/db?password=*****&sslmode=require") == 0);
    char info[] = "host=h password = 'a \\' b' user=u";
    ledger_hide_password(info);
    CHECK(strcmp(info, "host=h password = '******' user=u") == 0);
    char path[] = "/srv/password=x/users.db";
    ledger_hide_password(path);
    CHECK(strcmp(path, "/srv/password=x/users.db") == 0); /* a file path is not a conninfo */
}

TEST(pg_array_parameters_quote_what_needs_it)
{
    struct pgarr a = { 0 };
    pgarr_begin(&a);
    CHECK(strcmp(pgarr_end(&a), "{}") == 0);
    pgarr_begin(&a);
    pgarr_int(&a, -9223372036854775807LL - 1);
    pgarr_null(&a);
    pgarr_text(&a, "a \"b\" \\c,{}", 11);
    pgarr_text(&a, "NULL", 4);
    CHECK(strcmp(pgarr_end(&a), "{-9223372036854775808,NULL,\"a \\\"b\\\" \\\\c,{}\",\"NULL\"}") == 0);
    pgarr_free(&a);
}

TEST(pg_copy_rows_escape_what_needs_it)
{
    struct pgarr a = { 0 };
    size_t len = 1;
    pgarr_begin(&a);
    CHECK(strcmp(pgcopy_data(&a, &len), "") == 0 && len == 0);
    pgcopy_text(&a, "a\tb\\c\nd\re", 9);
    pgcopy_null(&a);
    pgcopy_int(&a, -9223372036854775807LL - 1);
    pgcopy_row(&a);
    pgcopy_text(&a, "\\N", 2); /* the text, not NULL */
    pgcopy_text(&a, "", 0);
    pgcopy_row(&a);
    const char *want = "a\\tb\\\\c\\nd\\re\t\\N\t-9223372036854775808\n\\\\N\t\n";
    const char *got = pgcopy_data(&a, &len);
    CHECK(got != NULL && len == strlen(want) && memcmp(got, want, len) == 0);
    pgarr_free(&a);
}
