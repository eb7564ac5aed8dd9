"""README promises that had no test of their own: 503 with Retry-After on a
full queue for every POST, "ledger busy" on reads, /healthz while shutting
down, HEAD on every GET, the refusals of /accounts, waits that end in 202
(elapsed, outcome lost, worker dead after COMMIT), POST /transactions
ignoring Idempotency-Key and wait, and a ledger copied at a random instant
(as an operating-system crash leaves it) that opens, is intact and
conserves money."""
import collections
import fcntl
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import time

import pytest

from conftest import (JSON, Load, assert_error, balance_sum, card, cont_workers, db_exec,
                      db_query, final_rows, ledger_invariant, make_ops, prefer_wait, sigstop,
                      stop_workers, wait_final, wait_until)


def new_card(n):
    return "6219 8619 %04d 8650" % n


# --------------------------------------------------------------------------
# a full queue refuses every kind of POST the same way


@pytest.mark.parametrize("path,body", [
    ("/transfer", {"from": card(1), "to": card(2), "amount": 5}),
    ("/accounts", {"card_number": new_card(1), "balance": 10}),
    ("/transaction", {"card_number": card(1), "amount": 5}),
])
def test_full_queue_is_503_with_retry_after_on_every_post(server_factory, path, body):
    srv = server_factory(workers=1, args=["--queue-size", "2", "--batch-max", "1"])
    pids = stop_workers(srv)
    try:
        for i in range(2):
            assert srv.post_tx(card(10 + i), 1).status_code == 202
        r = srv.post_json(path, body)
        assert_error(r, 503)
        assert r.headers.get("Retry-After") == "1", r.headers
        assert "queue" in r.json()["message"], r.json()
        assert srv.metrics()["counters"]["tx_queue_full"] == 1
    finally:
        cont_workers(pids)


# --------------------------------------------------------------------------
# ledger busy


# SQLite's WAL index (the -shm file) has one lock byte per read mark; a
# reader must hold one of them shared. Holding all five exclusively keeps
# every reader out, as a long recovery or checkpoint of another process can.
WAL_READ_LOCKS = (123, 5)


@pytest.fixture
def locked_ledger(server_factory):
    """A server whose ledger no reader can enter while the test runs."""
    srv = server_factory(workers=1)
    srv.submit(card(1), 1)  # a committed row for the lookups to want
    wait_until(lambda: final_rows(srv.db), 10, "a committed row")
    with open(str(srv.db) + "-shm", "r+b") as shm:
        start, n = WAL_READ_LOCKS

        def take():
            try:
                fcntl.lockf(shm, fcntl.LOCK_EX | fcntl.LOCK_NB, n, start)
                return True
            except OSError:
                return False
        wait_until(take, 10, "the WAL read locks")
        yield srv
        fcntl.lockf(shm, fcntl.LOCK_UN, n, start)


@pytest.mark.sqlite_only
@pytest.mark.parametrize("method,path,body,headers", [
    ("GET", "/balance?card_number=" + card(1).replace(" ", "+"), None, {}),
    ("GET", "/accounts/" + card(1).replace(" ", "%20"), None, {}),
    ("GET", "/accounts/" + card(1).replace(" ", "%20") + "/transactions", None, {}),
    ("GET", "/transaction/1", None, {}),
    ("POST", "/transaction", {"card_number": card(1), "amount": 5}, {"Idempotency-Key": "busy-1"}),
    ("POST", "/accounts", {"card_number": new_card(2), "balance": 1}, {}),
])
def test_busy_ledger_reads_answer_503_ledger_busy(locked_ledger, method, path, body, headers):
    srv = locked_ledger
    data = json.dumps(body) if body is not None else None
    # SQLite retries a WAL read mark for about 10 s, whatever the busy
    # timeout, before it gives up: the answer comes after that.
    r = srv.request(method, path, data=data, headers={**JSON, **headers}, timeout=30)
    assert_error(r, 503, message="ledger busy, retry later")
    assert r.headers.get("Retry-After") == "1", r.headers


# --------------------------------------------------------------------------
# shutting down, HEAD, refusals


def test_healthz_is_503_while_shutting_down(server_factory):
    """After SIGTERM a frontend finishes what its open connections send for
    a grace second; /healthz asked meanwhile says 503, so a load balancer
    stops sending."""
    srv = server_factory(workers=1, frontends=1)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)  # one kept-alive connection
    conn.request("GET", "/healthz")
    first = conn.getresponse()
    assert first.status == 200 and not first.will_close
    first.read()
    srv.signal(signal.SIGTERM)

    def answer_503():
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        body = r.read()
        return (r, body) if r.status == 503 else None
    r, body = wait_until(answer_503, 5, "/healthz to answer 503 while draining", interval=0.01)
    assert json.loads(body) == {"status": "error", "message": "shutting down"}
    assert r.getheader("Connection") == "close"
    assert srv.terminate() == 0


