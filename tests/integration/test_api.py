"""The HTTP API, endpoint by endpoint and error code by error code."""
import http.client
import json
import socket
import time

import pytest
import requests

from conftest import (HTTP_TIMEOUT, assert_counters_match_db, assert_error, card, cont_workers,
                      db_exec, ledger_write_lock, stop_workers, unknown_card, wait_until)

JSON = {"Content-Type": "application/json"}


def db_balance(srv, card_number):
    rows = srv.query("SELECT balance FROM users WHERE card_number = ?", (card_number,))
    return rows[0][0] if rows else None


# --------------------------------------------------------------------------
# POST /transaction


def test_post_transaction_returns_202_with_location(shared_server):
    r = shared_server.post_tx(card(1), 150)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued"
    assert body["message"] == "Transaction queued for processing"
    assert isinstance(body["id"], str) and body["id"].isdigit(), body
    assert r.headers["Location"] == "/transaction/%s" % body["id"]
    follow = shared_server.get(r.headers["Location"])
    assert follow.status_code == 200
    assert follow.json()["id"] == body["id"]


def test_post_transaction_ids_are_unique_and_increasing(shared_server):
    ids = [shared_server.submit(card(2), 10) for _ in range(20)]
    assert len(set(ids)) == 20
    assert ids == sorted(ids)


def test_deposit_is_applied_to_the_ledger(shared_server):
    c = card(3)
    before = db_balance(shared_server, c)
    txid = shared_server.submit(c, 1234)
    rows = shared_server.wait_final([txid], timeout=15)
    assert rows[txid] == "applied"
    row = shared_server.query("SELECT card_number, amount, success, balance_after FROM transactions "
                              "WHERE txid = ?", (txid,))
    assert row == [(c, 1234, 1, before + 1234)]
    assert db_balance(shared_server, c) == before + 1234


def test_withdrawal_is_applied_to_the_ledger(shared_server):
    c = card(4)
    before = db_balance(shared_server, c)
    txid = shared_server.submit(c, -1000)
    assert shared_server.wait_final([txid], timeout=15)[txid] == "applied"
    assert db_balance(shared_server, c) == before - 1000


def test_overdraft_is_insufficient_funds_and_leaves_balance(shared_server):
    c = card(5)
    before = db_balance(shared_server, c)
    txid = shared_server.submit(c, -(before + 1))
    assert shared_server.wait_final([txid], timeout=15)[txid] == "insufficient_funds"
    row = shared_server.query("SELECT success FROM transactions WHERE txid = ?", (txid,))
    assert row == [(0,)]
    assert db_balance(shared_server, c) == before


def test_withdrawal_of_whole_balance_is_applied(shared_server):
    c = card(6)
    before = db_balance(shared_server, c)
    txid = shared_server.submit(c, -before)
    assert shared_server.wait_final([txid], timeout=15)[txid] == "applied"
    assert db_balance(shared_server, c) == 0
    shared_server.wait_final([shared_server.submit(c, before)], timeout=15)


def test_unknown_card_is_recorded_as_unknown_account(shared_server):
    txid = shared_server.submit(unknown_card(7), 500)
    assert shared_server.wait_final([txid], timeout=15)[txid] == "unknown_account"
    assert shared_server.query("SELECT success FROM transactions WHERE txid = ?", (txid,)) == [(0,)]
    assert shared_server.query("SELECT COUNT(*) FROM users WHERE card_number = ?",
                               (unknown_card(7),)) == [(0,)]


def test_int64_overflow_is_rejected(server_factory):
    # Reaching the int64 edge through the API takes ~9,200 maximal deposits,
    # so start the server on a ledger where one account is already near it
    # (and all others empty, so that the ledger's total still fits in int64).
    srv = server_factory(start=False)
    c = card(8)
    db_exec(srv.db, "UPDATE users SET balance = 0")
    db_exec(srv.db, "UPDATE users SET balance = ? WHERE card_number = ?", (2 ** 63 - 10, c))
    srv.start()
    txid = srv.submit(c, 11)
    assert srv.wait_final([txid], timeout=15)[txid] == "rejected"
    assert db_balance(srv, c) == 2 ** 63 - 10
    assert srv.query("SELECT success FROM transactions WHERE txid = ?", (txid,)) == [(0,)]
    assert srv.transaction(txid).json()["status"] == "rejected"
    # The account still works.
    txid = srv.submit(c, -10)
    assert srv.wait_final([txid], timeout=15)[txid] == "applied"


