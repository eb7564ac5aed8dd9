"""Supervision: stuck children found by their heartbeat, the SIGHUP rolling
restart, privilege drop, and abandoned segments that cannot be adopted (the
crash-loop policy is in test_hardening.py)."""
import os
import signal
import struct
import time

import pytest

from conftest import Load, assert_recorded_once, balance_sum, card, free_port, ledger_invariant, \
    make_ops, run_txprocd_briefly, seed_db, sigstop, stop_holding_claim, wait_until


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
    load = Load(srv.port, make_ops(200000, 2000), threads=16).start()
    wait_until(lambda: load.done >= 500, 30, "load to get going")
    srv.signal(signal.SIGHUP)

    def all_replaced():
        now = {c["slot"]: (c["pid"], c["state"]) for c in srv.children()}
        return all(now[s][0] != before[s] and now[s][1] == "running" for s in before)
    wait_until(all_replaced, 30, "every child to be replaced by the rolling restart", interval=0.1)
    # The whole restart happened under load: the load is still running now.
    assert any(t.is_alive() for t in load._threads), "the load ended before the restart did"
    done_at_replacement = load.done
    wait_until(lambda: load.done >= done_at_replacement + 500, 30, "the load to go on after it")
    load.stop.set()
    load.join()
    # The master logs completion on its next look after the last child runs.
    wait_until(lambda: "rolling restart complete" in srv.log_text(), 5, "the rolling restart to finish")
    assert load.conn_errors == 0, "connections failed during the rolling restart"
    assert load.given_up == 0
    assert set(load.statuses) <= {202}, load.statuses
    srv.wait_final(list(load.accepted), timeout=60)
    assert_recorded_once(srv.db, load.accepted)
    ledger_invariant(srv.db, initial)
    # A planned restart is not a crash: nothing was logged as killed or crashed.
    assert "killed by signal" not in srv.log_text()


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


def forge_segment(shm_name, magic, version):
    """Leaves a segment as an abandoned instance of another build would."""
    path = "/dev/shm" + shm_name
    with open(path, "wb") as f:
        f.write(struct.pack("<QI", magic, version).ljust(4096, b"\0"))
    os.chmod(path, 0o600)
    return path


@pytest.mark.parametrize("magic,version,reason", [
    (0x5458505244534547, 0, "layout version 0"),
    (0x1122334455667788, 1, "not a txprocd segment"),
])
def test_incompatible_abandoned_segment_is_refused_unless_discarded(server_factory, magic, version,
                                                                    reason):
    srv = server_factory(start=False)
    path = forge_segment(srv.shm_name, magic, version)
    try:
        rc, _, err = run_txprocd_briefly(["--listen", "127.0.0.1:%d" % free_port(), "--db", srv.db,
                                          "--shm-name", srv.shm_name])
        assert rc == 2, err
        assert reason in err and "--discard-shm" in err, err
        assert os.path.exists(path), "the refused segment must be left alone"
        srv.extra_args += ["--discard-shm"]
        srv.start()
        assert "discarding abandoned segment" in srv.log_text()
        assert srv.submit(card(3), 9) > 0
    finally:
        if not srv.proc and os.path.exists(path):
            os.unlink(path)


def test_worker_dying_between_commit_and_ack_is_replayed_as_noops(server_factory, tmp_path):
    trigger = tmp_path / "die-after-commit"
    trigger.write_text("")
    srv = server_factory(workers=1, env={"TXP_FAILPOINT_AFTER_COMMIT": str(trigger)})
    initial = balance_sum(srv.db)
    accepted = {}
    for i in range(40):
        accepted[srv.submit(card(i), 11)] = (card(i), 11)
    assert_recorded_once(srv.db, accepted)
    assert not trigger.exists(), "the failpoint never fired"
    assert "exiting between COMMIT and acknowledge" in srv.log_text()
    counters = srv.metrics()["counters"]
    assert counters["tx_replayed"] >= 1, counters
    assert counters["entries_requeued"] >= 1, counters
    srv.stop_and_check()
    ledger_invariant(srv.db, initial)
