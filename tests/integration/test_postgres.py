"""What only the PostgreSQL ledger has to survive: the database server
restarting or crashing under load, connections killed in the middle of a
batch, a COMMIT whose answer never arrives, a server that is not there at
start or goes away under the frontends' reads, credentials that must never
reach a log, and a schema from a newer build. The rest of the suite runs on
both backends; these run against this run's PostgreSQL cluster only."""
import os
import signal
import time

import pytest

import pg
from conftest import (Load, unknown_card, assert_recorded_once, balance_sum, card,
                      db_query, free_port, ledger_invariant, make_ops, new_pg_db, prefer_wait,
                      run_txctl, run_txprocd_briefly, seed_pg_db, unique_shm_name, wait_final,
                      wait_until)

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def pgc():
    return pg.cluster()


@pytest.fixture
def pg_server(server_factory):
    def make(**kw):
        kw.setdefault("backend", "postgres")
        return server_factory(**kw)
    return make


def dbname(uri):
    return uri.rsplit("/", 1)[1].split("?")[0]


def wait_db_errors(srv, at_least=1, timeout=30):
    return wait_until(lambda: srv.metrics()["counters"]["db_errors"] >= at_least, timeout,
                      "db_errors to count the outage")


def test_server_restarted_immediately_under_load_loses_nothing(pgc, pg_server):
    """pg_ctl restart -m immediate (a crash and its recovery) in the middle
    of a load: POSTs keep being accepted meanwhile, the workers retry until
    the server is back, and every accepted transaction is applied exactly
    once."""
    srv = pg_server(workers=2)
    initial = balance_sum(srv.db)
    load = Load(srv.port, make_ops(30000, 1000, rng_seed=31), threads=16).start()
    try:
        wait_until(lambda: load.done >= 800, 60, "load to get going")
        restarted_at = load.done
        pgc.restart("immediate")
    finally:
        load.join(timeout=150)
    assert restarted_at < len(load.ops), "load finished before the restart"
    assert load.given_up == 0, (load.statuses, load.conn_errors)
    assert not load.duplicate_ids
    assert_recorded_once(srv.db, load.accepted)
    ledger_invariant(srv.db, initial)
    assert srv.metrics()["counters"]["db_errors"] >= 1
    # Said once per outage, not once per retry.
    retries = srv.log_text().count("retry in")
    assert 1 <= retries <= 20, retries


def test_worker_connections_terminated_during_batches_lose_nothing(pgc, pg_server):
    """pg_terminate_backend on every worker connection, several times, while
    batches are being applied: each is reconnected and nothing is lost or
    applied twice."""
    srv = pg_server(workers=2)
    initial = balance_sum(srv.db)
    load = Load(srv.port, make_ops(30000, 1000, rng_seed=32), threads=16).start()
    killed = 0
    try:
        wait_until(lambda: load.done >= 500, 60, "load to get going")
        for _ in range(5):
            killed += pgc.terminate_backends(dbname(srv.db), application_name="txprocd-worker")
            time.sleep(0.3)
    finally:
        load.join(timeout=150)
    assert killed >= 2, "no worker connection was there to terminate"
    assert load.given_up == 0, (load.statuses, load.conn_errors)
    assert_recorded_once(srv.db, load.accepted)
    ledger_invariant(srv.db, initial)
    assert srv.metrics()["counters"]["db_errors"] >= 1


@pytest.mark.parametrize("when,landed", [("AFTER", True), ("BEFORE", False)])
def test_commit_without_an_answer_is_checked_before_reapplying(pg_server, tmp_path, when, landed):
    """The connection fails during COMMIT: the worker does not know whether
    the batch landed. It asks the ledger before anything else, applies the
    batch only if it did not land, and the waiting client gets the real
    outcome either way (not a replay, not a 202)."""
    trigger = tmp_path / "commit-lost"
    trigger.write_text("")
    srv = pg_server(workers=1, env={"TXP_FAILPOINT_PG_LOST_%s_COMMIT" % when: str(trigger)})
    before = srv.balance(card(3))
    r = srv.post_json("/transaction", {"card_number": card(3), "amount": 250},
                      headers=prefer_wait(10))
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert body["status"] == "applied" and body["balance_after"] == before + 250, body
    assert not trigger.exists(), "the failpoint did not fire"
    txid = int(body["id"])
    assert db_query(srv.db, "SELECT COUNT(*), MAX(balance_after) FROM transactions WHERE txid = ?",
                    (txid,)) == [(1, before + 250)]
    assert srv.balance(card(3)) == before + 250
    log = srv.log_text()
    if landed:
        assert "was committed before the connection failed; not applying it again" in log, log
    else:
        assert "was not committed; applying it" in log, log
    c = srv.metrics()["counters"]
    assert c["tx_replayed"] == 0 and c["tx_applied_deposit"] == 1, c


