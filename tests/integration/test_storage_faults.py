"""The ledger's storage fails under the server: the disk fills up. (A busy
ledger is in test_faults.) Accepted transactions must stay queued (never dropped),
the error counter must rise, the server must keep answering, and once the
cause is gone everything is applied exactly once.

The ledger lives on a small tmpfs mounted for the test, which needs root
(CI runs as root); elsewhere the tests are skipped with that reason."""
import os
import subprocess

import pytest

from conftest import assert_recorded_once, balance_sum, card, ledger_invariant, seed_db, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path):
    """Writes path until the file system is full; returns bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
                written += len(chunk)
            except OSError:
                break
        for size in (4096, 512, 1):   # take the last blocks too
            while True:
                try:
                    f.write(b"\0" * size)
                    written += size
                except OSError:
                    break
    return written


def counters(srv):
    return srv.metrics()["counters"]


def test_disk_full_keeps_entries_queued_and_resumes(server_factory, small_fs):
    db = seed_db(small_fs / "users.db", accounts=500)
    initial = balance_sum(db)
    srv = server_factory(db=db, workers=1)
    assert fill(small_fs / "filler") > 0
    accepted = {}
    for i in range(3000):
        card_number, amount = card(i % 500), 1 + i % 7
        txid = srv.submit(card_number, amount)
        accepted[txid] = (card_number, amount)
    wait_until(lambda: counters(srv)["db_errors"] > 0, 20, "the worker to hit the full disk")
    pending = srv.queue()
    assert pending["depth"] + pending["claimed"] > 0, "entries vanished while the disk was full"
    assert srv.get("/healthz").status_code == 200
    assert srv.submit(card(1), 1) > 0   # still accepting while the ledger cannot grow
    os.unlink(small_fs / "filler")
    srv.wait_final(list(accepted), timeout=60)
    assert_recorded_once(srv.db, accepted)
    srv.stop_and_check()
    ledger_invariant(db, initial)
