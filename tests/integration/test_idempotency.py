"""Idempotency-Key: a retried request is applied at most once, however and
wherever its copies arrive; a key reused for another request is refused;
keys are forgotten after --idempotency-ttl."""
import json
import threading
import time
import uuid

import pytest

from conftest import (HTTP_TIMEOUT, assert_error, balance_sum, card, cont_workers,
                      connections_on_every_frontend, free_port, ledger_invariant, prefer_wait,
                      raw_request, run_txprocd_briefly, seed_db, stop_workers, unique_shm_name,
                      wait_final, wait_txn, wait_until)

KEY_ERROR = "Idempotency-Key must be 1-64 printable ASCII characters"
REUSED = "Idempotency-Key reused with a different request"


def new_key(tag):
    return "%s-%s" % (tag, uuid.uuid4().hex)


def keyed(key, extra=None):
    return {"Idempotency-Key": key, **(extra or {})}


def rows_for_key(srv, key):
    """(txid, status, original_txid, reason) of every row recorded under key,
    in commit order."""
    return srv.query("SELECT txid, status, original_txid, reason FROM transactions "
                     "WHERE idempotency_key = ? ORDER BY id", (key,))


def assert_replay(r, txid, code=202):
    assert r.status_code == code, (r.status_code, r.text)
    assert r.headers.get("Idempotent-Replayed") == "true", r.headers
    assert r.json()["id"] == str(txid), r.json()
    return r.json()


# --------------------------------------------------------------------------
# sequential retries


def test_sequential_retry_applies_once_and_replays_the_original(shared_server):
    srv, c, key = shared_server, card(100), new_key("seq")
    before = srv.balance(c)
    replays = srv.metrics()["counters"]["idempotent_replays"]
    first = srv.post_json("/transaction", {"card_number": c, "amount": 700}, keyed(key))
    assert first.status_code == 202, first.text
    assert first.headers.get("Idempotent-Replayed") is None, first.headers
    txid = int(first.json()["id"])
    assert wait_txn(srv, txid)["status"] == "applied"

    # Without a wait: 202, the same id and Location, the current status.
    again = srv.post_json("/transaction", {"card_number": c, "amount": 700}, keyed(key))
    body = assert_replay(again, txid)
    assert body["status"] == "applied", body
    assert again.headers["Location"] == "/transaction/%d" % txid
    # Asking to wait: the final answer, as for the original.
    waited = srv.post_json("/transaction", {"card_number": c, "amount": 700},
                           keyed(key, prefer_wait(5)), timeout=HTTP_TIMEOUT + 5)
    assert_replay(waited, txid, 200)
    assert waited.json() == srv.transaction(txid).json()
    assert waited.json()["idempotency_key"] == key

    assert srv.balance(c) == before + 700
    assert [r[:2] for r in rows_for_key(srv, key)] == [(txid, "applied")]
    assert srv.query("SELECT txid FROM idempotency_keys WHERE key = ?", (key,)) == [(txid,)]
    assert srv.metrics()["counters"]["idempotent_replays"] - replays == 2


def test_retry_replays_the_first_outcome_even_if_it_failed(shared_server):
    """The key records the first request whatever its outcome: a retried
    overdraft stays an overdraft after the account got the money."""
    srv, c, key = shared_server, card(101), new_key("overdraft")
    balance = srv.balance(c)
    body = {"card_number": c, "amount": -(balance + 5)}
    r = srv.post_json("/transaction", body, keyed(key, prefer_wait(5)), timeout=HTTP_TIMEOUT + 5)
    assert r.status_code == 409, r.text
    txid = int(r.json()["id"])
    wait_txn(srv, srv.submit(c, 10))
    again = srv.post_json("/transaction", body, keyed(key, prefer_wait(5)),
                          timeout=HTTP_TIMEOUT + 5)
    assert_replay(again, txid, 409)
    assert again.json()["status"] == "insufficient_funds"
    assert srv.balance(c) == balance + 10
    assert len(rows_for_key(srv, key)) == 1


def test_retry_while_the_original_is_queued_is_recorded_as_duplicate(server_factory):
    """The ledger does not know the key yet, so the frontend queues the copy;
    the worker records it as a duplicate of the first."""
    srv = server_factory(start=False)
    initial = balance_sum(srv.db)
    srv.start()
    c, key = card(5), new_key("queued")
    before = srv.balance(c)
    pids = stop_workers(srv)
    try:
        ids = []
        for _ in range(3):
            r = srv.post_json("/transaction", {"card_number": c, "amount": 55}, keyed(key))
            assert r.status_code == 202, r.text
            ids.append(int(r.json()["id"]))
        assert len(set(ids)) == 3
    finally:
        cont_workers(pids)
    rows = wait_final(srv.db, ids)
    assert [rows[t] for t in ids] == ["applied", "duplicate", "duplicate"]
    for dup in ids[1:]:
        body = srv.transaction(dup).json()
        assert body["status"] == "duplicate", body
        assert body["original_id"] == str(ids[0]), body
        assert body["idempotency_key"] == key, body
        assert body.get("balance_after") is None, body
    assert srv.balance(c) == before + 55
    ledger_invariant(srv.db, initial)
    counters = srv.metrics()["counters"]
    assert counters["tx_duplicate"] == 2, counters