def test_unreachable_database_at_start_is_a_clear_error(tmp_path):
    port = free_port()  # nothing listens there
    uri = "postgresql://txp@127.0.0.1:%d/ledger?connect_timeout=2" % port
    start = time.monotonic()
    rc, _, err = run_txprocd_briefly(["--listen", "127.0.0.1:%d" % free_port(), "--db", uri,
                                      "--shm-name", unique_shm_name()], timeout=30)
    assert rc not in (0, None), (rc, err)
    assert "cannot connect to the ledger" in err and "port=%d" % port in err, err
    assert time.monotonic() - start < 20


def test_reads_answer_503_while_the_database_is_down(pgc, pg_server):
    """Frontends read with their own connection: with the server stopped a
    read answers 503 with Retry-After quickly (the event loop is never held
    past the read deadline), and reads work again once it is back."""
    srv = pg_server(args=["--http-timeout", 5])
    assert srv.balance(card(1)) > 0
    pgc.stop()
    try:
        for _ in range(3):
            t0 = time.monotonic()
            r = srv.get("/balance", params={"card_number": card(1)})
            assert r.status_code == 503, r.text
            assert r.headers.get("Retry-After") == "1"
            assert r.json()["status"] == "error"
            assert time.monotonic() - t0 < 4.5
        # Writes are only queued: still accepted while the database is away.
        r = srv.post_tx(card(2), 5)
        assert r.status_code == 202, r.text
        txid = int(r.json()["id"])
    finally:
        pgc.start()
    wait_until(lambda: srv.get("/balance", params={"card_number": card(1)}).status_code == 200,
               30, "reads to come back")
    assert wait_final(srv.db, [txid], timeout=30)[txid] == "applied"
    assert "answering 503 until the ledger answers again" in srv.log_text()


