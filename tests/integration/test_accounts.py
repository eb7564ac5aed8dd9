"""POST /accounts, GET /accounts/<card> and account statements
(GET /accounts/<card>/transactions): what an account holder sees."""
import datetime
import re
import threading
import time
import urllib.parse

import pytest
import requests

from conftest import (HTTP_TIMEOUT, assert_error, balance_sum, card, cont_workers,
                      ledger_invariant, prefer_wait, stop_workers, unknown_card, wait_txn,
                      wait_until)

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")
WAIT = HTTP_TIMEOUT + 15

_new = iter(range(10 ** 8))


def new_card():
    """A card number txctl seed never creates, different on every call."""
    return "6219 8620 %04d %04d" % divmod(next(_new), 10 ** 4)


def enc(c):
    return c.replace(" ", "%20")


def open_account(srv, c, balance=None, headers=None):
    body = {"card_number": c} if balance is None else {"card_number": c, "balance": balance}
    return srv.post_json("/accounts", body, headers, timeout=WAIT)


def account(srv, c):
    r = srv.get("/accounts/" + enc(c))
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def statement(srv, c, query=""):
    r = srv.get("/accounts/%s/transactions%s" % (enc(c), query))
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def parse_iso(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


# --------------------------------------------------------------------------
# opening


def test_open_account_is_201_with_location_and_body(shared_server):
    srv, c = shared_server, new_card()
    t0 = datetime.datetime.now(datetime.timezone.utc)
    r = open_account(srv, c, 5000)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == "/accounts/" + enc(c)
    body = r.json()
    assert body == account(srv, c)
    assert (body["card_number"], body["balance"]) == (c, 5000), body
    assert ISO_UTC.match(body["created_at"]), body
    assert abs((parse_iso(body["created_at"]) - t0).total_seconds()) < 60, (body, t0)
    assert body["counts"] == {"deposits": 0, "withdrawals": 0, "transfers_in": 0,
                              "transfers_out": 0, "rejected": 0, "total": 1}, body
    assert srv.balance(c) == 5000
    ((kind, amount, status, after),) = srv.query(
        "SELECT kind, amount, status, balance_after FROM transactions WHERE card_number = ?", (c,))
    assert (kind, amount, status, after) == ("open", 5000, "applied", 5000)
    # The new account works.
    r = srv.post_json("/transaction", {"card_number": c, "amount": -5000}, prefer_wait(5))
    assert r.status_code == 200 and r.json()["balance_after"] == 0, r.text


def test_open_account_default_balance_is_0(shared_server):
    c = new_card()
    r = open_account(shared_server, c)
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == 0
    assert shared_server.balance(c) == 0


def test_open_existing_account_is_409(shared_server):
    srv = shared_server
    c = new_card()
    assert open_account(srv, c, 1).status_code == 201
    before = srv.queue()["next_txid"]
    for existing in (c, card(400)):   # opened here; seeded
        balance = srv.balance(existing)
        r = open_account(srv, existing, 99)
        assert_error(r, 409, message="account %s already exists" % existing)
        assert srv.balance(existing) == balance
    assert srv.queue()["next_txid"] == before, "a refused opening was queued"


def test_concurrent_openings_of_one_card_create_it_once(server_factory):
    srv = server_factory(start=False)
    initial = balance_sum(srv.db)
    srv.start()
    c = new_card()
    results = []

    def post(balance):
        results.append(requests.post(srv.base + "/accounts", json={"card_number": c,
                                                                   "balance": balance},
                                     timeout=WAIT))
    pids = stop_workers(srv)
    try:
        threads = [threading.Thread(target=post, args=(b,)) for b in (100, 200)]
        for t in threads:
            t.start()
        # Both pass the frontend's existence check while nothing is applied.
        wait_until(lambda: srv.queue()["depth"] == 2, 10, "both openings to be queued")
    finally:
        cont_workers(pids)
    for t in threads:
        t.join(WAIT)
    codes = sorted(r.status_code for r in results)
    assert codes == [201, 409], [(r.status_code, r.text) for r in results]
    winner = next(r for r in results if r.status_code == 201).json()
    loser = next(r for r in results if r.status_code == 409)
    assert loser.json()["message"] == "account %s already exists" % c, loser.text
    assert srv.balance(c) == winner["balance"]
    rows = srv.query("SELECT status, reason FROM transactions WHERE card_number = ? ORDER BY id", (c,))
    assert rows == [("applied", None), ("rejected", "account_exists")], rows
    ledger_invariant(srv.db, initial)
    counters = srv.metrics()["counters"]
    assert (counters["accounts_created"], counters["accounts_rejected"]) == (1, 1), counters


def test_open_account_wait_elapsed_is_202(server_factory):
    srv = server_factory()
    c = new_card()
    pids = stop_workers(srv)
    try:
        r = open_account(srv, c, 7, prefer_wait(1))
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "queued", body
        assert r.headers["Location"] == "/transaction/%s" % body["id"]
    finally:
        cont_workers(pids)
    assert wait_txn(srv, body["id"])["status"] == "applied"
    assert account(srv, c)["balance"] == 7


def test_open_account_retry_with_key_is_replayed(shared_server):
    srv, c, key = shared_server, new_card(), "open-%s" % time.time()
    r = open_account(srv, c, 300, {"Idempotency-Key": key})
    assert r.status_code == 201, r.text
    again = open_account(srv, c, 300, {"Idempotency-Key": key})
    assert again.status_code == 201, again.text
    assert again.headers.get("Idempotent-Replayed") == "true", again.headers
    assert again.headers["Location"] == "/accounts/" + enc(c)
    assert again.json() == account(srv, c)
    assert srv.query("SELECT COUNT(*) FROM transactions WHERE card_number = ?", (c,)) == [(1,)]


BAD_OPENINGS = [
    ("card_missing", {"balance": 5}, "card_number"),
    ("card_letters", {"card_number": "6219 abcd"}, "card_number"),
    ("card_too_long", {"card_number": "1" * 33}, "card_number"),
    ("card_not_string", {"card_number": 62198619}, "card_number"),
    ("balance_negative", {"card_number": "6219 8629 0000 0001", "balance": -1}, "balance"),
    ("balance_float", {"card_number": "6219 8629 0000 0001", "balance": 1.5}, "balance"),
    ("balance_string", {"card_number": "6219 8629 0000 0001", "balance": "1"}, "balance"),
    ("balance_above_limit", {"card_number": "6219 8629 0000 0001", "balance": 10 ** 15 + 1},
     "balance"),
    ("unknown_field", {"card_number": "6219 8629 0000 0001", "owner": "x"}, None),
    ("not_object", [{"card_number": "6219 8629 0000 0001"}], None),
]


@pytest.mark.parametrize("body,field", [b[1:] for b in BAD_OPENINGS],
                         ids=[b[0] for b in BAD_OPENINGS])
def test_bad_opening_is_400(shared_server, body, field):
    before = shared_server.queue()["next_txid"]
    assert_error(shared_server.post_json("/accounts", body), 400, field)
    assert shared_server.queue()["next_txid"] == before


def test_opening_balance_limit_is_accepted(shared_server):
    r = open_account(shared_server, new_card(), 10 ** 15)
    assert r.status_code == 201 and r.json()["balance"] == 10 ** 15, r.text


# --------------------------------------------------------------------------
# GET /accounts/<card>


def test_get_account_accepts_percent20_and_plus(shared_server):
    c = card(401)
    expected = {"card_number": c, "balance": shared_server.balance(c), "created_at": None}
    for path in ("6219%208619%200401%208640", "6219+8619+0401+8640"):
        r = shared_server.get("/accounts/" + path)
        assert r.status_code == 200, (path, r.text)
        body = r.json()
        assert {k: body[k] for k in expected} == expected, body   # seeded: no creation time


def test_get_unknown_account_is_404(shared_server):
    assert_error(shared_server.get("/accounts/" + enc(unknown_card(402))), 404)
    assert_error(shared_server.get("/accounts/%s/transactions" % enc(unknown_card(402))), 404)


@pytest.mark.parametrize("path", ["6219-8619", "abc", "1" * 33, "6219%00"])
def test_get_invalid_card_is_400(shared_server, path):
    assert_error(shared_server.get("/accounts/" + path), 400)


# --------------------------------------------------------------------------
# statements


def test_statement_shows_every_kind_signed_newest_first(shared_server):
    srv, c, other = shared_server, new_card(), card(403)
    assert open_account(srv, c, 1000).status_code == 201
    steps = [  # (path, body, expected status code)
        ("/transaction", {"card_number": c, "amount": 500}, 200),
        ("/transaction", {"card_number": c, "amount": -200}, 200),
        ("/transaction", {"card_number": c, "amount": -10 ** 9}, 409),
        ("/transfer", {"from": c, "to": other, "amount": 300}, 200),
        ("/transfer", {"from": other, "to": c, "amount": 100}, 200),
        ("/transfer", {"from": c, "to": other, "amount": 10 ** 9}, 422),
        ("/transfer", {"from": c, "to": unknown_card(403), "amount": 5}, 422),
    ]
    ids = []
    for path, body, code in steps:
        r = srv.post_json(path, body, prefer_wait(5))
        assert r.status_code == code, (path, body, r.status_code, r.text)
        ids.append(r.json()["id"])
    other_balance = srv.balance(other)

    st = statement(srv, c)
    assert st["card_number"] == c and st["next"] is None, st
    items = st["transactions"]
    got = [(it["kind"], it["amount"], it["status"], it.get("balance_after"), it.get("reason"),
            it.get("counterparty")) for it in items]
    assert got == [
        ("transfer_out", -5, "rejected", None, "unknown_account", unknown_card(403)),
        ("transfer_out", -10 ** 9, "rejected", None, "insufficient_funds", other),
        ("transfer_in", 100, "applied", 1100, None, other),
        ("transfer_out", -300, "applied", 1000, None, other),
        ("withdrawal", -10 ** 9, "insufficient_funds", None, None, None),
        ("withdrawal", -200, "applied", 1300, None, None),
        ("deposit", 500, "applied", 1500, None, None),
        ("open", 1000, "applied", 1000, None, None),
    ], got
    assert [str(it["id"]) for it in items[:-1]] == ids[::-1]
    for it in items:
        assert it["queued_at"] and it["applied_at"], it
    assert account(srv, c)["counts"] == {"deposits": 1, "withdrawals": 1, "transfers_in": 1,
                                         "transfers_out": 1, "rejected": 3, "total": 8}
    assert account(srv, c)["balance"] == 1100

    # The other side sees the same transfers from its point of view.
    theirs = statement(srv, other, "?limit=3")["transactions"]
    assert [(it["kind"], it["amount"], it["status"], it.get("counterparty")) for it in theirs] == \
        [("transfer_in", 10 ** 9, "rejected", c), ("transfer_out", -100, "applied", c),
         ("transfer_in", 300, "applied", c)], theirs
    # Its newest applied row carries its current balance; the refused one none.
    assert theirs[1]["balance_after"] == other_balance, theirs
    assert theirs[0].get("balance_after") is None, theirs


def test_statement_pagination_covers_every_row_once(shared_server):
    srv, c = shared_server, new_card()
    assert open_account(srv, c, 10).status_code == 201
    items = [{"card_number": c, "amount": 1 + i} for i in range(59)]
    r = srv.post_json("/transactions", items)
    assert r.status_code == 202, r.text
    for txid in r.json()["ids"]:
        wait_txn(srv, txid)
    expected = [str(t) for (t,) in srv.query(
        "SELECT txid FROM transactions WHERE card_number = ? OR counterparty = ? ORDER BY id DESC",
        (c, c))]
    assert len(expected) == 60

    for limit in (1, 7, 10, 60, 1000):
        seen, pages = [], 0
        link = "/accounts/%s/transactions?limit=%d" % (enc(c), limit)
        while link is not None:
            pages += 1
            assert pages <= 70, "pagination does not end"
            r = srv.get(link)
            assert r.status_code == 200, (link, r.text)
            page = r.json()
            rows = page["transactions"]
            assert len(rows) <= limit, (link, len(rows))
            if page["next"] is not None:
                assert rows, "an empty page with a next link: %s" % link
                assert page["next"] == "/accounts/%s/transactions?limit=%d&before=%s" % (
                    enc(c), limit, rows[-1]["id"]), page["next"]
            seen += [str(it["id"]) for it in rows]
            link = page["next"]
        assert seen == expected, limit
    # Default limit 50.
    first = statement(srv, c)
    assert len(first["transactions"]) == 50 and first["next"], first["next"]


def test_statement_before_must_be_a_row_of_this_account(shared_server):
    """before is a cursor into this account's statement: an id of another
    account's transaction is refused, not taken as a point in time."""
    srv, c, other = shared_server, new_card(), card(404)
    assert open_account(srv, c, 10).status_code == 201
    early = [wait_txn(srv, srv.submit(c, 1))["id"] for _ in range(3)]
    foreign = wait_txn(srv, srv.submit(other, 1))["id"]
    later = wait_txn(srv, srv.submit(c, 1))["id"]
    assert_error(srv.get("/accounts/%s/transactions?before=%s" % (enc(c), foreign)), 400,
                 message="before: transaction %s is not in the statement of %s" % (foreign, c))
    rows = statement(srv, c, "?before=%s" % later)["transactions"]
    assert [str(it["id"]) for it in rows[:3]] == [str(t) for t in early[::-1]]
    assert rows[-1]["kind"] == "open" and len(rows) == 4


@pytest.mark.parametrize("query,field", [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
    ("limit=1.5", "limit"), ("limit=", "limit"), ("before=abc", "before"), ("before=0", "before"),
    ("before=-5", "before"),
])
def test_statement_bad_parameters_are_400(shared_server, query, field):
    assert_error(shared_server.get("/accounts/%s/transactions?%s" % (enc(card(405)), query)),
                 400, field)


def test_statement_before_unknown_id_is_400(shared_server):
    missing = shared_server.queue()["next_txid"] + 10 ** 6
    assert_error(shared_server.get("/accounts/%s/transactions?before=%d" % (enc(card(405)), missing)),
                 400, message="before: transaction %d is not in the statement of %s"
                 % (missing, card(405)))


def test_statement_accepts_plus_encoding(shared_server):
    c = card(406)
    wait_txn(shared_server, shared_server.submit(c, 3))
    plus = urllib.parse.quote_plus(c)
    r = shared_server.get("/accounts/%s/transactions?limit=5" % plus)
    assert r.status_code == 200, r.text
    assert r.json()["card_number"] == c
    assert r.json()["transactions"][0]["amount"] == 3