def test_amount_limit_is_accepted(shared_server):
    txid = shared_server.submit(card(9), 10 ** 15)
    txid2 = shared_server.submit(card(9), -(10 ** 15))
    rows = shared_server.wait_final([txid, txid2], timeout=15)
    assert rows[txid] == "applied" and rows[txid2] == "applied"


def test_card_number_of_32_characters_is_accepted(shared_server):
    r = shared_server.post_tx("1" * 32, 5)
    assert r.status_code == 202, r.text
    txid = int(r.json()["id"])
    assert shared_server.wait_final([txid], timeout=15)[txid] == "unknown_account"


def test_body_of_exactly_4096_bytes_is_accepted(shared_server):
    body = json.dumps({"card_number": card(10), "amount": 7})
    body = body[:-1] + " " * (4096 - len(body)) + "}"
    assert len(body) == 4096
    r = shared_server.post("/transaction", data=body, headers=JSON)
    assert r.status_code == 202, r.text


def test_content_type_with_charset_is_accepted(shared_server):
    r = shared_server.post("/transaction", data=json.dumps({"card_number": card(11), "amount": 3}),
                           headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 202, r.text


BAD_INPUT = [
    # (name, raw body, field the message must name or None)
    ("not_json", b"card_number=1&amount=2", None),
    ("truncated_json", b'{"card_number": "6219 8619 0001 8640", "amount": 1', None),
    ("empty_body", b"", None),
    ("array", b'[{"card_number": "6219 8619 0001 8640", "amount": 1}]', None),
    ("string", b'"hello"', None),
    ("number", b"42", None),
    ("null", b"null", None),
    ("card_missing", {"amount": 100}, "card_number"),
    ("card_not_string", {"card_number": 6219861900018640, "amount": 100}, "card_number"),
    ("card_null", {"card_number": None, "amount": 100}, "card_number"),
    ("card_empty", {"card_number": "", "amount": 100}, "card_number"),
    ("card_too_long", {"card_number": "1" * 33, "amount": 100}, "card_number"),
    ("card_letters", {"card_number": "6219 8619 abcd 8640", "amount": 100}, "card_number"),
    ("card_dashes", {"card_number": "6219-8619-0001-8640", "amount": 100}, "card_number"),
    ("card_nul_byte", {"card_number": "6219\u00008619", "amount": 100}, "card_number"),
    ("amount_missing", {"card_number": "6219 8619 0001 8640"}, "amount"),
    ("amount_float", {"card_number": "6219 8619 0001 8640", "amount": 1.5}, "amount"),
    ("amount_string", {"card_number": "6219 8619 0001 8640", "amount": "100"}, "amount"),
    ("amount_true", {"card_number": "6219 8619 0001 8640", "amount": True}, "amount"),
    ("amount_null", {"card_number": "6219 8619 0001 8640", "amount": None}, "amount"),
    ("amount_array", {"card_number": "6219 8619 0001 8640", "amount": [100]}, "amount"),
    ("amount_zero", {"card_number": "6219 8619 0001 8640", "amount": 0}, "amount"),
    ("amount_above_limit", {"card_number": "6219 8619 0001 8640", "amount": 10 ** 15 + 1}, "amount"),
    ("amount_below_limit", {"card_number": "6219 8619 0001 8640", "amount": -(10 ** 15) - 1}, "amount"),
    ("amount_beyond_int64", {"card_number": "6219 8619 0001 8640", "amount": 2 ** 64}, "amount"),
    ("amount_1e400", b'{"card_number": "6219 8619 0001 8640", "amount": 1e400}', "amount"),
    ("amount_exponent_huge", b'{"card_number": "6219 8619 0001 8640", "amount": 1e16}', "amount"),
    ("amount_minus_zero", b'{"card_number": "6219 8619 0001 8640", "amount": -0}', "amount"),
    ("amount_twice", b'{"card_number": "6219 8619 0001 8640", "amount": 1, "amount": -9999999}',
     "amount"),
]


@pytest.mark.parametrize("body,field", [(b, f) for _, b, f in BAD_INPUT],
                         ids=[name for name, _, _ in BAD_INPUT])
def test_bad_input_is_rejected_with_400(shared_server, body, field):
    before = shared_server.queue()["next_txid"]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = shared_server.post("/transaction", data=data, headers=JSON)
    assert_error(r, 400, field)
    assert "Location" not in r.headers
    # Nothing was queued for it.
    assert shared_server.queue()["next_txid"] == before


def test_amount_float_rejected(shared_server):
    r = shared_server.post("/transaction", data=b'{"card_number": "6219 8619 0001 8640", "amount": 1.5}',
                           headers=JSON)
    assert_error(r, 400, "amount")


def test_body_over_4096_bytes_is_413(shared_server):
    body = json.dumps({"card_number": card(1), "amount": 1, "pad": "x" * 5000})
    r = shared_server.post("/transaction", data=body, headers=JSON)
    assert_error(r, 413)


def test_very_large_body_is_413_json(shared_server):
    body = json.dumps({"card_number": card(1), "amount": 1, "pad": "x" * 200000})
    r = shared_server.post("/transaction", data=body, headers=JSON)
    assert_error(r, 413)


def test_huge_body_is_refused_with_413(shared_server):
    # Past 1 MiB the HTTP layer refuses the body unread; the status is what counts.
    body = json.dumps({"card_number": card(1), "amount": 1, "pad": "x" * (2 << 20)})
    try:
        r = shared_server.post("/transaction", data=body, headers=JSON)
        assert r.status_code == 413, r.status_code
    except requests.ConnectionError:
        pass   # refused while the body was still being sent
    assert shared_server.get("/healthz").status_code == 200


def test_body_of_4097_bytes_is_413(shared_server):
    body = json.dumps({"card_number": card(1), "amount": 7})
    body = body[:-1] + " " * (4097 - len(body)) + "}"
    r = shared_server.post("/transaction", data=body, headers=JSON)
    assert_error(r, 413)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(shared_server, ctype):
    data = json.dumps({"card_number": card(1), "amount": 1}).encode()
    headers = {"Content-Type": ctype} if ctype else {}
    # requests adds no Content-Type for raw bytes; make sure none is sent.
    r = shared_server.post("/transaction", data=data, headers=headers)
    assert "Content-Type" not in r.request.headers or ctype
    assert_error(r, 415)


# --------------------------------------------------------------------------
# GET /transaction/<id>


def test_get_transaction_applied_has_balance_after(shared_server):
    c = card(20)
    txid = shared_server.submit(c, 250)
    shared_server.wait_final([txid], timeout=15)
    r = shared_server.transaction(txid)
    assert r.status_code == 200, r.text
    body = r.json()
    (db_after, db_amount) = shared_server.query(
        "SELECT balance_after, amount FROM transactions WHERE txid = ?", (txid,))[0]
    assert body["id"] == str(txid)
    assert body["card_number"] == c
    assert body["amount"] == 250 == db_amount
    assert body["status"] == "applied"
    assert body["balance_after"] == db_after
    assert isinstance(body["queued_at"], (int, str)) and body["queued_at"]
    assert body["applied_at"]


def test_get_transaction_insufficient_funds(shared_server):
    c = card(21)
    txid = shared_server.submit(c, -(10 ** 14))
    shared_server.wait_final([txid], timeout=15)
    body = shared_server.transaction(txid).json()
    assert body["status"] == "insufficient_funds"
    assert body["amount"] == -(10 ** 14)
    assert body["applied_at"]
    assert body.get("balance_after") is None


def test_get_transaction_unknown_account(shared_server):
    txid = shared_server.submit(unknown_card(22), 99)
    shared_server.wait_final([txid], timeout=15)
    body = shared_server.transaction(txid).json()
    assert body["status"] == "unknown_account"
    assert body["card_number"] == unknown_card(22)
    assert body.get("balance_after") is None


def test_get_transaction_unknown_id_is_404(shared_server):
    next_txid = shared_server.queue()["next_txid"]
    for bad in (next_txid + 1000, 10 ** 12):
        assert_error(shared_server.transaction(bad), 404)


def test_get_transaction_non_numeric_id_is_rejected(shared_server):
    for bad in ("abc", "-1", "0", "1.5", "12abc"):
        assert_error(shared_server.get("/transaction/%s" % bad), 400,
                     message="transaction id must be a positive decimal integer")


# --------------------------------------------------------------------------
# GET /balance


def test_balance_matches_db(shared_server):
    c = card(30)
    r = shared_server.get("/balance", params={"card_number": c})
    assert r.status_code == 200, r.text
    assert r.json() == {"card_number": c, "balance": db_balance(shared_server, c)}


def test_balance_accepts_percent20_and_plus(shared_server):
    c = card(31)
    expected = db_balance(shared_server, c)
    for q in ("6219%208619%200031%208640", "6219+8619+0031+8640"):
        r = shared_server.get("/balance?card_number=" + q)
        assert r.status_code == 200, (q, r.text)
        assert r.json() == {"card_number": c, "balance": expected}


def test_balance_follows_applied_transaction(shared_server):
    c = card(32)
    before = shared_server.get("/balance", params={"card_number": c}).json()["balance"]
    shared_server.wait_final([shared_server.submit(c, 777)], timeout=15)
    after = shared_server.get("/balance", params={"card_number": c}).json()["balance"]
    assert after == before + 777


def test_balance_missing_card_is_400(shared_server):
    assert_error(shared_server.get("/balance"), 400, "card_number")


def test_balance_unknown_card_is_404(shared_server):
    assert_error(shared_server.get("/balance", params={"card_number": unknown_card(33)}), 404)


# --------------------------------------------------------------------------
# other endpoints, routing


def test_healthz(shared_server):
    r = shared_server.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_dashboard_is_html(shared_server):
    r = shared_server.get("/")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert "<html" in r.text.lower()


@pytest.mark.parametrize("path", ["/nope", "/transactionz", "/transactions/1", "/balance/x",
                                  "/metrics/extra"])
def test_unknown_path_is_404(shared_server, path):
    assert_error(shared_server.get(path), 404)


@pytest.mark.parametrize("method,path,allowed", [
    ("GET", "/transaction", "POST"),
    ("GET", "/transactions", "POST"),
    ("PUT", "/transaction", "POST"),
    ("DELETE", "/balance", "GET"),
    ("POST", "/balance", "GET"),
    ("POST", "/metrics", "GET"),
    ("POST", "/healthz", "GET"),
    ("DELETE", "/transaction/1", "GET"),
])
def test_wrong_method_is_405_with_allow(shared_server, method, path, allowed):
    r = shared_server.request(method, path, data=b"{}", headers=JSON)
    assert_error(r, 405)
    allow = [m.strip() for m in r.headers.get("Allow", "").split(",")]
    assert allowed in allow, r.headers


def test_keep_alive_serves_many_requests_on_one_connection(shared_server):
    conn = http.client.HTTPConnection("127.0.0.1", shared_server.port, timeout=HTTP_TIMEOUT)
    try:
        conn.connect()
        local = conn.sock.getsockname()
        sock = conn.sock
        for i in range(10):
            if i % 2:
                conn.request("POST", "/transaction",
                             json.dumps({"card_number": card(40), "amount": 1}), JSON)
                want = 202
            else:
                conn.request("GET", "/healthz")
                want = 200
            resp = conn.getresponse()
            resp.read()
            assert resp.status == want
            assert not resp.will_close, "server closed a keep-alive connection"
        # An error response keeps the connection too.
        conn.request("GET", "/nope")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 404
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        assert conn.sock is sock and conn.sock.getsockname() == local
    finally:
        conn.close()


def test_pipelined_requests_on_raw_socket(shared_server):
    req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=HTTP_TIMEOUT) as s:
        s.sendall(req * 3)
        data = b""
        deadline = time.monotonic() + HTTP_TIMEOUT
        while data.count(b"HTTP/1.1 200") < 3 and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 3, data