# --------------------------------------------------------------------------
# concurrent copies across frontends


def _fire(conns, path, body, headers, timeout):
    """Sends the same request on every connection at once; returns
    [(status, headers, body)]."""
    results = [None] * len(conns)
    barrier = threading.Barrier(len(conns))
    data = json.dumps(body)

    def one(i, conn):
        try:
            conn.timeout = timeout
            conn.sock.settimeout(timeout)
            barrier.wait(timeout=10)
            conn.request("POST", path, data, {"Content-Type": "application/json", **headers})
            resp = conn.getresponse()
            results[i] = (resp.status, dict(resp.getheaders()), json.loads(resp.read()))
        except Exception as e:  # checked below
            results[i] = ("error", repr(e), None)
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 15)
    assert not any(t.is_alive() for t in threads), "clients still waiting"
    errors = [r for r in results if r[0] == "error"]
    assert not errors, errors[:5]
    return results


@pytest.mark.parametrize("mode", ["no_wait", "wait", "workers_stopped"])
def test_fifty_concurrent_copies_across_frontends_apply_once(server_factory, mode):
    srv = server_factory(start=False, frontends=2, workers=2)
    initial = balance_sum(srv.db)
    srv.start()
    c, key = card(7), new_key("fifty")
    before = srv.balance(c)
    spread = connections_on_every_frontend(srv, 25)
    conns = [conn for conns in spread.values() for conn in conns]
    assert len(conns) == 50
    headers = keyed(key, prefer_wait(10) if mode == "wait" else None)
    pids = stop_workers(srv) if mode == "workers_stopped" else []
    try:
        results = _fire(conns, "/transaction", {"card_number": c, "amount": 4321}, headers,
                        timeout=HTTP_TIMEOUT + 10)
    finally:
        cont_workers(pids)

    # Exactly one request was applied; every other copy left nothing but,
    # at most, a duplicate row pointing at it.
    wait_final(srv.db, {int(body["id"]) for _status, _hdrs, body in results})
    rows = rows_for_key(srv, key)
    applied = [r for r in rows if r[1] == "applied"]
    assert len(applied) == 1, rows
    original = applied[0][0]
    assert rows[0][0] == original, "the first row recorded under the key is not the applied one"
    for txid, status, original_txid, _reason in rows[1:]:
        assert (status, original_txid) == ("duplicate", original), rows
    assert srv.query("SELECT txid FROM idempotency_keys WHERE key = ?", (key,)) == [(original,)]
    assert srv.balance(c) == before + 4321

    plain = []      # answers that are not replays
    for status, hdrs, body in results:
        replayed = hdrs.get("Idempotent-Replayed") == "true"
        txid = int(body["id"])
        if mode == "wait":
            assert status == 200, (status, body)
            assert hdrs.get("Preference-Applied") == "wait=10", hdrs
            assert body["status"] == "applied" and body["balance_after"] == before + 4321, body
        else:
            assert status == 202, (status, body)
            assert hdrs.get("Location") == "/transaction/%d" % txid, hdrs
        if replayed:
            assert mode != "workers_stopped", "a replay before anything was committed: %r" % body
        else:
            plain.append(txid)
        if txid != original:
            got = srv.transaction(txid).json()
            assert got["status"] == "duplicate" and got["original_id"] == str(original), got
    # The original's own answer is the one answer that is not a replay when
    # waiting; without a wait, queued copies are answered plainly too.
    assert original in plain, (original, plain)
    if mode == "wait":
        assert plain == [original], plain
    else:
        assert len(plain) == len(rows), (plain, rows)
    if mode == "workers_stopped":
        assert len(rows) == 50, rows
    ledger_invariant(srv.db, initial)


# --------------------------------------------------------------------------
# the same key for another request


def test_same_key_with_another_body_is_422(shared_server):
    srv, c, key = shared_server, card(102), new_key("reuse")
    r = srv.post_json("/transaction", {"card_number": c, "amount": 10}, keyed(key))
    txid = int(r.json()["id"])
    wait_txn(srv, txid)
    before = srv.balance(c)
    queued_before = srv.queue()["next_txid"]
    conflicts = srv.metrics()["counters"]["idempotency_conflicts"]
    attempts = [
        ("/transaction", {"card_number": c, "amount": 11}),
        ("/transaction", {"card_number": card(103), "amount": 10}),
        ("/transaction", {"card_number": c, "amount": -10}),
        ("/transfer", {"from": c, "to": card(103), "amount": 10}),
        ("/accounts", {"card_number": "6219 8619 7777 0001", "balance": 10}),
    ]
    for path, body in attempts:
        r = srv.post_json(path, body, keyed(key, prefer_wait(5)))
        assert_error(r, 422, message=REUSED)
        assert r.headers.get("Idempotent-Replayed") is None, r.headers
    assert srv.queue()["next_txid"] == queued_before, "a refused request was queued"
    assert srv.balance(c) == before
    assert srv.metrics()["counters"]["idempotency_conflicts"] - conflicts == len(attempts)
    # The original request under that key is still answered as a replay.
    assert_replay(srv.post_json("/transaction", {"card_number": c, "amount": 10}, keyed(key)),
                  txid)


