"""Supervision: stuck children found by their heartbeat, the SIGHUP rolling
restart, and the crash-loop limit."""
import os
import signal
import time

import pytest

from conftest import Load, assert_recorded_once, balance_sum, card, ledger_invariant, make_ops, \
    seed_db, sigstop, stop_holding_claim, wait_until


def test_stopped_worker_is_replaced_after_heartbeat_timeout(server_factory):
    srv = server_factory(workers=1, args=["--worker-timeout", "2"])
    worker = srv.running_child("worker")
    sigstop(worker["pid"])
    ids = [srv.submit(card(i), 5) for i in range(20)]
    srv.wait_restarted(worker["slot"], worker["pid"], timeout=15)
    rows = srv.wait_final(ids, timeout=20)
    assert all(rows[t] == "applied" for t in ids)
    assert "sent no heartbeat" in srv.log_text()
    wait_until(lambda: not os.path.exists("/proc/%d" % worker["pid"]), 5, "stopped worker to be gone")


def test_stopped_worker_holding_a_claim_has_it_requeued(server_factory):
    srv = server_factory(workers=1, args=["--worker-timeout", "2", "--batch-max", "8"])
    worker = srv.running_child("worker")
    load = Load(srv.port, make_ops(3000, 1000), threads=8).start()
    claimed = stop_holding_claim(srv, worker["pid"])
    assert claimed > 0
    srv.wait_restarted(worker["slot"], worker["pid"], timeout=15)
    load.join()
    srv.wait_final(list(load.accepted), timeout=60)
    assert_recorded_once(srv.db, load.accepted)
    assert srv.metrics()["counters"]["entries_requeued"] >= 1


def test_stopped_frontend_is_replaced_after_heartbeat_timeout(server_factory):
    srv = server_factory(frontends=2, args=["--worker-timeout", "2"])
    fe = srv.running_child("frontend")
    sigstop(fe["pid"])
    srv.wait_restarted(fe["slot"], fe["pid"], timeout=15)
    assert srv.get("/healthz").status_code == 200
    assert srv.submit(card(1), 3) > 0


def test_heartbeat_timeout_zero_never_kills(server_factory):
    srv = server_factory(workers=1, args=["--worker-timeout", "0"])
    worker = srv.running_child("worker")
    sigstop(worker["pid"])
    try:
        time.sleep(3)
        assert srv.running_child("worker")["pid"] == worker["pid"]
    finally:
        os.kill(worker["pid"], signal.SIGCONT)


def test_sighup_rolling_restart_under_load_fails_no_request(server_factory):
    srv = server_factory(workers=2, frontends=2, accounts=2000)
    before = {c["slot"]: c["pid"] for c in srv.children()}
    initial = balance_sum(srv.db)
    load = Load(srv.port, make_ops(12000, 2000), threads=16).start()
    time.sleep(0.5)
    srv.signal(signal.SIGHUP)

    def all_replaced():
        now = {c["slot"]: (c["pid"], c["state"]) for c in srv.children()}
        return all(now[s][0] != before[s] and now[s][1] == "running" for s in before)
    wait_until(all_replaced, 30, "every child to be replaced by the rolling restart", interval=0.1)
    load.join()
    assert "rolling restart complete" in srv.log_text()
    assert load.conn_errors == 0, "connections failed during the rolling restart"
    assert load.given_up == 0
    assert set(load.statuses) <= {202}, load.statuses
    srv.wait_final(list(load.accepted), timeout=60)
    assert_recorded_once(srv.db, load.accepted)
    ledger_invariant(srv.db, initial)
    # A planned restart is not a crash: nothing was logged as killed or crashed.
    assert "killed by signal" not in srv.log_text()


def test_crash_loop_stops_restarting_the_role_and_says_so(server_factory):
    srv = server_factory(frontends=2, workers=1)
    victim_slot = srv.running_child("frontend")["slot"]
    for n in range(10):
        row = next(c for c in srv.children() if c["slot"] == victim_slot)
        os.kill(row["pid"], signal.SIGKILL)
        if n < 9:
            srv.wait_restarted(victim_slot, row["pid"], timeout=15)
    wait_until(lambda: next(c for c in srv.children() if c["slot"] == victim_slot)["state"] == "failed",
               10, "the crash-looping slot to be marked failed")
    assert "CRASH LOOP" in srv.log_text()
    # The other frontend keeps serving.
    assert srv.get("/healthz").status_code == 200
    assert srv.submit(card(2), 4) > 0


@pytest.fixture
def nobody_home():
    """A directory owned by 'nobody' under /tmp (pytest's tree is root-only)."""
    import pwd
    import shutil
    import tempfile
    from pathlib import Path
    nobody = pwd.getpwnam("nobody")
    home = Path(tempfile.mkdtemp(prefix="txp-user-", dir="/tmp"))
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    yield home, nobody
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_flag_drops_root_after_binding(server_factory, nobody_home):
    home, nobody = nobody_home
    db = seed_db(home / "users.db", accounts=100)
    for f in home.iterdir():
        os.chown(f, nobody.pw_uid, nobody.pw_gid)
    srv = server_factory(db=db, args=["--user", "nobody"])

    def uid_of(pid):
        with open("/proc/%d/status" % pid) as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
    assert uid_of(srv.pid) == nobody.pw_uid
    assert all(uid_of(c["pid"]) == nobody.pw_uid for c in srv.children())
    assert os.stat("/dev/shm" + srv.shm_name).st_uid == nobody.pw_uid
    assert oct(os.stat("/dev/shm" + srv.shm_name).st_mode & 0o777) == "0o600"
    ids = [srv.submit(card(i), 5) for i in range(5)]
    assert all(s == "applied" for s in srv.wait_final(ids, timeout=20).values())