def signal_if_alive(pid, sig):
    """A backend listed by cluster_pids may have been exiting already (the
    session of an earlier test): it needs no stopping or continuing."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def cluster_pids(pgc):
    """The postmaster of the cluster and every process it started."""
    postmaster = int((pgc.dir / "data" / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == postmaster:
                pids.append(int(entry))
    return pids


def test_reads_never_hold_the_event_loop_for_a_hung_server(pgc, pg_server):
    """Every PostgreSQL process frozen (a hung host: connections accepted,
    nothing answered): the first read gives up at its deadline (2 s), and
    the reads after it answer 503 at once instead of each waiting its own
    deadline; the frontend's other clients are never held longer."""
    srv = pg_server(args=["--http-timeout", 5], frontends=1)
    assert srv.balance(card(1)) > 0
    pids = cluster_pids(pgc)
    for pid in pids:
        signal_if_alive(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        for _ in range(5):
            t = time.monotonic()
            r = srv.get("/balance", params={"card_number": card(1)})
            assert r.status_code == 503 and r.headers.get("Retry-After") == "1", r.text
            assert time.monotonic() - t < 2.8
        elapsed = time.monotonic() - t0
        # Without the pause after a failure: 5 reads x 2 s.
        assert elapsed < 4.5, "5 reads took %.1f s" % elapsed
        assert srv.get("/healthz").status_code == 200
    finally:
        for pid in pids:
            signal_if_alive(pid, signal.SIGCONT)
    wait_until(lambda: srv.get("/balance", params={"card_number": card(1)}).status_code == 200,
               30, "reads to come back")


def test_tls_settings_pass_through_to_libpq(tmp_path):
    """sslmode reaches libpq unchanged: the test cluster has no TLS, so
    sslmode=require must fail with libpq's own reason, and sslmode=disable
    work."""
    uri = seed_pg_db(accounts=5)
    rc, _, err = run_txprocd_briefly(["--listen", "127.0.0.1:%d" % free_port(), "--db",
                                      uri + "?sslmode=require", "--shm-name", unique_shm_name()],
                                     timeout=30)
    assert rc not in (0, None) and "server does not support SSL" in err, (rc, err)
    assert "sslmode=require" in err  # the description names the setting in use
    p = run_txctl("seed", "--db", "%s?sslmode=disable" % uri, "--accounts", 1, check=False)
    assert p.returncode == 1 and "already has 5 accounts" in p.stderr, p.stderr


def test_password_is_never_logged_or_shown(pgc, pg_server):
    """The test cluster trusts loopback, so a password in the URI is accepted
    and ignored by the server: what matters here is that txprocd and txctl
    never print it, and that ps (/proc/<pid>/cmdline) of the master and its
    children shows it masked."""
    secret = "s3cr3t-Pa55-%d" % os.getpid()
    uri = seed_pg_db(accounts=10)
    with_password = uri.replace("postgresql://txp@", "postgresql://txp:%s@" % secret)
    srv = pg_server(db=with_password)
    txid = srv.submit(card(1), 5)
    assert wait_final(uri, [txid], timeout=15)[txid] == "applied"
    for pid in [srv.pid] + [c["pid"] for c in srv.children()]:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read().decode()
        assert secret not in cmdline and "txp:%s@" % ("*" * len(secret)) in cmdline, cmdline

    def server_lines():
        # The harness's own first line quotes the command it ran; skip it.
        return "\n".join(line for line in srv.log_text().splitlines() if not line.startswith("# "))

    assert "dbname=%s" % dbname(uri) in server_lines()
    assert secret not in server_lines()
    assert secret not in srv.txctl("--json").stdout
    seed = run_txctl("seed", "--db", with_password, "--accounts", 5, check=False)
    assert seed.returncode != 0 and "already has 10 accounts" in seed.stderr, seed.stderr
    assert secret not in seed.stdout + seed.stderr
    srv.terminate()
    assert secret not in server_lines()


def test_second_instance_on_one_database_is_refused(pg_server):
    a = pg_server()
    rc, _, err = run_txprocd_briefly(["--listen", "127.0.0.1:%d" % free_port(), "--db", a.db,
                                      "--shm-name", unique_shm_name()], timeout=30)
    assert rc == 2, (rc, err)
    assert "is in use by another txprocd instance" in err and dbname(a.db) in err, err
    txid = a.submit(card(1), 1)
    assert wait_final(a.db, [txid], timeout=15)[txid] == "applied"


def test_instance_lock_is_taken_again_after_a_server_restart(pgc, pg_server):
    """A database restart ends the master's session and so its advisory
    lock: the master notices and takes it again, and a second instance is
    still refused afterwards."""
    a = pg_server()
    pgc.restart("immediate")
    wait_until(lambda: "ledger instance lock taken again" in a.log_text(), 20,
               "the master to take the instance lock again")
    assert "lost the connection holding the ledger's instance lock" in a.log_text()
    rc, _, err = run_txprocd_briefly(["--listen", "127.0.0.1:%d" % free_port(), "--db", a.db,
                                      "--shm-name", unique_shm_name()], timeout=30)
    assert rc == 2 and "is in use by another txprocd instance" in err, (rc, err)
    txid = a.submit(card(1), 1)
    assert wait_final(a.db, [txid], timeout=30)[txid] == "applied"


def test_instance_that_lost_the_ledger_to_another_stops_its_workers(pgc, pg_server):
    """The first master is frozen while the database restarts and a second
    instance starts on the ledger: when it runs again it finds the lock
    taken, kills its workers at once (two writers would hand out the same
    txids) and drains, leaving what it queued in its segment; the second
    instance serves."""
    a = pg_server()
    os.kill(a.pid, signal.SIGSTOP)
    try:
        pgc.restart("immediate")
        b = pg_server(db=a.db)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    wait_until(lambda: not a.alive(), 30, "the first instance to stop")
    a._reap()
    assert a.returncode == 1, (a.returncode, a.log_tail())
    assert "another txprocd instance took the ledger's instance lock" in a.log_text()
    assert not a.leftover_children()
    txid = b.submit(card(2), 3)
    assert wait_final(b.db, [txid], timeout=30)[txid] == "applied"


def test_newer_schema_is_refused_and_left_alone(tmp_path):
    uri = seed_pg_db(accounts=10)
    con = pg.connect(uri)
    try:
        con.cursor().execute("UPDATE txprocd_schema SET version = 99")
    finally:
        con.close()
    rc, _, err = run_txprocd_briefly(["--listen", "127.0.0.1:%d" % free_port(), "--db", uri,
                                      "--shm-name", unique_shm_name()], timeout=30)
    assert rc not in (0, None) and "schema version 99, newer than this build's" in err, err
    assert db_query(uri, "SELECT version FROM txprocd_schema") == [(99,)]


def test_new_ledger_gets_the_prototype_columns_and_a_version(tmp_path):
    uri = new_pg_db()
    run_txctl("seed", "--db", uri, "--accounts", 3)
    cols = {t: {c for (c,) in db_query(uri, "SELECT column_name FROM information_schema.columns "
                                            "WHERE table_name = ?", (t,))}
            for t in ("users", "transactions")}
    assert {"card_number", "balance"} <= cols["users"]
    assert {"card_number", "amount", "success", "timestamp", "txid", "status"} <= \
        cols["transactions"]
    assert db_query(uri, "SELECT version FROM txprocd_schema") == [(3,)]
    # The prototype's audit query reads the same on either backend.
    assert db_query(uri, "SELECT COUNT(*) FROM users WHERE balance >= 0") == [(3,)]


def test_hot_account_batch_is_one_update_and_exact(pg_server):
    """Many entries on one account in one batch: the book applies them in
    order (insufficient funds decided against the running balance), and the
    account's counts and statement chain cover every row."""
    srv = pg_server(workers=1)
    start = srv.balance(card(7))
    ids = [srv.submit(card(7), -(start // 4)) for _ in range(6)]
    rows = wait_final(srv.db, ids, timeout=20)
    statuses = [rows[t] for t in ids]
    assert statuses.count("applied") == 4 and statuses.count("insufficient_funds") == 2, statuses
    assert srv.balance(card(7)) == start - 4 * (start // 4)
    acct = srv.get("/accounts/%s" % card(7)).json()
    assert acct["counts"]["withdrawals"] == 4 and acct["counts"]["rejected"] == 2, acct
    stmt = srv.get("/accounts/%s/transactions" % card(7), params={"limit": 10}).json()
    assert [int(t["id"]) for t in stmt["transactions"]] == sorted(ids, reverse=True)


def test_batch_of_thousands_of_unknown_cards_takes_one_lock(pg_server):
    """Cards without an account are locked one by one only when a batch has
    a few; a batch naming 1,000 of them (deposits to unknown cards, from
    anyone) takes one exclusive lock instead, so it cannot fill PostgreSQL's
    shared lock table. Every entry is decided, without a database error."""
    srv = pg_server(workers=1)
    body = [{"card_number": unknown_card(i), "amount": 1} for i in range(1000)]
    body[500] = {"card_number": card(5), "amount": 7}
    r = srv.post_json("/transactions", body)
    assert r.status_code == 202, r.text
    ids = [int(x) for x in r.json()["ids"]]
    rows = wait_final(srv.db, ids, timeout=30)
    assert sum(1 for t in ids if rows[t] == "unknown_account") == 999
    assert rows[ids[500]] == "applied"
    assert srv.metrics()["counters"]["db_errors"] == 0


@pytest.mark.parametrize("others", [0, 40], ids=["few-missing", "many-missing"])
def test_deposit_racing_an_opening_waits_for_it(pg_server, others):
    """A batch naming a card that a concurrent transaction is opening (another
    worker, another node) must wait for that opening and then see it; not
    finding the card, it would record unknown_account after the opening
    committed. The opening is played by a session that takes the locks an
    opening batch takes (pg_write.c): the creation lock, shared, and the
    card's key. With many unknown cards the batch takes the creation lock
    exclusively instead, and must wait just the same."""
    srv = pg_server(workers=1)
    opened = unknown_card(9000)
    con = pg.connect(srv.db)
    con.autocommit = False
    try:
        with con.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock_shared(29816, -2)")
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 29816))", (opened,))
            cur.execute("INSERT INTO users(card_number, balance, opened_at) VALUES (%s, 0, 0)",
                        (opened,))
        body = [{"card_number": unknown_card(i), "amount": 1} for i in range(others)]
        body.append({"card_number": opened, "amount": 25})
        r = srv.post_json("/transactions", body)
        assert r.status_code == 202, r.text
        ids = [int(x) for x in r.json()["ids"]]
        wait_until(lambda: srv.metrics()["counters"]["batches_committed"] == 0
                   and srv.queue()["claimed"] == len(ids), 10, "the batch to be claimed")
        time.sleep(1)  # well past a batch's time: the worker is waiting for the lock
        assert db_query(srv.db, "SELECT COUNT(*) FROM transactions WHERE txid = ?",
                        (ids[-1],)) == [(0,)]
    finally:
        con.commit()
        con.close()
    rows = wait_final(srv.db, ids, timeout=20)
    assert rows[ids[-1]] == "applied", rows
    assert srv.balance(opened) == 25
    assert sum(1 for t in ids[:-1] if rows[t] == "unknown_account") == others
