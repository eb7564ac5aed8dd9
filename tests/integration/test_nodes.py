"""Several txprocd nodes on one PostgreSQL ledger (--node-id): ids that never
meet and are never reused, fencing of a node id and of the only-instance
mode, reads of any node's rows through any node, an id still queued on
another node, Idempotency-Key across nodes, and the node named in metrics."""
import re

import pytest

from conftest import (balance_sum, card, cont_workers, db_exec, db_query, free_port,
                      ledger_invariant, prefer_wait, run_txprocd_briefly, stop_workers,
                      unique_shm_name, wait_final, wait_until)

pytestmark = pytest.mark.postgres_only

STRIDE = 64


@pytest.fixture
def node(server_factory):
    def make(n, db=None, **kw):
        kw.setdefault("backend", "postgres")
        args = ["--node-id", str(n), *kw.pop("args", [])]
        return server_factory(db=db, args=args, **kw)
    return make


def refused(db, *extra):
    """Starts txprocd on db expecting a refusal; returns its stderr."""
    rc, _, err = run_txprocd_briefly(["--listen", "127.0.0.1:%d" % free_port(), "--db", db,
                                      "--shm-name", unique_shm_name(), *extra], timeout=30)
    assert rc == 2, (rc, err)
    return err


def test_two_nodes_number_apart_and_read_each_others_rows(node):
    a = node(1)
    b = node(2, db=a.db)
    before = balance_sum(a.db)
    ids_a = [a.submit(card(i), 10 + i) for i in range(40)]
    ids_b = [b.submit(card(i), 100 + i) for i in range(40)]
    assert all(t % STRIDE == 1 for t in ids_a), ids_a
    assert all(t % STRIDE == 2 for t in ids_b), ids_b
    assert len(set(ids_a) | set(ids_b)) == 80
    rows = wait_final(a.db, ids_a + ids_b, timeout=30)
    assert set(rows.values()) == {"applied"}, rows
    # Either node answers for the other's rows, from the ledger.
    for srv, t in ((b, ids_a[0]), (a, ids_b[0])):
        r = srv.get("/transaction/%d" % t)
        assert r.status_code == 200 and r.json()["status"] == "applied", r.text
    assert a.balance(card(0)) == b.balance(card(0))
    stmt = b.get("/accounts/%s/transactions" % card(3), params={"limit": 10}).json()
    assert {ids_a[3], ids_b[3]} <= {int(t["id"]) for t in stmt["transactions"]}, stmt
    assert balance_sum(a.db) == before + sum(10 + i for i in range(40)) + sum(100 + i for i in range(40))
    ledger_invariant(a.db, before)
    # The node is named in /metrics, Prometheus and txctl.
    assert a.metrics()["node"] == 1 and b.metrics()["node"] == 2
    assert 'txprocd_node_info{node="2"} 1' in b.get("/metrics", params={"format": "prometheus"}).text
    assert re.search(r"^txprocd \S+  node 1 ", a.txctl("stats").stdout, re.M)


def test_a_node_id_is_held_once_and_free_again_when_its_instance_dies(node):
    a = node(1)
    err = refused(a.db, "--node-id", "1")
    assert "node id 1 is in use by another live txprocd" in err, err
    # Nodes and the only-instance mode exclude each other.
    err = refused(a.db)
    assert "in use by another txprocd instance or by nodes" in err, err
    a.kill()
    again = node(1, db=a.db)
    txid = again.submit(card(1), 5)
    assert wait_final(a.db, [txid], timeout=20)[txid] == "applied"


def test_only_instance_keeps_nodes_out(server_factory):
    single = server_factory(backend="postgres")
    err = refused(single.db, "--node-id", "4")
    assert "held by a txprocd started without --node-id" in err, err


def test_node_id_needs_postgresql(tmp_path):
    rc, _, err = run_txprocd_briefly(["--listen", "127.0.0.1:%d" % free_port(), "--db",
                                      tmp_path / "users.db", "--shm-name", unique_shm_name(),
                                      "--node-id", "3"], timeout=30)
    assert rc == 2 and "--node-id needs a PostgreSQL ledger" in err, (rc, err)
    rc, _, err = run_txprocd_briefly(["--node-id", "64"])
    assert rc == 2 and "node-id" in err, (rc, err)


