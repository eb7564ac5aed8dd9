"""Hardening: a segment that is not the server's own is never adopted, nothing
read from a segment is used before it is checked against the geometry, txctl
survives a corrupt segment, children killed while serving never make the
server give up, a frozen process group is not mistaken for hung children, a
restart right after the master was killed succeeds, a queue that does not fit
in /dev/shm fails at start, and an assertion failure costs one child."""
import fcntl
import json
import os
import pwd
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import (TXPROCD, TXPROCD_RELEASE, Load, assert_recorded_once, balance_sum, card,
                      clean_env, final_rows, free_port, ledger_invariant, make_ops, raw_request,
                      run_txprocd_briefly, seed_db, stop_workers, wait_final, wait_until)

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (other users, mounts)")

# Offsets in the segment (common/shm.h, common/ring.h on x86_64 glibc);
# segment_offsets() checks both magic numbers so a layout change fails
# loudly here instead of patching the wrong bytes.
SHM_MAGIC = 0x5458505244534547
RING_MAGIC = 0x52494E4754585031
HDR_LISTEN = 80
HDR_RING_OFF = 752
RING_N_SLOTS = 12
RING_INTENT = 128
RING_CLAIMS = 256          # ALIGN64(sizeof(struct ring))
CLAIM_SIZE = 64
CLAIM_ENTRIES_OFF = 16


def segment_path(shm_name):
    return "/dev/shm" + shm_name


def segment_offsets(path):
    with open(path, "rb") as f:
        data = f.read(4096)
    assert struct.unpack_from("<Q", data, 0)[0] == SHM_MAGIC, "not a segment"
    ring_off = struct.unpack_from("<Q", data, HDR_RING_OFF)[0]
    with open(path, "rb") as f:
        f.seek(ring_off)
        assert struct.unpack("<Q", f.read(8))[0] == RING_MAGIC, "ring offsets moved: update this test"
    return ring_off


def patch(path, offset, fmt, *values):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, *values))


def abandoned_segment(srv, deposits=5, amount=1000):
    """Queues deposits with the workers stopped, then kills the whole
    instance: what is left is a valid segment holding them. Returns their
    (card, amount) by txid; none of them is in the ledger."""
    stopped = stop_workers(srv)
    accepted = {}
    for i in range(deposits):
        accepted[srv.submit(card(i), amount)] = (card(i), amount)
    srv.kill()
    assert stopped and not final_rows(srv.db).keys() & accepted.keys()
    assert os.path.exists(segment_path(srv.shm_name))
    return accepted


def start_refused(srv, *extra):
    """Runs txprocd on srv's ledger and segment, with srv's settings (so the
    segment would be adopted but for the check under test), expecting it
    to refuse; returns its stderr."""
    rc, _, err = run_txprocd_briefly(["--listen", "127.0.0.1:%d" % free_port(), "--db", srv.db,
                                      "--shm-name", srv.shm_name, *srv.extra_args, *extra])
    assert rc == 2, "expected exit 2 (refused), got %r\n%s" % (rc, err)
    return err


def as_nobody(*argv, data=b""):
    subprocess.run(argv, input=data, check=True, user="nobody", group="nogroup", timeout=30)


# --------------------------------------------------------------------------
# segments that are not ours


@pytest.mark.backend_independent
@ROOT_ONLY
def test_segment_planted_by_another_user_is_never_adopted(server_factory):
    """Another local user plants a well-formed segment (mode 0666) holding
    queued deposits under the server's name before it starts: the server
    must refuse it, name owner and mode, and never apply those deposits."""
    victim = server_factory(workers=1)
    initial = balance_sum(victim.db)
    planted = abandoned_segment(victim, deposits=3, amount=10 ** 9)
    path = segment_path(victim.shm_name)
    with open(path, "rb") as f:
        forged = f.read()
    os.unlink(path)
    as_nobody("sh", "-c", "umask 0; cat > %s && chmod 0666 %s" % (path, path), data=forged)
    assert os.stat(path).st_uid == pwd.getpwnam("nobody").pw_uid

    err = start_refused(victim)
    assert "uid 65534 (nobody)" in err and "mode 0666" in err, err
    assert "--shm-name" in err and "rm /dev/shm" in err, err
    assert os.path.exists(path), "a refused segment is left alone"

    victim.extra_args += ["--discard-shm"]
    victim.start()
    assert "removed it (--discard-shm)" in victim.log_text()
    assert os.stat(path).st_uid == 0 and os.stat(path).st_mode & 0o777 == 0o600
    txid = victim.submit(card(7), 1)
    assert wait_final(victim.db, [txid])[txid] == "applied"
    victim.stop_and_check()
    # Txids restart at 1 on the fresh segment: tell the planted rows by amount.
    big = victim.query("SELECT COUNT(*) FROM transactions WHERE amount = ?", (10 ** 9,))[0][0]
    assert big == 0 and len(planted) == 3, "planted deposits were applied"
    ledger_invariant(victim.db, initial)
    assert balance_sum(victim.db) == initial + 1