# --------------------------------------------------------------------------
# metrics


METRIC_KEYS = ["transaction_counts", "total_requests", "average_balance_history", "transaction_times",
               "queue_size_history", "current_queue_size", "latency_ms", "applied_per_second",
               "queue_capacity", "uptime_s", "children", "counters", "queue"]
COUNTER_KEYS = ["http_requests", "http_bad_request", "tx_accepted", "tx_queue_full",
                "tx_applied_deposit", "tx_applied_withdrawal", "tx_insufficient_funds",
                "tx_unknown_account", "tx_rejected", "tx_replayed", "batches_committed", "db_errors",
                "entries_requeued", "balance_delta"]
QUEUE_KEYS = ["depth", "claimed", "capacity", "high_water", "repairs", "requeued", "next_txid"]


def test_metrics_has_every_documented_key(shared_server):
    m = shared_server.metrics()
    for k in METRIC_KEYS:
        assert k in m, k
    assert set(m["transaction_counts"]) >= {"deposits", "withdrawals", "insufficient_funds", "error",
                                            "queue_full"}
    assert set(m["latency_ms"]) >= {"p50", "p90", "p99", "max"}
    for k in COUNTER_KEYS:
        assert isinstance(m["counters"].get(k), int), k
    for k in QUEUE_KEYS:
        assert isinstance(m["queue"].get(k), int), k
    for k in ("average_balance_history", "transaction_times", "queue_size_history", "children"):
        assert isinstance(m[k], list), k
    assert m["queue_capacity"] == m["queue"]["capacity"] == 65536
    assert len(m["children"]) == 4


