"""Processes dying at bad moments: killed children are restarted and lose
nothing they promised; SIGTERM drains; a crashed instance is recovered by the
next master."""
import os
import re
import signal
import time

import pytest

from conftest import (Load, Server, balance_sum, card, db_query, ledger_invariant, make_ops,
                      pid_alive, wait_final, wait_until)

DRAIN_TIMEOUT = 10


def assert_recorded_once(db, accepted):
    """Every 202'd id has exactly one final row; no txid appears twice. Rows
    for ids whose 202 was lost with a dead connection may exist too."""
    rows = wait_final(db, accepted, timeout=60)
    dup = db_query(db, "SELECT txid, COUNT(*) FROM transactions WHERE txid IS NOT NULL "
                       "GROUP BY txid HAVING COUNT(*) > 1 LIMIT 10")
    assert not dup, "txids recorded more than once: %r" % dup
    recorded = {t: (c, a) for t, c, a in db_query(
        db, "SELECT txid, card_number, amount FROM transactions WHERE txid IS NOT NULL")}
    wrong = [t for t, v in accepted.items() if recorded.get(t) != v]
    assert not wrong, [(t, accepted[t], recorded.get(t)) for t in wrong[:5]]
    return rows


def wait_restarted(srv, slot, old_pid, timeout=15):
    def restarted():
        for c in srv.children():
            if c["slot"] == slot and c["pid"] not in (old_pid, 0, None) \
                    and c["state"] == "running" and c["restarts"] >= 1:
                return c
        return None
    return wait_until(restarted, timeout, "slot %d (pid %d) to be restarted" % (slot, old_pid),
                      interval=0.1)


def pick(children, role):
    return next(c for c in children if c["role"] == role and c["state"] == "running")


def test_killed_worker_and_frontend_are_restarted_and_lose_nothing(server_factory):
    srv = server_factory(start=False)
    initial = balance_sum(srv.db)
    srv.start()
    load = Load(srv.port, make_ops(6000, 1000, rng_seed=11), threads=16).start()
    try:
        wait_until(lambda: load.done >= 1000, 60, "load to get going")
        kids = srv.children()
        worker, frontend = pick(kids, "worker"), pick(kids, "frontend")
        os.kill(worker["pid"], signal.SIGKILL)
        os.kill(frontend["pid"], signal.SIGKILL)
        killed_at = load.done
    finally:
        load.join(timeout=150)
    assert killed_at < len(load.ops), "load finished before the kill"
    assert load.given_up == 0, (load.statuses, load.conn_errors)
    assert not load.duplicate_ids

    new_worker = wait_restarted(srv, worker["slot"], worker["pid"])
    new_frontend = wait_restarted(srv, frontend["slot"], frontend["pid"])
    assert not pid_alive(worker["pid"]) and not pid_alive(frontend["pid"])
    assert new_worker["role"] == "worker" and new_frontend["role"] == "frontend"

    assert_recorded_once(srv.db, load.accepted)
    ledger_invariant(srv.db, initial)

    # Still serving, and the restarted children do their jobs.
    after = [srv.submit(card(i), 10) for i in range(20)]
    rows = wait_final(srv.db, after, timeout=15)
    assert all(rows[t] == "applied" for t in after)
    q = srv.queue()
    assert q["depth"] == 0 and q["claimed"] == 0


def test_sigterm_under_load_drains_everything_accepted(server_factory):
    srv = server_factory(start=False, args=["--drain-timeout", DRAIN_TIMEOUT])
    initial = balance_sum(srv.db)
    srv.start()
    load = Load(srv.port, make_ops(30000, 1000, rng_seed=12), threads=16, max_retries=10 ** 6)
    load.start()
    try:
        wait_until(lambda: load.done >= 1500, 60, "load to get going")
        t0 = time.monotonic()
        rc = srv.terminate(timeout=DRAIN_TIMEOUT + 5)
        elapsed = time.monotonic() - t0
    finally:
        load.stop.set()
        load.join(timeout=30)
    assert rc == 0, "exit code %r after SIGTERM under load" % rc
    assert elapsed < DRAIN_TIMEOUT + 1, "drain took %.1fs" % elapsed
    assert load.done < len(load.ops), "load finished before SIGTERM"
    assert not srv.leftover_children(), "children outlived the master"

    # Nothing accepted may be left behind: the rows are there right away.
    rows = assert_recorded_once(srv.db, load.accepted)
    assert len(rows) >= len(load.accepted) >= 1500
    ledger_invariant(srv.db, initial)
    assert not os.path.exists("/dev/shm" + srv.shm_name), "drained shutdown left the segment"