@pytest.mark.backend_independent
@ROOT_ONLY
def test_empty_segment_of_another_user_is_refused_then_discarded(server_factory):
    srv = server_factory(start=False)
    path = segment_path(srv.shm_name)
    as_nobody("sh", "-c", "umask 077; : > %s" % path)
    err = start_refused(srv)
    assert "uid 65534 (nobody), mode 0600" in err, err
    srv.extra_args += ["--discard-shm"]
    srv.start()
    assert srv.submit(card(1), 1) > 0


@ROOT_ONLY
def test_unprivileged_server_says_it_cannot_remove_a_foreign_segment():
    """Run as nobody (--user): a root-owned 0600 segment under its name can
    neither be opened nor, with --discard-shm, removed; both are said."""
    home = Path(tempfile.mkdtemp(prefix="txp-user-", dir="/tmp"))  # pytest's tree is root-only
    nobody = pwd.getpwnam("nobody")
    db = seed_db(home / "users.db", accounts=10)
    for p in (home, db):
        os.chown(p, nobody.pw_uid, nobody.pw_gid)
    shm_name = "/txp-test-foreign-%d" % os.getpid()
    path = segment_path(shm_name)
    with open(path, "wb"):
        pass
    os.chmod(path, 0o600)
    try:
        base = ["--listen", "127.0.0.1:%d" % free_port(), "--db", db, "--shm-name", shm_name,
                "--user", "nobody"]
        rc, _, err = run_txprocd_briefly(base)
        assert rc == 2, (rc, err)
        assert "cannot be opened" in err and "uid 0 (root), mode 0600" in err, err
        rc, _, err = run_txprocd_briefly(base + ["--discard-shm"])
        assert rc == 2, (rc, err)
        assert "--discard-shm cannot remove it" in err and "only its owner or root" in err, err
        assert os.path.exists(path)
    finally:
        os.unlink(path)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.backend_independent
@pytest.mark.parametrize("corruption", ["claim_offset", "intent", "slot_count"])
def test_abandoned_segment_with_bad_offsets_is_refused(server_factory, corruption):
    """An own segment whose claim record points far outside it (the adopting
    master crashed with SIGSEGV), whose intent record would redo a claim
    past the tail (a write out of place), or whose slot count is absurd: the
    master refuses it with the reason, and --discard-shm replaces it."""
    srv = server_factory(workers=1)
    abandoned_segment(srv, deposits=2)
    path = segment_path(srv.shm_name)
    ring = segment_offsets(path)
    if corruption == "claim_offset":
        patch(path, ring + RING_CLAIMS + CLAIM_ENTRIES_OFF, "<Q", 1 << 44)
        reason = "claim record 0 points at offset"
    elif corruption == "intent":
        patch(path, ring + RING_INTENT, "<IIQII", 1, 0, 1 << 40, 4, 0)
        reason = "interrupted queue operation"
    else:
        patch(path, ring + RING_N_SLOTS, "<I", 0x7FFFFFFF)
        reason = "queue geometry out of range"
    err = start_refused(srv)
    assert reason in err and "--discard-shm" in err, err
    assert "Segmentation" not in err and "Sanitizer" not in err, err
    srv.extra_args += ["--discard-shm"]
    srv.start()
    assert srv.submit(card(1), 1) > 0


@pytest.mark.backend_independent
def test_txctl_refuses_a_corrupt_segment_and_escapes_strings(server_factory):
    """txctl checks the ring before reading it (n_slots = 0x7fffffff made
    'queue' and 'stats' crash) and prints text from the segment escaped."""
    srv = server_factory(workers=1)
    path = segment_path(srv.shm_name)
    ring = segment_offsets(path)
    patch(path, HDR_LISTEN, "8s", b"\x1b[2J\x07ab\xff")
    out = srv.txctl("stats").stdout
    assert "\\x1b[2J\\x07ab\\xff" in out and "\x1b" not in out and "\x07" not in out, out
    srv.kill()
    patch(path, ring + RING_N_SLOTS, "<I", 0x7FFFFFFF)
    for view in ("queue", "stats", "children"):
        proc = srv.txctl(view, check=False)
        assert proc.returncode == 1, (view, proc.returncode, proc.stderr)
        assert "queue geometry out of range" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------
# supervision


