"""Many concurrent clients: nothing accepted is lost or applied twice, money is
conserved, and the published counters agree with the ledger."""
import collections
import http.client
import json
import os
import signal
import threading
import time

from conftest import (HTTP_TIMEOUT, Load, assert_counters_match_db, assert_recorded_once,
                      balance_sum, cont_workers, ledger_invariant, make_ops)

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

    print("%d POSTs in %.1fs, statuses %r" % (POSTS, sent_s, dict(load.statuses)))
    # Every accepted id exactly once with its own data, and nothing else.
    rows = assert_recorded_once(srv.db, load.accepted)
    assert set(rows) == set(load.accepted)

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


def test_accepted_id_is_always_found_under_load(server_factory):
    """GET /transaction/<id> for an accepted id never answers 404, whether
    the entry is queued, claimed by a worker or committed at that moment."""
    srv = server_factory(workers=1)
    worker = srv.child_pids("worker")[0]
    load = Load(srv.port, make_ops(10000, 1000, rng_seed=5), threads=8).start()
    # Pause the worker on and off, so that lookups meet entries in every state
    # and in transition between them.
    done = threading.Event()

    def stutter():
        while not done.is_set():
            os.kill(worker, signal.SIGSTOP)
            time.sleep(0.03)
            os.kill(worker, signal.SIGCONT)
            time.sleep(0.03)
    toggler = threading.Thread(target=stutter, daemon=True)
    toggler.start()
    misses, seen = [], collections.Counter()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=HTTP_TIMEOUT)
    try:
        while load.done < len(load.ops) and not load.stop.is_set() and len(misses) < 5:
            with load.lock:
                recent = list(load.accepted)[-20:]
            for txid in recent:
                conn.request("GET", "/transaction/%d" % txid)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    misses.append((txid, resp.status, body[:200]))
                else:
                    seen[json.loads(body)["status"]] += 1
    finally:
        done.set()
        toggler.join(timeout=5)
        cont_workers([worker])
        conn.close()
        load.join(timeout=150)
    assert not misses, misses
    assert seen["queued"] > 0 and seen["applied"] > 0, seen
    srv.wait_final(load.accepted, timeout=60)
