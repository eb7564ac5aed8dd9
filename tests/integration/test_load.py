"""Many concurrent clients: nothing accepted is lost or applied twice, money is
conserved, and the published counters agree with the ledger."""
import collections
import time

from conftest import (Load, assert_counters_match_db, balance_sum, db_query, ledger_invariant,
                      make_ops)

ACCOUNTS = 10000
POSTS = 20000
THREADS = 48


def test_concurrent_posts_are_each_recorded_once(server_factory):
    srv = server_factory(accounts=ACCOUNTS, start=False)
    initial = balance_sum(srv.db)
    srv.start()

    ops = make_ops(POSTS, ACCOUNTS)
    t0 = time.monotonic()
    load = Load(srv.port, ops, threads=THREADS).run(timeout=150)
    sent_s = time.monotonic() - t0

    assert load.given_up == 0
    assert not load.duplicate_ids, "the same id was handed out twice: %r" % load.duplicate_ids[:10]
    assert len(load.accepted) == POSTS, (load.statuses, load.conn_errors)

    rows = srv.wait_final(load.accepted, timeout=90)
    print("%d POSTs in %.1fs, statuses %r" % (POSTS, sent_s, dict(load.statuses)))

    # Every accepted id exactly once, and nothing that was never accepted.
    dup = db_query(srv.db, "SELECT txid, COUNT(*) FROM transactions WHERE txid IS NOT NULL "
                           "GROUP BY txid HAVING COUNT(*) > 1 LIMIT 10")
    assert not dup, dup
    assert set(rows) == set(load.accepted)

    # Each row is the transaction that was accepted under that id.
    recorded = {t: (c, a) for t, c, a in db_query(
        srv.db, "SELECT txid, card_number, amount FROM transactions WHERE txid IS NOT NULL")}
    wrong = [t for t, v in load.accepted.items() if recorded.get(t) != v]
    assert not wrong, [(t, load.accepted[t], recorded.get(t)) for t in wrong[:5]]

    ledger_invariant(srv.db, initial)

    # The mix really exercised every outcome.
    outcomes = collections.Counter(rows.values())
    assert outcomes["applied"] > POSTS // 2
    assert outcomes["insufficient_funds"] > 0
    assert outcomes["unknown_account"] > 0
    unknown_sent = sum(1 for c, _ in ops if c.endswith("8641"))
    assert outcomes["unknown_account"] == unknown_sent

    counters = assert_counters_match_db(lambda: srv.metrics()["counters"], srv.db)
    assert counters["tx_accepted"] == POSTS
    assert counters["tx_queue_full"] == load.statuses[503]
    assert_counters_match_db(lambda: srv.txctl_json("stats")["counters"], srv.db)

    m = srv.metrics()
    tc = m["transaction_counts"]
    assert tc["deposits"] == counters["tx_applied_deposit"]
    assert tc["withdrawals"] == counters["tx_applied_withdrawal"]
    assert tc["insufficient_funds"] == counters["tx_insufficient_funds"]
    assert m["current_queue_size"] == 0
    assert m["queue"]["depth"] == 0 and m["queue"]["claimed"] == 0
