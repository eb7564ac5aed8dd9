"""txctl migrate: a prototype's users.db and a txprocd SQLite ledger with
statements and idempotency keys, copied into PostgreSQL, read back the same:
totals, rows, statements, lookups and key replays; the server goes on from
there. A non-empty target is refused and left as it was."""

import pytest

from conftest import (Server, balance_sum, card, db_query, new_pg_db, prefer_wait, run_txctl,
                      seed_pg_db, wait_final)
from test_migration import make_prototype_db

pytestmark = pytest.mark.postgres_only


def migrate(src, dst, check=True):
    return run_txctl("migrate", "--from", src, "--to", dst, timeout=300, check=check)


def rows(db, sql):
    """Rows with timestamps as the text SQLite keeps them."""
    return [tuple(str(v) if type(v).__name__ == "datetime" else v for v in r)
            for r in db_query(db, sql)]


USERS = ("SELECT card_number, balance, last_txid, opened_at, n_deposits, n_withdrawals, "
         "n_transfers_in, n_transfers_out, n_rejected, n_total FROM users ORDER BY card_number")
TRANSACTIONS = ("SELECT id, card_number, amount, success, timestamp, txid, status, balance_after, "
                "queued_at, applied_at, kind, counterparty, counterparty_balance_after, reason, "
                "original_txid, idempotency_key, prev_txid, counterparty_prev_txid "
                "FROM transactions ORDER BY id")
KEYS = "SELECT key, txid, fingerprint, created_at FROM idempotency_keys ORDER BY key"


def test_prototype_users_db_is_copied_whole(tmp_path):
    src = tmp_path / "users.db"
    make_prototype_db(src, accounts=3000, old_rows=400)
    dst = new_pg_db()
    p = migrate(src, dst)
    for what in ("accounts match: 3000", "transactions match: 401", "balance sum match"):
        assert what in p.stderr, p.stderr
    # The source was brought to the current schema in place (as a start of
    # the server would); both sides now read the same, row for row.
    assert rows(src, USERS) == rows(dst, USERS)
    assert rows(src, TRANSACTIONS) == rows(dst, TRANSACTIONS)
    srv = Server(tmp_path / "srv", db=dst)
    try:
        srv.start()
        before = srv.balance(card(5))
        txid = srv.submit(card(5), 100)
        assert wait_final(dst, [txid], timeout=15)[txid] == "applied"
        assert srv.balance(card(5)) == before + 100
        # New rows get ids after the copied ones.
        assert db_query(dst, "SELECT id FROM transactions WHERE txid = ?", (txid,)) == [(402,)]
        srv.stop_and_check()
    finally:
        srv.cleanup()


def test_txprocd_ledger_with_statements_and_keys_reads_the_same(tmp_path):
    src_srv = Server(tmp_path / "sqlite", accounts=200)
    try:
        src_srv.start()
        ids = [src_srv.submit(card(i % 20), 1000 + i) for i in range(60)]
        ids += [src_srv.submit(card(i % 20), -500) for i in range(20)]
        r = src_srv.transfer(card(1), card(2), 777, headers={"Idempotency-Key": "pay-1"})
        assert r.status_code == 202, r.text
        keyed = int(r.json()["id"])
        r = src_srv.post_json("/accounts", {"card_number": "4000 1234", "balance": 50},
                              headers=prefer_wait(10))
        assert r.status_code in (200, 201), r.text
        wait_final(src_srv.db, ids + [keyed], timeout=30)
        views = {c: src_srv.get("/accounts/%s/transactions" % c, params={"limit": 100}).json()
                 for c in (card(1), card(2), card(7), "4000 1234")}
        accounts = {c: src_srv.get("/accounts/%s" % c).json() for c in views}
        lookups = {t: src_srv.transaction(t).json() for t in (ids[0], ids[-1], keyed)}
        src_srv.stop_and_check()
    finally:
        src_srv.cleanup()

    dst = new_pg_db()
    migrate(src_srv.db, dst)
    assert rows(src_srv.db, USERS) == rows(dst, USERS)
    assert rows(src_srv.db, TRANSACTIONS) == rows(dst, TRANSACTIONS)
    assert rows(src_srv.db, KEYS) == rows(dst, KEYS)
    assert balance_sum(src_srv.db) == balance_sum(dst)

    srv = Server(tmp_path / "pg", db=dst)
    try:
        srv.start()
        for c, view in views.items():
            assert srv.get("/accounts/%s/transactions" % c, params={"limit": 100}).json() == view
            assert srv.get("/accounts/%s" % c).json() == accounts[c]
        for t, body in lookups.items():
            assert srv.transaction(t).json() == body
        # The key recorded on SQLite still holds on PostgreSQL.
        r = srv.transfer(card(1), card(2), 777, headers={"Idempotency-Key": "pay-1"})
        assert r.status_code == 202 and int(r.json()["id"]) == keyed, r.text
        assert r.json()["message"] == "Request already recorded under this Idempotency-Key"
        r = srv.transfer(card(1), card(2), 778, headers={"Idempotency-Key": "pay-1"})
        assert r.status_code == 422, r.text
        # Ids go on above the copied ones.
        txid = srv.submit(card(1), 5)
        assert txid > max(ids + [keyed])
        assert wait_final(dst, [txid], timeout=15)[txid] == "applied"
        srv.stop_and_check()
    finally:
        srv.cleanup()


def test_non_empty_target_is_refused_and_untouched(tmp_path):
    src = tmp_path / "users.db"
    make_prototype_db(src, accounts=50, old_rows=5)
    dst = seed_pg_db(accounts=7)
    before = rows(dst, USERS)
    p = migrate(src, dst, check=False)
    assert p.returncode == 1, p.stderr
    assert "is not empty (7 accounts, 0 transactions); refusing to copy into it" in p.stderr
    assert rows(dst, USERS) == before


def test_bad_arguments_are_usage_errors(tmp_path):
    p = run_txctl("migrate", "--from", "postgresql://x@127.0.0.1/db", "--to", tmp_path / "a.db",
                  check=False)
    assert p.returncode == 2 and "copies a SQLite file (--from) into PostgreSQL" in p.stderr
    p = run_txctl("migrate", "--from", tmp_path / "missing.db", "--to", new_pg_db(), check=False)
    assert p.returncode == 1 and "cannot read" in p.stderr