def test_metrics_counts_match_traffic_and_db(server):
    ops = [(card(1), 100), (card(2), 200), (card(3), -50), (card(4), -(10 ** 14)),
           (unknown_card(5), 10), (unknown_card(6), -10), (card(7), 300)]
    ids = [server.submit(c, a) for c, a in ops]
    bad = [server.post("/transaction", data=b"nope", headers=JSON) for _ in range(3)]
    assert all(r.status_code == 400 for r in bad)
    server.wait_final(ids, timeout=15)

    assert_counters_match_db(lambda: server.metrics()["counters"], server.db)
    m = server.metrics()
    c = m["counters"]
    assert c["tx_applied_deposit"] == 3
    assert c["tx_applied_withdrawal"] == 1
    assert c["tx_insufficient_funds"] == 1
    assert c["tx_unknown_account"] == 2
    assert c["tx_accepted"] == len(ids)
    assert c["http_bad_request"] >= 3
    assert c["balance_delta"] == 100 + 200 - 50 + 300
    tc = m["transaction_counts"]
    assert tc["deposits"] == c["tx_applied_deposit"]
    assert tc["withdrawals"] == c["tx_applied_withdrawal"]
    assert tc["insufficient_funds"] == c["tx_insufficient_funds"]
    assert tc["queue_full"] == c["tx_queue_full"] == 0
    # Requests answered so far: the POSTs above plus at least this GET's predecessors.
    assert c["http_requests"] >= len(ids) + len(bad)
    assert m["queue"]["next_txid"] > max(ids)
    assert m["current_queue_size"] == 0
    lat = m["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], lat
    assert len(m["transaction_times"]) == len(ids)
    assert all(isinstance(t, (int, float)) and t >= 0 for t in m["transaction_times"])


def test_metrics_history_tracks_ledger(server):
    """average_balance_history and queue_size_history are sampled once a
    second: their newest values follow the ledger and the queue."""
    ids = [server.submit(card(i), 10 ** 9) for i in range(20)]
    server.wait_final(ids, timeout=15)
    total, count = server.query("SELECT SUM(balance), COUNT(*) FROM users")[0]

    def caught_up():
        m = server.metrics()
        hist = m["average_balance_history"]
        return hist and abs(hist[-1] - total / count) < 1 and m
    m = wait_until(caught_up, 5, "average_balance_history to reach %.2f" % (total / count))
    assert all(isinstance(v, (int, float)) for v in m["queue_size_history"])
    pids = stop_workers(server)
    try:
        queued = [server.submit(card(1), 1) for _ in range(7)]
        wait_until(lambda: server.metrics()["queue_size_history"][-1] == 7, 5,
                   "queue_size_history to show 7 queued")
        assert server.metrics()["current_queue_size"] == 7
    finally:
        cont_workers(pids)
    server.wait_final(queued, timeout=15)
    m = server.metrics()
    assert m["uptime_s"] > 0


# --------------------------------------------------------------------------
# queue full, queued status (workers stopped)


def test_queue_full_returns_503_with_retry_after(server_factory):
    srv = server_factory(args=["--queue-size", "4", "--batch-max", "2"], workers=1)
    capacity = srv.queue()["capacity"]
    assert capacity == 4
    pids = stop_workers(srv)
    try:
        accepted, refused, codes = [], [], []
        for i in range(capacity + 3):
            r = srv.post_tx(card(i), 10 + i)
            codes.append(r.status_code)
            if r.status_code == 202:
                accepted.append(int(r.json()["id"]))
            else:
                refused.append(r)
        # Exactly the capacity is accepted, in order, and nothing after it.
        assert codes == [202] * capacity + [503] * 3, codes
        assert refused, "no 503 with %d entries in a queue of %d" % (capacity + 3, capacity)
        for r in refused:
            assert_error(r, 503)
            assert r.headers.get("Retry-After") == "1"
        m = srv.metrics()
        assert m["counters"]["tx_queue_full"] == len(refused)
        assert m["queue_capacity"] == 4
        assert m["transaction_counts"]["queue_full"] == len(refused)
        assert m["current_queue_size"] == len(accepted)
        # A refused transaction takes no id.
        assert srv.queue()["next_txid"] == max(accepted) + 1
    finally:
        cont_workers(pids)
    rows = srv.wait_final(accepted, timeout=15)
    assert all(rows[t] == "applied" for t in accepted)
    # Room again once the worker has caught up.
    assert srv.post_tx(card(99), 1).status_code == 202


def test_get_transaction_after_ring_wraparound(server_factory):
    """With a 4-slot ring every slot is reused many times: old ids come from
    the ledger with their own data, ids not handed out yet are 404."""
    srv = server_factory(args=["--queue-size", "4", "--batch-max", "2"], workers=1)
    sent = {}
    for i in range(40):
        txid = srv.submit(card(i), 1000 + i)
        sent[txid] = (card(i), 1000 + i)
        srv.wait_final([txid], timeout=15)
    for txid, (c, amount) in sent.items():
        body = srv.transaction(txid).json()
        assert (body["id"], body["card_number"], body["amount"], body["status"]) == \
            (str(txid), c, amount, "applied"), body
    next_txid = srv.queue()["next_txid"]
    for future in range(next_txid, next_txid + 5):
        assert_error(srv.transaction(future), 404)


def test_get_transaction_queued_while_workers_stopped(server_factory):
    srv = server_factory(workers=1)
    pids = stop_workers(srv)
    try:
        txid = srv.submit(card(50), 42)
        r = srv.transaction(txid)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "queued"
        assert body["id"] == str(txid)
        assert body["amount"] == 42
        assert body["card_number"] == card(50)
        assert body["queued_at"]
        assert body.get("applied_at") is None
        assert body.get("balance_after") is None
        assert srv.queue()["depth"] >= 1
    finally:
        cont_workers(pids)
    srv.wait_final([txid], timeout=15)
    body = srv.transaction(txid).json()
    assert body["status"] == "applied"
    assert body["applied_at"]



def test_claimed_entries_report_queued(server_factory):
    """An entry a worker has claimed but not committed is neither in the ring
    nor in the ledger: GET must still find it. Holding the ledger's write
    lock keeps the worker's claim uncommitted for as long as the test needs."""
    srv = server_factory(workers=1)
    with ledger_write_lock(srv.db):
        sent = {srv.submit(card(i), 7 + i): (card(i), 7 + i) for i in range(20)}
        wait_until(lambda: srv.queue()["claimed"] > 0, 10, "the worker to claim a batch")
        q = srv.queue()
        assert q["claimed"] >= 1 and q["claimed"] + q["depth"] == 20, q  # claimed ones and queued ones
        for txid, (card_number, amount) in sent.items():
            r = srv.transaction(txid)
            assert r.status_code == 200, (txid, r.status_code, r.text)
            body = r.json()
            assert body["status"] == "queued", body
            assert (body["card_number"], body["amount"]) == (card_number, amount)
    rows = srv.wait_final(list(sent), timeout=30)
    assert all(rows[t] == "applied" for t in sent)