def test_key_reused_before_the_first_commits_is_rejected_by_the_worker(server_factory):
    srv = server_factory(workers=1)
    c, key = card(9), new_key("race")
    before = srv.balance(c)
    pids = stop_workers(srv)
    try:
        first = srv.post_json("/transaction", {"card_number": c, "amount": 100}, keyed(key))
        second = srv.post_json("/transaction", {"card_number": c, "amount": 200}, keyed(key))
        assert first.status_code == second.status_code == 202, (first.text, second.text)
    finally:
        cont_workers(pids)
    a, b = int(first.json()["id"]), int(second.json()["id"])
    assert wait_txn(srv, a)["status"] == "applied"
    body = wait_txn(srv, b)
    assert body["status"] == "rejected", body
    assert body["reason"] == "idempotency_key_reused", body
    assert body["original_id"] == str(a), body
    assert srv.balance(c) == before + 100


# --------------------------------------------------------------------------
# key syntax


@pytest.mark.parametrize("raw_key", [b"", b"k" * 65, b"ab\x01cd", b"ab\tcd", b"ab\x7fcd",
                                     "ключ".encode()],
                         ids=["empty", "65_chars", "control_char", "tab", "del", "utf8"])
@pytest.mark.parametrize("path,body", [
    ("/transaction", {"card_number": card(104), "amount": 1}),
    ("/transfer", {"from": card(104), "to": card(105), "amount": 1}),
    ("/accounts", {"card_number": "6219 8619 7777 0002"}),
], ids=["transaction", "transfer", "accounts"])
def test_invalid_key_is_400(shared_server, raw_key, path, body):
    before = shared_server.queue()["next_txid"]
    data = json.dumps(body).encode()
    req = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"Content-Type: application/json\r\nIdempotency-Key: " + raw_key + b"\r\n"
           b"Content-Length: " + str(len(data)).encode() + b"\r\nConnection: close\r\n\r\n" + data)
    status, headers, resp = raw_request(shared_server.port, req)
    assert status == 400, (status, resp)
    assert headers.get("content-type", "").startswith("application/json"), headers
    # A control character (but tab) is malformed HTTP: the HTTP layer refuses
    # it before the key is read, naming the header all the same.
    ctl = any(b < 0x20 and b != 0x09 or b == 0x7f for b in raw_key)
    expected = "header Idempotency-Key: invalid character in its value" if ctl else KEY_ERROR
    assert json.loads(resp) == {"status": "error", "message": expected}
    assert shared_server.queue()["next_txid"] == before, "a request with a bad key was queued"


def test_key_of_64_printable_characters_is_accepted(shared_server):
    key = ("~ !%s" % uuid.uuid4().hex).ljust(64, "x")
    assert len(key) == 64
    r = shared_server.post_json("/transaction", {"card_number": card(106), "amount": 3}, keyed(key))
    assert r.status_code == 202, r.text
    assert wait_txn(shared_server, r.json()["id"])["idempotency_key"] == key


# --------------------------------------------------------------------------
# expiry


def test_key_is_kept_for_the_ttl_then_pruned(server_factory):
    srv = server_factory(args=["--idempotency-ttl", "1"])
    c, key = card(11), new_key("ttl")
    before = srv.balance(c)
    r = srv.post_json("/transaction", {"card_number": c, "amount": 30}, keyed(key, prefer_wait(5)))
    assert r.status_code == 200, r.text
    first = int(r.json()["id"])
    ((created_us,),) = srv.query("SELECT created_at FROM idempotency_keys WHERE key = ?", (key,))

    # Until the key is pruned the other request is refused (and not queued);
    # afterwards it is a new request.
    def accepted():
        r = srv.post_json("/transaction", {"card_number": c, "amount": 40}, keyed(key))
        if r.status_code == 422:
            assert r.json()["message"] == REUSED
            return None
        assert r.status_code == 202, r.text
        return int(r.json()["id"]), time.time()
    second, seen_at = wait_until(accepted, 10, "the key to be pruned", interval=0.1)
    assert seen_at - created_us / 1e6 >= 1.0, "key pruned %.2fs after it was recorded, TTL 1s" \
        % (seen_at - created_us / 1e6)
    assert second != first
    body = wait_txn(srv, second)
    assert body["status"] == "applied", body
    assert srv.balance(c) == before + 70
    assert srv.metrics()["counters"]["keys_pruned"] >= 1
    assert srv.query("SELECT txid FROM idempotency_keys WHERE key = ?", (key,)) == [(second,)]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5"])
def test_bad_idempotency_ttl_is_refused(tmp_path, value):
    db = seed_db(tmp_path / "users.db", accounts=10)
    rc, _out, err = run_txprocd_briefly(["--db", db, "--listen", "127.0.0.1:%d" % free_port(),
                                         "--shm-name", unique_shm_name(),
                                         "--idempotency-ttl", value])
    assert rc == 2, (rc, err)
    assert "idempotency-ttl" in err, err
