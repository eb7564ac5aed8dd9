"""Command line and environment configuration of txprocd."""
import os
import subprocess
import signal
import time

import pytest

from conftest import card, free_port, run_txprocd_briefly, seed_db, unique_shm_name

# The ledger backend plays no part here: once, on SQLite.
pytestmark = pytest.mark.backend_independent

FLAGS = ["--listen", "--db", "--workers", "--frontends", "--queue-size", "--batch-max", "--sync",
         "--shm-name", "--drain-timeout", "--log-format", "--help"]


@pytest.fixture
def base_args(tmp_path):
    """Valid arguments on a fresh port/segment, so a bad flag that is wrongly
    accepted starts a harmless server (which run_txprocd_briefly kills)."""
    db = seed_db(tmp_path / "users.db", accounts=10)
    return ["--db", str(db), "--listen", "127.0.0.1:%d" % free_port(), "--shm-name", unique_shm_name()]


def test_help_exits_0_and_lists_every_flag():
    rc, out, err = run_txprocd_briefly(["--help"])
    assert rc == 0, err
    text = out + err
    for flag in FLAGS:
        assert flag in text, "--help does not mention %s" % flag
    for env in ("TXP_LISTEN", "TXP_DB_PATH", "TXP_WORKERS"):
        assert env in text, "--help does not mention %s" % env


