"""Starting on the prototype's users.db: everything in it survives, the schema
gains the new columns, and the migrated ledger works."""
import random
import sqlite3

import pytest

from conftest import Server, card, db_query, ledger_invariant

PROTOTYPE_SCHEMA = """
CREATE TABLE users (
    card_number TEXT PRIMARY KEY,
    balance INTEGER
);
CREATE TABLE transactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    card_number TEXT,
    amount INTEGER,
    success INTEGER,
    timestamp DATETIME DEFAULT CURRENT_TIMESTAMP
);
"""
NEW_COLUMNS = {"txid", "status", "balance_after", "queued_at", "applied_at"}


def make_prototype_db(path, accounts=10000, old_rows=500):
    rng = random.Random(3)
    con = sqlite3.connect(str(path))
    con.executescript(PROTOTYPE_SCHEMA)
    con.executemany("INSERT INTO users VALUES (?, ?)",
                    [(card(n), rng.randint(50000, 10000000)) for n in range(accounts)])
    rows = []
    for i in range(old_rows):
        rows.append((card(rng.randrange(accounts)), rng.choice([-1, 1]) * rng.randint(1, 5000),
                     rng.choice([0, 1]), "2024-01-%02d 12:00:%02d" % (i % 28 + 1, i % 60)))
    con.executemany("INSERT INTO transactions (card_number, amount, success, timestamp) "
                    "VALUES (?, ?, ?, ?)", rows)
    # A row written with the column default, as the prototype did.
    con.execute("INSERT INTO transactions (card_number, amount, success) VALUES (?, ?, ?)",
                (card(1), 10, 1))
    con.commit()
    con.close()


def snapshot(path):
    return (db_query(path, "SELECT card_number, balance FROM users ORDER BY card_number"),
            db_query(path, "SELECT id, card_number, amount, success, timestamp FROM transactions "
                           "ORDER BY id"))


@pytest.fixture
def prototype(tmp_path):
    db = tmp_path / "users.db"
    make_prototype_db(db)
    users, txs = snapshot(db)
    srv = Server(tmp_path / "srv", db=db)
    try:
        yield srv, users, txs
        srv.stop_and_check()
    finally:
        srv.cleanup()


def test_prototype_db_is_migrated_without_loss(prototype):
    srv, users, txs = prototype
    srv.start()
    assert len(users) == 10000 and len(txs) == 501
    now_users, now_txs = snapshot(srv.db)
    assert now_users == users
    assert now_txs == txs

    cols = {r[1] for r in db_query(srv.db, "PRAGMA table_info(transactions)")}
    assert cols >= {"id", "card_number", "amount", "success", "timestamp"} | NEW_COLUMNS
    assert {r[1] for r in db_query(srv.db, "PRAGMA table_info(users)")} >= {"card_number", "balance"}
    assert db_query(srv.db, "PRAGMA user_version")[0][0] >= 1
    assert db_query(srv.db, "PRAGMA journal_mode")[0][0].lower() == "wal"
    # txid is unique (the spec's UNIQUE constraint, through an index).
    uniq = [r for r in db_query(srv.db, "PRAGMA index_list(transactions)") if r[2]]
    unique_cols = {c[2] for idx in uniq
                   for c in db_query(srv.db, "PRAGMA index_info(%s)" % idx[1])}
    assert "txid" in unique_cols


def test_new_transaction_applies_on_migrated_db(prototype):
    srv, users, txs = prototype
    initial = sum(b for _, b in users)
    srv.start()
    c = card(77)
    before = dict(users)[c]
    r = srv.get("/balance", params={"card_number": c})
    assert r.json()["balance"] == before
    t1 = srv.submit(c, 500)
    t2 = srv.submit(c, -(before + 10 ** 6))
    rows = srv.wait_final([t1, t2], timeout=15)
    assert rows[t1] == "applied" and rows[t2] == "insufficient_funds"
    row = db_query(srv.db, "SELECT id, amount, success, balance_after, status, queued_at, applied_at "
                           "FROM transactions WHERE txid = ?", (t1,))[0]
    assert row[0] > max(t[0] for t in txs)
    assert row[1:5] == (500, 1, before + 500, "applied")
    assert row[5] > 10 ** 15 and row[6] >= row[5]   # microseconds since the epoch
    assert db_query(srv.db, "SELECT balance FROM users WHERE card_number = ?", (c,)) == [(before + 500,)]
    # Old rows carry no status; the invariant covers what this server applied.
    ledger_invariant(srv.db, initial)
    assert snapshot(srv.db)[1][:len(txs)] == txs


def test_migration_is_idempotent_across_restarts(prototype):
    srv, users, txs = prototype
    srv.start()
    t1 = srv.submit(card(5), 100)
    srv.wait_final([t1], timeout=15)
    version = db_query(srv.db, "PRAGMA user_version")[0][0]
    assert srv.terminate() == 0
    srv.start()
    assert db_query(srv.db, "PRAGMA user_version")[0][0] == version
    assert snapshot(srv.db)[1][:len(txs)] == txs
    assert db_query(srv.db, "SELECT COUNT(*) FROM transactions WHERE txid = ?", (t1,)) == [(1,)]
    t2 = srv.submit(card(5), 100)
    assert t2 > t1
    assert srv.wait_final([t2], timeout=15)[t2] == "applied"
