"""POST /transfer: money moves between two accounts in one ledger
transaction or not at all; every refusal is recorded with its reason."""
import json
import random

import pytest

from conftest import (INT64_MAX, JSON, Traffic, assert_error, assert_recorded_once, balance_sum,
                      card, db_exec, ledger_invariant, unknown_card, wait_txn, wait_until)


def submit_transfer(srv, src, dst, amount, headers=None):
    r = srv.transfer(src, dst, amount, headers)
    assert r.status_code == 202, (r.status_code, r.text)
    return int(r.json()["id"])


def row(srv, txid):
    cols = ("card_number", "counterparty", "amount", "kind", "status", "reason", "success",
            "balance_after", "counterparty_balance_after")
    (values,) = srv.query("SELECT %s FROM transactions WHERE txid = ?" % ", ".join(cols), (txid,))
    return dict(zip(cols, values))


def test_transfer_returns_202_with_location(shared_server):
    r = shared_server.transfer(card(300), card(301), 5)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued", body
    assert isinstance(body["id"], str) and body["id"].isdigit(), body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert r.headers["Location"] == "/transaction/%s" % body["id"]
    follow = shared_server.get(r.headers["Location"])
    assert follow.status_code == 200 and follow.json()["id"] == body["id"], follow.text


def test_transfer_is_applied_to_both_accounts(shared_server):
    srv, a, b = shared_server, card(302), card(303)
    before_a, before_b = srv.balance(a), srv.balance(b)
    txid = submit_transfer(srv, a, b, 12345)
    body = wait_txn(srv, txid)
    assert body["status"] == "applied", body
    assert (body["kind"], body["card_number"], body["to"], body["amount"]) == \
        ("transfer", a, b, 12345), body
    assert body["balance_after"] == before_a - 12345, body
    assert body["to_balance_after"] == before_b + 12345, body
    assert (srv.balance(a), srv.balance(b)) == (before_a - 12345, before_b + 12345)
    assert row(srv, txid) == {
        "card_number": a, "counterparty": b, "amount": 12345, "kind": "transfer",
        "status": "applied", "reason": None, "success": 1,
        "balance_after": before_a - 12345, "counterparty_balance_after": before_b + 12345}
    # One row for the whole transfer.
    assert srv.query("SELECT COUNT(*) FROM transactions WHERE txid = ?", (txid,)) == [(1,)]


def test_transfer_of_the_whole_balance_is_applied(shared_server):
    srv, a, b = shared_server, card(304), card(305)
    before_a, before_b = srv.balance(a), srv.balance(b)
    body = wait_txn(srv, submit_transfer(srv, a, b, before_a))
    assert body["status"] == "applied" and body["balance_after"] == 0, body
    assert (srv.balance(a), srv.balance(b)) == (0, before_b + before_a)


REFUSALS = [
    # (name, from, to, amount or None for "more than from has", reason)
    ("same_account", card(310), card(310), 10, "same_account"),
    ("unknown_from", unknown_card(311), card(311), 10, "unknown_account"),
    ("unknown_to", card(312), unknown_card(312), 10, "unknown_account"),
    ("unknown_both", unknown_card(313), unknown_card(314), 10, "unknown_account"),
    ("insufficient_funds", card(315), card(316), None, "insufficient_funds"),
    ("insufficient_by_one", card(317), card(318), "one_more", "insufficient_funds"),
]