@pytest.mark.parametrize("args,mention", [
    (["--workers", "0"], "workers"),
    (["--workers", "-1"], "workers"),
    (["--workers", "two"], "workers"),
    (["--frontends", "0"], "frontends"),
    (["--queue-size", "abc"], "queue-size"),
    (["--queue-size", "0"], "queue-size"),
    (["--batch-max", "0"], "batch-max"),
    (["--sync", "maybe"], "sync"),
    (["--listen", "nonsense"], "listen"),
    (["--listen", "127.0.0.1:99999"], "listen"),
    (["--shm-name", "no-slash"], "shm-name"),
    (["--drain-timeout", "soon"], "drain-timeout"),
    (["--log-format", "xml"], "log-format"),
    (["--bogus-flag"], "bogus-flag"),
    (["--workers"], "workers"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_flag_exits_2_with_message(base_args, args, mention):
    rc, out, err = run_txprocd_briefly(base_args + args)
    assert rc == 2, "exit %r for %r; stderr: %s" % (rc, args, err[-500:])
    assert err.strip(), "no message on stderr"
    assert mention in err, "stderr does not name %r: %s" % (mention, err)
    assert len(err.strip().splitlines()) <= 5, "a clear message, not a flood: %s" % err


@pytest.mark.parametrize("env,mention", [
    ({"TXP_WORKERS": "0"}, "TXP_WORKERS"),
    ({"TXP_QUEUE_SIZE": "lots"}, "TXP_QUEUE_SIZE"),
    ({"TXP_SYNC": "maybe"}, "TXP_SYNC"),
])
def test_bad_env_exits_2_with_message(base_args, env, mention):
    rc, out, err = run_txprocd_briefly(base_args, env=env)
    assert rc == 2, "exit %r for %r; stderr: %s" % (rc, env, err[-500:])
    assert mention in err, err


def test_missing_db_directory_fails_cleanly(tmp_path):
    args = ["--db", str(tmp_path / "no" / "such" / "dir" / "users.db"),
            "--listen", "127.0.0.1:%d" % free_port(), "--shm-name", unique_shm_name()]
    rc, out, err = run_txprocd_briefly(args, timeout=15)
    assert rc == 2, "exit %r without a usable database\n%s" % (rc, err)
    assert "no/such/dir/users.db" in err and "No such file or directory" in err, err


def test_port_in_use_fails_cleanly(server):
    args = ["--db", str(server.db), "--listen", "127.0.0.1:%d" % server.port,
            "--shm-name", unique_shm_name()]
    rc, out, err = run_txprocd_briefly(args, timeout=15)
    assert rc == 2, "exit %r for a busy port\n%s" % (rc, err)
    assert "127.0.0.1:%d: Address already in use" % server.port in err, err
    assert server.get("/healthz").status_code == 200


def test_second_instance_on_same_segment_is_refused(server, tmp_path):
    # Another ledger, so that the segment lock (not the ledger's) refuses it.
    args = ["--db", str(seed_db(tmp_path / "other.db", accounts=10)),
            "--listen", "127.0.0.1:%d" % free_port(), "--shm-name", server.shm_name]
    rc, out, err = run_txprocd_briefly(args, timeout=20)
    assert rc == 2, "exit %r: a second master and a live instance's segment\n%s" % (rc, err)
    assert "is in use by a running txprocd (master pid %d)" % server.pid in err, err
    assert server.get("/healthz").status_code == 200
    assert server.submit(card(1), 1)


def worker_count(srv):
    return sum(1 for c in srv.children() if c["role"] == "worker")


def frontend_count(srv):
    return sum(1 for c in srv.children() if c["role"] == "frontend")


def test_defaults_two_workers_two_frontends(server):
    assert worker_count(server) == 2
    assert frontend_count(server) == 2
    assert server.queue()["capacity"] == 65536


def test_env_workers_is_respected(server_factory):
    srv = server_factory(env={"TXP_WORKERS": "3", "TXP_FRONTENDS": "1", "TXP_QUEUE_SIZE": "2048"})
    assert worker_count(srv) == 3
    assert frontend_count(srv) == 1
    assert srv.queue()["capacity"] == 2048


def test_flag_overrides_env(server_factory):
    srv = server_factory(env={"TXP_WORKERS": "3", "TXP_QUEUE_SIZE": "2048"}, workers=1,
                         args=["--queue-size", "512"])
    assert worker_count(srv) == 1
    assert srv.queue()["capacity"] == 512


def test_flag_overrides_bad_env_value(server_factory):
    """A flag replaces its variable entirely: a stale bad TXP_WORKERS in the
    environment must not stop a start that says --workers."""
    srv = server_factory(env={"TXP_WORKERS": "nonsense"}, workers=2)
    assert worker_count(srv) == 2


def test_small_queue_adapts_default_batch(server_factory):
    """--queue-size 4 without --batch-max: the default batch (1,024) shrinks
    to the queue instead of refusing to start, and the queue still drains."""
    srv = server_factory(args=["--queue-size", "4"], workers=1)
    assert srv.queue()["capacity"] == 4
    assert "queue 4, batch 4," in srv.log_text()
    assert "batch_max 4" in srv.log_text()
    ids = []
    for i in range(12):  # three times the queue: only applies if batches drain it
        r = srv.post_tx(card(i), 5)
        while r.status_code == 503:
            time.sleep(0.05)
            r = srv.post_tx(card(i), 5)
        assert r.status_code == 202, r.text
        ids.append(int(r.json()["id"]))
    assert all(v == "applied" for v in srv.wait_final(ids, timeout=20).values())


def test_env_listen_db_and_shm_name(server_factory):
    srv = server_factory(via_env=True, env={"TXP_WORKERS": "1"})
    assert srv.get("/balance", params={"card_number": card(5)}).status_code == 200
    # txctl finds the instance under TXP_SHM_NAME, and it runs the env's worker count.
    assert worker_count(srv) == 1


@pytest.mark.sqlite_only
def test_default_db_and_shm_name(server_factory):
    """Without --db the ledger is ./users.db; without --shm-name the segment
    is /txprocd-<port>."""
    srv = server_factory(omit=("--db", "--shm-name"))   # runs in the directory of the seeded DB
    assert srv.shm_name == "/txprocd-%d" % srv.port
    assert os.path.exists("/dev/shm" + srv.shm_name)
    assert worker_count(srv) == 2
    txid = srv.submit(card(3), 33)
    assert srv.wait_final([txid], timeout=15)[txid] == "applied"


def test_sync_full_serves(server_factory):
    srv = server_factory(args=["--sync", "full", "--batch-max", "8"])
    ids = [srv.submit(card(i), 5) for i in range(30)]
    rows = srv.wait_final(ids, timeout=20)
    assert all(rows[t] == "applied" for t in ids)


def count_syncs_per_commit(srv, commits=10):
    """Attaches strace to the worker, makes `commits` commits one at a time
    (each request waits for its outcome) and counts fsync/fdatasync."""
    worker = srv.running_child("worker")["pid"]
    out = srv.workdir / "strace.txt"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(out),
                               "-p", str(worker)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)  # attached
        for i in range(commits):
            r = srv.post_json("/transaction", {"card_number": card(i), "amount": 3},
                              {"Prefer": "wait=10"})
            assert r.status_code == 200, r.text
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=10)
    return sum(1 for line in out.read_text().splitlines() if "sync(" in line)


@pytest.mark.sqlite_only
@pytest.mark.parametrize("mode", ["full", "normal"])
def test_sync_mode_decides_whether_each_commit_is_fsynced(server_factory, mode):
    """--sync full: every commit is fsynced (the WAL, PRAGMA synchronous=FULL
    on the worker's own connection); normal: commits are not, only
    checkpoints. Counted with strace on the real worker."""
    srv = server_factory(workers=1, args=["--sync", mode])
    syncs = count_syncs_per_commit(srv, commits=10)
    if mode == "full":
        assert syncs >= 10, "%d fsyncs for 10 commits with --sync full" % syncs
    else:
        assert syncs < 10, "%d fsyncs for 10 commits with --sync normal" % syncs
