"""Requests a frontend reads in one turn of its event loop are queued with one
lock of the shared queue (frontend/pending.c), and still each get their own
answer: 202 with their own id, or their outcome when they wait, in request
order on a connection, each applied exactly once.

The frontend is stopped while the requests are sent, so that it finds them
all ready at once when it runs again."""
import os
import signal
import time

import pytest

from conftest import card, cont_workers, sigstop, stop_workers
from test_hostile import Raw, post_bytes, tx_body

pytestmark = pytest.mark.backend_independent


def frontend_pid(srv):
    (pid,) = srv.child_pids("frontend")
    return pid


def send_while_stopped(srv, conns, requests_of):
    """Sends requests_of(i) on conns[i] while the frontend is stopped."""
    pid = frontend_pid(srv)
    sigstop(pid)
    try:
        for i, conn in enumerate(conns):
            conn.send(requests_of(i))
    finally:
        os.kill(pid, signal.SIGCONT)


def open_warm(srv, n):
    """n accepted keep-alive connections (one answered request each). The
    requests go out while the frontend is stopped, so that it finds them all
    ready at once: libevent's epoll then learns to take hundreds of events
    per turn (it starts at 32 and doubles when a turn fills them)."""
    conns = [Raw(srv) for _ in range(n)]
    for conn in conns:          # accepted before the frontend stops
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        r = conn.response()
        assert r is not None and r.status == 200, r
    send_while_stopped(srv, conns, lambda i: b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    for conn in conns:
        r = conn.response()
        assert r is not None and r.status == 200, r
    return conns


def test_one_turn_of_posts_is_queued_with_one_lock(server_factory):
    srv = server_factory(frontends=1, workers=1)
    n = 40
    conns = open_warm(srv, n)
    try:
        before = srv.metrics()["counters"]
        send_while_stopped(srv, conns, lambda i: post_bytes(tx_body(card(i % 5), "%d" % (i + 1))))
        answers = [conn.response() for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    assert all(a is not None and a.status == 202 for a in answers), answers
    ids = [int(a.json()["id"]) for a in answers]
    assert len(set(ids)) == n
    after = srv.metrics()["counters"]
    accepted = after["tx_accepted"] - before["tx_accepted"]
    locks = after["tx_enqueues"] - before["tx_enqueues"]
    assert accepted == n
    # One per turn; libevent's epoll reports at most 32 ready sockets in its
    # first turns, so 40 take two or three. One lock per request would be 40.
    assert 1 <= locks <= 4, (locks, accepted)
    finals = srv.wait_final(ids, timeout=30)
    assert all(finals[i] == "applied" for i in ids), finals   # deposits


@pytest.mark.parametrize("waits", [False, True], ids=["202s", "half_wait"])
def test_pipelined_posts_on_hundreds_of_connections_each_get_their_own_answer(server_factory, waits):
    """More ready requests than one flush takes, and answers that let their
    connection read its next pipelined request while the flush is running
    (without waits every answer brings one, so a full batch fills the other
    one): every request is answered once, in order on its connection, with
    its own id (or outcome, for the ones that wait), and applied exactly
    once, by a frontend that never restarts."""
    srv = server_factory(frontends=1, workers=1)
    frontend = frontend_pid(srv)
    n_conns, depth = 300, 3
    conns = open_warm(srv, n_conns)

    def amount(i, k):
        return 1000 + i * depth + k

    def requests_of(i):
        out = b""
        for k in range(depth):
            wait = b"Prefer: wait=10\r\n" if waits and (i + k) % 2 else b""
            out += post_bytes(tx_body(card(i % 7), "%d" % amount(i, k)), extra=wait)
        return out

    try:
        send_while_stopped(srv, conns, requests_of)
        # One deadline for all: a request the server never answers fails the
        # test in a minute, not in ten seconds per request.
        deadline = time.monotonic() + 60
        answers = [[conn.response(timeout=max(0.1, deadline - time.monotonic()))
                    for _ in range(depth)] for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    ids = {}
    for i, row in enumerate(answers):
        for k, a in enumerate(row):
            assert a is not None, (i, k)
            body = a.json()
            if waits and (i + k) % 2:
                assert a.status == 200 and body["status"] == "applied", (i, k, a)  # deposits
            else:
                assert a.status == 202, (i, k, a)
            # In request order: the answer names this request's own amount.
            ids[int(body["id"])] = amount(i, k)
    assert len(ids) == n_conns * depth
    finals = srv.wait_final(list(ids), timeout=60)
    assert len(finals) == len(ids)
    rows = srv.query("SELECT txid, amount FROM transactions WHERE txid IS NOT NULL")
    by_txid = {}
    for txid, amt in rows:
        assert txid not in by_txid, "txid %d recorded twice" % txid
        by_txid[txid] = amt
    for txid, amt in ids.items():
        assert by_txid[txid] == amt, (txid, by_txid[txid], amt)
    assert srv.child_pids("frontend") == [frontend], "the frontend restarted"


def test_a_turn_that_does_not_fit_takes_what_fits_in_order(server_factory):
    """8 POSTs read in one turn, room for 4 (the worker stopped): four get
    202, the other four 503 with Retry-After (which four depends on the order
    the frontend reads the sockets in)."""
    srv = server_factory(frontends=1, workers=1, args=["--queue-size", "4"])
    conns = open_warm(srv, 8)
    workers = stop_workers(srv)
    try:
        before = srv.metrics()["counters"]
        send_while_stopped(srv, conns, lambda i: post_bytes(tx_body(card(i), "%d" % (i + 1))))
        answers = [conn.response() for conn in conns]
        after = srv.metrics()["counters"]
    finally:
        cont_workers(workers)
        for conn in conns:
            conn.close()
    assert sorted(a.status for a in answers) == [202] * 4 + [503] * 4, answers
    assert all(a.headers.get("retry-after") == "1" for a in answers if a.status == 503), answers
    assert after["tx_accepted"] - before["tx_accepted"] == 4
    assert after["tx_queue_full"] - before["tx_queue_full"] == 4
