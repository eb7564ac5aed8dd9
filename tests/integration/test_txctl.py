"""txctl: the read-only inspector (stats, children, queue) and the seeder."""
import json
import re

import pytest

from conftest import (assert_counters_match_db, card, db_query, run_txctl, seed_db,
                      unique_shm_name, unknown_card)


def test_stats_json_counts_equal_db(server):
    ids = [server.submit(card(i % 20), (i % 7 + 1) * (1 if i % 3 else -1)) for i in range(60)]
    ids += [server.submit(card(0), -(10 ** 14)), server.submit(unknown_card(1), 5)]
    server.wait_final(ids, timeout=20)
    stats = server.txctl_json("stats")
    assert_counters_match_db(lambda: server.txctl_json("stats")["counters"], server.db)
    assert stats["counters"]["tx_accepted"] == len(ids)
    assert stats["counters"]["tx_insufficient_funds"] >= 1
    assert stats["counters"]["tx_unknown_account"] == 1
    # Same document as GET /metrics.
    m = server.metrics()
    assert set(stats) == set(m)
    assert stats["counters"]["tx_applied_deposit"] == m["counters"]["tx_applied_deposit"]
    assert stats["queue"]["capacity"] == m["queue"]["capacity"]


def test_stats_plain_is_readable(server):
    server.wait_final([server.submit(card(1), 5)], timeout=15)
    out = server.txctl("stats").stdout
    assert out.strip()
    for name in ("tx_accepted", "tx_applied_deposit", "http_requests"):
        assert name in out, out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_children_json_lists_every_child(server_factory):
    srv = server_factory(workers=3, frontends=2)
    kids = srv.children()
    assert len(kids) == 5
    assert sorted(c["slot"] for c in kids) == list(range(5))
    assert sorted(c["index"] for c in kids if c["role"] == "worker") == [0, 1, 2]
    assert sorted(c["index"] for c in kids if c["role"] == "frontend") == [0, 1]
    for c in kids:
        assert c["state"] == "running", c
        assert c["restarts"] == 0 and c["last_exit"] is None, c
        assert isinstance(c["uptime_s"], (int, float)) and c["uptime_s"] >= 0
        stat = open("/proc/%d/stat" % c["pid"]).read()
        # Each one is a child of this master.
        assert int(stat.rsplit(")", 1)[1].split()[1]) == srv.pid, c


def test_children_plain_shows_roles_and_pids(server):
    out = server.txctl("children").stdout
    for c in server.children():
        assert str(c["pid"]) in out
    assert "worker" in out and "frontend" in out


def test_queue_json_and_plain(server_factory):
    srv = server_factory(args=["--queue-size", "1024"])
    before = srv.queue()
    assert set(before) >= {"depth", "claimed", "capacity", "high_water", "repairs", "requeued",
                           "next_txid"}
    assert before["capacity"] == 1024
    assert before["depth"] == 0 and before["claimed"] == 0
    ids = [srv.submit(card(i), 1) for i in range(10)]
    srv.wait_final(ids, timeout=15)
    after = srv.queue()
    assert after["next_txid"] == before["next_txid"] + 10
    assert min(ids) == before["next_txid"] and max(ids) == after["next_txid"] - 1
    assert after["high_water"] >= 1
    out = srv.txctl("queue").stdout
    assert "1024" in out and "depth" in out, out


def test_txctl_without_server_fails_with_one_line(tmp_path):
    for cmd in ("stats", "children", "queue"):
        proc = run_txctl("--shm-name", unique_shm_name(), cmd, check=False)
        assert proc.returncode != 0, cmd
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].strip(), (cmd, proc.stderr)
        assert proc.stdout == "", (cmd, proc.stdout)


def test_txctl_on_stale_segment_fails_with_one_line(server):
    server.kill()   # no drain: the segment stays behind, owned by nobody
    for cmd in ("stats", "children", "queue"):
        proc = server.txctl(cmd, check=False)
        assert proc.returncode != 0, (cmd, proc.stdout)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].strip(), (cmd, proc.stderr)


def test_txctl_bad_usage_fails(tmp_path):
    for args in ([], ["frobnicate"], ["seed", "--accounts", "10"]):
        proc = run_txctl(*args, check=False)
        assert proc.returncode != 0, args
        assert proc.stderr.strip(), args


def test_seed_creates_10000_documented_accounts(tmp_path):
    db = seed_db(tmp_path / "users.db", accounts=10000, seed=5)
    rows = db_query(db, "SELECT card_number, balance FROM users")
    assert len(rows) == 10000
    cards = {c for c, _ in rows}
    assert cards == {card(n) for n in range(10000)}
    assert all(re.fullmatch(r"6219 8619 \d{4} 8640", c) for c in cards)
    balances = [b for _, b in rows]
    assert all(isinstance(b, int) and 50000 <= b <= 10000000 for b in balances)
    assert len(set(balances)) > 1000, "balances are not spread"
    assert db_query(db, "SELECT COUNT(*) FROM transactions") == [(0,)]


def test_seed_is_reproducible_with_same_seed(tmp_path):
    a = seed_db(tmp_path / "a.db", accounts=200, seed=42)
    b = seed_db(tmp_path / "b.db", accounts=200, seed=42)
    c = seed_db(tmp_path / "c.db", accounts=200, seed=43)
    q = "SELECT card_number, balance FROM users ORDER BY card_number"
    assert db_query(a, q) == db_query(b, q)
    assert db_query(a, q) != db_query(c, q)


def test_seed_refuses_a_db_that_has_accounts(tmp_path):
    db = seed_db(tmp_path / "users.db", accounts=100, seed=1)
    before = db_query(db, "SELECT card_number, balance FROM users ORDER BY card_number")
    proc = run_txctl("seed", "--db", db, "--accounts", 100, "--seed", 2, check=False)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "already has 100 accounts; not seeding" in proc.stderr, proc.stderr
    assert db_query(db, "SELECT card_number, balance FROM users ORDER BY card_number") == before


def test_seeded_db_serves(server):
    r = server.get("/balance", params={"card_number": card(999)})
    assert r.status_code == 200
    assert db_query(server.db, "SELECT COUNT(*) FROM users") == [(1000,)]
