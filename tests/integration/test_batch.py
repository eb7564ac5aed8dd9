"""POST /transactions: arrays of up to 1,000 transactions, queued all or none."""
import json

from conftest import (balance_sum, card, cont_workers, ledger_invariant, stop_workers,
                      unknown_card, wait_until)

JSON = {"Content-Type": "application/json"}


def post_batch(srv, items, **kw):
    return srv.post("/transactions", data=json.dumps(items), headers=JSON, **kw)


def refused(r, code, message):
    """An error answer with exactly this message."""
    assert r.status_code == code, (r.status_code, r.text)
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    assert r.json() == {"status": "error", "message": message}, r.json()


def queue_state(srv):
    """What must not move when a batch is refused."""
    q = srv.queue()
    c = srv.metrics()["counters"]
    return q["depth"] + q["claimed"], q["next_txid"], c["tx_accepted"]


def test_batch_is_queued_in_order_and_applied(server):
    items = [{"card_number": card(i), "amount": 100 + i} for i in range(50)]
    items.append({"card_number": unknown_card(7), "amount": 5})
    items.append({"card_number": card(3), "amount": -10 ** 12})  # more than any balance
    before = server.metrics()["counters"]
    r = post_batch(server, items)
    assert r.status_code == 202, r.text
    ids = [int(x) for x in r.json()["ids"]]
    assert r.json()["ids"] == [str(i) for i in ids]       # strings, like POST /transaction
    assert ids == list(range(ids[0], ids[0] + len(items)))  # one id each, consecutive, in order
    rows = server.wait_final(ids)
    recorded = {t: (c, a) for t, c, a in server.query(
        "SELECT txid, card_number, amount FROM transactions WHERE txid IS NOT NULL")}
    for txid, item in zip(ids, items):
        assert recorded[txid] == (item["card_number"], item["amount"])
    assert [rows[t] for t in ids[:50]] == ["applied"] * 50
    assert rows[ids[50]] == "unknown_account"
    assert rows[ids[51]] == "insufficient_funds"
    body = server.transaction(ids[10]).json()
    assert (body["card_number"], body["amount"], body["status"]) == (card(10), 110, "applied")
    after = server.metrics()["counters"]
    assert after["tx_accepted"] - before["tx_accepted"] == len(items)


def test_batch_with_an_invalid_element_queues_nothing(server):
    before = queue_state(server)
    good = {"card_number": card(1), "amount": 5}
    r = post_batch(server, [good, good, {"card_number": card(2), "amount": 1.5}, good])
    refused(r, 400, "element 2: amount must be an integer")
    r = post_batch(server, [good, {"amount": 5}])
    refused(r, 400, "element 1: card_number is required")
    r = post_batch(server, [good, "text"])
    refused(r, 400, "element 1: must be a JSON object")
    r = post_batch(server, [good, {"card_number": "12-34", "amount": 5}])
    refused(r, 400, "element 1: card_number must be a string of 1-32 digits and spaces")
    r = post_batch(server, [])
    refused(r, 400, "body must hold at least one transaction")
    r = post_batch(server, good)
    refused(r, 400, "body must be a JSON array of transaction objects")
    r = server.post("/transactions", data="[" + json.dumps(good) + ",", headers=JSON)
    refused(r, 400, "body is not valid JSON")
    r = server.post("/transactions", data=json.dumps([good]), headers={"Content-Type": "text/plain"})
    refused(r, 415, "Content-Type must be application/json")
    r = server.get("/transactions")
    assert r.status_code == 405 and r.headers.get("Allow") == "POST", (r.status_code, r.headers)
    assert queue_state(server) == before
    assert server.query("SELECT COUNT(*) FROM transactions")[0][0] == 0


def test_batch_too_large_is_413_and_queues_nothing(server):
    before = queue_state(server)
    item = {"card_number": card(1), "amount": 5}
    r = post_batch(server, [item] * 1001)
    refused(r, 413, "at most 1000 transactions per request, got 1001")
    # 256 KiB is the body limit of this route (POST /transaction keeps 4096).
    padded = [dict(item, note="x" * 3000) for _ in range(100)]
    r = post_batch(server, padded)
    refused(r, 413, "request body larger than 262144 bytes")
    r = post_batch(server, [item, dict(item, note="x" * 5000)])
    refused(r, 413, "element 1: larger than 4096 bytes")
    assert queue_state(server) == before
    # The largest batch there is goes through.
    r = post_batch(server, [item] * 1000)
    assert r.status_code == 202, r.text
    assert len(r.json()["ids"]) == 1000


def test_batch_without_room_for_all_is_503_and_queues_nothing(server_factory):
    srv = server_factory(args=["--queue-size", "64", "--batch-max", "8"], workers=1)
    pids = stop_workers(srv)
    try:
        first = post_batch(srv, [{"card_number": card(i), "amount": 1} for i in range(40)])
        assert first.status_code == 202, first.text
        before = queue_state(srv)
        r = post_batch(srv, [{"card_number": card(i), "amount": 2} for i in range(25)])
        refused(r, 503, "queue full, retry later")
        assert r.headers.get("Retry-After") == "1"
        assert queue_state(srv) == before
        assert srv.metrics()["counters"]["tx_queue_full"] == 25
        # What fits still goes in.
        r = post_batch(srv, [{"card_number": card(i), "amount": 3} for i in range(24)])
        assert r.status_code == 202, r.text
        assert srv.queue()["depth"] + srv.queue()["claimed"] == 64
    finally:
        cont_workers(pids)
    ids = [int(x) for x in first.json()["ids"]] + [int(x) for x in r.json()["ids"]]
    rows = srv.wait_final(ids, timeout=30)
    assert all(rows[t] == "applied" for t in ids)
    assert not srv.query("SELECT COUNT(*) FROM transactions WHERE amount = 2")[0][0]


def test_batches_under_load_conserve_money(server_factory, tmp_path):
    srv = server_factory(accounts=200, start=False)
    initial = balance_sum(srv.db)
    srv.start()
    sent = {}
    for b in range(40):
        items = [{"card_number": card((b * 31 + i) % 200), "amount": (-1) ** i * (1 + (b * i) % 9000)}
                 for i in range(250)]
        r = post_batch(srv, items)
        assert r.status_code == 202, r.text
        for txid, item in zip(r.json()["ids"], items):
            sent[int(txid)] = item
    assert len(sent) == 10000
    srv.wait_final(sent, timeout=60)
    ledger_invariant(srv.db, initial)
    wait_until(lambda: srv.metrics()["counters"]["tx_accepted"] == 10000, 10, "tx_accepted")