def kill_serving(srv, n, roles, load):
    """kill -9 a serving child of each role in turn, n times, as soon as one
    serves; the load must still be running at the end."""
    kills = 0
    while kills < n:
        role = roles[kills % len(roles)]
        serving = [c for c in srv.children() if c["role"] == role and c["state"] == "running"]
        if not serving:
            time.sleep(0.01)
            continue
        try:
            os.kill(serving[kills // len(roles) % len(serving)]["pid"], signal.SIGKILL)
        except ProcessLookupError:
            continue
        kills += 1
    assert any(t.is_alive() for t in load._threads), "the load ended before the kills did"
    return kills


@pytest.mark.backend_independent
@pytest.mark.parametrize("kills,roles", [(10, ("frontend",)), (50, ("frontend", "worker"))])
def test_children_killed_while_serving_never_stop_the_server(server_factory, kills, roles):
    srv = server_factory(frontends=2, workers=2, accounts=2000)
    initial = balance_sum(srv.db)
    # More operations than the kills can take time for: the load is stopped
    # once they are done, so its size only has to outlast them (60,000 ran
    # out under the sanitizers once the HTTP layer got faster).
    load = Load(srv.port, make_ops(400000, 2000, rng_seed=5), threads=16, deadline_s=90).start()
    wait_until(lambda: load.done >= 300, 30, "load to get going")
    t0 = time.monotonic()
    kill_serving(srv, kills, roles, load)
    assert time.monotonic() - t0 < 60, "the kills took longer than a minute"
    wait_until(lambda: all(c["state"] == "running" for c in srv.children()), 20,
               "every child to serve again")
    load.stop.set()
    load.join()
    assert srv.alive(), "the server stopped itself:\n" + srv.log_tail()
    log = srv.log_text()
    assert "CRASH LOOP" not in log and "shutting down" not in log, srv.log_tail()
    assert load.given_up == 0 and len(load.accepted) > 300
    srv.wait_final(list(load.accepted), timeout=60)
    assert_recorded_once(srv.db, load.accepted)
    ledger_invariant(srv.db, initial)
    assert srv.submit(card(3), 2) > 0


@pytest.mark.backend_independent
def test_children_that_die_before_ready_are_a_crash_loop(server_factory):
    """The one thing the crash loop is for: workers that never get to serve
    (here, every start fails) make the server give up and exit 1."""
    srv = server_factory(start=False, workers=4, env={"TXP_FAILPOINT_WORKER_START": "always"})
    srv.start(wait=False)
    srv.proc.wait(timeout=60)
    srv._reap()
    log = srv.log_text()
    assert srv.returncode == 1, (srv.returncode, srv.log_tail())
    assert "CRASH LOOP: 10 worker crashes within 60 s" in log, srv.log_tail()
    assert "no worker can run; shutting down" in log


@pytest.mark.backend_independent
def test_frozen_process_group_kills_no_healthy_child(server_factory):
    """SIGSTOP of the whole group past --worker-timeout (docker pause): on
    resume the master must not take its own stall for its children's."""
    srv = server_factory(frontends=2, workers=2, args=["--worker-timeout", "2"])
    before = {c["slot"]: c["pid"] for c in srv.children()}
    os.killpg(srv.pid, signal.SIGSTOP)
    time.sleep(5)
    # Thawed in an arbitrary order, as a cgroup freezer may: the master
    # first, its children half a second later. The master must give them a
    # full timeout from its own resumption, not judge the 5 s gap.
    os.kill(srv.pid, signal.SIGCONT)
    time.sleep(0.5)
    os.killpg(srv.pid, signal.SIGCONT)
    txid = srv.submit(card(4), 6)
    time.sleep(3)  # past the timeout again: the master judges beats after resuming
    assert {c["slot"]: c["pid"] for c in srv.children()} == before, srv.log_tail()
    assert "sent no heartbeat" not in srv.log_text()
    assert "did not run for" in srv.log_text()
    assert wait_final(srv.db, [txid])[txid] == "applied"


def restart_in_place(srv):
    """Starts srv's binary again on the same port, ledger and segment."""
    srv._log = open(srv.log_path, "ab")
    argv = [srv.binary, "--listen", "127.0.0.1:%d" % srv.port, "--db", str(srv.db),
            "--shm-name", srv.shm_name, *srv.extra_args]
    srv.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=srv._log, stderr=srv._log,
                                env=clean_env(srv.env), start_new_session=True, cwd=srv.workdir)
    srv.returncode = None
    srv.ended_at = None
    assert srv._wait_ready(), "restart %d did not become ready\n%s" % (srv.proc.returncode,
                                                                       srv.log_tail())
    srv.wait_children_running()


def test_restart_right_after_master_kill_succeeds_every_time(server_factory):
    """kill -9 of the master alone and an immediate restart on the same
    port, ledger and segment, 10 times in a row: its dying children still
    hold the port, the ledger lock and the segment lock for a moment, and
    each is waited for. Everything accepted is applied exactly once."""
    srv = server_factory(workers=1)
    initial = balance_sum(srv.db)
    accepted = {}
    for round_ in range(10):
        for i in range(3):
            accepted[srv.submit(card(i), 1 + round_)] = (card(i), 1 + round_)
        srv.proc.kill()
        srv.proc.wait(timeout=10)
        if round_ % 2:
            srv.port = free_port()  # no wait for the port: the locks alone are waited for
        restart_in_place(srv)
    assert "in use by another txprocd" not in srv.log_text()
    assert_recorded_once(srv.db, accepted)
    srv.stop_and_check()
    ledger_invariant(srv.db, initial)


@pytest.mark.sqlite_only
def test_ledger_lock_held_briefly_is_waited_for(server_factory):
    """The ledger flock held for a second (as by the children of a master
    killed a moment ago) delays the start; held for good, it refuses with
    the reason after the wait."""
    srv = server_factory(start=False)
    with open(srv.db, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        timer = threading.Timer(1.0, fcntl.flock, (held, fcntl.LOCK_UN))
        timer.start()
        try:
            srv.start()
        finally:
            timer.cancel()
        assert "in use by another txprocd" not in srv.log_text()
        assert srv.submit(card(1), 1) > 0
        srv.stop_and_check()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        t0 = time.monotonic()
        rc, _, err = run_txprocd_briefly(["--listen", "127.0.0.1:%d" % free_port(), "--db", srv.db,
                                          "--shm-name", "/txp-test-other-%d" % os.getpid()])
        assert rc == 2, (rc, err)
        assert "is in use by another txprocd instance (still after 5 s)" in err, err
        assert time.monotonic() - t0 >= 4.5


# --------------------------------------------------------------------------
# resources and answers


@ROOT_ONLY
def test_queue_that_does_not_fit_in_dev_shm_fails_at_start(tmp_path):
    """/dev/shm of 8 MiB (Docker's default is 64) and a queue of 100,000
    entries (about 26 MiB): the segment is reserved at start, so the master
    says what it needs instead of a child dying of SIGBUS later."""
    db = seed_db(tmp_path / "users.db", accounts=10)
    script = ("mount -t tmpfs -o size=8m tmpfs /dev/shm && exec %s --listen 127.0.0.1:%d --db %s "
              "--shm-name /txp-small --queue-size 100000" % (TXPROCD, free_port(), db))
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          timeout=30, env=clean_env())
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "needs" in proc.stderr and "MiB" in proc.stderr and "--queue-size" in proc.stderr, proc.stderr
    assert "--shm-size" in proc.stderr, proc.stderr


@pytest.mark.backend_independent
def test_404_with_invalid_utf8_in_the_path_is_valid_json(server):
    status, headers, body = raw_request(server.port, b"GET /no\xff\xfe\xc3 HTTP/1.1\r\n"
                                                     b"Host: x\r\nConnection: close\r\n\r\n")
    assert status == 404, (status, body)
    doc = json.loads(body.decode("utf-8"))
    assert doc["status"] == "error" and doc["message"].startswith("no such path: /no"), doc


def test_assertion_failure_costs_one_worker_and_no_transaction(server_factory, tmp_path):
    trigger = tmp_path / "assert"
    trigger.write_text("")
    srv = server_factory(workers=1, env={"TXP_FAILPOINT_ASSERT_WITH_CLAIM": str(trigger)})
    initial = balance_sum(srv.db)
    worker = srv.running_child("worker")
    accepted = {}
    for i in range(30):
        accepted[srv.submit(card(i), 3)] = (card(i), 3)
    srv.wait_restarted(worker["slot"], worker["pid"])
    assert_recorded_once(srv.db, accepted)
    assert not trigger.exists(), "the failpoint never fired"
    log = srv.log_text()
    assert "assertion failed: n == 0 || !failpoint(\"ASSERT_WITH_CLAIM\")" in log, srv.log_tail()
    assert "killed by signal 6" in log
    assert srv.metrics()["counters"]["entries_requeued"] >= 1
    srv.stop_and_check()
    ledger_invariant(srv.db, initial)


@pytest.mark.backend_independent
def test_release_binary_has_no_failpoints(server_factory, tmp_path):
    trigger = tmp_path / "die-after-commit"
    trigger.write_text("")
    srv = server_factory(workers=1, binary=TXPROCD_RELEASE,
                         env={"TXP_FAILPOINT_AFTER_COMMIT": str(trigger),
                              "TXP_FAILPOINT_ASSERT_WITH_CLAIM": "always"})
    ids = [srv.submit(card(i), 2) for i in range(10)]
    assert all(v == "applied" for v in wait_final(srv.db, ids).values())
    assert trigger.exists() and "failpoint" not in srv.log_text()