def test_ids_lost_with_a_discarded_segment_are_never_handed_out_again(node):
    """Entries accepted and then lost with their machine (the segment is gone)
    were answered 202 with their ids: a node started afresh must not give
    those ids to other requests, although the ledger never saw them."""
    a = node(3)
    stop_workers(a)
    lost = [a.submit(card(i), 1) for i in range(20)]
    a.kill()   # the segment stays, but the next start uses a new one
    b = node(3, db=a.db)
    fresh = [b.submit(card(i), 2) for i in range(20)]
    assert min(fresh) > max(lost), (lost, fresh)
    assert all(t % STRIDE == 3 for t in fresh)
    rows = wait_final(a.db, fresh, timeout=30)
    assert set(rows.values()) == {"applied"}
    assert db_query(a.db, "SELECT COUNT(*) FROM transactions WHERE txid = ANY(?)", (lost,)) == [(0,)]
    (reserved,) = db_query(a.db, "SELECT next_k FROM txprocd_nodes WHERE node_id = 3")[0]
    assert reserved * STRIDE > max(fresh)


def test_id_queued_on_another_node_is_answered_as_such(node):
    a = node(1)
    b = node(2, db=a.db)
    pids = stop_workers(a)
    try:
        txid = a.submit(card(4), 7)
        mine = a.get("/transaction/%d" % txid)
        assert mine.status_code == 200 and mine.json()["status"] == "queued", mine.text
        other = b.get("/transaction/%d" % txid)
        assert other.status_code == 404, other.text
        assert "numbered by node 1, which may still hold it queued" in other.json()["message"]
        plain = b.get("/transaction/%d" % (txid + 1))   # node 2's number, never handed out
        assert plain.status_code == 404 and "numbered by node" not in plain.json()["message"]
    finally:
        cont_workers(pids)
    assert wait_final(a.db, [txid], timeout=20)[txid] == "applied"
    assert b.get("/transaction/%d" % txid).json()["status"] == "applied"


def test_idempotency_key_through_two_nodes_applies_once(node):
    a = node(1)
    b = node(2, db=a.db)
    start = a.balance(card(9))
    body = {"card_number": card(9), "amount": 321}
    headers = dict(prefer_wait(10), **{"Idempotency-Key": "nodes-once-1"})
    answers = [srv.post_json("/transaction", body, headers=headers) for srv in (a, b, a)]
    assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]
    first = answers[0].json()
    assert first["status"] == "applied"
    for r in answers[1:]:
        assert r.headers.get("Idempotent-Replayed") == "true" or r.json()["status"] == "duplicate", r.text
    wait_until(lambda: a.balance(card(9)) == start + 321, 10, "the deposit")
    assert db_query(a.db, "SELECT COUNT(*) FROM transactions WHERE card_number = ? AND amount = 321 "
                    "AND status = 'applied'", (card(9),)) == [(1,)]


def test_clean_restart_numbers_on_where_the_node_stopped(node):
    """A node that drained and stopped gives back the unused tail of its span:
    started again, it numbers on right after its last id, not 2^40 later."""
    a = node(5)
    first = [a.submit(card(i), 1) for i in range(5)]
    assert set(wait_final(a.db, first, timeout=20).values()) == {"applied"}
    assert a.terminate() == 0
    assert "gave back the unused transaction ids" in a.log_text()
    b = node(5, db=a.db)
    nxt = b.submit(card(1), 1)
    assert nxt == max(first) + STRIDE, (first, nxt)


def test_adopted_segment_keeps_its_span_reserved(node):
    """A segment adopted after a kill numbers from a span the ledger must
    still show as reserved, even if the ledger lost that row (restored from a
    backup, say): otherwise a fresh segment elsewhere could get the same ids."""
    a = node(6)
    pids = stop_workers(a)
    queued = [a.submit(card(i), 1) for i in range(5)]
    cont_workers(pids)
    a.kill()
    db_exec(a.db, "DELETE FROM txprocd_nodes WHERE node_id = 6")
    b = node(6, db=a.db, start=False)
    b.shm_name = a.shm_name
    b.start()   # adopts a's segment
    assert "adopted abandoned segment" in b.log_text()
    assert set(wait_final(a.db, queued, timeout=30).values()) == {"applied"}
    (reserved,) = db_query(a.db, "SELECT next_k FROM txprocd_nodes WHERE node_id = 6")[0]
    assert reserved * STRIDE > max(queued) + STRIDE * 1000, (reserved, queued)