def test_sigint_stops_gracefully(server):
    txid = server.submit(card(1), 5)
    server.signal(signal.SIGINT)
    try:
        server.proc.wait(timeout=DRAIN_TIMEOUT + 5)
    finally:
        rc = server.terminate()
    assert rc == 0
    assert db_query(server.db, "SELECT status FROM transactions WHERE txid = ?", (txid,)) == [("applied",)]


@pytest.mark.parametrize("role", ["worker", "frontend"])
def test_child_death_is_logged_with_signal(server, role):
    child = pick(server.children(), role)
    os.kill(child["pid"], signal.SIGKILL)
    restarted = wait_restarted(server, child["slot"], child["pid"])
    assert restarted["last_exit"] not in (None, 0), restarted

    pid = str(child["pid"])

    def logged():
        return [line for line in server.log_text().splitlines()
                if re.search(r"\b%s\b" % pid, line) and re.search(r"signal|SIGKILL|killed", line, re.I)]
    lines = wait_until(logged, 5, "the master to log the death of pid %s" % pid)
    assert any(re.search(r"\b9\b|SIGKILL|Killed", line) for line in lines), lines
    # The server keeps answering through the restarted child.
    assert server.get("/healthz").status_code == 200


def test_repeated_worker_kills_count_restarts(server_factory):
    srv = server_factory(workers=1)
    for n in range(1, 4):
        child = pick(srv.children(), "worker")
        os.kill(child["pid"], signal.SIGKILL)
        c = wait_restarted(srv, child["slot"], child["pid"])
        assert c["restarts"] == n, c
    txid = srv.submit(card(3), 1)
    assert wait_final(srv.db, [txid], timeout=15)[txid] == "applied"


def test_sigstopped_worker_is_covered_by_the_other(server_factory):
    srv = server_factory(workers=2)
    stopped = pick(srv.children(), "worker")["pid"]
    os.kill(stopped, signal.SIGSTOP)
    try:
        ids = [srv.submit(card(i), 1) for i in range(50)]
        rows = wait_final(srv.db, ids, timeout=20)
        assert all(rows[t] == "applied" for t in ids)
    finally:
        os.kill(stopped, signal.SIGCONT)


def test_crashed_instance_is_recovered_by_next_master(tmp_path):
    """SIGKILL the whole instance mid-load (no drain at all): the shared
    segment keeps the queue, and a new master on the same segment applies
    every accepted transaction exactly once."""
    first = Server(tmp_path / "a", workers=1)
    initial = balance_sum(first.db)
    second = None
    try:
        first.start()
        load = Load(first.port, make_ops(20000, 1000, rng_seed=13), threads=16)
        load.start()
        try:
            wait_until(lambda: load.done >= 1500, 60, "load to get going")
            first.kill()
        finally:
            load.stop.set()
            load.join(timeout=30)
        assert load.done < len(load.ops)
        assert os.path.exists("/dev/shm" + first.shm_name), "segment vanished with the instance"

        second = Server(tmp_path / "b", db=first.db, workers=1)
        second.shm_name = first.shm_name
        second.start()
        assert_recorded_once(second.db, load.accepted)
        ledger_invariant(second.db, initial)
        # txids keep increasing across the restart.
        txid = second.submit(card(1), 1)
        assert txid > max(load.accepted)
        assert wait_final(second.db, [txid], timeout=15)[txid] == "applied"
        rc = second.terminate()
        assert rc == 0, second.log_tail()
    finally:
        if second:
            second.cleanup()
        first.cleanup()