@pytest.mark.parametrize("path", [
    "/healthz", "/metrics", "/balance?card_number=" + card(3).replace(" ", "+"),
    "/accounts/" + card(3).replace(" ", "%20"), "/accounts/" + card(3).replace(" ", "%20") + "/transactions",
    "/transaction/1", "/",
])
def test_head_answers_every_get_without_a_body(shared_server, path):
    shared_server.submit(card(3), 1)
    get = shared_server.get(path)
    head = shared_server.request("HEAD", path)
    assert get.status_code == 200, (path, get.status_code, get.text)
    assert head.status_code == 200, (path, head.status_code)
    assert head.content == b""
    assert head.headers.get("Content-Type") == get.headers.get("Content-Type")


@pytest.mark.parametrize("method,path,code,allow", [
    ("PUT", "/accounts", 405, "POST"),
    ("DELETE", "/accounts", 405, "POST"),
    ("POST", "/accounts/" + card(1).replace(" ", "%20"), 405, "GET, HEAD"),
    ("DELETE", "/accounts/" + card(1).replace(" ", "%20"), 405, "GET, HEAD"),
    ("POST", "/", 405, "GET, HEAD"),
])
def test_wrong_method_is_405_with_allow(shared_server, method, path, code, allow):
    r = shared_server.request(method, path, data="{}", headers=JSON)
    assert_error(r, code, field=method)
    assert r.headers.get("Allow") == allow, r.headers


def test_accounts_refuses_oversized_and_non_json_bodies(shared_server):
    big = json.dumps({"card_number": new_card(3), "balance": 1, "pad": "x" * 8192})  # limit 4,096
    assert_error(shared_server.post("/accounts", data=big, headers=JSON), 413)
    r = shared_server.post("/accounts", data=json.dumps({"card_number": new_card(3)}),
                           headers={"Content-Type": "text/plain"})
    assert_error(r, 415, field="Content-Type")


# --------------------------------------------------------------------------
# waits that end with 202


def test_wait_elapsing_on_transfer_is_202_and_applied_later(server_factory):
    srv = server_factory(workers=1)
    pids = stop_workers(srv)
    try:
        r = srv.transfer(card(1), card(2), 7, headers=prefer_wait(1))
        assert r.status_code == 202, r.text
        txid = int(r.json()["id"])
        assert r.json()["status"] == "queued"
        assert srv.metrics()["counters"]["waits_timed_out"] == 1
    finally:
        cont_workers(pids)
    assert wait_final(srv.db, [txid])[txid] == "applied"


def test_worker_dying_after_commit_hands_the_outcome_over_from_the_ledger(server_factory, tmp_path):
    """The worker commits, then dies before it hands the outcome over: its
    replacement replays the batch, finds it recorded, and the waiting client
    still gets the outcome (from the ledger), applied once."""
    trigger = tmp_path / "die"
    trigger.write_text("")
    srv = server_factory(workers=1, env={"TXP_FAILPOINT_AFTER_COMMIT": str(trigger)})
    before = srv.balance(card(5))
    r = srv.post_json("/transaction", {"card_number": card(5), "amount": 9}, prefer_wait(10))
    assert not trigger.exists(), "the failpoint never fired"
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "applied" and body["balance_after"] == before + 9, body
    assert srv.balance(card(5)) == before + 9
    txid = int(body["id"])
    assert db_query(srv.db, "SELECT COUNT(*) FROM transactions WHERE txid = ?", (txid,)) == [(1,)]
    assert srv.metrics()["counters"]["tx_replayed"] == 1


def test_txid_already_recorded_without_a_retry_mark_is_not_recorded_twice(server_factory):
    """An entry that was never claimed before skips the replay lookup; should
    its txid be in the ledger anyway (a claim handed out twice), the unique
    txid index must stop the second row, and the batch is applied again with
    a lookup for every entry: found, it is a replay, and money moves once."""
    srv = server_factory(workers=1)
    txid = srv.queue()["next_txid"] + 5  # after the five below
    before = srv.balance(card(3))
    # As if this very request had been applied already (balance included).
    db_exec(srv.db, "UPDATE users SET balance = balance + 7 WHERE card_number = ?", (card(3),))
    db_exec(srv.db, "INSERT INTO transactions(txid, card_number, amount, success, status, "
                    "balance_after) VALUES (?, ?, 7, 1, 'applied', ?)", (txid, card(3), before + 7))
    others = [srv.submit(card(10 + i), 1) for i in range(5)]
    assert srv.submit(card(3), 7) == txid
    others += [srv.submit(card(20 + i), 1) for i in range(5)]
    outcomes = srv.wait_final(others + [txid], timeout=30)
    assert set(outcomes.values()) == {"applied"}, outcomes
    assert db_query(srv.db, "SELECT COUNT(*) FROM transactions WHERE txid = ?", (txid,)) == [(1,)]
    assert srv.balance(card(3)) == before + 7
    assert srv.metrics()["counters"]["tx_replayed"] == 1
    assert "holds a txid already recorded" in srv.log_text()