@pytest.mark.parametrize("src,dst,amount,reason", [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
def test_refused_transfer_is_rejected_and_changes_nothing(shared_server, src, dst, amount, reason):
    srv = shared_server
    before = {c: srv.balance(c) for c in (src, dst)}
    if amount is None:
        amount = 10 ** 15
    elif amount == "one_more":
        amount = before[src] + 1
    txid = submit_transfer(srv, src, dst, amount)
    body = wait_txn(srv, txid)
    assert (body["status"], body["reason"]) == ("rejected", reason), body
    assert body.get("balance_after") is None and body.get("to_balance_after") is None, body
    assert (body["card_number"], body["to"], body["amount"]) == (src, dst, amount), body
    assert {c: srv.balance(c) for c in (src, dst)} == before
    r = row(srv, txid)
    assert (r["status"], r["reason"], r["success"], r["kind"]) == \
        ("rejected", reason, 0, "transfer"), r
    assert r["balance_after"] is None and r["counterparty_balance_after"] is None, r
    for c in (src, dst):
        if before[c] is None:
            assert srv.query("SELECT COUNT(*) FROM users WHERE card_number = ?", (c,)) == [(0,)]


def test_transfer_overflowing_the_receiver_is_rejected(server_factory):
    srv = server_factory(start=False)
    rich, src = card(8), card(9)
    db_exec(srv.db, "UPDATE users SET balance = 0")
    db_exec(srv.db, "UPDATE users SET balance = ? WHERE card_number = ?", (INT64_MAX - 100, rich))
    db_exec(srv.db, "UPDATE users SET balance = ? WHERE card_number = ?", (10 ** 6, src))
    srv.start()
    body = wait_txn(srv, submit_transfer(srv, src, rich, 101))
    assert (body["status"], body["reason"]) == ("rejected", "overflow"), body
    assert (srv.balance(src), srv.balance(rich)) == (10 ** 6, INT64_MAX - 100)
    # Exactly up to the limit is fine, and money can leave the full account.
    body = wait_txn(srv, submit_transfer(srv, src, rich, 100))
    assert body["status"] == "applied" and body["to_balance_after"] == INT64_MAX, body
    body = wait_txn(srv, submit_transfer(srv, rich, src, 10 ** 15))
    assert body["status"] == "applied" and body["balance_after"] == INT64_MAX - 10 ** 15, body
    assert srv.balance(src) == 10 ** 6 - 100 + 10 ** 15


BAD_TRANSFERS = [
    # (name, body, field the message must name)
    ("from_missing", {"to": card(1), "amount": 1}, "from"),
    ("from_not_string", {"from": 6219861900018640, "to": card(1), "amount": 1}, "from"),
    ("from_null", {"from": None, "to": card(1), "amount": 1}, "from"),
    ("from_empty", {"from": "", "to": card(1), "amount": 1}, "from"),
    ("from_letters", {"from": "6219 abcd", "to": card(1), "amount": 1}, "from"),
    ("from_too_long", {"from": "1" * 33, "to": card(1), "amount": 1}, "from"),
    ("to_missing", {"from": card(1), "amount": 1}, "to"),
    ("to_not_string", {"from": card(1), "to": 42, "amount": 1}, "to"),
    ("to_dashes", {"from": card(1), "to": "6219-8619", "amount": 1}, "to"),
    ("to_too_long", {"from": card(1), "to": "1" * 33, "amount": 1}, "to"),
    ("amount_missing", {"from": card(1), "to": card(2)}, "amount"),
    ("amount_zero", {"from": card(1), "to": card(2), "amount": 0}, "amount"),
    ("amount_negative", {"from": card(1), "to": card(2), "amount": -5}, "amount"),
    ("amount_float", {"from": card(1), "to": card(2), "amount": 1.5}, "amount"),
    ("amount_string", {"from": card(1), "to": card(2), "amount": "5"}, "amount"),
    ("amount_true", {"from": card(1), "to": card(2), "amount": True}, "amount"),
    ("amount_above_limit", {"from": card(1), "to": card(2), "amount": 10 ** 15 + 1}, "amount"),
    ("amount_beyond_int64", {"from": card(1), "to": card(2), "amount": 2 ** 64}, "amount"),
    ("unknown_field", {"from": card(1), "to": card(2), "amount": 5, "memo": "x"}, None),
    ("card_number_instead", {"card_number": card(1), "to": card(2), "amount": 5}, None),
    ("not_json", b"from=1&to=2&amount=3", None),
    ("array", [{"from": card(1), "to": card(2), "amount": 5}], None),
    ("empty", b"", None),
]


@pytest.mark.parametrize("body,field", [b[1:] for b in BAD_TRANSFERS],
                         ids=[b[0] for b in BAD_TRANSFERS])
def test_bad_transfer_is_400_and_queues_nothing(shared_server, body, field):
    before = shared_server.queue()["next_txid"]
    r = shared_server.post_json("/transfer", body)
    assert_error(r, 400, field)
    assert "Location" not in r.headers
    assert shared_server.queue()["next_txid"] == before


def test_transfer_needs_json_content_type_and_small_body(shared_server):
    data = json.dumps({"from": card(1), "to": card(2), "amount": 1})
    assert_error(shared_server.post("/transfer", data=data, headers={"Content-Type": "text/plain"}),
                 415)
    big = json.dumps({"from": card(1), "to": card(2), "amount": 1, "pad": "x" * 5000})
    assert_error(shared_server.post("/transfer", data=big, headers=JSON), 413)
    r = shared_server.get("/transfer")
    assert_error(r, 405)
    assert "POST" in r.headers.get("Allow", ""), r.headers


def test_concurrent_transfers_conserve_money_and_chain_balances(server_factory):
    """Many transfers among a few accounts from many connections: money is
    conserved, nothing goes negative, and replaying the rows in commit order
    gives every recorded balance_after and counterparty_balance_after."""
    srv = server_factory(accounts=30, start=False)
    initial = balance_sum(srv.db)
    start = dict(srv.query("SELECT card_number, balance FROM users"))
    srv.start()
    rng = random.Random(5)
    hot = [card(i) for i in range(8)]
    ops = []
    for _ in range(3000):
        a, b = rng.sample(hot, 2)
        ops.append(("/transfer", {"from": a, "to": b, "amount": rng.randint(1, 3_000_000)}, None))
    traffic = Traffic(srv.port, ops, threads=12).run(timeout=120)
    assert traffic.conn_errors == 0
    accepted = {}
    for (_, body, _h), (status, resp, _headers) in zip(ops, traffic.results):
        assert status == 202, (status, resp)
        accepted[int(resp["id"])] = (body["from"], body["amount"], body["to"])
    rows = assert_recorded_once(srv.db, accepted)
    statuses = set(rows[t] for t in accepted)
    assert statuses <= {"applied", "rejected"}, statuses
    ledger_invariant(srv.db, initial)
    assert balance_sum(srv.db) == initial

    model = dict(start)
    applied = refused = 0
    for txid, src, dst, amount, status, reason, after, cp_after in srv.query(
            "SELECT txid, card_number, counterparty, amount, status, reason, balance_after, "
            "counterparty_balance_after FROM transactions ORDER BY id"):
        if model[src] >= amount:
            model[src] -= amount
            model[dst] += amount
            assert (status, after, cp_after) == ("applied", model[src], model[dst]), txid
            applied += 1
        else:
            assert (status, reason, after) == ("rejected", "insufficient_funds", None), txid
            refused += 1
    assert applied > 1000 and refused > 0, (applied, refused)
    assert dict(srv.query("SELECT card_number, balance FROM users")) == model
    # Counters are published right after each commit.
    counters = wait_until(lambda: (lambda c: c["transfers"] == applied and c)(
        srv.metrics()["counters"]), 10, "the transfers counter to reach %d" % applied)
    assert (counters["transfers"], counters["transfers_rejected"]) == (applied, refused), counters
    assert counters["balance_delta"] == 0, counters