def test_full_completion_ring_ends_waits_with_202_and_counts_them(server_factory):
    """4,200 waiting requests through one (frontend, worker) pair, whose
    completion ring holds 4,096 outcomes, all committed while the frontend
    is stopped: the 104 outcomes that do not fit are dropped and counted,
    those waits end with 202 when they elapse, the rest get 200."""
    n, ring = 4200, 4096
    srv = server_factory(workers=1, frontends=1, args=["--queue-size", "8192"])
    frontend = srv.running_child("frontend")["pid"]
    pids = stop_workers(srv)
    socks = []
    try:
        for i in range(n):
            body = json.dumps({"card_number": card(i % 1000), "amount": 1}).encode()
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
            s.sendall(b"POST /transaction?wait=8 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                      b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            socks.append(s)
        wait_until(lambda: srv.queue()["depth"] == n, 30, "every request queued")
        sigstop(frontend)
    finally:
        cont_workers(pids)
    try:
        wait_until(lambda: db_query(srv.db, "SELECT COUNT(*) FROM transactions")[0][0] == n, 60,
                   "every request committed")
    finally:
        os.kill(frontend, signal.SIGCONT)
    codes = collections.Counter()
    for s in socks:
        resp = http.client.HTTPResponse(s)
        resp.begin()
        resp.read()
        codes[resp.status] += 1
        s.close()
    assert codes == {200: ring, 202: n - ring}, codes
    counters = srv.metrics()["counters"]
    assert counters["waits_dropped"] == n - ring, counters
    assert counters["waits_answered"] == ring and counters["waits_timed_out"] == n - ring, counters


# --------------------------------------------------------------------------
# POST /transactions


def test_batch_post_ignores_idempotency_key_and_wait(shared_server):
    body = json.dumps([{"card_number": card(40), "amount": 2}, {"card_number": card(41), "amount": 3}])
    headers = {**JSON, "Idempotency-Key": "batch-ignores-1", **prefer_wait(5)}
    first = shared_server.post("/transactions?wait=5", data=body, headers=headers)
    second = shared_server.post("/transactions?wait=5", data=body, headers=headers)
    for r in (first, second):
        assert r.status_code == 202, r.text
        assert "Preference-Applied" not in r.headers and "Idempotent-Replayed" not in r.headers
    ids = [int(x) for r in (first, second) for x in r.json()["ids"]]
    assert len(set(ids)) == 4, "the key made the second batch a replay"
    assert all(v == "applied" for v in wait_final(shared_server.db, ids).values())


# --------------------------------------------------------------------------
# operating-system crash: the files as they are at a random instant


@pytest.mark.sqlite_only
def test_ledger_copied_at_random_instants_opens_intact_and_conserves_money(server_factory, tmp_path):
    """An operating-system crash leaves the database and WAL files as they
    are at that instant. The workers (the only writers) are frozen with
    SIGSTOP at random instants while they commit, wherever they are, even
    in the middle of writing the WAL; the files copied then must open, pass
    PRAGMA integrity_check and conserve money."""
    srv = server_factory(accounts=2000, args=["--batch-max", "64"])
    initial = balance_sum(srv.db)
    load = Load(srv.port, make_ops(30000, 2000, rng_seed=11), threads=16).start()
    rng = random.Random(3)
    copies = []
    try:
        wait_until(lambda: load.done >= 2000, 60, "load to get going")
        for k in range(8):
            time.sleep(rng.uniform(0.05, 0.4))
            dst = tmp_path / ("crash%d" % k)
            dst.mkdir()
            frozen = stop_workers(srv)
            try:
                for suffix in ("", "-wal"):
                    src = str(srv.db) + suffix
                    if os.path.exists(src):
                        shutil.copyfile(src, str(dst / ("users.db" + suffix)))
            finally:
                cont_workers(frozen)
            copies.append(dst / "users.db")
    finally:
        load.stop.set()
        load.join()
    rows_seen = set()
    for copy in copies:
        con = sqlite3.connect(str(copy))
        try:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", copy
            rows_seen.add(con.execute("SELECT COUNT(*) FROM transactions").fetchone()[0])
        finally:
            con.close()
        ledger_invariant(copy, initial)
    assert len(rows_seen) > 1, "every copy saw the same ledger: not taken while committing"
